/* Structural check of untrusted msgpack before msgpack-c unpacks it. */
#include <stdint.h>
#include <stdio.h>

#include "triggerd/codec.h"
#include "triggerd/triggerd.h"

static uint64_t be(const unsigned char *p, size_t n)
{
	uint64_t v = 0;
	for (size_t i = 0; i < n; i++)
		v = v << 8 | p[i];
	return v;
}

int td_msgpack_check(const char *p, size_t len, size_t *used, char *err, size_t errlen)
{
	const unsigned char *d = (const unsigned char *)p;
	uint64_t left[TD_MSGPACK_MAX_DEPTH + 1];
	int depth = 0;
	size_t i = 0;
	left[0] = 1;
	for (;;) {
		while (depth > 0 && left[depth] == 0)
			depth--;
		if (depth == 0 && left[0] == 0)
			break;
		left[depth]--;
		if (i >= len) {
			snprintf(err, errlen, "truncated at byte %zu", i);
			return TD_EMSGPACK;
		}
		size_t at = i;
		unsigned char c = d[i++];
		size_t lenw = 0, fixed = 0, extra = 0;
		uint64_t count = 0;
		int container = 0; /* 1 array, 2 map */
		if (c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3) {
			continue;
		} else if (c <= 0x8f) {
			container = 2;
			count = c & 15;
		} else if (c <= 0x9f) {
			container = 1;
			count = c & 15;
		} else if (c <= 0xbf) {
			fixed = c & 31;
		} else {
			switch (c) {
			case 0xc4: case 0xd9: lenw = 1; break;            /* bin8, str8 */
			case 0xc5: case 0xda: lenw = 2; break;
			case 0xc6: case 0xdb: lenw = 4; break;
			case 0xc7: lenw = 1; extra = 1; break;           /* ext8/16/32 */
			case 0xc8: lenw = 2; extra = 1; break;
			case 0xc9: lenw = 4; extra = 1; break;
			case 0xca: fixed = 4; break;                     /* float32 */
			case 0xcb: fixed = 8; break;
			case 0xcc: case 0xd0: fixed = 1; break;          /* (u)int8 */
			case 0xcd: case 0xd1: fixed = 2; break;
			case 0xce: case 0xd2: fixed = 4; break;
			case 0xcf: case 0xd3: fixed = 8; break;
			case 0xd4: fixed = 2; break;                     /* fixext1..16 */
			case 0xd5: fixed = 3; break;
			case 0xd6: fixed = 5; break;
			case 0xd7: fixed = 9; break;
			case 0xd8: fixed = 17; break;
			case 0xdc: lenw = 2; container = 1; break;       /* array16/32 */
			case 0xdd: lenw = 4; container = 1; break;
			case 0xde: lenw = 2; container = 2; break;       /* map16/32 */
			case 0xdf: lenw = 4; container = 2; break;
			default: /* 0xc1 */
				snprintf(err, errlen, "invalid type byte 0x%02x at byte %zu", c, at);
				return TD_EMSGPACK;
			}
		}
		if (lenw) {
			if (len - i < lenw) {
				snprintf(err, errlen, "truncated at byte %zu", len);
				return TD_EMSGPACK;
			}
			uint64_t v = be(d + i, lenw);
			i += lenw;
			if (container)
				count = v;
			else
				fixed = (size_t)v + extra;
			if (!container && v > len) { /* keep size_t arithmetic safe */
				snprintf(err, errlen, "length %llu at byte %zu exceeds the input",
					 (unsigned long long)v, at);
				return TD_EMSGPACK;
			}
		}
		if (!container) {
			if (len - i < fixed) {
				snprintf(err, errlen, "length %zu at byte %zu exceeds the input", fixed, at);
				return TD_EMSGPACK;
			}
			i += fixed;
			continue;
		}
		uint64_t elems = container == 2 ? count * 2 : count;
		if (count > len - i || elems > len - i) {
			snprintf(err, errlen, "%s of %llu at byte %zu cannot fit in the %zu bytes left",
				 container == 2 ? "map" : "array", (unsigned long long)count, at, len - i);
			return TD_EMSGPACK;
		}
		/* msgpack-c checks its stack before it looks at the count, so an
		 * empty container at the limit fails too. */
		if (depth == TD_MSGPACK_MAX_DEPTH) {
			snprintf(err, errlen, "nesting deeper than %d at byte %zu",
				 TD_MSGPACK_MAX_DEPTH, at);
			return TD_EMSGPACK;
		}
		if (elems)
			left[++depth] = elems;
	}
	*used = i;
	return 0;
}
