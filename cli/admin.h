/*
 * admin.h - the `au` commands that look after queues rather than run
 * computations: `au dlq ...`, `au queue ...`, `au queues` (cli/admin.c).
 *
 * Each takes the URLs given before the command (cfg; the environment fills
 * what is unset) and the arguments from the command's name on (argv[0] is
 * "dlq", "queue" or "queues"), parses its own options, prints, and returns
 * the exit code of docs/cli.md.
 */
#ifndef AU_CLI_ADMIN_H
#define AU_CLI_ADMIN_H

#include "core.h"

int au_cli_dlq(const struct au_config *cfg, int argc, char **argv);
int au_cli_queue(const struct au_config *cfg, int argc, char **argv);
int au_cli_queues(const struct au_config *cfg, int argc, char **argv);

#endif
