/*
 * registry.c - the built-in middlewares by name, for a spec such as
 * "logging:json,tracing,ratelimit:ch.query=200/s,ch.insert=10/s"
 * (`au worker --middleware`, AU_MIDDLEWARE): items are separated by
 * commas, each NAME or NAME:ARG; an item that names no middleware and
 * holds '=' continues the argument before it.
 */
#include <stdlib.h>
#include <string.h>

#include "core.h"
#include "middleware.h"

int au_mw_spec_each(const char *spec, int (*fn)(void *arg, const char *name, const char *value,
						struct au_err *err),
		    void *arg, struct au_err *err)
{
	char *copy = au_strdup(spec ? spec : ""), *item, *next, *name = NULL, *value = NULL;
	struct au_buf val = AU_BUF_INIT;
	int rc = 0;

	if (!copy)
		return au_seterr(err, AU_ENOMEM, "out of memory");
	for (item = copy; item && rc == 0; item = next) {
		char *colon, *eq;

		next = strchr(item, ',');
		if (next)
			*next++ = '\0';
		while (*item == ' ')
			item++;
		colon = strchr(item, ':');
		eq = strchr(item, '=');
		if (name && eq && (!colon || eq < colon)) {
			/* ratelimit:a=1/s,b=2/s: b=2/s is more of the argument */
			if (au_buf_puts(&val, ",") < 0 || au_buf_puts(&val, item) < 0)
				rc = au_seterr(err, AU_ENOMEM, "out of memory");
			continue;
		}
		if (name) {
			rc = fn(arg, name, val.len ? (const char *)val.data : value, err);
			name = value = NULL;
			if (rc)
				break;
		}
		if (!*item) {
			if (next || item != copy)
				rc = au_seterr(err, AU_EINVAL, "invalid middleware list '%s': an empty name",
					       spec);
			continue;
		}
		name = item;
		au_buf_reset(&val);
		if (colon && (!eq || colon < eq)) {
			*colon = '\0';
			value = colon + 1;
			if (au_buf_puts(&val, value) < 0)
				rc = au_seterr(err, AU_ENOMEM, "out of memory");
		}
	}
	if (rc == 0 && name)
		rc = fn(arg, name, val.len ? (const char *)val.data : value, err);
	au_buf_release(&val);
	free(copy);
	return rc < 0 ? -1 : 0;
}

int au_mw_timeouts(const char *value, int (*fn)(void *arg, const char *task, uint32_t ms),
		   void *arg, struct au_err *err)
{
	char *copy = au_strdup(value ? value : ""), *item, *next;
	int rc = 0;

	if (!copy)
		return au_seterr(err, AU_ENOMEM, "out of memory");
	for (item = copy; item && !rc; item = next) {
		char *eq = strchr(item, '=');
		uint64_t ms;

		if ((next = strchr(item, ',')))
			*next++ = '\0';
		if (!eq || eq == item || au_duration_parse(eq + 1, &ms, NULL) < 0 || !ms ||
		    ms > UINT32_MAX) {
			rc = au_seterr(err, AU_EINVAL, "invalid middleware 'timeout:%s': expected "
				       "TASK=DURATION,... with durations from 1ms", value ? value : "");
			break;
		}
		*eq = '\0';
		if (fn && fn(arg, item, (uint32_t)ms) < 0)
			rc = au_seterr(err, AU_ENOMEM, "out of memory");
	}
	free(copy);
	return rc;
}

static int check_item(void *arg, const char *name, const char *value, struct au_err *err)
{
	const struct au_middleware_ops *ops;
	void *ctx;

	(void)arg;
	if (!strcmp(name, "timeout"))
		return au_mw_timeouts(value, NULL, NULL, err);
	if (au_mw_new(name, value, NULL, &ops, &ctx, err) < 0)
		return -1;
	if (ops->free)
		ops->free(ctx);
	return 0;
}

int au_mw_check(const char *spec, struct au_err *err)
{
	return au_mw_spec_each(spec, check_item, NULL, err);
}

int au_mw_new(const char *name, const char *value, const struct au_config *cfg,
	      const struct au_middleware_ops **ops, void **ctx, struct au_err *err)
{
	(void)cfg;
	*ctx = NULL;
	if (!strcmp(name, "logging")) {
		enum au_log_format f = AU_LOG_TEXT;

		if (value && !strcmp(value, "json"))
			f = AU_LOG_JSON;
		else if (value && strcmp(value, "text") != 0)
			return au_seterr(err, AU_EINVAL, "invalid middleware 'logging:%s': expected "
					 "logging, logging:text or logging:json", value);
		*ops = &au_logging_middleware;
		if (!(*ctx = au_logging_new(NULL, f)))
			return au_seterr(err, AU_ENOMEM, "out of memory");
		return 0;
	}
	if (!strcmp(name, "tracing")) {
		if (value)
			return au_seterr(err, AU_EINVAL, "invalid middleware 'tracing:%s': tracing "
					 "takes no argument", value);
		*ops = &au_tracing_middleware;
		return 0;
	}
	if (!strcmp(name, "ratelimit")) {
		*ops = &au_ratelimit_middleware;
		/* without a URL (a check) the spec is read and nothing opened */
		if (!(*ctx = au_ratelimit_new(value ? value : "", cfg ? cfg->queue_url : NULL, err)))
			return -1;
		return 0;
	}
	return au_seterr(err, AU_EINVAL, "unknown middleware '%s' (built in: logging, tracing, "
			 "ratelimit, timeout)", name);
}
