/*
 * cron.h - cron expressions and time zones, for schedules (worker/
 * schedule.c, `au schedule`). No global state: a zone is read from its
 * TZif file, never through setenv("TZ") and localtime.
 */
#ifndef AU_CRON_H
#define AU_CRON_H

#include <stdint.h>

#include "core.h"

/*
 * A parsed expression: "MIN HOUR DOM MON DOW", or with a leading seconds
 * field "SEC MIN HOUR DOM MON DOW", or a macro (@yearly, @annually,
 * @monthly, @weekly, @daily, @midnight, @hourly). Each field is *, a
 * number, a range a-b, a step (*|a|a-b)/n, or a comma-separated list of
 * these; months and days of the week also by name (jan-dec, sun-sat, any
 * case; 7 is sunday too). As in Vixie cron, when both day fields are
 * restricted (neither starts with '*') a day matching either one matches.
 */
struct au_cron {
	uint64_t sec, min;          /* bit n: second / minute n */
	uint32_t hour;              /* bit n: hour n */
	uint32_t dom;               /* bit n: day n of the month, 1..31 */
	uint16_t mon;               /* bit n: month n, 1..12 */
	uint8_t dow;                /* bit n: day n of the week, 0 = sunday */
	int dom_star, dow_star;     /* the day field started with '*' */
	int hour_star;              /* the hour field is '*' (a wildcard hour: see au_cron_next) */
	int seconds;                /* the expression had a seconds field */
};

/* 0, or -1 with AU_EINVAL quoting expr and naming the field:
 * "invalid cron expression '*\/0 * * * *': step 0 in field 'minute'".
 * An expression no date can match (30 2 30 2 *) is refused too. */
int au_cron_parse(const char *expr, struct au_cron *c, struct au_err *err);

/* A time zone: its transitions from the TZif file, and the POSIX rule of
 * its footer for the times after them. */
struct au_tz;

/* The zone of name ("Europe/Berlin", "UTC"), from $TZDIR or
 * /usr/share/zoneinfo. NULL with err: AU_EINVAL "unknown time zone
 * 'Europe/Berln'" for a name that is no zone there (or is no zone name:
 * "..", a leading '/'), AU_ENOMEM. "UTC" works without the files. */
struct au_tz *au_tz_load(const char *name, struct au_err *err);
void au_tz_free(struct au_tz *tz);
const char *au_tz_name(const struct au_tz *tz);
/* Seconds east of UTC at unix time t (seconds). */
int32_t au_tz_offset(const struct au_tz *tz, int64_t t);

/*
 * The first tick of c strictly after after_ms (unix ms) in zone tz, into
 * *next_ms (a whole second). Local times that do not exist (the hour the
 * clocks spring forward over) fire once, at the instant the clocks
 * jumped; local times that exist twice (the hour repeated when they fall
 * back) fire once, at the first of the two, unless the hour field is '*'
 * (a job of every hour or minute), which then keeps elapsed time and
 * fires in both. -1 when there is none in the next ten years (only for
 * expressions that match a rare date, such as 29 February on a monday).
 */
int au_cron_next(const struct au_cron *c, const struct au_tz *tz, uint64_t after_ms,
		 uint64_t *next_ms);

/* The local time of unix ms t in tz as "YYYY-MM-DDTHH:MM:SS+HH:MM" (RFC
 * 3339) into out. */
#define AU_CRON_TIME_SIZE 32
const char *au_cron_time(const struct au_tz *tz, uint64_t t_ms, char out[AU_CRON_TIME_SIZE]);

#endif
