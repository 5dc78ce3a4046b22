/*
 * The `kafka` kind: wait for a message on Kafka topics that passes a filter.
 *
 * args:
 *   conn          required: a named connection (conn_type kafka); its extra
 *                 is librdkafka configuration (bootstrap.servers, security)
 *   topics        required: a topic name or a list of up to 64
 *   group_id      consumer group (default: the connection's group.id, else
 *                 "triggerd"); triggers on the same (conn, group) share one
 *                 consumer
 *   key           the message key must equal this string
 *   headers       {name: value}: the last header of each name must equal it
 *   json_pointer + equals
 *                 the value, parsed as JSON, must hold `equals` there
 *   value_regex   PCRE2 pattern the value must match (bounded matching)
 *   start         "latest" (default): only messages stamped at or after the
 *                 trigger's acceptance (stored as that unix ms, so a restart
 *                 keeps it); "earliest": any message the group consumes;
 *                 or a unix ms
 *   payload       "message" (default) or "value" (the value as a string, as
 *                 Airflow's AwaitMessageTrigger yields; skips null and empty
 *                 values)
 *   max_value     message payload: values past this many bytes are left out
 *                 (default 65536)
 *
 * The kind only parses and registers (already at parse, as a pending
 * interest while the trigger is being stored; for real at start);
 * engine/kwatch.c consumes, matches, fires and commits
 * (include/triggerd/kwatch.h).
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "triggerd/connections.h"
#include "triggerd/kind.h"
#include "triggerd/kwatch.h"
#include "triggerd/triggerd.h"

#define REGEX_MATCH_LIMIT 1000000
#define KEY_MAX 65536
#define HEADER_VALUE_MAX 65536
#define MAX_MAX_VALUE (16u << 20)

static int field(const msgpack_object *k)
{
	return k->type == MSGPACK_OBJECT_STR && k->via.str.size < 64 ? (int)k->via.str.size : 0;
}

static const char *field_ptr(const msgpack_object *k)
{
	return k->type == MSGPACK_OBJECT_STR ? k->via.str.ptr : "";
}

/* Kafka's legal topic names: 1..249 of [A-Za-z0-9._-], not "." or "..". */
static bool topic_ok(const char *p, size_t n)
{
	if (n == 0 || n > TD_KAFKA_TOPIC_MAX || (n == 1 && p[0] == '.') ||
	    (n == 2 && p[0] == '.' && p[1] == '.'))
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = p[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-'))
			return false;
	}
	return true;
}

static int add_topic(struct td_kafka_spec *sp, const msgpack_object *o, char *err, size_t errlen)
{
	if (o->type != MSGPACK_OBJECT_STR)
		return td_spec_err(err, errlen, "args.topics: expected topic names (strings)");
	if (o->via.str.size && o->via.str.ptr[0] == '^')
		return td_spec_err(err, errlen, "args.topics: topic patterns (^regex) are not supported; list the topics");
	if (!topic_ok(o->via.str.ptr, o->via.str.size))
		return td_spec_err(err, errlen, "args.topics: '%.*s' is not a topic name (1..249 of [A-Za-z0-9._-])",
			   (int)(o->via.str.size < 64 ? o->via.str.size : 64), o->via.str.ptr);
	for (unsigned i = 0; i < sp->ntopics; i++)
		if (strlen(sp->topics[i]) == o->via.str.size &&
		    !memcmp(sp->topics[i], o->via.str.ptr, o->via.str.size))
			return 0; /* listed twice: once is enough */
	if (sp->ntopics >= TD_KAFKA_TOPICS_MAX)
		return td_spec_err(err, errlen, "args.topics: at most %d topics", TD_KAFKA_TOPICS_MAX);
	if (!(sp->topics[sp->ntopics] = td_memdup0(o->via.str.ptr, o->via.str.size)))
		return -ENOMEM;
	sp->ntopics++;
	return 0;
}

static int parse_topics(struct td_kafka_spec *sp, const msgpack_object *v, char *err,
			size_t errlen)
{
	if (v->type == MSGPACK_OBJECT_STR)
		return add_topic(sp, v, err, errlen);
	if (v->type != MSGPACK_OBJECT_ARRAY || v->via.array.size == 0)
		return td_spec_err(err, errlen, "args.topics: expected a topic name or a non-empty list of them");
	for (uint32_t i = 0; i < v->via.array.size; i++) {
		int rc = add_topic(sp, &v->via.array.ptr[i], err, errlen);
		if (rc)
			return rc;
	}
	return 0;
}

static int parse_headers(struct td_kafka_spec *sp, const msgpack_object *v, char *err,
			 size_t errlen)
{
	if (v->type != MSGPACK_OBJECT_MAP || v->via.map.size == 0 ||
	    v->via.map.size > TD_KAFKA_HEADERS_MAX)
		return td_spec_err(err, errlen, "args.headers: expected a map of 1..%d header names to string values",
			   TD_KAFKA_HEADERS_MAX);
	for (uint32_t i = 0; i < v->via.map.size; i++) {
		const msgpack_object *k = &v->via.map.ptr[i].key, *val = &v->via.map.ptr[i].val;
		if (k->type != MSGPACK_OBJECT_STR || k->via.str.size == 0 || k->via.str.size > 255 ||
		    memchr(k->via.str.ptr, '\0', k->via.str.size))
			return td_spec_err(err, errlen, "args.headers: names must be 1..255 byte strings");
		if (val->type != MSGPACK_OBJECT_STR || val->via.str.size > HEADER_VALUE_MAX)
			return td_spec_err(err, errlen, "args.headers.%.*s: expected a string value", field(k),
				   k->via.str.ptr);
		for (uint32_t j = 0; j < i; j++)
			if (msgpack_object_equal(*k, v->via.map.ptr[j].key))
				return td_spec_err(err, errlen, "args.headers.%.*s: given twice", field(k),
					   k->via.str.ptr);
		struct td_kafka_header *h = &sp->headers[sp->nheaders];
		if (!(h->name = td_memdup0(k->via.str.ptr, k->via.str.size)) ||
		    !(h->value = td_memdup0(val->via.str.ptr, val->via.str.size))) {
			free(h->name);
			h->name = NULL;
			return -ENOMEM;
		}
		h->value_len = val->via.str.size;
		sp->nheaders++;
	}
	return 0;
}

static int parse_regex(struct td_kafka_spec *sp, const msgpack_object *v, char *err, size_t errlen)
{
	if (v->type != MSGPACK_OBJECT_STR || v->via.str.size == 0 || v->via.str.size > 4096)
		return td_spec_err(err, errlen, "args.value_regex: expected a PCRE2 pattern string");
	int ec;
	PCRE2_SIZE eo;
	pcre2_code *re = pcre2_compile((PCRE2_SPTR)v->via.str.ptr, v->via.str.size,
				       PCRE2_MATCH_INVALID_UTF | PCRE2_UTF, &ec, &eo, NULL);
	if (!re) {
		char msg[120];
		pcre2_get_error_message(ec, (PCRE2_UCHAR *)msg, sizeof(msg));
		return td_spec_err(err, errlen, "args.value_regex: %s at offset %zu", msg, (size_t)eo);
	}
	sp->re = (struct pcre2_real_code_8 *)re;
	/* Every message on the topic is matched against it: JIT when
	 * available (the match limit still applies). */
	(void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
	pcre2_match_context *mc = pcre2_match_context_create(NULL);
	pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
	sp->mctx = (struct pcre2_real_match_context_8 *)mc;
	sp->md = (struct pcre2_real_match_data_8 *)md;
	if (!mc || !md || !(sp->regex = td_memdup0(v->via.str.ptr, v->via.str.size)))
		return -ENOMEM;
	sp->regex_len = v->via.str.size;
	pcre2_set_match_limit(mc, REGEX_MATCH_LIMIT);
	pcre2_set_depth_limit(mc, 10000);
	return 0;
}

static int parse_start(struct td_kafka_spec *sp, const msgpack_object *v, int64_t now_ms,
		       char *err, size_t errlen)
{
	if (td_mp_str_is(v, "latest")) {
		sp->since_ms = now_ms;
	} else if (td_mp_str_is(v, "earliest")) {
		sp->since_ms = -1;
	} else if (v->type == MSGPACK_OBJECT_POSITIVE_INTEGER &&
		   v->via.u64 <= (uint64_t)TD_TIME_MAX_MS) {
		sp->since_ms = (int64_t)v->via.u64;
	} else {
		return td_spec_err(err, errlen, "args.start: expected \"latest\", \"earliest\" or a unix time in ms");
	}
	return 0;
}

static int parse_args(struct td_trigger *t, struct td_kafka_spec *sp, const msgpack_object *args,
		      int64_t now_ms, char *err, size_t errlen)
{
	const msgpack_object *equals = NULL, *group = NULL, *conn = NULL;
	bool have_topics = false, have_start = false;
	int rc = 0;
	sp->max_value = TD_KAFKA_DEFAULT_MAX_VALUE;
	if (!args || args->type != MSGPACK_OBJECT_MAP)
		return td_spec_err(err, errlen, "args: required map with at least \"conn\" and \"topics\"");
	for (uint32_t i = 0; i < args->via.map.size; i++)
		for (uint32_t j = 0; j < i; j++)
			if (msgpack_object_equal(args->via.map.ptr[i].key, args->via.map.ptr[j].key))
				return td_spec_err(err, errlen, "args.%.*s: given twice",
					   field(&args->via.map.ptr[i].key),
					   field_ptr(&args->via.map.ptr[i].key));
	for (uint32_t i = 0; i < args->via.map.size && !rc; i++) {
		const msgpack_object *k = &args->via.map.ptr[i].key;
		const msgpack_object *v = &args->via.map.ptr[i].val;
		if (td_mp_str_is(k, "conn")) {
			if (v->type != MSGPACK_OBJECT_STR || v->via.str.size == 0 ||
			    v->via.str.size > TD_CONN_ID_MAX || memchr(v->via.str.ptr, '\0', v->via.str.size))
				rc = td_spec_err(err, errlen, "args.conn: expected a connection id");
			conn = v;
		} else if (td_mp_str_is(k, "topics")) {
			rc = parse_topics(sp, v, err, errlen);
			have_topics = true;
		} else if (td_mp_str_is(k, "group_id")) {
			if (v->type != MSGPACK_OBJECT_STR || v->via.str.size == 0 ||
			    v->via.str.size > TD_KAFKA_GROUP_MAX ||
			    memchr(v->via.str.ptr, '\0', v->via.str.size))
				rc = td_spec_err(err, errlen, "args.group_id: expected 1..%d bytes", TD_KAFKA_GROUP_MAX);
			group = v;
		} else if (td_mp_str_is(k, "key")) {
			if (v->type != MSGPACK_OBJECT_STR || v->via.str.size > KEY_MAX)
				rc = td_spec_err(err, errlen, "args.key: expected a string (the key must equal it)");
			else if (!(sp->key = td_memdup0(v->via.str.ptr, v->via.str.size)))
				rc = -ENOMEM;
			sp->key_len = v->via.str.size;
			sp->has_key = true;
		} else if (td_mp_str_is(k, "headers")) {
			rc = parse_headers(sp, v, err, errlen);
		} else if (td_mp_str_is(k, "json_pointer")) {
			if (v->type != MSGPACK_OBJECT_STR || v->via.str.size > 1024 ||
			    (v->via.str.size && v->via.str.ptr[0] != '/') ||
			    memchr(v->via.str.ptr, '\0', v->via.str.size))
				rc = td_spec_err(err, errlen, "args.json_pointer: expected an RFC 6901 pointer (\"\" or starting with /)");
			else if (!(sp->pointer = td_memdup0(v->via.str.ptr, v->via.str.size)))
				rc = -ENOMEM;
		} else if (td_mp_str_is(k, "equals")) {
			equals = v;
		} else if (td_mp_str_is(k, "value_regex")) {
			rc = parse_regex(sp, v, err, errlen);
		} else if (td_mp_str_is(k, "start")) {
			rc = parse_start(sp, v, now_ms, err, errlen);
			have_start = true;
		} else if (td_mp_str_is(k, "payload")) {
			if (td_mp_str_is(v, "message"))
				sp->payload = TD_KAFKA_PAYLOAD_MESSAGE;
			else if (td_mp_str_is(v, "value"))
				sp->payload = TD_KAFKA_PAYLOAD_VALUE;
			else
				rc = td_spec_err(err, errlen, "args.payload: expected \"message\" or \"value\"");
		} else if (td_mp_str_is(k, "max_value")) {
			if (v->type != MSGPACK_OBJECT_POSITIVE_INTEGER || v->via.u64 > MAX_MAX_VALUE)
				rc = td_spec_err(err, errlen, "args.max_value: expected bytes, 0..%u", MAX_MAX_VALUE);
			else
				sp->max_value = (size_t)v->via.u64;
		} else {
			rc = td_spec_err(err, errlen, "args.%.*s: unknown field (expected conn, topics, group_id, key, "
				 "headers, json_pointer, equals, value_regex, start, payload, max_value)",
				 field(k), field_ptr(k));
		}
	}
	if (rc)
		return rc;
	if (!conn)
		return td_spec_err(err, errlen, "args.conn: required (a Kafka connection id)");
	if (!have_topics)
		return td_spec_err(err, errlen, "args.topics: required (a topic name or a list)");
	if (!!sp->pointer != !!equals)
		return td_spec_err(err, errlen, "args.%s: json_pointer and equals go together",
			   sp->pointer ? "equals" : "json_pointer");
	if (!have_start)
		sp->since_ms = now_ms;
	if (equals) {
		msgpack_sbuffer sb;
		msgpack_packer pk;
		msgpack_sbuffer_init(&sb);
		msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
		msgpack_pack_object(&pk, *equals);
		sp->equals = td_sbuffer_shrink(&sb);
		sp->equals_len = sb.size;
		if (!sp->equals)
			return -ENOMEM;
	}
	if (!(sp->conn = td_memdup0(conn->via.str.ptr, conn->via.str.size)))
		return -ENOMEM;
	struct td_shard *s = td_trigger_shard(t);
	if ((rc = td_kwatch_check_conn(s, sp->conn, err, errlen)))
		return rc;
	if (group) {
		sp->group = td_memdup0(group->via.str.ptr, group->via.str.size);
		sp->group_given = true;
	} else {
		const char *g = td_kwatch_conn_group(s, sp->conn);
		sp->group = strdup(g && *g ? g : TD_KAFKA_DEFAULT_GROUP);
	}
	return sp->group ? 0 : -ENOMEM;
}

static int parse(struct td_trigger *t, const msgpack_object *args, int64_t now_ms, char *err,
		 size_t errlen)
{
	struct td_kafka_waiter *w = td_trigger_state(t);
	memset(w, 0, sizeof(*w));
	struct td_kafka_spec *sp = calloc(1, sizeof(*sp));
	if (!sp) {
		snprintf(err, errlen, "args: out of memory");
		return -ENOMEM;
	}
	int rc = parse_args(t, sp, args, now_ms, err, errlen);
	if (rc) {
		if (rc == -ENOMEM)
			snprintf(err, errlen, "args: out of memory");
		td_kafka_spec_free(sp);
		return rc;
	}
	w->spec = sp;
	/* Pending interest from acceptance on, since `start: latest` counts
	 * from here: a message matching it that is consumed while the
	 * trigger is being stored is held for it, not resolved without it
	 * (engine/kwatch.c). Failing here is not final: start registers. */
	(void)td_kwatch_wait(td_trigger_shard(t), w);
	return 0;
}

static void pack_str(msgpack_packer *pk, const char *s, size_t n)
{
	msgpack_pack_str(pk, n);
	msgpack_pack_str_body(pk, s, n);
}

static void pack_cstr(msgpack_packer *pk, const char *s)
{
	pack_str(pk, s, strlen(s));
}

/* The normalised args: "start" becomes the unix ms it stands for. */
static void pack_args(const struct td_trigger *t, msgpack_packer *pk)
{
	const struct td_kafka_spec *sp = ((struct td_kafka_waiter *)td_trigger_state(t))->spec;
	bool value = sp->payload == TD_KAFKA_PAYLOAD_VALUE;
	bool cap = sp->max_value != TD_KAFKA_DEFAULT_MAX_VALUE;
	msgpack_pack_map(pk, 3 + sp->group_given + sp->has_key + !!sp->nheaders + 2 * !!sp->pointer +
			 !!sp->re + value + cap);
	pack_cstr(pk, "conn");
	pack_cstr(pk, sp->conn);
	pack_cstr(pk, "topics");
	msgpack_pack_array(pk, sp->ntopics);
	for (unsigned i = 0; i < sp->ntopics; i++)
		pack_cstr(pk, sp->topics[i]);
	if (sp->group_given) {
		pack_cstr(pk, "group_id");
		pack_cstr(pk, sp->group);
	}
	if (sp->has_key) {
		pack_cstr(pk, "key");
		pack_str(pk, sp->key, sp->key_len);
	}
	if (sp->nheaders) {
		pack_cstr(pk, "headers");
		msgpack_pack_map(pk, sp->nheaders);
		for (unsigned i = 0; i < sp->nheaders; i++) {
			pack_cstr(pk, sp->headers[i].name);
			pack_str(pk, sp->headers[i].value, sp->headers[i].value_len);
		}
	}
	if (sp->pointer) {
		pack_cstr(pk, "json_pointer");
		pack_cstr(pk, sp->pointer);
		pack_cstr(pk, "equals");
		msgpack_pack_str_body(pk, sp->equals, sp->equals_len); /* raw bytes */
	}
	if (sp->re) {
		pack_cstr(pk, "value_regex");
		pack_str(pk, sp->regex, sp->regex_len);
	}
	pack_cstr(pk, "start");
	if (sp->since_ms >= 0)
		msgpack_pack_int64(pk, sp->since_ms);
	else
		pack_cstr(pk, "earliest");
	if (value) {
		pack_cstr(pk, "payload");
		pack_cstr(pk, "value");
	}
	if (cap) {
		pack_cstr(pk, "max_value");
		msgpack_pack_uint64(pk, sp->max_value);
	}
}

static int start(struct td_trigger *t)
{
	return td_kwatch_wait(td_trigger_shard(t), td_trigger_state(t));
}

static void stop(struct td_trigger *t)
{
	td_kwatch_unwait(td_trigger_state(t));
}

static void destroy(struct td_trigger *t)
{
	struct td_kafka_waiter *w = td_trigger_state(t);
	td_kwatch_unwait(w);
	td_kafka_spec_free(w->spec);
	w->spec = NULL;
}

void td_kafka_spec_free(struct td_kafka_spec *sp)
{
	if (!sp)
		return;
	free(sp->conn);
	free(sp->group);
	for (unsigned i = 0; i < sp->ntopics; i++)
		free(sp->topics[i]);
	free(sp->key);
	for (unsigned i = 0; i < sp->nheaders; i++) {
		free(sp->headers[i].name);
		free(sp->headers[i].value);
	}
	free(sp->pointer);
	free(sp->equals);
	free(sp->regex);
	pcre2_match_data_free((pcre2_match_data *)sp->md);
	pcre2_match_context_free((pcre2_match_context *)sp->mctx);
	pcre2_code_free((pcre2_code *)sp->re);
	free(sp);
}

const struct td_kind td_kind_kafka = {
	.name = "kafka",
	.state_size = sizeof(struct td_kafka_waiter),
	.parse = parse,
	.pack_args = pack_args,
	.start = start,
	.stop = stop,
	.destroy = destroy,
};
