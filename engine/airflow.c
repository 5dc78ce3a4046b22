/*
 * Airflow serialized triggers (classpath + kwargs) rewritten as native
 * specs (kind + args) before validation, so they are validated, stored and
 * fired like any other spec. Payloads follow what the Airflow trigger
 * would have yielded in its TriggerEvent.
 *
 *   DateTimeTrigger (airflow.providers.standard.triggers.temporal and 2.x
 *   airflow.triggers.temporal): kwargs moment (ISO 8601 with offset, or
 *   Airflow's {"__type": "datetime", "__var": <epoch seconds>}),
 *   end_from_trigger (accepted; ending the task is the worker's side).
 *   -> timer at the moment; payload the moment as Airflow serializes a
 *   datetime: {"__type": "datetime", "__var": <epoch seconds>}.
 *
 *   HttpSensorTrigger (airflow.providers.http.triggers.http): kwargs
 *   endpoint, http_conn_id (default "http_default"), method, data, headers,
 *   extra_options, poke_interval (seconds, default 5).
 *   -> http on the named connection; like the Airflow trigger, any status
 *   below 400 succeeds, 404 polls again, other 4xx/5xx fail; payload true.
 *
 *   AwaitMessageTrigger (airflow.providers.apache.kafka.triggers.
 *   await_message): kwargs topics, kafka_config_id (default
 *   "kafka_default"), poll_timeout / poll_interval (accepted, unused: the
 *   consumer is event-driven), commit_offset (accepted: triggerd commits
 *   once the event is stored), apply_function (refused when set: Python).
 *   -> kafka on the connection, from the group's position (start
 *   "earliest"); payload the first non-empty value as a string.
 *
 *   FileTrigger (airflow.providers.standard.triggers.file and 2.x
 *   airflow.triggers.file): kwargs filepath (absolute; a glob), recursive,
 *   poke_interval (or 2.x poll_interval; seconds, default 5).
 *   -> file on the path (inotify; the interval is only the polling
 *   fallback's); payload true.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "engine_i.h"
#include "triggerd/timefmt.h"

static const msgpack_object *get(const msgpack_object *map, const char *key)
{
	if (!map || map->type != MSGPACK_OBJECT_MAP)
		return NULL;
	for (uint32_t i = 0; i < map->via.map.size; i++)
		if (td_mp_str_is(&map->via.map.ptr[i].key, key))
			return &map->via.map.ptr[i].val;
	return NULL;
}

static void pk_str(msgpack_packer *pk, const char *s)
{
	size_t n = strlen(s);
	msgpack_pack_str(pk, n);
	msgpack_pack_str_body(pk, s, n);
}

/* Copy every top-level field of @spec except classpath and kwargs; the
 * caller packs kind and args after. Returns how many were copied. */
static uint32_t count_rest(const msgpack_object *spec)
{
	uint32_t n = 0;
	for (uint32_t i = 0; i < spec->via.map.size; i++) {
		const msgpack_object *k = &spec->via.map.ptr[i].key;
		if (!td_mp_str_is(k, "classpath") && !td_mp_str_is(k, "kwargs"))
			n++;
	}
	return n;
}

static void pack_rest(msgpack_packer *pk, const msgpack_object *spec)
{
	for (uint32_t i = 0; i < spec->via.map.size; i++) {
		const msgpack_object_kv *kv = &spec->via.map.ptr[i];
		if (td_mp_str_is(&kv->key, "classpath") || td_mp_str_is(&kv->key, "kwargs"))
			continue;
		msgpack_pack_object(pk, kv->key);
		msgpack_pack_object(pk, kv->val);
	}
}

static double number(const msgpack_object *o, bool *ok)
{
	*ok = true;
	switch (o->type) {
	case MSGPACK_OBJECT_POSITIVE_INTEGER: return (double)o->via.u64;
	case MSGPACK_OBJECT_NEGATIVE_INTEGER: return (double)o->via.i64;
	case MSGPACK_OBJECT_FLOAT32:
	case MSGPACK_OBJECT_FLOAT64: return o->via.f64;
	default: *ok = false; return 0;
	}
}

/* An Airflow datetime: ISO text or {"__type":"datetime","__var":secs}. */
static int moment_ms(const msgpack_object *m, int64_t *out, char *err, size_t errlen)
{
	if (m && m->type == MSGPACK_OBJECT_STR) {
		if (td_rfc3339_parse(m->via.str.ptr, m->via.str.size, out) == 0 && *out >= 0)
			return 0;
		snprintf(err, errlen, "kwargs.moment: expected an ISO 8601 date-time with an offset");
		return TD_EINVAL_SPEC;
	}
	const msgpack_object *type = get(m, "__type"), *var = get(m, "__var");
	bool ok = false;
	double secs = var ? number(var, &ok) : 0;
	if (type && td_mp_str_is(type, "datetime") && ok && secs >= 0 &&
	    secs * 1000.0 <= (double)TD_TIME_MAX_MS) {
		/* Rounded up: the timer must not fire before the moment. */
		*out = (int64_t)ceil(secs * 1000.0 - 1e-6);
		return 0;
	}
	snprintf(err, errlen, "kwargs.moment: expected an ISO 8601 string or "
		 "{\"__type\": \"datetime\", \"__var\": <epoch seconds>}");
	return TD_EINVAL_SPEC;
}

/* Refuse kwargs not in @known (@n names) of class @cls ("a FileTrigger"). */
static int only_known(const msgpack_object *kw, const char *const *known, size_t n,
		      const char *cls, char *err, size_t errlen)
{
	for (uint32_t i = 0; i < kw->via.map.size; i++) {
		const msgpack_object *k = &kw->via.map.ptr[i].key;
		bool found = false;
		for (size_t j = 0; j < n; j++)
			found |= td_mp_str_is(k, known[j]);
		if (!found) {
			snprintf(err, errlen, "kwargs.%.*s: not %s argument",
				 (int)(k->type == MSGPACK_OBJECT_STR && k->via.str.size < 64 ?
				       k->via.str.size : 0), k->via.str.ptr, cls);
			return TD_EINVAL_SPEC;
		}
	}
	return 0;
}

static int datetime_trigger(const msgpack_object *spec, const msgpack_object *kw,
			    msgpack_packer *pk, char *err, size_t errlen)
{
	const msgpack_object *moment = get(kw, "moment");
	if (!moment) {
		snprintf(err, errlen, "kwargs.moment: required");
		return TD_EINVAL_SPEC;
	}
	static const char *const known[] = {"moment", "end_from_trigger"};
	int kr = only_known(kw, known, TD_ARRAY_LEN(known), "a DateTimeTrigger", err, errlen);
	if (kr)
		return kr;
	int64_t at;
	int rc = moment_ms(moment, &at, err, errlen);
	if (rc)
		return rc;
	msgpack_pack_map(pk, count_rest(spec) + 2);
	pack_rest(pk, spec);
	pk_str(pk, "kind");
	pk_str(pk, "timer");
	pk_str(pk, "args");
	msgpack_pack_map(pk, 2);
	pk_str(pk, "at_ms");
	msgpack_pack_int64(pk, at);
	pk_str(pk, "success_payload");
	msgpack_pack_map(pk, 2);
	pk_str(pk, "__type");
	pk_str(pk, "datetime");
	pk_str(pk, "__var");
	msgpack_pack_double(pk, (double)at / 1000.0);
	return 0;
}

static int http_sensor_trigger(const msgpack_object *spec, const msgpack_object *kw,
			       msgpack_packer *pk, char *err, size_t errlen)
{
	static const char *const known[] = {"endpoint", "http_conn_id", "method", "data",
					    "headers", "extra_options", "poke_interval"};
	int kr = only_known(kw, known, TD_ARRAY_LEN(known), "an HttpSensorTrigger", err, errlen);
	if (kr)
		return kr;
	const msgpack_object *endpoint = get(kw, "endpoint"), *conn = get(kw, "http_conn_id");
	const msgpack_object *method = get(kw, "method"), *data = get(kw, "data");
	const msgpack_object *headers = get(kw, "headers"), *poke = get(kw, "poke_interval");
	int64_t interval = 5000;
	if (poke && poke->type != MSGPACK_OBJECT_NIL) {
		bool ok;
		double secs = number(poke, &ok);
		if (!ok || secs < 0.1 || secs > 86400) {
			snprintf(err, errlen, "kwargs.poke_interval: expected seconds, 0.1..86400");
			return TD_EINVAL_SPEC;
		}
		interval = (int64_t)(secs * 1000.0 + 0.5);
	}
	if (data && data->type != MSGPACK_OBJECT_NIL && data->type != MSGPACK_OBJECT_STR) {
		/* aiohttp would form-encode a dict for POST and put it in the
		 * query for GET; not reproduced here yet. */
		snprintf(err, errlen, "kwargs.data: only a string body is supported (got a structured value)");
		return TD_EINVAL_SPEC;
	}
	uint32_t nargs = 8 + (method && method->type != MSGPACK_OBJECT_NIL) +
			 (data && data->type == MSGPACK_OBJECT_STR) +
			 (headers && headers->type != MSGPACK_OBJECT_NIL);
	msgpack_pack_map(pk, count_rest(spec) + 2);
	pack_rest(pk, spec);
	pk_str(pk, "kind");
	pk_str(pk, "http");
	pk_str(pk, "args");
	msgpack_pack_map(pk, nargs);
	pk_str(pk, "conn");
	if (conn && conn->type != MSGPACK_OBJECT_NIL)
		msgpack_pack_object(pk, *conn);
	else
		pk_str(pk, "http_default");
	pk_str(pk, "endpoint");
	if (endpoint && endpoint->type != MSGPACK_OBJECT_NIL)
		msgpack_pack_object(pk, *endpoint);
	else
		pk_str(pk, "");
	if (method && method->type != MSGPACK_OBJECT_NIL) {
		pk_str(pk, "method");
		msgpack_pack_object(pk, *method);
	}
	if (data && data->type == MSGPACK_OBJECT_STR) {
		pk_str(pk, "body");
		msgpack_pack_object(pk, *data);
	}
	if (headers && headers->type != MSGPACK_OBJECT_NIL) {
		pk_str(pk, "headers");
		msgpack_pack_object(pk, *headers);
	}
	pk_str(pk, "interval_ms");
	msgpack_pack_int64(pk, interval);
	pk_str(pk, "success_status");
	msgpack_pack_array(pk, 3);
	pk_str(pk, "1xx");
	pk_str(pk, "2xx");
	pk_str(pk, "3xx");
	pk_str(pk, "retry_status");
	msgpack_pack_array(pk, 1);
	msgpack_pack_uint16(pk, 404);
	pk_str(pk, "failure_status");
	msgpack_pack_array(pk, 2);
	pk_str(pk, "4xx");
	pk_str(pk, "5xx");
	pk_str(pk, "success_payload");
	msgpack_pack_true(pk);
	pk_str(pk, "max_body");
	msgpack_pack_uint32(pk, 0);
	return 0;
}

static int file_trigger(const msgpack_object *spec, const msgpack_object *kw,
			msgpack_packer *pk, char *err, size_t errlen)
{
	static const char *const known[] = {"filepath", "recursive", "poke_interval",
					    "poll_interval"};
	int kr = only_known(kw, known, TD_ARRAY_LEN(known), "a FileTrigger", err, errlen);
	if (kr)
		return kr;
	const msgpack_object *path = get(kw, "filepath"), *rec = get(kw, "recursive");
	const msgpack_object *poke = get(kw, "poke_interval");
	if (!poke || poke->type == MSGPACK_OBJECT_NIL)
		poke = get(kw, "poll_interval"); /* 2.x */
	if (!path || path->type != MSGPACK_OBJECT_STR || path->via.str.size == 0 ||
	    path->via.str.ptr[0] != '/') {
		snprintf(err, errlen, "kwargs.filepath: expected an absolute path or glob "
			 "(triggerd has no working directory to resolve a relative one)");
		return TD_EINVAL_SPEC;
	}
	if (rec && rec->type != MSGPACK_OBJECT_NIL && rec->type != MSGPACK_OBJECT_BOOLEAN) {
		snprintf(err, errlen, "kwargs.recursive: expected true or false");
		return TD_EINVAL_SPEC;
	}
	int64_t interval = 5000;
	if (poke && poke->type != MSGPACK_OBJECT_NIL) {
		bool ok;
		double secs = number(poke, &ok);
		if (!ok || secs < 0.1 || secs > 86400) {
			snprintf(err, errlen, "kwargs.poke_interval: expected seconds, 0.1..86400");
			return TD_EINVAL_SPEC;
		}
		interval = (int64_t)(secs * 1000.0 + 0.5);
	}
	msgpack_pack_map(pk, count_rest(spec) + 2);
	pack_rest(pk, spec);
	pk_str(pk, "kind");
	pk_str(pk, "file");
	pk_str(pk, "args");
	msgpack_pack_map(pk, 4);
	pk_str(pk, "path");
	msgpack_pack_object(pk, *path);
	pk_str(pk, "recursive");
	if (rec && rec->type == MSGPACK_OBJECT_BOOLEAN && rec->via.boolean)
		msgpack_pack_true(pk);
	else
		msgpack_pack_false(pk);
	pk_str(pk, "poll_interval_ms");
	msgpack_pack_int64(pk, interval);
	pk_str(pk, "success_payload");
	msgpack_pack_true(pk);
	return 0;
}

/*
 * Kafka's AwaitMessageTrigger: without apply_function the Airflow trigger
 * yields the first message whose value is not empty, decoded as text; with
 * one it runs Python on each message, which triggerd cannot: such a spec is
 * refused with an error that points at the native filters.
 */
static int kafka_await_trigger(const msgpack_object *spec, const msgpack_object *kw,
			       msgpack_packer *pk, char *err, size_t errlen)
{
	static const char *const known[] = {
		"topics", "apply_function", "apply_function_args", "apply_function_kwargs",
		"kafka_config_id", "poll_timeout", "poll_interval", "commit_offset",
	};
	int kr = only_known(kw, known, TD_ARRAY_LEN(known), "an AwaitMessageTrigger", err, errlen);
	if (kr)
		return kr;
	const msgpack_object *fn = get(kw, "apply_function");
	if (fn && fn->type != MSGPACK_OBJECT_NIL &&
	    !(fn->type == MSGPACK_OBJECT_STR && fn->via.str.size == 0)) {
		snprintf(err, errlen, "kwargs.apply_function: a Python callable cannot run in "
			 "triggerd; submit {\"kind\": \"kafka\"} with a native filter in args "
			 "(key, headers, json_pointer + equals, value_regex) instead "
			 "(docs/kinds.md#kafka)");
		return TD_EINVAL_SPEC;
	}
	static const char *const fn_args[] = {"apply_function_args", "apply_function_kwargs"};
	for (size_t j = 0; j < TD_ARRAY_LEN(fn_args); j++) {
		const msgpack_object *a = get(kw, fn_args[j]);
		if (a && !(a->type == MSGPACK_OBJECT_NIL ||
			   (a->type == MSGPACK_OBJECT_ARRAY && a->via.array.size == 0) ||
			   (a->type == MSGPACK_OBJECT_MAP && a->via.map.size == 0))) {
			snprintf(err, errlen, "kwargs.%s: only meaningful with apply_function, "
				 "which triggerd cannot run", fn_args[j]);
			return TD_EINVAL_SPEC;
		}
	}
	const msgpack_object *topics = get(kw, "topics"), *conn = get(kw, "kafka_config_id");
	const msgpack_object *commit = get(kw, "commit_offset");
	if (!topics || topics->type == MSGPACK_OBJECT_NIL) {
		snprintf(err, errlen, "kwargs.topics: required");
		return TD_EINVAL_SPEC;
	}
	if (conn && conn->type != MSGPACK_OBJECT_NIL && conn->type != MSGPACK_OBJECT_STR) {
		snprintf(err, errlen, "kwargs.kafka_config_id: expected a connection id");
		return TD_EINVAL_SPEC;
	}
	if (commit && commit->type != MSGPACK_OBJECT_NIL && commit->type != MSGPACK_OBJECT_BOOLEAN) {
		snprintf(err, errlen, "kwargs.commit_offset: expected true or false");
		return TD_EINVAL_SPEC;
	}
	static const char *const secs[] = {"poll_timeout", "poll_interval"};
	for (size_t j = 0; j < TD_ARRAY_LEN(secs); j++) {
		const msgpack_object *o = get(kw, secs[j]);
		bool ok = true;
		if (o && o->type != MSGPACK_OBJECT_NIL && (number(o, &ok) < 0 || !ok)) {
			snprintf(err, errlen, "kwargs.%s: expected seconds", secs[j]);
			return TD_EINVAL_SPEC;
		}
	}
	msgpack_pack_map(pk, count_rest(spec) + 2);
	pack_rest(pk, spec);
	pk_str(pk, "kind");
	pk_str(pk, "kafka");
	pk_str(pk, "args");
	msgpack_pack_map(pk, 4);
	pk_str(pk, "conn");
	if (conn && conn->type == MSGPACK_OBJECT_STR)
		msgpack_pack_object(pk, *conn);
	else
		pk_str(pk, "kafka_default");
	pk_str(pk, "topics");
	msgpack_pack_object(pk, *topics);
	/* The group's position decides, as for the Airflow consumer. */
	pk_str(pk, "start");
	pk_str(pk, "earliest");
	pk_str(pk, "payload");
	pk_str(pk, "value");
	return 0;
}

/*
 * Redis (airflow.providers.redis.triggers): AwaitMessageTrigger (channels,
 * redis_conn_id, poll_interval) yields redis-py's message dict for the first
 * "message" on a channel; AwaitMessageFromListTrigger (lists, redis_conn_id,
 * timeout) BRPOPs the lists in order and yields {"list", "data"}. Both loop
 * until they get something: poll_interval and timeout only pace that loop
 * (a BRPOP timing out is retried), so they are accepted and not used, and
 * the trigger ends only with the spec's own timeout_ms / deadline_ms.
 */
static int redis_trigger(const msgpack_object *spec, const msgpack_object *kw,
			 msgpack_packer *pk, char *err, size_t errlen, bool list)
{
	const char *what = list ? "lists" : "channels", *pace = list ? "timeout" : "poll_interval";
	const char *const known[] = {what, "redis_conn_id", pace};
	int kr = only_known(kw, known, TD_ARRAY_LEN(known),
			   list ? "an AwaitMessageFromListTrigger" : "an AwaitMessageTrigger",
			   err, errlen);
	if (kr)
		return kr;
	const msgpack_object *names = get(kw, what), *conn = get(kw, "redis_conn_id");
	const msgpack_object *p = get(kw, pace);
	if (!names || (names->type != MSGPACK_OBJECT_STR && names->type != MSGPACK_OBJECT_ARRAY)) {
		snprintf(err, errlen, "kwargs.%s: required (a name or a list of names)", what);
		return TD_EINVAL_SPEC;
	}
	if (conn && conn->type != MSGPACK_OBJECT_NIL && conn->type != MSGPACK_OBJECT_STR) {
		snprintf(err, errlen, "kwargs.redis_conn_id: expected a connection id");
		return TD_EINVAL_SPEC;
	}
	bool ok = true;
	if (p && p->type != MSGPACK_OBJECT_NIL && (number(p, &ok) < 0 || !ok)) {
		snprintf(err, errlen, "kwargs.%s: expected seconds (>= 0)", pace);
		return TD_EINVAL_SPEC;
	}
	msgpack_pack_map(pk, count_rest(spec) + 2);
	pack_rest(pk, spec);
	pk_str(pk, "kind");
	pk_str(pk, "redis");
	pk_str(pk, "args");
	msgpack_pack_map(pk, list ? 3 : 2);
	pk_str(pk, "conn");
	if (conn && conn->type == MSGPACK_OBJECT_STR)
		msgpack_pack_object(pk, *conn);
	else
		pk_str(pk, "redis_default");
	pk_str(pk, what);
	msgpack_pack_object(pk, *names);
	if (list) {
		pk_str(pk, "pop");
		pk_str(pk, "right"); /* BRPOP */
	}
	return 0;
}

static int redis_await_trigger(const msgpack_object *spec, const msgpack_object *kw,
			       msgpack_packer *pk, char *err, size_t errlen)
{
	return redis_trigger(spec, kw, pk, err, errlen, false);
}

static int redis_list_trigger(const msgpack_object *spec, const msgpack_object *kw,
			      msgpack_packer *pk, char *err, size_t errlen)
{
	return redis_trigger(spec, kw, pk, err, errlen, true);
}

static const struct {
	const char *classpath;
	int (*fn)(const msgpack_object *spec, const msgpack_object *kw,
		  msgpack_packer *pk, char *err, size_t errlen);
} classes[] = {
	{"airflow.providers.standard.triggers.temporal.DateTimeTrigger", datetime_trigger},
	{"airflow.triggers.temporal.DateTimeTrigger", datetime_trigger},
	{"airflow.providers.http.triggers.http.HttpSensorTrigger", http_sensor_trigger},
	{"airflow.providers.apache.kafka.triggers.await_message.AwaitMessageTrigger",
	 kafka_await_trigger},
	{"airflow.providers.standard.triggers.file.FileTrigger", file_trigger},
	{"airflow.triggers.file.FileTrigger", file_trigger},
	{"airflow.providers.redis.triggers.redis_await_message.AwaitMessageTrigger",
	 redis_await_trigger},
	{"airflow.providers.redis.triggers.redis_list_await_message.AwaitMessageFromListTrigger",
	 redis_list_trigger},
};

int td_airflow_rewrite(const msgpack_object *spec, msgpack_sbuffer *out, char *err,
		       size_t errlen)
{
	const msgpack_object *cp = get(spec, "classpath");
	if (!cp)
		return 1;
	const msgpack_object *kw = get(spec, "kwargs");
	if (get(spec, "kind") || get(spec, "args")) {
		snprintf(err, errlen, "classpath: give either classpath + kwargs or kind + args");
		return TD_EINVAL_SPEC;
	}
	if (cp->type != MSGPACK_OBJECT_STR) {
		snprintf(err, errlen, "classpath: expected a string");
		return TD_EINVAL_SPEC;
	}
	static const msgpack_object empty = {.type = MSGPACK_OBJECT_MAP};
	if (!kw || kw->type == MSGPACK_OBJECT_NIL)
		kw = &empty;
	if (kw->type != MSGPACK_OBJECT_MAP) {
		snprintf(err, errlen, "kwargs: expected a map");
		return TD_EINVAL_SPEC;
	}
	for (size_t i = 0; i < TD_ARRAY_LEN(classes); i++) {
		if (!td_mp_str_is(cp, classes[i].classpath))
			continue;
		msgpack_packer pk;
		msgpack_packer_init(&pk, out, msgpack_sbuffer_write);
		return classes[i].fn(spec, kw, &pk, err, errlen);
	}
	snprintf(err, errlen, "classpath: unsupported Airflow trigger '%.*s' (supported: "
		 "DateTimeTrigger, HttpSensorTrigger, FileTrigger, Kafka AwaitMessageTrigger, Redis AwaitMessageTrigger and "
		 "AwaitMessageFromListTrigger; see docs/kinds.md)",
		 (int)(cp->via.str.size > 120 ? 120 : cp->via.str.size), cp->via.str.ptr);
	return TD_EINVAL_SPEC;
}
