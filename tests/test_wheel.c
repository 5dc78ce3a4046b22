/*
 * Unit tests for the hierarchical timer wheel (engine/wheel.c).
 *
 * The tests written before td_wheel_precascade() run twice: plainly, and
 * with random td_wheel_precascade() calls (random budgets, 1 included)
 * before every add, cancel and advance, callbacks included. Both runs must
 * fire the same timers, in the same order, at the same ticks: a digest of
 * every firing is compared.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
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

static uint64_t splitmix(uint64_t *state)
{
	uint64_t z = (*state += UINT64_C(0x9e3779b97f4a7c15));

	z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
	return z ^ (z >> 31);
}

static uint64_t rnd(void)
{
	return splitmix(&rng_state);
}

/* ------------------------------------------------- the precascade mode */

static bool pc_mode;     /* interleave random td_wheel_precascade() calls */
static uint64_t pc_rng;  /* its own stream: the tests' schedules stay put */
static uint64_t digest;  /* of every firing: (id, now) in order */
static uint64_t digest_n;

static void digest_add(uint64_t id, uint64_t now)
{
	uint64_t s = digest ^ id;

	digest = splitmix(&s) ^ now;
	digest = splitmix(&digest);
	digest_n++;
}

/* In precascade mode, half the time, move a random number of timers ahead. */
static void maybe_precascade(struct td_wheel *w)
{
	static const size_t budgets[] = { 1, 1, 2, 3, 5, 64, 1000, SIZE_MAX };

	if (!pc_mode || splitmix(&pc_rng) % 2)
		return;
	size_t b = budgets[splitmix(&pc_rng) % TD_ARRAY_LEN(budgets)];
	size_t n = td_wheel_precascade(w, b);

	assert_true(n <= b);
}

static size_t adv(struct td_wheel *w, uint64_t now)
{
	maybe_precascade(w);
	return td_wheel_advance(w, now);
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
	digest_add(r->id, now);
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
	maybe_precascade(cur);
	r->want = expires;
	r->armed = true;
	td_wheel_add(cur, &r->timer, expires);
}

static void disarm(struct rec *r)
{
	maybe_precascade(cur);
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

enum where { DUE, SLOT, OVERFLOW, SPILL };

/*
 * Walk one list: links consistent, and each timer where (expires, now) allow
 * it to be: a slot of now's rotation after now's slot, at the level of the
 * highest digit in which it differs from now, or a slot of the next
 * rotation; overflow two 2^36 blocks ahead or more, spill one or more.
 * Returns its length.
 */
static size_t check_list(const struct td_timer_list *l,
			 const struct td_wheel *w, enum where where,
			 unsigned int lvl, unsigned int par, unsigned int s)
{
	const struct td_timer *h = list_head(l), *p = h;
	size_t n = 0;

	for (const struct td_timer *t = h->next; t != h; p = t, t = t->next) {
		uint64_t e = t->expires, now = w->now;
		unsigned int sh = 6u * lvl;

		assert_ptr_equal(t->prev, p);
		if (where == DUE) {
			assert_true(e <= now);
		} else if (where == OVERFLOW) {
			assert_true((e >> 36) >= (now >> 36) + 2);
		} else if (where == SPILL) {
			assert_true((e >> 36) >= (now >> 36) + 1);
		} else {
			uint64_t rot = e >> sh >> 6, nrot = now >> sh >> 6;

			assert_true(e > now);
			assert_int_equal((e >> sh) & 63, s);
			assert_int_equal(rot & 1, par);
			assert_true(rot == nrot || rot == nrot + 1);
			if (rot == nrot)
				assert_true(e >> sh > now >> sh);
		}
		n++;
	}
	assert_ptr_equal(h->prev, p);
	return n;
}

/*
 * The whole structure against an independent oracle: every timer sits where
 * (expires, now) allow, bitmaps match non-empty slots, count matches.
 */
static void check_wheel(const struct td_wheel *w)
{
	size_t n = 0;

	for (unsigned int lvl = 0; lvl < TD_WHEEL_LEVELS; lvl++) {
		for (unsigned int par = 0; par < 2; par++) {
			for (unsigned int s = 0; s < TD_WHEEL_SLOTS; s++) {
				const struct td_timer_list *l =
					&w->slot[lvl][par][s];
				const struct td_timer *h = list_head(l);
				bool bit = (w->occupied[lvl][par] >> s) & 1;

				assert_int_equal(bit, h->next != h);
				n += check_list(l, w, SLOT, lvl, par, s);
			}
		}
	}
	n += check_list(&w->overflow, w, OVERFLOW, 0, 0, 0);
	n += check_list(&w->spill, w, SPILL, 0, 0, 0);
	n += check_list(&w->due, w, DUE, 0, 0, 0);
	assert_int_equal(n, w->count);
	assert_int_equal(n, td_wheel_count(w));
}

/* Occupancy of level @lvl's array for now's rotation, and for the next. */
static uint64_t cur_bits(const struct td_wheel *w, unsigned int lvl)
{
	return w->occupied[lvl][(w->now >> (6 * lvl + 6)) & 1];
}

static uint64_t next_bits(const struct td_wheel *w, unsigned int lvl)
{
	return w->occupied[lvl][((w->now >> (6 * lvl + 6)) & 1) ^ 1];
}

/* ---------------------------------------------------------------- basics */

static void test_empty(void **state)
{
	static struct td_wheel w;

	start(&w, 5);
	check_wheel(&w);
	assert_int_equal(td_wheel_count(&w), 0);
	assert_int_equal(td_wheel_next(&w), UINT64_MAX);
	assert_int_equal(adv(&w, 100), 0);
	assert_int_equal(w.now, 100);
	assert_int_equal(adv(&w, 50), 0);
	assert_int_equal(w.now, 100);
	assert_int_equal(adv(&w, UINT64_MAX), 0);
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
	assert_int_equal(adv(&w, e - 1000), 0);
	arm(&r[3], e);
	assert_int_equal(adv(&w, e - 10), 0);
	arm(&r[4], e);
	arm(&r[5], e - 5);
	arm(&r[1], e); /* a move goes to the back */
	check_wheel(&w);
	assert_int_equal(td_wheel_count(&w), 6);
	assert_int_equal(td_wheel_next(&w), e - 5);

	assert_int_equal(adv(&w, e + 100), 6);
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
	assert_int_not_equal(cur_bits(&w, 1), 0);
	disarm(&a);
	assert_false(td_timer_pending(&a.timer));
	for (unsigned int l = 0; l < TD_WHEEL_LEVELS; l++)
		assert_int_equal(cur_bits(&w, l) | next_bits(&w, l), 0);
	assert_int_equal(td_wheel_next(&w), UINT64_MAX);
	disarm(&a);
	assert_int_equal(td_wheel_count(&w), 0);

	/* The next 2^36 block: level 5's next array. */
	arm(&a, 1000 + 3 * YEAR);
	assert_int_equal((1000 + 3 * YEAR) / SPAN, 1);
	assert_int_equal(td_wheel_next(&w),
			 SPAN + (((1000 + 3 * YEAR) >> 30 & 63) << 30));
	disarm(&a);
	assert_int_equal(td_wheel_next(&w), UINT64_MAX);

	/* Overflow too: the next 2^36 boundary is the point of interest. */
	arm(&a, 1000 + 5 * YEAR);
	assert_int_equal(td_wheel_next(&w), SPAN);
	disarm(&a);
	assert_int_equal(td_wheel_next(&w), UINT64_MAX);

	/* A move keeps count and fires only at the new time. */
	arm(&a, 1100);
	arm(&b, 1100);
	arm(&a, 5000);
	check_wheel(&w);
	assert_int_equal(td_wheel_count(&w), 2);
	assert_int_equal(adv(&w, 4999), 1);
	assert_int_equal(b.fired_at, 1100);
	assert_int_equal(a.fired, 0);
	arm(&a, 4000); /* moved into the past: due */
	check_wheel(&w);
	assert_int_equal(td_wheel_next(&w), 4999);
	disarm(&a);
	assert_int_equal(td_wheel_next(&w), UINT64_MAX);
	assert_int_equal(adv(&w, 6000), 0);
	assert_int_equal(a.fired, 0);

	/* A smaller now is ignored, but what is due still fires, at w->now. */
	arm(&a, 5500);
	arm(&b, 6000);
	assert_int_equal(adv(&w, 10), 2);
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
	assert_int_equal(adv(&w, e - 1), 0);
	assert_int_equal(r.fired, 0);
	check_wheel(&w);
	assert_int_equal(td_wheel_next(&w), e);
	assert_int_equal(adv(&w, e), 1);
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
		adv(&w, n);
		assert_int_equal(r.fired, n == e);
		check_wheel(&w);
	}
	assert_int_equal(r.fired_at, e);

	/* The last 130 ticks one by one. */
	start(&w, base);
	rec_init(&r, 0);
	arm(&r, e);
	uint64_t t = e - base > 130 ? e - 130 : base;
	assert_int_equal(adv(&w, t), 0);
	while (t < e) {
		t++;
		assert_int_equal(adv(&w, t), t == e);
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
			adv(&w, n_at);
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
	assert_int_equal(cur_bits(&w, 5), UINT64_C(1) << 3);
	for (size_t i = 0; i < TD_ARRAY_LEN(stops); i++) {
		assert_int_equal(td_wheel_next(&w), stops[i]);
		assert_int_equal(adv(&w, stops[i] - 1), 0);
		assert_int_equal(adv(&w, stops[i]), i == 5);
		check_wheel(&w);
		/* a moved down exactly one level per stop */
		if (i < 5) {
			unsigned int lvl = 4 - (unsigned int)i;
			uint64_t d = (e >> (6 * lvl)) & 63;

			assert_true(cur_bits(&w, lvl) & (UINT64_C(1) << d));
			for (unsigned int l = 0; l < lvl; l++)
				assert_int_equal(cur_bits(&w, l) |
						 next_bits(&w, l), 0);
		}
	}
	assert_int_equal(a.fired_at, e);
	assert_int_equal(b.fired, 0);
	assert_int_equal(td_wheel_count(&w), 1);
	assert_int_equal(adv(&w, UINT64_MAX), 1);
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
	assert_int_equal(cur_bits(&w, 1), UINT64_C(1) << 2);
	a.hook = cancel_others_hook;
	a.other = &b;
	b.other = &c;
	c.other = &d;

	assert_int_equal(adv(&w, 128), 1);
	assert_int_equal(a.fired_at, 128);
	check_wheel(&w);
	assert_int_equal(td_wheel_count(&w), 1);
	assert_int_equal(cur_bits(&w, 0), UINT64_C(1) << 5);
	assert_int_equal(cur_bits(&w, 1) | next_bits(&w, 1), 0);
	assert_int_equal(td_wheel_next(&w), 133);
	assert_int_equal(adv(&w, 1000), 1);
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
	assert_int_equal(adv(&w, 1u << 20), 2);
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

	assert_int_equal(adv(&w, w.now + 100), 8);
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

	assert_int_equal(adv(&w, 50), 6);
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
	assert_int_equal(adv(&w, 1000), 8);
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
		/*
		 * Never past the end of the next 2^36 block while anything
		 * pends (level 5's next array covers that block).
		 */
		assert_true(at >> 36 <= (w.now >> 36) + 1);
		adv(&w, at);
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
	assert_int_equal(adv(&w, (UINT64_C(1) << 63) - 1), 0);
	check_wheel(&w);
	assert_int_equal(td_wheel_next(&w), UINT64_C(1) << 63);
	assert_int_equal(adv(&w, td_wheel_next(&w)), 1);
	assert_int_equal(f[0].fired_at, UINT64_C(1) << 63);

	assert_int_equal(adv(&w, UINT64_MAX - SPAN - 1), 0);
	steps = 0;
	while (td_wheel_count(&w)) {
		uint64_t at = td_wheel_next(&w);

		assert_true(++steps < 100);
		assert_true(at > w.now);
		adv(&w, at);
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
 * armed expiry, nothing fires before that, then a random advance and a
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
	/*
	 * Where the steps go depends on the oracle, not on at: at moves
	 * later once timers are pre-cascaded, and both runs of this test
	 * must do the same things at the same ticks.
	 */
	if (min > w->now && rnd() % 2) {
		assert_int_equal(adv(w, min - 1), 0);
		assert_int_equal(log_len, before);
	}
	switch (rnd() % 3) {
	case 0:
		adv(w, min); /* the next tick something fires */
		break;
	case 1:
		adv(w, add_sat(w->now, rnd() >> (rnd() % 64)));
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
		adv(&w, UINT64_MAX);
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
		adv(&w, t);
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
static const struct mrec *m_base;

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
	digest_add((uint64_t)(m - m_base), now);
}

static void test_million(void **state)
{
	enum { N = 1000000 };
	const uint64_t base = 1000003, ten_min = 600000;
	struct mrec *m = calloc(N, sizeof(*m));
	static struct td_wheel w;

	assert_non_null(m);
	m_base = m;
	td_wheel_init(&w, base);
	cur = &w;
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
		maybe_precascade(&w);
		td_wheel_add(&w, &m[i].timer, e);
	}
	/* Move one in twenty elsewhere. */
	for (size_t i = 0; i < N; i += 20) {
		m[i].want = base + rnd() % ten_min;
		maybe_precascade(&w);
		td_wheel_add(&w, &m[i].timer, m[i].want);
	}
	assert_int_equal(td_wheel_count(&w), N);
	check_wheel(&w);

	m_fired = 0;
	m_last = 0;
	uint64_t t = base;
	while (t < base + ten_min) {
		t += 1 + rnd() % 4000;
		adv(&w, t);
	}
	assert_true(m_fired > N * 9 / 10);
	check_wheel(&w);
	while (td_wheel_count(&w)) {
		if (rnd() % 2)
			t = td_wheel_next(&w);
		else
			t += rnd() % (UINT64_C(1) << 32);
		adv(&w, t);
	}
	assert_int_equal(m_fired, N);
	for (size_t i = 0; i < N; i++)
		if (!m[i].fired)
			fail_msg("timer %zu never fired", i);
	assert_int_equal(td_wheel_next(&w), UINT64_MAX);
	check_wheel(&w);
	free(m);
}

/* ------------------------------------------------------- pre-cascade */

/* The ids fired at tick @at, in order, are @ids. */
static void expect_fired_at(uint64_t at, const unsigned int *ids, size_t n)
{
	size_t k = 0;

	for (size_t i = 0; i < log_len; i++) {
		if (fire_log[i].now != at)
			continue;
		assert_true(k < n);
		assert_int_equal(fire_log[i].id, ids[k]);
		k++;
	}
	assert_int_equal(k, n);
}

/*
 * Equal expiries added before, during and after a partial pre-cascade fire
 * in the order they were added; fillers with other expiries share the
 * slots. First one level down (level 2 to level 1), then through a chain:
 * level 2's upcoming slot, level 1's upcoming slot (next array, slot 0),
 * level 0's next array.
 */
static void test_precascade_fifo(void **state)
{
	static struct td_wheel w;
	static struct rec r[32];
	const uint64_t e = 2 * 4096 + 70;
	const uint64_t f1 = 2 * 4096 + 5, f2 = 2 * 4096 + 200;

	start(&w, 10);
	for (unsigned int i = 0; i < TD_ARRAY_LEN(r); i++)
		rec_init(&r[i], i);
	/* Level 2, slot 2: not upcoming yet. */
	arm(&r[20], f1);
	arm(&r[0], e);
	arm(&r[21], f2);
	arm(&r[1], e);
	arm(&r[2], e);
	assert_int_equal(cur_bits(&w, 2), UINT64_C(1) << 2);
	assert_int_equal(td_wheel_precascade(&w, SIZE_MAX), 0);
	adv(&w, 4096 + 10);
	/* Now it is, and not pre-cascaded. */
	assert_int_equal(cur_bits(&w, 2), UINT64_C(1) << 2);
	assert_int_equal(td_wheel_precascade(&w, 2), 2);
	check_wheel(&w);
	arm(&r[3], e); /* behind r[1], r[2] in the upcoming slot */
	arm(&r[4], e);
	assert_int_equal(cur_bits(&w, 2), UINT64_C(1) << 2);
	assert_int_equal(td_wheel_precascade(&w, 3), 3);
	check_wheel(&w);
	arm(&r[5], e);
	assert_int_equal(td_wheel_precascade(&w, 1), 1);
	arm(&r[6], e);
	assert_int_equal(td_wheel_precascade(&w, SIZE_MAX), 3);
	assert_int_equal(td_wheel_precascade(&w, SIZE_MAX), 0);
	assert_int_equal(cur_bits(&w, 2), 0);
	/* slots 0 (f1), 1 (e), 3 (f2) */
	assert_int_equal(next_bits(&w, 1), 0xb);
	arm(&r[7], e); /* upcoming slot empty: straight to level 1 */
	assert_int_equal(cur_bits(&w, 2), 0);
	assert_int_equal(td_wheel_precascade(&w, SIZE_MAX), 0);
	check_wheel(&w);
	uint64_t moved = w.moved_in_advance;

	assert_int_equal(adv(&w, 3 * 4096), 10);
	/* Level 2 to 1 was done ahead: advance only moved each from 1 to 0. */
	assert_int_equal(w.moved_in_advance, moved + 10);
	static const unsigned int want_e[] = { 0, 1, 2, 3, 4, 5, 6, 7 };
	expect_fired_at(e, want_e, TD_ARRAY_LEN(want_e));
	assert_int_equal(r[20].fired_at, f1);
	assert_int_equal(r[21].fired_at, f2);

	/* The chain. */
	const uint64_t e2 = 2 * 4096 + 5, g = 2 * 4096 + 64 + 9;

	start(&w, 10);
	for (unsigned int i = 0; i < TD_ARRAY_LEN(r); i++)
		rec_init(&r[i], i);
	arm(&r[0], e2);
	arm(&r[20], g);
	arm(&r[1], e2);
	adv(&w, 4096 + 10);
	arm(&r[2], e2); /* behind 0 and 1 in level 2's upcoming slot */
	assert_int_equal(td_wheel_precascade(&w, 1), 1);
	arm(&r[3], e2);
	/* Into level 1's next array; slot 0 is not upcoming (digit 0). */
	assert_int_equal(td_wheel_precascade(&w, SIZE_MAX), 4);
	assert_int_equal(next_bits(&w, 1), 3);
	arm(&r[4], e2); /* upcoming slot empty: level 1, next, slot 0 */
	assert_int_equal(td_wheel_precascade(&w, SIZE_MAX), 0);
	check_wheel(&w);
	/* Level 1 digit 63: its next slot 0 is now upcoming, and full. */
	adv(&w, 2 * 4096 - 30);
	assert_int_equal(next_bits(&w, 1), 3);
	arm(&r[5], e2); /* level 2 empty, level 1 upcoming not: append */
	assert_int_equal(next_bits(&w, 0), 0);
	assert_int_equal(td_wheel_precascade(&w, 2), 2);
	assert_int_equal(next_bits(&w, 0), UINT64_C(1) << 5);
	arm(&r[6], e2);
	check_wheel(&w);
	assert_int_equal(td_wheel_precascade(&w, SIZE_MAX), 5);
	assert_int_equal(next_bits(&w, 1), 2); /* g, in slot 1 */
	arm(&r[7], e2); /* both upcoming slots empty: level 0, next array */
	assert_int_equal(next_bits(&w, 0), UINT64_C(1) << 5);
	assert_int_equal(td_wheel_precascade(&w, SIZE_MAX), 0);
	check_wheel(&w);
	moved = w.moved_in_advance;
	assert_int_equal(adv(&w, e2), 8);
	assert_int_equal(w.moved_in_advance, moved);
	static const unsigned int want_e2[] = { 0, 1, 2, 3, 4, 5, 6, 7 };
	expect_fired_at(e2, want_e2, TD_ARRAY_LEN(want_e2));
	assert_int_equal(adv(&w, g), 1);
	assert_int_equal(r[20].fired_at, g);

	/*
	 * Pre-cascade cut short by the deadline: at 8192 level 1's slot 0
	 * (0, pre-cascaded) and level 2's slot 2 (1, 2, not) both start;
	 * td_wheel_advance() re-places the lower, older one first.
	 */
	const uint64_t e3 = 2 * 4096 + 9;

	start(&w, 10);
	for (unsigned int i = 0; i < TD_ARRAY_LEN(r); i++)
		rec_init(&r[i], i);
	arm(&r[0], e3);
	arm(&r[1], e3);
	arm(&r[2], e3);
	adv(&w, 4096 + 10);
	assert_int_equal(td_wheel_precascade(&w, 1), 1);
	assert_int_equal(next_bits(&w, 1), 1);
	moved = w.moved_in_advance;
	assert_int_equal(adv(&w, e3), 3);
	assert_int_equal(w.moved_in_advance, moved + 3);
	static const unsigned int want_e3[] = { 0, 1, 2 };
	expect_fired_at(e3, want_e3, TD_ARRAY_LEN(want_e3));
}

/* The most urgent upcoming slot first: the lowest level's starts first. */
static void test_precascade_priority(void **state)
{
	static struct td_wheel w;
	struct rec r[4];

	start(&w, 10);
	for (unsigned int i = 0; i < TD_ARRAY_LEN(r); i++)
		rec_init(&r[i], i);
	arm(&r[0], 2 * 4096 + 5); /* level 2, slot 2 */
	arm(&r[1], 2 * 4096 + 6);
	adv(&w, 4096 + 10);
	arm(&r[2], 4096 + 200); /* level 1, slot 3 */
	arm(&r[3], 4096 + 201);
	adv(&w, 4096 + 130);
	/* Upcoming: level 1 slot 3 (at 4288), level 2 slot 2 (at 8192). */
	assert_int_equal(cur_bits(&w, 1), UINT64_C(1) << 3);
	assert_int_equal(cur_bits(&w, 2), UINT64_C(1) << 2);
	assert_int_equal(td_wheel_precascade_next(&w), w.now);
	assert_int_equal(td_wheel_precascade(&w, 1), 1);
	assert_int_equal(cur_bits(&w, 1), UINT64_C(1) << 3);
	assert_int_equal(td_wheel_precascade(&w, 1), 1);
	assert_int_equal(cur_bits(&w, 1), 0);
	assert_int_equal(cur_bits(&w, 2), UINT64_C(1) << 2);
	assert_int_equal(next_bits(&w, 0), UINT64_C(1) << 8 | UINT64_C(1) << 9);
	assert_int_equal(td_wheel_precascade_next(&w), w.now); /* level 2 */
	assert_int_equal(td_wheel_precascade(&w, 5), 2);
	assert_int_equal(cur_bits(&w, 2), 0);
	assert_int_equal(next_bits(&w, 1), 1);
	assert_int_equal(w.moved_ahead, 4);
	/* Level 1's next slot 0 follows its current slot 63. */
	assert_int_equal(td_wheel_precascade_next(&w), 4096 + 63 * 64);
	check_wheel(&w);
	assert_int_equal(adv(&w, 3 * 4096), 4);
}

/*
 * Cancels and moves of timers in next arrays, in an upcoming slot half
 * pre-cascaded, in level 5's next array and in the spill list: links and
 * bits (check_wheel), td_wheel_next(), and what fires.
 */
static void test_precascade_cancel(void **state)
{
	static struct td_wheel w;
	static struct rec r[16];
	const uint64_t base = 4096 + 10;

	start(&w, 10);
	for (unsigned int i = 0; i < TD_ARRAY_LEN(r); i++)
		rec_init(&r[i], i);
	/* 0..5: level 2 slot 2, in slots 0 (0, 1), 1 (2, 3), 3 (4, 5). */
	static const uint64_t es[] = {
		2 * 4096 + 3, 2 * 4096 + 3, 2 * 4096 + 70, 2 * 4096 + 71,
		2 * 4096 + 200, 2 * 4096 + 201,
	};
	for (unsigned int i = 0; i < TD_ARRAY_LEN(es); i++)
		arm(&r[i], es[i]);
	adv(&w, base);
	assert_int_equal(td_wheel_precascade(&w, 3), 3);
	/* 0, 1, 2 moved; 3, 4, 5 still in the upcoming slot. */
	disarm(&r[4]); /* middle of the upcoming slot */
	check_wheel(&w);
	disarm(&r[0]); /* in a next array, its slot keeps r[1] */
	check_wheel(&w);
	assert_int_equal(next_bits(&w, 1), 3);
	disarm(&r[1]); /* last of its slot: bit goes */
	check_wheel(&w);
	assert_int_equal(next_bits(&w, 1), 2);
	assert_int_equal(td_wheel_next(&w), 2 * 4096); /* the upcoming slot */
	disarm(&r[3]);
	disarm(&r[5]); /* upcoming slot now empty: its bit goes */
	check_wheel(&w);
	assert_int_equal(cur_bits(&w, 2), 0);
	assert_int_equal(td_wheel_precascade(&w, SIZE_MAX), 0);
	assert_int_equal(td_wheel_next(&w), 2 * 4096 + 64);
	arm(&r[3], 2 * 4096 + 71); /* back, behind r[2] */
	arm(&r[2], 2 * 4096 + 71); /* moved within its slot: to the back */
	check_wheel(&w);

	/* Level 0's next array, through the chain. */
	adv(&w, 2 * 4096 - 1);
	arm(&r[6], 2 * 4096 + 7);
	assert_int_equal(next_bits(&w, 0), UINT64_C(1) << 7);
	assert_int_equal(td_wheel_next(&w), 2 * 4096 + 7);
	disarm(&r[6]);
	check_wheel(&w);
	assert_int_equal(next_bits(&w, 0), 0);
	assert_int_equal(td_wheel_next(&w), 2 * 4096 + 64);
	assert_int_equal(adv(&w, 3 * 4096), 2);
	assert_int_equal(fire_log[0].id, 3);
	assert_int_equal(fire_log[1].id, 2);

	/* Level 5's next array, overflow and spill. */
	const uint64_t b1 = SPAN + 12345, b2 = 2 * SPAN + 5;

	start(&w, SPAN - 100);
	for (unsigned int i = 0; i < TD_ARRAY_LEN(r); i++)
		rec_init(&r[i], i);
	arm(&r[0], b1 + (UINT64_C(1) << 30)); /* level 5, next, slot 1 */
	assert_int_equal(next_bits(&w, 5), 2);
	assert_int_equal(td_wheel_next(&w), SPAN + (UINT64_C(1) << 30));
	arm(&r[1], b2);
	arm(&r[2], b2);
	arm(&r[3], b2);
	check_wheel(&w);
	disarm(&r[0]);
	check_wheel(&w);
	assert_int_equal(next_bits(&w, 5), 0);
	assert_int_equal(td_wheel_next(&w), SPAN);
	assert_int_equal(adv(&w, SPAN), 0);
	/* Overflow became the spill list. */
	assert_false(w.spill.next == (struct td_timer *)(void *)&w.spill);
	assert_true(w.overflow.next == (struct td_timer *)(void *)&w.overflow);
	check_wheel(&w);
	assert_int_equal(td_wheel_precascade(&w, 1), 1);
	disarm(&r[2]); /* in the spill list */
	disarm(&r[1]); /* in level 5's next array, slot 0 */
	check_wheel(&w);
	assert_int_equal(next_bits(&w, 5), 0);
	assert_int_equal(td_wheel_precascade(&w, SIZE_MAX), 1);
	assert_int_equal(next_bits(&w, 5), 1);
	disarm(&r[3]);
	check_wheel(&w);
	assert_int_equal(td_wheel_next(&w), UINT64_MAX);
	assert_int_equal(td_wheel_count(&w), 0);
}

/*
 * Timers with the same expiry on both sides of a 2^36 boundary: overflow,
 * spill half drained, level 5's next array, the spill list re-placed by
 * td_wheel_advance() when not drained in time. All fire in the order added.
 */
static void test_precascade_spill(void **state)
{
	static struct td_wheel w;
	static struct rec r[16];
	const uint64_t x = 2 * SPAN + 77, z = 3 * SPAN + 1, y = SPAN + 5;
	const uint64_t wx = 4 * SPAN + 9;

	start(&w, SPAN - 1000);
	for (unsigned int i = 0; i < TD_ARRAY_LEN(r); i++)
		rec_init(&r[i], i);
	arm(&r[0], x); /* overflow */
	arm(&r[1], x);
	arm(&r[6], wx); /* four blocks ahead */
	arm(&r[7], wx);
	arm(&r[8], wx);
	/* Level 5's upcoming slot, then 4, 3, 2, down to level 1's next. */
	arm(&r[10], y);
	assert_int_equal(next_bits(&w, 1), 1);
	for (unsigned int l = 2; l < TD_WHEEL_LEVELS; l++)
		assert_int_equal(next_bits(&w, l) | cur_bits(&w, l), 0);
	check_wheel(&w);
	adv(&w, SPAN - 10);
	/* y, to level 0 */
	assert_int_equal(td_wheel_precascade(&w, SIZE_MAX), 1);
	uint64_t moved = w.moved_in_advance;

	assert_int_equal(adv(&w, SPAN), 0);
	assert_int_equal(w.moved_in_advance, moved);
	assert_int_equal(td_wheel_precascade_next(&w), SPAN); /* spill */
	arm(&r[2], x); /* spill not empty: behind 0 and 1 */
	assert_int_equal(td_wheel_precascade(&w, 1), 1);
	arm(&r[3], x);
	arm(&r[11], z); /* two blocks ahead, but spill first */
	arm(&r[12], z);
	check_wheel(&w);
	/* x: level 5's next array; wx, z: overflow. */
	assert_int_equal(td_wheel_precascade(&w, SIZE_MAX), 8);
	assert_int_equal(td_wheel_precascade(&w, SIZE_MAX), 0);
	arm(&r[4], x); /* level 5's next array, slot 0, behind 3 */
	arm(&r[13], z); /* overflow, behind 11 and 12 */
	check_wheel(&w);
	assert_int_equal(adv(&w, y), 1);
	assert_int_equal(r[10].fired_at, y);

	/*
	 * Just before the boundary x's slot is level 5's upcoming one; it
	 * goes down the chain of upcoming slots to level 1's next array,
	 * slot 1 (77 = 64 + 13), which becomes upcoming at 2 SPAN.
	 */
	assert_int_equal(adv(&w, 2 * SPAN - 1), 0);
	moved = w.moved_in_advance;
	assert_int_equal(td_wheel_precascade(&w, SIZE_MAX), 5);
	assert_int_equal(next_bits(&w, 1), 2);
	for (unsigned int l = 2; l < TD_WHEEL_LEVELS; l++)
		assert_int_equal(next_bits(&w, l) | cur_bits(&w, l), 0);
	assert_int_equal(adv(&w, 2 * SPAN + 10), 0);
	/* Overflow (z) became the spill list; budget 5 leaves it alone. */
	assert_int_equal(td_wheel_precascade(&w, 5), 5);
	assert_false(w.spill.next == (struct td_timer *)(void *)&w.spill);
	assert_int_equal(next_bits(&w, 0), UINT64_C(1) << 13);
	arm(&r[5], x);
	assert_int_equal(adv(&w, x), 6);
	assert_int_equal(w.moved_in_advance, moved);
	static const unsigned int want_x[] = { 0, 1, 2, 3, 4, 5 };
	expect_fired_at(x, want_x, TD_ARRAY_LEN(want_x));

	/*
	 * The spill list (6, 7, 8, 11, 12, 13) is drained by one: 6 goes to
	 * overflow. Never drained further, it is re-placed at 3 SPAN by
	 * td_wheel_advance(), behind overflow's older timers.
	 */
	assert_int_equal(td_wheel_precascade(&w, 1), 1);
	assert_ptr_equal(w.overflow.next, &r[6].timer);
	arm(&r[14], z); /* spill not empty: behind 13 */
	arm(&r[15], 4 * SPAN);
	check_wheel(&w);
	assert_int_equal(adv(&w, z), 4);
	assert_true(w.moved_in_advance > moved);
	static const unsigned int want_z[] = { 11, 12, 13, 14 };
	expect_fired_at(z, want_z, TD_ARRAY_LEN(want_z));
	check_wheel(&w);
	assert_int_equal(adv(&w, UINT64_MAX), 4);
	assert_int_equal(r[15].fired_at, 4 * SPAN);
	static const unsigned int want_wx[] = { 6, 7, 8 };
	expect_fired_at(wx, want_wx, TD_ARRAY_LEN(want_wx));
}

/*
 * Random adds, cancels, moves, pre-cascades (budgets from 1 up) and
 * advances over few distinct expiries near level boundaries: the firing
 * sequence equals the one without any pre-cascade, ties fire in the order
 * added, and once td_wheel_precascade() is done, adding never gives it work.
 */
static void fifo_random_run(uint64_t seed, bool pc, uint64_t base)
{
	enum { N = 200 };
	static struct td_wheel w;
	static struct rec r[N];
	static uint64_t seq_of[N];
	uint64_t seq = 0, pcs = seed ^ 0x55;
	uint64_t pool[48];

	start(&w, base);
	rng_state = seed;
	for (unsigned int i = 0; i < N; i++)
		rec_init(&r[i], i);
	for (unsigned int i = 0; i < TD_ARRAY_LEN(pool); i++) {
		/* Around the next level-1, -2 and -3 boundaries. */
		uint64_t width = UINT64_C(1) << (6 * (1 + i % 3));
		uint64_t b = (base / width + 1 + rnd() % 2) * width;

		pool[i] = b + rnd() % 80 - 8;
	}
	for (int op = 0; op < 3000; op++) {
		uint64_t k = rnd() % 16;
		struct rec *x = &r[rnd() % N];

		if (k < 8) {
			uint64_t e = pool[rnd() % TD_ARRAY_LEN(pool)];

			if (e <= w.now)
				e = w.now + rnd() % 300;
			arm(x, e);
			seq_of[x->id] = seq++;
		} else if (k < 10) {
			disarm(x);
		} else if (k < 13) {
			/* both modes draw the same numbers */
			uint64_t b = rnd() % 4 == 0 ? rnd() % 2000 : rnd() % 3;

			if (pc)
				assert_true(td_wheel_precascade(&w, b + 1) <=
					    b + 1);
		} else {
			size_t before = log_len;
			uint64_t to = w.now, width = 64 << (6 * (rnd() % 2));

			switch (rnd() % 4) {
			case 0: /* onto, or just before, a level 1 or 2 start */
				to = (to / width + 1) * width - rnd() % 2;
				break;
			case 1:
				to += rnd() % 5000;
				break;
			default:
				to += rnd() % 40;
				break;
			}

			if (pc && splitmix(&pcs) % 2)
				td_wheel_precascade(&w, splitmix(&pcs) % 3 + 1);
			td_wheel_advance(&w, to);
			for (size_t i = before + 1; i < log_len; i++) {
				const struct fire *a = &fire_log[i - 1];
				const struct fire *b = &fire_log[i];

				assert_true(b->now >= a->now);
				if (b->now == a->now)
					assert_true(seq_of[b->id] >
						    seq_of[a->id]);
			}
		}
		check_wheel(&w);
		if (pc && op % 50 == 0) {
			/* Drain, then adds create no pre-cascade work. */
			td_wheel_precascade(&w, SIZE_MAX);
			for (int j = 0; j < 5; j++) {
				struct rec *y = &r[rnd() % N];

				arm(y, pool[rnd() % TD_ARRAY_LEN(pool)] +
					       w.now % 7);
				seq_of[y->id] = seq++;
			}
			assert_int_equal(td_wheel_precascade(&w, SIZE_MAX), 0);
		} else if (op % 50 == 0) {
			for (int j = 0; j < 5; j++) {
				struct rec *y = &r[rnd() % N];

				arm(y, pool[rnd() % TD_ARRAY_LEN(pool)] +
					       w.now % 7);
				seq_of[y->id] = seq++;
			}
		}
	}
	td_wheel_advance(&w, UINT64_MAX);
	for (unsigned int i = 0; i < N; i++)
		assert_false(r[i].armed);
}

static void test_precascade_random(void **state)
{
	static const uint64_t starts[] = {
		262144 * 3 - 5000, 4096 * 7 - 70, 1000003, SPAN - 4100,
		UINT64_C(0x123456789abcd),
	};
	struct fire *ref = malloc(LOG_MAX * sizeof(*ref));
	size_t ref_len;

	assert_non_null(ref);
	for (uint64_t seed = 1; seed <= 20; seed++) {
		uint64_t base = starts[seed % TD_ARRAY_LEN(starts)];

		fifo_random_run(seed, false, base);
		ref_len = log_len;
		memcpy(ref, fire_log, log_len * sizeof(*ref));
		fifo_random_run(seed, true, base);
		assert_int_equal(log_len, ref_len);
		for (size_t i = 0; i < ref_len; i++) {
			assert_int_equal(fire_log[i].id, ref[i].id);
			assert_int_equal(fire_log[i].now, ref[i].now);
		}
	}
	free(ref);
}

/*
 * td_wheel_precascade_next() is exact: once pre-cascading is done, there
 * is nothing to do before it, and something to do at it.
 */
static void test_precascade_next(void **state)
{
	enum { N = 300 };
	static struct td_wheel w;
	static struct rec r[N];

	rng_state = 77;
	for (int round = 0; round < 12; round++) {
		uint64_t base = round % 3 == 0 ? rnd() % 100000
			      : round % 3 == 1 ? rnd() >> 8
					       : SPAN * 3 - rnd() % 300000;
		unsigned int hits = 0;

		start(&w, base);
		for (unsigned int i = 0; i < N; i++) {
			rec_init(&r[i], i);
			arm(&r[i], add_sat(base, rnd() >> (rnd() % 64 | 24)));
		}
		assert_int_equal(td_wheel_precascade_next(&w) <= w.now,
				 td_wheel_precascade(&w, 1) == 1);
		for (int step = 0; step < 2000 && td_wheel_count(&w); step++) {
			td_wheel_precascade(&w, SIZE_MAX);
			check_wheel(&w);

			uint64_t q = td_wheel_precascade_next(&w);
			uint64_t n = td_wheel_next(&w);

			assert_true(q > w.now);
			if (q <= n) {
				td_wheel_advance(&w, q - 1);
				assert_int_equal(
					td_wheel_precascade(&w, SIZE_MAX), 0);
				td_wheel_advance(&w, q);
				assert_int_equal(td_wheel_precascade(&w, 1), 1);
				hits++;
			} else {
				td_wheel_advance(&w, n);
			}
			if (rnd() % 4 == 0) {
				struct rec *x = &r[rnd() % N];

				uint64_t d = rnd() >> (rnd() % 64 | 24);

				if (!x->armed)
					arm(x, add_sat(w.now, d));
			}
		}
		assert_true(hits > 0);
		td_wheel_advance(&w, UINT64_MAX);
		assert_int_equal(td_wheel_count(&w), 0);
	}
}

/* --------------------------------------------------------------- stalls */

enum idle { IDLE_NONE, IDLE_DRAIN, IDLE_STARVED };

struct stall {
	uint64_t max_moved;   /* by one td_wheel_advance() */
	uint64_t max_ns;      /* one td_wheel_advance(), callbacks included */
	uint64_t p99_ns;
	uint64_t moved_ahead; /* by td_wheel_precascade() */
};

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return (x > y) - (x < y);
}

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/*
 * An event loop that advances 1 ms at a time. Half of @n timers are added
 * at the start, due in [lo, hi] ms from then; the other half over the first
 * 5 s, 1/10000 of @n per ms, each due in [lo, hi] ms from when it is added.
 * Between advances, in "idle time": nothing, td_wheel_precascade(w, 1024)
 * until it returns less, or one td_wheel_precascade(w, 16). Everything must
 * fire exactly once, at its tick, in order (m_cb).
 */
static void stall_run(size_t n, uint64_t lo, uint64_t hi, enum idle idle,
		      struct stall *out)
{
	const uint64_t base = 1000003;
	struct mrec *m = calloc(n, sizeof(*m));
	static struct td_wheel w;
	static uint64_t ns_of[20000];
	size_t added = 0, per_ms = n / 10000, nadv = 0;

	assert_non_null(m);
	assert_true(per_ms > 0);
	memset(out, 0, sizeof(*out));
	m_base = m;
	m_fired = 0;
	m_last = 0;
	td_wheel_init(&w, base);
	cur = &w;
	rng_state = 99;
	for (; added < n / 2; added++) {
		m[added].want = base + lo + rnd() % (hi - lo + 1);
		td_timer_init(&m[added].timer, m_cb);
		td_wheel_add(&w, &m[added].timer, m[added].want);
	}
	for (uint64_t t = base + 1; added < n || td_wheel_count(&w); t++) {
		for (size_t k = 0; k < per_ms && added < n; k++, added++) {
			m[added].want = w.now + lo + rnd() % (hi - lo + 1);
			td_timer_init(&m[added].timer, m_cb);
			td_wheel_add(&w, &m[added].timer, m[added].want);
		}
		if (idle == IDLE_DRAIN)
			while (td_wheel_precascade(&w, 1024) == 1024)
				;
		else if (idle == IDLE_STARVED)
			td_wheel_precascade(&w, 16);

		uint64_t moved = w.moved_in_advance, t0 = mono_ns();

		td_wheel_advance(&w, t);
		uint64_t ns = mono_ns() - t0;

		ns_of[nadv++] = ns;
		if (ns > out->max_ns)
			out->max_ns = ns;
		if (w.moved_in_advance - moved > out->max_moved)
			out->max_moved = w.moved_in_advance - moved;
		assert_true(nadv < TD_ARRAY_LEN(ns_of));
	}
	qsort(ns_of, nadv, sizeof(ns_of[0]), cmp_u64);
	out->p99_ns = ns_of[nadv * 99 / 100];
	assert_int_equal(m_fired, n);
	for (size_t i = 0; i < n; i++)
		if (!m[i].fired)
			fail_msg("timer %zu never fired", i);
	check_wheel(&w);
	out->moved_ahead = w.moved_ahead;
	free(m);
}

/*
 * With pre-cascade run to completion between 1 ms advances, no advance
 * re-places anything: td_wheel_precascade() stops short of its budget only
 * when every upcoming slot is empty, and a one-tick advance makes current
 * only slots that were upcoming. Starved, advance does the rest; nothing
 * fires late or twice either way.
 */
static void test_bounded_stall(void **state)
{
	struct stall s;

	stall_run(100000, 5000, 10000, IDLE_DRAIN, &s);
	assert_int_equal(s.max_moved, 0);
	assert_true(s.moved_ahead >= 100000);
	print_message("      100k drained: max moved in one advance %llu, "
		      "max advance %.3f ms\n",
		      (unsigned long long)s.max_moved, s.max_ns / 1e6);

	stall_run(100000, 5000, 10000, IDLE_STARVED, &s);
	print_message("      100k starved (16/ms): max moved in one advance "
		      "%llu, max advance %.3f ms\n",
		      (unsigned long long)s.max_moved, s.max_ns / 1e6);

	stall_run(1000000, 5000, 10000, IDLE_DRAIN, &s);
	assert_int_equal(s.max_moved, 0);
	print_message("      1M drained: max moved in one advance %llu, "
		      "max advance %.3f ms\n",
		      (unsigned long long)s.max_moved, s.max_ns / 1e6);
}

/*
 * A loop that sleeps between timers: it pre-cascades until done, then
 * sleeps until td_wheel_next() or, when @wake_early, until
 * td_wheel_precascade_next() if that is earlier. Returns the most timers
 * re-placed by one td_wheel_advance().
 */
static uint64_t sleep_run(size_t n, uint64_t base, uint64_t lo, uint64_t hi,
			  bool wake_early)
{
	struct mrec *m = calloc(n, sizeof(*m));
	static struct td_wheel w;
	uint64_t max_moved = 0;

	assert_non_null(m);
	m_base = m;
	m_fired = 0;
	m_last = 0;
	td_wheel_init(&w, base);
	cur = &w;
	rng_state = 5;
	for (size_t i = 0; i < n; i++) {
		m[i].want = base + lo + rnd() % (hi - lo + 1);
		td_timer_init(&m[i].timer, m_cb);
		td_wheel_add(&w, &m[i].timer, m[i].want);
	}
	while (td_wheel_count(&w)) {
		while (td_wheel_precascade(&w, 1024) == 1024)
			;
		uint64_t t = td_wheel_next(&w), moved = w.moved_in_advance;

		if (wake_early && td_wheel_precascade_next(&w) < t)
			t = td_wheel_precascade_next(&w);
		assert_true(t > w.now);
		td_wheel_advance(&w, t);
		if (w.moved_in_advance - moved > max_moved)
			max_moved = w.moved_in_advance - moved;
	}
	assert_int_equal(m_fired, n);
	free(m);
	return max_moved;
}

/*
 * Waking at td_wheel_precascade_next() as well, a sleeping loop never
 * re-places anything in td_wheel_advance(): every slot holding timers
 * becomes upcoming at a wake-up, where pre-cascading empties it. Without,
 * a burst in a level-2 slot that was not upcoming when added is re-placed
 * in one go.
 */
static void test_sleeping_loop(void **state)
{
	/* Early in a level-2 slot; bursts two and three slots on. */
	const uint64_t base = 244 * 4096 + 10;

	assert_int_equal(sleep_run(100000, base, 9000, 9100, true), 0);
	assert_int_equal(sleep_run(100000, base, 5000, 10000, true), 0);
	assert_int_equal(sleep_run(20000, SPAN - 3000, 1, 3 * SPAN, true), 0);
	uint64_t late = sleep_run(100000, base, 9000, 9100, false);

	assert_int_equal(late, 100000);
	print_message("      sleeping until td_wheel_next() only: %llu timers "
		      "re-placed in one advance\n", (unsigned long long)late);
}

/* A measurement, not a test: printed, never asserted. 1M timers over 10 s. */
static void test_stall_measure(void **state)
{
	struct stall none, drained;

	stall_run(1000000, 1, 10000, IDLE_NONE, &none);
	stall_run(1000000, 1, 10000, IDLE_DRAIN, &drained);
	print_message("      1M over 10 s, one td_wheel_advance(), max (p99):\n"
		      "        no precascade: %8.3f ms (%.3f); %llu timers "
		      "re-placed in one\n"
		      "        precascade:    %8.3f ms (%.3f); %llu timers "
		      "re-placed in one, %llu moved ahead\n",
		      none.max_ns / 1e6, none.p99_ns / 1e6,
		      (unsigned long long)none.max_moved,
		      drained.max_ns / 1e6, drained.p99_ns / 1e6,
		      (unsigned long long)drained.max_moved,
		      (unsigned long long)drained.moved_ahead);
}

/* ------------------------------------------------------------- the runs */

struct twin {
	uint64_t digest, n;
	bool have;
};

static int plain_setup(void **state)
{
	pc_mode = false;
	digest = 0;
	digest_n = 0;
	return 0;
}

static int plain_teardown(void **state)
{
	struct twin *t = *state;

	t->digest = digest;
	t->n = digest_n;
	t->have = true;
	return 0;
}

static int pc_setup(void **state)
{
	pc_mode = true;
	pc_rng = 2024;
	digest = 0;
	digest_n = 0;
	return 0;
}

static int pc_teardown(void **state)
{
	const struct twin *t = *state;

	pc_mode = false;
	if (t->have && (t->digest != digest || t->n != digest_n)) {
		print_error("firings differ from the plain run: %llu vs %llu\n",
			    (unsigned long long)digest_n,
			    (unsigned long long)t->n);
		return -1;
	}
	return 0;
}

/* Plainly, then with random pre-cascades; the second compares firings. */
#define TWIN(f)                                                   \
	{ #f, f, plain_setup, plain_teardown, NULL },             \
	{ #f "+precascade", f, pc_setup, pc_teardown, NULL }

int main(void)
{
	static struct twin twins[16];
	struct CMUnitTest tests[] = {
		TWIN(test_empty),
		TWIN(test_same_tick_fifo),
		TWIN(test_move_and_cancel),
		TWIN(test_boundaries_exhaustive),
		TWIN(test_boundaries_together),
		TWIN(test_cascade_levels),
		TWIN(test_cancel_during_cascade),
		TWIN(test_readd_in_callback),
		TWIN(test_readd_past_same_advance),
		TWIN(test_far_future),
		TWIN(test_next_property),
		TWIN(test_jumps_vs_ticks),
		TWIN(test_million),
		cmocka_unit_test(test_precascade_fifo),
		cmocka_unit_test(test_precascade_priority),
		cmocka_unit_test(test_precascade_cancel),
		cmocka_unit_test(test_precascade_spill),
		cmocka_unit_test(test_precascade_random),
		cmocka_unit_test(test_precascade_next),
		cmocka_unit_test(test_bounded_stall),
		cmocka_unit_test(test_sleeping_loop),
		cmocka_unit_test(test_stall_measure),
	};
	size_t k = 0;

	for (size_t i = 0; i < TD_ARRAY_LEN(tests); i++) {
		if (tests[i].setup_func != plain_setup)
			continue;
		assert_true(k < TD_ARRAY_LEN(twins));
		tests[i].initial_state = &twins[k];
		tests[i + 1].initial_state = &twins[k];
		k++;
	}
	return cmocka_run_group_tests(tests, NULL, NULL);
}
