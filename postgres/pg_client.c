/*
 * pg_client.c - how au talks to PostgreSQL, for the queue and the store
 * alike (pg_client.h): connection strings from au URLs, connections that
 * survive a server restart, messages in au's style, waiting for a
 * notification, binary parameters.
 */
#include <ctype.h>
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <libpq-fe.h>

#include "pg_client.h"
#include "pg_schema.h"

#define CONNECT_TIMEOUT_S "10"

/*
 * Every session of au plans without sequential scans, bitmap scans and
 * nested loops. A prepared statement switches to a cached generic plan
 * after five runs, and one made while au_jobs was small (or its statistics
 * stale) can scan the whole table on every lease and acknowledgement. Even
 * the first, custom plans misjudge a batch: they took the ids of an ack for
 * one row and joined them in a nested loop, 256 x 256 comparisons (30 ms
 * instead of 1.5). With these settings every statement of au walks an
 * index bounded by its batch, whatever the statistics say, and joins by
 * hashing. plan_cache_mode=force_custom_plan would leave the second trap
 * and re-plan every call (3-30% slower in queue-limits.md).
 */
#define SESSION_OPTIONS "-c enable_seqscan=off -c enable_bitmapscan=off -c enable_nestloop=off"

/* ---- messages ---- */

/* libpq's message reduced to au's style: its first line, after "...
 * failed: " and the severity, starting lowercase. */
static void tidy(char *out, size_t n, const char *msg)
{
	const char *p = msg ? msg : "", *f;
	size_t len;

	len = strcspn(p, "\n");
	if ((f = strstr(p, "failed: ")) && f < p + len) {
		p = f + 8;
		len = strcspn(p, "\n");
	}
	while (!strncmp(p, "FATAL:  ", 8) || !strncmp(p, "ERROR:  ", 8)) {
		p += 8;
		len = strcspn(p, "\n");
	}
	while (len && isspace((unsigned char)p[len - 1]))
		len--;
	if (!len) {
		p = "connection error";
		len = strlen(p);
	}
	snprintf(out, n, "%.*s", (int)len, p);
	/* "Connection refused", but "SSL error: ..." stays */
	if (!isupper((unsigned char)out[1]))
		out[0] = (char)tolower((unsigned char)out[0]);
}

int au_pg_connect_error(struct au_err *err, const struct au_url *url, PGconn *c)
{
	char why[AU_ERRSTR_SIZE];

	if (!c)
		return au_seterr(err, AU_ENOMEM, "out of memory");
	tidy(why, sizeof(why), PQerrorMessage(c));
	/* libpq names neither the file nor the setting */
	if (strstr(why, "certificate verify failed"))
		return au_seterr(err, AU_ECONN, "unable to connect to '%s': %s (is sslrootcert the CA "
				 "that signed the server's certificate?)", url->text, why);
	return au_seterr(err, AU_ECONN, "unable to connect to '%s': %s", url->text, why);
}

/* A failed statement: a dropped connection is AU_ECONN, anything the server
 * said AU_EPROTO. */
int au_pg_query_error(struct au_err *err, const struct au_url *url, PGconn *c,
		      const PGresult *r)
{
	const char *primary = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
	char why[AU_ERRSTR_SIZE];

	if (PQstatus(c) == CONNECTION_BAD) {
		tidy(why, sizeof(why), PQerrorMessage(c));
		return au_seterr(err, AU_ECONN, "lost connection to '%s': %s", url->text, why);
	}
	if (!r)
		return au_seterr(err, AU_ENOMEM, "out of memory");
	tidy(why, sizeof(why), primary ? primary : PQresultErrorMessage(r));
	return au_seterr(err, AU_EPROTO, "postgres error from '%s': %s", url->text, why);
}

static void notice(void *arg, const char *msg)
{
	(void)arg;
	au_log(AU_LOG_DEBUG, "postgres: %.*s", (int)strcspn(msg, "\n"), msg);
}

void au_pg_notices(PGconn *c)
{
	if (c)
		PQsetNoticeProcessor(c, notice, NULL);
}
/* ---- connection strings ---- */

static int conninfo_add(struct au_buf *b, const char *key, const char *val)
{
	int rc = au_buf_printf(b, "%s%s='", b->len ? " " : "", key);

	for (; *val && rc == 0; val++) {
		if (*val == '\'' || *val == '\\')
			rc = au_buf_append(b, "\\", 1);
		if (rc == 0)
			rc = au_buf_append(b, val, 1);
	}
	return rc < 0 ? -1 : au_buf_puts(b, "'");
}

/* Our own URL parameters; libpq would refuse them. */
static int au_param(const char *key, size_t len)
{
	return (len == 7 && !strncmp(key, "migrate", 7)) ||
	       (len == 8 && !strncmp(key, "watchers", 8)) ||
	       (len == 8 && !strncmp(key, "dead_max", 8)) ||
	       (len == 12 && !strncmp(key, "dead_max_age", 12));
}

static int pg_scheme(const char *scheme)
{
	return scheme && (!strcmp(scheme, "postgres") || !strcmp(scheme, "postgresql"));
}

static int same_str(const char *a, const char *b)
{
	return !strcmp(a ? a : "", b ? b : "");
}

/* Parameters that do not change which tables a session sees. */
static int harmless_param(const char *key, size_t len)
{
	static const char *const keys[] = { "application_name", "connect_timeout", "password" };
	size_t i;

	for (i = 0; i < AU_ARRAY_SIZE(keys); i++)
		if (len == strlen(keys[i]) && !strncmp(key, keys[i], len))
			return 1;
	return au_param(key, len);
}

/* 1 if every parameter of a that matters has the same value in b. */
static int params_within(const struct au_url *a, const struct au_url *b)
{
	const char *p = a->query;

	while (p && *p) {
		size_t klen = strcspn(p, "=&");
		char key[64], *va, *vb;
		int same;

		if (klen >= sizeof(key))
			return 0;
		memcpy(key, p, klen);
		key[klen] = '\0';
		p += strcspn(p, "&");
		p += *p == '&';
		if (!klen || harmless_param(key, klen))
			continue;
		va = au_url_param(a, key);
		vb = au_url_param(b, key);
		same = va && vb && !strcmp(va, vb);
		free(va);
		free(vb);
		if (!same)
			return 0;
	}
	return 1;
}

int au_pg_same_database(const struct au_url *a, const struct au_url *b)
{
	return pg_scheme(a->scheme) && pg_scheme(b->scheme) && a->host && b->host &&
	       !strcasecmp(a->host, b->host) && a->port == b->port && same_str(a->user, b->user) &&
	       same_str(a->path, b->path) && params_within(a, b) && params_within(b, a);
}

char *au_pg_conninfo(const struct au_url *url, struct au_err *err)
{
	struct au_buf b = AU_BUF_INIT;
	char *options = NULL, *val, port[16];
	const char *p = url->query;
	int rc = 0, app_name = 0, timeout = 0;

	if (strcmp(url->scheme, "postgres") && strcmp(url->scheme, "postgresql")) {
		au_seterr(err, AU_EINVAL, "not a postgres url '%s'", url->text);
		return NULL;
	}
	rc |= conninfo_add(&b, "host", url->host);
	if (url->port) {
		snprintf(port, sizeof(port), "%d", url->port);
		rc |= conninfo_add(&b, "port", port);
	}
	if (url->user)
		rc |= conninfo_add(&b, "user", url->user);
	if (url->password)
		rc |= conninfo_add(&b, "password", url->password);
	if (url->path && *url->path)
		rc |= conninfo_add(&b, "dbname", url->path);
	/* The other query parameters are libpq's (sslmode=, host=/socket/dir) */
	while (p && *p && rc == 0) {
		size_t klen = strcspn(p, "=&"), i;
		char key[64];

		for (i = 0; i < klen; i++)
			if (!islower((unsigned char)p[i]) && p[i] != '_')
				break;
		if (i < klen || klen == 0 || klen >= sizeof(key)) {
			au_seterr(err, AU_EINVAL, "invalid url '%s': bad parameter '%.*s'", url->text,
				  (int)klen, p);
			goto fail;
		}
		memcpy(key, p, klen);
		key[klen] = '\0';
		p += strcspn(p, "&");
		p += *p == '&';
		if (au_param(key, klen))
			continue;
		if (!(val = au_url_param(url, key)))
			goto oom;
		if (!strcmp(key, "options")) {
			free(options);
			options = val;
			continue;
		}
		app_name |= !strcmp(key, "application_name");
		timeout |= !strcmp(key, "connect_timeout");
		rc |= conninfo_add(&b, key, val);
		free(val);
	}
	if (!app_name)
		rc |= conninfo_add(&b, "application_name", "au");
	if (!timeout)
		rc |= conninfo_add(&b, "connect_timeout", CONNECT_TIMEOUT_S);
	/* the user's options come last, so they may override ours */
	if (!(val = au_asprintf("%s%s%s", SESSION_OPTIONS, options ? " " : "", options ? options : "")))
		goto oom;
	rc |= conninfo_add(&b, "options", val);
	free(val);
	if (rc)
		goto oom;
	free(options);
	return (char *)au_buf_detach(&b, NULL);
oom:
	au_seterr(err, AU_ENOMEM, "out of memory");
fail:
	free(options);
	au_buf_release(&b);
	return NULL;
}
/* ---- connections ---- */

int au_pg_open(struct au_pg *pg, const struct au_url *url, const struct au_pg_stmt *stmts,
	       size_t nstmts, struct au_err *err)
{
	char *want = au_url_param(url, "migrate");
	int rc = -1;

	memset(pg, 0, sizeof(*pg));
	pg->url = url;
	pg->stmts = stmts;
	pg->nstmts = nstmts;
	if (!(pg->conninfo = au_pg_conninfo(url, err)))
		goto out;
	pg->c = PQconnectdb(pg->conninfo);
	au_pg_notices(pg->c);
	if (PQstatus(pg->c) != CONNECTION_OK) {
		au_pg_connect_error(err, url, pg->c);
		goto out;
	}
	rc = au_pg_schema_ensure(pg->c, url, want && strcmp(want, "0"), err);
out:
	free(want);
	if (rc < 0)
		au_pg_close(pg);
	return rc;
}

void au_pg_close(struct au_pg *pg)
{
	PQfinish(pg->c);
	free(pg->conninfo);
	pg->c = NULL;
	pg->conninfo = NULL;
}

/* A connection found broken is reset once per call; what the old session
 * had (prepared statements, LISTEN) is gone with it. */
static int ensure(struct au_pg *pg, struct au_err *err)
{
	if (PQstatus(pg->c) == CONNECTION_OK)
		return 0;
	PQreset(pg->c);
	pg->prepared = 0;
	if (PQstatus(pg->c) == CONNECTION_OK)
		return 0;
	return au_pg_connect_error(err, pg->url, pg->c);
}

static void drop_notifies(PGconn *c)
{
	PGnotify *n;

	while ((n = PQnotifies(c)))
		PQfreemem(n);
}

/* 1 if the failed result r is worth one more try: the connection broke, or
 * the session lost our prepared statements. */
static int retryable(struct au_pg *pg, const PGresult *r)
{
	const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;

	if (PQstatus(pg->c) == CONNECTION_BAD)
		return 1;
	if (state && !strcmp(state, "26000")) {   /* invalid_sql_statement_name */
		pg->prepared = 0;
		return 1;
	}
	return 0;
}

/* Keeps the SQLSTATE of failed result r (none for r NULL or a success). */
static void keep_state(struct au_pg *pg, const PGresult *r)
{
	const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;

	snprintf(pg->sqlstate, sizeof(pg->sqlstate), "%s", state ? state : "");
}

int au_pg_unique_violation(const struct au_pg *pg)
{
	return !strcmp(pg->sqlstate, "23505");
}

PGresult *au_pg_exec(struct au_pg *pg, int stmt, int nparams, const char *const *vals,
		     const int *lens, struct au_err *err)
{
	static const int binary[16] = { 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1 };
	const struct au_pg_stmt *s;
	uint64_t bit;
	int attempt;

	if (stmt < 0 || (size_t)stmt >= pg->nstmts || stmt >= 64 ||
	    nparams > (int)AU_ARRAY_SIZE(binary))
		AU_BUG("statement %d of %zu with %d parameters", stmt, pg->nstmts, nparams);
	s = &pg->stmts[stmt];
	bit = (uint64_t)1 << stmt;
	for (attempt = 0; attempt < 2; attempt++) {
		PGresult *r = NULL;
		ExecStatusType st;

		pg->sqlstate[0] = '\0';
		if (ensure(pg, err) < 0)
			return NULL;
		drop_notifies(pg->c);
		if (!(pg->prepared & bit)) {
			r = PQprepare(pg->c, s->name, s->sql, 0, NULL);
			if (PQresultStatus(r) != PGRES_COMMAND_OK)
				goto failed;
			PQclear(r);
			pg->prepared |= bit;
		}
		r = PQexecPrepared(pg->c, s->name, nparams, vals, lens, binary, 1);
		st = PQresultStatus(r);
		if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK) {
			pg->sqlstate[0] = '\0';
			return r;
		}
failed:
		keep_state(pg, r);
		if (attempt == 0 && retryable(pg, r)) {
			PQclear(r);
			continue;
		}
		au_pg_query_error(err, pg->url, pg->c, r);
		PQclear(r);
		return NULL;
	}
	return NULL;
}

int au_pg_command(struct au_pg *pg, const char *sql, struct au_err *err)
{
	int attempt;

	for (attempt = 0; attempt < 2; attempt++) {
		PGresult *r;

		if (ensure(pg, err) < 0)
			return -1;
		r = PQexec(pg->c, sql);
		if (PQresultStatus(r) == PGRES_COMMAND_OK) {
			PQclear(r);
			return 0;
		}
		if (attempt == 0 && retryable(pg, r)) {
			PQclear(r);
			continue;
		}
		au_pg_query_error(err, pg->url, pg->c, r);
		PQclear(r);
	}
	return -1;
}

int au_pg_wait(struct au_pg *pg, const char *channel, const char *payload, uint64_t deadline_us,
	       struct au_err *err)
{
	for (;;) {
		struct pollfd pfd = { .fd = PQsocket(pg->c), .events = POLLIN };
		uint64_t now, left;
		PGnotify *n;
		int ms = -1;

		while ((n = PQnotifies(pg->c))) {
			int hit = !strcmp(n->relname, channel) && (!payload || !strcmp(n->extra, payload));

			PQfreemem(n);
			if (hit)
				return 1;
		}
		if (deadline_us) {
			if ((now = au_mono_us()) >= deadline_us)
				return 0;
			left = (deadline_us - now + 999) / 1000;
			/* poll takes an int: an hour at a time */
			ms = left < 3600000 ? (int)left : 3600000;
		}
		if (pfd.fd < 0)
			return au_pg_query_error(err, pg->url, pg->c, NULL);
		if (poll(&pfd, 1, ms) < 0 && errno != EINTR)
			return au_seterr(err, AU_EIO, "cannot wait for '%s': %s", pg->url->text,
					 strerror(errno));
		if (pfd.revents && !PQconsumeInput(pg->c))
			return au_pg_query_error(err, pg->url, pg->c, NULL);
	}
}

/* ---- binary values ---- */

void au_pg_put_u32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

void au_pg_put_u64(unsigned char *p, uint64_t v)
{
	au_pg_put_u32(p, (uint32_t)(v >> 32));
	au_pg_put_u32(p + 4, (uint32_t)v);
}

uint32_t au_pg_get_u32(const char *s)
{
	const unsigned char *p = (const unsigned char *)s;

	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

uint64_t au_pg_get_u64(const char *p)
{
	return (uint64_t)au_pg_get_u32(p) << 32 | au_pg_get_u32(p + 4);
}

/* The wire format of a one-dimensional array (array_recv): ndim, has-null
 * flag (informative), element type, then size and lower bound of the
 * dimension; each element is its length (-1 for NULL) and its bytes. */
int au_pg_array(struct au_buf *b, unsigned elem, size_t n)
{
	unsigned char h[20];

	au_pg_put_u32(h, n ? 1 : 0);
	au_pg_put_u32(h + 4, 0);
	au_pg_put_u32(h + 8, elem);
	au_pg_put_u32(h + 12, (uint32_t)n);
	au_pg_put_u32(h + 16, 1);
	return au_buf_append(b, h, n ? 20 : 12);
}

int au_pg_array_add(struct au_buf *b, const void *p, int len)
{
	unsigned char h[4];

	au_pg_put_u32(h, (uint32_t)len);
	if (au_buf_append(b, h, 4) < 0)
		return -1;
	return len > 0 ? au_buf_append(b, p, (size_t)len) : 0;
}

int au_pg_array_open(struct au_buf *b, size_t *at)
{
	*at = b->len;
	return au_buf_append(b, "\0\0\0\0", 4);
}

void au_pg_array_close(struct au_buf *b, size_t at)
{
	au_pg_put_u32(b->data + at, (uint32_t)(b->len - at - 4));
}

static int hexval(int c)
{
	return c <= '9' ? c - '0' : c - 'a' + 10;
}

int au_pg_uuid(unsigned char out[16], const char *id)
{
	int i;

	if (!au_id_valid(id))
		return -1;
	for (i = 0; i < 16; i++)
		out[i] = (unsigned char)(hexval(id[2 * i]) << 4 | hexval(id[2 * i + 1]));
	return 0;
}

void au_pg_id(char out[AU_ID_SIZE], const unsigned char *uuid)
{
	static const char digits[] = "0123456789abcdef";
	int i;

	for (i = 0; i < 16; i++) {
		out[2 * i] = digits[uuid[i] >> 4];
		out[2 * i + 1] = digits[uuid[i] & 15];
	}
	out[32] = '\0';
}
