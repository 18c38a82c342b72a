/*
 * cron.c - cron expressions, and the zones they tick in. A zone is its
 * TZif file (RFC 8536) read into a table of transitions, plus the POSIX
 * TZ rule of the file's footer for the times past the table (slim files
 * have few transitions and rely on it). Local times are reckoned as
 * seconds of a proleptic Gregorian calendar, as if they were UTC; a zone
 * maps them to instants one constant-offset stretch at a time, which is
 * where the two DST cases are decided (au_cron_next in cron.h).
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cron.h"

#define TEN_YEARS (10LL * 366 * 86400)

/* ---- the calendar (Howard Hinnant's days_from_civil) ---- */

static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
	int64_t era;
	unsigned yoe, doy, doe;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = (unsigned)(y - era * 400);
	doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + (int64_t)doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
	int64_t era;
	unsigned doe, yoe, doy, mp;

	z += 719468;
	era = (z >= 0 ? z : z - 146096) / 146097;
	doe = (unsigned)(z - era * 146097);
	yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	mp = (5 * doy + 2) / 153;
	*d = doy - (153 * mp + 2) / 5 + 1;
	*m = mp < 10 ? mp + 3 : mp - 9;
	*y = (int64_t)yoe + era * 400 + (*m <= 2);
}

static int64_t floor_div(int64_t a, int64_t b)
{
	return a / b - (a % b != 0 && (a < 0) != (b < 0));
}

static int leap(int64_t y)
{
	return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static unsigned month_days(int64_t y, unsigned m)
{
	static const unsigned char n[13] = { 0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };

	return m == 2 && leap(y) ? 29 : n[m];
}

/* ---- parsing ---- */

struct field {
	const char *name;
	unsigned lo, hi;
	const char *const *names;   /* names[i] stands for lo + i, or NULL */
};

static const char *const mon_names[] = { "jan", "feb", "mar", "apr", "may", "jun", "jul",
					 "aug", "sep", "oct", "nov", "dec", NULL };
static const char *const dow_names[] = { "sun", "mon", "tue", "wed", "thu", "fri", "sat",
					 NULL };
static const struct field fields[6] = {
	{ "second", 0, 59, NULL },
	{ "minute", 0, 59, NULL },
	{ "hour", 0, 23, NULL },
	{ "day of month", 1, 31, NULL },
	{ "month", 1, 12, mon_names },
	{ "day of week", 0, 7, dow_names },
};

static const struct { const char *name, *expr; } macros[] = {
	{ "@yearly", "0 0 1 1 *" }, { "@annually", "0 0 1 1 *" }, { "@monthly", "0 0 1 * *" },
	{ "@weekly", "0 0 * * 0" }, { "@daily", "0 0 * * *" }, { "@midnight", "0 0 * * *" },
	{ "@hourly", "0 * * * *" },
};

/* A number or a name of f at *p (advanced past it). */
static int value(const char **p, const struct field *f, const char *expr, unsigned *out,
		 struct au_err *err)
{
	const char *s = *p;
	unsigned long v;
	char *end;
	size_t i, n;

	if (isdigit((unsigned char)*s)) {
		errno = 0;
		v = strtoul(s, &end, 10);
		if (errno || v > f->hi || v < f->lo)
			return au_seterr(err, AU_EINVAL, "invalid cron expression '%s': value %.*s out"
					 " of range %u-%u in field '%s'", expr, (int)(end - s), s,
					 f->lo, f->hi, f->name);
		*out = (unsigned)v;
		*p = end;
		return 0;
	}
	for (n = 0; isalpha((unsigned char)s[n]); n++)
		;
	for (i = 0; f->names && n == 3 && f->names[i]; i++)
		if (!strncasecmp(s, f->names[i], 3)) {
			*out = f->lo + (unsigned)i;
			*p = s + 3;
			return 0;
		}
	if (!n)
		return au_seterr(err, AU_EINVAL, "invalid cron expression '%s': unexpected '%c' in"
				 " field '%s'", expr, *s ? *s : ' ', f->name);
	return au_seterr(err, AU_EINVAL, "invalid cron expression '%s': unknown name '%.*s' in"
			 " field '%s'", expr, (int)n, s, f->name);
}

/* One field, text[0..len), into the bits of *bits; *star when it starts with '*'. */
static int field_parse(const char *text, size_t len, const struct field *f, const char *expr,
		       uint64_t *bits, int *star, struct au_err *err)
{
	char buf[128];
	const char *p;
	unsigned a, b, step, v;

	if (len >= sizeof(buf))
		return au_seterr(err, AU_EINVAL, "invalid cron expression '%s': field '%s' too long",
				 expr, f->name);
	memcpy(buf, text, len);
	buf[len] = 0;
	*bits = 0;
	*star = buf[0] == '*';
	p = buf;
	for (;;) {
		if (*p == '*') {
			a = f->lo;
			b = f->hi == 7 ? 6 : f->hi;
			p++;
		} else {
			if (value(&p, f, expr, &a, err) < 0)
				return -1;
			b = a;
			if (*p == '-') {
				p++;
				if (value(&p, f, expr, &b, err) < 0)
					return -1;
				if (b < a)
					return au_seterr(err, AU_EINVAL, "invalid cron expression '%s':"
							 " range %u-%u is backwards in field '%s'",
							 expr, a, b, f->name);
			} else if (*p == '/') {
				b = f->hi == 7 ? 6 : f->hi;   /* a/n: from a to the end */
			}
		}
		step = 1;
		if (*p == '/') {
			unsigned long s;
			char *end;

			p++;
			errno = 0;
			s = isdigit((unsigned char)*p) ? strtoul(p, &end, 10) : (end = (char *)p, 0);
			if (end == p)
				return au_seterr(err, AU_EINVAL, "invalid cron expression '%s': missing"
						 " step in field '%s'", expr, f->name);
			if (!s)
				return au_seterr(err, AU_EINVAL, "invalid cron expression '%s': step 0"
						 " in field '%s'", expr, f->name);
			if (errno || s > f->hi)
				return au_seterr(err, AU_EINVAL, "invalid cron expression '%s': step"
						 " %.*s too large in field '%s'", expr,
						 (int)(end - p), p, f->name);
			step = (unsigned)s;
			p = end;
		}
		for (v = a; v <= b; v += step)
			*bits |= 1ull << (f->hi == 7 && v == 7 ? 0 : v);
		if (*p == ',') {
			p++;
			continue;
		}
		if (*p)
			return au_seterr(err, AU_EINVAL, "invalid cron expression '%s': unexpected"
					 " '%c' in field '%s'", expr, *p, f->name);
		return 0;
	}
}

int au_cron_parse(const char *expr, struct au_cron *c, struct au_err *err)
{
	const char *text = expr, *start[6], *p;
	size_t len[6], n = 0, i, first;
	uint64_t bits[6];
	int star[6];
	unsigned m;

	memset(c, 0, sizeof(*c));
	if (!expr)
		expr = text = "";
	for (i = 0; i < AU_ARRAY_SIZE(macros); i++)
		if (!strcasecmp(expr, macros[i].name))
			text = macros[i].expr;
	for (p = text; *p;) {
		while (*p == ' ' || *p == '\t')
			p++;
		if (!*p)
			break;
		if (n < 6) {
			start[n] = p;
			len[n] = strcspn(p, " \t");
		}
		p += strcspn(p, " \t");
		n++;
	}
	if (n != 5 && n != 6)
		return au_seterr(err, AU_EINVAL, "invalid cron expression '%s': expected 5 fields"
				 " (minute hour day-of-month month day-of-week) or 6 (seconds"
				 " first), got %zu", expr, n);
	first = n == 5 ? 1 : 0;
	bits[0] = 1;   /* second 0 when there is no seconds field */
	star[0] = 0;
	for (i = 0; i < n; i++)
		if (field_parse(start[i], len[i], &fields[first + i], expr, &bits[first + i],
				&star[first + i], err) < 0)
			return -1;
	c->seconds = n == 6;
	c->sec = bits[0];
	c->min = bits[1];
	c->hour = (uint32_t)bits[2];
	c->dom = (uint32_t)bits[3];
	c->mon = (uint16_t)bits[4];
	c->dow = (uint8_t)bits[5];
	c->dom_star = star[3];
	c->dow_star = star[5];
	c->hour_star = len[2 - first] == 1 && start[2 - first][0] == '*';
	/* A restricted day of the month in none of the months (30 2 30 2 *)
	 * never matches, unless the day of the week may match instead. */
	if (c->dom_star || !c->dow_star)
		return 0;
	for (m = 1; m <= 12; m++) {
		if (!(c->mon & (1u << m)))
			continue;
		for (i = 1; i <= month_days(2000, m); i++)
			if (c->dom & (1u << i))
				return 0;
	}
	return au_seterr(err, AU_EINVAL, "invalid cron expression '%s': no month has the days"
			 " of field 'day of month'", expr);
}

/* ---- time zones ---- */

/* When a POSIX rule switches: Jn, n or Mm.w.d, at secs after local midnight. */
struct rule_date {
	char kind;                  /* 'J', 'D' (plain n), 'M' */
	int n, m, w, d;
	int32_t secs;
};

struct au_tz {
	char *name;
	size_t n;
	int64_t *at;                /* transitions, ascending */
	int32_t *off;               /* the offset from each transition on */
	int32_t off0;               /* before the first */
	int rule;                   /* 1: the footer's rule governs after at[n - 1] */
	int32_t std_off, dst_off;   /* seconds east of UTC */
	int has_dst;
	struct rule_date start, end;
};

const char *au_tz_name(const struct au_tz *tz)
{
	return tz->name;
}

void au_tz_free(struct au_tz *tz)
{
	if (!tz)
		return;
	free(tz->name);
	free(tz->at);
	free(tz->off);
	free(tz);
}

static int64_t be(const unsigned char *p, int bytes)
{
	uint64_t v = 0;
	int i;

	for (i = 0; i < bytes; i++)
		v = v << 8 | p[i];
	if (bytes == 4)
		return (int32_t)(uint32_t)v;
	return (int64_t)v;
}

/* [+-]hh[:mm[:ss]] */
static int posix_time(const char **p, int32_t *out)
{
	const char *s = *p;
	int sign = 1, part = 0;
	long v[3] = { 0, 0, 0 };

	if (*s == '+' || *s == '-')
		sign = *s++ == '-' ? -1 : 1;
	if (!isdigit((unsigned char)*s))
		return -1;
	for (;;) {
		if (!isdigit((unsigned char)*s))
			return -1;
		v[part] = strtol(s, (char **)&s, 10);
		if (part == 2 || *s != ':')
			break;
		s++;
		part++;
	}
	if (v[0] > 167 || v[1] > 59 || v[2] > 59)
		return -1;
	*out = (int32_t)(sign * (v[0] * 3600 + v[1] * 60 + v[2]));
	*p = s;
	return 0;
}

static int posix_name(const char **p)
{
	const char *s = *p;

	if (*s == '<') {
		while (*s && *s != '>')
			s++;
		if (*s != '>')
			return -1;
		s++;
	} else {
		while (isalpha((unsigned char)*s))
			s++;
	}
	if (s - *p < 3)
		return -1;
	*p = s;
	return 0;
}

static int posix_date(const char **p, struct rule_date *r)
{
	const char *s = *p;

	r->secs = 7200;
	if (*s == 'M') {
		r->kind = 'M';
		r->m = (int)strtol(s + 1, (char **)&s, 10);
		if (*s++ != '.')
			return -1;
		r->w = (int)strtol(s, (char **)&s, 10);
		if (*s++ != '.')
			return -1;
		r->d = (int)strtol(s, (char **)&s, 10);
		if (r->m < 1 || r->m > 12 || r->w < 1 || r->w > 5 || r->d < 0 || r->d > 6)
			return -1;
	} else if (*s == 'J') {
		r->kind = 'J';
		r->n = (int)strtol(s + 1, (char **)&s, 10);
		if (r->n < 1 || r->n > 365)
			return -1;
	} else if (isdigit((unsigned char)*s)) {
		r->kind = 'D';
		r->n = (int)strtol(s, (char **)&s, 10);
		if (r->n > 365)
			return -1;
	} else {
		return -1;
	}
	if (*s == '/' && (s++, posix_time(&s, &r->secs) < 0))
		return -1;
	*p = s;
	return 0;
}

/* "CET-1CEST,M3.5.0,M10.5.0/3" */
static int posix_rule(struct au_tz *tz, const char *s)
{
	int32_t off;

	if (posix_name(&s) < 0 || posix_time(&s, &off) < 0)
		return -1;
	tz->std_off = -off;
	tz->rule = 1;
	if (!*s)
		return 0;
	if (posix_name(&s) < 0)
		return -1;
	tz->dst_off = tz->std_off + 3600;
	if (*s != ',' && *s && posix_time(&s, &off) == 0)
		tz->dst_off = -off;
	if (*s++ != ',' || posix_date(&s, &tz->start) < 0 || *s++ != ',' ||
	    posix_date(&s, &tz->end) < 0 || *s)
		return -1;
	tz->has_dst = 1;
	return 0;
}

/* The local seconds (since the epoch, as if UTC) rule r falls on in year y. */
static int64_t rule_local(const struct rule_date *r, int64_t y)
{
	int64_t day;

	if (r->kind == 'J') {
		day = days_from_civil(y, 1, 1) + r->n - 1;
		if (leap(y) && r->n >= 60)
			day++;
	} else if (r->kind == 'D') {
		day = days_from_civil(y, 1, 1) + r->n;
	} else {
		int64_t first = days_from_civil(y, (unsigned)r->m, 1);
		int wd = (int)((first % 7 + 11) % 7);   /* 1970-01-01 was a thursday */
		int64_t d = first + (r->d - wd + 7) % 7 + 7 * (r->w - 1);

		while (d >= first + month_days(y, (unsigned)r->m))
			d -= 7;
		day = d;
	}
	return day * 86400 + r->secs;
}

static int tz_parse(struct au_tz *tz, const unsigned char *d, size_t len)
{
	size_t isut, isstd, leapc, timec, typec, charc, body, i, off = 0;
	int v2, tb = 4;
	const unsigned char *p, *types, *idx;

	if (len < 44 || memcmp(d, "TZif", 4))
		return -1;
	v2 = d[4] >= '2';
	for (;;) {
		p = d + off;
		if (len - off < 44 || memcmp(p, "TZif", 4))
			return -1;
		isut = (size_t)be(p + 20, 4);
		isstd = (size_t)be(p + 24, 4);
		leapc = (size_t)be(p + 28, 4);
		timec = (size_t)be(p + 32, 4);
		typec = (size_t)be(p + 36, 4);
		charc = (size_t)be(p + 40, 4);
		if (timec > 100000 || typec > 256 || charc > 100000 || leapc > 100000 || !typec)
			return -1;
		body = timec * (size_t)tb + timec + typec * 6 + charc + leapc * (size_t)(tb + 4) +
		       isstd + isut;
		if (len - off - 44 < body)
			return -1;
		if (v2 && tb == 4) {   /* the 64-bit data follows the 32-bit */
			off += 44 + body;
			tb = 8;
			continue;
		}
		break;
	}
	p = d + off + 44;
	types = p + timec * (size_t)tb + timec;
	idx = p + timec * (size_t)tb;
	tz->n = timec;
	tz->at = calloc(timec ? timec : 1, sizeof(*tz->at));
	tz->off = calloc(timec ? timec : 1, sizeof(*tz->off));
	if (!tz->at || !tz->off)
		return -2;
	for (i = 0; i < timec; i++) {
		if (idx[i] >= typec)
			return -1;
		tz->at[i] = be(p + i * (size_t)tb, tb);
		tz->off[i] = (int32_t)be(types + idx[i] * 6, 4);
		if (i && tz->at[i] <= tz->at[i - 1])
			return -1;
	}
	tz->off0 = (int32_t)be(types, 4);
	tz->std_off = timec ? tz->off[timec - 1] : tz->off0;
	if (v2) {   /* the footer: "\n<POSIX TZ>\n" */
		const unsigned char *f = d + off + 44 + body, *e = d + len;
		char rule[128];
		size_t n;

		if (f < e && *f == '\n') {
			f++;
			for (n = 0; f + n < e && f[n] != '\n'; n++)
				;
			if (n && n < sizeof(rule)) {
				memcpy(rule, f, n);
				rule[n] = 0;
				if (posix_rule(tz, rule) < 0) {   /* not understood: the table only */
					tz->rule = tz->has_dst = 0;
					tz->std_off = timec ? tz->off[timec - 1] : tz->off0;
				}
			}
		}
	}
	return 0;
}

static int tz_name_ok(const char *name)
{
	const char *p;

	if (!name || !*name || *name == '/' || strlen(name) > 200 || strstr(name, ".."))
		return 0;
	for (p = name; *p; p++)
		if (!isalnum((unsigned char)*p) && !strchr("/_+-.", *p))
			return 0;
	return 1;
}

struct au_tz *au_tz_load(const char *name, struct au_err *err)
{
	const char *dir = getenv("TZDIR");
	struct au_tz *tz;
	unsigned char *data = NULL;
	size_t len = 0, cap = 0;
	char *path;
	FILE *f;
	int rc;

	if (!tz_name_ok(name)) {
		au_seterr(err, AU_EINVAL, "unknown time zone '%s'", name ? name : "");
		return NULL;
	}
	tz = calloc(1, sizeof(*tz));
	if (!tz || !(tz->name = au_strdup(name))) {
		free(tz);
		au_seterr(err, AU_ENOMEM, "out of memory");
		return NULL;
	}
	path = au_asprintf("%s/%s", dir && *dir ? dir : "/usr/share/zoneinfo", name);
	f = path ? fopen(path, "rb") : NULL;
	free(path);
	if (!f) {
		if (!strcmp(name, "UTC") || !strcmp(name, "Etc/UTC")) {
			tz->rule = 1;   /* no tzdata: UTC needs none */
			return tz;
		}
		au_tz_free(tz);
		au_seterr(err, AU_EINVAL, "unknown time zone '%s'", name);
		return NULL;
	}
	for (;;) {
		size_t got;

		if (len == cap) {
			unsigned char *n = cap < (1u << 20) ? realloc(data, cap ? 2 * cap : 4096) : NULL;

			if (!n)
				break;
			data = n;
			cap = cap ? 2 * cap : 4096;
		}
		got = fread(data + len, 1, cap - len, f);
		len += got;
		if (!got)
			break;
	}
	fclose(f);
	rc = data ? tz_parse(tz, data, len) : -2;
	free(data);
	if (rc < 0) {
		au_tz_free(tz);
		if (rc == -2)
			au_seterr(err, AU_ENOMEM, "out of memory");
		else
			au_seterr(err, AU_EINVAL, "unknown time zone '%s'", name);
		return NULL;
	}
	return tz;
}

/* A stretch of constant offset: [start, end) in unix seconds, its offset
 * and the offset of the stretch before it. */
struct seg {
	int64_t start, end;
	int32_t off, prev_off;
};

static void rule_seg(const struct au_tz *tz, int64_t t, struct seg *s)
{
	int64_t y, at[6];
	int32_t to[6];
	unsigned m, d;
	int i, j, n = 0;

	if (!tz->has_dst) {   /* a fixed offset after the table */
		if (!tz->n)
			s->off = s->prev_off = tz->std_off;
		return;
	}
	civil_from_days(floor_div(t, 86400), &y, &m, &d);
	for (i = -1; i <= 1; i++) {
		at[n] = rule_local(&tz->start, y + i) - tz->std_off;
		to[n++] = tz->dst_off;
		at[n] = rule_local(&tz->end, y + i) - tz->dst_off;
		to[n++] = tz->std_off;
	}
	for (i = 1; i < n; i++)   /* insertion sort of six */
		for (j = i; j > 0 && at[j] < at[j - 1]; j--) {
			int64_t ta = at[j];
			int32_t tt = to[j];

			at[j] = at[j - 1];
			to[j] = to[j - 1];
			at[j - 1] = ta;
			to[j - 1] = tt;
		}
	for (i = n - 1; i > 0 && at[i] > t; i--)
		;
	/* at[0] is in the year before t's: at[i] <= t */
	if (at[i] > s->start) {
		s->start = at[i];
		s->off = to[i];
		s->prev_off = i ? to[i - 1] : (to[i] == tz->dst_off ? tz->std_off : tz->dst_off);
	}
	if (i + 1 < n)
		s->end = at[i + 1];
}

static void tz_seg(const struct au_tz *tz, int64_t t, struct seg *s)
{
	size_t lo = 0, hi = tz->n;

	while (lo < hi) {   /* the first transition after t */
		size_t mid = lo + (hi - lo) / 2;

		if (tz->at[mid] <= t)
			lo = mid + 1;
		else
			hi = mid;
	}
	s->start = INT64_MIN;
	s->end = INT64_MAX;
	if (lo == 0) {
		s->off = s->prev_off = tz->off0;
		if (tz->n)
			s->end = tz->at[0];
		else if (tz->rule)
			rule_seg(tz, t, s);
		return;
	}
	s->start = tz->at[lo - 1];
	s->off = tz->off[lo - 1];
	s->prev_off = lo >= 2 ? tz->off[lo - 2] : tz->off0;
	if (lo < tz->n)
		s->end = tz->at[lo];
	else if (tz->rule)
		rule_seg(tz, t, s);
}

int32_t au_tz_offset(const struct au_tz *tz, int64_t t)
{
	struct seg s;

	tz_seg(tz, t, &s);
	return s.off;
}

/* ---- the next tick ---- */

static int day_ok(const struct au_cron *c, int64_t days, unsigned d)
{
	int wd = (int)((days % 7 + 11) % 7);
	int dom = !!(c->dom & (1u << d)), dow = !!(c->dow & (1u << wd));

	if (c->dom_star || c->dow_star)
		return dom && dow;
	return dom || dow;
}

/* The first local time in [from, limit) that c matches, into *out: 0,
 * or 1 when none. */
static int next_local(const struct au_cron *c, int64_t from, int64_t limit, int64_t *out)
{
	int64_t t = from;

	while (t < limit) {
		int64_t days = floor_div(t, 86400), y;
		int64_t sod = t - days * 86400;
		unsigned m, d, h = (unsigned)(sod / 3600), mi = (unsigned)(sod / 60 % 60),
			 s = (unsigned)(sod % 60);

		civil_from_days(days, &y, &m, &d);
		if (!(c->mon & (1u << m))) {
			t = (m == 12 ? days_from_civil(y + 1, 1, 1) : days_from_civil(y, m + 1, 1)) *
			    86400;
			continue;
		}
		if (!day_ok(c, days, d)) {
			t = (days + 1) * 86400;
			continue;
		}
		if (!(c->hour & (1u << h))) {
			t = days * 86400 + (int64_t)(h + 1) * 3600;
			continue;
		}
		if (!(c->min & (1ull << mi))) {
			t = days * 86400 + (int64_t)h * 3600 + (int64_t)(mi + 1) * 60;
			continue;
		}
		if (!(c->sec & (1ull << s))) {
			t++;
			continue;
		}
		*out = t;
		return 0;
	}
	return 1;
}

int au_cron_next(const struct au_cron *c, const struct au_tz *tz, uint64_t after_ms,
		 uint64_t *next_ms)
{
	int64_t t = (int64_t)(after_ms / 1000) + 1, horizon = t + TEN_YEARS, l;
	struct seg s, n;

	while (t < horizon) {
		tz_seg(tz, t, &s);
		if (next_local(c, t + s.off, s.end == INT64_MAX ? horizon + s.off : s.end + s.off,
			       &l) == 0) {
			/* The clocks fell back at s.start: the local times up to
			 * s.start + prev_off were lived once already, and fired
			 * then, unless the job keeps elapsed time. */
			if (s.prev_off > s.off && l < s.start + s.prev_off && !c->hour_star) {
				t = s.start + s.prev_off - s.off;
				continue;
			}
			*next_ms = (uint64_t)(l - s.off) * 1000;
			return 0;
		}
		if (s.end == INT64_MAX)
			break;
		/* The clocks spring forward at s.end: the local times they
		 * jump over fire once, at the jump. */
		tz_seg(tz, s.end, &n);
		if (n.off > s.off && next_local(c, s.end + s.off, s.end + n.off, &l) == 0) {
			*next_ms = (uint64_t)s.end * 1000;
			return 0;
		}
		t = s.end;
	}
	return -1;
}

const char *au_cron_time(const struct au_tz *tz, uint64_t t_ms, char out[AU_CRON_TIME_SIZE])
{
	int64_t t = (int64_t)(t_ms / 1000), l, days, y, sod;
	int32_t off = au_tz_offset(tz, t), a = off < 0 ? -off : off;
	unsigned m, d;

	l = t + off;
	days = floor_div(l, 86400);
	sod = l - days * 86400;
	civil_from_days(days, &y, &m, &d);
	snprintf(out, AU_CRON_TIME_SIZE, "%04lld-%02u-%02uT%02d:%02d:%02d%c%02d:%02d", (long long)y,
		 m, d, (int)(sod / 3600), (int)(sod / 60 % 60), (int)(sod % 60), off < 0 ? '-' : '+',
		 (int)(a / 3600), (int)(a / 60 % 60));
	return out;
}
