/*
 * Watched Redis servers: the engine side of the `redis` kind.
 *
 * One struct td_rw_server per connection id, made when the first trigger
 * naming it starts, kept until shutdown. It owns up to three hiredis
 * connections on the reactor (engine/redis.c), each started when first
 * needed and reconnected with the adapter's backoff:
 *
 *   cmd  key checks and list probes (one Lua script per tick for all due
 *        keys and lists), list pops (one script per round), acks, stream
 *        "$" resolution, CONFIG GET notify-keyspace-events, CLIENT UNBLOCK
 *   sub  SUBSCRIBE/PSUBSCRIBE for every channel and pattern of every
 *        trigger, plus keyspace channels of watched keys and lists when the
 *        server has notifications on; resubscribed after a reconnect
 *   xrd  one XREAD BLOCK over every watched stream and its cursor, issued
 *        again after each reply; a changed stream set interrupts it with
 *        CLIENT UNBLOCK from cmd (else it ends within XREAD_BLOCK_MS)
 *
 * Triggers hang off targets: one struct td_rw_target per (type, name) with
 * a FIFO list of waiter links, found through a hash table, so dispatching a
 * message, an entry or a key's state is one lookup and a walk of the
 * target's own waiters. A target is freed when nothing waits on it and
 * nothing in flight refers to it (pins).
 *
 * Lists, exactly once. A pop moves each element, in the same script, from
 * the source list onto the trigger's processing list
 * <first list>:triggerd:<trigger id>:<nonce> as an envelope
 * "<uid>:<L|R><len>:<list><element>", uid unique per pop. The event is then
 * posted (its occurrence key derives from uid); once the sink says the
 * record was applied (result >= 0: posted now, or found posted already) the
 * envelope is LREMed. A trigger starting with a non-empty processing list
 * (after a restart, a lost reply) re-posts it first: the fire script's gate
 * (one-shot: HDEL; repeat: the occurrence key) makes a re-post of what had
 * landed a no-op. A trigger that stops (cancel, timeout) with an element
 * popped but not posted pushes it back to the end of the list it came from
 * (one script: LREM from the processing list, then push). Lists are polled
 * (and woken by keyspace notifications when the server sends them) rather
 * than read with BLMOVE: a blocking pop serves one list per connection.
 *
 * Streams: "$" is resolved when the wait starts (XREVRANGE + - COUNT 1) and
 * the trigger's stored spec is rewritten with the id (through the writer,
 * only while the id is still stored), so a restart resumes from it. Each
 * XREAD remembers the position it was issued from: a waiter that joins
 * behind it meanwhile is served by the next read, never out of order.
 *
 * Hiredis 0.14 leaves subscribe mode when a reply reports 0 subscriptions
 * and then aborts on a subscribe reply still in flight, so the subscriber
 * connection keeps an anchor channel subscribed for its whole life, and an
 * UNSUBSCRIBE is answered before the same name is subscribed again.
 *
 * See docs/kinds.md for the semantics. Context: the shard's thread; reply
 * callbacks run inside the reactor.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "engine_i.h"
#include "triggerd/connections.h"
#include "triggerd/log.h"
#include "triggerd/rwatch.h"

#define SAFETY_POLL_MS 30000     /* with keyspace notifications on */
#define CONFIG_RECHECK_MS 30000
#define XREAD_BLOCK_MS 5000
#define XREAD_COUNT 256
#define XREAD_RETRY_MS 1000
#define RETRY_MIN_MS 100         /* a failed recovery, reclaim or "$": backoff */
#define RETRY_MAX_MS 5000
#define CHECK_BATCH 2048
#define POP_MAX_REPEAT 64        /* elements per pop for a repeat trigger */
#define POP_SLOTS_MAX 256        /* waiters served per pop script */
#define PUBSUB_DEDUP_TTL_S 600   /* messages have no id: only re-sends repeat */
#define ANCHOR_CHANNEL "__triggerd:rwatch:anchor"
#define PKEY_MAX (TD_RW_NAME_MAX + TD_ID_MAX + 64)

/* ---- Lua run on the watched server ------------------------------------- */

/* Per key: 'e' EXISTS; 'g' the string value (0: missing, 1: not a
 * string); 'l' LLEN (0 when not a list). */
static const char check_lua[] =
	"local out = {}\n"
	"for i = 1, #KEYS do\n"
	"  local m, k = ARGV[i], KEYS[i]\n"
	"  if m == 'e' then\n"
	"    out[i] = redis.call('EXISTS', k)\n"
	"  elseif m == 'g' then\n"
	"    local v = redis.pcall('GET', k)\n"
	"    if type(v) == 'table' then out[i] = 1 elseif v then out[i] = v else out[i] = 0 end\n"
	"  else\n"
	"    local n = redis.pcall('LLEN', k)\n"
	"    if type(n) ~= 'number' then n = 0 end\n"
	"    out[i] = n\n"
	"  end\n"
	"end\n"
	"return out\n";

/* ARGV[1] slots; per slot: nlists, dir, max. KEYS per slot: the processing
 * list, then the source lists in order. Returns per slot the envelopes
 * moved onto the processing list. */
static const char pop_lua[] =
	"pcall(redis.replicate_commands)\n"
	"local t = redis.call('TIME')\n"
	"local base = t[1] .. '.' .. t[2] .. '.'\n"
	"local empty, out, ki, ai = {}, {}, 1, 2\n"
	"for s = 1, tonumber(ARGV[1]) do\n"
	"  local nl, dir, max = tonumber(ARGV[ai]), ARGV[ai + 1], tonumber(ARGV[ai + 2])\n"
	"  ai = ai + 3\n"
	"  local p, got = KEYS[ki], {}\n"
	"  for j = 1, nl do\n"
	"    local src = KEYS[ki + j]\n"
	"    while #got < max and not empty[src] do\n"
	"      local v = redis.pcall(dir == 'R' and 'RPOP' or 'LPOP', src)\n"
	"      if type(v) ~= 'string' then empty[src] = true break end\n"
	"      local env = base .. s .. '.' .. (#got + 1) .. ':' .. dir .. #src .. ':' .. src .. v\n"
	"      redis.call('RPUSH', p, env)\n"
	"      got[#got + 1] = env\n"
	"    end\n"
	"    if #got >= max then break end\n"
	"  end\n"
	"  out[s] = got\n"
	"  ki = ki + 1 + nl\n"
	"end\n"
	"return out\n";

/* Push envelopes of KEYS[1] back where they came from, last first, so the
 * list's order is as before the pop: those in ARGV (each only if still
 * there), or all. */
static const char ret_lua[] =
	"local p, envs, all = KEYS[1], ARGV, #ARGV == 0\n"
	"if all then envs = redis.call('LRANGE', p, 0, -1) end\n"
	"local n = 0\n"
	"for i = #envs, 1, -1 do\n"
	"  local e = envs[i]\n"
	"  if all or redis.call('LREM', p, 1, e) == 1 then\n"
	"    local c1 = string.find(e, ':', 1, true)\n"
	"    local c2 = c1 and string.find(e, ':', c1 + 2, true)\n"
	"    local sl = c2 and tonumber(string.sub(e, c1 + 2, c2 - 1))\n"
	"    local ok = false\n"
	"    if sl then\n"
	"      local dir = string.sub(e, c1 + 1, c1 + 1)\n"
	"      local r = redis.pcall(dir == 'R' and 'RPUSH' or 'LPUSH', string.sub(e, c2 + 1, c2 + sl),\n"
	"                            string.sub(e, c2 + sl + 1))\n"
	"      ok = type(r) == 'number'\n"
	"    end\n"
	"    if ok then n = n + 1 elseif not all then redis.call('RPUSH', p, e) end\n"
	"  end\n"
	"end\n"
	"if all then redis.call('DEL', p) end\n"
	"return n\n";

/* On triggerd's own Redis: replace a stored spec, only while stored. */
static const char restore_lua[] =
	"if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then\n"
	"  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])\n"
	"  return 1\n"
	"end\n"
	"return 0\n";

/* ---- structures ---------------------------------------------------------- */

enum { T_KEY, T_LIST, T_STREAM, T_CHAN, T_PAT };
enum { SUB_NONE, SUB_ON, SUB_UNSUB };
enum {
	F_QUEUED = 1,      /* on the server's now-queue */
	F_CHECK = 2,       /* key check / list probe wanted */
	F_SUBSYNC = 4,     /* subscription state to bring in line */
	F_RESOLVE = 8,     /* stream: waiters with "$" to resolve */
	F_VALUE = 16,      /* key: some waiter compares the value */
	F_CUR = 32,        /* stream: cursor set */
	F_POLLED = 64,     /* on the server's polled list */
	F_INREAD = 128,    /* stream: in the XREAD in flight, from iss_* */
};
/* List waiter states (td_rwait.st). */
enum { ST_IDLE, ST_POPPING, ST_RECOVERING, ST_NEEDREC };
/* Stream waiters' td_rwait.st: the "$"-resolved spec is still to store
 * (the writer was down, or the reply to the rewrite was lost). */
#define ST_RESTORE ST_NEEDREC

struct td_rw_target {
	struct td_rw_target *hnext;
	struct td_rw_target *anext, *aprev;  /* polled (key, list) or streams */
	struct td_rw_target *qnext;
	struct td_rw_server *srv;
	struct td_rw_link *head, *tail;
	struct td_rw_target *ks;             /* key/list: its keyspace channel */
	uint32_t nwaiters, pins, ks_refs;
	uint32_t interval;                   /* key/list: ms, min of waiters' */
	uint64_t next_due;                   /* key/list: mono ms */
	uint64_t cur_ms, cur_seq;            /* stream: read after this id */
	uint64_t iss_ms, iss_seq;            /* stream: the read in flight's */
	uint8_t type, sub, flags;
	uint32_t len;
	char name[];
};

/* A command to (re)send on cmd until it is answered: an ack (LREM) that
 * waits for its record's result first, a return of envelopes, or a
 * reclaim (read a stopped trigger's processing list, then return what is
 * on it and not being acked). Kept in FIFO order and resent oldest first. */
enum { OP_NOTE, OP_LREM, OP_RET, OP_RECLAIM };
struct rw_op {
	struct td_notify note;
	struct rw_op *next, *prev;
	struct td_rw_server *srv;
	uint8_t kind;
	uint8_t inflight;
	uint32_t plen;        /* processing list name, at data */
	uint32_t nenv;        /* RET: envelopes after it ([u32 len][bytes]) */
	size_t dlen;
	char data[];
};

struct td_rw_server {
	struct td_rw_server *next;
	struct td_rwatch *rw;
	char *conn_id;
	char *user, *pass;
	unsigned db;
	struct td_redis_addr addr;
	char *names[3];
	struct td_redis cmd, sub, xrd;
	bool cmd_on, sub_on, xrd_on;
	bool ks_keys, ks_lists;
	bool xr_inflight, xr_dirty;
	bool down;                    /* a connection dropped, none is back yet */
	long long xr_client;
	struct td_rw_target **buckets;
	size_t nbuckets, count;
	struct td_rw_target *polled, *streams;
	struct td_rw_target *q_head, *q_tail;
	struct rw_op *ops, *ops_tail; /* oldest first */
	struct td_timer now_timer, poll_timer, cfg_timer, xr_timer;
	/* Retries of what failed with an error reply (the server loading,
	 * busy...): list recoveries, reclaims, "$" resolutions. */
	struct td_timer retry_timer;
	uint32_t retry_ms;
	bool rec_logged, recl_logged, res_logged;
	char ks_prefix[40];
	size_t ks_prefix_len;
	char xr_err[128];
};

struct td_rwatch {
	struct td_shard *shard;
	struct td_rw_server *servers;
	bool stopped;
	msgpack_sbuffer pl;           /* payload being built */
	msgpack_sbuffer spec;         /* stored spec being rebuilt */
	uint64_t last_occ;
};

struct rw_check {
	struct td_rw_server *srv;
	uint32_t n;
	struct td_rw_target *tg[];
};

struct rw_slot {
	struct td_rwait *w;           /* NULL: stopped meanwhile */
	char *orphan_p;               /* then: its processing list */
	uint32_t plen, max;
};

struct rw_pop {
	struct td_rw_server *srv;
	uint32_t n, nlists;
	bool more;                    /* waiters were left out: probe again */
	struct td_rw_target **lists;  /* probed, pinned: probed again if full */
	struct rw_slot slot[];
};

struct rw_rec {
	struct td_rw_server *srv;
	struct td_rwait *w;
	char *orphan_p;
	uint32_t plen;
	bool one_shot;
};

struct cand {
	struct td_rw_target *tg;
	long long len;
};

static void arm_now(struct td_rw_server *srv);
static void poll_resched(struct td_rw_target *tg);
static void xr_issue(struct td_rw_server *srv);
static void recover_start(struct td_rwait *w);
static void reclaim(struct td_rw_server *srv, const char *p, size_t plen);
static void reclaim_done(struct rw_op *op, redisReply *r);
static void retry_arm(struct td_rw_server *srv);
static void tg_maybe_free(struct td_rw_target *tg);

/* ---- small helpers ------------------------------------------------------- */

static uint64_t fnv(const void *p, size_t n, uint64_t h)
{
	const unsigned char *s = p;
	for (size_t i = 0; i < n; i++) {
		h ^= s[i];
		h *= 0x100000001b3ULL;
	}
	return h;
}

static uint64_t mix(uint64_t h)
{
	h ^= h >> 29;
	h *= 0xbf58476d1ce4e5b9ULL;
	return h ^ (h >> 32);
}

static bool rstr_is(const redisReply *r, const char *s)
{
	size_t n = strlen(s);
	return r && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS) &&
	       r->len == n && strncasecmp(r->str, s, n) == 0;
}

static void pk_str(msgpack_packer *pk, const char *s, size_t n)
{
	msgpack_pack_str(pk, n);
	msgpack_pack_str_body(pk, s, n);
}

static void pk_lit(msgpack_packer *pk, const char *s)
{
	pk_str(pk, s, strlen(s));
}

static msgpack_packer pl_begin(struct td_rwatch *rw)
{
	msgpack_packer pk;
	rw->pl.size = 0;
	msgpack_packer_init(&pk, &rw->pl, msgpack_sbuffer_write);
	return pk;
}

static const char *esc(char *buf, size_t len, const char *s, size_t n)
{
	return td_log_esc(buf, len, s, n);
}

static struct td_shard *shard_of(const struct td_rw_server *srv)
{
	return srv->rw->shard;
}

static struct td_wheel *wheel_of(const struct td_rw_server *srv)
{
	return &srv->rw->shard->wheel;
}

/* "<ms>-<seq>" into *ms, *seq. */
static bool parse_id(const char *s, size_t n, uint64_t *ms, uint64_t *seq)
{
	uint64_t a = 0, b = 0;
	size_t i = 0;
	if (n == 0)
		return false;
	for (; i < n && s[i] >= '0' && s[i] <= '9'; i++)
		a = a * 10 + (uint64_t)(s[i] - '0');
	if (i < n && s[i] == '-')
		for (i++; i < n && s[i] >= '0' && s[i] <= '9'; i++)
			b = b * 10 + (uint64_t)(s[i] - '0');
	*ms = a;
	*seq = b;
	return i == n;
}

static int id_cmp(uint64_t am, uint64_t as, uint64_t bm, uint64_t bs)
{
	if (am != bm)
		return am < bm ? -1 : 1;
	return as < bs ? -1 : as > bs;
}

/* The processing list of list waiter @w: <list>:triggerd:<id>:<nonce>.
 * Names may hold any byte, NUL included. */
static size_t proc_key(const struct td_rwait *w, char *buf, size_t len)
{
	const struct td_trigger *t = td_trigger_from_state((void *)w);
	size_t idl;
	const char *id = td_trigger_id(t, &idl);
	const struct td_rw_name *l = &w->sp->names[0];
	size_t n = l->len + 10 + idl + 1 + 16;
	if (n >= len)
		return 0; /* cannot happen: names and ids are bounded */
	char *p = buf;
	memcpy(p, l->p, l->len);
	p += l->len;
	memcpy(p, ":triggerd:", 10);
	p += 10;
	memcpy(p, id, idl);
	p += idl;
	*p++ = ':';
	memcpy(p, w->sp->nonce, 16);
	buf[n] = '\0';
	return n;
}

/* ---- connections ----------------------------------------------------------- */

/* extra.db, else a numeric schema; extra.ssl. */
static int conn_db(const struct td_conn *c, unsigned *db, bool *ssl)
{
	*db = 0;
	*ssl = false;
	bool have = false;
	msgpack_unpacked up;
	msgpack_unpacked_init(&up);
	size_t off = 0;
	int rc = 0;
	if (c->extra_len && msgpack_unpack_next(&up, c->extra, c->extra_len, &off) ==
	    MSGPACK_UNPACK_SUCCESS && up.data.type == MSGPACK_OBJECT_MAP) {
		for (uint32_t i = 0; i < up.data.via.map.size; i++) {
			const msgpack_object *k = &up.data.via.map.ptr[i].key;
			const msgpack_object *v = &up.data.via.map.ptr[i].val;
			if (td_mp_str_is(k, "db")) {
				if (v->type == MSGPACK_OBJECT_POSITIVE_INTEGER && v->via.u64 < 100000) {
					*db = (unsigned)v->via.u64;
					have = true;
				} else if (v->type == MSGPACK_OBJECT_STR && v->via.str.size &&
					   v->via.str.size < 6) {
					unsigned d = 0;
					for (uint32_t j = 0; j < v->via.str.size && rc == 0; j++) {
						char ch = v->via.str.ptr[j];
						if (ch < '0' || ch > '9')
							rc = -EINVAL;
						d = d * 10 + (unsigned)(ch - '0');
					}
					*db = d;
					have = true;
				} else if (v->type != MSGPACK_OBJECT_NIL) {
					rc = -EINVAL;
				}
			} else if (td_mp_str_is(k, "ssl")) {
				*ssl = (v->type == MSGPACK_OBJECT_BOOLEAN && v->via.boolean) ||
				       td_mp_str_is(v, "true") || td_mp_str_is(v, "True");
			}
		}
	}
	msgpack_unpacked_destroy(&up);
	if (!rc && !have && c->schema[0]) {
		unsigned d = 0;
		for (const char *p = c->schema; *p && rc == 0; p++) {
			if (*p < '0' || *p > '9' || p - c->schema > 5)
				rc = -EINVAL;
			d = d * 10 + (unsigned)(*p - '0');
		}
		*db = d;
	}
	return rc;
}

int td_rw_conn_check(const struct td_conn *c, char *why, size_t len)
{
	unsigned db;
	bool ssl;
	if (strcmp(c->conn_type, "redis") != 0) {
		snprintf(why, len, "conn_type is '%.40s', expected 'redis'", c->conn_type);
		return -EINVAL;
	}
	if (conn_db(c, &db, &ssl) != 0) {
		snprintf(why, len, "expected a database number in extra.db (or the schema)");
		return -EINVAL;
	}
	if (ssl) {
		snprintf(why, len, "TLS (extra.ssl) is not supported");
		return -EINVAL;
	}
	size_t hl = strlen(c->host);
	if (c->host[0] == '/' ? hl >= sizeof(((struct td_redis_addr *)0)->path) :
	    hl >= sizeof(((struct td_redis_addr *)0)->host)) {
		snprintf(why, len, "host is too long");
		return -EINVAL;
	}
	return 0;
}

static void ignore_cb(redisAsyncContext *ac, void *reply, void *priv)
{
}

static void prelude_cb(redisAsyncContext *ac, void *reply, void *priv)
{
	struct td_rw_server *srv = priv;
	redisReply *r = reply;
	if (r && r->type == REDIS_REPLY_ERROR) {
		char e1[300], e2[300];
		td_error("watched redis refused AUTH or SELECT",
			 "\"conn\":\"%s\",\"error\":\"%s\"",
			 esc(e1, sizeof(e1), srv->conn_id, strlen(srv->conn_id)),
			 esc(e2, sizeof(e2), r->str, r->len));
	}
}

/* AUTH (and SELECT) ahead of anything else on a new connection. */
static void prelude(struct td_rw_server *srv, struct td_redis *r, bool select)
{
	if (srv->pass) {
		const char *argv[3] = {"AUTH"};
		size_t lens[3] = {4};
		int n = 1;
		if (srv->user) {
			argv[n] = srv->user;
			lens[n++] = strlen(srv->user);
		}
		argv[n] = srv->pass;
		lens[n++] = strlen(srv->pass);
		td_redis_cmd(r, prelude_cb, srv, n, argv, lens);
	}
	if (select && srv->db) {
		char db[16];
		int k = snprintf(db, sizeof(db), "%u", srv->db);
		const char *argv[] = {"SELECT", db};
		size_t lens[] = {6, (size_t)k};
		td_redis_cmd(r, prelude_cb, srv, 2, argv, lens);
	}
}

static void ensure(struct td_rw_server *srv, struct td_redis *r, bool *on)
{
	if (!*on && !srv->rw->stopped) {
		*on = true;
		td_redis_start(r);
	}
}

/* ---- targets ----------------------------------------------------------------- */

static struct td_rw_target **tg_slot(struct td_rw_server *srv, int type, const char *p,
				     size_t n)
{
	uint64_t h = mix(fnv(p, n, 0xcbf29ce484222325ULL ^ (uint64_t)type));
	struct td_rw_target **pp = &srv->buckets[h & (srv->nbuckets - 1)];
	for (; *pp; pp = &(*pp)->hnext)
		if ((*pp)->type == type && (*pp)->len == n && memcmp((*pp)->name, p, n) == 0)
			break;
	return pp;
}

static struct td_rw_target *tg_find(struct td_rw_server *srv, int type, const char *p, size_t n)
{
	return *tg_slot(srv, type, p, n);
}

static void tg_grow(struct td_rw_server *srv)
{
	size_t n = srv->nbuckets * 2;
	struct td_rw_target **b = calloc(n, sizeof(*b));
	if (!b)
		return;
	for (size_t i = 0; i < srv->nbuckets; i++) {
		for (struct td_rw_target *e = srv->buckets[i], *next; e; e = next) {
			next = e->hnext;
			uint64_t h = mix(fnv(e->name, e->len,
					     0xcbf29ce484222325ULL ^ (uint64_t)e->type));
			e->hnext = b[h & (n - 1)];
			b[h & (n - 1)] = e;
		}
	}
	free(srv->buckets);
	srv->buckets = b;
	srv->nbuckets = n;
}

static void alist_add(struct td_rw_target **head, struct td_rw_target *tg)
{
	tg->aprev = NULL;
	tg->anext = *head;
	if (*head)
		(*head)->aprev = tg;
	*head = tg;
}

static void alist_del(struct td_rw_target **head, struct td_rw_target *tg)
{
	if (tg->aprev)
		tg->aprev->anext = tg->anext;
	else
		*head = tg->anext;
	if (tg->anext)
		tg->anext->aprev = tg->aprev;
	tg->anext = tg->aprev = NULL;
}

static struct td_rw_target *tg_make(struct td_rw_server *srv, int type, const char *p, size_t n)
{
	struct td_rw_target **pp = tg_slot(srv, type, p, n);
	if (*pp)
		return *pp;
	struct td_rw_target *tg = calloc(1, sizeof(*tg) + n + 1);
	if (!tg)
		return NULL;
	tg->srv = srv;
	tg->type = (uint8_t)type;
	tg->len = (uint32_t)n;
	memcpy(tg->name, p, n);
	*pp = tg;
	if (type == T_KEY || type == T_LIST) {
		tg->flags |= F_POLLED;
		tg->interval = UINT32_MAX;
		alist_add(&srv->polled, tg);
	} else if (type == T_STREAM) {
		alist_add(&srv->streams, tg);
	}
	if (++srv->count > srv->nbuckets)
		tg_grow(srv);
	return tg;
}

static void queue(struct td_rw_target *tg, uint8_t flag)
{
	struct td_rw_server *srv = tg->srv;
	tg->flags |= flag;
	if (tg->flags & F_QUEUED)
		return;
	tg->flags |= F_QUEUED;
	tg->qnext = NULL;
	if (srv->q_tail)
		srv->q_tail->qnext = tg;
	else
		srv->q_head = tg;
	srv->q_tail = tg;
	arm_now(srv);
}

static bool sub_needed(const struct td_rw_target *tg)
{
	return tg->nwaiters || tg->ks_refs;
}

/* Keyspace channel of a key or list target: held while notifications for
 * its class are on and something waits on it. */
static void ks_update(struct td_rw_target *tg)
{
	struct td_rw_server *srv = tg->srv;
	bool want = tg->nwaiters && !srv->rw->stopped &&
		    ((tg->type == T_KEY && srv->ks_keys) || (tg->type == T_LIST && srv->ks_lists));
	if (want && !tg->ks) {
		char ch[sizeof(srv->ks_prefix) + TD_RW_NAME_MAX];
		memcpy(ch, srv->ks_prefix, srv->ks_prefix_len);
		memcpy(ch + srv->ks_prefix_len, tg->name, tg->len);
		struct td_rw_target *c = tg_make(srv, T_CHAN, ch, srv->ks_prefix_len + tg->len);
		if (!c)
			return;
		c->ks_refs++;
		tg->ks = c;
		ensure(srv, &srv->sub, &srv->sub_on);
		queue(c, F_SUBSYNC);
	} else if (!want && tg->ks) {
		struct td_rw_target *c = tg->ks;
		tg->ks = NULL;
		c->ks_refs--;
		if (!sub_needed(c))
			queue(c, F_SUBSYNC);
		/* Back from the safety interval to the poll interval. */
		if (tg->nwaiters)
			poll_resched(tg);
	}
}

static void tg_maybe_free(struct td_rw_target *tg)
{
	struct td_rw_server *srv = tg->srv;
	if (tg->nwaiters || tg->pins || tg->ks_refs || (tg->flags & F_QUEUED))
		return;
	if ((tg->type == T_CHAN || tg->type == T_PAT) && tg->sub != SUB_NONE) {
		if (tg->sub == SUB_ON)
			queue(tg, F_SUBSYNC);
		return;
	}
	if (tg->ks)
		ks_update(tg);
	struct td_rw_target **pp = tg_slot(srv, tg->type, tg->name, tg->len);
	if (*pp == tg)
		*pp = tg->hnext;
	srv->count--;
	if (tg->flags & F_POLLED)
		alist_del(&srv->polled, tg);
	else if (tg->type == T_STREAM)
		alist_del(&srv->streams, tg);
	free(tg);
}

static int tg_link(struct td_rw_server *srv, struct td_rw_link *l, int type,
		   const struct td_rw_name *nm)
{
	struct td_rw_target *tg = tg_make(srv, type, nm->p, nm->len);
	if (!tg)
		return -ENOMEM;
	l->tg = tg;
	l->next = NULL;
	l->prev = tg->tail;
	if (tg->tail)
		tg->tail->next = l;
	else
		tg->head = l;
	tg->tail = l;
	tg->nwaiters++;
	return 0;
}

static void tg_unlink(struct td_rw_link *l)
{
	struct td_rw_target *tg = l->tg;
	if (!tg)
		return;
	if (l->prev)
		l->prev->next = l->next;
	else
		tg->head = l->next;
	if (l->next)
		l->next->prev = l->prev;
	else
		tg->tail = l->prev;
	l->next = l->prev = NULL;
	l->tg = NULL;
	tg->nwaiters--;
	if (tg->nwaiters == 0) {
		if (tg->type == T_CHAN || tg->type == T_PAT)
			queue(tg, F_SUBSYNC);
		if (tg->ks)
			ks_update(tg);
	}
	tg_maybe_free(tg);
}

/* ---- firing ------------------------------------------------------------------ */

/* Fire @w with the payload in rw->pl. Returns td_trigger_fire's answer;
 * after 0 for a one-shot trigger @w is gone. */
static int fire(struct td_rwait *w, uint64_t occ, unsigned ttl, struct td_notify *note)
{
	struct td_rwatch *rw = w->srv->rw;
	struct td_trigger *t = td_trigger_from_state(w);
	struct td_outcome o = {
		.status = TD_SUCCESS,
		.payload = rw->pl.data,
		.payload_len = rw->pl.size,
		.due_at_ms = -1,
		.occurrence = occ,
		.notify = note,
		.dedup_ttl_s = ttl,
	};
	bool rep = td_trigger_repeat(t);
	w->firing = 1;
	int rc = td_trigger_fire(t, &o);
	if (rc != 0 || rep)
		w->firing = 0;
	return rc;
}

static void fail(struct td_rwait *w, const char *why)
{
	struct td_outcome o = {.status = TD_FAILURE, .error = why, .due_at_ms = -1};
	w->firing = 1;
	if (td_trigger_fire(td_trigger_from_state(w), &o) != 0)
		w->firing = 0;
}

static uint64_t next_occ(struct td_rwatch *rw)
{
	uint64_t us = (uint64_t)(td_wall_ns() / 1000);
	rw->last_occ = us > rw->last_occ ? us : rw->last_occ + 1;
	return rw->last_occ;
}

struct rw_restore {
	struct td_rw_server *srv;
	size_t idl;
	char id[];
};

/* A stream waiter of @srv whose trigger id is @id, if any. */
static struct td_rwait *stream_waiter(struct td_rw_server *srv, const char *id, size_t idl)
{
	for (struct td_rw_target *tg = srv->streams; tg; tg = tg->anext)
		for (struct td_rw_link *l = tg->head; l; l = l->next) {
			size_t n;
			const char *p = td_trigger_id(td_trigger_from_state(l->w), &n);
			if (n == idl && memcmp(p, id, n) == 0)
				return l->w;
		}
	return NULL;
}

static void restore_cb(redisAsyncContext *ac, void *reply, void *priv)
{
	struct rw_restore *rr = priv;
	struct td_rw_server *srv = rr->srv;
	redisReply *r = reply;
	if ((!r || r->type == REDIS_REPLY_ERROR) && !srv->rw->stopped &&
	    !srv->rw->shard->stopping) {
		/* Maybe not stored: again when the writer is back. */
		struct td_rwait *w = stream_waiter(srv, rr->id, rr->idl);
		if (w && !w->sp->dollar) {
			w->st = ST_RESTORE;
			retry_arm(srv);
		}
	}
	free(rr);
}

/* Re-store @w's spec (its stream position changed) while it is stored;
 * while the writer is down, retried from the retry timer. */
static void restore_spec(struct td_rwait *w)
{
	struct td_rwatch *rw = w->srv->rw;
	struct td_trigger *t = td_trigger_from_state(w);
	struct td_shard *s = rw->shard;
	size_t idl;
	const char *id = td_trigger_id(t, &idl);
	struct rw_restore *rr = s->writer.up ? malloc(sizeof(*rr) + idl) : NULL;
	w->st = ST_RESTORE;
	if (!rr) {
		retry_arm(w->srv);
		return;
	}
	rr->srv = w->srv;
	rr->idl = idl;
	memcpy(rr->id, id, idl);
	msgpack_packer pk;
	rw->spec.size = 0;
	msgpack_packer_init(&pk, &rw->spec, msgpack_sbuffer_write);
	td_trigger_pack_stored(t, &pk);
	const char *argv[] = {"EVAL", restore_lua, "1", s->eng->key_triggers, id, rw->spec.data};
	size_t lens[] = {4, sizeof(restore_lua) - 1, 1, strlen(s->eng->key_triggers), idl,
			 rw->spec.size};
	if (td_redis_cmd(&s->writer, restore_cb, rr, 6, argv, lens) != 0) {
		free(rr);
		retry_arm(w->srv);
		return;
	}
	w->st = ST_IDLE;
}

/* ---- pub/sub ------------------------------------------------------------------- */

static void dispatch_msg(struct td_rw_target *tg, const redisReply *pat, const redisReply *ch,
			 const redisReply *data)
{
	struct td_rwatch *rw = tg->srv->rw;
	msgpack_packer pk = pl_begin(rw);
	msgpack_pack_map(&pk, 4);
	pk_lit(&pk, "type");
	pk_lit(&pk, pat ? "pmessage" : "message");
	pk_lit(&pk, "pattern");
	if (pat)
		pk_str(&pk, pat->str, pat->len);
	else
		msgpack_pack_nil(&pk);
	pk_lit(&pk, "channel");
	pk_str(&pk, ch->str, ch->len);
	pk_lit(&pk, "data");
	if (data->type == REDIS_REPLY_STRING)
		pk_str(&pk, data->str, data->len);
	else
		msgpack_pack_nil(&pk);
	uint64_t occ = next_occ(rw);
	tg->pins++;
	for (struct td_rw_link *l = tg->head, *next; l; l = next) {
		next = l->next;
		fire(l->w, occ, PUBSUB_DEDUP_TTL_S, NULL);
	}
	tg->pins--;
	tg_maybe_free(tg);
}

/* A keyspace event (or a fresh keyspace subscription): look again. */
static void keyspace_event(struct td_rw_server *srv, const char *ch, size_t n)
{
	if (n < srv->ks_prefix_len || memcmp(ch, srv->ks_prefix, srv->ks_prefix_len) != 0)
		return;
	const char *key = ch + srv->ks_prefix_len;
	size_t kl = n - srv->ks_prefix_len;
	struct td_rw_target *k = tg_find(srv, T_KEY, key, kl);
	if (k && k->ks && k->nwaiters)
		queue(k, F_CHECK);
	struct td_rw_target *l = tg_find(srv, T_LIST, key, kl);
	if (l && l->ks && l->nwaiters)
		queue(l, F_CHECK);
}

static void sub_cb(redisAsyncContext *ac, void *reply, void *priv)
{
	struct td_rw_server *srv = priv;
	redisReply *r = reply;
	if (!r || srv->rw->stopped || r->type != REDIS_REPLY_ARRAY || r->elements < 3)
		return;
	const redisReply *kind = r->element[0], *a = r->element[1];
	if (kind->type != REDIS_REPLY_STRING || a->type != REDIS_REPLY_STRING)
		return;
	if (rstr_is(kind, "message")) {
		struct td_rw_target *tg = tg_find(srv, T_CHAN, a->str, a->len);
		if (tg && tg->nwaiters)
			dispatch_msg(tg, NULL, a, r->element[2]);
		keyspace_event(srv, a->str, a->len);
	} else if (rstr_is(kind, "pmessage") && r->elements >= 4 &&
		   r->element[2]->type == REDIS_REPLY_STRING) {
		struct td_rw_target *tg = tg_find(srv, T_PAT, a->str, a->len);
		if (tg && tg->nwaiters)
			dispatch_msg(tg, a, r->element[2], r->element[3]);
	} else if (rstr_is(kind, "subscribe")) {
		keyspace_event(srv, a->str, a->len);
	} else if (rstr_is(kind, "unsubscribe") || rstr_is(kind, "punsubscribe")) {
		int type = kind->str[0] == 'p' || kind->str[0] == 'P' ? T_PAT : T_CHAN;
		struct td_rw_target *tg = tg_find(srv, type, a->str, a->len);
		if (tg && tg->sub == SUB_UNSUB) {
			tg->sub = SUB_NONE;
			if (sub_needed(tg))
				queue(tg, F_SUBSYNC);
			else
				tg_maybe_free(tg);
		}
	}
}

struct argv {
	const char **v;
	size_t *len;
	size_t n, cap;
};

static bool argv_put(struct argv *a, const char *s, size_t n)
{
	if (a->n == a->cap) {
		size_t cap = a->cap ? a->cap * 2 : 16;
		const char **v = realloc(a->v, cap * sizeof(*v));
		if (!v)
			return false;
		a->v = v;
		size_t *l = realloc(a->len, cap * sizeof(*l));
		if (!l)
			return false;
		a->len = l;
		a->cap = cap;
	}
	a->v[a->n] = s;
	a->len[a->n++] = n;
	return true;
}

static void argv_free(struct argv *a)
{
	free(a->v);
	free(a->len);
	memset(a, 0, sizeof(*a));
}

/* SUBSCRIBE-family commands for the names gathered (argv[0] is the verb). */
static void sub_send(struct td_rw_server *srv, struct argv *a)
{
	if (a->n > 1)
		td_redis_cmd(&srv->sub, sub_cb, srv, (int)a->n, a->v, a->len);
	a->n = 1;
}

/* ---- key checks and list probes ---------------------------------------------- */

static void key_eval(struct td_rw_target *tg, bool exists, const char *val, size_t vlen)
{
	struct td_rwatch *rw = tg->srv->rw;
	if (!exists)
		return;
	tg->pins++;
	for (struct td_rw_link *l = tg->head, *next; l; l = next) {
		next = l->next;
		const struct td_rw_spec *sp = l->w->sp;
		if (sp->equals && (!val || vlen != sp->equals_len ||
				   memcmp(val, sp->equals, vlen) != 0))
			continue;
		msgpack_packer pk = pl_begin(rw);
		msgpack_pack_map(&pk, sp->equals ? 2 : 1);
		pk_lit(&pk, "key");
		pk_str(&pk, tg->name, tg->len);
		if (sp->equals) {
			pk_lit(&pk, "value");
			pk_str(&pk, val, vlen);
		}
		fire(l->w, 0, 0, NULL);
	}
	tg->pins--;
}

static void pop_round(struct td_rw_server *srv, struct cand *c, size_t nc);

static void check_cb(redisAsyncContext *ac, void *reply, void *priv)
{
	struct rw_check *req = priv;
	struct td_rw_server *srv = req->srv;
	redisReply *r = reply;
	bool ok = r && !srv->rw->stopped && r->type == REDIS_REPLY_ARRAY && r->elements == req->n;
	if (r && r->type == REDIS_REPLY_ERROR) {
		char e1[300], e2[300];
		td_warn("watched redis: key check failed",
			"\"conn\":\"%s\",\"error\":\"%s\"",
			esc(e1, sizeof(e1), srv->conn_id, strlen(srv->conn_id)),
			esc(e2, sizeof(e2), r->str, r->len));
	}
	struct cand *cands = ok ? calloc(req->n, sizeof(*cands)) : NULL;
	size_t nc = 0;
	for (uint32_t i = 0; i < req->n; i++) {
		struct td_rw_target *tg = req->tg[i];
		if (ok && tg->nwaiters) {
			const redisReply *e = r->element[i];
			if (tg->type == T_KEY) {
				bool str = e->type == REDIS_REPLY_STRING;
				key_eval(tg, str || (e->type == REDIS_REPLY_INTEGER && e->integer == 1),
					 str ? e->str : NULL, str ? e->len : 0);
			} else if (e->type == REDIS_REPLY_INTEGER && e->integer > 0 && cands) {
				cands[nc].tg = tg;
				cands[nc++].len = e->integer;
				tg->pins++;
			}
		}
		tg->pins--;
		tg_maybe_free(tg);
	}
	free(req);
	if (nc)
		pop_round(srv, cands, nc);
	for (size_t i = 0; i < nc; i++) {
		cands[i].tg->pins--;
		tg_maybe_free(cands[i].tg);
	}
	free(cands);
}

static void check_send(struct td_rw_server *srv, struct td_rw_target **tgs, size_t n)
{
	struct rw_check *req = malloc(sizeof(*req) + n * sizeof(req->tg[0]));
	struct argv a = {0};
	char nk[16];
	snprintf(nk, sizeof(nk), "%zu", n);
	bool ok = req && argv_put(&a, "EVAL", 4) &&
		  argv_put(&a, check_lua, sizeof(check_lua) - 1) && argv_put(&a, nk, strlen(nk));
	for (size_t i = 0; ok && i < n; i++)
		ok = argv_put(&a, tgs[i]->name, tgs[i]->len);
	for (size_t i = 0; ok && i < n; i++)
		ok = argv_put(&a, tgs[i]->type == T_LIST ? "l" :
			      tgs[i]->flags & F_VALUE ? "g" : "e", 1);
	if (ok) {
		req->srv = srv;
		req->n = (uint32_t)n;
		memcpy(req->tg, tgs, n * sizeof(*tgs));
		ok = td_redis_cmd(&srv->cmd, check_cb, req, (int)a.n, a.v, a.len) == 0;
	}
	argv_free(&a);
	if (!ok) {
		free(req);
		for (size_t i = 0; i < n; i++) {
			tgs[i]->pins--;
			tg_maybe_free(tgs[i]);
		}
	}
}

/* ---- list pops, recovery, acks --------------------------------------------------- */

static struct rw_op *op_new(struct td_rw_server *srv, int kind, const char *p, size_t plen,
			    size_t extra)
{
	struct rw_op *op = calloc(1, sizeof(*op) + plen + extra);
	if (!op)
		return NULL;
	op->srv = srv;
	op->kind = (uint8_t)kind;
	op->plen = (uint32_t)plen;
	memcpy(op->data, p, plen);
	op->dlen = plen;
	/* Every op is on the server's list until answered or dropped, in
	 * the order made: a reconnect resends them oldest first. */
	op->prev = srv->ops_tail;
	if (srv->ops_tail)
		srv->ops_tail->next = op;
	else
		srv->ops = op;
	srv->ops_tail = op;
	return op;
}

static void op_free(struct rw_op *op)
{
	struct td_rw_server *srv = op->srv;
	if (op->prev)
		op->prev->next = op->next;
	else
		srv->ops = op->next;
	if (op->next)
		op->next->prev = op->prev;
	else
		srv->ops_tail = op->prev;
	free(op);
}

static void op_add_env(struct rw_op *op, const char *e, size_t n)
{
	uint32_t l = (uint32_t)n;
	memcpy(op->data + op->dlen, &l, sizeof(l));
	memcpy(op->data + op->dlen + sizeof(l), e, n);
	op->dlen += sizeof(l) + n;
	op->nenv++;
}

static void op_cb(redisAsyncContext *ac, void *reply, void *priv)
{
	struct rw_op *op = priv;
	redisReply *r = reply;
	op->inflight = 0;
	if (op->kind == OP_RECLAIM) {
		reclaim_done(op, r);
		return;
	}
	if (!r) {
		/* Lost: sent again when cmd is back (dropped at shutdown). */
		if (op->srv->rw->stopped)
			op_free(op);
		return;
	}
	if (r->type == REDIS_REPLY_ERROR) {
		char e1[300], e2[300];
		td_error("watched redis: list ack or return failed; the element stays on its "
			 "processing list", "\"list\":\"%s\",\"error\":\"%s\"",
			 esc(e1, sizeof(e1), op->data, op->plen), esc(e2, sizeof(e2), r->str, r->len));
	}
	op_free(op);
}

static void op_send(struct rw_op *op)
{
	struct td_rw_server *srv = op->srv;
	if (op->inflight || !srv->cmd.up)
		return;
	struct argv a = {0};
	bool ok;
	if (op->kind == OP_LREM) {
		ok = argv_put(&a, "LREM", 4) && argv_put(&a, op->data, op->plen) &&
		     argv_put(&a, "1", 1) &&
		     argv_put(&a, op->data + op->plen + 4, op->dlen - op->plen - 4);
	} else if (op->kind == OP_RECLAIM) {
		ok = argv_put(&a, "LRANGE", 6) && argv_put(&a, op->data, op->plen) &&
		     argv_put(&a, "0", 1) && argv_put(&a, "-1", 2);
	} else {
		ok = argv_put(&a, "EVAL", 4) && argv_put(&a, ret_lua, sizeof(ret_lua) - 1) &&
		     argv_put(&a, "1", 1) && argv_put(&a, op->data, op->plen);
		size_t off = op->plen;
		for (uint32_t i = 0; ok && i < op->nenv; i++) {
			uint32_t l;
			memcpy(&l, op->data + off, sizeof(l));
			ok = argv_put(&a, op->data + off + sizeof(l), l);
			off += sizeof(l) + l;
		}
	}
	if (ok && td_redis_cmd(&srv->cmd, op_cb, op, (int)a.n, a.v, a.len) == 0)
		op->inflight = 1;
	argv_free(&a);
}

/* The sink says what became of a list element's event. */
static void ack_note(struct td_notify *n, long long result)
{
	struct rw_op *op = td_container_of(n, struct rw_op, note);
	if (result < 0 || op->srv->rw->stopped) {
		/* Not applied: the element stays on the processing list, and the
		 * trigger (still stored) posts it again when it next starts. */
		op_free(op);
		return;
	}
	op->kind = OP_LREM;
	op_send(op);
}

/* Return envelopes @envs[from..n) of processing list @p. */
static void ret_envs(struct td_rw_server *srv, const char *p, size_t plen,
		     redisReply **envs, size_t from, size_t n)
{
	size_t bytes = 0;
	for (size_t i = from; i < n; i++)
		bytes += 4 + envs[i]->len;
	if (from >= n)
		return;
	struct rw_op *op = op_new(srv, OP_RET, p, plen, bytes);
	if (!op) {
		char e1[300];
		td_error("out of memory returning list elements; they stay on the processing list",
			 "\"list\":\"%s\"", esc(e1, sizeof(e1), p, plen));
		return;
	}
	for (size_t i = from; i < n; i++)
		op_add_env(op, envs[i]->str, envs[i]->len);
	op_send(op);
}

/* Split "<uid>:<L|R><len>:<list><data>". */
static bool env_parse(const char *e, size_t n, const char **uid, size_t *uidl,
		      const char **list, size_t *listl, const char **data, size_t *datal)
{
	const char *c1 = memchr(e, ':', n);
	if (!c1 || (size_t)(c1 - e) + 3 > n)
		return false;
	const char *p = c1 + 2, *end = e + n;
	size_t l = 0;
	if (p >= end || *p < '0' || *p > '9')
		return false;
	for (; p < end && *p >= '0' && *p <= '9'; p++)
		l = l * 10 + (size_t)(*p - '0');
	if (p >= end || *p != ':' || (size_t)(end - p - 1) < l)
		return false;
	*uid = e;
	*uidl = (size_t)(c1 - e);
	*list = p + 1;
	*listl = l;
	*data = p + 1 + l;
	*datal = (size_t)(end - (p + 1 + l));
	return true;
}

/*
 * Post each envelope of @envs for @w (one for a one-shot trigger, the rest
 * returned). Returns true while @w still waits afterwards.
 */
static bool deliver(struct td_rwait *w, redisReply **envs, size_t n)
{
	struct td_rw_server *srv = w->srv;
	struct td_rwatch *rw = srv->rw;
	char p[PKEY_MAX];
	size_t plen = proc_key(w, p, sizeof(p));
	bool rep = td_trigger_repeat(td_trigger_from_state(w));
	for (size_t i = 0; i < n; i++) {
		const redisReply *e = envs[i];
		const char *uid, *list, *data;
		size_t uidl, listl, datal;
		if (e->type != REDIS_REPLY_STRING ||
		    !env_parse(e->str, e->len, &uid, &uidl, &list, &listl, &data, &datal)) {
			char e1[300];
			td_warn("watched redis: not a triggerd envelope on a processing list; left there",
				"\"list\":\"%s\"", esc(e1, sizeof(e1), p, plen));
			continue;
		}
		msgpack_packer pk = pl_begin(rw);
		msgpack_pack_map(&pk, 2);
		pk_lit(&pk, "list");
		pk_str(&pk, list, listl);
		pk_lit(&pk, "data");
		pk_str(&pk, data, datal);
		/* The ack: LREM of this envelope once the sink has applied the
		 * record ([P][u32 len][envelope], as a return op's layout). */
		struct rw_op *op = op_new(srv, OP_NOTE, p, plen, 4 + e->len);
		if (op) {
			op->note.fn = ack_note;
			op_add_env(op, e->str, e->len);
		}
		int rc = fire(w, mix(fnv(uid, uidl, 0xcbf29ce484222325ULL)), 0,
			      op ? &op->note : NULL);
		if (rc != 0) {
			/* Held back (the sink is full): the trigger was stopped;
			 * what it holds goes back to the list. */
			if (op)
				op_free(op);
			ret_envs(srv, p, plen, envs, i, n);
			return false;
		}
		if (!rep) {
			ret_envs(srv, p, plen, envs, i + 1, n);
			return false;
		}
	}
	return true;
}

static void pop_cb(redisAsyncContext *ac, void *reply, void *priv)
{
	struct rw_pop *req = priv;
	struct td_rw_server *srv = req->srv;
	redisReply *r = reply;
	bool stopped = srv->rw->stopped, more = req->more;
	if (r && r->type == REDIS_REPLY_ERROR) {
		char e1[300], e2[300];
		td_warn("watched redis: list pop failed", "\"conn\":\"%s\",\"error\":\"%s\"",
			esc(e1, sizeof(e1), srv->conn_id, strlen(srv->conn_id)),
			esc(e2, sizeof(e2), r->str, r->len));
	}
	for (uint32_t i = 0; i < req->n; i++) {
		struct rw_slot *sl = &req->slot[i];
		struct td_rwait *w = sl->w;
		const redisReply *e = r && r->type == REDIS_REPLY_ARRAY && i < r->elements ?
			r->element[i] : NULL;
		if (w) {
			w->req = NULL;
			w->st = e ? ST_IDLE : ST_NEEDREC;
		}
		if (!e || e->type != REDIS_REPLY_ARRAY) {
			/* The pop may or may not have happened: read the list
			 * and give back what is on it and not being acked (an
			 * element posted earlier may still wait for its LREM). */
			if (!w && sl->orphan_p && !stopped)
				reclaim(srv, sl->orphan_p, sl->plen);
			else if (w && r)
				recover_start(w);
		} else if (!w) {
			if (sl->orphan_p && e->elements)
				ret_envs(srv, sl->orphan_p, sl->plen, e->element, 0, e->elements);
		} else {
			more |= e->elements >= sl->max;
			if (e->elements)
				deliver(w, e->element, e->elements);
		}
		free(sl->orphan_p);
	}
	for (uint32_t i = 0; i < req->nlists; i++) {
		struct td_rw_target *tg = req->lists[i];
		if (more && tg->nwaiters && !stopped)
			queue(tg, F_CHECK);
		tg->pins--;
		tg_maybe_free(tg);
	}
	free(req->lists);
	free(req);
}

/*
 * Lists @c[i].tg hold @c[i].len elements: pop for as many idle waiters as
 * that can serve, in their FIFO order, in one script. A trigger waiting on
 * several lists is served once per round; the script tries its lists in
 * its own order.
 */
static void pop_round(struct td_rw_server *srv, struct cand *c, size_t nc)
{
	struct td_shard *s = shard_of(srv);
	if (!srv->cmd.up || !td_sink_has_room(&s->sink))
		return; /* left on the list; the next probe comes back to it */
	struct rw_pop *req = calloc(1, sizeof(*req) + POP_SLOTS_MAX * sizeof(req->slot[0]));
	if (!req)
		return;
	req->srv = srv;
	if (!(req->lists = calloc(nc, sizeof(*req->lists)))) {
		free(req);
		return;
	}
	/* One element for each waiter in turn (FIFO) while the list has
	 * them; what is left goes to repeat waiters, up to POP_MAX_REPEAT
	 * each, so a busy repeat trigger cannot starve the others. */
	size_t pbytes = 0;
	for (size_t i = 0; i < nc; i++) {
		long long budget = c[i].len;
		uint32_t first = req->n;
		for (struct td_rw_link *l = c[i].tg->head; l && budget > 0; l = l->next) {
			struct td_rwait *w = l->w;
			if (w->st != ST_IDLE || w->req)
				continue;
			if (req->n == POP_SLOTS_MAX) {
				req->more = true;
				break;
			}
			budget--;
			req->slot[req->n] = (struct rw_slot){.w = w, .max = 1};
			w->req = req;
			w->req_slot = req->n++;
			w->st = ST_POPPING;
			pbytes += w->sp->names[0].len + TD_ID_MAX + 32;
		}
		for (uint32_t k = first; k < req->n && budget > 0; k++) {
			if (!td_trigger_repeat(td_trigger_from_state(req->slot[k].w)))
				continue;
			uint32_t extra = budget < POP_MAX_REPEAT - 1 ? (uint32_t)budget :
					 POP_MAX_REPEAT - 1;
			req->slot[k].max += extra;
			budget -= extra;
		}
		req->lists[req->nlists++] = c[i].tg;
		c[i].tg->pins++;
	}
	char *pkeys = req->n ? malloc(pbytes) : NULL;
	char (*num)[24] = req->n ? malloc(req->n * 2 * sizeof(*num)) : NULL;
	struct argv a = {0};
	char nkbuf[24], nsbuf[24];
	size_t nkeys = 0, off = 0;
	bool ok = pkeys && num && argv_put(&a, "EVAL", 4) &&
		  argv_put(&a, pop_lua, sizeof(pop_lua) - 1) && argv_put(&a, nkbuf, 0);
	/* Keys (the processing list, then the lists) per slot, then ARGV. */
	for (uint32_t k = 0; ok && k < req->n; k++) {
		struct td_rwait *w = req->slot[k].w;
		size_t plen = proc_key(w, pkeys + off, pbytes - off);
		ok = argv_put(&a, pkeys + off, plen);
		off += plen + 1;
		for (uint16_t j = 0; ok && j < w->sp->nnames; j++)
			ok = argv_put(&a, w->sp->names[j].p, w->sp->names[j].len);
		nkeys += 1 + w->sp->nnames;
	}
	if (ok) {
		a.len[2] = (size_t)snprintf(nkbuf, sizeof(nkbuf), "%zu", nkeys);
		ok = argv_put(&a, nsbuf, (size_t)snprintf(nsbuf, sizeof(nsbuf), "%u", req->n));
	}
	for (uint32_t k = 0; ok && k < req->n; k++) {
		struct td_rwait *w = req->slot[k].w;
		int l1 = snprintf(num[2 * k], sizeof(num[0]), "%u", (unsigned)w->sp->nnames);
		int l2 = snprintf(num[2 * k + 1], sizeof(num[0]), "%u", req->slot[k].max);
		ok = argv_put(&a, num[2 * k], (size_t)l1) &&
		     argv_put(&a, w->sp->pop_right ? "R" : "L", 1) &&
		     argv_put(&a, num[2 * k + 1], (size_t)l2);
	}
	if (ok)
		ok = td_redis_cmd(&srv->cmd, pop_cb, req, (int)a.n, a.v, a.len) == 0;
	argv_free(&a);
	free(pkeys);
	free(num);
	if (!ok) {
		/* Nothing was sent: the waiters stay idle. */
		for (uint32_t k = 0; k < req->n; k++) {
			req->slot[k].w->req = NULL;
			req->slot[k].w->st = ST_IDLE;
		}
		for (uint32_t i = 0; i < req->nlists; i++)
			req->lists[i]->pins--; /* the caller still pins them */
		free(req->lists);
		free(req);
	}
}

/* True when an ack of envelope @e on processing list @p is pending here. */
static bool being_acked(struct td_rw_server *srv, const char *p, size_t plen,
			const redisReply *e)
{
	for (struct rw_op *op = srv->ops; op; op = op->next)
		if ((op->kind == OP_NOTE || op->kind == OP_LREM) && op->plen == plen &&
		    memcmp(op->data, p, plen) == 0 &&
		    op->dlen - plen - 4 == e->len && memcmp(op->data + plen + 4, e->str, e->len) == 0)
			return true;
	return false;
}

static void rec_cb(redisAsyncContext *ac, void *reply, void *priv)
{
	struct rw_rec *rec = priv;
	struct td_rw_server *srv = rec->srv;
	struct td_rwait *w = rec->w;
	redisReply *r = reply;
	bool stopped = srv->rw->stopped;
	bool got = r && r->type == REDIS_REPLY_ARRAY;
	if (w) {
		w->req = NULL;
		/* Not read (lost, or an error such as -LOADING or -BUSY): the
		 * waiter pops nothing new until its processing list is read,
		 * retried on reconnect or from the retry timer. */
		w->st = got ? ST_IDLE : ST_NEEDREC;
	}
	if (!got) {
		if (r && !stopped && !srv->rec_logged) {
			char e1[300], e2[300];
			srv->rec_logged = true;
			td_warn("watched redis: reading a processing list failed; retrying",
				"\"conn\":\"%s\",\"error\":\"%s\"",
				esc(e1, sizeof(e1), srv->conn_id, strlen(srv->conn_id)),
				r->type == REDIS_REPLY_ERROR ? esc(e2, sizeof(e2), r->str, r->len) :
				"unexpected reply");
		}
		/* Stopped meanwhile: read it again later and give back what is
		 * not being acked, as below. */
		if (!w && rec->orphan_p && !stopped)
			reclaim(srv, rec->orphan_p, rec->plen);
		else if (w && !stopped)
			retry_arm(srv);
	} else if (!w) {
		/* Stopped while reading: give back what is not being acked. */
		redisReply **keep = rec->orphan_p && !stopped && r->elements ?
			malloc(r->elements * sizeof(*keep)) : NULL;
		size_t nk = 0;
		for (size_t i = 0; keep && i < r->elements; i++)
			if (r->element[i]->type == REDIS_REPLY_STRING &&
			    !being_acked(srv, rec->orphan_p, rec->plen, r->element[i]))
				keep[nk++] = r->element[i];
		if (nk)
			ret_envs(srv, rec->orphan_p, rec->plen, keep, 0, nk);
		free(keep);
	} else {
		bool waiting = true;
		size_t n = rec->one_shot && r->elements > 1 ? 1 : r->elements;
		srv->rec_logged = false;
		srv->retry_ms = 0;
		char p[PKEY_MAX];
		size_t plen = proc_key(w, p, sizeof(p));
		if (n)
			waiting = deliver(w, r->element, n);
		/* A one-shot trigger pops one element in its life; more can only
		 * be left over from an earlier trigger with the same nonce. */
		if (n < r->elements)
			ret_envs(srv, p, plen, r->element, n, r->elements);
		if (waiting)
			for (uint16_t i = 0; i < w->sp->nnames; i++)
				if (w->sp->links[i].tg)
					queue(w->sp->links[i].tg, F_CHECK);
	}
	free(rec->orphan_p);
	free(rec);
}

/* Processing list @p of a trigger that stopped: read it (now, or when cmd
 * is back), then return what it holds and is not being acked. */
static void reclaim(struct td_rw_server *srv, const char *p, size_t plen)
{
	struct rw_op *op = op_new(srv, OP_RECLAIM, p, plen, 0);
	if (!op) {
		char e1[300];
		td_error("out of memory returning list elements; they stay on the processing list",
			 "\"list\":\"%s\"", esc(e1, sizeof(e1), p, plen));
		return;
	}
	op_send(op);
}

static void reclaim_done(struct rw_op *op, redisReply *r)
{
	struct td_rw_server *srv = op->srv;
	if (srv->rw->stopped) {
		op_free(op);
		return;
	}
	if (!r)
		return; /* sent again when cmd is back */
	if (r->type != REDIS_REPLY_ARRAY) {
		if (!srv->recl_logged) {
			char e1[300], e2[300];
			srv->recl_logged = true;
			td_warn("watched redis: reading a stopped trigger's processing list failed; "
				"retrying", "\"list\":\"%s\",\"error\":\"%s\"",
				esc(e1, sizeof(e1), op->data, op->plen),
				r->type == REDIS_REPLY_ERROR ? esc(e2, sizeof(e2), r->str, r->len) :
				"unexpected reply");
		}
		retry_arm(srv);
		return;
	}
	srv->recl_logged = false;
	srv->retry_ms = 0;
	redisReply **keep = r->elements ? malloc(r->elements * sizeof(*keep)) : NULL;
	size_t nk = 0;
	for (size_t i = 0; keep && i < r->elements; i++)
		if (r->element[i]->type == REDIS_REPLY_STRING &&
		    !being_acked(srv, op->data, op->plen, r->element[i]))
			keep[nk++] = r->element[i];
	if (nk)
		ret_envs(srv, op->data, op->plen, keep, 0, nk);
	free(keep);
	op_free(op);
}

/* Post what @w's processing list holds before popping anything new. */
static void recover_start(struct td_rwait *w)
{
	struct td_rw_server *srv = w->srv;
	if (w->req || w->st == ST_RECOVERING || w->st == ST_POPPING)
		return;
	w->st = ST_NEEDREC;
	if (!srv->cmd.up)
		return;
	struct rw_rec *rec = calloc(1, sizeof(*rec));
	if (!rec)
		return;
	rec->srv = srv;
	rec->w = w;
	rec->one_shot = !td_trigger_repeat(td_trigger_from_state(w));
	char p[PKEY_MAX];
	size_t plen = proc_key(w, p, sizeof(p));
	const char *argv[] = {"LRANGE", p, "0", "-1"};
	size_t lens[] = {6, plen, 1, 2};
	if (td_redis_cmd(&srv->cmd, rec_cb, rec, 4, argv, lens) != 0) {
		free(rec);
		return;
	}
	w->req = rec;
	w->st = ST_RECOVERING;
}

/* ---- streams ------------------------------------------------------------------- */

static void cursor_join(struct td_rw_target *tg, uint64_t ms, uint64_t seq)
{
	if (!(tg->flags & F_CUR) || id_cmp(ms, seq, tg->cur_ms, tg->cur_seq) < 0) {
		bool had = tg->flags & F_CUR;
		tg->cur_ms = ms;
		tg->cur_seq = seq;
		tg->flags |= F_CUR;
		/* A cursor moving back must interrupt the XREAD in flight; a new
		 * stream likewise. */
		if (!had || tg->srv->xr_inflight) {
			tg->srv->xr_dirty = true;
			arm_now(tg->srv);
		}
	}
}

static void resolve_cb(redisAsyncContext *ac, void *reply, void *priv)
{
	struct td_rw_target *tg = priv;
	redisReply *r = reply;
	bool stopped = tg->srv->rw->stopped;
	uint64_t ms = 0, seq = 0;
	bool ok = r && !stopped && r->type == REDIS_REPLY_ARRAY;
	if (ok && r->elements >= 1) {
		const redisReply *e = r->element[0];
		ok = e->type == REDIS_REPLY_ARRAY && e->elements >= 1 &&
		     e->element[0]->type == REDIS_REPLY_STRING &&
		     parse_id(e->element[0]->str, e->element[0]->len, &ms, &seq);
	}
	bool wrongtype = r && r->type == REDIS_REPLY_ERROR && strncmp(r->str, "WRONGTYPE", 9) == 0;
	tg->pins++;
	for (struct td_rw_link *l = tg->head, *next; l && !stopped; l = next) {
		next = l->next;
		struct td_rw_spec *sp = l->w->sp;
		if (sp->dollar != 2)
			continue;
		if (ok) {
			sp->dollar = 0;
			sp->after_ms = ms;
			sp->after_seq = seq;
			restore_spec(l->w);
			cursor_join(tg, ms, seq);
		} else if (wrongtype) {
			fail(l->w, "stream: the key holds another type than a stream");
		} else {
			sp->dollar = 1; /* again when cmd is back */
		}
	}
	if (!stopped && ok)
		for (struct td_rw_link *l = tg->head; l; l = l->next)
			if (l->w->sp->dollar == 1)
				queue(tg, F_RESOLVE);
	if (!stopped && ok) {
		tg->srv->res_logged = false;
		tg->srv->retry_ms = 0;
	} else if (!stopped && !wrongtype) {
		/* Lost (again when cmd is back), or an error such as -LOADING or
		 * -BUSY: retried from the timer, with backoff. */
		struct td_rw_server *srv = tg->srv;
		if (r && !srv->res_logged) {
			char e1[300], e2[300];
			srv->res_logged = true;
			td_warn("watched redis: resolving a stream's after_id $ failed; retrying",
				"\"stream\":\"%s\",\"error\":\"%s\"",
				esc(e1, sizeof(e1), tg->name, tg->len),
				r->type == REDIS_REPLY_ERROR ? esc(e2, sizeof(e2), r->str, r->len) :
				"unexpected reply");
		}
		retry_arm(srv);
	}
	tg->pins -= 2;
	tg_maybe_free(tg);
}

static void resolve_send(struct td_rw_target *tg)
{
	struct td_rw_server *srv = tg->srv;
	if (!srv->cmd.up)
		return;
	bool any = false;
	for (struct td_rw_link *l = tg->head; l; l = l->next)
		if (l->w->sp->dollar == 1) {
			l->w->sp->dollar = 2;
			any = true;
		}
	if (!any)
		return;
	const char *argv[] = {"XREVRANGE", tg->name, "+", "-", "COUNT", "1"};
	size_t lens[] = {9, tg->len, 1, 1, 5, 1};
	if (td_redis_cmd(&srv->cmd, resolve_cb, tg, 6, argv, lens) != 0) {
		for (struct td_rw_link *l = tg->head; l; l = l->next)
			if (l->w->sp->dollar == 2)
				l->w->sp->dollar = 1;
		return;
	}
	tg->pins++; /* resolve_cb drops it */
}

static void type_cb(redisAsyncContext *ac, void *reply, void *priv)
{
	struct td_rw_target *tg = priv;
	redisReply *r = reply;
	tg->pins--;
	if (r && !tg->srv->rw->stopped && r->type == REDIS_REPLY_STATUS &&
	    !rstr_is(r, "stream") && !rstr_is(r, "none")) {
		char why[96];
		snprintf(why, sizeof(why), "stream: the key holds a %.*s, not a stream",
			 (int)(r->len < 32 ? r->len : 32), r->str);
		tg->pins++;
		for (struct td_rw_link *l = tg->head, *next; l; l = next) {
			next = l->next;
			fail(l->w, why);
		}
		tg->pins--;
	}
	tg_maybe_free(tg);
}

static void dispatch_entry(struct td_rw_target *tg, const redisReply *e)
{
	struct td_rwatch *rw = tg->srv->rw;
	uint64_t ms, seq;
	if (e->type != REDIS_REPLY_ARRAY || e->elements < 2 ||
	    e->element[0]->type != REDIS_REPLY_STRING ||
	    !parse_id(e->element[0]->str, e->element[0]->len, &ms, &seq))
		return;
	const redisReply *id = e->element[0], *f = e->element[1];
	msgpack_packer pk = pl_begin(rw);
	msgpack_pack_map(&pk, 3);
	pk_lit(&pk, "stream");
	pk_str(&pk, tg->name, tg->len);
	pk_lit(&pk, "id");
	pk_str(&pk, id->str, id->len);
	pk_lit(&pk, "fields");
	size_t nf = f->type == REDIS_REPLY_ARRAY ? f->elements / 2 : 0;
	msgpack_pack_map(&pk, nf);
	for (size_t i = 0; i < nf; i++) {
		const redisReply *k = f->element[2 * i], *v = f->element[2 * i + 1];
		if (k->type == REDIS_REPLY_STRING)
			pk_str(&pk, k->str, k->len);
		else
			pk_str(&pk, "", 0);
		if (v->type == REDIS_REPLY_STRING)
			pk_str(&pk, v->str, v->len);
		else
			msgpack_pack_nil(&pk);
	}
	uint64_t occ = mix(fnv(id->str, id->len, 0xcbf29ce484222325ULL));
	for (struct td_rw_link *l = tg->head, *next; l; l = next) {
		next = l->next;
		struct td_rwait *w = l->w;
		struct td_rw_spec *sp = w->sp;
		/* A waiter behind the position this read started from (it came
		 * while the read was in flight) is served by the next read, from
		 * its own position, so it sees every entry and in order. */
		if (sp->dollar || id_cmp(ms, seq, sp->after_ms, sp->after_seq) <= 0 ||
		    id_cmp(sp->after_ms, sp->after_seq, tg->iss_ms, tg->iss_seq) < 0)
			continue;
		bool rep = td_trigger_repeat(td_trigger_from_state(w));
		if (fire(w, occ, 0, NULL) == 0 && rep) {
			sp->after_ms = ms;
			sp->after_seq = seq;
		}
	}
}

static void xr_cb(redisAsyncContext *ac, void *reply, void *priv)
{
	struct td_rw_server *srv = priv;
	redisReply *r = reply;
	srv->xr_inflight = false;
	if (!r || srv->rw->stopped || r->type != REDIS_REPLY_ARRAY)
		for (struct td_rw_target *tg = srv->streams; tg; tg = tg->anext)
			tg->flags &= (uint8_t)~F_INREAD;
	if (!r || srv->rw->stopped)
		return;
	if (r->type == REDIS_REPLY_ERROR) {
		if (strncmp(srv->xr_err, r->str, r->len < sizeof(srv->xr_err) ? r->len : 0) != 0 ||
		    !srv->xr_err[0]) {
			char e1[300], e2[300];
			td_warn("watched redis: XREAD failed; retrying",
				"\"conn\":\"%s\",\"error\":\"%s\"",
				esc(e1, sizeof(e1), srv->conn_id, strlen(srv->conn_id)),
				esc(e2, sizeof(e2), r->str, r->len));
			snprintf(srv->xr_err, sizeof(srv->xr_err), "%.*s", (int)r->len, r->str);
		}
		/* A key of another type fails the whole XREAD: find it. */
		for (struct td_rw_target *tg = srv->streams; tg; tg = tg->anext) {
			const char *argv[] = {"TYPE", tg->name};
			size_t lens[] = {4, tg->len};
			if (srv->cmd.up && td_redis_cmd(&srv->cmd, type_cb, tg, 2, argv, lens) == 0)
				tg->pins++;
		}
		td_wheel_add(wheel_of(srv), &srv->xr_timer, td_mono_ms() + XREAD_RETRY_MS);
		return;
	}
	srv->xr_err[0] = '\0';
	if (r->type == REDIS_REPLY_ARRAY) {
		for (size_t i = 0; i < r->elements; i++) {
			const redisReply *s = r->element[i];
			if (s->type != REDIS_REPLY_ARRAY || s->elements < 2 ||
			    s->element[0]->type != REDIS_REPLY_STRING ||
			    s->element[1]->type != REDIS_REPLY_ARRAY)
				continue;
			struct td_rw_target *tg = tg_find(srv, T_STREAM, s->element[0]->str,
							  s->element[0]->len);
			if (!tg || !(tg->flags & F_INREAD))
				continue; /* made since the read was issued */
			tg->pins++;
			const redisReply *es = s->element[1];
			for (size_t j = 0; j < es->elements; j++)
				dispatch_entry(tg, es->element[j]);
			/* Read on after the last entry, unless the cursor was moved
			 * back meanwhile. */
			uint64_t ms, seq;
			const redisReply *last = es->elements ? es->element[es->elements - 1] : NULL;
			if (last && last->type == REDIS_REPLY_ARRAY && last->elements >= 1 &&
			    last->element[0]->type == REDIS_REPLY_STRING &&
			    parse_id(last->element[0]->str, last->element[0]->len, &ms, &seq) &&
			    tg->cur_ms == tg->iss_ms && tg->cur_seq == tg->iss_seq &&
			    id_cmp(ms, seq, tg->cur_ms, tg->cur_seq) > 0) {
				tg->cur_ms = ms;
				tg->cur_seq = seq;
			}
			tg->pins--;
			tg_maybe_free(tg);
		}
		for (struct td_rw_target *tg = srv->streams; tg; tg = tg->anext)
			tg->flags &= (uint8_t)~F_INREAD;
	}
	xr_issue(srv);
}

static void xr_issue(struct td_rw_server *srv)
{
	if (srv->xr_inflight || !srv->xrd.up || srv->rw->stopped ||
	    td_timer_pending(&srv->xr_timer))
		return;
	size_t n = 0;
	for (struct td_rw_target *tg = srv->streams; tg; tg = tg->anext)
		n += (tg->flags & F_CUR) && tg->nwaiters;
	if (!n)
		return;
	char (*ids)[48] = malloc(n * sizeof(*ids));
	struct argv a = {0};
	char count[16], block[16];
	snprintf(count, sizeof(count), "%d", XREAD_COUNT);
	snprintf(block, sizeof(block), "%d", XREAD_BLOCK_MS);
	bool ok = ids && argv_put(&a, "XREAD", 5) && argv_put(&a, "COUNT", 5) &&
		  argv_put(&a, count, strlen(count)) && argv_put(&a, "BLOCK", 5) &&
		  argv_put(&a, block, strlen(block)) && argv_put(&a, "STREAMS", 7);
	for (struct td_rw_target *tg = srv->streams; ok && tg; tg = tg->anext)
		if ((tg->flags & F_CUR) && tg->nwaiters)
			ok = argv_put(&a, tg->name, tg->len);
	size_t k = 0;
	for (struct td_rw_target *tg = srv->streams; ok && tg; tg = tg->anext) {
		if (!((tg->flags & F_CUR) && tg->nwaiters))
			continue;
		int l = snprintf(ids[k], sizeof(ids[k]), "%" PRIu64 "-%" PRIu64, tg->cur_ms,
				 tg->cur_seq);
		ok = argv_put(&a, ids[k++], (size_t)l);
	}
	if (ok && td_redis_cmd(&srv->xrd, xr_cb, srv, (int)a.n, a.v, a.len) == 0) {
		srv->xr_inflight = true;
		srv->xr_dirty = false;
		for (struct td_rw_target *tg = srv->streams; tg; tg = tg->anext) {
			if (!((tg->flags & F_CUR) && tg->nwaiters))
				continue;
			tg->flags |= F_INREAD;
			tg->iss_ms = tg->cur_ms;
			tg->iss_seq = tg->cur_seq;
		}
	}
	argv_free(&a);
	free(ids);
}

static void xr_timer_cb(struct td_timer *t, uint64_t now)
{
	struct td_rw_server *srv = td_container_of(t, struct td_rw_server, xr_timer);
	xr_issue(srv);
	td_redis_flush(&srv->xrd);
}

static void client_id_cb(redisAsyncContext *ac, void *reply, void *priv)
{
	struct td_rw_server *srv = priv;
	redisReply *r = reply;
	if (r && r->type == REDIS_REPLY_INTEGER)
		srv->xr_client = r->integer;
}

/* ---- the now-queue and polling -------------------------------------------------- */

static void arm_now(struct td_rw_server *srv)
{
	if (!srv->rw->stopped && !td_timer_pending(&srv->now_timer))
		td_wheel_add(wheel_of(srv), &srv->now_timer, 0);
}

static void now_cb(struct td_timer *t, uint64_t now)
{
	struct td_rw_server *srv = td_container_of(t, struct td_rw_server, now_timer);
	struct td_rw_target *q = srv->q_head;
	srv->q_head = srv->q_tail = NULL;
	struct argv subs[4] = {{0}};
	static const char *const verbs[4] = {"SUBSCRIBE", "PSUBSCRIBE", "UNSUBSCRIBE",
					     "PUNSUBSCRIBE"};
	for (int i = 0; i < 4; i++)
		argv_put(&subs[i], verbs[i], strlen(verbs[i]));
	struct td_rw_target **checks = NULL;
	size_t nchecks = 0, capchecks = 0;
	bool cmd_up = srv->cmd.up, sub_up = srv->sub.up;
	while (q) {
		struct td_rw_target *tg = q;
		q = tg->qnext;
		tg->qnext = NULL;
		uint8_t fl = tg->flags;
		tg->flags &= (uint8_t)~(F_QUEUED | F_CHECK | F_SUBSYNC | F_RESOLVE);
		if ((fl & F_SUBSYNC) && sub_up) {
			bool need = sub_needed(tg), pat = tg->type == T_PAT;
			if (tg->sub == SUB_NONE && need) {
				if (argv_put(&subs[pat], tg->name, tg->len))
					tg->sub = SUB_ON;
			} else if (tg->sub == SUB_ON && !need) {
				if (argv_put(&subs[2 + pat], tg->name, tg->len))
					tg->sub = SUB_UNSUB;
			}
		}
		if ((fl & F_CHECK) && cmd_up && tg->nwaiters) {
			if (nchecks == capchecks) {
				size_t cap = capchecks ? capchecks * 2 : 64;
				struct td_rw_target **c = realloc(checks, cap * sizeof(*c));
				if (c) {
					checks = c;
					capchecks = cap;
				}
			}
			if (nchecks < capchecks) {
				checks[nchecks++] = tg;
				tg->pins++;
			}
		}
		if (fl & F_RESOLVE)
			resolve_send(tg);
		tg_maybe_free(tg);
	}
	for (int i = 0; i < 4; i++) {
		sub_send(srv, &subs[i]);
		argv_free(&subs[i]);
	}
	for (size_t i = 0; i < nchecks; i += CHECK_BATCH)
		check_send(srv, checks + i, nchecks - i < CHECK_BATCH ? nchecks - i : CHECK_BATCH);
	free(checks);
	if (srv->xr_dirty) {
		if (!srv->xr_inflight) {
			xr_issue(srv);
		} else if (srv->xr_client > 0 && cmd_up) {
			char id[24];
			int l = snprintf(id, sizeof(id), "%lld", srv->xr_client);
			const char *argv[] = {"CLIENT", "UNBLOCK", id};
			size_t lens[] = {6, 7, (size_t)l};
			td_redis_cmd(&srv->cmd, ignore_cb, NULL, 3, argv, lens);
			srv->xr_dirty = false;
		}
	}
	td_redis_flush(&srv->cmd);
	td_redis_flush(&srv->sub);
	td_redis_flush(&srv->xrd);
}

static uint32_t effective_interval(const struct td_rw_target *tg)
{
	if (tg->ks && tg->ks->sub == SUB_ON && tg->interval < SAFETY_POLL_MS)
		return SAFETY_POLL_MS;
	return tg->interval;
}

/* The next multiple of @iv after @t: targets polled at the same interval
 * come due on the same tick, whenever they started, and go to Redis in one
 * script. */
static uint64_t aligned(uint64_t t, uint32_t iv)
{
	return (t / iv + 1) * iv;
}

static void poll_cb(struct td_timer *t, uint64_t now)
{
	struct td_rw_server *srv = td_container_of(t, struct td_rw_server, poll_timer);
	uint64_t next = UINT64_MAX;
	for (struct td_rw_target *tg = srv->polled; tg; tg = tg->anext) {
		if (!tg->nwaiters)
			continue;
		if (tg->next_due <= now) {
			tg->next_due = aligned(now, effective_interval(tg));
			if (srv->cmd.up)
				queue(tg, F_CHECK);
		}
		if (tg->next_due < next)
			next = tg->next_due;
	}
	if (next != UINT64_MAX)
		td_wheel_add(wheel_of(srv), t, next);
}

/* Make sure @tg is polled within its (effective) interval from now. */
static void poll_resched(struct td_rw_target *tg)
{
	struct td_rw_server *srv = tg->srv;
	uint64_t due = aligned(td_mono_ms(), effective_interval(tg));
	if (tg->next_due == 0 || tg->next_due > due)
		tg->next_due = due;
	if (!td_timer_pending(&srv->poll_timer) || srv->poll_timer.expires > tg->next_due)
		td_wheel_add(wheel_of(srv), &srv->poll_timer, tg->next_due);
}

/* A key or list target gained a waiter with interval @iv (the caller checks
 * it now): keep polling it at the shortest interval asked for. */
static void poll_join(struct td_rw_target *tg, uint32_t iv)
{
	if (iv < tg->interval)
		tg->interval = iv;
	poll_resched(tg);
}

/* Something failed with an error reply: try again after a backoff (100 ms
 * doubling to 5 s, back to 100 ms after a success). */
static void retry_arm(struct td_rw_server *srv)
{
	if (srv->rw->stopped || td_timer_pending(&srv->retry_timer))
		return;
	uint32_t ms = srv->retry_ms ? srv->retry_ms : RETRY_MIN_MS;
	td_wheel_add(wheel_of(srv), &srv->retry_timer, td_mono_ms() + ms);
	srv->retry_ms = ms * 2 < RETRY_MAX_MS ? ms * 2 : RETRY_MAX_MS;
}

static void retry_cb(struct td_timer *t, uint64_t now)
{
	struct td_rw_server *srv = td_container_of(t, struct td_rw_server, retry_timer);
	if (srv->rw->stopped)
		return;
	for (struct td_rw_target *tg = srv->streams; tg; tg = tg->anext)
		for (struct td_rw_link *l = tg->head; l; l = l->next)
			if (l->w->st == ST_RESTORE && !l->w->sp->dollar)
				restore_spec(l->w); /* re-arms the timer if still down */
	if (!srv->cmd.up)
		return; /* cmd_up does the rest again */
	for (struct rw_op *op = srv->ops; op; op = op->next)
		if (op->kind == OP_RECLAIM)
			op_send(op);
	for (struct td_rw_target *tg = srv->polled; tg; tg = tg->anext)
		if (tg->type == T_LIST)
			for (struct td_rw_link *l = tg->head; l; l = l->next)
				if (l->w->st == ST_NEEDREC)
					recover_start(l->w);
	for (struct td_rw_target *tg = srv->streams; tg; tg = tg->anext)
		for (struct td_rw_link *l = tg->head; l; l = l->next)
			if (l->w->sp->dollar == 1)
				queue(tg, F_RESOLVE);
	td_redis_flush(&srv->cmd);
}

static void cfg_cb(redisAsyncContext *ac, void *reply, void *priv)
{
	struct td_rw_server *srv = priv;
	redisReply *r = reply;
	if (!r || srv->rw->stopped)
		return;
	const char *f = "";
	size_t fl = 0;
	if (r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
	    r->element[1]->type == REDIS_REPLY_STRING) {
		f = r->element[1]->str;
		fl = r->element[1]->len;
	}
	bool K = memchr(f, 'K', fl), A = memchr(f, 'A', fl);
	bool keys = K && (A || (memchr(f, 'g', fl) && memchr(f, '$', fl)));
	bool lists = K && (A || memchr(f, 'l', fl));
	if (keys != srv->ks_keys || lists != srv->ks_lists) {
		char e1[300];
		td_info("watched redis: keyspace notifications",
			"\"conn\":\"%s\",\"keys\":%s,\"lists\":%s",
			esc(e1, sizeof(e1), srv->conn_id, strlen(srv->conn_id)),
			keys ? "true" : "false", lists ? "true" : "false");
		srv->ks_keys = keys;
		srv->ks_lists = lists;
		for (struct td_rw_target *tg = srv->polled; tg; tg = tg->anext)
			ks_update(tg);
	}
}

static void cfg_send(struct td_rw_server *srv)
{
	const char *argv[] = {"CONFIG", "GET", "notify-keyspace-events"};
	size_t lens[] = {6, 3, 22};
	td_redis_cmd(&srv->cmd, cfg_cb, srv, 3, argv, lens);
}

static void cfg_timer_cb(struct td_timer *t, uint64_t now)
{
	struct td_rw_server *srv = td_container_of(t, struct td_rw_server, cfg_timer);
	if (srv->cmd.up && srv->polled)
		cfg_send(srv);
	td_wheel_add(wheel_of(srv), t, now + CONFIG_RECHECK_MS);
}

/* ---- connection events ------------------------------------------------------------ */

/* One line when a watched server goes away and one when it is back, not
 * one per connection and per retry. */
static void went_up(struct td_rw_server *srv)
{
	if (srv->down) {
		char e1[300];
		td_info("watched redis is back", "\"conn\":\"%s\"",
			esc(e1, sizeof(e1), srv->conn_id, strlen(srv->conn_id)));
		srv->down = false;
	}
}

static void went_down(struct td_rw_server *srv)
{
	if (srv->rw->stopped || srv->down)
		return;
	srv->down = true;
	char e1[300];
	td_warn("watched redis is down; its triggers wait and reconnect with backoff",
		"\"conn\":\"%s\"", esc(e1, sizeof(e1), srv->conn_id, strlen(srv->conn_id)));
}

static void cmd_up(struct td_redis *r)
{
	struct td_rw_server *srv = r->owner;
	if (srv->rw->stopped)
		return;
	went_up(srv);
	prelude(srv, r, true);
	cfg_send(srv);
	if (!td_timer_pending(&srv->cfg_timer))
		td_wheel_add(wheel_of(srv), &srv->cfg_timer, td_mono_ms() + CONFIG_RECHECK_MS);
	for (struct rw_op *op = srv->ops; op; op = op->next)
		if (op->kind != OP_NOTE)
			op_send(op);
	for (struct td_rw_target *tg = srv->polled; tg; tg = tg->anext) {
		if (!tg->nwaiters)
			continue;
		queue(tg, F_CHECK);
		if (tg->type == T_LIST)
			for (struct td_rw_link *l = tg->head; l; l = l->next)
				if (l->w->st == ST_NEEDREC)
					recover_start(l->w);
	}
	for (struct td_rw_target *tg = srv->streams; tg; tg = tg->anext)
		for (struct td_rw_link *l = tg->head; l; l = l->next)
			if (l->w->sp->dollar == 1)
				queue(tg, F_RESOLVE);
}

static void cmd_down(struct td_redis *r)
{
	went_down(r->owner);
}

static void sub_up(struct td_redis *r)
{
	struct td_rw_server *srv = r->owner;
	if (srv->rw->stopped)
		return;
	went_up(srv);
	prelude(srv, r, false);
	/* The anchor keeps the connection subscribed whatever else comes and
	 * goes: hiredis 0.14 leaves subscribe mode when a count of 0 is
	 * reported, and would then trip over replies still pipelined. */
	const char *anchor[] = {"SUBSCRIBE", ANCHOR_CHANNEL};
	size_t alens[] = {9, sizeof(ANCHOR_CHANNEL) - 1};
	td_redis_cmd(r, sub_cb, srv, 2, anchor, alens);
	for (size_t i = 0; i < srv->nbuckets; i++)
		for (struct td_rw_target *tg = srv->buckets[i]; tg; tg = tg->hnext)
			if ((tg->type == T_CHAN || tg->type == T_PAT) && sub_needed(tg))
				queue(tg, F_SUBSYNC);
}

static void sub_down(struct td_redis *r)
{
	struct td_rw_server *srv = r->owner;
	went_down(srv);
	if (srv->rw->stopped)
		return;
	for (size_t i = 0; i < srv->nbuckets; i++) {
		for (struct td_rw_target *tg = srv->buckets[i], *next; tg; tg = next) {
			next = tg->hnext;
			if (tg->type == T_CHAN || tg->type == T_PAT) {
				tg->sub = SUB_NONE;
				tg_maybe_free(tg);
			}
		}
	}
}

static void xrd_up(struct td_redis *r)
{
	struct td_rw_server *srv = r->owner;
	if (srv->rw->stopped)
		return;
	went_up(srv);
	prelude(srv, r, true);
	const char *argv[] = {"CLIENT", "ID"};
	size_t lens[] = {6, 2};
	td_redis_cmd(r, client_id_cb, srv, 2, argv, lens);
	xr_issue(srv);
}

static void xrd_down(struct td_redis *r)
{
	struct td_rw_server *srv = r->owner;
	went_down(srv);
	srv->xr_inflight = false;
	srv->xr_client = 0;
}

/* ---- servers ----------------------------------------------------------------------- */

static void server_free(struct td_rw_server *srv)
{
	for (size_t i = 0; i < srv->nbuckets; i++) {
		for (struct td_rw_target *tg = srv->buckets[i], *next; tg; tg = next) {
			next = tg->hnext;
			free(tg);
		}
	}
	free(srv->buckets);
	while (srv->ops)
		op_free(srv->ops);
	struct td_wheel *wh = wheel_of(srv);
	td_wheel_cancel(wh, &srv->now_timer);
	td_wheel_cancel(wh, &srv->poll_timer);
	td_wheel_cancel(wh, &srv->cfg_timer);
	td_wheel_cancel(wh, &srv->xr_timer);
	td_wheel_cancel(wh, &srv->retry_timer);
	if (srv->pass) {
		explicit_bzero(srv->pass, strlen(srv->pass));
		free(srv->pass);
	}
	free(srv->user);
	free(srv->conn_id);
	for (int i = 0; i < 3; i++)
		free(srv->names[i]);
	free(srv);
}

static int server_get(struct td_rwatch *rw, const char *conn_id, struct td_rw_server **out)
{
	for (struct td_rw_server *srv = rw->servers; srv; srv = srv->next) {
		if (strcmp(srv->conn_id, conn_id) == 0) {
			*out = srv;
			return 0;
		}
	}
	struct td_shard *s = rw->shard;
	const struct td_conns *cs = td_shard_conns(s);
	const struct td_conn *c = cs ? td_conns_get(cs, conn_id) : NULL;
	char why[160];
	if (!c || td_rw_conn_check(c, why, sizeof(why)) != 0)
		return -ENOENT;
	struct td_rw_server *srv = calloc(1, sizeof(*srv));
	if (!srv)
		return -ENOMEM;
	srv->rw = rw;
	bool ssl;
	conn_db(c, &srv->db, &ssl);
	srv->conn_id = strdup(conn_id);
	if (c->login[0])
		srv->user = strdup(c->login);
	/* As Airflow's RedisHook: "none", "false" or "" mean no password. */
	if (c->password[0] && strcasecmp(c->password, "none") != 0 &&
	    strcasecmp(c->password, "false") != 0)
		srv->pass = strdup(c->password);
	if (c->host[0] == '/')
		snprintf(srv->addr.path, sizeof(srv->addr.path), "%s", c->host);
	else
		snprintf(srv->addr.host, sizeof(srv->addr.host), "%s",
			 c->host[0] ? c->host : "127.0.0.1");
	srv->addr.port = c->port ? c->port : 6379;
	srv->ks_prefix_len = (size_t)snprintf(srv->ks_prefix, sizeof(srv->ks_prefix),
					      "__keyspace@%u__:", srv->db);
	static const char *const what[3] = {"cmd", "sub", "xread"};
	for (int i = 0; i < 3; i++) {
		size_t n = strlen(conn_id) + 32;
		if ((srv->names[i] = malloc(n)))
			snprintf(srv->names[i], n, "watch:%s:%s", conn_id, what[i]);
	}
	srv->nbuckets = 64;
	srv->buckets = calloc(srv->nbuckets, sizeof(*srv->buckets));
	bool pass_wanted = c->password[0] && strcasecmp(c->password, "none") != 0 &&
			   strcasecmp(c->password, "false") != 0;
	if (!srv->conn_id || !srv->buckets || !srv->names[0] || !srv->names[1] ||
	    !srv->names[2] || (c->login[0] && !srv->user) || (pass_wanted && !srv->pass)) {
		server_free(srv);
		return -ENOMEM;
	}
	struct td_redis *conns[3] = {&srv->cmd, &srv->sub, &srv->xrd};
	void (*ups[3])(struct td_redis *) = {cmd_up, sub_up, xrd_up};
	void (*downs[3])(struct td_redis *) = {cmd_down, sub_down, xrd_down};
	for (int i = 0; i < 3; i++) {
		td_redis_init(conns[i], &s->reactor, &s->wheel, &srv->addr, srv->names[i]);
		conns[i]->owner = srv;
		conns[i]->on_up = ups[i];
		conns[i]->on_down = downs[i];
	}
	td_timer_init(&srv->now_timer, now_cb);
	td_timer_init(&srv->poll_timer, poll_cb);
	td_timer_init(&srv->cfg_timer, cfg_timer_cb);
	td_timer_init(&srv->xr_timer, xr_timer_cb);
	td_timer_init(&srv->retry_timer, retry_cb);
	srv->next = rw->servers;
	rw->servers = srv;
	*out = srv;
	return 0;
}

/* ---- the kind-facing API ---------------------------------------------------------- */

int td_rwatch_wait(struct td_shard *s, struct td_rwait *w)
{
	struct td_rwatch *rw = s->rwatch;
	struct td_rw_spec *sp = w->sp;
	if (w->srv)
		return 0;
	if (!rw || rw->stopped)
		return -ECANCELED;
	struct td_rw_server *srv;
	int rc = server_get(rw, sp->conn_id, &srv);
	if (rc)
		return rc;
	w->srv = srv;
	w->req = NULL;
	w->firing = 0;
	for (uint16_t i = 0; i < sp->nnames && !rc; i++) {
		int type = sp->mode == TD_RW_KEY ? T_KEY : sp->mode == TD_RW_LIST ? T_LIST :
			   sp->mode == TD_RW_STREAM ? T_STREAM :
			   i >= sp->nnames - sp->npatterns ? T_PAT : T_CHAN;
		rc = tg_link(srv, &sp->links[i], type, &sp->names[i]);
	}
	if (rc) {
		td_rwatch_unwait(w);
		return rc;
	}
	switch (sp->mode) {
	case TD_RW_KEY: {
		struct td_rw_target *tg = sp->links[0].tg;
		if (sp->equals)
			tg->flags |= F_VALUE;
		ensure(srv, &srv->cmd, &srv->cmd_on);
		ks_update(tg);
		poll_join(tg, sp->interval_ms);
		queue(tg, F_CHECK);
		break;
	}
	case TD_RW_PUBSUB:
		ensure(srv, &srv->sub, &srv->sub_on);
		for (uint16_t i = 0; i < sp->nnames; i++)
			queue(sp->links[i].tg, F_SUBSYNC);
		break;
	case TD_RW_STREAM: {
		struct td_rw_target *tg = sp->links[0].tg;
		w->st = ST_IDLE;
		ensure(srv, &srv->cmd, &srv->cmd_on);
		ensure(srv, &srv->xrd, &srv->xrd_on);
		if (sp->dollar) {
			sp->dollar = 1;
			queue(tg, F_RESOLVE);
		} else {
			cursor_join(tg, sp->after_ms, sp->after_seq);
		}
		break;
	}
	case TD_RW_LIST:
		ensure(srv, &srv->cmd, &srv->cmd_on);
		for (uint16_t i = 0; i < sp->nnames; i++) {
			ks_update(sp->links[i].tg);
			poll_join(sp->links[i].tg, sp->interval_ms);
		}
		w->st = ST_IDLE;
		if (sp->fresh) {
			/* Nothing can be on a new trigger's processing list. */
			sp->fresh = 0;
			for (uint16_t i = 0; i < sp->nnames; i++)
				queue(sp->links[i].tg, F_CHECK);
		} else {
			recover_start(w);
		}
		break;
	}
	return 0;
}

void td_rwatch_unwait(struct td_rwait *w)
{
	struct td_rw_server *srv = w->srv;
	if (!srv)
		return;
	struct td_rw_spec *sp = w->sp;
	if (w->req) {
		/* A pop or a read of the processing list is in flight: its reply
		 * gives back what it finds (the trigger stopped without posting). */
		char p[PKEY_MAX];
		size_t plen = proc_key(w, p, sizeof(p));
		char *copy = malloc(plen + 1);
		if (copy)
			memcpy(copy, p, plen);
		if (w->st == ST_POPPING) {
			struct rw_pop *req = w->req;
			req->slot[w->req_slot].w = NULL;
			req->slot[w->req_slot].orphan_p = copy;
			req->slot[w->req_slot].plen = (uint32_t)plen;
		} else {
			struct rw_rec *rec = w->req;
			rec->w = NULL;
			rec->orphan_p = copy;
			rec->plen = (uint32_t)plen;
		}
		w->req = NULL;
	}
	w->st = ST_IDLE;
	if (sp->mode == TD_RW_STREAM && sp->dollar == 2)
		sp->dollar = 1;
	for (uint16_t i = 0; i < sp->nnames; i++)
		tg_unlink(&sp->links[i]);
	w->srv = NULL;
}

int td_rwatch_new(struct td_shard *s, struct td_rwatch **out)
{
	struct td_rwatch *rw = calloc(1, sizeof(*rw));
	if (!rw)
		return -ENOMEM;
	rw->shard = s;
	msgpack_sbuffer_init(&rw->pl);
	msgpack_sbuffer_init(&rw->spec);
	*out = rw;
	return 0;
}

void td_rwatch_stop(struct td_rwatch *rw)
{
	if (!rw)
		return;
	rw->stopped = true;
	for (struct td_rw_server *srv = rw->servers; srv; srv = srv->next) {
		struct td_wheel *wh = wheel_of(srv);
		td_wheel_cancel(wh, &srv->now_timer);
		td_wheel_cancel(wh, &srv->poll_timer);
		td_wheel_cancel(wh, &srv->cfg_timer);
		td_wheel_cancel(wh, &srv->xr_timer);
		td_wheel_cancel(wh, &srv->retry_timer);
		td_redis_close(&srv->cmd);
		td_redis_close(&srv->sub);
		td_redis_close(&srv->xrd);
	}
}

void td_rwatch_free(struct td_rwatch *rw)
{
	if (!rw)
		return;
	while (rw->servers) {
		struct td_rw_server *srv = rw->servers;
		rw->servers = srv->next;
		server_free(srv);
	}
	msgpack_sbuffer_destroy(&rw->pl);
	msgpack_sbuffer_destroy(&rw->spec);
	free(rw);
}
