/* cli.c - the exit codes every `au` command shares (cli.h). */
#include <stdarg.h>
#include <stdio.h>

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
