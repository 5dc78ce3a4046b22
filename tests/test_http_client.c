/*
 * The curl multi client on io_uring against a real HTTP server on
 * loopback (tests/httpd.c): concurrency and connection reuse, the host
 * connection cap, timeouts, refused connections, name resolution, body cap.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "clock.h"
#include "httpd.h"
#include "reactor.h"
#include "triggerd/http_client.h"
#include "triggerd/triggerd.h"

struct env {
	struct td_reactor reactor;
	struct td_wheel wheel;
	struct td_http *http;
	struct httpd srv;
	int done;
};

struct call {
	struct td_http_req req;
	struct env *e;
	CURLcode res;
	long status;
	int finished;
};

static void done_cb(struct td_http_req *req, CURLcode res, long status)
{
	struct call *c = td_container_of(req, struct call, req);
	c->res = res;
	c->status = status;
	c->finished++;
	c->e->done++;
}

/* Run the loop until @n calls finished or @ms passed. */
static void run_until(struct env *e, int n, int ms)
{
	uint64_t end = td_mono_ms() + (uint64_t)ms;
	while (e->done < n && td_mono_ms() < end) {
		td_wheel_advance(&e->wheel, td_mono_ms());
		uint64_t next = td_wheel_next(&e->wheel);
		int64_t ns = next == UINT64_MAX ? 50000000 :
			     (int64_t)next * 1000000 - td_mono_ns();
		if (ns < 0)
			ns = 0;
		if (ns > 50000000)
			ns = 50000000;
		assert_true(td_reactor_run_once(&e->reactor, ns) >= 0);
	}
}

static int setup_limits2(void **state, long host_conns, long total)
{
	struct env *e = calloc(1, sizeof(*e));
	if (td_reactor_init(&e->reactor, 256) != 0)
		return -1;
	td_wheel_init(&e->wheel, td_mono_ms());
	struct td_http_limits lim = {.max_host_connections = host_conns,
				     .max_total_connections = total};
	if (td_http_new(&e->http, &e->reactor, &e->wheel, &lim) != 0)
		return -1;
	if (httpd_start(&e->srv) != 0)
		return -1;
	*state = e;
	return 0;
}

static int setup(void **state)
{
	return setup_limits2(state, 4, 0);
}

static int setup_capped(void **state)
{
	return setup_limits2(state, 4, 8);
}

static int teardown(void **state)
{
	struct env *e = *state;
	td_http_free(e->http);
	for (int i = 0; i < 5; i++)
		td_reactor_run_once(&e->reactor, 10000000);
	httpd_stop(&e->srv);
	td_reactor_finish(&e->reactor);
	free(e);
	return 0;
}

static void url(struct env *e, char *buf, size_t len, const char *path)
{
	snprintf(buf, len, "http://127.0.0.1:%d%s", e->srv.port, path);
}

static void many_requests_reuse_connections(void **state)
{
	struct env *e = *state;
	enum { N = 200 };
	struct call *calls = calloc(N, sizeof(*calls));
	char u[128];
	url(e, u, sizeof(u), "/poll");
	for (int i = 0; i < N; i++) {
		calls[i].e = e;
		assert_int_equal(td_http_req_init(e->http, &calls[i].req, u, 65536, 5000), 0);
		calls[i].req.done = done_cb;
		assert_int_equal(td_http_start(e->http, &calls[i].req), 0);
	}
	run_until(e, N, 10000);
	assert_int_equal(e->done, N);
	for (int i = 0; i < N; i++) {
		assert_int_equal(calls[i].finished, 1);
		assert_int_equal(calls[i].res, CURLE_OK);
		assert_int_equal(calls[i].status, 200);
		assert_string_equal(calls[i].req.body.data, "{\"ok\":true}");
		assert_false(calls[i].req.truncated);
	}
	assert_int_equal(atomic_load(&e->srv.requests), N);
	/* The cap of 4 connections per host holds, and they were reused. */
	assert_true(atomic_load(&e->srv.connections) <= 4);
	/* A second round reuses the pooled connections. */
	long conns = atomic_load(&e->srv.connections);
	e->done = 0;
	for (int i = 0; i < N; i++)
		assert_int_equal(td_http_start(e->http, &calls[i].req), 0);
	run_until(e, N, 10000);
	assert_int_equal(e->done, N);
	assert_int_equal(atomic_load(&e->srv.connections), conns);
	for (int i = 0; i < N; i++)
		td_http_req_finish(e->http, &calls[i].req);
	free(calls);
}

static void timeout_refused_and_names(void **state)
{
	struct env *e = *state;
	struct call slow = {.e = e}, refused = {.e = e}, named = {.e = e};
	char u[128];
	httpd_set(&e->srv, 200, "{}", 800);
	url(e, u, sizeof(u), "/slow");
	assert_int_equal(td_http_req_init(e->http, &slow.req, u, 1024, 200), 0);
	slow.req.done = done_cb;
	/* Port 1 on loopback: nothing listens, connect is refused. */
	assert_int_equal(td_http_req_init(e->http, &refused.req, "http://127.0.0.1:1/", 1024, 2000), 0);
	refused.req.done = done_cb;
	uint64_t t0 = td_mono_ms();
	assert_int_equal(td_http_start(e->http, &slow.req), 0);
	assert_int_equal(td_http_start(e->http, &refused.req), 0);
	run_until(e, 2, 5000);
	assert_int_equal(slow.res, CURLE_OPERATION_TIMEDOUT);
	assert_true(td_mono_ms() - t0 < 800);
	assert_int_equal(refused.res, CURLE_COULDNT_CONNECT);
	assert_int_equal(refused.status, 0);
	/* "localhost" goes through the (threaded) resolver. */
	httpd_set(&e->srv, 503, "{\"busy\":1}", 0);
	snprintf(u, sizeof(u), "http://localhost:%d/x", e->srv.port);
	assert_int_equal(td_http_req_init(e->http, &named.req, u, 1024, 3000), 0);
	named.req.done = done_cb;
	e->done = 0;
	assert_int_equal(td_http_start(e->http, &named.req), 0);
	run_until(e, 1, 5000);
	assert_int_equal(named.res, CURLE_OK);
	assert_int_equal(named.status, 503);
	td_http_req_finish(e->http, &slow.req);
	td_http_req_finish(e->http, &refused.req);
	td_http_req_finish(e->http, &named.req);
}

static void body_cap_and_cancel(void **state)
{
	struct env *e = *state;
	char big[3000], u[128];
	memset(big, 'b', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	httpd_set(&e->srv, 200, big, 0);
	struct call c = {.e = e}, gone = {.e = e};
	url(e, u, sizeof(u), "/big");
	assert_int_equal(td_http_req_init(e->http, &c.req, u, 100, 3000), 0);
	c.req.done = done_cb;
	assert_int_equal(td_http_start(e->http, &c.req), 0);
	assert_int_equal(td_http_req_init(e->http, &gone.req, u, 100, 3000), 0);
	gone.req.done = done_cb;
	assert_int_equal(td_http_start(e->http, &gone.req), 0);
	td_http_cancel(e->http, &gone.req);
	run_until(e, 1, 5000);
	assert_int_equal(c.res, CURLE_OK);
	assert_int_equal(c.req.body.len, 100);
	assert_true(c.req.truncated);
	run_until(e, 2, 300); /* the cancelled one never reports */
	assert_int_equal(gone.finished, 0);
	td_http_req_finish(e->http, &c.req);
	td_http_req_finish(e->http, &gone.req);
}

/* No more than max_total_connections transfers are handed to curl; the
 * rest wait in the client's queue, in order, and can be cancelled there. */
static void queue_bounds_curl(void **state)
{
	struct env *e = *state;
	enum { N = 200 };
	struct call *calls = calloc(N, sizeof(*calls));
	char u[128];
	url(e, u, sizeof(u), "/q");
	for (int i = 0; i < N; i++) {
		calls[i].e = e;
		assert_int_equal(td_http_req_init(e->http, &calls[i].req, u, 1024, 5000), 0);
		calls[i].req.done = done_cb;
		assert_int_equal(td_http_start(e->http, &calls[i].req), 0);
	}
	assert_int_equal(td_http_in_curl(e->http), 8);
	assert_int_equal(td_http_queued(e->http), N - 8);
	td_http_cancel(e->http, &calls[N - 1].req); /* still queued */
	assert_int_equal(td_http_queued(e->http), N - 9);
	int max_seen = 0;
	uint64_t end = td_mono_ms() + 10000;
	while (e->done < N - 1 && td_mono_ms() < end) {
		run_until(e, e->done + 1, 50);
		if (td_http_in_curl(e->http) > max_seen)
			max_seen = td_http_in_curl(e->http);
	}
	assert_int_equal(e->done, N - 1);
	assert_true(max_seen <= 8);
	assert_int_equal(calls[N - 1].finished, 0);
	for (int i = 0; i < N - 1; i++) {
		assert_int_equal(calls[i].finished, 1);
		assert_int_equal(calls[i].status, 200);
	}
	assert_int_equal(td_http_queued(e->http), 0);
	for (int i = 0; i < N; i++)
		td_http_req_finish(e->http, &calls[i].req);
	free(calls);
}

int main(void)
{
	curl_global_init(CURL_GLOBAL_DEFAULT);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(many_requests_reuse_connections, setup, teardown),
		cmocka_unit_test_setup_teardown(timeout_refused_and_names, setup, teardown),
		cmocka_unit_test_setup_teardown(body_cap_and_cancel, setup, teardown),
		cmocka_unit_test_setup_teardown(queue_bounds_curl, setup_capped, teardown),
	};
	int rc = cmocka_run_group_tests(tests, NULL, NULL);
	curl_global_cleanup();
	return rc;
}
