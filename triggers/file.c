/*
 * The `file` kind: wait for a file (a path or a glob) to exist, optionally
 * with a minimum size and unchanged for a while.
 *
 * args:
 *   path              required; absolute; glob characters (* ? [..]) may
 *                     appear in any component (fnmatch, as Python's glob:
 *                     '*' does not match a leading '.')
 *   recursive         bool (default false): a "**" component matches zero
 *                     or more directories, as Python's glob(recursive=True)
 *   min_size          bytes (default 0)
 *   stable_ms         fire only once the size (and mtime) stayed the same
 *                     this long (default 0: at once)
 *   poll_interval_ms  listing interval where inotify cannot be used
 *                     (default 5000, 100..86400000)
 *   success_payload   any value: the event's payload instead of
 *                     {"path", "size", "mtime_ms"}
 *
 * Only regular files count (symlinks are followed). A file found at start
 * fires at once; one being written fires when it is closed after writing
 * (IN_CLOSE_WRITE), or when renamed into place (IN_MOVED_TO); a hard link
 * or symlink created in place fires when it appears.
 *
 * The engine's watcher (engine/fswatch.c) reports matching paths to
 * on_match, which records a candidate; a timer per trigger (armed only
 * while there are candidates) stats them and fires. With repeat, every
 * version of every matching file fires once: the occurrence key is derived
 * from the path, device, inode and mtime, so a restart (which finds the
 * same files again) posts nothing twice within --dedup-ttl.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "clock.h"
#include "triggerd/fswatch.h"
#include "triggerd/kind.h"
#include "triggerd/log.h"
#include "triggerd/triggerd.h"

#define DEFAULT_POLL_MS 5000
#define MIN_POLL_MS 100
#define MAX_MS 86400000
#define MAX_CANDS 65536

/* The validated args; one allocation: this, the compiled pattern, then the
 * success payload (msgpack). */
struct file_spec {
	int64_t min_size;
	uint32_t stable_ms;
	uint32_t payload_off;         /* from pat; 0: no success_payload */
	uint32_t payload_len;
	uint32_t pad;
	uint64_t pat[];               /* struct td_fs_pattern */
};

/* A path that matched, to be stat'ed at @due. */
struct cand {
	struct cand *next;
	uint64_t due;                 /* wheel tick */
	int64_t size;                 /* stable_ms: as last seen */
	int64_t mtime_ns;
	uint16_t len;
	char path[];
};

/* Present only while there are candidates. */
struct check {
	struct td_timer node;
	struct file_state *fs;
	struct cand *head;
	unsigned n;
};

struct file_state {
	struct td_fs_waiter w;        /* w.pat points into spec */
	struct file_spec *spec;
	struct check *chk;
};

static inline const struct td_fs_pattern *spec_pat(const struct file_spec *sp)
{
	return (const struct td_fs_pattern *)(const void *)sp->pat;
}

static int get_uint(const msgpack_object *v, const char *name, uint64_t lo, uint64_t hi,
		    uint64_t *out, char *err, size_t errlen)
{
	if (v->type != MSGPACK_OBJECT_POSITIVE_INTEGER || v->via.u64 < lo || v->via.u64 > hi)
		return td_spec_err(err, errlen, "args.%s: expected an integer %llu..%llu", name,
			   (unsigned long long)lo, (unsigned long long)hi);
	*out = v->via.u64;
	return 0;
}

static void on_match(struct td_fs_waiter *w, const char *path, size_t len,
		     enum td_fs_how how);

static int parse(struct td_trigger *t, const msgpack_object *args, int64_t now_ms, char *err,
		 size_t errlen)
{
	struct file_state *fs = td_trigger_state(t);
	memset(fs, 0, sizeof(*fs));
	if (!args || args->type != MSGPACK_OBJECT_MAP)
		return td_spec_err(err, errlen, "args: required map with at least \"path\"");
	const msgpack_object *path = NULL, *payload = NULL;
	bool recursive = false;
	uint64_t min_size = 0, stable_ms = 0, poll_ms = DEFAULT_POLL_MS;
	int rc = 0;
	for (uint32_t i = 0; i < args->via.map.size && !rc; i++) {
		const msgpack_object *k = &args->via.map.ptr[i].key;
		const msgpack_object *v = &args->via.map.ptr[i].val;
		int kl = k->type == MSGPACK_OBJECT_STR && k->via.str.size < 64 ?
			 (int)k->via.str.size : 0;
		const char *kp = k->type == MSGPACK_OBJECT_STR ? k->via.str.ptr : "";
		for (uint32_t j = 0; j < i; j++)
			if (msgpack_object_equal(*k, args->via.map.ptr[j].key))
				return td_spec_err(err, errlen, "args.%.*s: given twice", kl, kp);
		if (td_mp_str_is(k, "path")) {
			if (v->type != MSGPACK_OBJECT_STR)
				return td_spec_err(err, errlen, "args.path: expected a string (an absolute path or glob)");
			path = v;
		} else if (td_mp_str_is(k, "recursive")) {
			if (v->type != MSGPACK_OBJECT_BOOLEAN)
				return td_spec_err(err, errlen, "args.recursive: expected true or false");
			recursive = v->via.boolean;
		} else if (td_mp_str_is(k, "min_size")) {
			rc = get_uint(v, "min_size", 0, INT64_MAX, &min_size, err, errlen);
		} else if (td_mp_str_is(k, "stable_ms")) {
			rc = get_uint(v, "stable_ms", 0, MAX_MS, &stable_ms, err, errlen);
		} else if (td_mp_str_is(k, "poll_interval_ms")) {
			rc = get_uint(v, "poll_interval_ms", MIN_POLL_MS, MAX_MS, &poll_ms, err,
				      errlen);
		} else if (td_mp_str_is(k, "success_payload")) {
			payload = v;
		} else {
			return td_spec_err(err, errlen, "args.%.*s: unknown field (expected path, recursive, "
				   "min_size, stable_ms, poll_interval_ms, success_payload)", kl, kp);
		}
	}
	if (rc)
		return rc;
	if (!path)
		return td_spec_err(err, errlen, "args.path: required (an absolute path or glob)");
	size_t psize;
	char why[128];
	if (td_fs_pattern_size(path->via.str.ptr, path->via.str.size, recursive, &psize, why,
			       sizeof(why)))
		return td_spec_err(err, errlen, "args.path: %s", why);
	msgpack_sbuffer pl;
	msgpack_sbuffer_init(&pl);
	if (payload) {
		msgpack_packer pk;
		msgpack_packer_init(&pk, &pl, msgpack_sbuffer_write);
		msgpack_pack_object(&pk, *payload);
	}
	psize = (psize + 7) & ~(size_t)7;
	struct file_spec *sp = malloc(sizeof(*sp) + psize + pl.size);
	if (!sp) {
		msgpack_sbuffer_destroy(&pl);
		td_spec_err(err, errlen, "args: out of memory");
		return -ENOMEM;
	}
	sp->min_size = (int64_t)min_size;
	sp->stable_ms = (uint32_t)stable_ms;
	sp->payload_off = payload ? (uint32_t)psize : 0;
	sp->payload_len = (uint32_t)pl.size;
	sp->pad = 0;
	td_fs_pattern_init((struct td_fs_pattern *)(void *)sp->pat, path->via.str.ptr,
			   path->via.str.size, recursive);
	if (pl.size)
		memcpy((char *)sp->pat + psize, pl.data, pl.size);
	msgpack_sbuffer_destroy(&pl);
	fs->spec = sp;
	fs->w.pat = spec_pat(sp);
	fs->w.on_match = on_match;
	fs->w.poll_ms = (uint32_t)poll_ms;
	return 0;
}

static void pack_str(msgpack_packer *pk, const char *s, size_t n)
{
	msgpack_pack_str(pk, n);
	msgpack_pack_str_body(pk, s, n);
}

static void pack_args(const struct td_trigger *t, msgpack_packer *pk)
{
	const struct file_state *fs = td_trigger_state(t);
	const struct file_spec *sp = fs->spec;
	const struct td_fs_pattern *p = spec_pat(sp);
	msgpack_pack_map(pk, 5 + (sp->payload_off != 0));
	pack_str(pk, "path", 4);
	pack_str(pk, td_fs_pattern_path(p), p->len);
	pack_str(pk, "recursive", 9);
	if (p->recursive)
		msgpack_pack_true(pk);
	else
		msgpack_pack_false(pk);
	pack_str(pk, "min_size", 8);
	msgpack_pack_uint64(pk, (uint64_t)sp->min_size);
	pack_str(pk, "stable_ms", 9);
	msgpack_pack_uint32(pk, sp->stable_ms);
	pack_str(pk, "poll_interval_ms", 16);
	msgpack_pack_uint32(pk, fs->w.poll_ms);
	if (sp->payload_off) {
		pack_str(pk, "success_payload", 15);
		/* Already msgpack: raw bytes. */
		msgpack_pack_str_body(pk, (const char *)sp->pat + sp->payload_off,
				      sp->payload_len);
	}
}

/* ---- candidates ------------------------------------------------------- */

static void check_free(struct file_state *fs)
{
	struct check *c = fs->chk;
	if (!c)
		return;
	td_wheel_cancel(td_shard_wheel(td_trigger_shard(td_trigger_from_state(fs))), &c->node);
	while (c->head) {
		struct cand *n = c->head;
		c->head = n->next;
		free(n);
	}
	free(c);
	fs->chk = NULL;
}

static int64_t mtime_ns(const struct stat *st)
{
	return (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
}

/* The occurrence key of one version of one file. */
static uint64_t occurrence(const char *path, size_t len, const struct stat *st)
{
	uint64_t h = 0xcbf29ce484222325ULL;
	for (size_t i = 0; i < len; i++) {
		h ^= (unsigned char)path[i];
		h *= 0x100000001b3ULL;
	}
	uint64_t v[3] = {(uint64_t)st->st_dev, (uint64_t)st->st_ino, (uint64_t)mtime_ns(st)};
	for (int i = 0; i < 3; i++) {
		h ^= v[i];
		h *= 0x100000001b3ULL;
		h ^= h >> 29;
	}
	h *= 0xbf58476d1ce4e5b9ULL;
	return h ^ (h >> 32);
}

/* Fire for @c (stat'ed as @st). Returns td_trigger_fire's answer; on 0 a
 * one-shot trigger is gone. */
static int fire(struct td_trigger *t, struct file_state *fs, const struct cand *c,
		const struct stat *st)
{
	const struct file_spec *sp = fs->spec;
	struct td_outcome o = {.status = TD_SUCCESS, .due_at_ms = -1};
	msgpack_sbuffer sb;
	msgpack_sbuffer_init(&sb);
	if (sp->payload_off) {
		o.payload = (const char *)sp->pat + sp->payload_off;
		o.payload_len = sp->payload_len;
	} else {
		msgpack_packer pk;
		msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
		msgpack_pack_map(&pk, 3);
		pack_str(&pk, "path", 4);
		pack_str(&pk, c->path, c->len);
		pack_str(&pk, "size", 4);
		msgpack_pack_uint64(&pk, (uint64_t)st->st_size);
		pack_str(&pk, "mtime_ms", 8);
		msgpack_pack_int64(&pk, mtime_ns(st) / 1000000);
		o.payload = sb.data;
		o.payload_len = sb.size;
	}
	if (td_trigger_repeat(t))
		o.occurrence = occurrence(c->path, c->len, st);
	int rc = td_trigger_fire(t, &o);
	msgpack_sbuffer_destroy(&sb);
	return rc;
}

static void check_cb(struct td_timer *node, uint64_t now)
{
	struct check *chk = td_container_of(node, struct check, node);
	struct file_state *fs = chk->fs;
	struct td_trigger *t = td_trigger_from_state(fs);
	const struct file_spec *sp = fs->spec;
	bool repeat = td_trigger_repeat(t);
	uint64_t next = UINT64_MAX;
	for (struct cand **pp = &chk->head; *pp;) {
		struct cand *c = *pp;
		if (c->due > now) {
			next = c->due < next ? c->due : next;
			pp = &c->next;
			continue;
		}
		struct stat st;
		if (stat(c->path, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size < sp->min_size) {
			/* Gone, not a file, or too small: a later close,
			 * rename or poll offers it again. */
			*pp = c->next;
			chk->n--;
			free(c);
			continue;
		}
		if (sp->stable_ms && (st.st_size != c->size || mtime_ns(&st) != c->mtime_ns)) {
			c->size = st.st_size;
			c->mtime_ns = mtime_ns(&st);
			c->due = now + sp->stable_ms;
			next = c->due < next ? c->due : next;
			pp = &c->next;
			continue;
		}
		*pp = c->next;
		chk->n--;
		int rc = fire(t, fs, c, &st);
		free(c);
		/* One-shot and fired: the trigger is freed. Held (sink full):
		 * stop() freed the candidates; start() scans again later. */
		if (rc != 0 || !repeat)
			return;
	}
	if (next != UINT64_MAX)
		td_wheel_add(td_shard_wheel(td_trigger_shard(t)), &chk->node, next);
	else
		check_free(fs);
}

/* A path matched: follow it. Runs inside the watcher's loops, so it only
 * records and arms the timer. */
static void on_match(struct td_fs_waiter *w, const char *path, size_t len,
		     enum td_fs_how how)
{
	struct file_state *fs = td_container_of(w, struct file_state, w);
	const struct file_spec *sp = fs->spec;
	struct td_wheel *wheel = td_shard_wheel(td_trigger_shard(td_trigger_from_state(fs)));
	struct stat st;
	if (how == TD_FS_CREATED && !sp->stable_ms) {
		/* Created by open(): wait for the close after writing. A hard
		 * link or a symlink is complete as it appears. */
		if (lstat(path, &st) != 0 ||
		    !(S_ISLNK(st.st_mode) || (S_ISREG(st.st_mode) && st.st_nlink > 1)))
			return;
	}
	if (sp->stable_ms && (stat(path, &st) != 0 || !S_ISREG(st.st_mode) ||
			      st.st_size < sp->min_size))
		return;
	struct check *chk = fs->chk;
	if (!chk) {
		if (!(chk = calloc(1, sizeof(*chk))))
			goto oom;
		td_timer_init(&chk->node, check_cb);
		chk->fs = fs;
		fs->chk = chk;
	}
	/* The clock, not wheel->now: that is as old as the loop's last wait. */
	uint64_t due = td_mono_ms() + sp->stable_ms;
	struct cand *c = chk->head;
	for (; c; c = c->next)
		if (c->len == len && memcmp(c->path, path, len) == 0)
			break;
	if (c) {
		/* Followed already: without stable_ms check it now; with it,
		 * the timer's next look sees the change. */
		if (sp->stable_ms)
			return;
		c->due = due;
	} else {
		if (chk->n >= MAX_CANDS || !(c = malloc(sizeof(*c) + len + 1)))
			goto oom;
		c->due = due;
		c->size = sp->stable_ms ? st.st_size : 0;
		c->mtime_ns = sp->stable_ms ? mtime_ns(&st) : 0;
		c->len = (uint16_t)len;
		memcpy(c->path, path, len + 1);
		c->next = chk->head;
		chk->head = c;
		chk->n++;
	}
	if (!td_timer_pending(&chk->node) || chk->node.expires > due)
		td_wheel_add(wheel, &chk->node, due);
	return;
oom:
	td_warn("file: a matching file is not followed (out of memory or too many candidates)",
		"\"candidates\":%u", chk ? chk->n : 0);
	if (chk && !chk->head)
		check_free(fs);
}

/* ---- lifecycle -------------------------------------------------------- */

static int start(struct td_trigger *t)
{
	struct file_state *fs = td_trigger_state(t);
	return td_fswatch_wait(td_trigger_shard(t), &fs->w);
}

static void stop(struct td_trigger *t)
{
	struct file_state *fs = td_trigger_state(t);
	td_fswatch_unwait(&fs->w);
	check_free(fs);
}

static void destroy(struct td_trigger *t)
{
	struct file_state *fs = td_trigger_state(t);
	stop(t);
	free(fs->spec);
	fs->spec = NULL;
}

const struct td_kind td_kind_file = {
	.name = "file",
	.state_size = sizeof(struct file_state),
	.parse = parse,
	.pack_args = pack_args,
	.start = start,
	.stop = stop,
	.destroy = destroy,
};
