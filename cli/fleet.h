/*
 * fleet.h - `au worker` as an operator runs it: the settings file, the
 * start-up checks (cli/startup.c) and the supervised fleet of worker
 * processes (cli/fleet.c). Private to the `au` command.
 */
#ifndef AU_FLEET_H
#define AU_FLEET_H

#include <stdint.h>

#include "cli.h"
#include "core.h"

/* The parts the start-up checks ping (--skip-check names them). */
enum au_part { AU_PART_QUEUE = 1 << 0, AU_PART_STORE = 1 << 1, AU_PART_CLICKHOUSE = 1 << 2 };

/* What `au worker` was told on its command line. A zero or NULL field was
 * not given: it comes from the settings file, then the environment (the
 * URLs), then the default. */
struct au_fleet_opts {
	struct au_config cfg;       /* --queue-url, --store-url, --clickhouse */
	struct au_worker_opts wo;   /* --concurrency, --batch, --max-tasks, ...; wo.log
				       is 0 for --quiet */
	const char *log_level;      /* --log-level debug|info|warn|error */
	const char *log_format;     /* --log-format text|json */
	const char *config_file;    /* --config FILE: KEY=VALUE lines, re-read on SIGHUP */
	int processes;              /* --processes N; 0: one process, not supervised */
	int wait_for_servers;       /* --wait-for-servers: wait for a part that is down */
	uint32_t restart_delay_ms;  /* --restart-delay: first delay before a dead
				       child is restarted, default 1000 */
	unsigned skip;              /* --skip-check: enum au_part bits not checked */
};

/* Parses a --log-level value (debug, info, warn or warning, error); -1 if
 * it is none of them. */
int au_fleet_log_level(const char *name, enum au_loglevel *out);
/* Parses a --skip-check value: part names separated by commas ("queue",
 * "store", "clickhouse") into enum au_part bits; -1 for an unknown name. */
int au_fleet_parts(const char *names, unsigned *out);

/* Runs `au worker`: reads the settings file, runs the start-up checks,
 * then one worker in this process, or o->processes children under a
 * supervisor. Returns the process's exit code. */
int au_fleet_worker(const struct au_fleet_opts *o);

/*
 * The start-up checks (cli/startup.c). Pings each part of cfg that skip
 * does not name: the queue (open, then the stats of queue), the store
 * (open, then a read of an id that cannot exist) and ClickHouse (SELECT
 * version(), which also proves the user, the password and the database).
 * 0 when all answered; else -1 with err ("<part> '<masked url>': <why>"),
 * *failed the part that did not. On success fills ch_version (the
 * server's version, "" when skipped).
 */
int au_startup_ping(const struct au_config *cfg, const char *queue, unsigned skip,
		    unsigned *failed, char *ch_version, size_t len, struct au_err *err);
/* Pings until every part answers: the first time at once, then with a
 * back-off from 500 ms doubled up to 10 s, logging what it waits for. With
 * wait = 0 tries once. SIGTERM and SIGINT are blocked meanwhile and taken
 * as a request to stop. Returns 0; -1 with err when a part did not answer
 * and wait is 0, or when SIGTERM or SIGINT came (err.code 0 then). */
int au_startup_check(const struct au_config *cfg, const char *queue, unsigned skip, int wait,
		     char *ch_version, size_t len, struct au_err *err);
/* Logs the block a worker prints before it starts: the version, the
 * masked URLs, the queue, processes and concurrency, the tasks served. */
void au_startup_report(const struct au_config *cfg, const struct au_worker_opts *wo,
		       int processes, const char *ch_version, unsigned skip);

#endif
