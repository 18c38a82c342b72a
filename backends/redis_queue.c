/*
 * redis_queue.c - the Redis queue backend: redis://[:password@]host[:port][/db].
 *
 * Layout (docs/redis-layout.md): every key of queue q carries the hash tag
 * {q}, so one queue lives in one Cluster slot.
 *   au:{q}:ready:<p> LIST ids waiting to run at priority p, oldest first
 *   au:{q}:prios   ZSET p -> -p: the priorities with a ready list
 *   au:{q}:sched   ZSET id -> run_at ms (delayed and retry-delayed)
 *   au:{q}:order   HASH id -> "<priority> <seq>" while scheduled
 *   au:{q}:leased  ZSET id -> lease deadline ms (server clock)
 *   au:{q}:dead    ZSET id -> burial time ms
 *   au:{q}:body    HASH id -> the computation (wire format)
 *   au:{q}:tok     HASH id -> token of the current lease, "<attempt>-<hex>"
 *   au:{q}:att     HASH id -> attempts of finished leases (absent: 0)
 *   au:{q}:err     HASH id -> last error or bury reason
 *   au:{q}:seq     STRING counter: FIFO among scheduled ones due together
 *   au:{q}:rescue  STRING throttle of the expired-lease sweep (SET NX PX)
 *   au:queues      SET of queue names
 *   au:{q}:wake    pub/sub channel, published when something became ready
 *
 * Every operation is one round trip per batch: a Lua script (EVALSHA, EVAL
 * when the server lost its script cache) or a pipeline. Times come from
 * redis.call('TIME'). Only this file and the Redis store include hiredis.
 */
#include <ctype.h>
#include <errno.h>
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

#define CONNECT_TIMEOUT_MS 2000
#define COMMAND_TIMEOUT_MS 10000
#define RESCUE_THROTTLE_MS 1000  /* one sweep per queue per second, cluster-wide */
#define REWATCH_MS 500           /* delay before the watch connection is retried */
#define LUA_BATCH 1000           /* items per script call: unpack() stays far below Lua's limit */

/* ---- the scripts ---- */

/*
 * Every script gets the same KEYS (key_names below, in this order; the last
 * one is the prefix of the ready lists) and ARGV[1], the queue's wake
 * channel.
 *
 * Why the layout looks the way it does (all measured on Redis 7.0):
 * - Ready computations wait in one LIST per priority: RPUSH and LPOP cost a
 *   fraction of ZADD and ZPOPMIN, which also convert 16-digit scores.
 *   Cancelling a ready one is an LREM from the tail (recent ones are found
 *   at once, old ones cost a walk of their list).
 * - One hash per column (body, tok, ...) keyed by id rather than one hash
 *   per computation: a batch costs a few redis.call()s whatever its size,
 *   where per-computation keys cost several calls per computation.
 * - Small hashes and sorted sets are listpacks, where every access walks
 *   the whole thing; the in-flight ones (tok, leased) would stay there. A
 *   pin entry of 80 bytes ("~" * 80; at +inf in leased) makes Redis convert
 *   them to hash tables and skiplists for good.
 * - A lease token is "<attempt>-<random>": the attempt count is written to
 *   att only when a lease ends other than by ack.
 * - Priority and max_attempts are read from the body (cmsgpack) on the rare
 *   paths that need them (retry, release, rescue, cancel, peek), so a push
 *   writes one hash field and one list entry per computation.
 * Values read back go through tonumber(...) or a default, so entries
 * written by hand cannot make a script fail half way (Redis does not roll
 * back a failed script).
 */
#define LUA_PRELUDE \
	"local kprios, ksched, kleased, kdead = KEYS[1], KEYS[2], KEYS[3], KEYS[4]\n" \
	"local kseq, krescue, kbody, katt = KEYS[5], KEYS[6], KEYS[7], KEYS[8]\n" \
	"local ktok, kerr, korder, kready = KEYS[9], KEYS[10], KEYS[11], KEYS[12]\n" \
	"local t = redis.call('TIME')\n" \
	"local now = t[1] * 1000 + math.floor(t[2] / 1000)\n" \
	"local pin = string.rep('~', 80)\n" \
	"local function meta(body)\n" \
	"  local ok, c = pcall(cmsgpack.unpack, body or '')\n" \
	"  if ok and type(c) == 'table' then\n" \
	"    return tonumber(c.priority) or 0, tonumber(c.max_attempts) or 1\n" \
	"  end\n" \
	"  return 0, 1\n" \
	"end\n" \
	"local function attempts(token)\n" \
	"  return tonumber(string.match(token or '', '^(%d+)-'))\n" \
	"end\n" \
	"local function add(groups, p, id)\n" \
	"  local g = groups[p]\n" \
	"  if not g then\n" \
	"    g = {}\n" \
	"    groups[p] = g\n" \
	"  end\n" \
	"  g[#g + 1] = id\n" \
	"end\n" \
	"local function enqueue(groups)\n" \
	"  local n = 0\n" \
	"  for p, ids in pairs(groups) do\n" \
	"    redis.call('RPUSH', kready .. p, unpack(ids))\n" \
	"    redis.call('ZADD', kprios, -p, p)\n" \
	"    n = n + #ids\n" \
	"  end\n" \
	"  if n > 0 then redis.call('PUBLISH', ARGV[1], n) end\n" \
	"  return n\n" \
	"end\n"

enum { SC_PUSH, SC_LEASE, SC_SETTLE, SC_RESCUE, SC_CANCEL, SC_PEEK, SC_STATS, SC_COUNT };

static const char *const scripts[SC_COUNT] = {
	/* push: ARGV[2..] = id, body, priority, run_at per item. Ids the queue
	 * knows are left alone, so sending a push again is harmless: HSET
	 * counts the new fields, and only when some were known does the
	 * script look each id up (a ready one by LPOS from the tail of its
	 * list, where a push sent again finds it at once). Returns how many
	 * became ready. */
	[SC_PUSH] = LUA_PRELUDE
	"local n, body = (#ARGV - 1) / 4, {}\n"
	"for i = 2, #ARGV, 4 do\n"
	"  body[i / 2], body[i / 2 + 1] = ARGV[i], ARGV[i + 1]\n"
	"end\n"
	"local fresh = redis.call('HSET', kbody, unpack(body)) == n\n"
	"local s = redis.call('INCRBY', kseq, n) - n\n"
	"local groups, sched, order, ns = {}, {}, {}, 0\n"
	"for i = 2, #ARGV, 4 do\n"
	"  local id, p = ARGV[i], tonumber(ARGV[i + 2]) or 0\n"
	"  if fresh or not (redis.call('HEXISTS', ktok, id) == 1 or\n"
	"                   redis.call('ZSCORE', ksched, id) or redis.call('ZSCORE', kdead, id) or\n"
	"                   redis.call('LPOS', kready .. p, id, 'RANK', -1)) then\n"
	"    s = s + 1\n"
	"    if tonumber(ARGV[i + 3]) > now then\n"
	"      sched[ns + 1], sched[ns + 2] = ARGV[i + 3], id\n"
	"      order[ns + 1], order[ns + 2], ns = id, p .. ' ' .. s, ns + 2\n"
	"    else\n"
	"      add(groups, p, id)\n"
	"    end\n"
	"  end\n"
	"end\n"
	"if ns > 0 then\n"
	"  redis.call('ZADD', ksched, unpack(sched))\n"
	"  redis.call('HSET', korder, unpack(order))\n"
	"end\n"
	"return enqueue(groups)\n",

	/* lease: ARGV[2] max, ARGV[3] lease ms, ARGV[4] random hex for the
	 * tokens ("<attempt>-<hex>"). Due scheduled ones (up to 1000, in
	 * run_at then push order) become ready first.
	 * Returns {dropped, ms until the next scheduled one or -1 (only when
	 * nothing was leased), then id, body, attempt per lease}: the token is
	 * "<attempt>-<ARGV[4]>". An id without a body is dropped, one that is
	 * no id is buried. */
	[SC_LEASE] = LUA_PRELUDE
	"local max = tonumber(ARGV[2])\n"
	"local due = redis.call('ZRANGEBYSCORE', ksched, '-inf', now, 'WITHSCORES', 'LIMIT', 0, 1000)\n"
	"if #due > 0 then\n"
	"  local ids, at, pr, sq, groups = {}, {}, {}, {}, {}\n"
	"  for i = 1, #due, 2 do\n"
	"    ids[#ids + 1] = due[i]\n"
	"    at[due[i]] = tonumber(due[i + 1])\n"
	"  end\n"
	"  local ord = redis.call('HMGET', korder, unpack(ids))\n"
	"  for i, id in ipairs(ids) do\n"
	"    local p, s = string.match(ord[i] or '', '^(%-?%d+) (%d+)$')\n"
	"    pr[id], sq[id] = tonumber(p) or 0, tonumber(s) or 0\n"
	"  end\n"
	"  table.sort(ids, function(a, b)\n"
	"    if at[a] ~= at[b] then return at[a] < at[b] end\n"
	"    return sq[a] < sq[b]\n"
	"  end)\n"
	"  for _, id in ipairs(ids) do add(groups, pr[id], id) end\n"
	"  redis.call('ZREM', ksched, unpack(ids))\n"
	"  redis.call('HDEL', korder, unpack(ids))\n"
	"  enqueue(groups)\n"
	"end\n"
	"local ids, got = {}, 0\n"
	"while got < max do\n"
	"  local top = redis.call('ZRANGE', kprios, 0, 0)[1]\n"
	"  if not top then break end\n"
	"  local part = redis.call('LPOP', kready .. top, max - got)\n"
	"  if not part or #part < max - got then redis.call('ZREM', kprios, top) end\n"
	"  if part then\n"
	"    for i = 1, #part do ids[got + i] = part[i] end\n"
	"    got = got + #part\n"
	"  end\n"
	"end\n"
	"local out = {0, -1}\n"
	"if got == 0 then\n"
	"  local first = redis.call('ZRANGE', ksched, 0, 0, 'WITHSCORES')\n"
	"  if first[2] then out[2] = math.max(tonumber(first[2]) - now, 0) end\n"
	"  return out\n"
	"end\n"
	"local bodies = redis.call('HMGET', kbody, unpack(ids))\n"
	"local atts = {}\n"
	"if redis.call('EXISTS', katt) == 1 then atts = redis.call('HMGET', katt, unpack(ids)) end\n"
	"local deadline, first = tostring(now + tonumber(ARGV[3])), '1-' .. ARGV[4]\n"
	"local tok, leased, dead, why = {pin, pin}, {'+inf', pin}, {}, {}\n"
	"local nt, no, nd = 2, 2, 0\n"
	"for i = 1, got do\n"
	"  local id, body = ids[i], bodies[i]\n"
	"  if body and #id == 32 then\n"
	"    local a, token = 1, first\n"
	"    if atts[i] then\n"
	"      a = (tonumber(atts[i]) or 0) + 1\n"
	"      token = a .. '-' .. ARGV[4]\n"
	"    end\n"
	"    tok[nt + 1], tok[nt + 2] = id, token\n"
	"    leased[nt + 1], leased[nt + 2], nt = deadline, id, nt + 2\n"
	"    out[no + 1], out[no + 2], out[no + 3], no = id, body, a, no + 3\n"
	"  else\n"
	"    out[1] = out[1] + 1\n"
	"    if body then\n"
	"      dead[nd + 1], dead[nd + 2] = now, id\n"
	"      why[nd + 1], why[nd + 2], nd = id, 'invalid id', nd + 2\n"
	"    end\n"
	"  end\n"
	"end\n"
	"if nt > 2 then\n"
	"  redis.call('HSET', ktok, unpack(tok))\n"
	"  redis.call('ZADD', kleased, unpack(leased))\n"
	"end\n"
	"if nd > 0 then\n"
	"  redis.call('ZADD', kdead, unpack(dead))\n"
	"  redis.call('HSET', kerr, unpack(why))\n"
	"end\n"
	"return out\n",

	/* settle: the fenced writes of attempts. ARGV[2] mode, ARGV[3] lease
	 * ms (extend), then per item: id, token (ack, release, extend); id,
	 * token, delay ms, error or '' (retry); id, token, reason (bury).
	 * Returns '1' (applied) or '0' (stale token) per item. */
	[SC_SETTLE] = LUA_PRELUDE
	"local mode, ids, n = ARGV[2], {}, 0\n"
	"local stride = (mode == 'retry' and 4) or (mode == 'bury' and 3) or 2\n"
	"for i = 4, #ARGV, stride do\n"
	"  n = n + 1\n"
	"  ids[n] = ARGV[i]\n"
	"end\n"
	"local cur = redis.call('HMGET', ktok, unpack(ids))\n"
	"local out, done, at, nd = {}, {}, {}, 0\n"
	"for j = 1, n do\n"
	"  local i = 4 + (j - 1) * stride\n"
	"  if cur[j] and cur[j] == ARGV[i + 1] then\n"
	"    out[j], nd = '1', nd + 1\n"
	"    done[nd], at[nd] = ids[j], i\n"
	"  else\n"
	"    out[j] = '0'\n"
	"  end\n"
	"end\n"
	"if nd == 0 then return table.concat(out) end\n"
	"if mode == 'extend' then\n"
	"  local deadline, ext = tostring(now + tonumber(ARGV[3])), {}\n"
	"  for j = 1, nd do\n"
	"    ext[2 * j - 1], ext[2 * j] = deadline, done[j]\n"
	"  end\n"
	"  redis.call('ZADD', kleased, 'XX', unpack(ext))\n"
	"  return table.concat(out)\n"
	"end\n"
	"redis.call('ZREM', kleased, unpack(done))\n"
	"redis.call('HDEL', ktok, unpack(done))\n"
	"if mode == 'ack' then\n"
	"  redis.call('HDEL', kbody, unpack(done))\n"
	"  local again = {}\n"
	"  for j = 1, nd do\n"
	"    if string.sub(ARGV[at[j] + 1], 1, 2) ~= '1-' then again[#again + 1] = done[j] end\n"
	"  end\n"
	"  if #again > 0 then\n"
	"    redis.call('HDEL', katt, unpack(again))\n"
	"    redis.call('HDEL', kerr, unpack(again))\n"
	"  end\n"
	"  return table.concat(out)\n"
	"end\n"
	"local att, why, dead, sched, order, groups = {}, {}, {}, {}, {}, {}\n"
	"local bodies = redis.call('HMGET', kbody, unpack(done))\n"
	"local s = redis.call('INCRBY', kseq, nd) - nd\n"
	"for j = 1, nd do\n"
	"  local id, i, p = done[j], at[j], meta(bodies[j])\n"
	"  if mode ~= 'release' then\n"
	"    att[#att + 1] = id\n"
	"    att[#att + 1] = attempts(ARGV[i + 1]) or 1\n"
	"  end\n"
	"  if mode == 'bury' or (mode == 'retry' and ARGV[i + 3] ~= '') then\n"
	"    why[#why + 1] = id\n"
	"    why[#why + 1] = ARGV[i + stride - 1]\n"
	"  end\n"
	"  if mode == 'bury' then\n"
	"    dead[#dead + 1] = now\n"
	"    dead[#dead + 1] = id\n"
	"  elseif mode == 'retry' and tonumber(ARGV[i + 2]) > 0 then\n"
	"    sched[#sched + 1] = now + tonumber(ARGV[i + 2])\n"
	"    sched[#sched + 1] = id\n"
	"    order[#order + 1] = id\n"
	"    order[#order + 1] = p .. ' ' .. (s + j)\n"
	"  else\n"
	"    add(groups, p, id)\n"
	"  end\n"
	"end\n"
	"if #att > 0 then redis.call('HSET', katt, unpack(att)) end\n"
	"if #why > 0 then redis.call('HSET', kerr, unpack(why)) end\n"
	"if #dead > 0 then redis.call('ZADD', kdead, unpack(dead)) end\n"
	"if #sched > 0 then\n"
	"  redis.call('ZADD', ksched, unpack(sched))\n"
	"  redis.call('HSET', korder, unpack(order))\n"
	"end\n"
	"enqueue(groups)\n"
	"return table.concat(out)\n",

	/* rescue: ARGV[2] max, ARGV[3] throttle ms (a full sweep lifts it).
	 * Returns {requeued, buried}. */
	[SC_RESCUE] = LUA_PRELUDE
	"if not redis.call('SET', krescue, '1', 'NX', 'PX', ARGV[3]) then return {0, 0} end\n"
	"local max = tonumber(ARGV[2])\n"
	"local exp = redis.call('ZRANGEBYSCORE', kleased, '-inf', now, 'LIMIT', 0, max)\n"
	"if #exp == max then redis.call('DEL', krescue) end\n"
	"if #exp == 0 then return {0, 0} end\n"
	"local toks = redis.call('HMGET', ktok, unpack(exp))\n"
	"local bodies = redis.call('HMGET', kbody, unpack(exp))\n"
	"local att, why, dead, groups = {}, {}, {}, {}\n"
	"for i, id in ipairs(exp) do\n"
	"  local a, p, m = attempts(toks[i]) or 1, meta(bodies[i])\n"
	"  att[#att + 1] = id\n"
	"  att[#att + 1] = a\n"
	"  why[#why + 1] = id\n"
	"  if a >= m then\n"
	"    why[#why + 1] = 'lease expired after ' .. a .. ' attempts'\n"
	"    dead[#dead + 1] = now\n"
	"    dead[#dead + 1] = id\n"
	"  else\n"
	"    why[#why + 1] = 'lease expired on attempt ' .. a\n"
	"    add(groups, p, id)\n"
	"  end\n"
	"end\n"
	"redis.call('ZREM', kleased, unpack(exp))\n"
	"redis.call('HDEL', ktok, unpack(exp))\n"
	"redis.call('HSET', katt, unpack(att))\n"
	"redis.call('HSET', kerr, unpack(why))\n"
	"if #dead > 0 then redis.call('ZADD', kdead, unpack(dead)) end\n"
	"return {enqueue(groups), #dead / 2}\n",

	/* cancel: ARGV[2] id. 1 removed, 2 leased, 0 not waiting. */
	[SC_CANCEL] = LUA_PRELUDE
	"local id = ARGV[2]\n"
	"local removed = redis.call('ZREM', ksched, id) == 1\n"
	"if not removed then\n"
	"  if redis.call('HEXISTS', ktok, id) == 1 then return 2 end\n"
	"  local body = redis.call('HGET', kbody, id)\n"
	"  if not body or redis.call('ZSCORE', kdead, id) then return 0 end\n"
	"  removed = redis.call('LREM', kready .. meta(body), -1, id) > 0\n"
	"end\n"
	"if removed then\n"
	"  for _, k in ipairs({kbody, katt, kerr, korder}) do redis.call('HDEL', k, id) end\n"
	"  return 1\n"
	"end\n"
	"return 0\n",

	/* peek: ARGV[2] id. {state (enum au_job_state, 0 unknown),
	 * attempts, max_attempts, last error}. */
	[SC_PEEK] = LUA_PRELUDE
	"local id, st = ARGV[2], 0\n"
	"local token, body = redis.call('HGET', ktok, id), redis.call('HGET', kbody, id)\n"
	"if token then\n"
	"  st = 3\n"
	"elseif redis.call('ZSCORE', ksched, id) then\n"
	"  st = 2\n"
	"elseif redis.call('ZSCORE', kdead, id) then\n"
	"  st = 4\n"
	"elseif body then\n"
	"  st = 1\n"
	"end\n"
	"if st == 0 then return {0, 0, 0, ''} end\n"
	"local _, m = meta(body)\n"
	"return {st, attempts(token) or tonumber(redis.call('HGET', katt, id)) or 0, m,\n"
	"        redis.call('HGET', kerr, id) or ''}\n",

	/* stats: {ready, scheduled, leased, dead}. */
	[SC_STATS] = LUA_PRELUDE
	"local ready = 0\n"
	"for _, p in ipairs(redis.call('ZRANGE', kprios, 0, -1)) do\n"
	"  ready = ready + redis.call('LLEN', kready .. p)\n"
	"end\n"
	"return {ready, redis.call('ZCARD', ksched),\n"
	"        redis.call('ZCOUNT', kleased, '-inf', '(+inf'), redis.call('ZCARD', kdead)}\n",
};

static const char *const key_names[] = {
	"prios", "sched", "leased", "dead", "seq", "rescue",
	"body", "att", "tok", "err", "order", "ready:"
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
};

struct rwatch;

struct rq {
	struct au_queue *q;
	redisContext *c;            /* commands */
	redisContext *sub;          /* blocking leases wait on it */
	char *sub_channel;
	char sha[SC_COUNT][41];     /* "" if SCRIPT LOAD was refused: send EVAL */
	struct rwatch *watch;

	/* the pipeline of the operation in progress */
	struct arg *args;
	const char **argv;
	size_t *argvlen;
	size_t nargs, argcap;
	struct au_buf arena;
	struct cmd *cmds;
	redisReply **rep;
	size_t ncmds, cmdcap;
	int oom;
};

struct rwatch {
	struct rq *r;
	struct event_base *base;
	redisAsyncContext *ac;      /* NULL between connections */
	struct event *timer;        /* connect timeout, then reconnect delay */
	char *queue, *channel;
	au_queue_wake_fn fn;
	void *arg;
	int down;                   /* an outage was logged */
};

static int oom(struct au_queue *q)
{
	return au_seterr(&q->err, AU_ENOMEM, "out of memory");
}

static const char *qname(const char *queue)
{
	return queue ? queue : "default";
}

static int port_of(const struct au_url *url)
{
	return url->port ? url->port : 6379;
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
	r->cmds[r->ncmds++] = (struct cmd){ r->nargs, script };
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

/* numkeys, the keys of queue, then its wake channel as ARGV[1] */
static void p_keys(struct rq *r, const char *queue)
{
	size_t i;

	p_i64(r, (int64_t)AU_ARRAY_SIZE(key_names));
	for (i = 0; i < AU_ARRAY_SIZE(key_names); i++)
		p_key(r, queue, key_names[i]);
	p_key(r, queue, "wake");
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

/* hiredis' messages start with a capital */
static const char *lowered(const char *msg, char *buf, size_t len)
{
	snprintf(buf, len, "%s", msg);
	buf[0] = (char)tolower((unsigned char)buf[0]);
	return buf;
}

static int conn_error(struct rq *r, const redisContext *c, const char *what)
{
	char msg[sizeof(c->errstr)];

	/* a socket timeout reads as EAGAIN */
	if (c->err == REDIS_ERR_IO && !strcmp(c->errstr, strerror(EAGAIN)))
		return au_seterr(&r->q->err, AU_ETIMEDOUT, "%s '%s': timed out", what,
				 r->q->url.text);
	return au_seterr(&r->q->err, AU_ECONN, "%s '%s': %s", what, r->q->url.text,
			 lowered(c->errstr, msg, sizeof(msg)));
}

static int reply_error(struct rq *r, const redisReply *rep)
{
	return au_seterr(&r->q->err, AU_EPROTO, "redis error from '%s': %s", r->q->url.text,
			 rep->str);
}

static int bad_reply(struct rq *r, const char *what)
{
	return au_seterr(&r->q->err, AU_EPROTO, "unexpected reply from '%s' to %s",
			 r->q->url.text, what);
}

/* A command on a fresh connection (AUTH, SELECT, SUBSCRIBE). */
static int setup_command(struct rq *r, redisContext *c, int argc, const char **argv)
{
	redisReply *rep = redisCommandArgv(c, argc, argv, NULL);
	int rc = 0;

	if (!rep)
		return conn_error(r, c, "lost connection to");
	if (rep->type == REDIS_REPLY_ERROR)
		rc = reply_error(r, rep);
	freeReplyObject(rep);
	return rc;
}

/* Connects, authenticates, selects the database. NULL with q->err set. */
static redisContext *conn_new(struct rq *r)
{
	const struct au_url *url = &r->q->url;
	struct timeval ct = { CONNECT_TIMEOUT_MS / 1000, CONNECT_TIMEOUT_MS % 1000 * 1000 };
	struct timeval to = { COMMAND_TIMEOUT_MS / 1000, COMMAND_TIMEOUT_MS % 1000 * 1000 };
	redisContext *c = redisConnectWithTimeout(url->host, port_of(url), ct);

	if (!c) {
		oom(r->q);
		return NULL;
	}
	if (c->err) {
		conn_error(r, c, "unable to connect to");
		redisFree(c);
		return NULL;
	}
	redisSetTimeout(c, to);
	redisEnableKeepAlive(c);
	if (url->password) {
		/* AUTH [user] password: an ACL user when the URL names one */
		const char *argv[] = { "AUTH", url->user, url->password };
		int user = url->user && *url->user;

		if (!user)
			argv[1] = url->password;
		if (setup_command(r, c, user ? 3 : 2, argv) < 0)
			goto fail;
	}
	if (url->path && *url->path && strcmp(url->path, "0") &&
	    setup_command(r, c, 2, (const char *[]){ "SELECT", url->path }) < 0)
		goto fail;
	return c;
fail:
	redisFree(c);
	return NULL;
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
	eval = eval || !r->sha[c->script][0];
	r->argv[c->first] = eval ? "EVAL" : "EVALSHA";
	r->argvlen[c->first] = strlen(r->argv[c->first]);
	r->argv[c->first + 1] = eval ? scripts[c->script] : r->sha[c->script];
	r->argvlen[c->first + 1] = strlen(r->argv[c->first + 1]);
}

static int noscript_reply(const redisReply *rep)
{
	return rep->type == REDIS_REPLY_ERROR && !strncmp(rep->str, "NOSCRIPT", 8);
}

static void append(struct rq *r, size_t i)
{
	size_t end = i + 1 < r->ncmds ? r->cmds[i + 1].first : r->nargs;

	redisAppendCommandArgv(r->c, (int)(end - r->cmds[i].first), r->argv + r->cmds[i].first,
			       r->argvlen + r->cmds[i].first);
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

/* The eviction policy (a queue must never lose keys) and the scripts, in one
 * round trip. */
static int check_server(struct rq *r)
{
	redisReply *rep[1 + SC_COUNT] = { NULL };
	size_t i;
	int rc = 0;

	redisAppendCommand(r->c, "CONFIG GET maxmemory-policy");
	for (i = 0; i < SC_COUNT; i++)
		redisAppendCommand(r->c, "SCRIPT LOAD %s", scripts[i]);
	for (i = 0; i < AU_ARRAY_SIZE(rep); i++)
		if (redisGetReply(r->c, (void **)&rep[i]) != REDIS_OK) {
			rc = conn_error(r, r->c, "lost connection to");
			goto out;
		}
	if (rep[0]->type == REDIS_REPLY_ARRAY && rep[0]->elements == 2 &&
	    rep[0]->element[1]->type == REDIS_REPLY_STRING) {
		if (strcmp(rep[0]->element[1]->str, "noeviction")) {
			rc = au_seterr(&r->q->err, AU_ESTATE,
				       "redis at '%s' uses maxmemory-policy '%s': au needs 'noeviction'",
				       r->q->url.text, rep[0]->element[1]->str);
			goto out;
		}
	} else {
		au_log(AU_LOG_WARN,
		       "cannot check the maxmemory-policy of '%s' (%s): au needs 'noeviction'",
		       r->q->url.text,
		       rep[0]->type == REDIS_REPLY_ERROR ? rep[0]->str : "no such setting");
	}
	for (i = 0; i < SC_COUNT; i++)
		if (rep[1 + i]->type == REDIS_REPLY_STRING && rep[1 + i]->len == 40)
			memcpy(r->sha[i], rep[1 + i]->str, 41);
out:
	for (i = 0; i < AU_ARRAY_SIZE(rep); i++)
		if (rep[i])
			freeReplyObject(rep[i]);
	return rc;
}

static void rq_unwatch(struct au_queue *q);
static void sub_drop(struct rq *r);

static void rq_free(struct rq *r)
{
	conn_drop(r);
	sub_drop(r);
	free(r->args);
	free(r->argv);
	free(r->argvlen);
	free(r->cmds);
	free(r->rep);
	au_buf_release(&r->arena);
	free(r);
}

static int rq_open(struct au_queue *q, const struct au_url *url)
{
	struct rq *r = calloc(1, sizeof(*r));

	if (!r)
		return oom(q);
	r->q = q;
	if (url->path && url->path[strspn(url->path, "0123456789")]) {
		au_seterr(&q->err, AU_EINVAL, "invalid database '%s' in '%s'", url->path, url->text);
		goto fail;
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
	rq_free(q->ctx);
	q->ctx = NULL;
}

/* ---- push ---- */

static int rq_push(struct au_queue *q, const struct au_computation *cs, size_t n)
{
	struct rq *r = q->ctx;
	struct au_buf bodies = AU_BUF_INIT;
	size_t *off = malloc((n + 1) * sizeof(*off)), i, k, count;
	char *done = calloc(n + 1, 1);
	int rc = -1;

	if (!off || !done) {
		oom(q);
		goto out;
	}
	for (i = 0; i < n; i++) {
		off[i] = bodies.len;
		if (au_computation_encode(&cs[i], &bodies, &q->err) < 0)
			goto out;
	}
	off[n] = bodies.len;
	p_reset(r);
	/* one script call per queue (and LUA_BATCH items), in the order queues
	 * first appear */
	for (i = 0; i < n; i++) {
		const char *name = qname(cs[i].queue);

		if (done[i])
			continue;
		for (k = i, count = 0; k < n; k++) {
			if (done[k] || strcmp(qname(cs[k].queue), name))
				continue;
			if (count++ % LUA_BATCH == 0) {
				p_cmd(r, SC_PUSH);
				p_keys(r, name);
			}
			p_str(r, cs[k].id);
			p_bin(r, bodies.data + off[k], off[k + 1] - off[k]);
			p_i64(r, cs[k].priority);
			p_i64(r, (int64_t)cs[k].run_at_ms);
			done[k] = 1;
		}
	}
	if (n) {
		p_cmd(r, -1);
		p_str(r, "SADD");
		p_str(r, "au:queues");
		for (i = 0; i < n; i++) {
			for (k = 0; k < i && strcmp(qname(cs[k].queue), qname(cs[i].queue)); k++)
				;
			if (k == i)
				p_str(r, qname(cs[i].queue));
		}
		/* pushing again is harmless: known ids are left alone */
		if (roundtrip(r, 1) < 0)
			goto out;
		replies_free(r, 0, r->ncmds);
	}
	rc = 0;
out:
	au_buf_release(&bodies);
	free(off);
	free(done);
	return rc;
}

/* ---- lease ---- */

static int lease_once(struct rq *r, const char *queue, size_t max, uint32_t lease_ms,
		      struct au_lease *out, size_t *n, int64_t *next_due_ms)
{
	char rnd[17];
	redisReply *rep;
	size_t i;

	snprintf(rnd, sizeof(rnd), "%016llx", (unsigned long long)au_random64());
	p_reset(r);
	p_cmd(r, SC_LEASE);
	p_keys(r, queue);
	p_i64(r, (int64_t)max);
	p_i64(r, lease_ms);
	p_str(r, rnd);
	if (roundtrip(r, 0) < 0)
		return -1;
	rep = r->rep[0];
	if (rep->type != REDIS_REPLY_ARRAY || rep->elements < 2 || (rep->elements - 2) % 3 ||
	    (rep->elements - 2) / 3 > max || rep->element[0]->type != REDIS_REPLY_INTEGER ||
	    rep->element[1]->type != REDIS_REPLY_INTEGER)
		goto bad;
	for (i = 2; i < rep->elements; i += 3) {
		redisReply **e = rep->element + i;

		if (e[0]->type != REDIS_REPLY_STRING || e[0]->len >= AU_ID_SIZE ||
		    e[1]->type != REDIS_REPLY_STRING || e[2]->type != REDIS_REPLY_INTEGER ||
		    e[2]->integer < 1 || e[2]->integer > UINT32_MAX)
			goto bad;
	}
	if (rep->element[0]->integer)
		au_log(AU_LOG_WARN, "dropped %lld entries without a valid job from queue '%s' of '%s'",
		       rep->element[0]->integer, queue, r->q->url.text);
	*next_due_ms = rep->element[1]->integer;
	for (*n = 0, i = 2; i < rep->elements; i += 3, ++*n) {
		redisReply **e = rep->element + i;
		struct au_lease *l = &out[*n];

		/* the rest stay leased on the server and come back by rescue */
		l->body = malloc(e[1]->len ? e[1]->len : 1);
		if (!l->body) {
			while (*n)
				au_lease_release(&out[--*n]);
			replies_free(r, 0, 1);
			return oom(r->q);
		}
		memcpy(l->body, e[1]->str, e[1]->len);
		l->body_len = e[1]->len;
		memcpy(l->ref.id, e[0]->str, e[0]->len + 1);
		l->attempts = (uint32_t)e[2]->integer;
		/* as the script wrote it to tok */
		snprintf(l->ref.token, sizeof(l->ref.token), "%u-%s", l->attempts, rnd);
	}
	replies_free(r, 0, 1);
	return 0;
bad:
	replies_free(r, 0, 1);
	return bad_reply(r, "lease");
}

static void sub_drop(struct rq *r)
{
	if (r->sub)
		redisFree(r->sub);
	r->sub = NULL;
	free(r->sub_channel);
	r->sub_channel = NULL;
}

/* A new subscriber connection, listening on channel. */
static int sub_open(struct rq *r, const char *channel)
{
	sub_drop(r);
	if (!(r->sub_channel = au_strdup(channel)))
		return oom(r->q);
	r->sub = conn_new(r);
	if (!r->sub || setup_command(r, r->sub, 2, (const char *[]){ "SUBSCRIBE", channel }) < 0) {
		sub_drop(r);
		return -1;
	}
	return 0;
}

/* Consumes what the subscriber connection received, waiting up to wait_ms
 * for the first message (0: only what is there). A broken connection is
 * dropped: the caller leases again, then subscribes anew. */
static void sub_read(struct rq *r, int wait_ms)
{
	int got = 0;

	if (!r->sub)
		return;
	for (;;) {
		struct pollfd pfd = { r->sub->fd, POLLIN, 0 };
		void *msg;

		while (redisReaderGetReply(r->sub->reader, &msg) == REDIS_OK && msg) {
			freeReplyObject(msg);
			got = 1;
		}
		if (r->sub->reader->err)
			break;
		if (poll(&pfd, 1, got ? 0 : wait_ms) <= 0)
			return;
		if (redisBufferRead(r->sub) != REDIS_OK)
			break;
	}
	sub_drop(r);
}

static int rq_lease(struct au_queue *q, const char *queue, size_t max, uint32_t lease_ms,
		    uint32_t block_ms, struct au_lease *out, size_t *n)
{
	struct rq *r = q->ctx;
	uint64_t deadline = au_mono_us() + (uint64_t)block_ms * 1000;
	char *channel = NULL;
	int rc = 0;

	*n = 0;
	queue = qname(queue);
	if (max > LUA_BATCH)
		max = LUA_BATCH;
	while (max) {
		int64_t next_due_ms = -1, wait_ms;
		uint64_t now;

		/* wake-ups sent before this lease are answered by it; draining
		 * them also keeps them from piling up between calls */
		sub_read(r, 0);
		if ((rc = lease_once(r, queue, max, lease_ms, out, n, &next_due_ms)) < 0 ||
		    *n || !block_ms || (now = au_mono_us()) >= deadline)
			break;
		if (!channel && !(channel = au_asprintf("au:{%s}:wake", queue))) {
			rc = oom(q);
			break;
		}
		if (!r->sub || strcmp(r->sub_channel, channel)) {
			/* subscribe, then lease again: no push can slip in between */
			if ((rc = sub_open(r, channel)) < 0)
				break;
			continue;
		}
		/* a scheduled computation falling due publishes nothing */
		wait_ms = (int64_t)((deadline - now + 999) / 1000);
		if (next_due_ms >= 0 && next_due_ms < wait_ms)
			wait_ms = next_due_ms;
		sub_read(r, (int)wait_ms);
	}
	free(channel);
	return rc;
}

/* ---- fenced writes ---- */

static int settle(struct au_queue *q, const char *queue, const struct au_ref *refs, size_t n,
		  const char *mode, const uint64_t *delay_ms, const char *const *text,
		  uint32_t lease_ms, int idempotent, int *applied)
{
	struct rq *r = q->ctx;
	size_t i, k;

	if (!n)
		return 0;
	queue = qname(queue);
	p_reset(r);
	for (i = 0; i < n; i++) {
		if (i % LUA_BATCH == 0) {
			p_cmd(r, SC_SETTLE);
			p_keys(r, queue);
			p_str(r, mode);
			p_i64(r, lease_ms);
		}
		p_str(r, refs[i].id);
		p_str(r, refs[i].token);
		if (!strcmp(mode, "retry"))
			p_i64(r, delay_ms ? (int64_t)delay_ms[i] : 0);
		if (!strcmp(mode, "retry") || !strcmp(mode, "bury"))
			p_str(r, text && text[i] ? text[i] : "");
	}
	if (roundtrip(r, idempotent) < 0)
		return -1;
	for (k = 0; k < r->ncmds; k++) {
		const redisReply *rep = r->rep[k];
		size_t first = k * LUA_BATCH, len = n - first < LUA_BATCH ? n - first : LUA_BATCH;

		if (rep->type != REDIS_REPLY_STRING || rep->len != len) {
			replies_free(r, 0, r->ncmds);
			return bad_reply(r, mode);
		}
		for (i = 0; applied && i < len; i++)
			applied[first + i] = rep->str[i] == '1';
	}
	replies_free(r, 0, r->ncmds);
	return 0;
}

static int rq_ack(struct au_queue *q, const char *queue, const struct au_ref *refs, size_t n,
		  int *applied)
{
	return settle(q, queue, refs, n, "ack", NULL, NULL, 0, 0, applied);
}

static int rq_retry(struct au_queue *q, const char *queue, const struct au_ref *refs, size_t n,
		    const uint64_t *delay_ms, const char *const *error, int *applied)
{
	return settle(q, queue, refs, n, "retry", delay_ms, error, 0, 0, applied);
}

static int rq_release(struct au_queue *q, const char *queue, const struct au_ref *refs,
		      size_t n, int *applied)
{
	return settle(q, queue, refs, n, "release", NULL, NULL, 0, 0, applied);
}

static int rq_bury(struct au_queue *q, const char *queue, const struct au_ref *refs, size_t n,
		   const char *const *reason, int *applied)
{
	return settle(q, queue, refs, n, "bury", NULL, reason, 0, 0, applied);
}

static int rq_extend(struct au_queue *q, const char *queue, const struct au_ref *refs,
		     size_t n, uint32_t lease_ms, int *applied)
{
	/* setting a deadline twice is harmless */
	return settle(q, queue, refs, n, "extend", NULL, NULL, lease_ms, 1, applied);
}

/* ---- maintenance and inspection ---- */

static int rq_rescue(struct au_queue *q, const char *queue, size_t max, size_t *requeued,
		     size_t *buried)
{
	struct rq *r = q->ctx;
	const redisReply *rep;

	*requeued = *buried = 0;
	if (!max)
		return 0;
	p_reset(r);
	p_cmd(r, SC_RESCUE);
	p_keys(r, qname(queue));
	p_i64(r, (int64_t)(max < LUA_BATCH ? max : LUA_BATCH));
	p_i64(r, RESCUE_THROTTLE_MS);
	if (roundtrip(r, 0) < 0)
		return -1;
	rep = r->rep[0];
	if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 2 ||
	    rep->element[0]->type != REDIS_REPLY_INTEGER ||
	    rep->element[1]->type != REDIS_REPLY_INTEGER) {
		replies_free(r, 0, 1);
		return bad_reply(r, "rescue");
	}
	*requeued = (size_t)rep->element[0]->integer;
	*buried = (size_t)rep->element[1]->integer;
	replies_free(r, 0, 1);
	return 0;
}

static int rq_cancel(struct au_queue *q, const char *queue, const char *id)
{
	struct rq *r = q->ctx;
	long long v;

	queue = qname(queue);
	p_reset(r);
	p_cmd(r, SC_CANCEL);
	p_keys(r, queue);
	p_str(r, id);
	if (roundtrip(r, 0) < 0)
		return -1;
	v = r->rep[0]->type == REDIS_REPLY_INTEGER ? r->rep[0]->integer : -1;
	replies_free(r, 0, 1);
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
		   struct au_job_info *info)
{
	struct rq *r = q->ctx;
	const redisReply *rep;
	int rc = 0;

	queue = qname(queue);
	p_reset(r);
	p_cmd(r, SC_PEEK);
	p_keys(r, queue);
	p_str(r, id);
	if (roundtrip(r, 1) < 0)
		return -1;
	rep = r->rep[0];
	if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 4 ||
	    rep->element[0]->type != REDIS_REPLY_INTEGER ||
	    rep->element[1]->type != REDIS_REPLY_INTEGER ||
	    rep->element[2]->type != REDIS_REPLY_INTEGER ||
	    rep->element[3]->type != REDIS_REPLY_STRING ||
	    rep->element[0]->integer < 0 || rep->element[0]->integer > AU_JOB_DEAD)
		rc = bad_reply(r, "peek");
	else if (!rep->element[0]->integer)
		rc = au_seterr(&q->err, AU_ENOTFOUND, "no computation '%s' in queue '%s'", id, queue);
	else {
		info->state = (enum au_job_state)rep->element[0]->integer;
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
	uint64_t *field[] = { &st->ready, &st->scheduled, &st->leased, &st->dead };
	const redisReply *rep;
	size_t i;
	int rc = 0;

	p_reset(r);
	p_cmd(r, SC_STATS);
	p_keys(r, qname(queue));
	if (roundtrip(r, 1) < 0)
		return -1;
	rep = r->rep[0];
	if (rep->type != REDIS_REPLY_ARRAY || rep->elements != AU_ARRAY_SIZE(field))
		rc = bad_reply(r, "stats");
	for (i = 0; !rc && i < AU_ARRAY_SIZE(field); i++)
		*field[i] = rep->element[i]->type == REDIS_REPLY_INTEGER ?
			    (uint64_t)rep->element[i]->integer : 0;
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

/* ---- watch: a subscriber on the caller's event loop ---- */

static void watch_connect(struct rwatch *w);

static void watch_later(struct rwatch *w, const char *why)
{
	struct timeval tv = { 0, REWATCH_MS * 1000 };
	char msg[128];

	if (!w->down)
		au_log(AU_LOG_WARN, "cannot watch queue '%s' of '%s': %s; retrying", w->queue,
		       w->r->q->url.text, lowered(why, msg, sizeof(msg)));
	w->down = 1;
	evtimer_add(w->timer, &tv);
}

static void watch_message(redisAsyncContext *ac, void *reply, void *privdata)
{
	struct rwatch *w = ac->data;
	redisReply *rep = reply;

	(void)privdata;
	/* NULL replies come while the context is being freed */
	if (!w || !rep)
		return;
	if (rep->type == REDIS_REPLY_ERROR) {
		watch_later(w, rep->str);
		redisAsyncDisconnect(ac);
	} else if (rep->type == REDIS_REPLY_ARRAY) {
		/* the subscribe confirmation wakes too: pushes made while not
		 * subscribed are covered */
		if (w->down)
			au_log(AU_LOG_INFO, "watching queue '%s' of '%s' again", w->queue,
			       w->r->q->url.text);
		w->down = 0;
		w->fn(w->arg);
	}
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
	struct timeval tv = { CONNECT_TIMEOUT_MS / 1000, CONNECT_TIMEOUT_MS % 1000 * 1000 };
	redisAsyncContext *ac = redisAsyncConnect(url->host, port_of(url));

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
	/* queued until the connection is up */
	if (url->password && url->user && *url->user)
		redisAsyncCommand(ac, watch_message, NULL, "AUTH %s %s", url->user, url->password);
	else if (url->password)
		redisAsyncCommand(ac, watch_message, NULL, "AUTH %s", url->password);
	redisAsyncCommand(ac, watch_message, NULL, "SUBSCRIBE %s", w->channel);
	w->ac = ac;
	evtimer_add(w->timer, &tv);
}

static int rq_watch(struct au_queue *q, const char *queue, struct event_base *base,
		    au_queue_wake_fn fn, void *arg)
{
	struct rq *r = q->ctx;
	struct rwatch *w;

	if (r->watch)
		return au_seterr(&q->err, AU_ESTATE, "'%s' is already watching a queue", q->url.text);
	w = calloc(1, sizeof(*w));
	if (!w || !(w->queue = au_strdup(qname(queue))) ||
	    !(w->channel = au_asprintf("au:{%s}:wake", w->queue)) ||
	    !(w->timer = evtimer_new(base, watch_timer, w))) {
		if (w) {
			free(w->queue);
			free(w->channel);
		}
		free(w);
		return oom(q);
	}
	w->r = r;
	w->base = base;
	w->fn = fn;
	w->arg = arg;
	r->watch = w;
	watch_connect(w);
	return 0;
}

static void rq_unwatch(struct au_queue *q)
{
	struct rq *r = q->ctx;
	struct rwatch *w = r->watch;

	if (!w)
		return;
	if (w->ac) {
		/* callbacks still due from hiredis find no watch */
		w->ac->data = NULL;
		redisAsyncFree(w->ac);
	}
	event_free(w->timer);
	free(w->queue);
	free(w->channel);
	free(w);
	r->watch = NULL;
}

const struct au_queue_ops au_redis_queue_ops = {
	.scheme = "redis",
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
};
