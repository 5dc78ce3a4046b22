/*
 * The http trigger kind end to end: real redis-server, real triggerd, and
 * a real HTTP server on loopback (tests/httpd.c, in this process).
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <pthread.h>

#include "harness.h"
#include "httpd.h"

struct env {
	struct harness *h;
	struct httpd srv;
};

static int setup(void **state)
{
	struct env *e = calloc(1, sizeof(*e));
	void *hs;
	if (harness_setup(&hs) != 0 || httpd_start(&e->srv) != 0)
		return -1;
	e->h = hs;
	*state = e;
	return 0;
}

static int teardown(void **state)
{
	struct env *e = *state;
	void *hs = e->h;
	harness_teardown(&hs);
	httpd_stop(&e->srv);
	free(e);
	return 0;
}

static void submitf(struct harness *h, const char *fmt, ...)
{
	char doc[2048];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(doc, sizeof(doc), fmt, ap);
	va_end(ap);
	assert_int_equal(submit_json(h, doc), 0);
}

/* 503 until flipped, then 200 with a JSON body: every waiting trigger
 * fires exactly once, with the response as payload. */
static void fires_once_when_flipped(void **state)
{
	struct env *e = *state;
	struct harness *h = e->h;
	enum { N = 50 };
	httpd_set(&e->srv, 503, "{\"state\":\"busy\"}", 0);
	assert_int_equal(harness_td_start(h, NULL), 0);
	for (int i = 0; i < N; i++)
		submitf(h, "{\"id\":\"p%02d\",\"kind\":\"http\",\"args\":{\"url\":\"http://127.0.0.1:%d/status\","
			   "\"interval_ms\":200,\"json_pointer\":\"/state\",\"equals\":\"done\"},\"meta\":{\"n\":%d}}",
			i, e->srv.port, i);
	sleep_ms(800);
	struct event ev[N + 5];
	assert_int_equal(read_events(h, ev, 5, 100), 0); /* nothing yet */
	assert_true(atomic_load(&e->srv.requests) >= N);
	assert_true(log_contains(h, "http poll failed; retrying with backoff"));
	httpd_set(&e->srv, 200, "{\"state\":\"done\",\"n\":1}", 0);
	/* 503s back off (200, 400, 800 ms ...): allow a few seconds. */
	assert_int_equal(wait_events(h, ev, N, 8000), N);
	unsigned char seen[N] = {0};
	for (int i = 0; i < N; i++) {
		assert_string_equal(ev[i].status, "success");
		assert_string_equal(ev[i].kind, "http");
		int k = atoi(ev[i].id + 1);
		assert_int_equal(seen[k]++, 0);
		assert_non_null(strstr(ev[i].payload_json, "\"status\":200"));
		assert_non_null(strstr(ev[i].payload_json, "\"body\":\"{\\\"state\\\":\\\"done\\\",\\\"n\\\":1}\""));
		assert_non_null(strstr(ev[i].payload_json, "\"content-type\":\"application/json\""));
		assert_non_null(strstr(ev[i].payload_json, "\"truncated\":false"));
	}
	assert_int_equal(read_events(h, ev, 5, 600), 0); /* no second firing */
	assert_int_equal(redis_int(h, "HLEN td:triggers"), 0);
}

static void failure_regex_timeout_and_rejects(void **state)
{
	struct env *e = *state;
	struct harness *h = e->h;
	int port = e->srv.port;
	httpd_set(&e->srv, 200, "not yet", 0);
	assert_int_equal(harness_td_start(h, NULL), 0);
	submitf(h, "{\"id\":\"re\",\"kind\":\"http\",\"args\":{\"url\":\"http://127.0.0.1:%d/r\","
		   "\"interval_ms\":100,\"body_regex\":\"READY: \\\\d+\"}}", port);
	/* refused connection: retried, then the engine's timeout ends it */
	submitf(h, "{\"id\":\"down\",\"kind\":\"http\",\"args\":{\"url\":\"http://127.0.0.1:1/\","
		   "\"interval_ms\":100},\"timeout_ms\":700}");
	submitf(h, "{\"id\":\"badurl\",\"kind\":\"http\",\"args\":{\"url\":\"http://exa mple.com/\"}}");
	submitf(h, "{\"id\":\"ftp\",\"kind\":\"http\",\"args\":{\"url\":\"ftp://example.com/\"}}");
	submitf(h, "{\"id\":\"badre\",\"kind\":\"http\",\"args\":{\"url\":\"http://127.0.0.1:%d/\",\"body_regex\":\"(unclosed\"}}", port);
	submitf(h, "{\"id\":\"noeq\",\"kind\":\"http\",\"args\":{\"url\":\"http://127.0.0.1:%d/\",\"json_pointer\":\"/a\"}}", port);
	submitf(h, "{\"id\":\"hdr\",\"kind\":\"http\",\"args\":{\"url\":\"http://127.0.0.1:%d/\",\"headers\":{\"X\":\"a\\r\\nInjected: 1\"}}}", port);
	submitf(h, "{\"id\":\"slow\",\"kind\":\"http\",\"args\":{\"url\":\"http://127.0.0.1:%d/\",\"interval_ms\":50}}", port);
	struct event ev[16];
	/* six rejections, in submission order */
	assert_int_equal(wait_events(h, ev, 6, 3000), 6);
	const char *want[][2] = {
		{"badurl", "args.url: "}, {"ftp", "args.url: only http:// and https://"},
		{"badre", "args.body_regex: missing closing parenthesis"},
		{"noeq", "json_pointer and equals go together"}, {"hdr", "no CR or LF"},
		{"slow", "args.interval_ms: expected an integer 100.."},
	};
	for (int i = 0; i < 6; i++) {
		assert_string_equal(ev[i].status, "rejected");
		assert_string_equal(ev[i].id, want[i][0]);
		if (!strstr(ev[i].error, want[i][1]))
			fail_msg("%s: '%s' lacks '%s'", ev[i].id, ev[i].error, want[i][1]);
	}
	assert_int_equal(wait_events(h, ev, 1, 3000), 1);
	assert_string_equal(ev[0].id, "down");
	assert_string_equal(ev[0].status, "timeout");
	httpd_set(&e->srv, 200, "status READY: 42", 0);
	assert_int_equal(wait_events(h, ev, 1, 3000), 1);
	assert_string_equal(ev[0].id, "re");
	assert_string_equal(ev[0].status, "success");
	/* failure_status ends the trigger with a failure event */
	httpd_set(&e->srv, 401, "{\"error\":\"token expired\"}", 0);
	submitf(h, "{\"id\":\"auth\",\"kind\":\"http\",\"args\":{\"url\":\"http://127.0.0.1:%d/\","
		   "\"interval_ms\":100,\"failure_status\":[401,403]}}", port);
	assert_int_equal(wait_events(h, ev, 1, 3000), 1);
	assert_string_equal(ev[0].id, "auth");
	assert_string_equal(ev[0].status, "failure");
	assert_string_equal(ev[0].error, "HTTP 401 is a failure status");
	assert_non_null(strstr(ev[0].payload_json, "\"status\":401"));
}

/* A stored http trigger survives a restart and keeps polling. */
static void survives_restart(void **state)
{
	struct env *e = *state;
	struct harness *h = e->h;
	httpd_set(&e->srv, 404, "", 0);
	assert_int_equal(harness_td_start(h, NULL), 0);
	submitf(h, "{\"id\":\"r1\",\"kind\":\"http\",\"args\":{\"url\":\"http://127.0.0.1:%d/x\","
		   "\"method\":\"post\",\"body\":\"{}\",\"headers\":{\"Authorization\":\"Bearer t\"},"
		   "\"interval_ms\":100,\"success_status\":[204]}}", e->srv.port);
	sleep_ms(400);
	assert_int_equal(harness_td_stop(h, SIGTERM), 0);
	assert_int_equal(redis_int(h, "HLEN td:triggers"), 1);
	assert_int_equal(harness_td_start(h, NULL), 0);
	httpd_set(&e->srv, 204, "", 0);
	struct event ev[2];
	assert_int_equal(wait_events(h, ev, 1, 3000), 1);
	assert_string_equal(ev[0].id, "r1");
	assert_string_equal(ev[0].status, "success");
	assert_non_null(strstr(ev[0].payload_json, "\"status\":204"));
}

static void ssrf_guard(void **state)
{
	struct env *e = *state;
	struct harness *h = e->h;
	const char *args[] = {"--deny-hosts", "127.0.0.2/32,10.0.0.0/8", NULL};
	assert_int_equal(harness_td_start(h, args), 0);
	submitf(h, "{\"id\":\"meta\",\"kind\":\"http\",\"args\":{\"url\":\"http://169.254.169.254/latest/meta-data\"}}");
	submitf(h, "{\"id\":\"ten\",\"kind\":\"http\",\"args\":{\"url\":\"http://10.1.2.3:8080/\"}}");
	submitf(h, "{\"id\":\"gce\",\"kind\":\"http\",\"args\":{\"url\":\"http://metadata.google.internal/\"}}");
	struct event ev[4];
	assert_int_equal(wait_events(h, ev, 3, 3000), 3);
	const char *want[][2] = {
		{"meta", "args.url: denied by the SSRF guard: 169.254.169.254"},
		{"ten", "deny rule 10.0.0.0/8"},
		{"gce", "default deny"},
	};
	for (int i = 0; i < 3; i++) {
		assert_string_equal(ev[i].status, "rejected");
		assert_string_equal(ev[i].id, want[i][0]);
		if (!strstr(ev[i].error, want[i][1]))
			fail_msg("%s: '%s' lacks '%s'", ev[i].id, ev[i].error, want[i][1]);
	}
	assert_int_equal(atomic_load(&e->srv.requests), 0);
}

/* A name is only checked against host rules at submission; the address
 * it resolves to is checked when connecting. */
static void ssrf_at_connect(void **state)
{
	struct env *e = *state;
	struct harness *h = e->h;
	const char *args[] = {"--deny-hosts", "127.0.0.0/8,::1/128", NULL};
	assert_int_equal(harness_td_start(h, args), 0);
	submitf(h, "{\"id\":\"lh\",\"kind\":\"http\",\"args\":{\"url\":\"http://localhost:%d/\"}}", e->srv.port);
	struct event ev[2];
	assert_int_equal(wait_events(h, ev, 1, 5000), 1);
	assert_string_equal(ev[0].id, "lh");
	assert_string_equal(ev[0].status, "failure");
	assert_non_null(strstr(ev[0].error, "connect denied by the SSRF guard"));
	assert_int_equal(atomic_load(&e->srv.requests), 0);
}

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return (x > y) - (x < y);
}

/* The per-host request rate seen by the server never exceeds
 * rate * t + burst, however many triggers poll it. */
static void per_host_rate_limit(void **state)
{
	struct env *e = *state;
	struct harness *h = e->h;
	const char *args[] = {"--rate-limit", "default=5/s,burst=2", NULL};
	httpd_set(&e->srv, 404, "", 0);
	assert_int_equal(harness_td_start(h, args), 0);
	for (int i = 0; i < 20; i++)
		submitf(h, "{\"id\":\"rl%02d\",\"kind\":\"http\",\"args\":{\"url\":\"http://127.0.0.1:%d/p\","
			   "\"interval_ms\":100}}", i, e->srv.port);
	sleep_ms(3000);
	long n = atomic_load(&e->srv.requests);
	/* 20 triggers at 10 polls/s would be ~600; the limiter allows ~5/s. */
	assert_true(n >= 10);
	assert_true(n <= 5 * 3 + 2 + 5);
	/* Server threads take a slot, then stamp it: a slot may be stamped
	 * out of order (or not yet). Let them finish, then sort. */
	sleep_ms(50);
	int64_t stamps[64];
	long m = 0;
	for (long i = 0; i < n && m < 64; i++)
		if (e->srv.log_ms[i])
			stamps[m++] = e->srv.log_ms[i];
	assert_int_equal(m, n);
	qsort(stamps, (size_t)m, sizeof(stamps[0]), cmp_i64);
	/* every window [t, t + w] holds at most rate * w + burst requests */
	for (long i = 0; i < n; i++)
		for (long j = i; j < n; j++) {
			int64_t w = stamps[j] - stamps[i];
			long count = j - i + 1;
			/* +1 ms: arrival stamps are taken on the server side */
			if (count > 5 * (w + 1) / 1000 + 2)
				fail_msg("%ld requests in %lld ms", count, (long long)w);
		}
	/* The deferrals show in the counters of the final stats line. */
	assert_int_equal(harness_td_stop(h, SIGTERM), 0);
	assert_true(log_contains(h, "\"msg\":\"stopped\""));
	assert_true(log_contains(h, "\"http_polls\":"));
	assert_false(log_contains(h, "\"http_rate_limited\":0,"));
	assert_false(log_contains(h, "\"http_polls\":0,"));
}

/* A named connection supplies base URL, basic auth and headers; nothing
 * secret reaches td:triggers; Airflow's HttpSensorTrigger runs on it. */
static void named_connection_and_airflow(void **state)
{
	struct env *e = *state;
	struct harness *h = e->h;
	char uri[256];
	snprintf(uri, sizeof(uri), "http://robot:s3cr3t-pw@127.0.0.1:%d/?X-Api-Key=k-12345", e->srv.port);
	setenv("AIRFLOW_CONN_MY_API", uri, 1);
	httpd_set(&e->srv, 404, "", 0);
	assert_int_equal(harness_td_start(h, NULL), 0);
	unsetenv("AIRFLOW_CONN_MY_API");
	submitf(h, "{\"id\":\"c1\",\"kind\":\"http\",\"args\":{\"conn\":\"my_api\",\"endpoint\":\"v1/status\","
		   "\"interval_ms\":100,\"headers\":{\"X-Trace\":\"t1\"}}}");
	submitf(h, "{\"id\":\"af\",\"classpath\":\"airflow.providers.http.triggers.http.HttpSensorTrigger\","
		   "\"kwargs\":{\"http_conn_id\":\"my_api\",\"endpoint\":\"/ready\",\"poke_interval\":0.2,"
		   "\"method\":\"GET\",\"data\":null,\"headers\":null,\"extra_options\":{}}}");
	submitf(h, "{\"id\":\"nc\",\"kind\":\"http\",\"args\":{\"conn\":\"nope\",\"endpoint\":\"x\"}}");
	struct event ev[4];
	assert_int_equal(wait_events(h, ev, 1, 3000), 1);
	assert_string_equal(ev[0].id, "nc");
	assert_string_equal(ev[0].status, "rejected");
	assert_non_null(strstr(ev[0].error, "args.conn: no connection 'nope' (set AIRFLOW_CONN_NOPE"));
	sleep_ms(500); /* 404s: both keep polling */
	assert_int_equal(read_events(h, ev, 2, 100), 0);
	pthread_mutex_lock(&e->srv.lock);
	char head[4096];
	snprintf(head, sizeof(head), "%s", e->srv.last_head);
	pthread_mutex_unlock(&e->srv.lock);
	/* robot:s3cr3t-pw in base64 */
	assert_non_null(strstr(head, "Authorization: Basic cm9ib3Q6czNjcjN0LXB3"));
	assert_non_null(strstr(head, "X-Api-Key: k-12345"));
	/* no secret in the durable store */
	redisReply *r = redisCommand(h->c, "HGETALL td:triggers");
	assert_int_equal(r->elements, 4);
	for (size_t i = 0; i < r->elements; i++) {
		assert_null(memmem(r->element[i]->str, r->element[i]->len, "s3cr3t", 6));
		assert_null(memmem(r->element[i]->str, r->element[i]->len, "k-12345", 7));
	}
	freeReplyObject(r);
	httpd_set(&e->srv, 200, "{\"ok\":1}", 0);
	assert_int_equal(wait_events(h, ev, 2, 3000), 2);
	for (int i = 0; i < 2; i++) {
		assert_string_equal(ev[i].status, "success");
		if (!strcmp(ev[i].id, "af"))
			assert_string_equal(ev[i].payload_json, "true");
		else
			assert_non_null(strstr(ev[i].payload_json, "\"status\":200"));
	}
	/* HttpSensorTrigger: a 500 fails the trigger, as in Airflow */
	httpd_set(&e->srv, 500, "", 0);
	submitf(h, "{\"id\":\"af5\",\"classpath\":\"airflow.providers.http.triggers.http.HttpSensorTrigger\","
		   "\"kwargs\":{\"http_conn_id\":\"my_api\",\"endpoint\":\"x\",\"poke_interval\":0.2}}");
	assert_int_equal(wait_events(h, ev, 1, 3000), 1);
	assert_string_equal(ev[0].id, "af5");
	assert_string_equal(ev[0].status, "failure");
	assert_non_null(strstr(ev[0].error, "HTTP 500"));
}

/* A repeat http trigger keeps posting after a restart: its occurrence keys
 * (the dedup keys) must not collide with those posted before it. */
static void repeat_survives_restart(void **state)
{
	struct env *e = *state;
	struct harness *h = e->h;
	httpd_set(&e->srv, 200, "{}", 0);
	assert_int_equal(harness_td_start(h, NULL), 0);
	submitf(h, "{\"id\":\"rep\",\"kind\":\"http\",\"repeat\":true,\"args\":{\"url\":"
		   "\"http://127.0.0.1:%d/\",\"interval_ms\":100}}", e->srv.port);
	submitf(h, "{\"id\":\"dup\",\"kind\":\"http\",\"args\":{\"url\":\"http://127.0.0.1:%d/a\","
		   "\"url\":\"http://127.0.0.1:%d/b\"}}", e->srv.port, e->srv.port);
	struct event ev[40];
	int got = wait_events(h, ev, 15, 5000);
	assert_int_equal(got, 15);
	bool dup_seen = false;
	for (int i = 0; i < got; i++)
		if (!strcmp(ev[i].id, "dup")) {
			dup_seen = true;
			assert_string_equal(ev[i].status, "rejected");
			assert_non_null(strstr(ev[i].error, "args.url: given twice"));
		}
	assert_true(dup_seen);
	assert_int_equal(harness_td_stop(h, SIGTERM), 0);
	assert_int_equal(harness_td_start(h, NULL), 0);
	/* Well before 15 polls have passed after the restart. */
	assert_int_equal(wait_events(h, ev, 1, 700), 1);
	assert_string_equal(ev[0].id, "rep");
	assert_string_equal(ev[0].status, "success");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(fires_once_when_flipped, setup, teardown),
		cmocka_unit_test_setup_teardown(failure_regex_timeout_and_rejects, setup, teardown),
		cmocka_unit_test_setup_teardown(survives_restart, setup, teardown),
		cmocka_unit_test_setup_teardown(ssrf_guard, setup, teardown),
		cmocka_unit_test_setup_teardown(ssrf_at_connect, setup, teardown),
		cmocka_unit_test_setup_teardown(per_host_rate_limit, setup, teardown),
		cmocka_unit_test_setup_teardown(named_connection_and_airflow, setup, teardown),
		cmocka_unit_test_setup_teardown(repeat_survives_restart, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
