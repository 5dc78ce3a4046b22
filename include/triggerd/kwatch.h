/*
 * Kafka waits: the interface between the `kafka` kind (triggers/kafka.c,
 * which parses args and registers) and the shard's Kafka consumers
 * (engine/kwatch.c, which consumes, matches, fires and commits).
 *
 * A waiting trigger's kind state is a struct td_kafka_waiter. While started,
 * it is registered with the consumer of its (connection, group): one
 * librdkafka consumer per pair, shared by every trigger on it, subscribed to
 * the union of their topics. Each message is offered to the waiters of its
 * topic (those with a `key` filter only when the key is theirs); offsets are
 * committed once every event the message caused is in Redis.
 *
 * Context: the shard's thread.
 */
#ifndef TRIGGERD_KWATCH_H
#define TRIGGERD_KWATCH_H

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct td_shard;
struct td_kconsumer;
struct td_klink;
struct pcre2_real_code_8;
struct pcre2_real_match_context_8;
struct pcre2_real_match_data_8;

#define TD_KAFKA_TOPICS_MAX 64
#define TD_KAFKA_TOPIC_MAX 249        /* Kafka's limit on a topic name */
#define TD_KAFKA_HEADERS_MAX 16
#define TD_KAFKA_GROUP_MAX 255
#define TD_KAFKA_DEFAULT_GROUP "triggerd"
#define TD_KAFKA_DEFAULT_MAX_VALUE 65536

/* What an event carries. */
enum td_kafka_payload {
	TD_KAFKA_PAYLOAD_MESSAGE,     /* {"topic", "partition", "offset", "key",
					 "value", "headers", "timestamp_ms"} */
	TD_KAFKA_PAYLOAD_VALUE,       /* the value as a string (Airflow's
					 AwaitMessageTrigger); messages with a
					 null or empty value never match */
};

struct td_kafka_header {
	char *name;                   /* NUL-terminated */
	char *value;
	size_t value_len;
};

/* What a kafka trigger waits for; owned by the waiter (td_kafka_spec_free). */
struct td_kafka_spec {
	char *conn;                   /* connection id */
	char *group;                  /* group.id in use (resolved) */
	bool group_given;             /* args.group_id was set (stored back) */
	unsigned ntopics;
	char *topics[TD_KAFKA_TOPICS_MAX]; /* distinct, NUL-terminated */
	bool has_key;
	char *key;                    /* filter: key equals these bytes */
	size_t key_len;
	unsigned nheaders;
	struct td_kafka_header headers[TD_KAFKA_HEADERS_MAX];
	char *pointer;                /* filter: RFC 6901 pointer, or NULL */
	char *equals;                 /* ...and the msgpack value it must equal */
	size_t equals_len;
	char *regex;                  /* filter: PCRE2 pattern on the value */
	size_t regex_len;
	struct pcre2_real_code_8 *re;
	struct pcre2_real_match_context_8 *mctx;
	struct pcre2_real_match_data_8 *md;
	int64_t since_ms;             /* skip messages stamped before; -1: none */
	enum td_kafka_payload payload;
	size_t max_value;             /* message payload: value cap in bytes */
};

struct td_kafka_waiter {
	struct td_kafka_spec *spec;
	/* engine's, set while registered */
	struct td_kconsumer *c;
	struct td_klink *links;       /* one per topic */
};

/**
 * Check that connection @conn_id exists and that its extra, as librdkafka
 * configuration, is accepted. Returns 0, or TD_EINVAL_SPEC with the reason
 * in @err (naming the connection and the config key, never a value).
 * Cached per connection id.
 */
int td_kwatch_check_conn(struct td_shard *s, const char *conn_id, char *err, size_t errlen);

/**
 * The group.id the connection's extra sets, or NULL. Owned by the registry.
 */
const char *td_kwatch_conn_group(struct td_shard *s, const char *conn_id);

/**
 * Start waiting: register @w with the consumer of its (connection, group),
 * creating the consumer (and subscribing to new topics) as needed. Messages
 * are offered from the reactor later, never inside this call. Returns 0,
 * -ENOMEM, or -EINVAL when the consumer cannot be created (logged).
 */
int td_kwatch_wait(struct td_shard *s, struct td_kafka_waiter *w);
/** Stop waiting. A no-op when @w is not registered. */
void td_kwatch_unwait(struct td_kafka_waiter *w);

/** Free the spec (all its strings and compiled filters). Accepts NULL. */
void td_kafka_spec_free(struct td_kafka_spec *sp);

#endif
