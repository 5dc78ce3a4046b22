/*
 * Specs and events: validation of the submission envelope (the kind checks
 * its own args), the stored form kept in td:triggers, and the event map.
 */
#include <stdarg.h>
#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_i.h"

static const char *type_name(const msgpack_object *o)
{
	switch (o->type) {
	case MSGPACK_OBJECT_NIL: return "nil";
	case MSGPACK_OBJECT_BOOLEAN: return "a boolean";
	case MSGPACK_OBJECT_POSITIVE_INTEGER: return "a positive integer";
	case MSGPACK_OBJECT_NEGATIVE_INTEGER: return "a negative integer";
	case MSGPACK_OBJECT_FLOAT32:
	case MSGPACK_OBJECT_FLOAT64: return "a float";
	case MSGPACK_OBJECT_STR: return "a string";
	case MSGPACK_OBJECT_ARRAY: return "an array";
	case MSGPACK_OBJECT_MAP: return "a map";
	case MSGPACK_OBJECT_BIN: return "binary";
	case MSGPACK_OBJECT_EXT: return "an ext";
	}
	return "unknown";
}

/* A non-negative integer that fits int64 (unix ms). */
static int get_ms(const msgpack_object *o, const char *field, int64_t *out,
		  char *err, size_t errlen)
{
	if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER) {
		snprintf(err, errlen, "%s: expected a non-negative integer (ms), got %s",
			 field, type_name(o));
		return TD_EINVAL_SPEC;
	}
	if (o->via.u64 > (uint64_t)TD_TIME_MAX_MS) {
		snprintf(err, errlen, "%s: larger than %lld (year 9999)", field,
			 (long long)TD_TIME_MAX_MS);
		return TD_EINVAL_SPEC;
	}
	*out = (int64_t)o->via.u64;
	return 0;
}

bool td_queue_name_ok(const char *s, size_t n)
{
	if (n == 0 || n > TD_QUEUE_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.' ||
		      c == ':'))
			return false;
	}
	return true;
}

/* The msgpack encoding size of @o, without allocating. */
static size_t packed_size(const msgpack_object *o, int depth)
{
	if (depth > 64)
		return (size_t)-1 / 4;
	switch (o->type) {
	case MSGPACK_OBJECT_NIL:
	case MSGPACK_OBJECT_BOOLEAN: return 1;
	case MSGPACK_OBJECT_POSITIVE_INTEGER:
	case MSGPACK_OBJECT_NEGATIVE_INTEGER: return 9;
	case MSGPACK_OBJECT_FLOAT32: return 5;
	case MSGPACK_OBJECT_FLOAT64: return 9;
	case MSGPACK_OBJECT_STR: return 5 + o->via.str.size;
	case MSGPACK_OBJECT_BIN: return 5 + o->via.bin.size;
	case MSGPACK_OBJECT_EXT: return 6 + o->via.ext.size;
	case MSGPACK_OBJECT_ARRAY: {
		size_t n = 5;
		for (uint32_t i = 0; i < o->via.array.size && n <= TD_META_MAX * 2; i++)
			n += packed_size(&o->via.array.ptr[i], depth + 1);
		return n;
	}
	case MSGPACK_OBJECT_MAP: {
		size_t n = 5;
		for (uint32_t i = 0; i < o->via.map.size && n <= TD_META_MAX * 2; i++) {
			n += packed_size(&o->via.map.ptr[i].key, depth + 1);
			n += packed_size(&o->via.map.ptr[i].val, depth + 1);
		}
		return n;
	}
	}
	return 0;
}

int td_spec_parse(const msgpack_object *o, int64_t now_ms, struct td_spec *out,
		  char *err, size_t errlen)
{
	memset(out, 0, sizeof(*out));
	out->deadline_ms = -1;
	if (o->type != MSGPACK_OBJECT_MAP) {
		snprintf(err, errlen, "spec: expected a map, got %s", type_name(o));
		return TD_EINVAL_SPEC;
	}
	const msgpack_object *id = NULL, *kind = NULL, *classpath = NULL;
	const msgpack_object *timeout = NULL, *deadline = NULL, *queue = NULL;
	const msgpack_object *repeat = NULL;
	const msgpack_object_kv *kv = o->via.map.ptr;
	for (uint32_t i = 0; i < o->via.map.size; i++, kv++) {
		const msgpack_object *k = &kv->key;
		if (k->type != MSGPACK_OBJECT_STR) {
			snprintf(err, errlen, "spec: map keys must be strings, got %s",
				 type_name(k));
			return TD_EINVAL_SPEC;
		}
		if (td_mp_str_is(k, "id")) id = &kv->val;
		else if (td_mp_str_is(k, "kind")) kind = &kv->val;
		else if (td_mp_str_is(k, "args")) out->args = &kv->val;
		else if (td_mp_str_is(k, "classpath")) classpath = &kv->val;
		else if (td_mp_str_is(k, "kwargs")) ;
		else if (td_mp_str_is(k, "timeout_ms")) timeout = &kv->val;
		else if (td_mp_str_is(k, "deadline_ms")) deadline = &kv->val;
		else if (td_mp_str_is(k, "queue")) queue = &kv->val;
		else if (td_mp_str_is(k, "meta")) out->meta = &kv->val;
		else if (td_mp_str_is(k, "repeat")) repeat = &kv->val;
		else if (td_mp_str_is(k, "v")) ; /* stored-form version */
		else {
			snprintf(err, errlen, "%.*s: unknown field",
				 (int)(k->via.str.size > 64 ? 64 : k->via.str.size),
				 k->via.str.ptr);
			return TD_EINVAL_SPEC;
		}
	}
	/* id and queue first: a rejected event can still name them. */
	if (!id) {
		snprintf(err, errlen, "id: required");
		return TD_EINVAL_SPEC;
	}
	if (id->type != MSGPACK_OBJECT_STR) {
		snprintf(err, errlen, "id: expected a string, got %s", type_name(id));
		return TD_EINVAL_SPEC;
	}
	if (id->via.str.size == 0) {
		snprintf(err, errlen, "id: must not be empty");
		return TD_EINVAL_SPEC;
	}
	if (id->via.str.size > TD_ID_MAX) {
		snprintf(err, errlen, "id: longer than %d bytes (%u)", TD_ID_MAX,
			 id->via.str.size);
		return TD_EINVAL_SPEC;
	}
	out->id = id->via.str.ptr;
	out->id_len = id->via.str.size;
	if (queue) {
		if (queue->type != MSGPACK_OBJECT_STR ||
		    !td_queue_name_ok(queue->via.str.ptr, queue->via.str.size)) {
			snprintf(err, errlen,
				 "queue: expected 1..%d characters of [A-Za-z0-9_.:-]",
				 TD_QUEUE_MAX);
			return TD_EINVAL_SPEC;
		}
		out->queue = queue->via.str.ptr;
		out->queue_len = queue->via.str.size;
	}
	if (classpath) {
		/* Airflow serialized triggers are translated by a later change;
		 * say so rather than guess. */
		snprintf(err, errlen,
			 "classpath: Airflow triggers are not supported by this build yet; use kind + args");
		return TD_EINVAL_SPEC;
	}
	if (!kind) {
		snprintf(err, errlen, "kind: required");
		return TD_EINVAL_SPEC;
	}
	if (kind->type != MSGPACK_OBJECT_STR) {
		snprintf(err, errlen, "kind: expected a string, got %s", type_name(kind));
		return TD_EINVAL_SPEC;
	}
	out->kind = td_kind_find(kind->via.str.ptr, kind->via.str.size);
	if (!out->kind) {
		snprintf(err, errlen, "kind: unknown kind '%.*s'",
			 (int)(kind->via.str.size > 64 ? 64 : kind->via.str.size),
			 kind->via.str.ptr);
		return TD_EINVAL_SPEC;
	}
	if (out->args && out->args->type != MSGPACK_OBJECT_MAP &&
	    out->args->type != MSGPACK_OBJECT_NIL) {
		snprintf(err, errlen, "args: expected a map, got %s", type_name(out->args));
		return TD_EINVAL_SPEC;
	}
	if (timeout) {
		int64_t ms;
		if (get_ms(timeout, "timeout_ms", &ms, err, errlen))
			return TD_EINVAL_SPEC;
		out->deadline_ms = now_ms + ms;
		if (out->deadline_ms > TD_TIME_MAX_MS) {
			snprintf(err, errlen, "timeout_ms: deadline would be after year 9999");
			return TD_EINVAL_SPEC;
		}
	}
	if (deadline) {
		int64_t ms;
		if (get_ms(deadline, "deadline_ms", &ms, err, errlen))
			return TD_EINVAL_SPEC;
		/* Both given: the earlier one wins. */
		if (out->deadline_ms < 0 || ms < out->deadline_ms)
			out->deadline_ms = ms;
	}
	if (repeat) {
		if (repeat->type != MSGPACK_OBJECT_BOOLEAN) {
			snprintf(err, errlen, "repeat: expected a boolean, got %s",
				 type_name(repeat));
			return TD_EINVAL_SPEC;
		}
		out->repeat = repeat->via.boolean;
	}
	if (out->meta) {
		size_t n = packed_size(out->meta, 0);
		if (n > TD_META_MAX) {
			/* packed_size is an upper bound; measure exactly. */
			msgpack_sbuffer sb;
			msgpack_packer pk;
			msgpack_sbuffer_init(&sb);
			msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
			msgpack_pack_object(&pk, *out->meta);
			n = sb.size;
			msgpack_sbuffer_destroy(&sb);
			if (n > TD_META_MAX) {
				snprintf(err, errlen, "meta: larger than %d bytes when encoded (%zu)",
					 TD_META_MAX, n);
				return TD_EINVAL_SPEC;
			}
		}
	}
	return 0;
}

int td_trigger_new(struct td_shard *s, const struct td_spec *spec, int64_t now_ms,
		   struct td_trigger **out, char *err, size_t errlen)
{
	const struct td_kind *k = spec->kind;
	size_t state8 = (k->state_size + 7) / 8;
	if (state8 > 255) {
		snprintf(err, errlen, "kind: internal error: state too large");
		return -EINVAL;
	}
	msgpack_sbuffer *sb = &s->scratch;
	sb->size = 0;
	if (spec->meta) {
		msgpack_packer pk;
		msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
		msgpack_pack_object(&pk, *spec->meta);
	}
	size_t meta_len = sb->size;
	size_t pre = spec->deadline_ms >= 0 ? sizeof(struct td_timer) : 0;
	size_t size = pre + sizeof(struct td_trigger) + state8 * 8 + spec->id_len +
		      spec->queue_len + meta_len;
	char *base = calloc(1, size);
	if (!base) {
		snprintf(err, errlen, "spec: out of memory");
		return -ENOMEM;
	}
	struct td_trigger *t = (struct td_trigger *)(void *)(base + pre);
	t->kind = k;
	t->shard = s;
	t->deadline_ms = spec->deadline_ms;
	t->id_len = (uint16_t)spec->id_len;
	t->queue_len = (uint8_t)spec->queue_len;
	t->meta_len = (uint16_t)meta_len;
	t->repeat = spec->repeat;
	t->state_size8 = (uint8_t)state8;
	t->state = TD_T_STORING;
	memcpy(td_trigger_idp(t), spec->id, spec->id_len);
	if (spec->queue_len)
		memcpy(td_trigger_queuep(t), spec->queue, spec->queue_len);
	if (meta_len)
		memcpy(td_trigger_metap(t), sb->data, meta_len);
	static const msgpack_object nil = {.type = MSGPACK_OBJECT_NIL};
	int rc = k->parse(t, spec->args ? spec->args : &nil, now_ms, err, errlen);
	if (rc) {
		free(base);
		return rc;
	}
	s->stats.trigger_bytes += malloc_usable_size(base);
	*out = t;
	return 0;
}

void td_trigger_free(struct td_trigger *t)
{
	if (!t)
		return;
	if (t->kind->destroy)
		t->kind->destroy(t);
	char *base = (char *)t - (t->deadline_ms >= 0 ? sizeof(struct td_timer) : 0);
	t->shard->stats.trigger_bytes -= malloc_usable_size(base);
	free(base);
}

static void pack_str(msgpack_packer *pk, const char *s, size_t n)
{
	msgpack_pack_str(pk, n);
	msgpack_pack_str_body(pk, s, n);
}

static void pack_key(msgpack_packer *pk, const char *s)
{
	pack_str(pk, s, strlen(s));
}

void td_trigger_pack_stored(const struct td_trigger *t, msgpack_packer *pk)
{
	size_t n = 4 + (t->deadline_ms >= 0) + (t->queue_len > 0) +
		   (t->meta_len > 0) + (t->repeat != 0);
	msgpack_pack_map(pk, n);
	pack_key(pk, "v");
	msgpack_pack_uint8(pk, 1);
	pack_key(pk, "id");
	pack_str(pk, td_trigger_idp(t), t->id_len);
	pack_key(pk, "kind");
	pack_key(pk, t->kind->name);
	pack_key(pk, "args");
	t->kind->pack_args(t, pk);
	if (t->deadline_ms >= 0) {
		pack_key(pk, "deadline_ms");
		msgpack_pack_int64(pk, t->deadline_ms);
	}
	if (t->queue_len) {
		pack_key(pk, "queue");
		pack_str(pk, td_trigger_queuep(t), t->queue_len);
	}
	if (t->meta_len) {
		pack_key(pk, "meta");
		/* Already msgpack: append verbatim. */
		msgpack_pack_bin_body(pk, td_trigger_metap(t), t->meta_len);
	}
	if (t->repeat) {
		pack_key(pk, "repeat");
		msgpack_pack_true(pk);
	}
}

const char *td_status_name(enum td_status st)
{
	static const char *const names[] = {"success", "failure", "timeout",
					    "rejected", "cancelled"};
	return (unsigned)st < TD_ARRAY_LEN(names) ? names[st] : "unknown";
}

void td_event_pack(const struct td_event *ev, msgpack_packer *pk)
{
	size_t n = 4 + (ev->kind != NULL) + (ev->error != NULL) +
		   (ev->meta != NULL) + (ev->seq != 0) + (ev->due_at_ms >= 0);
	msgpack_pack_map(pk, n);
	pack_key(pk, "id");
	pack_str(pk, ev->id, ev->id_len);
	if (ev->kind) {
		pack_key(pk, "kind");
		pack_key(pk, ev->kind);
	}
	pack_key(pk, "status");
	pack_key(pk, td_status_name(ev->status));
	pack_key(pk, "payload");
	if (ev->payload)
		msgpack_pack_bin_body(pk, ev->payload, ev->payload_len);
	else
		msgpack_pack_nil(pk);
	if (ev->error) {
		pack_key(pk, "error");
		pack_key(pk, ev->error);
	}
	if (ev->meta) {
		pack_key(pk, "meta");
		msgpack_pack_bin_body(pk, ev->meta, ev->meta_len);
	}
	if (ev->seq) {
		pack_key(pk, "seq");
		msgpack_pack_uint64(pk, ev->seq);
	}
	pack_key(pk, "fired_at_ms");
	msgpack_pack_int64(pk, ev->fired_at_ms);
	if (ev->due_at_ms >= 0) {
		pack_key(pk, "due_at_ms");
		msgpack_pack_int64(pk, ev->due_at_ms);
	}
}

int td_spec_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return TD_EINVAL_SPEC;
}

char *td_memdup0(const char *p, size_t n)
{
	char *d = malloc(n + 1);
	if (d) {
		if (n)
			memcpy(d, p, n);
		d[n] = '\0';
	}
	return d;
}
