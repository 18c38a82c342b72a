/*
 * cli.h - what every `au` command shares (cli/cli.c): the exit codes of
 * docs/cli.md and how an error becomes one. Private to the `au` command.
 */
#ifndef AU_CLI_H
#define AU_CLI_H

#include "core.h"

struct au_queue;

enum { EXIT_FAILED = 1, EXIT_USAGE = 2, EXIT_UNKNOWN = 3, EXIT_TIMEOUT = 4, EXIT_CONN = 5 };

/* The exit code of an error: unknown or expired 3, timed out 4, a server
 * unreachable 5, a bad argument 2, anything else 1. */
int au_cli_exit_code(const struct au_err *err);
/* Prints "au: <message>" on stderr; returns au_cli_exit_code(err). */
int au_cli_fail(const struct au_err *err);
/* Prints "au: <fmt ...>" and then text (a command's usage) on stderr;
 * returns EXIT_USAGE. */
/* The queue of cfg (the environment fills what is unset), open; NULL with
 * the error printed and *rc set to its exit code. */
struct au_queue *au_cli_open_queue(struct au_config *cfg, int *rc);
int au_cli_usage(const char *text, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
