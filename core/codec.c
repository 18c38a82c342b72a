/*
 * codec.c - the wire format (docs/wire-format.md): computations and records
 * as msgpack maps, and the bounds pre-scan every untrusted message goes
 * through first.
 *
 * Decoding walks the bytes itself instead of asking msgpack-c to build
 * objects: it allocates nothing but the fields it keeps, and keeps args and
 * result as the exact bytes the sender wrote (a signature over them stays
 * valid). Encoding uses msgpack_packer, writing straight into an au_buf.
 */
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#include "core.h"

/* How a failure is reported: decoding says "malformed ..." (AU_EPROTO),
 * encoding "invalid ..." (AU_EINVAL). */
struct ctx {
	struct au_err *err;
	int code;
	const char *what;
};

static int fail(const struct ctx *x, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int fail(const struct ctx *x, const char *fmt, ...)
{
	char msg[AU_ERRSTR_SIZE];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return au_seterr(x->err, x->code, "%s: %s", x->what, msg);
}

static int oom(struct au_err *err)
{
	return au_seterr(err, AU_ENOMEM, "out of memory");
}

static int too_big(struct au_err *err, const char *what, size_t len, unsigned limit)
{
	return au_seterr(err, AU_ETOOBIG, "%s too large: %zu bytes (limit %u)", what, len, limit);
}

/* ---- reading: a bounds-checked walk over msgpack bytes ---- */

enum mp_kind { MP_NIL, MP_BOOL, MP_UINT, MP_NEG, MP_FLOAT, MP_STR, MP_BIN, MP_EXT, MP_ARRAY, MP_MAP };

/* One value's header. Signed encodings of values >= 0 read as MP_UINT, so
 * MP_NEG always holds a negative number. */
struct mp_val {
	enum mp_kind kind;
	uint64_t u;                   /* MP_UINT, MP_BOOL */
	int64_t i;                    /* MP_NEG */
	const unsigned char *data;    /* MP_STR, MP_BIN payload; MP_EXT type byte */
	uint64_t n;                   /* payload bytes, array elements, map pairs */
};

struct mp_reader {
	const unsigned char *p;
	size_t len, pos;
	unsigned max_depth;
	const struct ctx *x;
};

static uint64_t be(const unsigned char *p, unsigned n)
{
	uint64_t v = 0;

	while (n--)
		v = v << 8 | *p++;
	return v;
}

/* The next n bytes, or NULL when the input ends first. */
static const unsigned char *take(struct mp_reader *r, uint64_t n)
{
	const unsigned char *p;

	if (n > r->len - r->pos) {
		fail(r->x, "truncated at byte %zu", r->len);
		return NULL;
	}
	p = r->p + r->pos;
	r->pos += (size_t)n;
	return p;
}

/* Reads the field of w bytes that follows a type byte (w = 1, 2, 4, 8). */
static int take_be(struct mp_reader *r, unsigned w, uint64_t *out)
{
	const unsigned char *p = take(r, w);

	if (!p)
		return -1;
	*out = be(p, w);
	return 0;
}

static int payload(struct mp_reader *r, struct mp_val *v, enum mp_kind kind, uint64_t n)
{
	v->kind = kind;
	v->n = n;
	/* an ext carries a type byte before its n data bytes */
	v->data = take(r, kind == MP_EXT ? n + 1 : n);
	return v->data ? 0 : -1;
}

static int container(struct mp_reader *r, struct mp_val *v, enum mp_kind kind, uint64_t n)
{
	/* Every element takes at least one byte. A count the bytes left cannot
	 * hold is a lie that would make msgpack-c reserve 24 bytes per element. */
	if ((kind == MP_MAP ? 2 * n : n) > r->len - r->pos)
		return fail(r->x, "%s of %llu elements in %zu bytes", kind == MP_MAP ? "map" : "array",
			    (unsigned long long)n, r->len);
	v->kind = kind;
	v->n = n;
	return 0;
}

static int mp_head(struct mp_reader *r, struct mp_val *v)
{
	const unsigned char *p = take(r, 1);
	uint64_t n;
	unsigned c, w;

	if (!p)
		return -1;
	c = *p;
	if (c <= 0x7f) {
		v->kind = MP_UINT;
		v->u = c;
		return 0;
	}
	if (c >= 0xe0) {
		v->kind = MP_NEG;
		v->i = (int8_t)c;
		return 0;
	}
	if (c <= 0x8f)
		return container(r, v, MP_MAP, c & 0x0f);
	if (c <= 0x9f)
		return container(r, v, MP_ARRAY, c & 0x0f);
	if (c <= 0xbf)
		return payload(r, v, MP_STR, c & 0x1f);
	switch (c) {
	case 0xc0:
		v->kind = MP_NIL;
		return 0;
	case 0xc2: case 0xc3:
		v->kind = MP_BOOL;
		v->u = c == 0xc3;
		return 0;
	case 0xc4: case 0xc5: case 0xc6:
		return take_be(r, 1u << (c - 0xc4), &n) < 0 ? -1 : payload(r, v, MP_BIN, n);
	case 0xc7: case 0xc8: case 0xc9:
		return take_be(r, 1u << (c - 0xc7), &n) < 0 ? -1 : payload(r, v, MP_EXT, n);
	case 0xca: case 0xcb:
		v->kind = MP_FLOAT;
		return take_be(r, c == 0xca ? 4 : 8, &n);
	case 0xcc: case 0xcd: case 0xce: case 0xcf:
		v->kind = MP_UINT;
		return take_be(r, 1u << (c - 0xcc), &v->u);
	case 0xd0: case 0xd1: case 0xd2: case 0xd3:
		w = 1u << (c - 0xd0);
		if (take_be(r, w, &n) < 0)
			return -1;
		if (w < 8 && n >> (8 * w - 1))
			n |= ~UINT64_C(0) << (8 * w);   /* sign-extend */
		v->kind = (int64_t)n < 0 ? MP_NEG : MP_UINT;
		v->i = (int64_t)n;
		v->u = n;
		return 0;
	case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8:
		return payload(r, v, MP_EXT, 1u << (c - 0xd4));
	case 0xd9: case 0xda: case 0xdb:
		return take_be(r, 1u << (c - 0xd9), &n) < 0 ? -1 : payload(r, v, MP_STR, n);
	case 0xdc: case 0xdd:
		return take_be(r, c == 0xdc ? 2 : 4, &n) < 0 ? -1 : container(r, v, MP_ARRAY, n);
	case 0xde: case 0xdf:
		return take_be(r, c == 0xde ? 2 : 4, &n) < 0 ? -1 : container(r, v, MP_MAP, n);
	default:
		return fail(r->x, "invalid byte 0x%02x at byte %zu", c, r->pos - 1);
	}
}

/* Skips one value that sits inside `depth` open containers. */
static int mp_skip(struct mp_reader *r, unsigned depth)
{
	struct mp_val v;
	uint64_t i, elems;

	if (mp_head(r, &v) < 0)
		return -1;
	if (v.kind != MP_ARRAY && v.kind != MP_MAP)
		return 0;
	if (depth >= r->max_depth)
		return fail(r->x, "nesting deeper than %u", r->max_depth);
	elems = v.kind == MP_MAP ? 2 * v.n : v.n;
	for (i = 0; i < elems; i++)
		if (mp_skip(r, depth + 1) < 0)
			return -1;
	return 0;
}

static int check(const unsigned char *buf, size_t len, unsigned max_depth, const struct ctx *x)
{
	/* msgpack-c cannot unpack deeper than 32 (it answers NOMEM), so no
	 * caller has a use for more; the cap also bounds our recursion. */
	struct mp_reader r = { buf, len, 0, max_depth < AU_MAX_DEPTH ? max_depth : AU_MAX_DEPTH, x };

	if (mp_skip(&r, 0) < 0)
		return -1;
	if (r.pos != len)
		return fail(x, "trailing bytes at byte %zu", r.pos);
	return 0;
}

int au_msgpack_check(const unsigned char *buf, size_t len, unsigned max_depth,
		     struct au_err *err)
{
	const struct ctx x = { err, AU_EPROTO, "malformed msgpack" };

	return check(buf, len, max_depth, &x);
}

/* ---- decoding the top-level map into fields ---- */

/* Where a key's value lies in the message; p is NULL when the key is absent. */
struct slice {
	const unsigned char *p;
	size_t len;
};

static int require(const struct slice *f, const struct ctx *x, const char *key)
{
	return f->p ? 0 : fail(x, "missing '%s'", key);
}

/* The value of a present field; the field bytes were checked already. */
static void field_head(const struct slice *f, const struct ctx *x, struct mp_val *v)
{
	struct mp_reader r = { f->p, f->len, 0, 0, x };

	mp_head(&r, v);
}

static int get_uint(const struct slice *f, const struct ctx *x, const char *key, uint64_t max,
		    uint64_t *out)
{
	struct mp_val v;

	if (!f->p)
		return 0;
	field_head(f, x, &v);
	if (v.kind != MP_UINT && v.kind != MP_NEG)
		return fail(x, "'%s' must be an integer", key);
	if (v.kind == MP_NEG || v.u > max)
		return fail(x, "'%s' must be between 0 and %llu", key, (unsigned long long)max);
	*out = v.u;
	return 0;
}

/*
 * Splits a checked message, a map with string keys, into the values of the
 * known keys (keys[0] is "v"). Unknown keys are skipped: a newer writer may
 * add some. A known key given twice is refused rather than guessed at.
 */
static int read_map(const unsigned char *buf, size_t len, const char *const *keys, size_t nkeys,
		    struct slice *f, const struct ctx *x)
{
	struct mp_reader r = { buf, len, 0, AU_MAX_DEPTH, x };
	struct mp_val v;
	uint64_t i, version = 0;
	size_t k;

	memset(f, 0, nkeys * sizeof(*f));
	if (mp_head(&r, &v) < 0)
		return -1;
	if (v.kind != MP_MAP)
		return fail(x, "not a map");
	for (i = v.n; i > 0; i--) {
		struct mp_val key;
		size_t start;

		if (mp_head(&r, &key) < 0)
			return -1;
		if (key.kind != MP_STR)
			return fail(x, "map keys must be strings");
		for (k = 0; k < nkeys; k++)
			if (strlen(keys[k]) == key.n && !memcmp(keys[k], key.data, key.n))
				break;
		start = r.pos;
		if (mp_skip(&r, 1) < 0)
			return -1;
		if (k == nkeys)
			continue;
		if (f[k].p)
			return fail(x, "duplicate key '%s'", keys[k]);
		f[k].p = buf + start;
		f[k].len = r.pos - start;
	}
	if (require(&f[0], x, keys[0]) < 0 || get_uint(&f[0], x, keys[0], UINT64_MAX, &version) < 0)
		return -1;
	if (version != AU_WIRE_VERSION)
		return au_seterr(x->err, AU_EPROTO, "unsupported wire version %llu",
				 (unsigned long long)version);
	return 0;
}

static int get_u32(const struct slice *f, const struct ctx *x, const char *key, uint32_t *out)
{
	uint64_t u = *out;

	if (get_uint(f, x, key, UINT32_MAX, &u) < 0)
		return -1;
	*out = (uint32_t)u;
	return 0;
}

static int get_int(const struct slice *f, const struct ctx *x, const char *key, int *out)
{
	struct mp_val v;

	if (!f->p)
		return 0;
	field_head(f, x, &v);
	if (v.kind != MP_UINT && v.kind != MP_NEG)
		return fail(x, "'%s' must be an integer", key);
	if (v.kind == MP_UINT ? v.u > INT_MAX : v.i < INT_MIN)
		return fail(x, "'%s' out of range", key);
	*out = v.kind == MP_UINT ? (int)v.u : (int)v.i;
	return 0;
}

/* A string payload that may become a C string: no NUL inside. */
static int text_of(const struct mp_val *v, const struct ctx *x, const char *label)
{
	if (v->kind != MP_STR)
		return fail(x, "%s must be a string", label);
	if (memchr(v->data, '\0', v->n))
		return fail(x, "%s must not contain NUL bytes", label);
	return 0;
}

static int get_str(const struct slice *f, const struct ctx *x, const char *key, char **out)
{
	char label[40];
	struct mp_val v;

	if (!f->p)
		return 0;
	field_head(f, x, &v);
	snprintf(label, sizeof(label), "'%s'", key);
	if (text_of(&v, x, label) < 0)
		return -1;
	*out = au_strndup((const char *)v.data, v.n);
	return *out ? 0 : oom(x->err);
}

static int get_id(const struct slice *f, const struct ctx *x, char id[AU_ID_SIZE])
{
	struct mp_val v;

	field_head(f, x, &v);
	if (v.kind == MP_STR && v.n == AU_ID_SIZE - 1) {
		memcpy(id, v.data, AU_ID_SIZE - 1);
		id[AU_ID_SIZE - 1] = '\0';
		if (au_id_valid(id))
			return 0;
	}
	return fail(x, "'id' must be 32 lowercase hex digits");
}

static int get_status(const struct slice *f, const struct ctx *x, enum au_status *out)
{
	struct mp_val v;
	int st;

	field_head(f, x, &v);
	if (v.kind != MP_STR)
		return fail(x, "'status' must be a string");
	for (st = AU_PENDING; st <= AU_UNKNOWN; st++) {
		const char *name = au_status_name((enum au_status)st);

		if (strlen(name) == v.n && !memcmp(name, v.data, v.n)) {
			*out = (enum au_status)st;
			return 0;
		}
	}
	return fail(x, "'status' must be a status name, not '%.*s'", v.n < 32 ? (int)v.n : 32,
		    (const char *)v.data);
}

static int get_raw(const struct slice *f, const struct ctx *x, unsigned char **out, size_t *len)
{
	if (!f->p)
		return 0;
	*out = au_malloc(f->len);
	if (!*out)
		return oom(x->err);
	memcpy(*out, f->p, f->len);
	*len = f->len;
	return 0;
}

/* ---- rules both directions share ---- */

static int task_char(int c)
{
	return c > ' ' && c < 0x7f;
}

static int queue_char(int c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '_' || c == '.' || c == ':' || c == '-';
}

static int check_text(const struct ctx *x, const char *label, const char *s, size_t min, size_t max,
		      int (*ok)(int c), const char *allowed)
{
	size_t n, i;

	if (!s)
		return fail(x, "missing %s", label);
	n = strlen(s);
	if (n < min || n > max)
		return fail(x, "%s must be %zu to %zu bytes long", label, min, max);
	for (i = 0; ok && i < n; i++)
		if (!ok((unsigned char)s[i]))
			return fail(x, "%s may only hold %s", label, allowed);
	return 0;
}

#define AU_MAX_HEADER_TEXT 1024

static int check_computation(const struct au_computation *c, const struct ctx *x)
{
	size_t i;

	if (!au_id_valid(c->id))
		return fail(x, "'id' must be 32 lowercase hex digits");
	if (check_text(x, "'task'", c->task, 1, 200, task_char, "printable ascii without spaces") < 0 ||
	    (c->queue && check_text(x, "'queue'", c->queue, 1, 100, queue_char,
				    "letters, digits and _.:-") < 0))
		return -1;
	if (c->priority < AU_PRIORITY_MIN || c->priority > AU_PRIORITY_MAX)
		return fail(x, "'priority' must be between %d and %d", AU_PRIORITY_MIN, AU_PRIORITY_MAX);
	if (c->max_attempts < 1 || c->max_attempts > 1000)
		return fail(x, "'max_attempts' must be between 1 and 1000");
	if (c->nheaders > AU_MAX_HEADERS)
		return fail(x, "'headers' may hold at most %d entries", AU_MAX_HEADERS);
	if (c->flow && !au_id_valid(c->flow))
		return fail(x, "'flow' must be 32 lowercase hex digits");
	if (c->ndeps > AU_MAX_DEPS)
		return fail(x, "'deps' may hold at most %d ids", AU_MAX_DEPS);
	for (i = 0; i < c->ndeps; i++) {
		if (!au_id_valid(c->deps[i]))
			return fail(x, "'deps' must hold ids of 32 lowercase hex digits");
		if (!strcmp(c->deps[i], c->id))
			return fail(x, "'deps': a computation cannot wait for itself");
	}
	if (c->dep_policy < AU_DEP_FAIL || c->dep_policy > AU_DEP_CONTINUE)
		return fail(x, "'on_dep_fail' must be fail, cancel, ignore or continue");
	for (i = 0; i < c->nheaders; i++)
		if (check_text(x, "a header key", c->headers[i].key, 1, AU_MAX_HEADER_TEXT, NULL, NULL) < 0 ||
		    check_text(x, "a header value", c->headers[i].value, 0, AU_MAX_HEADER_TEXT, NULL, NULL) < 0)
			return -1;
	return 0;
}

/* ---- computations ---- */

enum {
	C_V, C_ID, C_TASK, C_QUEUE, C_PRIORITY, C_RUN_AT, C_MAX_ATTEMPTS, C_TIMEOUT_MS, C_TTL_S,
	C_CREATED_AT, C_HEADERS, C_ON_TIMEOUT, C_FLOW, C_DEPS, C_ON_DEP_FAIL, C_ARGS, C_NKEYS
};

static const char *const computation_keys[C_NKEYS] = {
	"v", "id", "task", "queue", "priority", "run_at", "max_attempts", "timeout_ms", "ttl_s",
	"created_at", "headers", "on_timeout", "flow", "deps", "on_dep_fail", "args",
};

static int buf_write(void *data, const char *p, size_t n)
{
	return au_buf_append(data, p, n);
}

static int pack_text(msgpack_packer *pk, const char *s)
{
	return msgpack_pack_str_with_body(pk, s, strlen(s));
}

int au_computation_encode(const struct au_computation *c, struct au_buf *out, struct au_err *err)
{
	const struct ctx x = { err, AU_EINVAL, "invalid computation" };
	const char *const *k = computation_keys;
	size_t start = out->len, i;
	msgpack_packer pk;
	int rc;

	if (check_computation(c, &x) < 0)
		return -1;
	/* the args sit one level below the map */
	if (c->args_len && check(c->args, c->args_len, AU_MAX_DEPTH - 1, &x) < 0)
		return -1;
	msgpack_packer_init(&pk, out, buf_write);
	/* headers and on_timeout only when set: the smallest encoding */
	rc = msgpack_pack_map(&pk, C_NKEYS - (c->nheaders ? 0 : 1) - (c->fail_on_timeout ? 0 : 1) -
				       (c->flow ? 0 : 1) - (c->ndeps ? 0 : 1) - (c->dep_policy ? 0 : 1));
	rc |= pack_text(&pk, k[C_V]) | msgpack_pack_uint32(&pk, AU_WIRE_VERSION);
	rc |= pack_text(&pk, k[C_ID]) | pack_text(&pk, c->id);
	rc |= pack_text(&pk, k[C_TASK]) | pack_text(&pk, c->task);
	rc |= pack_text(&pk, k[C_QUEUE]) | pack_text(&pk, c->queue ? c->queue : AU_DEFAULT_QUEUE);
	rc |= pack_text(&pk, k[C_PRIORITY]) | msgpack_pack_int(&pk, c->priority);
	rc |= pack_text(&pk, k[C_RUN_AT]) | msgpack_pack_uint64(&pk, c->run_at_ms);
	rc |= pack_text(&pk, k[C_MAX_ATTEMPTS]) | msgpack_pack_uint32(&pk, c->max_attempts);
	rc |= pack_text(&pk, k[C_TIMEOUT_MS]) | msgpack_pack_uint32(&pk, c->timeout_ms);
	rc |= pack_text(&pk, k[C_TTL_S]) | msgpack_pack_uint32(&pk, c->ttl_s);
	rc |= pack_text(&pk, k[C_CREATED_AT]) | msgpack_pack_uint64(&pk, c->created_at_ms);
	if (c->nheaders) {
		rc |= pack_text(&pk, k[C_HEADERS]) | msgpack_pack_map(&pk, c->nheaders);
		for (i = 0; i < c->nheaders; i++)
			rc |= pack_text(&pk, c->headers[i].key) | pack_text(&pk, c->headers[i].value);
	}
	if (c->fail_on_timeout)
		rc |= pack_text(&pk, k[C_ON_TIMEOUT]) | pack_text(&pk, "fail");
	if (c->flow)
		rc |= pack_text(&pk, k[C_FLOW]) | pack_text(&pk, c->flow);
	if (c->ndeps) {
		rc |= pack_text(&pk, k[C_DEPS]) | msgpack_pack_array(&pk, c->ndeps);
		for (i = 0; i < c->ndeps; i++)
			rc |= pack_text(&pk, c->deps[i]);
	}
	if (c->dep_policy)
		rc |= pack_text(&pk, k[C_ON_DEP_FAIL]) | pack_text(&pk, au_dep_policy_name(c->dep_policy));
	rc |= pack_text(&pk, k[C_ARGS]);
	rc |= c->args_len ? au_buf_append(out, c->args, c->args_len) : msgpack_pack_nil(&pk);
	if (rc) {
		out->len = start;
		return oom(err);
	}
	if (out->len - start > AU_MAX_MESSAGE) {
		rc = too_big(err, "computation", out->len - start, AU_MAX_MESSAGE);
		out->len = start;
	}
	return rc;
}

static int get_headers(const struct slice *f, const struct ctx *x, struct au_computation *c)
{
	struct mp_reader r = { f->p, f->len, 0, 0, x };
	struct mp_val v, key, val;

	if (!f->p)
		return 0;
	mp_head(&r, &v);
	if (v.kind != MP_MAP)
		return fail(x, "'headers' must be a map");
	if (v.n > AU_MAX_HEADERS)
		return fail(x, "'headers' may hold at most %d entries", AU_MAX_HEADERS);
	if (!v.n)
		return 0;
	c->headers = au_calloc(v.n, sizeof(*c->headers));
	if (!c->headers)
		return oom(x->err);
	for (; c->nheaders < v.n; c->nheaders++) {
		struct au_header *h = &c->headers[c->nheaders];

		/* values are strings, so each mp_head reads one whole entry */
		if (mp_head(&r, &key) < 0 || text_of(&key, x, "a header key") < 0 ||
		    mp_head(&r, &val) < 0 || text_of(&val, x, "a header value") < 0)
			return -1;
		h->key = au_strndup((const char *)key.data, key.n);
		h->value = au_strndup((const char *)val.data, val.n);
		if (!h->key || !h->value) {
			c->nheaders++;   /* so that release frees the half-made entry */
			return oom(x->err);
		}
	}
	return 0;
}

/* "retry" (the default) or "fail" */
static int get_on_timeout(const struct slice *f, const struct ctx *x, struct au_computation *c)
{
	char *v = NULL;

	if (!f->p)
		return 0;
	if (get_str(f, x, "on_timeout", &v) < 0)
		return -1;
	if (strcmp(v, "retry") != 0 && strcmp(v, "fail") != 0) {
		free(v);
		return fail(x, "'on_timeout' must be \"retry\" or \"fail\"");
	}
	c->fail_on_timeout = !strcmp(v, "fail");
	free(v);
	return 0;
}

/* "flow": an id; "deps": an array of ids; "on_dep_fail": a policy name */
static int get_flow(const struct slice *f, const struct ctx *x, struct au_computation *c)
{
	struct mp_reader r;
	struct mp_val v, id;
	char *name = NULL;
	int rc;

	if (f[C_FLOW].p && get_str(&f[C_FLOW], x, "flow", &c->flow) < 0)
		return -1;
	if (f[C_ON_DEP_FAIL].p) {
		if (get_str(&f[C_ON_DEP_FAIL], x, "on_dep_fail", &name) < 0)
			return -1;
		rc = au_dep_policy_parse(name, &c->dep_policy);
		free(name);
		if (rc < 0)
			return fail(x, "'on_dep_fail' must be fail, cancel, ignore or continue");
	}
	if (!f[C_DEPS].p)
		return 0;
	r = (struct mp_reader){ f[C_DEPS].p, f[C_DEPS].len, 0, 0, x };
	mp_head(&r, &v);
	if (v.kind != MP_ARRAY)
		return fail(x, "'deps' must be an array of ids");
	if (v.n > AU_MAX_DEPS)
		return fail(x, "'deps' may hold at most %d ids", AU_MAX_DEPS);
	if (!v.n)
		return 0;
	if (!(c->deps = au_calloc(v.n, sizeof(*c->deps))))
		return oom(x->err);
	for (; c->ndeps < v.n; c->ndeps++) {
		if (mp_head(&r, &id) < 0 || text_of(&id, x, "a dependency") < 0)
			return -1;
		if (id.n != AU_ID_SIZE - 1)
			return fail(x, "'deps' must hold ids of 32 lowercase hex digits");
		memcpy(c->deps[c->ndeps], id.data, id.n);
		c->deps[c->ndeps][id.n] = 0;
	}
	return 0;
}

int au_computation_decode(const unsigned char *buf, size_t len, struct au_computation *c,
			  struct au_err *err)
{
	const struct ctx x = { err, AU_EPROTO, "malformed computation" };
	struct slice f[C_NKEYS];
	uint64_t run_at = 0, created_at = 0;

	au_computation_init(c);
	if (len > AU_MAX_MESSAGE)
		return too_big(err, "computation", len, AU_MAX_MESSAGE);
	if (check(buf, len, AU_MAX_DEPTH, &x) < 0 ||
	    read_map(buf, len, computation_keys, C_NKEYS, f, &x) < 0 ||
	    require(&f[C_ID], &x, "id") < 0 || require(&f[C_TASK], &x, "task") < 0)
		return -1;
	if (get_id(&f[C_ID], &x, c->id) < 0 ||
	    get_str(&f[C_TASK], &x, "task", &c->task) < 0 ||
	    get_str(&f[C_QUEUE], &x, "queue", &c->queue) < 0 ||
	    get_int(&f[C_PRIORITY], &x, "priority", &c->priority) < 0 ||
	    get_uint(&f[C_RUN_AT], &x, "run_at", UINT64_MAX, &run_at) < 0 ||
	    get_u32(&f[C_MAX_ATTEMPTS], &x, "max_attempts", &c->max_attempts) < 0 ||
	    get_u32(&f[C_TIMEOUT_MS], &x, "timeout_ms", &c->timeout_ms) < 0 ||
	    get_u32(&f[C_TTL_S], &x, "ttl_s", &c->ttl_s) < 0 ||
	    get_uint(&f[C_CREATED_AT], &x, "created_at", UINT64_MAX, &created_at) < 0 ||
	    get_headers(&f[C_HEADERS], &x, c) < 0 ||
	    get_on_timeout(&f[C_ON_TIMEOUT], &x, c) < 0 || get_flow(f, &x, c) < 0 ||
	    get_raw(&f[C_ARGS], &x, &c->args, &c->args_len) < 0)
		goto fail;
	c->run_at_ms = run_at;
	c->created_at_ms = created_at;
	if (!c->queue && !(c->queue = au_strdup(AU_DEFAULT_QUEUE)))
		goto nomem;
	/* absent args read as nil: a task always gets one msgpack value */
	if (!c->args) {
		if (!(c->args = au_malloc(1)))
			goto nomem;
		c->args[0] = 0xc0;
		c->args_len = 1;
	}
	if (check_computation(c, &x) < 0)
		goto fail;
	return 0;
nomem:
	oom(err);
fail:
	au_computation_release(c);
	return -1;
}

/* ---- records ---- */

enum {
	R_V, R_ID, R_STATUS, R_TASK, R_QUEUE, R_WORKER, R_ATTEMPTS, R_TTL_S, R_CREATED_AT,
	R_STARTED_AT, R_FINISHED_AT, R_EXPIRES_AT, R_ERROR, R_HISTORY, R_RESULT, R_NKEYS
};

static const char *const record_keys[R_NKEYS] = {
	"v", "id", "status", "task", "queue", "worker", "attempts", "ttl_s", "created_at",
	"started_at", "finished_at", "expires_at", "error", "history", "result",
};

static int pack_opt_text(msgpack_packer *pk, const char *key, const char *s)
{
	return s ? pack_text(pk, key) | pack_text(pk, s) : 0;
}

int au_record_encode(const struct au_record *r, struct au_buf *out, struct au_err *err)
{
	const struct ctx x = { err, AU_EINVAL, "invalid record" };
	const char *const *k = record_keys;
	size_t start = out->len;
	msgpack_packer pk;
	int rc;

	if (!au_id_valid(r->id))
		return fail(&x, "'id' must be 32 lowercase hex digits");
	if ((unsigned)r->status > AU_UNKNOWN)
		return fail(&x, "'status' %d is not a status", (int)r->status);
	if (r->result_len && check(r->result, r->result_len, AU_MAX_DEPTH - 1, &x) < 0)
		return -1;
	/* the history too: its entries may carry keys a newer writer added,
	 * with any value, so it may nest as deep as a result (what the
	 * decoder accepts, this writes again) */
	if (r->history_len && check(r->history, r->history_len, AU_MAX_DEPTH - 1, &x) < 0)
		return -1;
	msgpack_packer_init(&pk, out, buf_write);
	rc = msgpack_pack_map(&pk, R_NKEYS - !r->task - !r->queue - !r->worker - !r->error -
				   !r->history_len - !r->result_len);
	rc |= pack_text(&pk, k[R_V]) | msgpack_pack_uint32(&pk, AU_WIRE_VERSION);
	rc |= pack_text(&pk, k[R_ID]) | pack_text(&pk, r->id);
	rc |= pack_text(&pk, k[R_STATUS]) | pack_text(&pk, au_status_name(r->status));
	rc |= pack_opt_text(&pk, k[R_TASK], r->task);
	rc |= pack_opt_text(&pk, k[R_QUEUE], r->queue);
	rc |= pack_opt_text(&pk, k[R_WORKER], r->worker);
	rc |= pack_text(&pk, k[R_ATTEMPTS]) | msgpack_pack_uint32(&pk, r->attempts);
	rc |= pack_text(&pk, k[R_TTL_S]) | msgpack_pack_uint32(&pk, r->ttl_s);
	rc |= pack_text(&pk, k[R_CREATED_AT]) | msgpack_pack_uint64(&pk, r->created_at_ms);
	rc |= pack_text(&pk, k[R_STARTED_AT]) | msgpack_pack_uint64(&pk, r->started_at_ms);
	rc |= pack_text(&pk, k[R_FINISHED_AT]) | msgpack_pack_uint64(&pk, r->finished_at_ms);
	rc |= pack_text(&pk, k[R_EXPIRES_AT]) | msgpack_pack_uint64(&pk, r->expires_at_ms);
	rc |= pack_opt_text(&pk, k[R_ERROR], r->error);
	if (r->history_len)
		rc |= pack_text(&pk, k[R_HISTORY]) | au_buf_append(out, r->history, r->history_len);
	if (r->result_len)
		rc |= pack_text(&pk, k[R_RESULT]) | au_buf_append(out, r->result, r->result_len);
	if (rc) {
		out->len = start;
		return oom(err);
	}
	if (out->len - start > AU_MAX_RESULT) {
		rc = too_big(err, "record", out->len - start, AU_MAX_RESULT);
		out->len = start;
	}
	return rc;
}

int au_record_decode(const unsigned char *buf, size_t len, struct au_record *r, struct au_err *err)
{
	const struct ctx x = { err, AU_EPROTO, "malformed record" };
	struct slice f[R_NKEYS];

	au_record_init(r);
	if (len > AU_MAX_RESULT)
		return too_big(err, "record", len, AU_MAX_RESULT);
	if (check(buf, len, AU_MAX_DEPTH, &x) < 0 ||
	    read_map(buf, len, record_keys, R_NKEYS, f, &x) < 0 ||
	    require(&f[R_ID], &x, "id") < 0 || require(&f[R_STATUS], &x, "status") < 0 ||
	    get_id(&f[R_ID], &x, r->id) < 0 || get_status(&f[R_STATUS], &x, &r->status) < 0)
		return -1;
	if (get_str(&f[R_TASK], &x, "task", &r->task) < 0 ||
	    get_str(&f[R_QUEUE], &x, "queue", &r->queue) < 0 ||
	    get_str(&f[R_WORKER], &x, "worker", &r->worker) < 0 ||
	    get_str(&f[R_ERROR], &x, "error", &r->error) < 0 ||
	    get_u32(&f[R_ATTEMPTS], &x, "attempts", &r->attempts) < 0 ||
	    get_u32(&f[R_TTL_S], &x, "ttl_s", &r->ttl_s) < 0 ||
	    get_uint(&f[R_CREATED_AT], &x, "created_at", UINT64_MAX, &r->created_at_ms) < 0 ||
	    get_uint(&f[R_STARTED_AT], &x, "started_at", UINT64_MAX, &r->started_at_ms) < 0 ||
	    get_uint(&f[R_FINISHED_AT], &x, "finished_at", UINT64_MAX, &r->finished_at_ms) < 0 ||
	    get_uint(&f[R_EXPIRES_AT], &x, "expires_at", UINT64_MAX, &r->expires_at_ms) < 0 ||
	    get_raw(&f[R_RESULT], &x, &r->result, &r->result_len) < 0 ||
	    get_raw(&f[R_HISTORY], &x, &r->history, &r->history_len) < 0)
		goto fail;
	return 0;
fail:
	au_record_release(r);
	return -1;
}

/* ---- a computation's history: one map per attempt ---- */

/* One entry's span in a history and the attempt it names (0: none). */
struct entry {
	const unsigned char *p;
	size_t len;
	uint64_t attempt;
};

/* The entries of history (an array of maps) into e[0..*n), at most max:
 * the last ones. -1 when it is not such an array. */
static int history_entries(const unsigned char *buf, size_t len, struct entry *e, size_t max,
			   size_t *n, const struct ctx *x)
{
	/* entries may hold keys unknown here, nested in any way a record's
	 * history can be (au_record_encode) */
	struct mp_reader r = { buf, len, 0, AU_MAX_DEPTH - 1, x };
	struct mp_val v, key, val;
	uint64_t i, k, count;

	*n = 0;
	if (check(buf, len, AU_MAX_DEPTH - 1, x) < 0 || mp_head(&r, &v) < 0)
		return -1;
	if (v.kind != MP_ARRAY)
		return fail(x, "'history' must be an array");
	for (count = v.n, i = 0; i < count; i++) {
		struct entry one = { buf + r.pos, 0, 0 };

		if (mp_head(&r, &v) < 0)
			return -1;
		if (v.kind != MP_MAP)
			return fail(x, "'history' entries must be maps");
		for (k = 0; k < v.n; k++) {
			size_t at;

			if (mp_head(&r, &key) < 0)
				return -1;
			at = r.pos;
			if (key.kind == MP_STR && key.n == 7 && !memcmp(key.data, "attempt", 7)) {
				if (mp_head(&r, &val) < 0)
					return -1;
				if (val.kind == MP_UINT)
					one.attempt = val.u;
				r.pos = at;
			}
			if (mp_skip(&r, 2) < 0)
				return -1;
		}
		one.len = (size_t)(buf + r.pos - one.p);
		if (*n == max) {   /* the oldest goes */
			memmove(e, e + 1, (max - 1) * sizeof(*e));
			(*n)--;
		}
		e[(*n)++] = one;
	}
	return 0;
}

static int pack_note(msgpack_packer *pk, const struct au_attempt_note *a)
{
	size_t elen = a->error ? strlen(a->error) : 0;
	int rc;

	if (elen > AU_HISTORY_ERROR_MAX) {   /* cut before a UTF-8 sequence, not inside it */
		elen = AU_HISTORY_ERROR_MAX;
		while (elen && ((unsigned char)a->error[elen] & 0xc0) == 0x80)
			elen--;
	}
	rc = msgpack_pack_map(pk, 2 + !!a->worker + !!a->started_at_ms + !!a->finished_at_ms +
				  !!a->error + !!a->ch_code);
	rc |= pack_text(pk, "attempt") | msgpack_pack_uint32(pk, a->attempt);
	if (a->worker)
		rc |= pack_text(pk, "worker") | pack_text(pk, a->worker);
	if (a->started_at_ms)
		rc |= pack_text(pk, "started_at") | msgpack_pack_uint64(pk, a->started_at_ms);
	if (a->finished_at_ms)
		rc |= pack_text(pk, "finished_at") | msgpack_pack_uint64(pk, a->finished_at_ms);
	rc |= pack_text(pk, "outcome") | pack_text(pk, a->outcome);
	if (a->error)
		rc |= pack_text(pk, "error") | msgpack_pack_str(pk, elen) |
		      msgpack_pack_str_body(pk, a->error, elen);
	if (a->ch_code)
		rc |= pack_text(pk, "ch_code") | msgpack_pack_int32(pk, a->ch_code);
	return rc;
}

int au_history_append(const unsigned char *prior, size_t prior_len,
		      const struct au_attempt_note *note, struct au_buf *out, struct au_err *err)
{
	const struct ctx x = { err, AU_EPROTO, "malformed history" };
	struct entry e[AU_HISTORY_MAX];
	struct au_attempt_note lost = { 0 };
	unsigned char seen[AU_HISTORY_MAX] = { 0 };
	uint32_t lostv[AU_HISTORY_MAX], a, from;
	size_t n = 0, i, nlost = 0, skip, start = out->len;
	msgpack_packer pk;
	int rc = 0;

	/* a history the queue gave back unreadable is dropped, not fatal */
	if (prior_len && history_entries(prior, prior_len, e, AU_HISTORY_MAX, &n, &x) < 0)
		n = 0;
	/* attempts that counted but have no entry: their lease ran out */
	from = note->attempt > AU_HISTORY_MAX ? note->attempt - AU_HISTORY_MAX : 1;
	for (i = 0; i < n; i++)
		if (e[i].attempt >= from && e[i].attempt < note->attempt)
			seen[e[i].attempt - from] = 1;
	for (a = from; a < note->attempt; a++)
		if (!seen[a - from])
			lostv[nlost++] = a;
	/* the oldest go first: entries, then lost ones */
	skip = n + nlost + 1 > AU_HISTORY_MAX ? n + nlost + 1 - AU_HISTORY_MAX : 0;
	if (skip > n) {
		memmove(lostv, lostv + (skip - n), (nlost - (skip - n)) * sizeof(*lostv));
		nlost -= skip - n;
		skip = n;
	}
	msgpack_packer_init(&pk, out, buf_write);
	rc |= msgpack_pack_array(&pk, n - skip + nlost + 1);
	for (i = skip; i < n; i++)
		rc |= au_buf_append(out, e[i].p, e[i].len);
	lost.outcome = "lost";
	lost.error = "the lease ran out before its worker reported (it stopped, crashed or was "
		     "cut off)";
	for (i = 0; i < nlost; i++) {
		lost.attempt = lostv[i];
		rc |= pack_note(&pk, &lost);
	}
	rc |= pack_note(&pk, note);
	if (rc) {
		out->len = start;
		return oom(err);
	}
	return 0;
}

/* ---- msgpack builders ---- */

static msgpack_packer packer(struct au_buf *b)
{
	msgpack_packer pk;

	msgpack_packer_init(&pk, b, buf_write);
	return pk;
}

int au_mp_nil(struct au_buf *b)
{
	msgpack_packer pk = packer(b);

	return msgpack_pack_nil(&pk);
}

int au_mp_bool(struct au_buf *b, int v)
{
	msgpack_packer pk = packer(b);

	return v ? msgpack_pack_true(&pk) : msgpack_pack_false(&pk);
}

int au_mp_int(struct au_buf *b, int64_t v)
{
	msgpack_packer pk = packer(b);

	return msgpack_pack_int64(&pk, v);
}

int au_mp_uint(struct au_buf *b, uint64_t v)
{
	msgpack_packer pk = packer(b);

	return msgpack_pack_uint64(&pk, v);
}

int au_mp_double(struct au_buf *b, double v)
{
	msgpack_packer pk = packer(b);

	return msgpack_pack_double(&pk, v);
}

int au_mp_str(struct au_buf *b, const char *s, size_t n)
{
	msgpack_packer pk = packer(b);

	return msgpack_pack_str_with_body(&pk, s, n);
}

int au_mp_array(struct au_buf *b, uint32_t n)
{
	msgpack_packer pk = packer(b);

	return msgpack_pack_array(&pk, n);
}

int au_mp_map(struct au_buf *b, uint32_t n)
{
	msgpack_packer pk = packer(b);

	return msgpack_pack_map(&pk, n);
}

/* ---- one value of a map ---- */

int au_msgpack_map_text(const unsigned char *buf, size_t len, const char *key, char **out,
			size_t *out_len, struct au_err *err)
{
	const struct ctx x = { err, AU_EPROTO, "malformed msgpack" };
	struct mp_reader r = { buf, len, 0, AU_MAX_DEPTH, &x };
	size_t klen = strlen(key);
	struct mp_val v;
	uint64_t i;

	*out = NULL;
	*out_len = 0;
	if (check(buf, len, AU_MAX_DEPTH, &x) < 0 || mp_head(&r, &v) < 0)
		return -1;
	if (v.kind != MP_MAP)
		return 0;
	for (i = 0; i < v.n; i++) {
		size_t ks = r.pos, vs;
		struct mp_reader kr, vr;
		struct mp_val k, val;

		if (mp_skip(&r, 1) < 0)
			return -1;
		vs = r.pos;
		if (mp_skip(&r, 1) < 0)
			return -1;
		kr = (struct mp_reader){ buf + ks, vs - ks, 0, 0, &x };
		mp_head(&kr, &k);
		if (k.kind != MP_STR || k.n != klen || memcmp(k.data, key, klen))
			continue;
		vr = (struct mp_reader){ buf + vs, r.pos - vs, 0, 0, &x };
		mp_head(&vr, &val);
		if (val.kind != MP_STR) {
			if (!(*out = au_msgpack_to_json(buf + vs, r.pos - vs, err)))
				return -1;
			*out_len = strlen(*out);
			return 1;
		}
		if (!(*out = au_strndup((const char *)val.data, (size_t)val.n)))
			return oom(err);
		*out_len = (size_t)val.n;
		return 1;
	}
	return 0;
}
