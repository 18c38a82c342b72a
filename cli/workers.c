/*
 * workers.c - `au workers [--json]` and `au worker stop ID` (cli/workers.h):
 * the live entries of the worker registry, and a request to one worker to
 * drain, which its next beat hears (within AU_BEAT_EVERY_MS).
 */
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cli.h"
#include "queue.h"
#include "workers.h"

static const char workers_usage[] =
	"usage: au workers [--json]\n"
	"\n"
	"The live worker processes of the queue's server, oldest first: id, host,\n"
	"pid, queues, state (running, paused while a server it needs is away,\n"
	"draining), computations running now, completed and failed, when it\n"
	"started and when it last reported. A worker reports every 2 s; one that\n"
	"has not for 6 s (it died) is no longer listed. --json: one object a line,\n"
	"with the ids of what runs and every count.\n";

static const char stop_usage[] =
	"usage: au worker stop ID\n"
	"\n"
	"Asks the worker ID (as 'au workers' lists it) to drain: it leases nothing\n"
	"more, finishes what runs within its grace period, and exits 0, as on\n"
	"SIGTERM. It hears it within 2 s, wherever it runs.\n";


enum { W_JSON = 1, W_QUEUE_URL, W_STORE_URL, W_CH, W_CONFIG };

static const struct option workers_options[] = {
	{ "json", no_argument, NULL, W_JSON },
	{ "queue-url", required_argument, NULL, W_QUEUE_URL },
	{ "store-url", required_argument, NULL, W_STORE_URL },
	{ "clickhouse", required_argument, NULL, W_CH },
	{ "config", required_argument, NULL, W_CONFIG },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 }
};

/* Options after the command; positional arguments to argv[1..*argc).
 * -1 after printing the help (exit 0), else 0 or an exit code. */
static int parse(struct au_config *cfg, int *json, const char *cmd, const char *text,
		 int *argc, char **argv)
{
	const char *config = NULL;
	int o, n = 1, i;

	optind = 0;
	opterr = 0;
	while ((o = getopt_long(*argc, argv, "h", workers_options, NULL)) != -1) {
		switch (o) {
		case 'h':
			fputs(text, stdout);
			return -1;
		case W_JSON:
			if (!json)
				return au_cli_usage(text, "option '--json' does not apply to '%s'", cmd);
			*json = 1;
			break;
		case W_QUEUE_URL: cfg->queue_url = optarg; break;
		case W_STORE_URL: cfg->store_url = optarg; break;
		case W_CH: cfg->clickhouse_url = optarg; break;
		case W_CONFIG: config = optarg; break;
		default:
			return au_cli_usage(text, "unknown option '%s' for '%s'", argv[optind - 1], cmd);
		}
	}
	for (i = optind; i < *argc; i++)
		argv[n++] = argv[i];
	*argc = n;
	return au_cli_config(cfg, config) < 0 ? EXIT_USAGE : 0;
}

/* "4s", "12m", "3h", "2d": ms as a person reads an age. */
static const char *ago(char *buf, size_t size, uint64_t ms)
{
	uint64_t s = ms / 1000;

	if (ms < 1000)
		snprintf(buf, size, "%llums", (unsigned long long)ms);
	else if (s < 120)
		snprintf(buf, size, "%llus", (unsigned long long)s);
	else if (s < 7200)
		snprintf(buf, size, "%llum", (unsigned long long)(s / 60));
	else if (s < 172800)
		snprintf(buf, size, "%lluh", (unsigned long long)(s / 3600));
	else
		snprintf(buf, size, "%llud", (unsigned long long)(s / 86400));
	return buf;
}

static const char *state_text(char *buf, size_t size, const struct au_worker_beat *b)
{
	if (b->state == AU_BEAT_PAUSED && b->paused_by[0])
		snprintf(buf, size, "paused(%s)", b->paused_by);
	else
		snprintf(buf, size, "%s", au_beat_state_name(b->state));
	return buf;
}

static json_t *beat_json(const struct au_worker_beat *b, uint64_t now)
{
	json_t *o = json_object(), *ids = json_array();
	uint32_t i;

	for (i = 0; i < b->nids; i++)
		json_array_append_new(ids, json_string(b->ids[i]));
	json_object_set_new(o, "id", json_string(b->id));
	json_object_set_new(o, "host", json_string(b->host));
	json_object_set_new(o, "pid", json_integer(b->pid));
	json_object_set_new(o, "queues", json_string(b->queues));
	json_object_set_new(o, "version", json_string(b->version));
	json_object_set_new(o, "state", json_string(au_beat_state_name(b->state)));
	if (b->paused_by[0])
		json_object_set_new(o, "paused_by", json_string(b->paused_by));
	json_object_set_new(o, "concurrency", json_integer(b->concurrency));
	json_object_set_new(o, "running", json_integer(b->running));
	json_object_set_new(o, "running_ids", ids);
	json_object_set_new(o, "leased", json_integer((json_int_t)b->leased));
	json_object_set_new(o, "completed", json_integer((json_int_t)b->completed));
	json_object_set_new(o, "failed", json_integer((json_int_t)b->failed));
	json_object_set_new(o, "retried", json_integer((json_int_t)b->retried));
	json_object_set_new(o, "released", json_integer((json_int_t)b->released));
	json_object_set_new(o, "outages", json_integer((json_int_t)b->outages));
	json_object_set_new(o, "started_at_ms", json_integer((json_int_t)b->started_ms));
	json_object_set_new(o, "uptime_ms",
			    json_integer((json_int_t)(now > b->started_ms ? now - b->started_ms : 0)));
	json_object_set_new(o, "beat_at_ms", json_integer((json_int_t)b->beat_at_ms));
	json_object_set_new(o, "beat_age_ms", json_integer((json_int_t)b->age_ms));
	json_object_set_new(o, "ttl_ms", json_integer(b->ttl_ms));
	return o;
}

int au_cli_workers(const struct au_config *cfg, int argc, char **argv)
{
	struct au_config conf = *cfg;
	struct au_worker_beat *all = NULL;
	struct au_queue *q;
	uint64_t now;
	size_t n = 0, i;
	int json = 0, rc = 0;

	if ((rc = parse(&conf, &json, "workers", workers_usage, &argc, argv)))
		return rc < 0 ? 0 : rc;
	if (argc > 1)
		return au_cli_usage(workers_usage, "workers takes no arguments");
	if (!(q = au_cli_open_queue(&conf, &rc)))
		return rc;
	if (au_queue_workers(q, &all, &n) < 0) {
		rc = au_cli_fail(&q->err);
		goto out;
	}
	now = au_now_ms();
	if (!json)
		printf("%-36s %-16s %7s %-16s %-14s %7s %9s %7s %8s %6s\n", "id", "host", "pid",
		       "queues", "state", "running", "completed", "failed", "started", "beat");
	for (i = 0; i < n; i++) {
		const struct au_worker_beat *b = &all[i];
		char st[64], up[16], beat[16];

		if (json) {
			json_t *o = beat_json(b, now);
			char *text = json_dumps(o, JSON_COMPACT);

			printf("%s\n", text ? text : "{}");
			free(text);
			json_decref(o);
			continue;
		}
		printf("%-36s %-16s %7u %-16s %-14s %7u %9llu %7llu %8s %6s\n", b->id, b->host,
		       (unsigned)b->pid, b->queues, state_text(st, sizeof(st), b), (unsigned)b->running,
		       (unsigned long long)b->completed, (unsigned long long)b->failed,
		       ago(up, sizeof(up), now > b->started_ms ? now - b->started_ms : 0),
		       ago(beat, sizeof(beat), b->age_ms));
	}
out:
	free(all);
	au_queue_close(q);
	return rc;
}

int au_cli_worker_stop(const struct au_config *cfg, int argc, char **argv)
{
	struct au_config conf = *cfg;
	struct au_queue *q;
	int rc = 0;

	/* argv[0] "worker", argv[1] "stop" */
	argc--;
	argv++;
	if ((rc = parse(&conf, NULL, "worker stop", stop_usage, &argc, argv)))
		return rc < 0 ? 0 : rc;
	if (argc != 2)
		return au_cli_usage(stop_usage, "worker stop takes one worker ID");
	if (!(q = au_cli_open_queue(&conf, &rc)))
		return rc;
	if (au_queue_worker_stop(q, argv[1]) < 0)
		rc = au_cli_fail(&q->err);
	else
		printf("asked worker '%s' to stop\n", argv[1]);
	au_queue_close(q);
	return rc;
}
