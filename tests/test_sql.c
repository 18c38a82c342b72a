/* test_sql.c - parameter binding, quoting, limits and the request builders
 * of the ClickHouse tasks; no server needed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "clickhouse.h"
#include "harness.h"
#include "tasks.h"

/* Binds sql with params given as JSON text; returns the result or the
 * error message (static buffer), and the error code in *code. */
static const char *bind(const char *sql, const char *params, int *code)
{
	static char out[4096];
	struct au_err err = { 0, "" };
	json_t *p = params ? json_loads(params, JSON_ALLOW_NUL, NULL) : NULL;
	char *s;

	if (params && !p) {
		fprintf(stderr, "bad test json: %s\n", params);
		abort();
	}
	s = au_sql_bind(sql, p, &err);
	json_decref(p);
	*code = err.code;
	snprintf(out, sizeof(out), "%s", s ? s : err.str);
	free(s);
	return out;
}

#define BIND_OK(sql, params, want) do { \
	int code_; \
	const char *got_ = bind(sql, params, &code_); \
	T_EQ_STR(got_, want, "bind " sql); \
	T_EQ_INT(code_, AU_OK, "bind ok " sql); \
} while (0)

#define BIND_ERR(sql, params, want_code, want_msg) do { \
	int code_; \
	const char *got_ = bind(sql, params, &code_); \
	T_EQ_STR(got_, want_msg, "bind error " sql); \
	T_EQ_INT(code_, want_code, "bind code " sql); \
} while (0)

static void test_integers(void)
{
	BIND_OK("SELECT {id:UInt64}", "{\"id\": 42}", "SELECT 42");
	BIND_OK("SELECT {a:Int8}, {b:Int8}", "{\"a\": -128, \"b\": 127}", "SELECT -128, 127");
	BIND_ERR("SELECT {n:Int8}", "{\"n\": 128}", AU_EINVAL,
		 "parameter 'n': 128 is out of range for Int8");
	BIND_ERR("SELECT {n:UInt8}", "{\"n\": -1}", AU_EINVAL,
		 "parameter 'n': -1 is out of range for UInt8");
	BIND_ERR("SELECT {n:UInt16}", "{\"n\": 65536}", AU_EINVAL,
		 "parameter 'n': 65536 is out of range for UInt16");
	BIND_OK("SELECT {n:UInt32}", "{\"n\": 4294967295}", "SELECT 4294967295");
	BIND_ERR("SELECT {n:Int32}", "{\"n\": 2147483648}", AU_EINVAL,
		 "parameter 'n': 2147483648 is out of range for Int32");
	BIND_OK("SELECT {n:UInt64}", "{\"n\": \"18446744073709551615\"}",
		"SELECT 18446744073709551615");
	BIND_ERR("SELECT {n:UInt64}", "{\"n\": \"18446744073709551616\"}", AU_EINVAL,
		 "parameter 'n': 18446744073709551616 is out of range for UInt64");
	BIND_ERR("SELECT {n:UInt64}", "{\"n\": \"-1\"}", AU_EINVAL,
		 "parameter 'n': -1 is out of range for UInt64");
	BIND_OK("SELECT {n:Int64}", "{\"n\": \"-9223372036854775808\"}",
		"SELECT -9223372036854775808");
	BIND_OK("SELECT {n:Int64}", "{\"n\": \"007\"}", "SELECT 7");
	BIND_ERR("SELECT {n:Int64}", "{\"n\": \"9223372036854775808\"}", AU_EINVAL,
		 "parameter 'n': 9223372036854775808 is out of range for Int64");
	BIND_ERR("SELECT {n:Int64}", "{\"n\": \"12 OR 1=1\"}", AU_EINVAL,
		 "parameter 'n': '12 OR 1=1' is not a decimal integer");
	BIND_ERR("SELECT {n:Int64}", "{\"n\": \"\"}", AU_EINVAL,
		 "parameter 'n': '' is not a decimal integer");
	BIND_ERR("SELECT {id:UInt64}", "{\"id\": \"x\"}", AU_EINVAL,
		 "parameter 'id': 'x' is not a decimal integer");
	BIND_ERR("SELECT {id:UInt32}", "{\"id\": \"5\"}", AU_EINVAL,
		 "parameter 'id': expected UInt32, got string");
	BIND_ERR("SELECT {id:UInt64}", "{\"id\": 1.5}", AU_EINVAL,
		 "parameter 'id': expected UInt64, got real");
	BIND_ERR("SELECT {id:UInt64}", "{\"id\": true}", AU_EINVAL,
		 "parameter 'id': expected UInt64, got boolean");
	/* "1-{x}" must not turn into the comment "1--5" */
	BIND_OK("SELECT 1-{x:Int32}", "{\"x\": -5}", "SELECT 1- -5");
}

static void test_floats_bools(void)
{
	BIND_OK("SELECT {f:Float64}", "{\"f\": 0.1}", "SELECT 0.1");
	BIND_OK("SELECT {f:Float64}", "{\"f\": 3}", "SELECT 3");
	BIND_OK("SELECT {f:Float64}", "{\"f\": -1.5e300}", "SELECT -1.5e+300");
	BIND_OK("SELECT {f:Float32}", "{\"f\": 0.1}", "SELECT 0.1");
	BIND_ERR("SELECT {f:Float32}", "{\"f\": 1e39}", AU_EINVAL,
		 "parameter 'f': 1e+39 is out of range for Float32");
	BIND_ERR("SELECT {f:Float64}", "{\"f\": \"nan\"}", AU_EINVAL,
		 "parameter 'f': expected Float64, got string");
	BIND_OK("SELECT {a:Bool}, {b:Bool}", "{\"a\": true, \"b\": false}", "SELECT 1, 0");
	BIND_ERR("SELECT {a:Bool}", "{\"a\": 1}", AU_EINVAL,
		 "parameter 'a': expected Bool, got integer");
}

static void test_strings(void)
{
	BIND_OK("SELECT {s:String}", "{\"s\": \"plain\"}", "SELECT 'plain'");
	/* injection attempts stay inside the literal */
	BIND_OK("SELECT {s:String}", "{\"s\": \"'; DROP TABLE t; --\"}",
		"SELECT '\\'; DROP TABLE t; --'");
	BIND_OK("SELECT {s:String}", "{\"s\": \"a\\\\' OR 1=1 --\"}",
		"SELECT 'a\\\\\\' OR 1=1 --'");
	BIND_OK("SELECT {s:String}", "{\"s\": \"x''y\"}", "SELECT 'x\\'\\'y'");
	BIND_OK("SELECT {s:String}", "{\"s\": \"l1\\nl2\\t\\r\\u0001\\u007f\\u0000z\"}",
		"SELECT 'l1\\nl2\\t\\r\\x01\\x7F\\0z'");
	BIND_OK("SELECT {s:String}", "{\"s\": \"h\\u00e9 {x:UInt8}\"}",
		"SELECT 'h\xc3\xa9 {x:UInt8}'");
	BIND_ERR("SELECT {s:String}", "{\"s\": 5}", AU_EINVAL,
		 "parameter 's': expected String, got integer");
	BIND_OK("SELECT {s:FixedString(3)}", "{\"s\": \"abc\"}", "SELECT 'abc'");
	BIND_ERR("SELECT {s:FixedString(3)}", "{\"s\": \"abcd\"}", AU_EINVAL,
		 "parameter 's': 4 bytes do not fit in FixedString(3)");
	BIND_ERR("SELECT {s:FixedString(x)}", "{\"s\": \"a\"}", AU_EINVAL,
		 "parameter 's': bad type 'FixedString(x)'");

	BIND_OK("SELECT {d:Date}", "{\"d\": \"2024-02-29\"}", "SELECT toDate('2024-02-29')");
	BIND_ERR("SELECT {d:Date}", "{\"d\": \"2023-02-29\"}", AU_EINVAL,
		 "parameter 'd': '2023-02-29' is not a valid Date");
	BIND_ERR("SELECT {d:Date}", "{\"d\": \"1900-02-28\"}", AU_EINVAL,
		 "parameter 'd': '1900-02-28' is not a valid Date");
	BIND_ERR("SELECT {d:Date}", "{\"d\": \"2024-1-01\"}", AU_EINVAL,
		 "parameter 'd': '2024-1-01' is not a valid Date");
	BIND_ERR("SELECT {d:Date}", "{\"d\": \"2024-01-01') OR (1\"}", AU_EINVAL,
		 "parameter 'd': '2024-01-01') OR (1' is not a valid Date");
	BIND_OK("SELECT {t:DateTime}", "{\"t\": \"2000-02-29 23:59:59\"}",
		"SELECT toDateTime('2000-02-29 23:59:59')");
	BIND_ERR("SELECT {t:DateTime}", "{\"t\": \"2000-01-01 24:00:00\"}", AU_EINVAL,
		 "parameter 't': '2000-01-01 24:00:00' is not a valid DateTime");
	BIND_ERR("SELECT {t:DateTime}", "{\"t\": \"2000-01-01\"}", AU_EINVAL,
		 "parameter 't': '2000-01-01' is not a valid DateTime");
	BIND_OK("SELECT {u:UUID}", "{\"u\": \"61f0c404-5cb3-11e7-907b-a6006ad3dba0\"}",
		"SELECT toUUID('61f0c404-5cb3-11e7-907b-a6006ad3dba0')");
	BIND_ERR("SELECT {u:UUID}", "{\"u\": \"61f0c404-5cb3-11e7-907b-a6006ad3dbaz\"}", AU_EINVAL,
		 "parameter 'u': '61f0c404-5cb3-11e7-907b-a6006ad3dbaz' is not a valid UUID");
}

static void test_compound(void)
{
	BIND_OK("SELECT {n:Nullable(String)}", "{\"n\": null}", "SELECT NULL");
	BIND_OK("SELECT {n:Nullable(UInt8)}", "{\"n\": 7}", "SELECT 7");
	BIND_ERR("SELECT {n:String}", "{\"n\": null}", AU_EINVAL,
		 "parameter 'n': expected String, got null");
	BIND_OK("SELECT {a:Array(UInt8)}", "{\"a\": [1, 2, 3]}", "SELECT [1, 2, 3]");
	BIND_OK("SELECT {a:Array(UInt8)}", "{\"a\": []}", "SELECT []");
	BIND_OK("SELECT {a:Array(String)}", "{\"a\": [\"x'\", \"y\"]}", "SELECT ['x\\'', 'y']");
	BIND_OK("SELECT {a:Array(Array(Int8))}", "{\"a\": [[1], [-2, 3]]}", "SELECT [[1], [-2, 3]]");
	BIND_OK("SELECT {a:Array(Nullable(Int8))}", "{\"a\": [1, null]}", "SELECT [1, NULL]");
	BIND_OK("SELECT {a: Array( Date ) }", "{\"a\": [\"2024-01-02\"]}",
		"SELECT [toDate('2024-01-02')]");
	BIND_ERR("SELECT {a:Array(UInt8)}", "{\"a\": [1, 256]}", AU_EINVAL,
		 "parameter 'a': 256 is out of range for UInt8");
	BIND_ERR("SELECT {a:Array(UInt8)}", "{\"a\": 1}", AU_EINVAL,
		 "parameter 'a': expected Array(UInt8), got integer");

	BIND_OK("SELECT * FROM {t:Identifier}", "{\"t\": \"events\"}", "SELECT * FROM `events`");
	BIND_OK("SELECT * FROM {t:Identifier}", "{\"t\": \"db.events_2\"}",
		"SELECT * FROM `db`.`events_2`");
	BIND_ERR("SELECT * FROM {t:Identifier}", "{\"t\": \"t; DROP TABLE x\"}", AU_EINVAL,
		 "parameter 't': 't; DROP TABLE x' is not a valid identifier");
	BIND_ERR("SELECT * FROM {t:Identifier}", "{\"t\": \"a`b\"}", AU_EINVAL,
		 "parameter 't': 'a`b' is not a valid identifier");
	BIND_ERR("SELECT * FROM {t:Identifier}", "{\"t\": \"ok\\u0000; DROP\"}", AU_EINVAL,
		 "parameter 't': 'ok' is not a valid identifier");
}

static void test_placeholders(void)
{
	/* placeholders inside literals, quoted identifiers and comments stay */
	BIND_OK("SELECT '{x:UInt8}', 'it\\'s {x:UInt8}', 'it''s {x:UInt8}', `{x:UInt8}`, "
		"\"{x:UInt8}\" -- {x:UInt8}\n/* {x:UInt8} */ {x:UInt8}",
		"{\"x\": 5}",
		"SELECT '{x:UInt8}', 'it\\'s {x:UInt8}', 'it''s {x:UInt8}', `{x:UInt8}`, "
		"\"{x:UInt8}\" -- {x:UInt8}\n/* {x:UInt8} */ 5");
	BIND_OK("SELECT {x:UInt8} + {x:UInt8}", "{\"x\": 2, \"unused\": \"fine\"}", "SELECT 2 + 2");
	BIND_OK("SELECT { x : UInt8 }", "{\"x\": 1}", "SELECT 1");
	BIND_OK("SELECT 1", NULL, "SELECT 1");
	BIND_ERR("SELECT {y:UInt8}", "{\"x\": 1}", AU_EINVAL, "parameter 'y' is missing");
	BIND_ERR("SELECT {y:UInt8}", NULL, AU_EINVAL, "parameter 'y' is missing");
	BIND_ERR("SELECT {x:Foo}", "{\"x\": 1}", AU_EINVAL, "parameter 'x': unknown type 'Foo'");
	BIND_ERR("SELECT {x:}", "{\"x\": 1}", AU_EINVAL, "parameter 'x': unknown type ''");
	BIND_ERR("SELECT {x}", "{\"x\": 1}", AU_EINVAL, "malformed placeholder '{x}'");
	BIND_ERR("SELECT {1x:UInt8}", "{\"x\": 1}", AU_EINVAL, "malformed placeholder '{1x:UInt8}'");
	BIND_ERR("SELECT {x:UInt8", "{\"x\": 1}", AU_EINVAL, "malformed placeholder '{x:UInt8'");
	BIND_ERR("SELECT 1", "[1]", AU_EINVAL, "params must be an object");
}

/* "1+1+...+1" with n terms. */
static char *sum_expr(size_t n)
{
	char *s = malloc(8 + 2 * n);
	size_t len = 0;

	len += (size_t)sprintf(s, "SELECT 1");
	for (size_t i = 1; i < n; i++)
		len += (size_t)sprintf(s + len, "+1");
	return s;
}

static void test_limits(void)
{
	struct au_err err = { 0, "" };
	struct au_buf b = AU_BUF_INIT;
	char *s;
	json_t *p;

	/* the expression that crashes an 18.16 server is refused here */
	s = sum_expr(60000);
	T_OK(strlen(s) < AU_SQL_MAX_BYTES, "60000 terms fit the size limit");
	T_OK(au_sql_check(s, strlen(s), &err) < 0, "60000-term sum refused");
	T_EQ_INT(err.code, AU_EINVAL, "60000-term sum: EINVAL");
	T_EQ_STR(err.str, "sql too deeply nested (more than 2000 operators)", "60000-term message");
	T_OK(au_sql_bind(s, NULL, &err) == NULL && err.code == AU_EINVAL, "bind refuses it too");
	free(s);
	s = sum_expr(AU_SQL_MAX_OPERATORS + 1);
	T_OK(au_sql_check(s, strlen(s), &err) == 0, "2000 operators accepted");
	free(s);
	s = sum_expr(AU_SQL_MAX_OPERATORS + 2);
	T_OK(au_sql_check(s, strlen(s), &err) < 0, "2001 operators refused");
	free(s);

	/* AND / OR are operators; words that contain them are not */
	for (int i = 0; i <= AU_SQL_MAX_OPERATORS; i++)
		au_buf_puts(&b, i ? " AND x" : "SELECT x");
	T_OK(au_sql_check((char *)b.data, b.len, &err) == 0, "2000 ANDs accepted");
	au_buf_puts(&b, " or x");
	T_OK(au_sql_check((char *)b.data, b.len, &err) < 0, "2001 AND/OR refused");
	au_buf_reset(&b);
	for (int i = 0; i < 3000; i++)
		au_buf_puts(&b, i ? ", android, oracle, 1e-5, 2E+3" : "SELECT android");
	T_OK(au_sql_check((char *)b.data, b.len, &err) == 0,
	     "words containing and/or and exponents are not operators");
	au_buf_reset(&b);

	/* operators in literals and comments do not count */
	au_buf_puts(&b, "SELECT '");
	for (int i = 0; i < 5000; i++)
		au_buf_puts(&b, "+(");
	au_buf_puts(&b, "' /* ");
	for (int i = 0; i < 5000; i++)
		au_buf_puts(&b, "-[");
	au_buf_puts(&b, " */");
	T_OK(au_sql_check((char *)b.data, b.len, &err) == 0, "literals and comments not counted");
	au_buf_reset(&b);

	/* nesting of ( and [ */
	au_buf_puts(&b, "SELECT ");
	for (int i = 0; i < AU_SQL_MAX_DEPTH; i++)
		au_buf_puts(&b, i % 2 ? "[" : "(");
	T_OK(au_sql_check((char *)b.data, b.len, &err) == 0, "64 levels accepted");
	au_buf_puts(&b, "(");
	T_OK(au_sql_check((char *)b.data, b.len, &err) < 0, "65 levels refused");
	T_EQ_STR(err.str, "sql too deeply nested (more than 64 levels of brackets)", "depth message");
	au_buf_reset(&b);
	au_buf_puts(&b, "SELECT ");
	for (int i = 0; i < 1000; i++)
		au_buf_puts(&b, "(1)");
	T_OK(au_sql_check((char *)b.data, b.len, &err) == 0, "closed brackets do not add up");
	au_buf_release(&b);

	/* size */
	s = malloc(AU_SQL_MAX_BYTES + 16);
	memset(s, ' ', AU_SQL_MAX_BYTES + 15);
	memcpy(s, "SELECT '", 8);
	s[AU_SQL_MAX_BYTES + 14] = '\'';
	s[AU_SQL_MAX_BYTES + 15] = '\0';
	T_OK(au_sql_check(s, strlen(s), &err) < 0 && err.code == AU_ETOOBIG, "over 256 KiB: ETOOBIG");
	T_OK(au_sql_bind(s, NULL, &err) == NULL && err.code == AU_ETOOBIG, "bind: ETOOBIG");
	free(s);
	/* a bound value can push the statement over the limit */
	s = malloc(200001);
	memset(s, 'x', 200000);
	s[200000] = '\0';
	p = json_pack("{s:s,s:s}", "a", s, "b", s);
	free(s);
	s = au_sql_bind("SELECT {a:String}", p, &err);
	T_OK(s != NULL, "200 KB value fits");
	free(s);
	T_OK(au_sql_bind("SELECT {a:String}, {b:String}", p, &err) == NULL &&
	     err.code == AU_ETOOBIG, "two of them do not");
	json_decref(p);
}

static void test_quote_identifier_token(void)
{
	struct au_buf b = AU_BUF_INIT;
	const char *sql = "SELECT /* c */ 'a b\\' c' -- x\n ,`q` FORMAT", *t, *end = sql + strlen(sql);
	const char *want[] = { "SELECT", "'a b\\' c'", ",", "`q`", "FORMAT" };
	size_t n, i = 0;

	au_sql_quote(&b, "a'b\\c\0d", 7);
	T_EQ_STR((char *)b.data, "'a\\'b\\\\c\\0d'", "au_sql_quote");
	au_buf_release(&b);

	T_OK(au_sql_identifier_valid("a"), "identifier a");
	T_OK(au_sql_identifier_valid("_a1.B_2"), "identifier _a1.B_2");
	T_OK(!au_sql_identifier_valid(""), "empty identifier");
	T_OK(!au_sql_identifier_valid(NULL), "NULL identifier");
	T_OK(!au_sql_identifier_valid("1a"), "identifier starting with a digit");
	T_OK(!au_sql_identifier_valid("a.b.c"), "three parts");
	T_OK(!au_sql_identifier_valid("a."), "trailing dot");
	T_OK(!au_sql_identifier_valid(".a"), "leading dot");
	T_OK(!au_sql_identifier_valid("a-b"), "dash");
	T_OK(!au_sql_identifier_valid("a b"), "space");

	for (const char *p = sql; (t = au_sql_token(p, end, &n)) != NULL; p = t + n, i++)
		if (i < AU_ARRAY_SIZE(want))
			T_OK(n == strlen(want[i]) && !strncmp(t, want[i], n), "token %zu is %s", i,
			     want[i]);
	T_EQ_INT(i, AU_ARRAY_SIZE(want), "token count");
	sql = " -- only /* a */ comment\n /* here */ ";
	T_OK(au_sql_token(sql, sql + strlen(sql), &n) == NULL, "no token in comments");
}

/* Builds a task request from JSON args; returns 0/-1 and fills sql/data. */
static int request(const char *task, const char *args_json, struct au_buf *sql,
		   struct au_buf *data, size_t *rows, struct au_err *err)
{
	unsigned char *args;
	size_t len;
	int rc;

	au_buf_reset(sql);
	au_buf_reset(data);
	if (au_json_to_msgpack(args_json, &args, &len, err) < 0)
		return -1;
	rc = au_ch_task_request(task, args, len, sql, data, rows, err);
	free(args);
	return rc;
}

#define REQ_ERR(task, args, msg) do { \
	T_OK(request(task, args, &sql, &data, &rows, &err) < 0, task " refuses " args); \
	T_EQ_STR(err.str, msg, task " message"); \
} while (0)

static void test_task_requests(void)
{
	struct au_buf sql = AU_BUF_INIT, data = AU_BUF_INIT, out = AU_BUF_INIT;
	struct au_err err = { 0, "" };
	size_t rows = 99;
	char *json;

	T_OK(request("ch.query", "{\"sql\": \"select {n:UInt8} AS x;\", \"params\": {\"n\": 1}}",
		     &sql, &data, &rows, &err) == 0, "ch.query request");
	T_EQ_STR((char *)sql.data, "select 1 AS x FORMAT JSONCompact", "ch.query sql, ';' dropped");
	T_EQ_INT(data.len, 0, "ch.query has no data");
	T_OK(request("ch.query", "{\"sql\": \"(SELECT 1) -- the end\"}", &sql, &data, &rows,
		     &err) == 0, "ch.query with a trailing comment");
	T_EQ_STR((char *)sql.data, "(SELECT 1) FORMAT JSONCompact", "comment dropped before FORMAT");
	T_OK(request("ch.query", "{\"sql\": \"WITH 1 AS format SELECT format\"}", &sql, &data,
		     &rows, &err) == 0, "a column named format is fine");
	T_OK(request("ch.query", "{\"sql\": \"DESCRIBE TABLE t\"}", &sql, &data, &rows, &err) == 0,
	     "DESCRIBE is a query");
	REQ_ERR("ch.query", "{\"sql\": \"SELECT 1 FORMAT TSV\"}",
		"ch.query: the sql must not have a FORMAT clause");
	REQ_ERR("ch.query", "{\"sql\": \"select 1 format JSON;\"}",
		"ch.query: the sql must not have a FORMAT clause");
	REQ_ERR("ch.query", "{\"sql\": \"DROP TABLE t\"}",
		"ch.query: only SELECT, WITH, SHOW, DESCRIBE and EXISTS statements return rows");
	REQ_ERR("ch.query", "{\"sql\": \"  -- nothing\"}",
		"ch.query: only SELECT, WITH, SHOW, DESCRIBE and EXISTS statements return rows");
	REQ_ERR("ch.query", "{\"sql\": 5}", "ch.query: 'sql' must be a string");
	REQ_ERR("ch.query", "{\"sql\": \"SELECT 1\", \"params\": [1]}",
		"ch.query: 'params' must be a map");
	REQ_ERR("ch.query", "[1]", "ch.query: the arguments must be a map");
	REQ_ERR("ch.query", "{\"sql\": \"SELECT {id:UInt64}\", \"params\": {\"id\": \"x1\"}}",
		"ch.query: parameter 'id': 'x1' is not a decimal integer");

	T_OK(request("ch.exec", "{\"sql\": \"DROP TABLE IF EXISTS {t:Identifier}\", "
		     "\"params\": {\"t\": \"db.x\"}}", &sql, &data, &rows, &err) == 0, "ch.exec request");
	T_EQ_STR((char *)sql.data, "DROP TABLE IF EXISTS `db`.`x`", "ch.exec sql");
	REQ_ERR("ch.exec", "{}", "ch.exec: 'sql' must be a string");

	T_OK(request("ch.insert", "{\"table\": \"ev\", \"rows\": [{\"a\": 1, \"s\": \"x\\\"y\"}, {}]}",
		     &sql, &data, &rows, &err) == 0, "ch.insert request");
	T_EQ_STR((char *)sql.data, "INSERT INTO `ev` FORMAT JSONEachRow", "ch.insert sql");
	T_EQ_STR((char *)data.data, "{\"a\":1,\"s\":\"x\\\"y\"}\n{}\n", "ch.insert rows");
	T_EQ_INT(rows, 2, "ch.insert row count");
	T_OK(request("ch.insert", "{\"table\": \"ev\", \"rows\": []}", &sql, &data, &rows, &err) == 0 &&
	     rows == 0 && data.len == 0, "ch.insert with no rows");
	REQ_ERR("ch.insert", "{\"table\": \"ev; DROP\", \"rows\": []}",
		"ch.insert: parameter 'table': 'ev; DROP' is not a valid identifier");
	REQ_ERR("ch.insert", "{\"table\": 1, \"rows\": []}", "ch.insert: 'table' must be a string");
	REQ_ERR("ch.insert", "{\"table\": \"ev\", \"rows\": {}}",
		"ch.insert: 'rows' must be an array of maps");
	REQ_ERR("ch.insert", "{\"table\": \"ev\", \"rows\": [{}, 1]}", "ch.insert: row 1 is not a map");

	/* results that need no answer body */
	T_OK(au_ch_task_result("ch.exec", "", 0, 0, &out, &err) == 0, "ch.exec result");
	json = au_msgpack_to_json(out.data, out.len, &err);
	T_EQ_STR(json, "{\"ok\":true}", "ch.exec result value");
	free(json);
	au_buf_reset(&out);
	T_OK(au_ch_task_result("ch.insert", "", 0, 3, &out, &err) == 0, "ch.insert result");
	json = au_msgpack_to_json(out.data, out.len, &err);
	T_EQ_STR(json, "{\"inserted\":3}", "ch.insert result value");
	free(json);
	au_buf_reset(&out);
	T_OK(au_ch_task_result("ch.query", "{\"meta\": 1}", 11, 0, &out, &err) < 0 &&
	     err.code == AU_EPROTO, "ch.query: malformed answer refused");
	T_OK(au_ch_task_result("ch.query", "Code: 1", 7, 0, &out, &err) < 0 && err.code == AU_EPROTO,
	     "ch.query: non-JSON answer refused");
	au_buf_release(&out);
	au_buf_release(&sql);
	au_buf_release(&data);
}

/*
 * Values that try to get out of their literal, each bound into a statement
 * of one placeholder: what comes out is the literal alone (one token after
 * SELECT), or a refusal that names the parameter. tests/t_injection.sh
 * sends the same values to a real server.
 */
static const struct {
	const char *type, *params, *want;   /* want: the bound SQL, or the error */
	int code;
} injections[] = {
	{ "String", "{\"v\": \"it's\"}", "SELECT 'it\\'s'", AU_OK },
	{ "String", "{\"v\": \"'\"}", "SELECT '\\''", AU_OK },
	{ "String", "{\"v\": \"''\"}", "SELECT '\\'\\''", AU_OK },
	{ "String", "{\"v\": \"\\\\\"}", "SELECT '\\\\'", AU_OK },
	{ "String", "{\"v\": \"\\\\'\"}", "SELECT '\\\\\\''", AU_OK },
	{ "String", "{\"v\": \"a\\u0000b\"}", "SELECT 'a\\0b'", AU_OK },
	{ "String", "{\"v\": \"'; DROP TABLE canary; --\"}",
	  "SELECT '\\'; DROP TABLE canary; --'", AU_OK },
	{ "String", "{\"v\": \"\\\\'; DROP TABLE canary; --\"}",
	  "SELECT '\\\\\\'; DROP TABLE canary; --'", AU_OK },
	{ "String", "{\"v\": \"x' OR '1'='1\"}", "SELECT 'x\\' OR \\'1\\'=\\'1'", AU_OK },
	{ "String", "{\"v\": \"{other:String}\", \"other\": \"'; DROP TABLE canary; --\"}",
	  "SELECT '{other:String}'", AU_OK },
	{ "String", "{\"v\": \"*/ DROP /*\"}", "SELECT '*/ DROP /*'", AU_OK },
	{ "String", "{\"v\": \"l1\\nl2\\r\\n\\tend\"}", "SELECT 'l1\\nl2\\r\\n\\tend'", AU_OK },
	{ "String", "{\"v\": \"\\u0001\\u001f\\u007f\"}", "SELECT '\\x01\\x1F\\x7F'", AU_OK },
	{ "String", "{\"v\": \"h\\u00e9 \\u2603 \\ud83d\\ude00\"}",
	  "SELECT 'h\xc3\xa9 \xe2\x98\x83 \xf0\x9f\x98\x80'", AU_OK },
	{ "String", "{\"v\": \"`x` \\\"y\\\"\"}", "SELECT '`x` \"y\"'", AU_OK },
	{ "Array(String)", "{\"v\": [\"'\", \"\\\\\", \"]) --\"]}",
	  "SELECT ['\\'', '\\\\', ']) --']", AU_OK },
	{ "Nullable(String)", "{\"v\": \"NULL'\"}", "SELECT 'NULL\\''", AU_OK },
	{ "FixedString(2)", "{\"v\": \"'\\\\\"}", "SELECT '\\'\\\\'", AU_OK },
	{ "Date", "{\"v\": \"2024-01-01'\"}", "parameter 'v': '2024-01-01'' is not a valid Date",
	  AU_EINVAL },
	{ "UUID", "{\"v\": \"61f0c404-5cb3-11e7-907b-a6006ad3db'0\"}",
	  "parameter 'v': '61f0c404-5cb3-11e7-907b-a6006ad3db'0' is not a valid UUID", AU_EINVAL },
	/* numbers out of the declared type's range are refused, never wrapped */
	{ "UInt8", "{\"v\": 300}", "parameter 'v': 300 is out of range for UInt8", AU_EINVAL },
	{ "UInt8", "{\"v\": 256}", "parameter 'v': 256 is out of range for UInt8", AU_EINVAL },
	{ "UInt8", "{\"v\": 255}", "SELECT 255", AU_OK },
	{ "UInt8", "{\"v\": -1}", "parameter 'v': -1 is out of range for UInt8", AU_EINVAL },
	{ "Int8", "{\"v\": -129}", "parameter 'v': -129 is out of range for Int8", AU_EINVAL },
	{ "Int8", "{\"v\": -128}", "SELECT -128", AU_OK },
	{ "Int16", "{\"v\": 32768}", "parameter 'v': 32768 is out of range for Int16", AU_EINVAL },
	{ "UInt32", "{\"v\": 4294967296}",
	  "parameter 'v': 4294967296 is out of range for UInt32", AU_EINVAL },
	{ "Int32", "{\"v\": -2147483649}",
	  "parameter 'v': -2147483649 is out of range for Int32", AU_EINVAL },
	{ "UInt64", "{\"v\": \"18446744073709551616\"}",
	  "parameter 'v': 18446744073709551616 is out of range for UInt64", AU_EINVAL },
	{ "UInt64", "{\"v\": \"99999999999999999999999\"}",
	  "parameter 'v': 99999999999999999999999 is out of range for UInt64", AU_EINVAL },
	{ "UInt64", "{\"v\": \"-0\"}", "parameter 'v': -0 is out of range for UInt64", AU_EINVAL },
	{ "Int64", "{\"v\": \"-9223372036854775809\"}",
	  "parameter 'v': -9223372036854775809 is out of range for Int64", AU_EINVAL },
	{ "Int64", "{\"v\": \"+5\"}", "parameter 'v': '+5' is not a decimal integer", AU_EINVAL },
	{ "Int64", "{\"v\": \" 5\"}", "parameter 'v': ' 5' is not a decimal integer", AU_EINVAL },
	{ "Int64", "{\"v\": \"0x10\"}", "parameter 'v': '0x10' is not a decimal integer", AU_EINVAL },
	{ "Int64", "{\"v\": \"1e3\"}", "parameter 'v': '1e3' is not a decimal integer", AU_EINVAL },
	{ "Int64", "{\"v\": \"1; DROP TABLE canary\"}",
	  "parameter 'v': '1; DROP TABLE canary' is not a decimal integer", AU_EINVAL },
	{ "Int64", "{\"v\": \"5\\u0000\"}", "parameter 'v': '5' is not a decimal integer",
	  AU_EINVAL },
	{ "UInt8", "{\"v\": 1.0}", "parameter 'v': expected UInt8, got real", AU_EINVAL },
	{ "Int32", "{\"v\": 1.5}", "parameter 'v': expected Int32, got real", AU_EINVAL },
	{ "UInt64", "{\"v\": 1e3}", "parameter 'v': expected UInt64, got real", AU_EINVAL },
	{ "UInt16", "{\"v\": \"5\"}", "parameter 'v': expected UInt16, got string", AU_EINVAL },
	{ "Int8", "{\"v\": true}", "parameter 'v': expected Int8, got boolean", AU_EINVAL },
	{ "Int8", "{\"v\": null}", "parameter 'v': expected Int8, got null", AU_EINVAL },
	{ "Float32", "{\"v\": 1e39}", "parameter 'v': 1e+39 is out of range for Float32",
	  AU_EINVAL },
	{ "Float64", "{\"v\": \"1 OR 1\"}", "parameter 'v': expected Float64, got string",
	  AU_EINVAL },
	{ "Bool", "{\"v\": 1}", "parameter 'v': expected Bool, got integer", AU_EINVAL },
	/* identifiers: [A-Za-z_][A-Za-z0-9_]*, once with one dot, backquoted */
	{ "Identifier", "{\"v\": \"db.canary\"}", "SELECT `db`.`canary`", AU_OK },
	{ "Identifier", "{\"v\": \"t`; DROP TABLE canary; --\"}",
	  "parameter 'v': 't`; DROP TABLE canary; --' is not a valid identifier", AU_EINVAL },
	{ "Identifier", "{\"v\": \"a.b.c\"}", "parameter 'v': 'a.b.c' is not a valid identifier",
	  AU_EINVAL },
	{ "Identifier", "{\"v\": \"t\\u0000x\"}", "parameter 'v': 't' is not a valid identifier",
	  AU_EINVAL },
	{ "Identifier", "{\"v\": \"t\\u00e9\"}",
	  "parameter 'v': 't\xc3\xa9' is not a valid identifier", AU_EINVAL },
	{ "Identifier", "{\"v\": \"\"}", "parameter 'v': '' is not a valid identifier", AU_EINVAL },
	{ "Identifier", "{\"v\": \"1t\"}", "parameter 'v': '1t' is not a valid identifier",
	  AU_EINVAL },
	{ "Identifier", "{\"v\": \"t\\n\"}", "parameter 'v': 't\n' is not a valid identifier",
	  AU_EINVAL },
};

static void test_injection_table(void)
{
	char sql[64];
	size_t i, n, tokens;
	const char *got, *t, *end;
	int code;

	for (i = 0; i < AU_ARRAY_SIZE(injections); i++) {
		snprintf(sql, sizeof(sql), "SELECT {v:%s}", injections[i].type);
		got = bind(sql, injections[i].params, &code);
		T_EQ_STR(got, injections[i].want, injections[i].params);
		T_EQ_INT(code, injections[i].code, injections[i].params);
		if (code != AU_OK)
			continue;
		/* a string is SELECT and one literal: the value did not become SQL */
		if (!strstr(injections[i].type, "String") || strstr(injections[i].type, "Array"))
			continue;
		end = got + strlen(got);
		for (tokens = 0, t = got; (t = au_sql_token(t, end, &n)) != NULL; t += n)
			tokens++;
		T_EQ_INT(tokens, 2, "one literal after SELECT");
	}
	/* a value is never read again for placeholders, wherever it lands */
	BIND_OK("SELECT {a:String}, {b:String}", "{\"a\": \"{b:String}\", \"b\": \"'\"}",
		"SELECT '{b:String}', '\\''");
	/* 1-{n} with n = -5 must not become the comment 1--5 */
	BIND_OK("SELECT 1-{n:Int8}", "{\"n\": -5}", "SELECT 1- -5");
}

/* Table names of ch.insert: only an identifier, and its rows' keys are
 * JSONEachRow data, never SQL. */
static void test_insert_identifiers(void)
{
	static const char *const bad[] = {
		"canary; DROP TABLE canary", "canary`", "`canary`", "db.canary.x", "canary --",
		"canary/*", "canary\\u0000", "can ary", "canary'", "",
	};
	struct au_buf sql = AU_BUF_INIT, data = AU_BUF_INIT;
	struct au_err err = { 0, "" };
	size_t rows, i;
	char args[200];

	for (i = 0; i < AU_ARRAY_SIZE(bad); i++) {
		snprintf(args, sizeof(args), "{\"table\": \"%s\", \"rows\": [{\"a\": 1}]}", bad[i]);
		T_OK(request("ch.insert", args, &sql, &data, &rows, &err) < 0 && err.code == AU_EINVAL,
		     "ch.insert refuses table %s", bad[i]);
		T_OK(strstr(err.str, "ch.insert: parameter 'table': '") == err.str &&
		     strstr(err.str, "' is not a valid identifier"), "and says why: %s", err.str);
	}
	T_OK(request("ch.insert", "{\"table\": \"db.canary\", \"rows\": [{\"a`, b) --\": \"'\"}]}",
		     &sql, &data, &rows, &err) == 0, "ch.insert with an odd column name");
	T_EQ_STR((char *)sql.data, "INSERT INTO `db`.`canary` FORMAT JSONEachRow",
		 "the column names are not in the sql");
	T_EQ_STR((char *)data.data, "{\"a`, b) --\":\"'\"}\n", "they are JSON keys of the rows");
	au_buf_release(&sql);
	au_buf_release(&data);
}

int main(void)
{
	test_integers();
	test_floats_bools();
	test_strings();
	test_compound();
	test_placeholders();
	test_limits();
	test_quote_identifier_token();
	test_task_requests();
	test_injection_table();
	test_insert_identifiers();
	return t_done();
}
