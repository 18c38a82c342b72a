/*
 * memory_queue.c - queues living in this process: memory://[name].
 *
 * Every handle opened with the same name shares one space (a global list
 * under a mutex, refcounted; the space goes away with its last handle).
 * A space holds queues; a queue keeps its computations in five binary heaps,
 * one per state (ready by priority then sequence, scheduled by run_at,
 * leased by deadline, dead by burial time, waiting by arrival), each entry
 * knowing its slot so it
 * can leave any heap in O(log n), plus a hash table from id to entry. One
 * mutex per space serialises producer threads and worker loops; blocked
 * leases wait on its condition variable, watchers get an eventfd.
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "queue.h"

/* A computation waiting for another: its queue and id. */
struct mdependent {
	char *queue;
	char id[AU_ID_SIZE];
};

struct mentry {
	char id[AU_ID_SIZE];
	char token[AU_TOKEN_SIZE];  /* the current lease, "" when not leased */
	unsigned char *body;
	size_t body_len;
	char *error;                /* last error or bury reason, NULL if none */
	unsigned char *story;       /* what the last retry left, NULL if none */
	size_t story_len;
	int priority;
	uint32_t max_attempts, attempts;
	enum au_queued_state state;
	uint64_t key, seq;          /* heap order: key, then seq */
	size_t pos;                 /* slot in its state's heap */
	struct mentry *next;          /* hash chain */
	/* flows: what waits for it, until it settles (leaves for good) */
	struct mdependent *dependents;
	size_t ndependents, capdependents;
	uint32_t waiting_for;       /* AU_QUEUED_WAITING: dependencies not settled */
	uint64_t run_at;            /* AU_QUEUED_WAITING: its run_at, for when they are */
};

struct heap {
	struct mentry **v;
	size_t n, cap;
};

struct mspace;

struct mqueue {
	char *name;
	struct mspace *sp;
	struct heap heaps[5];       /* indexed by state - 1 */
	struct mentry **tab;          /* id -> entry, chained, power-of-two size */
	size_t tabsize, nentries;
	uint64_t seq;
	int woken;                  /* got ready entries in the current push */
	int paused;
	uint64_t processed, failed;
	uint64_t acks[60], acks_at[60];  /* acks of each of the last 60 seconds */
	struct mqueue *next;
};

struct mwatch;

/* A token bucket of rate_take; times on au_mono_us's clock. */
struct mbucket {
	char *key;
	double tokens;              /* what it held at at_us */
	uint64_t at_us;
	uint64_t full_us;           /* full again from then on: it may go */
	struct mbucket *next;
};

/* A value of the kv space; expires_ms on au_now_ms's clock, 0: never. */
struct mkv {
	char *ns, *key;
	unsigned char *val;
	size_t len;
	uint64_t expires_ms;
	struct mkv *next;
};

/* A registry entry; expires_ms and beat_ms on au_now_ms's clock. */
struct mworker {
	struct au_worker_beat b;
	uint64_t beat_ms, expires_ms;
	int stop;
	struct mworker *next;
};

struct mspace {
	char *name;
	int refs;
	pthread_mutex_t mu;
	pthread_cond_t cond;        /* broadcast when something becomes ready */
	struct mqueue *queues;
	struct mwatch *watches;
	struct mcancels *cancels;   /* watch_cancels of every handle */
	struct mworker *workers;    /* the registry */
	struct mbucket *buckets;    /* rate limits (rate_take) */
	struct mkv *kv;             /* the kv space */
	struct mspace *next;
};

/* A handle's watch of cancels: ids handed over under sp->mu, read on the
 * loop after a write to fd. */
struct mcancels {
	struct mspace *sp;
	char *queue;
	int fd;
	struct event *ev;
	au_queue_cancel_fn fn;
	void *arg;
	char (*ids)[AU_ID_SIZE];    /* heard, not yet handed to fn */
	size_t n, cap;
	struct mcancels *next;
};

struct mwatch {
	struct mspace *sp;
	char *queue;
	int fd;                     /* eventfd, written by any thread */
	struct event *ev;
	au_queue_wake_fn fn;
	void *arg;
	struct mwatch *next;
};

struct mhandle {
	struct mspace *sp;
	struct mwatch *watch;
	struct au_dead_limits limits;
	struct mcancels *cancels;
};

static pthread_mutex_t spaces_mu = PTHREAD_MUTEX_INITIALIZER;
static struct mspace *spaces;

static int oom(struct au_queue *q)
{
	return au_seterr(&q->err, AU_ENOMEM, "out of memory");
}

/* ---- heaps ---- */

static int before(const struct mentry *a, const struct mentry *b)
{
	return a->key < b->key || (a->key == b->key && a->seq < b->seq);
}

static void heap_put(struct heap *h, size_t i, struct mentry *j)
{
	h->v[i] = j;
	j->pos = i;
}

static void heap_up(struct heap *h, size_t i)
{
	struct mentry *j = h->v[i];

	while (i > 0 && before(j, h->v[(i - 1) / 2])) {
		heap_put(h, i, h->v[(i - 1) / 2]);
		i = (i - 1) / 2;
	}
	heap_put(h, i, j);
}

static void heap_down(struct heap *h, size_t i)
{
	struct mentry *j = h->v[i];

	for (;;) {
		size_t c = 2 * i + 1;

		if (c >= h->n)
			break;
		if (c + 1 < h->n && before(h->v[c + 1], h->v[c]))
			c++;
		if (!before(h->v[c], j))
			break;
		heap_put(h, i, h->v[c]);
		i = c;
	}
	heap_put(h, i, j);
}

/* Capacity is reserved when entries are added, so moving a entry between heaps
 * never allocates and never fails. */
static int heap_reserve(struct heap *h, size_t n)
{
	struct mentry **v;
	size_t cap = h->cap ? h->cap : 64;

	if (n <= h->cap)
		return 0;
	while (cap < n)
		cap *= 2;
	v = realloc(h->v, cap * sizeof(*v));
	if (!v)
		return -1;
	h->v = v;
	h->cap = cap;
	return 0;
}

static void heap_add(struct heap *h, struct mentry *j)
{
	heap_put(h, h->n++, j);
	heap_up(h, h->n - 1);
}

static void heap_del(struct heap *h, size_t i)
{
	struct mentry *last = h->v[--h->n];

	if (i == h->n)
		return;
	heap_put(h, i, last);
	heap_up(h, i);
	heap_down(h, last->pos);
}

static struct mentry *heap_top(const struct heap *h)
{
	return h->n ? h->v[0] : NULL;
}

/* ---- entries and queues ---- */

static size_t id_hash(const char *id, size_t size)
{
	uint64_t h = 1469598103934665603ull;

	while (*id)
		h = (h ^ (unsigned char)*id++) * 1099511628211ull;
	return (size_t)h & (size - 1);
}

static struct mentry **job_slot(struct mqueue *mq, const char *id)
{
	struct mentry **p;

	if (!mq || !mq->tabsize)
		return NULL;
	for (p = &mq->tab[id_hash(id, mq->tabsize)]; *p; p = &(*p)->next)
		if (!strcmp((*p)->id, id))
			return p;
	return NULL;
}

static struct mentry *job_find(struct mqueue *mq, const char *id)
{
	struct mentry **p = job_slot(mq, id);

	return p ? *p : NULL;
}

/* Makes room for n more entries in the table and in every heap. */
static int queue_reserve(struct mqueue *mq, size_t n)
{
	size_t need = mq->nentries + n, i;

	for (i = 0; i < AU_ARRAY_SIZE(mq->heaps); i++)
		if (heap_reserve(&mq->heaps[i], need) < 0)
			return -1;
	if (need > mq->tabsize) {
		size_t size = mq->tabsize ? mq->tabsize : 64;
		struct mentry **tab;

		while (size < need)
			size *= 2;
		tab = calloc(size, sizeof(*tab));
		if (!tab)
			return -1;
		for (i = 0; i < mq->tabsize; i++)
			while (mq->tab[i]) {
				struct mentry *j = mq->tab[i];
				size_t b = id_hash(j->id, size);

				mq->tab[i] = j->next;
				j->next = tab[b];
				tab[b] = j;
			}
		free(mq->tab);
		mq->tab = tab;
		mq->tabsize = size;
	}
	return 0;
}

static struct heap *heap_of(struct mqueue *mq, enum au_queued_state st)
{
	return &mq->heaps[st - 1];
}

/* Moves j to state st, ordered by key, then seq. Ready ones are ordered by
 * priority, then a fresh sequence number: FIFO within a priority, by the
 * time they became ready. */
static void settle_dependents(struct mqueue *mq, struct mentry *j);

static void job_move(struct mqueue *mq, struct mentry *j, enum au_queued_state st, uint64_t key)
{
	if (st == AU_QUEUED_DEAD && j->state != AU_QUEUED_DEAD)
		settle_dependents(mq, j);   /* a dead letter has settled */
	if (st == AU_QUEUED_READY) {
		key = (uint64_t)(AU_PRIORITY_MAX - j->priority);
		j->seq = ++mq->seq;
	}
	if (j->state)
		heap_del(heap_of(mq, j->state), j->pos);
	j->state = st;
	j->key = key;
	heap_add(heap_of(mq, st), j);
}

static void job_free(struct mentry *j)
{
	size_t i;

	for (i = 0; i < j->ndependents; i++)
		free(j->dependents[i].queue);
	free(j->dependents);
	free(j->body);
	free(j->error);
	free(j->story);
	free(j);
}

/* A malloc'ed copy of len bytes (at least one byte allocated), or NULL. */
static unsigned char *copy_of(const unsigned char *p, size_t len)
{
	unsigned char *c = malloc(len ? len : 1);

	if (c)
		memcpy(c, p, len);
	return c;
}

static void job_remove(struct mqueue *mq, struct mentry *j)
{
	struct mentry **p = job_slot(mq, j->id);

	if (j->state != AU_QUEUED_DEAD)
		settle_dependents(mq, j);
	heap_del(heap_of(mq, j->state), j->pos);
	*p = j->next;
	mq->nentries--;
	job_free(j);
}

/* Replaces the last error; on OOM the entry simply keeps none. */
static void job_error(struct mentry *j, const char *msg)
{
	free(j->error);
	j->error = au_strdup(msg);
}

static struct mqueue *queue_find(struct mspace *sp, const char *name)
{
	struct mqueue *mq;

	for (mq = sp->queues; mq; mq = mq->next)
		if (!strcmp(mq->name, name))
			return mq;
	return NULL;
}

static struct mqueue *queue_get(struct mspace *sp, const char *name)
{
	struct mqueue *mq = queue_find(sp, name);

	if (mq)
		return mq;
	mq = calloc(1, sizeof(*mq));
	if (!mq || !(mq->name = au_strdup(name))) {
		free(mq);
		return NULL;
	}
	mq->sp = sp;
	mq->next = sp->queues;
	sp->queues = mq;
	return mq;
}

static void queue_free(struct mqueue *mq)
{
	size_t i;

	for (i = 0; i < mq->tabsize; i++)
		while (mq->tab[i]) {
			struct mentry *j = mq->tab[i];

			mq->tab[i] = j->next;
			job_free(j);
		}
	for (i = 0; i < AU_ARRAY_SIZE(mq->heaps); i++)
		free(mq->heaps[i].v);
	free(mq->tab);
	free(mq->name);
	free(mq);
}

/* Something became ready in queue: wake blocked leases and watchers. */
static void notify(struct mspace *sp, const char *queue)
{
	static const uint64_t one = 1;
	struct mwatch *w;

	pthread_cond_broadcast(&sp->cond);
	for (w = sp->watches; w; w = w->next)
		if (!strcmp(w->queue, queue) && write(w->fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
			au_log(AU_LOG_WARN, "cannot wake the watcher of memory queue '%s': %s", queue,
			       strerror(errno));
}

/* Due scheduled entries become ready; returns how many. */
static size_t promote(struct mqueue *mq, uint64_t now)
{
	struct mentry *j;
	size_t n = 0;

	while ((j = heap_top(heap_of(mq, AU_QUEUED_SCHEDULED))) && j->key <= now) {
		job_move(mq, j, AU_QUEUED_READY, 0);
		n++;
	}
	return n;
}

/* ---- dependencies ---- */

/* The entry id holds in any queue of sp, unless it has settled (dead). */
static struct mentry *find_held(struct mspace *sp, const char *id, struct mqueue **where)
{
	struct mqueue *mq;
	struct mentry *j;

	for (mq = sp->queues; mq; mq = mq->next)
		if ((j = job_find(mq, id))) {
			if (where)
				*where = mq;
			return j->state == AU_QUEUED_DEAD ? NULL : j;
		}
	return NULL;
}

/* Notes that (queue, id) waits for dep; 0 when it already did, 1 when
 * noted, -1 on OOM. Only the last one is compared unless all is set: a
 * push notes each dependent once in a row. */
static int depend_on(struct mentry *dep, const char *queue, const char *id, int all)
{
	size_t i = all ? 0 : (dep->ndependents ? dep->ndependents - 1 : 0);

	for (; i < dep->ndependents; i++)
		if (!strcmp(dep->dependents[i].id, id) && !strcmp(dep->dependents[i].queue, queue))
			return 0;
	if (dep->ndependents == dep->capdependents) {
		size_t cap = dep->capdependents ? 2 * dep->capdependents : 4;
		struct mdependent *v = realloc(dep->dependents, cap * sizeof(*v));

		if (!v)
			return -1;
		dep->dependents = v;
		dep->capdependents = cap;
	}
	if (!(dep->dependents[dep->ndependents].queue = au_strdup(queue)))
		return -1;
	memcpy(dep->dependents[dep->ndependents].id, id, AU_ID_SIZE);
	dep->ndependents++;
	return 1;
}

/* j leaves for good: what waited for it waits for one less, and what
 * waits for nothing more becomes ready (or scheduled, by its run_at). */
static void settle_dependents(struct mqueue *mq, struct mentry *j)
{
	uint64_t now = au_now_ms();
	size_t i;

	for (i = 0; i < j->ndependents; i++) {
		struct mqueue *dq = queue_find(mq->sp, j->dependents[i].queue);
		struct mentry *d = dq ? job_find(dq, j->dependents[i].id) : NULL;

		free(j->dependents[i].queue);
		if (!d || d->state != AU_QUEUED_WAITING || !d->waiting_for || --d->waiting_for)
			continue;
		if (d->run_at > now) {
			d->seq = ++dq->seq;
			job_move(dq, d, AU_QUEUED_SCHEDULED, au_queue_run_at(d->run_at));
		} else {
			job_move(dq, d, AU_QUEUED_READY, 0);
			notify(mq->sp, dq->name);
		}
	}
	free(j->dependents);
	j->dependents = NULL;
	j->ndependents = j->capdependents = 0;
}

static int token_ok(const struct mentry *j, const char *token)
{
	return j && j->state == AU_QUEUED_LEASED && !strcmp(j->token, token);
}

/* ---- open / close ---- */

static int mem_open(struct au_queue *q, const struct au_url *url)
{
	const char *name = url->host ? url->host : "";
	struct mhandle *h = calloc(1, sizeof(*h));
	struct mspace *sp;

	if (!h)
		return oom(q);
	if (au_queue_dead_limits(url, &h->limits, &q->err) < 0) {
		free(h);
		return -1;
	}
	pthread_mutex_lock(&spaces_mu);
	for (sp = spaces; sp && strcmp(sp->name, name); sp = sp->next)
		;
	if (!sp) {
		pthread_condattr_t ca;

		sp = calloc(1, sizeof(*sp));
		if (!sp || !(sp->name = au_strdup(name))) {
			pthread_mutex_unlock(&spaces_mu);
			free(sp);
			free(h);
			return oom(q);
		}
		pthread_mutex_init(&sp->mu, NULL);
		pthread_condattr_init(&ca);
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		pthread_cond_init(&sp->cond, &ca);
		pthread_condattr_destroy(&ca);
		sp->next = spaces;
		spaces = sp;
	}
	sp->refs++;
	pthread_mutex_unlock(&spaces_mu);
	h->sp = sp;
	q->ctx = h;
	return 0;
}

static void mem_unwatch(struct au_queue *q);
static void mem_unwatch_cancels(struct au_queue *q);
static void buckets_free(struct mspace *sp);
static void kv_free(struct mkv *v);

static void mem_close(struct au_queue *q)
{
	struct mhandle *h = q->ctx;
	struct mspace *sp = h->sp, **p;

	mem_unwatch(q);
	mem_unwatch_cancels(q);
	pthread_mutex_lock(&spaces_mu);
	if (--sp->refs == 0) {
		for (p = &spaces; *p != sp; p = &(*p)->next)
			;
		*p = sp->next;
		while (sp->queues) {
			struct mqueue *mq = sp->queues;

			sp->queues = mq->next;
			queue_free(mq);
		}
		while (sp->workers) {
			struct mworker *mw = sp->workers;

			sp->workers = mw->next;
			free(mw);
		}
		buckets_free(sp);
		while (sp->kv) {
			struct mkv *v = sp->kv;

			sp->kv = v->next;
			kv_free(v);
		}
		pthread_cond_destroy(&sp->cond);
		pthread_mutex_destroy(&sp->mu);
		free(sp->name);
		free(sp);
	}
	pthread_mutex_unlock(&spaces_mu);
	free(h);
	q->ctx = NULL;
}

/* ---- operations ---- */

static int mem_push(struct au_queue *q, const struct au_computation *cs, size_t n)
{
	struct mspace *sp = ((struct mhandle *)q->ctx)->sp;
	struct mentry **entries = calloc(n ? n : 1, sizeof(*entries));
	struct au_buf b = AU_BUF_INIT;
	uint64_t now = au_now_ms();
	size_t i;
	int rc = -1;

	if (!entries)
		return oom(q);
	/* Everything that can fail happens before the first entry is added. */
	for (i = 0; i < n; i++) {
		if (au_computation_encode(&cs[i], &b, &q->err) < 0)
			goto out;
		entries[i] = calloc(1, sizeof(*entries[i]));
		if (!entries[i]) {
			oom(q);
			goto out;
		}
		entries[i]->body = au_buf_detach(&b, &entries[i]->body_len);
		memcpy(entries[i]->id, cs[i].id, AU_ID_SIZE);
		entries[i]->priority = cs[i].priority;
		entries[i]->max_attempts = cs[i].max_attempts;
	}
	pthread_mutex_lock(&sp->mu);
	for (i = 0; i < n; i++) {
		struct mqueue *mq = queue_get(sp, au_queue_name(cs[i].queue));

		if (!mq || queue_reserve(mq, n) < 0) {
			pthread_mutex_unlock(&sp->mu);
			oom(q);
			goto out;
		}
	}
	for (i = 0; i < n; i++) {
		struct mqueue *mq = queue_find(sp, au_queue_name(cs[i].queue));
		struct mentry *j = entries[i];
		size_t b;

		/* a known id is left alone, so pushing again is harmless */
		if (job_find(mq, j->id))
			continue;
		b = id_hash(j->id, mq->tabsize);
		j->next = mq->tab[b];
		mq->tab[b] = j;
		mq->nentries++;
		entries[i] = NULL;
		for (size_t d = 0; d < cs[i].ndeps; d++) {
			struct mentry *dep = find_held(sp, cs[i].deps[d], NULL);
			int r = dep ? depend_on(dep, mq->name, j->id, 0) : 0;

			if (r < 0)
				au_log(AU_LOG_ERROR, "memory queue: out of memory noting that '%s'"
				       " waits for '%s': it will not wait", j->id, cs[i].deps[d]);
			j->waiting_for += r > 0;
		}
		if (j->waiting_for) {
			j->run_at = cs[i].run_at_ms;
			j->seq = ++mq->seq;
			job_move(mq, j, AU_QUEUED_WAITING, 0);
		} else if (cs[i].run_at_ms > now) {
			j->seq = ++mq->seq;
			job_move(mq, j, AU_QUEUED_SCHEDULED, au_queue_run_at(cs[i].run_at_ms));
		} else {
			job_move(mq, j, AU_QUEUED_READY, 0);
			mq->woken = 1;
		}
	}
	/* one wake per queue per push */
	for (struct mqueue *mq = sp->queues; mq; mq = mq->next)
		if (mq->woken) {
			mq->woken = 0;
			notify(sp, mq->name);
		}
	pthread_mutex_unlock(&sp->mu);
	rc = 0;
out:
	for (i = 0; i < n; i++)
		if (entries[i])
			job_free(entries[i]);
	free(entries);
	au_buf_release(&b);
	return rc;
}

/* Leases up to max ready entries of mq (NULL: an unknown queue, nothing to
 * lease). When there is none, *next_due_ms gets the time until the next
 * scheduled entry is due, or -1. */
static int lease_locked(struct au_queue *q, struct mqueue *mq, size_t max, uint32_t lease_ms,
			struct au_lease *out, size_t *n, int64_t *next_due_ms)
{
	uint64_t now = au_now_ms();
	struct mentry *j;

	*n = 0;
	*next_due_ms = -1;
	if (!mq || mq->paused)
		return 0;
	promote(mq, now);
	while (*n < max && (j = heap_top(heap_of(mq, AU_QUEUED_READY)))) {
		struct au_lease *l = &out[*n];

		if (j->attempts >= INT32_MAX) {
			/* no count left for another attempt (as the other
			 * backends, which hold it in 31 bits): a bad entry is
			 * dead-lettered, and the queue goes on */
			char msg[64];

			snprintf(msg, sizeof(msg), "malformed computation: attempts %u out of range",
				 j->attempts);
			job_error(j, msg);
			job_move(mq, j, AU_QUEUED_DEAD, now);
			continue;
		}
		l->body = copy_of(j->body, j->body_len);
		/* a first attempt has no story (the other backends do not
		 * even look) */
		l->story = j->story && j->attempts ? copy_of(j->story, j->story_len) : NULL;
		if (!l->body || (j->story && j->attempts && !l->story)) {
			au_lease_release(l);
			if (*n)
				break;
			return oom(q);
		}
		l->body_len = j->body_len;
		l->story_len = l->story ? j->story_len : 0;
		j->attempts++;
		au_token_new(j->token, j->attempts);
		memcpy(l->ref.id, j->id, AU_ID_SIZE);
		memcpy(l->ref.token, j->token, AU_TOKEN_SIZE);
		l->attempts = j->attempts;
		job_move(mq, j, AU_QUEUED_LEASED, now + lease_ms);
		(*n)++;
	}
	if (!*n && (j = heap_top(heap_of(mq, AU_QUEUED_SCHEDULED))))
		*next_due_ms = (int64_t)(j->key - now);
	return 0;
}

static int mem_lease(struct au_queue *q, const char *queue, size_t max, uint32_t lease_ms,
		     uint32_t block_ms, struct au_lease *out, size_t *n)
{
	struct mspace *sp = ((struct mhandle *)q->ctx)->sp;
	uint64_t deadline = au_mono_us() + (uint64_t)block_ms * 1000;
	int64_t next_due_ms;
	int rc;

	pthread_mutex_lock(&sp->mu);
	for (;;) {
		uint64_t now, until = deadline;
		struct timespec ts;

		rc = lease_locked(q, queue_find(sp, au_queue_name(queue)), max, lease_ms, out, n, &next_due_ms);
		if (rc < 0 || *n || !block_ms || (now = au_mono_us()) >= deadline)
			break;
		/* a scheduled entry falling due wakes nobody: wait only until then */
		if (next_due_ms >= 0 && now + (uint64_t)next_due_ms * 1000 < until)
			until = now + (uint64_t)next_due_ms * 1000;
		ts.tv_sec = (time_t)(until / 1000000);
		ts.tv_nsec = (long)(until % 1000000) * 1000;
		pthread_cond_timedwait(&sp->cond, &sp->mu, &ts);
	}
	pthread_mutex_unlock(&sp->mu);
	return rc;
}

enum settle { S_ACK, S_RETRY, S_RELEASE, S_BURY, S_EXTEND };

/* The fenced writes of an attempt: each applies only while refs[i].token
 * is the entry's current lease. The stories of a retry are copied before
 * the lock is taken, so running out of memory fails the call whole. */
static int settle(struct au_queue *q, const char *queue, const struct au_ref *refs, size_t n,
		  enum settle kind, const uint64_t *delay_ms, const char *const *text,
		  const struct au_story *story, uint32_t lease_ms, int *applied)
{
	struct mspace *sp = ((struct mhandle *)q->ctx)->sp;
	uint64_t now = au_now_ms();
	struct mqueue *mq;
	unsigned char **copies = NULL;
	int woke = 0;
	size_t i, acked = 0;

	if (story && n && !(copies = calloc(n, sizeof(*copies))))
		return oom(q);
	for (i = 0; copies && i < n; i++)
		if (story[i].len && !(copies[i] = copy_of(story[i].data, story[i].len))) {
			while (i)
				free(copies[--i]);
			free(copies);
			return oom(q);
		}
	pthread_mutex_lock(&sp->mu);
	mq = queue_find(sp, au_queue_name(queue));
	for (i = 0; i < n; i++) {
		struct mentry *j = mq ? job_find(mq, refs[i].id) : NULL;
		int ok = token_ok(j, refs[i].token);

		if (applied)
			applied[i] = ok;
		if (!ok)
			continue;
		if (kind == S_ACK) {
			job_remove(mq, j);
			acked++;
			continue;
		}
		if (kind == S_EXTEND) {
			job_move(mq, j, AU_QUEUED_LEASED, now + lease_ms);
			continue;
		}
		j->token[0] = '\0';
		if (text && text[i] && (kind == S_BURY || *text[i]))
			job_error(j, text[i]);
		if (kind == S_BURY) {
			job_move(mq, j, AU_QUEUED_DEAD, now);
			mq->failed++;
			continue;
		}
		if (copies && copies[i]) {
			free(j->story);
			j->story = copies[i];
			j->story_len = story[i].len;
			copies[i] = NULL;
		}
		if (kind == S_RELEASE && j->attempts)
			j->attempts--;
		if (delay_ms && delay_ms[i]) {
			j->seq = ++mq->seq;
			job_move(mq, j, AU_QUEUED_SCHEDULED, now + au_queue_delay(delay_ms[i]));
		} else {
			job_move(mq, j, AU_QUEUED_READY, 0);
			woke = 1;
		}
	}
	if (acked) {
		uint64_t sec = now / 1000;

		mq->processed += acked;
		if (mq->acks_at[sec % 60] != sec) {
			mq->acks_at[sec % 60] = sec;
			mq->acks[sec % 60] = 0;
		}
		mq->acks[sec % 60] += acked;
	}
	if (woke)
		notify(sp, mq->name);
	pthread_mutex_unlock(&sp->mu);
	/* those of stale refs */
	for (i = 0; copies && i < n; i++)
		free(copies[i]);
	free(copies);
	return 0;
}

static int mem_ack(struct au_queue *q, const char *queue, const struct au_ref *refs, size_t n,
		   int *applied)
{
	return settle(q, queue, refs, n, S_ACK, NULL, NULL, NULL, 0, applied);
}

static int mem_retry(struct au_queue *q, const char *queue, const struct au_ref *refs, size_t n,
		     const uint64_t *delay_ms, const char *const *error,
		     const struct au_story *story, int *applied)
{
	return settle(q, queue, refs, n, S_RETRY, delay_ms, error, story, 0, applied);
}

static int mem_release(struct au_queue *q, const char *queue, const struct au_ref *refs,
		       size_t n, int *applied)
{
	return settle(q, queue, refs, n, S_RELEASE, NULL, NULL, NULL, 0, applied);
}

static int mem_bury(struct au_queue *q, const char *queue, const struct au_ref *refs, size_t n,
		    const char *const *reason, int *applied)
{
	return settle(q, queue, refs, n, S_BURY, NULL, reason, NULL, 0, applied);
}

static int mem_extend(struct au_queue *q, const char *queue, const struct au_ref *refs,
		      size_t n, uint32_t lease_ms, int *applied)
{
	return settle(q, queue, refs, n, S_EXTEND, NULL, NULL, NULL, lease_ms, applied);
}

static int mem_rescue(struct au_queue *q, const char *queue, size_t max, size_t *requeued,
		      size_t *buried)
{
	struct mhandle *h = q->ctx;
	struct mspace *sp = h->sp;
	uint64_t now = au_now_ms();
	struct mqueue *mq;
	struct mentry *j;

	*requeued = *buried = 0;
	pthread_mutex_lock(&sp->mu);
	mq = queue_find(sp, au_queue_name(queue));
	while (mq && *requeued + *buried < max && (j = heap_top(heap_of(mq, AU_QUEUED_LEASED))) &&
	       j->key <= now) {
		char msg[64];

		j->token[0] = '\0';
		if (j->attempts >= j->max_attempts) {
			snprintf(msg, sizeof(msg), "lease expired after %u attempts", j->attempts);
			job_move(mq, j, AU_QUEUED_DEAD, now);
			mq->failed++;
			++*buried;
		} else {
			snprintf(msg, sizeof(msg), "lease expired on attempt %u", j->attempts);
			job_move(mq, j, AU_QUEUED_READY, 0);
			++*requeued;
		}
		job_error(j, msg);
	}
	/* the dead set's bounds: the heap has the oldest on top */
	while (mq && (j = heap_top(heap_of(mq, AU_QUEUED_DEAD))) &&
	       ((h->limits.max && heap_of(mq, AU_QUEUED_DEAD)->n > h->limits.max) ||
		(h->limits.max_age_ms && j->key + h->limits.max_age_ms <= now)))
		job_remove(mq, j);
	if (*requeued)
		notify(sp, mq->name);
	pthread_mutex_unlock(&sp->mu);
	return 0;
}

/* What cancel saw of j, copied into seen (when asked); -1 on OOM. */
static int seen_copy(const struct mentry *j, struct au_cancelled *seen)
{
	if (!seen)
		return 0;
	seen->attempts = j->attempts;
	if (j->body && !(seen->body = copy_of(j->body, j->body_len)))
		return -1;
	seen->body_len = j->body ? j->body_len : 0;
	if (j->story && !(seen->story = copy_of(j->story, j->story_len)))
		return -1;
	seen->story_len = j->story ? j->story_len : 0;
	return 0;
}

static int mem_cancel(struct au_queue *q, const char *queue, const char *id,
		      struct au_cancelled *seen)
{
	struct mspace *sp = ((struct mhandle *)q->ctx)->sp;
	struct mqueue *mq;
	struct mentry *j;
	int rc = 0;

	pthread_mutex_lock(&sp->mu);
	mq = queue_find(sp, au_queue_name(queue));
	j = mq ? job_find(mq, id) : NULL;
	if (!j || j->state == AU_QUEUED_DEAD)
		rc = au_seterr(&q->err, AU_ENOTFOUND, "no computation '%s' waiting in queue '%s'", id,
			       au_queue_name(queue));
	else if (seen_copy(j, seen) < 0)
		rc = oom(q);   /* nothing removed: the caller may try again */
	else if (j->state == AU_QUEUED_LEASED)
		rc = au_seterr(&q->err, AU_ESTATE, "computation '%s' is running", id);
	else
		job_remove(mq, j);
	pthread_mutex_unlock(&sp->mu);
	return rc;
}

static int mem_peek(struct au_queue *q, const char *queue, const char *id,
		    struct au_queued *info)
{
	struct mspace *sp = ((struct mhandle *)q->ctx)->sp;
	struct mqueue *mq;
	struct mentry *j;
	int rc = 0;

	pthread_mutex_lock(&sp->mu);
	mq = queue_find(sp, au_queue_name(queue));
	j = mq ? job_find(mq, id) : NULL;
	if (j && j->story && !(info->story = copy_of(j->story, j->story_len))) {
		rc = oom(q);
	} else if (j) {
		info->state = j->state;
		info->attempts = j->attempts;
		info->max_attempts = j->max_attempts;
		info->story_len = j->story ? j->story_len : 0;
		snprintf(info->error, sizeof(info->error), "%s", j->error ? j->error : "");
	} else {
		rc = au_seterr(&q->err, AU_ENOTFOUND, "no computation '%s' in queue '%s'", id,
			       au_queue_name(queue));
	}
	pthread_mutex_unlock(&sp->mu);
	return rc;
}

static int mem_stats(struct au_queue *q, const char *queue, struct au_queue_stats *st)
{
	struct mspace *sp = ((struct mhandle *)q->ctx)->sp;
	struct mqueue *mq;

	memset(st, 0, sizeof(*st));
	pthread_mutex_lock(&sp->mu);
	mq = queue_find(sp, au_queue_name(queue));
	if (mq) {
		st->ready = heap_of(mq, AU_QUEUED_READY)->n;
		st->scheduled = heap_of(mq, AU_QUEUED_SCHEDULED)->n;
		st->leased = heap_of(mq, AU_QUEUED_LEASED)->n;
		st->dead = heap_of(mq, AU_QUEUED_DEAD)->n;
		st->waiting = heap_of(mq, AU_QUEUED_WAITING)->n;
		st->paused = mq->paused;
		st->processed = mq->processed;
		st->failed = mq->failed;
		for (size_t i = 0; i < AU_ARRAY_SIZE(mq->acks); i++)
			if (mq->acks_at[i] + 60 > au_now_ms() / 1000)
				st->per_minute += mq->acks[i];
	}
	pthread_mutex_unlock(&sp->mu);
	return 0;
}

static int mem_queues(struct au_queue *q, char ***names, size_t *n)
{
	struct mspace *sp = ((struct mhandle *)q->ctx)->sp;
	struct mqueue *mq;
	size_t count = 0, i = 0;
	char **v;

	pthread_mutex_lock(&sp->mu);
	for (mq = sp->queues; mq; mq = mq->next)
		count++;
	v = calloc(count ? count : 1, sizeof(*v));
	for (mq = sp->queues; v && mq; mq = mq->next, i++)
		if (!(v[i] = au_strdup(mq->name))) {
			while (i--)
				free(v[i]);
			free(v);
			v = NULL;
		}
	pthread_mutex_unlock(&sp->mu);
	if (!v)
		return oom(q);
	*names = v;
	*n = count;
	return 0;
}

/* ---- watch ---- */

static void watch_ready(evutil_socket_t fd, short what, void *arg)
{
	struct mwatch *w = arg;
	uint64_t v;

	(void)what;
	/* one read resets the counter; fn may unwatch, so it comes last */
	if (read(fd, &v, sizeof(v)) == sizeof(v))
		w->fn(w->arg);
}

static int mem_watch(struct au_queue *q, const char *queue, struct event_base *base,
		     au_queue_wake_fn fn, void *arg)
{
	static const uint64_t one = 1;
	struct mhandle *h = q->ctx;
	struct mwatch *w;

	if (h->watch)
		return au_seterr(&q->err, AU_ESTATE, "'%s' is already watching a queue", q->url.text);
	w = calloc(1, sizeof(*w));
	if (!w || !(w->queue = au_strdup(au_queue_name(queue))))
		goto oom;
	w->fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (w->fd < 0) {
		au_seterr(&q->err, AU_EIO, "cannot watch queue '%s': eventfd: %s", w->queue,
			  strerror(errno));
		free(w->queue);
		free(w);
		return -1;
	}
	w->ev = event_new(base, w->fd, EV_READ | EV_PERSIST, watch_ready, w);
	if (!w->ev || event_add(w->ev, NULL) < 0) {
		if (w->ev)
			event_free(w->ev);
		close(w->fd);
		goto oom;
	}
	w->sp = h->sp;
	w->fn = fn;
	w->arg = arg;
	pthread_mutex_lock(&w->sp->mu);
	w->next = w->sp->watches;
	w->sp->watches = w;
	pthread_mutex_unlock(&w->sp->mu);
	h->watch = w;
	/* a first wake covers whatever arrived before the watch */
	if (write(w->fd, &one, sizeof(one)) < 0)
		au_log(AU_LOG_WARN, "cannot wake the watcher of memory queue '%s': %s", w->queue,
		       strerror(errno));
	return 0;
oom:
	if (w)
		free(w->queue);
	free(w);
	return oom(q);
}

static void mem_unwatch(struct au_queue *q)
{
	struct mhandle *h = q->ctx;
	struct mwatch *w = h->watch, **p;

	if (!w)
		return;
	pthread_mutex_lock(&w->sp->mu);
	for (p = &w->sp->watches; *p != w; p = &(*p)->next)
		;
	*p = w->next;
	pthread_mutex_unlock(&w->sp->mu);
	event_free(w->ev);
	close(w->fd);
	free(w->queue);
	free(w);
	h->watch = NULL;
}

/* ---- administration ---- */

/* Copies j into d; -1 on OOM. */
static int dead_copy(const struct mentry *j, struct au_dead *d)
{
	memset(d, 0, sizeof(*d));
	memcpy(d->id, j->id, AU_ID_SIZE);
	d->died_at_ms = j->key;
	d->attempts = j->attempts;
	snprintf(d->reason, sizeof(d->reason), "%s", j->error ? j->error : "");
	d->body = copy_of(j->body, j->body_len);
	d->story = j->story ? copy_of(j->story, j->story_len) : NULL;
	if (!d->body || (j->story && !d->story)) {
		au_dead_release(d);
		return -1;
	}
	d->body_len = j->body_len;
	d->story_len = d->story ? j->story_len : 0;
	return 0;
}

static int newer(const void *a, const void *b)
{
	const struct mentry *x = *(struct mentry *const *)a, *y = *(struct mentry *const *)b;

	return x->key != y->key ? (x->key < y->key ? 1 : -1) : (x->seq < y->seq ? 1 : -1);
}

static int mem_dead(struct au_queue *q, const char *queue, const char *id, size_t max,
		    struct au_dead *out, size_t *n)
{
	struct mspace *sp = ((struct mhandle *)q->ctx)->sp;
	struct mentry **v = NULL, *j;
	struct mqueue *mq;
	struct heap *dead;
	int rc = 0;

	pthread_mutex_lock(&sp->mu);
	mq = queue_find(sp, queue);
	if (mq && id) {
		j = job_find(mq, id);
		if (j && j->state == AU_QUEUED_DEAD) {
			if (dead_copy(j, &out[0]) < 0)
				rc = oom(q);
			else
				*n = 1;
		}
	} else if (mq && (dead = heap_of(mq, AU_QUEUED_DEAD))->n) {
		if (!(v = malloc(dead->n * sizeof(*v)))) {
			rc = oom(q);
		} else {
			memcpy(v, dead->v, dead->n * sizeof(*v));
			qsort(v, dead->n, sizeof(*v), newer);
			for (; *n < max && *n < dead->n; ++*n)
				if (dead_copy(v[*n], &out[*n]) < 0) {
					while (*n)
						au_dead_release(&out[--*n]);
					rc = oom(q);
					break;
				}
		}
	}
	pthread_mutex_unlock(&sp->mu);
	free(v);
	return rc;
}

static int mem_requeue(struct au_queue *q, const char *queue, const char *const *ids, size_t n,
		       int *applied)
{
	struct mspace *sp = ((struct mhandle *)q->ctx)->sp;
	struct mqueue *mq;
	size_t i, woke = 0;

	pthread_mutex_lock(&sp->mu);
	mq = queue_find(sp, queue);
	for (i = 0; i < n; i++) {
		struct mentry *j = mq ? job_find(mq, ids[i]) : NULL;
		int ok = j && j->state == AU_QUEUED_DEAD;

		if (applied)
			applied[i] = ok;
		if (!ok)
			continue;
		j->attempts = 0;
		free(j->error);
		j->error = NULL;
		free(j->story);
		j->story = NULL;
		j->story_len = 0;
		job_move(mq, j, AU_QUEUED_READY, 0);
		woke++;
	}
	if (woke)
		notify(sp, mq->name);
	pthread_mutex_unlock(&sp->mu);
	return 0;
}

static int mem_purge(struct au_queue *q, const char *queue, uint64_t older_ms, size_t max,
		     size_t *removed)
{
	struct mspace *sp = ((struct mhandle *)q->ctx)->sp;
	uint64_t now = au_now_ms();
	struct mqueue *mq;
	struct mentry *j;

	pthread_mutex_lock(&sp->mu);
	mq = queue_find(sp, queue);
	while (mq && *removed < max && (j = heap_top(heap_of(mq, AU_QUEUED_DEAD))) &&
	       j->key + older_ms <= now) {
		job_remove(mq, j);
		++*removed;
	}
	pthread_mutex_unlock(&sp->mu);
	return 0;
}

static int mem_pause(struct au_queue *q, const char *queue, int paused)
{
	struct mspace *sp = ((struct mhandle *)q->ctx)->sp;
	struct mqueue *mq;
	int rc = 0;

	pthread_mutex_lock(&sp->mu);
	if (!(mq = queue_get(sp, queue))) {
		rc = oom(q);
	} else {
		mq->paused = !!paused;
		if (!paused)
			notify(sp, mq->name);
	}
	pthread_mutex_unlock(&sp->mu);
	return rc;
}

static int mem_empty(struct au_queue *q, const char *queue, size_t max, size_t *removed)
{
	struct mspace *sp = ((struct mhandle *)q->ctx)->sp;
	enum au_queued_state st[] = { AU_QUEUED_WAITING, AU_QUEUED_READY, AU_QUEUED_SCHEDULED };
	struct mqueue *mq;
	struct mentry *j;
	size_t i;

	pthread_mutex_lock(&sp->mu);
	mq = queue_find(sp, queue);
	for (i = 0; mq && i < AU_ARRAY_SIZE(st); i++)
		while (*removed < max && (j = heap_top(heap_of(mq, st[i])))) {
			job_remove(mq, j);
			++*removed;
		}
	pthread_mutex_unlock(&sp->mu);
	return 0;
}

static int mem_drop(struct au_queue *q, const char *queue, int force)
{
	struct mspace *sp = ((struct mhandle *)q->ctx)->sp;
	struct mqueue **p, *mq;
	int rc = 0;

	pthread_mutex_lock(&sp->mu);
	for (p = &sp->queues; *p && strcmp((*p)->name, queue); p = &(*p)->next)
		;
	if ((mq = *p) && mq->nentries && !force) {
		uint64_t now = au_now_ms(), due = 0;
		struct heap *sched = heap_of(mq, AU_QUEUED_SCHEDULED);

		for (size_t i = 0; i < sched->n; i++)   /* scheduled but due: ready, as stats say */
			due += sched->v[i]->key <= now;
		rc = au_seterr(&q->err, AU_ESTATE, "queue '%s' holds computations: %zu ready,"
			       " %zu scheduled, %zu running, %zu dead", queue,
			       heap_of(mq, AU_QUEUED_READY)->n + (size_t)due, sched->n - (size_t)due,
			       heap_of(mq, AU_QUEUED_LEASED)->n, heap_of(mq, AU_QUEUED_DEAD)->n);
	} else if (mq) {
		/* what waits for its computations elsewhere is told they are gone */
		for (size_t i = 0; i < mq->tabsize; i++)
			for (struct mentry *j = mq->tab[i]; j; j = j->next)
				if (j->state != AU_QUEUED_DEAD)
					settle_dependents(mq, j);
		*p = mq->next;
		queue_free(mq);
	}
	pthread_mutex_unlock(&sp->mu);
	return rc;
}

static int mem_locate(struct au_queue *q, const char *id, char **queue)
{
	struct mspace *sp = ((struct mhandle *)q->ctx)->sp;
	struct mqueue *mq;
	int rc;

	pthread_mutex_lock(&sp->mu);
	for (mq = sp->queues; mq && !job_find(mq, id); mq = mq->next)
		;
	if (!mq)
		rc = au_seterr(&q->err, AU_ENOTFOUND, "no queue of '%s' has computation '%s'",
			       q->url.text, id);
	else
		rc = (*queue = au_strdup(mq->name)) ? 0 : oom(q);
	pthread_mutex_unlock(&sp->mu);
	return rc;
}

/* ---- cancels of running computations ---- */

static int mem_cancel_running(struct au_queue *q, const char *queue, const char *id)
{
	static const uint64_t one = 1;
	struct mhandle *h = q->ctx;
	struct mcancels *c;

	pthread_mutex_lock(&h->sp->mu);
	for (c = h->sp->cancels; c; c = c->next) {
		if (strcmp(c->queue, queue) != 0)
			continue;
		if (c->n == c->cap) {
			size_t cap = c->cap ? 2 * c->cap : 8;
			void *ids = realloc(c->ids, cap * sizeof(*c->ids));

			if (!ids)
				continue;   /* a hint: this one is not told */
			c->ids = ids;
			c->cap = cap;
		}
		memcpy(c->ids[c->n++], id, AU_ID_SIZE);
		if (write(c->fd, &one, sizeof(one)) < 0)
			au_log(AU_LOG_WARN, "cannot tell a worker of memory queue '%s' of a cancel: %s",
			       queue, strerror(errno));
	}
	pthread_mutex_unlock(&h->sp->mu);
	return 0;
}

static void cancels_ready(evutil_socket_t fd, short what, void *arg)
{
	struct mcancels *c = arg;
	char (*ids)[AU_ID_SIZE];
	uint64_t v;
	size_t i, n;

	(void)what;
	if (read(fd, &v, sizeof(v)) != sizeof(v))
		return;
	pthread_mutex_lock(&c->sp->mu);
	ids = c->ids;
	n = c->n;
	c->ids = NULL;
	c->n = c->cap = 0;
	pthread_mutex_unlock(&c->sp->mu);
	for (i = 0; i < n; i++)
		c->fn(c->arg, ids[i]);
	free(ids);
}

static int mem_watch_cancels(struct au_queue *q, const char *queue, struct event_base *base,
			     au_queue_cancel_fn fn, void *arg)
{
	struct mhandle *h = q->ctx;
	struct mcancels *c;

	if (h->cancels)
		return au_seterr(&q->err, AU_ESTATE, "'%s' is already watching cancels", q->url.text);
	if (!(c = calloc(1, sizeof(*c))) || !(c->queue = au_strdup(queue))) {
		free(c);
		return oom(q);
	}
	c->fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	c->ev = c->fd < 0 ? NULL : event_new(base, c->fd, EV_READ | EV_PERSIST, cancels_ready, c);
	if (!c->ev || event_add(c->ev, NULL) < 0) {
		au_seterr(&q->err, AU_EIO, "cannot watch cancels of queue '%s': %s", c->queue,
			  strerror(errno));
		if (c->ev)
			event_free(c->ev);
		if (c->fd >= 0)
			close(c->fd);
		free(c->queue);
		free(c);
		return -1;
	}
	c->sp = h->sp;
	c->fn = fn;
	c->arg = arg;
	pthread_mutex_lock(&c->sp->mu);
	c->next = c->sp->cancels;
	c->sp->cancels = c;
	pthread_mutex_unlock(&c->sp->mu);
	h->cancels = c;
	return 0;
}

static void mem_unwatch_cancels(struct au_queue *q)
{
	struct mhandle *h = q->ctx;
	struct mcancels *c = h->cancels, **p;

	if (!c)
		return;
	pthread_mutex_lock(&c->sp->mu);
	for (p = &c->sp->cancels; *p != c; p = &(*p)->next)
		;
	*p = c->next;
	pthread_mutex_unlock(&c->sp->mu);
	event_free(c->ev);
	close(c->fd);
	free(c->ids);
	free(c->queue);
	free(c);
	h->cancels = NULL;
}

/* ---- the worker registry ---- */

/* The entry of id, dropping expired ones on the way; NULL if none. */
static struct mworker **worker_slot(struct mspace *sp, const char *id, uint64_t now)
{
	struct mworker **p = &sp->workers, *mw;

	while ((mw = *p)) {
		if (mw->expires_ms <= now) {
			*p = mw->next;
			free(mw);
			continue;
		}
		if (id && !strcmp(mw->b.id, id))
			return p;
		p = &mw->next;
	}
	return NULL;
}

static int mem_beat(struct au_queue *q, const struct au_worker_beat *b, int *stop)
{
	struct mhandle *h = q->ctx;
	uint64_t now = au_now_ms();
	struct mworker **p, *mw;

	pthread_mutex_lock(&h->sp->mu);
	p = worker_slot(h->sp, b->id, now);
	if (p) {
		mw = *p;
	} else if ((mw = calloc(1, sizeof(*mw)))) {
		/* at the end: oldest registration first */
		for (p = &h->sp->workers; *p; p = &(*p)->next)
			;
		*p = mw;
	} else {
		pthread_mutex_unlock(&h->sp->mu);
		return oom(q);
	}
	mw->b = *b;
	mw->beat_ms = now;
	mw->expires_ms = now + b->ttl_ms;
	*stop = mw->stop;
	pthread_mutex_unlock(&h->sp->mu);
	return 0;
}

static int mem_workers(struct au_queue *q, struct au_worker_beat **out, size_t *n)
{
	struct mhandle *h = q->ctx;
	uint64_t now = au_now_ms();
	struct mworker *mw;
	size_t k = 0;

	pthread_mutex_lock(&h->sp->mu);
	worker_slot(h->sp, NULL, now);
	for (mw = h->sp->workers; mw; mw = mw->next)
		k++;
	*out = calloc(k ? k : 1, sizeof(**out));
	if (!*out) {
		pthread_mutex_unlock(&h->sp->mu);
		return oom(q);
	}
	for (mw = h->sp->workers; mw; mw = mw->next) {
		struct au_worker_beat *b = &(*out)[(*n)++];

		*b = mw->b;
		b->beat_at_ms = mw->beat_ms;
		b->age_ms = now - mw->beat_ms;
	}
	pthread_mutex_unlock(&h->sp->mu);
	return 0;
}

static int mem_worker_stop(struct au_queue *q, const char *worker_id)
{
	struct mhandle *h = q->ctx;
	struct mworker **p;

	pthread_mutex_lock(&h->sp->mu);
	p = worker_slot(h->sp, worker_id, au_now_ms());
	if (p)
		(*p)->stop = 1;
	pthread_mutex_unlock(&h->sp->mu);
	if (!p)
		return au_seterr(&q->err, AU_ENOTFOUND, "no live worker '%s' on '%s'", worker_id,
				 q->url.text);
	return 0;
}

static int mem_worker_gone(struct au_queue *q, const char *worker_id)
{
	struct mhandle *h = q->ctx;
	struct mworker **p, *mw;

	pthread_mutex_lock(&h->sp->mu);
	if ((p = worker_slot(h->sp, worker_id, au_now_ms()))) {
		mw = *p;
		*p = mw->next;
		free(mw);
	}
	pthread_mutex_unlock(&h->sp->mu);
	return 0;
}

/* ---- rate limits ---- */

static void buckets_free(struct mspace *sp)
{
	struct mbucket *b;

	while ((b = sp->buckets)) {
		sp->buckets = b->next;
		free(b->key);
		free(b);
	}
}

/* The same arithmetic as redis_scripts/rate.lua and S_RATE of pg_queue.c. */
static int mem_rate_take(struct au_queue *q, const char *key, const struct au_rate_limit *lim,
			 uint64_t *wait_ms, int *taken)
{
	struct mspace *sp = ((struct mhandle *)q->ctx)->sp;
	uint64_t now = au_mono_us();
	struct mbucket **p, *b = NULL;
	double tokens, wait_us = 0, reserve_us = (double)lim->reserve_ms * 1000;

	pthread_mutex_lock(&sp->mu);
	for (p = &sp->buckets; *p;) {
		if (!strcmp((*p)->key, key)) {
			b = *p;
			break;
		}
		if ((*p)->full_us <= now) {   /* idle and full: gone */
			struct mbucket *gone = *p;

			*p = gone->next;
			free(gone->key);
			free(gone);
			continue;
		}
		p = &(*p)->next;
	}
	if (!b) {
		if (!(b = calloc(1, sizeof(*b))) || !(b->key = au_strdup(key))) {
			pthread_mutex_unlock(&sp->mu);
			free(b);
			return oom(q);
		}
		b->tokens = lim->burst;
		b->at_us = now;
		b->next = sp->buckets;
		sp->buckets = b;
	}
	tokens = b->tokens;
	if (now > b->at_us)
		tokens += (double)(now - b->at_us) * lim->rate_per_s / 1e6;
	if (tokens > lim->burst)
		tokens = lim->burst;
	if (tokens < 1)
		wait_us = (1 - tokens) / lim->rate_per_s * 1e6;
	*taken = wait_us <= reserve_us;
	if (*taken) {
		b->tokens = tokens - 1;
		if (now > b->at_us)
			b->at_us = now;
		b->full_us = b->at_us + (uint64_t)((lim->burst - b->tokens) / lim->rate_per_s * 1e6);
	} else {
		wait_us -= reserve_us;
	}
	pthread_mutex_unlock(&sp->mu);
	*wait_ms = (uint64_t)ceil(wait_us / 1000);
	if (!*taken && !*wait_ms)
		*wait_ms = 1;
	return 0;
}

/* ---- flows: adopt ---- */

static int mem_adopt(struct au_queue *q, const char *id, const char (*deps)[AU_ID_SIZE], size_t n)
{
	struct mspace *sp = ((struct mhandle *)q->ctx)->sp;
	struct mentry *p;
	size_t i, k;
	int rc = 0;

	pthread_mutex_lock(&sp->mu);
	p = find_held(sp, id, NULL);
	for (i = 0; p && rc == 0 && i < p->ndependents; i++) {
		struct mqueue *dq = queue_find(sp, p->dependents[i].queue);
		struct mentry *d = dq ? job_find(dq, p->dependents[i].id) : NULL;

		if (!d || d->state != AU_QUEUED_WAITING)
			continue;
		for (k = 0; k < n; k++) {
			struct mentry *c = find_held(sp, deps[k], NULL);
			int r = c && c != d ? depend_on(c, dq->name, d->id, 1) : 0;

			if (r < 0) {
				rc = oom(q);
				break;
			}
			d->waiting_for += (uint32_t)r;
		}
	}
	pthread_mutex_unlock(&sp->mu);
	return rc;
}

/* ---- the kv space ---- */

static void kv_free(struct mkv *v)
{
	free(v->ns);
	free(v->key);
	free(v->val);
	free(v);
}

/* The live value of ns/key (expired ones are deleted on the way), and the
 * link that points at it. */
static struct mkv **kv_find(struct mspace *sp, const char *ns, const char *key)
{
	uint64_t now = au_now_ms();
	struct mkv **p = &sp->kv;

	while (*p) {
		struct mkv *v = *p;

		if (v->expires_ms && v->expires_ms <= now) {
			*p = v->next;
			kv_free(v);
			continue;
		}
		if (key && !strcmp(v->ns, ns) && !strcmp(v->key, key))
			return p;
		p = &v->next;
	}
	return NULL;
}

static int mem_kv_put(struct au_queue *q, const char *ns, const char *key, const unsigned char *val,
		      size_t len, uint64_t ttl_ms, int nx, int *done)
{
	struct mspace *sp = ((struct mhandle *)q->ctx)->sp;
	unsigned char *copy = copy_of(val, len);
	struct mkv **p, *v = NULL;

	if (!copy)
		return oom(q);
	pthread_mutex_lock(&sp->mu);
	p = kv_find(sp, ns, key);
	if (p && nx) {
		pthread_mutex_unlock(&sp->mu);
		free(copy);
		return 0;
	}
	if (p) {
		v = *p;
		free(v->val);
	} else if (!(v = calloc(1, sizeof(*v))) || !(v->ns = au_strdup(ns)) ||
		   !(v->key = au_strdup(key))) {
		pthread_mutex_unlock(&sp->mu);
		if (v)
			kv_free(v);
		free(copy);
		return oom(q);
	} else {
		v->next = sp->kv;
		sp->kv = v;
	}
	v->val = copy;
	v->len = len;
	v->expires_ms = ttl_ms ? au_now_ms() + ttl_ms : 0;
	*done = 1;
	pthread_mutex_unlock(&sp->mu);
	return 0;
}

static int mem_kv_get(struct au_queue *q, const char *ns, const char *key, unsigned char **val,
		      size_t *len)
{
	struct mspace *sp = ((struct mhandle *)q->ctx)->sp;
	struct mkv **p;
	int rc = 0;

	pthread_mutex_lock(&sp->mu);
	p = kv_find(sp, ns, key);
	if (!p)
		rc = au_seterr(&q->err, AU_ENOTFOUND, "no key '%s' in '%s'", key, ns);
	else if (!(*val = copy_of((*p)->val, (*p)->len)))
		rc = oom(q);
	else
		*len = (*p)->len;
	pthread_mutex_unlock(&sp->mu);
	return rc;
}

static int mem_kv_del(struct au_queue *q, const char *ns, const char *key,
		      const unsigned char *expect, size_t expect_len, int *done)
{
	struct mspace *sp = ((struct mhandle *)q->ctx)->sp;
	struct mkv **p, *v;

	pthread_mutex_lock(&sp->mu);
	p = kv_find(sp, ns, key);
	if (p && (!expect || ((*p)->len == expect_len && !memcmp((*p)->val, expect, expect_len)))) {
		v = *p;
		*p = v->next;
		kv_free(v);
		*done = 1;
	}
	pthread_mutex_unlock(&sp->mu);
	return 0;
}

static int mem_kv_keys(struct au_queue *q, const char *ns, const char *prefix, size_t max,
		       char ***keys, size_t *n)
{
	struct mspace *sp = ((struct mhandle *)q->ctx)->sp;
	size_t plen = strlen(prefix), cap = 0;
	struct mkv *v;
	char **out = NULL;
	int rc = 0;

	pthread_mutex_lock(&sp->mu);
	kv_find(sp, ns, NULL);   /* the expired ones go */
	for (v = sp->kv; v && (!max || *n < max); v = v->next) {
		if (strcmp(v->ns, ns) || strncmp(v->key, prefix, plen))
			continue;
		if (*n == cap) {
			char **w = realloc(out, (cap = cap ? 2 * cap : 16) * sizeof(*w));

			if (!w) {
				rc = oom(q);
				break;
			}
			out = w;
		}
		if (!(out[*n] = au_strdup(v->key))) {
			rc = oom(q);
			break;
		}
		++*n;
	}
	pthread_mutex_unlock(&sp->mu);
	if (rc < 0) {
		while (*n)
			free(out[--*n]);
		free(out);
		return rc;
	}
	*keys = out;
	return 0;
}

const struct au_queue_ops au_memory_queue_ops = {
	.scheme = "memory",
	.features = AU_QUEUE_WATCH,
	.open = mem_open,
	.close = mem_close,
	.push = mem_push,
	.lease = mem_lease,
	.ack = mem_ack,
	.retry = mem_retry,
	.release = mem_release,
	.bury = mem_bury,
	.extend = mem_extend,
	.rescue = mem_rescue,
	.cancel = mem_cancel,
	.peek = mem_peek,
	.stats = mem_stats,
	.queues = mem_queues,
	.watch = mem_watch,
	.unwatch = mem_unwatch,
	.dead = mem_dead,
	.requeue = mem_requeue,
	.purge = mem_purge,
	.pause = mem_pause,
	.empty = mem_empty,
	.drop = mem_drop,
	.locate = mem_locate,
	.rate_take = mem_rate_take,
	.adopt = mem_adopt,
	.kv_put = mem_kv_put,
	.kv_get = mem_kv_get,
	.kv_del = mem_kv_del,
	.kv_keys = mem_kv_keys,
	.cancel_running = mem_cancel_running,
	.watch_cancels = mem_watch_cancels,
	.unwatch_cancels = mem_unwatch_cancels,
	.beat = mem_beat,
	.workers = mem_workers,
	.worker_stop = mem_worker_stop,
	.worker_gone = mem_worker_gone,
};
