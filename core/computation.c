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
	[AU_WAITING] = "waiting",
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
	free(c->flow);
	free(c->deps);
	au_computation_init(c);
}

static const char *const dep_policy_names[] = {
	[AU_DEP_FAIL] = "fail",
	[AU_DEP_CANCEL] = "cancel",
	[AU_DEP_IGNORE] = "ignore",
	[AU_DEP_CONTINUE] = "continue",
};

const char *au_dep_policy_name(int policy)
{
	if ((unsigned)policy >= AU_ARRAY_SIZE(dep_policy_names))
		return "fail";
	return dep_policy_names[policy];
}

int au_dep_policy_parse(const char *name, int *policy)
{
	size_t i;

	for (i = 0; i < AU_ARRAY_SIZE(dep_policy_names); i++)
		if (name && !strcmp(name, dep_policy_names[i])) {
			*policy = (int)i;
			return 0;
		}
	return -1;
}

const char *au_computation_header(const struct au_computation *c, const char *key)
{
	size_t i;

	for (i = 0; i < c->nheaders; i++)
		if (!strcmp(c->headers[i].key, key))
			return c->headers[i].value;
	return NULL;
}

/* The limits are the wire format's (docs/wire-format.md): 32 headers,
 * keys of 1 to 1024 bytes, values of at most 1024. */
int au_computation_set_header(struct au_computation *c, const char *key, const char *value)
{
	struct au_header *h;
	size_t i, kl = strlen(key), vl = strlen(value);
	char *v;

	if (!kl || kl > 1024 || vl > 1024)
		return -1;
	if (!(v = au_strdup(value)))
		return -1;
	for (i = 0; i < c->nheaders; i++)
		if (!strcmp(c->headers[i].key, key)) {
			free(c->headers[i].value);
			c->headers[i].value = v;
			return 0;
		}
	if (c->nheaders >= AU_MAX_HEADERS ||
	    !(h = realloc(c->headers, (c->nheaders + 1) * sizeof(*h)))) {
		free(v);
		return -1;
	}
	c->headers = h;
	if (!(h[c->nheaders].key = au_strdup(key))) {
		free(v);
		return -1;
	}
	h[c->nheaders++].value = v;
	return 0;
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
