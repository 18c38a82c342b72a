/*
 * redis_client.h - how au talks to Redis, shared by the queue
 * (backends/redis_queue.c) and the store (store/redis_store.c): the
 * database of an au URL, connecting (timeouts, AUTH, SELECT) and messages
 * in au's style, so one server behaves one way wherever it is used. Only
 * the Redis files include hiredis.h; this header needs only its tags.
 *
 * URL: redis://[[user]:password@]host[:port][/db]. "redis://user:pw@" logs
 * in as the ACL user, "redis://:pw@" as the default user. rediss:// (TLS)
 * is refused: hiredis 0.14 has no TLS (README, "Redis over TLS").
 */
#ifndef AU_REDIS_CLIENT_H
#define AU_REDIS_CLIENT_H

#include "core.h"

struct redisContext;
struct redisReply;

/*
 * Every connection to Redis, of the queue and of the store alike: 2 s to
 * connect (room for one lost SYN, which Linux sends again after 1 s; a
 * worker's loop waits while a connection is made, so a host that is gone
 * must not hold it long), 10 s for a command to be answered (a server
 * that does not answer in that time is taken as gone: the connection is
 * dropped and made anew by the next operation).
 */
#define AU_REDIS_CONNECT_TIMEOUT_MS 2000
#define AU_REDIS_COMMAND_TIMEOUT_MS 10000
#define AU_REDIS_DEFAULT_PORT 6379

/* The port of url, AU_REDIS_DEFAULT_PORT when it names none. */
int au_redis_port(const struct au_url *url);

/*
 * The database url names (/db, digits only, up to INT_MAX; whether the
 * server has it is for SELECT to say): 0 when absent. -1 with AU_EINVAL
 * "invalid redis database '<db>' in '<url>'" for anything else.
 */
int au_redis_db(const struct au_url *url, int *db, struct au_err *err);

/*
 * The AUTH command for url in argv (pointers into url, alive as long as
 * it is): "AUTH user password" when the URL names a user, "AUTH password"
 * when it has only a password. Returns argc, 0 when url has no password.
 */
int au_redis_auth_argv(const struct au_url *url, const char *argv[3]);

/*
 * A blocking connection to the server of url, with the timeouts above and
 * TCP keepalive, authenticated when url has a password and, when db > 0,
 * on database db (a subscriber passes 0: pub/sub ignores databases).
 * Returns it (redisFree it) or NULL with err set:
 *   AU_ECONN   "unable to connect to '<url>': connection refused" (or
 *              another reason, see au_redis_conn_error)
 *   AU_ECONN   "unable to use '<url>': <what Redis answered AUTH or
 *              SELECT>", e.g. "WRONGPASS invalid username-password pair
 *              or user is disabled.", "ERR DB index is out of range"
 *   AU_ECONN   "unable to use '<url>': the server requires a password
 *              (NOAUTH)" when url has none and the server wants one (a
 *              connection with neither AUTH nor SELECT sends a PING to
 *              find out)
 *   AU_ECONN   "lost connection to '<url>': ..." during AUTH or SELECT
 *   AU_EINVAL  "unsupported scheme '<rediss url>': this build's hiredis
 *              (0.14) has no TLS; reach Redis through a TLS tunnel ..."
 *              for rediss:// (the backends take the scheme so that this
 *              is what it gets, not "unknown scheme")
 *   AU_ENOMEM  "out of memory"
 */
struct redisContext *au_redis_connect(const struct au_url *url, int db, struct au_err *err);

/*
 * Sets err from the failure of c (a connection that could not be made, or
 * broke) and returns -1: AU_ECONN "<what> '<url>': <hiredis' message, see
 * au_redis_why>", where what is e.g. "unable to connect to" or "lost
 * connection to"; a command that ran out of time (AU_REDIS_COMMAND_TIMEOUT_MS)
 * reads "<what> '<url>': timed out", still AU_ECONN (AU_ETIMEDOUT is for
 * the caller's own timeouts, as in au_store_wait). c is unusable afterwards.
 */
int au_redis_conn_error(struct au_err *err, const struct au_url *url,
			const struct redisContext *c, const char *what);

/*
 * Sets err from a reply that is not the one expected (r may be NULL) and
 * returns -1: an error reply is AU_EPROTO "redis '<url>' replied: <the
 * error>" (NOAUTH is AU_ECONN "unable to use '<url>': the server requires
 * a password (NOAUTH)"), any other AU_EPROTO "unexpected reply from
 * '<url>' to <what>" (what names the command or operation).
 */
int au_redis_reply_error(struct au_err *err, const struct au_url *url,
			 const struct redisReply *r, const char *what);

/*
 * Runs one command on c and checks only that it did not fail: 0, or -1
 * with err set by au_redis_conn_error ("lost connection to") or
 * au_redis_reply_error. For setup commands (SUBSCRIBE) whose reply is
 * not needed.
 */
int au_redis_command(struct redisContext *c, const struct au_url *url, int argc,
		     const char **argv, struct au_err *err);

/*
 * Asks the server behind c whether it keeps its data across a restart
 * (CONFIG GET appendonly, save) and logs a warning (AU_LOG_WARN) saying
 * what is at risk when it keeps nothing: "redis at '<url>' keeps nothing
 * across a restart (appendonly no, save \"\"): a restart or crash of it
 * loses <what>; set appendonly yes". Returns 1 when it warned, 0 when the
 * server keeps its data or cannot be asked (CONFIG refused or renamed:
 * logged at info level), -1 with err set when the connection broke.
 */
int au_redis_check_persistence(struct redisContext *c, const struct au_url *url, const char *what,
			       struct au_err *err);

/*
 * A message of hiredis (which start with a capital: "Connection refused")
 * in au's style into buf: first letter lowercase unless it starts a word
 * in capitals (a reply of the server: "ERR ...", "WRONGPASS ..."),
 * "connection error" when empty, "the server requires a password
 * (NOAUTH)" for a NOAUTH reply. Returns buf.
 */
const char *au_redis_why(char *buf, size_t len, const char *msg);

/*
 * RESP written by hand into b, for a pipeline sent with one
 * redisAppendFormattedCommand(): hiredis formats argv through sdscatfmt,
 * which costs a busy worker more than the rest of a write. A command is
 * au_resp_command(b, argc) then argc au_resp_arg(). -1 on OOM.
 */
int au_resp_command(struct au_buf *b, unsigned argc);
int au_resp_arg(struct au_buf *b, const void *p, size_t n);

#endif
