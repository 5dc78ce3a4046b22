/*
 * Kafka consumers on the reactor, shared by the `kafka` triggers
 * (include/triggerd/kwatch.h).
 *
 * One librdkafka high-level consumer per (connection, group.id), created
 * when its first trigger starts and subscribed to the union of its
 * triggers' topics. Its main queue is forwarded to its consumer queue
 * (rd_kafka_poll_set_consumer), and that queue writes to an eventfd when it
 * turns non-empty (rd_kafka_queue_io_event_enable); an io_uring READ on the
 * eventfd wakes the reactor, which drains the queue with
 * rd_kafka_consumer_poll(rk, 0): at most BATCH messages per pass, then the
 * eventfd is written by us so the next pass comes after the loop has run
 * its timers and Redis. rd_kafka_consumer_poll also serves the callbacks
 * (rebalance, offset commit, error) on this thread. Only the log callback
 * runs on librdkafka's threads (td_log is safe there).
 *
 * Dispatch: each topic files its waiters by key and by (json_pointer,
 * value) where they filter on those, so a message meets only the waiters
 * that can match (kmatch.c); the value is parsed as JSON at most once per
 * message, and each payload shape built once. The configuration comes from
 * the connection's extra (kconf.c).
 *
 * Offsets (enable.auto.commit and enable.auto.offset.store are off): per
 * partition the messages that fired something and whose records Redis has
 * not answered yet are kept in offset order. A message is resolved when
 * every record it caused is answered posted or already applied (notify
 * result >= 0), or at once when it matched nothing. The offset committed
 * (async, batched every COMMIT_DELAY_MS) is that of the first unresolved
 * message, or the one after the last dispatched. A record that failed (< 0)
 * leaves its message unresolved: nothing past it is committed, and it is
 * consumed again after a restart. At-least-once delivery to the matching;
 * the apply script makes the events exactly-once ('F' gated by the trigger
 * still being stored, 'R' deduplicated by a key derived from topic,
 * partition and offset). See docs/kinds.md#kafka.
 *
 * Nothing is committed for a partition (re)assigned before a message
 * fetched since shows where fetching resumed (commit_due). Nothing is
 * consumed before the shard has loaded its stored triggers (drain), and a
 * trigger's waiter is filed from its acceptance on (see "Pending interest"
 * below): a message is never resolved without a trigger that is owed it.
 *
 * Back-pressure: a message whose matches do not fit in the event sink is
 * held (not destroyed) and retried every STALL_RETRY_MS; nothing more is
 * consumed meanwhile. Its firings go out as the sink has room (several
 * passes when it has more matches than the sink's bound).
 *
 * Lifetimes: a topic nobody waits on stays subscribed for idle_ms, and a
 * consumer nobody uses is closed after idle_ms (no churn of group joins
 * when one-shot triggers come and go). Closing blocks in librdkafka
 * (revoke, final commits, LeaveGroup), so it runs on a short-lived thread
 * that owns the handle from then on; the consumer's memory is freed once
 * its eventfd READ has completed.
 */
#include <errno.h>
#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "engine_i.h"
#include "kwatch_i.h"
#include "triggerd/connections.h"
#include "triggerd/kwatch.h"
#include "triggerd/log.h"

#define BATCH 1000               /* messages per drain pass */
#define TICK_MS 1000             /* housekeeping: linger, retries, safety drain */
#define COMMIT_DELAY_MS 50       /* commits are batched this long */
#define RESUB_DELAY_MS 20        /* new topics of triggers started together */
#define STALL_RETRY_MS 20        /* a held message waits for sink room */
#define IDLE_MS_DEFAULT 60000    /* unused topics and consumers linger */
#define KICK_AT 64
#define ERR_LOG_EVERY_MS 10000

struct kpart;
struct ktopic;

/* A message that fired something and is not resolved yet. */
struct kmsg {
	struct td_notify note;
	struct kmsg *next, *prev;
	struct kpart *p;
	int64_t offset;
	unsigned outstanding;           /* records not answered yet */
	bool failed;                    /* a record failed: never resolved */
};

struct kpart {
	struct ktopic *kt;
	int32_t partition;
	bool assigned;
	bool dirty;                     /* on the consumer's dirty list */
	bool stuck_logged;
	struct kpart *dirty_next;
	int64_t next_offset;            /* after the last dispatched; -1 */
	int64_t skip_below;             /* re-assigned: dispatched already */
	int64_t floor;                  /* first offset since assigned; -1 */
	int64_t committed;              /* last commit asked for; -1 */
	struct kmsg *head, *tail;
};

struct ktopic {
	struct ktopic *hnext;
	struct td_kconsumer *c;
	struct td_kwaiters ws;
	bool subscribed;
	bool missing_logged;
	uint64_t linger_until;          /* unused: unsubscribe then (mono ms) */
	struct kpart **parts;           /* by partition number */
	int32_t nparts;
	uint64_t hash;
	size_t len;
	char name[];
};

/* librdkafka's opaque: the consumer, NULL once a closer thread owns rk. */
struct kbox {
	struct td_kconsumer *c;
};

struct td_kconsumer {
	struct td_kconsumer *next;
	struct td_kwatch *w;
	char *conn, *group;
	rd_kafka_t *rk;
	rd_kafka_queue_t *q;
	struct kbox *box;
	int efd;
	uint64_t efd_val;
	struct td_op op;
	bool reading;                   /* READ in flight */
	bool closing;                   /* handed over; freed when READ ends */
	bool need_resub;
	struct td_timer tick, commit_timer, resub_timer, stall_timer;
	struct ktopic **tb;
	size_t ntb, ntopics;
	struct kpart *dirty;
	unsigned nwaiters;
	size_t inflight;                /* struct kmsg alive */
	uint64_t idle_since;
	rd_kafka_message_t *held;       /* waits for sink room or a store */
	/* The held message's firing in progress (held_km set): its kmsg
	 * (kept unresolved by one hold) and the waiters still to fire, in
	 * candidate order from rest_i; a slot is NULL once its waiter went
	 * away (td_kwatch_unwait). */
	struct kmsg *held_km;
	struct td_kafka_waiter **rest;
	size_t rest_i, nrest, rest_cap;
	struct td_kmatch km;
	unsigned long long consumed, matched, fired, commits;
	int last_err;
	uint64_t last_err_ms;
	uint64_t paused_log_ms;
};

struct connck {
	struct connck *next;
	int rc;
	char *group;                    /* extra's group.id, or NULL */
	char err[TD_ERR_MAX];
	char id[];
};

struct closer {
	struct closer *next;
	pthread_t th;
	rd_kafka_t *rk;
	struct kbox *box;
	int done;                       /* set by the thread (atomic) */
};

struct td_kwatch {
	struct td_shard *shard;
	struct td_kconsumer *consumers;
	struct td_kconsumer *closing;   /* waiting for their READ to end */
	struct connck *conns;
	struct closer *closers;
	struct td_klink *pend;          /* storing waiters with no consumer yet */
	uint64_t idle_ms;
	bool stopped;
};

/* ---- helpers -------------------------------------------------------- */

static struct td_wheel *wheel_of(struct td_kconsumer *c)
{
	return &c->w->shard->wheel;
}

static const char *esc(char *buf, size_t len, const char *s)
{
	return td_log_esc(buf, len, s, strlen(s));
}

/* ---- connections ------------------------------------------------------- */

static struct connck *conn_checked(struct td_kwatch *kw, const char *conn_id)
{
	for (struct connck *k = kw->conns; k; k = k->next)
		if (!strcmp(k->id, conn_id))
			return k;
	const struct td_conns *cs = td_shard_conns(kw->shard);
	struct connck *k = calloc(1, sizeof(*k) + strlen(conn_id) + 1);
	if (!k)
		return NULL;
	strcpy(k->id, conn_id);
	const struct td_conn *cn = cs ? td_conns_get(cs, conn_id) : NULL;
	if (!cn) {
		k->rc = td_kconf_no_conn(conn_id, k->err, sizeof(k->err));
	} else {
		rd_kafka_conf_t *conf = NULL;
		k->rc = td_kconf_build(cs, cn, NULL, &conf, &k->group, k->err, sizeof(k->err));
		if (conf)
			rd_kafka_conf_destroy(conf);
		if (k->rc == -ENOMEM) {
			free(k);
			return NULL;
		}
	}
	k->next = kw->conns;
	kw->conns = k;
	return k;
}

int td_kwatch_check_conn(struct td_shard *s, const char *conn_id, char *err, size_t errlen)
{
	struct td_kwatch *kw = s->kwatch;
	struct connck *k = kw ? conn_checked(kw, conn_id) : NULL;
	if (!k) {
		snprintf(err, errlen, "args: out of memory");
		return -ENOMEM;
	}
	if (k->rc)
		snprintf(err, errlen, "%s", k->err);
	return k->rc;
}

const char *td_kwatch_conn_group(struct td_shard *s, const char *conn_id)
{
	struct td_kwatch *kw = s->kwatch;
	struct connck *k = kw ? conn_checked(kw, conn_id) : NULL;
	return k && k->rc == 0 ? k->group : NULL;
}

/* ---- topics, keys, partitions ----------------------------------------- */

static struct ktopic *topic_find(struct td_kconsumer *c, const char *name, size_t len)
{
	if (!c->ntb)
		return NULL;
	uint64_t h = td_khash(name, len);
	for (struct ktopic *kt = c->tb[h & (c->ntb - 1)]; kt; kt = kt->hnext)
		if (kt->hash == h && kt->len == len && !memcmp(kt->name, name, len))
			return kt;
	return NULL;
}

static void topic_grow(struct td_kconsumer *c)
{
	size_t n = c->ntb ? c->ntb * 2 : 16;
	struct ktopic **b = calloc(n, sizeof(*b));
	if (!b)
		return;
	for (size_t i = 0; i < c->ntb; i++) {
		for (struct ktopic *kt = c->tb[i], *next; kt; kt = next) {
			next = kt->hnext;
			kt->hnext = b[kt->hash & (n - 1)];
			b[kt->hash & (n - 1)] = kt;
		}
	}
	free(c->tb);
	c->tb = b;
	c->ntb = n;
}

static struct ktopic *topic_make(struct td_kconsumer *c, const char *name, size_t len)
{
	struct ktopic *kt = topic_find(c, name, len);
	if (kt)
		return kt;
	if (c->ntopics >= c->ntb)
		topic_grow(c);
	if (!c->ntb || !(kt = calloc(1, sizeof(*kt) + len + 1)))
		return NULL;
	memcpy(kt->name, name, len);
	kt->c = c;
	kt->len = len;
	kt->hash = td_khash(name, len);
	kt->hnext = c->tb[kt->hash & (c->ntb - 1)];
	c->tb[kt->hash & (c->ntb - 1)] = kt;
	c->ntopics++;
	return kt;
}

static void topic_free(struct ktopic *kt)
{
	for (int32_t i = 0; i < kt->nparts; i++) {
		struct kpart *p = kt->parts[i];
		if (!p)
			continue;
		while (p->head) {
			struct kmsg *km = p->head;
			p->head = km->next;
			free(km);
		}
		free(p);
	}
	free(kt->parts);
	td_kwaiters_finish(&kt->ws);
	free(kt);
}

static void topic_remove(struct td_kconsumer *c, struct ktopic *kt)
{
	struct ktopic **pp = &c->tb[kt->hash & (c->ntb - 1)];
	for (; *pp; pp = &(*pp)->hnext) {
		if (*pp == kt) {
			*pp = kt->hnext;
			c->ntopics--;
			topic_free(kt);
			return;
		}
	}
}

static struct kpart *part_get(struct ktopic *kt, int32_t partition)
{
	if (partition < 0 || partition > 1000000)
		return NULL;
	if (partition >= kt->nparts) {
		int32_t n = kt->nparts ? kt->nparts : 4;
		while (n <= partition)
			n *= 2;
		struct kpart **a = realloc(kt->parts, (size_t)n * sizeof(*a));
		if (!a)
			return NULL;
		memset(a + kt->nparts, 0, (size_t)(n - kt->nparts) * sizeof(*a));
		kt->parts = a;
		kt->nparts = n;
	}
	struct kpart *p = kt->parts[partition];
	if (!p && (p = calloc(1, sizeof(*p)))) {
		p->kt = kt;
		p->partition = partition;
		p->next_offset = p->skip_below = p->floor = p->committed = -1;
		kt->parts[partition] = p;
	}
	return p;
}

static bool topic_busy(const struct ktopic *kt)
{
	for (int32_t i = 0; i < kt->nparts; i++)
		if (kt->parts[i] && (kt->parts[i]->head || kt->parts[i]->dirty))
			return true;
	return false;
}

/* ---- commits ---------------------------------------------------------- */

static int64_t commit_point(const struct kpart *p)
{
	return p->head ? p->head->offset : p->next_offset;
}

static bool commit_due(const struct kpart *p)
{
	int64_t pt = commit_point(p);
	/* Nothing is committed for a partition (re)assigned until a message
	 * fetched since shows where fetching resumed (floor): a record of a
	 * message dispatched before the partition came back may settle
	 * meanwhile, and its offset may lie below what another member
	 * committed while it had the partition. */
	return pt >= 0 && p->assigned && p->floor >= 0 && pt > p->committed && pt >= p->floor;
}

static void mark_dirty(struct td_kconsumer *c, struct kpart *p, bool soon)
{
	if (!commit_due(p))
		return;
	if (!p->dirty) {
		p->dirty = true;
		p->dirty_next = c->dirty;
		c->dirty = p;
	}
	if (soon && !td_timer_pending(&c->commit_timer))
		td_wheel_add(wheel_of(c), &c->commit_timer, td_mono_ms() + COMMIT_DELAY_MS);
}

/* Commit every dirty partition's point (async: the result comes to
 * commit_cb). */
static void commit_now(struct td_kconsumer *c)
{
	size_t n = 0;
	for (struct kpart *p = c->dirty; p; p = p->dirty_next)
		n++;
	if (!n || !c->rk)
		return;
	rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new((int)n);
	if (!l)
		return;
	struct kpart *p = c->dirty;
	c->dirty = NULL;
	while (p) {
		struct kpart *next = p->dirty_next;
		p->dirty = false;
		p->dirty_next = NULL;
		if (commit_due(p)) {
			int64_t pt = commit_point(p);
			rd_kafka_topic_partition_list_add(l, p->kt->name, p->partition)->offset = pt;
			p->committed = pt;
		}
		p = next;
	}
	if (l->cnt) {
		rd_kafka_resp_err_t err = rd_kafka_commit(c->rk, l, 1);
		c->commits++;
		if (err) {
			char e1[300], e2[300];
			td_warn("kafka commit not sent; retrying", "\"conn\":\"%s\",\"group\":\"%s\",\"error\":\"%s\"",
				esc(e1, sizeof(e1), c->conn), esc(e2, sizeof(e2), c->group),
				rd_kafka_err2str(err));
			for (int i = 0; i < l->cnt; i++) {
				struct ktopic *kt = topic_find(c, l->elems[i].topic, strlen(l->elems[i].topic));
				struct kpart *q = kt ? part_get(kt, l->elems[i].partition) : NULL;
				if (q) {
					q->committed = -1;
					mark_dirty(c, q, false);
				}
			}
		}
	}
	rd_kafka_topic_partition_list_destroy(l);
}

static void commit_timer_cb(struct td_timer *t, uint64_t now)
{
	commit_now(td_container_of(t, struct td_kconsumer, commit_timer));
}

/* The head of @p may have moved: commit soon if its point advanced. */
static void part_progress(struct td_kconsumer *c, struct kpart *p)
{
	mark_dirty(c, p, true);
}

/* ---- message resolution ------------------------------------------------ */

static void kmsg_settle(struct td_kconsumer *c, struct kmsg *km)
{
	struct kpart *p = km->p;
	if (km->failed) {
		if (!p->stuck_logged) {
			char e1[600];
			p->stuck_logged = true;
			td_warn("kafka message's event not posted; offsets past it are not committed "
				"(it is consumed again after a restart)",
				"\"topic\":\"%s\",\"partition\":%d,\"offset\":%lld",
				td_log_esc(e1, sizeof(e1), p->kt->name, p->kt->len), (int)p->partition,
				(long long)km->offset);
		}
		return;
	}
	if (km->prev)
		km->prev->next = km->next;
	else
		p->head = km->next;
	if (km->next)
		km->next->prev = km->prev;
	else
		p->tail = km->prev;
	free(km);
	c->inflight--;
	part_progress(c, p);
}

/* Each record the message caused reports once. */
static void kmsg_note(struct td_notify *n, long long result)
{
	struct kmsg *km = td_container_of(n, struct kmsg, note);
	if (result < 0)
		km->failed = true;
	if (--km->outstanding == 0)
		kmsg_settle(km->p->kt->c, km);
}

/* ---- dispatch ------------------------------------------------------------ */

/* What became of a message offered to the waiters. */
enum {
	D_DONE,        /* dispatched (or skipped): destroy it */
	D_FULL,        /* the sink has no room for (the rest of) its firings */
	D_STORING,     /* it matches a trigger still being stored */
	D_NOMEM,       /* nothing changed: offer it again later */
};

static bool trigger_storing(const struct td_kafka_waiter *w)
{
	return td_trigger_from_state((void *)w)->state == TD_T_STORING;
}

/*
 * Fire the held message (@m, c->held_km) for the waiters left in c->rest,
 * one sink record each, as long as the sink has room. Returns D_DONE once
 * every one has fired (the message's hold is released: it resolves when
 * their records are answered), else D_FULL: the rest waits for room (the
 * message stays unresolved, so nothing past it is committed meanwhile).
 */
static int fire_held(struct td_kconsumer *c, rd_kafka_message_t *m)
{
	struct td_shard *s = c->w->shard;
	struct td_kmatch *mt = &c->km;
	struct kmsg *km = c->held_km;
	td_kmatch_reset(mt, m); /* payloads are built lazily, from @m */
	uint64_t occ = td_kmatch_occurrence(mt->v.topic, m->partition, m->offset);
	while (c->rest_i < c->nrest) {
		struct td_kafka_waiter *w = c->rest[c->rest_i];
		if (!w) {
			c->rest_i++;
			continue;
		}
		/* Checked first: td_trigger_fire on a full sink would hold
		 * (stop) the trigger. */
		if (!td_sink_has_room(&s->sink))
			return D_FULL;
		const msgpack_sbuffer *pl = td_kmatch_payload(mt, w->spec);
		struct td_outcome o = {
			.status = TD_SUCCESS,
			.payload = pl->data,
			.payload_len = pl->size,
			.due_at_ms = -1,
			.occurrence = occ,
			.notify = &km->note,
		};
		/* A one-shot trigger ends here (and leaves the lists, which
		 * clears its slot); the other waiters stay valid. */
		int rc = td_trigger_fire(td_trigger_from_state(w), &o);
		if (rc != 0) {
			/* No record could be made (out of memory): the engine
			 * holds the trigger (stopped, which cleared its slot)
			 * and starts it again later. It still gets this
			 * message: retried with the rest. */
			c->rest[c->rest_i] = w;
			return D_FULL;
		}
		km->outstanding++;
		c->fired++;
		c->rest_i++;
	}
	c->rest_i = c->nrest = 0;
	c->held_km = NULL;
	kmsg_note(&km->note, 0); /* the hold taken in dispatch */
	return D_DONE;
}

/*
 * Offer message @m to the waiters of its topic. Returns D_DONE when it was
 * dispatched (or skipped); otherwise hold it and call again (D_STORING,
 * D_NOMEM: nothing was changed) or call fire_held (D_FULL with c->held_km
 * set: part of its firings are done). D_FULL without c->held_km: nothing
 * was changed.
 */
static int dispatch(struct td_kconsumer *c, rd_kafka_message_t *m)
{
	struct td_shard *s = c->w->shard;
	struct td_kmatch *mt = &c->km;
	td_kmatch_reset(mt, m);
	const char *topic = mt->v.topic;
	struct ktopic *kt = topic_make(c, topic, strlen(topic));
	struct kpart *p = kt ? part_get(kt, m->partition) : NULL;
	if (!p)
		return D_NOMEM; /* out of memory: try again later */
	/* Where fetching resumed since the partition was (re)assigned,
	 * whether or not this message is dispatched again. */
	if (p->floor < 0)
		p->floor = m->offset;
	if (m->offset < p->skip_below)
		return D_DONE; /* dispatched before this partition was re-assigned */
	size_t n = kt->ws.n ? td_kmatch_run(mt, &kt->ws) : 0;
	if (n == (size_t)-1)
		return D_NOMEM;
	/* Registered waiters whose trigger is still being stored (see
	 * td_kwatch_wait) hold the message until they are started: it is
	 * theirs, and resolving it now would commit past it. A trigger
	 * cancelled while storing (DEAD) gets nothing. */
	size_t k = 0;
	for (size_t i = 0; i < n; i++) {
		enum td_tstate st = td_trigger_from_state(mt->cand[i])->state;
		if (st == TD_T_STORING)
			return D_STORING;
		if (st == TD_T_ACTIVE)
			mt->cand[k++] = mt->cand[i];
	}
	n = k;
	struct kmsg *km = NULL;
	if (n) {
		if (!td_sink_has_room(&s->sink))
			return D_FULL;
		if (n > c->rest_cap) {
			struct td_kafka_waiter **r = realloc(c->rest, n * sizeof(*r));
			if (!r)
				return D_NOMEM;
			c->rest = r;
			c->rest_cap = n;
		}
		if (!(km = calloc(1, sizeof(*km))))
			return D_NOMEM;
	}
	c->consumed++;
	if (m->offset + 1 > p->next_offset)
		p->next_offset = m->offset + 1;
	if (!n) {
		if (!p->head)
			part_progress(c, p);
		return D_DONE;
	}
	km->note.fn = kmsg_note;
	km->p = p;
	km->offset = m->offset;
	km->prev = p->tail;
	if (p->tail)
		p->tail->next = km;
	else
		p->head = km;
	p->tail = km;
	c->inflight++;
	c->matched++;
	km->outstanding = 1; /* held while firing: released by fire_held */
	/* Fired in as many passes as the sink's room allows: a message with
	 * more matches than the sink's bound still goes through. */
	memcpy(c->rest, mt->cand, n * sizeof(*c->rest));
	c->rest_i = 0;
	c->nrest = n;
	c->held_km = km;
	return fire_held(c, m);
}

/* A waiter goes away: it is no longer among the held message's rest. */
static void rest_forget(struct td_kwatch *kw, const struct td_kafka_waiter *w)
{
	for (struct td_kconsumer *c = kw->consumers; c; c = c->next)
		for (size_t i = c->rest_i; i < c->nrest; i++)
			if (c->rest[i] == w)
				c->rest[i] = NULL;
}

static void msg_error(struct td_kconsumer *c, rd_kafka_message_t *m)
{
	char e1[300], e2[300], e3[600];
	if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF)
		return;
	if (m->rkt && (m->err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART ||
		       m->err == RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED)) {
		const char *tn = rd_kafka_topic_name(m->rkt);
		struct ktopic *kt = topic_find(c, tn, strlen(tn));
		if (kt && kt->missing_logged)
			return;
		if (kt)
			kt->missing_logged = true;
		td_warn("kafka topic not available (waiting for it)",
			"\"conn\":\"%s\",\"group\":\"%s\",\"topic\":\"%s\",\"error\":\"%s\"",
			esc(e1, sizeof(e1), c->conn), esc(e2, sizeof(e2), c->group),
			esc(e3, sizeof(e3), tn), rd_kafka_err2str(m->err));
		return;
	}
	uint64_t now = td_mono_ms();
	if ((int)m->err == c->last_err && now < c->last_err_ms + ERR_LOG_EVERY_MS)
		return;
	c->last_err = (int)m->err;
	c->last_err_ms = now;
	td_warn("kafka consumer error", "\"conn\":\"%s\",\"group\":\"%s\",\"error\":\"%s\"",
		esc(e1, sizeof(e1), c->conn), esc(e2, sizeof(e2), c->group),
		esc(e3, sizeof(e3), rd_kafka_message_errstr(m)));
}

/* ---- the reactor side ------------------------------------------------------ */

static void kick(struct td_kconsumer *c)
{
	uint64_t one = 1;
	if (write(c->efd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		td_warn("kafka eventfd write failed", "\"errno\":%d", errno);
}

/* The held message is retried in STALL_RETRY_MS, or now. */
static void stall_retry(struct td_kconsumer *c, uint64_t at)
{
	struct td_wheel *wh = wheel_of(c);
	if (td_timer_pending(&c->stall_timer))
		td_wheel_cancel(wh, &c->stall_timer);
	td_wheel_add(wh, &c->stall_timer, at);
}

/* Hold @m (its dispatch answered @why) and retry it later. */
static void hold_msg(struct td_kconsumer *c, rd_kafka_message_t *m, int why)
{
	struct td_shard *s = c->w->shard;
	char e1[300], e2[300];
	uint64_t now = td_mono_ms();
	c->held = m;
	stall_retry(c, now + STALL_RETRY_MS);
	if (why == D_FULL && (!c->paused_log_ms || now >= c->paused_log_ms + ERR_LOG_EVERY_MS)) {
		c->paused_log_ms = now;
		td_info("kafka consumer paused: event sink full",
			"\"conn\":\"%s\",\"group\":\"%s\",\"backlog\":%zu",
			esc(e1, sizeof(e1), c->conn), esc(e2, sizeof(e2), c->group), s->sink.nrec);
	} else if (why == D_STORING) {
		td_debug("kafka consumer paused: a matching trigger is being stored",
			 "\"conn\":\"%s\",\"group\":\"%s\"",
			 esc(e1, sizeof(e1), c->conn), esc(e2, sizeof(e2), c->group));
	}
}

static void drain(struct td_kconsumer *c)
{
	struct td_shard *s = c->w->shard;
	if (c->closing || !c->rk || c->held || s->stopping)
		return;
	/*
	 * Nothing is consumed before the shard has loaded every stored
	 * trigger: the first trigger loaded creates the consumer, and a
	 * message it consumed before the others of its group are loaded
	 * would find no waiter, be resolved at once and committed, and so
	 * never be offered to them (messages produced while triggerd was
	 * down). The stall timer looks again.
	 */
	if (!s->intake.loaded) {
		if (!td_timer_pending(&c->stall_timer))
			td_wheel_add(wheel_of(c), &c->stall_timer, td_mono_ms() + STALL_RETRY_MS);
		return;
	}
	unsigned n = 0;
	rd_kafka_message_t *m;
	/* consumer_poll(0) serves callbacks and returns NULL only once the
	 * queue is empty; a later enqueue writes the eventfd again. */
	while (n < BATCH && (m = rd_kafka_consumer_poll(c->rk, 0))) {
		n++;
		if (m->err) {
			msg_error(c, m);
			rd_kafka_message_destroy(m);
			continue;
		}
		int d = dispatch(c, m);
		if (d != D_DONE) {
			hold_msg(c, m, d);
			break;
		}
		rd_kafka_message_destroy(m);
		if (c->closing)
			return;
	}
	if (n >= BATCH && !c->held)
		kick(c); /* more to do, after the rest of the loop had its turn */
	if (n)
		td_sink_kick(&s->sink, KICK_AT);
}

static void stall_cb(struct td_timer *t, uint64_t now)
{
	struct td_kconsumer *c = td_container_of(t, struct td_kconsumer, stall_timer);
	rd_kafka_message_t *m = c->held;
	if (!m) {
		/* Waiting for the store to be loaded (drain). */
		if (c->w->shard->intake.loaded) {
			drain(c);
			if (!c->closing && !c->held)
				kick(c); /* the queue may have filled without a wake-up */
		} else {
			td_wheel_add(wheel_of(c), t, now + STALL_RETRY_MS);
		}
		return;
	}
	int d = D_FULL;
	if (!c->w->shard->stopping)
		d = c->held_km ? fire_held(c, m) : dispatch(c, m);
	if (d != D_DONE) {
		td_wheel_add(wheel_of(c), t, now + STALL_RETRY_MS);
		return;
	}
	c->held = NULL;
	rd_kafka_message_destroy(m);
	td_sink_kick(&c->w->shard->sink, KICK_AT);
	td_debug("kafka consumer resumed", NULL);
	drain(c);
	kick(c); /* the queue may have filled meanwhile without a wake-up */
}

static void arm(struct td_kconsumer *c)
{
	struct io_uring_sqe *sqe = td_reactor_sqe(&c->w->shard->reactor, &c->op);
	io_uring_prep_read(sqe, c->efd, &c->efd_val, sizeof(c->efd_val), 0);
	c->reading = true;
}

static void consumer_free(struct td_kconsumer *c);

static void read_cb(struct td_op *op, int res, uint32_t flags)
{
	struct td_kconsumer *c = td_container_of(op, struct td_kconsumer, op);
	c->reading = false;
	if (c->closing) {
		consumer_free(c);
		return;
	}
	if (res < 0 && res != -EINTR && res != -EAGAIN) {
		/* Not expected from an eventfd; the tick keeps draining. */
		td_error("kafka eventfd read failed", "\"error\":\"%s\"", strerror(-res));
		return;
	}
	drain(c);
	if (!c->closing)
		arm(c);
}

/* ---- subscription -------------------------------------------------------------- */

static void resubscribe(struct td_kconsumer *c)
{
	char e1[300], e2[300], e3[600];
	c->need_resub = false;
	if (!c->rk)
		return;
	size_t n = 0;
	for (size_t i = 0; i < c->ntb; i++)
		for (struct ktopic *kt = c->tb[i]; kt; kt = kt->hnext)
			n += kt->subscribed;
	if (!n) {
		rd_kafka_unsubscribe(c->rk);
		td_info("kafka unsubscribed", "\"conn\":\"%s\",\"group\":\"%s\"",
			esc(e1, sizeof(e1), c->conn), esc(e2, sizeof(e2), c->group));
		return;
	}
	rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new((int)n);
	if (!l) {
		c->need_resub = true;
		return;
	}
	char names[512];
	size_t nl = 0;
	names[0] = '\0';
	for (size_t i = 0; i < c->ntb; i++) {
		for (struct ktopic *kt = c->tb[i]; kt; kt = kt->hnext) {
			if (!kt->subscribed)
				continue;
			rd_kafka_topic_partition_list_add(l, kt->name, RD_KAFKA_PARTITION_UA);
			if (nl + kt->len + 2 < sizeof(names)) {
				nl += (size_t)snprintf(names + nl, sizeof(names) - nl, "%s%s",
						       nl ? "," : "", kt->name);
			}
		}
	}
	rd_kafka_resp_err_t err = rd_kafka_subscribe(c->rk, l);
	rd_kafka_topic_partition_list_destroy(l);
	if (err) {
		td_error("kafka subscribe failed", "\"conn\":\"%s\",\"group\":\"%s\",\"error\":\"%s\"",
			 esc(e1, sizeof(e1), c->conn), esc(e2, sizeof(e2), c->group),
			 rd_kafka_err2str(err));
		c->need_resub = true; /* the tick tries again */
		return;
	}
	td_info("kafka subscribed", "\"conn\":\"%s\",\"group\":\"%s\",\"topics\":%zu,"
		"\"names\":\"%s\",\"waiters\":%u",
		esc(e1, sizeof(e1), c->conn), esc(e2, sizeof(e2), c->group), n,
		esc(e3, sizeof(e3), names), c->nwaiters);
}

static void resub_cb(struct td_timer *t, uint64_t now)
{
	struct td_kconsumer *c = td_container_of(t, struct td_kconsumer, resub_timer);
	if (c->need_resub)
		resubscribe(c);
}

/* ---- librdkafka callbacks (served by rd_kafka_consumer_poll on the shard's
 * thread, or by a closer thread once box->c is NULL) ------------------------- */

static void parts_assigned(struct td_kconsumer *c, const rd_kafka_topic_partition_list_t *l,
			   bool on)
{
	for (int i = 0; i < l->cnt; i++) {
		const char *tn = l->elems[i].topic;
		struct ktopic *kt = topic_make(c, tn, strlen(tn));
		struct kpart *p = kt ? part_get(kt, l->elems[i].partition) : NULL;
		if (!p)
			continue;
		p->assigned = on;
		if (on) {
			/* Fetching resumes at the group's committed offset: what
			 * this consumer dispatched already is not offered twice,
			 * and nothing is committed below where it resumes. */
			p->skip_below = p->next_offset;
			p->floor = -1;
			p->committed = -1;
			p->stuck_logged = false;
		}
	}
}

static void rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
			 rd_kafka_topic_partition_list_t *parts, void *opaque)
{
	struct kbox *box = opaque;
	struct td_kconsumer *c = box ? box->c : NULL;
	const char *proto = rd_kafka_rebalance_protocol(rk);
	bool coop = proto && !strcmp(proto, "COOPERATIVE");
	char e1[300], e2[300];
	if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
		if (c) {
			parts_assigned(c, parts, true);
			td_info("kafka partitions assigned",
				"\"conn\":\"%s\",\"group\":\"%s\",\"partitions\":%d",
				esc(e1, sizeof(e1), c->conn), esc(e2, sizeof(e2), c->group), parts->cnt);
		}
		if (coop) {
			rd_kafka_error_t *e = rd_kafka_incremental_assign(rk, parts);
			if (e)
				rd_kafka_error_destroy(e);
		} else {
			rd_kafka_assign(rk, parts);
		}
		return;
	}
	if (c) {
		/* Commit what is resolved while the partitions are ours. */
		if (!rd_kafka_assignment_lost(rk))
			commit_now(c);
		parts_assigned(c, parts, false);
		td_info("kafka partitions revoked", "\"conn\":\"%s\",\"group\":\"%s\",\"partitions\":%d",
			esc(e1, sizeof(e1), c->conn), esc(e2, sizeof(e2), c->group), parts->cnt);
	}
	if (coop) {
		rd_kafka_error_t *e = rd_kafka_incremental_unassign(rk, parts);
		if (e)
			rd_kafka_error_destroy(e);
	} else {
		rd_kafka_assign(rk, NULL);
	}
}

static void offset_commit_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
			     rd_kafka_topic_partition_list_t *offsets, void *opaque)
{
	struct kbox *box = opaque;
	struct td_kconsumer *c = box ? box->c : NULL;
	if (!c || !offsets)
		return;
	for (int i = 0; i < offsets->cnt; i++) {
		rd_kafka_topic_partition_t *e = &offsets->elems[i];
		rd_kafka_resp_err_t pe = e->err ? e->err : err;
		if (!pe)
			continue;
		struct ktopic *kt = topic_find(c, e->topic, strlen(e->topic));
		struct kpart *p = kt ? part_get(kt, e->partition) : NULL;
		/* Retried by the tick, unless a later commit went out since. */
		if (p && p->committed == e->offset) {
			p->committed = -1;
			mark_dirty(c, p, false);
		}
		uint64_t now = td_mono_ms();
		if ((int)pe != c->last_err || now >= c->last_err_ms + ERR_LOG_EVERY_MS) {
			char e1[300], e2[300], e3[600];
			c->last_err = (int)pe;
			c->last_err_ms = now;
			td_warn("kafka offset commit failed; retrying",
				"\"conn\":\"%s\",\"group\":\"%s\",\"topic\":\"%s\",\"partition\":%d,\"error\":\"%s\"",
				esc(e1, sizeof(e1), c->conn), esc(e2, sizeof(e2), c->group),
				esc(e3, sizeof(e3), e->topic), (int)e->partition, rd_kafka_err2str(pe));
		}
	}
}

static void error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
	struct kbox *box = opaque;
	struct td_kconsumer *c = box ? box->c : NULL;
	char e1[300], e2[300], e3[600];
	uint64_t now = td_mono_ms();
	if (c && err == c->last_err && now < c->last_err_ms + ERR_LOG_EVERY_MS)
		return;
	if (c) {
		c->last_err = err;
		c->last_err_ms = now;
	}
	if (err == RD_KAFKA_RESP_ERR__FATAL) {
		char why[512];
		rd_kafka_fatal_error(rk, why, sizeof(why));
		td_error("kafka consumer failed (fatal); its triggers wait until restart",
			 "\"conn\":\"%s\",\"group\":\"%s\",\"error\":\"%s\"",
			 esc(e1, sizeof(e1), c ? c->conn : ""), esc(e2, sizeof(e2), c ? c->group : ""),
			 esc(e3, sizeof(e3), why));
		return;
	}
	td_warn("kafka client error", "\"conn\":\"%s\",\"group\":\"%s\",\"error\":\"%s\"",
		esc(e1, sizeof(e1), c ? c->conn : ""), esc(e2, sizeof(e2), c ? c->group : ""),
		esc(e3, sizeof(e3), reason ? reason : rd_kafka_err2str(err)));
}

/* librdkafka's own log lines; called from its threads. */
static void log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
	enum td_log_level l = level <= 3 ? TD_LOG_ERROR : level == 4 ? TD_LOG_WARN :
			      level <= 6 ? TD_LOG_INFO : TD_LOG_DEBUG;
	if (!td_log_enabled(l))
		return;
	char e1[64], e2[1200];
	td_log(l, "librdkafka", "\"facility\":\"%s\",\"client\":\"%s\",\"text\":\"%s\"",
	       esc(e1, sizeof(e1), fac), rd_kafka_name(rk), esc(e2, sizeof(e2), buf));
}

/* ---- consumers -------------------------------------------------------------- */

static void tick_cb(struct td_timer *t, uint64_t now);

static void *closer_main(void *arg)
{
	struct closer *cl = arg;
	rd_kafka_consumer_close(cl->rk);
	rd_kafka_destroy(cl->rk);
	free(cl->box);
	__atomic_store_n(&cl->done, 1, __ATOMIC_RELEASE);
	return NULL;
}

static void reap_closers(struct td_kwatch *kw)
{
	for (struct closer **pp = &kw->closers; *pp;) {
		struct closer *cl = *pp;
		if (__atomic_load_n(&cl->done, __ATOMIC_ACQUIRE)) {
			pthread_join(cl->th, NULL);
			*pp = cl->next;
			free(cl);
		} else {
			pp = &cl->next;
		}
	}
}

/* Hand @rk to a thread that closes and destroys it (or close it here
 * when no thread can be had). */
static void close_handle(struct td_kwatch *kw, rd_kafka_t *rk, struct kbox *box)
{
	struct closer *cl = calloc(1, sizeof(*cl));
	if (cl) {
		cl->rk = rk;
		cl->box = box;
		if (pthread_create(&cl->th, NULL, closer_main, cl) == 0) {
			cl->next = kw->closers;
			kw->closers = cl;
			return;
		}
		free(cl);
	}
	rd_kafka_consumer_close(rk);
	rd_kafka_destroy(rk);
	free(box);
}

static void consumer_unlink(struct td_kconsumer **head, struct td_kconsumer *c)
{
	for (struct td_kconsumer **pp = head; *pp; pp = &(*pp)->next) {
		if (*pp == c) {
			*pp = c->next;
			c->next = NULL;
			return;
		}
	}
}

static void consumer_free(struct td_kconsumer *c)
{
	consumer_unlink(&c->w->closing, c);
	for (size_t i = 0; i < c->ntb; i++) {
		for (struct ktopic *kt = c->tb[i], *next; kt; kt = next) {
			next = kt->hnext;
			topic_free(kt);
		}
	}
	free(c->tb);
	if (c->efd >= 0)
		close(c->efd);
	td_kmatch_finish(&c->km);
	free(c->rest);
	free(c->conn);
	free(c->group);
	free(c->box); /* only when no closer took it (creation failed) */
	free(c);
}

/* Close @c: final commit, the handle to a closer thread; its memory goes
 * when the eventfd READ has completed. */
static void consumer_close(struct td_kconsumer *c)
{
	struct td_kwatch *kw = c->w;
	char e1[300], e2[300];
	struct td_wheel *wh = wheel_of(c);
	td_wheel_cancel(wh, &c->tick);
	td_wheel_cancel(wh, &c->commit_timer);
	td_wheel_cancel(wh, &c->resub_timer);
	td_wheel_cancel(wh, &c->stall_timer);
	/* Waiters still registered (shutdown only): they find themselves
	 * unregistered when stopped. */
	for (size_t i = 0; c->nwaiters && i < c->ntb; i++) {
		for (struct ktopic *kt = c->tb[i]; kt; kt = kt->hnext)
			td_kwaiters_detach(&kt->ws);
	}
	if (c->rk) {
		commit_now(c);
		if (c->held) {
			/* A message being fired stays unresolved: consumed
			 * again after a restart. */
			rd_kafka_message_destroy(c->held);
			c->held = NULL;
			c->held_km = NULL;
			c->rest_i = c->nrest = 0;
		}
		rd_kafka_queue_io_event_enable(c->q, -1, NULL, 0);
		rd_kafka_queue_destroy(c->q);
		c->q = NULL;
		c->box->c = NULL; /* from here the closer thread serves callbacks */
		close_handle(kw, c->rk, c->box);
		c->box = NULL;
		c->rk = NULL;
	}
	td_info("kafka consumer closed", "\"conn\":\"%s\",\"group\":\"%s\",\"consumed\":%llu,"
		"\"matched\":%llu,\"fired\":%llu,\"commits\":%llu",
		esc(e1, sizeof(e1), c->conn), esc(e2, sizeof(e2), c->group), c->consumed, c->matched,
		c->fired, c->commits);
	consumer_unlink(&kw->consumers, c);
	c->closing = true;
	c->next = kw->closing;
	kw->closing = c;
	if (c->reading)
		td_reactor_cancel(&kw->shard->reactor, &c->op);
	else
		consumer_free(c);
}

static int consumer_new(struct td_kwatch *kw, const char *conn, const char *group,
			struct td_kconsumer **out)
{
	struct td_shard *s = kw->shard;
	char err[TD_ERR_MAX], e1[300], e2[300], e3[600];
	const struct td_conns *cs = td_shard_conns(s);
	const struct td_conn *cn = cs ? td_conns_get(cs, conn) : NULL;
	rd_kafka_conf_t *conf = NULL;
	int rc = cn ? td_kconf_build(cs, cn, group, &conf, NULL, err, sizeof(err)) :
		      td_kconf_no_conn(conn, err, sizeof(err));
	if (rc) {
		td_error("kafka consumer not created", "\"conn\":\"%s\",\"group\":\"%s\",\"error\":\"%s\"",
			 esc(e1, sizeof(e1), conn), esc(e2, sizeof(e2), group), esc(e3, sizeof(e3), err));
		return rc == -ENOMEM ? rc : -EINVAL;
	}
	struct td_kconsumer *c = calloc(1, sizeof(*c));
	struct kbox *box = calloc(1, sizeof(*box));
	if (!c || !box || !(c->conn = strdup(conn)) || !(c->group = strdup(group))) {
		rd_kafka_conf_destroy(conf);
		if (c) {
			free(c->conn);
			free(c->group);
		}
		free(c);
		free(box);
		return -ENOMEM;
	}
	c->w = kw;
	c->efd = -1;
	c->box = box;
	box->c = c;
	td_kmatch_init(&c->km);
	td_timer_init(&c->tick, tick_cb);
	td_timer_init(&c->commit_timer, commit_timer_cb);
	td_timer_init(&c->resub_timer, resub_cb);
	td_timer_init(&c->stall_timer, stall_cb);
	c->op.cb = read_cb;
	rd_kafka_conf_set_opaque(conf, box);
	rd_kafka_conf_set_rebalance_cb(conf, rebalance_cb);
	rd_kafka_conf_set_offset_commit_cb(conf, offset_commit_cb);
	rd_kafka_conf_set_error_cb(conf, error_cb);
	rd_kafka_conf_set_log_cb(conf, log_cb);
	char errstr[512];
	c->efd = eventfd(0, EFD_CLOEXEC);
	if (c->efd < 0) {
		rc = -errno;
		rd_kafka_conf_destroy(conf);
		consumer_free(c);
		return rc;
	}
	c->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
	if (!c->rk) {
		char masked[512];
		td_error("kafka consumer not created", "\"conn\":\"%s\",\"group\":\"%s\",\"error\":\"%s\"",
			 esc(e1, sizeof(e1), conn), esc(e2, sizeof(e2), group),
			 esc(e3, sizeof(e3), cs ? td_conn_mask(cs, errstr, masked, sizeof(masked)) : errstr));
		rd_kafka_conf_destroy(conf);
		consumer_free(c);
		return -EINVAL;
	}
	/* conf is owned by rk from here. */
	rd_kafka_poll_set_consumer(c->rk);
	c->q = rd_kafka_queue_get_consumer(c->rk);
	/* An eventfd takes 8-byte writes; librdkafka writes this on each
	 * empty -> non-empty transition of the queue. */
	uint64_t one = 1;
	rd_kafka_queue_io_event_enable(c->q, c->efd, &one, sizeof(one));
	arm(c);
	kick(c); /* what was queued before the wake-ups were on */
	td_wheel_add(wheel_of(c), &c->tick, td_mono_ms() + TICK_MS);
	c->next = kw->consumers;
	kw->consumers = c;
	td_info("kafka consumer started", "\"conn\":\"%s\",\"group\":\"%s\",\"client\":\"%s\"",
		esc(e1, sizeof(e1), conn), esc(e2, sizeof(e2), group), rd_kafka_name(c->rk));
	*out = c;
	return 0;
}

static void tick_cb(struct td_timer *t, uint64_t now)
{
	struct td_kconsumer *c = td_container_of(t, struct td_kconsumer, tick);
	struct td_kwatch *kw = c->w;
	reap_closers(kw);
	/* Also keeps max.poll.interval.ms satisfied when nothing arrives. */
	drain(c);
	if (c->closing)
		return;
	if (!c->reading)
		arm(c); /* a failed READ is not re-armed at once: retry here */
	if (c->dirty)
		commit_now(c);
	for (size_t i = 0; i < c->ntb; i++) {
		for (struct ktopic *kt = c->tb[i], *next; kt; kt = next) {
			next = kt->hnext;
			if (kt->ws.n)
				continue;
			if (kt->subscribed && now >= kt->linger_until) {
				kt->subscribed = false;
				c->need_resub = true;
			}
			if (!kt->subscribed && !topic_busy(kt))
				topic_remove(c, kt);
		}
	}
	if (!c->nwaiters && !c->inflight && !c->held && now >= c->idle_since + kw->idle_ms) {
		consumer_close(c);
		return;
	}
	if (c->need_resub && c->nwaiters)
		resubscribe(c);
	td_wheel_add(wheel_of(c), t, now + TICK_MS);
}

static struct td_kconsumer *consumer_find(struct td_kwatch *kw, const char *conn,
					  const char *group)
{
	for (struct td_kconsumer *c = kw->consumers; c; c = c->next)
		if (!strcmp(c->conn, conn) && !strcmp(c->group, group))
			return c;
	return NULL;
}

/* ---- waiters ------------------------------------------------------------------ */

static void link_remove(struct td_klink *l)
{
	struct ktopic *kt = l->kt;
	td_kwaiters_remove(&kt->ws, l);
	if (kt->ws.n == 0)
		kt->linger_until = td_mono_ms() + kt->c->w->idle_ms;
}

/*
 * Pending interest. A `kafka` trigger's `start: latest` is its acceptance
 * (parse), but the trigger is started only once its store record is
 * answered. A message stamped in between and consumed before the start
 * would match no waiter, be resolved at once and committed: never offered
 * to the trigger. So the kind registers its waiter already at parse
 * (td_kwatch_wait while the trigger is TD_T_STORING):
 *
 *  - with its consumer existing, it is filed like any waiter, and a
 *    message it matches is held (dispatch: D_STORING; nothing fired,
 *    nothing resolved, nothing consumed past it) until the trigger is
 *    started (td_kwatch_wait again: retried at once) or goes away (store
 *    answered 0, cancelled, freed: unwait, retried by the stall timer);
 *  - with no consumer yet, nothing of its group is being consumed: it
 *    waits on the shard's pending list (kw->pend) without creating one
 *    (a spec parsed only to be cancelled or found stored elsewhere must
 *    not join the group), and is filed when its consumer is created by
 *    another trigger's start, or by its own.
 *
 * The hold lasts a Redis round trip, bounded like the sink's
 * back-pressure (docs/kinds.md#kafka).
 */

/* The registry's id: "kafka_x" and "KAFKA_X" name the same connection, and
 * must share the consumer (one per group). */
static const char *conn_canon(struct td_shard *s, const char *conn_id)
{
	const struct td_conns *cs = td_shard_conns(s);
	const struct td_conn *cn = cs ? td_conns_get(cs, conn_id) : NULL;
	return cn ? cn->id : conn_id;
}

static void pend_add(struct td_kwatch *kw, struct td_klink *l)
{
	l->listed = true;
	l->pprev = NULL;
	l->pnext = kw->pend;
	if (kw->pend)
		kw->pend->pprev = l;
	kw->pend = l;
}

static void pend_remove(struct td_kwatch *kw, struct td_klink *l)
{
	if (l->pprev)
		l->pprev->pnext = l->pnext;
	else
		kw->pend = l->pnext;
	if (l->pnext)
		l->pnext->pprev = l->pprev;
	l->pnext = l->pprev = NULL;
	l->listed = false;
}

/* File @w under @c, one link per topic. Returns 0 or -ENOMEM. */
static int attach(struct td_kconsumer *c, struct td_kafka_waiter *w)
{
	const struct td_kafka_spec *sp = w->spec;
	struct td_klink *links = calloc(sp->ntopics, sizeof(*links));
	if (!links)
		return -ENOMEM;
	unsigned i = 0;
	for (; i < sp->ntopics; i++) {
		struct td_klink *l = &links[i];
		struct ktopic *kt = topic_make(c, sp->topics[i], strlen(sp->topics[i]));
		if (!kt)
			break;
		l->w = w;
		l->kt = kt;
		if (td_kwaiters_add(&kt->ws, l) != 0)
			break;
		kt->linger_until = 0;
		if (!kt->subscribed) {
			kt->subscribed = true;
			c->need_resub = true;
		}
	}
	if (i < sp->ntopics) {
		while (i--)
			link_remove(&links[i]);
		free(links);
		return -ENOMEM;
	}
	w->c = c;
	w->links = links;
	c->nwaiters++;
	/* Triggers started together (a restart loads them all in one go)
	 * share one subscribe: each changes the group's assignment. */
	if (c->need_resub && !td_timer_pending(&c->resub_timer))
		td_wheel_add(wheel_of(c), &c->resub_timer, td_mono_ms() + RESUB_DELAY_MS);
	return 0;
}

/* @c was just created: file the pending waiters of its (conn, group). */
static void adopt_pending(struct td_kwatch *kw, struct td_kconsumer *c)
{
	for (struct td_klink *l = kw->pend, *next; l; l = next) {
		next = l->pnext;
		struct td_kafka_waiter *w = l->w;
		if (strcmp(w->spec->group, c->group) ||
		    strcmp(conn_canon(kw->shard, w->spec->conn), c->conn))
			continue;
		pend_remove(kw, l);
		free(w->links);
		w->links = NULL;
		if (attach(c, w) != 0) {
			/* Out of memory: it stays pending (filed at start). */
			struct td_klink *nl = calloc(1, sizeof(*nl));
			if (nl) {
				nl->w = w;
				w->links = nl;
				pend_add(kw, nl);
			}
		}
	}
}

int td_kwatch_wait(struct td_shard *s, struct td_kafka_waiter *w)
{
	struct td_kwatch *kw = s->kwatch;
	const struct td_kafka_spec *sp = w->spec;
	bool storing = trigger_storing(w);
	if (w->c) {
		/* Filed while storing: started now, a message held for it
		 * goes at once. */
		if (!storing && w->c->held)
			stall_retry(w->c, td_mono_ms());
		return 0;
	}
	if (!kw || kw->stopped)
		return -ESHUTDOWN;
	const char *conn = conn_canon(s, sp->conn);
	struct td_kconsumer *c = consumer_find(kw, conn, sp->group);
	if (w->links) {
		if (storing)
			return 0; /* pending already */
		/* Pending until now: filed like any waiter below. */
		if (w->links[0].listed)
			pend_remove(kw, &w->links[0]);
		free(w->links);
		w->links = NULL;
	}
	if (!c && storing) {
		struct td_klink *l = calloc(1, sizeof(*l));
		if (!l)
			return -ENOMEM; /* filed at start instead */
		l->w = w;
		w->links = l;
		pend_add(kw, l);
		return 0;
	}
	if (!c) {
		int rc = consumer_new(kw, conn, sp->group, &c);
		if (rc)
			return rc;
		int arc = attach(c, w);
		adopt_pending(kw, c);
		return arc;
	}
	return attach(c, w);
}

void td_kwatch_unwait(struct td_kafka_waiter *w)
{
	struct td_kwatch *kw = td_trigger_shard(td_trigger_from_state(w))->kwatch;
	struct td_kconsumer *c = w->c;
	if (kw)
		rest_forget(kw, w);
	if (!c) {
		if (kw && w->links && w->links[0].listed)
			pend_remove(kw, &w->links[0]);
		free(w->links);
		w->links = NULL;
		return;
	}
	for (unsigned i = 0; i < w->spec->ntopics; i++)
		link_remove(&w->links[i]);
	free(w->links);
	w->links = NULL;
	w->c = NULL;
	if (--c->nwaiters == 0)
		c->idle_since = td_mono_ms();
}

/* ---- lifetime -------------------------------------------------------------- */

int td_kwatch_new(struct td_shard *s, struct td_kwatch **out)
{
	struct td_kwatch *kw = calloc(1, sizeof(*kw));
	if (!kw)
		return -ENOMEM;
	kw->shard = s;
	kw->idle_ms = IDLE_MS_DEFAULT;
	/* Tuning knob (tests, operations): how long unused topics stay
	 * subscribed and unused consumers open. */
	const char *e = getenv("TRIGGERD_KAFKA_IDLE_MS");
	if (e && *e) {
		char *end;
		unsigned long long v = strtoull(e, &end, 10);
		if (!*end && v <= 86400000ULL)
			kw->idle_ms = v;
	}
	*out = kw;
	return 0;
}

void td_kwatch_stop(struct td_kwatch *kw)
{
	if (!kw || kw->stopped)
		return;
	kw->stopped = true;
	while (kw->consumers)
		consumer_close(kw->consumers);
	/* Closing commits and leaves the group: bounded by the shutdown
	 * budget, past which the threads are left to the process exit. */
	struct timespec dl;
	clock_gettime(CLOCK_REALTIME, &dl);
	uint64_t ms = kw->shard->eng->cfg.shutdown_ms;
	dl.tv_sec += (time_t)(ms / 1000);
	dl.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (dl.tv_nsec >= 1000000000L) {
		dl.tv_sec++;
		dl.tv_nsec -= 1000000000L;
	}
	while (kw->closers) {
		struct closer *cl = kw->closers;
		kw->closers = cl->next;
		if (pthread_timedjoin_np(cl->th, NULL, &dl) == 0) {
			free(cl);
		} else {
			td_warn("kafka consumer close still running at exit", NULL);
			pthread_detach(cl->th); /* it frees nothing of ours but cl */
		}
	}
}

void td_kwatch_free(struct td_kwatch *kw)
{
	if (!kw)
		return;
	td_kwatch_stop(kw);
	while (kw->closing)
		consumer_free(kw->closing);
	while (kw->conns) {
		struct connck *k = kw->conns;
		kw->conns = k->next;
		free(k->group);
		free(k);
	}
	free(kw);
}
