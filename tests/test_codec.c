/* test_codec.c - the wire codec: round trips, defaults, every malformed and
 * hostile input we can think of, a mutation fuzz loop, and the JSON mirror. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core.h"
#include "harness.h"

static const char ID[] = "0123456789abcdef0123456789abcdef";

static int has(const char *s, const char *part)
{
	return strstr(s, part) != NULL;
}

/* msgpack from JSON, for building test messages; aborts the test on error. */
static unsigned char *mp(const char *json, size_t *len)
{
	struct au_err err = { 0 };
	unsigned char *out;

	if (au_json_to_msgpack(json, &out, len, &err) < 0) {
		T_OK(0, "test json '%s' converts: %s", json, err.str);
		exit(t_done());
	}
	return out;
}

/* Decodes the computation written as JSON; 0/-1 and err. */
static int decode_json(const char *json, struct au_computation *c, struct au_err *err)
{
	size_t len;
	unsigned char *buf = mp(json, &len);
	int rc = au_computation_decode(buf, len, c, err);

	free(buf);
	return rc;
}

/* A message {"v":1,"id":ID,"task":"t", ...extra pairs} whose extra pairs the
 * caller appends as raw msgpack. */
static void base(struct au_buf *b, uint32_t extra)
{
	au_mp_map(b, 3 + extra);
	au_mp_str(b, "v", 1);
	au_mp_uint(b, 1);
	au_mp_str(b, "id", 2);
	au_mp_str(b, ID, 32);
	au_mp_str(b, "task", 4);
	au_mp_str(b, "t", 1);
}

static void fill_computation(struct au_computation *c, struct au_header *h)
{
	/* args: {"sql": "SELECT 1", "blob": bin "a\0b"} */
	static const unsigned char args[] = {
		0x82, 0xa3, 's', 'q', 'l', 0xa8, 'S', 'E', 'L', 'E', 'C', 'T', ' ', '1',
		0xa4, 'b', 'l', 'o', 'b', 0xc4, 0x03, 'a', 0x00, 'b',
	};

	au_computation_init(c);
	au_id_new(c->id);
	c->task = (char *)"clickhouse.query";
	c->args = (unsigned char *)args;
	c->args_len = sizeof(args);
	c->queue = (char *)"reports.daily:v1-x_";
	c->priority = AU_PRIORITY_MIN;
	c->run_at_ms = UINT64_MAX;
	c->max_attempts = 1000;
	c->timeout_ms = UINT32_MAX;
	c->ttl_s = 86400;
	c->created_at_ms = 1700000000123ull;
	h[0].key = (char *)"trace-id";
	h[0].value = (char *)"abc";
	h[1].key = (char *)"empty";
	h[1].value = (char *)"";
	c->headers = h;
	c->nheaders = 2;
}

static void test_computation_roundtrip(void)
{
	struct au_computation in, out;
	struct au_header h[2];
	struct au_buf b = AU_BUF_INIT;
	struct au_err err = { 0 };

	fill_computation(&in, h);
	au_buf_puts(&b, "xyz");   /* encode appends */
	T_OK(au_computation_encode(&in, &b, &err) == 0, "encode full computation: %s", err.str);
	T_OK(!memcmp(b.data, "xyz", 3), "encode keeps what the buffer held");
	T_OK(au_computation_decode(b.data + 3, b.len - 3, &out, &err) == 0, "decode full computation: %s",
	     err.str);
	T_EQ_STR(out.id, in.id, "id");
	T_EQ_STR(out.task, "clickhouse.query", "task");
	T_OK(out.args_len == in.args_len && !memcmp(out.args, in.args, in.args_len),
	     "args come back byte for byte, NUL included");
	T_EQ_STR(out.queue, in.queue, "queue");
	T_EQ_INT(out.priority, AU_PRIORITY_MIN, "priority");
	T_OK(out.run_at_ms == UINT64_MAX, "run_at keeps uint64 max");
	T_EQ_INT(out.max_attempts, 1000, "max_attempts");
	T_OK(out.timeout_ms == UINT32_MAX, "timeout_ms keeps uint32 max");
	T_EQ_INT(out.ttl_s, 86400, "ttl_s");
	T_OK(out.created_at_ms == 1700000000123ull, "created_at");
	T_EQ_INT(out.nheaders, 2, "two headers");
	if (out.nheaders == 2) {
		T_EQ_STR(out.headers[0].key, "trace-id", "header key");
		T_EQ_STR(out.headers[0].value, "abc", "header value");
		T_EQ_STR(out.headers[1].value, "", "empty header value");
	}
	T_EQ_INT(out.attempts, 0, "attempts are not on the wire");
	T_EQ_INT(out.fail_on_timeout, 0, "on_timeout left out reads as retry");

	/* encoding what was decoded gives the same bytes */
	{
		struct au_buf b2 = AU_BUF_INIT;

		T_OK(au_computation_encode(&out, &b2, &err) == 0 && b2.len == b.len - 3 &&
		     !memcmp(b2.data, b.data + 3, b2.len), "re-encoding is byte-identical");
		au_buf_release(&b2);
	}
	au_computation_release(&out);
	T_OK(out.task == NULL && out.args == NULL && out.headers == NULL, "release clears the struct");

	/* on_timeout: "fail" travels, anything else is refused */
	in.fail_on_timeout = 1;
	au_buf_reset(&b);
	T_OK(au_computation_encode(&in, &b, &err) == 0 &&
	     au_computation_decode(b.data, b.len, &out, &err) == 0 && out.fail_on_timeout == 1,
	     "on_timeout \"fail\" round-trips");
	au_computation_release(&out);
	in.fail_on_timeout = 0;
	{
		unsigned char *m;
		size_t n;
		int rc;

		au_json_to_msgpack("{\"v\":1,\"id\":\"0123456789abcdef0123456789abcdef\",\"task\":\"t\","
				   "\"on_timeout\":\"sometimes\"}", &m, &n, NULL);
		rc = au_computation_decode(m, n, &out, &err);
		T_OK(rc < 0 && !strcmp(err.str, "malformed computation: 'on_timeout' must be \"retry\" or \"fail\""),
		     "on_timeout of another value is refused: %s", err.str);
		free(m);
		au_json_to_msgpack("{\"v\":1,\"id\":\"0123456789abcdef0123456789abcdef\",\"task\":\"t\","
				   "\"on_timeout\":\"retry\"}", &m, &n, NULL);
		T_OK(au_computation_decode(m, n, &out, &err) == 0 && out.fail_on_timeout == 0,
		     "on_timeout \"retry\" reads as the default");
		au_computation_release(&out);
		free(m);
	}

	/* no args, no queue, no headers: args read as nil, queue as default */
	in.args = NULL;
	in.args_len = 0;
	in.queue = NULL;
	in.nheaders = 0;
	au_buf_reset(&b);
	T_OK(au_computation_encode(&in, &b, &err) == 0, "encode without args");
	T_OK(au_computation_decode(b.data, b.len, &out, &err) == 0, "decode without args");
	T_OK(out.args_len == 1 && out.args[0] == 0xc0, "missing args decode as nil");
	T_EQ_STR(out.queue, "default", "missing queue encodes as default");
	T_EQ_INT(out.nheaders, 0, "no headers");
	au_computation_release(&out);
	au_buf_release(&b);
}

static void test_computation_defaults(void)
{
	struct au_computation c;
	struct au_buf b = AU_BUF_INIT;
	struct au_err err = { 0 };

	base(&b, 0);
	T_OK(au_computation_decode(b.data, b.len, &c, &err) == 0, "minimal computation decodes: %s",
	     err.str);
	T_EQ_STR(c.id, ID, "id");
	T_EQ_STR(c.task, "t", "task");
	T_EQ_STR(c.queue, "default", "queue defaults to 'default'");
	T_EQ_INT(c.priority, 0, "priority defaults to 0");
	T_EQ_INT(c.max_attempts, 1, "max_attempts defaults to 1");
	T_OK(c.run_at_ms == 0 && c.created_at_ms == 0 && c.timeout_ms == 0 && c.ttl_s == 0,
	     "times default to 0");
	T_OK(c.args_len == 1 && c.args[0] == 0xc0, "args default to nil");
	au_computation_release(&c);

	/* unknown keys are skipped, whatever they hold */
	T_OK(decode_json("{\"v\":1,\"id\":\"0123456789abcdef0123456789abcdef\",\"task\":\"t\","
			 "\"future\":[1,{\"a\":null},\"x\"],\"priority\":-5}", &c, &err) == 0,
	     "unknown keys are ignored: %s", err.str);
	T_EQ_INT(c.priority, -5, "negative priority");
	au_computation_release(&c);

	/* integers in a signed or wider encoding than needed are still integers,
	 * and args keep their exact bytes */
	au_buf_reset(&b);
	base(&b, 2);
	au_mp_str(&b, "max_attempts", 12);
	au_buf_append(&b, "\xd0\x05", 2);             /* int8 5 */
	au_mp_str(&b, "args", 4);
	au_buf_append(&b, "\xd1\x00\x07", 3);         /* int16 7 */
	T_OK(au_computation_decode(b.data, b.len, &c, &err) == 0, "signed encodings decode: %s",
	     err.str);
	T_EQ_INT(c.max_attempts, 5, "int8 max_attempts");
	T_OK(c.args_len == 3 && !memcmp(c.args, "\xd1\x00\x07", 3), "non-canonical args kept as sent");
	au_computation_release(&c);
	au_buf_release(&b);
}

static void expect_decode_error(const char *json, const char *msg)
{
	struct au_computation c;
	struct au_err err = { 0 };

	T_OK(decode_json(json, &c, &err) == -1 && err.code == AU_EPROTO, "rejected: %s", json);
	T_EQ_STR(err.str, msg, "message");
	T_OK(c.task == NULL && c.args == NULL && c.queue == NULL, "nothing is left allocated");
}

#define MSG(extra) "{\"v\":1,\"id\":\"0123456789abcdef0123456789abcdef\",\"task\":\"t\"" extra "}"

static void test_computation_errors(void)
{
	static const struct {
		const char *json, *msg;
	} cases[] = {
		{ "{\"id\":\"0123456789abcdef0123456789abcdef\",\"task\":\"t\"}",
		  "malformed computation: missing 'v'" },
		{ "{\"v\":1,\"task\":\"t\"}", "malformed computation: missing 'id'" },
		{ "{\"v\":1,\"id\":\"0123456789abcdef0123456789abcdef\"}",
		  "malformed computation: missing 'task'" },
		{ "{\"v\":2,\"id\":\"0123456789abcdef0123456789abcdef\",\"task\":\"t\"}",
		  "unsupported wire version 2" },
		{ "{\"v\":2}", "unsupported wire version 2" },
		{ "{\"v\":\"1\"}", "malformed computation: 'v' must be an integer" },
		{ "[1,2]", "malformed computation: not a map" },
		{ "\"v\"", "malformed computation: not a map" },
		{ MSG(",\"id\":5"), "malformed computation: 'id' must be 32 lowercase hex digits" },
		{ MSG(",\"id\":\"0123456789ABCDEF0123456789abcdef\""),
		  "malformed computation: 'id' must be 32 lowercase hex digits" },
		{ MSG(",\"id\":\"0123456789abcdef\""),
		  "malformed computation: 'id' must be 32 lowercase hex digits" },
		{ MSG(",\"task\":5"), "malformed computation: 'task' must be a string" },
		{ MSG(",\"task\":\"\""), "malformed computation: 'task' must be 1 to 200 bytes long" },
		{ MSG(",\"task\":\"a b\""),
		  "malformed computation: 'task' may only hold printable ascii without spaces" },
		{ MSG(",\"task\":\"caf\\u00e9\""),
		  "malformed computation: 'task' may only hold printable ascii without spaces" },
		{ MSG(",\"task\":\"a\\u0000b\""), "malformed computation: 'task' must not contain NUL bytes" },
		{ MSG(",\"queue\":null"), "malformed computation: 'queue' must be a string" },
		{ MSG(",\"queue\":\"\""), "malformed computation: 'queue' must be 1 to 100 bytes long" },
		{ MSG(",\"queue\":\"a/b\""),
		  "malformed computation: 'queue' may only hold letters, digits and _.:-" },
		{ MSG(",\"priority\":\"x\""), "malformed computation: 'priority' must be an integer" },
		{ MSG(",\"priority\":1.0"), "malformed computation: 'priority' must be an integer" },
		{ MSG(",\"priority\":101"), "malformed computation: 'priority' must be between -100 and 100" },
		{ MSG(",\"priority\":-101"), "malformed computation: 'priority' must be between -100 and 100" },
		{ MSG(",\"priority\":99999999999"), "malformed computation: 'priority' out of range" },
		{ MSG(",\"run_at\":-1"),
		  "malformed computation: 'run_at' must be between 0 and 18446744073709551615" },
		{ MSG(",\"run_at\":true"), "malformed computation: 'run_at' must be an integer" },
		{ MSG(",\"max_attempts\":0"), "malformed computation: 'max_attempts' must be between 1 and 1000" },
		{ MSG(",\"max_attempts\":1001"),
		  "malformed computation: 'max_attempts' must be between 1 and 1000" },
		{ MSG(",\"max_attempts\":[]"), "malformed computation: 'max_attempts' must be an integer" },
		{ MSG(",\"timeout_ms\":4294967296"),
		  "malformed computation: 'timeout_ms' must be between 0 and 4294967295" },
		{ MSG(",\"ttl_s\":{}"), "malformed computation: 'ttl_s' must be an integer" },
		{ MSG(",\"created_at\":\"now\""), "malformed computation: 'created_at' must be an integer" },
		{ MSG(",\"headers\":[]"), "malformed computation: 'headers' must be a map" },
		{ MSG(",\"headers\":{\"a\":1}"), "malformed computation: a header value must be a string" },
		{ MSG(",\"headers\":{\"a\":\"x\\u0000\"}"),
		  "malformed computation: a header value must not contain NUL bytes" },
		{ MSG(",\"headers\":{\"\":\"x\"}"),
		  "malformed computation: a header key must be 1 to 1024 bytes long" },
	};
	struct au_computation c;
	struct au_buf b = AU_BUF_INIT;
	struct au_err err = { 0 };
	char *json;
	size_t i;

	for (i = 0; i < AU_ARRAY_SIZE(cases); i++)
		expect_decode_error(cases[i].json, cases[i].msg);

	/* lengths at and over the limits */
	json = malloc(5000);
	snprintf(json, 5000, MSG(",\"task\":\"%0200d\",\"queue\":\"%0100d\""), 0, 0);
	T_OK(decode_json(json, &c, &err) == 0, "200-byte task and 100-byte queue are fine");
	au_computation_release(&c);
	snprintf(json, 5000, MSG(",\"task\":\"%0201d\""), 0);
	expect_decode_error(json, "malformed computation: 'task' must be 1 to 200 bytes long");
	snprintf(json, 5000, MSG(",\"queue\":\"%0101d\""), 0);
	expect_decode_error(json, "malformed computation: 'queue' must be 1 to 100 bytes long");
	snprintf(json, 5000, MSG(",\"headers\":{\"k\":\"%01024d\"}"), 0);
	T_OK(decode_json(json, &c, &err) == 0, "1024-byte header value is fine");
	au_computation_release(&c);
	snprintf(json, 5000, MSG(",\"headers\":{\"k\":\"%01025d\"}"), 0);
	expect_decode_error(json, "malformed computation: a header value must be 0 to 1024 bytes long");
	strcpy(json, MSG(",\"headers\":{"));
	json[strlen(json) - 1] = '\0';   /* drop the closing brace */
	for (i = 0; i < AU_MAX_HEADERS + 1; i++)
		sprintf(json + strlen(json), "%s\"h%zu\":\"v\"", i ? "," : "", i);
	strcat(json, "}}");
	expect_decode_error(json, "malformed computation: 'headers' may hold at most 32 entries");
	free(json);

	/* map keys that are not strings, duplicate keys */
	base(&b, 1);
	au_mp_uint(&b, 7);
	au_mp_nil(&b);
	T_OK(au_computation_decode(b.data, b.len, &c, &err) == -1 &&
	     !strcmp(err.str, "malformed computation: map keys must be strings"), "integer key: %s",
	     err.str);
	au_buf_reset(&b);
	base(&b, 1);
	au_mp_str(&b, "task", 4);
	au_mp_str(&b, "u", 1);
	T_OK(au_computation_decode(b.data, b.len, &c, &err) == -1 &&
	     !strcmp(err.str, "malformed computation: duplicate key 'task'"), "duplicate key: %s",
	     err.str);
	au_buf_release(&b);
}

static void test_computation_encode_errors(void)
{
	struct au_computation c;
	struct au_header h[2];
	struct au_buf b = AU_BUF_INIT;
	struct au_err err = { 0 };
	unsigned char *big;

	au_buf_puts(&b, "keep");
	fill_computation(&c, h);
	strcpy(c.id, "nothex");
	T_OK(au_computation_encode(&c, &b, &err) == -1 && err.code == AU_EINVAL, "bad id refused");
	T_EQ_STR(err.str, "invalid computation: 'id' must be 32 lowercase hex digits", "message");
	T_OK(b.len == 4, "a failed encode appends nothing");

	fill_computation(&c, h);
	c.task = NULL;
	T_OK(au_computation_encode(&c, &b, &err) == -1, "no task refused");
	T_EQ_STR(err.str, "invalid computation: missing 'task'", "message");

	fill_computation(&c, h);
	c.queue = (char *)"no spaces";
	T_OK(au_computation_encode(&c, &b, &err) == -1, "bad queue refused");
	T_EQ_STR(err.str, "invalid computation: 'queue' may only hold letters, digits and _.:-", "message");

	fill_computation(&c, h);
	c.max_attempts = 0;
	T_OK(au_computation_encode(&c, &b, &err) == -1, "max_attempts 0 refused");
	fill_computation(&c, h);
	c.priority = 101;
	T_OK(au_computation_encode(&c, &b, &err) == -1, "priority 101 refused");
	fill_computation(&c, h);
	h[1].value = NULL;
	T_OK(au_computation_encode(&c, &b, &err) == -1, "NULL header value refused");
	T_EQ_STR(err.str, "invalid computation: missing a header value", "message");

	fill_computation(&c, h);
	c.args = (unsigned char *)"\xc1";
	c.args_len = 1;
	T_OK(au_computation_encode(&c, &b, &err) == -1, "malformed args refused");
	T_EQ_STR(err.str, "invalid computation: invalid byte 0xc1 at byte 0", "message");
	c.args = (unsigned char *)"\x01\x02";
	c.args_len = 2;
	T_OK(au_computation_encode(&c, &b, &err) == -1, "two values as args refused");
	T_EQ_STR(err.str, "invalid computation: trailing bytes at byte 1", "message");

	/* args of 1.1 MB: the message is over AU_MAX_MESSAGE */
	big = malloc(1100000);
	big[0] = 0xc6;   /* bin32 */
	big[1] = 0x00;
	big[2] = 0x10;
	big[3] = 0xc8;
	big[4] = 0xdb;   /* 1099995 */
	memset(big + 5, 'x', 1100000 - 5);
	fill_computation(&c, h);
	c.args = big;
	c.args_len = 1100000;
	T_OK(au_computation_encode(&c, &b, &err) == -1 && err.code == AU_ETOOBIG, "1.1 MB args refused");
	T_OK(has(err.str, "computation too large: ") && has(err.str, "(limit 1048576)"), "message: %s",
	     err.str);
	T_OK(b.len == 4, "nothing appended");
	free(big);
	au_buf_release(&b);
}

/* Nested arrays around a 1: depth containers. */
static void nested(struct au_buf *b, unsigned depth)
{
	unsigned i;

	for (i = 0; i < depth; i++)
		au_mp_array(b, 1);
	au_mp_uint(b, 1);
}

static void test_hostile(void)
{
	static const struct {
		const char *bytes;
		size_t len;
		const char *msg;
	} cases[] = {
		{ "\xdd\x02\xfa\xf0\x80", 5, "malformed msgpack: array of 50000000 elements in 5 bytes" },
		{ "\xdd\xff\xff\xff\xff", 5, "malformed msgpack: array of 4294967295 elements in 5 bytes" },
		{ "\xdf\xff\xff\xff\xff", 5, "malformed msgpack: map of 4294967295 elements in 5 bytes" },
		{ "\x82\xc0\xc0\xc0", 4, "malformed msgpack: map of 2 elements in 4 bytes" },
		{ "\xdb\xff\xff\xff\xff" "a", 6, "malformed msgpack: truncated at byte 6" },
		{ "\xc6\xff\xff\xff\xff" "a", 6, "malformed msgpack: truncated at byte 6" },
		{ "\xc9\xff\xff\xff\xff\x01", 6, "malformed msgpack: truncated at byte 6" },
		{ "\xd8\x01", 2, "malformed msgpack: truncated at byte 2" },
		{ "\xcf\x00\x00", 3, "malformed msgpack: truncated at byte 3" },
		{ "", 0, "malformed msgpack: truncated at byte 0" },
		{ "\xc1", 1, "malformed msgpack: invalid byte 0xc1 at byte 0" },
		{ "\x92\x01\xc1", 3, "malformed msgpack: invalid byte 0xc1 at byte 2" },
		{ "\xc0\xc0", 2, "malformed msgpack: trailing bytes at byte 1" },
	};
	struct au_computation c;
	struct au_buf b = AU_BUF_INIT;
	struct au_err err = { 0 };
	unsigned char *big;
	size_t i;

	for (i = 0; i < AU_ARRAY_SIZE(cases); i++) {
		const unsigned char *p = (const unsigned char *)cases[i].bytes;

		T_OK(au_msgpack_check(p, cases[i].len, AU_MAX_DEPTH, &err) == -1 && err.code == AU_EPROTO,
		     "check rejects hostile input %zu", i);
		T_EQ_STR(err.str, cases[i].msg, "message");
		T_OK(au_computation_decode(p, cases[i].len, &c, &err) == -1 && err.code == AU_EPROTO &&
		     has(err.str, "malformed computation: "), "decode rejects it: %s", err.str);
	}
	T_OK(au_msgpack_check((const unsigned char *)"\xd4\x01\x02", 3, AU_MAX_DEPTH, &err) == 0 &&
	     au_msgpack_check((const unsigned char *)"\xc7\x00\x05", 3, AU_MAX_DEPTH, &err) == 0 &&
	     au_msgpack_check((const unsigned char *)"\x92\x90\x80", 3, AU_MAX_DEPTH, &err) == 0,
	     "ext and empty containers are well-formed");

	/* nesting: msgpack-c takes 32 levels and no more, and so do we */
	nested(&b, 32);
	T_OK(au_msgpack_check(b.data, b.len, AU_MAX_DEPTH, &err) == 0, "32 levels pass the check");
	{
		char *json = au_msgpack_to_json(b.data, b.len, &err);

		T_OK(json && json[0] == '[' && json[31] == '[' && json[32] == '1',
		     "msgpack-c unpacks 32 levels too");
		free(json);
	}
	T_OK(au_msgpack_check(b.data, b.len, 31, &err) == -1, "32 levels fail a check at 31");
	T_EQ_STR(err.str, "malformed msgpack: nesting deeper than 31", "message");
	au_buf_reset(&b);
	nested(&b, 33);
	T_OK(au_msgpack_check(b.data, b.len, AU_MAX_DEPTH, &err) == -1, "33 levels rejected");
	T_EQ_STR(err.str, "malformed msgpack: nesting deeper than 32", "message");
	T_OK(au_msgpack_check(b.data, b.len, 1000, &err) == -1, "max_depth is capped at 32");
	au_buf_reset(&b);
	for (i = 0; i < 33; i++)
		au_mp_array(&b, 0 + (i < 32));
	T_OK(au_msgpack_check(b.data, b.len, AU_MAX_DEPTH, &err) == -1,
	     "an empty innermost array counts as a level");

	/* in a computation, args sit at level 2: 31 levels of args fit */
	au_buf_reset(&b);
	base(&b, 1);
	au_mp_str(&b, "args", 4);
	nested(&b, 31);
	T_OK(au_computation_decode(b.data, b.len, &c, &err) == 0, "args 31 deep decode: %s", err.str);
	au_computation_release(&c);
	au_buf_reset(&b);
	base(&b, 1);
	au_mp_str(&b, "args", 4);
	nested(&b, 32);
	T_OK(au_computation_decode(b.data, b.len, &c, &err) == -1, "args 32 deep rejected");
	T_EQ_STR(err.str, "malformed computation: nesting deeper than 32", "message");

	/* a huge declared string inside an otherwise fine message */
	au_buf_reset(&b);
	base(&b, 1);
	au_mp_str(&b, "args", 4);
	au_buf_append(&b, "\xdb\x7f\xff\xff\xff" "abc", 8);
	T_OK(au_computation_decode(b.data, b.len, &c, &err) == -1, "str32 with a 2 GB length rejected");
	T_OK(has(err.str, "truncated at byte"), "message: %s", err.str);

	/* a message over the limit is refused before it is read */
	big = calloc(2000000, 1);
	T_OK(au_computation_decode(big, 2000000, &c, &err) == -1 && err.code == AU_ETOOBIG,
	     "2 MB computation refused");
	T_EQ_STR(err.str, "computation too large: 2000000 bytes (limit 1048576)", "message");
	free(big);

	/* a big but honest array is fine */
	au_buf_reset(&b);
	au_mp_array(&b, 100000);
	for (i = 0; i < 100000; i++)
		au_mp_nil(&b);
	T_OK(au_msgpack_check(b.data, b.len, AU_MAX_DEPTH, &err) == 0, "100000 nils in 100005 bytes");
	au_buf_release(&b);
}

static void test_truncation(void)
{
	struct au_computation c;
	struct au_record r;
	struct au_header h[2];
	struct au_buf b = AU_BUF_INIT;
	struct au_err err = { 0 };
	size_t n, rejected = 0;

	fill_computation(&c, h);
	au_computation_encode(&c, &b, &err);
	for (n = 0; n < b.len; n++) {
		/* a fresh heap copy, so that ASan sees any read past its end */
		unsigned char *p = malloc(n ? n : 1);

		memcpy(p, b.data, n);
		if (au_computation_decode(p, n, &c, &err) == -1 && err.code == AU_EPROTO &&
		    au_msgpack_check(p, n, AU_MAX_DEPTH, &err) == -1 &&
		    au_record_decode(p, n, &r, &err) == -1)
			rejected++;
		free(p);
	}
	T_EQ_INT(rejected, b.len, "every proper prefix of a computation is rejected");
	au_buf_release(&b);
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rng(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

/* Mutates a copy of msg[0..len) with 1 to 4 flips, sets, inserts, deletes. */
static size_t mutate(const unsigned char *msg, size_t len, unsigned char *out)
{
	unsigned k, edits = 1 + rng() % 4;
	size_t n = len, at;

	memcpy(out, msg, len);
	for (k = 0; k < edits; k++) {
		at = n ? rng() % n : 0;
		switch (rng() % 4) {
		case 0:
			if (n)
				out[at] ^= (unsigned char)(1u << (rng() % 8));
			break;
		case 1:
			if (n)
				out[at] = (unsigned char)rng();
			break;
		case 2:
			memmove(out + at + 1, out + at, n - at);
			out[at] = (unsigned char)rng();
			n++;
			break;
		default:
			if (n) {
				memmove(out + at, out + at + 1, n - at - 1);
				n--;
			}
		}
	}
	return n;
}

static void test_fuzz(void)
{
	struct au_computation c, c2;
	struct au_record r, r2, in;
	struct au_header h[2];
	struct au_buf msg = AU_BUF_INIT, rec = AU_BUF_INIT, again = AU_BUF_INIT;
	struct au_err err = { 0 };
	unsigned long ok = 0, bad = 0, odd = 0, i;

	fill_computation(&c, h);
	au_record_init(&in);
	memcpy(in.id, ID, sizeof(ID));
	in.status = AU_COMPLETED;
	in.result = (unsigned char *)"\x92\xa2hi\xcb\x3f\xf8\0\0\0\0\0\0";
	in.result_len = 13;
	in.task = (char *)"t";
	in.worker = (char *)"host:1";
	in.finished_at_ms = 1;
	T_OK(au_computation_encode(&c, &msg, &err) == 0 && au_record_encode(&in, &rec, &err) == 0,
	     "fuzz seeds encode: %s", err.str);

	for (i = 0; i < 200000; i++) {
		int is_record = i % 4 == 3;
		const struct au_buf *src = is_record ? &rec : &msg;
		unsigned char *p = malloc(src->len + 8);
		size_t n = mutate(src->data, src->len, p);
		char *json;

		if (is_record ? au_record_decode(p, n, &r, &err) == 0
			      : au_computation_decode(p, n, &c, &err) == 0) {
			ok++;
			au_buf_reset(&again);
			/* whatever decodes must encode and decode again */
			if (is_record) {
				if (au_record_encode(&r, &again, &err) < 0 ||
				    au_record_decode(again.data, again.len, &r2, &err) < 0)
					odd++;
				else
					au_record_release(&r2);
				au_record_release(&r);
			} else {
				if (au_computation_encode(&c, &again, &err) < 0 ||
				    au_computation_decode(again.data, again.len, &c2, &err) < 0)
					odd++;
				else
					au_computation_release(&c2);
				au_computation_release(&c);
			}
		} else {
			bad++;
			if (err.code != AU_EPROTO || !err.str[0])
				odd++;
		}
		/* a mutant that passes the check must unpack in msgpack-c too */
		json = au_msgpack_to_json(p, n, &err);
		if (!json && err.code == AU_ENOMEM)
			odd++;
		free(json);
		free(p);
	}
	T_OK(ok > 1000 && bad > 1000, "fuzz: %lu mutants decoded, %lu rejected", ok, bad);
	T_EQ_INT(odd, 0, "fuzz: decoded mutants re-encode, rejections are AU_EPROTO, checked ones unpack");
	au_buf_release(&msg);
	au_buf_release(&rec);
	au_buf_release(&again);
}

static void test_record(void)
{
	struct au_record in, out;
	struct au_buf b = AU_BUF_INIT;
	struct au_err err = { 0 };
	unsigned char *big;

	au_record_init(&in);
	au_id_new(in.id);
	in.status = AU_COMPLETED;
	in.result = (unsigned char *)"\xc4\x03" "a\0b";
	in.result_len = 5;
	in.error = (char *)"previous attempt: timeout";
	in.task = (char *)"clickhouse.query";
	in.queue = (char *)"q";
	in.worker = (char *)"host:42";
	in.attempts = 3;
	in.ttl_s = UINT32_MAX;
	in.created_at_ms = 1;
	in.started_at_ms = 2;
	in.finished_at_ms = 3;
	in.expires_at_ms = UINT64_MAX;
	T_OK(au_record_encode(&in, &b, &err) == 0, "encode full record: %s", err.str);
	T_OK(au_record_decode(b.data, b.len, &out, &err) == 0, "decode full record: %s", err.str);
	T_EQ_STR(out.id, in.id, "id");
	T_EQ_INT(out.status, AU_COMPLETED, "status");
	T_OK(out.result_len == 5 && !memcmp(out.result, in.result, 5), "binary result with NUL kept");
	T_EQ_STR(out.error, in.error, "error");
	T_EQ_STR(out.task, in.task, "task");
	T_EQ_STR(out.queue, "q", "queue");
	T_EQ_STR(out.worker, "host:42", "worker");
	T_EQ_INT(out.attempts, 3, "attempts");
	T_OK(out.ttl_s == UINT32_MAX, "ttl_s");
	T_OK(out.created_at_ms == 1 && out.started_at_ms == 2 && out.finished_at_ms == 3 &&
	     out.expires_at_ms == UINT64_MAX, "timestamps");
	au_record_release(&out);

	/* a minimal record: no result, no strings */
	au_buf_reset(&b);
	au_record_init(&in);
	memcpy(in.id, ID, sizeof(ID));
	in.status = AU_RUNNING;
	T_OK(au_record_encode(&in, &b, &err) == 0 && au_record_decode(b.data, b.len, &out, &err) == 0,
	     "minimal record round trip");
	T_OK(out.status == AU_RUNNING && !out.result && !out.result_len && !out.error && !out.task &&
	     !out.worker && !out.queue, "absent fields stay NULL");
	au_record_release(&out);
	au_buf_release(&b);

	{
		static const struct {
			const char *json, *msg;
		} cases[] = {
			{ "{\"v\":1,\"id\":\"0123456789abcdef0123456789abcdef\"}", "malformed record: missing 'status'" },
			{ "{\"v\":1,\"status\":\"failed\"}", "malformed record: missing 'id'" },
			{ "{\"status\":\"failed\"}", "malformed record: missing 'v'" },
			{ "{\"v\":3,\"status\":\"failed\"}", "unsupported wire version 3" },
			{ "{\"v\":1,\"id\":\"0123456789abcdef0123456789abcdef\",\"status\":\"bogus\"}",
			  "malformed record: 'status' must be a status name, not 'bogus'" },
			{ "{\"v\":1,\"id\":\"0123456789abcdef0123456789abcdef\",\"status\":2}",
			  "malformed record: 'status' must be a string" },
			{ "{\"v\":1,\"id\":\"x\",\"status\":\"failed\"}",
			  "malformed record: 'id' must be 32 lowercase hex digits" },
			{ "{\"v\":1,\"id\":\"0123456789abcdef0123456789abcdef\",\"status\":\"failed\",\"error\":1}",
			  "malformed record: 'error' must be a string" },
			{ "{\"v\":1,\"id\":\"0123456789abcdef0123456789abcdef\",\"status\":\"failed\","
			  "\"attempts\":-1}", "malformed record: 'attempts' must be between 0 and 4294967295" },
			{ "{\"v\":1,\"id\":\"0123456789abcdef0123456789abcdef\",\"status\":\"failed\","
			  "\"expires_at\":1.5}", "malformed record: 'expires_at' must be an integer" },
		};
		size_t i, len;

		for (i = 0; i < AU_ARRAY_SIZE(cases); i++) {
			unsigned char *p = mp(cases[i].json, &len);

			T_OK(au_record_decode(p, len, &out, &err) == -1 && err.code == AU_EPROTO,
			     "record rejected: %s", cases[i].json);
			T_EQ_STR(err.str, cases[i].msg, "message");
			free(p);
		}
	}

	/* limits */
	au_record_init(&in);
	memcpy(in.id, ID, sizeof(ID));
	in.status = 42;
	T_OK(au_record_encode(&in, &b, &err) == -1 && err.code == AU_EINVAL, "bad status refused: %s",
	     err.str);
	in.status = AU_COMPLETED;
	in.result = (unsigned char *)"\x01\x02";
	in.result_len = 2;
	T_OK(au_record_encode(&in, &b, &err) == -1 && b.len == 0, "two values as a result refused");
	big = malloc(AU_MAX_RESULT + 100);
	memset(big, 0, AU_MAX_RESULT + 100);
	big[0] = 0xc6;   /* bin32 of AU_MAX_RESULT + 95 bytes */
	big[1] = 0x01;
	big[2] = 0x00;
	big[3] = 0x00;
	big[4] = 95;
	in.result = big;
	in.result_len = AU_MAX_RESULT + 100;
	T_OK(au_record_encode(&in, &b, &err) == -1 && err.code == AU_ETOOBIG, "17 MB record refused");
	T_OK(has(err.str, "record too large: ") && has(err.str, "(limit 16777216)"), "message: %s",
	     err.str);
	T_OK(au_record_decode(big, AU_MAX_RESULT + 100, &out, &err) == -1 && err.code == AU_ETOOBIG,
	     "17 MB record not decoded");
	/* a result just under the limit is fine */
	big[4] = 0;
	in.result_len = AU_MAX_RESULT - 200;
	big[1] = (unsigned char)((in.result_len - 5) >> 24);
	big[2] = (unsigned char)((in.result_len - 5) >> 16);
	big[3] = (unsigned char)((in.result_len - 5) >> 8);
	big[4] = (unsigned char)(in.result_len - 5);
	T_OK(au_record_encode(&in, &b, &err) == 0 && au_record_decode(b.data, b.len, &out, &err) == 0 &&
	     out.result_len == in.result_len, "a 16 MB - 200 result round-trips: %s", err.str);
	au_record_release(&out);
	free(big);
	au_buf_release(&b);
}

static void expect_bytes(const struct au_buf *b, const char *hex, const char *name)
{
	char got[128] = "";
	size_t i;

	for (i = 0; i < b->len && i < 60; i++)
		sprintf(got + 2 * i, "%02x", b->data[i]);
	T_EQ_STR(got, hex, name);
}

static void test_mp_helpers(void)
{
	struct au_buf b = AU_BUF_INIT;

	au_mp_nil(&b);
	au_mp_bool(&b, 1);
	au_mp_bool(&b, 0);
	expect_bytes(&b, "c0c3c2", "nil true false");
	au_buf_reset(&b);
	au_mp_int(&b, -1);
	au_mp_int(&b, -129);
	au_mp_int(&b, 5);
	expect_bytes(&b, "ffd1ff7f05", "ints");
	au_buf_reset(&b);
	au_mp_uint(&b, UINT64_MAX);
	expect_bytes(&b, "cfffffffffffffffff", "uint64 max");
	au_buf_reset(&b);
	au_mp_double(&b, 1.5);
	expect_bytes(&b, "cb3ff8000000000000", "double");
	au_buf_reset(&b);
	au_mp_str(&b, "a\0b", 3);
	au_mp_str(&b, NULL, 0);
	expect_bytes(&b, "a3610062a0", "strings");
	au_buf_reset(&b);
	au_mp_array(&b, 3);
	au_mp_map(&b, 70000);
	expect_bytes(&b, "93df00011170", "array and map headers");
	au_buf_release(&b);
}

static void test_json(void)
{
	static const struct {
		const char *json, *hex;
	} good[] = {
		{ "{\"a\":[1,-2,1.5,\"x\",true,false,null]}",
		  "81a16197" "01" "fe" "cb3ff8000000000000" "a178" "c3" "c2" "c0" },
		{ "42", "2a" },
		{ "\"a\\u0000b\"", "a3610062" },
		{ "[]", "90" },
		{ "{}", "80" },
		{ "-9223372036854775808", "d38000000000000000" },
		{ "9223372036854775807", "cf7fffffffffffffff" },
	};
	static const struct {
		const char *hex, *json;
	} to_json[] = {
		{ "c4026869", "\"hi\"" },                 /* bin that is text */
		{ "ca3fc00000", "1.5" },                  /* float32 */
		{ "d0fb", "-5" },
		{ "82a17a01a16180", "{\"z\":1,\"a\":{}}" }, /* key order kept */
		{ "a2c3a9", "\"\xc3\xa9\"" },
		/* every value has a rendering (docs/wire-format.md) */
		{ "cf7fffffffffffffff", "9223372036854775807" },
		{ "cf8000000000000000", "\"9223372036854775808\"" },   /* 2^63 */
		{ "cfffffffffffffffff", "\"18446744073709551615\"" },  /* 2^64-1 */
		{ "d38000000000000000", "-9223372036854775808" },      /* INT64_MIN */
		{ "91cfffffffffffffffff", "[\"18446744073709551615\"]" },
		{ "cb7ff8000000000000", "\"nan\"" },
		{ "ca7fc00000", "\"nan\"" },
		{ "cb7ff0000000000000", "\"inf\"" },
		{ "cbfff0000000000000", "\"-inf\"" },
		{ "c401ff", "{\"bin\":\"/w==\"}" },
		{ "c402ffee", "{\"bin\":\"/+4=\"}" },
		{ "c403ff0203", "{\"bin\":\"/wID\"}" },
		{ "c400", "\"\"" },                       /* empty bin is text */
		{ "d40100", "{\"ext\":1,\"data\":\"AA==\"}" },
		{ "d6ff00000001", "{\"ext\":-1,\"data\":\"AAAAAQ==\"}" },   /* a timestamp */
		{ "c7000a", "{\"ext\":10,\"data\":\"\"}" },
		{ "a1ff", "\"\xef\xbf\xbd\"" },           /* not UTF-8: U+FFFD */
		{ "a461ffc362", "\"a\xef\xbf\xbd\xef\xbf\xbd" "b\"" },
		{ "a3610062", "\"a\\u0000b\"" },
		{ "81a1ff01", "{\"\xef\xbf\xbd\":1}" },
		{ "810102", "{\"1\":2}" },
		{ "82c001c3c2", "{\"null\":1,\"true\":false}" },
		{ "819201a1780a", "{\"[1,\\\"x\\\"]\":10}" },
		{ "81cfffffffffffffffff01", "{\"18446744073709551615\":1}" },
		{ "81c401ff02", "{\"{\\\"bin\\\":\\\"/w==\\\"}\":2}" },
		{ "82a131010102", "{\"1\":2}" },         /* alike: the later wins */
	};
	static const struct {
		const char *hex, *msg;
	} bad[] = {
		{ "c1", "malformed msgpack: invalid byte 0xc1 at byte 0" },
	};
	/* integer literals above INT64_MAX read as uint64 */
	static const struct {
		const char *json, *hex, *back;
	} big[] = {
		{ "9223372036854775808", "cf8000000000000000", "\"9223372036854775808\"" },
		{ "18446744073709551615", "cfffffffffffffffff", "\"18446744073709551615\"" },
		{ "[1,9223372036854775808,-9223372036854775808]",
		  "9301cf8000000000000000d38000000000000000",
		  "[1,\"9223372036854775808\",-9223372036854775808]" },
		{ "{\"k\\\"18446744073709551615\": 18446744073709551615 }",
		  "81b66b22" "3138343436373434303733373039353531363135" "cfffffffffffffffff",
		  "{\"k\\\"18446744073709551615\":\"18446744073709551615\"}" },
		{ "[\"18446744073709551615\",10000000000000000000,1e19]",
		  "93b4" "3138343436373434303733373039353531363135" "cf8ac7230489e80000"
		  "cb43e158e460913d00",
		  "[\"18446744073709551615\",\"10000000000000000000\",1e19]" },
	};
	struct au_buf b = AU_BUF_INIT;
	struct au_err err = { 0 };
	unsigned char *out;
	size_t i, len;
	char *s, deep[200];

	for (i = 0; i < AU_ARRAY_SIZE(good); i++) {
		T_OK(au_json_to_msgpack(good[i].json, &out, &len, &err) == 0, "json %s converts: %s",
		     good[i].json, err.str);
		au_buf_reset(&b);
		au_buf_append(&b, out, len);
		expect_bytes(&b, good[i].hex, good[i].json);
		s = au_msgpack_to_json(out, len, &err);
		T_EQ_STR(s, good[i].json, "and back to the same json");
		free(s);
		free(out);
	}
	for (i = 0; i < AU_ARRAY_SIZE(to_json); i++) {
		unsigned char raw[64];
		size_t j, n = strlen(to_json[i].hex) / 2;

		for (j = 0; j < n; j++)
			sscanf(to_json[i].hex + 2 * j, "%2hhx", &raw[j]);
		s = au_msgpack_to_json(raw, n, &err);
		T_EQ_STR(s, to_json[i].json, to_json[i].hex);
		free(s);
	}
	for (i = 0; i < AU_ARRAY_SIZE(bad); i++) {
		unsigned char raw[32];
		size_t j, n = strlen(bad[i].hex) / 2;

		for (j = 0; j < n; j++)
			sscanf(bad[i].hex + 2 * j, "%2hhx", &raw[j]);
		s = au_msgpack_to_json(raw, n, &err);
		T_OK(!s && err.code != AU_OK, "msgpack %s has no json", bad[i].hex);
		T_EQ_STR(err.str, bad[i].msg, "message");
		free(s);
	}

	T_OK(au_json_to_msgpack("{\"a\":", &out, &len, &err) == -1 && err.code == AU_EINVAL && !out,
	     "truncated json refused");
	T_OK(has(err.str, "invalid json at line 1 column 5: "), "message: %s", err.str);
	T_OK(au_json_to_msgpack("[1,\n2,,3]", &out, &len, &err) == -1, "bad json refused");
	T_OK(has(err.str, "invalid json at line 2 column "), "message: %s", err.str);
	T_OK(au_json_to_msgpack("18446744073709551616", &out, &len, &err) == -1,
	     "integer over uint64 refused: %s", err.str);
	T_OK(has(err.str, "too big integer"), "message: %s", err.str);
	T_OK(au_json_to_msgpack("-9223372036854775809", &out, &len, &err) == -1,
	     "integer under int64 refused: %s", err.str);
	for (i = 0; i < AU_ARRAY_SIZE(big); i++) {
		T_OK(au_json_to_msgpack(big[i].json, &out, &len, &err) == 0, "json %s converts: %s",
		     big[i].json, err.str);
		au_buf_reset(&b);
		au_buf_append(&b, out, len);
		expect_bytes(&b, big[i].hex, big[i].json);
		s = au_msgpack_to_json(out, len, &err);
		T_EQ_STR(s, big[i].back, "and back, uint64 as a string");
		free(s);
		free(out);
	}
	T_OK(au_json_to_msgpack("[\"\\u0000au:u64:5\"]", &out, &len, &err) == 0,
	     "a string that looks like the mark, without a big integer: %s", err.str);
	s = au_msgpack_to_json(out, len, &err);
	T_EQ_STR(s, "[\"\\u0000au:u64:5\"]", "stays a string");
	free(s);
	free(out);
	T_OK(au_json_to_msgpack("[\"\\u0000au:u64:5\",9223372036854775808]", &out, &len, &err) == -1 &&
	     err.code == AU_EINVAL && !out, "a big integer and a string with \\u0000 refused");
	T_EQ_STR(err.str, "json with an integer above 9223372036854775807 cannot have a string"
		 " with \\u0000 too", "message");
	{
		struct au_err e1, e2;

		au_json_to_msgpack("[9223372036854775807, 9223372036854775807, x]", &out, &len, &e1);
		au_json_to_msgpack("[9223372036854775808, 9223372036854775808, x]", &out, &len, &e2);
		T_OK(has(e1.str, "invalid json at line 1 column "), "message: %s", e1.str);
		T_EQ_STR(e2.str, e1.str, "the error's column is the text's, big integers or not");
		au_json_to_msgpack("[9223372036854775807,\n 9223372036854775807, x]", &out, &len, &e1);
		au_json_to_msgpack("[9223372036854775808,\n 9223372036854775808, x]", &out, &len, &e2);
		T_OK(has(e1.str, "invalid json at line 2 column "), "message: %s", e1.str);
		T_EQ_STR(e2.str, e1.str, "and on a later line");
	}

	/* nesting: 32 levels fine, 33 refused */
	memset(deep, '[', 32);
	memset(deep + 32, ']', 32);
	deep[64] = '\0';
	T_OK(au_json_to_msgpack(deep, &out, &len, &err) == 0 && len == 32, "json 32 deep converts");
	free(out);
	memset(deep, '[', 33);
	memset(deep + 33, ']', 33);
	deep[66] = '\0';
	T_OK(au_json_to_msgpack(deep, &out, &len, &err) == -1 && err.code == AU_EINVAL,
	     "json 33 deep refused");
	T_EQ_STR(err.str, "json nested deeper than 32", "message");
	/* an integer above INT64_MAX where a key goes is no key (au reads
	 * such integers as marked strings, which jansson would take for keys) */
	T_OK(au_json_to_msgpack("{ 18446744073709551615: 1}", &out, &len, &err) == -1 &&
	     err.code == AU_EINVAL && !out, "a big integer as an object key is refused");
	T_EQ_STR(err.str, "invalid json at line 1 column 22: object keys must be strings", "message");
	strcpy(deep, "{\"a\":");
	for (i = 0; i < 40; i++)
		strcat(deep, "[");
	T_OK(au_json_to_msgpack(deep, &out, &len, &err) == -1, "unterminated deep json refused");
	au_buf_release(&b);
}

/* Error texts become valid UTF-8 before they are stored: what is valid
 * stays as it is, every stray byte becomes '?'. */
static void test_utf8_scrub(void)
{
	static const struct {
		const char *in, *out;
		size_t fixed;
	} cases[] = {
		{ "plain ascii", "plain ascii", 0 },
		{ "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", 0 },
		{ "bad \xff byte", "bad ? byte", 1 },
		{ "cut \xe2\x82", "cut ??", 2 },
		{ "overlong \xc0\xaf", "overlong ??", 2 },
		{ "surrogate \xed\xa0\x80", "surrogate ???", 3 },
		{ "too high \xf4\x90\x80\x80", "too high ????", 4 },
		{ "lone \x80 continuation", "lone ? continuation", 1 },
	};
	size_t i;

	for (i = 0; i < AU_ARRAY_SIZE(cases); i++) {
		char *s = au_strdup(cases[i].in);
		size_t fixed = au_utf8_scrub(s);

		T_OK(s && !strcmp(s, cases[i].out) && fixed == cases[i].fixed,
		     "utf-8 scrub case %zu: %zu bytes replaced", i, fixed);
		free(s);
	}
	T_EQ_INT(au_utf8_scrub(NULL), 0, "utf-8 scrub of NULL does nothing");
}

/* Ids come from a pool of random bytes per thread: many are distinct and
 * valid, and a forked child does not hand out its parent's next ones. */
static void test_ids(void)
{
	enum { N = 2000 };
	static char ids[N][AU_ID_SIZE];
	char mine[AU_ID_SIZE], theirs[AU_ID_SIZE] = "";
	int fds[2], i, j, dup = 0, bad = 0, st;
	pid_t pid;

	for (i = 0; i < N; i++) {
		au_id_new(ids[i]);
		bad += !au_id_valid(ids[i]);
	}
	for (i = 0; i < N; i++)
		for (j = i + 1; j < N; j++)
			dup += !strcmp(ids[i], ids[j]);
	T_EQ_INT(bad, 0, "ids: 2000 new ids are valid");
	T_EQ_INT(dup, 0, "ids: and distinct");
	{
		/* the id of an idempotency key, as docs/wire-format.md computes it */
		char k[AU_ID_SIZE];

		T_OK(au_id_from_key(k, "default", "order-42") == 0 &&
		     !strcmp(k, "45bff0d8252e0aad0684bd990d063c49"),
		     "ids: a key's id is sha-256 of \"au key\\0<queue>\\0<key>\", 16 bytes (%s)", k);
		T_OK(au_id_from_key(k, "other", "order-42") == 0 &&
		     !strcmp(k, "6de923668315aeb8891579f350c4a0fe"), "ids: the same key on another queue is another id");
	}
	{
		/* the first 12 digits are the clock, so ids sort by when they were made */
		uint64_t before = au_now_ms(), after, ms = 0;
		char id[AU_ID_SIZE];
		int sorted = 1;

		au_id_new(id);
		after = au_now_ms();
		sscanf(id, "%12" SCNx64, &ms);
		T_OK(ms >= before && ms <= after, "ids: begin with the unix milliseconds they were made at");
		for (i = 1; i < N; i++)
			sorted &= memcmp(ids[i - 1], ids[i], 12) <= 0;
		T_OK(sorted, "ids: made one after another, their clocks never go down");
	}
	T_OK(!au_id_valid("0123456789abcdef0123456789abcdeg") &&
	     !au_id_valid("0123456789ABCDEF0123456789abcdef") &&
	     !au_id_valid("0123456789abcdef0123456789abcde") &&
	     au_id_valid("0123456789abcdef0123456789abcdef"), "ids: only 32 lowercase hex digits");
	if (pipe(fds) < 0 || (pid = fork()) < 0) {
		T_OK(0, "ids: fork");
		return;
	}
	if (pid == 0) {
		au_id_new(mine);
		_exit(write(fds[1], mine, AU_ID_SIZE) == AU_ID_SIZE ? 0 : 1);
	}
	au_id_new(mine);
	T_OK(read(fds[0], theirs, AU_ID_SIZE) == AU_ID_SIZE && waitpid(pid, &st, 0) == pid,
	     "ids: the child made one");
	T_OK(strcmp(mine, theirs) != 0, "ids: a forked child's next id is not its parent's");
	close(fds[0]);
	close(fds[1]);
}

/* The history's JSON after appending note to prior (msgpack, may be NULL). */
static char *history_json(const unsigned char *prior, size_t len, const struct au_attempt_note *n)
{
	struct au_buf b = AU_BUF_INIT;
	char *json = NULL;

	if (au_history_append(prior, len, n, &b, NULL) == 0)
		json = au_msgpack_to_json(b.data, b.len, NULL);
	au_buf_release(&b);
	return json;
}

static void test_history(void)
{
	struct au_attempt_note n = { 1, "h:1:0000abcd", 1000, 1250, "retrying",
				     "clickhouse error 60 at 'x': table t doesn't exist", 60 };
	struct au_buf b = AU_BUF_INIT, b2 = AU_BUF_INIT, rb = AU_BUF_INIT;
	struct au_record in, out;
	struct au_err err;
	char *json, big[3000];
	size_t count = 0;
	const char *p;

	T_OK(au_history_append(NULL, 0, &n, &b, NULL) == 0, "history: a first entry");
	json = au_msgpack_to_json(b.data, b.len, NULL);
	T_EQ_STR(json, "[{\"attempt\":1,\"worker\":\"h:1:0000abcd\",\"started_at\":1000,"
		 "\"finished_at\":1250,\"outcome\":\"retrying\",\"error\":\"clickhouse error 60 at "
		 "'x': table t doesn't exist\",\"ch_code\":60}]", "history: one entry, every key");
	free(json);

	/* attempt 2 was lost (its lease ran out), attempt 3 completes */
	n = (struct au_attempt_note){ 3, "h:2:0000beef", 5000, 5001, "completed", NULL, 0 };
	json = history_json(b.data, b.len, &n);
	T_OK(json && strstr(json, "[{\"attempt\":1,") == json &&
	     strstr(json, "},{\"attempt\":2,\"outcome\":\"lost\",\"error\":\"the lease ran out") &&
	     strstr(json, "},{\"attempt\":3,\"worker\":\"h:2:0000beef\",\"started_at\":5000,"
		    "\"finished_at\":5001,\"outcome\":\"completed\"}]"),
	     "history: an attempt that counted without an entry is entered as lost: %s", json);
	free(json);

	/* what the queue gave back is unreadable: dropped, the rest still told */
	n.attempt = 2;
	json = history_json((const unsigned char *)"\x91\xc1", 2, &n);
	T_OK(json && strstr(json, "[{\"attempt\":1,\"outcome\":\"lost\"") == json &&
	     strstr(json, "{\"attempt\":2,") != NULL, "history: an unreadable one is dropped: %s",
	     json);
	free(json);
	json = history_json((const unsigned char *)"\x81\xa1" "a\x01", 4, &n);
	T_OK(json && strstr(json, "[{\"attempt\":1,\"outcome\":\"lost\"") == json,
	     "history: a map instead of an array is dropped too");
	free(json);

	/* the last 32 entries; an error's first 1024 bytes */
	memset(big, 'e', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	n = (struct au_attempt_note){ 40, NULL, 0, 0, "failed", big, 0 };
	json = history_json(b.data, b.len, &n);
	for (p = json; p && (p = strstr(p, "{\"attempt\":")); p++)
		count++;
	T_EQ_INT(count, 32, "history: 32 entries kept of 40 attempts");
	T_OK(json && strstr(json, "[{\"attempt\":9,") == json && strstr(json, "{\"attempt\":40,"),
	     "history: the last ones, 9 to 40");
	T_OK(json && strstr(json, "\"error\":\"eeee") && !strstr(json, big) &&
	     strlen(strstr(json, "\"error\":\"eeee")) == strlen("\"error\":\"") + 1024 + 3,
	     "history: the error cut to 1024 bytes");
	free(json);
	T_OK(au_history_append(b.data, b.len, &n, &b2, NULL) == 0, "history: appended again");

	/* the record carries it as it is */
	au_record_init(&in);
	au_id_new(in.id);
	in.status = AU_FAILED;
	in.history = b2.data;
	in.history_len = b2.len;
	T_OK(au_record_encode(&in, &rb, &err) == 0 && au_record_decode(rb.data, rb.len, &out, &err) == 0,
	     "history: a record with one encodes and decodes");
	T_OK(out.history_len == b2.len && !memcmp(out.history, b2.data, b2.len),
	     "history: the record's is the same bytes");
	au_record_release(&out);
	au_buf_reset(&rb);
	in.history = (unsigned char *)"\xdc\xff";
	in.history_len = 2;
	T_OK(au_record_encode(&in, &rb, &err) < 0, "history: a malformed one is refused on encode");
	au_buf_release(&rb);
	au_buf_release(&b);
	au_buf_release(&b2);
}

/* bin32 of n - 5 bytes: one msgpack value of exactly n bytes (n >= 5). */
static unsigned char *bin_of(size_t n)
{
	unsigned char *p = calloc(1, n);
	size_t body = n - 5;

	if (!p)
		abort();
	p[0] = 0xc6;
	p[1] = (unsigned char)(body >> 24);
	p[2] = (unsigned char)(body >> 16);
	p[3] = (unsigned char)(body >> 8);
	p[4] = (unsigned char)body;
	return p;
}

/* Encodes c, whose args the caller set; 0/-1. */
static int encode(struct au_computation *c, struct au_buf *b, struct au_err *err)
{
	au_buf_reset(b);
	return au_computation_encode(c, b, err);
}

/*
 * Every limit of docs/wire-format.md at its edge and one past it, for the
 * encoder, the decoder and au_enqueue: the size of a computation and of a
 * record, the nesting of args and result, the header count and the size of
 * header keys and values. Over a limit is an error that names it, and
 * nothing is written or cut short.
 */
static void test_limits(void)
{
	struct au_computation c, out;
	struct au_record r, rout;
	struct au_header h[AU_MAX_HEADERS + 1];
	struct au_buf b = AU_BUF_INIT;
	struct au_err err = { 0 };
	char key[AU_MAX_KEY + 2], name[AU_MAX_HEADERS + 1][8], want[200];
	unsigned char *big;
	size_t overhead, i;

	/* a computation of exactly AU_MAX_MESSAGE bytes, then one more */
	au_computation_init(&c);
	memcpy(c.id, ID, sizeof(ID));
	c.task = (char *)"t";
	c.max_attempts = 1;
	big = bin_of(5);
	c.args = big;
	c.args_len = 5;
	T_OK(encode(&c, &b, &err) == 0, "a computation with empty args encodes");
	overhead = b.len - 5;
	free(big);
	big = bin_of(AU_MAX_MESSAGE - overhead);
	c.args = big;
	c.args_len = AU_MAX_MESSAGE - overhead;
	T_OK(encode(&c, &b, &err) == 0 && b.len == AU_MAX_MESSAGE,
	     "a computation of exactly %u bytes encodes: %s", AU_MAX_MESSAGE, err.str);
	T_OK(au_computation_decode(b.data, b.len, &out, &err) == 0 &&
	     out.args_len == c.args_len && !memcmp(out.args, big, c.args_len),
	     "and decodes, its args whole: %s", err.str);
	au_computation_release(&out);
	free(big);
	big = bin_of(AU_MAX_MESSAGE - overhead + 1);
	c.args = big;
	c.args_len = AU_MAX_MESSAGE - overhead + 1;
	au_buf_reset(&b);
	au_buf_append(&b, "x", 1);
	T_OK(au_computation_encode(&c, &b, &err) == -1 && err.code == AU_ETOOBIG && b.len == 1,
	     "one byte more is refused, nothing appended");
	snprintf(want, sizeof(want), "computation too large: %u bytes (limit %u)",
		 AU_MAX_MESSAGE + 1, AU_MAX_MESSAGE);
	T_EQ_STR(err.str, want, "the message names the size and the limit");
	free(big);
	big = bin_of(AU_MAX_MESSAGE + 1);
	T_OK(au_computation_decode(big, AU_MAX_MESSAGE + 1, &out, &err) == -1 &&
	     err.code == AU_ETOOBIG, "a message one byte over is not decoded");
	T_EQ_STR(err.str, want, "decode: the same message");
	free(big);

	/* args nest 31 levels below the map, not 32 */
	au_buf_reset(&b);
	nested(&b, AU_MAX_DEPTH - 1);
	big = malloc(b.len);
	memcpy(big, b.data, b.len);
	c.args = big;
	c.args_len = b.len;
	T_OK(encode(&c, &b, &err) == 0, "args 31 levels deep encode: %s", err.str);
	T_OK(au_computation_decode(b.data, b.len, &out, &err) == 0, "and decode: %s", err.str);
	au_computation_release(&out);
	free(big);
	au_buf_reset(&b);
	nested(&b, AU_MAX_DEPTH);
	big = malloc(b.len);
	memcpy(big, b.data, b.len);
	c.args = big;
	c.args_len = b.len;
	T_OK(encode(&c, &b, &err) == -1 && err.code == AU_EINVAL, "args 32 levels deep are refused");
	T_EQ_STR(err.str, "invalid computation: nesting deeper than 31", "message");
	free(big);
	c.args = NULL;
	c.args_len = 0;

	/* headers: 32 of them, keys and values of 1024 bytes; one more of each */
	memset(key, 'k', sizeof(key));
	key[AU_MAX_KEY] = '\0';
	for (i = 0; i < AU_MAX_HEADERS + 1; i++) {
		snprintf(name[i], sizeof(name[i]), "h%zu", i);
		h[i].key = name[i];
		h[i].value = (char *)"v";
	}
	h[0].key = key;
	h[1].value = key;
	c.headers = h;
	c.nheaders = AU_MAX_HEADERS;
	T_OK(encode(&c, &b, &err) == 0, "32 headers, a 1024-byte key and value encode: %s", err.str);
	T_OK(au_computation_decode(b.data, b.len, &out, &err) == 0 && out.nheaders == AU_MAX_HEADERS &&
	     !strcmp(out.headers[0].key, key) && !strcmp(out.headers[1].value, key),
	     "and decode whole: %s", err.str);
	au_computation_release(&out);
	c.nheaders = AU_MAX_HEADERS + 1;
	T_OK(encode(&c, &b, &err) == -1 && b.len == 0, "33 headers are refused");
	T_EQ_STR(err.str, "invalid computation: 'headers' may hold at most 32 entries", "message");
	c.nheaders = 1;
	key[AU_MAX_KEY] = 'k';
	key[AU_MAX_KEY + 1] = '\0';
	T_OK(encode(&c, &b, &err) == -1 && b.len == 0, "a 1025-byte header key is refused");
	T_EQ_STR(err.str, "invalid computation: a header key must be 1 to 1024 bytes long", "message");
	h[0].key = name[0];
	c.nheaders = 2;
	T_OK(encode(&c, &b, &err) == -1, "a 1025-byte header value is refused");
	T_EQ_STR(err.str, "invalid computation: a header value must be 0 to 1024 bytes long", "message");
	h[1].value = (char *)"v";
	h[0].key = (char *)"";
	T_OK(encode(&c, &b, &err) == -1, "an empty header key is refused");
	T_EQ_STR(err.str, "invalid computation: a header key must be 1 to 1024 bytes long", "message");
	/* the decoder: a 1025-byte key (a 33rd header is in test_computation_errors) */
	au_buf_reset(&b);
	base(&b, 1);
	au_mp_str(&b, "headers", 7);
	au_mp_map(&b, 1);
	au_mp_str(&b, key, AU_MAX_KEY + 1);
	au_mp_str(&b, "v", 1);
	T_OK(au_computation_decode(b.data, b.len, &out, &err) == -1 && err.code == AU_EPROTO,
	     "decode: a 1025-byte header key is refused");
	T_EQ_STR(err.str, "malformed computation: a header key must be 1 to 1024 bytes long", "message");
	au_buf_reset(&b);
	base(&b, 1);
	au_mp_str(&b, "headers", 7);
	au_mp_map(&b, AU_MAX_HEADERS);
	for (i = 0; i < AU_MAX_HEADERS; i++) {
		au_mp_str(&b, name[i], strlen(name[i]));
		au_mp_str(&b, key, i ? 1 : AU_MAX_KEY);
	}
	T_OK(au_computation_decode(b.data, b.len, &out, &err) == 0 && out.nheaders == AU_MAX_HEADERS,
	     "decode: 32 headers, a 1024-byte value: %s", err.str);
	au_computation_release(&out);

	/* a record of exactly AU_MAX_RESULT bytes, then one more */
	au_record_init(&r);
	memcpy(r.id, ID, sizeof(ID));
	r.status = AU_COMPLETED;
	big = bin_of(5);
	r.result = big;
	r.result_len = 5;
	au_buf_reset(&b);
	T_OK(au_record_encode(&r, &b, &err) == 0, "a record with an empty result encodes");
	overhead = b.len - 5;
	free(big);
	big = bin_of(AU_MAX_RESULT - overhead);
	r.result = big;
	r.result_len = AU_MAX_RESULT - overhead;
	au_buf_reset(&b);
	T_OK(au_record_encode(&r, &b, &err) == 0 && b.len == AU_MAX_RESULT,
	     "a record of exactly %u bytes encodes: %s", AU_MAX_RESULT, err.str);
	T_OK(au_record_decode(b.data, b.len, &rout, &err) == 0 && rout.result_len == r.result_len &&
	     !memcmp(rout.result, big, r.result_len), "and decodes, its result whole: %s", err.str);
	au_record_release(&rout);
	free(big);
	big = bin_of(AU_MAX_RESULT - overhead + 1);
	r.result = big;
	r.result_len = AU_MAX_RESULT - overhead + 1;
	au_buf_reset(&b);
	T_OK(au_record_encode(&r, &b, &err) == -1 && err.code == AU_ETOOBIG && b.len == 0,
	     "one byte more is refused, nothing written");
	snprintf(want, sizeof(want), "record too large: %u bytes (limit %u)", AU_MAX_RESULT + 1,
		 AU_MAX_RESULT);
	T_EQ_STR(err.str, want, "the message names the size and the limit");
	free(big);
	big = bin_of(AU_MAX_RESULT + 1);
	T_OK(au_record_decode(big, AU_MAX_RESULT + 1, &rout, &err) == -1 && err.code == AU_ETOOBIG,
	     "a record one byte over is not decoded");
	T_EQ_STR(err.str, want, "decode: the same message");
	free(big);
	/* a result nests 31 levels below the map; a history as deep as a result */
	au_buf_reset(&b);
	nested(&b, AU_MAX_DEPTH);
	r.result = b.data;
	r.result_len = b.len;
	{
		struct au_buf rb = AU_BUF_INIT;

		T_OK(au_record_encode(&r, &rb, &err) == -1 && err.code == AU_EINVAL,
		     "a result 32 levels deep is refused");
		T_EQ_STR(err.str, "invalid record: nesting deeper than 31", "message");
		r.result = NULL;
		r.result_len = 0;
		au_buf_reset(&b);
		au_mp_array(&b, 1);
		au_mp_map(&b, 2);
		au_mp_str(&b, "attempt", 7);
		au_mp_uint(&b, 1);
		au_mp_str(&b, "later", 5);
		nested(&b, AU_MAX_DEPTH - 3);
		r.history = b.data;
		r.history_len = b.len;
		T_OK(au_record_encode(&r, &rb, &err) == 0 &&
		     au_record_decode(rb.data, rb.len, &rout, &err) == 0 &&
		     rout.history_len == b.len && !memcmp(rout.history, b.data, b.len),
		     "a history entry with a key nested 31 levels round-trips: %s", err.str);
		au_record_release(&rout);
		au_buf_release(&rb);
	}

	/* au_enqueue: the same limits before anything reaches the queue */
	{
		struct au_config cfg = { "memory://limits", "memory://limits", NULL };
		struct au_enqueue_opts o = { 0 };
		struct au_client *cl = au_client_new(&cfg);
		struct au_handle *hd = NULL;
		static const unsigned char nil[] = { 0xc0 };

		T_OK(cl && !au_client_err(cl)->code, "a client on memory://");
		big = bin_of(AU_MAX_MESSAGE);
		T_OK(au_enqueue(cl, "t", big, AU_MAX_MESSAGE, NULL, &hd) == -1 && !hd &&
		     au_client_err(cl)->code == AU_ETOOBIG, "au_enqueue refuses 1 MiB of args");
		T_OK(has(au_client_err(cl)->str, "computation too large: ") &&
		     has(au_client_err(cl)->str, " bytes (limit 1048576)"), "naming the limit: %s",
		     au_client_err(cl)->str);
		free(big);
		au_buf_reset(&b);
		nested(&b, AU_MAX_DEPTH);
		T_OK(au_enqueue(cl, "t", b.data, b.len, NULL, &hd) == -1 && !hd,
		     "au_enqueue refuses args 32 levels deep");
		T_EQ_STR(au_client_err(cl)->str, "invalid computation: nesting deeper than 31", "message");
		o.headers = h;
		o.nheaders = AU_MAX_HEADERS + 1;
		h[0].key = name[0];
		T_OK(au_enqueue(cl, "t", nil, 1, &o, &hd) == -1 && !hd,
		     "au_enqueue refuses 33 headers");
		T_EQ_STR(au_client_err(cl)->str, "too many headers: 33 (limit 32)", "message");
		o.nheaders = 1;
		h[0].key = key;
		T_OK(au_enqueue(cl, "t", nil, 1, &o, &hd) == -1 && !hd,
		     "au_enqueue refuses a 1025-byte header key");
		T_OK(has(au_client_err(cl)->str, "1 to 1024 bytes"), "message: %s", au_client_err(cl)->str);
		o.nheaders = 0;
		T_OK(au_enqueue(cl, "t", nil, 1, &o, &hd) == 0 && hd, "and takes one within the limits");
		au_handle_free(hd);
		au_client_free(cl);
	}
	au_buf_release(&b);
}

int main(void)
{
	test_ids();
	test_utf8_scrub();
	test_computation_roundtrip();
	test_computation_defaults();
	test_computation_errors();
	test_computation_encode_errors();
	test_hostile();
	test_truncation();
	test_record();
	test_history();
	test_limits();
	test_mp_helpers();
	test_json();
	test_fuzz();
	return t_done();
}
