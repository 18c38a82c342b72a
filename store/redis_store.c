/*
 * redis_store.c - results in Redis: redis://[[user]:password@]host[:port][/db].
 *
 * The record of a computation is the string key au:r:<id> holding its
 * encoded record, with a native expiry (SET NX EX), so expired records
 * vanish by themselves and cannot be told from unknown ones. A write
 * publishes on the channel au:r:<id>, which is what wait listens to.
 * Connections, AUTH, SELECT and messages are those of redis/redis_client.h,
 * shared with the Redis queue.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis.h>

#include "redis_client.h"
#include "store.h"

#define KEY_PREFIX "au:r:"
/* "au:r:" + id + NUL */
#define KEY_SIZE (sizeof(KEY_PREFIX) - 1 + AU_ID_SIZE)

struct redis_store {
	redisContext *c;     /* commands; NULL after a drop until reconnected */
	redisContext *sub;   /* subscriptions of wait, opened on first use */
	int db;
	struct au_buf buf;   /* encode scratch, reused */
	struct au_buf cmds;  /* a pipeline in RESP, reused */
};

static void make_key(char key[KEY_SIZE], const char *id)
{
	/* a valid id (the wrappers in store.h checked) is AU_ID_SIZE - 1 digits */
	memcpy(key, KEY_PREFIX, sizeof(KEY_PREFIX) - 1);
	memcpy(key + sizeof(KEY_PREFIX) - 1, id, AU_ID_SIZE);
}

static int conn_fail(struct au_store *s, const char *what, const redisContext *c)
{
	return au_redis_conn_error(&s->err, &s->url, c, what);
}

static int reply_fail(struct au_store *s, const redisReply *r, const char *what)
{
	return au_redis_reply_error(&s->err, &s->url, r, what);
}

static void drop(redisContext **c)
{
	redisFree(*c);
	*c = NULL;
}

/* Connects, authenticates and (for commands) selects the database. */
static redisContext *connect_to(struct au_store *s, int select_db)
{
	struct redis_store *rs = s->ctx;

	return au_redis_connect(&s->url, select_db ? rs->db : 0, &s->err);
}

static int redis_open(struct au_store *s, const struct au_url *url)
{
	struct redis_store *rs;
	int db;

	if (au_redis_db(url, &db, &s->err) < 0)
		return -1;
	rs = calloc(1, sizeof(*rs));
	if (!rs)
		return au_seterr(&s->err, AU_ENOMEM, "out of memory");
	rs->db = db;
	s->ctx = rs;
	rs->c = connect_to(s, 1);
	if (!rs->c) {
		free(rs);
		s->ctx = NULL;
		return -1;
	}
	return 0;
}

static void redis_close(struct au_store *s)
{
	struct redis_store *rs = s->ctx;

	redisFree(rs->c);
	redisFree(rs->sub);
	au_buf_release(&rs->buf);
	au_buf_release(&rs->cmds);
	free(rs);
}

/* One command on the main connection; a dropped connection is reopened and
 * the command sent again once. NULL with s->err set on failure. */
static redisReply *command(struct au_store *s, int argc, const char **argv, const size_t *lens)
{
	struct redis_store *rs = s->ctx;
	redisReply *r;
	int attempt;

	for (attempt = 0; attempt < 2; attempt++) {
		if (!rs->c && !(rs->c = connect_to(s, 1)))
			return NULL;
		r = redisCommandArgv(rs->c, argc, argv, lens);
		if (r)
			return r;
		conn_fail(s, "lost connection to", rs->c);
		drop(&rs->c);
	}
	return NULL;
}

/* Sends the whole batch and reads every reply: one round trip. 0, or -1
 * with AU_ECONN (connection gone: the caller may retry) or another code. */
static int put_batch(struct au_store *s, const struct au_record *recs, size_t n, int *applied)
{
	struct redis_store *rs = s->ctx;
	uint64_t now = au_now_ms();
	int rc = 0;
	size_t i;

	/* Per record, pipelined: SET NX (first terminal write wins) and a
	 * PUBLISH for waiters. The PUBLISH goes out even when the SET did not
	 * apply: a woken waiter reads the record that is there. Plain commands
	 * rather than a script: EVAL per record cost Redis 4x the time. The
	 * pipeline is written in RESP here and handed to hiredis whole. */
	au_buf_reset(&rs->cmds);
	for (i = 0; i < n; i++) {
		struct au_record w = recs[i];
		char key[KEY_SIZE], ttl[16];
		int ok;

		/* Redis enforces the TTL with its own clock; the expiry in the
		 * record tells readers when to expect it. */
		w.expires_at_ms = w.ttl_s ? now + (uint64_t)w.ttl_s * 1000 : 0;
		au_buf_reset(&rs->buf);
		if (au_record_encode(&w, &rs->buf, &s->err) < 0)
			return -1;   /* nothing was sent */
		make_key(key, recs[i].id);
		ok = au_resp_command(&rs->cmds, recs[i].ttl_s ? 6 : 4) == 0 &&
		     au_resp_arg(&rs->cmds, "SET", 3) == 0 &&
		     au_resp_arg(&rs->cmds, key, KEY_SIZE - 1) == 0 &&
		     au_resp_arg(&rs->cmds, rs->buf.data, rs->buf.len) == 0 &&
		     au_resp_arg(&rs->cmds, "NX", 2) == 0;
		if (ok && recs[i].ttl_s)
			ok = au_resp_arg(&rs->cmds, "EX", 2) == 0 &&
			     au_resp_arg(&rs->cmds, ttl,
					 (size_t)snprintf(ttl, sizeof(ttl), "%u", recs[i].ttl_s)) == 0;
		ok = ok && au_resp_command(&rs->cmds, 3) == 0 &&
		     au_resp_arg(&rs->cmds, "PUBLISH", 7) == 0 &&
		     au_resp_arg(&rs->cmds, key, KEY_SIZE - 1) == 0 &&
		     au_resp_arg(&rs->cmds, "1", 1) == 0;
		if (!ok)
			return au_seterr(&s->err, AU_ENOMEM, "out of memory");
	}
	if (redisAppendFormattedCommand(rs->c, (const char *)rs->cmds.data, rs->cmds.len) !=
	    REDIS_OK) {
		drop(&rs->c);
		return au_seterr(&s->err, AU_ENOMEM, "out of memory");
	}
	/* Every reply is read, even after an error reply, so the connection
	 * stays in step. */
	for (i = 0; i < 2 * n; i++) {
		redisReply *r;

		if (redisGetReply(rs->c, (void **)&r) != REDIS_OK) {
			conn_fail(s, "lost connection to", rs->c);
			drop(&rs->c);
			return -1;
		}
		if (r->type == REDIS_REPLY_ERROR) {
			if (rc == 0)
				rc = reply_fail(s, r, i % 2 ? "PUBLISH" : "SET");
		} else if (i % 2 == 0 && applied) {
			applied[i / 2] = r->type == REDIS_REPLY_STATUS;   /* OK, or nil if present */
		}
		freeReplyObject(r);
	}
	return rc;
}

static int redis_put(struct au_store *s, const struct au_record *recs, size_t n, int *applied)
{
	struct redis_store *rs = s->ctx;
	int attempt;

	if (n == 0)
		return 0;
	/* After a drop the batch is sent again: records the first try
	 * wrote then report applied = 0. */
	for (attempt = 0; attempt < 2; attempt++) {
		if (!rs->c && !(rs->c = connect_to(s, 1)))
			return -1;
		if (put_batch(s, recs, n, applied) == 0)
			return 0;
		if (s->err.code != AU_ECONN)
			return -1;
	}
	return -1;
}

static int redis_get(struct au_store *s, const char *id, struct au_record *out)
{
	char key[KEY_SIZE];
	const char *argv[] = { "GET", key };
	redisReply *r;
	int rc;

	make_key(key, id);
	if (!(r = command(s, 2, argv, NULL)))
		return -1;
	if (r->type == REDIS_REPLY_NIL)
		rc = au_seterr(&s->err, AU_ENOTFOUND,
			       "no result for computation '%s' (unknown or expired)", id);
	else if (r->type != REDIS_REPLY_STRING)
		rc = reply_fail(s, r, "GET");
	else if ((rc = au_record_decode((const unsigned char *)r->str, r->len, out, &s->err)) == 0 &&
		 strcmp(out->id, id) != 0) {
		rc = au_seterr(&s->err, AU_EPROTO, "key '%s' holds computation '%s'", key, out->id);
		au_record_release(out);
	}
	freeReplyObject(r);
	return rc;
}

static int redis_del(struct au_store *s, const char *id)
{
	char key[KEY_SIZE];
	const char *argv[] = { "DEL", key };
	redisReply *r;
	int rc = 0;

	make_key(key, id);
	if (!(r = command(s, 2, argv, NULL)))
		return -1;
	if (r->type != REDIS_REPLY_INTEGER)
		rc = reply_fail(s, r, "DEL");
	freeReplyObject(r);
	return rc;
}

static int redis_sweep(struct au_store *s, size_t max, size_t *removed)
{
	(void)s;
	(void)max;
	if (removed)
		*removed = 0;
	return 0;
}

/* 1 if r is the pub/sub reply ["kind", channel, ...]. */
static int is_pubsub(const redisReply *r, const char *kind)
{
	return r->type == REDIS_REPLY_ARRAY && r->elements >= 2 &&
	       r->element[0]->type == REDIS_REPLY_STRING && !strcmp(r->element[0]->str, kind);
}

/* Subscribes the wait connection to key (opening it if needed, once more
 * if it was dropped). */
static int subscribe(struct au_store *s, const char *key)
{
	struct redis_store *rs = s->ctx;
	const char *argv[] = { "SUBSCRIBE", key };

	redisReply *r = NULL;
	int attempt, rc;

	for (attempt = 0; attempt < 2 && !r; attempt++) {
		if (!rs->sub && !(rs->sub = connect_to(s, 0)))
			return -1;
		r = redisCommandArgv(rs->sub, 2, argv, NULL);
		if (!r) {
			conn_fail(s, "lost connection to", rs->sub);
			drop(&rs->sub);
		}
	}
	if (!r)
		return -1;
	rc = is_pubsub(r, "subscribe") ? 0 : reply_fail(s, r, "SUBSCRIBE");
	freeReplyObject(r);
	if (rc < 0)
		drop(&rs->sub);
	return rc;
}

/* Leaves the wait connection unsubscribed, or drops it. */
static void unsubscribe(struct au_store *s, const char *key)
{
	struct redis_store *rs = s->ctx;
	const char *argv[] = { "UNSUBSCRIBE", key };
	redisReply *r;
	int done = 0;

	if (!rs->sub)
		return;
	if (redisAppendCommandArgv(rs->sub, 2, argv, NULL) != REDIS_OK) {
		drop(&rs->sub);
		return;
	}
	/* Messages published meanwhile come first and are dropped. */
	while (!done) {
		if (redisGetReply(rs->sub, (void **)&r) != REDIS_OK) {
			drop(&rs->sub);
			return;
		}
		done = is_pubsub(r, "unsubscribe");
		freeReplyObject(r);
	}
}

/* Milliseconds left until deadline (monotonic us); -1 = no deadline. */
static int left_ms(uint64_t deadline)
{
	uint64_t now;

	if (!deadline)
		return -1;
	now = au_mono_us();
	return now >= deadline ? 0 : (int)((deadline - now + 999) / 1000);
}

/* Waits for a message on the wait connection: 1 got one, 0 deadline
 * passed, -1 connection lost. */
static int next_message(redisContext *c, uint64_t deadline)
{
	for (;;) {
		struct pollfd pfd = { .fd = c->fd, .events = POLLIN };
		redisReply *r;
		int left, n;

		if (redisGetReplyFromReader(c, (void **)&r) != REDIS_OK)
			return -1;
		if (r) {
			n = is_pubsub(r, "message");
			freeReplyObject(r);
			if (n)
				return 1;
			continue;
		}
		if ((left = left_ms(deadline)) == 0)
			return 0;
		n = poll(&pfd, 1, left);
		if (n < 0 && errno != EINTR)
			return -1;
		if (n > 0 && redisBufferRead(c) != REDIS_OK)
			return -1;
	}
}

static int redis_wait(struct au_store *s, const char *id, int timeout_ms, struct au_record *out)
{
	struct redis_store *rs = s->ctx;
	uint64_t deadline = timeout_ms < 0 ? 0 : au_mono_us() + (uint64_t)timeout_ms * 1000;
	char key[KEY_SIZE];
	int rc, got, resubscribed = 0;

	make_key(key, id);
	/* Subscribe before the first GET, so a write in between is seen. */
	if (subscribe(s, key) < 0)
		return -1;
	for (;;) {
		rc = redis_get(s, id, out);
		if (rc == 0 || s->err.code != AU_ENOTFOUND)
			break;
		got = next_message(rs->sub, deadline);
		if (got == 0) {
			rc = au_seterr(&s->err, AU_ETIMEDOUT,
				       "timed out after %d ms waiting for computation '%s'",
				       timeout_ms, id);
			break;
		}
		if (got < 0) {
			rc = conn_fail(s, "lost connection to", rs->sub);
			drop(&rs->sub);
			if (resubscribed++ || subscribe(s, key) < 0)
				break;
		}
	}
	unsubscribe(s, key);
	return rc;
}

const struct au_store_ops au_redis_store_ops = {
	.scheme = "redis",
	.alias = "rediss",        /* refused by au_redis_connect: no TLS in hiredis 0.14 */
	.features = AU_STORE_NATIVE_EXPIRY | AU_STORE_SHARED,
	.open = redis_open,
	.close = redis_close,
	.put = redis_put,
	.get = redis_get,
	.del = redis_del,
	.sweep = redis_sweep,
	.wait = redis_wait,
};
