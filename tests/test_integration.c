/*
 * End-to-end tests: the real triggerd against a real redis-server, both
 * started per test on a unix socket in a temporary directory.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <sys/wait.h>
#include <msgpack.h>

#include "harness.h"



static char **timer_docs(const char *prefix, int n, int64_t base, int spread)
{
	char **docs = calloc((size_t)n, sizeof(*docs));
	for (int i = 0; i < n; i++) {
		docs[i] = malloc(200);
		snprintf(docs[i], 200,
			 "{\"id\":\"%s-%06d\",\"kind\":\"timer\",\"args\":{\"at_ms\":%lld}}",
			 prefix, i, (long long)(base + (spread ? (i * 7919LL) % spread : 0)));
	}
	return docs;
}

static void free_docs(char **docs, int n)
{
	for (int i = 0; i < n; i++)
		free(docs[i]);
	free(docs);
}

/* Every id prefix-000000..n-1 exactly once, success, never early. */
static void check_exactly_once(struct event *ev, int got, const char *prefix, int n)
{
	unsigned char *seen = calloc((size_t)n, 1);
	size_t plen = strlen(prefix);
	for (int i = 0; i < got; i++) {
		assert_string_equal(ev[i].status, "success");
		assert_int_equal(strncmp(ev[i].id, prefix, plen), 0);
		int k = atoi(ev[i].id + plen + 1);
		assert_true(k >= 0 && k < n);
		assert_int_equal(seen[k], 0);
		seen[k] = 1;
		assert_true(ev[i].due_at_ms > 0);
		assert_true(ev[i].fired_at_ms >= ev[i].due_at_ms);
		assert_true(ev[i].visible_ms >= ev[i].due_at_ms);
	}
	for (int k = 0; k < n; k++)
		assert_int_equal(seen[k], 1);
	free(seen);
}

static void timers_10k_exactly_once(void **state)
{
	struct harness *h = *state;
	enum { N = 10000 };
	assert_int_equal(harness_td_start(h, NULL), 0);
	char **docs = timer_docs("t", N, now_ms() + 1000, 2000);
	assert_int_equal(submit_json_many(h, docs, N), 0);
	free_docs(docs, N);
	struct event *ev = calloc(N + 10, sizeof(*ev));
	int got = wait_events(h, ev, N, 20000);
	assert_int_equal(got, N);
	/* Nothing more arrives: no duplicates posted late. */
	assert_int_equal(read_events(h, ev + N, 10, 500), 0);
	check_exactly_once(ev, got, "t", N);
	assert_int_equal(redis_int(h, "HLEN td:triggers"), 0);
	assert_int_equal(harness_pending(h), 0);
	free(ev);
}

static void kill9_restart_exactly_once(void **state)
{
	struct harness *h = *state;
	enum { N = 3000 };
	assert_int_equal(harness_td_start(h, NULL), 0);
	char **docs = timer_docs("k", N, now_ms() + 500, 3000);
	assert_int_equal(submit_json_many(h, docs, N), 0);
	free_docs(docs, N);
	sleep_ms(1500); /* some have fired, most have not */
	harness_td_stop(h, SIGKILL);
	long long stored = redis_int(h, "HLEN td:triggers");
	assert_true(stored > 0 && stored < N);
	sleep_ms(300);
	assert_int_equal(harness_td_start(h, NULL), 0);
	struct event *ev = calloc(N + 10, sizeof(*ev));
	int got = wait_events(h, ev, N, 15000);
	assert_int_equal(got, N);
	assert_int_equal(read_events(h, ev + N, 10, 500), 0);
	check_exactly_once(ev, got, "k", N);
	assert_int_equal(redis_int(h, "HLEN td:triggers"), 0);
	assert_int_equal(harness_pending(h), 0);
	free(ev);
}

struct bad_case {
	const char *what;
	int argc;
	const char *argv[6];
	const char *expect; /* substring of the error */
};

static void rejected_inputs(void **state)
{
	struct harness *h = *state;
	char long_id[300], big_meta[20000], long_id_json[400], big_meta_json[20100];
	memset(long_id, 'x', 257);
	long_id[257] = '\0';
	snprintf(long_id_json, sizeof(long_id_json),
		 "{\"id\":\"%s\",\"kind\":\"timer\",\"args\":{\"after_ms\":1}}", long_id);
	memset(big_meta, 'm', 17000);
	big_meta[17000] = '\0';
	snprintf(big_meta_json, sizeof(big_meta_json),
		 "{\"id\":\"bm\",\"kind\":\"timer\",\"args\":{\"after_ms\":1},\"meta\":{\"x\":\"%s\"}}",
		 big_meta);
	const struct bad_case cases[] = {
		{"not msgpack", 4, {"op", "add", "spec", "\xc1\xc1"}, "spec: not valid msgpack"},
		{"msgpack not a map", 4, {"op", "add", "spec", "\x93\x01\x02\x03"}, "spec: expected a map"},
		{"msgpack huge count", 4, {"op", "add", "spec", "\xdd\xff\xff\xff\xff"}, "spec: not valid msgpack: array of 4294967295"},
		{"msgpack trailing", 4, {"op", "add", "spec", "\x80\x01"}, "spec: 1 trailing bytes"},
		{"not json", 4, {"op", "add", "json", "{\"id\": }"}, "json: offset"},
		{"no spec", 2, {"op", "add"}, "spec: required"},
		{"both", 6, {"op", "add", "json", "{}", "spec", "\x80"}, "not both"},
		{"no id", 4, {"op", "add", "json", "{\"kind\":\"timer\",\"args\":{\"after_ms\":1}}"}, "id: required"},
		{"id not string", 4, {"op", "add", "json", "{\"id\":5,\"kind\":\"timer\"}"}, "id: expected a string"},
		{"id too long", 4, {"op", "add", "json", long_id_json}, "id: longer than 256 bytes"},
		{"unknown kind", 4, {"op", "add", "json", "{\"id\":\"u\",\"kind\":\"sundial\"}"}, "kind: unknown kind 'sundial'"},
		{"no kind", 4, {"op", "add", "json", "{\"id\":\"nk\"}"}, "kind: required"},
		{"unknown op", 4, {"op", "frobnicate", "id", "x"}, "op: unknown op 'frobnicate'"},
		{"arg wrong type", 4, {"op", "add", "json", "{\"id\":\"w\",\"kind\":\"timer\",\"args\":{\"at_ms\":\"soon\"}}"}, "args.at_ms: expected a non-negative integer"},
		{"bad rfc3339", 4, {"op", "add", "json", "{\"id\":\"r\",\"kind\":\"timer\",\"args\":{\"at\":\"2026-02-30T00:00:00Z\"}}"}, "args.at: expected an RFC 3339"},
		{"no args", 4, {"op", "add", "json", "{\"id\":\"na\",\"kind\":\"timer\"}"}, "args: required"},
		{"two times", 4, {"op", "add", "json", "{\"id\":\"tt\",\"kind\":\"timer\",\"args\":{\"at_ms\":1,\"after_ms\":1}}"}, "args: give only one"},
		{"meta too big", 4, {"op", "add", "json", big_meta_json}, "meta: larger than 16384 bytes"},
		{"unknown field", 4, {"op", "add", "json", "{\"id\":\"uf\",\"kind\":\"timer\",\"args\":{\"after_ms\":1},\"timeout\":5}"}, "timeout: unknown field"},
		{"timeout wrong type", 4, {"op", "add", "json", "{\"id\":\"tw\",\"kind\":\"timer\",\"args\":{\"after_ms\":1},\"timeout_ms\":-5}"}, "timeout_ms: expected a non-negative integer"},
		{"bad queue", 4, {"op", "add", "json", "{\"id\":\"q\",\"kind\":\"timer\",\"args\":{\"after_ms\":1},\"queue\":\"a b\"}"}, "queue: expected"},
		{"repeat without interval", 4, {"op", "add", "json", "{\"id\":\"ri\",\"kind\":\"timer\",\"args\":{\"after_ms\":1},\"repeat\":true}"}, "args.interval_ms: required when repeat"},
		{"cancel unknown", 4, {"op", "cancel", "id", "ghost"}, "id: no active trigger"},
		{"cancel no id", 2, {"op", "cancel"}, "id: required for op cancel"},
	};
	const size_t nc = sizeof(cases) / sizeof(cases[0]);
	assert_int_equal(harness_td_start(h, NULL), 0);
	/* A good timer in the middle must be untouched by its neighbours. */
	char good[200];
	snprintf(good, sizeof(good), "{\"id\":\"good\",\"kind\":\"timer\",\"args\":{\"after_ms\":300}}");
	for (size_t i = 0; i < nc; i++) {
		size_t lens[6];
		for (int j = 0; j < cases[i].argc; j++)
			lens[j] = strlen(cases[i].argv[j]);
		assert_int_equal(submit_fields(h, cases[i].argc, cases[i].argv, lens), 0);
		if (i == nc / 2)
			assert_int_equal(submit_json(h, good), 0);
	}
	struct event ev[64];
	int got = wait_events(h, ev, (int)nc + 1, 10000);
	assert_int_equal(got, (int)nc + 1);
	size_t j = 0;
	bool good_seen = false;
	for (int i = 0; i < got; i++) {
		if (!strcmp(ev[i].id, "good")) {
			assert_string_equal(ev[i].status, "success");
			good_seen = true;
			continue;
		}
		assert_string_equal(ev[i].status, "rejected");
		if (!strstr(ev[i].error, cases[j].expect))
			fail_msg("case '%s': error '%s' lacks '%s'", cases[j].what, ev[i].error,
				 cases[j].expect);
		j++;
	}
	assert_true(good_seen);
	assert_int_equal(j, nc);
	assert_int_equal(harness_pending(h), 0);
	assert_int_equal(redis_int(h, "HLEN td:triggers"), 0);
	/* A rejected submission re-read after a restart is not posted twice. */
	harness_td_stop(h, SIGTERM);
	assert_int_equal(harness_td_start(h, NULL), 0);
	assert_int_equal(read_events(h, ev, 10, 500), 0);
}

static void cancel_and_timeout(void **state)
{
	struct harness *h = *state;
	assert_int_equal(harness_td_start(h, NULL), 0);
	assert_int_equal(submit_json(h, "{\"id\":\"c1\",\"kind\":\"timer\",\"args\":{\"after_ms\":1500},\"meta\":{\"dag\":\"d\"}}"), 0);
	int64_t t0 = now_ms();
	assert_int_equal(submit_json(h, "{\"id\":\"to\",\"kind\":\"timer\",\"args\":{\"after_ms\":60000},\"timeout_ms\":300}"), 0);
	sleep_ms(100);
	const char *cancel[] = {"op", "cancel", "id", "c1"};
	assert_int_equal(submit_fields(h, 4, cancel, NULL), 0);
	struct event ev[4];
	assert_int_equal(wait_events(h, ev, 2, 5000), 2);
	assert_string_equal(ev[0].id, "c1");
	assert_string_equal(ev[0].status, "cancelled");
	assert_string_equal(ev[0].meta_json, "{\"dag\":\"d\"}");
	assert_string_equal(ev[1].id, "to");
	assert_string_equal(ev[1].status, "timeout");
	assert_true(ev[1].fired_at_ms >= t0 + 300);
	/* The cancelled timer never fires. */
	assert_int_equal(read_events(h, ev, 4, 2000), 0);
	/* add, cancel, add again in one breath: the second add is a new
	 * trigger that fires (it must not be stored without being armed). */
	const char *a1[] = {"op", "add", "json", "{\"id\":\"x\",\"kind\":\"timer\",\"args\":{\"after_ms\":3600000}}"};
	const char *cx[] = {"op", "cancel", "id", "x"};
	const char *a2[] = {"op", "add", "json", "{\"id\":\"x\",\"kind\":\"timer\",\"args\":{\"after_ms\":200}}"};
	const char *const *cmds[] = {a1, cx, a2};
	/* Queued while triggerd is down, so one read delivers all three. */
	assert_int_equal(harness_td_stop(h, SIGTERM), 0);
	for (int i = 0; i < 3; i++) {
		const char *argv[7] = {"XADD", "td:submit", "*"};
		for (int j = 0; j < 4; j++)
			argv[3 + j] = cmds[i][j];
		redisAppendCommandArgv(h->c, 7, argv, NULL);
	}
	for (int i = 0; i < 3; i++) {
		redisReply *r;
		assert_int_equal(redisGetReply(h->c, (void **)&r), REDIS_OK);
		freeReplyObject(r);
	}
	assert_int_equal(harness_td_start(h, NULL), 0);
	assert_int_equal(wait_events(h, ev, 2, 3000), 2);
	assert_string_equal(ev[0].id, "x");
	assert_string_equal(ev[0].status, "cancelled");
	assert_string_equal(ev[1].id, "x");
	assert_string_equal(ev[1].status, "success");
	assert_int_equal(redis_int(h, "HLEN td:triggers"), 0);
	assert_int_equal(harness_pending(h), 0);
}

static void repeat_and_idempotent_add(void **state)
{
	struct harness *h = *state;
	assert_int_equal(harness_td_start(h, NULL), 0);
	char doc[200];
	snprintf(doc, sizeof(doc),
		 "{\"id\":\"rep\",\"kind\":\"timer\",\"args\":{\"at_ms\":%lld,\"interval_ms\":200},\"repeat\":true}",
		 (long long)now_ms() + 200);
	assert_int_equal(submit_json(h, doc), 0);
	/* The same id again, as msgpack this time: a no-op while active. */
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 3);
	msgpack_pack_str(&pk, 2); msgpack_pack_str_body(&pk, "id", 2);
	msgpack_pack_str(&pk, 3); msgpack_pack_str_body(&pk, "rep", 3);
	msgpack_pack_str(&pk, 4); msgpack_pack_str_body(&pk, "kind", 4);
	msgpack_pack_str(&pk, 5); msgpack_pack_str_body(&pk, "timer", 5);
	msgpack_pack_str(&pk, 4); msgpack_pack_str_body(&pk, "args", 4);
	msgpack_pack_map(&pk, 1);
	msgpack_pack_str(&pk, 8); msgpack_pack_str_body(&pk, "after_ms", 8);
	msgpack_pack_uint32(&pk, 1);
	const char *f[] = {"op", "add", "spec", sb.data};
	size_t lens[] = {2, 3, 4, sb.size};
	assert_int_equal(submit_fields(h, 4, f, lens), 0);
	msgpack_sbuffer_destroy(&sb);

	struct event ev[8];
	assert_int_equal(wait_events(h, ev, 3, 5000), 3);
	for (int i = 0; i < 3; i++) {
		assert_string_equal(ev[i].id, "rep");
		assert_string_equal(ev[i].status, "success");
		assert_int_equal(ev[i].seq, (uint64_t)i + 1);
		if (i)
			assert_int_equal(ev[i].due_at_ms - ev[i - 1].due_at_ms, 200);
	}
	/* Still stored while repeating; restart keeps the schedule. */
	assert_int_equal(redis_int(h, "HEXISTS td:triggers rep"), 1);
	/* Occurrence dedup keys live minutes, not the 24 h --dedup-ttl. */
	char key[80];
	snprintf(key, sizeof(key), "TTL td:seen:rep:%lld", (long long)ev[0].due_at_ms);
	long long ttl = redis_int(h, key);
	assert_true(ttl > 200 && ttl <= 300);
	assert_int_equal(harness_td_stop(h, SIGTERM), 0);
	assert_int_equal(harness_td_start(h, NULL), 0);
	struct event more[4];
	assert_int_equal(wait_events(h, more, 1, 3000), 1);
	assert_int_equal(more[0].seq > ev[2].seq, 1);
	const char *cancel[] = {"op", "cancel", "id", "rep"};
	assert_int_equal(submit_fields(h, 4, cancel, NULL), 0);
	/* Events until the cancel; then silence. */
	bool cancelled = false;
	for (int i = 0; i < 10 && !cancelled; i++) {
		if (read_events(h, more, 1, 2000) != 1)
			break;
		if (!strcmp(more[0].status, "cancelled"))
			cancelled = true;
		else
			assert_string_equal(more[0].status, "success");
	}
	assert_true(cancelled);
	assert_int_equal(read_events(h, more, 1, 700), 0);
	assert_int_equal(redis_int(h, "HLEN td:triggers"), 0);
	assert_int_equal(harness_pending(h), 0);
}

static void after_ms_survives_restart(void **state)
{
	struct harness *h = *state;
	assert_int_equal(harness_td_start(h, NULL), 0);
	int64_t t0 = now_ms();
	assert_int_equal(submit_json(h, "{\"id\":\"a\",\"kind\":\"timer\",\"args\":{\"after_ms\":1500}}"), 0);
	sleep_ms(400);
	assert_int_equal(harness_td_stop(h, SIGTERM), 0);
	assert_int_equal(harness_td_start(h, NULL), 0);
	struct event ev[2];
	assert_int_equal(wait_events(h, ev, 1, 5000), 1);
	assert_string_equal(ev[0].status, "success");
	/* Due 1.5 s after acceptance, not 1.5 s after the restart. */
	assert_true(ev[0].due_at_ms >= t0 + 1500 && ev[0].due_at_ms < t0 + 1500 + 300);
	assert_true(ev[0].fired_at_ms >= ev[0].due_at_ms);
}

/* Redis crashes (kill -9, fsync always) while timers are due; triggerd holds
 * what fires (a tiny sink bound forces the hold path), reconnects and posts
 * everything exactly once. */
static void redis_restart_loses_nothing(void **state)
{
	struct harness *h = *state;
	enum { N = 600 };
	harness_redis_kill(h);
	assert_int_equal(harness_redis_start(h, true), 0);
	const char *args[] = {"--sink-buffer", "50", "--batch", "16", NULL};
	assert_int_equal(harness_td_start(h, args), 0);
	char **docs = timer_docs("r", N, now_ms() + 800, 2500);
	assert_int_equal(submit_json_many(h, docs, N), 0);
	free_docs(docs, N);
	for (int i = 0; i < 100 && redis_int(h, "HLEN td:triggers") < N; i++)
		sleep_ms(20);
	assert_int_equal(redis_int(h, "HLEN td:triggers"), N);
	sleep_ms(1000);
	harness_redis_kill(h);
	sleep_ms(2500); /* the rest falls due while Redis is away */
	assert_int_equal(harness_redis_start(h, true), 0);
	struct event *ev = calloc(N + 10, sizeof(*ev));
	int got = wait_events(h, ev, N, 20000);
	assert_int_equal(got, N);
	assert_int_equal(read_events(h, ev + N, 10, 500), 0);
	check_exactly_once(ev, got, "r", N);
	assert_int_equal(redis_int(h, "HLEN td:triggers"), 0);
	assert_true(log_contains(h, "redis connection lost"));
	free(ev);
}

/* Redis without persistence crashes and comes back empty: triggerd notices
 * (its instance marker is gone), stores its triggers again and re-posts what
 * it had buffered. Every timer is seen at least once across the old and the
 * new Redis; only firings in flight at the crash may be seen twice. */
static void redis_comes_back_empty(void **state)
{
	struct harness *h = *state;
	enum { N = 400 };
	assert_int_equal(harness_td_start(h, NULL), 0);
	char **docs = timer_docs("e", N, now_ms() + 500, 5000);
	assert_int_equal(submit_json_many(h, docs, N), 0);
	free_docs(docs, N);
	struct event *ev = calloc(2 * N + 10, sizeof(*ev));
	/* Collect from the old Redis for a while, then crash it. */
	int got = wait_events(h, ev, N, 1000);
	assert_true(got > 0 && got < N);
	harness_redis_kill(h);
	sleep_ms(2000);
	assert_int_equal(harness_redis_start(h, false), 0);
	strcpy(h->last_event, "0-0");
	int more = wait_events(h, ev + got, 2 * N - got, 9000);
	int total = got + more;
	unsigned char *seen = calloc(N, 1);
	int dup = 0;
	for (int i = 0; i < total; i++) {
		assert_string_equal(ev[i].status, "success");
		int k = atoi(ev[i].id + 2);
		assert_true(k >= 0 && k < N);
		if (seen[k]++)
			dup++;
		assert_true(ev[i].fired_at_ms >= ev[i].due_at_ms);
	}
	for (int k = 0; k < N; k++)
		if (!seen[k])
			fail_msg("timer e-%06d never posted", k);
	assert_true(dup <= 100); /* in flight at the crash, not a re-run of all */
	assert_true(log_contains(h, "redis came back without triggerd's data"));
	/* Both paths ran: timers still waiting were stored again, and
	 * firings buffered during the outage were re-posted. */
	assert_false(log_contains(h, "\"restored\":0,"));
	assert_false(log_contains(h, "\"buffered\":0}"));
	assert_int_equal(redis_int(h, "HLEN td:triggers"), 0);
	free(seen);
	free(ev);
}

/* Redis is not there when triggerd starts: it logs, retries with backoff,
 * and works once Redis appears. */
static void redis_down_at_start(void **state)
{
	struct harness *h = *state;
	harness_redis_kill(h);
	assert_int_equal(harness_td_spawn(h, NULL), 0);
	assert_true(harness_wait_log(h, "redis connect failed", 5000));
	sleep_ms(700);
	assert_int_equal(harness_redis_start(h, false), 0);
	assert_true(harness_wait_log(h, "\"msg\":\"ready\"", 10000));
	assert_int_equal(submit_json(h, "{\"id\":\"late\",\"kind\":\"timer\",\"args\":{\"after_ms\":50}}"), 0);
	struct event ev[2];
	assert_int_equal(wait_events(h, ev, 1, 5000), 1);
	assert_string_equal(ev[0].id, "late");
	assert_string_equal(ev[0].status, "success");
}

/* Times at the far end of the accepted range are held, cancellable, and
 * leave the loop free (this used to overflow into a busy re-arm loop). */
static void far_future_times(void **state)
{
	struct harness *h = *state;
	assert_int_equal(harness_td_start(h, NULL), 0);
	assert_int_equal(submit_json(h, "{\"id\":\"far\",\"kind\":\"timer\",\"args\":{\"at\":\"9999-12-31T23:59:59Z\"}}"), 0);
	assert_int_equal(submit_json(h, "{\"id\":\"fard\",\"kind\":\"timer\",\"args\":{\"after_ms\":86400000},\"deadline_ms\":253402300799999}"), 0);
	assert_int_equal(submit_json(h, "{\"id\":\"near\",\"kind\":\"timer\",\"args\":{\"after_ms\":200}}"), 0);
	struct event ev[4];
	assert_int_equal(wait_events(h, ev, 1, 3000), 1);
	assert_string_equal(ev[0].id, "near");
	/* Restart: the stored far specs load again (no "unreadable"). */
	assert_int_equal(harness_td_stop(h, SIGTERM), 0);
	assert_int_equal(harness_td_start(h, NULL), 0);
	assert_false(log_contains(h, "unreadable\",\"id"));
	assert_int_equal(redis_int(h, "HLEN td:triggers"), 2);
	const char *c[] = {"op", "cancel", "id", "far"};
	assert_int_equal(submit_fields(h, 4, c, NULL), 0);
	assert_int_equal(wait_events(h, ev, 1, 3000), 1);
	assert_string_equal(ev[0].status, "cancelled");
	assert_int_equal(harness_td_stop(h, SIGTERM), 0); /* not wedged */
}

/* Airflow's serialized DateTimeTrigger is accepted as it is. */
static void airflow_datetime_trigger(void **state)
{
	struct harness *h = *state;
	assert_int_equal(harness_td_start(h, NULL), 0);
	int64_t at = now_ms() + 400;
	char doc[600];
	/* datetime as Airflow serializes it, seconds with a fraction */
	snprintf(doc, sizeof(doc),
		 "{\"id\":\"af1\",\"classpath\":\"airflow.providers.standard.triggers.temporal.DateTimeTrigger\","
		 "\"kwargs\":{\"moment\":{\"__type\":\"datetime\",\"__var\":%lld.%03lld},\"end_from_trigger\":false},"
		 "\"meta\":{\"dag_id\":\"d\",\"task_id\":\"t\",\"try_number\":1}}",
		 (long long)(at / 1000), (long long)(at % 1000));
	assert_int_equal(submit_json(h, doc), 0);
	/* the 2.x class path, ISO moment */
	assert_int_equal(submit_json(h, "{\"id\":\"af2\",\"classpath\":\"airflow.triggers.temporal.DateTimeTrigger\","
				     "\"kwargs\":{\"moment\":\"2020-01-01T00:00:00+00:00\"}}"), 0);
	assert_int_equal(submit_json(h, "{\"id\":\"af3\",\"classpath\":\"airflow.triggers.temporal.DateTimeTrigger\","
				     "\"kwargs\":{\"moment\":\"tomorrow\"}}"), 0);
	assert_int_equal(submit_json(h, "{\"id\":\"af4\",\"classpath\":\"my.own.Trigger\",\"kwargs\":{}}"), 0);
	assert_int_equal(submit_json(h, "{\"id\":\"af5\",\"classpath\":\"airflow.triggers.temporal.DateTimeTrigger\","
				     "\"kwargs\":{\"moment\":\"2020-01-01T00:00:00Z\",\"apply_function\":\"x\"}}"), 0);
	struct event got[6];
	assert_int_equal(wait_events(h, got, 5, 5000), 5);
	/* Order between firings and rejections read together is not fixed:
	 * look events up by id. */
	struct event ev[5];
	static const char *const ids[] = {"af2", "af3", "af4", "af5", "af1"};
	for (int i = 0; i < 5; i++) {
		int k = -1;
		for (int j = 0; j < 5; j++)
			if (!strcmp(got[j].id, ids[i]))
				k = j;
		if (k < 0)
			fail_msg("no event for %s", ids[i]);
		ev[i] = got[k];
	}
	assert_string_equal(ev[0].status, "success");
	assert_string_equal(ev[0].payload_json, "{\"__type\":\"datetime\",\"__var\":1577836800.0}");
	assert_string_equal(ev[1].status, "rejected");
	assert_non_null(strstr(ev[1].error, "kwargs.moment: expected an ISO 8601"));
	assert_non_null(strstr(ev[2].error, "classpath: unsupported Airflow trigger 'my.own.Trigger'"));
	assert_non_null(strstr(ev[3].error, "kwargs.apply_function: not a DateTimeTrigger argument"));
	assert_string_equal(ev[4].status, "success");
	assert_string_equal(ev[4].kind, "timer");
	assert_int_equal(ev[4].due_at_ms, at);
	assert_true(ev[4].fired_at_ms >= at);
	assert_string_equal(ev[4].meta_json, "{\"dag_id\":\"d\",\"task_id\":\"t\",\"try_number\":1}");
	double var = 0;
	assert_int_equal(sscanf(ev[4].payload_json, "{\"__type\":\"datetime\",\"__var\":%lf}", &var), 1);
	assert_true(var * 1000.0 > (double)at - 0.5 && var * 1000.0 < (double)at + 0.5);
}

/* The command-line contract: --version, --help, usage errors exit 2. */
static void cli_contract(void **state)
{
	(void)state;
	const char *bin = getenv("TRIGGERD_BIN");
	char cmd[600];
	static const struct {
		const char *args;
		int code;
	} cases[] = {
		{"--version", 0}, {"--help", 0}, {"--bogus", 2}, {"extra-arg", 2},
		{"--redis nohost", 2}, {"--redis host:99999", 2}, {"--log-level loud", 2},
		{"--sink-buffer 0", 2}, {"--batch -1", 2}, {"--prefix ''", 2},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		snprintf(cmd, sizeof(cmd), "%s %s >/dev/null 2>&1", bin, cases[i].args);
		int st = system(cmd);
		if (!WIFEXITED(st) || WEXITSTATUS(st) != cases[i].code)
			fail_msg("triggerd %s: exit %d, want %d", cases[i].args,
				 WIFEXITED(st) ? WEXITSTATUS(st) : -1, cases[i].code);
	}
	snprintf(cmd, sizeof(cmd), "%s --version", bin);
	FILE *p = popen(cmd, "r");
	char line[100] = "";
	assert_non_null(fgets(line, sizeof(line), p));
	pclose(p);
	assert_non_null(strstr(line, "triggerd 0."));
}

static void clean_shutdown_exit_code(void **state)
{
	struct harness *h = *state;
	assert_int_equal(harness_td_start(h, NULL), 0);
	assert_int_equal(harness_td_stop(h, SIGTERM), 0);
	assert_true(log_contains(h, "\"msg\":\"stopped\""));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(timers_10k_exactly_once, harness_setup, harness_teardown),
		cmocka_unit_test_setup_teardown(kill9_restart_exactly_once, harness_setup, harness_teardown),
		cmocka_unit_test_setup_teardown(rejected_inputs, harness_setup, harness_teardown),
		cmocka_unit_test_setup_teardown(cancel_and_timeout, harness_setup, harness_teardown),
		cmocka_unit_test_setup_teardown(repeat_and_idempotent_add, harness_setup, harness_teardown),
		cmocka_unit_test_setup_teardown(after_ms_survives_restart, harness_setup, harness_teardown),
		cmocka_unit_test_setup_teardown(redis_restart_loses_nothing, harness_setup, harness_teardown),
		cmocka_unit_test_setup_teardown(redis_comes_back_empty, harness_setup, harness_teardown),
		cmocka_unit_test_setup_teardown(redis_down_at_start, harness_setup, harness_teardown),
		cmocka_unit_test_setup_teardown(far_future_times, harness_setup, harness_teardown),
		cmocka_unit_test_setup_teardown(airflow_datetime_trigger, harness_setup, harness_teardown),
		cmocka_unit_test(cli_contract),
		cmocka_unit_test_setup_teardown(clean_shutdown_exit_code, harness_setup, harness_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
