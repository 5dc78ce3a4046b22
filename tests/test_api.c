/*
 * The control API end to end: real redis-server, real triggerd (both per
 * test, see harness.h) and libcurl's easy interface as the client.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <curl/curl.h>
#include <msgpack.h>

#include "harness.h"
#include "triggerd/buf.h"
#include "triggerd/codec.h"

#define TOKEN "0123456789abcdef0123"

struct env {
	struct harness *h;
	char base[64];       /* http://127.0.0.1:<port> */
};

struct resp {
	long status;
	struct td_buf body;
	struct td_buf head;  /* raw header lines of the final response */
	char ctype[128];
	double secs;         /* request to end of response */
};

static CURL *curl;       /* one handle: its connection cache keeps alive */

/* ---- HTTP client ------------------------------------------------------ */

static size_t body_cb(char *p, size_t size, size_t n, void *arg)
{
	struct resp *r = arg;
	return td_buf_append(&r->body, p, size * n) ? 0 : size * n;
}

static size_t head_cb(char *p, size_t size, size_t n, void *arg)
{
	struct resp *r = arg;
	/* A status line starts a new response (after a 100 Continue). */
	if (size * n >= 5 && memcmp(p, "HTTP/", 5) == 0)
		td_buf_reset(&r->head);
	return td_buf_append(&r->head, p, size * n) ? 0 : size * n;
}

static void resp_free(struct resp *r)
{
	td_buf_finish(&r->body);
	td_buf_finish(&r->head);
	memset(r, 0, sizeof(*r));
}

/*
 * @method @url with @body (@len bytes; NULL: none) and the NULL-terminated
 * "Name: value" lines @headers. Fills @r (freed by the next call or
 * resp_free). Returns the status, or -1 when no response came.
 */
static long http(const char *method, const char *url, const char *body, size_t len,
		 const char *const *headers, struct resp *r)
{
	resp_free(r);
	curl_easy_reset(curl);
	curl_easy_setopt(curl, CURLOPT_URL, url);
	curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, 5000L);
	curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, body_cb);
	curl_easy_setopt(curl, CURLOPT_WRITEDATA, r);
	curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, head_cb);
	curl_easy_setopt(curl, CURLOPT_HEADERDATA, r);
	curl_easy_setopt(curl, CURLOPT_NOPROXY, "*");
	if (strcmp(method, "HEAD") == 0)
		curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
	else
		curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
	if (body) {
		curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, (long)len);
		curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
	}
	struct curl_slist *hl = NULL;
	for (int i = 0; headers && headers[i]; i++)
		hl = curl_slist_append(hl, headers[i]);
	curl_easy_setopt(curl, CURLOPT_HTTPHEADER, hl);
	CURLcode rc = curl_easy_perform(curl);
	curl_slist_free_all(hl);
	if (rc != CURLE_OK) {
		if (rc != CURLE_COULDNT_CONNECT)
			print_message("curl %s %s: %s\n", method, url, curl_easy_strerror(rc));
		r->status = -1;
		return -1;
	}
	char *ct = NULL;
	curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &r->status);
	curl_easy_getinfo(curl, CURLINFO_CONTENT_TYPE, &ct);
	curl_easy_getinfo(curl, CURLINFO_TOTAL_TIME, &r->secs);
	snprintf(r->ctype, sizeof(r->ctype), "%s", ct ? ct : "");
	if (td_buf_append(&r->body, "", 0) != 0)
		return -1;
	return r->status;
}

/* @method base+@path; a POST body is sent as application/json unless
 * @headers name another type. */
static long api_h(struct env *e, const char *method, const char *path, const char *body,
		  const char *const *headers, struct resp *r)
{
	char url[2048];
	const char *hs[8] = {NULL};
	int n = 0;
	bool ctype = false;
	for (int i = 0; headers && headers[i] && n < 6; i++) {
		ctype |= strncasecmp(headers[i], "content-type:", 13) == 0;
		hs[n++] = headers[i];
	}
	if (body && !ctype)
		hs[n++] = "Content-Type: application/json";
	snprintf(url, sizeof(url), "%s%s", e->base, path);
	return http(method, url, body, body ? strlen(body) : 0, hs, r);
}

static long api(struct env *e, const char *method, const char *path, const char *body,
		struct resp *r)
{
	return api_h(e, method, path, body, NULL, r);
}

/* The value of response header @name (case-insensitive), or NULL. */
static const char *resp_header(const struct resp *r, const char *name, char *out, size_t len)
{
	size_t nl = strlen(name);
	const char *p = r->head.data;
	while (p && *p) {
		const char *eol = strstr(p, "\r\n");
		if (!eol)
			break;
		if ((size_t)(eol - p) > nl && strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
			const char *v = p + nl + 1;
			while (*v == ' ')
				v++;
			snprintf(out, len, "%.*s", (int)(eol - v), v);
			return out;
		}
		p = eol + 2;
	}
	return NULL;
}

static void postf(struct env *e, long want, struct resp *r, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* POST a spec made from @fmt and require status @want. */
static void postf(struct env *e, long want, struct resp *r, const char *fmt, ...)
{
	char doc[8192];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(doc, sizeof(doc), fmt, ap);
	va_end(ap);
	long got = api(e, "POST", "/v1/triggers", doc, r);
	if (got != want)
		fail_msg("POST %s: %ld, want %ld: %s", doc, got, want, r->body.data);
}

/* ---- JSON responses --------------------------------------------------- */

struct jdoc {
	msgpack_sbuffer sb;
	msgpack_unpacked up;
	const msgpack_object *root;
};

/* Parse @r's body with the project's codec; it must be a JSON object. */
static const msgpack_object *jparse(struct jdoc *d, const struct resp *r)
{
	char err[160];
	size_t off = 0;
	msgpack_sbuffer_init(&d->sb);
	msgpack_unpacked_init(&d->up);
	if (td_json_to_msgpack(r->body.data, r->body.len, &d->sb, err, sizeof(err)) != 0)
		fail_msg("body is not JSON (%s): '%s'", err, r->body.data);
	assert_int_equal(msgpack_unpack_next(&d->up, d->sb.data, d->sb.size, &off),
			 MSGPACK_UNPACK_SUCCESS);
	d->root = &d->up.data;
	if (d->root->type != MSGPACK_OBJECT_MAP)
		fail_msg("body is not a JSON object: '%s'", r->body.data);
	return d->root;
}

static void jfree(struct jdoc *d)
{
	msgpack_unpacked_destroy(&d->up);
	msgpack_sbuffer_destroy(&d->sb);
}

static const msgpack_object *jget(const msgpack_object *map, const char *key)
{
	size_t kl = strlen(key);
	if (!map || map->type != MSGPACK_OBJECT_MAP)
		return NULL;
	for (uint32_t i = 0; i < map->via.map.size; i++) {
		const msgpack_object *k = &map->via.map.ptr[i].key;
		if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == kl &&
		    memcmp(k->via.str.ptr, key, kl) == 0)
			return &map->via.map.ptr[i].val;
	}
	return NULL;
}

/* @o rendered as JSON text, into @out. */
static const char *jtext(const msgpack_object *o, char *out, size_t len)
{
	struct td_buf b = TD_BUF_INIT;
	if (!o)
		snprintf(out, len, "(absent)");
	else if (td_msgpack_to_json(o, &b) == 0)
		snprintf(out, len, "%s", b.data);
	td_buf_finish(&b);
	return out;
}

/* Top-level field @key of @r's JSON body, as JSON text, equals @want
 * ("(absent)" when it must be missing). */
static void expect_field(const struct resp *r, const char *key, const char *want)
{
	struct jdoc d;
	char got[4096];
	jtext(jget(jparse(&d, r), key), got, sizeof(got));
	jfree(&d);
	if (strcmp(got, want) != 0)
		fail_msg("field %s: %s, want %s (body %s)", key, got, want, r->body.data);
}

/* An error answer: @status, a JSON body with "status" equal to it, the
 * "error" code @code and a non-empty "message". */
static void expect_error(const struct resp *r, long status, const char *code)
{
	if (r->status != status)
		fail_msg("status %ld, want %ld: %s", r->status, status, r->body.data);
	assert_int_equal(strncmp(r->ctype, "application/json", 16), 0);
	struct jdoc d;
	const msgpack_object *root = jparse(&d, r);
	const msgpack_object *st = jget(root, "status"), *er = jget(root, "error"),
			     *msg = jget(root, "message");
	assert_non_null(st);
	assert_int_equal(st->type, MSGPACK_OBJECT_POSITIVE_INTEGER);
	assert_int_equal(st->via.u64, (uint64_t)status);
	assert_non_null(er);
	assert_int_equal(er->type, MSGPACK_OBJECT_STR);
	if (er->via.str.size != strlen(code) || memcmp(er->via.str.ptr, code, strlen(code)))
		fail_msg("error %.*s, want %s", (int)er->via.str.size, er->via.str.ptr, code);
	assert_non_null(msg);
	assert_int_equal(msg->type, MSGPACK_OBJECT_STR);
	assert_true(msg->via.str.size > 0);
	jfree(&d);
}

/* ---- fixtures and Redis helpers --------------------------------------- */

static int setup(void **state)
{
	struct env *e = calloc(1, sizeof(*e));
	void *hs;
	if (!e || harness_setup(&hs) != 0) {
		free(e);
		return -1;
	}
	e->h = hs;
	*state = e;
	return 0;
}

/* triggerd must stop cleanly on SIGTERM, and a sanitized build must have
 * found nothing. */
static int teardown(void **state)
{
	struct env *e = *state;
	void *hs = e->h;
	int rc = 0;
	if (e->h->td_pid > 0 && harness_td_stop(e->h, SIGTERM) != 0) {
		print_error("triggerd did not exit 0 on SIGTERM (see %s)\n", e->h->log);
		rc = -1;
	}
	if (log_contains(e->h, "runtime error:") || log_contains(e->h, "Sanitizer")) {
		print_error("sanitizer report in %s\n", e->h->log);
		rc = -1;
	}
	bool keep = rc && !getenv("TD_TEST_KEEP");
	if (keep)
		setenv("TD_TEST_KEEP", "1", 1);
	harness_teardown(&hs);
	if (keep)
		unsetenv("TD_TEST_KEEP");
	free(e);
	return rc;
}

/* Start triggerd (extra args NULL-terminated) and point base at its API. */
static void start(struct env *e, const char *const *extra)
{
	assert_int_equal(harness_td_start(e->h, extra), 0);
	int port = harness_listen_port(e->h, "api");
	assert_true(port > 0);
	snprintf(e->base, sizeof(e->base), "http://127.0.0.1:%d", port);
}

/* HGET td:triggers @id into @out (@cap bytes); returns its length or -1. */
static long stored_spec(struct harness *h, const char *id, char *out, size_t cap)
{
	redisReply *r = redisCommand(h->c, "HGET td:triggers %s", id);
	long n = -1;
	if (r && r->type == REDIS_REPLY_STRING && r->len <= cap) {
		memcpy(out, r->str, r->len);
		n = (long)r->len;
	}
	if (r)
		freeReplyObject(r);
	return n;
}

/* Store @spec (@len bytes) under @id behind triggerd's back. */
static void hset_raw(struct harness *h, const char *id, const char *spec, size_t len)
{
	redisReply *r = redisCommand(h->c, "HSET td:triggers %s %b", id, spec, len);
	assert_non_null(r);
	assert_int_equal(r->type, REDIS_REPLY_INTEGER);
	freeReplyObject(r);
}

/*
 * A valid stored spec for @to that triggerd never saw: the stored spec of
 * @from (created through the API) with its id swapped for @to, which must
 * be as long. The spec is a msgpack map whose id is a fixstr, so the swap
 * keeps it valid.
 */
static long forge_spec(struct harness *h, const char *from, const char *to, char *out,
		       size_t cap)
{
	size_t n = strlen(from);
	assert_int_equal(strlen(to), n);
	long len = stored_spec(h, from, out, cap);
	assert_true(len > 0);
	char *p = memmem(out, (size_t)len, from, n);
	assert_non_null(p);
	memcpy(p, to, n);
	return len;
}

static const char *rfc3339(int64_t ms, char *out, size_t len)
{
	time_t secs = (time_t)(ms / 1000);
	struct tm tm;
	gmtime_r(&secs, &tm);
	char day[40];
	strftime(day, sizeof(day), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out, len, "%s.%03d+00:00", day, (int)(ms % 1000));
	return out;
}

/* ---- 1: create, idempotent, fires once --------------------------------- */

static void create_is_idempotent_and_fires_once(void **state)
{
	struct env *e = *state;
	struct harness *h = e->h;
	struct resp r = {0};
	static const char spec[] = "{\"id\":\"t1\",\"kind\":\"timer\",\"args\":{\"after_ms\":400},"
				   "\"meta\":{\"dag\":\"d1\"}}";
	start(e, NULL);
	assert_int_equal(api(e, "POST", "/v1/triggers", spec, &r), 201);
	assert_string_equal(r.ctype, "application/json");
	expect_field(&r, "id", "\"t1\"");
	expect_field(&r, "created", "true");
	expect_field(&r, "status", "\"active\"");
	assert_int_equal(redis_int(h, "HEXISTS td:triggers t1"), 1);
	/* The same again, and the same id with other args: already active. */
	assert_int_equal(api(e, "POST", "/v1/triggers", spec, &r), 200);
	expect_field(&r, "id", "\"t1\"");
	expect_field(&r, "created", "false");
	assert_int_equal(api(e, "POST", "/v1/triggers",
			     "{\"id\":\"t1\",\"kind\":\"timer\",\"args\":{\"after_ms\":5}}", &r), 200);
	expect_field(&r, "created", "false");
	/* A trailing slash is the same collection. */
	assert_int_equal(api(e, "POST", "/v1/triggers/", spec, &r), 200);
	expect_field(&r, "created", "false");
	struct event ev[4];
	assert_int_equal(wait_events(h, ev, 1, 3000), 1);
	assert_string_equal(ev[0].id, "t1");
	assert_string_equal(ev[0].status, "success");
	assert_string_equal(ev[0].kind, "timer");
	assert_string_equal(ev[0].meta_json, "{\"dag\":\"d1\"}");
	assert_true(ev[0].fired_at_ms >= ev[0].due_at_ms);
	assert_int_equal(read_events(h, ev, 4, 600), 0); /* exactly once */
	assert_int_equal(redis_int(h, "HEXISTS td:triggers t1"), 0);
	assert_int_equal(api(e, "GET", "/v1/triggers/t1", NULL, &r), 404);
	resp_free(&r);
}

/* ---- 2: invalid specs --------------------------------------------------- */

struct bad_spec {
	const char *body;
	const char *field;       /* JSON text of "field" */
	const char *message;     /* substring of "message" */
};

static void invalid_specs_are_400_and_post_nothing(void **state)
{
	struct env *e = *state;
	struct harness *h = e->h;
	struct resp r = {0};
	static const struct bad_spec bad[] = {
		{"{\"id\":\"w\",\"kind\":\"timer\",\"args\":{\"after_ms\":\"soon\"}}",
		 "\"args.after_ms\"", "expected a non-negative integer"},
		{"{\"id\":\"nk\",\"args\":{\"after_ms\":1}}", "\"kind\"", "kind: required"},
		{"{\"id\":\"u\",\"kind\":\"sundial\",\"args\":{}}", "\"kind\"", "unknown kind 'sundial'"},
		{"{\"id\": }", "\"json\"", "json: offset"},
		{"", "\"json\"", "json: "},
		{"[1,2]", "\"spec\"", "spec: expected a map"},
		{"{\"kind\":\"timer\",\"args\":{\"after_ms\":1}}", "\"id\"", "id: required"},
		{"{\"id\":\"tt\",\"kind\":\"timer\",\"args\":{\"at_ms\":1,\"after_ms\":1}}", "\"args\"",
		 "give only one"},
		{"{\"id\":\"uf\",\"kind\":\"timer\",\"args\":{\"after_ms\":1},\"timeout\":5}",
		 "\"timeout\"", "unknown field"},
		{"{\"id\":\"q\",\"kind\":\"timer\",\"args\":{\"after_ms\":1},\"queue\":\"a b\"}",
		 "\"queue\"", "queue: expected"},
		{"{\"id\":\"cp\",\"classpath\":\"airflow.sensors.Nope\",\"kwargs\":{}}", "\"classpath\"",
		 "unsupported Airflow trigger"},
		{"{\"id\":\"mo\",\"classpath\":\"airflow.triggers.temporal.DateTimeTrigger\","
		 "\"kwargs\":{\"moment\":\"yesterday\"}}", "\"kwargs.moment\"", "ISO 8601"},
	};
	start(e, NULL);
	/* Neighbours that must be unaffected. */
	postf(e, 201, &r, "{\"id\":\"keep\",\"kind\":\"timer\",\"args\":{\"at_ms\":%lld}}",
	      (long long)now_ms() + 60000);
	postf(e, 201, &r, "{\"id\":\"good\",\"kind\":\"timer\",\"args\":{\"after_ms\":500}}");
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		api(e, "POST", "/v1/triggers", bad[i].body, &r);
		expect_error(&r, 400, "invalid_spec");
		expect_field(&r, "field", bad[i].field);
		if (!strstr(r.body.data, bad[i].message))
			fail_msg("'%s': '%s' lacks '%s'", bad[i].body, r.body.data, bad[i].message);
	}
	/* Not msgpack at all, sent as msgpack. */
	const char *mp[] = {"Content-Type: application/msgpack", NULL};
	api_h(e, "POST", "/v1/triggers", "\xc1", mp, &r);
	expect_error(&r, 400, "invalid_spec");
	expect_field(&r, "field", "\"spec\"");
	/* Only the good timer's event: no rejected event for HTTP. */
	struct event ev[4];
	assert_int_equal(wait_events(h, ev, 1, 3000), 1);
	assert_string_equal(ev[0].id, "good");
	assert_string_equal(ev[0].status, "success");
	assert_int_equal(read_events(h, ev, 4, 500), 0);
	assert_int_equal(redis_int(h, "XLEN td:events"), 1);
	assert_int_equal(redis_int(h, "HLEN td:triggers"), 1);
	assert_int_equal(redis_int(h, "HEXISTS td:triggers keep"), 1);
	assert_int_equal(api(e, "GET", "/v1/triggers/keep", NULL, &r), 200);
	expect_field(&r, "state", "\"active\"");
	resp_free(&r);
}

/* ---- 3: msgpack body ------------------------------------------------------ */

static void pk_str(msgpack_packer *pk, const char *s)
{
	msgpack_pack_str(pk, strlen(s));
	msgpack_pack_str_body(pk, s, strlen(s));
}

static void msgpack_body(void **state)
{
	struct env *e = *state;
	struct harness *h = e->h;
	struct resp r = {0};
	start(e, NULL);
	msgpack_sbuffer sb;
	msgpack_sbuffer_init(&sb);
	msgpack_packer pk;
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 4);
	pk_str(&pk, "id");
	pk_str(&pk, "mp1");
	pk_str(&pk, "kind");
	pk_str(&pk, "timer");
	pk_str(&pk, "args");
	msgpack_pack_map(&pk, 1);
	pk_str(&pk, "after_ms");
	msgpack_pack_uint32(&pk, 300);
	pk_str(&pk, "meta");
	msgpack_pack_map(&pk, 2);
	pk_str(&pk, "n");
	msgpack_pack_int64(&pk, -7);
	pk_str(&pk, "raw");
	msgpack_pack_bin(&pk, 3);
	msgpack_pack_bin_body(&pk, "\x00\x01\xff", 3);
	char url[128];
	snprintf(url, sizeof(url), "%s/v1/triggers", e->base);
	const char *hs[] = {"Content-Type: application/msgpack", NULL};
	assert_int_equal(http("POST", url, sb.data, sb.size, hs, &r), 201);
	expect_field(&r, "id", "\"mp1\"");
	expect_field(&r, "created", "true");
	/* The same bytes again: already active. */
	assert_int_equal(http("POST", url, sb.data, sb.size, hs, &r), 200);
	expect_field(&r, "created", "false");
	/* A msgpack body sent as JSON is not JSON. */
	assert_int_equal(http("POST", url, sb.data, sb.size, NULL, &r), 400);
	expect_field(&r, "field", "\"json\"");
	msgpack_sbuffer_destroy(&sb);
	struct event ev[2];
	assert_int_equal(wait_events(h, ev, 1, 3000), 1);
	assert_string_equal(ev[0].id, "mp1");
	assert_string_equal(ev[0].status, "success");
	assert_string_equal(ev[0].meta_json, "{\"n\":-7,\"raw\":{\"$bin\":\"AAH/\"}}");
	assert_int_equal(read_events(h, ev, 2, 300), 0);
	resp_free(&r);
}

/* ---- 4: Airflow DateTimeTrigger ----------------------------------------- */

static void airflow_datetime_trigger(void **state)
{
	struct env *e = *state;
	struct harness *h = e->h;
	struct resp r = {0};
	char moment[64];
	start(e, NULL);
	int64_t at = now_ms() + 500;
	postf(e, 201, &r, "{\"id\":\"af1\",\"classpath\":\"airflow.triggers.temporal.DateTimeTrigger\","
		  "\"kwargs\":{\"moment\":\"%s\",\"end_from_trigger\":false}}",
	      rfc3339(at, moment, sizeof(moment)));
	expect_field(&r, "created", "true");
	int64_t at2 = now_ms() + 700;
	postf(e, 201, &r, "{\"id\":\"af2\",\"classpath\":"
		  "\"airflow.providers.standard.triggers.temporal.DateTimeTrigger\","
		  "\"kwargs\":{\"moment\":{\"__type\":\"datetime\",\"__var\":%lld.%03d}}}",
	      (long long)(at2 / 1000), (int)(at2 % 1000));
	/* Stored and shown as the native timer it became. */
	assert_int_equal(api(e, "GET", "/v1/triggers/af1", NULL, &r), 200);
	expect_field(&r, "kind", "\"timer\"");
	expect_field(&r, "state", "\"active\"");
	struct event ev[3];
	assert_int_equal(wait_events(h, ev, 2, 3000), 2);
	for (int i = 0; i < 2; i++) {
		assert_string_equal(ev[i].status, "success");
		assert_string_equal(ev[i].kind, "timer");
		int64_t want = !strcmp(ev[i].id, "af1") ? at : at2;
		assert_true(!strcmp(ev[i].id, "af1") || !strcmp(ev[i].id, "af2"));
		assert_int_equal(ev[i].due_at_ms, want);
		assert_true(ev[i].fired_at_ms >= want);
		/* payload: the moment as Airflow serializes a datetime */
		assert_non_null(strstr(ev[i].payload_json, "\"__type\":\"datetime\""));
		const char *v = strstr(ev[i].payload_json, "\"__var\":");
		assert_non_null(v);
		double secs = strtod(v + 8, NULL);
		assert_true(secs > (double)want / 1000.0 - 0.001 && secs < (double)want / 1000.0 + 0.001);
	}
	assert_int_equal(read_events(h, ev, 3, 300), 0);
	resp_free(&r);
}

/* ---- 5: 409 and the identical stored spec --------------------------------- */

static void conflict_with_a_stored_spec(void **state)
{
	struct env *e = *state;
	struct harness *h = e->h;
	struct resp r = {0};
	char spec[4096], other[4096];
	start(e, NULL);
	int64_t far = now_ms() + 60000;
	postf(e, 201, &r, "{\"id\":\"src\",\"kind\":\"timer\",\"args\":{\"at_ms\":%lld}}",
	      (long long)far);
	long len = stored_spec(h, "src", spec, sizeof(spec));
	assert_true(len > 0);
	/* Someone else stores src's spec under "taken". */
	hset_raw(h, "taken", spec, (size_t)len);
	postf(e, 409, &r, "{\"id\":\"taken\",\"kind\":\"timer\",\"args\":{\"after_ms\":100}}");
	expect_error(&r, 409, "conflict");
	assert_non_null(strstr(r.body.data, "id: "));
	/* Redis is untouched, nothing is held or fired. */
	assert_int_equal(stored_spec(h, "taken", other, sizeof(other)), len);
	assert_memory_equal(other, spec, (size_t)len);
	assert_int_equal(api(e, "GET", "/v1/triggers/taken", NULL, &r), 200);
	expect_field(&r, "state", "\"stored\"");
	expect_field(&r, "held_here", "false");
	/* An identical spec stored already (result 2): 200, and held here now. */
	int64_t soon = now_ms() + 800;
	postf(e, 201, &r, "{\"id\":\"abc1\",\"kind\":\"timer\",\"args\":{\"at_ms\":%lld}}",
	      (long long)soon);
	len = forge_spec(h, "abc1", "abc2", spec, sizeof(spec));
	hset_raw(h, "abc2", spec, (size_t)len);
	postf(e, 200, &r, "{\"id\":\"abc2\",\"kind\":\"timer\",\"args\":{\"at_ms\":%lld}}",
	      (long long)soon);
	expect_field(&r, "created", "false");
	assert_int_equal(api(e, "GET", "/v1/triggers/abc2", NULL, &r), 200);
	expect_field(&r, "held_here", "true");
	expect_field(&r, "state", "\"active\"");
	struct event ev[4];
	assert_int_equal(wait_events(h, ev, 2, 3000), 2);
	for (int i = 0; i < 2; i++) {
		assert_string_equal(ev[i].status, "success");
		assert_true(!strcmp(ev[i].id, "abc1") || !strcmp(ev[i].id, "abc2"));
	}
	assert_string_not_equal(ev[0].id, ev[1].id);
	assert_int_equal(read_events(h, ev, 4, 300), 0);
	assert_int_equal(redis_int(h, "HEXISTS td:triggers taken"), 1);
	resp_free(&r);
}

/* ---- 6: GET one ------------------------------------------------------------ */

static void get_one(void **state)
{
	struct env *e = *state;
	struct resp r = {0};
	char want[512];
	start(e, NULL);
	int64_t far = now_ms() + 60000;
	postf(e, 201, &r, "{\"id\":\"a/b c\",\"kind\":\"timer\",\"args\":{\"at_ms\":%lld},"
		  "\"meta\":{\"k\":[1,\"x\"]},\"timeout_ms\":3600000}", (long long)far);
	expect_field(&r, "id", "\"a/b c\"");
	const char *paths[] = {"/v1/triggers/a%2Fb%20c", "/v1/triggers/a%2fb%20c",
			       "/v1/triggers/%61%2F%62%20%63"};
	for (int i = 0; i < 3; i++) {
		assert_int_equal(api(e, "GET", paths[i], NULL, &r), 200);
		expect_field(&r, "id", "\"a/b c\"");
		expect_field(&r, "state", "\"active\"");
		expect_field(&r, "kind", "\"timer\"");
		expect_field(&r, "held_here", "true");
		expect_field(&r, "repeat", "false");
	}
	struct jdoc d;
	const msgpack_object *sp = jget(jparse(&d, &r), "spec");
	assert_non_null(sp);
	expect_field(&r, "deadline_ms", jtext(jget(sp, "deadline_ms"), want, sizeof(want)));
	assert_string_equal(jtext(jget(sp, "id"), want, sizeof(want)), "\"a/b c\"");
	assert_string_equal(jtext(jget(sp, "kind"), want, sizeof(want)), "\"timer\"");
	assert_string_equal(jtext(jget(sp, "meta"), want, sizeof(want)), "{\"k\":[1,\"x\"]}");
	snprintf(want, sizeof(want), "{\"at_ms\":%lld}", (long long)far);
	char got[512];
	assert_string_equal(jtext(jget(sp, "args"), got, sizeof(got)), want);
	jfree(&d);
	/* The longest id there is, and one byte more. */
	char id[300], path[400];
	memset(id, 'i', 256);
	id[256] = '\0';
	postf(e, 201, &r, "{\"id\":\"%s\",\"kind\":\"timer\",\"args\":{\"at_ms\":%lld}}", id,
	      (long long)far);
	snprintf(path, sizeof(path), "/v1/triggers/%s", id);
	assert_int_equal(api(e, "GET", path, NULL, &r), 200);
	strcat(path, "i");
	api(e, "GET", path, NULL, &r);
	expect_error(&r, 400, "bad_id");
	api(e, "GET", "/v1/triggers/nope", NULL, &r);
	expect_error(&r, 404, "not_found");
	api(e, "GET", "/v1/triggers/a%2Fb", NULL, &r);
	expect_error(&r, 404, "not_found");
	api(e, "GET", "/v1/triggers/%zz", NULL, &r);
	expect_error(&r, 400, "bad_id");
	api(e, "GET", "/v1/triggers/ab%2", NULL, &r);
	expect_error(&r, 400, "bad_id");
	api(e, "DELETE", "/v1/triggers/%zz", NULL, &r);
	expect_error(&r, 400, "bad_id");
	resp_free(&r);
}

/* ---- 7: DELETE ------------------------------------------------------------- */

static void delete_held(void **state)
{
	struct env *e = *state;
	struct harness *h = e->h;
	struct resp r = {0};
	start(e, NULL);
	postf(e, 201, &r, "{\"id\":\"d1\",\"kind\":\"timer\",\"args\":{\"after_ms\":60000},"
		  "\"meta\":{\"m\":1}}");
	postf(e, 201, &r, "{\"id\":\"d2\",\"kind\":\"timer\",\"args\":{\"after_ms\":60000}}");
	assert_int_equal(api(e, "DELETE", "/v1/triggers/d1", NULL, &r), 200);
	expect_field(&r, "id", "\"d1\"");
	expect_field(&r, "status", "\"cancelled\"");
	/* Read your write: gone at once, from memory and from Redis. */
	api(e, "GET", "/v1/triggers/d1", NULL, &r);
	expect_error(&r, 404, "not_found");
	struct event ev[4];
	assert_int_equal(wait_events(h, ev, 1, 3000), 1);
	assert_string_equal(ev[0].id, "d1");
	assert_string_equal(ev[0].status, "cancelled");
	assert_string_equal(ev[0].kind, "timer");
	assert_string_equal(ev[0].meta_json, "{\"m\":1}");
	assert_int_equal(redis_int(h, "HEXISTS td:triggers d1"), 0);
	api(e, "GET", "/v1/triggers/d1", NULL, &r);
	expect_error(&r, 404, "not_found");
	api(e, "DELETE", "/v1/triggers/d1", NULL, &r);
	expect_error(&r, 404, "not_found");
	/* The neighbour is untouched. */
	assert_int_equal(api(e, "GET", "/v1/triggers/d2", NULL, &r), 200);
	assert_int_equal(redis_int(h, "HEXISTS td:triggers d2"), 1);
	assert_int_equal(read_events(h, ev, 4, 300), 0);
	resp_free(&r);
}

/* An id stored in Redis that this instance does not hold: 202, a cancel
 * goes through td:submit, and it ends as cancelled. */
static void delete_not_held(void **state)
{
	struct env *e = *state;
	struct harness *h = e->h;
	struct resp r = {0};
	char spec[4096];
	start(e, NULL);
	postf(e, 201, &r, "{\"id\":\"ex0\",\"kind\":\"timer\",\"args\":{\"after_ms\":60000}}");
	long len = forge_spec(h, "ex0", "ext", spec, sizeof(spec));
	hset_raw(h, "ext", spec, (size_t)len);
	assert_int_equal(api(e, "GET", "/v1/triggers/ext", NULL, &r), 200);
	expect_field(&r, "held_here", "false");
	/* Cancelled through the apply script from its stored spec (a
	 * stream cancel would reach any one instance, not the holder). */
	assert_int_equal(api(e, "DELETE", "/v1/triggers/ext", NULL, &r), 200);
	expect_field(&r, "id", "\"ext\"");
	expect_field(&r, "status", "\"cancelled\"");
	assert_int_equal(redis_int(h, "XLEN td:submit"), 0);
	struct event ev[2];
	assert_int_equal(wait_events(h, ev, 1, 3000), 1);
	assert_string_equal(ev[0].id, "ext");
	assert_string_equal(ev[0].status, "cancelled");
	/* Gone: a second DELETE finds nothing. */
	assert_int_equal(api(e, "DELETE", "/v1/triggers/ext", NULL, &r), 404);
	assert_int_equal(redis_int(h, "HEXISTS td:triggers ext"), 0);
	assert_int_equal(redis_int(h, "HEXISTS td:triggers ex0"), 1);
	resp_free(&r);
}

/* ---- 8: list and pages ------------------------------------------------------ */

/* Pages that held more entries than their limit (checked at the end, so
 * the other checks of a listing still run). */
static char over_limit[512];

/* GET @path; returns the page's ids appended to @seen (count @n), checks
 * "count" and the kind of every entry, writes next_cursor (or ""). */
static void list_page(struct env *e, const char *path, const char *kind, long limit,
		      long total, char (*seen)[16], int *n, int cap, char *cursor, size_t clen)
{
	struct resp r = {0};
	char t[64], want[32];
	if (api(e, "GET", path, NULL, &r) != 200)
		fail_msg("GET %s: %ld %s", path, r.status, r.body.data);
	struct jdoc d;
	const msgpack_object *root = jparse(&d, &r);
	const msgpack_object *arr = jget(root, "triggers");
	assert_non_null(arr);
	assert_int_equal(arr->type, MSGPACK_OBJECT_ARRAY);
	snprintf(want, sizeof(want), "%u", arr->via.array.size);
	assert_string_equal(jtext(jget(root, "count"), t, sizeof(t)), want);
	snprintf(want, sizeof(want), "%ld", total);
	assert_string_equal(jtext(jget(root, "total"), t, sizeof(t)), want);
	if ((long)arr->via.array.size > limit && !over_limit[0])
		snprintf(over_limit, sizeof(over_limit), "GET %s: %u entries on a page with limit %ld",
			 path, arr->via.array.size, limit);
	for (uint32_t i = 0; i < arr->via.array.size; i++) {
		const msgpack_object *it = &arr->via.array.ptr[i];
		const msgpack_object *id = jget(it, "id"), *k = jget(it, "kind");
		assert_non_null(id);
		assert_int_equal(id->type, MSGPACK_OBJECT_STR);
		assert_true(id->via.str.size < 16);
		assert_true(*n < cap);
		snprintf(seen[*n], 16, "%.*s", (int)id->via.str.size, id->via.str.ptr);
		(*n)++;
		if (kind)
			assert_string_equal(jtext(k, t, sizeof(t)), kind);
		assert_string_equal(jtext(jget(it, "state"), t, sizeof(t)), "\"active\"");
	}
	const msgpack_object *nc = jget(root, "next_cursor");
	cursor[0] = '\0';
	if (nc) {
		assert_int_equal(nc->type, MSGPACK_OBJECT_STR);
		assert_true(nc->via.str.size > 0 && nc->via.str.size < clen);
		snprintf(cursor, clen, "%.*s", (int)nc->via.str.size, nc->via.str.ptr);
	}
	jfree(&d);
	resp_free(&r);
}

static int cmp_id(const void *a, const void *b)
{
	return strcmp(a, b);
}

/* Every page followed to the end; returns how many ids, each once. */
static int list_all(struct env *e, const char *query, const char *kind, long limit, long total,
		    char (*seen)[16], int cap)
{
	char cursor[32] = "", path[256];
	int n = 0, pages = 0;
	do {
		snprintf(path, sizeof(path), "/v1/triggers?%s%s%s", query, cursor[0] ? "&cursor=" : "",
			 cursor);
		list_page(e, path, kind, limit, total, seen, &n, cap, cursor, sizeof(cursor));
		assert_true(++pages < 1000);
	} while (cursor[0]);
	qsort(seen, (size_t)n, sizeof(*seen), cmp_id);
	for (int i = 1; i < n; i++)
		if (!strcmp(seen[i - 1], seen[i]))
			fail_msg("%s: id %s listed twice", query, seen[i]);
	return n;
}

static void list_and_page(void **state)
{
	struct env *e = *state;
	struct resp r = {0};
	enum { NT = 50, NH = 5, NW = 3, CAP = 200 };
	static char seen[CAP][16];
	const char *args[] = {"--webhook-listen", "127.0.0.1:0", NULL};
	over_limit[0] = '\0';
	start(e, args);
	int64_t far = now_ms() + 600000;
	for (int i = 0; i < NT; i++)
		postf(e, 201, &r, "{\"id\":\"lt-%02d\",\"kind\":\"timer\",\"args\":{\"at_ms\":%lld}}", i,
		      (long long)far);
	for (int i = 0; i < NH; i++)
		postf(e, 201, &r, "{\"id\":\"lh-%d\",\"kind\":\"http\",\"args\":{\"url\":"
			  "\"http://127.0.0.1:1/x\",\"interval_ms\":86400000}}", i);
	for (int i = 0; i < NW; i++)
		postf(e, 201, &r, "{\"id\":\"lw-%d\",\"kind\":\"webhook\",\"args\":{\"path\":\"p/%d\"}}",
		      i, i);
	/* timers, 7 a page */
	assert_int_equal(list_all(e, "kind=timer&limit=7", "\"timer\"", 7, NT, seen, CAP), NT);
	for (int i = 0; i < NT; i++) {
		char want[16];
		snprintf(want, sizeof(want), "lt-%02d", i);
		assert_string_equal(seen[i], want);
	}
	/* everything, at the default limit and with small pages */
	assert_int_equal(list_all(e, "limit=1000", NULL, 1000, NT + NH + NW, seen, CAP),
			 NT + NH + NW);
	assert_int_equal(list_all(e, "", NULL, 100, NT + NH + NW, seen, CAP), NT + NH + NW);
	assert_int_equal(list_all(e, "limit=1", NULL, 1, NT + NH + NW, seen, CAP), NT + NH + NW);
	assert_int_equal(list_all(e, "kind=http", "\"http\"", 100, NH, seen, CAP), NH);
	assert_string_equal(seen[0], "lh-0");
	assert_int_equal(list_all(e, "limit=2&kind=webhook", "\"webhook\"", 2, NW, seen, CAP), NW);
	assert_string_equal(seen[NW - 1], "lw-2");
	/* bad queries */
	const char *badq[] = {"limit=0", "limit=1001", "limit=abc", "limit=", "limit=5x",
			      "limit=-1", "cursor=abc", "cursor=", "kind=sundial", "kind="};
	for (size_t i = 0; i < sizeof(badq) / sizeof(badq[0]); i++) {
		char path[64];
		snprintf(path, sizeof(path), "/v1/triggers?%s", badq[i]);
		api(e, "GET", path, NULL, &r);
		expect_error(&r, 400, "bad_query");
	}
	resp_free(&r);
	if (over_limit[0])
		fail_msg("%s", over_limit);
}

/* ---- 9: health and readiness ------------------------------------------------ */

static void health_and_readiness(void **state)
{
	struct env *e = *state;
	struct harness *h = e->h;
	struct resp r = {0};
	char v[64];
	start(e, NULL);
	assert_int_equal(api(e, "GET", "/healthz", NULL, &r), 200);
	expect_field(&r, "status", "\"ok\"");
	assert_int_equal(api(e, "GET", "/readyz", NULL, &r), 200);
	expect_field(&r, "status", "\"ready\"");
	assert_true(r.secs < 1.0);
	postf(e, 201, &r, "{\"id\":\"held\",\"kind\":\"timer\",\"args\":{\"after_ms\":60000}}");
	harness_redis_kill(h);
	int64_t t0 = now_ms();
	while (api(e, "GET", "/readyz", NULL, &r) == 200 && now_ms() - t0 < 1000) {
		assert_true(r.secs < 1.0);
		sleep_ms(20);
	}
	expect_error(&r, 503, "not_ready");
	assert_true(r.secs < 1.0);
	assert_true(now_ms() - t0 < 1000);
	assert_int_equal(api(e, "GET", "/healthz", NULL, &r), 200);
	/* Writes wait for Redis; what is held here can still be read. */
	api(e, "POST", "/v1/triggers", "{\"id\":\"x\",\"kind\":\"timer\",\"args\":{\"after_ms\":1}}",
	    &r);
	expect_error(&r, 503, "not_ready");
	assert_non_null(resp_header(&r, "retry-after", v, sizeof(v)));
	assert_string_equal(v, "1");
	assert_int_equal(api(e, "GET", "/v1/triggers/held", NULL, &r), 200);
	api(e, "GET", "/v1/triggers/elsewhere", NULL, &r);
	expect_error(&r, 503, "redis_unavailable");
	/* Redis back (empty): ready again. */
	assert_int_equal(harness_redis_start(h, false), 0);
	t0 = now_ms();
	while (api(e, "GET", "/readyz", NULL, &r) != 200 && now_ms() - t0 < 8000) {
		assert_true(r.secs < 1.0);
		sleep_ms(50);
	}
	assert_int_equal(r.status, 200);
	postf(e, 201, &r, "{\"id\":\"y\",\"kind\":\"timer\",\"args\":{\"after_ms\":60000}}");
	resp_free(&r);
}

/* ---- 10: /metrics --------------------------------------------------------- */

static bool is_name_char(char c, bool first)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
	       (!first && c >= '0' && c <= '9');
}

/*
 * Check @text against the exposition format 0.0.4: "# HELP name text",
 * "# TYPE name type", and samples `name{label="value",...} value` whose
 * family was TYPEd before.
 */
static void check_exposition(const char *text)
{
	char typed[64][96];
	int ntyped = 0, samples = 0;
	size_t tl = strlen(text);
	assert_true(tl > 0 && text[tl - 1] == '\n');
	for (const char *line = text; *line;) {
		const char *eol = strchr(line, '\n');
		char l[1024];
		snprintf(l, sizeof(l), "%.*s", (int)(eol - line), line);
		line = eol + 1;
		if (l[0] == '#') {
			char name[96], what[32];
			if (sscanf(l, "# TYPE %95s %31s", name, what) == 2) {
				assert_true(!strcmp(what, "counter") || !strcmp(what, "gauge") ||
					    !strcmp(what, "histogram") || !strcmp(what, "summary") ||
					    !strcmp(what, "untyped"));
				assert_true(ntyped < 64);
				snprintf(typed[ntyped++], 96, "%s", name);
			} else if (strncmp(l, "# HELP ", 7) != 0) {
				fail_msg("bad comment line: '%s'", l);
			}
			continue;
		}
		const char *p = l;
		if (!is_name_char(*p, true))
			fail_msg("bad metric name: '%s'", l);
		while (is_name_char(*p, false))
			p++;
		char name[96];
		snprintf(name, sizeof(name), "%.*s", (int)(p - l), l);
		if (*p == '{') {
			p++;
			while (*p != '}') {
				if (!is_name_char(*p, true) || *p == ':')
					fail_msg("bad label name: '%s'", l);
				while (is_name_char(*p, false) && *p != ':')
					p++;
				if (p[0] != '=' || p[1] != '"')
					fail_msg("bad label: '%s'", l);
				p += 2;
				while (*p && *p != '"') {
					if (*p == '\\') {
						if (p[1] != '\\' && p[1] != '"' && p[1] != 'n')
							fail_msg("bad escape: '%s'", l);
						p++;
					}
					p++;
				}
				if (*p != '"')
					fail_msg("unterminated label value: '%s'", l);
				p++;
				if (*p == ',')
					p++;
				else if (*p != '}')
					fail_msg("bad label list: '%s'", l);
			}
			p++;
		}
		if (*p != ' ')
			fail_msg("no space before the value: '%s'", l);
		p++;
		char *end;
		(void)strtod(p, &end);
		if (end == p || *end)
			fail_msg("bad value: '%s'", l);
		bool family = false;
		static const char *const suffixes[] = {"", "_bucket", "_sum", "_count"};
		for (int i = 0; i < ntyped && !family; i++)
			for (int j = 0; j < 4 && !family; j++) {
				size_t n = strlen(typed[i]);
				family = strncmp(name, typed[i], n) == 0 &&
					 strcmp(name + n, suffixes[j]) == 0;
			}
		if (!family)
			fail_msg("sample before its # TYPE: '%s'", l);
		samples++;
	}
	assert_true(samples > 10);
}

/* The value of series @series (name plus labels, exact) in @text, or -1. */
static double metric(const char *text, const char *series)
{
	size_t n = strlen(series);
	for (const char *p = text; (p = strstr(p, series)); p += n)
		if ((p == text || p[-1] == '\n') && p[n] == ' ')
			return strtod(p + n + 1, NULL);
	return -1;
}

static void metrics_endpoint(void **state)
{
	struct env *e = *state;
	struct harness *h = e->h;
	struct resp r = {0};
	start(e, NULL);
	assert_int_equal(api(e, "GET", "/healthz", NULL, &r), 200);
	for (int i = 0; i < 3; i++)
		postf(e, 201, &r, "{\"id\":\"m%d\",\"kind\":\"timer\",\"args\":{\"after_ms\":%d}}", i,
		      100 + 100 * i);
	postf(e, 201, &r, "{\"id\":\"far\",\"kind\":\"timer\",\"args\":{\"after_ms\":60000}}");
	postf(e, 201, &r, "{\"id\":\"hp\",\"kind\":\"http\",\"args\":{\"url\":\"http://127.0.0.1:1/\","
		  "\"interval_ms\":86400000}}");
	postf(e, 400, &r, "{\"id\":\"bad\"}");
	postf(e, 400, &r, "{");
	assert_int_equal(api(e, "GET", "/nope", NULL, &r), 404);
	struct event ev[4];
	assert_int_equal(wait_events(h, ev, 3, 3000), 3);
	sleep_ms(100); /* the posts' replies are in */
	assert_int_equal(api(e, "GET", "/metrics", NULL, &r), 200);
	assert_int_equal(api(e, "GET", "/metrics", NULL, &r), 200);
	if (strncmp(r.ctype, "text/plain", 10) != 0)
		fail_msg("content type '%s'", r.ctype);
	check_exposition(r.body.data);
	const char *m = r.body.data;
	assert_true(metric(m, "triggerd_triggers{kind=\"timer\"}") == 1);
	assert_true(metric(m, "triggerd_triggers{kind=\"http\"}") == 1);
	assert_true(metric(m, "triggerd_triggers{kind=\"webhook\"}") == 0);
	assert_true(metric(m, "triggerd_events_total{status=\"success\"}") == 3);
	assert_true(metric(m, "triggerd_events_total{status=\"rejected\"}") == 0);
	assert_true(metric(m, "triggerd_events_posted_total") == 3);
	assert_true(metric(m, "triggerd_fire_lateness_seconds_bucket{le=\"+Inf\"}") == 3);
	assert_true(metric(m, "triggerd_fire_lateness_seconds_count") == 3);
	assert_true(metric(m, "triggerd_fire_lateness_seconds_sum") >= 0);
	/* buckets are cumulative */
	double prev = 0;
	static const char *const le[] = {"0.001", "0.002", "0.005", "0.01", "0.025", "0.05", "0.1",
					 "0.25", "0.5", "1", "2.5", "10", "+Inf"};
	for (size_t i = 0; i < sizeof(le) / sizeof(le[0]); i++) {
		char series[96];
		snprintf(series, sizeof(series), "triggerd_fire_lateness_seconds_bucket{le=\"%s\"}", le[i]);
		double v = metric(m, series);
		if (v < prev)
			fail_msg("%s: %g after %g", series, v, prev);
		prev = v;
	}
	assert_true(metric(m, "triggerd_redis_write_backlog") == 0);
	assert_true(metric(m, "triggerd_redis_write_backlog_limit") > 0);
	assert_true(metric(m, "triggerd_redis_up{conn=\"writer\"}") == 1);
	assert_true(metric(m, "triggerd_http_requests_total{listener=\"api\",code=\"201\"}") == 5);
	assert_true(metric(m, "triggerd_http_requests_total{listener=\"api\",code=\"400\"}") == 2);
	assert_true(metric(m, "triggerd_http_requests_total{listener=\"api\",code=\"404\"}") == 1);
	/* /healthz and the first /metrics; this one is counted once answered */
	assert_true(metric(m, "triggerd_http_requests_total{listener=\"api\",code=\"200\"}") == 2);
	assert_true(metric(m, "triggerd_http_connections{listener=\"api\"}") >= 1);
	api(e, "POST", "/metrics", "", &r);
	expect_error(&r, 405, "method_not_allowed");
	resp_free(&r);
}

/* ---- 11: bearer token --------------------------------------------------------- */

static void check_token(struct env *e)
{
	struct resp r = {0};
	char v[128];
	static const char spec[] = "{\"id\":\"s1\",\"kind\":\"timer\",\"args\":{\"after_ms\":60000}}";
	api(e, "POST", "/v1/triggers", spec, &r);
	expect_error(&r, 401, "unauthorized");
	assert_non_null(resp_header(&r, "www-authenticate", v, sizeof(v)));
	assert_int_equal(strncmp(v, "Bearer", 6), 0);
	const char *wrong[][2] = {
		{"Authorization: Bearer 0123456789abcdef0124", NULL},   /* same length */
		{"Authorization: Bearer 0123456789abcdef012", NULL},    /* a prefix */
		{"Authorization: Bearer 0123456789abcdef01234", NULL},  /* longer */
		{"Authorization: Basic " TOKEN, NULL},
		{"Authorization: " TOKEN, NULL},
		{"Authorization: Bearer", NULL},
	};
	for (size_t i = 0; i < sizeof(wrong) / sizeof(wrong[0]); i++) {
		api_h(e, "POST", "/v1/triggers", spec, wrong[i], &r);
		expect_error(&r, 401, "unauthorized");
	}
	assert_int_equal(redis_int(e->h, "HLEN td:triggers"), 0);
	const char *right[] = {"Authorization: Bearer " TOKEN, NULL};
	assert_int_equal(api_h(e, "POST", "/v1/triggers", spec, right, &r), 201);
	assert_int_equal(api_h(e, "GET", "/v1/triggers/s1", NULL, right, &r), 200);
	api(e, "GET", "/v1/triggers/s1", NULL, &r);
	expect_error(&r, 401, "unauthorized");
	api(e, "GET", "/v1/triggers", NULL, &r);
	expect_error(&r, 401, "unauthorized");
	api(e, "DELETE", "/v1/triggers/s1", NULL, &r);
	expect_error(&r, 401, "unauthorized");
	/* probes stay open; /metrics does not */
	assert_int_equal(api(e, "GET", "/healthz", NULL, &r), 200);
	assert_int_equal(api(e, "GET", "/readyz", NULL, &r), 200);
	api(e, "GET", "/metrics", NULL, &r);
	expect_error(&r, 401, "unauthorized");
	assert_int_equal(api_h(e, "GET", "/metrics", NULL, right, &r), 200);
	assert_true(metric(r.body.data, "triggerd_http_requests_total{listener=\"api\",code=\"401\"}") >= 10);
	assert_int_equal(api_h(e, "DELETE", "/v1/triggers/s1", NULL, right, &r), 200);
	resp_free(&r);
}

static void bearer_token(void **state)
{
	struct env *e = *state;
	const char *args[] = {"--api-token", TOKEN, NULL};
	start(e, args);
	check_token(e);
	assert_int_equal(harness_td_stop(e->h, SIGTERM), 0);
	/* The same from the environment. */
	redis_int(e->h, "DEL td:triggers td:events");
	setenv("TRIGGERD_API_TOKEN", TOKEN, 1);
	start(e, NULL);
	unsetenv("TRIGGERD_API_TOKEN");
	check_token(e);
}

/* ---- 12: errors and methods ------------------------------------------------------ */

static void errors_and_methods(void **state)
{
	struct env *e = *state;
	struct resp r = {0};
	char v[64];
	start(e, NULL);
	const char *unknown[] = {"/", "/v2/triggers", "/v1/triggersx", "/v1", "/healthz/x",
				 "/metricsx"};
	for (size_t i = 0; i < sizeof(unknown) / sizeof(unknown[0]); i++) {
		api(e, "GET", unknown[i], NULL, &r);
		expect_error(&r, 404, "not_found");
	}
	const struct {
		const char *method, *path, *allow;
	} wrong[] = {
		{"PUT", "/v1/triggers", "GET, POST"},
		{"DELETE", "/v1/triggers", "GET, POST"},
		{"POST", "/healthz", "GET"},
		{"DELETE", "/readyz", "GET"},
		{"PUT", "/metrics", "GET"},
		{"PATCH", "/v1/triggers/x", "GET, DELETE"},
		{"POST", "/v1/triggers/x", "GET, DELETE"},
	};
	for (size_t i = 0; i < sizeof(wrong) / sizeof(wrong[0]); i++) {
		api(e, wrong[i].method, wrong[i].path, strcmp(wrong[i].method, "DELETE") ? "{}" : NULL,
		    &r);
		expect_error(&r, 405, "method_not_allowed");
		if (!resp_header(&r, "allow", v, sizeof(v)))
			fail_msg("%s %s: no Allow header", wrong[i].method, wrong[i].path);
		assert_string_equal(v, wrong[i].allow);
	}
	/* A large body (curl sends Expect: 100-continue) is taken at once. */
	char *big = malloc(20000);
	int n = snprintf(big, 20000, "{\"id\":\"big\",\"kind\":\"timer\",\"args\":{\"after_ms\":60000},"
			 "\"meta\":{\"x\":\"");
	memset(big + n, 'm', 10000);
	strcpy(big + n + 10000, "\"}}");
	assert_int_equal(api(e, "POST", "/v1/triggers", big, &r), 201);
	assert_true(r.secs < 0.9);
	free(big);
	/* The listener still serves after all of that. */
	assert_int_equal(api(e, "GET", "/v1/triggers/big", NULL, &r), 200);
	resp_free(&r);
}

/* ---- pipelining and clients that leave ------------------------------------------ */

static int raw_connect(struct env *e)
{
	struct sockaddr_in sa = {.sin_family = AF_INET};
	sa.sin_port = htons((uint16_t)atoi(strrchr(e->base, ':') + 1));
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(fd >= 0);
	struct timeval tv = {3, 0};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	return fd;
}

static void raw_send(int fd, const char *s)
{
	size_t n = strlen(s);
	assert_int_equal(send(fd, s, n, MSG_NOSIGNAL), (ssize_t)n);
}

/* Read @n responses (each with a Content-Length) from @fd; their status
 * codes into @status, their bodies concatenated into @bodies. */
static void raw_read(int fd, int n, int *status, struct td_buf *bodies)
{
	struct td_buf in = TD_BUF_INIT;
	size_t off = 0;
	for (int got = 0; got < n;) {
		char *end = in.data ? strstr(in.data + off, "\r\n\r\n") : NULL;
		const char *cl = end ? strcasestr(in.data + off, "\r\nContent-Length:") : NULL;
		if (end && cl && cl < end) {
			size_t blen = strtoul(cl + 17, NULL, 10);
			size_t head = (size_t)(end + 4 - in.data);
			if (in.len >= head + blen) {
				assert_int_equal(sscanf(in.data + off, "HTTP/1.1 %d", &status[got]), 1);
				td_buf_append(bodies, in.data + head, blen);
				td_buf_append(bodies, "\n", 1);
				off = head + blen;
				got++;
				continue;
			}
		}
		char buf[4096];
		ssize_t r = recv(fd, buf, sizeof(buf), 0);
		if (r <= 0)
			fail_msg("connection ended after %d of %d responses: '%s'", got, n,
				 in.data ? in.data : "");
		td_buf_append(&in, buf, (size_t)r);
	}
	td_buf_finish(&in);
}

static void pipelined_and_abandoned(void **state)
{
	struct env *e = *state;
	struct harness *h = e->h;
	struct resp r = {0};
	char spec[4096], req[1024];
	start(e, NULL);
	/* A POST that waits for Redis, then two that are answered at once:
	 * the answers come in request order, the GET sees the POST's trigger. */
	static const char body[] = "{\"id\":\"pp\",\"kind\":\"timer\",\"args\":{\"after_ms\":60000}}";
	snprintf(req, sizeof(req),
		 "POST /v1/triggers HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
		 "Content-Length: %zu\r\n\r\n%s"
		 "GET /v1/triggers/pp HTTP/1.1\r\nHost: t\r\n\r\n"
		 "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n", strlen(body), body);
	int fd = raw_connect(e);
	raw_send(fd, req);
	int status[3];
	struct td_buf bodies = TD_BUF_INIT;
	raw_read(fd, 3, status, &bodies);
	close(fd);
	assert_int_equal(status[0], 201);
	assert_int_equal(status[1], 200);
	assert_int_equal(status[2], 200);
	assert_non_null(strstr(bodies.data, "\"created\":true"));
	assert_non_null(strstr(bodies.data, "\"state\":\"active\""));
	assert_non_null(strstr(bodies.data, "{\"status\":\"ok\"}"));
	td_buf_finish(&bodies);
	/* Clients that leave before their answer (which waits for Redis):
	 * a create, a GET and a DELETE of an id this instance does not hold. */
	long len = forge_spec(h, "pp", "px", spec, sizeof(spec));
	hset_raw(h, "px", spec, (size_t)len);
	static const char body2[] = "{\"id\":\"gone\",\"kind\":\"timer\",\"args\":{\"after_ms\":60000}}";
	snprintf(req, sizeof(req), "POST /v1/triggers HTTP/1.1\r\nHost: t\r\n"
		 "Content-Length: %zu\r\n\r\n%s", strlen(body2), body2);
	const char *leave[] = {req, "GET /v1/triggers/px HTTP/1.1\r\nHost: t\r\n\r\n",
			       "DELETE /v1/triggers/px HTTP/1.1\r\nHost: t\r\n\r\n"};
	for (int round = 0; round < 20; round++)
		for (int i = 0; i < 3; i++) {
			fd = raw_connect(e);
			raw_send(fd, leave[i]);
			close(fd);
		}
	assert_int_equal(api(e, "GET", "/healthz", NULL, &r), 200);
	/* Every abandoned connection is closed once answered; ours stays. */
	double conns = -1;
	for (int64_t t0 = now_ms(); now_ms() - t0 < 3000; sleep_ms(50)) {
		assert_int_equal(api(e, "GET", "/metrics", NULL, &r), 200);
		conns = metric(r.body.data, "triggerd_http_connections{listener=\"api\"}");
		if (conns == 1)
			break;
	}
	assert_true(conns == 1);
	assert_int_equal(api(e, "GET", "/v1/triggers/gone", NULL, &r), 200);
	expect_field(&r, "held_here", "true");
	assert_int_equal(redis_int(h, "HEXISTS td:triggers gone"), 1);
	resp_free(&r);
}

/*
 * A second POST of an id whose first POST is still being stored must not
 * be told "active" before the store's outcome is known: here the first
 * one conflicts with a spec stored by someone else (409), and the second
 * must not get a 2xx. Redis is paused so both arrive mid-store.
 */
static void concurrent_create_waits_for_the_store(void **state)
{
	struct env *e = *state;
	struct harness *h = e->h;
	struct resp r = {0};
	char spec[4096], req[512];
	start(e, NULL);
	postf(e, 201, &r, "{\"id\":\"c0\",\"kind\":\"timer\",\"args\":{\"after_ms\":600000}}");
	long len = forge_spec(h, "c0", "cc", spec, sizeof(spec));
	hset_raw(h, "cc", spec, (size_t)len);
	static const char body[] = "{\"id\":\"cc\",\"kind\":\"timer\",\"args\":{\"after_ms\":100}}";
	snprintf(req, sizeof(req), "POST /v1/triggers HTTP/1.1\r\nHost: t\r\n"
		 "Content-Length: %zu\r\n\r\n%s", strlen(body), body);
	redisReply *rr = redisCommand(h->c, "CLIENT PAUSE 600 ALL");
	assert_non_null(rr);
	assert_int_equal(rr->type, REDIS_REPLY_STATUS);
	freeReplyObject(rr);
	int a = raw_connect(e);
	raw_send(a, req);
	sleep_ms(100);
	/* Held here while its store is in flight. */
	assert_int_equal(api(e, "GET", "/v1/triggers/cc", NULL, &r), 200);
	expect_field(&r, "state", "\"storing\"");
	int b = raw_connect(e);
	raw_send(b, req);
	int sa, sb;
	struct td_buf ba = TD_BUF_INIT, bb = TD_BUF_INIT;
	raw_read(a, 1, &sa, &ba);
	raw_read(b, 1, &sb, &bb);
	close(a);
	close(b);
	assert_int_equal(sa, 409);
	assert_non_null(strstr(ba.data, "\"error\":\"conflict\""));
	assert_int_equal(api(e, "GET", "/v1/triggers/cc", NULL, &r), 200);
	expect_field(&r, "held_here", "false");
	/* 409 (after waiting for the store) or 503 "retry" would be right. */
	if (sb < 300)
		fail_msg("the second POST of 'cc' got %d %s while the first got 409: it was "
			 "answered before the first's store returned", sb, bb.data);
	td_buf_finish(&ba);
	td_buf_finish(&bb);
	resp_free(&r);
}

/*
 * A response to HEAD has no content, whatever its Content-Length says
 * (RFC 9112, 6.3): the next response on the connection must start right
 * after the head. /healthz answers HEAD with 405 (GET only).
 */
static void head_answers_have_no_body(void **state)
{
	struct env *e = *state;
	start(e, NULL);
	static const char *const heads[] = {"/healthz", "/nope", "/v1/triggers"};
	for (size_t i = 0; i < sizeof(heads) / sizeof(heads[0]); i++) {
		char req[256];
		snprintf(req, sizeof(req), "HEAD %s HTTP/1.1\r\nHost: t\r\n\r\n"
			 "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n", heads[i]);
		int fd = raw_connect(e);
		raw_send(fd, req);
		struct td_buf in = TD_BUF_INIT;
		char *end = NULL;
		/* Everything the server sends within a moment. */
		struct timeval tv = {0, 300000};
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		for (;;) {
			char buf[4096];
			ssize_t n = recv(fd, buf, sizeof(buf), 0);
			if (n <= 0)
				break;
			td_buf_append(&in, buf, (size_t)n);
		}
		close(fd);
		assert_non_null(in.data);
		end = strstr(in.data, "\r\n\r\n");
		assert_non_null(end);
		if (strncmp(end + 4, "HTTP/1.1 200 ", 13) != 0)
			fail_msg("HEAD %s: the answer carries a body; the next response reads "
				 "'%.80s'", heads[i], end + 4);
		td_buf_finish(&in);
	}
}

/* ---- 13: loopback ------------------------------------------------------------------ */

static void listens_on_loopback_only(void **state)
{
	struct env *e = *state;
	struct resp r = {0};
	start(e, NULL);
	assert_true(log_contains(e->h, "\"listening\",\"listener\":\"api\",\"addr\":\"127.0.0.1:"));
	/* Bound to that address, not to every one: 127.0.0.2 is loopback too,
	 * but nothing listens there. */
	char url[128];
	snprintf(url, sizeof(url), "http://127.0.0.2:%s/healthz", strrchr(e->base, ':') + 1);
	assert_int_equal(http("GET", url, NULL, 0, NULL, &r), -1);
	assert_int_equal(api(e, "GET", "/healthz", NULL, &r), 200);
	resp_free(&r);
}

static int group_setup(void **state)
{
	(void)state;
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		return -1;
	curl = curl_easy_init();
	return curl ? 0 : -1;
}

static int group_teardown(void **state)
{
	(void)state;
	curl_easy_cleanup(curl);
	curl_global_cleanup();
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(create_is_idempotent_and_fires_once, setup, teardown),
		cmocka_unit_test_setup_teardown(invalid_specs_are_400_and_post_nothing, setup, teardown),
		cmocka_unit_test_setup_teardown(msgpack_body, setup, teardown),
		cmocka_unit_test_setup_teardown(airflow_datetime_trigger, setup, teardown),
		cmocka_unit_test_setup_teardown(conflict_with_a_stored_spec, setup, teardown),
		cmocka_unit_test_setup_teardown(get_one, setup, teardown),
		cmocka_unit_test_setup_teardown(delete_held, setup, teardown),
		cmocka_unit_test_setup_teardown(delete_not_held, setup, teardown),
		cmocka_unit_test_setup_teardown(list_and_page, setup, teardown),
		cmocka_unit_test_setup_teardown(health_and_readiness, setup, teardown),
		cmocka_unit_test_setup_teardown(metrics_endpoint, setup, teardown),
		cmocka_unit_test_setup_teardown(bearer_token, setup, teardown),
		cmocka_unit_test_setup_teardown(errors_and_methods, setup, teardown),
		cmocka_unit_test_setup_teardown(pipelined_and_abandoned, setup, teardown),
		cmocka_unit_test_setup_teardown(concurrent_create_waits_for_the_store, setup, teardown),
		cmocka_unit_test_setup_teardown(head_answers_have_no_body, setup, teardown),
		cmocka_unit_test_setup_teardown(listens_on_loopback_only, setup, teardown),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
