/* Unit tests: the spec envelope, the timer kind's args, RFC 3339, events. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "clock.h"
#include "engine_i.h"
#include "triggerd/codec.h"
#include "triggerd/timefmt.h"

struct parsed {
	msgpack_sbuffer sb;
	msgpack_unpacked up;
	struct td_spec spec;
	char err[TD_ERR_MAX];
	int rc;
};

static void parse_json(struct parsed *p, const char *json, int64_t now)
{
	char jerr[160];
	msgpack_sbuffer_init(&p->sb);
	msgpack_unpacked_init(&p->up);
	assert_int_equal(td_json_to_msgpack(json, strlen(json), &p->sb, jerr, sizeof(jerr)), 0);
	size_t off = 0;
	assert_int_equal(msgpack_unpack_next(&p->up, p->sb.data, p->sb.size, &off),
			 MSGPACK_UNPACK_SUCCESS);
	p->err[0] = '\0';
	p->rc = td_spec_parse(&p->up.data, now, &p->spec, p->err, sizeof(p->err));
}

static void parsed_free(struct parsed *p)
{
	msgpack_unpacked_destroy(&p->up);
	msgpack_sbuffer_destroy(&p->sb);
}

static void expect_error(const char *json, const char *msg)
{
	struct parsed p;
	parse_json(&p, json, 1000);
	assert_int_equal(p.rc, TD_EINVAL_SPEC);
	if (!strstr(p.err, msg))
		fail_msg("'%s': error '%s' lacks '%s'", json, p.err, msg);
	parsed_free(&p);
}

static void envelope_valid(void **state)
{
	struct parsed p;
	parse_json(&p, "{\"id\":\"a\",\"kind\":\"timer\",\"args\":{\"at_ms\":5},"
		       "\"timeout_ms\":100,\"deadline_ms\":5000,\"queue\":\"q.1\","
		       "\"meta\":{\"k\":[1,2]},\"repeat\":false}", 1000);
	assert_int_equal(p.rc, 0);
	assert_int_equal(p.spec.id_len, 1);
	assert_ptr_equal(p.spec.kind, &td_kind_timer);
	assert_int_equal(p.spec.deadline_ms, 1100); /* the earlier of the two */
	assert_int_equal(p.spec.queue_len, 3);
	assert_non_null(p.spec.meta);
	assert_false(p.spec.repeat);
	parsed_free(&p);
}

static void envelope_errors(void **state)
{
	expect_error("[1]", "spec: expected a map, got an array");
	expect_error("{\"kind\":\"timer\"}", "id: required");
	expect_error("{\"id\":\"\",\"kind\":\"timer\"}", "id: must not be empty");
	expect_error("{\"id\":1}", "id: expected a string, got a positive integer");
	expect_error("{\"id\":\"a\"}", "kind: required");
	expect_error("{\"id\":\"a\",\"kind\":7}", "kind: expected a string");
	expect_error("{\"id\":\"a\",\"kind\":\"x\"}", "kind: unknown kind 'x'");
	expect_error("{\"id\":\"a\",\"kind\":\"timer\",\"args\":[]}", "args: expected a map");
	expect_error("{\"id\":\"a\",\"kind\":\"timer\",\"timeout_ms\":1.5}", "timeout_ms: expected a non-negative integer");
	expect_error("{\"id\":\"a\",\"kind\":\"timer\",\"deadline_ms\":\"x\"}", "deadline_ms: expected");
	expect_error("{\"id\":\"a\",\"kind\":\"timer\",\"repeat\":1}", "repeat: expected a boolean");
	expect_error("{\"id\":\"a\",\"kind\":\"timer\",\"queue\":\"\"}", "queue: expected");
	expect_error("{\"id\":\"a\",\"kind\":\"timer\",\"queue\":\"a/b\"}", "queue: expected");
	expect_error("{\"id\":\"a\",\"kind\":\"timer\",\"zzz\":1}", "zzz: unknown field");
	expect_error("{\"id\":\"a\",\"classpath\":\"airflow.x.Y\",\"kwargs\":{}}", "classpath:");
	/* id over 256 bytes, and exactly 256 accepted */
	char doc[600], id[300];
	memset(id, 'i', 257);
	id[257] = '\0';
	snprintf(doc, sizeof(doc), "{\"id\":\"%s\",\"kind\":\"timer\"}", id);
	expect_error(doc, "id: longer than 256 bytes (257)");
	id[256] = '\0';
	snprintf(doc, sizeof(doc), "{\"id\":\"%s\",\"kind\":\"timer\"}", id);
	struct parsed p;
	parse_json(&p, doc, 0);
	assert_int_equal(p.rc, 0);
	parsed_free(&p);
}

static void meta_limit(void **state)
{
	/* 16384 bytes encoded is the limit: a str of n bytes encodes as
	 * n + 3 (str16) inside a 1-entry fixmap with a 1-byte key. */
	char *doc = malloc(20000);
	char *big = malloc(17000);
	size_t n = 16384 - 1 - 2 - 3; /* fixmap + fixstr "k" + str16 header */
	memset(big, 'x', n);
	big[n] = '\0';
	snprintf(doc, 20000, "{\"id\":\"a\",\"kind\":\"timer\",\"meta\":{\"k\":\"%s\"}}", big);
	struct parsed p;
	parse_json(&p, doc, 0);
	assert_int_equal(p.rc, 0);
	parsed_free(&p);
	big[n] = 'x';
	big[n + 1] = '\0';
	snprintf(doc, 20000, "{\"id\":\"a\",\"kind\":\"timer\",\"meta\":{\"k\":\"%s\"}}", big);
	expect_error(doc, "meta: larger than 16384 bytes when encoded (16385)");
	free(doc);
	free(big);
}

/* A shard good enough for td_trigger_new (no reactor, no Redis). */
static struct td_shard fake;
static struct td_engine fake_engine;

static struct td_shard *fake_shard(void)
{
	fake.eng = &fake_engine;
	return &fake;
}

static int build(const char *json, int64_t now, struct td_trigger **t, char *err)
{
	struct parsed p;
	parse_json(&p, json, now);
	int rc = p.rc;
	if (rc == 0)
		rc = td_trigger_new(fake_shard(), &p.spec, now, t, err, TD_ERR_MAX);
	else
		strcpy(err, p.err);
	parsed_free(&p);
	return rc;
}

/* Render the stored form of @t as JSON. */
static char *stored_json(struct td_trigger *t)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	td_trigger_pack_stored(t, &pk);
	msgpack_unpacked up;
	msgpack_unpacked_init(&up);
	size_t off = 0;
	assert_int_equal(msgpack_unpack_next(&up, sb.data, sb.size, &off), MSGPACK_UNPACK_SUCCESS);
	assert_int_equal(off, sb.size);
	struct td_buf b = TD_BUF_INIT;
	assert_int_equal(td_msgpack_to_json(&up.data, &b), 0);
	msgpack_unpacked_destroy(&up);
	msgpack_sbuffer_destroy(&sb);
	return b.data;
}

static void timer_args_normalised(void **state)
{
	struct td_trigger *t;
	char err[TD_ERR_MAX];
	assert_int_equal(build("{\"id\":\"a\",\"kind\":\"timer\",\"args\":{\"after_ms\":250},"
			       "\"timeout_ms\":1000,\"meta\":{\"x\":1}}", 5000, &t, err), 0);
	char *js = stored_json(t);
	assert_string_equal(js, "{\"v\":1,\"id\":\"a\",\"kind\":\"timer\",\"args\":{\"at_ms\":5250},"
				"\"deadline_ms\":6000,\"meta\":{\"x\":1}}");
	free(js);
	td_trigger_free(t);

	assert_int_equal(build("{\"id\":\"b\",\"kind\":\"timer\",\"args\":{\"at\":\"2026-11-21T16:40:00.250+01:00\","
			       "\"interval_ms\":60000},\"repeat\":true,\"queue\":\"w\"}", 0, &t, err), 0);
	js = stored_json(t);
	assert_string_equal(js, "{\"v\":1,\"id\":\"b\",\"kind\":\"timer\",\"args\":{\"at_ms\":1795275600250,"
				"\"interval_ms\":60000},\"queue\":\"w\",\"repeat\":true}");
	free(js);
	td_trigger_free(t);
}

static void timer_args_errors(void **state)
{
	struct td_trigger *t = NULL;
	char err[TD_ERR_MAX];
	static const struct {
		const char *args;
		const char *msg;
	} cases[] = {
		{"{}", "args: required: one of at_ms, at, after_ms"},
		{"{\"at_ms\":-1}", "args.at_ms: expected a non-negative integer"},
		{"{\"after_ms\":\"1s\"}", "args.after_ms: expected a non-negative integer"},
		{"{\"at\":12}", "args.at: expected an RFC 3339"},
		{"{\"at\":\"yesterday\"}", "args.at: expected an RFC 3339"},
		{"{\"at_ms\":1,\"at\":\"2026-01-01T00:00:00Z\"}", "args: give only one"},
		{"{\"at_ms\":1,\"interval_ms\":10}", "args.interval_ms: only valid with repeat"},
		{"{\"at_ms\":1,\"every\":10}", "args.every: unknown field"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char doc[300];
		snprintf(doc, sizeof(doc), "{\"id\":\"a\",\"kind\":\"timer\",\"args\":%s}", cases[i].args);
		assert_int_equal(build(doc, 0, &t, err), TD_EINVAL_SPEC);
		if (!strstr(err, cases[i].msg))
			fail_msg("%s: '%s' lacks '%s'", cases[i].args, err, cases[i].msg);
	}
	assert_int_equal(build("{\"id\":\"a\",\"kind\":\"timer\",\"args\":{\"at_ms\":1,\"interval_ms\":0},\"repeat\":true}",
			       0, &t, err), TD_EINVAL_SPEC);
	assert_non_null(strstr(err, "args.interval_ms: must be at least 1"));
	assert_int_equal(build("{\"id\":\"a\",\"kind\":\"timer\",\"args\":{\"at_ms\":1},\"repeat\":true}",
			       0, &t, err), TD_EINVAL_SPEC);
	assert_non_null(strstr(err, "args.interval_ms: required when repeat is true"));
}

static void rfc3339(void **state)
{
	int64_t ms;
	assert_int_equal(td_rfc3339_parse("1970-01-01T00:00:00Z", 20, &ms), 0);
	assert_int_equal(ms, 0);
	const char *s = "2026-11-21T16:40:00.25Z";
	assert_int_equal(td_rfc3339_parse(s, strlen(s), &ms), 0);
	assert_int_equal(ms, 1795279200250LL);
	s = "2026-11-21 17:40:00+01:00";
	assert_int_equal(td_rfc3339_parse(s, strlen(s), &ms), 0);
	assert_int_equal(ms, 1795279200000LL);
	s = "2026-11-21t11:10:00.123456-05:30";
	assert_int_equal(td_rfc3339_parse(s, strlen(s), &ms), 0);
	assert_int_equal(ms, 1795279200123LL);
	s = "2024-02-29T00:00:00Z"; /* leap day */
	assert_int_equal(td_rfc3339_parse(s, strlen(s), &ms), 0);
	assert_int_equal(ms, 1709164800000LL);
	static const char *const bad[] = {
		"", "2026-11-21", "2026-11-21T16:40:00", "2026-13-01T00:00:00Z",
		"2023-02-29T00:00:00Z", "2026-11-21T24:00:00Z", "2026-11-21T16:60:00Z",
		"2026-11-21T16:40:60Z", "2026-11-21T16:40:00.Z", "2026-11-21T16:40:00+1:00",
		"2026-11-21T16:40:00Zjunk", "2026-11-21X16:40:00Z", "20a6-11-21T16:40:00Z",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (td_rfc3339_parse(bad[i], strlen(bad[i]), &ms) != -EINVAL)
			fail_msg("accepted '%s'", bad[i]);
}

static void event_encoding(void **state)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	const char meta[] = "\x81\xa1k\x01"; /* {"k":1} */
	struct td_event ev = {
		.id = "t1", .id_len = 2, .kind = "timer", .status = TD_SUCCESS,
		.meta = meta, .meta_len = 4, .seq = 3, .fired_at_ms = 1001, .due_at_ms = 1000,
	};
	td_event_pack(&ev, &pk);
	msgpack_unpacked up;
	msgpack_unpacked_init(&up);
	size_t off = 0;
	assert_int_equal(msgpack_unpack_next(&up, sb.data, sb.size, &off), MSGPACK_UNPACK_SUCCESS);
	struct td_buf b = TD_BUF_INIT;
	assert_int_equal(td_msgpack_to_json(&up.data, &b), 0);
	assert_string_equal(b.data, "{\"id\":\"t1\",\"kind\":\"timer\",\"status\":\"success\",\"payload\":null,"
				    "\"meta\":{\"k\":1},\"seq\":3,\"fired_at_ms\":1001,\"due_at_ms\":1000}");
	td_buf_finish(&b);
	msgpack_unpacked_destroy(&up);

	/* rejected: no kind, error present, no due */
	sb.size = 0;
	struct td_event rj = {.id = "", .status = TD_REJECTED, .error = "id: required",
			      .fired_at_ms = 5, .due_at_ms = -1};
	td_event_pack(&rj, &pk);
	msgpack_unpacked_init(&up);
	off = 0;
	assert_int_equal(msgpack_unpack_next(&up, sb.data, sb.size, &off), MSGPACK_UNPACK_SUCCESS);
	assert_int_equal(td_msgpack_to_json(&up.data, &b), 0);
	assert_string_equal(b.data, "{\"id\":\"\",\"status\":\"rejected\",\"payload\":null,"
				    "\"error\":\"id: required\",\"fired_at_ms\":5}");
	td_buf_finish(&b);
	msgpack_unpacked_destroy(&up);
	msgpack_sbuffer_destroy(&sb);
}

static void table_ops(void **state)
{
	struct td_table tb;
	assert_int_equal(td_table_init(&tb), 0);
	enum { N = 5000 };
	struct td_trigger **ts = calloc(N, sizeof(*ts));
	for (int i = 0; i < N; i++) {
		char doc[120], err[TD_ERR_MAX];
		snprintf(doc, sizeof(doc), "{\"id\":\"id-%d\",\"kind\":\"timer\",\"args\":{\"at_ms\":1}}", i);
		assert_int_equal(build(doc, 0, &ts[i], err), 0);
		assert_null(td_table_get(&tb, td_trigger_idp(ts[i]), ts[i]->id_len));
		assert_int_equal(td_table_put(&tb, ts[i]), 0);
	}
	assert_int_equal(tb.count, N);
	assert_true(tb.nbuckets >= N);
	for (int i = 0; i < N; i += 2)
		td_table_del(&tb, ts[i]);
	for (int i = 0; i < N; i++) {
		char id[32];
		int n = snprintf(id, sizeof(id), "id-%d", i);
		struct td_trigger *got = td_table_get(&tb, id, (size_t)n);
		if (i % 2)
			assert_ptr_equal(got, ts[i]);
		else
			assert_null(got);
	}
	for (int i = 0; i < N; i++)
		td_trigger_free(ts[i]);
	free(ts);
	td_table_finish(&tb);
}

static void clock_conversion(void **state)
{
	/* A second from now is ~1000 ticks ahead, rounded up, never before. */
	int64_t wall = td_wall_ms();
	uint64_t now = td_mono_ms();
	uint64_t t = td_wall_to_tick(wall + 1000);
	assert_true(t >= now + 999 && t <= now + 1002);
	/* The far end converts without overflow and stays in order. */
	uint64_t far = td_wall_to_tick(TD_TIME_MAX_MS);
	assert_true(far > now + (uint64_t)(TD_TIME_MAX_MS - wall) - 5);
	assert_true(td_wall_to_tick(TD_TIME_MAX_MS - 1) < far);
	assert_int_equal(td_wall_to_tick(0), 0);
	/* Re-arming never lands at or before now. */
	assert_int_equal(td_rearm_tick(0, 500), 501);
	assert_true(td_rearm_tick(wall + 1000, now) == t || td_rearm_tick(wall + 1000, now) == t + 1);
}

static void time_bounds(void **state)
{
	struct td_trigger *t;
	char err[TD_ERR_MAX];
	assert_int_equal(build("{\"id\":\"a\",\"kind\":\"timer\",\"args\":{\"at\":\"9999-12-31T23:59:59.999Z\"}}",
			       0, &t, err), 0);
	td_trigger_free(t);
	assert_int_equal(build("{\"id\":\"a\",\"kind\":\"timer\",\"args\":{\"at_ms\":253402300800000}}",
			       0, &t, err), TD_EINVAL_SPEC);
	assert_non_null(strstr(err, "args.at_ms: larger than 253402300799999"));
	assert_int_equal(build("{\"id\":\"a\",\"kind\":\"timer\",\"args\":{\"after_ms\":253402300799999}}",
			       1000, &t, err), TD_EINVAL_SPEC);
	assert_non_null(strstr(err, "args.after_ms: due time would be after year 9999"));
	assert_int_equal(build("{\"id\":\"a\",\"kind\":\"timer\",\"args\":{\"at_ms\":1},\"timeout_ms\":253402300799999}",
			       1000, &t, err), TD_EINVAL_SPEC);
	assert_non_null(strstr(err, "timeout_ms: deadline would be after year 9999"));
	assert_int_equal(build("{\"id\":\"a\",\"kind\":\"timer\",\"args\":{\"at_ms\":1},\"deadline_ms\":18446744073709551615}",
			       1000, &t, err), TD_EINVAL_SPEC);
	assert_non_null(strstr(err, "deadline_ms: larger than"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(envelope_valid),
		cmocka_unit_test(envelope_errors),
		cmocka_unit_test(meta_limit),
		cmocka_unit_test(timer_args_normalised),
		cmocka_unit_test(timer_args_errors),
		cmocka_unit_test(rfc3339),
		cmocka_unit_test(event_encoding),
		cmocka_unit_test(table_ops),
		cmocka_unit_test(clock_conversion),
		cmocka_unit_test(time_bounds),
	};
	int rc = cmocka_run_group_tests(tests, NULL, NULL);
	msgpack_sbuffer_destroy(&fake.scratch);
	return rc;
}
