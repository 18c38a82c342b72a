/*
 * pg_record.c - result records as rows of au_results, for the store's put
 * and the queue's ack_store alike (pg_record.h).
 */
#include <stdlib.h>
#include <string.h>

#include "pg_client.h"
#include "pg_record.h"

/* A record's id in the order of the batch, to find duplicates and map the
 * ids the server returns back to their place. */
struct au_pg_record_slot {
	unsigned char uuid[16];
	size_t i;
};

static int slot_cmp(const void *a, const void *b)
{
	const struct au_pg_record_slot *x = a, *y = b;
	int c = memcmp(x->uuid, y->uuid, 16);

	return c ? c : (x->i > y->i) - (x->i < y->i);
}

static int uuid_cmp(const void *key, const void *elem)
{
	return memcmp(key, ((const struct au_pg_record_slot *)elem)->uuid, 16);
}

size_t au_pg_records_find(const struct au_pg_records *pr, const void *uuid)
{
	const struct au_pg_record_slot *sl = bsearch(uuid, pr->sorted, pr->n, sizeof(*pr->sorted),
						     uuid_cmp);

	if (!sl)
		return pr->n;
	while (sl > pr->sorted && !memcmp(sl[-1].uuid, uuid, 16))
		sl--;
	return sl->i;
}

void au_pg_records_release(struct au_pg_records *pr)
{
	free(pr->sorted);
	free(pr->dup);
	memset(pr, 0, sizeof(*pr));
}

int au_pg_records_params(struct au_buf *b, const struct au_record *recs, size_t n,
			 struct au_pg_records *pr, size_t at[3], struct au_err *err)
{
	uint64_t now = au_now_ms();
	size_t i;
	int rc = 0;

	memset(pr, 0, sizeof(*pr));
	pr->n = pr->nput = n;
	pr->sorted = malloc((n ? n : 1) * sizeof(*pr->sorted));
	pr->dup = calloc(n ? n : 1, 1);
	if (!pr->sorted || !pr->dup)
		return au_seterr(err, AU_ENOMEM, "out of memory");
	for (i = 0; i < n; i++) {
		au_pg_uuid(pr->sorted[i].uuid, recs[i].id);
		pr->sorted[i].i = i;
	}
	qsort(pr->sorted, n, sizeof(*pr->sorted), slot_cmp);
	for (i = 1; i < n; i++)
		if (!memcmp(pr->sorted[i].uuid, pr->sorted[i - 1].uuid, 16)) {
			pr->dup[pr->sorted[i].i] = 1;
			pr->nput--;
		}

	at[0] = b->len;
	rc |= au_pg_array(b, AU_PG_UUID, pr->nput);
	for (i = 0; i < n; i++) {
		unsigned char uuid[16];

		if (!pr->dup[i]) {
			au_pg_uuid(uuid, recs[i].id);
			rc |= au_pg_array_add(b, uuid, 16);
		}
	}
	at[1] = b->len;
	rc |= au_pg_array(b, AU_PG_BYTEA, pr->nput);
	for (i = 0; i < n && rc == 0; i++) {
		/* the server's expiry is the one that counts; this one is
		 * for readers of the bytes */
		struct au_record w = recs[i];
		size_t el;

		if (pr->dup[i])
			continue;
		w.expires_at_ms = w.ttl_s ? now + (uint64_t)w.ttl_s * 1000 : 0;
		if (au_pg_array_open(b, &el) < 0)
			return au_seterr(err, AU_ENOMEM, "out of memory");
		if (au_record_encode(&w, b, err) < 0)
			return -1;
		au_pg_array_close(b, el);
	}
	at[2] = b->len;
	rc |= au_pg_array(b, AU_PG_INT8, pr->nput);
	for (i = 0; i < n; i++) {
		unsigned char ttl[8];

		if (!pr->dup[i]) {
			au_pg_put_u64(ttl, recs[i].ttl_s);
			rc |= au_pg_array_add(b, ttl, 8);
		}
	}
	return rc ? au_seterr(err, AU_ENOMEM, "out of memory") : 0;
}
