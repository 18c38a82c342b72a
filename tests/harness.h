/*
 * harness.h - a small TAP-like test harness. Each check prints "ok" or
 * "not ok" with its name; t_done() prints "# N passed, N failed" and returns
 * the exit status. tests/run.sh adds the counts of every binary.
 */
#ifndef AU_HARNESS_H
#define AU_HARNESS_H

#include <stddef.h>

/* Records one check; returns cond so callers can stop early. */
int t_check(int cond, const char *file, int line, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* The condition is evaluated before the message's arguments, so that these
 * may show what it left behind (an argument list alone has no order). */
extern int t_cond;
#define T_OK(cond, ...) (t_cond = !!(cond), t_check(t_cond, __FILE__, __LINE__, __VA_ARGS__))
#define T_EQ_INT(a, b, name) \
	t_check((long long)(a) == (long long)(b), __FILE__, __LINE__, "%s (%lld == %lld)", \
		name, (long long)(a), (long long)(b))
#define T_EQ_STR(a, b, name) t_check_str((a), (b), __FILE__, __LINE__, name)
int t_check_str(const char *a, const char *b, const char *file, int line, const char *name);

/* Value of an environment variable the test needs; exits with a failed
 * check if it is missing. */
const char *t_env(const char *name);
/* A fresh directory under AU_TEST_TMP or /tmp; caller frees. */
char *t_tmpdir(const char *prefix);
int t_done(void);
int t_failed(void);

#endif
