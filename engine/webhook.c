/*
 * The webhook listener and the registry of waiting webhook triggers.
 *
 * POST /hooks/<path>:
 *
 *   1. per-source rate limit (429 + Retry-After), Redis writer up and sink
 *      room (503 + Retry-After otherwise: the sender retries, nothing lost);
 *   2. 404 when nothing waits on the path and it has no retention window;
 *   3. replay check: a delivery id (`webhook-id`, `X-GitHub-Delivery`) seen
 *      within the dedup window (key <prefix>delivery:<id> in Redis, so it
 *      holds across restarts and instances) answers 200 duplicate, fires
 *      nothing;
 *   4. signatures: every waiter that asks for one has it verified (cached
 *      per scheme and secret). When at least one waiter requires a
 *      signature and none verified, the answer is 401 and nothing fires.
 *      Otherwise unsigned waiters and verified ones are candidates;
 *   5. filters (JSON pointer equality on the parsed body) pick who fires;
 *   6. each firing is one sink record; the answer, 202 {"fired": n}, is sent
 *      once Redis has applied them all (503 when one failed), and the
 *      delivery id is then marked seen.
 *
 * Exactly-once per trigger does not rest on step 3: a one-shot trigger
 * fires once (the apply script's HDEL gate), and a repeat trigger's
 * occurrence key is derived from the delivery id (<prefix>seen:<id>:<occ>),
 * so a delivery retried after a crash between firing and marking posts
 * nothing twice. Step 3 keeps a replayed delivery from firing triggers
 * registered after the original one.
 *
 * Retention (--webhook-retain PATH=DURATION): deliveries to such a path are
 * kept in memory for the window and offered to every trigger that starts
 * waiting on the path within it, oldest first, as if they arrived then.
 * A delivery with no waiter is answered 202 {"fired":0,"retained":true}.
 * Kept per instance (not in Redis) and lost on restart; see docs/kinds.md.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "engine_i.h"
#include "httpd.h"
#include "triggerd/codec.h"
#include "triggerd/hooks.h"
#include "triggerd/log.h"
#include "triggerd/ratelimit.h"

#define HOOKS_PREFIX "/hooks/"
#define RETAIN_PER_PATH 64
#define RETAIN_BYTES (16u << 20)
#define SWEEP_MS 1000
#define SIG_CACHE 4
#define BATCH_WAITERS 64
#define NOID_DEDUP_TTL_S 600
/* Send the sink's queue to Redis once this many firings wait, instead of
 * at the end of the loop iteration: Redis then works on one batch while
 * the loop parses the next requests (see docs/benchmarks.md). */
#ifndef KICK_AT
#define KICK_AT 16
#endif

/* Request headers every event payload carries when present. */
static const char *const default_headers[] = {
	"content-type", "user-agent", "x-github-event", "x-github-delivery",
	"x-github-hook-id", "webhook-id", "webhook-timestamp", "x-request-id",
};

/* A delivery's bytes: the live request's, or a retained copy. */
struct view {
	const char *path;
	size_t path_len;
	const struct td_hhdr *hdrs;
	unsigned nhdrs;
	const char *body;
	size_t body_len;
	int64_t received_ms;
	const char *did;               /* delivery id, or NULL */
	size_t did_len;
	uint64_t occurrence;
	/* computed on first use */
	bool parsed, is_json;
	msgpack_sbuffer body_mp;
	msgpack_unpacked body_up;
	bool have_payload;
	msgpack_sbuffer payload;
	unsigned nsig;
	struct {
		const char *secret;
		enum td_sig_scheme scheme;
		int rc;
		char why[128];
	} sig[SIG_CACHE];
};

struct retained {
	struct retained *next;
	uint64_t seq;
	uint64_t expires_tick;
	size_t bytes;
	struct view v;
	char data[];
};

struct td_hook_path {
	struct td_hook_path *hnext;
	struct td_hook_path *replay_next;
	struct td_hook_waiter *waiters;
	unsigned nwaiters;
	unsigned pins;                 /* being iterated: do not free */
	bool replay_queued;
	struct retained *ret_head, *ret_tail;
	unsigned nret;
	size_t len;
	char path[];
};

struct td_hooks {
	struct td_shard *shard;
	struct td_hook_path **buckets;
	size_t nbuckets, count;
	struct td_httpd *srv;
	struct td_timer sweep_timer;
	struct td_timer replay_timer;
	struct td_hook_path *replay_head;
	uint64_t seq;                  /* retained deliveries, 1.. */
	uint64_t last_occ;
	size_t retained_bytes, retained_now, waiters;
	struct td_hooks_stats st;
};

/* ---- registry ------------------------------------------------------- */

static struct td_hook_path **slot(struct td_hooks *h, const char *p, size_t n)
{
	struct td_hook_path **pp = &h->buckets[td_hash_bytes(p, n) & (h->nbuckets - 1)];
	for (; *pp; pp = &(*pp)->hnext)
		if ((*pp)->len == n && memcmp((*pp)->path, p, n) == 0)
			break;
	return pp;
}

static struct td_hook_path *path_get(struct td_hooks *h, const char *p, size_t n)
{
	return *slot(h, p, n);
}

static void grow(struct td_hooks *h)
{
	size_t n = h->nbuckets * 2;
	struct td_hook_path **b = calloc(n, sizeof(*b));
	if (!b)
		return;
	for (size_t i = 0; i < h->nbuckets; i++) {
		for (struct td_hook_path *e = h->buckets[i], *next; e; e = next) {
			next = e->hnext;
			size_t j = td_hash_bytes(e->path, e->len) & (n - 1);
			e->hnext = b[j];
			b[j] = e;
		}
	}
	free(h->buckets);
	h->buckets = b;
	h->nbuckets = n;
}

static struct td_hook_path *path_make(struct td_hooks *h, const char *p, size_t n)
{
	struct td_hook_path **pp = slot(h, p, n);
	if (*pp)
		return *pp;
	struct td_hook_path *e = calloc(1, sizeof(*e) + n + 1);
	if (!e)
		return NULL;
	memcpy(e->path, p, n);
	e->len = n;
	*pp = e;
	if (++h->count > h->nbuckets)
		grow(h);
	return e;
}

static void retained_free(struct td_hooks *h, struct retained *r)
{
	h->retained_bytes -= r->bytes;
	h->retained_now--;
	msgpack_sbuffer_destroy(&r->v.body_mp);
	msgpack_unpacked_destroy(&r->v.body_up);
	msgpack_sbuffer_destroy(&r->v.payload);
	free(r);
}

/* Drop expired retained deliveries of @e (the oldest come first). */
static void prune(struct td_hooks *h, struct td_hook_path *e, uint64_t now)
{
	while (e->ret_head && e->ret_head->expires_tick <= now) {
		struct retained *r = e->ret_head;
		e->ret_head = r->next;
		if (!e->ret_head)
			e->ret_tail = NULL;
		e->nret--;
		retained_free(h, r);
	}
}

static void path_maybe_free(struct td_hooks *h, struct td_hook_path *e)
{
	if (e->waiters || e->ret_head || e->pins || e->replay_queued)
		return;
	struct td_hook_path **pp = slot(h, e->path, e->len);
	if (*pp == e)
		*pp = e->hnext;
	h->count--;
	free(e);
}

static struct td_hooks *hooks_of(struct td_shard *s)
{
	return s->hooks;
}

static void queue_replay(struct td_hooks *h, struct td_hook_path *e)
{
	if (e->replay_queued)
		return;
	e->replay_queued = true;
	e->replay_next = h->replay_head;
	h->replay_head = e;
	if (!td_timer_pending(&h->replay_timer))
		td_wheel_add(&h->shard->wheel, &h->replay_timer, 0);
}

int td_hooks_wait(struct td_shard *s, struct td_hook_waiter *w)
{
	struct td_hooks *h = hooks_of(s);
	if (w->hp)
		return 0;
	struct td_hook_path *e = path_make(h, w->spec->path, w->spec->path_len);
	if (!e)
		return -ENOMEM;
	w->hp = e;
	w->prev = NULL;
	w->next = e->waiters;
	if (e->waiters)
		e->waiters->prev = w;
	e->waiters = w;
	e->nwaiters++;
	h->waiters++;
	/* Retained deliveries are offered from a timer, not from inside
	 * start(): a one-shot trigger must not end inside its own start. */
	if (e->ret_head)
		queue_replay(h, e);
	return 0;
}

void td_hooks_unwait(struct td_hook_waiter *w)
{
	struct td_hook_path *e = w->hp;
	if (!e)
		return;
	struct td_hooks *h = hooks_of(td_trigger_shard(td_trigger_from_state(w)));
	if (w->prev)
		w->prev->next = w->next;
	else
		e->waiters = w->next;
	if (w->next)
		w->next->prev = w->prev;
	w->next = w->prev = NULL;
	w->hp = NULL;
	e->nwaiters--;
	h->waiters--;
	path_maybe_free(h, e);
}

/* ---- matching -------------------------------------------------------- */

static const char *header(const struct view *v, const char *name, size_t *len)
{
	size_t n = strlen(name);
	for (unsigned i = 0; i < v->nhdrs; i++) {
		if (v->hdrs[i].name_len == n && strncasecmp(v->hdrs[i].name, name, n) == 0) {
			*len = v->hdrs[i].value_len;
			return v->hdrs[i].value;
		}
	}
	*len = 0;
	return NULL;
}

static struct td_sig_str sig_str(const struct view *v, const char *name)
{
	size_t n;
	const char *p = header(v, name, &n);
	return (struct td_sig_str){.ptr = p, .len = n};
}

/* 0 when @v carries a valid signature for @sp; else a TD_ESIG_* code and
 * the reason in *why. Cached per (scheme, secret) within the delivery. */
static int verify(struct view *v, const struct td_hook_spec *sp, const char **why)
{
	for (unsigned i = 0; i < v->nsig; i++) {
		if (v->sig[i].secret == sp->secret && v->sig[i].scheme == sp->scheme) {
			*why = v->sig[i].why;
			return v->sig[i].rc;
		}
	}
	struct td_sig_input in = {
		.secret = sp->secret,
		.secret_len = sp->secret_len,
		.body = v->body,
		.body_len = v->body_len,
		.hub_signature_256 = sig_str(v, "x-hub-signature-256"),
		.stripe_signature = sig_str(v, "stripe-signature"),
		.webhook_id = sig_str(v, "webhook-id"),
		.webhook_timestamp = sig_str(v, "webhook-timestamp"),
		.webhook_signature = sig_str(v, "webhook-signature"),
		.now = v->received_ms / 1000,
	};
	char buf[128];
	int rc = td_sig_verify(sp->scheme, &in, buf, sizeof(buf));
	if (v->nsig < SIG_CACHE) {
		unsigned i = v->nsig++;
		v->sig[i].secret = sp->secret;
		v->sig[i].scheme = sp->scheme;
		v->sig[i].rc = rc;
		snprintf(v->sig[i].why, sizeof(v->sig[i].why), "%s", rc ? buf : "");
		*why = v->sig[i].why;
	} else {
		*why = rc ? "signature did not verify" : "";
	}
	return rc;
}

static void parse_body(struct view *v)
{
	if (v->parsed)
		return;
	v->parsed = true;
	char err[128];
	if (v->body_len && td_json_to_msgpack(v->body, v->body_len, &v->body_mp, err,
					      sizeof(err)) == 0) {
		size_t off = 0;
		v->is_json = msgpack_unpack_next(&v->body_up, v->body_mp.data, v->body_mp.size,
						 &off) == MSGPACK_UNPACK_SUCCESS;
	}
}

static bool filter_ok(struct view *v, const struct td_hook_spec *sp)
{
	if (!sp->pointer)
		return true;
	parse_body(v);
	if (!v->is_json)
		return false;
	const msgpack_object *got = td_mp_pointer(&v->body_up.data, sp->pointer);
	if (!got)
		return false;
	msgpack_unpacked want;
	msgpack_unpacked_init(&want);
	size_t off = 0;
	bool ok = msgpack_unpack_next(&want, sp->equals, sp->equals_len, &off) ==
		  MSGPACK_UNPACK_SUCCESS && msgpack_object_equal(*got, want.data);
	msgpack_unpacked_destroy(&want);
	return ok;
}

/* ---- payload ----------------------------------------------------------- */

static void pack_str(msgpack_packer *pk, const char *s, size_t n)
{
	msgpack_pack_str(pk, n);
	msgpack_pack_str_body(pk, s, n);
}

static bool wanted(const struct td_hook_spec *sp, const struct td_hhdr *hd)
{
	for (size_t i = 0; i < TD_ARRAY_LEN(default_headers); i++)
		if (hd->name_len == strlen(default_headers[i]) &&
		    strncasecmp(hd->name, default_headers[i], hd->name_len) == 0)
			return true;
	for (unsigned i = 0; sp && i < sp->nheaders; i++)
		if (hd->name_len == strlen(sp->headers[i]) &&
		    strncasecmp(hd->name, sp->headers[i], hd->name_len) == 0)
			return true;
	return false;
}

/*
 * {"path", "received_at_ms", "delivery_id"?, "headers": {lower-cased name:
 * value}, "body": <JSON value | text>} or, past the payload cap,
 * "body_truncated": true and "body_size" instead of "body".
 */
static void build_payload(struct td_hooks *h, struct view *v, const struct td_hook_spec *sp,
			  msgpack_sbuffer *out)
{
	size_t cap = h->shard->eng->cfg.webhook_payload_max;
	bool fits = v->body_len <= cap;
	if (fits)
		parse_body(v);
	unsigned nh = 0;
	for (unsigned i = 0; i < v->nhdrs; i++)
		nh += wanted(sp, &v->hdrs[i]);
	msgpack_packer pk;
	msgpack_packer_init(&pk, out, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 4 + (v->did != NULL) + !fits);
	pack_str(&pk, "path", 4);
	pack_str(&pk, v->path, v->path_len);
	pack_str(&pk, "received_at_ms", 14);
	msgpack_pack_int64(&pk, v->received_ms);
	if (v->did) {
		pack_str(&pk, "delivery_id", 11);
		pack_str(&pk, v->did, v->did_len);
	}
	pack_str(&pk, "headers", 7);
	msgpack_pack_map(&pk, nh);
	for (unsigned i = 0; i < v->nhdrs; i++) {
		const struct td_hhdr *hd = &v->hdrs[i];
		if (!wanted(sp, hd))
			continue;
		char name[72];
		size_t n = hd->name_len < sizeof(name) ? hd->name_len : sizeof(name);
		for (size_t j = 0; j < n; j++)
			name[j] = (char)tolower((unsigned char)hd->name[j]);
		pack_str(&pk, name, n);
		pack_str(&pk, hd->value, hd->value_len);
	}
	if (!fits) {
		pack_str(&pk, "body_truncated", 14);
		msgpack_pack_true(&pk);
		pack_str(&pk, "body_size", 9);
		msgpack_pack_uint64(&pk, v->body_len);
	} else {
		pack_str(&pk, "body", 4);
		if (v->is_json)
			msgpack_sbuffer_write(out, v->body_mp.data, v->body_mp.size);
		else
			pack_str(&pk, v->body, v->body_len);
	}
}

/* Fire @w's trigger with delivery @v. Returns td_trigger_fire's answer. */
static int fire(struct td_hooks *h, struct view *v, struct td_hook_waiter *w,
		struct td_notify *note)
{
	const struct td_hook_spec *sp = w->spec;
	msgpack_sbuffer own;
	msgpack_sbuffer_init(&own);
	const msgpack_sbuffer *pl;
	if (sp->nheaders) {
		build_payload(h, v, sp, &own);
		pl = &own;
	} else {
		if (!v->have_payload) {
			build_payload(h, v, NULL, &v->payload);
			v->have_payload = true;
		}
		pl = &v->payload;
	}
	struct td_outcome o = {
		.status = TD_SUCCESS,
		.payload = pl->data,
		.payload_len = pl->size,
		.due_at_ms = -1,
		.occurrence = v->occurrence,
		.notify = note,
		/* Without a delivery id an occurrence can only come again as a
		 * re-sent record, within seconds: a short-lived key will do. */
		.dedup_ttl_s = v->did ? 0 : NOID_DEDUP_TTL_S,
	};
	int rc = td_trigger_fire(td_trigger_from_state(w), &o);
	msgpack_sbuffer_destroy(&own);
	return rc;
}

/* ---- retention --------------------------------------------------------- */

static unsigned retain_ms(const struct td_config *c, const char *p, size_t n)
{
	for (unsigned i = 0; i < c->nretain; i++) {
		const char *rp = c->retain[i].path;
		size_t rl = strlen(rp);
		if (rl && rp[rl - 1] == '*') {
			if (n >= rl - 1 && memcmp(p, rp, rl - 1) == 0)
				return c->retain[i].ms;
		} else if (rl == n && memcmp(p, rp, n) == 0) {
			return c->retain[i].ms;
		}
	}
	return 0;
}

/* Keep a copy of @v on @e for @ms. Returns its sequence number, 0 when it
 * could not be kept (over the bounds: the oldest is dropped first). */
static uint64_t retain(struct td_hooks *h, struct td_hook_path *e, const struct view *v,
		       unsigned ms)
{
	uint64_t now = td_mono_ms();
	prune(h, e, now);
	size_t need = sizeof(struct retained) + v->path_len + 1 + v->body_len + 1 +
		      v->nhdrs * sizeof(struct td_hhdr) + v->did_len + 1 + 16;
	for (unsigned i = 0; i < v->nhdrs; i++)
		need += v->hdrs[i].name_len + v->hdrs[i].value_len + 2;
	if (need > RETAIN_BYTES / 4)
		return 0;
	while (e->ret_head && (e->nret >= RETAIN_PER_PATH ||
			       h->retained_bytes + need > RETAIN_BYTES)) {
		struct retained *r = e->ret_head;
		e->ret_head = r->next;
		if (!e->ret_head)
			e->ret_tail = NULL;
		e->nret--;
		retained_free(h, r);
	}
	if (h->retained_bytes + need > RETAIN_BYTES)
		return 0;
	struct retained *r = calloc(1, need);
	if (!r)
		return 0;
	r->bytes = need;
	r->seq = ++h->seq;
	r->expires_tick = now + ms;
	struct view *c = &r->v;
	*c = (struct view){.received_ms = v->received_ms, .occurrence = v->occurrence};
	msgpack_sbuffer_init(&c->body_mp);
	msgpack_unpacked_init(&c->body_up);
	msgpack_sbuffer_init(&c->payload);
	struct td_hhdr *hd = (struct td_hhdr *)(void *)(((uintptr_t)r->data + 7) & ~(uintptr_t)7);
	char *p = (char *)(hd + v->nhdrs);
	for (unsigned i = 0; i < v->nhdrs; i++) {
		hd[i].name = memcpy(p, v->hdrs[i].name, v->hdrs[i].name_len);
		hd[i].name_len = v->hdrs[i].name_len;
		p += hd[i].name_len + 1;
		hd[i].value = memcpy(p, v->hdrs[i].value, v->hdrs[i].value_len);
		hd[i].value_len = v->hdrs[i].value_len;
		p += hd[i].value_len + 1;
	}
	c->hdrs = hd;
	c->nhdrs = v->nhdrs;
	c->path = memcpy(p, v->path, v->path_len);
	c->path_len = v->path_len;
	p += v->path_len + 1;
	c->body = v->body_len ? memcpy(p, v->body, v->body_len) : p;
	c->body_len = v->body_len;
	p += v->body_len + 1;
	if (v->did) {
		c->did = memcpy(p, v->did, v->did_len);
		c->did_len = v->did_len;
	}
	if (e->ret_tail)
		e->ret_tail->next = r;
	else
		e->ret_head = r;
	e->ret_tail = r;
	e->nret++;
	h->retained_bytes += need;
	h->retained_now++;
	h->st.retained++;
	return r->seq;
}

/* Offer retained deliveries to the waiters that have not seen them. */
static void replay_path(struct td_hooks *h, struct td_hook_path *e)
{
	prune(h, e, td_mono_ms());
	e->pins++;
	for (struct retained *r = e->ret_head; r; r = r->next) {
		struct td_hook_waiter *w = e->waiters, *next;
		for (; w; w = next) {
			next = w->next;
			if (w->seen >= r->seq)
				continue;
			w->seen = r->seq;
			const char *why;
			if (w->spec->sig && verify(&r->v, w->spec, &why) != 0)
				continue;
			if (!filter_ok(&r->v, w->spec))
				continue;
			/* One-shot: the trigger ends here and leaves the list;
			 * @next is still valid (only @w was unlinked). */
			int rc = fire(h, &r->v, w, NULL);
			if (rc == 0)
				h->st.replayed++;
			else if (rc == TD_EFULL)
				w->seen = r->seq - 1; /* held: offered again on restart */
		}
	}
	e->pins--;
}

static void replay_cb(struct td_timer *t, uint64_t now)
{
	struct td_hooks *h = td_container_of(t, struct td_hooks, replay_timer);
	while (h->replay_head) {
		struct td_hook_path *e = h->replay_head;
		h->replay_head = e->replay_next;
		e->replay_queued = false;
		replay_path(h, e);
		path_maybe_free(h, e);
	}
}

static void sweep_cb(struct td_timer *t, uint64_t now)
{
	struct td_hooks *h = td_container_of(t, struct td_hooks, sweep_timer);
	if (h->retained_now) {
		for (size_t i = 0; i < h->nbuckets; i++) {
			for (struct td_hook_path *e = h->buckets[i], *next; e; e = next) {
				next = e->hnext;
				if (e->ret_head) {
					prune(h, e, now);
					path_maybe_free(h, e);
				}
			}
		}
	}
	struct td_ratelimit *rl = h->shard->eng->cfg.webhook_rl;
	if (rl)
		td_ratelimit_sweep(rl, (uint64_t)td_mono_ns());
	td_wheel_add(&h->shard->wheel, t, now + SWEEP_MS);
}

/* ---- one live delivery --------------------------------------------------- */

struct live {
	struct td_notify note;
	struct td_hooks *h;
	struct td_hx *x;
	struct view v;
	unsigned outstanding, posted, dups, failed, held, matched;
	bool retained;
	char key[TD_ID_MAX + 200];     /* <prefix>delivery:<id> */
	size_t key_len;
};

static void live_free(struct live *l)
{
	msgpack_sbuffer_destroy(&l->v.body_mp);
	msgpack_unpacked_destroy(&l->v.body_up);
	msgpack_sbuffer_destroy(&l->v.payload);
	free(l);
}

static void ignore_reply(redisAsyncContext *ac, void *reply, void *priv)
{
}

static void live_finish(struct live *l)
{
	struct td_hooks *h = l->h;
	struct td_shard *s = h->shard;
	if (l->failed || l->held) {
		td_hx_error(l->x, 503, "event_not_stored",
			    "an event could not be written to Redis; retry the delivery",
			    "Retry-After: 1\r\n");
		live_free(l);
		return;
	}
	/* Only a delivery that fired something is marked: one that was only
	 * retained was checked against no signature yet, and marking it
	 * would let anyone who guesses an id suppress the real delivery. */
	if (l->key_len && l->posted) {
		char ttl[24];
		snprintf(ttl, sizeof(ttl), "%u", s->eng->cfg.dedup_ttl_s);
		const char *argv[] = {"SET", l->key, "1", "EX", ttl, "NX"};
		size_t argvlen[] = {3, l->key_len, 1, 2, strlen(ttl), 2};
		td_redis_cmd(&s->writer, ignore_reply, NULL, 6, argv, argvlen);
	}
	h->st.fired += l->posted;
	char body[160];
	int n = snprintf(body, sizeof(body), "{\"fired\":%u,\"matched\":%u,\"retained\":%s}",
			 l->posted, l->matched, l->retained ? "true" : "false");
	td_hx_respond(l->x, 202, "application/json", NULL, body, (size_t)n);
	live_free(l);
}

static void live_note(struct td_notify *n, long long result)
{
	struct live *l = td_container_of(n, struct live, note);
	if (result == 1)
		l->posted++;
	else if (result == 0)
		l->dups++;
	else
		l->failed++;
	if (--l->outstanding == 0)
		live_finish(l);
}

static void live_go(struct live *l)
{
	struct td_hooks *h = l->h;
	struct td_shard *s = h->shard;
	struct td_hook_path *e = path_get(h, l->v.path, l->v.path_len);
	unsigned keep = retain_ms(&s->eng->cfg, l->v.path, l->v.path_len);
	if ((!e || !e->waiters) && !keep) {
		h->st.no_waiter++;
		td_hx_error(l->x, 404, "no_waiter", "no trigger is waiting on this path", NULL);
		live_free(l);
		return;
	}
	struct td_hook_waiter *stack[BATCH_WAITERS], **ws = stack;
	unsigned n = 0, nw = e ? e->nwaiters : 0;
	if (nw > BATCH_WAITERS && !(ws = malloc(nw * sizeof(*ws)))) {
		td_hx_error(l->x, 503, "out_of_memory", "out of memory", "Retry-After: 1\r\n");
		live_free(l);
		return;
	}
	/* Signatures first: if some waiter needs one and none verified, the
	 * delivery is refused as a whole. */
	unsigned sig_needed = 0, sig_ok = 0;
	const char *why = NULL;
	for (struct td_hook_waiter *w = e ? e->waiters : NULL; w; w = w->next) {
		if (w->spec->sig) {
			const char *wy;
			sig_needed++;
			if (verify(&l->v, w->spec, &wy) == 0)
				sig_ok++;
			else if (!why)
				why = wy;
		}
	}
	if (sig_needed && !sig_ok) {
		h->st.unauthorized++;
		char msg[200];
		snprintf(msg, sizeof(msg), "signature check failed: %s", why ? why : "");
		td_hx_error(l->x, 401, "bad_signature", msg, NULL);
		if (ws != stack)
			free(ws);
		live_free(l);
		return;
	}
	for (struct td_hook_waiter *w = e ? e->waiters : NULL; w; w = w->next) {
		const char *wy;
		if (w->spec->sig && verify(&l->v, w->spec, &wy) != 0)
			continue;
		if (filter_ok(&l->v, w->spec))
			ws[n++] = w;
	}
	l->matched = n;
	if (e && e->replay_queued)
		replay_path(h, e); /* older retained deliveries go first */
	if (keep) {
		struct td_hook_path *re = e ? e : path_make(h, l->v.path, l->v.path_len);
		uint64_t seq = re ? retain(h, re, &l->v, keep) : 0;
		l->retained = seq != 0;
		if (re && !seq)
			path_maybe_free(h, re); /* not kept: do not leave it empty */
		/* Those waiting now have had their chance at it. */
		for (struct td_hook_waiter *w = re ? re->waiters : NULL; w && seq; w = w->next)
			w->seen = seq;
		e = re;
	}
	/* Firing a one-shot trigger ends it (it leaves the path's list), so
	 * the list was copied first. */
	for (unsigned i = 0; i < n; i++) {
		int rc = fire(h, &l->v, ws[i], &l->note);
		if (rc == 0)
			l->outstanding++;
		else
			l->held++;
	}
	if (ws != stack)
		free(ws);
	if (l->outstanding == 0)
		live_finish(l);
	else
		td_sink_kick(&s->sink, KICK_AT);
}

static void exists_cb(redisAsyncContext *ac, void *reply, void *priv)
{
	struct live *l = priv;
	redisReply *r = reply;
	if (!r || r->type != REDIS_REPLY_INTEGER) {
		td_hx_error(l->x, 503, "redis_unavailable",
			    "the replay check could not reach Redis; retry the delivery",
			    "Retry-After: 1\r\n");
		live_free(l);
		return;
	}
	if (r->integer == 1) {
		l->h->st.duplicates++;
		static const char dup[] = "{\"fired\":0,\"duplicate\":true}";
		td_hx_respond(l->x, 200, "application/json", NULL, dup, sizeof(dup) - 1);
		live_free(l);
		return;
	}
	live_go(l);
}

static uint64_t occurrence_of(struct td_hooks *h, const char *did, size_t n)
{
	if (did)
		return td_hash_bytes(did, n) | 1; /* same id, same key, anywhere */
	/* No id: unique per delivery, increasing across restarts. */
	uint64_t us = (uint64_t)(td_wall_ns() / 1000);
	h->last_occ = us > h->last_occ ? us : h->last_occ + 1;
	return h->last_occ;
}

static bool rate_limited(struct td_hooks *h, struct td_hx *x)
{
	struct td_ratelimit *rl = h->shard->eng->cfg.webhook_rl;
	if (!rl || !x->peer[0])
		return false;
	uint64_t now = (uint64_t)td_mono_ns(), retry = 0;
	int rc = td_ratelimit_acquire(rl, x->peer, strlen(x->peer), now, &retry);
	if (rc == 0) {
		td_ratelimit_release(rl, x->peer, strlen(x->peer));
		return false;
	}
	if (rc != TD_EFULL)
		return false; /* out of memory for key state: let it through */
	unsigned secs = (unsigned)((retry - now + 999999999) / 1000000000);
	char extra[48], msg[128];
	snprintf(extra, sizeof(extra), "Retry-After: %u\r\n", secs ? secs : 1);
	snprintf(msg, sizeof(msg), "too many deliveries from %s; retry after %u s", x->peer,
		 secs ? secs : 1);
	h->st.rate_limited++;
	td_hx_error(x, 429, "rate_limited", msg, extra);
	return true;
}

static void on_request(struct td_hx *x, void *arg)
{
	struct td_hooks *h = arg;
	struct td_shard *s = h->shard;
	const struct td_hreq *req = x->req;
	size_t pre = sizeof(HOOKS_PREFIX) - 1;
	if (req->path_len <= pre || memcmp(req->path, HOOKS_PREFIX, pre) != 0 ||
	    req->path_len - pre > TD_HOOK_PATH_MAX) {
		td_hx_error(x, 404, "not_found", "webhooks are received at POST /hooks/<path>",
			    NULL);
		return;
	}
	if (strcmp(req->method, "POST") != 0) {
		td_hx_error(x, 405, "method_not_allowed", "use POST", "Allow: POST\r\n");
		return;
	}
	h->st.deliveries++;
	if (rate_limited(h, x))
		return;
	if (!s->writer.up) {
		td_hx_error(x, 503, "redis_unavailable", "Redis is not reachable; retry later",
			    "Retry-After: 5\r\n");
		return;
	}
	if (!td_sink_has_room(&s->sink)) {
		td_hx_error(x, 503, "event_sink_full", "the event sink is full; retry later",
			    "Retry-After: 1\r\n");
		return;
	}
	struct live *l = calloc(1, sizeof(*l));
	if (!l) {
		td_hx_error(x, 503, "out_of_memory", "out of memory", "Retry-After: 1\r\n");
		return;
	}
	l->note.fn = live_note;
	l->h = h;
	l->x = x;
	struct view *v = &l->v;
	v->path = req->path + pre;
	v->path_len = req->path_len - pre;
	v->hdrs = req->hdrs;
	v->nhdrs = req->nhdrs;
	v->body = req->body;
	v->body_len = req->body_len;
	v->received_ms = td_wall_ms();
	msgpack_sbuffer_init(&v->body_mp);
	msgpack_unpacked_init(&v->body_up);
	msgpack_sbuffer_init(&v->payload);
	size_t dl;
	const char *did = header(v, "webhook-id", &dl);
	if (!did)
		did = header(v, "x-github-delivery", &dl);
	if (did && dl > 0 && dl <= 128) {
		v->did = did;
		v->did_len = dl;
	}
	v->occurrence = occurrence_of(h, v->did, v->did_len);
	if (!v->did) {
		live_go(l);
		return;
	}
	/* Scoped by path: an id seen on one path says nothing of another. */
	int kl = snprintf(l->key, sizeof(l->key), "%sdelivery:%.*s:%.*s", s->eng->cfg.prefix,
			  (int)v->path_len, v->path, (int)v->did_len, v->did);
	l->key_len = (size_t)kl;
	const char *argv[] = {"EXISTS", l->key};
	size_t argvlen[] = {6, l->key_len};
	if (td_redis_cmd(&s->writer, exists_cb, l, 2, argv, argvlen) != 0) {
		td_hx_error(x, 503, "redis_unavailable", "Redis is not reachable; retry later",
			    "Retry-After: 5\r\n");
		live_free(l);
	}
}

/* ---- lifetime -------------------------------------------------------- */

int td_hooks_new(struct td_shard *s, struct td_hooks **out)
{
	struct td_hooks *h = calloc(1, sizeof(*h));
	if (!h)
		return -ENOMEM;
	h->shard = s;
	h->nbuckets = 64;
	if (!(h->buckets = calloc(h->nbuckets, sizeof(*h->buckets)))) {
		free(h);
		return -ENOMEM;
	}
	td_timer_init(&h->sweep_timer, sweep_cb);
	td_timer_init(&h->replay_timer, replay_cb);
	td_wheel_add(&s->wheel, &h->sweep_timer, td_mono_ms() + SWEEP_MS);
	*out = h;
	return 0;
}

int td_hooks_listen(struct td_hooks *h)
{
	const struct td_config *c = &h->shard->eng->cfg;
	if (!c->webhook_listen[0])
		return 0;
	struct td_httpd_conf conf = TD_HTTPD_CONF_DEFAULT;
	conf.name = "webhook";
	conf.lim.max_body = c->webhook_body_max;
	conf.max_conns = c->webhook_max_conns;
	conf.header_timeout_ms = c->http_header_timeout_ms;
	conf.idle_timeout_ms = c->http_idle_timeout_ms;
	conf.bgid = 1;
	return td_httpd_listen(&h->srv, &h->shard->reactor, &h->shard->wheel,
			       c->webhook_listen, &conf, on_request, h);
}

void td_hooks_stop(struct td_hooks *h)
{
	if (h)
		td_httpd_stop(h->srv);
}

const struct td_httpd *td_hooks_server(const struct td_hooks *h)
{
	return h ? h->srv : NULL;
}

void td_hooks_get_stats(const struct td_hooks *h, struct td_hooks_stats *out)
{
	*out = h->st;
	out->waiters = h->waiters;
	out->retained_now = h->retained_now;
	out->retained_bytes = h->retained_bytes;
}

void td_hooks_free(struct td_hooks *h)
{
	if (!h)
		return;
	td_httpd_free(h->srv);
	for (size_t i = 0; i < h->nbuckets; i++) {
		for (struct td_hook_path *e = h->buckets[i], *next; e; e = next) {
			next = e->hnext;
			while (e->ret_head) {
				struct retained *r = e->ret_head;
				e->ret_head = r->next;
				retained_free(h, r);
			}
			for (struct td_hook_waiter *w = e->waiters; w; w = w->next)
				w->hp = NULL;
			free(e);
		}
	}
	free(h->buckets);
	free(h);
}
