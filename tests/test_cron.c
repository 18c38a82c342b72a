/*
 * test_cron.c - cron expressions (core/cron.c): parsing and its errors,
 * the next tick in UTC and in zones read from /usr/share/zoneinfo, and
 * the two DST days of Europe/Berlin (a job at 02:30 fires once on each),
 * in the years of the zone's table and in those of its footer's rule.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cron.h"
#include "harness.h"

/* "2026-03-29 01:00:00" (UTC) as unix ms */
static uint64_t utc(const char *s)
{
	struct tm tm;

	memset(&tm, 0, sizeof(tm));
	if (!strptime(s, "%Y-%m-%d %H:%M:%S", &tm))
		abort();
	return (uint64_t)timegm(&tm) * 1000;
}

static const char *show(uint64_t ms, char out[32])
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(out, 32, "%Y-%m-%d %H:%M:%S", &tm);
	return out;
}

static struct au_tz *zone(const char *name)
{
	struct au_err err = { 0, "" };
	struct au_tz *tz = au_tz_load(name, &err);

	if (!T_OK(tz, "zone %s loads: %s", name, err.str))
		exit(t_done());
	return tz;
}

/* The next tick of expr after `after` (UTC) in zone is want (UTC). */
static void next_is(const char *expr, const char *tzname, const char *after, const char *want)
{
	struct au_err err = { 0, "" };
	struct au_tz *tz = zone(tzname);
	struct au_cron c;
	uint64_t next = 0;
	char got[32] = "none";

	if (!T_OK(au_cron_parse(expr, &c, &err) == 0, "'%s' parses: %s", expr, err.str))
		goto out;
	if (au_cron_next(&c, tz, utc(after), &next) == 0)
		show(next, got);
	T_OK(!strcmp(got, want), "'%s' in %s after %s: %s (want %s)", expr, tzname, after, got,
	     want);
out:
	au_tz_free(tz);
}

/* Every tick of expr in zone in [from, to) (UTC), as "a b c". */
static void ticks_are(const char *expr, const char *tzname, const char *from, const char *to,
		      const char *want)
{
	struct au_err err = { 0, "" };
	struct au_tz *tz = zone(tzname);
	struct au_cron c;
	uint64_t t = utc(from) - 1000, end = utc(to);
	char got[1024] = "", one[32];
	int n = 0;

	if (au_cron_parse(expr, &c, &err) == 0)
		while (n++ < 40 && au_cron_next(&c, tz, t, &t) == 0 && t < end)
			snprintf(got + strlen(got), sizeof(got) - strlen(got), "%s%s", *got ? ", " : "",
				 show(t, one));
	T_OK(!strcmp(got, want), "'%s' in %s from %s to %s: [%s] (want [%s])", expr, tzname, from,
	     to, got, want);
	au_tz_free(tz);
}

static void refused(const char *expr, const char *want)
{
	struct au_err err = { 0, "" };
	struct au_cron c;

	T_OK(au_cron_parse(expr, &c, &err) == -1 && err.code == AU_EINVAL && !strcmp(err.str, want),
	     "'%s' refused: '%s' (want '%s')", expr, err.str, want);
}

static void parse_cases(void)
{
	struct au_err err = { 0, "" };
	struct au_cron a, b;

	refused("*/0 * * * *", "invalid cron expression '*/0 * * * *': step 0 in field 'minute'");
	refused("61 * * * *",
		"invalid cron expression '61 * * * *': value 61 out of range 0-59 in field 'minute'");
	refused("* * *", "invalid cron expression '* * *': expected 5 fields (minute hour"
		" day-of-month month day-of-week) or 6 (seconds first), got 3");
	refused("* * * * * * *", "invalid cron expression '* * * * * * *': expected 5 fields"
		" (minute hour day-of-month month day-of-week) or 6 (seconds first), got 7");
	refused("", "invalid cron expression '': expected 5 fields (minute hour day-of-month month"
		" day-of-week) or 6 (seconds first), got 0");
	refused("0 0 * foo *",
		"invalid cron expression '0 0 * foo *': unknown name 'foo' in field 'month'");
	refused("0 0 * * monday",
		"invalid cron expression '0 0 * * monday': unknown name 'monday' in field 'day of week'");
	refused("5-3 * * * *",
		"invalid cron expression '5-3 * * * *': range 5-3 is backwards in field 'minute'");
	refused("0 24 * * *",
		"invalid cron expression '0 24 * * *': value 24 out of range 0-23 in field 'hour'");
	refused("0 0 0 * *",
		"invalid cron expression '0 0 0 * *': value 0 out of range 1-31 in field 'day of month'");
	refused("*/ * * * *", "invalid cron expression '*/ * * * *': missing step in field 'minute'");
	refused("1,,2 * * * *", "invalid cron expression '1,,2 * * * *': unexpected ',' in field"
		" 'minute'");
	refused("30 2 30 2 *", "invalid cron expression '30 2 30 2 *': no month has the days of"
		" field 'day of month'");
	refused("@often", "invalid cron expression '@often': expected 5 fields (minute hour"
		" day-of-month month day-of-week) or 6 (seconds first), got 1");
	T_OK(au_cron_parse("30 2 30 2 mon", &a, &err) == 0,
	     "a day of the month no month has is fine when the day of the week may match: %s",
	     err.str);

	T_OK(au_cron_parse("@hourly", &a, &err) == 0 && au_cron_parse("0 * * * *", &b, &err) == 0 &&
	     !memcmp(&a, &b, sizeof(a)), "@hourly is 0 * * * *");
	T_OK(au_cron_parse("@DAILY", &a, &err) == 0 && au_cron_parse("0 0 * * *", &b, &err) == 0 &&
	     !memcmp(&a, &b, sizeof(a)), "@DAILY (any case) is 0 0 * * *");
	T_OK(au_cron_parse("0 0 * * 7", &a, &err) == 0 && au_cron_parse("0 0 * * sun", &b, &err) == 0 &&
	     !memcmp(&a, &b, sizeof(a)), "day of week 7 is sunday, as is sun");
	T_OK(au_cron_parse("1-10/3,20 * * JAN-mar *", &a, &err) == 0 &&
	     a.min == (1ull << 1 | 1ull << 4 | 1ull << 7 | 1ull << 10 | 1ull << 20) &&
	     a.mon == (1u << 1 | 1u << 2 | 1u << 3) && a.sec == 1,
	     "ranges with steps, lists, month names in any case: min %llx mon %x",
	     (unsigned long long)a.min, a.mon);
	T_OK(au_cron_parse("50/5 * * * *", &a, &err) == 0 && a.min == (1ull << 50 | 1ull << 55),
	     "a/n runs from a to the end of the field");
	T_OK(au_cron_parse("*/10 * * * * *", &a, &err) == 0 && a.seconds &&
	     a.sec == (1ull | 1ull << 10 | 1ull << 20 | 1ull << 30 | 1ull << 40 | 1ull << 50) &&
	     a.min == 0xfffffffffffffffull, "six fields: seconds first");
}

static void next_cases(void)
{
	next_is("*/15 * * * *", "UTC", "2026-12-02 10:07:00", "2026-12-02 10:15:00");
	next_is("*/15 * * * *", "UTC", "2026-12-02 10:15:00", "2026-12-02 10:30:00");
	next_is("0 9 * * mon-fri", "UTC", "2026-12-04 10:00:00", "2026-12-07 09:00:00");
	next_is("@yearly", "UTC", "2026-12-02 10:00:00", "2027-01-01 00:00:00");
	next_is("@monthly", "UTC", "2026-12-31 23:59:59", "2027-01-01 00:00:00");
	next_is("@weekly", "UTC", "2026-12-02 00:00:00", "2026-12-06 00:00:00");
	next_is("0 0 29 2 *", "UTC", "2025-03-01 00:00:00", "2028-02-29 00:00:00");
	next_is("0 0 31 * *", "UTC", "2026-04-01 00:00:00", "2026-05-31 00:00:00");
	/* both day fields restricted: either matches (Vixie) */
	next_is("0 0 13 * fri", "UTC", "2026-01-01 00:00:00", "2026-01-02 00:00:00");
	next_is("0 0 13 * fri", "UTC", "2026-01-10 00:00:00", "2026-01-13 00:00:00");
	/* one of them a star: both must */
	next_is("0 0 */2 * fri", "UTC", "2026-01-01 00:00:00", "2026-01-09 00:00:00");
	next_is("*/5 * * * * *", "UTC", "2026-12-02 10:00:03", "2026-12-02 10:00:05");
	next_is("30 2 * * *", "UTC", "2026-12-02 10:00:00", "2026-12-03 02:30:00");
	/* zones: offsets, half hours, the southern hemisphere */
	next_is("0 9 * * *", "Asia/Kolkata", "2026-12-02 00:00:00", "2026-12-02 03:30:00");
	next_is("0 9 * * *", "Europe/Berlin", "2026-07-01 00:00:00", "2026-07-01 07:00:00");
	next_is("0 9 * * *", "Europe/Berlin", "2026-12-02 00:00:00", "2026-12-02 08:00:00");
	next_is("0 9 * * *", "Australia/Sydney", "2026-12-02 00:00:00", "2026-12-02 22:00:00");
	next_is("0 9 * * *", "Australia/Sydney", "2026-07-02 00:00:00", "2026-07-02 23:00:00");
}

static void dst_cases(void)
{
	struct au_tz *tz = zone("Europe/Berlin");

	T_EQ_INT(au_tz_offset(tz, (int64_t)(utc("2026-01-15 12:00:00") / 1000)), 3600,
		 "berlin in january: utc+1");
	T_EQ_INT(au_tz_offset(tz, (int64_t)(utc("2026-07-15 12:00:00") / 1000)), 7200,
		 "berlin in july: utc+2");
	T_EQ_INT(au_tz_offset(tz, (int64_t)(utc("2045-07-15 12:00:00") / 1000)), 7200,
		 "berlin in july 2045 (the footer's rule): utc+2");
	T_EQ_INT(au_tz_offset(tz, (int64_t)(utc("2045-12-15 12:00:00") / 1000)), 3600,
		 "berlin in december 2045: utc+1");
	au_tz_free(tz);

	/* Spring forward, 29 March 2026: 02:00 CET becomes 03:00 CEST (01:00
	 * UTC). 02:30 does not exist that day: once, at 03:00 CEST. */
	ticks_are("30 2 * * *", "Europe/Berlin", "2026-03-28 00:00:00", "2026-03-31 00:00:00",
		  "2026-03-28 01:30:00, 2026-03-29 01:00:00, 2026-03-30 00:30:00");
	/* Fall back, 25 October 2026: 03:00 CEST becomes 02:00 CET (01:00
	 * UTC). 02:30 happens twice: once, at the first. */
	ticks_are("30 2 * * *", "Europe/Berlin", "2026-10-24 00:00:00", "2026-10-27 00:00:00",
		  "2026-10-24 00:30:00, 2026-10-25 00:30:00, 2026-10-26 01:30:00");
	/* every minute of the jumped hour: one fire at the jump, none lost after */
	ticks_are("*/20 2 * * *", "Europe/Berlin", "2026-03-29 00:00:00", "2026-03-29 03:00:00",
		  "2026-03-29 01:00:00");
	ticks_are("*/20 2 * * *", "Europe/Berlin", "2026-10-25 00:00:00", "2026-10-25 03:00:00",
		  "2026-10-25 00:00:00, 2026-10-25 00:20:00, 2026-10-25 00:40:00");
	/* a wildcard hour keeps elapsed time: every hour, the repeated one too */
	ticks_are("0 * * * *", "Europe/Berlin", "2026-10-24 23:30:00", "2026-10-25 03:30:00",
		  "2026-10-25 00:00:00, 2026-10-25 01:00:00, 2026-10-25 02:00:00, 2026-10-25 03:00:00");
	ticks_are("0 * * * *", "Europe/Berlin", "2026-03-28 23:30:00", "2026-03-29 03:30:00",
		  "2026-03-29 00:00:00, 2026-03-29 01:00:00, 2026-03-29 02:00:00, 2026-03-29 03:00:00");
	/* past the table (2037): the footer's rule, last sundays of march and october */
	ticks_are("30 2 * * *", "Europe/Berlin", "2045-03-25 00:00:00", "2045-03-28 00:00:00",
		  "2045-03-25 01:30:00, 2045-03-26 01:00:00, 2045-03-27 00:30:00");
	ticks_are("30 2 * * *", "Europe/Berlin", "2045-10-28 00:00:00", "2045-10-31 00:00:00",
		  "2045-10-28 00:30:00, 2045-10-29 00:30:00, 2045-10-30 01:30:00");
	/* another zone's fall back: New York, 1 November 2026, 01:30 twice */
	ticks_are("30 1 * * *", "America/New_York", "2026-10-31 00:00:00", "2026-11-03 00:00:00",
		  "2026-10-31 05:30:00, 2026-11-01 05:30:00, 2026-11-02 06:30:00");
}

static void zone_errors(void)
{
	static const char *const bad[] = { "Europe/Berln", "../../etc/passwd", "/etc/localtime",
					   "", "Europe/Berlin/", "Not A Zone" };
	struct au_err err;
	char want[128];
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memset(&err, 0, sizeof(err));
		snprintf(want, sizeof(want), "unknown time zone '%s'", bad[i]);
		T_OK(!au_tz_load(bad[i], &err) && err.code == AU_EINVAL && !strcmp(err.str, want),
		     "'%s' refused: '%s'", bad[i], err.str);
	}
	memset(&err, 0, sizeof(err));
	T_OK(!au_tz_load("zone.tab", &err) && !strcmp(err.str, "unknown time zone 'zone.tab'"),
	     "a file of the folder that is no TZif is no zone: '%s'", err.str);
}

static void formatting(void)
{
	struct au_tz *tz = zone("Europe/Berlin");
	char out[AU_CRON_TIME_SIZE];

	T_EQ_STR(au_cron_time(tz, utc("2026-07-01 07:00:00"), out), "2026-07-01T09:00:00+02:00",
		 "local time, rfc 3339");
	au_tz_free(tz);
	tz = zone("America/New_York");
	T_EQ_STR(au_cron_time(tz, utc("2026-12-01 07:00:00"), out), "2026-12-01T02:00:00-05:00",
		 "a negative offset");
	au_tz_free(tz);
}

int main(void)
{
	parse_cases();
	next_cases();
	dst_cases();
	zone_errors();
	formatting();
	return t_done();
}
