/* chain.c - runs the middleware hooks around each attempt. */
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

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

int au_chain_before(struct au_chain *ch, struct au_run *run, char *errbuf, size_t errlen)
{
	size_t i;

	for (i = 0; i < ch->n; i++) {
		const struct au_middleware_ops *ops = ch->entries[i].ops;

		if (!ops->before)
			continue;
		errbuf[0] = '\0';
		if (ops->before(ch->entries[i].ctx, run, errbuf, errlen) < 0) {
			if (!errbuf[0])
				snprintf(errbuf, errlen, "refused by middleware '%s'", ops->name);
			return -1;
		}
	}
	return 0;
}

void au_chain_finish(struct au_chain *ch, struct au_run *run)
{
	size_t i = ch->n;

	while (i--) {
		const struct au_middleware_ops *ops = ch->entries[i].ops;

		if (run->status == AU_COMPLETED) {
			if (ops->after)
				ops->after(ch->entries[i].ctx, run);
		} else if (ops->on_error) {
			ops->on_error(ch->entries[i].ctx, run);
		}
	}
}
