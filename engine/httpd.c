/*
 * The HTTP/1.1 server on io_uring. See httpd.h for the shape.
 *
 * A connection is in one of these phases, and its one wheel timer means:
 *
 *   idle      waiting for the first byte of a request   idle timeout: close
 *   reading   request started, headers incomplete        header timeout: 408
 *   body      headers done, body incomplete              body timeout: 408
 *   handling  the handler has the request               none (the handler's)
 *   linger    final response sent, reading to discard    linger timeout: close
 *
 * and, across all phases, a send in flight that makes no progress for the
 * write timeout closes the connection.
 *
 * Ops in flight per connection: at most one recv and one send. The
 * connection is freed when it is closed, no op is in flight and no
 * exchange is outstanding.
 */
#include "httpd.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "clock.h"
#include "triggerd/log.h"
#include "triggerd/triggerd.h"

#define BUF_COUNT 256          /* provided receive buffers per listener */
#define BUF_SIZE (16 * 1024)
#define OUT_HIGH (256 * 1024)  /* queued response bytes: stop parsing */
#define LINGER_MS 2000
#define ACCEPT_RETRY_MS 100

struct hconn {
	struct td_httpd *srv;
	struct hconn *next, *prev;       /* srv->conns */
	struct hconn *starved_next;      /* srv->starved: recv got ENOBUFS */
	int fd;
	struct td_op recv_op, send_op;
	struct td_timer timer;
	struct td_hparse hp;
	struct td_buf in;                /* received, not yet parsed */
	size_t in_off;
	struct td_buf out[2];            /* out[cur] in flight, other queued */
	size_t sent;                     /* bytes of out[cur] sent */
	uint8_t cur;
	bool recv_armed, send_armed;
	bool busy;                       /* a request is with the handler */
	bool in_handler;                 /* inside the handler call */
	bool close_after;                /* close once out is sent */
	bool closing;                    /* no more requests; free when idle */
	bool lingering;
	bool starved;
	uint64_t started_tick;           /* first byte of this request */
	uint64_t body_tick;              /* its headers complete; 0: not yet */
	struct td_hx hx;
};

struct td_httpd {
	struct td_reactor *reactor;
	struct td_wheel *wheel;
	struct td_httpd_conf conf;
	td_httpd_handler handler;
	void *arg;
	int fd;
	struct td_op accept_op;
	bool accept_armed, stopping;
	struct td_timer accept_timer;    /* retry after EMFILE and the like */
	struct td_timer starved_timer;   /* re-arm recvs after ENOBUFS */
	struct hconn *conns;
	struct hconn *starved;
	struct io_uring_buf_ring *br;
	size_t br_size;
	char *bufs;
	struct td_httpd_stats stats;
	char addr[64];
};

/* ---- helpers --------------------------------------------------------- */

static void conn_process(struct hconn *c);
static void conn_flush(struct hconn *c);
static void conn_close(struct hconn *c);
static void recv_arm(struct hconn *c);

static void count(struct td_httpd *s, int status)
{
	if (status >= 100 && status < 100 + TD_HTTPD_CODES)
		s->stats.by_code[status - 100]++;
}

static void buf_return(struct td_httpd *s, unsigned bid)
{
	io_uring_buf_ring_add(s->br, s->bufs + (size_t)bid * BUF_SIZE, BUF_SIZE,
			      (unsigned short)bid, io_uring_buf_ring_mask(BUF_COUNT), 0);
	io_uring_buf_ring_advance(s->br, 1);
}

static struct td_buf *queued_out(struct hconn *c)
{
	/* While a send is in flight its buffer must not move: responses go
	 * to the other one. Otherwise out[cur] is simply the queue. */
	return c->send_armed ? &c->out[c->cur ^ 1] : &c->out[c->cur];
}

static size_t out_pending(const struct hconn *c)
{
	return c->out[0].len + c->out[1].len - c->sent;
}

/* ---- timer ----------------------------------------------------------- */

static void timer_set(struct hconn *c, unsigned ms)
{
	td_wheel_cancel(c->srv->wheel, &c->timer);
	td_wheel_add(c->srv->wheel, &c->timer, td_mono_ms() + ms);
}

/* Set the timer for the phase the connection is in now. */
static void timer_update(struct hconn *c)
{
	const struct td_httpd_conf *k = &c->srv->conf;
	if (c->lingering)
		return; /* set once when lingering starts */
	if (c->send_armed) {
		return; /* the write timeout was set when the send started */
	} else if (c->busy || c->closing) {
		td_wheel_cancel(c->srv->wheel, &c->timer);
	} else if (td_hparse_headers_done(&c->hp)) {
		/* Absolute, like the header deadline: trickling bytes does not
		 * buy time. */
		if (!c->body_tick)
			c->body_tick = td_mono_ms();
		td_wheel_add(c->srv->wheel, &c->timer, c->body_tick + k->body_timeout_ms);
	} else if (td_hparse_started(&c->hp)) {
		uint64_t due = c->started_tick + k->header_timeout_ms;
		td_wheel_cancel(c->srv->wheel, &c->timer);
		td_wheel_add(c->srv->wheel, &c->timer, due);
	} else {
		timer_set(c, k->idle_timeout_ms);
	}
}

static void timer_cb(struct td_timer *t, uint64_t now)
{
	struct hconn *c = td_container_of(t, struct hconn, timer);
	struct td_httpd *s = c->srv;
	if (c->lingering || c->send_armed || c->closing) {
		conn_close(c);
		return;
	}
	if (c->busy)
		return;
	if (!td_hparse_started(&c->hp)) {
		conn_close(c); /* idle keep-alive connection */
		return;
	}
	s->stats.timeouts++;
	bool hdr = !td_hparse_headers_done(&c->hp);
	char msg[96];
	snprintf(msg, sizeof(msg), "%s not received within %u ms",
		 hdr ? "request headers" : "request body",
		 hdr ? s->conf.header_timeout_ms : s->conf.body_timeout_ms);
	td_hresp_error(queued_out(c), 408, hdr ? "header_timeout" : "body_timeout",
		       msg, NULL, false);
	count(s, 408);
	c->close_after = true;
	c->closing = true;
	conn_flush(c);
}

/* ---- connection lifetime -------------------------------------------- */

static void conn_free(struct hconn *c)
{
	struct td_httpd *s = c->srv;
	if (c->prev)
		c->prev->next = c->next;
	else
		s->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	td_wheel_cancel(s->wheel, &c->timer);
	if (c->fd >= 0)
		close(c->fd);
	td_hparse_finish(&c->hp);
	td_buf_finish(&c->in);
	td_buf_finish(&c->out[0]);
	td_buf_finish(&c->out[1]);
	s->stats.conns--;
	free(c);
}

static void conn_maybe_free(struct hconn *c)
{
	if (c->closing && !c->recv_armed && !c->send_armed && !c->busy && !c->starved &&
	    !c->in_handler && !(c->close_after && out_pending(c)))
		conn_free(c);
}

/* Stop serving @c: cancel its recv, let a send in flight end, free when
 * nothing is outstanding. */
static void conn_close(struct hconn *c)
{
	c->closing = true;
	c->close_after = false;
	td_wheel_cancel(c->srv->wheel, &c->timer);
	if (c->recv_armed)
		td_reactor_cancel(c->srv->reactor, &c->recv_op);
	if (c->send_armed)
		td_reactor_cancel(c->srv->reactor, &c->send_op);
	conn_maybe_free(c);
}

/* The last response is out: stop writing and read until the client closes
 * (or a short while), so that unread request bytes do not turn our close
 * into a reset that could destroy the response in flight. */
static void conn_linger(struct hconn *c)
{
	shutdown(c->fd, SHUT_WR);
	c->lingering = true;
	c->closing = true;
	c->close_after = false;
	timer_set(c, LINGER_MS);
	if (!c->recv_armed)
		recv_arm(c);
}

/* ---- sending ---------------------------------------------------------- */

static void send_cb(struct td_op *op, int res, uint32_t flags)
{
	struct hconn *c = td_container_of(op, struct hconn, send_op);
	c->send_armed = false;
	if (res < 0) {
		if (res == -EINTR || res == -EAGAIN) {
			conn_flush(c);
			return;
		}
		c->out[0].len = c->out[1].len = 0;
		c->sent = 0;
		c->close_after = false;
		conn_close(c);
		return;
	}
	c->sent += (size_t)res;
	struct td_buf *b = &c->out[c->cur];
	if (c->sent >= b->len) {
		td_buf_reset(b);
		c->sent = 0;
		c->cur ^= 1;
	}
	if (c->closing && !c->close_after) {
		conn_maybe_free(c);
		return;
	}
	conn_flush(c);
	if (!c->send_armed) {
		if (c->close_after) {
			conn_linger(c);
			return;
		}
		/* Room again: parse what pipelined requests wait. */
		conn_process(c);
	}
}

/* Start a send of whatever is queued, if none is in flight. */
static void conn_flush(struct hconn *c)
{
	if (c->send_armed || c->fd < 0)
		return;
	struct td_buf *b = &c->out[c->cur];
	if (b->len == c->sent) {
		if (!c->out[c->cur ^ 1].len)
			return;
		td_buf_reset(b);
		c->sent = 0;
		c->cur ^= 1;
		b = &c->out[c->cur];
	}
	struct io_uring_sqe *sqe = td_reactor_sqe(c->srv->reactor, &c->send_op);
	io_uring_prep_send(sqe, c->fd, b->data + c->sent, b->len - c->sent, MSG_NOSIGNAL);
	c->send_armed = true;
	timer_set(c, c->srv->conf.write_timeout_ms);
}

/* ---- answering --------------------------------------------------------- */

static struct hconn *hx_conn(struct td_hx *x)
{
	return td_container_of(x, struct hconn, hx);
}

bool td_hx_gone(const struct td_hx *x)
{
	return td_container_of(x, struct hconn, hx)->closing;
}

/* After a response was queued for the request in hand. */
static void answered(struct hconn *c, int status)
{
	count(c->srv, status);
	c->busy = false;
	c->body_tick = 0;
	c->hx.priv = NULL;
	td_hparse_next(&c->hp);
	if (c->closing) { /* the client went away meanwhile */
		c->out[0].len = c->out[1].len = 0;
		c->sent = 0;
		c->close_after = false;
		conn_maybe_free(c);
		return;
	}
	if (c->in_handler)
		return; /* conn_process goes on with the next request */
	conn_process(c);
}

static bool keep_alive(const struct hconn *c)
{
	return c->hx.req && c->hx.req->keep_alive && !c->srv->stopping && !c->close_after;
}

/* Extra header lines for the answer: the handler's, plus what HTTP/1.0
 * keep-alive clients need to hear. NULL when there are none. */
static const char *answer_extra(const struct hconn *c, const char *extra, bool ka,
				char *buf, size_t len)
{
	if (!(ka && c->hx.req && c->hx.req->http_minor == 0))
		return extra;
	snprintf(buf, len, "%sConnection: keep-alive\r\n", extra ? extra : "");
	return buf;
}

/* A HEAD request gets the head of the answer only (with the Content-Length
 * the body would have had). */
static void strip_head_body(struct hconn *c, struct td_buf *out, size_t start)
{
	if (!c->hx.req || strcmp(c->hx.req->method, "HEAD") != 0)
		return;
	char *end = memmem(out->data + start, out->len - start, "\r\n\r\n", 4);
	if (end) {
		out->len = (size_t)(end + 4 - out->data);
		out->data[out->len] = '\0';
	}
}

void td_hx_respond(struct td_hx *x, int status, const char *ctype, const char *extra,
		   const char *body, size_t len)
{
	struct hconn *c = hx_conn(x);
	bool ka = keep_alive(c);
	char ex[512];
	if (!c->closing) {
		struct td_buf *out = queued_out(c);
		size_t start = out->len;
		if (td_hresp(out, status, ctype, answer_extra(c, extra, ka, ex, sizeof(ex)), body,
			     len, ka))
			c->closing = true; /* out of memory: drop the connection */
		else
			strip_head_body(c, out, start);
	}
	if (!ka)
		c->close_after = true;
	answered(c, status);
}

void td_hx_error(struct td_hx *x, int status, const char *code, const char *message,
		 const char *extra)
{
	struct hconn *c = hx_conn(x);
	bool ka = keep_alive(c);
	char ex[512];
	if (!c->closing) {
		struct td_buf *out = queued_out(c);
		size_t start = out->len;
		if (td_hresp_error(out, status, code, message,
				   answer_extra(c, extra, ka, ex, sizeof(ex)), ka))
			c->closing = true;
		else
			strip_head_body(c, out, start);
	}
	if (!ka)
		c->close_after = true;
	answered(c, status);
}

/* ---- receiving and parsing ------------------------------------------- */

static void recv_arm(struct hconn *c)
{
	struct td_httpd *s = c->srv;
	if (c->starved)
		return; /* starved_cb arms it */
	struct io_uring_sqe *sqe = td_reactor_sqe(s->reactor, &c->recv_op);
	io_uring_prep_recv(sqe, c->fd, NULL, BUF_SIZE, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = s->conf.bgid;
	c->recv_armed = true;
}

/*
 * Feed @data to the parser and act on what it reports. Returns the bytes
 * consumed: all of them, unless a request went to the handler (or an error
 * ended the connection) first.
 */
static size_t conn_feed(struct hconn *c, const char *data, size_t len)
{
	struct td_httpd *s = c->srv;
	size_t off = 0;
	while (off < len && !c->busy && !c->close_after && !c->closing) {
		if (!td_hparse_started(&c->hp))
			c->started_tick = td_mono_ms();
		enum td_hparse_ev ev;
		off += td_hparse_feed(&c->hp, data + off, len - off, &ev);
		switch (ev) {
		case TD_HP_MORE:
			return off;
		case TD_HP_CONTINUE:
			td_hresp_continue(queued_out(c));
			break;
		case TD_HP_REQUEST:
			c->busy = true;
			c->hx.req = td_hparse_req(&c->hp);
			c->hx.priv = NULL;
			c->in_handler = true;
			s->handler(&c->hx, s->arg);
			c->in_handler = false;
			if (c->closing)
				return off; /* the caller closes it */
			if (!c->busy && out_pending(c) >= OUT_HIGH)
				return off; /* let the client read first */
			break;
		case TD_HP_ERROR: {
			const struct td_hparse_err *e = td_hparse_error(&c->hp);
			s->stats.parse_errors++;
			td_hresp_error(queued_out(c), e->status, e->code, e->message, NULL,
				       false);
			count(s, e->status);
			c->close_after = true;
			return len;
		}
		}
	}
	return off;
}

/* Go on with buffered input; arm a recv when the parser wants more. */
static void conn_process(struct hconn *c)
{
	if (c->closing || c->busy || c->close_after)
		goto out;
	if (c->in_off < c->in.len) {
		size_t n = conn_feed(c, c->in.data + c->in_off, c->in.len - c->in_off);
		c->in_off += n;
		if (c->in_off == c->in.len) {
			td_buf_reset(&c->in);
			c->in_off = 0;
			if (c->in.cap > BUF_SIZE) /* do not pin a big buffer */
				td_buf_finish(&c->in);
		}
	}
	if (!c->busy && !c->close_after && !c->closing && c->in_off == c->in.len &&
	    !c->recv_armed && out_pending(c) < OUT_HIGH)
		recv_arm(c);
out:
	if (c->closing && !c->close_after && !c->lingering) {
		if (!c->busy)
			conn_close(c);
		return;
	}
	conn_flush(c);
	if (!c->send_armed && c->close_after)
		conn_linger(c);
	else
		timer_update(c);
}

static void starve(struct hconn *c)
{
	struct td_httpd *s = c->srv;
	if (c->starved)
		return; /* on the list already: one entry per connection */
	c->starved = true;
	c->starved_next = s->starved;
	s->starved = c;
	if (!td_timer_pending(&s->starved_timer))
		td_wheel_add(s->wheel, &s->starved_timer, td_mono_ms() + 1);
}

static void starved_cb(struct td_timer *t, uint64_t now)
{
	struct td_httpd *s = td_container_of(t, struct td_httpd, starved_timer);
	struct hconn *c = s->starved;
	s->starved = NULL;
	while (c) {
		struct hconn *next = c->starved_next;
		c->starved = false;
		if (c->closing && !c->lingering)
			conn_maybe_free(c);
		else if (!c->recv_armed)
			recv_arm(c);
		c = next;
	}
}

static void recv_cb(struct td_op *op, int res, uint32_t flags)
{
	struct hconn *c = td_container_of(op, struct hconn, recv_op);
	struct td_httpd *s = c->srv;
	c->recv_armed = false;
	if (res <= 0 && (flags & IORING_CQE_F_BUFFER))
		buf_return(s, flags >> IORING_CQE_BUFFER_SHIFT); /* never lose one */
	if (res == -ENOBUFS && !c->closing && !c->close_after) {
		starve(c); /* every buffer is in use: retry in a moment */
		return;
	}
	bool have = res > 0 && (flags & IORING_CQE_F_BUFFER);
	if (have && (c->lingering || c->closing || c->close_after)) {
		/* Discarded: the connection ends after its last answer. */
		buf_return(s, flags >> IORING_CQE_BUFFER_SHIFT);
		if (c->lingering)
			recv_arm(c);
		else
			conn_maybe_free(c);
		return;
	}
	if (!have) {
		if (res == 0 && c->busy) {
			/* Half-closed after sending its request: answer, then
			 * close. */
			c->close_after = true;
			return;
		}
		if (c->busy) {
			c->closing = true; /* reset: the answer will be dropped */
			return;
		}
		if (c->close_after && !c->lingering)
			return; /* the final answer is still being sent */
		conn_close(c);
		return;
	}
	unsigned bid = flags >> IORING_CQE_BUFFER_SHIFT;
	const char *data = s->bufs + (size_t)bid * BUF_SIZE;
	size_t len = (size_t)res, n = 0;
	if (c->in_off == c->in.len)
		n = conn_feed(c, data, len);
	if (n < len && !c->close_after && !c->closing &&
	    td_buf_append(&c->in, data + n, len - n))
		c->closing = true;
	buf_return(s, bid);
	if (c->closing && !c->busy) {
		conn_close(c);
		return;
	}
	conn_process(c);
}

/* ---- accepting --------------------------------------------------------- */

static void accept_arm(struct td_httpd *s)
{
	struct io_uring_sqe *sqe = td_reactor_sqe(s->reactor, &s->accept_op);
	io_uring_prep_multishot_accept(sqe, s->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	s->accept_armed = true;
}

static void accept_retry_cb(struct td_timer *t, uint64_t now)
{
	struct td_httpd *s = td_container_of(t, struct td_httpd, accept_timer);
	if (!s->stopping && !s->accept_armed)
		accept_arm(s);
}

static void peer_name(int fd, char *buf, size_t len)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	buf[0] = '\0';
	if (getpeername(fd, (struct sockaddr *)&ss, &sl) < 0)
		return;
	if (ss.ss_family == AF_INET)
		inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, buf, (socklen_t)len);
	else if (ss.ss_family == AF_INET6)
		inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, buf, (socklen_t)len);
}

/* Over the connection limit: a short 503 with a plain non-blocking send
 * (a fresh socket's send buffer takes it), then close. */
static void refuse(struct td_httpd *s, int fd)
{
	struct td_buf b = TD_BUF_INIT;
	char msg[96];
	snprintf(msg, sizeof(msg), "connection limit (%u) reached", s->conf.max_conns);
	if (td_hresp_error(&b, 503, "too_many_connections", msg, "Retry-After: 1\r\n",
			   false) == 0) {
		ssize_t n = send(fd, b.data, b.len, MSG_NOSIGNAL | MSG_DONTWAIT);
		(void)n;
	}
	td_buf_finish(&b);
	close(fd);
	s->stats.rejected_conns++;
	count(s, 503);
}

static void accept_cb(struct td_op *op, int res, uint32_t flags)
{
	struct td_httpd *s = td_container_of(op, struct td_httpd, accept_op);
	if (!(flags & IORING_CQE_F_MORE))
		s->accept_armed = false;
	if (res < 0) {
		if (res != -ECANCELED && !s->stopping) {
			td_warn("accept failed", "\"listener\":\"%s\",\"error\":\"%s\"",
				s->conf.name, strerror(-res));
			if (!s->accept_armed && !td_timer_pending(&s->accept_timer))
				td_wheel_add(s->wheel, &s->accept_timer,
					     td_mono_ms() + ACCEPT_RETRY_MS);
		}
		return;
	}
	if (!s->accept_armed && !s->stopping && !td_timer_pending(&s->accept_timer))
		accept_arm(s);
	int fd = res;
	if (s->stopping) {
		close(fd);
		return;
	}
	if (s->stats.conns >= s->conf.max_conns) {
		refuse(s, fd);
		return;
	}
	struct hconn *c = calloc(1, sizeof(*c));
	if (!c || td_hparse_init(&c->hp, &s->conf.lim)) {
		free(c);
		close(fd);
		return;
	}
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c->srv = s;
	c->fd = fd;
	c->recv_op.cb = recv_cb;
	c->send_op.cb = send_cb;
	td_timer_init(&c->timer, timer_cb);
	c->hx.srv = s;
	peer_name(fd, c->hx.peer, sizeof(c->hx.peer));
	c->next = s->conns;
	if (s->conns)
		s->conns->prev = c;
	s->conns = c;
	s->stats.conns++;
	s->stats.accepted++;
	recv_arm(c);
	timer_update(c);
}

/* ---- listener ---------------------------------------------------------- */

static int parse_hostport(const char *hp, char *host, size_t hlen, char *port, size_t plen)
{
	const char *colon;
	if (hp[0] == '[') {
		const char *end = strchr(hp, ']');
		if (!end || end[1] != ':')
			return -EINVAL;
		if ((size_t)(end - hp - 1) >= hlen)
			return -EINVAL;
		memcpy(host, hp + 1, (size_t)(end - hp - 1));
		host[end - hp - 1] = '\0';
		colon = end + 1;
	} else {
		colon = strrchr(hp, ':');
		if (!colon || (size_t)(colon - hp) >= hlen)
			return -EINVAL;
		memcpy(host, hp, (size_t)(colon - hp));
		host[colon - hp] = '\0';
	}
	const char *p = colon + 1;
	if (!*p || strlen(p) >= plen || strspn(p, "0123456789") != strlen(p) ||
	    atol(p) > 65535)
		return -EINVAL;
	snprintf(port, plen, "%s", p);
	return 0;
}

static int open_listener(struct td_httpd *s, const char *hostport)
{
	char host[256], port[8];
	if (parse_hostport(hostport, host, sizeof(host), port, sizeof(port))) {
		td_error("bad listen address, want HOST:PORT", "\"listener\":\"%s\",\"addr\":\"%s\"",
			 s->conf.name, hostport);
		return -EINVAL;
	}
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
				 .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
	struct addrinfo *ai;
	int gai = getaddrinfo(host[0] ? host : NULL, port, &hints, &ai);
	if (gai) {
		td_error("cannot resolve listen address", "\"listener\":\"%s\",\"addr\":\"%s\",\"error\":\"%s\"",
			 s->conf.name, hostport, gai_strerror(gai));
		return -EINVAL;
	}
	int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int rc = fd < 0 ? -errno : 0;
	int one = 1;
	if (!rc) {
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 4096) < 0)
			rc = -errno;
	}
	freeaddrinfo(ai);
	if (rc) {
		td_error("cannot listen", "\"listener\":\"%s\",\"addr\":\"%s\",\"error\":\"%s\"",
			 s->conf.name, hostport, strerror(-rc));
		if (fd >= 0)
			close(fd);
		return rc;
	}
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	getsockname(fd, (struct sockaddr *)&ss, &sl);
	char ip[INET6_ADDRSTRLEN] = "";
	unsigned bport = 0;
	if (ss.ss_family == AF_INET6) {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
		inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof(ip));
		bport = ntohs(a->sin6_port);
		snprintf(s->addr, sizeof(s->addr), "[%s]:%u", ip, bport);
	} else {
		struct sockaddr_in *a = (struct sockaddr_in *)&ss;
		inet_ntop(AF_INET, &a->sin_addr, ip, sizeof(ip));
		bport = ntohs(a->sin_port);
		snprintf(s->addr, sizeof(s->addr), "%s:%u", ip, bport);
	}
	s->fd = fd;
	return 0;
}

static int setup_buffers(struct td_httpd *s)
{
	s->br_size = BUF_COUNT * sizeof(struct io_uring_buf);
	void *mem = mmap(NULL, s->br_size, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED)
		return -errno;
	s->br = mem;
	s->bufs = malloc((size_t)BUF_COUNT * BUF_SIZE);
	if (!s->bufs)
		return -ENOMEM;
	struct io_uring_buf_reg reg = {.ring_addr = (unsigned long)mem,
				       .ring_entries = BUF_COUNT, .bgid = s->conf.bgid};
	int rc = io_uring_register_buf_ring(&s->reactor->ring, &reg, 0);
	if (rc) {
		td_error("io_uring provided buffers unavailable (kernel >= 5.19 needed)",
			 "\"error\":\"%s\"", strerror(-rc));
		return rc;
	}
	io_uring_buf_ring_init(s->br);
	for (unsigned i = 0; i < BUF_COUNT; i++)
		io_uring_buf_ring_add(s->br, s->bufs + (size_t)i * BUF_SIZE, BUF_SIZE,
				      (unsigned short)i, io_uring_buf_ring_mask(BUF_COUNT), (int)i);
	io_uring_buf_ring_advance(s->br, BUF_COUNT);
	return 0;
}

int td_httpd_listen(struct td_httpd **out, struct td_reactor *r, struct td_wheel *w,
		    const char *hostport, const struct td_httpd_conf *conf,
		    td_httpd_handler h, void *arg)
{
	struct td_httpd *s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->reactor = r;
	s->wheel = w;
	s->conf = *conf;
	s->handler = h;
	s->arg = arg;
	s->fd = -1;
	s->accept_op.cb = accept_cb;
	td_timer_init(&s->accept_timer, accept_retry_cb);
	td_timer_init(&s->starved_timer, starved_cb);
	int rc = open_listener(s, hostport);
	if (!rc)
		rc = setup_buffers(s);
	if (rc) {
		if (s->br)
			io_uring_unregister_buf_ring(&r->ring, conf->bgid);
		td_httpd_free(s);
		return rc;
	}
	accept_arm(s);
	td_info("listening", "\"listener\":\"%s\",\"addr\":\"%s\"", s->conf.name, s->addr);
	*out = s;
	return 0;
}

const char *td_httpd_addr(const struct td_httpd *s)
{
	return s->addr;
}

const char *td_httpd_name(const struct td_httpd *s)
{
	return s->conf.name;
}

const struct td_httpd_stats *td_httpd_stats(const struct td_httpd *s)
{
	return &s->stats;
}

void td_httpd_stop(struct td_httpd *s)
{
	if (!s || s->stopping)
		return;
	s->stopping = true;
	td_wheel_cancel(s->wheel, &s->accept_timer);
	if (s->accept_armed)
		td_reactor_cancel(s->reactor, &s->accept_op);
	shutdown(s->fd, SHUT_RD);
	for (struct hconn *c = s->conns, *next; c; c = next) {
		next = c->next;
		if (!c->busy && !c->send_armed && !td_hparse_started(&c->hp))
			conn_close(c);
	}
}

void td_httpd_free(struct td_httpd *s)
{
	if (!s)
		return;
	while (s->conns) {
		struct hconn *c = s->conns;
		s->conns = c->next;
		if (c->fd >= 0)
			close(c->fd);
		td_hparse_finish(&c->hp);
		td_buf_finish(&c->in);
		td_buf_finish(&c->out[0]);
		td_buf_finish(&c->out[1]);
		free(c);
	}
	if (s->fd >= 0)
		close(s->fd);
	if (s->br)
		munmap(s->br, s->br_size);
	free(s->bufs);
	free(s);
}
