/*
 * bench.c - what `make bench` prints, for one queue URL (Redis by default):
 *
 *   enqueue   N computations in batches of 1000 into an idle queue
 *   drain     N no-op computations (result = argument + 1, stored with a TTL)
 *             while 2 warm worker processes run: N / (first enqueue -> last
 *             completion), the peers' workload (../shared/bench/peers)
 *   latency   200 single enqueues 5 ms apart: enqueue -> start, p50 / p99
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
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>

#include "core.h"
#include "queue.h"
#include "store.h"

#define LAT_SAMPLES 200

static const char *lat_path;

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

static pid_t start_worker(const struct au_config *cfg, const char *queue, unsigned conc,
			  unsigned batch)
{
	pid_t pid = fork();

	if (pid == 0) {
		struct au_worker_opts wo = { 0 };
		struct au_registry *reg = au_registry_new();
		struct au_err err;

		au_log_set_level(AU_LOG_WARN);
		wo.queue = queue;
		wo.concurrency = conc;
		wo.batch = batch;
		au_registry_add(reg, "bench.inc", task_inc, NULL);
		int rc = au_worker_run(cfg, &wo, reg, &err);

		if (rc < 0)
			fprintf(stderr, "bench worker: %s\n", err.str);
		au_registry_free(reg);
		_exit(rc < 0);
	}
	return pid;
}

static void stop_workers(pid_t *pids, int n)
{
	for (int i = 0; i < n; i++)
		kill(pids[i], SIGTERM);
	for (int i = 0; i < n; i++)
		waitpid(pids[i], NULL, 0);
}

/* Waits until queue has nothing ready, scheduled or leased. */
static int drained(struct au_queue *q, const char *queue, uint64_t deadline_ns)
{
	struct au_queue_stats st;

	while (mono_ns() < deadline_ns) {
		if (au_queue_stats(q, queue, &st) == 0 && !st.ready && !st.scheduled && !st.leased)
			return 0;
		usleep(5000);   /* as the peers poll: 5-10 ms */
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

int main(int argc, char **argv)
{
	struct au_config cfg;
	struct au_client *cl;
	struct au_queue *q;
	struct au_store *store;
	size_t n = argc > 4 ? strtoul(argv[4], NULL, 10) : 20000, i, good = 0;
	char queue[64], latfile[256];
	struct au_handle **hs;
	pid_t pids[8];
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
	printf("%-44s %10.0f /s\n", "drain of that backlog (workers started cold)",
	       (double)n / ((double)(mono_ns() - t0) / 1e9));
	stop_workers(pids, nworkers);

	/* 2. drain while enqueueing, workers warm */
	snprintf(queue, sizeof(queue), "bench-%llx", (unsigned long long)(au_random64() & 0xffffff));
	for (int k = 0; k < nworkers; k++)
		pids[k] = start_worker(&cfg, queue, 2 * batch, batch);
	usleep(300000);
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

	/* 3. enqueue -> start latency at a low rate */
	snprintf(latfile, sizeof(latfile), "/tmp/au-bench-lat.%d", (int)getpid());
	unlink(latfile);
	lat_path = latfile;   /* inherited by the next workers */
	stop_workers(pids, nworkers);
	for (int k = 0; k < nworkers; k++)
		pids[k] = start_worker(&cfg, queue, 2 * batch, batch);
	usleep(300000);
	{
		struct au_enqueue_opts eo = { 0 };
		struct au_buf b = AU_BUF_INIT;
		uint64_t start = mono_ns();

		eo.queue = queue;
		eo.ttl_s = 3600;
		for (i = 0; i < LAT_SAMPLES; i++) {
			uint64_t at = start + i * 5000000ull, now;

			while ((now = mono_ns()) < at)
				usleep((useconds_t)((at - now) / 1000));
			encode_args(&b, i, mono_ns());
			au_enqueue(cl, "bench.inc", b.data, b.len, &eo, NULL);
		}
		au_buf_release(&b);
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

	/* 4. ch.query SELECT 1 next to a raw libcurl loop, 4 connections each.
	 * The raw loop sends what ch.query sends (same statement and URL
	 * parameters, one per line below), and also the bare `SELECT 1`. */
	if (strcmp(argv[3], "-") != 0) {
		static const struct { const char *label; int procs, conc; } runs[] = {
			{ "ch.query SELECT 1, 1 worker x 4 in flight", 1, 4 },
			{ "ch.query SELECT 1, 2 workers x 2 in flight", 2, 2 },
		};
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
		same = raw_rate(argv[3], "?database=default&wait_end_of_query=1",
				"SELECT 1 FORMAT JSONCompact", 4, (long)m);
		printf("%-44s %10.0f /s\n", "raw libcurl SELECT 1, 4 keep-alive conns", bare);
		printf("%-44s %10.0f /s\n", "  same, with ch.query's statement and params", same);
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
		       raw_rate(argv[3], "?database=default&wait_end_of_query=1",
				"SELECT 1 FORMAT JSONCompact", 4, (long)m));
		free(a);
		free(args);
		free(lens);
	}
	free(hs);
	au_client_free(cl);
	au_queue_close(q);
	au_store_close(store);
	return 0;
}
