/*
 * libFuzzer target: the HTTP/1.1 request parser and the response writers.
 *
 * Input: a flag byte, a split seed, then the bytes a client sends on one
 * connection. Flags: bit 0 default limits instead of the small ones (2 KiB
 * of headers, 4 KiB of body, 16 headers) that make the limit paths easy to
 * reach; bit 1 split after every byte instead of at points drawn from the
 * seed. The connection is parsed twice, whole and split; every piece is in
 * its own exact-size allocation, so ASan sees any over-read, and is freed
 * after the feed, so ASan sees any pointer kept into it.
 *
 * Invariants (abort() on violation):
 *  - a feed consumes at most what it is given, and all of it on TD_HP_MORE;
 *  - a request keeps within the limits (body, header bytes, header count),
 *    its strings are NUL-terminated at their lengths and point into the
 *    parser's own storage, which is bounded by the limits too;
 *  - an error has a known status and code and a printable ASCII message,
 *    and every later feed returns 0 with TD_HP_ERROR;
 *  - whole and split parses report exactly the same events, except that an
 *    error may have another status or message: a malformed byte can be
 *    noticed by http-parser or, at the end of a piece, by a callback, and
 *    before or after a limit is reached;
 *  - responses built from request strings are well formed, with a
 *    Content-Length that matches the body.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "triggerd/http_proto.h"

#include "fuzz_common.h"

#define die(what, detail) fuzz_die("fuzz_http", what, detail)

static const struct td_hparse_limits small = {2048, 4096, 16};
static const struct td_hparse_limits deflt = TD_HPARSE_LIMITS_DEFAULT;

static bool inside(const struct td_buf *b, const char *s, size_t n)
{
	return s >= b->data && s + n < b->data + b->len + 1;
}

/* A measured string that is NUL-terminated and (unless empty) lies in @b. */
static void check_str(const struct td_buf *b, const char *s, size_t n, const char *what)
{
	if (!s || s[n] != '\0' || strlen(s) != n)
		die("string not terminated at its length", what);
	if (n && !inside(b, s, n))
		die("string outside the parser's storage", what);
}

static bool is_ows(char c)
{
	return c == ' ' || c == '\t';
}

static size_t sum(const char *s, size_t n)
{
	size_t h = 0;
	for (size_t i = 0; i < n; i++)
		h = h * 31 + (unsigned char)s[i];
	return h;
}

/* Parses "HTTP/1.1 NNN ...\r\n...\r\n\r\nbody" and checks Content-Length. */
static void check_response(const struct td_buf *out, size_t start)
{
	const char *r = out->data + start, *end = out->data + out->len;
	const char *hend = memmem(r, (size_t)(end - r), "\r\n\r\n", 4);
	const char *cl = memmem(r, hend ? (size_t)(hend - r) : 0, "\r\nContent-Length: ", 18);

	if (strncmp(r, "HTTP/1.1 ", 9) || !hend || !cl)
		die("malformed response", r);
	size_t blen = strtoul(cl + 18, NULL, 10);
	if (blen != (size_t)(end - (hend + 4)))
		die("Content-Length does not match the body", r);
}

static void respond(const struct td_hreq *r)
{
	struct td_buf out = TD_BUF_INIT, extra = TD_BUF_INIT;
	const char *ct = td_hreq_header(r, "content-type", NULL);

	/* Header values hold no CR or LF, so they make a valid extra line. */
	if (r->nhdrs && td_buf_printf(&extra, "X-Echo: %s\r\n", r->hdrs[0].value))
		abort();
	if (td_hresp(&out, 200, ct, extra.data, r->body, r->body_len, r->keep_alive))
		die("td_hresp failed", "");
	check_response(&out, 0);
	size_t mark = out.len;
	if (td_hresp_error(&out, 404, r->method, r->target, extra.data, r->keep_alive))
		die("td_hresp_error failed", "");
	check_response(&out, mark);
	if (td_hresp_continue(&out) ||
	    strcmp(out.data + out.len - 25, "HTTP/1.1 100 Continue\r\n\r\n"))
		die("td_hresp_continue", "");
	td_buf_finish(&out);
	td_buf_finish(&extra);
}

static void check_req(const struct td_hparse *p, struct td_buf *log)
{
	const struct td_hreq *r = td_hparse_req(p);
	const struct td_hparse_limits *lim = &p->lim;
	size_t h = 0;

	if (r->body_len > lim->max_body || p->head_bytes > lim->max_header ||
	    r->nhdrs > lim->max_headers || r->nhdrs != p->nhdrs)
		die("request over the limits", r->target);
	/* target, names and values, NULs, and path and query copied once */
	if (p->head.len > 2 * lim->max_header + 2 * (size_t)lim->max_headers + 8)
		die("header storage over its bound", r->target);
	if (p->body.cap > 2 * (lim->max_body + 1) + 64)
		die("body storage over its bound", "");
	if (!r->method || !r->method[0])
		die("no method", "");
	check_str(&p->head, r->target, r->target_len, "target");
	check_str(&p->head, r->path, r->path_len, "path");
	check_str(&p->head, r->query, r->query_len, "query");
	if (r->http_major != 1 || r->http_minor > 1)
		die("bad version accepted", r->target);
	for (unsigned i = 0; i < r->nhdrs; i++) {
		const struct td_hhdr *hd = &r->hdrs[i];
		check_str(&p->head, hd->name, hd->name_len, "name");
		check_str(&p->head, hd->value, hd->value_len, "value");
		if (!hd->name_len)
			die("empty header name", "");
		if (hd->value_len && (is_ows(hd->value[0]) || is_ows(hd->value[hd->value_len - 1])))
			die("value not trimmed", hd->value);
		size_t len;
		if (!td_hreq_header(r, hd->name, &len))
			die("td_hreq_header misses a header", hd->name);
		h += sum(hd->name, hd->name_len) ^ sum(hd->value, hd->value_len);
	}
	if (!r->body || r->body[r->body_len] != '\0')
		die("body not terminated", "");
	h += sum(r->body, r->body_len);
	if (td_buf_printf(log, "R %s %s %s %s %u.%u %d %d %u %zu %zx\n", r->method, r->target,
			  r->path, r->query, r->http_major, r->http_minor, r->keep_alive,
			  r->chunked, r->nhdrs, r->body_len, h))
		abort();
	respond(r);
}

static void check_err(const struct td_hparse *p, struct td_buf *log)
{
	static const int known[] = {400, 413, 417, 431, 500, 501, 505};
	const struct td_hparse_err *e = td_hparse_error(p);
	bool ok = false;

	for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
		ok |= e->status == known[i];
	if (!ok || !e->code || !memchr(e->message, 0, sizeof(e->message)) || !e->message[0])
		die("bad error", e->message);
	for (const char *m = e->message; *m; m++)
		if (*m < 0x20 || *m > 0x7e)
			die("non-printable byte in the message", e->message);
	if (td_buf_puts(log, "E\n"))
		abort();
}

/* Feeds one piece from its own allocation; returns false once dead. */
static bool feed(struct td_hparse *p, const uint8_t *s, size_t n, struct td_buf *log)
{
	char *piece = malloc(n ? n : 1);
	size_t off = 0;
	bool alive = true;

	if (!piece)
		abort();
	memcpy(piece, s, n);
	while (off < n) {
		enum td_hparse_ev ev;
		size_t used = td_hparse_feed(p, piece + off, n - off, &ev);
		if (used > n - off)
			die("consumed more than given", "");
		off += used;
		if (ev == TD_HP_MORE) {
			if (off != n)
				die("TD_HP_MORE with bytes left", "");
		} else if (ev == TD_HP_CONTINUE) {
			if (!td_hparse_headers_done(p) || td_buf_puts(log, "C\n"))
				die("CONTINUE before the headers", "");
		} else if (ev == TD_HP_REQUEST) {
			check_req(p, log);
			td_hparse_next(p);
		} else if (ev == TD_HP_ERROR) {
			check_err(p, log);
			if (td_hparse_feed(p, piece, n, &ev) != 0 || ev != TD_HP_ERROR)
				die("error not sticky", "");
			alive = false;
			break;
		} else {
			die("unknown event", "");
		}
	}
	free(piece);
	return alive;
}

/* Parses the connection in pieces; @seed 0: whole, 1: byte by byte. */
static void parse(const struct td_hparse_limits *lim, const uint8_t *d, size_t n,
		  unsigned seed, struct td_buf *log)
{
	struct td_hparse p;
	size_t off = 0;

	if (td_hparse_init(&p, lim))
		abort();
	while (off < n) {
		size_t k = n - off;
		if (seed == 1) {
			k = 1;
		} else if (seed) {
			seed = seed * 1103515245u + 12345u;
			k = 1 + (seed >> 16) % 97;
		}
		if (k > n - off)
			k = n - off;
		if (!feed(&p, d + off, k, log))
			break;
		off += k;
	}
	if (off >= n && td_buf_printf(log, "END %d\n", td_hparse_started(&p)))
		abort();
	td_hparse_finish(&p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct td_buf whole = TD_BUF_INIT, split = TD_BUF_INIT;

	if (size < 2)
		return 0;
	const struct td_hparse_limits *lim = data[0] & 1 ? &deflt : &small;
	unsigned seed = data[0] & 2 ? 1 : 2 + data[1];

	parse(lim, data + 2, size - 2, 0, &whole);
	parse(lim, data + 2, size - 2, seed, &split);
	if (td_buf_puts(&whole, "") || td_buf_puts(&split, ""))
		abort();
	if (strcmp(whole.data, split.data)) {
		fprintf(stderr, "whole:\n%s\nsplit:\n%s\n", whole.data, split.data);
		die("split parse differs from whole parse", "");
	}
	td_buf_finish(&whole);
	td_buf_finish(&split);
	return 0;
}
