/* chain.c - runs the middleware hooks around each computation. */
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "core.h"
#include "middleware.h"

int au_chain_add(struct au_chain *ch, const struct au_middleware_ops *ops, void *ctx)
{
	struct au_chain_entry *e = realloc(ch->entries, (ch->n + 1) * sizeof(*e));

	if (!e) {
		if (ops->free)   /* the chain owns ctx from the call on */
			ops->free(ctx);
		return -1;
	}
	ch->entries = e;
	e[ch->n].ops = ops;
	e[ch->n].ctx = ctx;
	ch->n++;
	return 0;
}

void au_chain_release(struct au_chain *ch)
{
	size_t i;

	for (i = 0; i < ch->n; i++)
		if (ch->entries[i].ops->free)
			ch->entries[i].ops->free(ch->entries[i].ctx);
	free(ch->entries);
	ch->entries = NULL;
	ch->n = 0;
}

int au_chain_has_before_enqueue(const struct au_chain *ch)
{
	size_t i;

	for (i = 0; i < ch->n; i++)
		if (ch->entries[i].ops->before_enqueue)
			return 1;
	return 0;
}

int au_chain_hook_result(struct au_chain *ch, size_t pos, const char *hook, int rc,
			 const char *message, char *errbuf, size_t errlen)
{
	const struct au_middleware_ops *ops = ch->entries[pos].ops;
	const char *msg = message && *message ? message : NULL;

	switch (rc) {
	case AU_HOOK_OK:
	case AU_HOOK_PENDING:
		return rc;
	case AU_HOOK_REFUSE:
	case AU_HOOK_DELAY:
		if (errbuf != message)
			snprintf(errbuf, errlen, "%s", msg ? msg : "");
		if (!msg)
			snprintf(errbuf, errlen, "refused by middleware '%s'", ops->name);
		return rc;
	default: {
		char tmp[512];

		snprintf(tmp, sizeof(tmp), "middleware '%s': %s: %s", ops->name, hook,
			 msg ? msg : "failed");
		if (!(ops->flags & AU_MW_FAIL_CLOSED)) {
			au_log(AU_LOG_WARN, "%s", tmp);
			return AU_HOOK_OK;
		}
		snprintf(errbuf, errlen, "%s", tmp);
		return AU_HOOK_ERROR;
	}
	}
}

int au_chain_before_enqueue(struct au_chain *ch, struct au_enqueue_ctx *e, char *errbuf,
			    size_t errlen)
{
	size_t i;
	int rc;

	for (i = 0; i < ch->n; i++) {
		const struct au_middleware_ops *ops = ch->entries[i].ops;

		if (!ops->before_enqueue)
			continue;
		errbuf[0] = '\0';
		rc = ops->before_enqueue(ch->entries[i].ctx, e, errbuf, errlen);
		if (rc == AU_HOOK_DELAY || rc == AU_HOOK_PENDING)   /* not answers an enqueue takes */
			rc = AU_HOOK_ERROR;
		rc = au_chain_hook_result(ch, i, "before_enqueue", rc, errbuf, errbuf, errlen);
		if (rc != AU_HOOK_OK)
			return rc;
	}
	return AU_HOOK_OK;
}

int au_chain_before(struct au_chain *ch, struct au_run *run, size_t *pos, char *errbuf,
		    size_t errlen)
{
	int rc;

	for (; *pos < ch->n; (*pos)++) {
		const struct au_middleware_ops *ops = ch->entries[*pos].ops;

		if (!ops->before)
			continue;
		errbuf[0] = '\0';
		run->delay_ms = 0;
		rc = ops->before(ch->entries[*pos].ctx, run, errbuf, errlen);
		rc = au_chain_hook_result(ch, *pos, "before", rc, errbuf, errbuf, errlen);
		if (rc != AU_HOOK_OK)
			return rc;
	}
	return AU_HOOK_OK;
}

typedef int (*after_hook)(void *ctx, struct au_run *run, char *errbuf, size_t errlen);

/* One kind of hook in reverse order; their errors are logged only. */
static void each_reverse(struct au_chain *ch, struct au_run *run, size_t off, const char *hook)
{
	size_t i = ch->n;
	char errbuf[512];

	while (i--) {
		after_hook fn;

		memcpy(&fn, (const char *)ch->entries[i].ops + off, sizeof(fn));
		if (!fn)
			continue;
		errbuf[0] = '\0';
		if (fn(ch->entries[i].ctx, run, errbuf, sizeof(errbuf)) == AU_HOOK_ERROR)
			au_log(AU_LOG_WARN, "middleware '%s': %s: %s", ch->entries[i].ops->name, hook,
			       errbuf[0] ? errbuf : "failed");
	}
}

void au_chain_finish(struct au_chain *ch, struct au_run *run)
{
	if (run->status == AU_COMPLETED) {
		each_reverse(ch, run, offsetof(struct au_middleware_ops, after), "after");
		return;
	}
	each_reverse(ch, run, offsetof(struct au_middleware_ops, on_error), "on_error");
	if (run->status == AU_RETRYING)
		each_reverse(ch, run, offsetof(struct au_middleware_ops, on_retry), "on_retry");
	else if (run->dead)
		each_reverse(ch, run, offsetof(struct au_middleware_ops, on_dead), "on_dead");
}
