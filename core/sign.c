/*
 * sign.c - signed computations (docs/wire-format.md, "Signing"): the
 * canonical bytes a signature covers, HMAC-SHA256 over them, and the
 * au-signature header's parse.
 *
 * The canonical bytes are what au_computation_encode writes for the
 * computation without its au-signature header. The encoder is
 * deterministic and the decoder keeps the headers in their order and the
 * args byte for byte, so a worker that re-encodes what it decoded gets the
 * producer's bytes back; anything the decoder drops (unknown keys, a
 * larger integer encoding than needed) changes them, which is why a signed
 * computation carries only the keys of the table, in the writer's form.
 *
 * Keys never reach a message: errors name a key by its position in the
 * list or by its id (a fingerprint), and released keys are wiped.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "core.h"

static const char hexdigits[] = "0123456789abcdef";

static void to_hex(char *out, const unsigned char *p, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		out[2 * i] = hexdigits[p[i] >> 4];
		out[2 * i + 1] = hexdigits[p[i] & 15];
	}
	out[2 * n] = '\0';
}

static int hex_val(int c)
{
	return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* 1 if s[0..n) are lowercase hex digits */
static int is_hex(const char *s, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (hex_val((unsigned char)s[i]) < 0)
			return 0;
	return 1;
}

void au_sign_keys_release(struct au_sign_keys *ks)
{
	size_t i;

	for (i = 0; i < ks->n; i++) {
		OPENSSL_cleanse(ks->keys[i].key, ks->keys[i].len);
		free(ks->keys[i].key);
	}
	memset(ks, 0, sizeof(*ks));
}

static int is_blank(int c)
{
	return c == ' ' || c == '\t';
}

int au_sign_keys_parse(const char *list, struct au_sign_keys *ks, struct au_err *err)
{
	const char *p = list, *end, *s, *e;
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;

	memset(ks, 0, sizeof(*ks));
	if (!list || !*list)
		return au_seterr(err, AU_EINVAL, "AU_SIGNING_KEY is empty");
	for (;;) {
		struct au_sign_key *k;

		end = strchr(p, ',');
		if (!end)
			end = p + strlen(p);
		for (s = p; s < end && is_blank((unsigned char)*s); s++)
			;
		for (e = end; e > s && is_blank((unsigned char)e[-1]); e--)
			;
		if (ks->n == AU_SIGN_KEYS_MAX) {
			au_sign_keys_release(ks);
			return au_seterr(err, AU_EINVAL, "AU_SIGNING_KEY: more than %d keys",
					 AU_SIGN_KEYS_MAX);
		}
		if ((size_t)(e - s) < AU_SIGN_KEY_MIN) {
			size_t nth = ks->n + 1;

			au_sign_keys_release(ks);
			if (e == s)
				return au_seterr(err, AU_EINVAL, "AU_SIGNING_KEY: key %zu is empty", nth);
			return au_seterr(err, AU_EINVAL,
					 "AU_SIGNING_KEY: key %zu is shorter than %d bytes", nth,
					 AU_SIGN_KEY_MIN);
		}
		k = &ks->keys[ks->n];
		k->len = (size_t)(e - s);
		if (!(k->key = au_malloc(k->len))) {
			au_sign_keys_release(ks);
			return au_seterr(err, AU_ENOMEM, "out of memory");
		}
		memcpy(k->key, s, k->len);
		ks->n++;
		if (!EVP_Digest(k->key, k->len, md, &mdlen, EVP_sha256(), NULL) || mdlen < 4) {
			au_sign_keys_release(ks);
			return au_seterr(err, AU_ENOMEM, "unable to hash a signing key");
		}
		to_hex(k->id, md, 4);
		if (!*end)
			break;
		p = end + 1;
	}
	OPENSSL_cleanse(md, sizeof(md));
	return 0;
}

int au_sign_canonical(const struct au_computation *c, struct au_buf *out, struct au_err *err)
{
	struct au_computation bare = *c;
	struct au_header *kept = NULL;
	size_t i;
	int rc;

	if (c->nheaders) {
		if (!(kept = au_calloc(c->nheaders, sizeof(*kept))))
			return au_seterr(err, AU_ENOMEM, "out of memory");
		bare.headers = kept;
		bare.nheaders = 0;
		for (i = 0; i < c->nheaders; i++)
			if (strcmp(c->headers[i].key, AU_SIGNATURE_HEADER) != 0)
				kept[bare.nheaders++] = c->headers[i];
	}
	rc = au_computation_encode(&bare, out, err);
	free(kept);   /* the strings stay c's */
	return rc;
}

/* HMAC-SHA256 of the canonical bytes of c with k into mac[32]. */
static int mac_of(const struct au_sign_key *k, const struct au_computation *c,
		  unsigned char mac[AU_SIGN_MAC_SIZE], struct au_err *err)
{
	struct au_buf b = AU_BUF_INIT;
	unsigned int len = 0;
	int ok;

	if (au_sign_canonical(c, &b, err) < 0)
		return -1;
	ok = HMAC(EVP_sha256(), k->key, (int)k->len, b.data, b.len, mac, &len) != NULL &&
	     len == AU_SIGN_MAC_SIZE;
	au_buf_release(&b);
	if (!ok)
		return au_seterr(err, AU_ENOMEM, "unable to compute the signature");
	return 0;
}

int au_sign_header(const struct au_sign_key *k, const struct au_computation *c,
		   char out[AU_SIGNATURE_SIZE], struct au_err *err)
{
	unsigned char mac[AU_SIGN_MAC_SIZE];

	if (mac_of(k, c, mac, err) < 0)
		return -1;
	memcpy(out, "v1:", 3);
	memcpy(out + 3, k->id, AU_SIGN_KEY_ID_LEN);
	out[3 + AU_SIGN_KEY_ID_LEN] = ':';
	to_hex(out + 4 + AU_SIGN_KEY_ID_LEN, mac, AU_SIGN_MAC_SIZE);
	return 0;
}

static int refuse(struct au_err *err, const char *why)
{
	return au_seterr(err, AU_EREFUSED, "bad signature: %s", why);
}

int au_sign_verify(const struct au_sign_keys *ks, const struct au_computation *c,
		   struct au_err *err)
{
	unsigned char want[AU_SIGN_MAC_SIZE], got[AU_SIGN_MAC_SIZE];
	const char *v = NULL, *id, *hex;
	size_t i, seen = 0, tried = 0;
	int match = 0;

	for (i = 0; i < c->nheaders; i++)
		if (!strcmp(c->headers[i].key, AU_SIGNATURE_HEADER)) {
			v = v ? v : c->headers[i].value;
			seen++;
		}
	if (!v)
		return refuse(err, "unsigned");
	if (seen > 1)
		return refuse(err, "more than one '" AU_SIGNATURE_HEADER "' header");
	if (strncmp(v, "v1:", 3) != 0) {
		size_t n = v[0] == 'v' ? strspn(v + 1, "0123456789") : 0;

		if (n >= 1 && n <= 3 && v[1 + n] == ':')
			return au_seterr(err, AU_EREFUSED, "bad signature: unsupported version '%.*s'",
					 (int)n + 1, v);
		return refuse(err, "malformed '" AU_SIGNATURE_HEADER "' header");
	}
	id = v + 3;
	hex = id + AU_SIGN_KEY_ID_LEN + 1;
	if (strlen(v) != AU_SIGNATURE_SIZE - 1 || !is_hex(id, AU_SIGN_KEY_ID_LEN) ||
	    id[AU_SIGN_KEY_ID_LEN] != ':' || !is_hex(hex, 2 * AU_SIGN_MAC_SIZE))
		return refuse(err, "malformed '" AU_SIGNATURE_HEADER "' header");
	for (i = 0; i < AU_SIGN_MAC_SIZE; i++)
		got[i] = (unsigned char)(hex_val((unsigned char)hex[2 * i]) << 4 |
					 hex_val((unsigned char)hex[2 * i + 1]));
	/* every key of that id (two keys may share one: 32 bits), each compared in full */
	for (i = 0; i < ks->n; i++) {
		if (memcmp(ks->keys[i].id, id, AU_SIGN_KEY_ID_LEN) != 0)
			continue;
		tried++;
		if (mac_of(&ks->keys[i], c, want, err) < 0) {
			if (err && err->code == AU_ENOMEM)
				return -1;
			/* it cannot be written again: no signature can be its */
			return refuse(err, "the computation cannot be encoded again");
		}
		match |= CRYPTO_memcmp(want, got, AU_SIGN_MAC_SIZE) == 0;
	}
	OPENSSL_cleanse(want, sizeof(want));
	if (!tried)
		return au_seterr(err, AU_EREFUSED, "bad signature: unknown key %.*s",
				 AU_SIGN_KEY_ID_LEN, id);
	if (!match)
		return refuse(err, "does not match any key");
	return 0;
}
