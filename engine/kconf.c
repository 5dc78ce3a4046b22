/*
 * A Kafka connection as librdkafka configuration (engine/kwatch_i.h).
 *
 * Airflow's Kafka connection keeps the client configuration (the
 * confluent-kafka dict) in its extra: every entry becomes a librdkafka
 * property, numbers and booleans as their text. Keys that name Python
 * callables are skipped; the commit settings at-least-once depends on are
 * forced. Errors name the connection and the key, never a value.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kwatch_i.h"
#include "triggerd/connections.h"
#include "triggerd/kind.h"
#include "triggerd/triggerd.h"

/* confluent-kafka (Python) config keys that name callables: meaningless here. */
static const char *const python_only[] = {
	"error_cb", "throttle_cb", "stats_cb", "oauth_cb", "logger", "on_commit",
	"on_delivery",
};
/* Keys triggerd sets itself (at-least-once needs manual commits). */
static const char *const forced[] = {
	"enable.auto.commit", "enable.auto.offset.store", "enable.partition.eof",
};

static bool in_list(const char *const *l, size_t n, const char *s)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(l[i], s))
			return true;
	return false;
}

int td_kconf_no_conn(const char *conn_id, char *err, size_t errlen)
{
	char upper[TD_CONN_ID_MAX + 1];
	size_t i = 0;
	for (; conn_id[i] && i < TD_CONN_ID_MAX; i++) {
		char ch = conn_id[i];
		upper[i] = (char)(ch >= 'a' && ch <= 'z' ? ch - 32 : ch);
	}
	upper[i] = '\0';
	return td_spec_err(err, errlen, "args.conn: no connection '%s' (set AIRFLOW_CONN_%s or add it to "
		   "--connections-file)", conn_id, upper);
}

int td_kconf_build(const struct td_conns *cs, const struct td_conn *cn, const char *group,
		      rd_kafka_conf_t **out, char **group_out, char *err, size_t errlen)
{
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	char errstr[512], name[256], val[4096];
	msgpack_unpacked up;
	msgpack_unpacked_init(&up);
	size_t off = 0;
	bool have_bs = false;
	int rc = 0;
	if (group_out)
		*group_out = NULL;
	if (!conf)
		return -ENOMEM;
	rd_kafka_conf_set(conf, "client.id", "triggerd", errstr, sizeof(errstr));
	rd_kafka_conf_set(conf, "auto.offset.reset", "earliest", errstr, sizeof(errstr));
	if (msgpack_unpack_next(&up, cn->extra, cn->extra_len, &off) != MSGPACK_UNPACK_SUCCESS ||
	    up.data.type != MSGPACK_OBJECT_MAP) {
		rc = td_spec_err(err, errlen, "args.conn: connection '%s': extra is not a map", cn->id);
		goto out;
	}
	for (uint32_t i = 0; i < up.data.via.map.size && !rc; i++) {
		const msgpack_object *k = &up.data.via.map.ptr[i].key;
		const msgpack_object *v = &up.data.via.map.ptr[i].val;
		if (k->type != MSGPACK_OBJECT_STR || k->via.str.size == 0 ||
		    k->via.str.size >= sizeof(name)) {
			rc = td_spec_err(err, errlen, "args.conn: connection '%s': extra has a key that is not a config name",
				 cn->id);
			break;
		}
		memcpy(name, k->via.str.ptr, k->via.str.size);
		name[k->via.str.size] = '\0';
		if (in_list(python_only, TD_ARRAY_LEN(python_only), name) ||
		    in_list(forced, TD_ARRAY_LEN(forced), name) || v->type == MSGPACK_OBJECT_NIL)
			continue;
		switch (v->type) {
		case MSGPACK_OBJECT_STR:
			if (v->via.str.size >= sizeof(val) || memchr(v->via.str.ptr, '\0', v->via.str.size)) {
				rc = td_spec_err(err, errlen, "args.conn: connection '%s': extra.%s: value too long",
					 cn->id, name);
				continue;
			}
			memcpy(val, v->via.str.ptr, v->via.str.size);
			val[v->via.str.size] = '\0';
			break;
		case MSGPACK_OBJECT_POSITIVE_INTEGER:
			snprintf(val, sizeof(val), "%llu", (unsigned long long)v->via.u64);
			break;
		case MSGPACK_OBJECT_NEGATIVE_INTEGER:
			snprintf(val, sizeof(val), "%lld", (long long)v->via.i64);
			break;
		case MSGPACK_OBJECT_BOOLEAN:
			snprintf(val, sizeof(val), "%s", v->via.boolean ? "true" : "false");
			break;
		case MSGPACK_OBJECT_FLOAT32:
		case MSGPACK_OBJECT_FLOAT64:
			snprintf(val, sizeof(val), "%.17g", v->via.f64);
			break;
		default:
			rc = td_spec_err(err, errlen, "args.conn: connection '%s': extra.%s: expected a string, number or boolean",
				 cn->id, name);
			continue;
		}
		if (!strcmp(name, "group.id")) {
			if (group_out && !*group_out && !(*group_out = strdup(val)))
				rc = -ENOMEM;
			continue;
		}
		if (rd_kafka_conf_set(conf, name, val, errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK) {
			/* librdkafka's message may quote the value: mask secrets. */
			char masked[512];
			const char *m = cs ? td_conn_mask(cs, errstr, masked, sizeof(masked)) : errstr;
			rc = td_spec_err(err, errlen, "args.conn: connection '%s': extra.%s: %s", cn->id, name, m);
		}
		if (!strcmp(name, "bootstrap.servers") || !strcmp(name, "metadata.broker.list"))
			have_bs = val[0] != '\0';
	}
	if (!rc && !have_bs) {
		/* Airflow requires extra["bootstrap.servers"]; a URI-form
		 * connection (kafka://broker:9092) is read as host:port. */
		if (cn->host[0]) {
			if (cn->port)
				snprintf(val, sizeof(val), "%s:%u", cn->host, cn->port);
			else
				snprintf(val, sizeof(val), "%s", cn->host);
			if (rd_kafka_conf_set(conf, "bootstrap.servers", val, errstr, sizeof(errstr)) !=
			    RD_KAFKA_CONF_OK)
				rc = td_spec_err(err, errlen, "args.conn: connection '%s': host: %s", cn->id, errstr);
		} else {
			rc = td_spec_err(err, errlen, "args.conn: connection '%s' has no bootstrap.servers in its extra "
				 "(Airflow's Kafka connection keeps the librdkafka config there)", cn->id);
		}
	}
	if (!rc) {
		static const char *const set[][2] = {
			{"enable.auto.commit", "false"},
			{"enable.auto.offset.store", "false"},
			{"enable.partition.eof", "false"},
		};
		for (size_t i = 0; i < TD_ARRAY_LEN(set) && !rc; i++)
			if (rd_kafka_conf_set(conf, set[i][0], set[i][1], errstr, sizeof(errstr)) !=
			    RD_KAFKA_CONF_OK)
				rc = td_spec_err(err, errlen, "args.conn: %s", errstr);
		if (!rc && group &&
		    rd_kafka_conf_set(conf, "group.id", group, errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK)
			rc = td_spec_err(err, errlen, "args.group_id: %s", errstr);
	}
out:
	explicit_bzero(val, sizeof(val));
	msgpack_unpacked_destroy(&up);
	if (rc) {
		rd_kafka_conf_destroy(conf);
		if (group_out) {
			free(*group_out);
			*group_out = NULL;
		}
		return rc;
	}
	*out = conf;
	return 0;
}
