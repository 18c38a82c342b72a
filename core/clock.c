/* clock.c - the wall clock and the monotonic clock. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core.h"

uint64_t au_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

uint64_t au_mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

int au_duration_parse(const char *s, uint64_t *ms, struct au_err *err)
{
	static const struct { const char *unit; uint64_t ms; } units[] = {
		{ "ms", 1 }, { "s", 1000 }, { "", 1000 }, { "m", 60000 }, { "h", 3600000 },
		{ "d", 86400000 },
	};
	unsigned long long v;
	char *end;
	size_t i;

	errno = 0;
	v = s && *s >= '0' && *s <= '9' ? strtoull(s, &end, 10) : 0;
	if (s && *s >= '0' && *s <= '9' && !errno)
		for (i = 0; i < AU_ARRAY_SIZE(units); i++)
			if (!strcmp(end, units[i].unit) && v <= UINT64_MAX / units[i].ms) {
				*ms = v * units[i].ms;
				return 0;
			}
	return au_seterr(err, AU_EINVAL, "invalid duration '%s' (expected a number and a unit:"
			 " 30s, 10m, 6h, 7d)", s ? s : "");
}
