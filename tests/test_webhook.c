/*
 * The webhook listener end to end: a real redis-server, the real triggerd
 * with --webhook-listen on a free loopback port, and real HTTP clients
 * (libcurl, and raw sockets where the test needs to control the bytes:
 * pipelining, slow clients, oversized requests).
 */
#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/hmac.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "harness.h"

#define SECRET "it-is-a-secret"

struct resp {
	long status;
	char body[2048];
	size_t len;
	char headers[2048];
	size_t hlen;
};

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
	struct resp *r = arg;
	size_t k = size * n, room = sizeof(r->body) - 1 - r->len;
	memcpy(r->body + r->len, p, k < room ? k : room);
	r->len += k < room ? k : room;
	r->body[r->len] = '\0';
	return size * n;
}

static size_t on_header(char *p, size_t size, size_t n, void *arg)
{
	struct resp *r = arg;
	size_t k = size * n, room = sizeof(r->headers) - 1 - r->hlen;
	memcpy(r->headers + r->hlen, p, k < room ? k : room);
	r->hlen += k < room ? k : room;
	r->headers[r->hlen] = '\0';
	return size * n;
}

/* One request with @curl (reused: keep-alive). @hdrs NULL-terminated. */
static long request(CURL *curl, const char *method, int port, const char *path,
		    const char *body, const char *const *hdrs, struct resp *r)
{
	char url[512];
	snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port, path);
	memset(r, 0, sizeof(*r));
	struct curl_slist *sl = NULL;
	for (int i = 0; hdrs && hdrs[i]; i++)
		sl = curl_slist_append(sl, hdrs[i]);
	sl = curl_slist_append(sl, "Expect:"); /* no 100-continue unless asked */
	curl_easy_setopt(curl, CURLOPT_URL, url);
	curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(curl, CURLOPT_HTTPHEADER, sl);
	if (body) {
		curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
	} else {
		curl_easy_setopt(curl, CURLOPT_POSTFIELDS, NULL);
		curl_easy_setopt(curl, CURLOPT_HTTPGET, 1L);
		curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
	}
	curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(curl, CURLOPT_WRITEDATA, r);
	curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(curl, CURLOPT_HEADERDATA, r);
	curl_easy_setopt(curl, CURLOPT_TIMEOUT, 10L);
	CURLcode rc = curl_easy_perform(curl);
	curl_slist_free_all(sl);
	if (rc != CURLE_OK) {
		fprintf(stderr, "curl: %s\n", curl_easy_strerror(rc));
		return -1;
	}
	curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &r->status);
	return r->status;
}

static long post(int port, const char *path, const char *body, const char *const *hdrs,
		 struct resp *r)
{
	CURL *c = curl_easy_init();
	long s = request(c, "POST", port, path, body, hdrs, r);
	curl_easy_cleanup(c);
	return s;
}

static int start(struct harness *h, const char *const *extra)
{
	const char *args[24] = {"--webhook-listen", "127.0.0.1:0"};
	int n = 2;
	for (int i = 0; extra && extra[i] && n < 22; i++)
		args[n++] = extra[i];
	args[n] = NULL;
	setenv("AIRFLOW_CONN_HOOKSECRET", "{\"conn_type\":\"generic\",\"password\":\"" SECRET "\"}", 1);
	setenv("AIRFLOW_CONN_STDSECRET",
	       "{\"conn_type\":\"generic\",\"password\":\"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"}", 1);
	if (harness_td_start(h, args) != 0)
		return -1;
	return harness_listen_port(h, "webhook");
}

static void wait_stored(struct harness *h, const char *id)
{
	for (int i = 0; i < 200; i++) {
		if (redis_int(h, "HEXISTS td:triggers %s", id) == 1) {
			sleep_ms(20); /* stored answer reaches triggerd, it arms */
			return;
		}
		sleep_ms(10);
	}
	fail_msg("trigger %s never stored", id);
}

static void submit_wait(struct harness *h, const char *json, const char *id)
{
	assert_int_equal(submit_json(h, json), 0);
	wait_stored(h, id);
}

static void hmac_hex(const char *key, size_t klen, const char *msg, size_t mlen, char *hex)
{
	unsigned char mac[32];
	unsigned int ml = 0;
	HMAC(EVP_sha256(), key, (int)klen, (const unsigned char *)msg, mlen, mac, &ml);
	for (unsigned i = 0; i < ml; i++)
		sprintf(hex + 2 * i, "%02x", mac[i]);
}

/* ---- firing ------------------------------------------------------------ */

static void fires_once_with_payload(void **state)
{
	struct harness *h = *state;
	int port = start(h, NULL);
	assert_true(port > 0);
	submit_wait(h, "{\"id\":\"w1\",\"kind\":\"webhook\",\"meta\":{\"task\":7},"
		       "\"args\":{\"path\":\"ci/build\",\"headers\":[\"X-Custom\"]}}", "w1");
	struct resp r;
	const char *hdrs[] = {"Content-Type: application/json", "X-Custom: yes",
			      "X-Other: no", NULL};
	assert_int_equal(post(port, "/hooks/ci/build", "{\"result\":\"green\",\"n\":3}", hdrs, &r), 202);
	assert_non_null(strstr(r.body, "\"fired\":1"));
	struct event ev[2];
	assert_int_equal(wait_events(h, ev, 1, 5000), 1);
	assert_string_equal(ev[0].id, "w1");
	assert_string_equal(ev[0].status, "success");
	assert_string_equal(ev[0].kind, "webhook");
	assert_non_null(strstr(ev[0].payload_json, "\"body\":{\"result\":\"green\",\"n\":3}"));
	assert_non_null(strstr(ev[0].payload_json, "\"path\":\"ci/build\""));
	assert_non_null(strstr(ev[0].payload_json, "\"x-custom\":\"yes\""));
	assert_non_null(strstr(ev[0].payload_json, "\"content-type\":\"application/json\""));
	assert_null(strstr(ev[0].payload_json, "x-other"));
	assert_non_null(strstr(ev[0].meta_json, "\"task\":7"));
	/* One-shot: gone, so the next delivery finds nothing waiting. */
	assert_int_equal(post(port, "/hooks/ci/build", "{}", NULL, &r), 404);
	assert_non_null(strstr(r.body, "\"error\":\"no_waiter\""));
	assert_int_equal(redis_int(h, "HEXISTS td:triggers w1"), 0);
	assert_int_equal(read_events(h, ev, 2, 300), 0);
}

static void text_body_and_filter(void **state)
{
	struct harness *h = *state;
	int port = start(h, NULL);
	submit_wait(h, "{\"id\":\"f1\",\"kind\":\"webhook\",\"args\":{\"path\":\"gh\","
		       "\"filter\":{\"pointer\":\"/pull_request/state\",\"equals\":\"closed\"}}}", "f1");
	submit_wait(h, "{\"id\":\"f2\",\"kind\":\"webhook\",\"args\":{\"path\":\"txt\"}}", "f2");
	struct resp r;
	assert_int_equal(post(port, "/hooks/gh", "{\"pull_request\":{\"state\":\"open\"}}", NULL, &r), 202);
	assert_non_null(strstr(r.body, "\"fired\":0"));
	assert_int_equal(post(port, "/hooks/gh", "not json", NULL, &r), 202);
	assert_non_null(strstr(r.body, "\"fired\":0"));
	struct event ev[2];
	assert_int_equal(read_events(h, ev, 2, 300), 0);
	assert_int_equal(post(port, "/hooks/gh", "{\"pull_request\":{\"state\":\"closed\"}}", NULL, &r), 202);
	assert_non_null(strstr(r.body, "\"fired\":1"));
	assert_int_equal(post(port, "/hooks/txt", "plain words", NULL, &r), 202);
	assert_int_equal(wait_events(h, ev, 2, 5000), 2);
	assert_string_equal(ev[0].id, "f1");
	assert_string_equal(ev[1].id, "f2");
	assert_non_null(strstr(ev[1].payload_json, "\"body\":\"plain words\""));
}

static void repeat_fires_every_delivery(void **state)
{
	struct harness *h = *state;
	int port = start(h, NULL);
	submit_wait(h, "{\"id\":\"rep\",\"kind\":\"webhook\",\"repeat\":true,\"args\":{\"path\":\"r\"}}", "rep");
	CURL *c = curl_easy_init();
	struct resp r;
	for (int i = 0; i < 100; i++)
		assert_int_equal(request(c, "POST", port, "/hooks/r", "{}", NULL, &r), 202);
	curl_easy_cleanup(c);
	static struct event ev[101];
	assert_int_equal(wait_events(h, ev, 100, 10000), 100);
	for (int i = 0; i < 100; i++) {
		assert_string_equal(ev[i].id, "rep");
		assert_int_equal(ev[i].seq, (uint64_t)i + 1);
	}
	assert_int_equal(read_events(h, ev, 1, 300), 0);
	assert_int_equal(redis_int(h, "HEXISTS td:triggers rep"), 1);
}

/* Bad webhook specs: a rejected event naming the field, nothing else. */
static void bad_specs_rejected(void **state)
{
	struct harness *h = *state;
	int port = start(h, NULL);
	assert_true(port > 0);
	static const struct {
		const char *json, *error;
	} cases[] = {
		{"{\"id\":\"b1\",\"kind\":\"webhook\",\"args\":{}}", "args.path: required"},
		{"{\"id\":\"b2\",\"kind\":\"webhook\",\"args\":{\"path\":\"/x\"}}", "args.path: expected"},
		{"{\"id\":\"b3\",\"kind\":\"webhook\",\"args\":{\"path\":\"a/../b\"}}", "args.path: expected"},
		{"{\"id\":\"b4\",\"kind\":\"webhook\",\"args\":{\"path\":\"a\",\"path\":\"b\"}}", "args.path: given twice"},
		/* 2 x 16 header names: each list within the limit, together not */
		{"{\"id\":\"b5\",\"kind\":\"webhook\",\"args\":{\"path\":\"a\","
		 "\"headers\":[\"a\",\"b\",\"c\",\"d\",\"e\",\"f\",\"g\",\"h\",\"i\",\"j\",\"k\",\"l\",\"m\",\"n\",\"o\",\"p\"],"
		 "\"headers\":[\"a\",\"b\",\"c\",\"d\",\"e\",\"f\",\"g\",\"h\",\"i\",\"j\",\"k\",\"l\",\"m\",\"n\",\"o\",\"p\"]}}",
		 "args.headers: given twice"},
		{"{\"id\":\"b6\",\"kind\":\"webhook\",\"args\":{\"path\":\"a\",\"signature\":{\"scheme\":\"md5\",\"secret_conn\":\"hooksecret\"}}}",
		 "args.signature.scheme"},
		{"{\"id\":\"b7\",\"kind\":\"webhook\",\"args\":{\"path\":\"a\",\"signature\":{\"scheme\":\"github\",\"secret_conn\":\"nope\"}}}",
		 "args.signature.secret_conn: no connection 'nope'"},
		{"{\"id\":\"b8\",\"kind\":\"webhook\",\"args\":{\"path\":\"a\",\"filter\":{\"pointer\":\"x\",\"equals\":1}}}",
		 "args.filter.pointer"},
		{"{\"id\":\"b9\",\"kind\":\"webhook\",\"args\":{\"path\":\"a\",\"headers\":[\"bad header\"]}}",
		 "args.headers[0]"},
	};
	size_t n = sizeof(cases) / sizeof(cases[0]);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(submit_json(h, cases[i].json), 0);
	static struct event ev[16];
	assert_int_equal(wait_events(h, ev, (int)n, 5000), (int)n);
	for (size_t i = 0; i < n; i++) {
		assert_string_equal(ev[i].status, "rejected");
		if (!strstr(ev[i].error, cases[i].error))
			fail_msg("case %zu: error '%s', want '%s'", i, ev[i].error, cases[i].error);
	}
	assert_int_equal(redis_int(h, "HLEN td:triggers"), 0);
}

/* ---- signatures -------------------------------------------------------- */

static void github_signatures(void **state)
{
	struct harness *h = *state;
	int port = start(h, NULL);
	submit_wait(h, "{\"id\":\"g\",\"kind\":\"webhook\",\"args\":{\"path\":\"gh\","
		       "\"signature\":{\"scheme\":\"github\",\"secret_conn\":\"hooksecret\"}}}", "g");
	const char *body = "{\"action\":\"opened\"}";
	char hex[65], sig[100], bad[100];
	hmac_hex(SECRET, strlen(SECRET), body, strlen(body), hex);
	snprintf(sig, sizeof(sig), "X-Hub-Signature-256: sha256=%s", hex);
	snprintf(bad, sizeof(bad), "X-Hub-Signature-256: sha256=%064d", 0);
	struct resp r;
	struct event ev[2];
	assert_int_equal(post(port, "/hooks/gh", body, NULL, &r), 401);
	assert_non_null(strstr(r.body, "\"error\":\"bad_signature\""));
	assert_non_null(strstr(r.body, "missing X-Hub-Signature-256"));
	const char *b1[] = {bad, NULL};
	assert_int_equal(post(port, "/hooks/gh", body, b1, &r), 401);
	/* Signed, but over another body. */
	const char *b2[] = {sig, NULL};
	assert_int_equal(post(port, "/hooks/gh", "{\"action\":\"closed\"}", b2, &r), 401);
	assert_int_equal(read_events(h, ev, 2, 300), 0);
	assert_int_equal(post(port, "/hooks/gh", body, b2, &r), 202);
	assert_non_null(strstr(r.body, "\"fired\":1"));
	assert_int_equal(wait_events(h, ev, 1, 5000), 1);
	assert_string_equal(ev[0].id, "g");
}

static void stripe_and_standard_signatures(void **state)
{
	struct harness *h = *state;
	int port = start(h, NULL);
	submit_wait(h, "{\"id\":\"s\",\"kind\":\"webhook\",\"args\":{\"path\":\"stripe\","
		       "\"signature\":{\"scheme\":\"stripe\",\"secret_conn\":\"hooksecret\"}}}", "s");
	submit_wait(h, "{\"id\":\"sw\",\"kind\":\"webhook\",\"args\":{\"path\":\"std\","
		       "\"signature\":{\"scheme\":\"standard\",\"secret_conn\":\"stdsecret\"}}}", "sw");
	const char *body = "{\"type\":\"invoice.paid\"}";
	long now = (long)(now_ms() / 1000);
	char signed_[256], hex[65], hdr[200];
	struct resp r;
	/* Stripe: HMAC over "<t>.<body>"; a stale timestamp is refused. */
	snprintf(signed_, sizeof(signed_), "%ld.%s", now - 400, body);
	hmac_hex(SECRET, strlen(SECRET), signed_, strlen(signed_), hex);
	snprintf(hdr, sizeof(hdr), "Stripe-Signature: t=%ld,v1=%s", now - 400, hex);
	const char *st[] = {hdr, NULL};
	assert_int_equal(post(port, "/hooks/stripe", body, st, &r), 401);
	assert_non_null(strstr(r.body, "tolerance"));
	snprintf(signed_, sizeof(signed_), "%ld.%s", now, body);
	hmac_hex(SECRET, strlen(SECRET), signed_, strlen(signed_), hex);
	snprintf(hdr, sizeof(hdr), "Stripe-Signature: t=%ld,v1=%064d,v1=%s", now, 0, hex);
	assert_int_equal(post(port, "/hooks/stripe", body, st, &r), 202);
	/* Standard Webhooks: key is the base64-decoded part after whsec_. */
	/* The key is the base64 part of "whsec_..." decoded (24 bytes). */
	unsigned char key[32];
	assert_int_equal(EVP_DecodeBlock(key, (const unsigned char *)"MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", 32), 24);
	char msg[256], idh[64], tsh[64], sigh[200];
	snprintf(msg, sizeof(msg), "msg_1.%ld.%s", now, body);
	unsigned char mac[32];
	unsigned ml;
	HMAC(EVP_sha256(), key, 24, (const unsigned char *)msg, strlen(msg), mac, &ml);
	char b64[64];
	EVP_EncodeBlock((unsigned char *)b64, mac, 32);
	snprintf(idh, sizeof(idh), "webhook-id: msg_1");
	snprintf(tsh, sizeof(tsh), "webhook-timestamp: %ld", now);
	snprintf(sigh, sizeof(sigh), "webhook-signature: v1,AAAA%s v1,%s", b64 + 4, b64);
	const char *sw[] = {idh, tsh, sigh, NULL};
	assert_int_equal(post(port, "/hooks/std", body, sw, &r), 202);
	assert_non_null(strstr(r.body, "\"fired\":1"));
	struct event ev[3];
	assert_int_equal(wait_events(h, ev, 2, 5000), 2);
	assert_string_equal(ev[0].id, "s");
	assert_string_equal(ev[1].id, "sw");
	assert_non_null(strstr(ev[1].payload_json, "\"delivery_id\":\"msg_1\""));
}

/* ---- replay -------------------------------------------------------------- */

static void replay_deduplicated_across_restart(void **state)
{
	struct harness *h = *state;
	int port = start(h, NULL);
	submit_wait(h, "{\"id\":\"rp\",\"kind\":\"webhook\",\"repeat\":true,\"args\":{\"path\":\"p\"}}", "rp");
	const char *d1[] = {"X-GitHub-Delivery: 0b989ba4-1", NULL};
	const char *d2[] = {"X-GitHub-Delivery: 0b989ba4-2", NULL};
	struct resp r;
	assert_int_equal(post(port, "/hooks/p", "{}", d1, &r), 202);
	assert_non_null(strstr(r.body, "\"fired\":1"));
	assert_int_equal(post(port, "/hooks/p", "{}", d1, &r), 200);
	assert_non_null(strstr(r.body, "\"duplicate\":true"));
	/* Restarted: the window lives in Redis. */
	harness_td_stop(h, SIGTERM);
	port = start(h, NULL);
	assert_true(port > 0);
	assert_int_equal(post(port, "/hooks/p", "{}", d1, &r), 200);
	/* A new waiter does not get an old delivery replayed either. */
	submit_wait(h, "{\"id\":\"late\",\"kind\":\"webhook\",\"args\":{\"path\":\"p\"}}", "late");
	assert_int_equal(post(port, "/hooks/p", "{}", d1, &r), 200);
	assert_int_equal(post(port, "/hooks/p", "{}", d2, &r), 202);
	assert_non_null(strstr(r.body, "\"fired\":2"));
	struct event ev[4];
	assert_int_equal(wait_events(h, ev, 3, 5000), 3);
	assert_int_equal(read_events(h, ev + 3, 1, 300), 0);
	assert_int_equal(redis_int(h, "EXISTS td:delivery:p:0b989ba4-1"), 1);
	assert_true(redis_int(h, "TTL td:delivery:p:0b989ba4-1") > 3600);
}

/* ---- routing, limits ------------------------------------------------------ */

static void routes_and_rate_limit(void **state)
{
	struct harness *h = *state;
	const char *extra[] = {"--webhook-rate-limit", "20/s,burst=5", NULL};
	int port = start(h, extra);
	struct resp r;
	CURL *c = curl_easy_init();
	assert_int_equal(request(c, "GET", port, "/hooks/x", NULL, NULL, &r), 405);
	assert_non_null(strstr(r.headers, "Allow: POST"));
	assert_int_equal(request(c, "POST", port, "/other", "{}", NULL, &r), 404);
	assert_non_null(strstr(r.body, "\"status\":404"));
	assert_int_equal(request(c, "POST", port, "/hooks/", "{}", NULL, &r), 404);
	/* 3 of the burst of 5 used; then the limiter answers 429. */
	int ok = 0, limited = 0;
	for (int i = 0; i < 10; i++) {
		long s = request(c, "POST", port, "/hooks/nobody", "{}", NULL, &r);
		if (s == 404)
			ok++;
		if (s == 429) {
			limited++;
			assert_non_null(strstr(r.headers, "Retry-After: 1"));
			assert_non_null(strstr(r.body, "\"error\":\"rate_limited\""));
		}
	}
	assert_true(ok >= 5 && ok <= 7);
	assert_int_equal(ok + limited, 10);
	sleep_ms(1100);
	assert_int_equal(request(c, "POST", port, "/hooks/nobody", "{}", NULL, &r), 404);
	curl_easy_cleanup(c);
}

static void retention_window(void **state)
{
	struct harness *h = *state;
	const char *extra[] = {"--webhook-retain", "late/*=3s", NULL};
	int port = start(h, extra);
	struct resp r;
	assert_int_equal(post(port, "/hooks/late/job1", "{\"n\":1}", NULL, &r), 202);
	assert_non_null(strstr(r.body, "\"retained\":true"));
	assert_int_equal(post(port, "/hooks/late/job1", "{\"n\":2}", NULL, &r), 202);
	/* Paths without retention still answer 404. */
	assert_int_equal(post(port, "/hooks/other", "{}", NULL, &r), 404);
	/* A trigger registered within the window gets the first delivery. */
	/* (It fires at once: no waiting for it to show as stored.) */
	assert_int_equal(submit_json(h, "{\"id\":\"l1\",\"kind\":\"webhook\",\"args\":{\"path\":\"late/job1\"}}"), 0);
	struct event ev[3];
	assert_int_equal(wait_events(h, ev, 1, 5000), 1);
	assert_string_equal(ev[0].id, "l1");
	assert_non_null(strstr(ev[0].payload_json, "\"n\":1"));
	/* A repeat trigger gets both, oldest first, with a filter applied. */
	assert_int_equal(submit_json(h, "{\"id\":\"l2\",\"kind\":\"webhook\",\"repeat\":true,\"args\":{\"path\":\"late/job1\"}}"), 0);
	assert_int_equal(wait_events(h, ev, 2, 5000), 2);
	assert_non_null(strstr(ev[0].payload_json, "\"n\":1"));
	assert_non_null(strstr(ev[1].payload_json, "\"n\":2"));
	/* Past the window nothing is replayed. */
	assert_int_equal(post(port, "/hooks/late/job2", "{}", NULL, &r), 202);
	sleep_ms(3500);
	submit_wait(h, "{\"id\":\"l3\",\"kind\":\"webhook\",\"args\":{\"path\":\"late/job2\"}}", "l3");
	assert_int_equal(read_events(h, ev, 1, 500), 0);
}

/* ---- the server, with raw sockets --------------------------------------- */

static int dial(int port)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	return fd;
}

static void send_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
		if (k <= 0)
			return; /* the server may close early (413, 431) */
		p += k;
		n -= (size_t)k;
	}
}

/* Read until @n occurrences of "HTTP/1.1 " with complete bodies are in, EOF
 * or @ms pass. Returns bytes read (NUL-terminated). */
static size_t read_some(int fd, char *buf, size_t cap, int ms, const char *until)
{
	size_t len = 0;
	int64_t end = now_ms() + ms;
	while (len < cap - 1 && now_ms() < end) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		if (poll(&p, 1, (int)(end - now_ms())) <= 0)
			break;
		ssize_t k = recv(fd, buf + len, cap - 1 - len, 0);
		if (k <= 0)
			break;
		len += (size_t)k;
		buf[len] = '\0';
		if (until && strstr(buf, until))
			break;
	}
	buf[len] = '\0';
	return len;
}

static bool closed_by_peer(int fd, int ms)
{
	char b[256];
	struct pollfd p = {.fd = fd, .events = POLLIN};
	int64_t end = now_ms() + ms;
	while (now_ms() < end) {
		if (poll(&p, 1, (int)(end - now_ms())) <= 0)
			return false;
		ssize_t k = recv(fd, b, sizeof(b), 0);
		if (k <= 0)
			return true;
	}
	return false;
}

static void pipelined_in_order(void **state)
{
	struct harness *h = *state;
	int port = start(h, NULL);
	submit_wait(h, "{\"id\":\"pp\",\"kind\":\"webhook\",\"repeat\":true,\"args\":{\"path\":\"pp\"}}", "pp");
	int fd = dial(port);
	const char req[] =
		"POST /hooks/pp HTTP/1.1\r\nHost: x\r\nContent-Length: 7\r\n\r\n{\"a\":1}"
		"POST /hooks/none HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
		"POST /hooks/pp HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
		"3\r\n{\"a\r\n4\r\n\":2}\r\n0\r\n\r\n";
	send_all(fd, req, sizeof(req) - 1);
	char buf[4096];
	size_t len = 0;
	int64_t end = now_ms() + 5000;
	/* Three answers, the last one complete (its body ends the buffer). */
	while (now_ms() < end && len < sizeof(buf) - 1) {
		len += read_some(fd, buf + len, sizeof(buf) - len, 200, NULL);
		int n = 0;
		for (char *p = buf; (p = strstr(p, "HTTP/1.1 ")); p++)
			n++;
		if (n == 3 && len && buf[len - 1] == '}')
			break;
	}
	char *a = strstr(buf, "HTTP/1.1 202");
	char *b = a ? strstr(a + 1, "HTTP/1.1 404") : NULL;
	char *c = b ? strstr(b + 1, "HTTP/1.1 202") : NULL;
	assert_non_null(a);
	assert_non_null(b);
	assert_non_null(c);
	close(fd);
	struct event ev[3];
	assert_int_equal(wait_events(h, ev, 2, 5000), 2);
	assert_non_null(strstr(ev[0].payload_json, "\"a\":1"));
	assert_non_null(strstr(ev[1].payload_json, "\"a\":2"));
}

static void limits_and_bad_requests(void **state)
{
	struct harness *h = *state;
	const char *extra[] = {"--webhook-max-body", "4096", NULL};
	int port = start(h, extra);
	char buf[4096];
	/* Headers over 16 KiB: 431 with a JSON body, connection closed. */
	int fd = dial(port);
	static char big[20000];
	int n = snprintf(big, sizeof(big), "POST /hooks/x HTTP/1.1\r\nHost: x\r\nX-Big: ");
	memset(big + n, 'a', 17000);
	memcpy(big + n + 17000, "\r\n\r\n", 4);
	send_all(fd, big, (size_t)n + 17004);
	read_some(fd, buf, sizeof(buf), 5000, "}");
	assert_non_null(strstr(buf, "HTTP/1.1 431"));
	assert_non_null(strstr(buf, "\"error\":\"header_too_large\""));
	assert_non_null(strstr(buf, "Connection: close"));
	assert_true(closed_by_peer(fd, 3000));
	close(fd);
	/* A declared body over --webhook-max-body: 413 before it is sent. */
	fd = dial(port);
	const char r413[] = "POST /hooks/x HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n";
	send_all(fd, r413, sizeof(r413) - 1);
	read_some(fd, buf, sizeof(buf), 5000, "}");
	assert_non_null(strstr(buf, "HTTP/1.1 413"));
	assert_non_null(strstr(buf, "\"error\":\"body_too_large\""));
	close(fd);
	/* The same with a chunked body that grows past the limit. */
	fd = dial(port);
	const char chunk_head[] = "POST /hooks/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
	send_all(fd, chunk_head, sizeof(chunk_head) - 1);
	for (int i = 0; i < 5; i++) {
		char ch[1100];
		int k = snprintf(ch, sizeof(ch), "400\r\n");
		memset(ch + k, 'b', 1024);
		memcpy(ch + k + 1024, "\r\n", 2);
		send_all(fd, ch, (size_t)k + 1026);
	}
	read_some(fd, buf, sizeof(buf), 5000, "}");
	assert_non_null(strstr(buf, "HTTP/1.1 413"));
	close(fd);
	/* Expect: 100-continue gets the interim response, then the answer. */
	fd = dial(port);
	const char e100[] = "POST /hooks/nobody HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
			    "Expect: 100-continue\r\n\r\n";
	send_all(fd, e100, sizeof(e100) - 1);
	read_some(fd, buf, sizeof(buf), 5000, "\r\n\r\n");
	assert_non_null(strstr(buf, "HTTP/1.1 100 Continue"));
	send_all(fd, "{}", 2);
	read_some(fd, buf, sizeof(buf), 5000, "}");
	assert_non_null(strstr(buf, "HTTP/1.1 404"));
	close(fd);
	/* Garbage: 400 with JSON, and the server goes on serving. */
	fd = dial(port);
	send_all(fd, "HELLO\x01\x02 there\r\n\r\n", 17);
	read_some(fd, buf, sizeof(buf), 5000, "}");
	assert_non_null(strstr(buf, "HTTP/1.1 400"));
	assert_non_null(strstr(buf, "\"error\":\"bad_request\""));
	close(fd);
	struct resp r;
	assert_int_equal(post(port, "/hooks/nobody", "{}", NULL, &r), 404);
}

static void slow_client_and_idle_timeouts(void **state)
{
	struct harness *h = *state;
	const char *extra[] = {"--http-header-timeout-ms", "400", "--http-idle-timeout-ms",
			       "600", NULL};
	int port = start(h, extra);
	char buf[2048];
	/* Headers trickling in: 408 at the header deadline, however alive
	 * the client looks. */
	int fd = dial(port);
	int64_t t0 = now_ms();
	const char part[] = "POST /hooks/x HTTP/1.1\r\nHost: x\r\n";
	for (size_t i = 0; i < sizeof(part) - 1; i++) {
		send_all(fd, part + i, 1);
		sleep_ms(20);
		if (now_ms() - t0 > 1000)
			break;
	}
	read_some(fd, buf, sizeof(buf), 3000, "}");
	int64_t took = now_ms() - t0;
	assert_non_null(strstr(buf, "HTTP/1.1 408"));
	assert_non_null(strstr(buf, "\"error\":\"header_timeout\""));
	assert_true(took >= 380 && took < 2500);
	close(fd);
	/* An idle keep-alive connection is closed silently. */
	fd = dial(port);
	t0 = now_ms();
	assert_true(closed_by_peer(fd, 3000));
	took = now_ms() - t0;
	assert_true(took >= 550 && took < 2500);
	close(fd);
}

static void max_connections(void **state)
{
	struct harness *h = *state;
	const char *extra[] = {"--webhook-max-conns", "2", NULL};
	int port = start(h, extra);
	int a = dial(port), b = dial(port);
	sleep_ms(100);
	int c = dial(port);
	char buf[1024];
	read_some(c, buf, sizeof(buf), 3000, "}");
	assert_non_null(strstr(buf, "HTTP/1.1 503"));
	assert_non_null(strstr(buf, "\"error\":\"too_many_connections\""));
	close(c);
	close(a);
	sleep_ms(100);
	int d = dial(port);
	const char rq[] = "POST /hooks/n HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n";
	send_all(d, rq, sizeof(rq) - 1);
	read_some(d, buf, sizeof(buf), 3000, "}");
	assert_non_null(strstr(buf, "HTTP/1.1 404"));
	close(d);
	close(b);
}

static void ten_thousand_keepalive(void **state)
{
	struct harness *h = *state;
	const char *extra[] = {"--webhook-rate-limit", "off", NULL};
	int port = start(h, extra);
	submit_wait(h, "{\"id\":\"k\",\"kind\":\"webhook\",\"repeat\":true,\"args\":{\"path\":\"k\"}}", "k");
	CURL *c = curl_easy_init();
	struct resp r;
	int ok = 0;
	long conns = 0;
	for (int i = 0; i < 10000; i++) {
		if (request(c, "POST", port, "/hooks/k", "{\"i\":1}", NULL, &r) == 202)
			ok++;
		long nc = 0;
		curl_easy_getinfo(c, CURLINFO_NUM_CONNECTS, &nc);
		conns += nc;
	}
	curl_easy_cleanup(c);
	assert_int_equal(ok, 10000);
	assert_int_equal(conns, 1); /* one connection for all of them */
	for (int i = 0; i < 200 && redis_int(h, "XLEN td:events") < 10000; i++)
		sleep_ms(50);
	assert_int_equal(redis_int(h, "XLEN td:events"), 10000);
}

int main(void)
{
	curl_global_init(CURL_GLOBAL_DEFAULT);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(fires_once_with_payload, harness_setup, harness_teardown),
		cmocka_unit_test_setup_teardown(text_body_and_filter, harness_setup, harness_teardown),
		cmocka_unit_test_setup_teardown(repeat_fires_every_delivery, harness_setup, harness_teardown),
		cmocka_unit_test_setup_teardown(bad_specs_rejected, harness_setup, harness_teardown),
		cmocka_unit_test_setup_teardown(github_signatures, harness_setup, harness_teardown),
		cmocka_unit_test_setup_teardown(stripe_and_standard_signatures, harness_setup, harness_teardown),
		cmocka_unit_test_setup_teardown(replay_deduplicated_across_restart, harness_setup, harness_teardown),
		cmocka_unit_test_setup_teardown(routes_and_rate_limit, harness_setup, harness_teardown),
		cmocka_unit_test_setup_teardown(retention_window, harness_setup, harness_teardown),
		cmocka_unit_test_setup_teardown(pipelined_in_order, harness_setup, harness_teardown),
		cmocka_unit_test_setup_teardown(limits_and_bad_requests, harness_setup, harness_teardown),
		cmocka_unit_test_setup_teardown(slow_client_and_idle_timeouts, harness_setup, harness_teardown),
		cmocka_unit_test_setup_teardown(max_connections, harness_setup, harness_teardown),
		cmocka_unit_test_setup_teardown(ten_thousand_keepalive, harness_setup, harness_teardown),
	};
	int rc = cmocka_run_group_tests(tests, NULL, NULL);
	curl_global_cleanup();
	return rc;
}
