/*
 * registry.h - private side of the task registry (core/registry.c).
 */
#ifndef AU_REGISTRY_H
#define AU_REGISTRY_H

#include "au.h"

/* Finds a task by name; 0 and fills fn/arg, or -1. */
int au_registry_find(const struct au_registry *reg, const char *name, au_task_fn *fn,
		     void **arg);

#endif
