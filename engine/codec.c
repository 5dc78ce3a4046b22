/*
 * JSON <-> msgpack.
 *
 * JSON -> msgpack is one recursive-descent pass over the text that writes
 * msgpack straight into the caller's sbuffer; integers never go through a
 * double, so they stay exact.
 *
 * Container sizes: msgpack puts the element count in front of a map or
 * array, but the parser only knows it at the closing bracket. Each container
 * therefore gets a 5-byte placeholder (room for the widest header) and a
 * slot recording where it is; the count is filled in when it closes. After
 * the whole document has parsed, one forward pass over the output replaces
 * every placeholder by the shortest header and slides the bytes in between
 * down. Each byte moves at most once, so this is O(output) whatever the
 * nesting, and the text is parsed only once. (A pre-scan or a two-pass count
 * would parse every string and number twice; packing each container into a
 * temporary buffer would copy nested content once per level.)
 *
 * msgpack -> JSON renders compactly (no spaces) and, for floats, prints the
 * shortest of %.15g/%.16g/%.17g that reads back as the same double, adding
 * ".0" when the text would otherwise read back as an integer.
 *
 * Numbers are printed and read in the "C" locale whatever the process
 * locale is, so a tool that calls setlocale() still emits '.'.
 */
#include "triggerd/codec.h"

#include <errno.h>
#include <locale.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "triggerd/triggerd.h"

#define HDR_MAX 5 /* widest container header: 0xdd/0xdf + 32-bit count */

/* ---- shared helpers ---------------------------------------------------- */

static locale_t c_loc;
static pthread_once_t c_loc_once = PTHREAD_ONCE_INIT;

static void c_loc_init(void)
{
	c_loc = newlocale(LC_ALL_MASK, "C", (locale_t)0);
}

static locale_t c_locale(void)
{
	pthread_once(&c_loc_once, c_loc_init);
	return c_loc;
}

/*
 * Length (1..4) of the well-formed UTF-8 sequence at @s, or 0 when it is
 * ill-formed; then *bad is the length of its maximal well-formed prefix
 * (at least 1), the unit Unicode says to replace by one U+FFFD.
 */
static size_t utf8_seq(const unsigned char *s, size_t n, size_t *bad)
{
	unsigned char c = s[0], lo = 0x80, hi = 0xbf;
	size_t need;

	if (c < 0x80)
		return 1;
	if (c < 0xc2) {
		*bad = 1;
		return 0;
	} else if (c < 0xe0) {
		need = 1;
	} else if (c < 0xf0) {
		need = 2;
		/* E0 excludes overlongs, ED excludes UTF-16 surrogates. */
		if (c == 0xe0)
			lo = 0xa0;
		else if (c == 0xed)
			hi = 0x9f;
	} else if (c < 0xf5) {
		need = 3;
		/* F0 excludes overlongs, F4 excludes > U+10FFFF. */
		if (c == 0xf0)
			lo = 0x90;
		else if (c == 0xf4)
			hi = 0x8f;
	} else {
		*bad = 1;
		return 0;
	}
	for (size_t i = 1; i <= need; i++) {
		if (i >= n || s[i] < lo || s[i] > hi) {
			*bad = i;
			return 0;
		}
		lo = 0x80;
		hi = 0xbf;
	}
	return need + 1;
}

/* ---- JSON -> msgpack ---------------------------------------------------- */

struct slot {
	size_t pos;     /* offset of the placeholder in the sbuffer */
	uint32_t count; /* elements, or key/value pairs for a map */
	bool map;
};

struct parser {
	const unsigned char *start;
	const unsigned char *p;
	const unsigned char *end;
	msgpack_sbuffer *sb;
	msgpack_packer pk;
	struct slot *slots;
	size_t nslots;
	size_t capslots;
	char *err;
	size_t errlen;
	struct slot inline_slots[32];
};

static int parse_value(struct parser *ps, int depth);

__attribute__((format(printf, 3, 4)))
static int fail(struct parser *ps, const unsigned char *at, const char *fmt, ...)
{
	if (!ps->err || !ps->errlen)
		return TD_EJSON;
	int n = snprintf(ps->err, ps->errlen, "offset %zu: ",
			 (size_t)(at - ps->start));
	if (n >= 0 && (size_t)n < ps->errlen) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(ps->err + n, ps->errlen - (size_t)n, fmt, ap);
		va_end(ap);
	}
	return TD_EJSON;
}

/* "expected X" plus what is actually at the current position. */
static int fail_found(struct parser *ps, const char *expected)
{
	if (ps->p == ps->end)
		return fail(ps, ps->p, "%s, found end of input", expected);
	unsigned char c = *ps->p;
	if (c > 0x20 && c < 0x7f)
		return fail(ps, ps->p, "%s, found '%c'", expected, c);
	return fail(ps, ps->p, "%s, found byte 0x%02x", expected, c);
}

static int nomem(struct parser *ps)
{
	if (ps->err && ps->errlen)
		snprintf(ps->err, ps->errlen, "out of memory");
	return -ENOMEM;
}

static int sb_reserve(msgpack_sbuffer *sb, size_t n)
{
	if (sb->alloc - sb->size >= n)
		return 0;
	size_t cap = sb->alloc ? sb->alloc : 256;
	while (cap - sb->size < n) {
		if (cap > SIZE_MAX / 2)
			return -ENOMEM;
		cap *= 2;
	}
	char *d = realloc(sb->data, cap);
	if (!d)
		return -ENOMEM;
	sb->data = d;
	sb->alloc = cap;
	return 0;
}

static void put_be16(char *d, size_t v)
{
	d[0] = (char)(v >> 8);
	d[1] = (char)v;
}

static void put_be32(char *d, size_t v)
{
	d[0] = (char)(v >> 24);
	d[1] = (char)(v >> 16);
	d[2] = (char)(v >> 8);
	d[3] = (char)v;
}

static size_t str_hdr_len(size_t n)
{
	return n < 32 ? 1 : n < 256 ? 2 : n < 65536 ? 3 : 5;
}

static void put_str_hdr(char *d, size_t n)
{
	if (n < 32) {
		d[0] = (char)(0xa0 | n);
	} else if (n < 256) {
		d[0] = (char)0xd9;
		d[1] = (char)n;
	} else if (n < 65536) {
		d[0] = (char)0xda;
		put_be16(d + 1, n);
	} else {
		d[0] = (char)0xdb;
		put_be32(d + 1, n);
	}
}

/* Writes the shortest array/map header; returns its length. */
static size_t put_container_hdr(char *d, uint32_t n, bool map)
{
	if (n < 16) {
		d[0] = (char)((map ? 0x80 : 0x90) | n);
		return 1;
	}
	if (n < 65536) {
		d[0] = (char)(map ? 0xde : 0xdc);
		put_be16(d + 1, n);
		return 3;
	}
	d[0] = (char)(map ? 0xdf : 0xdd);
	put_be32(d + 1, n);
	return 5;
}

static inline void skip_ws(struct parser *ps)
{
	while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\n' ||
				   *ps->p == '\r' || *ps->p == '\t'))
		ps->p++;
}

static int hex4(const unsigned char *s, unsigned *out)
{
	unsigned v = 0;
	for (int i = 0; i < 4; i++) {
		unsigned char c = s[i];
		if (c >= '0' && c <= '9')
			v = v << 4 | (unsigned)(c - '0');
		else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
			v = v << 4 | (unsigned)((c | 0x20) - 'a' + 10);
		else
			return -1;
	}
	*out = v;
	return 0;
}

static size_t put_utf8(unsigned char *o, unsigned cp)
{
	if (cp < 0x80) {
		o[0] = (unsigned char)cp;
		return 1;
	}
	if (cp < 0x800) {
		o[0] = (unsigned char)(0xc0 | cp >> 6);
		o[1] = (unsigned char)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		o[0] = (unsigned char)(0xe0 | cp >> 12);
		o[1] = (unsigned char)(0x80 | (cp >> 6 & 0x3f));
		o[2] = (unsigned char)(0x80 | (cp & 0x3f));
		return 3;
	}
	o[0] = (unsigned char)(0xf0 | cp >> 18);
	o[1] = (unsigned char)(0x80 | (cp >> 12 & 0x3f));
	o[2] = (unsigned char)(0x80 | (cp >> 6 & 0x3f));
	o[3] = (unsigned char)(0x80 | (cp & 0x3f));
	return 4;
}

/*
 * Decodes the string body s[0..n) (escapes, UTF-8 check) into @o, which has
 * room for n bytes: no escape or valid sequence decodes to more bytes than
 * it occupies in the text. Returns the decoded length via *outn.
 */
static int decode_str(struct parser *ps, const unsigned char *s, size_t n,
		      unsigned char *o, size_t *outn)
{
	size_t i = 0, w = 0;

	while (i < n) {
		unsigned char c = s[i];
		if (c >= 0x80) {
			size_t bad, k = utf8_seq(s + i, n - i, &bad);
			if (!k && bad == 1 && (c < 0xc2 || c > 0xf4))
				return fail(ps, s + i, "invalid UTF-8 byte 0x%02x in string", c);
			if (!k && i + bad >= n)
				return fail(ps, s + i, "truncated UTF-8 sequence in string");
			if (!k)
				return fail(ps, s + i + bad,
					    "invalid UTF-8 continuation byte 0x%02x in string",
					    s[i + bad]);
			memcpy(o + w, s + i, k);
			w += k;
			i += k;
			continue;
		}
		if (c != '\\') {
			/* The scan stopped at the first control character. */
			o[w++] = c;
			i++;
			continue;
		}
		if (n - i < 2)
			return fail(ps, s + n, "unterminated string (opened at offset %zu)",
				    (size_t)(ps->p - ps->start));
		switch (s[i + 1]) {
		case '"': o[w++] = '"'; break;
		case '\\': o[w++] = '\\'; break;
		case '/': o[w++] = '/'; break;
		case 'b': o[w++] = '\b'; break;
		case 'f': o[w++] = '\f'; break;
		case 'n': o[w++] = '\n'; break;
		case 'r': o[w++] = '\r'; break;
		case 't': o[w++] = '\t'; break;
		case 'u': {
			unsigned cp, lo;
			if (n - i < 6 || hex4(s + i + 2, &cp))
				return fail(ps, s + i, "invalid \\u escape, expected 4 hex digits");
			if (cp >= 0xdc00 && cp <= 0xdfff)
				return fail(ps, s + i, "unpaired low surrogate \\u%04x", cp);
			if (cp >= 0xd800 && cp <= 0xdbff) {
				if (n - i < 12 || s[i + 6] != '\\' || s[i + 7] != 'u' ||
				    hex4(s + i + 8, &lo) || lo < 0xdc00 || lo > 0xdfff)
					return fail(ps, s + i, "unpaired high surrogate \\u%04x", cp);
				cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
				i += 6;
			}
			w += put_utf8(o + w, cp);
			i += 6;
			continue;
		}
		default:
			if (s[i + 1] > 0x20 && s[i + 1] < 0x7f)
				return fail(ps, s + i, "invalid escape '\\%c' in string", s[i + 1]);
			return fail(ps, s + i, "invalid escape (byte 0x%02x after '\\') in string",
				    s[i + 1]);
		}
		i += 2;
	}
	*outn = w;
	return 0;
}

static int parse_string(struct parser *ps)
{
	const unsigned char *s = ps->p + 1;
	size_t avail = (size_t)(ps->end - s), i = 0;
	bool plain = true;

	/*
	 * Find where the body ends: the closing quote, a raw control character
	 * (an error, reported after any earlier error in the body) or the end.
	 */
	while (i < avail) {
		unsigned char c = s[i];
		if (c == '"' || c < 0x20)
			break;
		if (c == '\\') {
			plain = false;
			i = avail - i < 2 ? avail : i + 2;
			continue;
		}
		if (c >= 0x80)
			plain = false;
		i++;
	}

	msgpack_sbuffer *sb = ps->sb;
	size_t hl = str_hdr_len(i), n = i;
	if (sb_reserve(sb, hl + i))
		return nomem(ps);
	unsigned char *body = (unsigned char *)sb->data + sb->size + hl;
	if (plain) {
		memcpy(body, s, i);
	} else {
		int rc = decode_str(ps, s, i, body, &n);
		if (rc)
			return rc;
	}
	if (i == avail)
		return fail(ps, ps->end, "unterminated string (opened at offset %zu)",
			    (size_t)(ps->p - ps->start));
	if (s[i] != '"')
		return fail(ps, s + i, "unescaped control character 0x%02x in string", s[i]);
	if (n > UINT32_MAX)
		return fail(ps, ps->p, "string longer than 4294967295 bytes");
	if (str_hdr_len(n) != hl) {
		/* Escapes made it shorter: the header shrinks too. */
		memmove(body - hl + str_hdr_len(n), body, n);
		hl = str_hdr_len(n);
	}
	put_str_hdr(sb->data + sb->size, n);
	sb->size += hl + n;
	ps->p = s + i + 1;
	return 0;
}

static inline bool is_digit(const unsigned char *p, const unsigned char *end)
{
	return p < end && *p >= '0' && *p <= '9';
}

static int parse_number(struct parser *ps)
{
	const unsigned char *s = ps->p, *q = s, *end = ps->end;
	bool neg = false, integer = true;

	if (*q == '-') {
		neg = true;
		q++;
		if (!is_digit(q, end)) {
			ps->p = q;
			return fail_found(ps, "expected a digit after '-'");
		}
	}
	const unsigned char *digits = q;
	if (*q == '0') {
		q++;
		if (is_digit(q, end))
			return fail(ps, q - 1, "leading zero in number");
	} else {
		while (is_digit(q, end))
			q++;
	}
	size_t ndig = (size_t)(q - digits);
	if (q < end && *q == '.') {
		integer = false;
		q++;
		if (!is_digit(q, end)) {
			ps->p = q;
			return fail_found(ps, "expected a digit after '.'");
		}
		while (is_digit(q, end))
			q++;
	}
	if (q < end && (*q == 'e' || *q == 'E')) {
		integer = false;
		q++;
		if (q < end && (*q == '+' || *q == '-'))
			q++;
		if (!is_digit(q, end)) {
			ps->p = q;
			return fail_found(ps, "expected a digit in exponent");
		}
		while (is_digit(q, end))
			q++;
	}
	ps->p = q;

	/* 20 digits is the most a uint64 can have. */
	if (integer && ndig <= 20) {
		uint64_t v = 0;
		bool ovf = false;
		for (size_t i = 0; i < ndig; i++) {
			unsigned d = (unsigned)(digits[i] - '0');
			if (v > (UINT64_MAX - d) / 10) {
				ovf = true;
				break;
			}
			v = v * 10 + d;
		}
		if (!ovf && !neg)
			return msgpack_pack_uint64(&ps->pk, v) ? nomem(ps) : 0;
		if (!ovf && v <= (uint64_t)INT64_MAX + 1) {
			int64_t iv = v == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)v;
			return msgpack_pack_int64(&ps->pk, iv) ? nomem(ps) : 0;
		}
	}

	/* strtod needs a NUL-terminated copy: the input may end right here. */
	char tmp[64], *buf = tmp;
	size_t n = (size_t)(q - s);
	if (n >= sizeof(tmp) && !(buf = malloc(n + 1)))
		return nomem(ps);
	memcpy(buf, s, n);
	buf[n] = '\0';
	locale_t loc = c_locale();
	double d = loc ? strtod_l(buf, NULL, loc) : strtod(buf, NULL);
	if (buf != tmp)
		free(buf);
	/* msgpack could carry it, but JSON could not carry it back. */
	if (isinf(d))
		return fail(ps, s, "number out of range");
	return msgpack_pack_double(&ps->pk, d) ? nomem(ps) : 0;
}

static int parse_literal(struct parser *ps, const char *word, size_t n)
{
	if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, word, n))
		return fail(ps, ps->p, "invalid literal, expected '%s'", word);
	ps->p += n;
	int rc;
	if (word[0] == 't')
		rc = msgpack_pack_true(&ps->pk);
	else if (word[0] == 'f')
		rc = msgpack_pack_false(&ps->pk);
	else
		rc = msgpack_pack_nil(&ps->pk);
	return rc ? nomem(ps) : 0;
}

/* Reserves a header placeholder; *idx names its slot. */
static int open_container(struct parser *ps, bool map, size_t *idx)
{
	if (ps->nslots == ps->capslots) {
		size_t cap = ps->capslots * 2;
		struct slot *n;
		if (ps->slots == ps->inline_slots) {
			n = malloc(cap * sizeof(*n));
			if (n)
				memcpy(n, ps->slots, ps->nslots * sizeof(*n));
		} else {
			n = realloc(ps->slots, cap * sizeof(*n));
		}
		if (!n)
			return nomem(ps);
		ps->slots = n;
		ps->capslots = cap;
	}
	if (sb_reserve(ps->sb, HDR_MAX))
		return nomem(ps);
	*idx = ps->nslots++;
	ps->slots[*idx] = (struct slot){ .pos = ps->sb->size, .map = map };
	ps->sb->size += HDR_MAX;
	return 0;
}

static int close_container(struct parser *ps, size_t idx, size_t count,
			   const unsigned char *open)
{
	if (count > UINT32_MAX)
		return fail(ps, open, "more than 4294967295 members in %s",
			    ps->slots[idx].map ? "object" : "array");
	ps->slots[idx].count = (uint32_t)count;
	return 0;
}

/* An array, or with @map an object: the same loop, plus keys for objects. */
static int parse_container(struct parser *ps, int depth, bool map)
{
	const unsigned char *open = ps->p;
	const unsigned char close = map ? '}' : ']';
	size_t idx, count = 0;
	int rc;

	if (depth > TD_JSON_MAX_DEPTH)
		return fail(ps, open, "nesting deeper than %d", TD_JSON_MAX_DEPTH);
	if ((rc = open_container(ps, map, &idx)))
		return rc;
	ps->p++;
	skip_ws(ps);
	if (ps->p < ps->end && *ps->p == close) {
		ps->p++;
		return close_container(ps, idx, 0, open);
	}
	for (;;) {
		if (map) {
			if (ps->p == ps->end || *ps->p != '"')
				return fail_found(ps, "expected a string key in object");
			if ((rc = parse_string(ps)))
				return rc;
			skip_ws(ps);
			if (ps->p == ps->end || *ps->p != ':')
				return fail_found(ps, "expected ':' after object key");
			ps->p++;
		}
		if ((rc = parse_value(ps, depth)))
			return rc;
		count++;
		skip_ws(ps);
		if (ps->p < ps->end && *ps->p == ',') {
			const unsigned char *comma = ps->p++;
			skip_ws(ps);
			if (ps->p < ps->end && *ps->p == close)
				return fail(ps, comma, "trailing comma in %s", map ? "object" : "array");
			continue;
		}
		if (ps->p < ps->end && *ps->p == close) {
			ps->p++;
			return close_container(ps, idx, count, open);
		}
		return fail_found(ps, map ? "expected ',' or '}' in object" :
					    "expected ',' or ']' in array");
	}
}

/* @depth: number of containers enclosing this value. */
static int parse_value(struct parser *ps, int depth)
{
	skip_ws(ps);
	if (ps->p == ps->end)
		return fail_found(ps, "expected a value");
	switch (*ps->p) {
	case '{':
		return parse_container(ps, depth + 1, true);
	case '[':
		return parse_container(ps, depth + 1, false);
	case '"':
		return parse_string(ps);
	case 't':
		return parse_literal(ps, "true", 4);
	case 'f':
		return parse_literal(ps, "false", 5);
	case 'n':
		return parse_literal(ps, "null", 4);
	case '-':
	case '0': case '1': case '2': case '3': case '4':
	case '5': case '6': case '7': case '8': case '9':
		return parse_number(ps);
	default:
		return fail_found(ps, "expected a value");
	}
}

/* Replaces each placeholder by the shortest header (see the top). */
static void compact(struct parser *ps)
{
	if (!ps->nslots)
		return;
	char *d = ps->sb->data;
	size_t w = ps->slots[0].pos, r = w;
	for (size_t i = 0; i < ps->nslots; i++) {
		const struct slot *s = &ps->slots[i];
		size_t gap = s->pos - r;
		if (w != r)
			memmove(d + w, d + r, gap);
		w += gap;
		w += put_container_hdr(d + w, s->count, s->map);
		r = s->pos + HDR_MAX;
	}
	size_t tail = ps->sb->size - r;
	memmove(d + w, d + r, tail);
	ps->sb->size = w + tail;
}

int td_json_to_msgpack(const char *json, size_t len, msgpack_sbuffer *out,
		       char *err, size_t errlen)
{
	struct parser ps = {
		.sb = out,
		.capslots = TD_ARRAY_LEN(ps.inline_slots),
		.err = err,
		.errlen = errlen,
	};
	size_t start_size = out->size;
	int rc;

	if (!json) {
		json = "";
		len = 0;
	}
	ps.start = ps.p = (const unsigned char *)json;
	ps.end = ps.start + len;
	ps.slots = ps.inline_slots;
	msgpack_packer_init(&ps.pk, out, msgpack_sbuffer_write);
	/* The msgpack is rarely larger than the text: usually one allocation. */
	if (sb_reserve(out, len + 16))
		return nomem(&ps);

	rc = parse_value(&ps, 0);
	if (!rc) {
		skip_ws(&ps);
		if (ps.p != ps.end)
			rc = fail(&ps, ps.p, "unexpected data after the value");
	}
	if (!rc)
		compact(&ps);
	else
		out->size = start_size;
	if (ps.slots != ps.inline_slots)
		free(ps.slots);
	if (!rc && err && errlen)
		err[0] = '\0';
	return rc;
}

/* ---- msgpack -> JSON ---------------------------------------------------- */

/*
 * A key that is itself a map, array, bin or ext becomes its JSON text in a
 * string. When that text has such keys of its own, each level escapes the
 * quotes of the levels inside it again, doubling the backslashes: 32 levels
 * of 2-byte input would render to gigabytes. Past this many levels those
 * keys are rendered as "..." instead.
 */
#define KEY_NEST_MAX 3

static int render(const msgpack_object *o, struct td_buf *b, int keynest);

static int put_lit(struct td_buf *b, const char *s)
{
	return td_buf_append(b, s, strlen(s));
}

static int put_int(struct td_buf *b, uint64_t mag, bool neg)
{
	char tmp[21], *p = tmp + sizeof(tmp);
	do {
		*--p = (char)('0' + mag % 10);
		mag /= 10;
	} while (mag);
	if (neg)
		*--p = '-';
	return td_buf_append(b, p, (size_t)(tmp + sizeof(tmp) - p));
}

static int put_float(struct td_buf *b, double v, bool single)
{
	if (!isfinite(v))
		return put_lit(b, "null");

	char tmp[48];
	int n = 0;
	locale_t loc = c_locale(), old = loc ? uselocale(loc) : (locale_t)0;
	/* Shortest precision that reads back as the same value. */
	for (int prec = single ? 6 : 15, max = single ? 9 : 17;; prec++) {
		n = snprintf(tmp, sizeof(tmp) - 2, "%.*g", prec, v);
		if (prec == max)
			break;
		double back = strtod(tmp, NULL);
		if (single ? (float)back == (float)v : back == v)
			break;
	}
	if (old)
		uselocale(old);
	if (n < 0 || (size_t)n >= sizeof(tmp) - 2)
		return -EINVAL;
	/* "1" would come back as an integer. */
	if (!strpbrk(tmp, ".eE")) {
		memcpy(tmp + n, ".0", 2);
		n += 2;
	}
	return td_buf_append(b, tmp, (size_t)n);
}

/* A JSON string literal of @s, invalid UTF-8 replaced by U+FFFD. */
static int put_str(struct td_buf *b, const char *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *u = (const unsigned char *)s;

	/* Worst case every byte becomes \u00XX (U+FFFD is only 3 bytes). */
	if (n > (SIZE_MAX - 2) / 6)
		return -ENOMEM;
	int rc = td_buf_reserve(b, n * 6 + 2);
	if (rc)
		return rc;
	char *o = b->data + b->len;
	*o++ = '"';
	for (size_t i = 0; i < n;) {
		unsigned char c = u[i];
		if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
			*o++ = (char)c;
			i++;
			continue;
		}
		if (c >= 0x80) {
			size_t bad, k = utf8_seq(u + i, n - i, &bad);
			if (k) {
				memcpy(o, u + i, k);
				o += k;
				i += k;
			} else {
				memcpy(o, "\xef\xbf\xbd", 3);
				o += 3;
				i += bad;
			}
			continue;
		}
		*o++ = '\\';
		switch (c) {
		case '"': *o++ = '"'; break;
		case '\\': *o++ = '\\'; break;
		case '\b': *o++ = 'b'; break;
		case '\f': *o++ = 'f'; break;
		case '\n': *o++ = 'n'; break;
		case '\r': *o++ = 'r'; break;
		case '\t': *o++ = 't'; break;
		default:
			memcpy(o, "u00", 3);
			o[3] = hex[c >> 4];
			o[4] = hex[c & 15];
			o += 5;
		}
		i++;
	}
	*o++ = '"';
	b->len = (size_t)(o - b->data);
	b->data[b->len] = '\0';
	return 0;
}

static int put_base64(struct td_buf *b, const char *s, size_t n)
{
	static const char tab[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	const unsigned char *u = (const unsigned char *)s;

	if (n > SIZE_MAX / 2)
		return -ENOMEM;
	int rc = td_buf_reserve(b, (n + 2) / 3 * 4 + 2);
	if (rc)
		return rc;
	char *o = b->data + b->len;
	size_t i = 0;
	*o++ = '"';
	for (; n - i >= 3; i += 3) {
		uint32_t v = (uint32_t)u[i] << 16 | (uint32_t)u[i + 1] << 8 | u[i + 2];
		*o++ = tab[v >> 18];
		*o++ = tab[v >> 12 & 63];
		*o++ = tab[v >> 6 & 63];
		*o++ = tab[v & 63];
	}
	if (n - i) {
		uint32_t v = (uint32_t)u[i] << 16;
		if (n - i == 2)
			v |= (uint32_t)u[i + 1] << 8;
		*o++ = tab[v >> 18];
		*o++ = tab[v >> 12 & 63];
		*o++ = n - i == 2 ? tab[v >> 6 & 63] : '=';
		*o++ = '=';
	}
	*o++ = '"';
	b->len = (size_t)(o - b->data);
	b->data[b->len] = '\0';
	return 0;
}

/* @keynest: how many key texts this key is already inside. */
static int render_key(const msgpack_object *k, struct td_buf *b, int keynest)
{
	switch (k->type) {
	case MSGPACK_OBJECT_STR:
		return put_str(b, k->via.str.ptr, k->via.str.size);
	case MSGPACK_OBJECT_ARRAY:
	case MSGPACK_OBJECT_MAP:
	case MSGPACK_OBJECT_BIN:
	case MSGPACK_OBJECT_EXT:
		if (keynest >= KEY_NEST_MAX)
			return put_lit(b, "\"...\"");
		break;
	default:
		break;
	}

	/* JSON keys are strings: use the key's own JSON text as the string. */
	struct td_buf tmp = TD_BUF_INIT;
	int rc = render(k, &tmp, keynest + 1);
	if (!rc)
		rc = td_buf_json_str(b, tmp.data, tmp.len);
	td_buf_finish(&tmp);
	return rc;
}

/*
 * Recursion is bounded by the object's nesting; msgpack_unpack builds at
 * most 32 levels.
 */
static int render(const msgpack_object *o, struct td_buf *b, int keynest)
{
	int rc;

	switch (o->type) {
	case MSGPACK_OBJECT_NIL:
		return put_lit(b, "null");
	case MSGPACK_OBJECT_BOOLEAN:
		return put_lit(b, o->via.boolean ? "true" : "false");
	case MSGPACK_OBJECT_POSITIVE_INTEGER:
		return put_int(b, o->via.u64, false);
	case MSGPACK_OBJECT_NEGATIVE_INTEGER:
		if (o->via.i64 < 0)
			return put_int(b, 0 - (uint64_t)o->via.i64, true);
		return put_int(b, (uint64_t)o->via.i64, false);
	case MSGPACK_OBJECT_FLOAT32:
		return put_float(b, o->via.f64, true);
	case MSGPACK_OBJECT_FLOAT64:
		return put_float(b, o->via.f64, false);
	case MSGPACK_OBJECT_STR:
		return put_str(b, o->via.str.ptr, o->via.str.size);
	case MSGPACK_OBJECT_BIN:
		if ((rc = put_lit(b, "{\"$bin\":")) ||
		    (rc = put_base64(b, o->via.bin.ptr, o->via.bin.size)))
			return rc;
		return put_lit(b, "}");
	case MSGPACK_OBJECT_EXT:
		if ((rc = put_lit(b, "{\"$ext\":")) ||
		    (rc = put_int(b, (uint64_t)(o->via.ext.type < 0 ? -o->via.ext.type
							   : o->via.ext.type),
				  o->via.ext.type < 0)) ||
		    (rc = put_lit(b, ",\"data\":")) ||
		    (rc = put_base64(b, o->via.ext.ptr, o->via.ext.size)))
			return rc;
		return put_lit(b, "}");
	case MSGPACK_OBJECT_ARRAY:
		if ((rc = put_lit(b, "[")))
			return rc;
		for (uint32_t i = 0; i < o->via.array.size; i++) {
			if ((i && (rc = put_lit(b, ","))) ||
			    (rc = render(&o->via.array.ptr[i], b, keynest)))
				return rc;
		}
		return put_lit(b, "]");
	case MSGPACK_OBJECT_MAP:
		if ((rc = put_lit(b, "{")))
			return rc;
		for (uint32_t i = 0; i < o->via.map.size; i++) {
			const msgpack_object_kv *kv = &o->via.map.ptr[i];
			if ((i && (rc = put_lit(b, ","))) ||
			    (rc = render_key(&kv->key, b, keynest)) ||
			    (rc = put_lit(b, ":")) ||
			    (rc = render(&kv->val, b, keynest)))
				return rc;
		}
		return put_lit(b, "}");
	}
	/* A type this msgpack-c does not know: keep the output valid. */
	return put_lit(b, "null");
}

int td_msgpack_to_json(const msgpack_object *o, struct td_buf *out)
{
	size_t start = out->len;
	int rc = render(o, out, 0);
	if (rc && out->data) {
		out->len = start;
		out->data[start] = '\0';
	}
	return rc;
}

const msgpack_object *td_mp_pointer(const msgpack_object *o, const char *p)
{
	while (*p == '/') {
		p++;
		char tok[1024];
		size_t n = 0;
		while (*p && *p != '/' && n < sizeof(tok) - 1) {
			if (p[0] == '~' && p[1] == '0') {
				tok[n++] = '~';
				p += 2;
			} else if (p[0] == '~' && p[1] == '1') {
				tok[n++] = '/';
				p += 2;
			} else {
				tok[n++] = *p++;
			}
		}
		if (*p && *p != '/')
			return NULL; /* token longer than we look at */
		if (o->type == MSGPACK_OBJECT_MAP) {
			const msgpack_object *next = NULL;
			for (uint32_t i = 0; i < o->via.map.size && !next; i++) {
				const msgpack_object *k = &o->via.map.ptr[i].key;
				if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == n &&
				    memcmp(k->via.str.ptr, tok, n) == 0)
					next = &o->via.map.ptr[i].val;
			}
			if (!next)
				return NULL;
			o = next;
		} else if (o->type == MSGPACK_OBJECT_ARRAY) {
			char *end;
			tok[n] = '\0';
			if (n == 0 || (n > 1 && tok[0] == '0'))
				return NULL;
			unsigned long idx = strtoul(tok, &end, 10);
			if (*end || idx >= o->via.array.size)
				return NULL;
			o = &o->via.array.ptr[idx];
		} else {
			return NULL;
		}
	}
	return o;
}
