/*
 * metrics.c - the built-in metrics middleware: counters and latency
 * histograms per task and queue, served in the Prometheus text format on
 * GET /metrics (au_metrics_listen) and carried by the worker's beat for
 * `au stats` (au_metrics_blob, middleware/metrics.h).
 *
 * Every hook and the HTTP endpoint run on the worker's loop: no locks. A
 * series (task, queue) is found in an open-addressing table; it is
 * allocated the first time its pair is seen and never again, so the steady
 * state allocates nothing per computation. Past AU_METRICS_MAX_SERIES pairs
 * the rest share one series, task "_other".
 *
 * in_flight goes up in before and down at the outcome (after, on_error);
 * an attempt that a later middleware's before delays or that an outage
 * releases has no outcome, so register this middleware last for an exact
 * gauge (the `au` command does).
 */
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/util.h>

#include "core.h"
#include "metrics.h"
#include "middleware.h"

#define AU_METRICS_MAX_SERIES 4096
#define NB (AU_METRICS_NBOUNDS + 1)

const uint64_t au_metrics_bounds_us[AU_METRICS_NBOUNDS] = {
	5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000, 2500000, 5000000,
	10000000, 30000000, 60000000, 300000000, 1800000000
};

struct hist {
	uint64_t n[NB];              /* per interval, not cumulative */
	uint64_t sum_us;
};

struct series {
	char task[128];
	char queue[104];
	uint64_t enqueued, started, completed, failed, retried, dead, cancelled;
	int64_t in_flight;
	uint64_t ch_rows, ch_bytes;
	struct hist run, wait;
};

struct metrics {
	struct series **slots;       /* open addressing, cap a power of two */
	size_t cap, n;
	struct series *other;        /* past AU_METRICS_MAX_SERIES */
	struct evhttp *http;
	struct event *retry_ev;      /* au_metrics_listen_wait: the next try */
	char *retry_addr;
	void (*stats_fn)(void *arg, struct au_worker_stats *st);
	void *stats_arg;
};

void *au_metrics_new(struct au_err *err)
{
	struct metrics *m = calloc(1, sizeof(*m));

	if (m && !(m->slots = calloc(m->cap = 64, sizeof(*m->slots)))) {
		free(m);
		m = NULL;
	}
	if (!m)
		au_seterr(err, AU_ENOMEM, "out of memory");
	return m;
}

static void metrics_free(void *ctx)
{
	struct metrics *m = ctx;
	size_t i;

	if (!m)
		return;
	if (m->http)
		evhttp_free(m->http);
	if (m->retry_ev)
		event_free(m->retry_ev);
	for (i = 0; i < m->cap; i++)
		free(m->slots[i]);
	free(m->slots);
	free(m->other);
	free(m->retry_addr);
	free(m);
}

void au_metrics_stats_source(void *ctx, void (*fn)(void *arg, struct au_worker_stats *st),
			     void *arg)
{
	struct metrics *m = ctx;

	m->stats_fn = fn;
	m->stats_arg = arg;
}

static uint64_t hash_of(const char *task, const char *queue)
{
	uint64_t h = 1469598103934665603ull;
	const unsigned char *p;

	for (p = (const unsigned char *)task; *p; p++)
		h = (h ^ *p) * 1099511628211ull;
	h = (h ^ 0xff) * 1099511628211ull;
	for (p = (const unsigned char *)queue; *p; p++)
		h = (h ^ *p) * 1099511628211ull;
	return h;
}

static int same(const struct series *s, const char *task, const char *queue)
{
	return !strncmp(s->task, task, sizeof(s->task) - 1) &&
	       !strncmp(s->queue, queue, sizeof(s->queue) - 1);
}

static int grow(struct metrics *m)
{
	size_t cap = m->cap * 2, i, j;
	struct series **slots = calloc(cap, sizeof(*slots));

	if (!slots)
		return -1;
	for (i = 0; i < m->cap; i++) {
		struct series *s = m->slots[i];

		if (!s)
			continue;
		for (j = hash_of(s->task, s->queue) & (cap - 1); slots[j]; j = (j + 1) & (cap - 1))
			;
		slots[j] = s;
	}
	free(m->slots);
	m->slots = slots;
	m->cap = cap;
	return 0;
}

static struct series *fresh(const char *task, const char *queue)
{
	struct series *s = calloc(1, sizeof(*s));

	if (s) {
		snprintf(s->task, sizeof(s->task), "%s", task);
		snprintf(s->queue, sizeof(s->queue), "%s", queue);
	}
	return s;
}

/* The series of (task, queue); NULL only when out of memory. */
static struct series *series_of(struct metrics *m, const char *task, const char *queue)
{
	size_t i;

	task = task ? task : "?";
	queue = queue ? queue : AU_DEFAULT_QUEUE;
	for (i = hash_of(task, queue) & (m->cap - 1); m->slots[i]; i = (i + 1) & (m->cap - 1))
		if (same(m->slots[i], task, queue))
			return m->slots[i];
	if (m->n >= AU_METRICS_MAX_SERIES || ((m->n + 1) * 10 > m->cap * 7 && grow(m) < 0)) {
		if (!m->other)
			m->other = fresh("_other", "_other");
		return m->other;
	}
	for (i = hash_of(task, queue) & (m->cap - 1); m->slots[i]; i = (i + 1) & (m->cap - 1))
		;
	if (!(m->slots[i] = fresh(task, queue)))
		return NULL;
	m->n++;
	return m->slots[i];
}

static void observe(struct hist *h, uint64_t us)
{
	size_t k = 0;

	while (k < AU_METRICS_NBOUNDS && us > au_metrics_bounds_us[k])
		k++;
	h->n[k]++;
	h->sum_us += us;
}

static const char *queue_of(const struct au_run *run)
{
	return run->queue ? run->queue : run->c->queue;
}

static int on_enqueue(void *ctx, struct au_enqueue_ctx *e, char *errbuf, size_t errlen)
{
	struct series *s = series_of(ctx, e->c->task, e->queue ? e->queue : e->c->queue);

	(void)errbuf;
	(void)errlen;
	if (s)
		s->enqueued++;
	return AU_HOOK_OK;
}

static int on_before(void *ctx, struct au_run *run, char *errbuf, size_t errlen)
{
	struct series *s = series_of(ctx, run->c->task, queue_of(run));

	(void)errbuf;
	(void)errlen;
	if (s) {
		s->started++;
		s->in_flight++;
		observe(&s->wait, run->queued_ms * 1000);
	}
	return AU_HOOK_OK;
}

/* Every outcome: the run time, what ClickHouse read, in_flight down. */
static struct series *outcome(void *ctx, struct au_run *run)
{
	struct series *s = series_of(ctx, run->c->task, queue_of(run));

	if (s) {
		observe(&s->run, run->finished_at_us > run->started_at_us
				 ? run->finished_at_us - run->started_at_us : 0);
		s->ch_rows += run->ch_read_rows;
		s->ch_bytes += run->ch_read_bytes;
		if (s->in_flight > 0)
			s->in_flight--;
	}
	return s;
}

static int on_after(void *ctx, struct au_run *run, char *errbuf, size_t errlen)
{
	struct series *s = outcome(ctx, run);

	(void)errbuf;
	(void)errlen;
	if (s)
		s->completed++;
	return AU_HOOK_OK;
}

static int on_error(void *ctx, struct au_run *run, char *errbuf, size_t errlen)
{
	struct series *s = outcome(ctx, run);

	(void)errbuf;
	(void)errlen;
	if (!s)
		return AU_HOOK_OK;
	if (run->status == AU_CANCELLED)
		s->cancelled++;
	else if (run->status == AU_RETRYING)
		s->retried++;
	else if (run->dead)
		s->dead++;
	else
		s->failed++;
	return AU_HOOK_OK;
}

const struct au_middleware_ops au_metrics_middleware = {
	.name = "metrics",
	.before_enqueue = on_enqueue,
	.before = on_before,
	.after = on_after,
	.on_error = on_error,
	.free = metrics_free,
};

/* ---- the Prometheus text format ---- */

/* A label value: \, " and newlines escaped. */
static void label(struct au_buf *b, const char *name, const char *v)
{
	au_buf_printf(b, "%s=\"", name);
	for (; *v; v++) {
		if (*v == '\\' || *v == '"')
			au_buf_printf(b, "\\%c", *v);
		else if (*v == '\n')
			au_buf_puts(b, "\\n");
		else
			au_buf_append(b, v, 1);
	}
	au_buf_puts(b, "\"");
}

static void labels(struct au_buf *b, const struct series *s)
{
	label(b, "task", s->task);
	au_buf_puts(b, ",");
	label(b, "queue", s->queue);
}

typedef void (*family_fn)(struct au_buf *b, const struct series *s);

static void each(const struct metrics *m, struct au_buf *b, family_fn fn)
{
	size_t i;

	for (i = 0; i < m->cap; i++)
		if (m->slots[i])
			fn(b, m->slots[i]);
	if (m->other)
		fn(b, m->other);
}

static void head(struct au_buf *b, const char *name, const char *type, const char *help)
{
	au_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void one(struct au_buf *b, const char *name, const struct series *s, const char *extra,
		uint64_t v)
{
	au_buf_printf(b, "%s{", name);
	labels(b, s);
	if (extra)
		au_buf_printf(b, ",%s", extra);
	au_buf_printf(b, "} %llu\n", (unsigned long long)v);
}

static void f_outcomes(struct au_buf *b, const struct series *s)
{
	one(b, "au_computations_total", s, "outcome=\"completed\"", s->completed);
	one(b, "au_computations_total", s, "outcome=\"failed\"", s->failed);
	one(b, "au_computations_total", s, "outcome=\"retried\"", s->retried);
	one(b, "au_computations_total", s, "outcome=\"dead\"", s->dead);
	one(b, "au_computations_total", s, "outcome=\"cancelled\"", s->cancelled);
}

static void f_started(struct au_buf *b, const struct series *s)
{
	one(b, "au_started_total", s, NULL, s->started);
}

static void f_enqueued(struct au_buf *b, const struct series *s)
{
	one(b, "au_enqueued_total", s, NULL, s->enqueued);
}

static void f_in_flight(struct au_buf *b, const struct series *s)
{
	one(b, "au_in_flight", s, NULL, s->in_flight > 0 ? (uint64_t)s->in_flight : 0);
}

static void f_rows(struct au_buf *b, const struct series *s)
{
	one(b, "au_clickhouse_read_rows_total", s, NULL, s->ch_rows);
}

static void f_bytes(struct au_buf *b, const struct series *s)
{
	one(b, "au_clickhouse_read_bytes_total", s, NULL, s->ch_bytes);
}

static void histogram(struct au_buf *b, const char *name, const struct series *s,
		      const struct hist *h)
{
	uint64_t cum = 0;
	char le[48];
	size_t k;

	for (k = 0; k < NB; k++) {
		cum += h->n[k];
		if (k < AU_METRICS_NBOUNDS)
			snprintf(le, sizeof(le), "le=\"%g\"", (double)au_metrics_bounds_us[k] / 1e6);
		else
			snprintf(le, sizeof(le), "le=\"+Inf\"");
		au_buf_printf(b, "%s_bucket{", name);
		labels(b, s);
		au_buf_printf(b, ",%s} %llu\n", le, (unsigned long long)cum);
	}
	au_buf_printf(b, "%s_sum{", name);
	labels(b, s);
	au_buf_printf(b, "} %.6f\n", (double)h->sum_us / 1e6);
	au_buf_printf(b, "%s_count{", name);
	labels(b, s);
	au_buf_printf(b, "} %llu\n", (unsigned long long)cum);
}

static void f_run(struct au_buf *b, const struct series *s)
{
	histogram(b, "au_run_seconds", s, &s->run);
}

static void f_wait(struct au_buf *b, const struct series *s)
{
	histogram(b, "au_queue_wait_seconds", s, &s->wait);
}

static void worker_counter(struct au_buf *b, const char *name, const char *help, uint64_t v)
{
	head(b, name, "counter", help);
	au_buf_printf(b, "%s %llu\n", name, (unsigned long long)v);
}

/* The whole exposition, into b. */
static void expose(struct metrics *m, struct au_buf *b)
{
	head(b, "au_computations_total", "counter", "attempts that came to an outcome");
	each(m, b, f_outcomes);
	head(b, "au_started_total", "counter", "attempts started");
	each(m, b, f_started);
	head(b, "au_enqueued_total", "counter", "computations enqueued by this process");
	each(m, b, f_enqueued);
	head(b, "au_in_flight", "gauge", "attempts running now");
	each(m, b, f_in_flight);
	head(b, "au_run_seconds", "histogram", "how long an attempt ran");
	each(m, b, f_run);
	head(b, "au_queue_wait_seconds", "histogram", "from enqueue (or due) to the start");
	each(m, b, f_wait);
	head(b, "au_clickhouse_read_rows_total", "counter", "rows ClickHouse read for the attempts");
	each(m, b, f_rows);
	head(b, "au_clickhouse_read_bytes_total", "counter",
	     "bytes ClickHouse read for the attempts");
	each(m, b, f_bytes);
	if (m->stats_fn) {
		struct au_worker_stats st;

		memset(&st, 0, sizeof(st));
		m->stats_fn(m->stats_arg, &st);
		worker_counter(b, "au_worker_leased_total", "computations leased", st.leased);
		worker_counter(b, "au_worker_completed_total", "attempts completed", st.completed);
		worker_counter(b, "au_worker_failed_total", "attempts failed for good", st.failed);
		worker_counter(b, "au_worker_retried_total", "attempts to be retried", st.retried);
		worker_counter(b, "au_worker_dead_total", "computations dead-lettered", st.buried);
		worker_counter(b, "au_worker_released_total", "attempts given back unharmed",
			       st.released);
		worker_counter(b, "au_worker_cancelled_total", "attempts cancelled by a client",
			       st.cancelled);
		worker_counter(b, "au_worker_outages_total", "times a server it needs was down",
			       st.outages);
		head(b, "au_worker_loop_max_seconds", "gauge",
		     "the longest call of the worker's own callbacks");
		au_buf_printf(b, "au_worker_loop_max_seconds %.6f\n", (double)st.loop_max_us / 1e6);
	}
}

static void serve(struct evhttp_request *req, void *arg)
{
	struct au_buf b = AU_BUF_INIT;
	struct evbuffer *out;

	if (evhttp_request_get_command(req) != EVHTTP_REQ_GET &&
	    evhttp_request_get_command(req) != EVHTTP_REQ_HEAD) {
		evhttp_send_error(req, 405, "only GET");
		return;
	}
	expose(arg, &b);
	out = evbuffer_new();
	if (!out || !b.data || evbuffer_add(out, b.data, b.len) < 0) {
		evhttp_send_error(req, 500, "out of memory");
	} else {
		evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
				  "text/plain; version=0.0.4; charset=utf-8");
		evhttp_send_reply(req, 200, "OK", out);
	}
	if (out)
		evbuffer_free(out);
	au_buf_release(&b);
}

/* ---- listening ---- */

static int split(const char *addr, int port_offset, char *host, size_t hsize, long *port,
		 struct au_err *err)
{
	const char *colon = addr ? strrchr(addr, ':') : NULL;
	char *end;
	size_t n;

	if (!colon || colon == addr)
		return au_seterr(err, AU_EINVAL, "invalid metrics address '%s': expected HOST:PORT",
				 addr ? addr : "");
	n = (size_t)(colon - addr);
	if (addr[0] == '[' && n >= 2 && addr[n - 1] == ']') {   /* [::1]:9100 */
		addr++;
		n -= 2;
	}
	if (n >= hsize)
		return au_seterr(err, AU_EINVAL, "invalid metrics address '%s': host too long", addr);
	memcpy(host, addr, n);
	host[n] = '\0';
	errno = 0;
	*port = strtol(colon + 1, &end, 10);
	if (errno || end == colon + 1 || *end || *port < 0 || *port + port_offset > 65535)
		return au_seterr(err, AU_EINVAL, "invalid metrics address '%s': bad port", addr);
	*port += port_offset;
	return 0;
}

int au_metrics_addr_offset(const char *addr, int port_offset, char *out, size_t size,
			   struct au_err *err)
{
	char host[256];
	long port;

	if (split(addr, port_offset, host, sizeof(host), &port, err) < 0)
		return -1;
	snprintf(out, size, strchr(host, ':') ? "[%s]:%ld" : "%s:%ld", host, port);
	return 0;
}

/* A bound, listening, non-blocking socket at addr; -1 with err. */
static evutil_socket_t bound(const char *addr, int port_offset, struct au_err *err)
{
	struct addrinfo hints, *ai = NULL;
	char host[256], portbuf[16], shown[300];
	evutil_socket_t fd = -1;
	long port;
	int one = 1, rc, e;

	if (split(addr, port_offset, host, sizeof(host), &port, err) < 0)
		return -1;
	snprintf(shown, sizeof(shown), strchr(host, ':') ? "[%s]:%ld" : "%s:%ld", host, port);
	snprintf(portbuf, sizeof(portbuf), "%ld", port);
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	if ((rc = getaddrinfo(host[0] ? host : NULL, portbuf, &hints, &ai)) != 0) {
		au_seterr(err, AU_EINVAL, "unable to listen on '%s': %s", shown, gai_strerror(rc));
		return -1;
	}
	fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 128) < 0 ||
	    evutil_make_socket_nonblocking(fd) < 0) {
		char why[128];

		e = errno;
		snprintf(why, sizeof(why), "%s", strerror(e));
		why[0] = (char)(why[0] >= 'A' && why[0] <= 'Z' ? why[0] - 'A' + 'a' : why[0]);
		au_seterr(err, e == EADDRINUSE ? AU_ESTATE : AU_EIO, "unable to listen on '%s': %s",
			  shown, why);
		if (fd >= 0)
			close(fd);
		fd = -1;
	}
	freeaddrinfo(ai);
	return fd;
}

int au_metrics_probe(const char *addr, int port_offset, struct au_err *err)
{
	evutil_socket_t fd = bound(addr, port_offset, err);

	if (fd < 0)
		return -1;
	close(fd);
	return 0;
}

int au_metrics_listen(void *ctx, struct event_base *base, const char *addr, struct au_err *err)
{
	struct metrics *m = ctx;
	evutil_socket_t fd;

	if (m->http)
		return au_seterr(err, AU_ESTATE, "metrics already listen");
	if ((fd = bound(addr, 0, err)) < 0)
		return -1;
	if (!(m->http = evhttp_new(base))) {
		close(fd);
		return au_seterr(err, AU_ENOMEM, "out of memory");
	}
	evhttp_set_allowed_methods(m->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD);
	evhttp_set_cb(m->http, "/metrics", serve, m);
	evhttp_set_timeout(m->http, 10);
	if (!evhttp_accept_socket_with_handle(m->http, fd)) {
		close(fd);
		evhttp_free(m->http);
		m->http = NULL;
		return au_seterr(err, AU_ENOMEM, "out of memory");
	}
	return 0;
}

static void retry_cb(evutil_socket_t fd, short what, void *arg)
{
	struct metrics *m = arg;
	struct au_err err = { 0, "" };
	struct timeval tv = { 1, 0 };

	(void)fd;
	(void)what;
	if (au_metrics_listen(m, event_get_base(m->retry_ev), m->retry_addr, &err) == 0) {
		au_log(AU_LOG_INFO, "metrics on http://%s/metrics", m->retry_addr);
		return;
	}
	evtimer_add(m->retry_ev, &tv);
}

int au_metrics_listen_wait(void *ctx, struct event_base *base, const char *addr,
			   struct au_err *err)
{
	struct metrics *m = ctx;
	struct timeval tv = { 1, 0 };
	struct au_err e = { 0, "" };

	if (au_metrics_listen(m, base, addr, &e) == 0) {
		au_log(AU_LOG_INFO, "metrics on http://%s/metrics", addr);
		return 0;
	}
	if (e.code != AU_ESTATE) {
		if (err)
			*err = e;
		return -1;
	}
	au_log(AU_LOG_WARN, "%s: trying again every second", e.str);
	free(m->retry_addr);
	if (!(m->retry_addr = au_strdup(addr)) ||
	    (!m->retry_ev && !(m->retry_ev = evtimer_new(base, retry_cb, m))))
		return au_seterr(err, AU_ENOMEM, "out of memory");
	evtimer_add(m->retry_ev, &tv);
	return 0;
}

/* ---- the beat's blob ---- */

static void hist_mp(struct au_buf *b, const struct hist *h)
{
	size_t k;

	au_mp_array(b, NB);
	for (k = 0; k < NB; k++)
		au_mp_uint(b, h->n[k]);
	au_mp_uint(b, h->sum_us);
}

static void series_mp(struct au_buf *b, const struct series *s)
{
	au_mp_array(b, 16);
	au_mp_str(b, s->task, strlen(s->task));
	au_mp_str(b, s->queue, strlen(s->queue));
	au_mp_uint(b, s->started);
	au_mp_uint(b, s->completed);
	au_mp_uint(b, s->failed);
	au_mp_uint(b, s->retried);
	au_mp_uint(b, s->dead);
	au_mp_uint(b, s->cancelled);
	au_mp_uint(b, s->in_flight > 0 ? (uint64_t)s->in_flight : 0);
	au_mp_uint(b, s->ch_rows);
	au_mp_uint(b, s->ch_bytes);
	au_mp_uint(b, s->enqueued);
	hist_mp(b, &s->run);
	hist_mp(b, &s->wait);
}

size_t au_metrics_blob(void *ctx, unsigned char *out, size_t size)
{
	struct metrics *m = ctx;
	struct au_buf body = AU_BUF_INIT, b = AU_BUF_INIT;
	uint32_t k = 0, dropped = 0;
	size_t i, len = 0, room = size > 256 ? size - 256 : 0;

	for (i = 0; i <= m->cap; i++) {
		const struct series *s = i < m->cap ? m->slots[i] : m->other;
		size_t before = body.len;

		if (!s)
			continue;
		series_mp(&body, s);
		if (body.len > room) {
			body.len = before;
			dropped++;
		} else {
			k++;
		}
	}
	au_mp_map(&b, 4);
	au_mp_str(&b, "v", 1);
	au_mp_uint(&b, 1);
	au_mp_str(&b, "le_us", 5);
	au_mp_array(&b, AU_METRICS_NBOUNDS);
	for (i = 0; i < AU_METRICS_NBOUNDS; i++)
		au_mp_uint(&b, au_metrics_bounds_us[i]);
	au_mp_str(&b, "s", 1);
	au_mp_array(&b, k);
	if (body.len)
		au_buf_append(&b, body.data, body.len);
	au_mp_str(&b, "dropped", 7);
	au_mp_uint(&b, dropped);
	if (b.data && b.len <= size) {
		memcpy(out, b.data, b.len);
		len = b.len;
	}
	au_buf_release(&body);
	au_buf_release(&b);
	return len;
}
