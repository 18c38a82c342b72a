/*
 * store.h - the result store plug point. A store is one file that fills one
 * `struct au_store_ops` and one line in store/registry.c.
 *
 * Records are terminal outcomes. The first terminal write of an id wins
 * (put is create-if-absent), so a stale or repeated attempt never overwrites
 * a stored result and a cancel racing a completion leaves exactly one
 * terminal record. A record expires ttl_s after it was written; reads never
 * return an expired record.
 */
#ifndef AU_STORE_H
#define AU_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "core.h"

struct au_store;

/* What a store does beyond the contract (au_store_ops.features). */
enum au_store_feature {
	AU_STORE_NATIVE_EXPIRY = 1 << 0,  /* the server drops expired records itself:
					     sweep finds none */
	AU_STORE_TELLS_EXPIRED = 1 << 1,  /* get of an expired record says AU_EEXPIRED,
					     not AU_ENOTFOUND */
	AU_STORE_SHARED = 1 << 2,         /* other processes and machines read the same
					     records, which outlive the process */
};

struct au_store_ops {
	const char *scheme;
	const char *alias;          /* a second scheme for the same store, or NULL */
	unsigned features;          /* enum au_store_feature bits */

	int (*open)(struct au_store *s, const struct au_url *url);
	void (*close)(struct au_store *s);

	/* Writes n records (each with its ttl_s; expires_at_ms is set by the
	 * store). applied[i] (may be NULL) = 1 if written, 0 if the id already
	 * had a live record. */
	int (*put)(struct au_store *s, const struct au_record *recs, size_t n, int *applied);
	/* -1 with AU_ENOTFOUND, or AU_EEXPIRED where the store can tell. */
	int (*get)(struct au_store *s, const char *id, struct au_record *out);
	int (*del)(struct au_store *s, const char *id);
	/* Removes up to max expired records (stores with native expiry: 0). */
	int (*sweep)(struct au_store *s, size_t max, size_t *removed);
	/* Waits until id has a record (then fills out) or timeout_ms passes
	 * (-1 with AU_ETIMEDOUT). timeout_ms < 0 waits forever. Wakes on the
	 * write, not by polling every few ms. */
	int (*wait)(struct au_store *s, const char *id, int timeout_ms, struct au_record *out);
};

struct au_store {
	const struct au_store_ops *ops;
	void *ctx;
	struct au_url url;
	struct au_err err;
};

/* Opens the store named by the URL's scheme or alias
 * (store/store_registry.c). NULL only on OOM; check s->err.code. */
struct au_store *au_store_open(const char *url);
void au_store_close(struct au_store *s);
extern const struct au_store_ops *const au_store_backends[];
/* The store whose scheme or alias is scheme, or NULL. */
const struct au_store_ops *au_store_backend(const char *scheme);

/*
 * Callers go through these, never through s->ops: they refuse ids that are
 * not ids (so no store sees one, and none can become a path or a key
 * outside the store) and stand in for the optional operations.
 */
/* 1 if the store has every bit of want (enum au_store_feature). */
static inline int au_store_has(const struct au_store *s, unsigned want)
{
	return (s->ops->features & want) == want;
}

static inline int au_store_bad_id(struct au_store *s, const char *id)
{
	char shown[AU_ID_SHOWN_SIZE];

	return au_seterr(&s->err, AU_EINVAL, "invalid computation id '%s'", au_id_shown(shown, id));
}

static inline int au_store_put(struct au_store *s, const struct au_record *recs, size_t n,
			       int *applied)
{
	for (size_t i = 0; i < n; i++)
		if (!au_id_valid(recs[i].id))
			return au_store_bad_id(s, recs[i].id);
	return s->ops->put(s, recs, n, applied);
}

static inline int au_store_get(struct au_store *s, const char *id, struct au_record *out)
{
	if (!au_id_valid(id))
		return au_store_bad_id(s, id);
	return s->ops->get(s, id, out);
}

static inline int au_store_del(struct au_store *s, const char *id)
{
	if (!au_id_valid(id))
		return au_store_bad_id(s, id);
	return s->ops->del(s, id);
}

static inline int au_store_sweep(struct au_store *s, size_t max, size_t *removed)
{
	*removed = 0;
	if (!s->ops->sweep)
		return 0;
	return s->ops->sweep(s, max, removed);
}

static inline int au_store_wait(struct au_store *s, const char *id, int timeout_ms,
				struct au_record *out)
{
	if (!au_id_valid(id))
		return au_store_bad_id(s, id);
	return s->ops->wait(s, id, timeout_ms, out);
}

#endif
