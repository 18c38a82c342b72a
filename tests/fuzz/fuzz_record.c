/*
 * fuzz_record.c - au_record_decode on any bytes. A record it accepts must
 * encode again and decode to the same fields, result and history byte for
 * byte.
 */
#include "core.h"
#include "fuzz.h"

static void same(const struct au_record *a, const struct au_record *b)
{
	FUZZ_ASSERT(!strcmp(a->id, b->id), "id '%s' became '%s'", a->id, b->id);
	FUZZ_ASSERT(a->status == b->status, "status %d became %d", (int)a->status, (int)b->status);
	FUZZ_ASSERT(fuzz_mem_eq(a->result, a->result_len, b->result, b->result_len),
		    "result changed");
	FUZZ_ASSERT(fuzz_mem_eq(a->history, a->history_len, b->history, b->history_len),
		    "history changed");
	FUZZ_ASSERT(fuzz_str_eq(a->error, b->error), "error changed");
	FUZZ_ASSERT(fuzz_str_eq(a->task, b->task), "task changed");
	FUZZ_ASSERT(fuzz_str_eq(a->queue, b->queue), "queue changed");
	FUZZ_ASSERT(fuzz_str_eq(a->worker, b->worker), "worker changed");
	FUZZ_ASSERT(a->attempts == b->attempts, "attempts changed");
	FUZZ_ASSERT(a->ttl_s == b->ttl_s, "ttl_s changed");
	FUZZ_ASSERT(a->created_at_ms == b->created_at_ms, "created_at changed");
	FUZZ_ASSERT(a->started_at_ms == b->started_at_ms, "started_at changed");
	FUZZ_ASSERT(a->finished_at_ms == b->finished_at_ms, "finished_at changed");
	FUZZ_ASSERT(a->expires_at_ms == b->expires_at_ms, "expires_at changed");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct au_record r, again;
	struct au_buf out = AU_BUF_INIT, out2 = AU_BUF_INIT;
	struct au_err err;

	if (au_record_decode(data, size, &r, &err) < 0) {
		FUZZ_ASSERT(err.code == AU_EPROTO || err.code == AU_ETOOBIG || err.code == AU_ENOMEM,
			    "decode failed with code %d: %s", err.code, err.str);
		FUZZ_ASSERT(!strncmp(err.str, "malformed record: ", 18) ||
			    !strncmp(err.str, "unsupported wire version ", 25) ||
			    !strncmp(err.str, "record too large: ", 18) ||
			    !strcmp(err.str, "out of memory"), "unexpected message: %s", err.str);
		return 0;
	}
	if (au_record_encode(&r, &out, &err) < 0) {
		FUZZ_ASSERT(err.code == AU_ETOOBIG, "decoded but does not encode: %s", err.str);
	} else {
		FUZZ_ASSERT(au_record_decode(out.data, out.len, &again, &err) == 0,
			    "its encoding does not decode: %s", err.str);
		same(&r, &again);
		FUZZ_ASSERT(au_record_encode(&again, &out2, &err) == 0, "encode: %s", err.str);
		FUZZ_ASSERT(fuzz_mem_eq(out.data, out.len, out2.data, out2.len),
			    "two encodings of one record differ");
		au_record_release(&again);
	}
	au_buf_release(&out);
	au_buf_release(&out2);
	au_record_release(&r);
	return 0;
}
