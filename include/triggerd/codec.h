/*
 * JSON <-> msgpack conversion for specs, events and the command-line tools.
 * Both directions parse outside input, so both have fuzz targets.
 */
#ifndef TRIGGERD_CODEC_H
#define TRIGGERD_CODEC_H

#include <msgpack.h>
#include <stddef.h>

#include "triggerd/buf.h"

#define TD_JSON_MAX_DEPTH 64

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

#endif
