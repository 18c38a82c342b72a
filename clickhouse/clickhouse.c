/*
 * clickhouse.c - the ClickHouse HTTP client: one POST per statement, over
 * keep-alive connections, either blocking (au_ch_query_sync) or many at once
 * on the caller's libevent loop (curl_multi driven by socket and timer
 * callbacks). The only file that includes curl.
 */
#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <curl/curl.h>
#include <event2/event.h>

#include "clickhouse.h"

/* Curl may give up this long after ClickHouse should have: the server's own
 * max_execution_time error is more useful than a cut connection. */
#define CURL_GRACE_MS 2000
#define CONNECT_TIMEOUT_MS 10000
#define ADMIN_TIMEOUT_MS 10000   /* our own small statements: version, KILL */

/*
 * ClickHouse keeps an answer in memory until it reaches buffer_size bytes,
 * and only then sends the status line and what it has: an error before that
 * point comes as an error status with the message alone. At AU_CH_MAX_BODY
 * every answer au accepts is kept whole, so its status is final, and a
 * larger one is refused as AU_ETOOBIG after 64 MiB instead of spooled first.
 * wait_end_of_query=1 would keep every answer whole too, but 18.16 then
 * writes each one through a temporary file unless buffer_size is over
 * 1 MiB, which halves the rate of small queries.
 */
#define SERVER_BUFFER AU_CH_MAX_BODY
/* 25.11 and later end an answer that fails after it has begun with a block
 * of at most 16 KiB framed by the X-ClickHouse-Exception-Tag of the answer:
 * we look for it in twice that */
#define TAG_WINDOW (32u * 1024)

/* One request and its easy handle. Asynchronous ones go to a free list when
 * they finish, so handles and buffers are reused. */
struct ch_req {
	struct au_clickhouse *ch;
	CURL *easy;
	struct au_buf url;
	struct au_buf post;
	struct au_ch_response resp;
	int overflow;            /* the answer went over AU_CH_MAX_BODY */
	int header_code;         /* X-ClickHouse-Exception-Code (20.1 and later) */
	char tag[40];            /* X-ClickHouse-Exception-Tag (25.11 and later) */
	char why[CURL_ERROR_SIZE];  /* curl's own words for a failure (TLS) */
	uint32_t timeout_ms;
	au_ch_done_fn done;
	void *arg;
	struct ch_req *prev, *next;  /* in flight, or next on the free list */
};

struct au_clickhouse {
	struct au_url url;       /* url.text is masked: safe in messages */
	char *endpoint;          /* scheme://host:port/ */
	char *database;
	char *cafile;            /* ?cafile=: the CAs trusted instead of the system's */
	struct curl_slist *headers;
	struct ch_req sync;      /* au_ch_query_sync's request, reused */
	CURLM *multi;
	struct event_base *base;
	struct event *timer;
	struct ch_req *active;   /* in flight */
	struct ch_req *free_reqs;
	size_t inflight;
	size_t connects;         /* new connections, over all requests */
	char *version;
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;

static void curl_init(void)
{
	curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

void au_ch_response_release(struct au_ch_response *r)
{
	au_buf_release(&r->body);
	r->http_status = 0;
	r->ch_code = 0;
	au_clearerr(&r->err);
}

static size_t on_write(char *p, size_t size, size_t n, void *arg)
{
	struct ch_req *req = arg;

	n *= size;
	if (req->resp.body.len + n > AU_CH_MAX_BODY) {
		req->overflow = 1;
		return 0;
	}
	return au_buf_append(&req->resp.body, p, n) < 0 ? 0 : n;
}

/* The value of header line p..p+n when it is `name: value`, trimmed; NULL
 * otherwise. Sets *len. */
static const char *header_value(const char *p, size_t n, const char *name, size_t *len)
{
	size_t k = strlen(name);

	if (n <= k || p[k] != ':' || strncasecmp(p, name, k) != 0)
		return NULL;
	p += k + 1, n -= k + 1;
	while (n && (*p == ' ' || *p == '\t'))
		p++, n--;
	while (n && isspace((unsigned char)p[n - 1]))
		n--;
	*len = n;
	return p;
}

/* CURLOPT_HEADERFUNCTION: what later servers say about an error in headers */
static size_t on_header(char *p, size_t size, size_t n, void *arg)
{
	struct ch_req *req = arg;
	const char *v;
	size_t len;

	n *= size;
	if ((v = header_value(p, n, "X-ClickHouse-Exception-Code", &len)) != NULL)
		req->header_code = atoi(v);
	else if ((v = header_value(p, n, "X-ClickHouse-Exception-Tag", &len)) != NULL &&
		 len < sizeof(req->tag))
		snprintf(req->tag, sizeof(req->tag), "%.*s", (int)len, v);
	return n;
}

static int req_init(struct au_clickhouse *ch, struct ch_req *req)
{
	memset(req, 0, sizeof(*req));
	req->ch = ch;
	req->easy = curl_easy_init();
	if (!req->easy)
		return -1;
	curl_easy_setopt(req->easy, CURLOPT_PRIVATE, req);
	curl_easy_setopt(req->easy, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(req->easy, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(req->easy, CURLOPT_HTTPHEADER, ch->headers);
	curl_easy_setopt(req->easy, CURLOPT_WRITEFUNCTION, on_write);
	curl_easy_setopt(req->easy, CURLOPT_WRITEDATA, req);
	curl_easy_setopt(req->easy, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(req->easy, CURLOPT_HEADERDATA, req);
	curl_easy_setopt(req->easy, CURLOPT_CONNECTTIMEOUT_MS, (long)CONNECT_TIMEOUT_MS);
	curl_easy_setopt(req->easy, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(req->easy, CURLOPT_POST, 1L);
	curl_easy_setopt(req->easy, CURLOPT_ERRORBUFFER, req->why);
	/* https: curl verifies the certificate and the host name by default */
	if (ch->cafile)
		curl_easy_setopt(req->easy, CURLOPT_CAINFO, ch->cafile);
	return 0;
}

static void req_release(struct ch_req *req)
{
	if (req->easy)
		curl_easy_cleanup(req->easy);
	au_buf_release(&req->url);
	au_buf_release(&req->post);
	au_ch_response_release(&req->resp);
}

/* Appends &key=value with value URL-escaped. */
static int add_param(struct au_buf *b, const char *key, const char *value, size_t n)
{
	char *esc = curl_easy_escape(NULL, value, (int)n);
	int rc;

	if (!esc)
		return -1;
	rc = au_buf_printf(b, "&%s=%s", key, esc);
	curl_free(esc);
	return rc;
}

/* Sets the easy handle up for q. body is not copied: it must outlive the
 * transfer. */
static int req_setup(struct ch_req *req, const struct au_ch_query *q, const void *body,
		     size_t body_len)
{
	struct au_clickhouse *ch = req->ch;
	struct au_buf *u = &req->url;
	long curl_timeout = q->timeout_ms ? (long)q->timeout_ms + CURL_GRACE_MS : 0;

	au_buf_reset(u);
	au_ch_response_release(&req->resp);
	req->overflow = 0;
	req->header_code = 0;
	req->tag[0] = '\0';
	req->why[0] = '\0';
	req->timeout_ms = q->timeout_ms;
	if (au_buf_puts(u, ch->endpoint) < 0 ||
	    au_buf_printf(u, "?buffer_size=%u", q->buffer_size ? q->buffer_size : SERVER_BUFFER) < 0 ||
	    add_param(u, "database", ch->database, strlen(ch->database)) < 0 ||
	    (q->query_id && add_param(u, "query_id", q->query_id, strlen(q->query_id)) < 0) ||
	    (q->log_comment && ch->version && atoi(ch->version) >= 21 &&
	     add_param(u, "log_comment", q->log_comment, strlen(q->log_comment)) < 0) ||
	    (q->timeout_ms && au_buf_printf(u, "&max_execution_time=%u",
					    (unsigned)((q->timeout_ms + 999) / 1000)) < 0) ||
	    (q->data && add_param(u, "query", q->sql, strlen(q->sql)) < 0))
		return au_seterr(&req->resp.err, AU_ENOMEM, "out of memory");
	curl_easy_setopt(req->easy, CURLOPT_URL, (const char *)u->data);
	curl_easy_setopt(req->easy, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(req->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
	curl_easy_setopt(req->easy, CURLOPT_TIMEOUT_MS, curl_timeout);
	return 0;
}

/* Copies the displayText of an exception text ("Code: 60, e.displayText() =
 * DB::Exception: Table x doesn't exist., e.what() = DB::Exception") into
 * out: one line, trimmed, without the final period. */
static void error_text(const char *text, size_t len, char *out, size_t size)
{
	const char *p = text, *end = text + len, *s;
	size_t n = 0;

	if ((s = memmem(p, (size_t)(end - p), "e.displayText() = ", 18)) != NULL)
		p = s + 18;
	if ((s = memmem(p, (size_t)(end - p), "DB::Exception: ", 15)) != NULL)
		p = s + 15;
	if ((s = memmem(p, (size_t)(end - p), ", e.what() = ", 13)) != NULL ||
	    (s = memmem(p, (size_t)(end - p), " (version ", 10)) != NULL)
		end = s;
	while (p < end && isspace((unsigned char)*p))
		p++;
	while (end > p && (isspace((unsigned char)end[-1]) || end[-1] == '.'))
		end--;
	for (; p < end && n + 1 < size; p++)
		out[n++] = (*p >= 0 && *p < ' ') || *p == 0x7f ? ' ' : *p;
	out[n] = '\0';
}

/* What ClickHouse's exceptions begin with: "Code: N, e.displayText() = ..."
 * (18.16), "Code: N. DB::Exception: ..." (21.x on), or one of these. */
static const char *const exception_starts[] = {
	"", "Poco::Exception. ", "std::exception. ", "Unknown exception. ",
};

/* The code of the exception text at p..end, 0 if it does not start like
 * one. */
static int exception_code(const char *p, const char *end)
{
	for (size_t i = 0; i < AU_ARRAY_SIZE(exception_starts); i++) {
		size_t k = strlen(exception_starts[i]);
		const char *d = p + k + 6;
		int code = 0;

		if ((size_t)(end - p) < k + 7 || memcmp(p, exception_starts[i], k) != 0 ||
		    memcmp(p + k, "Code: ", 6) != 0)
			continue;
		for (; d < end && isdigit((unsigned char)*d) && code < 100000000; d++)
			code = code * 10 + (*d - '0');
		if (code > 0 && d < end && (*d == ',' || *d == '.'))
			return code;
	}
	return 0;
}

/* Makes r the error of exception text (code 0: unknown); ch NULL leaves
 * the server out of the message. */
static void set_exception(struct au_clickhouse *ch, struct au_ch_response *r, int code,
			  const char *text, size_t len)
{
	char msg[AU_ERRSTR_SIZE];

	error_text(text, len, msg, sizeof(msg));
	r->ch_code = code;
	if (ch && code)
		au_seterr(&r->err, AU_ECLICKHOUSE, "clickhouse error %d at '%s': %s", code,
			  ch->url.text, msg);
	else if (ch)
		au_seterr(&r->err, AU_ECLICKHOUSE, "clickhouse error at '%s': %s", ch->url.text, msg);
	else
		au_seterr(&r->err, AU_ECLICKHOUSE, "clickhouse error %d: %s", code, msg);
}

int au_ch_body_error(struct au_clickhouse *ch, struct au_ch_response *r, const char *text,
		     size_t len)
{
	const char *end = text + len, *p;

	for (p = text; (p = memmem(p, (size_t)(end - p), "Code: ", 6)) != NULL; p++) {
		for (size_t i = AU_ARRAY_SIZE(exception_starts); i-- > 0;) {   /* "" last */
			size_t k = strlen(exception_starts[i]);
			int code;

			if ((size_t)(p - text) >= k && (code = exception_code(p - k, end)) != 0) {
				set_exception(ch, r, code, p - k, (size_t)(end - p + k));
				return -1;
			}
		}
	}
	return 0;
}

/*
 * The message of the block "\r\n__exception__\r\n<tag>\r\n<message>\n<length>
 * <tag>\r\n__exception__\r\n" that 25.11 and later put at the end of an
 * answer that fails after it has begun (then they cut the connection). The
 * tag is random, from the answer's headers: rows cannot forge the block.
 * NULL when there is none; else sets *n.
 */
static const char *tagged_exception(const struct ch_req *req, size_t *n)
{
	const struct au_buf *b = &req->resp.body;
	const char *start = (const char *)b->data, *end = start + b->len, *s, *close, *d;
	char open[64], shut[64];
	int ko, ks;

	if (!req->tag[0])
		return NULL;
	ko = snprintf(open, sizeof(open), "__exception__\r\n%s\r\n", req->tag);
	ks = snprintf(shut, sizeof(shut), " %s\r\n__exception__", req->tag);
	if (b->len > TAG_WINDOW)
		start = end - TAG_WINDOW;
	if (!(s = memmem(start, (size_t)(end - start), open, (size_t)ko)))
		return NULL;
	s += ko;
	*n = (size_t)(end - s);
	if ((close = memmem(s, (size_t)(end - s), shut, (size_t)ks)) != NULL) {
		/* "<message>\n<length>" before the closing tag */
		for (d = close; d > s && isdigit((unsigned char)d[-1]); d--)
			;
		*n = (size_t)(d - s);
		if (d < close && d > s && d[-1] == '\n' && strtoul(d, NULL, 10) < *n)
			*n = strtoul(d, NULL, 10);
	}
	return s;
}

/* The HTTP status 18.16 gives an exception it raises before the answer
 * begins: parse errors in data are the client's (400), the rest of what a
 * running query raises is the server's (500). */
static long code_status(int code)
{
	static const int client_errors[] = {
		6, 25, 26, 38, 41, 53, 72, 117,   /* CANNOT_PARSE_*, TYPE_MISMATCH, INCORRECT_DATA */
	};

	for (size_t i = 0; i < AU_ARRAY_SIZE(client_errors); i++)
		if (code == client_errors[i])
			return 400;
	return 500;
}

/* 1 for the curl results of a TLS handshake that failed or a certificate
 * that was not accepted. */
static int tls_failed(CURLcode rc)
{
	switch (rc) {
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CERTPROBLEM:
	case CURLE_SSL_CIPHER:
	case CURLE_SSL_CACERT_BADFILE:
	case CURLE_SSL_CRL_BADFILE:
	case CURLE_SSL_ISSUER_ERROR:
	case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
	case CURLE_SSL_INVALIDCERTSTATUS:
		return 1;
	default:
		return 0;
	}
}

/*
 * A TLS failure is the server's or the setup's, never the statement's: it
 * is AU_ECONN, an outage, like any connection that could not be made. The
 * message keeps curl's own words (which certificate problem, which host
 * name) and says what to try.
 */
static void tls_error(struct ch_req *req, CURLcode rc)
{
	struct au_clickhouse *ch = req->ch;
	char why[CURL_ERROR_SIZE];
	const char *hint = "";

	snprintf(why, sizeof(why), "%s", req->why[0] ? req->why : curl_easy_strerror(rc));
	/* quoted as curl says it: "SSL certificate problem: ...", "OpenSSL/3.0: ..." */
	why[strcspn(why, "\r\n")] = '\0';
	if (rc == CURLE_PEER_FAILED_VERIFICATION && strstr(why, "host name"))
		hint = " (the certificate is for another host name: use the name it was made for)";
	else if (rc == CURLE_PEER_FAILED_VERIFICATION && !ch->cafile)
		hint = " (a private or self-signed CA? trust it with ?cafile=/path/to/ca.pem)";
	else if (rc == CURLE_PEER_FAILED_VERIFICATION)
		hint = " (is cafile the CA that signed the server's certificate?)";
	else if (rc == CURLE_SSL_CONNECT_ERROR && strstr(why, "wrong version number"))
		hint = " (is it an http port? use http://)";
	au_seterr(&req->resp.err, AU_ECONN, "unable to connect to '%s': tls: %s%s", ch->url.text,
		  why, hint);
}

/* Fills req->resp.err from the curl result and the HTTP answer. */
static void req_finish(struct ch_req *req, CURLcode rc)
{
	struct au_ch_response *r = &req->resp;
	const char *where = req->ch->url.text, *text;
	long connects = 0;
	size_t n;

	curl_easy_getinfo(req->easy, CURLINFO_RESPONSE_CODE, &r->http_status);
	curl_easy_getinfo(req->easy, CURLINFO_NUM_CONNECTS, &connects);
	req->ch->connects += (size_t)connects;
	if (au_buf_reserve(&r->body, 0) < 0) {
		au_seterr(&r->err, AU_ENOMEM, "out of memory");
		return;
	}
	r->body.data[r->body.len] = '\0';   /* a string from here on, even empty */
	if (r->http_status == 200 && (text = tagged_exception(req, &n)) != NULL) {
		/* the server said why before it cut the connection */
		set_exception(req->ch, r, exception_code(text, text + n), text, n);
	} else if (rc == CURLE_OPERATION_TIMEDOUT) {
		au_seterr(&r->err, AU_ETIMEDOUT, "clickhouse request to '%s' timed out after %u ms",
			  where, req->timeout_ms + CURL_GRACE_MS);
	} else if (rc == CURLE_WRITE_ERROR && req->overflow) {
		au_seterr(&r->err, AU_ETOOBIG, "clickhouse answer from '%s' is over %u bytes",
			  where, AU_CH_MAX_BODY);
	} else if (rc == CURLE_OUT_OF_MEMORY || rc == CURLE_WRITE_ERROR) {
		au_seterr(&r->err, AU_ENOMEM, "out of memory");
	} else if (tls_failed(rc)) {
		tls_error(req, rc);
	} else if (rc != CURLE_OK) {
		long os_errno = 0;
		char why[128];

		curl_easy_getinfo(req->easy, CURLINFO_OS_ERRNO, &os_errno);
		snprintf(why, sizeof(why), "%s", os_errno ? strerror((int)os_errno) : curl_easy_strerror(rc));
		why[0] = (char)tolower((unsigned char)why[0]);
		if (rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST)
			au_seterr(&r->err, AU_ECONN, "unable to connect to '%s': %s", where, why);
		else
			au_seterr(&r->err, AU_ECONN, "connection to '%s' failed: %s", where, why);
	} else if (r->http_status != 200) {
		char msg[AU_ERRSTR_SIZE];
		const char *body = (const char *)r->body.data;

		r->ch_code = exception_code(body, body + r->body.len);
		if (!r->ch_code)
			r->ch_code = req->header_code > 0 ? req->header_code : 0;
		error_text(body, r->body.len, msg, sizeof(msg));
		if (r->ch_code)
			au_seterr(&r->err, AU_ECLICKHOUSE, "clickhouse error %d at '%s': %s",
				  r->ch_code, where, msg);
		else
			au_seterr(&r->err, AU_ECLICKHOUSE, "clickhouse http status %ld at '%s': %s",
				  r->http_status, where, msg);
	} else if (req->header_code > 0 &&
		   au_ch_body_error(req->ch, r, (const char *)r->body.data, r->body.len) == 0) {
		/* 200 with a code: the query failed as the answer began */
		r->ch_code = req->header_code;
		au_seterr(&r->err, AU_ECLICKHOUSE, "clickhouse error %d at '%s'", r->ch_code, where);
	}
}

/*
 * Whose fault an error code is, for the codes a computation meets; the
 * rest are judged by their HTTP status (5xx: retry, else for good).
 * docs/clickhouse.md lists them. Outage: the server or the worker's setup
 * (credentials, overload), which another attempt of the same statement
 * does not fix and which must cost the computation nothing. For good: the
 * statement's own (parse, names, types, limits it hit). Retry: what may
 * pass when sent again (timeouts, memory, lost replicas).
 */
static const struct { int code; enum au_ch_fault fault; } fault_table[] = {
	/* the worker's credentials, or a server that turns queries away */
	{ 192, AU_CH_OUTAGE },     /* UNKNOWN_USER */
	{ 193, AU_CH_OUTAGE },     /* WRONG_PASSWORD */
	{ 194, AU_CH_OUTAGE },     /* REQUIRED_PASSWORD */
	{ 516, AU_CH_OUTAGE },     /* AUTHENTICATION_FAILED */
	{ 202, AU_CH_OUTAGE },     /* TOO_MANY_SIMULTANEOUS_QUERIES */
	{ 203, AU_CH_OUTAGE },     /* NO_FREE_CONNECTION */
	{ 209, AU_CH_OUTAGE },     /* SOCKET_TIMEOUT */
	{ 210, AU_CH_OUTAGE },     /* NETWORK_ERROR */
	{ 252, AU_CH_OUTAGE },     /* TOO_MANY_PARTS: inserts faster than merges */
	{ 279, AU_CH_OUTAGE },     /* ALL_CONNECTION_TRIES_FAILED */
	/* may pass when sent again; the attempt counts */
	{ 159, AU_CH_RETRY },      /* TIMEOUT_EXCEEDED */
	{ 160, AU_CH_RETRY },      /* TOO_SLOW */
	{ 241, AU_CH_RETRY },      /* MEMORY_LIMIT_EXCEEDED */
	{ 242, AU_CH_RETRY },      /* TABLE_IS_READ_ONLY (a replica lost its keeper) */
	{ 319, AU_CH_RETRY },      /* UNKNOWN_STATUS_OF_INSERT */
	{ 425, AU_CH_RETRY },      /* SYSTEM_ERROR */
	{ 473, AU_CH_RETRY },      /* DEADLOCK_AVOIDED */
	{ 999, AU_CH_RETRY },      /* KEEPER_EXCEPTION */
	/* the statement's own: the same request fails the same way */
	{ 6, AU_CH_FOR_GOOD },     /* CANNOT_PARSE_TEXT */
	{ 16, AU_CH_FOR_GOOD },    /* NO_SUCH_COLUMN_IN_TABLE */
	{ 20, AU_CH_FOR_GOOD },    /* NUMBER_OF_COLUMNS_DOESNT_MATCH */
	{ 25, AU_CH_FOR_GOOD },    /* CANNOT_PARSE_ESCAPE_SEQUENCE */
	{ 26, AU_CH_FOR_GOOD },    /* CANNOT_PARSE_QUOTED_STRING */
	{ 27, AU_CH_FOR_GOOD },    /* CANNOT_PARSE_INPUT_ASSERTION_FAILED */
	{ 36, AU_CH_FOR_GOOD },    /* BAD_ARGUMENTS */
	{ 38, AU_CH_FOR_GOOD },    /* CANNOT_PARSE_DATE */
	{ 41, AU_CH_FOR_GOOD },    /* CANNOT_PARSE_DATETIME */
	{ 42, AU_CH_FOR_GOOD },    /* NUMBER_OF_ARGUMENTS_DOESNT_MATCH */
	{ 43, AU_CH_FOR_GOOD },    /* ILLEGAL_TYPE_OF_ARGUMENT */
	{ 44, AU_CH_FOR_GOOD },    /* ILLEGAL_COLUMN */
	{ 46, AU_CH_FOR_GOOD },    /* UNKNOWN_FUNCTION */
	{ 47, AU_CH_FOR_GOOD },    /* UNKNOWN_IDENTIFIER */
	{ 48, AU_CH_FOR_GOOD },    /* NOT_IMPLEMENTED */
	{ 53, AU_CH_FOR_GOOD },    /* TYPE_MISMATCH */
	{ 57, AU_CH_FOR_GOOD },    /* TABLE_ALREADY_EXISTS */
	{ 60, AU_CH_FOR_GOOD },    /* UNKNOWN_TABLE */
	{ 62, AU_CH_FOR_GOOD },    /* SYNTAX_ERROR */
	{ 69, AU_CH_FOR_GOOD },    /* ARGUMENT_OUT_OF_BOUND */
	{ 70, AU_CH_FOR_GOOD },    /* CANNOT_CONVERT_TYPE */
	{ 72, AU_CH_FOR_GOOD },    /* CANNOT_PARSE_NUMBER */
	{ 73, AU_CH_FOR_GOOD },    /* UNKNOWN_FORMAT */
	{ 81, AU_CH_FOR_GOOD },    /* UNKNOWN_DATABASE, but see au_ch_fault */
	{ 115, AU_CH_FOR_GOOD },   /* UNKNOWN_SETTING */
	{ 117, AU_CH_FOR_GOOD },   /* INCORRECT_DATA (an unknown column in JSONEachRow) */
	{ 153, AU_CH_FOR_GOOD },   /* ILLEGAL_DIVISION */
	{ 158, AU_CH_FOR_GOOD },   /* TOO_MANY_ROWS */
	{ 164, AU_CH_FOR_GOOD },   /* READONLY */
	{ 184, AU_CH_FOR_GOOD },   /* ILLEGAL_AGGREGATION */
	{ 215, AU_CH_FOR_GOOD },   /* NOT_AN_AGGREGATE */
	{ 307, AU_CH_FOR_GOOD },   /* TOO_MANY_BYTES */
	{ 352, AU_CH_FOR_GOOD },   /* AMBIGUOUS_COLUMN_NAME */
	{ 386, AU_CH_FOR_GOOD },   /* NO_COMMON_TYPE */
	{ 394, AU_CH_FOR_GOOD },   /* QUERY_WAS_CANCELLED: stopped on purpose */
	{ 396, AU_CH_FOR_GOOD },   /* TOO_MANY_ROWS_OR_BYTES */
	{ 497, AU_CH_FOR_GOOD },   /* ACCESS_DENIED: to what the statement touches */
};

/* "Database <db> doesn't exist" (18.16), "Database `db` does not exist"
 * (later): the worker's own database, not one a statement names. */
static int names_database(const char *msg, const char *db)
{
	const char *p = msg;
	size_t n = strlen(db);

	while ((p = strstr(p, "Database ")) != NULL) {
		p += strlen("Database ");
		if (*p == '`' || *p == '\'')
			p++;
		if (!strncmp(p, db, n) && (p[n] == ' ' || p[n] == '`' || p[n] == '\''))
			return 1;
	}
	return 0;
}

enum au_ch_fault au_ch_fault(const struct au_clickhouse *ch, const struct au_ch_response *r)
{
	long status;
	size_t i;

	switch (r->err.code) {
	case AU_ECONN:
		return AU_CH_OUTAGE;
	case AU_ETIMEDOUT:
		return AU_CH_RETRY;
	case AU_ECLICKHOUSE:
		break;
	default:
		return AU_CH_FOR_GOOD;
	}
	if (r->ch_code == 81 && ch && names_database(r->err.str, ch->database))
		return AU_CH_OUTAGE;
	for (i = 0; i < AU_ARRAY_SIZE(fault_table); i++)
		if (fault_table[i].code == r->ch_code)
			return fault_table[i].fault;
	/* An error after the answer began came with 200: judged by the status
	 * 18.16 gives its code before the answer. */
	status = r->http_status == 200 ? code_status(r->ch_code) : r->http_status;
	if (status == 401 || status == 403 || status == 503)
		return AU_CH_OUTAGE;
	return status >= 500 ? AU_CH_RETRY : AU_CH_FOR_GOOD;
}

/* ---- constructor ---- */

/* The URL's own parameters: only cafile=, and only for https. Anything
 * else would be taken for a ClickHouse setting, which au does not pass. */
static int url_params(struct au_clickhouse *ch, int https, struct au_err *err)
{
	const char *p = ch->url.query;

	while (p && *p) {
		size_t klen = strcspn(p, "=&");

		if (klen != 6 || strncmp(p, "cafile", 6) != 0)
			return au_seterr(err, AU_EINVAL, "invalid clickhouse url '%s': unknown parameter "
					 "'%.*s' (the only one is cafile=)", ch->url.text, (int)klen, p);
		p += strcspn(p, "&");
		p += *p == '&';
	}
	if (!ch->url.query)
		return 0;
	if (!https)
		return au_seterr(err, AU_EINVAL, "invalid clickhouse url '%s': cafile= is for https://",
				 ch->url.text);
	free(ch->cafile);
	if (!(ch->cafile = au_url_param(&ch->url, "cafile")))
		return au_seterr(err, AU_EINVAL, "invalid clickhouse url '%s': bad cafile", ch->url.text);
	if (!*ch->cafile)
		return au_seterr(err, AU_EINVAL, "invalid clickhouse url '%s': empty cafile", ch->url.text);
	/* curl would only say "problem with the SSL CA cert", at the first request */
	if (access(ch->cafile, R_OK) < 0) {
		char why[128];

		snprintf(why, sizeof(why), "%s", strerror(errno));
		why[0] = (char)tolower((unsigned char)why[0]);
		return au_seterr(err, AU_EINVAL, "invalid clickhouse url '%s': cannot read cafile '%s': %s",
				 ch->url.text, ch->cafile, why);
	}
	return 0;
}

struct au_clickhouse *au_ch_new(const char *text, struct au_err *err)
{
	struct au_clickhouse *ch;
	const char *db;
	int https;
	char *h;

	pthread_once(&curl_once, curl_init);
	if (curl_init_rc != CURLE_OK) {
		au_seterr(err, AU_ENOMEM, "curl_global_init: %s", curl_easy_strerror(curl_init_rc));
		return NULL;
	}
	ch = calloc(1, sizeof(*ch));
	if (!ch)
		goto oom;
	if (au_url_parse(text, &ch->url, err) < 0)
		goto fail;
	https = !strcmp(ch->url.scheme, "https");
	if (!https && strcmp(ch->url.scheme, "http") != 0) {
		au_seterr(err, AU_EINVAL, "invalid clickhouse url '%s': scheme must be http or https",
			  ch->url.text);
		goto fail;
	}
	if (url_params(ch, https, err) < 0)
		goto fail;
	db = ch->url.path && *ch->url.path ? ch->url.path : AU_CH_DEFAULT_DATABASE;
	if (!au_sql_identifier_valid(db) || strchr(db, '.')) {
		au_seterr(err, AU_EINVAL, "invalid clickhouse url '%s': bad database name", ch->url.text);
		goto fail;
	}
	/* an IPv6 address goes back into brackets */
	h = ch->url.host;
	ch->endpoint = au_asprintf(strchr(h, ':') ? "%s://[%s]:%d/" : "%s://%s:%d/", ch->url.scheme,
				   h, ch->url.port ? ch->url.port : https ? 8443 : 8123);
	ch->database = au_strdup(db);
	if (!ch->endpoint || !ch->database)
		goto oom;

	/* Credentials travel in headers, never in the URL (which may be logged
	 * by proxies); "Expect:" stops curl waiting for 100-continue. */
	if (!(ch->headers = curl_slist_append(NULL, "Expect:")))
		goto oom;
	if (ch->url.user) {
		char *line = au_asprintf("X-ClickHouse-User: %s", ch->url.user);
		struct curl_slist *l = line ? curl_slist_append(ch->headers, line) : NULL;

		free(line);
		if (!l)
			goto oom;
	}
	if (ch->url.password && *ch->url.password) {
		char *line = au_asprintf("X-ClickHouse-Key: %s", ch->url.password);
		struct curl_slist *l = line ? curl_slist_append(ch->headers, line) : NULL;

		free(line);
		if (!l)
			goto oom;
	}
	if (req_init(ch, &ch->sync) < 0)
		goto oom;
	return ch;

oom:
	au_seterr(err, AU_ENOMEM, "out of memory");
fail:
	au_ch_free(ch);
	return NULL;
}

void au_ch_free(struct au_clickhouse *ch)
{
	struct ch_req *req;

	if (!ch)
		return;
	/* requests still in flight are dropped without a callback */
	while ((req = ch->active) != NULL) {
		ch->active = req->next;
		curl_multi_remove_handle(ch->multi, req->easy);
		req_release(req);
		free(req);
	}
	if (ch->multi)
		curl_multi_cleanup(ch->multi);   /* frees the socket events via on_socket_change */
	while ((req = ch->free_reqs) != NULL) {
		ch->free_reqs = req->next;
		req_release(req);
		free(req);
	}
	if (ch->timer)
		event_free(ch->timer);
	req_release(&ch->sync);
	curl_slist_free_all(ch->headers);
	au_url_release(&ch->url);
	free(ch->endpoint);
	free(ch->database);
	free(ch->cafile);
	free(ch->version);
	free(ch);
}

/* ---- blocking requests ---- */

int au_ch_query_sync(struct au_clickhouse *ch, const struct au_ch_query *q,
		     struct au_ch_response *resp)
{
	struct ch_req *req = &ch->sync;
	const char *body = q->data ? q->data : q->sql;
	size_t len = q->data ? q->data_len : strlen(q->sql);

	memset(resp, 0, sizeof(*resp));
	if (req_setup(req, q, body, len) < 0) {
		*resp = req->resp;
		memset(&req->resp, 0, sizeof(req->resp));
		return -1;
	}
	req_finish(req, curl_easy_perform(req->easy));
	curl_easy_setopt(req->easy, CURLOPT_POSTFIELDS, NULL);
	*resp = req->resp;          /* the caller takes the body */
	memset(&req->resp, 0, sizeof(req->resp));
	return resp->err.code ? -1 : 0;
}

const char *au_ch_server_version(struct au_clickhouse *ch, struct au_err *err)
{
	struct au_ch_query q = { .sql = "SELECT version()", .timeout_ms = ADMIN_TIMEOUT_MS };
	struct au_ch_response r;
	char *v;
	size_t n;

	if (ch->version)
		return ch->version;
	if (au_ch_query_sync(ch, &q, &r) < 0) {
		if (err)
			*err = r.err;
		au_ch_response_release(&r);
		return NULL;
	}
	v = (char *)au_buf_detach(&r.body, &n);
	while (n && isspace((unsigned char)v[n - 1]))
		v[--n] = '\0';
	ch->version = v;
	if (!v)
		au_seterr(err, AU_ENOMEM, "out of memory");
	return v;
}

static int kill_sql(struct au_buf *sql, const char *query_id, int sync)
{
	return au_buf_puts(sql, "KILL QUERY WHERE query_id = ") < 0 ||
	       au_sql_quote(sql, query_id, strlen(query_id)) < 0 ||
	       (sync && au_buf_puts(sql, " SYNC") < 0) ? -1 : 0;
}

int au_ch_kill_query(struct au_clickhouse *ch, const char *query_id, struct au_err *err)
{
	struct au_buf sql = AU_BUF_INIT;
	struct au_ch_query q = { .timeout_ms = ADMIN_TIMEOUT_MS };
	struct au_ch_response r;
	int rc;

	if (kill_sql(&sql, query_id, 1) < 0) {
		au_buf_release(&sql);
		return au_seterr(err, AU_ENOMEM, "out of memory");
	}
	q.sql = (const char *)sql.data;
	rc = au_ch_query_sync(ch, &q, &r);
	if (rc < 0 && err)
		*err = r.err;
	au_ch_response_release(&r);
	au_buf_release(&sql);
	return rc;
}

/* ---- curl_multi on libevent ---- */

static void req_unlink(struct au_clickhouse *ch, struct ch_req *req)
{
	curl_multi_remove_handle(ch->multi, req->easy);
	if (req->prev)
		req->prev->next = req->next;
	else
		ch->active = req->next;
	if (req->next)
		req->next->prev = req->prev;
	ch->inflight--;
}

static void req_recycle(struct au_clickhouse *ch, struct ch_req *req)
{
	au_ch_response_release(&req->resp);
	au_buf_reset(&req->post);
	req->next = ch->free_reqs;
	ch->free_reqs = req;
}

static void check_done(struct au_clickhouse *ch)
{
	CURLMsg *msg;
	int left;

	while ((msg = curl_multi_info_read(ch->multi, &left)) != NULL) {
		struct ch_req *req;

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&req);
		/* msg is invalid once the handle is removed: take the result first */
		req_finish(req, msg->data.result);
		req_unlink(ch, req);
		req->done(&req->resp, req->arg);
		req_recycle(ch, req);
	}
}

static void on_socket(evutil_socket_t fd, short what, void *arg)
{
	struct au_clickhouse *ch = arg;
	int running, action = (what & EV_READ ? CURL_CSELECT_IN : 0) |
			      (what & EV_WRITE ? CURL_CSELECT_OUT : 0);

	curl_multi_socket_action(ch->multi, fd, action, &running);
	check_done(ch);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
	struct au_clickhouse *ch = arg;
	int running;

	(void)fd;
	(void)what;
	curl_multi_socket_action(ch->multi, CURL_SOCKET_TIMEOUT, 0, &running);
	check_done(ch);
}

/* CURLMOPT_SOCKETFUNCTION: one persistent event per socket, stored with
 * curl_multi_assign. */
static int on_socket_change(CURL *easy, curl_socket_t s, int what, void *arg, void *sockp)
{
	struct au_clickhouse *ch = arg;
	struct event *ev = sockp;
	short kind;

	(void)easy;
	if (what == CURL_POLL_REMOVE) {
		if (ev)
			event_free(ev);
		curl_multi_assign(ch->multi, s, NULL);
		return 0;
	}
	kind = (short)(EV_PERSIST | (what & CURL_POLL_IN ? EV_READ : 0) |
		       (what & CURL_POLL_OUT ? EV_WRITE : 0));
	if (ev) {
		event_del(ev);
		event_assign(ev, ch->base, s, kind, on_socket, ch);
	} else {
		ev = event_new(ch->base, s, kind, on_socket, ch);
		if (!ev)
			return -1;
		curl_multi_assign(ch->multi, s, ev);
	}
	return event_add(ev, NULL);
}

/* CURLMOPT_TIMERFUNCTION: one evtimer; -1 stops it. */
static int on_timer_change(CURLM *multi, long timeout_ms, void *arg)
{
	struct au_clickhouse *ch = arg;
	struct timeval tv = { timeout_ms / 1000, (timeout_ms % 1000) * 1000 };

	(void)multi;
	if (timeout_ms < 0)
		return evtimer_del(ch->timer);
	return evtimer_add(ch->timer, &tv);
}

int au_ch_attach(struct au_clickhouse *ch, struct event_base *base)
{
	if (ch->multi)
		AU_BUG("au_ch_attach called twice");
	ch->base = base;
	ch->timer = evtimer_new(base, on_timer, ch);
	ch->multi = curl_multi_init();
	if (!ch->timer || !ch->multi)
		return -1;
	curl_multi_setopt(ch->multi, CURLMOPT_SOCKETFUNCTION, on_socket_change);
	curl_multi_setopt(ch->multi, CURLMOPT_SOCKETDATA, ch);
	curl_multi_setopt(ch->multi, CURLMOPT_TIMERFUNCTION, on_timer_change);
	curl_multi_setopt(ch->multi, CURLMOPT_TIMERDATA, ch);
	curl_multi_setopt(ch->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)AU_CH_MAX_CONNECTIONS);
	/* by default the idle cache shrinks with the handles in use, closing
	 * connections just when a quiet moment ends */
	curl_multi_setopt(ch->multi, CURLMOPT_MAXCONNECTS, (long)AU_CH_MAX_CONNECTIONS);
	return 0;
}

int au_ch_send(struct au_clickhouse *ch, const struct au_ch_query *q, au_ch_done_fn done,
	       void *arg)
{
	struct ch_req *req = ch->free_reqs;
	int running;

	if (!ch->multi)
		AU_BUG("au_ch_send without au_ch_attach");
	if (req) {
		ch->free_reqs = req->next;
	} else {
		req = malloc(sizeof(*req));
		if (!req)
			return -1;
		if (req_init(ch, req) < 0) {
			free(req);
			return -1;
		}
	}
	if (au_buf_append(&req->post, q->data ? q->data : q->sql,
			  q->data ? q->data_len : strlen(q->sql)) < 0 ||
	    req_setup(req, q, req->post.data, req->post.len) < 0 ||
	    curl_multi_add_handle(ch->multi, req->easy) != CURLM_OK) {
		req_recycle(ch, req);
		return -1;
	}
	req->done = done;
	req->arg = arg;
	req->prev = NULL;
	req->next = ch->active;
	if (ch->active)
		ch->active->prev = req;
	ch->active = req;
	ch->inflight++;
	/* Send now rather than on the next turn of the loop: the caller may
	 * block on other servers before the loop turns. What finished
	 * meanwhile is collected by the timer's callback, made due at once. */
	curl_multi_socket_action(ch->multi, CURL_SOCKET_TIMEOUT, 0, &running);
	event_active(ch->timer, EV_TIMEOUT, 0);
	return 0;
}

int au_ch_cancel(struct au_clickhouse *ch, au_ch_done_fn done, void *arg)
{
	struct ch_req *req;

	for (req = ch->active; req; req = req->next)
		if (req->done == done && req->arg == arg)
			break;
	if (!req)
		return -1;
	req_unlink(ch, req);   /* a half-done transfer closes its connection */
	req_recycle(ch, req);
	return 0;
}

static void ignore_answer(struct au_ch_response *resp, void *arg)
{
	(void)resp;
	(void)arg;
}

int au_ch_kill_query_async(struct au_clickhouse *ch, const char *query_id)
{
	struct au_buf sql = AU_BUF_INIT;
	struct au_ch_query q = { .timeout_ms = ADMIN_TIMEOUT_MS };
	int rc = -1;

	if (kill_sql(&sql, query_id, 0) == 0) {
		q.sql = (const char *)sql.data;
		rc = au_ch_send(ch, &q, ignore_answer, NULL);
	}
	au_buf_release(&sql);
	return rc;
}

size_t au_ch_inflight(const struct au_clickhouse *ch)
{
	return ch->inflight;
}

size_t au_ch_connects(const struct au_clickhouse *ch)
{
	return ch->connects;
}
