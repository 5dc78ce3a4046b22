/*
 * Kafka internals shared by the consumers (kwatch.c), the matching of
 * messages against waiting triggers (kmatch.c) and the connection's
 * configuration (kconf.c). Nothing here is for kinds:
 * they see include/triggerd/kwatch.h.
 *
 * Context: the shard's thread.
 */
#ifndef TD_KWATCH_I_H
#define TD_KWATCH_I_H

#include <librdkafka/rdkafka.h>
#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "triggerd/kwatch.h"

struct ktopic;

/* Bytes -> the waiters filed under them (a topic's keys, a pointer's
 * values). Power-of-two buckets. */
struct kbucket {
	struct kbucket *hnext;
	struct td_klink *head;
	uint64_t hash;
	size_t len;
	char bytes[];
};

struct kindex {
	struct kbucket **b;
	size_t nb, n;
};

/* The unkeyed waiters with a json_pointer filter, by pointer, then by the
 * value they want there. */
struct kptr {
	struct kptr *next;
	struct kindex vals;
	char pointer[];
};

/* The waiters of one topic, filed so that a message meets only those that
 * can match: by key when they filter on it, else by (pointer, value) when
 * they filter on that, else on the plain list. */
struct td_kwaiters {
	struct td_klink *any;
	struct kindex keys;
	struct kptr *ptrs;
	unsigned n;
};

/* One waiter on one topic; owned by the waiter (an array, one per topic). */
struct td_klink {
	struct td_klink *next, *prev;
	struct td_klink **head;      /* the list it is on */
	struct td_kafka_waiter *w;
	struct ktopic *kt;           /* kwatch.c's */
	struct kindex *ix;           /* the index of its bucket, or NULL */
	struct kbucket *kb;
	struct kptr *kp;             /* its pointer group, or NULL */
	/* links[0] only: the waiter's place on its shard's list of waiters
	 * whose trigger is still being stored and whose consumer does not
	 * exist yet (kwatch.c, "pending interest"). */
	struct td_klink *pnext, *pprev;
	bool listed;
};

/* The message being dispatched and what was derived from it (lazily). */
struct kview {
	rd_kafka_message_t *m;
	const char *topic;
	int64_t ts;                  /* timestamp (ms) or -1 */
	bool hdrs_done;
	rd_kafka_headers_t *hdrs;
	bool parsed, is_json;
	msgpack_sbuffer mp;          /* the value as msgpack, when JSON */
	msgpack_unpacked up;
	unsigned npl;
	struct {
		enum td_kafka_payload mode;
		size_t cap;
		msgpack_sbuffer sb;
	} pl[2];                     /* payloads built, by shape */
	msgpack_sbuffer own;         /* a third shape: rebuilt per trigger */
	msgpack_sbuffer cmp;         /* a pointer's value packed, to compare */
};

/* A consumer's matching scratch. */
struct td_kmatch {
	struct kview v;
	struct td_kafka_waiter **cand; /* the matches of the message */
	size_t cand_cap;
	msgpack_sbuffer val;         /* a pointer's value, packed */
};

struct td_conn;
struct td_conns;

/**
 * The consumer configuration for connection @cn (its extra, as librdkafka
 * properties). Defaults set first, so the extra may override them:
 * client.id "triggerd", auto.offset.reset "earliest". Forced after:
 * enable.auto.commit, enable.auto.offset.store and enable.partition.eof
 * false, and group.id @group when not NULL. Without bootstrap.servers in
 * the extra, the connection's host[:port] is used. *@group_out (may be
 * NULL) gets a copy of the extra's group.id, or NULL; the caller frees it.
 * @cs (may be NULL) masks secrets in librdkafka's messages.
 *
 * Returns 0 and *@out (the caller's: rd_kafka_new or
 * rd_kafka_conf_destroy), TD_EINVAL_SPEC with "args.conn: connection
 * '<id>': extra.<key>: <why>" in @err, or -ENOMEM.
 */
int td_kconf_build(const struct td_conns *cs, const struct td_conn *cn, const char *group,
		   rd_kafka_conf_t **out, char **group_out, char *err, size_t errlen);
/** "args.conn: no connection '<id>' (set AIRFLOW_CONN_<ID> ...)" into
 * @err. Returns TD_EINVAL_SPEC. */
int td_kconf_no_conn(const char *conn_id, char *err, size_t errlen);

/** 64-bit hash of @n bytes (FNV-1a, mixed). */
uint64_t td_khash(const void *p, size_t n);

/**
 * File @w's link @l under @ws (by key, pointer value, or plainly) and set
 * @l->head/ix/kb/kp. @l->w and @l->kt are the caller's. Returns 0 or
 * -ENOMEM (then @l is on no list).
 */
int td_kwaiters_add(struct td_kwaiters *ws, struct td_klink *l);
/** Take @l off its list; frees the buckets it leaves empty. */
void td_kwaiters_remove(struct td_kwaiters *ws, struct td_klink *l);
/** Tell every waiter filed under @ws it is no longer registered (w->c =
 * NULL): the consumer goes away under them (shutdown). */
void td_kwaiters_detach(struct td_kwaiters *ws);
/** Free the index (not the links, which the waiters own). */
void td_kwaiters_finish(struct td_kwaiters *ws);

void td_kmatch_init(struct td_kmatch *km);
void td_kmatch_finish(struct td_kmatch *km);
/** Start on message @m (borrowed until the next reset). */
void td_kmatch_reset(struct td_kmatch *km, rd_kafka_message_t *m);
/**
 * The waiters of @ws whose filters @m passes, into km->cand. Returns their
 * count, or (size_t)-1 when out of memory.
 */
size_t td_kmatch_run(struct td_kmatch *km, const struct td_kwaiters *ws);
/** The event payload of the message for @sp (built once per shape). Owned
 * by @km, valid until the next reset or payload call. */
const msgpack_sbuffer *td_kmatch_payload(struct td_kmatch *km, const struct td_kafka_spec *sp);
/** The occurrence key of a message: the same wherever and whenever it is
 * consumed, so the apply script deduplicates a redelivery. */
uint64_t td_kmatch_occurrence(const char *topic, int32_t partition, int64_t offset);

#endif
