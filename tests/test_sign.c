/*
 * test_sign.c - signed computations (core/sign.c, middleware/signing.c):
 * the key list, docs/wire-format.md's worked example byte for byte, sign
 * and verify through the codec, forged args, tampered headers, a wrong
 * key, rotation, unsigned ones; then a client and a worker on memory://
 * with AU_SIGNING_KEY set: refused computations are dead-lettered unrun,
 * before any middleware of the program.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "core.h"
#include "harness.h"
#include "queue.h"

static const char ID[] = "0123456789abcdef0123456789abcdef";
#define KEY1 "example signing key 1"
#define KEY0 "example signing key 0"

/* docs/wire-format.md, "Signing": the worked example */
static const char EXAMPLE_HEX[] =
	"8ba17601a26964d9203031323334353637383961626364656630313233343536373839616263646566"
	"a47461736ba863682e7175657279a57175657565a764656661756c74a87072696f7269747900"
	"a672756e5f617400ac6d61785f617474656d70747303aa74696d656f75745f6d7300"
	"a574746c5f73ce00015180aa637265617465645f6174cf0000018bcfe56800"
	"a46172677381a373716ca853454c4543542031";
static const char EXAMPLE_SIG[] =
	"v1:ba3dbdc4:23fe8801105d260f0597331d0d22d2bf9a06ed34eab00b0804cbfe27bbf3e81d";

static char *hex_of(const unsigned char *p, size_t n)
{
	char *s = malloc(2 * n + 1);
	size_t i;

	for (i = 0; i < n; i++)
		sprintf(s + 2 * i, "%02x", p[i]);
	s[2 * n] = '\0';
	return s;
}

/* The annotated example of docs/wire-format.md. */
static void example(struct au_computation *c)
{
	static const unsigned char args[] = { 0x81, 0xa3, 's', 'q', 'l', 0xa8,
					      'S', 'E', 'L', 'E', 'C', 'T', ' ', '1' };

	au_computation_init(c);
	memcpy(c->id, ID, AU_ID_SIZE);
	c->task = strdup("ch.query");
	c->queue = strdup("default");
	c->max_attempts = 3;
	c->ttl_s = 86400;
	c->created_at_ms = 1700000000000ULL;
	c->args = malloc(sizeof(args));
	memcpy(c->args, args, sizeof(args));
	c->args_len = sizeof(args);
}

static struct au_sign_keys keys(const char *list)
{
	struct au_sign_keys ks;
	struct au_err err = { 0, "" };

	if (au_sign_keys_parse(list, &ks, &err) < 0) {
		T_OK(0, "keys '%s' parse: %s", list, err.str);
		exit(t_done());
	}
	return ks;
}

/* c signed with the first key of list, encoded, decoded again into out */
static void sign_and_travel(const char *list, struct au_computation *c, struct au_computation *out)
{
	struct au_sign_keys ks = keys(list);
	struct au_err err = { 0, "" };
	struct au_buf b = AU_BUF_INIT;
	char sig[AU_SIGNATURE_SIZE];

	T_OK(au_sign_header(&ks.keys[0], c, sig, &err) == 0, "signs: %s", err.str);
	au_computation_set_header(c, AU_SIGNATURE_HEADER, sig);
	T_OK(au_computation_encode(c, &b, &err) == 0, "encodes signed");
	T_OK(au_computation_decode(b.data, b.len, out, &err) == 0, "decodes signed: %s", err.str);
	au_buf_release(&b);
	au_sign_keys_release(&ks);
}

/* what verifying c with list says: "" when it is good */
static const char *verdict(const char *list, const struct au_computation *c)
{
	static struct au_err err;
	struct au_sign_keys ks = keys(list);

	memset(&err, 0, sizeof(err));
	if (au_sign_verify(&ks, c, &err) == 0)
		err.str[0] = '\0';
	else if (err.code != AU_EREFUSED)
		snprintf(err.str, sizeof(err.str), "code %d", err.code);
	au_sign_keys_release(&ks);
	return err.str;
}

static void test_keys(void)
{
	struct au_sign_keys ks;
	struct au_err err = { 0, "" };
	static const struct { const char *list, *msg; } bad[] = {
		{ "", "AU_SIGNING_KEY is empty" },
		{ "short", "AU_SIGNING_KEY: key 1 is shorter than 16 bytes" },
		{ KEY1 ",tooshort-secret", "AU_SIGNING_KEY: key 2 is shorter than 16 bytes" },
		{ KEY1 ",,", "AU_SIGNING_KEY: key 2 is empty" },
		{ KEY1 ",  ", "AU_SIGNING_KEY: key 2 is empty" },
		{ "0123456789abcdef,0123456789abcdef,0123456789abcdef,0123456789abcdef,"
		  "0123456789abcdef,0123456789abcdef,0123456789abcdef,0123456789abcdef,"
		  "0123456789abcdef", "AU_SIGNING_KEY: more than 8 keys" },
	};
	size_t i;

	ks = keys(KEY1);
	T_EQ_INT(ks.n, 1, "one key");
	T_EQ_STR(ks.keys[0].id, "ba3dbdc4", "key id: the first 8 hex digits of SHA-256(key)");
	au_sign_keys_release(&ks);
	ks = keys(" " KEY1 " ,\t" KEY0 "\t");
	T_EQ_INT(ks.n, 2, "two keys");
	T_OK(ks.keys[0].len == strlen(KEY1) && !memcmp(ks.keys[0].key, KEY1, strlen(KEY1)),
	     "spaces around a key are trimmed");
	T_EQ_STR(ks.keys[1].id, "5d7a65c4", "the second key's id");
	au_sign_keys_release(&ks);
	T_OK(au_sign_keys_parse("0123456789abcdef", &ks, &err) == 0 && ks.n == 1,
	     "16 bytes are enough");
	au_sign_keys_release(&ks);
	for (i = 0; i < AU_ARRAY_SIZE(bad); i++) {
		memset(&err, 0, sizeof(err));
		T_OK(au_sign_keys_parse(bad[i].list, &ks, &err) < 0 && err.code == AU_EINVAL,
		     "refused: '%.20s'", bad[i].list);
		T_EQ_STR(err.str, bad[i].msg, "its message");
		T_OK(!strstr(err.str, "short,") && !strstr(err.str, "tooshort") &&
		     !strstr(err.str, "example"), "the message never shows a key");
		T_EQ_INT(ks.n, 0, "nothing kept");
	}
	{
		void *ctx = au_signing_new("secret-but-short", &err);

		T_OK(ctx != NULL, "au_signing_new: a good list");
		au_signing_middleware.free(ctx);
		memset(&err, 0, sizeof(err));
		T_OK(au_signing_new("secret", &err) == NULL && err.code == AU_EINVAL &&
		     !strstr(err.str, "secret"), "au_signing_new: a bad list, unshown: %s", err.str);
	}
}

static void test_example(void)
{
	struct au_computation c, back;
	struct au_sign_keys ks = keys(KEY1);
	struct au_err err = { 0, "" };
	struct au_buf b = AU_BUF_INIT;
	char sig[AU_SIGNATURE_SIZE], *hex;

	example(&c);
	T_OK(au_sign_canonical(&c, &b, &err) == 0, "canonical bytes");
	hex = hex_of(b.data, b.len);
	T_EQ_STR(hex, EXAMPLE_HEX, "the example's canonical bytes are the documented ones");
	T_EQ_INT(b.len, 163, "163 bytes");
	free(hex);
	T_OK(au_sign_header(&ks.keys[0], &c, sig, &err) == 0, "the example signs");
	T_EQ_STR(sig, EXAMPLE_SIG, "the example's header is the documented one");
	/* the header does not change the bytes it covers */
	au_computation_set_header(&c, AU_SIGNATURE_HEADER, sig);
	au_buf_reset(&b);
	au_sign_canonical(&c, &b, &err);
	hex = hex_of(b.data, b.len);
	T_EQ_STR(hex, EXAMPLE_HEX, "canonical bytes leave the signature header out");
	free(hex);
	au_buf_reset(&b);
	au_computation_encode(&c, &b, &err);
	T_OK(au_computation_decode(b.data, b.len, &back, &err) == 0, "the signed example decodes");
	T_EQ_STR(verdict(KEY1, &back), "", "the signed example verifies");
	T_EQ_INT(b.len, 163 + 8 + 1 + 13 + 2 + 76, "the signed example's size");
	au_computation_release(&back);

	/* another writer: defaults left out, integers wider than needed, the
	 * keys in another order; same values, so the same canonical bytes */
	au_buf_reset(&b);
	au_mp_map(&b, 8);
	au_mp_str(&b, "headers", 7);
	au_mp_map(&b, 1);
	au_mp_str(&b, AU_SIGNATURE_HEADER, strlen(AU_SIGNATURE_HEADER));
	au_mp_str(&b, EXAMPLE_SIG, strlen(EXAMPLE_SIG));
	au_mp_str(&b, "args", 4);
	au_buf_append(&b, c.args, c.args_len);
	au_mp_str(&b, "v", 1);
	au_buf_append(&b, "\xcc\x01", 2);
	au_mp_str(&b, "id", 2);
	au_mp_str(&b, ID, 32);
	au_mp_str(&b, "task", 4);
	au_mp_str(&b, "ch.query", 8);
	au_mp_str(&b, "max_attempts", 12);
	au_buf_append(&b, "\xce\x00\x00\x00\x03", 5);
	au_mp_str(&b, "ttl_s", 5);
	au_buf_append(&b, "\xcf\x00\x00\x00\x00\x00\x01\x51\x80", 9);
	au_mp_str(&b, "created_at", 10);
	au_mp_uint(&b, 1700000000000ULL);
	T_OK(au_computation_decode(b.data, b.len, &back, &err) == 0, "another writer's form decodes");
	T_EQ_STR(verdict(KEY1, &back), "", "... and verifies: the canonical bytes are of the values");
	au_computation_release(&back);
	au_computation_release(&c);
	au_buf_release(&b);
	au_sign_keys_release(&ks);
}

/* another hex digit in place of *p */
static void flip(char *p)
{
	*p = *p == '0' ? '1' : '0';
}

static void test_verify(void)
{
	struct au_computation c, s, t;
	struct au_err err = { 0, "" };
	struct au_buf b = AU_BUF_INIT;
	char *p;

	/* a header before the signature, priority, on_timeout: all covered */
	example(&c);
	c.priority = -7;
	c.fail_on_timeout = 1;
	au_computation_set_header(&c, "traceparent", "00-abc-def-01");
	sign_and_travel(KEY1, &c, &s);
	T_EQ_STR(verdict(KEY1, &s), "", "round trip: signed, encoded, decoded, verified");
	T_EQ_STR(verdict(KEY0 "," KEY1, &s), "", "a list that has the key second verifies");
	T_EQ_STR(verdict(KEY0, &s), "bad signature: unknown key ba3dbdc4",
		 "a list without the key: unknown key");

	/* forged args: the body's bytes changed where they travel */
	au_computation_encode(&s, &b, &err);
	p = memmem(b.data, b.len, "SELECT 1", 8);
	T_OK(p != NULL, "the args are in the body");
	if (p) {
		p[7] = '2';
		T_OK(au_computation_decode(b.data, b.len, &t, &err) == 0, "forged body decodes");
		T_EQ_STR(verdict(KEY1, &t), "bad signature: does not match any key", "forged args refused");
		au_computation_release(&t);
	}
	au_buf_release(&b);

	/* tampered fields and headers */
	au_computation_release(&c);
#define TAMPER(what, stmt)                                                                      \
	do {                                                                                    \
		struct au_buf tb = AU_BUF_INIT;                                                 \
		au_computation_encode(&s, &tb, &err);                                           \
		au_computation_decode(tb.data, tb.len, &t, &err);                               \
		au_buf_release(&tb);                                                            \
		stmt;                                                                           \
		T_EQ_STR(verdict(KEY1, &t), "bad signature: does not match any key", what);     \
		au_computation_release(&t);                                                     \
	} while (0)
	TAMPER("another header's value changed", au_computation_set_header(&t, "traceparent", "x"));
	TAMPER("a header added", au_computation_set_header(&t, "x-extra", "1"));
	TAMPER("max_attempts changed", t.max_attempts = 4);
	TAMPER("priority changed", t.priority = 7);
	TAMPER("on_timeout changed", t.fail_on_timeout = 0);
	TAMPER("the queue changed", (free(t.queue), t.queue = strdup("other")));
	TAMPER("the task changed", t.task[0] = 'x');
	TAMPER("the id changed", t.id[0] = 'f');
	TAMPER("the mac changed", flip((char *)au_computation_header(&t, AU_SIGNATURE_HEADER) + 20));
#undef TAMPER

	/* the header itself */
	{
		static const struct { const char *value, *msg; } bad[] = {
			{ "", "bad signature: malformed 'au-signature' header" },
			{ "v1:ba3dbdc4", "bad signature: malformed 'au-signature' header" },
			{ "v1:BA3DBDC4:23fe8801105d260f0597331d0d22d2bf9a06ed34eab00b0804cbfe27bbf3e81d",
			  "bad signature: malformed 'au-signature' header" },
			{ "v1:ba3dbdc4:23fe8801105d260f0597331d0d22d2bf9a06ed34eab00b0804cbfe27bbf3e81",
			  "bad signature: malformed 'au-signature' header" },
			{ "v1:ba3dbdc4:23fe8801105d260f0597331d0d22d2bf9a06ed34eab00b0804cbfe27bbf3e81dd",
			  "bad signature: malformed 'au-signature' header" },
			{ "v1:ba3dbdc4;23fe8801105d260f0597331d0d22d2bf9a06ed34eab00b0804cbfe27bbf3e81d",
			  "bad signature: malformed 'au-signature' header" },
			{ "v2:ba3dbdc4:23fe", "bad signature: unsupported version 'v2'" },
			{ "v1:deadbeef:23fe8801105d260f0597331d0d22d2bf9a06ed34eab00b0804cbfe27bbf3e81d",
			  "bad signature: unknown key deadbeef" },
		};
		size_t i;

		for (i = 0; i < AU_ARRAY_SIZE(bad); i++) {
			au_computation_set_header(&s, AU_SIGNATURE_HEADER, bad[i].value);
			T_EQ_STR(verdict(KEY1, &s), bad[i].msg, bad[i].value);
		}
	}
	au_computation_release(&s);

	/* unsigned, and signed twice */
	example(&c);
	T_EQ_STR(verdict(KEY1, &c), "bad signature: unsigned", "unsigned refused");
	au_computation_set_header(&c, "traceparent", "00-abc-def-01");
	T_EQ_STR(verdict(KEY1, &c), "bad signature: unsigned", "unsigned with other headers refused");
	sign_and_travel(KEY1, &c, &s);
	{
		struct au_header *h = realloc(s.headers, (s.nheaders + 1) * sizeof(*h));

		s.headers = h;
		h[s.nheaders].key = strdup(AU_SIGNATURE_HEADER);
		h[s.nheaders].value = strdup(au_computation_header(&s, AU_SIGNATURE_HEADER));
		s.nheaders++;
		T_EQ_STR(verdict(KEY1, &s), "bad signature: more than one 'au-signature' header",
			 "two signature headers refused");
	}
	au_computation_release(&s);
	au_computation_release(&c);

	/* a key the reader drops is not covered: the signature no longer matches */
	example(&c);
	sign_and_travel(KEY1, &c, &s);
	au_computation_encode(&s, &b, &err);
	b.data[0]++;   /* one pair more: "x": 1 */
	au_buf_append(&b, "\xa1x\x01", 3);
	T_OK(au_computation_decode(b.data, b.len, &t, &err) == 0, "an unknown key is read past");
	T_EQ_STR(verdict(KEY1, &t), "", "... and is not covered, as the docs say (dropped)");
	au_computation_release(&t);
	au_buf_release(&b);
	au_computation_release(&s);
	au_computation_release(&c);

	/* rotation: old key signs, new list has it second */
	example(&c);
	sign_and_travel(KEY0, &c, &s);
	T_EQ_STR(verdict(KEY1 "," KEY0, &s), "", "rotation: signed with the old key, accepted");
	T_EQ_STR(verdict(KEY1, &s), "bad signature: unknown key 5d7a65c4",
		 "rotation done: the old key is refused");
	au_computation_release(&s);
	au_computation_release(&c);
}

/* The middleware's two hooks, called as the chains call them. */
static void test_middleware(void)
{
	struct au_err err = { 0, "" };
	void *signer = au_signing_new(KEY0 ", " KEY1, &err);
	void *checker = au_signing_new(KEY1 "," KEY0, &err);
	struct au_computation c;
	struct au_enqueue_ctx e;
	struct au_run run;
	char errbuf[256] = "";

	T_OK(au_signing_middleware.flags & AU_MW_FAIL_CLOSED, "fail closed");
	T_EQ_STR(au_signing_middleware.name, "signing", "its name");
	example(&c);
	memset(&run, 0, sizeof(run));
	run.c = &c;
	T_EQ_INT(au_signing_middleware.before(checker, &run, errbuf, sizeof(errbuf)), AU_HOOK_REFUSE,
		 "before: unsigned refused");
	T_EQ_STR(errbuf, "bad signature: unsigned", "with the reason");
	e.c = &c;
	e.queue = c.queue;
	T_EQ_INT(au_signing_middleware.before_enqueue(signer, &e, errbuf, sizeof(errbuf)), AU_HOOK_OK,
		 "before_enqueue signs");
	T_OK(au_computation_header(&c, AU_SIGNATURE_HEADER) &&
	     !strncmp(au_computation_header(&c, AU_SIGNATURE_HEADER), "v1:5d7a65c4:", 12),
	     "with the first key: %s", au_computation_header(&c, AU_SIGNATURE_HEADER));
	T_EQ_INT(au_signing_middleware.before(checker, &run, errbuf, sizeof(errbuf)), AU_HOOK_OK,
		 "before: signed accepted");
	c.max_attempts = 9;
	T_EQ_INT(au_signing_middleware.before(checker, &run, errbuf, sizeof(errbuf)), AU_HOOK_REFUSE,
		 "before: changed refused");
	T_EQ_STR(errbuf, "bad signature: does not match any key", "with the reason");
	/* signing again replaces the header */
	T_EQ_INT(au_signing_middleware.before_enqueue(signer, &e, errbuf, sizeof(errbuf)), AU_HOOK_OK,
		 "before_enqueue signs again");
	T_EQ_INT(c.nheaders, 1, "one header still");
	T_EQ_INT(au_signing_middleware.before(checker, &run, errbuf, sizeof(errbuf)), AU_HOOK_OK,
		 "before: re-signed accepted");
	/* no room for the header: the enqueue fails */
	{
		char k[8];
		int i;

		au_computation_release(&c);
		example(&c);
		for (i = 0; i < AU_MAX_HEADERS; i++) {
			snprintf(k, sizeof(k), "h%d", i);
			au_computation_set_header(&c, k, "v");
		}
		e.c = &c;
		T_EQ_INT(au_signing_middleware.before_enqueue(signer, &e, errbuf, sizeof(errbuf)),
			 AU_HOOK_ERROR, "before_enqueue: no room for the header is an error");
		T_EQ_STR(errbuf, "unable to add the 'au-signature' header (32 headers at most)",
			 "its message");
	}
	au_computation_release(&c);
	au_signing_middleware.free(signer);
	au_signing_middleware.free(checker);
}

/* ---- a client and a worker with AU_SIGNING_KEY ---- */

static char seen[1024];

static int user_before(void *ctx, struct au_run *run, char *errbuf, size_t errlen)
{
	size_t n = strlen(seen);

	(void)ctx;
	(void)errbuf;
	(void)errlen;
	snprintf(seen + n, sizeof(seen) - n, "%s ", run->c->id);
	return AU_HOOK_OK;
}

static const struct au_middleware_ops user_mw = { .name = "user", .before = user_before };

/* a client middleware that adds a header: the signature must cover it */
static int add_trace(void *ctx, struct au_enqueue_ctx *e, char *errbuf, size_t errlen)
{
	(void)ctx;
	(void)errbuf;
	(void)errlen;
	return au_computation_set_header(e->c, "traceparent", "00-trace-01") < 0 ? AU_HOOK_ERROR
										  : AU_HOOK_OK;
}

static const struct au_middleware_ops trace_mw = { .name = "trace", .before_enqueue = add_trace };

static struct au_handle *put(struct au_client *cl, const char *json)
{
	struct au_enqueue_opts eo = { 0 };
	struct au_handle *h = NULL;
	unsigned char *args;
	size_t len;

	eo.queue = "signed";
	if (au_json_to_msgpack(json, &args, &len, NULL) < 0)
		return NULL;
	if (au_enqueue(cl, "au.echo", args, len, &eo, &h) < 0)
		T_OK(0, "enqueue: %s", au_client_err(cl)->str);
	free(args);
	return h;
}

static void test_end_to_end(void)
{
	struct au_config cfg = { "memory://ts", "memory://ts", "http://127.0.0.1:1/default" };
	struct event_base *base = event_base_new();
	struct au_worker_opts wo = { 0 };
	struct au_client *signer, *old, *plain, *other;
	struct au_handle *h_ok, *h_old, *h_plain, *h_other;
	struct au_worker *w;
	struct au_record rec;

	setenv("AU_SIGNING_KEY", "too short", 1);
	signer = au_client_new(&cfg);
	T_OK(signer && au_client_err(signer)->code == AU_EINVAL &&
	     !strcmp(au_client_err(signer)->str, "AU_SIGNING_KEY: key 1 is shorter than 16 bytes"),
	     "client: a bad AU_SIGNING_KEY is its error: %s", au_client_err(signer)->str);
	T_OK(au_enqueue(signer, "au.echo", (const unsigned char *)"\xc0", 1, NULL, NULL) < 0 &&
	     strstr(au_client_err(signer)->str, "AU_SIGNING_KEY"),
	     "client: with a bad key nothing is enqueued, unsigned or not");
	au_client_free(signer);
	w = au_worker_new(&cfg, &wo, NULL, base);
	T_OK(w && au_worker_err(w)->code == AU_EINVAL &&
	     !strcmp(au_worker_err(w)->str, "AU_SIGNING_KEY: key 1 is shorter than 16 bytes"),
	     "worker: a bad AU_SIGNING_KEY is its error: %s", w ? au_worker_err(w)->str : "");
	T_OK(w && au_worker_start(w) < 0, "worker: ... and it does not start");
	au_worker_free(w);

	setenv("AU_SIGNING_KEY", KEY1, 1);
	signer = au_client_new(&cfg);
	T_OK(signer && !au_client_err(signer)->code, "client with AU_SIGNING_KEY");
	au_client_use(signer, &trace_mw, NULL);
	setenv("AU_SIGNING_KEY", KEY0, 1);
	old = au_client_new(&cfg);
	setenv("AU_SIGNING_KEY", "another key that is not ours", 1);
	other = au_client_new(&cfg);
	unsetenv("AU_SIGNING_KEY");
	plain = au_client_new(&cfg);
	h_ok = put(signer, "{\"by\":\"signer\"}");
	h_old = put(old, "{\"by\":\"old\"}");
	h_plain = put(plain, "{\"by\":\"plain\"}");
	h_other = put(other, "{\"by\":\"other\"}");
	T_OK(h_ok && h_old && h_plain && h_other, "four enqueued");

	setenv("AU_SIGNING_KEY", KEY1 "," KEY0, 1);
	wo.queue = "signed";
	wo.idle_exit_ms = 300;
	w = au_worker_new(&cfg, &wo, NULL, base);
	T_OK(w && !au_worker_err(w)->code, "worker with AU_SIGNING_KEY");
	au_worker_use(w, &user_mw, NULL);
	T_OK(au_worker_start(w) == 0, "worker starts");
	event_base_dispatch(base);
	unsetenv("AU_SIGNING_KEY");

	T_OK(au_handle_result(h_ok, &rec) == 0 && rec.status == AU_COMPLETED,
	     "signed (with a header a middleware added after): completed");
	au_record_release(&rec);
	T_OK(au_handle_result(h_old, &rec) == 0 && rec.status == AU_COMPLETED,
	     "signed with the old key, second in the list: completed");
	au_record_release(&rec);
	T_OK(au_handle_result(h_plain, &rec) == 0 && rec.status == AU_FAILED && rec.error &&
	     !strcmp(rec.error, "bad signature: unsigned") && !rec.result,
	     "unsigned: failed, unrun: %s", rec.error ? rec.error : "");
	au_record_release(&rec);
	T_OK(au_handle_result(h_other, &rec) == 0 && rec.status == AU_FAILED && rec.error &&
	     !strncmp(rec.error, "bad signature: unknown key ", 27) && !rec.result,
	     "another key: failed, unrun: %s", rec.error ? rec.error : "");
	au_record_release(&rec);
	{
		struct au_queue_stats st;
		struct au_queue *q = au_queue_open(cfg.queue_url);

		au_queue_stats(q, "signed", &st);
		T_EQ_INT(st.dead, 2, "the two refused are dead letters");
		au_queue_close(q);
	}
	T_OK(strstr(seen, au_handle_id(h_ok)) && strstr(seen, au_handle_id(h_old)),
	     "the program's middleware saw the good ones");
	T_OK(!strstr(seen, au_handle_id(h_plain)) && !strstr(seen, au_handle_id(h_other)),
	     "the signing check ran first: the program's middleware never saw the refused");
	au_worker_free(w);
	au_handle_free(h_ok);
	au_handle_free(h_old);
	au_handle_free(h_plain);
	au_handle_free(h_other);
	au_client_free(signer);
	au_client_free(old);
	au_client_free(plain);
	au_client_free(other);
	event_base_free(base);
}

int main(void)
{
	au_log_set_level(AU_LOG_ERROR);
	unsetenv("AU_SIGNING_KEY");
	test_keys();
	test_example();
	test_verify();
	test_middleware();
	test_end_to_end();
	return t_done();
}
