/*
 * Kind "timer": fires at a wall-clock time.
 *
 * args: exactly one of at_ms (unix ms), at (RFC 3339), after_ms (relative
 * to acceptance; stored as at_ms, so a restart does not restart the delay);
 * interval_ms with repeat: true fires at at_ms + k * interval_ms, k = 0, 1, ...
 * success_payload (any value) becomes the event's payload (default nil).
 *
 * The wheel runs on the monotonic clock; the due time is wall clock and is
 * checked again when the wheel fires: if the wall clock was stepped back in
 * between, the timer is re-armed instead of firing early.
 *
 * A repeat timer whose occurrences fell in a time triggerd was not running
 * (or was holding firings back) fires the latest missed occurrence once,
 * then keeps to its schedule; the occurrence key (its due time) makes a
 * re-post of an occurrence already posted a no-op.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "triggerd/kind.h"
#include "triggerd/timefmt.h"
#include "triggerd/triggerd.h"

struct timer_state {
	struct td_timer node;
	int64_t at_ms;       /* first (or only) due time */
	int64_t interval_ms; /* 0: one-shot */
	int64_t due_ms;      /* the occurrence the node is armed for */
	char *payload;       /* success_payload (msgpack), NULL: nil */
};

static int get_uint(const msgpack_object *v, const char *name, int64_t *out,
		    char *err, size_t errlen)
{
	if (v->type != MSGPACK_OBJECT_POSITIVE_INTEGER) {
		snprintf(err, errlen, "args.%s: expected a non-negative integer (ms)", name);
		return TD_EINVAL_SPEC;
	}
	if (v->via.u64 > (uint64_t)TD_TIME_MAX_MS) {
		snprintf(err, errlen, "args.%s: larger than %lld (year 9999)", name,
			 (long long)TD_TIME_MAX_MS);
		return TD_EINVAL_SPEC;
	}
	*out = (int64_t)v->via.u64;
	return 0;
}

static void fire_cb(struct td_timer *node, uint64_t now);

static int timer_parse_args(struct td_trigger *t, const msgpack_object *args,
			    int64_t now_ms, char *err, size_t errlen)
{
	struct timer_state *st = td_trigger_state(t);
	int have = 0;
	int64_t v;
	memset(st, 0, sizeof(*st));
	td_timer_init(&st->node, fire_cb);
	if (args->type != MSGPACK_OBJECT_MAP) {
		snprintf(err, errlen, "args: required: one of at_ms, at, after_ms");
		return TD_EINVAL_SPEC;
	}
	for (uint32_t i = 0; i < args->via.map.size; i++) {
		const msgpack_object *k = &args->via.map.ptr[i].key;
		const msgpack_object *val = &args->via.map.ptr[i].val;
		if (td_mp_str_is(k, "at_ms")) {
			if (get_uint(val, "at_ms", &v, err, errlen))
				return TD_EINVAL_SPEC;
			st->at_ms = v;
			have++;
		} else if (td_mp_str_is(k, "after_ms")) {
			if (get_uint(val, "after_ms", &v, err, errlen))
				return TD_EINVAL_SPEC;
			st->at_ms = now_ms + v;
			have++;
		} else if (td_mp_str_is(k, "at")) {
			if (val->type != MSGPACK_OBJECT_STR ||
			    td_rfc3339_parse(val->via.str.ptr, val->via.str.size, &v) != 0) {
				snprintf(err, errlen,
					 "args.at: expected an RFC 3339 date-time such as 2026-01-02T03:04:05Z");
				return TD_EINVAL_SPEC;
			}
			if (v < 0) {
				snprintf(err, errlen, "args.at: before 1970");
				return TD_EINVAL_SPEC;
			}
			st->at_ms = v;
			have++;
		} else if (td_mp_str_is(k, "success_payload")) {
			msgpack_sbuffer sb;
			msgpack_packer pk;
			msgpack_sbuffer_init(&sb);
			msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
			/* Length-prefixed: 4 bytes of size, then the msgpack. */
			uint32_t n = 0;
			msgpack_sbuffer_write(&sb, (const char *)&n, sizeof(n));
			msgpack_pack_object(&pk, *val);
			n = (uint32_t)(sb.size - sizeof(n));
			memcpy(sb.data, &n, sizeof(n));
			free(st->payload);
			st->payload = td_sbuffer_shrink(&sb);
		} else if (td_mp_str_is(k, "interval_ms")) {
			if (get_uint(val, "interval_ms", &v, err, errlen))
				return TD_EINVAL_SPEC;
			if (v < 1) {
				snprintf(err, errlen, "args.interval_ms: must be at least 1");
				return TD_EINVAL_SPEC;
			}
			st->interval_ms = v;
		} else {
			snprintf(err, errlen, "args.%.*s: unknown field",
				 (int)(k->type == MSGPACK_OBJECT_STR && k->via.str.size < 64 ?
				       k->via.str.size : 0),
				 k->type == MSGPACK_OBJECT_STR ? k->via.str.ptr : "");
			return TD_EINVAL_SPEC;
		}
	}
	if (have == 0) {
		snprintf(err, errlen, "args: required: one of at_ms, at, after_ms");
		return TD_EINVAL_SPEC;
	}
	if (have > 1) {
		snprintf(err, errlen, "args: give only one of at_ms, at, after_ms");
		return TD_EINVAL_SPEC;
	}
	/* What is stored must parse again: after_ms + now stays in range. */
	if (st->at_ms > TD_TIME_MAX_MS) {
		snprintf(err, errlen, "args.after_ms: due time would be after year 9999");
		return TD_EINVAL_SPEC;
	}
	if (td_trigger_repeat(t) && !st->interval_ms) {
		snprintf(err, errlen, "args.interval_ms: required when repeat is true");
		return TD_EINVAL_SPEC;
	}
	if (!td_trigger_repeat(t) && st->interval_ms) {
		snprintf(err, errlen, "args.interval_ms: only valid with repeat: true");
		return TD_EINVAL_SPEC;
	}
	return 0;
}

/* A failed parse frees what it allocated: the engine frees the trigger
 * without calling destroy. */
static int timer_parse(struct td_trigger *t, const msgpack_object *args,
		       int64_t now_ms, char *err, size_t errlen)
{
	int rc = timer_parse_args(t, args, now_ms, err, errlen);
	if (rc) {
		struct timer_state *st = td_trigger_state(t);
		free(st->payload);
		st->payload = NULL;
	}
	return rc;
}

static void timer_destroy(struct td_trigger *t)
{
	struct timer_state *st = td_trigger_state(t);
	free(st->payload);
	st->payload = NULL;
}

static void timer_pack_args(const struct td_trigger *t, msgpack_packer *pk)
{
	const struct timer_state *st = td_trigger_state(t);
	msgpack_pack_map(pk, 1 + (st->interval_ms != 0) + (st->payload != NULL));
	if (st->payload) {
		uint32_t n;
		memcpy(&n, st->payload, sizeof(n));
		msgpack_pack_str(pk, 15);
		msgpack_pack_str_body(pk, "success_payload", 15);
		msgpack_pack_bin_body(pk, st->payload + sizeof(n), n);
	}
	msgpack_pack_str(pk, 5);
	msgpack_pack_str_body(pk, "at_ms", 5);
	msgpack_pack_int64(pk, st->at_ms);
	if (st->interval_ms) {
		msgpack_pack_str(pk, 11);
		msgpack_pack_str_body(pk, "interval_ms", 11);
		msgpack_pack_int64(pk, st->interval_ms);
	}
}

static void arm(struct td_trigger *t, struct timer_state *st)
{
	td_wheel_add(td_shard_wheel(td_trigger_shard(t)), &st->node,
		     td_wall_to_tick(st->due_ms));
}

/*
 * How long an occurrence's dedup key must live. An occurrence can be posted
 * again only while it is the latest one due (a restart re-fires the latest
 * missed occurrence, see the top of the file) or while its record waits to
 * be re-sent after a lost reply. So two intervals, but at least 5 minutes
 * to outlast a Redis outage; --dedup-ttl caps it (the sink's default when
 * larger). Keys per repeat timer stay bounded: a 1 s timer keeps about 300,
 * not 86,400 a day.
 */
static unsigned dedup_ttl_s(int64_t interval_ms)
{
	int64_t s = interval_ms / 1000 * 2 + 1;
	if (s < 300)
		s = 300;
	return s > 86400 * 365 ? 0 : (unsigned)s;
}

/* The latest occurrence at or before @now, or the first one. */
static int64_t latest_due(const struct timer_state *st, int64_t now)
{
	if (!st->interval_ms || now < st->at_ms)
		return st->at_ms;
	return st->at_ms + (now - st->at_ms) / st->interval_ms * st->interval_ms;
}

static int timer_start(struct td_trigger *t)
{
	struct timer_state *st = td_trigger_state(t);
	st->due_ms = latest_due(st, td_wall_ms());
	arm(t, st);
	return 0;
}

static void fire_cb(struct td_timer *node, uint64_t now)
{
	struct timer_state *st = td_container_of(node, struct timer_state, node);
	struct td_trigger *t = td_trigger_from_state(st);
	int64_t wall = td_wall_ms();
	if (wall < st->due_ms) {
		/* The wall clock was stepped back: wait it out, never re-arming
		 * into this same advance. */
		td_wheel_add(td_shard_wheel(td_trigger_shard(t)), &st->node,
			     td_rearm_tick(st->due_ms, now));
		return;
	}
	struct td_outcome o = {
		.status = TD_SUCCESS,
		.due_at_ms = st->due_ms,
	};
	if (st->payload) {
		uint32_t n;
		memcpy(&n, st->payload, sizeof(n));
		o.payload = st->payload + sizeof(n);
		o.payload_len = n;
	}
	bool repeat = td_trigger_repeat(t);
	if (repeat) {
		o.occurrence = (uint64_t)st->due_ms;
		o.seq = (uint64_t)((st->due_ms - st->at_ms) / st->interval_ms) + 1;
		o.dedup_ttl_s = dedup_ttl_s(st->interval_ms);
	}
	int rc = td_trigger_fire(t, &o);
	if (rc != 0 || !repeat)
		return; /* ended and freed, or held: start() runs again later */
	int64_t next = st->due_ms + st->interval_ms;
	if (next <= wall) {
		/* Behind by more than an interval: coalesce to the latest. */
		int64_t latest = latest_due(st, wall);
		next = latest > st->due_ms ? latest : next;
	}
	st->due_ms = next;
	arm(t, st);
}

static void timer_stop(struct td_trigger *t)
{
	struct timer_state *st = td_trigger_state(t);
	td_wheel_cancel(td_shard_wheel(td_trigger_shard(t)), &st->node);
}

const struct td_kind td_kind_timer = {
	.name = "timer",
	.state_size = sizeof(struct timer_state),
	.parse = timer_parse,
	.pack_args = timer_pack_args,
	.start = timer_start,
	.stop = timer_stop,
	.destroy = timer_destroy,
};
