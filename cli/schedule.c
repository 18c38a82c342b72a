/*
 * schedule.c - `au schedule add|list|show|pause|resume|rm`: cron schedules
 * that the workers fire, once per tick across the fleet (worker/
 * schedule.h, docs/schedules.md). Exit 0 ok, 1 failed or no such
 * schedule, 2 usage, 5 the queue unreachable.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cron.h"
#include "queue.h"
#include "schedule.h"

static const char schedule_usage[] =
	"usage: au schedule add NAME --cron EXPR [--tz ZONE] [--queue Q] [--priority N]\n"
	"                       [--max-attempts N] [--ttl DURATION] [--missed skip|latest|all]\n"
	"                       [--catchup-window DURATION] [--overlap skip|allow] [--paused]\n"
	"                       TASK [ARGS_JSON]\n"
	"       au schedule list [--json]\n"
	"       au schedule show NAME [--json]\n"
	"       au schedule pause|resume|rm NAME\n"
	"\n"
	"A schedule enqueues TASK at each tick of its cron expression (5 fields,\n"
	"or 6 with seconds first, or @hourly, @daily, ...) in its time zone\n"
	"(default UTC). Every worker looks at the schedules once a second and\n"
	"the fleet fires each tick once. After the fleet was away, --missed says\n"
	"what becomes of the ticks it missed: skip them (default), fire the\n"
	"latest, or fire all those within --catchup-window (default 1d).\n"
	"--overlap skip fires no tick while the previous one waits or runs.\n"
	"\n"
	"example: au schedule add nightly --cron '30 2 * * *' --tz Europe/Berlin \\\n"
	"           ch.exec '{\"sql\":\"OPTIMIZE TABLE t\"}'\n";

static int fail(struct au_queue *q, const struct au_err *err)
{
	int rc = err->code == AU_ENOTFOUND ? EXIT_FAILED : au_cli_exit_code(err);

	fprintf(stderr, "au: %s\n", err->str);
	au_queue_close(q);
	return rc;
}

static void print_time(FILE *out, const struct au_schedule *s, uint64_t ms)
{
	struct au_err err;
	struct au_tz *tz = ms ? au_tz_load(s->tz, &err) : NULL;
	char t[AU_CRON_TIME_SIZE];

	fputs(tz ? au_cron_time(tz, ms, t) : "-", out);
	au_tz_free(tz);
}

static void json_str(const char *s)
{
	putchar('"');
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			printf("\\%c", *s);
		else if ((unsigned char)*s < 0x20)
			printf("\\u%04x", *s);
		else
			putchar(*s);
	}
	putchar('"');
}

static void show_one(struct au_queue *q, const struct au_schedule *s, int json, int full)
{
	struct au_schedule_state st;
	struct au_err err;
	uint64_t now = au_schedule_now(), next = 0;
	char *args = NULL;

	if (au_schedule_state(q, s->name, &st, &err) < 0)
		memset(&st, 0, sizeof(st));
	if (!s->paused && au_schedule_next(s, st.last > now ? st.last : now, &next, &err) < 0)
		next = 0;
	if (full && s->args_len)
		args = au_msgpack_to_json(s->args, s->args_len, &err);
	if (!json) {
		if (!full) {
			printf("%-24s %-18s %-16s ", s->name, s->cron, s->tz);
			print_time(stdout, s, next);
			putchar(' ');
			print_time(stdout, s, st.fired);
			printf(" %s\n", s->paused ? "paused" : "active");
			return;
		}
		printf("name:          %s\ncron:          %s\ntz:            %s\ntask:          %s\n"
		       "args:          %s\nqueue:         %s\npriority:      %d\nmax attempts:  %u\n"
		       "ttl:           %us\nmissed:        %s\ncatch-up:      %" PRIu64 "s\n"
		       "overlap:       %s\npaused:        %s\nnext:          ", s->name, s->cron,
		       s->tz, s->task, args ? args : "{}", s->queue, s->priority, s->max_attempts,
		       s->ttl_s, au_sched_missed_name(s->missed), s->window_ms / 1000,
		       au_sched_overlap_name(s->overlap), s->paused ? "yes" : "no");
		print_time(stdout, s, next);
		fputs("\nlast fired:    ", stdout);
		print_time(stdout, s, st.fired);
		putchar('\n');
		free(args);
		return;
	}
	printf("{\"name\":");
	json_str(s->name);
	printf(",\"cron\":");
	json_str(s->cron);
	printf(",\"tz\":");
	json_str(s->tz);
	printf(",\"task\":");
	json_str(s->task);
	printf(",\"queue\":");
	json_str(s->queue);
	if (full)
		printf(",\"args\":%s,\"priority\":%d,\"max_attempts\":%u,\"ttl\":%u,\"window_ms\":%"
		       PRIu64 ",\"created_at_ms\":%" PRIu64, args ? args : "{}", s->priority,
		       s->max_attempts, s->ttl_s, s->window_ms, s->created_at_ms);
	printf(",\"missed\":\"%s\",\"overlap\":\"%s\",\"paused\":%s,\"next_ms\":%" PRIu64
	       ",\"last_fired_ms\":%" PRIu64 ",\"last_tick_ms\":%" PRIu64 "}",
	       au_sched_missed_name(s->missed), au_sched_overlap_name(s->overlap),
	       s->paused ? "true" : "false", next, st.fired, st.last);
	free(args);
}

/* A usage error once the queue is open: it is closed first. */
#define usage_closing(q, ...) (au_queue_close(q), au_cli_usage(schedule_usage, __VA_ARGS__))

static int add(struct au_queue *q, int argc, char **argv)
{
	struct au_schedule s;
	struct au_err err = { 0, "" };
	char *task = NULL, *args = NULL;
	int i, outcome, rc;
	uint64_t ms;
	unsigned char *mp = NULL;
	size_t mplen = 0;

	memset(&s, 0, sizeof(s));
	if (argc < 2)
		return usage_closing(q, "schedule add takes a NAME");
	s.name = argv[1];
	s.tz = (char *)"UTC";
	for (i = 2; i < argc; i++) {
		const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (o[0] != '-' || o[1] != '-') {
			if (!task)
				task = argv[i];
			else if (!args)
				args = argv[i];
			else
				return usage_closing(q, "unexpected argument '%s'", o);
			continue;
		}
		if (!strcmp(o, "--paused")) {
			s.paused = 1;
			continue;
		}
		if (!v)
			return usage_closing(q, "option '%s' takes a value", o);
		i++;
		if (!strcmp(o, "--cron"))
			s.cron = (char *)v;
		else if (!strcmp(o, "--tz"))
			s.tz = (char *)v;
		else if (!strcmp(o, "--queue"))
			s.queue = (char *)v;
		else if (!strcmp(o, "--priority"))
			s.priority = atoi(v);
		else if (!strcmp(o, "--max-attempts"))
			s.max_attempts = (uint32_t)strtoul(v, NULL, 10);
		else if (!strcmp(o, "--ttl") && au_duration_parse(v, &ms, &err) == 0)
			s.ttl_s = (uint32_t)(ms / 1000);
		else if (!strcmp(o, "--catchup-window") && au_duration_parse(v, &ms, &err) == 0)
			s.window_ms = ms;
		else if (!strcmp(o, "--missed")) {
			if (au_sched_missed_parse(v, &s.missed) < 0)
				return usage_closing(q, "invalid value '%s' for --missed"
						    " (expected skip, latest or all)", v);
		} else if (!strcmp(o, "--overlap")) {
			if (au_sched_overlap_parse(v, &s.overlap) < 0)
				return usage_closing(q, "invalid value '%s' for --overlap"
						    " (expected skip or allow)", v);
		} else if (err.code)
			return usage_closing(q, "%s", err.str);
		else
			return usage_closing(q, "unknown option '%s'", o);
	}
	if (!s.cron)
		return usage_closing(q, "schedule add needs --cron EXPR");
	if (!task)
		return usage_closing(q, "schedule add needs a TASK");
	s.task = task;
	if (args && au_json_to_msgpack(args, &mp, &mplen, &err) < 0)
		return usage_closing(q, "invalid ARGS_JSON: %s", err.str);
	s.args = mp;
	s.args_len = mplen;
	if (!s.queue)
		s.queue = (char *)AU_DEFAULT_QUEUE;
	if (au_schedule_check(&s, &err) < 0) {
		free(mp);
		return usage_closing(q, "%s", err.str);
	}
	rc = au_schedule_put(q, &s, &outcome, &err);
	free(mp);
	if (rc < 0)
		return fail(q, &err);
	printf("%s %s\n", outcome == 0 ? "created" : outcome == 1 ? "updated" : "unchanged", s.name);
	au_queue_close(q);
	return 0;
}

int au_cli_schedule(struct au_config *cfg, int argc, char **argv);
int au_cli_schedule(struct au_config *cfg, int argc, char **argv)
{
	struct au_err err = { 0, "" };
	struct au_queue *q;
	const char *sub = argc > 1 ? argv[1] : NULL;
	int json = 0, i, rc, nargs = 0;
	char *name = NULL;

	if (!sub || !strcmp(sub, "--help") || !strcmp(sub, "-h")) {
		fputs(schedule_usage, sub ? stdout : stderr);
		return sub ? 0 : EXIT_USAGE;
	}
	if (strcmp(sub, "add") && strcmp(sub, "list") && strcmp(sub, "show") &&
	    strcmp(sub, "pause") && strcmp(sub, "resume") && strcmp(sub, "rm"))
		return au_cli_usage(schedule_usage, "unknown schedule command '%s'", sub);
	if (strcmp(sub, "add")) {
		for (i = 2; i < argc; i++) {
			if (!strcmp(argv[i], "--json") && (!strcmp(sub, "list") || !strcmp(sub, "show")))
				json = 1;
			else if (argv[i][0] == '-')
				return au_cli_usage(schedule_usage, "unknown option '%s'", argv[i]);
			else
				name = argv[i], nargs++;
		}
		if (!strcmp(sub, "list") ? nargs != 0 : nargs != 1)
			return au_cli_usage(schedule_usage, "schedule %s takes %s", sub,
					    !strcmp(sub, "list") ? "no NAME" : "one NAME");
	}
	if (!(q = au_cli_open_queue(cfg, &rc)))
		return rc;
	if (!strcmp(sub, "add"))
		return add(q, argc - 1, argv + 1);
	if (!strcmp(sub, "list")) {
		struct au_schedule *v;
		size_t n, k;

		if (au_schedule_list(q, &v, &n, &err) < 0)
			return fail(q, &err);
		if (json)
			putchar('[');
		else
			printf("%-24s %-18s %-16s %-25s %-25s %s\n", "NAME", "CRON", "TZ", "NEXT",
			       "LAST FIRED", "STATE");
		for (k = 0; k < n; k++) {
			if (json && k)
				putchar(',');
			show_one(q, &v[k], json, 0);
			au_schedule_release(&v[k]);
		}
		if (json)
			puts("]");
		free(v);
	} else if (!strcmp(sub, "show")) {
		struct au_schedule s;

		if (au_schedule_get(q, name, &s, &err) < 0)
			return fail(q, &err);
		show_one(q, &s, json, 1);
		if (json)
			putchar('\n');
		au_schedule_release(&s);
	} else if (!strcmp(sub, "rm")) {
		if (au_schedule_remove(q, name, &err) < 0)
			return fail(q, &err);
	} else if (au_schedule_pause(q, name, !strcmp(sub, "pause"), &err) < 0) {
		return fail(q, &err);
	}
	au_queue_close(q);
	return 0;
}
