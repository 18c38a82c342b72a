/*
 * test_alloc.c - allocation failures, injected through the allocator seam
 * (core/alloc.c): the codec, the JSON mirror and the memory store are run
 * with their k-th allocation failing, for every k until the operation needs
 * no more. Each run must either succeed or fail with AU_ENOMEM and "out of
 * memory", leave its output empty, and leak nothing (the sanitizer build
 * checks leaks at exit). No server needed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"
#include "harness.h"
#include "store.h"

static unsigned long calls, fail_at;   /* fail_at: the call that fails, 0 = none */

static int should_fail(void)
{
	return ++calls == fail_at;
}

static void *t_malloc(size_t n)
{
	return should_fail() ? NULL : malloc(n);
}

static void *t_calloc(size_t n, size_t size)
{
	return should_fail() ? NULL : calloc(n, size);
}

static void *t_realloc(void *p, size_t n)
{
	return should_fail() ? NULL : realloc(p, n);
}

static const struct au_allocator failing = { t_malloc, t_calloc, t_realloc };

/* Makes the k-th allocation from now fail (0: none fails). */
static void fail_nth(unsigned long k)
{
	calls = 0;
	fail_at = k;
	au_set_allocator(&failing);
}

static void fill(struct au_computation *c, struct au_header h[2])
{
	static const unsigned char args[] = { 0x81, 0xa3, 's', 'q', 'l', 0xa8,
					      'S', 'E', 'L', 'E', 'C', 'T', ' ', '1' };

	au_computation_init(c);
	au_id_new(c->id);
	c->task = (char *)"ch.query";
	c->args = (unsigned char *)args;
	c->args_len = sizeof(args);
	c->queue = (char *)"reports";
	c->max_attempts = 3;
	c->ttl_s = 60;
	h[0].key = (char *)"trace-id";
	h[0].value = (char *)"abc";
	h[1].key = (char *)"tenant";
	h[1].value = (char *)"7";
	c->headers = h;
	c->nheaders = 2;
}

/* One operation under failure k: 1 ok, 0 failed cleanly with AU_ENOMEM,
 * -1 failed some other way. */
static int judge(int rc, const struct au_err *err)
{
	if (rc == 0)
		return 1;
	return err->code == AU_ENOMEM && !strcmp(err->str, "out of memory") ? 0 : -1;
}

static void test_computation_codec(void)
{
	struct au_computation in, out;
	struct au_header h[2];
	struct au_buf wire = AU_BUF_INIT, b = AU_BUF_INIT;
	struct au_err err = { 0, "" };
	unsigned long k;
	int bad = 0, failed = 0, done = 0;

	fill(&in, h);
	T_OK(au_computation_encode(&in, &wire, &err) == 0, "a computation to work on");
	for (k = 1; k < 1000 && !done; k++) {
		int r;

		au_clearerr(&err);
		fail_nth(k);
		r = judge(au_computation_encode(&in, &b, &err), &err);
		au_set_allocator(NULL);
		bad += r < 0;
		failed += r == 0;
		if (r == 0 && b.len)
			bad++;   /* a failed encode leaves the buffer as it was */
		done = r == 1 && calls < k;
		au_buf_release(&b);
	}
	T_OK(done, "encode: runs out of allocations to fail (%lu tried)", k - 1);
	T_OK(failed > 0, "encode: %d injected failures reported", failed);
	T_EQ_INT(bad, 0, "encode: every failure is AU_ENOMEM 'out of memory', nothing half written");

	failed = bad = done = 0;
	for (k = 1; k < 1000 && !done; k++) {
		int r;

		au_clearerr(&err);
		fail_nth(k);
		r = judge(au_computation_decode(wire.data, wire.len, &out, &err), &err);
		au_set_allocator(NULL);
		bad += r < 0;
		failed += r == 0;
		if (r == 0 && (out.task || out.args || out.queue || out.headers))
			bad++;   /* a failed decode leaves nothing to release */
		if (r == 1 && (strcmp(out.task, "ch.query") || out.nheaders != 2 ||
			       strcmp(out.headers[1].value, "7")))
			bad++;
		done = r == 1 && calls < k;
		au_computation_release(&out);
	}
	T_OK(done, "decode: runs out of allocations to fail (%lu tried)", k - 1);
	T_OK(failed >= 4, "decode: %d injected failures reported (task, queue, args, headers)",
	     failed);
	T_EQ_INT(bad, 0, "decode: every failure is AU_ENOMEM 'out of memory', output released");
	au_buf_release(&wire);
}

static void test_record_codec(void)
{
	struct au_record in, out;
	struct au_buf wire = AU_BUF_INIT;
	struct au_err err = { 0, "" };
	unsigned long k;
	int bad = 0, failed = 0, done = 0;
	static const unsigned char result[] = { 0x92, 0x01, 0xa1, 'x' };

	au_record_init(&in);
	au_id_new(in.id);
	in.status = AU_FAILED;
	in.result = (unsigned char *)result;
	in.result_len = sizeof(result);
	in.error = (char *)"boom";
	in.task = (char *)"au.fail";
	in.queue = (char *)"default";
	in.worker = (char *)"host:1";
	T_OK(au_record_encode(&in, &wire, &err) == 0, "a record to work on");
	for (k = 1; k < 1000 && !done; k++) {
		int r;

		au_clearerr(&err);
		fail_nth(k);
		r = judge(au_record_decode(wire.data, wire.len, &out, &err), &err);
		au_set_allocator(NULL);
		bad += r < 0;
		failed += r == 0;
		if (r == 0 && (out.result || out.error || out.task || out.queue || out.worker))
			bad++;
		if (r == 1 && (strcmp(out.error, "boom") || out.result_len != sizeof(result)))
			bad++;
		done = r == 1 && calls < k;
		au_record_release(&out);
	}
	T_OK(done, "record decode: runs out of allocations to fail (%lu tried)", k - 1);
	T_OK(failed >= 5, "record decode: %d injected failures reported", failed);
	T_EQ_INT(bad, 0, "record decode: every failure is AU_ENOMEM, output released");
	au_buf_release(&wire);
}

static void test_json(void)
{
	const char *json = "{\"sql\":\"SELECT {x:UInt8}\",\"params\":{\"x\":[1,2,3]},\"s\":\"\\u00e9\"}";
	struct au_err err = { 0, "" };
	unsigned char *mp = NULL;
	size_t len = 0;
	unsigned long k;
	int bad = 0, failed = 0, done = 0;

	for (k = 1; k < 1000 && !done; k++) {
		int r;

		au_clearerr(&err);
		fail_nth(k);
		r = judge(au_json_to_msgpack(json, &mp, &len, &err), &err);
		au_set_allocator(NULL);
		bad += r < 0;
		failed += r == 0;
		done = r == 1 && calls < k;
		if (r == 1) {
			char *back = au_msgpack_to_json(mp, len, &err);

			bad += !back || !strstr(back, "\"params\"");
			free(back);
		}
		free(mp);
		mp = NULL;
	}
	T_OK(done, "json to msgpack: runs out of allocations to fail (%lu tried)", k - 1);
	T_OK(failed > 0, "json to msgpack: %d injected failures reported", failed);
	T_EQ_INT(bad, 0, "json to msgpack: every failure is AU_ENOMEM, a success reads back");
}

/* A store whose puts fail on allocation writes nothing of the batch, says
 * so, and goes on working once memory is back. */
static void test_memory_store(void)
{
	struct au_store *s = au_store_open("memory://alloc");
	struct au_record recs[3], out;
	unsigned long k;
	int bad = 0, failed = 0, done = 0, i;

	if (!T_OK(s && !s->err.code, "memory store opens"))
		return;
	for (k = 1; k < 1000 && !done; k++) {
		int r, applied[3] = { -1, -1, -1 }, found = 0;

		for (i = 0; i < 3; i++) {
			au_record_init(&recs[i]);
			au_id_new(recs[i].id);
			recs[i].status = AU_COMPLETED;
			recs[i].task = (char *)"au.noop";
			recs[i].ttl_s = 60;
		}
		au_clearerr(&s->err);
		fail_nth(k);
		r = judge(au_store_put(s, recs, 3, applied), &s->err);
		au_set_allocator(NULL);
		bad += r < 0;
		failed += r == 0;
		done = r == 1 && calls < k;
		for (i = 0; i < 3; i++) {
			int got = au_store_get(s, recs[i].id, &out) == 0;

			found += got;
			if (got)
				au_record_release(&out);
		}
		/* all or nothing: a failed batch wrote none of its records */
		if ((r == 0 && found != 0) || (r == 1 && found != 3))
			bad++;
	}
	T_OK(done, "memory store put: runs out of allocations to fail (%lu tried)", k - 1);
	T_OK(failed >= 4, "memory store put: %d injected failures reported", failed);
	T_EQ_INT(bad, 0, "memory store put: AU_ENOMEM, nothing of a failed batch written");

	failed = bad = done = 0;
	for (k = 1; k < 1000 && !done; k++) {
		int r;

		au_clearerr(&s->err);
		fail_nth(k);
		r = judge(au_store_get(s, recs[0].id, &out), &s->err);
		au_set_allocator(NULL);
		bad += r < 0;
		failed += r == 0;
		if (r == 1 && strcmp(out.task, "au.noop"))
			bad++;
		done = r == 1 && calls < k;
		au_record_release(&out);
	}
	T_OK(done, "memory store get: runs out of allocations to fail (%lu tried)", k - 1);
	T_OK(failed > 0, "memory store get: %d injected failures reported", failed);
	T_EQ_INT(bad, 0, "memory store get: AU_ENOMEM, the record intact after");
	au_store_close(s);
}

int main(void)
{
	test_computation_codec();
	test_record_codec();
	test_json();
	test_memory_store();
	return t_done();
}
