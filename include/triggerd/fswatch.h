/*
 * File waits: the interface between the `file` kind (triggers/file.c, which
 * parses args, follows candidates and fires) and the shard's file watcher
 * (engine/fswatch.c, which owns one inotify instance, the shared directory
 * watches and the polling fallback).
 *
 * A waiter names a compiled path pattern. While it waits, the watcher holds
 * "interests": (directory, pattern component) pairs, one per directory the
 * pattern can still grow through. Directories are shared: every interest in
 * one directory uses that directory's single inotify watch (or poll timer),
 * so ten thousand waiters under one directory cost ten thousand interests
 * (64 bytes each) and one watch. An event in a directory is offered to the
 * interests there only: those naming the entry literally (a hash lookup)
 * and those with a glob component (fnmatch each).
 *
 * The watcher reports candidates, not firings: on_match says "this path
 * matched and may be ready"; the kind stats it and decides.
 *
 * Context: everything runs on the shard's thread.
 */
#ifndef TRIGGERD_FSWATCH_H
#define TRIGGERD_FSWATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct td_shard;
struct td_fs_interest;

#define TD_FS_PATH_MAX 4095   /* pattern bytes */
#define TD_FS_COMPS_MAX 255

/* Component flags. */
#define TD_FS_LIT 1           /* no glob characters: compared byte for byte */
#define TD_FS_DSTAR 2         /* "**" with recursive: zero or more directories */

struct td_fs_comp {
	uint16_t off;         /* into td_fs_pattern.comps (NUL-terminated) */
	uint16_t len;
	uint8_t flags;
};

/*
 * A compiled absolute path pattern: components split at '/', each a literal
 * name or an fnmatch(3) pattern (FNM_PERIOD | FNM_NOESCAPE, as Python's
 * glob: '*' does not match a leading '.', no backslash escapes; "[*]" for a
 * literal star). With recursive, a component that is exactly "**" matches
 * zero or more directories (not hidden ones, symlinks not followed) and, as
 * the last component, any file below; without it "**" is the same as "*".
 * Lives in caller memory (td_fs_pattern_size bytes); no pointers inside, so
 * the kind may place it in its own allocation.
 */
struct td_fs_pattern {
	uint16_t len;         /* bytes of the path */
	uint16_t ncomp;
	uint8_t recursive;
	struct td_fs_comp comp[]; /* then: path + NUL, then comps: each + NUL */
};

static inline const char *td_fs_pattern_path(const struct td_fs_pattern *p)
{
	return (const char *)(p->comp + p->ncomp);
}

static inline const char *td_fs_pattern_comps(const struct td_fs_pattern *p)
{
	return td_fs_pattern_path(p) + p->len + 1;
}

/** Bytes a pattern for a @len-byte path with @ncomp components takes. */
static inline size_t td_fs_pattern_bytes(size_t len, size_t ncomp)
{
	return sizeof(struct td_fs_pattern) + ncomp * sizeof(struct td_fs_comp) +
	       2 * (len + 1);
}

/**
 * Validate @path (@len bytes: absolute, no empty, "." or ".." components,
 * no NUL, at most TD_FS_PATH_MAX bytes and TD_FS_COMPS_MAX components of at
 * most NAME_MAX bytes, not ending in '/') and return in *size the bytes its
 * compiled pattern (with @recursive) needs.
 * Returns 0, or -EINVAL with the reason (no field name) in @err.
 */
int td_fs_pattern_size(const char *path, size_t len, bool recursive, size_t *size,
		       char *err, size_t errlen);
/** Compile @path (validated by td_fs_pattern_size) into @p, which has the
 * bytes it said. Consecutive "**" collapse into one. */
void td_fs_pattern_init(struct td_fs_pattern *p, const char *path, size_t len,
			bool recursive);

/* How a path came to match (on_match's @how). */
enum td_fs_how {
	TD_FS_CREATED = 1,    /* created (not a directory): may still be being
				 written; a hard link or symlink is complete */
	TD_FS_WRITTEN = 2,    /* closed after being opened for writing */
	TD_FS_MOVED = 3,      /* renamed or moved into place */
	TD_FS_FOUND = 4,      /* found by a scan: at start, by polling, or after
				 the event queue overflowed */
};

/*
 * One waiting trigger. The kind sets pat, on_match and poll_ms before
 * td_fswatch_wait and keeps them (and the pattern's memory) unchanged until
 * td_fswatch_unwait; the other fields are the watcher's.
 */
struct td_fs_waiter {
	const struct td_fs_pattern *pat;
	/* A path matching the pattern (a regular file or not: the kind
	 * stats) showed up. @path is valid during the call only. Called from
	 * the watcher's completions and timers, never from inside
	 * td_fswatch_wait/unwait. It must not end a trigger or call
	 * td_fswatch_wait/unwait: record the candidate and fire from a timer. */
	void (*on_match)(struct td_fs_waiter *w, const char *path, size_t len,
			 enum td_fs_how how);
	uint32_t poll_ms;     /* fallback polling interval for its directories */
	uint32_t ninterests;  /* watcher's */
	struct td_fs_interest *interests; /* watcher's */
};

/**
 * Start waiting: find the deepest existing directory of the pattern's
 * literal prefix, take an interest in it (sharing the directory's watch,
 * adding one if it is the first) and queue a scan of it; matches already
 * there are reported from that scan, never from inside this call. Blocks
 * for a stat per literal directory component and an inotify_add_watch.
 * Returns 0, or -ENOMEM. A no-op when @w is already waiting.
 */
int td_fswatch_wait(struct td_shard *s, struct td_fs_waiter *w);
/** Stop waiting; drops the directory watches nobody else uses. A no-op when
 * @w is not waiting. */
void td_fswatch_unwait(struct td_fs_waiter *w);

struct td_fswatch_stats {
	size_t dirs;          /* directories with interests */
	size_t watches;       /* of those, watched with inotify */
	size_t polled;        /* of those, polled */
	size_t interests;
	unsigned long long events, overflows, scans, polls;
};
/** The watcher's counters (tests, metrics). */
void td_fswatch_stats(struct td_shard *s, struct td_fswatch_stats *out);

#endif
