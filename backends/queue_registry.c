/* queue_registry.c - the queue backends, found by URL scheme. */
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
	l->body = NULL;
	l->body_len = 0;
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
