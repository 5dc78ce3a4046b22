/* Helpers shared by the fuzz targets (header-only: each target is one
 * translation unit linked with libFuzzer's main). */
#ifndef TD_FUZZ_COMMON_H
#define TD_FUZZ_COMMON_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* msgpack-c's unpacker refuses more than MSGPACK_EMBED_STACK_SIZE levels. */
#define UNPACK_MAX_DEPTH 32

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Nesting depth of text already known to be valid JSON. */
static inline int json_depth(const void *text, size_t n)
{
	const uint8_t *d = text;
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

static inline void fuzz_die(const char *target, const char *what, const char *detail)
{
	fprintf(stderr, "%s: %s: %s\n", target, what, detail);
	abort();
}

#endif
