/* Webhook signature verification (see include/triggerd/webhook_sig.h). */
#include "triggerd/webhook_sig.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#define MAC_LEN 32
#define HEX_LEN (2 * MAC_LEN)
#define B64_LEN 44 /* 4 * ceil(32 / 3) */
#define TS_DIGITS_MAX 18

struct part {
	const void *p;
	size_t n;
};

static void say(char *why, size_t whylen, const char *fmt, ...)
{
	va_list ap;

	if (!why || !whylen)
		return;
	va_start(ap, fmt);
	vsnprintf(why, whylen, fmt, ap);
	va_end(ap);
}

static bool is_ows(char c)
{
	return c == ' ' || c == '\t';
}

static struct td_sig_str trim(struct td_sig_str s)
{
	if (!s.ptr)
		return (struct td_sig_str){NULL, 0}; /* absent: len is not meaningful */
	while (s.len && is_ows(s.ptr[0])) {
		s.ptr++;
		s.len--;
	}
	while (s.len && is_ows(s.ptr[s.len - 1]))
		s.len--;
	return s;
}

static bool eq(struct td_sig_str s, const char *lit)
{
	size_t n = strlen(lit);
	return s.len == n && !memcmp(s.ptr, lit, n);
}

/* Canonical decimal only (no sign, no leading zero), so the text that is
 * signed and the value that is checked cannot disagree. */
static bool parse_ts(struct td_sig_str s, int64_t *out)
{
	int64_t v = 0;

	if (!s.len || s.len > TS_DIGITS_MAX || (s.ptr[0] == '0' && s.len > 1))
		return false;
	for (size_t i = 0; i < s.len; i++) {
		if (s.ptr[i] < '0' || s.ptr[i] > '9')
			return false;
		v = v * 10 + (s.ptr[i] - '0');
	}
	*out = v;
	return true;
}

static int check_age(int64_t ts, int64_t now, char *why, size_t whylen)
{
	/* Unsigned difference: exact for any pair of int64 values. */
	uint64_t d = ts >= now ? (uint64_t)ts - (uint64_t)now : (uint64_t)now - (uint64_t)ts;

	if (d <= TD_SIG_TOLERANCE_S)
		return 0;
	say(why, whylen, "timestamp outside tolerance (%" PRIu64 " s)", d);
	return TD_ESIG_STALE;
}

static bool is_hex64(struct td_sig_str s)
{
	if (s.len != HEX_LEN)
		return false;
	for (size_t i = 0; i < s.len; i++) {
		char c = s.ptr[i];
		if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
			return false;
	}
	return true;
}

static int b64_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

/* A padded standard base64 encoding of 32 bytes: 43 symbols and one '='. */
static bool is_b64_mac(struct td_sig_str s)
{
	if (s.len != B64_LEN || s.ptr[B64_LEN - 1] != '=')
		return false;
	for (size_t i = 0; i < B64_LEN - 1; i++)
		if (b64_value((unsigned char)s.ptr[i]) < 0)
			return false;
	return true;
}

/* Decodes standard base64, padding optional. Returns the length, or -1 if
 * the text is not base64 or decodes to more than cap bytes. */
static long b64_decode(const char *p, size_t n, unsigned char *out, size_t cap)
{
	size_t o = 0;
	uint32_t acc = 0;
	int bits = 0;

	if (n >= 1 && p[n - 1] == '=')
		n--;
	if (n >= 1 && p[n - 1] == '=')
		n--;
	if (n % 4 == 1)
		return -1;
	for (size_t i = 0; i < n; i++) {
		int v = b64_value((unsigned char)p[i]);
		if (v < 0)
			return -1;
		acc = (acc << 6) | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			if (o == cap)
				return -1;
			out[o++] = (unsigned char)(acc >> bits);
		}
	}
	return (long)o;
}

static void hex_encode(const unsigned char *mac, char *out)
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < MAC_LEN; i++) {
		out[2 * i] = digits[mac[i] >> 4];
		out[2 * i + 1] = digits[mac[i] & 15];
	}
}

static EVP_MAC *hmac_alg;
static pthread_once_t hmac_once = PTHREAD_ONCE_INIT;

static void hmac_fetch(void)
{
	/* Fetched once: a per-call fetch costs a locked store lookup. */
	hmac_alg = EVP_MAC_fetch(NULL, "HMAC", NULL);
}

static int hmac_sha256(const void *key, size_t klen, const struct part *parts, size_t nparts,
		       unsigned char *out)
{
	char digest[] = "SHA256";
	OSSL_PARAM params[] = {
		OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
		OSSL_PARAM_construct_end(),
	};
	EVP_MAC_CTX *ctx;
	size_t outl = 0;
	int rc = -ENOMEM;

	pthread_once(&hmac_once, hmac_fetch);
	if (!hmac_alg || !(ctx = EVP_MAC_CTX_new(hmac_alg)))
		return -ENOMEM;
	if (!EVP_MAC_init(ctx, key, klen, params))
		goto out;
	for (size_t i = 0; i < nparts; i++)
		if (parts[i].n && !EVP_MAC_update(ctx, parts[i].p, parts[i].n))
			goto out;
	if (EVP_MAC_final(ctx, out, &outl, MAC_LEN) && outl == MAC_LEN)
		rc = 0;
out:
	EVP_MAC_CTX_free(ctx);
	return rc;
}

static int mac_failed(int rc, char *why, size_t whylen)
{
	say(why, whylen, "internal error computing signature");
	return rc;
}

static int verify_github(const struct td_sig_input *in, char *why, size_t whylen)
{
	static const char prefix[] = "sha256=";
	const size_t plen = sizeof(prefix) - 1;
	struct td_sig_str h = trim(in->hub_signature_256);
	struct part body = {in->body, in->body_len};
	unsigned char mac[MAC_LEN];
	char hex[HEX_LEN];
	int rc;

	if (!in->hub_signature_256.ptr) {
		say(why, whylen, "missing X-Hub-Signature-256");
		return TD_ESIG_MISSING;
	}
	if (h.len < plen || memcmp(h.ptr, prefix, plen) ||
	    !is_hex64((struct td_sig_str){h.ptr + plen, h.len - plen})) {
		say(why, whylen, "malformed X-Hub-Signature-256");
		return TD_ESIG_MALFORMED;
	}
	if ((rc = hmac_sha256(in->secret, in->secret_len, &body, 1, mac)))
		return mac_failed(rc, why, whylen);
	hex_encode(mac, hex);
	if (CRYPTO_memcmp(hex, h.ptr + plen, HEX_LEN)) {
		say(why, whylen, "no signature matched");
		return TD_ESIG_MISMATCH;
	}
	return 0;
}

/* Next `key=value` item of a Stripe-Signature value; false at the end.
 * *bad is set for an empty item or one without '=' or without a key. */
static bool stripe_next(struct td_sig_str *rest, struct td_sig_str *key, struct td_sig_str *val,
			bool *bad)
{
	if (!rest->ptr)
		return false;
	const char *comma = memchr(rest->ptr, ',', rest->len);
	size_t n = comma ? (size_t)(comma - rest->ptr) : rest->len;
	struct td_sig_str item = trim((struct td_sig_str){rest->ptr, n});

	if (comma) {
		rest->ptr = comma + 1;
		rest->len -= n + 1;
	} else {
		rest->ptr = NULL; /* the last item has been taken */
	}
	const char *e = item.len ? memchr(item.ptr, '=', item.len) : NULL;
	if (!e || e == item.ptr) {
		*bad = true;
		return false;
	}
	*key = (struct td_sig_str){item.ptr, (size_t)(e - item.ptr)};
	*val = (struct td_sig_str){e + 1, item.len - key->len - 1};
	return true;
}

static int verify_stripe(const struct td_sig_input *in, char *why, size_t whylen)
{
	struct td_sig_str h = trim(in->stripe_signature), rest, k, v, t = {NULL, 0};
	unsigned char mac[MAC_LEN];
	char hex[HEX_LEN];
	size_t nv1 = 0;
	bool bad = false, match = false;
	int64_t ts;
	int rc;

	if (!in->stripe_signature.ptr) {
		say(why, whylen, "missing Stripe-Signature");
		return TD_ESIG_MISSING;
	}
	/* Pass 1: the whole header must parse before any MAC is computed. */
	rest = h;
	while (stripe_next(&rest, &k, &v, &bad)) {
		if (eq(k, "t")) {
			if (t.ptr) {
				say(why, whylen, "malformed Stripe-Signature: more than one t");
				return TD_ESIG_MALFORMED;
			}
			t = v;
		} else if (eq(k, "v1")) {
			if (!is_hex64(v)) {
				say(why, whylen, "malformed Stripe-Signature: bad v1 value");
				return TD_ESIG_MALFORMED;
			}
			nv1++;
		}
	}
	if (bad) {
		say(why, whylen, "malformed Stripe-Signature: item is not key=value");
		return TD_ESIG_MALFORMED;
	}
	if (!t.ptr) {
		say(why, whylen, "malformed Stripe-Signature: no t");
		return TD_ESIG_MALFORMED;
	}
	if (!parse_ts(t, &ts)) {
		say(why, whylen, "malformed Stripe-Signature: bad t");
		return TD_ESIG_MALFORMED;
	}
	if (!nv1) {
		say(why, whylen, "no v1 signature in Stripe-Signature");
		return TD_ESIG_MISMATCH;
	}
	if ((rc = check_age(ts, in->now, why, whylen)))
		return rc;

	struct part parts[] = {{t.ptr, t.len}, {".", 1}, {in->body, in->body_len}};
	if ((rc = hmac_sha256(in->secret, in->secret_len, parts, 3, mac)))
		return mac_failed(rc, why, whylen);
	hex_encode(mac, hex);
	/* Pass 2: every v1 is compared, matched or not. */
	rest = h;
	while (stripe_next(&rest, &k, &v, &bad))
		if (eq(k, "v1"))
			match |= !CRYPTO_memcmp(hex, v.ptr, HEX_LEN);
	if (!match) {
		say(why, whylen, "no signature matched");
		return TD_ESIG_MISMATCH;
	}
	return 0;
}

/* Next space-separated `version,value` entry of webhook-signature; false at
 * the end, or with *bad set for an entry without ',' or without a version. */
static bool std_next(struct td_sig_str *rest, struct td_sig_str *ver, struct td_sig_str *val,
		     bool *bad)
{
	while (rest->len && rest->ptr[0] == ' ') {
		rest->ptr++;
		rest->len--;
	}
	if (!rest->len)
		return false;
	const char *sp = memchr(rest->ptr, ' ', rest->len);
	size_t n = sp ? (size_t)(sp - rest->ptr) : rest->len;
	const char *c = memchr(rest->ptr, ',', n);

	if (!c || c == rest->ptr) {
		*bad = true;
		return false;
	}
	*ver = (struct td_sig_str){rest->ptr, (size_t)(c - rest->ptr)};
	*val = (struct td_sig_str){c + 1, n - ver->len - 1};
	rest->ptr += n;
	rest->len -= n;
	return true;
}

static int std_key(const struct td_sig_input *in, unsigned char *key, char *why, size_t whylen)
{
	const char *s = in->secret;
	size_t n = in->secret_len;
	long klen;

	if (n >= 6 && !memcmp(s, "whsec_", 6)) {
		s += 6;
		n -= 6;
	}
	klen = b64_decode(s, n, key, TD_SIG_KEY_MAX);
	if (klen <= 0) {
		say(why, whylen, "secret is not a whsec_ base64 key of 1 to %d bytes",
		    TD_SIG_KEY_MAX);
		return TD_ESIG_SECRET;
	}
	return (int)klen;
}

static int verify_standard(const struct td_sig_input *in, char *why, size_t whylen)
{
	struct td_sig_str id = trim(in->webhook_id), tss = trim(in->webhook_timestamp);
	struct td_sig_str sig = trim(in->webhook_signature), rest, ver, val;
	unsigned char key[TD_SIG_KEY_MAX], mac[MAC_LEN];
	char b64[B64_LEN + 1];
	size_t nv1 = 0;
	bool bad = false, match = false;
	int64_t ts;
	int rc, klen;

	if (!in->webhook_id.ptr || !in->webhook_timestamp.ptr || !in->webhook_signature.ptr) {
		say(why, whylen, "missing %s",
		    !in->webhook_id.ptr ? "webhook-id"
		    : !in->webhook_timestamp.ptr ? "webhook-timestamp" : "webhook-signature");
		return TD_ESIG_MISSING;
	}
	if (!id.len) {
		say(why, whylen, "malformed webhook-id: empty");
		return TD_ESIG_MALFORMED;
	}
	if (!parse_ts(tss, &ts)) {
		say(why, whylen, "malformed webhook-timestamp");
		return TD_ESIG_MALFORMED;
	}
	rest = sig;
	while (std_next(&rest, &ver, &val, &bad)) {
		if (!eq(ver, "v1"))
			continue; /* other versions are ignored, whatever they hold */
		if (!is_b64_mac(val)) {
			say(why, whylen, "malformed webhook-signature: bad v1 value");
			return TD_ESIG_MALFORMED;
		}
		nv1++;
	}
	if (bad || !sig.len) {
		say(why, whylen, "malformed webhook-signature");
		return TD_ESIG_MALFORMED;
	}
	if (!nv1) {
		say(why, whylen, "no v1 signature in webhook-signature");
		return TD_ESIG_MISMATCH;
	}
	if ((rc = check_age(ts, in->now, why, whylen)))
		return rc;
	if ((klen = std_key(in, key, why, whylen)) < 0)
		return klen;

	struct part parts[] = {
		{id.ptr, id.len}, {".", 1}, {tss.ptr, tss.len}, {".", 1}, {in->body, in->body_len},
	};
	rc = hmac_sha256(key, (size_t)klen, parts, 5, mac);
	OPENSSL_cleanse(key, sizeof(key));
	if (rc)
		return mac_failed(rc, why, whylen);
	EVP_EncodeBlock((unsigned char *)b64, mac, MAC_LEN);
	rest = sig;
	while (std_next(&rest, &ver, &val, &bad))
		if (eq(ver, "v1"))
			match |= !CRYPTO_memcmp(b64, val.ptr, B64_LEN);
	if (!match) {
		say(why, whylen, "no signature matched");
		return TD_ESIG_MISMATCH;
	}
	return 0;
}

int td_sig_verify(enum td_sig_scheme s, const struct td_sig_input *in, char *why, size_t whylen)
{
	say(why, whylen, "%s", "");
	if (!in || (!in->body && in->body_len)) {
		say(why, whylen, "invalid argument");
		return -EINVAL;
	}
	if (s != TD_SIG_GITHUB && s != TD_SIG_STRIPE && s != TD_SIG_STANDARD) {
		say(why, whylen, "unknown signature scheme");
		return -EINVAL;
	}
	if (!in->secret || !in->secret_len) {
		say(why, whylen, "empty secret");
		return TD_ESIG_SECRET;
	}
	switch (s) {
	case TD_SIG_GITHUB: return verify_github(in, why, whylen);
	case TD_SIG_STRIPE: return verify_stripe(in, why, whylen);
	default: return verify_standard(in, why, whylen);
	}
}

static const char *const scheme_names[] = {
	[TD_SIG_GITHUB] = "github",
	[TD_SIG_STRIPE] = "stripe",
	[TD_SIG_STANDARD] = "standard",
};

int td_sig_scheme_parse(const char *name, size_t len, enum td_sig_scheme *out)
{
	if (!name || !out)
		return -EINVAL;
	for (int s = TD_SIG_GITHUB; s <= TD_SIG_STANDARD; s++) {
		if (eq((struct td_sig_str){name, len}, scheme_names[s])) {
			*out = (enum td_sig_scheme)s;
			return 0;
		}
	}
	return -EINVAL;
}

const char *td_sig_scheme_name(enum td_sig_scheme s)
{
	return s >= TD_SIG_GITHUB && s <= TD_SIG_STANDARD ? scheme_names[s] : NULL;
}

const char *td_sig_strerror(int err)
{
	switch (err) {
	case TD_ESIG_MISSING: return "signature header missing";
	case TD_ESIG_MALFORMED: return "signature header malformed";
	case TD_ESIG_STALE: return "signature timestamp outside tolerance";
	case TD_ESIG_MISMATCH: return "signature mismatch";
	case TD_ESIG_SECRET: return "unusable signature secret";
	default: return NULL;
	}
}
