/*
 * libFuzzer target: webhook signature verification, every scheme.
 *
 * Input: one flag byte, then "secret \n A \n B \n C \n body" (the body is the
 * rest and may hold '\n'). A is the scheme's signature header
 * (X-Hub-Signature-256, Stripe-Signature or webhook-signature), B webhook-id,
 * C webhook-timestamp. Flags: bits 0-1 scheme (0 github, 1 stripe, else
 * standard); bit 2 "aligned": now is taken from the signed timestamp so the
 * tolerance check passes and the MAC is reached; bit 3 "inject" (GitHub):
 * A is replaced by the correct signature; bits 4-6: A, B, C absent.
 * Every field lives in its own exact-size allocation, so ASan sees any
 * over-read.
 *
 * Invariants (abort() on violation):
 *  - the result is 0 or a TD_ESIG_* code, never -EINVAL for valid arguments;
 *  - why is "" on success, a non-empty terminated string otherwise;
 *  - GitHub: verified iff A is exactly "sha256=" + lowercase hex of
 *    HMAC-SHA256(secret, body), computed here with OpenSSL's one-shot HMAC();
 *    an injected signature always verifies (for a non-empty secret);
 *  - the reason never contains the expected GitHub signature.
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "triggerd/webhook_sig.h"

#include "fuzz_common.h"

#define die(what, detail) fuzz_die("fuzz_sig", what, detail)

static char *dup_n(const uint8_t *p, size_t n)
{
	char *d = malloc(n ? n : 1);
	if (!d)
		abort();
	if (n)
		memcpy(d, p, n);
	return d;
}

/* Leading decimal digits of p (at most 18), or 0. */
static int64_t digits(const char *p, size_t n)
{
	int64_t v = 0;
	for (size_t i = 0; i < n && i < 18 && p[i] >= '0' && p[i] <= '9'; i++)
		v = v * 10 + (p[i] - '0');
	return v;
}

static void github_oracle(const char *secret, size_t slen, const char *body, size_t blen,
			  char out[72])
{
	static const char hexd[] = "0123456789abcdef";
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned int ml = 0;

	if (!HMAC(EVP_sha256(), secret, (int)slen, (const unsigned char *)body, blen, mac, &ml) ||
	    ml != 32)
		die("HMAC() failed", "");
	memcpy(out, "sha256=", 7);
	for (int i = 0; i < 32; i++) {
		out[7 + 2 * i] = hexd[mac[i] >> 4];
		out[8 + 2 * i] = hexd[mac[i] & 15];
	}
	out[71] = 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	uint8_t flags = data[0];
	const uint8_t *p = data + 1, *end = data + size;
	const uint8_t *f[5];
	size_t fl[5];

	/* Split into secret, A, B, C and the body. */
	for (int i = 0; i < 4; i++) {
		const uint8_t *nl = memchr(p, '\n', (size_t)(end - p));
		f[i] = p;
		fl[i] = nl ? (size_t)(nl - p) : (size_t)(end - p);
		p = nl ? nl + 1 : end;
	}
	f[4] = p;
	fl[4] = (size_t)(end - p);

	char *field[5];
	for (int i = 0; i < 5; i++)
		field[i] = dup_n(f[i], fl[i]);

	enum td_sig_scheme s = (flags & 3) == 0   ? TD_SIG_GITHUB
			       : (flags & 3) == 1 ? TD_SIG_STRIPE
						  : TD_SIG_STANDARD;
	char expect[72];
	bool gh_secret_ok = fl[0] > 0;
	if (s == TD_SIG_GITHUB) {
		github_oracle(field[0], fl[0], field[4], fl[4], expect);
		if (flags & 8) {
			free(field[1]);
			field[1] = dup_n((const uint8_t *)expect, 71);
			fl[1] = 71;
		}
	}
	struct td_sig_str a = {(flags & 16) ? NULL : field[1], fl[1]};
	struct td_sig_str b = {(flags & 32) ? NULL : field[2], fl[2]};
	struct td_sig_str c = {(flags & 64) ? NULL : field[3], fl[3]};
	int64_t now = 1700000000;
	if (flags & 4) {
		if (s == TD_SIG_STANDARD) {
			now = digits(field[3], fl[3]);
		} else if (s == TD_SIG_STRIPE) {
			const char *t = memmem(field[1], fl[1], "t=", 2);
			if (t)
				now = digits(t + 2, fl[1] - (size_t)(t + 2 - field[1]));
		}
	}
	struct td_sig_input in = {
		.secret = field[0],
		.secret_len = fl[0],
		.body = fl[4] ? field[4] : NULL,
		.body_len = fl[4],
		.hub_signature_256 = a,
		.stripe_signature = a,
		.webhook_signature = a,
		.webhook_id = b,
		.webhook_timestamp = c,
		.now = now,
	};
	char why[128];

	int rc = td_sig_verify(s, &in, why, sizeof(why));
	if (rc != 0 && (rc < TD_ESIG_SECRET || rc > TD_ESIG_MISSING))
		die("unexpected return code", why);
	if (memchr(why, 0, sizeof(why)) == NULL || (rc == 0) != (why[0] == 0))
		die("bad reason", why);
	if (s == TD_SIG_GITHUB) {
		/* The module ignores SP/HTAB around the value; so does the oracle. */
		struct td_sig_str t = a;
		while (t.ptr && t.len && (t.ptr[0] == ' ' || t.ptr[0] == '\t')) {
			t.ptr++;
			t.len--;
		}
		while (t.ptr && t.len && (t.ptr[t.len - 1] == ' ' || t.ptr[t.len - 1] == '\t'))
			t.len--;
		bool exact = t.ptr && t.len == 71 && !memcmp(t.ptr, expect, 71);
		if (gh_secret_ok && (rc == 0) != exact)
			die(rc ? "injected GitHub signature rejected" : "GitHub forgery accepted",
			    why);
		if (strstr(why, expect + 7))
			die("reason leaks the signature", why);
	}

	for (int i = 0; i < 5; i++)
		free(field[i]);
	return 0;
}
