/*
 * Hierarchical timer wheel: 6 levels of 64 slots, level L slot width 64^L
 * ticks, plus overflow lists for expiries in later 2^36-tick blocks.
 *
 * Notation: digit_L(x) = (x >> 6L) & 63; the rotation of level L is
 * x >> 6(L+1). Each level has two arrays, indexed by rotation parity: the
 * current one (now's rotation) and the next one (rotation + 1). When now
 * enters a new rotation the next array becomes the current one and the
 * emptied old current array becomes the next one; nothing is copied.
 *
 * Placement: a timer with expires E > now belongs at the level L of the
 * highest base-64 digit in which E and now differ, in the current array,
 * slot digit_L(E) > digit_L(now). The upcoming slot U_L of a level L >= 1 is
 * the one that becomes current next: current slot digit_L(now) + 1, or next
 * slot 0 when digit_L(now) is 63. U_L starts exactly where level L-1's next
 * rotation does, so its timers may as well sit in level L-1's next array,
 * at slot digit_L-1(E); td_wheel_precascade() moves them there ahead of
 * time. A timer whose slot is U_L goes down there too if U_L is empty, and
 * again if that slot is itself U_L-1 and empty, and so on. Level 5's next
 * array is the next 2^36 block; overflow holds the blocks beyond.
 *
 * Ordering: lists are appended at the tail only, and timers with the same
 * expiry E can only be found along one chain of lists: spill (for later
 * blocks), then the slot at E's level, and below it, for as long as each
 * slot is an upcoming one, the slot holding E one level down. Going down
 * its chain, a timer is added at the first list that is not empty, or at
 * the bottom; it only ever moves from the front of its list down to the
 * back of a lower one, and whole lists move in order. So the lower lists of
 * a chain hold the older timers, and FIFO among equal expiries holds.
 *
 * Time: td_wheel_advance() only ever moves now to the earliest slot start
 * (or earlier), and at that point re-places, lowest level first (the lower
 * slot of a chain holds the older timers), every slot that starts exactly
 * there. So every current slot at or before now's digit is empty, and the
 * array a rotation change retires is always empty. Consequences:
 *  - a level-0 slot that starts at now holds only timers expiring at now;
 *  - re-placing a slot never puts a timer back into a slot starting at now;
 *  - the current array of a level starts before everything at the levels
 *    above it, so the first level with a non-empty current array ends the
 *    search for the next point of interest (lower levels' next arrays may
 *    still start earlier; the lowest non-empty level no longer decides).
 *
 * Far future: overflow holds timers two or more 2^36 blocks ahead. When now
 * crosses a 2^36 boundary, overflow (now at least one block ahead) becomes
 * the spill list in O(1); td_wheel_precascade() re-places the spill list
 * after the upcoming slots, and while it is not empty, timers for later
 * blocks are appended to it (FIFO again). Only if it is still not empty at
 * the next boundary does td_wheel_advance() re-place it there, together
 * with overflow.
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
#define TOP (TD_WHEEL_LEVELS - 1)

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

static inline unsigned int digit(uint64_t x, unsigned int lvl)
{
	return (unsigned int)(x >> (lvl * TD_WHEEL_BITS)) & SLOT_MASK;
}

/* Parity of the array of level @lvl that holds now's rotation. */
static inline unsigned int cur_parity(const struct td_wheel *w,
				      unsigned int lvl)
{
	/* lvl * 6 + 6 <= 36: no shift by 64. */
	return (unsigned int)(w->now >> ((lvl + 1) * TD_WHEEL_BITS)) & 1;
}

static inline void slot_append(struct td_wheel *w, unsigned int lvl,
			       unsigned int par, unsigned int s,
			       struct td_timer *t)
{
	list_append(head(&w->slot[lvl][par][s]), t);
	w->occupied[lvl][par] |= UINT64_C(1) << s;
}

/*
 * Put @t, which expires in level @lvl's next rotation, into that level's
 * next array, going further down while its slot is the upcoming slot of
 * its level and empty.
 */
static void place_next(struct td_wheel *w, struct td_timer *t,
		       unsigned int lvl)
{
	for (;;) {
		unsigned int par = cur_parity(w, lvl) ^ 1;
		unsigned int s = digit(t->expires, lvl);

		if (lvl == 0 || s != 0 || digit(w->now, lvl) != SLOT_MASK ||
		    (w->occupied[lvl][par] & 1)) {
			slot_append(w, lvl, par, s, t);
			return;
		}
		lvl--;
	}
}

/* The first level-5 placement of a timer due in a later 2^36 block. */
static void place_far(struct td_wheel *w, struct td_timer *t)
{
	if ((t->expires >> SPAN_BITS) - (w->now >> SPAN_BITS) > 1)
		list_append(head(&w->overflow), t);
	else
		place_next(w, t, TOP);
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
		if (!list_empty(&w->spill))
			list_append(head(&w->spill), t);
		else
			place_far(w, t);
		return;
	}
	unsigned int par = cur_parity(w, lvl), s = digit(e, lvl);

	/* s > digit_L(now) here, so s can only be U_L as current slot d + 1. */
	if (lvl > 0 && s == digit(w->now, lvl) + 1 &&
	    !(w->occupied[lvl][par] >> s & 1))
		place_next(w, t, lvl - 1);
	else
		slot_append(w, lvl, par, s, t);
}

/* The upcoming slot of level @lvl >= 1, and its array's parity and index. */
static struct td_timer_list *upcoming(struct td_wheel *w, unsigned int lvl,
				      unsigned int *par, unsigned int *s)
{
	unsigned int d = digit(w->now, lvl);

	*par = cur_parity(w, lvl) ^ (d == SLOT_MASK);
	*s = (d + 1) & SLOT_MASK;
	return &w->slot[lvl][*par][*s];
}

/*
 * The earliest start of an occupied slot, or of the next 2^36 block when
 * overflow or spill needs attention there; UINT64_MAX if none.
 */
static uint64_t first_point(const struct td_wheel *w)
{
	uint64_t at = UINT64_MAX;

	for (unsigned int lvl = 0; lvl < TD_WHEEL_LEVELS; lvl++) {
		unsigned int shift = lvl * TD_WHEEL_BITS;
		unsigned int rshift = shift + TD_WHEEL_BITS;
		unsigned int par = cur_parity(w, lvl);
		uint64_t base = w->now >> rshift << rshift;
		uint64_t cur = w->occupied[lvl][par];
		uint64_t nxt = w->occupied[lvl][par ^ 1];

		if (nxt) {
			/* A next rotation with timers in it exists: no wrap. */
			uint64_t t = base + (UINT64_C(1) << rshift) +
				     ((uint64_t)__builtin_ctzll(nxt) << shift);

			if (t < at)
				at = t;
		}
		if (cur) {
			uint64_t t = base |
				     (uint64_t)__builtin_ctzll(cur) << shift;

			/* Everything at the levels above starts later. */
			return t < at ? t : at;
		}
	}
	if (!list_empty(&w->overflow) || !list_empty(&w->spill)) {
		/* Something lies in a later block, so this one is not last. */
		uint64_t t = ((w->now >> SPAN_BITS) + 1) << SPAN_BITS;

		if (t < at)
			at = t;
	}
	return at;
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
		w->moved_in_advance++;
		t = next;
	}
}

/*
 * now just moved: re-place every slot that starts exactly at it, lowest
 * level first, as the lower slot of a chain holds the older timers.
 */
static void cascade(struct td_wheel *w)
{
	uint64_t now = w->now;
	unsigned int s = digit(now, 0), par = cur_parity(w, 0);

	/* A level-0 slot starting at now holds exactly the timers due now. */
	if (w->occupied[0][par] >> s & 1) {
		w->occupied[0][par] &= ~(UINT64_C(1) << s);
		list_splice_tail(head(&w->due), head(&w->slot[0][par][s]));
	}
	for (unsigned int lvl = 1; lvl < TD_WHEEL_LEVELS; lvl++) {
		if (now & ((UINT64_C(1) << (lvl * TD_WHEEL_BITS)) - 1))
			return;
		s = digit(now, lvl);
		par = cur_parity(w, lvl);
		if (!(w->occupied[lvl][par] >> s & 1))
			continue;
		w->occupied[lvl][par] &= ~(UINT64_C(1) << s);
		respill(w, &w->slot[lvl][par][s]);
	}
	if (now & SPAN_MASK)
		return;
	if (!list_empty(&w->spill)) {
		/* Not drained in time: overflow holds the older timers. */
		list_splice_tail(head(&w->overflow), head(&w->spill));
		respill(w, &w->overflow);
	} else {
		/* Every overflowing timer is now at least one block ahead. */
		list_splice_tail(head(&w->spill), head(&w->overflow));
	}
}

/*
 * Earliest 2^36 block holding a far timer. Walks overflow and spill, so it
 * is only used when nothing else is pending and the caller jumps over more
 * than one block, to cross empty blocks in one step.
 */
static uint64_t far_first_block(const struct td_wheel *w)
{
	const struct td_timer_list *lists[] = { &w->overflow, &w->spill };
	uint64_t min = UINT64_MAX;

	for (size_t i = 0; i < 2; i++) {
		const struct td_timer *h = chead(lists[i]);

		for (const struct td_timer *t = h->next; t != h; t = t->next)
			if (t->expires < min)
				min = t->expires;
	}
	return min >> SPAN_BITS;
}

static bool levels_empty(const struct td_wheel *w)
{
	for (unsigned int lvl = 0; lvl < TD_WHEEL_LEVELS; lvl++)
		if (w->occupied[lvl][0] | w->occupied[lvl][1])
			return false;
	return true;
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
	w->moved_in_advance = 0;
	w->moved_ahead = 0;
	for (unsigned int lvl = 0; lvl < TD_WHEEL_LEVELS; lvl++) {
		for (unsigned int par = 0; par < 2; par++) {
			w->occupied[lvl][par] = 0;
			for (unsigned int s = 0; s < TD_WHEEL_SLOTS; s++)
				list_init(head(&w->slot[lvl][par][s]));
		}
	}
	list_init(head(&w->overflow));
	list_init(head(&w->spill));
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
		uintptr_t off = (uintptr_t)prev - (uintptr_t)&w->slot[0][0][0];

		if (off < sizeof(w->slot)) {
			size_t i = off / sizeof(struct td_timer_list);

			w->occupied[i / (2 * TD_WHEEL_SLOTS)]
				   [i / TD_WHEEL_SLOTS % 2] &=
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
	if (!list_empty(&w->due))
		return w->now;
	return first_point(w);
}

/* Unlink the first timer of non-empty @h; its bit is the caller's care. */
static inline struct td_timer *pop(struct td_timer *h)
{
	struct td_timer *t = h->next;

	h->next = t->next;
	t->next->prev = h;
	return t;
}

size_t td_wheel_precascade(struct td_wheel *w, size_t budget)
{
	size_t moved = 0;

	/* U_L starts no later than U_L+1, and the spill list after both. */
	for (unsigned int lvl = 1; lvl < TD_WHEEL_LEVELS; lvl++) {
		unsigned int par, s;
		struct td_timer *h = head(upcoming(w, lvl, &par, &s));

		if (h->next == h)
			continue;
		while (h->next != h && moved < budget) {
			place_next(w, pop(h), lvl - 1);
			moved++;
		}
		if (h->next != h)
			goto out;
		w->occupied[lvl][par] &= ~(UINT64_C(1) << s);
	}
	while (!list_empty(&w->spill) && moved < budget) {
		place_far(w, pop(head(&w->spill)));
		moved++;
	}
out:
	w->moved_ahead += moved;
	return moved;
}

/*
 * A slot becomes upcoming when the slot before it starts; next array slot
 * 0 follows current slot 63. Bits at or before now's digit are never set.
 */
uint64_t td_wheel_precascade_next(const struct td_wheel *w)
{
	uint64_t at = UINT64_MAX;

	if (!list_empty(&w->spill))
		return w->now;
	for (unsigned int lvl = 1; lvl < TD_WHEEL_LEVELS; lvl++) {
		unsigned int shift = lvl * TD_WHEEL_BITS;
		unsigned int rshift = shift + TD_WHEEL_BITS;
		unsigned int par = cur_parity(w, lvl), d = digit(w->now, lvl);
		uint64_t base = w->now >> rshift << rshift;
		uint64_t cur = w->occupied[lvl][par];
		uint64_t nxt = w->occupied[lvl][par ^ 1];
		uint64_t t;

		if (d == SLOT_MASK ? nxt & 1 : cur >> (d + 1) & 1)
			return w->now;
		if (cur) {
			/* Slot s > d + 1, so slot s - 1 starts after now. */
			unsigned int s = (unsigned int)__builtin_ctzll(cur);

			t = base + ((uint64_t)(s - 1) << shift);
		} else if (nxt & 1) {
			t = base + ((uint64_t)SLOT_MASK << shift);
		} else if (nxt) {
			/* A next rotation with timers in it exists: no wrap. */
			unsigned int s = (unsigned int)__builtin_ctzll(nxt);

			t = base + (UINT64_C(1) << rshift) +
			    ((uint64_t)(s - 1) << shift);
		} else {
			continue;
		}
		if (t < at)
			at = t;
	}
	return at;
}

/*
 * A callback that keeps re-adding a timer at or before now makes this loop
 * forever, as the header promises such timers fire in the same call; that
 * is the caller's bug (re-arm periodic timers relative to now + period).
 */
size_t td_wheel_advance(struct td_wheel *w, uint64_t now)
{
	size_t fired = 0;

	if (now < w->now)
		now = w->now;
	while (w->count) {
		if (!list_empty(&w->due)) {
			fired += fire_due(w);
			continue;
		}
		uint64_t t = first_point(w);

		if (t > now)
			break;
		/*
		 * Only far timers, and a jump over more than one block: go
		 * straight to the block before the earliest of them, where
		 * overflow and spill are still valid as they are.
		 */
		if (levels_empty(w) &&
		    (now >> SPAN_BITS) - (w->now >> SPAN_BITS) > 1) {
			uint64_t b = far_first_block(w) - 1;

			if (b > t >> SPAN_BITS) {
				if (b > now >> SPAN_BITS)
					break;
				t = b << SPAN_BITS;
			}
		}
		w->now = t;
		cascade(w);
		fired += fire_due(w);
	}
	w->now = now;
	return fired;
}
