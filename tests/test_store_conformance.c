/*
 * test_store_conformance.c - one suite, run unchanged on every result store
 * named on the command line (default: a file:// store in a fresh directory,
 * $AU_TEST_REDIS, memory://conformance and $AU_TEST_PG), against the real
 * thing. What only the Redis store does (reconnecting after its connections
 * are killed) is tested in test_redis.c.
 *
 *   test_store_conformance [url...]
 */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "plug.h"
#include "store.h"

/* T_EQ_INT evaluates its arguments twice; this evaluates once. */
static const char *url;           /* the store under test */

static int same_bytes(const unsigned char *a, size_t alen, const unsigned char *b, size_t blen)
{
	return alen == blen && (alen == 0 || memcmp(a, b, alen) == 0);
}

static void test_round_trip(struct au_store *s)
{
	/* bin 8 of 5 bytes with NULs inside */
	static const unsigned char result[] = { 0xc4, 0x05, 'a', 0, 'b', 0, 0xff };
	struct au_record r, out, bare;
	uint64_t before, after;

	t_record(&r, AU_COMPLETED, 3600);
	r.result = (unsigned char *)result;
	r.result_len = sizeof(result);
	r.error = (char *)"warning: 'x' was slow";
	r.task = (char *)"ch.sum";
	r.queue = (char *)"reports";
	r.worker = (char *)"host-1:4242";
	r.attempts = 3;
	r.created_at_ms = 1700000000001ull;
	r.started_at_ms = 1700000000002ull;
	r.finished_at_ms = 1700000000003ull;
	before = au_now_ms();
	EQ(t_put1(s, &r), 1, "round trip: put applies");
	after = au_now_ms();
	au_record_init(&out);
	if (!T_OK(au_store_get(s, r.id, &out) == 0, "round trip: get (%s)", s->err.str))
		return;
	T_EQ_STR(out.id, r.id, "round trip: id");
	T_EQ_INT(out.status, AU_COMPLETED, "round trip: status");
	T_OK(same_bytes(out.result, out.result_len, result, sizeof(result)),
	     "round trip: binary result with NULs (%zu bytes)", out.result_len);
	T_EQ_STR(out.error, r.error, "round trip: error");
	T_EQ_STR(out.task, r.task, "round trip: task");
	T_EQ_STR(out.queue, r.queue, "round trip: queue");
	T_EQ_STR(out.worker, r.worker, "round trip: worker");
	T_EQ_INT(out.attempts, 3, "round trip: attempts");
	T_EQ_INT(out.ttl_s, 3600, "round trip: ttl_s");
	T_EQ_INT(out.created_at_ms, r.created_at_ms, "round trip: created_at_ms");
	T_EQ_INT(out.started_at_ms, r.started_at_ms, "round trip: started_at_ms");
	T_EQ_INT(out.finished_at_ms, r.finished_at_ms, "round trip: finished_at_ms");
	T_OK(out.expires_at_ms >= before + 3600000 && out.expires_at_ms <= after + 3600000,
	     "round trip: expires_at_ms is write time + ttl (%llu in [%llu, %llu])",
	     (unsigned long long)out.expires_at_ms, (unsigned long long)before + 3600000,
	     (unsigned long long)after + 3600000);
	au_record_release(&out);

	t_record(&bare, AU_CANCELLED, 60);
	EQ(t_put1(s, &bare), 1, "round trip: put a record without optional fields");
	if (T_OK(au_store_get(s, bare.id, &out) == 0, "round trip: get it (%s)", s->err.str)) {
		T_EQ_INT(out.status, AU_CANCELLED, "round trip: bare status");
		T_OK(!out.task && !out.queue && !out.worker && !out.error && !out.result_len,
		     "round trip: absent fields stay absent");
		au_record_release(&out);
	}
}

static void test_batch(struct au_store *s)
{
	enum { N = 500 };
	struct au_record *recs = calloc(N, sizeof(*recs));
	struct au_buf vals[N];
	int applied[N], all = 1, good = 0;
	size_t i;

	for (i = 0; i < N; i++) {
		vals[i] = (struct au_buf)AU_BUF_INIT;
		au_mp_uint(&vals[i], i * 1000003u);
		t_record(&recs[i], AU_COMPLETED, 600);
		recs[i].result = vals[i].data;
		recs[i].result_len = vals[i].len;
		recs[i].attempts = (uint32_t)i;
		applied[i] = -1;
	}
	T_OK(au_store_put(s, recs, N, applied) == 0, "batch: put %d records (%s)", N, s->err.str);
	for (i = 0; i < N; i++)
		all &= applied[i] == 1;
	T_OK(all, "batch: every record applied");
	for (i = 0; i < N; i++) {
		struct au_record out;

		au_record_init(&out);
		if (au_store_get(s, recs[i].id, &out) == 0 && !strcmp(out.id, recs[i].id) &&
		    out.attempts == i && same_bytes(out.result, out.result_len, vals[i].data, vals[i].len))
			good++;
		au_record_release(&out);
	}
	T_EQ_INT(good, N, "batch: every record reads back");
	for (i = 0; i < N; i++)
		au_buf_release(&vals[i]);
	free(recs);
}

static void test_first_write_wins(struct au_store *s)
{
	static const unsigned char first[] = { 0x2a };   /* 42 */
	struct au_record a, again, b, batch[2], out;
	int applied[2] = { -1, -1 }, rc;

	t_record(&a, AU_COMPLETED, 600);
	a.result = (unsigned char *)first;
	a.result_len = 1;
	a.worker = (char *)"w1";
	EQ(t_put1(s, &a), 1, "first write: applied");
	again = a;
	again.status = AU_CANCELLED;
	again.result = NULL;
	again.result_len = 0;
	again.error = (char *)"cancelled";
	again.worker = (char *)"w2";
	EQ(t_put1(s, &again), 0, "second write of the same id: not applied");
	au_record_init(&out);
	if (T_OK(au_store_get(s, a.id, &out) == 0, "first write: readable (%s)", s->err.str)) {
		T_EQ_INT(out.status, AU_COMPLETED, "first write: status unchanged");
		T_OK(same_bytes(out.result, out.result_len, first, 1) && !out.error,
		     "first write: result unchanged");
		T_EQ_STR(out.worker, "w1", "first write: worker unchanged");
		au_record_release(&out);
	}
	t_record(&b, AU_FAILED, 600);
	batch[0] = again;
	batch[1] = b;
	rc = au_store_put(s, batch, 2, applied);
	T_OK(rc == 0 && applied[0] == 0 && applied[1] == 1,
	     "batch of an existing and a new id: applied = [%d, %d]", applied[0], applied[1]);
}

static void test_unknown(struct au_store *s)
{
	struct au_record r, out;
	char want[128];

	t_record(&r, AU_COMPLETED, 60);
	au_record_init(&out);
	T_OK(au_store_get(s, r.id, &out) < 0 && s->err.code == AU_ENOTFOUND,
	     "get unknown: AU_ENOTFOUND (%d)", s->err.code);
	snprintf(want, sizeof(want), "no result for computation '%s'", r.id);
	T_OK(!strncmp(s->err.str, want, strlen(want)), "get unknown: message '%s'", s->err.str);
}

/* TTL and sweep share one wait for expiry. */
static void test_ttl_and_sweep(struct au_store *s)
{
	struct au_record gone, swept[3], live;
	size_t removed = 99, i;
	uint64_t t0;
	int code, readable = 1;

	t_record(&gone, AU_COMPLETED, 1);
	for (i = 0; i < 3; i++)
		t_record(&swept[i], AU_FAILED, 1);
	t_record(&live, AU_COMPLETED, 3600);
	t0 = au_mono_us();
	readable &= t_put1(s, &gone) == 1 && t_put1(s, &live) == 1;
	for (i = 0; i < 3; i++)
		readable &= t_put1(s, &swept[i]) == 1;
	readable &= t_get_code(s, gone.id) == AU_OK && t_get_code(s, swept[2].id) == AU_OK;
	T_OK(readable, "ttl: records with ttl_s=1 are readable at once");
	if (t_ms_since(t0) < 1200)
		t_sleep_ms(1200 - (unsigned)t_ms_since(t0));

	code = t_get_code(s, gone.id);
	if (au_store_has(s, AU_STORE_TELLS_EXPIRED))
		T_EQ_INT(code, AU_EEXPIRED, "ttl: gone after 1.2 s, as AU_EEXPIRED");
	else
		T_OK(code == AU_ENOTFOUND || code == AU_EEXPIRED,
		     "ttl: gone after 1.2 s (code %d: %s)", code, s->err.str);
	if (code == AU_EEXPIRED) {
		char want[128];

		snprintf(want, sizeof(want), "result of computation '%s' expired", gone.id);
		T_EQ_STR(s->err.str, want, "ttl: expired message");
	}

	code = au_store_sweep(s, 2, &removed);
	T_OK(code == 0, "sweep: bounded sweep runs");
	T_EQ_INT(removed, au_store_has(s, AU_STORE_NATIVE_EXPIRY) ? 0 : 2, "sweep: removes at most max");
	removed = 99;
	code = au_store_sweep(s, 1000, &removed);
	T_OK(code == 0, "sweep: second sweep runs");
	T_EQ_INT(removed, au_store_has(s, AU_STORE_NATIVE_EXPIRY) ? 0 : 1, "sweep: removes the rest");
	removed = 99;
	code = au_store_sweep(s, 1000, &removed);
	T_OK(code == 0 && removed == 0, "sweep: nothing left to remove (%zu)", removed);
	for (i = 0; i < 3; i++) {
		code = t_get_code(s, swept[i].id);
		T_OK(code == AU_ENOTFOUND || code == AU_EEXPIRED, "sweep: expired record %zu gone (%d)",
		     i, code);
	}
	EQ(t_get_code(s, live.id), AU_OK, "sweep: live record kept");
}

static void test_del(struct au_store *s)
{
	struct au_record r;

	t_record(&r, AU_COMPLETED, 600);
	EQ(t_put1(s, &r), 1, "del: put");
	T_OK(au_store_del(s, r.id) == 0, "del: deletes (%s)", s->err.str);
	EQ(t_get_code(s, r.id), AU_ENOTFOUND, "del: record gone");
	T_OK(au_store_del(s, r.id) == 0, "del: deleting an absent id is fine");
	EQ(t_put1(s, &r), 1, "del: the id can be written again");
}

static void test_wait(struct au_store *s)
{
	struct au_record r, out;
	uint64_t t0, ms;
	int rc;

	t_record(&r, AU_COMPLETED, 600);
	r.task = (char *)"present";
	t_put1(s, &r);
	au_record_init(&out);
	t0 = au_mono_us();
	rc = au_store_wait(s, r.id, 5000, &out);
	ms = t_ms_since(t0);
	T_OK(rc == 0 && out.task && !strcmp(out.task, "present"), "wait: present record (%s)",
	     rc ? s->err.str : "ok");
	T_OK(ms < 50, "wait: returns at once when present (%llu ms)", (unsigned long long)ms);
	au_record_release(&out);

	t_record(&r, AU_COMPLETED, 600);
	t0 = au_mono_us();
	rc = au_store_wait(s, r.id, 300, &out);
	ms = t_ms_since(t0);
	T_OK(rc < 0 && s->err.code == AU_ETIMEDOUT, "wait: absent times out with AU_ETIMEDOUT (%s)",
	     s->err.str);
	T_OK(ms >= 300 && ms < 450, "wait: timeout after ~300 ms (%llu ms)", (unsigned long long)ms);
	t0 = au_mono_us();
	rc = au_store_wait(s, r.id, 0, &out);
	T_OK(rc < 0 && s->err.code == AU_ETIMEDOUT && t_ms_since(t0) < 50,
	     "wait: timeout 0 only looks");

	t_wait_for_writer(s, url, 5000);
	t_wait_for_writer(s, url, -1);
}

static void test_invalid_ids(struct au_store *s)
{
	static const char *const bad[] = {
		"../evil", "a/b", "", "0123456789ABCDEF0123456789ABCDEF",
		"0123456789abcdef0123456789abcdef0", "0123456789abcdef0123456789abcde",
	};
	struct au_record r, ok, batch[2], out;
	char want[128];
	size_t i;
	int refused = 1;

	for (i = 0; i < AU_ARRAY_SIZE(bad); i++) {
		t_record(&r, AU_COMPLETED, 60);
		au_record_init(&out);
		if (strlen(bad[i]) < sizeof(r.id)) {
			strcpy(r.id, bad[i]);
			refused &= au_store_put(s, &r, 1, NULL) < 0 && s->err.code == AU_EINVAL;
		}
		refused &= au_store_get(s, bad[i], &out) < 0 && s->err.code == AU_EINVAL;
		refused &= au_store_del(s, bad[i]) < 0 && s->err.code == AU_EINVAL;
		refused &= au_store_wait(s, bad[i], 10, &out) < 0 && s->err.code == AU_EINVAL;
		if (!refused) {
			T_OK(0, "invalid id '%s' refused (%s)", bad[i], s->err.str);
			return;
		}
	}
	T_OK(refused, "invalid ids: put, get, del and wait refuse them with AU_EINVAL");
	T_OK(au_store_get(s, NULL, &out) < 0 && s->err.code == AU_EINVAL, "invalid ids: NULL refused");
	t_record(&r, AU_COMPLETED, 60);
	strcpy(r.id, "../evil");
	au_store_put(s, &r, 1, NULL);
	snprintf(want, sizeof(want), "invalid computation id '../evil'");
	T_EQ_STR(s->err.str, want, "invalid ids: message");
	/* A batch is checked whole before anything is written. */
	t_record(&ok, AU_COMPLETED, 60);
	batch[0] = ok;
	batch[1] = r;
	T_OK(au_store_put(s, batch, 2, NULL) < 0 && t_get_code(s, ok.id) == AU_ENOTFOUND,
	     "invalid ids: a batch with one is refused whole");
}

/* ---- file store ---- */

static int count_entries(const char *dir, const char *prefix, int *bad_mode)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	int n = 0;

	if (!d)
		return -1;
	while ((de = readdir(d))) {
		char path[4096];
		struct stat st;

		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (prefix && strncmp(de->d_name, prefix, strlen(prefix)) != 0)
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		if (bad_mode && lstat(path, &st) == 0 && (st.st_mode & 07777) != 0600)
			(*bad_mode)++;
		n++;
	}
	closedir(d);
	return n;
}

static int write_file(const char *dir, const char *name, const void *p, size_t n)
{
	char path[4096];
	int fd, rc;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd < 0)
		return -1;
	rc = write(fd, p, n) == (ssize_t)n ? 0 : -1;
	close(fd);
	return rc;
}

static void remove_dir(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	char path[4096];

	while (d && (de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) {
			snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
			unlink(path);
		}
	if (d)
		closedir(d);
	rmdir(dir);
}

/* A writer killed at any moment leaves whole records or none. */
static void test_file_kill_mid_write(const char *dir)
{
	char *u = au_asprintf("file://%s.kill", dir);
	struct au_store *s = t_open_store(u);
	int whole = 0, broken = 0, tmp;
	struct dirent *de;
	pid_t pid;
	DIR *d;

	pid = fork();
	if (pid == 0) {
		static const unsigned char bin32_256k[] = { 0xc6, 0x00, 0x04, 0x00, 0x00 };
		struct au_buf big = AU_BUF_INIT;
		struct au_record r;

		au_buf_append(&big, bin32_256k, sizeof(bin32_256k));
		au_buf_reserve(&big, 1 << 18);
		memset(big.data + big.len, 'x', 1 << 18);
		big.len += 1 << 18;
		for (;;) {
			t_record(&r, AU_COMPLETED, 600);
			r.result = big.data;
			r.result_len = big.len;
			au_store_put(s, &r, 1, NULL);
		}
	}
	t_sleep_ms(200);
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	d = opendir(s->url.path);
	while (d && (de = readdir(d)))
		if (au_id_valid(de->d_name)) {
			if (t_get_code(s, de->d_name) == AU_OK)
				whole++;
			else
				broken++;
		}
	if (d)
		closedir(d);
	tmp = count_entries(s->url.path, ".tmp.", NULL);
	T_OK(whole > 0 && broken == 0, "file: SIGKILL mid-write: %d whole records, %d broken", whole,
	     broken);
	T_OK(tmp <= 1, "file: SIGKILL mid-write leaves at most one temporary file (%d)", tmp);
	remove_dir(s->url.path);
	au_store_close(s);
	free(u);
}

static void test_file_store(struct au_store *s)
{
	const char *dir = s->url.path;
	char path[4096], id[AU_ID_SIZE];
	struct au_record r, out;
	struct au_buf enc = AU_BUF_INIT;
	struct stat st;
	struct timespec old[2] = { { time(NULL) - 120, 0 }, { time(NULL) - 120, 0 } };
	size_t removed;
	int bad_mode = 0, n;

	n = count_entries(dir, NULL, &bad_mode);
	T_OK(n > 500 && bad_mode == 0, "file: %d record files, all mode 0600 (%d not)", n, bad_mode);
	EQ(count_entries(dir, ".", NULL), 0, "file: no temporary files left behind");
	if (stat(dir, &st) < 0)
		st.st_mode = 0;
	T_OK((st.st_mode & 0777) == 0700, "file: directory is mode 0700 (%o)", st.st_mode & 0777);
	snprintf(path, sizeof(path), "%s/../evil", dir);
	T_OK(access(path, F_OK) < 0, "file: '../evil' created nothing outside the directory");

	/* garbage and truncated records */
	au_id_new(id);
	write_file(dir, id, "garbage", 7);
	au_record_init(&out);
	T_OK(au_store_get(s, id, &out) < 0 && s->err.code == AU_EPROTO, "file: garbage file gives AU_EPROTO (%s)",
	     s->err.str);
	T_OK(au_store_wait(s, id, 1000, &out) < 0 && s->err.code == AU_EPROTO,
	     "file: wait on a garbage file gives AU_EPROTO");
	T_OK(au_store_sweep(s, 1000, &removed) == 0 && removed == 0, "file: sweep skips a garbage file");
	t_record(&r, AU_COMPLETED, 600);
	memcpy(r.id, id, sizeof(id));
	EQ(t_put1(s, &r), 1, "file: a put replaces an unreadable record");
	EQ(t_get_code(s, id), AU_OK, "file: and it reads back");

	t_record(&r, AU_COMPLETED, 600);
	r.task = (char *)"truncated";
	au_record_encode(&r, &enc, &s->err);
	write_file(dir, r.id, enc.data, enc.len / 2);
	EQ(t_get_code(s, r.id), AU_EPROTO, "file: truncated record gives AU_EPROTO");
	au_buf_release(&enc);

	au_id_new(id);
	snprintf(path, sizeof(path), "%s/%s", dir, id);
	T_OK(symlink("/etc/passwd", path) == 0 && t_get_code(s, id) == AU_EPROTO,
	     "file: a symlink named like an id is not followed");

	/* temporary files of killed writers */
	write_file(dir, ".tmp.stale", "x", 1);
	write_file(dir, ".tmp.fresh", "x", 1);
	snprintf(path, sizeof(path), "%s/.tmp.stale", dir);
	utimensat(AT_FDCWD, path, old, 0);
	au_store_sweep(s, 1000, &removed);
	T_OK(access(path, F_OK) < 0, "file: sweep removes a temporary file older than a minute");
	snprintf(path, sizeof(path), "%s/.tmp.fresh", dir);
	T_OK(access(path, F_OK) == 0, "file: sweep keeps a fresh temporary file");
	unlink(path);

	/* an unusable directory */
	{
		struct au_store *bad;

		snprintf(path, sizeof(path), "file://%s/%s/sub", dir, id);
		bad = au_store_open(path);
		T_OK(bad && bad->err.code == AU_EIO && strstr(bad->err.str, "unable to create directory"),
		     "file: an unusable directory is reported (%s)", bad ? bad->err.str : "oom");
		au_store_close(bad);
	}
	test_file_kill_mid_write(dir);
}

/* ---- memory store ---- */

static void test_memory_store(struct au_store *s)
{
	struct au_store *other = t_open_store("memory://conformance-other");
	struct au_record r;

	t_record(&r, AU_COMPLETED, 600);
	EQ(t_put1(s, &r), 1, "memory: put");
	EQ(t_get_code(other, r.id), AU_ENOTFOUND, "memory: stores of other names do not share");
	au_store_close(other);
}

static void run_suite(const char *u)
{
	struct au_store *s;

	url = u;
	s = t_open_store(u);
	printf("# store %s\n", s->url.text);
	test_round_trip(s);
	test_batch(s);
	test_first_write_wins(s);
	test_unknown(s);
	test_del(s);
	test_wait(s);
	test_invalid_ids(s);
	test_ttl_and_sweep(s);
	if (!strcmp(s->url.scheme, "file"))
		test_file_store(s);
	if (!strcmp(s->url.scheme, "memory"))
		test_memory_store(s);
	au_store_close(s);
}

static void test_registry(void)
{
	struct au_store *s = au_store_open("foo://x");
	size_t n = 0;

	T_OK(s && s->err.code == AU_EINVAL, "registry: unknown scheme refused");
	T_EQ_STR(s ? s->err.str : NULL, "unknown store scheme 'foo' in 'foo://x'", "registry: message");
	au_store_close(s);
	s = au_store_open("not a url");
	T_OK(s && s->err.code == AU_EINVAL, "registry: bad url refused (%s)", s ? s->err.str : "oom");
	au_store_close(s);
	au_store_close(NULL);
	while (au_store_backends[n])
		n++;
	T_OK(n >= 3, "registry: %zu stores listed", n);
}

int main(int argc, char **argv)
{
	/* The Redis store writes to sockets the server may have closed. */
	signal(SIGPIPE, SIG_IGN);
	/* A store whose wait never wakes would hang wait(-1): fail instead. */
	alarm(300);
	test_registry();
	if (argc > 1) {
		for (int i = 1; i < argc; i++)
			run_suite(argv[i]);
	} else {
		char *tmp = t_tmpdir("store"), *dir, *file_url;

		/* A directory that does not exist yet: the store creates it. */
		dir = au_asprintf("%s/results", tmp);
		file_url = au_asprintf("file://%s", dir);
		run_suite(file_url);
		run_suite(t_env("AU_TEST_REDIS"));
		run_suite("memory://conformance");
		run_suite(t_env("AU_TEST_PG"));
		remove_dir(dir);
		rmdir(tmp);
		free(file_url);
		free(dir);
		free(tmp);
	}
	return t_done();
}
