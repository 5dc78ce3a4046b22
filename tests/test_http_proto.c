/*
 * Tests for engine/http_proto.c. Every piece fed to the parser is copied to
 * the end of a mapping followed by a PROT_NONE page, so reading one byte too
 * far crashes; the same mapping is reused for the next piece, so a parser
 * that kept pointers into its input would be caught as well.
 *
 * Most inputs are parsed three ways (whole, byte by byte, at random split
 * points) and everything the parser reported is rendered as text: the three
 * texts must be identical.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "triggerd/http_proto.h"

#include "guard.h"

#define SPLIT_WHOLE 0u
#define SPLIT_BYTES 1u
/* any other mode: random split points seeded with the mode */

static const struct td_hparse_limits small = {.max_header = 256, .max_body = 100,
					       .max_headers = 4};

/* ---- helpers ------------------------------------------------------------ */

/* A NUL-terminated measured string: the NUL is really there. */
static void check_str(const char *s, size_t n)
{
	assert_non_null(s);
	assert_int_equal(s[n], '\0');
	assert_int_equal(strlen(s), n);
}

static void dump_req(struct td_buf *log, const struct td_hreq *r)
{
	check_str(r->target, r->target_len);
	check_str(r->path, r->path_len);
	check_str(r->query, r->query_len);
	assert_non_null(r->method);
	assert_int_equal(td_buf_printf(log, "REQ %s %s path=%s query=%s HTTP/%u.%u ka=%d chunked=%d\n",
				       r->method, r->target, r->path, r->query, r->http_major,
				       r->http_minor, r->keep_alive, r->chunked),
			 0);
	for (unsigned i = 0; i < r->nhdrs; i++) {
		const struct td_hhdr *h = &r->hdrs[i];
		check_str(h->name, h->name_len);
		check_str(h->value, h->value_len);
		assert_int_equal(td_buf_printf(log, " H %s: [%s]\n", h->name, h->value), 0);
	}
	/* Bodies in these tests are text. */
	assert_non_null(r->body);
	assert_int_equal(r->body[r->body_len], '\0');
	assert_int_equal(td_buf_printf(log, " B %zu [%.*s]\n", r->body_len, (int)r->body_len,
				       r->body),
			 0);
}

struct run {
	struct td_hparse p;
	struct td_buf log;
	size_t consumed;
	bool dead;
};

/* Feeds one piece the way the server does. */
static void feed_piece(struct run *rn, const char *s, size_t n)
{
	const char *g = guarded(s, n);
	size_t off = 0;

	while (off < n && !rn->dead) {
		enum td_hparse_ev ev = (enum td_hparse_ev)99;
		size_t used = td_hparse_feed(&rn->p, g + off, n - off, &ev);
		assert_true(used <= n - off);
		off += used;
		rn->consumed += used;
		switch (ev) {
		case TD_HP_MORE:
			assert_int_equal(off, n);
			break;
		case TD_HP_CONTINUE:
			assert_true(td_hparse_headers_done(&rn->p));
			assert_int_equal(td_buf_puts(&rn->log, "CONTINUE\n"), 0);
			break;
		case TD_HP_REQUEST:
			dump_req(&rn->log, td_hparse_req(&rn->p));
			td_hparse_next(&rn->p);
			assert_false(td_hparse_started(&rn->p));
			break;
		case TD_HP_ERROR: {
			const struct td_hparse_err *e = td_hparse_error(&rn->p);
			assert_int_equal(td_buf_printf(&rn->log, "ERROR %d %s %s\n", e->status,
						       e->code, e->message),
					 0);
			rn->dead = true;
			break;
		}
		default:
			fail_msg("bad event %d", (int)ev);
		}
	}
}

/* Parses @s split as @mode says; returns the rendered events (free it). */
static char *parse_with(const struct td_hparse_limits *lim, const char *s, size_t n,
			unsigned mode)
{
	struct run rn = {.log = TD_BUF_INIT};
	unsigned seed = mode;
	size_t off = 0;

	assert_int_equal(td_hparse_init(&rn.p, lim), 0);
	while (off < n && !rn.dead) {
		size_t k = n - off;
		if (mode == SPLIT_BYTES)
			k = 1;
		else if (mode != SPLIT_WHOLE)
			k = 1 + (size_t)rand_r(&seed) % (n / 3 + 1);
		if (k > n - off)
			k = n - off;
		feed_piece(&rn, s + off, k);
		off += k;
	}
	if (!rn.dead)
		assert_int_equal(td_buf_printf(&rn.log, "END consumed=%zu started=%d\n",
					       rn.consumed, td_hparse_started(&rn.p)),
				 0);
	td_hparse_finish(&rn.p);
	assert_int_equal(td_buf_puts(&rn.log, ""), 0);
	return rn.log.data;
}

/* Parses @s whole, byte by byte and at random points: all must agree. */
static char *parse_all_n(const struct td_hparse_limits *lim, const char *s, size_t n)
{
	char *whole = parse_with(lim, s, n, SPLIT_WHOLE);

	for (unsigned mode = SPLIT_BYTES; mode < 12; mode++) {
		char *other = parse_with(lim, s, n, mode);
		if (strcmp(whole, other))
			fail_msg("split mode %u differs:\n--- whole\n%s--- split\n%s", mode, whole,
				 other);
		free(other);
	}
	return whole;
}

static char *parse_all(const struct td_hparse_limits *lim, const char *s)
{
	return parse_all_n(lim, s, strlen(s));
}

static void expect_log(const struct td_hparse_limits *lim, const char *s, const char *want)
{
	char *got = parse_all(lim, s);
	assert_string_equal(got, want);
	free(got);
}

/* @s (any split) ends in an error with @status and @code. */
static void expect_error(const struct td_hparse_limits *lim, const char *s, int status,
			 const char *code)
{
	char *got = parse_all(lim, s);
	char want[64];
	const char *e = strstr(got, "ERROR ");

	snprintf(want, sizeof(want), "ERROR %d %s ", status, code);
	if (!e || strncmp(e, want, strlen(want)) || strchr(e, '\n')[1] != '\0')
		fail_msg("input %s\nwanted %s...\ngot:\n%s", s, want, got);
	free(got);
}

/* One feed of all of @s into @p, which the caller set up. */
static enum td_hparse_ev feed1(struct td_hparse *p, const char *s, size_t *used)
{
	enum td_hparse_ev ev = (enum td_hparse_ev)99;
	size_t n = strlen(s);

	*used = td_hparse_feed(p, guarded(s, n), n, &ev);
	assert_true(*used <= n);
	return ev;
}

/* ---- requests ----------------------------------------------------------- */

static void simple_get(void **state)
{
	static const char in[] = "GET /hello?x=1 HTTP/1.1\r\nHost: example.com\r\n"
				 "User-Agent: t\r\n\r\n";
	struct td_hparse p;
	size_t used;

	assert_int_equal(td_hparse_init(&p, NULL), 0);
	assert_false(td_hparse_started(&p));
	assert_int_equal(feed1(&p, in, &used), TD_HP_REQUEST);
	assert_int_equal(used, strlen(in));
	const struct td_hreq *r = td_hparse_req(&p);
	assert_string_equal(r->method, "GET");
	assert_string_equal(r->target, "/hello?x=1");
	assert_int_equal(r->target_len, 10);
	assert_string_equal(r->path, "/hello");
	assert_int_equal(r->path_len, 6);
	assert_string_equal(r->query, "x=1");
	assert_int_equal(r->query_len, 3);
	assert_int_equal(r->nhdrs, 2);
	assert_string_equal(r->hdrs[0].name, "Host");
	assert_string_equal(r->hdrs[0].value, "example.com");
	assert_string_equal(r->hdrs[1].name, "User-Agent");
	assert_string_equal(r->body, "");
	assert_int_equal(r->body_len, 0);
	assert_true(r->keep_alive);
	assert_false(r->chunked);
	assert_int_equal(r->http_major, 1);
	assert_int_equal(r->http_minor, 1);
	assert_true(td_hparse_headers_done(&p));
	td_hparse_finish(&p);

	expect_log(NULL, in,
		   "REQ GET /hello?x=1 path=/hello query=x=1 HTTP/1.1 ka=1 chunked=0\n"
		   " H Host: [example.com]\n"
		   " H User-Agent: [t]\n"
		   " B 0 []\n"
		   "END consumed=61 started=0\n");
}

static void post_body(void **state)
{
	expect_log(NULL,
		   "POST /hook HTTP/1.1\r\nContent-Type: application/json\r\n"
		   "Content-Length: 13\r\n\r\n{\"a\":[1,2,3]}",
		   "REQ POST /hook path=/hook query= HTTP/1.1 ka=1 chunked=0\n"
		   " H Content-Type: [application/json]\n"
		   " H Content-Length: [13]\n"
		   " B 13 [{\"a\":[1,2,3]}]\n"
		   "END consumed=88 started=0\n");
	/* A request without Content-Length has no body: the rest is the next. */
	expect_log(NULL, "POST / HTTP/1.1\r\n\r\nGET",
		   "REQ POST / path=/ query= HTTP/1.1 ka=1 chunked=0\n"
		   " B 0 []\n"
		   "END consumed=22 started=1\n");
}

static void chunked_body(void **state)
{
	/* Chunk extensions are skipped; trailer fields are read and dropped. */
	expect_log(NULL,
		   "POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
		   "5;name=\"v\"\r\nhello\r\n"
		   "6 ; ext\r\n world\r\n"
		   "A\r\n0123456789\r\n"
		   "0\r\nX-Trailer: t\r\nX-Other: u\r\n\r\n",
		   "REQ POST /c path=/c query= HTTP/1.1 ka=1 chunked=1\n"
		   " H Transfer-Encoding: [chunked]\n"
		   " B 21 [hello world0123456789]\n"
		   "END consumed=130 started=0\n");
	/* Upper-case hex, no trailers, the coding name in any case. */
	expect_log(NULL,
		   "POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n"
		   "1a\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\n",
		   "REQ POST / path=/ query= HTTP/1.1 ka=1 chunked=1\n"
		   " H Transfer-Encoding: [Chunked]\n"
		   " B 26 [abcdefghijklmnopqrstuvwxyz]\n"
		   "END consumed=84 started=0\n");
}

static void pipelined(void **state)
{
	static const char a[] = "GET /1 HTTP/1.1\r\nHost: h\r\n\r\n";
	static const char b[] = "POST /2 HTTP/1.1\r\nContent-Length: 3\r\n\r\nxyz";
	static const char c[] = "POST /3 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
				"2\r\nok\r\n0\r\n\r\n";
	char all[256];
	struct td_hparse p;
	enum td_hparse_ev ev;
	size_t off = 0, n;

	n = (size_t)snprintf(all, sizeof(all), "%s%s%s", a, b, c);
	const char *g = guarded(all, n);
	assert_int_equal(td_hparse_init(&p, NULL), 0);

	assert_int_equal(td_hparse_feed(&p, g, n, &ev), strlen(a));
	assert_int_equal(ev, TD_HP_REQUEST);
	assert_string_equal(td_hparse_req(&p)->target, "/1");
	off += strlen(a);
	td_hparse_next(&p);
	assert_true(td_hparse_started(&p) == false);

	assert_int_equal(td_hparse_feed(&p, g + off, n - off, &ev), strlen(b));
	assert_int_equal(ev, TD_HP_REQUEST);
	assert_string_equal(td_hparse_req(&p)->target, "/2");
	assert_string_equal(td_hparse_req(&p)->body, "xyz");
	off += strlen(b);
	td_hparse_next(&p);

	assert_int_equal(td_hparse_feed(&p, g + off, n - off, &ev), strlen(c));
	assert_int_equal(ev, TD_HP_REQUEST);
	assert_string_equal(td_hparse_req(&p)->target, "/3");
	assert_string_equal(td_hparse_req(&p)->body, "ok");
	assert_true(td_hparse_req(&p)->chunked);
	off += strlen(c);
	assert_int_equal(off, n);
	td_hparse_next(&p);
	assert_int_equal(td_hparse_feed(&p, g + off, 0, &ev), 0);
	assert_int_equal(ev, TD_HP_MORE);
	assert_false(td_hparse_started(&p));
	td_hparse_finish(&p);

	/* And the same at every split point. */
	char *log = parse_all_n(NULL, all, n);
	assert_non_null(strstr(log, "END consumed=130 started=0\n"));
	assert_non_null(strstr(log, "REQ GET /1 "));
	assert_true(strstr(log, "REQ POST /2 ") < strstr(log, "REQ POST /3 "));
	free(log);
}

/* Inputs that must give the same result however they are split. */
static void split_equivalence(void **state)
{
	static const char *const in[] = {
		"GET / HTTP/1.1\r\n\r\n",
		"GET / HTTP/1.1\nHost: bare-lf\n\n",
		"\r\n\r\nGET /after-empty-lines HTTP/1.1\r\n\r\n",
		"PUT /x?y=z HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 4\r\n\r\nbody"
		"DELETE /again HTTP/1.1\r\nConnection: close\r\n\r\n",
		"POST /e HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi"
		"POST /e2 HTTP/1.1\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n"
		"1\r\na\r\n0\r\n\r\n",
		"POST / HTTP/1.1\r\nA:  spaced  \r\nB:\r\nC: \t\r\nTransfer-Encoding: chunked\r\n\r\n"
		"3;x=y\r\nabc\r\n0\r\nT: 1\r\n\r\nGET /n HTTP/1.1\r\n\r\n",
		"GET http://h.example:8080/abs/path?q=1#frag HTTP/1.1\r\n\r\n",
		"OPTIONS * HTTP/1.1\r\n\r\n",
		"POST / HTTP/1.1\r\nX: a\r\n b\r\n\r\n",
		"GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
		"GARBAGE\r\n\r\n",
		"GET / HTTP/1.1\r\nHost\r\n\r\n",
		"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
		"GET / HTTP/1.1\r\nX-Long-Name-Header-Field: a value with spaces\r\n"
		"x-long-name-header-field: second\r\n\r\n",
	};

	for (size_t i = 0; i < sizeof(in) / sizeof(in[0]); i++)
		free(parse_all(NULL, in[i]));
	/* and at the limits */
	free(parse_all(&small, "POST / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n"
			       "Transfer-Encoding: chunked\r\n\r\n"));
	free(parse_all(&small, "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
			       "32\r\n01234567890123456789012345678901234567890123456789\r\n"
			       "33\r\n012345678901234567890123456789012345678901234567890\r\n"));
}

static void keep_alive(void **state)
{
	char *log;

	log = parse_all(NULL, "GET / HTTP/1.1\r\n\r\n");
	assert_non_null(strstr(log, "HTTP/1.1 ka=1"));
	free(log);
	log = parse_all(NULL, "GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
	assert_non_null(strstr(log, "HTTP/1.1 ka=0"));
	free(log);
	log = parse_all(NULL, "GET / HTTP/1.1\r\nConnection: Close\r\n\r\n");
	assert_non_null(strstr(log, "HTTP/1.1 ka=0"));
	free(log);
	log = parse_all(NULL, "GET / HTTP/1.0\r\n\r\n");
	assert_non_null(strstr(log, "HTTP/1.0 ka=0"));
	free(log);
	log = parse_all(NULL, "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
	assert_non_null(strstr(log, "HTTP/1.0 ka=1"));
	free(log);
	/* decided per request on one connection */
	log = parse_all(NULL, "GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\nConnection: close\r\n\r\n");
	assert_non_null(strstr(log, "/a path=/a query= HTTP/1.1 ka=1"));
	assert_non_null(strstr(log, "/b path=/b query= HTTP/1.1 ka=0"));
	free(log);
}

static void expect_continue(void **state)
{
	static const char headers[] = "POST /up HTTP/1.1\r\nExpect: 100-Continue\r\n"
				      "Content-Length: 5\r\n\r\n";
	struct td_hparse p;
	enum td_hparse_ev ev;
	size_t used;

	/* headers alone: CONTINUE right after the block */
	assert_int_equal(td_hparse_init(&p, NULL), 0);
	assert_int_equal(feed1(&p, headers, &used), TD_HP_CONTINUE);
	assert_int_equal(used, strlen(headers));
	assert_true(td_hparse_headers_done(&p));
	/* the header part is there to decide on the 100 */
	assert_string_equal(td_hparse_req(&p)->path, "/up");
	assert_string_equal(td_hreq_header(td_hparse_req(&p), "content-length", NULL), "5");
	assert_int_equal(feed1(&p, "hel", &used), TD_HP_MORE);
	assert_int_equal(used, 3);
	assert_int_equal(feed1(&p, "lo", &used), TD_HP_REQUEST);
	assert_int_equal(used, 2);
	assert_string_equal(td_hparse_req(&p)->body, "hello");
	td_hparse_next(&p);

	/* headers and body together: still once, still after the block */
	char all[128];
	snprintf(all, sizeof(all), "%shello", headers);
	assert_int_equal(feed1(&p, all, &used), TD_HP_CONTINUE);
	assert_int_equal(used, strlen(headers));
	assert_int_equal(td_hparse_feed(&p, guarded(all + used, 5), 5, &ev), 5);
	assert_int_equal(ev, TD_HP_REQUEST);
	td_hparse_next(&p);
	td_hparse_finish(&p);

	/* no body to wait for: no CONTINUE */
	expect_log(NULL, "GET / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
		   "REQ GET / path=/ query= HTTP/1.1 ka=1 chunked=0\n"
		   " H Expect: [100-continue]\n"
		   " B 0 []\n"
		   "END consumed=40 started=0\n");
	expect_log(NULL, "POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n",
		   "REQ POST / path=/ query= HTTP/1.1 ka=1 chunked=0\n"
		   " H Expect: [100-continue]\n"
		   " H Content-Length: [0]\n"
		   " B 0 []\n"
		   "END consumed=60 started=0\n");
	/* HTTP/1.0 clients cannot expect it */
	char *log = parse_all(NULL, "POST / HTTP/1.0\r\nExpect: 100-continue\r\n"
				    "Content-Length: 1\r\n\r\nx");
	assert_null(strstr(log, "CONTINUE"));
	assert_non_null(strstr(log, " B 1 [x]\n"));
	free(log);
	/* chunked */
	log = parse_all(NULL, "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n"
			      "Expect: 100-continue\r\n\r\n1\r\nx\r\n0\r\n\r\n");
	assert_non_null(strstr(log, "CONTINUE\nREQ POST "));
	free(log);
}

static void expectation_failed(void **state)
{
	expect_error(NULL, "POST / HTTP/1.1\r\nExpect: 200-ok\r\nContent-Length: 1\r\n\r\nx",
		     417, "unsupported_expectation");
	expect_error(NULL, "GET / HTTP/1.1\r\nExpect: 100-continue, foo\r\n\r\n", 417,
		     "unsupported_expectation");
	expect_error(NULL, "GET / HTTP/1.1\r\nExpect:\r\n\r\n", 417, "unsupported_expectation");
}

/* "GET / HTTP/1.1\r\nX: aaa...\r\n\r\n" of exactly @total bytes. */
static char *head_of(size_t total)
{
	static const char pre[] = "GET / HTTP/1.1\r\nX: ";
	size_t pad = total - (sizeof(pre) - 1) - 4;
	char *s = malloc(total + 1);

	assert_non_null(s);
	memcpy(s, pre, sizeof(pre) - 1);
	memset(s + sizeof(pre) - 1, 'a', pad);
	memcpy(s + total - 4, "\r\n\r\n", 5);
	assert_int_equal(strlen(s), total);
	return s;
}

static void limit_header_bytes(void **state)
{
	char *s = head_of(small.max_header);
	char *log = parse_all(&small, s);
	assert_non_null(strstr(log, "END consumed=256 started=0\n"));
	free(log);
	free(s);

	s = head_of(small.max_header + 1);
	expect_error(&small, s, 431, "header_too_large");
	free(s);

	/* Bare-LF line ends: the limit counts the bytes as received. */
	char lf[512] = "GET / HTTP/1.1\nX: ";
	size_t pre = strlen(lf);
	memset(lf + pre, 'a', small.max_header - pre - 2);
	strcpy(lf + small.max_header - 2, "\n\n");
	assert_int_equal(strlen(lf), small.max_header);
	log = parse_all(&small, lf);
	assert_non_null(strstr(log, "END consumed=256 started=0\n"));
	free(log);
	memset(lf + pre, 'a', small.max_header - pre - 1);
	strcpy(lf + small.max_header - 1, "\n\n");
	expect_error(&small, lf, 431, "header_too_large");
}

static void limit_header_bytes_streaming(void **state)
{
	/* A request line that never ends: refused after max_header + 1 bytes,
	 * without storing more than that. */
	char big[4096], *s;
	struct td_hparse p;
	enum td_hparse_ev ev;

	memcpy(big, "GET /", 5);
	memset(big + 5, 'a', sizeof(big) - 5);
	assert_int_equal(td_hparse_init(&p, &small), 0);
	size_t used = td_hparse_feed(&p, guarded(big, sizeof(big)), sizeof(big), &ev);
	assert_int_equal(ev, TD_HP_ERROR);
	assert_int_equal(td_hparse_error(&p)->status, 431);
	assert_true(used <= small.max_header + 1);
	assert_true(p.head.len <= small.max_header + 1);
	td_hparse_finish(&p);

	/* Same, one byte at a time. */
	assert_int_equal(td_hparse_init(&p, &small), 0);
	size_t i;
	for (i = 0; i < sizeof(big); i++) {
		used = td_hparse_feed(&p, guarded(big + i, 1), 1, &ev);
		if (ev == TD_HP_ERROR)
			break;
		assert_int_equal(used, 1);
		assert_int_equal(ev, TD_HP_MORE);
	}
	assert_int_equal(ev, TD_HP_ERROR);
	assert_int_equal(i, small.max_header);
	assert_true(p.head.len <= small.max_header + 1);
	td_hparse_finish(&p);

	/* Past http-parser's own 80 KiB cap, a higher limit does not help. */
	struct td_hparse_limits high = {200 * 1024, 1024, 100};
	s = malloc(100 * 1024);
	assert_non_null(s);
	strcpy(s, "GET / HTTP/1.1\r\nCookie: ");
	memset(s + strlen(s), 'c', 90 * 1024);
	strcpy(s + strlen("GET / HTTP/1.1\r\nCookie: ") + 90 * 1024, "\r\n\r\n");
	assert_int_equal(td_hparse_init(&p, &high), 0);
	assert_int_equal(feed1(&p, s, &used), TD_HP_ERROR);
	assert_int_equal(td_hparse_error(&p)->status, 431);
	assert_string_equal(td_hparse_error(&p)->code, "header_too_large");
	td_hparse_finish(&p);
	/* ... below it, it does */
	s[strlen("GET / HTTP/1.1\r\nCookie: ") + 70 * 1024] = '\0';
	strcat(s, "\r\n\r\n");
	assert_int_equal(td_hparse_init(&p, &high), 0);
	assert_int_equal(feed1(&p, s, &used), TD_HP_REQUEST);
	assert_int_equal(td_hparse_req(&p)->hdrs[0].value_len, 70 * 1024);
	td_hparse_finish(&p);
	free(s);

	/* Many headers, each short: the total is what counts. */
	char many[1024] = "GET / HTTP/1.1\r\n";
	for (int k = 0; k < 3; k++)
		strcat(many, "Long-Header-Name: 0123456789012345678901234567890123456789"
			     "0123456789012345678901234567890123456789\r\n");
	strcat(many, "\r\n");
	expect_error(&small, many, 431, "header_too_large");
}

static char *with_headers(unsigned n)
{
	char *s = malloc(64 + 16 * n);
	assert_non_null(s);
	strcpy(s, "GET / HTTP/1.1\r\n");
	for (unsigned i = 0; i < n; i++)
		sprintf(s + strlen(s), "H%u: %u\r\n", i, i);
	strcat(s, "\r\n");
	return s;
}

static void limit_header_count(void **state)
{
	char *s = with_headers(small.max_headers);
	char *log = parse_all(&small, s);
	assert_non_null(strstr(log, " H H3: [3]\n"));
	assert_non_null(strstr(log, "END "));
	free(log);
	free(s);

	s = with_headers(small.max_headers + 1);
	expect_error(&small, s, 431, "too_many_headers");
	free(s);

	/* The default limit. */
	struct td_hparse_limits def = TD_HPARSE_LIMITS_DEFAULT;
	s = with_headers(def.max_headers);
	log = parse_all(&def, s);
	assert_non_null(strstr(log, "END "));
	free(log);
	free(s);
	s = with_headers(def.max_headers + 1);
	expect_error(&def, s, 431, "too_many_headers");
	free(s);
}

static void limit_content_length(void **state)
{
	char in[512], body[128];
	struct td_hparse p;
	size_t used;

	memset(body, 'b', 101);
	body[101] = '\0';
	snprintf(in, sizeof(in), "POST / HTTP/1.1\r\nContent-Length: 100\r\n\r\n%.100s", body);
	char *log = parse_all(&small, in);
	assert_non_null(strstr(log, " B 100 [bbbb"));
	free(log);

	/* 101: refused at the header block, before any body byte */
	assert_int_equal(td_hparse_init(&p, &small), 0);
	assert_int_equal(feed1(&p, "POST / HTTP/1.1\r\nContent-Length: 101\r\n\r\n", &used),
			 TD_HP_ERROR);
	assert_int_equal(td_hparse_error(&p)->status, 413);
	assert_string_equal(td_hparse_error(&p)->code, "body_too_large");
	td_hparse_finish(&p);

	/* ... and before a 100 Continue */
	assert_int_equal(td_hparse_init(&p, &small), 0);
	assert_int_equal(feed1(&p, "POST / HTTP/1.1\r\nExpect: 100-continue\r\n"
				   "Content-Length: 101\r\n\r\n", &used),
			 TD_HP_ERROR);
	assert_int_equal(td_hparse_error(&p)->status, 413);
	td_hparse_finish(&p);

	snprintf(in, sizeof(in), "POST / HTTP/1.1\r\nContent-Length: 101\r\n\r\n%s", body);
	expect_error(&small, in, 413, "body_too_large");
	expect_error(NULL, "POST / HTTP/1.1\r\nContent-Length: 1000000000000\r\n\r\n",
		     413, "body_too_large");
	expect_error(NULL, "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
		     400, "bad_request");
}

static void limit_chunked(void **state)
{
	char body[128], in[512];
	struct td_hparse p;
	size_t used;

	memset(body, 'c', 100);
	body[100] = '\0';
	/* 100 bytes in three chunks: accepted */
	snprintf(in, sizeof(in),
		 "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
		 "32\r\n%.50s\r\n31\r\n%.49s\r\n1\r\n%.1s\r\n0\r\n\r\n", body, body, body);
	char *log = parse_all(&small, in);
	assert_non_null(strstr(log, " B 100 [cccc"));
	free(log);

	/* 101: refused at the chunk header that goes over, before its data */
	assert_int_equal(td_hparse_init(&p, &small), 0);
	snprintf(in, sizeof(in),
		 "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
		 "64\r\n%s\r\n1\r\n", body);
	assert_int_equal(feed1(&p, in, &used), TD_HP_ERROR);
	assert_int_equal(td_hparse_error(&p)->status, 413);
	assert_true(p.body.len <= small.max_body);
	td_hparse_finish(&p);

	/* one huge chunk announced */
	expect_error(&small, "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
			     "ffffffffffff\r\n", 413, "body_too_large");
	snprintf(in, sizeof(in),
		 "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
		 "32\r\n%.50s\r\n33\r\n%.51s", body, body);
	expect_error(&small, in, 413, "body_too_large");
}

static void smuggling(void **state)
{
	expect_error(NULL, "POST / HTTP/1.1\r\nContent-Length: 3\r\n"
			   "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, "bad_request");
	expect_error(NULL, "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n"
			   "Content-Length: 3\r\n\r\n0\r\n\r\n", 400, "bad_request");
	expect_error(NULL, "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n"
			   "Content-Length: 3\r\n\r\nabc", 400, "bad_request");
	expect_error(NULL, "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
		     400, "bad_request");
	/* identical duplicates are refused too (http-parser's rule) */
	expect_error(NULL, "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
		     400, "bad_request");
	expect_error(NULL, "POST / HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\nabc", 400,
		     "bad_request");
	expect_error(NULL, "POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\nabc", 400, "bad_request");
	expect_error(NULL, "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400,
		     "bad_request");
	/* what Debian's non-strict http-parser would let through */
	expect_error(NULL, "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
			   "3\r\nabcXY0\r\n\r\n", 400, "bad_request");
	expect_error(NULL, "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
			   "3\r\nabc\nX0\r\n\r\n", 400, "bad_request");
	expect_error(NULL, "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
			   "3\rXabc\r\n0\r\n\r\n", 400, "bad_request");
	expect_error(NULL, "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
			   "3\r\nabc\r\n0\r\n\rX", 400, "bad_request");
	expect_error(NULL, "GET / HTTP/1.1\r\nX: a\r\n\rXGET / HTTP/1.1\r\n\r\n", 400,
		     "bad_request");
	expect_error(NULL, "GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400, "bad_request");
	expect_error(NULL, "GET / HTTP/1.1\r\n Host: x\r\n\r\n", 400, "bad_request");
	expect_error(NULL, "GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n", 400, "bad_request");
	expect_error(NULL, "GET / HTTP/1.1\r\nX: a\r\n\tb\r\n\r\n", 400, "bad_request");
	expect_error(NULL, "GET / HTTP/1.1\r\nX:\r\n b\r\n\r\n", 400, "bad_request");
	expect_error(NULL, "GET / HTTP/1.1\r\nX:\r\n\r\n b\r\n\r\n", 400, "bad_request");
	expect_error(NULL, "GET / HTTP/1.1\nX: \n \n\n", 400, "bad_request");
	expect_error(NULL, "POST / HTTP/1.1\r\nTransfer-Encoding:\r\n chunked\r\n\r\n"
			   "0\r\n\r\n", 400, "bad_request");
	expect_error(NULL, "GET /a\tb HTTP/1.1\r\n\r\n", 400, "bad_request");
	expect_error(NULL, "GET / HTTP/1.1\r\nX: a\rY: b\r\n\r\n", 400, "bad_request");
	/* the message says which */
	char *log = parse_all(NULL, "POST / HTTP/1.1\r\nContent-Length: 3\r\n"
				    "Transfer-Encoding: chunked\r\n\r\n");
	assert_non_null(strstr(log, "Content-Length together with Transfer-Encoding"));
	free(log);
}

static void transfer_encoding(void **state)
{
	expect_error(NULL, "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 501,
		     "unsupported_transfer_encoding");
	expect_error(NULL, "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
		     501, "unsupported_transfer_encoding");
	expect_error(NULL, "POST / HTTP/1.1\r\nTransfer-Encoding: gzip ,chunked\r\n\r\n", 501,
		     "unsupported_transfer_encoding");
	expect_error(NULL, "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 501,
		     "unsupported_transfer_encoding");
	expect_error(NULL, "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n"
			   "Transfer-Encoding: identity\r\n\r\n", 501,
		     "unsupported_transfer_encoding");
	expect_error(NULL, "POST / HTTP/1.1\r\nTransfer-Encoding: chunked;q=1\r\n\r\n", 501,
		     "unsupported_transfer_encoding");
	expect_error(NULL, "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", 400,
		     "bad_request");
	expect_error(NULL, "POST / HTTP/1.1\r\nTransfer-Encoding:\r\n\r\n", 400, "bad_request");
	/* Empty list elements are valid, but http-parser does not see "chunked"
	 * in them, so they are refused rather than parsed two ways. */
	expect_error(NULL, "POST / HTTP/1.1\r\nTransfer-Encoding: , chunked\r\n\r\n0\r\n\r\n",
		     400, "bad_request");
	char *log = parse_all(NULL, "POST / HTTP/1.1\r\nTransfer-Encoding: CHUNKED  \r\n\r\n"
				    "0\r\n\r\n");
	assert_non_null(strstr(log, "chunked=1\n"));
	free(log);
}

static void versions_and_methods(void **state)
{
	expect_error(NULL, "GET / HTTP/2.0\r\n\r\n", 505, "version_not_supported");
	expect_error(NULL, "GET / HTTP/1.2\r\n\r\n", 505, "version_not_supported");
	expect_error(NULL, "GET / HTTP/3.1\r\nHost: x\r\n\r\n", 505, "version_not_supported");
	expect_error(NULL, "GET /\r\n\r\n", 505, "version_not_supported"); /* HTTP/0.9 */
	expect_error(NULL, "GET / HTTP/1.10\r\n\r\n", 400, "bad_request");
	expect_error(NULL, "CONNECT example.com:443 HTTP/1.1\r\n\r\n", 501, "not_implemented");
	expect_error(NULL, "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
		     501, "not_implemented");
	/* Upgrade without "Connection: upgrade" is no upgrade request */
	char *log = parse_all(NULL, "GET / HTTP/1.1\r\nUpgrade: h2c\r\n\r\n");
	assert_non_null(strstr(log, "REQ GET "));
	free(log);
	log = parse_all(NULL, "PATCH /p HTTP/1.1\r\n\r\nM-SEARCH * HTTP/1.1\r\n\r\n");
	assert_non_null(strstr(log, "REQ PATCH /p "));
	assert_non_null(strstr(log, "REQ M-SEARCH * path=* "));
	free(log);
}

static void garbage(void **state)
{
	static const char *const bad[] = {
		"\x01\x02\x03", "get / HTTP/1.1\r\n\r\n", "GET / FOO/1.1\r\n\r\n",
		"GET / HTTP/1.1\r\nX: \x01\r\n\r\n", "GET / HTTP/1.1\r\nX\r\n\r\n",
		"GET  HTTP/1.1\r\n\r\n", "\r\n\x80", "GET / HTTP/1.1\r\n: empty\r\n\r\n",
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		expect_error(NULL, bad[i], 400, "bad_request");
	/* http-parser's description is the message */
	char *log = parse_all(NULL, "get / HTTP/1.1\r\n\r\n");
	assert_string_equal(log, "ERROR 400 bad_request invalid HTTP method\n");
	free(log);
	/* a NUL byte */
	log = parse_all_n(NULL, "GET / HTTP/1.1\r\nX: a\0b\r\n\r\n", 25);
	assert_non_null(strstr(log, "ERROR 400 bad_request "));
	free(log);
}

static void header_values(void **state)
{
	expect_log(NULL,
		   "GET / HTTP/1.1\r\nA:   a b  \t\r\nB:\r\nC: \t \r\nD:x\r\n"
		   "E: \xc3\xa9t\xc3\xa9\r\n\r\n",
		   "REQ GET / path=/ query= HTTP/1.1 ka=1 chunked=0\n"
		   " H A: [a b]\n"
		   " H B: []\n"
		   " H C: []\n"
		   " H D: [x]\n"
		   " H E: [\xc3\xa9t\xc3\xa9]\n"
		   " B 0 []\n"
		   "END consumed=57 started=0\n");
}

static void header_lookup(void **state)
{
	struct td_hparse p;
	size_t used, len = 99;

	assert_int_equal(td_hparse_init(&p, NULL), 0);
	assert_int_equal(feed1(&p, "GET / HTTP/1.1\r\nX-Hub-Signature-256: sha256=ab\r\n"
				   "Accept: a\r\naccept: b\r\nEmpty:\r\n\r\n", &used),
			 TD_HP_REQUEST);
	const struct td_hreq *r = td_hparse_req(&p);
	assert_string_equal(td_hreq_header(r, "x-hub-signature-256", &len), "sha256=ab");
	assert_int_equal(len, 9);
	assert_string_equal(td_hreq_header(r, "X-HUB-SIGNATURE-256", NULL), "sha256=ab");
	assert_string_equal(td_hreq_header(r, "ACCEPT", &len), "a");
	assert_int_equal(len, 1);
	assert_string_equal(td_hreq_header(r, "empty", &len), "");
	assert_int_equal(len, 0);
	len = 99;
	assert_null(td_hreq_header(r, "missing", &len));
	assert_int_equal(len, 0);
	assert_null(td_hreq_header(r, "accep", NULL));
	assert_null(td_hreq_header(r, "accepts", NULL));
	td_hparse_finish(&p);
}

static void path_query(void **state)
{
	static const struct {
		const char *target, *path, *query;
	} t[] = {
		{"/a/b?x=1&y=2#frag", "/a/b", "x=1&y=2"},
		{"/a#f?x", "/a", ""},
		{"/?", "/", ""},
		{"/p?a?b", "/p", "a?b"},
		{"/%20x", "/%20x", ""},
		{"*", "*", ""},
		{"http://example.com:8080/p/q?z=1", "/p/q", "z=1"},
		{"http://example.com", "/", ""},
		{"https://u@h?x", "/", "x"},
		{"http://h/#f", "/", ""},
	};
	struct td_hparse p;
	char in[256];
	size_t used;

	assert_int_equal(td_hparse_init(&p, NULL), 0);
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		snprintf(in, sizeof(in), "%s %s HTTP/1.1\r\n\r\n",
			 t[i].target[0] == '*' ? "OPTIONS" : "GET", t[i].target);
		assert_int_equal(feed1(&p, in, &used), TD_HP_REQUEST);
		const struct td_hreq *r = td_hparse_req(&p);
		assert_string_equal(r->target, t[i].target);
		assert_string_equal(r->path, t[i].path);
		assert_int_equal(r->path_len, strlen(t[i].path));
		assert_string_equal(r->query, t[i].query);
		assert_int_equal(r->query_len, strlen(t[i].query));
		td_hparse_next(&p);
	}
	td_hparse_finish(&p);
}

static void error_is_sticky(void **state)
{
	struct td_hparse p;
	enum td_hparse_ev ev;
	size_t used;

	assert_int_equal(td_hparse_init(&p, NULL), 0);
	assert_int_equal(feed1(&p, "BREW / HTCPCP/1.0\r\n\r\n", &used), TD_HP_ERROR);
	assert_int_equal(td_hparse_error(&p)->status, 400);
	assert_string_equal(td_hparse_error(&p)->code, "bad_request");
	assert_true(strlen(td_hparse_error(&p)->message) > 0);
	assert_int_equal(feed1(&p, "GET / HTTP/1.1\r\n\r\n", &used), TD_HP_ERROR);
	assert_int_equal(used, 0);
	td_hparse_next(&p);
	assert_int_equal(feed1(&p, "GET / HTTP/1.1\r\n\r\n", &used), TD_HP_ERROR);
	assert_int_equal(used, 0);
	assert_int_equal(td_hparse_feed(&p, NULL, 0, &ev), 0);
	assert_int_equal(ev, TD_HP_ERROR);
	assert_int_equal(td_hparse_error(&p)->status, 400);
	td_hparse_finish(&p);
	td_hparse_finish(&p); /* finish of a finished (zeroed) parser */
}

static void started_flags(void **state)
{
	struct td_hparse p;
	size_t used;

	assert_int_equal(td_hparse_init(&p, NULL), 0);
	assert_false(td_hparse_started(&p));
	assert_int_equal(feed1(&p, "G", &used), TD_HP_MORE);
	assert_true(td_hparse_started(&p));
	assert_false(td_hparse_headers_done(&p));
	assert_int_equal(feed1(&p, "ET / HTTP/1.1\r\nContent-Length: 2\r\n\r\n", &used), TD_HP_MORE);
	assert_true(td_hparse_headers_done(&p));
	assert_int_equal(feed1(&p, "ab", &used), TD_HP_REQUEST);
	td_hparse_next(&p);
	assert_false(td_hparse_started(&p));
	assert_false(td_hparse_headers_done(&p));
	td_hparse_finish(&p);
}

static void reuse(void **state)
{
	static const char req[] = "POST /r HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nContent-Length: 10\r\n"
				  "\r\n0123456789";
	struct td_hparse p;
	size_t used;
	char *head = NULL, *body = NULL;
	struct td_hhdr *hdrs = NULL;

	assert_int_equal(td_hparse_init(&p, NULL), 0);
	for (int i = 0; i < 1000; i++) {
		assert_int_equal(feed1(&p, req, &used), TD_HP_REQUEST);
		assert_int_equal(used, strlen(req));
		assert_string_equal(td_hparse_req(&p)->body, "0123456789");
		if (i == 1) {
			head = p.head.data;
			body = p.body.data;
			hdrs = p.hdrs;
		} else if (i > 1) {
			/* steady state: the same memory, no reallocation */
			assert_ptr_equal(p.head.data, head);
			assert_ptr_equal(p.body.data, body);
			assert_ptr_equal(p.hdrs, hdrs);
		}
		td_hparse_next(&p);
	}

	/* announcing a big body does not allocate it */
	td_hparse_finish(&p);
	struct td_hparse_limits lim = {16384, 1 << 20, 100};
	assert_int_equal(td_hparse_init(&p, &lim), 0);
	assert_int_equal(feed1(&p, "POST / HTTP/1.1\r\nContent-Length: 1048576\r\n\r\n", &used),
			 TD_HP_MORE);
	assert_true(td_hparse_headers_done(&p));
	assert_true(p.body.cap <= 64 * 1024);

	/* a big body is not kept once the request is done */
	td_hparse_finish(&p);
	assert_int_equal(td_hparse_init(&p, &lim), 0);
	size_t n = 200000;
	char *big = malloc(n + 64);
	assert_non_null(big);
	int h = snprintf(big, 64, "POST / HTTP/1.1\r\nContent-Length: %zu\r\n\r\n", n);
	memset(big + h, 'z', n);
	enum td_hparse_ev ev;
	assert_int_equal(td_hparse_feed(&p, guarded(big, (size_t)h + n), (size_t)h + n, &ev),
			 (size_t)h + n);
	assert_int_equal(ev, TD_HP_REQUEST);
	assert_int_equal(td_hparse_req(&p)->body_len, n);
	assert_true(p.body.cap > 64 * 1024);
	td_hparse_next(&p);
	assert_true(p.body.cap <= 64 * 1024);
	assert_int_equal(feed1(&p, req, &used), TD_HP_REQUEST);
	assert_string_equal(td_hparse_req(&p)->body, "0123456789");
	free(big);
	td_hparse_finish(&p);
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* 2 MiB fed byte by byte: linear work takes well under a second (a few
 * under sanitizers); anything quadratic would take hours. */
static void linear_time(void **state)
{
	double t0 = now_s();
	struct td_hparse_limits lim = {1 << 20, 4 << 20, 100};
	size_t n = 2 << 20;
	char *s = malloc(n + 128);
	struct td_hparse p;
	enum td_hparse_ev ev = TD_HP_MORE;

	assert_non_null(s);
	int h = snprintf(s, 128, "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
	size_t len = (size_t)h;
	while (len + 16 < n) {
		memcpy(s + len, "7\r\nabcdefg\r\n", 12);
		len += 12;
	}
	memcpy(s + len, "0\r\n\r\n", 5);
	len += 5;
	assert_int_equal(td_hparse_init(&p, &lim), 0);
	for (size_t i = 0; i < len; i++) {
		assert_int_equal(td_hparse_feed(&p, s + i, 1, &ev), 1);
		if (ev != TD_HP_MORE)
			break;
	}
	assert_int_equal(ev, TD_HP_REQUEST);
	assert_true(td_hparse_req(&p)->body_len > (1 << 20));
	td_hparse_finish(&p);
	free(s);
	assert_true(now_s() - t0 < 30);
}

/* ---- responses ---------------------------------------------------------- */

static void responses(void **state)
{
	struct td_buf b = TD_BUF_INIT;

	assert_int_equal(td_hresp(&b, 200, "application/json", NULL, "{}", 2, true), 0);
	assert_string_equal(b.data, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
				    "Content-Type: application/json\r\n\r\n{}");
	assert_int_equal(b.len, strlen(b.data));
	/* appends */
	assert_int_equal(td_hresp(&b, 404, NULL, "X-A: 1\r\nX-B: 2\r\n", NULL, 0, false), 0);
	assert_string_equal(b.data, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
				    "Content-Type: application/json\r\n\r\n{}"
				    "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n"
				    "Connection: close\r\nX-A: 1\r\nX-B: 2\r\n\r\n");
	td_buf_reset(&b);
	/* bodies may hold NUL bytes */
	assert_int_equal(td_hresp(&b, 202, "application/octet-stream", NULL, "a\0b", 3, true), 0);
	assert_int_equal(b.len, 87);
	assert_memory_equal(b.data, "HTTP/1.1 202 Accepted\r\nContent-Length: 3\r\n"
				    "Content-Type: application/octet-stream\r\n\r\na\0b", 87);
	td_buf_reset(&b);
	/* 204: no Content-Length, and no body allowed */
	assert_int_equal(td_hresp(&b, 204, NULL, NULL, NULL, 0, true), 0);
	assert_string_equal(b.data, "HTTP/1.1 204 No Content\r\n\r\n");
	assert_int_equal(td_hresp(&b, 204, NULL, NULL, "x", 1, true), -EINVAL);
	assert_int_equal(td_hresp(&b, 99, NULL, NULL, NULL, 0, true), -EINVAL);
	assert_int_equal(td_hresp(&b, 1000, NULL, NULL, NULL, 0, true), -EINVAL);
	assert_string_equal(b.data, "HTTP/1.1 204 No Content\r\n\r\n");
	td_buf_reset(&b);
	assert_int_equal(td_hresp(&b, 599, NULL, NULL, NULL, 0, true), 0);
	assert_string_equal(b.data, "HTTP/1.1 599 Unknown\r\nContent-Length: 0\r\n\r\n");
	td_buf_reset(&b);

	assert_int_equal(td_hresp_continue(&b), 0);
	assert_string_equal(b.data, "HTTP/1.1 100 Continue\r\n\r\n");
	td_buf_reset(&b);

	assert_int_equal(td_hresp_error(&b, 413, "body_too_large", "body exceeds 100 bytes",
					NULL, false),
			 0);
	static const char e413[] = "{\"status\":413,\"error\":\"body_too_large\","
				   "\"message\":\"body exceeds 100 bytes\"}";
	char want[512];
	snprintf(want, sizeof(want),
		 "HTTP/1.1 413 Content Too Large\r\nContent-Length: %zu\r\n"
		 "Content-Type: application/json\r\nConnection: close\r\n\r\n%s",
		 strlen(e413), e413);
	assert_string_equal(b.data, want);

	/* escaped, appended after what was there */
	assert_int_equal(td_hresp_error(&b, 404, "not_found", "no \"route\"\n\x01\\", "X-Id: 7\r\n",
					true),
			 0);
	static const char e404[] = "{\"status\":404,\"error\":\"not_found\","
				   "\"message\":\"no \\\"route\\\"\\n\\u0001\\\\\"}";
	size_t first = strlen(want);
	snprintf(want + first, sizeof(want) - first,
		 "HTTP/1.1 404 Not Found\r\nContent-Length: %zu\r\n"
		 "Content-Type: application/json\r\nX-Id: 7\r\n\r\n%s",
		 strlen(e404), e404);
	assert_string_equal(b.data, want);
	assert_int_equal(b.len, strlen(want));
	assert_int_equal(td_hresp_error(&b, 204, "x", "y", NULL, true), -EINVAL);
	assert_int_equal(b.len, strlen(want));

	/* the parser's error, answered */
	struct td_hparse p;
	size_t used;
	td_buf_reset(&b);
	assert_int_equal(td_hparse_init(&p, NULL), 0);
	assert_int_equal(feed1(&p, "GET / HTTP/2.0\r\n\r\n", &used), TD_HP_ERROR);
	const struct td_hparse_err *e = td_hparse_error(&p);
	assert_int_equal(td_hresp_error(&b, e->status, e->code, e->message, NULL, false), 0);
	assert_non_null(strstr(b.data, "HTTP/1.1 505 HTTP Version Not Supported\r\n"));
	assert_non_null(strstr(b.data, "\"error\":\"version_not_supported\""));
	assert_non_null(strstr(b.data, "HTTP/2.0 is not supported"));
	td_hparse_finish(&p);
	td_buf_finish(&b);
}

static void reasons(void **state)
{
	static const struct {
		int status;
		const char *reason;
	} t[] = {
		{100, "Continue"}, {200, "OK"}, {201, "Created"}, {202, "Accepted"},
		{204, "No Content"}, {400, "Bad Request"}, {401, "Unauthorized"},
		{403, "Forbidden"}, {404, "Not Found"}, {405, "Method Not Allowed"},
		{408, "Request Timeout"}, {409, "Conflict"}, {413, "Content Too Large"},
		{415, "Unsupported Media Type"}, {417, "Expectation Failed"},
		{429, "Too Many Requests"}, {431, "Request Header Fields Too Large"},
		{500, "Internal Server Error"}, {501, "Not Implemented"},
		{503, "Service Unavailable"}, {505, "HTTP Version Not Supported"},
		{0, "Unknown"}, {299, "Unknown"}, {-1, "Unknown"},
	};

	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
		assert_string_equal(td_http_reason(t[i].status), t[i].reason);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(simple_get),
		cmocka_unit_test(post_body),
		cmocka_unit_test(chunked_body),
		cmocka_unit_test(pipelined),
		cmocka_unit_test(split_equivalence),
		cmocka_unit_test(keep_alive),
		cmocka_unit_test(expect_continue),
		cmocka_unit_test(expectation_failed),
		cmocka_unit_test(limit_header_bytes),
		cmocka_unit_test(limit_header_bytes_streaming),
		cmocka_unit_test(limit_header_count),
		cmocka_unit_test(limit_content_length),
		cmocka_unit_test(limit_chunked),
		cmocka_unit_test(smuggling),
		cmocka_unit_test(transfer_encoding),
		cmocka_unit_test(versions_and_methods),
		cmocka_unit_test(garbage),
		cmocka_unit_test(header_values),
		cmocka_unit_test(header_lookup),
		cmocka_unit_test(path_query),
		cmocka_unit_test(error_is_sticky),
		cmocka_unit_test(started_flags),
		cmocka_unit_test(reuse),
		cmocka_unit_test(linear_time),
		cmocka_unit_test(responses),
		cmocka_unit_test(reasons),
	};
	return cmocka_run_group_tests(tests, guard_setup, guard_teardown);
}
