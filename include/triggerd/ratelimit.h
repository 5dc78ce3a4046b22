/*
 * Per-target rate limiting: GCRA per key plus a cap on in-flight actions.
 *
 * Before each poll the engine asks td_ratelimit_acquire(). Three answers:
 *  - 0: go; the action counts as in flight until td_ratelimit_release();
 *  - TD_EFULL: the key's rate says wait; *retry_at_ns is the exact earliest
 *    time an acquire will succeed (if nothing else consumes the slot first).
 *    Re-arm on the wheel at td_ratelimit_retry_tick(retry_at) — no busy retry;
 *  - -EBUSY: the key is at its in-flight cap. There is no time to wait for:
 *    register a struct td_rl_waiter with td_ratelimit_wait(); a release on
 *    the key calls it back (FIFO), and the callback acquires again.
 *
 * GCRA (generic cell rate algorithm): per key a theoretical arrival time
 * TAT in nanoseconds. With emission interval T (1e9 / rate, rounded up to a
 * whole nanosecond so the long-run rate never exceeds the configured one)
 * and tolerance tau = (burst - 1) * T, a request at now is allowed iff
 * max(TAT, now) - tau <= now, and then TAT = max(TAT, now) + T. A denied
 * request consumes nothing; it may go at max(TAT, now) - tau. All integer
 * arithmetic: no drift however many calls.
 *
 * Time: the module never reads a clock. Every now_ns is the caller's
 * monotonic clock in nanoseconds (td_mono_ns()), non-decreasing from call
 * to call.
 *
 * Keys: byte strings of 1..TD_RL_KEY_MAX bytes, normally "scheme://host:port"
 * from td_ratelimit_key_from_url(). State is created on first use and
 * evicted lazily once idle (TAT <= now, nothing in flight, no waiter): such
 * a key behaves exactly like a new one, so eviction loses nothing and memory
 * follows the number of active hosts, not the number ever seen.
 *
 * Rules: a default rule and overrides by host pattern: "host", "host:port",
 * "[v6]", "[v6]:port", or "*.domain" (sub-domains at any depth, not the
 * domain itself). For a key the most specific wins: host:port, then host,
 * then the longest matching wildcard, then the default. Keys not of the
 * form "scheme://host:port" are matched as a bare host.
 *
 * Context: single-threaded; one limiter per shard. With several shards each
 * limiter allows the full rate: route a host's actions to one shard, or give
 * each shard its share.
 */
#ifndef TRIGGERD_RATELIMIT_H
#define TRIGGERD_RATELIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/** Longest key or pattern, in bytes, without the terminating NUL. */
#define TD_RL_KEY_MAX 512

/** Largest interval_ns, and largest tolerance (burst - 1) * interval_ns:
 * 10^18 ns, about 31.7 years. Keeps every TAT sum far from overflow. */
#define TD_RL_SPAN_MAX UINT64_C(1000000000000000000)

/** A limit. */
struct td_rl_rule {
	uint64_t interval_ns;  /* T = 1e9 / rate, rounded up; 0: no rate limit */
	uint32_t burst;        /* >= 1: how many may go back to back */
	uint32_t max_inflight; /* 0: unlimited */
};

struct td_rl_waiter;
typedef void (*td_rl_waiter_cb)(struct td_rl_waiter *w);

/**
 * A waiter for an in-flight slot. Intrusive: the owner embeds it, and gets
 * back to itself with td_container_of in the callback. Must not move while
 * pending. next == NULL: not pending.
 */
struct td_rl_waiter {
	struct td_rl_waiter *next, *prev;
	td_rl_waiter_cb cb;
};

struct td_ratelimit;

/** Initialise @w as not pending with callback @cb. */
static inline void td_rl_waiter_init(struct td_rl_waiter *w, td_rl_waiter_cb cb)
{
	w->next = w->prev = NULL;
	w->cb = cb;
}

static inline bool td_rl_waiter_pending(const struct td_rl_waiter *w)
{
	return w->next != NULL;
}

/**
 * The wheel tick (ms) to re-arm at for a retry time: rounded up, so that a
 * caller passing now_ns >= tick * 1000000 (td_mono_ns() when the timer
 * fires, or the tick itself in ns) is never early.
 */
static inline uint64_t td_ratelimit_retry_tick(uint64_t retry_at_ns)
{
	return retry_at_ns / 1000000 + (retry_at_ns % 1000000 != 0);
}

/**
 * Create a limiter whose default rule is @dflt (copied; NULL: no limit).
 * Returns 0 and *@out, -EINVAL for an invalid rule (see
 * td_ratelimit_set_rule()), or -ENOMEM. Free with td_ratelimit_free().
 */
int td_ratelimit_new(struct td_ratelimit **out, const struct td_rl_rule *dflt);

/**
 * Free @rl and all key state. Waiters still pending are detached (left not
 * pending), never called. Accepts NULL. From a waiter callback the free is
 * deferred until the outermost td_ratelimit_release() on the stack returns,
 * and no further waiter is called; either way no call on @rl may follow.
 */
void td_ratelimit_free(struct td_ratelimit *rl);

/**
 * Set the rule for @pattern (see the syntax above; "default" or NULL sets
 * the default rule), replacing any rule for the same pattern. The pattern
 * is normalised (lowercase, port without leading zeros, no trailing dot);
 * @r is copied. A rule is valid when burst >= 1, interval_ns <=
 * TD_RL_SPAN_MAX and (burst - 1) * interval_ns <= TD_RL_SPAN_MAX. Keys pick
 * the change up at their next acquire or release, keeping their TAT and
 * in-flight count. Returns 0, -EINVAL (bad pattern or rule) or -ENOMEM.
 */
int td_ratelimit_set_rule(struct td_ratelimit *rl, const char *pattern,
			  const struct td_rl_rule *r);

/**
 * The rule that applies to @key (@keylen bytes), into *@out: for tests,
 * logs and metrics. Returns 0 or -EINVAL (bad key length).
 */
int td_ratelimit_rule_for(const struct td_ratelimit *rl, const char *key,
			  size_t keylen, struct td_rl_rule *out);

/**
 * Parse one rule: "PATTERN=RATE[,burst=N][,inflight=N]", for example
 * "api.example.com=5/s,burst=10,inflight=4" or "default=20/s,burst=20".
 * RATE is a decimal number (up to 6 digits after the point) per second,
 * minute or hour ("5/s", "0.5/s", "90/m", "2.5/h"), at most 1000000000/s,
 * or "unlimited" (only the in-flight cap applies). burst defaults to 1,
 * inflight to 0 (no cap). Spaces around tokens are ignored. Writes the
 * normalised pattern (NUL-terminated; "default" for the default rule) to
 * @pattern_out (@plen bytes; TD_RL_KEY_MAX + 1 always suffices) and the
 * rule to *@out. Returns 0, or -EINVAL with a message in @err (may be NULL).
 * Allocates nothing; reads nothing past the NUL of @text.
 */
int td_ratelimit_parse_rule(const char *text, char *pattern_out, size_t plen,
			    struct td_rl_rule *out, char *err, size_t errlen);

/**
 * Load rules from the file at @path: one rule per line as for
 * td_ratelimit_parse_rule(), '#' starts a comment, blank lines are skipped.
 * All or nothing: the rules are applied (as td_ratelimit_set_rule()) only
 * if every line is valid and no pattern appears twice; rules not in the
 * file are kept. Returns 0; -EINVAL with "PATH:LINE: message" in @err;
 * -errno if the file cannot be read ("PATH: reason"); -ENOMEM. Blocking
 * file I/O: for start-up and reloads, never on the reactor.
 */
int td_ratelimit_load_file(struct td_ratelimit *rl, const char *path, char *err,
			   size_t errlen);

/**
 * Ask to start one action on @key at @now_ns.
 * Returns:
 *  - 0: allowed; the action counts in flight: call td_ratelimit_release()
 *    exactly once when it ends (whether or not the key has a cap);
 *  - TD_EFULL: denied by the rate; *@retry_at_ns (> @now_ns) is the earliest
 *    time an acquire can succeed: exactly then, not a nanosecond before;
 *  - -EBUSY: the key is at its in-flight cap; register a waiter with
 *    td_ratelimit_wait() (*@retry_at_ns = UINT64_MAX);
 *  - -EINVAL: @keylen is 0 or above TD_RL_KEY_MAX; -ENOMEM: no memory for
 *    a new key's state.
 * A denial consumes nothing. The in-flight cap is checked first. @retry_at_ns
 * may be NULL. Callable from a waiter callback (that is what it is for).
 */
int td_ratelimit_acquire(struct td_ratelimit *rl, const char *key, size_t keylen,
			 uint64_t now_ns, uint64_t *retry_at_ns);

/**
 * End an action acquired on @key. If the key has waiters and a free slot,
 * calls the first waiter's callback (the waiter already removed) from
 * inside this call; if that callback did not take the slot (its acquire
 * was denied by the rate, or it did not acquire), the next waiter is
 * called, and so on while a slot is free. A release without a matching
 * acquire is ignored. Callable from a waiter callback.
 */
void td_ratelimit_release(struct td_ratelimit *rl, const char *key, size_t keylen);

/**
 * Queue @w (initialised with td_rl_waiter_init(), not pending) at the tail
 * of @key's waiters, after td_ratelimit_acquire() returned -EBUSY. The
 * caller keeps ownership; @w must stay put until its callback runs or
 * td_ratelimit_unwait(). The callback runs inside a td_ratelimit_release()
 * on the key, with @w no longer pending, and should call
 * td_ratelimit_acquire() right away: a slot is free for it then.
 * Returns 0 (queued); -EAGAIN: the key has a free slot now (not queued:
 * acquire again); -EALREADY: @w is already pending; -EINVAL: bad key length.
 */
int td_ratelimit_wait(struct td_ratelimit *rl, const char *key, size_t keylen,
		      struct td_rl_waiter *w);

/** Remove @w from its queue in O(1). A no-op when @w is not pending. */
void td_ratelimit_unwait(struct td_ratelimit *rl, struct td_rl_waiter *w);

/**
 * Evict every idle key (TAT <= @now_ns, nothing in flight, no waiters) and
 * shrink the table to fit. Acquire does this by itself whenever the table
 * is full, so this is only needed to give memory back after a peak, e.g.
 * from a periodic timer. Returns the number of keys evicted.
 */
size_t td_ratelimit_sweep(struct td_ratelimit *rl, uint64_t now_ns);

/** Number of keys holding state. */
size_t td_ratelimit_keys(const struct td_ratelimit *rl);

/** Bytes held by @rl (table, keys and rules), as requested from malloc. */
size_t td_ratelimit_memory(const struct td_ratelimit *rl);

/**
 * The default limiter key of @url: "scheme://host:port" with scheme and
 * host lowercased, userinfo, path, query and fragment dropped, a trailing
 * dot of the host removed, the port without leading zeros and filled in
 * for http/ws (80) and https/wss (443), an IPv6 literal kept in brackets.
 * Returns 0 with the key NUL-terminated in @buf (TD_RL_KEY_MAX + 1 bytes
 * always suffice), or -EINVAL: not an absolute "scheme://" URL, empty or
 * invalid host, bad port, no port for another scheme, or the key would not
 * fit (@len or TD_RL_KEY_MAX). Allocates nothing.
 */
int td_ratelimit_key_from_url(const char *url, char *buf, size_t len);

#endif
