/*
 * pool.c - the threads behind pool.h, on io_thread.c's pattern: a
 * mutex-guarded list in, a list out, and one eventfd write per batch that
 * wakes the loop. A job keeps its attempt's ctx only on the loop's side:
 * the threads see work and arg, and a cancelled flag set under the mutex,
 * so a job whose attempt was given up before it began is never run.
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <event2/event.h>

#include "core.h"
#include "pool.h"
#include "task.h"

struct job {
	struct au_pool *pool;
	struct au_task_ctx *ctx;            /* the loop's; NULL once the attempt was given up */
	void (*work)(void *arg);
	void (*done)(struct au_task_ctx *ctx, void *arg);
	void *arg;
	void (*prev_cancel)(void *arg);     /* the task's own cancel hook, put back for done */
	void *prev_cancel_arg;
	int cancelled;                      /* under mu: do not run work */
	struct job *next;
};

struct job_list {
	struct job *head, *tail;
};

struct au_pool {
	pthread_t *threads;
	unsigned n;
	pthread_mutex_t mu;
	pthread_cond_t cond;                /* todo grew, or stop was set */
	struct job_list todo, done;
	int stop;
	size_t pending;                     /* the loop's: handed over, not delivered */
	int efd;
	struct event *ev;
};

static void append(struct job_list *l, struct job *j)
{
	j->next = NULL;
	if (l->tail)
		l->tail->next = j;
	else
		l->head = j;
	l->tail = j;
}

static struct job *take_all(struct job_list *l)
{
	struct job *j = l->head;

	l->head = l->tail = NULL;
	return j;
}

static void *thread_main(void *arg)
{
	struct au_pool *pool = arg;
	struct job *j;
	uint64_t one = 1;

	pthread_mutex_lock(&pool->mu);
	for (;;) {
		while (!pool->todo.head && !pool->stop)
			pthread_cond_wait(&pool->cond, &pool->mu);
		if (pool->stop)
			break;
		j = pool->todo.head;
		pool->todo.head = j->next;
		if (!pool->todo.head)
			pool->todo.tail = NULL;
		if (!j->cancelled) {
			pthread_mutex_unlock(&pool->mu);
			j->work(j->arg);
			pthread_mutex_lock(&pool->mu);
		}
		if (!pool->done.head && write(pool->efd, &one, sizeof(one)) < 0 && errno != EAGAIN)
			abort();   /* an eventfd we own cannot fail otherwise */
		append(&pool->done, j);
	}
	pthread_mutex_unlock(&pool->mu);
	return NULL;
}

/* On the loop: the job's end. Its attempt gets its cancel hook back before
 * done runs, which may finish the attempt or offload again. */
static void deliver(struct job *j)
{
	struct au_task_ctx *ctx = j->ctx;

	j->pool->pending--;
	if (ctx)
		au_task_on_cancel(ctx, j->prev_cancel, j->prev_cancel_arg);
	j->done(ctx, j->arg);
	free(j);
}

static void on_ready(evutil_socket_t fd, short what, void *arg)
{
	struct au_pool *pool = arg;
	struct job *j, *next;
	uint64_t v;

	(void)what;
	if (read(fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		return;
	pthread_mutex_lock(&pool->mu);
	j = take_all(&pool->done);
	pthread_mutex_unlock(&pool->mu);
	for (; j; j = next) {
		next = j->next;
		deliver(j);
	}
}

/* The worker gave up on the attempt: the job forgets ctx (which goes away
 * once the attempt is written back) and passes the cancel on to the task. */
static void on_cancel(void *arg)
{
	struct job *j = arg;

	j->ctx = NULL;
	pthread_mutex_lock(&j->pool->mu);
	j->cancelled = 1;
	pthread_mutex_unlock(&j->pool->mu);
	if (j->prev_cancel)
		j->prev_cancel(j->prev_cancel_arg);
}

struct au_pool *au_pool_new(struct event_base *base, unsigned n)
{
	struct au_pool *pool = calloc(1, sizeof(*pool));
	unsigned i;

	if (!pool)
		return NULL;
	if (!n)
		n = 1;
	pool->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	pool->threads = calloc(n, sizeof(*pool->threads));
	if (pool->efd < 0 || !pool->threads)
		goto fail;
	pool->ev = event_new(base, pool->efd, EV_READ | EV_PERSIST, on_ready, pool);
	if (!pool->ev || event_add(pool->ev, NULL) < 0)
		goto fail;
	pthread_mutex_init(&pool->mu, NULL);
	pthread_cond_init(&pool->cond, NULL);
	for (i = 0; i < n; i++)
		if (pthread_create(&pool->threads[i], NULL, thread_main, pool) != 0)
			break;
	pool->n = i;
	if (!pool->n) {
		pthread_cond_destroy(&pool->cond);
		pthread_mutex_destroy(&pool->mu);
		goto fail;
	}
	if (pool->n < n)
		au_log(AU_LOG_WARN, "started %u of %u pool threads", pool->n, n);
	return pool;
fail:
	if (pool->ev)
		event_free(pool->ev);
	if (pool->efd >= 0)
		close(pool->efd);
	free(pool->threads);
	free(pool);
	return NULL;
}

int au_pool_offload(struct au_pool *pool, struct au_task_ctx *ctx, void (*work)(void *arg),
		    void (*done)(struct au_task_ctx *ctx, void *arg), void *arg)
{
	struct job *j = calloc(1, sizeof(*j));

	if (!j)
		return -1;
	*j = (struct job){ .pool = pool, .ctx = ctx, .work = work, .done = done, .arg = arg,
			   .prev_cancel = ctx->cancel_fn, .prev_cancel_arg = ctx->cancel_arg };
	au_task_on_cancel(ctx, on_cancel, j);
	pool->pending++;
	pthread_mutex_lock(&pool->mu);
	append(&pool->todo, j);
	pthread_cond_signal(&pool->cond);
	pthread_mutex_unlock(&pool->mu);
	return 0;
}

size_t au_pool_pending(const struct au_pool *pool)
{
	return pool ? pool->pending : 0;
}

void au_pool_free(struct au_pool *pool)
{
	struct job *j, *next;
	unsigned i;

	if (!pool)
		return;
	pthread_mutex_lock(&pool->mu);
	pool->stop = 1;
	pthread_cond_broadcast(&pool->cond);
	pthread_mutex_unlock(&pool->mu);
	for (i = 0; i < pool->n; i++)
		pthread_join(pool->threads[i], NULL);
	/* what came back and what never began: their attempts are gone */
	for (i = 0; i < 2; i++)
		for (j = take_all(i ? &pool->todo : &pool->done); j; j = next) {
			next = j->next;
			j->ctx = NULL;
			deliver(j);
		}
	pthread_cond_destroy(&pool->cond);
	pthread_mutex_destroy(&pool->mu);
	event_free(pool->ev);
	close(pool->efd);
	free(pool->threads);
	free(pool);
}
