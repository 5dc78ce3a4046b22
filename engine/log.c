#include "triggerd/log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static enum td_log_level min_level = TD_LOG_INFO;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void td_log_set_level(enum td_log_level level)
{
	min_level = level;
}

int td_log_parse_level(const char *s, enum td_log_level *out)
{
	for (int i = 0; i < 4; i++) {
		if (strcmp(s, level_names[i]) == 0) {
			*out = (enum td_log_level)i;
			return 0;
		}
	}
	return -EINVAL;
}

int td_log_enabled(enum td_log_level level)
{
	return level >= min_level;
}

const char *td_log_esc(char *buf, size_t len, const char *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;
	for (size_t i = 0; i < n && o + 7 < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '"' || c == '\\') {
			buf[o++] = '\\';
			buf[o++] = (char)c;
		} else if (c < 0x20 || c == 0x7f) {
			memcpy(buf + o, "\\u00", 4);
			buf[o + 4] = hex[c >> 4];
			buf[o + 5] = hex[c & 15];
			o += 6;
		} else {
			buf[o++] = (char)c;
		}
	}
	if (len)
		buf[o < len ? o : len - 1] = '\0';
	return buf;
}

void td_log(enum td_log_level level, const char *msg, const char *fields_fmt, ...)
{
	if (level < min_level)
		return;
	char line[4096];
	struct timespec ts;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	int n = snprintf(line, sizeof(line),
			 "{\"ts\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ\",\"level\":\"%s\",\"msg\":\"%s\"",
			 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
			 tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000, level_names[level], msg);
	if (fields_fmt && n > 0 && (size_t)n < sizeof(line) - 2) {
		line[n++] = ',';
		va_list ap;
		va_start(ap, fields_fmt);
		int m = vsnprintf(line + n, sizeof(line) - (size_t)n, fields_fmt, ap);
		va_end(ap);
		if (m > 0)
			n += m;
	}
	if (n < 0 || (size_t)n > sizeof(line) - 3)
		n = (int)sizeof(line) - 3; /* truncated: still a line, maybe not JSON */
	line[n++] = '}';
	line[n++] = '\n';
	/* One write per line so lines from concurrent writers do not interleave. */
	fwrite(line, 1, (size_t)n, stderr);
	fflush(stderr);
}
