/*
 * SSRF guard for the `http` trigger: decides which targets a user-submitted
 * URL may reach. A denied target becomes a `rejected` event whose error is
 * the `why` text, which always names the rule that decided.
 *
 * Two checks, both needed:
 *  - at submission, td_ssrf_check_host() on the URL's host text rejects
 *    literal addresses and host names that rules already decide;
 *  - at connect time (libcurl's CURLOPT_OPENSOCKETFUNCTION hands over the
 *    sockaddr it is about to connect to), td_ssrf_check_connect() checks the
 *    resolved address. This is the check that counts: DNS can answer
 *    differently at connect time than at submission (DNS rebinding), and a
 *    name's addresses are only known then.
 *
 * Rules. Each is one of:
 *  - an IPv4 or IPv6 CIDR, "10.0.0.0/8", "fd00::/8"; a bare address is a
 *    /32 or /128; an IPv6 rule may be bracketed, "[::1]". Host bits must be
 *    zero. IPv4 must be dotted-quad ("127.1" is refused in rules);
 *  - an exact host name, "internal.example.com";
 *  - a wildcard, "*.example.com": every sub-domain, not example.com itself.
 * Names compare case-insensitively, ignoring one trailing dot; host rules
 * only ever match names, never address literals.
 *
 * Addresses are compared in one canonical form: an IPv4-mapped IPv6 address
 * (::ffff:a.b.c.d) and a NAT64 well-known-prefix address (64:ff9b::a.b.c.d)
 * ARE the IPv4 address a.b.c.d for every rule. So "deny 10.0.0.0/8" also
 * denies ::ffff:10.1.2.3, an IPv6 rule never matches them (not even ::/0),
 * and a rule written inside those two /96 prefixes is refused with a hint
 * to write the IPv4 rule instead. Other embeddings (6to4, Teredo, the
 * deprecated IPv4-compatible ::a.b.c.d) are plain IPv6 addresses.
 *
 * Host text from a URL (td_ssrf_check_host) is read the way the connection
 * will read it: "[v6]" or a bare IPv6 literal (a zone id, "%eth0" or
 * "%25eth0", is ignored: the address decides); a host whose last label is a
 * number ("127.1", "0x7f.1", "2130706433", "017700000001", "127.0.0.1.") is
 * an IPv4 address with inet_aton(3) semantics as libcurl and glibc read it
 * - one to four parts, each decimal, octal (leading 0) or hex (0x1f); one
 * trailing dot is ignored (inet_aton would refuse it and leave it to DNS:
 * reading it as the address is the stricter choice). If it does not parse
 * as one ("1.2.3.256", "0x", "example.123") it is denied rather than passed
 * on as a name.
 * Anything else must be an ASCII host name (letters, digits, '-', '_',
 * '.'; labels of 1-63 bytes, 253 in all): give the punycode form of an IDN,
 * and the host only - no port, no userinfo, no percent-encoding.
 *
 * Default rules, each named in `why` ("default deny: link-local
 * 169.254.0.0/16"): 0.0.0.0/8, ::/128 (both reach the local host);
 * link-local 169.254.0.0/16 and fe80::/10 (OpenStack's fe80::a9fe:a9fe);
 * cloud metadata 169.254.169.254/32 (AWS, GCP, Azure, OpenStack, Oracle),
 * 169.254.170.2/32 (AWS ECS task credentials), 169.254.170.23/32 and
 * fd00:ec2::23/128 (AWS EKS pod identity), fd00:ec2::254/128 (AWS IPv6),
 * fd20:ce::254/128 (GCP IPv6), 100.100.100.200/32 (Alibaba),
 * 168.63.129.16/32 (Azure WireServer); host names metadata.google.internal
 * and metadata.
 *
 * SECURITY-RELEVANT DEFAULT: loopback (127.0.0.0/8, ::1) and private ranges
 * (10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7 apart from the metadata
 * addresses above) are ALLOWED by default, because triggerd often runs as a
 * sidecar polling local services. Where users are not trusted with the
 * local network, deny them:
 *   --deny-hosts 127.0.0.0/8,::1,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,
 *                100.64.0.0/10,fc00::/7
 *
 * Decision, for a target made of a host name N (absent for a literal) and
 * an address A (absent at submission of a name), first match wins:
 *  1. An explicit deny rule matching N or A: DENIED. Deny beats allow
 *     whatever their specificity, so "deny 10.0.0.0/8" cannot be pierced by
 *     "allow 10.1.2.3".
 *  2. A default rule matching N or A: DENIED unless an explicit allow rule
 *     at least as specific also matches:
 *       - a default CIDR of prefix P is lifted only by an allow CIDR of
 *         prefix >= P containing A ("allow 169.254.10.0/24" lifts
 *         link-local there; "allow 0.0.0.0/0" or "allow 169.254.0.0/16"
 *         leave 169.254.169.254 denied: only "allow 169.254.169.254" lifts
 *         it). Host rules never lift address defaults, or a name that is
 *         rebound to 169.254.169.254 would be let through;
 *       - a default host rule is lifted only by the exact host allow rule
 *         of the same name (never by a wildcard or a CIDR).
 *     So polling GCE's metadata takes both rules:
 *       --allow-hosts metadata.google.internal,169.254.169.254
 *     When several defaults match, `why` names the most specific one that
 *     is not lifted.
 *  3. Allowlist mode - any explicit allow rule exists: ALLOWED only if an
 *     allow host rule (exact or wildcard) matches N or an allow CIDR
 *     contains A. A name with no matching host rule is let through at
 *     submission when allow CIDRs exist (its address decides at connect
 *     time) and denied at once when none do. An allow host rule trusts the
 *     name's DNS: whatever it resolves to passes step 3 (steps 1-2 still
 *     apply to the address).
 *  4. Otherwise ALLOWED.
 * Because any allow rule switches to allowlist mode, re-allowing a default
 * range while keeping everything else reachable takes
 *   --allow-hosts 0.0.0.0/0,::/0,169.254.10.0/24
 * (the /0 rules are less specific than every default, so lift none).
 *
 * Cost: every check is a linear scan over the rules (14 defaults plus the
 * explicit ones, at most TD_SSRF_MAX_RULES) with no allocation and no
 * system call - fine for the handful of rules a deployment has (about
 * 0.15 us per check with 25 rules); `why` is only formatted on denial.
 * Explicit rules are quoted in `why` as written ("deny rule [fd00::]/8").
 *
 * Context: configure (td_ssrf_new, td_ssrf_add*) before use, from one
 * thread; the checks only read the guard and may then run concurrently
 * from any thread. None of them resolves names or blocks.
 *
 * Integration notes for the http trigger: pass check_connect the host the
 * connection is for (after a redirect that is the new host, so either
 * follow redirects in triggerd or pass NULL); disable proxies
 * (CURLOPT_PROXY "") or the connect-time check sees the proxy's address.
 */
#ifndef TRIGGERD_SSRF_H
#define TRIGGERD_SSRF_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

/** Longest rule text accepted, in bytes ("*." plus a 253-byte name). */
#define TD_SSRF_RULE_MAX 255
/** Most explicit rules one guard holds. */
#define TD_SSRF_MAX_RULES 256
/** A `why` or `err` buffer this size is never truncated. */
#define TD_SSRF_WHY_MAX 640

struct td_ssrf;

/**
 * Create a guard holding the default rules and no explicit ones. Returns 0
 * and the guard in *@out (owned by the caller, released with
 * td_ssrf_free()), or -ENOMEM.
 */
int td_ssrf_new(struct td_ssrf **out);

/**
 * Add one explicit rule (see the file comment for the syntax), an allow
 * rule if @allow, else a deny rule. @rule is NUL-terminated and not
 * retained. Returns 0; -EINVAL with "<rule>: <problem>" in @err for text
 * that is not a rule ("10.0.0.0/33: prefix longer than 32"); TD_ETOOBIG
 * past TD_SSRF_MAX_RULES; -ENOMEM. On error the guard is unchanged. @err
 * may be NULL when @errlen is 0.
 */
int td_ssrf_add(struct td_ssrf *g, bool allow, const char *rule, char *err,
		size_t errlen);

/**
 * Add the rules of a flag value such as `--allow-hosts` / `--deny-hosts`:
 * comma-separated, blanks around each item ignored
 * ("10.0.0.0/8, *.corp.example"). An empty list or an empty item is an
 * error (an unset variable must not silently change the policy). All or
 * nothing: on error no rule of @list is added. Returns as td_ssrf_add().
 */
int td_ssrf_add_list(struct td_ssrf *g, bool allow, const char *list,
		     char *err, size_t errlen);

/**
 * Check the host part of a submitted URL: a name, an IPv4 literal in any
 * inet_aton form, or an IPv6 literal with or without brackets. Returns 0
 * if the target may be polled (a name still goes through
 * td_ssrf_check_connect() for each address), or -EACCES with the reason,
 * naming the rule, in @why ("169.254.169.254: default deny: cloud metadata
 * 169.254.169.254/32"). Malformed host text is denied too. Never blocks.
 */
int td_ssrf_check_host(const struct td_ssrf *g, const char *host, char *why,
		       size_t whylen);

/**
 * Check an address about to be connected to, knowing nothing of the host
 * name: the address rules of steps 1-3 only, so in allowlist mode host
 * allow rules do not count (use td_ssrf_check_connect() for connections to
 * a name). @sa is AF_INET or AF_INET6 of at least the family's size; any
 * other family is denied. Returns 0 or -EACCES with the reason in @why.
 */
int td_ssrf_check_addr(const struct td_ssrf *g, const struct sockaddr *sa,
		       socklen_t len, char *why, size_t whylen);

/**
 * The connect-time check, for CURLOPT_OPENSOCKETFUNCTION: @sa is the address
 * being connected to for the URL host @host (the same text given to
 * td_ssrf_check_host(); NULL when unknown, which is td_ssrf_check_addr()).
 * Applies the full decision with both the name and the address, so an
 * allow host rule admits the name's addresses (defaults and deny rules
 * still apply to them). Returns 0 or -EACCES with the reason in @why.
 */
int td_ssrf_check_connect(const struct td_ssrf *g, const char *host,
			  const struct sockaddr *sa, socklen_t len, char *why,
			  size_t whylen);

/** Free @g and its rules. Accepts NULL. */
void td_ssrf_free(struct td_ssrf *g);

#endif
