/*
 * The interface between the engine and a trigger kind (triggers/<kind>.c).
 *
 * Each kind is one `static const struct td_kind` table. The engine calls a
 * kind only through it:
 *
 *   parse    validate the spec's `args` and fill the kind's state, which
 *            lives inside the trigger (state_size bytes, td_trigger_state());
 *            write "args.<field>: <reason>" to err on failure.
 *   pack_args  write the normalised args (what td:triggers stores, so a
 *            restart resumes rather than restarts: e.g. after_ms becomes at_ms)
 *   start    begin waiting; called once the trigger is stored (or loaded), and
 *            again after a firing was held back because the event sink was
 *            full: a kind must then re-evaluate and fire again.
 *   stop     stop waiting (cancel, timeout, shutdown). Idempotent.
 *   destroy  free what parse/start allocated (not the trigger). May be NULL.
 *
 * A kind reports through td_trigger_fire(): exactly once for a one-shot
 * trigger, once per occurrence for a `repeat` one. The engine owns timeouts.
 * All calls happen on the shard's thread.
 */
#ifndef TRIGGERD_KIND_H
#define TRIGGERD_KIND_H

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "triggerd/wheel.h"

struct td_trigger;
struct td_shard;
struct td_http;
struct td_ratelimit;
struct td_ssrf;
struct td_conns;

struct td_kind {
	const char *name;
	size_t state_size;
	int (*parse)(struct td_trigger *t, const msgpack_object *args,
		     int64_t now_ms, char *err, size_t errlen);
	void (*pack_args)(const struct td_trigger *t, msgpack_packer *pk);
	int (*start)(struct td_trigger *t);
	void (*stop)(struct td_trigger *t);
	void (*destroy)(struct td_trigger *t);
};

enum td_status {
	TD_SUCCESS,
	TD_FAILURE,
	TD_TIMEOUT,
	TD_REJECTED,
	TD_CANCELLED,
};

/** What a firing reports. Fields not used are 0/NULL. */
struct td_outcome {
	enum td_status status;
	const char *error;       /* failure: why (NUL-terminated) */
	const char *payload;     /* msgpack bytes, NULL: nil */
	size_t payload_len;
	int64_t due_at_ms;       /* timers: the due time; else -1 */
	uint64_t occurrence;     /* repeat: a key unique per occurrence (e.g.
				    the due time); with seq it dedupes */
	uint64_t seq;            /* repeat: 1, 2, ... */
	struct td_notify *notify; /* NULL, or told the record's result */
	unsigned dedup_ttl_s;    /* repeat: keep the occurrence's dedup key
				    this long (0: --dedup-ttl) */
};

/* Told what became of a firing in Redis: result 1 posted, 0 not (fired,
 * cancelled or deduplicated already), < 0 failed or abandoned. */
struct td_notify {
	void (*fn)(struct td_notify *n, long long result);
};

/** The kind's state inside @t (state_size bytes, max-aligned). */
void *td_trigger_state(const struct td_trigger *t);
/** The trigger whose kind state is @state (inverse of td_trigger_state). */
struct td_trigger *td_trigger_from_state(void *state);
/** The trigger's shard (for its wheel and reactor). */
struct td_shard *td_trigger_shard(const struct td_trigger *t);
struct td_wheel *td_shard_wheel(struct td_shard *s);
/** The shard's HTTP client (curl multi on the reactor). */
struct td_http *td_shard_http(struct td_shard *s);
/** The shard's per-host rate limiter and SSRF guard. */
struct td_ratelimit *td_shard_ratelimit(struct td_shard *s);
const struct td_ssrf *td_shard_ssrf(struct td_shard *s);
/** Named connections (AIRFLOW_CONN_*, --connections-file). */
const struct td_conns *td_shard_conns(struct td_shard *s);
/** Counters a kind bumps; reported in the periodic stats log line (and,
 * later, /metrics). */
enum td_counter {
	TD_CNT_HTTP_POLLS,        /* requests completed */
	TD_CNT_HTTP_TRANSPORT,    /* transport errors (refused, timeout, DNS) */
	TD_CNT_HTTP_5XX,          /* 5xx answers retried with backoff */
	TD_CNT_HTTP_RATELIMITED,  /* polls deferred by the per-host limiter */
	TD_CNT_HTTP_SSRF,         /* connects refused by the SSRF guard */
	TD_CNT__MAX,
};
void td_shard_count(struct td_shard *s, enum td_counter c, unsigned long n);

/** A pseudo-random 64-bit value from the shard's generator (jitter). */
uint64_t td_shard_rand(struct td_shard *s);
/** True when the spec asked for `repeat`. */
bool td_trigger_repeat(const struct td_trigger *t);
/** The trigger id (not NUL-terminated) and its length. */
const char *td_trigger_id(const struct td_trigger *t, size_t *len);

/**
 * Report an outcome. For a one-shot trigger (or a non-success outcome) the
 * trigger ends: the engine calls stop and destroy and frees it, so @t must
 * not be used after this returns 0. For a repeat success the trigger stays.
 *
 * Returns 0, or TD_EFULL when the event sink is at its bound: nothing was
 * posted, the trigger stays stored and the engine calls start() again once
 * there is room.
 */
int td_trigger_fire(struct td_trigger *t, const struct td_outcome *o);

/** True when msgpack object @k is the string @s (map keys, enum values). */
static inline bool td_mp_str_is(const msgpack_object *k, const char *s)
{
	size_t n = strlen(s);
	return k->type == MSGPACK_OBJECT_STR && k->via.str.size == n &&
	       memcmp(k->via.str.ptr, s, n) == 0;
}

/** Write "args.<field>: <reason>" style text to @err; returns
 * TD_EINVAL_SPEC, so a parse can `return td_spec_err(err, errlen, ...)`. */
int td_spec_err(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/** A NUL-terminated malloc'd copy of @n bytes at @p (NULL on ENOMEM). */
char *td_memdup0(const char *p, size_t n);

/**
 * The bytes of @sb, right-sized: msgpack-c starts every sbuffer at 8 KiB,
 * which a kind keeping packed args for the trigger's life would otherwise
 * pay per trigger. Returns sb->data (the caller owns it, as before).
 */
static inline char *td_sbuffer_shrink(msgpack_sbuffer *sb)
{
	if (sb->data && sb->size) {
		char *p = (char *)realloc(sb->data, sb->size);
		if (p)
			sb->data = p;
	}
	return sb->data;
}

/** Registry: the kind named @name (@len bytes), or NULL. */
const struct td_kind *td_kind_find(const char *name, size_t len);

/* The kinds (triggers/<name>.c). */
extern const struct td_kind td_kind_timer;
extern const struct td_kind td_kind_http;
extern const struct td_kind td_kind_webhook;
extern const struct td_kind td_kind_kafka;
extern const struct td_kind td_kind_file;
extern const struct td_kind td_kind_redis;

#endif
