/*
 * libcurl multi on io_uring.
 *
 * CURLMOPT_SOCKETFUNCTION tells which sockets curl wants watched for what;
 * each gets a struct sock (attached with curl_multi_assign) carrying a
 * one-shot POLL_ADD with the wanted mask, re-armed after every completion
 * while curl still wants it. One-shot polls are level-triggered at arm time,
 * so nothing curl left unread is missed; a multishot poll would only report
 * new wake-ups. When curl changes the mask of an armed poll the poll is
 * cancelled and re-armed from its completion. CURL_POLL_REMOVE marks the
 * sock dead: its poll is cancelled (closing an fd does not end an io_uring
 * poll) and the sock is freed once the last completion has arrived.
 *
 * CURLMOPT_TIMERFUNCTION maps to one wheel timer. curl_multi_socket_action
 * is never called from inside a curl callback (curl forbids it): a
 * zero timeout is a wheel timer due now, fired on the next advance.
 *
 * Finished transfers are collected after each socket_action with
 * curl_multi_info_read, removed from the multi handle, and only then
 * reported, so a done callback may free or restart its request.
 */
#include "triggerd/http_client.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "reactor.h"
#include "triggerd/triggerd.h"

struct sock;

struct td_http {
	CURLM *multi;
	struct sock *socks;  /* every live sock, for td_http_free */
	struct td_reactor *reactor;
	struct td_wheel *wheel;
	struct td_timer timer;
	int running;
	bool in_action;  /* inside curl_multi_socket_action */
	/* Idle easy handles: creating one per poll cost a measurable share of
	 * the CPU at 10k polls/s (allocation and default setup). */
	CURL *pool[64];
	int npool;
	/* At most max_in_curl transfers are handed to curl; the rest wait
	 * here, FIFO. curl 7.88's curl_multi_remove_handle is linear in the
	 * handles the multi holds: with thousands of polls queued behind a
	 * few per-host connections inside curl, every completion paid for all
	 * of them and the loop spiralled to 100% CPU. */
	int in_curl, max_in_curl, nqueued;
	struct td_http_req *qhead, *qtail;
};

struct sock {
	struct td_http *h;
	struct sock *next, **pprev;
	curl_socket_t fd;
	struct td_op op;
	unsigned want;      /* POLLIN | POLLOUT, from curl */
	unsigned armed;     /* mask of the poll in flight, 0: none */
	bool cancelling;
	bool dead;          /* curl removed it */
};

static void sock_arm(struct sock *k)
{
	struct io_uring_sqe *sqe = td_reactor_sqe(k->h->reactor, &k->op);
	io_uring_prep_poll_add(sqe, k->fd, k->want);
	k->armed = k->want;
}

static void sock_unlink(struct sock *k)
{
	if (k->pprev) {
		*k->pprev = k->next;
		if (k->next)
			k->next->pprev = k->pprev;
		k->pprev = NULL;
	}
}

static void sock_maybe_free(struct sock *k)
{
	if (k->dead && !k->armed) {
		sock_unlink(k);
		free(k);
	}
}

/* Re-arm or cancel so the poll in flight matches what curl wants. */
static void sock_sync(struct sock *k)
{
	if (k->armed) {
		if ((k->dead || k->armed != k->want) && !k->cancelling) {
			k->cancelling = true;
			td_reactor_cancel(k->h->reactor, &k->op);
		}
		return;
	}
	if (!k->dead && k->want)
		sock_arm(k);
}

static int add_to_curl(struct td_http *h, struct td_http_req *req)
{
	if (curl_multi_add_handle(h->multi, req->easy) != CURLM_OK)
		return -EINVAL;
	h->in_curl++;
	return 0;
}

static void unqueue(struct td_http *h, struct td_http_req *req)
{
	if (req->qprev)
		req->qprev->qnext = req->qnext;
	else
		h->qhead = req->qnext;
	if (req->qnext)
		req->qnext->qprev = req->qprev;
	else
		h->qtail = req->qprev;
	req->qnext = req->qprev = NULL;
	req->queued = false;
	h->nqueued--;
}

/* Hand queued requests to curl while there is room. */
static void feed(struct td_http *h)
{
	while (h->qhead && h->in_curl < h->max_in_curl) {
		struct td_http_req *req = h->qhead;
		unqueue(h, req);
		if (add_to_curl(h, req) != 0) {
			req->active = false;
			req->done(req, CURLE_FAILED_INIT, 0);
		}
	}
}

static void check_done(struct td_http *h)
{
	CURLMsg *msg;
	int left;
	while ((msg = curl_multi_info_read(h->multi, &left))) {
		if (msg->msg != CURLMSG_DONE)
			continue;
		CURL *easy = msg->easy_handle;
		CURLcode res = msg->data.result;
		struct td_http_req *req = NULL;
		long status = 0;
		curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&req);
		curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
		curl_multi_remove_handle(h->multi, easy);
		h->in_curl--;
		req->active = false;
		req->done(req, res, status);
	}
	feed(h);
}

static void action(struct td_http *h, curl_socket_t fd, int ev)
{
	h->in_action = true;
	curl_multi_socket_action(h->multi, fd, ev, &h->running);
	h->in_action = false;
	check_done(h);
}

static void sock_cb(struct td_op *op, int res, uint32_t flags)
{
	struct sock *k = td_container_of(op, struct sock, op);
	struct td_http *h = k->h;
	k->armed = 0;
	bool was_cancel = k->cancelling || res == -ECANCELED;
	k->cancelling = false;
	if (!k->dead && !was_cancel) {
		int ev = 0;
		if (res < 0)
			ev = CURL_CSELECT_ERR;
		else {
			if (res & POLLIN)
				ev |= CURL_CSELECT_IN;
			if (res & POLLOUT)
				ev |= CURL_CSELECT_OUT;
			if (res & (POLLERR | POLLHUP))
				ev |= CURL_CSELECT_ERR;
		}
		/* Keep the sock alive through the call: curl may REMOVE it. */
		k->armed = ~0u;
		action(h, k->fd, ev);
		k->armed = 0;
	}
	sock_sync(k);
	sock_maybe_free(k);
}

static int socket_fn(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
	struct td_http *h = userp;
	struct sock *k = socketp;
	if (what == CURL_POLL_REMOVE) {
		if (k) {
			k->dead = true;
			k->want = 0;
			curl_multi_assign(h->multi, fd, NULL);
			/* During sock_cb's action the poll is accounted as armed
			 * (~0u) and sock_cb finishes the job. */
			if (k->armed != ~0u) {
				sock_sync(k);
				sock_maybe_free(k);
			}
		}
		return 0;
	}
	if (!k) {
		k = calloc(1, sizeof(*k));
		if (!k)
			return -1;
		k->h = h;
		k->fd = fd;
		k->op.cb = sock_cb;
		k->next = h->socks;
		if (h->socks)
			h->socks->pprev = &k->next;
		h->socks = k;
		k->pprev = &h->socks;
		curl_multi_assign(h->multi, fd, k);
	}
	k->want = (what & CURL_POLL_IN ? POLLIN : 0) | (what & CURL_POLL_OUT ? POLLOUT : 0);
	if (k->armed != ~0u)
		sock_sync(k);
	return 0;
}

static void timer_cb(struct td_timer *t, uint64_t now)
{
	struct td_http *h = td_container_of(t, struct td_http, timer);
	action(h, CURL_SOCKET_TIMEOUT, 0);
}

static int timer_fn(CURLM *multi, long timeout_ms, void *userp)
{
	struct td_http *h = userp;
	if (timeout_ms < 0)
		td_wheel_cancel(h->wheel, &h->timer);
	else
		td_wheel_add(h->wheel, &h->timer, td_mono_ms() + (uint64_t)timeout_ms);
	return 0;
}

int td_http_new(struct td_http **out, struct td_reactor *reactor,
		struct td_wheel *wheel, const struct td_http_limits *limits)
{
	struct td_http *h = calloc(1, sizeof(*h));
	if (!h)
		return -ENOMEM;
	h->multi = curl_multi_init();
	if (!h->multi) {
		free(h);
		return -ENOMEM;
	}
	h->reactor = reactor;
	h->wheel = wheel;
	h->max_in_curl = limits && limits->max_total_connections ?
			 (int)limits->max_total_connections : 256;
	td_timer_init(&h->timer, timer_cb);
	curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, socket_fn);
	curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h);
	curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, timer_fn);
	curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, h);
	if (limits && limits->max_host_connections)
		curl_multi_setopt(h->multi, CURLMOPT_MAX_HOST_CONNECTIONS,
				  limits->max_host_connections);
	if (limits && limits->max_total_connections)
		curl_multi_setopt(h->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS,
				  limits->max_total_connections);
	*out = h;
	return 0;
}

void td_http_free(struct td_http *h)
{
	if (!h)
		return;
	curl_multi_cleanup(h->multi);
	/* After the cleanup: it may still call the timer callback. */
	td_wheel_cancel(h->wheel, &h->timer);
	while (h->npool)
		curl_easy_cleanup(h->pool[--h->npool]);
	/* Whatever curl did not report removed: polls in flight are cancelled
	 * and their completions free the sock (without touching h). */
	while (h->socks) {
		struct sock *k = h->socks;
		sock_unlink(k);
		k->dead = true;
		k->want = 0;
		if (k->armed) {
			if (!k->cancelling)
				td_reactor_cancel(h->reactor, &k->op);
			k->cancelling = true;
		} else {
			free(k);
		}
	}
	free(h);
}

static size_t write_fn(char *p, size_t size, size_t n, void *userp)
{
	struct td_http_req *req = userp;
	size_t len = size * n;
	size_t room = req->body_cap > req->body.len ? req->body_cap - req->body.len : 0;
	size_t take = len < room ? len : room;
	if (take && td_buf_append(&req->body, p, take) != 0)
		return 0; /* out of memory: curl fails the transfer */
	if (take < len)
		req->truncated = true;
	return len;
}

int td_http_req_init(struct td_http *h, struct td_http_req *req, const char *url,
		     size_t body_cap, long timeout_ms)
{
	memset(req, 0, sizeof(*req));
	if (h->npool) {
		req->easy = h->pool[--h->npool];
		curl_easy_reset(req->easy);
	} else {
		req->easy = curl_easy_init();
	}
	if (!req->easy)
		return -ENOMEM;
	req->body_cap = body_cap;
	curl_easy_setopt(req->easy, CURLOPT_URL, url);
	curl_easy_setopt(req->easy, CURLOPT_PRIVATE, req);
	curl_easy_setopt(req->easy, CURLOPT_WRITEFUNCTION, write_fn);
	curl_easy_setopt(req->easy, CURLOPT_WRITEDATA, req);
	curl_easy_setopt(req->easy, CURLOPT_ERRORBUFFER, req->errbuf);
	curl_easy_setopt(req->easy, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(req->easy, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(req->easy, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
	if (timeout_ms > 0)
		curl_easy_setopt(req->easy, CURLOPT_TIMEOUT_MS, timeout_ms);
	return 0;
}

void td_http_req_finish(struct td_http *h, struct td_http_req *req)
{
	if (req->easy) {
		if (h && h->npool < (int)TD_ARRAY_LEN(h->pool))
			h->pool[h->npool++] = req->easy;
		else
			curl_easy_cleanup(req->easy);
	}
	req->easy = NULL;
	td_buf_finish(&req->body);
}

int td_http_start(struct td_http *h, struct td_http_req *req)
{
	td_buf_reset(&req->body);
	req->truncated = false;
	req->errbuf[0] = '\0';
	/* Behind anything already waiting (FIFO), or when curl is full. */
	if (h->qhead || h->in_curl >= h->max_in_curl) {
		req->qnext = NULL;
		req->qprev = h->qtail;
		if (h->qtail)
			h->qtail->qnext = req;
		else
			h->qhead = req;
		h->qtail = req;
		req->queued = true;
		h->nqueued++;
		req->active = true;
		return 0;
	}
	if (add_to_curl(h, req) != 0)
		return -EINVAL;
	req->active = true;
	return 0;
}

void td_http_cancel(struct td_http *h, struct td_http_req *req)
{
	if (!req->active)
		return;
	if (req->queued) {
		unqueue(h, req);
	} else {
		curl_multi_remove_handle(h->multi, req->easy);
		h->in_curl--;
		feed(h);
	}
	req->active = false;
}

int td_http_in_curl(const struct td_http *h)
{
	return h->in_curl;
}

int td_http_queued(const struct td_http *h)
{
	return h->nqueued;
}

int td_http_running(const struct td_http *h)
{
	return h->running;
}
