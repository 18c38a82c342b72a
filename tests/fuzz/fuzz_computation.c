/*
 * fuzz_computation.c - au_computation_decode on any bytes. What it accepts
 * must encode again, and the encoding must decode to the same fields: the
 * decoder accepts nothing the encoder refuses, and nothing is lost between
 * them.
 */
#include "core.h"
#include "fuzz.h"

static void same(const struct au_computation *a, const struct au_computation *b)
{
	size_t i;

	FUZZ_ASSERT(!strcmp(a->id, b->id), "id '%s' became '%s'", a->id, b->id);
	FUZZ_ASSERT(fuzz_str_eq(a->task, b->task), "task changed");
	FUZZ_ASSERT(fuzz_str_eq(a->queue, b->queue), "queue changed");
	FUZZ_ASSERT(fuzz_mem_eq(a->args, a->args_len, b->args, b->args_len), "args changed");
	FUZZ_ASSERT(a->priority == b->priority, "priority %d became %d", a->priority, b->priority);
	FUZZ_ASSERT(a->run_at_ms == b->run_at_ms, "run_at changed");
	FUZZ_ASSERT(a->max_attempts == b->max_attempts, "max_attempts changed");
	FUZZ_ASSERT(a->timeout_ms == b->timeout_ms, "timeout_ms changed");
	FUZZ_ASSERT(a->fail_on_timeout == b->fail_on_timeout, "on_timeout changed");
	FUZZ_ASSERT(a->ttl_s == b->ttl_s, "ttl_s changed");
	FUZZ_ASSERT(a->created_at_ms == b->created_at_ms, "created_at changed");
	FUZZ_ASSERT(a->nheaders == b->nheaders, "%zu headers became %zu", a->nheaders, b->nheaders);
	for (i = 0; i < a->nheaders; i++)
		FUZZ_ASSERT(!strcmp(a->headers[i].key, b->headers[i].key) &&
			    !strcmp(a->headers[i].value, b->headers[i].value), "header %zu changed", i);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct au_computation c, again;
	struct au_buf out = AU_BUF_INIT, out2 = AU_BUF_INIT;
	struct au_err err;

	if (au_computation_decode(data, size, &c, &err) < 0) {
		FUZZ_ASSERT(err.code == AU_EPROTO || err.code == AU_ETOOBIG || err.code == AU_ENOMEM,
			    "decode failed with code %d: %s", err.code, err.str);
		FUZZ_ASSERT(!strncmp(err.str, "malformed computation: ", 23) ||
			    !strncmp(err.str, "unsupported wire version ", 25) ||
			    !strncmp(err.str, "computation too large: ", 23) ||
			    !strcmp(err.str, "out of memory"), "unexpected message: %s", err.str);
		return 0;
	}
	if (au_computation_encode(&c, &out, &err) < 0) {
		/* the encoding writes every field, so it may grow past the limit */
		FUZZ_ASSERT(err.code == AU_ETOOBIG, "decoded but does not encode: %s", err.str);
	} else {
		FUZZ_ASSERT(au_computation_decode(out.data, out.len, &again, &err) == 0,
			    "its encoding does not decode: %s", err.str);
		same(&c, &again);
		/* the encoding is canonical: encoding it again changes nothing */
		FUZZ_ASSERT(au_computation_encode(&again, &out2, &err) == 0, "encode: %s", err.str);
		FUZZ_ASSERT(fuzz_mem_eq(out.data, out.len, out2.data, out2.len),
			    "two encodings of one computation differ");
		au_computation_release(&again);
	}
	au_buf_release(&out);
	au_buf_release(&out2);
	au_computation_release(&c);
	return 0;
}
