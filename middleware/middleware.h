/*
 * middleware.h - the hook chain every attempt runs through:
 * before (in order) -> task -> after or on_error (in reverse order).
 * A built-in middleware is one file with one `struct au_middleware_ops`.
 */
#ifndef AU_MIDDLEWARE_H
#define AU_MIDDLEWARE_H

#include <stddef.h>

#include "au.h"

struct au_chain_entry {
	const struct au_middleware_ops *ops;
	void *ctx;
};

struct au_chain {
	struct au_chain_entry *entries;
	size_t n;
};

/* Appends ops (with its ctx) to the chain, which owns ctx from then on:
 * ops->free(ctx) runs in au_chain_release, or at once when this fails. */
int au_chain_add(struct au_chain *ch, const struct au_middleware_ops *ops, void *ctx);
/* Calls every ops->free(ctx), then frees the chain's memory. */
void au_chain_release(struct au_chain *ch);
/* Runs the before hooks in order; stops at the first that fails and returns
 * -1 with its message in errbuf. */
int au_chain_before(struct au_chain *ch, struct au_run *run, char *errbuf, size_t errlen);
/* Runs after (run->status COMPLETED) or on_error (anything else), in reverse. */
void au_chain_finish(struct au_chain *ch, struct au_run *run);

#endif
