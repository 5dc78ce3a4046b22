/*
 * The `kafka` kind end to end: librdkafka's mock cluster started in this
 * process (reachable over loopback TCP), a real redis-server, and the real
 * triggerd reaching the cluster through a named connection
 * (AIRFLOW_CONN_KAFKA_TEST, whose extra is librdkafka configuration). A
 * producer in this process writes the messages; a plain consumer in the
 * same group reads the committed offsets.
 *
 * The mock's group coordinator waits a session timeout for members that
 * vanished, so the connection sets session.timeout.ms to 3 s: a restarted
 * triggerd is assigned its partitions within seconds.
 */
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "harness.h"

struct kfix {
	struct harness h;            /* first: harness helpers take it */
	rd_kafka_t *mrk;             /* owns the mock cluster */
	rd_kafka_mock_cluster_t *mc;
	rd_kafka_t *prod;
	rd_kafka_t *cons;            /* reads committed offsets */
	char bootstraps[256];
};

static void set_conns(const char *bs)
{
	char v[512];
	snprintf(v, sizeof(v), "{\"conn_type\":\"kafka\",\"extra\":{\"bootstrap.servers\":\"%s\","
		 "\"session.timeout.ms\":3000,\"heartbeat.interval.ms\":300}}", bs);
	setenv("AIRFLOW_CONN_KAFKA_TEST", v, 1);
	/* Airflow's default id, with the group in the extra. */
	snprintf(v, sizeof(v), "{\"conn_type\":\"kafka\",\"extra\":{\"bootstrap.servers\":\"%s\","
		 "\"group.id\":\"airflow\",\"session.timeout.ms\":\"3000\","
		 "\"heartbeat.interval.ms\":\"300\"}}", bs);
	setenv("AIRFLOW_CONN_KAFKA_DEFAULT", v, 1);
	setenv("AIRFLOW_CONN_KAFKA_NOBS", "{\"conn_type\":\"kafka\",\"extra\":{\"client.id\":\"x\"}}", 1);
	setenv("AIRFLOW_CONN_KAFKA_BADCONF", "{\"conn_type\":\"kafka\",\"extra\":"
	       "{\"bootstrap.servers\":\"127.0.0.1:1\",\"no.such.property\":\"1\"}}", 1);
}

static int setup(void **state)
{
	struct kfix *f = calloc(1, sizeof(*f));
	char err[256];
	if (!f || harness_redis_start(&f->h, false) != 0)
		return -1;
	rd_kafka_conf_t *c = rd_kafka_conf_new();
	rd_kafka_conf_set(c, "log_level", "0", err, sizeof(err));
	f->mrk = rd_kafka_new(RD_KAFKA_PRODUCER, c, err, sizeof(err));
	if (!f->mrk || !(f->mc = rd_kafka_mock_cluster_new(f->mrk, 1)))
		return -1;
	snprintf(f->bootstraps, sizeof(f->bootstraps), "%s", rd_kafka_mock_cluster_bootstraps(f->mc));
	c = rd_kafka_conf_new();
	rd_kafka_conf_set(c, "bootstrap.servers", f->bootstraps, err, sizeof(err));
	rd_kafka_conf_set(c, "linger.ms", "0", err, sizeof(err));
	if (!(f->prod = rd_kafka_new(RD_KAFKA_PRODUCER, c, err, sizeof(err))))
		return -1;
	set_conns(f->bootstraps);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct kfix *f = *state;
	/* triggerd first: it talks to the cluster. */
	harness_td_stop(&f->h, SIGKILL);
	harness_stop(&f->h);
	if (f->cons)
		rd_kafka_destroy(f->cons);
	rd_kafka_destroy(f->prod);
	rd_kafka_mock_cluster_destroy(f->mc);
	rd_kafka_destroy(f->mrk);
	free(f);
	return 0;
}

static void topic(struct kfix *f, const char *name, int parts)
{
	assert_int_equal(rd_kafka_mock_topic_create(f->mc, name, parts, 1), 0);
}

/* Produce one message (NULL key/value: null) and wait until it is stored. */
static void produce(struct kfix *f, const char *t, int32_t part, const char *key,
		    const char *value, const char *hname, const char *hval)
{
	rd_kafka_headers_t *hdrs = rd_kafka_headers_new(1);
	if (hname)
		rd_kafka_header_add(hdrs, hname, -1, hval, -1);
	rd_kafka_resp_err_t err = rd_kafka_producev(
		f->prod, RD_KAFKA_V_TOPIC(t), RD_KAFKA_V_PARTITION(part),
		RD_KAFKA_V_KEY(key, key ? strlen(key) : 0),
		RD_KAFKA_V_VALUE((void *)value, value ? strlen(value) : 0),
		RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
	if (err) {
		rd_kafka_headers_destroy(hdrs);
		fail_msg("produce: %s", rd_kafka_err2str(err));
	}
	assert_int_equal(rd_kafka_flush(f->prod, 10000), 0);
}

static int count_log(struct harness *h, const char *a, const char *b)
{
	FILE *fp = fopen(h->log, "r");
	if (!fp)
		return 0;
	char line[8192];
	int n = 0;
	while (fgets(line, sizeof(line), fp))
		n += strstr(line, a) && (!b || strstr(line, b));
	fclose(fp);
	return n;
}

static void wait_log_count(struct harness *h, const char *needle, int n, int timeout_ms)
{
	for (int waited = 0; waited < timeout_ms; waited += 50) {
		if (count_log(h, needle, NULL) >= n)
			return;
		sleep_ms(50);
	}
	fail_msg("log never had %d lines with %s", n, needle);
}

static void start_td(struct kfix *f)
{
	assert_int_equal(harness_td_start(&f->h, NULL), 0);
}

static void wait_stored(struct harness *h, const char *id)
{
	for (int i = 0; i < 300; i++) {
		if (redis_int(h, "HEXISTS td:triggers %s", id) == 1) {
			sleep_ms(20);
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

/* The group's committed offset of @t/@part (-1001: none yet). */
static int64_t committed(struct kfix *f, const char *group, const char *t, int32_t part)
{
	char err[256];
	if (f->cons)
		rd_kafka_destroy(f->cons);
	rd_kafka_conf_t *c = rd_kafka_conf_new();
	rd_kafka_conf_set(c, "bootstrap.servers", f->bootstraps, err, sizeof(err));
	rd_kafka_conf_set(c, "group.id", group, err, sizeof(err));
	f->cons = rd_kafka_new(RD_KAFKA_CONSUMER, c, err, sizeof(err));
	assert_non_null(f->cons);
	rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
	rd_kafka_topic_partition_list_add(l, t, part);
	int64_t off = -2;
	if (rd_kafka_committed(f->cons, l, 5000) == 0)
		off = l->elems[0].offset;
	rd_kafka_topic_partition_list_destroy(l);
	return off;
}

static void wait_committed(struct kfix *f, const char *group, const char *t, int32_t part,
			   int64_t want)
{
	int64_t got = -2;
	for (int i = 0; i < 100; i++) {
		if ((got = committed(f, group, t, part)) == want)
			return;
		sleep_ms(100);
	}
	fail_msg("committed offset of %s/%d is %lld, want %lld", t, part, (long long)got,
		 (long long)want);
}

static long long json_int(const char *json, const char *field)
{
	char needle[64];
	snprintf(needle, sizeof(needle), "\"%s\":", field);
	const char *p = strstr(json, needle);
	return p ? strtoll(p + strlen(needle), NULL, 10) : -1;
}

#define TRIG(id, args) "{\"id\":\"" id "\",\"kind\":\"kafka\",\"args\":{\"conn\":\"kafka_test\"," args "}}"

/* ---- firing ---------------------------------------------------------------- */

static void oneshot_fires_once_with_payload(void **state)
{
	struct kfix *f = *state;
	struct harness *h = &f->h;
	topic(f, "orders", 1);
	start_td(f);
	submit_wait(h, "{\"id\":\"k1\",\"kind\":\"kafka\",\"meta\":{\"task\":7},\"args\":{"
		       "\"conn\":\"kafka_test\",\"topics\":[\"orders\"],\"key\":\"o-1\"}}", "k1");
	wait_log_count(h, "kafka partitions assigned", 1, 20000);
	produce(f, "orders", 0, "o-2", "{\"n\":1}", NULL, NULL);
	produce(f, "orders", 0, "o-1", "{\"n\":2,\"s\":\"x\"}", "trace", "abc");
	struct event ev[2];
	assert_int_equal(wait_events(h, ev, 1, 10000), 1);
	assert_string_equal(ev[0].id, "k1");
	assert_string_equal(ev[0].status, "success");
	assert_string_equal(ev[0].kind, "kafka");
	const char *pl = ev[0].payload_json;
	assert_non_null(strstr(pl, "\"topic\":\"orders\""));
	assert_non_null(strstr(pl, "\"partition\":0"));
	assert_non_null(strstr(pl, "\"offset\":1"));
	assert_non_null(strstr(pl, "\"key\":\"o-1\""));
	assert_non_null(strstr(pl, "\"value\":{\"n\":2,\"s\":\"x\"}"));
	assert_non_null(strstr(pl, "\"headers\":{\"trace\":\"abc\"}"));
	assert_true(json_int(pl, "timestamp_ms") > now_ms() - 60000);
	assert_non_null(strstr(ev[0].meta_json, "\"task\":7"));
	/* One-shot: gone, and a second match posts nothing. */
	assert_int_equal(redis_int(h, "HEXISTS td:triggers k1"), 0);
	produce(f, "orders", 0, "o-1", "{\"n\":3}", NULL, NULL);
	assert_int_equal(read_events(h, ev, 2, 700), 0);
	/* A plain-text value stays a string. */
	submit_wait(h, TRIG("k2", "\"topics\":\"orders\",\"key\":\"t\""), "k2");
	produce(f, "orders", 0, "t", "plain words", NULL, NULL);
	assert_int_equal(wait_events(h, ev, 1, 10000), 1);
	assert_string_equal(ev[0].id, "k2");
	assert_non_null(strstr(ev[0].payload_json, "\"value\":\"plain words\""));
}

static void filters(void **state)
{
	struct kfix *f = *state;
	struct harness *h = &f->h;
	topic(f, "events", 1);
	/* Before any trigger: only a trigger with start "earliest" sees it. */
	produce(f, "events", 0, "early", "{}", NULL, NULL);
	sleep_ms(30);
	start_td(f);
	submit_wait(h, TRIG("fh", "\"topics\":[\"events\"],\"headers\":{\"type\":\"build\"}"), "fh");
	submit_wait(h, TRIG("fj", "\"topics\":[\"events\"],\"json_pointer\":\"/status\",\"equals\":\"done\""), "fj");
	submit_wait(h, TRIG("fr", "\"topics\":[\"events\"],\"value_regex\":\"^ERR-[0-9]+$\""), "fr");
	submit_wait(h, TRIG("fk", "\"topics\":[\"events\"],\"key\":\"k\",\"json_pointer\":\"/n\",\"equals\":3"), "fk");
	submit_wait(h, TRIG("se", "\"topics\":[\"events\"],\"key\":\"early\",\"start\":\"earliest\""), "se");
	submit_wait(h, TRIG("sl", "\"topics\":[\"events\"],\"key\":\"early\""), "sl");
	wait_log_count(h, "kafka partitions assigned", 1, 20000);
	struct event ev[8];
	assert_int_equal(wait_events(h, ev, 1, 10000), 1);
	assert_string_equal(ev[0].id, "se");
	/* Negatives, one per filter. */
	produce(f, "events", 0, "a", "{\"status\":\"x\"}", "type", "deploy");
	produce(f, "events", 0, "b", "{\"status\":\"running\"}", NULL, NULL);
	produce(f, "events", 0, "c", "ERR-x", NULL, NULL);
	produce(f, "events", 0, "k", "{\"n\":2}", NULL, NULL);
	produce(f, "events", 0, "j", "{\"n\":3}", NULL, NULL);
	produce(f, "events", 0, "d", "not json", NULL, NULL);
	assert_int_equal(read_events(h, ev, 8, 1000), 0);
	/* Positives. */
	produce(f, "events", 0, "a", "{}", "type", "build");
	produce(f, "events", 0, "b", "{\"status\":\"done\"}", NULL, NULL);
	produce(f, "events", 0, "c", "ERR-42", NULL, NULL);
	produce(f, "events", 0, "k", "{\"n\":3}", NULL, NULL);
	assert_int_equal(wait_events(h, ev, 4, 10000), 4);
	const char *want[] = {"fh", "fj", "fr", "fk"};
	for (int i = 0; i < 4; i++)
		assert_string_equal(ev[i].id, want[i]);
	assert_int_equal(read_events(h, ev, 8, 500), 0);
	assert_int_equal(redis_int(h, "HLEN td:triggers"), 1); /* sl still waits */
}

static void repeat_gets_every_match(void **state)
{
	struct kfix *f = *state;
	struct harness *h = &f->h;
	topic(f, "ticks", 3);
	start_td(f);
	submit_wait(h, "{\"id\":\"r\",\"kind\":\"kafka\",\"repeat\":true,\"args\":{\"conn\":\"kafka_test\","
		       "\"topics\":[\"ticks\"],\"json_pointer\":\"/ok\",\"equals\":true}}", "r");
	wait_log_count(h, "kafka partitions assigned", 1, 20000);
	for (int i = 0; i < 12; i++) {
		char v[64];
		snprintf(v, sizeof(v), "{\"ok\":%s,\"i\":%d}", i % 2 ? "false" : "true", i);
		produce(f, "ticks", 0, NULL, v, NULL, NULL);
	}
	struct event ev[8];
	assert_int_equal(wait_events(h, ev, 6, 10000), 6);
	for (int i = 0; i < 6; i++) {
		assert_string_equal(ev[i].id, "r");
		assert_int_equal(ev[i].seq, (uint64_t)i + 1);
		assert_int_equal(json_int(ev[i].payload_json, "offset"), 2 * i);
		assert_int_equal(json_int(ev[i].payload_json, "i"), 2 * i);
	}
	assert_int_equal(read_events(h, ev, 8, 500), 0);
	assert_int_equal(redis_int(h, "HEXISTS td:triggers r"), 1);
	assert_int_equal(redis_int(h, "XLEN td:events"), 6);
}

/* The offset moves only once Redis has the event. */
static void commits_after_posting(void **state)
{
	struct kfix *f = *state;
	struct harness *h = &f->h;
	topic(f, "jobs", 1);
	start_td(f);
	submit_wait(h, "{\"id\":\"c\",\"kind\":\"kafka\",\"repeat\":true,\"args\":{\"conn\":\"kafka_test\","
		       "\"topics\":[\"jobs\"],\"key\":\"c\"}}", "c");
	wait_log_count(h, "kafka partitions assigned", 1, 20000);
	produce(f, "jobs", 0, "c", "1", NULL, NULL);
	produce(f, "jobs", 0, "x", "2", NULL, NULL);
	produce(f, "jobs", 0, "c", "3", NULL, NULL);
	produce(f, "jobs", 0, "x", "4", NULL, NULL);
	struct event ev[4];
	assert_int_equal(wait_events(h, ev, 2, 10000), 2);
	wait_committed(f, "triggerd", "jobs", 0, 4);
	/* Redis refuses writes for a while: the event waits in the sink and
	 * the offset stays. */
	redisReply *r = redisCommand(h->c, "CLIENT PAUSE 2500 WRITE");
	assert_non_null(r);
	freeReplyObject(r);
	int64_t t0 = now_ms();
	produce(f, "jobs", 0, "c", "5", NULL, NULL);
	sleep_ms(1200);
	if (now_ms() - t0 < 2300) {
		assert_int_equal(committed(f, "triggerd", "jobs", 0), 4);
		assert_int_equal(redis_int(h, "XLEN td:events"), 2);
	}
	assert_int_equal(wait_events(h, ev, 1, 10000), 1);
	assert_int_equal(json_int(ev[0].payload_json, "offset"), 4);
	wait_committed(f, "triggerd", "jobs", 0, 5);
}

/* SIGKILL mid-stream, restart: every matching message posted exactly once. */
static void restart_loses_nothing_duplicates_nothing(void **state)
{
	struct kfix *f = *state;
	struct harness *h = &f->h;
	topic(f, "stream", 2);
	start_td(f);
	submit_wait(h, "{\"id\":\"all\",\"kind\":\"kafka\",\"repeat\":true,\"args\":{\"conn\":\"kafka_test\","
		       "\"topics\":[\"stream\"],\"value_regex\":\"^m\"}}", "all");
	submit_wait(h, TRIG("last", "\"topics\":[\"stream\"],\"key\":\"final\""), "last");
	wait_log_count(h, "kafka partitions assigned", 1, 20000);
	enum { N = 300 };
	char v[32];
	int sent = 0;
	for (; sent < 120; sent++) {
		snprintf(v, sizeof(v), "m%d", sent);
		produce(f, "stream", sent % 2, NULL, v, NULL, NULL);
	}
	/* Some of these are posted and not committed yet, some in flight. */
	harness_td_stop(h, SIGKILL);
	int assigned = count_log(h, "kafka partitions assigned", NULL);
	for (; sent < 200; sent++) {
		snprintf(v, sizeof(v), "m%d", sent);
		produce(f, "stream", sent % 2, NULL, v, NULL, NULL);
	}
	start_td(f);
	wait_log_count(h, "kafka partitions assigned", assigned + 1, 30000);
	for (; sent < N; sent++) {
		snprintf(v, sizeof(v), "m%d", sent);
		produce(f, "stream", sent % 2, NULL, v, NULL, NULL);
	}
	produce(f, "stream", 0, "final", "m-final", NULL, NULL);
	struct event *ev = calloc(N + 8, sizeof(*ev));
	int got = wait_events(h, ev, N + 2, 30000);
	assert_int_equal(got, N + 2);
	static int seen[2][N];
	memset(seen, 0, sizeof(seen));
	int finals = 0;
	for (int i = 0; i < got; i++) {
		if (!strcmp(ev[i].id, "last")) {
			finals++;
			continue;
		}
		assert_string_equal(ev[i].id, "all");
		long long p = json_int(ev[i].payload_json, "partition");
		long long o = json_int(ev[i].payload_json, "offset");
		assert_true(p >= 0 && p < 2 && o >= 0 && o <= N / 2);
		if (o < N / 2)
			seen[p][o]++;
	}
	assert_int_equal(finals, 1);
	for (int p = 0; p < 2; p++)
		for (int o = 0; o < N / 2; o++)
			if (seen[p][o] != 1)
				fail_msg("partition %d offset %d posted %d times", p, o, seen[p][o]);
	assert_int_equal(read_events(h, ev, 4, 700), 0);
	free(ev);
	wait_committed(f, "triggerd", "stream", 1, N / 2);
}

static void triggers_share_a_consumer(void **state)
{
	struct kfix *f = *state;
	struct harness *h = &f->h;
	topic(f, "shared", 1);
	start_td(f);
	submit_wait(h, TRIG("s1", "\"topics\":[\"shared\"]"), "s1");
	submit_wait(h, TRIG("s2", "\"topics\":[\"shared\"],\"key\":\"x\""), "s2");
	submit_wait(h, TRIG("s3", "\"topics\":[\"shared\"],\"group_id\":\"other\""), "s3");
	wait_log_count(h, "kafka partitions assigned", 2, 20000);
	produce(f, "shared", 0, "x", "hi", NULL, NULL);
	struct event ev[4];
	assert_int_equal(wait_events(h, ev, 3, 10000), 3);
	int ids = 0;
	for (int i = 0; i < 3; i++)
		ids |= (strcmp(ev[i].id, "s1") == 0) | (strcmp(ev[i].id, "s2") == 0) << 1 |
		       (strcmp(ev[i].id, "s3") == 0) << 2;
	assert_int_equal(ids, 7);
	assert_int_equal(count_log(h, "kafka consumer started", "\"group\":\"triggerd\""), 1);
	assert_int_equal(count_log(h, "kafka consumer started", "\"group\":\"other\""), 1);
	/* A clean stop closes both consumers. */
	assert_int_equal(harness_td_stop(h, SIGTERM), 0);
	assert_int_equal(count_log(h, "kafka consumer closed", NULL), 2);
}

/* A sink too small for the stream: messages wait, none is lost or doubled. */
static void backpressure_holds_messages(void **state)
{
	struct kfix *f = *state;
	struct harness *h = &f->h;
	topic(f, "burst", 1);
	const char *extra[] = {"--sink-buffer", "2", NULL};
	assert_int_equal(harness_td_start(h, extra), 0);
	submit_wait(h, "{\"id\":\"bp\",\"kind\":\"kafka\",\"repeat\":true,\"args\":{\"conn\":\"kafka_test\","
		       "\"topics\":[\"burst\"]}}", "bp");
	wait_log_count(h, "kafka partitions assigned", 1, 20000);
	redisReply *r = redisCommand(h->c, "CLIENT PAUSE 1500 WRITE");
	assert_non_null(r);
	freeReplyObject(r);
	for (int i = 0; i < 20; i++) {
		char v[16];
		snprintf(v, sizeof(v), "%d", i);
		produce(f, "burst", 0, NULL, v, NULL, NULL);
	}
	struct event ev[24];
	assert_int_equal(wait_events(h, ev, 20, 15000), 20);
	for (int i = 0; i < 20; i++) {
		assert_int_equal(json_int(ev[i].payload_json, "offset"), i);
		assert_int_equal(ev[i].seq, (uint64_t)i + 1);
	}
	assert_int_equal(read_events(h, ev, 4, 500), 0);
	assert_true(count_log(h, "kafka consumer paused", NULL) >= 1);
	wait_committed(f, "triggerd", "burst", 0, 20);
}

/* An unused consumer closes (after committing); the next trigger's
 * consumer resumes where the group left off. */
static void idle_consumer_closes_and_resumes(void **state)
{
	struct kfix *f = *state;
	struct harness *h = &f->h;
	topic(f, "idle", 1);
	topic(f, "idle2", 1);
	setenv("TRIGGERD_KAFKA_IDLE_MS", "1000", 1);
	start_td(f);
	unsetenv("TRIGGERD_KAFKA_IDLE_MS");
	submit_wait(h, TRIG("i1", "\"topics\":[\"idle\"],\"key\":\"a\""), "i1");
	wait_log_count(h, "kafka partitions assigned", 1, 20000);
	produce(f, "idle", 0, "a", "1", NULL, NULL);
	struct event ev[4];
	assert_int_equal(wait_events(h, ev, 1, 10000), 1);
	assert_string_equal(ev[0].id, "i1");
	wait_log_count(h, "kafka consumer closed", 1, 10000);
	/* From the group's committed offset: the old "a" is not offered. */
	submit_wait(h, TRIG("i2", "\"topics\":[\"idle\",\"idle2\"],\"key\":\"a\",\"start\":\"earliest\""), "i2");
	wait_log_count(h, "kafka partitions assigned", 2, 20000);
	assert_int_equal(count_log(h, "kafka consumer started", NULL), 2);
	assert_int_equal(read_events(h, ev, 4, 700), 0);
	produce(f, "idle2", 0, "a", "2", NULL, NULL);
	assert_int_equal(wait_events(h, ev, 1, 10000), 1);
	assert_string_equal(ev[0].id, "i2");
	assert_non_null(strstr(ev[0].payload_json, "\"topic\":\"idle2\""));
}

/* A message stamped after a trigger's acceptance reaches it even when it is
 * consumed while the trigger's store record is still in flight. Redis
 * pauses writes right after delivering the submission (XADD and CLIENT
 * PAUSE pipelined: the blocked XREADGROUP is served by the XADD, before the
 * pause starts), so the store waits a second while the message is consumed (the mock's
 * fetches answer within fetch.wait.max.ms, 500 ms). */
static void message_while_storing_fires(void **state)
{
	struct kfix *f = *state;
	struct harness *h = &f->h;
	topic(f, "window", 1);
	start_td(f);
	/* Keeps the group's consumer up and assigned. */
	submit_wait(h, "{\"id\":\"keep\",\"kind\":\"kafka\",\"repeat\":true,\"args\":{\"conn\":\"kafka_test\","
		       "\"topics\":[\"window\"],\"key\":\"never\"}}", "keep");
	wait_log_count(h, "kafka partitions assigned", 1, 20000);
	int windows = 0;
	for (int i = 0; i < 4; i++) {
		char id[32], key[32], json[512];
		snprintf(id, sizeof(id), "w%d", i);
		snprintf(key, sizeof(key), "wk%d", i);
		snprintf(json, sizeof(json), TRIG("%s", "\"topics\":[\"window\"],\"key\":\"%s\""), id, key);
		redisAppendCommand(h->c, "XADD td:submit * op add json %s", json);
		redisAppendCommand(h->c, "CLIENT PAUSE 1000 WRITE");
		for (int k = 0; k < 2; k++) {
			redisReply *r = NULL;
			assert_int_equal(redisGetReply(h->c, (void **)&r), REDIS_OK);
			assert_true(r->type != REDIS_REPLY_ERROR);
			freeReplyObject(r);
		}
		sleep_ms(30); /* triggerd has read (accepted) it */
		if (harness_pending(h) >= 1 && redis_int(h, "HEXISTS td:triggers %s", id) == 0)
			windows++;
		else
			wait_stored(h, id); /* not read before the pause: no window this time */
		produce(f, "window", 0, key, "v", NULL, NULL);
		struct event ev[2];
		assert_int_equal(wait_events(h, ev, 1, 5000), 1);
		assert_string_equal(ev[0].id, id);
		assert_string_equal(ev[0].status, "success");
		assert_non_null(strstr(ev[0].payload_json, key));
	}
	assert_true(windows >= 2);
	/* Nothing held back: the offsets are all committed. */
	wait_committed(f, "triggerd", "window", 0, 4);
}

/* Messages produced while triggerd was down reach every trigger of the
 * group once the store is loaded, whichever is loaded first. */
static void restart_offers_to_all_loaded(void **state)
{
	struct kfix *f = *state;
	struct harness *h = &f->h;
	enum { NT = 6 };
	topic(f, "down", 2);
	start_td(f);
	for (int i = 0; i < NT; i++) {
		char id[32], json[512];
		snprintf(id, sizeof(id), "d%d", i);
		snprintf(json, sizeof(json), TRIG("%s", "\"topics\":[\"down\"],\"key\":\"dk%d\""), id, i);
		submit_wait(h, json, id);
	}
	wait_log_count(h, "kafka partitions assigned", 1, 20000);
	/* A message nobody waits for: the group's offset moves past it. */
	produce(f, "down", 0, "other", "x", NULL, NULL);
	wait_committed(f, "triggerd", "down", 0, 1);
	assert_int_equal(harness_td_stop(h, SIGTERM), 0);
	for (int i = 0; i < NT; i++) {
		char key[32];
		snprintf(key, sizeof(key), "dk%d", i);
		produce(f, "down", i % 2, key, "late", NULL, NULL);
	}
	start_td(f);
	struct event ev[NT + 2];
	assert_int_equal(wait_events(h, ev, NT, 20000), NT);
	int seen = 0;
	for (int i = 0; i < NT; i++) {
		assert_string_equal(ev[i].status, "success");
		assert_true(ev[i].id[0] == 'd');
		seen |= 1 << atoi(ev[i].id + 1);
	}
	assert_int_equal(seen, (1 << NT) - 1);
	assert_int_equal(redis_int(h, "HLEN td:triggers"), 0);
}

/* One message matching more triggers than the sink holds: all fire, over
 * several passes, and its offset is committed. */
static void more_matches_than_sink(void **state)
{
	struct kfix *f = *state;
	struct harness *h = &f->h;
	topic(f, "wide", 1);
	const char *extra[] = {"--sink-buffer", "2", NULL};
	assert_int_equal(harness_td_start(h, extra), 0);
	for (int i = 0; i < 5; i++) {
		char id[32], json[512];
		snprintf(id, sizeof(id), "m%d", i);
		snprintf(json, sizeof(json), "{\"id\":\"%s\",\"kind\":\"kafka\",\"repeat\":true,\"args\":"
			 "{\"conn\":\"kafka_test\",\"topics\":[\"wide\"]}}", id);
		submit_wait(h, json, id);
	}
	wait_log_count(h, "kafka partitions assigned", 1, 20000);
	produce(f, "wide", 0, "k", "v", NULL, NULL);
	struct event ev[8];
	assert_int_equal(wait_events(h, ev, 5, 10000), 5);
	int seen = 0;
	for (int i = 0; i < 5; i++)
		seen |= 1 << atoi(ev[i].id + 1);
	assert_int_equal(seen, 31);
	assert_int_equal(read_events(h, ev, 8, 300), 0);
	wait_committed(f, "triggerd", "wide", 0, 1);
}

/* ---- Airflow and bad specs --------------------------------------------------- */

static void airflow_await_message(void **state)
{
	struct kfix *f = *state;
	struct harness *h = &f->h;
	topic(f, "af", 1);
	produce(f, "af", 0, "a", NULL, NULL, NULL); /* tombstone: skipped */
	produce(f, "af", 0, "b", "", NULL, NULL);   /* empty: skipped */
	produce(f, "af", 0, "c", "hello world", NULL, NULL);
	start_td(f);
	assert_int_equal(submit_json(h, "{\"id\":\"af1\",\"classpath\":"
		"\"airflow.providers.apache.kafka.triggers.await_message.AwaitMessageTrigger\","
		"\"kwargs\":{\"topics\":[\"af\"],\"apply_function\":null,\"apply_function_args\":[],"
		"\"apply_function_kwargs\":{},\"kafka_config_id\":\"kafka_default\",\"poll_timeout\":1,"
		"\"poll_interval\":5,\"commit_offset\":true}}"), 0);
	assert_int_equal(submit_json(h, "{\"id\":\"af2\",\"classpath\":"
		"\"airflow.providers.apache.kafka.triggers.await_message.AwaitMessageTrigger\","
		"\"kwargs\":{\"topics\":[\"af\"],\"apply_function\":\"dags.hello.await_function\"}}"), 0);
	struct event ev[4];
	assert_int_equal(wait_events(h, ev, 2, 20000), 2);
	struct event *ok = !strcmp(ev[0].id, "af1") ? &ev[0] : &ev[1];
	struct event *no = ok == &ev[0] ? &ev[1] : &ev[0];
	assert_string_equal(no->id, "af2");
	assert_string_equal(no->status, "rejected");
	assert_non_null(strstr(no->error, "kwargs.apply_function"));
	assert_non_null(strstr(no->error, "native filter"));
	assert_string_equal(ok->id, "af1");
	assert_string_equal(ok->status, "success");
	assert_string_equal(ok->payload_json, "\"hello world\"");
	/* The connection's group.id is the consumer's group. */
	assert_int_equal(count_log(h, "kafka consumer started", "\"group\":\"airflow\""), 1);
	wait_committed(f, "airflow", "af", 0, 3);
}

static void bad_specs_rejected(void **state)
{
	struct kfix *f = *state;
	struct harness *h = &f->h;
	start_td(f);
	static const struct {
		const char *json, *error;
	} cases[] = {
		{TRIG("b1", "\"key\":\"x\""), "args.topics: required"},
		{TRIG("b2", "\"topics\":[\"bad topic\"]"), "args.topics: 'bad topic' is not a topic name"},
		{TRIG("b3", "\"topics\":\"^ev.*\""), "args.topics: topic patterns"},
		{TRIG("b4", "\"topics\":[]"), "args.topics: expected"},
		{TRIG("b5", "\"topics\":\"t\",\"filter\":{}"), "args.filter: unknown field"},
		{TRIG("b6", "\"topics\":\"t\",\"value_regex\":\"(\""), "args.value_regex: missing closing parenthesis"},
		{TRIG("b7", "\"topics\":\"t\",\"json_pointer\":\"/a\""), "args.equals: json_pointer and equals go together"},
		{TRIG("b8", "\"topics\":\"t\",\"json_pointer\":\"a\",\"equals\":1"), "args.json_pointer: expected"},
		{TRIG("b9", "\"topics\":\"t\",\"start\":\"tomorrow\""), "args.start: expected"},
		{TRIG("b10", "\"topics\":\"t\",\"headers\":{\"a\":1}"), "args.headers.a: expected a string"},
		{TRIG("b11", "\"topics\":\"t\",\"payload\":\"all\""), "args.payload: expected"},
		{"{\"id\":\"b12\",\"kind\":\"kafka\",\"args\":{\"topics\":\"t\"}}", "args.conn: required"},
		{"{\"id\":\"b13\",\"kind\":\"kafka\",\"args\":{\"conn\":\"nope\",\"topics\":\"t\"}}",
		 "args.conn: no connection 'nope' (set AIRFLOW_CONN_NOPE"},
		{"{\"id\":\"b14\",\"kind\":\"kafka\",\"args\":{\"conn\":\"kafka_nobs\",\"topics\":\"t\"}}",
		 "has no bootstrap.servers"},
		{"{\"id\":\"b15\",\"kind\":\"kafka\",\"args\":{\"conn\":\"kafka_badconf\",\"topics\":\"t\"}}",
		 "extra.no.such.property"},
		{TRIG("b16", "\"topics\":\"t\",\"group_id\":\"\""), "args.group_id: expected"},
		{"{\"id\":\"b17\",\"classpath\":\"airflow.providers.apache.kafka.triggers.await_message."
		 "AwaitMessageTrigger\",\"kwargs\":{\"apply_function\":null}}", "kwargs.topics: required"},
		{"{\"id\":\"b18\",\"classpath\":\"airflow.providers.apache.kafka.triggers.await_message."
		 "AwaitMessageTrigger\",\"kwargs\":{\"topics\":[\"t\"],\"group\":\"g\"}}",
		 "kwargs.group: not an AwaitMessageTrigger argument"},
		{"{\"id\":\"b19\",\"classpath\":\"airflow.providers.apache.kafka.triggers.await_message."
		 "AwaitMessageTrigger\",\"kwargs\":{\"topics\":[\"t\"],\"apply_function_args\":[1]}}",
		 "kwargs.apply_function_args: only meaningful with apply_function"},
	};
	size_t n = sizeof(cases) / sizeof(cases[0]);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(submit_json(h, cases[i].json), 0);
	static struct event ev[32];
	assert_int_equal(wait_events(h, ev, (int)n, 10000), (int)n);
	for (size_t i = 0; i < n; i++) {
		assert_string_equal(ev[i].status, "rejected");
		if (!strstr(ev[i].error, cases[i].error))
			fail_msg("case %zu: error '%s', want '%s'", i, ev[i].error, cases[i].error);
	}
	assert_int_equal(redis_int(h, "HLEN td:triggers"), 0);
	/* No consumer was made for them. */
	assert_int_equal(count_log(h, "kafka consumer started", NULL), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(oneshot_fires_once_with_payload, setup, teardown),
		cmocka_unit_test_setup_teardown(filters, setup, teardown),
		cmocka_unit_test_setup_teardown(repeat_gets_every_match, setup, teardown),
		cmocka_unit_test_setup_teardown(commits_after_posting, setup, teardown),
		cmocka_unit_test_setup_teardown(restart_loses_nothing_duplicates_nothing, setup, teardown),
		cmocka_unit_test_setup_teardown(triggers_share_a_consumer, setup, teardown),
		cmocka_unit_test_setup_teardown(backpressure_holds_messages, setup, teardown),
		cmocka_unit_test_setup_teardown(idle_consumer_closes_and_resumes, setup, teardown),
		cmocka_unit_test_setup_teardown(message_while_storing_fires, setup, teardown),
		cmocka_unit_test_setup_teardown(restart_offers_to_all_loaded, setup, teardown),
		cmocka_unit_test_setup_teardown(more_matches_than_sink, setup, teardown),
		cmocka_unit_test_setup_teardown(airflow_await_message, setup, teardown),
		cmocka_unit_test_setup_teardown(bad_specs_rejected, setup, teardown),
	};
	if (getenv("TD_TEST_FILTER"))
		cmocka_set_test_filter(getenv("TD_TEST_FILTER"));
	return cmocka_run_group_tests(tests, NULL, NULL);
}
