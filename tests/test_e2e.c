/*
 * test_e2e.c - end to end on the real servers: 1,000 ch.query computations
 * (half from the C API, half from the `au` CLI) run by 2 worker processes;
 * every result is found in the store with the right value. Runs on the
 * Redis queue with the file and Redis stores, on PostgreSQL for both, and
 * mixed (PostgreSQL queue, Redis store).
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include "clickhouse.h"
#include "core.h"
#include "harness.h"

#define N 1000

static pid_t spawn_worker(const char *bin, const char *queue)
{
	pid_t pid = fork();

	if (pid == 0) {
		execl(bin, "au", "worker", "--queue", queue, "--concurrency", "32", "--quiet",
		      (char *)NULL);
		_exit(127);
	}
	return pid;
}

/* rows[0][0] of a ch.query result, or -1. */
static long long first_value(const struct au_record *r)
{
	struct json_t *j = NULL;
	long long v = -1;

	if (r->status != AU_COMPLETED ||
	    au_msgpack_to_jansson(r->result, r->result_len, &j, NULL) < 0)
		return -1;
	json_t *cell = json_array_get(json_array_get(json_object_get(j, "rows"), 0), 0);

	if (json_is_integer(cell))
		v = json_integer_value(cell);
	json_decref(j);
	return v;
}

static void run(const char *queue_url, const char *store_url, const char *ch_url, const char *bin)
{
	struct au_config cfg = { queue_url, store_url, ch_url };
	struct au_client *cl = au_client_new(&cfg);
	struct au_handle *hs[N] = { 0 };
	char queue[64], path[512], line[128], cmd[1024], *workers[N] = { 0 }, *tmp;
	struct au_enqueue_opts eo = { 0 };
	unsigned char *args[N / 2];
	size_t lens[N / 2], i, ok = 0, distinct = 0;
	pid_t w1, w2;
	int st1, st2;
	FILE *f;

	printf("# queue %s, store %s\n", queue_url, store_url);
	if (!T_OK(cl && !au_client_err(cl)->code, "client connects (%s)",
		  cl ? au_client_err(cl)->str : "oom"))
		return;
	snprintf(queue, sizeof(queue), "e2e%llx", (unsigned long long)au_random64() % 0xffffff);
	eo.queue = queue;
	eo.timeout_ms = 30000;

	/* half from the C API, in one batch */
	for (i = 0, ok = 0; i < N / 2; i++) {
		char json[160];

		snprintf(json, sizeof(json),
			 "{\"sql\":\"SELECT v FROM au_e2e WHERE id = {id:UInt32}\",\"params\":{\"id\":%zu}}", i);
		ok += au_json_to_msgpack(json, &args[i], &lens[i], NULL) == 0;
	}
	if (!T_EQ_INT(ok, N / 2, "arguments encode"))
		return;
	ok = 0;
	T_OK(au_enqueue_batch(cl, "ch.query", (const unsigned char *const *)args, lens, N / 2, &eo,
			      hs) == 0, "C API enqueues %d computations", N / 2);
	for (i = 0; i < N / 2; i++)
		free(args[i]);

	/* half from the CLI, one JSON args value per line */
	tmp = t_tmpdir("e2e");
	snprintf(path, sizeof(path), "%s/args.jsonl", tmp);
	free(tmp);
	f = fopen(path, "w");
	for (i = N / 2; i < N; i++)
		fprintf(f, "{\"sql\":\"SELECT v FROM au_e2e WHERE id = {id:UInt32}\",\"params\":{\"id\":%zu}}\n", i);
	fclose(f);
	snprintf(cmd, sizeof(cmd), "AU_QUEUE='%s' AU_STORE='%s' '%s' enqueue ch.query --queue %s "
		 "--timeout 30000ms --args-file '%s'", queue_url, store_url, bin, queue, path);
	f = popen(cmd, "r");
	for (i = N / 2; f && i < N && fgets(line, sizeof(line), f); i++) {
		line[strcspn(line, "\n")] = '\0';
		hs[i] = au_handle_new(cl, line, queue);
	}
	T_OK(f && pclose(f) == 0, "CLI enqueue exits 0");
	T_EQ_INT(i, N, "CLI printed one id per computation");

	setenv("AU_QUEUE", queue_url, 1);
	setenv("AU_STORE", store_url, 1);
	setenv("AU_CLICKHOUSE", ch_url, 1);
	w1 = spawn_worker(bin, queue);
	w2 = spawn_worker(bin, queue);

	for (i = 0; i < N; i++) {
		struct au_record rec;

		if (!hs[i] || au_handle_wait(hs[i], 60000, &rec) < 0) {
			printf("# wait %zu: %s\n", i, hs[i] ? au_handle_err(hs[i])->str : "no handle");
			continue;
		}
		if (first_value(&rec) == (long long)(i * i))
			ok++;
		else if (ok + 5 > i)
			printf("# computation %zu: status %s error %s\n", i, au_status_name(rec.status),
			       rec.error ? rec.error : "-");
		if (rec.worker) {
			size_t k;

			for (k = 0; k < distinct && strcmp(workers[k], rec.worker); k++)
				;
			if (k == distinct)
				workers[distinct++] = strdup(rec.worker);
		}
		au_record_release(&rec);
	}
	T_EQ_INT(ok, N, "every result is in the store with the right value");
	T_OK(distinct == 2, "both workers ran computations (%zu distinct)", distinct);

	kill(w1, SIGTERM);
	kill(w2, SIGTERM);
	waitpid(w1, &st1, 0);
	waitpid(w2, &st2, 0);
	T_OK(WIFEXITED(st1) && WEXITSTATUS(st1) == 0 && WIFEXITED(st2) && WEXITSTATUS(st2) == 0,
	     "workers stop on SIGTERM with exit 0");
	for (i = 0; i < distinct; i++)
		free(workers[i]);
	for (i = 0; i < N; i++)
		au_handle_free(hs[i]);
	au_client_free(cl);
}

int main(void)
{
	const char *redis = t_env("AU_TEST_REDIS"), *ch_url = t_env("AU_TEST_CH");
	const char *pg = t_env("AU_TEST_PG");
	const char *bin = t_env("AU_BIN");
	struct au_clickhouse *ch = au_ch_new(ch_url, NULL);
	struct au_ch_response resp = { 0 };
	struct au_ch_query q = { 0 };
	char file_store[600];

	q.sql = "DROP TABLE IF EXISTS au_e2e";
	T_OK(ch && au_ch_query_sync(ch, &q, &resp) == 0, "drop table");
	au_ch_response_release(&resp);
	memset(&resp, 0, sizeof(resp));
	q.sql = "CREATE TABLE au_e2e ENGINE = MergeTree ORDER BY id AS "
		"SELECT toUInt32(number) AS id, number * number AS v FROM system.numbers LIMIT 1000";
	T_OK(au_ch_query_sync(ch, &q, &resp) == 0, "create table: %s", resp.err.str);
	au_ch_response_release(&resp);
	au_ch_free(ch);

	char *store_dir = t_tmpdir("e2e-store");

	snprintf(file_store, sizeof(file_store), "file://%s", store_dir);
	free(store_dir);
	run(redis, file_store, ch_url, bin);
	run(redis, redis, ch_url, bin);
	run(pg, pg, ch_url, bin);
	run(pg, redis, ch_url, bin);   /* mixed: PostgreSQL queue, Redis store */
	return t_done();
}
