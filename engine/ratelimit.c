/*
 * Per-target rate limiting: GCRA per key plus an in-flight cap with FIFO
 * waiters. See include/triggerd/ratelimit.h for the contract.
 *
 * Storage: two chained hash tables of individually allocated nodes, one for
 * key state and one for rules. Nodes never move (a rehash only relinks
 * them), so a key's waiter list can use a sentinel inside the node and a
 * waiter can be removed in O(1) without knowing its key.
 *
 * Each key caches the rule that applies to it with the limiter's rule
 * generation; any rule change bumps the generation and keys re-resolve on
 * their next use, so a lookup costs one hash probe, not a pattern search.
 *
 * Eviction: a key is idle when TAT <= now, nothing is in flight and nobody
 * waits. Such a key behaves exactly like one never seen (max(TAT, now) is
 * now either way), so it can go at any time. Acquire sweeps the whole table
 * when it is about to insert into a full one (count == buckets), then sizes
 * the table to twice what is left: the next sweep is at least that many
 * inserts away, so sweeping is amortised O(1) per new key and the table
 * stays within a factor of the keys active at the last sweep.
 */
#include "triggerd/ratelimit.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "triggerd/triggerd.h"

#define MIN_BUCKETS 64
#define NS_PER_S UINT64_C(1000000000)
#define RATE_FRAC_MAX 6 /* digits after the decimal point */

struct hnode {
	struct hnode *next;
	uint64_t hash;
	uint32_t len;
};

struct table {
	struct hnode **b;
	size_t nb; /* power of two */
	size_t count;
	size_t key_off; /* where a node's key bytes start */
};

struct key {
	struct hnode h;
	uint64_t tat;
	struct td_rl_rule rule; /* valid for rule_gen */
	uint64_t rule_gen;
	uint32_t inflight;
	bool waking; /* inside release's wake loop: never evicted */
	struct td_rl_waiter waiters; /* sentinel of a circular list */
	char name[];
};

struct rule {
	struct hnode h;
	struct td_rl_rule r;
	unsigned int line; /* where load_file saw it */
	char pat[];
};

struct td_ratelimit {
	struct table keys;
	struct table rules;
	struct td_rl_rule dflt;
	uint64_t gen;  /* bumped on every rule change */
	size_t bytes;  /* in key and rule nodes */
	unsigned int depth; /* nested release wake loops */
	bool dying;    /* freed from a waiter callback: free when depth is 0 */
};

__attribute__((format(printf, 3, 4)))
static void seterr(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!err || !errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

static char lower(char c)
{
	return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static bool is_alnum(char c)
{
	c = lower(c);
	return is_digit(c) || (c >= 'a' && c <= 'z');
}

/* c is one of the bytes of @set (never NUL). */
static bool in_set(char c, const char *set)
{
	return c != '\0' && strchr(set, c) != NULL;
}

static bool is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* ---- hash tables ---- */

static uint64_t hash_bytes(const char *s, size_t n)
{
	uint64_t h = UINT64_C(0xcbf29ce484222325);

	for (size_t i = 0; i < n; i++) {
		h ^= (unsigned char)s[i];
		h *= UINT64_C(0x100000001b3);
	}
	/* FNV-1a's low bits are weak and buckets are picked by them. */
	h ^= h >> 33;
	h *= UINT64_C(0xff51afd7ed558ccd);
	return h ^ (h >> 33);
}

static const char *node_key(const struct table *t, const struct hnode *n)
{
	return (const char *)n + t->key_off;
}

/* The link pointing at the node for @k, or the chain's terminating NULL. */
static struct hnode **table_link(const struct table *t, const char *k, size_t len,
				 uint64_t h)
{
	struct hnode **p = &t->b[h & (t->nb - 1)];

	for (; *p; p = &(*p)->next)
		if ((*p)->hash == h && (*p)->len == len &&
		    memcmp(node_key(t, *p), k, len) == 0)
			break;
	return p;
}

static struct hnode *table_find(const struct table *t, const char *k, size_t len)
{
	return *table_link(t, k, len, hash_bytes(k, len));
}

static void table_insert(struct table *t, struct hnode *n)
{
	struct hnode **p = &t->b[n->hash & (t->nb - 1)];

	n->next = *p;
	*p = n;
	t->count++;
}

/* Rehash into @nb buckets; on -ENOMEM the table is unchanged (and works). */
static int table_resize(struct table *t, size_t nb)
{
	struct hnode **b = calloc(nb, sizeof(*b));

	if (!b)
		return -ENOMEM;
	for (size_t i = 0; i < t->nb; i++) {
		struct hnode *n = t->b[i], *next;
		for (; n; n = next) {
			next = n->next;
			n->next = b[n->hash & (nb - 1)];
			b[n->hash & (nb - 1)] = n;
		}
	}
	free(t->b);
	t->b = b;
	t->nb = nb;
	return 0;
}

static int table_init(struct table *t, size_t key_off)
{
	memset(t, 0, sizeof(*t));
	t->key_off = key_off;
	return table_resize(t, MIN_BUCKETS);
}

/* ---- hosts, patterns, URLs ---- */

/*
 * Normalise the host s[0..n) into @out (@cap bytes, NUL-terminated):
 * lowercase, one trailing dot dropped, an IPv6 literal kept in brackets.
 * Returns its length, or -1 with *@why.
 */
static int norm_host(const char *s, size_t n, char *out, size_t cap, const char **why)
{
	if (n && s[0] == '[') {
		bool zone = false, colon = false;
		if (n < 3 || s[n - 1] != ']') {
			*why = "IPv6 literal without closing ']'";
			return -1;
		}
		for (size_t i = 1; i + 1 < n; i++) {
			char c = lower(s[i]);
			if (c == '%')
				zone = true;
			else if (zone ? !(is_alnum(c) || in_set(c, "-._~"))
				      : !(is_digit(c) || (c >= 'a' && c <= 'f') || c == ':' || c == '.')) {
				*why = "invalid character in IPv6 literal";
				return -1;
			}
			colon |= c == ':' && !zone;
		}
		if (!colon) {
			*why = "IPv6 literal without ':'";
			return -1;
		}
	} else {
		for (size_t i = 0; i < n; i++) {
			char c = s[i];
			if (!(is_alnum(c) || in_set(c, "-._~%") || (unsigned char)c >= 0x80)) {
				*why = "invalid character in host";
				return -1;
			}
		}
		/* "example.com." is the same server as "example.com". */
		if (n && s[n - 1] == '.')
			n--;
	}
	if (n == 0) {
		*why = "empty host";
		return -1;
	}
	if (n >= cap || n > TD_RL_KEY_MAX) {
		*why = "host too long";
		return -1;
	}
	for (size_t i = 0; i < n; i++)
		out[i] = lower(s[i]);
	out[n] = '\0';
	return (int)n;
}

/*
 * Split "host[:port]" (s, n): the normalised host into @host (@cap bytes)
 * and its length into *@hlen, the port into *@port (0: none, or empty
 * after ':' when @empty_port_ok). Returns 0 or -1 with *@why.
 */
static int parse_hostport(const char *s, size_t n, bool empty_port_ok, char *host,
			  size_t cap, size_t *hlen, unsigned int *port, const char **why)
{
	const char *colon = NULL;
	size_t hn = n;

	if (n && s[0] == '[') {
		const char *close = memchr(s, ']', n);
		if (!close) {
			*why = "IPv6 literal without closing ']'";
			return -1;
		}
		hn = (size_t)(close - s) + 1;
		if (hn < n) {
			if (s[hn] != ':') {
				*why = "expected ':' after ']'";
				return -1;
			}
			colon = s + hn;
		}
	} else {
		colon = memchr(s, ':', n);
		if (colon)
			hn = (size_t)(colon - s);
	}
	int len = norm_host(s, hn, host, cap, why);
	if (len < 0)
		return -1;
	*hlen = (size_t)len;
	*port = 0;
	if (!colon)
		return 0;
	const char *p = colon + 1, *end = s + n;
	if (p == end) {
		if (empty_port_ok)
			return 0;
		*why = "empty port";
		return -1;
	}
	unsigned long v = 0;
	for (; p < end; p++) {
		if (!is_digit(*p) || (v = v * 10 + (unsigned long)(*p - '0')) > 65535)
			break;
	}
	if (p < end || v == 0) {
		*why = "port must be 1..65535";
		return -1;
	}
	*port = (unsigned int)v;
	return 0;
}

/*
 * Normalise a rule pattern s[0..n) into @out (@cap bytes). Returns its
 * length, or -1 with *@why.
 */
static int norm_pattern(const char *s, size_t n, char *out, size_t cap, const char **why)
{
	if (n == 7 && strncasecmp(s, "default", 7) == 0) {
		if (cap < 8) {
			*why = "pattern too long";
			return -1;
		}
		memcpy(out, "default", 8);
		return 7;
	}
	if (n && s[0] == '*') {
		if (n < 3 || s[1] != '.' || s[2] == '[') {
			*why = "a wildcard must look like *.example.com";
			return -1;
		}
		if (memchr(s, ':', n)) {
			*why = "a wildcard pattern takes no port";
			return -1;
		}
		if (cap < 3) {
			*why = "pattern too long";
			return -1;
		}
		int len = norm_host(s + 2, n - 2, out + 2, cap - 2, why);
		if (len < 0)
			return -1;
		if (len + 2 > TD_RL_KEY_MAX) {
			*why = "pattern too long";
			return -1;
		}
		out[0] = '*';
		out[1] = '.';
		return len + 2;
	}
	size_t hlen;
	unsigned int port;
	if (parse_hostport(s, n, false, out, cap, &hlen, &port, why) < 0)
		return -1;
	if (!port)
		return (int)hlen;
	int w = snprintf(out + hlen, cap - hlen, ":%u", port);
	if (w < 0 || (size_t)w >= cap - hlen || hlen + (size_t)w > TD_RL_KEY_MAX) {
		*why = "pattern too long";
		return -1;
	}
	return (int)hlen + w;
}

int td_ratelimit_key_from_url(const char *url, char *buf, size_t len)
{
	const char *s = url, *why;
	char host[TD_RL_KEY_MAX + 1];

	if (!url || !((lower(*s) >= 'a' && lower(*s) <= 'z')))
		return -EINVAL;
	while (is_alnum(*s) || *s == '+' || *s == '-' || *s == '.')
		s++;
	size_t slen = (size_t)(s - url);
	if (strncmp(s, "://", 3) != 0 || slen > TD_RL_KEY_MAX)
		return -EINVAL;
	const char *auth = s + 3;
	size_t alen = strcspn(auth, "/?#");
	for (size_t i = 0; i < alen; i++) {
		/* A backslash ends the host for some URL parsers and not for
		 * others: refuse rather than guess which host gets the request. */
		if ((unsigned char)auth[i] <= 0x20 || auth[i] == 0x7f || auth[i] == '\\')
			return -EINVAL;
	}
	const char *at = memrchr(auth, '@', alen);
	if (at) {
		alen -= (size_t)(at + 1 - auth);
		auth = at + 1;
	}
	size_t hlen;
	unsigned int port;
	if (parse_hostport(auth, alen, true, host, sizeof(host), &hlen, &port, &why) < 0)
		return -EINVAL;

	char scheme[16];
	if (slen < sizeof(scheme)) {
		for (size_t i = 0; i < slen; i++)
			scheme[i] = lower(url[i]);
		scheme[slen] = '\0';
	} else {
		scheme[0] = '\0';
	}
	if (!port) {
		if (!strcmp(scheme, "http") || !strcmp(scheme, "ws"))
			port = 80;
		else if (!strcmp(scheme, "https") || !strcmp(scheme, "wss"))
			port = 443;
		else
			return -EINVAL;
	}
	/* "scheme://host:port" */
	size_t need = slen + 3 + hlen + 1 + (size_t)snprintf(NULL, 0, "%u", port);
	if (need > TD_RL_KEY_MAX || need >= len)
		return -EINVAL;
	for (size_t i = 0; i < slen; i++)
		buf[i] = lower(url[i]);
	snprintf(buf + slen, len - slen, "://%s:%u", host, port);
	return 0;
}

/* ---- rules ---- */

static const char *rule_invalid(const struct td_rl_rule *r)
{
	if (r->burst < 1)
		return "burst must be at least 1";
	if (r->interval_ns > TD_RL_SPAN_MAX)
		return "interval longer than 10^18 ns (about 31 years)";
	if (r->interval_ns && (uint64_t)(r->burst - 1) > TD_RL_SPAN_MAX / r->interval_ns)
		return "burst window (burst - 1) / rate longer than 10^18 ns (about 31 years)";
	return NULL;
}

static void trim(const char **s, size_t *n)
{
	while (*n && is_space(**s))
		(*s)++, (*n)--;
	while (*n && is_space((*s)[*n - 1]))
		(*n)--;
}

/*
 * "N/s", "N/m", "N/h" with N = digits[.digits], or "unlimited", into the
 * emission interval: T = unit * 1e9 / N rounded up, in integers. With N
 * scaled to an integer M = N * 10^k, T = ceil(unit * 1e9 * 10^k / M); the
 * numerator is at most 3600 * 1e9 * 1e6 = 3.6e18 < 2^64.
 */
static int parse_rate(const char *s, size_t n, uint64_t *interval, const char **why)
{
	if (n == 9 && strncasecmp(s, "unlimited", 9) == 0) {
		*interval = 0;
		return 0;
	}
	const char *slash = memchr(s, '/', n);
	if (!slash) {
		*why = "expected N/s, N/m, N/h or unlimited";
		return -1;
	}
	const char *u = slash + 1, *num = s;
	size_t ulen = (size_t)(s + n - u), nlen = (size_t)(slash - s);
	trim(&u, &ulen);
	trim(&num, &nlen);
	uint64_t unit;
	if (ulen == 1 && *u == 's')
		unit = 1;
	else if (ulen == 1 && *u == 'm')
		unit = 60;
	else if (ulen == 1 && *u == 'h')
		unit = 3600;
	else {
		*why = "the unit must be /s, /m or /h";
		return -1;
	}
	uint64_t m = 0, scale = 1;
	size_t i = 0, intd = 0, fracd = 0;
	bool big = false;
	for (; i < nlen && is_digit(num[i]); i++, intd++) {
		m = m * 10 + (uint64_t)(num[i] - '0');
		big |= m > UINT64_C(1) << 60;
	}
	if (i < nlen && num[i] == '.') {
		for (i++; i < nlen && is_digit(num[i]); i++, fracd++) {
			if (fracd == RATE_FRAC_MAX) {
				*why = "at most 6 digits after the decimal point";
				return -1;
			}
			m = m * 10 + (uint64_t)(num[i] - '0');
			scale *= 10;
			big |= m > UINT64_C(1) << 60;
		}
	}
	if (i < nlen || (intd == 0 && fracd == 0)) {
		*why = "expected a number like 5 or 0.5 before the unit";
		return -1;
	}
	if (big) {
		*why = "faster than 1000000000/s";
		return -1;
	}
	if (m == 0) {
		*why = "must be greater than zero";
		return -1;
	}
	uint64_t top = unit * NS_PER_S * scale;
	if (m > top) {
		*why = "faster than 1000000000/s";
		return -1;
	}
	*interval = top / m + (top % m != 0);
	if (*interval > TD_RL_SPAN_MAX) {
		*why = "slower than one per 10^18 ns (about 31 years)";
		return -1;
	}
	return 0;
}

static int parse_u32(const char *s, size_t n, uint32_t *out)
{
	uint64_t v = 0;

	if (n == 0)
		return -1;
	for (size_t i = 0; i < n; i++) {
		if (!is_digit(s[i]) || (v = v * 10 + (uint64_t)(s[i] - '0')) > UINT32_MAX)
			return -1;
	}
	*out = (uint32_t)v;
	return 0;
}

int td_ratelimit_parse_rule(const char *text, char *pattern_out, size_t plen,
			    struct td_rl_rule *out, char *err, size_t errlen)
{
	char pat[TD_RL_KEY_MAX + 1];
	const char *why, *eq = strchr(text, '=');

	if (!eq) {
		seterr(err, errlen, "rule '%.80s': expected PATTERN=RATE[,burst=N][,inflight=N]",
		       text);
		return -EINVAL;
	}
	const char *p = text;
	size_t pn = (size_t)(eq - text);
	trim(&p, &pn);
	if (pn == 0) {
		seterr(err, errlen, "rule '%.80s': no pattern before '='", text);
		return -EINVAL;
	}
	int len = norm_pattern(p, pn, pat, sizeof(pat), &why);
	if (len < 0) {
		seterr(err, errlen, "pattern '%.*s': %s", (int)(pn > 80 ? 80 : pn), p, why);
		return -EINVAL;
	}

	struct td_rl_rule r = {.burst = 1};
	bool have_burst = false, have_inflight = false;
	const char *f = eq + 1;
	for (int field = 0;; field++) {
		size_t fn = strcspn(f, ",");
		const char *next = f[fn] ? f + fn + 1 : NULL, *v = f;
		size_t vn = fn;
		trim(&v, &vn);
		if (field == 0) {
			if (vn == 0) {
				seterr(err, errlen, "pattern '%s': no rate (expected N/s, N/m, N/h or unlimited)",
				       pat);
				return -EINVAL;
			}
			if (parse_rate(v, vn, &r.interval_ns, &why) < 0) {
				seterr(err, errlen, "rate '%.*s': %s", (int)(vn > 80 ? 80 : vn), v, why);
				return -EINVAL;
			}
		} else {
			const char *veq = memchr(v, '=', vn);
			size_t kn = veq ? (size_t)(veq - v) : vn, an = veq ? vn - kn - 1 : 0;
			const char *k = v, *a = veq ? veq + 1 : NULL;
			trim(&k, &kn);
			if (a)
				trim(&a, &an);
			bool is_burst = kn == 5 && !strncmp(k, "burst", 5);
			bool is_inflight = kn == 8 && !strncmp(k, "inflight", 8);
			if (!veq || (!is_burst && !is_inflight)) {
				seterr(err, errlen, "option '%.*s': expected burst=N or inflight=N",
				       (int)(vn > 80 ? 80 : vn), v);
				return -EINVAL;
			}
			if (is_burst ? have_burst : have_inflight) {
				seterr(err, errlen, "option '%.*s' given twice", (int)kn, k);
				return -EINVAL;
			}
			uint32_t *dst = is_burst ? &r.burst : &r.max_inflight;
			if (parse_u32(a, an, dst) < 0) {
				seterr(err, errlen, "option '%.*s': expected a whole number 0..4294967295",
				       (int)(vn > 80 ? 80 : vn), v);
				return -EINVAL;
			}
			have_burst |= is_burst;
			have_inflight |= is_inflight;
		}
		if (!next)
			break;
		f = next;
	}
	why = rule_invalid(&r);
	if (why) {
		seterr(err, errlen, "pattern '%s': %s", pat, why);
		return -EINVAL;
	}
	if ((size_t)len >= plen) {
		seterr(err, errlen, "pattern '%s': longer than the output buffer", pat);
		return -EINVAL;
	}
	memcpy(pattern_out, pat, (size_t)len + 1);
	*out = r;
	return 0;
}

static struct rule *rule_node(struct hnode *h)
{
	return td_container_of(h, struct rule, h);
}

static struct rule *rule_alloc(const char *pat, size_t len, const struct td_rl_rule *r)
{
	struct rule *n = malloc(sizeof(*n) + len);

	if (!n)
		return NULL;
	n->h.hash = hash_bytes(pat, len);
	n->h.len = (uint32_t)len;
	n->r = *r;
	n->line = 0;
	memcpy(n->pat, pat, len);
	return n;
}

/* Put @n into @rl's rules, replacing a rule for the same pattern. Cannot fail. */
static void rule_put(struct td_ratelimit *rl, struct rule *n)
{
	struct table *t = &rl->rules;
	struct hnode **link = table_link(t, n->pat, n->h.len, n->h.hash);

	if (*link) {
		struct rule *old = rule_node(*link);
		n->h.next = old->h.next;
		*link = &n->h;
		rl->bytes -= sizeof(*old) + old->h.len;
		free(old);
	} else {
		table_insert(t, &n->h);
		if (t->count > t->nb)
			table_resize(t, t->nb * 2); /* longer chains if it fails */
	}
	rl->bytes += sizeof(*n) + n->h.len;
	rl->gen++;
}

static const struct td_rl_rule *rule_get(const struct td_ratelimit *rl, const char *p,
					 size_t n)
{
	struct hnode *h = table_find(&rl->rules, p, n);

	return h ? &rule_node(h)->r : NULL;
}

/*
 * The rule for a key: "scheme://host:port" gives host and port; any other
 * key is a bare host. Lookups in order of precedence, on a lowercase copy
 * laid out as "?host:port": host:port, host, then "*" written over the
 * byte before each dot, left to right, i.e. the longest wildcard first.
 */
static struct td_rl_rule resolve(const struct td_ratelimit *rl, const char *key,
				 size_t keylen)
{
	char buf[TD_RL_KEY_MAX + 2];
	const char *hp = key;
	size_t hplen = keylen, hlen = keylen;
	const struct td_rl_rule *r;

	const char *sep = memmem(key, keylen, "://", 3);
	if (sep) {
		hp = sep + 3;
		hplen = hlen = (size_t)(key + keylen - hp);
		const char *colon = memrchr(hp, ':', hplen);
		size_t i = colon ? (size_t)(colon - hp) + 1 : hplen;
		while (i < hplen && is_digit(hp[i]))
			i++;
		/* a port: digits after the last ':' that is not inside [v6] */
		if (colon && i == hplen && colon + 1 < hp + hplen &&
		    (hp[0] != '[' || (colon > hp && colon[-1] == ']')))
			hlen = (size_t)(colon - hp);
	}
	for (size_t i = 0; i < hplen; i++)
		buf[1 + i] = lower(hp[i]);
	if (hlen < hplen && (r = rule_get(rl, buf + 1, hplen)))
		return *r;
	if ((r = rule_get(rl, buf + 1, hlen)))
		return *r;
	if (buf[1] != '[') {
		for (size_t i = 1; i < hlen; i++) {
			if (buf[1 + i] != '.')
				continue;
			buf[i] = '*';
			if ((r = rule_get(rl, buf + i, hlen - i + 1)))
				return *r;
		}
	}
	return rl->dflt;
}

int td_ratelimit_rule_for(const struct td_ratelimit *rl, const char *key,
			  size_t keylen, struct td_rl_rule *out)
{
	if (keylen == 0 || keylen > TD_RL_KEY_MAX)
		return -EINVAL;
	*out = resolve(rl, key, keylen);
	return 0;
}

int td_ratelimit_set_rule(struct td_ratelimit *rl, const char *pattern,
			  const struct td_rl_rule *r)
{
	char pat[TD_RL_KEY_MAX + 1];
	const char *why;

	if (!r || rule_invalid(r))
		return -EINVAL;
	int len = pattern ? norm_pattern(pattern, strlen(pattern), pat, sizeof(pat), &why)
			  : 7;
	if (len < 0)
		return -EINVAL;
	if (!pattern || !strcmp(pat, "default")) {
		rl->dflt = *r;
		rl->gen++;
		return 0;
	}
	struct rule *n = rule_alloc(pat, (size_t)len, r);
	if (!n)
		return -ENOMEM;
	rule_put(rl, n);
	return 0;
}

static void rules_free(struct table *t)
{
	for (size_t i = 0; i < t->nb; i++) {
		struct hnode *n = t->b[i], *next;
		for (; n; n = next) {
			next = n->next;
			free(rule_node(n));
		}
	}
	free(t->b);
	t->b = NULL;
}

int td_ratelimit_load_file(struct td_ratelimit *rl, const char *path, char *err,
			   size_t errlen)
{
	struct table tmp;
	struct td_rl_rule dflt = {.burst = 1};
	unsigned int dflt_line = 0, lineno = 0;
	char *line = NULL, msg[256], pat[TD_RL_KEY_MAX + 1];
	size_t cap = 0;
	ssize_t n;
	int rc = 0;

	FILE *f = fopen(path, "re");
	if (!f) {
		rc = -errno;
		seterr(err, errlen, "%s: %s", path, strerror(-rc));
		return rc;
	}
	if (table_init(&tmp, offsetof(struct rule, pat)) < 0) {
		fclose(f);
		return -ENOMEM;
	}
	/* Parse everything into tmp first: a bad line changes nothing. */
	while ((n = getline(&line, &cap, f)) >= 0) {
		lineno++;
		if (memchr(line, '\0', (size_t)n)) {
			seterr(err, errlen, "%s:%u: NUL byte in line", path, lineno);
			rc = -EINVAL;
			goto out;
		}
		line[strcspn(line, "#")] = '\0';
		const char *s = line;
		size_t sn = strlen(line);
		trim(&s, &sn);
		if (sn == 0)
			continue;
		line[(size_t)(s - line) + sn] = '\0'; /* messages quote the rule */
		struct td_rl_rule r;
		if (td_ratelimit_parse_rule(s, pat, sizeof(pat), &r, msg, sizeof(msg)) < 0) {
			seterr(err, errlen, "%s:%u: %s", path, lineno, msg);
			rc = -EINVAL;
			goto out;
		}
		unsigned int prev = 0;
		struct hnode *h = NULL;
		if (!strcmp(pat, "default"))
			prev = dflt_line;
		else if ((h = table_find(&tmp, pat, strlen(pat))))
			prev = rule_node(h)->line;
		if (prev) {
			seterr(err, errlen, "%s:%u: pattern '%s' already set on line %u", path,
			       lineno, pat, prev);
			rc = -EINVAL;
			goto out;
		}
		if (!strcmp(pat, "default")) {
			dflt = r;
			dflt_line = lineno;
			continue;
		}
		struct rule *node = rule_alloc(pat, strlen(pat), &r);
		if (!node) {
			rc = -ENOMEM;
			goto out;
		}
		node->line = lineno;
		table_insert(&tmp, &node->h);
		if (tmp.count > tmp.nb)
			table_resize(&tmp, tmp.nb * 2);
	}
	if (ferror(f)) {
		rc = -(errno ? errno : EIO);
		seterr(err, errlen, "%s: %s", path, strerror(-rc));
		goto out;
	}
	/* Move the nodes over: no allocation that could fail half-way. */
	for (size_t i = 0; i < tmp.nb; i++) {
		struct hnode *h = tmp.b[i], *next;
		for (; h; h = next) {
			next = h->next;
			rule_put(rl, rule_node(h));
		}
		tmp.b[i] = NULL;
	}
	if (dflt_line)
		rl->dflt = dflt;
	rl->gen++;
out:
	rules_free(&tmp);
	free(line);
	fclose(f);
	return rc;
}

/* ---- keys ---- */

static struct key *key_node(struct hnode *h)
{
	return td_container_of(h, struct key, h);
}

static bool waiters_empty(const struct key *k)
{
	return k->waiters.next == &k->waiters;
}

static bool key_idle(const struct key *k, uint64_t now)
{
	return k->inflight == 0 && !k->waking && waiters_empty(k) && k->tat <= now;
}

static void key_refresh(struct td_ratelimit *rl, struct key *k)
{
	if (k->rule_gen != rl->gen) {
		k->rule = resolve(rl, k->name, k->h.len);
		k->rule_gen = rl->gen;
	}
}

static uint32_t key_cap(const struct key *k)
{
	return k->rule.max_inflight ? k->rule.max_inflight : UINT32_MAX;
}

static struct key *key_find(const struct td_ratelimit *rl, const char *key, size_t keylen)
{
	struct hnode *h = table_find(&rl->keys, key, keylen);

	return h ? key_node(h) : NULL;
}

size_t td_ratelimit_sweep(struct td_ratelimit *rl, uint64_t now_ns)
{
	struct table *t = &rl->keys;
	size_t evicted = 0, nb = MIN_BUCKETS;

	for (size_t i = 0; i < t->nb; i++) {
		struct hnode **p = &t->b[i];
		while (*p) {
			struct key *k = key_node(*p);
			if (!key_idle(k, now_ns)) {
				p = &(*p)->next;
				continue;
			}
			*p = k->h.next;
			rl->bytes -= sizeof(*k) + k->h.len;
			free(k);
			t->count--;
			evicted++;
		}
	}
	while (nb < 2 * t->count)
		nb *= 2;
	if (nb != t->nb)
		table_resize(t, nb); /* a full table still works if this fails */
	return evicted;
}

static struct key *key_new(struct td_ratelimit *rl, const char *name, size_t len,
			   uint64_t hash, uint64_t now)
{
	if (rl->keys.count >= rl->keys.nb)
		td_ratelimit_sweep(rl, now);
	struct key *k = malloc(sizeof(*k) + len);
	if (!k)
		return NULL;
	memset(k, 0, sizeof(*k));
	k->h.hash = hash;
	k->h.len = (uint32_t)len;
	k->waiters.next = k->waiters.prev = &k->waiters;
	memcpy(k->name, name, len);
	k->rule = resolve(rl, name, len);
	k->rule_gen = rl->gen;
	table_insert(&rl->keys, &k->h);
	rl->bytes += sizeof(*k) + len;
	return k;
}

int td_ratelimit_new(struct td_ratelimit **out, const struct td_rl_rule *dflt)
{
	static const struct td_rl_rule none = {.interval_ns = 0, .burst = 1};

	if (dflt && rule_invalid(dflt))
		return -EINVAL;
	struct td_ratelimit *rl = calloc(1, sizeof(*rl));
	if (!rl)
		return -ENOMEM;
	if (table_init(&rl->keys, offsetof(struct key, name)) < 0)
		goto fail;
	if (table_init(&rl->rules, offsetof(struct rule, pat)) < 0)
		goto fail_keys;
	rl->dflt = dflt ? *dflt : none;
	*out = rl;
	return 0;
fail_keys:
	free(rl->keys.b);
fail:
	free(rl);
	return -ENOMEM;
}

static void destroy(struct td_ratelimit *rl)
{
	for (size_t i = 0; i < rl->keys.nb; i++) {
		struct hnode *h = rl->keys.b[i], *next;
		for (; h; h = next) {
			struct key *k = key_node(h);
			next = h->next;
			while (!waiters_empty(k)) {
				struct td_rl_waiter *w = k->waiters.next;
				k->waiters.next = w->next;
				w->next = w->prev = NULL;
			}
			free(k);
		}
	}
	free(rl->keys.b);
	rules_free(&rl->rules);
	free(rl);
}

void td_ratelimit_free(struct td_ratelimit *rl)
{
	if (!rl)
		return;
	/* From a waiter callback: a release further up the stack still uses
	 * rl; the outermost one frees it (as hiredis does in callbacks). */
	if (rl->depth) {
		rl->dying = true;
		return;
	}
	destroy(rl);
}

int td_ratelimit_acquire(struct td_ratelimit *rl, const char *key, size_t keylen,
			 uint64_t now_ns, uint64_t *retry_at_ns)
{
	if (keylen == 0 || keylen > TD_RL_KEY_MAX)
		return -EINVAL;
	uint64_t h = hash_bytes(key, keylen);
	struct hnode *n = *table_link(&rl->keys, key, keylen, h);
	struct key *k = n ? key_node(n) : key_new(rl, key, keylen, h, now_ns);
	if (!k)
		return -ENOMEM;
	key_refresh(rl, k);

	if (k->inflight >= key_cap(k)) {
		if (retry_at_ns)
			*retry_at_ns = UINT64_MAX;
		return -EBUSY;
	}
	uint64_t t = k->rule.interval_ns;
	if (t) {
		uint64_t tat = k->tat > now_ns ? k->tat : now_ns;
		uint64_t tau = (uint64_t)(k->rule.burst - 1) * t; /* <= SPAN_MAX */
		if (tat - now_ns > tau) {
			if (retry_at_ns)
				*retry_at_ns = tat - tau;
			return TD_EFULL;
		}
		/* Saturate rather than wrap should a caller's clock be absurd. */
		k->tat = tat > UINT64_MAX - t ? UINT64_MAX : tat + t;
	}
	k->inflight++;
	return 0;
}

void td_ratelimit_release(struct td_ratelimit *rl, const char *key, size_t keylen)
{
	if (keylen == 0 || keylen > TD_RL_KEY_MAX)
		return;
	struct key *k = key_find(rl, key, keylen);
	if (!k || k->inflight == 0)
		return;
	k->inflight--;
	/* Released from a waiter callback: the outer release's loop sees the
	 * free slot and goes on. */
	if (k->waking)
		return;
	/* waking also keeps k from being evicted by an acquire in a callback. */
	k->waking = true;
	rl->depth++;
	while (!rl->dying) {
		key_refresh(rl, k);
		if (waiters_empty(k) || k->inflight >= key_cap(k))
			break;
		struct td_rl_waiter *w = k->waiters.next;
		td_ratelimit_unwait(rl, w);
		w->cb(w);
	}
	k->waking = false;
	if (--rl->depth == 0 && rl->dying)
		destroy(rl);
}

int td_ratelimit_wait(struct td_ratelimit *rl, const char *key, size_t keylen,
		      struct td_rl_waiter *w)
{
	if (keylen == 0 || keylen > TD_RL_KEY_MAX)
		return -EINVAL;
	if (w->next)
		return -EALREADY;
	struct key *k = key_find(rl, key, keylen);
	if (!k)
		return -EAGAIN;
	key_refresh(rl, k);
	/* Queue only when a release is certain to come and find a free slot;
	 * this also stops a woken callback from re-queueing itself forever. */
	if (k->inflight < key_cap(k))
		return -EAGAIN;
	w->next = &k->waiters;
	w->prev = k->waiters.prev;
	k->waiters.prev->next = w;
	k->waiters.prev = w;
	return 0;
}

void td_ratelimit_unwait(struct td_ratelimit *rl, struct td_rl_waiter *w)
{
	(void)rl;
	if (!w->next)
		return;
	w->prev->next = w->next;
	w->next->prev = w->prev;
	w->next = w->prev = NULL;
}

size_t td_ratelimit_keys(const struct td_ratelimit *rl)
{
	return rl->keys.count;
}

size_t td_ratelimit_memory(const struct td_ratelimit *rl)
{
	return sizeof(*rl) + (rl->keys.nb + rl->rules.nb) * sizeof(struct hnode *) +
	       rl->bytes;
}
