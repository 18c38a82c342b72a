/*
 * test_schedule.c - the schedules of worker/schedule.c on the memory
 * queue (one process, several schedulers on handles of one space, a
 * frozen test clock moved by hand): every tick fired exactly once by
 * three schedulers; five registrations of one schedule leave one; after
 * the fleet was away 3 h, skip / latest / all fire 0, 1, 18; pause and
 * resume; overlap skip. tests/t_schedule.sh does it across processes.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "queue.h"
#include "schedule.h"

#define T0 1796169600000ull   /* 2026-12-01 00:00:00 UTC */

static void clock_at(uint64_t ms)
{
	char v[32];

	snprintf(v, sizeof(v), "%" PRIu64, ms);
	setenv("AU_TEST_CLOCK_MS", v, 1);
}

static uint64_t ready(struct au_queue *q, const char *queue)
{
	struct au_queue_stats st;

	memset(&st, 0, sizeof(st));
	au_queue_stats(q, queue, &st);
	return st.ready;
}

static void add(struct au_queue *q, const char *name, const char *cron, const char *queue,
		int missed, int overlap, uint64_t window_ms)
{
	struct au_schedule s;
	struct au_err err = { 0, "" };
	int outcome;

	memset(&s, 0, sizeof(s));
	s.name = (char *)name;
	s.cron = (char *)cron;
	s.tz = (char *)"UTC";
	s.task = (char *)"au.noop";
	s.queue = (char *)queue;
	s.missed = missed;
	s.overlap = overlap;
	s.window_ms = window_ms;
	T_OK(au_schedule_put(q, &s, &outcome, &err) == 0 && outcome == 0, "schedule %s added: %s",
	     name, err.str);
}

static size_t pass(struct au_scheduler **sc, struct au_queue **q, size_t n)
{
	struct au_err err = { 0, "" };
	size_t total = 0, fired, i;

	for (i = 0; i < n; i++) {
		if (au_scheduler_run(sc[i], q[i], &fired, &err) < 0)
			T_OK(0, "pass: %s", err.str);
		total += fired;
	}
	return total;
}

int main(void)
{
	struct au_queue *q[3];
	struct au_scheduler *sc[3];
	struct au_err err = { 0, "" };
	struct au_schedule *v;
	size_t i, n, total;
	uint64_t t;
	int outcome, k;
	char name[32];

	setenv("AU_TEST_CLOCK_AT", "99999999999999", 1);   /* frozen: moved by clock_at */
	setenv("AU_TEST_CLOCK_RATE", "60", 1);   /* a pass stands for a minute */
	clock_at(T0);
	for (i = 0; i < 3; i++) {
		q[i] = au_queue_open("memory://sched");
		snprintf(name, sizeof(name), "w%zu", i);
		sc[i] = au_scheduler_new(name);
		if (!T_OK(q[i] && !q[i]->err.code && sc[i], "handle %zu", i))
			return t_done();
	}

	/* five registrations of one schedule leave one */
	for (k = 0; k < 5; k++) {
		struct au_schedule s;

		memset(&s, 0, sizeof(s));
		s.name = (char *)"every";
		s.cron = (char *)"* * * * *";
		s.tz = (char *)"UTC";
		s.task = (char *)"au.noop";
		s.queue = (char *)"q-every";
		T_OK(au_schedule_put(q[k % 3], &s, &outcome, &err) == 0 && outcome == (k ? 2 : 0),
		     "registration %d: %s (outcome %d)", k, err.str, outcome);
	}
	T_OK(au_schedule_list(q[0], &v, &n, &err) == 0 && n == 1, "one schedule: %zu", n);
	for (i = 0; i < n; i++)
		au_schedule_release(&v[i]);
	free(v);

	/* 300 minutes, three schedulers: each tick once */
	total = 0;
	for (t = T0; t <= T0 + 300 * 60000ull; t += 20000) {
		clock_at(t);
		total += pass(sc, q, 3);
	}
	T_EQ_INT(total, 300, "300 ticks fired 300 times");
	T_EQ_INT(ready(q[0], "q-every"), 300, "300 computations wait");
	T_OK(au_schedule_remove(q[0], "every", &err) == 0, "rm: %s", err.str);
	T_OK(au_schedule_remove(q[0], "every", &err) == -1 && err.code == AU_ENOTFOUND &&
	     !strcmp(err.str, "no schedule 'every'"), "rm again: '%s'", err.str);

	/* the fleet away 3 h: 18 ticks of every ten minutes missed */
	t += 60000;
	clock_at(t);
	add(q[0], "m-skip", "*/10 * * * *", "q-skip", AU_MISSED_SKIP, 0, 0);
	add(q[0], "m-latest", "*/10 * * * *", "q-latest", AU_MISSED_LATEST, 0, 0);
	add(q[0], "m-all", "*/10 * * * *", "q-all", AU_MISSED_ALL, 0, 3 * 3600000ull);
	add(q[0], "paused", "* * * * *", "q-paused", 0, 0, 0);
	T_OK(au_schedule_pause(q[0], "paused", 1, &err) == 0, "pause: %s", err.str);
	pass(sc, q, 3);
	t += 3 * 3600000ull + 5 * 60000;  /* not on a tick */
	clock_at(t);
	pass(sc, q, 3);
	T_EQ_INT(ready(q[0], "q-skip"), 0, "missed, skip: none");
	T_EQ_INT(ready(q[0], "q-latest"), 1, "missed, latest: one");
	T_EQ_INT(ready(q[0], "q-all"), 18, "missed, all within 3h: 18");
	T_EQ_INT(ready(q[0], "q-paused"), 0, "paused: none");
	T_OK(au_schedule_pause(q[0], "paused", 0, &err) == 0, "resume: %s", err.str);
	for (k = 0; k < 6; k++) {
		t += 20000;
		clock_at(t);
		pass(sc, q, 3);
	}
	T_EQ_INT(ready(q[0], "q-paused"), 2, "resumed: the ticks after it only");
	T_EQ_INT(ready(q[0], "q-skip"), 0, "skip: nothing more in two minutes");

	/* overlap skip: the first tick's computation waits, no more fire */
	add(q[0], "ov", "* * * * *", "q-ov", 0, AU_OVERLAP_SKIP, 0);
	add(q[0], "ov-allow", "* * * * *", "q-ova", 0, AU_OVERLAP_ALLOW, 0);
	for (k = 0; k < 15; k++) {
		t += 20000;
		clock_at(t);
		pass(sc, q, 3);
	}
	T_EQ_INT(ready(q[0], "q-ov"), 1, "overlap skip: one while it waits");
	T_EQ_INT(ready(q[0], "q-ova"), 5, "overlap allow: each of the five minutes");

	for (i = 0; i < 3; i++) {
		au_scheduler_free(sc[i]);
		au_queue_close(q[i]);
	}
	return t_done();
}
