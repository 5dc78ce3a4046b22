/*
 * Tests for engine/codec.c. Every parser input is copied to the end of a
 * mapping followed by a PROT_NONE page, so reading one byte too far crashes.
 */
#include <errno.h>
#include <locale.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "triggerd/codec.h"
#include "triggerd/triggerd.h"

#include "guard.h"

struct conv {
	msgpack_sbuffer sb;
	char err[128];
	int rc;
};

static void conv_n(struct conv *c, const char *json, size_t n)
{
	msgpack_sbuffer_init(&c->sb);
	strcpy(c->err, "untouched");
	c->rc = td_json_to_msgpack(guarded(json, n), n, &c->sb, c->err, sizeof(c->err));
}

static void conv(struct conv *c, const char *json)
{
	conv_n(c, json, strlen(json));
}

static void conv_free(struct conv *c)
{
	msgpack_sbuffer_destroy(&c->sb);
}

/* Unpacks exactly one object filling the whole buffer. */
static msgpack_object unpack(msgpack_zone *z, const char *data, size_t n)
{
	msgpack_object o;
	size_t off = 0;
	assert_int_equal(msgpack_unpack(data, n, &off, z, &o), MSGPACK_UNPACK_SUCCESS);
	assert_int_equal(off, n);
	return o;
}

static void expect_bytes(const char *json, const char *mp, size_t n)
{
	struct conv c;
	conv(&c, json);
	if (c.rc)
		fail_msg("%s: %s", json, c.err);
	assert_int_equal(c.sb.size, n);
	assert_memory_equal(c.sb.data, mp, n);
	conv_free(&c);
}

static void expect_err_n(const char *json, size_t n, const char *msg)
{
	struct conv c;
	conv_n(&c, json, n);
	assert_int_equal(c.rc, TD_EJSON);
	if (strcmp(c.err, msg))
		fail_msg("input %.*s: got \"%s\", want \"%s\"", (int)n, json, c.err, msg);
	assert_int_equal(c.sb.size, 0);
	conv_free(&c);
}

static void expect_err(const char *json, const char *msg)
{
	expect_err_n(json, strlen(json), msg);
}

/* JSON -> msgpack -> JSON; returns malloc'd text. */
static char *through(const char *json, size_t n)
{
	struct conv c;
	conv_n(&c, json, n);
	if (c.rc)
		fail_msg("%.*s: %s", (int)n, json, c.err);
	msgpack_zone z;
	msgpack_zone_init(&z, 1024);
	msgpack_object o = unpack(&z, c.sb.data, c.sb.size);
	struct td_buf b = TD_BUF_INIT;
	assert_int_equal(td_msgpack_to_json(&o, &b), 0);
	msgpack_zone_destroy(&z);
	conv_free(&c);
	return b.data;
}

static void expect_roundtrip(const char *json)
{
	char *out = through(json, strlen(json));
	assert_string_equal(out, json);
	free(out);
}

/* Renders what @pk_fill packs. */
static char *render_packed(void (*fill)(msgpack_packer *pk))
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_zone z;
	struct td_buf b = TD_BUF_INIT;

	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	fill(&pk);
	msgpack_zone_init(&z, 1024);
	msgpack_object o = unpack(&z, sb.data, sb.size);
	assert_int_equal(td_msgpack_to_json(&o, &b), 0);
	msgpack_zone_destroy(&z);
	msgpack_sbuffer_destroy(&sb);
	return b.data;
}

static char *render_obj(const msgpack_object *o)
{
	struct td_buf b = TD_BUF_INIT;
	assert_int_equal(td_msgpack_to_json(o, &b), 0);
	return b.data;
}

/* ---- JSON -> msgpack: valid input -------------------------------------- */

static void test_scalars(void **state)
{
	expect_bytes("null", "\xc0", 1);
	expect_bytes("true", "\xc3", 1);
	expect_bytes("false", "\xc2", 1);
	expect_bytes("0", "\x00", 1);
	expect_bytes("127", "\x7f", 1);
	expect_bytes("128", "\xcc\x80", 2);
	expect_bytes("-1", "\xff", 1);
	expect_bytes("-33", "\xd0\xdf", 2);
	expect_bytes("\"\"", "\xa0", 1);
	expect_bytes("\"ab\"", "\xa2" "ab", 3);
	expect_bytes("1.5", "\xcb\x3f\xf8\0\0\0\0\0\0", 9);
	expect_bytes("[]", "\x90", 1);
	expect_bytes("{}", "\x80", 1);
	expect_bytes("{\"a\":[1,null]}", "\x81\xa1" "a" "\x92\x01\xc0", 6);
}

static void test_whitespace(void **state)
{
	expect_bytes(" \t\r\n[ 1 ,\n2\t] \r\n", "\x92\x01\x02", 3);
	expect_bytes("{ \"a\" : 1 }", "\x81\xa1" "a" "\x01", 4);
	expect_bytes("  7", "\x07", 1);
}

static void test_int_extremes(void **state)
{
	msgpack_zone z;
	struct conv c;

	msgpack_zone_init(&z, 1024);
	conv(&c, "[9223372036854775807,-9223372036854775808,18446744073709551615,"
		 "18446744073709551616,-9223372036854775809,-0,"
		 "123456789012345678901234567890,4294967296]");
	assert_int_equal(c.rc, 0);
	msgpack_object o = unpack(&z, c.sb.data, c.sb.size);
	assert_int_equal(o.type, MSGPACK_OBJECT_ARRAY);
	assert_int_equal(o.via.array.size, 8);
	msgpack_object *a = o.via.array.ptr;
	assert_int_equal(a[0].type, MSGPACK_OBJECT_POSITIVE_INTEGER);
	assert_true(a[0].via.u64 == (uint64_t)INT64_MAX);
	assert_int_equal(a[1].type, MSGPACK_OBJECT_NEGATIVE_INTEGER);
	assert_true(a[1].via.i64 == INT64_MIN);
	assert_int_equal(a[2].type, MSGPACK_OBJECT_POSITIVE_INTEGER);
	assert_true(a[2].via.u64 == UINT64_MAX);
	assert_int_equal(a[3].type, MSGPACK_OBJECT_FLOAT64);
	assert_true(a[3].via.f64 == 18446744073709551616.0);
	assert_int_equal(a[4].type, MSGPACK_OBJECT_FLOAT64);
	assert_true(a[4].via.f64 == -9223372036854775808.0);
	assert_int_equal(a[5].type, MSGPACK_OBJECT_POSITIVE_INTEGER);
	assert_true(a[5].via.u64 == 0);
	assert_int_equal(a[6].type, MSGPACK_OBJECT_FLOAT64);
	assert_true(a[6].via.f64 == 123456789012345678901234567890.0);
	assert_int_equal(a[7].type, MSGPACK_OBJECT_POSITIVE_INTEGER);
	assert_true(a[7].via.u64 == 4294967296u);
	conv_free(&c);
	msgpack_zone_destroy(&z);

	/* Exact encodings: int64 min and uint64 max use the 9-byte forms. */
	expect_bytes("-9223372036854775808", "\xd3\x80\0\0\0\0\0\0\0", 9);
	expect_bytes("18446744073709551615", "\xcf\xff\xff\xff\xff\xff\xff\xff\xff", 9);
}

static void test_floats(void **state)
{
	static const struct {
		const char *json;
		double want;
	} cases[] = {
		{ "1.5", 1.5 },
		{ "-2.25", -2.25 },
		{ "1e3", 1000.0 },
		{ "1E-2", 0.01 },
		{ "2.5e+3", 2500.0 },
		{ "0.1", 0.1 },
		{ "1.7976931348623157e308", 1.7976931348623157e308 },
		{ "5e-324", 5e-324 },
		{ "1e-400", 0.0 },
		{ "0.30000000000000000000000000000000000000000000000000000000000000000001", 0.3 },
	};
	msgpack_zone z;

	msgpack_zone_init(&z, 1024);
	for (size_t i = 0; i < TD_ARRAY_LEN(cases); i++) {
		struct conv c;
		conv(&c, cases[i].json);
		assert_int_equal(c.rc, 0);
		msgpack_object o = unpack(&z, c.sb.data, c.sb.size);
		assert_int_equal(o.type, MSGPACK_OBJECT_FLOAT64);
		if (o.via.f64 != cases[i].want)
			fail_msg("%s -> %.17g", cases[i].json, o.via.f64);
		conv_free(&c);
	}
	/* -0.0 keeps its sign; "-0" is the integer 0. */
	struct conv c;
	conv(&c, "-0.0");
	msgpack_object o = unpack(&z, c.sb.data, c.sb.size);
	assert_int_equal(o.type, MSGPACK_OBJECT_FLOAT64);
	assert_true(o.via.f64 == 0.0 && signbit(o.via.f64));
	conv_free(&c);
	msgpack_zone_destroy(&z);
}

static void test_strings(void **state)
{
	expect_bytes("\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"", "\xa8\"\\/\b\f\n\r\t", 9);
	expect_bytes("\"\\u00e9\\u00E9\"", "\xa4\xc3\xa9\xc3\xa9", 5);
	expect_bytes("\"\\u20ac\"", "\xa3\xe2\x82\xac", 4);
	expect_bytes("\"\\ud83d\\ude00\"", "\xa4\xf0\x9f\x98\x80", 5);
	expect_bytes("\"\\uDBFF\\uDFFF\"", "\xa4\xf4\x8f\xbf\xbf", 5);
	expect_bytes("\"\\u0000\"", "\xa1\x00", 2);
	expect_bytes("\"a\\u0041\"", "\xa2" "aA", 3);
	/* Raw UTF-8 of every length passes through. */
	expect_bytes("\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xef\xbf\xbf\"",
		     "\xac\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xef\xbf\xbf", 13);
	expect_bytes("\"\x7f\"", "\xa1\x7f", 2);
}

/* A string of @n 'x' (optionally as \u0078 escapes) has the right header. */
static void check_str_len(size_t n, bool escaped)
{
	size_t per = escaped ? 6 : 1;
	char *json = malloc(n * per + 3);
	char *p = json;
	*p++ = '"';
	for (size_t i = 0; i < n; i++) {
		memcpy(p, escaped ? "\\u0078" : "x", per);
		p += per;
	}
	*p++ = '"';
	*p = '\0';

	struct conv c;
	msgpack_zone z;
	conv(&c, json);
	assert_int_equal(c.rc, 0);
	size_t hl = n < 32 ? 1 : n < 256 ? 2 : n < 65536 ? 3 : 5;
	assert_int_equal(c.sb.size, hl + n);
	msgpack_zone_init(&z, 1024);
	msgpack_object o = unpack(&z, c.sb.data, c.sb.size);
	assert_int_equal(o.type, MSGPACK_OBJECT_STR);
	assert_int_equal(o.via.str.size, n);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(o.via.str.ptr[i], 'x');
	msgpack_zone_destroy(&z);
	conv_free(&c);
	free(json);
}

static void test_string_headers(void **state)
{
	static const size_t lens[] = { 0, 1, 31, 32, 255, 256, 65535, 65536, 70000 };
	for (size_t i = 0; i < TD_ARRAY_LEN(lens); i++) {
		check_str_len(lens[i], false);
		/* Escapes shrink the text: the header must shrink with it. */
		if (lens[i] * 6 + 2 <= GUARD_AREA)
			check_str_len(lens[i], true);
	}
}

/* An array (or object) of @n members has the right header and content. */
static void check_container(size_t n, bool map)
{
	char *json = malloc(n * 8 + 3), *p = json;
	*p++ = map ? '{' : '[';
	for (size_t i = 0; i < n; i++) {
		if (i)
			*p++ = ',';
		/* Nested empty containers exercise the header compaction. */
		p += sprintf(p, map ? "\"%zu\":[]" : "[%zu]", i % 10);
	}
	*p++ = map ? '}' : ']';
	*p = '\0';

	struct conv c;
	msgpack_zone z;
	conv(&c, json);
	assert_int_equal(c.rc, 0);
	msgpack_zone_init(&z, 1 << 16);
	msgpack_object o = unpack(&z, c.sb.data, c.sb.size);
	if (map) {
		assert_int_equal(o.type, MSGPACK_OBJECT_MAP);
		assert_int_equal(o.via.map.size, n);
		for (size_t i = 0; i < n; i++) {
			const msgpack_object_kv *kv = &o.via.map.ptr[i];
			assert_int_equal(kv->key.type, MSGPACK_OBJECT_STR);
			assert_int_equal(kv->key.via.str.ptr[0], '0' + (int)(i % 10));
			assert_int_equal(kv->val.type, MSGPACK_OBJECT_ARRAY);
			assert_int_equal(kv->val.via.array.size, 0);
		}
	} else {
		assert_int_equal(o.type, MSGPACK_OBJECT_ARRAY);
		assert_int_equal(o.via.array.size, n);
		for (size_t i = 0; i < n; i++) {
			const msgpack_object *e = &o.via.array.ptr[i];
			assert_int_equal(e->type, MSGPACK_OBJECT_ARRAY);
			assert_int_equal(e->via.array.size, 1);
			assert_true(e->via.array.ptr[0].via.u64 == i % 10);
		}
	}
	unsigned char h = (unsigned char)c.sb.data[0];
	if (n < 16)
		assert_int_equal(h, (map ? 0x80 : 0x90) | n);
	else if (n < 65536)
		assert_int_equal(h, map ? 0xde : 0xdc);
	else
		assert_int_equal(h, map ? 0xdf : 0xdd);
	msgpack_zone_destroy(&z);
	conv_free(&c);
	free(json);
}

static void test_container_headers(void **state)
{
	static const size_t sizes[] = { 0, 1, 15, 16, 65535, 65536, 100000 };
	for (size_t i = 0; i < TD_ARRAY_LEN(sizes); i++) {
		check_container(sizes[i], false);
		check_container(sizes[i], true);
	}
}

static void test_key_order(void **state)
{
	expect_roundtrip("{\"z\":1,\"a\":2,\"m\":3,\"a\":4}");
}

static void nest(char *buf, int depth, const char *open, const char *close,
		 const char *mid)
{
	buf[0] = '\0';
	for (int i = 0; i < depth; i++)
		strcat(buf, open);
	strcat(buf, mid);
	for (int i = 0; i < depth; i++)
		strcat(buf, close);
}

static void test_depth(void **state)
{
	char buf[1024], msg[64];
	struct conv c;

	nest(buf, TD_JSON_MAX_DEPTH, "[", "]", "1");
	conv(&c, buf);
	assert_int_equal(c.rc, 0);
	conv_free(&c);
	nest(buf, TD_JSON_MAX_DEPTH, "{\"k\":", "}", "1");
	conv(&c, buf);
	assert_int_equal(c.rc, 0);
	conv_free(&c);
	nest(buf, TD_JSON_MAX_DEPTH - 1, "{\"k\":", "}", "[]");
	conv(&c, buf);
	assert_int_equal(c.rc, 0);
	conv_free(&c);

	/* msgpack-c's own unpacker stops at 32 levels (MSGPACK_EMBED_STACK_SIZE). */
	msgpack_zone z;
	msgpack_zone_init(&z, 1024);
	nest(buf, 31, "{\"k\":", "}", "[1]");
	conv(&c, buf);
	assert_int_equal(c.rc, 0);
	unpack(&z, c.sb.data, c.sb.size);
	conv_free(&c);
	msgpack_zone_destroy(&z);

	snprintf(msg, sizeof(msg), "offset %d: nesting deeper than %d",
		 TD_JSON_MAX_DEPTH, TD_JSON_MAX_DEPTH);
	nest(buf, TD_JSON_MAX_DEPTH + 1, "[", "]", "");
	expect_err(buf, msg);
	nest(buf, TD_JSON_MAX_DEPTH, "[", "]", "{}");
	expect_err(buf, msg);
	snprintf(msg, sizeof(msg), "offset %d: nesting deeper than %d",
		 TD_JSON_MAX_DEPTH * 5, TD_JSON_MAX_DEPTH);
	nest(buf, TD_JSON_MAX_DEPTH + 1, "{\"k\":", "}", "1");
	expect_err(buf, msg);
	/* Far deeper input fails at the same place, without deep recursion. */
	memset(buf, '[', 1000);
	snprintf(msg, sizeof(msg), "offset %d: nesting deeper than %d",
		 TD_JSON_MAX_DEPTH, TD_JSON_MAX_DEPTH);
	expect_err_n(buf, 1000, msg);
}

/* ---- JSON -> msgpack: errors -------------------------------------------- */

static void test_errors(void **state)
{
	static const struct {
		const char *json;
		const char *msg;
	} cases[] = {
		/* empty and truncated */
		{ "", "offset 0: expected a value, found end of input" },
		{ " \n\t ", "offset 4: expected a value, found end of input" },
		{ "[", "offset 1: expected a value, found end of input" },
		{ "[1", "offset 2: expected ',' or ']' in array, found end of input" },
		{ "[1,", "offset 3: expected a value, found end of input" },
		{ "{", "offset 1: expected a string key in object, found end of input" },
		{ "{\"a\"", "offset 4: expected ':' after object key, found end of input" },
		{ "{\"a\":", "offset 5: expected a value, found end of input" },
		{ "{\"a\":1", "offset 6: expected ',' or '}' in object, found end of input" },
		{ "{\"a\":1,", "offset 7: expected a string key in object, found end of input" },
		/* structure */
		{ "[1,]", "offset 2: trailing comma in array" },
		{ "[1 , ]", "offset 3: trailing comma in array" },
		{ "{\"a\":1,}", "offset 6: trailing comma in object" },
		{ "[,1]", "offset 1: expected a value, found ','" },
		{ "[1 2]", "offset 3: expected ',' or ']' in array, found '2'" },
		{ "[1}", "offset 2: expected ',' or ']' in array, found '}'" },
		{ "{\"a\":1 \"b\":2}", "offset 7: expected ',' or '}' in object, found '\"'" },
		{ "{\"a\":1]", "offset 6: expected ',' or '}' in object, found ']'" },
		{ "{\"a\" 1}", "offset 5: expected ':' after object key, found '1'" },
		{ "{1:2}", "offset 1: expected a string key in object, found '1'" },
		{ "{'a':1}", "offset 1: expected a string key in object, found '''" },
		{ "{,}", "offset 1: expected a string key in object, found ','" },
		{ "]", "offset 0: expected a value, found ']'" },
		/* after the value */
		{ "[1] x", "offset 4: unexpected data after the value" },
		{ "1 2", "offset 2: unexpected data after the value" },
		{ "{}{}", "offset 2: unexpected data after the value" },
		{ "0x10", "offset 1: unexpected data after the value" },
		{ "truex", "offset 4: unexpected data after the value" },
		{ "\"a\"\"", "offset 3: unexpected data after the value" },
		/* not JSON */
		{ "// c\n1", "offset 0: expected a value, found '/'" },
		{ "[1 /* c */]", "offset 3: expected ',' or ']' in array, found '/'" },
		{ "NaN", "offset 0: expected a value, found 'N'" },
		{ "Infinity", "offset 0: expected a value, found 'I'" },
		{ "-Infinity", "offset 1: expected a digit after '-', found 'I'" },
		{ "'a'", "offset 0: expected a value, found '''" },
		{ "\xef\xbb\xbf{}", "offset 0: expected a value, found byte 0xef" },
		{ "\x01", "offset 0: expected a value, found byte 0x01" },
		{ "\f1", "offset 0: expected a value, found byte 0x0c" },
		/* literals */
		{ "tru", "offset 0: invalid literal, expected 'true'" },
		{ "[fals]", "offset 1: invalid literal, expected 'false'" },
		{ "nul", "offset 0: invalid literal, expected 'null'" },
		{ "nulL", "offset 0: invalid literal, expected 'null'" },
		{ "True", "offset 0: expected a value, found 'T'" },
		/* numbers */
		{ "01", "offset 0: leading zero in number" },
		{ "-01", "offset 1: leading zero in number" },
		{ "[00]", "offset 1: leading zero in number" },
		{ "-", "offset 1: expected a digit after '-', found end of input" },
		{ "-a", "offset 1: expected a digit after '-', found 'a'" },
		{ "+1", "offset 0: expected a value, found '+'" },
		{ ".5", "offset 0: expected a value, found '.'" },
		{ "1.", "offset 2: expected a digit after '.', found end of input" },
		{ "1.e5", "offset 2: expected a digit after '.', found 'e'" },
		{ "1e", "offset 2: expected a digit in exponent, found end of input" },
		{ "1e+", "offset 3: expected a digit in exponent, found end of input" },
		{ "[1E-x]", "offset 4: expected a digit in exponent, found 'x'" },
		{ "1e400", "offset 0: number out of range" },
		{ "[-1.5e999]", "offset 1: number out of range" },
		{ "1.5.2", "offset 3: unexpected data after the value" },
		/* strings */
		{ "\"", "offset 1: unterminated string (opened at offset 0)" },
		{ "\"abc", "offset 4: unterminated string (opened at offset 0)" },
		{ "[\"ab\\", "offset 5: unterminated string (opened at offset 1)" },
		{ "\"ab\\\"", "offset 5: unterminated string (opened at offset 0)" },
		{ "\"a\nb\"", "offset 2: unescaped control character 0x0a in string" },
		{ "\"a\tb\"", "offset 2: unescaped control character 0x09 in string" },
		{ "\"\x1f\"", "offset 1: unescaped control character 0x1f in string" },
		{ "\"abc\n", "offset 4: unescaped control character 0x0a in string" },
		{ "\"a\\x\"", "offset 2: invalid escape '\\x' in string" },
		{ "\"a\\'\"", "offset 2: invalid escape '\\'' in string" },
		{ "\"\\\n\"", "offset 1: invalid escape (byte 0x0a after '\\') in string" },
		{ "\"\\x\n\"", "offset 1: invalid escape '\\x' in string" },
		{ "\"\\u12\"", "offset 1: invalid \\u escape, expected 4 hex digits" },
		{ "\"\\u12G4\"", "offset 1: invalid \\u escape, expected 4 hex digits" },
		{ "\"\\U0041\"", "offset 1: invalid escape '\\U' in string" },
		{ "\"\\u", "offset 1: invalid \\u escape, expected 4 hex digits" },
		{ "\"\\ud800\"", "offset 1: unpaired high surrogate \\ud800" },
		{ "\"\\ud800x\"", "offset 1: unpaired high surrogate \\ud800" },
		{ "\"\\ud800\\u0041\"", "offset 1: unpaired high surrogate \\ud800" },
		{ "\"\\ud800\\ud800\"", "offset 1: unpaired high surrogate \\ud800" },
		{ "\"\\uDBFF\\n\"", "offset 1: unpaired high surrogate \\udbff" },
		{ "\"ab\\udc00\"", "offset 3: unpaired low surrogate \\udc00" },
		{ "\"\\ude00\\ud83d\"", "offset 1: unpaired low surrogate \\ude00" },
		/* invalid UTF-8 */
		{ "\"\xff\"", "offset 1: invalid UTF-8 byte 0xff in string" },
		{ "\"a\x80\"", "offset 2: invalid UTF-8 byte 0x80 in string" },
		{ "\"\xc0\xaf\"", "offset 1: invalid UTF-8 byte 0xc0 in string" },
		{ "\"\xc1\xbf\"", "offset 1: invalid UTF-8 byte 0xc1 in string" },
		{ "\"\xf5\x80\x80\x80\"", "offset 1: invalid UTF-8 byte 0xf5 in string" },
		{ "\"\xe0\x80\x80\"", "offset 2: invalid UTF-8 continuation byte 0x80 in string" },
		{ "\"\xed\xa0\x80\"", "offset 2: invalid UTF-8 continuation byte 0xa0 in string" },
		{ "\"\xf0\x80\x80\x80\"", "offset 2: invalid UTF-8 continuation byte 0x80 in string" },
		{ "\"\xf4\x90\x80\x80\"", "offset 2: invalid UTF-8 continuation byte 0x90 in string" },
		{ "\"\xc3(\"", "offset 2: invalid UTF-8 continuation byte 0x28 in string" },
		{ "\"\xe2\x82(\"", "offset 3: invalid UTF-8 continuation byte 0x28 in string" },
		{ "\"\xe2\x82\"", "offset 1: truncated UTF-8 sequence in string" },
		{ "\"ab\xf0\x9f\x98", "offset 3: truncated UTF-8 sequence in string" },
		{ "{\"\xff\":1}", "offset 2: invalid UTF-8 byte 0xff in string" },
		/* the first error in the text wins */
		{ "\"\\x\x01\"", "offset 1: invalid escape '\\x' in string" },
		{ "\"\xff\\q\"", "offset 1: invalid UTF-8 byte 0xff in string" },
	};

	for (size_t i = 0; i < TD_ARRAY_LEN(cases); i++)
		expect_err(cases[i].json, cases[i].msg);

	/* NULs are bytes like any other: in the text and in a string. */
	expect_err_n("[1\0]", 4, "offset 2: expected ',' or ']' in array, found byte 0x00");
	expect_err_n("\"a\0\"", 4, "offset 2: unescaped control character 0x00 in string");
	expect_err_n("1\0", 2, "offset 1: unexpected data after the value");
}

/* Every proper prefix of a valid document is an error, and never over-reads. */
static void test_prefixes(void **state)
{
	static const char doc[] =
		"{\"a\":[1,-2.5e-3,true,false,null,\"x\\u00e9\\ud83d\\ude00\\n\xc3\xa9\"],"
		"\"b\":{\"c\":{}},\"d\":[[]],\"e\":18446744073709551615}";
	struct conv c;

	conv(&c, doc);
	assert_int_equal(c.rc, 0);
	conv_free(&c);
	for (size_t n = 0; n < sizeof(doc) - 1; n++) {
		conv_n(&c, doc, n);
		assert_int_equal(c.rc, TD_EJSON);
		assert_true(strncmp(c.err, "offset ", 7) == 0);
		conv_free(&c);
	}
}

static void test_err_buffer(void **state)
{
	msgpack_sbuffer sb;
	char err[12];

	msgpack_sbuffer_init(&sb);
	/* Truncated but terminated. */
	memset(err, 'x', sizeof(err));
	assert_int_equal(td_json_to_msgpack(guarded("[1,]", 4), 4, &sb, err, sizeof(err)),
			 TD_EJSON);
	assert_string_equal(err, "offset 2: t");
	/* No error buffer at all. */
	assert_int_equal(td_json_to_msgpack(guarded("[", 1), 1, &sb, NULL, 0), TD_EJSON);
	/* Success clears it. */
	assert_int_equal(td_json_to_msgpack(guarded("1", 1), 1, &sb, err, sizeof(err)), 0);
	assert_string_equal(err, "");
	/* NULL text of length 0 is the empty document. */
	assert_int_equal(td_json_to_msgpack(NULL, 0, &sb, err, sizeof(err)), TD_EJSON);
	msgpack_sbuffer_destroy(&sb);
}

/* Output is appended; a failed call leaves what was there. */
static void test_append(void **state)
{
	msgpack_sbuffer sb;
	char err[128];

	msgpack_sbuffer_init(&sb);
	msgpack_sbuffer_write(&sb, "\x01", 1);
	assert_int_equal(td_json_to_msgpack(guarded("[2,[]]", 6), 6, &sb, err, sizeof(err)), 0);
	assert_int_equal(sb.size, 4);
	assert_memory_equal(sb.data, "\x01\x92\x02\x90", 4);
	assert_int_equal(td_json_to_msgpack(guarded("[3,[4", 5), 5, &sb, err, sizeof(err)),
			 TD_EJSON);
	assert_int_equal(sb.size, 4);
	assert_memory_equal(sb.data, "\x01\x92\x02\x90", 4);
	msgpack_sbuffer_destroy(&sb);

	struct td_buf b = TD_BUF_INIT;
	msgpack_object o = { .type = MSGPACK_OBJECT_NIL };
	td_buf_puts(&b, "x=");
	assert_int_equal(td_msgpack_to_json(&o, &b), 0);
	assert_string_equal(b.data, "x=null");
	td_buf_finish(&b);
}

/* ---- round trips -------------------------------------------------------- */

static void test_roundtrip(void **state)
{
	static const char *docs[] = {
		"null",
		"true",
		"0",
		"-1",
		"\"\"",
		"[]",
		"{}",
		"18446744073709551615",
		"-9223372036854775808",
		"[1.5,-0.0,0.1,1.0,100.0,1e+300,-2.5e-08,4.94065645841247e-324]",
		"[0.3333333333333333,0.30000000000000004,1.7976931348623157e+308]",
		"{\"a\":1,\"b\":[true,false,null],\"c\":\"x\\\"y\\\\z\\n\",\"d\":{\"e\":{}}}",
		"\"\\b\\f\\n\\r\\t\\u0000\\u0001\\u001f\\u007f/\"",
		"\"h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80\"",
		"[[[[[[]]]]],{\"\":[{}]}]",
		("{\"trigger\":{\"kind\":\"http\",\"url\":\"https://example.com/a?b=c\","
		 "\"timeout_ms\":2500,\"retry\":{\"max\":3,\"backoff\":1.5}}}"),
	};

	for (size_t i = 0; i < TD_ARRAY_LEN(docs); i++)
		expect_roundtrip(docs[i]);

	/* Non-canonical input comes out canonical. */
	static const char loose[] = " [ 1 , \"\\u00e9\\/\" , 1E2 , -0 ] ";
	char *out = through(loose, sizeof(loose) - 1);
	assert_string_equal(out, "[1,\"\xc3\xa9/\",100.0,0]");
	free(out);
}

/* msgpack -> JSON -> msgpack gives back the same bytes. */
static void test_roundtrip_bytes(void **state)
{
	static const char doc[] =
		"{\"a\":[1,-2,1.5,0.1,-0.0,1e+300,\"\\u0001\xc3\xa9\",null,true,{}],"
		"\"b\":18446744073709551615,\"c\":-9223372036854775808}";
	struct conv c1, c2;
	msgpack_zone z;

	conv(&c1, doc);
	assert_int_equal(c1.rc, 0);
	msgpack_zone_init(&z, 1024);
	msgpack_object o = unpack(&z, c1.sb.data, c1.sb.size);
	char *json = render_obj(&o);
	conv(&c2, json);
	assert_int_equal(c2.rc, 0);
	assert_int_equal(c1.sb.size, c2.sb.size);
	assert_memory_equal(c1.sb.data, c2.sb.data, c1.sb.size);
	free(json);
	msgpack_zone_destroy(&z);
	conv_free(&c1);
	conv_free(&c2);
}

/* ---- msgpack -> JSON ---------------------------------------------------- */

static void fill_bin(msgpack_packer *pk)
{
	msgpack_pack_array(pk, 5);
	msgpack_pack_bin(pk, 0);
	msgpack_pack_bin(pk, 1);
	msgpack_pack_bin_body(pk, "\xff", 1);
	msgpack_pack_bin(pk, 2);
	msgpack_pack_bin_body(pk, "\x00\x10", 2);
	msgpack_pack_bin(pk, 3);
	msgpack_pack_bin_body(pk, "\x00\xff\x10", 3);
	msgpack_pack_bin(pk, 4);
	msgpack_pack_bin_body(pk, "Man\x01", 4);
}

static void fill_ext(msgpack_packer *pk)
{
	msgpack_pack_array(pk, 3);
	msgpack_pack_ext(pk, 3, 5);
	msgpack_pack_ext_body(pk, "abc", 3);
	msgpack_pack_ext(pk, 0, -1);
	msgpack_pack_ext(pk, 1, -128);
	msgpack_pack_ext_body(pk, "\xfb", 1);
}

static void test_render_bin_ext(void **state)
{
	char *s = render_packed(fill_bin);
	assert_string_equal(s, "[{\"$bin\":\"\"},{\"$bin\":\"/w==\"},{\"$bin\":\"ABA=\"},"
			       "{\"$bin\":\"AP8Q\"},{\"$bin\":\"TWFuAQ==\"}]");
	free(s);
	s = render_packed(fill_ext);
	assert_string_equal(s, "[{\"$ext\":5,\"data\":\"YWJj\"},{\"$ext\":-1,\"data\":\"\"},"
			       "{\"$ext\":-128,\"data\":\"+w==\"}]");
	free(s);
}

static void test_render_utf8(void **state)
{
	static const struct {
		const char *in;
		size_t n;
		const char *out;
	} cases[] = {
		{ "a\xff" "b", 3, "\"a\xef\xbf\xbd" "b\"" },
		{ "\x80", 1, "\"\xef\xbf\xbd\"" },
		/* A truncated sequence is one replacement (its maximal subpart). */
		{ "\xe2\x82", 2, "\"\xef\xbf\xbd\"" },
		{ "\xe2\x82" "A", 3, "\"\xef\xbf\xbd" "A\"" },
		{ "\xf0\x9f\x98", 3, "\"\xef\xbf\xbd\"" },
		/* Overlongs and surrogates: each byte is replaced. */
		{ "\xc0\xaf", 2, "\"\xef\xbf\xbd\xef\xbf\xbd\"" },
		{ "\xed\xa0\x80", 3, "\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\"" },
		{ "\xf4\x90\x80\x80", 4,
		  "\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\"" },
		/* Valid text is kept. */
		{ "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xf4\x8f\xbf\xbf", 13,
		  "\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xf4\x8f\xbf\xbf\"" },
		/* Control characters, quote and backslash are escaped. */
		{ "\x00\x01\x1f\x7f\"\\\b\f\n\r\t/", 12,
		  "\"\\u0000\\u0001\\u001f\\u007f\\\"\\\\\\b\\f\\n\\r\\t/\"" },
	};

	for (size_t i = 0; i < TD_ARRAY_LEN(cases); i++) {
		msgpack_object o = {
			.type = MSGPACK_OBJECT_STR,
			.via.str = { .size = (uint32_t)cases[i].n, .ptr = cases[i].in },
		};
		char *s = render_obj(&o);
		assert_string_equal(s, cases[i].out);
		/* What comes out is always valid JSON. */
		struct conv c;
		conv(&c, s);
		assert_int_equal(c.rc, 0);
		conv_free(&c);
		free(s);
	}
}

static void fill_keys(msgpack_packer *pk)
{
	msgpack_pack_map(pk, 7);
	msgpack_pack_int(pk, 1);
	msgpack_pack_str_with_body(pk, "one", 3);
	msgpack_pack_int(pk, -7);
	msgpack_pack_nil(pk);
	msgpack_pack_nil(pk);
	msgpack_pack_true(pk);
	msgpack_pack_double(pk, 1.5);
	msgpack_pack_int(pk, 0);
	msgpack_pack_array(pk, 2);
	msgpack_pack_int(pk, 1);
	msgpack_pack_str_with_body(pk, "a\"", 2);
	msgpack_pack_int(pk, 2);
	msgpack_pack_bin_with_body(pk, "\x01", 1);
	msgpack_pack_int(pk, 3);
	msgpack_pack_str_with_body(pk, "\xff", 1);
	msgpack_pack_int(pk, 4);
}

static void test_render_keys(void **state)
{
	char *s = render_packed(fill_keys);
	assert_string_equal(s, "{\"1\":\"one\",\"-7\":null,\"null\":true,\"1.5\":0,"
			       "\"[1,\\\"a\\\\\\\"\\\"]\":2,\"{\\\"$bin\\\":\\\"AQ==\\\"}\":3,"
			       "\"\xef\xbf\xbd\":4}");
	struct conv c;
	conv(&c, s);
	assert_int_equal(c.rc, 0);
	conv_free(&c);
	free(s);
}

/* {{{...{nil:0}:1}...:1}:1}, @levels maps each keyed by the next. */
static void fill_key_chain(msgpack_packer *pk, int levels)
{
	for (int i = 0; i < levels; i++)
		msgpack_pack_map(pk, 1);
	msgpack_pack_nil(pk);
	for (int i = 0; i < levels; i++)
		msgpack_pack_int(pk, i);
}

static void fill_chain5(msgpack_packer *pk)
{
	fill_key_chain(pk, 5);
}

static void fill_chain32(msgpack_packer *pk)
{
	fill_key_chain(pk, 32);
}

/* Keys inside key texts inside key texts are cut off, not escaped forever. */
static void test_render_key_nesting(void **state)
{
	char *s = render_packed(fill_chain5);
	char *text = strdup(s);
	msgpack_zone z;

	msgpack_zone_init(&z, 1024);
	/* Three levels of key text, each a JSON document of its own. */
	for (int level = 0; level <= 3; level++) {
		struct conv c;
		conv(&c, text);
		assert_int_equal(c.rc, 0);
		msgpack_object o = unpack(&z, c.sb.data, c.sb.size);
		assert_int_equal(o.type, MSGPACK_OBJECT_MAP);
		const msgpack_object *k = &o.via.map.ptr[0].key;
		assert_int_equal(k->type, MSGPACK_OBJECT_STR);
		free(text);
		text = strndup(k->via.str.ptr, k->via.str.size);
		conv_free(&c);
	}
	assert_string_equal(text, "...");
	free(text);
	msgpack_zone_destroy(&z);
	free(s);

	s = render_packed(fill_chain32);
	assert_true(strlen(s) < 200);
	struct conv c;
	conv(&c, s);
	assert_int_equal(c.rc, 0);
	conv_free(&c);
	free(s);
}

static void test_render_numbers(void **state)
{
	static const struct {
		msgpack_object_type type;
		double v;
		const char *out;
	} floats[] = {
		{ MSGPACK_OBJECT_FLOAT64, NAN, "null" },
		{ MSGPACK_OBJECT_FLOAT64, INFINITY, "null" },
		{ MSGPACK_OBJECT_FLOAT64, -INFINITY, "null" },
		{ MSGPACK_OBJECT_FLOAT32, NAN, "null" },
		{ MSGPACK_OBJECT_FLOAT64, 0.0, "0.0" },
		{ MSGPACK_OBJECT_FLOAT64, -0.0, "-0.0" },
		{ MSGPACK_OBJECT_FLOAT64, 100.0, "100.0" },
		{ MSGPACK_OBJECT_FLOAT64, 0.1, "0.1" },
		{ MSGPACK_OBJECT_FLOAT64, 1.0 / 3, "0.3333333333333333" },
		{ MSGPACK_OBJECT_FLOAT64, 0.1 + 0.2, "0.30000000000000004" },
		{ MSGPACK_OBJECT_FLOAT64, 1e21, "1e+21" },
		{ MSGPACK_OBJECT_FLOAT64, 123456789012345678.0, "1.2345678901234568e+17" },
		{ MSGPACK_OBJECT_FLOAT64, 5e-324, "4.94065645841247e-324" },
		{ MSGPACK_OBJECT_FLOAT64, 1.7976931348623157e308, "1.7976931348623157e+308" },
		{ MSGPACK_OBJECT_FLOAT32, (double)0.1f, "0.1" },
		{ MSGPACK_OBJECT_FLOAT32, (double)16777216.0f, "16777216.0" },
		{ MSGPACK_OBJECT_FLOAT32, (double)3.4028235e38f, "3.4028235e+38" },
	};
	for (size_t i = 0; i < TD_ARRAY_LEN(floats); i++) {
		msgpack_object o = { .type = floats[i].type, .via.f64 = floats[i].v };
		char *s = render_obj(&o);
		assert_string_equal(s, floats[i].out);
		/* Doubles read back as the very same value. */
		if (floats[i].type == MSGPACK_OBJECT_FLOAT64 && isfinite(floats[i].v)) {
			double back = strtod(s, NULL);
			assert_memory_equal(&back, &floats[i].v, sizeof(back));
		}
		free(s);
	}

	msgpack_object o = { .type = MSGPACK_OBJECT_POSITIVE_INTEGER, .via.u64 = UINT64_MAX };
	char *s = render_obj(&o);
	assert_string_equal(s, "18446744073709551615");
	free(s);
	o = (msgpack_object){ .type = MSGPACK_OBJECT_NEGATIVE_INTEGER, .via.i64 = INT64_MIN };
	s = render_obj(&o);
	assert_string_equal(s, "-9223372036854775808");
	free(s);
	o = (msgpack_object){ .type = MSGPACK_OBJECT_POSITIVE_INTEGER, .via.u64 = 0 };
	s = render_obj(&o);
	assert_string_equal(s, "0");
	free(s);
	o = (msgpack_object){ .type = MSGPACK_OBJECT_BOOLEAN, .via.boolean = false };
	s = render_obj(&o);
	assert_string_equal(s, "false");
	free(s);
}

/* Numbers use '.' whatever the process locale says. */
static void test_locale(void **state)
{
	static const char *names[] = { "de_DE.UTF-8", "de_DE.utf8", "fr_FR.UTF-8", "ru_RU.UTF-8" };
	const char *got = NULL;
	for (size_t i = 0; i < TD_ARRAY_LEN(names) && !got; i++)
		got = setlocale(LC_NUMERIC, names[i]);
	if (!got)
		skip();
	char *s = through("[1.5,2e-3]", 10);
	setlocale(LC_NUMERIC, "C");
	assert_string_equal(s, "[1.5,0.002]");
	free(s);
}

/* ---- speed (printed, not asserted) ------------------------------------- */

static void test_speed(void **state)
{
	static const char spec[] =
		"{\"id\":\"7f3c9a2e-1b4d-4c8e-9f00-2a6b5d3e1c77\",\"kind\":\"http\","
		"\"name\":\"order-created webhook \\u2192 fulfilment\","
		"\"schedule\":{\"every_ms\":30000,\"jitter_ms\":250,\"start\":1735689600000,"
		"\"end\":null,\"max_runs\":18446744073709551615},"
		"\"match\":{\"all\":[{\"field\":\"event.type\",\"op\":\"eq\",\"value\":\"order.created\"},"
		"{\"field\":\"event.total\",\"op\":\"gte\",\"value\":99.95},"
		"{\"field\":\"event.region\",\"op\":\"in\",\"value\":[\"eu-west-1\",\"eu-central-1\","
		"\"us-east-1\"]},{\"field\":\"event.flags\",\"op\":\"contains\",\"value\":\"priority\"}]},"
		"\"action\":{\"method\":\"POST\",\"url\":\"https://fulfil.example.com/v2/orders?src=td\","
		"\"headers\":{\"content-type\":\"application/json\",\"x-trace\":\"abc123\","
		"\"authorization\":\"Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ0ZCJ9.c2lnbmF0dXJl\"},"
		"\"body\":{\"order\":\"{{event.id}}\",\"total\":\"{{event.total}}\",\"lines\":[1,2,3,4,5,6,7,8]},"
		"\"timeout_ms\":2500,\"retry\":{\"max\":5,\"backoff\":1.5,\"max_delay_ms\":60000,"
		"\"on\":[500,502,503,504]}},"
		"\"tags\":[\"orders\",\"fulfilment\",\"webhook\",\"tier-1\"],\"enabled\":true,"
		"\"owner\":{\"team\":\"commerce\",\"contact\":\"oncall@example.com\"},"
		"\"created\":-62135596800,\"version\":3}";
	const size_t n = sizeof(spec) - 1, iters = 200000;
	const char *g = guarded(spec, n);
	msgpack_sbuffer sb;
	char err[128];
	struct timespec t0, t1;

	msgpack_sbuffer_init(&sb);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (size_t i = 0; i < iters; i++) {
		sb.size = 0;
		if (td_json_to_msgpack(g, n, &sb, err, sizeof(err)))
			fail_msg("%s", err);
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	double ns = ((double)(t1.tv_sec - t0.tv_sec) * 1e9 + (double)(t1.tv_nsec - t0.tv_nsec)) /
		    (double)iters;
	print_message("json->msgpack: %zu-byte spec in %.0f ns (%.0f MB/s), %zu bytes out\n",
		      n, ns, (double)n / ns * 1e3, sb.size);

	msgpack_zone z;
	msgpack_zone_init(&z, 4096);
	msgpack_object o = unpack(&z, sb.data, sb.size);
	struct td_buf b = TD_BUF_INIT;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (size_t i = 0; i < iters; i++) {
		td_buf_reset(&b);
		assert_int_equal(td_msgpack_to_json(&o, &b), 0);
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	ns = ((double)(t1.tv_sec - t0.tv_sec) * 1e9 + (double)(t1.tv_nsec - t0.tv_nsec)) /
	     (double)iters;
	print_message("msgpack->json: same spec in %.0f ns, %zu bytes out\n", ns, b.len);
	td_buf_finish(&b);
	msgpack_zone_destroy(&z);
	msgpack_sbuffer_destroy(&sb);
}

/* ---- td_msgpack_check ------------------------------------------------ */

static void expect_check_fail(const char *bytes, size_t n, const char *msg)
{
	char err[160];
	size_t used = 0;
	const char *p = guarded(bytes, n);
	assert_int_equal(td_msgpack_check(p, n, &used, err, sizeof(err)), TD_EMSGPACK);
	if (!strstr(err, msg))
		fail_msg("error '%s' lacks '%s'", err, msg);
}

/* n nested one-element arrays around @leaf: [[[...leaf...]]] */
static size_t nested_arrays(char *buf, int n, char leaf)
{
	for (int i = 0; i < n; i++)
		buf[i] = (char)0x91;
	buf[n] = leaf;
	return (size_t)n + 1;
}

static void test_mpcheck(void **state)
{
	(void)state;
	char err[160], buf[128];
	size_t used;
	/* well-formed values, with trailing bytes left alone */
	static const struct { const char *b; size_t n, used; } ok[] = {
		{ "\x01", 1, 1 }, { "\xc0\xff", 2, 1 }, { "\x82\xa1k\x01\xa1l\x90", 7, 7 },
		{ "\xd9\x03" "abc", 5, 5 }, { "\xc7\x02\x05" "ab", 5, 5 },
		{ "\xd8\x01" "0123456789abcdef", 18, 18 },
		{ "\xdc\x00\x02\x01\x02", 5, 5 }, { "\x80", 1, 1 }, { "\xcb" "12345678", 9, 9 },
	};
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		const char *p = guarded(ok[i].b, ok[i].n);
		assert_int_equal(td_msgpack_check(p, ok[i].n, &used, err, sizeof(err)), 0);
		assert_int_equal(used, ok[i].used);
	}
	expect_check_fail("", 0, "truncated at byte 0");
	expect_check_fail("\x92\x01", 2, "array of 2 at byte 0 cannot fit in the 1 bytes left");
	expect_check_fail("\xd9", 1, "truncated at byte 1");
	expect_check_fail("\xc1", 1, "invalid type byte 0xc1 at byte 0");
	expect_check_fail("\xd9\x05" "abc", 5, "exceeds the input");
	expect_check_fail("\xdb\xff\xff\xff\xff", 5, "exceeds the input");
	/* 5 bytes declaring 4 billion elements: refused before any unpack */
	expect_check_fail("\xdd\xff\xff\xff\xff", 5, "array of 4294967295 at byte 0 cannot fit");
	expect_check_fail("\xdf\x00\x00\x00\x02\x01\x01\x01", 8, "map of 2 at byte 0 cannot fit");
	/* depth: agrees with msgpack-c around its limit */
	for (int depth = 30; depth <= 34; depth++) {
	for (int e = 0; e < 3; e++) {
		/* a scalar leaf, an empty array, an empty map */
		static const char leaves[] = {0x01, (char)0x90, (char)0x80};
		size_t n = nested_arrays(buf, depth, leaves[e]);
		int rc = td_msgpack_check(buf, n, &used, err, sizeof(err));
		msgpack_zone z;
		msgpack_object o;
		size_t off = 0;
		msgpack_zone_init(&z, 1024);
		msgpack_unpack_return ur = msgpack_unpack(buf, n, &off, &z, &o);
		msgpack_zone_destroy(&z);
		assert_int_equal(rc == 0, ur == MSGPACK_UNPACK_SUCCESS);
		assert_int_equal(rc == 0, depth + (e > 0) <= TD_MSGPACK_MAX_DEPTH);
		if (rc)
			assert_non_null(strstr(err, "nesting deeper than 32"));
	}
	}
	/* every proper prefix of a valid document fails; none over-reads */
	static const char doc[] = "\x83\xa2id\xa1x\xa4kind\xa5timer\xa4" "args\x81\xa5"
				  "at_ms\xcf\x00\x00\x01\x9a\x00\x00\x00\x00";
	size_t dn = sizeof(doc) - 1;
	assert_int_equal(td_msgpack_check(doc, dn, &used, err, sizeof(err)), 0);
	assert_int_equal(used, dn);
	for (size_t k = 0; k < dn; k++) {
		const char *p = guarded(doc, k);
		assert_int_equal(td_msgpack_check(p, k, &used, err, sizeof(err)), TD_EMSGPACK);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_scalars),
		cmocka_unit_test(test_whitespace),
		cmocka_unit_test(test_int_extremes),
		cmocka_unit_test(test_floats),
		cmocka_unit_test(test_strings),
		cmocka_unit_test(test_string_headers),
		cmocka_unit_test(test_container_headers),
		cmocka_unit_test(test_key_order),
		cmocka_unit_test(test_depth),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_prefixes),
		cmocka_unit_test(test_err_buffer),
		cmocka_unit_test(test_append),
		cmocka_unit_test(test_roundtrip),
		cmocka_unit_test(test_roundtrip_bytes),
		cmocka_unit_test(test_render_bin_ext),
		cmocka_unit_test(test_render_utf8),
		cmocka_unit_test(test_render_keys),
		cmocka_unit_test(test_render_key_nesting),
		cmocka_unit_test(test_render_numbers),
		cmocka_unit_test(test_locale),
		cmocka_unit_test(test_mpcheck),
		cmocka_unit_test(test_speed),
	};
	return cmocka_run_group_tests(tests, guard_setup, guard_teardown);
}
