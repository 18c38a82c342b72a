/*
 * signing.c - the built-in signing middleware: a client signs each
 * computation with the first key of its list (the au-signature header), a
 * worker refuses, unrun and dead-lettered, one no key of its list signed
 * ("bad signature: ..."). Fail closed: a signature that cannot be made or
 * checked fails the enqueue or the attempt. core/sign.c does the work.
 */
#include <stdio.h>
#include <stdlib.h>

#include "core.h"
#include "middleware.h"

struct signing {
	struct au_sign_keys keys;
};

void *au_signing_new(const char *keys, struct au_err *err)
{
	struct signing *s = calloc(1, sizeof(*s));

	if (!s) {
		au_seterr(err, AU_ENOMEM, "out of memory");
		return NULL;
	}
	if (au_sign_keys_parse(keys, &s->keys, err) < 0) {
		free(s);
		return NULL;
	}
	return s;
}

static void signing_free(void *ctx)
{
	struct signing *s = ctx;

	if (!s)
		return;
	au_sign_keys_release(&s->keys);
	free(s);
}

static int sign(void *ctx, struct au_enqueue_ctx *e, char *errbuf, size_t errlen)
{
	struct signing *s = ctx;
	struct au_err err = { 0, "" };
	char value[AU_SIGNATURE_SIZE];

	if (au_sign_header(&s->keys.keys[0], e->c, value, &err) < 0) {
		snprintf(errbuf, errlen, "%s", err.str);
		return AU_HOOK_ERROR;
	}
	if (au_computation_set_header(e->c, AU_SIGNATURE_HEADER, value) < 0) {
		snprintf(errbuf, errlen, "unable to add the '%s' header (%d headers at most)",
			 AU_SIGNATURE_HEADER, AU_MAX_HEADERS);
		return AU_HOOK_ERROR;
	}
	return AU_HOOK_OK;
}

static int verify(void *ctx, struct au_run *run, char *errbuf, size_t errlen)
{
	struct signing *s = ctx;
	struct au_err err = { 0, "" };

	if (au_sign_verify(&s->keys, run->c, &err) == 0)
		return AU_HOOK_OK;
	snprintf(errbuf, errlen, "%s", err.str);
	return err.code == AU_EREFUSED ? AU_HOOK_REFUSE : AU_HOOK_ERROR;
}

const struct au_middleware_ops au_signing_middleware = {
	.name = "signing",
	.flags = AU_MW_FAIL_CLOSED,
	.before_enqueue = sign,
	.before = verify,
	.free = signing_free,
};

int au_signing_from_env(struct au_chain *ch, struct au_err *err)
{
	const char *keys = getenv("AU_SIGNING_KEY");
	void *s;

	if (!keys)
		return 0;
	if (!(s = au_signing_new(keys, err)))
		return -1;
	if (au_chain_add(ch, &au_signing_middleware, s) < 0)
		return au_seterr(err, AU_ENOMEM, "out of memory");
	return 0;
}
