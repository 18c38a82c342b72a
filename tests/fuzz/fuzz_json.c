/*
 * fuzz_json.c - au_json_to_msgpack, the path `au enqueue` takes with its
 * JSON arguments, on any text. Its msgpack must be well-formed and no
 * deeper than the codec allows, and JSON -> msgpack -> JSON reaches a fixed
 * point after one round: the rendering of a value reads back as a value
 * with the same rendering (the JSON mirror's lossy cases, such as integers
 * above INT64_MAX becoming strings, happen in the first round only).
 */
#include "core.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	unsigned char *mp = NULL, *mp2 = NULL, *mp3 = NULL;
	size_t len, len2, len3;
	char *text, *json = NULL, *json2 = NULL;
	struct au_err err;

	/* the CLI reads a C string: up to the first NUL */
	text = malloc(size + 1);
	if (!text)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	if (au_json_to_msgpack(text, &mp, &len, &err) < 0) {
		FUZZ_ASSERT(err.code == AU_EINVAL || err.code == AU_ENOMEM,
			    "failed with code %d: %s", err.code, err.str);
		FUZZ_ASSERT(!mp, "failed but gave bytes");
		free(text);
		return 0;
	}
	/* the args of a computation sit one level below its map */
	FUZZ_ASSERT(au_msgpack_check(mp, len, AU_MAX_DEPTH, &err) == 0,
		    "gave msgpack the codec refuses: %s", err.str);
	json = au_msgpack_to_json(mp, len, &err);
	FUZZ_ASSERT(json, "its msgpack has no JSON rendering: %s", err.str);
	FUZZ_ASSERT(au_json_to_msgpack(json, &mp2, &len2, &err) == 0,
		    "rendering '%.200s' does not read back: %s", json, err.str);
	json2 = au_msgpack_to_json(mp2, len2, &err);
	FUZZ_ASSERT(json2, "second rendering failed: %s", err.str);
	FUZZ_ASSERT(!strcmp(json, json2), "'%.200s' rendered again as '%.200s'", json, json2);
	FUZZ_ASSERT(au_json_to_msgpack(json2, &mp3, &len3, &err) == 0, "third read: %s", err.str);
	FUZZ_ASSERT(fuzz_mem_eq(mp2, len2, mp3, len3), "one rendering gave two encodings");
	free(mp);
	free(mp2);
	free(mp3);
	free(json);
	free(json2);
	free(text);
	return 0;
}
