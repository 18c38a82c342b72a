/*
 * flow.c - the client side of flows (au.h "Flows"): a DAG of computations
 * named by local names, checked, described in the queue's kv space (ns
 * "flow", before the push, so the collector and `au flow show` find every
 * node that may run) and pushed in one call, topologically ordered so that
 * a dependency is always an earlier element of the same push.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "core.h"
#include "queue.h"

struct au_queue *au_client_queue(struct au_client *cl);
int au_client_before_enqueue(struct au_client *cl, struct au_computation *c);

struct node {
	char *name, *task, *queue;
	unsigned char *args;
	size_t args_len;
	int priority;
	uint32_t max_attempts, timeout_ms;
	char **deps;
	size_t ndeps;
	char id[AU_ID_SIZE];
	int mark;                   /* DFS: 0 new, 1 on the path, 2 done */
};

struct au_flow {
	char *name;
	int policy;
	uint32_t ttl_s;
	struct node *nodes;
	size_t n, cap;
	size_t *order, norder;      /* topological */
	struct au_err err;
};

struct au_flow *au_flow_new(const char *name)
{
	struct au_flow *f = calloc(1, sizeof(*f));

	if (f && !(f->name = au_strdup(name ? name : ""))) {
		free(f);
		return NULL;
	}
	return f;
}

static void node_release(struct node *n)
{
	free(n->name);
	free(n->task);
	free(n->queue);
	free(n->args);
	for (size_t i = 0; i < n->ndeps; i++)
		free(n->deps[i]);
	free(n->deps);
}

void au_flow_free(struct au_flow *f)
{
	if (!f)
		return;
	for (size_t i = 0; i < f->n; i++)
		node_release(&f->nodes[i]);
	free(f->nodes);
	free(f->order);
	free(f->name);
	free(f);
}

const struct au_err *au_flow_err(const struct au_flow *f)
{
	return &f->err;
}

void au_flow_set_policy(struct au_flow *f, int policy)
{
	f->policy = policy;
}

void au_flow_set_ttl(struct au_flow *f, uint32_t ttl_s)
{
	f->ttl_s = ttl_s;
}

static struct node *find(const struct au_flow *f, const char *name)
{
	for (size_t i = 0; i < f->n; i++)
		if (!strcmp(f->nodes[i].name, name))
			return &f->nodes[i];
	return NULL;
}

const char *au_flow_node_id(const struct au_flow *f, const char *node)
{
	const struct node *n = find(f, node);

	return n && n->id[0] ? n->id : NULL;
}

static int add_dep(struct node *n, const char *dep)
{
	char **d;

	for (size_t i = 0; i < n->ndeps; i++)
		if (!strcmp(n->deps[i], dep))
			return 0;
	if (!(d = realloc(n->deps, (n->ndeps + 1) * sizeof(*d))))
		return -1;
	n->deps = d;
	if (!(d[n->ndeps] = au_strdup(dep)))
		return -1;
	n->ndeps++;
	return 0;
}

int au_flow_add(struct au_flow *f, const char *node, const char *task,
		const unsigned char *args, size_t args_len, const struct au_enqueue_opts *eo,
		const char *const *deps, size_t ndeps)
{
	struct node *n;
	struct au_err err;

	au_clearerr(&f->err);
	if (!node || !*node)
		return au_seterr(&f->err, AU_EINVAL, "flow '%s': a node needs a name", f->name);
	if (find(f, node))
		return au_seterr(&f->err, AU_EINVAL, "flow '%s': node '%s' given twice", f->name, node);
	if (!task || !*task)
		return au_seterr(&f->err, AU_EINVAL, "flow '%s': node '%s' has no task", f->name, node);
	if (eo && eo->queue && au_queue_name_check(eo->queue, &err) < 0)
		return au_seterr(&f->err, AU_EINVAL, "flow '%s': node '%s': %s", f->name, node, err.str);
	if (eo && (eo->priority < AU_PRIORITY_MIN || eo->priority > AU_PRIORITY_MAX))
		return au_seterr(&f->err, AU_EINVAL, "flow '%s': node '%s': priority %d out of range",
				 f->name, node, eo->priority);
	if (args_len && au_msgpack_check(args, args_len, AU_MAX_DEPTH, &err) < 0)
		return au_seterr(&f->err, AU_EINVAL, "flow '%s': node '%s': %s", f->name, node, err.str);
	if (f->n == f->cap) {
		size_t cap = f->cap ? f->cap * 2 : 8;
		struct node *m = realloc(f->nodes, cap * sizeof(*m));

		if (!m)
			return au_seterr(&f->err, AU_ENOMEM, "out of memory");
		f->nodes = m;
		f->cap = cap;
	}
	n = &f->nodes[f->n];
	memset(n, 0, sizeof(*n));
	n->name = au_strdup(node);
	n->task = au_strdup(task);
	n->queue = au_strdup(au_queue_name(eo ? eo->queue : NULL));
	n->args_len = args_len ? args_len : 1;
	n->args = malloc(n->args_len);
	if (n->args) {
		if (args_len)
			memcpy(n->args, args, args_len);
		else
			n->args[0] = 0x80;   /* {} */
	}
	if (eo) {
		n->priority = eo->priority;
		n->max_attempts = eo->max_attempts;
		n->timeout_ms = eo->timeout_ms;
	}
	for (size_t i = 0; i < ndeps; i++)
		if (add_dep(n, deps[i]) < 0)
			goto oom;
	if (!n->name || !n->task || !n->queue || !n->args)
		goto oom;
	f->n++;
	return 0;
oom:
	node_release(n);
	return au_seterr(&f->err, AU_ENOMEM, "out of memory");
}

/* {"$ref":"NODE"} / {"$table":"NODE"} anywhere in j: NODE becomes its id
 * and a dependency of n. */
static int rewrite(struct au_flow *f, struct node *n, json_t *j)
{
	const char *k;
	json_t *v;
	size_t i;

	if (json_is_array(j)) {
		json_array_foreach(j, i, v)
			if (rewrite(f, n, v) < 0)
				return -1;
		return 0;
	}
	if (!json_is_object(j))
		return 0;
	if (json_object_size(j) == 1 && ((v = json_object_get(j, "$ref")) ||
					 (v = json_object_get(j, "$table"))) && json_is_string(v)) {
		struct node *to = find(f, json_string_value(v));

		if (!to) {
			if (au_id_valid(json_string_value(v)))
				return 0;   /* an id already: left as it is */
			return au_seterr(&f->err, AU_EINVAL, "flow '%s': node '%s' refers to unknown node '%s'",
					 f->name, n->name, json_string_value(v));
		}
		if (add_dep(n, to->name) < 0)
			return au_seterr(&f->err, AU_ENOMEM, "out of memory");
		return json_string_set(v, to->id) < 0 ? au_seterr(&f->err, AU_ENOMEM, "out of memory") : 0;
	}
	json_object_foreach(j, k, v)
		if (rewrite(f, n, v) < 0)
			return -1;
	return 0;
}

/* Depth first from node i; a node met again on the path is a cycle, named
 * from where it began. */
static int visit(struct au_flow *f, size_t i, size_t *path, size_t depth)
{
	struct node *n = &f->nodes[i];

	if (n->mark == 2)
		return 0;
	path[depth] = i;
	if (n->mark == 1) {
		struct au_buf b = AU_BUF_INIT;
		size_t s = 0;

		while (path[s] != i)
			s++;
		for (size_t k = s; k <= depth; k++)
			au_buf_printf(&b, "%s%s", k > s ? " -> " : "", f->nodes[path[k]].name);
		au_buf_reserve(&b, 1);
		au_seterr(&f->err, AU_EINVAL, "flow '%s': cycle %.*s", f->name, (int)b.len,
			  b.data ? (char *)b.data : "");
		au_buf_release(&b);
		return -1;
	}
	n->mark = 1;
	for (size_t d = 0; d < n->ndeps; d++) {
		struct node *to = find(f, n->deps[d]);

		if (visit(f, (size_t)(to - f->nodes), path, depth + 1) < 0)
			return -1;
	}
	n->mark = 2;
	f->order[f->norder++] = i;
	return 0;
}

/* The description, msgpack: id, name, created_at, ttl_s, policy, nodes. */
static int describe(const struct au_flow *f, const char *id, uint64_t now, struct au_buf *b)
{
	int rc = au_mp_map(b, 6);

	rc |= au_mp_str(b, "id", 2) | au_mp_str(b, id, strlen(id));
	rc |= au_mp_str(b, "name", 4) | au_mp_str(b, f->name, strlen(f->name));
	rc |= au_mp_str(b, "created_at", 10) | au_mp_uint(b, now);
	rc |= au_mp_str(b, "ttl_s", 5) | au_mp_uint(b, f->ttl_s);
	rc |= au_mp_str(b, "policy", 6);
	rc |= au_mp_str(b, au_dep_policy_name(f->policy), strlen(au_dep_policy_name(f->policy)));
	rc |= au_mp_str(b, "nodes", 5) | au_mp_array(b, (uint32_t)f->n);
	for (size_t i = 0; i < f->n; i++) {
		const struct node *n = &f->nodes[f->order[i]];

		rc |= au_mp_map(b, 5);
		rc |= au_mp_str(b, "name", 4) | au_mp_str(b, n->name, strlen(n->name));
		rc |= au_mp_str(b, "id", 2) | au_mp_str(b, n->id, strlen(n->id));
		rc |= au_mp_str(b, "task", 4) | au_mp_str(b, n->task, strlen(n->task));
		rc |= au_mp_str(b, "queue", 5) | au_mp_str(b, n->queue, strlen(n->queue));
		rc |= au_mp_str(b, "deps", 4) | au_mp_array(b, (uint32_t)n->ndeps);
		for (size_t d = 0; d < n->ndeps; d++)
			rc |= au_mp_str(b, n->deps[d], strlen(n->deps[d]));
	}
	return rc ? -1 : 0;
}

int au_flow_submit(struct au_client *cl, struct au_flow *f, char flow_id[AU_ID_SIZE])
{
	struct au_queue *q = au_client_queue(cl);
	struct au_computation *cs = NULL;
	struct au_buf b = AU_BUF_INIT;
	uint64_t now = au_now_ms();
	size_t *path = NULL, i, d;
	int done = 0, rc = -1;
	uint32_t ttl = f->ttl_s == AU_TTL_NEVER ? 0 : f->ttl_s ? f->ttl_s : AU_DEFAULT_TTL_S;

	au_clearerr(&f->err);
	if (!q) {
		f->err = *au_client_err(cl);
		return -1;
	}
	if (!f->n)
		return au_seterr(&f->err, AU_EINVAL, "flow '%s' has no node", f->name);
	if (f->policy < AU_DEP_FAIL || f->policy > AU_DEP_CONTINUE)
		return au_seterr(&f->err, AU_EINVAL, "flow '%s': unknown policy %d", f->name, f->policy);
	au_id_new(flow_id);
	for (i = 0; i < f->n; i++) {
		au_id_new(f->nodes[i].id);
		f->nodes[i].mark = 0;
	}
	/* references by name, then the names of deps checked */
	for (i = 0; i < f->n; i++) {
		struct node *n = &f->nodes[i];
		struct au_err err;
		json_t *j = NULL;

		if (!memmem(n->args, n->args_len, "$ref", 4) && !memmem(n->args, n->args_len, "$table", 6))
			continue;
		if (au_msgpack_to_jansson(n->args, n->args_len, &j, &err) < 0)
			return au_seterr(&f->err, AU_EINVAL, "flow '%s': node '%s': %s", f->name, n->name,
					 err.str);
		au_buf_reset(&b);
		if (rewrite(f, n, j) < 0 || au_jansson_to_msgpack(j, &b, &err) < 0) {
			json_decref(j);
			if (!f->err.code)
				au_seterr(&f->err, AU_EINVAL, "flow '%s': node '%s': %s", f->name, n->name, err.str);
			goto out;
		}
		json_decref(j);
		free(n->args);
		n->args = au_buf_detach(&b, &n->args_len);
	}
	for (i = 0; i < f->n; i++)
		for (d = 0; d < f->nodes[i].ndeps; d++) {
			if (!find(f, f->nodes[i].deps[d])) {
				au_seterr(&f->err, AU_EINVAL, "flow '%s': node '%s' depends on unknown node '%s'",
					  f->name, f->nodes[i].name, f->nodes[i].deps[d]);
				goto out;
			}
			if (!strcmp(f->nodes[i].deps[d], f->nodes[i].name)) {
				au_seterr(&f->err, AU_EINVAL, "flow '%s': cycle %s -> %s", f->name,
					  f->nodes[i].name, f->nodes[i].name);
				goto out;
			}
		}
	free(f->order);
	f->norder = 0;
	f->order = calloc(f->n, sizeof(*f->order));
	path = calloc(f->n + 1, sizeof(*path));
	cs = calloc(f->n, sizeof(*cs));
	if (!f->order || !path || !cs) {
		au_seterr(&f->err, AU_ENOMEM, "out of memory");
		goto out;
	}
	for (i = 0; i < f->n; i++)
		if (visit(f, i, path, 0) < 0)
			goto out;
	/* the description first: whatever may run is in it */
	au_buf_reset(&b);
	if (describe(f, flow_id, now, &b) < 0) {
		au_seterr(&f->err, AU_ENOMEM, "out of memory");
		goto out;
	}
	if (au_queue_kv_put(q, "flow", flow_id, b.data, b.len, 0, 0, &done) < 0) {
		au_seterr(&f->err, q->err.code, "flow '%s': unable to store its description: %s",
			  f->name, q->err.str);
		goto out;
	}
	for (i = 0; i < f->n; i++) {
		const struct node *n = &f->nodes[f->order[i]];
		struct au_computation *c = &cs[i];

		au_computation_init(c);
		memcpy(c->id, n->id, AU_ID_SIZE);
		c->task = au_strdup(n->task);
		c->queue = au_strdup(n->queue);
		c->flow = au_strdup(flow_id);
		c->args = malloc(n->args_len);
		c->deps = n->ndeps ? calloc(n->ndeps, sizeof(*c->deps)) : NULL;
		if (!c->task || !c->queue || !c->flow || !c->args || (n->ndeps && !c->deps)) {
			au_seterr(&f->err, AU_ENOMEM, "out of memory");
			goto out;
		}
		memcpy(c->args, n->args, n->args_len);
		c->args_len = n->args_len;
		c->priority = n->priority;
		c->max_attempts = n->max_attempts ? n->max_attempts : AU_DEFAULT_MAX_ATTEMPTS;
		c->timeout_ms = n->timeout_ms;
		c->ttl_s = ttl;
		c->created_at_ms = now;
		c->dep_policy = f->policy;
		for (d = 0; d < n->ndeps; d++)
			memcpy(c->deps[d], find(f, n->deps[d])->id, AU_ID_SIZE);
		c->ndeps = n->ndeps;
	}
	/* each node through the client's middleware, as au_enqueue's: signed */
	for (i = 0; i < f->n; i++)
		if (au_client_before_enqueue(cl, &cs[i]) < 0) {
			const struct au_err *e = au_client_err(cl);

			au_seterr(&f->err, e->code, "flow '%s': node '%s': %s", f->name,
				  f->nodes[f->order[i]].name, e->str);
			au_queue_kv_del(q, "flow", flow_id, NULL, 0, &done);
			goto out;
		}
	if (au_queue_push(q, cs, f->n) < 0) {
		au_seterr(&f->err, q->err.code, "flow '%s': %s", f->name, q->err.str);
		au_queue_kv_del(q, "flow", flow_id, NULL, 0, &done);
		goto out;
	}
	rc = 0;
out:
	for (i = 0; cs && i < f->n; i++)
		au_computation_release(&cs[i]);
	free(cs);
	free(path);
	au_buf_release(&b);
	if (rc < 0)
		for (i = 0; i < f->n; i++)
			f->nodes[i].id[0] = 0;
	return rc;
}

int au_flow_status(struct au_client *cl, const char *flow_id, enum au_status *out,
		   struct au_err *err)
{
	struct au_queue *q = au_client_queue(cl);
	unsigned char *val = NULL;
	size_t len = 0, i, started = 0, done = 0, failed = 0, cancelled = 0, total;
	json_t *d = NULL, *nodes, *n;

	*out = AU_UNKNOWN;
	if (!q) {
		*err = *au_client_err(cl);
		return -1;
	}
	if (!au_id_valid(flow_id))
		return au_seterr(err, AU_EINVAL, "invalid flow id '%.40s'", flow_id);
	if (au_queue_kv_get(q, "flow", flow_id, &val, &len) < 0) {
		if (q->err.code == AU_ENOTFOUND)
			return au_seterr(err, AU_ENOTFOUND, "unknown flow '%s'", flow_id);
		*err = q->err;
		return -1;
	}
	if (au_msgpack_to_jansson(val, len, &d, err) < 0) {
		free(val);
		return -1;
	}
	free(val);
	nodes = json_object_get(d, "nodes");
	total = json_array_size(nodes);
	json_array_foreach(nodes, i, n) {
		const char *id = json_string_value(json_object_get(n, "id"));
		const char *queue = json_string_value(json_object_get(n, "queue"));
		struct au_handle *h = au_handle_new(cl, id ? id : "", queue);
		enum au_status st = AU_UNKNOWN;

		if (!h || au_handle_status(h, &st) < 0) {
			if (h)
				*err = *au_handle_err(h);
			else
				au_seterr(err, AU_ENOMEM, "out of memory");
			au_handle_free(h);
			json_decref(d);
			return -1;
		}
		au_handle_free(h);
		if (st == AU_RUNNING || st == AU_RETRYING)
			started++;
		else if (st == AU_COMPLETED)
			done++, started++;
		else if (st == AU_FAILED || st == AU_UNKNOWN)   /* a record gone: no success */
			failed++, done++, started++;
		else if (st == AU_CANCELLED)
			cancelled++, done++, started++;
	}
	json_decref(d);
	if (done == total)
		*out = failed ? AU_FAILED : cancelled ? AU_CANCELLED : AU_COMPLETED;
	else
		*out = started ? AU_RUNNING : AU_PENDING;
	return 0;
}
