/*
 * json.c - JSON, the human mirror of the wire format (CLI arguments, the
 * HTTP API), converted to and from msgpack through jansson.
 */
#include <stdlib.h>

#include <jansson.h>
#include <msgpack.h>

#include "core.h"

static int convert_failed(struct au_err *err, const char *why)
{
	return au_seterr(err, AU_EINVAL, "unable to convert msgpack to json: %s", why);
}

static json_t *from_object(const msgpack_object *o, struct au_err *err)
{
	json_t *j = NULL, *item;
	uint32_t i;

	switch (o->type) {
	case MSGPACK_OBJECT_NIL:
		return json_null();
	case MSGPACK_OBJECT_BOOLEAN:
		return json_boolean(o->via.boolean);
	case MSGPACK_OBJECT_POSITIVE_INTEGER:
		if (o->via.u64 > INT64_MAX) {
			au_seterr(err, AU_EINVAL, "unable to convert msgpack to json: integer %llu out of range",
				  (unsigned long long)o->via.u64);
			return NULL;
		}
		j = json_integer((json_int_t)o->via.u64);
		break;
	case MSGPACK_OBJECT_NEGATIVE_INTEGER:
		j = json_integer(o->via.i64);
		break;
	case MSGPACK_OBJECT_FLOAT32:
	case MSGPACK_OBJECT_FLOAT64:
		/* jansson refuses NaN and infinities, which JSON cannot spell */
		if (!(j = json_real(o->via.f64)))
			convert_failed(err, "float is not finite");
		return j;
	case MSGPACK_OBJECT_STR:
	case MSGPACK_OBJECT_BIN:
		/* json_stringn checks UTF-8: a bin of text reads as a string */
		if (!(j = json_stringn(o->via.str.ptr, o->via.str.size)))
			convert_failed(err, o->type == MSGPACK_OBJECT_STR ? "string is not valid utf-8"
									 : "binary value is not valid utf-8");
		return j;
	case MSGPACK_OBJECT_ARRAY:
		if (!(j = json_array()))
			break;
		for (i = 0; i < o->via.array.size; i++) {
			if (!(item = from_object(&o->via.array.ptr[i], err)))
				goto fail;
			if (json_array_append_new(j, item) < 0)
				goto nomem;
		}
		return j;
	case MSGPACK_OBJECT_MAP:
		if (!(j = json_object()))
			break;
		for (i = 0; i < o->via.map.size; i++) {
			const msgpack_object_kv *kv = &o->via.map.ptr[i];

			if (kv->key.type != MSGPACK_OBJECT_STR) {
				convert_failed(err, "map keys must be strings");
				goto fail;
			}
			if (!(item = from_object(&kv->val, err)))
				goto fail;
			/* fails on OOM and on a key that is not UTF-8 */
			if (json_object_setn_new(j, kv->key.via.str.ptr, kv->key.via.str.size, item) < 0) {
				convert_failed(err, "map key is not valid utf-8");
				goto fail;
			}
		}
		return j;
	default:
		convert_failed(err, "ext values have no json form");
		return NULL;
	}
	if (!j)
		au_seterr(err, AU_ENOMEM, "out of memory");
	return j;
nomem:
	au_seterr(err, AU_ENOMEM, "out of memory");
fail:
	json_decref(j);
	return NULL;
}

int au_msgpack_to_jansson(const unsigned char *buf, size_t len, struct json_t **out,
			  struct au_err *err)
{
	msgpack_zone zone;
	msgpack_object obj;
	size_t off = 0;
	int rc;

	*out = NULL;
	/* the pre-scan bounds what msgpack_unpack will allocate */
	if (au_msgpack_check(buf, len, AU_MAX_DEPTH, err) < 0)
		return -1;
	if (!msgpack_zone_init(&zone, 2048))
		return au_seterr(err, AU_ENOMEM, "out of memory");
	rc = msgpack_unpack((const char *)buf, len, &off, &zone, &obj);
	if (rc != MSGPACK_UNPACK_SUCCESS)
		rc = au_seterr(err, AU_ENOMEM, "out of memory");   /* all else was checked */
	else if (!(*out = from_object(&obj, err)))
		rc = -1;
	else
		rc = 0;
	msgpack_zone_destroy(&zone);
	return rc;
}

static int to_msgpack(const json_t *j, struct au_buf *out, unsigned depth, struct au_err *err)
{
	const char *key;
	size_t i, klen;
	json_t *item;
	int rc;

	if ((json_is_array(j) || json_is_object(j)) && ++depth > AU_MAX_DEPTH)
		return au_seterr(err, AU_EINVAL, "json nested deeper than %d", AU_MAX_DEPTH);
	switch (json_typeof(j)) {
	case JSON_NULL:
		rc = au_mp_nil(out);
		break;
	case JSON_TRUE:
	case JSON_FALSE:
		rc = au_mp_bool(out, json_is_true(j));
		break;
	case JSON_INTEGER:
		rc = au_mp_int(out, json_integer_value(j));
		break;
	case JSON_REAL:
		rc = au_mp_double(out, json_real_value(j));
		break;
	case JSON_STRING:
		rc = au_mp_str(out, json_string_value(j), json_string_length(j));
		break;
	case JSON_ARRAY:
		rc = au_mp_array(out, (uint32_t)json_array_size(j));
		for (i = 0; !rc && i < json_array_size(j); i++)
			if (to_msgpack(json_array_get(j, i), out, depth, err) < 0)
				return -1;
		break;
	case JSON_OBJECT:
		rc = au_mp_map(out, (uint32_t)json_object_size(j));
		/* jansson's iteration API takes a non-const object; it does not
		 * change it */
		json_object_keylen_foreach((json_t *)j, key, klen, item) {
			if (rc)
				break;
			rc = au_mp_str(out, key, klen);
			if (!rc && to_msgpack(item, out, depth, err) < 0)
				return -1;
		}
		break;
	default:
		AU_BUG("unknown json type %d", (int)json_typeof(j));
	}
	return rc ? au_seterr(err, AU_ENOMEM, "out of memory") : 0;
}

int au_jansson_to_msgpack(const struct json_t *j, struct au_buf *out, struct au_err *err)
{
	size_t start = out->len;

	if (to_msgpack(j, out, 0, err) < 0) {
		out->len = start;
		return -1;
	}
	return 0;
}

int au_json_to_msgpack(const char *json, unsigned char **out, size_t *len, struct au_err *err)
{
	struct au_buf b = AU_BUF_INIT;
	json_error_t jerr;
	json_t *j;
	int rc;

	*out = NULL;
	*len = 0;
	j = json_loads(json, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
	if (!j)
		return au_seterr(err, AU_EINVAL, "invalid json at line %d column %d: %s", jerr.line,
				 jerr.column, jerr.text);
	rc = au_jansson_to_msgpack(j, &b, err);
	json_decref(j);
	if (rc < 0) {
		au_buf_release(&b);
		return -1;
	}
	*out = au_buf_detach(&b, len);
	return *out ? 0 : au_seterr(err, AU_ENOMEM, "out of memory");
}

char *au_msgpack_to_json(const unsigned char *buf, size_t len, struct au_err *err)
{
	json_t *j;
	char *s;

	if (au_msgpack_to_jansson(buf, len, &j, err) < 0)
		return NULL;
	s = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
	json_decref(j);
	if (!s)
		au_seterr(err, AU_ENOMEM, "out of memory");
	return s;
}
