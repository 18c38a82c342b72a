/* test_clickhouse.c - the ClickHouse HTTP client and the ch.* tasks against
 * a real server (AU_TEST_CH, from tests/servers.sh). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <msgpack.h>

#include "clickhouse.h"
#include "harness.h"
#include "tasks.h"

static const char *url;          /* AU_TEST_CH */
static struct au_clickhouse *ch;

/* The answer of a one-value query, trailing newline removed (static). */
static const char *scalar(struct au_clickhouse *c, const char *sql)
{
	static char out[512];
	struct au_ch_query q = { .sql = sql };
	struct au_ch_response r;

	if (au_ch_query_sync(c, &q, &r) < 0)
		snprintf(out, sizeof(out), "error: %s", r.err.str);
	else
		snprintf(out, sizeof(out), "%.*s", (int)(r.body.len && r.body.data[r.body.len - 1] == '\n'
						 ? r.body.len - 1 : r.body.len), (char *)r.body.data);
	au_ch_response_release(&r);
	return out;
}

/* url with "user:password@" put after the scheme. */
static char *with_auth(const char *auth)
{
	const char *rest = strstr(url, "://") + 3;

	return au_asprintf("%.*s%s@%s", (int)(rest - url), url, auth, rest);
}

static void test_urls(void)
{
	static const struct {
		const char *url, *msg;
	} bad[] = {
		{ "ftp://h/x", "invalid clickhouse url 'ftp://h/x': scheme must be http or https" },
		{ "http://h/no-such", "invalid clickhouse url 'http://h/no-such': bad database name" },
		{ "http://h/a.b", "invalid clickhouse url 'http://h/a.b': bad database name" },
		{ "http://u:pw@h/?x=1",
		  "invalid clickhouse url 'http://u:***@h/?x=1': query parameters are not supported" },
		{ "http://h:70000/", "invalid url 'http://h:70000/': bad port" },
		{ "nonsense", "invalid url 'nonsense': missing scheme" },
	};
	struct au_err err;

	for (size_t i = 0; i < AU_ARRAY_SIZE(bad); i++) {
		struct au_clickhouse *c = au_ch_new(bad[i].url, &err);

		T_OK(c == NULL, "au_ch_new refuses %s", bad[i].url);
		T_EQ_INT(err.code, AU_EINVAL, "bad url code");
		T_EQ_STR(err.str, bad[i].msg, "bad url message");
		au_ch_free(c);
	}
	au_ch_free(au_ch_new("https://[::1]", &err));   /* no request: just parses and frees */
	T_OK(1, "ipv6 https url accepted");
}

static void test_sync(void)
{
	struct au_ch_query q = { .sql = "SELECT 1+1" };
	struct au_ch_response r;
	struct au_buf sql = AU_BUF_INIT, want = AU_BUF_INIT;
	char bytes[255], *msg;
	uint64_t t0;

	T_OK(au_ch_query_sync(ch, &q, &r) == 0, "SELECT 1+1");
	T_EQ_INT(r.http_status, 200, "status 200");
	T_EQ_STR((char *)r.body.data, "2\n", "body");
	T_EQ_INT(r.ch_code, 0, "no code");
	au_ch_response_release(&r);

	q.sql = "SELEC 1";
	T_OK(au_ch_query_sync(ch, &q, &r) < 0, "syntax error fails");
	T_EQ_INT(r.http_status, 400, "syntax: 400");
	T_EQ_INT(r.ch_code, 62, "syntax: code 62");
	T_EQ_INT(r.err.code, AU_ECLICKHOUSE, "syntax: AU_ECLICKHOUSE");
	msg = au_asprintf("clickhouse error 62 at '%s': Syntax error: failed at position 1", url);
	T_OK(!strncmp(r.err.str, msg, strlen(msg)), "syntax message: %s", r.err.str);
	T_OK(!strchr(r.err.str, '\n'), "message on one line");
	T_EQ_INT(au_ch_retryable(&r), 0, "syntax error not retryable");
	free(msg);
	au_ch_response_release(&r);

	q.sql = "SELECT * FROM nope";
	T_OK(au_ch_query_sync(ch, &q, &r) < 0, "unknown table fails");
	T_EQ_INT(r.http_status, 404, "unknown table: 404");
	T_EQ_INT(r.ch_code, 60, "unknown table: code 60");
	msg = au_asprintf("clickhouse error 60 at '%s': Table default.nope doesn't exist", url);
	T_EQ_STR(r.err.str, msg, "unknown table message");
	T_EQ_INT(au_ch_retryable(&r), 0, "unknown table not retryable");
	free(msg);
	au_ch_response_release(&r);

	/* max_execution_time from timeout_ms: the server stops the query */
	q.sql = "SELECT count() FROM numbers(100000000000)";
	q.timeout_ms = 1000;
	t0 = au_mono_us();
	T_OK(au_ch_query_sync(ch, &q, &r) < 0, "long query stopped");
	T_EQ_INT(r.http_status, 500, "timeout: 500");
	T_EQ_INT(r.ch_code, 159, "timeout: code 159");
	T_EQ_INT(au_ch_retryable(&r), 1, "server timeout retryable");
	T_OK(au_mono_us() - t0 < 2500000, "stopped after about 1 s");
	au_ch_response_release(&r);

	/* sleep() ignores max_execution_time: curl gives up 2 s later */
	q.sql = "SELECT sleep(3)";
	q.timeout_ms = 1;
	t0 = au_mono_us();
	T_OK(au_ch_query_sync(ch, &q, &r) < 0, "curl timeout");
	T_EQ_INT(r.err.code, AU_ETIMEDOUT, "curl timeout: AU_ETIMEDOUT");
	msg = au_asprintf("clickhouse request to '%s' timed out after 2001 ms", url);
	T_EQ_STR(r.err.str, msg, "curl timeout message");
	T_EQ_INT(au_ch_retryable(&r), 1, "curl timeout retryable");
	T_OK(au_mono_us() - t0 < 2900000, "gave up before the query ended");
	free(msg);
	au_ch_response_release(&r);

	/* an answer over AU_CH_MAX_BODY is cut off */
	q.sql = "SELECT toString(number) FROM numbers(10000000)";   /* 79 MB */
	q.timeout_ms = 0;
	T_OK(au_ch_query_sync(ch, &q, &r) < 0, "huge answer refused");
	T_EQ_INT(r.err.code, AU_ETOOBIG, "huge answer: AU_ETOOBIG");
	msg = au_asprintf("clickhouse answer from '%s' is over 67108864 bytes", url);
	T_EQ_STR(r.err.str, msg, "huge answer message");
	T_EQ_INT(au_ch_retryable(&r), 0, "huge answer not retryable");
	free(msg);
	au_ch_response_release(&r);

	/* every byte survives au_sql_quote */
	for (int i = 0; i < 255; i++) {
		bytes[i] = (char)(i + 1 == 255 ? 0 : i + 1);
		au_buf_printf(&want, "%02X", (unsigned char)bytes[i]);
	}
	au_buf_puts(&sql, "SELECT hex(");
	au_sql_quote(&sql, bytes, sizeof(bytes));
	au_buf_puts(&sql, ")");
	T_EQ_STR(scalar(ch, (char *)sql.data), (char *)want.data, "all bytes round-trip");
	au_buf_release(&sql);
	au_buf_release(&want);
}

static void test_auth(void)
{
	char *u = with_auth("au:au-secret"), *bad = with_auth("au:wrong-pw");
	struct au_clickhouse *c = au_ch_new(u, NULL);
	struct au_ch_query q = {
		.sql = "SELECT user FROM system.processes WHERE query_id = 'au-auth-1'",
		.query_id = "au-auth-1",
	};
	struct au_ch_response r;

	T_OK(au_ch_query_sync(c, &q, &r) == 0, "query as au");
	T_EQ_STR((char *)r.body.data, "au\n", "ran as user au (and query_id passed)");
	au_ch_response_release(&r);
	au_ch_free(c);

	c = au_ch_new(bad, NULL);
	q.sql = "SELECT 1";
	T_OK(au_ch_query_sync(c, &q, &r) < 0, "wrong password fails");
	T_EQ_INT(r.http_status, 401, "wrong password: 401");
	T_EQ_INT(r.ch_code, 193, "wrong password: code 193");
	T_EQ_INT(au_ch_retryable(&r), 0, "auth error not retryable");
	T_OK(strstr(r.err.str, "au:***@") && !strstr(r.err.str, "wrong-pw"),
	     "password masked: %s", r.err.str);
	au_ch_response_release(&r);
	au_ch_free(c);
	free(u);
	free(bad);
}

static void test_unreachable(void)
{
	struct au_clickhouse *c = au_ch_new("http://127.0.0.1:1/default", NULL);
	struct au_ch_query q = { .sql = "SELECT 1" };
	struct au_ch_response r;

	T_OK(au_ch_query_sync(c, &q, &r) < 0, "port 1 fails");
	T_EQ_INT(r.err.code, AU_ECONN, "AU_ECONN");
	T_EQ_STR(r.err.str, "unable to connect to 'http://127.0.0.1:1/default': connection refused",
		 "connection refused message");
	T_EQ_INT(r.http_status, 0, "no http status");
	T_EQ_INT(au_ch_retryable(&r), 1, "connection error retryable");
	au_ch_response_release(&r);
	au_ch_free(c);

	c = au_ch_new("http://au:pw@127.0.0.1:1/default", NULL);
	T_OK(au_ch_query_sync(c, &q, &r) < 0, "port 1 with credentials fails");
	T_EQ_STR(r.err.str, "unable to connect to 'http://au:***@127.0.0.1:1/default': connection refused",
		 "password masked");
	au_ch_response_release(&r);
	au_ch_free(c);
}

/* ---- on the loop ---- */

static struct event_base *base;

/* Runs the loop until nothing is in flight (or 20 s pass). */
static void drain(void)
{
	uint64_t deadline = au_mono_us() + 20000000;

	while (au_ch_inflight(ch) && au_mono_us() < deadline)
		event_base_loop(base, EVLOOP_ONCE);
	T_EQ_INT(au_ch_inflight(ch), 0, "all requests finished");
}

struct slot {
	int calls;
	long value;
	int err;
};

static void on_slot(struct au_ch_response *r, void *arg)
{
	struct slot *s = arg;

	s->calls++;
	s->err = r->err.code;
	s->value = strtol((char *)r->body.data, NULL, 10);
}

static int run_wave(struct slot *slots, size_t n)
{
	char sql[64];
	int bad = 0;

	for (size_t i = 0; i < n; i++) {
		struct au_ch_query q = { .sql = sql, .timeout_ms = 10000 };

		snprintf(sql, sizeof(sql), "SELECT %zu * 3", i);
		slots[i] = (struct slot){ 0, -1, -1 };
		if (au_ch_send(ch, &q, on_slot, &slots[i]) < 0)
			bad++;
	}
	T_EQ_INT(au_ch_inflight(ch), n, "all in flight at once");
	drain();
	for (size_t i = 0; i < n; i++)
		if (slots[i].calls != 1 || slots[i].err || slots[i].value != (long)i * 3)
			bad++;
	return bad;
}

static void test_async(void)
{
	struct slot slots[200];
	size_t before = au_ch_connects(ch), first, second;
	int bad;

	/* T_EQ_INT evaluates its arguments twice: call first */
	bad = run_wave(slots, 200);
	T_EQ_INT(bad, 0, "200 requests: one callback each, right values");
	first = au_ch_connects(ch) - before;
	T_OK(first >= 1 && first <= AU_CH_MAX_CONNECTIONS, "first wave opened %zu connections", first);
	bad = run_wave(slots, 200);
	T_EQ_INT(bad, 0, "200 more on reused handles");
	second = au_ch_connects(ch) - before - first;
	T_OK(second <= 4, "second wave reused connections (%zu new)", second);
}

struct probe {
	const char *qid;
	char seen[64];
	char other[64];
	int killed;
};

static void probe_processes(evutil_socket_t fd, short what, void *arg)
{
	struct probe *p = arg;
	char sql[160];

	(void)fd, (void)what;
	snprintf(sql, sizeof(sql), "SELECT count() FROM system.processes WHERE query_id = '%s'",
		 p->qid);
	snprintf(p->seen, sizeof(p->seen), "%s", scalar(ch, sql));
	snprintf(p->other, sizeof(p->other), "%s",
		 scalar(ch, "SELECT count() FROM system.processes WHERE query_id = 'au-none'"));
}

static void kill_it(evutil_socket_t fd, short what, void *arg)
{
	struct probe *p = arg;
	struct au_err err = { 0, "" };

	(void)fd, (void)what;
	p->killed = au_ch_kill_query(ch, p->qid, &err) == 0;
}

static void on_answer(struct au_ch_response *r, void *arg)
{
	*(struct au_ch_response *)arg = *r;
	memset(&r->body, 0, sizeof(r->body));   /* keep the body */
}

static void not_called(struct au_ch_response *r, void *arg)
{
	(void)r;
	*(int *)arg = 1;
}

static void test_query_id_and_kill(void)
{
	struct timeval later = { 0, 300000 };
	struct probe p = { .qid = "au-test-sleep" };
	struct au_ch_query q = { .sql = "SELECT sleep(2)", .query_id = p.qid };
	struct au_ch_response r = { 0, 0, AU_BUF_INIT, { 0, "" } };
	int called = 0, rc;
	uint64_t t0;

	/* the query_id reaches the server: visible in system.processes */
	T_OK(au_ch_send(ch, &q, on_answer, &r) == 0, "sleep sent");
	event_base_once(base, -1, EV_TIMEOUT, probe_processes, &p, &later);
	drain();
	T_EQ_STR(p.seen, "1", "query_id seen in system.processes");
	T_EQ_STR(p.other, "0", "another query_id not seen");
	T_OK(r.http_status == 200 && !strcmp((char *)r.body.data, "0\n"), "sleep answered");
	au_ch_response_release(&r);

	/* au_ch_kill_query stops a running query: it fails with 394 */
	p.qid = q.query_id = "au-test-kill";
	q.sql = "SELECT count() FROM numbers(100000000000)";
	t0 = au_mono_us();
	T_OK(au_ch_send(ch, &q, on_answer, &r) == 0, "long query sent");
	event_base_once(base, -1, EV_TIMEOUT, kill_it, &p, &later);
	drain();
	T_OK(p.killed, "au_ch_kill_query succeeded");
	T_EQ_INT(r.ch_code, 394, "killed query: code 394");
	T_EQ_INT(au_ch_retryable(&r), 0, "cancelled query not retryable");
	T_OK(au_mono_us() - t0 < 3000000, "killed quickly");
	au_ch_response_release(&r);

	/* au_ch_cancel drops a request; the async kill stops the query */
	q.query_id = "au-test-cancel";
	T_OK(au_ch_send(ch, &q, not_called, &called) == 0, "long query sent");
	/* a KILL that reaches the server before the query does finds nothing */
	t0 = au_mono_us();
	do {
		event_base_loop(base, EVLOOP_NONBLOCK);
		usleep(10000);
	} while (strcmp(scalar(ch, "SELECT count() FROM system.processes "
			       "WHERE query_id = 'au-test-cancel'"), "1") != 0 &&
		 au_mono_us() - t0 < 5000000);
	rc = au_ch_cancel(ch, not_called, &called);
	T_EQ_INT(rc, 0, "au_ch_cancel");
	rc = au_ch_cancel(ch, not_called, &called);
	T_EQ_INT(rc, -1, "au_ch_cancel twice");
	rc = au_ch_kill_query_async(ch, q.query_id);
	T_EQ_INT(rc, 0, "au_ch_kill_query_async");
	drain();
	T_EQ_INT(called, 0, "cancelled request's callback not called");
	/* KILL without SYNC returns before the query has stopped */
	t0 = au_mono_us();
	while (strcmp(scalar(ch, "SELECT count() FROM system.processes "
			     "WHERE query_id = 'au-test-cancel'"), "0") != 0 &&
	       au_mono_us() - t0 < 2000000)
		usleep(20000);
	T_OK(au_mono_us() - t0 < 2000000, "cancelled query stopped within 2 s");
}

/* ---- tasks ---- */

/* Runs a ch.* task's request and result conversion against the server. */
static int run_task(const char *task, const char *args_json, struct au_buf *out,
		    struct au_ch_response *r)
{
	struct au_buf sql = AU_BUF_INIT, data = AU_BUF_INIT;
	struct au_err err = { 0, "" };
	struct au_ch_query q = { 0 };
	unsigned char *args = NULL;
	size_t len, rows;
	int rc = -1;

	au_buf_reset(out);
	memset(r, 0, sizeof(*r));
	if (au_json_to_msgpack(args_json, &args, &len, &err) < 0 ||
	    au_ch_task_request(task, args, len, &sql, &data, &rows, &err) < 0) {
		r->err = err;
		goto out;
	}
	q.sql = (char *)sql.data;
	if (!strcmp(task, "ch.insert")) {
		q.data = (char *)data.data;
		q.data_len = data.len;
	}
	if (au_ch_query_sync(ch, &q, r) == 0)
		rc = au_ch_task_result(task, (char *)r->body.data, r->body.len, rows, out, &r->err);
out:
	free(args);
	au_buf_release(&sql);
	au_buf_release(&data);
	return rc;
}

static char *result_json(const struct au_buf *out)
{
	struct au_err err;
	char *s = au_msgpack_to_json(out->data, out->len, &err);

	return s ? s : au_strdup(err.str);
}

static void test_tasks(void)
{
	struct au_buf out = AU_BUF_INIT;
	struct au_ch_response r;
	msgpack_unpacked mp;
	const msgpack_object *row;
	char *json;

	T_OK(run_task("ch.exec", "{\"sql\": \"DROP TABLE IF EXISTS {t:Identifier}\", "
		      "\"params\": {\"t\": \"au_tasks\"}}", &out, &r) == 0, "ch.exec drop");
	au_ch_response_release(&r);
	T_OK(run_task("ch.exec", "{\"sql\": \"CREATE TABLE au_tasks (id UInt64, i Int64, s String, "
		      "f Nullable(Float64), a Array(UInt64), d Date) ENGINE = Memory\"}", &out, &r) == 0,
	     "ch.exec create: %s", r.err.str);
	json = result_json(&out);
	T_EQ_STR(json, "{\"ok\":true}", "ch.exec result");
	free(json);
	au_ch_response_release(&r);

	T_OK(run_task("ch.insert", "{\"table\": \"default.au_tasks\", \"rows\": ["
		      "{\"id\": \"18446744073709551615\", \"i\": -9223372036854775808, "
		      "\"s\": \"it's \\\"q\\\" \\\\ \\u00e9\", \"f\": null, "
		      "\"a\": [\"18446744073709551615\", 2], \"d\": \"2024-02-29\"}, "
		      "{\"id\": 1, \"i\": -1, \"s\": \"\", \"f\": 1.5, \"a\": [], \"d\": \"1970-01-02\"}]}",
		      &out, &r) == 0, "ch.insert: %s", r.err.str);
	json = result_json(&out);
	T_EQ_STR(json, "{\"inserted\":2}", "ch.insert result");
	free(json);
	au_ch_response_release(&r);

	T_OK(run_task("ch.query", "{\"sql\": \"SELECT id, i, s, f, a, d FROM {t:Identifier} "
		      "WHERE id < {max:UInt64} ORDER BY id -- small ones\", \"params\": "
		      "{\"t\": \"au_tasks\", \"max\": \"18446744073709551615\"}}", &out, &r) == 0,
	     "ch.query: %s", r.err.str);
	json = result_json(&out);
	T_EQ_STR(json, "{\"columns\":[\"id\",\"i\",\"s\",\"f\",\"a\",\"d\"],\"types\":[\"UInt64\","
		 "\"Int64\",\"String\",\"Nullable(Float64)\",\"Array(UInt64)\",\"Date\"],"
		 "\"rows\":[[1,-1,\"\",1.5,[],\"1970-01-02\"]]}", "ch.query result");
	free(json);
	au_ch_response_release(&r);

	/* the 64-bit extremes come back as msgpack integers (JSON cannot hold
	 * UInt64 max, so this one is read with msgpack-c) */
	T_OK(run_task("ch.query", "{\"sql\": \"SELECT id, i, s, f, a FROM au_tasks WHERE i < 0 "
		      "AND id = {max:UInt64}\", \"params\": {\"max\": \"18446744073709551615\"}}",
		      &out, &r) == 0, "ch.query extremes: %s", r.err.str);
	msgpack_unpacked_init(&mp);
	T_OK(msgpack_unpack_next(&mp, (char *)out.data, out.len, NULL) == MSGPACK_UNPACK_SUCCESS &&
	     mp.data.type == MSGPACK_OBJECT_MAP && mp.data.via.map.size == 3 &&
	     mp.data.via.map.ptr[2].val.type == MSGPACK_OBJECT_ARRAY &&
	     mp.data.via.map.ptr[2].val.via.array.size == 1, "one row");
	row = &mp.data.via.map.ptr[2].val.via.array.ptr[0];
	T_OK(row->type == MSGPACK_OBJECT_ARRAY && row->via.array.size == 5, "five columns");
	T_OK(row->via.array.ptr[0].type == MSGPACK_OBJECT_POSITIVE_INTEGER &&
	     row->via.array.ptr[0].via.u64 == UINT64_MAX, "UInt64 max is an integer");
	T_OK(row->via.array.ptr[1].type == MSGPACK_OBJECT_NEGATIVE_INTEGER &&
	     row->via.array.ptr[1].via.i64 == INT64_MIN, "Int64 min is an integer");
	T_OK(row->via.array.ptr[2].type == MSGPACK_OBJECT_STR &&
	     row->via.array.ptr[2].via.str.size == 13 &&
	     !memcmp(row->via.array.ptr[2].via.str.ptr, "it's \"q\" \\ \xc3\xa9", 13),
	     "string intact");
	T_OK(row->via.array.ptr[3].type == MSGPACK_OBJECT_NIL, "NULL is nil");
	T_OK(row->via.array.ptr[4].type == MSGPACK_OBJECT_ARRAY &&
	     row->via.array.ptr[4].via.array.size == 2 &&
	     row->via.array.ptr[4].via.array.ptr[0].via.u64 == UINT64_MAX &&
	     row->via.array.ptr[4].via.array.ptr[1].via.u64 == 2, "Array(UInt64) of integers");
	msgpack_unpacked_destroy(&mp);
	au_ch_response_release(&r);

	T_OK(run_task("ch.query", "{\"sql\": \"SELECT nan AS n, -inf AS m, 0.5 AS h, "
		      "toNullable(toInt64(-3)) AS x, [toInt64(-1)] AS y;\"}", &out, &r) == 0,
	     "ch.query floats: %s", r.err.str);
	json = result_json(&out);
	T_EQ_STR(json, "{\"columns\":[\"n\",\"m\",\"h\",\"x\",\"y\"],\"types\":[\"Float64\","
		 "\"Float64\",\"Float64\",\"Nullable(Int64)\",\"Array(Int64)\"],"
		 "\"rows\":[[null,null,0.5,-3,[-1]]]}", "nan and inf as null, Int64 as integers");
	free(json);
	au_ch_response_release(&r);

	T_OK(run_task("ch.query", "{\"sql\": \"DESCRIBE TABLE au_tasks\"}", &out, &r) == 0,
	     "ch.query DESCRIBE: %s", r.err.str);
	json = result_json(&out);
	T_OK(strstr(json, "[\"id\",\"UInt64\"") != NULL, "DESCRIBE lists id: %s", json);
	free(json);
	au_ch_response_release(&r);

	/* the rows of an insert sent on the loop */
	{
		struct au_ch_query q = { .sql = "INSERT INTO au_tasks FORMAT JSONEachRow",
					 .data = "{\"id\":7}\n{\"id\":8}\n", .data_len = 18 };
		struct au_ch_response ar = { 0, 0, AU_BUF_INIT, { -1, "" } };

		T_OK(au_ch_send(ch, &q, on_answer, &ar) == 0, "async insert sent");
		drain();
		T_EQ_INT(ar.err.code, AU_OK, "async insert done");
		au_ch_response_release(&ar);
		T_EQ_STR(scalar(ch, "SELECT groupArray(id) FROM au_tasks WHERE id IN (7, 8)"), "[7,8]",
			 "async insert rows arrived");
	}

	T_OK(run_task("ch.query", "{\"sql\": \"SELECT * FROM au_nope\"}", &out, &r) < 0,
	     "ch.query on a missing table fails");
	T_EQ_INT(r.ch_code, 60, "code 60");
	T_EQ_INT(au_ch_retryable(&r), 0, "not retryable");
	au_ch_response_release(&r);
	au_buf_release(&out);
}

static void test_version(void)
{
	struct au_err err = { 0, "" };
	const char *v = au_ch_server_version(ch, &err);

	T_OK(v && !strncmp(v, "18.", 3) && strchr(v + 3, '.'), "server version '%s'", v ? v : err.str);
	T_OK(au_ch_server_version(ch, &err) == v, "version cached");
}

int main(void)
{
	struct au_err err = { 0, "" };

	url = t_env("AU_TEST_CH");
	ch = au_ch_new(url, &err);
	if (!T_OK(ch != NULL, "au_ch_new(%s): %s", url, err.str))
		return t_done();
	base = event_base_new();
	T_OK(au_ch_attach(ch, base) == 0, "au_ch_attach");

	test_urls();
	test_sync();
	test_auth();
	test_unreachable();
	test_async();
	test_query_id_and_kill();
	test_tasks();
	test_version();

	au_ch_free(ch);
	event_base_free(base);
	return t_done();
}
