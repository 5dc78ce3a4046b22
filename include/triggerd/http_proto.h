/*
 * HTTP/1.1 request parsing and response writing for the server, without any
 * I/O: bytes go in, complete requests (or a status to answer with) come out.
 * The io_uring server (engine/httpd.c) owns sockets and timers; this module
 * owns the protocol, so it can be fuzzed and unit-tested on its own.
 *
 * Parsing is Debian's http-parser (libhttp-parser-dev, 2.9); this module adds
 * what a server needs around it: bounded header and body storage, chunked
 * bodies joined, `Expect: 100-continue`, and one request at a time, so that
 * pipelined requests are answered in order.
 *
 * Usage, per connection:
 *
 *   td_hparse_init(&p, &limits);
 *   for each received chunk:
 *       off = 0;
 *       while (off < len) {
 *           off += td_hparse_feed(&p, data + off, len - off, &ev);
 *           switch (ev) {
 *           case TD_HP_MORE:     break out, wait for more bytes
 *           case TD_HP_CONTINUE: send "100 Continue" (td_hresp_continue),
 *                                keep feeding
 *           case TD_HP_REQUEST:  handle td_hparse_req(&p); after the
 *                                response is queued, td_hparse_next(&p);
 *                                bytes after `off` are the next request
 *           case TD_HP_ERROR:    answer td_hparse_error(&p) and close
 *           }
 *       }
 *   td_hparse_finish(&p);
 */
#ifndef TRIGGERD_HTTP_PROTO_H
#define TRIGGERD_HTTP_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "triggerd/buf.h"

struct http_parser;

/* max_header counts every byte before the body: the request line, the
 * header block with its CRLFs, and any empty lines before the request line.
 * http-parser adds its own cap of 80 KiB on top. */
struct td_hparse_limits {
	size_t max_header;       /* request line + headers, bytes (431 past it) */
	size_t max_body;         /* body after de-chunking, bytes (413 past it) */
	unsigned max_headers;    /* header count (431 past it) */
};

/* Defaults: 16 KiB of headers, 100 headers, 1 MiB body. */
#define TD_HPARSE_LIMITS_DEFAULT {16 * 1024, 1024 * 1024, 100}

struct td_hhdr {
	const char *name;        /* as received (compare case-insensitively) */
	size_t name_len;
	const char *value;       /* leading/trailing whitespace trimmed */
	size_t value_len;
};

/* A complete request. Every pointer stays valid until td_hparse_next() or
 * td_hparse_finish(); strings are NUL-terminated as well as measured. */
struct td_hreq {
	const char *method;      /* "GET", "POST", ... */
	const char *target;      /* request-target as sent, e.g. "/a/b?x=1" */
	size_t target_len;
	const char *path;        /* target up to '?' or '#' (not decoded); of an
				    absolute-form target, only the path ("/"
				    when empty) */
	size_t path_len;
	const char *query;       /* after '?', up to '#'; "" when none */
	size_t query_len;
	const struct td_hhdr *hdrs; /* trailer fields are not included */
	unsigned nhdrs;
	const char *body;        /* de-chunked; "" when none */
	size_t body_len;
	bool keep_alive;         /* HTTP/1.1 without `Connection: close`, or
				    HTTP/1.0 with `Connection: keep-alive` */
	bool chunked;            /* the body came chunked */
	unsigned short http_major, http_minor;
};

enum td_hparse_ev {
	TD_HP_MORE,              /* everything fed was consumed; need more */
	TD_HP_CONTINUE,          /* headers done, `Expect: 100-continue` and a
				    body still to come: send 100 if willing.
				    Reported once, right after the header block
				    of an HTTP/1.1 request that has the
				    expectation and a body (Content-Length > 0
				    or chunked), even when body bytes were fed
				    along with the headers */
	TD_HP_REQUEST,           /* a complete request: td_hparse_req() */
	TD_HP_ERROR,             /* malformed or over a limit: td_hparse_error() */
};

/* Why a request could not be parsed; the server answers @status with a JSON
 * body built from @code and @message, then closes the connection. */
struct td_hparse_err {
	int status;              /* 400, 413, 417, 431, 500, 501, 505 */
	const char *code;        /* short token: "bad_request", "header_too_large",
				    "body_too_large", "too_many_headers",
				    "unsupported_transfer_encoding",
				    "unsupported_expectation",
				    "version_not_supported",
				    "not_implemented" (CONNECT, Upgrade),
				    "out_of_memory" (500) */
	char message[160];       /* one line for humans, never quoting input
				    bytes that are not printable ASCII */
};

struct td_hparse {
	struct td_hparse_limits lim;
	struct http_parser *hp;  /* allocated by init */
	/* The rest is private to http_proto.c. */
	struct td_buf head;      /* method, target, header names and values */
	struct td_buf body;
	struct td_hhdr *hdrs;
	unsigned nhdrs, hdrs_cap;
	struct td_hreq req;
	struct td_hparse_err err;
	size_t head_bytes;       /* bytes of request line + headers seen */
	uint8_t state;           /* private */
	uint8_t hdr_state;       /* private: last callback was field / value */
	bool started;            /* some byte of the current request was fed */
	bool headers_done;
	bool continue_sent;      /* TD_HP_CONTINUE already reported */
};

/** Set up a parser for one connection; @lim NULL means the defaults.
 * Returns 0 or -ENOMEM. */
int td_hparse_init(struct td_hparse *p, const struct td_hparse_limits *lim);
/** Free everything. Accepts a zeroed parser. */
void td_hparse_finish(struct td_hparse *p);

/**
 * Parse up to @len bytes. Returns how many were consumed (<= @len) and sets
 * *@ev. Stops right after the last byte of a complete request (TD_HP_REQUEST),
 * right after the header block when TD_HP_CONTINUE applies, at the first
 * error, or when all bytes are consumed (TD_HP_MORE). After TD_HP_REQUEST,
 * feeding again before td_hparse_next() is an error of the caller (asserted).
 * After TD_HP_ERROR every further call returns 0 with TD_HP_ERROR.
 */
size_t td_hparse_feed(struct td_hparse *p, const char *data, size_t len,
		      enum td_hparse_ev *ev);

/** The request after TD_HP_REQUEST. Once td_hparse_headers_done() (so
 * from TD_HP_CONTINUE on) all but body, body_len and keep_alive is set. */
const struct td_hreq *td_hparse_req(const struct td_hparse *p);
/** The error after TD_HP_ERROR. */
const struct td_hparse_err *td_hparse_error(const struct td_hparse *p);
/** Done with the current request: get ready for the next on this
 * connection (memory is kept for reuse, trimmed when it grew large).
 * After TD_HP_ERROR it does nothing: the error stays. */
void td_hparse_next(struct td_hparse *p);

/** True once any byte of the current request has arrived (the header read
 * timeout runs from then), and once its header block is complete. */
static inline bool td_hparse_started(const struct td_hparse *p)
{
	return p->started;
}
static inline bool td_hparse_headers_done(const struct td_hparse *p)
{
	return p->headers_done;
}

/** The value of header @name (case-insensitive) in @r, or NULL; the first
 * one when repeated. *@len gets its length. */
const char *td_hreq_header(const struct td_hreq *r, const char *name, size_t *len);

/* ---- responses ------------------------------------------------------ */

/** "HTTP/1.1 100 Continue\r\n\r\n" into @out. */
int td_hresp_continue(struct td_buf *out);

/**
 * A complete response into @out: status line with the standard reason
 * phrase, `Content-Length` (not for 1xx and 204, which have no body),
 * `Content-Type` (omitted when @ctype is NULL), `Connection: close` when
 * !@keep_alive, @extra (zero or more complete "Name: value\r\n" lines, or
 * NULL), then the body. Returns 0, -ENOMEM, or -EINVAL when @status is not
 * 100..999 or is 1xx/204 with a body; @out is unchanged on error.
 */
int td_hresp(struct td_buf *out, int status, const char *ctype, const char *extra,
	     const char *body, size_t body_len, bool keep_alive);

/**
 * A JSON error response: {"status":N,"error":"<code>","message":"<message>"}
 * (message JSON-escaped) with `Content-Type: application/json`. Returns as
 * td_hresp() does.
 */
int td_hresp_error(struct td_buf *out, int status, const char *code,
		   const char *message, const char *extra, bool keep_alive);

/** The standard reason phrase of @status ("Unknown" when not known). */
const char *td_http_reason(int status);

#endif
