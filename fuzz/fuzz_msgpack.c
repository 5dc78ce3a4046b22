/*
 * libFuzzer target: arbitrary bytes as msgpack.
 *
 * Invariants (abort() on violation): whatever msgpack_unpack accepts renders
 * through td_msgpack_to_json to JSON that td_json_to_msgpack accepts, and
 * that JSON is a fixed point: rendering its msgpack and converting again
 * gives the same msgpack bytes. Rendering is bounded: nested non-string
 * keys cannot blow the output up (a slow unit fails with -timeout).
 */
#include <string.h>

#include "triggerd/codec.h"
#include "triggerd/triggerd.h"

#include "fuzz_common.h"

#define die(what, detail) fuzz_die("fuzz_msgpack", what, detail)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	msgpack_sbuffer sb1, sb2;
	msgpack_zone z, z2;
	msgpack_object o, o2;
	struct td_buf j1 = TD_BUF_INIT, j2 = TD_BUF_INIT;
	char err[160];
	size_t off = 0;

	/* The product's own gate: what it accepts must unpack. */
	size_t used = 0;
	char cerr[160];
	if (td_msgpack_check((const char *)data, size, &used, cerr, sizeof(cerr)) != 0)
		return 0;
	{
		msgpack_zone zc;
		msgpack_object oc;
		size_t offc = 0;
		msgpack_zone_init(&zc, 2048);
		msgpack_unpack_return urc = msgpack_unpack((const char *)data, size, &offc, &zc, &oc);
		msgpack_zone_destroy(&zc);
		if ((urc != MSGPACK_UNPACK_SUCCESS && urc != MSGPACK_UNPACK_EXTRA_BYTES) || offc != used)
			die("td_msgpack_check accepted what msgpack-c cannot unpack", "");
	}
	msgpack_sbuffer_init(&sb1);
	msgpack_sbuffer_init(&sb2);
	msgpack_zone_init(&z, 2048);
	msgpack_zone_init(&z2, 2048);

	msgpack_unpack_return ur = msgpack_unpack((const char *)data, size, &off, &z, &o);
	if (ur != MSGPACK_UNPACK_SUCCESS && ur != MSGPACK_UNPACK_EXTRA_BYTES)
		goto out;
	if (td_msgpack_to_json(&o, &j1))
		die("td_msgpack_to_json failed", "");
	if (td_json_to_msgpack(j1.data, j1.len, &sb1, err, sizeof(err))) {
		/* bin/ext render as an object one level deeper than they sit. */
		if (json_depth(j1.data, j1.len) > TD_JSON_MAX_DEPTH)
			goto out;
		die(err, j1.data);
	}

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
