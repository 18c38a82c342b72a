/* ids.c - randomness, computation ids, lease tokens, secrets, the worker's name. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "core.h"

static void getrandom_all(void *buf, size_t n)
{
	unsigned char *p = buf;

	while (n) {
		ssize_t r = getrandom(p, n, 0);

		if (r < 0) {
			if (errno == EINTR)
				continue;
			AU_BUG("getrandom failed: %s", strerror(errno));
		}
		p += r;
		n -= (size_t)r;
	}
}

/*
 * Random bytes from a pool of each thread's own, refilled from getrandom()
 * a few kilobytes at a time: an id or a token each cost a syscall before.
 * A forked child must not hand out its parent's bytes again: the fork
 * handler empties the pool of the one thread a child has.
 */
#define POOL_SIZE 4096
static __thread unsigned char pool[POOL_SIZE];
static __thread size_t pool_left;
static pthread_once_t fork_once = PTHREAD_ONCE_INIT;

static void pool_forget(void)
{
	explicit_bzero(pool, sizeof(pool));
	pool_left = 0;
}

static void fork_setup(void)
{
	pthread_atfork(NULL, NULL, pool_forget);
}

static void random_bytes(void *buf, size_t n)
{
	unsigned char *p = buf;

	if (n > POOL_SIZE / 4) {
		getrandom_all(buf, n);
		return;
	}
	pthread_once(&fork_once, fork_setup);
	if (pool_left < n) {
		getrandom_all(pool, POOL_SIZE);
		pool_left = POOL_SIZE;
	}
	/* taken from the end, and wiped: what was handed out is not kept */
	pool_left -= n;
	memcpy(p, pool + pool_left, n);
	explicit_bzero(pool + pool_left, n);
}

uint64_t au_random64(void)
{
	uint64_t v;

	random_bytes(&v, sizeof(v));
	return v;
}

static void hex(char *out, const unsigned char *in, size_t n)
{
	static const char digits[] = "0123456789abcdef";
	size_t i;

	for (i = 0; i < n; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 15];
	}
	out[2 * n] = '\0';
}

/*
 * A millisecond clock in the first 48 bits, 80 random bits after it (the
 * shape of a version 7 UUID): ids made close in time sort close, so the
 * indexes keyed by id take new rows at their right edge, not on a random
 * page each, and the write-ahead log carries fewer whole pages.
 */
void au_id_new(char out[AU_ID_SIZE])
{
	unsigned char raw[16];
	uint64_t ms = au_now_ms();
	int i;

	for (i = 0; i < 6; i++)
		raw[i] = (unsigned char)(ms >> (40 - 8 * i));
	random_bytes(raw + 6, sizeof(raw) - 6);
	hex(out, raw, sizeof(raw));
}

/*
 * The id of an idempotency key: the first 16 bytes of SHA-256 over
 * "au key", NUL, the queue, NUL, the key, in hex (docs/wire-format.md), so
 * that any client makes the same id from the same key, and a push of a
 * known id, which every queue leaves alone, is the atomic check.
 */
int au_id_from_key(char out[AU_ID_SIZE], const char *queue, const char *key)
{
	static const char tag[] = "au key";
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int len = 0;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	int ok = ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) &&
		 EVP_DigestUpdate(ctx, tag, sizeof(tag)) &&
		 EVP_DigestUpdate(ctx, queue, strlen(queue) + 1) &&
		 EVP_DigestUpdate(ctx, key, strlen(key)) && EVP_DigestFinal_ex(ctx, md, &len) &&
		 len >= 16;

	EVP_MD_CTX_free(ctx);
	if (!ok)
		return -1;
	hex(out, md, 16);
	return 0;
}

static const unsigned char hex_digit[256] = {
	['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1, ['7'] = 1,
	['8'] = 1, ['9'] = 1, ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1,
};

int au_id_valid(const char *s)
{
	size_t i;

	if (!s)
		return 0;
	/* stops at the first other byte, so a short string is not read past its end */
	for (i = 0; i < AU_ID_SIZE - 1; i++)
		if (!hex_digit[(unsigned char)s[i]])
			return 0;
	return s[i] == '\0';
}

const char *au_id_shown_n(char out[AU_ID_SHOWN_SIZE], const char *id, size_t len)
{
	size_t n = len, i;

	if (n > AU_ID_SHOWN_MAX) {
		n = AU_ID_SHOWN_MAX;
		/* back to the start of a UTF-8 sequence cut in two */
		for (i = 0; i < 3 && n > 0 && ((unsigned char)id[n] & 0xc0) == 0x80; i++)
			n--;
	}
	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)id[i];

		out[i] = c < 0x20 || c == 0x7f ? '?' : (char)c;
	}
	if (n < len)
		memcpy(out + n, "\xe2\x80\xa6", 3), n += 3;
	out[n] = '\0';
	return out;
}

const char *au_id_shown(char out[AU_ID_SHOWN_SIZE], const char *id)
{
	if (!id)
		return strcpy(out, "(null)");
	/* never reads further than it shows */
	return au_id_shown_n(out, id, strnlen(id, AU_ID_SHOWN_MAX + 1));
}

void au_token_new(char out[AU_TOKEN_SIZE], uint32_t attempt)
{
	snprintf(out, AU_TOKEN_SIZE, "%u-%016llx", attempt,
		 (unsigned long long)au_random64());
}

int au_secret_equal(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b), i;
	unsigned char diff = la != lb;

	/* Walk the expected secret's length whatever the input is. */
	for (i = 0; i < lb; i++)
		diff |= (unsigned char)(b[i] ^ (i < la ? a[i] : 0));
	return diff == 0;
}

static char worker_name[300];

static void forget_worker_name(void)
{
	worker_name[0] = '\0';
}

static void watch_forks(void)
{
	pthread_atfork(NULL, NULL, forget_worker_name);
}

const char *au_worker_name(void)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;

	/* Each process has its own name: a forked child names itself anew. */
	pthread_once(&once, watch_forks);
	if (!worker_name[0]) {
		char host[256] = "localhost";

		gethostname(host, sizeof(host) - 1);
		snprintf(worker_name, sizeof(worker_name), "%s:%d", host, (int)getpid());
	}
	return worker_name;
}
