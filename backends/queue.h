/*
 * queue.h - the queue plug point. A backend is one file that fills one
 * `struct au_queue_ops` and one line in backends/registry.c.
 *
 * Every operation takes batches; every write of an attempt presents the lease
 * token it was given (fencing): a stale token changes nothing and is reported
 * per item through `applied[i] = 0`. Times come from the server's clock where
 * the server has one. All operations return 0 or -1 with q->err set; -1 means
 * the operation as a whole failed (server down, bad reply) and nothing is
 * known to have been applied.
 */
#ifndef AU_QUEUE_H
#define AU_QUEUE_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"

struct event_base;

/* Identifies one attempt of one computation. */
struct au_ref {
	char id[AU_ID_SIZE];
	char token[AU_TOKEN_SIZE];
};

/*
 * A computation's story as the worker encodes it (opaque to the queue):
 * what its attempts did, kept with it between attempts. The queue stores
 * the bytes verbatim and hands them back verbatim, at most AU_MAX_STORY.
 */
struct au_story { const unsigned char *data; size_t len; };
#define AU_MAX_STORY 65536u

/* One leased computation. body is the stored message, malloc'ed. */
struct au_lease {
	struct au_ref ref;
	uint32_t attempts;          /* including this one */
	unsigned char *body;
	size_t body_len;
	unsigned char *story;       /* what the last retry left with it, malloc'ed;
				       NULL (and 0) when none, as on a first attempt,
				       which is never asked for one */
	size_t story_len;
};
/* Frees body and story; the lease can be filled again. */
void au_lease_release(struct au_lease *l);

struct au_queue_stats {
	uint64_t ready, scheduled, leased, dead;
	uint64_t waiting;           /* waiting for dependencies */
	int paused;                 /* pause(): leases take nothing */
	uint64_t processed;         /* acked, since the queue was first used */
	uint64_t failed;            /* dead-lettered (bury, expired leases), likewise */
	uint64_t per_minute;        /* acks per minute, measured over the last 30 to
				       70 s by housekeeping (rescue; over less, as if
				       over 30 s, just after a worker started); 0 when
				       unknown */
};

/* One dead letter (dead). */
struct au_dead {
	char id[AU_ID_SIZE];
	uint64_t died_at_ms;        /* when it was buried, unix ms (server clock) */
	uint32_t attempts;          /* made before it died */
	char reason[AU_ERRSTR_SIZE];
	unsigned char *body;        /* the computation (wire format), malloc'ed */
	size_t body_len;
	unsigned char *story;       /* its story as its last retry left it, malloc'ed;
				       NULL when none */
	size_t story_len;
};
/* Frees body and story. */
void au_dead_release(struct au_dead *d);

/* How many dead letters a queue keeps, and how long (URL parameters
 * dead_max=N and dead_max_age=DURATION on every backend, read by
 * au_queue_dead_limits). Sidekiq's bounds by default. */
#define AU_DEAD_MAX_DEFAULT 10000u
#define AU_DEAD_MAX_AGE_DEFAULT_MS (180ull * 86400000)   /* six months */
struct au_dead_limits {
	uint64_t max;               /* 0: no bound by count */
	uint64_t max_age_ms;        /* 0: no bound by age */
};
/* The limits of url (its defaults when absent); -1 with AU_EINVAL naming
 * the parameter. */
int au_queue_dead_limits(const struct au_url *url, struct au_dead_limits *out,
			 struct au_err *err);
/* How often a handle enforces them and takes the rate's sample, at most
 * (from rescue, which workers call every second). */
#define AU_HOUSEKEEP_MS 10000u
/* When a handle last housekept each of the (up to 16) queues it rescues. */
struct au_housekeeping {
	uint64_t name[16];          /* a hash of the queue's name, 0: free */
	uint64_t at_us[16];         /* au_mono_us of the last time */
};
/* 1 when queue is due (not done by this handle in the last
 * AU_HOUSEKEEP_MS), noting now as its last time; 0 when not. */
int au_queue_housekeep_due(struct au_housekeeping *hk, const char *queue);

enum au_queued_state {
	AU_QUEUED_READY = 1,      /* waiting to run (first time or retry) */
	AU_QUEUED_SCHEDULED,      /* waiting for run_at or a retry delay */
	AU_QUEUED_LEASED,         /* running */
	AU_QUEUED_DEAD,           /* buried */
	AU_QUEUED_WAITING         /* waiting for dependencies (au_computation.deps) */
};

/* What the queue knows about one computation (peek). */
struct au_queued {
	enum au_queued_state state;
	uint32_t attempts;
	uint32_t max_attempts;
	char error[AU_ERRSTR_SIZE];  /* last error or bury reason, "" if none */
	unsigned char *story;       /* its story, malloc'ed; NULL when none */
	size_t story_len;
};
/* Frees the story. Harmless on one zeroed or left by a failed peek. */
void au_queued_release(struct au_queued *q);

/* What a cancel saw of the computation it removed, or found leased: what
 * the canceller's CANCELLED record is made of. */
struct au_cancelled {
	uint32_t attempts;          /* made (a running one included) */
	unsigned char *body;        /* the computation (wire format), malloc'ed;
				       NULL when the queue kept none */
	size_t body_len;
	unsigned char *story;       /* its story, malloc'ed; NULL when none */
	size_t story_len;
};
/* Frees body and story. Harmless on one zeroed or left by a failed cancel. */
void au_cancelled_release(struct au_cancelled *c);

/*
 * The worker registry: each worker process keeps an entry of its own
 * through its queue backend (beat), refreshed every AU_BEAT_EVERY_MS and
 * gone AU_BEAT_TTL_MS after the last refresh unless refreshed again, so
 * the entry of a worker that died vanishes by itself. `au workers` lists
 * them, `au worker stop ID` asks one to drain.
 */
#define AU_BEAT_EVERY_MS 2000u
#define AU_BEAT_TTL_MS (3 * AU_BEAT_EVERY_MS)
#define AU_BEAT_IDS 16              /* running ids an entry names, at most */
#define AU_WORKER_ID_SIZE 320       /* "<host>:<pid>:<8 hex>" + NUL */
#define AU_BEAT_METRICS_MAX 8192    /* au_worker_beat.metrics, bytes */

enum au_beat_state {
	AU_BEAT_RUNNING = 0,        /* leasing as usual */
	AU_BEAT_PAUSED,             /* a server it needs is away: not leasing (paused_by) */
	AU_BEAT_DRAINING            /* stopping: finishing what runs, leasing nothing */
};
const char *au_beat_state_name(enum au_beat_state st);   /* "running", ... */
/* 0 and *st for a name au_beat_state_name gives, -1 for anything else. */
int au_beat_state_parse(const char *name, enum au_beat_state *st);

/* One worker's entry. The worker fills all but beat_at_ms and age_ms,
 * which the backend fills when it lists entries. */
struct au_worker_beat {
	char id[AU_WORKER_ID_SIZE];    /* unique per process and start */
	char host[256];
	uint32_t pid;
	char queues[256];              /* the queues it serves, comma-separated */
	char version[32];              /* AU_VERSION */
	uint64_t started_ms;           /* unix ms, the worker's clock */
	uint32_t concurrency;
	enum au_beat_state state;
	char paused_by[32];            /* AU_BEAT_PAUSED: "tasks", "store" or "queue" */
	uint32_t running;              /* computations running now */
	uint32_t nids;                 /* ids[0..nids): the first of them */
	char ids[AU_BEAT_IDS][AU_ID_SIZE];
	uint64_t leased, completed, failed, retried, released, outages;
	uint32_t ttl_ms;               /* the entry lives this long after each beat */
	uint64_t beat_at_ms;           /* listed: the last beat, unix ms (server clock) */
	uint64_t age_ms;               /* listed: since the last beat (server clock) */
	/* The metrics middleware's figures (middleware/metrics.h), opaque to
	 * the queue: stored by beat and listed as given; 0 bytes when the
	 * worker has it off. */
	uint32_t metrics_len;
	unsigned char metrics[AU_BEAT_METRICS_MAX];
};

struct au_queue;

/* Called on the loop when computations may have arrived on the queue. */
typedef void (*au_queue_wake_fn)(void *arg);
/* Called on the loop when computation id of the watched queue is cancelled. */
typedef void (*au_queue_cancel_fn)(void *arg, const char *id);

/* What a backend can do beyond the contract (au_queue_ops.features). */
enum au_queue_feature {
	AU_QUEUE_WATCH = 1 << 0,    /* watch() wakes an idle worker when work arrives */
	AU_QUEUE_SHARED = 1 << 1,   /* held by a server: other processes and machines
				       share it, and it outlives the process */
};

/*
 * A token bucket (rate_take): it fills at rate_per_s tokens a second up to
 * burst, and each take empties it by one. A take may reserve its token up
 * to reserve_ms ahead of the time the bucket holds it.
 */
struct au_rate_limit {
	double rate_per_s;          /* > 0 */
	double burst;               /* >= 1: what a full bucket holds */
	uint32_t reserve_ms;        /* 0: a token now or none */
};
#define AU_KV_KEY_MAX 512
#define AU_KV_MAX (4u << 20)        /* a value, bytes */

/* A bucket's key: 1 to AU_RATE_KEY_MAX bytes of UTF-8, no control byte. */
#define AU_RATE_KEY_MAX 1024

struct au_queue_ops {
	const char *scheme;
	const char *alias;          /* a second scheme for the same backend, or NULL */
	unsigned features;          /* enum au_queue_feature bits */

	int (*open)(struct au_queue *q, const struct au_url *url);
	void (*close)(struct au_queue *q);

	/* Adds n computations (each c->queue names its queue); c->run_at_ms in
	 * the future makes it scheduled. All or nothing.
	 *
	 * Dependencies (flows). A computation with c->ndeps > 0 is WAITING
	 * (peek, stats) until each of c->deps has settled, then it becomes
	 * ready (or scheduled, by run_at) in its queue and that queue's
	 * watchers wake. A dependency settles when it leaves its queue for
	 * good: ack, bury (rescue's too), cancel, empty, drop. One the
	 * backend does not hold at push (finished, dead, unknown) has
	 * settled already: only the ones it holds waiting, ready, scheduled
	 * or leased are counted, atomically with the push. Dependencies may
	 * sit in other queues of the same backend; an earlier element of the
	 * same push counts as held. The backend resolves them itself, in the
	 * step that settles the dependency (a script, a statement): no
	 * poller. Whether a dependency completed is not its business: the
	 * worker reads the records. A pushed id the backend already holds
	 * adds nothing, deps included. */
	int (*push)(struct au_queue *q, const struct au_computation *cs, size_t n);

	/* Leases up to max ready computations of queue (due scheduled ones
	 * first become ready), ordered by priority (high first) then FIFO.
	 * Each lease runs out lease_ms from now unless extended. When none is
	 * ready, waits up to block_ms for one to arrive (no busy polling).
	 * *n gets the number leased into out[0..max). */
	int (*lease)(struct au_queue *q, const char *queue, size_t max, uint32_t lease_ms,
		     uint32_t block_ms, struct au_lease *out, size_t *n);

	/* Done: removes the computations. */
	int (*ack)(struct au_queue *q, const char *queue, const struct au_ref *refs,
		   size_t n, int *applied);
	/* Back to the queue after delay_ms[i] (0 = ready now); error[i] (may be
	 * NULL) is kept as the last error. The attempt counts. story NULL keeps
	 * whatever story each has; otherwise story[i] with len > 0 replaces the
	 * story of refs[i] (copied, at most AU_MAX_STORY: the wrapper checks),
	 * len 0 keeps it. Fenced like the rest: a stale token changes no story.
	 * The story goes with the computation (ack, cancel, empty, drop,
	 * purge, the dead set's bounds); bury, release and rescue keep it,
	 * requeue clears it. */
	int (*retry)(struct au_queue *q, const char *queue, const struct au_ref *refs,
		     size_t n, const uint64_t *delay_ms, const char *const *error,
		     const struct au_story *story, int *applied);
	/* Like retry, but the attempt does not count (graceful shutdown); the
	 * story stays as it was. */
	int (*release)(struct au_queue *q, const char *queue, const struct au_ref *refs,
		       size_t n, int *applied);
	/* To the dead letter set, with a reason each. */
	int (*bury)(struct au_queue *q, const char *queue, const struct au_ref *refs,
		    size_t n, const char *const *reason, int *applied);
	/* Pushes the lease deadline to now + lease_ms. */
	int (*extend)(struct au_queue *q, const char *queue, const struct au_ref *refs,
		      size_t n, uint32_t lease_ms, int *applied);
	/* Expired leases go back to ready, or to dead letter when their attempts
	 * reached max_attempts. At most max per call. Also, at most every
	 * AU_HOUSEKEEP_MS per handle and queue, trims the queue's dead
	 * letters to the URL's limits (oldest first; their data is deleted)
	 * and samples the acks for stats' per_minute. */
	int (*rescue)(struct au_queue *q, const char *queue, size_t max,
		      size_t *requeued, size_t *buried);
	/* Removes a ready or scheduled computation so it never runs. -1 with
	 * AU_ESTATE when it is leased, AU_ENOTFOUND when the queue has no
	 * such id waiting. When seen is not NULL, on 0 it gets what was
	 * removed and on AU_ESTATE what is leased (the body, attempts and
	 * story, read in the same atomic step); otherwise it stays zeroed. */
	int (*cancel)(struct au_queue *q, const char *queue, const char *id,
		      struct au_cancelled *seen);
	/* State of one computation; -1 with AU_ENOTFOUND if unknown. On 0,
	 * info->story is the computation's story or NULL (au_queued_release);
	 * on -1 it is NULL. */
	int (*peek)(struct au_queue *q, const char *queue, const char *id,
		    struct au_queued *info);
	int (*stats)(struct au_queue *q, const char *queue, struct au_queue_stats *st);
	/* Names of known queues (malloc'ed array of malloc'ed strings). */
	int (*queues)(struct au_queue *q, char ***names, size_t *n);

	/*
	 * Administration. Optional (NULL: the wrappers say AU_ESTATE "queue
	 * '...' cannot ..."); none of them is on the path of a computation.
	 */

	/* Dead letters of queue, newest first: with id NULL up to max of them
	 * into out[0..max), with an id that one (*n = 0 when it is not dead).
	 * Each out[i] owns its body and story (au_dead_release). */
	int (*dead)(struct au_queue *q, const char *queue, const char *id, size_t max,
		    struct au_dead *out, size_t *n);
	/* Dead letters back to ready, as if new: attempts 0, error cleared,
	 * at the end of their priority. applied[i] = 0 for an id that is not
	 * dead in queue (already requeued, purged, never dead): a leased
	 * computation is never touched, so fencing holds. */
	int (*requeue)(struct au_queue *q, const char *queue, const char *const *ids, size_t n,
		       int *applied);
	/* Deletes up to max dead letters buried at least older_ms ago (0: any),
	 * oldest first; *removed says how many. */
	int (*purge)(struct au_queue *q, const char *queue, uint64_t older_ms, size_t max,
		     size_t *removed);
	/* paused = 1: leases of queue take nothing (anything else goes on:
	 * running ones finish, pushes wait); 0 undoes it. Kept by the backend
	 * until changed, whoever asks. */
	int (*pause)(struct au_queue *q, const char *queue, int paused);
	/* Deletes up to max waiting (ready or scheduled) computations of
	 * queue, data and all; *removed says how many. Running and dead ones
	 * stay. No record is written: their ids become unknown. */
	int (*empty)(struct au_queue *q, const char *queue, size_t max, size_t *removed);
	/* Forgets queue: its name, pause and counters, and (force) whatever
	 * it still holds, leased ones included (their workers' writes then
	 * apply to nothing). Without force, -1 with AU_ESTATE when it holds
	 * any computation. */
	int (*drop)(struct au_queue *q, const char *queue, int force);
	/* The queue holding id (malloc'ed into *queue), in one look where the
	 * backend can; -1 with AU_ENOTFOUND when no queue has it. NULL: the
	 * wrapper peeks each known queue. */
	int (*locate)(struct au_queue *q, const char *id, char **queue);

	/* Calls fn(arg) on base when computations may have arrived in queue.
	 * One watch per queue handle. NULL when the backend cannot (no
	 * AU_QUEUE_WATCH: the worker then polls). */
	int (*watch)(struct au_queue *q, const char *queue, struct event_base *base,
		     au_queue_wake_fn fn, void *arg);
	void (*unwatch)(struct au_queue *q);
	/* A full worker pauses its watch (paused = 1) and resumes it once it
	 * has room again: a wake-up meant for one worker then goes to one
	 * that can start the work. NULL: the backend wakes every watcher.
	 * watch, unwatch and watch_pause run on the loop and touch only the
	 * watch's own state: the handle's other calls may run on another
	 * thread meanwhile. */
	void (*watch_pause)(struct au_queue *q, int paused);

	/* Optional: stores recs[0..n) and acks refs[0..n) in one transaction
	 * when the result store at store_url lives in the queue's own
	 * database; -1 with AU_ESTATE when it does not (the caller stores,
	 * then acks). A record is kept even when its ack is refused (first
	 * write wins, as when stored apart). */
	int (*ack_store)(struct au_queue *q, const char *queue, const char *store_url,
			 const struct au_ref *refs, const struct au_record *recs, size_t n,
			 int *applied);

	/*
	 * Optional: rate limits shared by every process that uses the server
	 * (middleware/ratelimit.c). rate_take takes one token of bucket key,
	 * atomically, on the server's clock; a bucket nobody took from yet is
	 * full, and one left idle until it is full again may vanish (it would
	 * read full). A token there now: *taken = 1, *wait_ms = 0. One due
	 * within lim->reserve_ms: it is taken ahead, *taken = 1 and *wait_ms
	 * says when it is due (the caller waits that long, then goes). Else
	 * nothing is taken: *taken = 0 and *wait_ms says how long until a take
	 * would succeed (always > 0). A take sent again after a lost
	 * connection may have taken a token the first time: the bucket then
	 * gives fewer, never more.
	 */
	int (*rate_take)(struct au_queue *q, const char *key, const struct au_rate_limit *lim,
			 uint64_t *wait_ms, int *taken);

	/* Optional, for a worker's start: looks for what the server behind
	 * the queue puts at risk (a Redis that keeps nothing across a
	 * restart) and logs a warning (au_log, AU_LOG_WARN) for each risk it
	 * finds. Returns how many it logged, or -1 with q->err when the
	 * server cannot be asked. */
	int (*check)(struct au_queue *q);

	/*
	 * Optional: the cancel of a computation that is leased. cancel_running
	 * tells every worker watching cancels of queue (Redis PUBLISH,
	 * PostgreSQL NOTIFY) that id is cancelled; a worker that holds it
	 * stops it. A hint, as wake-ups are: delivered to the watches up at
	 * the time, kept for none that starts later. The record the canceller
	 * stores first (first write wins) is what makes the outcome CANCELLED;
	 * the hint only saves the work.
	 * watch_cancels calls fn(arg, id) on base for each one heard, until
	 * unwatch_cancels; one per queue handle, on the loop, touching only its
	 * own state as the watch does.
	 */
	int (*cancel_running)(struct au_queue *q, const char *queue, const char *id);
	int (*watch_cancels)(struct au_queue *q, const char *queue, struct event_base *base,
			     au_queue_cancel_fn fn, void *arg);
	void (*unwatch_cancels)(struct au_queue *q);
	/*
	 * Optional: the worker registry. None is on the path of a computation;
	 * a worker beats every AU_BEAT_EVERY_MS.
	 * beat registers b (b->id) or refreshes its entry, which then lives
	 * b->ttl_ms (server clock) unless beaten again; *stop = 1 when a stop
	 * was asked for it (worker_stop) and 0 otherwise.
	 * workers lists the live entries into *out
	 * (malloc'ed, the caller frees it), *n of them; entries past their
	 * ttl are never listed, and the call may delete them.
	 * worker_stop asks the live worker worker_id to stop (its next beat
	 * hears it); -1 with AU_ENOTFOUND when no live entry has that id.
	 * worker_gone deletes the entry of worker_id (a clean exit); no entry
	 * is no error.
	 */
	/*
	 * Optional (flows): fan-out. Every computation waiting for id waits
	 * also for each of deps[0..n) that the backend holds now (as push
	 * counts them); a dependency it already waits for is not counted
	 * twice. The worker calls it while it holds id's lease, before it
	 * settles id. No computation waiting for id is no error.
	 */
	int (*adopt)(struct au_queue *q, const char *id, const char (*deps)[AU_ID_SIZE], size_t n);

	/*
	 * Optional: a small key-value space shared by every process that uses
	 * the server, for flows' descriptions, schedules and their ticks, and
	 * the ClickHouse migration lock. Keys are 1 to AU_KV_KEY_MAX bytes of
	 * [A-Za-z0-9_.:-] in namespace ns (1 to 32 bytes of [a-z_]); values
	 * up to AU_KV_MAX bytes, opaque. ttl_ms 0 keeps a value until deleted;
	 * otherwise it vanishes ttl_ms after its put (server clock).
	 * kv_put with nx = 1 writes only when the key is absent: *done = 1
	 * when it wrote, 0 when the key was there (one winner among racers).
	 * kv_get: -1 with AU_ENOTFOUND when absent; *val malloc'ed.
	 * kv_del deletes the key; with expect not NULL only while its value
	 * equals expect[0..expect_len) (a lock's holder lets go of it only if
	 * it still holds it). *done = 1 when it deleted.
	 * kv_keys lists the live keys of ns starting with prefix (malloc'ed
	 * array of malloc'ed strings), at most max (0: all).
	 */
	int (*kv_put)(struct au_queue *q, const char *ns, const char *key, const unsigned char *val,
		      size_t len, uint64_t ttl_ms, int nx, int *done);
	int (*kv_get)(struct au_queue *q, const char *ns, const char *key, unsigned char **val,
		      size_t *len);
	int (*kv_del)(struct au_queue *q, const char *ns, const char *key,
		      const unsigned char *expect, size_t expect_len, int *done);
	int (*kv_keys)(struct au_queue *q, const char *ns, const char *prefix, size_t max,
		       char ***keys, size_t *n);

	int (*beat)(struct au_queue *q, const struct au_worker_beat *b, int *stop);
	int (*workers)(struct au_queue *q, struct au_worker_beat **out, size_t *n);
	int (*worker_stop)(struct au_queue *q, const char *worker_id);
	int (*worker_gone)(struct au_queue *q, const char *worker_id);
};

struct au_queue {
	const struct au_queue_ops *ops;
	void *ctx;                  /* the backend's state */
	struct au_url url;
	struct au_err err;
};

/* Opens the backend named by the URL's scheme or alias
 * (backends/queue_registry.c). NULL only on OOM; check q->err.code. */
struct au_queue *au_queue_open(const char *url);
void au_queue_close(struct au_queue *q);
/* The table of backends, NULL-terminated. */
extern const struct au_queue_ops *const au_queue_backends[];
/* The backend whose scheme or alias is scheme, or NULL. */
const struct au_queue_ops *au_queue_backend(const char *scheme);

/*
 * Callers go through these, never through q->ops: they name the default
 * queue when queue is NULL or empty, refuse ids that are not ids before a
 * backend sees them, and stand in for the optional operations.
 */
static inline const char *au_queue_name(const char *queue)
{
	return queue && *queue ? queue : AU_DEFAULT_QUEUE;
}

static inline int au_queue_bad_id(struct au_queue *q, const char *id)
{
	char shown[AU_ID_SHOWN_SIZE];

	return au_seterr(&q->err, AU_EINVAL, "invalid computation id '%s'", au_id_shown(shown, id));
}

static inline int au_queue_push(struct au_queue *q, const struct au_computation *cs, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!au_id_valid(cs[i].id))
			return au_queue_bad_id(q, cs[i].id);
	return q->ops->push(q, cs, n);
}

static inline int au_queue_lease(struct au_queue *q, const char *queue, size_t max,
				 uint32_t lease_ms, uint32_t block_ms, struct au_lease *out,
				 size_t *n)
{
	*n = 0;
	return q->ops->lease(q, au_queue_name(queue), max, lease_ms, block_ms, out, n);
}

static inline int au_queue_ack(struct au_queue *q, const char *queue, const struct au_ref *refs,
			       size_t n, int *applied)
{
	return q->ops->ack(q, au_queue_name(queue), refs, n, applied);
}

/* -1 with AU_EINVAL, nothing applied, when a story is over AU_MAX_STORY. */
static inline int au_queue_retry(struct au_queue *q, const char *queue,
				 const struct au_ref *refs, size_t n, const uint64_t *delay_ms,
				 const char *const *error, const struct au_story *story,
				 int *applied)
{
	for (size_t i = 0; story && i < n; i++)
		if (story[i].len > AU_MAX_STORY) {
			char shown[AU_ID_SHOWN_SIZE];
			const char *id = refs[i].id;

			au_id_shown_n(shown, id, strnlen(id, AU_ID_SIZE));
			return au_seterr(&q->err, AU_EINVAL, "story of computation '%s' too large:"
					 " %zu bytes (limit %u)", shown, story[i].len, AU_MAX_STORY);
		}
	return q->ops->retry(q, au_queue_name(queue), refs, n, delay_ms, error, story, applied);
}

static inline int au_queue_release(struct au_queue *q, const char *queue,
				   const struct au_ref *refs, size_t n, int *applied)
{
	return q->ops->release(q, au_queue_name(queue), refs, n, applied);
}

static inline int au_queue_bury(struct au_queue *q, const char *queue, const struct au_ref *refs,
				size_t n, const char *const *reason, int *applied)
{
	return q->ops->bury(q, au_queue_name(queue), refs, n, reason, applied);
}

static inline int au_queue_extend(struct au_queue *q, const char *queue,
				  const struct au_ref *refs, size_t n, uint32_t lease_ms,
				  int *applied)
{
	return q->ops->extend(q, au_queue_name(queue), refs, n, lease_ms, applied);
}

static inline int au_queue_rescue(struct au_queue *q, const char *queue, size_t max,
				  size_t *requeued, size_t *buried)
{
	*requeued = *buried = 0;
	return q->ops->rescue(q, au_queue_name(queue), max, requeued, buried);
}

static inline int au_queue_cancel(struct au_queue *q, const char *queue, const char *id)
{
	if (!au_id_valid(id))
		return au_queue_bad_id(q, id);
	return q->ops->cancel(q, au_queue_name(queue), id, NULL);
}

/* Cancel, and what it saw in *seen (zeroed first; au_cancelled_release
 * after, whatever the outcome). */
static inline int au_queue_cancel_seen(struct au_queue *q, const char *queue, const char *id,
				       struct au_cancelled *seen)
{
	memset(seen, 0, sizeof(*seen));
	if (!au_id_valid(id))
		return au_queue_bad_id(q, id);
	return q->ops->cancel(q, au_queue_name(queue), id, seen);
}

static inline int au_queue_peek(struct au_queue *q, const char *queue, const char *id,
				struct au_queued *info)
{
	/* so that au_queued_release is right after a failure too */
	if (info) {
		info->story = NULL;
		info->story_len = 0;
	}
	if (!au_id_valid(id))
		return au_queue_bad_id(q, id);
	return q->ops->peek(q, au_queue_name(queue), id, info);
}

static inline int au_queue_stats(struct au_queue *q, const char *queue,
				 struct au_queue_stats *st)
{
	return q->ops->stats(q, au_queue_name(queue), st);
}

static inline int au_queue_list(struct au_queue *q, char ***names, size_t *n)
{
	*names = NULL;
	*n = 0;
	return q->ops->queues(q, names, n);
}

/* -1 with AU_ESTATE when the backend cannot watch (the caller polls). */
static inline int au_queue_watch(struct au_queue *q, const char *queue, struct event_base *base,
				 au_queue_wake_fn fn, void *arg)
{
	if (!q->ops->watch)
		return au_seterr(&q->err, AU_ESTATE, "queue '%s' cannot watch", q->url.text);
	return q->ops->watch(q, au_queue_name(queue), base, fn, arg);
}

static inline void au_queue_unwatch(struct au_queue *q)
{
	if (q->ops->unwatch)
		q->ops->unwatch(q);
}

static inline void au_queue_watch_pause(struct au_queue *q, int paused)
{
	if (q->ops->watch_pause)
		q->ops->watch_pause(q, paused);
}

static inline int au_queue_cannot(struct au_queue *q, const char *what)
{
	return au_seterr(&q->err, AU_ESTATE, "queue '%s' cannot %s", q->url.text, what);
}

static inline int au_queue_dead(struct au_queue *q, const char *queue, const char *id,
				size_t max, struct au_dead *out, size_t *n)
{
	*n = 0;
	if (id && !au_id_valid(id))
		return au_queue_bad_id(q, id);
	if (!q->ops->dead)
		return au_queue_cannot(q, "list dead letters");
	return q->ops->dead(q, au_queue_name(queue), id, max, out, n);
}

static inline int au_queue_requeue(struct au_queue *q, const char *queue,
				   const char *const *ids, size_t n, int *applied)
{
	for (size_t i = 0; i < n; i++)
		if (!au_id_valid(ids[i]))
			return au_queue_bad_id(q, ids[i]);
	if (!q->ops->requeue)
		return au_queue_cannot(q, "requeue dead letters");
	return q->ops->requeue(q, au_queue_name(queue), ids, n, applied);
}

/* Whole: calls purge until no more go (1000 a call). On -1, *removed
 * counts what the calls before the failing one removed; so for empty. */
static inline int au_queue_purge(struct au_queue *q, const char *queue, uint64_t older_ms,
				 size_t *removed)
{
	size_t one;

	*removed = 0;
	if (!q->ops->purge)
		return au_queue_cannot(q, "purge dead letters");
	do {
		one = 0;
		if (q->ops->purge(q, au_queue_name(queue), older_ms, 1000, &one) < 0)
			return -1;
		*removed += one;
	} while (one == 1000);
	return 0;
}

static inline int au_queue_pause(struct au_queue *q, const char *queue, int paused)
{
	if (!q->ops->pause)
		return au_queue_cannot(q, "pause");
	return q->ops->pause(q, au_queue_name(queue), paused);
}

/* Whole: calls empty until no more go (1000 a call). */
static inline int au_queue_empty(struct au_queue *q, const char *queue, size_t *removed)
{
	size_t one;

	*removed = 0;
	if (!q->ops->empty)
		return au_queue_cannot(q, "empty a queue");
	do {
		one = 0;
		if (q->ops->empty(q, au_queue_name(queue), 1000, &one) < 0)
			return -1;
		*removed += one;
	} while (one == 1000);
	return 0;
}

static inline int au_queue_drop(struct au_queue *q, const char *queue, int force)
{
	if (!q->ops->drop)
		return au_queue_cannot(q, "delete a queue");
	return q->ops->drop(q, au_queue_name(queue), force);
}

/* The queue holding id (*queue malloc'ed), looking at hint first when it
 * is not NULL; -1 with AU_ENOTFOUND when none has it (backends/
 * queue_registry.c). */
int au_queue_locate(struct au_queue *q, const char *id, const char *hint, char **queue);

/* -1 with AU_ESTATE when the backend cannot (the caller stores, then acks). */
/* -1 with AU_ESTATE when the backend has no cancel channel. */
static inline int au_queue_cancel_running(struct au_queue *q, const char *queue, const char *id)
{
	if (!au_id_valid(id))
		return au_queue_bad_id(q, id);
	if (!q->ops->cancel_running)
		return au_seterr(&q->err, AU_ESTATE, "'%s' cannot tell workers of a cancel",
				 q->url.text);
	return q->ops->cancel_running(q, au_queue_name(queue), id);
}

static inline int au_queue_watch_cancels(struct au_queue *q, const char *queue,
					 struct event_base *base, au_queue_cancel_fn fn, void *arg)
{
	if (!q->ops->watch_cancels)
		return au_seterr(&q->err, AU_ESTATE, "'%s' cannot tell workers of a cancel",
				 q->url.text);
	return q->ops->watch_cancels(q, au_queue_name(queue), base, fn, arg);
}

static inline void au_queue_unwatch_cancels(struct au_queue *q)
{
	if (q->ops->unwatch_cancels)
		q->ops->unwatch_cancels(q);
}

static inline int au_queue_ack_store(struct au_queue *q, const char *queue, const char *store_url,
				     const struct au_ref *refs, const struct au_record *recs,
				     size_t n, int *applied)
{
	if (!q->ops->ack_store)
		return au_seterr(&q->err, AU_ESTATE, "queue '%s' cannot store records",
				 q->url.text);
	return q->ops->ack_store(q, au_queue_name(queue), store_url, refs, recs, n, applied);
}

/*
 * The furthest a push's run_at and a retry's delay reach: a later run_at
 * (the end of year 9999) or a longer delay (100 years) is taken as this,
 * which every backend can store (PostgreSQL's interval arithmetic and
 * Redis' signed integers could not hold the whole of uint64_t).
 */
#define AU_QUEUE_MAX_RUN_AT_MS 253402300799999ULL
#define AU_QUEUE_MAX_DELAY_MS 3155760000000ULL

static inline uint64_t au_queue_run_at(uint64_t run_at_ms)
{
	return run_at_ms < AU_QUEUE_MAX_RUN_AT_MS ? run_at_ms : AU_QUEUE_MAX_RUN_AT_MS;
}

static inline uint64_t au_queue_delay(uint64_t delay_ms)
{
	return delay_ms < AU_QUEUE_MAX_DELAY_MS ? delay_ms : AU_QUEUE_MAX_DELAY_MS;
}

/* 0 when the backend has nothing to check. */
static inline int au_queue_check(struct au_queue *q)
{
	return q->ops->check ? q->ops->check(q) : 0;
}

/* rate_take, for middleware/ratelimit.c (backends/queue_registry.c): -1
 * with AU_EINVAL for a key or limits outside the contract, AU_ESTATE when
 * the backend keeps no buckets. */
int au_queue_rate_take(struct au_queue *q, const char *key, const struct au_rate_limit *lim,
		       uint64_t *wait_ms, int *taken);

/* adopt and the kv space (backends/queue_registry.c): -1 with AU_EINVAL
 * for an id, a namespace, a key or a value outside the contract, AU_ESTATE
 * when the backend has none. */
int au_queue_adopt(struct au_queue *q, const char *id, const char (*deps)[AU_ID_SIZE], size_t n);
int au_queue_kv_put(struct au_queue *q, const char *ns, const char *key, const unsigned char *val,
		    size_t len, uint64_t ttl_ms, int nx, int *done);
int au_queue_kv_get(struct au_queue *q, const char *ns, const char *key, unsigned char **val,
		    size_t *len);
int au_queue_kv_del(struct au_queue *q, const char *ns, const char *key,
		    const unsigned char *expect, size_t expect_len, int *done);
int au_queue_kv_keys(struct au_queue *q, const char *ns, const char *prefix, size_t max,
		     char ***keys, size_t *n);

/* The registry's wrappers: -1 with AU_ESTATE when the backend keeps none,
 * AU_EINVAL for an id that is empty, too long or has a control byte or a
 * space (no id becomes a key or a statement that was not meant). */
static inline int au_queue_bad_worker_id(struct au_queue *q, const char *id)
{
	size_t i, n = id ? strnlen(id, AU_WORKER_ID_SIZE) : 0;
	char shown[AU_ID_SHOWN_SIZE];

	for (i = 0; i < n; i++)
		if ((unsigned char)id[i] <= ' ' || id[i] == 0x7f)
			break;
	if (n && n < AU_WORKER_ID_SIZE && i == n)
		return 0;
	return au_seterr(&q->err, AU_EINVAL, "invalid worker id '%s'", au_id_shown(shown, id));
}

static inline int au_queue_no_registry(struct au_queue *q)
{
	return au_seterr(&q->err, AU_ESTATE, "queue '%s' keeps no worker registry", q->url.text);
}

static inline int au_queue_beat(struct au_queue *q, const struct au_worker_beat *b, int *stop)
{
	*stop = 0;
	if (!q->ops->beat)
		return au_queue_no_registry(q);
	if (au_queue_bad_worker_id(q, b->id) < 0)
		return -1;
	return q->ops->beat(q, b, stop);
}

static inline int au_queue_beat_cmp(const void *a, const void *b)
{
	const struct au_worker_beat *x = a, *y = b;

	if (x->started_ms != y->started_ms)
		return x->started_ms < y->started_ms ? -1 : 1;
	return strcmp(x->id, y->id);
}

/* Sorted by start, then id. */
static inline int au_queue_workers(struct au_queue *q, struct au_worker_beat **out, size_t *n)
{
	*out = NULL;
	*n = 0;
	if (!q->ops->workers)
		return au_queue_no_registry(q);
	if (q->ops->workers(q, out, n) < 0)
		return -1;
	if (*n > 1)
		qsort(*out, *n, sizeof(**out), au_queue_beat_cmp);
	return 0;
}

static inline int au_queue_worker_stop(struct au_queue *q, const char *worker_id)
{
	if (!q->ops->worker_stop)
		return au_queue_no_registry(q);
	if (au_queue_bad_worker_id(q, worker_id) < 0)
		return -1;
	return q->ops->worker_stop(q, worker_id);
}

static inline int au_queue_worker_gone(struct au_queue *q, const char *worker_id)
{
	if (!q->ops->worker_gone)
		return au_queue_no_registry(q);
	if (au_queue_bad_worker_id(q, worker_id) < 0)
		return -1;
	return q->ops->worker_gone(q, worker_id);
}

#endif
