/*
 * au.h - the whole public C API of au.
 *
 * au runs computations on ClickHouse for many client programs at once. A
 * client enqueues a computation (a task name plus msgpack-encoded arguments)
 * onto a queue (redis://, postgres://, memory://); a worker leases it, runs
 * it through a middleware chain against ClickHouse and writes the outcome to
 * a result store (file://, redis://, postgres://, memory://) whose records
 * expire after a TTL. The client keeps a handle and polls or waits on it.
 *
 * Conventions: functions return 0 on success and -1 on error; objects carry
 * the last error as `struct au_err` (code + lowercase message naming the
 * subject). Constructors return NULL only when memory runs out. `_free(NULL)`
 * does nothing.
 */
#ifndef AU_H
#define AU_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#define AU_VERSION "0.1.0"
#define AU_WIRE_VERSION 1

#define AU_ID_SIZE 33     /* 32 lowercase hex digits + NUL */
#define AU_QUERY_ID_SIZE 96   /* a ClickHouse query_id of au's: "[<trace id>:]<id>-<attempt>" + NUL */
#define AU_TOKEN_SIZE 40  /* lease token: "<attempt>-<16 hex>" + NUL */
#define AU_ERRSTR_SIZE 512  /* room for a message that names two URLs and a hint */

#define AU_PRIORITY_MIN (-100)
#define AU_PRIORITY_MAX 100

/* Defaults, where a caller, a message or a URL leaves a value out. */
#define AU_DEFAULT_QUEUE "default"                      /* queue name */
#define AU_DEFAULT_QUEUE_URL "redis://127.0.0.1:6379"   /* AU_QUEUE */
#define AU_DEFAULT_STORE_URL "file:///tmp/au-results"   /* AU_STORE */
#define AU_DEFAULT_CLICKHOUSE_URL "http://127.0.0.1:8123/default" /* AU_CLICKHOUSE */
#define AU_DEFAULT_TTL_S 86400u          /* result TTL: one day */
#define AU_TTL_NEVER UINT32_MAX          /* au_enqueue_opts.ttl_s: keep the result until deleted */
#define AU_DEFAULT_MAX_ATTEMPTS 3u
#define AU_DEFAULT_LEASE_MS 30000u       /* a lease runs out unless extended */
#define AU_HEARTBEAT_DIVISOR 3u          /* leases are extended every lease_ms / 3 */
#define AU_DEFAULT_GRACE_MS 10000u       /* on SIGTERM, for work in flight */
#define AU_DEFAULT_CONCURRENCY 16u
#define AU_DEFAULT_BATCH 64u
#define AU_DEFAULT_RETRY_BASE_MS 1000u
#define AU_DEFAULT_RETRY_MAX_MS 300000u
#define AU_DEFAULT_POLL_MS 1000u         /* fallback poll when a wake-up is lost */

/* Limits applied to every computation read from a queue or built by a client. */
#define AU_MAX_MESSAGE (1u << 20)   /* encoded computation, bytes */
#define AU_MAX_RESULT (16u << 20)   /* encoded result record, bytes */
#define AU_MAX_DEPTH 32             /* msgpack nesting */
#define AU_MAX_HEADERS 32

/* Error codes carried in struct au_err.code. */
enum au_errcode {
	AU_OK = 0,
	AU_ENOMEM,     /* out of memory */
	AU_EINVAL,     /* bad argument, bad URL, bad JSON */
	AU_ECONN,      /* a server could not be reached or dropped the connection */
	AU_EPROTO,     /* malformed computation, record or reply */
	AU_ETOOBIG,    /* payload over a limit */
	AU_ENOTFOUND,  /* no such computation, record or queue */
	AU_EEXPIRED,   /* the record existed and its TTL ran out */
	AU_ETIMEDOUT,  /* a wait or a query ran out of time */
	AU_ESTATE,     /* operation not allowed in the current state */
	AU_ESTALE,     /* lease token no longer current (fencing) */
	AU_ENOTASK,    /* unknown task */
	AU_ECLICKHOUSE,/* ClickHouse answered with an error */
	AU_EIO,        /* local I/O error (file store, ...) */
	AU_EREFUSED    /* a middleware refused it (before_enqueue) */
};

struct au_err {
	int code;                     /* enum au_errcode */
	char str[AU_ERRSTR_SIZE];     /* lowercase, names the subject */
};

/* Computation statuses. AU_COMPLETED, AU_FAILED and AU_CANCELLED are
 * terminal (au_status_terminal); AU_UNKNOWN means neither the queue nor the
 * store knows the id, which is no outcome. */
enum au_status {
	AU_PENDING = 0,
	AU_SCHEDULED,   /* waiting for run_at */
	AU_RUNNING,
	AU_RETRYING,    /* failed an attempt, waiting for the next one */
	AU_COMPLETED,
	AU_FAILED,
	AU_CANCELLED,
	AU_WAITING,     /* waiting for its dependencies (a flow's) */
	AU_UNKNOWN
};

const char *au_status_name(enum au_status st);   /* "pending", ... */
int au_status_parse(const char *name, enum au_status *out);
static inline int au_status_terminal(enum au_status st)
{
	return st == AU_COMPLETED || st == AU_FAILED || st == AU_CANCELLED;
}

struct au_header {
	char *key;
	char *value;
};

/*
 * A computation as it travels (docs/wire-format.md). Strings and buffers
 * belong to the struct and are freed by au_computation_release().
 */
struct au_computation {
	char id[AU_ID_SIZE];
	char *task;
	unsigned char *args;      /* one msgpack value (usually a map) */
	size_t args_len;
	char *queue;
	int priority;             /* AU_PRIORITY_MIN..MAX, higher runs first */
	uint64_t run_at_ms;       /* unix ms; 0 or past = now */
	uint32_t max_attempts;    /* >= 1 */
	uint32_t timeout_ms;      /* 0 = no limit */
	int fail_on_timeout;      /* 1: an attempt that times out fails the computation;
				     0 (default): it is retried while attempts remain */
	uint32_t ttl_s;           /* result TTL in seconds, counted from the terminal
				     write; 0 = never expires */
	uint64_t created_at_ms;
	struct au_header *headers;
	size_t nheaders;
	uint32_t attempts;        /* not on the wire: set by the queue on lease */
	/* Flows (docs/wire-format.md "Flows"): the flow it belongs to (an id)
	 * or NULL, and the computations it waits for: it becomes ready only
	 * once each of deps[0..ndeps) has left its queue for good (completed,
	 * failed, cancelled, dead-lettered, deleted); what a dependency that
	 * did not complete does to it is dep_policy's. */
	char *flow;
	char (*deps)[AU_ID_SIZE];
	size_t ndeps;
	int dep_policy;           /* enum au_dep_policy */
};

/* What a dependency that did not complete (failed, cancelled, dead, or
 * whose record is gone) does to the computations waiting for it. */
enum au_dep_policy {
	AU_DEP_FAIL = 0,          /* they fail, unrun: "dependency '<id>' failed: ..." */
	AU_DEP_CANCEL,            /* they are cancelled, unrun */
	AU_DEP_IGNORE,            /* they run; its {"$ref"} reads nil */
	AU_DEP_CONTINUE           /* they run; its {"$ref"} reads {"status", "error"} */
};
#define AU_MAX_DEPS 65536
const char *au_dep_policy_name(int policy);       /* "fail", ... */
int au_dep_policy_parse(const char *name, int *policy);

void au_computation_init(struct au_computation *c);
void au_computation_release(struct au_computation *c);

/*
 * A result record, as the store keeps it. `result` is one msgpack value
 * (COMPLETED), `error` a message (FAILED, CANCELLED).
 */
struct au_record {
	char id[AU_ID_SIZE];
	enum au_status status;
	unsigned char *result;
	size_t result_len;
	char *error;
	char *task;
	char *queue;
	char *worker;
	uint32_t attempts;
	uint32_t ttl_s;           /* used by put: expiry = write time + ttl_s; 0 = never */
	uint64_t created_at_ms;
	uint64_t started_at_ms;
	uint64_t finished_at_ms;
	uint64_t expires_at_ms;   /* set by the store */
	/* Each attempt, oldest first: a msgpack array of maps (attempt,
	 * worker, started_at, finished_at, outcome, error, ch_code), as
	 * docs/wire-format.md "History" says; NULL for none. */
	unsigned char *history;
	size_t history_len;
};

void au_record_init(struct au_record *r);
void au_record_release(struct au_record *r);

/* Fresh id, as 32 lowercase hex digits: 48 bits of unix milliseconds,
 * then 80 random bits (the shape of a UUIDv7). */
void au_id_new(char out[AU_ID_SIZE]);
/* 1 if s is 32 lowercase hex digits, else 0. */
int au_id_valid(const char *s);

/* JSON <-> msgpack, the human mirror of the wire format (docs/wire-format.md,
 * "The JSON mirror"). The returned buffer is malloc'ed; the caller frees it.
 * An integer literal up to 18446744073709551615 becomes a msgpack integer;
 * invalid JSON is AU_EINVAL with its line and column. */
int au_json_to_msgpack(const char *json, unsigned char **out, size_t *len,
		       struct au_err *err);
/* Returns a malloc'ed JSON text or NULL (err set). Every well-formed msgpack
 * value has one (integers above INT64_MAX as decimal strings, NaN as "nan",
 * bin that is not UTF-8 as {"bin": base64}, ext as {"ext": type, "data":
 * base64}, ...): NULL means malformed msgpack or out of memory. */
char *au_msgpack_to_json(const unsigned char *buf, size_t len, struct au_err *err);

/* ------------------------------------------------------------------ */
/* Configuration                                                        */

struct au_config {
	const char *queue_url;       /* AU_QUEUE, default AU_DEFAULT_QUEUE_URL */
	const char *store_url;       /* AU_STORE, default AU_DEFAULT_STORE_URL */
	const char *clickhouse_url;  /* AU_CLICKHOUSE, default AU_DEFAULT_CLICKHOUSE_URL */
};

/* Fills unset (NULL) fields from the environment, then from the defaults.
 * AU_QUEUE or AU_STORE set but empty gives an empty URL, which opening the
 * queue or the store refuses (AU_EINVAL "the queue url is empty ...").
 * The strings stay owned by where they came from: the caller's own, the
 * process environment (valid until the variable changes) or static
 * defaults. Nothing is allocated and nothing needs freeing. */
void au_config_from_env(struct au_config *cfg);

/* ------------------------------------------------------------------ */
/* Client (producer) and handles                                        */

struct au_client;
struct au_handle;

/* Options for one enqueue. Zero-initialise, then set what you need. */
struct au_enqueue_opts {
	const char *queue;        /* default AU_DEFAULT_QUEUE; [A-Za-z0-9_.:-], up to 100 bytes */
	int priority;
	uint64_t delay_ms;        /* run no sooner than now + delay */
	uint32_t max_attempts;    /* default AU_DEFAULT_MAX_ATTEMPTS */
	uint32_t timeout_ms;      /* default 0 = none */
	int fail_on_timeout;      /* 1: a timed-out attempt fails it; 0: retried */
	uint32_t ttl_s;           /* result TTL; 0 = AU_DEFAULT_TTL_S, AU_TTL_NEVER
				     = kept until deleted */
	const struct au_header *headers;
	size_t nheaders;
	/* Idempotency key (1 to AU_MAX_KEY bytes), one computation per key
	 * and queue: its id is made from the two (au_id_from_key in
	 * docs/wire-format.md). While a computation of the key is in the
	 * queue (waiting, running, or dead until requeued or purged), and
	 * while its record lasts (its ttl_s), enqueueing the key again adds
	 * nothing and returns a handle to that one: atomic, as the queue
	 * leaves a known id alone. Once the record has expired the key is
	 * free again. au_enqueue only (au_enqueue_batch refuses it). */
	const char *key;
	/* Computations it waits for (docs/flows.md): it runs once each has
	 * left its queue, as dep_policy says (enum au_dep_policy). */
	const char *const *depends_on;
	size_t ndepends_on;
	int dep_policy;
};
#define AU_MAX_KEY 1024

/* Connects to the queue and the store named by cfg. NULL only on OOM; check
 * au_client_err() for a connection error. */
struct au_middleware_ops;
struct au_client *au_client_new(const struct au_config *cfg);
void au_client_free(struct au_client *cl);
/* Adds a middleware to the client: its before_enqueue runs for each
 * computation au_enqueue and au_enqueue_batch make, in the order added.
 * The client owns ctx from then on (ops->free(ctx) in au_client_free, or
 * at once when this fails). */
int au_client_use(struct au_client *cl, const struct au_middleware_ops *ops, void *ctx);
const struct au_err *au_client_err(const struct au_client *cl);

/* Enqueue one computation: task name, msgpack-encoded arguments. On success
 * *out is a new handle (free with au_handle_free). */
int au_enqueue(struct au_client *cl, const char *task,
	       const unsigned char *args, size_t args_len,
	       const struct au_enqueue_opts *opts, struct au_handle **out);

/* Enqueue n computations sharing opts in one round trip. out[] receives n
 * handles. Either all are enqueued or none (-1). */
int au_enqueue_batch(struct au_client *cl, const char *task,
		     const unsigned char *const *args, const size_t *args_len,
		     size_t n, const struct au_enqueue_opts *opts,
		     struct au_handle **out);

/* A handle for an existing id (e.g. from the CLI). queue may be NULL
 * (AU_DEFAULT_QUEUE). A handle borrows its client: free every handle before
 * the client, and use a handle only from the thread that uses its client. */
struct au_handle *au_handle_new(struct au_client *cl, const char *id, const char *queue);
void au_handle_free(struct au_handle *h);
const char *au_handle_id(const struct au_handle *h);
const struct au_err *au_handle_err(const struct au_handle *h);

/* Current status (AU_UNKNOWN when neither queue nor store know the id;
 * the handle's err then says unknown or expired). */
int au_handle_status(struct au_handle *h, enum au_status *out);
/* Waits up to timeout_ms (-1 = forever) for a terminal status; fills rec
 * (release with au_record_release). -1 with AU_ETIMEDOUT on timeout. */
int au_handle_wait(struct au_handle *h, int timeout_ms, struct au_record *rec);
/* The stored record, if terminal. */
int au_handle_result(struct au_handle *h, struct au_record *rec);
/* What is known of the computation now, as a record (`au status --json`):
 * a finished one's record as stored; for one that waits or runs, its
 * status, queue, attempts so far, last error and history (docs/wire-format.md,
 * "History") as the queue tells them. rec->status AU_UNKNOWN when neither
 * the queue nor the store knows it (au_handle_err says why). */
int au_handle_inspect(struct au_handle *h, struct au_record *rec);
/* Cancels a pending or scheduled computation: it will never run. A running
 * one gives AU_ESTATE, a finished one AU_ESTATE. */
int au_handle_cancel(struct au_handle *h);

/* ------------------------------------------------------------------ */
/* Flows (docs/flows.md)                                                */

/*
 * A flow: computations named by local names that wait for one another,
 * built in memory and submitted in one call. Args may refer to other
 * nodes by name, {"$ref":"NODE"} or {"$table":"NODE"} anywhere in them;
 * submit rewrites the name to that node's id, and a node referred to
 * that is not among the deps becomes one.
 */
struct au_flow;
struct au_flow *au_flow_new(const char *name);     /* NULL on OOM */
void au_flow_free(struct au_flow *f);
const struct au_err *au_flow_err(const struct au_flow *f);
/* Adds node (a name unique in the flow) of task with args (msgpack, may
 * be NULL for {}), eo (queue, priority, max_attempts, timeout_ms; may be
 * NULL) and the names of the nodes it waits for. Copies everything. */
int au_flow_add(struct au_flow *f, const char *node, const char *task,
		const unsigned char *args, size_t args_len, const struct au_enqueue_opts *eo,
		const char *const *deps, size_t ndeps);
void au_flow_set_policy(struct au_flow *f, int policy);   /* enum au_dep_policy */
void au_flow_set_ttl(struct au_flow *f, uint32_t ttl_s);  /* each node's result ttl */
/* Gives each node an id, checks the DAG (unknown deps, cycles: "flow 'x':
 * cycle b -> c -> b"), stores the description in the queue's kv (ns
 * "flow", key the flow id), then pushes every node in topological order in
 * one push. -1 with au_flow_err set; nothing pushed. */
int au_flow_submit(struct au_client *cl, struct au_flow *f, char flow_id[AU_ID_SIZE]);
/* The id of node after submit, or NULL. */
const char *au_flow_node_id(const struct au_flow *f, const char *node);
/* The flow's status from its nodes': pending, running, completed, failed,
 * cancelled (AU_UNKNOWN with err when no description is stored). */
int au_flow_status(struct au_client *cl, const char *flow_id, enum au_status *out,
		   struct au_err *err);

/* ------------------------------------------------------------------ */
/* Tasks                                                                */

struct au_task_ctx;
struct au_clickhouse;
struct event_base;

/*
 * A task runs on the worker's event loop and must not block: it finishes by
 * calling au_task_complete() or au_task_fail() exactly once, now or later
 * (e.g. from a ClickHouse callback). Arguments are c->args (msgpack).
 */
typedef void (*au_task_fn)(struct au_task_ctx *ctx, const struct au_computation *c,
			   void *arg);

/*
 * A table of tasks by name. A worker always knows the built-in tasks (au.noop,
 * au.echo, au.sleep, au.fail, ch.query, ch.exec, ch.insert); the registry
 * given to au_worker_new adds yours, and a task added under a built-in's
 * name takes its place. au_registry_add copies name; arg stays the caller's
 * and is passed to fn on every call. Adding a name again replaces it.
 */
struct au_registry;
struct au_registry *au_registry_new(void);     /* empty; NULL on OOM */
void au_registry_free(struct au_registry *reg);
int au_registry_add(struct au_registry *reg, const char *name, au_task_fn fn, void *arg);

/* result: one msgpack value, copied. */
void au_task_complete(struct au_task_ctx *ctx, const unsigned char *result, size_t len);
/*
 * How a task failed, au_task_fail's kind. The computation's own errors
 * count against its attempts; an outage does not: the attempt goes back
 * to the queue unharmed and the worker stops leasing until the server is
 * back (docs/architecture.md, "An outage is not the computation's fault").
 */
enum au_fail_kind {
	AU_FAIL_FOR_GOOD = 0,   /* the computation's, for good: no retry */
	AU_FAIL_RETRY = 1,      /* the computation's, may pass again: retried while attempts last */
	AU_FAIL_OUTAGE = 2,     /* a server the task needs is down, overloaded or refuses
				   the worker's credentials: the attempt does not count */
};
/* kind: enum au_fail_kind (0 and 1 keep their old meaning of retryable). */
void au_task_fail(struct au_task_ctx *ctx, int kind, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
struct au_clickhouse *au_task_clickhouse(struct au_task_ctx *ctx);
struct event_base *au_task_base(struct au_task_ctx *ctx);
/* "[<trace id>:]<id>-<attempt>": the ClickHouse query_id of this attempt (the
 * trace id of its traceparent header first, when it has a valid one). */
const char *au_task_query_id(struct au_task_ctx *ctx);
/*
 * Registers fn(arg), called if the worker abandons the attempt before the
 * task finished (timeout, shutdown): the task must then release what it
 * holds and never call au_task_complete/au_task_fail for this ctx. A task
 * that registers nothing is waited for: its late completion is ignored.
 */
void au_task_on_cancel(struct au_task_ctx *ctx, void (*fn)(void *arg), void *arg);

/* ------------------------------------------------------------------ */
/* Middleware                                                           */

/*
 * A middleware is one `const struct au_middleware_ops` plus a context of
 * its own, registered in order on a worker (au_worker_use) or a client
 * (au_client_use). before_enqueue and before run in the order registered;
 * after, on_error, on_retry and on_dead in reverse (the first registered
 * wraps all the others, as an onion).
 *
 * Every hook returns AU_HOOK_OK, or AU_HOOK_ERROR with a message in
 * errbuf when it could not do its work: the chain logs
 * "middleware 'NAME': <hook>: <message>". Whether that fails the
 * computation is the middleware's declared choice (AU_MW_FAIL_CLOSED): a
 * failing before_enqueue then fails the enqueue, a failing before fails
 * the attempt for good; otherwise the chain goes on as if the hook had
 * returned AU_HOOK_OK. The hooks after the outcome (after, on_error,
 * on_retry, on_dead) cannot change it: their errors are logged only.
 *
 * A hook may also decide, not fail:
 *   AU_HOOK_REFUSE (before_enqueue): the enqueue fails with errbuf
 *     (code AU_EREFUSED); (before): the computation is dead-lettered with
 *     errbuf as its reason, never run (a forged signature).
 *   AU_HOOK_DELAY (before): not now: the computation goes back to its
 *     queue for run->delay_ms without spending an attempt (a rate limit).
 *   AU_HOOK_PENDING (before): the hook answers later, on the worker's
 *     loop, with au_run_resume(run, rc, delay_ms, message); `run` stays
 *     valid until then. The attempt holds its slot meanwhile, and its
 *     timeout does not run yet.
 *
 * Hooks run on the worker's loop (before_enqueue: in the caller's
 * thread) and must not block it: a middleware that needs I/O does it on
 * the loop (au_run_base) or on a thread of its own, and answers with
 * AU_HOOK_PENDING.
 */
enum au_hook_rc {
	AU_HOOK_OK = 0,
	AU_HOOK_ERROR = -1,
	AU_HOOK_REFUSE = 1,
	AU_HOOK_DELAY = 2,
	AU_HOOK_PENDING = 3,
};

/* au_middleware_ops.flags */
#define AU_MW_FAIL_CLOSED 0x1   /* a hook error fails the computation (or the enqueue) */

/* What a middleware sees of one attempt. */
struct au_run {
	const struct au_computation *c;
	const char *worker;          /* "host:pid" */
	uint64_t started_at_us;      /* monotonic */
	uint64_t finished_at_us;
	enum au_status status;       /* AU_RUNNING in before; then AU_COMPLETED,
					AU_FAILED, AU_RETRYING or AU_CANCELLED */
	const unsigned char *result; /* after: msgpack value */
	size_t result_len;
	const char *error;           /* on_error, on_retry, on_dead: the message */
	const char *queue;           /* the queue it was leased from */
	uint32_t attempt;            /* this attempt, 1 for the first */
	uint64_t queued_ms;          /* from enqueue (or the time it was due) to this start */
	uint64_t retry_in_ms;        /* on_error with AU_RETRYING, on_retry: the delay */
	int dead;                    /* on_error, on_dead: the computation goes to the dead
					letter set (retries spent, rejected) */
	int ch_code;                 /* the ClickHouse error code of the error, 0 if none */
	const char *query_id;        /* the ClickHouse query_id of this attempt */
	uint64_t ch_read_rows;       /* what the attempt's ClickHouse queries read, where */
	uint64_t ch_read_bytes;      /* the server says (0 if it does not) */
	uint64_t delay_ms;           /* before: with AU_HOOK_DELAY, how long to wait */
	void *worker_ctx;            /* the worker's: do not touch */
};

/* What before_enqueue sees of one computation, before it is encoded.
 * The hook may add or replace headers (au_computation_set_header). */
struct au_enqueue_ctx {
	struct au_computation *c;
	const char *queue;
};

struct au_middleware_ops {
	const char *name;
	unsigned flags;              /* AU_MW_FAIL_CLOSED or 0 */
	/* client side, in au_enqueue / au_enqueue_batch, once per computation */
	int (*before_enqueue)(void *ctx, struct au_enqueue_ctx *e, char *errbuf, size_t errlen);
	/* worker side */
	int (*before)(void *ctx, struct au_run *run, char *errbuf, size_t errlen);
	int (*after)(void *ctx, struct au_run *run, char *errbuf, size_t errlen);   /* completed */
	/* failed, retrying or cancelled; run->retry_in_ms and run->dead say what follows */
	int (*on_error)(void *ctx, struct au_run *run, char *errbuf, size_t errlen);
	/* after on_error, when the computation will run again */
	int (*on_retry)(void *ctx, struct au_run *run, char *errbuf, size_t errlen);
	/* after on_error, when it goes to the dead letter set */
	int (*on_dead)(void *ctx, struct au_run *run, char *errbuf, size_t errlen);
	void (*free)(void *ctx);
};

/* The answer of a before hook that returned AU_HOOK_PENDING: rc is
 * AU_HOOK_OK, AU_HOOK_ERROR, AU_HOOK_REFUSE or AU_HOOK_DELAY (with
 * delay_ms), message the error or reason (may be NULL). Call it on the
 * worker's loop, once. */
void au_run_resume(struct au_run *run, int rc, uint64_t delay_ms, const char *message);
/* The worker's loop, for a hook that works on it. */
struct event_base *au_run_base(const struct au_run *run);
/* Sets (or replaces) a header of c; 0, or -1 when out of memory or over
 * the limits of docs/wire-format.md (32 headers, 1024 bytes each). */
int au_computation_set_header(struct au_computation *c, const char *key, const char *value);
/* The value of header key, or NULL. */
const char *au_computation_header(const struct au_computation *c, const char *key);

/* The built-in logging middleware: one line per event (enqueued, started,
 * finished, failed, retried, dead, cancelled) to stderr, with an RFC 3339
 * timestamp; au_logging_new picks the format. */
extern const struct au_middleware_ops au_logging_middleware;
enum au_log_format { AU_LOG_TEXT = 0, AU_LOG_JSON = 1 };
/* A context for au_logging_middleware writing to out (NULL: stderr) in
 * format; NULL when out of memory. The chain frees it. */
void *au_logging_new(FILE *out, enum au_log_format format);
/* The built-in tracing middleware (ctx NULL): a client's computations
 * carry a W3C traceparent header, the caller's if valid, else a new one;
 * workers put its trace id first in the ClickHouse query_id. */
extern const struct au_middleware_ops au_tracing_middleware;

/* The built-in signing middleware (docs/wire-format.md, "Signing"), fail
 * closed: before_enqueue signs the computation with the first key (HMAC-
 * SHA256, the au-signature header); before refuses (AU_HOOK_REFUSE: dead-
 * lettered, never run) one that no key of the list signed, with the reason
 * "bad signature: unsigned", "... unknown key <id>", "... does not match
 * any key", .... au_client_new and au_worker_new add it by themselves when
 * AU_SIGNING_KEY is set: a client's signs after its other middlewares, a
 * worker's checks before them. */
extern const struct au_middleware_ops au_signing_middleware;
/* A context for au_signing_middleware: keys is a comma-separated list of
 * keys of at least 16 bytes each (spaces around each trimmed); the first
 * signs, every one verifies (rotation). NULL with err set when the list
 * is bad (a key named by its position, never shown) or memory runs out.
 * The chain frees it. */
void *au_signing_new(const char *keys, struct au_err *err);

/*
 * The built-in rate limit middleware: a token bucket per task, shared by
 * every worker of the fleet through the queue's server (Redis, PostgreSQL;
 * memory:// within one process). A computation over its task's limit is
 * delayed, not failed: it waits, without a slot and without spending an
 * attempt, until its token is due. Tasks the spec does not name pass at
 * once. docs/cli.md ("Rate limits") has the whole spec:
 *   TASK=N/s, TASK=N/m, TASK=N/h       N a second, a minute, an hour
 *   TASK=N/s:burst=B                   up to B at once after a pause (default 1)
 *   TASK[ARG]=N/s                      a bucket per value of argument ARG
 * several separated by commas: "ch.query=200/s,ch.insert[table]=5/s".
 * When the server does not answer, computations of limited tasks wait
 * and ask again; none fails for it.
 */
extern const struct au_middleware_ops au_ratelimit_middleware;
/* A context for au_ratelimit_middleware: the limits of spec, kept on the
 * server of queue_url (NULL: AU_QUEUE, then AU_DEFAULT_QUEUE_URL), which it
 * connects to on its first take, with a connection and a thread of its
 * own. NULL with err set for a bad spec (AU_EINVAL: "bad rate limit
 * 'ch.query=fast': expected TASK=N/s") or when out of memory. The chain
 * frees it. */
void *au_ratelimit_new(const char *spec, const char *queue_url, struct au_err *err);

/* ------------------------------------------------------------------ */
/* Plugins                                                              */

/*
 * A plugin is a shared library (cc -shared -fPIC) of tasks and middleware
 * that a worker opens with dlopen: `au worker --plugin PATH` (repeatable,
 * or AU_PLUGINS=a.so,b.so), au_worker_opts.plugins with au_worker_run, or
 * au_worker_load_plugin. A PATH with a '/' is opened as it is, a bare name
 * is searched as dlopen(3) does. It exports two symbols:
 *
 *   AU_PLUGIN_DECLARE;                          the ABI it was built for
 *   int au_plugin_init(struct au_plugin *p) { ... add tasks and middleware ... }
 *
 * The loader reads au_plugin_abi first: a library without it, or built
 * for another AU_PLUGIN_ABI, is refused before any of its code is called
 * ("unable to load plugin './x.so': built for plugin ABI 3, this au has
 * 1"); so is one that dlopen cannot open or that has no au_plugin_init
 * (the message names the path and says what dlerror(3) said).
 *
 * au_plugin_init runs on the thread that loads the plugin, before the
 * worker starts, once for every worker that loads it, and `au worker`
 * runs it once more to check and list the plugin before it starts (and
 * forks) its workers: keep state in the contexts it registers, not in
 * globals, and start no thread and open no connection there (do that
 * lazily, on the loop). It returns 0, or -1 to refuse to load, with a
 * message set by au_plugin_error. The library is never unloaded while
 * the process lives, so its code, its ops tables and its static data stay
 * valid.
 *
 * A plugin does not link libau: it calls the au_* functions of the process
 * that loads it (`au` exports them; a program linked with libau.a needs
 * -rdynamic for that, one linked with libau.so has them). The ABI number
 * covers this header; a plugin that includes au's private headers (as
 * examples/plugin.c does for the ClickHouse client, clickhouse/clickhouse.h)
 * must be rebuilt with each au.
 *
 * Its tasks run on the worker's loop as every task does (the Tasks
 * section): a task with blocking work hands it to au_task_offload.
 */
#define AU_PLUGIN_ABI 1u

struct au_plugin;   /* one load of a plugin into one worker; valid during au_plugin_init */

/* What a plugin defines (the loader finds them by name). */
extern const unsigned au_plugin_abi;
int au_plugin_init(struct au_plugin *p);
#define AU_PLUGIN_DECLARE const unsigned au_plugin_abi = AU_PLUGIN_ABI

/* Adds task name (copied) to the worker, as au_registry_add does: fn(ctx,
 * c, arg) for each computation of it. arg stays the plugin's and is never
 * freed by au (state to free with the worker belongs in a middleware's
 * ctx, which the worker frees after its last task ran). A plugin's task
 * takes the place of a built-in of that name; one of a later plugin
 * replaces it (with a warning); the registry given to au_worker_new comes
 * before both. 0, or -1 when out of memory. */
int au_plugin_add_task(struct au_plugin *p, const char *name, au_task_fn fn, void *arg);
/* Adds a middleware at the end of the worker's chain, as au_worker_use
 * does: the worker owns ctx from then on (ops->free(ctx) in
 * au_worker_free, or at once when this fails, or when the load is only a
 * check). ops must stay valid (a static table of the plugin). */
int au_plugin_add_middleware(struct au_plugin *p, const struct au_middleware_ops *ops, void *ctx);
/* The message a failing au_plugin_init gives; returns -1, for
 * `return au_plugin_error(p, "...")`. */
int au_plugin_error(struct au_plugin *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The path the plugin was loaded from, as given. */
const char *au_plugin_path(const struct au_plugin *p);

/*
 * Blocking work off the loop. work(arg) runs on one of the worker's pool
 * threads (au_worker_opts.pool_threads, AU_POOL_THREADS, default
 * AU_DEFAULT_POOL_THREADS; started at the first offload), so the loop
 * goes on with other computations meanwhile; then done(ctx, arg) runs on
 * the worker's loop, where the task finishes as usual (au_task_complete,
 * au_task_fail, or another offload). work must not touch ctx or call any
 * au_task_* function; it may use arg freely, which stays the task's.
 *
 * While the work is out, au_task_offload holds the attempt's cancel hook
 * (au_task_on_cancel; the task's own, if it had one, is called on a
 * cancel and is back in place when done runs): do not set another
 * meanwhile. If the worker gives up on the attempt first (its timeout,
 * the end of the grace period at shutdown, a client's cancel), the
 * attempt is decided and its slot freed at once, work that has not begun
 * never runs, and work that runs cannot be interrupted: it runs to its
 * end on its thread, and then done(NULL, arg) runs on the loop: ctx is
 * gone, free arg and report nothing. au_worker_free waits for work still
 * running, then calls done(NULL, arg) for each job not delivered.
 *
 * 0, or -1 when the work could not be handed over (out of memory, no
 * thread could start, a runner without a pool): done is then never
 * called and the task still has to finish.
 */
int au_task_offload(struct au_task_ctx *ctx, void (*work)(void *arg),
		    void (*done)(struct au_task_ctx *ctx, void *arg), void *arg);
#define AU_DEFAULT_POOL_THREADS 4u

/* The built-in metrics middleware: counters (started, completed, failed,
 * retried, dead, cancelled, enqueued on a client), an in-flight gauge,
 * run time and queue wait histograms and what ClickHouse read, per task
 * and queue; served in the Prometheus text format by au_metrics_listen,
 * and carried by the worker's beat for `au stats`. Its hooks and its
 * endpoint run on the worker's loop (on a client: use it from one thread). */
extern const struct au_middleware_ops au_metrics_middleware;
/* A context for au_metrics_middleware; NULL (err set) when out of memory.
 * The chain it is added to frees it (with its listener). */
void *au_metrics_new(struct au_err *err);
/* Serves GET /metrics at addr ("HOST:PORT", "[::1]:PORT") on base, which
 * must outlive the context. -1 with err: "unable to listen on
 * '127.0.0.1:9100': address already in use" (AU_ESTATE), a bad address
 * (AU_EINVAL). */
int au_metrics_listen(void *ctx, struct event_base *base, const char *addr, struct au_err *err);

/* ------------------------------------------------------------------ */
/* Worker                                                               */

struct au_worker_opts {
	/* The queues to serve (default AU_DEFAULT_QUEUE): one name, several in
	 * strict order ("a,b,c": b is leased from only while a has nothing
	 * ready), or with weights ("a:5,b:1": each lease draws the order at
	 * random by weight). Up to 16; a bad list makes au_worker_err say why. */
	const char *queue;
	unsigned concurrency;       /* computations in flight, default AU_DEFAULT_CONCURRENCY */
	unsigned batch;             /* max leased per round trip, default AU_DEFAULT_BATCH */
	uint32_t lease_ms;          /* default AU_DEFAULT_LEASE_MS */
	uint32_t grace_ms;          /* on SIGTERM, default AU_DEFAULT_GRACE_MS */
	int log;                    /* 1 = logging middleware on (default in CLI) */
	uint32_t max_jobs;          /* stop after this many attempts (0 = never):
				       `au worker --max-tasks`, which a fleet recycles */
	uint32_t idle_exit_ms;      /* stop after idle this long (0 = never) */
	uint32_t retry_base_ms;     /* first retry delay, doubled per attempt,
				       default AU_DEFAULT_RETRY_BASE_MS */
	uint32_t retry_max_ms;      /* cap on the retry delay, default AU_DEFAULT_RETRY_MAX_MS */
	uint32_t poll_ms;           /* fallback poll when idle, default AU_DEFAULT_POLL_MS */
	int log_format;             /* au_worker_run's logging middleware: enum au_log_format */
	const char *middleware;     /* au_worker_run: a spec for au_worker_use_spec, used
				       after the logging middleware; NULL: none */
	/* Plugins au_worker_run loads (after the logging middleware), paths
	 * separated by commas (`au worker --plugin`, AU_PLUGINS); with
	 * au_worker_new, call au_worker_load_plugin. NULL: none. */
	const char *plugins;
	unsigned pool_threads;      /* au_task_offload's threads, default AU_DEFAULT_POOL_THREADS */
	const char *metrics_addr;   /* au_worker_run: the metrics middleware on, serving
				       GET /metrics at this HOST:PORT (NULL: off) */
	int metrics_wait;           /* 1: a metrics_addr in use is tried again every second
				       rather than refused (a fleet's replacing child) */
};

struct au_worker;

/* The worker attaches to base; the caller owns the loop. reg may be NULL
 * for the built-in tasks only; the worker borrows it (free it after
 * au_worker_free). */
struct au_worker *au_worker_new(const struct au_config *cfg,
				const struct au_worker_opts *opts,
				struct au_registry *reg, struct event_base *base);
void au_worker_free(struct au_worker *w);
const struct au_err *au_worker_err(const struct au_worker *w);
/* Adds a middleware at the end of the chain (ctx is passed to hooks). The
 * worker owns ctx from then on: ops->free(ctx), if set, runs in
 * au_worker_free (also when au_worker_use itself fails). */
int au_worker_use(struct au_worker *w, const struct au_middleware_ops *ops, void *ctx);
/*
 * Adds the middlewares a spec names, in order: items separated by commas,
 * each NAME or NAME:ARG (an item holding '=' and no name continues the
 * argument before it):
 *   logging[:text|json]  the logging middleware
 *   tracing              the tracing middleware (its hook is the client's)
 *   timeout:TASK=DURATION,...  a default timeout per task, for the
 *                        computations that set none (`500ms`, `30s`, `2m`)
 * -1 with err (also au_worker_err) for an unknown name or a bad argument.
 */
int au_worker_use_spec(struct au_worker *w, const char *spec, struct au_err *err);
/* The same for a client: the middlewares with a before_enqueue hook are
 * added, the others (and timeout) are accepted and left out. */
int au_client_use_spec(struct au_client *cl, const char *spec, struct au_err *err);
/* Loads the plugin at path (the Plugins section) into w: its tasks and
 * middleware. Call it before au_worker_start, on the loop's thread. 0, or
 * -1 with err ("unable to load plugin 'PATH': ..."); w is then as it
 * was (what au_plugin_init added is dropped, its middleware contexts
 * freed). */
int au_worker_load_plugin(struct au_worker *w, const char *path, struct au_err *err);
/* Starts leasing; returns at once. Use event_base_dispatch(base) to run. */
int au_worker_start(struct au_worker *w);
/* Graceful stop: stop leasing, finish in-flight work within grace_ms, release
 * the rest, then leave the loop. */
void au_worker_stop(struct au_worker *w);
/* Counters. */
#define AU_LOOP_HIST_BUCKETS 24
struct au_worker_stats {
	uint64_t leased, completed, failed, retried, buried, released;
	uint64_t outages;            /* times a server it needs was found down */
	uint64_t cancelled;          /* stopped because a client cancelled them */
	/* How long the loop spent in each call of the worker's own callbacks
	 * (leasing, writing back, heartbeats, housekeeping, timeouts; not the
	 * ClickHouse client's nor a task's): loop_hist[0] counts calls under
	 * 1 us, loop_hist[k] those of 2^(k-1) us up to 2^k us, the last bucket
	 * everything longer. Time there is time no other work of the loop
	 * gets, which is what a blocking queue or store call costs. */
	uint64_t loop_hist[AU_LOOP_HIST_BUCKETS];
	uint64_t loop_max_us;
};
void au_worker_stats(const struct au_worker *w, struct au_worker_stats *st);
/* The worker's id in the registry (`au workers`, `au worker stop ID`):
 * "<host>:<pid>:<8 hex digits>", unique per process and start. */
const char *au_worker_id(const struct au_worker *w);

/* Runs a worker with its own loop until SIGTERM/SIGINT (or max_jobs /
 * idle_exit_ms, or `au worker stop`). Returns 0 on a clean stop, 1 on a
 * clean stop that `au worker stop` asked for, -1 on an error (err). */
int au_worker_run(const struct au_config *cfg, const struct au_worker_opts *opts,
		  struct au_registry *reg, struct au_err *err);

#ifdef __cplusplus
}
#endif
#endif
