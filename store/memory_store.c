/*
 * memory_store.c - results in this process: memory://[name]. Every handle
 * opened with the same name shares one table (threads of one process talk
 * through it); the table goes away when its last handle is closed.
 *
 * Records are kept encoded, so a get hands out a fresh copy and the store
 * exercises the same codec as the others.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "store.h"

struct mem_rec {
	struct mem_rec *next;
	char id[AU_ID_SIZE];
	uint64_t expires_at_ms;     /* 0 = never */
	unsigned char *data;        /* the encoded record */
	size_t len;
};

/* One named table, shared by its handles. */
struct mem_table {
	struct mem_table *next;     /* in the registry */
	char *name;
	unsigned refs;
	pthread_mutex_t lock;
	pthread_cond_t written;     /* broadcast on every put that wrote */
	struct mem_rec **buckets;   /* chained hash table, power-of-two size */
	size_t nbuckets, count;
};

static pthread_mutex_t tables_lock = PTHREAD_MUTEX_INITIALIZER;
static struct mem_table *tables;

#define MIN_BUCKETS 64

static int expired(const struct mem_rec *r, uint64_t now)
{
	return r->expires_at_ms && now >= r->expires_at_ms;
}

/* FNV-1a over the id. */
static size_t hash(const char *id)
{
	uint64_t h = 14695981039346656037ull;

	while (*id)
		h = (h ^ (unsigned char)*id++) * 1099511628211ull;
	return (size_t)h;
}

static struct mem_rec **slot(struct mem_table *t, const char *id)
{
	struct mem_rec **p = &t->buckets[hash(id) & (t->nbuckets - 1)];

	while (*p && strcmp((*p)->id, id) != 0)
		p = &(*p)->next;
	return p;
}

static void rec_free(struct mem_rec *r)
{
	free(r->data);
	free(r);
}

/* Unlinks and frees the record *p points at. */
static void unlink_rec(struct mem_table *t, struct mem_rec **p)
{
	struct mem_rec *r = *p;

	*p = r->next;
	rec_free(r);
	t->count--;
}

/* Doubles the table when it is full; on OOM the chains just get longer. */
static void grow(struct mem_table *t)
{
	size_t n = t->nbuckets * 2, i;
	struct mem_rec **b, *r, *next;

	if (t->count < t->nbuckets || !(b = au_calloc(n, sizeof(*b))))
		return;
	for (i = 0; i < t->nbuckets; i++)
		for (r = t->buckets[i]; r; r = next) {
			next = r->next;
			r->next = b[hash(r->id) & (n - 1)];
			b[hash(r->id) & (n - 1)] = r;
		}
	free(t->buckets);
	t->buckets = b;
	t->nbuckets = n;
}

static void table_free(struct mem_table *t)
{
	size_t i;

	for (i = 0; i < t->nbuckets; i++)
		while (t->buckets[i])
			unlink_rec(t, &t->buckets[i]);
	free(t->buckets);
	pthread_cond_destroy(&t->written);
	pthread_mutex_destroy(&t->lock);
	free(t->name);
	free(t);
}

static struct mem_table *table_new(const char *name)
{
	struct mem_table *t = au_calloc(1, sizeof(*t));
	pthread_condattr_t ca;

	if (!t)
		return NULL;
	t->nbuckets = MIN_BUCKETS;
	t->buckets = au_calloc(t->nbuckets, sizeof(*t->buckets));
	t->name = au_strdup(name);
	if (!t->buckets || !t->name) {
		free(t->buckets);
		free(t->name);
		free(t);
		return NULL;
	}
	pthread_mutex_init(&t->lock, NULL);
	/* Waits measure time on the monotonic clock, immune to clock steps. */
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&t->written, &ca);
	pthread_condattr_destroy(&ca);
	return t;
}

static int memory_open(struct au_store *s, const struct au_url *url)
{
	const char *name = url->host ? url->host : "";
	struct mem_table *t;

	pthread_mutex_lock(&tables_lock);
	for (t = tables; t && strcmp(t->name, name) != 0; t = t->next)
		;
	if (!t && (t = table_new(name))) {
		t->next = tables;
		tables = t;
	}
	if (t)
		t->refs++;
	pthread_mutex_unlock(&tables_lock);
	if (!t)
		return au_seterr(&s->err, AU_ENOMEM, "out of memory");
	s->ctx = t;
	return 0;
}

static void memory_close(struct au_store *s)
{
	struct mem_table *t = s->ctx, **p;

	pthread_mutex_lock(&tables_lock);
	if (--t->refs == 0) {
		for (p = &tables; *p != t; p = &(*p)->next)
			;
		*p = t->next;
		table_free(t);
	}
	pthread_mutex_unlock(&tables_lock);
}

static int memory_put(struct au_store *s, const struct au_record *recs, size_t n, int *applied)
{
	struct mem_table *t = s->ctx;
	struct mem_rec **made, **p;
	uint64_t now = au_now_ms();
	int wrote = 0, rc = 0;
	size_t i;

	made = au_calloc(n ? n : 1, sizeof(*made));
	if (!made)
		return au_seterr(&s->err, AU_ENOMEM, "out of memory");
	/* Encode outside the lock: it allocates and may fail, and then
	 * nothing of the batch is written. */
	for (i = 0; i < n && rc == 0; i++) {
		struct au_record w = recs[i];
		struct au_buf b = AU_BUF_INIT;

		w.expires_at_ms = w.ttl_s ? now + (uint64_t)w.ttl_s * 1000 : 0;
		made[i] = au_calloc(1, sizeof(*made[i]));
		if (!made[i])
			rc = au_seterr(&s->err, AU_ENOMEM, "out of memory");
		else if (au_record_encode(&w, &b, &s->err) < 0) {
			au_buf_release(&b);   /* what the failed encode had reserved */
			rc = -1;
		} else {
			memcpy(made[i]->id, w.id, AU_ID_SIZE);
			made[i]->expires_at_ms = w.expires_at_ms;
			made[i]->data = au_buf_detach(&b, &made[i]->len);
		}
	}
	if (rc == 0) {
		pthread_mutex_lock(&t->lock);
		for (i = 0; i < n; i++) {
			p = slot(t, made[i]->id);
			if (*p && !expired(*p, now)) {
				if (applied)
					applied[i] = 0;
				continue;
			}
			if (*p)
				unlink_rec(t, p);
			made[i]->next = *p;
			*p = made[i];
			made[i] = NULL;
			t->count++;
			grow(t);
			wrote = 1;
			if (applied)
				applied[i] = 1;
		}
		if (wrote)
			pthread_cond_broadcast(&t->written);
		pthread_mutex_unlock(&t->lock);
	}
	for (i = 0; i < n; i++)
		if (made[i])
			rec_free(made[i]);
	free(made);
	return rc;
}

/* Looks id up with t->lock held: 0 and out filled, or -1 (AU_ENOTFOUND,
 * AU_EEXPIRED after dropping the record). */
static int lookup(struct au_store *s, struct mem_table *t, const char *id, struct au_record *out)
{
	struct mem_rec **p = slot(t, id);

	if (!*p)
		return au_seterr(&s->err, AU_ENOTFOUND, "no result for computation '%s'", id);
	if (expired(*p, au_now_ms())) {
		unlink_rec(t, p);
		return au_seterr(&s->err, AU_EEXPIRED, "result of computation '%s' expired", id);
	}
	return au_record_decode((*p)->data, (*p)->len, out, &s->err);
}

static int memory_get(struct au_store *s, const char *id, struct au_record *out)
{
	struct mem_table *t = s->ctx;
	int rc;

	pthread_mutex_lock(&t->lock);
	rc = lookup(s, t, id, out);
	pthread_mutex_unlock(&t->lock);
	return rc;
}

static int memory_del(struct au_store *s, const char *id)
{
	struct mem_table *t = s->ctx;
	struct mem_rec **p;

	pthread_mutex_lock(&t->lock);
	p = slot(t, id);
	if (*p)
		unlink_rec(t, p);
	pthread_mutex_unlock(&t->lock);
	return 0;
}

static int memory_sweep(struct au_store *s, size_t max, size_t *removed)
{
	struct mem_table *t = s->ctx;
	uint64_t now = au_now_ms();
	size_t i, count = 0;

	pthread_mutex_lock(&t->lock);
	for (i = 0; i < t->nbuckets && count < max; i++) {
		struct mem_rec **p = &t->buckets[i];

		while (*p && count < max) {
			if (expired(*p, now)) {
				unlink_rec(t, p);
				count++;
			} else {
				p = &(*p)->next;
			}
		}
	}
	pthread_mutex_unlock(&t->lock);
	if (removed)
		*removed = count;
	return 0;
}

static int memory_wait(struct au_store *s, const char *id, int timeout_ms, struct au_record *out)
{
	struct mem_table *t = s->ctx;
	struct timespec deadline;
	int rc, timed_out = 0;

	clock_gettime(CLOCK_MONOTONIC, &deadline);
	if (timeout_ms > 0) {
		deadline.tv_sec += timeout_ms / 1000;
		deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
		if (deadline.tv_nsec >= 1000000000) {
			deadline.tv_sec++;
			deadline.tv_nsec -= 1000000000;
		}
	}
	pthread_mutex_lock(&t->lock);
	while ((rc = lookup(s, t, id, out)) < 0 && s->err.code == AU_ENOTFOUND) {
		if (timed_out) {
			rc = au_seterr(&s->err, AU_ETIMEDOUT,
				       "timed out after %d ms waiting for computation '%s'",
				       timeout_ms, id);
			break;
		}
		timed_out = (timeout_ms < 0 ? pthread_cond_wait(&t->written, &t->lock)
					    : pthread_cond_timedwait(&t->written, &t->lock, &deadline))
			    == ETIMEDOUT;
	}
	pthread_mutex_unlock(&t->lock);
	return rc;
}

const struct au_store_ops au_memory_store_ops = {
	.scheme = "memory",
	.features = AU_STORE_TELLS_EXPIRED,
	.open = memory_open,
	.close = memory_close,
	.put = memory_put,
	.get = memory_get,
	.del = memory_del,
	.sweep = memory_sweep,
	.wait = memory_wait,
};
