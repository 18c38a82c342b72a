/*
 * stats.c - `au stats [--json]` (cli/stats.h): the figures of the whole
 * fleet, per task and queue, summed over the live entries of the worker
 * registry (every machine that beats to this queue's server). A worker
 * with the metrics middleware on (--metrics-addr) sends its figures with
 * each beat (middleware/metrics.h); one without it counts in a row of its
 * own, "(all tasks)", from the counts every beat carries.
 *
 * Percentiles come from the summed histogram buckets, interpolated
 * linearly inside the bucket they fall in; one in the last bucket (over
 * the last bound) is shown as that bound, with ">".
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cli.h"
#include "metrics.h"
#include "queue.h"
#include "stats.h"

static const char stats_usage[] =
	"usage: au stats [--json]\n"
	"\n"
	"The figures of every live worker of the queue's server, on every machine,\n"
	"summed per task and queue: completed, failed, retried, dead, in flight\n"
	"now, the median and 95th percentile of the run time and the 95th\n"
	"percentile of the queue wait. Workers report every 2 s; those run with\n"
	"--metrics-addr send their figures, the others count in a row '(all\n"
	"tasks)' from their totals. --json: one object a line.\n"
	"\n"
	"options:\n"
	"  --json                   print JSON for a script to parse\n"
	"\n"
	"every command also takes:\n"
	"  --queue-url URL          the queue (default: AU_QUEUE, " AU_DEFAULT_QUEUE_URL ")\n"
	"  --config FILE            KEY=VALUE settings (default: AU_CONFIG)\n"
	"\n"
	"example: au stats --json\n";

enum { S_JSON = 1, S_QUEUE_URL, S_STORE_URL, S_CH, S_CONFIG };

static const struct option stats_options[] = {
	{ "json", no_argument, NULL, S_JSON },
	{ "queue-url", required_argument, NULL, S_QUEUE_URL },
	{ "store-url", required_argument, NULL, S_STORE_URL },
	{ "clickhouse", required_argument, NULL, S_CH },
	{ "config", required_argument, NULL, S_CONFIG },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 }
};

#define NB (AU_METRICS_NBOUNDS + 1)

struct row {
	char task[128], queue[256];
	unsigned workers;
	int from_beat;               /* a worker without metrics: its totals only */
	uint64_t completed, failed, retried, dead, cancelled, in_flight, rows, bytes;
	uint64_t run[NB], wait[NB];
};

struct table {
	struct row *rows;
	size_t n, cap;
};

static struct row *row_of(struct table *t, const char *task, const char *queue, int from_beat)
{
	size_t i;

	for (i = 0; i < t->n; i++)
		if (t->rows[i].from_beat == from_beat && !strcmp(t->rows[i].task, task) &&
		    !strcmp(t->rows[i].queue, queue))
			return &t->rows[i];
	if (t->n == t->cap) {
		size_t cap = t->cap ? 2 * t->cap : 16;
		struct row *r = realloc(t->rows, cap * sizeof(*r));

		if (!r)
			return NULL;
		t->rows = r;
		t->cap = cap;
	}
	memset(&t->rows[t->n], 0, sizeof(t->rows[0]));
	snprintf(t->rows[t->n].task, sizeof(t->rows[0].task), "%s", task);
	snprintf(t->rows[t->n].queue, sizeof(t->rows[0].queue), "%s", queue);
	t->rows[t->n].from_beat = from_beat;
	return &t->rows[t->n++];
}

static uint64_t u64_at(const json_t *a, size_t i)
{
	json_int_t v = json_integer_value(json_array_get(a, i));

	return v > 0 ? (uint64_t)v : 0;
}

static void add_hist(uint64_t *dst, const json_t *h)
{
	size_t k;

	for (k = 0; k < NB && k < json_array_size(h); k++)
		dst[k] += u64_at(h, k);
}

/* The figures of one worker's blob into t; -1 if it has none readable
 * (then its beat's totals stand for it). */
static int add_blob(struct table *t, const struct au_worker_beat *b)
{
	struct au_err err;
	json_t *j = NULL, *s, *one;
	size_t i;

	if (!b->metrics_len || au_msgpack_to_jansson(b->metrics, b->metrics_len, &j, &err) < 0)
		return -1;
	s = json_object_get(j, "s");
	if (json_integer_value(json_object_get(j, "v")) != 1 || !json_is_array(s)) {
		json_decref(j);
		return -1;
	}
	json_array_foreach(s, i, one) {
		const char *task = json_string_value(json_array_get(one, 0));
		const char *queue = json_string_value(json_array_get(one, 1));
		struct row *r;

		if (!task || !queue || !(r = row_of(t, task, queue, 0)))
			continue;
		r->workers++;
		r->completed += u64_at(one, 3);
		r->failed += u64_at(one, 4);
		r->retried += u64_at(one, 5);
		r->dead += u64_at(one, 6);
		r->cancelled += u64_at(one, 7);
		r->in_flight += u64_at(one, 8);
		r->rows += u64_at(one, 9);
		r->bytes += u64_at(one, 10);
		add_hist(r->run, json_array_get(one, 12));
		add_hist(r->wait, json_array_get(one, 14));
	}
	json_decref(j);
	return 0;
}

static void add_beat(struct table *t, const struct au_worker_beat *b)
{
	struct row *r = row_of(t, "(all tasks)", b->queues, 1);

	if (!r)
		return;
	r->workers++;
	r->completed += b->completed;
	r->failed += b->failed;
	r->retried += b->retried;
	r->in_flight += b->running;
}

/* The q-quantile of the buckets in seconds; -1 for no observation. *over
 * when it lies past the last bound. */
static double quantile(const uint64_t *h, double q, int *over)
{
	uint64_t total = 0, cum = 0;
	double rank, lo, hi;
	size_t k;

	*over = 0;
	for (k = 0; k < NB; k++)
		total += h[k];
	if (!total)
		return -1;
	rank = q * (double)total;
	for (k = 0; k < NB; k++) {
		if ((double)(cum + h[k]) >= rank && h[k])
			break;
		cum += h[k];
	}
	if (k >= AU_METRICS_NBOUNDS) {
		*over = 1;
		return (double)au_metrics_bounds_us[AU_METRICS_NBOUNDS - 1] / 1e6;
	}
	lo = k ? (double)au_metrics_bounds_us[k - 1] : 0;
	hi = (double)au_metrics_bounds_us[k];
	return (lo + (hi - lo) * ((rank - (double)cum) / (double)h[k])) / 1e6;
}

static const char *shown(char *buf, size_t size, const uint64_t *h, double q, int beat_only)
{
	int over;
	double s = beat_only ? -1 : quantile(h, q, &over);

	if (s < 0)
		snprintf(buf, size, "-");
	else if (s < 1)
		snprintf(buf, size, "%s%.1fms", over ? ">" : "", s * 1000);
	else
		snprintf(buf, size, "%s%.2fs", over ? ">" : "", s);
	return buf;
}

static void print_json(const struct row *r)
{
	json_t *o = json_object();
	char *text;
	int over;
	double v;

	json_object_set_new(o, "task", json_string(r->task));
	json_object_set_new(o, "queue", json_string(r->queue));
	json_object_set_new(o, "workers", json_integer(r->workers));
	json_object_set_new(o, "metrics", json_boolean(!r->from_beat));
	json_object_set_new(o, "completed", json_integer((json_int_t)r->completed));
	json_object_set_new(o, "failed", json_integer((json_int_t)r->failed));
	json_object_set_new(o, "retried", json_integer((json_int_t)r->retried));
	if (!r->from_beat) {
		json_object_set_new(o, "dead", json_integer((json_int_t)r->dead));
		json_object_set_new(o, "cancelled", json_integer((json_int_t)r->cancelled));
	}
	json_object_set_new(o, "in_flight", json_integer((json_int_t)r->in_flight));
	if (!r->from_beat) {
		v = quantile(r->run, 0.5, &over);
		json_object_set_new(o, "run_p50_s", v < 0 ? json_null() : json_real(v));
		v = quantile(r->run, 0.95, &over);
		json_object_set_new(o, "run_p95_s", v < 0 ? json_null() : json_real(v));
		v = quantile(r->wait, 0.95, &over);
		json_object_set_new(o, "wait_p95_s", v < 0 ? json_null() : json_real(v));
		json_object_set_new(o, "ch_read_rows", json_integer((json_int_t)r->rows));
		json_object_set_new(o, "ch_read_bytes", json_integer((json_int_t)r->bytes));
	}
	text = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(6));
	printf("%s\n", text ? text : "{}");
	free(text);
	json_decref(o);
}

int au_cli_stats(const struct au_config *cfg, int argc, char **argv)
{
	struct au_config conf = *cfg;
	struct au_worker_beat *all = NULL;
	struct table t = { NULL, 0, 0 };
	const char *config = NULL;
	struct au_queue *q;
	size_t n = 0, i;
	int json = 0, rc = 0, o;

	optind = 0;
	opterr = 0;
	while ((o = getopt_long(argc, argv, "h", stats_options, NULL)) != -1) {
		switch (o) {
		case 'h':
			fputs(stats_usage, stdout);
			return 0;
		case S_JSON: json = 1; break;
		case S_QUEUE_URL: conf.queue_url = optarg; break;
		case S_STORE_URL: conf.store_url = optarg; break;
		case S_CH: conf.clickhouse_url = optarg; break;
		case S_CONFIG: config = optarg; break;
		default:
			return au_cli_usage(stats_usage, "unknown option '%s' for 'stats'",
					    argv[optind - 1]);
		}
	}
	if (optind < argc)
		return au_cli_usage(stats_usage, "stats takes no arguments");
	if (au_cli_config(&conf, config) < 0)
		return EXIT_USAGE;
	if (!(q = au_cli_open_queue(&conf, &rc)))
		return rc;
	if (au_queue_workers(q, &all, &n) < 0) {
		rc = au_cli_fail(&q->err);
		goto out;
	}
	for (i = 0; i < n; i++)
		if (add_blob(&t, &all[i]) < 0)
			add_beat(&t, &all[i]);
	if (!json)
		printf("%-24s %-16s %7s %9s %7s %7s %5s %9s %9s %9s %9s\n", "task", "queue", "workers",
		       "completed", "failed", "retried", "dead", "in_flight", "run_p50", "run_p95",
		       "wait_p95");
	for (i = 0; i < t.n; i++) {
		const struct row *r = &t.rows[i];
		char p50[24], p95[24], w95[24], dead[24];

		if (json) {
			print_json(r);
			continue;
		}
		if (r->from_beat)
			snprintf(dead, sizeof(dead), "-");
		else
			snprintf(dead, sizeof(dead), "%llu", (unsigned long long)r->dead);
		printf("%-24s %-16s %7u %9llu %7llu %7llu %5s %9llu %9s %9s %9s\n", r->task, r->queue,
		       r->workers, (unsigned long long)r->completed, (unsigned long long)r->failed,
		       (unsigned long long)r->retried, dead, (unsigned long long)r->in_flight,
		       shown(p50, sizeof(p50), r->run, 0.5, r->from_beat),
		       shown(p95, sizeof(p95), r->run, 0.95, r->from_beat),
		       shown(w95, sizeof(w95), r->wait, 0.95, r->from_beat));
	}
	if (!json)
		printf("%zu live worker%s\n", n, n == 1 ? "" : "s");
out:
	free(t.rows);
	free(all);
	au_queue_close(q);
	return rc;
}
