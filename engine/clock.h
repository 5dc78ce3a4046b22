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
 * converted this way never fires early.
 */
static inline uint64_t td_wall_to_tick(int64_t wall_ms)
{
	int64_t mono = td_mono_ns(), wall = td_wall_ns();
	int64_t target = wall_ms * 1000000 - (wall - mono); /* mono ns */
	if (target <= 0)
		return 0;
	return (uint64_t)((target + 999999) / 1000000);
}

#endif
