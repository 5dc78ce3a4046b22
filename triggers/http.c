/*
 * Kind "http": poll a URL until it answers a condition.
 *
 * args:
 *   url                 http(s) URL, or:
 *   conn + endpoint     a named connection (AIRFLOW_CONN_<ID> or the
 *                       connections file) and a path joined to its base URL;
 *                       its login/password (basic auth) and extra (headers)
 *                       are applied per request, never stored
 *   method              GET (default), POST, PUT, PATCH, DELETE, HEAD
 *   headers             map of string -> string
 *   body                string, sent with the request
 *   interval_ms         between polls (default 5000, >= 100), +-10% jitter
 *   request_timeout_ms  per request (default 10000)
 *   success_status      statuses counted as success (default "2xx"); an
 *                       array of numbers and classes like "3xx"
 *   failure_status      statuses that end the trigger (failure)
 *   retry_status        statuses that just poll again (before failure)
 *   success_payload     any value: the success event's payload instead of
 *                       the response
 *   body_regex          PCRE2 pattern the body must match (with success)
 *   json_pointer+equals RFC 6901 pointer into the JSON body, and the value
 *                       it must equal (any JSON/msgpack value)
 *   max_body            payload body cap in bytes (default 65536)
 *
 * Transport errors and 5xx (not listed as success) are retried with
 * exponential backoff: interval * 2^(n-1), capped at 5 minutes.
 *
 * Success payload: {"status", "headers": {content-type, etag,
 * last-modified, location: those present}, "body", "truncated"}.
 *
 * The validated args are stored verbatim (nothing in them is relative).
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "clock.h"
#include "triggerd/codec.h"
#include "triggerd/connections.h"
#include "triggerd/http_client.h"
#include "triggerd/kind.h"
#include "triggerd/log.h"
#include "triggerd/ratelimit.h"
#include "triggerd/ssrf.h"
#include "triggerd/triggerd.h"

#define DEFAULT_INTERVAL_MS 5000
#define MIN_INTERVAL_MS 100
#define DEFAULT_TIMEOUT_MS 10000
#define DEFAULT_MAX_BODY 65536
#define MAX_MAX_BODY (16 * 1024 * 1024)
#define BACKOFF_MAX_MS 300000
#define REGEX_MATCH_LIMIT 1000000 /* bounds backtracking on hostile input */

struct conf {
	char *args_mp;             /* the validated args, stored verbatim */
	size_t args_len;
	char *url;                 /* given, or the connection's base + endpoint */
	char *conn_id;             /* credentials and headers come from it */
	char *host;                /* for the connect-time SSRF check */
	char rl_key[TD_RL_KEY_MAX + 1]; /* scheme+host+port */
	char *method;
	struct curl_slist *headers;
	char *body;
	size_t body_len;
	int64_t interval_ms;
	long timeout_ms;
	size_t max_body;
	uint16_t *ok_status, *fail_status, *retry_status;
	uint32_t n_ok, n_fail, n_retry;
	uint8_t ok_class, fail_class, retry_class; /* bit c: "<c>xx" */
	char *payload_mp;          /* success_payload, msgpack; NULL: response */
	size_t payload_len;
	pcre2_code *re;
	pcre2_match_context *mctx;
	char *pointer;
	char *equals_mp;           /* msgpack of the expected value */
	size_t equals_len;
};

struct poll;

struct http_state {
	struct td_timer node;      /* next poll / backoff / rate limit */
	struct td_rl_waiter waiter; /* queued for a per-host in-flight slot */
	struct conf *conf;
	struct poll *poll;         /* in flight, NULL when idle */
	uint32_t failures;         /* consecutive transport errors / 5xx */
	uint32_t polls;
	int64_t last_occurrence;   /* repeat: last occurrence key (wall ms) */
};

/* A request in flight; outlives its trigger if the trigger is stopped
 * meanwhile (it is cancelled then, and freed at once). */
struct poll {
	struct td_http_req req;
	struct td_trigger *t;
	struct curl_slist *headers; /* connection headers + the spec's */
	const struct td_ssrf *ssrf;
	char denied[TD_SSRF_WHY_MAX];   /* set when the connect was refused */
};

/* @o packed into a new buffer the caller owns (free). */
static char *pack_copy(const msgpack_object *o, size_t *len)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_object(&pk, *o);
	*len = sb.size;
	return td_sbuffer_shrink(&sb);
}

static char *dup_str(const msgpack_object *o)
{
	char *p = malloc(o->via.str.size + 1);
	if (p) {
		memcpy(p, o->via.str.ptr, o->via.str.size);
		p[o->via.str.size] = '\0';
	}
	return p;
}

static void conf_free(struct conf *c)
{
	if (!c)
		return;
	free(c->args_mp);
	free(c->url);
	free(c->conn_id);
	free(c->host);
	free(c->method);
	curl_slist_free_all(c->headers);
	free(c->body);
	free(c->ok_status);
	free(c->fail_status);
	free(c->retry_status);
	free(c->payload_mp);
	pcre2_code_free(c->re);
	pcre2_match_context_free(c->mctx);
	free(c->pointer);
	free(c->equals_mp);
	free(c);
}

/* An array of statuses (100..599) and classes ("1xx".."5xx"). */
static int get_statuses(const msgpack_object *v, const char *name, uint16_t **out,
			uint32_t *n, uint8_t *classes, char *err, size_t errlen)
{
	if (v->type != MSGPACK_OBJECT_ARRAY || v->via.array.size == 0 ||
	    v->via.array.size > 100)
		return td_spec_err(err, errlen, "args.%s: expected an array of 1..100 HTTP statuses", name);
	*out = calloc(v->via.array.size, sizeof(**out));
	if (!*out)
		return -ENOMEM;
	*n = 0;
	for (uint32_t i = 0; i < v->via.array.size; i++) {
		const msgpack_object *e = &v->via.array.ptr[i];
		if (e->type == MSGPACK_OBJECT_STR && e->via.str.size == 3 &&
		    e->via.str.ptr[0] >= '1' && e->via.str.ptr[0] <= '5' &&
		    e->via.str.ptr[1] == 'x' && e->via.str.ptr[2] == 'x') {
			*classes |= (uint8_t)(1u << (e->via.str.ptr[0] - '0'));
			continue;
		}
		if (e->type != MSGPACK_OBJECT_POSITIVE_INTEGER || e->via.u64 < 100 ||
		    e->via.u64 > 599)
			return td_spec_err(err, errlen, "args.%s: entries must be statuses 100..599 or \"1xx\"..\"5xx\"", name);
		(*out)[(*n)++] = (uint16_t)e->via.u64;
	}
	return 0;
}

static int get_ms(const msgpack_object *v, const char *name, int64_t lo, int64_t hi,
		  int64_t *out, char *err, size_t errlen)
{
	if (v->type != MSGPACK_OBJECT_POSITIVE_INTEGER || v->via.u64 < (uint64_t)lo ||
	    v->via.u64 > (uint64_t)hi) {
		snprintf(err, errlen, "args.%s: expected an integer %lld..%lld", name,
			 (long long)lo, (long long)hi);
		return TD_EINVAL_SPEC;
	}
	*out = (int64_t)v->via.u64;
	return 0;
}

/* Validate c->url and derive the host and the rate-limit key from it. */
static int check_url(struct conf *c, const char *field, char *err, size_t errlen)
{
	if (strncasecmp(c->url, "http://", 7) && strncasecmp(c->url, "https://", 8))
		return td_spec_err(err, errlen, "args.%s: only http:// and https:// URLs", field);
	CURLU *u = curl_url();
	CURLUcode uc = u ? curl_url_set(u, CURLUPART_URL, c->url, 0) : CURLUE_OUT_OF_MEMORY;
	if (uc == CURLUE_OK) {
		char *h = NULL;
		uc = curl_url_get(u, CURLUPART_HOST, &h, 0);
		if (uc == CURLUE_OK && !(c->host = strdup(h)))
			uc = CURLUE_OUT_OF_MEMORY;
		curl_free(h);
	}
	curl_url_cleanup(u);
	if (uc != CURLUE_OK)
		return td_spec_err(err, errlen, "args.%s: %s", field, curl_url_strerror(uc));
	if (td_ratelimit_key_from_url(c->url, c->rl_key, sizeof(c->rl_key)) != 0)
		return td_spec_err(err, errlen, "args.%s: cannot derive a host key", field);
	return 0;
}

static int parse_conf(struct conf *c, const msgpack_object *args, const struct td_conns *conns,
		      char *err, size_t errlen)
{
	const msgpack_object *equals = NULL, *endpoint = NULL;
	int rc;
	int64_t v;
	c->interval_ms = DEFAULT_INTERVAL_MS;
	c->timeout_ms = DEFAULT_TIMEOUT_MS;
	c->max_body = DEFAULT_MAX_BODY;
	if (args->type != MSGPACK_OBJECT_MAP)
		return td_spec_err(err, errlen, "args: required: %s", "url");
	/* A key given twice would leak (or silently override) what the
	 * first one set: refuse it. */
	for (uint32_t i = 0; i < args->via.map.size; i++)
		for (uint32_t j = 0; j < i; j++) {
			const msgpack_object *a = &args->via.map.ptr[i].key;
			const msgpack_object *b = &args->via.map.ptr[j].key;
			if (a->type == MSGPACK_OBJECT_STR && msgpack_object_equal(*a, *b))
				return td_spec_err(err, errlen, "args.%.*s: given twice",
					   (int)(a->via.str.size < 64 ? a->via.str.size : 64),
					   a->via.str.ptr);
		}
	for (uint32_t i = 0; i < args->via.map.size; i++) {
		const msgpack_object *k = &args->via.map.ptr[i].key;
		const msgpack_object *val = &args->via.map.ptr[i].val;
		if (td_mp_str_is(k, "conn")) {
			if (val->type != MSGPACK_OBJECT_STR || val->via.str.size == 0 ||
			    val->via.str.size > TD_CONN_ID_MAX)
				return td_spec_err(err, errlen, "args.%s: expected a connection id", "conn");
			if (!(c->conn_id = dup_str(val)))
				return -ENOMEM;
		} else if (td_mp_str_is(k, "endpoint")) {
			if (val->type != MSGPACK_OBJECT_STR || val->via.str.size > 8192)
				return td_spec_err(err, errlen, "args.%s: expected a string", "endpoint");
			endpoint = val;
		} else if (td_mp_str_is(k, "url")) {
			if (val->type != MSGPACK_OBJECT_STR || val->via.str.size == 0 ||
			    val->via.str.size > 8192)
				return td_spec_err(err, errlen, "args.%s: expected a URL string", "url");
			if (!(c->url = dup_str(val)))
				return -ENOMEM;
		} else if (td_mp_str_is(k, "method")) {
			static const char *const ok[] = {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"};
			bool found = false;
			if (val->type == MSGPACK_OBJECT_STR)
				for (size_t j = 0; j < TD_ARRAY_LEN(ok); j++)
					found |= val->via.str.size == strlen(ok[j]) &&
						 !strncasecmp(val->via.str.ptr, ok[j], strlen(ok[j]));
			if (!found)
				return td_spec_err(err, errlen, "args.%s: expected GET, POST, PUT, PATCH, DELETE or HEAD", "method");
			if (!(c->method = dup_str(val)))
				return -ENOMEM;
			for (char *p = c->method; *p; p++)
				*p = (char)(*p >= 'a' && *p <= 'z' ? *p - 32 : *p);
		} else if (td_mp_str_is(k, "headers")) {
			if (val->type != MSGPACK_OBJECT_MAP)
				return td_spec_err(err, errlen, "args.%s: expected a map of strings", "headers");
			for (uint32_t j = 0; j < val->via.map.size; j++) {
				const msgpack_object *hk = &val->via.map.ptr[j].key;
				const msgpack_object *hv = &val->via.map.ptr[j].val;
				if (hk->type != MSGPACK_OBJECT_STR || hv->type != MSGPACK_OBJECT_STR ||
				    hk->via.str.size == 0 || hk->via.str.size + hv->via.str.size > 8000)
					return td_spec_err(err, errlen, "args.%s: expected a map of strings", "headers");
				char line[8200];
				snprintf(line, sizeof(line), "%.*s: %.*s", (int)hk->via.str.size,
					 hk->via.str.ptr, (int)hv->via.str.size, hv->via.str.ptr);
				if (strpbrk(line, "\r\n"))
					return td_spec_err(err, errlen, "args.%s: no CR or LF in header names or values", "headers");
				struct curl_slist *l = curl_slist_append(c->headers, line);
				if (!l)
					return -ENOMEM;
				c->headers = l;
			}
		} else if (td_mp_str_is(k, "body")) {
			if (val->type != MSGPACK_OBJECT_STR)
				return td_spec_err(err, errlen, "args.%s: expected a string", "body");
			if (!(c->body = dup_str(val)))
				return -ENOMEM;
			c->body_len = val->via.str.size;
		} else if (td_mp_str_is(k, "interval_ms")) {
			if ((rc = get_ms(val, "interval_ms", MIN_INTERVAL_MS, 86400000, &v, err, errlen)))
				return rc;
			c->interval_ms = v;
		} else if (td_mp_str_is(k, "request_timeout_ms")) {
			if ((rc = get_ms(val, "request_timeout_ms", 1, 600000, &v, err, errlen)))
				return rc;
			c->timeout_ms = (long)v;
		} else if (td_mp_str_is(k, "max_body")) {
			if ((rc = get_ms(val, "max_body", 0, MAX_MAX_BODY, &v, err, errlen)))
				return rc;
			c->max_body = (size_t)v;
		} else if (td_mp_str_is(k, "success_status")) {
			if ((rc = get_statuses(val, "success_status", &c->ok_status, &c->n_ok,
					       &c->ok_class, err, errlen)))
				return rc;
		} else if (td_mp_str_is(k, "failure_status")) {
			if ((rc = get_statuses(val, "failure_status", &c->fail_status, &c->n_fail,
					       &c->fail_class, err, errlen)))
				return rc;
		} else if (td_mp_str_is(k, "retry_status")) {
			if ((rc = get_statuses(val, "retry_status", &c->retry_status, &c->n_retry,
					       &c->retry_class, err, errlen)))
				return rc;
		} else if (td_mp_str_is(k, "success_payload")) {
			c->payload_mp = pack_copy(val, &c->payload_len);
		} else if (td_mp_str_is(k, "body_regex")) {
			if (val->type != MSGPACK_OBJECT_STR || val->via.str.size > 4096)
				return td_spec_err(err, errlen, "args.%s: expected a PCRE2 pattern string", "body_regex");
			int ec;
			PCRE2_SIZE eo;
			c->re = pcre2_compile((PCRE2_SPTR)val->via.str.ptr, val->via.str.size,
					      PCRE2_MATCH_INVALID_UTF | PCRE2_UTF, &ec, &eo, NULL);
			if (!c->re) {
				char msg[120];
				pcre2_get_error_message(ec, (PCRE2_UCHAR *)msg, sizeof(msg));
				snprintf(err, errlen, "args.body_regex: %s at offset %zu", msg, (size_t)eo);
				return TD_EINVAL_SPEC;
			}
			c->mctx = pcre2_match_context_create(NULL);
			if (!c->mctx)
				return -ENOMEM;
			pcre2_set_match_limit(c->mctx, REGEX_MATCH_LIMIT);
			pcre2_set_depth_limit(c->mctx, 10000);
		} else if (td_mp_str_is(k, "json_pointer")) {
			if (val->type != MSGPACK_OBJECT_STR ||
			    (val->via.str.size > 0 && val->via.str.ptr[0] != '/'))
				return td_spec_err(err, errlen, "args.%s: expected an RFC 6901 pointer (\"\" or starting with /)", "json_pointer");
			if (!(c->pointer = dup_str(val)))
				return -ENOMEM;
		} else if (td_mp_str_is(k, "equals")) {
			equals = val;
		} else {
			snprintf(err, errlen, "args.%.*s: unknown field",
				 (int)(k->type == MSGPACK_OBJECT_STR && k->via.str.size < 64 ?
				       k->via.str.size : 0),
				 k->type == MSGPACK_OBJECT_STR ? k->via.str.ptr : "");
			return TD_EINVAL_SPEC;
		}
	}
	if (c->url && (c->conn_id || endpoint))
		return td_spec_err(err, errlen, "args.%s: give either url or conn + endpoint", "url");
	if (c->conn_id) {
		const struct td_conn *cn = conns ? td_conns_get(conns, c->conn_id) : NULL;
		if (!cn) {
			char upper[TD_CONN_ID_MAX + 1];
			size_t i = 0;
			for (; c->conn_id[i] && i < TD_CONN_ID_MAX; i++) {
				char ch = c->conn_id[i];
				upper[i] = (char)(ch >= 'a' && ch <= 'z' ? ch - 32 : ch);
			}
			upper[i] = '\0';
			return td_spec_err(err, errlen, "args.conn: no connection '%s' (set AIRFLOW_CONN_%s or "
				   "add it to --connections-file)", c->conn_id, upper);
		}
		char buf[8448];
		char ep[8200] = "";
		if (endpoint)
			snprintf(ep, sizeof(ep), "%.*s", (int)endpoint->via.str.size,
				 endpoint->via.str.ptr);
		if (td_conn_http_url(cn, ep, buf, sizeof(buf)) != 0)
			return td_spec_err(err, errlen, "args.%s: URL too long", "endpoint");
		if (!(c->url = strdup(buf)))
			return -ENOMEM;
		if ((rc = check_url(c, "conn", err, errlen)))
			return rc;
	} else if (!c->url) {
		return td_spec_err(err, errlen, "args.%s: required (or conn + endpoint)", "url");
	} else if ((rc = check_url(c, "url", err, errlen))) {
		return rc;
	}
	if (!c->method && !(c->method = strdup(c->body ? "POST" : "GET")))
		return -ENOMEM;
	if (!!c->pointer != !!equals)
		return td_spec_err(err, errlen, "args.%s: json_pointer and equals go together", "equals");
	if (equals)
		c->equals_mp = pack_copy(equals, &c->equals_len);
	c->args_mp = pack_copy(args, &c->args_len);
	return 0;
}

static void fire_cb(struct td_timer *node, uint64_t now);
static void slot_cb(struct td_rl_waiter *w);

static int http_parse(struct td_trigger *t, const msgpack_object *args, int64_t now_ms,
		      char *err, size_t errlen)
{
	struct http_state *st = td_trigger_state(t);
	memset(st, 0, sizeof(*st));
	td_timer_init(&st->node, fire_cb);
	td_rl_waiter_init(&st->waiter, slot_cb);
	struct conf *c = calloc(1, sizeof(*c));
	if (!c) {
		snprintf(err, errlen, "args: out of memory");
		return -ENOMEM;
	}
	int rc = parse_conf(c, args, td_shard_conns(td_trigger_shard(t)), err, errlen);
	if (rc == 0) {
		/* Literal addresses and names checked now: a denied URL is a
		 * rejected submission naming the rule. Resolved addresses are
		 * checked again at connect time (DNS rebinding). */
		char why[TD_SSRF_WHY_MAX];
		const struct td_ssrf *g = td_shard_ssrf(td_trigger_shard(t));
		if (g && td_ssrf_check_host(g, c->host, why, sizeof(why)) != 0) {
			snprintf(err, errlen, "args.url: denied by the SSRF guard: %s", why);
			rc = TD_EINVAL_SPEC;
		}
	}
	if (rc) {
		if (rc == -ENOMEM)
			snprintf(err, errlen, "args: out of memory");
		conf_free(c);
		return rc;
	}
	st->conf = c;
	return 0;
}

static void http_pack_args(const struct td_trigger *t, msgpack_packer *pk)
{
	const struct http_state *st = td_trigger_state(t);
	msgpack_pack_bin_body(pk, st->conf->args_mp, st->conf->args_len);
}

/* interval +-10%, so triggers created together spread out. */
static uint64_t jittered(struct td_trigger *t, int64_t ms)
{
	uint64_t r = td_shard_rand(td_trigger_shard(t));
	int64_t spread = ms / 5;
	return (uint64_t)(ms - ms / 10 + (spread ? (int64_t)(r % (uint64_t)spread) : 0));
}

static void schedule(struct td_trigger *t, uint64_t delay_ms)
{
	struct http_state *st = td_trigger_state(t);
	td_wheel_add(td_shard_wheel(td_trigger_shard(t)), &st->node, td_mono_ms() + delay_ms);
}

static bool in_list(const uint16_t *l, uint32_t n, uint8_t classes, long status)
{
	if (status >= 100 && status < 600 && (classes & (1u << (status / 100))))
		return true;
	for (uint32_t i = 0; i < n; i++)
		if (l[i] == status)
			return true;
	return false;
}

static bool json_matches(const struct conf *c, const struct td_http_req *req)
{
	msgpack_sbuffer sb;
	msgpack_sbuffer_init(&sb);
	char err[128];
	bool ok = false;
	if (req->truncated ||
	    td_json_to_msgpack(req->body.data ? req->body.data : "", req->body.len, &sb,
			       err, sizeof(err)) != 0) {
		msgpack_sbuffer_destroy(&sb);
		return false;
	}
	msgpack_unpacked body, want;
	msgpack_unpacked_init(&body);
	msgpack_unpacked_init(&want);
	size_t o1 = 0, o2 = 0;
	if (msgpack_unpack_next(&body, sb.data, sb.size, &o1) == MSGPACK_UNPACK_SUCCESS &&
	    msgpack_unpack_next(&want, c->equals_mp, c->equals_len, &o2) == MSGPACK_UNPACK_SUCCESS) {
		const msgpack_object *got = td_mp_pointer(&body.data, c->pointer);
		ok = got && msgpack_object_equal(*got, want.data);
	}
	msgpack_unpacked_destroy(&body);
	msgpack_unpacked_destroy(&want);
	msgpack_sbuffer_destroy(&sb);
	return ok;
}

static bool regex_matches(const struct conf *c, const struct td_http_req *req)
{
	pcre2_match_data *md = pcre2_match_data_create_from_pattern(c->re, NULL);
	if (!md)
		return false;
	int rc = pcre2_match(c->re, (PCRE2_SPTR)(req->body.data ? req->body.data : ""),
			     req->body.len, 0, 0, md, c->mctx);
	pcre2_match_data_free(md);
	return rc >= 0; /* a match limit hit is a non-match, not a crash */
}

static void pack_str(msgpack_packer *pk, const char *s, size_t n)
{
	msgpack_pack_str(pk, n);
	msgpack_pack_str_body(pk, s, n);
}

static void pack_payload(msgpack_sbuffer *sb, const struct td_http_req *req, long status)
{
	static const char *const names[] = {"content-type", "etag", "last-modified", "location"};
	struct curl_header *hv[4];
	size_t nh = 0;
	for (size_t i = 0; i < 4; i++) {
		hv[i] = NULL;
		if (curl_easy_header(req->easy, names[i], 0, CURLH_HEADER, -1, &hv[i]) == CURLHE_OK)
			nh++;
	}
	msgpack_packer pk;
	msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 4);
	pack_str(&pk, "status", 6);
	msgpack_pack_long(&pk, status);
	pack_str(&pk, "headers", 7);
	msgpack_pack_map(&pk, nh);
	for (size_t i = 0; i < 4; i++) {
		if (!hv[i])
			continue;
		pack_str(&pk, names[i], strlen(names[i]));
		pack_str(&pk, hv[i]->value, strlen(hv[i]->value));
	}
	pack_str(&pk, "body", 4);
	pack_str(&pk, req->body.data ? req->body.data : "", req->body.len);
	pack_str(&pk, "truncated", 9);
	if (req->truncated)
		msgpack_pack_true(&pk);
	else
		msgpack_pack_false(&pk);
}

static void backoff(struct td_trigger *t, struct http_state *st, const char *why, long status)
{
	st->failures++;
	int64_t ms = st->conf->interval_ms;
	for (uint32_t i = 1; i < st->failures && ms < BACKOFF_MAX_MS; i++)
		ms *= 2;
	if (ms > BACKOFF_MAX_MS)
		ms = BACKOFF_MAX_MS;
	/* First failure of a streak, then every 10th, so a dead host with
	 * thousands of waiting triggers does not flood the log. */
	if (st->failures == 1 || st->failures % 10 == 0) {
		size_t idl;
		const char *id = td_trigger_id(t, &idl);
		char esc[600], eesc[300];
		/* curl's message can quote a URL: mask connection secrets. */
		char masked[300];
		const struct td_conns *cs = td_shard_conns(td_trigger_shard(t));
		const char *w = cs ? td_conn_mask(cs, why, masked, sizeof(masked)) : why;
		td_warn("http poll failed; retrying with backoff",
			"\"id\":\"%s\",\"error\":\"%s\",\"status\":%ld,\"failures\":%u,\"retry_ms\":%lld",
			td_log_esc(esc, sizeof(esc), id, idl),
			td_log_esc(eesc, sizeof(eesc), w, strlen(w)), status, st->failures,
			(long long)ms);
	}
	schedule(t, jittered(t, ms));
}

/* Give back the host's in-flight slot taken by admitted(). */
static void release_slot(struct td_trigger *t, const struct conf *c)
{
	td_ratelimit_release(td_shard_ratelimit(td_trigger_shard(t)), c->rl_key, strlen(c->rl_key));
}

static void poll_free(struct td_http *http, struct poll *p)
{
	td_http_req_finish(http, &p->req);
	curl_slist_free_all(p->headers);
	free(p);
}

static void poll_done(struct td_http_req *req, CURLcode res, long status)
{
	struct poll *p = td_container_of(req, struct poll, req);
	struct td_trigger *t = p->t;
	struct http_state *st = td_trigger_state(t);
	struct conf *c = st->conf;
	/* Taken now: firing may end and free the trigger before "out". */
	struct td_http *http = td_shard_http(td_trigger_shard(t));
	st->poll = NULL;
	st->polls++;
	struct td_shard *shard = td_trigger_shard(t);
	td_shard_count(shard, TD_CNT_HTTP_POLLS, 1);
	release_slot(t, c);
	/* Only when the transfer failed: curl moves on to a name's next
	 * address after a refused one, and may have reached an allowed one. */
	if (p->denied[0] && res != CURLE_OK) {
		td_shard_count(shard, TD_CNT_HTTP_SSRF, 1);
		/* The name resolved to a denied address (DNS rebinding, or a
		 * name no host rule covers): retrying would not help. */
		char msg[TD_SSRF_WHY_MAX + 64];
		snprintf(msg, sizeof(msg), "connect denied by the SSRF guard: %s", p->denied);
		struct td_outcome o = {.status = TD_FAILURE, .error = msg, .due_at_ms = -1};
		td_trigger_fire(t, &o);
		goto out;
	}
	if (res != CURLE_OK) {
		td_shard_count(shard, TD_CNT_HTTP_TRANSPORT, 1);
		backoff(t, st, req->errbuf[0] ? req->errbuf : curl_easy_strerror(res), 0);
		goto out;
	}
	bool ok = (c->n_ok || c->ok_class) ? in_list(c->ok_status, c->n_ok, c->ok_class, status) :
					     status >= 200 && status < 300;
	if (!ok && in_list(c->retry_status, c->n_retry, c->retry_class, status)) {
		st->failures = 0;
		schedule(t, jittered(t, c->interval_ms));
		goto out;
	}
	if (!ok && in_list(c->fail_status, c->n_fail, c->fail_class, status)) {
		msgpack_sbuffer sb;
		msgpack_sbuffer_init(&sb);
		pack_payload(&sb, req, status);
		char msg[64];
		snprintf(msg, sizeof(msg), "HTTP %ld is a failure status", status);
		struct td_outcome o = {.status = TD_FAILURE, .error = msg, .payload = sb.data,
				       .payload_len = sb.size, .due_at_ms = -1};
		int rc = td_trigger_fire(t, &o);
		msgpack_sbuffer_destroy(&sb);
		(void)rc; /* ended, or held and restarted later */
		goto out;
	}
	if (!ok) {
		if (status >= 500) {
			td_shard_count(shard, TD_CNT_HTTP_5XX, 1);
			char msg[32];
			snprintf(msg, sizeof(msg), "HTTP %ld", status);
			backoff(t, st, msg, status);
		} else {
			st->failures = 0;
			schedule(t, jittered(t, c->interval_ms));
		}
		goto out;
	}
	st->failures = 0;
	if ((c->re && !regex_matches(c, req)) || (c->pointer && !json_matches(c, req))) {
		schedule(t, jittered(t, c->interval_ms));
		goto out;
	}
	msgpack_sbuffer sb;
	msgpack_sbuffer_init(&sb);
	if (c->payload_mp)
		msgpack_sbuffer_write(&sb, c->payload_mp, c->payload_len);
	else
		pack_payload(&sb, req, status);
	bool repeat = td_trigger_repeat(t);
	/* The occurrence key must stay unique across restarts (it is the
	 * dedup key): wall-clock ms of this success, strictly increasing per
	 * trigger. A poll counter would restart at 1 and collide with the
	 * keys posted before a restart. */
	int64_t occ = td_wall_ms();
	if (occ <= st->last_occurrence)
		occ = st->last_occurrence + 1;
	st->last_occurrence = occ;
	struct td_outcome o = {.status = TD_SUCCESS, .payload = sb.data, .payload_len = sb.size,
			       .due_at_ms = -1, .occurrence = (uint64_t)occ};
	int rc = td_trigger_fire(t, &o);
	msgpack_sbuffer_destroy(&sb);
	if (rc == 0 && repeat)
		schedule(t, jittered(t, c->interval_ms));
out:
	poll_free(http, p);
}

/* CURLOPT_OPENSOCKETFUNCTION: the address curl is about to connect to. */
static curl_socket_t open_socket(void *userp, curlsocktype purpose, struct curl_sockaddr *a)
{
	struct poll *p = userp;
	struct http_state *st = td_trigger_state(p->t);
	if (p->ssrf && td_ssrf_check_connect(p->ssrf, st->conf->host, &a->addr, a->addrlen,
					     p->denied, sizeof(p->denied)) != 0)
		return CURL_SOCKET_BAD;
	return socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
}

static void start_poll(struct td_trigger *t);

static void slot_cb(struct td_rl_waiter *w)
{
	struct http_state *st = td_container_of(w, struct http_state, waiter);
	start_poll(td_trigger_from_state(st));
}

/* Ask the host's limiter; false when the poll must wait (it is then
 * re-armed on the wheel for the exact allowed time, or queued for an
 * in-flight slot). */
static bool admitted(struct td_trigger *t, struct http_state *st)
{
	struct td_ratelimit *rl = td_shard_ratelimit(td_trigger_shard(t));
	const char *key = st->conf->rl_key;
	size_t kl = strlen(key);
	for (int tries = 0; tries < 2; tries++) {
		uint64_t retry = 0;
		int rc = td_ratelimit_acquire(rl, key, kl, (uint64_t)td_mono_ns(), &retry);
		if (rc == 0)
			return true;
		if (rc == TD_EFULL) {
			td_shard_count(td_trigger_shard(t), TD_CNT_HTTP_RATELIMITED, 1);
			td_wheel_add(td_shard_wheel(td_trigger_shard(t)), &st->node,
				     td_ratelimit_retry_tick(retry));
			return false;
		}
		if (rc == -EBUSY) {
			td_shard_count(td_trigger_shard(t), TD_CNT_HTTP_RATELIMITED, 1);
			int w = td_ratelimit_wait(rl, key, kl, &st->waiter);
			if (w == 0 || w == -EALREADY)
				return false;
			if (w == -EAGAIN)
				continue; /* a slot freed meanwhile */
		}
		break;
	}
	backoff(t, st, "rate limiter refused the request", 0);
	return false;
}

/* A poll that cannot be sent: free it, give its slot back, back off. */
static void abandon_poll(struct td_trigger *t, struct http_state *st, struct poll *p,
			 const char *why)
{
	poll_free(td_shard_http(td_trigger_shard(t)), p);
	release_slot(t, st->conf);
	backoff(t, st, why, 0);
}

static void start_poll(struct td_trigger *t)
{
	struct http_state *st = td_trigger_state(t);
	struct conf *c = st->conf;
	if (!admitted(t, st))
		return;
	struct poll *p = calloc(1, sizeof(*p));
	if (!p || td_http_req_init(td_shard_http(td_trigger_shard(t)), &p->req, c->url, c->max_body, c->timeout_ms) != 0) {
		free(p);
		release_slot(t, c);
		backoff(t, st, "out of memory", 0);
		return;
	}
	p->t = t;
	p->ssrf = td_shard_ssrf(td_trigger_shard(t));
	p->req.done = poll_done;
	CURL *e = p->req.easy;
	curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, open_socket);
	curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, p);
	/* No proxy from the environment (the guard would see the proxy's
	 * address) and no redirects (their targets are not checked). */
	curl_easy_setopt(e, CURLOPT_PROXY, "");
	curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, c->method);
	if (!strcmp(c->method, "HEAD"))
		curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
	const struct td_conn *cn = c->conn_id ?
		td_conns_get(td_shard_conns(td_trigger_shard(t)), c->conn_id) : NULL;
	if (cn) {
		/* Secrets are read from the registry per request: they are
		 * never part of the stored spec. */
		if (cn->login[0]) { /* as Airflow's HttpHook: only with a login */
			curl_easy_setopt(e, CURLOPT_USERNAME, cn->login);
			curl_easy_setopt(e, CURLOPT_PASSWORD, cn->password);
		}
		/* The connection's extra as headers (Airflow's HttpHook), unless
		 * the spec sets the same header. */
		size_t cur = 0;
		struct td_conn_header hd;
		int hr;
		while ((hr = td_conn_http_headers(cn, &cur, &hd)) != 0) {
			if (hr < 0) {
				/* Once per trigger, not once per poll. */
				if (st->polls == 0) {
					char esc[300], cesc[600];
					td_warn("connection extra entry is not a sendable header; skipped",
						"\"conn\":\"%s\",\"name\":\"%s\"",
						td_log_esc(cesc, sizeof(cesc), c->conn_id, strlen(c->conn_id)),
						td_log_esc(esc, sizeof(esc), hd.name, hd.name_len));
				}
				continue;
			}
			bool overridden = false;
			for (struct curl_slist *l = c->headers; l && !overridden; l = l->next)
				overridden = !strncasecmp(l->data, hd.name, hd.name_len) &&
					     l->data[hd.name_len] == ':';
			if (overridden)
				continue;
			char line[8200];
			int ll = snprintf(line, sizeof(line), "%.*s: %.*s", (int)hd.name_len, hd.name,
					  (int)hd.value_len, hd.value);
			if (ll < 0 || (size_t)ll >= sizeof(line)) {
				if (st->polls == 0) {
					char esc[300];
					td_warn("connection header too long; skipped",
						"\"name\":\"%s\"",
						td_log_esc(esc, sizeof(esc), hd.name, hd.name_len));
				}
				continue;
			}
			struct curl_slist *n = curl_slist_append(p->headers, line);
			if (!n) {
				/* Without its headers (maybe the credentials) the
				 * request must not go out. */
				abandon_poll(t, st, p, "out of memory building headers");
				return;
			}
			p->headers = n;
		}
	}
	for (struct curl_slist *l = c->headers; l; l = l->next) {
		struct curl_slist *n = curl_slist_append(p->headers, l->data);
		if (!n) {
			abandon_poll(t, st, p, "out of memory building headers");
			return;
		}
		p->headers = n;
	}
	if (p->headers)
		curl_easy_setopt(e, CURLOPT_HTTPHEADER, p->headers);
	if (c->body) {
		curl_easy_setopt(e, CURLOPT_POSTFIELDS, c->body);
		curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)c->body_len);
	}
	curl_easy_setopt(e, CURLOPT_USERAGENT, "triggerd/" TD_VERSION);
	if (td_http_start(td_shard_http(td_trigger_shard(t)), &p->req) != 0) {
		abandon_poll(t, st, p, "curl refused the request");
		return;
	}
	st->poll = p;
}

static void fire_cb(struct td_timer *node, uint64_t now)
{
	struct http_state *st = td_container_of(node, struct http_state, node);
	start_poll(td_trigger_from_state(st));
}

static int http_start(struct td_trigger *t)
{
	/* First poll soon, spread over up to a tenth of the interval. */
	struct http_state *st = td_trigger_state(t);
	uint64_t r = td_shard_rand(td_trigger_shard(t));
	uint64_t spread = (uint64_t)st->conf->interval_ms / 10;
	schedule(t, spread ? r % spread : 0);
	return 0;
}

static void http_stop(struct td_trigger *t)
{
	struct http_state *st = td_trigger_state(t);
	td_wheel_cancel(td_shard_wheel(td_trigger_shard(t)), &st->node);
	if (td_rl_waiter_pending(&st->waiter))
		td_ratelimit_unwait(td_shard_ratelimit(td_trigger_shard(t)), &st->waiter);
	if (st->poll) {
		release_slot(t, st->conf);
		td_http_cancel(td_shard_http(td_trigger_shard(t)), &st->poll->req);
		poll_free(td_shard_http(td_trigger_shard(t)), st->poll);
		st->poll = NULL;
	}
}

static void http_destroy(struct td_trigger *t)
{
	struct http_state *st = td_trigger_state(t);
	http_stop(t);
	conf_free(st->conf);
	st->conf = NULL;
}

const struct td_kind td_kind_http = {
	.name = "http",
	.state_size = sizeof(struct http_state),
	.parse = http_parse,
	.pack_args = http_pack_args,
	.start = http_start,
	.stop = http_stop,
	.destroy = http_destroy,
};
