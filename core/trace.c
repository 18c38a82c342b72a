/* trace.c - W3C trace context: the traceparent header of a computation
 * (https://www.w3.org/TR/trace-context/#traceparent-header). */
#include <string.h>

#include "core.h"

static const char hex[] = "0123456789abcdef";

void au_traceparent_new(char out[AU_TRACEPARENT_SIZE])
{
	unsigned char r[24];
	size_t i;
	char *p = out;

	do
		for (i = 0; i < sizeof(r); i += 8) {
			uint64_t v = au_random64();

			memcpy(r + i, &v, 8);
		}
	while (!memcmp(r, "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", 16) ||
	       !memcmp(r + 16, "\0\0\0\0\0\0\0\0", 8));
	*p++ = '0';
	*p++ = '0';
	*p++ = '-';
	for (i = 0; i < 16; i++) {
		*p++ = hex[r[i] >> 4];
		*p++ = hex[r[i] & 15];
	}
	*p++ = '-';
	for (i = 16; i < 24; i++) {
		*p++ = hex[r[i] >> 4];
		*p++ = hex[r[i] & 15];
	}
	memcpy(p, "-01", 4);
}

/* n lowercase hex digits, not all zero */
static int hex_run(const char *s, size_t n)
{
	size_t i;
	int nonzero = 0;

	for (i = 0; i < n; i++) {
		if (!strchr(hex, s[i]) || !s[i])
			return -1;
		nonzero |= s[i] != '0';
	}
	return nonzero ? 0 : -1;
}

int au_traceparent_trace_id(const char *tp, char out[AU_ID_SIZE])
{
	if (!tp || strlen(tp) != AU_TRACEPARENT_SIZE - 1 || tp[0] != '0' || tp[1] != '0' ||
	    tp[2] != '-' || tp[35] != '-' || tp[52] != '-' || hex_run(tp + 3, 32) < 0 ||
	    hex_run(tp + 36, 16) < 0 || !strchr(hex, tp[53]) || !strchr(hex, tp[54]) ||
	    !tp[53] || !tp[54])
		return -1;
	memcpy(out, tp + 3, 32);
	out[32] = '\0';
	return 0;
}
