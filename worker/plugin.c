/*
 * plugin.c - loading plugins (plugin.h). What au_plugin_init adds is kept
 * aside in struct au_plugin and handed to the worker only once init
 * returned 0, so a plugin that fails half way leaves the worker as it was.
 * Libraries are never closed: a task or an ops table of theirs may be
 * referenced for as long as the process lives.
 */
#include <dlfcn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plugin.h"
#include "task.h"

struct plugin_task {
	char *name;
	au_task_fn fn;
	void *arg;
};

struct plugin_mw {
	const struct au_middleware_ops *ops;
	void *ctx;
};

struct au_plugin {
	const char *path;
	struct plugin_task *tasks;
	size_t ntasks;
	struct plugin_mw *mws;
	size_t nmws;
	int oom;
	char error[AU_ERRSTR_SIZE];
};

int au_plugin_add_task(struct au_plugin *p, const char *name, au_task_fn fn, void *arg)
{
	struct plugin_task *t = realloc(p->tasks, (p->ntasks + 1) * sizeof(*t));

	if (t)
		p->tasks = t;
	if (!t || !name || !(t[p->ntasks].name = strdup(name))) {
		p->oom = 1;
		return -1;
	}
	t[p->ntasks].fn = fn;
	t[p->ntasks++].arg = arg;
	return 0;
}

int au_plugin_add_middleware(struct au_plugin *p, const struct au_middleware_ops *ops, void *ctx)
{
	struct plugin_mw *m = realloc(p->mws, (p->nmws + 1) * sizeof(*m));

	if (!m) {
		if (ops->free)   /* owned from the call on, as au_worker_use says */
			ops->free(ctx);
		p->oom = 1;
		return -1;
	}
	p->mws = m;
	m[p->nmws].ops = ops;
	m[p->nmws++].ctx = ctx;
	return 0;
}

int au_plugin_error(struct au_plugin *p, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(p->error, sizeof(p->error), fmt, ap);
	va_end(ap);
	return -1;
}

const char *au_plugin_path(const struct au_plugin *p)
{
	return p->path;
}

/* Frees what init added and was not handed over (from mw on). */
static void drop(struct au_plugin *p, size_t mw)
{
	size_t i;

	for (i = 0; i < p->ntasks; i++)
		free(p->tasks[i].name);
	for (i = mw; i < p->nmws; i++)
		if (p->mws[i].ops->free)
			p->mws[i].ops->free(p->mws[i].ctx);
	free(p->tasks);
	free(p->mws);
}

static int what_of(const struct au_plugin *p, struct au_buf *what)
{
	size_t i;
	int rc = au_buf_puts(what, p->ntasks ? "tasks" : "no tasks");

	for (i = 0; i < p->ntasks; i++)
		rc |= au_buf_printf(what, " %s", p->tasks[i].name);
	if (p->nmws)
		rc |= au_buf_puts(what, "; middleware");
	for (i = 0; i < p->nmws; i++)
		rc |= au_buf_printf(what, " %s", p->mws[i].ops->name ? p->mws[i].ops->name : "?");
	return rc < 0 ? -1 : 0;
}

int au_plugin_load(const char *path, struct au_registry *reg, struct au_worker *w,
		   struct au_buf *what, struct au_err *err)
{
	struct au_plugin p = { .path = path };
	const unsigned *abi;
	int (*init)(struct au_plugin *);
	void *h, *sym;
	size_t i;
	int rc;

	dlerror();
	if (!(h = dlopen(path, RTLD_NOW | RTLD_LOCAL)))
		return au_seterr(err, AU_EINVAL, "unable to load plugin '%s': %s", path, dlerror());
	if (!(abi = dlsym(h, "au_plugin_abi"))) {
		au_seterr(err, AU_EINVAL, "unable to load plugin '%s': not an au plugin (no "
			  "au_plugin_abi: AU_PLUGIN_DECLARE): %s", path, dlerror());
		dlclose(h);   /* none of its code ran but its constructors */
		return -1;
	}
	if (*abi != AU_PLUGIN_ABI) {
		au_seterr(err, AU_EINVAL, "unable to load plugin '%s': built for plugin ABI %u, "
			  "this au has %u", path, *abi, AU_PLUGIN_ABI);
		dlclose(h);
		return -1;
	}
	if (!(sym = dlsym(h, "au_plugin_init"))) {
		au_seterr(err, AU_EINVAL, "unable to load plugin '%s': %s", path, dlerror());
		dlclose(h);
		return -1;
	}
	*(void **)&init = sym;   /* POSIX: a function's address through void * */
	rc = init(&p);
	if (rc != 0 || p.oom) {
		if (p.oom)
			au_seterr(err, AU_ENOMEM, "unable to load plugin '%s': out of memory", path);
		else
			au_seterr(err, AU_EINVAL, "unable to load plugin '%s': au_plugin_init failed%s%s",
				  path, p.error[0] ? ": " : "", p.error);
		drop(&p, 0);
		return -1;
	}
	if (what && what_of(&p, what) < 0) {
		drop(&p, 0);
		return au_seterr(err, AU_ENOMEM, "out of memory");
	}
	if (!w) {
		drop(&p, 0);
		return 0;
	}
	/* the tasks first: the only step that can fail before the worker
	 * owns anything */
	for (i = 0; i < p.ntasks; i++) {
		au_task_fn fn;
		void *arg;

		if (au_registry_find(reg, p.tasks[i].name, &fn, &arg) == 0)
			au_log(AU_LOG_WARN, "plugin '%s': task '%s' replaces the one an earlier "
			       "plugin added", path, p.tasks[i].name);
		if (au_registry_add(reg, p.tasks[i].name, p.tasks[i].fn, p.tasks[i].arg) < 0) {
			drop(&p, 0);
			return au_seterr(err, AU_ENOMEM, "unable to load plugin '%s': out of memory",
					 path);
		}
	}
	for (i = 0; i < p.nmws; i++)
		if (au_worker_use(w, p.mws[i].ops, p.mws[i].ctx) < 0) {
			drop(&p, i + 1);   /* au_worker_use freed the i-th */
			return au_seterr(err, AU_ENOMEM, "unable to load plugin '%s': out of memory",
					 path);
		}
	p.nmws = 0;
	drop(&p, 0);
	return 0;
}

/* Calls fn for each path of list; stops at the first that fails. */
static int each_path(const char *list, int (*fn)(const char *path, void *arg), void *arg,
		     struct au_err *err)
{
	const char *s = list ? list : "";

	while (*s) {
		size_t n = strcspn(s, ",");

		if (n) {
			char *path = strndup(s, n);
			int rc;

			if (!path)
				return au_seterr(err, AU_ENOMEM, "out of memory");
			rc = fn(path, arg);
			free(path);
			if (rc < 0)
				return -1;
		}
		s += n + (s[n] == ',');
	}
	return 0;
}

struct loading {
	struct au_worker *w;
	void (*each)(const char *path, const char *what, void *arg);
	void *arg;
	struct au_err *err;
};

static int load_one(const char *path, void *arg)
{
	struct loading *l = arg;

	return au_worker_load_plugin(l->w, path, l->err);
}

int au_worker_load_plugins(struct au_worker *w, const char *list, struct au_err *err)
{
	struct loading l = { .w = w, .err = err };

	return each_path(list, load_one, &l, err);
}

static int check_one(const char *path, void *arg)
{
	struct loading *l = arg;
	struct au_registry *reg = au_registry_new();
	struct au_buf what = AU_BUF_INIT;
	int rc;

	if (!reg)
		return au_seterr(l->err, AU_ENOMEM, "out of memory");
	rc = au_plugin_load(path, reg, NULL, &what, l->err);
	if (rc == 0 && l->each)
		l->each(path, what.data ? (const char *)what.data : "", l->arg);
	au_buf_release(&what);
	au_registry_free(reg);
	return rc;
}

int au_plugins_check(const char *list, void (*each)(const char *path, const char *what, void *arg),
		     void *arg, struct au_err *err)
{
	struct loading l = { .each = each, .arg = arg, .err = err };

	return each_path(list, check_one, &l, err);
}
