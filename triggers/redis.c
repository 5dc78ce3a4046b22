/*
 * The `redis` kind: wait for something to happen on a watched Redis server,
 * named by a connection (AIRFLOW_CONN_<ID> or --connections-file; it may be
 * another server than triggerd's own).
 *
 * args (exactly one of the four waits):
 *   conn              connection id, default "redis_default" (conn_type
 *                     redis; host, port, login, password; db from extra
 *                     "db" or a numeric schema)
 *   key [+ equals]    the key to exist (and, with equals, to be a string
 *                     equal to it); polled every poll_interval_ms, or told
 *                     by keyspace notifications when the server has them on
 *   channels, patterns  a message published on one of the channels, or on
 *                     a channel matching one of the patterns (a string or a
 *                     list of up to 64)
 *   stream [+ after_id]  an entry with an id after after_id ("$", the
 *                     default: the stream's last entry when the wait
 *                     starts; or "<ms>-<seq>", "<ms>", "0")
 *   list / lists [+ pop]  an element popped from the list(s), the first
 *                     non-empty one in order; pop "left" (BLPOP, default)
 *                     or "right" (BRPOP)
 *   poll_interval_ms  key and list waits: 10..3600000, default 1000 (key)
 *                     and 200 (list)
 *   nonce             list waits: set by triggerd when the spec is stored;
 *                     names the trigger's processing list
 *
 * The kind parses and packs; engine/rwatch.c waits and fires (see
 * include/triggerd/rwatch.h and docs/kinds.md).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "triggerd/connections.h"
#include "triggerd/kind.h"
#include "triggerd/rwatch.h"
#include "triggerd/triggerd.h"

#define KEY_INTERVAL_MS 1000
#define LIST_INTERVAL_MS 200
#define MIN_INTERVAL_MS 10
#define MAX_INTERVAL_MS 3600000

/* The args a trigger gave, before the spec is built. */
struct raw {
	const msgpack_object *conn, *key, *equals, *channels, *patterns, *stream, *after,
		*list, *lists, *pop, *interval, *nonce;
};

struct names {
	const msgpack_object *v[TD_RW_NAMES_MAX];
	unsigned n;
};

/* A string, or a list of 1..64 distinct strings, each 1..TD_RW_NAME_MAX. */
static int get_names(const msgpack_object *o, const char *field, struct names *out,
		     char *err, size_t errlen)
{
	const msgpack_object *v = o;
	uint32_t n = 1;
	if (o->type == MSGPACK_OBJECT_ARRAY) {
		v = o->via.array.ptr;
		n = o->via.array.size;
		if (n == 0 || n + out->n > TD_RW_NAMES_MAX)
			return td_spec_err(err, errlen, "args.%s: expected a string or a list of 1..%d strings",
				   field, TD_RW_NAMES_MAX);
	}
	for (uint32_t i = 0; i < n; i++) {
		const msgpack_object *s = &v[i];
		if (s->type != MSGPACK_OBJECT_STR || s->via.str.size == 0 ||
		    s->via.str.size > TD_RW_NAME_MAX)
			return td_spec_err(err, errlen, "args.%s%s: expected a name of 1..%d bytes", field,
				   o->type == MSGPACK_OBJECT_ARRAY ? "[]" : "", TD_RW_NAME_MAX);
		for (uint32_t j = 0; j < i; j++)
			if (msgpack_object_equal(*s, v[j]))
				return td_spec_err(err, errlen, "args.%s[%u]: given twice", field, i);
		out->v[out->n++] = s;
	}
	return 0;
}

static int get_u64(const char **p, const char *end, uint64_t *out)
{
	const char *s = *p;
	uint64_t v = 0;
	if (s == end || *s < '0' || *s > '9')
		return -1;
	for (; s < end && *s >= '0' && *s <= '9'; s++) {
		if (v > (UINT64_MAX - (uint64_t)(*s - '0')) / 10)
			return -1;
		v = v * 10 + (uint64_t)(*s - '0');
	}
	*p = s;
	*out = v;
	return 0;
}

/* "$", "<ms>", "<ms>-<seq>". */
static int parse_after(const msgpack_object *o, struct td_rw_spec *sp, char *err, size_t errlen)
{
	if (o->type == MSGPACK_OBJECT_STR && o->via.str.size == 1 && o->via.str.ptr[0] == '$') {
		sp->dollar = 1;
		return 0;
	}
	const char *p = o->type == MSGPACK_OBJECT_STR ? o->via.str.ptr : NULL;
	const char *end = p ? p + o->via.str.size : NULL;
	sp->dollar = 0;
	if (p && get_u64(&p, end, &sp->after_ms) == 0) {
		sp->after_seq = 0;
		if (p == end)
			return 0;
		if (*p == '-') {
			p++;
			if (get_u64(&p, end, &sp->after_seq) == 0 && p == end)
				return 0;
		}
	}
	return td_spec_err(err, errlen, "args.after_id: expected \"$\" or a stream id \"<ms>-<seq>\"");
}

static const char *conn_id_of(const struct raw *r, char *buf, size_t len)
{
	if (!r->conn)
		return "redis_default";
	snprintf(buf, len, "%.*s", (int)r->conn->via.str.size, r->conn->via.str.ptr);
	return buf;
}

static int check_conn(struct td_trigger *t, const char *id, char *err, size_t errlen)
{
	const struct td_conns *cs = td_shard_conns(td_trigger_shard(t));
	const struct td_conn *c = cs ? td_conns_get(cs, id) : NULL;
	if (!c) {
		char upper[TD_CONN_ID_MAX + 1];
		size_t i = 0;
		for (; id[i] && i < TD_CONN_ID_MAX; i++)
			upper[i] = (char)(id[i] >= 'a' && id[i] <= 'z' ? id[i] - 32 : id[i]);
		upper[i] = '\0';
		return td_spec_err(err, errlen, "args.conn: no connection '%s' (set AIRFLOW_CONN_%s or add "
			   "it to --connections-file)", id, upper);
	}
	char why[160];
	if (td_rw_conn_check(c, why, sizeof(why)) != 0)
		return td_spec_err(err, errlen, "args.conn: connection '%s': %s", id, why);
	return 0;
}

static int classify(const msgpack_object *args, struct raw *r, char *err, size_t errlen)
{
	static const struct {
		const char *name;
		size_t off;
	} fields[] = {
		{"conn", offsetof(struct raw, conn)},
		{"key", offsetof(struct raw, key)},
		{"equals", offsetof(struct raw, equals)},
		{"channels", offsetof(struct raw, channels)},
		{"patterns", offsetof(struct raw, patterns)},
		{"stream", offsetof(struct raw, stream)},
		{"after_id", offsetof(struct raw, after)},
		{"list", offsetof(struct raw, list)},
		{"lists", offsetof(struct raw, lists)},
		{"pop", offsetof(struct raw, pop)},
		{"poll_interval_ms", offsetof(struct raw, interval)},
		{"nonce", offsetof(struct raw, nonce)},
	};
	for (uint32_t i = 0; i < args->via.map.size; i++) {
		const msgpack_object *k = &args->via.map.ptr[i].key;
		size_t j = 0;
		while (j < TD_ARRAY_LEN(fields) && !td_mp_str_is(k, fields[j].name))
			j++;
		if (j == TD_ARRAY_LEN(fields))
			return td_spec_err(err, errlen, "args.%.*s: unknown field (expected conn, key, equals, "
				   "channels, patterns, stream, after_id, list, lists, pop, "
				   "poll_interval_ms)",
				   (int)(k->type == MSGPACK_OBJECT_STR && k->via.str.size < 64 ?
					 k->via.str.size : 0),
				   k->type == MSGPACK_OBJECT_STR ? k->via.str.ptr : "");
		const msgpack_object **slot =
			(const msgpack_object **)(void *)((char *)r + fields[j].off);
		if (*slot)
			return td_spec_err(err, errlen, "args.%s: given twice", fields[j].name);
		*slot = &args->via.map.ptr[i].val;
	}
	return 0;
}

static int parse_fields(struct td_trigger *t, const struct raw *r, struct names *nm,
			struct td_rw_spec *tmp, char *err, size_t errlen)
{
	int modes = !!r->key + !!(r->channels || r->patterns) + !!r->stream +
		    !!(r->list || r->lists);
	if (modes != 1)
		return td_spec_err(err, errlen, "args: give exactly one of key, channels/patterns, stream, "
			   "list/lists");
	if (r->conn && (r->conn->type != MSGPACK_OBJECT_STR || r->conn->via.str.size == 0 ||
			r->conn->via.str.size > TD_CONN_ID_MAX ||
			memchr(r->conn->via.str.ptr, '\0', r->conn->via.str.size)))
		return td_spec_err(err, errlen, "args.conn: expected a connection id");
	int rc;
	if (r->key) {
		tmp->mode = TD_RW_KEY;
		if ((rc = get_names(r->key, "key", nm, err, errlen)))
			return rc;
		if (r->key->type != MSGPACK_OBJECT_STR)
			return td_spec_err(err, errlen, "args.key: expected a key name");
		if (td_trigger_repeat(t))
			return td_spec_err(err, errlen, "args.key: repeat is not supported for key waits (a key's "
				   "state has no occurrences; use a stream or a list)");
	} else if (r->channels || r->patterns) {
		tmp->mode = TD_RW_PUBSUB;
		if (r->channels && (rc = get_names(r->channels, "channels", nm, err, errlen)))
			return rc;
		unsigned before = nm->n;
		if (r->patterns && (rc = get_names(r->patterns, "patterns", nm, err, errlen)))
			return rc;
		tmp->npatterns = (uint16_t)(nm->n - before);
	} else if (r->stream) {
		tmp->mode = TD_RW_STREAM;
		if (r->stream->type != MSGPACK_OBJECT_STR)
			return td_spec_err(err, errlen, "args.stream: expected a stream key name");
		if ((rc = get_names(r->stream, "stream", nm, err, errlen)))
			return rc;
		tmp->dollar = 1;
		if (r->after && (rc = parse_after(r->after, tmp, err, errlen)))
			return rc;
	} else {
		tmp->mode = TD_RW_LIST;
		if (r->list && r->lists)
			return td_spec_err(err, errlen, "args.lists: give either list or lists");
		if (r->list && r->list->type != MSGPACK_OBJECT_STR)
			return td_spec_err(err, errlen, "args.list: expected a list key name");
		if ((rc = get_names(r->list ? r->list : r->lists, r->list ? "list" : "lists", nm,
				    err, errlen)))
			return rc;
		if (r->pop && td_mp_str_is(r->pop, "right"))
			tmp->pop_right = 1;
		else if (r->pop && !td_mp_str_is(r->pop, "left"))
			return td_spec_err(err, errlen, "args.pop: expected \"left\" (BLPOP) or \"right\" (BRPOP)");
		if (r->nonce) {
			if (r->nonce->type != MSGPACK_OBJECT_STR || r->nonce->via.str.size != 16)
				return td_spec_err(err, errlen, "args.nonce: expected 16 hex digits (set by triggerd; "
					   "leave it out)");
			for (uint32_t i = 0; i < 16; i++) {
				char c = r->nonce->via.str.ptr[i];
				if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
					return td_spec_err(err, errlen, "args.nonce: expected 16 hex digits");
			}
			memcpy(tmp->nonce, r->nonce->via.str.ptr, 16);
		}
	}
	if (r->equals && tmp->mode != TD_RW_KEY)
		return td_spec_err(err, errlen, "args.equals: only with key");
	if (r->after && tmp->mode != TD_RW_STREAM)
		return td_spec_err(err, errlen, "args.after_id: only with stream");
	if (r->pop && tmp->mode != TD_RW_LIST)
		return td_spec_err(err, errlen, "args.pop: only with list or lists");
	if (r->nonce && tmp->mode != TD_RW_LIST)
		return td_spec_err(err, errlen, "args.nonce: only with list or lists");
	if (r->interval && tmp->mode != TD_RW_KEY && tmp->mode != TD_RW_LIST)
		return td_spec_err(err, errlen, "args.poll_interval_ms: only with key or list waits");
	tmp->interval_ms = tmp->mode == TD_RW_LIST ? LIST_INTERVAL_MS : KEY_INTERVAL_MS;
	if (r->interval) {
		if (r->interval->type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
		    r->interval->via.u64 < MIN_INTERVAL_MS || r->interval->via.u64 > MAX_INTERVAL_MS)
			return td_spec_err(err, errlen, "args.poll_interval_ms: expected %d..%d", MIN_INTERVAL_MS,
				   MAX_INTERVAL_MS);
		tmp->interval_ms = (uint32_t)r->interval->via.u64;
	}
	if (r->equals) {
		if (r->equals->type == MSGPACK_OBJECT_STR) {
			if (r->equals->via.str.size > TD_RW_EQUALS_MAX)
				return td_spec_err(err, errlen, "args.equals: longer than %d bytes", TD_RW_EQUALS_MAX);
		} else if (r->equals->type != MSGPACK_OBJECT_POSITIVE_INTEGER &&
			   r->equals->type != MSGPACK_OBJECT_NEGATIVE_INTEGER) {
			return td_spec_err(err, errlen, "args.equals: expected a string (or an integer)");
		}
	}
	return 0;
}

static int parse(struct td_trigger *t, const msgpack_object *args, int64_t now_ms, char *err,
		 size_t errlen)
{
	struct td_rwait *w = td_trigger_state(t);
	memset(w, 0, sizeof(*w));
	(void)now_ms;
	if (!args || args->type != MSGPACK_OBJECT_MAP)
		return td_spec_err(err, errlen, "args: required map with one of key, channels/patterns, "
			   "stream, list/lists");
	struct raw r = {0};
	struct names nm = {.n = 0};
	struct td_rw_spec tmp = {0};
	int rc = classify(args, &r, err, errlen);
	if (!rc)
		rc = parse_fields(t, &r, &nm, &tmp, err, errlen);
	char idbuf[TD_CONN_ID_MAX + 1];
	const char *cid = rc ? NULL : conn_id_of(&r, idbuf, sizeof(idbuf));
	if (!rc)
		rc = check_conn(t, cid, err, errlen);
	if (rc)
		return rc;

	size_t bytes = sizeof(struct td_rw_spec) + nm.n * (sizeof(struct td_rw_name) +
							   sizeof(struct td_rw_link));
	for (unsigned i = 0; i < nm.n; i++)
		bytes += nm.v[i]->via.str.size + 1;
	struct td_rw_spec *sp = malloc(bytes);
	if (!sp) {
		td_spec_err(err, errlen, "args: out of memory");
		return -ENOMEM;
	}
	*sp = tmp;
	sp->conn_id = strdup(cid);
	sp->equals = NULL;
	sp->nnames = (uint16_t)nm.n;
	sp->links = (struct td_rw_link *)(void *)&sp->names[nm.n];
	char *p = (char *)&sp->links[nm.n];
	for (unsigned i = 0; i < nm.n; i++) {
		uint32_t n = nm.v[i]->via.str.size;
		memcpy(p, nm.v[i]->via.str.ptr, n);
		p[n] = '\0';
		sp->names[i] = (struct td_rw_name){.p = p, .len = n};
		sp->links[i] = (struct td_rw_link){.w = w};
		p += n + 1;
	}
	if (r.equals) {
		char num[24];
		const char *v = num;
		size_t n;
		if (r.equals->type == MSGPACK_OBJECT_STR) {
			v = r.equals->via.str.ptr;
			n = r.equals->via.str.size;
		} else if (r.equals->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
			n = (size_t)snprintf(num, sizeof(num), "%" PRIu64, r.equals->via.u64);
		} else {
			n = (size_t)snprintf(num, sizeof(num), "%" PRId64, r.equals->via.i64);
		}
		sp->equals = malloc(n + 1);
		if (sp->equals) {
			memcpy(sp->equals, v, n);
			sp->equals[n] = '\0';
			sp->equals_len = (uint32_t)n;
		}
	}
	if (sp->mode == TD_RW_LIST && !sp->nonce[0]) {
		/* A new submission: its processing list is its own, so a later
		 * trigger with the same id never takes over what this one left. */
		uint64_t x;
		if (getrandom(&x, sizeof(x), GRND_NONBLOCK) != sizeof(x))
			x = td_shard_rand(td_trigger_shard(t));
		snprintf(sp->nonce, sizeof(sp->nonce), "%016" PRIx64, x);
		sp->fresh = 1;
	}
	w->sp = sp;
	if (!sp->conn_id || (r.equals && !sp->equals)) {
		td_rw_spec_free(sp);
		w->sp = NULL;
		td_spec_err(err, errlen, "args: out of memory");
		return -ENOMEM;
	}
	return 0;
}

static void pack_str(msgpack_packer *pk, const char *s, size_t n)
{
	msgpack_pack_str(pk, n);
	msgpack_pack_str_body(pk, s, n);
}

static void pack_lit(msgpack_packer *pk, const char *s)
{
	pack_str(pk, s, strlen(s));
}

static void pack_names(msgpack_packer *pk, const struct td_rw_spec *sp, unsigned from,
		       unsigned n)
{
	msgpack_pack_array(pk, n);
	for (unsigned i = from; i < from + n; i++)
		pack_str(pk, sp->names[i].p, sp->names[i].len);
}

static void pack_args(const struct td_trigger *t, msgpack_packer *pk)
{
	const struct td_rw_spec *sp = ((struct td_rwait *)td_trigger_state(t))->sp;
	unsigned nch = sp->nnames - sp->npatterns;
	uint32_t n = 1;
	switch (sp->mode) {
	case TD_RW_KEY: n += 2 + !!sp->equals; break;
	case TD_RW_PUBSUB: n += !!nch + !!sp->npatterns; break;
	case TD_RW_STREAM: n += 2; break;
	case TD_RW_LIST: n += 4; break;
	}
	msgpack_pack_map(pk, n);
	pack_lit(pk, "conn");
	pack_lit(pk, sp->conn_id);
	switch (sp->mode) {
	case TD_RW_KEY:
		pack_lit(pk, "key");
		pack_str(pk, sp->names[0].p, sp->names[0].len);
		if (sp->equals) {
			pack_lit(pk, "equals");
			pack_str(pk, sp->equals, sp->equals_len);
		}
		pack_lit(pk, "poll_interval_ms");
		msgpack_pack_uint32(pk, sp->interval_ms);
		break;
	case TD_RW_PUBSUB:
		if (nch) {
			pack_lit(pk, "channels");
			pack_names(pk, sp, 0, nch);
		}
		if (sp->npatterns) {
			pack_lit(pk, "patterns");
			pack_names(pk, sp, nch, sp->npatterns);
		}
		break;
	case TD_RW_STREAM: {
		pack_lit(pk, "stream");
		pack_str(pk, sp->names[0].p, sp->names[0].len);
		pack_lit(pk, "after_id");
		char id[48];
		if (sp->dollar)
			snprintf(id, sizeof(id), "$");
		else
			snprintf(id, sizeof(id), "%" PRIu64 "-%" PRIu64, sp->after_ms, sp->after_seq);
		pack_lit(pk, id);
		break;
	}
	case TD_RW_LIST:
		pack_lit(pk, "lists");
		pack_names(pk, sp, 0, sp->nnames);
		pack_lit(pk, "pop");
		pack_lit(pk, sp->pop_right ? "right" : "left");
		pack_lit(pk, "poll_interval_ms");
		msgpack_pack_uint32(pk, sp->interval_ms);
		pack_lit(pk, "nonce");
		pack_str(pk, sp->nonce, 16);
		break;
	}
}

static int start(struct td_trigger *t)
{
	return td_rwatch_wait(td_trigger_shard(t), td_trigger_state(t));
}

static void stop(struct td_trigger *t)
{
	td_rwatch_unwait(td_trigger_state(t));
}

static void destroy(struct td_trigger *t)
{
	struct td_rwait *w = td_trigger_state(t);
	td_rwatch_unwait(w);
	td_rw_spec_free(w->sp);
	w->sp = NULL;
}

void td_rw_spec_free(struct td_rw_spec *sp)
{
	if (!sp)
		return;
	free(sp->conn_id);
	free(sp->equals);
	free(sp);
}

const struct td_kind td_kind_redis = {
	.name = "redis",
	.state_size = sizeof(struct td_rwait),
	.parse = parse,
	.pack_args = pack_args,
	.start = start,
	.stop = stop,
	.destroy = destroy,
};
