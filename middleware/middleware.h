/*
 * middleware.h - the hook chain every computation runs through: on the
 * client, before_enqueue (in order); on the worker, before (in order) ->
 * task -> after, or on_error then on_retry or on_dead (in reverse order).
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
/* 1 if some middleware of the chain has that hook. */
int au_chain_has_before_enqueue(const struct au_chain *ch);
/* Runs every before_enqueue in order: AU_HOOK_OK, or AU_HOOK_REFUSE or
 * AU_HOOK_ERROR (a fail-closed middleware's) with the message in errbuf,
 * "middleware 'NAME': ..." for an error. */
int au_chain_before_enqueue(struct au_chain *ch, struct au_enqueue_ctx *e, char *errbuf,
			    size_t errlen);
/*
 * Runs the before hooks from *pos on, in order. Returns AU_HOOK_OK when
 * all ran; AU_HOOK_REFUSE, AU_HOOK_DELAY (run->delay_ms) or AU_HOOK_ERROR
 * (a fail-closed middleware's) with errbuf; AU_HOOK_PENDING with *pos at
 * the hook that answers later: once it has answered AU_HOOK_OK, call this
 * again with *pos + 1. au_chain_hook_result turns such an answer into
 * what this would have returned.
 */
int au_chain_before(struct au_chain *ch, struct au_run *run, size_t *pos, char *errbuf,
		    size_t errlen);
/* What the before hook at pos answering rc (with message) comes to: a
 * non-fail-closed middleware's error is logged and becomes AU_HOOK_OK. */
int au_chain_hook_result(struct au_chain *ch, size_t pos, const char *hook, int rc,
			 const char *message, char *errbuf, size_t errlen);
/* After the outcome: after (run->status AU_COMPLETED), or on_error then
 * on_retry (AU_RETRYING) or on_dead (run->dead), each in reverse order. */
void au_chain_finish(struct au_chain *ch, struct au_run *run);

/* Calls fn(arg, name, value) for each item of a middleware spec
 * ("logging:json,tracing,ratelimit:a=1/s,b=2/s": value NULL for an item
 * without ':'); stops at the first that returns -1 (err says why). */
int au_mw_spec_each(const char *spec, int (*fn)(void *arg, const char *name, const char *value,
						struct au_err *err),
		    void *arg, struct au_err *err);
/* Calls fn(arg, task, ms) for each TASK=DURATION of a timeout:... value
 * (fn NULL: checks only); -1 with err for a bad pair or when fn fails. */
int au_mw_timeouts(const char *value, int (*fn)(void *arg, const char *task, uint32_t ms),
		   void *arg, struct au_err *err);
/* 0 if every item of spec names a built-in middleware with a good value
 * (or timeout:TASK=DURATION,...); -1 with err saying which does not. */
int au_mw_check(const char *spec, struct au_err *err);
/* The built-in middleware name, with its value: *ops and a new *ctx
 * (the chain frees it); -1 with err for an unknown name or a bad value. */
int au_mw_new(const char *name, const char *value, const struct au_config *cfg,
	      const struct au_middleware_ops **ops, void **ctx, struct au_err *err);
/* With AU_SIGNING_KEY set, adds the signing middleware (au.h) with its
 * keys to ch: 0, also when it is unset; -1 with err when the list is bad
 * (AU_EINVAL, the key never shown) or memory runs out. */
int au_signing_from_env(struct au_chain *ch, struct au_err *err);

#endif
