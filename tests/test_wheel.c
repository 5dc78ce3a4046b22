/* Unit tests for the hierarchical timer wheel (engine/wheel.c). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "triggerd/triggerd.h"
#include "triggerd/wheel.h"

#define SPAN (UINT64_C(1) << 36)
#define YEAR (UINT64_C(365) * 24 * 3600 * 1000)

/* A test timer: records what it was asked for and what happened. */
struct rec {
	struct td_timer timer;
	uint64_t want;     /* expiry last requested */
	uint64_t fired_at; /* now of the last firing */
	unsigned int fired;
	unsigned int id;
	bool armed;        /* expected to fire once more */
	void (*hook)(struct rec *r, uint64_t now);
	struct rec *other; /* what a hook acts on */
	uint64_t arg;
};

struct fire {
	unsigned int id;
	uint64_t now;
};

#define LOG_MAX (1u << 16)
static struct fire fire_log[LOG_MAX];
static size_t log_len;
static struct td_wheel *cur; /* the wheel rec_cb and the hooks act on */

static uint64_t rng_state;

static uint64_t rnd(void)
{
	/* splitmix64 */
	uint64_t z = (rng_state += UINT64_C(0x9e3779b97f4a7c15));

	z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
	return z ^ (z >> 31);
}

static void rec_cb(struct td_timer *t, uint64_t now)
{
	struct rec *r = td_container_of(t, struct rec, timer);

	assert_false(td_timer_pending(t));
	assert_true(r->armed);
	assert_int_equal(t->expires, r->want);
	assert_true(now >= t->expires);
	assert_int_equal(now, cur->now);
	r->armed = false;
	r->fired++;
	r->fired_at = now;
	assert_true(log_len < LOG_MAX);
	fire_log[log_len].id = r->id;
	fire_log[log_len].now = now;
	log_len++;
	if (r->hook)
		r->hook(r, now);
}

static void rec_init(struct rec *r, unsigned int id)
{
	memset(r, 0, sizeof(*r));
	td_timer_init(&r->timer, rec_cb);
	r->id = id;
}

static void arm(struct rec *r, uint64_t expires)
{
	r->want = expires;
	r->armed = true;
	td_wheel_add(cur, &r->timer, expires);
}

static void disarm(struct rec *r)
{
	r->armed = false;
	td_wheel_cancel(cur, &r->timer);
}

static void start(struct td_wheel *w, uint64_t now)
{
	td_wheel_init(w, now);
	cur = w;
	log_len = 0;
}

static const struct td_timer *list_head(const struct td_timer_list *l)
{
	return (const struct td_timer *)(const void *)l;
}

/* Walk one list: links consistent; returns its length. */
static size_t check_list(const struct td_timer_list *l,
			 const struct td_wheel *w, int lvl, unsigned int s)
{
	const struct td_timer *h = list_head(l), *p = h;
	size_t n = 0;

	for (const struct td_timer *t = h->next; t != h; p = t, t = t->next) {
		uint64_t x = t->expires ^ w->now;

		assert_ptr_equal(t->prev, p);
		if (lvl == -1) { /* due */
			assert_true(t->expires <= w->now);
		} else if (lvl == TD_WHEEL_LEVELS) { /* overflow */
			assert_true(t->expires > w->now);
			assert_true(x >> 36 != 0);
		} else {
			unsigned int sh = 6u * (unsigned int)lvl;

			assert_true(t->expires > w->now);
			assert_int_equal(x >> sh >> 6, 0);
			assert_int_not_equal(x >> sh, 0);
			assert_int_equal((t->expires >> sh) & 63, s);
		}
		n++;
	}
	assert_ptr_equal(h->prev, p);
	return n;
}

/*
 * The whole structure against an independent oracle: every timer sits where
 * (expires, now) says, bitmaps match non-empty slots, count matches.
 */
static void check_wheel(const struct td_wheel *w)
{
	size_t n = 0;

	for (int lvl = 0; lvl < TD_WHEEL_LEVELS; lvl++) {
		for (unsigned int s = 0; s < TD_WHEEL_SLOTS; s++) {
			const struct td_timer *h = list_head(&w->slot[lvl][s]);
			bool bit = (w->occupied[lvl] >> s) & 1;

			assert_int_equal(bit, h->next != h);
			n += check_list(&w->slot[lvl][s], w, lvl, s);
		}
	}
	n += check_list(&w->overflow, w, TD_WHEEL_LEVELS, 0);
	n += check_list(&w->due, w, -1, 0);
	assert_int_equal(n, w->count);
	assert_int_equal(n, td_wheel_count(w));
}

/* ---------------------------------------------------------------- basics */

static void test_empty(void **state)
{
	static struct td_wheel w;

	start(&w, 5);
	check_wheel(&w);
	assert_int_equal(td_wheel_count(&w), 0);
	assert_int_equal(td_wheel_next(&w), UINT64_MAX);
	assert_int_equal(td_wheel_advance(&w, 100), 0);
	assert_int_equal(w.now, 100);
	assert_int_equal(td_wheel_advance(&w, 50), 0);
	assert_int_equal(w.now, 100);
	assert_int_equal(td_wheel_advance(&w, UINT64_MAX), 0);
	assert_int_equal(w.now, UINT64_MAX);
	assert_int_equal(td_wheel_next(&w), UINT64_MAX);
}

static void test_same_tick_fifo(void **state)
{
	static struct td_wheel w;
	struct rec r[6];
	const uint64_t base = 1000003, e = base + 5000;

	start(&w, base);
	for (unsigned int i = 0; i < 6; i++)
		rec_init(&r[i], i);
	/* Added at different wheel times: at level 2, then 1, then 0. */
	arm(&r[0], e);
	arm(&r[1], e);
	arm(&r[2], e);
	assert_int_equal(td_wheel_advance(&w, e - 1000), 0);
	arm(&r[3], e);
	assert_int_equal(td_wheel_advance(&w, e - 10), 0);
	arm(&r[4], e);
	arm(&r[5], e - 5);
	arm(&r[1], e); /* a move goes to the back */
	check_wheel(&w);
	assert_int_equal(td_wheel_count(&w), 6);
	assert_int_equal(td_wheel_next(&w), e - 5);

	assert_int_equal(td_wheel_advance(&w, e + 100), 6);
	static const unsigned int order[] = { 5, 0, 2, 3, 4, 1 };
	assert_int_equal(log_len, 6);
	for (unsigned int i = 0; i < 6; i++) {
		assert_int_equal(fire_log[i].id, order[i]);
		assert_int_equal(fire_log[i].now, i == 0 ? e - 5 : e);
		assert_int_equal(r[i].fired, 1);
	}
	assert_int_equal(td_wheel_count(&w), 0);
	assert_int_equal(w.now, e + 100);
}

static void test_move_and_cancel(void **state)
{
	static struct td_wheel w;
	struct rec a, b;

	start(&w, 1000);
	rec_init(&a, 1);
	rec_init(&b, 2);

	/* Cancel of a never-armed timer, twice, is a no-op. */
	td_wheel_cancel(&w, &a.timer);
	td_wheel_cancel(&w, &a.timer);
	assert_int_equal(td_wheel_count(&w), 0);

	/* The only timer of a slot: its bit goes with it. */
	arm(&a, 1100);
	assert_true(td_timer_pending(&a.timer));
	assert_int_not_equal(w.occupied[1], 0);
	disarm(&a);
	assert_false(td_timer_pending(&a.timer));
	for (int l = 0; l < TD_WHEEL_LEVELS; l++)
		assert_int_equal(w.occupied[l], 0);
	assert_int_equal(td_wheel_next(&w), UINT64_MAX);
	disarm(&a);
	assert_int_equal(td_wheel_count(&w), 0);

	/* Overflow too. */
	arm(&a, 1000 + 3 * YEAR);
	assert_int_equal(td_wheel_next(&w), SPAN);
	disarm(&a);
	assert_int_equal(td_wheel_next(&w), UINT64_MAX);

	/* A move keeps count and fires only at the new time. */
	arm(&a, 1100);
	arm(&b, 1100);
	arm(&a, 5000);
	check_wheel(&w);
	assert_int_equal(td_wheel_count(&w), 2);
	assert_int_equal(td_wheel_advance(&w, 4999), 1);
	assert_int_equal(b.fired_at, 1100);
	assert_int_equal(a.fired, 0);
	arm(&a, 4000); /* moved into the past: due */
	check_wheel(&w);
	assert_int_equal(td_wheel_next(&w), 4999);
	disarm(&a);
	assert_int_equal(td_wheel_next(&w), UINT64_MAX);
	assert_int_equal(td_wheel_advance(&w, 6000), 0);
	assert_int_equal(a.fired, 0);

	/* A smaller now is ignored, but what is due still fires, at w->now. */
	arm(&a, 5500);
	arm(&b, 6000);
	assert_int_equal(td_wheel_advance(&w, 10), 2);
	assert_int_equal(w.now, 6000);
	assert_int_equal(a.fired_at, 6000);
	assert_int_equal(b.fired_at, 6000);
	assert_int_equal(fire_log[log_len - 2].id, 1);
	assert_int_equal(td_wheel_count(&w), 0);
}

/* ------------------------------------------------------------ boundaries */

/* One timer at @e from wheel time @base, three ways of getting there. */
static void boundary_case(uint64_t base, uint64_t e)
{
	static struct td_wheel w;
	struct rec r;

	/* Straight to e - 1, then e. */
	start(&w, base);
	rec_init(&r, 0);
	arm(&r, e);
	check_wheel(&w);
	assert_true(td_wheel_next(&w) > base);
	assert_true(td_wheel_next(&w) <= e);
	assert_int_equal(td_wheel_advance(&w, e - 1), 0);
	assert_int_equal(r.fired, 0);
	check_wheel(&w);
	assert_int_equal(td_wheel_next(&w), e);
	assert_int_equal(td_wheel_advance(&w, e), 1);
	assert_int_equal(r.fired_at, e);
	assert_int_equal(td_wheel_count(&w), 0);
	assert_int_equal(td_wheel_next(&w), UINT64_MAX);

	/* Jumping from one td_wheel_next() to the next. */
	start(&w, base);
	rec_init(&r, 0);
	arm(&r, e);
	for (unsigned int steps = 0; !r.fired; steps++) {
		uint64_t n = td_wheel_next(&w);

		assert_true(steps < 20);
		assert_true(n > w.now);
		assert_true(n <= e);
		td_wheel_advance(&w, n);
		assert_int_equal(r.fired, n == e);
		check_wheel(&w);
	}
	assert_int_equal(r.fired_at, e);

	/* The last 130 ticks one by one. */
	start(&w, base);
	rec_init(&r, 0);
	arm(&r, e);
	uint64_t t = e - base > 130 ? e - 130 : base;
	assert_int_equal(td_wheel_advance(&w, t), 0);
	while (t < e) {
		t++;
		assert_int_equal(td_wheel_advance(&w, t), t == e);
		assert_int_equal(r.fired, t == e);
	}
	assert_int_equal(r.fired_at, e);
}

static const uint64_t bases[] = {
	0, 1, 63, 4095, 262143, 1000003, SPAN - 1, SPAN * 5 + 262141,
	UINT64_C(0x123456789abcd), UINT64_MAX - SPAN - 70,
	UINT64_MAX - 4100, UINT64_MAX - 200,
};

static const uint64_t widths[] = {
	64, 4096, UINT64_C(1) << 18, UINT64_C(1) << 24, UINT64_C(1) << 30, SPAN,
};

/*
 * Candidate expiries around each level width, both relative to base and at
 * absolute multiples, skipping ones that would wrap. Returns how many.
 */
static size_t boundary_expiries(uint64_t base, uint64_t *out, size_t max)
{
	size_t n = 0;

	for (size_t i = 0; i < TD_ARRAY_LEN(widths); i++) {
		uint64_t b = widths[i];
		uint64_t centre[3] = {
			base + b, (base / b + 1) * b, (base / b + 2) * b,
		};
		bool ok[3] = {
			base + b > base,
			base / b + 1 <= UINT64_MAX / b,
			base / b + 2 <= UINT64_MAX / b,
		};

		for (int c = 0; c < 3; c++) {
			if (!ok[c])
				continue;
			for (int d = -8; d <= 8; d++) {
				uint64_t e = centre[c] + (uint64_t)(int64_t)d;

				if (d > 0 && e < centre[c])
					continue; /* wrapped */
				if (e <= base)
					continue;
				assert_true(n < max);
				out[n++] = e;
			}
		}
	}
	return n;
}

static void test_boundaries_exhaustive(void **state)
{
	uint64_t es[6 * 3 * 17];

	for (size_t i = 0; i < TD_ARRAY_LEN(bases); i++) {
		size_t n = boundary_expiries(bases[i], es, TD_ARRAY_LEN(es));

		assert_true(n >= 51);
		for (size_t j = 0; j < n; j++)
			boundary_case(bases[i], es[j]);
	}
	/* The very top of the range. */
	for (uint64_t e = UINT64_MAX - 70; e != 0; e++)
		boundary_case(UINT64_MAX - 100, e);
	boundary_case(UINT64_MAX - SPAN - 1, UINT64_MAX);
}

/* All boundary expiries in one wheel at once: bitmaps interact. */
static void test_boundaries_together(void **state)
{
	static struct rec r[6 * 3 * 17];
	uint64_t es[TD_ARRAY_LEN(r)];
	static struct td_wheel w;

	for (size_t i = 0; i < TD_ARRAY_LEN(bases); i++) {
		uint64_t base = bases[i];
		size_t n = boundary_expiries(base, es, TD_ARRAY_LEN(es));

		start(&w, base);
		for (size_t j = 0; j < n; j++) {
			rec_init(&r[j], (unsigned int)j);
			arm(&r[j], es[j]);
		}
		check_wheel(&w);
		for (unsigned int steps = 0; td_wheel_count(&w); steps++) {
			uint64_t n_at = td_wheel_next(&w), min = UINT64_MAX;

			assert_true(steps < 5000);
			for (size_t j = 0; j < n; j++)
				if (r[j].armed && r[j].want < min)
					min = r[j].want;
			assert_true(n_at > w.now);
			assert_true(n_at <= min);
			td_wheel_advance(&w, n_at);
			check_wheel(&w);
			for (size_t j = 0; j < n; j++) {
				assert_int_equal(r[j].fired, es[j] <= n_at);
				if (r[j].fired)
					assert_int_equal(r[j].fired_at, es[j]);
			}
		}
		/* Non-decreasing expiry; FIFO (by index) among equal ones. */
		assert_int_equal(log_len, n);
		for (size_t k = 1; k < log_len; k++) {
			const struct fire *a = &fire_log[k - 1];
			const struct fire *b = &fire_log[k];

			assert_true(b->now >= a->now);
			if (b->now == a->now)
				assert_true(b->id > a->id);
		}
	}
}

/* -------------------------------------------------------------- cascades */

static void test_cascade_levels(void **state)
{
	static struct td_wheel w;
	struct rec a, b;
	const uint64_t l5 = UINT64_C(3) << 30, l4 = UINT64_C(5) << 24,
		       l3 = UINT64_C(7) << 18, l2 = 9 << 12, l1 = 11 << 6,
		       l0 = 13;
	const uint64_t e = l5 + l4 + l3 + l2 + l1 + l0;
	/* The start of each slot the timer passes through, then its expiry. */
	const uint64_t stops[] = {
		l5, l5 + l4, l5 + l4 + l3, l5 + l4 + l3 + l2,
		l5 + l4 + l3 + l2 + l1, e,
	};

	start(&w, 0);
	rec_init(&a, 1);
	rec_init(&b, 2);
	arm(&a, e);
	/* Same top slot; parts from a at level 4. */
	arm(&b, e + (UINT64_C(1) << 24));
	assert_int_equal(w.occupied[5], UINT64_C(1) << 3);
	for (size_t i = 0; i < TD_ARRAY_LEN(stops); i++) {
		assert_int_equal(td_wheel_next(&w), stops[i]);
		assert_int_equal(td_wheel_advance(&w, stops[i] - 1), 0);
		assert_int_equal(td_wheel_advance(&w, stops[i]), i == 5);
		check_wheel(&w);
		/* a moved down exactly one level per stop */
		if (i < 5) {
			int lvl = 4 - (int)i;
			uint64_t d = (e >> (6 * lvl)) & 63;

			assert_true(w.occupied[lvl] & (UINT64_C(1) << d));
			for (int l = 0; l < lvl; l++)
				assert_int_equal(w.occupied[l], 0);
		}
	}
	assert_int_equal(a.fired_at, e);
	assert_int_equal(b.fired, 0);
	assert_int_equal(td_wheel_count(&w), 1);
	assert_int_equal(td_wheel_advance(&w, UINT64_MAX), 1);
	assert_int_equal(b.fired_at, e + (UINT64_C(1) << 24));
}

static void cancel_others_hook(struct rec *r, uint64_t now)
{
	for (struct rec *o = r->other; o; o = o->other)
		disarm(o);
}

/*
 * At tick 128 level 1 slot 2 is cascaded: a (128) and b (128) to due, c
 * (133) and e2 (133) to level 0 slot 5, d (130) alone to slot 2. a's
 * callback cancels b (in due behind it), c (just cascaded) and d (just
 * cascaded, alone in its slot).
 */
static void test_cancel_during_cascade(void **state)
{
	static struct td_wheel w;
	struct rec a, b, c, d, e2;

	start(&w, 0);
	rec_init(&a, 1);
	rec_init(&b, 2);
	rec_init(&c, 3);
	rec_init(&d, 4);
	rec_init(&e2, 5);
	arm(&a, 128);
	arm(&c, 133);
	arm(&b, 128);
	arm(&d, 130);
	arm(&e2, 133);
	assert_int_equal(w.occupied[1], UINT64_C(1) << 2);
	a.hook = cancel_others_hook;
	a.other = &b;
	b.other = &c;
	c.other = &d;

	assert_int_equal(td_wheel_advance(&w, 128), 1);
	assert_int_equal(a.fired_at, 128);
	check_wheel(&w);
	assert_int_equal(td_wheel_count(&w), 1);
	assert_int_equal(w.occupied[0], UINT64_C(1) << 5);
	assert_int_equal(w.occupied[1], 0);
	assert_int_equal(td_wheel_next(&w), 133);
	assert_int_equal(td_wheel_advance(&w, 1000), 1);
	assert_int_equal(e2.fired_at, 133);
	assert_int_equal(b.fired + c.fired + d.fired, 0);

	/* The same with a bigger jump, so the cancels land mid-advance. */
	start(&w, 0);
	rec_init(&a, 1);
	rec_init(&b, 2);
	rec_init(&c, 3);
	rec_init(&d, 4);
	rec_init(&e2, 5);
	arm(&a, 4096);
	arm(&b, 4096);
	arm(&c, 4096 + 64 + 1);
	arm(&d, 4096 + 3);
	arm(&e2, 4096 + 64 + 1);
	a.hook = cancel_others_hook;
	a.other = &b;
	b.other = &c;
	c.other = &d;
	assert_int_equal(td_wheel_advance(&w, 1u << 20), 2);
	assert_int_equal(log_len, 2);
	assert_int_equal(fire_log[0].id, 1);
	assert_int_equal(fire_log[1].id, 5);
	assert_int_equal(e2.fired_at, 4096 + 65);
	assert_int_equal(td_wheel_count(&w), 0);
	check_wheel(&w);
}

/* ------------------------------------------------------ callbacks re-arm */

static void periodic_hook(struct rec *r, uint64_t now)
{
	if (r->fired < 5)
		arm(r, now + r->arg);
}

static void move_other_hook(struct rec *r, uint64_t now)
{
	disarm(r->other);
	arm(r->other, now + 3);
}

static void self_cancel_hook(struct rec *r, uint64_t now)
{
	size_t n = td_wheel_count(cur);

	td_wheel_cancel(cur, &r->timer);
	assert_int_equal(td_wheel_count(cur), n);
	arm(r, now + 1000);
	assert_int_equal(td_wheel_count(cur), n + 1);
	disarm(r);
	assert_int_equal(td_wheel_count(cur), n);
}

static void test_readd_in_callback(void **state)
{
	static struct td_wheel w;
	struct rec p, x, y, z;

	start(&w, 1000003);
	rec_init(&p, 1);
	rec_init(&x, 2);
	rec_init(&y, 3);
	rec_init(&z, 4);
	p.hook = periodic_hook;
	p.arg = 10;
	x.hook = move_other_hook;
	x.other = &y;
	z.hook = self_cancel_hook;
	arm(&p, w.now + 7);
	arm(&x, w.now + 20);
	arm(&y, w.now + 21);
	arm(&z, w.now + 30);

	assert_int_equal(td_wheel_advance(&w, w.now + 100), 8);
	assert_int_equal(p.fired, 5);
	assert_int_equal(p.fired_at, 1000003 + 47);
	assert_int_equal(y.fired, 1);
	assert_int_equal(y.fired_at, 1000003 + 23);
	assert_int_equal(z.fired, 1);
	assert_int_equal(td_wheel_count(&w), 0);
	static const struct fire want[] = {
		{ 1, 1000010 }, { 1, 1000020 }, { 2, 1000023 }, { 3, 1000026 },
		{ 1, 1000030 }, { 4, 1000033 }, { 1, 1000040 }, { 1, 1000050 },
	};
	assert_int_equal(log_len, TD_ARRAY_LEN(want));
	for (size_t i = 0; i < log_len; i++) {
		assert_int_equal(fire_log[i].id, want[i].id);
		assert_int_equal(fire_log[i].now, want[i].now);
	}
}

/* Arms others into the past, at now and later, and itself at now, once. */
static void past_hook(struct rec *r, uint64_t now)
{
	struct rec *o = r->other;

	if (!r->arg)
		return;
	r->arg--;
	arm(&o[0], now - 20);
	arm(&o[1], now);
	arm(&o[2], now + 1);  /* beyond this advance */
	arm(&o[3], now - 50); /* then moved back to the future */
	arm(&o[3], now + 2);
	arm(r, now);
}

static void test_readd_past_same_advance(void **state)
{
	static struct td_wheel w;
	struct rec a, d, o[4], f;

	start(&w, 0);
	rec_init(&a, 1);
	rec_init(&d, 2);
	rec_init(&f, 9);
	for (unsigned int i = 0; i < 4; i++)
		rec_init(&o[i], 3 + i);
	a.hook = past_hook;
	a.other = o;
	a.arg = 1;
	arm(&a, 50);
	arm(&d, 50);
	arm(&f, 49);

	assert_int_equal(td_wheel_advance(&w, 50), 6);
	static const unsigned int order[] = { 9, 1, 2, 3, 4, 1 };
	assert_int_equal(log_len, 6);
	for (size_t i = 0; i < log_len; i++) {
		assert_int_equal(fire_log[i].id, order[i]);
		assert_int_equal(fire_log[i].now, i == 0 ? 49 : 50);
	}
	assert_int_equal(td_wheel_count(&w), 2);
	assert_int_equal(td_wheel_next(&w), 51);
	check_wheel(&w);

	/* Future adds from a callback fire within the same, longer advance. */
	a.arg = 1;
	arm(&a, 60);
	log_len = 0;
	assert_int_equal(td_wheel_advance(&w, 1000), 8);
	static const struct fire want[] = {
		{ 5, 51 }, { 6, 52 }, { 1, 60 }, { 3, 60 },
		{ 4, 60 }, { 1, 60 }, { 5, 61 }, { 6, 62 },
	};
	assert_int_equal(log_len, TD_ARRAY_LEN(want));
	for (size_t i = 0; i < log_len; i++) {
		assert_int_equal(fire_log[i].id, want[i].id);
		assert_int_equal(fire_log[i].now, want[i].now);
	}
	assert_int_equal(o[0].fired, 2);
	assert_int_equal(td_wheel_count(&w), 0);
	assert_int_equal(w.now, 1000);
}

/* ----------------------------------------------------------- far future */

static void test_far_future(void **state)
{
	static const uint64_t base = 1000003;
	static const uint64_t near_es[] = {
		base + 3 * YEAR, base + 3 * YEAR, base + SPAN - 1, base + SPAN,
		SPAN, SPAN + 1, (UINT64_C(1) << 37) + 7,
		(UINT64_C(1) << 40) + 12345, base + 3 * YEAR + 1,
	};
	static const uint64_t far_es[] = {
		UINT64_C(1) << 63, UINT64_MAX - SPAN, UINT64_MAX - 1,
		UINT64_MAX, UINT64_MAX,
	};
	struct rec n[TD_ARRAY_LEN(near_es)], f[TD_ARRAY_LEN(far_es)];
	static struct td_wheel w;
	unsigned int steps = 0;

	start(&w, base);
	for (size_t i = 0; i < TD_ARRAY_LEN(near_es); i++) {
		rec_init(&n[i], (unsigned int)i);
		arm(&n[i], near_es[i]);
	}
	for (size_t i = 0; i < TD_ARRAY_LEN(far_es); i++) {
		rec_init(&f[i], 100 + (unsigned int)i);
		arm(&f[i], far_es[i]);
	}
	check_wheel(&w);

	/* Hop by td_wheel_next() until the near ones (<= 2^41) are done. */
	while (w.now < UINT64_C(1) << 41) {
		uint64_t at = td_wheel_next(&w), min = UINT64_MAX;

		assert_true(++steps < 1000);
		for (size_t i = 0; i < TD_ARRAY_LEN(near_es); i++)
			if (n[i].armed && n[i].want < min)
				min = n[i].want;
		assert_true(at > w.now);
		assert_true(at <= min);
		/* Never more than one 2^36 block ahead while anything pends. */
		assert_true(at - w.now <= SPAN);
		td_wheel_advance(&w, at);
		check_wheel(&w);
		for (size_t i = 0; i < TD_ARRAY_LEN(near_es); i++) {
			assert_int_equal(n[i].fired, near_es[i] <= at);
			if (n[i].fired)
				assert_int_equal(n[i].fired_at, near_es[i]);
		}
	}
	assert_true(n[1].fired_at == n[0].fired_at);
	for (size_t i = 0; i < TD_ARRAY_LEN(far_es); i++)
		assert_int_equal(f[i].fired, 0);

	/* One huge jump: nothing early, then hop onto 2^63 exactly. */
	assert_int_equal(td_wheel_advance(&w, (UINT64_C(1) << 63) - 1), 0);
	check_wheel(&w);
	assert_int_equal(td_wheel_next(&w), UINT64_C(1) << 63);
	assert_int_equal(td_wheel_advance(&w, td_wheel_next(&w)), 1);
	assert_int_equal(f[0].fired_at, UINT64_C(1) << 63);

	assert_int_equal(td_wheel_advance(&w, UINT64_MAX - SPAN - 1), 0);
	steps = 0;
	while (td_wheel_count(&w)) {
		uint64_t at = td_wheel_next(&w);

		assert_true(++steps < 100);
		assert_true(at > w.now);
		td_wheel_advance(&w, at);
		check_wheel(&w);
	}
	assert_int_equal(f[1].fired_at, UINT64_MAX - SPAN);
	assert_int_equal(f[2].fired_at, UINT64_MAX - 1);
	assert_int_equal(f[3].fired_at, UINT64_MAX);
	assert_int_equal(f[4].fired_at, UINT64_MAX);
	assert_int_equal(fire_log[log_len - 2].id, 103);
	assert_int_equal(fire_log[log_len - 1].id, 104);
	assert_int_equal(td_wheel_next(&w), UINT64_MAX);
	assert_int_equal(w.now, UINT64_MAX);
}

/* ------------------------------------------------------ property tests */

static uint64_t add_sat(uint64_t a, uint64_t b)
{
	return a + b < a ? UINT64_MAX : a + b;
}

static uint64_t random_expiry(uint64_t now)
{
	uint64_t r = rnd();

	switch (r % 5) {
	case 0:
		return now - (now ? rnd() % (now < 100 ? now : 100) : 0);
	case 1:
		return now + rnd() % 100;
	default:
		return add_sat(now, rnd() >> (rnd() % 64));
	}
}

/*
 * One step on a wheel of timers @r: td_wheel_next() against the earliest
 * armed expiry, nothing fires before it, then a random advance and a
 * random cancel or re-arm.
 */
static void property_step(struct td_wheel *w, struct rec *r, size_t n)
{
	uint64_t at = td_wheel_next(w), min = UINT64_MAX;
	size_t before = log_len;

	check_wheel(w);
	for (size_t i = 0; i < n; i++)
		if (r[i].armed && r[i].want < min)
			min = r[i].want;
	assert_true(at >= w->now);
	assert_true(at <= min || at == w->now);
	if (min > w->now)
		assert_true(at > w->now);
	if (at > w->now) {
		assert_int_equal(td_wheel_advance(w, at - 1), 0);
		assert_int_equal(log_len, before);
	}
	switch (rnd() % 3) {
	case 0:
		td_wheel_advance(w, at);
		break;
	case 1:
		td_wheel_advance(w, add_sat(w->now, rnd() >> (rnd() % 64)));
		break;
	default:
		break;
	}
	for (size_t k = before + 1; k < log_len; k++)
		assert_true(fire_log[k].now >= fire_log[k - 1].now);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(td_timer_pending(&r[i].timer), r[i].armed);

	struct rec *x = &r[rnd() % n];

	if (rnd() % 2)
		disarm(x);
	else
		arm(x, random_expiry(w->now));
}

static void test_next_property(void **state)
{
	static struct rec r[64];
	static struct td_wheel w;

	rng_state = 42;
	for (int round = 0; round < 60; round++) {
		uint64_t base;

		switch (round % 4) {
		case 0: base = rnd() % 100000; break;
		case 1: base = rnd(); break;
		case 2: base = UINT64_MAX - rnd() % (SPAN * 4); break;
		default: base = rnd() >> 20; break;
		}
		start(&w, base);
		for (unsigned int i = 0; i < TD_ARRAY_LEN(r); i++) {
			rec_init(&r[i], i);
			arm(&r[i], random_expiry(w.now));
		}
		for (int step = 0; step < 200 && td_wheel_count(&w); step++)
			property_step(&w, r, TD_ARRAY_LEN(r));
		td_wheel_advance(&w, UINT64_MAX);
		check_wheel(&w);
		assert_int_equal(td_wheel_count(&w), 0);
		for (unsigned int i = 0; i < TD_ARRAY_LEN(r); i++)
			assert_false(r[i].armed);
	}
}

static void random_periodic_hook(struct rec *r, uint64_t now)
{
	if (r->fired < 3)
		arm(r, now + r->arg);
}

/* Run @n timers built from @seed to the end; @step 0: tick by tick. */
static void run_schedule(struct rec *r, size_t n, uint64_t seed, uint64_t step)
{
	static struct td_wheel w;
	const uint64_t base = 1000003, span = 200000;

	start(&w, base);
	rng_state = seed;
	for (size_t i = 0; i < n; i++) {
		rec_init(&r[i], (unsigned int)i);
		/* few distinct expiries: plenty of ties */
		arm(&r[i], base + rnd() % (span / 16) * 16);
		if (i % 7 == 0) {
			r[i].hook = random_periodic_hook;
			r[i].arg = rnd() % 5000;
		}
	}
	rng_state = seed + 1;
	for (uint64_t t = base; td_wheel_count(&w);) {
		if (step == 0)
			t++;
		else
			t += 1 + rnd() % step;
		td_wheel_advance(&w, t);
	}
}

static void test_jumps_vs_ticks(void **state)
{
	enum { N = 3000 };
	struct rec *r = calloc(N, sizeof(*r));
	struct fire *ref = malloc(LOG_MAX * sizeof(*ref));
	size_t ref_len;

	assert_non_null(r);
	assert_non_null(ref);
	run_schedule(r, N, 7, 0);
	ref_len = log_len;
	assert_true(ref_len > N);
	memcpy(ref, fire_log, ref_len * sizeof(*ref));
	for (size_t k = 1; k < ref_len; k++)
		assert_true(ref[k].now >= ref[k - 1].now);

	static const uint64_t steps[] = { 1, 63, 64, 4097, 20000, 1u << 30 };
	for (size_t s = 0; s < TD_ARRAY_LEN(steps); s++) {
		run_schedule(r, N, 7, steps[s]);
		assert_int_equal(log_len, ref_len);
		for (size_t k = 0; k < ref_len; k++) {
			assert_int_equal(fire_log[k].id, ref[k].id);
			assert_int_equal(fire_log[k].now, ref[k].now);
		}
	}
	free(ref);
	free(r);
}

/* ------------------------------------------------------ 1,000,000 timers */

struct mrec {
	struct td_timer timer;
	uint64_t want;
	bool fired;
};

static size_t m_fired;
static uint64_t m_last;

static void m_cb(struct td_timer *t, uint64_t now)
{
	struct mrec *m = td_container_of(t, struct mrec, timer);

	/* cheap checks: a million of them run at -O0 under ASan */
	if (m->fired || t->expires != m->want || now != t->expires ||
	    now < m_last || td_timer_pending(t))
		fail_msg("bad fire: expires %llu want %llu now %llu last %llu",
			 (unsigned long long)t->expires,
			 (unsigned long long)m->want, (unsigned long long)now,
			 (unsigned long long)m_last);
	m->fired = true;
	m_last = now;
	m_fired++;
}

static void test_million(void **state)
{
	enum { N = 1000000 };
	const uint64_t base = 1000003, ten_min = 600000;
	struct mrec *m = calloc(N, sizeof(*m));
	static struct td_wheel w;

	assert_non_null(m);
	td_wheel_init(&w, base);
	rng_state = 1234;
	for (size_t i = 0; i < N; i++) {
		uint64_t r = rnd() % 100, e;

		if (r < 96)
			e = base + rnd() % ten_min;
		else if (r < 98)
			e = base + rnd() % YEAR;
		else
			e = base + 3 * YEAR + rnd() % YEAR;
		td_timer_init(&m[i].timer, m_cb);
		m[i].want = e;
		td_wheel_add(&w, &m[i].timer, e);
	}
	/* Move one in twenty elsewhere. */
	for (size_t i = 0; i < N; i += 20) {
		m[i].want = base + rnd() % ten_min;
		td_wheel_add(&w, &m[i].timer, m[i].want);
	}
	assert_int_equal(td_wheel_count(&w), N);
	check_wheel(&w);

	m_fired = 0;
	m_last = 0;
	uint64_t t = base;
	while (t < base + ten_min) {
		t += 1 + rnd() % 4000;
		td_wheel_advance(&w, t);
	}
	assert_true(m_fired > N * 9 / 10);
	check_wheel(&w);
	while (td_wheel_count(&w)) {
		if (rnd() % 2)
			t = td_wheel_next(&w);
		else
			t += rnd() % (UINT64_C(1) << 32);
		td_wheel_advance(&w, t);
	}
	assert_int_equal(m_fired, N);
	for (size_t i = 0; i < N; i++)
		if (!m[i].fired)
			fail_msg("timer %zu never fired", i);
	assert_int_equal(td_wheel_next(&w), UINT64_MAX);
	check_wheel(&w);
	free(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_empty),
		cmocka_unit_test(test_same_tick_fifo),
		cmocka_unit_test(test_move_and_cancel),
		cmocka_unit_test(test_boundaries_exhaustive),
		cmocka_unit_test(test_boundaries_together),
		cmocka_unit_test(test_cascade_levels),
		cmocka_unit_test(test_cancel_during_cascade),
		cmocka_unit_test(test_readd_in_callback),
		cmocka_unit_test(test_readd_past_same_advance),
		cmocka_unit_test(test_far_future),
		cmocka_unit_test(test_next_property),
		cmocka_unit_test(test_jumps_vs_ticks),
		cmocka_unit_test(test_million),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
