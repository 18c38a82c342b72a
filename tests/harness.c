#include "harness.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int passed, failed;
int t_cond;

int t_check(int cond, const char *file, int line, const char *fmt, ...)
{
	va_list ap;

	printf("%s - ", cond ? "ok" : "not ok");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	if (cond)
		printf("\n");
	else
		printf("  [%s:%d]\n", file, line);
	fflush(stdout);
	if (cond)
		passed++;
	else
		failed++;
	return cond;
}

int t_check_str(const char *a, const char *b, const char *file, int line, const char *name)
{
	int eq = a && b && strcmp(a, b) == 0;

	return t_check(eq, file, line, "%s ('%s' == '%s')", name, a ? a : "(null)",
		       b ? b : "(null)");
}

const char *t_env(const char *name)
{
	const char *v = getenv(name);

	if (!v || !*v) {
		t_check(0, __FILE__, __LINE__, "environment variable %s is set", name);
		exit(t_done());
	}
	return v;
}

char *t_tmpdir(const char *prefix)
{
	const char *base = getenv("AU_TEST_TMP");
	char *path;

	if (!base || !*base)
		base = "/tmp";
	if (asprintf(&path, "%s/%s.XXXXXX", base, prefix) < 0)
		abort();
	if (!mkdtemp(path))
		abort();
	return path;
}

int t_failed(void)
{
	return failed;
}

int t_done(void)
{
	printf("# %d passed, %d failed\n", passed, failed);
	fflush(stdout);
	return failed ? 1 : 0;
}
