/*
 * file_store.c - results as files: file:///abs/dir holds one file per
 * computation, named by its id and holding its encoded record.
 *
 * A record is written to a temporary file in the same directory, synced,
 * then link()ed to its final name: link fails with EEXIST when the id already
 * has a record (create-if-absent without a lock), and a kill at any moment
 * leaves either no record or a whole one, never a truncated one.
 *
 * Ids arrive through the au_store_* wrappers of store.h, which refuse
 * anything but 32 hex digits: a name here is always a plain file name in
 * the directory, never a path.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "store.h"

/* Temporary files start with a dot, so they never look like an id. */
#define TMP_PREFIX ".tmp."
/* A temporary file this old was left by a killed writer. */
#define TMP_STALE_S 60
/* ".tmp.<id>.<16 hex>.<counter>" */
#define TMP_NAME_SIZE (sizeof(TMP_PREFIX) + AU_ID_SIZE + 17 + 21)
/* Records written and synced together. */
#define SYNC_BATCH 64
#define BACKOFF_MAX_MS 50

struct file_store {
	int dirfd;
	/* Watches the directory for new names (wait). Opened on first use and
	 * kept: closing an inotify fd costs an RCU grace period (~15 ms). */
	int in;
	uint64_t tag, seq;   /* make this handle's temporary names unique */
	struct au_buf buf;   /* encode and read scratch, reused */
};

static int sys_fail(struct au_err *err, const char *what, const char *subject, int e)
{
	char why[128];

	snprintf(why, sizeof(why), "%s", strerror(e));
	why[0] = (char)tolower((unsigned char)why[0]);
	return au_seterr(err, AU_EIO, "%s '%s': %s", what, subject, why);
}

static int expired(const struct au_record *r, uint64_t now)
{
	return r->expires_at_ms && now >= r->expires_at_ms;
}

/* mkdir -p; the directories created are private to the owner. */
static int make_dirs(const char *path)
{
	char *p = au_strdup(path), *slash;
	int rc = 0;

	if (!p)
		return -1;
	for (slash = strchr(p + 1, '/'); rc == 0; slash = strchr(slash + 1, '/')) {
		if (slash)
			*slash = '\0';
		if (*p && mkdir(p, 0700) < 0 && errno != EEXIST)
			rc = -1;
		if (!slash)
			break;
		*slash = '/';
	}
	free(p);
	return rc;
}

static int file_open(struct au_store *s, const struct au_url *url)
{
	struct file_store *fs;

	if (make_dirs(url->path) < 0)
		return errno == ENOMEM ? au_seterr(&s->err, AU_ENOMEM, "out of memory")
				       : sys_fail(&s->err, "unable to create directory", url->path, errno);
	fs = calloc(1, sizeof(*fs));
	if (!fs)
		return au_seterr(&s->err, AU_ENOMEM, "out of memory");
	fs->in = -1;
	fs->tag = au_random64();
	fs->dirfd = open(url->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fs->dirfd < 0) {
		int e = errno;

		free(fs);
		return sys_fail(&s->err, "unable to open directory", url->path, e);
	}
	s->ctx = fs;
	return 0;
}

static void file_close(struct au_store *s)
{
	struct file_store *fs = s->ctx;

	close(fs->dirfd);
	if (fs->in >= 0)
		close(fs->in);
	au_buf_release(&fs->buf);
	free(fs);
}

/* Reads and decodes the record file of id. -1 with AU_ENOTFOUND, AU_EPROTO
 * (not a whole record of that id) or AU_EIO. */
static int load(struct file_store *fs, const char *id, struct au_record *out, struct au_err *err)
{
	struct au_record r;
	struct stat st;
	int fd, e;

	fd = openat(fs->dirfd, id, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0) {
		if (errno == ENOENT)
			return au_seterr(err, AU_ENOTFOUND, "no result for computation '%s'", id);
		if (errno == ELOOP)
			return au_seterr(err, AU_EPROTO, "record file of computation '%s' is a symlink", id);
		return sys_fail(err, "unable to open the record of computation", id, errno);
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > AU_MAX_RESULT) {
		close(fd);
		return au_seterr(err, AU_EPROTO, "record file of computation '%s' is not a record", id);
	}
	au_buf_reset(&fs->buf);
	if (au_buf_reserve(&fs->buf, (size_t)st.st_size) < 0) {
		close(fd);
		return au_seterr(err, AU_ENOMEM, "out of memory");
	}
	for (;;) {
		ssize_t n = read(fd, fs->buf.data + fs->buf.len, fs->buf.cap - fs->buf.len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			e = errno;
			close(fd);
			return sys_fail(err, "unable to read the record of computation", id, e);
		}
		if (n == 0)
			break;
		fs->buf.len += (size_t)n;
		/* The file grew after fstat: it is not one of ours. */
		if (fs->buf.len == fs->buf.cap) {
			close(fd);
			return au_seterr(err, AU_EPROTO, "record file of computation '%s' is not a record", id);
		}
	}
	close(fd);
	if (au_record_decode(fs->buf.data, fs->buf.len, &r, err) < 0) {
		char why[AU_ERRSTR_SIZE];

		memcpy(why, err->str, sizeof(why));
		return au_seterr(err, AU_EPROTO, "record file of computation '%s' is corrupt: %s", id,
				 why);
	}
	if (strcmp(r.id, id) != 0) {
		au_record_release(&r);
		return au_seterr(err, AU_EPROTO, "record file of computation '%s' holds computation '%s'",
				 id, r.id);
	}
	*out = r;
	return 0;
}

static int write_all(int fd, const unsigned char *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -1;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* An existing record may be replaced only once it has expired. One that
 * cannot be read was not written by a store (writes are atomic), so it is
 * replaced too rather than blocking the id for good. */
static int replaceable(struct file_store *fs, const char *id, uint64_t now)
{
	struct au_record r;
	struct au_err err;
	int yes;

	if (load(fs, id, &r, &err) < 0)
		return err.code == AU_ENOTFOUND || err.code == AU_EPROTO;
	yes = expired(&r, now);
	au_record_release(&r);
	return yes;
}

/* Creates the temporary file of r in tmp, writes the record and starts its
 * writeback; the open fd goes to *fd. */
static int write_temp(struct au_store *s, struct file_store *fs, const struct au_record *r,
		      uint64_t now, char tmp[TMP_NAME_SIZE], int *fd)
{
	struct au_record w = *r;
	int e;

	w.expires_at_ms = r->ttl_s ? now + (uint64_t)r->ttl_s * 1000 : 0;
	au_buf_reset(&fs->buf);
	if (au_record_encode(&w, &fs->buf, &s->err) < 0)
		return -1;
	snprintf(tmp, TMP_NAME_SIZE, TMP_PREFIX "%s.%016llx.%llu", r->id,
		 (unsigned long long)fs->tag, (unsigned long long)fs->seq++);
	*fd = openat(fs->dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (*fd < 0)
		return sys_fail(&s->err, "unable to create a record file in", s->url.path, errno);
	if (write_all(*fd, fs->buf.data, fs->buf.len) < 0) {
		e = errno;
		close(*fd);
		unlinkat(fs->dirfd, tmp, 0);
		return sys_fail(&s->err, "unable to write the record of computation", r->id, e);
	}
	sync_file_range(*fd, 0, 0, SYNC_FILE_RANGE_WRITE);
	return 0;
}

/* Gives the synced temporary file tmp the name id: 1 if it now holds the
 * record, 0 if id had a live record, -1 on error. */
static int publish(struct au_store *s, struct file_store *fs, const char *tmp, const char *id,
		   uint64_t now)
{
	/* Two writers replacing the same expired record may both succeed;
	 * ids are never reused, so only a record written long ago can be in
	 * that race. */
	if (linkat(fs->dirfd, tmp, fs->dirfd, id, 0) == 0)
		return 1;
	if (errno != EEXIST)
		return sys_fail(&s->err, "unable to store the record of computation", id, errno);
	if (!replaceable(fs, id, now))
		return 0;
	if (renameat(fs->dirfd, tmp, fs->dirfd, id) == 0)
		return 1;
	return sys_fail(&s->err, "unable to store the record of computation", id, errno);
}

/* Writes up to SYNC_BATCH records. Every temporary file is written and its
 * writeback started before the first fdatasync, so the disk flushes them
 * together instead of one by one. */
static int put_batch(struct au_store *s, struct file_store *fs, const struct au_record *recs,
		     size_t n, int *applied, uint64_t now, int *linked)
{
	char tmp[SYNC_BATCH][TMP_NAME_SIZE];
	int fds[SYNC_BATCH], rc = 0;
	size_t i, made = 0;

	while (made < n && rc == 0)
		if ((rc = write_temp(s, fs, &recs[made], now, tmp[made], &fds[made])) == 0)
			made++;
	for (i = 0; i < made && rc == 0; i++)
		if (fdatasync(fds[i]) < 0)
			rc = sys_fail(&s->err, "unable to write the record of computation",
				      recs[i].id, errno);
	for (i = 0; i < made && rc == 0; i++) {
		int ok = publish(s, fs, tmp[i], recs[i].id, now);

		if (ok < 0)
			rc = -1;
		else if (applied)
			applied[i] = ok;
		*linked |= ok > 0;
	}
	/* After a rename the temporary name is already gone: ENOENT is fine. */
	for (i = 0; i < made; i++) {
		close(fds[i]);
		unlinkat(fs->dirfd, tmp[i], 0);
	}
	return rc;
}

static int file_put(struct au_store *s, const struct au_record *recs, size_t n, int *applied)
{
	struct file_store *fs = s->ctx;
	uint64_t now = au_now_ms();
	int rc = 0, linked = 0;
	size_t i;

	for (i = 0; i < n && rc == 0; i += SYNC_BATCH)
		rc = put_batch(s, fs, recs + i, n - i < SYNC_BATCH ? n - i : SYNC_BATCH,
			       applied ? applied + i : NULL, now, &linked);
	/* One directory fsync makes every new name of the put durable. */
	if (linked && fsync(fs->dirfd) < 0 && rc == 0)
		rc = sys_fail(&s->err, "unable to sync directory", s->url.path, errno);
	return rc;
}

static int file_get(struct au_store *s, const char *id, struct au_record *out)
{
	struct file_store *fs = s->ctx;
	struct au_record r;

	if (load(fs, id, &r, &s->err) < 0)
		return -1;
	if (expired(&r, au_now_ms())) {
		au_record_release(&r);
		unlinkat(fs->dirfd, id, 0);
		return au_seterr(&s->err, AU_EEXPIRED, "result of computation '%s' expired", id);
	}
	*out = r;
	return 0;
}

static int file_del(struct au_store *s, const char *id)
{
	struct file_store *fs = s->ctx;

	if (unlinkat(fs->dirfd, id, 0) < 0 && errno != ENOENT)
		return sys_fail(&s->err, "unable to delete the record of computation", id, errno);
	return 0;
}

static int file_sweep(struct au_store *s, size_t max, size_t *removed)
{
	struct file_store *fs = s->ctx;
	uint64_t now = au_now_ms();
	time_t stale = time(NULL) - TMP_STALE_S;
	struct dirent *de;
	size_t count = 0;
	DIR *d;
	int fd;

	fd = openat(fs->dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || !(d = fdopendir(fd))) {
		int e = errno;

		if (fd >= 0)
			close(fd);
		return sys_fail(&s->err, "unable to read directory", s->url.path, e);
	}
	while (count < max && (de = readdir(d))) {
		struct au_record r;
		struct au_err err;
		struct stat st;

		if (!strncmp(de->d_name, TMP_PREFIX, strlen(TMP_PREFIX))) {
			if (fstatat(fs->dirfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
			    st.st_mtime < stale)
				unlinkat(fs->dirfd, de->d_name, 0);
			continue;
		}
		/* Files that cannot be read are left for a human to look at. */
		if (!au_id_valid(de->d_name) || load(fs, de->d_name, &r, &err) < 0)
			continue;
		if (expired(&r, now) && unlinkat(fs->dirfd, de->d_name, 0) == 0)
			count++;
		au_record_release(&r);
	}
	closedir(d);
	if (removed)
		*removed = count;
	return 0;
}

/* Milliseconds left until deadline (monotonic us); -1 = no deadline. */
static int left_ms(uint64_t deadline)
{
	uint64_t now;

	if (!deadline)
		return -1;
	now = au_mono_us();
	return now >= deadline ? 0 : (int)((deadline - now + 999) / 1000);
}

/* Reads the queued events of the watch: 1 when one may be about id (or
 * events were lost), 0 otherwise. */
static int name_appeared(int in, const char *id)
{
	char ev[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
	ssize_t n;
	char *p;
	int seen = 0;

	while ((n = read(in, ev, sizeof(ev))) > 0)
		for (p = ev; p < ev + n;) {
			const struct inotify_event *e = (const struct inotify_event *)(void *)p;

			if ((e->mask & IN_Q_OVERFLOW) || (e->len && !strcmp(e->name, id)))
				seen = 1;
			p += sizeof(*e) + e->len;
		}
	return seen;
}

/* The directory watch, opened on first use; -1 if inotify is unavailable
 * (out of instances, say). */
static int watch(struct au_store *s, struct file_store *fs)
{
	if (fs->in >= 0)
		return fs->in;
	fs->in = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (fs->in >= 0 && inotify_add_watch(fs->in, s->url.path, IN_CREATE | IN_MOVED_TO) < 0) {
		close(fs->in);
		fs->in = -1;
	}
	return fs->in;
}

static int file_wait(struct au_store *s, const char *id, int timeout_ms, struct au_record *out)
{
	struct file_store *fs = s->ctx;
	uint64_t deadline = timeout_ms < 0 ? 0 : au_mono_us() + (uint64_t)timeout_ms * 1000;
	int in, left, backoff_ms = 1, rc;

	/* The watch is on before the first look, so a write in between is
	 * not missed; what it queued before now is stale. */
	in = watch(s, fs);
	if (in >= 0)
		name_appeared(in, id);
	for (;;) {
		rc = file_get(s, id, out);
		if (rc == 0 || s->err.code != AU_ENOTFOUND)
			break;
		left = left_ms(deadline);
		if (left == 0) {
			rc = au_seterr(&s->err, AU_ETIMEDOUT,
				       "timed out after %d ms waiting for computation '%s'",
				       timeout_ms, id);
			break;
		}
		if (in >= 0) {
			struct pollfd pfd = { .fd = in, .events = POLLIN };

			while (poll(&pfd, 1, left) > 0 && !name_appeared(in, id) &&
			       (left = left_ms(deadline)) != 0)
				;
		} else {
			/* Without inotify: a bounded backoff. */
			poll(NULL, 0, left < 0 || left > backoff_ms ? backoff_ms : left);
			backoff_ms = backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff_ms * 2;
		}
	}
	return rc;
}

const struct au_store_ops au_file_store_ops = {
	.scheme = "file",
	.features = AU_STORE_TELLS_EXPIRED | AU_STORE_SHARED,
	.open = file_open,
	.close = file_close,
	.put = file_put,
	.get = file_get,
	.del = file_del,
	.sweep = file_sweep,
	.wait = file_wait,
};
