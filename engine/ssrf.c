/* SSRF guard: rule parsing and the allow/deny decision. See ssrf.h. */
#include "triggerd/ssrf.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "triggerd/triggerd.h"

#define NAME_MAX_LEN 253 /* DNS name without the trailing dot */
#define LABEL_MAX 63
#define SHOW_MAX 80      /* untrusted text quoted in a message */
#define PROBLEM_MAX 128

enum kind { K_V4, K_V6, K_NAME, K_SUFFIX };

struct ip {
	uint8_t fam;   /* K_V4 or K_V6 */
	uint8_t b[16]; /* network order; IPv4 in b[0..3] */
};

struct rule {
	uint8_t kind;
	bool allow;
	uint8_t plen;
	uint16_t len;        /* of text */
	uint8_t net[16];     /* host bits zero */
	const char *label;   /* what a default covers; NULL: explicit rule */
	char text[TD_SSRF_RULE_MAX + 1]; /* lower case; "*." kept */
};

struct td_ssrf {
	struct rule *rules; /* defaults first, then explicit rules in order */
	size_t n, cap;
	size_t n_default;
	size_t n_allow;      /* explicit allow rules */
	size_t n_allow_cidr; /* of which CIDRs */
};

static const struct {
	const char *rule, *label;
} defaults[] = {
	{ "0.0.0.0/8", "this-network (reaches the local host)" },
	{ "::/128", "unspecified address (reaches the local host)" },
	{ "169.254.0.0/16", "link-local" },
	{ "fe80::/10", "link-local" },
	{ "169.254.169.254/32", "cloud metadata (AWS, GCP, Azure, OpenStack, Oracle)" },
	{ "169.254.170.2/32", "AWS ECS task metadata" },
	{ "169.254.170.23/32", "AWS EKS pod identity" },
	{ "fd00:ec2::23/128", "AWS EKS pod identity" },
	{ "fd00:ec2::254/128", "AWS IPv6 metadata" },
	{ "fd20:ce::254/128", "GCP IPv6 metadata" },
	{ "100.100.100.200/32", "Alibaba Cloud metadata" },
	{ "168.63.129.16/32", "Azure WireServer" },
	{ "metadata.google.internal", "cloud metadata host" },
	{ "metadata", "cloud metadata host" },
};

static const uint8_t v4mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
static const uint8_t nat64[12] = { 0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0 };

__attribute__((format(printf, 3, 4)))
static void say(char *buf, size_t len, const char *fmt, ...)
{
	if (!buf || !len)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, len, fmt, ap);
	va_end(ap);
}

static bool is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

static int hexval(unsigned char c)
{
	if (is_digit(c))
		return c - '0';
	c |= 0x20;
	return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

static char lower(unsigned char c)
{
	return (char)(c >= 'A' && c <= 'Z' ? c | 0x20 : c);
}

/* A copy of untrusted text fit for a message: printable ASCII, clipped. */
static const char *printable(char buf[SHOW_MAX + 1], const char *s, size_t len)
{
	size_t n = len > SHOW_MAX ? SHOW_MAX - 3 : len;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		buf[i] = c >= 0x20 && c < 0x7f ? (char)c : '?';
	}
	if (n < len) {
		memcpy(buf + n, "...", 3);
		n += 3;
	}
	buf[n] = '\0';
	return buf;
}

static void ip_str(const struct ip *a, char buf[INET6_ADDRSTRLEN])
{
	inet_ntop(a->fam == K_V4 ? AF_INET : AF_INET6, a->b, buf, INET6_ADDRSTRLEN);
}

/* IPv4-mapped and NAT64 addresses are their IPv4 address. */
static bool canon(struct ip *a)
{
	if (a->fam != K_V6 || (memcmp(a->b, v4mapped, 12) && memcmp(a->b, nat64, 12)))
		return false;
	memmove(a->b, a->b + 12, 4);
	memset(a->b + 4, 0, 12);
	a->fam = K_V4;
	return true;
}

static bool prefix_match(const uint8_t *net, unsigned plen, const uint8_t *b)
{
	unsigned full = plen / 8, rest = plen % 8;
	if (memcmp(net, b, full))
		return false;
	if (!rest)
		return true;
	uint8_t m = (uint8_t)(0xff << (8 - rest));
	return (net[full] & m) == (b[full] & m);
}

/*
 * IPv4 with inet_aton(3) semantics (glibc 2.36, which reads each part with
 * strtoul base 0, as libcurl does): 1-4 parts, each decimal, octal (leading
 * 0) or hex (0x and at least one digit); the last part fills the remaining
 * bytes. @s is @n bytes, not NUL-terminated.
 */
static bool parse_v4_any(const char *s, size_t n, uint8_t out[4])
{
	uint64_t part[4];
	size_t np = 0, i = 0;
	for (;;) {
		if (np == 4)
			return false;
		unsigned base = 10;
		if (i + 1 < n && s[i] == '0' && (s[i + 1] | 0x20) == 'x') {
			base = 16;
			i += 2;
		} else if (i + 1 < n && s[i] == '0' && s[i + 1] != '.')
			base = 8;
		uint64_t v = 0;
		size_t digits = 0;
		for (; i < n && s[i] != '.'; i++, digits++) {
			int d = hexval((unsigned char)s[i]);
			if (d < 0 || (unsigned)d >= base)
				return false;
			v = v * base + (unsigned)d;
			if (v > UINT32_MAX)
				return false;
		}
		if (!digits)
			return false;
		part[np++] = v;
		if (i == n)
			break;
		if (++i == n) /* trailing dot */
			return false;
	}
	uint32_t a = 0;
	for (size_t k = 0; k + 1 < np; k++) {
		if (part[k] > 0xff)
			return false;
		a |= (uint32_t)part[k] << (24 - 8 * k);
	}
	if (part[np - 1] > (UINT32_MAX >> (8 * (np - 1))))
		return false;
	a |= (uint32_t)part[np - 1];
	out[0] = (uint8_t)(a >> 24);
	out[1] = (uint8_t)(a >> 16);
	out[2] = (uint8_t)(a >> 8);
	out[3] = (uint8_t)a;
	return true;
}

/* The WHATWG "ends in a number" test: such a host is an IPv4 address. */
static bool ends_in_number(const char *s, size_t n)
{
	size_t i = n;
	while (i > 0 && s[i - 1] != '.')
		i--;
	const char *l = s + i;
	size_t ln = n - i, j = 0;
	if (!ln)
		return false;
	if (ln >= 2 && l[0] == '0' && (l[1] | 0x20) == 'x') {
		for (j = 2; j < ln; j++)
			if (hexval((unsigned char)l[j]) < 0)
				return false;
		return true;
	}
	for (; j < ln; j++)
		if (!is_digit((unsigned char)l[j]))
			return false;
	return true;
}

/*
 * Checks the host name @s (@n bytes, trailing dot removed) and writes it in
 * lower case to @out. Returns 0, or -1 with the problem in @pb.
 */
static int check_name(const char *s, size_t n, char out[NAME_MAX_LEN + 1], char *pb)
{
	size_t label = 0;
	if (n > NAME_MAX_LEN) {
		say(pb, PROBLEM_MAX, "name longer than %d bytes", NAME_MAX_LEN);
		return -1;
	}
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '.') {
			if (!label)
				goto empty;
			label = 0;
		} else if (c >= 0x80) {
			say(pb, PROBLEM_MAX, "non-ASCII name (give its punycode form)");
			return -1;
		} else if (c == '*') {
			say(pb, PROBLEM_MAX, "'*' is only allowed as a leading '*.'");
			return -1;
		} else if (!is_digit(c) && !((c | 0x20) >= 'a' && (c | 0x20) <= 'z') &&
			   c != '-' && c != '_') {
			if (c >= 0x20 && c < 0x7f)
				say(pb, PROBLEM_MAX, "invalid character '%c'", c);
			else
				say(pb, PROBLEM_MAX, "invalid byte 0x%02x", c);
			return -1;
		} else if (++label > LABEL_MAX) {
			say(pb, PROBLEM_MAX, "label longer than %d bytes", LABEL_MAX);
			return -1;
		}
		out[i] = lower(c);
	}
	if (!label)
		goto empty;
	out[n] = '\0';
	return 0;
empty:
	say(pb, PROBLEM_MAX, "empty label");
	return -1;
}

/* An IPv6 literal of @n bytes, zone id ("%eth0", "%25eth0") ignored. */
static bool parse_v6(const char *s, size_t n, struct ip *a)
{
	char buf[INET6_ADDRSTRLEN];
	const char *pct = memchr(s, '%', n);
	if (pct) {
		/* the zone is validated only so that junk is not waved through */
		const char *z = pct + 1, *end = s + n;
		if (end - z > 2 && z[0] == '2' && z[1] == '5')
			z += 2;
		if (z == end)
			return false;
		for (; z < end; z++) {
			unsigned char c = (unsigned char)*z;
			if (!is_digit(c) && !((c | 0x20) >= 'a' && (c | 0x20) <= 'z') &&
			    c != '-' && c != '.' && c != '_' && c != '~')
				return false;
		}
		n = (size_t)(pct - s);
	}
	if (n >= sizeof(buf))
		return false;
	memcpy(buf, s, n);
	buf[n] = '\0';
	a->fam = K_V6;
	return inet_pton(AF_INET6, buf, a->b) == 1;
}

/* ---- rules ---- */

static int parse_cidr(const char *s, size_t n, struct rule *r, char *pb)
{
	const char *slash = memchr(s, '/', n);
	const char *a = s;
	size_t alen = slash ? (size_t)(slash - s) : n;
	bool bracketed = false;
	char buf[INET6_ADDRSTRLEN];
	struct ip ip = { 0 };

	if (alen && a[0] == '[') {
		if (alen < 2 || a[alen - 1] != ']') {
			say(pb, PROBLEM_MAX, "unbalanced '['");
			return -1;
		}
		a++;
		alen -= 2;
		bracketed = true;
	}
	if (!alen) {
		say(pb, PROBLEM_MAX, "missing address");
		return -1;
	}
	bool ok = false;
	if (alen < sizeof(buf)) {
		memcpy(buf, a, alen);
		buf[alen] = '\0';
		ip.fam = K_V4;
		ok = !bracketed && inet_pton(AF_INET, buf, ip.b) == 1;
		if (!ok) {
			ip.fam = K_V6;
			ok = inet_pton(AF_INET6, buf, ip.b) == 1;
		}
	}
	if (!ok) {
		uint8_t v4[4];
		if (memchr(a, '%', alen))
			say(pb, PROBLEM_MAX, "zone ids are not allowed in rules");
		else if (!bracketed && !memchr(a, ':', alen) && parse_v4_any(a, alen, v4))
			say(pb, PROBLEM_MAX, "write IPv4 addresses as a.b.c.d (%u.%u.%u.%u)",
			    v4[0], v4[1], v4[2], v4[3]);
		else
			say(pb, PROBLEM_MAX, "not an IPv4 or IPv6 address");
		return -1;
	}

	unsigned max = ip.fam == K_V4 ? 32 : 128, plen = max;
	if (slash) {
		const char *p = slash + 1, *end = s + n;
		if (p == end) {
			say(pb, PROBLEM_MAX, "missing prefix length after '/'");
			return -1;
		}
		for (plen = 0; p < end; p++) {
			if (!is_digit((unsigned char)*p)) {
				say(pb, PROBLEM_MAX, "prefix length is not a number");
				return -1;
			}
			if (plen <= max)
				plen = plen * 10 + (unsigned)(*p - '0');
		}
		if (plen > max) {
			say(pb, PROBLEM_MAX, "prefix longer than %u", max);
			return -1;
		}
	}

	uint8_t net[16] = { 0 };
	memcpy(net, ip.b, plen / 8);
	if (plen % 8)
		net[plen / 8] = ip.b[plen / 8] & (uint8_t)(0xff << (8 - plen % 8));
	if (memcmp(net, ip.b, 16)) {
		struct ip shown = { .fam = ip.fam };
		char nb[INET6_ADDRSTRLEN];
		memcpy(shown.b, net, 16);
		ip_str(&shown, nb);
		say(pb, PROBLEM_MAX, "host bits set (the network is %s/%u)", nb, plen);
		return -1;
	}
	if (ip.fam == K_V6 && plen >= 96 && canon(&ip)) {
		/* such addresses are compared as IPv4, so this rule could never match */
		char nb[INET6_ADDRSTRLEN];
		ip_str(&ip, nb);
		say(pb, PROBLEM_MAX,
		    "IPv4-mapped or NAT64 addresses are checked as IPv4: write %s/%u",
		    nb, plen - 96);
		return -1;
	}
	r->kind = ip.fam;
	r->plen = (uint8_t)plen;
	memcpy(r->net, net, 16);
	return 0;
}

static int parse_rule(const char *s, struct rule *r, char *pb)
{
	size_t n = strnlen(s, TD_SSRF_RULE_MAX + 1);
	memset(r, 0, sizeof(*r));
	if (!n) {
		say(pb, PROBLEM_MAX, "empty rule");
		return -1;
	}
	if (n > TD_SSRF_RULE_MAX) {
		say(pb, PROBLEM_MAX, "rule longer than %d bytes", TD_SSRF_RULE_MAX);
		return -1;
	}
	size_t m = s[n - 1] == '.' ? n - 1 : n;
	if (memchr(s, '/', n) || memchr(s, ':', n) || s[0] == '[' ||
	    (s[0] != '*' && ends_in_number(s, m))) {
		if (parse_cidr(s, n, r, pb))
			return -1;
	} else {
		size_t skip = 0;
		r->kind = K_NAME;
		if (s[0] == '*') {
			if (n == 1) {
				say(pb, PROBLEM_MAX, "wildcard needs a domain (*.example.com)");
				return -1;
			}
			if (s[1] != '.') {
				say(pb, PROBLEM_MAX, "'*' is only allowed as a leading '*.'");
				return -1;
			}
			if (m <= 2) {
				say(pb, PROBLEM_MAX, "wildcard needs a domain (*.example.com)");
				return -1;
			}
			if (ends_in_number(s + 2, m - 2)) {
				say(pb, PROBLEM_MAX, "numeric last label: not a domain");
				return -1;
			}
			r->kind = K_SUFFIX;
			skip = 2;
		}
		if (m == 0) {
			say(pb, PROBLEM_MAX, "empty label");
			return -1;
		}
		if (check_name(s + skip, m - skip, r->text + skip, pb))
			return -1;
		memcpy(r->text, s, skip);
		r->len = (uint16_t)m;
		return 0;
	}
	memcpy(r->text, s, n);
	r->text[n] = '\0';
	for (size_t i = 0; i < n; i++)
		r->text[i] = lower((unsigned char)r->text[i]);
	r->len = (uint16_t)n;
	return 0;
}

static int push(struct td_ssrf *g, const struct rule *r)
{
	if (g->n == g->cap) {
		size_t cap = g->cap ? g->cap * 2 : 32;
		struct rule *p = realloc(g->rules, cap * sizeof(*p));
		if (!p)
			return -ENOMEM;
		g->rules = p;
		g->cap = cap;
	}
	g->rules[g->n++] = *r;
	return 0;
}

int td_ssrf_new(struct td_ssrf **out)
{
	struct td_ssrf *g = calloc(1, sizeof(*g));
	char pb[PROBLEM_MAX];
	struct rule r;
	int rc = -ENOMEM;
	*out = NULL;
	if (!g)
		return -ENOMEM;
	for (size_t i = 0; i < TD_ARRAY_LEN(defaults); i++) {
		if (parse_rule(defaults[i].rule, &r, pb)) {
			rc = -EINVAL; /* a typo in the table; the tests catch it */
			goto fail;
		}
		r.label = defaults[i].label;
		if ((rc = push(g, &r)))
			goto fail;
	}
	g->n_default = g->n;
	*out = g;
	return 0;
fail:
	td_ssrf_free(g);
	return rc;
}

void td_ssrf_free(struct td_ssrf *g)
{
	if (!g)
		return;
	free(g->rules);
	free(g);
}

int td_ssrf_add(struct td_ssrf *g, bool allow, const char *rule, char *err,
		size_t errlen)
{
	char pb[PROBLEM_MAX], shown[SHOW_MAX + 1];
	struct rule r;
	if (!rule)
		rule = "";
	if (parse_rule(rule, &r, pb)) {
		say(err, errlen, "%s: %s",
		    printable(shown, rule, strnlen(rule, SHOW_MAX + 1)), pb);
		return -EINVAL;
	}
	if (g->n - g->n_default >= TD_SSRF_MAX_RULES) {
		say(err, errlen, "%s: more than %d rules", r.text, TD_SSRF_MAX_RULES);
		return TD_ETOOBIG;
	}
	r.allow = allow;
	if (push(g, &r)) {
		say(err, errlen, "out of memory");
		return -ENOMEM;
	}
	if (allow) {
		g->n_allow++;
		if (r.kind == K_V4 || r.kind == K_V6)
			g->n_allow_cidr++;
	}
	return 0;
}

static bool blank(char c)
{
	return c == ' ' || c == '\t';
}

int td_ssrf_add_list(struct td_ssrf *g, bool allow, const char *list,
		     char *err, size_t errlen)
{
	size_t n0 = g->n, a0 = g->n_allow, c0 = g->n_allow_cidr, item = 0;
	const char *p = list ? list : "";
	int rc;
	for (;;) {
		const char *comma = strchr(p, ',');
		const char *b = p, *e = comma ? comma : p + strlen(p);
		char buf[TD_SSRF_RULE_MAX + 1], shown[SHOW_MAX + 1];
		item++;
		while (b < e && blank(*b))
			b++;
		while (e > b && blank(e[-1]))
			e--;
		if (b == e) {
			if (item == 1 && !comma)
				say(err, errlen, "empty list");
			else
				say(err, errlen, "item %zu is empty", item);
			rc = -EINVAL;
			goto undo;
		}
		if ((size_t)(e - b) > TD_SSRF_RULE_MAX) {
			say(err, errlen, "%s: rule longer than %d bytes",
			    printable(shown, b, (size_t)(e - b)), TD_SSRF_RULE_MAX);
			rc = -EINVAL;
			goto undo;
		}
		memcpy(buf, b, (size_t)(e - b));
		buf[e - b] = '\0';
		if ((rc = td_ssrf_add(g, allow, buf, err, errlen)))
			goto undo;
		if (!comma)
			return 0;
		p = comma + 1;
	}
undo:
	g->n = n0;
	g->n_allow = a0;
	g->n_allow_cidr = c0;
	return rc;
}

/* ---- host text ---- */

enum { HOST_NAME, HOST_ADDR };

struct host {
	char name[NAME_MAX_LEN + 1];
	size_t name_len;
	struct ip ip;
	bool converted; /* the text was not the canonical address */
};

/* Reads URL host text as the connection will. Returns HOST_* or -1 (@pb). */
static int parse_host(const char *s, struct host *h, char *pb)
{
	size_t n = s ? strnlen(s, NAME_MAX_LEN + 2) : 0;
	if (!n) {
		say(pb, PROBLEM_MAX, "empty host");
		return -1;
	}
	if (n > NAME_MAX_LEN + 1) {
		say(pb, PROBLEM_MAX, "host longer than %d bytes", NAME_MAX_LEN);
		return -1;
	}
	if (s[0] == '[' || memchr(s, ':', n)) {
		bool ok = s[0] != '[' ? parse_v6(s, n, &h->ip)
				      : n >= 2 && s[n - 1] == ']' && parse_v6(s + 1, n - 2, &h->ip);
		if (!ok) {
			say(pb, PROBLEM_MAX, s[0] == '[' ? "not an IPv6 address"
					     : "invalid character ':' (the host only, no port)");
			return -1;
		}
		h->converted = canon(&h->ip);
		return HOST_ADDR;
	}
	size_t m = s[n - 1] == '.' ? n - 1 : n;
	if (ends_in_number(s, m)) {
		if (!parse_v4_any(s, m, h->ip.b)) {
			say(pb, PROBLEM_MAX, "ends in a number but is not an IPv4 address");
			return -1;
		}
		char cb[INET6_ADDRSTRLEN];
		h->ip.fam = K_V4;
		ip_str(&h->ip, cb);
		h->converted = strlen(cb) != n || memcmp(cb, s, n);
		return HOST_ADDR;
	}
	if (!m) {
		say(pb, PROBLEM_MAX, "empty label");
		return -1;
	}
	if (check_name(s, m, h->name, pb))
		return -1;
	h->name_len = m;
	return HOST_NAME;
}

/* ---- decision ---- */

struct target {
	const char *name; /* lower case, or NULL */
	size_t name_len;
	const struct ip *ip; /* canonical, or NULL */
	/* for the message only, formatted when denying */
	const char *text;     /* host text as given, or NULL */
	bool converted;       /* text or raw is not the canonical address */
	const struct ip *raw; /* the address connected to, as given, or NULL */
};

static bool matches(const struct rule *r, const struct target *t)
{
	switch (r->kind) {
	case K_V4:
	case K_V6:
		return t->ip && t->ip->fam == r->kind && prefix_match(r->net, r->plen, t->ip->b);
	case K_NAME:
		return t->name && t->name_len == r->len && !memcmp(t->name, r->text, r->len);
	default: /* K_SUFFIX: text is "*.domain"; match ".domain" after 1+ bytes */
		return t->name && t->name_len >= r->len &&
		       !memcmp(t->name + t->name_len - (r->len - 1u), r->text + 1, r->len - 1u);
	}
}

static unsigned specificity(const struct rule *r)
{
	return r->kind == K_V4 || r->kind == K_V6 ? r->plen : 256;
}

/*
 * Whether an explicit allow rule at least as specific as the default @d
 * matches too: the same name for a name, a CIDR with at least @d's prefix
 * for an address. Names never lift address defaults: that would let a
 * rebound name reach the metadata service.
 */
static bool lifted(const struct td_ssrf *g, const struct rule *d, const struct target *t)
{
	for (size_t i = g->n_default; i < g->n; i++) {
		const struct rule *r = &g->rules[i];
		if (r->allow && r->kind == d->kind && matches(r, t) &&
		    (r->kind == K_NAME || r->plen >= d->plen))
			return true;
	}
	return false;
}

/*
 * The target as the user can recognise it: "host", "0x7f.1 (= 127.0.0.1)",
 * "addr", "::ffff:a.b.c.d (= a.b.c.d)", "host (addr)".
 */
static const char *show(const struct target *t, char *buf, size_t len)
{
	char tb[SHOW_MAX + 1] = "", rb[INET6_ADDRSTRLEN] = "", cb[INET6_ADDRSTRLEN] = "";
	if (t->text)
		printable(tb, t->text, strnlen(t->text, SHOW_MAX + 1));
	if (t->raw)
		ip_str(t->raw, rb);
	if (t->converted)
		ip_str(t->ip, cb);
	const char *head = t->raw && !t->name ? rb : tb;
	if (t->raw && t->name) {
		if (t->converted)
			snprintf(buf, len, "%s (%s = %s)", tb, rb, cb);
		else
			snprintf(buf, len, "%s (%s)", tb, rb);
	} else if (t->converted) {
		snprintf(buf, len, "%s (= %s)", head, cb);
	} else {
		snprintf(buf, len, "%s", head);
	}
	return buf;
}

static int deny(const struct target *t, const struct rule *r, char *why, size_t whylen)
{
	char sb[2 * SHOW_MAX + 2 * INET6_ADDRSTRLEN + 16];
	if (!why || !whylen)
		return -EACCES;
	show(t, sb, sizeof(sb));
	if (!r)
		say(why, whylen, "%s: not on the allow list", sb);
	else if (r->label)
		say(why, whylen, "%s: default deny: %s %s", sb, r->label, r->text);
	else
		say(why, whylen, "%s: deny rule %s", sb, r->text);
	return -EACCES;
}

static int decide(const struct td_ssrf *g, const struct target *t, char *why, size_t whylen)
{
	const struct rule *worst = NULL;

	/* 1: explicit denials win over everything */
	for (size_t i = g->n_default; i < g->n; i++) {
		const struct rule *r = &g->rules[i];
		if (!r->allow && matches(r, t))
			return deny(t, r, why, whylen);
	}
	/* 2: defaults, unless an allow rule at least as specific matches */
	for (size_t i = 0; i < g->n_default; i++) {
		const struct rule *d = &g->rules[i];
		if (matches(d, t) && !lifted(g, d, t) &&
		    (!worst || specificity(d) > specificity(worst)))
			worst = d;
	}
	if (worst)
		return deny(t, worst, why, whylen);
	/* 3: allowlist mode */
	if (!g->n_allow)
		return 0;
	for (size_t i = g->n_default; i < g->n; i++)
		if (g->rules[i].allow && matches(&g->rules[i], t))
			return 0;
	if (!t->ip && g->n_allow_cidr)
		return 0; /* a name: its addresses decide at connect time */
	return deny(t, NULL, why, whylen);
}

static int bad_host(const char *host, const char *problem, char *why, size_t whylen)
{
	char tb[SHOW_MAX + 1];
	say(why, whylen, "%s: %s",
	    printable(tb, host ? host : "", host ? strnlen(host, SHOW_MAX + 1) : 0), problem);
	return -EACCES;
}

int td_ssrf_check_host(const struct td_ssrf *g, const char *host, char *why,
		       size_t whylen)
{
	char pb[PROBLEM_MAX];
	struct host h;
	int type = parse_host(host, &h, pb);
	if (type < 0)
		return bad_host(host, pb, why, whylen);
	struct target t = { .text = host };
	if (type == HOST_NAME) {
		t.name = h.name;
		t.name_len = h.name_len;
	} else {
		t.ip = &h.ip;
		t.converted = h.converted;
	}
	return decide(g, &t, why, whylen);
}

int td_ssrf_check_connect(const struct td_ssrf *g, const char *host,
			  const struct sockaddr *sa, socklen_t len, char *why,
			  size_t whylen)
{
	char pb[PROBLEM_MAX];
	struct ip raw = { 0 }, ip;
	struct host h;

	if (!sa || len < (socklen_t)sizeof(sa_family_t)) {
		say(why, whylen, "no address to check");
		return -EACCES;
	}
	if (sa->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
		struct sockaddr_in s4;
		memcpy(&s4, sa, sizeof(s4));
		raw.fam = K_V4;
		memcpy(raw.b, &s4.sin_addr, 4);
	} else if (sa->sa_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
		struct sockaddr_in6 s6;
		memcpy(&s6, sa, sizeof(s6));
		raw.fam = K_V6;
		memcpy(raw.b, &s6.sin6_addr, 16);
	} else {
		say(why, whylen, "address family %d (length %u) is not allowed",
		    (int)sa->sa_family, (unsigned)len);
		return -EACCES;
	}
	ip = raw;
	struct target t = { .ip = &ip, .raw = &raw, .converted = canon(&ip) };
	if (host) {
		/* a literal host adds nothing: the address connected to decides */
		int type = parse_host(host, &h, pb);
		if (type < 0)
			return bad_host(host, pb, why, whylen);
		if (type == HOST_NAME) {
			t.name = h.name;
			t.name_len = h.name_len;
			t.text = host;
		}
	}
	return decide(g, &t, why, whylen);
}

int td_ssrf_check_addr(const struct td_ssrf *g, const struct sockaddr *sa,
		       socklen_t len, char *why, size_t whylen)
{
	return td_ssrf_check_connect(g, NULL, sa, len, why, whylen);
}
