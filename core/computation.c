/* computation.c - the computation and record models, statuses. */
#include <stdlib.h>
#include <string.h>

#include "core.h"

static const char *const status_names[] = {
	[AU_PENDING] = "pending",
	[AU_SCHEDULED] = "scheduled",
	[AU_RUNNING] = "running",
	[AU_RETRYING] = "retrying",
	[AU_COMPLETED] = "completed",
	[AU_FAILED] = "failed",
	[AU_CANCELLED] = "cancelled",
	[AU_UNKNOWN] = "unknown",
};

const char *au_status_name(enum au_status st)
{
	if ((unsigned)st >= AU_ARRAY_SIZE(status_names))
		return "unknown";
	return status_names[st];
}

int au_status_parse(const char *name, enum au_status *out)
{
	size_t i;

	for (i = 0; i < AU_ARRAY_SIZE(status_names); i++)
		if (name && !strcmp(name, status_names[i])) {
			*out = (enum au_status)i;
			return 0;
		}
	return -1;
}

void au_computation_init(struct au_computation *c)
{
	memset(c, 0, sizeof(*c));
	c->max_attempts = 1;
}

void au_computation_release(struct au_computation *c)
{
	size_t i;

	free(c->task);
	free(c->args);
	free(c->queue);
	for (i = 0; i < c->nheaders; i++) {
		free(c->headers[i].key);
		free(c->headers[i].value);
	}
	free(c->headers);
	au_computation_init(c);
}

void au_record_init(struct au_record *r)
{
	memset(r, 0, sizeof(*r));
	r->status = AU_UNKNOWN;
}

void au_record_release(struct au_record *r)
{
	free(r->result);
	free(r->history);
	free(r->error);
	free(r->task);
	free(r->queue);
	free(r->worker);
	au_record_init(r);
}
