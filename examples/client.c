/*
 * client.c - enqueues a batch of computations, waits for each and prints
 * its result: the whole life of a client of libau.
 *
 *   cc -o client client.c $(pkg-config --cflags --libs au)
 *   ./client                                    three ch.query computations
 *   ./client example.add '{"a":2,"b":3}' ...    TASK, then one JSON argument each
 *
 * It prints one line per computation, `ARGS -> RESULT`, in the order given,
 * and exits 1 at the first error, with a message saying which. The servers
 * come from AU_QUEUE, AU_STORE and AU_CLICKHOUSE, as for the au command; a
 * worker must serve the queue (`au worker`, or examples/worker.c).
 */
#include <stdio.h>
#include <stdlib.h>

#include <au.h>

#define WAIT_MS 30000   /* for each computation */

/* Without arguments: ClickHouse doubles 1, 2 and 3, a bound parameter each. */
static const char *const queries[] = {
	"{\"sql\":\"SELECT {x:UInt8} * 2 AS y\",\"params\":{\"x\":1}}",
	"{\"sql\":\"SELECT {x:UInt8} * 2 AS y\",\"params\":{\"x\":2}}",
	"{\"sql\":\"SELECT {x:UInt8} * 2 AS y\",\"params\":{\"x\":3}}",
};

int main(int argc, char **argv)
{
	const char *task = "ch.query";
	const char *const *json = queries;
	size_t n = sizeof(queries) / sizeof(queries[0]), i;
	struct au_config cfg = { 0 };   /* NULL fields: from the environment */
	struct au_client *cl = NULL;
	struct au_handle **hs = NULL;
	unsigned char **args = NULL;
	size_t *lens = NULL;
	struct au_err err;
	int rc = 1;

	if (argc == 2) {
		fprintf(stderr, "usage: client [TASK JSON...]\n");
		return 2;
	}
	if (argc > 2) {
		task = argv[1];
		json = (const char *const *)argv + 2;
		n = (size_t)argc - 2;
	}

	/* calloc: every pointer starts NULL, so the cleanup below frees
	 * exactly what was made, wherever we stopped */
	args = calloc(n, sizeof(*args));
	lens = calloc(n, sizeof(*lens));
	hs = calloc(n, sizeof(*hs));
	if (!args || !lens || !hs) {
		fprintf(stderr, "client: out of memory\n");
		goto out;
	}

	/* Arguments travel as msgpack; JSON is their human form. */
	for (i = 0; i < n; i++)
		if (au_json_to_msgpack(json[i], &args[i], &lens[i], &err) < 0) {
			fprintf(stderr, "client: invalid arguments '%s': %s\n", json[i], err.str);
			goto out;
		}

	/* au_client_new returns NULL only when memory runs out; a server that
	 * cannot be reached is in au_client_err. */
	if (!(cl = au_client_new(&cfg))) {
		fprintf(stderr, "client: out of memory\n");
		goto out;
	}
	if (au_client_err(cl)->code) {
		fprintf(stderr, "client: %s\n", au_client_err(cl)->str);
		goto out;
	}

	/* One round trip for the n of them, on the default queue; all or none. */
	if (au_enqueue_batch(cl, task, (const unsigned char *const *)args, lens, n, NULL, hs) < 0) {
		fprintf(stderr, "client: unable to enqueue %zu '%s': %s\n", n, task,
			au_client_err(cl)->str);
		goto out;
	}

	for (i = 0; i < n; i++) {
		struct au_record rec;
		char *text;

		au_record_init(&rec);
		if (au_handle_wait(hs[i], WAIT_MS, &rec) < 0) {
			fprintf(stderr, "client: %s\n", au_handle_err(hs[i])->str);
			au_record_release(&rec);
			goto out;
		}
		if (rec.status != AU_COMPLETED) {
			fprintf(stderr, "client: computation '%s' %s: %s\n", au_handle_id(hs[i]),
				au_status_name(rec.status), rec.error ? rec.error : "no reason given");
			au_record_release(&rec);
			goto out;
		}
		/* the result is one msgpack value; print it as JSON */
		if (!(text = au_msgpack_to_json(rec.result, rec.result_len, &err))) {
			fprintf(stderr, "client: result of '%s': %s\n", au_handle_id(hs[i]), err.str);
			au_record_release(&rec);
			goto out;
		}
		printf("%s -> %s\n", json[i], text);
		free(text);
		au_record_release(&rec);
	}
	rc = 0;

out:
	/* handles before their client; _free(NULL) does nothing */
	for (i = 0; hs && i < n; i++)
		au_handle_free(hs[i]);
	au_client_free(cl);
	for (i = 0; args && i < n; i++)
		free(args[i]);
	free(args);
	free(lens);
	free(hs);
	return rc;
}
