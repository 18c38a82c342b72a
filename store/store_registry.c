/* store_registry.c - the result stores, found by URL scheme. */
#include <stdlib.h>
#include <string.h>

#include "store.h"

extern const struct au_store_ops au_file_store_ops;
extern const struct au_store_ops au_redis_store_ops;
extern const struct au_store_ops au_memory_store_ops;
extern const struct au_store_ops au_pg_store_ops;

const struct au_store_ops *const au_store_backends[] = {
	&au_file_store_ops,
	&au_redis_store_ops,
	&au_memory_store_ops,
	&au_pg_store_ops,
	NULL
};

const struct au_store_ops *au_store_backend(const char *scheme)
{
	const struct au_store_ops *const *ops;

	for (ops = au_store_backends; *ops; ops++)
		if (!strcmp((*ops)->scheme, scheme) || ((*ops)->alias && !strcmp((*ops)->alias, scheme)))
			return *ops;
	return NULL;
}

struct au_store *au_store_open(const char *url)
{
	struct au_store *s = calloc(1, sizeof(*s));
	const struct au_store_ops *ops;

	if (!s)
		return NULL;
	if (!url || !*url) {
		au_seterr(&s->err, AU_EINVAL, "the store url is empty (AU_STORE or --store-url set to "
			  "nothing?): unset it for the default '%s'", AU_DEFAULT_STORE_URL);
		return s;
	}
	if (au_url_parse(url, &s->url, &s->err) < 0) {
		if (s->err.code == AU_ENOMEM) {
			free(s);
			return NULL;
		}
		return s;
	}
	if (!(ops = au_store_backend(s->url.scheme))) {
		au_seterr(&s->err, AU_EINVAL, "unknown store scheme '%s' in '%s'",
			  s->url.scheme, s->url.text);
		return s;
	}
	if (ops->open(s, &s->url) < 0) {
		if (s->err.code == AU_ENOMEM) {
			au_url_release(&s->url);
			free(s);
			return NULL;
		}
		return s;
	}
	s->ops = ops;
	return s;
}

void au_store_close(struct au_store *s)
{
	if (!s)
		return;
	/* ops is set only once open succeeded, so a failed store has no
	 * backend state to release. */
	if (s->ops)
		s->ops->close(s);
	au_url_release(&s->url);
	free(s);
}
