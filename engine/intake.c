/*
 * Intake and store.
 *
 * Store: on the writer connection, before any submission is read,
 * td:triggers is read with HSCAN and every stored trigger re-armed.
 *
 * Intake: on the reader connection (alone, because XREADGROUP BLOCK would
 * stall every write pipelined behind it), the submit stream is read with
 * consumer group "triggerd": first this consumer's own pending entries
 * (delivered before a crash, never acked), then new ones. Each submission
 * becomes one sink record: 'A' (store + ack, atomically), 'F' (cancel + ack)
 * or 'J' (rejected event + ack), so an entry is acked exactly when its
 * effect is applied. Reading pauses while the sink is at its bound.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "engine_i.h"
#include "triggerd/codec.h"
#include "triggerd/log.h"

#define LOAD_COUNT "2000"
#define BLOCK_MS "2000"

static struct td_shard *shard_of(struct td_intake *in)
{
	return in->shard;
}

/* ---- load ------------------------------------------------------------ */

static void load_next(struct td_intake *in);

static void load_one(struct td_intake *in, const redisReply *field, const redisReply *val)
{
	struct td_shard *s = shard_of(in);
	char err[TD_ERR_MAX], esc[600];
	if (td_table_get(&s->table, field->str, field->len))
		return; /* already held (a reconnect re-ran the scan) */
	msgpack_unpacked up;
	msgpack_unpacked_init(&up);
	size_t off = 0, used;
	char merr[160];
	int rc;
	struct td_spec spec;
	struct td_trigger *t = NULL;
	if (td_msgpack_check(val->str, val->len, &used, merr, sizeof(merr)) != 0) {
		snprintf(err, sizeof(err), "spec: not valid msgpack: %s", merr);
		rc = TD_EINVAL_SPEC;
	} else if (msgpack_unpack_next(&up, val->str, val->len, &off) != MSGPACK_UNPACK_SUCCESS) {
		snprintf(err, sizeof(err), "spec: not valid msgpack");
		rc = TD_EINVAL_SPEC;
	} else {
		rc = td_spec_parse(&up.data, td_wall_ms(), &spec, err, sizeof(err));
		if (rc == 0 && (spec.id_len != field->len ||
				memcmp(spec.id, field->str, field->len) != 0)) {
			snprintf(err, sizeof(err), "id: differs from the hash field");
			rc = TD_EINVAL_SPEC;
		}
		if (rc == 0)
			rc = td_trigger_new(s, &spec, td_wall_ms(), &t, err, sizeof(err));
	}
	msgpack_unpacked_destroy(&up);
	if (rc) {
		/* Left stored untouched: a newer triggerd may read it, and an
		 * operator can inspect it. */
		in->load_bad++;
		td_error("stored trigger unreadable; left in place",
			 "\"id\":\"%s\",\"error\":\"%s\"",
			 td_log_esc(esc, sizeof(esc), field->str, field->len), err);
		return;
	}
	td_table_put(&s->table, t);
	t->state = TD_T_STORING; /* activate moves it on */
	td_trigger_activate(t);
	in->load_count++;
}

static void load_cb(redisAsyncContext *ac, void *reply, void *priv)
{
	struct td_intake *in = priv;
	redisReply *r = reply;
	if (!r) {
		in->loading = false; /* restarted from the top on reconnect */
		return;
	}
	if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
	    r->element[0]->type != REDIS_REPLY_STRING ||
	    r->element[1]->type != REDIS_REPLY_ARRAY) {
		char esc[300];
		td_error("HSCAN of stored triggers failed; retrying",
			 "\"error\":\"%s\"", r->type == REDIS_REPLY_ERROR ?
			 td_log_esc(esc, sizeof(esc), r->str, r->len) : "unexpected reply");
		in->loading = false;
		td_redis_reset(&shard_of(in)->writer, "HSCAN failed");
		return;
	}
	redisReply *kv = r->element[1];
	for (size_t i = 0; i + 1 < kv->elements; i += 2) {
		if (kv->element[i]->type == REDIS_REPLY_STRING &&
		    kv->element[i + 1]->type == REDIS_REPLY_STRING)
			load_one(in, kv->element[i], kv->element[i + 1]);
	}
	snprintf(in->scan_cursor, sizeof(in->scan_cursor), "%s", r->element[0]->str);
	if (strcmp(in->scan_cursor, "0") == 0) {
		in->loading = false;
		in->loaded = true;
		int64_t ms = (td_mono_ns() - in->load_started_ns) / 1000000;
		td_info("store loaded", "\"triggers\":%zu,\"unreadable\":%zu,\"ms\":%lld",
			in->load_count, in->load_bad, (long long)ms);
		td_intake_kick(in);
		return;
	}
	load_next(in);
}

static void load_next(struct td_intake *in)
{
	struct td_shard *s = shard_of(in);
	const char *argv[] = {"HSCAN", s->eng->key_triggers, in->scan_cursor, "COUNT",
			      LOAD_COUNT};
	size_t argvlen[] = {5, strlen(argv[1]), strlen(argv[2]), 5, strlen(LOAD_COUNT)};
	if (td_redis_cmd(&s->writer, load_cb, in, 5, argv, argvlen) != 0)
		in->loading = false;
}

/* ---- connections ------------------------------------------------------ */

static void ignore_cb(redisAsyncContext *ac, void *reply, void *priv)
{
	redisReply *r = reply;
	if (r && r->type == REDIS_REPLY_ERROR && strncmp(r->str, "BUSYGROUP", 9) != 0) {
		char esc[300];
		td_error("redis command failed", "\"what\":\"%s\",\"error\":\"%s\"",
			 (const char *)priv, td_log_esc(esc, sizeof(esc), r->str, r->len));
	}
}

static void create_group(struct td_redis *conn, struct td_engine *e)
{
	/* "0", not "$": submissions made before triggerd ever ran count. */
	const char *argv[] = {"XGROUP", "CREATE", e->key_submit, "triggerd", "0", "MKSTREAM"};
	size_t argvlen[6];
	for (int i = 0; i < 6; i++)
		argvlen[i] = strlen(argv[i]);
	td_redis_cmd(conn, ignore_cb, "XGROUP CREATE", 6, argv, argvlen);
}

void td_intake_writer_up(struct td_intake *in)
{
	struct td_shard *s = shard_of(in);
	td_sink_conn_up(&s->sink);
	if (!in->loaded && !in->loading) {
		in->loading = true;
		in->load_count = in->load_bad = 0;
		in->load_started_ns = td_mono_ns();
		strcpy(in->scan_cursor, "0");
		load_next(in);
	}
}

void td_intake_reader_up(struct td_intake *in)
{
	struct td_shard *s = shard_of(in);
	create_group(&s->reader, s->eng);
	/* Our own pending entries first: delivered before, never acked. */
	in->pending_phase = true;
	strcpy(in->last_id, "0");
	in->reading = false;
	td_intake_kick(in);
}

/* ---- submissions ------------------------------------------------------ */

static const redisReply *field(const redisReply *fields, const char *name)
{
	size_t n = strlen(name);
	for (size_t i = 0; i + 1 < fields->elements; i += 2) {
		const redisReply *k = fields->element[i];
		if (k->type == REDIS_REPLY_STRING && k->len == n &&
		    memcmp(k->str, name, n) == 0)
			return fields->element[i + 1]->type == REDIS_REPLY_STRING ?
			       fields->element[i + 1] : NULL;
	}
	return NULL;
}

static void stored_cb(struct td_rec *rec, long long result, void *arg)
{
	td_trigger_stored(arg, result);
}

static void reject(struct td_shard *s, const char *entry, const struct td_add *a,
		   const char *err)
{
	char esc[600], eesc[600];
	s->intake.rejected++;
	td_info("submission rejected", "\"entry\":\"%s\",\"id\":\"%s\",\"error\":\"%s\"",
		entry, td_log_esc(esc, sizeof(esc), a->id, a->id_len),
		td_log_esc(eesc, sizeof(eesc), err, strlen(err)));
	td_post_rejected(s, entry, a->id_len ? a->id : NULL, a->id_len,
			 a->queue_len ? a->queue : NULL, a->queue_len, err);
}

int td_add_prepare(struct td_shard *s, const char *bytes, size_t len, struct td_add *a,
		   char *err, size_t errlen)
{
	memset(a, 0, sizeof(*a));
	msgpack_unpacked up, up2;
	msgpack_unpacked_init(&up);
	msgpack_unpacked_init(&up2);
	msgpack_sbuffer airflow;
	msgpack_sbuffer_init(&airflow);
	struct td_spec spec;
	memset(&spec, 0, sizeof(spec));
	size_t off = 0, used = 0;
	char merr[160];
	int64_t now = td_wall_ms();
	int rc;
	/* Checked first: msgpack-c allocates for declared sizes up front. */
	if (td_msgpack_check(bytes, len, &used, merr, sizeof(merr)) != 0) {
		snprintf(err, errlen, "spec: not valid msgpack: %s", merr);
		rc = TD_EINVAL_SPEC;
	} else if (msgpack_unpack_next(&up, bytes, len, &off) != MSGPACK_UNPACK_SUCCESS) {
		snprintf(err, errlen, "spec: not valid msgpack");
		rc = TD_EINVAL_SPEC;
	} else if (off != len) {
		snprintf(err, errlen, "spec: %zu trailing bytes after the map", len - off);
		rc = TD_EINVAL_SPEC;
	} else {
		/* Airflow's classpath + kwargs become kind + args first. */
		int rw = td_airflow_rewrite(&up.data, &airflow, err, errlen);
		if (rw < 0) {
			char ignored[TD_ERR_MAX];
			/* Only to name id and queue in the rejection. */
			td_spec_parse(&up.data, now, &spec, ignored, sizeof(ignored));
			rc = rw;
		} else if (rw == 0) {
			size_t aoff = 0;
			if (msgpack_unpack_next(&up2, airflow.data, airflow.size, &aoff) !=
			    MSGPACK_UNPACK_SUCCESS) {
				snprintf(err, errlen, "classpath: internal error translating");
				rc = TD_EINVAL_SPEC;
			} else {
				rc = td_spec_parse(&up2.data, now, &spec, err, errlen);
			}
		} else {
			rc = td_spec_parse(&up.data, now, &spec, err, errlen);
		}
	}
	if (!rc)
		rc = td_trigger_new(s, &spec, now, &a->t, err, errlen);
	/* What a rejection names (spec points into what is freed below). */
	if (spec.id && spec.id_len <= TD_ID_MAX) {
		memcpy(a->id, spec.id, spec.id_len);
		a->id_len = spec.id_len;
	}
	if (spec.queue && spec.queue_len <= TD_QUEUE_MAX) {
		memcpy(a->queue, spec.queue, spec.queue_len);
		a->queue_len = spec.queue_len;
	}
	if (!rc) {
		struct td_trigger *old = td_table_get(&s->table, spec.id, spec.id_len);
		if (old && old->state == TD_T_DEAD) {
			/* Cancelled while its store was in flight: its records
			 * come first in the sink (store, then delete), so this
			 * add stores the id anew and must be armed like any new
			 * one. The dead trigger is freed when its store record
			 * returns. */
			td_table_del(&s->table, old);
			old = NULL;
		}
		a->exists = old != NULL;
	}
	msgpack_unpacked_destroy(&up);
	msgpack_unpacked_destroy(&up2);
	msgpack_sbuffer_destroy(&airflow);
	return rc;
}

struct td_rec *td_add_record(struct td_shard *s, struct td_add *a, const char *entry)
{
	struct td_trigger *t = a->t;
	msgpack_packer pk;
	s->scratch.size = 0;
	msgpack_packer_init(&pk, &s->scratch, msgpack_sbuffer_write);
	td_trigger_pack_stored(t, &pk);
	return td_rec_new('A', entry, strlen(entry), td_trigger_idp(t), t->id_len,
			  s->scratch.data, s->scratch.size, "", 0);
}

static void add(struct td_shard *s, const char *entry, const redisReply *fields)
{
	const redisReply *specf = field(fields, "spec"), *json = field(fields, "json");
	struct td_add a;
	char err[TD_ERR_MAX];
	memset(&a, 0, sizeof(a));
	if (!specf && !json) {
		reject(s, entry, &a,
		       "spec: required (a msgpack map in field 'spec' or JSON text in field 'json')");
		return;
	}
	if (specf && json) {
		reject(s, entry, &a, "spec: give either 'spec' or 'json', not both");
		return;
	}
	msgpack_sbuffer conv;
	msgpack_sbuffer_init(&conv);
	const char *bytes = specf ? specf->str : NULL;
	size_t len = specf ? specf->len : 0;
	if (json) {
		char jerr[160];
		if (td_json_to_msgpack(json->str, json->len, &conv, jerr, sizeof(jerr))) {
			snprintf(err, sizeof(err), "json: %s", jerr);
			msgpack_sbuffer_destroy(&conv);
			reject(s, entry, &a, err);
			return;
		}
		bytes = conv.data;
		len = conv.size;
	}
	int rc = td_add_prepare(s, bytes, len, &a, err, sizeof(err));
	msgpack_sbuffer_destroy(&conv);
	if (rc) {
		reject(s, entry, &a, err);
		return;
	}
	struct td_rec *rec = td_add_record(s, &a, entry);
	if (!rec) {
		td_trigger_free(a.t);
		td_error("out of memory storing a trigger; the submission stays pending", NULL);
		return;
	}
	s->intake.accepted++;
	if (a.exists) {
		/* Already active here: a no-op, but the entry still gets acked
		 * (HSETNX answers 0 and changes nothing). */
		td_trigger_free(a.t);
	} else {
		td_table_put(&s->table, a.t);
		rec->done = stored_cb;
		rec->arg = a.t;
	}
	td_sink_push(&s->sink, rec);
}

static void cancel(struct td_shard *s, const char *entry, const redisReply *fields)
{
	const redisReply *id = field(fields, "id"), *queue = field(fields, "queue");
	struct td_add a;
	memset(&a, 0, sizeof(a));
	if (queue && td_queue_name_ok(queue->str, queue->len)) {
		memcpy(a.queue, queue->str, queue->len);
		a.queue_len = queue->len;
	}
	if (!id || id->len == 0) {
		reject(s, entry, &a, "id: required for op cancel");
		return;
	}
	if (id->len > TD_ID_MAX) {
		reject(s, entry, &a, "id: longer than 256 bytes");
		return;
	}
	memcpy(a.id, id->str, id->len);
	a.id_len = id->len;
	struct td_trigger *t = td_table_get(&s->table, id->str, id->len);
	if (!t || t->state == TD_T_DEAD) {
		reject(s, entry, &a, "id: no active trigger with this id");
		return;
	}
	s->intake.cancels++;
	if (td_trigger_cancel(t, entry, strlen(entry)) != 0)
		td_error("out of memory cancelling; the submission stays pending", NULL);
}

static void submission(struct td_shard *s, const redisReply *e)
{
	if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
	    e->element[0]->type != REDIS_REPLY_STRING)
		return;
	const char *entry = e->element[0]->str;
	const redisReply *fields = e->element[1];
	struct td_add none;
	memset(&none, 0, sizeof(none));
	if (fields->type != REDIS_REPLY_ARRAY) {
		/* A pending entry whose message was deleted (XDEL, trimming). */
		reject(s, entry, &none, "submission: the stream entry was deleted before it was processed");
		return;
	}
	const redisReply *op = field(fields, "op");
	if (!op || (op->len == 3 && memcmp(op->str, "add", 3) == 0)) {
		add(s, entry, fields);
	} else if (op->len == 6 && memcmp(op->str, "cancel", 6) == 0) {
		cancel(s, entry, fields);
	} else {
		char err[TD_ERR_MAX], esc[80];
		snprintf(err, sizeof(err), "op: unknown op '%s' (expected add or cancel)",
			 td_log_esc(esc, sizeof(esc), op->str, op->len > 32 ? 32 : op->len));
		reject(s, entry, &none, err);
	}
}

static void read_cb(redisAsyncContext *ac, void *reply, void *priv)
{
	struct td_intake *in = priv;
	struct td_shard *s = shard_of(in);
	redisReply *r = reply;
	in->reading = false;
	if (!r)
		return; /* reader down; it restarts from our pending entries */
	if (r->type == REDIS_REPLY_ERROR) {
		char esc[300];
		td_error("XREADGROUP failed", "\"error\":\"%s\"",
			 td_log_esc(esc, sizeof(esc), r->str, r->len));
		/* NOGROUP (the stream was deleted) and the like: start over. */
		td_redis_reset(&s->reader, "XREADGROUP failed");
		return;
	}
	size_t n = 0;
	if (r->type == REDIS_REPLY_ARRAY && r->elements > 0) {
		const redisReply *st = r->element[0];
		if (st->type == REDIS_REPLY_ARRAY && st->elements == 2 &&
		    st->element[1]->type == REDIS_REPLY_ARRAY) {
			const redisReply *entries = st->element[1];
			n = entries->elements;
			for (size_t i = 0; i < n; i++)
				submission(s, entries->element[i]);
			if (n > 0 && in->pending_phase) {
				const redisReply *last = entries->element[n - 1];
				if (last->type == REDIS_REPLY_ARRAY && last->elements > 0 &&
				    last->element[0]->type == REDIS_REPLY_STRING)
					snprintf(in->last_id, sizeof(in->last_id), "%s",
						 last->element[0]->str);
			}
		}
	}
	if (in->pending_phase && n == 0) {
		in->pending_phase = false;
		td_info("ready", "\"consumer\":\"%s\",\"triggers\":%zu",
			s->eng->cfg.consumer, s->table.count);
	}
	td_intake_kick(in);
}

void td_intake_kick(struct td_intake *in)
{
	struct td_shard *s = shard_of(in);
	if (in->reading || !in->loaded || s->stopping || !s->reader.up)
		return;
	/* Backpressure: a read adds up to read_count records. */
	if (s->sink.nrec + s->eng->cfg.read_count > s->sink.max)
		return;
	char count[16];
	snprintf(count, sizeof(count), "%u", s->eng->cfg.read_count);
	const char *argv[11];
	size_t argvlen[11];
	int n = 0;
	argv[n++] = "XREADGROUP";
	argv[n++] = "GROUP";
	argv[n++] = "triggerd";
	argv[n++] = s->eng->cfg.consumer;
	argv[n++] = "COUNT";
	argv[n++] = count;
	if (!in->pending_phase) {
		argv[n++] = "BLOCK";
		argv[n++] = BLOCK_MS;
	}
	argv[n++] = "STREAMS";
	argv[n++] = s->eng->key_submit;
	argv[n++] = in->pending_phase ? in->last_id : ">";
	for (int i = 0; i < n; i++)
		argvlen[i] = strlen(argv[i]);
	if (td_redis_cmd(&s->reader, read_cb, in, n, argv, argvlen) == 0)
		in->reading = true;
}
