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
 *  - callbacks may add, re-add or cancel any timer, including their own.
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

struct td_wheel {
	uint64_t now;                       /* wheel time, ticks */
	uint64_t occupied[TD_WHEEL_LEVELS]; /* bit s set: slot s non-empty */
	struct td_timer_list slot[TD_WHEEL_LEVELS][TD_WHEEL_SLOTS];
	struct td_timer_list overflow;      /* beyond the last level */
	struct td_timer_list due;           /* expires <= now, not yet fired */
	size_t count;                       /* pending timers */
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
 */
size_t td_wheel_advance(struct td_wheel *w, uint64_t now);

static inline size_t td_wheel_count(const struct td_wheel *w)
{
	return w->count;
}

#endif
