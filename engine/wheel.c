/*
 * Hierarchical timer wheel: 6 levels of 64 slots, level L slot width 64^L
 * ticks, plus an overflow list for expiries 2^36 ticks or more away.
 *
 * Placement: a timer with expires E > now lives at the level of the highest
 * base-64 digit in which E and now differ, in the slot named by E's digit at
 * that level. So every timer at level L slot s shares now's digits above L
 * and s > digit_L(now). td_wheel_advance() only ever moves now to the start
 * of the earliest occupied slot (or earlier), which keeps that true, and it
 * re-places the slots that start exactly at the new now before any callback
 * runs. Consequences:
 *  - every occupied slot of level L starts inside now's current block of
 *    level L+1, so the lowest non-empty level holds the next point of
 *    interest, and one ctz finds it;
 *  - a level-0 slot that starts at now holds only timers expiring at now;
 *  - re-placing a slot never puts a timer back into a slot starting at now.
 *
 * Ordering: lists are appended at the tail only, and a timer's list is a
 * function of (expires, now), so timers with the same expiry always share a
 * list and keep the order in which they were added.
 *
 * Range: expires is used as given over the whole uint64_t range; nothing
 * here computes a tick past UINT64_MAX (a slot start is <= the expiries in
 * it, and the next 2^36 boundary only exists when something overflows). A
 * caller computing now + delay must saturate at UINT64_MAX itself. A timer
 * at UINT64_MAX makes td_wheel_next() return UINT64_MAX, the same as an
 * empty wheel; td_wheel_count() tells them apart.
 *
 * Aliasing: a struct td_timer_list is used as a sentinel struct td_timer
 * (the header makes them share their first two words). Heads are only ever
 * accessed through struct td_timer lvalues (see head()), never through their
 * own type, so the compiler cannot assume the two do not alias.
 */
#include "triggerd/wheel.h"

#define SPAN_BITS (TD_WHEEL_BITS * TD_WHEEL_LEVELS) /* 36 */
#define SPAN_MASK ((UINT64_C(1) << SPAN_BITS) - 1)
#define SLOT_MASK (TD_WHEEL_SLOTS - 1)

static inline struct td_timer *head(struct td_timer_list *l)
{
	return (struct td_timer *)(void *)l;
}

static inline const struct td_timer *chead(const struct td_timer_list *l)
{
	return (const struct td_timer *)(const void *)l;
}

static inline bool list_empty(const struct td_timer_list *l)
{
	return chead(l)->next == chead(l);
}

static inline void list_init(struct td_timer *h)
{
	h->next = h;
	h->prev = h;
}

static inline void list_append(struct td_timer *h, struct td_timer *t)
{
	struct td_timer *last = h->prev;

	t->next = h;
	t->prev = last;
	last->next = t;
	h->prev = t;
}

/* Move all of @from to the tail of @to and leave @from empty. */
static inline void list_splice_tail(struct td_timer *to, struct td_timer *from)
{
	struct td_timer *first = from->next, *last = from->prev;

	if (first == from)
		return;
	first->prev = to->prev;
	to->prev->next = first;
	last->next = to;
	to->prev = last;
	list_init(from);
}

static void place(struct td_wheel *w, struct td_timer *t)
{
	uint64_t e = t->expires;

	if (e <= w->now) {
		list_append(head(&w->due), t);
		return;
	}
	unsigned int lvl = (63u - (unsigned int)__builtin_clzll(e ^ w->now)) /
			   TD_WHEEL_BITS;
	if (lvl >= TD_WHEEL_LEVELS) {
		list_append(head(&w->overflow), t);
		return;
	}
	unsigned int s = (unsigned int)(e >> (lvl * TD_WHEEL_BITS)) & SLOT_MASK;
	list_append(head(&w->slot[lvl][s]), t);
	w->occupied[lvl] |= UINT64_C(1) << s;
}

/*
 * Start of the earliest occupied slot, if any level has one. Lower levels
 * always start before higher ones (see the top of the file), so the first
 * non-empty level decides. Slots at or before now's digit are never
 * occupied, so no mask is needed.
 */
static bool first_slot(const struct td_wheel *w, uint64_t *at)
{
	for (unsigned int lvl = 0; lvl < TD_WHEEL_LEVELS; lvl++) {
		uint64_t occ = w->occupied[lvl];

		if (!occ)
			continue;
		unsigned int shift = lvl * TD_WHEEL_BITS;
		/* shift + 6 <= 36: no shift by 64. */
		uint64_t block = w->now >> (shift + TD_WHEEL_BITS)
				 << (shift + TD_WHEEL_BITS);
		*at = block | (uint64_t)__builtin_ctzll(occ) << shift;
		return true;
	}
	return false;
}

/* Re-place every timer of @l relative to the current now, in order. */
static void respill(struct td_wheel *w, struct td_timer_list *l)
{
	struct td_timer *h = head(l), *t = h->next;

	/*
	 * Empty the head first: a timer that still overflows is appended back
	 * to it, behind the ones not yet visited, so walk the old chain, which
	 * ends at h, and read each next before the timer is re-linked.
	 */
	list_init(h);
	while (t != h) {
		struct td_timer *next = t->next;

		place(w, t);
		t = next;
	}
}

/* now just moved: re-place every slot that starts exactly at it. */
static void cascade(struct td_wheel *w)
{
	uint64_t now = w->now;

	if (!(now & SPAN_MASK) && !list_empty(&w->overflow))
		respill(w, &w->overflow);
	for (unsigned int lvl = TD_WHEEL_LEVELS - 1; lvl > 0; lvl--) {
		unsigned int shift = lvl * TD_WHEEL_BITS;

		if (now & ((UINT64_C(1) << shift) - 1))
			continue;
		unsigned int s = (unsigned int)(now >> shift) & SLOT_MASK;
		uint64_t bit = UINT64_C(1) << s;

		if (!(w->occupied[lvl] & bit))
			continue;
		w->occupied[lvl] &= ~bit;
		respill(w, &w->slot[lvl][s]);
	}
	/* A level-0 slot starting at now holds exactly the timers due now. */
	unsigned int s = (unsigned int)now & SLOT_MASK;
	uint64_t bit = UINT64_C(1) << s;

	if (w->occupied[0] & bit) {
		w->occupied[0] &= ~bit;
		list_splice_tail(head(&w->due), head(&w->slot[0][s]));
	}
}

/*
 * Earliest 2^36 block holding an overflowing timer. Walks the overflow list,
 * so it is only used when nothing else is pending, to jump over empty blocks
 * in one step; the list is walked to respill it at that point anyway.
 */
static uint64_t overflow_first_block(const struct td_wheel *w)
{
	const struct td_timer *h = chead(&w->overflow);
	uint64_t min = UINT64_MAX;

	for (const struct td_timer *t = h->next; t != h; t = t->next)
		if (t->expires < min)
			min = t->expires;
	return min & ~SPAN_MASK;
}

/*
 * Fire the due list one timer at a time, unlinking each before its callback
 * runs, so callbacks see a consistent wheel and anything they append to due
 * fires in this same loop.
 */
static size_t fire_due(struct td_wheel *w)
{
	struct td_timer *h = head(&w->due);
	size_t n = 0;

	while (h->next != h) {
		struct td_timer *t = h->next;

		h->next = t->next;
		t->next->prev = h;
		t->next = NULL;
		t->prev = NULL;
		w->count--;
		n++;
		t->cb(t, w->now);
	}
	return n;
}

void td_wheel_init(struct td_wheel *w, uint64_t now)
{
	w->now = now;
	w->count = 0;
	for (unsigned int lvl = 0; lvl < TD_WHEEL_LEVELS; lvl++) {
		w->occupied[lvl] = 0;
		for (unsigned int s = 0; s < TD_WHEEL_SLOTS; s++)
			list_init(head(&w->slot[lvl][s]));
	}
	list_init(head(&w->overflow));
	list_init(head(&w->due));
}

void td_timer_init(struct td_timer *t, td_timer_cb cb)
{
	t->next = NULL;
	t->prev = NULL;
	t->expires = 0;
	t->cb = cb;
}

static inline void unlink_timer(struct td_wheel *w, struct td_timer *t)
{
	struct td_timer *prev = t->prev, *next = t->next;

	prev->next = next;
	next->prev = prev;
	/*
	 * prev == next only when the head alone is left. If that head is a
	 * slot, clear its bit; its address names it, which costs less than
	 * recomputing the slot from (expires, now).
	 */
	if (prev == next) {
		uintptr_t off = (uintptr_t)prev - (uintptr_t)&w->slot[0][0];

		if (off < sizeof(w->slot)) {
			size_t i = off / sizeof(struct td_timer_list);

			w->occupied[i / TD_WHEEL_SLOTS] &=
				~(UINT64_C(1) << (i % TD_WHEEL_SLOTS));
		}
	}
}

void td_wheel_add(struct td_wheel *w, struct td_timer *t, uint64_t expires)
{
	if (t->next)
		unlink_timer(w, t);
	else
		w->count++;
	t->expires = expires;
	place(w, t);
}

void td_wheel_cancel(struct td_wheel *w, struct td_timer *t)
{
	if (!t->next)
		return;
	unlink_timer(w, t);
	t->next = NULL;
	t->prev = NULL;
	w->count--;
}

uint64_t td_wheel_next(const struct td_wheel *w)
{
	uint64_t at;

	if (!list_empty(&w->due))
		return w->now;
	if (first_slot(w, &at))
		return at;
	/*
	 * The next 2^36 boundary. It exists: an overflowing timer lies in a
	 * later block than now, so now is not in the last one.
	 */
	if (!list_empty(&w->overflow))
		return ((w->now >> SPAN_BITS) + 1) << SPAN_BITS;
	return UINT64_MAX;
}

/*
 * A callback that keeps re-adding a timer at or before now makes this loop
 * forever, as the header promises such timers fire in the same call; that
 * is the caller's bug (re-arm periodic timers relative to now + period).
 * Not reentrant: a callback must not call td_wheel_advance() on its wheel.
 */
size_t td_wheel_advance(struct td_wheel *w, uint64_t now)
{
	size_t fired = 0;

	if (now < w->now)
		now = w->now;
	while (w->count) {
		uint64_t t;

		if (!list_empty(&w->due)) {
			fired += fire_due(w);
			continue;
		}
		if (!first_slot(w, &t))
			t = overflow_first_block(w);
		if (t > now)
			break;
		w->now = t;
		cascade(w);
		fired += fire_due(w);
	}
	w->now = now;
	return fired;
}
