/*
 * Redis waits: the interface between the `redis` kind (triggers/redis.c,
 * which parses and packs args) and the watcher (engine/rwatch.c, which holds
 * the connections to each watched server, matches what happens there
 * against the waiting triggers, and fires them).
 *
 * A waiting trigger's kind state is a struct td_rwait. While started it is
 * linked, through one struct td_rw_link per name it waits on, into its
 * server's targets (one per key, channel, pattern, stream or list). Every
 * trigger naming the same connection id shares that server's connections:
 * at most one command connection, one subscriber connection and one
 * blocking XREAD connection, whatever the number of triggers.
 *
 * All calls happen on the shard's thread.
 */
#ifndef TRIGGERD_RWATCH_H
#define TRIGGERD_RWATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct td_shard;
struct td_conn;
struct td_rw_server;
struct td_rw_target;
struct td_rwait;

#define TD_RW_NAME_MAX 1024       /* bytes in a key, channel, stream or list name */
#define TD_RW_NAMES_MAX 64        /* channels + patterns, or lists, per trigger */
#define TD_RW_EQUALS_MAX 65536

enum td_rw_mode {
	TD_RW_KEY = 1,    /* a key to exist (and equal a value) */
	TD_RW_PUBSUB,     /* a message on channels and/or patterns */
	TD_RW_STREAM,     /* a stream entry after an id */
	TD_RW_LIST,       /* an element popped from lists */
};

struct td_rw_name {
	char *p;                  /* NUL-terminated copy (names may hold NUL) */
	uint32_t len;
};

/* One trigger's place on one target's waiter list. */
struct td_rw_link {
	struct td_rw_link *next, *prev;
	struct td_rw_target *tg;  /* set while linked */
	struct td_rwait *w;
};

/*
 * What a redis trigger waits for. One allocation holds the struct, the
 * links and the names; equals and conn_id are separate. Owned by the
 * waiter; freed with td_rw_spec_free.
 */
struct td_rw_spec {
	char *conn_id;
	char *equals;             /* key: the value to equal; NULL: existence */
	uint32_t equals_len;
	uint32_t interval_ms;     /* key, list: poll interval */
	uint8_t mode;             /* enum td_rw_mode */
	uint8_t pop_right;        /* list: pop from the tail (BRPOP) */
	uint8_t dollar;           /* stream: after "$": 1 to resolve, 2 resolving */
	uint8_t fresh;            /* list: a new submission (nothing to recover) */
	uint16_t nnames;
	uint16_t npatterns;       /* pubsub: the last npatterns names are patterns */
	uint64_t after_ms, after_seq; /* stream: entries after this id */
	char nonce[17];           /* list: names this incarnation's processing list */
	struct td_rw_link *links; /* nnames, in the same allocation */
	struct td_rw_name names[];
};

/* The kind state of a redis trigger. */
struct td_rwait {
	struct td_rw_spec *sp;
	struct td_rw_server *srv; /* set while started */
	void *req;                /* list: the pop or recovery in flight */
	uint32_t req_slot;
	uint8_t st;               /* list: engine's state */
	uint8_t firing;           /* inside td_trigger_fire (engine's) */
};

/**
 * Check that @c can name a watched server: conn_type redis, no TLS, a
 * usable db. Returns 0, or -EINVAL with the reason in @why (which never
 * quotes a secret).
 */
int td_rw_conn_check(const struct td_conn *c, char *why, size_t len);

/**
 * Start waiting: find or make the server of @w->sp->conn_id and link @w
 * into its targets. Never fires from inside this call. Returns 0, -ENOMEM,
 * or -ENOENT when the connection id no longer resolves.
 */
int td_rwatch_wait(struct td_shard *s, struct td_rwait *w);

/**
 * Stop waiting. A no-op when @w is not waiting. A list element popped for
 * @w and not yet posted is pushed back to the head of its list (the end it
 * was popped from).
 */
void td_rwatch_unwait(struct td_rwait *w);

/** Free a spec and everything it owns. Accepts NULL. */
void td_rw_spec_free(struct td_rw_spec *sp);

#endif
