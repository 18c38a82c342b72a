/*
 * ch_tasks.c - the built-in ClickHouse tasks ch.query, ch.exec and
 * ch.insert. Each builds one statement from its arguments (values bound by
 * au_sql_bind, never pasted), sends it on the worker's loop and turns the
 * answer into a msgpack result. The building and the conversion need no
 * server and are public for the tests.
 */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "clickhouse.h"
#include "task.h"
#include "tasks.h"

static const char *const task_names[] = { "ch.query", "ch.exec", "ch.insert" };

/* Statements ch.query accepts: those that answer with rows. */
static const char *const query_verbs[] = { "SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXISTS" };

/* Prefixes err's message with the task name. */
static int task_err(const char *task, struct au_err *err)
{
	char msg[AU_ERRSTR_SIZE];

	if (!err)
		return -1;
	snprintf(msg, sizeof(msg), "%s", err->str);
	return au_seterr(err, err->code ? err->code : AU_ENOMEM, "%s: %s", task, msg);
}

static int word_is(const char *t, size_t n, const char *word)
{
	return t && strlen(word) == n && !strncasecmp(t, word, n);
}

/* Binds args.sql with args.params into a new string. */
static char *bind_args(const char *task, const json_t *args, struct au_err *err)
{
	const json_t *sql = json_object_get(args, "sql"), *params = json_object_get(args, "params");
	char *bound;

	if (!json_is_string(sql) || strlen(json_string_value(sql)) != json_string_length(sql)) {
		au_seterr(err, AU_EINVAL, "%s: 'sql' must be a string", task);
		return NULL;
	}
	if (params && !json_is_null(params) && !json_is_object(params)) {
		au_seterr(err, AU_EINVAL, "%s: 'params' must be a map", task);
		return NULL;
	}
	bound = au_sql_bind(json_string_value(sql), json_is_object(params) ? params : NULL, err);
	if (!bound)
		task_err(task, err);
	return bound;
}

/* ch.query: a statement that returns rows, with FORMAT JSONCompact added
 * after its last token (so a trailing ';' or -- comment cannot swallow it). */
static int build_query(const char *task, const char *sql, struct au_buf *out, struct au_err *err)
{
	const char *p = sql, *end = sql + strlen(sql), *t, *first = NULL, *prev = NULL, *last = NULL;
	size_t n, first_n = 0, prev_n = 0, last_n = 0, i;

	while ((t = au_sql_token(p, end, &n)) != NULL) {
		p = t + n;
		if ((n == 1 && *t == ';') || (!first && n == 1 && *t == '('))
			continue;
		if (!first)
			first = t, first_n = n;
		prev = last, prev_n = last_n;
		last = t, last_n = n;
	}
	for (i = 0; i < AU_ARRAY_SIZE(query_verbs); i++)
		if (word_is(first, first_n, query_verbs[i]))
			break;
	if (i == AU_ARRAY_SIZE(query_verbs))
		return au_seterr(err, AU_EINVAL,
				 "%s: only SELECT, WITH, SHOW, DESCRIBE and EXISTS statements return rows",
				 task);
	if (word_is(prev, prev_n, "FORMAT"))
		return au_seterr(err, AU_EINVAL, "%s: the sql must not have a FORMAT clause", task);
	if (au_buf_append(out, sql, (size_t)(last + last_n - sql)) < 0 ||
	    au_buf_puts(out, " FORMAT JSONCompact") < 0)
		return au_seterr(err, AU_ENOMEM, "out of memory");
	return 0;
}

static int append_json(const char *p, size_t n, void *arg)
{
	return au_buf_append(arg, p, n);
}

/* ch.insert: the rows as JSONEachRow lines. */
static int build_insert(const char *task, const json_t *args, struct au_buf *sql,
			struct au_buf *data, size_t *rows, struct au_err *err)
{
	const json_t *list = json_object_get(args, "rows"), *row;
	char *stmt;
	size_t i;

	if (!json_is_string(json_object_get(args, "table")))
		return au_seterr(err, AU_EINVAL, "%s: 'table' must be a string", task);
	if (!json_is_array(list))
		return au_seterr(err, AU_EINVAL, "%s: 'rows' must be an array of maps", task);
	stmt = au_sql_bind("INSERT INTO {table:Identifier} FORMAT JSONEachRow", args, err);
	if (!stmt)
		return task_err(task, err);
	if (au_buf_puts(sql, stmt) < 0) {
		free(stmt);
		return au_seterr(err, AU_ENOMEM, "out of memory");
	}
	free(stmt);
	json_array_foreach(list, i, row) {
		if (!json_is_object(row))
			return au_seterr(err, AU_EINVAL, "%s: row %zu is not a map", task, i);
		if (json_dump_callback(row, append_json, data, JSON_COMPACT) < 0 ||
		    au_buf_puts(data, "\n") < 0)
			return au_seterr(err, AU_ENOMEM, "out of memory");
	}
	*rows = json_array_size(list);
	return 0;
}

int au_ch_task_request(const char *task, const unsigned char *args, size_t len,
		       struct au_buf *sql, struct au_buf *data, size_t *rows, struct au_err *err)
{
	json_t *j = NULL;
	char *bound = NULL;
	int rc = -1;

	*rows = 0;
	if (len && au_msgpack_to_jansson(args, len, &j, err) < 0)
		return task_err(task, err);
	if (!json_is_object(j)) {
		au_seterr(err, AU_EINVAL, "%s: the arguments must be a map", task);
	} else if (!strcmp(task, "ch.insert")) {
		rc = build_insert(task, j, sql, data, rows, err);
	} else if (!(bound = bind_args(task, j, err))) {
		rc = -1;
	} else if (!strcmp(task, "ch.query")) {
		rc = build_query(task, bound, sql, err);
	} else if (!strcmp(task, "ch.exec")) {
		rc = au_buf_puts(sql, bound) < 0 ? au_seterr(err, AU_ENOMEM, "out of memory") : 0;
	} else {
		au_seterr(err, AU_ENOTASK, "unknown task '%s'", task);
	}
	free(bound);
	json_decref(j);
	return rc;
}

/* ---- results ---- */

/* "Name(inner)" -> inner, for the wrappers that do not change how a value
 * is written. */
static void unwrap(const char **type, size_t *n, const char *name)
{
	size_t k = strlen(name);

	while (*n > k + 1 && !strncmp(*type, name, k) && (*type)[k] == '(' && (*type)[*n - 1] == ')') {
		*type += k + 1;
		*n -= k + 2;
	}
}

/* One value of a column of type `type`: ClickHouse writes (U)Int64 as JSON
 * strings, which become msgpack integers again here. */
static int put_value(struct au_buf *out, const char *type, size_t tlen, const json_t *v,
		     struct au_err *err)
{
	unwrap(&type, &tlen, "LowCardinality");
	unwrap(&type, &tlen, "Nullable");
	if (json_is_string(v) && ((tlen == 5 && !strncmp(type, "Int64", 5)) ||
				  (tlen == 6 && !strncmp(type, "UInt64", 6)))) {
		const char *s = json_string_value(v);
		char *end;

		errno = 0;
		if (*type == 'U') {
			unsigned long long x = strtoull(s, &end, 10);

			if (!errno && *s != '-' && end != s && !*end)
				return au_mp_uint(out, x);
		} else {
			long long x = strtoll(s, &end, 10);

			if (!errno && end != s && !*end)
				return au_mp_int(out, x);
		}
	}
	if (json_is_array(v) && tlen > 7 && !strncmp(type, "Array(", 6) && type[tlen - 1] == ')') {
		size_t i;
		const json_t *item;

		if (au_mp_array(out, (uint32_t)json_array_size(v)) < 0)
			return -1;
		json_array_foreach(v, i, item)
			if (put_value(out, type + 6, tlen - 7, item, err) < 0)
				return -1;
		return 0;
	}
	return au_jansson_to_msgpack(v, out, err);
}

static int put_strings(struct au_buf *out, const char *key, const json_t *meta, const char *field)
{
	size_t i;
	const json_t *col;

	if (au_mp_str(out, key, strlen(key)) < 0 || au_mp_array(out, (uint32_t)json_array_size(meta)) < 0)
		return -1;
	json_array_foreach(meta, i, col) {
		const json_t *s = json_object_get(col, field);

		if (au_mp_str(out, json_string_value(s), json_string_length(s)) < 0)
			return -1;
	}
	return 0;
}

/*
 * Where a JSON answer that an exception cut short stops being JSON: at the
 * first word outside strings that is not true, false, null or an exponent
 * (the text 18.16 appends after the rows), or at the string that holds a
 * raw control character (ClickHouse escapes them in strings, so the
 * exception's final newline there means it began inside that string).
 */
static size_t json_cut(const char *s, size_t len)
{
	size_t i, word = 0, str = 0;
	int in_str = 0;

	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (in_str) {
			if (c == '\\')
				i++;
			else if (c == '"')
				in_str = 0;
			else if (c < 0x20)
				return str;
		} else if (c == '"') {
			in_str = 1;
			str = i + 1;
		} else if (isalpha(c)) {
			if (!i || !isalpha((unsigned char)s[i - 1]))
				word = i;
			if (!strchr("truefalsnE", c))
				return word;
		}
	}
	return len;
}

/* An answer that an exception cut short or ended: the exception in r
 * (au_ch_body_error), prefixed like every error of the task. */
static int query_exception(struct au_clickhouse *ch, struct au_ch_response *r, const char *body,
			   size_t len, size_t from)
{
	if (au_ch_body_error(ch, r, body + from, len - from) == 0 &&
	    (!from || au_ch_body_error(ch, r, body, len) == 0))
		return 0;
	return task_err("ch.query", &r->err);
}

/*
 * JSONCompact: {"meta": [{"name", "type"}...], "data": [[...]...], ...}.
 * Fails with the exception when one cut the answer short (18.16 to 25.10
 * append it to the rows, so the JSON does not parse) or ended it (23.9 to
 * 25.10 write it as "exception" by default); a string in the rows that
 * looks like one is only a string. Errors go to r->err.
 */
static int query_result(struct au_clickhouse *ch, const char *body, size_t len, struct au_buf *out,
			struct au_ch_response *r, uint64_t read[2])
{
	struct au_err *err = &r->err;
	json_error_t jerr;
	json_t *j = json_loadb(body, len, JSON_ALLOW_NUL, &jerr);
	const json_t *meta = json_object_get(j, "meta"), *data = json_object_get(j, "data"), *row, *col;
	const json_t *exception = json_object_get(j, "exception");
	size_t ncols = json_array_size(meta), i, k;
	int rc = -1;

	if (!j) {
		if (query_exception(ch, r, body, len, json_cut(body, len)) < 0)
			return -1;
		au_seterr(err, AU_EPROTO, "ch.query: unreadable answer from clickhouse: %s", jerr.text);
		return -1;
	}
	if (json_is_string(exception) &&
	    query_exception(ch, r, json_string_value(exception), json_string_length(exception), 0) < 0)
		goto done;
	if (!json_is_array(meta) || !json_is_array(data) || exception)
		goto bad;
	/* what the server read: 18.16 sends no X-ClickHouse-Summary, and its
	 * X-ClickHouse-Progress only while a query runs long, so the JSON
	 * formats' statistics are the one figure every version gives */
	if (read) {
		const json_t *st = json_object_get(j, "statistics");
		json_int_t rr = json_integer_value(json_object_get(st, "rows_read"));
		json_int_t br = json_integer_value(json_object_get(st, "bytes_read"));

		read[0] = rr > 0 ? (uint64_t)rr : 0;
		read[1] = br > 0 ? (uint64_t)br : 0;
	}
	json_array_foreach(meta, i, col)
		if (!json_is_string(json_object_get(col, "name")) ||
		    !json_is_string(json_object_get(col, "type")))
			goto bad;
	if (au_mp_map(out, 3) < 0 || put_strings(out, "columns", meta, "name") < 0 ||
	    put_strings(out, "types", meta, "type") < 0 || au_mp_str(out, "rows", 4) < 0 ||
	    au_mp_array(out, (uint32_t)json_array_size(data)) < 0)
		goto oom;
	json_array_foreach(data, i, row) {
		const json_t *v;

		if (!json_is_array(row) || json_array_size(row) != ncols)
			goto bad;
		if (au_mp_array(out, (uint32_t)ncols) < 0)
			goto oom;
		json_array_foreach(row, k, v) {
			const json_t *type = json_object_get(json_array_get(meta, k), "type");

			if (put_value(out, json_string_value(type), json_string_length(type), v, err) < 0)
				goto fail;
		}
	}
	rc = 0;
	goto done;
bad:
	au_seterr(err, AU_EPROTO, "ch.query: unexpected answer from clickhouse");
	goto done;
oom:
	au_seterr(err, AU_ENOMEM, "out of memory");
	goto done;
fail:
	task_err("ch.query", err);
done:
	json_decref(j);
	return rc;
}

/* au_ch_task_result with the server (NULL: none) and the errors in r */
static int task_result(struct au_clickhouse *ch, const char *task, const char *body, size_t len,
		       size_t rows, struct au_buf *out, struct au_ch_response *r, uint64_t read[2])
{
	size_t start = out->len;
	struct au_err *err = &r->err;

	if (!strcmp(task, "ch.query")) {
		if (query_result(ch, body, len, out, r, read) < 0)
			return -1;
	} else if (!strcmp(task, "ch.exec")) {
		if (au_mp_map(out, 1) < 0 || au_mp_str(out, "ok", 2) < 0 || au_mp_bool(out, 1) < 0)
			return au_seterr(err, AU_ENOMEM, "out of memory");
	} else if (!strcmp(task, "ch.insert")) {
		if (au_mp_map(out, 1) < 0 || au_mp_str(out, "inserted", 8) < 0 ||
		    au_mp_uint(out, rows) < 0)
			return au_seterr(err, AU_ENOMEM, "out of memory");
	} else {
		return au_seterr(err, AU_ENOTASK, "unknown task '%s'", task);
	}
	if (out->len - start > AU_MAX_RESULT)
		return au_seterr(err, AU_ETOOBIG, "%s: the result is %zu bytes, over the limit of %u",
				 task, out->len - start, AU_MAX_RESULT);
	return 0;
}

int au_ch_task_result(const char *task, const char *body, size_t len, size_t rows,
		      struct au_buf *out, struct au_err *err)
{
	struct au_ch_response r = { .http_status = 200 };

	if (task_result(NULL, task, body, len, rows, out, &r, NULL) < 0) {
		if (err)
			*err = r.err;
		return -1;
	}
	return 0;
}

/* ---- the tasks ---- */

/* A task waiting for ClickHouse. */
struct pending {
	struct au_task_ctx *ctx;
	struct au_clickhouse *ch;
	const char *task;
	size_t rows;
	int fail_on_timeout;   /* the computation's on_timeout is "fail" */
};

/* How a task fails with ClickHouse's error: an outage costs the
 * computation no attempt (au_ch_fault). The server's own timeout (159,
 * from max_execution_time, which is the computation's timeout) follows
 * the computation's on_timeout, as the worker's timer does. */
int au_ch_fail_kind(const struct au_clickhouse *ch, const struct au_ch_response *r,
		    int fail_on_timeout)
{
	if (r->ch_code == 159 && fail_on_timeout)
		return AU_FAIL_FOR_GOOD;
	switch (au_ch_fault(ch, r)) {
	case AU_CH_OUTAGE:
		return AU_FAIL_OUTAGE;
	case AU_CH_RETRY:
		return AU_FAIL_RETRY;
	default:
		return AU_FAIL_FOR_GOOD;
	}
}

/* The result of answer resp (NULL for none), or the error: one that
 * ClickHouse raised after the first rows is retried as it would be before
 * them. */
static void finish(struct au_task_ctx *ctx, struct au_clickhouse *ch, const char *task,
		   struct au_ch_response *resp, size_t rows, int fail_on_timeout)
{
	struct au_ch_response none = { .http_status = 200 };
	struct au_ch_response *r = resp ? resp : &none;
	struct au_buf out = AU_BUF_INIT;
	uint64_t read[2] = { 0, 0 };
	int rc = task_result(ch, task, (const char *)r->body.data, r->body.len, rows, &out, r, read);

	au_task_ch_read(ctx, read[0], read[1]);
	if (rc < 0)
		au_task_fail(ctx, r->err.code == AU_ECLICKHOUSE ? au_ch_fail_kind(ch, r, fail_on_timeout)
								: AU_FAIL_FOR_GOOD, "%s", r->err.str);
	else
		au_task_complete(ctx, out.data, out.len);
	au_buf_release(&out);
}

static void on_answer(struct au_ch_response *resp, void *arg)
{
	struct pending *p = arg;

	if (resp->err.code)
		au_task_fail(p->ctx, au_ch_fail_kind(p->ch, resp, p->fail_on_timeout), "%s: %s", p->task,
			     resp->err.str);
	else
		finish(p->ctx, p->ch, p->task, resp, p->rows, p->fail_on_timeout);
	free(p);
}

/* The worker gave up on the attempt (timeout, shutdown): drop the request
 * and stop the query, which ClickHouse would otherwise run to its end. */
static void on_cancel(void *arg)
{
	struct pending *p = arg;

	au_ch_cancel(p->ch, on_answer, p);
	au_ch_kill_query_async(p->ch, au_task_query_id(p->ctx));
	free(p);
}

static void run_task(struct au_task_ctx *ctx, const struct au_computation *c, void *arg)
{
	const char *task = arg;
	struct au_buf sql = AU_BUF_INIT, data = AU_BUF_INIT;
	struct au_clickhouse *ch = au_task_clickhouse(ctx);
	struct au_err err;
	struct pending *p;
	struct au_ch_query q = { .timeout_ms = c->timeout_ms };
	size_t rows;

	if (au_ch_task_request(task, c->args, c->args_len, &sql, &data, &rows, &err) < 0) {
		au_task_fail(ctx, err.code == AU_ENOMEM ? AU_FAIL_RETRY : AU_FAIL_FOR_GOOD, "%s", err.str);
	} else if (!strcmp(task, "ch.insert") && !rows) {
		finish(ctx, ch, task, NULL, 0, c->fail_on_timeout);
	} else if (!ch) {
		au_task_fail(ctx, AU_FAIL_FOR_GOOD, "%s: no clickhouse server configured", task);
	} else if (!(p = malloc(sizeof(*p)))) {
		au_task_fail(ctx, AU_FAIL_RETRY, "%s: out of memory", task);
	} else {
		*p = (struct pending){ ctx, ch, task, rows, c->fail_on_timeout };
		q.sql = (const char *)sql.data;
		q.query_id = au_task_query_id(ctx);
		q.log_comment = au_computation_header(c, "traceparent");
		if (data.len) {
			q.data = (const char *)data.data;
			q.data_len = data.len;
		}
		if (au_ch_send(ch, &q, on_answer, p) < 0) {
			free(p);
			au_task_fail(ctx, AU_FAIL_RETRY, "%s: unable to start the clickhouse request", task);
		} else {
			au_task_on_cancel(ctx, on_cancel, p);
		}
	}
	au_buf_release(&sql);
	au_buf_release(&data);
}

int au_ch_tasks_add(struct au_registry *reg)
{
	for (size_t i = 0; i < AU_ARRAY_SIZE(task_names); i++)
		if (au_registry_add(reg, task_names[i], run_task, (void *)task_names[i]) < 0)
			return -1;
	return au_ch_ops_add(reg);
}
