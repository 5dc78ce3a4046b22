/*
 * HTTP client on the shard's reactor: libcurl's multi "socket" interface
 * driven by io_uring polls and the timer wheel. Connections are pooled in
 * the multi handle and reused across requests to the same host.
 *
 * DNS: Debian's libcurl (7.88, OpenSSL flavour) is built with the threaded
 * resolver (curl-config --features lists AsynchDNS, no c-ares): a lookup
 * runs on a helper thread and never blocks the reactor.
 *
 * Context: everything runs on the shard's thread.
 */
#ifndef TRIGGERD_HTTP_CLIENT_H
#define TRIGGERD_HTTP_CLIENT_H

#include <curl/curl.h>
#include <stdbool.h>
#include <stddef.h>

#include "triggerd/buf.h"
#include "triggerd/wheel.h"

struct td_reactor;
struct td_http;
struct td_http_req;

/** A request finished: @res is curl's result, @status the HTTP status (0
 * when no response arrived). The request is already detached from the
 * client; the callback may free or reuse it. */
typedef void (*td_http_done_cb)(struct td_http_req *req, CURLcode res, long status);

/*
 * One request. The caller owns it, fills `easy` through td_http_req_init()
 * and curl_easy_setopt, and must keep it alive until done is called or
 * td_http_cancel() returns.
 */
struct td_http_req {
	CURL *easy;
	td_http_done_cb done;
	void *arg;
	struct td_buf body;       /* response body, up to body_cap bytes */
	size_t body_cap;
	bool truncated;           /* the body was longer than body_cap */
	bool active;              /* started: in curl or in the client's queue */
	bool queued;              /* waiting in the client's queue */
	struct td_http_req *qnext, *qprev;
	char errbuf[CURL_ERROR_SIZE];
};

struct td_http_limits {
	long max_host_connections;   /* CURLMOPT_MAX_HOST_CONNECTIONS, 0: none */
	long max_total_connections;  /* CURLMOPT_MAX_TOTAL_CONNECTIONS, 0: none */
};

/** Create a client on @reactor and @wheel. Returns 0 or -ENOMEM. */
int td_http_new(struct td_http **out, struct td_reactor *reactor,
		struct td_wheel *wheel, const struct td_http_limits *limits);
/** Destroy: requests still active are removed without their callback. Their
 * sockets' polls are cancelled; call td_reactor_run_once a few times after
 * this so the completions arrive before the ring is torn down. Accepts NULL. */
void td_http_free(struct td_http *h);

/** Initialise @req for @url (body cap @body_cap, request timeout
 * @timeout_ms, 0: none) with an easy handle from @h's pool (reset) or a new
 * one. Returns 0 or -ENOMEM. */
int td_http_req_init(struct td_http *h, struct td_http_req *req, const char *url,
		     size_t body_cap, long timeout_ms);
/** Release the buffers of a request that is not active and give its easy
 * handle back to @h's pool. */
void td_http_req_finish(struct td_http *h, struct td_http_req *req);

/** Start @req; @done is called exactly once unless td_http_cancel() is
 * called first. Returns 0, or -EINVAL if curl refuses (done is not called). */
int td_http_start(struct td_http *h, struct td_http_req *req);
/** Stop an active request without calling done. Not from inside a curl
 * callback. */
void td_http_cancel(struct td_http *h, struct td_http_req *req);
/** Number of requests in flight. */
int td_http_running(const struct td_http *h);
/** Requests handed to curl, and waiting in the client's queue. */
int td_http_in_curl(const struct td_http *h);
int td_http_queued(const struct td_http *h);

#endif
