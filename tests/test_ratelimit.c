/*
 * test_ratelimit.c - the rate limit middleware in a worker embedded in this
 * program, on a memory:// queue: the spec and its messages, a task held to
 * its rate while one the spec does not name runs at once, and a rate limit
 * server that does not answer: computations wait, none fails, and they run
 * at their first attempt once a server answers. (tests/t_ratelimit.sh runs
 * a fleet on Redis and PostgreSQL.)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "harness.h"
#include "plug.h"

static const char *bad_spec(const char *spec)
{
	static struct au_err err;
	void *rl;

	memset(&err, 0, sizeof(err));
	rl = au_ratelimit_new(spec, "memory://trl", &err);
	if (rl) {
		au_ratelimit_middleware.free(rl);
		return "(accepted)";
	}
	return err.str;
}

static void test_spec(void)
{
	static const char *const good[] = {
		"ch.query=200/s", "ch.query=200/s,ch.insert=10/s", "a=0.5/m", "a=30/h:burst=10",
		"ch.insert[table]=5/s", "ch.insert[table]=5/s:burst=2.5,ch.query=1/s",
	};
	static const struct { const char *spec, *msg; } bad[] = {
		{ "ch.query=fast", "bad rate limit 'ch.query=fast': expected TASK=N/s" },
		{ "", "bad rate limit '': expected TASK=N/s" },
		{ "ch.query", "bad rate limit 'ch.query': expected TASK=N/s" },
		{ "=5/s", "bad rate limit '=5/s': expected TASK=N/s" },
		{ "a=5/s,", "bad rate limit '': expected TASK=N/s" },
		{ "a=5/d", "bad rate limit 'a=5/d': expected TASK=N/s" },
		{ "a=0/s", "bad rate limit 'a=0/s': expected TASK=N/s" },
		{ "a=-1/s", "bad rate limit 'a=-1/s': expected TASK=N/s" },
		{ "a=inf/s", "bad rate limit 'a=inf/s': expected TASK=N/s" },
		{ "a=5/s:burst=0.5", "bad rate limit 'a=5/s:burst=0.5': burst must be at least 1" },
		{ "a=5/s:burst=x", "bad rate limit 'a=5/s:burst=x': expected :burst=B, B a number" },
		{ "a=5/s:brst=2", "bad rate limit 'a=5/s:brst=2': expected TASK=N/s" },
		{ "a[]=5/s", "bad rate limit 'a[]=5/s': expected TASK[ARGUMENT]=N/s" },
		{ "a[x=5/s", "bad rate limit 'a[x=5/s': expected TASK[ARGUMENT]=N/s" },
		{ "a=1/s,b=2/s,a=3/s", "bad rate limit 'a=3/s': the task has a limit already" },
	};
	size_t i;

	for (i = 0; i < AU_ARRAY_SIZE(good); i++)
		T_EQ_STR(bad_spec(good[i]), "(accepted)", good[i]);
	for (i = 0; i < AU_ARRAY_SIZE(bad); i++)
		T_EQ_STR(bad_spec(bad[i].spec), bad[i].msg, bad[i].spec);
}

static struct au_handle *submit(struct au_client *cl, const char *task, const char *json)
{
	unsigned char *args = NULL;
	size_t len = 0;
	struct au_handle *h = NULL;
	struct au_err err;

	if (au_json_to_msgpack(json, &args, &len, &err) == 0)
		au_enqueue(cl, task, args, len, NULL, &h);
	free(args);
	return h;
}

static void stop_soon(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	au_worker_stop(arg);
}

/* A worker on cfg with the rate limit spec at rate_url, for ms; its stats. */
static void run_worker(const struct au_config *cfg, const char *spec, const char *rate_url,
		       unsigned ms, struct au_worker_stats *st)
{
	struct event_base *base = event_base_new();
	struct au_worker_opts wo = { 0 };
	struct timeval tv = { (time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000 };
	struct au_worker *w;
	struct event *stopper;
	struct au_err err;
	void *rl;

	wo.concurrency = 4;
	wo.grace_ms = 200;
	w = au_worker_new(cfg, &wo, NULL, base);
	rl = au_ratelimit_new(spec, rate_url, &err);
	T_OK(w && rl && au_worker_use(w, &au_ratelimit_middleware, rl) == 0, "a worker with '%s'",
	     spec);
	stopper = evtimer_new(base, stop_soon, w);
	evtimer_add(stopper, &tv);
	T_OK(au_worker_start(w) == 0, "it starts");
	event_base_dispatch(base);
	au_worker_stats(w, st);
	event_free(stopper);
	au_worker_free(w);
	event_base_free(base);
}

static int count(struct au_handle **h, size_t n, enum au_status want)
{
	enum au_status s;
	size_t i;
	int k = 0;

	for (i = 0; i < n; i++)
		k += au_handle_status(h[i], &s) == 0 && s == want;
	return k;
}

int main(void)
{
	struct au_config cfg = { "memory://trl", "memory://trl", "http://127.0.0.1:1/default" };
	struct au_client *cl;
	struct au_handle *limited[30], *free_[5], *waiting[3];
	struct au_worker_stats st;
	struct au_record rec;
	size_t i;
	int done, ok = 1;

	au_log_set_level(getenv("T_DEBUG") ? AU_LOG_DEBUG : AU_LOG_ERROR);
	test_spec();

	cl = au_client_new(&cfg);
	T_OK(cl && !au_client_err(cl)->code, "client on memory:// opens");
	for (i = 0; i < 5; i++)
		free_[i] = submit(cl, "au.echo", "{}");
	for (i = 0; i < 30; i++)
		limited[i] = submit(cl, "au.noop", "{}");
	/* 20/s for 1 s: about 20 of 30, and every au.echo */
	run_worker(&cfg, "au.noop=20/s", "memory://trl", 1000, &st);
	done = count(limited, 30, AU_COMPLETED);
	if (getenv("T_DEBUG"))
		printf("# leased %llu completed %llu released %llu\n", (unsigned long long)st.leased,
		       (unsigned long long)st.completed, (unsigned long long)st.released);
	T_OK(done >= 15 && done <= 23, "held to 20/s: %d of 30 in a second", done);
	EQ(count(free_, 5, AU_COMPLETED), 5, "a task not in the spec runs");
	for (i = 0; i < 5; i++) {
		ok &= au_handle_result(free_[i], &rec) == 0 && rec.started_at_ms < rec.created_at_ms + 150;
		au_record_release(&rec);
	}
	T_OK(ok, "... at once, not held back (a 20/s limit would space them 50 ms apart)");
	EQ(st.failed + st.retried + st.buried, 0, "none failed, none retried");
	EQ(count(limited, 30, AU_PENDING), 30 - done, "the others wait, released unharmed");

	/* a rate limit server that does not answer: they wait, none fails */
	for (i = 0; i < 3; i++)
		waiting[i] = submit(cl, "au.sleep", "{\"ms\":1}");
	run_worker(&cfg, "au.noop=1000/s,au.sleep=1000/s", "redis://127.0.0.1:1", 1500, &st);
	EQ(count(waiting, 3, AU_PENDING), 3, "server down: they wait");
	EQ(count(limited, 30, AU_PENDING), 30 - done, "server down: the au.noop left wait too");
	EQ(st.failed + st.buried + st.completed, 0, "server down: none failed, none ran");
	/* once a server answers they run, at their first attempt */
	run_worker(&cfg, "au.noop=1000/s", "memory://trl", 800, &st);
	EQ(count(limited, 30, AU_COMPLETED) + count(waiting, 3, AU_COMPLETED), 33,
	   "a server that answers: the rest run");
	for (i = 0; i < 30; i++) {
		ok &= au_handle_result(limited[i], &rec) == 0 && rec.attempts == 1;
		au_record_release(&rec);
	}
	T_OK(ok, "every one at its first attempt: a delay spends none");
	for (i = 0; i < 3; i++) {
		ok &= au_handle_result(waiting[i], &rec) == 0 && rec.attempts == 1;
		au_record_release(&rec);
	}
	T_OK(ok, "nor does waiting for a server that does not answer");
	for (i = 0; i < 30; i++)
		au_handle_free(limited[i]);
	for (i = 0; i < 5; i++)
		au_handle_free(free_[i]);
	for (i = 0; i < 3; i++)
		au_handle_free(waiting[i]);
	au_client_free(cl);
	return t_done();
}
