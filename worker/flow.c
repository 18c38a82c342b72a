/*
 * flow.c - dependencies, references and children of flow computations
 * (flow.h). The queue has made a computation ready once each dependency
 * settled; whether they completed is read here, from their records.
 */
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "au.h"
#include "core.h"
#include "flow.h"

/* ---- the records a computation needs ---- */

struct got {
	char id[AU_ID_SIZE];
	int found;                  /* its record is in r */
	struct au_record r;
};

struct need {
	struct got *v;
	size_t n, cap;
	int sorted;
};

static int need_cmp(const void *a, const void *b)
{
	return strcmp(((const struct got *)a)->id, ((const struct got *)b)->id);
}

static struct got *need_find(struct need *nd, const char *id)
{
	struct got key;

	if (!nd->n)
		return NULL;
	if (!nd->sorted) {
		size_t i, k = 0;

		qsort(nd->v, nd->n, sizeof(*nd->v), need_cmp);
		for (i = 0; i < nd->n; i++)   /* each once */
			if (!k || strcmp(nd->v[k - 1].id, nd->v[i].id))
				nd->v[k++] = nd->v[i];
		nd->n = k;
		nd->sorted = 1;
	}
	memcpy(key.id, id, AU_ID_SIZE);
	return bsearch(&key, nd->v, nd->n, sizeof(*nd->v), need_cmp);
}

static int need_add(struct need *nd, const char *id, size_t len)
{
	if (len != AU_ID_SIZE - 1)
		return 0;
	if (nd->n == nd->cap) {
		size_t cap = nd->cap ? 2 * nd->cap : 16;
		struct got *v = realloc(nd->v, cap * sizeof(*v));

		if (!v)
			return -1;
		nd->v = v;
		nd->cap = cap;
	}
	memset(&nd->v[nd->n], 0, sizeof(nd->v[nd->n]));
	memcpy(nd->v[nd->n].id, id, len);
	nd->v[nd->n].id[len] = 0;
	if (!au_id_valid(nd->v[nd->n].id))
		return 0;
	nd->n++;
	nd->sorted = 0;
	return 0;
}

static void need_release(struct need *nd)
{
	for (size_t i = 0; i < nd->n; i++)
		if (nd->v[i].found)
			au_record_release(&nd->v[i].r);
	free(nd->v);
}

static int is_key(const msgpack_object *k, const char *s)
{
	size_t n = strlen(s);

	return k->type == MSGPACK_OBJECT_STR && k->via.str.size == n && !memcmp(k->via.str.ptr, s, n);
}

/* {"$ref": ID} or {"$table": ID}: 1 or 2, and the id; 0 otherwise. */
static int ref_of(const msgpack_object *o, const char **id, size_t *len)
{
	const msgpack_object_kv *kv;

	if (o->type != MSGPACK_OBJECT_MAP || o->via.map.size != 1)
		return 0;
	kv = &o->via.map.ptr[0];
	if (kv->val.type != MSGPACK_OBJECT_STR)
		return 0;
	*id = kv->val.via.str.ptr;
	*len = kv->val.via.str.size;
	return is_key(&kv->key, "$ref") ? 1 : is_key(&kv->key, "$table") ? 2 : 0;
}

/* Every id o refers to, into nd; *refs counts the references, ids or not. */
static int collect_refs(const msgpack_object *o, struct need *nd, size_t *refs, unsigned depth)
{
	const char *id;
	size_t len, i;

	if (depth > AU_MAX_DEPTH)
		return 0;
	if (ref_of(o, &id, &len)) {
		++*refs;
		return need_add(nd, id, len);
	}
	if (o->type == MSGPACK_OBJECT_ARRAY)
		for (i = 0; i < o->via.array.size; i++)
			if (collect_refs(&o->via.array.ptr[i], nd, refs, depth + 1) < 0)
				return -1;
	if (o->type == MSGPACK_OBJECT_MAP)
		for (i = 0; i < o->via.map.size; i++)
			if (collect_refs(&o->via.map.ptr[i].val, nd, refs, depth + 1) < 0)
				return -1;
	return 0;
}

/* The unpacked value of buf[0..len) in zone; -1 when it is not one. */
static int unpack(const unsigned char *buf, size_t len, msgpack_zone *zone, msgpack_object *o)
{
	size_t off = 0;

	return msgpack_unpack((const char *)buf, len, &off, zone, o) == MSGPACK_UNPACK_SUCCESS ? 0 : -1;
}

/* The "$children" of a completed record's result, or NULL. */
static const msgpack_object *children_of(const msgpack_object *res)
{
	size_t i;

	if (res->type != MSGPACK_OBJECT_MAP)
		return NULL;
	for (i = 0; i < res->via.map.size; i++)
		if (is_key(&res->via.map.ptr[i].key, "$children") &&
		    res->via.map.ptr[i].val.type == MSGPACK_OBJECT_ARRAY)
			return &res->via.map.ptr[i].val;
	return NULL;
}

static int store_away(int code)
{
	return code == AU_ECONN || code == AU_ETIMEDOUT;
}

/* Reads the record of each id of nd not read yet. */
static int fetch(struct au_store *s, struct need *nd, struct au_err *err)
{
	for (size_t i = 0; i < nd->n; i++) {
		struct got *g = &nd->v[i];

		if (g->found || g->r.id[0])
			continue;
		memcpy(g->r.id, g->id, AU_ID_SIZE);   /* looked at */
		if (au_store_get(s, g->id, &g->r) == 0) {
			g->found = 1;
			continue;
		}
		memcpy(g->r.id, g->id, AU_ID_SIZE);
		if (store_away(s->err.code)) {
			*err = s->err;
			return -1;
		}
	}
	return 0;
}

/* What a dependency that did not complete is, for an error message. */
static char *why_not(const struct got *g, const char *what)
{
	if (!g || !g->found)
		return au_asprintf("%s '%s' has no record (it expired, was deleted or never ran)",
				   what, g ? g->id : "?");
	if (g->r.status == AU_CANCELLED)
		return au_asprintf("%s '%s' was cancelled", what, g->id);
	if (g->r.status == AU_FAILED)
		return au_asprintf("%s '%s' failed: %s", what, g->id, g->r.error ? g->r.error : "");
	return au_asprintf("%s '%s' did not complete (%s)", what, g->id, au_status_name(g->r.status));
}

/* ---- rewriting the args ---- */

struct rewrite {
	struct need *nd;
	int policy;
	struct au_buf out;
	char *error;
	msgpack_zone *zone;
};

static int copy_obj(struct rewrite *rw, const msgpack_object *o, unsigned depth);

static int buf_write(void *data, const char *p, size_t n)
{
	return au_buf_append(data, p, n);
}

static int pack_leaf(struct rewrite *rw, const msgpack_object *o)
{
	msgpack_packer pk;

	msgpack_packer_init(&pk, &rw->out, buf_write);
	return msgpack_pack_object(&pk, *o);
}

/* A completed record's result as the value of a $ref: itself, or the
 * results of its children, in order, when it is a fan-out's. */
static int ref_value(struct rewrite *rw, struct got *g, unsigned depth)
{
	msgpack_object res;
	const msgpack_object *kids;
	size_t i;

	if (!g->r.result_len)
		return au_mp_nil(&rw->out);
	if (unpack(g->r.result, g->r.result_len, rw->zone, &res) < 0 || !(kids = children_of(&res)))
		return au_buf_append(&rw->out, g->r.result, g->r.result_len);
	if (au_mp_array(&rw->out, kids->via.array.size) < 0)
		return -1;
	for (i = 0; i < kids->via.array.size; i++) {
		const msgpack_object *k = &kids->via.array.ptr[i];
		struct got *c = NULL;
		char id[AU_ID_SIZE];

		if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == AU_ID_SIZE - 1) {
			memcpy(id, k->via.str.ptr, AU_ID_SIZE - 1);
			id[AU_ID_SIZE - 1] = 0;
			c = need_find(rw->nd, id);
		}
		if (c && c->found && c->r.status == AU_COMPLETED) {
			if (depth < 8 ? ref_value(rw, c, depth + 1) < 0 : au_mp_nil(&rw->out) < 0)
				return -1;
		} else if (rw->policy == AU_DEP_CONTINUE) {
			if (au_mp_map(&rw->out, 2) < 0 || au_mp_str(&rw->out, "status", 6) < 0)
				return -1;
			{
				const char *st = c && c->found ? au_status_name(c->r.status) : "unknown";
				const char *e = c && c->found && c->r.error ? c->r.error : "";

				if (au_mp_str(&rw->out, st, strlen(st)) < 0 ||
				    au_mp_str(&rw->out, "error", 5) < 0 ||
				    au_mp_str(&rw->out, e, strlen(e)) < 0)
					return -1;
			}
		} else if (au_mp_nil(&rw->out) < 0) {
			return -1;
		}
	}
	return 0;
}

/* The table a completed record's result names: {"table": NAME, ...}. */
static int table_value(struct rewrite *rw, struct got *g)
{
	msgpack_object res;
	size_t i;

	if (g->r.result_len && unpack(g->r.result, g->r.result_len, rw->zone, &res) == 0 &&
	    res.type == MSGPACK_OBJECT_MAP)
		for (i = 0; i < res.via.map.size; i++)
			if (is_key(&res.via.map.ptr[i].key, "table") &&
			    res.via.map.ptr[i].val.type == MSGPACK_OBJECT_STR)
				return au_mp_str(&rw->out, res.via.map.ptr[i].val.via.str.ptr,
						 res.via.map.ptr[i].val.via.str.size);
	rw->error = au_asprintf("'%s' produced no table (its result has no \"table\")", g->id);
	return -1;
}

static int copy_obj(struct rewrite *rw, const msgpack_object *o, unsigned depth)
{
	const char *id;
	size_t len, i;
	int kind = ref_of(o, &id, &len);

	if (kind) {
		char key[AU_ID_SIZE] = "";
		struct got *g;

		if (len == AU_ID_SIZE - 1) {
			memcpy(key, id, len);
			key[len] = 0;
		}
		g = au_id_valid(key) ? need_find(rw->nd, key) : NULL;
		if (!g) {
			rw->error = au_asprintf("a reference to '%.*s' that is not a computation id",
						len < 40 ? (int)len : 40, id);
			return -1;
		}
		if (g->found && g->r.status == AU_COMPLETED)
			return kind == 1 ? ref_value(rw, g, 0) : table_value(rw, g);
		if (rw->policy == AU_DEP_IGNORE && kind == 1)
			return au_mp_nil(&rw->out);
		if (rw->policy == AU_DEP_CONTINUE && kind == 1) {
			const char *st = g->found ? au_status_name(g->r.status) : "unknown";
			const char *e = g->found && g->r.error ? g->r.error : "";

			return au_mp_map(&rw->out, 2) | au_mp_str(&rw->out, "status", 6) |
			       au_mp_str(&rw->out, st, strlen(st)) | au_mp_str(&rw->out, "error", 5) |
			       au_mp_str(&rw->out, e, strlen(e));
		}
		rw->error = why_not(g, "reference to");
		return -1;
	}
	if (depth > AU_MAX_DEPTH)
		return pack_leaf(rw, o);
	if (o->type == MSGPACK_OBJECT_ARRAY) {
		if (au_mp_array(&rw->out, o->via.array.size) < 0)
			return -1;
		for (i = 0; i < o->via.array.size; i++)
			if (copy_obj(rw, &o->via.array.ptr[i], depth + 1) < 0)
				return -1;
		return 0;
	}
	if (o->type == MSGPACK_OBJECT_MAP) {
		if (au_mp_map(&rw->out, o->via.map.size) < 0)
			return -1;
		for (i = 0; i < o->via.map.size; i++)
			if (pack_leaf(rw, &o->via.map.ptr[i].key) < 0 ||
			    copy_obj(rw, &o->via.map.ptr[i].val, depth + 1) < 0)
				return -1;
		return 0;
	}
	return pack_leaf(rw, o);
}

/* ---- before a computation runs ---- */

int au_flow_needs_prep(const unsigned char *body, size_t len)
{
	return memmem(body, len, "\xa4" "deps", 5) || memmem(body, len, "$ref", 4) ||
	       memmem(body, len, "$table", 6);
}

void au_prep_release(struct au_prep *p)
{
	free(p->error);
	free(p->args);
	memset(p, 0, sizeof(*p));
}

/* The children of completed records that nd lacks, added: 1 when any
 * was, 0 when none, -1 on OOM. */
static int add_children(struct need *nd, msgpack_zone *zone)
{
	struct need fresh = { 0 };
	size_t i, k;
	int rc = 0;

	if (!nd->n)
		return 0;
	need_find(nd, nd->v[0].id);   /* sorted: lookups below */
	for (i = 0; i < nd->n && rc == 0; i++) {
		const msgpack_object *kids;
		msgpack_object res;

		if (!nd->v[i].found || nd->v[i].r.status != AU_COMPLETED || !nd->v[i].r.result_len ||
		    unpack(nd->v[i].r.result, nd->v[i].r.result_len, zone, &res) < 0 ||
		    !(kids = children_of(&res)))
			continue;
		for (k = 0; k < kids->via.array.size && rc == 0; k++) {
			const msgpack_object *o = &kids->via.array.ptr[k];
			char id[AU_ID_SIZE];

			if (o->type != MSGPACK_OBJECT_STR || o->via.str.size != AU_ID_SIZE - 1)
				continue;
			memcpy(id, o->via.str.ptr, AU_ID_SIZE - 1);
			id[AU_ID_SIZE - 1] = 0;
			if (!need_find(nd, id))
				rc = need_add(&fresh, id, AU_ID_SIZE - 1);
		}
	}
	for (i = 0; i < fresh.n && rc == 0; i++)
		rc = need_add(nd, fresh.v[i].id, AU_ID_SIZE - 1);
	if (rc == 0 && fresh.n)
		rc = 1;
	free(fresh.v);
	return rc;
}

int au_flow_prepare(struct au_store *s, const unsigned char *body, size_t len,
		    struct au_prep *p, struct au_err *err)
{
	struct au_computation c;
	struct au_err derr;
	struct need nd = { 0 };
	msgpack_zone zone;
	msgpack_object args;
	int rc = 0, have_args = 0, more;
	size_t i, refs = 0;

	memset(p, 0, sizeof(*p));
	if (au_computation_decode(body, len, &c, &derr) < 0)
		return 0;   /* the worker rejects it, with the reason */
	if (!msgpack_zone_init(&zone, 4096)) {
		au_computation_release(&c);
		return au_seterr(err, AU_ENOMEM, "out of memory");
	}
	for (i = 0; i < c.ndeps; i++)
		if (need_add(&nd, c.deps[i], AU_ID_SIZE - 1) < 0)
			goto oom;
	if (c.args_len && unpack(c.args, c.args_len, &zone, &args) == 0) {
		have_args = 1;
		if (collect_refs(&args, &nd, &refs, 0) < 0)
			goto oom;
	}
	if (!nd.n && !refs)
		goto out;
	/* the records, and those of fan-outs' children, in rounds */
	for (unsigned round = 0; nd.n; round++) {
		need_find(&nd, nd.v[0].id);   /* sorts, each once */
		if (fetch(s, &nd, err) < 0) {
			rc = -1;
			goto out;
		}
		if (round == 8 || (more = add_children(&nd, &zone)) == 0)
			break;
		if (more < 0)
			goto oom;
	}
	/* the policy: the first dependency (or child of one) that did not complete */
	if (c.dep_policy == AU_DEP_FAIL || c.dep_policy == AU_DEP_CANCEL)
		for (i = 0; i < c.ndeps; i++) {
			struct got *g = need_find(&nd, c.deps[i]);
			const msgpack_object *kids = NULL;
			msgpack_object res;
			struct got *bad = NULL;

			if (!g || !g->found || g->r.status != AU_COMPLETED) {
				bad = g;
			} else if (g->r.result_len && unpack(g->r.result, g->r.result_len, &zone, &res) == 0 &&
				   (kids = children_of(&res))) {
				for (size_t k = 0; !bad && k < kids->via.array.size; k++) {
					char id[AU_ID_SIZE];
					struct got *ch;

					if (kids->via.array.ptr[k].type != MSGPACK_OBJECT_STR ||
					    kids->via.array.ptr[k].via.str.size != AU_ID_SIZE - 1)
						continue;
					memcpy(id, kids->via.array.ptr[k].via.str.ptr, AU_ID_SIZE - 1);
					id[AU_ID_SIZE - 1] = 0;
					ch = need_find(&nd, id);
					if (ch && (!ch->found || ch->r.status != AU_COMPLETED))
						bad = ch;
				}
			}
			if (bad || !g) {
				p->verdict = c.dep_policy == AU_DEP_CANCEL ? AU_PREP_CANCEL : AU_PREP_FAIL;
				p->error = why_not(bad ? bad : g, c.dep_policy == AU_DEP_CANCEL
						   ? "cancelled: dependency" : "dependency");
				if (!p->error)
					goto oom;
				goto out;
			}
		}
	if (have_args) {
		struct rewrite rw = { &nd, c.dep_policy, AU_BUF_INIT, NULL, &zone };

		if (copy_obj(&rw, &args, 0) < 0) {
			au_buf_release(&rw.out);
			if (!rw.error)
				goto oom;
			p->verdict = AU_PREP_FAIL;
			p->error = rw.error;
			goto out;
		}
		p->args = au_buf_detach(&rw.out, &p->args_len);
	}
out:
	need_release(&nd);
	msgpack_zone_destroy(&zone);
	au_computation_release(&c);
	return rc;
oom:
	rc = au_seterr(err, AU_ENOMEM, "out of memory");
	au_prep_release(p);
	goto out;
}

/* ---- after it completes: its children ---- */

static const msgpack_object *map_get(const msgpack_object *m, const char *key)
{
	for (size_t i = 0; m->type == MSGPACK_OBJECT_MAP && i < m->via.map.size; i++)
		if (is_key(&m->via.map.ptr[i].key, key))
			return &m->via.map.ptr[i].val;
	return NULL;
}

static char *str_of(const msgpack_object *o)
{
	return o && o->type == MSGPACK_OBJECT_STR ? au_strndup(o->via.str.ptr, o->via.str.size) : NULL;
}

static int int_of(const msgpack_object *o, int64_t lo, int64_t hi, int64_t *out)
{
	if (!o)
		return 0;
	if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 <= (uint64_t)hi)
		*out = (int64_t)o->via.u64;
	else if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER && o->via.i64 >= lo)
		*out = o->via.i64;
	else
		return -1;
	return *out >= lo && *out <= hi ? 0 : -1;
}

int au_flow_spawn(const struct au_computation *parent, const unsigned char *result, size_t len,
		  struct au_computation **kids, size_t *n, unsigned char **out, size_t *out_len,
		  struct au_err *err)
{
	const msgpack_object *spawn = NULL;
	struct au_computation *v = NULL;
	struct au_buf b = AU_BUF_INIT, enc = AU_BUF_INIT;
	msgpack_zone zone;
	msgpack_object res;
	size_t i, made = 0;
	int rc = -1;

	*kids = NULL;
	*n = 0;
	*out = NULL;
	*out_len = 0;
	if (!len || !memmem(result, len, "$spawn", 6))
		return 0;
	if (!msgpack_zone_init(&zone, 4096))
		return au_seterr(err, AU_ENOMEM, "out of memory");
	if (unpack(result, len, &zone, &res) < 0 || !(spawn = map_get(&res, "$spawn"))) {
		msgpack_zone_destroy(&zone);
		return 0;
	}
	if (spawn->type != MSGPACK_OBJECT_ARRAY || spawn->via.array.size > AU_MAX_DEPS) {
		au_seterr(err, AU_EINVAL, "'$spawn' must be an array of at most %d computations",
			  AU_MAX_DEPS);
		goto out;
	}
	if (spawn->via.array.size && !(v = calloc(spawn->via.array.size, sizeof(*v))))
		goto oom;
	for (i = 0; i < spawn->via.array.size; i++, made++) {
		const msgpack_object *k = &spawn->via.array.ptr[i], *a;
		struct au_computation *c = &v[i];
		char key[AU_ID_SIZE + 32];
		int64_t x;

		au_computation_init(c);
		if (k->type != MSGPACK_OBJECT_MAP || !(c->task = str_of(map_get(k, "task")))) {
			made++;
			au_seterr(err, AU_EINVAL, "'$spawn' element %zu must be a map with a task", i);
			goto out;
		}
		snprintf(key, sizeof(key), "%s:%zu", parent->id, i);
		c->queue = str_of(map_get(k, "queue"));
		if (!c->queue && !(c->queue = au_strdup(parent->queue ? parent->queue : AU_DEFAULT_QUEUE)))
			goto oom_made;
		au_id_from_key(c->id, c->queue, key);   /* a retried parent adds the same */
		c->flow = au_strdup(parent->flow ? parent->flow : parent->id);
		c->dep_policy = parent->dep_policy;
		c->max_attempts = parent->max_attempts;
		c->ttl_s = parent->ttl_s;
		c->created_at_ms = au_now_ms();
		if (int_of(map_get(k, "priority"), AU_PRIORITY_MIN, AU_PRIORITY_MAX, &x) < 0 ||
		    int_of(map_get(k, "max_attempts"), 1, 1000, &x) < 0 ||
		    int_of(map_get(k, "timeout_ms"), 0, UINT32_MAX, &x) < 0) {
			made++;
			au_seterr(err, AU_EINVAL, "'$spawn' element %zu: priority, max_attempts or"
				  " timeout_ms out of range", i);
			goto out;
		}
		x = parent->priority;
		int_of(map_get(k, "priority"), AU_PRIORITY_MIN, AU_PRIORITY_MAX, &x);
		c->priority = (int)x;
		x = c->max_attempts;
		int_of(map_get(k, "max_attempts"), 1, 1000, &x);
		c->max_attempts = (uint32_t)x;
		x = 0;
		int_of(map_get(k, "timeout_ms"), 0, UINT32_MAX, &x);
		c->timeout_ms = (uint32_t)x;
		a = map_get(k, "args");
		b.len = 0;
		if (a) {
			msgpack_packer pk;

			msgpack_packer_init(&pk, &b, buf_write);
			if (msgpack_pack_object(&pk, *a) < 0)
				goto oom_made;
		} else if (au_mp_nil(&b) < 0) {
			goto oom_made;
		}
		c->args = au_buf_detach(&b, &c->args_len);
		if (!c->flow || !c->args)
			goto oom_made;
		enc.len = 0;
		if (au_computation_encode(c, &enc, err) < 0) {
			made++;
			goto out;
		}
	}
	/* the parent's record: its result without "$spawn", with "$children" */
	{
		uint32_t keep = 0;

		for (i = 0; i < res.via.map.size; i++)
			keep += !is_key(&res.via.map.ptr[i].key, "$spawn") &&
				!is_key(&res.via.map.ptr[i].key, "$children");
		b.len = 0;
		if (au_mp_map(&b, keep + 1) < 0)
			goto oom;
		for (i = 0; i < res.via.map.size; i++) {
			msgpack_packer pk;

			if (is_key(&res.via.map.ptr[i].key, "$spawn") ||
			    is_key(&res.via.map.ptr[i].key, "$children"))
				continue;
			msgpack_packer_init(&pk, &b, buf_write);
			if (msgpack_pack_object(&pk, res.via.map.ptr[i].key) < 0 ||
			    msgpack_pack_object(&pk, res.via.map.ptr[i].val) < 0)
				goto oom;
		}
		if (au_mp_str(&b, "$children", 9) < 0 || au_mp_array(&b, (uint32_t)made) < 0)
			goto oom;
		for (i = 0; i < made; i++)
			if (au_mp_str(&b, v[i].id, AU_ID_SIZE - 1) < 0)
				goto oom;
		*out = au_buf_detach(&b, out_len);
		if (!*out)
			goto oom;
	}
	*kids = v;
	*n = made;
	v = NULL;
	rc = 0;
	goto out;
oom_made:
	made++;
oom:
	au_seterr(err, AU_ENOMEM, "out of memory");
out:
	if (v) {
		for (i = 0; i < made; i++)
			au_computation_release(&v[i]);
		free(v);
	}
	au_buf_release(&b);
	au_buf_release(&enc);
	msgpack_zone_destroy(&zone);
	return rc;
}
