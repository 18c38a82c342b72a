/*
 * startup.c - before a worker leases anything it asks each part it needs
 * whether it answers: a ClickHouse that refuses the password would
 * otherwise fail every computation the worker touched, and a queue that is
 * down would only show as a log line repeated every ten seconds. Each ping
 * goes through the part's own client, so it proves what the worker will
 * do: the connection, the credentials, the database, the schema.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ch_migrate.h"
#include "clickhouse.h"
#include "fleet.h"
#include "queue.h"
#include "store.h"
#include "task.h"
#include "tasks.h"

/* The URL as messages show it, password masked even when it does not
 * parse. */
static void masked_url(const char *text, char *out, size_t len)
{
	char *m = au_url_masked(text);

	snprintf(out, len, "%s", m ? m : "");
	free(m);
}

/* The part's name and URL ahead of the client's message, unless the
 * message names the URL already (most do: "unable to connect to '...'"). */
static int part_error(struct au_err *err, const char *part, const char *url,
		      const struct au_err *why)
{
	char m[256];

	masked_url(url, m, sizeof(m));
	if (!strncmp(why->str, part, strlen(part)))
		return au_seterr(err, why->code ? why->code : AU_ECONN, "%s", why->str);
	if (m[0] && strstr(why->str, m))
		return au_seterr(err, why->code ? why->code : AU_ECONN, "%s: %s", part, why->str);
	return au_seterr(err, why->code ? why->code : AU_ECONN, "%s '%s': %s", part, m,
			 why->str[0] ? why->str : "unknown error");
}

static int ping_queue(const char *url, const char *queue, struct au_err *err)
{
	struct au_queue *q = au_queue_open(url);
	struct au_queue_stats st;
	int rc = 0;

	if (!q)
		return au_seterr(err, AU_ENOMEM, "out of memory");
	if (q->err.code || au_queue_stats(q, queue, &st) < 0)
		rc = part_error(err, "queue", url, &q->err);
	au_queue_close(q);
	return rc;
}

static int ping_store(const char *url, struct au_err *err)
{
	struct au_store *s = au_store_open(url);
	struct au_record rec;
	char id[AU_ID_SIZE];
	int rc = 0;

	if (!s)
		return au_seterr(err, AU_ENOMEM, "out of memory");
	if (s->err.code) {
		rc = part_error(err, "store", url, &s->err);
	} else {
		/* a fresh id has no record: anything but "not found" is the store's fault */
		au_id_new(id);
		au_record_init(&rec);
		if (au_store_get(s, id, &rec) == 0)
			au_record_release(&rec);
		else if (s->err.code != AU_ENOTFOUND && s->err.code != AU_EEXPIRED)
			rc = part_error(err, "store", url, &s->err);
	}
	au_store_close(s);
	return rc;
}

static int ping_clickhouse(const char *url, char *version, size_t len, struct au_err *err)
{
	struct au_ch_query q = { .sql = "SELECT version()", .timeout_ms = 5000 };
	struct au_ch_response resp;
	struct au_err e = { 0, "" };
	struct au_clickhouse *ch = au_ch_new(url, &e);
	int rc = 0;

	if (!ch)
		return e.code ? part_error(err, "clickhouse", url, &e)
			      : au_seterr(err, AU_ENOMEM, "out of memory");
	if (au_ch_query_sync(ch, &q, &resp) < 0) {
		rc = part_error(err, "clickhouse", url, &resp.err);
	} else {
		size_t n = resp.body.len;

		while (n && (resp.body.data[n - 1] == '\n' || resp.body.data[n - 1] == '\r'))
			n--;
		snprintf(version, len, "%.*s", (int)n, resp.body.data ? (char *)resp.body.data : "");
	}
	au_ch_response_release(&resp);
	au_ch_free(ch);
	return rc;
}

int au_startup_ping(const struct au_config *cfg, const char *queue, unsigned skip,
		    unsigned *failed, char *ch_version, size_t len, struct au_err *err)
{
	struct au_queue_list ql;

	if (len)
		ch_version[0] = '\0';
	*failed = 0;
	if (au_queue_list_parse(queue, &ql, err) < 0) {
		*failed = AU_PART_QUEUE;
		return -1;
	}
	/* the queues share one server: asking about the first one pings it */
	if (!(skip & AU_PART_QUEUE) && ping_queue(cfg->queue_url, ql.names[0], err) < 0)
		*failed = AU_PART_QUEUE;
	else if (!(skip & AU_PART_STORE) && ping_store(cfg->store_url, err) < 0)
		*failed = AU_PART_STORE;
	else if (!(skip & AU_PART_CLICKHOUSE) &&
		 ping_clickhouse(cfg->clickhouse_url, ch_version, len, err) < 0)
		*failed = AU_PART_CLICKHOUSE;
	au_queue_list_release(&ql);
	return *failed ? -1 : 0;
}

/* Sleeps up to ms (0: only looks) while SIGTERM and SIGINT are blocked;
 * 1 when one of them came, now or since they were blocked. */
static int nap(const sigset_t *stop, uint32_t ms)
{
	struct timespec ts = { (time_t)(ms / 1000), (long)(ms % 1000) * 1000000L };

	return sigtimedwait(stop, NULL, &ts) > 0;
}

/* au's own ClickHouse tables (ch_migrate.h): a schema newer than this au
 * stops the worker; an older one is said, with the command, and the
 * worker runs (what ch.op logs waits in its buffer). */
static int schema_check(const char *url, struct au_err *err)
{
	struct au_err e = { 0, "" };
	struct au_clickhouse *ch = au_ch_new(url, &e);
	int v = 0, newest = 0, rc = 0;

	if (!ch || au_ch_schema_state(ch, &v, &newest, &e) < 0) {
		au_ch_free(ch);
		return 0;   /* the ping said it answers: a failed look is no reason to stop */
	}
	if (au_ch_schema_check(ch, &e) < 0 && e.code == AU_ESTATE) {
		if (newest > AU_CH_SCHEMA_VERSION) {
			*err = e;
			rc = -1;
		} else {
			au_log(AU_LOG_WARN, "%s", e.str);
		}
	}
	au_ch_free(ch);
	return rc;
}

int au_startup_check(const struct au_config *cfg, const char *queue, unsigned skip, int wait,
		     char *ch_version, size_t len, struct au_err *err)
{
	uint32_t delay = 500;
	unsigned failed;
	sigset_t stop, old;
	struct au_sign_keys keys;
	int rc = 0;

	/* a bad AU_SIGNING_KEY stops the worker here, once, rather than each
	 * process of a fleet after it started */
	if (getenv("AU_SIGNING_KEY")) {
		if (au_sign_keys_parse(getenv("AU_SIGNING_KEY"), &keys, err) < 0)
			return -1;
		au_sign_keys_release(&keys);
	}
	/* a stop asked for while a ping runs is seen at the next nap, or
	 * after the last ping, not lost and not fatal */
	sigemptyset(&stop);
	sigaddset(&stop, SIGTERM);
	sigaddset(&stop, SIGINT);
	sigprocmask(SIG_BLOCK, &stop, &old);
	for (;;) {
		int down = au_startup_ping(cfg, queue, skip, &failed, ch_version, len, err) < 0;

		if (down && (!wait || err->code == AU_ENOMEM || err->code == AU_EINVAL)) {
			rc = -1;
			break;
		}
		if (down)
			au_log(AU_LOG_WARN, "waiting for %s (next try in %u ms)", err->str, delay);
		if (nap(&stop, down ? delay : 0)) {
			au_log(AU_LOG_INFO, "stopped before the worker started");
			au_clearerr(err);
			rc = -1;
			break;
		}
		if (!down)
			break;
		delay = delay * 2 > 10000 ? 10000 : delay * 2;
	}
	sigprocmask(SIG_SETMASK, &old, NULL);
	if (rc == 0 && !(skip & AU_PART_CLICKHOUSE))
		rc = schema_check(cfg->clickhouse_url, err);
	return rc;
}

void au_startup_report(const struct au_config *cfg, const struct au_worker_opts *wo,
		       int processes, const char *ch_version, unsigned skip)
{
	struct au_registry *reg = au_registry_new();
	struct au_buf tasks = AU_BUF_INIT;
	char q[256], s[256], c[256];
	size_t i;

	masked_url(cfg->queue_url, q, sizeof(q));
	masked_url(cfg->store_url, s, sizeof(s));
	masked_url(cfg->clickhouse_url, c, sizeof(c));
	if (reg && au_tasks_add_builtins(reg) == 0)
		for (i = 0; i < au_registry_count(reg); i++)
			au_buf_printf(&tasks, "%s%s", i ? " " : "", au_registry_name(reg, i));
	au_log(AU_LOG_INFO, "au %s (wire format v%d) worker", AU_VERSION, AU_WIRE_VERSION);
	au_log(AU_LOG_INFO, "  queue       %s%s", q, skip & AU_PART_QUEUE ? " (not checked)" : "");
	au_log(AU_LOG_INFO, "  store       %s%s", s, skip & AU_PART_STORE ? " (not checked)" : "");
	if (skip & AU_PART_CLICKHOUSE)
		au_log(AU_LOG_INFO, "  clickhouse  %s (not checked)", c);
	else
		au_log(AU_LOG_INFO, "  clickhouse  %s (version %s)", c, ch_version);
	au_log(AU_LOG_INFO, "  queues      %s%s", au_queue_name(wo->queue),
	       !strchr(au_queue_name(wo->queue), ',') ? ""
	       : strchr(wo->queue, ':') ? " (weighted)" : " (in this order)");
	au_log(AU_LOG_INFO, "  processes   %d x concurrency %u%s", processes ? processes : 1,
	       wo->concurrency ? wo->concurrency : AU_DEFAULT_CONCURRENCY,
	       processes ? ", supervised" : "");
	if (wo->max_jobs)
		au_log(AU_LOG_INFO, "  max tasks   %u per process", wo->max_jobs);
	au_log(AU_LOG_INFO, "  tasks       %s", tasks.data ? (char *)tasks.data : "?");
	au_log(AU_LOG_INFO, "  middleware  %s%s%s%s", wo->log ? "logging" : "",
	       wo->log ? wo->log_format == AU_LOG_JSON ? " (json)" : " (text)" : "",
	       wo->log && wo->middleware ? ", " : "", wo->middleware ? wo->middleware
	       : wo->log ? "" : "none");
	au_buf_release(&tasks);
	au_registry_free(reg);
}
