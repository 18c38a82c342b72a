/* plug.c - helpers of the plug-point tests (plug.h). */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>

#include "plug.h"

struct au_queue *t_open_queue(const char *url)
{
	struct au_queue *q = au_queue_open(url);

	if (!T_OK(q && q->err.code == AU_OK, "open '%s' (%s)", url, q ? q->err.str : "oom")) {
		au_queue_close(q);
		exit(t_done());
	}
	return q;
}

struct au_store *t_open_store(const char *url)
{
	struct au_store *s = au_store_open(url);

	if (!T_OK(s && s->err.code == AU_OK, "open '%s' (%s)", url, s ? s->err.str : "oom")) {
		au_store_close(s);
		exit(t_done());
	}
	return s;
}

void t_sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

uint64_t t_ms_since(uint64_t t0_us)
{
	return (au_mono_us() - t0_us) / 1000;
}

void t_queue_name(char name[64], const char *prefix, const char *what)
{
	snprintf(name, 64, "%s-%s-%08llx", prefix, what,
		 (unsigned long long)(au_random64() & 0xffffffff));
}

void t_computation(struct au_computation *c, const char *queue, int i)
{
	struct au_buf b = AU_BUF_INIT;

	au_computation_init(c);
	au_id_new(c->id);
	c->task = au_strdup("noop");
	c->queue = au_strdup(queue);
	au_mp_array(&b, 1);
	au_mp_int(&b, i);
	c->args = au_buf_detach(&b, &c->args_len);
	c->max_attempts = 3;
	c->ttl_s = 60;
	c->created_at_ms = au_now_ms();
}

void t_computations_release(struct au_computation *cs, size_t n)
{
	while (n--)
		au_computation_release(&cs[n]);
}

int t_push1(struct au_queue *q, const struct au_computation *c)
{
	return au_queue_push(q, c, 1);
}

size_t t_lease(struct au_queue *q, const char *queue, size_t max, uint32_t lease_ms,
	       uint32_t block_ms, struct au_lease *out)
{
	size_t n = 0;
	int rc = au_queue_lease(q, queue, max, lease_ms, block_ms, out, &n);

	if (rc < 0)
		T_OK(0, "lease from '%s': %s", queue, q->err.str);
	return n;
}

void t_leases_release(struct au_lease *l, size_t n)
{
	while (n--)
		au_lease_release(&l[n]);
}

struct au_queue_stats t_stats(struct au_queue *q, const char *queue)
{
	struct au_queue_stats st;

	memset(&st, 0, sizeof(st));
	if (au_queue_stats(q, queue, &st) < 0)
		T_OK(0, "stats of '%s': %s", queue, q->err.str);
	return st;
}

void t_record(struct au_record *r, enum au_status st, uint32_t ttl_s)
{
	au_record_init(r);
	au_id_new(r->id);
	r->status = st;
	r->ttl_s = ttl_s;
}

int t_put1(struct au_store *s, const struct au_record *r)
{
	int applied = -1;

	if (au_store_put(s, r, 1, &applied) < 0)
		return -1;
	return applied;
}

int t_get_code(struct au_store *s, const char *id)
{
	struct au_record r;

	au_record_init(&r);
	if (au_store_get(s, id, &r) < 0)
		return s->err.code;
	au_record_release(&r);
	return AU_OK;
}

struct writer {
	const char *url;
	struct au_record rec;
	unsigned delay_ms;
	uint64_t put_start_us, put_done_us;
	int rc;
};

/* Puts rec through its own handle after delay_ms. */
static void *writer_main(void *arg)
{
	struct writer *w = arg;
	struct au_store *s = t_open_store(w->url);

	t_sleep_ms(w->delay_ms);
	w->put_start_us = au_mono_us();
	w->rc = t_put1(s, &w->rec);
	w->put_done_us = au_mono_us();
	au_store_close(s);
	return NULL;
}

void t_wait_for_writer(struct au_store *s, const char *url, int timeout_ms)
{
	struct writer w = { .url = url, .delay_ms = 200 };
	struct au_record out;
	pthread_t th;
	uint64_t t0, ret;
	int rc;

	t_record(&w.rec, AU_COMPLETED, 600);
	au_record_init(&out);
	t0 = au_mono_us();
	pthread_create(&th, NULL, writer_main, &w);
	rc = au_store_wait(s, w.rec.id, timeout_ms, &out);
	ret = au_mono_us();
	pthread_join(th, NULL);
	T_OK(rc == 0 && !strcmp(out.id, w.rec.id), "wait(%d): gets the record put by another thread (%s)",
	     timeout_ms, rc ? s->err.str : "ok");
	T_EQ_INT(w.rc, 1, "wait: the writer's put applied");
	T_OK(ret >= w.put_start_us, "wait(%d): returned after the put started (%llu ms after start)",
	     timeout_ms, (unsigned long long)(ret - t0) / 1000);
	T_OK(ret < w.put_done_us + 100000, "wait(%d): woke within 100 ms of the put (%lld us)",
	     timeout_ms, (long long)ret - (long long)w.put_done_us);
	au_record_release(&out);
}

void *t_pusher_main(void *arg)
{
	struct t_pusher *p = arg;
	struct au_queue *q = au_queue_open(p->url);
	struct au_computation c;

	t_sleep_ms(p->delay_ms);
	t_computation(&c, p->name, 0);
	if (p->pushed)
		*p->pushed = 1;
	p->start_us = au_mono_us();
	if (q && !q->err.code)
		t_push1(q, &c);
	p->done_us = au_mono_us();
	au_computation_release(&c);
	au_queue_close(q);
	return NULL;
}

void t_on_wake(void *arg)
{
	struct t_waker *w = arg;

	w->calls++;
	if (w->pushed)
		w->after_push++;
	event_base_loopbreak(w->base);
}

int t_run_until(struct t_waker *w, atomic_int *v, int want, unsigned ms)
{
	uint64_t t0 = au_mono_us();

	while (*v < want && t_ms_since(t0) < ms) {
		struct timeval tv = { 0, 100000 };

		event_base_loopexit(w->base, &tv);
		event_base_dispatch(w->base);
	}
	return *v >= want;
}

int t_wake_by_push(struct t_waker *w, const char *url, const char *name)
{
	struct t_pusher p = { url, name, 50, 0, 0, &w->pushed };
	int before = w->after_push, ok;
	pthread_t th;

	pthread_create(&th, NULL, t_pusher_main, &p);
	ok = t_run_until(w, &w->after_push, before + 1, 5000);
	pthread_join(th, NULL);
	return ok;
}
