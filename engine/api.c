/*
 * The control API (--listen, loopback by default):
 *
 *   POST   /v1/triggers        JSON (or msgpack) spec, validated exactly like
 *                              the Redis intake: 201 stored, 200 the same id
 *                              is active already, 400 naming the field, 409
 *                              a different spec holds the id in Redis
 *   GET    /v1/triggers/{id}   the trigger as held here, else as stored
 *   DELETE /v1/triggers/{id}   cancel (a `cancelled` event is posted)
 *   GET    /v1/triggers?kind=&limit=&cursor=   list what this instance holds
 *   GET    /healthz            the process is serving
 *   GET    /readyz             Redis reachable and stored triggers loaded
 *   GET    /metrics            Prometheus text
 *
 * With --api-token (or TRIGGERD_API_TOKEN), /v1/ and /metrics need
 * `Authorization: Bearer <token>` (compared in constant time); /healthz and
 * /readyz stay open for probes.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "clock.h"
#include "engine_i.h"
#include "httpd.h"
#include "triggerd/codec.h"
#include "triggerd/log.h"

#define LIST_DEFAULT 100
#define LIST_MAX 1000

struct td_api {
	struct td_shard *shard;
	struct td_httpd *srv;
	struct td_buf out;     /* response body scratch */
};

/* ---- small helpers ---------------------------------------------------- */

static void json_reply(struct td_hx *x, int status, const struct td_buf *b)
{
	td_hx_respond(x, status, "application/json", NULL, b->data ? b->data : "", b->len);
}

/* 400 for a spec error "<field>: <reason>": the field named on its own. */
static void spec_error(struct td_api *a, struct td_hx *x, const char *err)
{
	struct td_buf *b = &a->out;
	td_buf_reset(b);
	const char *colon = strstr(err, ": ");
	td_buf_puts(b, "{\"status\":400,\"error\":\"invalid_spec\",\"message\":");
	td_buf_json_str(b, err, strlen(err));
	if (colon) {
		td_buf_puts(b, ",\"field\":");
		td_buf_json_str(b, err, (size_t)(colon - err));
	}
	td_buf_puts(b, "}");
	json_reply(x, 400, b);
}

static int unhex(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Percent-decode @n bytes of @s into @out (@cap bytes). Returns the length
 * or -1 (bad escape, too long). */
static long pct_decode(const char *s, size_t n, char *out, size_t cap)
{
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (c == '%') {
			int hi, lo;
			if (i + 2 >= n || (hi = unhex(s[i + 1])) < 0 ||
			    (lo = unhex(s[i + 2])) < 0)
				return -1;
			c = (char)(hi * 16 + lo);
			i += 2;
		}
		if (o >= cap)
			return -1;
		out[o++] = c;
	}
	return (long)o;
}

/* The value of query parameter @name in @q (not decoded), or NULL. */
static const char *query_param(const char *q, size_t qlen, const char *name, size_t *len)
{
	size_t nl = strlen(name);
	const char *p = q, *end = q + qlen;
	while (p < end) {
		const char *amp = memchr(p, '&', (size_t)(end - p));
		const char *stop = amp ? amp : end;
		if ((size_t)(stop - p) > nl && memcmp(p, name, nl) == 0 && p[nl] == '=') {
			*len = (size_t)(stop - p - (long)nl - 1);
			return p + nl + 1;
		}
		p = stop + 1;
	}
	return NULL;
}

static bool authorized(const struct td_api *a, const struct td_hreq *req)
{
	const char *tok = a->shard->eng->cfg.api_token;
	if (!tok[0])
		return true;
	size_t n;
	const char *v = td_hreq_header(req, "authorization", &n);
	size_t tl = strlen(tok);
	if (!v || n != 7 + tl || strncasecmp(v, "Bearer ", 7) != 0)
		return false;
	return CRYPTO_memcmp(v + 7, tok, tl) == 0;
}

static const char *state_name(const struct td_trigger *t)
{
	switch (t->state) {
	case TD_T_STORING: return "storing";
	case TD_T_ACTIVE: return "active";
	case TD_T_HELD: return "held";
	}
	return "ending";
}

/* ---- POST /v1/triggers ------------------------------------------------- */

struct pending_add {
	struct td_api *a;
	struct td_hx *x;
	struct td_trigger *t;
	char id[TD_ID_MAX];
	size_t id_len;
};

static void added(struct td_api *a, struct td_hx *x, const char *id, size_t id_len,
		  int status, bool created)
{
	struct td_buf *b = &a->out;
	td_buf_reset(b);
	td_buf_puts(b, "{\"id\":");
	td_buf_json_str(b, id, id_len);
	td_buf_printf(b, ",\"status\":\"active\",\"created\":%s}", created ? "true" : "false");
	json_reply(x, status, b);
}

static void stored_cb(struct td_rec *rec, long long result, void *arg)
{
	struct pending_add *p = arg;
	td_trigger_stored(p->t, result);
	if (result == 1 || result == 2) {
		added(p->a, p->x, p->id, p->id_len, result == 1 ? 201 : 200, result == 1);
	} else if (result == 0) {
		td_hx_error(p->x, 409, "conflict",
			    "id: a different trigger with this id is stored already", NULL);
	} else {
		td_hx_error(p->x, 503, "redis_unavailable",
			    "the trigger could not be stored; retry", "Retry-After: 1\r\n");
	}
	free(p);
}

static void create(struct td_api *a, struct td_hx *x)
{
	struct td_shard *s = a->shard;
	const struct td_hreq *req = x->req;
	if (!s->writer.up || !s->intake.loaded) {
		td_hx_error(x, 503, "not_ready", "Redis is not reachable or stored triggers are still loading",
			    "Retry-After: 1\r\n");
		return;
	}
	if (!td_sink_has_room(&s->sink)) {
		td_hx_error(x, 503, "event_sink_full", "the Redis write buffer is full; retry",
			    "Retry-After: 1\r\n");
		return;
	}
	size_t ctl;
	const char *ct = td_hreq_header(req, "content-type", &ctl);
	bool mp = ct && ctl >= 19 && strncasecmp(ct, "application/msgpack", 19) == 0;
	char err[TD_ERR_MAX];
	msgpack_sbuffer conv;
	msgpack_sbuffer_init(&conv);
	const char *bytes = req->body;
	size_t len = req->body_len;
	if (!mp) {
		char jerr[160];
		if (td_json_to_msgpack(req->body, req->body_len, &conv, jerr, sizeof(jerr))) {
			snprintf(err, sizeof(err), "json: %s", jerr);
			msgpack_sbuffer_destroy(&conv);
			spec_error(a, x, err);
			return;
		}
		bytes = conv.data;
		len = conv.size;
	}
	struct td_add ad;
	int rc = td_add_prepare(s, bytes, len, &ad, err, sizeof(err));
	msgpack_sbuffer_destroy(&conv);
	if (rc) {
		spec_error(a, x, err);
		return;
	}
	if (ad.exists) {
		td_trigger_free(ad.t);
		struct td_trigger *t = td_table_get(&s->table, ad.id, ad.id_len);
		if (t && t->state == TD_T_STORING) {
			/* Its store has not answered: it may still be refused. */
			td_hx_error(x, 503, "store_in_progress",
				    "id: a submission of this id is being stored; retry",
				    "Retry-After: 1\r\n");
			return;
		}
		added(a, x, ad.id, ad.id_len, 200, false);
		return;
	}
	struct pending_add *p = calloc(1, sizeof(*p));
	struct td_rec *rec = p ? td_add_record(s, &ad, "") : NULL;
	if (!rec) {
		free(p);
		td_trigger_free(ad.t);
		td_hx_error(x, 503, "out_of_memory", "out of memory", "Retry-After: 1\r\n");
		return;
	}
	p->a = a;
	p->x = x;
	p->t = ad.t;
	memcpy(p->id, ad.id, ad.id_len);
	p->id_len = ad.id_len;
	td_table_put(&s->table, ad.t);
	rec->done = stored_cb;
	rec->arg = p;
	s->intake.accepted++;
	td_sink_push(&s->sink, rec);
}

/* ---- GET / DELETE /v1/triggers/{id} ----------------------------------- */

struct pending_id {
	struct td_notify note;
	struct td_api *a;
	struct td_hx *x;
	bool del;
	char id[TD_ID_MAX];
	size_t id_len;
};

static void render_spec(struct td_buf *b, const char *mp, size_t len)
{
	msgpack_unpacked up;
	msgpack_unpacked_init(&up);
	size_t off = 0, used;
	char err[64];
	if (td_msgpack_check(mp, len, &used, err, sizeof(err)) == 0 &&
	    msgpack_unpack_next(&up, mp, len, &off) == MSGPACK_UNPACK_SUCCESS)
		td_msgpack_to_json(&up.data, b);
	else
		td_buf_puts(b, "null");
	msgpack_unpacked_destroy(&up);
}

static void cancelled_cb(struct td_notify *n, long long result)
{
	struct pending_id *p = td_container_of(n, struct pending_id, note);
	if (result == 1) {
		struct td_buf *b = &p->a->out;
		td_buf_reset(b);
		td_buf_puts(b, "{\"id\":");
		td_buf_json_str(b, p->id, p->id_len);
		td_buf_puts(b, ",\"status\":\"cancelled\"}");
		json_reply(p->x, 200, b);
	} else if (result == 0) {
		td_hx_error(p->x, 404, "not_found", "id: no such trigger (it completed meanwhile)",
			    NULL);
	} else {
		td_hx_error(p->x, 503, "redis_unavailable", "the cancel could not be applied; retry",
			    "Retry-After: 1\r\n");
	}
	free(p);
}

static void hget_cb(redisAsyncContext *ac, void *reply, void *priv)
{
	struct pending_id *p = priv;
	struct td_shard *s = p->a->shard;
	redisReply *r = reply;
	if (!r || r->type == REDIS_REPLY_ERROR) {
		td_hx_error(p->x, 503, "redis_unavailable", "Redis did not answer; retry",
			    "Retry-After: 1\r\n");
		free(p);
		return;
	}
	if (r->type != REDIS_REPLY_STRING) {
		td_hx_error(p->x, 404, "not_found", "id: no such trigger", NULL);
		free(p);
		return;
	}
	if (p->del) {
		/* Stored, but not held here (another instance holds it, or it
		 * is not loaded yet): build it from its stored spec and post
		 * its cancel through the apply script, which removes it from
		 * td:triggers; a holder elsewhere then finds it gone when it
		 * fires. A stream cancel would not do: the consumer group
		 * hands the entry to any one instance, not to the holder. */
		struct td_add ad;
		char err[TD_ERR_MAX];
		int rc = td_add_prepare(s, r->str, r->len, &ad, err, sizeof(err));
		if (rc == 0 && ad.exists) {
			td_trigger_free(ad.t); /* loaded meanwhile: cancel it here */
			struct td_trigger *t = td_table_get(&s->table, p->id, p->id_len);
			rc = t && t->state != TD_T_DEAD ? td_trigger_cancel(t, "", 0) : -ENOENT;
			if (rc == 0) {
				cancelled_cb(&p->note, 1);
				return;
			}
		} else if (rc == 0) {
			p->note.fn = cancelled_cb;
			if (td_trigger_cancel_detached(ad.t, &p->note) == 0)
				return;
			rc = -ENOMEM;
		}
		if (rc == -ENOENT) {
			td_hx_error(p->x, 404, "not_found", "id: no such trigger (it completed meanwhile)",
				    NULL);
			free(p);
			return;
		}
		char msg[TD_ERR_MAX + 64];
		snprintf(msg, sizeof(msg), "the stored spec cannot be read: %s",
			 rc == TD_EINVAL_SPEC ? err : td_strerror(rc));
		td_hx_error(p->x, 500, "unreadable_trigger", msg, NULL);
		free(p);
		return;
	}
	struct td_buf *b = &p->a->out;
	td_buf_reset(b);
	td_buf_puts(b, "{\"id\":");
	td_buf_json_str(b, p->id, p->id_len);
	td_buf_puts(b, ",\"state\":\"stored\",\"held_here\":false,\"spec\":");
	render_spec(b, r->str, r->len);
	td_buf_puts(b, "}");
	json_reply(p->x, 200, b);
	free(p);
}

static void show(struct td_api *a, struct td_hx *x, struct td_trigger *t)
{
	struct td_shard *s = a->shard;
	struct td_buf *b = &a->out;
	td_buf_reset(b);
	td_buf_puts(b, "{\"id\":");
	td_buf_json_str(b, td_trigger_idp(t), t->id_len);
	td_buf_printf(b, ",\"kind\":\"%s\",\"state\":\"%s\",\"held_here\":true,\"repeat\":%s",
		      t->kind->name, state_name(t), t->repeat ? "true" : "false");
	if (t->repeat)
		td_buf_printf(b, ",\"seq\":%u", t->seq);
	if (t->deadline_ms >= 0)
		td_buf_printf(b, ",\"deadline_ms\":%lld", (long long)t->deadline_ms);
	msgpack_packer pk;
	s->scratch.size = 0;
	msgpack_packer_init(&pk, &s->scratch, msgpack_sbuffer_write);
	td_trigger_pack_stored(t, &pk);
	td_buf_puts(b, ",\"spec\":");
	render_spec(b, s->scratch.data, s->scratch.size);
	td_buf_puts(b, "}");
	json_reply(x, 200, b);
}

static void one(struct td_api *a, struct td_hx *x, const char *enc, size_t enc_len, bool del)
{
	struct td_shard *s = a->shard;
	char id[TD_ID_MAX];
	long n = pct_decode(enc, enc_len, id, sizeof(id));
	if (n <= 0) {
		td_hx_error(x, 400, "bad_id", "id: empty, longer than 256 bytes or a bad %-escape",
			    NULL);
		return;
	}
	struct td_trigger *t = td_table_get(&s->table, id, (size_t)n);
	if (t && t->state != TD_T_DEAD) {
		if (!del) {
			show(a, x, t);
			return;
		}
		if (td_trigger_cancel(t, "", 0) != 0) {
			td_hx_error(x, 503, "out_of_memory", "out of memory", "Retry-After: 1\r\n");
			return;
		}
		struct td_buf *b = &a->out;
		td_buf_reset(b);
		td_buf_puts(b, "{\"id\":");
		td_buf_json_str(b, id, (size_t)n);
		td_buf_puts(b, ",\"status\":\"cancelled\"}");
		json_reply(x, 200, b);
		return;
	}
	struct pending_id *p = calloc(1, sizeof(*p));
	if (!p) {
		td_hx_error(x, 503, "out_of_memory", "out of memory", "Retry-After: 1\r\n");
		return;
	}
	p->a = a;
	p->x = x;
	p->del = del;
	memcpy(p->id, id, (size_t)n);
	p->id_len = (size_t)n;
	const char *argv[] = {"HGET", s->eng->key_triggers, p->id};
	size_t argvlen[] = {4, strlen(s->eng->key_triggers), p->id_len};
	if (td_redis_cmd(&s->writer, hget_cb, p, 3, argv, argvlen) != 0) {
		free(p);
		td_hx_error(x, 503, "redis_unavailable", "Redis is not reachable; retry",
			    "Retry-After: 1\r\n");
	}
}

/* ---- GET /v1/triggers ---------------------------------------------------- */

static void list(struct td_api *a, struct td_hx *x)
{
	struct td_shard *s = a->shard;
	const struct td_hreq *req = x->req;
	size_t kl = 0, ll = 0, cl = 0;
	const char *kind = query_param(req->query, req->query_len, "kind", &kl);
	const char *lim = query_param(req->query, req->query_len, "limit", &ll);
	const char *cur = query_param(req->query, req->query_len, "cursor", &cl);
	const struct td_kind *k = NULL;
	if (kind && !(k = td_kind_find(kind, kl))) {
		td_hx_error(x, 400, "bad_query", "kind: not a known trigger kind", NULL);
		return;
	}
	unsigned long limit = LIST_DEFAULT, cursor = 0, skip = 0;
	char num[48];
	if (lim) {
		char *end;
		if (ll == 0 || ll >= sizeof(num)) {
			td_hx_error(x, 400, "bad_query", "limit: expected 1..1000", NULL);
			return;
		}
		memcpy(num, lim, ll);
		num[ll] = '\0';
		limit = strtoul(num, &end, 10);
		if (*end || limit < 1 || limit > LIST_MAX) {
			td_hx_error(x, 400, "bad_query", "limit: expected 1..1000", NULL);
			return;
		}
	}
	if (cur) {
		/* "<bucket>.<position in its chain>", from next_cursor */
		char *end;
		bool ok = cl > 0 && cl < sizeof(num);
		if (ok) {
			memcpy(num, cur, cl);
			num[cl] = '\0';
			cursor = strtoul(num, &end, 10);
			ok = *end == '.' && end > num;
			if (ok) {
				char *p2 = end + 1;
				skip = strtoul(p2, &end, 10);
				ok = !*end && end > p2;
			}
		}
		if (!ok) {
			td_hx_error(x, 400, "bad_query", "cursor: expected the next_cursor of a previous page", NULL);
			return;
		}
	}
	struct td_buf *b = &a->out;
	td_buf_reset(b);
	td_buf_puts(b, "{\"triggers\":[");
	unsigned long n = 0, pos = 0;
	size_t i = cursor;
	bool more = false;
	/* The cursor is a bucket and a position in its chain: exact pages
	 * while the table does not change; after changes a page may repeat
	 * or skip an entry (never loops: the bucket index only grows). */
	for (; i < s->table.nbuckets && !more; i++) {
		pos = 0;
		for (struct td_trigger *t = s->table.buckets[i]; t; t = t->hnext, pos++) {
			if (i == cursor && pos < skip)
				continue;
			if (t->state == TD_T_DEAD || (k && t->kind != k))
				continue;
			if (n == limit) {
				more = true;
				break;
			}
			td_buf_puts(b, n ? ",{\"id\":" : "{\"id\":");
			td_buf_json_str(b, td_trigger_idp(t), t->id_len);
			td_buf_printf(b, ",\"kind\":\"%s\",\"state\":\"%s\"}", t->kind->name,
				      state_name(t));
			n++;
		}
	}
	size_t total = k ? s->table.by_kind[td_kind_index(k)] : s->table.count;
	td_buf_printf(b, "],\"count\":%lu,\"total\":%zu", n, total);
	if (more)
		td_buf_printf(b, ",\"next_cursor\":\"%zu.%lu\"", i - 1, pos);
	td_buf_puts(b, "}");
	json_reply(x, 200, b);
}

/* ---- routing ------------------------------------------------------------- */

static bool is(const struct td_hreq *r, const char *m)
{
	return strcmp(r->method, m) == 0;
}

static void on_request(struct td_hx *x, void *arg)
{
	struct td_api *a = arg;
	struct td_shard *s = a->shard;
	const struct td_hreq *req = x->req;
	const char *p = req->path;
	size_t n = req->path_len;
#define PATH_IS(lit) (n == sizeof(lit) - 1 && memcmp(p, lit, n) == 0)
	if (PATH_IS("/healthz")) {
		if (!is(req, "GET"))
			goto not_allowed_get;
		static const char ok[] = "{\"status\":\"ok\"}";
		td_hx_respond(x, 200, "application/json", NULL, ok, sizeof(ok) - 1);
		return;
	}
	if (PATH_IS("/readyz")) {
		if (!is(req, "GET"))
			goto not_allowed_get;
		const char *why = !s->writer.up ? "redis writer not connected" :
				  !s->reader.up ? "redis reader not connected" :
				  !s->intake.loaded ? "stored triggers still loading" :
				  s->stopping ? "shutting down" : NULL;
		if (why) {
			td_hx_error(x, 503, "not_ready", why, NULL);
			return;
		}
		static const char ok[] = "{\"status\":\"ready\"}";
		td_hx_respond(x, 200, "application/json", NULL, ok, sizeof(ok) - 1);
		return;
	}
	bool v1 = n >= 12 && memcmp(p, "/v1/triggers", 12) == 0 && (n == 12 || p[12] == '/');
	if (!v1 && !PATH_IS("/metrics")) {
		td_hx_error(x, 404, "not_found", "no such endpoint", NULL);
		return;
	}
	if (!authorized(a, req)) {
		td_hx_error(x, 401, "unauthorized", "a valid `Authorization: Bearer <token>` is required",
			    "WWW-Authenticate: Bearer realm=\"triggerd\"\r\n");
		return;
	}
	if (PATH_IS("/metrics")) {
		if (!is(req, "GET"))
			goto not_allowed_get;
		td_buf_reset(&a->out);
		if (td_metrics_render(s, &a->out)) {
			td_hx_error(x, 503, "out_of_memory", "out of memory", NULL);
			return;
		}
		td_hx_respond(x, 200, "text/plain; version=0.0.4; charset=utf-8", NULL,
			      a->out.data, a->out.len);
		return;
	}
	if (n == 12 || (n == 13 && p[12] == '/')) {
		if (is(req, "POST"))
			create(a, x);
		else if (is(req, "GET"))
			list(a, x);
		else
			td_hx_error(x, 405, "method_not_allowed", "use GET or POST",
				    "Allow: GET, POST\r\n");
		return;
	}
	if (is(req, "GET") || is(req, "DELETE")) {
		one(a, x, p + 13, n - 13, is(req, "DELETE"));
		return;
	}
	td_hx_error(x, 405, "method_not_allowed", "use GET or DELETE", "Allow: GET, DELETE\r\n");
	return;
not_allowed_get:
	td_hx_error(x, 405, "method_not_allowed", "use GET", "Allow: GET\r\n");
#undef PATH_IS
}

int td_api_new(struct td_shard *s, struct td_api **out)
{
	const struct td_config *c = &s->eng->cfg;
	*out = NULL;
	if (!c->api_listen[0])
		return 0;
	struct td_api *a = calloc(1, sizeof(*a));
	if (!a)
		return -ENOMEM;
	a->shard = s;
	struct td_httpd_conf conf = TD_HTTPD_CONF_DEFAULT;
	conf.name = "api";
	conf.max_conns = 1024;
	conf.header_timeout_ms = c->http_header_timeout_ms;
	conf.idle_timeout_ms = c->http_idle_timeout_ms;
	conf.bgid = 2;
	int rc = td_httpd_listen(&a->srv, &s->reactor, &s->wheel, c->api_listen, &conf,
				 on_request, a);
	if (rc) {
		free(a);
		return rc;
	}
	*out = a;
	return 0;
}

const struct td_httpd *td_api_server(const struct td_api *a)
{
	return a ? a->srv : NULL;
}

void td_api_stop(struct td_api *a)
{
	if (a)
		td_httpd_stop(a->srv);
}

void td_api_free(struct td_api *a)
{
	if (!a)
		return;
	td_httpd_free(a->srv);
	td_buf_finish(&a->out);
	free(a);
}
