/*
 * The sink: every write triggerd makes to Redis goes through one Lua script,
 * "apply", in batches of records. One script call applies up to batch_max
 * records atomically and in order, so the per-call cost of Lua is paid once
 * per batch rather than once per event.
 *
 * Records (four string arguments each, after the op letter):
 *
 *   A entry id spec -     store: if XACK of entry acknowledged it (it was
 *                         still pending), store id -> spec unless id is
 *                         stored (HSETNX semantics): result 1 stored, 0 not.
 *                         If the entry was acknowledged already, this is a
 *                         re-send or a re-read: 1 when the stored spec is
 *                         byte-identical (this submission stored it), else 0.
 *                         An empty entry (the HTTP control API) stores
 *                         without an ack: 1 stored, 2 the identical spec
 *                         was stored already, 0 another spec holds the id.
 *   F id stream event entry
 *                         fire once: if id is stored, XADD stream * id id
 *                         event event, then HDEL id. With an entry (a
 *                         cancel), only while the entry is pending; it is
 *                         acked after. Result 1 posted, 0 not active (fired
 *                         or cancelled already, or the entry was applied).
 *   R id stream event dedupkey
 *                         repeat occurrence: if the trigger is still stored
 *                         and dedupkey does not exist: XADD, then SET dedupkey
 *                         EX ttl.
 *   T id stream event "<ttl>:<dedupkey>"
 *                         the same with its own TTL, for occurrences that
 *                         can only come again as a re-sent record (webhook
 *                         deliveries without an id), so their keys need not
 *                         live for the whole --dedup-ttl.
 *   J entry stream id event
 *                         reject: while entry is pending, XADD then XACK.
 *   S id spec - -         store without an ack (re-storing after Redis lost
 *                         its data, see recover()).
 *
 * Every XADD goes through pcall: one that fails (the events key is not a
 * stream, say) gives result -1 for its record and changes nothing else for
 * it (the trigger stays stored, the entry stays pending), instead of
 * aborting the script half-way with earlier deletes already applied.
 *
 * A batch may be sent with force = 1: F and J then post even when the
 * guard (HDEL / XACK) says the effect was already applied. Only batches
 * that were in flight or buffered when Redis came back *empty* are forced:
 * their effects died with the old data, so posting again is the only way
 * not to lose them (at the price of at-least-once for that window).
 *
 * Every op is idempotent, so a batch whose reply was lost (the connection
 * dropped) is simply sent again, in order, after reconnecting. Records are
 * held until their reply: the sink's bound (max) counts queued, in-flight
 * and retried records together.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "clock.h"
#include "engine_i.h"
#include "triggerd/log.h"

#define MAX_INFLIGHT 64
#define ERROR_PAUSE_MS 500

/*
 * Consecutive records of the same op ('A' or 'F') are applied as a run:
 * one HMGET tells which ids are stored, one HDEL or HSET changes them all,
 * one XACK acknowledges every entry; only the XADDs stay per record. Per
 * record, the result is what applying the records one by one would give:
 * within a run an id counts as taken by its first record only.
 */
static const char apply_lua[] =
	"local trig, sub = KEYS[1], KEYS[2]\n"
	"local group, ttl, force = ARGV[1], ARGV[2], ARGV[3] == '1'\n"
	"local out, k, n, i = {}, 0, #ARGV, 4\n"
	"local function pending(e)\n"
	"  local p = redis.pcall('XPENDING', sub, group, e, e, 1)\n"
	"  return type(p) == 'table' and p.err == nil and #p > 0\n"
	"end\n"
	"local function post(stream, id, ev)\n"
	"  local ok = redis.pcall('XADD', stream, '*', 'id', id, 'event', ev)\n"
	"  return not (type(ok) == 'table' and ok.err)\n"
	"end\n"
	"local function run_end(op)\n"
	"  local j, ids = i, {}\n"
	"  while j <= n and ARGV[j] == op do\n"
	"    ids[#ids + 1] = ARGV[j + (op == 'A' and 2 or 1)]\n"
	"    j = j + 5\n"
	"  end\n"
	"  return j, ids\n"
	"end\n"
	"while i <= n do\n"
	"  local op = ARGV[i]\n"
	"  if op == 'F' then\n"
	"    local j, ids = run_end('F')\n"
	"    local ex = redis.call('HMGET', trig, unpack(ids))\n"
	"    local taken, del = {}, {}\n"
	"    for m = 1, #ids do\n"
	"      local b, id, r = i + (m - 1) * 5, ids[m], 0\n"
	"      local e = ARGV[b + 4]\n"
	"      if (e == '' or force or pending(e)) and (ex[m] or force) and not taken[id] then\n"
	"        if post(ARGV[b + 2], id, ARGV[b + 3]) then\n"
	"          taken[id] = true\n"
	"          del[#del + 1] = id\n"
	"          r = 1\n"
	"        else\n"
	"          r = -1\n"
	"        end\n"
	"      end\n"
	"      if e ~= '' and r >= 0 then redis.pcall('XACK', sub, group, e) end\n"
	"      k = k + 1\n"
	"      out[k] = r\n"
	"    end\n"
	"    if #del > 0 then redis.call('HDEL', trig, unpack(del)) end\n"
	"    i = j\n"
	"  elseif op == 'A' then\n"
	"    local j, ids = run_end('A')\n"
	"    local ex = redis.call('HMGET', trig, unpack(ids))\n"
	"    local taken, pairs_ = {}, {}\n"
	"    for m = 1, #ids do\n"
	"      local b, id, r = i + (m - 1) * 5, ids[m], 0\n"
	"      local spec = ARGV[b + 3]\n"
	"      local e = ARGV[b + 1]\n"
	"      if force or e == '' or redis.pcall('XACK', sub, group, e) == 1 then\n"
	"        if not ex[m] and not taken[id] then\n"
	"          taken[id] = true\n"
	"          pairs_[#pairs_ + 1] = id\n"
	"          pairs_[#pairs_ + 1] = spec\n"
	"          r = 1\n"
	"        elseif e == '' and ex[m] == spec then\n"
	"          r = 2\n"
	"        end\n"
	"      elseif ex[m] == spec then\n"
	"        r = 1\n"
	"      end\n"
	"      k = k + 1\n"
	"      out[k] = r\n"
	"    end\n"
	"    if #pairs_ > 0 then redis.call('HSET', trig, unpack(pairs_)) end\n"
	"    i = j\n"
	"  else\n"
	"    local a, b, c, d, r = ARGV[i+1], ARGV[i+2], ARGV[i+3], ARGV[i+4], 0\n"
	"    if op == 'R' or op == 'T' then\n"
	"      local key, kttl = d, ttl\n"
	"      if op == 'T' then kttl, key = string.match(d, '^(%d+):(.*)$') end\n"
	"      if redis.call('HEXISTS', trig, a) == 1 and\n"
	"         redis.call('SET', key, '1', 'EX', kttl, 'NX') then\n"
	"        if post(b, a, c) then\n"
	"          r = 1\n"
	"        else\n"
	"          redis.call('DEL', key)\n"
	"          r = -1\n"
	"        end\n"
	"      end\n"
	"    elseif op == 'J' then\n"
	"      if force or pending(a) then\n"
	"        if post(b, c, d) then\n"
	"          redis.pcall('XACK', sub, group, a)\n"
	"          r = 1\n"
	"        else\n"
	"          r = -1\n"
	"        end\n"
	"      end\n"
	"    elseif op == 'S' then\n"
	"      r = redis.call('HSETNX', trig, a, b)\n"
	"    else\n"
	"      return redis.error_reply('triggerd apply: unknown op ' .. tostring(op))\n"
	"    end\n"
	"    k = k + 1\n"
	"    out[k] = r\n"
	"    i = i + 5\n"
	"  end\n"
	"end\n"
	"return out\n";

const char *td_sink_script(void)
{
	return apply_lua;
}

struct td_batch {
	struct td_batch *next;
	struct td_sink *sink;
	struct td_rec *head;
	unsigned n;
	bool use_eval;
	bool force;   /* post even where the guard says no: see recover() */
};

struct td_rec *td_rec_new(char op, const void *a, size_t alen, const void *b,
			  size_t blen, const void *c, size_t clen, const void *d,
			  size_t dlen)
{
	struct td_rec *r = malloc(sizeof(*r) + alen + blen + clen + dlen);
	if (!r)
		return NULL;
	r->next = NULL;
	r->done = NULL;
	r->arg = NULL;
	r->op = op;
	r->len[0] = (uint32_t)alen;
	r->len[1] = (uint32_t)blen;
	r->len[2] = (uint32_t)clen;
	r->len[3] = (uint32_t)dlen;
	char *p = r->data;
	if (alen)
		memcpy(p, a, alen);
	p += alen;
	if (blen)
		memcpy(p, b, blen);
	p += blen;
	if (clen)
		memcpy(p, c, clen);
	p += clen;
	if (dlen)
		memcpy(p, d, dlen);
	return r;
}

int td_sink_init(struct td_sink *k, struct td_shard *s, struct td_redis *conn,
		 size_t max, unsigned batch_max)
{
	memset(k, 0, sizeof(*k));
	k->shard = s;
	k->conn = conn;
	k->max = max;
	k->batch_max = batch_max;
	k->argv_cap = 8 + 5 * (size_t)batch_max;
	/* A token per process run; the marker key is per consumer name. */
	uint64_t tok = 0;
	if (getrandom(&tok, sizeof(tok), 0) != sizeof(tok))
		tok = (uint64_t)td_mono_ns() ^ ((uint64_t)getpid() << 32);
	snprintf(k->token, sizeof(k->token), "%016llx", (unsigned long long)tok);
	snprintf(k->marker_key, sizeof(k->marker_key), "%sinstance:%s",
		 s->eng->cfg.prefix, s->eng->cfg.consumer);
	k->argv = calloc(k->argv_cap, sizeof(*k->argv));
	k->argvlen = calloc(k->argv_cap, sizeof(*k->argvlen));
	if (!k->argv || !k->argvlen)
		return -ENOMEM;
	return 0;
}

static void rec_finish(struct td_rec *r, long long result)
{
	if (r->done)
		r->done(r, result, r->arg);
	free(r);
}

static void batch_free_recs(struct td_batch *b, long long result)
{
	struct td_rec *r = b->head;
	while (r) {
		struct td_rec *next = r->next;
		rec_finish(r, result);
		r = next;
	}
	b->head = NULL;
}

void td_sink_finish(struct td_sink *k)
{
	/* Abandoned records lose nothing: a fire not applied leaves its
	 * trigger stored, an add or reject not applied leaves its submission
	 * pending; both are picked up again at the next start. */
	struct td_batch *b = k->retry_head;
	while (b) {
		struct td_batch *next = b->next;
		batch_free_recs(b, -1);
		free(b);
		b = next;
	}
	struct td_rec *r = k->q_head;
	while (r) {
		struct td_rec *next = r->next;
		rec_finish(r, -1);
		r = next;
	}
	k->q_head = k->q_tail = NULL;
	k->retry_head = k->retry_tail = NULL;
	free(k->argv);
	free(k->argvlen);
	k->argv = NULL;
	k->argvlen = NULL;
}

bool td_sink_has_room(const struct td_sink *k)
{
	return k->nrec < k->max;
}

void td_sink_push(struct td_sink *k, struct td_rec *rec)
{
	rec->next = NULL;
	if (k->q_tail)
		k->q_tail->next = rec;
	else
		k->q_head = rec;
	k->q_tail = rec;
	k->nrec++;
	k->nqueued++;
}

void td_sink_kick(struct td_sink *k, size_t at)
{
	if (k->nqueued >= at) {
		td_sink_flush(k);
		td_redis_flush(k->conn);
	}
}

static void retry_later(struct td_sink *k, struct td_batch *b)
{
	b->next = NULL;
	if (k->retry_tail)
		k->retry_tail->next = b;
	else
		k->retry_head = b;
	k->retry_tail = b;
}

static void batch_reply_cb(redisAsyncContext *ac, void *reply, void *priv)
{
	struct td_batch *b = priv;
	struct td_sink *k = b->sink;
	redisReply *rep = reply;
	k->inflight--;
	if (!rep) {
		/* Connection gone: the batch may or may not have been applied;
		 * every op is idempotent, so send it again. */
		retry_later(k, b);
		return;
	}
	if (rep->type == REDIS_REPLY_ERROR) {
		if (strncmp(rep->str, "NOSCRIPT", 8) == 0) {
			b->use_eval = true;
		} else {
			char esc[512];
			k->errors++;
			td_error("redis rejected the apply script; will retry",
				 "\"error\":\"%s\",\"records\":%u",
				 td_log_esc(esc, sizeof(esc), rep->str, rep->len), b->n);
			k->pause_until = td_mono_ms() + ERROR_PAUSE_MS;
		}
		retry_later(k, b);
		return;
	}
	if (rep->type != REDIS_REPLY_ARRAY || rep->elements != b->n) {
		k->errors++;
		td_error("unexpected apply script reply; will retry",
			 "\"type\":%d,\"records\":%u", rep->type, b->n);
		k->pause_until = td_mono_ms() + ERROR_PAUSE_MS;
		retry_later(k, b);
		return;
	}
	struct td_rec *r = b->head;
	for (size_t i = 0; r; i++) {
		struct td_rec *next = r->next;
		long long v = rep->element[i]->type == REDIS_REPLY_INTEGER ?
			rep->element[i]->integer : 0;
		if (v < 0) {
			/* The first two args of F/R and the second of J name the
			 * stream; the id is first for F/R, third for J. */
			const char *a0 = r->data, *a1 = a0 + r->len[0], *a2 = a1 + r->len[1];
			const char *id = r->op == 'J' ? a2 : a0;
			size_t idl = r->op == 'J' ? r->len[2] : r->len[0];
			char e1[300], e2[300];
			k->errors++;
			td_error("event could not be posted; trigger left stored (is the events key a stream?)",
				 "\"op\":\"%c\",\"id\":\"%s\",\"stream\":\"%s\"", r->op,
				 td_log_esc(e1, sizeof(e1), id, idl),
				 td_log_esc(e2, sizeof(e2), a1, r->len[1]));
		} else if (r->op == 'F' || r->op == 'R' || r->op == 'T' || r->op == 'J') {
			if (v == 1)
				k->posted++;
			else
				k->noops++;
		}
		rec_finish(r, v);
		r = next;
	}
	k->nrec -= b->n;
	b->head = NULL;
	k->batches++;
	free(b);
}

static int send_batch(struct td_sink *k, struct td_batch *b)
{
	struct td_engine *e = k->shard->eng;
	char ttl[24];
	size_t n = 0;
	int tl = snprintf(ttl, sizeof(ttl), "%u", e->cfg.dedup_ttl_s);
	if (b->use_eval) {
		k->argv[n] = "EVAL";
		k->argvlen[n++] = 4;
		k->argv[n] = apply_lua;
		k->argvlen[n++] = sizeof(apply_lua) - 1;
	} else {
		k->argv[n] = "EVALSHA";
		k->argvlen[n++] = 7;
		k->argv[n] = k->sha;
		k->argvlen[n++] = 40;
	}
	k->argv[n] = "2";
	k->argvlen[n++] = 1;
	k->argv[n] = e->key_triggers;
	k->argvlen[n++] = strlen(e->key_triggers);
	k->argv[n] = e->key_submit;
	k->argvlen[n++] = strlen(e->key_submit);
	k->argv[n] = "triggerd";
	k->argvlen[n++] = 8;
	k->argv[n] = ttl;
	k->argvlen[n++] = (size_t)tl;
	k->argv[n] = b->force ? "1" : "0";
	k->argvlen[n++] = 1;
	for (struct td_rec *r = b->head; r; r = r->next) {
		k->argv[n] = &r->op;
		k->argvlen[n++] = 1;
		const char *p = r->data;
		for (int i = 0; i < 4; i++) {
			k->argv[n] = p;
			k->argvlen[n++] = r->len[i];
			p += r->len[i];
		}
	}
	int rc = td_redis_cmd(k->conn, batch_reply_cb, b, (int)n, k->argv, k->argvlen);
	if (rc == 0)
		k->inflight++;
	return rc;
}

void td_sink_flush(struct td_sink *k)
{
	if (!k->conn->up || !k->sha[0] || k->checking)
		return;
	if (k->pause_until && td_mono_ms() < k->pause_until)
		return;
	k->pause_until = 0;
	while (k->retry_head && k->inflight < MAX_INFLIGHT) {
		struct td_batch *b = k->retry_head;
		k->retry_head = b->next;
		if (!k->retry_head)
			k->retry_tail = NULL;
		if (send_batch(k, b) != 0) {
			/* Put it back in front; the connection is down. */
			b->next = k->retry_head;
			k->retry_head = b;
			if (!k->retry_tail)
				k->retry_tail = b;
			return;
		}
	}
	if (k->retry_head)
		return; /* order: nothing new overtakes a batch being retried */
	while (k->q_head && k->inflight < MAX_INFLIGHT) {
		struct td_batch *b = malloc(sizeof(*b));
		if (!b)
			return;
		b->sink = k;
		b->use_eval = false;
		b->force = false;
		b->next = NULL;
		b->head = k->q_head;
		b->n = 0;
		struct td_rec *last = NULL, *r = k->q_head;
		while (r && b->n < k->batch_max) {
			last = r;
			r = r->next;
			b->n++;
		}
		last->next = NULL;
		k->q_head = r;
		k->nqueued -= b->n;
		if (!r)
			k->q_tail = NULL;
		if (send_batch(k, b) != 0) {
			retry_later(k, b);
			return;
		}
	}
}

static void script_loaded_cb(redisAsyncContext *ac, void *reply, void *priv)
{
	struct td_sink *k = priv;
	redisReply *rep = reply;
	if (!rep)
		return; /* disconnected; loaded again on reconnect */
	if (rep->type != REDIS_REPLY_STRING || rep->len != 40) {
		char esc[512];
		td_error("SCRIPT LOAD failed; reconnecting to try again", "\"error\":\"%s\"",
			 rep->type == REDIS_REPLY_ERROR ?
			 td_log_esc(esc, sizeof(esc), rep->str, rep->len) : "unexpected reply");
		/* Without the script nothing can be written: start over (with
		 * backoff) rather than wait for a disconnect that may not come. */
		td_redis_reset(k->conn, "SCRIPT LOAD failed");
		return;
	}
	memcpy(k->sha, rep->str, 40);
	k->sha[40] = '\0';
}

/* Cut the queue into batches, marked @force, and return the first. */
static struct td_batch *batch_queue(struct td_sink *k, struct td_rec *r, bool force,
				    struct td_batch **tail)
{
	struct td_batch *first = NULL, *last = NULL;
	while (r) {
		struct td_batch *b = calloc(1, sizeof(*b));
		if (!b)
			break; /* out of memory: the rest stays queued, unforced */
		b->sink = k;
		b->force = force;
		b->head = r;
		struct td_rec *prev = NULL;
		while (r && b->n < k->batch_max) {
			prev = r;
			r = r->next;
			b->n++;
		}
		prev->next = NULL;
		k->nqueued -= b->n;
		if (last)
			last->next = b;
		else
			first = b;
		last = b;
	}
	k->q_head = r;
	if (!r)
		k->q_tail = NULL;
	*tail = last;
	return first;
}

/*
 * Redis came back without triggerd's data (it restarted without
 * persistence, or was flushed). Every guard would now say "not stored":
 * the triggers held here would never post, and buffered firings whose
 * trigger is no longer held would be skipped. So: store again every trigger
 * held in memory, ahead of everything else, and force what was buffered.
 */
static void recover(struct td_sink *k)
{
	struct td_shard *s = k->shard;
	size_t buffered = k->nrec, restored = 0;
	for (struct td_batch *b = k->retry_head; b; b = b->next)
		b->force = true;
	struct td_batch *qtail = NULL;
	struct td_batch *qhead = batch_queue(k, k->q_head, true, &qtail);
	if (qhead) {
		if (k->retry_tail)
			k->retry_tail->next = qhead;
		else
			k->retry_head = qhead;
		k->retry_tail = qtail;
	}
	/* Re-store records, collected on the (now empty) queue, then cut into
	 * batches placed in front of the retries. */
	struct td_rec *keep_head = k->q_head, *keep_tail = k->q_tail;
	k->q_head = k->q_tail = NULL;
	for (size_t i = 0; i < s->table.nbuckets; i++) {
		for (struct td_trigger *t = s->table.buckets[i]; t; t = t->hnext) {
			if (t->state != TD_T_ACTIVE && t->state != TD_T_HELD)
				continue;
			msgpack_packer pk;
			s->scratch.size = 0;
			msgpack_packer_init(&pk, &s->scratch, msgpack_sbuffer_write);
			td_trigger_pack_stored(t, &pk);
			struct td_rec *rec = td_rec_new('S', td_trigger_idp(t), t->id_len,
							s->scratch.data, s->scratch.size,
							"", 0, "", 0);
			if (!rec)
				continue;
			td_sink_push(k, rec);
			restored++;
		}
	}
	struct td_batch *stail = NULL;
	struct td_batch *shead = batch_queue(k, k->q_head, false, &stail);
	if (shead) {
		stail->next = k->retry_head;
		k->retry_head = shead;
		if (!k->retry_tail)
			k->retry_tail = stail;
	}
	if (k->q_head) { /* allocation failed midway: keep the rest queued */
		if (keep_head) {
			k->q_tail->next = keep_head;
			k->q_tail = keep_tail;
		}
	} else {
		k->q_head = keep_head;
		k->q_tail = keep_tail;
	}
	td_warn("redis came back without triggerd's data; re-storing held triggers and "
		"re-posting buffered firings (events in flight may be delivered twice)",
		"\"restored\":%zu,\"buffered\":%zu", restored, buffered);
}

static void marker_set_cb(redisAsyncContext *ac, void *reply, void *priv)
{
	struct td_sink *k = priv;
	redisReply *r = reply;
	if (!r)
		return;
	if (r->type == REDIS_REPLY_ERROR) {
		char esc[300];
		/* Carry on without loss detection rather than stall. */
		td_error("cannot write the instance marker; Redis data loss will not be detected",
			 "\"error\":\"%s\"", td_log_esc(esc, sizeof(esc), r->str, r->len));
		k->checking = false;
		return;
	}
	k->marker_known = true;
	k->checking = false;
}

static void marker_get_cb(redisAsyncContext *ac, void *reply, void *priv)
{
	struct td_sink *k = priv;
	redisReply *r = reply;
	if (!r)
		return; /* disconnected: checked again on reconnect */
	bool same = r->type == REDIS_REPLY_STRING && r->len == strlen(k->token) &&
		    memcmp(r->str, k->token, r->len) == 0;
	if (k->marker_known && !same) {
		if (r->type == REDIS_REPLY_NIL)
			recover(k);
		else
			td_error("instance marker changed: is another triggerd using this --consumer name?",
				 "\"key\":\"%s\"", k->marker_key);
	}
	if (same) {
		k->checking = false;
		return;
	}
	const char *argv[] = {"SET", k->marker_key, k->token};
	size_t argvlen[] = {3, strlen(k->marker_key), strlen(k->token)};
	td_redis_cmd(k->conn, marker_set_cb, k, 3, argv, argvlen);
}

void td_sink_conn_up(struct td_sink *k)
{
	const char *argv[] = {"SCRIPT", "LOAD", apply_lua};
	size_t argvlen[] = {6, 4, sizeof(apply_lua) - 1};
	/* Pipelined ahead of any EVALSHA sent after it on this connection, so
	 * a Redis that restarted with an empty script cache is refilled
	 * before it is asked to run the script. */
	td_redis_cmd(k->conn, script_loaded_cb, k, 3, argv, argvlen);
	/* Nothing is sent until the marker says whether Redis kept our data. */
	k->checking = true;
	const char *get[] = {"GET", k->marker_key};
	size_t getlen[] = {3, strlen(k->marker_key)};
	td_redis_cmd(k->conn, marker_get_cb, k, 2, get, getlen);
}
