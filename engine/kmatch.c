/*
 * Matching Kafka messages against the triggers waiting on their topic
 * (engine/kwatch_i.h), and building the event payloads.
 *
 * Cost per message: the waiters without a key or pointer filter are each
 * checked; those with a key filter are found by the message's key; the
 * unkeyed ones with a json_pointer + equals filter are grouped by pointer,
 * and each distinct pointer is followed once, its value packed and looked
 * up. So a thousand triggers each waiting for "its" key or "its"
 * /run_id cost a hash lookup or two, not a thousand checks. The value is
 * parsed as JSON once per message, and each payload shape built once.
 *
 * Equality through the index is byte equality of the canonical msgpack
 * encoding (msgpack_pack_object of the unpacked value, on both sides),
 * which is msgpack_object_equal; each candidate is checked in full after.
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "kwatch_i.h"
#include "triggerd/codec.h"
#include "triggerd/triggerd.h"

#define JSON_MAX (1u << 20)      /* values parsed as JSON up to this size */

uint64_t td_khash(const void *p, size_t n)
{
	const unsigned char *s = p;
	uint64_t h = 0xcbf29ce484222325ULL;
	for (size_t i = 0; i < n; i++) {
		h ^= s[i];
		h *= 0x100000001b3ULL;
	}
	h ^= h >> 29;
	h *= 0xbf58476d1ce4e5b9ULL;
	return h ^ (h >> 32);
}

/* ---- byte index ---------------------------------------------------------- */

static struct kbucket *idx_find(const struct kindex *ix, const void *p, size_t n, uint64_t h)
{
	if (!ix->nb)
		return NULL;
	for (struct kbucket *b = ix->b[h & (ix->nb - 1)]; b; b = b->hnext)
		if (b->hash == h && b->len == n && !memcmp(b->bytes, p, n))
			return b;
	return NULL;
}

static void idx_grow(struct kindex *ix)
{
	size_t n = ix->nb ? ix->nb * 2 : 8;
	struct kbucket **nb = calloc(n, sizeof(*nb));
	if (!nb)
		return; /* longer chains */
	for (size_t i = 0; i < ix->nb; i++) {
		for (struct kbucket *b = ix->b[i], *next; b; b = next) {
			next = b->hnext;
			b->hnext = nb[b->hash & (n - 1)];
			nb[b->hash & (n - 1)] = b;
		}
	}
	free(ix->b);
	ix->b = nb;
	ix->nb = n;
}

static struct kbucket *idx_make(struct kindex *ix, const void *p, size_t n)
{
	uint64_t h = td_khash(p, n);
	struct kbucket *b = idx_find(ix, p, n, h);
	if (b)
		return b;
	if (ix->n >= ix->nb)
		idx_grow(ix);
	if (!ix->nb || !(b = calloc(1, sizeof(*b) + n + 1)))
		return NULL;
	if (n)
		memcpy(b->bytes, p, n);
	b->len = n;
	b->hash = h;
	b->hnext = ix->b[h & (ix->nb - 1)];
	ix->b[h & (ix->nb - 1)] = b;
	ix->n++;
	return b;
}

static void idx_remove(struct kindex *ix, struct kbucket *b)
{
	for (struct kbucket **pp = &ix->b[b->hash & (ix->nb - 1)]; *pp; pp = &(*pp)->hnext) {
		if (*pp == b) {
			*pp = b->hnext;
			ix->n--;
			free(b);
			return;
		}
	}
}

static void idx_finish(struct kindex *ix)
{
	for (size_t i = 0; i < ix->nb; i++) {
		for (struct kbucket *b = ix->b[i], *next; b; b = next) {
			next = b->hnext;
			free(b);
		}
	}
	free(ix->b);
	ix->b = NULL;
	ix->nb = ix->n = 0;
}

/* ---- waiters ---------------------------------------------------------------- */

int td_kwaiters_add(struct td_kwaiters *ws, struct td_klink *l)
{
	const struct td_kafka_spec *sp = l->w->spec;
	l->ix = NULL;
	l->kb = NULL;
	l->kp = NULL;
	if (sp->has_key) {
		if (!(l->kb = idx_make(&ws->keys, sp->key, sp->key_len)))
			return -ENOMEM;
		l->ix = &ws->keys;
		l->head = &l->kb->head;
	} else if (sp->pointer) {
		struct kptr *kp = ws->ptrs;
		while (kp && strcmp(kp->pointer, sp->pointer))
			kp = kp->next;
		if (!kp) {
			if (!(kp = calloc(1, sizeof(*kp) + strlen(sp->pointer) + 1)))
				return -ENOMEM;
			strcpy(kp->pointer, sp->pointer);
			kp->next = ws->ptrs;
			ws->ptrs = kp;
		}
		l->kp = kp;
		if (!(l->kb = idx_make(&kp->vals, sp->equals, sp->equals_len))) {
			if (!kp->vals.n) {
				l->head = NULL;
				td_kwaiters_remove(ws, l);
			}
			return -ENOMEM;
		}
		l->ix = &kp->vals;
		l->head = &l->kb->head;
	} else {
		l->head = &ws->any;
	}
	l->prev = NULL;
	l->next = *l->head;
	if (l->next)
		l->next->prev = l;
	*l->head = l;
	ws->n++;
	return 0;
}

void td_kwaiters_remove(struct td_kwaiters *ws, struct td_klink *l)
{
	if (l->head) {
		if (l->prev)
			l->prev->next = l->next;
		else
			*l->head = l->next;
		if (l->next)
			l->next->prev = l->prev;
		ws->n--;
	}
	if (l->kb && !l->kb->head)
		idx_remove(l->ix, l->kb);
	if (l->kp && !l->kp->vals.n) {
		for (struct kptr **pp = &ws->ptrs; *pp; pp = &(*pp)->next) {
			if (*pp == l->kp) {
				*pp = l->kp->next;
				break;
			}
		}
		idx_finish(&l->kp->vals);
		free(l->kp);
	}
	l->next = l->prev = NULL;
	l->head = NULL;
	l->ix = NULL;
	l->kb = NULL;
	l->kp = NULL;
}

static void detach_list(struct td_klink *l)
{
	for (; l; l = l->next)
		l->w->c = NULL;
}

static void detach_index(const struct kindex *ix)
{
	for (size_t i = 0; i < ix->nb; i++)
		for (struct kbucket *b = ix->b[i]; b; b = b->hnext)
			detach_list(b->head);
}

void td_kwaiters_detach(struct td_kwaiters *ws)
{
	detach_list(ws->any);
	detach_index(&ws->keys);
	for (struct kptr *kp = ws->ptrs; kp; kp = kp->next)
		detach_index(&kp->vals);
}

void td_kwaiters_finish(struct td_kwaiters *ws)
{
	idx_finish(&ws->keys);
	while (ws->ptrs) {
		struct kptr *kp = ws->ptrs;
		ws->ptrs = kp->next;
		idx_finish(&kp->vals);
		free(kp);
	}
	ws->any = NULL;
	ws->n = 0;
}

/* ---- the message ------------------------------------------------------------ */

void td_kmatch_init(struct td_kmatch *km)
{
	/* All zero is what msgpack_sbuffer_init makes of each buffer. */
	memset(km, 0, sizeof(*km));
}

void td_kmatch_finish(struct td_kmatch *km)
{
	struct kview *v = &km->v;
	if (v->parsed && v->is_json)
		msgpack_unpacked_destroy(&v->up);
	v->parsed = v->is_json = false;
	msgpack_sbuffer_destroy(&v->mp);
	for (size_t i = 0; i < TD_ARRAY_LEN(v->pl); i++)
		msgpack_sbuffer_destroy(&v->pl[i].sb);
	msgpack_sbuffer_destroy(&v->own);
	msgpack_sbuffer_destroy(&v->cmp);
	msgpack_sbuffer_destroy(&km->val);
	free(km->cand);
	km->cand = NULL;
	km->cand_cap = 0;
}

void td_kmatch_reset(struct td_kmatch *km, rd_kafka_message_t *m)
{
	struct kview *v = &km->v;
	rd_kafka_timestamp_type_t tt;
	v->m = m;
	v->topic = rd_kafka_topic_name(m->rkt);
	v->ts = rd_kafka_message_timestamp(m, &tt);
	v->hdrs_done = false;
	v->hdrs = NULL;
	if (v->parsed && v->is_json)
		msgpack_unpacked_destroy(&v->up);
	v->parsed = v->is_json = false;
	v->mp.size = 0;
	v->npl = 0;
}

static rd_kafka_headers_t *view_headers(struct kview *v)
{
	if (!v->hdrs_done) {
		v->hdrs_done = true;
		if (rd_kafka_message_headers(v->m, &v->hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR)
			v->hdrs = NULL;
	}
	return v->hdrs;
}

static void view_parse(struct kview *v)
{
	if (v->parsed)
		return;
	v->parsed = true;
	const rd_kafka_message_t *m = v->m;
	char err[128];
	if (!m->payload || m->len == 0 || m->len > JSON_MAX)
		return;
	if (td_json_to_msgpack(m->payload, m->len, &v->mp, err, sizeof(err)) != 0)
		return;
	msgpack_unpacked_init(&v->up);
	size_t off = 0;
	v->is_json = msgpack_unpack_next(&v->up, v->mp.data, v->mp.size, &off) ==
		     MSGPACK_UNPACK_SUCCESS;
	if (!v->is_json)
		msgpack_unpacked_destroy(&v->up);
}

/* Every filter of @sp (the key too: a waiter may be checked off-index). */
static bool spec_matches(struct kview *v, const struct td_kafka_spec *sp)
{
	const rd_kafka_message_t *m = v->m;
	if (sp->since_ms >= 0 && v->ts >= 0 && v->ts < sp->since_ms)
		return false;
	if (sp->has_key && (!m->key || m->key_len != sp->key_len ||
			    memcmp(m->key, sp->key, sp->key_len) != 0))
		return false;
	if (sp->payload == TD_KAFKA_PAYLOAD_VALUE && (!m->payload || m->len == 0))
		return false;
	for (unsigned i = 0; i < sp->nheaders; i++) {
		rd_kafka_headers_t *h = view_headers(v);
		const void *val = NULL;
		size_t sz = 0;
		if (!h || rd_kafka_header_get_last(h, sp->headers[i].name, &val, &sz) != 0 || !val ||
		    sz != sp->headers[i].value_len || memcmp(val, sp->headers[i].value, sz) != 0)
			return false;
	}
	if (sp->pointer) {
		view_parse(v);
		if (!v->is_json)
			return false;
		const msgpack_object *got = td_mp_pointer(&v->up.data, sp->pointer);
		if (!got)
			return false;
		/* Packed bytes compared, as the value index does: msgpack-c
		 * packs each value in its one shortest form. (Keeping @equals
		 * unpacked cost a zone of 8 KiB per trigger.) */
		msgpack_packer pk;
		v->cmp.size = 0;
		msgpack_packer_init(&pk, &v->cmp, msgpack_sbuffer_write);
		msgpack_pack_object(&pk, *got);
		if (v->cmp.size != sp->equals_len || memcmp(v->cmp.data, sp->equals, sp->equals_len))
			return false;
	}
	if (sp->re) {
		if (!m->payload)
			return false;
		int rc = pcre2_match((const pcre2_code *)sp->re, (PCRE2_SPTR)m->payload, m->len, 0, 0,
				     (pcre2_match_data *)sp->md, (pcre2_match_context *)sp->mctx);
		if (rc < 0)
			return false; /* a match limit hit is a non-match */
	}
	return true;
}

static size_t check_list(struct td_kmatch *km, const struct td_klink *l, size_t n)
{
	for (; l; l = l->next)
		if (spec_matches(&km->v, l->w->spec))
			km->cand[n++] = l->w;
	return n;
}

size_t td_kmatch_run(struct td_kmatch *km, const struct td_kwaiters *ws)
{
	struct kview *v = &km->v;
	const rd_kafka_message_t *m = v->m;
	if (ws->n > km->cand_cap) {
		size_t cap = km->cand_cap ? km->cand_cap : 64;
		while (cap < ws->n)
			cap *= 2;
		struct td_kafka_waiter **a = realloc(km->cand, cap * sizeof(*a));
		if (!a)
			return (size_t)-1;
		km->cand = a;
		km->cand_cap = cap;
	}
	size_t n = check_list(km, ws->any, 0);
	if (m->key && ws->keys.n) {
		struct kbucket *b = idx_find(&ws->keys, m->key, m->key_len,
					     td_khash(m->key, m->key_len));
		if (b)
			n = check_list(km, b->head, n);
	}
	if (ws->ptrs) {
		view_parse(v);
		for (const struct kptr *kp = ws->ptrs; kp && v->is_json; kp = kp->next) {
			const msgpack_object *got = td_mp_pointer(&v->up.data, kp->pointer);
			if (!got)
				continue;
			msgpack_packer pk;
			km->val.size = 0;
			msgpack_packer_init(&pk, &km->val, msgpack_sbuffer_write);
			msgpack_pack_object(&pk, *got);
			struct kbucket *b = idx_find(&kp->vals, km->val.data, km->val.size,
						     td_khash(km->val.data, km->val.size));
			if (b)
				n = check_list(km, b->head, n);
		}
	}
	return n;
}

/* ---- payload -------------------------------------------------------------- */

static void pack_str(msgpack_packer *pk, const char *s, size_t n)
{
	msgpack_pack_str(pk, n);
	msgpack_pack_str_body(pk, s, n);
}

/* Is header @i the last one with its name? (the payload keeps the last) */
static bool header_last(rd_kafka_headers_t *h, size_t i, const char *name)
{
	const char *n;
	const void *val;
	size_t sz;
	for (size_t j = i + 1; rd_kafka_header_get_all(h, j, &n, &val, &sz) == 0; j++)
		if (!strcmp(n, name))
			return false;
	return true;
}

/*
 * {"topic", "partition", "offset", "key", "value", "headers",
 * "timestamp_ms"}: value is the parsed JSON when the value is JSON, else a
 * string; past @cap bytes "value_truncated": true and "value_size" replace
 * it. key and value are nil for a null key / value (a tombstone).
 */
static void build_message(struct kview *v, size_t cap, msgpack_sbuffer *out)
{
	const rd_kafka_message_t *m = v->m;
	bool fits = !m->payload || m->len <= cap;
	if (fits)
		view_parse(v);
	rd_kafka_headers_t *h = view_headers(v);
	size_t nh = 0;
	const char *name;
	const void *val;
	size_t sz;
	for (size_t i = 0; h && rd_kafka_header_get_all(h, i, &name, &val, &sz) == 0; i++)
		nh += header_last(h, i, name);
	msgpack_packer pk;
	msgpack_packer_init(&pk, out, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 7 + !fits);
	pack_str(&pk, "topic", 5);
	pack_str(&pk, v->topic, strlen(v->topic));
	pack_str(&pk, "partition", 9);
	msgpack_pack_int32(&pk, m->partition);
	pack_str(&pk, "offset", 6);
	msgpack_pack_int64(&pk, m->offset);
	pack_str(&pk, "key", 3);
	if (m->key)
		pack_str(&pk, m->key, m->key_len);
	else
		msgpack_pack_nil(&pk);
	if (!fits) {
		pack_str(&pk, "value_truncated", 15);
		msgpack_pack_true(&pk);
		pack_str(&pk, "value_size", 10);
		msgpack_pack_uint64(&pk, m->len);
	} else {
		pack_str(&pk, "value", 5);
		if (!m->payload)
			msgpack_pack_nil(&pk);
		else if (v->is_json)
			msgpack_sbuffer_write(out, v->mp.data, v->mp.size);
		else
			pack_str(&pk, m->payload, m->len);
	}
	pack_str(&pk, "headers", 7);
	msgpack_pack_map(&pk, nh);
	for (size_t i = 0; h && rd_kafka_header_get_all(h, i, &name, &val, &sz) == 0; i++) {
		if (!header_last(h, i, name))
			continue;
		pack_str(&pk, name, strlen(name));
		if (val)
			pack_str(&pk, val, sz);
		else
			msgpack_pack_nil(&pk);
	}
	pack_str(&pk, "timestamp_ms", 12);
	if (v->ts >= 0)
		msgpack_pack_int64(&pk, v->ts);
	else
		msgpack_pack_nil(&pk);
}

static void build_payload(struct kview *v, enum td_kafka_payload mode, size_t cap,
			  msgpack_sbuffer *out)
{
	out->size = 0;
	if (mode == TD_KAFKA_PAYLOAD_VALUE) {
		/* What AwaitMessageTrigger yields without apply_function:
		 * message.value().decode("utf-8"). */
		msgpack_packer pk;
		msgpack_packer_init(&pk, out, msgpack_sbuffer_write);
		pack_str(&pk, v->m->payload ? v->m->payload : "", v->m->len);
		return;
	}
	build_message(v, cap, out);
}

const msgpack_sbuffer *td_kmatch_payload(struct td_kmatch *km, const struct td_kafka_spec *sp)
{
	struct kview *v = &km->v;
	size_t cap = sp->payload == TD_KAFKA_PAYLOAD_VALUE ? 0 : sp->max_value;
	for (unsigned i = 0; i < v->npl; i++)
		if (v->pl[i].mode == sp->payload && v->pl[i].cap == cap)
			return &v->pl[i].sb;
	if (v->npl < TD_ARRAY_LEN(v->pl)) {
		unsigned i = v->npl++;
		v->pl[i].mode = sp->payload;
		v->pl[i].cap = cap;
		build_payload(v, sp->payload, cap, &v->pl[i].sb);
		return &v->pl[i].sb;
	}
	build_payload(v, sp->payload, cap, &v->own);
	return &v->own;
}

uint64_t td_kmatch_occurrence(const char *topic, int32_t partition, int64_t offset)
{
	char buf[TD_KAFKA_TOPIC_MAX + 1 + sizeof(int32_t) + sizeof(int64_t)];
	size_t n = strlen(topic);
	if (n > TD_KAFKA_TOPIC_MAX)
		n = TD_KAFKA_TOPIC_MAX;
	memcpy(buf, topic, n);
	buf[n] = '\0';
	memcpy(buf + n + 1, &partition, sizeof(partition));
	memcpy(buf + n + 1 + sizeof(partition), &offset, sizeof(offset));
	return td_khash(buf, n + 1 + sizeof(partition) + sizeof(offset));
}
