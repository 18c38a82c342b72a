/*
 * redis_client.c - connecting to Redis and au's messages for what goes
 * wrong, for the Redis queue and the Redis store (redis_client.h).
 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <hiredis.h>

#include "redis_client.h"

int au_redis_port(const struct au_url *url)
{
	return url->port ? url->port : AU_REDIS_DEFAULT_PORT;
}

int au_redis_db(const struct au_url *url, int *db, struct au_err *err)
{
	const char *p = url->path;
	unsigned long v;
	char *end;

	*db = 0;
	if (!p || !*p)
		return 0;
	/* strtoul alone would take " 1", "+1" and "-1" */
	errno = 0;
	v = isdigit((unsigned char)*p) ? strtoul(p, &end, 10) : 0;
	if (!isdigit((unsigned char)*p) || *end || errno || v > INT_MAX)
		return au_seterr(err, AU_EINVAL, "invalid redis database '%s' in '%s'", p, url->text);
	*db = (int)v;
	return 0;
}

int au_redis_auth_argv(const struct au_url *url, const char *argv[3])
{
	int argc = 0;

	if (!url->password)
		return 0;
	argv[argc++] = "AUTH";
	if (url->user && *url->user)
		argv[argc++] = url->user;
	argv[argc++] = url->password;
	return argc;
}

/* A server with a password answers NOAUTH to anything before AUTH. */
static int noauth(const char *msg, size_t len)
{
	return msg && len >= 6 && !strncmp(msg, "NOAUTH", 6);
}

#define NOAUTH_WHY "the server requires a password (NOAUTH)"

const char *au_redis_why(char *buf, size_t len, const char *msg)
{
	if (msg && noauth(msg, strlen(msg))) {
		snprintf(buf, len, "%s", NOAUTH_WHY);
		return buf;
	}
	snprintf(buf, len, "%s", msg && *msg ? msg : "connection error");
	/* "Connection refused", but "ERR ..." and "WRONGPASS ..." stay */
	if (!isupper((unsigned char)buf[1]))
		buf[0] = (char)tolower((unsigned char)buf[0]);
	return buf;
}

int au_redis_conn_error(struct au_err *err, const struct au_url *url,
			const struct redisContext *c, const char *what)
{
	char why[sizeof(c->errstr)];

	/* A blocking read or write past the command timeout fails with EAGAIN.
	 * The connection is lost all the same (the reply may still come and
	 * would be taken for the next command's), so it is AU_ECONN like any
	 * other, which callers retry: AU_ETIMEDOUT means the caller's own
	 * timeout ran out (au_store_wait, au_handle_wait). */
	if (c->err == REDIS_ERR_IO && !strcmp(c->errstr, strerror(EAGAIN)))
		return au_seterr(err, AU_ECONN, "%s '%s': timed out", what, url->text);
	return au_seterr(err, AU_ECONN, "%s '%s': %s", what, url->text,
			 au_redis_why(why, sizeof(why), c->errstr));
}

int au_redis_reply_error(struct au_err *err, const struct au_url *url,
			 const struct redisReply *r, const char *what)
{
	if (r && r->type == REDIS_REPLY_ERROR && noauth(r->str, r->len))
		return au_seterr(err, AU_ECONN, "unable to use '%s': " NOAUTH_WHY, url->text);
	if (r && r->type == REDIS_REPLY_ERROR)
		return au_seterr(err, AU_EPROTO, "redis '%s' replied: %.*s", url->text, (int)r->len,
				 r->str);
	return au_seterr(err, AU_EPROTO, "unexpected reply from '%s' to %s", url->text, what);
}

int au_redis_command(struct redisContext *c, const struct au_url *url, int argc,
		     const char **argv, struct au_err *err)
{
	redisReply *r = redisCommandArgv(c, argc, argv, NULL);
	int rc = 0;

	if (!r)
		return au_redis_conn_error(err, url, c, "lost connection to");
	if (r->type == REDIS_REPLY_ERROR)
		rc = au_redis_reply_error(err, url, r, argv[0]);
	freeReplyObject(r);
	return rc;
}

/* AUTH and SELECT: a refusal means the server cannot be used as the URL
 * says (wrong password, no such database), whatever the command. */
static int setup_command(redisContext *c, const struct au_url *url, int argc, const char **argv,
			 struct au_err *err)
{
	redisReply *r = redisCommandArgv(c, argc, argv, NULL);
	int rc = 0;

	if (!r)
		return au_redis_conn_error(err, url, c, "lost connection to");
	if (r->type == REDIS_REPLY_ERROR && noauth(r->str, r->len))
		rc = au_seterr(err, AU_ECONN, "unable to use '%s': " NOAUTH_WHY, url->text);
	else if (r->type == REDIS_REPLY_ERROR)
		rc = au_seterr(err, AU_ECONN, "unable to use '%s': %.*s", url->text, (int)r->len,
			       r->str);
	freeReplyObject(r);
	return rc;
}

static struct timeval ms_tv(int ms)
{
	return (struct timeval){ ms / 1000, ms % 1000 * 1000 };
}

/* a macro's value as a string */
#define STR_(x) #x
#define STR(x) STR_(x)

struct redisContext *au_redis_connect(const struct au_url *url, int db, struct au_err *err)
{
	redisContext *c;
	const char *auth[3];
	int argc;

	/* hiredis has TLS from 1.0 on, and Debian's 0.14 is built without it:
	 * a tunnel is the way, and the message says so */
	if (!strcmp(url->scheme, "rediss")) {
		au_seterr(err, AU_EINVAL, "unsupported scheme '%s': this build's hiredis (%s) has no "
			  "TLS; reach Redis through a TLS tunnel (stunnel, spiped) on 127.0.0.1 and use "
			  "redis://", url->text, STR(HIREDIS_MAJOR) "." STR(HIREDIS_MINOR));
		return NULL;
	}
	c = redisConnectWithTimeout(url->host, au_redis_port(url), ms_tv(AU_REDIS_CONNECT_TIMEOUT_MS));
	if (!c) {
		au_seterr(err, AU_ENOMEM, "out of memory");
		return NULL;
	}
	if (c->err) {
		au_redis_conn_error(err, url, c, "unable to connect to");
		goto fail;
	}
	if (redisSetTimeout(c, ms_tv(AU_REDIS_COMMAND_TIMEOUT_MS)) != REDIS_OK ||
	    redisEnableKeepAlive(c) != REDIS_OK) {
		au_redis_conn_error(err, url, c, "unable to connect to");
		goto fail;
	}
	if ((argc = au_redis_auth_argv(url, auth)) && setup_command(c, url, argc, auth, err) < 0)
		goto fail;
	if (db > 0) {
		char num[16];
		const char *argv[] = { "SELECT", num };

		snprintf(num, sizeof(num), "%d", db);
		if (setup_command(c, url, 2, argv, err) < 0)
			goto fail;
	}
	/* Neither: a PING tells now whether the server wants a password. (Not
	 * knowing, the first big command would make Redis 7 close the
	 * connection of a client not logged in, and that is all it would
	 * say.) */
	if (!argc && db <= 0 && setup_command(c, url, 1, (const char *[]){ "PING" }, err) < 0)
		goto fail;
	return c;
fail:
	redisFree(c);
	return NULL;
}

/* The value of one setting (CONFIG GET), malloc'ed; NULL when it cannot be
 * read (*lost set when the connection broke, else CONFIG is refused). */
static char *config_get(redisContext *c, const char *name, int *lost, char *why, size_t len)
{
	redisReply *r = redisCommand(c, "CONFIG GET %s", name);
	char *v = NULL;

	*lost = !r;
	if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
	    r->element[1]->type == REDIS_REPLY_STRING)
		v = au_strndup(r->element[1]->str, r->element[1]->len);
	else if (r)
		snprintf(why, len, "%s", r->type == REDIS_REPLY_ERROR ? r->str : "no such setting");
	if (r)
		freeReplyObject(r);
	return v;
}

int au_redis_check_persistence(struct redisContext *c, const struct au_url *url, const char *what,
			       struct au_err *err)
{
	char why[128] = "out of memory", *aof, *save = NULL;
	int lost, rc = 0;

	if (!(aof = config_get(c, "appendonly", &lost, why, sizeof(why))) && lost)
		return au_redis_conn_error(err, url, c, "lost connection to");
	if (aof && !(save = config_get(c, "save", &lost, why, sizeof(why))) && lost) {
		free(aof);
		return au_redis_conn_error(err, url, c, "lost connection to");
	}
	if (!aof || !save) {
		/* CONFIG may be renamed or refused (managed services): not
		 * knowing is no reason to stop */
		au_log(AU_LOG_INFO, "cannot check whether redis at '%s' keeps its data (%s)",
		       url->text, why);
	} else if (!strcmp(aof, "no") && !*save) {
		au_log(AU_LOG_WARN, "redis at '%s' keeps nothing across a restart (appendonly no, "
		       "save \"\"): a restart or crash of it loses %s; set appendonly yes",
		       url->text, what);
		rc = 1;
	}
	free(aof);
	free(save);
	return rc;
}

/* "<c><n>\r\n", n in decimal */
static int resp_head(struct au_buf *b, char c, size_t n)
{
	char tmp[24], *p = tmp + sizeof(tmp);

	*--p = '\n';
	*--p = '\r';
	do
		*--p = (char)('0' + n % 10);
	while (n /= 10);
	*--p = c;
	return au_buf_append(b, p, (size_t)(tmp + sizeof(tmp) - p));
}

int au_resp_command(struct au_buf *b, unsigned argc)
{
	return resp_head(b, '*', argc);
}

int au_resp_arg(struct au_buf *b, const void *p, size_t n)
{
	if (resp_head(b, '$', n) < 0 || au_buf_reserve(b, n + 2) < 0)
		return -1;
	memcpy(b->data + b->len, p, n);
	memcpy(b->data + b->len + n, "\r\n", 2);
	b->len += n + 2;
	return 0;
}
