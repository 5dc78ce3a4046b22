/*
 * JSON <-> msgpack conversion for specs, events and the command-line tools.
 * Both directions parse outside input, so both have fuzz targets.
 */
#ifndef TRIGGERD_CODEC_H
#define TRIGGERD_CODEC_H

#include <msgpack.h>
#include <stddef.h>

#include "triggerd/buf.h"

/* msgpack-c 4.0 unpacks at most 32 nested containers (its fixed stack);
 * JSON deeper than that could be converted but never unpacked. */
#define TD_JSON_MAX_DEPTH 32
#define TD_MSGPACK_MAX_DEPTH 32

/**
 * Parse JSON text @json (@len bytes, need not be NUL-terminated) and append
 * its msgpack encoding to @out. Integers that fit int64/uint64 are packed as
 * integers exactly (not through double); other numbers as float64; strings
 * as str; objects as maps (keys in document order). Nesting deeper than
 * TD_JSON_MAX_DEPTH is an error.
 *
 * Returns 0, or TD_EJSON with a message naming the byte offset and the
 * problem written to @err (NUL-terminated, truncated to @errlen). On error
 * @out may hold a partial encoding; the caller discards it.
 */
int td_json_to_msgpack(const char *json, size_t len, msgpack_sbuffer *out,
		       char *err, size_t errlen);

/**
 * Append the JSON rendering of @o to @out. str -> JSON string (invalid UTF-8
 * bytes replaced by U+FFFD), bin -> {"$bin": "<base64>"}, ext ->
 * {"$ext": type, "data": "<base64>"}, non-string map keys are rendered as
 * their JSON text in a string, float NaN/Inf -> null. Returns 0 or -ENOMEM.
 */
int td_msgpack_to_json(const msgpack_object *o, struct td_buf *out);

/**
 * Check that @p (@len bytes) starts with one well-formed msgpack value that
 * msgpack-c can unpack in memory linear in @len: every length fits in the
 * bytes that remain, every array/map count is at most the bytes that remain
 * (each element takes at least one byte; msgpack-c allocates for declared
 * counts up front, so 5 bytes could otherwise ask for 96 GiB), and no
 * container (even an empty one) starts inside TD_MSGPACK_MAX_DEPTH open ones. Call it before
 * msgpack_unpack on bytes from outside. Iterative; never reads past @len.
 *
 * Writes the value's size to *@used. Returns 0, or TD_EMSGPACK with a
 * message naming the byte offset in @err.
 */
int td_msgpack_check(const char *p, size_t len, size_t *used, char *err, size_t errlen);

/**
 * Follow the RFC 6901 JSON pointer @ptr (NUL-terminated, "" or starting with
 * '/') through @o: map keys by string, array elements by decimal index.
 * Returns the object it names, or NULL when it does not resolve.
 */
const msgpack_object *td_mp_pointer(const msgpack_object *o, const char *ptr);

#endif
