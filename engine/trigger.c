/*
 * Trigger lifecycle and the id table.
 *
 *   intake parses -> STORING (in the table, 'A' record in flight)
 *   store answers 1 -> ACTIVE: timeout armed, kind started
 *   kind or timeout fires -> 'F' (or 'R' for a repeat occurrence) record;
 *                            a one-shot trigger is freed at once: the record
 *                            carries everything the event needs
 *   sink full -> HELD: the kind is stopped, and started again when the sink
 *                has room (the trigger stays stored in Redis meanwhile)
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "engine_i.h"
#include "triggerd/log.h"

/* ---- table ----------------------------------------------------------- */

uint64_t td_hash_bytes(const char *s, size_t n)
{
	/* FNV-1a, then a final mix so low bits (the bucket) depend on all. */
	uint64_t h = 0xcbf29ce484222325ULL;
	for (size_t i = 0; i < n; i++) {
		h ^= (unsigned char)s[i];
		h *= 0x100000001b3ULL;
	}
	h ^= h >> 29;
	h *= 0xbf58476d1ce4e5b9ULL;
	h ^= h >> 32;
	return h;
}

int td_table_init(struct td_table *tb)
{
	tb->nbuckets = 1024;
	tb->count = 0;
	tb->buckets = calloc(tb->nbuckets, sizeof(*tb->buckets));
	return tb->buckets ? 0 : -ENOMEM;
}

void td_table_finish(struct td_table *tb)
{
	free(tb->buckets);
	tb->buckets = NULL;
	tb->nbuckets = tb->count = 0;
}

struct td_trigger *td_table_get(const struct td_table *tb, const char *id, size_t len)
{
	struct td_trigger *t = tb->buckets[td_hash_bytes(id, len) & (tb->nbuckets - 1)];
	for (; t; t = t->hnext)
		if (t->id_len == len && memcmp(td_trigger_idp(t), id, len) == 0)
			return t;
	return NULL;
}

static int grow(struct td_table *tb)
{
	size_t n = tb->nbuckets * 2;
	struct td_trigger **b = calloc(n, sizeof(*b));
	if (!b)
		return -ENOMEM;
	for (size_t i = 0; i < tb->nbuckets; i++) {
		struct td_trigger *t = tb->buckets[i];
		while (t) {
			struct td_trigger *next = t->hnext;
			size_t j = td_hash_bytes(td_trigger_idp(t), t->id_len) & (n - 1);
			t->hnext = b[j];
			b[j] = t;
			t = next;
		}
	}
	free(tb->buckets);
	tb->buckets = b;
	tb->nbuckets = n;
	return 0;
}

int td_table_put(struct td_table *tb, struct td_trigger *t)
{
	/* Load factor 1: one pointer per trigger in buckets. A failed grow
	 * only makes chains longer. */
	if (tb->count >= tb->nbuckets)
		(void)grow(tb);
	size_t j = td_hash_bytes(td_trigger_idp(t), t->id_len) & (tb->nbuckets - 1);
	t->hnext = tb->buckets[j];
	tb->buckets[j] = t;
	tb->count++;
	tb->by_kind[td_kind_index(t->kind)]++;
	return 0;
}

void td_table_del(struct td_table *tb, struct td_trigger *t)
{
	struct td_trigger **p = &tb->buckets[td_hash_bytes(td_trigger_idp(t), t->id_len) &
					     (tb->nbuckets - 1)];
	for (; *p; p = &(*p)->hnext) {
		if (*p == t) {
			*p = t->hnext;
			t->hnext = NULL;
			tb->count--;
			tb->by_kind[td_kind_index(t->kind)]--;
			return;
		}
	}
}

/* ---- kind-facing accessors ------------------------------------------ */

void *td_trigger_state(const struct td_trigger *t)
{
	return (void *)t->data;
}

struct td_trigger *td_trigger_from_state(void *state)
{
	return (struct td_trigger *)(void *)((char *)state - offsetof(struct td_trigger, data));
}

struct td_shard *td_trigger_shard(const struct td_trigger *t)
{
	return t->shard;
}

struct td_wheel *td_shard_wheel(struct td_shard *s)
{
	return &s->wheel;
}

bool td_trigger_repeat(const struct td_trigger *t)
{
	return t->repeat;
}

const char *td_trigger_id(const struct td_trigger *t, size_t *len)
{
	*len = t->id_len;
	return td_trigger_idp(t);
}

/* ---- lifecycle ------------------------------------------------------- */

static void held_remove(struct td_shard *s, struct td_trigger *t)
{
	/* O(held): only cancels of held triggers take this path, and triggers
	 * are held only while Redis is unreachable or slow. */
	struct td_trigger **p = &s->held_head, *prev = NULL;
	for (; *p; prev = *p, p = &(*p)->lnext) {
		if (*p == t) {
			*p = t->lnext;
			if (s->held_tail == t)
				s->held_tail = prev;
			t->lnext = NULL;
			return;
		}
	}
}

void td_trigger_end(struct td_trigger *t)
{
	struct td_shard *s = t->shard;
	if (t->state == TD_T_HELD)
		held_remove(s, t);
	td_table_del(&s->table, t);
	if (td_trigger_timeout(t))
		td_wheel_cancel(&s->wheel, td_trigger_timeout(t));
	if (t->state == TD_T_ACTIVE)
		t->kind->stop(t);
	td_trigger_free(t);
}

static void hold(struct td_trigger *t)
{
	struct td_shard *s = t->shard;
	if (t->state == TD_T_HELD)
		return;
	t->kind->stop(t);
	t->state = TD_T_HELD;
	t->lnext = NULL;
	if (!s->held_head)
		td_warn("event sink full: holding firings back (they stay stored)",
			"\"buffered\":%zu,\"bound\":%zu", s->sink.nrec, s->sink.max);
	if (s->held_tail)
		s->held_tail->lnext = t;
	else
		s->held_head = t;
	s->held_tail = t;
	s->stats.held++;
}

size_t td_events_key(const struct td_engine *e, const char *queue, size_t qlen,
		     char *buf, size_t len)
{
	int n = qlen ? snprintf(buf, len, "%s:%.*s", e->key_events, (int)qlen, queue) :
		       snprintf(buf, len, "%s", e->key_events);
	return n < 0 ? 0 : (size_t)n;
}

/* Pack the event for @t into the shard's scratch buffer. */
static void pack_event(struct td_trigger *t, const struct td_outcome *o, uint64_t seq)
{
	struct td_shard *s = t->shard;
	msgpack_packer pk;
	s->scratch.size = 0;
	msgpack_packer_init(&pk, &s->scratch, msgpack_sbuffer_write);
	struct td_event ev = {
		.id = td_trigger_idp(t),
		.id_len = t->id_len,
		.kind = t->kind->name,
		.status = o->status,
		.error = o->error,
		.payload = o->payload,
		.payload_len = o->payload_len,
		.meta = t->meta_len ? td_trigger_metap(t) : NULL,
		.meta_len = t->meta_len,
		.seq = seq,
		.fired_at_ms = td_wall_ms(),
		.due_at_ms = o->due_at_ms,
	};
	td_event_pack(&ev, &pk);
}

static void notify_done(struct td_rec *rec, long long result, void *arg)
{
	struct td_notify *n = arg;
	n->fn(n, result);
}

int td_trigger_fire(struct td_trigger *t, const struct td_outcome *o)
{
	struct td_shard *s = t->shard;
	struct td_engine *e = s->eng;
	if (!td_sink_has_room(&s->sink)) {
		hold(t);
		return TD_EFULL;
	}
	char stream[sizeof(e->key_events) + TD_QUEUE_MAX + 2];
	size_t slen = td_events_key(e, td_trigger_queuep(t), t->queue_len, stream,
				    sizeof(stream));
	bool occurrence = t->repeat && o->status == TD_SUCCESS;
	uint64_t seq = occurrence ? (o->seq ? o->seq : (uint64_t)t->seq + 1) :
				    (t->repeat ? t->seq : 0);
	pack_event(t, o, seq);
	struct td_rec *rec;
	if (occurrence) {
		char dkey[sizeof(e->cfg.prefix) + TD_ID_MAX + 72];
		/* A kind's shorter key lifetime, capped by --dedup-ttl. */
		unsigned ttl = o->dedup_ttl_s < e->cfg.dedup_ttl_s ? o->dedup_ttl_s : 0;
		int dl = ttl ?
			snprintf(dkey, sizeof(dkey), "%u:%sseen:%.*s:%llu", ttl,
				 e->cfg.prefix, (int)t->id_len, td_trigger_idp(t),
				 (unsigned long long)o->occurrence) :
			snprintf(dkey, sizeof(dkey), "%sseen:%.*s:%llu", e->cfg.prefix,
				 (int)t->id_len, td_trigger_idp(t),
				 (unsigned long long)o->occurrence);
		rec = td_rec_new(ttl ? 'T' : 'R', td_trigger_idp(t), t->id_len,
				 stream, slen, s->scratch.data, s->scratch.size, dkey, (size_t)dl);
	} else {
		rec = td_rec_new('F', td_trigger_idp(t), t->id_len, stream, slen,
				 s->scratch.data, s->scratch.size, "", 0);
	}
	if (!rec) {
		hold(t);
		return TD_EFULL;
	}
	if (o->notify) {
		rec->done = notify_done;
		rec->arg = o->notify;
	}
	td_sink_push(&s->sink, rec);
	s->stats.fired[o->status]++;
	if (o->due_at_ms >= 0)
		td_stats_lateness(&s->stats, td_wall_ms() - o->due_at_ms);
	if (occurrence) {
		t->seq = (uint32_t)seq;
		return 0;
	}
	if (td_log_enabled(TD_LOG_DEBUG)) {
		char esc[600];
		td_debug("trigger fired", "\"id\":\"%s\",\"status\":\"%s\"",
			 td_log_esc(esc, sizeof(esc), td_trigger_idp(t), t->id_len),
			 td_status_name(o->status));
	}
	td_trigger_end(t);
	return 0;
}

static void timeout_cb(struct td_timer *tm, uint64_t now)
{
	/* The node sits right before its trigger's header. */
	struct td_trigger *t = (struct td_trigger *)(void *)((char *)tm + sizeof(*tm));
	int64_t wall = td_wall_ms();
	if (wall < t->deadline_ms) {
		/* The wall clock was stepped back since arming: wait it out. */
		td_wheel_add(&t->shard->wheel, tm, td_rearm_tick(t->deadline_ms, now));
		return;
	}
	if (t->state == TD_T_HELD)
		return; /* released later: the deadline is checked then */
	struct td_outcome o = {.status = TD_TIMEOUT, .due_at_ms = -1,
			       .error = "deadline passed"};
	td_trigger_fire(t, &o);
}

static void start_or_timeout(struct td_trigger *t)
{
	if (t->deadline_ms >= 0 && td_wall_ms() >= t->deadline_ms) {
		struct td_outcome o = {.status = TD_TIMEOUT, .due_at_ms = -1,
				       .error = "deadline passed"};
		td_trigger_fire(t, &o);
		return;
	}
	int rc = t->kind->start(t);
	if (rc < 0 && rc != TD_EFULL) {
		char msg[128];
		snprintf(msg, sizeof(msg), "start failed: %s", td_strerror(rc));
		struct td_outcome o = {.status = TD_FAILURE, .due_at_ms = -1, .error = msg};
		td_trigger_fire(t, &o);
	}
}

int td_trigger_activate(struct td_trigger *t)
{
	struct td_shard *s = t->shard;
	if (t->state == TD_T_STORING && !td_table_get(&s->table, td_trigger_idp(t), t->id_len))
		td_table_put(&s->table, t);
	t->state = TD_T_ACTIVE;
	struct td_timer *tm = td_trigger_timeout(t);
	if (tm) {
		td_timer_init(tm, timeout_cb);
		td_wheel_add(&s->wheel, tm, td_wall_to_tick(t->deadline_ms));
	}
	start_or_timeout(t);
	return 0;
}

void td_shard_release_held(struct td_shard *s)
{
	if (!s->held_head)
		return;
	/* A released trigger may fire only on the next wheel advance, so the
	 * sink's fill level does not move yet: release no more than fit. */
	size_t room = s->sink.max > s->sink.nrec ? s->sink.max - s->sink.nrec : 0;
	while (s->held_head && room--) {
		struct td_trigger *t = s->held_head;
		s->held_head = t->lnext;
		if (!s->held_head)
			s->held_tail = NULL;
		t->lnext = NULL;
		t->state = TD_T_ACTIVE;
		start_or_timeout(t);
	}
	if (!s->held_head)
		td_info("held firings released", "\"held_total\":%llu", s->stats.held);
}

/* Queue the 'F' record posting @t's cancelled event and acking @entry. */
static int push_cancel(struct td_trigger *t, const char *entry, size_t entry_len,
		       struct td_notify *note)
{
	struct td_shard *s = t->shard;
	struct td_engine *e = s->eng;
	char stream[sizeof(e->key_events) + TD_QUEUE_MAX + 2];
	size_t slen = td_events_key(e, td_trigger_queuep(t), t->queue_len, stream,
				    sizeof(stream));
	struct td_outcome o = {.status = TD_CANCELLED, .due_at_ms = -1};
	pack_event(t, &o, t->repeat ? t->seq : 0);
	struct td_rec *rec = td_rec_new('F', td_trigger_idp(t), t->id_len, stream, slen,
					s->scratch.data, s->scratch.size, entry, entry_len);
	if (!rec)
		return -ENOMEM;
	if (note) {
		rec->done = notify_done;
		rec->arg = note;
	}
	td_sink_push(&s->sink, rec);
	s->stats.fired[TD_CANCELLED]++;
	return 0;
}

int td_trigger_cancel_detached(struct td_trigger *t, struct td_notify *note)
{
	int rc = push_cancel(t, "", 0, note);
	td_trigger_free(t);
	return rc;
}

int td_trigger_cancel(struct td_trigger *t, const char *entry, size_t entry_len)
{
	int rc = push_cancel(t, entry, entry_len, NULL);
	if (rc)
		return rc;
	/* Still storing: the record just queued runs after the store record
	 * (same connection, in order), so Redis stores the trigger, then
	 * removes it and posts the cancel. Known gap: an error reply to the
	 * store's batch alone (e.g. -BUSY that ends before the next batch)
	 * would let the cancel run first; see docs/protocol.md. */
	if (t->state == TD_T_STORING) {
		t->state = TD_T_DEAD;
		return 0;
	}
	td_trigger_end(t);
	return 0;
}

void td_trigger_stored(struct td_trigger *t, long long result)
{
	struct td_shard *s = t->shard;
	if (t->state == TD_T_STORING && result >= 1) {
		td_trigger_activate(t);
		return;
	}
	if (t->state == TD_T_STORING && result == 0) {
		char esc[600];
		/* Stored already, not by this submission: another instance (or
		 * an earlier submission of the same id) holds it. */
		td_info("trigger already active elsewhere; add is a no-op", "\"id\":\"%s\"",
			td_log_esc(esc, sizeof(esc), td_trigger_idp(t), t->id_len));
	}
	/* Only if it is still the table's entry for its id (a later add may
	 * have replaced a dead one). */
	if (td_table_get(&s->table, td_trigger_idp(t), t->id_len) == t)
		td_table_del(&s->table, t);
	td_trigger_free(t);
}

void td_post_rejected(struct td_shard *s, const char *entry, const char *id,
		      size_t id_len, const char *queue, size_t queue_len,
		      const char *error)
{
	struct td_engine *e = s->eng;
	char stream[sizeof(e->key_events) + TD_QUEUE_MAX + 2];
	size_t slen = td_events_key(e, queue, queue_len, stream, sizeof(stream));
	struct td_event ev = {
		.id = id ? id : "",
		.id_len = id ? id_len : 0,
		.status = TD_REJECTED,
		.error = error,
		.fired_at_ms = td_wall_ms(),
		.due_at_ms = -1,
	};
	msgpack_packer pk;
	s->scratch.size = 0;
	msgpack_packer_init(&pk, &s->scratch, msgpack_sbuffer_write);
	td_event_pack(&ev, &pk);
	struct td_rec *rec = td_rec_new('J', entry, strlen(entry), stream, slen,
					ev.id, ev.id_len, s->scratch.data, s->scratch.size);
	if (!rec) {
		td_error("out of memory posting a rejected event; the submission stays pending", NULL);
		return;
	}
	td_sink_push(&s->sink, rec);
	s->stats.fired[TD_REJECTED]++;
}
