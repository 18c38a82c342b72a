/*
 * lineage.c - `au lineage` (cli/lineage.h). ClickHouse 18.16 has no WITH
 * RECURSIVE, so the walk is one query a level: the latest row of
 * au_operation_log for each table of the level (argMax by at_ms: a table
 * made again, or by a retried attempt, shows its last making), then the
 * inputs of those rows (or, forward, their outputs) are the next level.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "ch_ops.h"
#include "cli.h"
#include "clickhouse.h"
#include "lineage.h"

static const char lineage_usage[] =
	"usage: au lineage TABLE [--depth N] [--forward] [--json]\n"
	"\n"
	"The ch.op operations that made TABLE, from au_operation_log: the one that\n"
	"made it, those that made its inputs, and so on, as an indented tree\n"
	"(operation, output, inputs, computation, time). --forward: what was made\n"
	"from TABLE instead. --depth N: N levels at most (default 10). --json: an\n"
	"array of {operation, output, inputs, computation, flow, attempt, at_ms,\n"
	"depth}. Exit 3 when no operation is recorded for TABLE.\n"
	"\n"
	"options:\n"
	"  --depth N                levels to walk (default 10)\n"
	"  --forward                what was made from TABLE\n"
	"  --json                   print JSON for a script to parse\n"
	"\n"
	"every command also takes:\n"
	"  --clickhouse URL         ClickHouse (default: AU_CLICKHOUSE, " AU_DEFAULT_CLICKHOUSE_URL ")\n"
	"  --config FILE            KEY=VALUE settings (default: AU_CONFIG)\n"
	"\n"
	"example: au lineage p_report --depth 3\n";

enum { L_JSON = 1, L_DEPTH, L_FORWARD, L_QUEUE_URL, L_STORE_URL, L_CH, L_CONFIG };

static const struct option lineage_options[] = {
	{ "json", no_argument, NULL, L_JSON },
	{ "depth", required_argument, NULL, L_DEPTH },
	{ "forward", no_argument, NULL, L_FORWARD },
	{ "queue-url", required_argument, NULL, L_QUEUE_URL },
	{ "store-url", required_argument, NULL, L_STORE_URL },
	{ "clickhouse", required_argument, NULL, L_CH },
	{ "config", required_argument, NULL, L_CONFIG },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 }
};

#define NAME_MAX_LEN 160

/* One level: the latest row for each table of names (backward) or each
 * row with one of names among its inputs (forward), appended to rows as
 * objects with their depth. */
static int level(struct au_clickhouse *ch, json_t *names, int forward, int depth, json_t *rows,
		 struct au_err *err)
{
	json_t *p = json_pack("{sO}", "t", names), *doc, *data, *r;
	struct au_ch_query q = { .timeout_ms = 30000 };
	struct au_ch_response resp;
	char *sql;
	size_t i;
	int rc = -1;

	sql = au_sql_bind(forward ?
			  "SELECT output, argMax(operation, at_ms), argMax(inputs, at_ms), "
			  "argMax(computation, at_ms), argMax(flow, at_ms), argMax(attempt, at_ms), "
			  "max(at_ms) FROM au_operation_log WHERE hasAny(inputs, {t:Array(String)}) "
			  "GROUP BY output ORDER BY max(at_ms) FORMAT JSONCompact" :
			  "SELECT output, argMax(operation, at_ms), argMax(inputs, at_ms), "
			  "argMax(computation, at_ms), argMax(flow, at_ms), argMax(attempt, at_ms), "
			  "max(at_ms) FROM au_operation_log WHERE has({t:Array(String)}, output) "
			  "GROUP BY output ORDER BY max(at_ms) FORMAT JSONCompact", p, err);
	json_decref(p);
	if (!sql)
		return -1;
	q.sql = sql;
	if (au_ch_query_sync(ch, &q, &resp) < 0) {
		*err = resp.err;
		goto out;
	}
	doc = json_loadb((const char *)resp.body.data, resp.body.len, 0, NULL);
	data = json_object_get(doc, "data");
	if (!json_is_array(data)) {
		json_decref(doc);
		au_seterr(err, AU_EPROTO, "unexpected answer from clickhouse");
		goto out;
	}
	json_array_foreach(data, i, r) {
		const json_t *att = json_array_get(r, 5), *at = json_array_get(r, 6);

		json_array_append_new(rows, json_pack(
			"{sO sO sO sO sO sI sI si}", "operation", json_array_get(r, 1),
			"output", json_array_get(r, 0), "inputs", json_array_get(r, 2),
			"computation", json_array_get(r, 3), "flow", json_array_get(r, 4),
			"attempt", json_is_integer(att) ? json_integer_value(att) :
				(json_int_t)strtoll(json_string_value(att) ? json_string_value(att) : "0", NULL, 10),
			"at_ms", json_is_integer(at) ? json_integer_value(at) :
				(json_int_t)strtoll(json_string_value(at) ? json_string_value(at) : "0", NULL, 10),
			"depth", depth));
	}
	json_decref(doc);
	rc = 0;
out:
	au_ch_response_release(&resp);
	free(sql);
	return rc;
}

static const json_t *row_of(const json_t *rows, const char *output)
{
	const json_t *r;
	size_t i;

	json_array_foreach(rows, i, r)
		if (!strcmp(json_string_value(json_object_get(r, "output")), output))
			return r;
	return NULL;
}

static void print_row(const json_t *r, int indent)
{
	const json_t *in;
	json_int_t at = json_integer_value(json_object_get(r, "at_ms"));
	time_t s = (time_t)(at / 1000);
	struct tm tm;
	char when[32];
	size_t i;

	gmtime_r(&s, &tm);
	strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", &tm);
	printf("%*s%s <- %s(", indent * 2, "", json_string_value(json_object_get(r, "output")),
	       json_string_value(json_object_get(r, "operation")));
	json_array_foreach(json_object_get(r, "inputs"), i, in)
		printf("%s%s", i ? ", " : "", json_string_value(in));
	printf(")  computation %s  at %s.%03d\n", json_string_value(json_object_get(r, "computation")),
	       when, (int)(at % 1000));
}

static int in_inputs(const json_t *r, const char *table)
{
	const json_t *in;
	size_t i;

	json_array_foreach(json_object_get(r, "inputs"), i, in)
		if (!strcmp(json_string_value(in), table))
			return 1;
	return 0;
}

/* The tree below table, as far as the rows go. */
static void print_tree(const json_t *rows, const char *table, int forward, int depth, int max,
		       json_t *shown)
{
	const json_t *r, *in;
	size_t i;

	if (depth > max)
		return;
	if (forward) {
		json_array_foreach(rows, i, r) {
			const char *out = json_string_value(json_object_get(r, "output"));

			if (!in_inputs(r, table))
				continue;
			if (json_object_get(shown, out)) {
				printf("%*s%s (shown above)\n", (depth - 1) * 2, "", out);
				continue;
			}
			json_object_set_new(shown, out, json_true());
			print_row(r, depth - 1);
			print_tree(rows, out, forward, depth + 1, max, shown);
		}
		return;
	}
	if (!(r = row_of(rows, table))) {
		printf("%*s%s (no operation recorded)\n", (depth - 1) * 2, "", table);
		return;
	}
	if (json_object_get(shown, table)) {
		printf("%*s%s (shown above)\n", (depth - 1) * 2, "", table);
		return;
	}
	json_object_set_new(shown, table, json_true());
	print_row(r, depth - 1);
	json_array_foreach(json_object_get(r, "inputs"), i, in)
		if (depth < max)
			print_tree(rows, json_string_value(in), forward, depth + 1, max, shown);
}

int au_cli_lineage(const struct au_config *cfg, int argc, char **argv)
{
	struct au_config conf = *cfg;
	const char *config = NULL, *table;
	struct au_clickhouse *ch = NULL;
	struct au_err err = { 0, "" };
	json_t *rows = NULL, *seen = NULL, *names = NULL, *shown = NULL;
	long depth = 10;
	int json = 0, forward = 0, rc = 0, o, d;
	char *end;

	optind = 0;
	opterr = 0;
	while ((o = getopt_long(argc, argv, "h", lineage_options, NULL)) != -1) {
		switch (o) {
		case 'h':
			fputs(lineage_usage, stdout);
			return 0;
		case L_JSON: json = 1; break;
		case L_FORWARD: forward = 1; break;
		case L_DEPTH:
			depth = strtol(optarg, &end, 10);
			if (*end || end == optarg || depth < 1 || depth > 1000)
				return au_cli_usage(lineage_usage, "--depth must be from 1 to 1000, not '%s'",
						    optarg);
			break;
		case L_QUEUE_URL: conf.queue_url = optarg; break;
		case L_STORE_URL: conf.store_url = optarg; break;
		case L_CH: conf.clickhouse_url = optarg; break;
		case L_CONFIG: config = optarg; break;
		default:
			return au_cli_usage(lineage_usage, "unknown option '%s' for 'lineage'",
					    argv[optind - 1]);
		}
	}
	if (optind + 1 != argc)
		return au_cli_usage(lineage_usage, "lineage takes one TABLE");
	table = argv[optind];
	if (!au_ch_name_valid(table, NAME_MAX_LEN))
		return au_cli_usage(lineage_usage, "'%s' is not a table name ([A-Za-z_][A-Za-z0-9_]*)",
				    table);
	if (au_cli_config(&conf, config) < 0)
		return EXIT_USAGE;
	au_config_from_env(&conf);
	if (!(ch = au_ch_new(conf.clickhouse_url, &err)))
		return err.code ? au_cli_fail(&err) : EXIT_FAILED;
	rows = json_array();
	seen = json_object();   /* tables asked about */
	shown = json_object();
	names = json_pack("[s]", table);
	json_object_set_new(seen, table, json_true());
	for (d = 1; d <= depth && json_array_size(names); d++) {
		size_t from = json_array_size(rows), i, k;
		json_t *next = json_array(), *r, *in;

		if (level(ch, names, forward, d, rows, &err) < 0) {
			json_decref(next);
			rc = au_cli_fail(&err);
			goto out;
		}
		for (i = from; i < json_array_size(rows); i++) {
			r = json_array_get(rows, i);
			if (forward) {
				const char *out = json_string_value(json_object_get(r, "output"));

				if (json_object_get(seen, out)) {   /* made again from a later level */
					json_array_remove(rows, i--);
					continue;
				}
				json_object_set_new(seen, out, json_true());
				json_array_append_new(next, json_string(out));
			} else {
				json_array_foreach(json_object_get(r, "inputs"), k, in)
					if (!json_object_get(seen, json_string_value(in))) {
						json_object_set_new(seen, json_string_value(in), json_true());
						json_array_append(next, in);
					}
			}
		}
		json_decref(names);
		names = next;
	}
	if (!json_array_size(rows)) {
		fprintf(stderr, "au: no operation in au_operation_log %s '%s'\n",
			forward ? "was made from" : "made", table);
		if (json)
			printf("[]\n");
		rc = EXIT_UNKNOWN;
		goto out;
	}
	if (json) {
		char *text = json_dumps(rows, JSON_COMPACT);

		printf("%s\n", text ? text : "[]");
		free(text);
	} else if (forward) {
		printf("%s\n", table);
		print_tree(rows, table, 1, 2, (int)depth + 1, shown);
	} else {
		print_tree(rows, table, 0, 1, (int)depth, shown);
	}
out:
	json_decref(rows);
	json_decref(seen);
	json_decref(names);
	json_decref(shown);
	au_ch_free(ch);
	return rc;
}
