/*
 * task_registry.c - the task table: names to functions, nothing more. The
 * tasks themselves live in tasks/.
 */
#include <stdlib.h>
#include <string.h>

#include "core.h"
#include "task.h"

struct task_entry {
	char *name;
	au_task_fn fn;
	void *arg;
};

struct au_registry {
	struct task_entry *tasks;
	size_t n, cap;
};

struct au_registry *au_registry_new(void)
{
	return au_calloc(1, sizeof(struct au_registry));
}

void au_registry_free(struct au_registry *reg)
{
	size_t i;

	if (!reg)
		return;
	for (i = 0; i < reg->n; i++)
		free(reg->tasks[i].name);
	free(reg->tasks);
	free(reg);
}

int au_registry_add(struct au_registry *reg, const char *name, au_task_fn fn, void *arg)
{
	size_t i;

	if (!name || !*name || !fn)
		return -1;
	for (i = 0; i < reg->n; i++)
		if (!strcmp(reg->tasks[i].name, name)) {  /* re-registering replaces */
			reg->tasks[i].fn = fn;
			reg->tasks[i].arg = arg;
			return 0;
		}
	if (reg->n == reg->cap) {
		size_t cap = reg->cap ? reg->cap * 2 : 16;
		struct task_entry *t = au_realloc(reg->tasks, cap * sizeof(*t));

		if (!t)
			return -1;
		reg->tasks = t;
		reg->cap = cap;
	}
	reg->tasks[reg->n].name = au_strdup(name);
	if (!reg->tasks[reg->n].name)
		return -1;
	reg->tasks[reg->n].fn = fn;
	reg->tasks[reg->n].arg = arg;
	reg->n++;
	return 0;
}

int au_registry_find(const struct au_registry *reg, const char *name, au_task_fn *fn,
		     void **arg)
{
	size_t i;

	for (i = 0; i < reg->n; i++)
		if (!strcmp(reg->tasks[i].name, name)) {
			*fn = reg->tasks[i].fn;
			*arg = reg->tasks[i].arg;
			return 0;
		}
	return -1;
}

size_t au_registry_count(const struct au_registry *reg)
{
	return reg->n;
}

const char *au_registry_name(const struct au_registry *reg, size_t i)
{
	return i < reg->n ? reg->tasks[i].name : NULL;
}
