/*
 * io_thread.h - one thread that runs a worker's blocking calls to its queue
 * and store, so that the worker's event loop never waits on them.
 *
 * The loop submits requests; the thread runs them one at a time in the order
 * submitted and hands each back. The loop learns of returned requests through
 * a callback on its own event_base and takes them with au_io_done(). A request
 * belongs to the thread from au_io_submit() until au_io_done() returns it:
 * the loop must not touch it, nor anything its run() reads, meanwhile.
 */
#ifndef AU_IO_THREAD_H
#define AU_IO_THREAD_H

#include <event2/event.h>

struct au_io_req {
	void (*run)(struct au_io_req *r);   /* on the thread */
	struct au_io_req *next;             /* the thread's and au_io_done()'s */
};

struct au_io;

/*
 * Starts the thread. ready(arg) runs on base whenever requests came back;
 * it should call au_io_done(). NULL when out of memory or resources (no
 * thread, no eventfd).
 */
struct au_io *au_io_new(struct event_base *base, void (*ready)(void *arg), void *arg);

/* Queues r to run after those submitted before it. */
void au_io_submit(struct au_io *io, struct au_io_req *r);

/* The requests that came back since the last call, oldest first (a list
 * through ->next), or NULL. */
struct au_io_req *au_io_done(struct au_io *io);

/* Waits for the request running now, drops those not started (never run,
 * never returned), and stops the thread. NULL does nothing. */
void au_io_free(struct au_io *io);

#endif
