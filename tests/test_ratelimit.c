/*
 * Tests for engine/ratelimit.c: GCRA decisions against schedules computed
 * by hand, exact retry times, the in-flight cap and its waiters, rule
 * precedence, URL keys, rule and config file parsing, eviction.
 *
 * Parser inputs are copied to the end of a mapping followed by a PROT_NONE
 * page, so reading one byte too far crashes.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>

#include "triggerd/ratelimit.h"
#include "triggerd/triggerd.h"

/* cmocka's test signature: most tests do not use @state. */
#pragma GCC diagnostic ignored "-Wunused-parameter"

#define MS(x) ((uint64_t)(x) * UINT64_C(1000000))
#define S(x) ((uint64_t)(x) * UINT64_C(1000000000))

#include "guard.h"

static struct td_ratelimit *mk(uint64_t interval_ns, uint32_t burst, uint32_t inflight)
{
	struct td_rl_rule r = {interval_ns, burst, inflight};
	struct td_ratelimit *rl = NULL;
	assert_int_equal(td_ratelimit_new(&rl, &r), 0);
	assert_non_null(rl);
	return rl;
}

static int acq(struct td_ratelimit *rl, const char *key, uint64_t now, uint64_t *retry)
{
	return td_ratelimit_acquire(rl, key, strlen(key), now, retry);
}

static void rel(struct td_ratelimit *rl, const char *key)
{
	td_ratelimit_release(rl, key, strlen(key));
}

struct step {
	uint64_t t_ms;
	int rc;
	uint64_t retry_ms;
};

static void run_steps(struct td_ratelimit *rl, const char *key, const struct step *s,
		      size_t n)
{
	for (size_t i = 0; i < n; i++) {
		uint64_t retry = 0;
		int rc = acq(rl, key, MS(s[i].t_ms), &retry);
		if (rc != s[i].rc || (rc == TD_EFULL && retry != MS(s[i].retry_ms)))
			fail_msg("step %zu at %llu ms: rc %d retry %llu ns, want %d retry %llu ms",
				 i, (unsigned long long)s[i].t_ms, rc,
				 (unsigned long long)retry, s[i].rc,
				 (unsigned long long)s[i].retry_ms);
		if (rc == 0)
			rel(rl, key);
	}
}

/* Rate 2/s (T = 500 ms), burst 3 (tau = 1000 ms). TAT after each step. */
static void gcra_schedule(void **state)
{
	static const struct step steps[] = {
		{0, 0, 0},             /* TAT 0 -> 500 */
		{0, 0, 0},             /* 500 - 1000 <= 0: -> 1000 */
		{0, 0, 0},             /* 1000 - 1000 <= 0: -> 1500 */
		{0, TD_EFULL, 500},    /* 1500 - 1000 = 500 > 0 */
		{500, 0, 0},           /* -> 2000 */
		{600, TD_EFULL, 1000}, /* 2000 - 1000 = 1000 > 600 */
		{1000, 0, 0},          /* -> 2500 */
		{1000, TD_EFULL, 1500},
		{1499, TD_EFULL, 1500},
		{1500, 0, 0},          /* -> 3000 */
		{2600, 0, 0},          /* 1.1 s later: 3000 - 1000 <= 2600: -> 3500 */
		{2600, 0, 0},          /* 2500 <= 2600: -> 4000 */
		{2600, TD_EFULL, 3000},/* two refilled, not three */
		{10000, 0, 0},         /* long idle: TAT = now = 10000 -> 10500 */
		{10000, 0, 0},         /* -> 11000 */
		{10000, 0, 0},         /* -> 11500 */
		{10000, TD_EFULL, 10500}, /* refilled up to burst and no more */
		{10499, TD_EFULL, 10500},
		{10500, 0, 0},         /* -> 12000 */
	};
	struct td_ratelimit *rl = mk(MS(500), 3, 0);
	run_steps(rl, "http://h:80", steps, TD_ARRAY_LEN(steps));
	/* Another key is independent. */
	uint64_t retry;
	assert_int_equal(acq(rl, "http://other:80", MS(0), &retry), 0);
	td_ratelimit_free(rl);
}

/*
 * Rate 3/s: 1e9 / 3 = 333333333.3 ns, rounded up to T = 333333334 so the
 * long-run rate is never above 3/s. Burst 1: tau = 0.
 */
static void gcra_fractional_interval(void **state)
{
	uint64_t retry;
	struct td_ratelimit *rl = mk(333333334, 1, 0);
	const char *k = "https://h:443";

	assert_int_equal(acq(rl, k, 0, &retry), 0); /* TAT -> 333333334 */
	assert_int_equal(acq(rl, k, 0, &retry), TD_EFULL);
	assert_int_equal(retry, 333333334);
	assert_int_equal(acq(rl, k, 333333333, &retry), TD_EFULL);
	assert_int_equal(retry, 333333334);
	assert_int_equal(acq(rl, k, 333333334, &retry), 0); /* -> 666666668 */
	assert_int_equal(acq(rl, k, 666666667, &retry), TD_EFULL);
	assert_int_equal(retry, 666666668);
	assert_int_equal(acq(rl, k, 666666668, &retry), 0); /* -> 1000000002 */
	/* Three in the first second, the fourth 2 ns after it. */
	assert_int_equal(acq(rl, k, S(1), &retry), TD_EFULL);
	assert_int_equal(retry, 1000000002);

	/*
	 * A client that always comes back exactly at retry_at: the n-th
	 * success (from 0) is at n * T, exactly, however many calls: the
	 * 3000th success after the one at 1000000002 is at 1000000002 +
	 * 3000 * 333333334 = 1001000002002 ns: 1001 s plus 1001 * 2 ns of
	 * rounding up, no drift either way.
	 */
	uint64_t now = 1000000002;
	unsigned int ok = 0;
	while (ok < 3001) {
		int rc = acq(rl, k, now, &retry);
		if (rc == 0) {
			ok++;
			rel(rl, k);
			continue;
		}
		assert_int_equal(rc, TD_EFULL);
		assert_true(retry > now);
		now = retry;
	}
	assert_int_equal(now, UINT64_C(1001000002002));
	td_ratelimit_free(rl);
}

static uint64_t rng = 42;

static uint64_t rnd(uint64_t n)
{
	uint64_t z = (rng += UINT64_C(0x9e3779b97f4a7c15));
	z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
	return (z ^ (z >> 31)) % n;
}

/*
 * Rate 3/s, burst 5, 10,000 admitted requests from a client that sometimes
 * comes back exactly at retry_at, sometimes early, sometimes after an idle
 * spell. Every denial is exact (retry_at - 1 is denied with the same answer,
 * retry_at is admitted), and in every window [t_i, t_j] of admitted times
 * the count is at most rate * (t_j - t_i) + burst.
 */
static void gcra_window_bound(void **state)
{
	enum { N = 10000, BURST = 5 };
	const uint64_t T = 333333334;
	uint64_t *at = malloc(N * sizeof(*at)), now = S(7), retry, pending = 0;
	struct td_ratelimit *rl = mk(T, BURST, 0);
	const char *k = "http://sim:80";
	size_t n = 0, denied = 0;

	assert_non_null(at);
	while (n < N) {
		int rc = acq(rl, k, now, &retry);
		if (pending && now == pending)
			assert_int_equal(rc, 0); /* exactly at retry_at: admitted */
		if (rc == 0) {
			at[n++] = now;
			rel(rl, k);
			pending = 0;
		} else {
			assert_int_equal(rc, TD_EFULL);
			assert_true(retry > now);
			uint64_t again;
			assert_int_equal(acq(rl, k, retry - 1, &again), TD_EFULL);
			assert_int_equal(again, retry);
			pending = retry;
			denied++;
		}
		switch (rnd(32)) {
		case 0:
			now += rnd(S(3));         /* idle spell */
			break;
		case 1: case 2: case 3: case 4: case 5: case 6: case 7: case 8:
			if (pending) {
				now = pending;    /* exactly when allowed */
				break;
			}
			/* fall through */
		default:
			now += rnd(T / 2);        /* keen: mostly too early */
		}
	}
	for (size_t i = 0; i < N; i++) {
		for (size_t j = i + BURST; j < N; j++) {
			/* (j - i + 1) <= 3 * (t_j - t_i) / 1e9 + BURST */
			uint64_t cnt = j - i + 1 - BURST;
			if (cnt * S(1) > 3 * (at[j] - at[i]))
				fail_msg("%llu admitted in [%llu, %llu]", (unsigned long long)(j - i + 1),
					 (unsigned long long)at[i], (unsigned long long)at[j]);
		}
	}
	assert_true(denied > N); /* the client did push against the limit */
	free(at);
	td_ratelimit_free(rl);
}

/* retry_at is exact to the nanosecond; the wheel tick never undershoots. */
static void exact_retry(void **state)
{
	/* 7/m: 60e9 / 7 = 8571428571.4, T = 8571428572; burst 2: tau = T. */
	struct td_rl_rule r;
	char pat[TD_RL_KEY_MAX + 1], err[128];
	assert_int_equal(td_ratelimit_parse_rule(guarded_str("h=7/m,burst=2"), pat, sizeof(pat),
						 &r, err, sizeof(err)), 0);
	assert_int_equal(r.interval_ns, UINT64_C(8571428572));
	struct td_ratelimit *rl = mk(r.interval_ns, r.burst, 0);
	const char *k = "http://h:80";
	uint64_t now = 123456789, retry;

	assert_int_equal(acq(rl, k, now, &retry), 0);
	assert_int_equal(acq(rl, k, now, &retry), 0); /* TAT = now + 2T */
	assert_int_equal(acq(rl, k, now, &retry), TD_EFULL);
	assert_int_equal(retry, UINT64_C(8694885361)); /* now + 2T - tau */
	assert_int_equal(acq(rl, k, retry - 1, &retry), TD_EFULL);
	assert_int_equal(retry, UINT64_C(8694885361));
	assert_int_equal(td_ratelimit_retry_tick(retry), 8695);
	assert_int_equal(acq(rl, k, MS(td_ratelimit_retry_tick(retry)), &retry), 0);

	assert_int_equal(td_ratelimit_retry_tick(0), 0);
	assert_int_equal(td_ratelimit_retry_tick(MS(8)), 8);
	assert_int_equal(td_ratelimit_retry_tick(MS(8) + 1), 9);
	assert_int_equal(td_ratelimit_retry_tick(UINT64_MAX), UINT64_MAX / 1000000 + 1);
	td_ratelimit_free(rl);
}

/* ---- in-flight cap and waiters ---- */

enum { CB_ACQUIRE, CB_NOTHING, CB_ACQUIRE_RELEASE, CB_CHURN, CB_REWAIT, CB_FREE,
       CB_RELEASE_OTHER };

struct tw {
	struct td_rl_waiter w;
	int id, mode, rc, rewait_rc;
	uint64_t retry;
};

static struct td_ratelimit *cur;
static const char *cur_key;
static uint64_t sim_now;
static int woken[256];
static size_t nwoken;

static void tw_cb(struct td_rl_waiter *w)
{
	struct tw *t = td_container_of(w, struct tw, w);
	assert_false(td_rl_waiter_pending(w));
	assert_true(nwoken < TD_ARRAY_LEN(woken));
	woken[nwoken++] = t->id;
	switch (t->mode) {
	case CB_ACQUIRE:
		t->rc = acq(cur, cur_key, sim_now, &t->retry);
		break;
	case CB_ACQUIRE_RELEASE: /* e.g. the poll could not even start */
		t->rc = acq(cur, cur_key, sim_now, &t->retry);
		if (t->rc == 0)
			rel(cur, cur_key);
		break;
	case CB_CHURN: /* many new keys: sweeps while the release is running */
		for (int i = 0; i < 300; i++) {
			char k[64];
			snprintf(k, sizeof(k), "http://churn%d:80", i);
			assert_int_equal(acq(cur, k, sim_now, NULL), 0);
			rel(cur, k);
		}
		break;
	case CB_REWAIT: /* a slot is free: waiting again is refused */
		t->rewait_rc = td_ratelimit_wait(cur, cur_key, strlen(cur_key), w);
		break;
	case CB_FREE: /* e.g. shutdown */
		td_ratelimit_free(cur);
		break;
	case CB_RELEASE_OTHER: /* a release on another key, from a callback */
		rel(cur, "http://other:80");
		break;
	}
}

static void tw_init(struct tw *t, int id, int mode)
{
	memset(t, 0, sizeof(*t));
	td_rl_waiter_init(&t->w, tw_cb);
	t->id = id;
	t->mode = mode;
	t->rc = 1;
}

static int tw_wait(struct tw *t)
{
	return td_ratelimit_wait(cur, cur_key, strlen(cur_key), &t->w);
}

static void inflight_fifo(void **state)
{
	struct tw a, b, c;
	uint64_t retry = 0;

	cur = mk(0, 1, 2); /* no rate limit, two in flight */
	cur_key = "http://h:80";
	nwoken = 0;
	tw_init(&a, 1, CB_ACQUIRE);
	tw_init(&b, 2, CB_ACQUIRE);
	tw_init(&c, 3, CB_ACQUIRE);

	assert_int_equal(tw_wait(&a), -EAGAIN); /* unknown key: go ahead */
	assert_int_equal(acq(cur, cur_key, 0, &retry), 0);
	assert_int_equal(tw_wait(&a), -EAGAIN); /* a slot is free */
	assert_int_equal(acq(cur, cur_key, 0, &retry), 0);
	assert_int_equal(acq(cur, cur_key, 0, &retry), -EBUSY);
	assert_int_equal(retry, UINT64_MAX);
	assert_int_equal(tw_wait(&a), 0);
	assert_int_equal(tw_wait(&a), -EALREADY);
	assert_int_equal(tw_wait(&b), 0);
	assert_int_equal(tw_wait(&c), 0);
	assert_true(td_rl_waiter_pending(&b.w));
	td_ratelimit_unwait(cur, &b.w);
	assert_false(td_rl_waiter_pending(&b.w));
	td_ratelimit_unwait(cur, &b.w); /* no-op */

	/* One release wakes exactly one waiter, in order. */
	rel(cur, cur_key);
	assert_int_equal(nwoken, 1);
	assert_int_equal(woken[0], 1);
	assert_int_equal(a.rc, 0);
	assert_true(td_rl_waiter_pending(&c.w));
	rel(cur, cur_key);
	assert_int_equal(nwoken, 2);
	assert_int_equal(woken[1], 3);
	assert_int_equal(c.rc, 0);
	assert_int_equal(b.rc, 1); /* never called */
	rel(cur, cur_key);
	rel(cur, cur_key);
	rel(cur, cur_key); /* unmatched: ignored */
	assert_int_equal(nwoken, 2);
	/* Two slots again, not three. */
	assert_int_equal(acq(cur, cur_key, 0, NULL), 0);
	assert_int_equal(acq(cur, cur_key, 0, NULL), 0);
	assert_int_equal(acq(cur, cur_key, 0, NULL), -EBUSY);
	td_ratelimit_free(cur);
}

/* 100 waiters on a cap of 1; every third cancelled; strict FIFO. */
static void inflight_many(void **state)
{
	enum { W = 100 };
	struct tw *t = calloc(W, sizeof(*t));

	assert_non_null(t);
	cur = mk(0, 1, 1);
	cur_key = "http://h:80";
	nwoken = 0;
	assert_int_equal(acq(cur, cur_key, 0, NULL), 0);
	for (int i = 0; i < W; i++) {
		tw_init(&t[i], i, CB_ACQUIRE);
		assert_int_equal(acq(cur, cur_key, 0, NULL), -EBUSY);
		assert_int_equal(tw_wait(&t[i]), 0);
	}
	for (int i = 0; i < W; i += 3)
		td_ratelimit_unwait(cur, &t[i].w);
	for (int round = 0; round < W; round++) {
		size_t before = nwoken;
		rel(cur, cur_key);
		assert_true(nwoken - before <= 1);
	}
	size_t n = 0;
	for (int i = 0; i < W; i++) {
		if (i % 3 == 0)
			continue;
		assert_int_equal(woken[n], i);
		assert_int_equal(t[i].rc, 0);
		n++;
	}
	assert_int_equal(nwoken, n);
	td_ratelimit_free(cur);
	free(t);
}

/* A callback that does not take the slot passes it on to the next waiter. */
static void inflight_pass_on(void **state)
{
	struct tw a, b, c, d;

	cur = mk(0, 1, 1);
	cur_key = "http://h:80";
	nwoken = 0;
	tw_init(&a, 1, CB_NOTHING);
	tw_init(&b, 2, CB_ACQUIRE_RELEASE);
	tw_init(&c, 3, CB_REWAIT);
	tw_init(&d, 4, CB_ACQUIRE);
	assert_int_equal(acq(cur, cur_key, 0, NULL), 0);
	assert_int_equal(tw_wait(&a), 0);
	assert_int_equal(tw_wait(&b), 0);
	assert_int_equal(tw_wait(&c), 0);
	assert_int_equal(tw_wait(&d), 0);
	rel(cur, cur_key);
	assert_int_equal(nwoken, 4);
	assert_int_equal(woken[0], 1);
	assert_int_equal(woken[1], 2);
	assert_int_equal(b.rc, 0);           /* took it and gave it back */
	assert_int_equal(woken[2], 3);
	assert_int_equal(c.rewait_rc, -EAGAIN);
	assert_false(td_rl_waiter_pending(&c.w));
	assert_int_equal(woken[3], 4);
	assert_int_equal(d.rc, 0);           /* d holds the slot */
	assert_int_equal(acq(cur, cur_key, 0, NULL), -EBUSY);
	td_ratelimit_free(cur);
}

/* Rate and cap together: a woken waiter may be told to wait for a time. */
static void inflight_and_rate(void **state)
{
	struct tw a;
	uint64_t retry;

	cur = mk(S(1), 1, 1);
	cur_key = "http://h:80";
	nwoken = 0;
	tw_init(&a, 1, CB_ACQUIRE);
	assert_int_equal(acq(cur, cur_key, 0, &retry), 0);   /* TAT 1 s */
	assert_int_equal(acq(cur, cur_key, 0, &retry), -EBUSY); /* cap first */
	assert_int_equal(tw_wait(&a), 0);
	sim_now = MS(300);
	rel(cur, cur_key);
	assert_int_equal(nwoken, 1);
	assert_int_equal(a.rc, TD_EFULL);
	assert_int_equal(a.retry, S(1));
	assert_false(td_rl_waiter_pending(&a.w));
	assert_int_equal(acq(cur, cur_key, S(1), &retry), 0);
	sim_now = 0;
	td_ratelimit_free(cur);
}

/* Raising the cap: the next release wakes as many as there are slots. */
static void inflight_rule_change(void **state)
{
	struct tw t[5];

	cur = mk(0, 1, 1);
	cur_key = "http://h:80";
	nwoken = 0;
	assert_int_equal(acq(cur, cur_key, 0, NULL), 0);
	for (int i = 0; i < 5; i++) {
		tw_init(&t[i], i, CB_ACQUIRE);
		assert_int_equal(tw_wait(&t[i]), 0);
	}
	struct td_rl_rule r = {0, 1, 3};
	assert_int_equal(td_ratelimit_set_rule(cur, "h", &r), 0);
	rel(cur, cur_key);
	assert_int_equal(nwoken, 3);
	for (int i = 0; i < 3; i++)
		assert_int_equal(t[i].rc, 0);
	assert_true(td_rl_waiter_pending(&t[3].w));
	/* Freeing detaches pending waiters without calling them. */
	td_ratelimit_free(cur);
	assert_false(td_rl_waiter_pending(&t[3].w));
	assert_false(td_rl_waiter_pending(&t[4].w));
	assert_int_equal(nwoken, 3);
}

/*
 * A callback that creates many keys (so the table is swept) while its own
 * key has nothing in flight and no waiter left: the release that called it
 * still holds the key and must find it alive.
 */
static void inflight_sweep_in_callback(void **state)
{
	struct tw a;

	cur = mk(0, 1, 0);
	struct td_rl_rule capped = {0, 1, 1};
	assert_int_equal(td_ratelimit_set_rule(cur, "h", &capped), 0);
	cur_key = "http://h:80";
	nwoken = 0;
	tw_init(&a, 1, CB_CHURN);
	assert_int_equal(acq(cur, cur_key, 0, NULL), 0);
	assert_int_equal(tw_wait(&a), 0);
	rel(cur, cur_key);
	assert_int_equal(nwoken, 1);
	assert_true(td_ratelimit_keys(cur) < 300);
	assert_int_equal(acq(cur, cur_key, 0, NULL), 0);
	assert_int_equal(acq(cur, cur_key, 0, NULL), -EBUSY);
	td_ratelimit_free(cur);
}

/*
 * Freeing the limiter from a waiter callback, even two releases deep, is
 * deferred until the outermost release returns; nobody else is called.
 */
static void inflight_free_in_callback(void **state)
{
	struct tw a, b, c, d;

	cur = mk(0, 1, 1);
	nwoken = 0;
	tw_init(&a, 1, CB_RELEASE_OTHER);
	tw_init(&b, 2, CB_FREE);
	tw_init(&c, 3, CB_ACQUIRE);
	tw_init(&d, 4, CB_ACQUIRE);
	cur_key = "http://other:80";
	assert_int_equal(acq(cur, cur_key, 0, NULL), 0);
	assert_int_equal(tw_wait(&b), 0);
	assert_int_equal(tw_wait(&d), 0);
	cur_key = "http://h:80";
	assert_int_equal(acq(cur, cur_key, 0, NULL), 0);
	assert_int_equal(tw_wait(&a), 0);
	assert_int_equal(tw_wait(&c), 0);
	/* h: a's callback releases "other", whose b frees the limiter. */
	rel(cur, cur_key);
	assert_int_equal(nwoken, 2);
	assert_int_equal(woken[0], 1);
	assert_int_equal(woken[1], 2);
	assert_false(td_rl_waiter_pending(&c.w)); /* detached, never called */
	assert_false(td_rl_waiter_pending(&d.w));
	cur = NULL; /* freed: ASan would report a leak or a use after free */
}

/* ---- rules ---- */

static uint64_t iv(struct td_ratelimit *rl, const char *key)
{
	struct td_rl_rule r;
	assert_int_equal(td_ratelimit_rule_for(rl, key, strlen(key), &r), 0);
	return r.interval_ns;
}

static void rule_precedence(void **state)
{
	static const struct {
		const char *pat;
		uint64_t iv;
	} rules[] = {
		{"api.example.com", 2},
		{"api.example.com:8443", 3},
		{"*.example.com", 4},
		{"*.eu.example.com", 5},
		{"[::1]:8080", 6},
		{"[::1]", 7},
		{"EXAMPLE.org.", 8},
		{"Host.Example.NET:0443", 9},
	};
	static const struct {
		const char *key;
		uint64_t iv;
	} cases[] = {
		{"https://api.example.com:8443", 3}, /* host:port over host */
		{"https://api.example.com:443", 2},
		{"http://api.example.com:80", 2},
		{"http://x.example.com:80", 4},
		{"http://a.b.example.com:80", 4},    /* any depth */
		{"http://x.eu.example.com:80", 5},   /* longest wildcard */
		{"http://a.b.eu.example.com:80", 5},
		{"http://eu.example.com:80", 4},     /* not *.eu.example.com itself */
		{"http://example.com:80", 1},        /* not *.example.com itself */
		{"http://notexample.com:80", 1},
		{"http://api.example.com.evil:80", 1},
		{"http://[::1]:8080", 6},
		{"http://[::1]:80", 7},
		{"http://[::2]:8080", 1},
		{"http://example.org:80", 8},
		{"https://host.example.net:443", 9},
		{"http://host.example.net:80", 1},
		{"HTTP://API.Example.COM:443", 2},   /* matched case-insensitively */
		{"api.example.com", 2},              /* a bare key is a host */
		{"conn-42", 1},
	};
	struct td_ratelimit *rl = mk(1, 1, 0);
	for (size_t i = 0; i < TD_ARRAY_LEN(rules); i++) {
		struct td_rl_rule r = {rules[i].iv, 1, 0};
		assert_int_equal(td_ratelimit_set_rule(rl, rules[i].pat, &r), 0);
	}
	for (size_t i = 0; i < TD_ARRAY_LEN(cases); i++)
		if (iv(rl, cases[i].key) != cases[i].iv)
			fail_msg("%s: rule %llu, want %llu", cases[i].key,
				 (unsigned long long)iv(rl, cases[i].key),
				 (unsigned long long)cases[i].iv);

	/* Replacing a rule; the default by name and by NULL. */
	struct td_rl_rule r = {20, 1, 0};
	assert_int_equal(td_ratelimit_set_rule(rl, "*.EXAMPLE.com", &r), 0);
	assert_int_equal(iv(rl, "http://x.example.com:80"), 20);
	r.interval_ns = 30;
	assert_int_equal(td_ratelimit_set_rule(rl, "default", &r), 0);
	assert_int_equal(iv(rl, "conn-42"), 30);
	r.interval_ns = 31;
	assert_int_equal(td_ratelimit_set_rule(rl, NULL, &r), 0);
	assert_int_equal(iv(rl, "conn-42"), 31);

	/* Invalid patterns and rules. */
	static const char *bad_pat[] = {"", "*", "*.", "*.a.com:80", "a b", "a.*.com",
					"h:0", "h:", "h:65536", "[::1", "[zz]", "[::1]x",
					"h:80:80", "*.[::1]"};
	for (size_t i = 0; i < TD_ARRAY_LEN(bad_pat); i++)
		if (td_ratelimit_set_rule(rl, bad_pat[i], &r) != -EINVAL)
			fail_msg("pattern '%s' accepted", bad_pat[i]);
	struct td_rl_rule b0 = {S(1), 0, 0}, slow = {TD_RL_SPAN_MAX + 1, 1, 0};
	struct td_rl_rule wide = {S(1), 1000000002, 0}, edge = {S(1), 1000000001, 0};
	assert_int_equal(td_ratelimit_set_rule(rl, "h", &b0), -EINVAL);
	assert_int_equal(td_ratelimit_set_rule(rl, "h", &slow), -EINVAL);
	assert_int_equal(td_ratelimit_set_rule(rl, "h", &wide), -EINVAL);
	assert_int_equal(td_ratelimit_set_rule(rl, "h", &edge), 0); /* tau = 10^18 */
	assert_int_equal(td_ratelimit_rule_for(rl, "", 0, &r), -EINVAL);
	td_ratelimit_free(rl);

	struct td_ratelimit *bad = NULL;
	assert_int_equal(td_ratelimit_new(&bad, &b0), -EINVAL);
	assert_null(bad);
	assert_int_equal(td_ratelimit_new(&bad, NULL), 0); /* no limit at all */
	for (int i = 0; i < 1000; i++)
		assert_int_equal(acq(bad, "k", 0, NULL), 0);
	td_ratelimit_free(bad);
	td_ratelimit_free(NULL);
}

/* A rule change applies at once and keeps the key's TAT. */
static void rule_change_keeps_state(void **state)
{
	uint64_t retry;
	struct td_ratelimit *rl = mk(S(1), 1, 0);
	const char *k = "http://api.example.com:80";

	assert_int_equal(acq(rl, k, 0, &retry), 0); /* TAT 1 s */
	struct td_rl_rule fast = {MS(100), 1, 0};
	assert_int_equal(td_ratelimit_set_rule(rl, "*.example.com", &fast), 0);
	assert_int_equal(acq(rl, k, 0, &retry), TD_EFULL);
	assert_int_equal(retry, S(1));
	assert_int_equal(acq(rl, k, S(1), &retry), 0); /* TAT 1.1 s */
	assert_int_equal(acq(rl, k, S(1), &retry), TD_EFULL);
	assert_int_equal(retry, MS(1100));
	td_ratelimit_free(rl);
}

/* ---- keys from URLs ---- */

static void url_keys(void **state)
{
	static const struct {
		const char *url, *key;
	} cases[] = {
		{"http://example.com/", "http://example.com:80"},
		{"https://Example.COM/path?q=1#f", "https://example.com:443"},
		{"HTTPS://EXAMPLE.com:443", "https://example.com:443"},
		{"http://user:pass@Host.example:8080/x", "http://host.example:8080"},
		{"http://user@name@host/", "http://host:80"},
		{"http://u:p@[::1]/", "http://[::1]:80"},
		{"http://[::1]", "http://[::1]:80"},
		{"https://[2001:DB8::A]:8443/x", "https://[2001:db8::a]:8443"},
		{"https://[::ffff:10.0.0.1]/", "https://[::ffff:10.0.0.1]:443"},
		{"http://[fe80::1%25eth0]:81", "http://[fe80::1%25eth0]:81"},
		{"http://example.com:/", "http://example.com:80"},
		{"http://example.com:0080", "http://example.com:80"},
		{"http://example.com./x", "http://example.com:80"},
		{"http://example.com?x=/", "http://example.com:80"},
		{"http://example.com#a@b", "http://example.com:80"},
		{"http://10.0.0.1:8080", "http://10.0.0.1:8080"},
		{"ws://h", "ws://h:80"},
		{"wss://h", "wss://h:443"},
		{"ftp://h:21/", "ftp://h:21"},
		{"svc+tcp://h:1", "svc+tcp://h:1"},
	};
	static const char *bad[] = {
		"", "example.com", "http:/x", "http://", "http:///path", "http://user@/",
		"http://h:0", "http://h:65536", "http://h:8x", "http://h:80:80",
		"http://[::1", "http://[::1]x", "http://[zz]", "http://[1.2.3.4]",
		"http://a b/", "http://evil.com\\@good.com/", "1http://x", "ftp://h",
		"http://.", "http://h\t/", "://h", "http://:80/",
	};
	char buf[TD_RL_KEY_MAX + 1];

	for (size_t i = 0; i < TD_ARRAY_LEN(cases); i++) {
		memset(buf, 'x', sizeof(buf));
		int rc = td_ratelimit_key_from_url(guarded_str(cases[i].url), buf, sizeof(buf));
		if (rc != 0 || strcmp(buf, cases[i].key))
			fail_msg("%s: rc %d key '%.40s', want '%s'", cases[i].url, rc, buf,
				 cases[i].key);
	}
	for (size_t i = 0; i < TD_ARRAY_LEN(bad); i++)
		if (td_ratelimit_key_from_url(guarded_str(bad[i]), buf, sizeof(buf)) != -EINVAL)
			fail_msg("'%s' accepted as '%s'", bad[i], buf);
	assert_int_equal(td_ratelimit_key_from_url(NULL, buf, sizeof(buf)), -EINVAL);

	/* The buffer must hold the key and its NUL. */
	const char *want = "http://example.com:80";
	assert_int_equal(td_ratelimit_key_from_url(guarded_str("http://example.com"), buf,
						   strlen(want)), -EINVAL);
	assert_int_equal(td_ratelimit_key_from_url(guarded_str("http://example.com"), buf,
						   strlen(want) + 1), 0);
	assert_string_equal(buf, want);

	/* Keys up to TD_RL_KEY_MAX bytes: "http://" + host + ":80". */
	char url[700];
	memcpy(url, "http://", 7);
	memset(url + 7, 'a', 502);
	url[7 + 502] = '\0';
	assert_int_equal(td_ratelimit_key_from_url(guarded_str(url), buf, sizeof(buf)), 0);
	assert_int_equal(strlen(buf), TD_RL_KEY_MAX);
	url[7 + 502] = 'a';
	url[7 + 503] = '\0';
	assert_int_equal(td_ratelimit_key_from_url(guarded_str(url), buf, sizeof(buf)), -EINVAL);
	memset(url + 7, 'a', 600);
	url[7 + 600] = '\0';
	assert_int_equal(td_ratelimit_key_from_url(guarded_str(url), buf, sizeof(buf)), -EINVAL);

	/* The key feeds the rules. */
	struct td_ratelimit *rl = mk(1, 1, 0);
	struct td_rl_rule r = {5, 1, 0};
	assert_int_equal(td_ratelimit_set_rule(rl, "api.example.com:443", &r), 0);
	assert_int_equal(td_ratelimit_key_from_url(guarded_str("https://U@API.example.com./v1"),
						   buf, sizeof(buf)), 0);
	assert_int_equal(iv(rl, buf), 5);
	td_ratelimit_free(rl);
}

/* ---- rule text ---- */

static void rule_parse(void **state)
{
	static const struct {
		const char *text, *pat;
		uint64_t iv;
		uint32_t burst, inflight;
	} ok[] = {
		{"api.example.com=5/s,burst=10,inflight=4", "api.example.com", MS(200), 10, 4},
		{"default=20/s,burst=20", "default", MS(50), 20, 0},
		{"  *.Example.com = 0.5/s , burst = 2 ", "*.example.com", S(2), 2, 0},
		{"h:08443=90/m", "h:8443", 666666667, 1, 0},  /* 60e9 / 90 rounded up */
		{"h=2.5/h", "h", S(1440), 1, 0},
		{"h=3/s", "h", 333333334, 1, 0},
		{"h=.25/s", "h", S(4), 1, 0},
		{"h=1000000000/s", "h", 1, 1, 0},
		{"h=0.000001/s", "h", S(1000000), 1, 0},
		{"h=unlimited,inflight=8", "h", 0, 1, 8},
		{"[::1]:8080=1/s,inflight=0", "[::1]:8080", S(1), 1, 0},
		{"DEFAULT=1/m", "default", S(60), 1, 0},
		{"h=1/s,inflight=4294967295", "h", S(1), 1, UINT32_MAX},
	};
	static const struct {
		const char *text, *msg;
	} bad[] = {
		{"api.example.com", "rule 'api.example.com': expected PATTERN=RATE[,burst=N][,inflight=N]"},
		{"=5/s", "no pattern before '='"},
		{"a b=5/s", "pattern 'a b': invalid character in host"},
		{"*.a.com:80=1/s", "pattern '*.a.com:80': a wildcard pattern takes no port"},
		{"*=1/s", "a wildcard must look like *.example.com"},
		{"h:0=1/s", "pattern 'h:0': port must be 1..65535"},
		{"h:=1/s", "pattern 'h:': empty port"},
		{"h=", "pattern 'h': no rate"},
		{"h= ,burst=2", "pattern 'h': no rate"},
		{"h=5", "rate '5': expected N/s, N/m, N/h or unlimited"},
		{"h=5/d", "rate '5/d': the unit must be /s, /m or /h"},
		{"h=abc/s", "rate 'abc/s': expected a number"},
		{"h=-1/s", "expected a number"},
		{"h=1e3/s", "expected a number"},
		{"h=0/s", "rate '0/s': must be greater than zero"},
		{"h=0.0/m", "must be greater than zero"},
		{"h=2000000000/s", "faster than 1000000000/s"},
		{"h=99999999999999999999999/s", "faster than 1000000000/s"},
		{"h=0.1234567/s", "at most 6 digits after the decimal point"},
		{"h=0.000001/h", "slower than one per 10^18 ns"},
		{"h=1/s,burst=0", "pattern 'h': burst must be at least 1"},
		{"h=1/s,burst=x", "option 'burst=x': expected a whole number"},
		{"h=1/s,burst=-1", "expected a whole number"},
		{"h=1/s,burst=", "option 'burst=': expected a whole number"},
		{"h=1/s,burst=4294967296", "expected a whole number"},
		{"h=1/s,foo=1", "option 'foo=1': expected burst=N or inflight=N"},
		{"h=1/s,burst", "option 'burst': expected burst=N or inflight=N"},
		{"h=1/s,", "option '': expected burst=N or inflight=N"},
		{"h=1/s,burst=2,burst=3", "option 'burst' given twice"},
		{"h=1/s,inflight=1,inflight=1", "option 'inflight' given twice"},
		{"h=1/h,burst=1000000", "burst window"},
	};
	char pat[TD_RL_KEY_MAX + 1], err[256];
	struct td_rl_rule r;

	for (size_t i = 0; i < TD_ARRAY_LEN(ok); i++) {
		err[0] = '\0';
		int rc = td_ratelimit_parse_rule(guarded_str(ok[i].text), pat, sizeof(pat), &r, err,
						 sizeof(err));
		if (rc)
			fail_msg("'%s': %s", ok[i].text, err);
		assert_string_equal(pat, ok[i].pat);
		if (r.interval_ns != ok[i].iv || r.burst != ok[i].burst ||
		    r.max_inflight != ok[i].inflight)
			fail_msg("'%s': %llu ns burst %u inflight %u", ok[i].text,
				 (unsigned long long)r.interval_ns, r.burst, r.max_inflight);
	}
	for (size_t i = 0; i < TD_ARRAY_LEN(bad); i++) {
		err[0] = '\0';
		int rc = td_ratelimit_parse_rule(guarded_str(bad[i].text), pat, sizeof(pat), &r, err,
						 sizeof(err));
		if (rc != -EINVAL || !strstr(err, bad[i].msg))
			fail_msg("'%s': rc %d, message '%s', want '%s'", bad[i].text, rc, err,
				 bad[i].msg);
	}
	/* No room for the pattern; no error buffer. */
	assert_int_equal(td_ratelimit_parse_rule(guarded_str("api.example.com=1/s"), pat, 15, &r,
						 err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "longer than the output buffer"));
	assert_int_equal(td_ratelimit_parse_rule(guarded_str("api.example.com=1/s"), pat, 16, &r,
						 NULL, 0), 0);
	assert_int_equal(td_ratelimit_parse_rule(guarded_str("x"), pat, sizeof(pat), &r, NULL, 0),
			 -EINVAL);
}

/* ---- config files ---- */

static char tmpdir[64];

static const char *write_file_n(const char *name, const char *text, size_t n)
{
	static char path[128];
	snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	assert_int_equal(fwrite(text, 1, n, f), n);
	assert_int_equal(fclose(f), 0);
	return path;
}

static const char *write_file(const char *name, const char *text)
{
	return write_file_n(name, text, strlen(text));
}

static void expect_load_error(struct td_ratelimit *rl, const char *name, const char *text,
			      const char *msg)
{
	char err[512], want[512];
	const char *path = write_file(name, text);
	snprintf(want, sizeof(want), "%s:%s", path, msg);
	err[0] = '\0';
	int rc = td_ratelimit_load_file(rl, path, err, sizeof(err));
	if (rc != -EINVAL || strcmp(err, want))
		fail_msg("%s: rc %d, '%s', want '%s'", name, rc, err, want);
}

static void config_file(void **state)
{
	char err[512];
	struct td_ratelimit *rl = mk(S(1), 1, 0);

	snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_ratelimit.XXXXXX");
	assert_non_null(mkdtemp(tmpdir));

	const char *path = write_file("good.conf",
		"# limits for the poll triggers\n"
		"default = 20/s, burst=20\n"
		"\n"
		"   \t\n"
		"api.example.com=5/s,burst=10,inflight=4   # the slow API\n"
		"*.example.com=50/m\r\n"
		"[::1]:8080=unlimited,inflight=2");         /* no final newline */
	assert_int_equal(td_ratelimit_load_file(rl, path, err, sizeof(err)), 0);
	struct td_rl_rule r;
	const char *k = "https://api.example.com:443";
	assert_int_equal(td_ratelimit_rule_for(rl, k, strlen(k), &r), 0);
	assert_int_equal(r.interval_ns, MS(200));
	assert_int_equal(r.burst, 10);
	assert_int_equal(r.max_inflight, 4);
	assert_int_equal(iv(rl, "http://x.example.com:80"), S(60) / 50);
	assert_int_equal(iv(rl, "http://other:80"), MS(50));
	k = "http://[::1]:8080";
	assert_int_equal(td_ratelimit_rule_for(rl, k, strlen(k), &r), 0);
	assert_int_equal(r.interval_ns, 0);
	assert_int_equal(r.max_inflight, 2);

	/* Errors name the line; a file with an error changes nothing. */
	expect_load_error(rl, "bad_rate.conf",
			  "# header\n"
			  "a.com=1/s\n"
			  "\n"
			  "b.com=1/x\n",
			  "4: rate '1/x': the unit must be /s, /m or /h");
	assert_int_equal(iv(rl, "http://a.com:80"), MS(50));
	expect_load_error(rl, "dup.conf",
			  "a.com=1/s\n"
			  "# again, spelled differently\n"
			  "A.COM.=2/s\n",
			  "3: pattern 'a.com' already set on line 1");
	expect_load_error(rl, "dup_default.conf",
			  "default=1/s\n"
			  "default=2/s,burst=2\n",
			  "2: pattern 'default' already set on line 1");
	expect_load_error(rl, "no_eq.conf", "a.com=1/s\nb.com 2/s\n",
			  "2: rule 'b.com 2/s': expected PATTERN=RATE[,burst=N][,inflight=N]");
	expect_load_error(rl, "bad_opt.conf", "\n\n\n\n\n\n\n\n\nb.com=1/s,bust=3 # typo\n",
			  "10: option 'bust=3': expected burst=N or inflight=N");
	static const char nul[] = "a.com=1/s\nb.com=1/s\0x\n";
	path = write_file_n("nul.conf", nul, sizeof(nul) - 1);
	assert_int_equal(td_ratelimit_load_file(rl, path, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "nul.conf:2: NUL byte in line"));
	assert_int_equal(iv(rl, "http://a.com:80"), MS(50));
	assert_int_equal(iv(rl, "http://b.com:80"), MS(50));
	assert_int_equal(iv(rl, "http://other:80"), MS(50));

	/* Loading adds to and replaces earlier rules. */
	path = write_file("more.conf", "a.com=4/s\napi.example.com=1/s\n");
	assert_int_equal(td_ratelimit_load_file(rl, path, err, sizeof(err)), 0);
	assert_int_equal(iv(rl, "http://a.com:80"), MS(250));
	assert_int_equal(iv(rl, "http://api.example.com:80"), S(1));
	assert_int_equal(iv(rl, "http://x.example.com:80"), S(60) / 50);

	path = write_file("empty.conf", "");
	assert_int_equal(td_ratelimit_load_file(rl, path, err, sizeof(err)), 0);
	path = write_file("comments.conf", "# nothing\n\n  # here\n");
	assert_int_equal(td_ratelimit_load_file(rl, path, err, sizeof(err)), 0);

	char missing[160];
	snprintf(missing, sizeof(missing), "%s/missing.conf", tmpdir);
	assert_int_equal(td_ratelimit_load_file(rl, missing, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, missing));
	assert_non_null(strstr(err, "No such file"));
	assert_int_equal(td_ratelimit_load_file(rl, tmpdir, err, sizeof(err)), -EISDIR);

	td_ratelimit_free(rl);
}

/* Runs whether config_file passed or not. */
static int config_teardown(void **state)
{
	static const char *names[] = {"good.conf", "bad_rate.conf", "dup.conf",
				      "dup_default.conf", "no_eq.conf", "bad_opt.conf",
				      "nul.conf", "more.conf", "empty.conf", "comments.conf"};
	if (!tmpdir[0])
		return 0;
	for (size_t i = 0; i < TD_ARRAY_LEN(names); i++) {
		char p[160];
		snprintf(p, sizeof(p), "%s/%s", tmpdir, names[i]);
		unlink(p);
	}
	return rmdir(tmpdir);
}

/* ---- eviction ---- */

static void eviction_bounded(void **state)
{
	enum { N = 100000 };
	char k[64];
	uint64_t retry;
	struct td_ratelimit *rl = mk(MS(1), 1, 0); /* 1000/s per key */
	size_t base = td_ratelimit_memory(rl), peak = 0;

	/*
	 * 100,000 hosts, one request each, one per ms: by the time the next
	 * one comes every earlier key is idle (TAT <= now), so the table never
	 * outgrows its initial size.
	 */
	for (int i = 0; i < N; i++) {
		snprintf(k, sizeof(k), "http://h%d.example:80", i);
		assert_int_equal(acq(rl, k, MS(i), &retry), 0);
		rel(rl, k);
		assert_true(td_ratelimit_keys(rl) <= 64);
		if (td_ratelimit_memory(rl) > peak)
			peak = td_ratelimit_memory(rl);
	}
	assert_true(peak < base + 64 * 160);

	/*
	 * 100,000 hosts inside one second at 1/s: all stay active (TAT in the
	 * future), so all are kept; then a sweep after the second frees them.
	 */
	struct td_rl_rule slow = {S(1), 1, 0};
	assert_int_equal(td_ratelimit_set_rule(rl, "*.busy", &slow), 0);
	uint64_t t0 = S(1000);
	assert_int_equal(acq(rl, "http://held.busy:80", t0, &retry), 0); /* never released */
	for (int i = 0; i < N; i++) {
		snprintf(k, sizeof(k), "http://h%d.busy:80", i);
		assert_int_equal(acq(rl, k, t0 + (uint64_t)i * 9000, &retry), 0);
		rel(rl, k);
	}
	assert_int_equal(td_ratelimit_keys(rl), N + 1);
	/* Under 200 bytes a host, table included. */
	assert_true(td_ratelimit_memory(rl) - base < (size_t)(N + 1) * 200);
	for (int i = 0; i < N; i += 997) { /* none forgot its TAT */
		snprintf(k, sizeof(k), "http://h%d.busy:80", i);
		assert_int_equal(acq(rl, k, t0 + S(1) - 1, &retry), TD_EFULL);
		assert_int_equal(retry, t0 + (uint64_t)i * 9000 + S(1));
	}
	assert_int_equal(td_ratelimit_sweep(rl, t0 + S(1) - 1), 0);
	assert_int_equal(td_ratelimit_sweep(rl, t0 + S(2)), N);
	assert_int_equal(td_ratelimit_keys(rl), 1); /* in flight: kept */
	assert_true(td_ratelimit_memory(rl) < base + 256);
	/* An evicted key is as good as new: a full burst. */
	assert_int_equal(acq(rl, "http://h5.busy:80", t0 + S(2), &retry), 0);
	rel(rl, "http://h5.busy:80");
	rel(rl, "http://held.busy:80");
	assert_int_equal(td_ratelimit_sweep(rl, t0 + S(4)), 2);
	assert_int_equal(td_ratelimit_keys(rl), 0);
	assert_true(td_ratelimit_memory(rl) <= base + 64); /* the one rule */
	td_ratelimit_free(rl);
}

/* Keys are byte strings of 1..TD_RL_KEY_MAX bytes. */
static void key_limits(void **state)
{
	char k[TD_RL_KEY_MAX + 1];
	struct td_rl_waiter w;
	struct td_ratelimit *rl = mk(S(1), 1, 0);

	memset(k, 'k', sizeof(k));
	assert_int_equal(td_ratelimit_acquire(rl, k, 0, 0, NULL), -EINVAL);
	assert_int_equal(td_ratelimit_acquire(rl, k, TD_RL_KEY_MAX + 1, 0, NULL), -EINVAL);
	assert_int_equal(td_ratelimit_acquire(rl, k, TD_RL_KEY_MAX, 0, NULL), 0);
	assert_int_equal(td_ratelimit_acquire(rl, k, TD_RL_KEY_MAX, 0, NULL), TD_EFULL);
	assert_int_equal(td_ratelimit_acquire(rl, k, TD_RL_KEY_MAX - 1, 0, NULL), 0);
	td_rl_waiter_init(&w, NULL);
	assert_int_equal(td_ratelimit_wait(rl, k, 0, &w), -EINVAL);
	td_ratelimit_release(rl, k, 0);
	td_ratelimit_release(rl, k, TD_RL_KEY_MAX + 1);
	/* Embedded NULs are just bytes. */
	assert_int_equal(td_ratelimit_acquire(rl, "a\0b", 3, 0, NULL), 0);
	assert_int_equal(td_ratelimit_acquire(rl, "a\0c", 3, 0, NULL), 0);
	td_ratelimit_free(rl);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(gcra_schedule),
		cmocka_unit_test(gcra_fractional_interval),
		cmocka_unit_test(gcra_window_bound),
		cmocka_unit_test(exact_retry),
		cmocka_unit_test(inflight_fifo),
		cmocka_unit_test(inflight_many),
		cmocka_unit_test(inflight_pass_on),
		cmocka_unit_test(inflight_and_rate),
		cmocka_unit_test(inflight_rule_change),
		cmocka_unit_test(inflight_sweep_in_callback),
		cmocka_unit_test(inflight_free_in_callback),
		cmocka_unit_test(rule_precedence),
		cmocka_unit_test(rule_change_keeps_state),
		cmocka_unit_test(url_keys),
		cmocka_unit_test(rule_parse),
		cmocka_unit_test_teardown(config_file, config_teardown),
		cmocka_unit_test(eviction_bounded),
		cmocka_unit_test(key_limits),
	};
	return cmocka_run_group_tests(tests, guard_setup, guard_teardown);
}
