/*
 * Engine internals shared by the engine's modules. Nothing here is for
 * trigger kinds: they see include/triggerd/kind.h only.
 */
#ifndef TD_ENGINE_I_H
#define TD_ENGINE_I_H

#include <hiredis/async.h>
#include <msgpack.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/signalfd.h>

#include "reactor.h"
#include "triggerd/http_client.h"
#include "triggerd/addr.h"
#include "triggerd/buf.h"
#include "triggerd/kind.h"
#include "triggerd/triggerd.h"
#include "triggerd/wheel.h"

#define TD_ID_MAX 256
#define TD_META_MAX (16 * 1024)
#define TD_QUEUE_MAX 128
#define TD_ERR_MAX 256

/* ---- triggers -------------------------------------------------------- */

enum td_tstate {
	TD_T_STORING,   /* parsed, HSETNX in flight; not armed yet */
	TD_T_ACTIVE,    /* stored and waiting */
	TD_T_HELD,      /* wanted to fire but the sink was full */
	TD_T_DEAD,      /* cancelled while storing: its cancel record follows
			   the store record; dropped when the store answers */
};

/*
 * One held trigger. A single allocation:
 *
 *   [struct td_timer timeout, only when deadline_ms >= 0]
 *   struct td_trigger  <- the trigger pointer
 *   kind state (state_size8 * 8 bytes)
 *   id, queue, meta bytes
 *
 * The timeout node sits *before* the header so that a trigger without a
 * timeout does not pay for it, while both the node and the kind state stay
 * at fixed offsets from the header (each callback finds its trigger).
 * Budget: DESIGN.md says <= 256 bytes per held timer including the table.
 */
struct td_trigger {
	struct td_trigger *hnext;     /* hash chain */
	struct td_trigger *lnext;     /* held list */
	const struct td_kind *kind;
	struct td_shard *shard;
	int64_t deadline_ms;          /* wall clock; -1: none (no timeout node) */
	uint32_t seq;                 /* repeat: occurrences posted so far */
	uint16_t id_len;
	uint16_t meta_len;
	uint8_t queue_len;
	uint8_t state;                /* enum td_tstate */
	uint8_t repeat;
	uint8_t state_size8;          /* kind state size / 8 */
	uint64_t data[];
};

static inline struct td_timer *td_trigger_timeout(const struct td_trigger *t)
{
	return t->deadline_ms >= 0 ?
	       (struct td_timer *)(void *)((char *)t - sizeof(struct td_timer)) : NULL;
}
static inline char *td_trigger_idp(const struct td_trigger *t)
{
	return (char *)t->data + (size_t)t->state_size8 * 8;
}
static inline char *td_trigger_queuep(const struct td_trigger *t)
{
	return td_trigger_idp(t) + t->id_len;
}
static inline char *td_trigger_metap(const struct td_trigger *t)
{
	return td_trigger_queuep(t) + t->queue_len;
}

/* The kinds in registry order (kinds.c); index for per-kind counts. */
#define TD_KINDS_MAX 8
unsigned td_kind_index(const struct td_kind *k);
/** The kind at registry index @i, or NULL past the last. */
const struct td_kind *td_kind_at(unsigned i);

/** FNV-1a over @n bytes, then a final mix so low bits depend on all. The
 * id table's hash; also the webhook path table and delivery occurrence
 * keys (stored in Redis: do not change it lightly). */
uint64_t td_hash_bytes(const char *s, size_t n);

/* The id -> trigger table: chained hashing, power-of-two buckets. */
struct td_table {
	struct td_trigger **buckets;
	size_t nbuckets;
	size_t count;
	size_t by_kind[TD_KINDS_MAX];
};

int td_table_init(struct td_table *tb);
void td_table_finish(struct td_table *tb);
struct td_trigger *td_table_get(const struct td_table *tb, const char *id, size_t len);
/** Insert @t (its id must not be present). Returns 0 or -ENOMEM. */
int td_table_put(struct td_table *tb, struct td_trigger *t);
void td_table_del(struct td_table *tb, struct td_trigger *t);

/* ---- spec parsing (spec.c) ------------------------------------------ */

/** A parsed submission envelope; pointers into the msgpack object. */
struct td_spec {
	const char *id;
	size_t id_len;
	const struct td_kind *kind;
	const msgpack_object *args;   /* may be NULL */
	int64_t deadline_ms;          /* -1: none */
	const char *queue;
	size_t queue_len;
	const msgpack_object *meta;   /* may be NULL */
	bool repeat;
};

/**
 * Validate a spec map. @now_ms anchors timeout_ms. On error returns
 * TD_EINVAL_SPEC with "<field>: <reason>" in @err, and fills what it could
 * (id, queue) so the rejected event can name them.
 */
int td_spec_parse(const msgpack_object *o, int64_t now_ms, struct td_spec *out,
		  char *err, size_t errlen);

/**
 * Rewrite an Airflow serialized trigger (classpath + kwargs) in @spec as a
 * native spec (kind + args), packed into @out. Returns 0 when rewritten, 1
 * when @spec has no classpath (nothing written), or TD_EINVAL_SPEC with
 * "classpath: ..." / "kwargs.<field>: ..." in @err.
 */
int td_airflow_rewrite(const msgpack_object *spec, msgpack_sbuffer *out, char *err,
		       size_t errlen);

/** A valid queue name: 1..TD_QUEUE_MAX of [A-Za-z0-9_.:-]. */
bool td_queue_name_ok(const char *s, size_t n);

/**
 * Build a trigger from a parsed spec: allocate, copy id/queue/meta, run the
 * kind's parse. Returns 0 and *out, or an error with @err filled.
 */
int td_trigger_new(struct td_shard *s, const struct td_spec *spec, int64_t now_ms,
		   struct td_trigger **out, char *err, size_t errlen);
/** Free a trigger that is in no table and no list. Accepts NULL. */
void td_trigger_free(struct td_trigger *t);

/** Pack the stored (normalised) spec of @t. */
void td_trigger_pack_stored(const struct td_trigger *t, msgpack_packer *pk);

/** Everything an event needs. */
struct td_event {
	const char *id;
	size_t id_len;
	const char *kind;              /* NULL: omitted */
	enum td_status status;
	const char *error;             /* NULL: omitted */
	const char *payload;           /* msgpack; NULL: nil */
	size_t payload_len;
	const char *meta;              /* msgpack; NULL: omitted */
	size_t meta_len;
	uint64_t seq;                  /* 0: omitted */
	int64_t fired_at_ms;
	int64_t due_at_ms;             /* < 0: omitted */
};

void td_event_pack(const struct td_event *ev, msgpack_packer *pk);
const char *td_status_name(enum td_status st);

/* ---- Redis connection on the reactor (redis.c) ----------------------- */

struct td_redis_io;

struct td_redis {
	struct td_reactor *reactor;
	struct td_wheel *wheel;
	const struct td_redis_addr *addr;
	const char *name;             /* for logs: "writer", "reader" */
	redisAsyncContext *ac;        /* NULL while disconnected */
	struct td_redis_io *io;
	struct td_timer timer;        /* connect timeout / reconnect delay */
	unsigned backoff_ms;
	bool up;                      /* connected and usable */
	bool closing;                 /* no reconnect */
	void (*on_up)(struct td_redis *r);
	void (*on_down)(struct td_redis *r);
	void *owner;
	unsigned long reconnects;
};

void td_redis_init(struct td_redis *r, struct td_reactor *reactor,
		   struct td_wheel *wheel, const struct td_redis_addr *addr,
		   const char *name);
/** Start connecting (and reconnecting with backoff until closed). */
void td_redis_start(struct td_redis *r);
/** Disconnect for good; pending callbacks get NULL replies. */
void td_redis_close(struct td_redis *r);
/** Drop the connection now (as if it failed) and reconnect later. */
void td_redis_reset(struct td_redis *r, const char *why);
/** Write buffered commands to the socket now instead of waiting a poll. */
void td_redis_flush(struct td_redis *r);
/** Queue a command. Returns 0 or TD_EREDIS when not connected. */
int td_redis_cmd(struct td_redis *r, redisCallbackFn *fn, void *priv, int argc,
		 const char **argv, const size_t *argvlen);

/* ---- event sink: every write to Redis, batched through one script ----- */

struct td_rec;
typedef void (*td_rec_done)(struct td_rec *rec, long long result, void *arg);

/*
 * One record of the apply script. Ops: 'A' store+ack, 'F' fire once (HDEL
 * then XADD, optional ack), 'R' repeat occurrence (dedup key), 'J' reject
 * (XACK then XADD). Four string args each, see sink.c.
 */
struct td_rec {
	struct td_rec *next;
	td_rec_done done;             /* may be NULL; result < 0: abandoned */
	void *arg;
	uint32_t len[4];
	char op;
	char data[];
};

struct td_batch;

struct td_sink {
	struct td_shard *shard;
	struct td_redis *conn;
	struct td_rec *q_head, *q_tail;     /* not yet sent */
	struct td_batch *retry_head, *retry_tail;
	size_t nrec;                        /* queued + in flight + retry */
	size_t nqueued;                     /* queued, not yet in a batch */
	size_t max;                         /* bound on nrec */
	unsigned batch_max;
	unsigned inflight;
	char sha[41];                       /* "" until SCRIPT LOAD answered */
	uint64_t pause_until;               /* tick; after a Redis error */
	bool checking;                      /* marker check in flight: hold */
	bool marker_known;                  /* we wrote our marker this run */
	char token[17];
	char marker_key[224];
	const char **argv;
	size_t *argvlen;
	size_t argv_cap;
	unsigned long long posted, noops, batches, errors;
};

/** Allocate a record with room for the four args (copied). NULL on ENOMEM. */
struct td_rec *td_rec_new(char op, const void *a, size_t alen, const void *b,
			  size_t blen, const void *c, size_t clen, const void *d,
			  size_t dlen);
int td_sink_init(struct td_sink *k, struct td_shard *s, struct td_redis *conn,
		 size_t max, unsigned batch_max);
void td_sink_finish(struct td_sink *k);
/** Room for one more record under the bound? */
bool td_sink_has_room(const struct td_sink *k);
/** Queue @rec (ownership passes to the sink). Ignores the bound: callers
 * that can wait check td_sink_has_room() first. */
void td_sink_push(struct td_sink *k, struct td_rec *rec);
/** Send what can be sent. Called once per loop iteration. */
void td_sink_flush(struct td_sink *k);
/** Send now if at least @at records are queued: lets Redis start on a
 * batch while the loop is still handling the rest of its completions. */
void td_sink_kick(struct td_sink *k, size_t at);
/** The apply script's Lua text (for tests and docs). */
const char *td_sink_script(void);
/** The writer connection came up: load the script, resend. */
void td_sink_conn_up(struct td_sink *k);
static inline bool td_sink_idle(const struct td_sink *k)
{
	return k->nrec == 0;
}

/* ---- intake and store (intake.c) ----------------------------------- */

struct td_intake {
	struct td_shard *shard;
	bool loaded;                  /* td:triggers read into memory */
	bool loading;
	char scan_cursor[32];
	bool reading;                 /* an XREADGROUP is in flight */
	bool pending_phase;           /* re-reading our own PEL from 0 */
	char last_id[48];
	bool group_ready;
	int64_t load_started_ns;
	size_t load_count, load_bad;
	unsigned long long accepted, rejected, cancels;
};

/* A submission validated and turned into a trigger (not yet stored). */
struct td_add {
	struct td_trigger *t;         /* new, in no table; caller owns */
	bool exists;                  /* the id is already active here */
	char id[TD_ID_MAX];           /* what a rejection names, when known */
	size_t id_len;
	char queue[TD_QUEUE_MAX];
	size_t queue_len;
};

/**
 * Validate a submission (msgpack map @bytes, Airflow classpath specs
 * translated) and build its trigger. Returns 0, or an error with
 * "<field>: <reason>" in @err (id and queue filled when they were readable).
 */
int td_add_prepare(struct td_shard *s, const char *bytes, size_t len, struct td_add *a,
		   char *err, size_t errlen);
/** The 'A' record storing @a->t, acking stream @entry ("": none). NULL on
 * ENOMEM. */
struct td_rec *td_add_record(struct td_shard *s, struct td_add *a, const char *entry);

void td_intake_writer_up(struct td_intake *in);
void td_intake_reader_up(struct td_intake *in);
void td_intake_kick(struct td_intake *in);

/* ---- shard and engine ----------------------------------------------- */

struct td_config {
	struct td_redis_addr redis;
	char prefix[64];
	char consumer[128];
	size_t sink_max;
	unsigned batch_max;
	unsigned read_count;
	unsigned dedup_ttl_s;
	unsigned shutdown_ms;
	unsigned precascade_budget;   /* timers per idle step; 0: off */
	struct td_http_limits http;   /* curl connection limits */
	struct td_ratelimit *ratelimit; /* built from flags by main; owned */
	struct td_ssrf *ssrf;         /* likewise */
	struct td_conns *conns;       /* likewise */
	/* HTTP listeners (engine/webhook.c, engine/api.c) */
	char webhook_listen[128];     /* "": off */
	char api_listen[128];         /* "": off */
	char api_token[256];          /* "": no token needed */
	struct td_ratelimit *webhook_rl; /* per source address; NULL: off */
	struct td_retain_rule *retain; /* --webhook-retain; owned */
	unsigned nretain;
	size_t webhook_body_max;      /* request body limit (413 past it) */
	size_t webhook_payload_max;   /* bodies up to this go into events */
	unsigned webhook_max_conns;
	unsigned http_header_timeout_ms; /* both listeners */
	unsigned http_idle_timeout_ms;
};

/* --webhook-retain: deliveries to matching paths are kept for @ms. */
struct td_retain_rule {
	char path[TD_ID_MAX];         /* exact, or a prefix when it ends in '*' */
	unsigned ms;
};

/* Lateness of timed firings (fired - due, ms): Prometheus buckets. */
#define TD_LATE_BUCKETS 12
extern const unsigned td_late_bounds_ms[TD_LATE_BUCKETS];

struct td_stats {
	unsigned long long fired[5];  /* by enum td_status */
	unsigned long long late[TD_LATE_BUCKETS + 1]; /* last: +Inf */
	unsigned long long late_count;
	double late_sum_s;
	unsigned long long held;
	size_t trigger_bytes;         /* malloc_usable_size of live triggers */
	unsigned long long counters[TD_CNT__MAX];
};

static inline void td_stats_lateness(struct td_stats *st, int64_t ms)
{
	unsigned i = 0;
	if (ms < 0)
		ms = 0;
	while (i < TD_LATE_BUCKETS && (uint64_t)ms > td_late_bounds_ms[i])
		i++;
	st->late[i]++;
	st->late_count++;
	st->late_sum_s += (double)ms / 1000.0;
}

struct td_shard {
	struct td_engine *eng;
	unsigned index;
	struct td_reactor reactor;
	struct td_wheel wheel;
	struct td_table table;
	struct td_redis writer;       /* store, fire script, load */
	struct td_redis reader;       /* XREADGROUP BLOCK lives alone here */
	struct td_sink sink;
	struct td_intake intake;
	struct td_http *http;         /* curl multi on the reactor */
	struct td_hooks *hooks;       /* webhook waiters and listener */
	struct td_api *api;           /* control API listener */
	struct td_rwatch *rwatch;     /* watched Redis servers (rwatch.c) */
	struct td_kwatch *kwatch;     /* Kafka consumers (kwatch.c) */
	struct td_fswatch *fswatch;   /* inotify and polling (fswatch.c) */
	uint64_t rng;                 /* xorshift state for jitter */
	struct td_trigger *held_head, *held_tail;
	struct td_op sig_op;
	int sigfd;
	struct signalfd_siginfo siginfo;
	bool stopping;
	int64_t stop_deadline_ns;
	struct td_stats stats;
	struct td_timer stats_timer;  /* periodic "stats" log line */
	msgpack_sbuffer scratch;      /* event/spec packing */
};

struct td_engine {
	struct td_config cfg;
	char key_submit[96];
	char key_triggers[96];
	char key_events[96];          /* default queue */
	struct td_shard shard;        /* one shard for now; see docs */
};

void td_config_defaults(struct td_config *c);
int td_engine_init(struct td_engine *e, const struct td_config *cfg);
/** Run until SIGINT/SIGTERM; returns the process exit code. */
int td_engine_run(struct td_engine *e);
void td_engine_finish(struct td_engine *e);

/** Stream key for events of @queue (NULL/empty: default) into @buf. */
size_t td_events_key(const struct td_engine *e, const char *queue, size_t qlen,
		     char *buf, size_t len);

/* webhook listener and registry (webhook.c) */
struct td_hooks;
int td_hooks_new(struct td_shard *s, struct td_hooks **out);
/** Start the listener if configured. */
int td_hooks_listen(struct td_hooks *h);
void td_hooks_stop(struct td_hooks *h);
/** Free; after td_reactor_finish. */
void td_hooks_free(struct td_hooks *h);
struct td_httpd;
const struct td_httpd *td_hooks_server(const struct td_hooks *h);
struct td_hooks_stats {
	unsigned long long deliveries, fired, unauthorized, duplicates, no_waiter,
		rate_limited, retained, replayed;
	size_t waiters, retained_now, retained_bytes;
};
void td_hooks_get_stats(const struct td_hooks *h, struct td_hooks_stats *out);

/*
 * Shared watchers of the wait kinds: one connection, consumer or inotify
 * instance per target, shared by all the triggers waiting on it. Each has
 *   new   at shard init (after the reactor and wheel exist);
 *   stop  at shutdown, after every trigger was stopped and freed: close
 *         connections, cancel ring ops (their completions may still be
 *         dispatched while the engine drains the ring);
 *   free  after the ring is torn down: free the memory. Accepts NULL.
 */
struct td_rwatch;
int td_rwatch_new(struct td_shard *s, struct td_rwatch **out);
void td_rwatch_stop(struct td_rwatch *w);
void td_rwatch_free(struct td_rwatch *w);
struct td_kwatch;
int td_kwatch_new(struct td_shard *s, struct td_kwatch **out);
void td_kwatch_stop(struct td_kwatch *w);
void td_kwatch_free(struct td_kwatch *w);
struct td_fswatch;
int td_fswatch_new(struct td_shard *s, struct td_fswatch **out);
void td_fswatch_stop(struct td_fswatch *w);
void td_fswatch_free(struct td_fswatch *w);

/* control API (api.c) */
struct td_api;
int td_api_new(struct td_shard *s, struct td_api **out);
void td_api_stop(struct td_api *a);
const struct td_httpd *td_api_server(const struct td_api *a);
void td_api_free(struct td_api *a);
/** Prometheus text of the shard's metrics (metrics.c). */
int td_metrics_render(struct td_shard *s, struct td_buf *out);

/* trigger lifecycle (trigger.c) */
/** Arm a stored trigger: put it in the table (if not there) and start it. */
int td_trigger_activate(struct td_trigger *t);
/** Remove @t from the table and held list, stop, destroy, free. */
void td_trigger_end(struct td_trigger *t);
/** Post a cancelled event (acking @entry) and end @t. A trigger whose store
 * is still in flight is marked DEAD: its cancel record is queued behind the
 * store record, so Redis stores, then removes and posts. */
int td_trigger_cancel(struct td_trigger *t, const char *entry, size_t entry_len);
/** Post a cancelled event for @t, a trigger built from its stored spec but
 * held by no one here (in no table; freed by this call): the apply script
 * posts it only if the id is still stored, so whoever holds it in memory
 * finds it gone when it fires. @note is told the result. */
int td_trigger_cancel_detached(struct td_trigger *t, struct td_notify *note);
/** The store of @t answered @result (1 stored, 0 not, < 0 abandoned at
 * shutdown): arm it, or drop it. */
void td_trigger_stored(struct td_trigger *t, long long result);
/** Give held triggers another go while the sink has room. */
void td_shard_release_held(struct td_shard *s);
/** Queue a `rejected` event and the ack of @entry. */
void td_post_rejected(struct td_shard *s, const char *entry, const char *id,
		      size_t id_len, const char *queue, size_t queue_len,
		      const char *error);

#endif
