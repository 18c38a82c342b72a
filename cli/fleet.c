/*
 * fleet.c - `au worker`: its settings, and with --processes N a parent that
 * supervises N worker processes the way nginx and gunicorn do.
 *
 * The parent runs no event loop: it takes every signal it cares about
 * synchronously (sigtimedwait on a blocked set), so a signal that comes
 * while it forks or reaps is never lost, and its only timers are the
 * restarts it has scheduled. A child that dies unasked (a signal, a
 * non-zero exit) is started again after a back-off that doubles with each
 * death in a row, up to 30 times the first delay, and resets once a child
 * stayed up that long: a crash loop costs a fork every 30 s, not a spin.
 * Its leases are the queue's to rescue once they run out, as for any
 * crashed worker. A child that exits 0 finished on purpose (--max-tasks)
 * and is replaced at once; with --idle-exit it is not replaced.
 *
 * SIGTERM and SIGINT are passed on: each child drains (finishes what runs
 * within the grace period, releases the rest without spending an attempt)
 * and the parent exits 0 once all did so cleanly; a child still there 5 s
 * after the grace period is killed. SIGHUP re-reads the settings file and
 * replaces the children one at a time: a new one starts with the new
 * settings, then the old one of its slot gets SIGTERM and drains, and the
 * next slot follows once it has gone, so no computation is dropped and the
 * fleet never runs short.
 */
#include <ctype.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif
#include <unistd.h>

#include "fleet.h"
#include "middleware.h"
#include "plugin.h"
#include "metrics.h"

/* Everything a child is started with; a reload makes a new one. */
struct settings {
	struct au_config cfg;
	struct au_worker_opts wo;
	enum au_loglevel level;
	int processes;
	char *owned[3];             /* URLs read from the file */
	char *middleware;           /* AU_MIDDLEWARE read from the file or the environment */
	char *plugins;              /* AU_PLUGINS, read from the file or the environment */
	char metrics_addr[300];     /* --metrics-addr, AU_METRICS_ADDR: child i serves PORT+i */
};

static const char *const level_names[] = { "debug", "info", "warn", "error" };

int au_fleet_log_level(const char *name, enum au_loglevel *out)
{
	size_t i;

	for (i = 0; i < AU_ARRAY_SIZE(level_names); i++)
		if (!strcmp(name, level_names[i])) {
			*out = (enum au_loglevel)i;
			return 0;
		}
	if (!strcmp(name, "warning")) {
		*out = AU_LOG_WARN;
		return 0;
	}
	return -1;
}

int au_fleet_parts(const char *names, unsigned *out)
{
	static const char *const parts[] = { "queue", "store", "clickhouse" };
	const char *p = names;

	*out = 0;
	while (*p) {
		size_t n = strcspn(p, ","), i;

		for (i = 0; i < AU_ARRAY_SIZE(parts); i++)
			if (n == strlen(parts[i]) && !strncmp(p, parts[i], n))
				break;
		if (i == AU_ARRAY_SIZE(parts))
			return -1;
		*out |= 1u << i;
		p += n + (p[n] == ',');
	}
	return 0;
}

static void settings_release(struct settings *s)
{
	size_t i;

	for (i = 0; i < AU_ARRAY_SIZE(s->owned); i++)
		free(s->owned[i]);
	free(s->middleware);
	free(s->plugins);
	memset(s, 0, sizeof(*s));
}

/* Where a setting came from, for a message: "'FILE' line N" or "the
 * environment". */
static const char *origin(const char *path, unsigned line, char *buf, size_t len)
{
	if (!line)
		return "the environment";
	snprintf(buf, len, "'%s' line %u", path, line);
	return buf;
}

/* A number setting, into *out unless the command line set it. */
static int file_number(const char *path, unsigned line, const char *key, const char *val,
		       uint32_t min, uint32_t *out, uint32_t flag)
{
	char *end, where[PATH_MAX + 32];
	unsigned long v;

	errno = 0;
	v = strtoul(val, &end, 10);
	if (errno || end == val || *end || v < min || v > 0x7fffffff || val[0] == '-') {
		au_log(AU_LOG_ERROR, "%s: invalid value '%s' for %s",
		       origin(path, line, where, sizeof(where)), val, key);
		return -1;
	}
	if (!flag)
		*out = (uint32_t)v;
	return 0;
}

struct loading {
	const struct au_fleet_opts *o;
	struct settings *s;
};

/* One setting of the file (line > 0) or the environment (line 0). A flag
 * wins over both, the environment over the file. */
static int setting(void *arg, const char *path, unsigned line, const char *key, const char *val)
{
	struct loading *l = arg;
	const struct au_fleet_opts *o = l->o;
	struct settings *s = l->s;
	char where[PATH_MAX + 32];
	struct au_err err;
	int i = !strcmp(key, "AU_QUEUE") ? 0 : !strcmp(key, "AU_STORE") ? 1 : 2, r;

	if ((r = au_cli_url_setting(&s->cfg, key, val, &s->owned[i])) != 0)
		return r < 0 ? -1 : 0;
	if (line && getenv(key))
		return 0;   /* the environment's, read after the file */
	if (!strcmp(key, "AU_LOG_LEVEL")) {
		enum au_loglevel lvl;

		if (au_fleet_log_level(val, &lvl) < 0) {
			au_log(AU_LOG_ERROR, "%s: invalid log level '%s' (expected debug, info, warn "
			       "or error)", origin(path, line, where, sizeof(where)), val);
			return -1;
		}
		if (!o->log_level)
			s->level = lvl;
		return 0;
	}
	if (!strcmp(key, "AU_MIDDLEWARE")) {
		if (o->wo.middleware)   /* the flag's */
			return 0;
		if (au_mw_check(val, &err) < 0) {
			au_log(AU_LOG_ERROR, "%s: AU_MIDDLEWARE: %s", origin(path, line, where,
									   sizeof(where)), err.str);
			return -1;
		}
		free(s->middleware);
		s->wo.middleware = s->middleware = au_strdup(val);
		return s->middleware ? 0 : -1;
	}
	if (!strcmp(key, "AU_LOG_FORMAT")) {
		if (strcmp(val, "text") != 0 && strcmp(val, "json") != 0) {
			au_log(AU_LOG_ERROR, "%s: invalid AU_LOG_FORMAT '%s' (expected text or json)",
			       origin(path, line, where, sizeof(where)), val);
			return -1;
		}
		if (!o->log_format)
			s->wo.log_format = !strcmp(val, "json") ? AU_LOG_JSON : AU_LOG_TEXT;
		return 0;
	}
	if (!strcmp(key, "AU_CONCURRENCY"))
		return file_number(path, line, key, val, 1, &s->wo.concurrency, o->wo.concurrency);
	if (!strcmp(key, "AU_BATCH"))
		return file_number(path, line, key, val, 1, &s->wo.batch, o->wo.batch);
	if (!strcmp(key, "AU_MAX_TASKS"))
		return file_number(path, line, key, val, 0, &s->wo.max_jobs, o->wo.max_jobs);
	if (!strcmp(key, "AU_LEASE_MS"))
		return file_number(path, line, key, val, 1, &s->wo.lease_ms, o->wo.lease_ms);
	if (!strcmp(key, "AU_GRACE_MS"))
		return file_number(path, line, key, val, 0, &s->wo.grace_ms, o->wo.grace_ms);
	if (!strcmp(key, "AU_RETRY_BASE_MS"))
		return file_number(path, line, key, val, 1, &s->wo.retry_base_ms, o->wo.retry_base_ms);
	if (!strcmp(key, "AU_POOL_THREADS"))
		return file_number(path, line, key, val, 1, &s->wo.pool_threads, o->wo.pool_threads);
	if (!strcmp(key, "AU_PLUGINS")) {   /* paths separated by commas */
		char *copy;

		if (o->wo.plugins)
			return 0;
		if (!(copy = strdup(val)))
			return -1;
		free(s->plugins);
		s->plugins = copy;
		s->wo.plugins = *copy ? copy : NULL;
		return 0;
	}
	if (!strcmp(key, "AU_METRICS_ADDR")) {
		if (!o->wo.metrics_addr)
			snprintf(s->metrics_addr, sizeof(s->metrics_addr), "%s", val);
		return 0;
	}
	if (!strcmp(key, "AU_PROCESSES")) {
		uint32_t p = (uint32_t)s->processes;

		r = file_number(path, line, key, val, 1, &p, (uint32_t)o->processes);
		s->processes = (int)p;
		return r;
	}
	au_log(AU_LOG_ERROR, "%s: unknown setting '%s'", origin(path, line, where, sizeof(where)),
	       key);
	return -1;
}

/* The command line, then the environment, then the file, then the defaults. */
static int settings_load(const struct au_fleet_opts *o, struct settings *s)
{
	struct loading l = { o, s };
	const char *path, *v;
	size_t i;

	memset(s, 0, sizeof(*s));
	s->cfg = o->cfg;
	s->wo = o->wo;
	s->processes = o->processes;
	s->level = AU_LOG_INFO;
	s->wo.log_format = o->log_format && !strcmp(o->log_format, "json") ? AU_LOG_JSON : AU_LOG_TEXT;
	if (o->wo.metrics_addr)
		snprintf(s->metrics_addr, sizeof(s->metrics_addr), "%s", o->wo.metrics_addr);
	if (o->log_level && au_fleet_log_level(o->log_level, &s->level) < 0)
		return -1;
	path = au_cli_config_path(o->config_file);
	if (path && au_cli_settings(path, setting, &l) < 0)
		goto fail;
	for (i = 0; au_cli_worker_keys[i]; i++)
		if ((v = getenv(au_cli_worker_keys[i])) &&
		    setting(&l, NULL, 0, au_cli_worker_keys[i], v) < 0)
			goto fail;
	au_config_from_env(&s->cfg);
	/* one line per computation is an info line */
	s->wo.log = o->wo.log && s->level <= AU_LOG_INFO;
	return 0;
fail:
	settings_release(s);
	return -1;
}

/* One line of the start-up block per plugin, kept for after the checks. */
static void plugin_line(const char *path, const char *what, void *arg)
{
	au_buf_printf(arg, "  plugin      '%s': %s\n", path, what);
}

/* Each plugin of s loads (au_plugin_init included) before any worker
 * tries: 0 (what each has appended to lines, if not NULL), or -1 with the
 * message printed (at start-up: stderr) or logged (a reload). */
static int plugins_check(const struct settings *s, struct au_buf *lines)
{
	struct au_err err = { 0, "" };
	struct au_buf none = AU_BUF_INIT;
	int rc = 0;

	if (s->wo.plugins && au_plugins_check(s->wo.plugins, plugin_line, lines ? lines : &none,
					      &err) < 0) {
		if (lines)
			fprintf(stderr, "au: %s\n", err.str);
		else
			au_log(AU_LOG_ERROR, "%s", err.str);
		rc = -1;
	}
	au_buf_release(&none);
	return rc;
}

/* A child `au worker stop` stopped exits with this: the parent does not
 * start another in its place. */
#define EXIT_CHILD_STOPPED 6

/* The exit status of one worker process; a child says whether it was
 * asked to stop. */
static int run_worker(const struct settings *s, int child, int slot)
{
	struct au_err err = { 0, "" };
	struct au_worker_opts wo = s->wo;
	char addr[320];
	int rc;

	au_log_set_level(s->level);
	/* the metrics of child `slot` on PORT+slot; one replacing a child that
	 * still drains waits for the port */
	wo.metrics_addr = NULL;
	if (s->metrics_addr[0]) {
		if (au_metrics_addr_offset(s->metrics_addr, slot, addr, sizeof(addr), &err) < 0)
			return au_cli_fail(&err);
		wo.metrics_addr = addr;
		wo.metrics_wait = child;
	}
	if ((rc = au_worker_run(&s->cfg, &wo, NULL, &err)) < 0)
		return au_cli_fail(&err);
	return rc == 1 && child ? EXIT_CHILD_STOPPED : 0;
}

/* ---- the supervisor ---- */

struct slot {
	pid_t pid;                  /* 0: none running */
	unsigned gen;               /* settings generation it was started with */
	uint64_t started_ms;
	unsigned deaths;            /* in a row, for the back-off */
	uint64_t restart_at_ms;     /* 0: no restart pending */
};

struct fleet {
	struct settings s;
	unsigned gen;
	struct slot *slots;
	int n;
	pid_t *retiring;            /* replaced at a reload, draining */
	int nretiring;
	int stopping;
	uint64_t kill_at_ms;
	uint64_t base_ms, cap_ms;
	sigset_t set, old;
	int rc;
};

static uint64_t now_ms(void)
{
	return au_mono_us() / 1000;
}

/* "1 s", "1.5 s", "200 ms" */
static const char *duration(uint64_t ms, char *buf, size_t len)
{
	if (ms >= 1000 && ms % 1000 == 0)
		snprintf(buf, len, "%llu s", (unsigned long long)(ms / 1000));
	else if (ms >= 1000)
		snprintf(buf, len, "%.1f s", (double)ms / 1000.0);
	else
		snprintf(buf, len, "%llu ms", (unsigned long long)ms);
	return buf;
}

/* "killed by signal 9 (Killed)", "exited with status 5" */
static const char *how(int status, char *buf, size_t len)
{
	if (WIFSIGNALED(status))
		snprintf(buf, len, "killed by signal %d (%s)", WTERMSIG(status),
			 strsignal(WTERMSIG(status)));
	else
		snprintf(buf, len, "exited with status %d", WEXITSTATUS(status));
	return buf;
}

static int spawn(struct fleet *f, int i)
{
	struct slot *sl = &f->slots[i];
	pid_t pid;

	pid_t parent = getpid();

	fflush(NULL);
	pid = fork();
	if (pid == 0) {
#ifdef __linux__
		/* a parent killed with SIGKILL cannot pass anything on: its
		 * orphans drain by themselves */
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		if (getppid() != parent)
			_exit(0);
#endif
		sigprocmask(SIG_SETMASK, &f->old, NULL);
		signal(SIGHUP, SIG_IGN);   /* a reload is the parent's business */
		_exit(run_worker(&f->s, 1, i));
	}
	if (pid < 0) {
		au_log(AU_LOG_ERROR, "unable to start a worker process: %s", strerror(errno));
		sl->restart_at_ms = now_ms() + f->base_ms;
		return -1;
	}
	sl->pid = pid;
	sl->gen = f->gen;
	sl->started_ms = now_ms();
	sl->restart_at_ms = 0;
	au_log(AU_LOG_DEBUG, "started worker process %d", (int)pid);
	return 0;
}

static void signal_all(struct fleet *f, int sig)
{
	int i;

	for (i = 0; i < f->n; i++)
		if (f->slots[i].pid > 0)
			kill(f->slots[i].pid, sig);
	for (i = 0; i < f->nretiring; i++)
		kill(f->retiring[i], sig);
}

static int alive(const struct fleet *f)
{
	int i, n = f->nretiring;

	for (i = 0; i < f->n; i++)
		n += f->slots[i].pid > 0;
	return n;
}

static void stop(struct fleet *f, int sig)
{
	uint32_t grace = f->s.wo.grace_ms ? f->s.wo.grace_ms : AU_DEFAULT_GRACE_MS;
	int i;

	if (!f->stopping) {
		au_log(AU_LOG_INFO, "received %s: stopping %d worker processes",
		       sig == SIGINT ? "SIGINT" : "SIGTERM", alive(f));
		f->stopping = 1;
		f->kill_at_ms = now_ms() + grace + 5000;
		for (i = 0; i < f->n; i++)
			f->slots[i].restart_at_ms = 0;
	}
	signal_all(f, sig);
}

static void reload(struct fleet *f, const struct au_fleet_opts *o)
{
	struct settings s;
	size_t i;

	if (au_cli_config_path(o->config_file))
		au_log(AU_LOG_INFO, "received SIGHUP: reading '%s'", au_cli_config_path(o->config_file));
	else
		au_log(AU_LOG_INFO, "received SIGHUP: no --config; replacing the worker processes");
	if (settings_load(o, &s) < 0) {
		au_log(AU_LOG_ERROR, "settings not reloaded: the worker processes keep the old ones");
		return;
	}
	if (plugins_check(&s, NULL) < 0) {
		settings_release(&s);
		au_log(AU_LOG_ERROR, "settings not reloaded: the worker processes keep the old ones");
		return;
	}
	if (strcmp(s.cfg.queue_url, f->s.cfg.queue_url) ||
	    strcmp(s.cfg.store_url, f->s.cfg.store_url) ||
	    strcmp(s.cfg.clickhouse_url, f->s.cfg.clickhouse_url))
		au_log(AU_LOG_WARN, "a changed URL takes a restart, not a reload");
	if (s.processes != f->n)
		au_log(AU_LOG_WARN, "a changed number of processes takes a restart, not a reload");
	/* what takes a restart stays as it was: the URLs (and the strings
	 * they point into) move over, the file's new copies go */
	for (i = 0; i < AU_ARRAY_SIZE(s.owned); i++) {
		free(s.owned[i]);
		s.owned[i] = f->s.owned[i];
		f->s.owned[i] = NULL;
	}
	s.cfg = f->s.cfg;
	s.processes = f->n;
	free(f->s.plugins);
	f->s = s;
	f->gen++;
	au_log_set_level(f->s.level);
	au_log(AU_LOG_INFO, "reloaded: concurrency %u, log level %s; replacing %d worker "
	       "processes one at a time", f->s.wo.concurrency ? f->s.wo.concurrency
							  : AU_DEFAULT_CONCURRENCY,
	       level_names[f->s.level], f->n);
}

/* One step of a rolling replacement: while no old child drains, start the
 * next slot's new child and ask its old one to drain. */
static void roll(struct fleet *f)
{
	int i;
	pid_t old;

	if (f->stopping || f->nretiring)
		return;
	for (i = 0; i < f->n; i++)
		if (f->slots[i].pid > 0 && f->slots[i].gen != f->gen)
			break;
	if (i == f->n)
		return;
	old = f->slots[i].pid;
	if (spawn(f, i) < 0) {
		f->slots[i].pid = old;   /* kept; tried again on the next event */
		f->slots[i].restart_at_ms = 0;
		return;
	}
	f->retiring[f->nretiring++] = old;
	kill(old, SIGTERM);
	au_log(AU_LOG_INFO, "worker process %d replaces %d, which drains", (int)f->slots[i].pid,
	       (int)old);
}

static void reaped(struct fleet *f, pid_t pid, int status)
{
	int asked = WIFEXITED(status) && WEXITSTATUS(status) == EXIT_CHILD_STOPPED;
	int clean = (WIFEXITED(status) && WEXITSTATUS(status) == 0) || asked;
	char b1[64], b2[32];
	struct slot *sl = NULL;
	uint64_t up, delay;
	int i;

	for (i = 0; i < f->nretiring; i++)
		if (f->retiring[i] == pid) {
			f->retiring[i] = f->retiring[--f->nretiring];
			if (!clean)
				au_log(AU_LOG_WARN, "replaced worker process %d %s", (int)pid,
				       how(status, b1, sizeof(b1)));
			else
				au_log(AU_LOG_DEBUG, "replaced worker process %d drained", (int)pid);
			return;
		}
	for (i = 0; i < f->n; i++)
		if (f->slots[i].pid == pid)
			sl = &f->slots[i];
	if (!sl)
		return;
	sl->pid = 0;
	if (f->stopping) {
		if (!clean) {
			au_log(AU_LOG_WARN, "worker process %d %s", (int)pid, how(status, b1, sizeof(b1)));
			f->rc = EXIT_FAILED;
		}
		return;
	}
	up = now_ms() - sl->started_ms;
	if (asked) {
		au_log(AU_LOG_INFO, "worker process %d stopped by 'au worker stop'; not replaced (%d "
		       "left)", (int)pid, alive(f));
		return;
	}
	if (clean && f->s.wo.idle_exit_ms) {
		au_log(AU_LOG_INFO, "worker process %d exited after %u ms idle", (int)pid,
		       f->s.wo.idle_exit_ms);
		return;   /* done: not replaced */
	}
	if (clean) {
		/* planned (--max-tasks), or asked to by someone else: no back-off */
		if (f->s.wo.max_jobs)
			au_log(AU_LOG_INFO, "worker process %d exited after its %u tasks; starting a "
			       "new one", (int)pid, f->s.wo.max_jobs);
		else
			au_log(AU_LOG_INFO, "worker process %d exited; starting a new one", (int)pid);
		sl->deaths = 0;
		sl->restart_at_ms = now_ms();
		return;
	}
	if (up >= f->cap_ms)
		sl->deaths = 0;
	delay = f->base_ms << (sl->deaths < 16 ? sl->deaths : 16);
	if (delay > f->cap_ms)
		delay = f->cap_ms;
	sl->deaths++;
	sl->restart_at_ms = now_ms() + delay;
	au_log(AU_LOG_WARN, "worker process %d %s; restarting in %s", (int)pid,
	       how(status, b1, sizeof(b1)), duration(delay, b2, sizeof(b2)));
}

static int pending(const struct fleet *f)
{
	int i;

	for (i = 0; i < f->n; i++)
		if (f->slots[i].restart_at_ms)
			return 1;
	return 0;
}

static int supervise(const struct au_fleet_opts *o, struct settings *s)
{
	struct fleet f;
	int i;

	memset(&f, 0, sizeof(f));
	f.s = *s;
	memset(s, 0, sizeof(*s));   /* f owns it now */
	f.n = f.s.processes;
	f.base_ms = o->restart_delay_ms ? o->restart_delay_ms : 1000;
	f.cap_ms = f.base_ms * 30;
	f.slots = calloc((size_t)f.n, sizeof(*f.slots));
	f.retiring = calloc((size_t)f.n, sizeof(*f.retiring));
	if (!f.slots || !f.retiring) {
		free(f.slots);
		free(f.retiring);
		settings_release(&f.s);
		fprintf(stderr, "au: out of memory\n");
		return EXIT_FAILED;
	}
	sigemptyset(&f.set);
	sigaddset(&f.set, SIGTERM);
	sigaddset(&f.set, SIGINT);
	sigaddset(&f.set, SIGHUP);
	sigaddset(&f.set, SIGCHLD);
	sigprocmask(SIG_BLOCK, &f.set, &f.old);
	for (i = 0; i < f.n; i++)
		spawn(&f, i);
	for (;;) {
		struct timespec ts;
		uint64_t now = now_ms(), next = now + 1000;
		siginfo_t si;
		pid_t pid;
		int status, sig;

		for (i = 0; i < f.n; i++) {
			struct slot *sl = &f.slots[i];

			if (!f.stopping && !sl->pid && sl->restart_at_ms && sl->restart_at_ms <= now)
				spawn(&f, i);
			if (sl->restart_at_ms && sl->restart_at_ms < next)
				next = sl->restart_at_ms;
		}
		roll(&f);
		if (f.stopping && now >= f.kill_at_ms && alive(&f)) {
			au_log(AU_LOG_ERROR, "%d worker processes still running 5 s after the grace "
			       "period: killing them", alive(&f));
			signal_all(&f, SIGKILL);
			f.rc = EXIT_FAILED;
			f.kill_at_ms = UINT64_MAX;
		}
		if (!alive(&f) && (f.stopping || !pending(&f)))
			break;
		if (f.stopping && f.kill_at_ms < next)
			next = f.kill_at_ms;
		next = next > now ? next - now : 0;
		ts.tv_sec = (time_t)(next / 1000);
		ts.tv_nsec = (long)(next % 1000) * 1000000L;
		sig = sigtimedwait(&f.set, &si, &ts);
		if (sig == SIGTERM || sig == SIGINT)
			stop(&f, sig);
		else if (sig == SIGHUP && !f.stopping)
			reload(&f, o);
		while ((pid = waitpid(-1, &status, WNOHANG)) > 0)
			reaped(&f, pid, status);
	}
	sigprocmask(SIG_SETMASK, &f.old, NULL);
	if (f.rc == 0)
		au_log(AU_LOG_INFO, "all worker processes stopped");
	free(f.slots);
	free(f.retiring);
	settings_release(&f.s);
	return f.rc;
}

/* Without a supervisor a SIGHUP would end the worker: say so instead. */
static void hup_ignored(int sig)
{
	static const char msg[] = "au: warning: SIGHUP ignored: reloading takes --processes\n";
	ssize_t r;

	(void)sig;
	r = write(2, msg, sizeof(msg) - 1);
	(void)r;
}

int au_fleet_worker(const struct au_fleet_opts *o)
{
	struct au_err err = { 0, "" };
	struct settings s;
	struct au_buf plugins = AU_BUF_INIT;   /* the start-up block's plugin lines */
	char version[64], *p, *nl;
	int rc, i;

	if (settings_load(o, &s) < 0)
		return EXIT_USAGE;
	if (s.processes > 1024) {
		settings_release(&s);
		fprintf(stderr, "au: invalid value %d for --processes (expected 1..1024)\n",
			s.processes);
		return EXIT_USAGE;
	}
	au_log_set_level(s.level);
	/* a plugin is checked first: it needs no server, and a fleet's
	 * children must not each find it broken (au.h: its au_plugin_init
	 * runs here, then in each worker) */
	if (plugins_check(&s, &plugins) < 0) {
		au_buf_release(&plugins);
		settings_release(&s);
		return EXIT_USAGE;
	}
	if (au_startup_check(&s.cfg, s.wo.queue, o->skip, o->wait_for_servers, version,
			     sizeof(version), &err) < 0) {
		au_buf_release(&plugins);
		settings_release(&s);
		if (!err.code)
			return 0;   /* asked to stop while waiting */
		fprintf(stderr, "au: unable to start the worker: %s\n", err.str);
		return au_cli_exit_code(&err) == EXIT_USAGE ? EXIT_USAGE : EXIT_CONN;
	}
	for (i = 0; s.metrics_addr[0] && i < (s.processes > 0 ? s.processes : 1); i++)
		if (au_metrics_probe(s.metrics_addr, i, &err) < 0) {
			settings_release(&s);
			fprintf(stderr, "au: %s\n", err.str);
			return err.code == AU_EINVAL ? EXIT_USAGE : EXIT_FAILED;
		}
	au_startup_report(&s.cfg, &s.wo, s.processes, version, o->skip);
	for (p = (char *)plugins.data; p && *p; p = nl + 1) {
		nl = strchr(p, '\n');
		*nl = '\0';
		au_log(AU_LOG_INFO, "%s", p);
	}
	au_buf_release(&plugins);
	if (s.processes > 0)
		return supervise(o, &s);
	signal(SIGHUP, hup_ignored);
	rc = run_worker(&s, 0, 0);
	settings_release(&s);
	return rc;
}
