/* buf.c - growable byte buffer. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"

int au_buf_reserve(struct au_buf *b, size_t extra)
{
	size_t need, cap;
	unsigned char *p;

	if (extra > SIZE_MAX - b->len - 1)
		return -1;
	need = b->len + extra + 1;  /* room for a NUL terminator */
	if (need <= b->cap)
		return 0;
	cap = b->cap ? b->cap : 64;
	while (cap < need)
		cap = cap > SIZE_MAX / 2 ? need : cap * 2;
	p = au_realloc(b->data, cap);
	if (!p)
		return -1;
	b->data = p;
	b->cap = cap;
	return 0;
}

int au_buf_append(struct au_buf *b, const void *p, size_t n)
{
	if (au_buf_reserve(b, n) < 0)
		return -1;
	if (n)
		memcpy(b->data + b->len, p, n);
	b->len += n;
	b->data[b->len] = '\0';
	return 0;
}

int au_buf_puts(struct au_buf *b, const char *s)
{
	return au_buf_append(b, s, strlen(s));
}

int au_buf_printf(struct au_buf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0 || au_buf_reserve(b, (size_t)n) < 0)
		return -1;
	va_start(ap, fmt);
	vsnprintf((char *)b->data + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
	return 0;
}

void au_buf_reset(struct au_buf *b)
{
	b->len = 0;
	if (b->data)
		b->data[0] = '\0';
}

void au_buf_release(struct au_buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}

unsigned char *au_buf_detach(struct au_buf *b, size_t *len)
{
	unsigned char *p;

	if (!b->data && au_buf_reserve(b, 0) < 0)
		return NULL;
	p = b->data;
	if (len)
		*len = b->len;
	b->data = NULL;
	b->len = b->cap = 0;
	return p;
}
