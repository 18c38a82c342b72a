/*
 * json.c - JSON, the human mirror of the wire format (CLI arguments, the
 * HTTP API), converted to and from msgpack through jansson.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <msgpack.h>

#include "core.h"

/*
 * msgpack -> JSON. Every value the codec accepts has a rendering, so a
 * well-formed value only fails to convert when memory runs out
 * (docs/wire-format.md, "The JSON mirror"): what JSON cannot spell becomes
 * a string or a small tagged object, as ClickHouse quotes its 64-bit
 * integers and replaces bytes that are not UTF-8.
 */

static json_t *oom_null(struct au_err *err)
{
	au_seterr(err, AU_ENOMEM, "out of memory");
	return NULL;
}

/* s[0..n) as a JSON string, each byte that is not part of valid UTF-8
 * replaced by U+FFFD. */
static json_t *text(const char *s, size_t n, struct au_err *err)
{
	const unsigned char *p = (const unsigned char *)s;
	struct au_buf b = AU_BUF_INIT;
	size_t i = 0, len;
	json_t *j;

	if ((j = json_stringn(s, n)))
		return j;
	while (i < n) {
		if ((len = au_utf8_seq(p + i, n - i))) {
			if (au_buf_append(&b, p + i, len) < 0)
				break;
			i += len;
		} else if (au_buf_append(&b, "\xef\xbf\xbd", 3) < 0) {
			break;
		} else {
			i++;
		}
	}
	j = i == n ? json_stringn(b.len ? (const char *)b.data : "", b.len) : NULL;
	au_buf_release(&b);
	return j ? j : oom_null(err);
}

/* p[0..n) in base64 (RFC 4648, padded). */
static json_t *base64(const char *p, size_t n, struct au_err *err)
{
	static const char digits[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	const unsigned char *u = (const unsigned char *)p;
	char *out = au_malloc((n + 2) / 3 * 4 + 1), *o = out;
	size_t i;
	json_t *j;

	if (!out)
		return oom_null(err);
	for (i = 0; i + 2 < n; i += 3) {
		*o++ = digits[u[i] >> 2];
		*o++ = digits[(u[i] & 3) << 4 | u[i + 1] >> 4];
		*o++ = digits[(u[i + 1] & 15) << 2 | u[i + 2] >> 6];
		*o++ = digits[u[i + 2] & 63];
	}
	if (i < n) {
		*o++ = digits[u[i] >> 2];
		*o++ = digits[(u[i] & 3) << 4 | (i + 1 < n ? u[i + 1] >> 4 : 0)];
		*o++ = i + 1 < n ? digits[(u[i + 1] & 15) << 2] : '=';
		*o++ = '=';
	}
	*o = '\0';
	j = json_string(out);
	free(out);
	return j ? j : oom_null(err);
}

/* {"<tag>": value}, and "<dkey>": data when dkey is not NULL; takes the
 * references (NULL ones are an OOM of the caller's). */
static json_t *tagged(const char *tag, json_t *value, const char *dkey, json_t *data,
		      struct au_err *err)
{
	json_t *j = json_object();

	if (!j || !value || (dkey && !data)) {
		json_decref(value);
		json_decref(data);
		json_decref(j);
		return oom_null(err);
	}
	/* json_object_set_new takes its value's reference even when it fails */
	if (json_object_set_new(j, tag, value) < 0) {
		json_decref(data);
		json_decref(j);
		return oom_null(err);
	}
	if (dkey && json_object_set_new(j, dkey, data) < 0) {
		json_decref(j);
		return oom_null(err);
	}
	return j;
}

static json_t *from_object(const msgpack_object *o, struct au_err *err);

/* The key a map key becomes: a string as its text, anything else as its
 * compact JSON text (1 -> "1", null -> "null", [1,2] -> "[1,2]"). */
static char *key_of(const msgpack_object *k, size_t *len, struct au_err *err)
{
	json_t *j = from_object(k, err);
	char *s;

	if (!j)
		return NULL;
	if (json_is_string(j)) {
		*len = json_string_length(j);
		s = au_malloc(*len + 1);
		if (s)
			memcpy(s, json_string_value(j), *len + 1);
	} else {
		s = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
		*len = s ? strlen(s) : 0;
	}
	json_decref(j);
	if (!s)
		au_seterr(err, AU_ENOMEM, "out of memory");
	return s;
}

static json_t *from_object(const msgpack_object *o, struct au_err *err)
{
	json_t *j = NULL, *item;
	char num[24];
	uint32_t i;

	switch (o->type) {
	case MSGPACK_OBJECT_NIL:
		j = json_null();
		break;
	case MSGPACK_OBJECT_BOOLEAN:
		j = json_boolean(o->via.boolean);
		break;
	case MSGPACK_OBJECT_POSITIVE_INTEGER:
		/* jansson's integers are int64_t: those above it become their
		 * decimal text, as ClickHouse quotes UInt64 in JSON */
		if (o->via.u64 <= INT64_MAX) {
			j = json_integer((json_int_t)o->via.u64);
			break;
		}
		snprintf(num, sizeof(num), "%llu", (unsigned long long)o->via.u64);
		j = json_string(num);
		break;
	case MSGPACK_OBJECT_NEGATIVE_INTEGER:
		j = json_integer(o->via.i64);
		break;
	case MSGPACK_OBJECT_FLOAT32:
	case MSGPACK_OBJECT_FLOAT64:
		/* JSON cannot spell NaN and the infinities */
		if (isnan(o->via.f64))
			j = json_string("nan");
		else if (isinf(o->via.f64))
			j = json_string(o->via.f64 > 0 ? "inf" : "-inf");
		else
			j = json_real(o->via.f64);
		break;
	case MSGPACK_OBJECT_STR:
		return text(o->via.str.ptr, o->via.str.size, err);
	case MSGPACK_OBJECT_BIN:
		/* a bin of text reads as a string; other bytes as base64 */
		if ((j = json_stringn(o->via.bin.ptr, o->via.bin.size)))
			return j;
		return tagged("bin", base64(o->via.bin.ptr, o->via.bin.size, err), NULL, NULL, err);
	case MSGPACK_OBJECT_EXT:
		return tagged("ext", json_integer(o->via.ext.type), "data",
			      base64(o->via.ext.ptr, o->via.ext.size, err), err);
	case MSGPACK_OBJECT_ARRAY:
		if (!(j = json_array()))
			break;
		for (i = 0; i < o->via.array.size; i++) {
			if (!(item = from_object(&o->via.array.ptr[i], err)))
				goto fail;
			if (json_array_append_new(j, item) < 0)
				goto nomem;
		}
		return j;
	case MSGPACK_OBJECT_MAP:
		if (!(j = json_object()))
			break;
		for (i = 0; i < o->via.map.size; i++) {
			const msgpack_object_kv *kv = &o->via.map.ptr[i];
			size_t klen;
			char *key;
			int rc;

			if (!(key = key_of(&kv->key, &klen, err)))
				goto fail;
			if (!(item = from_object(&kv->val, err))) {
				free(key);
				goto fail;
			}
			/* the key is valid UTF-8 now: this fails on OOM only. Of
			 * two keys that render alike, the later wins. */
			rc = json_object_setn_new(j, key, klen, item);
			free(key);
			if (rc < 0)
				goto nomem;
		}
		return j;
	default:
		AU_BUG("unknown msgpack type %d", (int)o->type);
	}
	return j ? j : oom_null(err);
nomem:
	au_seterr(err, AU_ENOMEM, "out of memory");
fail:
	json_decref(j);
	return NULL;
}

int au_msgpack_to_jansson(const unsigned char *buf, size_t len, struct json_t **out,
			  struct au_err *err)
{
	msgpack_zone zone;
	msgpack_object obj;
	size_t off = 0;
	int rc;

	*out = NULL;
	/* the pre-scan bounds what msgpack_unpack will allocate */
	if (au_msgpack_check(buf, len, AU_MAX_DEPTH, err) < 0)
		return -1;
	if (!msgpack_zone_init(&zone, 2048))
		return au_seterr(err, AU_ENOMEM, "out of memory");
	rc = msgpack_unpack((const char *)buf, len, &off, &zone, &obj);
	if (rc != MSGPACK_UNPACK_SUCCESS)
		rc = au_seterr(err, AU_ENOMEM, "out of memory");   /* all else was checked */
	else if (!(*out = from_object(&obj, err)))
		rc = -1;
	else
		rc = 0;
	msgpack_zone_destroy(&zone);
	return rc;
}

/*
 * JSON -> msgpack. jansson reads integers into int64_t and refuses larger
 * ones, so before it reads a text, mark_big() rewrites each integer literal
 * above INT64_MAX (up to UINT64_MAX) as a string of BIG_MARK and its
 * digits, which to_msgpack() turns back into a uint64. No string of the
 * text can be taken for one: a text that needs the rewrite may not also
 * have a string with U+0000 in it, the mark's first character.
 */
#define BIG_MARK "\0au:u64:"
#define BIG_MARK_LEN (sizeof(BIG_MARK) - 1)
#define BIG_MARK_JSON "\\u0000au:u64:"
/* what the rewrite adds to an integer literal: the quotes and the mark */
#define BIG_ADDED (sizeof(BIG_MARK_JSON) - 1 + 2)

static int to_msgpack(const json_t *j, struct au_buf *out, unsigned depth, int big,
		      struct au_err *err)
{
	const char *key;
	size_t i, klen;
	json_t *item;
	int rc;

	if ((json_is_array(j) || json_is_object(j)) && ++depth > AU_MAX_DEPTH)
		return au_seterr(err, AU_EINVAL, "json nested deeper than %d", AU_MAX_DEPTH);
	switch (json_typeof(j)) {
	case JSON_NULL:
		rc = au_mp_nil(out);
		break;
	case JSON_TRUE:
	case JSON_FALSE:
		rc = au_mp_bool(out, json_is_true(j));
		break;
	case JSON_INTEGER:
		rc = au_mp_int(out, json_integer_value(j));
		break;
	case JSON_REAL:
		rc = au_mp_double(out, json_real_value(j));
		break;
	case JSON_STRING:
		if (big && json_string_length(j) > BIG_MARK_LEN &&
		    !memcmp(json_string_value(j), BIG_MARK, BIG_MARK_LEN)) {
			rc = au_mp_uint(out, strtoull(json_string_value(j) + BIG_MARK_LEN, NULL, 10));
			break;
		}
		rc = au_mp_str(out, json_string_value(j), json_string_length(j));
		break;
	case JSON_ARRAY:
		rc = au_mp_array(out, (uint32_t)json_array_size(j));
		for (i = 0; !rc && i < json_array_size(j); i++)
			if (to_msgpack(json_array_get(j, i), out, depth, big, err) < 0)
				return -1;
		break;
	case JSON_OBJECT:
		rc = au_mp_map(out, (uint32_t)json_object_size(j));
		/* jansson's iteration API takes a non-const object; it does not
		 * change it */
		json_object_keylen_foreach((json_t *)j, key, klen, item) {
			if (rc)
				break;
			rc = au_mp_str(out, key, klen);
			if (!rc && to_msgpack(item, out, depth, big, err) < 0)
				return -1;
		}
		break;
	default:
		AU_BUG("unknown json type %d", (int)json_typeof(j));
	}
	return rc ? au_seterr(err, AU_ENOMEM, "out of memory") : 0;
}

int au_jansson_to_msgpack(const struct json_t *j, struct au_buf *out, struct au_err *err)
{
	size_t start = out->len;

	if (to_msgpack(j, out, 0, 0, err) < 0) {
		out->len = start;
		return -1;
	}
	return 0;
}

/* One rewritten literal: its line and where it ends in the new text. */
struct big_at {
	int line;
	size_t end;
};

struct marked {
	char *text;                 /* the rewritten text, malloc'ed; NULL: no rewrite */
	struct big_at *at;          /* each rewrite, in order */
	size_t n;
};

/* 1 when c may come before a number in JSON (outside strings). */
static int before_number(char c)
{
	return c == '[' || c == ',' || c == ':' || c == ' ' || c == '\t' || c == '\n' ||
	       c == '\r';
}

/* Fills m (m->text NULL when the text has no integer above INT64_MAX);
 * -1 with err on OOM, or when such a text has a string with U+0000. */
static int mark_big(const char *json, struct marked *m, struct au_err *err)
{
	struct au_buf b = AU_BUF_INIT, at = AU_BUF_INIT;
	const char *p = json, *copied = json, *q;
	int in_str = 0, nul = 0, line = 1, rc = 0;
	size_t n = 0;

	memset(m, 0, sizeof(*m));
	while (*p) {
		if (*p == '\n')
			line++;
		if (in_str) {
			if (*p == '\\' && p[1]) {
				nul |= !strncmp(p + 1, "u0000", 5);
				p++;
			} else if (*p == '"') {
				in_str = 0;
			}
			p++;
			continue;
		}
		if (*p == '"') {
			in_str = 1;
			p++;
			continue;
		}
		if (!(*p >= '0' && *p <= '9') || (p > json && !before_number(p[-1]))) {
			p++;
			continue;
		}
		/* an unsigned integer literal: digits not followed by a fraction
		 * or an exponent (a '-' before it is another character) */
		for (q = p; *q >= '0' && *q <= '9'; q++)
			;
		if (*q != '.' && *q != 'e' && *q != 'E' && *p != '0' && q - p >= 19 && q - p <= 20 &&
		    (q - p < 20 || strncmp(p, "18446744073709551615", 20) <= 0) &&
		    (q - p > 19 || strncmp(p, "9223372036854775807", 19) > 0)) {
			struct big_at one;

			rc |= au_buf_append(&b, copied, (size_t)(p - copied));
			rc |= au_buf_puts(&b, "\"" BIG_MARK_JSON);
			rc |= au_buf_append(&b, p, (size_t)(q - p));
			rc |= au_buf_puts(&b, "\"");
			one.line = line;
			one.end = b.len;
			rc |= au_buf_append(&at, &one, sizeof(one));
			copied = q;
			n++;
		}
		p = q;
	}
	if (!rc && n)
		rc = au_buf_append(&b, copied, strlen(copied) + 1);
	if (!rc && n && nul)
		rc = au_seterr(err, AU_EINVAL, "json with an integer above %lld cannot have a string"
			       " with \\u0000 too", (long long)INT64_MAX);
	else if (rc)
		rc = au_seterr(err, AU_ENOMEM, "out of memory");
	else if (n) {
		m->text = (char *)au_buf_detach(&b, NULL);
		m->at = (struct big_at *)au_buf_detach(&at, NULL);
		m->n = n;
		if (!m->text || !m->at) {
			free(m->text);
			free(m->at);
			memset(m, 0, sizeof(*m));
			rc = au_seterr(err, AU_ENOMEM, "out of memory");
		}
	}
	au_buf_release(&b);
	au_buf_release(&at);
	return rc;
}

int au_json_to_msgpack(const char *json, unsigned char **out, size_t *len, struct au_err *err)
{
	struct au_buf b = AU_BUF_INIT;
	struct marked m;
	json_error_t jerr;
	json_t *j;
	size_t i;
	int rc;

	*out = NULL;
	*len = 0;
	if (mark_big(json, &m, err) < 0)
		return -1;
	j = json_loads(m.text ? m.text : json, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
	if (!j) {
		/* the position in the text as given: the rewrites before it on
		 * its line made it longer */
		for (i = 0; i < m.n; i++)
			if (m.at[i].line == jerr.line && m.at[i].end <= (size_t)jerr.position)
				jerr.column -= (int)BIG_ADDED;
		/* a rewritten literal where a key goes: the text has no other
		 * NUL (mark_big refused it), so jansson's complaint is ours */
		if (m.n && strstr(jerr.text, "NUL byte in object key"))
			snprintf(jerr.text, sizeof(jerr.text), "object keys must be strings");
		free(m.text);
		free(m.at);
		return au_seterr(err, AU_EINVAL, "invalid json at line %d column %d: %s", jerr.line,
				 jerr.column, jerr.text);
	}
	rc = to_msgpack(j, &b, 0, m.text != NULL, err);
	free(m.text);
	free(m.at);
	json_decref(j);
	if (rc < 0) {
		au_buf_release(&b);
		return -1;
	}
	*out = au_buf_detach(&b, len);
	return *out ? 0 : au_seterr(err, AU_ENOMEM, "out of memory");
}

char *au_msgpack_to_json(const unsigned char *buf, size_t len, struct au_err *err)
{
	json_t *j;
	char *s;

	if (au_msgpack_to_jansson(buf, len, &j, err) < 0)
		return NULL;
	s = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
	json_decref(j);
	if (!s)
		au_seterr(err, AU_ENOMEM, "out of memory");
	return s;
}
