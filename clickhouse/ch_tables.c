/*
 * ch_tables.c - names of ch.op's tables and the drop of a flow's tables
 * (clickhouse/ch_ops.h).
 */
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "ch_ops.h"
#include "clickhouse.h"

int au_ch_name_valid(const char *s, size_t max)
{
	size_t n;

	if (!s || !(isalpha((unsigned char)*s) || *s == '_'))
		return 0;
	for (n = 1; s[n]; n++)
		if (!(isalnum((unsigned char)s[n]) || s[n] == '_'))
			return 0;
	return n <= max;
}

int au_ch_flow_id_valid(const char *s)
{
	size_t n;

	for (n = 0; s && s[n]; n++)
		if (!isdigit((unsigned char)s[n]) && !(s[n] >= 'a' && s[n] <= 'f'))
			return 0;
	return n == 32;
}

/* The names of a JSONCompact answer of one String column, into *doc. */
static json_t *names_of(const struct au_ch_response *r, json_t **doc)
{
	json_t *data;

	*doc = json_loadb((const char *)r->body.data, r->body.len, 0, NULL);
	data = json_object_get(*doc, "data");
	return json_is_array(data) ? data : NULL;
}

int au_ch_drop_flow_tables(struct au_clickhouse *ch, const char *flow_id, struct au_err *err)
{
	struct au_buf sql = AU_BUF_INIT;
	struct au_ch_query q = { .timeout_ms = 30000 };
	struct au_ch_response r;
	char pat[2][64], pre[2][64], b[AU_ID_SHOWN_SIZE];
	json_t *doc = NULL, *data, *row;
	size_t i;
	int rc = -1;

	if (!au_ch_flow_id_valid(flow_id))
		return au_seterr(err, AU_EINVAL, "flow id '%s' is not 32 lowercase hex digits",
				 au_id_shown(b, flow_id));
	for (i = 0; i < 2; i++) {
		/* LIKE's _ is any one character: escaped */
		snprintf(pat[i], sizeof(pat[i]), "%c\\_%s\\_%%", "tf"[i], flow_id);
		snprintf(pre[i], sizeof(pre[i]), "%c_%s_", "tf"[i], flow_id);
	}
	if (au_buf_puts(&sql, "SELECT name FROM system.tables WHERE database = currentDatabase() "
			"AND (name LIKE ") < 0 || au_sql_quote(&sql, pat[0], strlen(pat[0])) < 0 ||
	    au_buf_puts(&sql, " OR name LIKE ") < 0 || au_sql_quote(&sql, pat[1], strlen(pat[1])) < 0 ||
	    au_buf_puts(&sql, ") FORMAT JSONCompact") < 0) {
		au_buf_release(&sql);
		return au_seterr(err, AU_ENOMEM, "out of memory");
	}
	q.sql = (const char *)sql.data;
	if (au_ch_query_sync(ch, &q, &r) < 0) {
		if (err)
			*err = r.err;
		goto out;
	}
	if (!(data = names_of(&r, &doc))) {
		au_seterr(err, AU_EPROTO, "unexpected answer from clickhouse");
		goto out;
	}
	rc = 0;
	json_array_foreach(data, i, row) {
		const char *name = json_string_value(json_array_get(row, 0));
		char drop[200];
		struct au_ch_response d;
		struct au_ch_query dq = { .sql = drop, .timeout_ms = 30000 };

		/* what LIKE found, checked again: the prefix, and a name we could make */
		if (!name || (strncmp(name, pre[0], strlen(pre[0])) && strncmp(name, pre[1], strlen(pre[1]))) ||
		    !au_ch_name_valid(name, 160))
			continue;
		snprintf(drop, sizeof(drop), "DROP TABLE IF EXISTS `%s`", name);
		if (au_ch_query_sync(ch, &dq, &d) < 0) {
			if (err)
				*err = d.err;
			rc = -1;
		}
		au_ch_response_release(&d);
		if (rc < 0)
			break;
	}
out:
	json_decref(doc);
	au_ch_response_release(&r);
	au_buf_release(&sql);
	return rc;
}
