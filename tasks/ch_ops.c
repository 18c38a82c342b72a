/*
 * ch_ops.c - the built-in task ch.op: one operation on ClickHouse tables
 * (arithmetic, comparison, filter, aggregation, join, concat, distinct,
 * values, query) whose output is a new table, never a change to an input;
 * the operation log that records what made each table; and the drop of a
 * flow's tables. docs/clickhouse.md "ch.op" has the arguments.
 *
 * SQL is built only from identifiers that passed a strict pattern (and
 * exist: every input column is looked up in system.columns first, so a
 * type decides what an operation accepts before anything is built) and
 * from values bound by au_sql_bind. An attempt runs, on the worker's loop,
 * one request after the other:
 *
 *   describe  SELECT ... FROM system.columns          (inputs' columns)
 *   drop      DROP TABLE IF EXISTS out                (a retry starts clean)
 *   create    CREATE TABLE out ENGINE = MergeTree ORDER BY tuple() AS SELECT
 *   insert    INSERT INTO out ... VALUES              (values only)
 *   info      the output's columns and count
 *
 * The output's name depends only on the computation (its id, its flow,
 * the name it asks for), so every attempt writes the same table, and each
 * one drops what an earlier one left, half-written or whole.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <event2/event.h>
#include <jansson.h>

#include "ch_ops.h"
#include "clickhouse.h"
#include "task.h"
#include "tasks.h"

#define TASK "ch.op"
#define MAX_INPUTS 64
#define MAX_VALUES_ROWS 100000
#define NAME_MAX_LEN 63          /* names we are given: out.name, columns */
#define TABLE_MAX_LEN 127        /* input tables: f_<flow>_<name> is 98 */
#define SQL_LOGGED_MAX 16384     /* bytes of the statement kept in the log */

/* ---- names ---- */

#define name_ok au_ch_name_valid
#define hex32 au_ch_flow_id_valid

/* ---- what an operation is ---- */

enum kind { K_ARITH, K_CMP, K_AGG, K_FILTER, K_DISTINCT, K_JOIN, K_CONCAT, K_VALUES, K_QUERY };

static const struct opdef {
	const char *name;
	enum kind kind;
	const char *fn;          /* ClickHouse function */
} ops[] = {
	{ "add", K_ARITH, "plus" }, { "sub", K_ARITH, "minus" }, { "mul", K_ARITH, "multiply" },
	{ "div", K_ARITH, "divide" }, { "intdiv", K_ARITH, "intDiv" }, { "mod", K_ARITH, "modulo" },
	{ "pow", K_ARITH, "pow" },
	{ "eq", K_CMP, "equals" }, { "ne", K_CMP, "notEquals" }, { "lt", K_CMP, "less" },
	{ "le", K_CMP, "lessOrEquals" }, { "gt", K_CMP, "greater" },
	{ "ge", K_CMP, "greaterOrEquals" },
	{ "sum", K_AGG, "sum" }, { "mean", K_AGG, "avg" }, { "min", K_AGG, "min" },
	{ "max", K_AGG, "max" }, { "count", K_AGG, "count" }, { "uniq", K_AGG, "uniqExact" },
	{ "quantile", K_AGG, "quantile" },
	{ "filter", K_FILTER, NULL }, { "distinct", K_DISTINCT, NULL }, { "join", K_JOIN, NULL },
	{ "concat", K_CONCAT, NULL }, { "values", K_VALUES, NULL }, { "query", K_QUERY, NULL },
};

/* What a column's type allows. */
enum tkind { T_NUM, T_STR, T_DATE, T_OTHER };

static enum tkind type_kind(const char *t)
{
	static const char *const num[] = { "Int8", "Int16", "Int32", "Int64", "UInt8", "UInt16",
					   "UInt32", "UInt64", "Float32", "Float64" };
	size_t n = strlen(t), i;

	for (;;) {   /* the wrappers that change nothing here */
		if (n > 10 && !strncmp(t, "Nullable(", 9) && t[n - 1] == ')')
			t += 9, n -= 10;
		else if (n > 16 && !strncmp(t, "LowCardinality(", 15) && t[n - 1] == ')')
			t += 15, n -= 16;
		else
			break;
	}
	for (i = 0; i < AU_ARRAY_SIZE(num); i++)
		if (strlen(num[i]) == n && !strncmp(t, num[i], n))
			return T_NUM;
	if (n >= 7 && !strncmp(t, "Decimal", 7))
		return T_NUM;
	if ((n == 6 && !strncmp(t, "String", 6)) || !strncmp(t, "FixedString(", 12))
		return T_STR;
	if ((n == 4 && !strncmp(t, "Date", 4)) || !strncmp(t, "DateTime", 8))
		return T_DATE;
	return T_OTHER;
}

/* The types a values table may have: what au_sql_bind can check. */
static int values_type_ok(const char *t)
{
	static const char *const ok[] = { "Int8", "Int16", "Int32", "Int64", "UInt8", "UInt16",
					  "UInt32", "UInt64", "Float32", "Float64", "String",
					  "Date", "DateTime", "UUID" };
	size_t n = strlen(t), i;

	if (n > 10 && !strncmp(t, "Nullable(", 9) && t[n - 1] == ')')
		t += 9, n -= 10;
	else if (n > 7 && !strncmp(t, "Array(", 6) && t[n - 1] == ')')
		t += 6, n -= 7;
	for (i = 0; i < AU_ARRAY_SIZE(ok); i++)
		if (strlen(ok[i]) == n && !strncmp(t, ok[i], n))
			return 1;
	return 0;
}

/* ---- one attempt ---- */

/* An input: a table, and the view of it the arguments ask for. */
struct input {
	const char *role;        /* "left", "input", "inputs[2]", for messages */
	const char *table;
	const json_t *view;      /* the map, NULL for a bare name */
	const char *column;      /* elementwise and aggregations: the one column */
};

enum step { S_DESCRIBE, S_DROP, S_CREATE, S_INSERT, S_INFO };

struct op {
	struct au_task_ctx *ctx;
	struct au_clickhouse *ch;
	json_t *args;
	const struct opdef *def;
	char id[AU_ID_SIZE], flow[AU_ID_SIZE];
	uint32_t attempt, timeout_ms;
	int fail_on_timeout;
	char out[160];
	struct input in[MAX_INPUTS];
	char roles[MAX_INPUTS][16];
	size_t nin;
	const json_t *scalar;    /* elementwise with a scalar */
	int scalar_left;         /* the scalar is "left" */
	json_t *cols;            /* table -> [[name, type], ...] in order */
	json_t *params;          /* placeholders of the statement being built */
	unsigned nparams;
	char *create, *insert;   /* the statements, bound */
	enum step step;
	uint64_t rows;
	json_t *outcols;         /* the output's {name: type} */
	char *log_comment;
};

static void op_free(struct op *o)
{
	if (!o)
		return;
	json_decref(o->args);
	json_decref(o->cols);
	json_decref(o->params);
	json_decref(o->outcols);
	free(o->create);
	free(o->insert);
	free(o->log_comment);
	free(o);
}

static int bad(struct au_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int bad(struct au_err *err, const char *fmt, ...)
{
	char msg[AU_ERRSTR_SIZE];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return au_seterr(err, AU_EINVAL, TASK ": %s", msg);
}

/* A string shown in a message: cut, and nothing that breaks the line. */
static const char *shown(char buf[AU_ID_SHOWN_SIZE], const char *s)
{
	return au_id_shown(buf, s);
}

/* ---- parsing the arguments ---- */

static int parse_input(struct op *o, const json_t *v, const char *role, struct au_err *err)
{
	struct input *in = &o->in[o->nin];
	const json_t *t, *c;
	char b[AU_ID_SHOWN_SIZE];
	const char *k;
	const json_t *x;

	if (o->nin == MAX_INPUTS)
		return bad(err, "more than %d inputs", MAX_INPUTS);
	memset(in, 0, sizeof(*in));
	in->role = role;
	if (json_is_string(v)) {
		in->table = json_string_value(v);
	} else if (json_is_object(v)) {
		json_object_foreach((json_t *)v, k, x)
			if (strcmp(k, "table") && strcmp(k, "columns") && strcmp(k, "column") &&
			    strcmp(k, "where") && strcmp(k, "order") && strcmp(k, "limit") &&
			    strcmp(k, "offset"))
				return bad(err, "'%s': unknown key '%s'", role, shown(b, k));
		t = json_object_get(v, "table");
		if (!json_is_string(t))
			return bad(err, "'%s': 'table' must be a string", role);
		in->table = json_string_value(t);
		in->view = v;
		if ((c = json_object_get(v, "column"))) {
			if (!json_is_string(c) || !name_ok(json_string_value(c), NAME_MAX_LEN))
				return bad(err, "'%s': 'column' must be a column name%s%s%s", role,
					   json_is_string(c) ? ", not '" : "",
					   json_is_string(c) ? shown(b, json_string_value(c)) : "",
					   json_is_string(c) ? "'" : "");
			in->column = json_string_value(c);
		}
	} else {
		return bad(err, "'%s' must be a table name or a view {\"table\": ...}", role);
	}
	if (!name_ok(in->table, TABLE_MAX_LEN) || strlen(in->table) != json_string_length(
		    json_is_string(v) ? v : json_object_get(v, "table")))
		return bad(err, "'%s': '%s' is not a valid table name ([A-Za-z_][A-Za-z0-9_]*, "
			   "at most %d characters)", role, shown(b, in->table), TABLE_MAX_LEN);
	o->nin++;
	return 0;
}

static int is_scalar(const json_t *v)
{
	return json_is_number(v) || json_is_boolean(v);
}

/* A scalar operand: a number or a boolean, or {"value": X} for any X that
 * is not a map (a string scalar must be wrapped: a bare string is a table). */
static const json_t *scalar_of(const json_t *v)
{
	const json_t *x;

	if (is_scalar(v))
		return v;
	if (json_is_object(v) && json_object_size(v) == 1 && (x = json_object_get(v, "value")) &&
	    (json_is_number(x) || json_is_boolean(x) || json_is_string(x)))
		return x;
	return NULL;
}

/* The output's name from "out" (absent: a temp table), into o->out. */
static int parse_out(struct op *o, struct au_err *err)
{
	const json_t *out = json_object_get(o->args, "out"), *name, *scope;
	const char *sc = "temp";
	char b[AU_ID_SHOWN_SIZE];

	if (out && !json_is_null(out)) {
		if (!json_is_object(out))
			return bad(err, "'out' must be a map {\"name\", \"scope\"}");
		name = json_object_get(out, "name");
		scope = json_object_get(out, "scope");
		if (scope && !json_is_string(scope))
			return bad(err, "'out.scope' must be temp, flow or persistent");
		if (scope)
			sc = json_string_value(scope);
		if (strcmp(sc, "temp") && strcmp(sc, "flow") && strcmp(sc, "persistent"))
			return bad(err, "'out.scope' must be temp, flow or persistent, not '%s'",
				   shown(b, sc));
		if (!strcmp(sc, "temp") && name && !json_is_null(name))
			return bad(err, "a temp output has no name (scope flow or persistent names one)");
		if (strcmp(sc, "temp")) {
			if (!json_is_string(name) || !name_ok(json_string_value(name), NAME_MAX_LEN) ||
			    strlen(json_string_value(name)) != json_string_length(name))
				return bad(err, "'out.name' %s%s%s is not a valid name ([A-Za-z_][A-Za-z0-9_]*, "
					   "at most %d characters)",
					   json_is_string(name) ? "'" : "",
					   json_is_string(name) ? shown(b, json_string_value(name)) : "(missing)",
					   json_is_string(name) ? "'" : "", NAME_MAX_LEN);
			if (!strcmp(sc, "flow"))
				snprintf(o->out, sizeof(o->out), "f_%s_%s", o->flow, json_string_value(name));
			else
				snprintf(o->out, sizeof(o->out), "p_%s", json_string_value(name));
			return 0;
		}
	}
	/* FNV-1a of the computation's id: the same table for every attempt */
	uint32_t h = 2166136261u;

	for (const char *p = o->id; *p; p++)
		h = (h ^ (unsigned char)*p) * 16777619u;
	snprintf(o->out, sizeof(o->out), "t_%s_%08x", o->flow, h);
	return 0;
}

static int parse_args(struct op *o, struct au_err *err)
{
	const json_t *opname = json_object_get(o->args, "op"), *v, *l, *r;
	char b[AU_ID_SHOWN_SIZE];
	size_t i;

	if (!json_is_string(opname))
		return bad(err, "'op' must be a string");
	for (i = 0; i < AU_ARRAY_SIZE(ops); i++)
		if (!strcmp(ops[i].name, json_string_value(opname)))
			o->def = &ops[i];
	if (!o->def)
		return bad(err, "unknown operation '%s'", shown(b, json_string_value(opname)));
	if (parse_out(o, err) < 0)
		return -1;
	switch (o->def->kind) {
	case K_ARITH:
	case K_CMP:
		l = json_object_get(o->args, "left");
		r = json_object_get(o->args, "right");
		if (!l || !r)
			return bad(err, "%s needs 'left' and 'right'", o->def->name);
		if (scalar_of(l) && scalar_of(r))
			return bad(err, "%s needs a table on one side at least", o->def->name);
		if ((o->scalar = scalar_of(l))) {
			o->scalar_left = 1;
			return parse_input(o, r, "right", err);
		}
		if (parse_input(o, l, "left", err) < 0)
			return -1;
		if ((o->scalar = scalar_of(r)))
			return 0;
		return parse_input(o, r, "right", err);
	case K_AGG:
	case K_FILTER:
	case K_DISTINCT:
		if (!(v = json_object_get(o->args, "input")))
			return bad(err, "%s needs 'input'", o->def->name);
		if (parse_input(o, v, "input", err) < 0)
			return -1;
		if (o->def->kind == K_AGG && (v = json_object_get(o->args, "column"))) {
			if (!json_is_string(v) || !name_ok(json_string_value(v), NAME_MAX_LEN))
				return bad(err, "'column' must be a column name%s%s%s",
					   json_is_string(v) ? ", not '" : "",
					   json_is_string(v) ? shown(b, json_string_value(v)) : "",
					   json_is_string(v) ? "'" : "");
			o->in[0].column = json_string_value(v);
		}
		return 0;
	case K_JOIN:
		if (parse_input(o, json_object_get(o->args, "left"), "left", err) < 0 ||
		    parse_input(o, json_object_get(o->args, "right"), "right", err) < 0)
			return -1;
		return 0;
	case K_CONCAT:
		v = json_object_get(o->args, "inputs");
		if (!json_is_array(v) || !json_array_size(v))
			return bad(err, "concat needs 'inputs', an array of tables or views");
		for (i = 0; i < json_array_size(v); i++) {
			if (i < MAX_INPUTS)
				snprintf(o->roles[i], sizeof(o->roles[i]), "inputs[%zu]", i);
			if (parse_input(o, json_array_get(v, i), i < MAX_INPUTS ? o->roles[i] : "inputs",
					err) < 0)
				return -1;
		}
		return 0;
	case K_VALUES:
	case K_QUERY:
		return 0;
	}
	return 0;
}

/* ---- the inputs' columns ---- */

/* The type of column col of input in, or NULL. */
static const char *col_type(const struct op *o, const struct input *in, const char *col)
{
	const json_t *list = json_object_get(o->cols, in->table), *c;
	size_t i;

	json_array_foreach(list, i, c)
		if (!strcmp(json_string_value(json_array_get(c, 0)), col))
			return json_string_value(json_array_get(c, 1));
	return NULL;
}

static int need_col(const struct op *o, const struct input *in, const char *col,
		    const char **type, struct au_err *err)
{
	char b[AU_ID_SHOWN_SIZE], b2[AU_ID_SHOWN_SIZE];

	if (!name_ok(col, NAME_MAX_LEN))
		return bad(err, "'%s': '%s' is not a valid column name", in->role, shown(b, col));
	if (!(*type = col_type(o, in, col)))
		return bad(err, "'%s': table '%s' has no column '%s'", in->role, in->table,
			   shown(b2, col));
	return 0;
}

/* The columns a view shows: its "columns", else all of the table's; as a
 * new array of [name, type]. */
static json_t *view_cols(const struct op *o, const struct input *in, struct au_err *err)
{
	const json_t *want = in->view ? json_object_get(in->view, "columns") : NULL, *c;
	json_t *res;
	const char *type;
	size_t i;

	if (!want || json_is_null(want))
		return json_deep_copy(json_object_get(o->cols, in->table));
	if (!json_is_array(want) || !json_array_size(want)) {
		bad(err, "'%s': 'columns' must be a non-empty array of names", in->role);
		return NULL;
	}
	res = json_array();
	json_array_foreach(want, i, c) {
		if (!json_is_string(c) || need_col(o, in, json_string_value(c), &type, err) < 0) {
			if (!json_is_string(c))
				bad(err, "'%s': 'columns' must be a non-empty array of names", in->role);
			json_decref(res);
			return NULL;
		}
		json_array_append_new(res, json_pack("[ss]", json_string_value(c), type));
	}
	return res;
}

/* A new placeholder {pN:type} for v, in sql. */
static int put_param(struct op *o, struct au_buf *sql, const char *type, const json_t *v)
{
	char name[16];

	snprintf(name, sizeof(name), "p%u", o->nparams++);
	json_object_set_new(o->params, name, json_deep_copy(v));
	return au_buf_printf(sql, "{%s:%s}", name, type);
}

/* The type we bind a JSON value as, against a column of kind k; NULL (and
 * err) when they do not go together. */
static const char *value_type(const struct input *in, const char *col, enum tkind k,
			      const json_t *v, struct au_err *err)
{
	char b[AU_ID_SHOWN_SIZE];

	if (json_is_integer(v) || json_is_real(v) || json_is_boolean(v)) {
		if (k != T_NUM) {
			bad(err, "'%s': column '%s' is not a number: compare it with a string",
			    in->role, shown(b, col));
			return NULL;
		}
		return json_is_integer(v) ? "Int64" : json_is_real(v) ? "Float64" : "Bool";
	}
	if (json_is_string(v)) {
		if (k == T_NUM) {
			bad(err, "'%s': column '%s' is a number: compare it with a number", in->role,
			    shown(b, col));
			return NULL;
		}
		return "String";
	}
	bad(err, "'%s': values compared with column '%s' must be numbers or strings", in->role,
	    shown(b, col));
	return NULL;
}

/* " WHERE ..." of a view. */
static int put_where(struct op *o, const struct input *in, struct au_buf *sql, struct au_err *err)
{
	static const char *const cmp[] = { "=", "!=", "<", "<=", ">", ">=", "in" };
	const json_t *where = json_object_get(in->view, "where"), *w;
	char b[AU_ID_SHOWN_SIZE];
	size_t i, k;

	if (!where || json_is_null(where))
		return 0;
	if (!json_is_array(where))
		return bad(err, "'%s': 'where' must be an array of [column, op, value]", in->role);
	json_array_foreach(where, i, w) {
		const json_t *c = json_array_get(w, 0), *opv = json_array_get(w, 1);
		const json_t *val = json_array_get(w, 2);
		const char *type, *vt = NULL, *opname;

		if (!json_is_array(w) || json_array_size(w) != 3 || !json_is_string(c) ||
		    !json_is_string(opv))
			return bad(err, "'%s': 'where' must be an array of [column, op, value]", in->role);
		if (need_col(o, in, json_string_value(c), &type, err) < 0)
			return -1;
		opname = json_string_value(opv);
		for (k = 0; k < AU_ARRAY_SIZE(cmp); k++)
			if (!strcmp(cmp[k], opname))
				break;
		if (k == AU_ARRAY_SIZE(cmp))
			return bad(err, "'%s': unknown comparison '%s' (= != < <= > >= in)", in->role,
				   shown(b, opname));
		if (au_buf_puts(sql, i ? " AND " : " WHERE ") < 0 ||
		    au_buf_printf(sql, "`%s` %s ", json_string_value(c), k == 6 ? "IN" : cmp[k]) < 0)
			return au_seterr(err, AU_ENOMEM, "out of memory");
		if (k == 6) {
			const json_t *item;
			size_t j;
			char at[40];

			if (!json_is_array(val) || !json_array_size(val))
				return bad(err, "'%s': 'in' needs a non-empty array of values", in->role);
			json_array_foreach(val, j, item) {
				const char *t = value_type(in, json_string_value(c), type_kind(type), item, err);

				if (!t)
					return -1;
				if (vt && strcmp(vt, t))
					return bad(err, "'%s': the values of 'in' must all be of one kind", in->role);
				vt = t;
			}
			snprintf(at, sizeof(at), "Array(%s)", vt);
			/* IN wants a tuple: has() takes the bound array as it is */
			sql->len -= strlen("IN ") + strlen(json_string_value(c)) + 3;
			if (au_buf_puts(sql, "has(") < 0 || put_param(o, sql, at, val) < 0 ||
			    au_buf_printf(sql, ", `%s`)", json_string_value(c)) < 0)
				return au_seterr(err, AU_ENOMEM, "out of memory");
		} else {
			if (!(vt = value_type(in, json_string_value(c), type_kind(type), val, err)))
				return -1;
			if (put_param(o, sql, vt, val) < 0)
				return au_seterr(err, AU_ENOMEM, "out of memory");
		}
	}
	return 0;
}

/* " ORDER BY ... LIMIT ..." of a view. */
static int put_order_limit(struct op *o, const struct input *in, struct au_buf *sql,
			   struct au_err *err)
{
	const json_t *order = json_object_get(in->view, "order"), *e;
	const json_t *limit = json_object_get(in->view, "limit"), *offset = json_object_get(in->view, "offset");
	const char *type;
	size_t i;

	if (order && !json_is_null(order)) {
		if (!json_is_array(order))
			return bad(err, "'%s': 'order' must be an array of [column, \"asc\"|\"desc\"]", in->role);
		json_array_foreach(order, i, e) {
			const json_t *c = json_is_array(e) ? json_array_get(e, 0) : e;
			const json_t *d = json_is_array(e) ? json_array_get(e, 1) : NULL;
			const char *dir = json_is_string(d) ? json_string_value(d) : d ? "" : "asc";

			if (!json_is_string(c) || (json_is_array(e) && json_array_size(e) > 2) ||
			    (strcasecmp(dir, "asc") && strcasecmp(dir, "desc")))
				return bad(err, "'%s': 'order' must be an array of [column, \"asc\"|\"desc\"]",
					   in->role);
			if (need_col(o, in, json_string_value(c), &type, err) < 0)
				return -1;
			if (au_buf_printf(sql, "%s`%s` %s", i ? ", " : " ORDER BY ", json_string_value(c),
					  strcasecmp(dir, "desc") ? "ASC" : "DESC") < 0)
				return au_seterr(err, AU_ENOMEM, "out of memory");
		}
	}
	if ((limit && !json_is_null(limit) && (!json_is_integer(limit) || json_integer_value(limit) < 0)) ||
	    (offset && !json_is_null(offset) && (!json_is_integer(offset) || json_integer_value(offset) < 0)))
		return bad(err, "'%s': 'limit' and 'offset' must be integers >= 0", in->role);
	if (json_is_integer(limit) || json_is_integer(offset)) {
		/* 18.16's LIMIT offset, count */
		if (au_buf_printf(sql, " LIMIT %lld, ", json_is_integer(offset) ?
				  (long long)json_integer_value(offset) : 0LL) < 0 ||
		    au_buf_puts(sql, json_is_integer(limit) ? "" : "18446744073709551615") < 0 ||
		    (json_is_integer(limit) &&
		     au_buf_printf(sql, "%lld", (long long)json_integer_value(limit)) < 0))
			return au_seterr(err, AU_ENOMEM, "out of memory");
	}
	return 0;
}

/* "(SELECT cols FROM `t` WHERE ... ORDER BY ... LIMIT ...)" with the
 * columns cols (array of [name, type]), each renamed to alias[i] when
 * alias is not NULL. */
static int put_view(struct op *o, const struct input *in, const json_t *cols,
		    const char *const *alias, struct au_buf *sql, struct au_err *err)
{
	size_t i;
	const json_t *c;

	if (au_buf_puts(sql, "(SELECT ") < 0)
		return au_seterr(err, AU_ENOMEM, "out of memory");
	json_array_foreach(cols, i, c)
		if (au_buf_printf(sql, "%s`%s`", i ? ", " : "", json_string_value(json_array_get(c, 0))) < 0 ||
		    (alias && au_buf_printf(sql, " AS `%s`", alias[i]) < 0))
			return au_seterr(err, AU_ENOMEM, "out of memory");
	if (au_buf_printf(sql, " FROM `%s`", in->table) < 0)
		return au_seterr(err, AU_ENOMEM, "out of memory");
	if (in->view && (put_where(o, in, sql, err) < 0 || put_order_limit(o, in, sql, err) < 0))
		return -1;
	return au_buf_puts(sql, ")") < 0 ? au_seterr(err, AU_ENOMEM, "out of memory") : 0;
}

/* The one column of an elementwise or aggregated input: its "column", its
 * view's one column, or the table's one column. */
static int one_col(const struct op *o, struct input *in, const char **type, struct au_err *err)
{
	const json_t *want = in->view ? json_object_get(in->view, "columns") : NULL;
	const json_t *all = json_object_get(o->cols, in->table);

	if (!in->column && json_is_array(want) && json_array_size(want) == 1 &&
	    json_is_string(json_array_get(want, 0)))
		in->column = json_string_value(json_array_get(want, 0));
	if (!in->column && !want && json_array_size(all) == 1)
		in->column = json_string_value(json_array_get(json_array_get(all, 0), 0));
	if (!in->column)
		return bad(err, "'%s': name the column ('column', or 'columns' with one name)", in->role);
	return need_col(o, in, in->column, type, err);
}

/* Names au uses inside its statements. */
static int reserved(const char *s)
{
	return !strncmp(s, "__au_", 5);
}

/* A column name the output gets from "as" (default "value"). */
static int out_col(const struct op *o, const char **name, struct au_err *err)
{
	const json_t *as = json_object_get(o->args, "as");
	char b[AU_ID_SHOWN_SIZE];

	*name = "value";
	if (!as)
		return 0;
	if (!json_is_string(as) || !name_ok(json_string_value(as), NAME_MAX_LEN) ||
	    reserved(json_string_value(as)))
		return bad(err, "'as' %s is not a valid column name",
			   json_is_string(as) ? shown(b, json_string_value(as)) : "");
	*name = json_string_value(as);
	return 0;
}

#define OOM() au_seterr(err, AU_ENOMEM, "out of memory")

static int build_elementwise(struct op *o, struct au_buf *sql, struct au_err *err)
{
	const char *lt, *rt = NULL, *as, *sv = NULL;
	enum tkind lk, rk;
	const char *fn = o->def->fn;
	json_t *lc, *rc;
	int rcode;

	if (out_col(o, &as, err) < 0 || one_col(o, &o->in[0], &lt, err) < 0)
		return -1;
	lk = type_kind(lt);
	if (o->scalar) {
		rk = json_is_string(o->scalar) ? T_STR : T_NUM;
		sv = json_is_integer(o->scalar) ? "Int64" : json_is_real(o->scalar) ? "Float64"
		     : json_is_boolean(o->scalar) ? "Bool" : "String";
	} else {
		if (one_col(o, &o->in[1], &rt, err) < 0)
			return -1;
		rk = type_kind(rt);
	}
	if (o->def->kind == K_ARITH && (lk != T_NUM || rk != T_NUM))
		return bad(err, "%s needs numbers: %s '%s' is %s", o->def->name,
			   lk != T_NUM ? o->in[0].role : o->scalar ? "the scalar" : o->in[1].role,
			   lk != T_NUM ? o->in[0].column : o->scalar ? "value" : o->in[1].column,
			   lk != T_NUM ? lt : o->scalar ? "a string" : rt);
	if (o->def->kind == K_CMP && lk != rk && !(lk == T_DATE && rk == T_STR) &&
	    !(lk == T_STR && rk == T_DATE))
		return bad(err, "%s cannot compare %s with %s", o->def->name, lt,
			   o->scalar ? (rk == T_STR ? "a string" : "a number") : rt);
	if (lk == T_OTHER || rk == T_OTHER)
		return bad(err, "%s takes numbers, strings and dates, not %s", o->def->name,
			   lk == T_OTHER ? lt : rt);
	lc = json_pack("[[ss]]", o->in[0].column, lt);
	if (o->scalar) {
		const char *alias[] = { "__au_v" };

		/* the view keeps its rows' order; one thread reads them in it */
		rcode = au_buf_printf(sql, "SELECT %s(", fn) < 0 ? OOM() : 0;
		if (!rcode && o->scalar_left)
			rcode = put_param(o, sql, sv, o->scalar) < 0 || au_buf_puts(sql, ", `__au_v`)") < 0 ? OOM() : 0;
		else if (!rcode)
			rcode = au_buf_puts(sql, "`__au_v`, ") < 0 || put_param(o, sql, sv, o->scalar) < 0 ||
				au_buf_puts(sql, ")") < 0 ? OOM() : 0;
		if (!rcode)
			rcode = au_buf_printf(sql, " AS `%s` FROM ", as) < 0 ? OOM() : 0;
		if (!rcode)
			rcode = put_view(o, &o->in[0], lc, alias, sql, err);
		json_decref(lc);
		return rcode;
	}
	rc = json_pack("[[ss]]", o->in[1].column, rt);
	{
		const char *la[] = { "__au_l" }, *ra[] = { "__au_r" };

		/*
		 * Row k of one side goes with row k of the other: each side is
		 * numbered in its view's order (the table's as one thread reads
		 * it when the view has none), 1 up; the FULL JOIN on the number
		 * leaves a 0 on the side that has no row k, which throwIf turns
		 * into an error (a different number of rows).
		 */
		rcode = au_buf_printf(sql, "SELECT %s(`__au_l`, `__au_r`) AS `%s` FROM "
				      "(SELECT rowNumberInAllBlocks() + 1 AS `__au_n`, `__au_n` AS `__au_ln`, "
				      "`__au_l` FROM ", fn, as) < 0 ? OOM() : 0;
		if (!rcode)
			rcode = put_view(o, &o->in[0], lc, la, sql, err);
		if (!rcode)
			rcode = au_buf_puts(sql, ") ALL FULL JOIN (SELECT rowNumberInAllBlocks() + 1 AS "
					    "`__au_n`, `__au_n` AS `__au_rn`, `__au_r` FROM ") < 0 ? OOM() : 0;
		if (!rcode)
			rcode = put_view(o, &o->in[1], rc, ra, sql, err);
		if (!rcode)
			rcode = au_buf_puts(sql, ") USING `__au_n` WHERE throwIf(`__au_ln` = 0 OR "
					    "`__au_rn` = 0) = 0 ORDER BY `__au_n`") < 0 ? OOM() : 0;
	}
	json_decref(lc);
	json_decref(rc);
	return rcode;
}

static int build_agg(struct op *o, struct au_buf *sql, struct au_err *err)
{
	const json_t *gb = json_object_get(o->args, "group_by"), *g, *q;
	struct input *in = &o->in[0];
	const char *type = NULL, *as, *gtype;
	json_t *cols;
	size_t i;
	int rcode;

	if (out_col(o, &as, err) < 0)
		return -1;
	if (gb && !json_is_null(gb) && !json_is_array(gb))
		return bad(err, "'group_by' must be an array of column names");
	if (strcmp(o->def->name, "count") || in->column || (in->view && json_object_get(in->view, "columns"))) {
		if (one_col(o, in, &type, err) < 0)
			return -1;
		if ((!strcmp(o->def->name, "sum") || !strcmp(o->def->name, "mean") ||
		     !strcmp(o->def->name, "quantile")) && type_kind(type) != T_NUM)
			return bad(err, "%s needs numbers: column '%s' is %s", o->def->name, in->column, type);
		if ((!strcmp(o->def->name, "min") || !strcmp(o->def->name, "max")) &&
		    type_kind(type) == T_OTHER)
			return bad(err, "%s needs numbers, strings or dates: column '%s' is %s",
				   o->def->name, in->column, type);
	}
	cols = json_array();
	json_array_foreach(gb, i, g) {
		if (!json_is_string(g) || need_col(o, in, json_string_value(g), &gtype, err) < 0) {
			if (!json_is_string(g))
				bad(err, "'group_by' must be an array of column names");
			json_decref(cols);
			return -1;
		}
		if (!strcmp(json_string_value(g), as)) {
			json_decref(cols);
			return bad(err, "the output column '%s' is also a group_by column (name it with 'as')", as);
		}
		json_array_append_new(cols, json_pack("[ss]", json_string_value(g), gtype));
	}
	if (in->column && !col_type(o, in, in->column)) {
		json_decref(cols);
		return bad(err, "'input': table '%s' has no column '%s'", in->table, in->column);
	}
	if (in->column)
		json_array_append_new(cols, json_pack("[ss]", in->column, type));
	if (au_buf_puts(sql, "SELECT ") < 0)
		goto oom;
	json_array_foreach(gb, i, g)
		if (au_buf_printf(sql, "`%s`, ", json_string_value(g)) < 0)
			goto oom;
	if (!strcmp(o->def->name, "quantile")) {
		q = json_object_get(o->args, "q");
		if (!json_is_number(q) || json_number_value(q) < 0 || json_number_value(q) > 1) {
			json_decref(cols);
			return bad(err, "quantile needs 'q', a number from 0 to 1");
		}
		if (au_buf_puts(sql, "quantile(") < 0 || put_param(o, sql, "Float64", q) < 0 ||
		    au_buf_puts(sql, ")") < 0)
			goto oom;
	} else if (au_buf_puts(sql, o->def->fn) < 0) {
		goto oom;
	}
	if (au_buf_printf(sql, in->column ? "(`%s`)" : "()", in->column) < 0 ||
	    au_buf_printf(sql, " AS `%s` FROM ", as) < 0)
		goto oom;
	if (!json_array_size(cols) && json_array_append_new(cols, json_deep_copy(
		    json_array_get(json_object_get(o->cols, in->table), 0))) < 0)
		goto oom;
	if ((rcode = put_view(o, in, cols, NULL, sql, err)) < 0) {
		json_decref(cols);
		return rcode;
	}
	json_decref(cols);
	json_array_foreach(gb, i, g)
		if (au_buf_printf(sql, "%s`%s`", i ? ", " : " GROUP BY ", json_string_value(g)) < 0)
			return OOM();
	json_array_foreach(gb, i, g)
		if (au_buf_printf(sql, "%s`%s`", i ? ", " : " ORDER BY ", json_string_value(g)) < 0)
			return OOM();
	return 0;
oom:
	json_decref(cols);
	return OOM();
}

/* filter and distinct: the view, materialised. */
static int build_view(struct op *o, struct au_buf *sql, struct au_err *err)
{
	json_t *cols = view_cols(o, &o->in[0], err);
	const json_t *c;
	size_t i;
	int rcode = 0;

	if (!cols)
		return -1;
	if (au_buf_puts(sql, o->def->kind == K_DISTINCT ? "SELECT DISTINCT " : "SELECT ") < 0)
		rcode = OOM();
	json_array_foreach(cols, i, c)
		if (!rcode && au_buf_printf(sql, "%s`%s`", i ? ", " : "",
					    json_string_value(json_array_get(c, 0))) < 0)
			rcode = OOM();
	if (!rcode && au_buf_puts(sql, " FROM ") < 0)
		rcode = OOM();
	if (!rcode)
		rcode = put_view(o, &o->in[0], cols, NULL, sql, err);
	json_decref(cols);
	return rcode;
}

static const json_t *find_col(const json_t *cols, const char *name)
{
	const json_t *c;
	size_t i;

	json_array_foreach(cols, i, c)
		if (!strcmp(json_string_value(json_array_get(c, 0)), name))
			return c;
	return NULL;
}

static int in_list(const json_t *list, const char *s)
{
	const json_t *v;
	size_t i;

	json_array_foreach(list, i, v)
		if (json_is_string(v) && !strcmp(json_string_value(v), s))
			return 1;
	return 0;
}

static int build_join(struct op *o, struct au_buf *sql, struct au_err *err)
{
	const json_t *on = json_object_get(o->args, "on"), *how = json_object_get(o->args, "how"), *k, *c;
	const char *h = json_is_string(how) ? json_string_value(how) : how ? "" : "inner";
	json_t *lc = NULL, *rc = NULL, *names = json_array();   /* output name per right column */
	char b[AU_ID_SHOWN_SIZE];
	size_t i, j;
	int rcode = -1;

	if (strcmp(h, "inner") && strcmp(h, "left") && strcmp(h, "full")) {
		bad(err, "'how' must be inner, left or full");
		goto out;
	}
	if (json_is_string(on))
		on = json_pack("[O]", on);
	else
		json_incref((json_t *)on);
	if (!json_is_array(on) || !json_array_size(on)) {
		json_decref((json_t *)on);
		bad(err, "join needs 'on', the column names both sides have");
		goto out;
	}
	if (!(lc = view_cols(o, &o->in[0], err)) || !(rc = view_cols(o, &o->in[1], err)))
		goto out_on;
	json_array_foreach(on, i, k) {
		const json_t *l, *r;

		if (!json_is_string(k) || !name_ok(json_string_value(k), NAME_MAX_LEN)) {
			bad(err, "'on' must name columns");
			goto out_on;
		}
		l = find_col(lc, json_string_value(k));
		r = find_col(rc, json_string_value(k));
		if (!l || !r) {
			bad(err, "'%s': no column '%s' to join on", l ? "right" : "left",
			    shown(b, json_string_value(k)));
			goto out_on;
		}
		if (strcmp(json_string_value(json_array_get(l, 1)), json_string_value(json_array_get(r, 1)))) {
			bad(err, "join column '%s' is %s on the left but %s on the right",
			    json_string_value(k), json_string_value(json_array_get(l, 1)),
			    json_string_value(json_array_get(r, 1)));
			goto out_on;
		}
	}
	/* a right column that the left has too becomes <name>_right */
	json_array_foreach(rc, i, c) {
		const char *n = json_string_value(json_array_get(c, 0));
		int key = 0;

		json_array_foreach(on, j, k)
			key |= !strcmp(json_string_value(k), n);
		if (key) {
			json_array_append_new(names, json_null());
		} else if (find_col(lc, n)) {
			char *r = au_asprintf("%s_right", n);

			if (!r || find_col(lc, r) || find_col(rc, r)) {
				bad(err, "column '%s' is on both sides, and so is '%s_right'", n, n);
				free(r);
				goto out_on;
			}
			json_array_append_new(names, json_string(r));
			free(r);
		} else {
			json_array_append_new(names, json_string(n));
		}
	}
	/*
	 * USING takes the key from the left side, which a FULL JOIN leaves at
	 * its default on a row only the right side has: the right's copy of
	 * it (__au_rkN) stands in there, picked by the left's marker __au_lh.
	 */
	if (au_buf_puts(sql, "SELECT ") < 0)
		goto oom;
	json_array_foreach(on, i, k)
		if (au_buf_printf(sql, "%s`__au_k%zu` AS `%s`", i ? ", " : "", i, json_string_value(k)) < 0)
			goto oom;
	json_array_foreach(lc, i, c)
		if (!in_list(on, json_string_value(json_array_get(c, 0))) &&
		    au_buf_printf(sql, ", `%s`", json_string_value(json_array_get(c, 0))) < 0)
			goto oom;
	json_array_foreach(names, i, c)
		if (json_is_string(c) && au_buf_printf(sql, ", `%s`", json_string_value(c)) < 0)
			goto oom;
	if (au_buf_puts(sql, " FROM (SELECT ") < 0)
		goto oom;
	json_array_foreach(on, i, k)
		if (au_buf_printf(sql, "if(`__au_lh` = 1, `%s`, `__au_rk%zu`) AS `__au_k%zu`, ",
				  json_string_value(k), i, i) < 0)
			goto oom;
	json_array_foreach(lc, i, c)
		if (!in_list(on, json_string_value(json_array_get(c, 0))) &&
		    au_buf_printf(sql, "`%s`, ", json_string_value(json_array_get(c, 0))) < 0)
			goto oom;
	json_array_foreach(names, i, c)
		if (json_is_string(c) && au_buf_printf(sql, "`%s`, ", json_string_value(c)) < 0)
			goto oom;
	if (au_buf_puts(sql, "1 AS `__au_one` FROM (SELECT *, 1 AS `__au_lh` FROM ") < 0 ||
	    put_view(o, &o->in[0], lc, NULL, sql, err) < 0)
		goto fail;
	if (au_buf_printf(sql, ") ALL %s JOIN (SELECT ", !strcmp(h, "inner") ? "INNER" :
			  !strcmp(h, "left") ? "LEFT" : "FULL") < 0)
		goto oom;
	json_array_foreach(on, i, k)
		if (au_buf_printf(sql, "`%s`, `%s` AS `__au_rk%zu`, ", json_string_value(k),
				  json_string_value(k), i) < 0)
			goto oom;
	json_array_foreach(rc, i, c)
		if (json_is_string(json_array_get(names, i)) &&
		    au_buf_printf(sql, "`%s` AS `%s`, ", json_string_value(json_array_get(c, 0)),
				  json_string_value(json_array_get(names, i))) < 0)
			goto oom;
	if (au_buf_puts(sql, "1 AS `__au_rh` FROM ") < 0 || put_view(o, &o->in[1], rc, NULL, sql, err) < 0)
		goto fail;
	if (au_buf_puts(sql, ") USING ") < 0)
		goto oom;
	json_array_foreach(on, i, k)
		if (au_buf_printf(sql, "%s`%s`", i ? ", " : "", json_string_value(k)) < 0)
			goto oom;
	if (au_buf_puts(sql, ")") < 0)
		goto oom;
	json_array_foreach(on, i, k)
		if (au_buf_printf(sql, "%s`%s`", i ? ", " : " ORDER BY ", json_string_value(k)) < 0)
			goto oom;
	rcode = 0;
	goto out_on;
oom:
	OOM();
fail:
out_on:
	json_decref((json_t *)on);
out:
	json_decref(lc);
	json_decref(rc);
	json_decref(names);
	return rcode;
}

static int build_concat(struct op *o, struct au_buf *sql, struct au_err *err)
{
	json_t *first = NULL, *cols;
	const json_t *c;
	size_t i, k;
	int rcode = 0;

	for (i = 0; i < o->nin && !rcode; i++) {
		if (!(cols = view_cols(o, &o->in[i], err)))
			rcode = -1;
		if (!rcode && i) {   /* the same names and types, in the first one's order */
			const json_t *d;

			if (json_array_size(cols) != json_array_size(first))
				rcode = bad(err, "concat needs the same columns: '%s' has %zu, '%s' %zu",
					    o->in[0].role, json_array_size(first), o->in[i].role,
					    json_array_size(cols));
			json_array_foreach(first, k, c) {
				if (rcode)
					break;
				d = find_col(cols, json_string_value(json_array_get(c, 0)));
				if (!d)
					rcode = bad(err, "concat needs the same columns: '%s' has no column '%s'",
						    o->in[i].role, json_string_value(json_array_get(c, 0)));
				else if (strcmp(json_string_value(json_array_get(c, 1)),
						json_string_value(json_array_get(d, 1))))
					rcode = bad(err, "concat needs the same columns: '%s' is %s in '%s' but "
						    "%s in '%s'", json_string_value(json_array_get(c, 0)),
						    json_string_value(json_array_get(c, 1)), o->in[0].role,
						    json_string_value(json_array_get(d, 1)), o->in[i].role);
			}
			json_decref(cols);
			cols = json_deep_copy(first);   /* the view in the first one's order */
		}
		if (!rcode && au_buf_puts(sql, i ? " UNION ALL SELECT " : "SELECT * FROM (SELECT ") < 0)
			rcode = OOM();
		json_array_foreach(cols, k, c)
			if (!rcode && au_buf_printf(sql, "%s`%s`", k ? ", " : "",
						    json_string_value(json_array_get(c, 0))) < 0)
				rcode = OOM();
		if (!rcode && au_buf_printf(sql, ", %zu AS `__au_src` FROM ", i) < 0)
			rcode = OOM();
		if (!rcode)
			rcode = put_view(o, &o->in[i], cols, NULL, sql, err);
		if (!i)
			first = cols;
		else
			json_decref(cols);
	}
	if (!rcode && au_buf_puts(sql, ") ORDER BY `__au_src`") < 0)
		rcode = OOM();
	/* the select list had __au_src: name the columns instead of * */
	if (!rcode) {
		struct au_buf s = AU_BUF_INIT;

		if (au_buf_puts(&s, "SELECT ") < 0)
			rcode = OOM();
		json_array_foreach(first, k, c)
			if (!rcode && au_buf_printf(&s, "%s`%s`", k ? ", " : "",
						    json_string_value(json_array_get(c, 0))) < 0)
				rcode = OOM();
		if (!rcode && (au_buf_append(&s, sql->data + 8, sql->len - 8) < 0))
			rcode = OOM();
		if (!rcode) {
			au_buf_release(sql);
			*sql = s;
		} else {
			au_buf_release(&s);
		}
	}
	json_decref(first);
	return rcode;
}

/* values: CREATE TABLE out (cols) and INSERT INTO out (cols) VALUES. */
static int build_values(struct op *o, struct au_buf *create, struct au_buf *insert,
			struct au_err *err)
{
	const json_t *cols = json_object_get(o->args, "columns"), *rows = json_object_get(o->args, "rows");
	const json_t *t, *row, *v;
	const char *name;
	char b[AU_ID_SHOWN_SIZE];
	size_t i, k, n = json_object_size(cols);
	const char **names;
	int rcode = 0;

	if (!json_is_object(cols) || !n)
		return bad(err, "values needs 'columns', a map {name: type}");
	if (!json_is_array(rows))
		return bad(err, "values needs 'rows', an array of arrays");
	if (json_array_size(rows) > MAX_VALUES_ROWS)
		return bad(err, "values takes at most %d rows", MAX_VALUES_ROWS);
	if (!(names = calloc(n, sizeof(*names))))
		return OOM();
	if (au_buf_printf(create, "CREATE TABLE `%s` (", o->out) < 0)
		rcode = OOM();
	i = 0;
	/* jansson keeps a map's keys in the order they came (msgpack's) */
	json_object_foreach((json_t *)cols, name, t) {
		if (rcode)
			break;
		if (!name_ok(name, NAME_MAX_LEN) || reserved(name))
			rcode = bad(err, "'columns': '%s' is not a valid column name", shown(b, name));
		else if (!json_is_string(t) || !values_type_ok(json_string_value(t)))
			rcode = bad(err, "'columns': column '%s' has type %s%s%s: values takes (U)Int8..64, "
				    "Float32/64, String, Date, DateTime, UUID, Nullable or Array of them",
				    name, json_is_string(t) ? "'" : "",
				    json_is_string(t) ? shown(b, json_string_value(t)) : "(not a string)",
				    json_is_string(t) ? "'" : "");
		else if (au_buf_printf(create, "%s`%s` %s", i ? ", " : "", name, json_string_value(t)) < 0)
			rcode = OOM();
		names[i++] = name;
	}
	if (!rcode && au_buf_puts(create, ") ENGINE = MergeTree ORDER BY tuple()") < 0)
		rcode = OOM();
	if (!rcode && au_buf_printf(insert, "INSERT INTO `%s` (", o->out) < 0)
		rcode = OOM();
	for (k = 0; !rcode && k < n; k++)
		if (au_buf_printf(insert, "%s`%s`", k ? ", " : "", names[k]) < 0)
			rcode = OOM();
	if (!rcode && au_buf_puts(insert, ") VALUES ") < 0)
		rcode = OOM();
	json_array_foreach(rows, i, row) {
		if (rcode)
			break;
		if (!json_is_array(row) || json_array_size(row) != n) {
			rcode = bad(err, "'rows': row %zu must be an array of %zu values", i, n);
			break;
		}
		if (au_buf_puts(insert, i ? ", (" : "(") < 0)
			rcode = OOM();
		json_array_foreach(row, k, v) {
			const char *type = json_string_value(json_object_get(cols, names[k]));
			char ph[96], *lit;
			json_t *one;

			if (rcode)
				break;
			/* bound here, one at a time, so that a bad value is named
			 * by its row and column */
			snprintf(ph, sizeof(ph), "{v:%s}", type);
			one = json_pack("{sO}", "v", v);
			lit = one ? au_sql_bind(ph, one, err) : NULL;
			json_decref(one);
			if (!lit) {
				const char *m = err->str;

				if (!strncmp(m, "parameter 'v': ", 15))
					m += 15;
				snprintf(ph, sizeof(ph), "%.80s", m);
				rcode = bad(err, "'rows': row %zu, column '%s': %s", i, names[k], ph);
			} else if ((k && au_buf_puts(insert, ", ") < 0) || au_buf_puts(insert, lit) < 0) {
				rcode = OOM();
			}
			free(lit);
		}
		if (!rcode && au_buf_puts(insert, ")") < 0)
			rcode = OOM();
	}
	free(names);
	return rcode;
}

/*
 * query: trusted callers only. The text must be one SELECT (or WITH ...
 * SELECT) statement: no ';' outside literals and comments, no FORMAT,
 * no INTO OUTFILE; {name:Type} placeholders are bound from "params". It
 * reads whatever the worker's ClickHouse user may read.
 */
static int build_query(struct op *o, struct au_buf *sql, struct au_err *err)
{
	const json_t *text = json_object_get(o->args, "sql"), *params = json_object_get(o->args, "params");
	const char *p, *end, *t, *first = NULL;
	size_t n, first_n = 0;
	char *bound;

	if (!json_is_string(text) || strlen(json_string_value(text)) != json_string_length(text))
		return bad(err, "query needs 'sql', a string");
	if (params && !json_is_null(params) && !json_is_object(params))
		return bad(err, "'params' must be a map");
	p = json_string_value(text);
	end = p + strlen(p);
	while ((t = au_sql_token(p, end, &n)) != NULL) {
		if (!first && !(n == 1 && *t == '('))
			first = t, first_n = n;
		if (n == 1 && *t == ';')
			return bad(err, "query takes one statement: no ';'");
		if ((n == 6 && !strncasecmp(t, "FORMAT", 6)) || (n == 7 && !strncasecmp(t, "OUTFILE", 7)))
			return bad(err, "query takes a SELECT without FORMAT or INTO OUTFILE");
		p = t + n;
	}
	if (!first || !((first_n == 6 && !strncasecmp(first, "SELECT", 6)) ||
			(first_n == 4 && !strncasecmp(first, "WITH", 4))))
		return bad(err, "query takes a SELECT statement");
	bound = au_sql_bind(json_string_value(text), json_is_object(params) ? params : NULL, err);
	if (!bound) {
		char msg[AU_ERRSTR_SIZE];

		snprintf(msg, sizeof(msg), "%s", err->str);
		return bad(err, "%s", msg);
	}
	n = au_buf_puts(sql, bound) < 0 ? (size_t)OOM() : 0;
	free(bound);
	return n ? -1 : 0;
}

/* The statements, once the inputs' columns are known: o->create (and
 * o->insert for values), bound. */
static int build(struct op *o, struct au_err *err)
{
	struct au_buf sel = AU_BUF_INIT, create = AU_BUF_INIT, insert = AU_BUF_INIT;
	int rcode;

	json_decref(o->params);
	o->params = json_object();
	o->nparams = 0;
	switch (o->def->kind) {
	case K_ARITH:
	case K_CMP:
		rcode = build_elementwise(o, &sel, err);
		break;
	case K_AGG:
		rcode = build_agg(o, &sel, err);
		break;
	case K_FILTER:
	case K_DISTINCT:
		rcode = build_view(o, &sel, err);
		break;
	case K_JOIN:
		rcode = build_join(o, &sel, err);
		break;
	case K_CONCAT:
		rcode = build_concat(o, &sel, err);
		break;
	case K_VALUES:
		rcode = build_values(o, &create, &insert, err);
		break;
	default:
		rcode = build_query(o, &sel, err);
		break;
	}
	if (!rcode && o->def->kind != K_VALUES &&
	    (au_buf_printf(&create, "CREATE TABLE `%s` ENGINE = MergeTree ORDER BY tuple() AS ", o->out) < 0 ||
	     au_buf_append(&create, sel.data, sel.len) < 0 ||
	     /* one thread: rows keep the order they were read and numbered in */
	     (o->def->kind != K_QUERY && au_buf_puts(&create, " SETTINGS max_threads = 1") < 0) ||
	     au_buf_puts(&create, "") < 0))
		rcode = OOM();
	if (!rcode && !(o->create = au_sql_bind((const char *)create.data, o->params, err)))
		rcode = -1;
	if (!rcode && insert.len && au_buf_puts(&insert, "") == 0 &&
	    !(o->insert = au_sql_bind((const char *)insert.data, o->params, err)))
		rcode = -1;
	if (rcode && err->code == AU_EINVAL && strncmp(err->str, TASK ": ", strlen(TASK) + 2)) {
		char msg[AU_ERRSTR_SIZE];

		snprintf(msg, sizeof(msg), "%s", err->str);
		bad(err, "%s", msg);
	}
	au_buf_release(&sel);
	au_buf_release(&create);
	au_buf_release(&insert);
	return rcode;
}

/* ---- the operation log ---- */

#define OPLOG_FLUSH_MS 200
#define OPLOG_FLUSH_ROWS 500
#define OPLOG_MAX_ROWS 100000
#define OPLOG_MAX_BYTES (64u << 20)
#define OPLOG_RETRY_MS 1000
#define OPLOG_TIMEOUT_MS 10000

static const char oplog_insert[] =
	"INSERT INTO au_operation_log (day, at_ms, operation, inputs, output, computation, flow, "
	"attempt, sql, rows) FORMAT JSONEachRow";

/*
 * One per process: the rows not yet written, as JSONEachRow lines. The
 * first `sending` bytes (`nsending` rows) are in flight; they leave the
 * buffer only once ClickHouse took them, so a server that is down keeps
 * them, up to OPLOG_MAX_ROWS (then new rows are dropped and counted).
 */
static struct {
	struct au_clickhouse *ch;
	struct event_base *base;
	struct event *timer;
	struct au_buf rows;
	size_t n, sending, nsending;
	int inflight, down;
	uint64_t dropped;
} oplog;

static void oplog_flush(void);

static void oplog_arm(unsigned ms)
{
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };

	if (oplog.timer && !evtimer_pending(oplog.timer, NULL))
		evtimer_add(oplog.timer, &tv);
}

static void oplog_tick(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	oplog_flush();
}

static void oplog_taken(size_t bytes, size_t n)
{
	memmove(oplog.rows.data, oplog.rows.data + bytes, oplog.rows.len - bytes);
	oplog.rows.len -= bytes;
	oplog.n -= n;
}

static void oplog_answer(struct au_ch_response *r, void *arg)
{
	(void)arg;
	oplog.inflight = 0;
	if (r->err.code) {
		if (!oplog.down)
			au_log(AU_LOG_WARN, "operation log: unable to write %zu rows to au_operation_log, "
			       "keeping them to try again: %s", oplog.nsending, r->err.str);
		oplog.down = 1;
		oplog_arm(OPLOG_RETRY_MS);
		return;
	}
	if (oplog.down)
		au_log(AU_LOG_INFO, "operation log: writing to au_operation_log again");
	oplog.down = 0;
	oplog_taken(oplog.sending, oplog.nsending);
	if (oplog.n)
		oplog_arm(oplog.n >= OPLOG_FLUSH_ROWS ? 0 : OPLOG_FLUSH_MS);
}

static void oplog_flush(void)
{
	struct au_ch_query q = { .sql = oplog_insert, .timeout_ms = OPLOG_TIMEOUT_MS };

	if (oplog.inflight || !oplog.n || !oplog.ch)
		return;
	q.data = (const char *)oplog.rows.data;
	q.data_len = oplog.rows.len;
	oplog.sending = oplog.rows.len;
	oplog.nsending = oplog.n;
	if (au_ch_send(oplog.ch, &q, oplog_answer, NULL) < 0) {
		oplog_arm(OPLOG_RETRY_MS);
		return;
	}
	oplog.inflight = 1;
}

void au_ch_oplog_detach(struct au_clickhouse *ch)
{
	struct au_ch_response r;
	struct au_ch_query q = { .sql = oplog_insert, .timeout_ms = 2000 };

	if (!ch || ch != oplog.ch)
		return;
	if (oplog.inflight)
		au_ch_cancel(ch, oplog_answer, NULL);
	oplog.inflight = 0;
	if (oplog.n) {
		q.data = (const char *)oplog.rows.data;
		q.data_len = oplog.rows.len;
		if (au_ch_query_sync(ch, &q, &r) == 0)
			oplog_taken(oplog.rows.len, oplog.n);
		else
			au_log(AU_LOG_WARN, "operation log: %zu rows not written to au_operation_log: %s",
			       oplog.n, r.err.str);
		au_ch_response_release(&r);
	}
	if (oplog.timer)
		event_free(oplog.timer);
	au_buf_release(&oplog.rows);
	memset(&oplog, 0, sizeof(oplog));
}

size_t au_ch_oplog_pending(void)
{
	return oplog.n;
}

static int dump_to_buf(const char *p, size_t n, void *arg)
{
	return au_buf_append(arg, p, n);
}

/* Appends o's row; the write happens later, on the loop. */
static void oplog_add(struct op *o, struct event_base *base)
{
	json_t *row, *inputs = json_array();
	uint64_t now = au_now_ms();
	time_t secs = (time_t)(now / 1000);
	struct tm tm;
	char day[16];
	const char *sql = o->insert ? o->insert : o->create;
	size_t before = oplog.rows.len, sqllen = strlen(sql);

	if (oplog.ch != o->ch || oplog.base != base) {
		if (oplog.ch)   /* another client (a test's): start over with this one */
			au_ch_oplog_detach(oplog.ch);
		oplog.ch = o->ch;
		oplog.base = base;
		oplog.timer = base ? evtimer_new(base, oplog_tick, NULL) : NULL;
	}
	if (oplog.n >= OPLOG_MAX_ROWS || oplog.rows.len >= OPLOG_MAX_BYTES) {
		if (!oplog.dropped++)
			au_log(AU_LOG_WARN, "operation log: %d rows wait to be written; dropping new ones",
			       OPLOG_MAX_ROWS);
		json_decref(inputs);
		return;
	}
	for (size_t i = 0; i < o->nin; i++)
		json_array_append_new(inputs, json_string(o->in[i].table));
	gmtime_r(&secs, &tm);
	strftime(day, sizeof(day), "%Y-%m-%d", &tm);
	/* cut before a UTF-8 sequence, not inside it */
	while (sqllen > SQL_LOGGED_MAX || (sqllen < strlen(sql) && ((unsigned char)sql[sqllen] & 0xc0) == 0x80))
		sqllen--;
	row = json_pack("{s:s, s:I, s:s, s:o, s:s, s:s, s:s, s:I, s:s#, s:I}", "day", day,
			"at_ms", (json_int_t)now, "operation", o->def->name, "inputs", inputs,
			"output", o->out, "computation", o->id, "flow", o->flow,
			"attempt", (json_int_t)o->attempt, "sql", sql, (int)sqllen,
			"rows", (json_int_t)o->rows);
	if (!row || json_dump_callback(row, dump_to_buf, &oplog.rows, JSON_COMPACT) < 0 ||
	    au_buf_puts(&oplog.rows, "\n") < 0) {
		oplog.rows.len = before;
		au_log(AU_LOG_WARN, "operation log: out of memory, row for '%s' lost", o->out);
	} else {
		oplog.n++;
	}
	json_decref(row);
	if (oplog.n >= OPLOG_FLUSH_ROWS && !oplog.inflight)
		oplog_flush();
	else if (!oplog.down)
		oplog_arm(OPLOG_FLUSH_MS);
}

/* ---- running it ---- */

static void on_step(struct au_ch_response *r, void *arg);

static void ignore_answer(struct au_ch_response *r, void *arg)
{
	(void)r;
	(void)arg;
}

static int send_step(struct op *o, enum step step, const char *sql, const char *data, size_t dlen)
{
	struct au_ch_query q = { .sql = sql, .timeout_ms = o->timeout_ms, .data = data,
				 .data_len = dlen };

	o->step = step;
	q.query_id = au_task_query_id(o->ctx);
	q.log_comment = o->log_comment;
	return au_ch_send(o->ch, &q, on_step, o);
}

static void op_done(struct op *o, int kind, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void op_done(struct op *o, int kind, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	if (o->step >= S_CREATE && o->ch) {
		/* a failed CREATE ... AS SELECT leaves the table it began */
		char drop[200];
		struct au_ch_query q = { .sql = drop, .timeout_ms = 10000 };

		snprintf(drop, sizeof(drop), "DROP TABLE IF EXISTS `%s`", o->out);
		au_ch_send(o->ch, &q, ignore_answer, NULL);
	}
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	au_task_fail(o->ctx, kind, "%s", msg);
	op_free(o);
}

static int next_step(struct op *o, enum step step)
{
	char sql[400];
	struct au_err err = { 0, "" };
	struct au_buf b = AU_BUF_INIT;
	int rc;

	switch (step) {
	case S_DESCRIBE: {
		json_t *names = json_array(), *p = json_object();
		char *s;

		for (size_t i = 0; i < o->nin; i++)
			json_array_append_new(names, json_string(o->in[i].table));
		json_object_set_new(p, "t", names);
		s = au_sql_bind("SELECT table, name, type FROM system.columns WHERE database = "
				"currentDatabase() AND has({t:Array(String)}, table) FORMAT JSONCompact",
				p, &err);
		json_decref(p);
		if (!s)
			return -1;
		rc = send_step(o, step, s, NULL, 0);
		free(s);
		return rc;
	}
	case S_DROP:
		snprintf(sql, sizeof(sql), "DROP TABLE IF EXISTS `%s`", o->out);
		return send_step(o, step, sql, NULL, 0);
	case S_CREATE:
		return send_step(o, step, o->create, NULL, 0);
	case S_INSERT:
		return send_step(o, step, o->insert, NULL, 0);
	case S_INFO:
		au_buf_printf(&b, "SELECT name, type, (SELECT count() FROM `%s`) FROM system.columns "
			      "WHERE database = currentDatabase() AND table = ", o->out);
		au_sql_quote(&b, o->out, strlen(o->out));
		au_buf_puts(&b, " FORMAT JSONCompact");
		rc = b.data ? send_step(o, step, (const char *)b.data, NULL, 0) : -1;
		au_buf_release(&b);
		return rc;
	}
	return -1;
}

static void advance(struct op *o, enum step step)
{
	if (next_step(o, step) < 0)
		op_done(o, AU_FAIL_RETRY, TASK ": unable to start the clickhouse request");
}

/* The data rows of a JSONCompact answer (a new reference), or NULL. */
static json_t *answer_data(struct au_ch_response *r, json_t **doc)
{
	*doc = json_loadb((const char *)r->body.data, r->body.len, 0, NULL);
	return json_is_array(json_object_get(*doc, "data")) ? json_object_get(*doc, "data") : NULL;
}

static void complete(struct op *o)
{
	struct au_buf out = AU_BUF_INIT;
	struct au_err err;
	json_t *res = json_pack("{ss sI sO}", "table", o->out, "rows", (json_int_t)o->rows,
				"columns", o->outcols);

	if (!res || au_jansson_to_msgpack(res, &out, &err) < 0) {
		au_task_fail(o->ctx, AU_FAIL_RETRY, TASK ": out of memory");
	} else {
		oplog_add(o, au_task_base(o->ctx));
		au_task_complete(o->ctx, out.data, out.len);
	}
	json_decref(res);
	au_buf_release(&out);
	op_free(o);
}

static void on_step(struct au_ch_response *r, void *arg)
{
	struct op *o = arg;
	struct au_err err = { 0, "" };
	json_t *doc = NULL, *data, *row;
	size_t i;

	if (r->err.code) {
		if (o->step == S_CREATE && r->ch_code == 395 && o->nin == 2 && !o->scalar &&
		    (o->def->kind == K_ARITH || o->def->kind == K_CMP))
			op_done(o, AU_FAIL_FOR_GOOD, TASK ": %s: 'left' and 'right' have different "
				"numbers of rows", o->def->name);
		else
			op_done(o, au_ch_fail_kind(o->ch, r, o->fail_on_timeout), TASK ": %s", r->err.str);
		return;
	}
	switch (o->step) {
	case S_DESCRIBE:
		if (!(data = answer_data(r, &doc))) {
			json_decref(doc);
			op_done(o, AU_FAIL_RETRY, TASK ": unexpected answer from clickhouse");
			return;
		}
		json_array_foreach(data, i, row) {
			const char *t = json_string_value(json_array_get(row, 0));
			json_t *list = json_object_get(o->cols, t ? t : "");

			if (!t)
				continue;
			if (!list)
				json_object_set_new(o->cols, t, list = json_array());
			json_array_append_new(list, json_pack("[OO]", json_array_get(row, 1),
							      json_array_get(row, 2)));
		}
		json_decref(doc);
		for (i = 0; i < o->nin; i++)
			if (!json_object_get(o->cols, o->in[i].table)) {
				op_done(o, AU_FAIL_FOR_GOOD, TASK ": '%s': no table '%s'", o->in[i].role,
					o->in[i].table);
				return;
			}
		if (build(o, &err) < 0) {
			op_done(o, err.code == AU_ENOMEM ? AU_FAIL_RETRY : AU_FAIL_FOR_GOOD, "%s", err.str);
			return;
		}
		advance(o, S_DROP);
		break;
	case S_DROP:
		advance(o, S_CREATE);
		break;
	case S_CREATE:
		advance(o, o->insert ? S_INSERT : S_INFO);
		break;
	case S_INSERT:
		advance(o, S_INFO);
		break;
	case S_INFO:
		if (!(data = answer_data(r, &doc)) || !json_array_size(data)) {
			json_decref(doc);
			op_done(o, AU_FAIL_RETRY, TASK ": table '%s' is gone", o->out);
			return;
		}
		o->outcols = json_object();
		json_array_foreach(data, i, row) {
			const json_t *n = json_array_get(row, 0), *t = json_array_get(row, 1);

			if (json_is_string(n) && json_is_string(t))
				json_object_set(o->outcols, json_string_value(n), (json_t *)t);
		}
		o->rows = strtoull(json_string_value(json_array_get(json_array_get(data, 0), 2)) ?
				   json_string_value(json_array_get(json_array_get(data, 0), 2)) : "0",
				   NULL, 10);
		json_decref(doc);
		complete(o);
		return;
	}
}

static void on_cancel(void *arg)
{
	struct op *o = arg;

	au_ch_cancel(o->ch, on_step, o);
	au_ch_kill_query_async(o->ch, au_task_query_id(o->ctx));
	op_free(o);
}

static void run_op(struct au_task_ctx *ctx, const struct au_computation *c, void *arg)
{
	struct op *o = calloc(1, sizeof(*o));
	struct au_err err = { 0, "" };
	char b[AU_ID_SHOWN_SIZE];
	const char *tp;

	(void)arg;
	if (!o || !(o->cols = json_object())) {
		free(o);
		au_task_fail(ctx, AU_FAIL_RETRY, TASK ": out of memory");
		return;
	}
	o->ctx = ctx;
	o->ch = au_task_clickhouse(ctx);
	snprintf(o->id, sizeof(o->id), "%s", c->id);
	snprintf(o->flow, sizeof(o->flow), "%s", c->flow && *c->flow ? c->flow : c->id);
	o->attempt = c->attempts;
	o->timeout_ms = c->timeout_ms;
	o->fail_on_timeout = c->fail_on_timeout;
	tp = au_computation_header(c, "traceparent");
	o->log_comment = tp ? au_strdup(tp) : NULL;
	if (c->flow && *c->flow && !hex32(c->flow)) {
		au_task_fail(ctx, AU_FAIL_FOR_GOOD, TASK ": the flow id '%s' is not 32 lowercase hex "
			     "digits", shown(b, c->flow));
		op_free(o);
		return;
	}
	if ((c->args_len && au_msgpack_to_jansson(c->args, c->args_len, &o->args, &err) < 0) ||
	    !json_is_object(o->args))
		bad(&err, "the arguments must be a map");
	else
		parse_args(o, &err);
	if (err.code) {
		au_task_fail(ctx, err.code == AU_ENOMEM ? AU_FAIL_RETRY : AU_FAIL_FOR_GOOD, "%s", err.str);
		op_free(o);
		return;
	}
	if (!o->ch) {
		au_task_fail(ctx, AU_FAIL_FOR_GOOD, TASK ": no clickhouse server configured");
		op_free(o);
		return;
	}
	if (o->nin) {
		if (next_step(o, S_DESCRIBE) < 0) {
			au_task_fail(ctx, AU_FAIL_RETRY, TASK ": unable to start the clickhouse request");
			op_free(o);
			return;
		}
	} else {   /* values, query: nothing to look up */
		if (build(o, &err) < 0) {
			au_task_fail(ctx, err.code == AU_ENOMEM ? AU_FAIL_RETRY : AU_FAIL_FOR_GOOD, "%s",
				     err.str);
			op_free(o);
			return;
		}
		if (next_step(o, S_DROP) < 0) {
			au_task_fail(ctx, AU_FAIL_RETRY, TASK ": unable to start the clickhouse request");
			op_free(o);
			return;
		}
	}
	/* the same hook serves every step: one request is out at a time */
	au_task_on_cancel(ctx, on_cancel, o);
}

int au_ch_ops_add(struct au_registry *reg)
{
	return au_registry_add(reg, TASK, run_op, NULL);
}

