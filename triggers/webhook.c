/*
 * The `webhook` kind: wait for a POST to /hooks/<path> on the webhook
 * listener (--webhook-listen).
 *
 * args:
 *   path        required; what follows "/hooks/": 1..256 bytes of
 *               [A-Za-z0-9._~:@!$&'()*+,;=/-], no leading '/', no "..",
 *               no empty segment
 *   filter      optional {"pointer": "/action", "equals": <JSON value>}:
 *               fire only when the JSON body has that value there
 *   signature   optional {"scheme": "github"|"stripe"|"standard",
 *               "secret_conn": "<connection id>"}: the secret is the
 *               connection's password; deliveries that do not verify
 *               are refused with 401 and fire nothing
 *   headers     optional list of request header names (up to 16) to add
 *               to the payload's "headers" besides the default ones
 *
 * The kind only parses and registers; engine/webhook.c matches deliveries
 * against the waiter and fires (see include/triggerd/hooks.h).
 */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "triggerd/connections.h"
#include "triggerd/hooks.h"
#include "triggerd/kind.h"
#include "triggerd/triggerd.h"

static bool path_ok(const char *p, size_t n)
{
	static const char extra[] = "._~:@!$&'()*+,;=/-";
	if (n == 0 || n > TD_HOOK_PATH_MAX || p[0] == '/' || p[n - 1] == '/')
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)p[i];
		if (!isalnum(c) && !memchr(extra, c, sizeof(extra) - 1))
			return false;
		if (c == '/' && p[i + 1] == '/') /* p[n - 1] != '/' */
			return false;
		if (c == '.' && i + 1 < n && p[i + 1] == '.')
			return false;
	}
	return true;
}

static bool token_ok(const char *p, size_t n)
{
	static const char extra[] = "!#$%&'*+-.^_`|~";
	if (n == 0 || n > 64)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)p[i]) && !strchr(extra, p[i]))
			return false;
	return true;
}

static int parse_filter(struct td_hook_spec *sp, const msgpack_object *o, char *err,
			size_t errlen)
{
	if (o->type != MSGPACK_OBJECT_MAP)
		return td_spec_err(err, errlen, "args.filter: expected a map {\"pointer\", \"equals\"}");
	const msgpack_object *ptr = NULL, *eq = NULL;
	for (uint32_t i = 0; i < o->via.map.size; i++) {
		const msgpack_object *k = &o->via.map.ptr[i].key;
		if (td_mp_str_is(k, "pointer"))
			ptr = &o->via.map.ptr[i].val;
		else if (td_mp_str_is(k, "equals"))
			eq = &o->via.map.ptr[i].val;
		else
			return td_spec_err(err, errlen, "args.filter: unknown field (expected pointer, equals)");
	}
	if (!ptr || ptr->type != MSGPACK_OBJECT_STR || ptr->via.str.size > 1024 ||
	    (ptr->via.str.size && ptr->via.str.ptr[0] != '/') ||
	    memchr(ptr->via.str.ptr, '\0', ptr->via.str.size))
		return td_spec_err(err, errlen, "args.filter.pointer: expected an RFC 6901 pointer (\"\" or starting with /)");
	if (!eq)
		return td_spec_err(err, errlen, "args.filter.equals: required (the value to compare)");
	if (!(sp->pointer = td_memdup0(ptr->via.str.ptr, ptr->via.str.size)))
		return -ENOMEM;
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_object(&pk, *eq);
	sp->equals = td_sbuffer_shrink(&sb);
	sp->equals_len = sb.size;
	return sp->equals ? 0 : -ENOMEM;
}

static int parse_signature(struct td_trigger *t, struct td_hook_spec *sp,
			   const msgpack_object *o, char *err, size_t errlen)
{
	if (o->type != MSGPACK_OBJECT_MAP)
		return td_spec_err(err, errlen, "args.signature: expected a map {\"scheme\", \"secret_conn\"}");
	const msgpack_object *scheme = NULL, *conn = NULL;
	for (uint32_t i = 0; i < o->via.map.size; i++) {
		const msgpack_object *k = &o->via.map.ptr[i].key;
		if (td_mp_str_is(k, "scheme"))
			scheme = &o->via.map.ptr[i].val;
		else if (td_mp_str_is(k, "secret_conn"))
			conn = &o->via.map.ptr[i].val;
		else
			return td_spec_err(err, errlen, "args.signature: unknown field (expected scheme, secret_conn)");
	}
	if (!scheme || scheme->type != MSGPACK_OBJECT_STR ||
	    td_sig_scheme_parse(scheme->via.str.ptr, scheme->via.str.size, &sp->scheme))
		return td_spec_err(err, errlen, "args.signature.scheme: expected \"github\", \"stripe\" or \"standard\"");
	if (!conn || conn->type != MSGPACK_OBJECT_STR || conn->via.str.size == 0 ||
	    conn->via.str.size > 128)
		return td_spec_err(err, errlen, "args.signature.secret_conn: expected a connection id");
	if (!(sp->secret_conn = td_memdup0(conn->via.str.ptr, conn->via.str.size)))
		return -ENOMEM;
	const struct td_conns *cs = td_shard_conns(td_trigger_shard(t));
	const struct td_conn *c = cs ? td_conns_get(cs, sp->secret_conn) : NULL;
	if (!c)
		return td_spec_err(err, errlen, "args.signature.secret_conn: no connection '%s' (set AIRFLOW_CONN_<ID> or --connections-file)",
			   sp->secret_conn);
	if (!c->password || !c->password[0])
		return td_spec_err(err, errlen, "args.signature.secret_conn: connection '%s' has no password (the signing secret)",
			   sp->secret_conn);
	sp->secret = c->password;
	sp->secret_len = strlen(c->password);
	sp->sig = true;
	return 0;
}

static int parse_headers(struct td_hook_spec *sp, const msgpack_object *o, char *err,
			 size_t errlen)
{
	if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size > TD_HOOK_HEADERS_MAX)
		return td_spec_err(err, errlen, "args.headers: expected a list of up to %d header names",
			   TD_HOOK_HEADERS_MAX);
	for (uint32_t i = 0; i < o->via.array.size; i++) {
		const msgpack_object *h = &o->via.array.ptr[i];
		if (h->type != MSGPACK_OBJECT_STR || !token_ok(h->via.str.ptr, h->via.str.size))
			return td_spec_err(err, errlen, "args.headers[%u]: expected a header name", i);
		char *d = td_memdup0(h->via.str.ptr, h->via.str.size);
		if (!d)
			return -ENOMEM;
		for (char *p = d; *p; p++)
			*p = (char)tolower((unsigned char)*p);
		sp->headers[sp->nheaders++] = d;
	}
	return 0;
}

static int parse(struct td_trigger *t, const msgpack_object *args, int64_t now_ms, char *err,
		 size_t errlen)
{
	struct td_hook_waiter *w = td_trigger_state(t);
	memset(w, 0, sizeof(*w));
	if (!args || args->type != MSGPACK_OBJECT_MAP)
		return td_spec_err(err, errlen, "args: required map with at least \"path\"");
	struct td_hook_spec *sp = calloc(1, sizeof(*sp));
	if (!sp)
		return -ENOMEM;
	w->spec = sp;
	int rc = 0;
	for (uint32_t i = 0; i < args->via.map.size && !rc; i++) {
		const msgpack_object *k = &args->via.map.ptr[i].key;
		const msgpack_object *v = &args->via.map.ptr[i].val;
		for (uint32_t j = 0; j < i && !rc; j++)
			if (msgpack_object_equal(*k, args->via.map.ptr[j].key))
				rc = td_spec_err(err, errlen, "args.%.*s: given twice",
					 (int)(k->type == MSGPACK_OBJECT_STR && k->via.str.size < 64 ?
					       k->via.str.size : 0),
					 k->type == MSGPACK_OBJECT_STR ? k->via.str.ptr : "");
		if (rc)
			break;
		if (td_mp_str_is(k, "path")) {
			if (v->type != MSGPACK_OBJECT_STR || !path_ok(v->via.str.ptr, v->via.str.size))
				rc = td_spec_err(err, errlen, "args.path: expected 1..%d bytes of [A-Za-z0-9._~:@!$&'()*+,;=/-] after /hooks/, no leading or double '/', no '..'",
					 TD_HOOK_PATH_MAX);
			else if (!(sp->path = td_memdup0(v->via.str.ptr, v->via.str.size)))
				rc = -ENOMEM;
			sp->path_len = v->via.str.size;
		} else if (td_mp_str_is(k, "filter")) {
			rc = parse_filter(sp, v, err, errlen);
		} else if (td_mp_str_is(k, "signature")) {
			rc = parse_signature(t, sp, v, err, errlen);
		} else if (td_mp_str_is(k, "headers")) {
			rc = parse_headers(sp, v, err, errlen);
		} else {
			rc = td_spec_err(err, errlen, "args.%.*s: unknown field (expected path, filter, signature, headers)",
				 (int)(k->type == MSGPACK_OBJECT_STR && k->via.str.size < 64 ?
				       k->via.str.size : 0),
				 k->type == MSGPACK_OBJECT_STR ? k->via.str.ptr : "");
		}
	}
	if (!rc && !sp->path)
		rc = td_spec_err(err, errlen, "args.path: required (the part after /hooks/)");
	if (rc == -ENOMEM)
		td_spec_err(err, errlen, "args: out of memory");
	if (rc) {
		td_hook_spec_free(sp);
		w->spec = NULL;
	}
	return rc;
}

static void pack_str(msgpack_packer *pk, const char *s, size_t n)
{
	msgpack_pack_str(pk, n);
	msgpack_pack_str_body(pk, s, n);
}

static void pack_args(const struct td_trigger *t, msgpack_packer *pk)
{
	const struct td_hook_spec *sp = ((struct td_hook_waiter *)td_trigger_state(t))->spec;
	msgpack_pack_map(pk, 1 + !!sp->pointer + sp->sig + !!sp->nheaders);
	pack_str(pk, "path", 4);
	pack_str(pk, sp->path, sp->path_len);
	if (sp->pointer) {
		pack_str(pk, "filter", 6);
		msgpack_pack_map(pk, 2);
		pack_str(pk, "pointer", 7);
		pack_str(pk, sp->pointer, strlen(sp->pointer));
		pack_str(pk, "equals", 6);
		msgpack_pack_str_body(pk, sp->equals, sp->equals_len); /* raw bytes */
	}
	if (sp->sig) {
		const char *name = td_sig_scheme_name(sp->scheme);
		pack_str(pk, "signature", 9);
		msgpack_pack_map(pk, 2);
		pack_str(pk, "scheme", 6);
		pack_str(pk, name, strlen(name));
		pack_str(pk, "secret_conn", 11);
		pack_str(pk, sp->secret_conn, strlen(sp->secret_conn));
	}
	if (sp->nheaders) {
		pack_str(pk, "headers", 7);
		msgpack_pack_array(pk, sp->nheaders);
		for (unsigned i = 0; i < sp->nheaders; i++)
			pack_str(pk, sp->headers[i], strlen(sp->headers[i]));
	}
}

static int start(struct td_trigger *t)
{
	return td_hooks_wait(td_trigger_shard(t), td_trigger_state(t));
}

static void stop(struct td_trigger *t)
{
	td_hooks_unwait(td_trigger_state(t));
}

static void destroy(struct td_trigger *t)
{
	struct td_hook_waiter *w = td_trigger_state(t);
	td_hooks_unwait(w);
	td_hook_spec_free(w->spec);
	w->spec = NULL;
}

void td_hook_spec_free(struct td_hook_spec *sp)
{
	if (!sp)
		return;
	free(sp->path);
	free(sp->pointer);
	free(sp->equals);
	free(sp->secret_conn);
	for (unsigned i = 0; i < sp->nheaders; i++)
		free(sp->headers[i]);
	free(sp);
}

const struct td_kind td_kind_webhook = {
	.name = "webhook",
	.state_size = sizeof(struct td_hook_waiter),
	.parse = parse,
	.pack_args = pack_args,
	.start = start,
	.stop = stop,
	.destroy = destroy,
};
