/*
 * sql.c - client-side parameter binding and limits for the SQL we send.
 * ClickHouse 18.16 has no server-side query parameters, so values are
 * checked against their declared type and written as literals here; and
 * since a deeply nested expression crashes that server, every statement is
 * measured before it leaves.
 */
#include <ctype.h>
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "clickhouse.h"

static int is_word(int c)
{
	return isalnum(c) || c == '_';
}

/* If s[i] opens a quoted literal or identifier ('...', "...", `...`) or a
 * comment (-- or / *), returns the index just after it (len when it is not
 * closed); otherwise returns i. */
static size_t skip_opaque(const char *s, size_t len, size_t i)
{
	char q = s[i];

	if (q == '\'' || q == '"' || q == '`') {
		for (i++; i < len; i++) {
			if (s[i] == '\\')
				i++;
			else if (s[i] == q && i + 1 < len && s[i + 1] == q)
				i++;
			else if (s[i] == q)
				return i + 1;
		}
		return len;
	}
	if (q == '-' && i + 1 < len && s[i + 1] == '-') {
		const char *nl = memchr(s + i, '\n', len - i);

		return nl ? (size_t)(nl - s) + 1 : len;
	}
	if (q == '/' && i + 1 < len && s[i + 1] == '*') {
		const char *e = memmem(s + i + 2, len - i - 2, "*/", 2);

		return e ? (size_t)(e - s) + 2 : len;
	}
	return i;
}

const char *au_sql_token(const char *p, const char *end, size_t *n)
{
	size_t len = (size_t)(end - p), i = 0, j;

	for (;;) {
		while (i < len && isspace((unsigned char)p[i]))
			i++;
		if (i == len)
			return NULL;
		j = skip_opaque(p, len, i);
		if (j == i || p[i] == '\'' || p[i] == '"' || p[i] == '`')
			break;
		i = j;   /* a comment */
	}
	if (j == i) {
		j = i + 1;
		if (is_word((unsigned char)p[i]))
			while (j < len && is_word((unsigned char)p[j]))
				j++;
	}
	*n = j - i;
	return p + i;
}

#define OPERATOR_CHARS "+-*/%=<>!|?:"

int au_sql_check(const char *sql, size_t len, struct au_err *err)
{
	size_t i = 0, depth = 0, ops = 0;

	if (len > AU_SQL_MAX_BYTES)
		return au_seterr(err, AU_ETOOBIG, "sql is %zu bytes, over the limit of %u",
				 len, AU_SQL_MAX_BYTES);
	while (i < len) {
		size_t j = skip_opaque(sql, len, i);
		unsigned char c = (unsigned char)sql[i];

		if (j > i) {
			i = j;
		} else if (is_word(c)) {
			for (j = i; j < len && (is_word((unsigned char)sql[j]) || sql[j] == '.'); j++)
				/* 1.5e-3: the sign belongs to the number */
				if (isdigit(c) && (sql[j] == 'e' || sql[j] == 'E') && j + 1 < len &&
				    (sql[j + 1] == '-' || sql[j + 1] == '+'))
					j++;
			if ((j - i == 3 && !strncasecmp(sql + i, "and", 3)) ||
			    (j - i == 2 && !strncasecmp(sql + i, "or", 2)))
				ops++;
			i = j;
		} else if (c && strchr(OPERATOR_CHARS, c)) {
			while (i < len && sql[i] && strchr(OPERATOR_CHARS, sql[i]) &&
			       skip_opaque(sql, len, i) == i)
				i++;
			ops++;
		} else {
			if (c == '(' || c == '[')
				depth++;
			else if ((c == ')' || c == ']') && depth)
				depth--;
			if (depth > AU_SQL_MAX_DEPTH)
				return au_seterr(err, AU_EINVAL,
						 "sql too deeply nested (more than %d levels of brackets)",
						 AU_SQL_MAX_DEPTH);
			i++;
		}
		if (ops > AU_SQL_MAX_OPERATORS)
			return au_seterr(err, AU_EINVAL,
					 "sql too deeply nested (more than %d operators)",
					 AU_SQL_MAX_OPERATORS);
	}
	return 0;
}

int au_sql_quote(struct au_buf *out, const char *s, size_t n)
{
	size_t start = 0;

	if (au_buf_puts(out, "'") < 0)
		return -1;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		char esc[5];

		switch (c) {
		case '\\': strcpy(esc, "\\\\"); break;
		case '\'': strcpy(esc, "\\'"); break;
		case '\n': strcpy(esc, "\\n"); break;
		case '\r': strcpy(esc, "\\r"); break;
		case '\t': strcpy(esc, "\\t"); break;
		case '\0': strcpy(esc, "\\0"); break;
		default:
			if (c >= 0x20 && c != 0x7f)
				continue;
			snprintf(esc, sizeof(esc), "\\x%02X", c);
		}
		if (au_buf_append(out, s + start, i - start) < 0 || au_buf_puts(out, esc) < 0)
			return -1;
		start = i + 1;
	}
	return au_buf_append(out, s + start, n - start) < 0 ? -1 : au_buf_puts(out, "'");
}

/* Length of the identifier at s ([A-Za-z_][A-Za-z0-9_]*), 0 if none. */
static size_t ident_len(const char *s)
{
	size_t n = 0;

	if (!isalpha((unsigned char)s[0]) && s[0] != '_')
		return 0;
	while (is_word((unsigned char)s[n]))
		n++;
	return n;
}

int au_sql_identifier_valid(const char *s)
{
	size_t n = s ? ident_len(s) : 0;

	if (n && s[n] == '.')
		s += n + 1, n = ident_len(s);
	return n && s[n] == '\0';
}

/* ---- binding ---- */

static const char *json_kind(const json_t *v)
{
	switch (json_typeof(v)) {
	case JSON_OBJECT: return "object";
	case JSON_ARRAY: return "array";
	case JSON_STRING: return "string";
	case JSON_INTEGER: return "integer";
	case JSON_REAL: return "real";
	case JSON_TRUE:
	case JSON_FALSE: return "boolean";
	default: return "null";
	}
}

/* One placeholder being bound: for messages. */
struct bind {
	const char *name;
	size_t name_len;
	struct au_err *err;
};

static int type_error(const struct bind *b, const char *type, size_t tlen, const json_t *v)
{
	return au_seterr(b->err, AU_EINVAL, "parameter '%.*s': expected %.*s, got %s",
			 (int)b->name_len, b->name, (int)tlen, type, json_kind(v));
}

static int range_error(const struct bind *b, const char *type, size_t tlen, const char *what)
{
	return au_seterr(b->err, AU_EINVAL, "parameter '%.*s': %s is out of range for %.*s",
			 (int)b->name_len, b->name, what, (int)tlen, type);
}

/* "Name(inner)": 1 and the inner part when type is that wrapper. */
static int wrapper(const char *type, size_t tlen, const char *name, const char **in, size_t *ilen)
{
	size_t n = strlen(name);

	if (tlen < n + 2 || strncmp(type, name, n) != 0 || type[n] != '(' || type[tlen - 1] != ')')
		return 0;
	*in = type + n + 1;
	*ilen = tlen - n - 2;
	while (*ilen && isspace((unsigned char)**in))
		(*in)++, (*ilen)--;
	while (*ilen && isspace((unsigned char)(*in)[*ilen - 1]))
		(*ilen)--;
	return 1;
}

static int type_is(const char *type, size_t tlen, const char *name)
{
	return strlen(name) == tlen && !strncmp(type, name, tlen);
}

/* Value of n decimal digits at s, -1 if any is not a digit. */
static int digits(const char *s, int n)
{
	int v = 0;

	for (int i = 0; i < n; i++) {
		if (!isdigit((unsigned char)s[i]))
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	return v;
}

/* 'YYYY-MM-DD' within the range of Date (1970..2105). */
static int date_valid(const char *s)
{
	static const int mdays[] = { 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
	int y = digits(s, 4), m = digits(s + 5, 2), d = digits(s + 8, 2);

	if (s[4] != '-' || s[7] != '-' || y < 1970 || y > 2105 || m < 1 || m > 12 || d < 1 ||
	    d > mdays[m - 1])
		return 0;
	return m != 2 || d < 29 || (y % 4 == 0 && (y % 100 != 0 || y % 400 == 0));
}

static int datetime_valid(const char *s, size_t n)
{
	return n == 19 && date_valid(s) && s[10] == ' ' && s[13] == ':' && s[16] == ':' &&
	       digits(s + 11, 2) >= 0 && digits(s + 11, 2) < 24 &&
	       digits(s + 14, 2) >= 0 && digits(s + 14, 2) < 60 &&
	       digits(s + 17, 2) >= 0 && digits(s + 17, 2) < 60;
}

static int uuid_valid(const char *s, size_t n)
{
	if (n != 36)
		return 0;
	for (size_t i = 0; i < n; i++)
		if ((i == 8 || i == 13 || i == 18 || i == 23) ? s[i] != '-'
							       : !isxdigit((unsigned char)s[i]))
			return 0;
	return 1;
}

static const struct {
	const char *name;
	long long min;
	unsigned long long max;
} int_types[] = {
	{ "Int8", INT8_MIN, INT8_MAX }, { "Int16", INT16_MIN, INT16_MAX },
	{ "Int32", INT32_MIN, INT32_MAX }, { "Int64", INT64_MIN, INT64_MAX },
	{ "UInt8", 0, UINT8_MAX }, { "UInt16", 0, UINT16_MAX },
	{ "UInt32", 0, UINT32_MAX }, { "UInt64", 0, UINT64_MAX },
};

/* An integer: a JSON integer, or for 64-bit types a decimal string (JSON
 * integers cannot hold all of UInt64). */
static int format_int(struct au_buf *out, const struct bind *b, const char *type, size_t tlen,
		      long long min, unsigned long long max, const json_t *v)
{
	char text[32];

	if (json_is_integer(v)) {
		long long x = json_integer_value(v);

		snprintf(text, sizeof(text), "%lld", x);
		if (x < min || (x > 0 && (unsigned long long)x > max))
			return range_error(b, type, tlen, text);
		return au_buf_puts(out, text);
	}
	if (json_is_string(v) && max >= INT64_MAX) {
		const char *s = json_string_value(v), *d = s + (*s == '-');
		char *end;

		if (!*d || strspn(d, "0123456789") != strlen(d) || strlen(s) > 24 ||
		    strlen(s) != json_string_length(v))
			return au_seterr(b->err, AU_EINVAL,
					 "parameter '%.*s': '%.24s' is not a decimal integer",
					 (int)b->name_len, b->name, s);
		errno = 0;
		if (*s == '-') {
			long long x = strtoll(s, &end, 10);

			if (errno || min == 0)
				return range_error(b, type, tlen, s);
			snprintf(text, sizeof(text), "%lld", x);
		} else {
			unsigned long long x = strtoull(s, &end, 10);

			if (errno || x > max)
				return range_error(b, type, tlen, s);
			snprintf(text, sizeof(text), "%llu", x);
		}
		return au_buf_puts(out, text);
	}
	return type_error(b, type, tlen, v);
}

/* The shortest text that reads back as the same value. */
static int format_float(struct au_buf *out, const struct bind *b, const char *type, size_t tlen,
			int is32, const json_t *v)
{
	double d;
	char text[40];

	if (!json_is_number(v))
		return type_error(b, type, tlen, v);
	d = json_number_value(v);
	snprintf(text, sizeof(text), "%g", d);
	if (!isfinite(d) || (is32 && fabs(d) > FLT_MAX))
		return range_error(b, type, tlen, text);
	for (int prec = is32 ? 6 : 15; prec <= (is32 ? 9 : 17); prec++) {
		snprintf(text, sizeof(text), "%.*g", prec, d);
		if (is32 ? strtof(text, NULL) == (float)d : strtod(text, NULL) == d)
			break;
	}
	return au_buf_puts(out, text);
}

static int format_value(struct au_buf *out, const struct bind *b, const char *type, size_t tlen,
			const json_t *v, int depth);

static int format_array(struct au_buf *out, const struct bind *b, const char *type,
			size_t tlen, const char *in, size_t ilen, const json_t *v, int depth)
{
	size_t i;
	json_t *item;

	if (!json_is_array(v))
		return type_error(b, type, tlen, v);
	if (au_buf_puts(out, "[") < 0)
		return -1;
	json_array_foreach(v, i, item) {
		if ((i && au_buf_puts(out, ", ") < 0) ||
		    format_value(out, b, in, ilen, item, depth + 1) < 0)
			return -1;
	}
	return au_buf_puts(out, "]");
}

/* A string type: the value quoted, optionally inside a conversion. */
static int format_string(struct au_buf *out, const struct bind *b, const char *type,
			 size_t tlen, const json_t *v)
{
	const char *s, *fn = NULL, *in;
	size_t n, ilen;

	if (!json_is_string(v))
		return type_error(b, type, tlen, v);
	s = json_string_value(v);
	n = json_string_length(v);
	if (type_is(type, tlen, "Date")) {
		if (n != 10 || !date_valid(s))
			goto bad;
		fn = "toDate";
	} else if (type_is(type, tlen, "DateTime")) {
		if (!datetime_valid(s, n))
			goto bad;
		fn = "toDateTime";
	} else if (type_is(type, tlen, "UUID")) {
		if (!uuid_valid(s, n))
			goto bad;
		fn = "toUUID";
	} else if (wrapper(type, tlen, "FixedString", &in, &ilen)) {
		char *end;
		unsigned long max = strtoul(in, &end, 10);

		if (!isdigit((unsigned char)*in) || end != in + ilen || !max || max > AU_SQL_MAX_BYTES)
			return au_seterr(b->err, AU_EINVAL, "parameter '%.*s': bad type '%.*s'",
					 (int)b->name_len, b->name, (int)tlen, type);
		if (n > max)
			return au_seterr(b->err, AU_EINVAL,
					 "parameter '%.*s': %zu bytes do not fit in %.*s",
					 (int)b->name_len, b->name, n, (int)tlen, type);
	}
	if ((fn && au_buf_printf(out, "%s(", fn) < 0) || au_sql_quote(out, s, n) < 0 ||
	    (fn && au_buf_puts(out, ")") < 0))
		return -1;
	return 0;
bad:
	return au_seterr(b->err, AU_EINVAL, "parameter '%.*s': '%.40s' is not a valid %.*s",
			 (int)b->name_len, b->name, s, (int)tlen, type);
}

static int format_value(struct au_buf *out, const struct bind *b, const char *type, size_t tlen,
			const json_t *v, int depth)
{
	const char *in;
	size_t ilen;

	if (depth > AU_SQL_MAX_DEPTH)
		return au_seterr(b->err, AU_EINVAL, "parameter '%.*s': type nested too deeply",
				 (int)b->name_len, b->name);
	for (size_t i = 0; i < AU_ARRAY_SIZE(int_types); i++)
		if (type_is(type, tlen, int_types[i].name))
			return format_int(out, b, type, tlen, int_types[i].min, int_types[i].max, v);
	if (type_is(type, tlen, "Float32") || type_is(type, tlen, "Float64"))
		return format_float(out, b, type, tlen, type[5] == '3', v);
	if (type_is(type, tlen, "String") || type_is(type, tlen, "Date") ||
	    type_is(type, tlen, "DateTime") || type_is(type, tlen, "UUID") ||
	    wrapper(type, tlen, "FixedString", &in, &ilen))
		return format_string(out, b, type, tlen, v);
	if (type_is(type, tlen, "Bool")) {
		if (!json_is_boolean(v))
			return type_error(b, type, tlen, v);
		return au_buf_puts(out, json_is_true(v) ? "1" : "0");
	}
	if (type_is(type, tlen, "Identifier")) {
		const char *s = json_string_value(v), *dot;

		if (!json_is_string(v))
			return type_error(b, type, tlen, v);
		if (!au_sql_identifier_valid(s) || strlen(s) != json_string_length(v))
			return au_seterr(b->err, AU_EINVAL,
					 "parameter '%.*s': '%.40s' is not a valid identifier",
					 (int)b->name_len, b->name, s);
		dot = strchr(s, '.');
		if (dot)
			return au_buf_printf(out, "`%.*s`.`%s`", (int)(dot - s), s, dot + 1);
		return au_buf_printf(out, "`%s`", s);
	}
	if (wrapper(type, tlen, "Nullable", &in, &ilen)) {
		if (json_is_null(v))
			return au_buf_puts(out, "NULL");
		return format_value(out, b, in, ilen, v, depth + 1);
	}
	if (wrapper(type, tlen, "Array", &in, &ilen))
		return format_array(out, b, type, tlen, in, ilen, v, depth);
	return au_seterr(b->err, AU_EINVAL, "parameter '%.*s': unknown type '%.*s'",
			 (int)b->name_len, b->name, (int)tlen, type);
}

/* Binds the placeholder "{name:Type}" at sql[0..len). */
static int bind_one(struct au_buf *out, const char *ph, size_t len, const json_t *params,
		    struct au_err *err)
{
	struct bind b = { .err = err };
	const char *p = ph + 1, *end = ph + len - 1, *type;
	char name[128];
	json_t *v;

	while (p < end && isspace((unsigned char)*p))
		p++;
	b.name = p;
	b.name_len = ident_len(p);
	p += b.name_len;
	while (p < end && isspace((unsigned char)*p))
		p++;
	if (!b.name_len || b.name_len >= sizeof(name) || p >= end || *p != ':')
		return au_seterr(err, AU_EINVAL, "malformed placeholder '%.*s'",
				 (int)(len > 60 ? 60 : len), ph);
	for (type = p + 1; type < end && isspace((unsigned char)*type); type++)
		;
	while (end > type && isspace((unsigned char)end[-1]))
		end--;
	memcpy(name, b.name, b.name_len);
	name[b.name_len] = '\0';
	v = params ? json_object_get(params, name) : NULL;
	if (!v)
		return au_seterr(err, AU_EINVAL, "parameter '%s' is missing", name);
	/* "1-{x}" with x = -5 must not become the comment "1--5" */
	if (out->len && out->data[out->len - 1] == '-' && au_buf_puts(out, " ") < 0)
		return -1;
	return format_value(out, &b, type, (size_t)(end - type), v, 0);
}

char *au_sql_bind(const char *sql, const struct json_t *params, struct au_err *err)
{
	struct au_buf out = AU_BUF_INIT;
	size_t len = strlen(sql), i = 0, start = 0;

	if (params && !json_is_object(params)) {
		au_seterr(err, AU_EINVAL, "params must be an object");
		return NULL;
	}
	au_clearerr(err);
	while (i < len) {
		size_t j = skip_opaque(sql, len, i);
		const char *close;

		if (j > i) {
			i = j;
			continue;
		}
		if (sql[i] != '{') {
			i++;
			continue;
		}
		close = memchr(sql + i, '}', len - i);
		if (!close) {
			au_seterr(err, AU_EINVAL, "malformed placeholder '%.60s'", sql + i);
			goto fail;
		}
		if (au_buf_append(&out, sql + start, i - start) < 0 ||
		    bind_one(&out, sql + i, (size_t)(close - sql) + 1 - i, params, err) < 0)
			goto fail;
		i = start = (size_t)(close - sql) + 1;
	}
	if (au_buf_append(&out, sql + start, len - start) < 0)
		goto fail;
	if (au_sql_check((const char *)out.data, out.len, err) < 0) {
		au_buf_release(&out);
		return NULL;
	}
	return (char *)au_buf_detach(&out, NULL);
fail:
	if (!err || !err->code)
		au_seterr(err, AU_ENOMEM, "out of memory");
	au_buf_release(&out);
	return NULL;
}
