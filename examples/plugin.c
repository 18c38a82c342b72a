/*
 * plugin.c - a plugin for `au worker --plugin` (include/au.h, "Plugins"):
 * two tasks and a middleware in a shared library the worker loads with
 * dlopen, without a program of its own.
 *
 *   example.stats {"n": N}     two ClickHouse queries at once on the
 *                              worker's loop, one result from both:
 *                              {"tenant", "count", "sum", "clickhouse"}
 *   example.slow {"ms": M}     blocking work (a sleep) on the worker's pool
 *                              threads through au_task_offload, while the
 *                              loop runs other computations:
 *                              {"slept_ms": M, "off_loop": true}
 *   example.tenant             a middleware whose before hook reads the
 *                              'tenant' header: an example.* computation
 *                              without one is refused (dead-lettered with
 *                              the reason), never run
 *
 *   make                       builds build/rel/examples/libauexample.so
 *   au worker --plugin build/rel/examples/libauexample.so
 *   au enqueue example.stats --args '{"n":1000}' --header tenant=acme --wait
 *
 * It calls au's functions without linking libau: the worker that loads it
 * has them. For ClickHouse it uses the worker's own asynchronous client
 * (au_task_clickhouse), whose header is private to au: this plugin is
 * rebuilt with au (the Makefile does it). msgpack-c reads the arguments
 * and writes the results.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <au.h>
#include <msgpack.h>

#include "clickhouse.h"

AU_PLUGIN_DECLARE;

/* The integer under key in the msgpack map args, or def when it is not
 * there; -1 when it is there but no integer in min..max. */
static int arg_int(const struct au_computation *c, const char *key, int64_t def, int64_t min,
		   int64_t max, int64_t *out)
{
	msgpack_unpacked u;
	uint32_t i;
	int rc = 0;

	*out = def;
	msgpack_unpacked_init(&u);
	if (msgpack_unpack_next(&u, (const char *)c->args, c->args_len, NULL) != MSGPACK_UNPACK_SUCCESS ||
	    u.data.type != MSGPACK_OBJECT_MAP) {
		msgpack_unpacked_destroy(&u);
		return -1;
	}
	for (i = 0; i < u.data.via.map.size; i++) {
		const msgpack_object *k = &u.data.via.map.ptr[i].key, *v = &u.data.via.map.ptr[i].val;

		if (k->type != MSGPACK_OBJECT_STR || k->via.str.size != strlen(key) ||
		    memcmp(k->via.str.ptr, key, k->via.str.size) != 0)
			continue;
		if (v->type == MSGPACK_OBJECT_POSITIVE_INTEGER && v->via.u64 <= INT64_MAX)
			*out = (int64_t)v->via.u64;
		else if (v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
			*out = v->via.i64;
		else
			rc = -1;
	}
	msgpack_unpacked_destroy(&u);
	return rc < 0 || *out < min || *out > max ? -1 : 0;
}

static void pack_str(msgpack_packer *pk, const char *s)
{
	size_t n = strlen(s);

	msgpack_pack_str(pk, n);
	msgpack_pack_str_body(pk, s, n);
}

/* ---- example.stats: two queries, one result ---- */

enum { Q_SUMS, Q_VERSION, NQ };

struct stats;

/* One of the two queries; its address is the request's arg, so that
 * au_ch_cancel can tell them apart. */
struct query {
	struct stats *st;
	int answered;
	char id[AU_ID_SIZE + 40];      /* "<id>-<attempt>-sums": a query_id each */
};

struct stats {
	struct au_task_ctx *ctx;
	struct au_clickhouse *ch;
	char tenant[128];
	struct query q[NQ];
	int left;                      /* queries not answered yet */
	int fail_kind;                 /* of the first error */
	char error[512];               /* the first error, "" for none */
	unsigned long long count, sum;
	char version[64];
};

static int kind_of(const struct au_clickhouse *ch, const struct au_ch_response *r)
{
	switch (au_ch_fault(ch, r)) {
	case AU_CH_OUTAGE:
		return AU_FAIL_OUTAGE;
	case AU_CH_RETRY:
		return AU_FAIL_RETRY;
	default:
		return AU_FAIL_FOR_GOOD;
	}
}

/* Both answered: one result, or the first error. */
static void stats_finish(struct stats *st)
{
	msgpack_sbuffer out;
	msgpack_packer pk;

	if (st->error[0]) {
		au_task_fail(st->ctx, st->fail_kind, "example.stats: %s", st->error);
		free(st);
		return;
	}
	msgpack_sbuffer_init(&out);
	msgpack_packer_init(&pk, &out, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 4);
	pack_str(&pk, "tenant");
	pack_str(&pk, st->tenant);
	pack_str(&pk, "count");
	msgpack_pack_unsigned_long_long(&pk, st->count);
	pack_str(&pk, "sum");
	msgpack_pack_unsigned_long_long(&pk, st->sum);
	pack_str(&pk, "clickhouse");
	pack_str(&pk, st->version);
	au_task_complete(st->ctx, (const unsigned char *)out.data, out.size);
	msgpack_sbuffer_destroy(&out);
	free(st);
}

/* On the loop: one query answered (TabSeparated, the default format). */
static void on_answer(struct au_ch_response *resp, void *arg)
{
	struct query *q = arg;
	struct stats *st = q->st;
	const char *body = resp->body.data ? (const char *)resp->body.data : "";
	int n = (int)resp->body.len;

	q->answered = 1;
	st->left--;
	if (resp->err.code) {
		if (!st->error[0]) {
			snprintf(st->error, sizeof(st->error), "%s", resp->err.str);
			st->fail_kind = kind_of(st->ch, resp);
		}
	} else if (q == &st->q[Q_SUMS]) {
		if (sscanf(body, "%llu\t%llu", &st->count, &st->sum) != 2 && !st->error[0]) {
			snprintf(st->error, sizeof(st->error), "unexpected answer '%.*s'", n, body);
			st->fail_kind = AU_FAIL_FOR_GOOD;
		}
	} else {
		while (n && (body[n - 1] == '\n' || body[n - 1] == '\r'))
			n--;
		snprintf(st->version, sizeof(st->version), "%.*s", n, body);
	}
	if (!st->left)
		stats_finish(st);
}

/* The worker gave up (timeout, shutdown, a cancel): drop what is still
 * out, stop it on the server, and never report. */
static void stats_cancel(void *arg)
{
	struct stats *st = arg;
	int i;

	for (i = 0; i < NQ; i++)
		if (!st->q[i].answered) {
			au_ch_cancel(st->ch, on_answer, &st->q[i]);
			au_ch_kill_query_async(st->ch, st->q[i].id);
		}
	free(st);
}

static void stats_task(struct au_task_ctx *ctx, const struct au_computation *c, void *arg)
{
	static const char *const suffix[NQ] = { "sums", "version" };
	struct au_clickhouse *ch = au_task_clickhouse(ctx);
	const char *tenant = au_computation_header(c, "tenant");
	char sql[NQ][128];
	struct stats *st;
	int64_t n;
	int i;

	(void)arg;
	if (arg_int(c, "n", 1000, 0, 1000000000, &n) < 0) {
		au_task_fail(ctx, AU_FAIL_FOR_GOOD, "example.stats takes {\"n\": 0..1000000000}");
		return;
	}
	if (!ch) {
		au_task_fail(ctx, AU_FAIL_FOR_GOOD, "example.stats: no clickhouse server configured");
		return;
	}
	if (!(st = calloc(1, sizeof(*st)))) {
		au_task_fail(ctx, AU_FAIL_RETRY, "example.stats: out of memory");
		return;
	}
	st->ctx = ctx;
	st->ch = ch;
	snprintf(st->tenant, sizeof(st->tenant), "%s", tenant ? tenant : "");
	snprintf(sql[Q_SUMS], sizeof(sql[Q_SUMS]), "SELECT count(), sum(number) FROM numbers(%lld)",
		 (long long)n);
	snprintf(sql[Q_VERSION], sizeof(sql[Q_VERSION]), "SELECT version()");
	/* both go out now and run at once; the first error wins */
	for (i = 0; i < NQ; i++) {
		struct au_ch_query q = { .sql = sql[i], .timeout_ms = c->timeout_ms };

		st->q[i].st = st;
		snprintf(st->q[i].id, sizeof(st->q[i].id), "%s-%s", au_task_query_id(ctx), suffix[i]);
		q.query_id = st->q[i].id;
		if (au_ch_send(ch, &q, on_answer, &st->q[i]) < 0)
			break;
		st->left++;
	}
	if (i < NQ) {   /* the one sent must not call back into freed memory */
		if (i)
			au_ch_cancel(ch, on_answer, &st->q[0]);
		free(st);
		au_task_fail(ctx, AU_FAIL_RETRY, "example.stats: unable to start the clickhouse request");
		return;
	}
	au_task_on_cancel(ctx, stats_cancel, st);
}

/* ---- example.slow: blocking work on the pool ---- */

struct slow {
	int64_t ms;
	pthread_t loop;                /* the thread the task began on */
	int off_loop;                  /* work ran on another thread */
};

/* On a pool thread: blocks, as a call into a blocking library would. */
static void slow_work(void *arg)
{
	struct slow *s = arg;
	struct timespec ts = { (time_t)(s->ms / 1000), (long)(s->ms % 1000) * 1000000L };

	s->off_loop = !pthread_equal(pthread_self(), s->loop);
	while (nanosleep(&ts, &ts) < 0)
		;
}

/* Back on the loop; ctx NULL when the worker gave up on the attempt
 * meanwhile (its timeout, shutdown): only free. */
static void slow_done(struct au_task_ctx *ctx, void *arg)
{
	struct slow *s = arg;
	msgpack_sbuffer out;
	msgpack_packer pk;

	if (ctx) {
		msgpack_sbuffer_init(&out);
		msgpack_packer_init(&pk, &out, msgpack_sbuffer_write);
		msgpack_pack_map(&pk, 2);
		pack_str(&pk, "slept_ms");
		msgpack_pack_int64(&pk, s->ms);
		pack_str(&pk, "off_loop");
		if (s->off_loop)
			msgpack_pack_true(&pk);
		else
			msgpack_pack_false(&pk);
		au_task_complete(ctx, (const unsigned char *)out.data, out.size);
		msgpack_sbuffer_destroy(&out);
	}
	free(s);
}

static void slow_task(struct au_task_ctx *ctx, const struct au_computation *c, void *arg)
{
	struct slow *s;

	(void)arg;
	if (!(s = calloc(1, sizeof(*s)))) {
		au_task_fail(ctx, AU_FAIL_RETRY, "example.slow: out of memory");
		return;
	}
	if (arg_int(c, "ms", 100, 0, 600000, &s->ms) < 0) {
		free(s);
		au_task_fail(ctx, AU_FAIL_FOR_GOOD, "example.slow takes {\"ms\": 0..600000}");
		return;
	}
	s->loop = pthread_self();
	if (au_task_offload(ctx, slow_work, slow_done, s) < 0) {
		free(s);
		au_task_fail(ctx, AU_FAIL_RETRY, "example.slow: unable to hand the work to a thread");
	}
}

/* ---- example.tenant: a header the before hook checks ---- */

struct tenant_counts {
	unsigned long admitted, refused;
};

static int tenant_before(void *ctx, struct au_run *run, char *errbuf, size_t errlen)
{
	struct tenant_counts *n = ctx;
	const char *t;

	if (strncmp(run->c->task, "example.", 8) != 0)
		return AU_HOOK_OK;   /* not ours to police */
	t = au_computation_header(run->c, "tenant");
	if (!t || !*t) {
		n->refused++;
		snprintf(errbuf, errlen, "example.tenant: task '%s' needs a 'tenant' header",
			 run->c->task);
		return AU_HOOK_REFUSE;
	}
	n->admitted++;
	return AU_HOOK_OK;
}

static void tenant_free(void *ctx)
{
	struct tenant_counts *n = ctx;

	if (n && (n->admitted || n->refused))
		fprintf(stderr, "example.tenant: %lu admitted, %lu refused\n", n->admitted, n->refused);
	free(n);
}

static const struct au_middleware_ops tenant_ops = {
	.name = "example.tenant",
	.before = tenant_before,
	.free = tenant_free,
};

/* Once per worker that loads the library: what it serves. */
int au_plugin_init(struct au_plugin *p)
{
	struct tenant_counts *n = calloc(1, sizeof(*n));

	if (!n)
		return au_plugin_error(p, "out of memory");
	if (au_plugin_add_middleware(p, &tenant_ops, n) < 0 ||   /* n is the worker's now */
	    au_plugin_add_task(p, "example.stats", stats_task, NULL) < 0 ||
	    au_plugin_add_task(p, "example.slow", slow_task, NULL) < 0)
		return au_plugin_error(p, "out of memory");
	return 0;
}
