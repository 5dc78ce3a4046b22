/*
 * Hierarchical timer wheel: 1 ms tick, 6 levels x 64 slots (2^36 ms, about
 * 2.2 years) plus an overflow list. Intrusive: the owner embeds a struct
 * td_timer and gets back to itself with td_container_of in the callback.
 *
 * Time is an unsigned count of ticks (milliseconds on a monotonic clock);
 * the wheel never reads a clock itself, the caller passes "now".
 *
 * Guarantees:
 *  - add and cancel are O(1);
 *  - td_wheel_next() finds the next point of interest through per-level
 *    occupancy bitmaps, never by scanning empty slots;
 *  - a timer never fires before its expiry: td_wheel_advance(w, now) fires
 *    exactly the timers whose expires <= now, in non-decreasing order of
 *    expires (FIFO among timers added for the same tick);
 *  - callbacks may add, re-add or cancel any timer, including their own;
 *  - the work of moving timers down the levels can be done ahead of time,
 *    in bounded chunks, by td_wheel_precascade(); whatever it has not done
 *    when a slot comes due, td_wheel_advance() does itself.
 *
 * Context: single-threaded; one wheel per shard.
 */
#ifndef TRIGGERD_WHEEL_H
#define TRIGGERD_WHEEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TD_WHEEL_BITS 6
#define TD_WHEEL_SLOTS (1u << TD_WHEEL_BITS) /* 64 */
#define TD_WHEEL_LEVELS 6

struct td_timer;
typedef void (*td_timer_cb)(struct td_timer *t, uint64_t now);

/** An intrusive timer. 32 bytes. Must not move while pending. */
struct td_timer {
	struct td_timer *next, *prev; /* next == NULL: not pending */
	uint64_t expires;             /* tick at which it fires */
	td_timer_cb cb;
};

/** A list head: the same first two words as struct td_timer. */
struct td_timer_list {
	struct td_timer *next, *prev;
};

/*
 * Each level has two arrays of slots, one per rotation parity: for level L
 * the array (now >> 6(L+1)) & 1 is now's rotation, the other one the next.
 * Read-only outside wheel.c; the two counters are statistics, for tests and
 * for the engine's metrics.
 */
struct td_wheel {
	uint64_t now;                  /* wheel time, ticks */
	/* [level][parity], bit s set: slot s non-empty */
	uint64_t occupied[TD_WHEEL_LEVELS][2];
	struct td_timer_list slot[TD_WHEEL_LEVELS][2][TD_WHEEL_SLOTS];
	struct td_timer_list overflow; /* two or more 2^36 blocks ahead */
	struct td_timer_list spill;    /* former overflow, to re-place */
	struct td_timer_list due;      /* expires <= now, not yet fired */
	size_t count;                  /* pending timers */
	uint64_t moved_in_advance;     /* re-placed in td_wheel_advance() */
	uint64_t moved_ahead;          /* moved by td_wheel_precascade() */
};

/** Initialise @w with wheel time @now. No allocation; no finish needed. */
void td_wheel_init(struct td_wheel *w, uint64_t now);

/** Initialise a timer as not pending with callback @cb. */
void td_timer_init(struct td_timer *t, td_timer_cb cb);

static inline bool td_timer_pending(const struct td_timer *t)
{
	return t->next != NULL;
}

/**
 * Arm @t to fire at tick @expires. If @t is pending it is moved. An
 * @expires <= w->now fires on the next td_wheel_advance().
 */
void td_wheel_add(struct td_wheel *w, struct td_timer *t, uint64_t expires);

/** Disarm @t. A no-op when @t is not pending. */
void td_wheel_cancel(struct td_wheel *w, struct td_timer *t);

/**
 * The earliest tick at which td_wheel_advance() has work to do: the expiry
 * of the next timer, or an earlier cascade point. Never later than the
 * earliest expiry. UINT64_MAX when nothing is pending; <= w->now when timers
 * are due.
 */
uint64_t td_wheel_next(const struct td_wheel *w);

/**
 * Move wheel time forward to @now (a smaller @now is ignored) and fire every
 * timer with expires <= @now, in expiry order. Timers added by callbacks with
 * expires <= @now fire in this same call. Returns the number fired.
 *
 * Timers in a slot that becomes current and that td_wheel_precascade() has
 * not moved yet are re-placed here, synchronously; w->moved_in_advance
 * counts them. Not reentrant: a callback must not call it on its own wheel.
 */
size_t td_wheel_advance(struct td_wheel *w, uint64_t now);

/**
 * Do up to @budget timers' worth of re-placing ahead of time: move timers
 * out of the slots that come due next (the most urgent first) into the
 * lower levels, where td_wheel_advance() will find them in place. Returns
 * the number moved; fewer than @budget means nothing is left to do until
 * td_wheel_precascade_next() (adding timers never creates such work).
 *
 * Meant for idle time: the caller runs it each loop iteration and, while it
 * returns @budget, polls instead of sleeping; it sleeps no later than
 * td_wheel_precascade_next(). Correctness never depends on it; it only
 * keeps td_wheel_advance() from doing the work in one go. Each move costs
 * about one cache miss. Fires nothing; callable at any time, including
 * from a timer callback.
 */
size_t td_wheel_precascade(struct td_wheel *w, size_t budget);

/**
 * The earliest tick at which td_wheel_precascade() has work to do: when a
 * slot holding timers becomes the next one to come due at its level, one
 * slot width (64 ms at level 1, 4.1 s at level 2, ...) before its start.
 * <= w->now when it has work now; UINT64_MAX when none is in sight. Like
 * td_wheel_next() it changes as timers are added and time moves on: read
 * both before each wait. A loop that sleeps must wake at the earlier of the
 * two, or such a slot is re-placed all at once by td_wheel_advance() when
 * it comes due.
 */
uint64_t td_wheel_precascade_next(const struct td_wheel *w);

static inline size_t td_wheel_count(const struct td_wheel *w)
{
	return w->count;
}

#endif
