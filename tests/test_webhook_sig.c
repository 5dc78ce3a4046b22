/*
 * Tests for engine/webhook_sig.c. Every input (secret, body, each header) is
 * copied to the end of its own mapping followed by a PROT_NONE page, so
 * reading one byte too far crashes. GitHub and Stripe signatures are
 * computed independently with the `openssl dgst` command line.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>

#include "triggerd/webhook_sig.h"

#define GUARD_AREA (1u << 18) /* room for the largest test input */

enum { S_SECRET, S_BODY, S_HUB, S_STRIPE, S_ID, S_TS, S_SIG, S_COUNT };

static char *guard_base[S_COUNT];

static int guard_setup(void **state)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);

	for (int i = 0; i < S_COUNT; i++) {
		void *m = mmap(NULL, GUARD_AREA + page, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (m == MAP_FAILED)
			return -1;
		guard_base[i] = m;
		if (mprotect(guard_base[i] + GUARD_AREA, page, PROT_NONE))
			return -1;
	}
	return 0;
}

static int guard_teardown(void **state)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);

	for (int i = 0; i < S_COUNT; i++)
		munmap(guard_base[i], GUARD_AREA + page);
	return 0;
}

static const char *guarded(int slot, const void *s, size_t n)
{
	assert_true(n <= GUARD_AREA);
	char *p = guard_base[slot] + GUARD_AREA - n;
	memcpy(p, s, n);
	return p;
}

static struct td_sig_str hdr(int slot, const char *s)
{
	if (!s) /* absent: a garbage length must be ignored */
		return (struct td_sig_str){NULL, 999999};
	return (struct td_sig_str){guarded(slot, s, strlen(s)), strlen(s)};
}

static char why[160];

static int run_n(enum td_sig_scheme sc, const char *secret, const void *body, size_t n,
		 struct td_sig_input in)
{
	in.secret = guarded(S_SECRET, secret, strlen(secret));
	in.secret_len = strlen(secret);
	in.body = guarded(S_BODY, body, n);
	in.body_len = n;
	strcpy(why, "untouched");
	return td_sig_verify(sc, &in, why, sizeof(why));
}

static int run_gh_n(const char *secret, const char *h, const void *body, size_t n)
{
	return run_n(TD_SIG_GITHUB, secret, body, n,
		     (struct td_sig_input){.hub_signature_256 = hdr(S_HUB, h)});
}

static int run_gh(const char *secret, const char *h, const char *body)
{
	return run_gh_n(secret, h, body, strlen(body));
}

static int run_stripe(const char *secret, const char *h, const char *body, int64_t now)
{
	return run_n(TD_SIG_STRIPE, secret, body, strlen(body),
		     (struct td_sig_input){.stripe_signature = hdr(S_STRIPE, h), .now = now});
}

static int run_std(const char *secret, const char *id, const char *ts, const char *sig,
		   const char *body, int64_t now)
{
	return run_n(TD_SIG_STANDARD, secret, body, strlen(body),
		     (struct td_sig_input){.webhook_id = hdr(S_ID, id),
					   .webhook_timestamp = hdr(S_TS, ts),
					   .webhook_signature = hdr(S_SIG, sig), .now = now});
}

#define expect(rc, code, text)                  \
	do {                                    \
		assert_int_equal((rc), (code)); \
		assert_string_equal(why, (text)); \
	} while (0)

/* ---- independent HMAC: the openssl command line ---- */

static int have_openssl(void)
{
	return system("openssl version >/dev/null 2>&1") == 0;
}

/* HMAC-SHA256(key, msg) as lowercase hex, by `openssl dgst`. key must not
 * contain a single quote. */
static void openssl_hmac(const char *key, const void *msg, size_t n, char hex[65])
{
	char path[] = "/tmp/test_webhook_sig.XXXXXX", cmd[512], out[256];
	int fd = mkstemp(path);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, msg, n), (ssize_t)n);
	close(fd);
	assert_null(strchr(key, '\''));
	snprintf(cmd, sizeof(cmd), "openssl dgst -sha256 -hmac '%s' -r < %s", key, path);
	FILE *p = popen(cmd, "r");
	assert_non_null(p);
	assert_non_null(fgets(out, sizeof(out), p));
	assert_int_equal(pclose(p), 0);
	unlink(path);
	assert_true(strlen(out) > 64 && out[64] == ' ');
	memcpy(hex, out, 64);
	hex[64] = 0;
}

/* Stripe's signed payload "<t>.<body>", signed by openssl. */
static void stripe_sig(const char *key, const char *t, const char *body, char hex[65])
{
	char msg[4096];
	int n = snprintf(msg, sizeof(msg), "%s.%s", t, body);
	assert_true(n > 0 && (size_t)n < sizeof(msg));
	openssl_hmac(key, msg, (size_t)n, hex);
}

/* ---- Standard Webhooks ---- */

#define SV_SECRET "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
#define SV_ID "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk"
#define SV_TS "1649367553"
#define SV_NOW INT64_C(1649367553)
#define SV_BODY "{\"email\":\"test@example.com\",\"username\":\"test_user\"}"
#define SV_B64 "tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
#define SV_SIG "v1," SV_B64
/* Same length and alphabet, different bytes. */
#define SV_WRONG "v1,uZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="

static void std_vector(void **state)
{
	expect(run_std(SV_SECRET, SV_ID, SV_TS, SV_SIG, SV_BODY, SV_NOW), 0, "");
	/* Without the prefix the secret is bare base64. */
	expect(run_std("C2FVsBQIhrscChlQIMV+b5sSYspob7oD", SV_ID, SV_TS, SV_SIG, SV_BODY, SV_NOW),
	       0, "");
	/* Surrounding whitespace left by a lax HTTP layer is ignored. */
	expect(run_std(SV_SECRET, SV_ID, " " SV_TS "\t", "  " SV_SIG " ", SV_BODY, SV_NOW), 0, "");
}

static void std_several_signatures(void **state)
{
	static const char *const ok[] = {
		SV_WRONG " " SV_SIG,
		SV_SIG " " SV_WRONG,
		SV_WRONG " " SV_WRONG " " SV_SIG,
		"v2,whatever v1a,x " SV_SIG,
		"v1a,ignored " SV_WRONG "   " SV_SIG,
		"v0,, " SV_SIG,
	};
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
		expect(run_std(SV_SECRET, SV_ID, SV_TS, ok[i], SV_BODY, SV_NOW), 0, "");
	expect(run_std(SV_SECRET, SV_ID, SV_TS, SV_WRONG " " SV_WRONG, SV_BODY, SV_NOW),
	       TD_ESIG_MISMATCH, "no signature matched");
}

static void std_wrong_versions(void **state)
{
	/* The right bytes under any other version never count. */
	static const char *const nov1[] = {
		"v2," SV_B64, "V1," SV_B64, "v1a," SV_B64, "v," SV_B64, "v10," SV_B64,
		"v2," SV_B64 " v0," SV_B64, "v1\t," SV_B64,
	};
	for (size_t i = 0; i < sizeof(nov1) / sizeof(nov1[0]); i++)
		expect(run_std(SV_SECRET, SV_ID, SV_TS, nov1[i], SV_BODY, SV_NOW),
		       TD_ESIG_MISMATCH, "no v1 signature in webhook-signature");
	/* Not `version,value` at all. */
	static const char *const bad[] = {
		"v1=" SV_B64, "v1" SV_B64, "," SV_B64, SV_SIG " v2", SV_SIG " ,x", "v1;" SV_B64,
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		expect(run_std(SV_SECRET, SV_ID, SV_TS, bad[i], SV_BODY, SV_NOW),
		       TD_ESIG_MALFORMED, "malformed webhook-signature");
}

static void std_tolerance(void **state)
{
	expect(run_std(SV_SECRET, SV_ID, SV_TS, SV_SIG, SV_BODY, SV_NOW + 300), 0, "");
	expect(run_std(SV_SECRET, SV_ID, SV_TS, SV_SIG, SV_BODY, SV_NOW - 300), 0, "");
	expect(run_std(SV_SECRET, SV_ID, SV_TS, SV_SIG, SV_BODY, SV_NOW + 301), TD_ESIG_STALE,
	       "timestamp outside tolerance (301 s)");
	expect(run_std(SV_SECRET, SV_ID, SV_TS, SV_SIG, SV_BODY, SV_NOW - 301), TD_ESIG_STALE,
	       "timestamp outside tolerance (301 s)");
	expect(run_std(SV_SECRET, SV_ID, SV_TS, SV_SIG, SV_BODY, SV_NOW + 412), TD_ESIG_STALE,
	       "timestamp outside tolerance (412 s)");
	/* Extreme clocks: no overflow in the difference. */
	expect(run_std(SV_SECRET, SV_ID, "999999999999999999", SV_SIG, SV_BODY, INT64_MIN),
	       TD_ESIG_STALE, "timestamp outside tolerance (10223372036854775807 s)");
	expect(run_std(SV_SECRET, SV_ID, "0", SV_SIG, SV_BODY, INT64_MAX), TD_ESIG_STALE,
	       "timestamp outside tolerance (9223372036854775807 s)");
	/* Stale is reported even when the signature is also wrong: no MAC needed. */
	expect(run_std(SV_SECRET, SV_ID, SV_TS, SV_WRONG, SV_BODY, SV_NOW + 1000), TD_ESIG_STALE,
	       "timestamp outside tolerance (1000 s)");
}

static void std_tampered(void **state)
{
	/* body, id, timestamp (still within tolerance) or signature changed */
	expect(run_std(SV_SECRET, SV_ID, SV_TS, SV_SIG,
		       "{\"email\":\"test@example.com\",\"username\":\"test_user\"} ", SV_NOW),
	       TD_ESIG_MISMATCH, "no signature matched");
	expect(run_std(SV_SECRET, SV_ID, SV_TS, SV_SIG,
		       "{\"email\":\"test@example.com\",\"username\":\"test_usex\"}", SV_NOW),
	       TD_ESIG_MISMATCH, "no signature matched");
	expect(run_std(SV_SECRET, SV_ID, SV_TS, SV_SIG, "", SV_NOW), TD_ESIG_MISMATCH,
	       "no signature matched");
	expect(run_std(SV_SECRET, "msg_27UH4WbU6Z5A5EzD8u03UvzRbpK", SV_TS, SV_SIG, SV_BODY, SV_NOW),
	       TD_ESIG_MISMATCH, "no signature matched");
	expect(run_std(SV_SECRET, "msg_27UH4WbU6Z5A5EzD8u03UvzRbp", SV_TS, SV_SIG, SV_BODY, SV_NOW),
	       TD_ESIG_MISMATCH, "no signature matched");
	expect(run_std(SV_SECRET, SV_ID, "1649367554", SV_SIG, SV_BODY, SV_NOW), TD_ESIG_MISMATCH,
	       "no signature matched");
	/* Moving the '.' between id and timestamp must not verify. */
	expect(run_std(SV_SECRET, SV_ID ".1", "649367553", SV_SIG, SV_BODY, 649367553),
	       TD_ESIG_MISMATCH, "no signature matched");
	expect(run_std(SV_SECRET, SV_ID, SV_TS, SV_WRONG, SV_BODY, SV_NOW), TD_ESIG_MISMATCH,
	       "no signature matched");
	/* Another key. */
	expect(run_std("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", SV_ID, SV_TS, SV_SIG, SV_BODY,
		       SV_NOW),
	       TD_ESIG_MISMATCH, "no signature matched");
}

static void std_missing(void **state)
{
	expect(run_std(SV_SECRET, NULL, SV_TS, SV_SIG, SV_BODY, SV_NOW), TD_ESIG_MISSING,
	       "missing webhook-id");
	expect(run_std(SV_SECRET, SV_ID, NULL, SV_SIG, SV_BODY, SV_NOW), TD_ESIG_MISSING,
	       "missing webhook-timestamp");
	expect(run_std(SV_SECRET, SV_ID, SV_TS, NULL, SV_BODY, SV_NOW), TD_ESIG_MISSING,
	       "missing webhook-signature");
	expect(run_std(SV_SECRET, NULL, NULL, NULL, SV_BODY, SV_NOW), TD_ESIG_MISSING,
	       "missing webhook-id");
}

static void std_malformed(void **state)
{
	static const char *const ts[] = {
		"", " ", "abc", "-1", "+1649367553", "01649367553", "1649367553x", "1649367553.0",
		"16493 67553", "1000000000000000000", "0x62500000", "1649367553\n",
	};
	for (size_t i = 0; i < sizeof(ts) / sizeof(ts[0]); i++)
		expect(run_std(SV_SECRET, SV_ID, ts[i], SV_SIG, SV_BODY, SV_NOW), TD_ESIG_MALFORMED,
		       "malformed webhook-timestamp");
	static const char *const sig[] = {"", "   ", "v1", "v1 v1", ",", ("v1\t" SV_B64)};
	for (size_t i = 0; i < sizeof(sig) / sizeof(sig[0]); i++)
		expect(run_std(SV_SECRET, SV_ID, SV_TS, sig[i], SV_BODY, SV_NOW), TD_ESIG_MALFORMED,
		       "malformed webhook-signature");
	static const char *const val[] = {
		"v1,",
		"v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw",    /* unpadded */
		"v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw==",  /* too long */
		"v1,tZ1I4_hDygAJgO5TYxiSd6Sd0kDW6hPenDe-bTa3Kkw=",   /* url-safe */
		"v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kk==",   /* early pad */
		"v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=,x", /* trailing junk */
		"v1,b54a48e3f843ca000980ee53631892" /* hex */,
		SV_SIG " v1,short=",
	};
	for (size_t i = 0; i < sizeof(val) / sizeof(val[0]); i++)
		expect(run_std(SV_SECRET, SV_ID, SV_TS, val[i], SV_BODY, SV_NOW), TD_ESIG_MALFORMED,
		       "malformed webhook-signature: bad v1 value");
	expect(run_std(SV_SECRET, "", SV_TS, SV_SIG, SV_BODY, SV_NOW), TD_ESIG_MALFORMED,
	       "malformed webhook-id: empty");
	expect(run_std(SV_SECRET, "  ", SV_TS, SV_SIG, SV_BODY, SV_NOW), TD_ESIG_MALFORMED,
	       "malformed webhook-id: empty");
}

static void std_bad_secret(void **state)
{
	static const char *const bad[] = {
		"whsec_", "whsec_!!!!", "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oDA", /* 4n+1 */
		"whsec_C2FVsBQI hrscChlQIMV+b5sSYspob7oD", "whsec_C2FV===", "whsec_=", "==",
	};
	const char *msg = "secret is not a whsec_ base64 key of 1 to 512 bytes";

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		expect(run_std(bad[i], SV_ID, SV_TS, SV_SIG, SV_BODY, SV_NOW), TD_ESIG_SECRET, msg);
	/* 513 bytes decoded is one too many; 512 is fine (then a mismatch). */
	char big[8 + 700];
	strcpy(big, "whsec_");
	memset(big + 6, 'A', 684); /* 684 symbols = 513 bytes */
	big[6 + 684] = 0;
	expect(run_std(big, SV_ID, SV_TS, SV_SIG, SV_BODY, SV_NOW), TD_ESIG_SECRET, msg);
	big[6 + 683] = 0; /* 683 symbols, 4n+3: 512 bytes */
	expect(run_std(big, SV_ID, SV_TS, SV_SIG, SV_BODY, SV_NOW), TD_ESIG_MISMATCH,
	       "no signature matched");
	expect(run_std("", SV_ID, SV_TS, SV_SIG, SV_BODY, SV_NOW), TD_ESIG_SECRET, "empty secret");
}

/* ---- GitHub ---- */

#define GH_KEY "It's a Secret to Everybody"
#define GH_KEY_Q "its-a-secret-to-everybody"

static void gh_openssl(void **state)
{
	if (!have_openssl())
		skip();
	static char big[100000];
	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (char)(i * 7 + 3);
	struct {
		const char *key;
		const void *body;
		size_t n;
	} c[] = {
		{GH_KEY_Q, "Hello, World!", 13},
		{GH_KEY_Q, "", 0},
		{"k", "{\"action\":\"opened\",\"number\":1}", 30},
		{"k", "a\0b\r\n\xff", 6},
		{"another secret with spaces", big, sizeof(big)},
	};
	char hex[65], h[80];

	for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
		openssl_hmac(c[i].key, c[i].body, c[i].n, hex);
		snprintf(h, sizeof(h), "sha256=%s", hex);
		assert_int_equal(run_gh_n(c[i].key, h, c[i].body, c[i].n), 0);
		assert_string_equal(why, "");
		if (c[i].n) { /* one byte short */
			assert_int_equal(run_gh_n(c[i].key, h, c[i].body, c[i].n - 1),
					 TD_ESIG_MISMATCH);
			assert_string_equal(why, "no signature matched");
		}
		/* another key */
		assert_int_equal(run_gh_n("x", h, c[i].body, c[i].n), TD_ESIG_MISMATCH);
		/* every flipped digit */
		for (size_t d = 7; d < 71; d++) {
			char save = h[d];
			h[d] = save == '0' ? '1' : '0';
			assert_int_equal(run_gh_n(c[i].key, h, c[i].body, c[i].n), TD_ESIG_MISMATCH);
			h[d] = save;
		}
	}
	/* GitHub's documented example (key with a quote, so not via the shell). */
	expect(run_gh(GH_KEY,
		      "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
		      "Hello, World!"),
	       0, "");
}

static void gh_malformed(void **state)
{
	static const char hex[] = "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
	static const char *const bad[] = {
		"",
		"sha256=",
		"sha256",
		hex,
		"sha1=757107ea0eb2509fc211221cce984b8a37570b6d",
		"SHA256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
		"sha256:757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
		"sha256 =757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
		"sha256=757107EA0EB2509FC211221CCE984B8A37570B6D7586C22C46F4379C8B043E17",
		"sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e1",
		"sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e170",
		"sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e1g",
		"sha256= 757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
		"sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17,x",
		"sha256=757107ea0eb2509fc211221cce984b8a 37570b6d7586c22c46f4379c8b043e17",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		expect(run_gh(GH_KEY, bad[i], "Hello, World!"), TD_ESIG_MALFORMED,
		       "malformed X-Hub-Signature-256");
	expect(run_gh(GH_KEY, NULL, "Hello, World!"), TD_ESIG_MISSING,
	       "missing X-Hub-Signature-256");
	expect(run_gh("", "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
		      "Hello, World!"),
	       TD_ESIG_SECRET, "empty secret");
}

/* ---- Stripe ---- */

#define ST_KEY "whsec_test_secret_used_verbatim"
#define ST_T "1700000000"
#define ST_NOW INT64_C(1700000000)
#define ST_BODY "{\"id\":\"evt_1\",\"object\":\"event\"}"
#define ZERO64 "0000000000000000000000000000000000000000000000000000000000000000"

static void stripe_openssl(void **state)
{
	if (!have_openssl())
		skip();
	char hex[65], h[512], other[65];

	stripe_sig(ST_KEY, ST_T, ST_BODY, hex);
	stripe_sig(ST_KEY, ST_T, "other", other);
	/* Header layouts around the signature: prefix, then suffix. */
	static const char *const fmt[][2] = {
		{"t=" ST_T ",v1=", ""},
		{"v1=", ",t=" ST_T},
		{"t=" ST_T ",v1=" ZERO64 ",v1=", ""},
		{"t=" ST_T ",v1=", ",v1=" ZERO64},
		{"t=" ST_T ",v1=", ",v0=6ffbb59b2300aae63f272406069a9788598b792a944a07aba816edb039989a39"},
		{"t=" ST_T ",v0=x,foo=bar,v1=", ",scheme=,v2="},
		{" t=" ST_T " , v1=", " "},
	};
	for (size_t i = 0; i < sizeof(fmt) / sizeof(fmt[0]); i++) {
		snprintf(h, sizeof(h), "%s%s%s", fmt[i][0], hex, fmt[i][1]);
		expect(run_stripe(ST_KEY, h, ST_BODY, ST_NOW), 0, "");
		/* tolerance, both directions */
		expect(run_stripe(ST_KEY, h, ST_BODY, ST_NOW + 300), 0, "");
		expect(run_stripe(ST_KEY, h, ST_BODY, ST_NOW - 300), 0, "");
		expect(run_stripe(ST_KEY, h, ST_BODY, ST_NOW + 301), TD_ESIG_STALE,
		       "timestamp outside tolerance (301 s)");
		expect(run_stripe(ST_KEY, h, ST_BODY, ST_NOW - 301), TD_ESIG_STALE,
		       "timestamp outside tolerance (301 s)");
		/* tampered body, other key, key without its whsec_ prefix */
		expect(run_stripe(ST_KEY, h, ST_BODY " ", ST_NOW), TD_ESIG_MISMATCH,
		       "no signature matched");
		expect(run_stripe(ST_KEY "x", h, ST_BODY, ST_NOW), TD_ESIG_MISMATCH,
		       "no signature matched");
		expect(run_stripe(&ST_KEY[6], h, ST_BODY, ST_NOW), TD_ESIG_MISMATCH,
		       "no signature matched");
	}
	/* tampered timestamp: the signature covers t */
	snprintf(h, sizeof(h), "t=1700000001,v1=%s", hex);
	expect(run_stripe(ST_KEY, h, ST_BODY, ST_NOW), TD_ESIG_MISMATCH, "no signature matched");
	/* a v1 for another payload */
	snprintf(h, sizeof(h), "t=" ST_T ",v1=%s", other);
	expect(run_stripe(ST_KEY, h, ST_BODY, ST_NOW), TD_ESIG_MISMATCH, "no signature matched");
	expect(run_stripe(ST_KEY, h, "other", ST_NOW), 0, "");
	/* the right digest under v0 only is not accepted */
	snprintf(h, sizeof(h), "t=" ST_T ",v0=%s", hex);
	expect(run_stripe(ST_KEY, h, ST_BODY, ST_NOW), TD_ESIG_MISMATCH,
	       "no v1 signature in Stripe-Signature");
	/* empty body */
	stripe_sig(ST_KEY, "0", "", hex);
	snprintf(h, sizeof(h), "t=0,v1=%s", hex);
	expect(run_stripe(ST_KEY, h, "", 300), 0, "");
}

static void stripe_malformed(void **state)
{
	static const struct {
		const char *h, *why;
	} c[] = {
		{"", "malformed Stripe-Signature: item is not key=value"},
		{"  ", "malformed Stripe-Signature: item is not key=value"},
		{"t", "malformed Stripe-Signature: item is not key=value"},
		{"t=" ST_T ",,v1=" ZERO64, "malformed Stripe-Signature: item is not key=value"},
		{"t=" ST_T ",v1=" ZERO64 ",", "malformed Stripe-Signature: item is not key=value"},
		{",t=" ST_T ",v1=" ZERO64, "malformed Stripe-Signature: item is not key=value"},
		{"t=" ST_T ",=x,v1=" ZERO64, "malformed Stripe-Signature: item is not key=value"},
		{"t=" ST_T ";v1=" ZERO64, "malformed Stripe-Signature: bad t"},
		{"t=" ST_T " v1=" ZERO64, "malformed Stripe-Signature: bad t"},
		{"v1=" ZERO64, "malformed Stripe-Signature: no t"},
		{"T=" ST_T ",v1=" ZERO64, "malformed Stripe-Signature: no t"},
		{"t=,v1=" ZERO64, "malformed Stripe-Signature: bad t"},
		{"t=-1,v1=" ZERO64, "malformed Stripe-Signature: bad t"},
		{"t=01700000000,v1=" ZERO64, "malformed Stripe-Signature: bad t"},
		{"t=1e9,v1=" ZERO64, "malformed Stripe-Signature: bad t"},
		{"t=1000000000000000000,v1=" ZERO64, "malformed Stripe-Signature: bad t"},
		{"t=" ST_T ",t=" ST_T ",v1=" ZERO64, "malformed Stripe-Signature: more than one t"},
		{"t=" ST_T ",v1=", "malformed Stripe-Signature: bad v1 value"},
		{"t=" ST_T ",v1=abc", "malformed Stripe-Signature: bad v1 value"},
		{"t=" ST_T ",v1=" ZERO64 "0", "malformed Stripe-Signature: bad v1 value"},
		{"t=" ST_T ",v1=" ZERO64 ",v1=" "000000000000000000000000000000000000000000000000000000000000000G",
		 "malformed Stripe-Signature: bad v1 value"},
		{"t=" ST_T ",v1=" "ABCDEF0000000000000000000000000000000000000000000000000000000000",
		 "malformed Stripe-Signature: bad v1 value"},
		{"t=" ST_T ",v1==" ZERO64, "malformed Stripe-Signature: bad v1 value"},
	};
	for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++)
		expect(run_stripe(ST_KEY, c[i].h, ST_BODY, ST_NOW), TD_ESIG_MALFORMED, c[i].why);
	expect(run_stripe(ST_KEY, "t=" ST_T, ST_BODY, ST_NOW), TD_ESIG_MISMATCH,
	       "no v1 signature in Stripe-Signature");
	expect(run_stripe(ST_KEY, "t=" ST_T ",v0=" ZERO64 ",v2=x", ST_BODY, ST_NOW),
	       TD_ESIG_MISMATCH, "no v1 signature in Stripe-Signature");
	expect(run_stripe(ST_KEY, NULL, ST_BODY, ST_NOW), TD_ESIG_MISSING,
	       "missing Stripe-Signature");
	expect(run_stripe(ST_KEY, "t=" ST_T ",v1=" ZERO64, ST_BODY, ST_NOW + 412), TD_ESIG_STALE,
	       "timestamp outside tolerance (412 s)");
	expect(run_stripe(ST_KEY, "t=" ST_T ",v1=" ZERO64, ST_BODY, ST_NOW), TD_ESIG_MISMATCH,
	       "no signature matched");
}

/* ---- all schemes ---- */

/* Every prefix of a valid header, ending at the guard page: no over-read,
 * and only the complete value verifies. */
static void prefixes_guarded(void **state)
{
	static const char gh[] =
		"sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
	char buf[200];

	for (size_t n = 0; n <= strlen(gh); n++) {
		memcpy(buf, gh, n);
		buf[n] = 0;
		assert_int_equal(run_gh(GH_KEY, buf, "Hello, World!") == 0, n == strlen(gh));
	}
	const char *sig = SV_WRONG "  " SV_SIG " v2,x";
	size_t full = strlen(SV_WRONG "  " SV_SIG);
	for (size_t n = 0; n <= strlen(sig); n++) {
		memcpy(buf, sig, n);
		buf[n] = 0;
		int rc = run_std(SV_SECRET, SV_ID, SV_TS, buf, SV_BODY, SV_NOW);
		assert_int_equal(rc == 0, n >= full && n != full + 2 && n != full + 3);
	}
	for (size_t n = 0; n <= strlen(SV_TS); n++) {
		memcpy(buf, SV_TS, n);
		buf[n] = 0;
		int rc = run_std(SV_SECRET, SV_ID, buf, SV_SIG, SV_BODY, SV_NOW);
		assert_int_equal(rc, n == 0 ? TD_ESIG_MALFORMED
				 : n == strlen(SV_TS) ? 0 : TD_ESIG_STALE);
	}
	for (size_t n = 0; n <= strlen(SV_ID); n++) {
		memcpy(buf, SV_ID, n);
		buf[n] = 0;
		int rc = run_std(SV_SECRET, buf, SV_TS, SV_SIG, SV_BODY, SV_NOW);
		assert_int_equal(rc, n == 0 ? TD_ESIG_MALFORMED
				 : n == strlen(SV_ID) ? 0 : TD_ESIG_MISMATCH);
	}
	const char *st = "t=" ST_T ",v0=ab,v1=" ZERO64;
	for (size_t n = 0; n <= strlen(st); n++) {
		memcpy(buf, st, n);
		buf[n] = 0;
		int rc = run_stripe(ST_KEY, buf, ST_BODY, ST_NOW);
		assert_true(rc == TD_ESIG_MALFORMED || rc == TD_ESIG_MISMATCH ||
			    rc == TD_ESIG_STALE);
	}
	/* Secrets at the guard page too, of every length. */
	const char *sec = SV_SECRET;
	for (size_t n = 0; n <= strlen(sec); n++) {
		memcpy(buf, sec, n);
		buf[n] = 0;
		int rc = run_std(buf, SV_ID, SV_TS, SV_SIG, SV_BODY, SV_NOW);
		assert_int_equal(rc == 0, n == strlen(sec));
	}
}

static void why_is_safe(void **state)
{
	struct td_sig_input in = {
		.secret = SV_SECRET,
		.secret_len = strlen(SV_SECRET),
		.body = SV_BODY,
		.body_len = strlen(SV_BODY),
		.webhook_id = {SV_ID, strlen(SV_ID)},
		.webhook_timestamp = {SV_TS, strlen(SV_TS)},
		.webhook_signature = {SV_WRONG, strlen(SV_WRONG)},
		.now = SV_NOW,
	};
	char small[8];

	/* no reason buffer at all, or a tiny one: truncated, terminated */
	assert_int_equal(td_sig_verify(TD_SIG_STANDARD, &in, NULL, 0), TD_ESIG_MISMATCH);
	assert_int_equal(td_sig_verify(TD_SIG_STANDARD, &in, small, 0), TD_ESIG_MISMATCH);
	assert_int_equal(td_sig_verify(TD_SIG_STANDARD, &in, small, sizeof(small)),
			 TD_ESIG_MISMATCH);
	assert_string_equal(small, "no sign");
	assert_int_equal(td_sig_verify(TD_SIG_STANDARD, &in, small, 1), TD_ESIG_MISMATCH);
	assert_string_equal(small, "");
	/* the reason never carries the expected signature nor the secret */
	assert_int_equal(td_sig_verify(TD_SIG_STANDARD, &in, why, sizeof(why)), TD_ESIG_MISMATCH);
	assert_null(strstr(why, SV_B64));
	assert_null(strstr(why, "C2FV"));
	in.webhook_signature = (struct td_sig_str){SV_SIG, strlen(SV_SIG)};
	assert_int_equal(td_sig_verify(TD_SIG_STANDARD, &in, why, sizeof(why)), 0);
	assert_string_equal(why, "");
}

static void bad_arguments(void **state)
{
	struct td_sig_input in = {.secret = "k", .secret_len = 1, .body = NULL, .body_len = 0,
				  .hub_signature_256 = {"sha256=" ZERO64, 71}};

	assert_int_equal(td_sig_verify(TD_SIG_GITHUB, NULL, why, sizeof(why)), -EINVAL);
	assert_int_equal(td_sig_verify((enum td_sig_scheme)0, &in, why, sizeof(why)), -EINVAL);
	assert_string_equal(why, "unknown signature scheme");
	assert_int_equal(td_sig_verify((enum td_sig_scheme)4, &in, why, sizeof(why)), -EINVAL);
	/* NULL body of length 0 is an empty body */
	assert_int_equal(td_sig_verify(TD_SIG_GITHUB, &in, why, sizeof(why)), TD_ESIG_MISMATCH);
	in.body_len = 1;
	assert_int_equal(td_sig_verify(TD_SIG_GITHUB, &in, why, sizeof(why)), -EINVAL);
	in.body_len = 0;
	in.secret = NULL;
	assert_int_equal(td_sig_verify(TD_SIG_GITHUB, &in, why, sizeof(why)), TD_ESIG_SECRET);
	assert_string_equal(why, "empty secret");
}

static void scheme_names(void **state)
{
	enum td_sig_scheme s = TD_SIG_GITHUB;

	assert_int_equal(td_sig_scheme_parse("stripe", 6, &s), 0);
	assert_int_equal(s, TD_SIG_STRIPE);
	assert_int_equal(td_sig_scheme_parse("standard", 8, &s), 0);
	assert_int_equal(s, TD_SIG_STANDARD);
	/* not NUL-terminated: length decides */
	assert_int_equal(td_sig_scheme_parse(guarded(S_ID, "github", 6), 6, &s), 0);
	assert_int_equal(s, TD_SIG_GITHUB);
	static const char *const bad[] = {"", "GitHub", "git", "githubx", "standard ", "svix",
					  "standard-webhooks"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		const char *p = guarded(S_ID, bad[i], strlen(bad[i]));
		assert_int_equal(td_sig_scheme_parse(p, strlen(bad[i]), &s), -EINVAL);
		assert_int_equal(s, TD_SIG_GITHUB);
	}
	assert_int_equal(td_sig_scheme_parse("stripe", 3, &s), -EINVAL);
	assert_int_equal(td_sig_scheme_parse(NULL, 0, &s), -EINVAL);
	for (int i = TD_SIG_GITHUB; i <= TD_SIG_STANDARD; i++) {
		const char *n = td_sig_scheme_name((enum td_sig_scheme)i);
		assert_non_null(n);
		assert_int_equal(td_sig_scheme_parse(n, strlen(n), &s), 0);
		assert_int_equal(s, i);
	}
	assert_null(td_sig_scheme_name((enum td_sig_scheme)0));
	assert_null(td_sig_scheme_name((enum td_sig_scheme)4));
	assert_non_null(td_sig_strerror(TD_ESIG_STALE));
	assert_null(td_sig_strerror(0));
	assert_null(td_sig_strerror(-EINVAL));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(std_vector),
		cmocka_unit_test(std_several_signatures),
		cmocka_unit_test(std_wrong_versions),
		cmocka_unit_test(std_tolerance),
		cmocka_unit_test(std_tampered),
		cmocka_unit_test(std_missing),
		cmocka_unit_test(std_malformed),
		cmocka_unit_test(std_bad_secret),
		cmocka_unit_test(gh_openssl),
		cmocka_unit_test(gh_malformed),
		cmocka_unit_test(stripe_openssl),
		cmocka_unit_test(stripe_malformed),
		cmocka_unit_test(prefixes_guarded),
		cmocka_unit_test(why_is_safe),
		cmocka_unit_test(bad_arguments),
		cmocka_unit_test(scheme_names),
	};
	return cmocka_run_group_tests(tests, guard_setup, guard_teardown);
}
