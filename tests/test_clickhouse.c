/* test_clickhouse.c - the ClickHouse HTTP client and the ch.* tasks against
 * a real server (AU_TEST_CH, from tests/servers.sh). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>
#include <jansson.h>
#include <msgpack.h>

#include "clickhouse.h"
#include "harness.h"
#include "task.h"
#include "tasks.h"

static const char *url;          /* AU_TEST_CH */
static struct au_clickhouse *ch;

/* The answer of a one-value query, trailing newline removed (static). */
static const char *scalar(struct au_clickhouse *c, const char *sql)
{
	static char out[AU_ERRSTR_SIZE + 16];
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
		  "invalid clickhouse url 'http://u:***@h/?x=1': unknown parameter 'x' (the only one is cafile=)" },
		{ "https://h/?cafile=/dev/null&max_threads=1",
		  "invalid clickhouse url 'https://h/?cafile=/dev/null&max_threads=1': unknown parameter "
		  "'max_threads' (the only one is cafile=)" },
		{ "http://h/?cafile=/dev/null",
		  "invalid clickhouse url 'http://h/?cafile=/dev/null': cafile= is for https://" },
		{ "https://h/?cafile=", "invalid clickhouse url 'https://h/?cafile=': empty cafile" },
		{ "https://h/?cafile=/no/such/ca.pem",
		  "invalid clickhouse url 'https://h/?cafile=/no/such/ca.pem': cannot read cafile "
		  "'/no/such/ca.pem': no such file or directory" },
		{ "http://h:70000/", "invalid url 'http://h:70000/': bad port" },
		{ "nonsense", "invalid url 'nonsense': missing scheme" },
	};
	struct au_clickhouse *c;
	struct au_err err;

	for (size_t i = 0; i < AU_ARRAY_SIZE(bad); i++) {
		c = au_ch_new(bad[i].url, &err);

		T_OK(c == NULL, "au_ch_new refuses %s", bad[i].url);
		T_EQ_INT(err.code, AU_EINVAL, "bad url code");
		T_EQ_STR(err.str, bad[i].msg, "bad url message");
		au_ch_free(c);
	}
	au_ch_free(au_ch_new("https://[::1]", &err));   /* no request: just parses and frees */
	T_OK(1, "ipv6 https url accepted");
	c = au_ch_new("https://u:pw@h:9443/db?cafile=%2Fdev%2Fnull", &err);
	T_OK(c != NULL, "https url with a cafile accepted (percent-escapes decoded)");
	au_ch_free(c);
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
	T_EQ_INT(au_ch_fault(NULL, &r), AU_CH_FOR_GOOD, "syntax error: the statement's, for good");
	free(msg);
	au_ch_response_release(&r);

	q.sql = "SELECT * FROM nope";
	T_OK(au_ch_query_sync(ch, &q, &r) < 0, "unknown table fails");
	T_EQ_INT(r.http_status, 404, "unknown table: 404");
	T_EQ_INT(r.ch_code, 60, "unknown table: code 60");
	msg = au_asprintf("clickhouse error 60 at '%s': Table default.nope doesn't exist", url);
	T_EQ_STR(r.err.str, msg, "unknown table message");
	T_EQ_INT(au_ch_fault(NULL, &r), AU_CH_FOR_GOOD, "unknown table: for good");
	free(msg);
	au_ch_response_release(&r);

	/* max_execution_time from timeout_ms: the server stops the query */
	q.sql = "SELECT count() FROM numbers(100000000000)";
	q.timeout_ms = 1000;
	t0 = au_mono_us();
	T_OK(au_ch_query_sync(ch, &q, &r) < 0, "long query stopped");
	T_EQ_INT(r.http_status, 500, "timeout: 500");
	T_EQ_INT(r.ch_code, 159, "timeout: code 159");
	T_EQ_INT(au_ch_fault(NULL, &r), AU_CH_RETRY, "server timeout: retried, the attempt counts");
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
	T_EQ_INT(au_ch_fault(NULL, &r), AU_CH_RETRY, "curl timeout: retried");
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
	T_EQ_INT(au_ch_fault(NULL, &r), AU_CH_FOR_GOOD, "huge answer: for good");
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
	T_EQ_INT(au_ch_fault(NULL, &r), AU_CH_OUTAGE, "wrong password: an outage, not the computation's fault");
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
	T_EQ_INT(au_ch_fault(NULL, &r), AU_CH_OUTAGE, "connection refused: an outage");
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
	T_EQ_INT(au_ch_fault(NULL, &r), AU_CH_FOR_GOOD, "cancelled query: for good");
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

/* buffer_size of run_task's requests (0: the client's own) */
static uint32_t task_buffer;

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
	q.buffer_size = task_buffer;
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
	T_EQ_INT(au_ch_fault(NULL, &r), AU_CH_FOR_GOOD, "missing table: for good");
	au_ch_response_release(&r);
	au_buf_release(&out);
}

/* ---- errors after the first rows ---- */

/* One task run as the worker runs it: on the loop, through au_task_*. */
struct task_run {
	struct au_task_ctx ctx;   /* first: the callbacks get it back */
	int done, failed, retryable;
	char msg[AU_ERRSTR_SIZE];
	char *json;               /* the result */
};

static void run_complete(struct au_task_ctx *ctx, const unsigned char *result, size_t len)
{
	struct task_run *t = (struct task_run *)ctx;
	struct au_err err;

	t->done++;
	t->json = au_msgpack_to_json(result, len, &err);
}

static void run_fail(struct au_task_ctx *ctx, int retryable, const char *msg)
{
	struct task_run *t = (struct task_run *)ctx;

	t->done++;
	t->failed = 1;
	t->retryable = retryable;
	snprintf(t->msg, sizeof(t->msg), "%s", msg);
}

static const struct au_task_ops run_ops = { run_complete, run_fail, NULL };

/* Runs ch.query with sql on the loop; t is released by the caller (json). */
static void run_query_task(struct au_registry *reg, const char *sql, struct task_run *t)
{
	struct au_computation c;
	struct au_err err;
	json_t *args = json_pack("{ss}", "sql", sql);
	char *text = json_dumps(args, JSON_COMPACT);
	uint64_t deadline = au_mono_us() + 20000000;
	au_task_fn fn;
	void *arg;

	memset(t, 0, sizeof(*t));
	t->ctx.ops = &run_ops;
	t->ctx.base = base;
	t->ctx.ch = ch;
	snprintf(t->ctx.query_id, sizeof(t->ctx.query_id), "au-test-task-%llx",
		 (unsigned long long)au_mono_us());
	au_computation_init(&c);
	if (au_json_to_msgpack(text, &c.args, &c.args_len, &err) == 0 &&
	    au_registry_find(reg, "ch.query", &fn, &arg) == 0)
		fn(&t->ctx, &c, arg);
	while (!t->done && au_mono_us() < deadline)
		event_base_loop(base, EVLOOP_ONCE);
	T_EQ_INT(t->done, 1, "task finished once");
	au_computation_release(&c);
	free(text);
	json_decref(args);
}

/* 2 million UInt8 rows (6.9 MB of JSONCompact) that fail at the millionth */
#define FAILS_LATE "SELECT throwIf(number = 1000000) AS x FROM system.numbers LIMIT 2000000"
#define THROWIF_MSG "Value passed to 'throwIf' function is non zero"

static void test_errors_after_rows(void)
{
	struct au_registry *reg = au_registry_new();
	struct au_buf out = AU_BUF_INIT;
	struct au_ch_response r;
	struct au_ch_query q = { .buffer_size = 1u << 20 };
	struct task_run t;
	char *msg;

	T_OK(reg && au_ch_tasks_add(reg) == 0, "registry with the ch tasks");

	/* with the buffer of the default request the server has not begun
	 * when the failure comes: an error status, as before the first row */
	run_query_task(reg, FAILS_LATE, &t);
	msg = au_asprintf("ch.query: clickhouse error 395 at '%s': " THROWIF_MSG, url);
	T_OK(t.failed && t.retryable, "late failure fails the task, retryable");
	T_EQ_STR(t.msg, msg, "late failure: the server's message");
	free(msg);
	q.sql = FAILS_LATE " FORMAT JSONCompact";
	q.buffer_size = 0;
	T_OK(au_ch_query_sync(ch, &q, &r) < 0, "late failure, sync");
	T_EQ_INT(r.http_status, 500, "late failure: status 500, not 200");
	T_EQ_INT(r.ch_code, 395, "late failure: code 395");
	au_ch_response_release(&r);

	/* before the first row: unchanged */
	run_query_task(reg, "SELECT throwIf(number = 0) FROM numbers(3)", &t);
	msg = au_asprintf("ch.query: clickhouse error 395 at '%s': " THROWIF_MSG, url);
	T_OK(t.failed && t.retryable, "first-row failure fails the task, retryable");
	T_EQ_STR(t.msg, msg, "first-row failure message");
	free(msg);
	run_query_task(reg, "SELECT toUInt32('x')", &t);
	T_OK(t.failed && !t.retryable, "parse error not retryable: %s", t.msg);

	/* ordinary results, and rows that look like an exception, unchanged */
	run_query_task(reg, "SELECT 1", &t);
	T_OK(!t.failed && t.json, "SELECT 1: %s", t.msg);
	T_EQ_STR(t.json, "{\"columns\":[\"1\"],\"types\":[\"UInt8\"],\"rows\":[[1]]}", "SELECT 1 result");
	free(t.json);
	run_query_task(reg, "SELECT 'Code: 395, e.displayText() = DB::Exception: x, e.what() = "
		       "DB::Exception\\n' AS s, 'Code: 1. DB::Exception: y' AS z", &t);
	T_OK(!t.failed && t.json, "rows like exceptions: %s", t.msg);
	T_EQ_STR(t.json, "{\"columns\":[\"s\",\"z\"],\"types\":[\"String\",\"String\"],\"rows\":"
		 "[[\"Code: 395, e.displayText() = DB::Exception: x, e.what() = DB::Exception\\n\","
		 "\"Code: 1. DB::Exception: y\"]]}", "rows like exceptions are rows");
	free(t.json);

	/* a buffer smaller than the answer: the server sends 200 and rows,
	 * then the exception's text; the JSON does not parse and is no result */
	task_buffer = 1u << 20;
	T_OK(run_task("ch.query", "{\"sql\": \"" FAILS_LATE "\"}", &out, &r) < 0,
	     "failure after the first rows detected");
	T_EQ_INT(r.http_status, 200, "it came with status 200");
	T_OK(r.body.len > (1u << 20), "after %zu bytes of rows", r.body.len);
	T_EQ_INT(r.err.code, AU_ECLICKHOUSE, "AU_ECLICKHOUSE");
	T_EQ_STR(r.err.str, "ch.query: clickhouse error 395: " THROWIF_MSG, "message and code");
	T_EQ_INT(out.len, 0, "no result");
	/* au_ch_body_error on that body, as ch.query runs it on the loop */
	au_clearerr(&r.err);
	T_EQ_INT(au_ch_body_error(ch, &r, (char *)r.body.data, r.body.len), -1, "au_ch_body_error");
	T_EQ_INT(r.ch_code, 395, "au_ch_body_error: code");
	msg = au_asprintf("clickhouse error 395 at '%s': " THROWIF_MSG, url);
	T_EQ_STR(r.err.str, msg, "au_ch_body_error: the message of an error status");
	free(msg);
	T_EQ_INT(au_ch_fault(NULL, &r), AU_CH_RETRY, "unknown code with status 500: retried");
	au_ch_response_release(&r);

	/* a parse error after the rows: not retryable, as with status 400 */
	T_OK(run_task("ch.query", "{\"sql\": \"SELECT toUInt32(if(number = 1000000, 'x', '1')) "
		      "FROM system.numbers LIMIT 2000000\"}", &out, &r) < 0, "late parse error");
	T_OK(r.http_status == 200 && strstr(r.err.str, "clickhouse error 6: Cannot parse string 'x'"),
	     "late parse error: %s", r.err.str);
	au_clearerr(&r.err);
	T_EQ_INT(au_ch_body_error(ch, &r, (char *)r.body.data, r.body.len), -1, "late parse error found");
	T_EQ_INT(r.ch_code, 6, "code 6");
	T_EQ_INT(au_ch_fault(NULL, &r), AU_CH_FOR_GOOD, "late parse error: for good");
	au_ch_response_release(&r);

	/* an ordinary answer over the buffer is a result */
	T_OK(run_task("ch.query", "{\"sql\": \"SELECT number FROM numbers(300000)\"}", &out, &r) == 0,
	     "answer over the buffer: %s", r.err.str);
	T_OK(r.body.len > (1u << 20), "it was %zu bytes", r.body.len);
	au_ch_response_release(&r);
	task_buffer = 0;

	au_buf_release(&out);
	au_registry_free(reg);
}

/* The answers of later servers, and cut ones, read from text. */
static void test_exception_texts(void)
{
	static const struct {
		const char *body, *err;
	} cases[] = {
		/* 18.16: the text after the rows */
		{ "{\n\t\"meta\": [{\"name\": \"x\", \"type\": \"UInt8\"}],\n\t\"data\":\n\t[\n\t\t[0],\n"
		  "\t\t[0]Code: 395, e.displayText() = DB::Exception: Value passed to 'throwIf' function "
		  "is non zero, e.what() = DB::Exception\n",
		  "ch.query: clickhouse error 395: Value passed to 'throwIf' function is non zero" },
		/* the same inside a string that it cut */
		{ "{\"meta\": [{\"name\": \"s\", \"type\": \"String\"}], \"data\": [[\"ab\"], [\"cdCode: 241, "
		  "e.displayText() = DB::Exception: Memory limit (for query) exceeded, e.what() = "
		  "DB::Exception\n",
		  "ch.query: clickhouse error 241: Memory limit (for query) exceeded" },
		/* after a JSON answer that was complete */
		{ "{\"meta\": [], \"data\": []}\nstd::exception. Code: 1001, type: std::bad_alloc, "
		  "e.what() = std::bad_alloc\n",
		  "ch.query: clickhouse error 1001: std::exception. Code: 1001, type: std::bad_alloc" },
		/* 23.9 to 25.10: valid JSON that ends with "exception" */
		{ "{\"meta\": [{\"name\": \"x\", \"type\": \"UInt8\"}], \"data\": [[0]], \"rows\": 1, "
		  "\"exception\": \"Code: 395. DB::Exception: Value passed to 'throwIf' function is "
		  "non-zero: while executing 'FUNCTION throwIf(x)'. (FUNCTION_THROW_IF_VALUE_IS_NON_ZERO) "
		  "(version 24.3.1.2672 (official build))\"}",
		  "ch.query: clickhouse error 395: Value passed to 'throwIf' function is non-zero: while "
		  "executing 'FUNCTION throwIf(x)'. (FUNCTION_THROW_IF_VALUE_IS_NON_ZERO)" },
		/* cut short without a word: no result either */
		{ "{\"meta\": [{\"name\": \"x\", \"type\": \"UInt8\"}], \"data\": [[0], [0",
		  "ch.query: unreadable answer from clickhouse: " },
	};
	struct au_buf out = AU_BUF_INIT;
	struct au_err err;

	for (size_t i = 0; i < AU_ARRAY_SIZE(cases); i++) {
		au_buf_reset(&out);
		T_OK(au_ch_task_result("ch.query", cases[i].body, strlen(cases[i].body), 0, &out,
				       &err) < 0 && out.len == 0, "case %zu is no result", i);
		T_OK(!strncmp(err.str, cases[i].err, strlen(cases[i].err)), "case %zu: %s", i, err.str);
	}
	au_buf_release(&out);
}

/* A server that answers one request with answer and closes: what 25.11
 * sends when a query fails after its answer began. Returns its port. */
static int fake_server(const char *answer, pid_t *pid)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t alen = sizeof(a);
	int s = socket(AF_INET, SOCK_STREAM, 0);

	if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(s, 1) < 0 ||
	    getsockname(s, (struct sockaddr *)&a, &alen) < 0)
		return -1;
	*pid = fork();
	if (*pid == 0) {
		char req[8192];
		size_t n = 0;
		ssize_t k;
		int c = accept(s, NULL, NULL);
		const char *cl, *end;

		/* the headers, then Content-Length bytes of statement */
		while (n < sizeof(req) - 1 && (k = read(c, req + n, sizeof(req) - 1 - n)) > 0) {
			req[n += (size_t)k] = '\0';
			if ((end = strstr(req, "\r\n\r\n")) && (cl = strcasestr(req, "Content-Length:")) &&
			    n >= (size_t)(end + 4 - req) + strtoul(cl + 15, NULL, 10))
				break;
		}
		if (write(c, answer, strlen(answer)) < 0)
			_exit(1);
		close(c);
		_exit(0);
	}
	close(s);
	return ntohs(a.sin_port);
}

#define TAG "5WLMK0QJ2ZXEPTRA"
#define HEAD "HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=UTF-8\r\n" \
	     "X-ClickHouse-Exception-Tag: " TAG "\r\nTransfer-Encoding: chunked\r\n\r\n"
#define ROWS "{\"meta\":[{\"name\":\"x\",\"type\":\"UInt8\"}],\"data\":[[0],[0]"
#define BLOCK "\r\n__exception__\r\n" TAG "\r\nCode: 395. DB::Exception: Value passed to " \
	      "'throwIf' function is non-zero. (FUNCTION_THROW_IF_VALUE_IS_NON_ZERO) (version " \
	      "25.11.1.1)\n123 " TAG "\r\n__exception__\r\n"

/* Sends a statement to a fake server whose answer is head, then body in
 * one chunk, then the last chunk only if end. */
static void fake_query(const char *head, const char *body, int end, struct au_ch_response *r)
{
	struct au_ch_query q = { .sql = "SELECT 1 FORMAT JSONCompact" };
	struct au_err err;
	struct au_clickhouse *c;
	char *answer = au_asprintf("%s%zx\r\n%s\r\n%s", head, strlen(body), body,
				   end ? "0\r\n\r\n" : "");
	char *u;
	pid_t pid;
	int port = fake_server(answer, &pid);

	u = au_asprintf("http://127.0.0.1:%d/default", port);
	c = au_ch_new(u, &err);
	T_OK(port > 0 && c, "fake server on %d", port);
	au_ch_query_sync(c, &q, r);
	waitpid(pid, NULL, 0);
	au_ch_free(c);
	free(u);
	free(answer);
}

static void test_tagged_exception(void)
{
	struct au_ch_response r;

	/* 25.11: the block with the answer's tag, then a cut connection */
	fake_query(HEAD, ROWS BLOCK, 0, &r);
	T_EQ_INT(r.http_status, 200, "tagged: status 200");
	T_EQ_INT(r.err.code, AU_ECLICKHOUSE, "tagged: a clickhouse error, not a cut connection");
	T_EQ_INT(r.ch_code, 395, "tagged: code 395");
	T_OK(strstr(r.err.str, "': Value passed to 'throwIf' function is non-zero. "
		    "(FUNCTION_THROW_IF_VALUE_IS_NON_ZERO)") && !strstr(r.err.str, "version"),
	     "tagged: message %s", r.err.str);
	T_EQ_INT(au_ch_fault(NULL, &r), AU_CH_RETRY, "tagged: retried as its code's status says");
	au_ch_response_release(&r);

	/* rows holding a block with another tag are rows */
	fake_query(HEAD, "[[\"\r\n__exception__\r\nAAAAAAAAAAAAAAAA\r\nCode: 1. x\"]]", 1, &r);
	T_OK(r.http_status == 200 && !r.err.code, "another tag: no error (%s)", r.err.str);
	au_ch_response_release(&r);

	/* cut with no word of why: a connection error, retried */
	fake_query(HEAD, ROWS, 0, &r);
	T_EQ_INT(r.err.code, AU_ECONN, "cut answer: AU_ECONN");
	T_OK(strstr(r.err.str, "connection to 'http://127.0.0.1:") != NULL, "cut: %s", r.err.str);
	T_EQ_INT(au_ch_fault(NULL, &r), AU_CH_OUTAGE, "cut answer: an outage");
	au_ch_response_release(&r);

	/* 200 with an exception code in the headers is no success */
	fake_query("HTTP/1.1 200 OK\r\nX-ClickHouse-Exception-Code: 159\r\n"
		   "Transfer-Encoding: chunked\r\n\r\n", ROWS, 1, &r);
	T_EQ_INT(r.err.code, AU_ECLICKHOUSE, "200 with a code: AU_ECLICKHOUSE");
	T_EQ_INT(r.ch_code, 159, "200 with a code: the code");
	T_OK(strstr(r.err.str, "clickhouse error 159 at 'http://127.0.0.1:") != NULL, "%s", r.err.str);
	au_ch_response_release(&r);
}

/* Whose fault each error is: the one table (docs/clickhouse.md), and the
 * server's real answers for the cases that decide whether a worker pauses
 * or spends the computation's attempt. */
static void test_faults(void)
{
	static const struct { int code; long status; enum au_ch_fault want; const char *what; } t[] = {
		{ 117, 500, AU_CH_FOR_GOOD, "117 (incorrect data, an unknown column) with 500: for good" },
		{ 62, 400, AU_CH_FOR_GOOD, "62 syntax: for good" },
		{ 202, 500, AU_CH_OUTAGE, "202 too many simultaneous queries: an outage" },
		{ 252, 500, AU_CH_OUTAGE, "252 too many parts: an outage" },
		{ 516, 403, AU_CH_OUTAGE, "516 authentication failed: an outage" },
		{ 241, 500, AU_CH_RETRY, "241 memory limit: retried" },
		{ 159, 500, AU_CH_RETRY, "159 timeout: retried" },
		{ 394, 500, AU_CH_FOR_GOOD, "394 cancelled on purpose: for good" },
		{ 9999, 500, AU_CH_RETRY, "an unknown code with 5xx: retried" },
		{ 9999, 400, AU_CH_FOR_GOOD, "an unknown code with 4xx: for good" },
		{ 9999, 503, AU_CH_OUTAGE, "an unknown code with 503: an outage" },
	};
	struct au_ch_response r;
	struct au_ch_query q = { .sql = "SELECT 1" };
	struct au_clickhouse *c;
	char *u;
	size_t i;

	for (i = 0; i < AU_ARRAY_SIZE(t); i++) {
		memset(&r, 0, sizeof(r));
		r.http_status = t[i].status;
		r.ch_code = t[i].code;
		au_seterr(&r.err, AU_ECLICKHOUSE, "clickhouse error %d at 'x': y", t[i].code);
		T_OK(au_ch_fault(ch, &r) == t[i].want, "fault: %s", t[i].what);
	}
	/* the URL's own database missing: the worker's setup, not the statement */
	u = au_asprintf("%.*s/au_no_such_db", (int)(strrchr(url, '/') - url), url);
	c = au_ch_new(u, NULL);
	T_OK(au_ch_query_sync(c, &q, &r) < 0 && r.ch_code == 81, "url with a missing database: code 81 (%s)",
	     r.err.str);
	T_EQ_INT(au_ch_fault(c, &r), AU_CH_OUTAGE, "fault: the url's database missing is an outage");
	au_ch_response_release(&r);
	au_ch_free(c);
	free(u);
	/* a database the statement names: its own error */
	q.sql = "SELECT * FROM au_no_such_db.t";
	T_OK(au_ch_query_sync(ch, &q, &r) < 0 && r.ch_code == 81, "statement naming a missing database: code 81");
	T_EQ_INT(au_ch_fault(ch, &r), AU_CH_FOR_GOOD, "fault: a database the statement names is its own");
	au_ch_response_release(&r);
	/* an unknown column in JSONEachRow rows (the 117 that was retried) */
	q.sql = "CREATE TABLE IF NOT EXISTS au_fault_t (a UInt8) ENGINE = Memory";
	T_OK(au_ch_query_sync(ch, &q, &r) == 0, "create au_fault_t");
	au_ch_response_release(&r);
	q.sql = "INSERT INTO au_fault_t FORMAT JSONEachRow {\"nope\": 1}";
	T_OK(au_ch_query_sync(ch, &q, &r) < 0, "insert of an unknown column fails: %s", r.err.str);
	T_OK(au_ch_fault(ch, &r) == AU_CH_FOR_GOOD, "fault: an unknown column is the statement's (code %d)",
	     r.ch_code);
	au_ch_response_release(&r);
	q.sql = "DROP TABLE IF EXISTS au_fault_t";
	au_ch_query_sync(ch, &q, &r);
	au_ch_response_release(&r);
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
	test_errors_after_rows();
	test_exception_texts();
	test_tagged_exception();
	test_faults();
	test_version();

	au_ch_free(ch);
	event_base_free(base);
	return t_done();
}
