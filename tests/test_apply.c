/*
 * The apply script's semantics, checked with EVAL against a real
 * redis-server: every op, duplicates inside a run, mixed sequences, and
 * that re-applying a batch changes nothing (what the sink relies on when it
 * re-sends a batch whose reply was lost).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "engine_i.h"
#include "harness.h"

struct rec {
	const char *op, *a, *b, *c, *d;
};

/* EVAL the script over @recs; write each record's result into @res. */
static void apply_f(struct harness *h, const struct rec *recs, int n, long long *res,
		    bool force)
{
	const char *argv[9 + 5 * 32];
	int k = 0;
	argv[k++] = "EVAL";
	argv[k++] = td_sink_script();
	argv[k++] = "2";
	argv[k++] = "td:triggers";
	argv[k++] = "td:submit";
	argv[k++] = "triggerd";
	argv[k++] = "60";
	argv[k++] = force ? "1" : "0";
	for (int i = 0; i < n; i++) {
		argv[k++] = recs[i].op;
		argv[k++] = recs[i].a;
		argv[k++] = recs[i].b;
		argv[k++] = recs[i].c;
		argv[k++] = recs[i].d;
	}
	redisReply *r = redisCommandArgv(h->c, k, argv, NULL);
	assert_non_null(r);
	if (r->type == REDIS_REPLY_ERROR)
		fail_msg("script error: %s", r->str);
	assert_int_equal(r->type, REDIS_REPLY_ARRAY);
	assert_int_equal(r->elements, (size_t)n);
	for (int i = 0; i < n; i++)
		res[i] = r->element[i]->integer;
	freeReplyObject(r);
}

static void apply(struct harness *h, const struct rec *recs, int n, long long *res)
{
	apply_f(h, recs, n, res, false);
}

static char entry[8][64];

/* Add @n submissions and deliver them to the group, so XACK has work. */
static void pending(struct harness *h, int n)
{
	redisReply *r = redisCommand(h->c, "XGROUP CREATE td:submit triggerd $ MKSTREAM");
	freeReplyObject(r);
	for (int i = 0; i < n; i++) {
		r = redisCommand(h->c, "XADD td:submit * op add");
		snprintf(entry[i], sizeof(entry[i]), "%s", r->str);
		freeReplyObject(r);
	}
	r = redisCommand(h->c, "XREADGROUP GROUP triggerd c COUNT 100 STREAMS td:submit >");
	freeReplyObject(r);
}



static void store_runs_and_duplicates(void **state)
{
	struct harness *h = *state;
	pending(h, 4);
	const struct rec recs[] = {
		{"A", entry[0], "x", "spec-x1", ""},
		{"A", entry[1], "x", "spec-x2", ""}, /* same id in the same run */
		{"A", entry[2], "y", "spec-y", ""},
	};
	long long res[3];
	apply(h, recs, 3, res);
	assert_int_equal(res[0], 1);
	assert_int_equal(res[1], 0);
	assert_int_equal(res[2], 1);
	redisReply *r = redisCommand(h->c, "HGET td:triggers x");
	assert_string_equal(r->str, "spec-x1"); /* the first one won */
	freeReplyObject(r);
	assert_int_equal(harness_pending(h), 1); /* three acked, entry[3] not */
	/* Re-applying the batch (a re-send after a lost reply) changes
	 * nothing, and reports as stored exactly the records whose spec is
	 * the stored one: those this batch stored the first time. */
	apply(h, recs, 3, res);
	assert_int_equal(res[0], 1);
	assert_int_equal(res[1], 0);
	assert_int_equal(res[2], 1);
	assert_int_equal(redis_int(h, "HLEN td:triggers"), 2);
	r = redisCommand(h->c, "HGET td:triggers x");
	assert_string_equal(r->str, "spec-x1");
	freeReplyObject(r);
}

/* A submission applied once is never applied again by a re-read of its
 * entry, whatever else happened in between. */
static void entries_gate_their_effect(void **state)
{
	struct harness *h = *state;
	pending(h, 3);
	const struct rec first[] = {
		{"A", entry[0], "g", "spec-g", ""},
		{"F", "g", "td:events", "cancelled-g", entry[1]}, /* cancel */
	};
	long long res[2];
	apply(h, first, 2, res);
	assert_int_equal(res[0], 1);
	assert_int_equal(res[1], 1);
	assert_int_equal(redis_int(h, "XLEN td:events"), 1);
	/* The same two entries read again (a reconnect re-read the PEL before
	 * the first records were applied): neither may act again. */
	const struct rec again[] = {
		{"A", entry[0], "g", "spec-g2", ""},
		{"F", "g", "td:events", "cancelled-g", entry[1]},
	};
	apply(h, again, 2, res);
	assert_int_equal(res[0], 0);
	assert_int_equal(res[1], 0);
	assert_int_equal(redis_int(h, "HEXISTS td:triggers g"), 0);
	assert_int_equal(redis_int(h, "XLEN td:events"), 1);
	/* A cancel whose entry was applied must not delete a trigger stored
	 * since (same id, added again by a later submission). */
	const struct rec readd[] = {{"A", entry[2], "g", "spec-g3", ""}};
	apply(h, readd, 1, res);
	assert_int_equal(res[0], 1);
	apply(h, again + 1, 1, res);
	assert_int_equal(res[0], 0);
	assert_int_equal(redis_int(h, "HEXISTS td:triggers g"), 1);
}

/* An XADD that fails (the events key is not a stream) fails only its own
 * record: nothing is deleted or acked for it, the rest of the run applies. */
static void failed_post_changes_nothing(void **state)
{
	struct harness *h = *state;
	pending(h, 2);
	redisReply *r = redisCommand(h->c, "SET td:events:bad oops");
	freeReplyObject(r);
	r = redisCommand(h->c, "HSET td:triggers p1 1 p2 1 p3 1 rp 1");
	freeReplyObject(r);
	const struct rec recs[] = {
		{"F", "p1", "td:events", "e1", ""},
		{"F", "p2", "td:events:bad", "e2", ""},
		{"F", "p3", "td:events", "e3", entry[0]},
		{"J", entry[1], "td:events:bad", "j", "ej"},
		{"R", "rp", "td:events:bad", "er", "td:seen:rp:1"},
	};
	long long res[5];
	apply(h, recs, 5, res);
	long long want[] = {1, -1, 1, -1, -1};
	for (int i = 0; i < 5; i++)
		assert_int_equal(res[i], want[i]);
	assert_int_equal(redis_int(h, "HEXISTS td:triggers p1"), 0);
	assert_int_equal(redis_int(h, "HEXISTS td:triggers p2"), 1); /* kept */
	assert_int_equal(redis_int(h, "HEXISTS td:triggers p3"), 0);
	assert_int_equal(redis_int(h, "XLEN td:events"), 2);
	assert_int_equal(harness_pending(h), 1);                   /* J's entry */
	assert_int_equal(redis_int(h, "EXISTS td:seen:rp:1"), 0);   /* retryable */
}

static void fire_once_in_a_run(void **state)
{
	struct harness *h = *state;
	pending(h, 2);
	redisReply *r = redisCommand(h->c, "HSET td:triggers a 1 b 1");
	freeReplyObject(r);
	const struct rec recs[] = {
		{"F", "a", "td:events", "ev-a1", ""},
		{"F", "a", "td:events", "ev-a2", entry[0]}, /* e.g. a cancel racing */
		{"F", "zz", "td:events", "ev-zz", ""},       /* not stored */
		{"F", "b", "td:events:q", "ev-b", entry[1]},
	};
	long long res[4];
	apply(h, recs, 4, res);
	assert_int_equal(res[0], 1);
	assert_int_equal(res[1], 0);
	assert_int_equal(res[2], 0);
	assert_int_equal(res[3], 1);
	assert_int_equal(redis_int(h, "XLEN td:events"), 1);
	assert_int_equal(redis_int(h, "XLEN td:events:q"), 1);
	assert_int_equal(redis_int(h, "HLEN td:triggers"), 0);
	assert_int_equal(harness_pending(h), 0); /* acked even when nothing fired */
	apply(h, recs, 4, res);
	assert_int_equal(res[0] + res[1] + res[2] + res[3], 0);
	assert_int_equal(redis_int(h, "XLEN td:events"), 1);
}

static void mixed_sequence_in_order(void **state)
{
	struct harness *h = *state;
	pending(h, 3);
	/* store, fire, store again, fire again: each applies in order. */
	const struct rec recs[] = {
		{"A", entry[0], "m", "s1", ""},
		{"F", "m", "td:events", "e1", ""},
		{"A", entry[1], "m", "s2", ""},
		{"F", "m", "td:events", "e2", ""},
		{"F", "m", "td:events", "e3", ""},
	};
	long long res[5];
	apply(h, recs, 5, res);
	long long want[] = {1, 1, 1, 1, 0};
	for (int i = 0; i < 5; i++)
		assert_int_equal(res[i], want[i]);
	assert_int_equal(redis_int(h, "XLEN td:events"), 2);
}

static void repeat_and_reject(void **state)
{
	struct harness *h = *state;
	pending(h, 2);
	redisReply *r = redisCommand(h->c, "HSET td:triggers rep 1");
	freeReplyObject(r);
	const struct rec recs[] = {
		{"R", "rep", "td:events", "o1", "td:seen:rep:100"},
		{"R", "rep", "td:events", "o1", "td:seen:rep:100"}, /* same occurrence */
		{"R", "rep", "td:events", "o2", "td:seen:rep:200"},
		{"R", "gone", "td:events", "o", "td:seen:gone:1"},  /* not stored */
		{"J", entry[0], "td:events", "bad", "ev-bad"},
		{"J", entry[0], "td:events", "bad", "ev-bad"},       /* re-sent */
	};
	long long res[6];
	apply(h, recs, 6, res);
	long long want[] = {1, 0, 1, 0, 1, 0};
	for (int i = 0; i < 6; i++)
		assert_int_equal(res[i], want[i]);
	assert_int_equal(redis_int(h, "XLEN td:events"), 3);
	assert_int_equal(redis_int(h, "HEXISTS td:triggers rep"), 1);
	long long ttl = redis_int(h, "TTL td:seen:rep:100");
	assert_true(ttl > 0 && ttl <= 60);
	assert_int_equal(harness_pending(h), 1);
}

/* T: a repeat occurrence with its own dedup TTL; A with no entry: the
 * control API's store (1 new, 2 identical already, 0 another spec). */
static void short_ttl_repeat_and_unacked_store(void **state)
{
	struct harness *h = *state;
	redisReply *r = redisCommand(h->c, "HSET td:triggers rep 1");
	freeReplyObject(r);
	const struct rec recs[] = {
		{"T", "rep", "td:events", "o1", "7:td:seen:rep:5"},
		{"T", "rep", "td:events", "o1", "7:td:seen:rep:5"},  /* re-sent */
		{"T", "rep", "td:events", "o2", "3600:td:seen:rep:6"},
		{"A", "", "api1", "spec-1", ""},
	};
	long long res[4];
	apply(h, recs, 4, res);
	long long want[] = {1, 0, 1, 1};
	for (int i = 0; i < 4; i++)
		assert_int_equal(res[i], want[i]);
	/* Later batches (within one run an id counts for its first record). */
	const struct rec again[] = {{"A", "", "api1", "spec-1", ""}};
	const struct rec other[] = {{"A", "", "api1", "spec-2", ""}};
	apply(h, again, 1, res);
	assert_int_equal(res[0], 2);
	apply(h, other, 1, res);
	assert_int_equal(res[0], 0);
	assert_int_equal(redis_int(h, "XLEN td:events"), 2);
	long long ttl = redis_int(h, "TTL td:seen:rep:5");
	assert_true(ttl > 0 && ttl <= 7);
	ttl = redis_int(h, "TTL td:seen:rep:6");
	assert_true(ttl > 60 && ttl <= 3600);
	r = redisCommand(h->c, "HGET td:triggers api1");
	assert_string_equal(r->str, "spec-1");
	freeReplyObject(r);
}

/* Forced batches (Redis came back empty): post despite the guards. */
static void force_and_restore(void **state)
{
	struct harness *h = *state;
	const struct rec recs[] = {
		{"S", "s1", "spec", "", ""},
		{"S", "s1", "spec2", "", ""},
		{"F", "gone", "td:events", "ev", "1-1"},  /* not stored, ack of nothing */
		{"J", "1-2", "td:events", "x", "ev-j"},   /* entry not pending */
	};
	long long res[4];
	apply_f(h, recs, 4, res, true);
	long long want[] = {1, 0, 1, 1};
	for (int i = 0; i < 4; i++)
		assert_int_equal(res[i], want[i]);
	assert_int_equal(redis_int(h, "XLEN td:events"), 2);
	/* Not forced: the same F and J post nothing. */
	apply_f(h, recs + 2, 2, res, false);
	assert_int_equal(res[0] + res[1], 0);
	assert_int_equal(redis_int(h, "XLEN td:events"), 2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(store_runs_and_duplicates, harness_setup, harness_teardown),
		cmocka_unit_test_setup_teardown(fire_once_in_a_run, harness_setup, harness_teardown),
		cmocka_unit_test_setup_teardown(mixed_sequence_in_order, harness_setup, harness_teardown),
		cmocka_unit_test_setup_teardown(repeat_and_reject, harness_setup, harness_teardown),
		cmocka_unit_test_setup_teardown(short_ttl_repeat_and_unacked_store, harness_setup, harness_teardown),
		cmocka_unit_test_setup_teardown(force_and_restore, harness_setup, harness_teardown),
		cmocka_unit_test_setup_teardown(entries_gate_their_effect, harness_setup, harness_teardown),
		cmocka_unit_test_setup_teardown(failed_post_changes_nothing, harness_setup, harness_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
