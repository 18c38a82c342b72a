/*
 * stats.h - `au stats [--json]` (cli/stats.c): the fleet's figures per
 * task and queue, summed over the live entries of the worker registry.
 * Takes the URLs given before the command (cfg) and the arguments from the
 * command's name on; returns the exit code of docs/cli.md.
 */
#ifndef AU_CLI_STATS_H
#define AU_CLI_STATS_H

#include "core.h"

int au_cli_stats(const struct au_config *cfg, int argc, char **argv);

#endif
