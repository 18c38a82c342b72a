/*
 * test_flow.c - the client side of flows (au.h "Flows") on memory://: a
 * diamond submitted in one call (waiting and pending nodes, the flow's
 * status), $ref rewritten to ids, the description stored in kv, unknown
 * deps and cycles refused with the names.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "core.h"
#include "queue.h"

struct au_queue *au_client_queue(struct au_client *cl);

static unsigned char *mp(const char *json, size_t *len)
{
	unsigned char *out = NULL;
	struct au_err err;

	au_json_to_msgpack(json, &out, len, &err);
	return out;
}

int main(void)
{
	struct au_config cfg = { "memory://", "memory://", NULL };
	struct au_client *cl = au_client_new(&cfg);
	struct au_flow *f = au_flow_new("diamond");
	const char *bd[] = { "a" }, *dd[] = { "b", "c" }, *cyc[] = { "c" };
	char fid[AU_ID_SIZE], *json;
	unsigned char *args, *val = NULL;
	size_t len, vlen = 0;
	enum au_status st;
	struct au_err err = { 0, "" };
	struct au_handle *h;

	T_OK(cl && !au_client_err(cl)->code, "client on memory://");
	T_OK(au_flow_add(f, "a", "au.noop", NULL, 0, NULL, NULL, 0) == 0, "add a");
	T_OK(au_flow_add(f, "b", "au.echo", NULL, 0, NULL, bd, 1) == 0, "add b");
	args = mp("{\"x\":{\"$ref\":\"a\"}}", &len);
	T_OK(au_flow_add(f, "c", "au.echo", args, len, NULL, NULL, 0) == 0, "add c, a $ref to a");
	free(args);
	T_OK(au_flow_add(f, "d", "au.echo", NULL, 0, NULL, dd, 2) == 0, "add d");
	T_OK(au_flow_add(f, "d", "au.echo", NULL, 0, NULL, NULL, 0) < 0, "a name twice is refused");
	au_flow_set_ttl(f, 3600);
	T_OK(au_flow_submit(cl, f, fid) == 0, "diamond submitted: %s", au_flow_err(f)->str);
	T_OK(au_id_valid(fid), "flow id is an id");

	h = au_handle_new(cl, au_flow_node_id(f, "a"), NULL);
	T_OK(au_handle_status(h, &st) == 0 && st == AU_PENDING, "a pending (%d)", (int)st);
	au_handle_free(h);
	h = au_handle_new(cl, au_flow_node_id(f, "c"), NULL);
	T_OK(au_handle_status(h, &st) == 0 && st == AU_WAITING, "c waiting, its $ref made it a dep");
	au_handle_free(h);
	h = au_handle_new(cl, au_flow_node_id(f, "d"), NULL);
	T_OK(au_handle_status(h, &st) == 0 && st == AU_WAITING, "d waiting");
	au_handle_free(h);
	T_OK(au_flow_status(cl, fid, &st, &err) == 0 && st == AU_PENDING, "flow pending: %s", err.str);

	T_OK(au_queue_kv_get(au_client_queue(cl), "flow", fid, &val, &vlen) == 0,
	     "description stored in kv ns flow");
	json = val ? au_msgpack_to_json(val, vlen, &err) : NULL;
	T_OK(json && strstr(json, "\"name\":\"diamond\"") && strstr(json, au_flow_node_id(f, "d")) &&
	     strstr(json, "\"ttl_s\":3600") && strstr(json, "\"policy\":\"fail\""),
	     "description holds name, ttl, policy, nodes: %s", json ? json : "");
	T_OK(json && strstr(json, "\"name\":\"c\"") && strstr(json, "\"deps\":[\"a\"]"),
	     "c's deps in the description");
	free(json);
	free(val);
	au_flow_free(f);

	f = au_flow_new("x");
	au_flow_add(f, "a", "au.noop", NULL, 0, NULL, NULL, 0);
	au_flow_add(f, "b", "au.noop", NULL, 0, NULL, cyc, 1);
	au_flow_add(f, "c", "au.noop", NULL, 0, NULL, (const char *[]){ "b" }, 1);
	T_OK(au_flow_submit(cl, f, fid) < 0, "a cycle is refused");
	T_EQ_STR(au_flow_err(f)->str, "flow 'x': cycle b -> c -> b", "cycle named");
	au_flow_free(f);

	f = au_flow_new("y");
	au_flow_add(f, "a", "au.noop", NULL, 0, NULL, (const char *[]){ "nope" }, 1);
	T_OK(au_flow_submit(cl, f, fid) < 0, "an unknown dep is refused");
	T_EQ_STR(au_flow_err(f)->str, "flow 'y': node 'a' depends on unknown node 'nope'",
		 "unknown dep named");
	au_flow_free(f);

	T_OK(au_flow_status(cl, "0123456789abcdef0123456789abcdef", &st, &err) < 0 &&
	     err.code == AU_ENOTFOUND, "unknown flow: %s", err.str);
	au_client_free(cl);
	return t_done();
}
