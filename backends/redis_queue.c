/*
 * redis_queue.c - the Redis queue backend: redis://[[user]:password@]host[:port][/db].
 *
 * Layout (docs/redis-layout.md): every key of queue q carries the hash tag
 * {q}; the flows' scripts also reach other queues' keys by name (a
 * dependency may sit in any queue), so no Redis Cluster.
 *   au:{q}:ready:<p> LIST entries waiting to run at priority p, oldest first:
 *                  "<id>", or "<id> <a>" after a finished attempts
 *   au:{q}:prios   ZSET p -> -p: the priorities with a ready list
 *   au:{q}:sched   ZSET id -> run_at ms (delayed and retry-delayed)
 *   au:{q}:order   HASH id -> "<priority> <seq>" while scheduled
 *   au:{q}:batch:<token> SET ids leased by one lease call with that token
 *                  ("<attempt>-<random>-<size of the set>")
 *   au:{q}:batches ZSET token -> lease deadline ms (server clock) of its batch
 *   au:{q}:tok     HASH id -> token, for leases extended on their own
 *   au:{q}:leased  ZSET id -> lease deadline ms, for the same
 *   au:{q}:dead    ZSET id -> burial time ms
 *   au:{q}:body    HASH id -> the computation (wire format)
 *   au:{q}:att     HASH id -> attempts of finished leases (absent: 0)
 *   au:{q}:err     HASH id -> last error or bury reason
 *   au:{q}:story   HASH id -> the story its last retry left (opaque bytes,
 *                  the worker's), read by a lease only for later attempts
 *   au:{q}:seq     STRING counter: FIFO among scheduled ones due together
 *   au:{q}:rescue  STRING throttle of the expired-lease sweep (SET NX PX)
 *   au:{q}:wakelist LIST of wake tokens: one per computation made ready
 *                  (up to WAKE_MAX per call, and at most WAKE_MAX kept)
 *   au:{q}:paused  STRING present while the queue is paused (leases take none)
 *   au:{q}:stats   HASH processed, failed (totals), samples for the rate
 *   au:{q}:waiting HASH id -> run_at ms (0: none): waiting for dependencies
 *   au:{q}:need:<id> SET "<dep> <its queue>" that waiting id still waits for
 *   au:{q}:rdeps:<id> SET "<waiting id> <its queue>" waiting for id (mirror)
 *   au:{q}:parents SET ids of q that have an rdeps set
 *   au:queues      SET of queue names
 *   au:kv:<ns>:<key> STRING a value of the kv space (PX for a ttl)
 *   au:kv:<ns>     ZSET the keys of ns, at score 0 (ZRANGEBYLEX by prefix)
 *   au:rate:<key>  HASH tokens, at: a token bucket of rate_take, PEXPIRE'd
 *                  at the time it would be full again
 *   au:registry:{workers} ZSET worker id -> last beat ms: the worker registry
 *   au:registry:{workers}:<id> HASH one worker's entry, PEXPIRE'd at its TTL
 *
 * Every operation is one round trip per batch: a Lua script (EVALSHA, EVAL
 * when the server does not have it yet) or a pipeline. The scripts are the
 * files of backends/redis_scripts/, built in as C strings; their SHA-1 is
 * computed here, so opening a queue loads nothing. Times come from
 * redis.call('TIME'). Connections, AUTH, SELECT and messages are those of
 * redis/redis_client.h, shared with the Redis store.
 *
 * Waking: an idle worker's watch (on its loop) waits in BLPOP on the wake
 * list, and each token wakes one worker, as BullMQ and Sidekiq do, where a
 * pub/sub message woke every idle worker of the queue, all of them running
 * a lease for one computation.
 */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <event2/event.h>
#include <hiredis.h>
#include <async.h>
#include <adapters/libevent.h>

#include "queue.h"
#include "redis_client.h"
#include "redis_scripts.h"

#define RESCUE_THROTTLE_MS 1000  /* one sweep per queue per second, cluster-wide */
#define REWATCH_MS 500           /* delay before the watch connection is retried */
#define LUA_BATCH 1000           /* items per script call: unpack() stays far below Lua's limit */
#define WAKE_MAX 32              /* wake tokens per script call, and kept in the wake list */
#define SMALL_PUSH 16            /* a push of up to this many, of one queue and priority
				    (and with or without run_at), sends its bodies in the script */
#define BLOCK_SLICE_MS 5000      /* longest BLPOP of a blocking lease, under the command timeout */
#define LEASE_ROUNDS 16          /* lease scripts a lease call runs past malformed entries */
#define FLOW_BATCH 1000          /* computations per flow.lua call of a push */

/* ---- the scripts ---- */

/*
 * Every script gets the same KEYS (key_names below, in this order; the
 * 12th and 14th are prefixes: of the ready lists, of the batch sets) and
 * ARGV[1], WAKE_MAX; redis_scripts/prelude.lua names them.
 *
 * Why the layout looks the way it does (all measured on Redis 7.0, where
 * moving a value between Lua and Redis costs about as much as the command
 * that uses it: the hot paths hand whole ARGV ranges and replies on with
 * unpack(), loop over them only to test them, and keep bodies out of Lua):
 * - A push of more than SMALL_PUSH is one MULTI: the script gets the ids
 *   only, and a plain HSET after it writes the bodies. A lease of more
 *   than 16 returns ids only, and its caller reads the bodies with a plain
 *   HMGET (for fewer, that second round trip costs more than it saves;
 *   a small push sends its bodies in the script for the same reason, and
 *   the count of new fields its HSET returns tells whether any id was
 *   known, where the MULTI's script asks with an HMGET).
 * - Ready computations wait in one LIST per priority: RPUSH and LPOP cost a
 *   fraction of ZADD and ZPOPMIN, which also convert 16-digit scores.
 *   Cancelling a ready one is an LREM from the tail (recent ones are found
 *   at once, old ones cost a walk of their list). An entry carries the
 *   attempts already made, so a lease never reads att.
 * - A lease call records its computations as one SET named by their token
 *   (one SADD), with one deadline for all of them in batches. The token is
 *   "<attempt>-<random>-<size>", one per lease call and attempt count; ack
 *   and the other fenced writes check their ids with one SMISMEMBER (one id
 *   alone: the SREM's count says), remove them with one SREM and leave the
 *   whole reply to string.rep when all apply; a write that removed size ids
 *   emptied the set and drops it from batches without asking.
 *   A per-id token and deadline (tok, leased) cost a ZADD, HSET, ZREM and
 *   HDEL per computation and a Lua loop to build and check them; only
 *   extend uses them, for the ids it gives a deadline of their own.
 * - One hash per column (body, att, ...) keyed by id rather than one hash
 *   per computation: a batch costs a few redis.call()s whatever its size,
 *   where per-computation keys cost several calls per computation.
 * - Small hashes and sorted sets are listpacks, where every access walks
 *   the whole thing; tok and leased would stay there. A pin entry of 80
 *   bytes ("~" * 80; at +inf in leased), written with every extend (as one
 *   more field of the HSET and ZADD it makes anyway), makes Redis convert
 *   them to a hash table and a skiplist for good.
 * - A lease that finds nothing costs one EXISTS of sched and prios (an
 *   idle worker's poll, and the leases a worker makes after each batch);
 *   TIME only when something is scheduled or it leases some.
 * - Priority and max_attempts are read from the body (cmsgpack) on the rare
 *   paths that need them (retry, release, rescue, cancel, peek), so a push
 *   writes one hash field and one list entry per computation.
 * Values read back go through tonumber(...) or a default, so entries
 * written by hand cannot make a script fail half way (Redis does not roll
 * back a failed script).
 */
enum { SC_PUSH, SC_LEASE, SC_SETTLE, SC_RESCUE, SC_CANCEL, SC_PEEK, SC_STATS, SC_ADMIN,
       SC_RATE, SC_FLOW, SC_KV, SC_COUNT };

/* Each script is sent as the prelude followed by its own file
 * (backends/redis_scripts/, embedded by scripts/embed.sh). */
static const char *const script_bodies[SC_COUNT] = {
	[SC_PUSH] = au_lua_push,
	[SC_LEASE] = au_lua_lease,
	[SC_SETTLE] = au_lua_settle,
	[SC_RESCUE] = au_lua_rescue,
	[SC_CANCEL] = au_lua_cancel,
	[SC_PEEK] = au_lua_peek,
	[SC_STATS] = au_lua_stats,
	[SC_ADMIN] = au_lua_admin,
	[SC_RATE] = au_lua_rate,     /* keys of its own: sent without the prelude */
	[SC_FLOW] = au_lua_flow,
	[SC_KV] = au_lua_kv,         /* keys of its own, as rate's */
};

static const char *const key_names[] = {
	"prios", "sched", "leased", "dead", "seq", "rescue",
	"body", "att", "tok", "err", "order", "ready:", "batches", "batch:", "wakelist",
	"paused", "stats", "story", "waiting", "need:", "rdeps:", "parents"
};

/* ---- state ---- */

/* One argument of the command being built: caller memory (p) or a span of
 * the arena, which may move while the pipeline grows. */
struct arg {
	const char *p;
	size_t off, len;
};

struct cmd {
	size_t first;       /* index of its first argument */
	int script;         /* SC_*, or -1 for a plain command */
	int eval;           /* send the script's text: its EVALSHA failed in a MULTI */
};

struct rwatch;

struct rq {
	struct au_queue *q;
	redisContext *c;            /* commands; blocking leases wait in BLPOP on it */
	int db;                     /* of the URL */
	char *script[SC_COUNT];     /* the prelude and each script's own text */
	char sha[SC_COUNT][41];     /* its SHA-1, the name EVALSHA knows it by */
	char *listed;               /* the queue last added to au:queues, or NULL */
	struct rwatch *watch;       /* the loop's: nothing else touches it */
	struct au_dead_limits limits;  /* of the URL */
	struct au_housekeeping housekept;
	struct rwatch *cancels;     /* watch_cancels: SUBSCRIBE, on the loop too */

	/* the pipeline of the operation in progress */
	struct arg *args;
	const char **argv;
	size_t *argvlen;
	size_t nargs, argcap;
	struct au_buf arena;
	struct au_buf resp;         /* the pipeline in RESP, handed to hiredis whole */
	struct cmd *cmds;
	redisReply **rep;
	size_t ncmds, cmdcap;
	int oom;
};

/* The watch: its own connection, on the caller's loop. It reads only what
 * never changes after open (the URL, the database) from struct rq. */
struct rwatch {
	struct rq *r;
	struct event_base *base;
	redisAsyncContext *ac;      /* NULL between connections */
	struct event *timer;        /* connect timeout, then reconnect delay */
	char *queue, *list;         /* the queue, its wake list */
	au_queue_wake_fn fn;
	void *arg;
	int setup;                  /* replies to AUTH, SELECT (or PING) still due */
	int ready;                  /* connected, logged in, on the URL's database */
	int waiting;                /* a BLPOP is outstanding */
	int paused;                 /* watch_pause(1): issue no BLPOP, hand tokens on */
	int down;                   /* an outage was logged */
	au_queue_cancel_fn cancel;  /* set: a watch of cancels, SUBSCRIBEd to list */
};

static int oom(struct au_queue *q)
{
	return au_seterr(&q->err, AU_ENOMEM, "out of memory");
}

/* ---- building a pipeline ---- */

static void p_reset(struct rq *r)
{
	r->nargs = r->ncmds = 0;
	r->oom = 0;
	au_buf_reset(&r->arena);
}

static void p_push(struct rq *r, const char *p, size_t off, size_t len)
{
	if (r->nargs == r->argcap) {
		size_t cap = r->argcap ? r->argcap * 2 : 256;
		struct arg *a = realloc(r->args, cap * sizeof(*a));
		const char **v = a ? realloc(r->argv, cap * sizeof(*v)) : NULL;
		size_t *l = v ? realloc(r->argvlen, cap * sizeof(*l)) : NULL;

		if (a)
			r->args = a;
		if (v)
			r->argv = v;
		if (!l) {
			r->oom = 1;
			return;
		}
		r->argvlen = l;
		r->argcap = cap;
	}
	r->args[r->nargs++] = (struct arg){ p, off, len };
}

/* Begins a command; a script's first two arguments are filled in when sent. */
static void p_cmd(struct rq *r, int script)
{
	if (r->ncmds == r->cmdcap) {
		size_t cap = r->cmdcap ? r->cmdcap * 2 : 8;
		struct cmd *c = realloc(r->cmds, cap * sizeof(*c));
		redisReply **rep = c ? realloc(r->rep, cap * sizeof(*rep)) : NULL;

		if (c)
			r->cmds = c;
		if (!rep) {
			r->oom = 1;
			return;
		}
		r->rep = rep;
		r->cmdcap = cap;
	}
	r->cmds[r->ncmds++] = (struct cmd){ r->nargs, script, 0 };
	if (script >= 0) {
		p_push(r, NULL, 0, 0);
		p_push(r, NULL, 0, 0);
	}
}

/* caller memory, alive until the round trip ends */
static void p_bin(struct rq *r, const void *p, size_t len)
{
	p_push(r, p, 0, len);
}

static void p_str(struct rq *r, const char *s)
{
	p_push(r, s, 0, strlen(s));
}

static void p_copy(struct rq *r, const void *p, size_t len)
{
	size_t off = r->arena.len;

	if (au_buf_append(&r->arena, p, len) < 0)
		r->oom = 1;
	else
		p_push(r, NULL, off, len);
}

static void p_i64(struct rq *r, int64_t v)
{
	char buf[24], *e = buf + sizeof(buf), *s = e;
	uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;

	do
		*--s = (char)('0' + u % 10);
	while (u /= 10);
	if (v < 0)
		*--s = '-';
	p_copy(r, s, (size_t)(e - s));
}

/* "au:{queue}:name" */
static void p_key(struct rq *r, const char *queue, const char *name)
{
	size_t off = r->arena.len;

	if (au_buf_printf(&r->arena, "au:{%s}:%s", queue, name) < 0)
		r->oom = 1;
	else
		p_push(r, NULL, off, r->arena.len - off);
}

/* numkeys, the keys of queue, then WAKE_MAX as ARGV[1] */
static void p_keys(struct rq *r, const char *queue)
{
	size_t i;

	p_i64(r, (int64_t)AU_ARRAY_SIZE(key_names));
	for (i = 0; i < AU_ARRAY_SIZE(key_names); i++)
		p_key(r, queue, key_names[i]);
	p_i64(r, WAKE_MAX);
}

static void replies_free(struct rq *r, size_t from, size_t to)
{
	for (; from < to; from++) {
		if (r->rep[from])
			freeReplyObject(r->rep[from]);
		r->rep[from] = NULL;
	}
}

/* ---- connections ---- */

static int conn_error(struct rq *r, const redisContext *c, const char *what)
{
	return au_redis_conn_error(&r->q->err, &r->q->url, c, what);
}

static int reply_error(struct rq *r, const redisReply *rep)
{
	return au_redis_reply_error(&r->q->err, &r->q->url, rep, "a command");
}

static int bad_reply(struct rq *r, const char *what)
{
	return au_redis_reply_error(&r->q->err, &r->q->url, NULL, what);
}

/* Connects, authenticates, selects the database. NULL with q->err set. */
static redisContext *conn_new(struct rq *r)
{
	return au_redis_connect(&r->q->url, r->db, &r->q->err);
}

static void conn_drop(struct rq *r)
{
	if (r->c)
		redisFree(r->c);
	r->c = NULL;
}

/* A usable connection. An idle connection that reads as ready was closed
 * by the server (restart, timeout): it is replaced before anything is sent,
 * so no operation is lost in it. */
static int conn_ready(struct rq *r)
{
	if (r->c && !r->c->err) {
		struct pollfd pfd = { r->c->fd, POLLIN | POLLRDHUP, 0 };

		if (poll(&pfd, 1, 0) == 0)
			return 0;
	}
	conn_drop(r);
	r->c = conn_new(r);
	return r->c ? 0 : -1;
}

static void set_script(struct rq *r, const struct cmd *c, int eval)
{
	eval = eval || c->eval;
	r->argv[c->first] = eval ? "EVAL" : "EVALSHA";
	r->argvlen[c->first] = strlen(r->argv[c->first]);
	r->argv[c->first + 1] = eval ? r->script[c->script] : r->sha[c->script];
	r->argvlen[c->first + 1] = strlen(r->argv[c->first + 1]);
}

static int noscript_reply(const redisReply *rep)
{
	return rep->type == REDIS_REPLY_ERROR && !strncmp(rep->str, "NOSCRIPT", 8);
}

/* Writes command i in RESP to r->resp: hiredis' own argv formatting cost
 * a producer as much as the rest of its push. */
static void append(struct rq *r, size_t i)
{
	size_t end = i + 1 < r->ncmds ? r->cmds[i + 1].first : r->nargs, k;
	int ok = au_resp_command(&r->resp, (unsigned)(end - r->cmds[i].first)) == 0;

	for (k = r->cmds[i].first; ok && k < end; k++)
		ok = au_resp_arg(&r->resp, r->argv[k], r->argvlen[k]) == 0;
	if (!ok)
		r->oom = 1;
}

/* Hands what append() wrote to hiredis; -1 when memory ran out. */
static int send_appended(struct rq *r)
{
	int rc = r->oom || redisAppendFormattedCommand(r->c, (const char *)r->resp.data,
							r->resp.len) != REDIS_OK ? -1 : 0;

	au_buf_reset(&r->resp);
	return rc;
}

/*
 * Sends the pipeline and reads one reply per command into r->rep (the caller
 * frees them with replies_free). An error reply fails the whole operation.
 * After an I/O error the operation is sent again on a new connection only if
 * idempotent. A NOSCRIPT reply means that command did nothing: it is sent
 * again as EVAL, which also restores the server's script cache.
 */
static int roundtrip(struct rq *r, int idempotent)
{
	size_t i;
	int tries = 0, noscript = 0;

	if (r->oom)
		return oom(r->q);
	for (i = 0; i < r->nargs; i++) {
		r->argv[i] = r->args[i].p ? r->args[i].p : (const char *)r->arena.data + r->args[i].off;
		r->argvlen[i] = r->args[i].len;
	}
again:
	if (conn_ready(r) < 0)
		return -1;
	for (i = 0; i < r->ncmds; i++) {
		if (r->cmds[i].script >= 0)
			set_script(r, &r->cmds[i], 0);
		append(r, i);
	}
	if (send_appended(r) < 0) {
		conn_drop(r);   /* nothing of it reached the server */
		return oom(r->q);
	}
	for (i = 0; i < r->ncmds; i++)
		if (redisGetReply(r->c, (void **)&r->rep[i]) != REDIS_OK) {
			conn_error(r, r->c, "lost connection to");
			replies_free(r, 0, i);
			conn_drop(r);
			if (idempotent && !tries++)
				goto again;
			return -1;
		}
	for (i = 0; i < r->ncmds; i++)
		if (noscript_reply(r->rep[i])) {
			set_script(r, &r->cmds[i], 1);
			append(r, i);
			noscript = 1;
		}
	if (noscript && send_appended(r) < 0) {
		replies_free(r, 0, r->ncmds);
		conn_drop(r);
		return oom(r->q);
	}
	for (i = 0; noscript && i < r->ncmds; i++)
		if (noscript_reply(r->rep[i])) {
			freeReplyObject(r->rep[i]);
			if (redisGetReply(r->c, (void **)&r->rep[i]) != REDIS_OK) {
				conn_error(r, r->c, "lost connection to");
				r->rep[i] = NULL;
				replies_free(r, 0, r->ncmds);
				conn_drop(r);
				return -1;
			}
		}
	for (i = 0; i < r->ncmds; i++)
		if (r->rep[i]->type == REDIS_REPLY_ERROR) {
			reply_error(r, r->rep[i]);
			replies_free(r, 0, r->ncmds);
			return -1;
		}
	return 0;
}

/* ---- open / close ---- */

static uint32_t rol32(uint32_t x, int n)
{
	return x << n | x >> (32 - n);
}

static void sha1_block(uint32_t h[5], const unsigned char *p)
{
	uint32_t w[80], a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f, k, t;
	int i;

	for (i = 0; i < 16; i++)
		w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
		       (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
	for (; i < 80; i++)
		w[i] = rol32(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
	for (i = 0; i < 80; i++) {
		if (i < 20)
			f = (b & c) | (~b & d), k = 0x5a827999;
		else if (i < 40)
			f = b ^ c ^ d, k = 0x6ed9eba1;
		else if (i < 60)
			f = (b & c) | (b & d) | (c & d), k = 0x8f1bbcdc;
		else
			f = b ^ c ^ d, k = 0xca62c1d6;
		t = rol32(a, 5) + f + e + k + w[i];
		e = d;
		d = c;
		c = rol32(b, 30);
		b = a;
		a = t;
	}
	h[0] += a;
	h[1] += b;
	h[2] += c;
	h[3] += d;
	h[4] += e;
}

/* The SHA-1 of s in hex (FIPS 180-4): the name EVALSHA knows a script by,
 * so no SCRIPT LOAD is needed; a server without the script answers
 * NOSCRIPT, and roundtrip() sends it once as EVAL, which caches it. */
static void sha1_hex(const char *s, char out[41])
{
	uint32_t h[5] = { 0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476, 0xc3d2e1f0 };
	size_t len = strlen(s), full = len / 64 * 64, rest = len - full, tail, i;
	uint64_t bits = (uint64_t)len * 8;
	unsigned char last[128] = { 0 };

	for (i = 0; i < full; i += 64)
		sha1_block(h, (const unsigned char *)s + i);
	memcpy(last, s + full, rest);
	last[rest] = 0x80;
	tail = rest + 9 <= 64 ? 64 : 128;
	for (i = 0; i < 8; i++)
		last[tail - 1 - i] = (unsigned char)(bits >> (8 * i));
	for (i = 0; i < tail; i += 64)
		sha1_block(h, last + i);
	for (i = 0; i < 5; i++)
		snprintf(out + 8 * i, 9, "%08x", (unsigned)h[i]);
}

/* The eviction policy: a queue must never lose keys. */
static int check_server(struct rq *r)
{
	redisReply *rep = redisCommand(r->c, "CONFIG GET maxmemory-policy");
	int rc = 0;

	if (!rep)
		return conn_error(r, r->c, "lost connection to");
	if (rep->type == REDIS_REPLY_ARRAY && rep->elements == 2 &&
	    rep->element[1]->type == REDIS_REPLY_STRING) {
		if (strcmp(rep->element[1]->str, "noeviction"))
			rc = au_seterr(&r->q->err, AU_ESTATE,
				       "redis at '%s' uses maxmemory-policy '%s': au needs 'noeviction'",
				       r->q->url.text, rep->element[1]->str);
	} else {
		au_log(AU_LOG_WARN,
		       "cannot check the maxmemory-policy of '%s' (%s): au needs 'noeviction'",
		       r->q->url.text, rep->type == REDIS_REPLY_ERROR ? rep->str : "no such setting");
	}
	freeReplyObject(rep);
	return rc;
}

/* The queue's warnings for a worker's start (au_queue_check). */
static int rq_check(struct au_queue *q)
{
	struct rq *r = q->ctx;
	int rc;

	if (conn_ready(r) < 0)
		return -1;
	rc = au_redis_check_persistence(r->c, &q->url,
					"every computation queued, running or dead-lettered there",
					&q->err);
	if (rc < 0)
		conn_drop(r);
	return rc;
}

static void rq_unwatch(struct au_queue *q);
static void rq_unwatch_cancels(struct au_queue *q);

static void rq_free(struct rq *r)
{
	size_t i;

	conn_drop(r);
	free(r->listed);
	for (i = 0; i < SC_COUNT; i++)
		free(r->script[i]);
	free(r->args);
	free(r->argv);
	free(r->argvlen);
	free(r->cmds);
	free(r->rep);
	au_buf_release(&r->arena);
	au_buf_release(&r->resp);
	free(r);
}

static int rq_open(struct au_queue *q, const struct au_url *url)
{
	struct rq *r = calloc(1, sizeof(*r));
	size_t i;

	if (!r)
		return oom(q);
	r->q = q;
	if (au_redis_db(url, &r->db, &q->err) < 0 ||
	    au_queue_dead_limits(url, &r->limits, &q->err) < 0)
		goto fail;
	for (i = 0; i < SC_COUNT; i++) {
		if (!(r->script[i] = au_asprintf("%s%s", i == SC_RATE || i == SC_KV ? "" :
						 au_lua_prelude,
						 script_bodies[i]))) {
			oom(q);
			goto fail;
		}
		sha1_hex(r->script[i], r->sha[i]);
	}
	r->c = conn_new(r);
	if (!r->c || check_server(r) < 0)
		goto fail;
	q->ctx = r;
	return 0;
fail:
	rq_free(r);
	return -1;
}

static void rq_close(struct au_queue *q)
{
	rq_unwatch(q);
	rq_unwatch_cancels(q);
	rq_free(q->ctx);
	q->ctx = NULL;
}

/* ---- push ---- */

/* Whether b goes in the same script call as a: same queue and priority, and
 * with a run_at or without, like a. */
static int same_group(const struct au_computation *a, const struct au_computation *b)
{
	return a->priority == b->priority && !a->run_at_ms == !b->run_at_ms &&
	       !strcmp(au_queue_name(a->queue), au_queue_name(b->queue));
}

/*
 * The push as one MULTI: per queue and priority (and LUA_BATCH items; those
 * with a run_at apart), the script with the ids, then the HSET of their
 * bodies, so the bodies never pass through Lua; then the SADD to au:queues.
 * fresh[k] (or NULL) tells the k-th script call that none of its ids has a
 * body; eval sends the scripts' text.
 */
static void push_build(struct rq *r, const struct au_computation *cs, size_t n,
		       const struct au_buf *bodies, const size_t *off, size_t *grp, char *done,
		       const char *fresh, int eval)
{
	size_t i, k, g, ng, m, call = 0;

	p_reset(r);
	memset(done, 0, n);
	p_cmd(r, -1);
	p_str(r, "MULTI");
	for (i = 0; i < n; i++) {
		if (done[i])
			continue;
		for (k = i, ng = 0; k < n; k++)
			if (!done[k] && same_group(&cs[i], &cs[k])) {
				grp[ng++] = k;
				done[k] = 1;
			}
		for (g = 0; g < ng; g += m, call++) {
			m = ng - g < LUA_BATCH ? ng - g : LUA_BATCH;
			p_cmd(r, SC_PUSH);
			r->cmds[r->ncmds - 1].eval = eval;
			p_keys(r, au_queue_name(cs[i].queue));
			p_i64(r, cs[i].priority);
			p_i64(r, (int64_t)m);
			p_str(r, fresh && fresh[call] ? "fresh" : "check");
			for (k = g; k < g + m; k++)
				p_str(r, cs[grp[k]].id);
			for (k = g; cs[i].run_at_ms && k < g + m; k++)
				p_i64(r, (int64_t)au_queue_run_at(cs[grp[k]].run_at_ms));
			p_cmd(r, -1);
			p_str(r, "HSET");
			p_key(r, au_queue_name(cs[i].queue), "body");
			for (k = g; k < g + m; k++) {
				p_str(r, cs[grp[k]].id);
				p_bin(r, bodies->data + off[grp[k]], off[grp[k] + 1] - off[grp[k]]);
			}
		}
	}
	p_cmd(r, -1);
	p_str(r, "SADD");
	p_str(r, "au:queues");
	for (i = 0; i < n; i++) {
		for (k = 0; k < i && strcmp(au_queue_name(cs[k].queue), au_queue_name(cs[i].queue)); k++)
			;
		if (k == i)
			p_str(r, au_queue_name(cs[i].queue));
	}
	p_cmd(r, -1);
	p_str(r, "EXEC");
}

/*
 * Checks the EXEC reply of push_build's MULTI. A script the server lost fails
 * alone in a MULTI (NOSCRIPT) while the HSET after it runs: *again is set
 * (send it as EVAL) and fresh[k] tells whether the k-th call's HSET found
 * all its ids new, as they were before that HSET.
 */
static int push_check(struct rq *r, char *fresh, int *again)
{
	const redisReply *exec = r->rep[r->ncmds - 1];
	size_t i, call = 0;

	*again = 0;
	if (exec->type != REDIS_REPLY_ARRAY || exec->elements != r->ncmds - 2)
		return bad_reply(r, "push");
	for (i = 0; i < exec->elements; i++) {
		const redisReply *e = exec->element[i];
		const struct cmd *c = &r->cmds[i + 1];

		if (c->script >= 0 && !c->eval && noscript_reply(e)) {
			const redisReply *hset = exec->element[i + 1];
			size_t fields = r->cmds[i + 3].first - c[1].first - 2;

			fresh[call] = hset->type == REDIS_REPLY_INTEGER &&
				      (size_t)hset->integer * 2 == fields;
			*again = 1;
		} else if (e->type == REDIS_REPLY_ERROR) {
			return reply_error(r, e);
		}
		call += c->script >= 0;
	}
	return 0;
}

/*
 * A push of one group of up to SMALL_PUSH: the script gets the ids and the
 * bodies and is all or nothing on its own, so no MULTI; before it, the SADD
 * to au:queues, sent once per handle and queue (while it pushes to one).
 */
static int push_small(struct rq *r, const struct au_computation *cs, size_t n,
		      const struct au_buf *bodies, const size_t *off)
{
	const char *queue = au_queue_name(cs[0].queue);
	int list = !r->listed || strcmp(r->listed, queue);
	size_t i;

	p_reset(r);
	if (list) {
		p_cmd(r, -1);
		p_str(r, "SADD");
		p_str(r, "au:queues");
		p_str(r, queue);
	}
	p_cmd(r, SC_PUSH);
	p_keys(r, queue);
	p_i64(r, cs[0].priority);
	p_i64(r, (int64_t)n);
	p_str(r, "body");
	for (i = 0; i < n; i++)
		p_str(r, cs[i].id);
	for (i = 0; cs[0].run_at_ms && i < n; i++)
		p_i64(r, (int64_t)au_queue_run_at(cs[i].run_at_ms));
	for (i = 0; i < n; i++) {
		p_str(r, cs[i].id);
		p_bin(r, bodies->data + off[i], off[i + 1] - off[i]);
	}
	/* pushing again is harmless: known ids are left alone */
	if (roundtrip(r, 1) < 0)
		return -1;
	if (r->rep[r->ncmds - 1]->type != REDIS_REPLY_INTEGER) {
		replies_free(r, 0, r->ncmds);
		return bad_reply(r, "push");
	}
	replies_free(r, 0, r->ncmds);
	if (list) {
		/* out of memory: the next push sends the SADD again */
		free(r->listed);
		r->listed = au_strdup(queue);
	}
	return 0;
}

/*
 * A push of which some wait for dependencies (redis_scripts/flow.lua): per
 * FLOW_BATCH computations one script, which takes each body, its queue and
 * its deps, whatever its queue and priority; the scripts go in one MULTI
 * (as EVAL: a MULTI cannot take EVALSHA's NOSCRIPT back) when there are
 * several, so the push stays all or nothing and a later script sees what
 * an earlier one pushed. The SADD to au:queues comes first: a dependency
 * is looked for in the queues it lists.
 */
static int push_flow(struct rq *r, const struct au_computation *cs, size_t n,
		     const struct au_buf *bodies, const size_t *off)
{
	size_t i, k, d, calls = (n + FLOW_BATCH - 1) / FLOW_BATCH, nq = 0;
	int multi = calls > 1, rc = 0, list;

	p_reset(r);
	p_cmd(r, -1);
	p_str(r, "SADD");
	p_str(r, "au:queues");
	for (i = 0; i < n; i++) {
		for (k = 0; k < i && strcmp(au_queue_name(cs[k].queue), au_queue_name(cs[i].queue)); k++)
			;
		if (k == i) {
			p_str(r, au_queue_name(cs[i].queue));
			nq++;
		}
	}
	/* one queue, listed by this handle already: no SADD (as push_small) */
	list = nq > 1 || !r->listed || strcmp(r->listed, au_queue_name(cs[0].queue));
	if (!list)
		p_reset(r);
	if (multi) {
		p_cmd(r, -1);
		p_str(r, "MULTI");
	}
	for (i = 0; i < n; i += FLOW_BATCH) {
		p_cmd(r, SC_FLOW);
		r->cmds[r->ncmds - 1].eval = multi;
		p_keys(r, au_queue_name(cs[i].queue));
		p_str(r, "push");
		for (k = i; k < n && k < i + FLOW_BATCH; k++) {
			p_str(r, au_queue_name(cs[k].queue));
			p_str(r, cs[k].id);
			p_i64(r, cs[k].priority);
			p_i64(r, (int64_t)au_queue_run_at(cs[k].run_at_ms));
			p_bin(r, bodies->data + off[k], off[k + 1] - off[k]);
			p_i64(r, (int64_t)cs[k].ndeps);
			for (d = 0; d < cs[k].ndeps; d++)
				p_bin(r, cs[k].deps[d], strnlen(cs[k].deps[d], AU_ID_SIZE));
		}
	}
	if (multi) {
		p_cmd(r, -1);
		p_str(r, "EXEC");
	}
	/* pushing again is harmless: known ids are left alone, deps and all */
	if (roundtrip(r, 1) < 0)
		return -1;
	if (multi) {
		const redisReply *exec = r->rep[r->ncmds - 1];

		if (exec->type != REDIS_REPLY_ARRAY || exec->elements != calls)
			rc = bad_reply(r, "push");
		for (i = 0; !rc && i < exec->elements; i++)
			if (exec->element[i]->type == REDIS_REPLY_ERROR)
				rc = reply_error(r, exec->element[i]);
			else if (exec->element[i]->type != REDIS_REPLY_ARRAY)
				rc = bad_reply(r, "push");
	} else if (r->rep[r->ncmds - 1]->type != REDIS_REPLY_ARRAY) {
		rc = bad_reply(r, "push");
	}
	replies_free(r, 0, r->ncmds);
	if (!rc && list && nq == 1) {
		free(r->listed);
		r->listed = au_strdup(au_queue_name(cs[0].queue));
	}
	return rc;
}

static int rq_push(struct au_queue *q, const struct au_computation *cs, size_t n)
{
	struct rq *r = q->ctx;
	struct au_buf bodies = AU_BUF_INIT;
	size_t *off = malloc((n + 1) * sizeof(*off)), *grp = malloc((n + 1) * sizeof(*grp)), i;
	char *done = malloc(n + 1), *fresh = calloc(n + 1, 1);
	int rc = -1, again = 0, checked, tries;

	if (!off || !grp || !done || !fresh) {
		oom(q);
		goto out;
	}
	for (i = 0; i < n; i++) {
		off[i] = bodies.len;
		if (au_computation_encode(&cs[i], &bodies, &q->err) < 0)
			goto out;
	}
	off[n] = bodies.len;
	for (i = 0; i < n && !cs[i].ndeps; i++)
		;
	if (i < n) {
		rc = push_flow(r, cs, n, &bodies, off);
		goto out;
	}
	for (i = 1; i < n && same_group(&cs[0], &cs[i]); i++)
		;
	if (n && n <= SMALL_PUSH && i == n) {
		rc = push_small(r, cs, n, &bodies, off);
		goto out;
	}
	for (tries = 0; n && (!tries || again); tries++) {
		push_build(r, cs, n, &bodies, off, grp, done, tries ? fresh : NULL, tries);
		/* pushing again is harmless: known ids are left alone */
		if (roundtrip(r, 1) < 0)
			goto out;
		checked = push_check(r, fresh, &again);
		replies_free(r, 0, r->ncmds);
		if (checked < 0)
			goto out;
	}
	rc = 0;
out:
	au_buf_release(&bodies);
	free(off);
	free(grp);
	free(done);
	free(fresh);
	return rc;
}

/* ---- lease ---- */

static int settle(struct au_queue *q, const char *queue, const struct au_ref *refs, size_t n,
		  const char *mode, const uint64_t *delay_ms, const char *const *text,
		  const struct au_story *story, uint32_t lease_ms, int idempotent, int *applied);

/* The lease script's reply: ids, attempts (NULL: all 1), bodies (NULL: not
 * sent; an element is nil for an id without a body), stories (NULL: not
 * sent; nil for an id without one). */
static int lease_lists(const redisReply *rep, size_t max, redisReply ***ids, redisReply ***atts,
		       redisReply ***bodies, redisReply ***stories, size_t *n)
{
	size_t i;

	*n = 0;
	*ids = *atts = *bodies = *stories = NULL;
	if (rep->type != REDIS_REPLY_ARRAY || rep->elements < 3 || rep->elements == 4 ||
	    rep->elements > 7)
		return -1;
	for (i = 0; i < 3; i++)
		if (rep->element[i]->type != REDIS_REPLY_INTEGER)
			return -1;
	if (rep->elements == 3)
		return 0;
	for (i = 3; i < rep->elements; i++)
		if (rep->element[i]->type != REDIS_REPLY_ARRAY)
			return -1;
	*n = rep->element[3]->elements;
	*ids = rep->element[3]->element;
	if (rep->element[4]->elements)
		*atts = rep->element[4]->element;
	if (rep->elements >= 6)
		*bodies = rep->element[5]->element;
	if (rep->elements == 7)
		*stories = rep->element[6]->element;
	if ((*atts && rep->element[4]->elements != *n) ||
	    (*bodies && rep->element[5]->elements != *n) ||
	    (*stories && rep->element[6]->elements != *n) || *n > max)
		return -1;
	for (i = 0; i < *n; i++)
		if ((*ids)[i]->type != REDIS_REPLY_STRING || (*ids)[i]->len >= AU_ID_SIZE ||
		    (*atts && ((*atts)[i]->type != REDIS_REPLY_INTEGER || (*atts)[i]->integer < 1 ||
			       (*atts)[i]->integer > UINT32_MAX)) ||
		    (*bodies && (*bodies)[i]->type != REDIS_REPLY_STRING &&
		     (*bodies)[i]->type != REDIS_REPLY_NIL) ||
		    (*stories && (*stories)[i]->type != REDIS_REPLY_STRING &&
		     (*stories)[i]->type != REDIS_REPLY_NIL))
			return -1;
	return 0;
}

/* Whether some of atts[0..n) (NULL: all first attempts) are later ones,
 * whose stories a lease reads. */
static int later_attempts(redisReply **atts, size_t n)
{
	size_t i;

	for (i = 0; atts && i < n; i++)
		if (atts[i]->integer > 1)
			return 1;
	return 0;
}

/* How many of atts[0..n) are a: the size of the batch set of that attempt
 * count, which ends its token. */
static size_t batch_size(redisReply **atts, size_t n, long long a)
{
	size_t i, k = 0;

	for (i = 0; i < n; i++)
		k += atts[i]->integer == a;
	return k;
}

/* A leased entry that is no computation: an id that is not one, or one
 * without a body. Its bytes as they are (a NUL among them included). */
struct poison {
	char id[AU_ID_SIZE];
	size_t len;
	char token[AU_TOKEN_SIZE];
	const char *why;
};

/* Dead-letters the poison leased by one lease call (a bury, fenced on
 * their tokens as any is), each with its reason, and logs each. */
static int bury_poison(struct rq *r, const char *queue, const struct poison *p, size_t n)
{
	char reason[AU_ERRSTR_SIZE], shown[AU_ID_SHOWN_SIZE];
	char *why = malloc(n * sizeof(reason));
	size_t i;
	int rc;

	if (!why)
		return oom(r->q);
	p_reset(r);
	p_cmd(r, SC_SETTLE);
	p_keys(r, queue);
	p_str(r, "bury");
	p_i64(r, 0);
	for (i = 0; i < n; i++) {
		char *w = why + i * sizeof(reason);

		snprintf(w, sizeof(reason), "malformed ready entry: %s", p[i].why);
		p_str(r, p[i].token);
		p_i64(r, 1);
		p_bin(r, p[i].id, p[i].len);
		p_str(r, w);
		au_log(AU_LOG_WARN, "queue '%s' of '%s': '%s' dead-lettered: %s", queue,
		       r->q->url.text, au_id_shown_n(shown, p[i].id, p[i].len), w);
	}
	/* burying twice is harmless: the second finds no lease */
	rc = roundtrip(r, 1);
	if (rc == 0)
		replies_free(r, 0, r->ncmds);
	free(why);
	return rc;
}

/*
 * One lease: the script leases the ids and returns their bodies when there
 * are few; otherwise an HMGET reads them (a second round trip, but passing
 * many bodies through Lua costs Redis more). Stories come the same way,
 * only when some of the ids are later attempts (an HMGET of story in the
 * same round trip as that of the bodies). The script dead-letters or
 * drops malformed entries itself (*buried, *dropped); an id found here
 * without a body (written by hand, or whose data was deleted), or that is
 * not 32 lowercase hex digits, is dead-lettered with a fenced bury, one
 * more round trip on this path only.
 */
static int lease_once(struct rq *r, const char *queue, size_t max, uint32_t lease_ms,
		      struct au_lease *out, size_t *n, int64_t *next_due_ms, long long *dropped,
		      long long *buried)
{
	char rnd[17];
	redisReply *lr, **ids, **atts, **bodies, **stories;
	struct poison *bad = NULL;
	size_t i, got, nbad = 0, size = 0;
	int rc = -1, fetched = 0;

	*n = 0;
	snprintf(rnd, sizeof(rnd), "%016llx", (unsigned long long)au_random64());
	p_reset(r);
	p_cmd(r, SC_LEASE);
	p_keys(r, queue);
	p_i64(r, (int64_t)max);
	p_i64(r, lease_ms);
	p_str(r, rnd);
	if (roundtrip(r, 0) < 0)
		return -1;
	lr = r->rep[0];
	r->rep[0] = NULL;
	if (lease_lists(lr, max, &ids, &atts, &bodies, &stories, &got) < 0) {
		freeReplyObject(lr);
		return bad_reply(r, "lease");
	}
	*dropped = lr->element[0]->integer;
	*buried = lr->element[1]->integer;
	*next_due_ms = lr->element[2]->integer;
	if (got && !bodies) {
		const redisReply *br, *sr = NULL;
		int later = later_attempts(atts, got), k;

		p_reset(r);
		for (k = 0; k < 1 + later; k++) {
			p_cmd(r, -1);
			p_str(r, "HMGET");
			p_key(r, queue, k ? "story" : "body");
			for (i = 0; i < got; i++)
				p_bin(r, ids[i]->str, ids[i]->len);
		}
		if (roundtrip(r, 1) < 0) {
			/* the leases come back by rescue */
			freeReplyObject(lr);
			return -1;
		}
		br = r->rep[0];
		if (later)
			sr = r->rep[1];
		if (br->type != REDIS_REPLY_ARRAY || br->elements != got ||
		    (sr && (sr->type != REDIS_REPLY_ARRAY || sr->elements != got))) {
			replies_free(r, 0, r->ncmds);
			freeReplyObject(lr);
			return bad_reply(r, "lease");
		}
		for (i = 0; sr && i < got; i++)
			if (sr->element[i]->type != REDIS_REPLY_STRING &&
			    sr->element[i]->type != REDIS_REPLY_NIL) {
				replies_free(r, 0, r->ncmds);
				freeReplyObject(lr);
				return bad_reply(r, "lease");
			}
		bodies = br->element;
		stories = sr ? sr->element : NULL;
		fetched = 1;
	}
	for (i = 0; i < got; i++) {
		const redisReply *b = bodies[i];
		uint32_t attempts = atts ? (uint32_t)atts[i]->integer : 1;
		int valid = ids[i]->len == AU_ID_SIZE - 1 && au_id_valid(ids[i]->str);
		char *token;

		if (!atts)
			size = got;
		else if (!i || atts[i]->integer != atts[i - 1]->integer)
			size = batch_size(atts, got, atts[i]->integer);

		if (valid && b->type == REDIS_REPLY_STRING) {
			const redisReply *st = stories && attempts > 1 ? stories[i] : NULL;

			out[*n].body = malloc(b->len ? b->len : 1);
			out[*n].story = NULL;
			out[*n].story_len = 0;
			if (!out[*n].body)
				break;
			memcpy(out[*n].body, b->str, b->len);
			out[*n].body_len = b->len;
			if (st && st->type == REDIS_REPLY_STRING && st->len) {
				if (!(out[*n].story = malloc(st->len))) {
					au_lease_release(&out[*n]);
					break;
				}
				memcpy(out[*n].story, st->str, st->len);
				out[*n].story_len = st->len;
			}
			out[*n].attempts = attempts;
			memcpy(out[*n].ref.id, ids[i]->str, ids[i]->len + 1);
			token = out[(*n)++].ref.token;
		} else {
			if (!bad && !(bad = malloc(got * sizeof(*bad))))
				break;
			memcpy(bad[nbad].id, ids[i]->str, ids[i]->len);
			bad[nbad].id[ids[i]->len] = '\0';
			bad[nbad].len = ids[i]->len;
			bad[nbad].why = !valid ? "not an id (32 lowercase hex digits)"
					       : "no body for it in the queue's body hash";
			token = bad[nbad++].token;
		}
		/* as the script named its batch */
		snprintf(token, AU_TOKEN_SIZE, "%u-%s-%zu", attempts, rnd, size);
	}
	if (fetched)
		replies_free(r, 0, r->ncmds);
	freeReplyObject(lr);
	if (i < got) {
		/* the rest stay leased on the server and come back by rescue */
		while (*n)
			au_lease_release(&out[--*n]);
		oom(r->q);
		goto out;
	}
	*buried += (long long)nbad;
	if (nbad && bury_poison(r, queue, bad, nbad) < 0) {
		while (*n)
			au_lease_release(&out[--*n]);
		goto out;
	}
	rc = 0;
out:
	if (*dropped || *buried > (long long)nbad)
		au_log(AU_LOG_WARN, "queue '%s' of '%s': %lld malformed ready entries dead-lettered, "
		       "%lld removed (no id to file them under)", queue, r->q->url.text,
		       *buried - (long long)nbad, *dropped);
	free(bad);
	return rc;
}

/* Waits up to wait_ms (at most BLOCK_SLICE_MS) in BLPOP on the wake list
 * of queue: a token, or the time, ends it. */
static int wait_token(struct rq *r, const char *queue, int64_t wait_ms)
{
	char secs[32];

	if (wait_ms > BLOCK_SLICE_MS)
		wait_ms = BLOCK_SLICE_MS;
	if (wait_ms < 1)
		wait_ms = 1;
	/* not %f: a locale could make the point a comma */
	snprintf(secs, sizeof(secs), "%lld.%03lld", (long long)(wait_ms / 1000),
		 (long long)(wait_ms % 1000));
	p_reset(r);
	p_cmd(r, -1);
	p_str(r, "BLPOP");
	p_key(r, queue, "wakelist");
	p_str(r, secs);
	/* sent again after a broken connection: a token lost with it only
	 * wakes nobody, and the lease after it looks anyway */
	if (roundtrip(r, 1) < 0)
		return -1;
	replies_free(r, 0, 1);
	return 0;
}

static int rq_lease(struct au_queue *q, const char *queue, size_t max, uint32_t lease_ms,
		    uint32_t block_ms, struct au_lease *out, size_t *n)
{
	struct rq *r = q->ctx;
	uint64_t deadline = au_mono_us() + (uint64_t)block_ms * 1000;
	int rc = 0, rounds = 0;

	*n = 0;
	queue = au_queue_name(queue);
	if (max > LUA_BATCH)
		max = LUA_BATCH;
	while (max) {
		int64_t next_due_ms = -1, wait_ms;
		long long dropped = 0, buried = 0;
		uint64_t now;

		if ((rc = lease_once(r, queue, max, lease_ms, out, n, &next_due_ms, &dropped,
				     &buried)) < 0 || *n)
			break;
		/* only malformed entries came: more may wait behind them (a
		 * bounded number of times, so a list of them all still returns) */
		if ((dropped || buried) && ++rounds < LEASE_ROUNDS)
			continue;
		if (!block_ms || (now = au_mono_us()) >= deadline)
			break;
		/* a push made after that lease left a token: no push slips in
		 * between; a scheduled one falling due leaves none */
		wait_ms = (int64_t)((deadline - now + 999) / 1000);
		if (next_due_ms >= 0 && next_due_ms < wait_ms)
			wait_ms = next_due_ms;
		if ((rc = wait_token(r, queue, wait_ms)) < 0)
			break;
	}
	return rc;
}

/* ---- fenced writes ---- */

/* Orders refs by token, then as given. */
static int by_token(const void *a, const void *b)
{
	const struct au_ref *x = *(const struct au_ref *const *)a, *y = *(const struct au_ref *const *)b;
	int c = strcmp(x->token, y->token);

	return c ? c : (x > y) - (x < y);
}

/*
 * The ids of one token go to the script together, so it checks them with one
 * command; refs are sorted by token for that, and applied[] is filled back
 * in the caller's order.
 */
static int settle(struct au_queue *q, const char *queue, const struct au_ref *refs, size_t n,
		  const char *mode, const uint64_t *delay_ms, const char *const *text,
		  const struct au_story *story, uint32_t lease_ms, int idempotent, int *applied)
{
	struct rq *r = q->ctx;
	const struct au_ref **by;
	int retry = !strcmp(mode, "retry"), bury = !strcmp(mode, "bury"), rc = -1;
	size_t i, k, g, e, end;

	if (!n)
		return 0;
	if (!(by = malloc(n * sizeof(*by))))
		return oom(q);
	for (i = 0; i < n; i++)
		by[i] = &refs[i];
	qsort(by, n, sizeof(*by), by_token);
	queue = au_queue_name(queue);
	p_reset(r);
	for (i = 0; i < n; i += LUA_BATCH) {
		end = n - i < LUA_BATCH ? n : i + LUA_BATCH;
		p_cmd(r, SC_SETTLE);
		p_keys(r, queue);
		p_str(r, mode);
		p_i64(r, lease_ms);
		for (g = i; g < end; g = e) {
			for (e = g + 1; e < end && !strcmp(by[e]->token, by[g]->token); e++)
				;
			p_str(r, by[g]->token);
			p_i64(r, (int64_t)(e - g));
			for (k = g; k < e; k++)
				p_str(r, by[k]->id);
			for (k = g; retry && k < e; k++)
				p_i64(r, delay_ms ? (int64_t)au_queue_delay(delay_ms[by[k] - refs]) : 0);
			for (k = g; (retry || bury) && k < e; k++)
				p_str(r, text && text[by[k] - refs] ? text[by[k] - refs] : "");
			/* '' keeps the story: a stored one is never empty */
			for (k = g; retry && k < e; k++)
				if (story && story[by[k] - refs].len)
					p_bin(r, story[by[k] - refs].data, story[by[k] - refs].len);
				else
					p_str(r, "");
		}
	}
	if (roundtrip(r, idempotent) < 0)
		goto out;
	for (k = 0; k < r->ncmds; k++) {
		const redisReply *rep = r->rep[k];
		size_t first = k * LUA_BATCH, len = n - first < LUA_BATCH ? n - first : LUA_BATCH;

		if (rep->type != REDIS_REPLY_STRING || rep->len != len) {
			replies_free(r, 0, r->ncmds);
			bad_reply(r, mode);
			goto out;
		}
		for (i = 0; applied && i < len; i++)
			applied[by[first + i] - refs] = rep->str[i] == '1';
	}
	replies_free(r, 0, r->ncmds);
	rc = 0;
out:
	free(by);
	return rc;
}

static int rq_ack(struct au_queue *q, const char *queue, const struct au_ref *refs, size_t n,
		  int *applied)
{
	return settle(q, queue, refs, n, "ack", NULL, NULL, NULL, 0, 0, applied);
}

static int rq_retry(struct au_queue *q, const char *queue, const struct au_ref *refs, size_t n,
		    const uint64_t *delay_ms, const char *const *error,
		    const struct au_story *story, int *applied)
{
	return settle(q, queue, refs, n, "retry", delay_ms, error, story, 0, 0, applied);
}

static int rq_release(struct au_queue *q, const char *queue, const struct au_ref *refs,
		      size_t n, int *applied)
{
	return settle(q, queue, refs, n, "release", NULL, NULL, NULL, 0, 0, applied);
}

static int rq_bury(struct au_queue *q, const char *queue, const struct au_ref *refs, size_t n,
		   const char *const *reason, int *applied)
{
	return settle(q, queue, refs, n, "bury", NULL, reason, NULL, 0, 0, applied);
}

static int rq_extend(struct au_queue *q, const char *queue, const struct au_ref *refs,
		     size_t n, uint32_t lease_ms, int *applied)
{
	/* setting a deadline twice is harmless */
	return settle(q, queue, refs, n, "extend", NULL, NULL, NULL, lease_ms, 1, applied);
}

/* ---- maintenance and inspection ---- */

static int rq_rescue(struct au_queue *q, const char *queue, size_t max, size_t *requeued,
		     size_t *buried)
{
	struct rq *r = q->ctx;
	const redisReply *rep;

	int housekeep;

	*requeued = *buried = 0;
	if (!max)
		return 0;
	housekeep = au_queue_housekeep_due(&r->housekept, au_queue_name(queue));
	p_reset(r);
	p_cmd(r, SC_RESCUE);
	p_keys(r, au_queue_name(queue));
	p_i64(r, (int64_t)(max < LUA_BATCH ? max : LUA_BATCH));
	p_i64(r, RESCUE_THROTTLE_MS);
	if (housekeep) {   /* same round trip: the dead set's bounds, the rate's sample */
		p_cmd(r, SC_ADMIN);
		p_keys(r, au_queue_name(queue));
		p_str(r, "housekeep");
		p_i64(r, (int64_t)r->limits.max);
		p_i64(r, (int64_t)r->limits.max_age_ms);
	}
	if (roundtrip(r, 0) < 0)
		return -1;
	rep = r->rep[0];
	if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 2 ||
	    rep->element[0]->type != REDIS_REPLY_INTEGER ||
	    rep->element[1]->type != REDIS_REPLY_INTEGER) {
		replies_free(r, 0, r->ncmds);
		return bad_reply(r, "rescue");
	}
	*requeued = (size_t)rep->element[0]->integer;
	*buried = (size_t)rep->element[1]->integer;
	replies_free(r, 0, r->ncmds);
	return 0;
}

/* A malloc'ed copy of a bulk reply's bytes into *out, NULL when empty. */
static int reply_bytes(struct au_queue *q, const redisReply *v, unsigned char **out, size_t *len)
{
	*out = NULL;
	*len = 0;
	if (!v->len)
		return 0;
	if (!(*out = malloc(v->len)))
		return oom(q);
	memcpy(*out, v->str, v->len);
	*len = v->len;
	return 0;
}

static int rq_cancel(struct au_queue *q, const char *queue, const char *id,
		     struct au_cancelled *seen)
{
	struct rq *r = q->ctx;
	const redisReply *rep;
	long long v;
	int rc;

	queue = au_queue_name(queue);
	p_reset(r);
	p_cmd(r, SC_CANCEL);
	p_keys(r, queue);
	p_str(r, id);
	if (roundtrip(r, 0) < 0)
		return -1;
	rep = r->rep[0];
	if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 4 ||
	    rep->element[0]->type != REDIS_REPLY_INTEGER ||
	    rep->element[1]->type != REDIS_REPLY_STRING ||
	    rep->element[2]->type != REDIS_REPLY_INTEGER ||
	    rep->element[3]->type != REDIS_REPLY_STRING) {
		replies_free(r, 0, 1);
		return bad_reply(r, "cancel");
	}
	v = rep->element[0]->integer;
	rc = 0;
	if (seen && (v == 1 || v == 2)) {
		seen->attempts = (uint32_t)rep->element[2]->integer;
		rc = reply_bytes(q, rep->element[1], &seen->body, &seen->body_len);
		if (rc == 0)
			rc = reply_bytes(q, rep->element[3], &seen->story, &seen->story_len);
	}
	replies_free(r, 0, 1);
	if (rc < 0 && v == 1)   /* removed all the same: say so, without what it saw */
		au_cancelled_release(seen);
	else if (rc < 0)
		return -1;
	if (v == 1)
		return 0;
	if (v == 2)
		return au_seterr(&q->err, AU_ESTATE, "computation '%s' is running", id);
	if (v == 0)
		return au_seterr(&q->err, AU_ENOTFOUND, "no computation '%s' waiting in queue '%s'",
				 id, queue);
	return bad_reply(r, "cancel");
}

static int rq_peek(struct au_queue *q, const char *queue, const char *id,
		   struct au_queued *info)
{
	struct rq *r = q->ctx;
	const redisReply *rep;
	int rc = 0;

	queue = au_queue_name(queue);
	p_reset(r);
	p_cmd(r, SC_PEEK);
	p_keys(r, queue);
	p_str(r, id);
	if (roundtrip(r, 1) < 0)
		return -1;
	rep = r->rep[0];
	if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 5 ||
	    rep->element[0]->type != REDIS_REPLY_INTEGER ||
	    rep->element[1]->type != REDIS_REPLY_INTEGER ||
	    rep->element[2]->type != REDIS_REPLY_INTEGER ||
	    rep->element[3]->type != REDIS_REPLY_STRING ||
	    rep->element[4]->type != REDIS_REPLY_STRING ||
	    rep->element[0]->integer < 0 || rep->element[0]->integer > AU_QUEUED_WAITING)
		rc = bad_reply(r, "peek");
	else if (!rep->element[0]->integer)
		rc = au_seterr(&q->err, AU_ENOTFOUND, "no computation '%s' in queue '%s'", id, queue);
	else if (rep->element[4]->len && !(info->story = malloc(rep->element[4]->len)))
		rc = oom(q);
	else {
		info->story_len = rep->element[4]->len;
		if (info->story_len)
			memcpy(info->story, rep->element[4]->str, info->story_len);
		info->state = (enum au_queued_state)rep->element[0]->integer;
		info->attempts = (uint32_t)rep->element[1]->integer;
		info->max_attempts = (uint32_t)rep->element[2]->integer;
		snprintf(info->error, sizeof(info->error), "%s", rep->element[3]->str);
	}
	replies_free(r, 0, 1);
	return rc;
}

static int rq_stats(struct au_queue *q, const char *queue, struct au_queue_stats *st)
{
	struct rq *r = q->ctx;
	uint64_t paused = 0, *field[] = { &st->ready, &st->scheduled, &st->leased, &st->dead,
					  &paused, &st->processed, &st->failed, &st->per_minute,
					  &st->waiting };
	const redisReply *rep;
	size_t i;
	int rc = 0;

	p_reset(r);
	p_cmd(r, SC_STATS);
	p_keys(r, au_queue_name(queue));
	if (roundtrip(r, 1) < 0)
		return -1;
	rep = r->rep[0];
	if (rep->type != REDIS_REPLY_ARRAY || rep->elements != AU_ARRAY_SIZE(field))
		rc = bad_reply(r, "stats");
	for (i = 0; !rc && i < AU_ARRAY_SIZE(field); i++)
		*field[i] = rep->element[i]->type == REDIS_REPLY_INTEGER ?
			    (uint64_t)rep->element[i]->integer : 0;
	st->paused = paused != 0;
	replies_free(r, 0, 1);
	return rc;
}

static int rq_queues(struct au_queue *q, char ***names, size_t *n)
{
	struct rq *r = q->ctx;
	const redisReply *rep;
	char **v;
	size_t i;

	p_reset(r);
	p_cmd(r, -1);
	p_str(r, "SMEMBERS");
	p_str(r, "au:queues");
	if (roundtrip(r, 1) < 0)
		return -1;
	rep = r->rep[0];
	if (rep->type != REDIS_REPLY_ARRAY) {
		replies_free(r, 0, 1);
		return bad_reply(r, "queues");
	}
	v = calloc(rep->elements ? rep->elements : 1, sizeof(*v));
	for (i = 0; v && i < rep->elements; i++)
		if (!(v[i] = au_strndup(rep->element[i]->str ? rep->element[i]->str : "",
					 rep->element[i]->len))) {
			while (i--)
				free(v[i]);
			free(v);
			v = NULL;
		}
	*n = rep->elements;
	replies_free(r, 0, 1);
	if (!v)
		return oom(q);
	*names = v;
	return 0;
}

/* ---- watch: BLPOP on the wake list, on the caller's event loop ---- */

/*
 * The watch connection logs in and selects the URL's database (a list,
 * unlike a pub/sub channel, is in one), then waits in BLPOP <list> 0: no
 * timeout, so an idle worker costs the server nothing; a server that goes
 * away closes the connection or fails TCP keepalive, and the watch connects
 * again. Each token wakes one watch; one that comes while paused is pushed
 * back for another worker. Everything here runs on the loop and touches
 * only the watch and its connection.
 */

static void watch_connect(struct rwatch *w);

static void watch_later(struct rwatch *w, const char *why)
{
	struct timeval tv = { 0, REWATCH_MS * 1000 };
	char msg[128];

	if (!w->down)
		au_log(AU_LOG_WARN, "cannot watch queue '%s' of '%s': %s; retrying", w->queue,
		       w->r->q->url.text, au_redis_why(msg, sizeof(msg), why));
	w->down = 1;
	evtimer_add(w->timer, &tv);
}

/* Gives up the connection after an error reply: hiredis frees it once the
 * callback returns, and watch_disconnected connects again later. */
static void watch_fail(struct rwatch *w, redisAsyncContext *ac, const char *why)
{
	watch_later(w, why);
	redisAsyncFree(ac);
}

static void watch_token(redisAsyncContext *ac, void *reply, void *privdata);
static void cancel_message(redisAsyncContext *ac, void *reply, void *privdata);

static void watch_blpop(struct rwatch *w)
{
	const char *argv[3] = { "BLPOP", w->list, "0" };

	if (redisAsyncCommandArgv(w->ac, watch_token, NULL, 3, argv, NULL) == REDIS_OK)
		w->waiting = 1;
}

/* A message on the cancel channel: the id of a cancelled computation
 * ("subscribe" confirmations and anything else that is not an id are
 * passed over). */
static void cancel_message(redisAsyncContext *ac, void *reply, void *privdata)
{
	struct rwatch *w = ac->data;
	redisReply *rep = reply;
	char id[AU_ID_SIZE];

	(void)privdata;
	if (!w || !rep || rep->type != REDIS_REPLY_ARRAY || rep->elements != 3 ||
	    rep->element[0]->type != REDIS_REPLY_STRING || strcmp(rep->element[0]->str, "message") ||
	    rep->element[2]->type != REDIS_REPLY_STRING || rep->element[2]->len != AU_ID_SIZE - 1)
		return;
	memcpy(id, rep->element[2]->str, AU_ID_SIZE - 1);
	id[AU_ID_SIZE - 1] = '\0';
	if (au_id_valid(id))
		w->cancel(w->arg, id);
}

/* Logged in and on the database: waits, and wakes once for what came
 * while it was not waiting (as the first watch, and after an outage),
 * unless paused: the worker leases anyway when it has room again. */
static void watch_up(struct rwatch *w)
{
	w->ready = 1;
	if (w->down)
		au_log(AU_LOG_INFO, "watching queue '%s' of '%s' again", w->queue,
		       w->r->q->url.text);
	w->down = 0;
	if (w->cancel) {
		const char *argv[2] = { "SUBSCRIBE", w->list };

		redisAsyncCommandArgv(w->ac, cancel_message, NULL, 2, argv, NULL);
		return;
	}
	if (w->paused)
		return;
	watch_blpop(w);
	/* last: fn may unwatch */
	w->fn(w->arg);
}

static void watch_token(redisAsyncContext *ac, void *reply, void *privdata)
{
	struct rwatch *w = ac->data;
	redisReply *rep = reply;

	(void)privdata;
	/* NULL replies come while the context is being freed */
	if (!w || !rep)
		return;
	w->waiting = 0;
	if (rep->type == REDIS_REPLY_ERROR) {
		watch_fail(w, ac, rep->str);
		return;
	}
	if (w->paused) {
		/* meant for a worker with room: another one gets it */
		if (rep->type == REDIS_REPLY_ARRAY && rep->elements == 2 &&
		    rep->element[1]->type == REDIS_REPLY_STRING)
			redisAsyncCommand(ac, NULL, NULL, "LPUSH %s %b", w->list, rep->element[1]->str,
					  rep->element[1]->len);
		return;
	}
	watch_blpop(w);
	/* last: fn may unwatch */
	if (rep->type == REDIS_REPLY_ARRAY)
		w->fn(w->arg);
}

static void watch_setup(redisAsyncContext *ac, void *reply, void *privdata)
{
	struct rwatch *w = ac->data;
	redisReply *rep = reply;

	(void)privdata;
	if (!w || !rep)
		return;
	if (rep->type == REDIS_REPLY_ERROR)
		watch_fail(w, ac, rep->str);
	else if (!--w->setup)
		watch_up(w);
}

static void watch_connected(const redisAsyncContext *ac, int status)
{
	struct rwatch *w = ac->data;

	if (!w)
		return;
	if (status != REDIS_OK) {
		/* hiredis frees the context after this callback */
		w->ac = NULL;
		watch_later(w, ac->errstr);
		return;
	}
	evtimer_del(w->timer);
}

static void watch_disconnected(const redisAsyncContext *ac, int status)
{
	struct rwatch *w = ac->data;

	(void)status;
	if (!w)
		return;
	w->ac = NULL;
	w->ready = 0;
	if (w->paused && !w->waiting && !w->down) {
		/* idle while paused (the server's timeout closes such
		 * connections): connected again quietly, as on an outage */
		struct timeval tv = { 0, REWATCH_MS * 1000 };

		evtimer_add(w->timer, &tv);
		return;
	}
	w->waiting = 0;
	watch_later(w, ac->err ? ac->errstr : "disconnected");
}

static void watch_timer(evutil_socket_t fd, short what, void *arg)
{
	struct rwatch *w = arg;

	(void)fd;
	(void)what;
	if (w->ac) {
		/* hiredis' async connect has no timeout of its own */
		redisAsyncContext *ac = w->ac;

		w->ac = NULL;
		ac->data = NULL;
		redisAsyncFree(ac);
		watch_later(w, "connection timed out");
		return;
	}
	watch_connect(w);
}

static void watch_connect(struct rwatch *w)
{
	const struct au_url *url = &w->r->q->url;
	struct timeval tv = { AU_REDIS_CONNECT_TIMEOUT_MS / 1000,
			      AU_REDIS_CONNECT_TIMEOUT_MS % 1000 * 1000 };
	redisAsyncContext *ac = redisAsyncConnect(url->host, au_redis_port(url));
	const char *auth[3];
	char db[16];
	int argc;

	w->setup = w->ready = w->waiting = 0;
	if (!ac || ac->err) {
		watch_later(w, ac ? ac->errstr : "out of memory");
		if (ac)
			redisAsyncFree(ac);
		return;
	}
	ac->data = w;
	redisLibeventAttach(ac, w->base);
	redisAsyncSetConnectCallback(ac, watch_connected);
	redisAsyncSetDisconnectCallback(ac, watch_disconnected);
	redisEnableKeepAlive(&ac->c);
	/* queued until the connection is up; BLPOP waits for their replies,
	 * so that it never waits in another database. Without either, a PING:
	 * watch_up() then runs in a reply's callback too, where fn may free
	 * the context (not in the connect callback). */
	if ((argc = au_redis_auth_argv(url, auth)) &&
	    redisAsyncCommandArgv(ac, watch_setup, NULL, argc, auth, NULL) == REDIS_OK)
		w->setup++;
	snprintf(db, sizeof(db), "%d", w->r->db);
	if (w->r->db &&
	    redisAsyncCommandArgv(ac, watch_setup, NULL, 2, (const char *[]){ "SELECT", db }, NULL) ==
		    REDIS_OK)
		w->setup++;
	if (!argc && !w->r->db &&
	    redisAsyncCommandArgv(ac, watch_setup, NULL, 1, (const char *[]){ "PING" }, NULL) ==
		    REDIS_OK)
		w->setup++;
	if (!w->setup) {
		watch_later(w, "out of memory");
		redisAsyncFree(ac);
		return;
	}
	w->ac = ac;
	evtimer_add(w->timer, &tv);
}

/* A watch of queue's key au:{queue}:<name> (the wake list, or the cancel
 * channel), not yet connected; NULL on OOM. */
static struct rwatch *watch_new(struct rq *r, const char *queue, const char *name,
				struct event_base *base, void *arg)
{
	struct rwatch *w = calloc(1, sizeof(*w));

	if (!w || !(w->queue = au_strdup(queue)) ||
	    !(w->list = au_asprintf("au:{%s}:%s", w->queue, name)) ||
	    !(w->timer = evtimer_new(base, watch_timer, w))) {
		if (w) {
			free(w->queue);
			free(w->list);
		}
		free(w);
		return NULL;
	}
	w->r = r;
	w->base = base;
	w->arg = arg;
	return w;
}

static void watch_free(struct rwatch *w)
{
	if (w->ac) {
		w->ac->data = NULL;
		redisAsyncFree(w->ac);
	}
	event_free(w->timer);
	free(w->queue);
	free(w->list);
	free(w);
}

static int rq_watch(struct au_queue *q, const char *queue, struct event_base *base,
		    au_queue_wake_fn fn, void *arg)
{
	struct rq *r = q->ctx;
	struct rwatch *w;

	if (r->watch)
		return au_seterr(&q->err, AU_ESTATE, "'%s' is already watching a queue", q->url.text);
	if (!(w = watch_new(r, au_queue_name(queue), "wakelist", base, arg)))
		return oom(q);
	w->fn = fn;
	r->watch = w;
	watch_connect(w);
	return 0;
}

static void rq_watch_pause(struct au_queue *q, int paused)
{
	struct rq *r = q->ctx;
	struct rwatch *w = r->watch;

	if (!w)
		return;
	w->paused = paused != 0;
	/* a BLPOP still outstanding stays: its token is handed on */
	if (!w->paused && w->ready && !w->waiting)
		watch_blpop(w);
}

static void rq_unwatch(struct au_queue *q)
{
	struct rq *r = q->ctx;
	struct rwatch *w = r->watch;

	if (!w)
		return;
	/* callbacks still due from hiredis find no watch; a token the server
	 * sent the BLPOP meanwhile is lost with the connection (a worker's
	 * poll finds its computation) */
	watch_free(w);
	r->watch = NULL;
}

/* ---- administration (redis_scripts/admin.lua) ---- */

/* Starts an admin.lua call of mode on queue. */
static void p_admin(struct rq *r, const char *queue, const char *mode)
{
	p_cmd(r, SC_ADMIN);
	p_keys(r, queue);
	p_str(r, mode);
}

static uint64_t reply_u64(const redisReply *rep)
{
	return rep->type == REDIS_REPLY_STRING ? strtoull(rep->str, NULL, 10) : 0;
}

static int rq_dead(struct au_queue *q, const char *queue, const char *id, size_t max,
		   struct au_dead *out, size_t *n)
{
	struct rq *r = q->ctx;
	const redisReply *rep;
	size_t i, k;
	int rc = 0;

	if (max > LUA_BATCH)
		max = LUA_BATCH;
	if (!max)
		return 0;
	p_reset(r);
	p_admin(r, queue, "dead");
	p_i64(r, (int64_t)max);
	if (id)
		p_str(r, id);
	if (roundtrip(r, 1) < 0)
		return -1;
	rep = r->rep[0];
	if (rep->type != REDIS_REPLY_ARRAY || rep->elements % 6 || rep->elements / 6 > max) {
		replies_free(r, 0, 1);
		return bad_reply(r, "dead");
	}
	for (i = 0; i < rep->elements; i++)
		if (rep->element[i]->type != REDIS_REPLY_STRING) {
			replies_free(r, 0, 1);
			return bad_reply(r, "dead");
		}
	for (k = 0; k < rep->elements / 6; k++) {
		redisReply **e = rep->element + 6 * k;
		struct au_dead *d = &out[k];

		memset(d, 0, sizeof(*d));
		snprintf(d->id, sizeof(d->id), "%s", e[0]->str);
		d->died_at_ms = reply_u64(e[1]);
		d->attempts = (uint32_t)reply_u64(e[2]);
		snprintf(d->reason, sizeof(d->reason), "%s", e[3]->str);
		if (!(d->body = malloc(e[4]->len ? e[4]->len : 1))) {
			rc = oom(q);
			break;
		}
		memcpy(d->body, e[4]->str, e[4]->len);
		d->body_len = e[4]->len;
		if (e[5]->len && !(d->story = malloc(e[5]->len))) {
			au_dead_release(d);
			rc = oom(q);
			break;
		}
		if (e[5]->len)
			memcpy(d->story, e[5]->str, e[5]->len);
		d->story_len = e[5]->len;
	}
	if (rc < 0)
		while (k)
			au_dead_release(&out[--k]);
	*n = k;
	replies_free(r, 0, 1);
	return rc;
}

static int rq_requeue(struct au_queue *q, const char *queue, const char *const *ids, size_t n,
		      int *applied)
{
	struct rq *r = q->ctx;
	size_t i, k;

	if (!n)
		return 0;
	p_reset(r);
	for (i = 0; i < n; i += LUA_BATCH) {
		p_admin(r, queue, "requeue");
		for (k = i; k < n && k < i + LUA_BATCH; k++)
			p_str(r, ids[k]);
	}
	if (roundtrip(r, 0) < 0)
		return -1;
	for (k = 0; k < r->ncmds; k++) {
		const redisReply *rep = r->rep[k];
		size_t first = k * LUA_BATCH, len = n - first < LUA_BATCH ? n - first : LUA_BATCH;

		if (rep->type != REDIS_REPLY_STRING || rep->len != len) {
			replies_free(r, 0, r->ncmds);
			return bad_reply(r, "requeue");
		}
		for (i = 0; applied && i < len; i++)
			applied[first + i] = rep->str[i] == '1';
	}
	replies_free(r, 0, r->ncmds);
	return 0;
}

/* An admin.lua call whose reply is one count into *out. */
static int admin_count(struct au_queue *q, const char *what, int idempotent, size_t *out)
{
	struct rq *r = q->ctx;
	const redisReply *rep;

	if (roundtrip(r, idempotent) < 0)
		return -1;
	rep = r->rep[0];
	if (rep->type != REDIS_REPLY_INTEGER || rep->integer < 0) {
		replies_free(r, 0, r->ncmds);
		return bad_reply(r, what);
	}
	if (out)
		*out = (size_t)rep->integer;
	replies_free(r, 0, r->ncmds);
	return 0;
}

static int rq_purge(struct au_queue *q, const char *queue, uint64_t older_ms, size_t max,
		    size_t *removed)
{
	struct rq *r = q->ctx;

	p_reset(r);
	p_admin(r, queue, "purge");
	p_i64(r, (int64_t)(older_ms > INT64_MAX / 2 ? INT64_MAX / 2 : older_ms));
	p_i64(r, (int64_t)(max < LUA_BATCH ? max : LUA_BATCH));
	return admin_count(q, "purge", 1, removed);
}

static int rq_pause(struct au_queue *q, const char *queue, int paused)
{
	struct rq *r = q->ctx;

	p_reset(r);
	p_admin(r, queue, "pause");
	p_str(r, paused ? "1" : "0");
	/* a queue paused before its first push is listed all the same */
	p_cmd(r, -1);
	p_str(r, "SADD");
	p_str(r, "au:queues");
	p_str(r, queue);
	return admin_count(q, "pause", 1, NULL);
}

static int rq_empty(struct au_queue *q, const char *queue, size_t max, size_t *removed)
{
	struct rq *r = q->ctx;

	p_reset(r);
	p_admin(r, queue, "empty");
	p_i64(r, (int64_t)(max < LUA_BATCH ? max : LUA_BATCH));
	return admin_count(q, "empty", 0, removed);
}

static int rq_drop(struct au_queue *q, const char *queue, int force)
{
	struct rq *r = q->ctx;
	const redisReply *rep;
	long long v[5];
	size_t i;

	p_reset(r);
	p_admin(r, queue, "drop");
	p_str(r, force ? "1" : "0");
	if (roundtrip(r, 1) < 0)
		return -1;
	rep = r->rep[0];
	if (rep->type == REDIS_REPLY_ARRAY && rep->elements == 5) {
		for (i = 0; i < 5; i++)
			v[i] = rep->element[i]->type == REDIS_REPLY_INTEGER ? rep->element[i]->integer : 0;
		replies_free(r, 0, 1);
		if (v[4])
			return au_seterr(&q->err, AU_ESTATE, "queue '%s' holds computations: %lld"
					 " ready, %lld scheduled, %lld running, %lld dead, %lld"
					 " waiting", queue, v[0], v[1], v[2], v[3], v[4]);
		return au_seterr(&q->err, AU_ESTATE, "queue '%s' holds computations: %lld ready,"
				 " %lld scheduled, %lld running, %lld dead", queue, v[0], v[1], v[2],
				 v[3]);
	}
	if (rep->type != REDIS_REPLY_INTEGER) {
		replies_free(r, 0, 1);
		return bad_reply(r, "drop");
	}
	replies_free(r, 0, 1);
	p_reset(r);
	p_cmd(r, -1);
	p_str(r, "SREM");
	p_str(r, "au:queues");
	p_str(r, queue);
	if (r->listed && !strcmp(r->listed, queue)) {   /* a push lists it again */
		free(r->listed);
		r->listed = NULL;
	}
	return admin_count(q, "drop", 1, NULL);
}

/* One HEXISTS of the body hash per known queue, in one round trip. */
static int rq_locate(struct au_queue *q, const char *id, char **queue)
{
	struct rq *r = q->ctx;
	char **names = NULL;
	size_t n = 0, i;
	int rc = -1;

	if (rq_queues(q, &names, &n) < 0)
		return -1;
	p_reset(r);
	for (i = 0; i < n; i++) {
		p_cmd(r, -1);
		p_str(r, "HEXISTS");
		p_key(r, names[i], "body");
		p_str(r, id);
	}
	if (n && roundtrip(r, 1) < 0)
		goto out;
	for (i = 0; i < n && rc < 0; i++)
		if (r->rep[i]->type == REDIS_REPLY_INTEGER && r->rep[i]->integer == 1) {
			*queue = names[i];
			names[i] = NULL;
			rc = 0;
		}
	if (n)
		replies_free(r, 0, n);
	if (rc < 0)
		au_seterr(&q->err, AU_ENOTFOUND, "no queue of '%s' has computation '%s'", q->url.text,
			  id);
out:
	for (i = 0; i < n; i++)
		free(names[i]);
	free(names);
	return rc;
}

/* ---- cancels of running computations: PUBLISH au:{q}:cancel <id> ---- */

static int rq_cancel_running(struct au_queue *q, const char *queue, const char *id)
{
	struct rq *r = q->ctx;

	p_reset(r);
	p_cmd(r, -1);
	p_str(r, "PUBLISH");
	p_key(r, queue, "cancel");
	p_str(r, id);
	if (roundtrip(r, 0) < 0)
		return -1;
	replies_free(r, 0, 1);
	return 0;
}

/* A watch of its own connection (pub/sub takes a connection whole),
 * connected, logged in and kept up as the wake watch is. */
static int rq_watch_cancels(struct au_queue *q, const char *queue, struct event_base *base,
			    au_queue_cancel_fn fn, void *arg)
{
	struct rq *r = q->ctx;
	struct rwatch *w;

	if (r->cancels)
		return au_seterr(&q->err, AU_ESTATE, "'%s' is already watching cancels", q->url.text);
	if (!(w = watch_new(r, queue, "cancel", base, arg)))
		return oom(q);
	w->cancel = fn;
	r->cancels = w;
	watch_connect(w);
	return 0;
}

static void rq_unwatch_cancels(struct au_queue *q)
{
	struct rq *r = q->ctx;

	if (r->cancels)
		watch_free(r->cancels);
	r->cancels = NULL;
}

/* ---- rate limits (redis_scripts/rate.lua) ---- */

static int rq_rate_take(struct au_queue *q, const char *key, const struct au_rate_limit *lim,
			uint64_t *wait_ms, int *taken)
{
	struct rq *r = q->ctx;
	const redisReply *rep;
	char num[2][32];
	size_t off;

	snprintf(num[0], sizeof(num[0]), "%.17g", lim->rate_per_s);
	snprintf(num[1], sizeof(num[1]), "%.17g", lim->burst);
	p_reset(r);
	p_cmd(r, SC_RATE);
	p_str(r, "1");
	off = r->arena.len;
	if (au_buf_printf(&r->arena, "au:rate:%s", key) < 0)
		r->oom = 1;
	else
		p_push(r, NULL, off, r->arena.len - off);
	p_str(r, num[0]);
	p_str(r, num[1]);
	p_i64(r, lim->reserve_ms);
	/* sent again after a lost connection: at worst a token is lost */
	if (roundtrip(r, 1) < 0)
		return -1;
	rep = r->rep[0];
	if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 2 ||
	    rep->element[0]->type != REDIS_REPLY_INTEGER ||
	    rep->element[1]->type != REDIS_REPLY_INTEGER) {
		replies_free(r, 0, 1);
		return bad_reply(r, "rate_take");
	}
	*taken = rep->element[0]->integer == 1;
	*wait_ms = rep->element[1]->integer > 0 ? (uint64_t)rep->element[1]->integer : 0;
	if (!*taken && !*wait_ms)
		*wait_ms = 1;
	replies_free(r, 0, 1);
	return 0;
}

/* ---- flows: adopt (redis_scripts/flow.lua) ---- */

/* One script: it finds the queue where id has dependents, then adds each
 * of deps held now to the waits of each of them (a wait already there
 * stays one). */
static int rq_adopt(struct au_queue *q, const char *id, const char (*deps)[AU_ID_SIZE], size_t n)
{
	struct rq *r = q->ctx;
	size_t i;

	p_reset(r);
	p_cmd(r, SC_FLOW);
	p_keys(r, AU_DEFAULT_QUEUE);
	p_str(r, "adopt");
	p_str(r, id);
	for (i = 0; i < n; i++)
		p_bin(r, deps[i], strnlen(deps[i], AU_ID_SIZE));
	/* sending it again is harmless: a wait already there is not added */
	if (roundtrip(r, 1) < 0)
		return -1;
	if (r->rep[0]->type != REDIS_REPLY_INTEGER) {
		replies_free(r, 0, 1);
		return bad_reply(r, "adopt");
	}
	replies_free(r, 0, 1);
	return 0;
}

/* ---- the key-value space (redis_scripts/kv.lua): au:kv:<ns>:<key>, indexed
 * by au:kv:<ns> ---- */

/* Begins a kv.lua call on key (NULL: the index alone) of ns. */
static void p_kv(struct rq *r, const char *ns, const char *key, const char *mode)
{
	size_t off;

	p_cmd(r, SC_KV);
	p_str(r, "2");
	off = r->arena.len;
	if (au_buf_printf(&r->arena, "au:kv:%s:%s", ns, key ? key : "") < 0)
		r->oom = 1;
	else
		p_push(r, NULL, off, r->arena.len - off);
	off = r->arena.len;
	if (au_buf_printf(&r->arena, "au:kv:%s", ns) < 0)
		r->oom = 1;
	else
		p_push(r, NULL, off, r->arena.len - off);
	p_str(r, mode);
}

/* The integer reply of a kv call, into *done. */
static int kv_done(struct rq *r, const char *what, int idempotent, int *done)
{
	int rc = 0;

	if (roundtrip(r, idempotent) < 0)
		return -1;
	if (r->rep[0]->type != REDIS_REPLY_INTEGER)
		rc = bad_reply(r, what);
	else if (done)
		*done = r->rep[0]->integer == 1;
	replies_free(r, 0, r->ncmds);
	return rc;
}

static int rq_kv_put(struct au_queue *q, const char *ns, const char *key, const unsigned char *val,
		     size_t len, uint64_t ttl_ms, int nx, int *done)
{
	struct rq *r = q->ctx;

	*done = 0;
	p_reset(r);
	p_kv(r, ns, key, "put");
	p_bin(r, val, len);
	p_i64(r, (int64_t)au_queue_delay(ttl_ms));
	p_str(r, nx ? "1" : "0");
	/* an nx put sent again may find its own first write: it says 0 */
	return kv_done(r, "kv_put", !nx, done);
}

static int rq_kv_get(struct au_queue *q, const char *ns, const char *key, unsigned char **val,
		     size_t *len)
{
	struct rq *r = q->ctx;
	const redisReply *rep;
	size_t off;
	int rc = 0;

	*val = NULL;
	*len = 0;
	p_reset(r);
	p_cmd(r, -1);
	p_str(r, "GET");
	off = r->arena.len;
	if (au_buf_printf(&r->arena, "au:kv:%s:%s", ns, key) < 0)
		r->oom = 1;
	else
		p_push(r, NULL, off, r->arena.len - off);
	if (roundtrip(r, 1) < 0)
		return -1;
	rep = r->rep[0];
	if (rep->type == REDIS_REPLY_NIL)
		rc = au_seterr(&q->err, AU_ENOTFOUND, "no key '%s' in '%s' of '%s'", key, ns,
			       q->url.text);
	else if (rep->type != REDIS_REPLY_STRING)
		rc = bad_reply(r, "kv_get");
	else if (!(*val = malloc(rep->len ? rep->len : 1)))
		rc = oom(q);
	else {
		memcpy(*val, rep->str, rep->len);
		*len = rep->len;
	}
	replies_free(r, 0, 1);
	return rc;
}

static int rq_kv_del(struct au_queue *q, const char *ns, const char *key,
		     const unsigned char *expect, size_t expect_len, int *done)
{
	struct rq *r = q->ctx;

	*done = 0;
	p_reset(r);
	p_kv(r, ns, key, "del");
	if (expect)
		p_bin(r, expect, expect_len);
	/* a del sent again finds nothing: it says 0 */
	return kv_done(r, "kv_del", 0, done);
}

static int rq_kv_keys(struct au_queue *q, const char *ns, const char *prefix, size_t max,
		      char ***keys, size_t *n)
{
	struct rq *r = q->ctx;
	const redisReply *rep;
	char **out = NULL;
	size_t i;
	int rc = 0;

	*keys = NULL;
	*n = 0;
	p_reset(r);
	p_kv(r, ns, NULL, "keys");
	p_str(r, prefix);
	p_i64(r, (int64_t)max);
	if (roundtrip(r, 1) < 0)
		return -1;
	rep = r->rep[0];
	if (rep->type != REDIS_REPLY_ARRAY)
		rc = bad_reply(r, "kv_keys");
	else if (rep->elements && !(out = calloc(rep->elements, sizeof(*out))))
		rc = oom(q);
	for (i = 0; !rc && i < rep->elements; i++)
		if (rep->element[i]->type != REDIS_REPLY_STRING)
			rc = bad_reply(r, "kv_keys");
		else if (!(out[i] = au_strdup(rep->element[i]->str)))
			rc = oom(q);
	if (rc < 0) {
		for (i = 0; out && i < rep->elements; i++)
			free(out[i]);
		free(out);
	} else {
		*keys = out;
		*n = rep->elements;
	}
	replies_free(r, 0, 1);
	return rc;
}

/* ---- the worker registry (redis_scripts/registry.lua) ---- */

#define REGISTRY "au:registry:{workers}"
#define REGISTRY_MAX 10000      /* entries a list reads, at most */

/* EVAL of registry.lua: a beat every few seconds, so its text is sent each
 * time rather than kept among the SHA-named scripts of the busy paths. */
static void registry_cmd(struct rq *r, const char *op, const char *id)
{
	size_t off;

	p_cmd(r, -1);
	p_str(r, "EVAL");
	p_str(r, au_lua_registry);
	p_str(r, "2");
	p_str(r, REGISTRY);
	off = r->arena.len;
	if (au_buf_printf(&r->arena, REGISTRY ":%s", id ? id : "") < 0)
		r->oom = 1;
	else
		p_push(r, NULL, off, r->arena.len - off);
	p_str(r, op);
}

static void p_field(struct rq *r, const char *name, const char *value)
{
	p_str(r, name);
	p_copy(r, value, strlen(value));
}

static void p_field_u64(struct rq *r, const char *name, uint64_t v)
{
	p_str(r, name);
	p_i64(r, (int64_t)(v > INT64_MAX ? INT64_MAX : v));
}

static int rq_beat(struct au_queue *q, const struct au_worker_beat *b, int *stop)
{
	struct rq *r = q->ctx;
	char ids[AU_BEAT_IDS * AU_ID_SIZE] = "";
	size_t i, len = 0;

	for (i = 0; i < b->nids && i < AU_BEAT_IDS; i++)
		len += (size_t)snprintf(ids + len, sizeof(ids) - len, "%s%s", i ? " " : "", b->ids[i]);
	p_reset(r);
	registry_cmd(r, "beat", b->id);
	p_i64(r, b->ttl_ms);
	p_str(r, b->id);
	p_field(r, "id", b->id);
	p_field(r, "host", b->host);
	p_field_u64(r, "pid", b->pid);
	p_field(r, "queues", b->queues);
	p_field(r, "version", b->version);
	p_field_u64(r, "started", b->started_ms);
	p_field_u64(r, "concurrency", b->concurrency);
	p_field(r, "state", au_beat_state_name(b->state));
	p_field(r, "paused_by", b->paused_by);
	p_field_u64(r, "running", b->running);
	p_field(r, "running_ids", ids);
	p_field_u64(r, "leased", b->leased);
	p_field_u64(r, "completed", b->completed);
	p_field_u64(r, "failed", b->failed);
	p_field_u64(r, "retried", b->retried);
	p_field_u64(r, "released", b->released);
	p_field_u64(r, "outages", b->outages);
	p_field_u64(r, "ttl", b->ttl_ms);
	p_str(r, "metrics");   /* opaque bytes; empty when the worker has none */
	p_copy(r, b->metrics, b->metrics_len < sizeof(b->metrics) ? b->metrics_len : sizeof(b->metrics));
	if (roundtrip(r, 1) < 0)
		return -1;
	*stop = r->rep[0]->type == REDIS_REPLY_INTEGER && r->rep[0]->integer == 1;
	replies_free(r, 0, 1);
	return 0;
}

static uint64_t field_u64(const redisReply *v)
{
	if (v->type == REDIS_REPLY_INTEGER)
		return v->integer > 0 ? (uint64_t)v->integer : 0;
	return v->str ? strtoull(v->str, NULL, 10) : 0;
}

static void copy_str(char *dst, size_t size, const redisReply *v)
{
	size_t n = v->str ? (v->len < size - 1 ? v->len : size - 1) : 0;

	if (n)
		memcpy(dst, v->str, n);
	dst[n] = '\0';
}

/* One entry from HGETALL's field, value pairs; fields written by hand are
 * read as they come (a count that is no number counts 0). */
static void beat_of(struct au_worker_beat *b, const redisReply *h, uint64_t now)
{
	size_t i;

	memset(b, 0, sizeof(*b));
	for (i = 0; i + 1 < h->elements; i += 2) {
		const char *f = h->element[i]->str ? h->element[i]->str : "";
		const redisReply *v = h->element[i + 1];
		char ids[AU_BEAT_IDS * AU_ID_SIZE], *tok, *save;

		if (!strcmp(f, "id"))
			copy_str(b->id, sizeof(b->id), v);
		else if (!strcmp(f, "host"))
			copy_str(b->host, sizeof(b->host), v);
		else if (!strcmp(f, "pid"))
			b->pid = (uint32_t)field_u64(v);
		else if (!strcmp(f, "queues"))
			copy_str(b->queues, sizeof(b->queues), v);
		else if (!strcmp(f, "version"))
			copy_str(b->version, sizeof(b->version), v);
		else if (!strcmp(f, "started"))
			b->started_ms = field_u64(v);
		else if (!strcmp(f, "concurrency"))
			b->concurrency = (uint32_t)field_u64(v);
		else if (!strcmp(f, "state")) {
			char st[32];

			copy_str(st, sizeof(st), v);
			if (au_beat_state_parse(st, &b->state) < 0)
				b->state = AU_BEAT_RUNNING;
		} else if (!strcmp(f, "paused_by"))
			copy_str(b->paused_by, sizeof(b->paused_by), v);
		else if (!strcmp(f, "running"))
			b->running = (uint32_t)field_u64(v);
		else if (!strcmp(f, "running_ids")) {
			copy_str(ids, sizeof(ids), v);
			for (tok = strtok_r(ids, " ", &save); tok && b->nids < AU_BEAT_IDS;
			     tok = strtok_r(NULL, " ", &save))
				if (au_id_valid(tok))
					memcpy(b->ids[b->nids++], tok, AU_ID_SIZE);
		} else if (!strcmp(f, "leased"))
			b->leased = field_u64(v);
		else if (!strcmp(f, "completed"))
			b->completed = field_u64(v);
		else if (!strcmp(f, "failed"))
			b->failed = field_u64(v);
		else if (!strcmp(f, "retried"))
			b->retried = field_u64(v);
		else if (!strcmp(f, "released"))
			b->released = field_u64(v);
		else if (!strcmp(f, "outages"))
			b->outages = field_u64(v);
		else if (!strcmp(f, "ttl"))
			b->ttl_ms = (uint32_t)field_u64(v);
		else if (!strcmp(f, "beat"))
			b->beat_at_ms = field_u64(v);
		else if (!strcmp(f, "metrics") && v->str && v->len <= sizeof(b->metrics)) {
			memcpy(b->metrics, v->str, v->len);
			b->metrics_len = (uint32_t)v->len;
		}
	}
	b->age_ms = now > b->beat_at_ms ? now - b->beat_at_ms : 0;
}

static int rq_workers(struct au_queue *q, struct au_worker_beat **out, size_t *n)
{
	struct rq *r = q->ctx;
	const redisReply *rep;
	uint64_t now;
	size_t i;

	p_reset(r);
	registry_cmd(r, "list", NULL);
	p_i64(r, REGISTRY_MAX);
	if (roundtrip(r, 1) < 0)
		return -1;
	rep = r->rep[0];
	if (rep->type != REDIS_REPLY_ARRAY || rep->elements < 1) {
		replies_free(r, 0, 1);
		return bad_reply(r, "workers");
	}
	now = field_u64(rep->element[0]);
	if (!(*out = calloc(rep->elements, sizeof(**out)))) {
		replies_free(r, 0, 1);
		return oom(q);
	}
	for (i = 1; i < rep->elements; i++)
		if (rep->element[i]->type == REDIS_REPLY_ARRAY)
			beat_of(&(*out)[(*n)++], rep->element[i], now);
	replies_free(r, 0, 1);
	return 0;
}

static int rq_worker_stop(struct au_queue *q, const char *worker_id)
{
	struct rq *r = q->ctx;
	int found;

	p_reset(r);
	registry_cmd(r, "stop", worker_id);
	if (roundtrip(r, 1) < 0)
		return -1;
	found = r->rep[0]->type == REDIS_REPLY_INTEGER && r->rep[0]->integer == 1;
	replies_free(r, 0, 1);
	if (!found)
		return au_seterr(&q->err, AU_ENOTFOUND, "no live worker '%s' on '%s'", worker_id,
				 q->url.text);
	return 0;
}

static int rq_worker_gone(struct au_queue *q, const char *worker_id)
{
	struct rq *r = q->ctx;

	p_reset(r);
	registry_cmd(r, "gone", worker_id);
	p_str(r, worker_id);
	if (roundtrip(r, 1) < 0)
		return -1;
	replies_free(r, 0, 1);
	return 0;
}

const struct au_queue_ops au_redis_queue_ops = {
	.scheme = "redis",
	.alias = "rediss",        /* refused by au_redis_connect: no TLS in hiredis 0.14 */
	.features = AU_QUEUE_WATCH | AU_QUEUE_SHARED,
	.open = rq_open,
	.close = rq_close,
	.push = rq_push,
	.lease = rq_lease,
	.ack = rq_ack,
	.retry = rq_retry,
	.release = rq_release,
	.bury = rq_bury,
	.extend = rq_extend,
	.rescue = rq_rescue,
	.cancel = rq_cancel,
	.peek = rq_peek,
	.stats = rq_stats,
	.queues = rq_queues,
	.watch = rq_watch,
	.unwatch = rq_unwatch,
	.watch_pause = rq_watch_pause,
	.dead = rq_dead,
	.requeue = rq_requeue,
	.purge = rq_purge,
	.pause = rq_pause,
	.empty = rq_empty,
	.drop = rq_drop,
	.locate = rq_locate,
	.rate_take = rq_rate_take,
	.check = rq_check,
	.cancel_running = rq_cancel_running,
	.watch_cancels = rq_watch_cancels,
	.unwatch_cancels = rq_unwatch_cancels,
	.beat = rq_beat,
	.workers = rq_workers,
	.worker_stop = rq_worker_stop,
	.worker_gone = rq_worker_gone,
	.adopt = rq_adopt,
	.kv_put = rq_kv_put,
	.kv_get = rq_kv_get,
	.kv_del = rq_kv_del,
	.kv_keys = rq_kv_keys,
};
