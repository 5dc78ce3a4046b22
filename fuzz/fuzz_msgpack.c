/*
 * libFuzzer target: arbitrary bytes as msgpack.
 *
 * Invariants (abort() on violation): whatever msgpack_unpack accepts renders
 * through td_msgpack_to_json to JSON that td_json_to_msgpack accepts, and
 * that JSON is a fixed point: rendering its msgpack and converting again
 * gives the same msgpack bytes. Rendering is bounded: nested non-string
 * keys cannot blow the output up (a slow unit fails with -timeout).
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "triggerd/codec.h"
#include "triggerd/triggerd.h"

/* msgpack-c's unpacker refuses more than MSGPACK_EMBED_STACK_SIZE levels. */
#define UNPACK_MAX_DEPTH 32

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint32_t be(const uint8_t *p, size_t n)
{
	uint32_t v = 0;
	for (size_t i = 0; i < n; i++)
		v = v << 8 | p[i];
	return v;
}

/*
 * Bounds what msgpack_unpack puts in its zone. It allocates an array or map
 * for the declared count as soon as it reads the header, so five bytes
 * claiming 2^32 elements would ask for 96 GiB. Refuse any header declaring
 * more members than bytes remain (each member takes at least one): the zone
 * then stays within about (1 + 32 open levels) * 24 bytes per input byte.
 * The scan is flat: every header in the input is visited in order, payloads
 * of str/bin/ext and scalars are skipped.
 */
static bool sizes_bounded(const uint8_t *d, size_t n)
{
	size_t i = 0;

	while (i < n) {
		uint8_t c = d[i++];
		size_t lenw = 0, fixed = 0, extra = 0;
		uint64_t members = 0;
		bool container = false;

		if (c <= 0x7f || c >= 0xe0 || (c >= 0xc0 && c <= 0xc3))
			continue;
		if (c <= 0x8f) {
			container = true;
			members = (uint64_t)(c & 15) * 2;
		} else if (c <= 0x9f) {
			container = true;
			members = c & 15;
		} else if (c <= 0xbf) {
			fixed = c & 31;
		} else {
			switch (c) {
			case 0xc4: case 0xd9: lenw = 1; break;
			case 0xc5: case 0xda: lenw = 2; break;
			case 0xc6: case 0xdb: lenw = 4; break;
			case 0xc7: lenw = 1; extra = 1; break;
			case 0xc8: lenw = 2; extra = 1; break;
			case 0xc9: lenw = 4; extra = 1; break;
			case 0xca: fixed = 4; break;
			case 0xcb: fixed = 8; break;
			case 0xcc: case 0xd0: fixed = 1; break;
			case 0xcd: case 0xd1: fixed = 2; break;
			case 0xce: case 0xd2: fixed = 4; break;
			case 0xcf: case 0xd3: fixed = 8; break;
			case 0xd4: fixed = 2; break;
			case 0xd5: fixed = 3; break;
			case 0xd6: fixed = 5; break;
			case 0xd7: fixed = 9; break;
			case 0xd8: fixed = 17; break;
			case 0xdc: case 0xde: lenw = 2; container = true; break;
			case 0xdd: case 0xdf: lenw = 4; container = true; break;
			}
		}
		if (lenw) {
			if (n - i < lenw)
				return true; /* truncated header: nothing allocated */
			uint32_t v = be(d + i, lenw);
			i += lenw;
			if (container)
				members = c >= 0xde ? (uint64_t)v * 2 : v;
			else
				fixed = (size_t)v + extra;
		}
		if (container) {
			if (members > n - i)
				return false;
			continue;
		}
		if (fixed > n - i)
			return true; /* truncated payload: no later headers */
		i += fixed;
	}
	return true;
}

/* Nesting depth of text already known to be valid JSON. */
static int json_depth(const char *d, size_t n)
{
	int depth = 0, max = 0;
	bool in_str = false;

	for (size_t i = 0; i < n; i++) {
		if (in_str) {
			if (d[i] == '\\')
				i++;
			else if (d[i] == '"')
				in_str = false;
		} else if (d[i] == '"') {
			in_str = true;
		} else if (d[i] == '[' || d[i] == '{') {
			if (++depth > max)
				max = depth;
		} else if (d[i] == ']' || d[i] == '}') {
			depth--;
		}
	}
	return max;
}

static void die(const char *what, const char *detail)
{
	fprintf(stderr, "fuzz_msgpack: %s: %s\n", what, detail);
	abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	msgpack_sbuffer sb1, sb2;
	msgpack_zone z, z2;
	msgpack_object o, o2;
	struct td_buf j1 = TD_BUF_INIT, j2 = TD_BUF_INIT;
	char err[160];
	size_t off = 0;

	if (!sizes_bounded(data, size))
		return 0;
	msgpack_sbuffer_init(&sb1);
	msgpack_sbuffer_init(&sb2);
	msgpack_zone_init(&z, 2048);
	msgpack_zone_init(&z2, 2048);

	msgpack_unpack_return ur = msgpack_unpack((const char *)data, size, &off, &z, &o);
	if (ur != MSGPACK_UNPACK_SUCCESS && ur != MSGPACK_UNPACK_EXTRA_BYTES)
		goto out;
	if (td_msgpack_to_json(&o, &j1))
		die("td_msgpack_to_json failed", "");
	if (td_json_to_msgpack(j1.data, j1.len, &sb1, err, sizeof(err)))
		die(err, j1.data);

	/*
	 * A bin or ext 32 levels down renders as an object one level deeper,
	 * which msgpack-c then refuses to unpack.
	 */
	off = 0;
	ur = msgpack_unpack(sb1.data, sb1.size, &off, &z2, &o2);
	if (ur == MSGPACK_UNPACK_NOMEM_ERROR && json_depth(j1.data, j1.len) > UNPACK_MAX_DEPTH)
		goto out;
	if (ur != MSGPACK_UNPACK_SUCCESS || off != sb1.size)
		die("our msgpack does not unpack", j1.data);
	if (td_msgpack_to_json(&o2, &j2))
		die("td_msgpack_to_json failed", "");
	if (td_json_to_msgpack(j2.data, j2.len, &sb2, err, sizeof(err)))
		die(err, j2.data);
	if (sb1.size != sb2.size || memcmp(sb1.data, sb2.data, sb1.size))
		die("not a fixed point", j1.data);
out:
	td_buf_finish(&j1);
	td_buf_finish(&j2);
	msgpack_zone_destroy(&z);
	msgpack_zone_destroy(&z2);
	msgpack_sbuffer_destroy(&sb1);
	msgpack_sbuffer_destroy(&sb2);
	return 0;
}
