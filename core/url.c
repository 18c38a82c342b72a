/* url.c - the URLs that configure every part: scheme://user:pass@host:port/path?query */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = tolower(c);
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* Decodes %XX escapes of s[0..n) into a new string; NULL on OOM or a bad
 * escape (*bad set). */
static char *decode(const char *s, size_t n, int *bad)
{
	char *out = au_malloc(n + 1), *o = out;
	size_t i;

	if (!out)
		return NULL;
	for (i = 0; i < n; i++) {
		if (s[i] == '%') {
			int h, l;

			if (i + 2 >= n) {
				*bad = 1;
				free(out);
				return NULL;
			}
			h = hexval((unsigned char)s[i + 1]);
			l = hexval((unsigned char)s[i + 2]);
			if (h < 0 || l < 0 || (h == 0 && l == 0)) {
				*bad = 1;
				free(out);
				return NULL;
			}
			*o++ = (char)(h * 16 + l);
			i += 2;
		} else {
			*o++ = s[i];
		}
	}
	*o = '\0';
	return out;
}

void au_url_release(struct au_url *url)
{
	free(url->scheme);
	free(url->user);
	free(url->password);
	free(url->host);
	free(url->path);
	free(url->query);
	free(url->text);
	memset(url, 0, sizeof(*url));
}

/* A query parameter that holds a secret: libpq takes password= and
 * sslpassword= there as well as in the authority. */
static int secret_key(const char *key, size_t n)
{
	return n >= 8 && !strncmp(key + n - 8, "password", 8);
}

/* text with the values of its secret query parameters replaced by "***";
 * takes text. */
static char *mask_query(char *text)
{
	struct au_buf b = AU_BUF_INIT;
	char *q, *p, *out;
	int rc;

	if (!text || !(q = strchr(text, '?')))
		return text;
	rc = au_buf_append(&b, text, (size_t)(q + 1 - text));
	for (p = q + 1; *p && rc == 0;) {
		size_t n = strcspn(p, "&#"), k = strcspn(p, "=&#");

		if (k < n && secret_key(p, k))
			rc = au_buf_printf(&b, "%.*s=***", (int)k, p);
		else
			rc = au_buf_append(&b, p, n);
		p += n;
		if (*p == '&' && rc == 0)
			rc = au_buf_append(&b, p++, 1);
		else if (*p == '#')
			break;
	}
	if (rc == 0 && *p)
		rc = au_buf_puts(&b, p);
	out = rc == 0 ? (char *)au_buf_detach(&b, NULL) : NULL;
	au_buf_release(&b);
	free(text);
	return out;
}

/* The URL with its password replaced by "***", for messages. */
static char *masked(const char *text, const char *at, const char *colon)
{
	if (!at || !colon || colon > at)
		return mask_query(au_strdup(text));
	return mask_query(au_asprintf("%.*s***%s", (int)(colon + 1 - text), text, at));
}

/* The '@' that ends the credentials of text (the last one before the
 * path) and the ':' before the password, or NULL. */
static void credentials(const char *text, const char **at, const char **colon)
{
	const char *p = strstr(text, "://"), *auth, *auth_end;

	*at = *colon = NULL;
	if (!p)
		return;
	auth = p + 3;
	auth_end = auth + strcspn(auth, "/?#");
	for (const char *s = auth; s < auth_end; s++)
		if (*s == '@')
			*at = s;
	if (*at)
		*colon = memchr(auth, ':', (size_t)(*at - auth));
}

char *au_url_masked(const char *text)
{
	const char *at, *colon;

	if (!text)
		return au_strdup("");
	credentials(text, &at, &colon);
	return masked(text, at, colon);
}

int au_url_parse(const char *text, struct au_url *url, struct au_err *err)
{
	const char *p, *auth, *auth_end, *at, *colon, *hp, *q;
	int bad = 0;

	memset(url, 0, sizeof(*url));
	if (!text || !*text)
		return au_seterr(err, AU_EINVAL, "empty url");
	p = strstr(text, "://");
	if (!p || p == text)
		return au_seterr(err, AU_EINVAL, "invalid url '%s': missing scheme", text);
	for (q = text; q < p; q++)
		if (!isalnum((unsigned char)*q) && *q != '+' && *q != '-' && *q != '.')
			return au_seterr(err, AU_EINVAL, "invalid url '%s': bad scheme", text);
	url->scheme = au_strndup(text, (size_t)(p - text));
	if (!url->scheme)
		goto oom;
	for (char *s = url->scheme; *s; s++)
		*s = (char)tolower((unsigned char)*s);

	auth = p + 3;
	auth_end = auth + strcspn(auth, "/?#");
	q = strchr(auth, '?');
	credentials(text, &at, &colon);
	/* before anything can fail: no message may show the password */
	url->text = masked(text, at, colon);
	if (!url->text)
		goto oom;
	if (at) {
		if (colon) {
			url->user = decode(auth, (size_t)(colon - auth), &bad);
			url->password = decode(colon + 1, (size_t)(at - colon - 1), &bad);
			if (!url->user || !url->password)
				goto fail;
		} else {
			url->user = decode(auth, (size_t)(at - auth), &bad);
			if (!url->user)
				goto fail;
		}
		hp = at + 1;
	} else {
		hp = auth;
	}

	if (hp < auth_end) {
		const char *pc = NULL;

		if (*hp == '[') {   /* [::1]:port */
			const char *close = memchr(hp, ']', (size_t)(auth_end - hp));

			if (!close) {
				au_seterr(err, AU_EINVAL, "invalid url '%s': bad host", url->text);
				goto out_fail;
			}
			url->host = au_strndup(hp + 1, (size_t)(close - hp - 1));
			if (close + 1 < auth_end && close[1] == ':')
				pc = close + 1;
			else if (close + 1 != auth_end) {
				au_seterr(err, AU_EINVAL, "invalid url '%s': bad host", url->text);
				goto out_fail;
			}
		} else {
			pc = memchr(hp, ':', (size_t)(auth_end - hp));
			url->host = au_strndup(hp, (size_t)((pc ? pc : auth_end) - hp));
		}
		if (!url->host)
			goto oom;
		if (pc) {
			char *end;
			long port;

			if (pc + 1 == auth_end) {
				au_seterr(err, AU_EINVAL, "invalid url '%s': empty port", url->text);
				goto out_fail;
			}
			/* strtol alone would take " 80" and "+80" */
			port = isdigit((unsigned char)pc[1]) ? strtol(pc + 1, &end, 10) : 0;
			if (port < 1 || port > 65535 || end != auth_end) {
				au_seterr(err, AU_EINVAL, "invalid url '%s': bad port", url->text);
				goto out_fail;
			}
			url->port = (int)port;
		}
	}

	if (*auth_end == '/' || (!strcmp(url->scheme, "file") && *auth_end)) {
		const char *ps = auth_end, *pe = ps + strcspn(ps, "?#");

		/* network schemes drop the leading '/', file:// keeps it */
		if (strcmp(url->scheme, "file") != 0 && *ps == '/')
			ps++;
		url->path = decode(ps, (size_t)(pe - ps), &bad);
		if (!url->path)
			goto fail;
	}
	if (q) {
		const char *qe = q + 1 + strcspn(q + 1, "#");

		url->query = au_strndup(q + 1, (size_t)(qe - q - 1));
		if (!url->query)
			goto oom;
	}
	if (!strcmp(url->scheme, "file")) {
		if (url->host && *url->host) {
			au_seterr(err, AU_EINVAL, "invalid url '%s': file urls take an absolute path (file:///dir)",
				  url->text);
			goto out_fail;
		}
		if (!url->path || url->path[0] != '/') {
			au_seterr(err, AU_EINVAL, "invalid url '%s': missing path", url->text);
			goto out_fail;
		}
	} else if (strcmp(url->scheme, "memory") != 0 && (!url->host || !*url->host)) {
		au_seterr(err, AU_EINVAL, "invalid url '%s': missing host", url->text);
		goto out_fail;
	}
	return 0;

fail:
	if (bad) {
		au_seterr(err, AU_EINVAL, "invalid url '%s': bad percent-escape", url->text);
		goto out_fail;
	}
oom:
	au_seterr(err, AU_ENOMEM, "out of memory");
out_fail:
	au_url_release(url);
	return -1;
}

char *au_url_param(const struct au_url *url, const char *key)
{
	const char *p = url->query;
	size_t klen = strlen(key);

	while (p && *p) {
		const char *end = p + strcspn(p, "&");

		if ((size_t)(end - p) > klen && !strncmp(p, key, klen) && p[klen] == '=') {
			int bad = 0;

			return decode(p + klen + 1, (size_t)(end - p - klen - 1), &bad);
		}
		if ((size_t)(end - p) == klen && !strncmp(p, key, klen))
			return au_strdup("");
		p = *end ? end + 1 : end;
	}
	return NULL;
}
