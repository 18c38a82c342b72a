/*
 * schedule.h - cron schedules fired once per tick across the fleet, with
 * no leader and no beat process (docs/schedules.md). Definitions, state
 * and tick claims live in the queue's kv space (backends/queue.h):
 *   ns "sched"      name -> the definition (msgpack map)
 *   ns "sched_last" name -> "<last tick ms> <last fired tick ms> <seen ms>"
 *   ns "tick"       "<name>:<tick ms>" -> "fire <worker>" | "skip <worker>",
 *                   put with nx: the one winner of a tick
 * Every worker runs au_scheduler_run once a second (its housekeeping).
 */
#ifndef AU_SCHEDULE_H
#define AU_SCHEDULE_H

#include <stdint.h>

#include "core.h"

struct au_queue;

enum au_sched_missed { AU_MISSED_SKIP = 0, AU_MISSED_LATEST, AU_MISSED_ALL };
enum au_sched_overlap { AU_OVERLAP_ALLOW = 0, AU_OVERLAP_SKIP };
#define AU_SCHED_NAME_MAX 200
#define AU_SCHED_WINDOW_DEFAULT_MS 86400000ull   /* missed ticks older are dropped */

struct au_schedule {
	char *name, *cron, *tz, *task, *queue;
	unsigned char *args;        /* msgpack, may be NULL ({}) */
	size_t args_len;
	int priority;
	uint32_t max_attempts, ttl_s;
	int paused;
	int missed;                 /* enum au_sched_missed */
	int overlap;                /* enum au_sched_overlap */
	uint64_t window_ms;         /* catch-up window, 0: the default */
	uint64_t created_at_ms;     /* the schedule clock (au_schedule_now) */
};
void au_schedule_release(struct au_schedule *s);

/* The clock schedules tick by: the wall clock, unless the test hook
 * AU_TEST_CLOCK_MS=<unix ms> is set: then that time at the moment
 * AU_TEST_CLOCK_AT=<unix ms> (default: this process's first reading),
 * running AU_TEST_CLOCK_RATE (default 1) times as fast. For tests only. */
uint64_t au_schedule_now(void);
/* The pass interval in schedule-clock ms (1 s times the rate). */
uint64_t au_schedule_pass_ms(void);

/* A name a schedule may have: 1 to AU_SCHED_NAME_MAX of [A-Za-z0-9_.-]. */
int au_schedule_name_check(const char *name, struct au_err *err);
/* Checks name, cron, tz, task, queue. */
int au_schedule_check(const struct au_schedule *s, struct au_err *err);
const char *au_sched_missed_name(int m);
int au_sched_missed_parse(const char *s, int *m);
const char *au_sched_overlap_name(int o);
int au_sched_overlap_parse(const char *s, int *o);

/* Upserts s: *outcome 0 created, 1 updated, 2 unchanged (identical
 * content, the stored created_at kept). Racers of one name leave one. */
int au_schedule_put(struct au_queue *q, const struct au_schedule *s, int *outcome,
		    struct au_err *err);
/* -1 with AU_ENOTFOUND "no schedule 'x'". */
int au_schedule_get(struct au_queue *q, const char *name, struct au_schedule *s,
		    struct au_err *err);
/* All of them, sorted by name; free each then the array. */
int au_schedule_list(struct au_queue *q, struct au_schedule **out, size_t *n,
		     struct au_err *err);
int au_schedule_pause(struct au_queue *q, const char *name, int paused, struct au_err *err);
int au_schedule_remove(struct au_queue *q, const char *name, struct au_err *err);

struct au_schedule_state {
	uint64_t last;              /* ticks up to this one are dealt with */
	uint64_t fired;             /* the last tick enqueued (0: none) */
	uint64_t seen;              /* a worker last looked at the schedule then */
};
/* 0, or 1 when the schedule has no state yet (zeroed), -1 on error. */
int au_schedule_state(struct au_queue *q, const char *name, struct au_schedule_state *st,
		      struct au_err *err);
/* The next tick of s after after_ms. */
int au_schedule_next(const struct au_schedule *s, uint64_t after_ms, uint64_t *next_ms,
		     struct au_err *err);
/* The id of the computation of s's tick (au_id_from_key of the queue and
 * "au.schedule:<name>:<tick ms>"). */
int au_schedule_tick_id(const struct au_schedule *s, uint64_t tick_ms, char out[AU_ID_SIZE]);

/* The firing side: one per worker. */
struct au_scheduler;
struct au_scheduler *au_scheduler_new(const char *worker_id);
void au_scheduler_free(struct au_scheduler *sc);
/* One pass over every schedule of q: claims and enqueues the ticks due.
 * Blocking: on the worker's I/O thread. *fired counts the enqueued. */
int au_scheduler_run(struct au_scheduler *sc, struct au_queue *q, size_t *fired,
		     struct au_err *err);

#endif
