/*
 * io_thread.c - the thread behind io_thread.h: a mutex-guarded list in, a
 * list out, and an eventfd that wakes the loop. One wake-up carries every
 * request that came back since the last, so a busy thread costs the loop
 * one callback per batch of requests, not one per request.
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "io_thread.h"

struct req_list {
	struct au_io_req *head, *tail;
};

struct au_io {
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cond;        /* signalled when todo grows or stop is set */
	struct req_list todo, done;
	int stop;
	int efd;                    /* the thread writes it, the loop reads it */
	struct event *ev;
	void (*ready)(void *arg);
	void *arg;
};

static void append(struct req_list *l, struct au_io_req *r)
{
	r->next = NULL;
	if (l->tail)
		l->tail->next = r;
	else
		l->head = r;
	l->tail = r;
}

static void *thread_main(void *arg)
{
	struct au_io *io = arg;
	struct au_io_req *r;
	uint64_t one = 1;

	pthread_mutex_lock(&io->mu);
	for (;;) {
		while (!io->todo.head && !io->stop)
			pthread_cond_wait(&io->cond, &io->mu);
		if (io->stop)
			break;
		r = io->todo.head;
		io->todo.head = r->next;
		if (!io->todo.head)
			io->todo.tail = NULL;
		pthread_mutex_unlock(&io->mu);

		r->run(r);

		pthread_mutex_lock(&io->mu);
		/* the loop is woken once per batch: only when done was empty */
		if (!io->done.head && write(io->efd, &one, sizeof(one)) < 0 && errno != EAGAIN)
			abort();   /* an eventfd we own cannot fail otherwise */
		append(&io->done, r);
	}
	pthread_mutex_unlock(&io->mu);
	return NULL;
}

static void on_ready(evutil_socket_t fd, short what, void *arg)
{
	struct au_io *io = arg;
	uint64_t v;

	(void)what;
	if (read(fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		return;
	io->ready(io->arg);
}

struct au_io *au_io_new(struct event_base *base, void (*ready)(void *arg), void *arg)
{
	struct au_io *io = calloc(1, sizeof(*io));

	if (!io)
		return NULL;
	io->ready = ready;
	io->arg = arg;
	io->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (io->efd < 0) {
		free(io);
		return NULL;
	}
	io->ev = event_new(base, io->efd, EV_READ | EV_PERSIST, on_ready, io);
	if (!io->ev || event_add(io->ev, NULL) < 0)
		goto fail;
	pthread_mutex_init(&io->mu, NULL);
	pthread_cond_init(&io->cond, NULL);
	if (pthread_create(&io->thread, NULL, thread_main, io) != 0) {
		pthread_cond_destroy(&io->cond);
		pthread_mutex_destroy(&io->mu);
		goto fail;
	}
	return io;
fail:
	if (io->ev)
		event_free(io->ev);
	close(io->efd);
	free(io);
	return NULL;
}

void au_io_submit(struct au_io *io, struct au_io_req *r)
{
	pthread_mutex_lock(&io->mu);
	append(&io->todo, r);
	pthread_cond_signal(&io->cond);
	pthread_mutex_unlock(&io->mu);
}

struct au_io_req *au_io_done(struct au_io *io)
{
	struct au_io_req *r;

	pthread_mutex_lock(&io->mu);
	r = io->done.head;
	io->done.head = io->done.tail = NULL;
	pthread_mutex_unlock(&io->mu);
	return r;
}

void au_io_free(struct au_io *io)
{
	if (!io)
		return;
	pthread_mutex_lock(&io->mu);
	io->stop = 1;
	pthread_cond_signal(&io->cond);
	pthread_mutex_unlock(&io->mu);
	pthread_join(io->thread, NULL);
	pthread_cond_destroy(&io->cond);
	pthread_mutex_destroy(&io->mu);
	event_free(io->ev);
	close(io->efd);
	free(io);
}
