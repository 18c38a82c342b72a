/*
 * lineage.h - `au lineage TABLE [--depth N] [--forward] [--json]`
 * (cli/lineage.c): the ch.op operations that made a table, read back from
 * au_operation_log one level at a time, or with --forward what was made
 * from it. Takes the URLs given before the command (cfg) and the
 * arguments from the command's name on; returns the exit code of
 * docs/cli.md.
 */
#ifndef AU_CLI_LINEAGE_H
#define AU_CLI_LINEAGE_H

#include "core.h"

int au_cli_lineage(const struct au_config *cfg, int argc, char **argv);
/* `au flow run|show|list|cancel` (cli/flow.c, docs/flows.md). */
int au_cli_flow(const struct au_config *cfg, int argc, char **argv);

#endif
