/* queue_registry.c - the queue backends, found by URL scheme. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "queue.h"

extern const struct au_queue_ops au_redis_queue_ops;
extern const struct au_queue_ops au_memory_queue_ops;
extern const struct au_queue_ops au_pg_queue_ops;

const struct au_queue_ops *const au_queue_backends[] = {
	&au_redis_queue_ops,
	&au_memory_queue_ops,
	&au_pg_queue_ops,
	NULL
};

const struct au_queue_ops *au_queue_backend(const char *scheme)
{
	const struct au_queue_ops *const *ops;

	for (ops = au_queue_backends; *ops; ops++)
		if (!strcmp((*ops)->scheme, scheme) || ((*ops)->alias && !strcmp((*ops)->alias, scheme)))
			return *ops;
	return NULL;
}

struct au_queue *au_queue_open(const char *url)
{
	struct au_queue *q = calloc(1, sizeof(*q));
	const struct au_queue_ops *ops;

	if (!q)
		return NULL;
	if (!url || !*url) {
		au_seterr(&q->err, AU_EINVAL, "the queue url is empty (AU_QUEUE or --queue-url set to "
			  "nothing?): unset it for the default '%s'", AU_DEFAULT_QUEUE_URL);
		return q;
	}
	if (au_url_parse(url, &q->url, &q->err) < 0)
		goto fail;
	if (!(ops = au_queue_backend(q->url.scheme))) {
		au_seterr(&q->err, AU_EINVAL, "unknown queue scheme '%s' in '%s'", q->url.scheme,
			  q->url.text);
		return q;
	}
	/* ops stays NULL unless open succeeds, so close knows what to undo;
	 * a failed open has released its own state. */
	if (ops->open(q, &q->url) < 0)
		goto fail;
	q->ops = ops;
	return q;
fail:
	if (q->err.code != AU_ENOMEM)
		return q;
	au_url_release(&q->url);
	free(q);
	return NULL;
}

void au_queue_close(struct au_queue *q)
{
	if (!q)
		return;
	if (q->ops)
		q->ops->close(q);
	au_url_release(&q->url);
	free(q);
}

void au_lease_release(struct au_lease *l)
{
	free(l->body);
	free(l->story);
	l->body = l->story = NULL;
	l->body_len = l->story_len = 0;
}

void au_dead_release(struct au_dead *d)
{
	free(d->body);
	free(d->story);
	d->body = d->story = NULL;
	d->body_len = d->story_len = 0;
}

void au_queued_release(struct au_queued *q)
{
	free(q->story);
	q->story = NULL;
	q->story_len = 0;
}

void au_cancelled_release(struct au_cancelled *c)
{
	free(c->body);
	free(c->story);
	c->body = c->story = NULL;
	c->body_len = c->story_len = 0;
}

int au_queue_dead_limits(const struct au_url *url, struct au_dead_limits *out,
			 struct au_err *err)
{
	char *max = au_url_param(url, "dead_max"), *age = au_url_param(url, "dead_max_age"), *end;
	int rc = 0;

	out->max = AU_DEAD_MAX_DEFAULT;
	out->max_age_ms = AU_DEAD_MAX_AGE_DEFAULT_MS;
	if (max) {
		errno = 0;
		out->max = strtoull(max, &end, 10);
		if (!*max || *end || errno || *max == '-')
			rc = au_seterr(err, AU_EINVAL, "invalid url '%s': dead_max must be a count"
				       " (0: no bound)", url->text);
	}
	if (!rc && age && strcmp(age, "0") && au_duration_parse(age, &out->max_age_ms, err) < 0)
		rc = au_seterr(err, AU_EINVAL, "invalid url '%s': dead_max_age must be a duration"
			       " such as 7d (0: no bound)", url->text);
	else if (!rc && age && !strcmp(age, "0"))
		out->max_age_ms = 0;
	free(max);
	free(age);
	return rc;
}

int au_queue_locate(struct au_queue *q, const char *id, const char *hint, char **queue)
{
	struct au_queued info;
	char **names = NULL;
	size_t n = 0, i;
	int rc = -1;

	*queue = NULL;
	if (!au_id_valid(id))
		return au_queue_bad_id(q, id);
	if (hint && *hint) {
		if (au_queue_peek(q, hint, id, &info) == 0) {
			au_queued_release(&info);
			return (*queue = au_strdup(hint)) ? 0 :
			       au_seterr(&q->err, AU_ENOMEM, "out of memory");
		}
		if (q->err.code != AU_ENOTFOUND)
			return -1;
	}
	if (q->ops->locate) {
		if (q->ops->locate(q, id, queue) == 0)
			return 0;
		return -1;
	}
	if (au_queue_list(q, &names, &n) < 0)
		return -1;
	for (i = 0; i < n && rc < 0; i++) {
		if (hint && !strcmp(names[i], hint))
			continue;
		if (au_queue_peek(q, names[i], id, &info) == 0) {
			au_queued_release(&info);
			*queue = names[i];
			names[i] = NULL;
			rc = 0;
		} else if (q->err.code != AU_ENOTFOUND) {
			break;
		}
	}
	if (rc < 0 && (i == n || q->err.code == AU_ENOTFOUND))
		au_seterr(&q->err, AU_ENOTFOUND, "no queue of '%s' has computation '%s'", q->url.text,
			  id);
	for (i = 0; i < n; i++)
		free(names[i]);
	free(names);
	return rc;
}

int au_queue_housekeep_due(struct au_housekeeping *hk, const char *queue)
{
	uint64_t h = 1469598103934665603ull, now = au_mono_us();
	size_t i, slot = 0;
	const char *p;

	for (p = queue; *p; p++)
		h = (h ^ (unsigned char)*p) * 1099511628211ull;
	h |= 1;   /* never 0, the free mark */
	for (i = 0; i < AU_ARRAY_SIZE(hk->name); i++) {
		if (hk->name[i] == h) {
			if (now - hk->at_us[i] < AU_HOUSEKEEP_MS * 1000ull)
				return 0;
			slot = i;
			break;
		}
		if (hk->at_us[i] < hk->at_us[slot])   /* free ones have 0: taken first */
			slot = i;
	}
	hk->name[slot] = h;
	hk->at_us[slot] = now;
	return 1;
}

static const char *const beat_states[] = {
	[AU_BEAT_RUNNING] = "running",
	[AU_BEAT_PAUSED] = "paused",
	[AU_BEAT_DRAINING] = "draining",
};

const char *au_beat_state_name(enum au_beat_state st)
{
	return (size_t)st < AU_ARRAY_SIZE(beat_states) ? beat_states[st] : "unknown";
}

int au_beat_state_parse(const char *name, enum au_beat_state *st)
{
	size_t i;

	for (i = 0; i < AU_ARRAY_SIZE(beat_states); i++)
		if (!strcmp(name, beat_states[i])) {
			*st = (enum au_beat_state)i;
			return 0;
		}
	return -1;
}

int au_queue_rate_take(struct au_queue *q, const char *key, const struct au_rate_limit *lim,
		       uint64_t *wait_ms, int *taken)
{
	size_t n = key ? strnlen(key, AU_RATE_KEY_MAX + 1) : 0, i, k;
	char shown[AU_ID_SHOWN_SIZE];

	*wait_ms = 0;
	*taken = 0;
	for (i = 0; i < n; i += k)
		if ((unsigned char)key[i] < ' ' || key[i] == 0x7f ||
		    !(k = au_utf8_seq((const unsigned char *)key + i, n - i)))
			break;
	if (!n || n > AU_RATE_KEY_MAX || i < n)
		return au_seterr(&q->err, AU_EINVAL, "invalid rate limit key '%s'",
				 au_id_shown(shown, key));
	if (!(lim->rate_per_s > 0) || !isfinite(lim->rate_per_s) || !(lim->burst >= 1) ||
	    !isfinite(lim->burst))
		return au_seterr(&q->err, AU_EINVAL, "invalid rate limit for '%s': %g/s, burst %g",
				 au_id_shown(shown, key), lim->rate_per_s, lim->burst);
	if (!q->ops->rate_take)
		return au_seterr(&q->err, AU_ESTATE, "queue '%s' keeps no rate limits", q->url.text);
	return q->ops->rate_take(q, key, lim, wait_ms, taken);
}

int au_queue_adopt(struct au_queue *q, const char *id, const char (*deps)[AU_ID_SIZE], size_t n)
{
	size_t i;

	if (!au_id_valid(id))
		return au_queue_bad_id(q, id);
	for (i = 0; i < n; i++)
		if (!au_id_valid(deps[i]))
			return au_queue_bad_id(q, deps[i]);
	if (!q->ops->adopt)
		return au_seterr(&q->err, AU_ESTATE, "queue '%s' keeps no flows", q->url.text);
	return n ? q->ops->adopt(q, id, deps, n) : 0;
}

static int kv_name_ok(const char *s, size_t max, int key)
{
	size_t i, n = s ? strnlen(s, max + 1) : 0;

	if (!n || n > max)
		return 0;
	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (!(c >= 'a' && c <= 'z') && c != '_' &&
		    !(key && ((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
			      c == ':' || c == '-')))
			return 0;
	}
	return 1;
}

static int kv_check(struct au_queue *q, const char *ns, const char *key)
{
	char shown[AU_ID_SHOWN_SIZE];

	if (!kv_name_ok(ns, 32, 0))
		return au_seterr(&q->err, AU_EINVAL, "invalid namespace '%s'", au_id_shown(shown, ns));
	if (key && !kv_name_ok(key, AU_KV_KEY_MAX, 1))
		return au_seterr(&q->err, AU_EINVAL, "invalid key '%s'", au_id_shown(shown, key));
	if (!q->ops->kv_put)
		return au_seterr(&q->err, AU_ESTATE, "queue '%s' keeps no shared keys", q->url.text);
	return 0;
}

int au_queue_kv_put(struct au_queue *q, const char *ns, const char *key, const unsigned char *val,
		    size_t len, uint64_t ttl_ms, int nx, int *done)
{
	*done = 0;
	if (kv_check(q, ns, key) < 0)
		return -1;
	if (len > AU_KV_MAX)
		return au_seterr(&q->err, AU_EINVAL, "value of '%s' too large: %zu bytes (limit %u)",
				 key, len, AU_KV_MAX);
	return q->ops->kv_put(q, ns, key, val, len, ttl_ms, nx, done);
}

int au_queue_kv_get(struct au_queue *q, const char *ns, const char *key, unsigned char **val,
		    size_t *len)
{
	*val = NULL;
	*len = 0;
	if (kv_check(q, ns, key) < 0)
		return -1;
	return q->ops->kv_get(q, ns, key, val, len);
}

int au_queue_kv_del(struct au_queue *q, const char *ns, const char *key,
		    const unsigned char *expect, size_t expect_len, int *done)
{
	*done = 0;
	if (kv_check(q, ns, key) < 0)
		return -1;
	return q->ops->kv_del(q, ns, key, expect, expect_len, done);
}

int au_queue_kv_keys(struct au_queue *q, const char *ns, const char *prefix, size_t max,
		     char ***keys, size_t *n)
{
	*keys = NULL;
	*n = 0;
	if (kv_check(q, ns, NULL) < 0)
		return -1;
	if (prefix && *prefix && !kv_name_ok(prefix, AU_KV_KEY_MAX, 1))
		return au_seterr(&q->err, AU_EINVAL, "invalid key prefix '%s'", prefix);
	return q->ops->kv_keys(q, ns, prefix ? prefix : "", max, keys, n);
}
