/*
 * The engine and its shard loop.
 *
 * One iteration: advance the wheel to now (firing what is due), give held
 * triggers another go, read more submissions if there is room, batch the
 * sink's records into script calls, write hiredis output directly, then
 * submit to io_uring and wait for completions, no longer than until the
 * wheel's next deadline.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"
#include "engine_i.h"
#include "triggerd/connections.h"
#include "triggerd/http_client.h"
#include "triggerd/log.h"
#include "triggerd/ratelimit.h"
#include "triggerd/ssrf.h"

#define RING_ENTRIES 1024

void td_config_defaults(struct td_config *c)
{
	memset(c, 0, sizeof(*c));
	snprintf(c->prefix, sizeof(c->prefix), "td:");
	snprintf(c->consumer, sizeof(c->consumer), "triggerd-0");
	c->sink_max = 100000;
	c->batch_max = 256;
	c->read_count = 1000;
	c->dedup_ttl_s = 86400;
	c->shutdown_ms = 5000;
	/* About 100 us of cache-missing list moves at ~100 ns each. */
	c->precascade_budget = 1024;
	c->http.max_host_connections = 6;
	c->http.max_total_connections = 256;
	snprintf(c->api_listen, sizeof(c->api_listen), "127.0.0.1:7480");
	c->webhook_body_max = 1024 * 1024;
	c->webhook_payload_max = 64 * 1024;
	c->webhook_max_conns = 10000;
	c->http_header_timeout_ms = 10000;
	c->http_idle_timeout_ms = 60000;
}

const char *td_strerror(int err)
{
	switch (err) {
	case 0: return "ok";
	case TD_EINVAL_SPEC: return "invalid spec";
	case TD_EJSON: return "invalid JSON";
	case TD_EMSGPACK: return "invalid msgpack";
	case TD_EREDIS: return "redis unavailable or failed";
	case TD_EFULL: return "buffer full";
	case TD_EEXIST: return "already active";
	case TD_ENOTFOUND: return "not found";
	case TD_ETOOBIG: return "too big";
	}
	return err < 0 && err > -4000 ? strerror(-err) : "unknown error";
}

struct td_http *td_shard_http(struct td_shard *s)
{
	return s->http;
}

struct td_ratelimit *td_shard_ratelimit(struct td_shard *s)
{
	return s->eng->cfg.ratelimit;
}

const struct td_ssrf *td_shard_ssrf(struct td_shard *s)
{
	return s->eng->cfg.ssrf;
}

const struct td_conns *td_shard_conns(struct td_shard *s)
{
	return s->eng->cfg.conns;
}

void td_shard_count(struct td_shard *s, enum td_counter c, unsigned long n)
{
	if ((unsigned)c < TD_CNT__MAX)
		s->stats.counters[c] += n;
}

uint64_t td_shard_rand(struct td_shard *s)
{
	/* xorshift64*: jitter only, not for anything secret. */
	uint64_t x = s->rng;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	s->rng = x;
	return x * 0x2545f4914f6cdd1dULL;
}

static void writer_up(struct td_redis *r)
{
	struct td_shard *s = r->owner;
	td_intake_writer_up(&s->intake);
}

static void reader_up(struct td_redis *r)
{
	struct td_shard *s = r->owner;
	td_intake_reader_up(&s->intake);
}

static void writer_down(struct td_redis *r)
{
	struct td_shard *s = r->owner;
	if (s->sink.nrec)
		td_warn("redis writer down; events are buffered until it is back",
			"\"buffered\":%zu,\"bound\":%zu", s->sink.nrec, s->sink.max);
}

#define STATS_INTERVAL_MS 10000

static void log_stats(struct td_shard *s, const char *msg)
{
	size_t n = s->table.count;
	size_t table_bytes = s->table.nbuckets * sizeof(*s->table.buckets);
	td_info(msg, "\"triggers\":%zu,\"held\":%s,\"sink_backlog\":%zu,"
		"\"posted\":%llu,\"success\":%llu,\"timeout\":%llu,\"cancelled\":%llu,"
		"\"rejected\":%llu,\"trigger_bytes\":%zu,\"table_bytes\":%zu,"
		"\"bytes_per_trigger\":%.1f,\"http_polls\":%llu,\"http_transport_errors\":%llu,"
		"\"http_5xx\":%llu,\"http_rate_limited\":%llu,\"http_ssrf_denied\":%llu",
		n, s->held_head ? "true" : "false", s->sink.nrec, s->sink.posted,
		s->stats.fired[TD_SUCCESS], s->stats.fired[TD_TIMEOUT],
		s->stats.fired[TD_CANCELLED], s->stats.fired[TD_REJECTED],
		s->stats.trigger_bytes, table_bytes,
		n ? (double)(s->stats.trigger_bytes + table_bytes) / (double)n : 0.0,
		s->stats.counters[TD_CNT_HTTP_POLLS], s->stats.counters[TD_CNT_HTTP_TRANSPORT],
		s->stats.counters[TD_CNT_HTTP_5XX], s->stats.counters[TD_CNT_HTTP_RATELIMITED],
		s->stats.counters[TD_CNT_HTTP_SSRF]);
}

static void stats_cb(struct td_timer *t, uint64_t now)
{
	struct td_shard *s = td_container_of(t, struct td_shard, stats_timer);
	log_stats(s, "stats");
	td_wheel_add(&s->wheel, t, now + STATS_INTERVAL_MS);
}

static void sig_arm(struct td_shard *s)
{
	struct io_uring_sqe *sqe = td_reactor_sqe(&s->reactor, &s->sig_op);
	io_uring_prep_read(sqe, s->sigfd, &s->siginfo, sizeof(s->siginfo), 0);
}

static void sig_cb(struct td_op *op, int res, uint32_t flags)
{
	struct td_shard *s = td_container_of(op, struct td_shard, sig_op);
	if (res == (int)sizeof(s->siginfo)) {
		if (!s->stopping) {
			td_info("shutting down", "\"signal\":%u,\"buffered\":%zu",
				s->siginfo.ssi_signo, s->sink.nrec);
			s->stopping = true;
			s->stop_deadline_ns = td_mono_ns() +
				(int64_t)s->eng->cfg.shutdown_ms * 1000000;
			/* No new submissions; the writer stays to flush. */
			td_redis_close(&s->reader);
			td_hooks_stop(s->hooks);
			td_api_stop(s->api);
		} else {
			td_warn("second signal: exiting without waiting for Redis", NULL);
			s->stop_deadline_ns = 0;
		}
	}
	sig_arm(s);
}

static int shard_init(struct td_engine *e, struct td_shard *s, unsigned index)
{
	memset(s, 0, sizeof(*s));
	s->eng = e;
	s->index = index;
	s->sigfd = -1;
	msgpack_sbuffer_init(&s->scratch);
	int rc = td_reactor_init(&s->reactor, RING_ENTRIES);
	if (rc) {
		td_error("io_uring setup failed", "\"error\":\"%s\"", strerror(-rc));
		return rc;
	}
	td_wheel_init(&s->wheel, td_mono_ms());
	if ((rc = td_table_init(&s->table)))
		return rc;
	td_redis_init(&s->writer, &s->reactor, &s->wheel, &e->cfg.redis, "writer");
	td_redis_init(&s->reader, &s->reactor, &s->wheel, &e->cfg.redis, "reader");
	s->writer.owner = s->reader.owner = s;
	s->writer.on_up = writer_up;
	s->writer.on_down = writer_down;
	s->reader.on_up = reader_up;
	if ((rc = td_sink_init(&s->sink, s, &s->writer, e->cfg.sink_max, e->cfg.batch_max)))
		return rc;
	s->intake.shard = s;
	if ((rc = td_http_new(&s->http, &s->reactor, &s->wheel, &e->cfg.http)))
		return rc;
	if ((rc = td_hooks_new(s, &s->hooks)))
		return rc;
	if ((rc = td_rwatch_new(s, &s->rwatch)) || (rc = td_kwatch_new(s, &s->kwatch)) ||
	    (rc = td_fswatch_new(s, &s->fswatch)))
		return rc;
	s->rng = (uint64_t)td_mono_ns() * 0x9e3779b97f4a7c15ULL | 1;
	td_timer_init(&s->stats_timer, stats_cb);
	td_wheel_add(&s->wheel, &s->stats_timer, td_mono_ms() + STATS_INTERVAL_MS);

	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	s->sigfd = signalfd(-1, &set, SFD_CLOEXEC);
	if (s->sigfd < 0)
		return -errno;
	s->sig_op.cb = sig_cb;
	sig_arm(s);
	return 0;
}

int td_engine_init(struct td_engine *e, const struct td_config *cfg)
{
	memset(e, 0, sizeof(*e));
	e->cfg = *cfg;
	snprintf(e->key_submit, sizeof(e->key_submit), "%ssubmit", cfg->prefix);
	snprintf(e->key_triggers, sizeof(e->key_triggers), "%striggers", cfg->prefix);
	snprintf(e->key_events, sizeof(e->key_events), "%sevents", cfg->prefix);
	/* SIGINT/SIGTERM arrive through the ring (signalfd), never as
	 * asynchronous handlers. Blocked before any thread exists. */
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigprocmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);
	return shard_init(e, &e->shard, 0);
}

/*
 * How long the ring may wait: until the wheel's next deadline, or the next
 * moment a slot becomes "upcoming" and can be re-placed ahead of time. A
 * big slot is thus moved down in chunks while the loop is idle, instead of
 * all at once when it comes due (which stalled the loop 6-10 ms per 100k
 * timers; see docs/benchmarks.md). @more: pre-cascade work is left, poll.
 */
static int64_t wait_ns(struct td_shard *s, bool more)
{
	if (more)
		return 0;
	uint64_t next = td_wheel_next(&s->wheel);
	uint64_t pc = s->eng->cfg.precascade_budget ?
		      td_wheel_precascade_next(&s->wheel) : UINT64_MAX;
	if (pc < next)
		next = pc;
	if (next == UINT64_MAX)
		return -1;
	int64_t ns = (int64_t)next * 1000000 - td_mono_ns();
	return ns < 0 ? 0 : ns;
}

int td_engine_run(struct td_engine *e)
{
	struct td_shard *s = &e->shard;
	char addr[300];
	td_info("starting", "\"version\":\"%s\",\"redis\":\"%s\",\"prefix\":\"%s\",\"consumer\":\"%s\"",
		TD_VERSION, td_redis_addr_str(&e->cfg.redis, addr, sizeof(addr)),
		e->cfg.prefix, e->cfg.consumer);
	if (td_hooks_listen(s->hooks) || td_api_new(s, &s->api))
		return 1;
	td_redis_start(&s->writer);
	td_redis_start(&s->reader);
	for (;;) {
		if (!s->stopping) {
			td_wheel_advance(&s->wheel, td_mono_ms());
			td_shard_release_held(s);
			td_intake_kick(&s->intake);
		} else {
			/* Drain: the wheel still runs (Redis reconnects are on
			 * it, and due triggers keep firing into the sink); no
			 * new submissions are read. Whatever is not flushed by
			 * the deadline stays stored or pending in Redis. */
			if (td_sink_idle(&s->sink) || td_mono_ns() >= s->stop_deadline_ns)
				break;
			td_wheel_advance(&s->wheel, td_mono_ms());
		}
		td_sink_flush(&s->sink);
		td_redis_flush(&s->writer);
		td_redis_flush(&s->reader);
		/* After advance (upcoming slots follow the wheel's now) and
		 * after the flushes (I/O first, then idle-time work). */
		unsigned budget = e->cfg.precascade_budget;
		bool more = budget && td_wheel_precascade(&s->wheel, budget) == budget;
		int64_t ns = wait_ns(s, more);
		if (s->stopping && (ns < 0 || ns > 10000000))
			ns = 10000000;
		int rc = td_reactor_run_once(&s->reactor, ns);
		if (rc < 0) {
			td_error("io_uring wait failed", "\"error\":\"%s\"", strerror(-rc));
			return 1;
		}
	}
	if (!td_sink_idle(&s->sink))
		td_warn("exiting with unflushed records; they are re-done at next start",
			"\"records\":%zu", s->sink.nrec);
	log_stats(s, "stopped");
	return 0;
}

void td_engine_finish(struct td_engine *e)
{
	struct td_shard *s = &e->shard;
	/* No new requests from here: answers still due close their
	 * connections instead of starting pipelined requests. */
	td_hooks_stop(s->hooks);
	td_api_stop(s->api);
	/* Stopping the writer runs every pending reply callback with NULL,
	 * which puts batches on the retry list; finish frees them. */
	td_redis_close(&s->reader);
	s->stopping = true;
	td_redis_close(&s->writer);
	td_sink_finish(&s->sink);
	/* Triggers first (they cancel their requests), then the client. */
	for (size_t i = 0; i < s->table.nbuckets; i++) {
		struct td_trigger *t = s->table.buckets[i];
		while (t) {
			struct td_trigger *next = t->hnext;
			if (t->state == TD_T_ACTIVE)
				t->kind->stop(t);
			td_trigger_free(t);
			t = next;
		}
	}
	td_table_finish(&s->table);
	td_http_free(s->http);
	s->http = NULL;
	td_rwatch_stop(s->rwatch);
	td_kwatch_stop(s->kwatch);
	td_fswatch_stop(s->fswatch);
	/* Let cancelled polls complete so adapter state is freed. */
	for (int i = 0; i < 8; i++)
		if (td_reactor_run_once(&s->reactor, 1000000) <= 0)
			break;
	if (s->sigfd >= 0)
		close(s->sigfd);
	td_reactor_finish(&s->reactor);
	/* After the ring: their buffers were registered with it. */
	td_hooks_free(s->hooks);
	td_api_free(s->api);
	td_rwatch_free(s->rwatch);
	td_kwatch_free(s->kwatch);
	td_fswatch_free(s->fswatch);
	s->rwatch = NULL;
	s->kwatch = NULL;
	s->fswatch = NULL;
	s->hooks = NULL;
	s->api = NULL;
	msgpack_sbuffer_destroy(&s->scratch);
	td_ratelimit_free(e->cfg.ratelimit);
	td_ssrf_free(e->cfg.ssrf);
	td_conns_free(e->cfg.conns);
	e->cfg.conns = NULL;
	td_ratelimit_free(e->cfg.webhook_rl);
	e->cfg.webhook_rl = NULL;
	free(e->cfg.retain);
	e->cfg.retain = NULL;
	e->cfg.ratelimit = NULL;
	e->cfg.ssrf = NULL;
}
