#include "triggerd/timefmt.h"

#include <errno.h>
#include <stdbool.h>

int64_t td_days_from_civil(int64_t y, unsigned m, unsigned d)
{
	/* Howard Hinnant's algorithm: exact for all representable years. */
	y -= m <= 2;
	int64_t era = (y >= 0 ? y : y - 399) / 400;
	unsigned yoe = (unsigned)(y - era * 400);
	unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + (int64_t)doe - 719468;
}

static bool digits(const char *s, size_t len, size_t at, size_t n, unsigned *out)
{
	unsigned v = 0;
	if (at + n > len)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[at + i];
		if (c < '0' || c > '9')
			return false;
		v = v * 10 + (unsigned)(c - '0');
	}
	*out = v;
	return true;
}

static unsigned days_in_month(unsigned y, unsigned m)
{
	static const unsigned char dm[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	if (m == 2 && ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0))
		return 29;
	return dm[m - 1];
}

int td_rfc3339_parse(const char *s, size_t len, int64_t *out_ms)
{
	unsigned y, mo, d, h, mi, sec, ms = 0;
	if (!digits(s, len, 0, 4, &y) || len < 19 || s[4] != '-' ||
	    !digits(s, len, 5, 2, &mo) || s[7] != '-' || !digits(s, len, 8, 2, &d) ||
	    (s[10] != 'T' && s[10] != 't' && s[10] != ' ') ||
	    !digits(s, len, 11, 2, &h) || s[13] != ':' || !digits(s, len, 14, 2, &mi) ||
	    s[16] != ':' || !digits(s, len, 17, 2, &sec))
		return -EINVAL;
	if (mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo) || h > 23 ||
	    mi > 59 || sec > 59)
		return -EINVAL;
	size_t i = 19;
	if (i < len && s[i] == '.') {
		size_t start = ++i;
		unsigned scale = 100;
		while (i < len && s[i] >= '0' && s[i] <= '9') {
			ms += (unsigned)(s[i] - '0') * scale;
			scale /= 10;
			i++;
		}
		if (i == start)
			return -EINVAL;
	}
	int offset_min = 0;
	if (i < len && (s[i] == 'Z' || s[i] == 'z')) {
		i++;
	} else if (i < len && (s[i] == '+' || s[i] == '-')) {
		unsigned oh, om;
		if (!digits(s, len, i + 1, 2, &oh) || i + 3 >= len || s[i + 3] != ':' ||
		    !digits(s, len, i + 4, 2, &om) || oh > 23 || om > 59)
			return -EINVAL;
		offset_min = (int)(oh * 60 + om) * (s[i] == '-' ? -1 : 1);
		i += 6;
	} else {
		return -EINVAL; /* RFC 3339 requires an offset */
	}
	if (i != len)
		return -EINVAL;
	int64_t days = td_days_from_civil(y, mo, d);
	int64_t secs = days * 86400 + h * 3600 + mi * 60 + sec - (int64_t)offset_min * 60;
	*out_ms = secs * 1000 + ms;
	return 0;
}
