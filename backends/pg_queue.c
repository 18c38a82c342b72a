/*
 * pg_queue.c - queues in PostgreSQL: postgres://[user[:password]@]host[:port]/db
 * (postgresql:// too, libpq's query parameters pass through, ?migrate=1
 * upgrades an older schema on open, ?watchers=K bounds the idle workers a
 * push wakes).
 *
 * One row of au_jobs per computation (postgres/pg_schema.c has the tables,
 * docs/postgres.md the why). Every operation is one statement, so a batch
 * is applied whole or not at all, with its arrays sent in binary: a batch
 * costs one round trip whatever its size. (A push or ack_store whose batch
 * names a known id is the exception: its plain insert fails whole, and
 * the batch goes again in the form that leaves known rows alone.) Writes
 * of an attempt are fenced on (id, token), the token carrying the attempt
 * number. Whatever makes computations ready sends the queue's name on the
 * channel au_queue in the same statement: blocked leases and watchers
 * wake on it. ack_store writes results as store/pg_store.c does, through
 * postgres/pg_record.h, when the store is in this database.
 */
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <libpq-fe.h>

#include "pg_client.h"
#include "pg_record.h"
#include "pg_schema.h"
#include "queue.h"

#define WATCH_RETRY_S 1         /* a watch reconnects */
#define SEEK_MS 1000            /* a watch without a slot tries again (+-50%) */
#define DEFAULT_WATCHERS 2      /* watches of a queue that listen */
#define MAX_WATCHERS 1024
#define RATE_SWEEP_MS 60000     /* rate_take deletes full buckets this often, per handle */

/*
 * The fence of an attempt, shared by the statements that settle one: the
 * rows are found through the primary key, and only a leased row has a
 * token. No "state = 1" here: with it the planner chose to walk all of
 * au_jobs_leased for the queue, dead entries included, rather than the
 * primary key.
 */
#define FENCE "j.id = ANY($2::uuid[]) AND j.id = r.id AND j.token = r.token AND j.queue = $1"

/*
 * A waiting row the lease can take: one whose attempts it can count. Any
 * other (a plain-SQL producer wrote attempts = 2147483647, or a negative
 * count) is dead-lettered by the lease that finds it, with the reason,
 * instead of failing every lease of the queue with "integer out of range".
 */
#define LEASABLE "attempts BETWEEN 0 AND 2147483646"

/* The insert of a push; conflict is the clause for known ids. */
#define PUSH(conflict) \
	"WITH q AS (INSERT INTO au_queues (name) SELECT DISTINCT unnest($2::text[])" \
	" ON CONFLICT DO NOTHING)," \
	" j AS (INSERT INTO au_jobs (id, queue, priority, run_at, max_attempts, body)" \
	" SELECT id, queue, priority," \
	" greatest(now(), 'epoch'::timestamptz + run_at_ms * interval '1 ms'), max_attempts, body" \
	" FROM unnest($1::uuid[], $2::text[], $3::int2[], $4::int8[], $5::int4[], $6::bytea[])" \
	" AS t(id, queue, priority, run_at_ms, max_attempts, body)" \
	conflict " RETURNING queue, run_at)" \
	" SELECT pg_notify('" AU_PG_QUEUE_CHANNEL "', queue) FROM j WHERE run_at <= now()" \
	" GROUP BY queue"

/*
 * A push with dependencies: $7 and $8 pair each waiter with a dependency.
 * A dependency counts when the backend holds it, which the push makes
 * sure of by locking its row (FOR SHARE): a settle of it that comes
 * after waits for the push to commit, then sees the push's au_deps rows
 * (au_settle takes a snapshot of its own); one that came before leaves
 * no row to lock. An element of the batch that is new counts as held.
 * Known ids are left alone, deps included.
 */
#define PUSH_DEPS \
	"WITH q AS (INSERT INTO au_queues (name) SELECT DISTINCT unnest($2::text[])" \
	" ON CONFLICT DO NOTHING)," \
	" t AS (SELECT * FROM unnest($1::uuid[], $2::text[], $3::int2[], $4::int8[], $5::int4[]," \
	" $6::bytea[]) AS t(id, queue, priority, run_at_ms, max_attempts, body))," \
	" p AS (SELECT DISTINCT waiter, dep FROM unnest($7::uuid[], $8::uuid[]) AS p(waiter, dep)" \
	" WHERE waiter <> dep)," \
	" k AS (SELECT id FROM au_jobs WHERE id = ANY($8::uuid[]) AND state <> 2 FOR SHARE)," \
	" h AS (SELECT waiter, dep FROM p WHERE dep IN (SELECT id FROM k)" \
	" OR (dep IN (SELECT id FROM t) AND NOT EXISTS (SELECT FROM au_jobs o WHERE o.id = p.dep)))," \
	" c AS (SELECT waiter, count(*) AS n FROM h GROUP BY waiter)," \
	" j AS (INSERT INTO au_jobs (id, queue, priority, run_at, max_attempts, body, state, ndeps)" \
	" SELECT t.id, queue, priority," \
	" greatest(now(), 'epoch'::timestamptz + run_at_ms * interval '1 ms'), max_attempts, body," \
	" CASE WHEN coalesce(c.n, 0) > 0 THEN 3 ELSE 0 END, coalesce(c.n, 0)" \
	" FROM t LEFT JOIN c ON c.waiter = t.id" \
	" ON CONFLICT (id) DO NOTHING RETURNING id, queue, run_at, state)," \
	" d AS (INSERT INTO au_deps (dep, waiter) SELECT dep, waiter FROM h" \
	" WHERE waiter IN (SELECT id FROM j) ON CONFLICT DO NOTHING)" \
	" SELECT pg_notify('" AU_PG_QUEUE_CHANNEL "', queue) FROM j WHERE state = 0 AND run_at <= now()" \
	" GROUP BY queue"

/* The delete of an ack, fenced; returns the ordinals of the refs applied. */
#define ACK \
	"DELETE FROM au_jobs j USING unnest($2::uuid[], $3::text[])" \
	" WITH ORDINALITY AS r(id, token, i) WHERE " FENCE " RETURNING r.i, j.id"

/* The totals of stats: one update of the queue's row per statement (HOT:
 * no indexed column changes), only when a row applied. The subqueries are
 * init plans, so no join is planned. */
#define COUNT_INTO(col, cte) \
	", c AS (UPDATE au_queues SET " col " = " col " + (SELECT count(*) FROM " cte ")" \
	" WHERE name = $1 AND EXISTS (SELECT FROM " cte "))"

/* When a dead row died: rows buried by an older au, or by hand, have no
 * dead_at and count as dead since they were pushed. Indexed (v5). */
#define DIED "coalesce(dead_at, created_at)"

/* The columns of a dead letter (dead): id, died at (unix ms), attempts,
 * reason, body, story (NULL: none). */
#define DEAD_COLS \
	"SELECT id, (extract(epoch FROM " DIED ") * 1000)::int8, attempts, coalesce(error, ''), body," \
	" story FROM au_jobs"

/* An ack with the records of ack_store ($4 ids, $5 records, $6 ttls),
 * written as the store writes them (postgres/pg_record.h) whether or not
 * their acks apply; the ordinals of the acks, and one row for the
 * notifications of the records written. */
#define ACK_STORE(insert) \
	"WITH a AS (" ACK ")" COUNT_INTO("processed", "a") ", w AS (" insert ")" \
	" SELECT i FROM a UNION ALL SELECT 0::int8 FROM (SELECT count(" \
	AU_PG_RECORD_NOTIFY("id") ") FROM w) n" SETTLE("a")

/* The dependents of the computations a settling statement removed or
 * buried (cte: its rows, with their ids in column id), settled by
 * au_settle (schema v10) in the same statement; a branch of the final
 * UNION ALL that returns no row. */
#define SETTLE(cte) \
	" UNION ALL SELECT 0::int8 FROM (SELECT au_settle(array_agg(id)) AS s FROM " cte ") x" \
	" WHERE s < 0"

#define CANCEL_CHANNEL "au_cancel"

enum stmt {
	S_PUSH, S_PUSH_KEEP, S_LEASE, S_ACK, S_ACK_STORE, S_ACK_STORE_KEEP, S_REQUEUE, S_BURY,
	S_EXTEND, S_RESCUE, S_CANCEL, S_PEEK, S_STATS, S_QUEUES, S_NEXT_DUE, S_CANCEL_RUNNING,
	S_DEAD_LIST, S_DEAD_ONE, S_REVIVE, S_PURGE, S_PAUSE, S_EMPTY, S_DROP, S_LOCATE,
	S_HOUSEKEEP, S_RATE, S_RATE_SWEEP,
	S_BEAT, S_WORKERS, S_WORKER_STOP, S_WORKER_GONE,
	S_PUSH_DEPS, S_ADOPT, S_KV_PUT, S_KV_PUT_NX, S_KV_GET, S_KV_DEL, S_KV_KEYS
};

/*
 * rate_take: $1 the key, $2 tokens a second, $3 the burst, $4 how far ahead
 * a token may be taken (ms), all text. The upsert takes the token (a new
 * bucket is full, less the one taken) when one is due within $4, with the
 * row locked, so takes of one bucket queue up; the bucket as refilled
 * since `at` is REFILLED. It returns '1' and the ms until the token is
 * due; when it takes none, the second branch says '0' and the ms until a
 * take would, from the row as the statement found it (another take may
 * have changed it since: then the wait is too short, and the next take
 * says more). (A DELETE of full buckets in the same statement, as a
 * CTE, made the upsert lose its refill when seq scans are off, as they
 * are in au's sessions: S_RATE_SWEEP is a statement of its own.)
 */
#define RATE "$2::text::float8"
#define BURST "$3::text::float8"
#define REFILLED(b, now) \
	"least(" b ".tokens + greatest(extract(epoch FROM " now " - " b ".at)::float8, 0) * " \
	RATE ", " BURST ")"
#define RESERVE "(-$4::text::float8 / 1000 * " RATE ")"

/* The registry's statements take every parameter as text (cast in the
 * SQL) and return text: a beat every few seconds needs no binary form. */
#define MS_TS(p) "'epoch'::timestamptz + " p "::text::int8 * interval '1 ms'"
#define TS_MS(c) "(extract(epoch FROM " c ") * 1000)::int8::text"
/* $12: the counts, "<leased> <completed> <failed> <retried> <released> <outages>" */
#define COUNT(i) "(string_to_array($12::text, ' ')::int8[])[" #i "]"
#define BEAT_COLS \
	"id, host, pid, queues, version, started_at, concurrency, state, paused_by, running," \
	" running_ids, leased, completed, failed, retried, released, outages, beat_at, expires_at"

static const struct au_pg_stmt stmts[] = {
	/* new ids (nearly always): a plain insert, with no speculative
	 * insertion per row; a unique violation sends the batch again as
	 * S_PUSH_KEEP, which leaves known ids alone */
	[S_PUSH] = { "au_push", PUSH("") },
	[S_PUSH_KEEP] = { "au_push_keep", PUSH(" ON CONFLICT (id) DO NOTHING") },
	[S_PUSH_DEPS] = { "au_push_deps", PUSH_DEPS },
	/* fan-out: the waiters of $1 wait for each of $2 held now, locked as
	 * push locks them; a pair already there is not counted again */
	[S_ADOPT] = { "au_adopt",
		"WITH w AS (SELECT waiter FROM au_deps WHERE dep = $1::uuid),"
		" k AS (SELECT id FROM au_jobs WHERE id = ANY($2::uuid[]) AND state <> 2 FOR SHARE),"
		" i AS (INSERT INTO au_deps (dep, waiter) SELECT k.id, w.waiter FROM k, w"
		" WHERE k.id <> w.waiter ON CONFLICT DO NOTHING RETURNING waiter),"
		" c AS (SELECT waiter, count(*) AS n FROM i GROUP BY waiter)"
		" UPDATE au_jobs j SET ndeps = j.ndeps + c.n FROM c WHERE j.id = c.waiter AND j.state = 3" },
	/* the kv space (v10): $1 ns, $2 key, $3 value, $4 ttl in ms (0: none) */
	[S_KV_PUT] = { "au_kv_put",
		"INSERT INTO au_kv AS v (ns, key, val, expires_at) VALUES ($1::text, $2::text, $3::bytea,"
		" CASE WHEN $4::int8 > 0 THEN now() + $4::int8 * interval '1 ms' END)"
		" ON CONFLICT (ns, key) DO UPDATE SET val = excluded.val, expires_at = excluded.expires_at"
		" RETURNING 1" },
	/* only over an absent or expired key: one racer inserts, the others
	 * find its row and update nothing */
	[S_KV_PUT_NX] = { "au_kv_put_nx",
		"INSERT INTO au_kv AS v (ns, key, val, expires_at) VALUES ($1::text, $2::text, $3::bytea,"
		" CASE WHEN $4::int8 > 0 THEN now() + $4::int8 * interval '1 ms' END)"
		" ON CONFLICT (ns, key) DO UPDATE SET val = excluded.val, expires_at = excluded.expires_at"
		" WHERE v.expires_at <= now() RETURNING 1" },
	[S_KV_GET] = { "au_kv_get",
		"SELECT val FROM au_kv WHERE ns = $1::text AND key = $2::text"
		" AND (expires_at IS NULL OR expires_at > now())" },
	/* $3 NULL: whatever the value; an expired row goes too, as absent */
	[S_KV_DEL] = { "au_kv_del",
		"WITH d AS (DELETE FROM au_kv WHERE ns = $1::text AND key = $2::text"
		" AND ($3::bytea IS NULL OR val = $3::bytea OR expires_at <= now()) RETURNING val, expires_at)"
		" SELECT 1 FROM d WHERE (expires_at IS NULL OR expires_at > now())"
		" AND ($3::bytea IS NULL OR val = $3::bytea)" },
	/* $2 prefix, $3 at most (0: all); the expired rows of ns are deleted */
	[S_KV_KEYS] = { "au_kv_keys",
		"WITH gone AS (DELETE FROM au_kv WHERE ns = $1::text AND expires_at <= now())"
		" SELECT key FROM au_kv WHERE ns = $1::text AND key >= $2::text"
		" AND left(key, length($2::text)) = $2::text"
		" AND (expires_at IS NULL OR expires_at > now())"
		" ORDER BY key LIMIT nullif($3::int8, 0)" },
	/*
	 * The rows are picked (and locked) first, then updated by their
	 * physical address: an array cannot be joined wrongly (a CTE join
	 * hashed the whole table under our session settings, 30x slower),
	 * never holds more than $2 rows, and a TID scan saves a descent of
	 * the primary key per row. The rows are ours until the statement
	 * ends, so their addresses stay put; "state = 0" is checked again all
	 * the same. Rescue works the same way.
	 */
	[S_LEASE] = { "au_lease",
		"WITH l AS (UPDATE au_jobs SET"
		" state = CASE WHEN " LEASABLE " THEN 1 ELSE 2 END,"
		" attempts = CASE WHEN " LEASABLE " THEN attempts + 1 ELSE attempts END,"
		" lease_until = CASE WHEN " LEASABLE " THEN now() + $3::int8 * interval '1 ms' END,"
		" token = CASE WHEN " LEASABLE " THEN (attempts + 1) || '-' || $4::text END,"
		" error = CASE WHEN " LEASABLE " THEN error"
		" ELSE 'malformed computation: attempts ' || attempts || ' out of range' END"
		" WHERE ctid = ANY(ARRAY(SELECT ctid FROM au_jobs"
		" WHERE queue = $1 AND state = 0 AND run_at <= now()"
		" AND NOT EXISTS (SELECT FROM au_queues WHERE name = $1 AND paused)"
		" ORDER BY priority DESC, run_at, seq LIMIT $2::int8 FOR UPDATE SKIP LOCKED))"
		" AND state = 0"
		" RETURNING id, token, attempts, body, priority, run_at, seq, state, error, story)"
		/* only a later attempt can have a story (v7), so only one returns it */
		" SELECT id, token, attempts, CASE WHEN state = 1 THEN body END,"
		" CASE WHEN state = 2 THEN error END, CASE WHEN state = 1 AND attempts > 1 THEN story END"
		" FROM l ORDER BY priority DESC, run_at, seq" },
	[S_ACK] = { "au_ack",
		"WITH a AS (" ACK ")" COUNT_INTO("processed", "a") " SELECT i FROM a" SETTLE("a") },
	/* new record ids (nearly always), else again as S_ACK_STORE_KEEP */
	[S_ACK_STORE] = { "au_ack_store",
		ACK_STORE(AU_PG_RECORD_INSERT(AU_PG_RECORD_ROWS("$4", "$5", "$6"))) },
	[S_ACK_STORE_KEEP] = { "au_ack_store_keep",
		ACK_STORE(AU_PG_RECORD_UPSERT(AU_PG_RECORD_ROWS("$4", "$5", "$6"))) },
	/* retry ($6 false) and release ($6 true: the attempt does not count);
	 * $7 the stories, a NULL one (or $7 shorter than the rest: unnest pads
	 * it with NULLs) keeping the story the row has */
	[S_REQUEUE] = { "au_requeue",
		"WITH u AS (UPDATE au_jobs j SET state = 0, run_at = now() + r.delay * interval '1 ms',"
		" attempts = j.attempts - CASE WHEN $6::bool AND j.attempts > 0 THEN 1 ELSE 0 END,"
		" token = NULL, lease_until = NULL, error = coalesce(nullif(r.error, ''), j.error),"
		" story = coalesce(r.story, j.story)"
		" FROM unnest($2::uuid[], $3::text[], $4::int8[], $5::text[], $7::bytea[])"
		" WITH ORDINALITY AS r(id, token, delay, error, story, i) WHERE " FENCE
		" RETURNING r.i, r.delay)"
		" SELECT i FROM u UNION ALL SELECT 0::int8 FROM pg_notify('" AU_PG_QUEUE_CHANNEL "', $1)"
		" WHERE EXISTS (SELECT FROM u WHERE delay = 0)" },
	[S_BURY] = { "au_bury",
		"WITH b AS (UPDATE au_jobs j SET state = 2, token = NULL, lease_until = NULL,"
		" error = coalesce(r.reason, j.error), dead_at = now()"
		" FROM unnest($2::uuid[], $3::text[], $4::text[]) WITH ORDINALITY AS r(id, token, reason, i)"
		" WHERE " FENCE " RETURNING r.i, j.id)" COUNT_INTO("failed", "b") " SELECT i FROM b"
		SETTLE("b") },
	[S_EXTEND] = { "au_extend",
		"UPDATE au_jobs j SET lease_until = now() + $4::int8 * interval '1 ms'"
		" FROM unnest($2::uuid[], $3::text[]) WITH ORDINALITY AS r(id, token, i)"
		" WHERE " FENCE " RETURNING r.i" },
	[S_RESCUE] = { "au_rescue",
		"WITH u AS (UPDATE au_jobs SET"
		" state = CASE WHEN attempts >= max_attempts THEN 2 ELSE 0 END,"
		" dead_at = CASE WHEN attempts >= max_attempts THEN now() END,"
		" run_at = now(), token = NULL, lease_until = NULL,"
		" error = CASE WHEN attempts >= max_attempts"
		" THEN 'lease expired after ' || attempts || ' attempts'"
		" ELSE 'lease expired on attempt ' || attempts END"
		" WHERE ctid = ANY(ARRAY(SELECT ctid FROM au_jobs"
		" WHERE queue = $1 AND state = 1 AND lease_until <= now()"
		" ORDER BY lease_until LIMIT $2::int8 FOR UPDATE SKIP LOCKED)"
		/* a leased row without a deadline (written by hand) has none to
		 * wait for: a second probe of the same index, which finds none */
		" || ARRAY(SELECT ctid FROM au_jobs"
		" WHERE queue = $1 AND state = 1 AND lease_until IS NULL"
		" LIMIT $2::int8 FOR UPDATE SKIP LOCKED))"
		" AND state = 1 RETURNING state, id), f AS (SELECT id FROM u WHERE state = 2)"
		COUNT_INTO("failed", "f")
		" SELECT state::int4 FROM u UNION ALL SELECT -1 FROM pg_notify('" AU_PG_QUEUE_CHANNEL "', $1)"
		" WHERE EXISTS (SELECT FROM u WHERE state = 0)"
		" UNION ALL SELECT -1 FROM (SELECT au_settle(array_agg(id)) AS s FROM f) x WHERE s < 0" },
	/* the deleted row, or the state of one that was not waiting (and
	 * what a leased one holds): state, body, attempts, story */
	[S_CANCEL] = { "au_cancel",
		"WITH d AS (DELETE FROM au_jobs WHERE id = $2::uuid AND queue = $1 AND state IN (0, 3)"
		" RETURNING id, body, attempts, story)"
		" SELECT 0, body, greatest(attempts, 0), story FROM d UNION ALL"
		" SELECT state::int4, CASE WHEN state = 1 THEN body END, greatest(attempts, 0),"
		" CASE WHEN state = 1 THEN story END"
		" FROM au_jobs WHERE id = $2::uuid AND queue = $1 AND state NOT IN (0, 3)"
		" UNION ALL SELECT -1, NULL, 0, NULL FROM (SELECT au_settle(array_agg(id)) AS s FROM d) x"
		" WHERE s < 0" },
	[S_PEEK] = { "au_peek",
		"SELECT CASE WHEN state = 1 THEN 3 WHEN state = 2 THEN 4 WHEN state = 3 THEN 5"
		" WHEN run_at > now() THEN 2 ELSE 1 END, greatest(attempts, 0), greatest(max_attempts, 0),"
		" coalesce(error, ''), story"
		" FROM au_jobs WHERE id = $2::uuid AND queue = $1" },
	/* the rate compares processed with the sample housekeeping took 30 to
	 * 70 s ago (a younger one counts as 30 s old) */
	[S_STATS] = { "au_stats",
		"SELECT count(*) FILTER (WHERE run_at <= now()), count(*) FILTER (WHERE run_at > now()),"
		" (SELECT count(*) FROM au_jobs WHERE queue = $1 AND state = 1),"
		" (SELECT count(*) FROM au_jobs WHERE queue = $1 AND state = 2),"
		" coalesce((SELECT paused FROM au_queues WHERE name = $1), false),"
		" coalesce((SELECT processed FROM au_queues WHERE name = $1), 0),"
		" coalesce((SELECT failed FROM au_queues WHERE name = $1), 0),"
		" coalesce((SELECT CASE WHEN processed >= prev_n THEN ((processed - prev_n) * 60"
		" / greatest(extract(epoch FROM now() - prev_at), 30))::int8 END"
		" FROM au_queues WHERE name = $1), 0),"
		" (SELECT count(*) FROM au_jobs WHERE queue = $1 AND state = 3)"
		" FROM au_jobs WHERE queue = $1 AND state = 0" },
	[S_QUEUES] = { "au_queues", "SELECT name FROM au_queues ORDER BY name" },
	[S_DEAD_LIST] = { "au_dead_list",
		DEAD_COLS " WHERE queue = $1 AND state = 2 ORDER BY " DIED " DESC LIMIT $2::int8" },
	[S_DEAD_ONE] = { "au_dead_one",
		DEAD_COLS " WHERE id = $2::uuid AND queue = $1 AND state = 2" },
	/* dead letters back to waiting as new; the ordinals of those revived */
	[S_REVIVE] = { "au_revive",
		"WITH u AS (UPDATE au_jobs j SET state = 0, attempts = 0, error = NULL, dead_at = NULL,"
		" story = NULL, run_at = now() FROM unnest($2::uuid[]) WITH ORDINALITY AS r(id, i)"
		" WHERE j.id = ANY($2::uuid[]) AND j.id = r.id AND j.queue = $1 AND j.state = 2"
		" RETURNING r.i)"
		" SELECT i FROM u UNION ALL SELECT 0::int8 FROM pg_notify('" AU_PG_QUEUE_CHANNEL "', $1)"
		" WHERE EXISTS (SELECT FROM u)" },
	[S_PURGE] = { "au_purge",
		"WITH d AS (DELETE FROM au_jobs WHERE ctid = ANY(ARRAY(SELECT ctid FROM au_jobs"
		" WHERE queue = $1 AND state = 2 AND " DIED " <= now() - $2::int8 * interval '1 ms'"
		" ORDER BY " DIED " LIMIT $3::int8 FOR UPDATE SKIP LOCKED)) AND state = 2 RETURNING 1)"
		" SELECT count(*) FROM d" },
	/* resuming wakes the queue's workers */
	[S_PAUSE] = { "au_pause",
		"WITH u AS (INSERT INTO au_queues (name, paused) VALUES ($1, $2::bool)"
		" ON CONFLICT (name) DO UPDATE SET paused = excluded.paused RETURNING 1)"
		" SELECT 1 FROM u UNION ALL SELECT 0 FROM pg_notify('" AU_PG_QUEUE_CHANNEL "', $1)"
		" WHERE NOT $2::bool" },
	[S_EMPTY] = { "au_empty",
		"WITH d AS (DELETE FROM au_jobs WHERE ctid = ANY(ARRAY(SELECT ctid FROM au_jobs"
		" WHERE queue = $1 AND state IN (0, 3) LIMIT $2::int8 FOR UPDATE SKIP LOCKED))"
		" AND state IN (0, 3)"
		" RETURNING id)"
		" SELECT count(*) FROM d" SETTLE("d") },
	/* the counts before; the queue is deleted when they are 0 or $2 */
	[S_DROP] = { "au_drop",
		"WITH n AS (SELECT"
		" (SELECT count(*) FROM au_jobs WHERE queue = $1 AND state = 0 AND run_at <= now()) r,"
		" (SELECT count(*) FROM au_jobs WHERE queue = $1 AND state = 0 AND run_at > now()) s,"
		" (SELECT count(*) FROM au_jobs WHERE queue = $1 AND state = 1) l,"
		" (SELECT count(*) FROM au_jobs WHERE queue = $1 AND state = 2) d,"
		" (SELECT count(*) FROM au_jobs WHERE queue = $1 AND state = 3) w),"
		" j AS (DELETE FROM au_jobs WHERE $2::bool AND ctid = ANY(ARRAY("
		" SELECT ctid FROM au_jobs WHERE queue = $1 AND state = 0 UNION ALL"
		" SELECT ctid FROM au_jobs WHERE queue = $1 AND state = 1 UNION ALL"
		" SELECT ctid FROM au_jobs WHERE queue = $1 AND state = 2 UNION ALL"
		" SELECT ctid FROM au_jobs WHERE queue = $1 AND state = 3)) RETURNING id, state),"
		" q AS (DELETE FROM au_queues WHERE name = $1"
		" AND ($2::bool OR (SELECT r + s + l + d + w FROM n) = 0))"
		" SELECT r, s, l, d, w FROM n UNION ALL SELECT 0, 0, 0, 0, 0 FROM"
		" (SELECT au_settle(array_agg(id) FILTER (WHERE state <> 2)) AS s FROM j) x WHERE s < 0" },
	[S_LOCATE] = { "au_locate", "SELECT queue FROM au_jobs WHERE id = $1::uuid" },
	/* the dead set's bounds ($2 count, $3 age in ms; 0: none), and the
	 * sample of processed for the rate of stats */
	[S_HOUSEKEEP] = { "au_housekeep",
		"WITH m AS (UPDATE au_queues SET prev_n = coalesce(mark_n, processed),"
		" prev_at = coalesce(mark_at, now()), mark_n = processed, mark_at = now()"
		" WHERE name = $1 AND (mark_at IS NULL OR mark_at <= now() - interval '30 s')),"
		" d AS (DELETE FROM au_jobs WHERE ctid = ANY(ARRAY("
		"(SELECT ctid FROM au_jobs WHERE queue = $1 AND state = 2 AND $3::int8 > 0"
		" AND " DIED " < now() - $3::int8 * interval '1 ms' ORDER BY " DIED " LIMIT 1000)"
		" UNION ALL (SELECT ctid FROM au_jobs WHERE queue = $1 AND state = 2 AND $2::int8 > 0"
		" ORDER BY " DIED " DESC OFFSET $2::int8 LIMIT 1000))) AND state = 2 RETURNING 1)"
		" SELECT count(*) FROM d" },
	/* ms until the first scheduled computation is due, NULL if none. A
	 * run_at of 'infinity' is never due (and cannot be subtracted from),
	 * '-infinity' is due now. */
	[S_NEXT_DUE] = { "au_next_due",
		"SELECT (extract(epoch FROM min(greatest(run_at, now())) - now()) * 1000)::int8"
		" FROM au_jobs WHERE queue = $1 AND state = 0 AND run_at < 'infinity'" },
	/* "<queue> <id>" to every watch of cancels (LISTEN au_cancel) */
	[S_CANCEL_RUNNING] = { "au_cancel_running",
		"SELECT pg_notify('" CANCEL_CHANNEL "', $1::text || ' ' || $2::text)" },
	/* the worker's row, refreshed; rows of workers gone a minute ago go on
	 * the way (the list drops the others). A stop asked of a row that had
	 * expired is forgotten with it. */
	[S_BEAT] = { "au_beat",
		"WITH gone AS (DELETE FROM au_workers"
		" WHERE expires_at < now() - interval '1 minute' AND id <> $1::text)"
		" INSERT INTO au_workers AS w (" BEAT_COLS ", metrics)"
		" VALUES ($1::text, $2::text, $3::text::int4, string_to_array(nullif($4::text, ''), ','),"
		" $5::text, " MS_TS("$6") ", $7::text::int4, $8::text, nullif($9::text, ''),"
		" $10::text::int4, coalesce(string_to_array(nullif($11::text, ''), ' ')::uuid[], '{}'),"
		" " COUNT(1) ", " COUNT(2) ", " COUNT(3) ", " COUNT(4) ", " COUNT(5) ", " COUNT(6) ","
		" now(), now() + $13::text::int8 * interval '1 ms', decode(nullif($14::text, ''), 'hex'))"
		" ON CONFLICT (id) DO UPDATE SET (" BEAT_COLS ", stop_at, metrics) ="
		" (excluded.id, excluded.host, excluded.pid, excluded.queues, excluded.version,"
		" excluded.started_at, excluded.concurrency, excluded.state, excluded.paused_by,"
		" excluded.running, excluded.running_ids, excluded.leased, excluded.completed,"
		" excluded.failed, excluded.retried, excluded.released, excluded.outages,"
		" excluded.beat_at, excluded.expires_at,"
		" CASE WHEN w.expires_at > now() THEN w.stop_at END, excluded.metrics)"
		" RETURNING (stop_at IS NOT NULL)::text" },
	[S_WORKERS] = { "au_workers",
		"WITH gone AS (DELETE FROM au_workers WHERE expires_at <= now())"
		" SELECT id, host, pid::text, coalesce(array_to_string(queues, ','), ''), version,"
		" " TS_MS("started_at") ", concurrency::text, state, coalesce(paused_by, ''),"
		" running::text, translate(coalesce(array_to_string(running_ids, ' '), ''), '-', ''),"
		" leased::text, completed::text, failed::text, retried::text, released::text,"
		" outages::text, " TS_MS("expires_at - beat_at") ", " TS_MS("beat_at") ","
		" greatest(" TS_MS("now() - beat_at") "::int8, 0)::text,"
		" coalesce(encode(metrics, 'hex'), '')"
		" FROM au_workers WHERE expires_at > now() ORDER BY started_at, id" },
	[S_WORKER_STOP] = { "au_worker_stop",
		"UPDATE au_workers SET stop_at = coalesce(stop_at, now())"
		" WHERE id = $1::text AND expires_at > now() RETURNING id" },
	[S_WORKER_GONE] = { "au_worker_gone", "DELETE FROM au_workers WHERE id = $1::text" },
	[S_RATE] = { "au_rate_take",
		"WITH up AS (INSERT INTO au_rate AS b (key, tokens, at, full_at)"
		" VALUES ($1::text, " BURST " - 1, clock_timestamp(),"
		" clock_timestamp() + interval '1 second' / " RATE ")"
		" ON CONFLICT (key) DO UPDATE SET tokens = " REFILLED("b", "excluded.at") " - 1,"
		" at = greatest(b.at, excluded.at),"
		" full_at = greatest(b.at, excluded.at) + interval '1 second' * (" BURST
		" - " REFILLED("b", "excluded.at") " + 1) / " RATE
		" WHERE " REFILLED("b", "excluded.at") " - 1 >= " RESERVE
		" RETURNING tokens)"
		" SELECT '1', ceil(greatest(-tokens, 0) / " RATE " * 1000)::int8::text FROM up"
		" UNION ALL SELECT '0', greatest(ceil(((1 - " REFILLED("o", "clock_timestamp()") ")"
		" / " RATE " + " RESERVE " / " RATE ") * 1000), 1)::int8::text"
		" FROM au_rate o WHERE o.key = $1::text AND NOT EXISTS (SELECT FROM up)" },
	/* buckets full again a minute ago go (a take makes them anew, full):
	 * a sweep a minute per handle that takes */
	[S_RATE_SWEEP] = { "au_rate_sweep",
		"DELETE FROM au_rate WHERE full_at < now() - interval '1 minute'" },
};

struct pg_watch;

struct pgq {
	struct au_pg pg;
	struct au_buf params;       /* binary parameters, reused */
	struct pg_watch *watch;
	int worker_session;         /* leased once: commits need not wait for the disk */
	char *watch_conninfo;       /* the watch's, set at open: pg.conninfo changes */
	int watchers;               /* K: watches of a queue that listen (see watch) */
	struct au_dead_limits limits;  /* of the URL */
	struct au_housekeeping housekept;
	uint64_t rate_swept_us;     /* au_mono_us of rate_take's last sweep */
	au_queue_cancel_fn cancel_fn;  /* watch_cancels: handed to the watch */
	void *cancel_arg;
	char *cancel_queue;
	char *store_url;            /* the last store ack_store was given, */
	char *store_shown;          /* as messages show it (password masked), */
	int store_here;             /* and whether it lives in our database */
};

static int oom(struct au_queue *q)
{
	return au_seterr(&q->err, AU_ENOMEM, "out of memory");
}

/*
 * A handle that leases is a worker's, and a worker's commits need not wait
 * for the WAL to reach the disk: a lease, result, ack or retry lost in a
 * server crash only puts the computation back where it was, and WAL order
 * means a later commit never survives without the earlier ones (no ack
 * without its result). Enqueues are a producer's commits and stay
 * synchronous. The setting goes into the connection string too, so a
 * reconnected session keeps it.
 */
static int become_worker_session(struct au_queue *q)
{
	struct pgq *p = q->ctx;
	char *conninfo, *opts;

	if (p->worker_session)
		return 0;
	/* options='...' is always there (the plan guard); ours go first, so
	 * a user's own options still override them */
	opts = strstr(p->pg.conninfo, "options='");
	if (!opts)
		AU_BUG("connection string without options: %s", p->pg.conninfo);
	opts += strlen("options='");
	conninfo = au_asprintf("%.*s-c synchronous_commit=off %s", (int)(opts - p->pg.conninfo),
			       p->pg.conninfo, opts);
	if (!conninfo)
		return oom(q);
	if (au_pg_command(&p->pg, "SET synchronous_commit = off", &q->err) < 0) {
		free(conninfo);
		return -1;
	}
	free(p->pg.conninfo);
	p->pg.conninfo = conninfo;
	p->worker_session = 1;
	return 0;
}

static PGresult *run(struct au_queue *q, enum stmt s, int n, const char *const *vals,
		     const int *lens)
{
	return au_pg_exec(&((struct pgq *)q->ctx)->pg, s, n, vals, lens, &q->err);
}

/* Runs a statement whose only parameters are the queue and (if id is not
 * NULL) a uuid; NULL result and AU_ENOTFOUND for an id that cannot exist. */
static PGresult *run_id(struct au_queue *q, enum stmt s, const char *queue, const char *id)
{
	unsigned char uuid[16];
	const char *vals[] = { au_queue_name(queue), (const char *)uuid };
	int lens[] = { (int)strlen(vals[0]), 16 };

	if (id && au_pg_uuid(uuid, id) < 0) {
		char shown[AU_ID_SHOWN_SIZE];

		au_seterr(&q->err, AU_ENOTFOUND, "no computation '%s' in queue '%s'",
			  au_id_shown(shown, id), au_queue_name(queue));
		return NULL;
	}
	return run(q, s, id ? 2 : 1, vals, lens);
}

/* The URL's watchers=K (1 to MAX_WATCHERS), or DEFAULT_WATCHERS. */
static int watchers_param(struct au_queue *q, const struct au_url *url, int *k)
{
	char *v = au_url_param(url, "watchers"), *end;
	long n = DEFAULT_WATCHERS;

	if (v) {
		n = strtol(v, &end, 10);
		if (!*v || *end || n < 1 || n > MAX_WATCHERS)
			n = -1;
		free(v);
		if (n < 0)
			return au_seterr(&q->err, AU_EINVAL, "invalid url '%s': watchers must be 1 to %d",
					 url->text, MAX_WATCHERS);
	}
	*k = (int)n;
	return 0;
}

static int pgq_open(struct au_queue *q, const struct au_url *url)
{
	struct pgq *p = calloc(1, sizeof(*p));

	if (!p)
		return oom(q);
	if (watchers_param(q, url, &p->watchers) < 0 ||
	    au_queue_dead_limits(url, &p->limits, &q->err) < 0 ||
	    au_pg_open(&p->pg, url, stmts, AU_ARRAY_SIZE(stmts), &q->err) < 0) {
		free(p);
		return -1;
	}
	if (!(p->watch_conninfo = strdup(p->pg.conninfo))) {
		au_pg_close(&p->pg);
		free(p);
		return oom(q);
	}
	q->ctx = p;
	return 0;
}

static void pgq_unwatch(struct au_queue *q);

static void pgq_close(struct au_queue *q)
{
	struct pgq *p = q->ctx;

	pgq_unwatch(q);
	au_pg_close(&p->pg);
	au_buf_release(&p->params);
	free(p->cancel_queue);
	free(p->store_url);
	free(p->store_shown);
	free(p->watch_conninfo);
	free(p);
	q->ctx = NULL;
}

/* ---- push ---- */

static int add_u16(struct au_buf *b, int v)
{
	unsigned char x[2] = { (unsigned char)((unsigned)v >> 8), (unsigned char)v };

	return au_pg_array_add(b, x, 2);
}

static int add_u32(struct au_buf *b, uint32_t v)
{
	unsigned char x[4];

	au_pg_put_u32(x, v);
	return au_pg_array_add(b, x, 4);
}

static int add_u64(struct au_buf *b, uint64_t v)
{
	unsigned char x[8];

	au_pg_put_u64(x, v);
	return au_pg_array_add(b, x, 8);
}

static int add_text(struct au_buf *b, const char *s)
{
	return s ? au_pg_array_add(b, s, (int)strlen(s)) : au_pg_array_add(b, NULL, -1);
}

static int pgq_push(struct au_queue *q, const struct au_computation *cs, size_t n)
{
	struct pgq *p = q->ctx;
	struct au_buf *b = &p->params;
	size_t at[8], i, k, ndeps = 0;
	const char *vals[8];
	int lens[8], rc = 0, np, form;
	PGresult *r;

	if (!n)
		return 0;
	for (i = 0; i < n; i++)
		if (!au_id_valid(cs[i].id))
			return au_queue_bad_id(q, cs[i].id);
	au_buf_reset(b);
	at[0] = b->len;
	rc |= au_pg_array(b, AU_PG_UUID, n);
	for (i = 0; i < n; i++) {
		unsigned char uuid[16];

		au_pg_uuid(uuid, cs[i].id);
		rc |= au_pg_array_add(b, uuid, 16);
	}
	at[1] = b->len;
	rc |= au_pg_array(b, AU_PG_TEXT, n);
	for (i = 0; i < n; i++)
		rc |= add_text(b, au_queue_name(cs[i].queue));
	at[2] = b->len;
	rc |= au_pg_array(b, AU_PG_INT2, n);
	for (i = 0; i < n; i++)
		rc |= add_u16(b, cs[i].priority);
	at[3] = b->len;
	rc |= au_pg_array(b, AU_PG_INT8, n);
	for (i = 0; i < n; i++)
		rc |= add_u64(b, au_queue_run_at(cs[i].run_at_ms));
	at[4] = b->len;
	rc |= au_pg_array(b, AU_PG_INT4, n);
	for (i = 0; i < n; i++)
		rc |= add_u32(b, cs[i].max_attempts ? cs[i].max_attempts : 1);
	at[5] = b->len;
	rc |= au_pg_array(b, AU_PG_BYTEA, n);
	/* bodies are encoded in place, straight into the parameter */
	for (i = 0; i < n && rc == 0; i++) {
		size_t el;

		if (au_pg_array_open(b, &el) < 0)
			return oom(q);
		if (au_computation_encode(&cs[i], b, &q->err) < 0)
			return -1;
		au_pg_array_close(b, el);
	}
	if (rc)
		return oom(q);
	for (i = 0; i < n && !ndeps; i++)
		ndeps += cs[i].ndeps;
	if ((form = ndeps != 0)) {
		/* the pairs (waiter, dependency); an id that cannot exist is
		 * no dependency held */
		ndeps = 0;
		for (i = 0; i < n; i++)
			for (k = 0; k < cs[i].ndeps; k++)
				ndeps += au_id_valid(cs[i].deps[k]);
		at[6] = b->len;
		rc |= au_pg_array(b, AU_PG_UUID, ndeps);
		for (i = 0; i < n; i++)
			for (k = 0; k < cs[i].ndeps; k++) {
				unsigned char uuid[16];

				if (!au_id_valid(cs[i].deps[k]))
					continue;
				au_pg_uuid(uuid, cs[i].id);
				rc |= au_pg_array_add(b, uuid, 16);
			}
		at[7] = b->len;
		rc |= au_pg_array(b, AU_PG_UUID, ndeps);
		for (i = 0; i < n; i++)
			for (k = 0; k < cs[i].ndeps; k++) {
				unsigned char uuid[16];

				if (au_pg_uuid(uuid, cs[i].deps[k]) < 0)
					continue;
				rc |= au_pg_array_add(b, uuid, 16);
			}
		if (rc)
			return oom(q);
	}
	np = form ? 8 : 6;
	for (i = 0; i < (size_t)np; i++) {
		vals[i] = (const char *)b->data + at[i];
		lens[i] = (int)((i + 1 < (size_t)np ? at[i + 1] : b->len) - at[i]);
	}
	if (form) {
		/* one form only: it leaves known ids alone */
		r = run(q, S_PUSH_DEPS, 8, vals, lens);
		PQclear(r);
		return r ? 0 : -1;
	}
	r = run(q, S_PUSH, 6, vals, lens);
	if (!r && au_pg_unique_violation(&p->pg) && (r = run(q, S_PUSH_KEEP, 6, vals, lens)))
		au_clearerr(&q->err);
	PQclear(r);
	return r ? 0 : -1;
}

/* ---- lease ---- */

static void leases_release(struct au_lease *out, size_t n)
{
	while (n)
		au_lease_release(&out[--n]);
}

/* One lease statement; *n gets the number leased, *buried the number of
 * malformed rows it dead-lettered instead (each logged with its reason). */
static int lease_once(struct au_queue *q, const char *queue, size_t max, uint32_t lease_ms,
		      struct au_lease *out, size_t *n, size_t *buried)
{
	unsigned char lim[8], ms[8];
	char rnd[17];
	const char *vals[] = { au_queue_name(queue), (const char *)lim, (const char *)ms, rnd };
	int lens[] = { (int)strlen(vals[0]), 8, 8, 16 }, rows, i;
	size_t k = 0;
	PGresult *r;

	/* One random part per lease call: with the attempt number in front,
	 * the token still differs between attempts of a computation. */
	snprintf(rnd, sizeof(rnd), "%016llx", (unsigned long long)au_random64());
	au_pg_put_u64(lim, max);
	au_pg_put_u64(ms, lease_ms);
	*n = *buried = 0;
	if (!(r = run(q, S_LEASE, 4, vals, lens)))
		return -1;
	rows = PQntuples(r);
	for (i = 0; i < rows; i++) {
		struct au_lease *l = &out[k];
		int tlen = PQgetlength(r, i, 1), blen = PQgetlength(r, i, 3);

		if (PQgetisnull(r, i, 3)) {
			char id[AU_ID_SIZE];

			/* dead-lettered by the statement: the row was malformed */
			au_pg_id(id, (const unsigned char *)PQgetvalue(r, i, 0));
			au_log(AU_LOG_WARN, "queue '%s' of '%s': computation '%s' dead-lettered: %.*s",
			       au_queue_name(queue), q->url.text, id, PQgetlength(r, i, 4),
			       PQgetvalue(r, i, 4));
			++*buried;
			continue;
		}
		au_pg_id(l->ref.id, (const unsigned char *)PQgetvalue(r, i, 0));
		snprintf(l->ref.token, sizeof(l->ref.token), "%.*s", tlen, PQgetvalue(r, i, 1));
		l->attempts = au_pg_get_u32(PQgetvalue(r, i, 2));
		l->body_len = (size_t)blen;
		if (!(l->body = malloc(blen ? (size_t)blen : 1))) {
			/* what is leased comes back after the lease runs out */
			leases_release(out, k);
			PQclear(r);
			return oom(q);
		}
		memcpy(l->body, PQgetvalue(r, i, 3), (size_t)blen);
		l->story = NULL;
		l->story_len = 0;
		if (!PQgetisnull(r, i, 5) && PQgetlength(r, i, 5) > 0) {
			size_t slen = (size_t)PQgetlength(r, i, 5);

			if (!(l->story = malloc(slen))) {
				au_lease_release(l);
				leases_release(out, k);
				PQclear(r);
				return oom(q);
			}
			memcpy(l->story, PQgetvalue(r, i, 5), slen);
			l->story_len = slen;
		}
		k++;
	}
	*n = k;
	PQclear(r);
	return 0;
}

/*
 * Leases as lease_once does, and when malformed rows took places of the
 * batch, goes on for the good rows behind them: one bad row costs the
 * call a statement, never its computations. Bounded, so that a queue full
 * of bad rows still returns.
 */
#define LEASE_ROUNDS 16

static int lease_some(struct au_queue *q, const char *queue, size_t max, uint32_t lease_ms,
		      struct au_lease *out, size_t *n)
{
	size_t got, buried;
	int round;

	*n = 0;
	for (round = 0; round < LEASE_ROUNDS && *n < max; round++) {
		if (lease_once(q, queue, max - *n, lease_ms, out + *n, &got, &buried) < 0) {
			if (!*n)
				return -1;
			/* what was leased is kept; the error comes again next time */
			break;
		}
		*n += got;
		if (!buried)
			break;
	}
	return 0;
}

/* ms until a scheduled computation of queue falls due, or -1. */
static int64_t next_due(struct au_queue *q, const char *queue)
{
	PGresult *r = run_id(q, S_NEXT_DUE, queue, NULL);
	int64_t ms = -1;

	if (r && PQntuples(r) && !PQgetisnull(r, 0, 0)) {
		ms = (int64_t)au_pg_get_u64(PQgetvalue(r, 0, 0));
		if (ms < 0)
			ms = 0;
	}
	PQclear(r);
	return ms;
}

/* The blocking part of a lease: listen, then look again (a push in between
 * is seen either way), then wait for a push or for a scheduled
 * computation to fall due. */
static int lease_wait(struct au_queue *q, const char *queue, size_t max, uint32_t lease_ms,
		      uint64_t deadline, struct au_lease *out, size_t *n)
{
	struct au_pg *pg = &((struct pgq *)q->ctx)->pg;
	uint64_t now, until;
	int64_t due;

	if (au_pg_command(pg, "LISTEN " AU_PG_QUEUE_CHANNEL, &q->err) < 0)
		return -1;
	for (;;) {
		if (lease_some(q, queue, max, lease_ms, out, n) < 0)
			return -1;
		if (*n || (now = au_mono_us()) >= deadline)
			return 0;
		due = next_due(q, queue);
		until = due >= 0 && now + (uint64_t)due * 1000 < deadline ? now + (uint64_t)due * 1000 + 1000
									  : deadline;
		/* a lost connection is reset by LISTEN, or the lease fails */
		if (au_pg_wait(pg, AU_PG_QUEUE_CHANNEL, au_queue_name(queue), until, &q->err) < 0 &&
		    au_pg_command(pg, "LISTEN " AU_PG_QUEUE_CHANNEL, &q->err) < 0)
			return -1;
	}
}

static int pgq_lease(struct au_queue *q, const char *queue, size_t max, uint32_t lease_ms,
		     uint32_t block_ms, struct au_lease *out, size_t *n)
{
	struct au_pg *pg = &((struct pgq *)q->ctx)->pg;
	struct au_err ignored;
	int rc;

	*n = 0;
	if (!max)
		return 0;
	if (become_worker_session(q) < 0)
		return -1;
	/* A busy queue costs one round trip: no LISTEN unless it must wait. */
	if (lease_some(q, queue, max, lease_ms, out, n) < 0)
		return -1;
	if (*n || !block_ms)
		return 0;
	rc = lease_wait(q, queue, max, lease_ms, au_mono_us() + (uint64_t)block_ms * 1000, out, n);
	/* A connection left listening would be sent every push of the
	 * database, read or not. */
	if (PQstatus(pg->c) == CONNECTION_OK)
		au_pg_command(pg, "UNLISTEN " AU_PG_QUEUE_CHANNEL, &ignored);
	return rc;
}

/* ---- settling an attempt ---- */

/* Starts the parameters of a fenced statement in b: $1 queue, $2 ids, $3
 * tokens (an id that cannot exist is a NULL, which matches nothing), their
 * offsets in at[0..3). The caller adds its own. -1 on OOM. */
static int fence_params(struct au_buf *b, const char *queue, const struct au_ref *refs, size_t n,
			size_t *at)
{
	int rc = 0;
	size_t i;

	au_buf_reset(b);
	at[0] = b->len;
	rc |= au_buf_puts(b, au_queue_name(queue));
	at[1] = b->len;
	rc |= au_pg_array(b, AU_PG_UUID, n);
	for (i = 0; i < n; i++) {
		unsigned char uuid[16];

		if (au_pg_uuid(uuid, refs[i].id) < 0)
			rc |= au_pg_array_add(b, NULL, -1);
		else
			rc |= au_pg_array_add(b, uuid, 16);
	}
	at[2] = b->len;
	rc |= au_pg_array(b, AU_PG_TEXT, n);
	for (i = 0; i < n; i++)
		rc |= au_pg_array_add(b, refs[i].token, (int)strnlen(refs[i].token, AU_TOKEN_SIZE));
	return rc ? -1 : 0;
}

/* Runs a fenced statement over b (parameters starting at at[0..np)) and
 * sets applied[] from the ordinals it returns. */
static int settle(struct au_queue *q, enum stmt s, size_t n, const size_t *at, int np,
		  int *applied)
{
	struct au_buf *b = &((struct pgq *)q->ctx)->params;
	const char *vals[7];
	int lens[7], i;
	PGresult *r;

	for (i = 0; i < np; i++) {
		vals[i] = (const char *)b->data + at[i];
		lens[i] = (int)((i + 1 < np ? at[i + 1] : b->len) - at[i]);
	}
	if (!(r = run(q, s, np, vals, lens)))
		return -1;
	if (applied) {
		memset(applied, 0, n * sizeof(*applied));
		for (i = 0; i < PQntuples(r); i++) {
			uint64_t k = au_pg_get_u64(PQgetvalue(r, i, 0));

			if (k >= 1 && k <= n)
				applied[k - 1] = 1;
		}
	}
	PQclear(r);
	return 0;
}

static int pgq_ack(struct au_queue *q, const char *queue, const struct au_ref *refs, size_t n,
		   int *applied)
{
	size_t at[3];

	if (!n)
		return 0;
	if (fence_params(&((struct pgq *)q->ctx)->params, queue, refs, n, at) < 0)
		return oom(q);
	return settle(q, S_ACK, n, at, 3, applied);
}

/* 1 if the store at url lives in the database of q (au_pg_same_database),
 * 0 if not, -1 on OOM. The answer for the last url is kept. */
static int store_here(struct au_queue *q, const char *url)
{
	struct pgq *p = q->ctx;
	struct au_url u;
	struct au_err ignored;

	if (p->store_url && !strcmp(p->store_url, url))
		return p->store_here;
	free(p->store_url);
	free(p->store_shown);
	p->store_shown = NULL;
	p->store_here = 0;
	if (!(p->store_url = strdup(url)))
		return oom(q);
	if (au_url_parse(url, &u, &ignored) == 0) {
		p->store_here = au_pg_same_database(&q->url, &u);
		p->store_shown = strdup(u.text);
		au_url_release(&u);
	} else {
		p->store_shown = strdup("(not a url)");
	}
	if (!p->store_shown) {
		free(p->store_url);
		p->store_url = NULL;
		return oom(q);
	}
	return p->store_here;
}

static int pgq_ack_store(struct au_queue *q, const char *queue, const char *store_url,
			 const struct au_ref *refs, const struct au_record *recs, size_t n,
			 int *applied)
{
	struct pgq *p = q->ctx;
	struct au_pg_records pr;
	size_t at[6], i;
	int rc, here = store_here(q, store_url ? store_url : "");

	if (here < 0)
		return -1;
	if (!here)
		return au_seterr(&q->err, AU_ESTATE, "result store '%s' is not in the database of queue '%s'",
				 p->store_shown, q->url.text);
	for (i = 0; i < n; i++)
		if (!au_id_valid(recs[i].id))
			return au_queue_bad_id(q, recs[i].id);
	if (!n)
		return 0;
	if (fence_params(&p->params, queue, refs, n, at) < 0)
		return oom(q);
	if (au_pg_records_params(&p->params, recs, n, &pr, at + 3, &q->err) < 0) {
		au_pg_records_release(&pr);
		return -1;
	}
	rc = settle(q, S_ACK_STORE, n, at, 6, applied);
	if (rc < 0 && au_pg_unique_violation(&p->pg) &&
	    (rc = settle(q, S_ACK_STORE_KEEP, n, at, 6, applied)) == 0)
		au_clearerr(&q->err);
	au_pg_records_release(&pr);
	return rc;
}

static int requeue(struct au_queue *q, const char *queue, const struct au_ref *refs, size_t n,
		   const uint64_t *delay_ms, const char *const *error, const struct au_story *story,
		   int uncount, int *applied)
{
	struct au_buf *b = &((struct pgq *)q->ctx)->params;
	size_t at[7], i;
	int rc;

	if (!n)
		return 0;
	rc = fence_params(b, queue, refs, n, at);
	at[3] = b->len;
	rc |= au_pg_array(b, AU_PG_INT8, n);
	for (i = 0; i < n; i++)
		rc |= add_u64(b, delay_ms ? au_queue_delay(delay_ms[i]) : 0);
	at[4] = b->len;
	rc |= au_pg_array(b, AU_PG_TEXT, n);
	for (i = 0; i < n; i++)
		rc |= add_text(b, error ? error[i] : NULL);
	at[5] = b->len;
	rc |= au_buf_append(b, uncount ? "\1" : "\0", 1);
	/* no stories: an empty array, which keeps every one */
	at[6] = b->len;
	rc |= au_pg_array(b, AU_PG_BYTEA, story ? n : 0);
	for (i = 0; story && i < n; i++)
		rc |= story[i].len ? au_pg_array_add(b, story[i].data, (int)story[i].len)
				   : au_pg_array_add(b, NULL, -1);
	if (rc)
		return oom(q);
	return settle(q, S_REQUEUE, n, at, 7, applied);
}

static int pgq_retry(struct au_queue *q, const char *queue, const struct au_ref *refs, size_t n,
		     const uint64_t *delay_ms, const char *const *error,
		     const struct au_story *story, int *applied)
{
	return requeue(q, queue, refs, n, delay_ms, error, story, 0, applied);
}

static int pgq_release(struct au_queue *q, const char *queue, const struct au_ref *refs,
		       size_t n, int *applied)
{
	return requeue(q, queue, refs, n, NULL, NULL, NULL, 1, applied);
}

static int pgq_bury(struct au_queue *q, const char *queue, const struct au_ref *refs, size_t n,
		    const char *const *reason, int *applied)
{
	struct au_buf *b = &((struct pgq *)q->ctx)->params;
	size_t at[4], i;
	int rc;

	if (!n)
		return 0;
	rc = fence_params(b, queue, refs, n, at);
	at[3] = b->len;
	rc |= au_pg_array(b, AU_PG_TEXT, n);
	for (i = 0; i < n; i++)
		rc |= add_text(b, reason ? reason[i] : NULL);
	if (rc)
		return oom(q);
	return settle(q, S_BURY, n, at, 4, applied);
}

static int pgq_extend(struct au_queue *q, const char *queue, const struct au_ref *refs,
		      size_t n, uint32_t lease_ms, int *applied)
{
	struct au_buf *b = &((struct pgq *)q->ctx)->params;
	unsigned char ms[8];
	size_t at[4];
	int rc;

	if (!n)
		return 0;
	rc = fence_params(b, queue, refs, n, at);
	at[3] = b->len;
	au_pg_put_u64(ms, lease_ms);
	rc |= au_buf_append(b, ms, 8);
	if (rc)
		return oom(q);
	return settle(q, S_EXTEND, n, at, 4, applied);
}

/* ---- housekeeping and inspection ---- */

/* At most every AU_HOUSEKEEP_MS per handle: the dead set's bounds, and
 * the sample of processed the rate of stats compares with. */
static int housekeep(struct au_queue *q, const char *queue)
{
	struct pgq *p = q->ctx;
	unsigned char max[8], age[8];
	const char *vals[] = { queue, (const char *)max, (const char *)age };
	int lens[] = { (int)strlen(queue), 8, 8 };
	PGresult *r;

	if (!au_queue_housekeep_due(&p->housekept, queue))
		return 0;
	au_pg_put_u64(max, p->limits.max > INT64_MAX ? INT64_MAX : p->limits.max);
	au_pg_put_u64(age, p->limits.max_age_ms > INT64_MAX / 2 ? INT64_MAX / 2 : p->limits.max_age_ms);
	if (!(r = run(q, S_HOUSEKEEP, 3, vals, lens)))
		return -1;
	PQclear(r);
	return 0;
}

static int pgq_rescue(struct au_queue *q, const char *queue, size_t max, size_t *requeued,
		      size_t *buried)
{
	unsigned char lim[8];
	const char *vals[] = { au_queue_name(queue), (const char *)lim };
	int lens[] = { (int)strlen(vals[0]), 8 }, i;
	PGresult *r;

	*requeued = *buried = 0;
	if (!max)
		return 0;
	au_pg_put_u64(lim, max);
	if (!(r = run(q, S_RESCUE, 2, vals, lens)))
		return -1;
	for (i = 0; i < PQntuples(r); i++) {
		int32_t st = (int32_t)au_pg_get_u32(PQgetvalue(r, i, 0));

		*requeued += st == 0;
		*buried += st == 2;
	}
	PQclear(r);
	return housekeep(q, vals[0]);
}

/* A malloc'ed copy of column col of row 0 into *out (NULL when null or
 * empty); -1 on OOM. */
static int column_bytes(struct au_queue *q, const PGresult *r, int col, unsigned char **out,
			size_t *len)
{
	*out = NULL;
	*len = 0;
	if (PQgetisnull(r, 0, col) || PQgetlength(r, 0, col) <= 0)
		return 0;
	if (!(*out = malloc((size_t)PQgetlength(r, 0, col))))
		return oom(q);
	*len = (size_t)PQgetlength(r, 0, col);
	memcpy(*out, PQgetvalue(r, 0, col), *len);
	return 0;
}

static int pgq_cancel(struct au_queue *q, const char *queue, const char *id,
		      struct au_cancelled *seen)
{
	PGresult *r = run_id(q, S_CANCEL, queue, id);
	int rc = 0, st;

	if (!r && q->err.code != AU_ENOTFOUND)
		return -1;
	st = r && PQntuples(r) ? (int)au_pg_get_u32(PQgetvalue(r, 0, 0)) : -1;
	if (seen && (st == 0 || st == 1)) {
		seen->attempts = au_pg_get_u32(PQgetvalue(r, 0, 2));
		if (column_bytes(q, r, 1, &seen->body, &seen->body_len) < 0 ||
		    column_bytes(q, r, 3, &seen->story, &seen->story_len) < 0) {
			/* removed all the same (st 0): say so, without what it saw */
			au_cancelled_release(seen);
			if (st == 1) {
				PQclear(r);
				return -1;
			}
		}
	}
	PQclear(r);
	if (st == 1)
		rc = au_seterr(&q->err, AU_ESTATE, "computation '%s' is running", id);
	else if (st != 0)
		rc = au_seterr(&q->err, AU_ENOTFOUND, "no computation '%s' waiting in queue '%s'", id,
			       au_queue_name(queue));
	return rc;
}

static int pgq_peek(struct au_queue *q, const char *queue, const char *id,
		    struct au_queued *info)
{
	PGresult *r = run_id(q, S_PEEK, queue, id);

	if (!r)
		return -1;
	if (!PQntuples(r)) {
		PQclear(r);
		return au_seterr(&q->err, AU_ENOTFOUND, "no computation '%s' in queue '%s'", id,
				 au_queue_name(queue));
	}
	if (!PQgetisnull(r, 0, 4) && PQgetlength(r, 0, 4) > 0) {
		info->story_len = (size_t)PQgetlength(r, 0, 4);
		if (!(info->story = malloc(info->story_len))) {
			info->story_len = 0;
			PQclear(r);
			return oom(q);
		}
		memcpy(info->story, PQgetvalue(r, 0, 4), info->story_len);
	}
	info->state = (enum au_queued_state)au_pg_get_u32(PQgetvalue(r, 0, 0));
	info->attempts = au_pg_get_u32(PQgetvalue(r, 0, 1));
	info->max_attempts = au_pg_get_u32(PQgetvalue(r, 0, 2));
	snprintf(info->error, sizeof(info->error), "%.*s", PQgetlength(r, 0, 3),
		 PQgetvalue(r, 0, 3));
	PQclear(r);
	return 0;
}

static int pgq_stats(struct au_queue *q, const char *queue, struct au_queue_stats *st)
{
	PGresult *r = run_id(q, S_STATS, queue, NULL);

	if (!r)
		return -1;
	st->ready = au_pg_get_u64(PQgetvalue(r, 0, 0));
	st->scheduled = au_pg_get_u64(PQgetvalue(r, 0, 1));
	st->leased = au_pg_get_u64(PQgetvalue(r, 0, 2));
	st->dead = au_pg_get_u64(PQgetvalue(r, 0, 3));
	st->paused = *PQgetvalue(r, 0, 4) != 0;
	st->processed = au_pg_get_u64(PQgetvalue(r, 0, 5));
	st->failed = au_pg_get_u64(PQgetvalue(r, 0, 6));
	st->per_minute = au_pg_get_u64(PQgetvalue(r, 0, 7));
	st->waiting = au_pg_get_u64(PQgetvalue(r, 0, 8));
	PQclear(r);
	return 0;
}

/* The first column of r's rows, as a malloc'ed array of malloc'ed
 * strings; r is cleared. */
static int first_column(struct au_queue *q, PGresult *r, char ***out, size_t *n)
{
	size_t rows, i;
	char **v;

	if (!r)
		return -1;
	rows = (size_t)PQntuples(r);
	v = calloc(rows ? rows : 1, sizeof(*v));
	for (i = 0; v && i < rows; i++)
		if (!(v[i] = au_strndup(PQgetvalue(r, (int)i, 0), (size_t)PQgetlength(r, (int)i, 0)))) {
			while (i--)
				free(v[i]);
			free(v);
			v = NULL;
		}
	PQclear(r);
	if (!v)
		return oom(q);
	*out = v;
	*n = rows;
	return 0;
}

static int pgq_queues(struct au_queue *q, char ***names, size_t *n)
{
	return first_column(q, run(q, S_QUEUES, 0, NULL, NULL), names, n);
}

/* ---- administration ---- */

/* The count in the first column of a statement's single row; clears r. */
static size_t count_of(PGresult *r)
{
	size_t v = PQntuples(r) ? (size_t)au_pg_get_u64(PQgetvalue(r, 0, 0)) : 0;

	PQclear(r);
	return v;
}

static int pgq_dead(struct au_queue *q, const char *queue, const char *id, size_t max,
		    struct au_dead *out, size_t *n)
{
	unsigned char lim[8];
	const char *vals[] = { queue, (const char *)lim };
	int lens[] = { (int)strlen(queue), 8 }, rows, i;
	PGresult *r;

	if (!max)
		return 0;
	if (id) {
		if (!(r = run_id(q, S_DEAD_ONE, queue, id)))
			return q->err.code == AU_ENOTFOUND ? 0 : -1;
	} else {
		au_pg_put_u64(lim, max > INT64_MAX ? INT64_MAX : max);
		if (!(r = run(q, S_DEAD_LIST, 2, vals, lens)))
			return -1;
	}
	rows = PQntuples(r);
	for (i = 0; i < rows && (size_t)i < max; i++) {
		struct au_dead *d = &out[i];
		int blen = PQgetlength(r, i, 4);

		memset(d, 0, sizeof(*d));
		au_pg_id(d->id, (const unsigned char *)PQgetvalue(r, i, 0));
		d->died_at_ms = au_pg_get_u64(PQgetvalue(r, i, 1));
		d->attempts = au_pg_get_u32(PQgetvalue(r, i, 2));
		snprintf(d->reason, sizeof(d->reason), "%.*s", PQgetlength(r, i, 3),
			 PQgetvalue(r, i, 3));
		if (!(d->body = malloc(blen ? (size_t)blen : 1))) {
			while (i)
				au_dead_release(&out[--i]);
			PQclear(r);
			return oom(q);
		}
		memcpy(d->body, PQgetvalue(r, i, 4), (size_t)blen);
		d->body_len = (size_t)blen;
		if (!PQgetisnull(r, i, 5) && PQgetlength(r, i, 5) > 0) {
			d->story_len = (size_t)PQgetlength(r, i, 5);
			if (!(d->story = malloc(d->story_len))) {
				au_dead_release(d);
				while (i)
					au_dead_release(&out[--i]);
				PQclear(r);
				return oom(q);
			}
			memcpy(d->story, PQgetvalue(r, i, 5), d->story_len);
		}
	}
	*n = (size_t)i;
	PQclear(r);
	return 0;
}

static int pgq_requeue(struct au_queue *q, const char *queue, const char *const *ids, size_t n,
		       int *applied)
{
	struct au_buf *b = &((struct pgq *)q->ctx)->params;
	size_t at[2], i;
	int rc = 0;

	if (!n)
		return 0;
	au_buf_reset(b);
	at[0] = b->len;
	rc |= au_buf_puts(b, queue);
	at[1] = b->len;
	rc |= au_pg_array(b, AU_PG_UUID, n);
	for (i = 0; i < n; i++) {
		unsigned char uuid[16];

		au_pg_uuid(uuid, ids[i]);   /* valid: the wrapper checked */
		rc |= au_pg_array_add(b, uuid, 16);
	}
	if (rc)
		return oom(q);
	return settle(q, S_REVIVE, n, at, 2, applied);
}

static int pgq_purge(struct au_queue *q, const char *queue, uint64_t older_ms, size_t max,
		     size_t *removed)
{
	unsigned char ms[8], lim[8];
	const char *vals[] = { queue, (const char *)ms, (const char *)lim };
	int lens[] = { (int)strlen(queue), 8, 8 };
	PGresult *r;

	au_pg_put_u64(ms, older_ms > INT64_MAX / 2 ? INT64_MAX / 2 : older_ms);
	au_pg_put_u64(lim, max > INT64_MAX ? INT64_MAX : max);
	if (!(r = run(q, S_PURGE, 3, vals, lens)))
		return -1;
	*removed = count_of(r);
	return 0;
}

static int pgq_pause(struct au_queue *q, const char *queue, int paused)
{
	char flag = paused ? 1 : 0;
	const char *vals[] = { queue, &flag };
	int lens[] = { (int)strlen(queue), 1 };
	PGresult *r;

	if (!(r = run(q, S_PAUSE, 2, vals, lens)))
		return -1;
	PQclear(r);
	return 0;
}

static int pgq_empty(struct au_queue *q, const char *queue, size_t max, size_t *removed)
{
	unsigned char lim[8];
	const char *vals[] = { queue, (const char *)lim };
	int lens[] = { (int)strlen(queue), 8 };
	PGresult *r;

	au_pg_put_u64(lim, max > INT64_MAX ? INT64_MAX : max);
	if (!(r = run(q, S_EMPTY, 2, vals, lens)))
		return -1;
	*removed = count_of(r);
	return 0;
}

static int pgq_drop(struct au_queue *q, const char *queue, int force)
{
	char flag = force ? 1 : 0;
	const char *vals[] = { queue, &flag };
	int lens[] = { (int)strlen(queue), 1 };
	unsigned long long v[5] = { 0, 0, 0, 0, 0 };
	PGresult *r;
	int i;

	if (!(r = run(q, S_DROP, 2, vals, lens)))
		return -1;
	for (i = 0; i < 5 && PQntuples(r); i++)
		v[i] = (unsigned long long)au_pg_get_u64(PQgetvalue(r, 0, i));
	PQclear(r);
	if (!force && v[0] + v[1] + v[2] + v[3] + v[4])
	if (!force && v[4])
		return au_seterr(&q->err, AU_ESTATE, "queue '%s' holds computations: %llu ready,"
				 " %llu scheduled, %llu running, %llu dead, %llu waiting", queue, v[0],
				 v[1], v[2], v[3], v[4]);
	if (!force && v[0] + v[1] + v[2] + v[3])
		return au_seterr(&q->err, AU_ESTATE, "queue '%s' holds computations: %llu ready,"
				 " %llu scheduled, %llu running, %llu dead", queue, v[0], v[1], v[2],
				 v[3]);
	return 0;
}

static int pgq_locate(struct au_queue *q, const char *id, char **queue)
{
	unsigned char uuid[16];
	const char *vals[] = { (const char *)uuid };
	int lens[] = { 16 };
	PGresult *r;

	if (au_pg_uuid(uuid, id) < 0)
		return au_seterr(&q->err, AU_EINVAL, "invalid computation id '%s'", id);
	if (!(r = run(q, S_LOCATE, 1, vals, lens)))
		return -1;
	if (!PQntuples(r)) {
		PQclear(r);
		return au_seterr(&q->err, AU_ENOTFOUND, "no queue of '%s' has computation '%s'",
				 q->url.text, id);
	}
	*queue = au_strndup(PQgetvalue(r, 0, 0), (size_t)PQgetlength(r, 0, 0));
	PQclear(r);
	return *queue ? 0 : oom(q);
}

/* ---- watch ---- */

/*
 * A watch has a connection of its own on the loop, and of the idle
 * workers of a queue in one database at most K listen on it (K is the
 * URL's watchers=, default DEFAULT_WATCHERS): only a watch that holds one
 * of K session advisory locks of the queue, pg_try_advisory_lock(key, k)
 * for k < K with key a hash of the queue's name, LISTENs. A notification
 * therefore wakes at most K workers however many wait; each of the others
 * tries for a free slot about every SEEK_MS (one statement) and polls
 * the queue as before. A lock dies with its session, so a crashed worker
 * frees its slot. A paused watch (its worker has no room) gives its slot
 * up and seeks one again when resumed. Once a LISTEN is confirmed the
 * worker is woken, as computations may have arrived while it did not
 * listen.
 *
 * Every command goes out without blocking the loop and its reply comes to
 * watch_socket; watch_next() sends the next one the state calls for. A
 * connection that drops (a server restart) is opened again the same way:
 * PQconnectStart, then PQconnectPoll each time the socket is ready, with a
 * fresh event each step since the socket may change. Failed attempts are
 * retried every WATCH_RETRY_S.
 */
enum watch_cmd { CMD_NONE, CMD_SEEK, CMD_LISTEN, CMD_RELEASE, CMD_LISTEN_CANCEL };

struct pg_watch {
	char *conninfo;
	char *queue;
	const struct au_url *url;
	struct event_base *base;
	PGconn *c;
	struct event *ev;           /* on c's socket */
	struct event *timer;        /* retries: of the connection, or of a seek */
	struct event *wake;         /* the first wake */
	au_queue_wake_fn fn;
	void *arg;
	int32_t key;                /* of the queue's slots */
	int nslots;                 /* K */
	int slot;                   /* held, or -1 */
	int listening;              /* LISTEN confirmed */
	au_queue_cancel_fn cancel;  /* set: cancels are heard too (LISTEN au_cancel) */
	void *cancel_arg;
	int cancel_listening;       /* that LISTEN is confirmed */
	int paused;
	int connecting;
	int seek_due;               /* look for a slot once the connection is free */
	int reconnected;            /* wake once the new connection is set up */
	enum watch_cmd cmd;         /* in flight */
	short armed;                /* what ev waits for */
};

/* The lock key of the slots of queue: 32 bits of FNV-1a. */
static int32_t watch_key(const char *queue)
{
	uint32_t h = 2166136261u;
	const char *p;

	for (p = "au_queue watch "; *p; p++)
		h = (h ^ (unsigned char)*p) * 16777619u;
	for (p = queue; *p; p++)
		h = (h ^ (unsigned char)*p) * 16777619u;
	return (int32_t)h;
}

/* The statement that takes the first free slot, returning its number. */
static void seek_sql(const struct pg_watch *w, char *sql, size_t len)
{
	snprintf(sql, len,
		 "SELECT k FROM generate_series(0, %d) AS k WHERE pg_try_advisory_lock(%ld, k) LIMIT 1",
		 w->nslots - 1, (long)w->key);
}

static void watch_socket(evutil_socket_t fd, short what, void *arg);

/* The next seek in SEEK_MS, jittered: watches started together do not seek
 * together ever after. */
static void watch_seek_later(struct pg_watch *w)
{
	uint64_t ms = SEEK_MS / 2 + au_random64() % SEEK_MS;
	struct timeval tv = { (time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000 };

	evtimer_add(w->timer, &tv);
}

/* Waits for what on c's current socket (a persistent wait already in
 * place stays). */
static int watch_arm(struct pg_watch *w, short what)
{
	if (w->ev && (what & EV_PERSIST) && w->armed == what &&
	    event_get_fd(w->ev) == PQsocket(w->c))
		return 0;
	if (w->ev)
		event_free(w->ev);
	w->armed = what;
	w->ev = event_new(w->base, PQsocket(w->c), what, watch_socket, w);
	return w->ev && event_add(w->ev, NULL) == 0 ? 0 : -1;
}

/* Reads again while output waits to be flushed, else only reads. */
static int watch_flush(struct pg_watch *w)
{
	int pending = PQflush(w->c);

	if (pending < 0)
		return -1;
	return watch_arm(w, (short)(EV_READ | EV_PERSIST | (pending ? EV_WRITE : 0)));
}

static void watch_drop(struct pg_watch *w)
{
	struct timeval retry = { WATCH_RETRY_S, 0 };

	if (w->ev)
		event_free(w->ev);
	w->ev = NULL;
	PQfinish(w->c);
	w->c = NULL;
	w->connecting = 0;
	w->slot = -1;               /* locks and LISTEN end with the session */
	w->listening = 0;
	w->cancel_listening = 0;
	w->cmd = CMD_NONE;
	w->reconnected = 1;
	evtimer_add(w->timer, &retry);
}

static int watch_send(struct pg_watch *w, enum watch_cmd cmd, const char *sql)
{
	if (!PQsendQuery(w->c, sql))
		return -1;
	w->cmd = cmd;
	return watch_flush(w);
}

/* Sends what the state calls for, if the connection is free; -1 when the
 * connection is unusable. */
static int watch_next(struct pg_watch *w)
{
	char sql[160];

	if (!w->c || w->connecting || w->cmd != CMD_NONE)
		return 0;
	/* cancels are heard whatever the slot: every worker may run one */
	if (w->cancel && !w->cancel_listening)
		return watch_send(w, CMD_LISTEN_CANCEL, "LISTEN " CANCEL_CHANNEL);
	if (w->paused && (w->slot >= 0 || w->listening)) {
		if (w->slot >= 0)
			snprintf(sql, sizeof(sql), "UNLISTEN " AU_PG_QUEUE_CHANNEL
				 "; SELECT pg_advisory_unlock(%ld, %d)", (long)w->key, w->slot);
		else
			snprintf(sql, sizeof(sql), "UNLISTEN " AU_PG_QUEUE_CHANNEL);
		return watch_send(w, CMD_RELEASE, sql);
	}
	if (w->paused)
		return 0;
	if (w->slot >= 0 && !w->listening)
		return watch_send(w, CMD_LISTEN, "LISTEN " AU_PG_QUEUE_CHANNEL);
	if (w->slot < 0 && w->seek_due) {
		w->seek_due = 0;
		seek_sql(w, sql, sizeof(sql));
		return watch_send(w, CMD_SEEK, sql);
	}
	return 0;
}

/* The reply to the command in flight is complete: *wake set when the worker
 * is to be woken. -1 when the reply says the connection is unusable. */
static int watch_done(struct pg_watch *w, PGresult *last, int failed, int *wake)
{
	enum watch_cmd cmd = w->cmd;

	w->cmd = CMD_NONE;
	if (failed) {
		au_log(AU_LOG_WARN, "watching queue '%s' on '%s': %s", w->queue, w->url->text,
		       PQerrorMessage(w->c));
		return -1;
	}
	switch (cmd) {
	case CMD_SEEK:
		if (last && PQntuples(last) == 1)
			w->slot = atoi(PQgetvalue(last, 0, 0));
		if (w->slot < 0) {
			watch_seek_later(w);
			if (w->reconnected) {
				w->reconnected = 0;
				*wake = 1;
			}
		}
		break;
	case CMD_LISTEN:
		w->listening = 1;
		if (w->reconnected)
			au_log(AU_LOG_INFO, "watching queue '%s' on '%s' again", w->queue,
			       w->url->text);
		w->reconnected = 0;
		*wake = 1;
		break;
	case CMD_RELEASE:
		w->slot = -1;
		w->listening = 0;
		break;
	case CMD_LISTEN_CANCEL:
		w->cancel_listening = 1;
		break;
	default:
		break;
	}
	return 0;
}

static void watch_connect_step(struct pg_watch *w)
{
	switch (PQconnectPoll(w->c)) {
	case PGRES_POLLING_READING:
		if (watch_arm(w, EV_READ) == 0)
			return;
		break;
	case PGRES_POLLING_WRITING:
		if (watch_arm(w, EV_WRITE) == 0)
			return;
		break;
	case PGRES_POLLING_OK:
		w->connecting = 0;
		w->seek_due = 1;
		if (PQsetnonblocking(w->c, 1) == 0 && watch_arm(w, EV_READ | EV_PERSIST) == 0 &&
		    watch_next(w) == 0)
			return;
		break;
	default:
		break;
	}
	watch_drop(w);
}

/* "<queue> <id>": for this watch's queue, told to the worker */
static void cancel_heard(struct pg_watch *w, const char *payload)
{
	size_t n = strlen(w->queue);

	if (w->cancel && !strncmp(payload, w->queue, n) && payload[n] == ' ' &&
	    au_id_valid(payload + n + 1))
		w->cancel(w->cancel_arg, payload + n + 1);
}

static void watch_socket(evutil_socket_t fd, short what, void *arg)
{
	struct pg_watch *w = arg;
	PGresult *r, *last = NULL;
	PGnotify *n;
	int wake = 0, failed = 0, done = 0;

	(void)fd;
	if (w->connecting) {
		watch_connect_step(w);
		return;
	}
	if ((what & EV_WRITE) && watch_flush(w) < 0)
		goto lost;
	if (!PQconsumeInput(w->c) || PQstatus(w->c) != CONNECTION_OK)
		goto lost;
	while (w->cmd != CMD_NONE && !PQisBusy(w->c)) {
		if (!(r = PQgetResult(w->c))) {
			done = 1;
			break;
		}
		failed |= PQresultStatus(r) != PGRES_COMMAND_OK &&
			  PQresultStatus(r) != PGRES_TUPLES_OK;
		PQclear(last);
		last = r;
	}
	if (done && watch_done(w, last, failed, &wake) < 0) {
		PQclear(last);
		watch_drop(w);
		return;
	}
	PQclear(last);
	while ((n = PQnotifies(w->c))) {
		if (!strcmp(n->relname, CANCEL_CHANNEL))
			cancel_heard(w, n->extra);
		else
			wake |= w->listening && !w->paused && !strcmp(n->extra, w->queue);
		PQfreemem(n);
	}
	if (watch_next(w) < 0) {
		watch_drop(w);
		return;
	}
	/* last: fn may unwatch */
	if (wake)
		w->fn(w->arg);
	return;
lost: {
		char why[AU_ERRSTR_SIZE];

		snprintf(why, sizeof(why), "%s", PQerrorMessage(w->c));
		why[strcspn(why, "\n")] = '\0';
		au_log(AU_LOG_WARN, "lost the connection watching queue '%s' on '%s' (%s): reconnecting",
		       w->queue, w->url->text, why);
		watch_drop(w);
	}
}

static void watch_timer(evutil_socket_t fd, short what, void *arg)
{
	struct pg_watch *w = arg;

	(void)fd;
	(void)what;
	if (w->c) {                 /* a seek, due again */
		w->seek_due = 1;
		if (watch_next(w) < 0)
			watch_drop(w);
		return;
	}
	w->c = PQconnectStart(w->conninfo);
	au_pg_notices(w->c);
	if (!w->c || PQstatus(w->c) == CONNECTION_BAD) {
		watch_drop(w);
		return;
	}
	/* libpq's protocol: poll once the socket is writable */
	w->connecting = 1;
	if (watch_arm(w, EV_WRITE) < 0)
		watch_drop(w);
}

static void watch_first_wake(evutil_socket_t fd, short what, void *arg)
{
	struct pg_watch *w = arg;

	(void)fd;
	(void)what;
	w->fn(w->arg);
}

static void watch_free(struct pg_watch *w)
{
	if (w->ev)
		event_free(w->ev);
	if (w->timer)
		event_free(w->timer);
	if (w->wake)
		event_free(w->wake);
	PQfinish(w->c);
	free(w->conninfo);
	free(w->queue);
	free(w);
}

/* The first slot and LISTEN, blocking (watch reports a bad connection, and
 * a holder's LISTEN has taken effect when it returns). */
static int watch_setup(struct pg_watch *w)
{
	char sql[160];
	PGresult *r;
	int ok;

	seek_sql(w, sql, sizeof(sql));
	r = PQexec(w->c, sql);
	ok = PQresultStatus(r) == PGRES_TUPLES_OK;
	if (ok && PQntuples(r) == 1)
		w->slot = atoi(PQgetvalue(r, 0, 0));
	PQclear(r);
	if (ok && w->slot >= 0) {
		r = PQexec(w->c, "LISTEN " AU_PG_QUEUE_CHANNEL);
		ok = PQresultStatus(r) == PGRES_COMMAND_OK;
		w->listening = ok;
		PQclear(r);
	}
	return ok ? 0 : -1;
}

static int pgq_watch(struct au_queue *q, const char *queue, struct event_base *base,
		     au_queue_wake_fn fn, void *arg)
{
	struct pgq *p = q->ctx;
	struct pg_watch *w;

	if (p->watch)
		return au_seterr(&q->err, AU_ESTATE, "'%s' is already watching a queue", q->url.text);
	if (!(w = calloc(1, sizeof(*w))))
		return oom(q);
	w->url = &q->url;
	w->base = base;
	w->fn = fn;
	w->arg = arg;
	w->slot = -1;
	w->nslots = p->watchers;
	if (!(w->queue = au_strdup(au_queue_name(queue))) || !(w->conninfo = strdup(p->watch_conninfo)) ||
	    !(w->timer = evtimer_new(base, watch_timer, w)) ||
	    !(w->wake = event_new(base, -1, 0, watch_first_wake, w))) {
		watch_free(w);
		return oom(q);
	}
	w->key = watch_key(w->queue);
	w->c = PQconnectdb(w->conninfo);
	au_pg_notices(w->c);
	if (PQstatus(w->c) != CONNECTION_OK) {
		au_pg_connect_error(&q->err, &q->url, w->c);
		watch_free(w);
		return -1;
	}
	if (watch_setup(w) < 0 || PQsetnonblocking(w->c, 1) < 0 ||
	    watch_arm(w, EV_READ | EV_PERSIST) < 0) {
		au_seterr(&q->err, AU_ECONN, "cannot listen on '%s'", q->url.text);
		watch_free(w);
		return -1;
	}
	if (w->slot < 0)
		watch_seek_later(w);
	if (p->cancel_fn && !strcmp(p->cancel_queue, w->queue)) {
		w->cancel = p->cancel_fn;
		w->cancel_arg = p->cancel_arg;
		if (watch_next(w) < 0) {   /* its LISTEN goes out now */
			au_seterr(&q->err, AU_ECONN, "cannot listen on '%s'", q->url.text);
			watch_free(w);
			return -1;
		}
	}
	/* a first wake covers what arrived before the watch */
	event_active(w->wake, 0, 0);
	p->watch = w;
	return 0;
}

static void pgq_unwatch(struct au_queue *q)
{
	struct pgq *p = q->ctx;

	if (!p->watch)
		return;
	watch_free(p->watch);
	p->watch = NULL;
}

/* Cancels are heard on the wake watch's connection, which every worker
 * has (only K of them LISTEN for wake-ups); set before or after watch. */
static int pgq_watch_cancels(struct au_queue *q, const char *queue, struct event_base *base,
			     au_queue_cancel_fn fn, void *arg)
{
	struct pgq *p = q->ctx;

	(void)base;
	if (p->cancel_fn)
		return au_seterr(&q->err, AU_ESTATE, "'%s' is already watching cancels", q->url.text);
	free(p->cancel_queue);
	if (!(p->cancel_queue = au_strdup(queue)))
		return oom(q);
	p->cancel_fn = fn;
	p->cancel_arg = arg;
	if (p->watch && !strcmp(p->watch->queue, queue)) {
		p->watch->cancel = fn;
		p->watch->cancel_arg = arg;
		if (watch_next(p->watch) < 0)
			watch_drop(p->watch);
	}
	return 0;
}

static void pgq_unwatch_cancels(struct au_queue *q)
{
	struct pgq *p = q->ctx;

	p->cancel_fn = NULL;
	free(p->cancel_queue);
	p->cancel_queue = NULL;
	/* an UNLISTEN would wait for the connection: a cancel heard from now
	 * on is passed over */
	if (p->watch)
		p->watch->cancel = NULL;
}

static int pgq_cancel_running(struct au_queue *q, const char *queue, const char *id)
{
	const char *vals[] = { au_queue_name(queue), id };
	int lens[] = { (int)strlen(vals[0]), (int)strlen(id) };
	PGresult *r = run(q, S_CANCEL_RUNNING, 2, vals, lens);

	if (!r)
		return -1;
	PQclear(r);
	return 0;
}

static void pgq_watch_pause(struct au_queue *q, int paused)
{
	struct pg_watch *w = ((struct pgq *)q->ctx)->watch;

	if (!w || w->paused == !!paused)
		return;
	w->paused = !!paused;
	w->seek_due = !paused;
	if (watch_next(w) < 0)
		watch_drop(w);
}

/* ---- the worker registry: table au_workers (schema v6) ---- */

static int pgq_beat(struct au_queue *q, const struct au_worker_beat *b, int *stop)
{
	char num[6][24], counts[6 * 24], ids[AU_BEAT_IDS * AU_ID_SIZE] = "";
	char hex[2 * AU_BEAT_METRICS_MAX + 1];   /* the metrics, as text (schema v8) */
	const char *vals[14];
	int lens[14];
	PGresult *r;
	size_t i, len = 0;

	for (i = 0; i < b->nids && i < AU_BEAT_IDS; i++)
		len += (size_t)snprintf(ids + len, sizeof(ids) - len, "%s%s", i ? " " : "", b->ids[i]);
	snprintf(num[0], sizeof(num[0]), "%u", (unsigned)b->pid);
	snprintf(num[1], sizeof(num[1]), "%llu", (unsigned long long)b->started_ms);
	snprintf(num[2], sizeof(num[2]), "%u", (unsigned)b->concurrency);
	snprintf(num[3], sizeof(num[3]), "%u", (unsigned)b->running);
	snprintf(num[4], sizeof(num[4]), "%u", (unsigned)b->ttl_ms);
	snprintf(counts, sizeof(counts), "%lld %lld %lld %lld %lld %lld",
		 (long long)(b->leased & INT64_MAX), (long long)(b->completed & INT64_MAX),
		 (long long)(b->failed & INT64_MAX), (long long)(b->retried & INT64_MAX),
		 (long long)(b->released & INT64_MAX), (long long)(b->outages & INT64_MAX));
	vals[0] = b->id;
	vals[1] = b->host;
	vals[2] = num[0];
	vals[3] = b->queues;
	vals[4] = b->version;
	vals[5] = num[1];
	vals[6] = num[2];
	vals[7] = au_beat_state_name(b->state);
	vals[8] = b->paused_by;
	vals[9] = num[3];
	vals[10] = ids;
	vals[11] = counts;
	vals[12] = num[4];
	for (i = 0; i < b->metrics_len && i < sizeof(b->metrics); i++)
		snprintf(hex + 2 * i, 3, "%02x", b->metrics[i]);
	hex[2 * i] = '\0';
	vals[13] = hex;
	for (i = 0; i < 14; i++)
		lens[i] = (int)strlen(vals[i]);
	if (!(r = run(q, S_BEAT, 14, vals, lens)))
		return -1;
	*stop = PQntuples(r) > 0 && !strcmp(PQgetvalue(r, 0, 0), "true");
	PQclear(r);
	return 0;
}

static void text_col(char *dst, size_t size, const PGresult *r, int row, int col)
{
	snprintf(dst, size, "%s", PQgetvalue(r, row, col));
}

static uint64_t u64_col(const PGresult *r, int row, int col)
{
	return strtoull(PQgetvalue(r, row, col), NULL, 10);
}

static int pgq_workers(struct au_queue *q, struct au_worker_beat **out, size_t *n)
{
	PGresult *r = run(q, S_WORKERS, 0, NULL, NULL);
	int rows, i;

	if (!r)
		return -1;
	rows = PQntuples(r);
	if (!(*out = calloc(rows ? (size_t)rows : 1, sizeof(**out)))) {
		PQclear(r);
		return oom(q);
	}
	for (i = 0; i < rows; i++) {
		struct au_worker_beat *b = &(*out)[i];
		char ids[AU_BEAT_IDS * AU_ID_SIZE], state[32], *tok, *save;

		text_col(b->id, sizeof(b->id), r, i, 0);
		text_col(b->host, sizeof(b->host), r, i, 1);
		b->pid = (uint32_t)u64_col(r, i, 2);
		text_col(b->queues, sizeof(b->queues), r, i, 3);
		text_col(b->version, sizeof(b->version), r, i, 4);
		b->started_ms = u64_col(r, i, 5);
		b->concurrency = (uint32_t)u64_col(r, i, 6);
		text_col(state, sizeof(state), r, i, 7);
		if (au_beat_state_parse(state, &b->state) < 0)
			b->state = AU_BEAT_RUNNING;
		text_col(b->paused_by, sizeof(b->paused_by), r, i, 8);
		b->running = (uint32_t)u64_col(r, i, 9);
		text_col(ids, sizeof(ids), r, i, 10);
		for (tok = strtok_r(ids, " ", &save); tok && b->nids < AU_BEAT_IDS;
		     tok = strtok_r(NULL, " ", &save))
			if (au_id_valid(tok))
				memcpy(b->ids[b->nids++], tok, AU_ID_SIZE);
		b->leased = u64_col(r, i, 11);
		b->completed = u64_col(r, i, 12);
		b->failed = u64_col(r, i, 13);
		b->retried = u64_col(r, i, 14);
		b->released = u64_col(r, i, 15);
		b->outages = u64_col(r, i, 16);
		b->ttl_ms = (uint32_t)u64_col(r, i, 17);
		b->beat_at_ms = u64_col(r, i, 18);
		b->age_ms = u64_col(r, i, 19);
		{
			const char *hx = PQgetvalue(r, i, 20);
			size_t k, hn = strlen(hx) / 2;

			for (k = 0; k < hn && k < sizeof(b->metrics); k++) {
				unsigned v;

				if (sscanf(hx + 2 * k, "%2x", &v) != 1)
					break;
				b->metrics[k] = (unsigned char)v;
			}
			b->metrics_len = (uint32_t)k;
		}
	}
	*n = (size_t)rows;
	PQclear(r);
	return 0;
}

static int pgq_worker_stop(struct au_queue *q, const char *worker_id)
{
	const char *vals[] = { worker_id };
	int lens[] = { (int)strlen(worker_id) };
	PGresult *r = run(q, S_WORKER_STOP, 1, vals, lens);
	int found;

	if (!r)
		return -1;
	found = PQntuples(r) > 0;
	PQclear(r);
	if (!found)
		return au_seterr(&q->err, AU_ENOTFOUND, "no live worker '%s' on '%s'", worker_id,
				 q->url.text);
	return 0;
}

static int pgq_worker_gone(struct au_queue *q, const char *worker_id)
{
	const char *vals[] = { worker_id };
	int lens[] = { (int)strlen(worker_id) };
	PGresult *r = run(q, S_WORKER_GONE, 1, vals, lens);

	if (!r)
		return -1;
	PQclear(r);
	return 0;
}

/* ---- rate limits ---- */

static int pgq_rate_take(struct au_queue *q, const char *key, const struct au_rate_limit *lim,
			 uint64_t *wait_ms, int *taken)
{
	char num[3][32];
	const char *vals[] = { key, num[0], num[1], num[2] };
	int lens[4], i;
	struct pgq *p = q->ctx;
	uint64_t now = au_mono_us();
	PGresult *r;

	if (now - p->rate_swept_us > RATE_SWEEP_MS * 1000ull) {
		p->rate_swept_us = now;
		if ((r = run(q, S_RATE_SWEEP, 0, NULL, NULL)))
			PQclear(r);   /* a sweep that fails is tried again next time */
	}
	snprintf(num[0], sizeof(num[0]), "%.17g", lim->rate_per_s);
	snprintf(num[1], sizeof(num[1]), "%.17g", lim->burst);
	snprintf(num[2], sizeof(num[2]), "%u", (unsigned)lim->reserve_ms);
	for (i = 0; i < 4; i++)
		lens[i] = (int)strlen(vals[i]);
	if (!(r = run(q, S_RATE, 4, vals, lens)))
		return -1;
	if (PQntuples(r) > 0) {
		*taken = PQgetvalue(r, 0, 0)[0] == '1';
		*wait_ms = strtoull(PQgetvalue(r, 0, 1), NULL, 10);
	} else {   /* none taken, and the row came after the statement began */
		*taken = 0;
		*wait_ms = 1;
	}
	PQclear(r);
	return 0;
}

/* ---- flows: adopt, the kv space (schema v10) ---- */

static int pgq_adopt(struct au_queue *q, const char *id, const char (*deps)[AU_ID_SIZE], size_t n)
{
	struct au_buf *b = &((struct pgq *)q->ctx)->params;
	unsigned char uuid[16];
	const char *vals[2];
	int lens[2], rc = 0;
	size_t at, i, k = 0;
	PGresult *r;

	if (au_pg_uuid(uuid, id) < 0)
		return au_queue_bad_id(q, id);
	for (i = 0; i < n; i++)
		k += au_id_valid(deps[i]);
	au_buf_reset(b);
	rc |= au_buf_append(b, uuid, 16);
	at = b->len;
	rc |= au_pg_array(b, AU_PG_UUID, k);
	for (i = 0; i < n; i++) {
		unsigned char d[16];

		if (au_pg_uuid(d, deps[i]) == 0)
			rc |= au_pg_array_add(b, d, 16);
	}
	if (rc)
		return oom(q);
	vals[0] = (const char *)b->data;
	lens[0] = 16;
	vals[1] = (const char *)b->data + at;
	lens[1] = (int)(b->len - at);
	if (!(r = run(q, S_ADOPT, 2, vals, lens)))
		return -1;
	PQclear(r);
	return 0;
}

static int pgq_kv_put(struct au_queue *q, const char *ns, const char *key,
		      const unsigned char *val, size_t len, uint64_t ttl_ms, int nx, int *done)
{
	unsigned char ttl[8];
	const char *vals[] = { ns, key, val ? (const char *)val : "", (const char *)ttl };
	int lens[] = { (int)strlen(ns), (int)strlen(key), (int)len, 8 };
	PGresult *r;

	au_pg_put_u64(ttl, ttl_ms > INT64_MAX / 2 ? INT64_MAX / 2 : ttl_ms);
	if (!(r = run(q, nx ? S_KV_PUT_NX : S_KV_PUT, 4, vals, lens)))
		return -1;
	*done = PQntuples(r) > 0;
	PQclear(r);
	return 0;
}

static int pgq_kv_get(struct au_queue *q, const char *ns, const char *key, unsigned char **val,
		      size_t *len)
{
	const char *vals[] = { ns, key };
	int lens[] = { (int)strlen(ns), (int)strlen(key) };
	PGresult *r;
	size_t n;

	*val = NULL;
	*len = 0;
	if (!(r = run(q, S_KV_GET, 2, vals, lens)))
		return -1;
	if (!PQntuples(r)) {
		PQclear(r);
		return au_seterr(&q->err, AU_ENOTFOUND, "no key '%s' in '%s' of '%s'", key, ns,
				 q->url.text);
	}
	n = (size_t)PQgetlength(r, 0, 0);
	if (!(*val = malloc(n ? n : 1))) {
		PQclear(r);
		return oom(q);
	}
	memcpy(*val, PQgetvalue(r, 0, 0), n);
	*len = n;
	PQclear(r);
	return 0;
}

static int pgq_kv_del(struct au_queue *q, const char *ns, const char *key,
		      const unsigned char *expect, size_t expect_len, int *done)
{
	const char *vals[] = { ns, key, expect ? (expect_len ? (const char *)expect : "") : NULL };
	int lens[] = { (int)strlen(ns), (int)strlen(key), (int)expect_len };
	PGresult *r;

	if (!(r = run(q, S_KV_DEL, 3, vals, lens)))
		return -1;
	*done = PQntuples(r) > 0;
	PQclear(r);
	return 0;
}

static int pgq_kv_keys(struct au_queue *q, const char *ns, const char *prefix, size_t max,
		       char ***keys, size_t *n)
{
	unsigned char lim[8];
	const char *vals[] = { ns, prefix, (const char *)lim };
	int lens[] = { (int)strlen(ns), (int)strlen(prefix), 8 };

	*keys = NULL;
	*n = 0;
	au_pg_put_u64(lim, max > INT64_MAX ? INT64_MAX : max);
	return first_column(q, run(q, S_KV_KEYS, 3, vals, lens), keys, n);
}

/* libpq takes both spellings of the scheme; so does au. */
const struct au_queue_ops au_pg_queue_ops = {
	.scheme = "postgres",
	.alias = "postgresql",
	.features = AU_QUEUE_WATCH | AU_QUEUE_SHARED,
	.open = pgq_open,
	.close = pgq_close,
	.push = pgq_push,
	.lease = pgq_lease,
	.ack = pgq_ack,
	.retry = pgq_retry,
	.release = pgq_release,
	.bury = pgq_bury,
	.extend = pgq_extend,
	.rescue = pgq_rescue,
	.cancel = pgq_cancel,
	.peek = pgq_peek,
	.stats = pgq_stats,
	.queues = pgq_queues,
	.watch = pgq_watch,
	.unwatch = pgq_unwatch,
	.watch_pause = pgq_watch_pause,
	.ack_store = pgq_ack_store,
	.dead = pgq_dead,
	.requeue = pgq_requeue,
	.purge = pgq_purge,
	.pause = pgq_pause,
	.empty = pgq_empty,
	.drop = pgq_drop,
	.locate = pgq_locate,
	.rate_take = pgq_rate_take,
	.cancel_running = pgq_cancel_running,
	.watch_cancels = pgq_watch_cancels,
	.unwatch_cancels = pgq_unwatch_cancels,
	.beat = pgq_beat,
	.workers = pgq_workers,
	.worker_stop = pgq_worker_stop,
	.worker_gone = pgq_worker_gone,
	.adopt = pgq_adopt,
	.kv_put = pgq_kv_put,
	.kv_get = pgq_kv_get,
	.kv_del = pgq_kv_del,
	.kv_keys = pgq_kv_keys,
};
