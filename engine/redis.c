/*
 * hiredis async on the reactor.
 *
 * hiredis 0.14 plugs into an event loop through the five hooks of
 * redisAsyncContext.ev (addRead, delRead, addWrite, delWrite, cleanup). Here
 * each hook maps to a one-shot io_uring POLL_ADD on the connection's fd:
 * one op for readability, one for writability, re-armed after each
 * completion while hiredis still wants it. One-shot polls are level
 * triggered (readiness is checked at arm time), so data left unread by one
 * pass is never missed; multishot polls only report new wake-ups.
 *
 * The adapter state (struct td_redis_io) outlives the hiredis context: when
 * hiredis calls cleanup, armed polls are cancelled (closing the fd does not
 * end an io_uring poll), and the state is freed when the last of them has
 * completed.
 *
 * Timeouts (connect, reconnect backoff) are on the shard's wheel: hiredis
 * 0.14 has no timer hook.
 *
 * Blocking: redisAsyncConnect() resolves a host name with getaddrinfo(),
 * which blocks; numeric addresses and unix sockets do not. See
 * docs/operations.md.
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "clock.h"
#include "engine_i.h"
#include "triggerd/log.h"

#define CONNECT_TIMEOUT_MS 3000
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000

struct td_redis_io {
	struct td_reactor *reactor;
	redisAsyncContext *ac; /* NULL once hiredis has called cleanup */
	int fd;
	struct td_op rd, wr;
	bool want_rd, want_wr;
	bool rd_armed, wr_armed;
	bool in_cb;
};

static void io_maybe_free(struct td_redis_io *io)
{
	if (!io->ac && !io->rd_armed && !io->wr_armed && !io->in_cb)
		free(io);
}

static void io_arm(struct td_redis_io *io, struct td_op *op, unsigned mask)
{
	struct io_uring_sqe *sqe = td_reactor_sqe(io->reactor, op);
	io_uring_prep_poll_add(sqe, io->fd, mask);
}

static void io_rd_cb(struct td_op *op, int res, uint32_t flags)
{
	struct td_redis_io *io = td_container_of(op, struct td_redis_io, rd);
	io->rd_armed = false;
	if (io->ac && io->want_rd && res != -ECANCELED) {
		io->in_cb = true;
		redisAsyncHandleRead(io->ac);
		/* A reply larger than hiredis's 16 KiB read chunk: keep reading
		 * while bytes are waiting rather than paying a poll round trip
		 * per chunk. */
		for (int i = 0; i < 64 && io->ac; i++) {
			int avail = 0;
			if (ioctl(io->fd, FIONREAD, &avail) < 0 || avail <= 0)
				break;
			redisAsyncHandleRead(io->ac);
		}
		io->in_cb = false;
	}
	if (io->ac && io->want_rd && !io->rd_armed) {
		io->rd_armed = true;
		io_arm(io, &io->rd, POLLIN);
	}
	io_maybe_free(io);
}

static void io_wr_cb(struct td_op *op, int res, uint32_t flags)
{
	struct td_redis_io *io = td_container_of(op, struct td_redis_io, wr);
	io->wr_armed = false;
	if (io->ac && io->want_wr && res != -ECANCELED) {
		io->in_cb = true;
		redisAsyncHandleWrite(io->ac);
		io->in_cb = false;
	}
	if (io->ac && io->want_wr && !io->wr_armed) {
		io->wr_armed = true;
		io_arm(io, &io->wr, POLLOUT);
	}
	io_maybe_free(io);
}

static void ev_add_read(void *p)
{
	struct td_redis_io *io = p;
	io->want_rd = true;
	if (!io->rd_armed) {
		io->rd_armed = true;
		io_arm(io, &io->rd, POLLIN);
	}
}

static void ev_del_read(void *p)
{
	/* The armed poll stays; its completion is ignored while unwanted. */
	((struct td_redis_io *)p)->want_rd = false;
}

static void ev_add_write(void *p)
{
	struct td_redis_io *io = p;
	io->want_wr = true;
	if (!io->wr_armed) {
		io->wr_armed = true;
		io_arm(io, &io->wr, POLLOUT);
	}
}

static void ev_del_write(void *p)
{
	((struct td_redis_io *)p)->want_wr = false;
}

static void ev_cleanup(void *p)
{
	struct td_redis_io *io = p;
	io->ac = NULL;
	io->want_rd = io->want_wr = false;
	if (io->rd_armed)
		td_reactor_cancel(io->reactor, &io->rd);
	if (io->wr_armed)
		td_reactor_cancel(io->reactor, &io->wr);
	io_maybe_free(io);
}

static int io_attach(struct td_redis *r, redisAsyncContext *ac)
{
	struct td_redis_io *io = calloc(1, sizeof(*io));
	if (!io)
		return -ENOMEM;
	io->reactor = r->reactor;
	io->ac = ac;
	io->fd = ac->c.fd;
	io->rd.cb = io_rd_cb;
	io->wr.cb = io_wr_cb;
	ac->ev.data = io;
	ac->ev.addRead = ev_add_read;
	ac->ev.delRead = ev_del_read;
	ac->ev.addWrite = ev_add_write;
	ac->ev.delWrite = ev_del_write;
	ac->ev.cleanup = ev_cleanup;
	r->io = io;
	return 0;
}

/* ---- connection management ------------------------------------------ */

static void schedule(struct td_redis *r, unsigned ms)
{
	td_wheel_add(r->wheel, &r->timer, td_mono_ms() + ms);
}

static void schedule_reconnect(struct td_redis *r)
{
	if (r->closing)
		return;
	unsigned ms = r->backoff_ms ? r->backoff_ms : BACKOFF_MIN_MS;
	r->backoff_ms = ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : ms * 2;
	schedule(r, ms);
}

/* The first failed attempt of an outage is a warning; the retries that
 * follow it every few seconds while the server stays away are debug lines
 * (backoff_ms is 0 before the first attempt at start and 2 * BACKOFF_MIN_MS
 * before the first one after a drop). */
static enum td_log_level retry_level(const struct td_redis *r)
{
	return r->backoff_ms <= 2 * BACKOFF_MIN_MS ? TD_LOG_WARN : TD_LOG_DEBUG;
}

static void went_down(struct td_redis *r, const char *why)
{
	char addr[300], esc[600];
	bool was_up = r->up;
	r->up = false;
	r->ac = NULL;
	r->io = NULL;
	td_redis_addr_str(r->addr, addr, sizeof(addr));
	td_log(was_up ? TD_LOG_WARN : TD_LOG_DEBUG, "redis connection lost",
	       "\"conn\":\"%s\",\"addr\":\"%s\",\"error\":\"%s\"", r->name,
	       td_log_esc(esc, sizeof(esc), addr, strlen(addr)), why);
	if (was_up && r->on_down)
		r->on_down(r);
	schedule_reconnect(r);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
	struct td_redis *r = ac->data;
	if (!r)
		return;
	if (status != REDIS_OK) {
		char esc[256];
		/* hiredis frees the context after this returns. */
		td_log(retry_level(r), "redis connect failed",
		       "\"conn\":\"%s\",\"error\":\"%s\"", r->name,
		       td_log_esc(esc, sizeof(esc), ac->errstr, strlen(ac->errstr)));
		r->ac = NULL;
		r->io = NULL;
		schedule_reconnect(r);
		return;
	}
	td_wheel_cancel(r->wheel, &r->timer);
	r->up = true;
	r->backoff_ms = 0;
	char addr[300];
	td_info("redis connected", "\"conn\":\"%s\",\"addr\":\"%s\"", r->name,
		td_redis_addr_str(r->addr, addr, sizeof(addr)));
	if (r->on_up)
		r->on_up(r);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
	struct td_redis *r = ac->data;
	if (!r)
		return;
	char esc[256];
	const char *why = status == REDIS_OK ? "closed" :
		td_log_esc(esc, sizeof(esc), ac->errstr, strlen(ac->errstr));
	went_down(r, why);
}

static void connect_now(struct td_redis *r)
{
	redisAsyncContext *ac = r->addr->path[0] ?
		redisAsyncConnectUnix(r->addr->path) :
		redisAsyncConnect(r->addr->host, r->addr->port);
	if (!ac || ac->err) {
		char esc[256];
		const char *e = ac ? ac->errstr : "out of memory";
		td_log(retry_level(r), "redis connect failed", "\"conn\":\"%s\",\"error\":\"%s\"",
		       r->name, td_log_esc(esc, sizeof(esc), e, strlen(e)));
		if (ac)
			redisAsyncFree(ac);
		schedule_reconnect(r);
		return;
	}
	if (io_attach(r, ac) < 0) {
		redisAsyncFree(ac);
		schedule_reconnect(r);
		return;
	}
	ac->data = r;
	r->ac = ac;
	redisAsyncSetConnectCallback(ac, on_connect);
	redisAsyncSetDisconnectCallback(ac, on_disconnect);
	/* hiredis only reports the connect on the first write event. */
	ac->ev.addWrite(ac->ev.data);
	schedule(r, CONNECT_TIMEOUT_MS);
	r->reconnects++;
}

static void timer_cb(struct td_timer *t, uint64_t now)
{
	struct td_redis *r = td_container_of(t, struct td_redis, timer);
	if (r->closing)
		return;
	if (r->ac && !r->up) {
		/* Connect timed out. Freeing a context that never connected
		 * calls neither onConnect nor onDisconnect. */
		redisAsyncContext *ac = r->ac;
		ac->data = NULL;
		redisAsyncFree(ac);
		went_down(r, "connect timed out");
		return;
	}
	if (!r->ac)
		connect_now(r);
}

void td_redis_init(struct td_redis *r, struct td_reactor *reactor,
		   struct td_wheel *wheel, const struct td_redis_addr *addr,
		   const char *name)
{
	memset(r, 0, sizeof(*r));
	r->reactor = reactor;
	r->wheel = wheel;
	r->addr = addr;
	r->name = name;
	td_timer_init(&r->timer, timer_cb);
}

void td_redis_start(struct td_redis *r)
{
	r->closing = false;
	if (!r->ac)
		connect_now(r);
}

void td_redis_close(struct td_redis *r)
{
	r->closing = true;
	td_wheel_cancel(r->wheel, &r->timer);
	if (r->ac) {
		redisAsyncContext *ac = r->ac;
		bool was_up = r->up;
		ac->data = NULL;
		r->ac = NULL;
		r->io = NULL;
		r->up = false;
		redisAsyncFree(ac);
		if (was_up && r->on_down)
			r->on_down(r);
	}
}

void td_redis_reset(struct td_redis *r, const char *why)
{
	if (!r->ac)
		return;
	redisAsyncContext *ac = r->ac;
	ac->data = NULL;
	redisAsyncFree(ac);
	went_down(r, why);
}

void td_redis_flush(struct td_redis *r)
{
	/* Not from inside a reply callback: a write error there would make
	 * hiredis 0.14 free the context under redisProcessCallbacks. The
	 * loop flushes right after the callbacks anyway. */
	if (r->up && r->ac && r->io && r->io->want_wr && !r->io->in_cb)
		redisAsyncHandleWrite(r->ac);
}

int td_redis_cmd(struct td_redis *r, redisCallbackFn *fn, void *priv, int argc,
		 const char **argv, const size_t *argvlen)
{
	if (!r->up || !r->ac)
		return TD_EREDIS;
	if (redisAsyncCommandArgv(r->ac, fn, priv, argc, argv, argvlen) != REDIS_OK)
		return TD_EREDIS;
	return 0;
}
