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
#include <unistd.h>

#include <jansson.h>

#include "cli.h"
#include "admin.h"
#include "core.h"
#include "fleet.h"
#include "pg_schema.h"
#include "queue.h"
#include "workers.h"


static const char usage_text[] =
	"usage: au [--queue-url URL] [--store-url URL] [--clickhouse URL] COMMAND [ARGS]\n"
	"\n"
	"  enqueue TASK [--args JSON | --args-file FILE|-] [--queue Q] [--priority P]\n"
	"          [--delay MS] [--ttl S] [--timeout MS [--on-timeout retry|fail]] [--max-attempts N]\n"
	"          [--header K=V]... [--key KEY] [--wait [--wait-timeout MS]] [--json]\n"
	"  status ID [--queue Q] [--json]   (--queue: a hint, ids are found on any queue)\n"
	"  wait ID [--queue Q] [--timeout MS] [--json]\n"
	"  result ID [--queue Q] [--json]\n"
	"  cancel ID [--queue Q]\n"
	"  worker [--queues Q,Q...|Q:W,Q:W...] [--concurrency N] [--batch N] [--processes N]\n"
	"         [--lease MS] [--grace MS] [--retry-base MS] [--max-tasks N] [--idle-exit MS] [--quiet]\n"
	"         [--log-level debug|info|warn|error] [--config FILE] [--wait-for-servers]\n"
	"         [--restart-delay MS] [--skip-check queue,store,clickhouse]\n"
	"  queues [--json]         (counts, paused, totals and rate of each queue)\n"
	"  queue pause|resume|empty|delete NAME [--force]   (au queue --help)\n"
	"  dlq list|show ID|requeue ID...|--all|purge [--older-than D]   (au dlq --help)\n"
	"  worker stop ID          (asks one worker of 'au workers' to drain)\n"
	"  workers [--json]        (the live workers: what each runs, its counts)\n"
	"  migrate [--dry-run]     (PostgreSQL queue and store: create or upgrade the schema)\n"
	"  version\n"
	"\n"
	"URLs also come from AU_QUEUE, AU_STORE and AU_CLICKHOUSE.\n";

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
	fputs(usage_text, stderr);
	return EXIT_USAGE;
}



/* Options shared by every command; one table for getopt_long. */
struct cli {
	struct au_config cfg;
	struct au_enqueue_opts eo;
	struct au_worker_opts wo;
	struct au_header headers[AU_MAX_HEADERS];
	const char *args, *args_file;
	const char *queues;           /* --queues, the worker's */
	int json, wait, wait_timeout, timeout, processes, dry_run;
	struct au_fleet_opts fleet;   /* the worker's own options (cli/fleet.h) */
};

enum {
	O_QUEUE_URL = 256, O_STORE_URL, O_CH, O_ARGS, O_ARGS_FILE, O_QUEUE, O_PRIORITY, O_DELAY,
	O_TTL, O_TIMEOUT, O_MAX_ATTEMPTS, O_HEADER, O_WAIT, O_WAIT_TIMEOUT, O_JSON, O_CONC,
	O_BATCH, O_PROCS, O_LEASE, O_GRACE, O_RETRY_BASE, O_MAX_JOBS, O_IDLE_EXIT, O_QUIET, O_HELP,
	O_DRY_RUN, O_ON_TIMEOUT, O_KEY, O_LOG_LEVEL, O_CONFIG, O_WAIT_SERVERS, O_RESTART_DELAY,
	O_SKIP_CHECK, O_QUEUES
};

static const struct option options[] = {
	{ "queue-url", required_argument, NULL, O_QUEUE_URL },
	{ "store-url", required_argument, NULL, O_STORE_URL },
	{ "clickhouse", required_argument, NULL, O_CH },
	{ "args", required_argument, NULL, O_ARGS },
	{ "args-file", required_argument, NULL, O_ARGS_FILE },
	{ "queue", required_argument, NULL, O_QUEUE },
	{ "queues", required_argument, NULL, O_QUEUES },
	{ "priority", required_argument, NULL, O_PRIORITY },
	{ "delay", required_argument, NULL, O_DELAY },
	{ "ttl", required_argument, NULL, O_TTL },
	{ "timeout", required_argument, NULL, O_TIMEOUT },
	{ "max-attempts", required_argument, NULL, O_MAX_ATTEMPTS },
	{ "header", required_argument, NULL, O_HEADER },
	{ "wait", no_argument, NULL, O_WAIT },
	{ "wait-timeout", required_argument, NULL, O_WAIT_TIMEOUT },
	{ "json", no_argument, NULL, O_JSON },
	{ "concurrency", required_argument, NULL, O_CONC },
	{ "batch", required_argument, NULL, O_BATCH },
	{ "processes", required_argument, NULL, O_PROCS },
	{ "lease", required_argument, NULL, O_LEASE },
	{ "grace", required_argument, NULL, O_GRACE },
	{ "retry-base", required_argument, NULL, O_RETRY_BASE },
	{ "max-tasks", required_argument, NULL, O_MAX_JOBS },
	{ "max-jobs", required_argument, NULL, O_MAX_JOBS },   /* the older name */
	{ "idle-exit", required_argument, NULL, O_IDLE_EXIT },
	{ "quiet", no_argument, NULL, O_QUIET },
	{ "help", no_argument, NULL, O_HELP },
	{ "dry-run", no_argument, NULL, O_DRY_RUN },
	{ "on-timeout", required_argument, NULL, O_ON_TIMEOUT },
	{ "key", required_argument, NULL, O_KEY },
	{ "log-level", required_argument, NULL, O_LOG_LEVEL },
	{ "config", required_argument, NULL, O_CONFIG },
	{ "wait-for-servers", no_argument, NULL, O_WAIT_SERVERS },
	{ "restart-delay", required_argument, NULL, O_RESTART_DELAY },
	{ "skip-check", required_argument, NULL, O_SKIP_CHECK },
	{ NULL, 0, NULL, 0 }
};

/* Parses a decimal in [min, max]; -1 on error (message printed). */
static int number(const char *opt, const char *s, long long min, long long max, long long *out)
{
	char *end;

	errno = 0;
	*out = strtoll(s, &end, 10);
	if (errno || end == s || *end || *out < min || *out > max) {
		fprintf(stderr, "au: invalid value '%s' for --%s (expected %lld..%lld)\n", s, opt, min,
			max);
		return -1;
	}
	return 0;
}

static const char *option_name(int val)
{
	const struct option *o;

	for (o = options; o->name; o++)
		if (o->val == val)
			return o->name;
	return "?";
}

/* stop_at_command: options before the command only (global ones). */
static int parse(struct cli *c, int argc, char **argv, int stop_at_command, int *first)
{
	long long v;
	int o;

	optind = 0;   /* 0: glibc re-initialises, needed for the second pass */
	while ((o = getopt_long(argc, argv, stop_at_command ? "+h" : "h", options, NULL)) != -1) {
		switch (o) {
		case O_QUEUE_URL: c->cfg.queue_url = optarg; break;
		case O_STORE_URL: c->cfg.store_url = optarg; break;
		case O_CH: c->cfg.clickhouse_url = optarg; break;
		case O_ARGS: c->args = optarg; break;
		case O_ARGS_FILE: c->args_file = optarg; break;
		case O_QUEUE: c->eo.queue = c->wo.queue = optarg; break;
		case O_QUEUES: c->wo.queue = c->queues = optarg; break;
		case O_HEADER: {
			char *eq = strchr(optarg, '=');

			if (!eq || eq == optarg || c->eo.nheaders == AU_MAX_HEADERS)
				return usage("invalid header '%s' (expected KEY=VALUE)", optarg);
			*eq = '\0';
			c->headers[c->eo.nheaders].key = optarg;
			c->headers[c->eo.nheaders++].value = eq + 1;
			c->eo.headers = c->headers;
			break;
		}
		case O_WAIT: c->wait = 1; break;
		case O_JSON: c->json = 1; break;
		case O_QUIET: c->wo.log = 0; break;
		case O_DRY_RUN: c->dry_run = 1; break;
		case O_KEY: c->eo.key = optarg; break;
		case O_ON_TIMEOUT:
			if (strcmp(optarg, "retry") != 0 && strcmp(optarg, "fail") != 0)
				return usage("invalid value '%s' for --on-timeout (expected retry or fail)",
					     optarg);
			c->eo.fail_on_timeout = !strcmp(optarg, "fail");
			break;
		case O_LOG_LEVEL: {
			enum au_loglevel lvl;

			if (au_fleet_log_level(optarg, &lvl) < 0)
				return usage("invalid log level '%s' (expected debug, info, warn or error)",
					     optarg);
			c->fleet.log_level = optarg;
			break;
		}
		case O_CONFIG: c->fleet.config_file = optarg; break;
		case O_WAIT_SERVERS: c->fleet.wait_for_servers = 1; break;
		case O_SKIP_CHECK:
			if (au_fleet_parts(optarg, &c->fleet.skip) < 0)
				return usage("invalid --skip-check '%s' (expected queue, store, clickhouse)",
					     optarg);
			break;
		case O_HELP:
		case 'h':
			fputs(usage_text, stdout);
			exit(0);
		case '?':
			return EXIT_USAGE;
		default:
			/* every remaining option takes a number */
			if (number(option_name(o), optarg,
				   o == O_PRIORITY ? AU_PRIORITY_MIN : 0,
				   o == O_PRIORITY ? AU_PRIORITY_MAX : 0x7fffffff, &v) < 0)
				return EXIT_USAGE;
			switch (o) {
			case O_PRIORITY: c->eo.priority = (int)v; break;
			case O_DELAY: c->eo.delay_ms = (uint64_t)v; break;
			case O_TTL: c->eo.ttl_s = v ? (uint32_t)v : AU_TTL_NEVER; break;
			case O_TIMEOUT: c->eo.timeout_ms = (uint32_t)v; c->timeout = (int)v; break;
			case O_MAX_ATTEMPTS: c->eo.max_attempts = (uint32_t)v; break;
			case O_WAIT_TIMEOUT: c->wait_timeout = (int)v; break;
			case O_CONC: c->wo.concurrency = (unsigned)v; break;
			case O_BATCH: c->wo.batch = (unsigned)v; break;
			case O_PROCS: c->processes = (int)v; break;
			case O_LEASE: c->wo.lease_ms = (uint32_t)v; break;
			case O_GRACE: c->wo.grace_ms = (uint32_t)v; break;
			case O_RETRY_BASE: c->wo.retry_base_ms = (uint32_t)v; break;
			case O_MAX_JOBS: c->wo.max_jobs = (uint32_t)v; break;
			case O_IDLE_EXIT: c->wo.idle_exit_ms = (uint32_t)v; break;
			case O_RESTART_DELAY: c->fleet.restart_delay_ms = (uint32_t)v; break;
			}
		}
	}
	*first = optind;
	return 0;
}

static json_t *msgpack_json(const unsigned char *buf, size_t len)
{
	struct json_t *j = NULL;
	struct au_err err;

	if (!buf || !len)
		return json_null();
	if (au_msgpack_to_jansson(buf, len, &j, &err) < 0)
		return json_pack("{s:s}", "undecodable", err.str);
	return j;
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
	if (o && r->result_len)
		json_object_set_new(o, "result", msgpack_json(r->result, r->result_len));
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
			o = msgpack_json(r->result, r->result_len);
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

			if (au_handle_wait(hs[i], c->wait_timeout ? c->wait_timeout : -1, &rec) < 0) {
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
		int r = !strcmp(cmd, "wait") ? au_handle_wait(h, c->timeout ? c->timeout : -1, &rec)
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

static int is_postgres(const char *url)
{
	return !strncmp(url, "postgres://", 11) || !strncmp(url, "postgresql://", 13);
}

/* The PostgreSQL schema behind the queue and the store, whichever use it. */
static int cmd_migrate(struct cli *c, int argc)
{
	struct au_config conf = c->cfg;
	const char *urls[2];
	int n = 0, i;

	if (argc)
		return usage("migrate takes no arguments");
	au_config_from_env(&conf);
	if (is_postgres(conf.queue_url))
		urls[n++] = conf.queue_url;
	if (is_postgres(conf.store_url) && !(n && !strcmp(conf.store_url, urls[0])))
		urls[n++] = conf.store_url;
	if (!n) {
		fprintf(stderr, "au: nothing to migrate: neither the queue nor the store is on PostgreSQL\n");
		return EXIT_USAGE;
	}
	for (i = 0; i < n; i++) {
		struct au_err err = { 0, "" };

		if (au_pg_migrate(urls[i], c->dry_run, stdout, &err) < 0)
			return au_cli_fail(&err);
	}
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
	c->fleet.cfg = c->cfg;
	c->fleet.wo = c->wo;
	c->fleet.processes = c->processes;
	return au_fleet_worker(&c->fleet);   /* cli/fleet.c */
}

int main(int argc, char **argv)
{
	struct cli c;
	const char *cmd;
	int first, rc;

	memset(&c, 0, sizeof(c));
	c.wo.log = 1;
	if ((rc = parse(&c, argc, argv, 1, &first)))
		return rc;
	if (first >= argc)
		return usage(NULL);
	cmd = argv[first];
	if (c.queues && strcmp(cmd, "worker"))
		return usage("--queues is an option of the worker; '%s' takes --queue Q", cmd);
	/* these parse their own options (cli/admin.c) */
	if (!strcmp(cmd, "dlq"))
		return au_cli_dlq(&c.cfg, argc - first, argv + first);
	if (!strcmp(cmd, "queue"))
		return au_cli_queue(&c.cfg, argc - first, argv + first);
	if (!strcmp(cmd, "queues"))
		return au_cli_queues(&c.cfg, argc - first, argv + first);
	/* these parse their own options (cli/workers.c) */
	if (!strcmp(cmd, "workers"))
		return au_cli_workers(&c.cfg, argc - first, argv + first);
	if (!strcmp(cmd, "worker") && first + 1 < argc && !strcmp(argv[first + 1], "stop"))
		return au_cli_worker_stop(&c.cfg, argc - first, argv + first);
	/* options may also follow the command */
	argv += first;
	argc -= first;
	if ((rc = parse(&c, argc, argv, 0, &first)))
		return rc;
	/* collect the positional arguments after the command */
	{
		int i, np = 0;

		for (i = first; i < argc; i++)
			argv[1 + np++] = argv[i];
		argc = 1 + np;
	}
	if (c.queues && strcmp(cmd, "worker"))
		return usage("--queues is an option of the worker; '%s' takes --queue Q", cmd);
	if (!strcmp(cmd, "enqueue"))
		return cmd_enqueue(&c, argc - 1, argv + 1);
	if (!strcmp(cmd, "status") || !strcmp(cmd, "wait") || !strcmp(cmd, "result") ||
	    !strcmp(cmd, "cancel"))
		return cmd_handle(&c, cmd, argc - 1, argv + 1);
	if (!strcmp(cmd, "worker"))
		return cmd_worker(&c, argc - 1);
	if (!strcmp(cmd, "migrate"))
		return cmd_migrate(&c, argc - 1);
	if (!strcmp(cmd, "version")) {
		printf("au %s (wire format v%d)\n", AU_VERSION, AU_WIRE_VERSION);
		return 0;
	}
	if (!strcmp(cmd, "help")) {
		fputs(usage_text, stdout);
		return 0;
	}
	return usage("unknown command '%s'", cmd);
}
