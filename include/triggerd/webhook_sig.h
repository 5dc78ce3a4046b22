/*
 * Webhook signature verification: GitHub, Stripe and Standard Webhooks.
 *
 * Stateless: the module reads a caller-filled struct td_sig_input, keeps no
 * pointer into it and allocates nothing the caller must free. Header values
 * are (pointer, length) pairs pointing straight into the request buffer, so
 * they need no NUL terminator; the module never reads past ptr + len.
 *
 * Schemes (all HMAC-SHA256; the computed MAC is compared to every offered
 * signature with CRYPTO_memcmp, so timing does not depend on the secret):
 *  - TD_SIG_GITHUB: `X-Hub-Signature-256: sha256=<64 lowercase hex>` over the
 *    raw body. The secret bytes are the HMAC key.
 *  - TD_SIG_STRIPE: `Stripe-Signature: t=<unix s>,v1=<hex>[,v1=<hex>...]`
 *    over "<t>.<body>"; any v1 may match; other keys (v0, ...) are ignored.
 *    The secret bytes are the HMAC key *verbatim*: Stripe's "whsec_..."
 *    endpoint secrets are used as text, prefix included (as Stripe does).
 *  - TD_SIG_STANDARD (Standard Webhooks / svix): `webhook-id`,
 *    `webhook-timestamp`, `webhook-signature: v1,<base64> [v1,<base64> ...]`
 *    over "<id>.<timestamp>.<body>"; any v1 may match; entries of other
 *    versions are ignored. The secret is text "whsec_<base64>"; the HMAC key
 *    is the base64-decoded part. A secret without the "whsec_" prefix is
 *    taken as bare base64 (as the reference libraries do); padding optional.
 *
 * Header grammar (anything else is TD_ESIG_MALFORMED, checked before any MAC
 * is computed): leading/trailing SP/HTAB of a value and of each Stripe item
 * are ignored; hex is lowercase, exactly 64 digits; base64 is standard,
 * padded, exactly 44 characters; timestamps are decimal digits without sign
 * or leading zero, at most 18 digits. Stripe items are `key=value` separated
 * by ',', with exactly one `t`; webhook-signature entries are `version,value`
 * separated by one or more spaces.
 *
 * Replay window: TD_SIG_TOLERANCE_S in both directions from in->now, for
 * Stripe and Standard Webhooks (GitHub signs no timestamp). The timestamp is
 * checked before the MAC, so stale deliveries cost no HMAC.
 *
 * Context: any thread; functions are reentrant.
 */
#ifndef TRIGGERD_WEBHOOK_SIG_H
#define TRIGGERD_WEBHOOK_SIG_H

#include <stddef.h>
#include <stdint.h>

/** Largest accepted difference, in seconds, between a signed timestamp and
 * the caller's clock (either direction; exactly 300 s still passes). */
#define TD_SIG_TOLERANCE_S 300

/** Longest Standard Webhooks key, in bytes after base64 decoding. */
#define TD_SIG_KEY_MAX 512

/* Return codes beyond 0 and -EINVAL/-ENOMEM (see td_sig_strerror). */
enum {
	TD_ESIG_MISSING = -4101,   /* a required header is absent */
	TD_ESIG_MALFORMED = -4102, /* a header does not follow its grammar */
	TD_ESIG_STALE = -4103,     /* timestamp outside TD_SIG_TOLERANCE_S */
	TD_ESIG_MISMATCH = -4104,  /* no offered signature matched */
	TD_ESIG_SECRET = -4105,    /* the configured secret is unusable */
};

/** Signature schemes. */
enum td_sig_scheme {
	TD_SIG_GITHUB = 1,
	TD_SIG_STRIPE,
	TD_SIG_STANDARD,
};

/** A header value: ptr == NULL means the header is absent (len ignored);
 * otherwise len bytes at ptr, no terminator needed. */
struct td_sig_str {
	const char *ptr;
	size_t len;
};

/** What td_sig_verify() checks. Fill the headers that arrived; a scheme only
 * looks at its own. All memory stays the caller's. */
struct td_sig_input {
	const void *secret;        /* secret bytes as configured */
	size_t secret_len;
	const void *body;          /* raw request body; NULL only if body_len 0 */
	size_t body_len;
	struct td_sig_str hub_signature_256; /* X-Hub-Signature-256 */
	struct td_sig_str stripe_signature;  /* Stripe-Signature */
	struct td_sig_str webhook_id;        /* webhook-id */
	struct td_sig_str webhook_timestamp; /* webhook-timestamp */
	struct td_sig_str webhook_signature; /* webhook-signature */
	int64_t now;               /* caller's wall clock, unix seconds */
};

/**
 * Verify the signature of one delivery under scheme s.
 *
 * Returns 0 when a signature matched; TD_ESIG_MISSING, TD_ESIG_MALFORMED,
 * TD_ESIG_STALE, TD_ESIG_MISMATCH or TD_ESIG_SECRET (empty secret, or a
 * Standard Webhooks secret that is not base64 or decodes to nothing or to
 * more than TD_SIG_KEY_MAX bytes); -EINVAL for a NULL in, an unknown scheme
 * or a NULL body with body_len > 0; -ENOMEM when OpenSSL fails.
 *
 * On failure, if why != NULL and whylen > 0, writes a NUL-terminated reason
 * (truncated to whylen) naming the header and what was wrong, e.g.
 * "missing X-Hub-Signature-256", "malformed Stripe-Signature: no t",
 * "timestamp outside tolerance (412 s)", "no signature matched". It never
 * contains the secret, the expected signature or offered signature bytes,
 * so it may be returned to the client. On success why is set to "".
 */
int td_sig_verify(enum td_sig_scheme s, const struct td_sig_input *in, char *why,
		  size_t whylen);

/**
 * Parse a scheme name from config text: "github", "stripe" or "standard"
 * (exact, case-sensitive; len bytes at name, no terminator needed).
 * Returns 0 and sets *out, or -EINVAL (and leaves *out alone).
 */
int td_sig_scheme_parse(const char *name, size_t len, enum td_sig_scheme *out);

/** The config name of a scheme ("github", ...), or NULL if s is unknown. */
const char *td_sig_scheme_name(enum td_sig_scheme s);

/** Short text for a TD_ESIG_* code; NULL for any other value. */
const char *td_sig_strerror(int err);

#endif
