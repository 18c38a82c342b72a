/*
 * tasks.h - the built-in tasks (tasks/builtin_tasks.c, tasks/ch_tasks.c).
 * Tasks see their attempt only through the au_task_* calls of au.h
 * (core/task.h), so they run under the worker or under a test alike.
 */
#ifndef AU_TASKS_H
#define AU_TASKS_H

#include <stddef.h>

#include "core.h"

/* Adds every built-in task to reg: au.noop, au.echo, au.sleep, au.fail and
 * the ClickHouse tasks. -1 on OOM. */
int au_tasks_add_builtins(struct au_registry *reg);
/* Adds ch.query, ch.exec, ch.insert and ch.op. */
int au_ch_tasks_add(struct au_registry *reg);
/* How a task's ClickHouse request that failed fails the attempt
 * (AU_FAIL_*): a timeout follows the computation's on_timeout, an outage
 * is an outage, the rest as au_ch_fault says (tasks/ch_tasks.c). */
struct au_clickhouse;
struct au_ch_response;
int au_ch_fail_kind(const struct au_clickhouse *ch, const struct au_ch_response *r,
		    int fail_on_timeout);

/* Adds au.map (tasks/flow_tasks.c). */
int au_flow_tasks_add(struct au_registry *reg);
/* Adds ch.op (tasks/ch_ops.c). */
int au_ch_ops_add(struct au_registry *reg);

/*
 * The operation log (docs/clickhouse.md "The operation log"): each ch.op
 * that made a table adds a row to a buffer of the process, written to
 * au_operation_log on the task's loop within 200 ms (or at 500 rows) by
 * the ClickHouse client the task ran with. au_ch_oplog_detach(ch): if
 * the buffer is ch's, writes what it holds with a blocking request (2 s
 * at most) and lets go of ch and its loop; call it before au_ch_free(ch)
 * and before the loop is freed. au_ch_oplog_pending: rows not yet written.
 */
struct au_clickhouse;
void au_ch_oplog_detach(struct au_clickhouse *ch);
size_t au_ch_oplog_pending(void);

/*
 * The halves of those tasks that need no server (docs/clickhouse.md).
 * au_ch_task_request: from the task's msgpack args, the statement into sql
 * (NUL-terminated) and, for ch.insert, the JSONEachRow rows into data and
 * their count into *rows. AU_EINVAL / AU_ETOOBIG, message prefixed with the
 * task name. au_ch_task_result: the task's msgpack result from the answer
 * body: ch.query {"columns", "types", "rows"}, ch.exec {"ok": true},
 * ch.insert {"inserted": rows}. Both append to their buffers.
 */
int au_ch_task_request(const char *task, const unsigned char *args, size_t len,
		       struct au_buf *sql, struct au_buf *data, size_t *rows,
		       struct au_err *err);
int au_ch_task_result(const char *task, const char *body, size_t len, size_t rows,
		      struct au_buf *out, struct au_err *err);

#endif
