/*
 * plug.h - helpers of the tests of the two plug points (queue.h,
 * store.h): opening, computations and records to work with, one-call
 * forms of batch operations. A helper that fails a check records it with
 * the harness; one that cannot go on ends the test binary.
 */
#ifndef AU_TEST_PLUG_H
#define AU_TEST_PLUG_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "harness.h"
#include "queue.h"
#include "store.h"

/* A lease long enough not to run out during a test. */
#define LONG_LEASE 30000

/* T_EQ_INT evaluates its arguments twice; calls go through this */
#define EQ(a, b, name) do { \
		long long a_ = (long long)(a), b_ = (long long)(b); \
		T_EQ_INT(a_, b_, name); \
	} while (0)

/* Opens url, or ends the test with a failed check naming the error. */
struct au_queue *t_open_queue(const char *url);
struct au_store *t_open_store(const char *url);

/* Sleeps ms milliseconds, through signals. */
void t_sleep_ms(unsigned ms);
/* Milliseconds since t0_us (au_mono_us). */
uint64_t t_ms_since(uint64_t t0_us);

/* A queue name of its own for each case: "<prefix>-<what>-<random>". */
void t_queue_name(char name[64], const char *prefix, const char *what);
/* A computation for queue with args [i], 3 attempts, ttl 60 s; release it
 * (or the array, with t_computations_release). */
void t_computation(struct au_computation *c, const char *queue, int i);
void t_computations_release(struct au_computation *cs, size_t n);
int t_push1(struct au_queue *q, const struct au_computation *c);
/* Leases, failing a check when the call itself fails; the number leased. */
size_t t_lease(struct au_queue *q, const char *queue, size_t max, uint32_t lease_ms,
	       uint32_t block_ms, struct au_lease *out);
void t_leases_release(struct au_lease *l, size_t n);
/* The queue's counts, failing a check when the call fails. */
struct au_queue_stats t_stats(struct au_queue *q, const char *queue);

/* A record with a fresh id and no optional fields. */
void t_record(struct au_record *r, enum au_status st, uint32_t ttl_s);
/* The applied flag of a put of r alone; -1 if the call failed. */
int t_put1(struct au_store *s, const struct au_record *r);
/* AU_OK when id has a record, else the error code of get. */
int t_get_code(struct au_store *s, const char *id);
/* Checks that wait(timeout_ms) on s returns a record that another thread
 * puts through its own handle on url 200 ms later, within 100 ms of it. */
void t_wait_for_writer(struct au_store *s, const char *url, int timeout_ms);

/* A push from another thread: t_pusher_main opens url, waits delay_ms,
 * sets *pushed (when not NULL) and pushes one computation to name. */
struct t_pusher {
	const char *url;
	const char *name;
	unsigned delay_ms;
	uint64_t start_us, done_us;
	atomic_int *pushed;
};
void *t_pusher_main(void *arg);

/* A loop watching a queue: t_on_wake (the watch callback, arg = the
 * waker) counts calls, and those after a push, and leaves the loop. */
struct event_base;
struct t_waker {
	struct event_base *base;
	atomic_int calls, pushed, after_push;
};
void t_on_wake(void *arg);
/* Runs the loop until *v reaches want or ms pass; 1 if it did. */
int t_run_until(struct t_waker *w, atomic_int *v, int want, unsigned ms);
/* Pushes one computation to name on url from another thread, with
 * w->pushed set first, and waits for the loop to see it; 1 if it did. */
int t_wake_by_push(struct t_waker *w, const char *url, const char *name);

#endif
