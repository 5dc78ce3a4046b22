/*
 * Tests for engine/connections.c. Parser inputs are copied to the end of a
 * mapping followed by a PROT_NONE page, so reading one byte too far crashes.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>

#include "triggerd/codec.h"
#include "triggerd/connections.h"
#include "triggerd/triggerd.h"

#include "guard.h"

static char err[512];

static struct td_conn *uri_ok(const char *uri)
{
	struct td_conn *c = NULL;
	size_t n = strlen(uri);
	int rc = td_conn_from_uri("t", guarded(uri, n), n, &c, err, sizeof(err));
	if (rc)
		fail_msg("%s: rc %d: %s", uri, rc, err);
	return c;
}

/* Fails with @rc, and the message names @field and never shows @secret. */
static void uri_bad(const char *uri, int rc, const char *field, const char *secret)
{
	struct td_conn *c = (struct td_conn *)1;
	size_t n = strlen(uri);
	strcpy(err, "untouched");
	int got = td_conn_from_uri("t", guarded(uri, n), n, &c, err, sizeof(err));
	if (got != rc)
		fail_msg("%s: rc %d, want %d (%s)", uri, got, rc, err);
	assert_null(c);
	if (strncmp(err, field, strlen(field)) != 0)
		fail_msg("%s: message \"%s\" does not start with \"%s\"", uri, err, field);
	if (secret && strstr(err, secret))
		fail_msg("%s: message \"%s\" shows the secret", uri, err);
}

static struct td_conn *json_ok(const char *json)
{
	struct td_conn *c = NULL;
	size_t n = strlen(json);
	int rc = td_conn_from_json("t", guarded(json, n), n, &c, err, sizeof(err));
	if (rc)
		fail_msg("%s: rc %d: %s", json, rc, err);
	return c;
}

static void json_bad(const char *json, int rc, const char *needle, const char *secret)
{
	struct td_conn *c = (struct td_conn *)1;
	size_t n = strlen(json);
	int got = td_conn_from_json("t", guarded(json, n), n, &c, err, sizeof(err));
	if (got != rc)
		fail_msg("%s: rc %d, want %d (%s)", json, got, rc, err);
	assert_null(c);
	if (!strstr(err, needle))
		fail_msg("%s: message \"%s\" lacks \"%s\"", json, err, needle);
	if (secret && strstr(err, secret))
		fail_msg("%s: message \"%s\" shows the secret", json, err);
}

/* extra rendered as compact JSON. */
static void assert_extra(const struct td_conn *c, const char *want)
{
	msgpack_zone z;
	msgpack_object o;
	size_t off = 0;
	struct td_buf b = TD_BUF_INIT;
	msgpack_zone_init(&z, 1024);
	assert_int_equal(msgpack_unpack(c->extra, c->extra_len, &off, &z, &o),
			 MSGPACK_UNPACK_SUCCESS);
	assert_int_equal(off, c->extra_len);
	assert_int_equal(o.type, MSGPACK_OBJECT_MAP);
	assert_int_equal(td_msgpack_to_json(&o, &b), 0);
	assert_string_equal(b.data, want);
	td_buf_finish(&b);
	msgpack_zone_destroy(&z);
}

static void assert_conn(const struct td_conn *c, const char *type, const char *host,
			unsigned port, const char *schema, const char *login,
			const char *password, const char *extra)
{
	assert_string_equal(c->conn_type, type);
	assert_string_equal(c->host, host);
	assert_int_equal(c->port, port);
	assert_string_equal(c->schema, schema);
	assert_string_equal(c->login, login);
	assert_string_equal(c->password, password);
	assert_extra(c, extra);
}

/* ---- URI form ------------------------------------------------------------ */

/* The examples of Airflow's "Managing Connections" page. */
static void test_uri_doc_examples(void **state)
{
	(void)state;
	struct td_conn *c;

	c = uri_ok("my-conn-type://login:password@host:5432/schema?param1=val1&param2=val2");
	assert_conn(c, "my_conn_type", "host", 5432, "schema", "login", "password",
		    "{\"param1\":\"val1\",\"param2\":\"val2\"}");
	assert_string_equal(c->id, "t");
	assert_int_equal(c->source, TD_CONN_SRC_NONE);
	td_conn_free(c);

	c = uri_ok("mysql://user:p%40ss@db:3306/mydb");
	assert_conn(c, "mysql", "db", 3306, "mydb", "user", "p@ss", "{}");
	assert_int_equal(c->extra_len, 1);
	td_conn_free(c);

	c = uri_ok("http://api.example.com");
	assert_conn(c, "http", "api.example.com", 0, "", "", "", "{}");
	td_conn_free(c);

	c = uri_ok("https://:token@host");
	assert_conn(c, "https", "host", 0, "", "", "token", "{}");
	td_conn_free(c);

	c = uri_ok("aws://?__extra__=%7B%22region%22%3A+%22us-east-1%22%7D");
	assert_conn(c, "aws", "", 0, "", "", "", "{\"region\":\"us-east-1\"}");
	td_conn_free(c);

	/* the docs' JSON-in-extra example, nested values kept as JSON */
	c = uri_ok("my-conn-type://@:1234?__extra__=%7B%22my_val%22%3A+%5B%22list%22%2C+"
		   "%22of%22%2C+%22values%22%5D%2C+%22extra%22%3A+%7B%22nested%22%3A+%7B"
		   "%22json%22%3A+%22val%22%7D%7D%7D");
	assert_conn(c, "my_conn_type", "", 1234, "", "", "",
		    "{\"my_val\":[\"list\",\"of\",\"values\"],\"extra\":{\"nested\":{\"json\":\"val\"}}}");
	td_conn_free(c);

	c = uri_ok("google-cloud-platform://?extra__google_cloud_platform__project=p1");
	assert_conn(c, "google_cloud_platform", "", 0, "", "", "", "{\"extra__google_cloud_platform__project\":\"p1\"}");
	td_conn_free(c);

	c = uri_ok("postgresql://u:pw@pg.local/db");
	assert_conn(c, "postgres", "pg.local", 0, "db", "u", "pw", "{}");
	td_conn_free(c);

	/* the MWAA example: a %2F in the host keeps the host's case */
	c = uri_ok("mysql://Host.Example.com%2Fhome?role_arn=arn%3Aaws%3Aiam%3A%3A0011%3Arole"
		   "%2Fsvc&region_name=us-east-1");
	assert_conn(c, "mysql", "Host.Example.com/home", 0, "", "", "",
		    "{\"role_arn\":\"arn:aws:iam::0011:role/svc\",\"region_name\":\"us-east-1\"}");
	td_conn_free(c);
}

static void test_uri_hosts(void **state)
{
	(void)state;
	struct td_conn *c;

	/* Python lower-cases the host (but not what %XX spells) */
	c = uri_ok("HTTP://API.Example.COM%41:80");
	assert_conn(c, "http", "api.example.comA", 80, "", "", "", "{}");
	td_conn_free(c);

	c = uri_ok("postgres://u:p@[2001:DB8::1]:5432/db");
	assert_conn(c, "postgres", "2001:db8::1", 5432, "db", "u", "p", "{}");
	td_conn_free(c);

	c = uri_ok("http://[::1]");
	assert_conn(c, "http", "::1", 0, "", "", "", "{}");
	td_conn_free(c);

	/* a unix socket directory as the host */
	c = uri_ok("postgres://u:p@%2Fvar%2Frun%2FPG/db");
	assert_string_equal(c->host, "/var/run/PG");
	td_conn_free(c);

	/* a host carrying its own protocol (Airflow 2.3+) */
	c = uri_ok("spark://spark://spark-master:7077");
	assert_conn(c, "spark", "spark://spark-master", 7077, "", "", "", "{}");
	td_conn_free(c);
	c = uri_ok("http://https://user:pw@api.example.com/v1");
	assert_conn(c, "http", "https://api.example.com", 0, "v1", "user", "pw", "{}");
	td_conn_free(c);
	c = uri_ok("http://https://");
	assert_conn(c, "http", "", 0, "", "", "", "{}");
	td_conn_free(c);

	/* empty host, empty everything */
	c = uri_ok("sqlite://");
	assert_conn(c, "sqlite", "", 0, "", "", "", "{}");
	td_conn_free(c);
	c = uri_ok("x:///only-schema");
	assert_conn(c, "x", "", 0, "only-schema", "", "", "{}");
	td_conn_free(c);

	/* port edges; "host:" is no port */
	c = uri_ok("x://h:65535");
	assert_int_equal(c->port, 65535);
	td_conn_free(c);
	c = uri_ok("x://h:00080");
	assert_int_equal(c->port, 80);
	td_conn_free(c);
	c = uri_ok("x://h:");
	assert_int_equal(c->port, 0);
	td_conn_free(c);
}

static void test_uri_userinfo_and_decoding(void **state)
{
	(void)state;
	struct td_conn *c;

	/* the last '@' ends the userinfo, the first ':' splits it */
	c = uri_ok("x://us%3Aer:a:b@c@h/s");
	assert_conn(c, "x", "h", 0, "s", "us:er", "a:b@c", "{}");
	td_conn_free(c);

	c = uri_ok("x://user@h");
	assert_conn(c, "x", "h", 0, "", "user", "", "{}");
	td_conn_free(c);
	c = uri_ok("x://user:@h");
	assert_conn(c, "x", "h", 0, "", "user", "", "{}");
	td_conn_free(c);

	/* '+' is a space only in the query; hex in either case; UTF-8 bytes */
	c = uri_ok("x://a+b:p%2bq%2B%25%C3%A9@h/d%20b?k+1=v+1%2B&e=%C3%A9");
	assert_conn(c, "x", "h", 0, "d b", "a+b", "p+q+%\xc3\xa9",
		    "{\"k 1\":\"v 1+\",\"e\":\"\xc3\xa9\"}");
	td_conn_free(c);

	/* parse_qsl + dict: blanks kept, empty pieces skipped, a repeated key
	 * keeps its first place and its last value */
	c = uri_ok("x://h?a=1&&b=&c&a=3&=z&d==");
	assert_extra(c, "{\"a\":\"3\",\"b\":\"\",\"c\":\"\",\"\":\"z\",\"d\":\"=\"}");
	td_conn_free(c);

	/* __extra__ wins over every other parameter, wherever it is */
	c = uri_ok("x://h?a=1&__extra__=%7B%22b%22%3A2%7D&c=3");
	assert_extra(c, "{\"b\":2}");
	td_conn_free(c);
	c = uri_ok("x://h?__extra__=%7B%7D");
	assert_extra(c, "{}");
	td_conn_free(c);
	c = uri_ok("x://h?a=1&__extra__="); /* empty: no extra, as in Airflow */
	assert_extra(c, "{}");
	td_conn_free(c);

	/* the fragment is dropped; '?' and '#' end the netloc */
	c = uri_ok("x://u:p@h:1/s?k=v#frag?x=y");
	assert_conn(c, "x", "h", 1, "s", "u", "p", "{\"k\":\"v\"}");
	td_conn_free(c);
	c = uri_ok("x://h?k=/a/b");
	assert_conn(c, "x", "h", 0, "", "", "", "{\"k\":\"/a/b\"}");
	td_conn_free(c);
	c = uri_ok("x://h/a/b%2Fc");
	assert_string_equal(c->schema, "a/b/c");
	td_conn_free(c);

	/* surrounding whitespace (a trailing newline from a secret file) */
	c = uri_ok("  http://h:8080/x\n");
	assert_conn(c, "http", "h", 8080, "x", "", "", "{}");
	td_conn_free(c);

	/* many repeated keys: sorted, not quadratic */
	char big[40000];
	size_t n = (size_t)snprintf(big, sizeof(big), "x://h?");
	for (int i = 0; i < 4000; i++)
		n += (size_t)snprintf(big + n, sizeof(big) - n, "k%d=%d&", i % 7, i);
	c = uri_ok(big);
	assert_extra(c, "{\"k0\":\"3997\",\"k1\":\"3998\",\"k2\":\"3999\",\"k3\":\"3993\","
		     "\"k4\":\"3994\",\"k5\":\"3995\",\"k6\":\"3996\"}");
	td_conn_free(c);
}

static void test_uri_errors(void **state)
{
	(void)state;
	uri_bad("mysql://user:s3cr%4@db", TD_EINVAL_SPEC, "password: '%' not followed", "s3cr");
	uri_bad("mysql://user:s3cr%zzet@db", TD_EINVAL_SPEC, "password: '%'", "s3cr");
	uri_bad("mysql://user:s3cret%@db", TD_EINVAL_SPEC, "password: '%'", "s3cret");
	uri_bad("mysql://us%g1er:pw@db", TD_EINVAL_SPEC, "login: '%'", NULL);
	uri_bad("mysql://db%/x", TD_EINVAL_SPEC, "host: '%'", NULL);
	uri_bad("mysql://db/x%2", TD_EINVAL_SPEC, "schema: '%'", NULL);
	uri_bad("mysql://db?a=%", TD_EINVAL_SPEC, "extra (query): '%'", NULL);
	uri_bad("mysql://u:s3cret%00@db", TD_EINVAL_SPEC, "password: %00", "s3cret");

	uri_bad("x://h:abc", TD_EINVAL_SPEC, "port: not a decimal number", NULL);
	uri_bad("x://h:80a", TD_EINVAL_SPEC, "port: not a decimal", NULL);
	uri_bad("x://h:-1", TD_EINVAL_SPEC, "port: not a decimal", NULL);
	uri_bad("x://h:+1", TD_EINVAL_SPEC, "port: not a decimal", NULL);
	uri_bad("x://h:1:2", TD_EINVAL_SPEC, "port: not a decimal", NULL);
	uri_bad("x://h:65536", TD_EINVAL_SPEC, "port: larger than 65535", NULL);
	uri_bad("x://h:99999999999999999999999", TD_EINVAL_SPEC, "port: larger", NULL);
	/* a forgotten '@' would make the password the port: never echo it */
	uri_bad("mysql://user:hunter22", TD_EINVAL_SPEC, "port:", "hunter22");
	/* an unencoded '#' in a password cuts the netloc */
	uri_bad("mysql://user:pa#ss@h", TD_EINVAL_SPEC, "port:", "pa");

	uri_bad("://host", TD_EINVAL_SPEC, "conn type: empty scheme", NULL);
	uri_bad("", TD_EINVAL_SPEC, "conn type: expected", NULL);
	uri_bad("   ", TD_EINVAL_SPEC, "conn type: expected", NULL);
	uri_bad("host:5432", TD_EINVAL_SPEC, "conn type: expected \"://\"", NULL);
	uri_bad("mysql:/h", TD_EINVAL_SPEC, "conn type: expected \"://\"", NULL);
	uri_bad("mysql", TD_EINVAL_SPEC, "conn type: expected \"://\"", NULL);
	uri_bad("my_type://h", TD_EINVAL_SPEC, "conn type: invalid character", NULL);
	uri_bad("1abc://h", TD_EINVAL_SPEC, "conn type: must start with a letter", NULL);
	uri_bad("x://h\tx", TD_EINVAL_SPEC, "uri: control character", NULL);

	uri_bad("x://[::1", TD_EINVAL_SPEC, "host: '[' without ']'", NULL);
	uri_bad("x://::1]", TD_EINVAL_SPEC, "port: not a decimal", NULL);
	uri_bad("x://h]:1", TD_EINVAL_SPEC, "host: unbalanced bracket", NULL);
	uri_bad("x://[abc]", TD_EINVAL_SPEC, "host: not an IPv6 address", NULL);
	uri_bad("x://[::1]x", TD_EINVAL_SPEC, "host: expected ':' or the end", NULL);
	uri_bad("x://[::1]:99999", TD_EINVAL_SPEC, "port: larger", NULL);
	uri_bad("x://[:/:1]", TD_EINVAL_SPEC, "host: '[' without ']'", NULL);
	uri_bad("x://[::1 ]", TD_EINVAL_SPEC, "host: invalid character", NULL);
	uri_bad("http://user:pw@https://api.example.com", TD_EINVAL_SPEC,
		"host: \"://\" inside the host", "pw");

	uri_bad("x://h?__extra__=%7B", TD_EJSON, "extra (__extra__): invalid JSON", NULL);
	uri_bad("x://h?__extra__=%5B1%5D", TD_EINVAL_SPEC,
		"extra (__extra__): expected a JSON object, got an array", NULL);
	uri_bad("x://h?__extra__=+", TD_EJSON, "extra (__extra__): invalid JSON", NULL);
	/* a bad escape inside a JSON string: only the offset is reported */
	uri_bad("x://h?__extra__=%7B%22token%22%3A%22ab%5Cqcd%22%7D", TD_EJSON,
		"extra (__extra__): invalid JSON at offset 12: malformed", "ab");
}

/* ---- JSON form ----------------------------------------------------------- */

static void test_json_form(void **state)
{
	(void)state;
	struct td_conn *c;

	/* Airflow's documented JSON example */
	c = json_ok("{\"conn_type\": \"my-conn-type\", \"login\": \"my-login\", "
		    "\"password\": \"my-password\", \"host\": \"my-host\", \"port\": 1234, "
		    "\"schema\": \"my-schema\", \"extra\": {\"param1\": \"val1\", \"param2\": \"val2\"}}");
	assert_conn(c, "my_conn_type", "my-host", 1234, "my-schema", "my-login",
		    "my-password", "{\"param1\":\"val1\",\"param2\":\"val2\"}");
	td_conn_free(c);

	/* extra as JSON text, port as a string, nulls, description */
	c = json_ok(" {\"conn_type\":\"http\",\"host\":\"h\",\"port\":\"8080\",\"login\":null,"
		    "\"description\":\"the API\",\"extra\":\"{\\\"a\\\": [1, true]}\"} ");
	assert_conn(c, "http", "h", 8080, "", "", "", "{\"a\":[1,true]}");
	assert_string_equal(c->description, "the API");
	td_conn_free(c);

	c = json_ok("{}");
	assert_conn(c, "", "", 0, "", "", "", "{}");
	td_conn_free(c);
	c = json_ok("{\"conn_type\":\"postgresql\",\"port\":0,\"extra\":\"\"}");
	assert_conn(c, "postgres", "", 0, "", "", "", "{}");
	td_conn_free(c);
	c = json_ok("{\"conn_type\":\"x\",\"port\":\"\",\"extra_dejson\":{\"k\":{\"n\":1}}}");
	assert_conn(c, "x", "", 0, "", "", "", "{\"k\":{\"n\":1}}");
	td_conn_free(c);

	/* "uri" stands for all the fields; a description may join it */
	c = json_ok("{\"uri\":\"mysql://u:p%40w@db:3306/d\",\"description\":\"db\"}");
	assert_conn(c, "mysql", "db", 3306, "d", "u", "p@w", "{}");
	assert_string_equal(c->description, "db");
	td_conn_free(c);

	c = json_ok("{\"uri\":\"\",\"host\":\"h\"}"); /* Airflow: `if uri` */
	assert_string_equal(c->host, "h");
	td_conn_free(c);

	/* strings are taken as they are, no percent-decoding */
	c = json_ok("{\"password\":\"a%40b\\\"c\",\"host\":\"Mixed.Case\"}");
	assert_string_equal(c->password, "a%40b\"c");
	assert_string_equal(c->host, "Mixed.Case");
	td_conn_free(c);
}

static void test_json_errors(void **state)
{
	(void)state;
	json_bad("{\"conn_type\":\"x\",\"hots\":\"h\"}", TD_EINVAL_SPEC, "unknown field \"hots\"", NULL);
	json_bad("{\"conn_id\":\"x\"}", TD_EINVAL_SPEC, "conn_id: not allowed", NULL);
	json_bad("{\"host\":\"a\",\"host\":\"b\"}", TD_EINVAL_SPEC, "host: given twice", NULL);
	json_bad("{\"host\":1}", TD_EINVAL_SPEC, "host: expected a string or null, got an integer", NULL);
	json_bad("{\"password\":[\"s3cret\"]}", TD_EINVAL_SPEC, "password: expected a string", "s3cret");
	json_bad("{\"password\":\"a\\u0000b\"}", TD_EINVAL_SPEC, "password: contains a NUL", NULL);
	json_bad("{\"port\":70000}", TD_EINVAL_SPEC, "port: larger than 65535", NULL);
	json_bad("{\"port\":-1}", TD_EINVAL_SPEC, "port: negative", NULL);
	json_bad("{\"port\":1.5}", TD_EINVAL_SPEC, "port: expected an integer, got a float", NULL);
	json_bad("{\"port\":true}", TD_EINVAL_SPEC, "port: expected an integer, got a boolean", NULL);
	json_bad("{\"port\":\"80x\"}", TD_EINVAL_SPEC, "port: not a decimal number up to 65535", NULL);
	json_bad("{\"port\":\"65536\"}", TD_EINVAL_SPEC, "port: not a decimal number up to 65535", NULL);
	json_bad("{\"extra\":[1]}", TD_EINVAL_SPEC, "extra: expected an object or the JSON text", NULL);
	json_bad("{\"extra\":\"[1]\"}", TD_EINVAL_SPEC, "extra: expected a JSON object, got an array", NULL);
	json_bad("{\"extra\":\"{nope\"}", TD_EJSON, "extra: invalid JSON", NULL);
	json_bad("{\"extra_dejson\":\"{}\"}", TD_EINVAL_SPEC, "extra_dejson: expected an object, got a string", NULL);
	json_bad("{\"extra\":{},\"extra_dejson\":{}}", TD_EINVAL_SPEC, "give one or the other", NULL);
	json_bad("{\"uri\":\"x://h\",\"host\":\"h\"}", TD_EINVAL_SPEC, "uri: cannot be combined with host", NULL);
	json_bad("{\"uri\":\"x://u:pw@h:port\"}", TD_EINVAL_SPEC, "uri: port: not a decimal", NULL);
	json_bad("{\"uri\":5}", TD_EINVAL_SPEC, "uri: expected a string", NULL);
	json_bad("[]", TD_EINVAL_SPEC, "expected an object, got an array", NULL);
	json_bad("{\"conn_type\":\"x\",}", TD_EJSON, "value: invalid JSON at offset 16: trailing comma", NULL);
	json_bad("{", TD_EJSON, "value: invalid JSON", NULL);
	json_bad("", TD_EJSON, "value: invalid JSON", NULL);
	/* errors inside a string literal never quote its bytes */
	json_bad("{\"password\":\"ab\\qcd\"}", TD_EJSON, "offset 15: malformed or unterminated string", "q");
	json_bad("{\"password\":\"abc\x01xyz\"}", TD_EJSON, "malformed or unterminated string", "0x01");
	json_bad("{\"password\":\"abcxyz", TD_EJSON, "malformed or unterminated string", "abc");
	json_bad("{\"password\":\"ab\xff" "cd\"}", TD_EJSON, "malformed or unterminated string", "0xff");
}

/* ---- no over-read on any prefix (guard page) ---------------------------- */

static const char *const example_uris[] = {
	"my-conn-type://login:password@host:5432/schema?param1=val1&param2=val2",
	"mysql://user:p%40ss@db:3306/mydb",
	"http://api.example.com",
	"https://:token@host",
	"aws://?__extra__=%7B%22region%22%3A+%22us-east-1%22%7D",
	"postgres://u:p@[2001:db8::1%25eth0]:5432/db#frag",
	"spark://spark://spark-master:7077",
	"postgres://u:p@%2Fvar%2Frun%2Fpg/db?a=1&&b&a=%2B+",
};

static const char *const example_jsons[] = {
	"{\"conn_type\": \"my-conn-type\", \"login\": \"my-login\", \"password\": "
	"\"my-password\", \"host\": \"my-host\", \"port\": 1234, \"schema\": "
	"\"my-schema\", \"extra\": {\"param1\": \"val1\", \"param2\": \"val2\"}}",
	"{\"uri\":\"mysql://u:p%40w@db:3306/d\",\"description\":\"db\"}",
	"{\"port\":\"8080\",\"extra\":\"{\\\"a\\\": [1, true, {\\\"token\\\": \\\"xyz1\\\"}]}\"}",
};

static void test_prefixes(void **state)
{
	(void)state;
	for (size_t u = 0; u < TD_ARRAY_LEN(example_uris); u++) {
		size_t n = strlen(example_uris[u]);
		for (size_t k = 0; k <= n; k++) {
			struct td_conn *c = NULL;
			int rc = td_conn_from_uri("p", guarded(example_uris[u], k), k, &c,
						  err, sizeof(err));
			assert_true(rc == 0 || rc == TD_EINVAL_SPEC || rc == TD_EJSON);
			assert_true((rc == 0) == (c != NULL));
			if (c) {
				char url[256];
				td_conn_http_base_url(c, url, sizeof(url));
				td_conn_free(c);
			}
		}
		/* and every suffix: the input may start anywhere */
		for (size_t k = 0; k <= n; k++) {
			struct td_conn *c = NULL;
			td_conn_from_uri("p", guarded(example_uris[u] + k, n - k), n - k, &c,
					 err, sizeof(err));
			td_conn_free(c);
		}
	}
	for (size_t j = 0; j < TD_ARRAY_LEN(example_jsons); j++) {
		size_t n = strlen(example_jsons[j]);
		for (size_t k = 0; k <= n; k++) {
			struct td_conn *c = NULL;
			int rc = td_conn_from_json("p", guarded(example_jsons[j], k), k, &c,
						   err, sizeof(err));
			assert_int_equal(rc == 0, k == n);
			td_conn_free(c);
		}
	}
}

/* ---- registry: environment ---------------------------------------------- */

static void test_env(void **state)
{
	(void)state;
	struct td_conns *cs;
	char e[1024];
	char *envp[] = {
		"PATH=/usr/bin",
		"AIRFLOW_CONN_GOOD_URI=http://api.example.com:8080",
		"AIRFLOW_CONN_BAD_PORT=mysql://u:hunter22@db:99999/x",
		"AIRFLOW_CONN_GOOD_JSON= {\"conn_type\":\"redis\",\"host\":\"r\",\"port\":6379}",
		"AIRFLOW_CONN_BAD_JSON={\"conn_type\":\"x\",\"port\":\"p\"}",
		"AIRFLOW_CONN_lower=http://h",
		"AIRFLOW_CONN_=http://h",
		"AIRFLOW_CONN_EMPTY=",
		"AIRFLOW_CONN_BLANK= \n",
		"AIRFLOW_CONN_BAD_ESC=http://u:s3cr%zzet@h",
		"AIRFLOW_CONNX=not ours",
		"AIRFLOW_CONN_NO_EQUALS",
		"AIRFLOW_CONN_GOOD2=x://h",
		NULL,
	};
	assert_int_equal(td_conns_new(&cs), 0);
	int bad = td_conns_load_env(cs, envp, e, sizeof(e));
	assert_int_equal(bad, 5);
	assert_int_equal(td_conns_count(cs), 3);

	/* messages in envp order, each naming its variable and field */
	const char *want[] = {
		"AIRFLOW_CONN_BAD_PORT: port: larger than 65535",
		"AIRFLOW_CONN_BAD_JSON: port: not a decimal number up to 65535",
		"AIRFLOW_CONN_lower: lower-case letters",
		"AIRFLOW_CONN_: empty connection id",
		"AIRFLOW_CONN_BAD_ESC: password: '%' not followed by two hex digits",
	};
	for (size_t i = 0; i < TD_ARRAY_LEN(want); i++) {
		const char *m = td_conns_env_error(cs, i);
		assert_non_null(m);
		if (strncmp(m, want[i], strlen(want[i])) != 0)
			fail_msg("message %zu: \"%s\"", i, m);
		assert_null(strstr(m, "hunter22"));
		assert_null(strstr(m, "s3cr"));
	}
	assert_null(td_conns_env_error(cs, 5));
	assert_true(strncmp(e, want[0], strlen(want[0])) == 0);
	assert_non_null(strstr(e, "(and 4 more)"));

	const struct td_conn *c = td_conns_get(cs, "good_uri");
	assert_non_null(c);
	assert_string_equal(c->id, "good_uri");
	assert_int_equal(c->source, TD_CONN_SRC_ENV);
	assert_string_equal(c->host, "api.example.com");
	assert_int_equal(c->port, 8080);
	c = td_conns_get(cs, "good_json");
	assert_non_null(c);
	assert_string_equal(c->conn_type, "redis");
	assert_int_equal(c->port, 6379);
	assert_non_null(td_conns_get(cs, "good2"));
	assert_null(td_conns_get(cs, "bad_port"));
	assert_null(td_conns_get(cs, "empty"));
	assert_null(td_conns_get(cs, "blank"));
	assert_null(td_conns_get(cs, "lower"));
	assert_null(td_conns_get(cs, NULL));

	/* again: messages are replaced, entries replaced by id */
	char *envp2[] = {"AIRFLOW_CONN_GOOD2=y://other", NULL};
	assert_int_equal(td_conns_load_env(cs, envp2, e, sizeof(e)), 0);
	assert_string_equal(e, "");
	assert_null(td_conns_env_error(cs, 0));
	assert_string_equal(td_conns_get(cs, "GOOD2")->conn_type, "y");
	assert_int_equal(td_conns_count(cs), 3);
	assert_int_equal(td_conns_load_env(cs, NULL, e, sizeof(e)), 0);
	td_conns_free(cs);
	td_conns_free(NULL);
}

/* Airflow builds the variable name from the upper-cased id. */
static void test_case_insensitive_env(void **state)
{
	(void)state;
	struct td_conns *cs;
	char *envp[] = {"AIRFLOW_CONN_MY_API=https://api.example.com", NULL};
	assert_int_equal(td_conns_new(&cs), 0);
	assert_int_equal(td_conns_load_env(cs, envp, err, sizeof(err)), 0);
	const struct td_conn *c = td_conns_get(cs, "my_api");
	assert_non_null(c);
	assert_ptr_equal(td_conns_get(cs, "MY_API"), c);
	assert_ptr_equal(td_conns_get(cs, "My_Api"), c);
	assert_null(td_conns_get(cs, "my_ap"));
	assert_null(td_conns_get(cs, "my_api_"));
	assert_null(td_conns_get(cs, "my-api"));
	td_conns_free(cs);
}

/* ---- registry: file ------------------------------------------------------ */

static char tmp_path[64];

static void write_tmp(const char *text)
{
	strcpy(tmp_path, "/tmp/td_conns_XXXXXX");
	int fd = mkstemp(tmp_path);
	assert_true(fd >= 0);
	size_t n = strlen(text);
	assert_int_equal(write(fd, text, n), (ssize_t)n);
	close(fd);
}

static void test_file(void **state)
{
	(void)state;
	struct td_conns *cs;
	assert_int_equal(td_conns_new(&cs), 0);
	write_tmp("{\n"
		  "  \"my_api\": \"https://:tok3n-value@api.example.com/v1\",\n"
		  "  \"db\": {\"conn_type\": \"postgres\", \"host\": \"pg\", \"port\": 5432,\n"
		  "          \"login\": \"app\", \"password\": \"pg-Pa55\"},\n"
		  "  \"Mixed_Case\": \"x://h\",\n"
		  "  \"weird.id-(1):/\\\\#!\": \"x://h\"\n"
		  "}\n");
	assert_int_equal(td_conns_load_file(cs, tmp_path, err, sizeof(err)), 0);
	unlink(tmp_path);
	assert_int_equal(td_conns_count(cs), 4);
	const struct td_conn *c = td_conns_get(cs, "my_api");
	assert_non_null(c);
	assert_int_equal(c->source, TD_CONN_SRC_FILE);
	assert_string_equal(c->password, "tok3n-value");
	assert_string_equal(c->schema, "v1");
	c = td_conns_get(cs, "db");
	assert_non_null(c);
	assert_string_equal(c->password, "pg-Pa55");
	/* file ids are exact */
	assert_non_null(td_conns_get(cs, "Mixed_Case"));
	assert_null(td_conns_get(cs, "mixed_case"));
	assert_non_null(td_conns_get(cs, "weird.id-(1):/\\#!"));

	/* all or nothing: one bad entry and nothing from the file is added */
	write_tmp("{\"new_one\": \"x://h\", \"broken\": {\"conn_type\": \"x\", \"port\": 123456}}");
	assert_int_equal(td_conns_load_file(cs, tmp_path, err, sizeof(err)), TD_EINVAL_SPEC);
	assert_non_null(strstr(err, ": connection \"broken\": port: larger than 65535"));
	assert_true(strncmp(err, tmp_path, strlen(tmp_path)) == 0);
	unlink(tmp_path);
	assert_null(td_conns_get(cs, "new_one"));
	assert_int_equal(td_conns_count(cs), 4);

	struct { const char *text; int rc; const char *msg; } bad[] = {
		{"{\"a\": \"x://u:s3cret@h:zz\"}", TD_EINVAL_SPEC,
		 "connection \"a\": uri: port: not a decimal number"},
		{"{\"a\": 5}", TD_EINVAL_SPEC,
		 "connection \"a\": expected a URI string or an object, got an integer"},
		{"{\"a\": {\"pasword\": \"s3cret\"}}", TD_EINVAL_SPEC,
		 "connection \"a\": unknown field \"pasword\""},
		{"{\"a\": \"x://h\", \"a\": \"y://h\"}", TD_EINVAL_SPEC, "connection \"a\": given twice"},
		{"{\"bad id\": \"x://h\"}", TD_EINVAL_SPEC, "connection \"bad id\": invalid id"},
		{"{\"\": \"x://h\"}", TD_EINVAL_SPEC, "connection \"\": invalid id"},
		{"[\"x://h\"]", TD_EINVAL_SPEC, "expected a JSON object mapping ids"},
		{"{\"a\": \"x://h\",}", TD_EJSON, "invalid JSON at offset 13: trailing comma"},
		{"{\"a\": {\"password\": \"s3c\\qet\"}}", TD_EJSON,
		 "invalid JSON at offset 23: malformed or unterminated string"},
	};
	for (size_t i = 0; i < TD_ARRAY_LEN(bad); i++) {
		write_tmp(bad[i].text);
		int rc = td_conns_load_file(cs, tmp_path, err, sizeof(err));
		unlink(tmp_path);
		if (rc != bad[i].rc || !strstr(err, bad[i].msg) || strstr(err, "s3c"))
			fail_msg("%s: rc %d: %s", bad[i].text, rc, err);
	}
	assert_int_equal(td_conns_load_file(cs, "/nonexistent/conns.json", err, sizeof(err)),
			 -ENOENT);
	assert_non_null(strstr(err, "/nonexistent/conns.json: "));
	assert_int_equal(td_conns_load_file(cs, "/tmp", err, sizeof(err)), -EINVAL);
	assert_int_equal(td_conns_count(cs), 4);

	/* loading again replaces by id */
	write_tmp("{\"db\": \"postgres://other@pg2/db\"}");
	assert_int_equal(td_conns_load_file(cs, tmp_path, err, sizeof(err)), 0);
	unlink(tmp_path);
	assert_string_equal(td_conns_get(cs, "db")->host, "pg2");
	assert_int_equal(td_conns_count(cs), 4);
	td_conns_free(cs);
}

/* Airflow checks environment variables before the metastore. */
static void test_precedence(void **state)
{
	(void)state;
	struct td_conns *cs;
	assert_int_equal(td_conns_new(&cs), 0);
	write_tmp("{\"my_api\": \"http://from-file\", \"only_file\": \"http://f\","
		  " \"MY_API\": \"http://file-upper\"}");
	assert_int_equal(td_conns_load_file(cs, tmp_path, err, sizeof(err)), 0);
	unlink(tmp_path);
	assert_string_equal(td_conns_get(cs, "my_api")->host, "from-file");
	assert_string_equal(td_conns_get(cs, "MY_API")->host, "file-upper");

	char *envp[] = {"AIRFLOW_CONN_MY_API=http://from-env",
			"AIRFLOW_CONN_ONLY_FILE=bad://h:port", NULL};
	assert_int_equal(td_conns_load_env(cs, envp, err, sizeof(err)), 1);
	assert_string_equal(td_conns_get(cs, "my_api")->host, "from-env");
	assert_string_equal(td_conns_get(cs, "MY_API")->host, "from-env");
	assert_int_equal(td_conns_get(cs, "my_api")->source, TD_CONN_SRC_ENV);
	/* a broken variable is reported and the next source answers, as the
	 * failing backend is skipped in Airflow */
	assert_string_equal(td_conns_get(cs, "only_file")->host, "f");
	td_conns_free(cs);
}

/* ---- HTTP helpers -------------------------------------------------------- */

static void base_url_is(const char *uri, const char *want)
{
	char b[128];
	struct td_conn *c = uri_ok(uri);
	assert_int_equal(td_conn_http_base_url(c, b, sizeof(b)), 0);
	assert_string_equal(b, want);
	td_conn_free(c);
}

static void test_base_url(void **state)
{
	(void)state;
	base_url_is("http://api.example.com", "http://api.example.com");
	base_url_is("http://api.example.com:8080", "http://api.example.com:8080");
	base_url_is("http://u:p@api.example.com:8443/https", "https://api.example.com:8443");
	base_url_is("http://h/ftp", "ftp://h");
	base_url_is("http://", "http://");
	base_url_is("http://[::1]:8080", "http://[::1]:8080");
	base_url_is("http://[fe80::1%25eth0]", "http://[fe80::1%25eth0]");
	/* a host with "://" is the base, port and schema aside (HttpHook) */
	base_url_is("http://https://api.example.com:9000/ignored", "https://api.example.com");

	struct td_conn *c = json_ok("{\"host\":\"https://api.example.com/v2\",\"port\":1}");
	char b[64];
	assert_int_equal(td_conn_http_base_url(c, b, sizeof(b)), 0);
	assert_string_equal(b, "https://api.example.com/v2");
	assert_int_equal(td_conn_http_url(c, "items", b, sizeof(b)), 0);
	assert_string_equal(b, "https://api.example.com/v2/items");
	assert_int_equal(td_conn_http_url(c, "/items", b, sizeof(b)), 0);
	assert_string_equal(b, "https://api.example.com/v2/items");
	assert_int_equal(td_conn_http_url(c, NULL, b, sizeof(b)), 0);
	assert_string_equal(b, "https://api.example.com/v2");
	td_conn_free(c);

	c = json_ok("{\"host\":\"h.example:8080\",\"schema\":\"https\"}");
	assert_int_equal(td_conn_http_base_url(c, b, sizeof(b)), 0);
	assert_string_equal(b, "https://h.example:8080"); /* one colon: not IPv6 */
	assert_int_equal(td_conn_http_url(c, "", b, sizeof(b)), 0);
	assert_string_equal(b, "https://h.example:8080");
	td_conn_free(c);

	c = uri_ok("http://h/");
	assert_int_equal(td_conn_http_url(c, "a/b?c=d", b, sizeof(b)), 0);
	assert_string_equal(b, "http://h/a/b?c=d");
	/* too small: -ENOSPC and an empty string; exact fit works */
	assert_int_equal(td_conn_http_base_url(c, b, 8), -ENOSPC);
	assert_string_equal(b, "");
	assert_int_equal(td_conn_http_base_url(c, b, 9), 0);
	assert_string_equal(b, "http://h");
	assert_int_equal(td_conn_http_base_url(c, b, 0), -ENOSPC);
	assert_int_equal(td_conn_http_url(c, "abc", b, 10), -ENOSPC);
	td_conn_free(c);
}

static void test_headers(void **state)
{
	(void)state;
	struct td_conn *c = json_ok(
		"{\"extra\":{\"Authorization\":\"Bearer abc\",\"timeout\":30,\"verify\":false,"
		"\"X-Num\":5,\"proxy\":\"http://p\",\"X-Nested\":{\"a\":\"b\"},\"X-Null\":null,"
		"\"Bad Name\":\"v\",\"X-Inject\":\"a\\r\\nEvil: 1\",\"Accept\":\"application/json\","
		"\"stream\":\"true\",\"\":\"empty\",\"X-Empty\":\"\",\"X-Arr\":[\"a\"],"
		"\"X-Nul\":\"a\\u0000b\",\"X-F\":1.5}}");
	size_t cur = 0;
	struct td_conn_header h;
	char line[128];
	const char *want[] = {"Authorization: Bearer abc", "!Bad Name", "!X-Inject",
			      "Accept: application/json", "!", "X-Empty: ", "!X-Nul"};
	size_t k = 0;
	int rc;
	while ((rc = td_conn_http_headers(c, &cur, &h)) != 0) {
		assert_true(k < TD_ARRAY_LEN(want));
		if (rc < 0) {
			assert_int_equal(rc, TD_EINVAL_SPEC);
			snprintf(line, sizeof(line), "!%.*s", (int)h.name_len, h.name);
		} else {
			snprintf(line, sizeof(line), "%.*s: %.*s", (int)h.name_len, h.name,
				 (int)h.value_len, h.value);
		}
		assert_string_equal(line, want[k]);
		k++;
	}
	assert_int_equal(k, TD_ARRAY_LEN(want));
	assert_int_equal(td_conn_http_headers(c, &cur, &h), 0);
	td_conn_free(c);

	/* empty names and values are "" (msgpack-c would give NULL) */
	c = uri_ok("x://h?&=&X-E");
	cur = 0;
	assert_int_equal(td_conn_http_headers(c, &cur, &h), TD_EINVAL_SPEC);
	assert_non_null(h.name);
	assert_non_null(h.value);
	assert_int_equal(h.name_len + h.value_len, 0);
	assert_int_equal(td_conn_http_headers(c, &cur, &h), 1);
	assert_non_null(h.value);
	assert_int_equal(h.value_len, 0);
	td_conn_free(c);

	/* URI query parameters are extra, hence headers too; no extra, none */
	c = uri_ok("http://h?X-Api-Key=k1&timeout=5");
	cur = 0;
	assert_int_equal(td_conn_http_headers(c, &cur, &h), 1);
	assert_int_equal(h.name_len, 9);
	assert_memory_equal(h.name, "X-Api-Key", 9);
	assert_int_equal(h.value_len, 2);
	assert_memory_equal(h.value, "k1", 2);
	assert_int_equal(td_conn_http_headers(c, &cur, &h), 0);
	td_conn_free(c);
	c = uri_ok("http://h");
	cur = 0;
	assert_int_equal(td_conn_http_headers(c, &cur, &h), 0);
	td_conn_free(c);

	/* from the registry too */
	struct td_conns *cs;
	char *envp[] = {"AIRFLOW_CONN_H={\"extra\":\"{\\\"X-A\\\":\\\"1\\\"}\"}", NULL};
	assert_int_equal(td_conns_new(&cs), 0);
	assert_int_equal(td_conns_load_env(cs, envp, err, sizeof(err)), 0);
	cur = 0;
	assert_int_equal(td_conn_http_headers(td_conns_get(cs, "h"), &cur, &h), 1);
	assert_memory_equal(h.name, "X-A", 3);
	assert_int_equal(td_conn_http_headers(td_conns_get(cs, "h"), &cur, &h), 0);
	td_conns_free(cs);
}

/* ---- masking ------------------------------------------------------------- */

static void test_mask(void **state)
{
	(void)state;
	struct td_conns *cs;
	char out[256];
	assert_int_equal(td_conns_new(&cs), 0);
	assert_string_equal(td_conn_mask(cs, "nothing known yet", out, sizeof(out)),
			    "nothing known yet");
	char *envp[] = {
		"AIRFLOW_CONN_A=mysql://user:p%40ss%2Fw0rd@db/x",
		"AIRFLOW_CONN_B=http://u:abc@h",          /* too short to mask */
		"AIRFLOW_CONN_C={\"password\":\"se\\\"cr\\\\et\",\"extra\":{\"Authorization\":"
		"\"Bearer T0KEN\",\"region\":\"eu-west-1\",\"nested\":{\"x-api-key\":\"KEY-123\"},"
		"\"private_key\":{\"pem\":\"PEMDATA\"}}}",
		"AIRFLOW_CONN_D=http://u:secret@h",
		"AIRFLOW_CONN_E=http://u:secret123@h",
		NULL,
	};
	assert_int_equal(td_conns_load_env(cs, envp, err, sizeof(err)), 0);
	struct { const char *in, *out; } cases[] = {
		{"connect p@ss/w0rd now", "connect *** now"},
		{"uri mysql://user:p%40ss%2Fw0rd@db", "uri mysql://user:***@db"},
		{"quoted p%40ss/w0rd", "quoted ***"},   /* Python's quote() keeps '/' */
		{"abc is short", "abc is short"},
		{"raw se\"cr\\et and json se\\\"cr\\\\et", "raw *** and json ***"},
		{"Bearer T0KEN sent to eu-west-1", "*** sent to eu-west-1"},
		{"KEY-123 PEMDATA", "*** ***"},
		{"secret123 then secret, secretsecret", "*** then ***, ******"},
		{"", ""},
		{"s3c", "s3c"},
	};
	for (size_t i = 0; i < TD_ARRAY_LEN(cases); i++)
		assert_string_equal(td_conn_mask(cs, cases[i].in, out, sizeof(out)), cases[i].out);

	/* truncation: never a partial secret, always NUL-terminated */
	assert_string_equal(td_conn_mask(cs, "xx secret123", out, 6), "xx **");
	assert_string_equal(td_conn_mask(cs, "xx secret123", out, 1), "");
	assert_string_equal(td_conn_mask(cs, "xx", NULL, 0), "");
	assert_string_equal(td_conn_mask(cs, NULL, out, sizeof(out)), "");
	assert_string_equal(td_conn_mask(NULL, "secret", out, sizeof(out)), "secret");
	/* a shadowed connection's secret stays masked */
	write_tmp("{\"d\": \"http://u:file-only-pw@h\"}");
	assert_int_equal(td_conns_load_file(cs, tmp_path, err, sizeof(err)), 0);
	unlink(tmp_path);
	assert_string_equal(td_conn_mask(cs, "file-only-pw", out, sizeof(out)), "***");
	td_conns_free(cs);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_uri_doc_examples),
		cmocka_unit_test(test_uri_hosts),
		cmocka_unit_test(test_uri_userinfo_and_decoding),
		cmocka_unit_test(test_uri_errors),
		cmocka_unit_test(test_json_form),
		cmocka_unit_test(test_json_errors),
		cmocka_unit_test(test_prefixes),
		cmocka_unit_test(test_env),
		cmocka_unit_test(test_case_insensitive_env),
		cmocka_unit_test(test_file),
		cmocka_unit_test(test_precedence),
		cmocka_unit_test(test_base_url),
		cmocka_unit_test(test_headers),
		cmocka_unit_test(test_mask),
	};
	return cmocka_run_group_tests(tests, guard_setup, guard_teardown);
}
