/*
 * flow.c - `au flow run|show|list|cancel` (docs/flows.md): a flow from a
 * JSON file submitted in one call, drawn as a tree of its nodes with their
 * statuses, listed, cancelled. Exit 0 ok, 1 failed (a flow that did not
 * complete, for run --wait), 2 usage, 3 no such flow, 4 timed out, 5 a
 * server unreachable.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "cli.h"
#include "lineage.h"
#include "core.h"
#include "queue.h"

static const char flow_usage[] =
	"usage: au flow run FILE.json [--wait [DURATION]] [--json]\n"
	"       au flow show ID [--json]\n"
	"       au flow list [--json]\n"
	"       au flow cancel ID\n"
	"\n"
	"A flow is computations that wait for one another (docs/flows.md). FILE is\n"
	"  {\"name\": \"daily\", \"policy\": \"fail\", \"ttl\": \"1h\", \"nodes\": [\n"
	"    {\"name\": \"a\", \"task\": \"ch.op\", \"args\": {...}},\n"
	"    {\"name\": \"b\", \"task\": \"ch.op\", \"args\": {\"input\": {\"$table\": \"a\"}}, \"deps\": [\"a\"],\n"
	"     \"queue\": \"q\", \"priority\": 0, \"max_attempts\": 3, \"timeout\": \"30s\"}]}\n"
	"where {\"$ref\": NODE} and {\"$table\": NODE} name what another node produced\n"
	"(and make this one wait for it). policy: what a node that did not complete\n"
	"does to those waiting for it: fail (default), cancel, ignore, continue.\n"
	"run prints the flow's id; --wait waits for it to finish (exit 0 when it\n"
	"completed, 1 when not, 4 on timeout). show draws it as a tree from its\n"
	"roots: each node's status, attempts and time, and the children it added.\n"
	"cancel cancels every node not finished (running ones are stopped).\n"
	"\n"
	"options:\n"
	"  --wait [DURATION]        run: wait for the flow (default: without end)\n"
	"  --json                   print JSON for a script to parse\n"
	"\n"
	"every command also takes:\n"
	"  --queue-url URL          the queue (default: AU_QUEUE)\n"
	"  --store-url URL          the store (default: AU_STORE)\n"
	"  --config FILE            KEY=VALUE settings (default: AU_CONFIG)\n"
	"\n"
	"example: au flow run report.json --wait 10m && au flow show ID\n";

enum { F_JSON = 1, F_WAIT, F_QUEUE_URL, F_STORE_URL, F_CH, F_CONFIG };

static const struct option flow_options[] = {
	{ "json", no_argument, NULL, F_JSON },
	{ "wait", optional_argument, NULL, F_WAIT },
	{ "queue-url", required_argument, NULL, F_QUEUE_URL },
	{ "store-url", required_argument, NULL, F_STORE_URL },
	{ "clickhouse", required_argument, NULL, F_CH },
	{ "config", required_argument, NULL, F_CONFIG },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 }
};

static int failed(const struct au_err *err)
{
	return au_cli_fail(err);
}

/* ---- a node's state ---- */

struct nstate {
	const char *name, *id, *queue;
	enum au_status st;
	struct au_record rec;
	int have_rec;
};

static void look(struct au_client *cl, struct nstate *n)
{
	struct au_handle *h = au_handle_new(cl, n->id, n->queue);

	n->st = AU_UNKNOWN;
	au_record_init(&n->rec);
	if (!h)
		return;
	if (au_handle_status(h, &n->st) < 0)
		n->st = AU_UNKNOWN;
	if (au_status_terminal(n->st) && au_handle_result(h, &n->rec) == 0)
		n->have_rec = 1;
	au_handle_free(h);
}

static void print_duration(uint64_t ms)
{
	if (ms < 1000)
		printf("%llu ms", (unsigned long long)ms);
	else if (ms < 60000)
		printf("%.1f s", (double)ms / 1000);
	else
		printf("%.1f min", (double)ms / 60000);
}

/* ---- the description ---- */

static json_t *description(struct au_queue *q, const char *id, struct au_err *err)
{
	unsigned char *v = NULL;
	size_t len = 0;
	json_t *d = NULL;

	if (!au_id_valid(id)) {
		au_seterr(err, AU_EINVAL, "invalid flow id '%.40s'", id);
		return NULL;
	}
	if (au_queue_kv_get(q, "flow", id, &v, &len) < 0) {
		if (q->err.code == AU_ENOTFOUND)
			au_seterr(err, AU_ENOTFOUND, "no flow '%s' in '%s'", id, q->url.text);
		else
			*err = q->err;
		return NULL;
	}
	if (au_msgpack_to_jansson(v, len, &d, err) < 0 || !json_is_object(d) ||
	    !json_is_array(json_object_get(d, "nodes"))) {
		json_decref(d);
		d = NULL;
		if (!err->code)
			au_seterr(err, AU_EPROTO, "flow '%s': its description is not one au wrote", id);
	}
	free(v);
	return d;
}

/* ---- show ---- */

struct drawing {
	struct au_client *cl;
	json_t *nodes;
	struct nstate *ns;
	size_t n;
	char *shown;
};

static void draw_children_of(struct drawing *dr, size_t i, int depth);

static void draw_line(const struct nstate *n, int depth, const char *mark)
{
	printf("%*s%s  %s", depth * 2, "", n->name, au_status_name(n->st));
	if (n->have_rec) {
		printf("  attempts %u", n->rec.attempts);
		if (n->rec.finished_at_ms >= n->rec.started_at_ms && n->rec.started_at_ms) {
			printf("  ");
			print_duration(n->rec.finished_at_ms - n->rec.started_at_ms);
		}
	}
	printf("  %s%s\n", n->id, mark);
	if (n->have_rec && n->rec.error && *n->rec.error)
		printf("%*s  error: %s\n", depth * 2, "", n->rec.error);
}

static void draw(struct drawing *dr, size_t i, int depth)
{
	if (dr->shown[i]) {
		draw_line(&dr->ns[i], depth, "  (see above)");
		return;
	}
	dr->shown[i] = 1;
	draw_line(&dr->ns[i], depth, "");
	draw_children_of(dr, i, depth + 1);
}

/* The nodes that wait for node i, and the children it spawned. */
static void draw_children_of(struct drawing *dr, size_t i, int depth)
{
	const char *name = dr->ns[i].name;
	size_t k, d;

	for (k = 0; k < dr->n; k++) {
		json_t *deps = json_object_get(json_array_get(dr->nodes, k), "deps");

		for (d = 0; d < json_array_size(deps); d++)
			if (json_is_string(json_array_get(deps, d)) &&
			    !strcmp(json_string_value(json_array_get(deps, d)), name)) {
				draw(dr, k, depth);
				break;
			}
	}
	if (dr->ns[i].have_rec && dr->ns[i].rec.result_len) {
		json_t *res = NULL, *kids;

		if (au_msgpack_to_jansson(dr->ns[i].rec.result, dr->ns[i].rec.result_len, &res, NULL) == 0 &&
		    json_is_array(kids = json_object_get(res, "$children"))) {
			for (k = 0; k < json_array_size(kids); k++) {
				struct nstate c;

				memset(&c, 0, sizeof(c));
				c.name = "(child)";
				c.id = json_string_value(json_array_get(kids, k));
				c.queue = dr->ns[i].queue;
				if (!c.id)
					continue;
				if (k == 20 && json_array_size(kids) > 24) {
					printf("%*s... %zu more children\n", depth * 2, "",
					       json_array_size(kids) - 20);
					break;
				}
				look(dr->cl, &c);
				draw_line(&c, depth, "");
				au_record_release(&c.rec);
			}
		}
		json_decref(res);
	}
}

static int flow_show(struct au_client *cl, struct au_queue *q, const char *id, int json)
{
	struct au_err err = { 0, "" };
	json_t *d = description(q, id, &err), *nodes;
	struct drawing dr = { cl, NULL, NULL, 0, NULL };
	enum au_status all = AU_UNKNOWN;
	size_t i;

	if (!d)
		return failed(&err);
	nodes = json_object_get(d, "nodes");
	dr.nodes = nodes;
	dr.n = json_array_size(nodes);
	dr.ns = calloc(dr.n ? dr.n : 1, sizeof(*dr.ns));
	dr.shown = calloc(dr.n ? dr.n : 1, 1);
	for (i = 0; dr.ns && i < dr.n; i++) {
		json_t *nd = json_array_get(nodes, i);

		dr.ns[i].name = json_string_value(json_object_get(nd, "name"));
		dr.ns[i].id = json_string_value(json_object_get(nd, "id"));
		dr.ns[i].queue = json_string_value(json_object_get(nd, "queue"));
		if (!dr.ns[i].name)
			dr.ns[i].name = "?";
		if (dr.ns[i].id)
			look(cl, &dr.ns[i]);
	}
	au_flow_status(cl, id, &all, &err);
	if (json) {
		json_t *out = json_object(), *arr = json_array();

		json_object_set_new(out, "id", json_string(id));
		json_object_set(out, "name", json_object_get(d, "name"));
		json_object_set_new(out, "status", json_string(au_status_name(all)));
		for (i = 0; i < dr.n; i++) {
			json_t *o = json_object();

			json_object_set_new(o, "name", json_string(dr.ns[i].name));
			json_object_set_new(o, "id", json_string(dr.ns[i].id ? dr.ns[i].id : ""));
			json_object_set_new(o, "status", json_string(au_status_name(dr.ns[i].st)));
			json_object_set(o, "deps", json_object_get(json_array_get(nodes, i), "deps"));
			if (dr.ns[i].have_rec) {
				json_object_set_new(o, "attempts", json_integer(dr.ns[i].rec.attempts));
				json_object_set_new(o, "started_at", json_integer((json_int_t)dr.ns[i].rec.started_at_ms));
				json_object_set_new(o, "finished_at", json_integer((json_int_t)dr.ns[i].rec.finished_at_ms));
				if (dr.ns[i].rec.error)
					json_object_set_new(o, "error", json_string(dr.ns[i].rec.error));
			}
			json_array_append_new(arr, o);
		}
		json_object_set_new(out, "nodes", arr);
		json_dumpf(out, stdout, JSON_COMPACT);
		putchar('\n');
		json_decref(out);
	} else {
		printf("flow %s  %s  %s\n", json_string_value(json_object_get(d, "name")) ?
		       json_string_value(json_object_get(d, "name")) : "", id, au_status_name(all));
		for (i = 0; i < dr.n; i++)   /* from the roots */
			if (!json_array_size(json_object_get(json_array_get(nodes, i), "deps")))
				draw(&dr, i, 1);
		for (i = 0; i < dr.n; i++)   /* a cycle cannot be submitted, but say what is left */
			if (!dr.shown[i])
				draw(&dr, i, 1);
	}
	for (i = 0; i < dr.n; i++)
		au_record_release(&dr.ns[i].rec);
	free(dr.ns);
	free(dr.shown);
	json_decref(d);
	return 0;
}

/* ---- list, cancel ---- */

static int flow_list(struct au_client *cl, struct au_queue *q, int json)
{
	char **keys = NULL;
	size_t n = 0, i;
	struct au_err err = { 0, "" };

	if (au_queue_kv_keys(q, "flow", "", 0, &keys, &n) < 0)
		return failed(&q->err);
	if (!json)
		printf("%-32s  %-10s  %5s  %-24s  %s\n", "ID", "STATUS", "NODES", "CREATED", "NAME");
	for (i = 0; i < n; i++) {
		json_t *d = description(q, keys[i], &err);
		enum au_status st = AU_UNKNOWN;
		json_int_t created;
		char when[32] = "-";

		if (!d) {
			free(keys[i]);
			continue;
		}
		au_flow_status(cl, keys[i], &st, &err);
		created = json_integer_value(json_object_get(d, "created_at"));
		if (created) {
			time_t t = (time_t)(created / 1000);
			struct tm tm;

			if (gmtime_r(&t, &tm))
				strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
		}
		if (json) {
			json_t *o = json_object();

			json_object_set_new(o, "id", json_string(keys[i]));
			json_object_set(o, "name", json_object_get(d, "name"));
			json_object_set_new(o, "status", json_string(au_status_name(st)));
			json_object_set_new(o, "nodes", json_integer((json_int_t)json_array_size(json_object_get(d, "nodes"))));
			json_object_set_new(o, "created_at", json_integer(created));
			json_dumpf(o, stdout, JSON_COMPACT);
			putchar('\n');
			json_decref(o);
		} else {
			printf("%-32s  %-10s  %5zu  %-24s  %s\n", keys[i], au_status_name(st),
			       json_array_size(json_object_get(d, "nodes")), when,
			       json_string_value(json_object_get(d, "name")) ?
			       json_string_value(json_object_get(d, "name")) : "");
		}
		json_decref(d);
		free(keys[i]);
	}
	free(keys);
	return 0;
}

static int flow_cancel(struct au_client *cl, struct au_queue *q, const char *id)
{
	struct au_err err = { 0, "" };
	json_t *d = description(q, id, &err), *nodes;
	size_t i, cancelled = 0, done = 0;

	if (!d)
		return failed(&err);
	nodes = json_object_get(d, "nodes");
	/* the last first: what waits is cancelled before what it waits for
	 * settles and lets it go */
	for (i = json_array_size(nodes); i-- > 0;) {
		json_t *nd = json_array_get(nodes, i);
		const char *nid = json_string_value(json_object_get(nd, "id"));
		struct au_handle *h = nid ? au_handle_new(cl, nid, json_string_value(json_object_get(nd, "queue")))
					  : NULL;
		enum au_status st;

		if (!h)
			continue;
		if (au_handle_status(h, &st) == 0 && au_status_terminal(st))
			done++;
		else if (au_handle_cancel(h) == 0)
			cancelled++;
		au_handle_free(h);
	}
	printf("cancelled %zu of the flow's %zu nodes (%zu had finished)\n", cancelled,
	       json_array_size(nodes), done);
	json_decref(d);
	return 0;
}

/* ---- run ---- */

static int node_add(struct au_flow *f, json_t *nd, size_t i, struct au_err *err)
{
	const char *name = json_string_value(json_object_get(nd, "name"));
	const char *task = json_string_value(json_object_get(nd, "task"));
	json_t *args = json_object_get(nd, "args"), *deps = json_object_get(nd, "deps"), *v;
	struct au_enqueue_opts eo = { 0 };
	const char **names;
	unsigned char *mp = NULL;
	size_t len = 0, k;
	char *text;
	int rc;

	if (!json_is_object(nd) || !name || !task)
		return au_seterr(err, AU_EINVAL, "node %zu: needs a \"name\" and a \"task\"", i + 1);
	if (deps && (!json_is_array(deps) || json_array_size(deps) > AU_MAX_DEPS))
		return au_seterr(err, AU_EINVAL, "node '%s': \"deps\" must be an array of at most %d names",
				 name, AU_MAX_DEPS);
	if (!(names = calloc(json_array_size(deps) + 1, sizeof(*names))))
		return au_seterr(err, AU_ENOMEM, "out of memory");
	for (k = 0; k < json_array_size(deps); k++)
		if (!(names[k] = json_string_value(json_array_get(deps, k)))) {
			free(names);
			return au_seterr(err, AU_EINVAL, "node '%s': \"deps\" must hold names", name);
		}
	eo.queue = json_string_value(json_object_get(nd, "queue"));
	if ((v = json_object_get(nd, "priority")))
		eo.priority = (int)json_integer_value(v);
	if ((v = json_object_get(nd, "max_attempts")))
		eo.max_attempts = (uint32_t)json_integer_value(v);
	if ((v = json_object_get(nd, "timeout"))) {
		uint64_t ms = 0;

		if (json_is_integer(v))
			ms = (uint64_t)json_integer_value(v) * 1000;
		else if (!json_is_string(v) || au_duration_parse(json_string_value(v), &ms, err) < 0) {
			free(names);
			return au_seterr(err, AU_EINVAL, "node '%s': \"timeout\" must be a duration", name);
		}
		eo.timeout_ms = (uint32_t)ms;
	}
	if (args) {
		text = json_dumps(args, JSON_COMPACT | JSON_ENCODE_ANY);
		rc = text ? au_json_to_msgpack(text, &mp, &len, err) : au_seterr(err, AU_ENOMEM, "out of memory");
		free(text);
		if (rc < 0) {
			free(names);
			return -1;
		}
	}
	rc = au_flow_add(f, name, task, mp, len, &eo, names, json_array_size(deps));
	free(mp);
	free(names);
	if (rc < 0)
		*err = *au_flow_err(f);
	return rc;
}

static int flow_run(struct au_client *cl, const char *file, int wait, uint64_t wait_ms, int json)
{
	struct au_err err = { 0, "" };
	json_error_t jerr;
	json_t *doc = json_load_file(file, 0, &jerr), *nodes, *v;
	struct au_flow *f;
	char id[AU_ID_SIZE];
	enum au_status st = AU_UNKNOWN;
	uint64_t t0 = au_mono_us();
	size_t i;
	int rc = 0;

	if (!doc) {
		fprintf(stderr, "au: flow file '%s': %s (line %d, column %d)\n", file, jerr.text,
			jerr.line, jerr.column);
		return EXIT_USAGE;
	}
	nodes = json_object_get(doc, "nodes");
	if (!json_is_object(doc) || !json_is_array(nodes) || !json_array_size(nodes)) {
		json_decref(doc);
		fprintf(stderr, "au: flow file '%s': needs \"nodes\", an array of at least one node\n", file);
		return EXIT_USAGE;
	}
	f = au_flow_new(json_string_value(json_object_get(doc, "name")) ?
			json_string_value(json_object_get(doc, "name")) : file);
	if (!f) {
		json_decref(doc);
		return EXIT_FAILED;
	}
	if ((v = json_object_get(doc, "policy"))) {
		int policy;

		if (au_dep_policy_parse(json_string_value(v), &policy) < 0) {
			au_seterr(&err, AU_EINVAL, "\"policy\" must be fail, cancel, ignore or continue");
			goto bad;
		}
		au_flow_set_policy(f, policy);
	}
	if ((v = json_object_get(doc, "ttl"))) {
		uint64_t ms = 0;

		if (json_is_integer(v))
			ms = (uint64_t)json_integer_value(v) * 1000;
		else if (!json_is_string(v) || au_duration_parse(json_string_value(v), &ms, &err) < 0) {
			au_seterr(&err, AU_EINVAL, "\"ttl\" must be a duration");
			goto bad;
		}
		au_flow_set_ttl(f, (uint32_t)(ms / 1000));
	}
	for (i = 0; i < json_array_size(nodes); i++)
		if (node_add(f, json_array_get(nodes, i), i, &err) < 0)
			goto bad;
	if (au_flow_submit(cl, f, id) < 0) {
		err = *au_flow_err(f);
		au_flow_free(f);
		json_decref(doc);
		return failed(&err);
	}
	au_flow_free(f);
	json_decref(doc);
	while (wait) {
		if (au_flow_status(cl, id, &st, &err) < 0)
			return failed(&err);
		if (st == AU_COMPLETED || st == AU_FAILED || st == AU_CANCELLED)
			break;
		if (wait_ms && au_mono_us() - t0 >= wait_ms * 1000) {
			rc = EXIT_TIMEOUT;
			break;
		}
		usleep(100000);
	}
	if (json)
		printf("{\"id\":\"%s\"%s%s%s}\n", id, wait ? ",\"status\":\"" : "",
		       wait ? au_status_name(st) : "", wait ? "\"" : "");
	else
		printf("%s\n", id);
	if (wait && !rc && st != AU_COMPLETED)
		rc = EXIT_FAILED;
	return rc;
bad:
	fprintf(stderr, "au: flow file '%s': %s\n", file, err.str);
	au_flow_free(f);
	json_decref(doc);
	return EXIT_USAGE;
}

int au_cli_flow(const struct au_config *cfg, int argc, char **argv)
{
	struct au_config conf = *cfg;
	const char *config = NULL, *sub;
	struct au_client *cl;
	struct au_queue *q;
	uint64_t wait_ms = 0;
	int json = 0, wait = 0, rc, o;
	struct au_err err;

	if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
		fputs(flow_usage, argc < 2 ? stderr : stdout);
		return argc < 2 ? EXIT_USAGE : 0;
	}
	sub = argv[1];
	if (strcmp(sub, "run") && strcmp(sub, "show") && strcmp(sub, "list") && strcmp(sub, "cancel"))
		return au_cli_usage(flow_usage, "unknown flow command '%s'", sub);
	argc--;
	argv++;
	optind = 0;
	opterr = 0;
	while ((o = getopt_long(argc, argv, "h", flow_options, NULL)) != -1) {
		switch (o) {
		case 'h':
			fputs(flow_usage, stdout);
			return 0;
		case F_JSON: json = 1; break;
		case F_WAIT:
			if (strcmp(sub, "run"))
				return au_cli_usage(flow_usage, "--wait is for 'flow run'");
			wait = 1;
			/* an optional value: --wait=10m, or the next word when it is a duration */
			if (!optarg && optind < argc && argv[optind][0] >= '0' && argv[optind][0] <= '9')
				optarg = argv[optind++];
			if (optarg && au_duration_parse(optarg, &wait_ms, &err) < 0)
				return au_cli_usage(flow_usage, "--wait: %s", err.str);
			break;
		case F_QUEUE_URL: conf.queue_url = optarg; break;
		case F_STORE_URL: conf.store_url = optarg; break;
		case F_CH: conf.clickhouse_url = optarg; break;
		case F_CONFIG: config = optarg; break;
		default:
			return au_cli_usage(flow_usage, "unknown option '%s' for 'flow %s'",
					    argv[optind - 1], sub);
		}
	}
	if (!strcmp(sub, "cancel") && json)
		return au_cli_usage(flow_usage, "--json is not for 'flow cancel'");
	if (optind + (strcmp(sub, "list") ? 1 : 0) != argc)
		return au_cli_usage(flow_usage, !strcmp(sub, "list") ? "flow list takes no arguments"
					       : !strcmp(sub, "run") ? "flow run takes one FILE"
					       : "flow %s takes one ID", sub);
	if (au_cli_config(&conf, config) < 0)
		return EXIT_USAGE;
	au_config_from_env(&conf);
	cl = au_client_new(&conf);
	if (!cl || au_client_err(cl)->code) {
		rc = cl ? failed(au_client_err(cl)) : EXIT_FAILED;
		au_client_free(cl);
		return rc;
	}
	if (!(q = au_queue_open(conf.queue_url)) || q->err.code) {
		rc = q ? failed(&q->err) : EXIT_FAILED;
		au_queue_close(q);
		au_client_free(cl);
		return rc;
	}
	if (!strcmp(sub, "run"))
		rc = flow_run(cl, argv[optind], wait, wait_ms, json);
	else if (!strcmp(sub, "show"))
		rc = flow_show(cl, q, argv[optind], json);
	else if (!strcmp(sub, "list"))
		rc = flow_list(cl, q, json);
	else
		rc = flow_cancel(cl, q, argv[optind]);
	au_queue_close(q);
	au_client_free(cl);
	return rc;
}
