/*
 * flow.h - what the worker does for flows (docs/wire-format.md "Flows"):
 * before a computation runs, its dependencies' records decide whether it
 * runs (its dep_policy) and its references to them are replaced by what
 * they produced; after it completes, the children it asked for are added
 * to its flow and whatever waited for it waits for them too.
 */
#ifndef AU_WORKER_FLOW_H
#define AU_WORKER_FLOW_H

#include <stddef.h>

#include "core.h"
#include "store.h"

enum au_prep_verdict {
	AU_PREP_RUN = 0,            /* it runs, with args (when not NULL) */
	AU_PREP_FAIL,               /* it fails unrun, with error */
	AU_PREP_CANCEL,             /* it is cancelled unrun, with error */
	AU_PREP_AWAY                /* the store could not be read: released */
};

struct au_prep {
	int verdict;
	char *error;                /* malloc'ed */
	unsigned char *args;        /* its args, references replaced; malloc'ed */
	size_t args_len;
};

/* 1 when the message may name dependencies or references (a cheap look at
 * its bytes), 0 when it certainly does not. */
int au_flow_needs_prep(const unsigned char *body, size_t len);
/*
 * Reads the records the computation in body depends on or refers to from
 * s, and fills p. 0 on success; -1 with err when the store could not be
 * read (the caller releases the computation: nothing is decided). A
 * computation the worker cannot decode is left to the worker (0, p empty).
 * On the I/O thread: it waits on the store.
 */
int au_flow_prepare(struct au_store *s, const unsigned char *body, size_t len,
		    struct au_prep *p, struct au_err *err);
void au_prep_release(struct au_prep *p);

/*
 * A task's result asking for children: a map with the key "$spawn", an
 * array of maps {task, args[, queue, priority, max_attempts, timeout_ms]}.
 * Fills kids[0..*n) (malloc'ed array; au_computation_release each) as
 * computations of parent's flow (the parent's id when it has none), with
 * ids made from the parent's id and their index, so that a retried parent
 * adds the same ones; and *result with what the parent's record keeps:
 * the result without "$spawn", plus "$children": the ids. 0 with *n = 0
 * when the result asks for none; -1 with err for a malformed request.
 */
int au_flow_spawn(const struct au_computation *parent, const unsigned char *result, size_t len,
		  struct au_computation **kids, size_t *n, unsigned char **out, size_t *out_len,
		  struct au_err *err);

#endif
