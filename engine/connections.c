/*
 * Named connections: Airflow's URI and JSON forms, the registry (environment
 * and connections file), secret masking and the HttpHook helpers.
 *
 * Parsing fills a `struct draft` whose strings are slices of the input or of
 * one scratch buffer as long as the input (every field is a disjoint slice of
 * the input and decoding never lengthens it, so the scratch never grows).
 * conn_build then copies the strings into one block per connection.
 *
 * Secrets: no realloc ever moves a buffer that holds one (a realloc would
 * leave a copy in freed memory): the scratch, the strings block and every
 * mask have their exact size up front, the msgpack from the JSON codec goes
 * into a buffer presized so the codec never needs to grow it, and extra is
 * packed in two passes (count, then write into an exact buffer). Each such
 * buffer is zeroed with explicit_bzero before it is freed. Error messages
 * name fields and offsets, never values.
 */
#include "triggerd/connections.h"

#include <errno.h>
#include <fcntl.h>
#include <msgpack.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "triggerd/codec.h"
#include "triggerd/triggerd.h"

#define ENV_PREFIX "AIRFLOW_CONN_"
#define ENV_PREFIX_LEN (sizeof(ENV_PREFIX) - 1)
#define MSG_MAX 512

struct slice {
	const char *p;
	size_t n;
};

/* A connection before it has memory of its own. */
struct draft {
	struct slice type, desc, host, schema, login, password;
	struct slice pw_raw; /* the password as written in a URI, for masking */
	uint16_t port;
	char *extra;         /* owned msgpack map; NULL: empty */
	size_t extra_len;
};

struct header {
	struct td_conn_header h;
	bool bad;            /* not sendable: name not a token, or CR/LF/NUL */
};

struct conn_impl {
	struct td_conn pub;
	char *mem;           /* every string of pub, NUL-separated */
	size_t mem_len;
	char *extra;
	size_t extra_len;
	char **masks;        /* each exact-size, NUL-terminated */
	size_t *mask_lens;
	size_t nmasks, capmasks;
	struct header *hdrs; /* HttpHook's headers; they point into extra */
	size_t nhdrs;
};

struct list {
	struct conn_impl **v;
	size_t n, cap;
};

struct td_conns {
	struct list env, file;
	char **errs;         /* messages of the last td_conns_load_env */
	size_t nerrs, caperrs;
	uint32_t first[8];   /* bit b: some mask starts with byte b */
};

static const char empty_map[1] = {(char)0x80};

/* ---- small helpers ------------------------------------------------------- */

__attribute__((format(printf, 4, 5)))
static int errf(char *err, size_t errlen, int rc, const char *fmt, ...)
{
	if (err && errlen) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return rc;
}

static void wipe_free(void *p, size_t n)
{
	if (!p)
		return;
	explicit_bzero(p, n);
	free(p);
}

static bool is_alpha(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

static unsigned char lower(unsigned char c)
{
	return c >= 'A' && c <= 'Z' ? (unsigned char)(c + 32) : c;
}

static int hexval(unsigned char c)
{
	if (is_digit(c))
		return c - '0';
	c = lower(c);
	return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Whitespace and control bytes, which a URI's ends may carry (Python's
 * strip() and urlsplit's lstrip drop them). */
static bool is_blank(unsigned char c)
{
	return c <= 0x20 || c == 0x7f;
}

/* @s for an error message: printable ASCII kept, other bytes as '?', cut
 * at 64 bytes. Used for ids and field names only, never for values. */
static const char *printable(char *buf, size_t len, const char *s, size_t n)
{
	size_t o = 0;
	for (size_t i = 0; i < n && o + 4 < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (i == 64) {
			memcpy(buf + o, "...", 3);
			o += 3;
			break;
		}
		buf[o++] = c >= 0x20 && c < 0x7f && c != '"' ? (char)c : '?';
	}
	buf[o] = '\0';
	return buf;
}

static const char *type_name(const msgpack_object *o)
{
	switch (o->type) {
	case MSGPACK_OBJECT_NIL: return "null";
	case MSGPACK_OBJECT_BOOLEAN: return "a boolean";
	case MSGPACK_OBJECT_POSITIVE_INTEGER:
	case MSGPACK_OBJECT_NEGATIVE_INTEGER: return "an integer";
	case MSGPACK_OBJECT_FLOAT32:
	case MSGPACK_OBJECT_FLOAT64: return "a float";
	case MSGPACK_OBJECT_STR: return "a string";
	case MSGPACK_OBJECT_ARRAY: return "an array";
	case MSGPACK_OBJECT_MAP: return "an object";
	case MSGPACK_OBJECT_BIN: return "binary";
	case MSGPACK_OBJECT_EXT: return "an ext";
	}
	return "unknown";
}

static bool slice_is(struct slice s, const char *lit)
{
	size_t n = strlen(lit);
	return s.n == n && memcmp(s.p, lit, n) == 0;
}

/* ---- msgpack: exact packing --------------------------------------------- */

struct fixed {
	char *p;
	size_t cap, len;
};

static int count_write(void *data, const char *buf, size_t len)
{
	(void)buf;
	((struct fixed *)data)->len += len;
	return 0;
}

static int fixed_write(void *data, const char *buf, size_t len)
{
	struct fixed *f = data;
	if (len > f->cap - f->len)
		return -1;
	memcpy(f->p + f->len, buf, len);
	f->len += len;
	return 0;
}

typedef void (*pack_fn)(msgpack_packer *pk, const void *arg);

/* Run @fn twice: once counting bytes, once into an exact-size buffer. */
static int pack_exact(pack_fn fn, const void *arg, char **out, size_t *outlen)
{
	struct fixed f = {0};
	msgpack_packer pk;
	msgpack_packer_init(&pk, &f, count_write);
	fn(&pk, arg);
	size_t n = f.len;
	f = (struct fixed){.p = malloc(n ? n : 1), .cap = n};
	if (!f.p)
		return -ENOMEM;
	msgpack_packer_init(&pk, &f, fixed_write);
	fn(&pk, arg);
	*out = f.p;
	*outlen = f.len;
	return 0;
}

static void pack_object(msgpack_packer *pk, const void *arg)
{
	msgpack_pack_object(pk, *(const msgpack_object *)arg);
}

/* ---- JSON text -> msgpack object ---------------------------------------- */

/* True when byte @off of JSON text @s lies inside a string literal. */
static bool in_json_string(const char *s, size_t n, size_t off)
{
	bool in = false;
	for (size_t i = 0; i < off && i < n; i++) {
		if (in && s[i] == '\\')
			i++;
		else if (s[i] == '"')
			in = !in;
	}
	return in;
}

/*
 * The codec's message, unless it points inside a string: there it may quote
 * a byte of the string, which may be a password, so only the offset is kept.
 */
static int json_syntax_err(const char *s, size_t n, const char *cerr, const char *what,
			   char *err, size_t errlen)
{
	unsigned long long off;
	if (sscanf(cerr, "offset %llu:", &off) != 1)
		return errf(err, errlen, TD_EJSON, "%s: invalid JSON", what);
	if (!in_json_string(s, n, off < n ? (size_t)off : n))
		return errf(err, errlen, TD_EJSON, "%s: invalid JSON at %s", what, cerr);
	return errf(err, errlen, TD_EJSON,
		    "%s: invalid JSON at offset %llu: malformed or unterminated string", what, off);
}

struct unpacked {
	msgpack_sbuffer sb;
	msgpack_zone zone;
	msgpack_object root;
	bool zone_ok;
};

static void unpacked_finish(struct unpacked *u)
{
	wipe_free(u->sb.data, u->sb.alloc);
	u->sb.data = NULL;
	u->sb.alloc = u->sb.size = 0;
	if (u->zone_ok)
		msgpack_zone_destroy(&u->zone);
	u->zone_ok = false;
}

/* Parse JSON text into u->root (strings point into u->sb). The caller calls
 * unpacked_finish whatever this returns. */
static int json_unpack(const char *s, size_t n, struct unpacked *u, const char *what,
		       char *err, size_t errlen)
{
	memset(u, 0, sizeof(*u));
	/* The codec writes at most 3 bytes per input byte (a float of 3 chars
	 * takes 9) plus a few of headroom; with this much it never reallocs. */
	if (n > (SIZE_MAX - 64) / 4)
		return errf(err, errlen, TD_ETOOBIG, "%s: too large", what);
	u->sb.alloc = 4 * n + 64;
	u->sb.data = malloc(u->sb.alloc);
	if (!u->sb.data)
		return -ENOMEM;
	char cerr[160];
	int rc = td_json_to_msgpack(s, n, &u->sb, cerr, sizeof(cerr));
	if (rc == -ENOMEM)
		return rc;
	if (rc)
		return json_syntax_err(s, n, cerr, what, err, errlen);
	if (!msgpack_zone_init(&u->zone, 2048))
		return -ENOMEM;
	u->zone_ok = true;
	size_t off = 0;
	msgpack_unpack_return ur = msgpack_unpack(u->sb.data, u->sb.size, &off, &u->zone, &u->root);
	if (ur == MSGPACK_UNPACK_SUCCESS)
		return 0;
	if (ur == MSGPACK_UNPACK_NOMEM_ERROR)
		return errf(err, errlen, TD_EJSON, "%s: nested deeper than %d", what,
			    TD_MSGPACK_MAX_DEPTH);
	return errf(err, errlen, TD_EJSON, "%s: invalid JSON", what);
}

/* ---- URI form ------------------------------------------------------------ */

struct scratch {
	char *p;
	size_t cap, used;
};

/*
 * Percent-decode s[a, b) into the scratch. In the query '+' is a space
 * (@plus); @lower lower-cases ASCII letters written literally (Python
 * lower-cases the host before unquoting it). A decoded NUL is refused unless
 * @nul_ok (fields are NUL-terminated strings).
 */
static int decode(struct scratch *w, const char *field, const char *s, size_t a, size_t b,
		  bool plus, bool low, bool nul_ok, struct slice *out, char *err, size_t errlen)
{
	char *o = w->p + w->used;
	size_t k = 0;
	for (size_t i = a; i < b; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '%') {
			int hi = i + 1 < b ? hexval((unsigned char)s[i + 1]) : -1;
			int lo = i + 2 < b ? hexval((unsigned char)s[i + 2]) : -1;
			if (hi < 0 || lo < 0)
				return errf(err, errlen, TD_EINVAL_SPEC,
					    "%s: '%%' not followed by two hex digits (offset %zu; "
					    "write %%25 for a literal '%%')", field, i);
			c = (unsigned char)(hi << 4 | lo);
			if (c == 0 && !nul_ok)
				return errf(err, errlen, TD_EINVAL_SPEC,
					    "%s: %%00 is not allowed (offset %zu)", field, i);
			i += 2;
		} else if (c == '+' && plus) {
			c = ' ';
		} else if (low) {
			c = lower(c);
		}
		o[k++] = (char)c;
	}
	w->used += k;
	*out = (struct slice){o, k};
	return 0;
}

struct qpair {
	struct slice name, value;
	size_t idx;
};

static int qpair_cmp(const void *x, const void *y)
{
	const struct qpair *a = x, *b = y;
	size_t n = a->name.n < b->name.n ? a->name.n : b->name.n;
	int c = n ? memcmp(a->name.p, b->name.p, n) : 0;
	if (c)
		return c;
	if (a->name.n != b->name.n)
		return a->name.n < b->name.n ? -1 : 1;
	return a->idx < b->idx ? -1 : a->idx > b->idx;
}

static int qpair_idx_cmp(const void *x, const void *y)
{
	const struct qpair *a = x, *b = y;
	return a->idx < b->idx ? -1 : a->idx > b->idx;
}

struct qmap {
	const struct qpair *v;
	size_t n;
};

static void pack_qmap(msgpack_packer *pk, const void *arg)
{
	const struct qmap *m = arg;
	msgpack_pack_map(pk, m->n);
	for (size_t i = 0; i < m->n; i++) {
		msgpack_pack_str(pk, m->v[i].name.n);
		msgpack_pack_str_body(pk, m->v[i].name.p, m->v[i].name.n);
		msgpack_pack_str(pk, m->v[i].value.n);
		msgpack_pack_str_body(pk, m->v[i].value.p, m->v[i].value.n);
	}
}

/* extra from a JSON object given as text (__extra__, or "extra" in JSON). */
static int extra_from_text(struct draft *d, const char *s, size_t n, const char *what,
			   char *err, size_t errlen)
{
	struct unpacked u;
	int rc = json_unpack(s, n, &u, what, err, errlen);
	if (!rc && u.root.type != MSGPACK_OBJECT_MAP)
		rc = errf(err, errlen, TD_EINVAL_SPEC, "%s: expected a JSON object, got %s",
			  what, type_name(&u.root));
	if (!rc)
		rc = pack_exact(pack_object, &u.root, &d->extra, &d->extra_len);
	unpacked_finish(&u);
	return rc;
}

/*
 * The query as Python's parse_qsl(keep_blank_values=True) then dict() reads
 * it: '&'-separated, empty pieces skipped, a piece without '=' has an empty
 * value, a repeated name keeps its first position and its last value.
 */
static int parse_query(struct scratch *w, const char *s, size_t a, size_t b, struct draft *d,
		       char *err, size_t errlen)
{
	size_t cap = 1;
	for (size_t i = a; i < b; i++)
		cap += s[i] == '&';
	struct qpair *v = calloc(cap, sizeof(*v));
	if (!v)
		return -ENOMEM;
	size_t n = 0;
	int rc = 0;
	const struct qpair *extra = NULL;
	for (size_t i = a; i < b && !rc;) {
		size_t e = i;
		while (e < b && s[e] != '&')
			e++;
		if (e > i) {
			size_t eq = i;
			while (eq < e && s[eq] != '=')
				eq++;
			struct qpair *q = &v[n];
			q->idx = n;
			rc = decode(w, "extra (query)", s, i, eq, true, false, true, &q->name, err, errlen);
			if (!rc)
				rc = decode(w, "extra (query)", s, eq < e ? eq + 1 : e, e, true,
					    false, true, &q->value, err, errlen);
			if (!rc && slice_is(q->name, "__extra__"))
				extra = q;
			n++;
		}
		i = e + 1;
	}
	if (!rc && extra && extra->value.n == 0) {
		/* Airflow: an empty extra is no extra */
	} else if (!rc && extra) {
		rc = extra_from_text(d, extra->value.p, extra->value.n, "extra (__extra__)", err, errlen);
	} else if (!rc && n) {
		qsort(v, n, sizeof(*v), qpair_cmp);
		size_t m = 0;
		for (size_t i = 0; i < n;) {
			size_t j = i;
			while (j + 1 < n && v[j + 1].name.n == v[i].name.n &&
			       memcmp(v[j + 1].name.p, v[i].name.p, v[i].name.n) == 0)
				j++;
			v[m] = v[i];                 /* first position ... */
			v[m++].value = v[j].value;   /* ... last value */
			i = j + 1;
		}
		qsort(v, m, sizeof(*v), qpair_idx_cmp);
		struct qmap qm = {v, m};
		rc = pack_exact(pack_qmap, &qm, &d->extra, &d->extra_len);
	}
	free(v);
	return rc;
}

static bool scheme_char(unsigned char c)
{
	return is_alpha(c) || is_digit(c) || c == '+' || c == '-' || c == '.';
}

static bool v6_char(unsigned char c)
{
	return hexval(c) >= 0 || c == ':' || c == '.' || c == '%' || is_alpha(c) ||
	       is_digit(c) || c == '-' || c == '_' || c == '~';
}

/* Decimal digits s[a, b) as a port: 0, -1 (not digits) or -2 (too large). */
static int parse_port(const char *s, size_t a, size_t b, uint16_t *port)
{
	uint32_t v = 0;
	for (size_t i = a; i < b; i++) {
		if (!is_digit((unsigned char)s[i]))
			return -1;
		v = v * 10 + (uint32_t)(s[i] - '0');
		if (v > 65535)
			return -2;
	}
	*port = (uint16_t)v;
	return 0;
}

static int port_err(int rc, size_t off, char *err, size_t errlen)
{
	return errf(err, errlen, TD_EINVAL_SPEC, "port: %s (offset %zu)",
		    rc == -1 ? "not a decimal number" : "larger than 65535", off);
}

/*
 * Airflow's _parse_from_uri on s[0, n): urlsplit, then unquote of each part.
 * Offsets in messages are into @s.
 */
static int parse_uri(const char *s, size_t n, struct scratch *w, struct draft *d,
		     char *err, size_t errlen)
{
	size_t b = 0, e = n;
	while (b < e && is_blank((unsigned char)s[b]))
		b++;
	while (e > b && is_blank((unsigned char)s[e - 1]))
		e--;
	for (size_t i = b; i < e; i++)
		if (is_blank((unsigned char)s[i]) && s[i] != ' ')
			return errf(err, errlen, TD_EINVAL_SPEC,
				    "uri: control character (offset %zu)", i);

	/* conn type */
	size_t i = b;
	while (i < e && scheme_char((unsigned char)s[i]))
		i++;
	if (i == b)
		return errf(err, errlen, TD_EINVAL_SPEC, i < e && s[i] == ':' ?
			    "conn type: empty scheme (offset %zu)" :
			    "conn type: expected <conn-type>:// (offset %zu)", b);
	if (!is_alpha((unsigned char)s[b]))
		return errf(err, errlen, TD_EINVAL_SPEC,
			    "conn type: must start with a letter (offset %zu)", b);
	if (e - i < 3 || memcmp(s + i, "://", 3) != 0)
		return errf(err, errlen, TD_EINVAL_SPEC, i < e && s[i] != ':' ?
			    "conn type: invalid character (offset %zu; letters, digits, "
			    "'+', '-', '.')" : "conn type: expected \"://\" (offset %zu)", i);
	char *t = w->p + w->used;
	for (size_t k = b; k < i; k++)
		t[k - b] = (char)lower((unsigned char)s[k]); /* as urlsplit does */
	d->type = (struct slice){t, i - b};
	w->used += i - b;
	size_t p = i + 3;

	/* "type://proto://host": a host that carries its own protocol */
	struct slice proto = {0};
	size_t j = p;
	if (j < e && is_alpha((unsigned char)s[j])) {
		while (j < e && scheme_char((unsigned char)s[j]))
			j++;
		if (e - j >= 3 && memcmp(s + j, "://", 3) == 0) {
			proto = (struct slice){s + p, j - p};
			p = j + 3;
		}
	}

	/* netloc ends at the first '/', '?' or '#'; the fragment is dropped */
	size_t ne = p;
	while (ne < e && s[ne] != '/' && s[ne] != '?' && s[ne] != '#')
		ne++;
	/* "type://login@proto://host": Airflow refuses it too */
	if (ne > p && s[ne - 1] == ':' && e - ne >= 2 && s[ne] == '/' && s[ne + 1] == '/')
		return errf(err, errlen, TD_EINVAL_SPEC,
			    "host: \"://\" inside the host (offset %zu); a protocol goes "
			    "first: <type>://<proto>://<login>:<password>@<host>", ne - 1);
	size_t fe = ne;
	while (fe < e && s[fe] != '#')
		fe++;
	size_t qs = ne;
	while (qs < fe && s[qs] != '?')
		qs++;

	/* login:password@ up to the last '@' */
	size_t hp = p, at = p;
	for (size_t k = p; k < ne; k++)
		if (s[k] == '@')
			at = k, hp = k + 1;
	int rc;
	if (hp > p) {
		size_t colon = p;
		while (colon < at && s[colon] != ':')
			colon++;
		rc = decode(w, "login", s, p, colon, false, false, false, &d->login, err, errlen);
		if (rc)
			return rc;
		if (colon < at) {
			rc = decode(w, "password", s, colon + 1, at, false, false, false,
				    &d->password, err, errlen);
			if (rc)
				return rc;
			d->pw_raw = (struct slice){s + colon + 1, at - colon - 1};
		}
	}

	/* host[:port] or [v6]:port */
	size_t he, ps = ne;
	bool v6 = hp < ne && s[hp] == '[';
	if (v6) {
		size_t rb = hp + 1;
		while (rb < ne && s[rb] != ']')
			rb++;
		if (rb == ne)
			return errf(err, errlen, TD_EINVAL_SPEC,
				    "host: '[' without ']' (offset %zu)", hp);
		bool colon = false;
		for (size_t k = hp + 1; k < rb; k++) {
			if (!v6_char((unsigned char)s[k]))
				return errf(err, errlen, TD_EINVAL_SPEC,
					    "host: invalid character in an IPv6 address (offset %zu)", k);
			colon |= s[k] == ':';
		}
		if (!colon)
			return errf(err, errlen, TD_EINVAL_SPEC,
				    "host: not an IPv6 address in brackets (offset %zu)", hp);
		if (rb + 1 < ne && s[rb + 1] != ':')
			return errf(err, errlen, TD_EINVAL_SPEC,
				    "host: expected ':' or the end after ']' (offset %zu)", rb + 1);
		ps = rb + 1 < ne ? rb + 2 : ne;
		hp++;
		he = rb;
	} else {
		he = hp;
		while (he < ne && s[he] != ':') {
			if (s[he] == '[' || s[he] == ']')
				return errf(err, errlen, TD_EINVAL_SPEC,
					    "host: unbalanced bracket (offset %zu)", he);
			he++;
		}
		ps = he < ne ? he + 1 : ne;
	}
	rc = parse_port(s, ps, ne, &d->port);
	if (rc)
		return port_err(rc, ps, err, errlen);

	size_t mark = w->used;
	if (proto.n) {
		/* "proto://" is charged to the same bytes of the input */
		for (size_t k = 0; k < proto.n; k++)
			w->p[w->used++] = (char)lower((unsigned char)proto.p[k]);
		memcpy(w->p + w->used, "://", 3);
		w->used += 3;
	}
	struct slice h;
	rc = decode(w, "host", s, hp, he, false, true, false, &h, err, errlen);
	if (rc)
		return rc;
	if (memchr(h.p, '/', h.n)) {
		/* a socket path: Python takes it from the netloc, case kept */
		w->used = (size_t)(h.p - w->p);
		decode(w, "host", s, hp, he, false, false, false, &h, err, errlen);
	}
	if (h.n == 0)
		w->used = mark; /* no host: the protocol goes too (_create_host) */
	else
		d->host = (struct slice){w->p + mark, w->used - mark};

	if (qs > ne + 1) {
		rc = decode(w, "schema", s, ne + 1, qs, false, false, false, &d->schema, err, errlen);
		if (rc)
			return rc;
	}
	if (qs + 1 < fe)
		return parse_query(w, s, qs + 1, fe, d, err, errlen);
	return 0;
}

/* ---- building a connection ---------------------------------------------- */

static void conn_free(struct conn_impl *ci)
{
	if (!ci)
		return;
	wipe_free(ci->mem, ci->mem_len);
	if (ci->extra != empty_map)
		wipe_free(ci->extra, ci->extra_len);
	for (size_t i = 0; i < ci->nmasks; i++)
		wipe_free(ci->masks[i], ci->mask_lens[i]);
	free(ci->masks);
	free(ci->mask_lens);
	free(ci->hdrs);
	free(ci);
}

void td_conn_free(struct td_conn *c)
{
	if (c)
		conn_free(td_container_of(c, struct conn_impl, pub));
}

static int add_mask(struct conn_impl *ci, const char *p, size_t n)
{
	if (n < TD_CONN_MASK_MIN || memchr(p, 0, n))
		return 0;
	for (size_t i = 0; i < ci->nmasks; i++)
		if (ci->mask_lens[i] == n && memcmp(ci->masks[i], p, n) == 0)
			return 0;
	if (ci->nmasks == ci->capmasks) {
		size_t cap = ci->capmasks ? ci->capmasks * 2 : 4;
		char **m = realloc(ci->masks, cap * sizeof(*m));
		if (!m)
			return -ENOMEM;
		ci->masks = m;
		size_t *l = realloc(ci->mask_lens, cap * sizeof(*l));
		if (!l)
			return -ENOMEM;
		ci->mask_lens = l;
		ci->capmasks = cap;
	}
	char *c = malloc(n + 1);
	if (!c)
		return -ENOMEM;
	memcpy(c, p, n);
	c[n] = '\0';
	ci->masks[ci->nmasks] = c;
	ci->mask_lens[ci->nmasks++] = n;
	return 0;
}

/*
 * A secret, as it may show up in a log line: itself, percent-encoded as
 * Python's quote() does (Airflow masks that form too), escaped the way
 * td_log_esc escapes a JSON string, and as written in the input (@raw).
 */
static int add_secret(struct conn_impl *ci, const char *s, size_t n, struct slice raw)
{
	static const char hex[] = "0123456789ABCDEF";
	if (n < TD_CONN_MASK_MIN)
		return 0;
	char *t = malloc(6 * n + 1);
	if (!t)
		return -ENOMEM;
	int rc = add_mask(ci, s, n);
	size_t k = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (is_alpha(c) || is_digit(c) || strchr("_.-~/", c)) {
			t[k++] = (char)c;
		} else {
			t[k++] = '%';
			t[k++] = hex[c >> 4];
			t[k++] = hex[c & 15];
		}
	}
	if (!rc)
		rc = add_mask(ci, t, k);
	k = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '"' || c == '\\') {
			t[k++] = '\\';
			t[k++] = (char)c;
		} else if (c < 0x20 || c == 0x7f) {
			k += (size_t)sprintf(t + k, "\\u00%c%c", "0123456789abcdef"[c >> 4],
					     "0123456789abcdef"[c & 15]);
		} else {
			t[k++] = (char)c;
		}
	}
	if (!rc)
		rc = add_mask(ci, t, k);
	wipe_free(t, 6 * n + 1);
	if (!rc && raw.n)
		rc = add_mask(ci, raw.p, raw.n);
	return rc;
}

/* Airflow's DEFAULT_SENSITIVE_FIELDS, as substrings of the lower-cased key;
 * '-' reads as '_' so that header names match too. */
static bool key_sensitive(const char *k, size_t n)
{
	static const char *const words[] = {
		"access_token", "api_key", "apikey", "authorization", "passphrase",
		"passwd", "password", "private_key", "secret", "token",
		"keyfile_dict", "service_account",
	};
	for (size_t w = 0; w < TD_ARRAY_LEN(words); w++) {
		size_t wl = strlen(words[w]);
		for (size_t i = 0; i + wl <= n; i++) {
			size_t j = 0;
			while (j < wl) {
				unsigned char c = lower((unsigned char)k[i + j]);
				if ((c == '-' ? '_' : c) != (unsigned char)words[w][j])
					break;
				j++;
			}
			if (j == wl)
				return true;
		}
	}
	return false;
}

static int extra_secrets(struct conn_impl *ci, const msgpack_object *o, bool sensitive, int depth)
{
	int rc = 0;
	if (depth > TD_MSGPACK_MAX_DEPTH)
		return 0;
	if (o->type == MSGPACK_OBJECT_STR && sensitive) {
		rc = add_secret(ci, o->via.str.ptr, o->via.str.size, (struct slice){0});
	} else if (o->type == MSGPACK_OBJECT_ARRAY) {
		for (uint32_t i = 0; i < o->via.array.size && !rc; i++)
			rc = extra_secrets(ci, &o->via.array.ptr[i], sensitive, depth + 1);
	} else if (o->type == MSGPACK_OBJECT_MAP) {
		for (uint32_t i = 0; i < o->via.map.size && !rc; i++) {
			const msgpack_object *k = &o->via.map.ptr[i].key;
			bool s = sensitive || (k->type == MSGPACK_OBJECT_STR &&
					       key_sensitive(k->via.str.ptr, k->via.str.size));
			rc = extra_secrets(ci, &o->via.map.ptr[i].val, s, depth + 1);
		}
	}
	return rc;
}

static bool http_token_char(unsigned char c)
{
	return is_alpha(c) || is_digit(c) || (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* Keys HttpHook takes out of extra as request options, not headers. */
static bool http_option_key(struct slice k)
{
	static const char *const opts[] = {
		"stream", "cert", "proxies", "proxy", "timeout", "verify", "verify_ssl",
		"allow_redirects", "max_redirects", "trust_env", "check_response",
	};
	for (size_t i = 0; i < TD_ARRAY_LEN(opts); i++)
		if (slice_is(k, opts[i]))
			return true;
	return false;
}

/* The string-to-string entries of extra, as HttpHook sends them. */
static int http_headers(struct conn_impl *ci, const msgpack_object *o)
{
	if (o->via.map.size == 0)
		return 0;
	ci->hdrs = calloc(o->via.map.size, sizeof(*ci->hdrs));
	if (!ci->hdrs)
		return -ENOMEM;
	for (uint32_t i = 0; i < o->via.map.size; i++) {
		const msgpack_object *k = &o->via.map.ptr[i].key, *v = &o->via.map.ptr[i].val;
		if (k->type != MSGPACK_OBJECT_STR || v->type != MSGPACK_OBJECT_STR ||
		    http_option_key((struct slice){k->via.str.ptr, k->via.str.size}))
			continue;
		struct header *x = &ci->hdrs[ci->nhdrs++];
		/* msgpack-c gives an empty string a NULL pointer */
		x->h = (struct td_conn_header){k->via.str.size ? k->via.str.ptr : "",
					       k->via.str.size,
					       v->via.str.size ? v->via.str.ptr : "",
					       v->via.str.size};
		x->bad = k->via.str.size == 0;
		for (size_t j = 0; j < k->via.str.size; j++)
			x->bad |= !http_token_char((unsigned char)k->via.str.ptr[j]);
		for (size_t j = 0; j < v->via.str.size; j++)
			x->bad |= v->via.str.ptr[j] == '\r' || v->via.str.ptr[j] == '\n' ||
				  v->via.str.ptr[j] == '\0';
	}
	return 0;
}

/* Copy @d into a connection of its own; takes d->extra on success. */
static int conn_build(const char *id, size_t idlen, struct draft *d, struct conn_impl **out)
{
	struct conn_impl *ci = calloc(1, sizeof(*ci));
	if (!ci)
		return -ENOMEM;
	const struct slice f[] = {{id, idlen}, d->type, d->desc, d->host, d->schema,
				  d->login, d->password};
	const char **dst[] = {&ci->pub.id, &ci->pub.conn_type, &ci->pub.description,
			      &ci->pub.host, &ci->pub.schema, &ci->pub.login,
			      &ci->pub.password};
	for (size_t i = 0; i < TD_ARRAY_LEN(f); i++)
		ci->mem_len += f[i].n + 1;
	ci->mem = malloc(ci->mem_len);
	if (!ci->mem) {
		free(ci);
		return -ENOMEM;
	}
	char *q = ci->mem;
	for (size_t i = 0; i < TD_ARRAY_LEN(f); i++) {
		if (f[i].n)
			memcpy(q, f[i].p, f[i].n);
		q[f[i].n] = '\0';
		*dst[i] = q;
		q += f[i].n + 1;
	}
	/* Airflow's _normalize_conn_type, for the URI and the JSON form alike */
	char *t = ci->mem + idlen + 1;
	if (strcmp(t, "postgresql") == 0)
		t[8] = '\0';
	for (; *t; t++)
		*t = *t == '-' ? '_' : *t;
	ci->pub.port = d->port;
	if (d->extra) {
		ci->extra = d->extra;
		ci->extra_len = d->extra_len;
		d->extra = NULL;
	} else {
		ci->extra = (char *)empty_map;
		ci->extra_len = 1;
	}
	ci->pub.extra = ci->extra;
	ci->pub.extra_len = ci->extra_len;

	int rc = add_secret(ci, d->password.p, d->password.n, d->pw_raw);
	if (!rc && ci->extra_len > 1) {
		msgpack_zone z;
		msgpack_object o;
		size_t off = 0;
		if (!msgpack_zone_init(&z, 1024)) {
			rc = -ENOMEM;
		} else {
			/* our own packing of an object msgpack-c unpacked: it unpacks */
			if (msgpack_unpack(ci->extra, ci->extra_len, &off, &z, &o) ==
			    MSGPACK_UNPACK_SUCCESS && o.type == MSGPACK_OBJECT_MAP) {
				rc = extra_secrets(ci, &o, false, 0);
				if (!rc)
					rc = http_headers(ci, &o);
			}
			msgpack_zone_destroy(&z);
		}
	}
	if (rc) {
		conn_free(ci);
		return rc;
	}
	*out = ci;
	return 0;
}

static void draft_finish(struct draft *d)
{
	wipe_free(d->extra, d->extra_len);
	d->extra = NULL;
}

static int uri_to_conn(const char *id, size_t idlen, const char *s, size_t n,
		       struct slice desc, struct conn_impl **out, char *err, size_t errlen)
{
	struct draft d = {.desc = desc};
	/* decoded fields never outgrow the input (see the top); +16 is slack */
	struct scratch w = {.p = malloc(n + 16), .cap = n + 16};
	if (!w.p)
		return -ENOMEM;
	int rc = parse_uri(s, n, &w, &d, err, errlen);
	if (!rc)
		rc = conn_build(id, idlen, &d, out);
	draft_finish(&d);
	wipe_free(w.p, w.cap);
	return rc;
}

/* ---- JSON form ----------------------------------------------------------- */

static int obj_str(const msgpack_object *v, const char *field, struct slice *out,
		   char *err, size_t errlen)
{
	if (!v || v->type == MSGPACK_OBJECT_NIL)
		return 0;
	if (v->type != MSGPACK_OBJECT_STR)
		return errf(err, errlen, TD_EINVAL_SPEC, "%s: expected a string or null, got %s",
			    field, type_name(v));
	if (memchr(v->via.str.ptr, 0, v->via.str.size))
		return errf(err, errlen, TD_EINVAL_SPEC, "%s: contains a NUL character", field);
	*out = (struct slice){v->via.str.ptr, v->via.str.size};
	return 0;
}

static int obj_port(const msgpack_object *v, uint16_t *port, char *err, size_t errlen)
{
	if (!v || v->type == MSGPACK_OBJECT_NIL)
		return 0;
	if (v->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
		if (v->via.u64 > 65535)
			return errf(err, errlen, TD_EINVAL_SPEC, "port: larger than 65535");
		*port = (uint16_t)v->via.u64;
		return 0;
	}
	if (v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
		return errf(err, errlen, TD_EINVAL_SPEC, "port: negative");
	if (v->type == MSGPACK_OBJECT_STR && parse_port(v->via.str.ptr, 0, v->via.str.size, port))
		return errf(err, errlen, TD_EINVAL_SPEC, "port: not a decimal number up to 65535");
	if (v->type == MSGPACK_OBJECT_STR)
		return 0;
	return errf(err, errlen, TD_EINVAL_SPEC, "port: expected an integer, got %s",
		    type_name(v));
}

enum { F_TYPE, F_DESC, F_HOST, F_LOGIN, F_PASSWORD, F_SCHEMA, F_PORT, F_EXTRA,
       F_EXTRA_DEJSON, F_URI, F_COUNT };

static const char *const field_names[F_COUNT] = {
	"conn_type", "description", "host", "login", "password", "schema", "port",
	"extra", "extra_dejson", "uri",
};

static int obj_to_conn(const char *id, size_t idlen, const msgpack_object *o,
		       struct conn_impl **out, char *err, size_t errlen)
{
	char name[80];
	if (o->type != MSGPACK_OBJECT_MAP)
		return errf(err, errlen, TD_EINVAL_SPEC, "expected an object, got %s",
			    type_name(o));
	const msgpack_object *val[F_COUNT] = {0};
	for (uint32_t i = 0; i < o->via.map.size; i++) {
		const msgpack_object *k = &o->via.map.ptr[i].key;
		if (k->type != MSGPACK_OBJECT_STR)
			return errf(err, errlen, TD_EINVAL_SPEC, "field names must be strings");
		struct slice ks = {k->via.str.ptr, k->via.str.size};
		size_t f = 0;
		while (f < F_COUNT && !slice_is(ks, field_names[f]))
			f++;
		if (f == F_COUNT && slice_is(ks, "conn_id"))
			return errf(err, errlen, TD_EINVAL_SPEC,
				    "conn_id: not allowed (the id is the variable name or the file key)");
		if (f == F_COUNT)
			return errf(err, errlen, TD_EINVAL_SPEC, "unknown field \"%s\"",
				    printable(name, sizeof(name), ks.p, ks.n));
		if (val[f])
			return errf(err, errlen, TD_EINVAL_SPEC, "%s: given twice", field_names[f]);
		val[f] = &o->via.map.ptr[i].val;
	}
	for (size_t f = 0; f < F_COUNT; f++)
		if (val[f] && val[f]->type == MSGPACK_OBJECT_NIL)
			val[f] = NULL;
	/* Airflow: `if uri` -- an empty URI is no URI */
	if (val[F_URI] && val[F_URI]->type == MSGPACK_OBJECT_STR && !val[F_URI]->via.str.size)
		val[F_URI] = NULL;

	struct draft d = {0};
	int rc = obj_str(val[F_DESC], "description", &d.desc, err, errlen);
	if (rc)
		return rc;
	if (val[F_URI]) {
		for (size_t f = 0; f < F_URI; f++)
			if (val[f] && f != F_DESC)
				return errf(err, errlen, TD_EINVAL_SPEC,
					    "uri: cannot be combined with %s", field_names[f]);
		struct slice u = {0};
		rc = obj_str(val[F_URI], "uri", &u, err, errlen);
		if (rc)
			return rc;
		char sub[MSG_MAX];
		rc = uri_to_conn(id, idlen, u.p, u.n, d.desc, out, sub, sizeof(sub));
		if (rc && rc != -ENOMEM)
			errf(err, errlen, rc, "uri: %s", sub);
		return rc;
	}
	if (val[F_EXTRA] && val[F_EXTRA_DEJSON])
		return errf(err, errlen, TD_EINVAL_SPEC,
			    "extra, extra_dejson: give one or the other");
	if ((rc = obj_str(val[F_TYPE], "conn_type", &d.type, err, errlen)) ||
	    (rc = obj_str(val[F_HOST], "host", &d.host, err, errlen)) ||
	    (rc = obj_str(val[F_LOGIN], "login", &d.login, err, errlen)) ||
	    (rc = obj_str(val[F_PASSWORD], "password", &d.password, err, errlen)) ||
	    (rc = obj_str(val[F_SCHEMA], "schema", &d.schema, err, errlen)) ||
	    (rc = obj_port(val[F_PORT], &d.port, err, errlen)))
		return rc;

	const msgpack_object *x = val[F_EXTRA] ? val[F_EXTRA] : val[F_EXTRA_DEJSON];
	if (x == val[F_EXTRA] && x && x->type == MSGPACK_OBJECT_STR) {
		if (x->via.str.size) /* Airflow: "" is no extra */
			rc = extra_from_text(&d, x->via.str.ptr, x->via.str.size, "extra",
					     err, errlen);
	} else if (x && x->type == MSGPACK_OBJECT_MAP) {
		rc = pack_exact(pack_object, x, &d.extra, &d.extra_len);
	} else if (x) {
		rc = errf(err, errlen, TD_EINVAL_SPEC, x == val[F_EXTRA] ?
			  "extra: expected an object or the JSON text of one, got %s" :
			  "extra_dejson: expected an object, got %s", type_name(x));
	}
	if (!rc)
		rc = conn_build(id, idlen, &d, out);
	draft_finish(&d);
	return rc;
}

static int json_to_conn(const char *id, size_t idlen, const char *s, size_t n,
			struct conn_impl **out, char *err, size_t errlen)
{
	struct unpacked u;
	int rc = json_unpack(s, n, &u, "value", err, errlen);
	if (!rc)
		rc = obj_to_conn(id, idlen, &u.root, out, err, errlen);
	unpacked_finish(&u);
	return rc;
}

int td_conn_from_uri(const char *id, const char *uri, size_t len,
		     struct td_conn **out, char *err, size_t errlen)
{
	struct conn_impl *ci;
	id = id ? id : "";
	int rc = uri_to_conn(id, strlen(id), uri, len, (struct slice){0}, &ci, err, errlen);
	if (rc == -ENOMEM)
		errf(err, errlen, rc, "out of memory");
	*out = rc ? NULL : &ci->pub;
	return rc;
}

int td_conn_from_json(const char *id, const char *json, size_t len,
		      struct td_conn **out, char *err, size_t errlen)
{
	struct conn_impl *ci;
	id = id ? id : "";
	int rc = json_to_conn(id, strlen(id), json, len, &ci, err, errlen);
	if (rc == -ENOMEM)
		errf(err, errlen, rc, "out of memory");
	*out = rc ? NULL : &ci->pub;
	return rc;
}

/* ---- the registry -------------------------------------------------------- */

int td_conns_new(struct td_conns **out)
{
	*out = calloc(1, sizeof(**out));
	return *out ? 0 : -ENOMEM;
}

static void list_finish(struct list *l)
{
	for (size_t i = 0; i < l->n; i++)
		conn_free(l->v[i]);
	free(l->v);
	*l = (struct list){0};
}

static void errs_clear(struct td_conns *c)
{
	for (size_t i = 0; i < c->nerrs; i++)
		free(c->errs[i]);
	c->nerrs = 0;
}

void td_conns_free(struct td_conns *c)
{
	if (!c)
		return;
	list_finish(&c->env);
	list_finish(&c->file);
	errs_clear(c);
	free(c->errs);
	free(c);
}

static int list_reserve(struct list *l, size_t extra)
{
	if (l->cap - l->n >= extra)
		return 0;
	size_t cap = l->cap ? l->cap : 8;
	while (cap - l->n < extra)
		cap *= 2;
	struct conn_impl **v = realloc(l->v, cap * sizeof(*v));
	if (!v)
		return -ENOMEM;
	l->v = v;
	l->cap = cap;
	return 0;
}

/* Add @ci (room reserved), replacing an entry with the same id. */
static void list_put(struct td_conns *c, struct list *l, struct conn_impl *ci)
{
	for (size_t i = 0; i < ci->nmasks; i++) {
		unsigned char b = (unsigned char)ci->masks[i][0];
		c->first[b >> 5] |= UINT32_C(1) << (b & 31);
	}
	for (size_t i = 0; i < l->n; i++) {
		if (strcmp(l->v[i]->pub.id, ci->pub.id) == 0) {
			conn_free(l->v[i]);
			l->v[i] = ci;
			return;
		}
	}
	l->v[l->n++] = ci;
}

size_t td_conns_count(const struct td_conns *c)
{
	return c->env.n + c->file.n;
}

static bool ascii_caseeq(const char *a, const char *b)
{
	for (; *a && *b; a++, b++)
		if (lower((unsigned char)*a) != lower((unsigned char)*b))
			return false;
	return *a == *b;
}

const struct td_conn *td_conns_get(const struct td_conns *c, const char *id)
{
	if (!c || !id)
		return NULL;
	for (size_t i = 0; i < c->env.n; i++)
		if (ascii_caseeq(c->env.v[i]->pub.id, id))
			return &c->env.v[i]->pub;
	for (size_t i = 0; i < c->file.n; i++)
		if (strcmp(c->file.v[i]->pub.id, id) == 0)
			return &c->file.v[i]->pub;
	return NULL;
}

const char *td_conns_env_error(const struct td_conns *c, size_t i)
{
	return c && i < c->nerrs ? c->errs[i] : NULL;
}

static int errs_push(struct td_conns *c, const char *msg)
{
	if (c->nerrs == c->caperrs) {
		size_t cap = c->caperrs ? c->caperrs * 2 : 4;
		char **v = realloc(c->errs, cap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		c->errs = v;
		c->caperrs = cap;
	}
	char *m = strdup(msg);
	if (!m)
		return -ENOMEM;
	c->errs[c->nerrs++] = m;
	return 0;
}

/* One AIRFLOW_CONN_ entry: 0 (added or nothing to add), -ENOMEM, or a
 * parse error with @msg set. */
static int env_entry(struct td_conns *c, const char *e, char *msg, size_t msglen)
{
	const char *eq = strchr(e, '=');
	if (!eq)
		return 0;
	const char *sfx = e + ENV_PREFIX_LEN;
	size_t sn = (size_t)(eq - sfx);
	char name[80], sub[MSG_MAX];
	printable(name, sizeof(name), e, (size_t)(eq - e));
	if (sn == 0)
		return errf(msg, msglen, TD_EINVAL_SPEC, "%s: empty connection id", name);
	if (sn > TD_CONN_ID_MAX)
		return errf(msg, msglen, TD_EINVAL_SPEC, "%s: id longer than %d bytes", name,
			    TD_CONN_ID_MAX);
	char id[TD_CONN_ID_MAX + 1];
	for (size_t i = 0; i < sn; i++) {
		unsigned char ch = (unsigned char)sfx[i];
		if (ch >= 'a' && ch <= 'z')
			return errf(msg, msglen, TD_EINVAL_SPEC,
				    "%s: lower-case letters in the name; Airflow looks up "
				    "AIRFLOW_CONN_ + the upper-cased id, so no id reaches it", name);
		id[i] = (char)lower(ch);
	}
	id[sn] = '\0';
	const char *v = eq + 1;
	size_t vn = strlen(v), k = 0;
	while (k < vn && is_blank((unsigned char)v[k]))
		k++;
	if (k == vn)
		return 0; /* Airflow: an empty value defines nothing */
	struct conn_impl *ci;
	int rc = v[k] == '{' ? json_to_conn(id, sn, v, vn, &ci, sub, sizeof(sub))
			     : uri_to_conn(id, sn, v, vn, (struct slice){0}, &ci, sub, sizeof(sub));
	if (rc == -ENOMEM)
		return rc;
	if (rc)
		return errf(msg, msglen, rc, "%s: %s", name, sub);
	if (list_reserve(&c->env, 1)) {
		conn_free(ci);
		return -ENOMEM;
	}
	ci->pub.source = TD_CONN_SRC_ENV;
	list_put(c, &c->env, ci);
	return 0;
}

int td_conns_load_env(struct td_conns *c, char *const *envp, char *err, size_t errlen)
{
	char msg[MSG_MAX];
	errs_clear(c);
	errf(err, errlen, 0, "%s", "");
	for (size_t i = 0; envp && envp[i]; i++) {
		if (strncmp(envp[i], ENV_PREFIX, ENV_PREFIX_LEN) != 0)
			continue;
		int rc = env_entry(c, envp[i], msg, sizeof(msg));
		if (rc == -ENOMEM || (rc && errs_push(c, msg)))
			return errf(err, errlen, -ENOMEM, "out of memory");
	}
	if (c->nerrs == 1)
		errf(err, errlen, 0, "%s", c->errs[0]);
	else if (c->nerrs > 1)
		errf(err, errlen, 0, "%s (and %zu more)", c->errs[0], c->nerrs - 1);
	return (int)c->nerrs;
}

/* Airflow's sanitize_conn_id: word characters and #!()-.:/\ */
static bool id_ok(const char *s, size_t n)
{
	if (n == 0 || n > TD_CONN_ID_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)s[i];
		if (!(ch >= 0x80 || is_alpha(ch) || is_digit(ch) || (ch && strchr("_#!()-.:/\\", ch))))
			return false;
	}
	return true;
}

static int read_file(const char *path, char **out, size_t *outlen, char *err, size_t errlen)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		int rc = -errno;
		return errf(err, errlen, rc, "%s: %s", path, strerror(-rc));
	}
	struct stat st;
	int rc = 0;
	char *buf = NULL;
	size_t got = 0, size = 0;
	if (fstat(fd, &st) < 0) {
		rc = -errno;
		errf(err, errlen, rc, "%s: %s", path, strerror(-rc));
	} else if (!S_ISREG(st.st_mode)) {
		rc = errf(err, errlen, -EINVAL, "%s: not a regular file", path);
	} else if ((uint64_t)st.st_size > TD_CONNS_FILE_MAX) {
		rc = errf(err, errlen, TD_ETOOBIG, "%s: larger than %u bytes", path,
			  TD_CONNS_FILE_MAX);
	} else {
		size = (size_t)st.st_size;
		buf = malloc(size + 1);
		if (!buf)
			rc = -ENOMEM;
		while (!rc && got < size) {
			ssize_t r = read(fd, buf + got, size - got);
			if (r < 0 && errno == EINTR)
				continue;
			if (r < 0) {
				rc = -errno;
				errf(err, errlen, rc, "%s: %s", path, strerror(-rc));
			}
			if (r <= 0)
				break;
			got += (size_t)r;
		}
	}
	close(fd);
	if (rc) {
		wipe_free(buf, size + 1);
		return rc;
	}
	*out = buf;
	*outlen = got;
	return 0;
}

int td_conns_load_file(struct td_conns *c, const char *path, char *err, size_t errlen)
{
	char *text = NULL;
	size_t n = 0;
	int rc = read_file(path, &text, &n, err, errlen);
	if (rc)
		return rc;
	struct unpacked u;
	struct list tmp = {0};
	rc = json_unpack(text, n, &u, path, err, errlen);
	const msgpack_object *root = &u.root;
	if (!rc && root->type != MSGPACK_OBJECT_MAP)
		rc = errf(err, errlen, TD_EINVAL_SPEC,
			  "%s: expected a JSON object mapping ids to connections, got %s",
			  path, type_name(root));
	if (!rc)
		rc = list_reserve(&tmp, root->via.map.size);
	for (uint32_t i = 0; !rc && i < root->via.map.size; i++) {
		const msgpack_object *k = &root->via.map.ptr[i].key;
		const msgpack_object *v = &root->via.map.ptr[i].val;
		char id[TD_CONN_ID_MAX + 1], shown[80], sub[MSG_MAX];
		if (k->type != MSGPACK_OBJECT_STR) { /* the codec makes keys str */
			rc = errf(err, errlen, TD_EINVAL_SPEC, "%s: non-string key", path);
			break;
		}
		printable(shown, sizeof(shown), k->via.str.ptr, k->via.str.size);
		if (!id_ok(k->via.str.ptr, k->via.str.size)) {
			rc = errf(err, errlen, TD_EINVAL_SPEC,
				  "%s: connection \"%s\": invalid id (1..%d bytes of letters, "
				  "digits and _#!()-.:/\\)", path, shown, TD_CONN_ID_MAX);
			break;
		}
		memcpy(id, k->via.str.ptr, k->via.str.size);
		id[k->via.str.size] = '\0';
		for (size_t j = 0; j < tmp.n && !rc; j++)
			if (strcmp(tmp.v[j]->pub.id, id) == 0)
				rc = errf(err, errlen, TD_EINVAL_SPEC,
					  "%s: connection \"%s\": given twice", path, shown);
		if (rc)
			break;
		struct conn_impl *ci = NULL;
		if (v->type == MSGPACK_OBJECT_STR)
			rc = uri_to_conn(id, k->via.str.size, v->via.str.ptr, v->via.str.size,
					 (struct slice){0}, &ci, sub, sizeof(sub));
		else if (v->type == MSGPACK_OBJECT_MAP)
			rc = obj_to_conn(id, k->via.str.size, v, &ci, sub, sizeof(sub));
		else
			rc = errf(sub, sizeof(sub), TD_EINVAL_SPEC,
				  "expected a URI string or an object, got %s", type_name(v));
		if (rc == -ENOMEM)
			errf(err, errlen, rc, "out of memory");
		else if (rc)
			errf(err, errlen, rc, "%s: connection \"%s\": %s%s", path, shown,
			     v->type == MSGPACK_OBJECT_STR ? "uri: " : "", sub);
		else
			tmp.v[tmp.n++] = ci;
	}
	if (!rc)
		rc = list_reserve(&c->file, tmp.n);
	if (!rc) {
		for (size_t i = 0; i < tmp.n; i++) {
			tmp.v[i]->pub.source = TD_CONN_SRC_FILE;
			list_put(c, &c->file, tmp.v[i]);
		}
		tmp.n = 0;
	}
	if (rc == -ENOMEM)
		errf(err, errlen, rc, "out of memory");
	list_finish(&tmp);
	unpacked_finish(&u);
	wipe_free(text, n + 1);
	return rc;
}

/* ---- masking ------------------------------------------------------------- */

static size_t longest_mask(const struct list *l, const char *t, size_t left, size_t best)
{
	for (size_t i = 0; i < l->n; i++) {
		const struct conn_impl *ci = l->v[i];
		for (size_t m = 0; m < ci->nmasks; m++) {
			size_t ml = ci->mask_lens[m];
			if (ml > best && ml <= left && memcmp(t, ci->masks[m], ml) == 0)
				best = ml;
		}
	}
	return best;
}

const char *td_conn_mask(const struct td_conns *c, const char *text, char *buf, size_t len)
{
	if (!buf || !len)
		return "";
	size_t n = text ? strlen(text) : 0, o = 0;
	for (size_t i = 0; i < n && o + 1 < len;) {
		unsigned char ch = (unsigned char)text[i];
		size_t best = 0;
		if (c && (c->first[ch >> 5] >> (ch & 31) & 1)) {
			best = longest_mask(&c->env, text + i, n - i, 0);
			best = longest_mask(&c->file, text + i, n - i, best);
		}
		if (best) {
			for (int k = 0; k < 3 && o + 1 < len; k++)
				buf[o++] = '*';
			i += best;
		} else {
			buf[o++] = text[i++];
		}
	}
	buf[o] = '\0';
	return buf;
}

/* ---- HttpHook helpers ---------------------------------------------------- */

struct out {
	char *p;
	size_t len, used;
	bool full;
};

static void put(struct out *w, const char *s, size_t n)
{
	if (w->full || n >= w->len - w->used) {
		w->full = true;
		return;
	}
	memcpy(w->p + w->used, s, n);
	w->used += n;
	w->p[w->used] = '\0';
}

static int out_end(struct out *w)
{
	if (!w->full)
		return 0;
	if (w->len)
		w->p[0] = '\0';
	return -ENOSPC;
}

/* A host that is an IPv6 address: two colons or more, address characters. */
static bool host_is_v6(const char *h)
{
	int colons = 0;
	for (; *h; h++) {
		if (!v6_char((unsigned char)*h))
			return false;
		colons += *h == ':';
	}
	return colons >= 2;
}

static void base_url(const struct td_conn *c, struct out *w)
{
	if (strstr(c->host, "://")) {
		put(w, c->host, strlen(c->host));
		return;
	}
	const char *scheme = c->schema[0] ? c->schema : "http";
	put(w, scheme, strlen(scheme));
	put(w, "://", 3);
	if (host_is_v6(c->host)) {
		put(w, "[", 1);
		for (const char *h = c->host; *h; h++)
			put(w, *h == '%' ? "%25" : h, *h == '%' ? 3 : 1); /* zone id */
		put(w, "]", 1);
	} else {
		put(w, c->host, strlen(c->host));
	}
	if (c->port) {
		char port[8];
		int k = snprintf(port, sizeof(port), ":%u", (unsigned)c->port);
		put(w, port, (size_t)k);
	}
}

int td_conn_http_base_url(const struct td_conn *c, char *buf, size_t len)
{
	struct out w = {buf, len, 0, len == 0};
	if (len)
		buf[0] = '\0';
	base_url(c, &w);
	return out_end(&w);
}

int td_conn_http_url(const struct td_conn *c, const char *endpoint, char *buf, size_t len)
{
	struct out w = {buf, len, 0, len == 0};
	if (len)
		buf[0] = '\0';
	base_url(c, &w);
	if (endpoint && endpoint[0]) {
		if (w.used && buf[w.used - 1] != '/' && endpoint[0] != '/')
			put(&w, "/", 1);
		put(&w, endpoint, strlen(endpoint));
	}
	return out_end(&w);
}

int td_conn_http_headers(const struct td_conn *c, size_t *cursor, struct td_conn_header *h)
{
	const struct conn_impl *ci = td_container_of(c, struct conn_impl, pub);
	if (*cursor >= ci->nhdrs)
		return 0;
	const struct header *x = &ci->hdrs[(*cursor)++];
	*h = x->h;
	return x->bad ? TD_EINVAL_SPEC : 1;
}
