/*
 * core.h - private helpers shared by every part of au: errors, buffers,
 * clocks, URLs, the wire codec, logging. Not installed.
 */
#ifndef AU_CORE_H
#define AU_CORE_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "au.h"

#define AU_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* ---- errors and strings (core/error.c) ---- */

/* Sets err (may be NULL) and returns -1, so `return au_seterr(...)` works. */
int au_seterr(struct au_err *err, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void au_clearerr(struct au_err *err);
/* Programmer error: prints and aborts. */
void au_bug(const char *file, int line, const char *fmt, ...)
	__attribute__((format(printf, 3, 4), noreturn));
#define AU_BUG(...) au_bug(__FILE__, __LINE__, __VA_ARGS__)

/* ---- the allocator seam (core/alloc.c) ---- */

/*
 * Allocation failures are reported, never fatal. core/ and the memory store
 * allocate through these, which call libc unless a test installed its own
 * functions to make chosen allocations fail. Free with free().
 */
struct au_allocator {
	void *(*malloc)(size_t n);
	void *(*calloc)(size_t n, size_t size);
	void *(*realloc)(void *p, size_t n);
};
/* Installs a (NULL restores libc's). Call it while no other thread runs. */
void au_set_allocator(const struct au_allocator *a);
void *au_malloc(size_t n);
void *au_calloc(size_t n, size_t size);
void *au_realloc(void *p, size_t n);

/* Strings, through the seam; NULL on OOM. */
char *au_strdup(const char *s);          /* au_strdup(NULL) == NULL */
char *au_strndup(const char *s, size_t n);
char *au_asprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Replaces every byte of s (NUL-terminated, may be NULL) that is not part
 * of a valid UTF-8 sequence with '?', in place, so the text can travel as
 * a msgpack or JSON string to any language. Returns how many it replaced. */
size_t au_utf8_scrub(char *s);
/* Length of the valid UTF-8 sequence at p (n > 0 bytes there), 0 if none:
 * no overlong forms, no surrogates, nothing above U+10FFFF. */
size_t au_utf8_seq(const unsigned char *p, size_t n);

/* ---- growable byte buffer (core/buf.c) ---- */

struct au_buf {
	unsigned char *data;
	size_t len;
	size_t cap;
};
#define AU_BUF_INIT { NULL, 0, 0 }

int au_buf_reserve(struct au_buf *b, size_t extra);     /* -1 on OOM */
int au_buf_append(struct au_buf *b, const void *p, size_t n);
int au_buf_puts(struct au_buf *b, const char *s);
int au_buf_printf(struct au_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void au_buf_reset(struct au_buf *b);                     /* len = 0, keeps memory */
void au_buf_release(struct au_buf *b);
/* Hands the data to the caller (NUL-terminated), leaves b empty. */
unsigned char *au_buf_detach(struct au_buf *b, size_t *len);

/* ---- clocks (core/clock.c) ---- */

uint64_t au_now_ms(void);        /* CLOCK_REALTIME, unix ms */
uint64_t au_mono_us(void);       /* CLOCK_MONOTONIC, microseconds */
/* A duration with its unit: "500ms", "30s", "10m", "6h", "7d" (a bare
 * number is seconds) into *ms. -1 with AU_EINVAL naming s when it is not
 * one or does not fit. */
int au_duration_parse(const char *s, uint64_t *ms, struct au_err *err);

/* ---- randomness, ids, tokens, names (core/ids.c; au_id_new in au.h) ---- */

/* Uniform random 64 bits from the kernel (getrandom). */
uint64_t au_random64(void);
/* Fresh lease token for an attempt: "<attempt>-<16 hex digits>". */
void au_token_new(char out[AU_TOKEN_SIZE], uint32_t attempt);
/* ---- W3C trace context (core/trace.c) ---- */
#define AU_TRACEPARENT_SIZE 56   /* "00-<32 hex>-<16 hex>-<2 hex>" + NUL */
/* A new traceparent: version 00, random trace and span ids, sampled. */
void au_traceparent_new(char out[AU_TRACEPARENT_SIZE]);
/* 0 and the trace id (32 lowercase hex + NUL) when tp is a valid
 * traceparent (version 00 format, ids not all zero); -1 otherwise. */
int au_traceparent_trace_id(const char *tp, char out[AU_ID_SIZE]);

/* Constant-time comparison of two NUL-terminated secrets. 1 if equal. */
int au_secret_equal(const char *a, const char *b);
/* "host:pid" of this process, cached; a forked child names itself anew. */
const char *au_worker_name(void);

/*
 * An id (or whatever was given for one) as a message echoes it: its first
 * AU_ID_SHOWN_MAX bytes, then "\u2026" when it is longer (cut before a
 * UTF-8 sequence, not inside it), control bytes and NULs as '?'. Returns
 * out. au_id_shown takes a string (NULL shows as "(null)"), au_id_shown_n
 * len bytes.
 */
#define AU_ID_SHOWN_MAX 64
#define AU_ID_SHOWN_SIZE (AU_ID_SHOWN_MAX + 4)
const char *au_id_shown(char out[AU_ID_SHOWN_SIZE], const char *id);
/* The id an idempotency key of queue stands for (au_enqueue_opts.key);
 * -1 only when libcrypto fails. */
int au_id_from_key(char out[AU_ID_SIZE], const char *queue, const char *key);
const char *au_id_shown_n(char out[AU_ID_SHOWN_SIZE], const char *id, size_t len);

/* ---- the queues a worker serves (core/queues.c) ---- */

#define AU_MAX_QUEUES 16
#define AU_QUEUE_WEIGHT_MAX 1000
#define AU_QUEUE_NAME_MAX 100

/* "a,b,c": strict order; "a:5,b:1": weighted (au_worker_opts.queue). */
struct au_queue_list {
	size_t n;
	int weighted;                      /* a weight was given: the order is drawn */
	char *names[AU_MAX_QUEUES];
	unsigned weights[AU_MAX_QUEUES];   /* 1 where none was given */
};
/* spec NULL or "" is the default queue. -1 with AU_EINVAL naming spec. */
int au_queue_list_parse(const char *spec, struct au_queue_list *l, struct au_err *err);
void au_queue_list_release(struct au_queue_list *l);
/* The order one lease tries them in, into order[0..l->n): as given, or
 * drawn without replacement with the chance of each one's weight. */
void au_queue_list_order(const struct au_queue_list *l, size_t *order);
/* "a,b" or "a:5,b:1", malloc'ed; NULL on OOM. */
char *au_queue_list_text(const struct au_queue_list *l);
/* A name a queue can have: [A-Za-z0-9_.:-], at most AU_QUEUE_NAME_MAX
 * bytes, not ending in ':' and digits (which --queues reads as a
 * weight). -1 with AU_EINVAL naming it. */
int au_queue_name_check(const char *name, struct au_err *err);

/* ---- a computation's history (core/codec.c; docs/wire-format.md) ---- */

#define AU_HISTORY_MAX 32          /* entries kept: the last ones */
#define AU_HISTORY_ERROR_MAX 1024  /* bytes of an entry's error */

/* One attempt as its history tells it. */
struct au_attempt_note {
	uint32_t attempt;
	const char *worker;        /* the worker's registry id, NULL: not known */
	uint64_t started_at_ms, finished_at_ms;   /* unix ms, 0: not known */
	const char *outcome;       /* "completed", "failed", "retrying", "cancelled", "lost" */
	const char *error;         /* NULL: none; cut to AU_HISTORY_ERROR_MAX bytes */
	int ch_code;               /* the ClickHouse error code the error names, 0: none */
};
/* The history prior (a msgpack array of entries, NULL for none) with
 * note appended to out, and before it an entry "lost" for each attempt
 * below note->attempt that has none; the last AU_HISTORY_MAX entries.
 * A prior that cannot be read is dropped. -1 only on OOM. */
int au_history_append(const unsigned char *prior, size_t prior_len,
		      const struct au_attempt_note *note, struct au_buf *out, struct au_err *err);

/* ---- URLs (core/url.c) ---- */

/*
 * scheme://[user[:password]@]host[:port][/path][?query]
 * file:///abs/path and memory://[name] are accepted too. Percent-escapes in
 * user, password and path are decoded. All strings owned by the struct.
 */
struct au_url {
	char *scheme;
	char *user;        /* NULL when absent */
	char *password;    /* NULL when absent */
	char *host;        /* NULL for file:// */
	int port;          /* 0 when absent */
	char *path;        /* without the leading '/' for network schemes
			      ("0" for redis db 0, "default" for a database);
			      the absolute path for file:// */
	char *query;       /* raw, without '?', NULL when absent */
	char *text;        /* the URL as given, for messages (password masked) */
};

int au_url_parse(const char *text, struct au_url *url, struct au_err *err);
void au_url_release(struct au_url *url);
/* text as messages show it, a new string (NULL on OOM): the password and
 * secret query parameters (password=, sslpassword=) replaced by "***",
 * even when text does not parse; the same as url.text when it does. */
char *au_url_masked(const char *text);
/* Value of key in the query string (decoded, malloc'ed) or NULL. */
char *au_url_param(const struct au_url *url, const char *key);

/* ---- wire codec (core/codec.c) ---- */

/*
 * Checks that buf holds exactly one well-formed msgpack value no deeper than
 * max_depth, whose every container count fits in the bytes left. Run before
 * handing untrusted bytes to msgpack-c (which reserves memory by declared
 * count). 0 or -1 with AU_EPROTO / AU_ETOOBIG.
 */
int au_msgpack_check(const unsigned char *buf, size_t len, unsigned max_depth,
		     struct au_err *err);

/* Encodes c (wire format v1) into out (appended). */
int au_computation_encode(const struct au_computation *c, struct au_buf *out,
			  struct au_err *err);
/* Decodes an untrusted message into c (init'ed by the call; release after). */
int au_computation_decode(const unsigned char *buf, size_t len,
			  struct au_computation *c, struct au_err *err);

int au_record_encode(const struct au_record *r, struct au_buf *out, struct au_err *err);
int au_record_decode(const unsigned char *buf, size_t len, struct au_record *r,
		     struct au_err *err);

/* The value of key in buf, a msgpack map (a computation's arguments), as
 * text into *out (malloc'ed, NUL-terminated, *len bytes before the NUL): a
 * string as its bytes, anything else as its JSON (au_msgpack_to_json).
 * 1 when found; 0 when buf is no map or has no such key (*out NULL); -1
 * for malformed msgpack (AU_EPROTO) or OOM. */
int au_msgpack_map_text(const unsigned char *buf, size_t len, const char *key, char **out,
			size_t *out_len, struct au_err *err);

/* Appends msgpack encodings of simple values (results built by tasks). */
int au_mp_nil(struct au_buf *b);
int au_mp_bool(struct au_buf *b, int v);
int au_mp_int(struct au_buf *b, int64_t v);
int au_mp_uint(struct au_buf *b, uint64_t v);
int au_mp_double(struct au_buf *b, double v);
int au_mp_str(struct au_buf *b, const char *s, size_t n);
int au_mp_array(struct au_buf *b, uint32_t n);
int au_mp_map(struct au_buf *b, uint32_t n);

/* ---- signed computations (core/sign.c; docs/wire-format.md "Signing") ---- */

#define AU_SIGNATURE_HEADER "au-signature"
#define AU_SIGN_KEY_MIN 16          /* bytes of a key, at least */
#define AU_SIGN_KEYS_MAX 8          /* keys of one list */
#define AU_SIGN_KEY_ID_LEN 8        /* hex digits of a key id */
#define AU_SIGN_MAC_SIZE 32         /* HMAC-SHA256 */
/* "v1:<8 hex key id>:<64 hex HMAC>" and its NUL */
#define AU_SIGNATURE_SIZE (3 + AU_SIGN_KEY_ID_LEN + 1 + 2 * AU_SIGN_MAC_SIZE + 1)

struct au_sign_key {
	unsigned char *key;
	size_t len;
	char id[AU_SIGN_KEY_ID_LEN + 1];   /* first 8 hex digits of SHA-256(key) */
};
/* The keys of AU_SIGNING_KEY: the first signs, all of them verify. */
struct au_sign_keys {
	size_t n;
	struct au_sign_key keys[AU_SIGN_KEYS_MAX];
};
/* list: keys separated by commas, each used byte for byte once the
 * spaces and tabs around it are trimmed, at least AU_SIGN_KEY_MIN bytes.
 * -1 with AU_EINVAL naming the key by its position, never its text. */
int au_sign_keys_parse(const char *list, struct au_sign_keys *ks, struct au_err *err);
/* Wipes and frees the keys; ks may be zeroed or parsed. */
void au_sign_keys_release(struct au_sign_keys *ks);
/* The bytes a signature covers, appended to out: au_computation_encode
 * of c with every au-signature header left out. */
int au_sign_canonical(const struct au_computation *c, struct au_buf *out, struct au_err *err);
/* The au-signature header value for c signed with k. */
int au_sign_header(const struct au_sign_key *k, const struct au_computation *c,
		   char out[AU_SIGNATURE_SIZE], struct au_err *err);
/* 0 when c carries one au-signature header that one of ks made for these
 * bytes; -1 with AU_EREFUSED "bad signature: <why>" (unsigned, malformed
 * header, unsupported version 'vN', unknown key <id>, does not match any
 * key), or AU_ENOMEM. Compares in constant time. */
int au_sign_verify(const struct au_sign_keys *ks, const struct au_computation *c,
		   struct au_err *err);

/* ---- jansson bridge (core/json.c) ---- */
/* json_t is jansson's; kept opaque here so that only users include it. */
struct json_t;
/* msgpack value -> new json_t reference, as docs/wire-format.md "The JSON
 * mirror" renders each kind: every well-formed value has a rendering, so
 * this fails only on malformed msgpack (AU_EPROTO, AU_ETOOBIG) and OOM. */
int au_msgpack_to_jansson(const unsigned char *buf, size_t len, struct json_t **out,
			  struct au_err *err);
/* json_t -> msgpack appended to out. Integers stay integers, reals doubles. */
int au_jansson_to_msgpack(const struct json_t *j, struct au_buf *out, struct au_err *err);

/* ---- logging (core/log.c) ---- */

enum au_loglevel { AU_LOG_DEBUG, AU_LOG_INFO, AU_LOG_WARN, AU_LOG_ERROR, AU_LOG_QUIET };
void au_log_set_level(enum au_loglevel lvl);
enum au_loglevel au_log_level(void);
void au_log(enum au_loglevel lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
