/*
 * queues.c - the queues one worker serves, as `--queues` names them:
 * "a,b,c" in strict order (a first, b only when a has nothing, ...) or
 * with weights, "a:5,b:1", where each lease draws the order at random by
 * weight (as Sidekiq's weighted queues do), so a gets five leases in six
 * while both have work and b gets all of them when a has none.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"

/* A weight: ":<digits>" at the end of s, 1 to AU_QUEUE_WEIGHT_MAX, or 0 when s
 * does not end in one. *len gets the length of the name before it. */
static unsigned weight_of(const char *s, size_t n, size_t *len, int *bad)
{
	size_t i = n;
	unsigned long v = 0;

	*len = n;
	*bad = 0;
	while (i > 0 && isdigit((unsigned char)s[i - 1]))
		i--;
	if (i == 0 || s[i - 1] != ':') {
		if (memchr(s, ':', n))   /* "a:" or "a:x" */
			*bad = 1;
		return 0;
	}
	if (i == n || n - i > 6) {
		*bad = 1;
		return 0;
	}
	v = strtoul(s + i, NULL, 10);
	if (v < 1 || v > AU_QUEUE_WEIGHT_MAX) {
		*bad = 1;
		return 0;
	}
	*len = i - 1;
	return (unsigned)v;
}

int au_queue_name_check(const char *name, struct au_err *err)
{
	size_t n = strlen(name), len, i;
	int bad;

	if (n > AU_QUEUE_NAME_MAX)
		return au_seterr(err, AU_EINVAL, "invalid queue name '%.64s...': longer than %u bytes",
				 name, AU_QUEUE_NAME_MAX);
	for (i = 0; i < n; i++)
		if (!isalnum((unsigned char)name[i]) && !strchr("_.:-", name[i]))
			return au_seterr(err, AU_EINVAL, "invalid queue name '%s': it cannot hold %s%c%s "
					 "(letters, digits and _.:- only)", name,
					 isgraph((unsigned char)name[i]) ? "'" : "",
					 isgraph((unsigned char)name[i]) ? name[i] : ' ',
					 isgraph((unsigned char)name[i]) ? "'" : "spaces or control characters");
	if (weight_of(name, n, &len, &bad) || (n && name[n - 1] == ':'))
		return au_seterr(err, AU_EINVAL, "invalid queue name '%s': it cannot end in ':' "
				 "and digits (a weight, in a worker's --queues)", name);
	return 0;
}

void au_queue_list_release(struct au_queue_list *l)
{
	size_t i;

	for (i = 0; i < l->n; i++)
		free(l->names[i]);
	memset(l, 0, sizeof(*l));
}

int au_queue_list_parse(const char *spec, struct au_queue_list *l, struct au_err *err)
{
	const char *p = spec && *spec ? spec : AU_DEFAULT_QUEUE;

	memset(l, 0, sizeof(*l));
	for (;;) {
		const char *end = strchr(p, ',');
		size_t n = end ? (size_t)(end - p) : strlen(p), len, i;
		int bad;
		unsigned wt = weight_of(p, n, &len, &bad);

		if (bad || !len) {
			au_seterr(err, AU_EINVAL, "invalid queues '%s': %s", spec, !len && !bad
				  ? "an empty queue name" : "a weight is ':' and 1 to 1000 (a:5,b:1)");
			goto fail;
		}
		if (l->n == AU_MAX_QUEUES) {
			au_seterr(err, AU_EINVAL, "invalid queues '%s': at most %u queues", spec,
				  AU_MAX_QUEUES);
			goto fail;
		}
		if (!(l->names[l->n] = au_strndup(p, len))) {
			au_seterr(err, AU_ENOMEM, "out of memory");
			goto fail;
		}
		l->weights[l->n] = wt ? wt : 1;
		l->weighted |= wt != 0;
		if (au_queue_name_check(l->names[l->n++], err) < 0)
			goto fail;
		for (i = 0; i + 1 < l->n; i++)
			if (!strcmp(l->names[i], l->names[l->n - 1])) {
				au_seterr(err, AU_EINVAL, "invalid queues '%s': '%s' is named twice", spec,
					  l->names[i]);
				goto fail;
			}
		if (!end)
			return 0;
		p = end + 1;
	}
fail:
	au_queue_list_release(l);
	return -1;
}

void au_queue_list_order(const struct au_queue_list *l, size_t *order)
{
	unsigned left = 0;
	size_t i, k, t;

	for (i = 0; i < l->n; i++) {
		order[i] = i;
		left += l->weights[i];
	}
	if (!l->weighted)
		return;
	/* a draw without replacement: each place goes to one of those left
	 * with the chance of its weight */
	for (k = 0; k + 1 < l->n; k++) {
		unsigned r = (unsigned)(au_random64() % left);

		for (i = k; r >= l->weights[order[i]]; i++)
			r -= l->weights[order[i]];
		t = order[k];
		order[k] = order[i];
		order[i] = t;
		left -= l->weights[order[k]];
	}
}

char *au_queue_list_text(const struct au_queue_list *l)
{
	struct au_buf b = AU_BUF_INIT;
	size_t i;
	int rc = 0;

	for (i = 0; i < l->n; i++) {
		rc |= au_buf_puts(&b, i ? "," : "") | au_buf_puts(&b, l->names[i]);
		if (l->weighted)
			rc |= au_buf_printf(&b, ":%u", l->weights[i]);
	}
	if (rc || au_buf_reserve(&b, 1) < 0) {
		au_buf_release(&b);
		return NULL;
	}
	b.data[b.len] = '\0';
	return (char *)b.data;
}
