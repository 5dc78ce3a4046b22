/*
 * JSON-lines logging on stderr: one object per line with "ts", "level",
 * "msg" and caller-supplied fields.
 *
 * The level is process-wide state (the one deliberate global besides the
 * stderr stream itself): every module and every shard logs to the same
 * stream, and the level is set once from the command line.
 */
#ifndef TRIGGERD_LOG_H
#define TRIGGERD_LOG_H

#include <stddef.h>

enum td_log_level { TD_LOG_DEBUG, TD_LOG_INFO, TD_LOG_WARN, TD_LOG_ERROR };

/** Set the minimum level written. */
void td_log_set_level(enum td_log_level level);
/** Parse "debug", "info", "warn" or "error". Returns 0 or -EINVAL. */
int td_log_parse_level(const char *s, enum td_log_level *out);
/** True when @level would be written (use to skip building costly fields). */
int td_log_enabled(enum td_log_level level);

/**
 * Write one line. @fields_fmt (may be NULL) is a printf format producing
 * further JSON members without the leading comma, e.g. "\"n\":%d"; string
 * values taken from outside input must be passed through td_log_esc().
 */
void td_log(enum td_log_level level, const char *msg, const char *fields_fmt, ...)
	__attribute__((format(printf, 3, 4)));

/**
 * Escape @n bytes of @s for use inside a JSON string (no quotes added),
 * truncating to fit @buf. Returns @buf.
 */
const char *td_log_esc(char *buf, size_t len, const char *s, size_t n);

#define td_debug(...) td_log(TD_LOG_DEBUG, __VA_ARGS__)
#define td_info(...) td_log(TD_LOG_INFO, __VA_ARGS__)
#define td_warn(...) td_log(TD_LOG_WARN, __VA_ARGS__)
#define td_error(...) td_log(TD_LOG_ERROR, __VA_ARGS__)

#endif
