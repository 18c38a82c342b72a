/*
 * alloc.c - the allocator seam. Every allocation of core/ and of the memory
 * store goes through au_malloc/au_calloc/au_realloc, which call libc unless
 * a test installed its own functions, so a test can make the Nth allocation
 * fail and check that nothing leaks and every error says "out of memory"
 * (as beanstalkd's falloc lets its tests do). Memory so allocated is freed
 * with free().
 */
#include <stdlib.h>

#include "core.h"

static const struct au_allocator libc_allocator = { malloc, calloc, realloc };
static const struct au_allocator *allocator = &libc_allocator;

void au_set_allocator(const struct au_allocator *a)
{
	allocator = a ? a : &libc_allocator;
}

void *au_malloc(size_t n)
{
	return allocator->malloc(n);
}

void *au_calloc(size_t n, size_t size)
{
	return allocator->calloc(n, size);
}

void *au_realloc(void *p, size_t n)
{
	return allocator->realloc(p, n);
}
