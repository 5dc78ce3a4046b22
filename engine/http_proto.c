/*
 * HTTP/1.1 request parsing and response writing (see
 * include/triggerd/http_proto.h).
 *
 * http-parser does the parsing; this file bounds what it stores, joins
 * chunked bodies, and stops it after each request by pausing it from
 * on_message_complete. What Debian's build (2.9.4, non-strict) does when
 * paused, measured and relied on below:
 *
 *  - paused in on_message_complete, http_parser_execute() returns the count
 *    up to and including the byte that completed the request;
 *  - paused in on_headers_complete, it returns the count up to but excluding
 *    the final LF of the header block, which it reads first on resume;
 *  - paused in on_chunk_header / on_chunk_complete, the count includes the
 *    LF that ended the chunk-size line / the chunk data.
 *
 * The non-strict build takes any byte where it expects the LF that ends the
 * header block or a chunk-size line, and any two bytes for the CRLF after
 * chunk data; it also lets a space into field names. Those are the bytes on
 * which request smuggling relies, so they are checked here at the pauses.
 */
#include "triggerd/http_proto.h"

#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <http_parser.h>

/* td_hparse_next() frees a buffer that grew past this. */
#define SHRINK_ABOVE (64 * 1024)

enum { ST_HEAD, ST_BODY, ST_DONE, ST_ERROR };                         /* p->state */
enum { HS_NONE, HS_FIELD, HS_VALUE, HS_TRAILER };                     /* p->hdr_state */
enum { P_NONE, P_HEADERS, P_CHUNK_HEADER, P_CHUNK_DONE, P_MESSAGE }; /* box.pause */

/*
 * What td_hparse_init allocates behind p->hp: the http-parser and the state
 * kept around it, private to this file. hp stays first.
 */
struct box {
	http_parser hp;
	const char *url_at;   /* where the target began, in this buffer */
	unsigned lfs;         /* LFs consumed since the target began */
	bool counting;        /* the target began: count LFs */
	uint8_t pause;        /* P_*: which callback paused the parser */
	bool saw_te;          /* a Transfer-Encoding field arrived */
	char last[2];         /* the last two bytes consumed */
};

static struct box *box_of(const struct td_hparse *p)
{
	return (struct box *)p->hp;
}

/* ---- errors ----------------------------------------------------------- */

/* Records why the request failed (the first reason wins) and returns -1,
 * which also tells http-parser to stop when returned from a callback. The
 * message never includes input bytes. */
__attribute__((format(printf, 4, 5)))
static int fail(struct td_hparse *p, int status, const char *code, const char *fmt, ...)
{
	va_list ap;

	if (p->state == ST_ERROR)
		return -1;
	p->state = ST_ERROR;
	p->err.status = status;
	p->err.code = code;
	va_start(ap, fmt);
	vsnprintf(p->err.message, sizeof(p->err.message), fmt, ap);
	va_end(ap);
	return -1;
}

static int bad(struct td_hparse *p, const char *why)
{
	return fail(p, 400, "bad_request", "%s", why);
}

static int oom(struct td_hparse *p)
{
	return fail(p, 500, "out_of_memory", "out of memory");
}

static int head_too_large(struct td_hparse *p)
{
	return fail(p, 431, "header_too_large", "request line and headers exceed %zu bytes",
		    p->lim.max_header);
}

static int body_too_large(struct td_hparse *p)
{
	return fail(p, 413, "body_too_large", "body exceeds %zu bytes", p->lim.max_body);
}

/* Turns an error http-parser reported into the answer to send. */
static void parser_failed(struct td_hparse *p)
{
	enum http_errno e = HTTP_PARSER_ERRNO(p->hp);

	switch (e) {
	case HPE_HEADER_OVERFLOW:
		head_too_large(p);
		break;
	case HPE_INVALID_TRANSFER_ENCODING:
		fail(p, 501, "unsupported_transfer_encoding",
		     "only the chunked transfer coding is supported");
		break;
	case HPE_UNEXPECTED_CONTENT_LENGTH:
		bad(p, box_of(p)->saw_te ? "Content-Length together with Transfer-Encoding"
					 : "repeated Content-Length");
		break;
	default:
		bad(p, http_errno_description(e)); /* static ASCII */
		break;
	}
}

/* ---- storage ---------------------------------------------------------- */

static unsigned char lower(unsigned char c)
{
	return c >= 'A' && c <= 'Z' ? (unsigned char)(c + ('a' - 'A')) : c;
}

static bool ieq(const char *a, const char *b, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (lower((unsigned char)a[i]) != lower((unsigned char)b[i]))
			return false;
	return true;
}

static bool is_ows(char c)
{
	return c == ' ' || c == '\t';
}

/* RFC 9110 tchar; the non-strict build also lets ' ' into names. */
static bool is_token(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char c = lower((unsigned char)s[i]);
		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		      (c && strchr("!#$%&'*+-.^_`|~", c))))
			return false;
	}
	return true;
}

static int put(struct td_hparse *p, const char *s, size_t n)
{
	if (n && td_buf_append(&p->head, s, n))
		return oom(p);
	return 0;
}

/* A new header: the string before it (target or value) gets its NUL. */
static int start_field(struct td_hparse *p)
{
	if (put(p, "", 1))
		return -1;
	if (p->nhdrs >= p->lim.max_headers)
		return fail(p, 431, "too_many_headers", "more than %u header fields",
			    p->lim.max_headers);
	if (p->nhdrs == p->hdrs_cap) {
		unsigned cap = p->hdrs_cap ? p->hdrs_cap * 2 : 16;
		if (cap > p->lim.max_headers)
			cap = p->lim.max_headers;
		struct td_hhdr *h = realloc(p->hdrs, cap * sizeof(*h));
		if (!h)
			return oom(p);
		p->hdrs = h;
		p->hdrs_cap = cap;
	}
	p->hdrs[p->nhdrs++] = (struct td_hhdr){0};
	p->hdr_state = HS_FIELD;
	return 0;
}

/* The name is complete: terminate it, note what the error messages need. */
static int end_name(struct td_hparse *p)
{
	const struct td_hhdr *h = &p->hdrs[p->nhdrs - 1];
	static const char te[] = "transfer-encoding";

	if (h->name_len == sizeof(te) - 1 &&
	    ieq(p->head.data + p->head.len - h->name_len, te, sizeof(te) - 1))
		box_of(p)->saw_te = true;
	p->hdr_state = HS_VALUE;
	return put(p, "", 1);
}

/* ---- http-parser callbacks -------------------------------------------- */

static int on_url(http_parser *hp, const char *at, size_t n)
{
	struct td_hparse *p = hp->data;
	struct box *b = (struct box *)hp;

	if (!b->counting) {
		b->counting = true;
		b->url_at = at;
	}

	/* The non-strict build lets HT and FF into the target. */
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)at[i] <= ' ' || at[i] == 0x7f)
			return bad(p, "control character in request target");
	p->req.target_len += n;
	return put(p, at, n);
}

static int on_header_field(http_parser *hp, const char *at, size_t n)
{
	struct td_hparse *p = hp->data;

	if (p->hdr_state == HS_TRAILER)
		return 0;
	if (p->hdr_state != HS_FIELD && start_field(p))
		return -1;
	if (!is_token(at, n))
		return bad(p, "invalid character in header name");
	p->hdrs[p->nhdrs - 1].name_len += n;
	return put(p, at, n);
}

static int on_header_value(http_parser *hp, const char *at, size_t n)
{
	struct td_hparse *p = hp->data;

	if (p->hdr_state == HS_TRAILER)
		return 0; /* trailer fields are read and dropped */
	if (p->hdr_state == HS_FIELD && end_name(p))
		return -1;
	if (p->hdr_state != HS_VALUE)
		return bad(p, "header value without a name");
	/* http-parser does not check the first byte of a value. */
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)at[i];
		if ((c < ' ' && c != '\t') || c == 0x7f)
			return bad(p, "control character in a header value");
	}
	p->hdrs[p->nhdrs - 1].value_len += n;
	return put(p, at, n);
}

static int pause_at(http_parser *hp, uint8_t why)
{
	((struct box *)hp)->pause = why;
	http_parser_pause(hp, 1);
	return 0;
}

static int on_headers_complete(http_parser *hp)
{
	return pause_at(hp, P_HEADERS);
}

static int on_body(http_parser *hp, const char *at, size_t n)
{
	struct td_hparse *p = hp->data;

	if (n > p->lim.max_body - p->body.len)
		return body_too_large(p);
	if (td_buf_append(&p->body, at, n))
		return oom(p);
	return 0;
}

static int on_chunk_header(http_parser *hp)
{
	struct td_hparse *p = hp->data;

	if (hp->content_length == 0)
		p->hdr_state = HS_TRAILER;
	else if (hp->content_length > p->lim.max_body - p->body.len)
		return body_too_large(p); /* before the chunk arrives */
	return pause_at(hp, P_CHUNK_HEADER);
}

static int on_chunk_complete(http_parser *hp)
{
	struct td_hparse *p = hp->data;

	/* After the trailers it is the end of the message: checked there. */
	if (p->hdr_state == HS_TRAILER)
		return 0;
	return pause_at(hp, P_CHUNK_DONE);
}

static int on_message_complete(http_parser *hp)
{
	struct td_hparse *p = hp->data;

	p->req.keep_alive = http_should_keep_alive(hp);
	return pause_at(hp, P_MESSAGE);
}

static const http_parser_settings settings = {
	.on_url = on_url,
	.on_header_field = on_header_field,
	.on_header_value = on_header_value,
	.on_headers_complete = on_headers_complete,
	.on_body = on_body,
	.on_message_complete = on_message_complete,
	.on_chunk_header = on_chunk_header,
	.on_chunk_complete = on_chunk_complete,
};

/* ---- the header block ------------------------------------------------- */

/* Where path and query lie in @t; *@slash when an absolute-form target has
 * an empty path, which means "/". */
static void split_target(const char *t, size_t n, size_t po[2], size_t qo[2], bool *slash)
{
	size_t i = 0;

	*slash = false;
	if (n && t[0] != '/' && t[0] != '*') {
		/* absolute-form: http-parser let through only scheme "://" authority */
		const char *s = memmem(t, n, "://", 3);
		i = s ? (size_t)(s - t) + 3 : n;
		while (i < n && t[i] != '/' && t[i] != '?' && t[i] != '#')
			i++;
		*slash = i == n || t[i] != '/';
	}
	po[0] = i;
	while (i < n && t[i] != '?' && t[i] != '#')
		i++;
	po[1] = i - po[0];
	qo[0] = qo[1] = 0;
	if (i < n && t[i] == '?') {
		qo[0] = ++i;
		while (i < n && t[i] != '#')
			i++;
		qo[1] = i - qo[0];
	}
}

static char *trim(char *v, size_t *len)
{
	size_t n = *len;

	while (n && is_ows(v[0])) {
		v++;
		n--;
	}
	while (n && is_ows(v[n - 1]))
		n--;
	v[n] = '\0';
	*len = n;
	return v;
}

/*
 * head holds "target\0name\0value\0..." with the lengths in req and hdrs;
 * add "path\0query\0" and point everything into it. head does not change
 * after this.
 */
static int finish_head(struct td_hparse *p)
{
	struct td_hreq *r = &p->req;
	size_t po[2], qo[2], pos;
	bool slash;
	char *base;

	/* the NUL of the target or last value (and an empty value if needed) */
	if (put(p, "\0", p->hdr_state == HS_FIELD ? 2 : 1))
		return -1;
	split_target(p->head.data, r->target_len, po, qo, &slash);
	/* Reserve first: the copies come from head itself. */
	if (td_buf_reserve(&p->head, po[1] + qo[1] + 3))
		return oom(p);
	base = p->head.data;
	pos = p->head.len;
	if (slash)
		memcpy(base + pos, "/", 1);
	else
		memcpy(base + pos, base + po[0], po[1]);
	r->path_len = slash ? 1 : po[1];
	base[pos + r->path_len] = '\0';
	memcpy(base + pos + r->path_len + 1, base + qo[0], qo[1]);
	base[pos + r->path_len + 1 + qo[1]] = '\0';
	r->query_len = qo[1];
	p->head.len = pos + r->path_len + qo[1] + 2;

	r->target = base;
	r->path = base + pos;
	r->query = base + pos + r->path_len + 1;
	pos = r->target_len + 1;
	for (unsigned i = 0; i < p->nhdrs; i++) {
		struct td_hhdr *h = &p->hdrs[i];
		size_t raw = h->value_len;

		h->name = base + pos;
		pos += h->name_len + 1;
		h->value = trim(base + pos, &h->value_len);
		pos += raw + 1;
	}
	r->method = http_method_str((enum http_method)p->hp->method);
	r->hdrs = p->hdrs;
	r->nhdrs = p->nhdrs;
	r->http_major = p->hp->http_major;
	r->http_minor = p->hp->http_minor;
	return 0;
}

static bool name_is(const struct td_hhdr *h, const char *name, size_t n)
{
	return h->name_len == n && ieq(h->name, name, n);
}

/* Counts the codings in one Transfer-Encoding value. */
static void scan_codings(const char *v, size_t n, unsigned *chunked, bool *other)
{
	size_t i = 0;

	while (i < n) {
		size_t s = i, e;
		while (i < n && v[i] != ',')
			i++;
		e = i++;
		while (s < e && is_ows(v[s]))
			s++;
		while (e > s && is_ows(v[e - 1]))
			e--;
		if (e == s)
			continue; /* empty list element */
		if (e - s == 7 && ieq(v + s, "chunked", 7))
			(*chunked)++;
		else
			*other = true;
	}
}

/* Transfer-Encoding and Content-Length: how the body is delimited. */
static int check_framing(struct td_hparse *p)
{
	const http_parser *hp = p->hp;
	unsigned chunked = 0;
	bool te = false, other = false;

	for (unsigned i = 0; i < p->nhdrs; i++) {
		const struct td_hhdr *h = &p->hdrs[i];
		if (name_is(h, "transfer-encoding", 17)) {
			te = true;
			scan_codings(h->value, h->value_len, &chunked, &other);
		}
	}
	if (te && hp->http_minor == 0)
		return bad(p, "Transfer-Encoding in an HTTP/1.0 request");
	if (other)
		return fail(p, 501, "unsupported_transfer_encoding",
			    "only the chunked transfer coding is supported");
	/* Exactly one "chunked", and http-parser must agree. */
	if (te != (chunked == 1) || te != !!(hp->flags & F_CHUNKED))
		return bad(p, "malformed Transfer-Encoding");
	p->req.chunked = te;
	if (!(hp->flags & F_CONTENTLENGTH) || hp->content_length == 0)
		return 0;
	if (hp->content_length > p->lim.max_body)
		return fail(p, 413, "body_too_large", "Content-Length %llu exceeds %zu bytes",
			    (unsigned long long)hp->content_length, p->lim.max_body);
	/* One allocation for the usual webhook; a bigger body grows as it
	 * arrives, so a client cannot pin max_body by announcing it. */
	size_t want = (size_t)hp->content_length;
	if (want > SHRINK_ABOVE - 1)
		want = SHRINK_ABOVE - 1;
	if (td_buf_reserve(&p->body, want))
		return oom(p);
	return 0;
}

/* Returns 1 when a 100 Continue is due, 0, or -1 (417). */
static int check_expect(struct td_hparse *p)
{
	const http_parser *hp = p->hp;
	bool cont = false;

	for (unsigned i = 0; i < p->nhdrs; i++) {
		const struct td_hhdr *h = &p->hdrs[i];
		if (!name_is(h, "expect", 6))
			continue;
		if (h->value_len != 12 || !ieq(h->value, "100-continue", 12))
			return fail(p, 417, "unsupported_expectation",
				    "only Expect: 100-continue is supported");
		cont = true;
	}
	/* HTTP/1.0 clients cannot expect it (RFC 9110, 10.1.1). */
	if (!cont || hp->http_minor == 0)
		return 0;
	return p->req.chunked || ((hp->flags & F_CONTENTLENGTH) && hp->content_length > 0);
}

/*
 * The parser paused on the header block; @lf is the byte it took as its
 * final LF (not consumed yet). Returns 1 when TD_HP_CONTINUE is due, 0 to
 * read on, -1 on error.
 */
static int headers_done(struct td_hparse *p, char lf)
{
	const http_parser *hp = p->hp;
	int rc;

	p->head_bytes++; /* that LF */
	if (lf != '\n')
		return bad(p, "malformed end of header block");
	if (p->head_bytes > p->lim.max_header)
		return head_too_large(p);
	if (hp->http_major != 1 || hp->http_minor > 1)
		return fail(p, 505, "version_not_supported", "HTTP/%u.%u is not supported",
			    hp->http_major, hp->http_minor);
	/* One LF ends the request line and each field line (the last LF is
	 * not consumed yet); a further one was an obs-fold, which http-parser
	 * joins silently (RFC 9112, 5.2 lets us refuse it). */
	if (box_of(p)->lfs != p->nhdrs + 1)
		return bad(p, "obsolete line folding in a header");
	if (hp->method == HTTP_CONNECT)
		return fail(p, 501, "not_implemented", "CONNECT is not supported");
	/* An upgrade would make http-parser stop reading this connection. */
	if (hp->upgrade)
		return fail(p, 501, "not_implemented", "protocol upgrade is not supported");
	if (finish_head(p) || check_framing(p))
		return -1;
	rc = check_expect(p);
	if (rc < 0)
		return -1;
	p->state = ST_BODY;
	p->headers_done = true;
	return rc;
}

/* ---- feeding ---------------------------------------------------------- */

static unsigned count_lf(const char *s, const char *end)
{
	unsigned n = 0;

	while (s < end && (s = memchr(s, '\n', (size_t)(end - s)))) {
		n++;
		s++;
	}
	return n;
}

static size_t execute(struct td_hparse *p, const char *data, size_t n)
{
	struct box *b = box_of(p);
	size_t got;

	if (HTTP_PARSER_ERRNO(&b->hp) == HPE_PAUSED)
		http_parser_pause(&b->hp, 0);
	b->hp.data = p;
	b->pause = P_NONE;
	got = http_parser_execute(&b->hp, &settings, data, n);
	if (p->state == ST_HEAD) {
		p->head_bytes += got;
		if (b->counting)
			b->lfs += count_lf(b->url_at ? b->url_at : data, data + got);
		b->url_at = NULL;
	}
	if (got >= 2)
		b->last[0] = data[got - 2];
	else if (got)
		b->last[0] = b->last[1];
	if (got)
		b->last[1] = data[got - 1];
	return got;
}

/* What the next execute may see: headers are fed at most one byte past
 * the limit, so they cannot be stored beyond it. */
static size_t slice(const struct td_hparse *p, size_t n)
{
	size_t room = p->lim.max_header - p->head_bytes;

	if (p->state == ST_HEAD && n > room)
		return room + 1;
	return n;
}

/* After an execute that was not paused. */
static void check_run(struct td_hparse *p)
{
	if (p->state == ST_ERROR)
		return; /* a callback said why */
	if (HTTP_PARSER_ERRNO(p->hp) != HPE_OK)
		parser_failed(p);
	else if (p->state == ST_HEAD && p->head_bytes > p->lim.max_header)
		head_too_large(p);
}

static void complete(struct td_hparse *p)
{
	const struct box *b = box_of(p);

	if (p->req.chunked && b->last[1] != '\n') {
		bad(p, "malformed end of chunked body");
		return;
	}
	if (p->body.data)
		p->body.data[p->body.len] = '\0'; /* even if only reserved */
	p->req.body = p->body.data ? p->body.data : "";
	p->req.body_len = p->body.len;
	p->state = ST_DONE;
}

size_t td_hparse_feed(struct td_hparse *p, const char *data, size_t len,
		      enum td_hparse_ev *ev)
{
	const struct box *b = box_of(p);
	size_t off = 0;

	assert(p->state != ST_DONE && "td_hparse_next() not called");
	if (p->state == ST_ERROR || p->state == ST_DONE) {
		*ev = p->state == ST_ERROR ? TD_HP_ERROR : TD_HP_REQUEST;
		return 0;
	}
	if (len)
		p->started = true;
	while (off < len && p->state != ST_ERROR) {
		off += execute(p, data + off, slice(p, len - off));
		switch (b->pause) {
		case P_NONE:
			check_run(p);
			break;
		case P_HEADERS:
			if (headers_done(p, data[off]) <= 0)
				break;
			/* Stop right after the block: consume its final LF. */
			off += execute(p, data + off, 1);
			check_run(p);
			if (p->state == ST_ERROR)
				break;
			p->continue_sent = true;
			*ev = TD_HP_CONTINUE;
			return off;
		case P_CHUNK_HEADER:
			if (b->last[1] != '\n')
				bad(p, "malformed chunk size line");
			break;
		case P_CHUNK_DONE:
			if (b->last[0] != '\r' || b->last[1] != '\n')
				bad(p, "chunk data not followed by CRLF");
			break;
		case P_MESSAGE:
			complete(p);
			if (p->state == ST_DONE) {
				*ev = TD_HP_REQUEST;
				return off;
			}
			break;
		}
	}
	*ev = p->state == ST_ERROR ? TD_HP_ERROR : TD_HP_MORE;
	return off;
}

/* ---- lifetime --------------------------------------------------------- */

int td_hparse_init(struct td_hparse *p, const struct td_hparse_limits *lim)
{
	static const struct td_hparse_limits def = TD_HPARSE_LIMITS_DEFAULT;
	struct box *b;

	memset(p, 0, sizeof(*p));
	b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	http_parser_init(&b->hp, HTTP_REQUEST);
	p->hp = &b->hp;
	p->lim = lim ? *lim : def;
	return 0;
}

void td_hparse_finish(struct td_hparse *p)
{
	free(p->hp); /* the box: hp is its first member */
	td_buf_finish(&p->head);
	td_buf_finish(&p->body);
	free(p->hdrs);
	memset(p, 0, sizeof(*p));
}

static void recycle(struct td_buf *b)
{
	if (b->cap > SHRINK_ABOVE)
		td_buf_finish(b);
	else
		td_buf_reset(b);
}

void td_hparse_next(struct td_hparse *p)
{
	struct box *b = box_of(p);

	/* After an error the framing is lost: the connection must close. */
	if (p->state == ST_ERROR)
		return;
	http_parser_init(&b->hp, HTTP_REQUEST);
	b->pause = P_NONE;
	b->url_at = NULL;
	b->lfs = 0;
	b->counting = b->saw_te = false;
	b->last[0] = b->last[1] = 0;
	recycle(&p->head);
	recycle(&p->body);
	if (p->hdrs_cap * sizeof(*p->hdrs) > SHRINK_ABOVE) {
		free(p->hdrs);
		p->hdrs = NULL;
		p->hdrs_cap = 0;
	}
	p->nhdrs = 0;
	memset(&p->req, 0, sizeof(p->req));
	p->head_bytes = 0;
	p->state = ST_HEAD;
	p->hdr_state = HS_NONE;
	p->started = p->headers_done = p->continue_sent = false;
}

const struct td_hreq *td_hparse_req(const struct td_hparse *p)
{
	return &p->req;
}

const struct td_hparse_err *td_hparse_error(const struct td_hparse *p)
{
	return &p->err;
}

const char *td_hreq_header(const struct td_hreq *r, const char *name, size_t *len)
{
	size_t n = strlen(name);

	for (unsigned i = 0; i < r->nhdrs; i++) {
		if (name_is(&r->hdrs[i], name, n)) {
			if (len)
				*len = r->hdrs[i].value_len;
			return r->hdrs[i].value;
		}
	}
	if (len)
		*len = 0;
	return NULL;
}

/* ---- responses -------------------------------------------------------- */

const char *td_http_reason(int status)
{
	switch (status) {
	case 100: return "Continue";
	case 101: return "Switching Protocols";
	case 200: return "OK";
	case 201: return "Created";
	case 202: return "Accepted";
	case 204: return "No Content";
	case 206: return "Partial Content";
	case 301: return "Moved Permanently";
	case 302: return "Found";
	case 303: return "See Other";
	case 304: return "Not Modified";
	case 307: return "Temporary Redirect";
	case 308: return "Permanent Redirect";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 406: return "Not Acceptable";
	case 408: return "Request Timeout";
	case 409: return "Conflict";
	case 410: return "Gone";
	case 411: return "Length Required";
	case 412: return "Precondition Failed";
	case 413: return "Content Too Large";
	case 414: return "URI Too Long";
	case 415: return "Unsupported Media Type";
	case 416: return "Range Not Satisfiable";
	case 417: return "Expectation Failed";
	case 421: return "Misdirected Request";
	case 422: return "Unprocessable Content";
	case 426: return "Upgrade Required";
	case 428: return "Precondition Required";
	case 429: return "Too Many Requests";
	case 431: return "Request Header Fields Too Large";
	case 500: return "Internal Server Error";
	case 501: return "Not Implemented";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	case 505: return "HTTP Version Not Supported";
	default: return "Unknown";
	}
}

/* Measures (o == NULL) or writes a response head. */
struct out {
	char *o;
	size_t n;
};

static void emit(struct out *w, const char *s, size_t n)
{
	if (w->o)
		memcpy(w->o + w->n, s, n);
	w->n += n;
}

static void emit_s(struct out *w, const char *s)
{
	emit(w, s, strlen(s));
}

static void emit_u(struct out *w, size_t v)
{
	char d[24];
	size_t i = sizeof(d);

	do {
		d[--i] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	emit(w, d + i, sizeof(d) - i);
}

/* 1xx and 204 carry neither Content-Length nor a body (RFC 9110, 8.6). */
static bool bodiless(int status)
{
	return status < 200 || status == 204;
}

static void head(struct out *w, int status, const char *ctype, const char *extra,
		 size_t body_len, bool keep_alive)
{
	emit_s(w, "HTTP/1.1 ");
	emit_u(w, (size_t)status);
	emit(w, " ", 1);
	emit_s(w, td_http_reason(status));
	emit(w, "\r\n", 2);
	if (!bodiless(status)) {
		emit_s(w, "Content-Length: ");
		emit_u(w, body_len);
		emit(w, "\r\n", 2);
	}
	if (ctype) {
		emit_s(w, "Content-Type: ");
		emit_s(w, ctype);
		emit(w, "\r\n", 2);
	}
	if (!keep_alive)
		emit_s(w, "Connection: close\r\n");
	if (extra)
		emit_s(w, extra);
	emit(w, "\r\n", 2);
}

static bool status_ok(int status, size_t body_len)
{
	return status >= 100 && status <= 999 && !(bodiless(status) && body_len);
}

int td_hresp_continue(struct td_buf *out)
{
	static const char line[] = "HTTP/1.1 100 Continue\r\n\r\n";

	return td_buf_append(out, line, sizeof(line) - 1);
}

int td_hresp(struct td_buf *out, int status, const char *ctype, const char *extra,
	     const char *body, size_t body_len, bool keep_alive)
{
	struct out w = {0};

	if (!status_ok(status, body_len))
		return -EINVAL;
	head(&w, status, ctype, extra, body_len, keep_alive);
	if (td_buf_reserve(out, w.n + body_len))
		return -ENOMEM;
	w = (struct out){.o = out->data + out->len};
	head(&w, status, ctype, extra, body_len, keep_alive);
	if (body_len)
		memcpy(w.o + w.n, body, body_len);
	out->len += w.n + body_len;
	out->data[out->len] = '\0';
	return 0;
}

static int error_body(struct td_buf *out, int status, const char *code, const char *message)
{
	if (!code)
		code = "error";
	if (!message)
		message = "";
	if (td_buf_printf(out, "{\"status\":%d,\"error\":", status) ||
	    td_buf_json_str(out, code, strlen(code)) || td_buf_puts(out, ",\"message\":") ||
	    td_buf_json_str(out, message, strlen(message)) || td_buf_puts(out, "}"))
		return -ENOMEM;
	return 0;
}

int td_hresp_error(struct td_buf *out, int status, const char *code,
		   const char *message, const char *extra, bool keep_alive)
{
	static const char ctype[] = "application/json";
	size_t start = out->len, blen;
	struct out w = {0};

	if (!status_ok(status, 1))
		return -EINVAL;
	/* The body first, then the head (which needs its length) before it. */
	if (error_body(out, status, code, message))
		goto nomem;
	blen = out->len - start;
	head(&w, status, ctype, extra, blen, keep_alive);
	if (td_buf_reserve(out, w.n))
		goto nomem;
	memmove(out->data + start + w.n, out->data + start, blen);
	w = (struct out){.o = out->data + start};
	head(&w, status, ctype, extra, blen, keep_alive);
	out->len = start + w.n + blen;
	out->data[out->len] = '\0';
	return 0;
nomem:
	out->len = start;
	if (out->data)
		out->data[start] = '\0';
	return -ENOMEM;
}
