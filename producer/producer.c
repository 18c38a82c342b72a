/*
 * producer.c - the client side: enqueue computations, follow them through
 * their handles (status, wait, result, cancel).
 *
 * A computation's state lives in two places: the queue knows it while it
 * waits or runs, the store once it is over. Reads ask the store first, then
 * the queue, then the store again (a worker writes the record before it
 * acks, so a computation can leave the queue between our two looks, but it
 * is never in neither).
 *
 * Ids are global: the queue a handle names is a hint, looked at first; a
 * computation not there (or a handle that names none) is found through
 * au_queue_locate, which asks every queue the backend knows, in one look
 * where it can. Enqueue pays nothing for it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"
#include "middleware.h"
#include "queue.h"
#include "store.h"

struct au_client {
	struct au_queue *q;
	struct au_store *store;
	struct au_chain chain;      /* before_enqueue hooks */
	char *queue_url;            /* for a middleware that opens its own connection */
	struct au_chain signing;    /* AU_SIGNING_KEY's: signs after every other hook */
	struct au_err sign_err;     /* a bad AU_SIGNING_KEY: no enqueue at all */
	struct au_err err;
};

/*
 * One allocation, the queue's name included. With the name in a block of
 * its own, 300,000 handles freed (a long bench run) left glibc's heap a
 * checkerboard of free handles and free 32-byte names that malloc keeps
 * apart (fastbins): 110 MB it could not give back, which the next malloc()
 * of 1 kB or more merged at once, writing to every page; after a fork()
 * that was 27,000 copy-on-write faults and a 2 s enqueue (issue 7).
 */
struct au_handle {
	struct au_client *cl;
	char id[AU_ID_SIZE];
	char bad_id[AU_ID_SHOWN_SIZE];  /* the id given, as shown, when it is none */
	struct au_err err;
	char *found;                /* the queue it was located on, malloc'ed, or NULL */
	int hinted;                 /* queue[] was named by the caller */
	char queue[];
};

struct au_client *au_client_new(const struct au_config *cfg)
{
	struct au_client *cl = calloc(1, sizeof(*cl));
	struct au_config conf = *cfg;

	if (!cl)
		return NULL;
	au_config_from_env(&conf);
	cl->queue_url = au_strdup(conf.queue_url);
	cl->q = au_queue_open(conf.queue_url);
	cl->store = au_store_open(conf.store_url);
	if (!cl->q || !cl->store || !cl->queue_url) {
		au_client_free(cl);
		return NULL;
	}
	if (au_signing_from_env(&cl->signing, &cl->sign_err) < 0)
		cl->err = cl->sign_err;
	else if (cl->q->err.code)
		cl->err = cl->q->err;
	else if (cl->store->err.code)
		cl->err = cl->store->err;
	return cl;
}

void au_client_free(struct au_client *cl)
{
	if (!cl)
		return;
	if (cl->q)
		au_queue_close(cl->q);
	if (cl->store)
		au_store_close(cl->store);
	au_chain_release(&cl->chain);
	free(cl->queue_url);
	au_chain_release(&cl->signing);
	free(cl);
}

static int spec_item(void *arg, const char *name, const char *value, struct au_err *err)
{
	struct au_client *cl = arg;
	struct au_config cfg = { cl->queue_url, NULL, NULL };
	const struct au_middleware_ops *ops;
	void *ctx;

	if (!strcmp(name, "timeout"))   /* the workers' */
		return 0;
	if (au_mw_new(name, value, &cfg, &ops, &ctx, err) < 0)
		return -1;
	if (!ops->before_enqueue) {     /* nothing a client runs */
		if (ops->free)
			ops->free(ctx);
		return 0;
	}
	return au_client_use(cl, ops, ctx) < 0 ? au_seterr(err, AU_ENOMEM, "out of memory") : 0;
}

int au_client_use_spec(struct au_client *cl, const char *spec, struct au_err *err)
{
	return au_mw_spec_each(spec, spec_item, cl, err);
}

int au_client_use(struct au_client *cl, const struct au_middleware_ops *ops, void *ctx)
{
	if (au_chain_add(&cl->chain, ops, ctx) < 0)
		return au_seterr(&cl->err, AU_ENOMEM, "out of memory");
	return 0;
}

const struct au_err *au_client_err(const struct au_client *cl)
{
	return &cl->err;
}

/* -1 with h->err set when the handle names no id. */
static int bad_id(struct au_handle *h)
{
	if (!h->bad_id[0] && au_id_valid(h->id))
		return 0;
	return au_seterr(&h->err, AU_EINVAL, "invalid computation id '%s'",
			 h->bad_id[0] ? h->bad_id : h->id);
}

struct au_handle *au_handle_new(struct au_client *cl, const char *id, const char *queue)
{
	const char *name = au_queue_name(queue);
	size_t len = strlen(name);
	struct au_handle *h = calloc(1, sizeof(*h) + len + 1);

	if (!h)
		return NULL;
	h->cl = cl;
	h->hinted = queue && *queue;
	snprintf(h->id, sizeof(h->id), "%s", id ? id : "");
	if (!cl->q->ops || !cl->store->ops)   /* the client never connected */
		h->err = cl->err;
	memcpy(h->queue, name, len + 1);
	/* the id given, not its first 32 bytes (which may be an id) */
	if (!au_id_valid(id ? id : "")) {
		au_id_shown(h->bad_id, id ? id : "");
		au_seterr(&h->err, AU_EINVAL, "invalid computation id '%s'", h->bad_id);
	}
	return h;
}

void au_handle_free(struct au_handle *h)
{
	if (!h)
		return;
	free(h->found);
	free(h);
}

/* The queue to look at for h: where it was found, else the one named. */
static const char *where(const struct au_handle *h)
{
	return h->found ? h->found : h->queue;
}

/* Finds the queue of h's id among all: 1 found (h->found set), 0 on none,
 * -1 on an error (h->err). */
static int locate(struct au_handle *h)
{
	struct au_queue *q = h->cl->q;
	char *name = NULL;

	if (au_queue_locate(q, h->id, NULL, &name) < 0) {
		if (q->err.code == AU_ENOTFOUND)
			return 0;
		h->err = q->err;
		return -1;
	}
	free(h->found);
	h->found = name;
	return 1;
}

const char *au_handle_id(const struct au_handle *h)
{
	return h->id;
}

const struct au_err *au_handle_err(const struct au_handle *h)
{
	return &h->err;
}

/* Fills c from the options, without task and args. */
static int prepare(struct au_computation *c, const char *task, const struct au_enqueue_opts *o,
		   uint64_t now, struct au_err *err)
{
	static const struct au_enqueue_opts defaults;
	size_t i;

	if (!o)
		o = &defaults;
	au_computation_init(c);
	if (!task || !*task)
		return au_seterr(err, AU_EINVAL, "missing task name");
	if (o->priority < AU_PRIORITY_MIN || o->priority > AU_PRIORITY_MAX)
		return au_seterr(err, AU_EINVAL, "priority %d out of range %d..%d", o->priority,
				 AU_PRIORITY_MIN, AU_PRIORITY_MAX);
	if (o->nheaders > AU_MAX_HEADERS)
		return au_seterr(err, AU_EINVAL, "too many headers: %zu (limit %d)", o->nheaders,
				 AU_MAX_HEADERS);
	if (au_queue_name_check(au_queue_name(o->queue), err) < 0)
		return -1;
	if (o->key && (!*o->key || strlen(o->key) > AU_MAX_KEY))
		return au_seterr(err, AU_EINVAL, "idempotency key must be 1 to %d bytes", AU_MAX_KEY);
	if (!o->key)
		au_id_new(c->id);
	else if (au_id_from_key(c->id, au_queue_name(o->queue), o->key) < 0)
		return au_seterr(err, AU_ENOMEM, "unable to hash the idempotency key");
	c->task = au_strdup(task);
	c->queue = au_strdup(au_queue_name(o->queue));
	c->priority = o->priority;
	c->created_at_ms = now;
	c->run_at_ms = o->delay_ms ? now + o->delay_ms : 0;
	c->max_attempts = o->max_attempts ? o->max_attempts : AU_DEFAULT_MAX_ATTEMPTS;
	c->timeout_ms = o->timeout_ms;
	c->fail_on_timeout = o->fail_on_timeout;
	/* on the wire 0 means never expires */
	c->ttl_s = o->ttl_s == AU_TTL_NEVER ? 0 : o->ttl_s ? o->ttl_s : AU_DEFAULT_TTL_S;
	if (o->nheaders) {
		c->headers = calloc(o->nheaders, sizeof(*c->headers));
		if (!c->headers)
			goto oom;
		for (i = 0; i < o->nheaders; i++) {
			c->headers[i].key = au_strdup(o->headers[i].key);
			c->headers[i].value = au_strdup(o->headers[i].value);
			c->nheaders++;
			if (!c->headers[i].key || !c->headers[i].value)
				goto oom;
		}
	}
	if (o->ndepends_on) {
		if (o->ndepends_on > AU_MAX_DEPS) {
			au_computation_release(c);
			return au_seterr(err, AU_EINVAL, "too many dependencies: %zu (limit %d)",
					 o->ndepends_on, AU_MAX_DEPS);
		}
		if (!(c->deps = calloc(o->ndepends_on, sizeof(*c->deps))))
			goto oom;
		for (i = 0; i < o->ndepends_on; i++) {
			if (!au_id_valid(o->depends_on[i])) {
				char shown[AU_ID_SHOWN_SIZE];

				au_id_shown(shown, o->depends_on[i]);
				au_computation_release(c);
				return au_seterr(err, AU_EINVAL, "invalid dependency id '%s'", shown);
			}
			memcpy(c->deps[i], o->depends_on[i], AU_ID_SIZE);
		}
		c->ndeps = o->ndepends_on;
	}
	c->dep_policy = o->dep_policy;
	if (!c->task || !c->queue)
		goto oom;
	return 0;
oom:
	au_computation_release(c);
	return au_seterr(err, AU_ENOMEM, "out of memory");
}

/* 1 when the computation of a key has a record already (it finished):
 * enqueueing it again would run it for a result the store refuses. A
 * store that cannot say is taken for no: the queue still dedupes what is
 * waiting or running. */
/* The middlewares' before_enqueue hooks, in order: they may add headers
 * (a signature, a trace id) or refuse. */
static int before_enqueue(struct au_client *cl, struct au_computation *c)
{
	struct au_enqueue_ctx e = { c, c->queue };
	char errbuf[512];
	int rc = au_chain_before_enqueue(&cl->chain, &e, errbuf, sizeof(errbuf));

	/* the signature covers what the other hooks wrote */
	if (rc == AU_HOOK_OK)
		rc = au_chain_before_enqueue(&cl->signing, &e, errbuf, sizeof(errbuf));
	switch (rc) {
	case AU_HOOK_OK:
		return 0;
	case AU_HOOK_REFUSE:
		return au_seterr(&cl->err, AU_EREFUSED, "%s", errbuf);
	default:
		return au_seterr(&cl->err, AU_EINVAL, "%s", errbuf);
	}
}

static int key_taken(struct au_client *cl, const char *id)
{
	struct au_record rec;
	int rc = au_store_get(cl->store, id, &rec);

	if (rc == 0)
		au_record_release(&rec);
	return rc == 0;
}

int au_enqueue_batch(struct au_client *cl, const char *task, const unsigned char *const *args,
		     const size_t *args_len, size_t n, const struct au_enqueue_opts *opts,
		     struct au_handle **out)
{
	struct au_computation *cs = calloc(n ? n : 1, sizeof(*cs));
	struct au_buf probe = AU_BUF_INIT;
	uint64_t now = au_now_ms();
	size_t i;
	int rc = -1;

	if (!cl->q->ops || !cl->store->ops) {   /* the client never connected */
		free(cs);
		return -1;
	}
	if (cl->sign_err.code) {   /* never unsigned when a signature was asked for */
		free(cs);
		cl->err = cl->sign_err;
		return -1;
	}
	au_clearerr(&cl->err);
	if (!cs)
		return au_seterr(&cl->err, AU_ENOMEM, "out of memory");
	if (opts && opts->key && n != 1) {
		free(cs);
		return au_seterr(&cl->err, AU_EINVAL,
				 "an idempotency key names one computation: enqueue them one by one");
	}
	for (i = 0; i < n; i++) {
		if (prepare(&cs[i], task, opts, now, &cl->err) < 0)
			goto out;
		if (args_len[i] && au_msgpack_check(args[i], args_len[i], AU_MAX_DEPTH, &cl->err) < 0)
			goto out;
		cs[i].args = malloc(args_len[i] ? args_len[i] : 1);
		if (!cs[i].args) {
			au_seterr(&cl->err, AU_ENOMEM, "out of memory");
			goto out;
		}
		if (args_len[i])   /* args may be NULL when empty */
			memcpy(cs[i].args, args[i], args_len[i]);
		cs[i].args_len = args_len[i];
		if ((cl->chain.n || cl->signing.n) && before_enqueue(cl, &cs[i]) < 0)
			goto out;
		/* The size limit applies to the whole message, as workers see it. */
		au_buf_reset(&probe);
		if (au_computation_encode(&cs[i], &probe, &cl->err) < 0)
			goto out;
		if (probe.len > AU_MAX_MESSAGE) {
			au_seterr(&cl->err, AU_ETOOBIG, "computation too large: %zu bytes (limit %u)",
				  probe.len, AU_MAX_MESSAGE);
			goto out;
		}
	}
	if (opts && opts->key && key_taken(cl, cs[0].id) == 1)
		;   /* its computation finished and its record lasts: that one stands */
	else if (au_queue_push(cl->q, cs, n) < 0) {
		cl->err = cl->q->err;
		goto out;
	}
	for (i = 0; i < n && out; i++) {
		out[i] = au_handle_new(cl, cs[i].id, cs[i].queue);
		if (!out[i]) {
			while (i--)
				au_handle_free(out[i]);
			au_seterr(&cl->err, AU_ENOMEM, "out of memory (the computations were enqueued)");
			goto out;
		}
	}
	rc = 0;
out:
	for (i = 0; i < n; i++)
		au_computation_release(&cs[i]);
	free(cs);
	au_buf_release(&probe);
	return rc;
}

int au_enqueue(struct au_client *cl, const char *task, const unsigned char *args, size_t args_len,
	       const struct au_enqueue_opts *opts, struct au_handle **out)
{
	return au_enqueue_batch(cl, task, &args, &args_len, 1, opts, out);
}

/* The record from the store: 1 found, 0 absent, -1 error (h->err). */
static int stored(struct au_handle *h, struct au_record *rec)
{
	struct au_store *s = h->cl->store;

	au_record_init(rec);
	if (au_store_get(s, h->id, rec) == 0)
		return 1;
	au_record_release(rec);   /* whatever a failed read left */
	if (s->err.code == AU_ENOTFOUND || s->err.code == AU_EEXPIRED) {
		h->err = s->err;
		return 0;
	}
	h->err = s->err;
	return -1;
}

/* Status from the queue's view: 1 known (the caller releases info), 0
 * unknown, -1 error. The queue named (or found before) first, then all of
 * them. */
static int queued(struct au_handle *h, enum au_status *st, struct au_queued *info)
{
	struct au_queue *q = h->cl->q;
	int r, again = h->hinted || h->found;

	if (!again && (r = locate(h)) <= 0)
		return r;
	while (au_queue_peek(q, where(h), h->id, info) < 0) {
		if (q->err.code != AU_ENOTFOUND) {
			h->err = q->err;
			return -1;
		}
		if (!again || (r = locate(h)) <= 0)
			return again ? r : 0;
		again = 0;
	}
	switch (info->state) {
	case AU_QUEUED_READY:
		*st = info->attempts ? AU_RETRYING : AU_PENDING;
		break;
	case AU_QUEUED_SCHEDULED:
		*st = info->attempts ? AU_RETRYING : AU_SCHEDULED;
		break;
	case AU_QUEUED_LEASED:
		*st = AU_RUNNING;
		break;
	case AU_QUEUED_DEAD:
		*st = AU_FAILED;
		break;
	case AU_QUEUED_WAITING:
		*st = AU_WAITING;
		break;
	}
	return 1;
}

/*
 * Says in h->err (AU_ENOTFOUND) that no queue and no record know h's id:
 * where it looked (the URLs, passwords masked) and what would explain it,
 * so that a client pointed at another store than its workers is told so.
 */
static void unknown(struct au_handle *h)
{
	const char *surl = h->cl->store->url.text, *qurl = h->cl->q->url.text;
	char on[AU_QUEUE_NAME_MAX + 64];

	if (h->hinted)
		snprintf(on, sizeof(on), "queue '%s' or any other", h->queue);
	else
		snprintf(on, sizeof(on), "any queue");
	/* a store that drops expired records itself (Redis) cannot tell an
	 * expired id from one never seen */
	au_seterr(&h->err, AU_ENOTFOUND,
		  "unknown computation '%s': not on %s of '%s' and no record in store '%s'"
		  " (%sa worker writing to another AU_STORE, or another queue server, would"
		  " explain it)", h->id, on, qurl, surl,
		  au_store_has(h->cl->store, AU_STORE_TELLS_EXPIRED) ? "" : "an expired record, ");
}

/* One look: fills rec for terminal states (a dead-lettered computation that
 * left no record gets one made from the queue's reason and history), and
 * with all for every state the queue knows. */
static int look(struct au_handle *h, enum au_status *st, struct au_record *rec, int all)
{
	struct au_queued info;
	struct au_err first;
	int r;

	au_record_init(rec);
	if (!h->cl->q->ops || !h->cl->store->ops) {
		h->err = h->cl->err;
		return -1;
	}
	if (bad_id(h))
		return -1;
	if ((r = stored(h, rec)) != 0) {
		if (r > 0)
			*st = rec->status;
		return r < 0 ? -1 : 0;
	}
	first = h->err;
	if ((r = queued(h, st, &info)) < 0)
		return -1;
	if (r > 0) {
		if (*st == AU_FAILED || all) {
			memcpy(rec->id, h->id, AU_ID_SIZE);
			rec->status = *st;
			rec->attempts = info.attempts;
			rec->queue = au_strdup(where(h));
			rec->error = info.error[0] || *st == AU_FAILED ? au_strdup(info.error) : NULL;
			/* the history the queue keeps between attempts */
			rec->history = info.story;
			rec->history_len = info.story_len;
			info.story = NULL;
			info.story_len = 0;
		}
		au_queued_release(&info);
		au_clearerr(&h->err);
		return 0;
	}
	if ((r = stored(h, rec)) != 0) {
		if (r > 0)
			*st = rec->status;
		return r < 0 ? -1 : 0;
	}
	*st = AU_UNKNOWN;
	if (first.code == AU_EEXPIRED)
		h->err = first;
	else if (h->err.code != AU_EEXPIRED)
		unknown(h);
	return 0;
}

int au_handle_inspect(struct au_handle *h, struct au_record *rec)
{
	enum au_status st = AU_UNKNOWN;

	au_clearerr(&h->err);
	if (look(h, &st, rec, 1) < 0)
		return -1;
	if (st == AU_UNKNOWN) {   /* look said why in h->err */
		au_record_release(rec);
		memcpy(rec->id, h->id, AU_ID_SIZE);
		rec->status = AU_UNKNOWN;
	}
	return 0;
}

int au_handle_status(struct au_handle *h, enum au_status *out)
{
	struct au_record rec;
	int r;

	au_clearerr(&h->err);
	r = look(h, out, &rec, 0);
	au_record_release(&rec);
	return r;
}

/* One look for a terminal outcome: 1 with rec filled, 0 while it is still
 * on its way (*st says where; rec empty), -1 on an error or an unknown id
 * (h->err says which). */
static int outcome(struct au_handle *h, enum au_status *st, struct au_record *rec)
{
	au_clearerr(&h->err);
	if (look(h, st, rec, 0) < 0)
		return -1;
	if (au_status_terminal(*st))
		return 1;
	au_record_release(rec);
	return *st == AU_UNKNOWN ? -1 : 0;
}

int au_handle_result(struct au_handle *h, struct au_record *rec)
{
	enum au_status st;
	int r = outcome(h, &st, rec);

	if (r)
		return r > 0 ? 0 : -1;
	return au_seterr(&h->err, AU_ESTATE, "computation '%s' is %s: no result yet", h->id,
			 au_status_name(st));
}

int au_handle_wait(struct au_handle *h, int timeout_ms, struct au_record *rec)
{
	uint64_t deadline = timeout_ms < 0 ? UINT64_MAX : au_now_ms() + (uint64_t)timeout_ms;
	struct au_store *s = h->cl->store;
	enum au_status st;

	for (;;) {
		uint64_t now;
		int slice, r = outcome(h, &st, rec);

		if (r)
			return r > 0 ? 0 : -1;
		now = au_now_ms();
		if (now >= deadline)
			return au_seterr(&h->err, AU_ETIMEDOUT,
					 "timed out waiting for computation '%s' (%s)", h->id,
					 au_status_name(st));
		/* Wait on the store's notification; look at the queue again now
		 * and then, for computations that die without a record. */
		slice = deadline - now > 1000 ? 1000 : (int)(deadline - now);
		if (au_store_wait(s, h->id, slice, rec) == 0)
			return 0;
		au_record_release(rec);
		if (s->err.code != AU_ETIMEDOUT && s->err.code != AU_ENOTFOUND) {
			h->err = s->err;
			return -1;
		}
	}
}

/* Stores the CANCELLED record of h, made of what the queue's cancel saw
 * (the task, created_at and ttl its computation carries, its attempts and
 * history): first write wins, so it is the outcome unless a worker stored
 * one before. */
static int store_cancelled(struct au_handle *h, const struct au_cancelled *seen)
{
	char reason[] = "cancelled by client";
	struct au_computation c;
	struct au_err ignored = { 0, "" };
	struct au_record rec;
	int applied = 0, known;

	au_computation_init(&c);
	/* a body that does not decode (a hand-written one) leaves these out */
	known = seen->body && au_computation_decode(seen->body, seen->body_len, &c, &ignored) == 0;
	au_record_init(&rec);
	memcpy(rec.id, h->id, AU_ID_SIZE);
	rec.status = AU_CANCELLED;
	rec.error = reason;
	rec.queue = (char *)where(h);
	rec.ttl_s = AU_DEFAULT_TTL_S;
	rec.attempts = seen->attempts;
	rec.history = seen->story;
	rec.history_len = seen->story_len;
	if (known) {
		rec.task = c.task;
		rec.created_at_ms = c.created_at_ms;
		rec.ttl_s = c.ttl_s;   /* 0: never expires, as the worker's would */
	}
	rec.finished_at_ms = au_now_ms();
	if (au_store_put(h->cl->store, &rec, 1, &applied) < 0) {
		au_computation_release(&c);
		return au_seterr(&h->err, h->cl->store->err.code,
				 "computation '%s' was cancelled but its record was not stored: %s",
				 h->id, h->cl->store->err.str);
	}
	au_computation_release(&c);
	if (!applied)   /* a worker stored an outcome first */
		return au_seterr(&h->err, AU_ESTATE, "computation '%s' already has an outcome", h->id);
	return 0;
}

int au_handle_cancel(struct au_handle *h)
{
	struct au_queue *q = h->cl->q;
	struct au_cancelled seen;
	struct au_record rec;
	enum au_status st;
	int rc;

	au_clearerr(&h->err);
	if (!q->ops || !h->cl->store->ops) {
		h->err = h->cl->err;
		return -1;
	}
	if (bad_id(h))
		return -1;
	/* ids are global: a handle that names no queue looks for its own */
	if (!h->hinted && !h->found && locate(h) < 0)
		return -1;
	rc = au_queue_cancel_seen(q, where(h), h->id, &seen);
	if (rc < 0 && q->err.code == AU_ENOTFOUND && h->hinted && !h->found && locate(h) > 0)
		rc = au_queue_cancel_seen(q, where(h), h->id, &seen);   /* not on the queue named */
	/* It left the queue: it will never run. Record the outcome. */
	if (rc == 0) {
		rc = store_cancelled(h, &seen);
		au_cancelled_release(&seen);
		return rc;
	}
	if (q->err.code == AU_ESTATE) {
		/* Leased: the record decides (a late result is refused), and the
		 * worker that runs it is told to stop. */
		rc = store_cancelled(h, &seen);
		au_cancelled_release(&seen);
		if (rc < 0)
			return -1;
		if (au_queue_cancel_running(q, where(h), h->id) < 0 && q->err.code != AU_ESTATE)
			au_log(AU_LOG_WARN, "computation '%s' is cancelled, but its worker was not told: %s",
			       h->id, q->err.str);
		return 0;
	}
	au_cancelled_release(&seen);
	if (q->err.code != AU_ENOTFOUND) {
		h->err = q->err;
		return -1;
	}
	if (look(h, &st, &rec, 0) < 0)
		return -1;
	au_record_release(&rec);
	if (au_status_terminal(st))
		return au_seterr(&h->err, AU_ESTATE, "computation '%s' is already %s", h->id,
				 au_status_name(st));
	if (st == AU_UNKNOWN)
		return -1;
	return au_seterr(&h->err, AU_ESTATE, "computation '%s' is %s: it cannot be cancelled",
			 h->id, au_status_name(st));
}

/* For producer/flow.c: the client's before_enqueue hooks (signing last). */
int au_client_before_enqueue(struct au_client *cl, struct au_computation *c);
int au_client_before_enqueue(struct au_client *cl, struct au_computation *c)
{
	return cl->chain.n || cl->signing.n ? before_enqueue(cl, c) : 0;
}

/* For producer/flow.c: the client's queue handle. */
struct au_queue *au_client_queue(struct au_client *cl);
struct au_queue *au_client_queue(struct au_client *cl)
{
	return cl->q->ops && cl->store->ops ? cl->q : NULL;
}
