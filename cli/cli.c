/* cli.c - what every `au` command shares (cli.h): exit codes, the
 * settings file. */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "queue.h"

int au_cli_exit_code(const struct au_err *err)
{
	switch (err->code) {
	case AU_ENOTFOUND:
	case AU_EEXPIRED:
		return EXIT_UNKNOWN;
	case AU_ETIMEDOUT:
		return EXIT_TIMEOUT;
	case AU_ECONN:
		return EXIT_CONN;
	case AU_EINVAL:
		return EXIT_USAGE;
	default:
		return EXIT_FAILED;
	}
}

int au_cli_fail(const struct au_err *err)
{
	fprintf(stderr, "au: %s\n", err->str[0] ? err->str : "unknown error");
	return au_cli_exit_code(err);
}

int au_cli_usage(const char *text, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "au: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n%s", text);
	return EXIT_USAGE;
}

struct au_queue *au_cli_open_queue(struct au_config *cfg, int *rc)
{
	struct au_queue *q;

	au_config_from_env(cfg);
	if (!(q = au_queue_open(cfg->queue_url))) {
		fprintf(stderr, "au: out of memory\n");
		*rc = EXIT_FAILED;
		return NULL;
	}
	if (q->err.code) {
		*rc = au_cli_fail(&q->err);
		au_queue_close(q);
		return NULL;
	}
	return q;
}

int au_cli_settings(const char *path, au_cli_setting_fn fn, void *arg)
{
	FILE *f = fopen(path, "r");
	char buf[4096];
	unsigned line = 0;
	int rc = 0;

	if (!f) {
		fprintf(stderr, "au: unable to open '%s': %s\n", path, strerror(errno));
		return -1;
	}
	while (rc == 0 && fgets(buf, sizeof(buf), f)) {
		char *k = buf, *v, *e;
		size_t n;

		line++;
		n = strlen(k);
		while (n && isspace((unsigned char)k[n - 1]))
			k[--n] = '\0';
		while (isspace((unsigned char)*k))
			k++;
		if (!*k || *k == '#')
			continue;
		if (!strncmp(k, "export ", 7))
			k += 7;
		if (!(v = strchr(k, '='))) {
			fprintf(stderr, "au: '%s' line %u: expected KEY=VALUE\n", path, line);
			rc = -1;
			break;
		}
		for (e = v; e > k && isspace((unsigned char)e[-1]); e--)
			;
		*e = '\0';
		v++;
		while (isspace((unsigned char)*v))
			v++;
		n = strlen(v);
		if (n >= 2 && (v[0] == '"' || v[0] == '\'') && v[n - 1] == v[0]) {
			v[n - 1] = '\0';
			v++;
		}
		rc = fn(arg, path, line, k, v);
	}
	fclose(f);
	return rc;
}

const char *au_cli_config_path(const char *flag)
{
	const char *env = getenv("AU_CONFIG");

	return flag ? flag : env && *env ? env : NULL;
}

const char *const au_cli_worker_keys[] = {
	"AU_PROCESSES", "AU_CONCURRENCY", "AU_BATCH", "AU_LOG_LEVEL", "AU_MAX_TASKS", "AU_LEASE_MS",
	"AU_GRACE_MS", "AU_RETRY_BASE_MS", "AU_MIDDLEWARE", "AU_LOG_FORMAT", "AU_PLUGINS",
	"AU_POOL_THREADS", "AU_METRICS_ADDR", NULL
};

/* AU_SIGNING_KEY goes to the environment, where au_client_new and
 * au_worker_new read it, unless the environment had it first; a file
 * read again (a fleet's reload) replaces what it gave before. */
static int signing_key_setting(const char *val)
{
	static int from_file;

	if (getenv("AU_SIGNING_KEY") && !from_file)
		return 1;
	from_file = 1;
	return setenv("AU_SIGNING_KEY", val, 1) < 0 ? -1 : 1;
}

int au_cli_url_setting(struct au_config *cfg, const char *key, const char *val, char **owned)
{
	const char **url = !strcmp(key, "AU_QUEUE") ? &cfg->queue_url
			   : !strcmp(key, "AU_STORE") ? &cfg->store_url
			   : !strcmp(key, "AU_CLICKHOUSE") ? &cfg->clickhouse_url : NULL;
	char *copy;

	if (!strcmp(key, "AU_SIGNING_KEY"))
		return signing_key_setting(val);
	if (!url)
		return 0;
	/* a flag (already in cfg) and then the environment come first */
	if (*url || getenv(key))
		return 1;
	if (!(copy = strdup(val)))
		return -1;
	free(*owned);
	*owned = copy;
	*url = copy;
	return 1;
}

/* What the settings file gave (kept for the process's life). */
static char *owned_urls[3];

static int url_line(void *arg, const char *path, unsigned line, const char *key, const char *val)
{
	int i = !strcmp(key, "AU_QUEUE") ? 0 : !strcmp(key, "AU_STORE") ? 1 : 2;
	size_t k;
	int r = au_cli_url_setting(arg, key, val, &owned_urls[i]);

	if (r != 0)
		return r < 0 ? -1 : 0;
	for (k = 0; au_cli_worker_keys[k]; k++)
		if (!strcmp(key, au_cli_worker_keys[k]))
			return 0;
	fprintf(stderr, "au: '%s' line %u: unknown setting '%s'\n", path, line, key);
	return -1;
}

int au_cli_config(struct au_config *cfg, const char *flag)
{
	const char *path = au_cli_config_path(flag);

	return path ? au_cli_settings(path, url_line, cfg) : 0;
}
