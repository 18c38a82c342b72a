/*
 * builtin_tasks.c - the built-in tasks that need no server: au.noop, au.echo,
 * au.sleep, au.fail (tests, benchmarks, health checks). The ClickHouse tasks
 * are in tasks/ch_tasks.c.
 */
#include <stdlib.h>

#include <event2/event.h>
#include <jansson.h>

#include "core.h"
#include "tasks.h"

static void task_noop(struct au_task_ctx *ctx, const struct au_computation *c, void *arg)
{
	static const unsigned char nil = 0xc0;

	(void)c;
	(void)arg;
	au_task_complete(ctx, &nil, 1);
}

static void task_echo(struct au_task_ctx *ctx, const struct au_computation *c, void *arg)
{
	static const unsigned char nil = 0xc0;

	(void)arg;
	if (c->args_len)
		au_task_complete(ctx, c->args, c->args_len);
	else
		au_task_complete(ctx, &nil, 1);
}

/* Reads an integer member of a msgpack map argument; def when absent. */
static long long arg_int(const struct au_computation *c, const char *key, long long def)
{
	struct json_t *j = NULL;
	long long v = def;

	if (c->args_len && au_msgpack_to_jansson(c->args, c->args_len, &j, NULL) == 0) {
		json_t *m = json_object_get(j, key);

		if (json_is_integer(m))
			v = json_integer_value(m);
		json_decref(j);
	}
	return v;
}

struct sleep_state {
	struct au_task_ctx *ctx;
	struct event *ev;
};

static void sleep_cancel(void *arg)
{
	struct sleep_state *s = arg;

	event_free(s->ev);
	free(s);
}

static void sleep_done(evutil_socket_t fd, short what, void *arg)
{
	struct sleep_state *s = arg;
	static const unsigned char nil = 0xc0;

	(void)fd;
	(void)what;
	event_free(s->ev);
	au_task_complete(s->ctx, &nil, 1);
	free(s);
}

/* au.sleep {"ms": N}: completes after N ms without blocking the loop. */
static void task_sleep(struct au_task_ctx *ctx, const struct au_computation *c, void *arg)
{
	long long ms = arg_int(c, "ms", 0);
	struct sleep_state *s = calloc(1, sizeof(*s));
	struct timeval tv;

	(void)arg;
	if (ms < 0 || ms > 86400000LL) {
		free(s);
		au_task_fail(ctx, 0, "au.sleep: 'ms' must be between 0 and 86400000");
		return;
	}
	if (!s || !(s->ev = evtimer_new(au_task_base(ctx), sleep_done, s))) {
		free(s);
		au_task_fail(ctx, 1, "out of memory");
		return;
	}
	s->ctx = ctx;
	au_task_on_cancel(ctx, sleep_cancel, s);
	tv.tv_sec = (time_t)(ms / 1000);
	tv.tv_usec = (suseconds_t)(ms % 1000) * 1000;
	evtimer_add(s->ev, &tv);
}

/* au.fail {"message": "...", "retryable": bool, "outage": bool}: fails on
 * purpose; "outage" as a task does when a server it needs is away. */
static void task_fail(struct au_task_ctx *ctx, const struct au_computation *c, void *arg)
{
	struct json_t *j = NULL;
	const char *msg = "failed on purpose";
	int retryable = 0;

	(void)arg;
	if (c->args_len && au_msgpack_to_jansson(c->args, c->args_len, &j, NULL) == 0) {
		if (json_is_string(json_object_get(j, "message")))
			msg = json_string_value(json_object_get(j, "message"));
		retryable = json_is_true(json_object_get(j, "retryable")) ? AU_FAIL_RETRY : AU_FAIL_FOR_GOOD;
		if (json_is_true(json_object_get(j, "outage")))
			retryable = AU_FAIL_OUTAGE;
	}
	au_task_fail(ctx, retryable, "%s", msg);
	json_decref(j);
}

int au_tasks_add_builtins(struct au_registry *reg)
{
	if (au_registry_add(reg, "au.noop", task_noop, NULL) < 0 ||
	    au_registry_add(reg, "au.echo", task_echo, NULL) < 0 ||
	    au_registry_add(reg, "au.sleep", task_sleep, NULL) < 0 ||
	    au_registry_add(reg, "au.fail", task_fail, NULL) < 0 ||
	    au_ch_tasks_add(reg) < 0 || au_flow_tasks_add(reg) < 0)
		return -1;
	return 0;
}
