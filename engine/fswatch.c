/*
 * The shard's file watcher: one inotify instance read through io_uring,
 * directory watches shared by every waiter under them, and polling where
 * inotify cannot help. See include/triggerd/fswatch.h for the model
 * (waiters, interests, directories).
 *
 * Structures:
 *   struct fsdir          one per directory someone has an interest in;
 *                         found by path (sharing) and by watch descriptor
 *                         (events). Watched (inotify), polled, or dead.
 *   struct td_fs_interest (waiter, directory, pattern component): entries
 *                         of the directory are matched against the
 *                         component. Literal components sit in a hash keyed
 *                         by (directory, name), globs on the directory's
 *                         list, so an event costs a lookup plus one fnmatch
 *                         per glob interest in that directory.
 *
 * An interest whose component is not the last one grows: a matching
 * subdirectory (found by a scan or an IN_CREATE/IN_MOVED_TO) gets an
 * interest for the next component, a watch, and a scan of its own (it may
 * have filled before the watch was added). A waiter starts with one "root"
 * interest in the deepest existing directory of its literal prefix.
 *
 * When a watched directory goes (deleted, moved, unmounted) its interests
 * go, with those below it; a waiter whose root went is seeded again from
 * the top. Nothing is fired here: matches go to the kind's on_match.
 *
 * Mutations never happen while a list is being walked for an event: a
 * subdirectory that appears is queued (struct expand), and deaths are
 * queued; both run from one wheel timer ("work") together with directory
 * scans, which are done a bounded number of entries per tick.
 *
 * Polling: when inotify_add_watch fails for lack of watches (ENOSPC,
 * ENOMEM) or permission, when no inotify instance can be had, for
 * filesystems whose changes made elsewhere raise no events (NFS, SMB/CIFS,
 * FUSE, 9p, Ceph, ...), or when TRIGGERD_FSWATCH_FORCE_POLL=1 is set (for
 * tests; TRIGGERD_FSWATCH_MAX_WATCHES=N makes watches past N fail as if
 * the kernel's limit were reached), a directory is polled: every poll_ms (the smallest asked by its
 * waiters) it is listed again and entries whose ctime is not older than
 * the newest ctime seen by the previous scans (minus 2 s of slack) are
 * offered; the first scan for an interest offers everything.
 *
 * What blocks: stat, statfs, inotify_add_watch, opendir and readdir run on
 * the shard's thread. They are cheap on local filesystems; a scan reads at
 * most SCAN_BUDGET entries per tick, but a directory's literal interests
 * are stat'ed in one go.
 */
#include <dirent.h>
#include <errno.h>
#include <fnmatch.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "clock.h"
#include "engine_i.h"
#include "triggerd/fswatch.h"
#include "triggerd/log.h"

#define DIR_MASK (IN_CREATE | IN_CLOSE_WRITE | IN_MOVED_TO | IN_DELETE_SELF | \
		  IN_MOVE_SELF | IN_ONLYDIR | IN_EXCL_UNLINK)
#define READ_BUF 65536
#define SCAN_BUDGET 2048          /* entries (or stats) per tick */
#define POLL_SLACK_NS (2 * INT64_C(1000000000))
#define POLL_WARN_MAX 32          /* "polling directory" lines, then quiet */
#define RETRY_MS 1000             /* after a failed inotify read */

/* interest flags */
#define I_ROOT 1                  /* the waiter's top interest */
#define I_PENDING 2               /* wants a full scan */
#define I_FULL 4                  /* in the running scan: offer everything */
#define I_POLL 8                  /* in the running scan: offer changes */

struct td_fs_interest {
	struct td_fs_interest *wnext;          /* waiter's list */
	struct td_fs_interest *dnext, **dpprev; /* directory's lits or globs */
	struct td_fs_interest *hnext, **hpprev; /* literal hash chain */
	struct td_fs_waiter *w;
	struct fsdir *dir;
	uint16_t comp;
	uint8_t flags;
};

enum dmode { D_NEW, D_WATCH, D_POLL, D_DEAD };

struct fsdir {
	struct fsdir *pnext;          /* path table */
	struct fsdir *wnext;          /* watch descriptor table */
	struct fsdir *qnext;          /* scan queue */
	struct fsdir *dnext;          /* death queue */
	struct td_fs_interest *lits, *globs;
	struct td_fswatch *fw;
	struct td_timer poll;         /* D_POLL: the next listing */
	int64_t hwm_ns;               /* newest ctime seen by scans */
	uint32_t ninterests;
	uint32_t poll_ms;
	uint32_t pins;                /* being scanned or expanded from */
	int wd;                       /* -1: none */
	uint8_t mode;                 /* enum dmode */
	uint8_t queued;               /* on the scan queue */
	uint8_t dying;                /* on the death queue */
	uint8_t poll_due;             /* the next scan is a poll */
	uint16_t len;
	char path[];
};

/* A subdirectory (or symlink) appeared in @dir: grow interests into it. */
struct expand {
	struct expand *next;
	struct fsdir *dir;            /* pinned */
	uint16_t len;
	char name[];
};

struct td_fswatch {
	struct td_shard *shard;
	int fd;                       /* inotify; -1: none (yet) */
	int fd_err;                   /* why there is none, once tried */
	bool force_poll, stopping, polling_fd, read_armed;
	size_t max_watches;           /* test knob: more fail as ENOSPC; 0: off */
	bool in_work;                 /* work_cb runs: new work waits a tick */
	struct td_op read_op;
	struct td_timer work;         /* queues and scans */
	struct td_timer retry;        /* re-arm the read after an error */
	struct fsdir **pt;            /* by path */
	size_t pt_n, ndirs;
	struct fsdir **wt;            /* by watch descriptor */
	size_t wt_n, nwatched;
	struct td_fs_interest **ht;   /* literal interests by (dir, name) */
	size_t ht_n, nlit;
	unsigned ht_busy;             /* a chain is being walked: do not grow */
	struct fsdir *q_head, *q_tail;
	struct fsdir *dead_head;
	struct expand *x_head, *x_tail;
	/* the scan in progress */
	struct fsdir *scan_dir;
	DIR *scan_dirp;
	int64_t scan_hwm;
	size_t ninterests, npolled;
	unsigned poll_warned;
	struct td_fswatch_stats st;
	char path[PATH_MAX];
	char buf[READ_BUF] __attribute__((aligned(8)));
};

/* ---- patterns --------------------------------------------------------- */

static bool is_dstar(const char *c, size_t n, bool recursive)
{
	return recursive && n == 2 && c[0] == '*' && c[1] == '*';
}

int td_fs_pattern_size(const char *path, size_t len, bool recursive, size_t *size,
		       char *err, size_t errlen)
{
	if (len == 0 || path[0] != '/') {
		snprintf(err, errlen, "expected an absolute path (starting with /)");
		return -EINVAL;
	}
	if (len > TD_FS_PATH_MAX) {
		snprintf(err, errlen, "longer than %d bytes", TD_FS_PATH_MAX);
		return -EINVAL;
	}
	if (memchr(path, '\0', len)) {
		snprintf(err, errlen, "contains a NUL byte");
		return -EINVAL;
	}
	if (path[len - 1] == '/') {
		snprintf(err, errlen, "must name files: no trailing '/'");
		return -EINVAL;
	}
	size_t n = 0;
	bool prev_dstar = false;
	for (size_t i = 1; i <= len;) {
		const char *c = path + i;
		const char *e = memchr(c, '/', len - i);
		size_t cl = e ? (size_t)(e - c) : len - i;
		if (cl == 0) {
			snprintf(err, errlen, "empty component ('//')");
			return -EINVAL;
		}
		if ((cl == 1 && c[0] == '.') || (cl == 2 && c[0] == '.' && c[1] == '.')) {
			snprintf(err, errlen, "no '.' or '..' components");
			return -EINVAL;
		}
		if (cl > NAME_MAX) {
			snprintf(err, errlen, "a component is longer than %d bytes", NAME_MAX);
			return -EINVAL;
		}
		bool ds = is_dstar(c, cl, recursive);
		if (!(ds && prev_dstar))
			n++;
		prev_dstar = ds;
		i += cl + 1;
	}
	if (n > TD_FS_COMPS_MAX) {
		snprintf(err, errlen, "more than %d components", TD_FS_COMPS_MAX);
		return -EINVAL;
	}
	*size = td_fs_pattern_bytes(len, n);
	return 0;
}

static bool has_glob(const char *c, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (c[i] == '*' || c[i] == '?' || c[i] == '[')
			return true;
	return false;
}

/* Calls @fn for each component of @path, "**" runs collapsed (recursive). */
#define FOR_EACH_COMP(path, len, recursive, c, cl, body)                      \
	do {                                                                  \
		bool prev_ds_ = false;                                        \
		for (size_t i_ = 1; i_ <= (len);) {                           \
			const char *c = (path) + i_;                          \
			const char *e_ = memchr(c, '/', (len) - i_);          \
			size_t cl = e_ ? (size_t)(e_ - c) : (len) - i_;        \
			bool ds_ = is_dstar(c, cl, recursive);                \
			i_ += cl + 1;                                         \
			if (ds_ && prev_ds_)                                  \
				continue;                                     \
			prev_ds_ = ds_;                                       \
			body                                                  \
		}                                                             \
	} while (0)

void td_fs_pattern_init(struct td_fs_pattern *p, const char *path, size_t len,
			bool recursive)
{
	unsigned n = 0;
	FOR_EACH_COMP(path, len, recursive, c, cl, { (void)c; (void)cl; n++; });
	p->len = (uint16_t)len;
	p->ncomp = (uint16_t)n;
	p->recursive = recursive;
	char *pp = (char *)td_fs_pattern_path(p);
	memcpy(pp, path, len);
	pp[len] = '\0';
	char *cs = pp + len + 1;
	uint16_t off = 0;
	unsigned k = 0;
	FOR_EACH_COMP(path, len, recursive, c, cl, {
		p->comp[k].off = off;
		p->comp[k].len = (uint16_t)cl;
		p->comp[k].flags = is_dstar(c, cl, recursive) ? TD_FS_DSTAR :
				   has_glob(c, cl) ? 0 : TD_FS_LIT;
		memcpy(cs + off, c, cl);
		cs[off + cl] = '\0';
		off = (uint16_t)(off + cl + 1);
		k++;
	});
}

/* What entry @name of a directory means at component @j of @p. */
struct step {
	bool leaf;                    /* a match: the path is a candidate */
	int descend;                  /* a directory: go on at this component */
	bool dstar;                   /* a directory: "**" goes on into it */
};

static bool comp_match(const struct td_fs_pattern *p, unsigned j, const char *name,
		       size_t nlen)
{
	const struct td_fs_comp *c = &p->comp[j];
	const char *cs = td_fs_pattern_comps(p) + c->off;
	if (c->flags & TD_FS_LIT)
		return c->len == nlen && memcmp(cs, name, nlen) == 0;
	return fnmatch(cs, name, FNM_PERIOD | FNM_NOESCAPE) == 0;
}

static struct step match(const struct td_fs_pattern *p, unsigned j, const char *name,
			 size_t nlen)
{
	struct step s = {.descend = -1};
	unsigned last = p->ncomp - 1u;
	if (p->comp[j].flags & TD_FS_DSTAR) {
		/* "**" consumes this directory, or nothing (then the entry
		 * meets the next component). Hidden names are not walked. */
		if (name[0] == '.')
			return s;
		s.dstar = true;
		if (j == last) {
			s.leaf = true;
		} else if (comp_match(p, j + 1, name, nlen)) {
			if (j + 1 == last)
				s.leaf = true;
			else
				s.descend = (int)j + 2;
		}
		return s;
	}
	if (!comp_match(p, j, name, nlen))
		return s;
	if (j == last)
		s.leaf = true;
	else
		s.descend = (int)j + 1;
	return s;
}

/* ---- tables ----------------------------------------------------------- */

static uint64_t mix(uint64_t h)
{
	h ^= h >> 29;
	h *= 0xbf58476d1ce4e5b9ULL;
	return h ^ (h >> 32);
}

static uint64_t hash_bytes(uint64_t h, const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		h ^= (unsigned char)s[i];
		h *= 0x100000001b3ULL;
	}
	return mix(h);
}

#define FNV_BASIS 0xcbf29ce484222325ULL

static size_t lit_slot(const struct td_fswatch *fw, const struct fsdir *d,
		       const char *name, size_t n)
{
	return hash_bytes(FNV_BASIS ^ (uint64_t)(uintptr_t)d, name, n) & (fw->ht_n - 1);
}

static const char *interest_name(const struct td_fs_interest *in, size_t *n)
{
	const struct td_fs_pattern *p = in->w->pat;
	*n = p->comp[in->comp].len;
	return td_fs_pattern_comps(p) + p->comp[in->comp].off;
}

static void lit_insert(struct td_fswatch *fw, struct td_fs_interest *in)
{
	size_t n;
	const char *name = interest_name(in, &n);
	struct td_fs_interest **head = &fw->ht[lit_slot(fw, in->dir, name, n)];
	in->hnext = *head;
	if (*head)
		(*head)->hpprev = &in->hnext;
	in->hpprev = head;
	*head = in;
}

static void lit_grow(struct td_fswatch *fw)
{
	size_t n = fw->ht_n * 2;
	struct td_fs_interest **t = calloc(n, sizeof(*t)), **old = fw->ht;
	if (!t)
		return; /* longer chains, still correct */
	size_t on = fw->ht_n;
	fw->ht = t;
	fw->ht_n = n;
	for (size_t i = 0; i < on; i++) {
		for (struct td_fs_interest *in = old[i], *next; in; in = next) {
			next = in->hnext;
			lit_insert(fw, in);
		}
	}
	free(old);
}

static size_t path_slot(const struct td_fswatch *fw, const char *p, size_t n)
{
	return hash_bytes(FNV_BASIS, p, n) & (fw->pt_n - 1);
}

static struct fsdir *path_get(struct td_fswatch *fw, const char *p, size_t n)
{
	for (struct fsdir *d = fw->pt[path_slot(fw, p, n)]; d; d = d->pnext)
		if (d->len == n && memcmp(d->path, p, n) == 0)
			return d;
	return NULL;
}

static void path_put(struct td_fswatch *fw, struct fsdir *d)
{
	if (fw->ndirs >= fw->pt_n) {
		struct fsdir **t = calloc(fw->pt_n * 2, sizeof(*t));
		if (t) {
			struct fsdir **old = fw->pt;
			size_t on = fw->pt_n;
			fw->pt = t;
			fw->pt_n *= 2;
			for (size_t i = 0; i < on; i++) {
				for (struct fsdir *e = old[i], *next; e; e = next) {
					next = e->pnext;
					size_t j = path_slot(fw, e->path, e->len);
					e->pnext = t[j];
					t[j] = e;
				}
			}
			free(old);
		}
	}
	size_t j = path_slot(fw, d->path, d->len);
	d->pnext = fw->pt[j];
	fw->pt[j] = d;
	fw->ndirs++;
}

static void path_del(struct td_fswatch *fw, struct fsdir *d)
{
	for (struct fsdir **pp = &fw->pt[path_slot(fw, d->path, d->len)]; *pp;
	     pp = &(*pp)->pnext) {
		if (*pp == d) {
			*pp = d->pnext;
			fw->ndirs--;
			return;
		}
	}
}

static struct fsdir **wd_head(struct td_fswatch *fw, int wd)
{
	return &fw->wt[mix((uint64_t)(unsigned)wd) & (fw->wt_n - 1)];
}

static void wd_put(struct td_fswatch *fw, struct fsdir *d)
{
	if (fw->nwatched >= fw->wt_n) {
		struct fsdir **t = calloc(fw->wt_n * 2, sizeof(*t));
		if (t) {
			struct fsdir **old = fw->wt;
			size_t on = fw->wt_n;
			fw->wt = t;
			fw->wt_n *= 2;
			for (size_t i = 0; i < on; i++) {
				for (struct fsdir *e = old[i], *next; e; e = next) {
					next = e->wnext;
					struct fsdir **h = wd_head(fw, e->wd);
					e->wnext = *h;
					*h = e;
				}
			}
			free(old);
		}
	}
	struct fsdir **h = wd_head(fw, d->wd);
	d->wnext = *h;
	*h = d;
	fw->nwatched++;
}

/* Take @d out of the watch table; drop the kernel's watch unless another
 * path (the same inode reached another way) still uses it. */
static void wd_del(struct td_fswatch *fw, struct fsdir *d)
{
	struct fsdir **h = wd_head(fw, d->wd);
	bool shared = false;
	for (struct fsdir **pp = h; *pp;) {
		if (*pp == d) {
			*pp = d->wnext;
			fw->nwatched--;
			continue;
		}
		shared |= (*pp)->wd == d->wd;
		pp = &(*pp)->wnext;
	}
	if (!shared && fw->fd >= 0)
		inotify_rm_watch(fw->fd, d->wd);
	d->wd = -1;
}

/* ---- directories ------------------------------------------------------ */

static void work_arm(struct td_fswatch *fw, uint64_t at)
{
	/* Work queued by the work itself waits for the next tick, or one
	 * advance of the wheel could run it all, whatever the budget. */
	if (fw->in_work && at <= fw->shard->wheel.now)
		at = fw->shard->wheel.now + 1;
	if (!td_timer_pending(&fw->work) || fw->work.expires > at)
		td_wheel_add(&fw->shard->wheel, &fw->work, at);
}

static void queue_scan(struct td_fswatch *fw, struct fsdir *d)
{
	if (d->queued || d->mode == D_DEAD)
		return;
	d->queued = 1;
	d->qnext = NULL;
	if (fw->q_tail)
		fw->q_tail->qnext = d;
	else
		fw->q_head = d;
	fw->q_tail = d;
	work_arm(fw, fw->shard->wheel.now);
}

static const char *esc_path(char *buf, size_t n, const char *p, size_t len)
{
	return td_log_esc(buf, n, p, len);
}

static void dir_maybe_free(struct td_fswatch *fw, struct fsdir *d)
{
	if (d->ninterests || d->pins || d->queued || d->dying)
		return;
	if (d->mode != D_DEAD)
		path_del(fw, d);
	if (d->mode == D_POLL)
		fw->npolled--;
	if (d->wd >= 0)
		wd_del(fw, d);
	td_wheel_cancel(&fw->shard->wheel, &d->poll);
	if (td_log_enabled(TD_LOG_DEBUG)) {
		char esc[512];
		td_debug("fswatch: directory released", "\"dir\":\"%s\",\"watches\":%zu,\"dirs\":%zu",
			 esc_path(esc, sizeof(esc), d->path, d->len), fw->nwatched, fw->ndirs);
	}
	free(d);
}

static void poll_cb(struct td_timer *t, uint64_t now)
{
	struct fsdir *d = td_container_of(t, struct fsdir, poll);
	struct td_fswatch *fw = d->fw;
	fw->st.polls++;
	d->poll_due = 1;
	queue_scan(fw, d);
	td_wheel_add(&fw->shard->wheel, &d->poll, now + d->poll_ms);
}

static void read_arm(struct td_fswatch *fw);

/* The inotify instance, made when first needed. */
static int ensure_fd(struct td_fswatch *fw)
{
	if (fw->fd >= 0 || fw->fd_err)
		return fw->fd >= 0 ? 0 : -fw->fd_err;
	fw->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (fw->fd < 0) {
		fw->fd_err = errno;
		td_warn("fswatch: no inotify instance; every directory will be polled",
			"\"error\":\"%s\"", strerror(fw->fd_err));
		return -fw->fd_err;
	}
	read_arm(fw);
	return 0;
}

/* Filesystems where inotify sees local changes only (or none). */
static bool fs_without_events(long type)
{
	static const unsigned long types[] = {
		0x6969,         /* NFS */
		0x517B,         /* SMB */
		0xFF534D42,     /* CIFS */
		0xFE534D42,     /* SMB2 */
		0x65735546,     /* FUSE */
		0x01021997,     /* 9P */
		0x00C36400,     /* Ceph */
		0x5346414F,     /* AFS */
		0x6B414653,     /* kAFS */
		0x01161970,     /* GFS2 */
		0x7461636F,     /* OCFS2 */
		0x0BD00BD0,     /* Lustre */
		0x73757245,     /* Coda */
		0x564C,         /* NCP */
	};
	for (size_t i = 0; i < TD_ARRAY_LEN(types); i++)
		if ((unsigned long)(unsigned int)type == types[i])
			return true;
	return false;
}

/*
 * Watch (or poll) the new directory @d. Returns 0, or -ENOENT/-ENOTDIR when
 * it is not (or no longer) a directory.
 */
static int dir_setup(struct td_fswatch *fw, struct fsdir *d)
{
	char why[160] = "";
	struct statfs sf;
	int rc;
	if (fw->force_poll) {
		snprintf(why, sizeof(why), "forced by TRIGGERD_FSWATCH_FORCE_POLL");
	} else if ((rc = ensure_fd(fw)) < 0) {
		snprintf(why, sizeof(why), "no inotify instance: %s", strerror(-rc));
	} else if (statfs(d->path, &sf) == 0 && fs_without_events((long)sf.f_type)) {
		snprintf(why, sizeof(why), "filesystem type 0x%lx raises no events for remote changes",
			 (unsigned long)(unsigned int)sf.f_type);
	} else {
		bool capped = fw->max_watches && fw->nwatched >= fw->max_watches;
		d->wd = capped ? -1 : inotify_add_watch(fw->fd, d->path, DIR_MASK);
		if (d->wd < 0) {
			int e = capped ? ENOSPC : errno;
			if (e == ENOENT || e == ENOTDIR)
				return -e;
			if (e == ENOSPC || e == ENOMEM)
				snprintf(why, sizeof(why),
					 "inotify watch limit reached (fs.inotify.max_user_watches)");
			else
				snprintf(why, sizeof(why), "inotify_add_watch: %s", strerror(e));
		}
	}
	char esc[512];
	if (!why[0]) {
		d->mode = D_WATCH;
		wd_put(fw, d);
		if (td_log_enabled(TD_LOG_DEBUG))
			td_debug("fswatch: watching", "\"dir\":\"%s\",\"wd\":%d,\"watches\":%zu",
				 esc_path(esc, sizeof(esc), d->path, d->len), d->wd, fw->nwatched);
		return 0;
	}
	struct stat st;
	if (stat(d->path, &st) != 0)
		return errno == ENOTDIR ? -ENOTDIR : -ENOENT;
	if (!S_ISDIR(st.st_mode))
		return -ENOTDIR;
	d->mode = D_POLL;
	fw->npolled++;
	td_wheel_add(&fw->shard->wheel, &d->poll, td_mono_ms() + d->poll_ms);
	if (fw->poll_warned < POLL_WARN_MAX) {
		fw->poll_warned++;
		td_warn("fswatch: polling directory", "\"dir\":\"%s\",\"reason\":\"%s\",\"interval_ms\":%u%s",
			esc_path(esc, sizeof(esc), d->path, d->len), why, d->poll_ms,
			fw->poll_warned == POLL_WARN_MAX ? ",\"note\":\"further polled directories are not logged\"" : "");
	}
	return 0;
}

/* The directory at @path, shared or new. NULL with errno set when it is
 * not a directory (ENOENT, ENOTDIR) or on ENOMEM. */
static struct fsdir *dir_get(struct td_fswatch *fw, const char *path, size_t len,
			     uint32_t poll_ms)
{
	struct fsdir *d = path_get(fw, path, len);
	if (d) {
		if (poll_ms < d->poll_ms) {
			d->poll_ms = poll_ms;
			if (d->mode == D_POLL && d->poll.expires > fw->shard->wheel.now + poll_ms)
				td_wheel_add(&fw->shard->wheel, &d->poll,
					     fw->shard->wheel.now + poll_ms);
		}
		return d;
	}
	d = calloc(1, sizeof(*d) + len + 1);
	if (!d) {
		errno = ENOMEM;
		return NULL;
	}
	d->fw = fw;
	d->wd = -1;
	d->poll_ms = poll_ms;
	d->len = (uint16_t)len;
	memcpy(d->path, path, len);
	td_timer_init(&d->poll, poll_cb);
	int rc = dir_setup(fw, d);
	if (rc) {
		free(d);
		errno = -rc;
		return NULL;
	}
	path_put(fw, d);
	return d;
}

/* @d is gone (deleted, moved away, unmounted): no more events or polls;
 * its interests are dealt with from the work timer. */
static void dir_dead(struct td_fswatch *fw, struct fsdir *d, const char *why)
{
	if (d->mode == D_DEAD)
		return;
	if (td_log_enabled(TD_LOG_DEBUG)) {
		char esc[512];
		td_debug("fswatch: directory gone", "\"dir\":\"%s\",\"why\":\"%s\"",
			 esc_path(esc, sizeof(esc), d->path, d->len), why);
	}
	path_del(fw, d);
	if (d->wd >= 0)
		wd_del(fw, d);
	if (d->mode == D_POLL)
		fw->npolled--;
	td_wheel_cancel(&fw->shard->wheel, &d->poll);
	d->mode = D_DEAD;
	if (!d->dying) {
		d->dying = 1;
		d->dnext = fw->dead_head;
		fw->dead_head = d;
	}
	work_arm(fw, fw->shard->wheel.now);
}

/* ---- interests -------------------------------------------------------- */

static size_t join(char *out, const struct fsdir *d, const char *name, size_t n)
{
	size_t dl = d->len == 1 ? 0 : d->len; /* "/" + name, not "//" + name */
	if (dl + 1 + n >= PATH_MAX)
		return 0;
	memcpy(out, d->path, dl);
	out[dl] = '/';
	memcpy(out + dl + 1, name, n);
	out[dl + 1 + n] = '\0';
	return dl + 1 + n;
}

static int interest_add(struct td_fswatch *fw, struct td_fs_waiter *w, struct fsdir *d,
			unsigned comp, uint8_t flags)
{
	struct td_fs_interest *in = calloc(1, sizeof(*in));
	if (!in)
		return -ENOMEM;
	in->w = w;
	in->dir = d;
	in->comp = (uint16_t)comp;
	in->flags = flags | I_PENDING;
	in->wnext = w->interests;
	w->interests = in;
	w->ninterests++;
	struct td_fs_interest **head =
		(w->pat->comp[comp].flags & TD_FS_LIT) ? &d->lits : &d->globs;
	in->dnext = *head;
	if (*head)
		(*head)->dpprev = &in->dnext;
	in->dpprev = head;
	*head = in;
	if (head == &d->lits) {
		if (fw->nlit >= fw->ht_n && !fw->ht_busy)
			lit_grow(fw);
		lit_insert(fw, in);
		fw->nlit++;
	}
	d->ninterests++;
	fw->ninterests++;
	queue_scan(fw, d);
	return 0;
}

/* Unlink @in from its directory and the hash (not from its waiter's list:
 * the caller does that) and free it. */
static void interest_free(struct td_fswatch *fw, struct td_fs_interest *in)
{
	struct fsdir *d = in->dir;
	*in->dpprev = in->dnext;
	if (in->dnext)
		in->dnext->dpprev = in->dpprev;
	if (in->hpprev) {
		*in->hpprev = in->hnext;
		if (in->hnext)
			in->hnext->hpprev = in->hpprev;
		fw->nlit--;
	}
	d->ninterests--;
	fw->ninterests--;
	in->w->ninterests--;
	free(in);
	dir_maybe_free(fw, d);
}

static void drop_all(struct td_fswatch *fw, struct td_fs_waiter *w)
{
	while (w->interests) {
		struct td_fs_interest *in = w->interests;
		w->interests = in->wnext;
		interest_free(fw, in);
	}
}

/* Drop @w's interests in directory @path and below it. */
static void drop_subtree(struct td_fswatch *fw, struct td_fs_waiter *w, const char *path,
			 size_t len)
{
	for (struct td_fs_interest **pp = &w->interests; *pp;) {
		struct td_fs_interest *in = *pp;
		const struct fsdir *d = in->dir;
		if (d->len >= len && memcmp(d->path, path, len) == 0 &&
		    (d->len == len || d->path[len] == '/' || len == 1)) {
			*pp = in->wnext;
			interest_free(fw, in);
		} else {
			pp = &in->wnext;
		}
	}
}

/*
 * Give @w its root interest: the deepest existing directory of the literal
 * directory prefix of its pattern.
 */
static int seed(struct td_fswatch *fw, struct td_fs_waiter *w)
{
	const struct td_fs_pattern *p = w->pat;
	const char *cs = td_fs_pattern_comps(p);
	char *path = fw->path;
	size_t len = 0;
	unsigned j = 0;
	size_t ends[TD_FS_COMPS_MAX + 1];
	struct stat st;
	ends[0] = 0;
	while (j + 1 < p->ncomp && (p->comp[j].flags & TD_FS_LIT)) {
		path[len] = '/';
		memcpy(path + len + 1, cs + p->comp[j].off, p->comp[j].len);
		path[len + 1 + p->comp[j].len] = '\0';
		if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
			break;
		len += 1u + p->comp[j].len;
		ends[++j] = len;
	}
	for (;;) {
		struct fsdir *d = len ? dir_get(fw, path, len, w->poll_ms) :
				  dir_get(fw, "/", 1, w->poll_ms);
		if (d)
			return interest_add(fw, w, d, j, I_ROOT);
		if (errno == ENOMEM || j == 0)
			return -ENOMEM;
		/* Gone between the stat and the watch: one level up. */
		len = ends[--j];
		path[len] = '\0';
	}
}

/* Grow @w into directory @name of @d, at component @comp. */
static void expand(struct td_fswatch *fw, struct td_fs_waiter *w, struct fsdir *d,
		   const char *name, size_t n, unsigned comp)
{
	char path[PATH_MAX];
	size_t len = join(path, d, name, n);
	if (!len)
		return;
	struct fsdir *c = dir_get(fw, path, len, w->poll_ms);
	if (!c) {
		if (errno == ENOMEM)
			td_error("fswatch: out of memory watching a directory", NULL);
		return;
	}
	/* Already there (found by a scan and an event both)? Look through
	 * the shorter of the two lists. */
	if (w->ninterests <= c->ninterests) {
		for (struct td_fs_interest *in = w->interests; in; in = in->wnext)
			if (in->dir == c && in->comp == comp)
				return;
	} else {
		for (int k = 0; k < 2; k++)
			for (struct td_fs_interest *in = k ? c->globs : c->lits; in; in = in->dnext)
				if (in->w == w && in->comp == comp)
					return;
	}
	if (interest_add(fw, w, c, comp, 0))
		td_error("fswatch: out of memory watching a directory", NULL);
	dir_maybe_free(fw, c); /* when nothing was added */
}

/* ---- scans ------------------------------------------------------------ */

static int64_t ctime_ns(const struct stat *st)
{
	return (int64_t)st->st_ctim.tv_sec * 1000000000 + st->st_ctim.tv_nsec;
}

/*
 * Entry @name (@dtype from readdir, or DT_UNKNOWN) of the scanned directory,
 * for interest @in. Leaves are offered (in a poll scan only when changed);
 * directories are grown into.
 */
static void scan_entry(struct td_fswatch *fw, struct td_fs_interest *in, const char *name,
		       size_t n, unsigned char dtype)
{
	struct fsdir *d = in->dir;
	struct td_fs_waiter *w = in->w;
	struct step s = match(w->pat, in->comp, name, n);
	if (!s.leaf && s.descend < 0 && !s.dstar)
		return;
	size_t len = join(fw->path, d, name, n);
	if (!len)
		return;
	struct stat st;
	bool have_st = false, is_dir = dtype == DT_DIR, real_dir = dtype == DT_DIR;
	if (dtype == DT_UNKNOWN || dtype == DT_LNK) {
		struct stat lst;
		if (lstat(fw->path, &lst) != 0)
			return;
		real_dir = S_ISDIR(lst.st_mode);
		if (S_ISLNK(lst.st_mode)) {
			if (stat(fw->path, &st) != 0)
				return;
		} else {
			st = lst;
		}
		have_st = true;
		is_dir = S_ISDIR(st.st_mode);
	}
	if (s.leaf && !is_dir) {
		if (d->mode == D_POLL) {
			/* Polled: remember the newest change seen; a poll
			 * offers only what changed since the last scans. */
			if (!have_st && stat(fw->path, &st) != 0)
				return;
			int64_t ct = ctime_ns(&st);
			if (ct > fw->scan_hwm)
				fw->scan_hwm = ct;
			if ((in->flags & I_POLL) && ct < d->hwm_ns - POLL_SLACK_NS)
				return;
		}
		w->on_match(w, fw->path, len, TD_FS_FOUND);
	}
	if (is_dir && s.descend >= 0)
		expand(fw, w, d, name, n, (unsigned)s.descend);
	if (real_dir && s.dstar)
		expand(fw, w, d, name, n, in->comp);
}

static void scan_end(struct td_fswatch *fw)
{
	struct fsdir *d = fw->scan_dir;
	if (fw->scan_dirp)
		closedir(fw->scan_dirp);
	fw->scan_dirp = NULL;
	fw->scan_dir = NULL;
	for (int k = 0; k < 2; k++)
		for (struct td_fs_interest *in = k ? d->globs : d->lits; in; in = in->dnext)
			in->flags &= (uint8_t)~(I_FULL | I_POLL);
	if (fw->scan_hwm > d->hwm_ns)
		d->hwm_ns = fw->scan_hwm;
	d->pins--;
	dir_maybe_free(fw, d);
}

/* Start scanning @d. Returns the work done (stats). */
static size_t scan_begin(struct td_fswatch *fw, struct fsdir *d)
{
	bool poll = d->poll_due && d->mode == D_POLL;
	bool globs = false;
	size_t work = 1;
	d->poll_due = 0;
	fw->st.scans++;
	for (int k = 0; k < 2; k++) {
		for (struct td_fs_interest *in = k ? d->globs : d->lits; in; in = in->dnext) {
			if (in->flags & I_PENDING)
				in->flags = (uint8_t)((in->flags & ~I_PENDING) | I_FULL);
			else if (poll)
				in->flags |= I_POLL;
			else
				continue;
			globs |= k == 1;
		}
	}
	d->pins++;
	fw->scan_dir = d;
	fw->scan_hwm = d->hwm_ns;
	if (d->mode == D_POLL) {
		struct stat st;
		if (stat(d->path, &st) != 0 || !S_ISDIR(st.st_mode)) {
			dir_dead(fw, d, "gone (poll)");
			scan_end(fw);
			return work;
		}
	}
	/* Literal names: one stat each, no listing. The hash is not walked
	 * here, so expanding (which may grow it) is safe. */
	for (struct td_fs_interest *in = d->lits, *next; in; in = next) {
		next = in->dnext;
		if (!(in->flags & (I_FULL | I_POLL)))
			continue;
		size_t n;
		const char *name = interest_name(in, &n);
		scan_entry(fw, in, name, n, DT_UNKNOWN);
		work++;
	}
	if (globs && d->mode != D_DEAD) {
		fw->scan_dirp = opendir(d->path);
		if (!fw->scan_dirp) {
			int e = errno;
			if (e == ENOENT || e == ENOTDIR) {
				dir_dead(fw, d, "gone (scan)");
			} else {
				char esc[512];
				td_warn("fswatch: cannot list directory", "\"dir\":\"%s\",\"error\":\"%s\"",
					esc_path(esc, sizeof(esc), d->path, d->len), strerror(e));
			}
		}
	}
	if (!fw->scan_dirp)
		scan_end(fw);
	return work;
}

/* Read up to @budget entries of the directory being scanned. */
static size_t scan_some(struct td_fswatch *fw, size_t budget)
{
	struct fsdir *d = fw->scan_dir;
	size_t done = 0;
	while (done < budget) {
		if (d->mode == D_DEAD) {
			scan_end(fw);
			return done;
		}
		errno = 0;
		struct dirent *de = readdir(fw->scan_dirp);
		if (!de) {
			scan_end(fw);
			return done;
		}
		done++;
		const char *name = de->d_name;
		if (name[0] == '.' && (!name[1] || (name[1] == '.' && !name[2])))
			continue;
		size_t n = strlen(name);
		for (struct td_fs_interest *in = d->globs, *next; in; in = next) {
			next = in->dnext;
			if (in->flags & (I_FULL | I_POLL))
				scan_entry(fw, in, name, n, de->d_type);
		}
	}
	return done;
}

/* ---- the work timer: deaths, expansions, scans ------------------------ */

/* Directory @d died: its waiters let go of it and everything below; a
 * waiter whose root it was starts over from the top. */
static void bury(struct td_fswatch *fw, struct fsdir *d)
{
	d->pins++;
	for (;;) {
		struct td_fs_interest *in = d->lits ? d->lits : d->globs;
		if (!in)
			break;
		struct td_fs_waiter *w = in->w;
		if (in->flags & I_ROOT) {
			drop_all(fw, w);
			if (seed(fw, w))
				td_error("fswatch: out of memory re-watching; a file wait is stuck", NULL);
		} else {
			drop_subtree(fw, w, d->path, d->len);
		}
	}
	d->pins--;
	dir_maybe_free(fw, d);
}

/* Entry @name appeared in @d (an event): grow the interests it fits. */
static void expand_entry(struct td_fswatch *fw, struct fsdir *d, const char *name, size_t n)
{
	size_t len = join(fw->path, d, name, n);
	struct stat st, lst;
	if (!len || lstat(fw->path, &lst) != 0)
		return;
	bool real_dir = S_ISDIR(lst.st_mode), is_dir = real_dir;
	if (S_ISLNK(lst.st_mode))
		is_dir = stat(fw->path, &st) == 0 && S_ISDIR(st.st_mode);
	if (!is_dir)
		return;
	fw->ht_busy++;
	for (struct td_fs_interest *in = fw->ht[lit_slot(fw, d, name, n)], *next; in; in = next) {
		next = in->hnext;
		size_t cn;
		const char *cname = interest_name(in, &cn);
		if (in->dir != d || cn != n || memcmp(cname, name, n) != 0)
			continue;
		if (in->comp + 1u < in->w->pat->ncomp)
			expand(fw, in->w, d, name, n, in->comp + 1u);
	}
	fw->ht_busy--;
	for (struct td_fs_interest *in = d->globs, *next; in; in = next) {
		next = in->dnext;
		struct step s = match(in->w->pat, in->comp, name, n);
		if (s.descend >= 0)
			expand(fw, in->w, d, name, n, (unsigned)s.descend);
		if (s.dstar && real_dir)
			expand(fw, in->w, d, name, n, in->comp);
	}
}

static void work_cb(struct td_timer *t, uint64_t now)
{
	struct td_fswatch *fw = td_container_of(t, struct td_fswatch, work);
	size_t budget = SCAN_BUDGET;
	fw->in_work = true;
	while (fw->dead_head) {
		struct fsdir *d = fw->dead_head;
		fw->dead_head = d->dnext;
		d->dying = 0;
		bury(fw, d);
	}
	while (fw->x_head && budget) {
		struct expand *x = fw->x_head;
		fw->x_head = x->next;
		if (!fw->x_head)
			fw->x_tail = NULL;
		if (x->dir->mode != D_DEAD)
			expand_entry(fw, x->dir, x->name, x->len);
		x->dir->pins--;
		dir_maybe_free(fw, x->dir);
		free(x);
		budget--;
	}
	while (budget && (fw->scan_dir || fw->q_head)) {
		if (fw->scan_dir) {
			size_t done = scan_some(fw, budget);
			budget -= done < budget ? done : budget;
			continue;
		}
		struct fsdir *d = fw->q_head;
		fw->q_head = d->qnext;
		if (!fw->q_head)
			fw->q_tail = NULL;
		d->queued = 0;
		if (d->mode == D_DEAD || !d->ninterests) {
			dir_maybe_free(fw, d);
			continue;
		}
		size_t done = scan_begin(fw, d);
		budget -= done < budget ? done : budget;
	}
	/* More to do: yield to the ring for a tick, then go on. */
	if (fw->dead_head || fw->x_head || fw->scan_dir || fw->q_head)
		work_arm(fw, now + 1);
	fw->in_work = false;
}

/* ---- inotify events --------------------------------------------------- */

static void queue_expand(struct td_fswatch *fw, struct fsdir *d, const char *name, size_t n)
{
	struct expand *x = malloc(sizeof(*x) + n + 1);
	if (!x) {
		td_error("fswatch: out of memory; a new directory is not watched", NULL);
		return;
	}
	x->next = NULL;
	x->dir = d;
	d->pins++;
	x->len = (uint16_t)n;
	memcpy(x->name, name, n + 1);
	if (fw->x_tail)
		fw->x_tail->next = x;
	else
		fw->x_head = x;
	fw->x_tail = x;
	work_arm(fw, fw->shard->wheel.now);
}

/* Event @mask for entry @name of @d. */
static void dispatch(struct td_fswatch *fw, struct fsdir *d, const char *name, uint32_t mask)
{
	size_t n = strlen(name);
	bool isdir = mask & IN_ISDIR, appeared = mask & (IN_CREATE | IN_MOVED_TO);
	enum td_fs_how how = (mask & IN_CLOSE_WRITE) ? TD_FS_WRITTEN :
			     (mask & IN_MOVED_TO) ? TD_FS_MOVED : TD_FS_CREATED;
	bool grow = false;
	size_t len = 0;
	fw->ht_busy++;
	for (struct td_fs_interest *in = fw->ht[lit_slot(fw, d, name, n)]; in; in = in->hnext) {
		size_t cn;
		const char *cname = interest_name(in, &cn);
		if (in->dir != d || cn != n || memcmp(cname, name, n) != 0)
			continue;
		if (in->comp + 1u < in->w->pat->ncomp) {
			grow |= appeared;
		} else if (!isdir && (len || (len = join(fw->path, d, name, n)))) {
			in->w->on_match(in->w, fw->path, len, how);
		}
	}
	fw->ht_busy--;
	for (struct td_fs_interest *in = d->globs; in; in = in->dnext) {
		struct step s = match(in->w->pat, in->comp, name, n);
		if (s.leaf && !isdir && (len || (len = join(fw->path, d, name, n))))
			in->w->on_match(in->w, fw->path, len, how);
		grow |= appeared && (s.descend >= 0 || (s.dstar && isdir));
	}
	if (grow)
		queue_expand(fw, d, name, n);
}

static void overflow(struct td_fswatch *fw)
{
	fw->st.overflows++;
	td_warn("fswatch: inotify queue overflowed; rescanning every watched directory",
		"\"dirs\":%zu", fw->ndirs);
	for (size_t i = 0; i < fw->pt_n; i++) {
		for (struct fsdir *d = fw->pt[i]; d; d = d->pnext) {
			for (int k = 0; k < 2; k++)
				for (struct td_fs_interest *in = k ? d->globs : d->lits; in;
				     in = in->dnext)
					in->flags |= I_PENDING;
			queue_scan(fw, d);
		}
	}
}

static void handle_events(struct td_fswatch *fw, size_t n)
{
	for (size_t off = 0; off + sizeof(struct inotify_event) <= n;) {
		const struct inotify_event *ev = (const void *)(fw->buf + off);
		off += sizeof(*ev) + ev->len;
		fw->st.events++;
		if (ev->mask & IN_Q_OVERFLOW) {
			overflow(fw);
			continue;
		}
		for (struct fsdir *d = *wd_head(fw, ev->wd), *next; d; d = next) {
			next = d->wnext;
			if (d->wd != ev->wd)
				continue;
			if (ev->mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_UNMOUNT | IN_IGNORED))
				dir_dead(fw, d, (ev->mask & IN_MOVE_SELF) ? "moved" :
						(ev->mask & IN_UNMOUNT) ? "unmounted" : "deleted");
			else if (ev->len && ev->name[0])
				dispatch(fw, d, ev->name, ev->mask);
		}
	}
}

static void read_cb(struct td_op *op, int res, uint32_t flags)
{
	struct td_fswatch *fw = td_container_of(op, struct td_fswatch, read_op);
	fw->read_armed = false;
	if (fw->stopping)
		return;
	if (fw->polling_fd) {
		/* Readable now (or the poll failed): read. */
		fw->polling_fd = false;
		read_arm(fw);
		return;
	}
	if (res > 0) {
		handle_events(fw, (size_t)res);
		read_arm(fw);
	} else if (res == -EAGAIN || res == -EINTR) {
		/* A non-blocking read found nothing: wait for readability. */
		struct io_uring_sqe *sqe = td_reactor_sqe(&fw->shard->reactor, &fw->read_op);
		io_uring_prep_poll_add(sqe, fw->fd, POLLIN);
		fw->polling_fd = true;
		fw->read_armed = true;
	} else {
		td_error("fswatch: reading inotify events failed; retrying",
			 "\"error\":\"%s\"", strerror(res < 0 ? -res : EIO));
		td_wheel_add(&fw->shard->wheel, &fw->retry, fw->shard->wheel.now + RETRY_MS);
	}
}

static void retry_cb(struct td_timer *t, uint64_t now)
{
	struct td_fswatch *fw = td_container_of(t, struct td_fswatch, retry);
	/* Events may have been lost meanwhile. */
	overflow(fw);
	read_arm(fw);
}

static void read_arm(struct td_fswatch *fw)
{
	if (fw->stopping || fw->fd < 0 || fw->read_armed)
		return;
	struct io_uring_sqe *sqe = td_reactor_sqe(&fw->shard->reactor, &fw->read_op);
	io_uring_prep_read(sqe, fw->fd, fw->buf, sizeof(fw->buf), 0);
	fw->read_armed = true;
}

/* ---- kind-facing ------------------------------------------------------ */

int td_fswatch_wait(struct td_shard *s, struct td_fs_waiter *w)
{
	struct td_fswatch *fw = s->fswatch;
	if (w->interests)
		return 0;
	w->ninterests = 0;
	if (!w->poll_ms)
		w->poll_ms = 5000;
	int rc = seed(fw, w);
	if (rc)
		drop_all(fw, w);
	return rc;
}

void td_fswatch_unwait(struct td_fs_waiter *w)
{
	if (!w->interests)
		return;
	drop_all(w->interests->dir->fw, w);
}

void td_fswatch_stats(struct td_shard *s, struct td_fswatch_stats *out)
{
	struct td_fswatch *fw = s->fswatch;
	*out = fw->st;
	out->dirs = fw->ndirs;
	out->watches = fw->nwatched;
	out->polled = fw->npolled;
	out->interests = fw->ninterests;
}

/* ---- lifetime --------------------------------------------------------- */

int td_fswatch_new(struct td_shard *s, struct td_fswatch **out)
{
	struct td_fswatch *fw = calloc(1, sizeof(*fw));
	if (!fw)
		return -ENOMEM;
	fw->shard = s;
	fw->fd = -1;
	fw->pt_n = fw->wt_n = fw->ht_n = 64;
	fw->pt = calloc(fw->pt_n, sizeof(*fw->pt));
	fw->wt = calloc(fw->wt_n, sizeof(*fw->wt));
	fw->ht = calloc(fw->ht_n, sizeof(*fw->ht));
	if (!fw->pt || !fw->wt || !fw->ht) {
		td_fswatch_free(fw);
		return -ENOMEM;
	}
	fw->read_op.cb = read_cb;
	td_timer_init(&fw->work, work_cb);
	td_timer_init(&fw->retry, retry_cb);
	/* For tests (and for filesystems not recognised as event-less):
	 * poll every directory instead of watching it. */
	const char *fp = getenv("TRIGGERD_FSWATCH_FORCE_POLL");
	fw->force_poll = fp && fp[0] && strcmp(fp, "0") != 0;
	if (fw->force_poll)
		td_info("fswatch: polling forced by TRIGGERD_FSWATCH_FORCE_POLL", NULL);
	/* For tests: run out of inotify watches after this many. */
	const char *mw = getenv("TRIGGERD_FSWATCH_MAX_WATCHES");
	if (mw && mw[0]) {
		fw->max_watches = strtoul(mw, NULL, 10);
		td_info("fswatch: watches capped by TRIGGERD_FSWATCH_MAX_WATCHES",
			"\"max\":%zu", fw->max_watches);
	}
	*out = fw;
	return 0;
}

void td_fswatch_stop(struct td_fswatch *fw)
{
	if (!fw || fw->stopping)
		return;
	fw->stopping = true;
	if (fw->read_armed)
		td_reactor_cancel(&fw->shard->reactor, &fw->read_op);
	struct td_wheel *wh = &fw->shard->wheel;
	td_wheel_cancel(wh, &fw->work);
	td_wheel_cancel(wh, &fw->retry);
	/* Every waiter is gone: empty the queues, which frees the
	 * directories they held. */
	if (fw->scan_dir)
		scan_end(fw);
	while (fw->dead_head) {
		struct fsdir *d = fw->dead_head;
		fw->dead_head = d->dnext;
		d->dying = 0;
		bury(fw, d);
	}
	while (fw->x_head) {
		struct expand *x = fw->x_head;
		fw->x_head = x->next;
		x->dir->pins--;
		dir_maybe_free(fw, x->dir);
		free(x);
	}
	fw->x_tail = NULL;
	while (fw->q_head) {
		struct fsdir *d = fw->q_head;
		fw->q_head = d->qnext;
		d->queued = 0;
		dir_maybe_free(fw, d);
	}
	fw->q_tail = NULL;
	for (size_t i = 0; i < fw->pt_n; i++)
		for (struct fsdir *d = fw->pt[i]; d; d = d->pnext)
			td_wheel_cancel(wh, &d->poll);
}

void td_fswatch_free(struct td_fswatch *fw)
{
	if (!fw)
		return;
	/* td_fswatch_stop emptied the queues; only directories some waiter
	 * still held (none, once every trigger is freed) are left. */
	for (size_t i = 0; fw->pt && i < fw->pt_n; i++) {
		for (struct fsdir *d = fw->pt[i], *next; d; d = next) {
			next = d->pnext;
			free(d);
		}
	}
	if (fw->fd >= 0)
		close(fw->fd);
	free(fw->pt);
	free(fw->wt);
	free(fw->ht);
	free(fw);
}
