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

/*
 * The settings file (--config FILE, or AU_CONFIG): KEY=VALUE lines as a
 * shell or systemd's EnvironmentFile= reads them (blank lines and #
 * comments skipped, an optional "export ", the value optionally quoted).
 * Flags win over the environment, the environment over the file.
 */
typedef int (*au_cli_setting_fn)(void *arg, const char *path, unsigned line, const char *key,
				 const char *val);
/* Calls fn for each setting of path until one returns non-zero; -1 (the
 * message printed) when the file cannot be read or a line is not a
 * setting, else what fn last returned. */
int au_cli_settings(const char *path, au_cli_setting_fn fn, void *arg);
/* The worker's keys beyond the URLs (NULL-terminated): the worker reads
 * them from the file and the environment, other commands leave them alone. */
extern const char *const au_cli_worker_keys[];
/* The file to read: the flag's, else AU_CONFIG's, else NULL. */
const char *au_cli_config_path(const char *flag);
/* A URL setting (AU_QUEUE, AU_STORE, AU_CLICKHOUSE) of the file into cfg
 * unless cfg has it from a flag or the environment has it: 1 it was one
 * (used or not), 0 another key, -1 out of memory. *owned keeps the copy.
 * AU_SIGNING_KEY (every command's) is taken here too, returning 1: it
 * goes to the environment, unless the environment had it first. */
int au_cli_url_setting(struct au_config *cfg, const char *key, const char *val, char **owned);
/* The URLs of the settings file into cfg (for commands other than the
 * worker, which reads the whole file): 0, or -1 with the message printed
 * (an unreadable file, an unknown key). */
int au_cli_config(struct au_config *cfg, const char *flag);

#endif
