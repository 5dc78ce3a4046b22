/* Clocks: the wheel runs on CLOCK_MONOTONIC milliseconds, events and specs
 * use wall-clock unix milliseconds. */
#ifndef TD_CLOCK_H
#define TD_CLOCK_H

#include <stdint.h>
#include <time.h>

static inline int64_t td_mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static inline int64_t td_wall_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static inline uint64_t td_mono_ms(void)
{
	return (uint64_t)(td_mono_ns() / 1000000);
}

static inline int64_t td_wall_ms(void)
{
	return td_wall_ns() / 1000000;
}

/**
 * The wheel tick at or after which wall-clock time @wall_ms has been reached,
 * using the current offset between the two clocks. Rounds up so a timer
 * converted this way never fires early. Works in milliseconds so that any
 * time up to TD_TIME_MAX_MS (year 9999) converts without overflow.
 */
static inline uint64_t td_wall_to_tick(int64_t wall_ms)
{
	int64_t mono = td_mono_ns(), wall = td_wall_ns();
	int64_t off = wall - mono; /* wall = mono + off */
	/* tick >= wall_ms - off / 1e6, so tick = wall_ms - floor(off / 1e6). */
	int64_t off_ms = off / 1000000 - (off % 1000000 < 0);
	if (wall_ms <= off_ms)
		return 0;
	return (uint64_t)(wall_ms - off_ms);
}

/**
 * The tick to re-arm at after a callback found the wall clock behind the
 * due time (it was stepped back): never at or before @now, so a callback
 * can never re-arm itself into the same advance.
 */
static inline uint64_t td_rearm_tick(int64_t wall_ms, uint64_t now)
{
	uint64_t t = td_wall_to_tick(wall_ms);
	return t > now ? t : now + 1;
}

#endif
