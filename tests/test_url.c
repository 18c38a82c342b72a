/* test_url.c - URL parsing, query parameters, ids, tokens, secrets. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"
#include "harness.h"
#include "queue.h"
#include "store.h"

static void expect_str(const char *got, const char *want, const char *name)
{
	if (want)
		T_EQ_STR(got, want, name);
	else
		T_OK(got == NULL, "%s is absent (%s)", name, got ? got : "NULL");
}

static void test_good(void)
{
	static const struct {
		const char *in, *scheme, *user, *password, *host;
		int port;
		const char *path, *query, *text;
	} cases[] = {
		{ "redis://127.0.0.1:6390", "redis", NULL, NULL, "127.0.0.1", 6390, NULL, NULL,
		  "redis://127.0.0.1:6390" },
		{ "redis://:pw@host:1/2", "redis", "", "pw", "host", 1, "2", NULL, "redis://:***@host:1/2" },
		{ "postgres://u:p%40x@h/db?sslmode=disable", "postgres", "u", "p@x", "h", 0, "db",
		  "sslmode=disable", "postgres://u:***@h/db?sslmode=disable" },
		{ "http://user:pass@127.0.0.1:8123/default", "http", "user", "pass", "127.0.0.1", 8123,
		  "default", NULL, "http://user:***@127.0.0.1:8123/default" },
		{ "http://au@ch:8123", "http", "au", NULL, "ch", 8123, NULL, NULL, "http://au@ch:8123" },
		{ "file:///tmp/x", "file", NULL, NULL, NULL, 0, "/tmp/x", NULL, "file:///tmp/x" },
		{ "file:///tmp/a%20b", "file", NULL, NULL, NULL, 0, "/tmp/a b", NULL, "file:///tmp/a%20b" },
		{ "memory://", "memory", NULL, NULL, NULL, 0, NULL, NULL, "memory://" },
		{ "memory://name", "memory", NULL, NULL, "name", 0, NULL, NULL, "memory://name" },
		{ "redis://[::1]:6379", "redis", NULL, NULL, "::1", 6379, NULL, NULL, "redis://[::1]:6379" },
		{ "redis://[::1]/3", "redis", NULL, NULL, "::1", 0, "3", NULL, "redis://[::1]/3" },
		{ "REDIS://h?db=1", "redis", NULL, NULL, "h", 0, NULL, "db=1", "REDIS://h?db=1" },
		{ "redis://a:b:c@h", "redis", "a", "b:c", "h", 0, NULL, NULL, "redis://a:***@h" },
		/* libpq's secrets in the query are masked too */
		{ "postgres://u@h/db?sslmode=verify-full&password=s3&sslrootcert=/ca.pem", "postgres",
		  "u", NULL, "h", 0, "db", "sslmode=verify-full&password=s3&sslrootcert=/ca.pem",
		  "postgres://u@h/db?sslmode=verify-full&password=***&sslrootcert=/ca.pem" },
		{ "postgres://u:pw@h/db?sslpassword=k1&sslkey=/k#frag", "postgres", "u", "pw", "h", 0,
		  "db", "sslpassword=k1&sslkey=/k", "postgres://u:***@h/db?sslpassword=***&sslkey=/k#frag" },
		{ "postgres://h/db?password", "postgres", NULL, NULL, "h", 0, "db", "password",
		  "postgres://h/db?password" },
		{ "https://h/?cafile=/a%20b.pem", "https", NULL, NULL, "h", 0, "", "cafile=/a%20b.pem",
		  "https://h/?cafile=/a%20b.pem" },
	};
	struct au_url u;
	struct au_err err = { 0 };
	size_t i;

	for (i = 0; i < AU_ARRAY_SIZE(cases); i++) {
		if (!T_OK(au_url_parse(cases[i].in, &u, &err) == 0, "parse '%s': %s", cases[i].in, err.str))
			continue;
		expect_str(u.scheme, cases[i].scheme, "scheme");
		expect_str(u.user, cases[i].user, "user");
		expect_str(u.password, cases[i].password, "password");
		expect_str(u.host, cases[i].host, "host");
		T_EQ_INT(u.port, cases[i].port, "port");
		expect_str(u.path, cases[i].path, "path");
		expect_str(u.query, cases[i].query, "query");
		expect_str(u.text, cases[i].text, "text");
		au_url_release(&u);
		T_OK(u.scheme == NULL && u.text == NULL, "release clears");
	}
}

static void test_bad(void)
{
	static const struct {
		const char *in, *msg;
	} cases[] = {
		{ "", "empty url" },
		{ NULL, "empty url" },
		{ "127.0.0.1:6379", "invalid url '127.0.0.1:6379': missing scheme" },
		{ "://h", "invalid url '://h': missing scheme" },
		{ "re dis://h", "invalid url 're dis://h': bad scheme" },
		{ "redis://h:0", "invalid url 'redis://h:0': bad port" },
		{ "redis://h:70000", "invalid url 'redis://h:70000': bad port" },
		{ "redis://h:abc", "invalid url 'redis://h:abc': bad port" },
		{ "redis://h:+80", "invalid url 'redis://h:+80': bad port" },
		{ "redis://h: 80", "invalid url 'redis://h: 80': bad port" },
		{ "redis://h:", "invalid url 'redis://h:': empty port" },
		{ "redis://", "invalid url 'redis://': missing host" },
		{ "redis:///0", "invalid url 'redis:///0': missing host" },
		{ "redis://u:p@:6379", "invalid url 'redis://u:***@:6379': missing host" },
		{ "redis://[::1", "invalid url 'redis://[::1': bad host" },
		{ "redis://[::1]x", "invalid url 'redis://[::1]x': bad host" },
		{ "file://relative", "invalid url 'file://relative': file urls take an absolute path (file:///dir)" },
		{ "file://", "invalid url 'file://': missing path" },
		{ "redis://h/%zz", "invalid url 'redis://h/%zz': bad percent-escape" },
		{ "redis://h/a%4", "invalid url 'redis://h/a%4': bad percent-escape" },
		{ "redis://h/a%00", "invalid url 'redis://h/a%00': bad percent-escape" },
		/* the password never shows, even when it is the part that is wrong */
		{ "redis://u:se%zzcret@h", "invalid url 'redis://u:***@h': bad percent-escape" },
		{ "redis://u:secret@h:0", "invalid url 'redis://u:***@h:0': bad port" },
	};
	struct au_url u;
	struct au_err err;
	size_t i;

	for (i = 0; i < AU_ARRAY_SIZE(cases); i++) {
		au_clearerr(&err);
		T_OK(au_url_parse(cases[i].in, &u, &err) == -1 && err.code == AU_EINVAL, "'%s' refused",
		     cases[i].in ? cases[i].in : "NULL");
		T_EQ_STR(err.str, cases[i].msg, "message");
		T_OK(u.scheme == NULL && u.host == NULL && u.text == NULL, "nothing left allocated");
	}
}

static void test_params(void)
{
	struct au_url u;
	struct au_err err;
	char *v;

	T_OK(au_url_parse("postgres://h/db?sslmode=disable&app=a%20b&flag&ab=2#frag", &u, &err) == 0,
	     "parse url with params");
	v = au_url_param(&u, "sslmode");
	T_EQ_STR(v, "disable", "first param");
	free(v);
	v = au_url_param(&u, "app");
	T_EQ_STR(v, "a b", "escaped param");
	free(v);
	v = au_url_param(&u, "flag");
	T_EQ_STR(v, "", "param without a value");
	free(v);
	v = au_url_param(&u, "a");
	T_OK(v == NULL, "a prefix of a name is not the name");
	v = au_url_param(&u, "frag");
	T_OK(v == NULL, "the fragment is not a param");
	v = au_url_param(&u, "ab");
	T_EQ_STR(v, "2", "last param before the fragment");
	free(v);
	au_url_release(&u);
	T_OK(au_url_parse("redis://h", &u, &err) == 0 && au_url_param(&u, "x") == NULL,
	     "no query, no params");
	au_url_release(&u);
}

/* Durations with a unit (au dlq purge --older-than, ?dead_max_age=). */
static void test_durations(void)
{
	static const struct { const char *in; uint64_t ms; } good[] = {
		{ "500ms", 500 }, { "30s", 30000 }, { "10m", 600000 }, { "6h", 21600000 },
		{ "7d", 604800000 }, { "45", 45000 }, { "0s", 0 },
	};
	static const char *const bad[] = { "", "s", "-1s", "10x", "1.5h", "7 d", "99999999999999999999d" };
	struct au_err err;
	uint64_t ms;
	size_t i;

	for (i = 0; i < AU_ARRAY_SIZE(good); i++)
		T_OK(au_duration_parse(good[i].in, &ms, &err) == 0 && ms == good[i].ms,
		     "duration '%s' is %llu ms", good[i].in, (unsigned long long)good[i].ms);
	for (i = 0; i < AU_ARRAY_SIZE(bad); i++)
		T_OK(au_duration_parse(bad[i], &ms, &err) < 0 && err.code == AU_EINVAL &&
		     strstr(err.str, "invalid duration"), "duration '%s' is refused", bad[i]);
	T_OK(au_duration_parse("18446744073709551615d", &ms, &err) < 0, "duration: overflow refused");
}

static int all_hex(const char *s)
{
	for (; *s; s++)
		if (!strchr("0123456789abcdef", *s))
			return 0;
	return 1;
}

static void test_ids(void)
{
	char a[AU_ID_SIZE], b[AU_ID_SIZE], t1[AU_TOKEN_SIZE], t2[AU_TOKEN_SIZE];

	au_id_new(a);
	au_id_new(b);
	T_EQ_INT(strlen(a), 32, "id has 32 characters");
	T_OK(au_id_valid(a) && au_id_valid(b) && all_hex(a), "new ids are valid lowercase hex");
	T_OK(strcmp(a, b) != 0, "two ids differ");
	T_OK(!au_id_valid(NULL), "NULL id invalid");
	T_OK(!au_id_valid(""), "empty id invalid");
	T_OK(!au_id_valid("0123456789abcdef0123456789abcde"), "31 digits invalid");
	T_OK(!au_id_valid("0123456789abcdef0123456789abcdef0"), "33 digits invalid");
	T_OK(!au_id_valid("0123456789ABCDEF0123456789abcdef"), "uppercase invalid");
	T_OK(!au_id_valid("0123456789abcdef0123456789abcdeg"), "non-hex invalid");

	au_token_new(t1, 3);
	au_token_new(t2, 3);
	T_OK(!strncmp(t1, "3-", 2) && strlen(t1) == 18 && all_hex(t1 + 2), "token is <attempt>-<16 hex>: %s",
	     t1);
	T_OK(strcmp(t1, t2) != 0, "two tokens differ");
	au_token_new(t1, UINT32_MAX);
	T_OK(!strncmp(t1, "4294967295-", 11) && strlen(t1) == 27, "token fits the largest attempt");

	T_OK(au_secret_equal("abc", "abc"), "equal secrets");
	T_OK(au_secret_equal("", ""), "empty secrets");
	T_OK(!au_secret_equal("abc", "abd"), "different last byte");
	T_OK(!au_secret_equal("ab", "abc"), "shorter guess");
	T_OK(!au_secret_equal("abcd", "abc"), "longer guess");
	T_OK(!au_secret_equal("", "abc"), "empty guess");
}

/* URL schemes pick plug points: aliases name the same table, the feature
 * bits agree with the operations present, the wrappers refuse bad ids. */
static void test_schemes(void)
{
	const struct au_queue_ops *const *qo;
	const struct au_store_ops *const *so;
	struct au_queue *q;
	struct au_store *s;
	struct au_record rec;
	int watch_agrees = 1;

	T_OK(au_queue_backend("postgres") && au_queue_backend("postgresql") == au_queue_backend("postgres"),
	     "postgresql:// is the postgres queue, not a second table");
	T_OK(au_store_backend("postgres") && au_store_backend("postgresql") == au_store_backend("postgres"),
	     "postgresql:// is the postgres store, not a second table");
	T_OK(!au_queue_backend("foo") && !au_store_backend("foo"), "an unknown scheme names nothing");
	for (qo = au_queue_backends; *qo; qo++) {
		T_OK(au_queue_backend((*qo)->scheme) == *qo, "queue '%s' found by its scheme", (*qo)->scheme);
		watch_agrees &= !((*qo)->features & AU_QUEUE_WATCH) == !(*qo)->watch;
	}
	T_OK(watch_agrees, "AU_QUEUE_WATCH is set exactly where watch() is");
	for (so = au_store_backends; *so; so++)
		T_OK(au_store_backend((*so)->scheme) == *so, "store '%s' found by its scheme", (*so)->scheme);
	T_EQ_STR(au_queue_name(NULL), AU_DEFAULT_QUEUE, "no queue name: the default");
	T_EQ_STR(au_queue_name(""), AU_DEFAULT_QUEUE, "an empty queue name: the default");
	T_EQ_STR(au_queue_name("reports"), "reports", "a queue name stays");

	q = au_queue_open("memory://schemes");
	T_OK(q && !q->err.code, "memory queue opens");
	if (q) {
		T_OK(au_queue_cancel(q, NULL, "../etc/passwd") < 0 && q->err.code == AU_EINVAL,
		     "cancel refuses a bad id");
		T_EQ_STR(q->err.str, "invalid computation id '../etc/passwd'", "cancel: message");
		T_OK(au_queue_peek(q, NULL, NULL, NULL) < 0 && q->err.code == AU_EINVAL,
		     "peek refuses no id");
	}
	au_queue_close(q);
	s = au_store_open("memory://schemes");
	T_OK(s && !s->err.code, "memory store opens");
	if (s) {
		au_record_init(&rec);
		snprintf(rec.id, sizeof(rec.id), "%s", "0123456789ABCDEF0123456789abcdef");
		T_OK(au_store_put(s, &rec, 1, NULL) < 0 && s->err.code == AU_EINVAL,
		     "put refuses an id with capitals");
		T_OK(au_store_get(s, "..", &rec) < 0 && s->err.code == AU_EINVAL, "get refuses '..'");
		T_EQ_STR(s->err.str, "invalid computation id '..'", "get: message");
	}
	au_store_close(s);
}

/* au_url_masked: the same text as a parse gives, and masked even when the
 * URL does not parse (a start-up message quotes what it was given). */
static void test_masked(void)
{
	static const struct { const char *in, *out; } cases[] = {
		{ "http://au:au-secret@127.0.0.1:99999/default", "http://au:***@127.0.0.1:99999/default" },
		{ "redis://:pw@h:x", "redis://:***@h:x" },
		{ "postgres://u:p@h/db?password=a&b=1", "postgres://u:***@h/db?password=***&b=1" },
		{ "nonsense", "nonsense" },
		{ "redis://h", "redis://h" },
		{ "", "" },
	};
	struct au_url u;

	for (size_t i = 0; i < AU_ARRAY_SIZE(cases); i++) {
		char *m = au_url_masked(cases[i].in);

		T_EQ_STR(m, cases[i].out, "au_url_masked");
		if (au_url_parse(cases[i].in, &u, NULL) == 0)
			T_EQ_STR(m, u.text, "au_url_masked is what a parse shows");
		au_url_release(&u);
		free(m);
	}
}

int main(void)
{
	test_good();
	test_bad();
	test_masked();
	test_params();
	test_ids();
	test_schemes();
	test_durations();
	return t_done();
}
