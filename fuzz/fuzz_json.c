/*
 * libFuzzer target: arbitrary bytes as JSON text.
 *
 * Invariants (abort() on violation):
 *  - a rejection is TD_EJSON with an "offset N: ..." message;
 *  - accepted text yields exactly one msgpack object that msgpack_unpack
 *    reads back in full (unless it nests deeper than msgpack-c can unpack);
 *  - that object renders to JSON which td_json_to_msgpack accepts again and
 *    which converts to the very same msgpack bytes.
 */
#include <string.h>

#include "triggerd/codec.h"
#include "triggerd/triggerd.h"

#include "fuzz_common.h"

#define die(what, detail) fuzz_die("fuzz_json", what, detail)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	msgpack_sbuffer sb1, sb2;
	msgpack_zone z;
	msgpack_object o;
	struct td_buf json = TD_BUF_INIT;
	char err[160];
	size_t off = 0;

	msgpack_sbuffer_init(&sb1);
	msgpack_sbuffer_init(&sb2);
	msgpack_zone_init(&z, 2048);

	int rc = td_json_to_msgpack((const char *)data, size, &sb1, err, sizeof(err));
	if (rc) {
		if (rc != TD_EJSON || strncmp(err, "offset ", 7) || sb1.size)
			die("bad rejection", err);
		goto out;
	}

	msgpack_unpack_return ur = msgpack_unpack(sb1.data, sb1.size, &off, &z, &o);
	if (ur == MSGPACK_UNPACK_NOMEM_ERROR && json_depth(data, size) > UNPACK_MAX_DEPTH)
		goto out;
	if (ur != MSGPACK_UNPACK_SUCCESS || off != sb1.size)
		die("our msgpack does not unpack", "");

	if (td_msgpack_to_json(&o, &json))
		die("td_msgpack_to_json failed", "");
	if (td_json_to_msgpack(json.data, json.len, &sb2, err, sizeof(err)))
		die(err, json.data);
	if (sb1.size != sb2.size || memcmp(sb1.data, sb2.data, sb1.size))
		die("round trip changed the msgpack", json.data);
out:
	td_buf_finish(&json);
	msgpack_zone_destroy(&z);
	msgpack_sbuffer_destroy(&sb1);
	msgpack_sbuffer_destroy(&sb2);
	return 0;
}
