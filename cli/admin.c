/*
 * admin.c - `au dlq`, `au queue` and `au queues` (cli/admin.h): dead
 * letters, pausing, emptying and deleting queues, and their counts. A thin
 * layer over the queue's administration operations (backends/queue.h); a
 * requeue also deletes the failed record the store keeps, since the first
 * record of an id wins and the new run's would otherwise be refused.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "cli.h"
#include "admin.h"
#include "queue.h"
#include "store.h"


#define PAGE 1000               /* dead letters read per call */

static const char dlq_usage[] =
	"usage: au dlq list [--queue Q] [--limit N] [--json]\n"
	"       au dlq show ID [--queue Q] [--json]\n"
	"       au dlq requeue ID... [--queue Q] [--json]\n"
	"       au dlq requeue --all [--queue Q] [--json]\n"
	"       au dlq purge [--queue Q] [--older-than DURATION] [--json]\n"
	"\n"
	"Dead letters: computations that failed for good. Without --queue, every\n"
	"queue; list shows the newest first (--limit, default 100, up to 1000 a\n"
	"queue). requeue runs them again as new (attempts from 0); purge deletes\n"
	"them (--older-than 30s, 10m, 6h, 7d: only those dead that long).\n";

static const char queue_usage[] =
	"usage: au queue pause NAME\n"
	"       au queue resume NAME\n"
	"       au queue empty NAME [--json]\n"
	"       au queue delete NAME [--force]\n"
	"\n"
	"pause: workers lease nothing from NAME until resume (running ones finish).\n"
	"empty: deletes the computations waiting in NAME (ready and scheduled); no\n"
	"record is written, so their ids become unknown. Running and dead ones stay.\n"
	"delete: forgets NAME; refused while it holds computations, unless --force\n"
	"(which deletes them too, running and dead ones included).\n";

static const char queues_usage[] =
	"usage: au queues [--json | --watch [--interval DURATION]]\n"
	"\n"
	"Every known queue, by name: computations ready, scheduled, running and\n"
	"dead, whether it is paused, the totals processed (acked) and failed (dead-\n"
	"lettered), and the acks per minute of the last minute or so.\n"
	"\n"
	"options:\n"
	"  --json                   one JSON object per queue, for a script\n"
	"  --watch                  the table again every --interval until Ctrl-C\n"
	"  --interval DURATION      with --watch: 500ms, 2s, 1m; a bare number is seconds\n"
	"                           (default: 2s)\n"
	"\n"
	"example: au queues --watch --interval 1s\n";

/* What the options set; allowed says which apply to the command. */
struct admin {
	struct au_config cfg;
	const char *queue, *older, *interval;
	long long limit;
	int json, all, force, watch;
};

enum {
	A_QUEUE = 1 << 0, A_LIMIT = 1 << 1, A_JSON = 1 << 2, A_ALL = 1 << 3, A_OLDER = 1 << 4,
	A_FORCE = 1 << 5, A_URLS = 1 << 6, A_WATCH = 1 << 10, A_INTERVAL = 1 << 11
};

static const struct option admin_options[] = {
	{ "queue", required_argument, NULL, A_QUEUE },
	{ "limit", required_argument, NULL, A_LIMIT },
	{ "json", no_argument, NULL, A_JSON },
	{ "all", no_argument, NULL, A_ALL },
	{ "older-than", required_argument, NULL, A_OLDER },
	{ "force", no_argument, NULL, A_FORCE },
	{ "watch", no_argument, NULL, A_WATCH },
	{ "interval", required_argument, NULL, A_INTERVAL },
	{ "queue-url", required_argument, NULL, A_URLS },
	{ "store-url", required_argument, NULL, A_URLS | 1 << 7 },
	{ "clickhouse", required_argument, NULL, A_URLS | 1 << 8 },
	{ "config", required_argument, NULL, A_URLS | 1 << 9 },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 }
};

/*
 * Parses argv (argv[0] the command, e.g. "dlq list") into a; the
 * positional arguments are moved to argv[1..*argc). An option that does
 * not apply to the command is a usage error. -1 after printing the help
 * (exit 0), else 0 or an exit code.
 */
static int parse(struct admin *a, const char *cmd, const char *text, unsigned allowed,
		 int *argc, char **argv)
{
	const char *config = NULL;
	int o, n = 1, i;
	char *end;

	optind = 0;
	opterr = 0;
	while ((o = getopt_long(*argc, argv, "h", admin_options, NULL)) != -1) {
		if (o == 'h') {
			fputs(text, stdout);
			return -1;
		}
		if (o == '?')
			return au_cli_usage(text, "unknown option '%s' for '%s'", argv[optind - 1], cmd);
		if (!(o & allowed))
			return au_cli_usage(text, "option '%s' does not apply to '%s'", argv[optind - 1], cmd);
		switch (o) {
		case A_QUEUE: a->queue = optarg; break;
		case A_JSON: a->json = 1; break;
		case A_ALL: a->all = 1; break;
		case A_FORCE: a->force = 1; break;
		case A_WATCH: a->watch = 1; break;
		case A_INTERVAL: a->interval = optarg; break;
		case A_OLDER: a->older = optarg; break;
		case A_URLS: a->cfg.queue_url = optarg; break;
		case A_URLS | 1 << 7: a->cfg.store_url = optarg; break;
		case A_URLS | 1 << 8: a->cfg.clickhouse_url = optarg; break;
		case A_URLS | 1 << 9: config = optarg; break;
		case A_LIMIT:
			errno = 0;
			a->limit = strtoll(optarg, &end, 10);
			if (errno || end == optarg || *end || a->limit < 1 || a->limit > PAGE)
				return au_cli_usage(text, "invalid value '%s' for --limit (expected 1..%d)",
					     optarg, PAGE);
			break;
		}
	}
	/* getopt moved the positional arguments behind the options */
	for (i = optind; i < *argc; i++)
		argv[n++] = argv[i];
	*argc = n;
	return au_cli_config(&a->cfg, config) < 0 ? EXIT_USAGE : 0;
}

static void names_free(char **names, size_t n)
{
	while (n)
		free(names[--n]);
	free(names);
}

static int by_name(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The queues a command works on: --queue, or every known one, sorted. */
static int queues_of(struct au_queue *q, const char *queue, char ***names, size_t *n)
{
	if (queue) {
		*names = calloc(1, sizeof(**names));
		if (!*names || !((*names)[0] = strdup(queue))) {
			free(*names);
			return au_seterr(&q->err, AU_ENOMEM, "out of memory");
		}
		*n = 1;
		return 0;
	}
	if (au_queue_list(q, names, n) < 0)
		return -1;
	qsort(*names, *n, sizeof(**names), by_name);
	return 0;
}

/* 1 if queue is one the backend knows, 0 if not, -1 on error. */
static int known(struct au_queue *q, const char *queue)
{
	char **names = NULL;
	size_t n = 0, i;
	int found = 0;

	if (au_queue_list(q, &names, &n) < 0)
		return -1;
	for (i = 0; i < n; i++)
		found |= !strcmp(names[i], queue);
	names_free(names, n);
	return found;
}

static void print_json(json_t *o)
{
	char *text = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(15));

	printf("%s\n", text ? text : "{}");
	free(text);
	json_decref(o);
}

/* "2026-12-02T03:04:05Z" */
static const char *iso_time(uint64_t ms, char buf[32])
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;

	if (!gmtime_r(&t, &tm) || !strftime(buf, 32, "%Y-%m-%dT%H:%M:%SZ", &tm))
		snprintf(buf, 32, "%llu", (unsigned long long)ms);
	return buf;
}

/* ---- au dlq ---- */

/* The dead letter's computation, decoded (c released by the caller); its
 * task is "?" when the body does not decode. */
static const char *task_of(const struct au_dead *d, struct au_computation *c)
{
	struct au_err err;

	au_computation_init(c);
	if (au_computation_decode(d->body, d->body_len, c, &err) < 0 || !c->task)
		return "?";
	return c->task;
}

/* The history of d as JSON (the worker's msgpack), or NULL when it has none
 * or it does not decode. */
static json_t *story_json(const struct au_dead *d)
{
	json_t *story = NULL;
	struct au_err err;

	if (!d->story_len || au_msgpack_to_jansson(d->story, d->story_len, &story, &err) < 0)
		return NULL;
	return story;
}

static json_t *dead_json(const struct au_dead *d, const char *queue, int whole)
{
	struct au_computation c;
	char when[32];
	json_t *o = json_object(), *body = NULL, *story;
	struct au_err err;

	json_object_set_new(o, "id", json_string(d->id));
	json_object_set_new(o, "queue", json_string(queue));
	json_object_set_new(o, "task", json_string(task_of(d, &c)));
	json_object_set_new(o, "attempts", json_integer(d->attempts));
	if (whole)
		json_object_set_new(o, "max_attempts", json_integer(c.max_attempts));
	json_object_set_new(o, "reason", json_string(d->reason));
	json_object_set_new(o, "died_at", json_string(iso_time(d->died_at_ms, when)));
	json_object_set_new(o, "died_at_ms", json_integer((json_int_t)d->died_at_ms));
	if (whole && au_msgpack_to_jansson(d->body, d->body_len, &body, &err) == 0)
		json_object_set_new(o, "computation", body);
	if (whole && (story = story_json(d)))
		json_object_set_new(o, "history", story);
	au_computation_release(&c);
	return o;
}

static int dlq_list(struct admin *a, struct au_queue *q)
{
	struct au_dead *dead = calloc(PAGE, sizeof(*dead));
	char **names = NULL, when[32];
	size_t n = 0, i, k, got;
	int rc = 0;

	if (!dead)
		return EXIT_FAILED;
	if (queues_of(q, a->queue, &names, &n) < 0) {
		free(dead);
		return au_cli_fail(&q->err);
	}
	if (!a->json)
		printf("%-32s  %-16s  %-20s  %8s  %-16s  %s\n", "id", "queue", "died", "attempts",
		       "task", "reason");
	for (i = 0; i < n && !rc; i++) {
		if (au_queue_dead(q, names[i], NULL, (size_t)a->limit, dead, &got) < 0) {
			rc = au_cli_fail(&q->err);
			break;
		}
		for (k = 0; k < got; k++) {
			struct au_computation c;

			if (a->json)
				print_json(dead_json(&dead[k], names[i], 0));
			else
				printf("%-32s  %-16s  %-20s  %8u  %-16s  %.80s\n", dead[k].id, names[i],
				       iso_time(dead[k].died_at_ms, when), dead[k].attempts,
				       task_of(&dead[k], &c), dead[k].reason);
			if (!a->json)
				au_computation_release(&c);
			au_dead_release(&dead[k]);
		}
	}
	names_free(names, n);
	free(dead);
	return rc;
}

/* Finds the dead letter id (hint: --queue): 0 with *queue malloc'ed, or an
 * exit code after a message. */
static int find_dead(struct admin *a, struct au_queue *q, const char *id, char **queue,
		     struct au_dead *d)
{
	struct au_queued info;
	size_t n = 0;

	if (!au_id_valid(id)) {
		fprintf(stderr, "au: invalid computation id '%s'\n", id);
		return EXIT_USAGE;
	}
	if (au_queue_locate(q, id, a->queue, queue) < 0) {
		if (q->err.code != AU_ENOTFOUND)
			return au_cli_fail(&q->err);
		fprintf(stderr, "au: no dead letter '%s' on any queue\n", id);
		return EXIT_UNKNOWN;
	}
	if (au_queue_dead(q, *queue, id, 1, d, &n) < 0)
		return au_cli_fail(&q->err);
	if (n == 1)
		return 0;
	if (au_queue_peek(q, *queue, id, &info) < 0)
		info.state = 0;
	au_queued_release(&info);
	fprintf(stderr, "au: computation '%s' is not a dead letter: it is %s on queue '%s'\n", id,
		info.state == AU_QUEUED_LEASED ? "running" :
		info.state == AU_QUEUED_SCHEDULED ? "scheduled" : "waiting", *queue);
	free(*queue);
	*queue = NULL;
	return EXIT_FAILED;
}

static int dlq_show(struct admin *a, struct au_queue *q, const char *id)
{
	struct au_computation c;
	struct au_dead d;
	char *queue = NULL, when[32];
	int rc = find_dead(a, q, id, &queue, &d);

	if (rc)
		return rc;
	if (a->json) {
		print_json(dead_json(&d, queue, 1));
	} else {
		json_t *args = NULL;
		struct au_err err;
		char *text = NULL;

		printf("id:        %s\nqueue:     %s\ntask:      %s\n", d.id, queue, task_of(&d, &c));
		if (c.args_len && au_msgpack_to_jansson(c.args, c.args_len, &args, &err) == 0)
			text = json_dumps(args, JSON_ENCODE_ANY | JSON_COMPACT);
		printf("args:      %s\n", text ? text : "?");
		printf("attempts:  %u of %u\ndied:      %s\nreason:    %s\n", d.attempts,
		       c.max_attempts, iso_time(d.died_at_ms, when), d.reason);
		if (c.created_at_ms)
			printf("created:   %s\n", iso_time(c.created_at_ms, when));
		if (d.story_len) {
			json_t *story = story_json(&d);

			/* an array of one entry per attempt (wire-format.md, "History") */
			if (json_is_array(story))
				printf("history:   %zu attempts (--json shows them)\n",
				       json_array_size(story));
			else
				printf("history:   %zu bytes\n", d.story_len);
			json_decref(story);
		}
		free(text);
		json_decref(args);
		au_computation_release(&c);
	}
	au_dead_release(&d);
	free(queue);
	return 0;
}

static struct au_store *open_store(struct admin *a, int *rc)
{
	struct au_store *s = au_store_open(a->cfg.store_url);

	if (!s) {
		fprintf(stderr, "au: out of memory\n");
		*rc = EXIT_FAILED;
		return NULL;
	}
	if (s->err.code) {
		*rc = au_cli_fail(&s->err);
		au_store_close(s);
		return NULL;
	}
	return s;
}

/* Deletes the records of ids (the failed outcome of the dead run): the run
 * a requeue starts could not store its own. */
static int forget_records(struct au_store *s, const char *const *ids, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (au_store_del(s, ids[i]) < 0 && s->err.code != AU_ENOTFOUND &&
		    s->err.code != AU_EEXPIRED)
			return au_cli_fail(&s->err);
	return 0;
}

/* --all: every dead letter of each queue, a page at a time. */
static int requeue_all(struct admin *a, struct au_queue *q, struct au_store *s, size_t *total,
		       size_t *skipped)
{
	struct au_dead *dead = calloc(PAGE, sizeof(*dead));
	const char **ids = calloc(PAGE, sizeof(*ids));
	int *applied = calloc(PAGE, sizeof(*applied));
	char **names = NULL;
	size_t n = 0, i, k, m, got, done;
	int rc = 0;

	if (!dead || !ids || !applied) {
		rc = EXIT_FAILED;
		goto out;
	}
	if (queues_of(q, a->queue, &names, &n) < 0) {
		rc = au_cli_fail(&q->err);
		goto out;
	}
	for (i = 0; i < n && !rc; i++) {
		do {
			if (au_queue_dead(q, names[i], NULL, PAGE, dead, &got) < 0) {
				rc = au_cli_fail(&q->err);
				break;
			}
			/* an entry buried for not being an id cannot run again */
			for (k = m = 0; k < got; k++)
				if (au_id_valid(dead[k].id))
					ids[m++] = dead[k].id;
			*skipped += got - m;
			if (!(rc = forget_records(s, ids, m)) &&
			    au_queue_requeue(q, names[i], ids, m, applied) < 0)
				rc = au_cli_fail(&q->err);
			for (k = done = 0; k < got; k++)
				au_dead_release(&dead[k]);
			for (k = 0; k < m; k++)
				done += !rc && applied[k];
			*total += done;
		} while (!rc && got == PAGE && done);
	}
out:
	names_free(names, n);
	free(dead);
	free(ids);
	free(applied);
	return rc;
}

static int dlq_requeue(struct admin *a, struct au_queue *q, int argc, char **argv)
{
	struct au_store *s;
	size_t total = 0, skipped = 0;
	int i, rc = 0, r;

	if (a->all == (argc > 1))
		return au_cli_usage(dlq_usage, "dlq requeue takes computation IDs or --all");
	if (!(s = open_store(a, &rc)))
		return rc;
	if (a->all)
		rc = requeue_all(a, q, s, &total, &skipped);
	if (skipped)
		fprintf(stderr, "au: left %zu dead letters that are no computation id (see"
			" 'au dlq list'; 'au dlq purge' deletes them)\n", skipped);
	for (i = 1; i < argc; i++) {
		const char *id = argv[i];
		char *queue = NULL;
		struct au_dead d;
		int applied = 0;

		if ((r = find_dead(a, q, id, &queue, &d))) {
			rc = rc ? rc : r;
			continue;
		}
		au_dead_release(&d);
		if ((r = forget_records(s, &id, 1)) == 0 &&
		    au_queue_requeue(q, queue, &id, 1, &applied) < 0)
			r = au_cli_fail(&q->err);
		else if (!r && !applied) {
			fprintf(stderr, "au: computation '%s' is no longer a dead letter\n", id);
			r = EXIT_FAILED;
		}
		total += !r;
		rc = rc ? rc : r;
		free(queue);
	}
	if (a->json)
		printf("{\"requeued\":%zu}\n", total);
	else
		printf("requeued %zu\n", total);
	au_store_close(s);
	return rc;
}

static int dlq_purge(struct admin *a, struct au_queue *q)
{
	struct au_err err;
	uint64_t older = 0;
	char **names = NULL;
	size_t n = 0, i, removed, total = 0;
	int rc = 0;

	if (a->older && au_duration_parse(a->older, &older, &err) < 0)
		return au_cli_usage(dlq_usage, "--older-than: %s", err.str);
	if (queues_of(q, a->queue, &names, &n) < 0)
		return au_cli_fail(&q->err);
	for (i = 0; i < n; i++) {
		if (au_queue_purge(q, names[i], older, &removed) < 0) {
			rc = au_cli_fail(&q->err);
			break;
		}
		total += removed;
	}
	names_free(names, n);
	if (a->json)
		printf("{\"purged\":%zu}\n", total);
	else
		printf("purged %zu\n", total);
	return rc;
}

int au_cli_dlq(const struct au_config *cfg, int argc, char **argv)
{
	static const struct { const char *name; unsigned allowed; int args; } subs[] = {
		{ "list", A_QUEUE | A_LIMIT | A_JSON, 0 },
		{ "show", A_QUEUE | A_JSON, 1 },
		{ "requeue", A_QUEUE | A_ALL | A_JSON, -1 },
		{ "purge", A_QUEUE | A_OLDER | A_JSON, 0 },
	};
	struct admin a = { .cfg = *cfg, .limit = 100 };
	struct au_queue *q;
	char cmd[32];
	size_t i;
	int rc;

	if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") ||
	    !strcmp(argv[1], "help")) {
		fputs(dlq_usage, argc < 2 ? stderr : stdout);
		return argc < 2 ? EXIT_USAGE : 0;
	}
	for (i = 0; i < AU_ARRAY_SIZE(subs) && strcmp(subs[i].name, argv[1]); i++)
		;
	if (i == AU_ARRAY_SIZE(subs))
		return au_cli_usage(dlq_usage, "unknown command 'dlq %s'", argv[1]);
	snprintf(cmd, sizeof(cmd), "dlq %s", subs[i].name);
	argc--;
	argv++;
	if ((rc = parse(&a, cmd, dlq_usage, subs[i].allowed | A_URLS, &argc, argv)))
		return rc < 0 ? 0 : rc;
	if (subs[i].args >= 0 && argc - 1 != subs[i].args)
		return au_cli_usage(dlq_usage, subs[i].args ? "%s takes one computation ID" :
				       "%s takes no arguments", cmd);
	if (!(q = au_cli_open_queue(&a.cfg, &rc)))
		return rc;
	switch (i) {
	case 0: rc = dlq_list(&a, q); break;
	case 1: rc = dlq_show(&a, q, argv[1]); break;
	case 2: rc = dlq_requeue(&a, q, argc, argv); break;
	default: rc = dlq_purge(&a, q); break;
	}
	au_queue_close(q);
	return rc;
}

/* ---- au queue ---- */

int au_cli_queue(const struct au_config *cfg, int argc, char **argv)
{
	static const struct { const char *name; unsigned allowed; } subs[] = {
		{ "pause", 0 }, { "resume", 0 }, { "empty", A_JSON }, { "delete", A_FORCE },
	};
	struct admin a = { .cfg = *cfg };
	struct au_queue *q;
	const char *name;
	size_t i, removed = 0;
	char cmd[32];
	int rc = 0, r;

	if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") ||
	    !strcmp(argv[1], "help")) {
		fputs(queue_usage, argc < 2 ? stderr : stdout);
		return argc < 2 ? EXIT_USAGE : 0;
	}
	for (i = 0; i < AU_ARRAY_SIZE(subs) && strcmp(subs[i].name, argv[1]); i++)
		;
	if (i == AU_ARRAY_SIZE(subs))
		return au_cli_usage(queue_usage, "unknown command 'queue %s'", argv[1]);
	snprintf(cmd, sizeof(cmd), "queue %s", subs[i].name);
	argc--;
	argv++;
	if ((rc = parse(&a, cmd, queue_usage, subs[i].allowed | A_URLS, &argc, argv)))
		return rc < 0 ? 0 : rc;
	if (argc != 2)
		return au_cli_usage(queue_usage, "%s takes one queue NAME", cmd);
	name = argv[1];
	if (!*name)
		return au_cli_usage(queue_usage, "%s: empty queue name", cmd);
	if (!(q = au_cli_open_queue(&a.cfg, &rc)))
		return rc;
	/* pausing a queue before its first push is fine; emptying or deleting
	 * a name nobody used is most likely a typo */
	if (i >= 2 && (r = known(q, name)) <= 0) {
		if (r < 0)
			rc = au_cli_fail(&q->err);
		else
			fprintf(stderr, "au: unknown queue '%s'\n", name);
		au_queue_close(q);
		return rc ? rc : EXIT_UNKNOWN;
	}
	switch (i) {
	case 0:
	case 1:
		if (au_queue_pause(q, name, i == 0) < 0)
			rc = au_cli_fail(&q->err);
		else
			printf("%s queue '%s'\n", i == 0 ? "paused" : "resumed", name);
		break;
	case 2:
		if (au_queue_empty(q, name, &removed) < 0)
			rc = au_cli_fail(&q->err);
		else if (a.json)
			printf("{\"queue\":\"%s\",\"removed\":%zu}\n", name, removed);
		else
			printf("removed %zu waiting from queue '%s'\n", removed, name);
		break;
	default:
		if (au_queue_drop(q, name, a.force) == 0) {
			printf("deleted queue '%s'\n", name);
		} else if (q->err.code == AU_ESTATE && !a.force) {
			fprintf(stderr, "au: %s: use --force to delete them with it\n", q->err.str);
			rc = EXIT_FAILED;
		} else {
			rc = au_cli_fail(&q->err);
		}
		break;
	}
	au_queue_close(q);
	return rc;
}

/* ---- au queues ---- */

/* One table (or JSON lines) of every queue's counts. */
static int queues_once(const struct admin *a, struct au_queue *q)
{
	struct au_queue_stats st, sum;
	char **names = NULL;
	size_t n = 0, i;
	int rc = 0;

	if (queues_of(q, NULL, &names, &n) < 0)
		return au_cli_fail(&q->err);
	memset(&sum, 0, sizeof(sum));
	if (!a->json)
		printf("%-24s %10s %10s %10s %10s %6s %12s %10s %8s\n", "queue", "ready", "scheduled",
		       "running", "dead", "paused", "processed", "failed", "per_min");
	for (i = 0; i < n; i++) {
		memset(&st, 0, sizeof(st));
		if (au_queue_stats(q, names[i], &st) < 0) {
			rc = au_cli_fail(&q->err);
			break;
		}
		sum.ready += st.ready;
		sum.scheduled += st.scheduled;
		sum.leased += st.leased;
		sum.dead += st.dead;
		sum.processed += st.processed;
		sum.failed += st.failed;
		sum.per_minute += st.per_minute;
		if (a->json) {
			json_t *o = json_object();

			json_object_set_new(o, "queue", json_string(names[i]));
			json_object_set_new(o, "ready", json_integer((json_int_t)st.ready));
			json_object_set_new(o, "scheduled", json_integer((json_int_t)st.scheduled));
			json_object_set_new(o, "running", json_integer((json_int_t)st.leased));
			json_object_set_new(o, "dead", json_integer((json_int_t)st.dead));
			json_object_set_new(o, "paused", json_boolean(st.paused));
			json_object_set_new(o, "processed", json_integer((json_int_t)st.processed));
			json_object_set_new(o, "failed", json_integer((json_int_t)st.failed));
			json_object_set_new(o, "per_minute", json_integer((json_int_t)st.per_minute));
			print_json(o);
		} else {
			printf("%-24s %10llu %10llu %10llu %10llu %6s %12llu %10llu %8llu\n", names[i],
			       (unsigned long long)st.ready, (unsigned long long)st.scheduled,
			       (unsigned long long)st.leased, (unsigned long long)st.dead,
			       st.paused ? "yes" : "no", (unsigned long long)st.processed,
			       (unsigned long long)st.failed, (unsigned long long)st.per_minute);
		}
	}
	if (!a->json && !rc && n > 1)
		printf("%-24s %10llu %10llu %10llu %10llu %6s %12llu %10llu %8llu\n", "(total)",
		       (unsigned long long)sum.ready, (unsigned long long)sum.scheduled,
		       (unsigned long long)sum.leased, (unsigned long long)sum.dead, "",
		       (unsigned long long)sum.processed, (unsigned long long)sum.failed,
		       (unsigned long long)sum.per_minute);
	names_free(names, n);
	return rc;
}

static volatile sig_atomic_t interrupted;

static void on_interrupt(int sig)
{
	(void)sig;
	interrupted = 1;
}

/* --watch: the table every interval, on a cleared screen when stdout is a
 * terminal, until SIGINT or SIGTERM (exit 0). */
static int queues_watch(const struct admin *a, struct au_queue *q, uint64_t interval_ms)
{
	struct sigaction sa;
	int tty = isatty(STDOUT_FILENO), rc = 0;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_interrupt;   /* no SA_RESTART: the nap ends at once */
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	while (!interrupted) {
		struct timespec ts = { (time_t)(interval_ms / 1000), (long)(interval_ms % 1000) * 1000000L };
		char when[32];
		time_t now = time(NULL);

		strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
		printf("%sau queues, every %.1f s (Ctrl-C stops), %s\n", tty ? "\033[H\033[J" : "",
		       (double)interval_ms / 1000, when);
		/* a server away is shown and watched on; anything else ends it */
		if ((rc = queues_once(a, q)) != 0 && q->err.code != AU_ECONN)
			break;
		rc = 0;
		printf("\n");
		fflush(stdout);
		nanosleep(&ts, NULL);
	}
	return rc;
}

int au_cli_queues(const struct au_config *cfg, int argc, char **argv)
{
	struct admin a = { .cfg = *cfg };
	struct au_queue *q;
	uint64_t interval = 2000;
	struct au_err err;
	int rc;

	if ((rc = parse(&a, "queues", queues_usage, A_JSON | A_URLS | A_WATCH | A_INTERVAL, &argc,
			argv)))
		return rc < 0 ? 0 : rc;
	if (argc != 1)
		return au_cli_usage(queues_usage, "queues takes no arguments");
	if (a.interval && !a.watch)
		return au_cli_usage(queues_usage, "option '--interval' applies only with --watch");
	if (a.watch && a.json)
		return au_cli_usage(queues_usage, "--watch prints the table: it takes no --json");
	if (a.interval && (au_duration_parse(a.interval, &interval, &err) < 0 || interval < 100 ||
			   interval > 86400000))
		return au_cli_usage(queues_usage, "invalid value '%s' for --interval: expected a "
				    "duration from 100ms to 1d (500ms, 2s, 1m; a bare number is "
				    "seconds)", a.interval);
	if (!(q = au_cli_open_queue(&a.cfg, &rc)))
		return rc;
	rc = a.watch ? queues_watch(&a, q, interval) : queues_once(&a, q);
	au_queue_close(q);
	return rc;
}
