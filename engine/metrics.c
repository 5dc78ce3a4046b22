/*
 * /metrics: Prometheus text exposition format 0.0.4. Everything here is a
 * read of counters the shard keeps anyway; rendering is O(kinds + status
 * codes seen), never O(triggers).
 */
#include <stdio.h>
#include <string.h>

#include "engine_i.h"
#include "httpd.h"
#include "triggerd/fswatch.h"

const unsigned td_late_bounds_ms[TD_LATE_BUCKETS] = {
	1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 10000,
};

static void head(struct td_buf *b, const char *name, const char *type, const char *help)
{
	td_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void http_server(struct td_buf *b, const struct td_httpd *srv)
{
	if (!srv)
		return;
	const struct td_httpd_stats *st = td_httpd_stats(srv);
	const char *name = td_httpd_name(srv);
	for (int i = 0; i < TD_HTTPD_CODES; i++)
		if (st->by_code[i])
			td_buf_printf(b, "triggerd_http_requests_total{listener=\"%s\",code=\"%d\"} %llu\n",
				      name, i + 100, st->by_code[i]);
}

static void http_conns(struct td_buf *b, const struct td_httpd *srv)
{
	if (!srv)
		return;
	const struct td_httpd_stats *st = td_httpd_stats(srv);
	td_buf_printf(b, "triggerd_http_connections{listener=\"%s\"} %u\n",
		      td_httpd_name(srv), st->conns);
}

int td_metrics_render(struct td_shard *s, struct td_buf *b)
{
	static const char *const statuses[] = {"success", "failure", "timeout", "rejected",
					       "cancelled"};
	head(b, "triggerd_triggers", "gauge", "Triggers held in memory, by kind.");
	for (unsigned i = 0; td_kind_at(i); i++)
		td_buf_printf(b, "triggerd_triggers{kind=\"%s\"} %zu\n", td_kind_at(i)->name,
			      s->table.by_kind[i]);
	head(b, "triggerd_trigger_bytes", "gauge", "Bytes allocated for held triggers.");
	td_buf_printf(b, "triggerd_trigger_bytes %zu\n", s->stats.trigger_bytes);
	head(b, "triggerd_held_back_total", "counter",
	     "Firings held back because the Redis write buffer was full.");
	td_buf_printf(b, "triggerd_held_back_total %llu\n", s->stats.held);

	head(b, "triggerd_events_total", "counter", "Events queued for posting, by status.");
	for (unsigned i = 0; i < TD_ARRAY_LEN(statuses); i++)
		td_buf_printf(b, "triggerd_events_total{status=\"%s\"} %llu\n", statuses[i],
			      s->stats.fired[i]);
	head(b, "triggerd_events_posted_total", "counter", "Events Redis has applied.");
	td_buf_printf(b, "triggerd_events_posted_total %llu\n", s->sink.posted);

	head(b, "triggerd_fire_lateness_seconds", "histogram",
	     "Time from a timed trigger's due time to its firing.");
	unsigned long long cum = 0;
	for (unsigned i = 0; i < TD_LATE_BUCKETS; i++) {
		cum += s->stats.late[i];
		td_buf_printf(b, "triggerd_fire_lateness_seconds_bucket{le=\"%g\"} %llu\n",
			      td_late_bounds_ms[i] / 1000.0, cum);
	}
	cum += s->stats.late[TD_LATE_BUCKETS];
	td_buf_printf(b, "triggerd_fire_lateness_seconds_bucket{le=\"+Inf\"} %llu\n", cum);
	td_buf_printf(b, "triggerd_fire_lateness_seconds_sum %.6f\n", s->stats.late_sum_s);
	td_buf_printf(b, "triggerd_fire_lateness_seconds_count %llu\n", s->stats.late_count);

	head(b, "triggerd_redis_write_backlog", "gauge",
	     "Records queued, in flight or awaiting retry towards Redis.");
	td_buf_printf(b, "triggerd_redis_write_backlog %zu\n", s->sink.nrec);
	head(b, "triggerd_redis_write_backlog_limit", "gauge", "Bound of the write backlog.");
	td_buf_printf(b, "triggerd_redis_write_backlog_limit %zu\n", s->sink.max);
	head(b, "triggerd_redis_write_errors_total", "counter", "Failed script calls.");
	td_buf_printf(b, "triggerd_redis_write_errors_total %llu\n", s->sink.errors);
	head(b, "triggerd_redis_up", "gauge", "Redis connection state (1 up).");
	td_buf_printf(b, "triggerd_redis_up{conn=\"writer\"} %d\n", s->writer.up);
	td_buf_printf(b, "triggerd_redis_up{conn=\"reader\"} %d\n", s->reader.up);
	head(b, "triggerd_redis_reconnects_total", "counter", "Redis reconnects.");
	td_buf_printf(b, "triggerd_redis_reconnects_total{conn=\"writer\"} %lu\n",
		      s->writer.reconnects);
	td_buf_printf(b, "triggerd_redis_reconnects_total{conn=\"reader\"} %lu\n",
		      s->reader.reconnects);

	head(b, "triggerd_submissions_total", "counter", "Submissions by outcome.");
	td_buf_printf(b, "triggerd_submissions_total{outcome=\"accepted\"} %llu\n",
		      s->intake.accepted);
	td_buf_printf(b, "triggerd_submissions_total{outcome=\"rejected\"} %llu\n",
		      s->intake.rejected);
	td_buf_printf(b, "triggerd_submissions_total{outcome=\"cancel\"} %llu\n",
		      s->intake.cancels);

	head(b, "triggerd_http_polls_total", "counter", "HTTP poll requests completed.");
	td_buf_printf(b, "triggerd_http_polls_total %llu\n", s->stats.counters[TD_CNT_HTTP_POLLS]);
	head(b, "triggerd_http_poll_errors_total", "counter", "HTTP poll problems, by kind.");
	td_buf_printf(b, "triggerd_http_poll_errors_total{kind=\"transport\"} %llu\n",
		      s->stats.counters[TD_CNT_HTTP_TRANSPORT]);
	td_buf_printf(b, "triggerd_http_poll_errors_total{kind=\"5xx\"} %llu\n",
		      s->stats.counters[TD_CNT_HTTP_5XX]);
	td_buf_printf(b, "triggerd_http_poll_errors_total{kind=\"rate_limited\"} %llu\n",
		      s->stats.counters[TD_CNT_HTTP_RATELIMITED]);
	td_buf_printf(b, "triggerd_http_poll_errors_total{kind=\"ssrf_denied\"} %llu\n",
		      s->stats.counters[TD_CNT_HTTP_SSRF]);

	struct td_hooks_stats hs;
	td_hooks_get_stats(s->hooks, &hs);
	head(b, "triggerd_webhook_deliveries_total", "counter",
	     "Webhook deliveries received, and what became of them.");
	td_buf_printf(b, "triggerd_webhook_deliveries_total{result=\"received\"} %llu\n", hs.deliveries);
	td_buf_printf(b, "triggerd_webhook_deliveries_total{result=\"unauthorized\"} %llu\n", hs.unauthorized);
	td_buf_printf(b, "triggerd_webhook_deliveries_total{result=\"duplicate\"} %llu\n", hs.duplicates);
	td_buf_printf(b, "triggerd_webhook_deliveries_total{result=\"no_waiter\"} %llu\n", hs.no_waiter);
	td_buf_printf(b, "triggerd_webhook_deliveries_total{result=\"rate_limited\"} %llu\n", hs.rate_limited);
	td_buf_printf(b, "triggerd_webhook_deliveries_total{result=\"retained\"} %llu\n", hs.retained);
	head(b, "triggerd_webhook_fired_total", "counter", "Triggers fired by webhook deliveries.");
	td_buf_printf(b, "triggerd_webhook_fired_total{from=\"live\"} %llu\n", hs.fired);
	td_buf_printf(b, "triggerd_webhook_fired_total{from=\"retained\"} %llu\n", hs.replayed);
	head(b, "triggerd_webhook_retained", "gauge", "Deliveries retained for late waiters.");
	td_buf_printf(b, "triggerd_webhook_retained %zu\n", hs.retained_now);

	struct td_fswatch_stats fs;
	td_fswatch_stats(s, &fs);
	head(b, "triggerd_file_dirs", "gauge", "Directories file triggers wait in, by how.");
	td_buf_printf(b, "triggerd_file_dirs{mode=\"inotify\"} %zu\n", fs.watches);
	td_buf_printf(b, "triggerd_file_dirs{mode=\"polled\"} %zu\n", fs.polled);
	head(b, "triggerd_file_events_total", "counter", "inotify events read.");
	td_buf_printf(b, "triggerd_file_events_total %llu\n", fs.events);
	head(b, "triggerd_file_overflows_total", "counter", "inotify queue overflows (each a rescan).");
	td_buf_printf(b, "triggerd_file_overflows_total %llu\n", fs.overflows);

	const struct td_httpd *srvs[] = {td_hooks_server(s->hooks), td_api_server(s->api)};
	head(b, "triggerd_http_requests_total", "counter", "HTTP requests answered, by status.");
	for (unsigned i = 0; i < TD_ARRAY_LEN(srvs); i++)
		http_server(b, srvs[i]);
	head(b, "triggerd_http_connections", "gauge", "Open HTTP connections.");
	for (unsigned i = 0; i < TD_ARRAY_LEN(srvs); i++)
		http_conns(b, srvs[i]);
	return b->data ? 0 : -1;
}
