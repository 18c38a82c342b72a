/*
 * workers.h - `au workers` and `au worker stop ID` (cli/workers.c): the
 * worker registry kept through the queue backend (backends/queue.h, beat).
 *
 * Each takes the URLs given before the command (cfg; the environment fills
 * what is unset) and the arguments from the command's name on (argv[0] is
 * "workers", or "worker" followed by "stop"), parses its own options,
 * prints, and returns the exit code of docs/cli.md.
 */
#ifndef AU_CLI_WORKERS_H
#define AU_CLI_WORKERS_H

#include "core.h"

int au_cli_workers(const struct au_config *cfg, int argc, char **argv);
int au_cli_worker_stop(const struct au_config *cfg, int argc, char **argv);

#endif
