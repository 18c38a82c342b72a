/*
 * worker.c - a worker embedded in a program of its own: on its own libevent
 * loop it serves the built-in tasks (au.echo, ch.query, ...) and one task
 * of its own, example.add, logs a line per computation, and stops cleanly
 * on SIGTERM or SIGINT (what runs finishes, the rest goes back unharmed).
 *
 *   cc -o worker worker.c $(pkg-config --cflags --libs au libevent msgpack)
 *   ./worker &                                  serves the queue 'default'
 *   ./client example.add '{"a":2,"b":3}'        prints {"a":2,"b":3} -> 5
 *
 * It calls libevent (the loop is the program's) and msgpack-c (to read the
 * arguments and write the result) itself, so it links them besides libau.
 * The servers come from AU_QUEUE, AU_STORE and AU_CLICKHOUSE.
 */
#define _POSIX_C_SOURCE 200809L   /* SIGPIPE */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <au.h>
#include <event2/event.h>
#include <msgpack.h>

/* The integer under key in a msgpack map; 0 if it is there, else -1. */
static int map_int(const msgpack_object *map, const char *key, int64_t *out)
{
	uint32_t i;

	for (i = 0; i < map->via.map.size; i++) {
		const msgpack_object *k = &map->via.map.ptr[i].key, *v = &map->via.map.ptr[i].val;

		if (k->type != MSGPACK_OBJECT_STR || k->via.str.size != strlen(key) ||
		    memcmp(k->via.str.ptr, key, k->via.str.size) != 0)
			continue;
		if (v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
			*out = v->via.i64;
			return 0;
		}
		if (v->type == MSGPACK_OBJECT_POSITIVE_INTEGER && v->via.u64 <= INT64_MAX) {
			*out = (int64_t)v->via.u64;
			return 0;
		}
		return -1;
	}
	return -1;
}

/*
 * example.add: {"a": A, "b": B} -> A + B, for integers. A task runs on the
 * loop and must not block; it ends with au_task_complete or au_task_fail,
 * exactly once (here at once; a task that waits for something ends later,
 * from the callback that gets it).
 */
static void add(struct au_task_ctx *ctx, const struct au_computation *c, void *arg)
{
	msgpack_unpacked u;
	msgpack_sbuffer out;
	msgpack_packer pk;
	int64_t a, b, sum;

	(void)arg;
	msgpack_unpacked_init(&u);
	if (msgpack_unpack_next(&u, (const char *)c->args, c->args_len, NULL) !=
		    MSGPACK_UNPACK_SUCCESS || u.data.type != MSGPACK_OBJECT_MAP ||
	    map_int(&u.data, "a", &a) < 0 || map_int(&u.data, "b", &b) < 0) {
		msgpack_unpacked_destroy(&u);
		/* retrying would not help: fail for good */
		au_task_fail(ctx, AU_FAIL_FOR_GOOD, "example.add takes {\"a\": integer, \"b\": integer}");
		return;
	}
	msgpack_unpacked_destroy(&u);
	if (__builtin_add_overflow(a, b, &sum)) {
		au_task_fail(ctx, AU_FAIL_FOR_GOOD, "example.add: %lld + %lld overflows", (long long)a,
			     (long long)b);
		return;
	}
	/* the result is one msgpack value, which au_task_complete copies */
	msgpack_sbuffer_init(&out);
	msgpack_packer_init(&pk, &out, msgpack_sbuffer_write);
	if (msgpack_pack_int64(&pk, sum) != 0)
		au_task_fail(ctx, AU_FAIL_RETRY, "example.add: out of memory");
	else
		au_task_complete(ctx, (const unsigned char *)out.data, out.size);
	msgpack_sbuffer_destroy(&out);
}

/* SIGTERM, SIGINT: stop leasing, let what runs finish within the grace
 * period, release the rest, then leave the loop. */
static void on_signal(evutil_socket_t sig, short what, void *arg)
{
	(void)what;
	fprintf(stderr, "worker: %s: stopping\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
	au_worker_stop(arg);
}

int main(void)
{
	struct au_config cfg = { 0 };   /* NULL fields: from the environment */
	struct au_worker_opts opts = { .concurrency = 8 };   /* 0 fields: the defaults */
	struct event_base *base = NULL;
	struct event *sigterm = NULL, *sigint = NULL;
	struct au_registry *reg = NULL;
	struct au_worker *w = NULL;
	int rc = 1;

	/* a server that drops a connection must not kill the process */
	signal(SIGPIPE, SIG_IGN);
	if (!(base = event_base_new()) || !(reg = au_registry_new()) ||
	    au_registry_add(reg, "example.add", add, NULL) < 0) {
		fprintf(stderr, "worker: out of memory\n");
		goto out;
	}
	/* The worker attaches to our loop; NULL only when memory runs out, a
	 * server that cannot be reached is in au_worker_err. */
	if (!(w = au_worker_new(&cfg, &opts, reg, base))) {
		fprintf(stderr, "worker: out of memory\n");
		goto out;
	}
	if (au_worker_err(w)->code) {
		fprintf(stderr, "worker: %s\n", au_worker_err(w)->str);
		goto out;
	}
	/* one line per computation on stderr (ctx: a FILE *, NULL for stderr) */
	if (au_worker_use(w, &au_logging_middleware, NULL) < 0) {
		fprintf(stderr, "worker: %s\n", au_worker_err(w)->str);
		goto out;
	}
	sigterm = evsignal_new(base, SIGTERM, on_signal, w);
	sigint = evsignal_new(base, SIGINT, on_signal, w);
	if (!sigterm || !sigint || evsignal_add(sigterm, NULL) < 0 || evsignal_add(sigint, NULL) < 0) {
		fprintf(stderr, "worker: unable to catch SIGTERM and SIGINT\n");
		goto out;
	}
	if (au_worker_start(w) < 0) {
		fprintf(stderr, "worker: %s\n", au_worker_err(w)->str);
		goto out;
	}
	fprintf(stderr, "worker: %s ready\n", au_worker_id(w));
	/* runs until au_worker_stop has finished (or `au worker stop ID`) */
	if (event_base_dispatch(base) < 0) {
		fprintf(stderr, "worker: the event loop failed\n");
		goto out;
	}
	fprintf(stderr, "worker: stopped\n");
	rc = 0;

out:
	/* the worker before the registry it borrows and the loop it is on */
	if (sigterm)
		event_free(sigterm);
	if (sigint)
		event_free(sigint);
	au_worker_free(w);
	au_registry_free(reg);
	if (base)
		event_base_free(base);
	return rc;
}
