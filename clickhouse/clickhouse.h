/*
 * clickhouse.h - the ClickHouse HTTP client (libcurl) and SQL binding
 * (clickhouse/sql.c). Only clickhouse/clickhouse.c includes curl.
 *
 * One `struct au_clickhouse` holds the server settings from the URL
 * (http://user:pass@host:port/database) and a curl multi handle. Attached to
 * an event_base it runs many requests at once on that loop over reused
 * keep-alive connections; without one, au_ch_query_sync() does a blocking
 * request (CLI, tests, set-up).
 */
#ifndef AU_CLICKHOUSE_H
#define AU_CLICKHOUSE_H

#include <stddef.h>
#include <stdint.h>

#include "core.h"

struct event_base;
struct au_clickhouse;

/* One request. Strings are copied by au_ch_send/au_ch_query_sync. */
struct au_ch_query {
	const char *sql;          /* the whole statement (sent as the POST body) */
	const char *query_id;     /* NULL = none */
	const char *log_comment;  /* NULL = none; sent to servers that keep it (21.1 and
				   * later: system.query_log.log_comment) */
	uint32_t timeout_ms;      /* 0 = none; sets max_execution_time too */
	const char *data;         /* for INSERT ... FORMAT X: rows after the sql */
	size_t data_len;
	uint32_t buffer_size;     /* 0 = AU_CH_MAX_BODY: ClickHouse holds the answer
				   * until it is this big before it sends the status
				   * (at least 1 MiB); tests set less to see errors
				   * that come after the first rows */
};

/*
 * An answer. ClickHouse sends the status only once it holds buffer_size
 * bytes of the answer or all of it, so any error before that point comes
 * as an error status: http_status 4xx/5xx, ch_code, the message in err.
 * An error after it (answers above buffer_size) comes with 200 after rows:
 * 25.11 and later frame it with the answer's X-ClickHouse-Exception-Tag
 * and 20.1 and later may send X-ClickHouse-Exception-Code, both found here
 * (err set, status 200); 18.16 to 25.10 only append the exception's text
 * to the rows, which only the reader of the format can tell apart
 * (au_ch_body_error).
 */
struct au_ch_response {
	long http_status;         /* 0 if no answer */
	int ch_code;              /* "Code: N" of an error, 0 otherwise */
	struct au_buf body;
	struct au_err err;        /* AU_ECONN, AU_ETIMEDOUT, AU_ECLICKHOUSE */
};
void au_ch_response_release(struct au_ch_response *r);

/* Called once per request on the loop; resp is valid during the call. */
typedef void (*au_ch_done_fn)(struct au_ch_response *resp, void *arg);

/*
 * A client of the server at url, http[s]://[user[:password]@]host[:port]
 * [/database][?cafile=/path/ca.pem] (docs/clickhouse.md); nothing is sent
 * yet. https checks the certificate and the host name, against cafile's
 * CAs when given (read here: one that cannot be read is a bad URL), else
 * the system's; a TLS failure later is AU_ECONN, an outage. NULL on OOM;
 * err set and NULL for a bad URL (AU_EINVAL).
 */
struct au_clickhouse *au_ch_new(const char *url, struct au_err *err);
/* Drops requests in flight without calling their done. Call it before
 * freeing the event_base, and never from a done callback. */
void au_ch_free(struct au_clickhouse *ch);
/* Enables au_ch_send on base. Call once. */
int au_ch_attach(struct au_clickhouse *ch, struct event_base *base);
/* Starts a request on the attached loop. -1 only if it could not start
 * (then done is not called). */
int au_ch_send(struct au_clickhouse *ch, const struct au_ch_query *q,
	       au_ch_done_fn done, void *arg);
/* Abandons the request started with exactly (done, arg): it is dropped
 * without calling done. ClickHouse may still run the query; kill it by its
 * query_id. 0, or -1 when no such request is in flight. */
int au_ch_cancel(struct au_clickhouse *ch, au_ch_done_fn done, void *arg);
/* Requests in flight. */
size_t au_ch_inflight(const struct au_clickhouse *ch);
/* Connections opened so far by finished requests, sync and async (curl's
 * CURLINFO_NUM_CONNECTS summed): far fewer than requests when keep-alive
 * works. */
size_t au_ch_connects(const struct au_clickhouse *ch);
/* Blocking request; 0 when the server answered 200, else -1 with resp->err.
 * resp is initialised by the call; release it in both cases. */
int au_ch_query_sync(struct au_clickhouse *ch, const struct au_ch_query *q,
		     struct au_ch_response *resp);
/* Server version string, e.g. "18.16.1" (cached after the first call). */
const char *au_ch_server_version(struct au_clickhouse *ch, struct au_err *err);

/* The database of a URL that names none. */
#define AU_CH_DEFAULT_DATABASE "default"

/* Connections au_ch_send opens to the server at most; further requests wait
 * in curl for a free one (the server caps concurrent queries too). */
#define AU_CH_MAX_CONNECTIONS 32
/* Largest answer kept in memory; a larger one fails with AU_ETOOBIG. */
#define AU_CH_MAX_BODY (4u * AU_MAX_RESULT)

/*
 * Whose fault a failed request is (the table is in docs/clickhouse.md):
 * - AU_CH_OUTAGE: the server's or the worker's setup: unreachable, the
 *   connection lost, credentials refused, the URL's database missing, too
 *   many queries or parts. Sending it again later may pass; the attempt
 *   must not count against the computation.
 * - AU_CH_RETRY: the statement's, but it may pass when sent again (timeout,
 *   memory limit, lost replica): the attempt counts.
 * - AU_CH_FOR_GOOD: the statement's (syntax, unknown table or column, bad
 *   data, a cancelled query, an answer too large, local errors).
 * ch may be NULL (then an unknown database is the statement's).
 */
enum au_ch_fault { AU_CH_FOR_GOOD, AU_CH_RETRY, AU_CH_OUTAGE };
enum au_ch_fault au_ch_fault(const struct au_clickhouse *ch, const struct au_ch_response *r);
/*
 * For a 200 answer that its reader found cut short or followed by text:
 * text..text+len is what the reader could not take (from where the format
 * stopped, or the "exception" string of a JSON answer from 23.9 on). If an
 * exception starts in it ("Code: 395, e.displayText() = ..." in 18.16,
 * "Code: 395. DB::Exception: ..." later), the exception being the rest of
 * text, sets r->ch_code and r->err (AU_ECLICKHOUSE, the message an error
 * status would have; without the server's URL when ch is NULL) and returns
 * -1; else returns 0 and leaves r alone.
 */
int au_ch_body_error(struct au_clickhouse *ch, struct au_ch_response *r, const char *text,
		     size_t len);
/* Blocking `KILL QUERY WHERE query_id = '...' SYNC`; 0 also when no such
 * query runs. */
int au_ch_kill_query(struct au_clickhouse *ch, const char *query_id, struct au_err *err);
/* The same without SYNC on the attached loop, not waiting: the answer is
 * ignored. -1 only if the request could not start. */
int au_ch_kill_query_async(struct au_clickhouse *ch, const char *query_id);

/* ---- SQL binding (clickhouse/sql.c) ---- */

/* Limits on SQL text we send: the server's max_query_size is 256 KiB and a
 * deeply nested expression can crash an 18.16 server. */
#define AU_SQL_MAX_BYTES (256u * 1024)
#define AU_SQL_MAX_DEPTH 64        /* nested ( and [ */
#define AU_SQL_MAX_OPERATORS 2000  /* binary operators outside literals */

/*
 * Substitutes {name:Type} placeholders in sql with the values of params (a
 * jansson object), formatted and quoted for Type: (U)Int8..64, Float32/64,
 * String, FixedString(N), Date, DateTime, UUID, Bool, Nullable(T), Array(T),
 * Identifier. Values are type-checked (range, format); placeholders inside
 * quoted literals and comments are left alone. Then checks the result
 * against the limits above. Returns a malloc'ed string or NULL with err.
 */
char *au_sql_bind(const char *sql, const struct json_t *params, struct au_err *err);
/* Checks size, nesting and operator count of a statement. */
int au_sql_check(const char *sql, size_t len, struct au_err *err);
/* Appends s as a ClickHouse string literal ('...' with escapes). */
int au_sql_quote(struct au_buf *out, const char *s, size_t n);
/* 1 if s is a plain identifier or db.identifier ([A-Za-z_][A-Za-z0-9_]*). */
int au_sql_identifier_valid(const char *s);
/* The next token of p..end after spaces and comments: a word
 * ([A-Za-z0-9_]+), a quoted literal or identifier, or one other character.
 * Sets *n to its length; NULL when only spaces and comments are left. */
const char *au_sql_token(const char *p, const char *end, size_t *n);

#endif
