/*
 * ch_ops.h - the tables of ch.op (tasks/ch_ops.c, docs/clickhouse.md
 * "ch.op"): their names, and the drop of a flow's tables
 * (clickhouse/ch_tables.c), for the flow cleanup.
 *
 * Outputs are named t_<flow>_<8 hex> (temp), f_<flow>_<name> (named, per
 * flow) and p_<name> (persistent), <flow> being the computation's flow id
 * or, without one, its own id.
 */
#ifndef AU_CH_OPS_H
#define AU_CH_OPS_H

#include <stddef.h>

#include "core.h"

struct au_clickhouse;

/* 1 if s matches [A-Za-z_][A-Za-z0-9_]{0,max-1}. */
int au_ch_name_valid(const char *s, size_t max);
/* 1 if s is a flow id: 32 lowercase hex digits. */
int au_ch_flow_id_valid(const char *s);

/*
 * Drops every table of the flow flow_id in the client's database: those
 * named t_<flow_id>_* and f_<flow_id>_* (found in system.tables with an
 * escaped LIKE pattern, then checked by prefix), never p_*. Blocking
 * (au_ch_query_sync). 0 also when there were none; -1 with err:
 * AU_EINVAL when flow_id is not 32 lowercase hex digits (nothing is
 * sent), else the server's error (tables before it are dropped).
 */
int au_ch_drop_flow_tables(struct au_clickhouse *ch, const char *flow_id, struct au_err *err);

#endif
