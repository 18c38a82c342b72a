/*
 * plugin.h - the loader of plugins (include/au.h, "Plugins"): dlopen, the
 * ABI check, au_plugin_init, and what it added handed to a worker only
 * once it all went well.
 */
#ifndef AU_PLUGIN_H
#define AU_PLUGIN_H

#include "au.h"
#include "core.h"

/*
 * Loads the plugin at path and runs its au_plugin_init. With w, its tasks
 * go into reg and its middleware onto w (au_worker_use); without (a
 * check), nothing is kept: the middleware contexts are freed at once.
 * what, if not NULL, gets "tasks a b; middleware m" appended. 0, or -1
 * with err ("unable to load plugin 'PATH': ...", AU_EINVAL; AU_ENOMEM)
 * and nothing added.
 */
int au_plugin_load(const char *path, struct au_registry *reg, struct au_worker *w,
		   struct au_buf *what, struct au_err *err);

/* au_worker_load_plugin for each path of list (separated by commas,
 * empty ones skipped), in order; stops at the first that fails. */
int au_worker_load_plugins(struct au_worker *w, const char *list, struct au_err *err);

/* Checks each plugin of list (au_plugin_load without a worker) and calls
 * each(path, what, arg) for those that load; stops at the first that
 * does not: -1 with err. */
int au_plugins_check(const char *list, void (*each)(const char *path, const char *what, void *arg),
		     void *arg, struct au_err *err);

#endif
