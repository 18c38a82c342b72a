/*
 * logging.c - the built-in logging middleware: a line per event of a
 * computation, with an RFC 3339 time (UTC, milliseconds), as text or as
 * one JSON object per line (au_logging_new; a NULL ctx is text on stderr).
 *
 *   2026-12-02T14:03:11.482Z au: 9f2c...e1 ch.query queue=default attempt=1/3 completed 3.2ms worker=host:123
 *   {"ts":"2026-12-02T14:03:11.482Z","event":"finished","status":"completed","id":"9f2c...e1",
 *    "task":"ch.query","queue":"default","attempt":1,"max_attempts":3,"duration_ms":3.2,
 *    "worker":"host:123","query_id":"9f2c...e1-1"}
 *
 * Events: enqueued (a client's), started (at --log-level debug only: it
 * doubles the lines), finished, failed, retried, dead, cancelled.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "core.h"
#include "middleware.h"

/*
 * A worker's lines are gathered and written together, at most
 * LOG_FLUSH_MS after the first of them or once LOG_FLUSH_BYTES are
 * waiting, and when the worker is freed: a write per line was a system
 * call per computation. A process killed (SIGKILL) loses at most that
 * much of its log. A client's lines, and those of a NULL ctx, are written
 * at once.
 */
#define LOG_FLUSH_MS 50
#define LOG_FLUSH_BYTES 32768

struct logging {
	FILE *out;
	enum au_log_format format;
	struct au_buf line;         /* the line being made, its memory kept */
	struct au_buf pending;      /* lines not yet written */
	struct event *flush_ev;     /* on the worker's loop, made by the first line */
};

void *au_logging_new(FILE *out, enum au_log_format format)
{
	struct logging *l = calloc(1, sizeof(*l));

	if (l) {
		l->out = out;
		l->format = format;
	}
	return l;
}

static void now_rfc3339(char out[32])
{
	struct timespec ts;
	struct tm tm;
	size_t n;

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	n = strftime(out, 24, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out + n, 32 - n, ".%03dZ", (int)(ts.tv_nsec / 1000000));
}

/* s as a JSON string */
static void json_str(struct au_buf *b, const char *s)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *p = (const unsigned char *)(s ? s : "");

	au_buf_append(b, "\"", 1);
	for (; *p; p++) {
		if (*p == '"' || *p == '\\') {
			char e[2] = { '\\', (char)*p };

			au_buf_append(b, e, 2);
		} else if (*p < 0x20) {
			char e[6] = { '\\', 'u', '0', '0', hex[*p >> 4], hex[*p & 15] };

			au_buf_append(b, e, 6);
		} else {
			au_buf_append(b, p, 1);
		}
	}
	au_buf_append(b, "\"", 1);
}

static void json_key(struct au_buf *b, const char *key, const char *value)
{
	if (!value)
		return;
	au_buf_printf(b, ",\"%s\":", key);
	json_str(b, value);
}

static void write_out(FILE *out, const void *p, size_t n)
{
	flockfile(out);
	fwrite(p, 1, n, out);
	fflush(out);
	funlockfile(out);
}

static void flush_pending(struct logging *l)
{
	if (l->pending.len)
		write_out(l->out ? l->out : stderr, l->pending.data, l->pending.len);
	au_buf_reset(&l->pending);
}

static void flush_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	flush_pending(arg);
}

/* The line in b, with its newline: now, or with the others of the loop. */
static void emit(struct logging *l, struct au_buf *b, struct event_base *base)
{
	static const struct timeval soon = { 0, LOG_FLUSH_MS * 1000 };

	au_buf_append(b, "\n", 1);
	if (l && base && (l->flush_ev || (l->flush_ev = evtimer_new(base, flush_cb, l))) &&
	    au_buf_append(&l->pending, b->data, b->len) == 0) {
		if (l->pending.len >= LOG_FLUSH_BYTES)
			flush_pending(l);
		else if (!evtimer_pending(l->flush_ev, NULL))
			evtimer_add(l->flush_ev, &soon);
	} else if (b->data) {
		write_out(l && l->out ? l->out : stderr, b->data, b->len);
	}
	if (l && b == &l->line)
		au_buf_reset(b);
	else
		au_buf_release(b);
}

static void logging_free(void *ctx)
{
	struct logging *l = ctx;

	if (!l)
		return;
	flush_pending(l);
	if (l->flush_ev)
		event_free(l->flush_ev);
	au_buf_release(&l->line);
	au_buf_release(&l->pending);
	free(l);
}

static const char *trace_of(const struct au_computation *c)
{
	return au_computation_header(c, "traceparent");
}

/* One event of an attempt. */
static void line(struct logging *l, struct au_run *run, const char *event, const char *word)
{
	struct au_buf own = AU_BUF_INIT, *bp = l ? &l->line : &own;
	const struct au_computation *c = run->c;
	char ts[32];
	int started = !strcmp(event, "started");
	double ms = started ? 0 : (double)(run->finished_at_us - run->started_at_us) / 1000.0;

	now_rfc3339(ts);
	if (l && l->format == AU_LOG_JSON) {
		au_buf_printf(bp, "{\"ts\":\"%s\",\"event\":\"%s\"", ts, event);
		if (!started)
			json_key(bp, "status", au_status_name(run->status));
		json_key(bp, "id", c->id);
		json_key(bp, "task", c->task);
		json_key(bp, "queue", run->queue ? run->queue : c->queue);
		au_buf_printf(bp, ",\"attempt\":%u,\"max_attempts\":%u", c->attempts, c->max_attempts);
		if (started)
			au_buf_printf(bp, ",\"queued_ms\":%llu", (unsigned long long)run->queued_ms);
		else
			au_buf_printf(bp, ",\"duration_ms\":%.1f", ms);
		json_key(bp, "worker", run->worker);
		json_key(bp, "query_id", run->query_id);
		json_key(bp, "traceparent", trace_of(c));
		if (run->retry_in_ms)
			au_buf_printf(bp, ",\"retry_in_ms\":%llu", (unsigned long long)run->retry_in_ms);
		if (run->ch_code)
			au_buf_printf(bp, ",\"ch_code\":%d", run->ch_code);
		if (!started)
			json_key(bp, "error", run->error);
		au_buf_append(bp, "}", 1);
	} else {
		const char *trace = trace_of(c);

		au_buf_printf(bp, "%s au: %s %s queue=%s attempt=%u/%u %s", ts, c->id,
			      c->task ? c->task : "?", run->queue ? run->queue : c->queue ? c->queue : "?",
			      c->attempts, c->max_attempts, word);
		if (started)
			au_buf_printf(bp, " queued=%llums", (unsigned long long)run->queued_ms);
		else
			au_buf_printf(bp, " %.1fms", ms);
		au_buf_printf(bp, " worker=%s", run->worker);
		if (run->retry_in_ms)
			au_buf_printf(bp, " retry_in=%llums", (unsigned long long)run->retry_in_ms);
		if (run->ch_code)
			au_buf_printf(bp, " ch_code=%d", run->ch_code);
		if (trace)
			au_buf_printf(bp, " trace=%s", trace);
		if (run->error && !started)
			au_buf_printf(bp, ": %s", run->error);
	}
	emit(l, bp, au_run_base(run));
}

static int on_before(void *ctx, struct au_run *run, char *errbuf, size_t errlen)
{
	(void)errbuf;
	(void)errlen;
	if (au_log_level() <= AU_LOG_DEBUG)
		line(ctx, run, "started", "started");
	return AU_HOOK_OK;
}

static int on_after(void *ctx, struct au_run *run, char *errbuf, size_t errlen)
{
	(void)errbuf;
	(void)errlen;
	line(ctx, run, "finished", "completed");
	return AU_HOOK_OK;
}

/* failed for good (not dead-lettered) and cancelled; retried and dead
 * have hooks of their own */
static int on_error(void *ctx, struct au_run *run, char *errbuf, size_t errlen)
{
	(void)errbuf;
	(void)errlen;
	if (run->status == AU_CANCELLED)
		line(ctx, run, "cancelled", "cancelled");
	else if (run->status == AU_FAILED && !run->dead)
		line(ctx, run, "failed", "failed");
	return AU_HOOK_OK;
}

static int on_retry(void *ctx, struct au_run *run, char *errbuf, size_t errlen)
{
	(void)errbuf;
	(void)errlen;
	line(ctx, run, "retried", "retrying");
	return AU_HOOK_OK;
}

static int on_dead(void *ctx, struct au_run *run, char *errbuf, size_t errlen)
{
	(void)errbuf;
	(void)errlen;
	line(ctx, run, "dead", "failed dead");
	return AU_HOOK_OK;
}

static int on_enqueue(void *ctx, struct au_enqueue_ctx *e, char *errbuf, size_t errlen)
{
	struct logging *l = ctx;
	const struct au_computation *c = e->c;
	struct au_buf b = AU_BUF_INIT;
	const char *trace = trace_of(c);
	char ts[32];

	(void)errbuf;
	(void)errlen;
	if (au_log_level() > AU_LOG_INFO)
		return AU_HOOK_OK;
	now_rfc3339(ts);
	if (l && l->format == AU_LOG_JSON) {
		au_buf_printf(&b, "{\"ts\":\"%s\",\"event\":\"enqueued\"", ts);
		json_key(&b, "id", c->id);
		json_key(&b, "task", c->task);
		json_key(&b, "queue", c->queue);
		au_buf_printf(&b, ",\"max_attempts\":%u", c->max_attempts);
		json_key(&b, "traceparent", trace);
		au_buf_append(&b, "}", 1);
	} else {
		au_buf_printf(&b, "%s au: %s %s queue=%s enqueued", ts, c->id, c->task,
			      c->queue ? c->queue : "default");
		if (trace)
			au_buf_printf(&b, " trace=%s", trace);
	}
	emit(l, &b, NULL);
	return AU_HOOK_OK;
}

const struct au_middleware_ops au_logging_middleware = {
	.name = "logging",
	.before_enqueue = on_enqueue,
	.before = on_before,
	.after = on_after,
	.on_error = on_error,
	.on_retry = on_retry,
	.on_dead = on_dead,
	.free = logging_free,
};
