/*
 * test_chop.c - au_ch_drop_flow_tables against the real ClickHouse: a
 * flow's t_ and f_ tables go, a look-alike (LIKE's _ is any character)
 * and p_ tables stay, a bad flow id is refused before anything is sent.
 * ch.op itself is tested through a worker in tests/t_chop.sh.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ch_ops.h"
#include "clickhouse.h"
#include "harness.h"

static struct au_clickhouse *ch;

static int exec(const char *sql)
{
	struct au_ch_query q = { .sql = sql };
	struct au_ch_response r;
	int rc = au_ch_query_sync(ch, &q, &r);

	au_ch_response_release(&r);
	return rc;
}

static long count(const char *sql)
{
	struct au_ch_query q = { .sql = sql };
	struct au_ch_response r;
	long n = -1;

	if (au_ch_query_sync(ch, &q, &r) == 0)
		n = strtol((char *)r.body.data, NULL, 10);
	au_ch_response_release(&r);
	return n;
}

int main(void)
{
	static const char flow[] = "0123456789abcdef0123456789abcdef";
	static const char *const make[] = {
		"t_0123456789abcdef0123456789abcdef_0000abcd",
		"f_0123456789abcdef0123456789abcdef_named",
		"t_0123456789abcdef0123456789abcdefX_other",   /* LIKE's _ would take it */
		"tX0123456789abcdef0123456789abcdef_other",
		"p_0123456789abcdef0123456789abcdef_kept",
	};
	struct au_err err = { 0, "" };
	char sql[200];
	size_t i;

	ch = au_ch_new(t_env("AU_TEST_CH"), &err);
	if (!T_OK(ch != NULL, "au_ch_new: %s", err.str))
		return t_done();
	for (i = 0; i < sizeof(make) / sizeof(make[0]); i++) {
		snprintf(sql, sizeof(sql), "CREATE TABLE IF NOT EXISTS %s (x UInt8) ENGINE = Memory", make[i]);
		T_OK(exec(sql) == 0, "created %s", make[i]);
	}
	T_OK(au_ch_drop_flow_tables(ch, flow, &err) == 0, "dropped: %s", err.str);
	T_OK(count("SELECT count() FROM system.tables WHERE database = currentDatabase() AND "
		   "name IN ('t_0123456789abcdef0123456789abcdef_0000abcd', "
		   "'f_0123456789abcdef0123456789abcdef_named')") == 0, "the flow's t_ and f_ tables are gone");
	T_OK(count("SELECT count() FROM system.tables WHERE database = currentDatabase() AND "
		   "name IN ('t_0123456789abcdef0123456789abcdefX_other', "
		   "'tX0123456789abcdef0123456789abcdef_other', "
		   "'p_0123456789abcdef0123456789abcdef_kept')") == 3, "look-alikes and p_ tables stay");
	T_OK(au_ch_drop_flow_tables(ch, flow, &err) == 0, "none left: still 0");
	T_OK(au_ch_drop_flow_tables(ch, "0123' OR 1=1 --", &err) < 0 && err.code == AU_EINVAL &&
	     !strcmp(err.str, "flow id '0123' OR 1=1 --' is not 32 lowercase hex digits"),
	     "a bad flow id refused: %s", err.str);
	T_OK(au_ch_drop_flow_tables(ch, "0123456789ABCDEF0123456789ABCDEF", &err) < 0,
	     "upper case refused");
	for (i = 2; i < sizeof(make) / sizeof(make[0]); i++) {
		snprintf(sql, sizeof(sql), "DROP TABLE IF EXISTS %s", make[i]);
		exec(sql);
	}
	au_ch_free(ch);
	return t_done();
}
