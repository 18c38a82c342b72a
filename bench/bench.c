/*
 * bench.c - what `make bench` prints, for one queue URL (Redis by default):
 *
 *   enqueue   N computations in batches of 1000 into an idle queue
 *   drain     N no-op computations (result = argument + 1, stored with a TTL)
 *             while 2 warm worker processes run: N / (first enqueue -> last
 *             completion), the peers' workload (../shared/bench/peers)
 *             with the CPU each computation cost the workers, the producer and
 *             the server, and how long the workers' loops spent in one
 *             callback (p99, max)
 *   latency   200 single enqueues 5 ms apart: how long each au_enqueue call
 *             took (p50 / p99 / max), the producer's RSS and page faults
 *             meanwhile, enqueue -> start (p50 / p99)
 *   ch.query  `SELECT 1` computations/s next to a raw libcurl keep-alive
 *             loop with the same number of connections
 *
 * Usage: bench QUEUE_URL STORE_URL CLICKHOUSE_URL|- [N]   ("-" skips ch.query)
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <dirent.h>
#include <fcntl.h>
#include <event2/event.h>
#include <hiredis.h>
#include <jansson.h>
#include <libpq-fe.h>

#include "core.h"
#include "queue.h"
#include "store.h"

#define LAT_SAMPLES 200

static const char *lat_path;
/* The middlewares of the next workers started (au_worker_use_spec), and
 * whether they log (JSON lines, to /dev/null): section 6. */
static const char *worker_mw;
static int worker_logs;

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* bench.inc: [i] -> i + 1; [i, t] also records now - t (enqueue -> start). */
static void task_inc(struct au_task_ctx *ctx, const struct au_computation *c, void *arg)
{
	const unsigned char *p = c->args;
	struct au_buf out = AU_BUF_INIT;
	uint64_t i = 0, t = 0;
	size_t n = c->args_len;

	(void)arg;
	/* [uint i] or [uint i, uint t]: fixint or uint8/16/32/64 */
	if (n >= 2 && (p[0] == 0x91 || p[0] == 0x92)) {
		size_t k = 1;

		for (int e = 0; e < (p[0] & 0x0f) && k < n; e++) {
			size_t width = p[k] < 0x80 ? 0 : p[k] >= 0xcc && p[k] <= 0xcf ? 1u << (p[k] - 0xcc) : 9;
			uint64_t v = p[k] < 0x80 ? p[k] : 0;

			if (width == 9 || k + 1 + width > n)
				break;
			for (size_t b = 1; b <= width; b++)
				v = v << 8 | p[k + b];
			k += 1 + width;
			if (e == 0)
				i = v;
			else
				t = v;
		}
	}
	if (t) {
		FILE *f = fopen(lat_path, "a");

		if (f) {
			fprintf(f, "%.4f\n", (double)(mono_ns() - t) / 1e6);
			fclose(f);
		}
	}
	au_mp_uint(&out, i + 1);
	au_task_complete(ctx, out.data, out.len);
	au_buf_release(&out);
}

/* A worker process: its pid and the pipe its stats come back on. */
struct bench_worker {
	pid_t pid;
	int fd;
};

/* What the workers stopped last reported: their stats and CPU, added up. */
static struct au_worker_stats workers_stats;
static double workers_cpu_s;

static void on_term(evutil_socket_t sig, short what, void *arg)
{
	(void)sig;
	(void)what;
	au_worker_stop(arg);
}

static struct bench_worker start_worker(const struct au_config *cfg, const char *queue,
					unsigned conc, unsigned batch)
{
	struct bench_worker bw = { -1, -1 };
	int fds[2];

	if (pipe(fds) < 0)
		return bw;
	bw.pid = fork();
	if (bw.pid == 0) {
		struct au_worker_opts wo = { 0 };
		struct au_registry *reg = au_registry_new();
		struct event_base *base = event_base_new();
		struct au_worker_stats st;
		struct au_worker *w;
		struct event *term;
		int rc = 1;

		close(fds[0]);
		au_log_set_level(AU_LOG_WARN);
		wo.queue = queue;
		wo.concurrency = conc;
		wo.batch = batch;
		au_registry_add(reg, "bench.inc", task_inc, NULL);
		/* its own loop, so that the stats can be read after it stops */
		w = au_worker_new(cfg, &wo, reg, base);
		if (w && worker_logs) {
			au_worker_use(w, &au_logging_middleware,
				      au_logging_new(fopen("/dev/null", "w"), AU_LOG_JSON));
			au_worker_use(w, &au_metrics_middleware, au_metrics_new(NULL));
		}
		if (w && worker_mw && au_worker_use_spec(w, worker_mw, NULL) < 0)
			fprintf(stderr, "bench worker: %s\n", au_worker_err(w)->str);
		term = evsignal_new(base, SIGTERM, on_term, w);
		if (w && term && evsignal_add(term, NULL) == 0 && au_worker_start(w) == 0) {
			event_base_dispatch(base);
			au_worker_stats(w, &st);
			rc = write(fds[1], &st, sizeof(st)) != (ssize_t)sizeof(st);
		} else {
			fprintf(stderr, "bench worker: %s\n", w ? au_worker_err(w)->str : "out of memory");
		}
		if (term)
			event_free(term);
		au_worker_free(w);
		event_base_free(base);
		au_registry_free(reg);
		_exit(rc);
	}
	close(fds[1]);
	bw.fd = fds[0];
	return bw;
}

static void stop_workers(struct bench_worker *ws, int n)
{
	memset(&workers_stats, 0, sizeof(workers_stats));
	workers_cpu_s = 0;
	for (int i = 0; i < n; i++)
		kill(ws[i].pid, SIGTERM);
	for (int i = 0; i < n; i++) {
		struct au_worker_stats st;
		struct rusage ru;

		if (read(ws[i].fd, &st, sizeof(st)) == (ssize_t)sizeof(st)) {
			workers_stats.completed += st.completed;
			for (int k = 0; k < AU_LOOP_HIST_BUCKETS; k++)
				workers_stats.loop_hist[k] += st.loop_hist[k];
			if (st.loop_max_us > workers_stats.loop_max_us)
				workers_stats.loop_max_us = st.loop_max_us;
		}
		close(ws[i].fd);
		if (wait4(ws[i].pid, NULL, 0, &ru) > 0)
			workers_cpu_s += (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
					 (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
	}
}

/* The p-th percentile of the workers' loop callbacks in ms: the upper
 * bound of its histogram bucket, at most the longest call. */
static double loop_pct_ms(const struct au_worker_stats *st, double p)
{
	uint64_t total = 0, seen = 0;
	int k;

	for (k = 0; k < AU_LOOP_HIST_BUCKETS; k++)
		total += st->loop_hist[k];
	for (k = 0; k < AU_LOOP_HIST_BUCKETS; k++) {
		seen += st->loop_hist[k];
		if (total && (double)seen >= p / 100 * (double)total)
			break;
	}
	if (k >= AU_LOOP_HIST_BUCKETS)
		return 0;
	/* no call took longer than the longest */
	return (double)((1ull << k) < st->loop_max_us ? 1ull << k : st->loop_max_us) / 1000;
}

static double self_cpu_s(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/* utime + stime (+ the reaped children's, with children) of pid from /proc,
 * in seconds; *ppid gets its parent. -1 when unreadable. */
static double proc_cpu_s(long pid, int children, long *ppid)
{
	char path[64], buf[1024], *p;
	unsigned long long ut, st, cut, cst;
	FILE *f;
	size_t n;

	snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
	if (!(f = fopen(path, "r")))
		return -1;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	/* after "pid (comm) ": state ppid ... field 14 utime */
	if (!(p = strrchr(buf, ')')) ||
	    sscanf(p + 2, "%*c %ld %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %llu %llu", ppid,
		   &ut, &st, &cut, &cst) != 5)
		return -1;
	return (double)(ut + st + (children ? cut + cst : 0)) / (double)sysconf(_SC_CLK_TCK);
}

/* The numeric field `name:` of INFO section of the Redis at url; -1 when
 * unknown. */
static double redis_info(const char *url, const char *section, const char *name)
{
	struct au_url u;
	redisContext *c;
	redisReply *r;
	const char *v;
	double val = -1;

	if (au_url_parse(url, &u, NULL) < 0)
		return -1;
	c = redisConnect(u.host, u.port ? u.port : 6379);
	if (c && !c->err && (r = redisCommand(c, "INFO %s", section))) {
		if (r->type == REDIS_REPLY_STRING && (v = strstr(r->str, name)) &&
		    v[strlen(name)] == ':')
			val = atof(v + strlen(name) + 1);
		freeReplyObject(r);
	}
	redisFree(c);
	au_url_release(&u);
	return val;
}

/*
 * CPU seconds the server behind url has used so far: Redis says it in
 * INFO cpu; for PostgreSQL, the postmaster (whose pid is in its data
 * directory), the children it reaped and the ones alive. -1 when unknown.
 */
static double server_cpu_s(const char *url)
{
	double cpu = -1;

	if (!strncmp(url, "redis://", 8)) {
		double sys = redis_info(url, "cpu", "used_cpu_sys");
		double user = redis_info(url, "cpu", "used_cpu_user");

		cpu = sys < 0 || user < 0 ? -1 : sys + user;
	} else if (!strncmp(url, "postgres", 8)) {
		PGconn *c = PQconnectdb(url);
		PGresult *r = PQexec(c, "SELECT setting FROM pg_settings WHERE name = 'data_directory'");
		char path[4096];
		long pm = 0, pid, ppid;
		FILE *f;
		DIR *d;
		struct dirent *e;

		if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) {
			snprintf(path, sizeof(path), "%s/postmaster.pid", PQgetvalue(r, 0, 0));
			if ((f = fopen(path, "r"))) {
				if (fscanf(f, "%ld", &pm) != 1)
					pm = 0;
				fclose(f);
			}
		}
		PQclear(r);
		PQfinish(c);
		if (pm > 0 && (cpu = proc_cpu_s(pm, 1, &ppid)) >= 0 && (d = opendir("/proc"))) {
			while ((e = readdir(d))) {
				double c2;

				if ((pid = atol(e->d_name)) > 0 && pid != pm &&
				    (c2 = proc_cpu_s(pid, 0, &ppid)) >= 0 && ppid == pm)
					cpu += c2;
			}
			closedir(d);
		}
	}
	return cpu;
}

/* This process's resident memory in MB, from /proc; -1 when unreadable.
 * Read without stdio: its buffer would be the malloc() of 1 kB or more
 * that pays for a fragmented heap before the enqueues it should show. */
static double self_rss_mb(void)
{
	char buf[128];
	unsigned long size, resident;
	int fd = open("/proc/self/statm", O_RDONLY);
	ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof(buf) - 1);

	if (fd >= 0)
		close(fd);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	if (sscanf(buf, "%lu %lu", &size, &resident) != 2)
		return -1;
	return (double)resident * (double)sysconf(_SC_PAGESIZE) / 1048576;
}

static long self_minflt(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return ru.ru_minflt;
}

/* Waits until queue has nothing waiting, ready, scheduled or leased. */
static int drained(struct au_queue *q, const char *queue, uint64_t deadline_ns)
{
	struct au_queue_stats st;

	while (mono_ns() < deadline_ns) {
		if (au_queue_stats(q, queue, &st) == 0 && !st.ready && !st.scheduled && !st.leased &&
		    !st.waiting)
			return 0;
		usleep(10000);   /* as the peers poll: 5-10 ms (a poll costs PostgreSQL ~5 ms of a
				    backend with 20,000 waiting) */
	}
	return -1;
}

static void encode_args(struct au_buf *b, uint64_t i, uint64_t t)
{
	au_buf_reset(b);
	au_mp_array(b, t ? 2 : 1);
	au_mp_uint(b, i);
	if (t) {
		unsigned char raw[9] = { 0xcf };

		for (int k = 0; k < 8; k++)
			raw[1 + k] = (unsigned char)(t >> (56 - 8 * k));
		au_buf_append(b, raw, 9);
	}
}

/* Enqueues n computations of bench.inc in batches of 1000; handles kept if hs. */
static int enqueue_n(struct au_client *cl, const char *queue, size_t n, struct au_handle **hs)
{
	struct au_enqueue_opts eo = { 0 };
	unsigned char *args[1000];
	size_t lens[1000], done, i;
	struct au_buf b = AU_BUF_INIT;
	int rc = 0;

	eo.queue = queue;
	eo.ttl_s = 3600;
	for (done = 0; done < n && rc == 0; done += 1000) {
		size_t chunk = n - done < 1000 ? n - done : 1000;

		for (i = 0; i < chunk; i++) {
			encode_args(&b, done + i, 0);
			args[i] = au_buf_detach(&b, &lens[i]);
		}
		rc = au_enqueue_batch(cl, "bench.inc", (const unsigned char *const *)args, lens, chunk,
				      &eo, hs ? hs + done : NULL);
		for (i = 0; i < chunk; i++)
			free(args[i]);
	}
	au_buf_release(&b);
	return rc;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static double pct(const double *v, size_t n, double p)
{
	size_t idx = (size_t)((p / 100) * (double)n + 0.999999);

	if (!n)
		return 0;
	if (idx < 1)
		idx = 1;
	return v[(idx > n ? n : idx) - 1];
}

/* ---- raw libcurl loop ---- */

struct raw_arg {
	const char *url;
	const char *sql;
	long requests;
	long ok;
};

static size_t discard(char *p, size_t s, size_t n, void *u)
{
	(void)p;
	(void)u;
	return s * n;
}

static void *raw_loop(void *p)
{
	struct raw_arg *a = p;
	CURL *h = curl_easy_init();

	curl_easy_setopt(h, CURLOPT_URL, a->url);
	curl_easy_setopt(h, CURLOPT_POSTFIELDS, a->sql);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, discard);
	for (long i = 0; i < a->requests; i++) {
		long code = 0;

		if (curl_easy_perform(h) == CURLE_OK &&
		    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code) == CURLE_OK && code == 200)
			a->ok++;
	}
	curl_easy_cleanup(h);
	return NULL;
}

/* conns threads, one keep-alive connection each, posting sql to ch_url
 * with the given query string (may be ""). */
static double raw_rate(const char *ch_url, const char *params, const char *sql, int conns,
		       long total)
{
	pthread_t th[16];
	struct raw_arg args[16];
	struct au_url u;
	char url[512];
	uint64_t t0;
	long ok = 0;

	if (au_url_parse(ch_url, &u, NULL) < 0)
		return 0;
	snprintf(url, sizeof(url), "http://%s:%d/%s", u.host, u.port ? u.port : 8123, params);
	au_url_release(&u);
	t0 = mono_ns();
	for (int i = 0; i < conns; i++) {
		args[i] = (struct raw_arg){ url, sql, total / conns, 0 };
		pthread_create(&th[i], NULL, raw_loop, &args[i]);
	}
	for (int i = 0; i < conns; i++) {
		pthread_join(th[i], NULL);
		ok += args[i].ok;
	}
	if (ok != total / conns * conns)
		fprintf(stderr, "bench: raw loop: only %ld of %ld requests succeeded\n", ok, total);
	return (double)ok / ((double)(mono_ns() - t0) / 1e9);
}

/* The one number sql returns on the PostgreSQL server at url, after setup
 * (may be NULL); -1 when it cannot be read. */
static double pg_number(const char *url, const char *setup, const char *sql)
{
	PGconn *c = PQconnectdb(url);
	PGresult *r;
	double v = -1;

	if (setup)
		PQclear(PQexec(c, setup));
	r = PQexec(c, sql);
	if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 && !PQgetisnull(r, 0, 0))
		v = atof(PQgetvalue(r, 0, 0));
	PQclear(r);
	PQfinish(c);
	return v;
}

/*
 * Commands (Redis: INFO stats total_commands_processed) or statements
 * (PostgreSQL: pg_stat_statements, which bench/run.sh's server preloads)
 * the server behind url has run so far; -1 when unknown.
 */
static double server_ops(const char *url)
{
	double ops = -1;

	if (!strncmp(url, "redis://", 8)) {
		ops = redis_info(url, "stats", "total_commands_processed");
	} else if (!strncmp(url, "postgres", 8)) {
		ops = pg_number(url, "SET client_min_messages = warning; "
				     "CREATE EXTENSION IF NOT EXISTS pg_stat_statements",
				"SELECT sum(calls) FROM pg_stat_statements");
	}
	return ops;
}

/* Bytes of WAL the PostgreSQL server behind url has written so far; -1
 * for another server or when unknown. */
static double pg_wal_bytes(const char *url)
{
	if (strncmp(url, "postgres", 8))
		return -1;
	return pg_number(url, NULL, "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')");
}

/*
 * What one computation enqueued alone costs the server with nworkers idle
 * workers: the commands or transactions of a window with `count` single
 * enqueues 20 ms apart, less those of an idle window as long (timers,
 * fallback polls), per computation, client included.
 */
static double fleet_cost(const struct au_config *cfg, struct au_client *cl, struct au_queue *q,
			 int nworkers)
{
	enum { COUNT = 150, GAP_US = 20000 };
	struct bench_worker ws[16];
	struct au_enqueue_opts eo = { 0 };
	struct au_buf b = AU_BUF_INIT;
	char queue[64];
	double o0, o1, o2;
	uint64_t window = (uint64_t)COUNT * GAP_US + 500000, t0;
	int i;

	snprintf(queue, sizeof(queue), "bench-%llx", (unsigned long long)(au_random64() & 0xffffff));
	for (i = 0; i < nworkers; i++)
		ws[i] = start_worker(cfg, queue, 4, 4);
	usleep(1500000);   /* connected, migrated, idle */
	o0 = server_ops(cfg->queue_url);
	usleep((useconds_t)window);
	o1 = server_ops(cfg->queue_url);
	eo.queue = queue;
	eo.ttl_s = 3600;
	t0 = mono_ns();
	for (i = 0; i < COUNT; i++) {
		uint64_t at = t0 + (uint64_t)i * GAP_US * 1000, now;

		while ((now = mono_ns()) < at)
			usleep((useconds_t)((at - now) / 1000));
		encode_args(&b, (uint64_t)i, 0);
		au_enqueue(cl, "bench.inc", b.data, b.len, &eo, NULL);
	}
	while (mono_ns() < t0 + window * 1000)
		usleep(10000);
	o2 = server_ops(cfg->queue_url);
	drained(q, queue, mono_ns() + 30000000000ull);
	stop_workers(ws, nworkers);
	au_buf_release(&b);
	if (o0 < 0 || o1 < 0 || o2 < 0)
		return -1;
	return ((o2 - o1) - (o1 - o0)) / COUNT;
}

/*
 * Flows: n computations of bench.inc pushed in one call as a plain backlog,
 * as a wide flow (a root, n - 2 nodes waiting for it, a join waiting for
 * all of them) and as a deep one (a chain, each waiting for the one
 * before), each drained by the same worker processes: nodes a second.
 * The deep flow is one node at a time, so its rate is a round trip's.
 */
static void make_node(struct au_computation *c, const char *queue, size_t i, const char *flow)
{
	struct au_buf b = AU_BUF_INIT;

	au_computation_init(c);
	au_id_new(c->id);
	c->task = au_strdup("bench.inc");
	c->queue = au_strdup(queue);
	encode_args(&b, i, 0);
	c->args = au_buf_detach(&b, &c->args_len);
	c->ttl_s = 3600;
	c->created_at_ms = au_now_ms();
	c->flow = flow ? au_strdup(flow) : NULL;
}

static void needs(struct au_computation *c, const struct au_computation *dep)
{
	c->deps = realloc(c->deps, (c->ndeps + 1) * sizeof(*c->deps));
	memcpy(c->deps[c->ndeps++], dep->id, AU_ID_SIZE);
}

static double flow_rate(const struct au_config *cfg, struct au_queue *q, size_t n, int shape,
			int nworkers, unsigned batch)
{
	struct au_computation *c = calloc(n, sizeof(*c));
	struct bench_worker ws[8];
	char queue[64], flow[AU_ID_SIZE];
	uint64_t t0;
	size_t i;
	double rate = -1;

	snprintf(queue, sizeof(queue), "bench-flow-%llx", (unsigned long long)(au_random64() & 0xffffff));
	au_id_new(flow);
	for (i = 0; c && i < n; i++) {
		make_node(&c[i], queue, i, shape ? flow : NULL);
		if (shape == 1 && i && i < n - 1)
			needs(&c[i], &c[0]);           /* wide: all wait for the root */
		if (shape == 2 && i)
			needs(&c[i], &c[i - 1]);       /* deep: a chain */
	}
	if (c && shape == 1 && n > 2) {
		c[n - 1].deps = malloc((n - 2) * sizeof(*c[n - 1].deps));
		for (i = 1; i < n - 1; i++)
			memcpy(c[n - 1].deps[i - 1], c[i].id, AU_ID_SIZE);
		c[n - 1].ndeps = n - 2;
	}
	for (int k = 0; k < nworkers; k++)
		ws[k] = start_worker(cfg, queue, 2 * batch, batch);
	usleep(300000);
	t0 = mono_ns();
	if (c && au_queue_push(q, c, n) == 0 && drained(q, queue, mono_ns() + 300000000000ull) == 0)
		rate = (double)n / ((double)(mono_ns() - t0) / 1e9);
	else
		fprintf(stderr, "bench: flow: %s\n", q->err.str);
	stop_workers(ws, nworkers);
	for (i = 0; c && i < n; i++)
		au_computation_release(&c[i]);
	free(c);
	return rate;
}

static void flow_bench(const struct au_config *cfg, struct au_queue *q, size_t n, int nworkers,
		       unsigned batch)
{
	size_t deep = n / 10 < 2000 ? n / 10 : 2000;
	double plain, wide, chain;

	if (au_queue_adopt(q, "00000000000000000000000000000000", NULL, 0) < 0 &&
	    q->err.code == AU_ESTATE) {
		printf("%-44s %10s\n", "flows", "(this queue keeps none)");
		return;
	}
	plain = flow_rate(cfg, q, n, 0, nworkers, batch);
	wide = flow_rate(cfg, q, n, 1, nworkers, batch);
	chain = flow_rate(cfg, q, deep, 2, nworkers, batch);
	printf("%-44s %10.0f /s\n", "flows: plain backlog, pushed in one call", plain);
	printf("%-44s %10.0f /s  (%.2fx plain)\n", "flows: wide (root, n - 2 nodes, a join)", wide,
	       wide / plain);
	printf("%-44s %10.0f /s  (%.1f ms a step)\n", "flows: deep (a chain, one node at a time)", chain,
	       1000.0 / chain);
}

int main(int argc, char **argv)
{
	struct au_config cfg;
	struct au_client *cl;
	struct au_queue *q;
	struct au_store *store;
	size_t n = argc > 4 ? strtoul(argv[4], NULL, 10) : 20000, i, good = 0;
	char queue[64], latfile[256];
	struct au_handle **hs;
	struct bench_worker pids[8];
	double srv0, self0, wal0;
	int nworkers = getenv("BENCH_WORKERS") ? atoi(getenv("BENCH_WORKERS")) : 2;
	unsigned batch = getenv("BENCH_BATCH") ? (unsigned)atoi(getenv("BENCH_BATCH")) : 256;
	uint64_t t0, t1;
	double lat[LAT_SAMPLES];
	size_t nlat = 0;
	FILE *f;

	if (argc < 4) {
		fprintf(stderr, "usage: bench QUEUE_URL STORE_URL CLICKHOUSE_URL|- [N]\n");
		return 2;
	}
	/* Without ClickHouse, workers get an address nothing will be sent to. */
	cfg = (struct au_config){ argv[1], argv[2],
				  strcmp(argv[3], "-") ? argv[3] : "http://127.0.0.1:9/default" };
	cl = au_client_new(&cfg);
	q = au_queue_open(argv[1]);
	store = au_store_open(argv[2]);
	if (!cl || au_client_err(cl)->code || !q || q->err.code || !store || store->err.code) {
		fprintf(stderr, "bench: %s\n", cl ? au_client_err(cl)->str : "out of memory");
		return 1;
	}
	au_log_set_level(AU_LOG_WARN);
	hs = calloc(n, sizeof(*hs));
	if (nworkers < 1 || nworkers > 8)
		nworkers = 2;
	if (batch < 1 || batch > 1000)
		batch = 256;
	printf("queue %s, store %s, N = %zu, %d worker process%s, batches of %u\n", q->url.text,
	       store->url.text, n, nworkers, nworkers > 1 ? "es" : "", batch);

	double cold;

	/* 1. enqueue into an idle queue */
	snprintf(queue, sizeof(queue), "bench-%llx", (unsigned long long)(au_random64() & 0xffffff));
	t0 = mono_ns();
	if (enqueue_n(cl, queue, n, NULL) < 0) {
		fprintf(stderr, "bench: enqueue: %s\n", au_client_err(cl)->str);
		return 1;
	}
	t1 = mono_ns();
	printf("%-44s %10.0f /s\n", "enqueue (batches of 1000, idle queue)",
	       (double)n / ((double)(t1 - t0) / 1e9));
	t0 = mono_ns();
	for (int k = 0; k < nworkers; k++)
		pids[k] = start_worker(&cfg, queue, 2 * batch, batch);
	drained(q, queue, mono_ns() + 300000000000ull);
	cold = (double)n / ((double)(mono_ns() - t0) / 1e9);
	printf("%-44s %10.0f /s\n", "drain of that backlog (workers started cold)", cold);
	stop_workers(pids, nworkers);
	if (!getenv("BENCH_NO_FLEET") && nworkers > 1) {
		/* the same backlog drained by one process: what the second adds */
		double one;

		snprintf(queue, sizeof(queue), "bench-%llx", (unsigned long long)(au_random64() & 0xffffff));
		if (enqueue_n(cl, queue, n, NULL) < 0) {
			fprintf(stderr, "bench: enqueue: %s\n", au_client_err(cl)->str);
			return 1;
		}
		t0 = mono_ns();
		pids[0] = start_worker(&cfg, queue, 2 * batch, batch);
		drained(q, queue, mono_ns() + 300000000000ull);
		one = (double)n / ((double)(mono_ns() - t0) / 1e9);
		stop_workers(pids, 1);
		printf("%-44s %10.0f /s, %d: %.0f /s (%.2fx)\n", "  the same with 1 worker process", one,
		       nworkers, cold, cold / one);
	}

	/* 2. drain while enqueueing, workers warm */
	snprintf(queue, sizeof(queue), "bench-%llx", (unsigned long long)(au_random64() & 0xffffff));
	for (int k = 0; k < nworkers; k++)
		pids[k] = start_worker(&cfg, queue, 2 * batch, batch);
	usleep(300000);
	srv0 = server_cpu_s(argv[1]);
	wal0 = pg_wal_bytes(argv[1]);
	self0 = self_cpu_s();
	t0 = mono_ns();
	if (enqueue_n(cl, queue, n, hs) < 0) {
		fprintf(stderr, "bench: enqueue: %s\n", au_client_err(cl)->str);
		return 1;
	}
	t1 = mono_ns();
	if (drained(q, queue, mono_ns() + 300000000000ull) < 0)
		fprintf(stderr, "bench: drain did not finish\n");
	printf("%-44s %10.0f /s\n", "enqueue (batches of 1000, workers draining)",
	       (double)n / ((double)(t1 - t0) / 1e9));
	printf("%-44s %10.0f /s\n", "drain no-op computations, results stored",
	       (double)n / ((double)(mono_ns() - t0) / 1e9));
	{
		/* what this process spent enqueueing and polling, and the server */
		double self = self_cpu_s() - self0, srv = server_cpu_s(argv[1]) - srv0;

		/* Stopped before the results are checked, so that their CPU
		 * is the drain's alone (BENCH_CHECK_WITH_WORKERS=1 keeps them
		 * up, as this bench used to run). After a check of 300,000
		 * results the single enqueues used to stall: the freed handles
		 * had left a 110 MB heap that the first malloc() of 1 kB or
		 * more rewrote, in this process and in the workers forked from
		 * it (issue 7, producer.c). "one au_enqueue call" and the page
		 * faults under "200 single enqueues" show such a stall. */
		if (!getenv("BENCH_CHECK_WITH_WORKERS"))
			stop_workers(pids, nworkers);
		printf("%-44s workers %.1f, producer %.1f, server %.1f\n",
		       "  CPU per computation, us", workers_cpu_s * 1e6 / (double)n,
		       self * 1e6 / (double)n, srv0 < 0 ? -1.0 : srv * 1e6 / (double)n);
		if (wal0 >= 0)
			printf("%-44s %.0f bytes\n", "  WAL per computation",
			       (pg_wal_bytes(argv[1]) - wal0) / (double)n);
		printf("%-44s p50 %.3f ms, p99 %.3f ms, max %.3f ms\n",
		       "  workers' loop, time in one callback", loop_pct_ms(&workers_stats, 50),
		       loop_pct_ms(&workers_stats, 99), (double)workers_stats.loop_max_us / 1000);
	}
	for (i = 0; i < n; i++) {
		struct au_record rec;

		if (au_handle_result(hs[i], &rec) == 0 && rec.status == AU_COMPLETED &&
		    rec.result_len >= 1) {
			struct au_buf want = AU_BUF_INIT;

			au_mp_uint(&want, i + 1);
			good += want.len == rec.result_len && !memcmp(want.data, rec.result, want.len);
			au_buf_release(&want);
		}
		au_record_release(&rec);
		au_handle_free(hs[i]);
	}
	printf("%-44s %10zu of %zu\n", "  results checked (value = argument + 1)", good, n);
	if (getenv("BENCH_CHECK_WITH_WORKERS"))
		stop_workers(pids, nworkers);

	/* 3. enqueue -> start latency at a low rate */
	snprintf(latfile, sizeof(latfile), "/tmp/au-bench-lat.%d", (int)getpid());
	unlink(latfile);
	lat_path = latfile;   /* inherited by the next workers */
	for (int k = 0; k < nworkers; k++)
		pids[k] = start_worker(&cfg, queue, 2 * batch, batch);
	usleep(300000);
	{
		struct au_enqueue_opts eo = { 0 };
		struct au_buf b = AU_BUF_INIT;
		double call[LAT_SAMPLES], rss = self_rss_mb();
		long flt = self_minflt();
		uint64_t start = mono_ns();

		eo.queue = queue;
		eo.ttl_s = 3600;
		for (i = 0; i < LAT_SAMPLES; i++) {
			uint64_t at = start + i * 5000000ull, now, t;

			while ((now = mono_ns()) < at)
				usleep((useconds_t)((at - now) / 1000));
			t = mono_ns();
			encode_args(&b, i, t);
			au_enqueue(cl, "bench.inc", b.data, b.len, &eo, NULL);
			call[i] = (double)(mono_ns() - t) / 1e6;
		}
		au_buf_release(&b);
		printf("%-44s %10.1f ms (1000 if each is on time)\n", "  200 single enqueues 5 ms apart took",
		       (double)(mono_ns() - start) / 1e6);
		/* one late call makes those after it late too: the total alone
		 * cannot tell one stall from slow calls */
		qsort(call, LAT_SAMPLES, sizeof(call[0]), cmp_double);
		printf("%-44s %7.3f ms p50, %.3f ms p99, %.3f ms max\n", "  one au_enqueue call",
		       pct(call, LAT_SAMPLES, 50), pct(call, LAT_SAMPLES, 99), call[LAT_SAMPLES - 1]);
		printf("%-44s %.1f MB resident, %ld page faults meanwhile\n", "  producer", rss,
		       self_minflt() - flt);
	}
	drained(q, queue, mono_ns() + 30000000000ull);
	usleep(100000);
	stop_workers(pids, nworkers);
	f = fopen(latfile, "r");
	while (f && nlat < LAT_SAMPLES && fscanf(f, "%lf", &lat[nlat]) == 1)
		nlat++;
	if (f)
		fclose(f);
	unlink(latfile);
	qsort(lat, nlat, sizeof(lat[0]), cmp_double);
	printf("%-44s %7.3f ms p50, %.3f ms p99 (%zu samples)\n", "enqueue -> start at 200/s",
	       pct(lat, nlat, 50), pct(lat, nlat, 99), nlat);
	printf("%-44s p99 %.3f ms, max %.3f ms\n", "  workers' loop, time in one callback",
	       loop_pct_ms(&workers_stats, 99), (double)workers_stats.loop_max_us / 1000);

	/* 4. what one computation at a low rate costs the server, as the
	 * fleet of idle workers grows */
	if (!getenv("BENCH_NO_FLEET")) {
		double two = fleet_cost(&cfg, cl, q, 2), sixteen = fleet_cost(&cfg, cl, q, 16);
		printf("%-44s %.1f with 2 idle workers, %.1f with 16 (%.2fx)\n",
		       strncmp(argv[1], "redis://", 8) ? "server statements per computation at 50/s"
						       : "server commands per computation at 50/s",
		       two, sixteen, two > 0 ? sixteen / two : 0);
	}

	/* 6. the cost of the middleware chain: the same backlog drained by
	 * workers without middleware and with the production chain, in
	 * turns, three times each (this machine is noisy: the median of each) */
	if (!getenv("BENCH_NO_CHAIN")) {
		const char *spec = getenv("BENCH_CHAIN") ? getenv("BENCH_CHAIN") : "tracing";
		struct au_client *traced;

		/* signed by the client, checked by the workers started with it set */
		setenv("AU_SIGNING_KEY", "bench signing key of 32 bytes ok", 1);
		traced = au_client_new(&cfg);
		double bare[3], chain[3];
		size_t m = n < 20000 ? n : 20000;

		if (!traced || au_client_use_spec(traced, spec, NULL) < 0) {
			fprintf(stderr, "bench: the chain '%s' does not start\n", spec);
			return 1;
		}
		for (int r = 0; r < 3; r++)
			for (int with = 0; with < 2; with++) {
				snprintf(queue, sizeof(queue), "bench-%llx",
					 (unsigned long long)(au_random64() & 0xffffff));
				if (enqueue_n(with ? traced : cl, queue, m, NULL) < 0) {
					fprintf(stderr, "bench: enqueue: %s\n",
						au_client_err(with ? traced : cl)->str);
					return 1;
				}
				worker_logs = with;
				worker_mw = with ? spec : NULL;
				if (with)
					setenv("AU_SIGNING_KEY", "bench signing key of 32 bytes ok", 1);
				else
					unsetenv("AU_SIGNING_KEY");
				t0 = mono_ns();
				for (int k = 0; k < nworkers; k++)
					pids[k] = start_worker(&cfg, queue, 2 * batch, batch);
				drained(q, queue, mono_ns() + 300000000000ull);
				(with ? chain : bare)[r] = (double)m / ((double)(mono_ns() - t0) / 1e9);
				stop_workers(pids, nworkers);
			}
		worker_logs = 0;
		worker_mw = NULL;
		unsetenv("AU_SIGNING_KEY");
		qsort(bare, 3, sizeof(bare[0]), cmp_double);
		qsort(chain, 3, sizeof(chain[0]), cmp_double);
		printf("%-44s %10.0f /s\n", "drain, no middleware (median of 3)", bare[1]);
		printf("%-44s %10.0f /s (%.1f%% slower)\n", "drain, logging (JSON), metrics, signing and", chain[1],
		       100.0 * (1 - chain[1] / bare[1]));
		printf("%-44s %s\n", "  the chain", spec);
		au_client_free(traced);
	}

	/* 5. ch.query SELECT 1 next to a raw libcurl loop, 4 connections each.
	 * The raw loop sends what ch.query sends (same statement and URL
	 * parameters: clickhouse.c's buffer_size is AU_CH_MAX_BODY), and also
	 * the bare `SELECT 1`. */
	if (strcmp(argv[3], "-") != 0) {
		static const struct { const char *label; int procs, conc; } runs[] = {
			{ "ch.query SELECT 1, 1 worker x 4 in flight", 1, 4 },
			{ "ch.query SELECT 1, 2 workers x 2 in flight", 2, 2 },
		};
		static const char ch_params[] = "?buffer_size=67108864&database=default";
		size_t m = 4000;
		unsigned char *a;
		size_t alen;
		const unsigned char **args = calloc(m, sizeof(*args));
		size_t *lens = calloc(m, sizeof(*lens));
		double bare, same;

		au_json_to_msgpack("{\"sql\":\"SELECT 1\"}", &a, &alen, NULL);
		for (i = 0; i < m; i++) {
			args[i] = a;
			lens[i] = alen;
		}
		bare = raw_rate(argv[3], "", "SELECT 1", 4, (long)m);
		same = raw_rate(argv[3], ch_params, "SELECT 1 FORMAT JSONCompact", 4, (long)m);
		printf("%-44s %10.0f /s\n", "raw libcurl SELECT 1, 4 keep-alive conns", bare);
		printf("%-44s %10.0f /s\n", "  same, with ch.query's statement and params", same);
		{
			/* what the server charges for the other ways to learn
			 * every error, same statement and connections: 18.16
			 * spools a wait_end_of_query answer through a temporary
			 * file unless buffer_size is over 1 MiB */
			static const struct { const char *label, *params; } alt[] = {
				{ "  wait_end_of_query=1 (ch.query's old request)",
				  "?database=default&wait_end_of_query=1" },
				{ "  wait_end_of_query=1, buffer_size=2 MiB",
				  "?database=default&wait_end_of_query=1&buffer_size=2097152" },
				{ "  neither (errors after 1 MiB in the body)", "?database=default" },
			};

			for (size_t k = 0; k < AU_ARRAY_SIZE(alt); k++)
				printf("%-44s %10.0f /s\n", alt[k].label,
				       raw_rate(argv[3], alt[k].params, "SELECT 1 FORMAT JSONCompact", 4,
						(long)m));
		}
		for (size_t r = 0; r < AU_ARRAY_SIZE(runs); r++) {
			struct au_enqueue_opts eo = { 0 };

			snprintf(queue, sizeof(queue), "bench-%llx",
				 (unsigned long long)(au_random64() & 0xffffff));
			eo.queue = queue;
			eo.ttl_s = 3600;
			for (int k = 0; k < runs[r].procs; k++)
				pids[k] = start_worker(&cfg, queue, (unsigned)runs[r].conc,
						       (unsigned)runs[r].conc);
			usleep(300000);
			t0 = mono_ns();
			for (i = 0; i < m; i += 1000)
				au_enqueue_batch(cl, "ch.query", args + i, lens + i,
						 m - i < 1000 ? m - i : 1000, &eo, NULL);
			drained(q, queue, mono_ns() + 300000000000ull);
			t1 = mono_ns();
			stop_workers(pids, runs[r].procs);
			printf("%-44s %10.0f /s  (%.2fx the same raw loop)\n", runs[r].label,
			       (double)m / ((double)(t1 - t0) / 1e9),
			       (double)m / ((double)(t1 - t0) / 1e9) / same);
		}
		/* the machine is noisy: the raw loop again, after */
		printf("%-44s %10.0f /s\n", "  same raw loop again, after",
		       raw_rate(argv[3], ch_params, "SELECT 1 FORMAT JSONCompact", 4, (long)m));
		free(a);
		free(args);
		free(lens);
	}
	if (!getenv("BENCH_NO_FLOWS"))
		flow_bench(&cfg, q, n < 20000 ? n : 20000, nworkers, batch);
	free(hs);
	au_client_free(cl);
	au_queue_close(q);
	au_store_close(store);
	return 0;
}
