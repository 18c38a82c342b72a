/*
 * au.c - the `au` command: a thin layer over the client and the worker.
 * Exit codes (docs/cli.md): 0 ok, 1 failed (the computation or the
 * command), 2 usage, 3 unknown or expired id, 4 timed out, 5 unreachable.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "cli.h"
#include "admin.h"
#include "core.h"
#include "fleet.h"
#include "lineage.h"
#include "middleware.h"
#include "pg_schema.h"
#include "ch_migrate.h"
#include "clickhouse.h"
#include "queue.h"
#include "stats.h"
#include "workers.h"


static const char usage_text[] =
	"usage: au [--queue-url URL] [--store-url URL] [--clickhouse URL] [--config FILE]\n"
	"          COMMAND [ARGS] [OPTIONS]\n"
	"\n"
	"computations:\n"
	"  enqueue TASK            enqueues one (or a batch) and prints its id\n"
	"  status ID               pending, scheduled, running, retrying, completed, ...\n"
	"  wait ID                 waits for the outcome and prints it\n"
	"  result ID               prints the outcome of a finished one\n"
	"  cancel ID               cancels one that waits or runs\n"
	"workers:\n"
	"  worker                  runs computations (--queues, --concurrency, --processes)\n"
	"  workers                 the live workers: what each runs, its counts\n"
	"  worker stop ID          asks one worker of 'au workers' to drain and exit\n"
	"  stats                   the fleet's figures per task and queue (p50, p95, ...)\n"
	"queues:\n"
	"  queues                  counts, paused, totals and rate of each queue\n"
	"  queue pause|resume|empty|delete NAME\n"
	"  dlq list|show|requeue|purge   dead letters\n"
	"  schedule add|list|show|pause|resume|rm   cron schedules the fleet fires\n"
	"  migrate                 creates or upgrades the PostgreSQL schema\n"
	"  lineage TABLE           the ch.op operations that made TABLE (--forward, --json)\n"
	"  flow run|show|list|cancel  flows: computations that wait for one another\n"
	"  version                 prints the version (also --version, -V)\n"
	"  help [COMMAND]          this text, or a command's options and an example\n"
	"\n"
	"'au COMMAND --help' and 'au help COMMAND' say more. URLs also come from\n"
	"AU_QUEUE, AU_STORE and AU_CLICKHOUSE, and --config FILE (or AU_CONFIG) from\n"
	"KEY=VALUE lines: flags first, then the environment, then the file.\n"
	"DURATION: 500ms, 30s, 10m, 2h, 1d; a bare number is seconds.\n";

/* Prints "au: <message>" (when fmt is not NULL) and the usage; the exit
 * code of a usage error. */
static int usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage(const char *fmt, ...)
{
	va_list ap;

	if (fmt) {
		fprintf(stderr, "au: ");
		va_start(ap, fmt);
		vfprintf(stderr, fmt, ap);
		va_end(ap);
		fprintf(stderr, "\n");
	}
	fputs(fmt ? "run 'au help' for the commands, 'au COMMAND --help' for one\n" : usage_text,
	      stderr);
	return EXIT_USAGE;
}

/* The commands this file runs. The others parse their own options:
 * cli/admin.c (dlq, queue, queues), cli/workers.c (workers, worker stop). */
enum cmd { C_ENQUEUE, C_STATUS, C_WAIT, C_RESULT, C_CANCEL, C_WORKER, C_MIGRATE, C_VERSION,
	   C_HELP, C_N };
#define ON(c) (1u << (c))
#define EVERY ((1u << C_N) - 1)

static const struct command {
	const char *name;
	const char *synopsis;       /* after "au " */
	const char *about;          /* what it does, then an example */
} commands[C_N] = {
	[C_ENQUEUE] = { "enqueue", "enqueue TASK [--args JSON | --args-file FILE] [OPTIONS]",
		"Enqueues a computation of TASK with the arguments --args gives (a JSON\n"
		"value, default {}), or one for each line of --args-file, and prints the\n"
		"id of each; with --wait, its outcome instead.\n"
		"\n"
		"example: au enqueue ch.query --args '{\"sql\":\"SELECT 1\"}' --wait\n" },
	[C_STATUS] = { "status", "status ID [--queue Q] [--json]",
		"Prints the status of computation ID: pending, scheduled, running,\n"
		"retrying, completed, failed or cancelled. With --json, what is known\n"
		"of it too: queue, attempts, the last error and the history of its\n"
		"attempts (docs/wire-format.md). Exit 3 when no queue or store knows it.\n"
		"\n"
		"example: au status 0123456789abcdef0123456789abcdef --json\n" },
	[C_WAIT] = { "wait", "wait ID [--timeout DURATION] [--queue Q] [--json]",
		"Waits for the outcome of computation ID and prints it as 'au result'\n"
		"does; without --timeout it waits as long as it takes. On a terminal it\n"
		"shows the status and the time waited meanwhile. Exit 4 when --timeout\n"
		"runs out first.\n"
		"\n"
		"example: au wait 0123456789abcdef0123456789abcdef --timeout 5m\n" },
	[C_RESULT] = { "result", "result ID [--queue Q] [--json]",
		"Prints the outcome of a finished computation: its result (JSON) when it\n"
		"completed, exit 1 and its error when it failed or was cancelled; with\n"
		"--json the whole record. Exit 3 for an unknown or expired id.\n"
		"\n"
		"example: au result 0123456789abcdef0123456789abcdef --json\n" },
	[C_CANCEL] = { "cancel", "cancel ID [--queue Q]",
		"Cancels a computation that waits, or one that runs (its ClickHouse query\n"
		"is killed); its record says cancelled. A finished one cannot be.\n"
		"\n"
		"example: au cancel 0123456789abcdef0123456789abcdef\n" },
	[C_WORKER] = { "worker", "worker [--queues Q,Q... | Q:W,Q:W...] [OPTIONS]",
		"Runs computations: leases them from the queues in the order given (or\n"
		"by weight), runs each against ClickHouse and writes its outcome to the\n"
		"store; SIGTERM stops it gracefully. With --processes N, a parent\n"
		"supervises N worker processes (SIGHUP reloads --config).\n"
		"\n"
		"example: au worker --queues reports,default --concurrency 32 --processes 4\n" },
	[C_MIGRATE] = { "migrate", "migrate [--clickhouse [URL]] [--dry-run]",
		"Creates or upgrades the PostgreSQL schema of the queue and the store,\n"
		"whichever are on PostgreSQL; --dry-run prints what it would do. With\n"
		"--clickhouse, au's ClickHouse tables instead (docs/clickhouse.md).\n"
		"\n"
		"example: AU_QUEUE=postgres://au@db/au au migrate --dry-run\n" },
	[C_VERSION] = { "version", "version", "Prints au's version and its wire format's.\n" },
	[C_HELP] = { "help", "help [COMMAND]",
		"Prints the commands, or what COMMAND does, its options and an example.\n" },
};

enum {
	O_QUEUE_URL = 256, O_STORE_URL, O_CH, O_CONFIG, O_HELP, O_VERSION, O_ARGS, O_ARGS_FILE,
	O_QUEUE, O_QUEUES, O_PRIORITY, O_DELAY, O_TTL, O_TIMEOUT, O_ON_TIMEOUT, O_MAX_ATTEMPTS,
	O_HEADER, O_KEY, O_DEPENDS_ON, O_ON_DEP_FAIL, O_WAIT, O_WAIT_TIMEOUT, O_JSON, O_CONC, O_BATCH, O_PROCS, O_LEASE,
	O_GRACE, O_RETRY_BASE, O_MAX_JOBS, O_MAX_JOBS_OLD, O_IDLE_EXIT, O_QUIET, O_LOG_LEVEL,
	O_WAIT_SERVERS, O_RESTART_DELAY, O_SKIP_CHECK, O_DRY_RUN, O_MIDDLEWARE, O_LOG_FORMAT,
	O_PLUGIN, O_METRICS_ADDR, O_END
};

/* How an option's value is read. */
enum kind { K_FLAG, K_TEXT, K_INT, K_DURATION };

static const struct opt {
	const char *name;
	int id;
	unsigned cmds;              /* the commands it applies to */
	enum kind kind;
	long long min, max;         /* K_INT, and K_DURATION in ms */
	const char *arg;            /* the value's name in --help */
	const char *help;           /* one line, its default last */
} opts[] = {
	{ "queue-url", O_QUEUE_URL, EVERY, K_TEXT, 0, 0, "URL",
	  "the queue (default: AU_QUEUE, " AU_DEFAULT_QUEUE_URL ")" },
	{ "store-url", O_STORE_URL, EVERY, K_TEXT, 0, 0, "URL",
	  "the result store (default: AU_STORE, " AU_DEFAULT_STORE_URL ")" },
	{ "clickhouse", O_CH, EVERY, K_TEXT, 0, 0, "URL",
	  "ClickHouse (default: AU_CLICKHOUSE, " AU_DEFAULT_CLICKHOUSE_URL ")" },
	{ "config", O_CONFIG, EVERY, K_TEXT, 0, 0, "FILE",
	  "KEY=VALUE settings (default: AU_CONFIG); flags and the environment win" },
	{ "help", O_HELP, EVERY, K_FLAG, 0, 0, NULL, "this text" },
	{ "version", O_VERSION, ON(C_VERSION), K_FLAG, 0, 0, NULL, NULL },
	{ "args", O_ARGS, ON(C_ENQUEUE), K_TEXT, 0, 0, "JSON",
	  "the arguments, one JSON value (default: {})" },
	{ "args-file", O_ARGS_FILE, ON(C_ENQUEUE), K_TEXT, 0, 0, "FILE",
	  "one computation per line of JSON arguments ('-': stdin)" },
	{ "queue", O_QUEUE, ON(C_ENQUEUE), K_TEXT, 0, 0, "Q", "the queue (default: default)" },
	{ "queue", O_QUEUE, ON(C_STATUS) | ON(C_WAIT) | ON(C_RESULT) | ON(C_CANCEL), K_TEXT, 0, 0,
	  "Q", "where to look first: ids are found on any queue (default: all)" },
	{ "queue", O_QUEUE, ON(C_WORKER), K_TEXT, 0, 0, "Q",
	  "a queue to serve, repeatable: as --queues (default: default)" },
	{ "queues", O_QUEUES, ON(C_WORKER), K_TEXT, 0, 0, "LIST",
	  "the queues to serve: a,b,c in strict order, a:5,b:1 by weight (default: default)" },
	{ "priority", O_PRIORITY, ON(C_ENQUEUE), K_INT, AU_PRIORITY_MIN, AU_PRIORITY_MAX, "P",
	  "-100..100, higher first; FIFO within one (default: 0)" },
	{ "delay", O_DELAY, ON(C_ENQUEUE), K_DURATION, 0, 3650LL * 86400000, "DURATION",
	  "run no sooner than this from now (default: now)" },
	{ "ttl", O_TTL, ON(C_ENQUEUE), K_DURATION, 0, 4294967295LL * 1000, "DURATION",
	  "keep the result this long after it is written; 0 keeps it (default: 1d)" },
	{ "timeout", O_TIMEOUT, ON(C_ENQUEUE), K_DURATION, 1, 0x7fffffff, "DURATION",
	  "end an attempt that runs longer: ClickHouse stops it (default: none)" },
	{ "timeout", O_TIMEOUT, ON(C_WAIT), K_DURATION, 1, 0x7fffffff, "DURATION",
	  "give up after this, exit 4 (default: no limit)" },
	{ "on-timeout", O_ON_TIMEOUT, ON(C_ENQUEUE), K_TEXT, 0, 0, "retry|fail",
	  "what a timed-out attempt does (default: retry)" },
	{ "max-attempts", O_MAX_ATTEMPTS, ON(C_ENQUEUE), K_INT, 1, 0x7fffffff, "N",
	  "attempts before a retryable failure is final (default: 3)" },
	{ "header", O_HEADER, ON(C_ENQUEUE), K_TEXT, 0, 0, "K=V",
	  "a header for middleware and tracing, repeatable up to 32 (default: none)" },
	{ "key", O_KEY, ON(C_ENQUEUE), K_TEXT, 0, 0, "KEY",
	  "idempotency key: one computation per key and queue (default: none)" },
	{ "depends-on", O_DEPENDS_ON, ON(C_ENQUEUE), K_TEXT, 0, 0, "ID,...",
	  "run once each of these computations has finished (default: none)" },
	{ "on-dep-fail", O_ON_DEP_FAIL, ON(C_ENQUEUE), K_TEXT, 0, 0, "fail|cancel|ignore|continue",
	  "what a dependency that did not complete does to it (default: fail)" },
	{ "wait", O_WAIT, ON(C_ENQUEUE), K_FLAG, 0, 0, NULL,
	  "wait for the outcome and print it, as 'au wait' does" },
	{ "wait-timeout", O_WAIT_TIMEOUT, ON(C_ENQUEUE), K_DURATION, 1, 0x7fffffff, "DURATION",
	  "with --wait: give up after this, exit 4 (default: no limit)" },
	{ "json", O_JSON, ON(C_ENQUEUE) | ON(C_STATUS) | ON(C_WAIT) | ON(C_RESULT), K_FLAG, 0, 0,
	  NULL, "print JSON for a script to parse" },
	{ "concurrency", O_CONC, ON(C_WORKER), K_INT, 1, 100000, "N",
	  "computations in flight in each process (default: 16)" },
	{ "batch", O_BATCH, ON(C_WORKER), K_INT, 1, 100000, "N",
	  "most computations leased per round trip (default: 64)" },
	{ "processes", O_PROCS, ON(C_WORKER), K_INT, 1, 1024, "N",
	  "N worker processes under a supervising parent (default: one, unsupervised)" },
	{ "lease", O_LEASE, ON(C_WORKER), K_DURATION, 1000, 0x7fffffff, "DURATION",
	  "lease length, renewed every third of it while running (default: 30s)" },
	{ "grace", O_GRACE, ON(C_WORKER), K_DURATION, 0, 0x7fffffff, "DURATION",
	  "on SIGTERM, how long running ones may finish (default: 10s)" },
	{ "retry-base", O_RETRY_BASE, ON(C_WORKER), K_DURATION, 1, 0x7fffffff, "DURATION",
	  "first retry delay, doubled per attempt up to 300s (default: 1s)" },
	{ "max-tasks", O_MAX_JOBS, ON(C_WORKER), K_INT, 1, 0x7fffffff, "N",
	  "a process leaves after N attempts; a fleet starts a fresh one (default: never)" },
	{ "max-jobs", O_MAX_JOBS_OLD, ON(C_WORKER), K_INT, 1, 0x7fffffff, "N", NULL },
	{ "idle-exit", O_IDLE_EXIT, ON(C_WORKER), K_DURATION, 1, 0x7fffffff, "DURATION",
	  "a process leaves after this without work (default: never)" },
	{ "quiet", O_QUIET, ON(C_WORKER), K_FLAG, 0, 0, NULL, "no line per computation" },
	{ "log-level", O_LOG_LEVEL, ON(C_WORKER), K_TEXT, 0, 0, "LEVEL",
	  "debug, info, warn or error (default: info)" },
	{ "wait-for-servers", O_WAIT_SERVERS, ON(C_WORKER), K_FLAG, 0, 0, NULL,
	  "at start, wait for a server that does not answer (default: refuse, exit 5)" },
	{ "restart-delay", O_RESTART_DELAY, ON(C_WORKER), K_DURATION, 1, 0x7fffffff, "DURATION",
	  "with --processes: before a dead child starts again, doubled per death (default: 1s)" },
	{ "skip-check", O_SKIP_CHECK, ON(C_WORKER), K_TEXT, 0, 0, "PARTS",
	  "do not check these at start: queue,store,clickhouse (default: check all)" },
	{ "plugin", O_PLUGIN, ON(C_WORKER), K_TEXT, 0, 0, "PATH",
	  "load tasks and middleware from this shared library, repeatable (default: none)" },
	{ "metrics-addr", O_METRICS_ADDR, ON(C_WORKER), K_TEXT, 0, 0, "HOST:PORT",
	  "serve Prometheus GET /metrics here; --processes: child i on PORT+i (default: off)" },
	{ "dry-run", O_DRY_RUN, ON(C_MIGRATE), K_FLAG, 0, 0, NULL,
	  "print the statements, change nothing" },
	{ "middleware", O_MIDDLEWARE, ON(C_WORKER), K_TEXT, 0, 0, "LIST",
	  "more hooks: tracing, ratelimit:TASK=N/s,..., timeout:TASK=DURATION,... (default: AU_MIDDLEWARE)" },
	{ "middleware", O_MIDDLEWARE, ON(C_ENQUEUE), K_TEXT, 0, 0, "LIST",
	  "the client's hooks: tracing, logging (default: AU_MIDDLEWARE, none)" },
	{ "log-format", O_LOG_FORMAT, ON(C_WORKER), K_TEXT, 0, 0, "text|json",
	  "a line of text or a JSON object per event (default: text)" },
};

/* What the options set. */
struct cli {
	enum cmd cmd;
	struct au_config cfg;
	struct au_enqueue_opts eo;
	struct au_worker_opts wo;
	struct au_header headers[AU_MAX_HEADERS];
	const char *deps[256];        /* --depends-on */
	size_t ndeps;
	const char *args, *args_file;
	struct au_buf queues;         /* the worker's --queue and --queues, joined */
	struct au_buf plugins;        /* the worker's --plugin paths, joined by commas */
	int json, wait, processes, dry_run, migrate_ch;
	int timeout_ms, wait_timeout_ms;   /* of wait, of enqueue --wait; 0: no limit */
	unsigned char seen[O_END - O_QUEUE_URL];
	struct au_fleet_opts fleet;   /* the worker's own options (cli/fleet.h) */
};

static struct option long_options[AU_ARRAY_SIZE(opts) + 1];

static const struct opt *opt_of(int id)
{
	size_t i;

	for (i = 0; i < AU_ARRAY_SIZE(opts); i++)
		if (opts[i].id == id)
			return &opts[i];
	return NULL;
}

/* Whether option id applies to command cmd (an option may have an entry
 * of its own per command, for its help). */
static int applies(int id, enum cmd cmd)
{
	size_t i;

	for (i = 0; i < AU_ARRAY_SIZE(opts); i++)
		if (opts[i].id == id && (opts[i].cmds & ON(cmd)))
			return 1;
	return 0;
}

static int command_of(const char *name)
{
	int i;

	for (i = 0; i < C_N; i++)
		if (commands[i].name && !strcmp(commands[i].name, name))
			return i;
	return -1;
}

/* The options of cmd with their help: its own, or (every) those every
 * command takes. */
static void print_options(FILE *out, enum cmd cmd, int every)
{
	size_t i;

	for (i = 0; i < AU_ARRAY_SIZE(opts); i++) {
		const struct opt *o = &opts[i];
		char left[64];

		if (!(o->cmds & ON(cmd)) || !o->help || (o->cmds == EVERY) != every)
			continue;
		snprintf(left, sizeof(left), "--%s%s%s", o->name, o->arg ? " " : "", o->arg ? o->arg : "");
		fprintf(out, "  %-24s %s\n", left, o->help);
	}
}

/* `au COMMAND --help`: what it does, its options with their defaults, an
 * example. Every option line begins "  --NAME" (bash completion reads them). */
static void command_help(enum cmd cmd, FILE *out)
{
	const struct command *c = &commands[cmd];

	fprintf(out, "usage: au %s\n\n%s", c->synopsis, c->about);
	fprintf(out, "\noptions:\n");
	print_options(out, cmd, 0);
	fprintf(out, "\nevery command also takes:\n");
	print_options(out, cmd, 1);
	fprintf(out, "\nDURATION: 500ms, 30s, 10m, 2h, 1d; a bare number is seconds.\n"
		"Exit codes: 0 ok, 1 failed, 2 usage, 3 unknown id, 4 timed out, 5 unreachable.\n");
}

/* A value of option o, in range, into *v (a duration in ms). */
static int value_of(const struct opt *o, const char *s, long long *v)
{
	struct au_err err;
	uint64_t ms;
	char *end;

	if (o->kind == K_DURATION) {
		if (au_duration_parse(s, &ms, &err) < 0)
			return usage("invalid value '%s' for --%s: expected a duration (500ms, 30s, 10m, "
				     "2h, 1d; a bare number is seconds)", s, o->name);
		if ((long long)ms < o->min || (long long)ms > o->max || ms > INT64_MAX)
			return usage("invalid value '%s' for --%s: %s", s, o->name,
				     !ms ? "must be more than 0" : (long long)ms < o->min
				     ? "too short" : "too long");
		*v = (long long)ms;
		return 0;
	}
	errno = 0;
	*v = strtoll(s, &end, 10);
	if (errno || end == s || *end || *v < o->min || *v > o->max)
		return usage("invalid value '%s' for --%s (expected %lld..%lld)", s, o->name, o->min,
			     o->max);
	return 0;
}

/* The worker's queues, from every --queue and --queues in order. */
static int add_queues(struct cli *c, const char *list)
{
	if (c->queues.len && au_buf_puts(&c->queues, ",") < 0)
		return -1;
	if (au_buf_puts(&c->queues, list) < 0 || au_buf_reserve(&c->queues, 1) < 0)
		return -1;
	c->queues.data[c->queues.len] = '\0';
	c->wo.queue = (const char *)c->queues.data;
	return 0;
}

/* One option: applies to the command, given once (but --header, and the
 * worker's --queue/--queues, which mean several), a value in range. */
static int apply(struct cli *c, int id, const char *arg)
{
	const struct opt *o = opt_of(id);
	long long v = 0;

	if (!applies(id, c->cmd))
		return usage("option '--%s' does not apply to '%s'", o->name, commands[c->cmd].name);
	if (c->seen[id - O_QUEUE_URL]++ && id != O_HEADER && id != O_PLUGIN &&
	    !(c->cmd == C_WORKER && (id == O_QUEUE || id == O_QUEUES)))
		return usage("option '--%s' given twice", o->name);
	if ((o->kind == K_INT || o->kind == K_DURATION) && value_of(o, arg, &v))
		return EXIT_USAGE;
	switch (id) {
	case O_QUEUE_URL: c->cfg.queue_url = arg; break;
	case O_STORE_URL: c->cfg.store_url = arg; break;
	case O_CH: c->cfg.clickhouse_url = arg; break;
	case O_CONFIG: c->fleet.config_file = arg; break;
	case O_ARGS: c->args = arg; break;
	case O_ARGS_FILE: c->args_file = arg; break;
	case O_QUEUE:
	case O_QUEUES:
		c->eo.queue = arg;
		if (c->cmd == C_WORKER && add_queues(c, arg) < 0)
			return usage("out of memory");
		break;
	case O_HEADER: {
		char *eq = strchr(arg, '=');

		if (!eq || eq == arg)
			return usage("invalid header '%s' (expected KEY=VALUE)", arg);
		if (c->eo.nheaders == AU_MAX_HEADERS)
			return usage("too many headers (at most %d)", AU_MAX_HEADERS);
		*eq = '\0';
		c->headers[c->eo.nheaders].key = (char *)arg;
		c->headers[c->eo.nheaders++].value = eq + 1;
		c->eo.headers = c->headers;
		break;
	}
	case O_WAIT: c->wait = 1; break;
	case O_JSON: c->json = 1; break;
	case O_QUIET: c->wo.log = 0; break;
	case O_DRY_RUN: c->dry_run = 1; break;
	case O_MIDDLEWARE: c->wo.middleware = arg; break;
	case O_LOG_FORMAT:
		if (strcmp(arg, "text") != 0 && strcmp(arg, "json") != 0)
			return usage("invalid value '%s' for --log-format (expected text or json)", arg);
		c->fleet.log_format = arg;
		break;
	case O_PLUGIN:
		if (!*arg || strchr(arg, ','))
			return usage("invalid value '%s' for --plugin (expected a path without ',')",
				     arg);
		if ((c->plugins.len && au_buf_puts(&c->plugins, ",") < 0) ||
		    au_buf_puts(&c->plugins, arg) < 0)
			return usage("out of memory");
		c->wo.plugins = (const char *)c->plugins.data;
		break;
	case O_METRICS_ADDR: c->wo.metrics_addr = arg; break;
	case O_KEY: c->eo.key = arg; break;
	case O_DEPENDS_ON: {
		char *p;

		for (p = strtok((char *)arg, ","); p; p = strtok(NULL, ",")) {   /* argv is ours */
			if (c->ndeps == AU_ARRAY_SIZE(c->deps))
				return usage("--depends-on: at most %zu ids", AU_ARRAY_SIZE(c->deps));
			if (!au_id_valid(p))
				return usage("invalid id '%s' for --depends-on (32 lowercase hex digits)", p);
			c->deps[c->ndeps++] = p;
		}
		c->eo.depends_on = c->deps;
		c->eo.ndepends_on = c->ndeps;
		break;
	}
	case O_ON_DEP_FAIL:
		if (au_dep_policy_parse(arg, &c->eo.dep_policy) < 0)
			return usage("invalid value '%s' for --on-dep-fail (expected fail, cancel, ignore"
				     " or continue)", arg);
		break;
	case O_ON_TIMEOUT:
		if (strcmp(arg, "retry") != 0 && strcmp(arg, "fail") != 0)
			return usage("invalid value '%s' for --on-timeout (expected retry or fail)", arg);
		c->eo.fail_on_timeout = !strcmp(arg, "fail");
		break;
	case O_LOG_LEVEL: {
		enum au_loglevel lvl;

		if (au_fleet_log_level(arg, &lvl) < 0)
			return usage("invalid value '%s' for --log-level (expected debug, info, warn or "
				     "error)", arg);
		c->fleet.log_level = arg;
		break;
	}
	case O_WAIT_SERVERS: c->fleet.wait_for_servers = 1; break;
	case O_SKIP_CHECK:
		if (au_fleet_parts(arg, &c->fleet.skip) < 0)
			return usage("invalid value '%s' for --skip-check (expected queue, store, "
				     "clickhouse)", arg);
		break;
	case O_PRIORITY: c->eo.priority = (int)v; break;
	case O_DELAY: c->eo.delay_ms = (uint64_t)v; break;
	case O_TTL:   /* whole seconds, rounded up; 0: kept until deleted */
		c->eo.ttl_s = v ? (uint32_t)((v + 999) / 1000) : AU_TTL_NEVER;
		break;
	case O_TIMEOUT: c->eo.timeout_ms = (uint32_t)v; c->timeout_ms = (int)v; break;
	case O_MAX_ATTEMPTS: c->eo.max_attempts = (uint32_t)v; break;
	case O_WAIT_TIMEOUT: c->wait_timeout_ms = (int)v; break;
	case O_CONC: c->wo.concurrency = (unsigned)v; break;
	case O_BATCH: c->wo.batch = (unsigned)v; break;
	case O_PROCS: c->processes = (int)v; break;
	case O_LEASE: c->wo.lease_ms = (uint32_t)v; break;
	case O_GRACE: c->wo.grace_ms = v ? (uint32_t)v : 1; break;
	case O_RETRY_BASE: c->wo.retry_base_ms = (uint32_t)v; break;
	case O_MAX_JOBS:
	case O_MAX_JOBS_OLD:
		if (c->seen[O_MAX_JOBS - O_QUEUE_URL] && c->seen[O_MAX_JOBS_OLD - O_QUEUE_URL])
			return usage("option '--max-tasks' given twice (--max-jobs is its older name)");
		c->wo.max_jobs = (uint32_t)v;
		break;
	case O_IDLE_EXIT: c->wo.idle_exit_ms = (uint32_t)v; break;
	case O_RESTART_DELAY: c->fleet.restart_delay_ms = (uint32_t)v; break;
	}
	return 0;
}

/* Options that only mean something with another one. */
static int check_pairs(const struct cli *c)
{
	static const struct { int id, needs; } pairs[] = {
		{ O_WAIT_TIMEOUT, O_WAIT }, { O_ON_TIMEOUT, O_TIMEOUT }, { O_RESTART_DELAY, O_PROCS },
	};
	size_t i;

	for (i = 0; i < AU_ARRAY_SIZE(pairs); i++)
		if (c->seen[pairs[i].id - O_QUEUE_URL] && !c->seen[pairs[i].needs - O_QUEUE_URL])
			return usage("option '--%s' applies only with --%s", opt_of(pairs[i].id)->name,
				     opt_of(pairs[i].needs)->name);
	if (c->args && c->args_file)
		return usage("--args and --args-file exclude each other");
	return 0;
}

/*
 * The options of argv. With stop_at_command, those before the command
 * (only the ones every command takes: the URLs, --config, --help,
 * --version); *first is then the command's index. Otherwise those of the
 * command c->cmd, wherever they are; *first is where the positional
 * arguments begin.
 */
static int parse(struct cli *c, int argc, char **argv, int stop_at_command, int *first)
{
	size_t i, n = 0;
	int id, rc;

	for (i = 0; i < AU_ARRAY_SIZE(opts); i++) {
		if (n && long_options[n - 1].val == opts[i].id)
			continue;   /* another entry of the same option */
		long_options[n].name = opts[i].name;
		long_options[n].has_arg = opts[i].kind == K_FLAG ? no_argument : required_argument;
		long_options[n++].val = opts[i].id;
	}
	optind = 0;   /* 0: glibc re-initialises, needed for the second pass */
	opterr = 0;
	while ((id = getopt_long(argc, argv, stop_at_command ? "+hV" : "h", long_options, NULL)) !=
	       -1) {
		if (id == '?') {
			if (optopt && optopt < 256)
				return usage("unknown option '-%c'", optopt);
			if (optopt)
				return usage("option '--%s' takes a value", opt_of(optopt)->name);
			return usage("unknown option '%s'", argv[optind - 1]);
		}
		if (id == 'h' || id == O_HELP) {
			if (stop_at_command)
				fputs(usage_text, stdout);
			else
				command_help(c->cmd, stdout);
			exit(0);
		}
		if (id == 'V' || id == O_VERSION) {
			if (stop_at_command) {
				printf("au %s (wire format v%d)\n", AU_VERSION, AU_WIRE_VERSION);
				exit(0);
			}
			return usage("option '--version' goes before the command");
		}
		if (stop_at_command && opt_of(id)->cmds != EVERY)
			return usage("option '--%s' goes after the command", opt_of(id)->name);
		if ((rc = apply(c, id, optarg)))
			return rc;
	}
	*first = optind;
	return stop_at_command ? 0 : check_pairs(c);
}

/* A value as JSON (every well-formed msgpack value has a rendering,
 * docs/wire-format.md); NULL with err set for one that is not. */
static json_t *msgpack_json(const unsigned char *buf, size_t len, struct au_err *err)
{
	struct json_t *j = NULL;

	if (!buf || !len)
		return json_null();
	return au_msgpack_to_jansson(buf, len, &j, err) < 0 ? NULL : j;
}

/* --json: the whole record as the wire format's JSON mirror has it
 * (docs/wire-format.md#record), keys in its order. The result is converted
 * on its own, so one without a JSON form does not hide the rest. NULL with
 * err set when the record cannot be encoded. */
static json_t *record_json(const struct au_record *r, struct au_err *err)
{
	struct au_record rest = *r;
	struct au_buf b = AU_BUF_INIT;
	json_t *o = NULL;

	rest.result = NULL;
	rest.result_len = 0;
	if (au_record_encode(&rest, &b, err) == 0)
		au_msgpack_to_jansson(b.data, b.len, &o, err);
	au_buf_release(&b);
	if (o && r->result_len) {
		json_t *v = msgpack_json(r->result, r->result_len, err);

		if (!v) {   /* a result that cannot be shown is an error, not a success */
			json_decref(o);
			return NULL;
		}
		json_object_set_new(o, "result", v);
	}
	return o;
}

/* 0, or the exit code of a record that cannot be printed. */
static int print_record(const struct au_record *r, int json)
{
	struct au_err err = { 0, "" };
	json_t *o;
	char *text;

	if (!json) {
		if (r->status == AU_COMPLETED) {
			if (!(o = msgpack_json(r->result, r->result_len, &err))) {
				fprintf(stderr, "au: unable to print the result of computation '%s': %s\n",
					r->id, err.str);
				return EXIT_FAILED;
			}
			text = json_dumps(o, JSON_ENCODE_ANY | JSON_COMPACT | JSON_REAL_PRECISION(15));
			printf("%s\n", text ? text : "null");
			free(text);
			json_decref(o);
		} else {
			fprintf(stderr, "au: computation '%s' %s%s%s\n", r->id, au_status_name(r->status),
				r->error ? ": " : "", r->error ? r->error : "");
		}
		return 0;
	}
	if (!(o = record_json(r, &err))) {
		fprintf(stderr, "au: unable to print the record of computation '%s': %s\n", r->id,
			err.str[0] ? err.str : "out of memory");
		return EXIT_FAILED;
	}
	text = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(15));
	printf("%s\n", text ? text : "{}");
	free(text);
	json_decref(o);
	return 0;
}

/* status --json: what is known now, as the record's keys (without v and
 * the result, which `au result` prints): a finished computation's
 * record, or what the queue tells of one that waits or runs (its queue,
 * attempts so far, last error, history). */
static int print_status(const struct au_record *r)
{
	static const char *const unset[] = { "ttl_s", "created_at", "started_at", "finished_at",
					     "expires_at" };
	struct au_err err = { 0, "" };
	json_t *o = record_json(r, &err);
	char *text;
	size_t i;

	if (!o) {
		fprintf(stderr, "au: unable to print the status of computation '%s': %s\n", r->id,
			err.str[0] ? err.str : "out of memory");
		return EXIT_FAILED;
	}
	json_object_del(o, "v");
	json_object_del(o, "result");
	for (i = 0; i < AU_ARRAY_SIZE(unset); i++) {
		json_t *v = json_object_get(o, unset[i]);

		if (v && json_is_integer(v) && !json_integer_value(v))
			json_object_del(o, unset[i]);
	}
	text = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(15));
	printf("%s\n", text ? text : "{}");
	free(text);
	json_decref(o);
	return 0;
}

static int record_exit(const struct au_record *r)
{
	return r->status == AU_COMPLETED ? 0 : EXIT_FAILED;
}

static struct au_client *connect_client(struct cli *c, int *rc)
{
	struct au_client *cl = au_client_new(&c->cfg);

	if (!cl) {
		fprintf(stderr, "au: out of memory\n");
		*rc = EXIT_FAILED;
		return NULL;
	}
	if (au_client_err(cl)->code) {
		*rc = au_cli_fail(au_client_err(cl));
		au_client_free(cl);
		return NULL;
	}
	return cl;
}

/* Reads one JSON value per line of path ("-" = stdin) as msgpack args. */
static int read_args_file(const char *path, unsigned char ***args, size_t **lens, size_t *n)
{
	FILE *f = strcmp(path, "-") ? fopen(path, "r") : stdin;
	char *line = NULL;
	size_t cap = 0, alloc = 0, lineno = 0;
	ssize_t len;
	int rc = 0;

	*args = NULL;
	*lens = NULL;
	*n = 0;
	if (!f) {
		fprintf(stderr, "au: unable to open '%s': %s\n", path, strerror(errno));
		return -1;
	}
	while ((len = getline(&line, &cap, f)) >= 0) {
		struct au_err err;

		lineno++;
		if (len <= 1 && (len == 0 || line[0] == '\n'))
			continue;
		if (*n == alloc) {
			size_t na = alloc ? alloc * 2 : 256;
			unsigned char **a = realloc(*args, na * sizeof(*a));
			size_t *l = a ? realloc(*lens, na * sizeof(*l)) : NULL;

			if (a)
				*args = a;
			if (!a || !l) {
				fprintf(stderr, "au: out of memory\n");
				rc = -1;
				break;
			}
			*lens = l;
			alloc = na;
		}
		if (au_json_to_msgpack(line, &(*args)[*n], &(*lens)[*n], &err) < 0) {
			fprintf(stderr, "au: '%s' line %zu: %s\n", path, lineno, err.str);
			rc = -1;
			break;
		}
		(*n)++;
	}
	free(line);
	if (f != stdin)
		fclose(f);
	return rc;
}

/* au_handle_wait, showing on a terminal (stderr) the status and the time
 * waited, refreshed every half second; the line is cleared at the end. */
static int wait_shown(struct au_handle *h, int timeout_ms, struct au_record *rec)
{
	uint64_t t0 = au_mono_us();
	enum au_status st;
	int shown = 0, r, slice, waited;

	if (!isatty(STDERR_FILENO))
		return au_handle_wait(h, timeout_ms, rec);
	for (;;) {
		waited = (int)((au_mono_us() - t0) / 1000);
		slice = timeout_ms < 0 || timeout_ms - waited > 500 ? 500 : timeout_ms - waited;
		r = au_handle_wait(h, slice > 0 ? slice : 0, rec);
		if (r == 0 || au_handle_err(h)->code != AU_ETIMEDOUT ||
		    (timeout_ms >= 0 && (au_mono_us() - t0) / 1000 >= (uint64_t)timeout_ms))
			break;
		if (au_handle_status(h, &st) < 0)
			st = AU_UNKNOWN;
		fprintf(stderr, "\r\033[Kau: waiting for %s: %s, %.1f s", au_handle_id(h),
			au_status_name(st), (double)(au_mono_us() - t0) / 1e6);
		shown = 1;
	}
	if (shown)
		fprintf(stderr, "\r\033[K");
	return r;
}

static int cmd_enqueue(struct cli *c, int argc, char **argv)
{
	unsigned char **args = NULL, *one = NULL;
	size_t *lens = NULL, n = 0, nh = 0, i, done;
	struct au_handle **hs = NULL;
	struct au_client *cl = NULL;
	struct au_err err;
	int rc = 0;

	if (argc != 1)
		return usage("enqueue takes one TASK");
	if (c->args && c->args_file)
		return usage("--args and --args-file exclude each other");
	if (c->args_file) {
		if (read_args_file(c->args_file, &args, &lens, &n) < 0) {
			rc = EXIT_USAGE;
			goto out;
		}
	} else {
		size_t len;

		if (au_json_to_msgpack(c->args ? c->args : "{}", &one, &len, &err) < 0) {
			fprintf(stderr, "au: --args: %s\n", err.str);
			return EXIT_USAGE;
		}
		args = malloc(sizeof(*args));
		lens = malloc(sizeof(*lens));
		if (!args || !lens) {
			rc = EXIT_FAILED;
			goto out;
		}
		args[0] = one;
		lens[0] = len;
		one = NULL;
		n = 1;
	}
	hs = calloc(n ? n : 1, sizeof(*hs));
	if (!hs || !(cl = connect_client(c, &rc))) {
		rc = rc ? rc : EXIT_FAILED;
		goto out;
	}
	{
		const char *mw = c->wo.middleware ? c->wo.middleware : getenv("AU_MIDDLEWARE");

		if (mw && *mw && au_client_use_spec(cl, mw, &err) < 0) {
			fprintf(stderr, "au: %s\n", err.str);
			rc = EXIT_USAGE;
			goto out;
		}
	}
	for (done = 0; done < n; done += 1000) {
		size_t chunk = n - done < 1000 ? n - done : 1000;

		if (au_enqueue_batch(cl, argv[0], (const unsigned char *const *)args + done,
				     lens + done, chunk, &c->eo, hs + done) < 0) {
			rc = au_cli_fail(au_client_err(cl));
			break;
		}
		nh = done + chunk;
	}
	for (i = 0; i < nh; i++) {   /* the ids of what was enqueued */
		if (c->wait) {
			struct au_record rec;
			int r;

			if (wait_shown(hs[i], c->wait_timeout_ms ? c->wait_timeout_ms : -1, &rec) < 0) {
				rc = au_cli_fail(au_handle_err(hs[i]));
				continue;
			}
			r = print_record(&rec, c->json);
			if (!rc)
				rc = r ? r : record_exit(&rec);
			au_record_release(&rec);
		} else if (c->json) {
			printf("{\"id\":\"%s\"}\n", au_handle_id(hs[i]));
		} else {
			printf("%s\n", au_handle_id(hs[i]));
		}
	}
out:
	for (i = 0; i < nh; i++)
		au_handle_free(hs[i]);
	free(hs);
	for (i = 0; i < n; i++)
		free(args[i]);
	free(args);
	free(lens);
	free(one);
	au_client_free(cl);
	return rc;
}

/* status, wait, result, cancel: one ID each. */
static int cmd_handle(struct cli *c, const char *cmd, int argc, char **argv)
{
	struct au_client *cl;
	struct au_handle *h;
	struct au_record rec;
	enum au_status st = AU_PENDING;
	int rc = 0;

	if (argc != 1)
		return usage("%s takes one computation ID", cmd);
	if (!au_id_valid(argv[0])) {
		char shown[AU_ID_SHOWN_SIZE];

		fprintf(stderr, "au: invalid computation id '%s'\n", au_id_shown(shown, argv[0]));
		return EXIT_USAGE;
	}
	if (!(cl = connect_client(c, &rc)))
		return rc;
	h = au_handle_new(cl, argv[0], c->eo.queue);
	if (!h) {
		au_client_free(cl);
		return EXIT_FAILED;
	}
	au_record_init(&rec);
	if (!strcmp(cmd, "status") && c->json) {
		if (au_handle_inspect(h, &rec) < 0) {
			rc = au_cli_fail(au_handle_err(h));
		} else {
			rc = print_status(&rec);
			if (!rc && rec.status == AU_UNKNOWN)
				rc = au_cli_fail(au_handle_err(h));
		}
	} else if (!strcmp(cmd, "status")) {
		if (au_handle_status(h, &st) < 0) {
			rc = au_cli_fail(au_handle_err(h));
		} else {
			printf("%s\n", au_status_name(st));
			if (st == AU_UNKNOWN)
				rc = au_cli_fail(au_handle_err(h));
		}
	} else if (!strcmp(cmd, "cancel")) {
		if (au_handle_cancel(h) < 0)
			rc = au_cli_fail(au_handle_err(h));
		else
			printf("cancelled\n");
	} else {
		int r = !strcmp(cmd, "wait") ? wait_shown(h, c->timeout_ms ? c->timeout_ms : -1, &rec)
					     : au_handle_result(h, &rec);

		if (r < 0) {
			rc = au_cli_fail(au_handle_err(h));
		} else {
			rc = print_record(&rec, c->json);
			if (!rc)
				rc = record_exit(&rec);
		}
	}
	au_record_release(&rec);
	au_handle_free(h);
	au_client_free(cl);
	return rc;
}

/* The PostgreSQL schema behind the queue and the store, whichever use it;
 * nothing on PostgreSQL is said and is no error. */
static int cmd_migrate(struct cli *c, int argc)
{
	struct au_config conf = c->cfg;
	struct au_err err = { 0, "" };

	if (argc)
		return usage("migrate takes no arguments");
	au_config_from_env(&conf);
	if (c->migrate_ch) {
		struct au_clickhouse *ch = au_ch_new(conf.clickhouse_url, &err);
		int rc;

		struct au_queue *q = NULL;
		char holder[300], host[256] = "";
		int done = 1;

		if (!ch)
			return au_cli_fail(&err);
		/* the migration lock, in the queue's kv space (ClickHouse has none) */
		if (!c->dry_run) {
			gethostname(host, sizeof(host) - 1);
			snprintf(holder, sizeof(holder), "%s:%d:%lld", host, (int)getpid(),
				 (long long)time(NULL));
			if (!(q = au_queue_open(conf.queue_url)) || q->err.code) {
				err = q ? q->err : (struct au_err){ AU_ENOMEM, "out of memory" };
				au_queue_close(q);
				au_ch_free(ch);
				return au_cli_fail(&err);
			}
			for (int tries = 0; tries < 2; tries++) {
				unsigned char *v = NULL;
				size_t n = 0;
				char held[300] = "", *pid, *since;
				long long at = 0;

				if (au_queue_kv_put(q, "lock", "ch_migrate", (const unsigned char *)holder,
						    strlen(holder), 3600000, 1, &done) < 0) {
					err = q->err;
					done = -1;
					break;
				}
				if (done)
					break;
				if (au_queue_kv_get(q, "lock", "ch_migrate", &v, &n) < 0)
					continue;   /* let go meanwhile: try again */
				snprintf(held, sizeof(held), "%.*s", (int)(n < 299 ? n : 299), (char *)v);
				free(v);
				/* host:pid:since; a migrator of this host that is gone left it */
				since = strrchr(held, ':');
				pid = since ? memrchr(held, ':', (size_t)(since - held)) : NULL;
				if (since)
					at = strtoll(since + 1, NULL, 10);
				if (pid && tries == 0 && (size_t)(pid - held) == strlen(host) &&
				    !strncmp(held, host, strlen(host)) && kill(atoi(pid + 1), 0) < 0 &&
				    errno == ESRCH) {
					int gone = 0;

					au_queue_kv_del(q, "lock", "ch_migrate", (const unsigned char *)held,
							strlen(held), &gone);
					fprintf(stderr, "au: taking over the clickhouse migration lock of %.*s,"
						" which is gone\n", (int)(since - held), held);
					continue;
				}
				{
					char when[32] = "?";
					time_t t = (time_t)at;
					struct tm tm;

					if (at && gmtime_r(&t, &tm))
						strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
					au_seterr(&err, AU_ESTATE, "clickhouse migration is held by %.*s since %s:"
						  " try again when it is done", since ? (int)(since - held)
						  : (int)strlen(held), held, when);
				}
				break;
			}
			if (!done && !err.code)
				au_seterr(&err, AU_ESTATE, "the clickhouse migration lock is taken: try again");
		}
		rc = done == 1 ? au_ch_migrate(ch, 0, c->dry_run, stdout, &err) : -1;
		if (q && done == 1)
			au_queue_kv_del(q, "lock", "ch_migrate", (const unsigned char *)holder,
					strlen(holder), &done);
		au_queue_close(q);
		au_ch_free(ch);
		return rc < 0 ? au_cli_fail(&err) : 0;
	}
	if (au_pg_migrate_all(conf.queue_url, conf.store_url, c->dry_run, stdout, &err) < 0)
		return au_cli_fail(&err);
	return 0;
}

static int cmd_worker(struct cli *c, int argc)
{
	struct au_queue_list ql;
	struct au_err err;

	if (argc)
		return usage("worker takes no arguments");
	if (au_queue_list_parse(c->wo.queue, &ql, &err) < 0)
		return usage("%s", err.str);
	au_queue_list_release(&ql);
	if (c->wo.middleware && au_mw_check(c->wo.middleware, &err) < 0)
		return usage("%s", err.str);
	c->fleet.cfg = c->cfg;
	c->fleet.wo = c->wo;
	c->fleet.processes = c->processes;
	return au_fleet_worker(&c->fleet);   /* cli/fleet.c */
}

/* `au help [COMMAND]` */
static int cmd_help(struct cli *c, int argc, char **argv)
{
	static const char *const theirs[] = { "dlq", "queue", "queues", "workers", "stats",
					      "lineage", "schedule", "flow" };
	int au_cli_schedule(struct au_config *cfg, int argc, char **argv);
	char *args[] = { NULL, (char *)"--help", NULL };
	size_t i;
	int k;

	if (argc == 0) {
		fputs(usage_text, stdout);
		return 0;
	}
	if (argc > 1)
		return usage("help takes one COMMAND");
	if ((k = command_of(argv[0])) >= 0) {
		command_help((enum cmd)k, stdout);
		return 0;
	}
	for (i = 0; i < AU_ARRAY_SIZE(theirs); i++)
		if (!strcmp(argv[0], theirs[i])) {
			args[0] = argv[0];
			return !strcmp(argv[0], "dlq") ? au_cli_dlq(&c->cfg, 2, args)
			       : !strcmp(argv[0], "queue") ? au_cli_queue(&c->cfg, 2, args)
			       : !strcmp(argv[0], "queues") ? au_cli_queues(&c->cfg, 2, args)
			       : !strcmp(argv[0], "stats") ? au_cli_stats(&c->cfg, 2, args)
			       : !strcmp(argv[0], "lineage") ? au_cli_lineage(&c->cfg, 2, args)
			       : !strcmp(argv[0], "flow") ? au_cli_flow(&c->cfg, 2, args)
			       : !strcmp(argv[0], "schedule") ? au_cli_schedule(&c->cfg, 2, args)
			       : au_cli_workers(&c->cfg, 2, args);
		}
	return usage("unknown command '%s'", argv[0]);
}

int main(int argc, char **argv)
{
	struct cli c;
	const char *cmd;
	int first, rc, k, i, np = 0;

	memset(&c, 0, sizeof(c));
	c.wo.log = 1;
	if ((rc = parse(&c, argc, argv, 1, &first)))
		return rc;
	if (first >= argc)
		return usage(NULL);
	cmd = argv[first];
	/* the settings file's URLs, under the flags and the environment (the
	 * worker reads the whole file itself, again at each SIGHUP) */
	if (strcmp(cmd, "worker") && au_cli_config(&c.cfg, c.fleet.config_file) < 0)
		return EXIT_USAGE;
	/* these parse their own options (cli/admin.c, cli/workers.c) */
	if (!strcmp(cmd, "dlq"))
		return au_cli_dlq(&c.cfg, argc - first, argv + first);
	if (!strcmp(cmd, "queue"))
		return au_cli_queue(&c.cfg, argc - first, argv + first);
	if (!strcmp(cmd, "queues"))
		return au_cli_queues(&c.cfg, argc - first, argv + first);
	if (!strcmp(cmd, "workers"))
		return au_cli_workers(&c.cfg, argc - first, argv + first);
	if (!strcmp(cmd, "schedule")) {   /* cli/schedule.c */
		int au_cli_schedule(struct au_config *cfg, int argc, char **argv);

		return au_cli_schedule(&c.cfg, argc - first, argv + first);
	}
	if (!strcmp(cmd, "stats"))   /* cli/stats.c */
		return au_cli_stats(&c.cfg, argc - first, argv + first);
	if (!strcmp(cmd, "lineage"))   /* cli/lineage.c */
		return au_cli_lineage(&c.cfg, argc - first, argv + first);
	if (!strcmp(cmd, "flow"))   /* cli/flow.c */
		return au_cli_flow(&c.cfg, argc - first, argv + first);
	if (!strcmp(cmd, "worker") && first + 1 < argc && !strcmp(argv[first + 1], "stop"))
		return au_cli_worker_stop(&c.cfg, argc - first, argv + first);
	if ((k = command_of(cmd)) < 0)
		return usage("unknown command '%s'", cmd);
	c.cmd = (enum cmd)k;
	/* `au migrate --clickhouse [URL]`: the ClickHouse schema (the flag's
	 * URL is optional here, so it is taken before getopt sees it) */
	if (c.cmd == C_MIGRATE)
		for (i = first + 1; i < argc; i++)
			if (!strcmp(argv[i], "--clickhouse")) {
				int n = i + 1 < argc && argv[i + 1][0] != '-' ? 2 : 1;

				c.migrate_ch = 1;
				if (n == 2)
					c.cfg.clickhouse_url = argv[i + 1];
				memmove(argv + i, argv + i + n, (size_t)(argc - i - n + 1) * sizeof(*argv));
				argc -= n;
				break;
			}
	/* the command's options may come anywhere after it */
	argv += first;
	argc -= first;
	if ((rc = parse(&c, argc, argv, 0, &first)) == 0 && c.cmd != C_WORKER &&
	    c.seen[O_CONFIG - O_QUEUE_URL] && au_cli_config(&c.cfg, c.fleet.config_file) < 0)
		rc = EXIT_USAGE;
	if (rc) {
		au_buf_release(&c.queues);
		au_buf_release(&c.plugins);
		return rc;
	}
	for (i = first; i < argc; i++)   /* the positional arguments, after the command */
		argv[1 + np++] = argv[i];
	argc = 1 + np;
	switch (c.cmd) {
	case C_ENQUEUE:
		rc = cmd_enqueue(&c, argc - 1, argv + 1);
		break;
	case C_STATUS:
	case C_WAIT:
	case C_RESULT:
	case C_CANCEL:
		rc = cmd_handle(&c, cmd, argc - 1, argv + 1);
		break;
	case C_WORKER:
		rc = cmd_worker(&c, argc - 1);
		break;
	case C_MIGRATE:
		rc = cmd_migrate(&c, argc - 1);
		break;
	case C_VERSION:
		if (argc > 1)
			return usage("version takes no arguments");
		printf("au %s (wire format v%d)\n", AU_VERSION, AU_WIRE_VERSION);
		rc = 0;
		break;
	case C_HELP:
	default:
		rc = cmd_help(&c, argc - 1, argv + 1);
		break;
	}
	au_buf_release(&c.queues);
	au_buf_release(&c.plugins);
	return rc;
}
