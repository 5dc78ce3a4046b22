/*
 * The `file` kind end to end: a real redis-server, the real triggerd, and
 * real files in the harness's temporary directory (created, written and
 * closed, renamed into place, in directories made later).
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "harness.h"

/* The harness directory plus "/f", where each test's files go. */
static char root[300];

/* Start triggerd; @env: "NAME=value" for it (the test knobs), or NULL. */
static int start_env(struct harness *h, const char *env)
{
	snprintf(root, sizeof(root), "%s/f", h->dir);
	if (mkdir(root, 0700) != 0 && errno != EEXIST)
		return -1;
	char name[64] = "";
	if (env) {
		const char *eq = strchr(env, '=');
		snprintf(name, sizeof(name), "%.*s", (int)(eq - env), env);
		setenv(name, eq + 1, 1);
	}
	int rc = harness_td_start(h, NULL);
	if (name[0])
		unsetenv(name);
	return rc;
}

static int start(struct harness *h, bool force_poll)
{
	return start_env(h, force_poll ? "TRIGGERD_FSWATCH_FORCE_POLL=1" : NULL);
}

/* @fmt relative to root, into @out. */
__attribute__((format(printf, 3, 4)))
static const char *at(char *out, size_t n, const char *fmt, ...)
{
	char rel[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(rel, sizeof(rel), fmt, ap);
	va_end(ap);
	snprintf(out, n, "%s/%s", root, rel);
	return out;
}

static void write_file(const char *path, const char *data)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, strlen(data)), (ssize_t)strlen(data));
	close(fd);
}

static void append_file(const char *path, const char *data)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, strlen(data)), (ssize_t)strlen(data));
	close(fd);
}

static void wait_stored(struct harness *h, const char *id)
{
	for (int i = 0; i < 300; i++) {
		if (redis_int(h, "HEXISTS td:triggers %s", id) == 1) {
			sleep_ms(30); /* the store's answer reaches triggerd; it arms */
			return;
		}
		sleep_ms(10);
	}
	fail_msg("trigger %s never stored", id);
}

/* Submit a file trigger on @path; @extra: more args members, or "". Waits
 * until it is stored (and so watching) unless @nowait. */
static void submit(struct harness *h, const char *id, bool repeat, const char *path,
		   const char *extra, bool nowait)
{
	char json[2048];
	snprintf(json, sizeof(json), "{\"id\":\"%s\",\"kind\":\"file\",%s\"args\":{\"path\":\"%s\"%s%s}}",
		 id, repeat ? "\"repeat\":true," : "", path, extra[0] ? "," : "", extra);
	assert_int_equal(submit_json(h, json), 0);
	if (!nowait)
		wait_stored(h, id);
}

static void add(struct harness *h, const char *id, const char *path, const char *extra)
{
	submit(h, id, false, path, extra, false);
}

static void cancel(struct harness *h, const char *id)
{
	const char *argv[] = {"op", "cancel", "id", id};
	assert_int_equal(submit_fields(h, 4, argv, NULL), 0);
}

static int count_log(struct harness *h, const char *needle)
{
	FILE *f = fopen(h->log, "r");
	if (!f)
		return -1;
	char line[4096];
	int n = 0;
	while (fgets(line, sizeof(line), f))
		n += strstr(line, needle) != NULL;
	fclose(f);
	return n;
}

/* The watcher's log lines for directory @dir. */
static int watching(struct harness *h, const char *dir)
{
	char needle[1200];
	snprintf(needle, sizeof(needle), "\"fswatch: watching\",\"dir\":\"%s\"", dir);
	return count_log(h, needle);
}

static int released(struct harness *h, const char *dir)
{
	char needle[1200];
	snprintf(needle, sizeof(needle), "\"fswatch: directory released\",\"dir\":\"%s\"", dir);
	return count_log(h, needle);
}

static void no_events(struct harness *h, int ms)
{
	struct event ev[2];
	int n = read_events(h, ev, 2, ms);
	if (n > 0)
		fail_msg("unexpected event: id %s status %s payload %s", ev[0].id, ev[0].status,
			 ev[0].payload_json);
}

/* Stop triggerd cleanly: exit 0 (with sanitizers: no leak, no report). */
static void finish(struct harness *h)
{
	assert_int_equal(harness_td_stop(h, SIGTERM), 0);
	assert_int_equal(count_log(h, "runtime error"), 0);
	assert_int_equal(count_log(h, "Sanitizer"), 0);
}

static void expect_path(const struct event *ev, const char *id, const char *path)
{
	char want[1200];
	assert_string_equal(ev->id, id);
	assert_string_equal(ev->status, "success");
	assert_string_equal(ev->kind, "file");
	snprintf(want, sizeof(want), "\"path\":\"%s\"", path);
	if (!strstr(ev->payload_json, want))
		fail_msg("payload %s lacks %s", ev->payload_json, want);
}

/* ---- tests ---------------------------------------------------------- */

static void already_there_fires_at_once(void **state)
{
	struct harness *h = *state;
	char p[1024];
	assert_int_equal(start(h, false), 0);
	write_file(at(p, sizeof(p), "ready.txt"), "hello");
	int64_t t0 = now_ms();
	submit(h, "a1", false, p, "", true); /* fires before a look could see it stored */
	struct event ev[2];
	assert_int_equal(wait_events(h, ev, 1, 3000), 1);
	expect_path(&ev[0], "a1", p);
	assert_non_null(strstr(ev[0].payload_json, "\"size\":5"));
	assert_non_null(strstr(ev[0].payload_json, "\"mtime_ms\":"));
	assert_true(ev[0].fired_at_ms - t0 < 1500);
	/* One-shot: gone from the store, and its watch with it. */
	assert_int_equal(redis_int(h, "HEXISTS td:triggers a1"), 0);
	assert_true(harness_wait_log(h, "\"fswatch: directory released\"", 2000));
	no_events(h, 200);
	finish(h);
}

static void write_then_close_fires_once(void **state)
{
	struct harness *h = *state;
	char p[1024];
	assert_int_equal(start(h, false), 0);
	at(p, sizeof(p), "out.bin");
	add(h, "w1", p, "\"min_size\":10");
	add(h, "w0", at((char[1024]){0}, 1024, "log.txt"), "");
	/* An empty file created and closed: below min_size. */
	write_file(p, "");
	no_events(h, 300);
	/* Written but still open: nothing until the close. */
	char q[1024];
	at(q, sizeof(q), "log.txt");
	int fd = open(q, O_WRONLY | O_CREAT, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "partial", 7), 7);
	no_events(h, 400);
	assert_int_equal(write(fd, " done", 5), 5);
	close(fd);
	struct event ev[2];
	assert_int_equal(wait_events(h, ev, 1, 3000), 1);
	expect_path(&ev[0], "w0", q);
	assert_non_null(strstr(ev[0].payload_json, "\"size\":12"));
	/* Now out.bin gets its bytes. */
	write_file(p, "0123456789abcdef");
	assert_int_equal(wait_events(h, ev, 1, 3000), 1);
	expect_path(&ev[0], "w1", p);
	assert_non_null(strstr(ev[0].payload_json, "\"size\":16"));
	/* Written again: the trigger is gone, nothing more. */
	append_file(p, "more");
	no_events(h, 300);
	finish(h);
}

static void rename_into_place(void **state)
{
	struct harness *h = *state;
	char p[1024], tmp[1024];
	assert_int_equal(start(h, false), 0);
	mkdir(at(p, sizeof(p), "in"), 0700);
	add(h, "r1", at(p, sizeof(p), "in/*.csv"), "");
	/* Written under a hidden name ('*' does not match a leading '.'),
	 * then renamed into place. */
	write_file(at(tmp, sizeof(tmp), "in/.upload.csv"), "a,b\n1,2\n");
	no_events(h, 300);
	assert_int_equal(rename(tmp, at(p, sizeof(p), "in/final.csv")), 0);
	struct event ev[2];
	assert_int_equal(wait_events(h, ev, 1, 3000), 1);
	expect_path(&ev[0], "r1", p);
	/* Moved in from outside the watched directory, too. */
	add(h, "r2", at(p, sizeof(p), "in/moved.dat"), "");
	write_file(at(tmp, sizeof(tmp), "elsewhere.dat"), "x");
	no_events(h, 200);
	assert_int_equal(rename(tmp, p), 0);
	assert_int_equal(wait_events(h, ev, 1, 3000), 1);
	expect_path(&ev[0], "r2", p);
	/* A hard link and a symlink are complete as they appear (no close
	 * after writing follows). */
	at(tmp, sizeof(tmp), "in/moved.dat");
	add(h, "r3", at(p, sizeof(p), "in/linked.dat"), "");
	add(h, "r4", at(p, sizeof(p), "in/symlinked.dat"), "");
	no_events(h, 200);
	assert_int_equal(link(tmp, at(p, sizeof(p), "in/linked.dat")), 0);
	assert_int_equal(wait_events(h, ev, 1, 3000), 1);
	expect_path(&ev[0], "r3", p);
	assert_int_equal(symlink(tmp, at(p, sizeof(p), "in/symlinked.dat")), 0);
	assert_int_equal(wait_events(h, ev, 1, 3000), 1);
	expect_path(&ev[0], "r4", p);
	finish(h);
}

static void directories_created_later(void **state)
{
	struct harness *h = *state;
	char p[1024], d[1024];
	assert_int_equal(start(h, false), 0);
	/* Two levels missing, made one at a time. */
	add(h, "d1", at(p, sizeof(p), "a/b/done.flag"), "");
	/* Three levels missing, made in one go (mkdir -p races the watch). */
	add(h, "d2", at(p, sizeof(p), "x/y/z/data.json"), "");
	sleep_ms(100);
	assert_int_equal(mkdir(at(d, sizeof(d), "a"), 0700), 0);
	sleep_ms(100);
	assert_int_equal(mkdir(at(d, sizeof(d), "a/b"), 0700), 0);
	no_events(h, 200);
	write_file(at(p, sizeof(p), "a/b/done.flag"), "");
	struct event ev[2];
	assert_int_equal(wait_events(h, ev, 1, 3000), 1);
	expect_path(&ev[0], "d1", p);
	char cmd[1400];
	snprintf(cmd, sizeof(cmd), "mkdir -p '%s/x/y/z' && echo '{}' > '%s/x/y/z/data.json'",
		 root, root);
	assert_int_equal(system(cmd), 0);
	assert_int_equal(wait_events(h, ev, 1, 3000), 1);
	expect_path(&ev[0], "d2", at(p, sizeof(p), "x/y/z/data.json"));
	/* The deepest directory it was waiting in goes away and comes back:
	 * the wait follows. */
	add(h, "d3", at(p, sizeof(p), "x/y/z/again.json"), "");
	snprintf(cmd, sizeof(cmd), "rm -rf '%s/x/y' && mkdir -p '%s/x/y/z'", root, root);
	assert_int_equal(system(cmd), 0);
	sleep_ms(200);
	write_file(p, "{}");
	assert_int_equal(wait_events(h, ev, 1, 3000), 1);
	expect_path(&ev[0], "d3", p);
	finish(h);
}

static void glob_matches_only_right_names(void **state)
{
	struct harness *h = *state;
	char p[1024];
	assert_int_equal(start(h, false), 0);
	mkdir(at(p, sizeof(p), "g"), 0700);
	mkdir(at(p, sizeof(p), "g/2026-01"), 0700);
	add(h, "g1", at(p, sizeof(p), "g/*/report-[0-9]*.csv"), "");
	write_file(at(p, sizeof(p), "g/2026-01/report-x.csv"), "no");
	write_file(at(p, sizeof(p), "g/2026-01/report-1.txt"), "no");
	write_file(at(p, sizeof(p), "g/2026-01/.report-2.csv"), "no");
	write_file(at(p, sizeof(p), "g/report-3.csv"), "no");
	no_events(h, 400);
	/* A new directory at the glob's level, then the right name in it. */
	mkdir(at(p, sizeof(p), "g/2026-02"), 0700);
	sleep_ms(100);
	write_file(at(p, sizeof(p), "g/2026-02/report-7.csv"), "yes");
	struct event ev[2];
	assert_int_equal(wait_events(h, ev, 1, 3000), 1);
	expect_path(&ev[0], "g1", p);
	/* repeat: every matching file, once each, seq 1, 2, 3. */
	mkdir(at(p, sizeof(p), "rep"), 0700);
	submit(h, "g2", true, at(p, sizeof(p), "rep/*.log"), "", false);
	for (int i = 0; i < 3; i++) {
		char name[32];
		snprintf(name, sizeof(name), "rep/%d.log", i);
		write_file(at(p, sizeof(p), "%s", name), "line\n");
		write_file(at(p, sizeof(p), "rep/%d.skip", i), "line\n");
	}
	struct event evs[4];
	assert_int_equal(wait_events(h, evs, 3, 3000), 3);
	bool seen[3] = {false};
	for (int i = 0; i < 3; i++) {
		assert_string_equal(evs[i].id, "g2");
		assert_int_equal(evs[i].seq, (uint64_t)i + 1);
		for (int k = 0; k < 3; k++) {
			char want[1200];
			snprintf(want, sizeof(want), "\"path\":\"%s/rep/%d.log\"", root, k);
			seen[k] |= strstr(evs[i].payload_json, want) != NULL;
		}
	}
	assert_true(seen[0] && seen[1] && seen[2]);
	no_events(h, 300);
	finish(h);
}

static void recursive_double_star(void **state)
{
	struct harness *h = *state;
	char p[1024];
	assert_int_equal(start(h, false), 0);
	mkdir(at(p, sizeof(p), "t"), 0700);
	add(h, "s1", at(p, sizeof(p), "t/**/*.json"), "\"recursive\":true");
	/* Without recursive, "**" is "*": one level only. */
	add(h, "s2", at(p, sizeof(p), "t/**/*.json"), "\"min_size\":3");
	char cmd[1400];
	snprintf(cmd, sizeof(cmd), "mkdir -p '%s/t/a/b/c' && echo '{}' > '%s/t/a/b/c/deep.json'",
		 root, root);
	assert_int_equal(system(cmd), 0);
	struct event ev[2];
	assert_int_equal(wait_events(h, ev, 1, 3000), 1);
	expect_path(&ev[0], "s1", at(p, sizeof(p), "t/a/b/c/deep.json"));
	no_events(h, 300);
	write_file(at(p, sizeof(p), "t/a/one.json"), "{\"a\":1}");
	assert_int_equal(wait_events(h, ev, 1, 3000), 1);
	expect_path(&ev[0], "s2", p);
	finish(h);
}

static void stable_ms_waits_for_growth_to_stop(void **state)
{
	struct harness *h = *state;
	char p[1024];
	assert_int_equal(start(h, false), 0);
	at(p, sizeof(p), "growing.dat");
	add(h, "st", p, "\"stable_ms\":600,\"min_size\":1");
	int64_t last = 0;
	for (int i = 0; i < 8; i++) {
		append_file(p, "0123456789");
		last = now_ms();
		sleep_ms(150);
	}
	struct event ev[2];
	assert_int_equal(wait_events(h, ev, 1, 4000), 1);
	expect_path(&ev[0], "st", p);
	assert_non_null(strstr(ev[0].payload_json, "\"size\":80"));
	/* Not before the size held still for stable_ms. */
	int64_t waited = ev[0].fired_at_ms - last;
	if (waited < 590 || waited > 2000)
		fail_msg("fired %lld ms after the last write", (long long)waited);
	finish(h);
}

static void polling_fallback(void **state)
{
	struct harness *h = *state;
	char p[1024];
	assert_int_equal(start(h, true), 0);
	mkdir(at(p, sizeof(p), "nfs"), 0700);
	add(h, "p1", at(p, sizeof(p), "nfs/*.ready"), "\"poll_interval_ms\":200");
	add(h, "p2", at(p, sizeof(p), "nfs/later/sub/file.bin"),
	    "\"poll_interval_ms\":200,\"min_size\":4");
	char needle[1200];
	snprintf(needle, sizeof(needle), "\"fswatch: polling directory\",\"dir\":\"%s/nfs\"", root);
	assert_true(harness_wait_log(h, needle, 2000));
	assert_true(harness_wait_log(h, "forced by TRIGGERD_FSWATCH_FORCE_POLL", 100));
	assert_int_equal(count_log(h, "\"fswatch: watching\""), 0);
	no_events(h, 300);
	write_file(at(p, sizeof(p), "nfs/job.ready"), "");
	struct event ev[2];
	assert_int_equal(wait_events(h, ev, 1, 3000), 1);
	expect_path(&ev[0], "p1", p);
	char cmd[1400];
	snprintf(cmd, sizeof(cmd), "mkdir -p '%s/nfs/later/sub' && printf ab > '%s/nfs/later/sub/file.bin'",
		 root, root);
	assert_int_equal(system(cmd), 0);
	no_events(h, 600); /* below min_size */
	append_file(at(p, sizeof(p), "nfs/later/sub/file.bin"), "cd");
	assert_int_equal(wait_events(h, ev, 1, 3000), 1);
	expect_path(&ev[0], "p2", p);
	assert_non_null(strstr(ev[0].payload_json, "\"size\":4"));
	/* Shut down with a polled directory and a file still being followed. */
	add(h, "p3", at(p, sizeof(p), "nfs/slow.*"), "\"poll_interval_ms\":200,\"stable_ms\":60000");
	write_file(at(p, sizeof(p), "nfs/slow.1"), "x");
	no_events(h, 500);
	finish(h);
}

static void watch_limit_falls_back_to_polling(void **state)
{
	struct harness *h = *state;
	char p[1024], d1[1024], d2[1024];
	assert_int_equal(start_env(h, "TRIGGERD_FSWATCH_MAX_WATCHES=1"), 0);
	mkdir(at(d1, sizeof(d1), "watched"), 0700);
	mkdir(at(d2, sizeof(d2), "over"), 0700);
	add(h, "l1", at(p, sizeof(p), "watched/a"), "");
	add(h, "l2", at(p, sizeof(p), "over/b"), "\"poll_interval_ms\":200");
	assert_int_equal(watching(h, d1), 1);
	assert_int_equal(watching(h, d2), 0);
	char needle[1200];
	snprintf(needle, sizeof(needle),
		 "\"fswatch: polling directory\",\"dir\":\"%s\",\"reason\":\"inotify watch limit reached", d2);
	assert_true(harness_wait_log(h, needle, 2000));
	write_file(at(p, sizeof(p), "over/b"), "x");
	struct event ev[2];
	assert_int_equal(wait_events(h, ev, 1, 3000), 1);
	expect_path(&ev[0], "l2", p);
	write_file(at(p, sizeof(p), "watched/a"), "x");
	assert_int_equal(wait_events(h, ev, 1, 3000), 1);
	expect_path(&ev[0], "l1", p);
	finish(h);
}

static void shared_watch_and_cancel(void **state)
{
	struct harness *h = *state;
	char p[1024], dir[1024];
	assert_int_equal(start(h, false), 0);
	mkdir(at(dir, sizeof(dir), "shared"), 0700);
	add(h, "c1", at(p, sizeof(p), "shared/one"), "");
	add(h, "c2", at(p, sizeof(p), "shared/*.two"), "");
	add(h, "c3", at(p, sizeof(p), "shared/three"), "");
	/* Three waits, one directory watch. */
	assert_int_equal(watching(h, dir), 1);
	cancel(h, "c1");
	cancel(h, "c3");
	struct event ev[3];
	assert_int_equal(wait_events(h, ev, 2, 3000), 2);
	assert_string_equal(ev[0].status, "cancelled");
	assert_string_equal(ev[1].status, "cancelled");
	/* One waiter left: the watch stays. */
	sleep_ms(100);
	assert_int_equal(released(h, dir), 0);
	write_file(at(p, sizeof(p), "shared/one"), "x");
	write_file(at(p, sizeof(p), "shared/three"), "x");
	no_events(h, 300);
	cancel(h, "c2");
	assert_int_equal(wait_events(h, ev, 1, 3000), 1);
	assert_string_equal(ev[0].id, "c2");
	assert_string_equal(ev[0].status, "cancelled");
	/* The last one gone: so is the watch. */
	char needle[1200];
	snprintf(needle, sizeof(needle), "\"fswatch: directory released\",\"dir\":\"%s\"", dir);
	assert_true(harness_wait_log(h, needle, 2000));
	write_file(at(p, sizeof(p), "shared/x.two"), "x");
	no_events(h, 300);
	/* A new wait there watches it again. */
	add(h, "c4", at(p, sizeof(p), "shared/four"), "");
	assert_int_equal(watching(h, dir), 2);
	finish(h);
}

static void repeat_survives_restart_without_duplicates(void **state)
{
	struct harness *h = *state;
	char p[1024];
	assert_int_equal(start(h, false), 0);
	mkdir(at(p, sizeof(p), "drop"), 0700);
	write_file(at(p, sizeof(p), "drop/first.xml"), "<a/>");
	submit(h, "rp", true, at(p, sizeof(p), "drop/*.xml"), "", false);
	struct event ev[3];
	assert_int_equal(wait_events(h, ev, 1, 3000), 1);
	expect_path(&ev[0], "rp", at(p, sizeof(p), "drop/first.xml"));
	assert_int_equal(harness_td_stop(h, SIGTERM), 0);
	/* The stored trigger is loaded again and finds first.xml again: the
	 * occurrence key (path, inode, mtime) keeps it from being posted. */
	assert_int_equal(start(h, false), 0);
	no_events(h, 600);
	write_file(at(p, sizeof(p), "drop/second.xml"), "<b/>");
	assert_int_equal(wait_events(h, ev, 1, 3000), 1);
	expect_path(&ev[0], "rp", p);
	assert_int_equal(redis_int(h, "HEXISTS td:triggers rp"), 1);
	finish(h);
}

static void airflow_file_trigger(void **state)
{
	struct harness *h = *state;
	char p[1024], json[2048];
	assert_int_equal(start(h, false), 0);
	write_file(at(p, sizeof(p), "af-ready.csv"), "x");
	snprintf(json, sizeof(json),
		 "{\"id\":\"af3\",\"classpath\":\"airflow.providers.standard.triggers.file.FileTrigger\","
		 "\"kwargs\":{\"filepath\":\"%s/af-*.csv\",\"recursive\":false,\"poke_interval\":5.0},"
		 "\"meta\":{\"task_id\":\"wait\"}}", root);
	assert_int_equal(submit_json(h, json), 0);
	struct event ev[2];
	assert_int_equal(wait_events(h, ev, 1, 3000), 1);
	assert_string_equal(ev[0].id, "af3");
	assert_string_equal(ev[0].status, "success");
	assert_string_equal(ev[0].payload_json, "true");
	assert_non_null(strstr(ev[0].meta_json, "\"task_id\":\"wait\""));
	/* 2.x, with poll_interval, waiting in a tree made later. */
	snprintf(json, sizeof(json),
		 "{\"id\":\"af2\",\"classpath\":\"airflow.triggers.file.FileTrigger\","
		 "\"kwargs\":{\"filepath\":\"%s/af/**/_SUCCESS\",\"recursive\":true,\"poll_interval\":1}}",
		 root);
	assert_int_equal(submit_json(h, json), 0);
	wait_stored(h, "af2");
	char cmd[1400];
	snprintf(cmd, sizeof(cmd), "mkdir -p '%s/af/out/part' && touch '%s/af/out/part/_SUCCESS'",
		 root, root);
	assert_int_equal(system(cmd), 0);
	assert_int_equal(wait_events(h, ev, 1, 3000), 1);
	assert_string_equal(ev[0].id, "af2");
	assert_string_equal(ev[0].payload_json, "true");
	finish(h);
}

static void bad_specs_rejected(void **state)
{
	struct harness *h = *state;
	assert_int_equal(start(h, false), 0);
	static const struct {
		const char *json, *error;
	} cases[] = {
		{"{\"id\":\"b1\",\"kind\":\"file\",\"args\":{}}", "args.path: required"},
		{"{\"id\":\"b2\",\"kind\":\"file\",\"args\":{\"path\":\"rel/x\"}}", "args.path: expected an absolute path"},
		{"{\"id\":\"b3\",\"kind\":\"file\",\"args\":{\"path\":\"/a/../b\"}}", "args.path: no '.' or '..'"},
		{"{\"id\":\"b4\",\"kind\":\"file\",\"args\":{\"path\":\"/a/b/\"}}", "args.path: must name files"},
		{"{\"id\":\"b5\",\"kind\":\"file\",\"args\":{\"path\":\"/a//b\"}}", "args.path: empty component"},
		{"{\"id\":\"b6\",\"kind\":\"file\",\"args\":{\"path\":\"/a\",\"min_size\":\"big\"}}", "args.min_size: expected an integer"},
		{"{\"id\":\"b7\",\"kind\":\"file\",\"args\":{\"path\":\"/a\",\"stable_ms\":-1}}", "args.stable_ms: expected an integer"},
		{"{\"id\":\"b8\",\"kind\":\"file\",\"args\":{\"path\":\"/a\",\"poll_interval_ms\":5}}", "args.poll_interval_ms: expected an integer 100.."},
		{"{\"id\":\"b9\",\"kind\":\"file\",\"args\":{\"path\":\"/a\",\"recursive\":1}}", "args.recursive: expected true or false"},
		{"{\"id\":\"b10\",\"kind\":\"file\",\"args\":{\"path\":\"/a\",\"pattern\":\"*\"}}", "args.pattern: unknown field"},
		{"{\"id\":\"b11\",\"kind\":\"file\",\"args\":{\"path\":\"/a\",\"path\":\"/b\"}}", "args.path: given twice"},
		{"{\"id\":\"b12\",\"kind\":\"file\",\"args\":{\"path\":7}}", "args.path: expected a string"},
		{"{\"id\":\"b13\",\"classpath\":\"airflow.providers.standard.triggers.file.FileTrigger\",\"kwargs\":{\"filepath\":\"data/x.csv\"}}", "kwargs.filepath: expected an absolute path"},
		{"{\"id\":\"b14\",\"classpath\":\"airflow.triggers.file.FileTrigger\",\"kwargs\":{\"filepath\":\"/x\",\"mode\":\"poke\"}}", "kwargs.mode: not a FileTrigger argument"},
		{"{\"id\":\"b15\",\"classpath\":\"airflow.triggers.file.FileTrigger\",\"kwargs\":{\"filepath\":\"/x\",\"poke_interval\":0}}", "kwargs.poke_interval: expected seconds"},
	};
	size_t n = sizeof(cases) / sizeof(cases[0]);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(submit_json(h, cases[i].json), 0);
	struct event ev[20];
	assert_int_equal(wait_events(h, ev, (int)n, 5000), (int)n);
	for (size_t i = 0; i < n; i++) {
		assert_string_equal(ev[i].status, "rejected");
		if (!strstr(ev[i].error, cases[i].error))
			fail_msg("case %zu: error '%s' lacks '%s'", i, ev[i].error, cases[i].error);
	}
	finish(h);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(already_there_fires_at_once, harness_setup, harness_teardown),
		cmocka_unit_test_setup_teardown(write_then_close_fires_once, harness_setup, harness_teardown),
		cmocka_unit_test_setup_teardown(rename_into_place, harness_setup, harness_teardown),
		cmocka_unit_test_setup_teardown(directories_created_later, harness_setup, harness_teardown),
		cmocka_unit_test_setup_teardown(glob_matches_only_right_names, harness_setup, harness_teardown),
		cmocka_unit_test_setup_teardown(recursive_double_star, harness_setup, harness_teardown),
		cmocka_unit_test_setup_teardown(stable_ms_waits_for_growth_to_stop, harness_setup, harness_teardown),
		cmocka_unit_test_setup_teardown(polling_fallback, harness_setup, harness_teardown),
		cmocka_unit_test_setup_teardown(watch_limit_falls_back_to_polling, harness_setup, harness_teardown),
		cmocka_unit_test_setup_teardown(shared_watch_and_cancel, harness_setup, harness_teardown),
		cmocka_unit_test_setup_teardown(repeat_survives_restart_without_duplicates, harness_setup, harness_teardown),
		cmocka_unit_test_setup_teardown(airflow_file_trigger, harness_setup, harness_teardown),
		cmocka_unit_test_setup_teardown(bad_specs_rejected, harness_setup, harness_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
