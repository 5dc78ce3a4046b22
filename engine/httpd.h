/*
 * The HTTP/1.1 server on the shard's io_uring: one listener per address,
 * used by the webhook endpoint and the control API.
 *
 * Accepts with one multishot accept; receives with single-shot recvs that
 * pick a buffer from a provided-buffer ring (IOSQE_BUFFER_SELECT), so an
 * idle keep-alive connection holds no receive buffer; bytes left over after
 * a complete request (pipelining) are copied into the connection. One
 * request per connection is handled at a time and responses are sent in
 * order; several pipelined responses go out in one send. Parsing and the
 * limits are http_proto's (include/triggerd/http_proto.h).
 *
 * A handler gets a struct td_hx and answers it exactly once with
 * td_hx_respond() or td_hx_error(), at once or later (after a Redis round
 * trip). If the client goes away first, the exchange stays valid until it
 * is answered; the answer is then dropped.
 */
#ifndef TD_HTTPD_H
#define TD_HTTPD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "reactor.h"
#include "triggerd/http_proto.h"
#include "triggerd/wheel.h"

struct td_httpd;

struct td_httpd_conf {
	const char *name;            /* "webhook", "api": logs and metrics */
	struct td_hparse_limits lim;
	unsigned max_conns;          /* past it: 503 and close */
	unsigned header_timeout_ms;  /* first byte to end of headers: 408 */
	unsigned body_timeout_ms;    /* end of headers to end of body: 408 */
	unsigned idle_timeout_ms;    /* keep-alive wait for the next request */
	unsigned write_timeout_ms;   /* a response not taken by the client */
	uint16_t bgid;               /* provided-buffer group, unique per ring */
};

#define TD_HTTPD_CONF_DEFAULT { .name = "http", .lim = TD_HPARSE_LIMITS_DEFAULT, \
	.max_conns = 10000, .header_timeout_ms = 10000, .body_timeout_ms = 30000, \
	.idle_timeout_ms = 60000, .write_timeout_ms = 30000, .bgid = 1 }

/* One request and its answer. */
struct td_hx {
	const struct td_hreq *req;
	struct td_httpd *srv;
	char peer[48];               /* client IP address, text */
	void *priv;                  /* the handler's */
};

typedef void (*td_httpd_handler)(struct td_hx *x, void *arg);

/* Requests answered, by status code (100..599), for /metrics. */
#define TD_HTTPD_CODES 500
struct td_httpd_stats {
	unsigned long long by_code[TD_HTTPD_CODES];
	unsigned long long accepted, rejected_conns, timeouts, parse_errors;
	unsigned conns;              /* open now */
};

/**
 * Listen on @hostport ("127.0.0.1:8080", "[::1]:0", "0.0.0.0:9000"; port 0
 * picks a free one) and serve with @h. Logs a "listening" line with the
 * bound address. Returns 0 or -errno (with a log line naming the address).
 */
int td_httpd_listen(struct td_httpd **out, struct td_reactor *r, struct td_wheel *w,
		    const char *hostport, const struct td_httpd_conf *conf,
		    td_httpd_handler h, void *arg);

/** Answer @x. @extra: complete "Name: value\r\n" header lines or NULL. */
void td_hx_respond(struct td_hx *x, int status, const char *ctype, const char *extra,
		   const char *body, size_t len);
/** Answer @x with a JSON error body (see td_hresp_error). */
void td_hx_error(struct td_hx *x, int status, const char *code, const char *message,
		 const char *extra);
/** True when the client of @x has gone (the answer will be dropped). */
bool td_hx_gone(const struct td_hx *x);

/** The bound address ("127.0.0.1:8080") and the listener's name. */
const char *td_httpd_addr(const struct td_httpd *s);
const char *td_httpd_name(const struct td_httpd *s);
const struct td_httpd_stats *td_httpd_stats(const struct td_httpd *s);

/** Stop accepting; answer what is in flight with `Connection: close` and
 * close idle connections. */
void td_httpd_stop(struct td_httpd *s);
/**
 * Free everything. Call only after the ring is torn down (td_reactor_finish)
 * or when no op of this server can complete any more. Accepts NULL.
 */
void td_httpd_free(struct td_httpd *s);

#endif
