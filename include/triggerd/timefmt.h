/* RFC 3339 timestamps. */
#ifndef TRIGGERD_TIMEFMT_H
#define TRIGGERD_TIMEFMT_H

#include <stddef.h>
#include <stdint.h>

/**
 * Parse an RFC 3339 date-time ("2026-11-21T16:40:00Z",
 * "2026-11-21T16:40:00.250+01:00"; 't'/'z' and a space separator accepted)
 * of @len bytes into unix milliseconds (fractions below 1 ms truncated).
 * Returns 0, or -EINVAL for anything else (including out-of-range fields
 * such as Feb 30 or a leap second).
 */
int td_rfc3339_parse(const char *s, size_t len, int64_t *out_ms);

/** Days since 1970-01-01 of a proleptic Gregorian date. */
int64_t td_days_from_civil(int64_t y, unsigned m, unsigned d);

#endif
