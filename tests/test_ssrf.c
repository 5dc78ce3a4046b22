/*
 * Tests for engine/ssrf.c. Rule and host text for the over-read tests is
 * copied to the end of a mapping followed by a PROT_NONE page, so reading
 * one byte past its NUL crashes.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "triggerd/ssrf.h"
#include "triggerd/triggerd.h"

/* cmocka's test signature; meson builds with -Wno-unused-parameter too */
#pragma GCC diagnostic ignored "-Wunused-parameter"

#include "guard.h"

/* A guard with the defaults plus two flag values (NULL: flag not given). */
static struct td_ssrf *guard(const char *allow, const char *deny)
{
	struct td_ssrf *g;
	char err[256];
	assert_int_equal(td_ssrf_new(&g), 0);
	if (allow && td_ssrf_add_list(g, true, allow, err, sizeof(err)))
		fail_msg("allow '%s': %s", allow, err);
	if (deny && td_ssrf_add_list(g, false, deny, err, sizeof(err)))
		fail_msg("deny '%s': %s", deny, err);
	return g;
}

union sa {
	struct sockaddr sa;
	struct sockaddr_in in;
	struct sockaddr_in6 in6;
};

static socklen_t make_sa(union sa *u, const char *addr)
{
	memset(u, 0, sizeof(*u));
	if (strchr(addr, ':')) {
		u->in6.sin6_family = AF_INET6;
		u->in6.sin6_port = htons(80);
		if (inet_pton(AF_INET6, addr, &u->in6.sin6_addr) != 1)
			fail_msg("bad test address %s", addr);
		return sizeof(u->in6);
	}
	u->in.sin_family = AF_INET;
	u->in.sin_port = htons(80);
	if (inet_pton(AF_INET, addr, &u->in.sin_addr) != 1)
		fail_msg("bad test address %s", addr);
	return sizeof(u->in);
}

/* @want: NULL = allowed, else denied with @want in `why`. */
static void expect_result(const char *what, int rc, const char *why, const char *want)
{
	if (!want) {
		if (rc)
			fail_msg("%s: denied (%s), expected allowed", what, why);
		return;
	}
	if (rc != -EACCES)
		fail_msg("%s: rc %d, expected -EACCES with '%s'", what, rc, want);
	if (!strstr(why, want))
		fail_msg("%s: why '%s' lacks '%s'", what, why, want);
}

static void expect_host(const struct td_ssrf *g, const char *host, const char *want)
{
	char why[512] = "";
	expect_result(host ? host : "(null)", td_ssrf_check_host(g, host, why, sizeof(why)),
		      why, want);
}

/* The connect-time check, with (@host) and without the name. */
static void expect_conn(const struct td_ssrf *g, const char *host, const char *addr,
			const char *want)
{
	char why[512] = "", what[300];
	union sa u;
	socklen_t len = make_sa(&u, addr);
	snprintf(what, sizeof(what), "%s@%s", host ? host : "-", addr);
	expect_result(what, td_ssrf_check_connect(g, host, &u.sa, len, why, sizeof(why)),
		      why, want);
}

static void expect_addr(const struct td_ssrf *g, const char *addr, const char *want)
{
	char why[512] = "";
	union sa u;
	socklen_t len = make_sa(&u, addr);
	expect_result(addr, td_ssrf_check_addr(g, &u.sa, len, why, sizeof(why)), why, want);
}

/* An address literal gets the same answer as host text and at connect time. */
static void expect_ip(const struct td_ssrf *g, const char *addr, const char *want)
{
	char br[80];
	expect_addr(g, addr, want);
	expect_host(g, addr, want);
	if (strchr(addr, ':')) {
		snprintf(br, sizeof(br), "[%s]", addr);
		expect_host(g, br, want);
	}
}

static void expect_add_error(bool allow, const char *rule, const char *msg)
{
	struct td_ssrf *g = guard(NULL, NULL);
	char err[256] = "untouched";
	int rc = td_ssrf_add(g, allow, rule, err, sizeof(err));
	if (rc != -EINVAL)
		fail_msg("rule '%s': rc %d, expected -EINVAL", rule, rc);
	if (strcmp(err, msg))
		fail_msg("rule '%s': error '%s', expected '%s'", rule, err, msg);
	/* a failed add leaves the guard as it was: not in allowlist mode */
	expect_host(g, "example.com", NULL);
	expect_ip(g, "8.8.8.8", NULL);
	td_ssrf_free(g);
}

/* ---- defaults ---------------------------------------------------------- */

static void test_default_messages(void **state)
{
	struct td_ssrf *g = guard(NULL, NULL);
	char why[256];
	union sa u;
	socklen_t len = make_sa(&u, "169.254.1.1");
	assert_int_equal(td_ssrf_check_addr(g, &u.sa, len, why, sizeof(why)), -EACCES);
	assert_string_equal(why, "169.254.1.1: default deny: link-local 169.254.0.0/16");
	assert_int_equal(td_ssrf_check_host(g, "169.254.169.254", why, sizeof(why)), -EACCES);
	assert_string_equal(why, "169.254.169.254: default deny: cloud metadata "
				 "(AWS, GCP, Azure, OpenStack, Oracle) 169.254.169.254/32");
	assert_int_equal(td_ssrf_check_host(g, "Metadata.Google.Internal.", why, sizeof(why)),
			 -EACCES);
	assert_string_equal(why, "Metadata.Google.Internal.: default deny: cloud metadata "
				 "host metadata.google.internal");
	td_ssrf_free(g);
}

/* Every default rule: addresses at its edges hit it, the neighbours do not. */
static void test_default_ranges(void **state)
{
	static const struct {
		const char *in, *rule;
	} hit[] = {
		{ "0.0.0.0", "this-network (reaches the local host) 0.0.0.0/8" },
		{ "0.255.255.255", "0.0.0.0/8" },
		{ "::", "unspecified address (reaches the local host) ::/128" },
		{ "169.254.0.0", "link-local 169.254.0.0/16" },
		{ "169.254.255.255", "link-local 169.254.0.0/16" },
		{ "fe80::", "link-local fe80::/10" },
		{ "febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "link-local fe80::/10" },
		{ "fe80::a9fe:a9fe", "link-local fe80::/10" }, /* OpenStack */
		{ "169.254.169.254", "cloud metadata (AWS, GCP, Azure, OpenStack, Oracle) 169.254.169.254/32" },
		{ "169.254.170.2", "AWS ECS task metadata 169.254.170.2/32" },
		{ "169.254.170.23", "AWS EKS pod identity 169.254.170.23/32" },
		{ "fd00:ec2::23", "AWS EKS pod identity fd00:ec2::23/128" },
		{ "fd00:ec2::254", "AWS IPv6 metadata fd00:ec2::254/128" },
		{ "fd20:ce::254", "GCP IPv6 metadata fd20:ce::254/128" },
		{ "100.100.100.200", "Alibaba Cloud metadata 100.100.100.200/32" },
		{ "168.63.129.16", "Azure WireServer 168.63.129.16/32" },
	};
	static const char *const miss[] = {
		"1.0.0.0", "::1", "::2", "169.253.255.255", "169.255.0.0",
		"fe7f:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "fec0::",
		"fd00:ec2::22", "fd00:ec2::24", "fd00:ec2::253", "fd00:ec2::255",
		"fd20:ce::253", "fd20:ce::255", "100.100.100.199", "100.100.100.201",
		"168.63.129.15", "168.63.129.17",
	};
	struct td_ssrf *g = guard(NULL, NULL);
	for (size_t i = 0; i < TD_ARRAY_LEN(hit); i++)
		expect_ip(g, hit[i].in, hit[i].rule);
	for (size_t i = 0; i < TD_ARRAY_LEN(miss); i++)
		expect_ip(g, miss[i], NULL);
	td_ssrf_free(g);

	/* the /32 metadata rules, with link-local lifted around them */
	g = guard("0.0.0.0/0,169.254.0.0/16", NULL);
	static const char *const v4meta[] = { "169.254.169.254", "169.254.170.2",
					      "169.254.170.23" };
	for (size_t i = 0; i < TD_ARRAY_LEN(v4meta); i++) {
		struct in_addr a;
		char lo[INET_ADDRSTRLEN], hi[INET_ADDRSTRLEN];
		inet_pton(AF_INET, v4meta[i], &a);
		uint32_t h = ntohl(a.s_addr);
		a.s_addr = htonl(h - 1);
		inet_ntop(AF_INET, &a, lo, sizeof(lo));
		a.s_addr = htonl(h + 1);
		inet_ntop(AF_INET, &a, hi, sizeof(hi));
		expect_ip(g, v4meta[i], "/32");
		expect_ip(g, lo, NULL);
		expect_ip(g, hi, NULL);
	}
	td_ssrf_free(g);
}

static void test_default_names(void **state)
{
	struct td_ssrf *g = guard(NULL, NULL);
	expect_host(g, "metadata.google.internal", "default deny: cloud metadata host metadata.google.internal");
	expect_host(g, "METADATA.google.INTERNAL.", "metadata.google.internal");
	expect_host(g, "metadata", "default deny: cloud metadata host metadata");
	expect_host(g, "Metadata.", "default deny: cloud metadata host metadata");
	static const char *const near[] = {
		"metadata.google.internal.evil.example", "xmetadata.google.internal",
		"metadata.google", "google.internal", "metadatax", "metadata.example.com",
		"a.metadata",
	};
	for (size_t i = 0; i < TD_ARRAY_LEN(near); i++)
		expect_host(g, near[i], NULL);
	/* at connect time the name rule applies with any address */
	expect_conn(g, "metadata", "10.0.0.1", "cloud metadata host metadata");
	td_ssrf_free(g);
}

/* Loopback and private ranges: allowed unless denied (documented default). */
static void test_local_allowed_by_default(void **state)
{
	static const char *const local[] = {
		"127.0.0.1", "127.255.255.254", "::1", "10.1.2.3", "172.16.0.1",
		"192.168.1.1", "100.64.0.1", "fd00::1", "fc00::1",
	};
	struct td_ssrf *g = guard(NULL, NULL);
	for (size_t i = 0; i < TD_ARRAY_LEN(local); i++)
		expect_ip(g, local[i], NULL);
	expect_host(g, "localhost", NULL);
	td_ssrf_free(g);

	g = guard(NULL, "127.0.0.0/8,::1,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,"
			"100.64.0.0/10,fc00::/7");
	for (size_t i = 0; i < TD_ARRAY_LEN(local); i++)
		expect_ip(g, local[i], "deny rule");
	expect_conn(g, "localhost", "127.0.0.1", "localhost (127.0.0.1): deny rule 127.0.0.0/8");
	expect_ip(g, "8.8.8.8", NULL);
	td_ssrf_free(g);
}

/* ---- address forms ----------------------------------------------------- */

static void test_mapped(void **state)
{
	struct td_ssrf *g = guard(NULL, "10.0.0.0/8,::/0");
	char why[256];
	union sa u;
	socklen_t len = make_sa(&u, "::ffff:169.254.169.254");

	assert_int_equal(td_ssrf_check_addr(g, &u.sa, len, why, sizeof(why)), -EACCES);
	assert_string_equal(why, "::ffff:169.254.169.254 (= 169.254.169.254): default deny: "
				 "cloud metadata (AWS, GCP, Azure, OpenStack, Oracle) "
				 "169.254.169.254/32");
	expect_ip(g, "::ffff:a9fe:a9fe", "169.254.169.254/32");
	expect_ip(g, "::ffff:169.254.1.1", "link-local 169.254.0.0/16");
	expect_ip(g, "::ffff:0.0.0.0", "0.0.0.0/8");
	expect_ip(g, "::ffff:10.1.2.3", "deny rule 10.0.0.0/8");
	expect_host(g, "[::FFFF:A01:203]", "(= 10.1.2.3): deny rule 10.0.0.0/8");
	/* NAT64's well-known prefix is IPv4 too; other embeddings are IPv6 */
	expect_ip(g, "64:ff9b::a9fe:a9fe", "169.254.169.254/32");
	expect_ip(g, "64:ff9b::10.9.9.9", "deny rule 10.0.0.0/8");
	expect_ip(g, "64:ff9b:1::a9fe:a9fe", "deny rule ::/0");
	expect_ip(g, "::169.254.169.254", "deny rule ::/0");
	/* an IPv6 rule, even ::/0, never matches the mapped forms */
	expect_ip(g, "::ffff:8.8.8.8", NULL);
	expect_ip(g, "64:ff9b::8.8.8.8", NULL);
	expect_ip(g, "2001:db8::1", "deny rule ::/0");
	td_ssrf_free(g);

	g = guard("10.0.0.0/8", NULL);
	expect_ip(g, "::ffff:10.0.0.1", NULL);
	expect_ip(g, "::ffff:11.0.0.1", "not on the allow list");
	td_ssrf_free(g);
	g = guard("169.254.169.254", NULL);
	expect_ip(g, "::ffff:169.254.169.254", NULL);
	td_ssrf_free(g);
}

static void test_host_literals(void **state)
{
	struct td_ssrf *g = guard(NULL, NULL);
	expect_host(g, "[::1]", NULL);
	expect_host(g, "[2001:db8::1]", NULL);
	expect_host(g, "[fe80::1]", "link-local fe80::/10");
	expect_host(g, "fe80::1", "link-local fe80::/10");
	expect_host(g, "[fe80::1%25eth0]", "link-local fe80::/10");
	expect_host(g, "[FE80::1%eth0]", "link-local fe80::/10");
	expect_host(g, "[fd00:ec2::254]", "fd00:ec2::254/128");
	expect_host(g, "[fd00:EC2:0::254]", "fd00:ec2::254/128");
	expect_host(g, "[::ffff:127.0.0.1]", NULL);
	/* malformed literals are denied, never passed on as names */
	expect_host(g, "[169.254.169.254]", "not an IPv6 address");
	expect_host(g, "[::1", "not an IPv6 address");
	expect_host(g, "[]", "not an IPv6 address");
	expect_host(g, "[", "not an IPv6 address");
	expect_host(g, "[fe80::1%]", "not an IPv6 address");
	expect_host(g, "[fe80::1%25]", "link-local fe80::/10"); /* zone "25" */
	expect_host(g, "[fe80::1%e/x]", "not an IPv6 address");
	expect_host(g, "::1]", "no port");
	expect_host(g, "example.com:80", "invalid character ':' (the host only, no port)");
	expect_host(g, "1:2:3:4:5:6:7:8:9", "no port");
	td_ssrf_free(g);
}

/*
 * The decision for numeric host text: canonicalise with inet_aton semantics
 * (as libcurl and glibc read it). glibc's inet_aton is the reference: every
 * form it accepts must be checked as that address.
 */
static void test_numeric_ipv4(void **state)
{
	static const char *const forms[] = {
		"127.0.0.1", "127.1", "127.0.1", "0x7f.1", "0x7F.0.0.1", "0177.0.0.1",
		"0177.1", "2130706433", "017700000001", "0x7f000001", "0X7F000001",
		"0x7f.0x0.0x0.0x1", "0177.0000.0000.0001", "127.000.0.1",
		"169.254.43518", "0xa9fea9fe", "2852039166", "0251.0376.0251.0376",
		"169.16689662", "0", "00", "0.0", "0X1", "0x1.0X2", "4294967295",
		"0xffffffff", "037777777777", "255.255.255.255", "1.2.65535", "1.16777215",
	};
	for (size_t i = 0; i < TD_ARRAY_LEN(forms); i++) {
		struct in_addr a;
		char dotted[INET_ADDRSTRLEN], want[64], other[INET_ADDRSTRLEN + 8];
		if (!inet_aton(forms[i], &a))
			fail_msg("inet_aton rejects test form %s", forms[i]);
		inet_ntop(AF_INET, &a, dotted, sizeof(dotted));
		struct td_ssrf *g = guard(NULL, dotted);
		snprintf(want, sizeof(want), "deny rule %s", dotted);
		expect_host(g, forms[i], want);
		td_ssrf_free(g);
		/* and only that address */
		a.s_addr ^= htonl(1);
		inet_ntop(AF_INET, &a, other, sizeof(other));
		g = guard(NULL, other);
		char why[256] = "";
		int rc = td_ssrf_check_host(g, forms[i], why, sizeof(why));
		if (rc && !strstr(why, "default deny"))
			fail_msg("%s denied by %s's rule: %s", forms[i], other, why);
		td_ssrf_free(g);
	}

	/* the message shows the canonical address */
	struct td_ssrf *g = guard(NULL, "127.0.0.0/8");
	char why[256];
	assert_int_equal(td_ssrf_check_host(g, "0x7f.1", why, sizeof(why)), -EACCES);
	assert_string_equal(why, "0x7f.1 (= 127.0.0.1): deny rule 127.0.0.0/8");
	expect_host(g, "2130706433", "2130706433 (= 127.0.0.1): deny rule");
	/* inet_aton refuses a trailing dot; read as the address it most likely
	 * means (a DNS answer for it is checked at connect time anyway) */
	expect_host(g, "127.0.0.1.", "127.0.0.1. (= 127.0.0.1): deny rule");
	expect_host(g, "0x7f.1.", "(= 127.0.0.1): deny rule");
	td_ssrf_free(g);

	/* metadata and this-network defaults see through every encoding */
	g = guard(NULL, NULL);
	expect_host(g, "0xa9fea9fe", "169.254.169.254/32");
	expect_host(g, "2852039166", "169.254.169.254/32");
	expect_host(g, "0251.0376.0251.0376", "169.254.169.254/32");
	expect_host(g, "169.254.43518", "169.254.169.254/32");
	expect_host(g, "0x64.0x64.0x64.0xc8", "100.100.100.200/32");
	expect_host(g, "0", "0.0.0.0/8");
	expect_host(g, "0x0", "0.0.0.0/8");

	/* ends in a number but inet_aton rejects it: denied, not looked up */
	static const char *const bad[] = {
		"256.1.1.1", "1.2.3.256", "1.2.3.4.5", "4294967296", "0x100000000",
		"08.0.0.1", "0.09", "1.2.16777216", "1.65536.1", "99999999999999999999999",
		"example.123", "a.b.0x1f", "1..2", ".1.2", "0x", "0X", "0x.1", "1.0x",
		"1.2.3.0x",
	};
	for (size_t i = 0; i < TD_ARRAY_LEN(bad); i++) {
		struct in_addr a;
		if (inet_aton(bad[i], &a))
			fail_msg("inet_aton accepts %s", bad[i]);
		expect_host(g, bad[i], "ends in a number but is not an IPv4 address");
	}
	/* digits elsewhere make a name; its address is checked at connect time */
	expect_host(g, "127.0.0.1.nip.io", NULL);
	expect_host(g, "1e100.net", NULL);
	expect_host(g, "0x7f.example", NULL);
	td_ssrf_free(g);
}

/* Random numeric-looking text: accepted exactly when inet_aton accepts it. */
static void test_numeric_agrees_with_inet_aton(void **state)
{
	static const char alpha[] = "0123456789.xX.afAF0017.";
	struct td_ssrf *g = guard(NULL, NULL);
	unsigned seed = 12345;
	size_t agreed = 0;
	for (int iter = 0; iter < 200000; iter++) {
		char s[16], why[256];
		size_t n = 1 + (seed = seed * 1103515245u + 12345u) % 14;
		for (size_t i = 0; i < n; i++) {
			seed = seed * 1103515245u + 12345u;
			s[i] = alpha[(seed >> 16) % (sizeof(alpha) - 1)];
		}
		s[n] = '\0';
		size_t m = s[n - 1] == '.' ? n - 1 : n;
		const char *last = s + m;
		while (last > s && last[-1] != '.')
			last--;
		bool numeric = last < s + m &&
			       strspn(last, "0123456789") == (size_t)(s + m - last);
		numeric |= s + m - last >= 2 && last[0] == '0' && (last[1] | 0x20) == 'x' &&
			   strspn(last + 2, "0123456789abcdefABCDEF") == (size_t)(s + m - last - 2);
		if (!numeric)
			continue; /* a name, or malformed as a name */
		struct in_addr a;
		char t[16];
		memcpy(t, s, m);
		t[m] = '\0';
		int aton = inet_aton(t, &a);
		int rc = td_ssrf_check_host(g, s, why, sizeof(why));
		bool parse_failed = rc && strstr(why, "not an IPv4 address");
		if (aton == parse_failed)
			fail_msg("'%s': inet_aton %d, guard: %s", s, aton, rc ? why : "allowed");
		if (aton && !rc != !(ntohl(a.s_addr) >> 24 == 0 ||
				     (ntohl(a.s_addr) >> 16) == 0xa9fe ||
				     a.s_addr == inet_addr("100.100.100.200") ||
				     a.s_addr == inet_addr("168.63.129.16")))
			fail_msg("'%s' = %s: unexpected %s", s, inet_ntoa(a), rc ? why : "allow");
		agreed++;
	}
	assert_true(agreed > 10000);
	td_ssrf_free(g);
}

/* ---- precedence -------------------------------------------------------- */

static void test_deny_beats_allow(void **state)
{
	struct td_ssrf *g = guard("10.1.2.3,api.example.com,0.0.0.0/0",
				  "10.0.0.0/8,*.example.com");
	expect_ip(g, "10.1.2.3", "10.1.2.3: deny rule 10.0.0.0/8");
	expect_host(g, "api.example.com", "api.example.com: deny rule *.example.com");
	expect_conn(g, "api.example.com", "8.8.8.8", "deny rule *.example.com");
	expect_conn(g, "ok.example.org", "10.9.9.9", "ok.example.org (10.9.9.9): deny rule 10.0.0.0/8");
	expect_ip(g, "8.8.8.8", NULL);
	td_ssrf_free(g);

	/* an explicit deny is cited before a default */
	g = guard(NULL, "169.254.169.254");
	expect_ip(g, "169.254.169.254", "deny rule 169.254.169.254");
	td_ssrf_free(g);
	g = guard("metadata.google.internal", "metadata.google.internal");
	expect_host(g, "metadata.google.internal", "deny rule metadata.google.internal");
	td_ssrf_free(g);
}

static void test_specificity(void **state)
{
	struct td_ssrf *g = guard("169.254.10.0/24", NULL);
	expect_ip(g, "169.254.10.5", NULL);
	expect_ip(g, "169.254.11.1", "link-local 169.254.0.0/16");
	td_ssrf_free(g);

	g = guard("0.0.0.0/0,::/0", NULL);
	expect_ip(g, "8.8.8.8", NULL);
	expect_ip(g, "2001:db8::1", NULL);
	expect_ip(g, "169.254.169.254", "169.254.169.254/32");
	expect_ip(g, "169.254.1.1", "link-local 169.254.0.0/16");
	expect_ip(g, "0.0.0.1", "0.0.0.0/8");
	expect_ip(g, "fe80::1", "fe80::/10");
	expect_ip(g, "fd00:ec2::254", "fd00:ec2::254/128");
	expect_ip(g, "::", "::/128");
	expect_host(g, "metadata", "cloud metadata host metadata");
	td_ssrf_free(g);

	/* an equal prefix lifts link-local but not the /32 inside it */
	g = guard("169.254.0.0/16", NULL);
	expect_ip(g, "169.254.1.1", NULL);
	expect_ip(g, "169.254.169.254", "169.254.169.254/32");
	expect_ip(g, "169.254.170.2", "169.254.170.2/32");
	td_ssrf_free(g);

	g = guard("169.254.169.254/31", NULL);
	expect_ip(g, "169.254.169.254", "169.254.169.254/32");
	td_ssrf_free(g);

	/* the exact /32 (and nothing around it) */
	g = guard("169.254.169.254", NULL);
	expect_ip(g, "169.254.169.254", NULL);
	expect_ip(g, "169.254.169.253", "link-local 169.254.0.0/16");
	td_ssrf_free(g);
	g = guard("fd00:ec2::254/128,fe80::/10", NULL);
	expect_ip(g, "fd00:ec2::254", NULL);
	expect_ip(g, "fe80::1", NULL);
	expect_ip(g, "fd00:ec2::1", "not on the allow list");
	expect_ip(g, "fd00:ec2::23", "fd00:ec2::23/128");
	td_ssrf_free(g);
	g = guard("fe80::/9", NULL); /* shorter than fe80::/10 */
	expect_ip(g, "fe80::1", "link-local fe80::/10");
	td_ssrf_free(g);

	/* names: only the exact host rule lifts a default name... */
	g = guard("metadata.google.internal,*.google.internal,0.0.0.0/0", NULL);
	expect_host(g, "metadata.google.internal", NULL);
	expect_host(g, "metadata", "cloud metadata host metadata");
	td_ssrf_free(g);
	g = guard("*.google.internal", NULL);
	expect_host(g, "metadata.google.internal", "cloud metadata host");
	expect_host(g, "other.google.internal", NULL);
	td_ssrf_free(g);
	/* ...and never an address default: a rebound name stays out */
	g = guard("metadata.google.internal,api.example.com", NULL);
	expect_conn(g, "metadata.google.internal", "169.254.169.254", "169.254.169.254/32");
	expect_conn(g, "api.example.com", "169.254.169.254", "api.example.com (169.254.169.254)");
	expect_conn(g, "api.example.com", "169.254.3.3", "link-local");
	td_ssrf_free(g);
	g = guard("metadata.google.internal,169.254.169.254", NULL);
	expect_conn(g, "metadata.google.internal", "169.254.169.254", NULL);
	td_ssrf_free(g);
}

static void test_allowlist(void **state)
{
	/* host rules only: anything else is refused at submission */
	struct td_ssrf *g = guard("api.example.com, *.corp.example", NULL);
	expect_host(g, "api.example.com", NULL);
	expect_host(g, "API.Example.COM.", NULL);
	expect_host(g, "x.corp.example", NULL);
	expect_host(g, "a.b.corp.example", NULL);
	expect_host(g, "corp.example", "corp.example: not on the allow list");
	expect_host(g, "other.com", "not on the allow list");
	expect_host(g, "8.8.8.8", "not on the allow list");
	/* an allowed name passes at connect time whatever it resolves to... */
	expect_conn(g, "api.example.com", "93.184.216.34", NULL);
	expect_conn(g, "x.corp.example", "10.0.0.5", NULL);
	expect_conn(g, "api.example.com", "2001:db8::1", NULL);
	/* ...but defaults still apply to the address */
	expect_conn(g, "x.corp.example", "169.254.169.254", "169.254.169.254/32");
	expect_conn(g, "other.com", "93.184.216.34", "other.com (93.184.216.34): not on the allow list");
	/* without the name, only address rules count */
	expect_conn(g, NULL, "93.184.216.34", "not on the allow list");
	expect_addr(g, "93.184.216.34", "93.184.216.34: not on the allow list");
	/* a literal is never matched by a host rule */
	expect_conn(g, "93.184.216.34", "93.184.216.34", "not on the allow list");
	td_ssrf_free(g);

	/* with allow CIDRs an unmatched name waits for its address */
	g = guard("api.example.com,203.0.113.0/24,2001:db8::/32", NULL);
	expect_host(g, "other.com", NULL);
	expect_conn(g, "other.com", "203.0.113.5", NULL);
	expect_conn(g, "other.com", "2001:db8::5", NULL);
	expect_conn(g, "other.com", "198.51.100.1", "not on the allow list");
	expect_ip(g, "203.0.113.255", NULL);
	expect_ip(g, "203.0.114.0", "not on the allow list");
	expect_host(g, "metadata", "cloud metadata host");
	td_ssrf_free(g);

	/* the documented recipe: everything plus one link-local /24 */
	g = guard("0.0.0.0/0,::/0,169.254.10.0/24", NULL);
	expect_host(g, "example.com", NULL);
	expect_conn(g, "example.com", "93.184.216.34", NULL);
	expect_ip(g, "8.8.8.8", NULL);
	expect_ip(g, "2001:db8::1", NULL);
	expect_ip(g, "169.254.10.1", NULL);
	expect_ip(g, "169.254.169.254", "169.254.169.254/32");
	expect_host(g, "metadata.google.internal", "cloud metadata host");
	td_ssrf_free(g);
}

static void test_wildcard_vs_exact(void **state)
{
	struct td_ssrf *g = guard(NULL, "*.example.com,internal.example.org");
	static const struct {
		const char *host, *want;
	} cases[] = {
		{ "a.example.com", "deny rule *.example.com" },
		{ "a.b.example.com", "deny rule *.example.com" },
		{ "A.EXAMPLE.COM.", "deny rule *.example.com" },
		{ "example.com", NULL },
		{ "badexample.com", NULL },
		{ "example.com.evil.org", NULL },
		{ "a.example.co", NULL },
		{ "internal.example.org", "deny rule internal.example.org" },
		{ "Internal.Example.Org.", "deny rule internal.example.org" },
		{ "x.internal.example.org", NULL },
		{ "internal.example.or", NULL },
		{ "nternal.example.org", NULL },
	};
	for (size_t i = 0; i < TD_ARRAY_LEN(cases); i++)
		expect_host(g, cases[i].host, cases[i].want);
	td_ssrf_free(g);

	/* rule text is case-insensitive and one trailing dot is ignored */
	g = guard(NULL, "*.Example.COM.,Internal.Example.Org.");
	expect_host(g, "a.example.com", "deny rule *.example.com");
	expect_host(g, "internal.example.org", "deny rule internal.example.org");
	td_ssrf_free(g);
}

static void test_bad_host_text(void **state)
{
	struct td_ssrf *g = guard(NULL, NULL);
	char long_name[300], long_label[80];
	memset(long_name, 'a', sizeof(long_name));
	for (size_t i = 50; i < 260; i += 50)
		long_name[i] = '.';
	long_name[254] = '\0';
	memset(long_label, 'b', 64);
	strcpy(long_label + 64, ".com");

	expect_host(g, NULL, "empty host");
	expect_host(g, "", "empty host");
	expect_host(g, ".", "empty label");
	expect_host(g, "a..b", "empty label");
	expect_host(g, ".a", "empty label");
	expect_host(g, "a.b..", "empty label");
	expect_host(g, "exa mple.com", "invalid character ' '");
	expect_host(g, "ex%61mple.com", "invalid character '%'");
	expect_host(g, "user@host", "invalid character '@'");
	expect_host(g, "a/b", "invalid character '/'");
	expect_host(g, "*.example.com", "'*'");
	expect_host(g, "\xc3\xa4.example", "non-ASCII");
	expect_host(g, "a\tb", "invalid byte 0x09");
	expect_host(g, long_name, "name longer than 253 bytes");
	long_name[254] = 'a';
	long_name[255] = '\0';
	expect_host(g, long_name, "host longer than 253 bytes");
	long_name[253] = '\0';
	expect_host(g, long_name, NULL);
	long_name[252] = '.';
	expect_host(g, long_name, NULL); /* 252 + trailing dot */
	expect_host(g, long_label, "label longer than 63 bytes");
	long_label[1] = '.';
	expect_host(g, long_label, NULL);
	expect_host(g, "under_score-ok.example", NULL);

	/* the longest reasons fit TD_SSRF_WHY_MAX */
	char dom[260], host[270], rule[270], big[TD_SSRF_WHY_MAX + 64];
	memset(dom, 'd', sizeof(dom));
	for (size_t i = 60; i < 250; i += 60)
		dom[i] = '.';
	dom[250] = '\0';
	snprintf(rule, sizeof(rule), "*.%s", dom);
	snprintf(host, sizeof(host), "h.%s", dom);
	struct td_ssrf *g2 = guard(NULL, rule);
	union sa u;
	socklen_t len = make_sa(&u, "::ffff:10.0.0.1");
	memset(big, 'x', sizeof(big));
	assert_int_equal(td_ssrf_check_connect(g2, host, &u.sa, len, big, sizeof(big)),
			 -EACCES);
	assert_true(strlen(big) < TD_SSRF_WHY_MAX - 200);
	assert_non_null(strstr(big, "(::ffff:10.0.0.1 = 10.0.0.1): deny rule *.dddd"));
	for (int i = 0; i < TD_SSRF_MAX_RULES; i++)
		assert_int_equal(td_ssrf_add(g2, true, rule, big, sizeof(big)), i < 255 ? 0 : TD_ETOOBIG);
	assert_true(strlen(big) < TD_SSRF_WHY_MAX - 200);
	td_ssrf_free(g2);

	/* untrusted text is made printable and clipped in `why` */
	char why[512];
	char ctl[200];
	memset(ctl, 'c', sizeof(ctl));
	ctl[0] = '\x1b';
	ctl[sizeof(ctl) - 1] = '\0';
	assert_int_equal(td_ssrf_check_host(g, ctl, why, sizeof(why)), -EACCES);
	assert_int_equal(why[0], '?');
	assert_non_null(strstr(why, "...: invalid byte 0x1b"));
	assert_true(strlen(why) < 120);
	td_ssrf_free(g);
}

/* ---- rule text --------------------------------------------------------- */

static void test_rule_errors(void **state)
{
	static const struct {
		const char *rule, *msg;
	} cases[] = {
		{ "10.0.0.0/33", "10.0.0.0/33: prefix longer than 32" },
		{ "10.0.0.0/999999999999", "10.0.0.0/999999999999: prefix longer than 32" },
		{ "fd00::/129", "fd00::/129: prefix longer than 128" },
		{ "10.0.0.0/", "10.0.0.0/: missing prefix length after '/'" },
		{ "10.0.0.0/-1", "10.0.0.0/-1: prefix length is not a number" },
		{ "10.0.0.0/+8", "10.0.0.0/+8: prefix length is not a number" },
		{ "10.0.0.0/8x", "10.0.0.0/8x: prefix length is not a number" },
		{ "10.0.0.0/8/8", "10.0.0.0/8/8: prefix length is not a number" },
		{ "/8", "/8: missing address" },
		{ "10.1.0.0/8", "10.1.0.0/8: host bits set (the network is 10.0.0.0/8)" },
		{ "10.0.0.1/31", "10.0.0.1/31: host bits set (the network is 10.0.0.0/31)" },
		{ "fd00::1/8", "fd00::1/8: host bits set (the network is fd00::/8)" },
		{ "127.1", "127.1: write IPv4 addresses as a.b.c.d (127.0.0.1)" },
		{ "0x7f.1/32", "0x7f.1/32: write IPv4 addresses as a.b.c.d (127.0.0.1)" },
		{ "010.0.0.0/8", "010.0.0.0/8: write IPv4 addresses as a.b.c.d (8.0.0.0)" },
		{ "10.0.0/8", "10.0.0/8: write IPv4 addresses as a.b.c.d (10.0.0.0)" },
		{ "256.0.0.0/8", "256.0.0.0/8: not an IPv4 or IPv6 address" },
		{ "10.0.0.1.", "10.0.0.1.: not an IPv4 or IPv6 address" },
		{ "fe80::1%eth0", "fe80::1%eth0: zone ids are not allowed in rules" },
		{ "[10.0.0.1]", "[10.0.0.1]: not an IPv4 or IPv6 address" },
		{ "[::1", "[::1: unbalanced '['" },
		{ "[", "[: unbalanced '['" },
		{ "[]/8", "[]/8: missing address" },
		{ "example.com:8080", "example.com:8080: not an IPv4 or IPv6 address" },
		{ "::ffff:10.0.0.0/104",
		  "::ffff:10.0.0.0/104: IPv4-mapped or NAT64 addresses are checked as IPv4: "
		  "write 10.0.0.0/8" },
		{ "64:ff9b::a9fe:a9fe",
		  "64:ff9b::a9fe:a9fe: IPv4-mapped or NAT64 addresses are checked as IPv4: "
		  "write 169.254.169.254/32" },
		{ "", ": empty rule" },
		{ ".", ".: empty label" },
		{ "*", "*: wildcard needs a domain (*.example.com)" },
		{ "*.", "*.: wildcard needs a domain (*.example.com)" },
		{ "*example.com", "*example.com: '*' is only allowed as a leading '*.'" },
		{ "a.*.com", "a.*.com: '*' is only allowed as a leading '*.'" },
		{ "*.*.com", "*.*.com: '*' is only allowed as a leading '*.'" },
		{ "*.10.0.0.1", "*.10.0.0.1: numeric last label: not a domain" },
		{ "exa mple.com", "exa mple.com: invalid character ' '" },
		{ " example.com", " example.com: invalid character ' '" },
		{ "a..b", "a..b: empty label" },
		{ ".a", ".a: empty label" },
		{ "a.b..", "a.b..: empty label" },
		{ "\x01" "bad", "?bad: invalid byte 0x01" },
		{ "\xc3\xa4.com", "??.com: non-ASCII name (give its punycode form)" },
	};
	for (size_t i = 0; i < TD_ARRAY_LEN(cases); i++) {
		expect_add_error(true, cases[i].rule, cases[i].msg);
		expect_add_error(false, cases[i].rule, cases[i].msg);
	}

	char rule[300], msg[400], head[80];
	memset(rule, 'a', sizeof(rule));
	rule[64] = '\0';
	snprintf(msg, sizeof(msg), "%s: label longer than 63 bytes", rule);
	expect_add_error(false, rule, msg);
	memset(rule, 'a', sizeof(rule));
	for (size_t i = 60; i < 300; i += 60)
		rule[i] = '.';
	rule[254] = '\0'; /* 254 bytes: a name too long, a rule not */
	memcpy(head, rule, 77); /* messages quote 77 bytes and "..." */
	head[77] = '\0';
	snprintf(msg, sizeof(msg), "%s...: name longer than 253 bytes", head);
	expect_add_error(false, rule, msg);
	rule[256] = '\0';
	rule[254] = rule[255] = 'a';
	snprintf(msg, sizeof(msg), "%s...: rule longer than 255 bytes", head);
	expect_add_error(false, rule, msg);
	rule[253] = '\0';
	struct td_ssrf *g = guard(NULL, NULL);
	char err[128];
	assert_int_equal(td_ssrf_add(g, false, rule, err, sizeof(err)), 0);
	rule[253] = '.';
	rule[254] = '\0';
	assert_int_equal(td_ssrf_add(g, false, rule, err, sizeof(err)), 0);
	/* NULL rule and NULL error buffer */
	assert_int_equal(td_ssrf_add(g, false, NULL, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, ": empty rule");
	assert_int_equal(td_ssrf_add(g, false, "/33", NULL, 0), -EINVAL);
	/* short error buffers are truncated, NUL-terminated */
	memset(err, 'x', sizeof(err));
	assert_int_equal(td_ssrf_add(g, false, "10.0.0.0/33", err, 6), -EINVAL);
	assert_string_equal(err, "10.0.");
	td_ssrf_free(g);
}

static void test_rules_accepted(void **state)
{
	static const char *const ok[] = {
		"10.0.0.0/8", "10.0.0.0/08", "0.0.0.0/0", "::/0", "1.2.3.4", "1.2.3.4/32",
		"fd00::/8", "[fd00::]/8", "[::1]", "::1", "2001:DB8::/32", "::/95",
		"64:ff9b::/95", "*.example.com", "*.Example.COM.", "example.com.", "a",
		"under_score.example", "xn--bcher-kva.example", "1e100.net",
	};
	struct td_ssrf *g = guard(NULL, NULL);
	char err[256];
	for (size_t i = 0; i < TD_ARRAY_LEN(ok); i++)
		if (td_ssrf_add(g, i % 2, ok[i], err, sizeof(err)))
			fail_msg("'%s' refused: %s", ok[i], err);
	td_ssrf_free(g);

	/* bracketed and upper-case rules match */
	g = guard(NULL, "[2001:DB8::]/32,[::2]");
	expect_ip(g, "2001:db8::1", "deny rule [2001:db8::]/32"); /* as written */
	expect_ip(g, "::2", "deny rule [::2]");
	td_ssrf_free(g);
}

static void test_rule_limit(void **state)
{
	struct td_ssrf *g = guard(NULL, NULL);
	char rule[32], err[128];
	for (int i = 0; i < TD_SSRF_MAX_RULES; i++) {
		snprintf(rule, sizeof(rule), "10.%d.%d.0/24", i / 256, i % 256);
		assert_int_equal(td_ssrf_add(g, false, rule, err, sizeof(err)), 0);
	}
	assert_int_equal(td_ssrf_add(g, false, "11.0.0.0/8", err, sizeof(err)), TD_ETOOBIG);
	assert_string_equal(err, "11.0.0.0/8: more than 256 rules");
	expect_ip(g, "10.0.255.1", "deny rule 10.0.255.0/24");
	expect_ip(g, "11.0.0.1", NULL);
	td_ssrf_free(g);
}

static void test_list(void **state)
{
	struct td_ssrf *g = guard(NULL, NULL);
	char err[256];

	assert_int_equal(td_ssrf_add_list(g, false, " 10.0.0.0/8 ,\t*.corp.example,x.org ",
					  err, sizeof(err)), 0);
	expect_ip(g, "10.1.1.1", "deny rule 10.0.0.0/8");
	expect_host(g, "a.corp.example", "deny rule *.corp.example");
	expect_host(g, "x.org", "deny rule x.org");

	static const struct {
		const char *list, *msg;
	} bad[] = {
		{ "", "empty list" },
		{ "  ", "empty list" },
		{ ",", "item 1 is empty" },
		{ "a.com,,b.com", "item 2 is empty" },
		{ "a.com,", "item 2 is empty" },
		{ "a.com, ,b.com", "item 2 is empty" },
		{ "a.com, 10.0.0.0/33", "10.0.0.0/33: prefix longer than 32" },
		{ "1.2.3.4,a b", "a b: invalid character ' '" },
	};
	for (size_t i = 0; i < TD_ARRAY_LEN(bad); i++) {
		strcpy(err, "untouched");
		assert_int_equal(td_ssrf_add_list(g, true, bad[i].list, err, sizeof(err)), -EINVAL);
		if (strcmp(err, bad[i].msg))
			fail_msg("'%s': '%s', expected '%s'", bad[i].list, err, bad[i].msg);
		/* all or nothing: no allow rule went in, so not in allowlist mode */
		expect_host(g, "a.com", NULL);
		expect_ip(g, "1.2.3.4", NULL);
		expect_ip(g, "8.8.8.8", NULL);
	}
	assert_int_equal(td_ssrf_add_list(g, true, NULL, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "empty list");

	char big[600];
	memset(big, 'a', sizeof(big));
	memcpy(big, "b.com,", 6);
	big[sizeof(big) - 1] = '\0';
	assert_int_equal(td_ssrf_add_list(g, true, big, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "...: rule longer than 255 bytes"));
	expect_host(g, "a.com", NULL);
	td_ssrf_free(g);
}

/* ---- robustness -------------------------------------------------------- */

/* Every prefix of these, with its NUL right before a PROT_NONE page. */
static void test_prefixes(void **state)
{
	static const char *const rules[] = {
		"10.0.0.0/8", "fd00:ec2::254/128", "[fd00::]/8", "[::ffff:10.0.0.0]/104",
		"*.example.com.", "internal.example.com", "0x7f.1/32", "fe80::1%eth0",
		"10.0.0.0/33", "169.254.169.254", "64:ff9b::a9fe:a9fe",
	};
	static const char *const hosts[] = {
		"[fe80::1%25eth0]", "[::ffff:169.254.169.254]", "0x7f.0x0.0.1",
		"metadata.google.internal.", "017700000001", "a.b.0x1f", "fd00:ec2::254",
		"169.254.43518",
	};
	static const char *const lists[] = {
		" 10.0.0.0/8 ,\t*.corp.example,x.org ", "a,,b", "[::1],::1",
	};
	struct td_ssrf *g = guard(NULL, NULL);
	char err[256];
	union sa u;
	socklen_t len = make_sa(&u, "8.8.8.8");
	for (size_t i = 0; i < TD_ARRAY_LEN(rules); i++)
		for (size_t n = 0; n <= strlen(rules[i]); n++) {
			td_ssrf_add(g, n % 2, guarded_strn(rules[i], n), err, sizeof(err));
			td_ssrf_add(g, n % 2, guarded_strn(rules[i], n), NULL, 0);
		}
	for (size_t i = 0; i < TD_ARRAY_LEN(lists); i++)
		for (size_t n = 0; n <= strlen(lists[i]); n++)
			td_ssrf_add_list(g, false, guarded_strn(lists[i], n), err, sizeof(err));
	for (size_t i = 0; i < TD_ARRAY_LEN(hosts); i++)
		for (size_t n = 0; n <= strlen(hosts[i]); n++) {
			td_ssrf_check_host(g, guarded_strn(hosts[i], n), err, sizeof(err));
			td_ssrf_check_connect(g, guarded_strn(hosts[i], n), &u.sa, len, err,
					      sizeof(err));
		}
	/* a full-length name and rule, also at the edge */
	char name[260];
	memset(name, 'q', sizeof(name));
	for (size_t i = 40; i < 260; i += 40)
		name[i] = '.';
	for (size_t n = 250; n < sizeof(name); n++) {
		td_ssrf_add(g, false, guarded_strn(name, n), err, sizeof(err));
		td_ssrf_check_host(g, guarded_strn(name, n), err, sizeof(err));
	}
	td_ssrf_free(g);
}

static void test_sockaddrs(void **state)
{
	struct td_ssrf *g = guard(NULL, NULL);
	char why[256];
	union sa u;
	socklen_t len = make_sa(&u, "fe80::1");

	assert_int_equal(td_ssrf_check_addr(g, &u.sa, len - 1, why, sizeof(why)), -EACCES);
	assert_non_null(strstr(why, "address family 10"));
	assert_int_equal(td_ssrf_check_addr(g, NULL, 0, why, sizeof(why)), -EACCES);
	assert_string_equal(why, "no address to check");
	assert_int_equal(td_ssrf_check_addr(g, &u.sa, 1, why, sizeof(why)), -EACCES);

	struct sockaddr_un un = { .sun_family = AF_UNIX };
	strcpy(un.sun_path, "/tmp/x.sock");
	assert_int_equal(td_ssrf_check_addr(g, (struct sockaddr *)&un, sizeof(un), why,
					    sizeof(why)), -EACCES);
	assert_non_null(strstr(why, "address family 1 "));

	/* the scope id does not matter; why may be absent */
	len = make_sa(&u, "fe80::1");
	u.in6.sin6_scope_id = 2;
	assert_int_equal(td_ssrf_check_addr(g, &u.sa, len, NULL, 0), -EACCES);
	assert_int_equal(td_ssrf_check_host(g, "metadata", NULL, 0), -EACCES);
	memset(why, 'x', sizeof(why));
	assert_int_equal(td_ssrf_check_addr(g, &u.sa, len, why, 4), -EACCES);
	assert_string_equal(why, "fe8");
	/* malformed host text at connect time is denied */
	len = make_sa(&u, "8.8.8.8");
	assert_int_equal(td_ssrf_check_connect(g, "a b", &u.sa, len, why, sizeof(why)), -EACCES);
	assert_string_equal(why, "a b: invalid character ' '");
	assert_int_equal(td_ssrf_check_connect(g, "dns.google", &u.sa, len, why, sizeof(why)), 0);
	td_ssrf_free(g);
	td_ssrf_free(NULL);
}

/* ---- speed (printed, not asserted) ------------------------------------- */

static void test_speed(void **state)
{
	struct td_ssrf *g = guard("0.0.0.0/0,::/0,*.corp.example,api.example.com",
				  "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,fc00::/7,"
				  "127.0.0.0/8,::1,*.internal.example");
	const size_t iters = 1000000;
	union sa u4, u6;
	socklen_t l4 = make_sa(&u4, "93.184.216.34"), l6 = make_sa(&u6, "2001:db8::1");
	struct timespec t0, t1;
	char why[256];
	int denied = 0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (size_t i = 0; i < iters; i++) {
		denied += td_ssrf_check_connect(g, "x.corp.example", &u4.sa, l4, why,
						sizeof(why)) != 0;
		denied += td_ssrf_check_addr(g, &u6.sa, l6, why, sizeof(why)) != 0;
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	assert_int_equal(denied, 0);
	double ns = ((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec)) / (2.0 * iters);
	printf("# ssrf: %.0f ns per check (14 defaults + 11 rules)\n", ns);
	td_ssrf_free(g);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_default_messages),
		cmocka_unit_test(test_default_ranges),
		cmocka_unit_test(test_default_names),
		cmocka_unit_test(test_local_allowed_by_default),
		cmocka_unit_test(test_mapped),
		cmocka_unit_test(test_host_literals),
		cmocka_unit_test(test_numeric_ipv4),
		cmocka_unit_test(test_numeric_agrees_with_inet_aton),
		cmocka_unit_test(test_deny_beats_allow),
		cmocka_unit_test(test_specificity),
		cmocka_unit_test(test_allowlist),
		cmocka_unit_test(test_wildcard_vs_exact),
		cmocka_unit_test(test_bad_host_text),
		cmocka_unit_test(test_rule_errors),
		cmocka_unit_test(test_rules_accepted),
		cmocka_unit_test(test_rule_limit),
		cmocka_unit_test(test_list),
		cmocka_unit_test(test_prefixes),
		cmocka_unit_test(test_sockaddrs),
		cmocka_unit_test(test_speed),
	};
	return cmocka_run_group_tests(tests, guard_setup, guard_teardown);
}
