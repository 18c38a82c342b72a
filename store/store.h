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

struct au_store_ops {
	const char *scheme;

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

/* Opens the store named by the URL's scheme. NULL only on OOM; check
 * s->err.code. */
struct au_store *au_store_open(const char *url);
void au_store_close(struct au_store *s);
extern const struct au_store_ops *const au_store_backends[];

#endif
