/*
 * bench_timers — submit N timers to triggerd, wait for their events, and
 * report submit rate, memory and CPU per trigger, event throughput and
 * lateness percentiles. Run with --help for the options.
 *
 * By default it runs a private redis-server (unix socket in a mkdtemp
 * directory) and a private triggerd, and stops both at exit.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
#include <msgpack.h>

#include "triggerd/addr.h"
#include "triggerd/buf.h"
#include "triggerd/triggerd.h"

#define BATCH 1000
#define XREAD_COUNT "10000"
#define IDLE_LIMIT_MS 10000
#define ECHO_LIMIT 20
#define MAX_EXTRA_ARGS 32

struct opts {
	long n;
	int64_t window_ms;
	int64_t lead_ms;
	int64_t t0_delay_ms; /* -1: derived from n and lead */
	long meta_bytes;
	long id_bytes;
	bool restart;
	bool lead_given;
	const char *json_path;
	const char *log_path;
	const char *redis;
	pid_t pid;
	const char *triggerd;
	const char *redis_server;
	const char *prefix;
	uint64_t seed;
	const char *extra_args[MAX_EXTRA_ARGS];
	int n_extra_args;
};

/* The watched daemon: its stderr is drained by a thread that looks for
 * the "ready" and "store loaded" log lines. */
struct daemon {
	pid_t pid;
	int fd;
	bool thread_started;
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool ready, loaded, eof;
	double loaded_triggers, loaded_ms;
	long warnings, errors, echoed;
	FILE *tee;
};

/* One reported figure. An empty key starts a section named by label. */
struct fig {
	char key[48];
	char label[48];
	const char *unit;
	double v;
	int prec; /* digits after the point; -1 renders a boolean */
};

struct figs {
	struct fig f[128];
	int n;
};

/* Children and the temp dir, reachable from atexit: a bench is one run,
 * so file-level state is the simple way to always clean up. */
static struct {
	pid_t redis_pid;
	struct daemon *d;
	char dir[PATH_MAX];
} owned;

static volatile sig_atomic_t stop_requested;

static int64_t wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static double mono_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
	while (nanosleep(&ts, &ts) && errno == EINTR && !stop_requested)
		;
}

static void on_signal(int sig)
{
	(void)sig;
	stop_requested = 1;
}

static void fig_add(struct figs *fs, const char *key, const char *label,
		    const char *unit, double v, int prec)
{
	if (fs->n >= (int)TD_ARRAY_LEN(fs->f))
		return;
	struct fig *f = &fs->f[fs->n++];
	snprintf(f->key, sizeof(f->key), "%s", key);
	snprintf(f->label, sizeof(f->label), "%s", label);
	f->unit = unit;
	f->v = v;
	f->prec = prec;
}

static void fig_section(struct figs *fs, const char *label)
{
	fig_add(fs, "", label, "", 0, 0);
}

/* ---- /proc readers ---- */

static long rss_kb(pid_t pid)
{
	char path[64], line[256];
	long kb = -1;
	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
			break;
	fclose(f);
	return kb;
}

static double cpu_s(pid_t pid)
{
	char path[64], buf[1024];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	size_t len = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[len] = '\0';
	/* comm may hold spaces and parentheses: fields resume after the last ')' */
	char *p = strrchr(buf, ')');
	unsigned long long ut, st;
	if (!p || sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
			 &ut, &st) != 2)
		return -1;
	return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* ---- child processes ---- */

static pid_t spawn(char *const argv[], int out_fd)
{
	pid_t parent = getpid();
	pid_t pid = fork();
	if (pid != 0)
		return pid;
	/* the children must not outlive a bench killed with SIGKILL */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != parent)
		_exit(127);
	if (out_fd >= 0) {
		dup2(out_fd, 1);
		dup2(out_fd, 2);
	}
	signal(SIGPIPE, SIG_DFL);
	execvp(argv[0], argv);
	dprintf(2, "bench_timers: cannot run %s: %s\n", argv[0], strerror(errno));
	_exit(127);
}

/* Wait up to @timeout_ms for @pid to exit; SIGKILL it after that. Returns
 * its CPU seconds from the kernel's accounting, or -1. */
static double reap(pid_t pid, long timeout_ms, int *status)
{
	struct rusage ru;
	int st = 0;
	for (long waited = 0;; waited += 10) {
		pid_t r = wait4(pid, &st, WNOHANG, &ru);
		if (r == pid)
			break;
		if (r < 0)
			return -1;
		if (waited >= timeout_ms) {
			kill(pid, SIGKILL);
			if (wait4(pid, &st, 0, &ru) != pid)
				return -1;
			break;
		}
		sleep_ms(10);
	}
	if (status)
		*status = st;
	return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb, (void)flag, (void)ftw;
	remove(path);
	return 0;
}

static void cleanup(void)
{
	if (owned.d && owned.d->pid > 0) {
		kill(owned.d->pid, SIGTERM);
		reap(owned.d->pid, 5000, NULL);
		owned.d->pid = 0;
	}
	if (owned.redis_pid > 0) {
		kill(owned.redis_pid, SIGTERM);
		reap(owned.redis_pid, 5000, NULL);
		owned.redis_pid = 0;
	}
	if (owned.dir[0]) {
		nftw(owned.dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
		owned.dir[0] = '\0';
	}
}

static redisContext *connect_addr(const struct td_redis_addr *a)
{
	struct timeval tv = { 5, 0 };
	redisContext *c = a->path[0] ? redisConnectUnixWithTimeout(a->path, tv)
				     : redisConnectWithTimeout(a->host, a->port, tv);
	if (c && !c->err) {
		/* blocking reads: XREAD BLOCK 1000 must not hit a socket timeout */
		struct timeval rt = { 60, 0 };
		redisSetTimeout(c, rt);
	}
	return c;
}

static int start_redis(const char *server, struct td_redis_addr *a)
{
	char tmpl[] = "/tmp/bench_timers.XXXXXX";
	if (!mkdtemp(tmpl)) {
		fprintf(stderr, "bench_timers: mkdtemp: %s\n", strerror(errno));
		return -1;
	}
	snprintf(owned.dir, sizeof(owned.dir), "%s", tmpl);
	char sock[sizeof(a->path)], logf[PATH_MAX];
	snprintf(sock, sizeof(sock), "%s/redis.sock", tmpl);
	snprintf(logf, sizeof(logf), "%s/redis.log", tmpl);
	char *argv[] = { (char *)server, "--port", "0", "--unixsocket", sock,
			 "--unixsocketperm", "700", "--save", "", "--appendonly", "no",
			 "--dir", tmpl, "--logfile", logf, "--daemonize", "no", NULL };
	owned.redis_pid = spawn(argv, -1);
	if (owned.redis_pid < 0) {
		fprintf(stderr, "bench_timers: fork: %s\n", strerror(errno));
		return -1;
	}
	memset(a, 0, sizeof(*a));
	snprintf(a->path, sizeof(a->path), "%s", sock);
	for (int i = 0; i < 1000 && !stop_requested; i++) {
		if (waitpid(owned.redis_pid, NULL, WNOHANG) == owned.redis_pid) {
			owned.redis_pid = 0;
			break;
		}
		redisContext *c = connect_addr(a);
		if (c && !c->err) {
			redisReply *r = redisCommand(c, "PING");
			bool ok = r && r->type == REDIS_REPLY_STATUS;
			freeReplyObject(r);
			redisFree(c);
			if (ok)
				return 0;
		} else {
			redisFree(c);
		}
		sleep_ms(10);
	}
	fprintf(stderr, "bench_timers: redis-server (%s) did not come up; its log:\n", server);
	FILE *f = fopen(logf, "r");
	char line[512];
	while (f && fgets(line, sizeof(line), f))
		fputs(line, stderr);
	if (f)
		fclose(f);
	return -1;
}

/* ---- triggerd log watching ---- */

/* Find "key": VALUE in a JSON log line; copy the value (string contents
 * or number text) into @out. Good enough for flat, machine-written lines. */
static bool log_field(const char *line, const char *key, char *out, size_t outlen)
{
	char pat[64];
	snprintf(pat, sizeof(pat), "\"%s\"", key);
	for (const char *p = strstr(line, pat); p; p = strstr(p + 1, pat)) {
		const char *v = p + strlen(pat);
		while (*v == ' ')
			v++;
		if (*v != ':')
			continue;
		v++;
		while (*v == ' ')
			v++;
		size_t i = 0;
		if (*v == '"') {
			for (v++; *v && *v != '"' && i + 1 < outlen; v++) {
				if (*v == '\\' && v[1])
					v++;
				out[i++] = *v;
			}
		} else {
			for (; *v && *v != ',' && *v != '}' && *v != ' ' && i + 1 < outlen; v++)
				out[i++] = *v;
		}
		out[i] = '\0';
		return true;
	}
	return false;
}

static void handle_line(struct daemon *d, char *line)
{
	char msg[64], level[16], val[32];
	if (d->tee) {
		fputs(line, d->tee);
		fputc('\n', d->tee);
	}
	bool json = line[0] == '{';
	if (!json || !log_field(line, "level", level, sizeof(level)))
		level[0] = '\0';
	bool bad = !json || !strcmp(level, "error") || !strcmp(level, "fatal");
	bool warn = !strcmp(level, "warn") || !strcmp(level, "warning");

	pthread_mutex_lock(&d->mu);
	if (bad)
		d->errors++;
	if (warn)
		d->warnings++;
	if ((bad || warn) && d->echoed < ECHO_LIMIT) {
		/* surface problems even without --log, but never flood */
		fprintf(stderr, "triggerd: %s\n", line);
		if (++d->echoed == ECHO_LIMIT)
			fprintf(stderr, "bench_timers: further triggerd warnings not shown%s\n",
				d->tee ? " (see --log)" : "; use --log FILE");
	}
	if (json && log_field(line, "msg", msg, sizeof(msg))) {
		if (!strcmp(msg, "ready")) {
			d->ready = true;
		} else if (!strcmp(msg, "store loaded")) {
			d->loaded = true;
			d->loaded_triggers = log_field(line, "triggers", val, sizeof(val))
						     ? strtod(val, NULL) : -1;
			d->loaded_ms = log_field(line, "ms", val, sizeof(val))
					       ? strtod(val, NULL) : -1;
		}
	}
	pthread_cond_broadcast(&d->cv);
	pthread_mutex_unlock(&d->mu);
}

static void *drain_main(void *arg)
{
	struct daemon *d = arg;
	static const size_t cap = 65536;
	char *buf = malloc(cap + 1);
	size_t have = 0;
	while (buf) {
		ssize_t n = read(d->fd, buf + have, cap - have);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		have += (size_t)n;
		char *start = buf, *nl;
		while ((nl = memchr(start, '\n', (size_t)(buf + have - start)))) {
			*nl = '\0';
			handle_line(d, start);
			start = nl + 1;
		}
		have -= (size_t)(start - buf);
		memmove(buf, start, have);
		if (have == cap) {
			/* an overlong line: take it in pieces rather than stall the pipe */
			buf[have] = '\0';
			handle_line(d, buf);
			have = 0;
		}
	}
	free(buf);
	pthread_mutex_lock(&d->mu);
	d->eof = true;
	pthread_cond_broadcast(&d->cv);
	pthread_mutex_unlock(&d->mu);
	return NULL;
}

static int daemon_start(struct daemon *d, const struct opts *o, const char *addr)
{
	int fds[2];
	if (pipe2(fds, O_CLOEXEC)) {
		fprintf(stderr, "bench_timers: pipe: %s\n", strerror(errno));
		return -1;
	}
	const char *argv[16 + MAX_EXTRA_ARGS];
	int argc = 0;
	argv[argc++] = o->triggerd;
	argv[argc++] = "--redis";
	argv[argc++] = addr;
	argv[argc++] = "--log-level";
	argv[argc++] = "info";
	if (strcmp(o->prefix, "td:")) {
		argv[argc++] = "--prefix";
		argv[argc++] = o->prefix;
	}
	for (int i = 0; i < o->n_extra_args; i++)
		argv[argc++] = o->extra_args[i];
	argv[argc] = NULL;

	d->ready = d->loaded = d->eof = false;
	d->fd = fds[0];
	d->pid = spawn((char *const *)argv, fds[1]);
	close(fds[1]);
	if (d->pid < 0) {
		fprintf(stderr, "bench_timers: fork: %s\n", strerror(errno));
		close(fds[0]);
		d->pid = 0;
		return -1;
	}
	/* signals belong to the main thread, whose waits they interrupt */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	int rc = pthread_create(&d->thread, NULL, drain_main, d);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc) {
		fprintf(stderr, "bench_timers: pthread_create: %s\n", strerror(rc));
		return -1;
	}
	d->thread_started = true;
	return 0;
}

/* Wait for *@flag (a member of @d) up to @timeout_ms. Returns 0 when set,
 * -1 when the daemon's stderr closed first (it exited), -2 on timeout. */
static int daemon_wait(struct daemon *d, const bool *flag, long timeout_ms)
{
	int rc;
	double until = mono_s() + timeout_ms / 1e3;
	pthread_mutex_lock(&d->mu);
	for (;;) {
		if (*flag) {
			rc = 0;
			break;
		}
		if (d->eof) {
			rc = -1;
			break;
		}
		if (mono_s() >= until || stop_requested) {
			rc = -2;
			break;
		}
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 100 * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&d->cv, &d->mu, &ts);
	}
	pthread_mutex_unlock(&d->mu);
	return rc;
}

static bool daemon_alive(struct daemon *d)
{
	pthread_mutex_lock(&d->mu);
	bool alive = !d->eof;
	pthread_mutex_unlock(&d->mu);
	return alive;
}

/* SIGTERM, wait for exit, join the drainer. Returns the CPU seconds of the
 * whole life of the process (-1 if unknown). */
static double daemon_stop(struct daemon *d, long timeout_ms, int *status)
{
	if (d->pid <= 0)
		return -1;
	kill(d->pid, SIGTERM);
	double cpu = reap(d->pid, timeout_ms, status);
	d->pid = 0;
	if (d->thread_started) {
		pthread_join(d->thread, NULL);
		d->thread_started = false;
	}
	close(d->fd);
	d->fd = -1;
	return cpu;
}

static bool find_triggerd(char *out, size_t len)
{
	char self[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n <= 0)
		return false;
	self[n] = '\0';
	char *dir = dirname(self);
	/* meson puts bench binaries in build/bench/ and triggerd in build/ */
	static const char *const rel[] = { "triggerd", "../triggerd" };
	for (size_t i = 0; i < TD_ARRAY_LEN(rel); i++) {
		snprintf(out, len, "%s/%s", dir, rel[i]);
		if (access(out, X_OK) == 0)
			return true;
	}
	snprintf(out, len, "%s/triggerd", dir);
	return false;
}

/* ---- submission ---- */

/* The tag makes this run's ids distinct from any other run's on a shared
 * Redis; the index after it maps an event back to its due time. */
static size_t make_id(char *out, size_t cap, uint32_t tag, long i, long id_bytes)
{
	int n = snprintf(out, cap, "bt%08" PRIx32 "-%ld-", tag, i);
	size_t len = (size_t)n;
	while ((long)len < id_bytes && len + 1 < cap)
		out[len++] = 'x';
	out[len] = '\0';
	return len;
}

static long parse_id(const char *s, size_t len, uint32_t tag)
{
	char head[16];
	snprintf(head, sizeof(head), "bt%08" PRIx32 "-", tag);
	size_t hl = strlen(head);
	if (len <= hl || memcmp(s, head, hl))
		return -1;
	long v = 0;
	size_t i = hl;
	for (; i < len && s[i] >= '0' && s[i] <= '9'; i++)
		v = v * 10 + (s[i] - '0');
	return i > hl && i < len && s[i] == '-' ? v : -1;
}

static size_t meta_str_len(long b)
{
	/* meta is {"b": "<L bytes>"}: 1 (map) + 2 ("b") + str header + L */
	for (long l = b - 4; l >= 0; l--) {
		long hdr = l < 32 ? 1 : l < 256 ? 2 : 3;
		if (3 + hdr + l <= b)
			return (size_t)l;
	}
	return 0;
}

static void pack_spec(msgpack_sbuffer *sb, const char *id, size_t idlen,
		      int64_t at_ms, long meta_bytes, const char *metastr, size_t metalen)
{
	msgpack_packer pk;
	msgpack_sbuffer_clear(sb);
	msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, meta_bytes > 0 ? 4 : 3);
	msgpack_pack_str_with_body(&pk, "id", 2);
	msgpack_pack_str_with_body(&pk, id, idlen);
	msgpack_pack_str_with_body(&pk, "kind", 4);
	msgpack_pack_str_with_body(&pk, "timer", 5);
	msgpack_pack_str_with_body(&pk, "args", 4);
	msgpack_pack_map(&pk, 1);
	msgpack_pack_str_with_body(&pk, "at_ms", 5);
	msgpack_pack_int64(&pk, at_ms);
	if (meta_bytes > 0) {
		msgpack_pack_str_with_body(&pk, "meta", 4);
		if (meta_bytes < 4) {
			msgpack_pack_map(&pk, 0);
		} else {
			msgpack_pack_map(&pk, 1);
			msgpack_pack_str_with_body(&pk, "b", 1);
			msgpack_pack_str_with_body(&pk, metastr, metalen);
		}
	}
}

static long long hlen(redisContext *c, const char *key, bool *ok)
{
	const char *argv[] = { "HLEN", key };
	redisReply *r = redisCommandArgv(c, 2, argv, NULL);
	*ok = r && r->type == REDIS_REPLY_INTEGER;
	long long v = *ok ? r->integer : -1;
	freeReplyObject(r);
	return v;
}

/* ---- event consumption ---- */

struct tally {
	uint8_t *seen;
	int64_t *lat_fired, *lat_vis;
	size_t n_lat;
	long received, unique, dups, early, early_vis, non_success, due_mismatch;
	long malformed, foreign;
	int64_t vis_min, vis_max, fired_min, fired_max;
	char first_bad[160];
};

static const msgpack_object *map_get(const msgpack_object *m, const char *key)
{
	if (m->type != MSGPACK_OBJECT_MAP)
		return NULL;
	size_t kl = strlen(key);
	for (uint32_t i = 0; i < m->via.map.size; i++) {
		const msgpack_object_kv *kv = &m->via.map.ptr[i];
		if (kv->key.type == MSGPACK_OBJECT_STR && kv->key.via.str.size == kl &&
		    !memcmp(kv->key.via.str.ptr, key, kl))
			return &kv->val;
	}
	return NULL;
}

static bool obj_i64(const msgpack_object *o, int64_t *out)
{
	if (!o)
		return false;
	if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 <= INT64_MAX)
		*out = (int64_t)o->via.u64;
	else if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
		*out = o->via.i64;
	else
		return false;
	return true;
}

static void note_bad(struct tally *t, const char *what, const redisReply *sid)
{
	if (!t->first_bad[0])
		snprintf(t->first_bad, sizeof(t->first_bad), "%s (entry %s)", what,
			 sid ? sid->str : "?");
}

static void take_entry(struct tally *t, const redisReply *e, uint32_t tag,
		       const int64_t *due, long n, msgpack_unpacked *up)
{
	if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
	    e->element[0]->type != REDIS_REPLY_STRING ||
	    e->element[1]->type != REDIS_REPLY_ARRAY) {
		t->malformed++;
		note_bad(t, "stream entry of unexpected shape", NULL);
		return;
	}
	const redisReply *sid = e->element[0], *fv = e->element[1];
	int64_t visible = strtoll(sid->str, NULL, 10);
	const redisReply *idf = NULL, *evf = NULL;
	for (size_t i = 0; i + 1 < fv->elements; i += 2) {
		const redisReply *k = fv->element[i];
		if (k->type != REDIS_REPLY_STRING)
			continue;
		if (!strcmp(k->str, "id"))
			idf = fv->element[i + 1];
		else if (!strcmp(k->str, "event"))
			evf = fv->element[i + 1];
	}
	if (!idf || !evf || idf->type != REDIS_REPLY_STRING || evf->type != REDIS_REPLY_STRING) {
		t->malformed++;
		note_bad(t, "event entry without id/event fields", sid);
		return;
	}
	long idx = parse_id(idf->str, idf->len, tag);
	if (idx < 0 || idx >= n) {
		t->foreign++;
		return;
	}
	t->received++;
	size_t off = 0;
	msgpack_unpacked_destroy(up);
	if (msgpack_unpack_next(up, evf->str, evf->len, &off) != MSGPACK_UNPACK_SUCCESS ||
	    up->data.type != MSGPACK_OBJECT_MAP) {
		t->malformed++;
		note_bad(t, "event is not a msgpack map", sid);
		return;
	}
	const msgpack_object *ev = &up->data, *st = map_get(ev, "status");
	if (t->seen[idx]++) {
		t->dups++;
		note_bad(t, "duplicate event", sid);
		return;
	}
	t->unique++;
	if (!st || st->type != MSGPACK_OBJECT_STR || st->via.str.size != 7 ||
	    memcmp(st->via.str.ptr, "success", 7)) {
		t->non_success++;
		note_bad(t, "event status is not success", sid);
		return;
	}
	int64_t fired, ev_due;
	if (!obj_i64(map_get(ev, "fired_at_ms"), &fired)) {
		t->malformed++;
		note_bad(t, "event without fired_at_ms", sid);
		return;
	}
	if (!obj_i64(map_get(ev, "due_at_ms"), &ev_due) || ev_due != due[idx]) {
		t->due_mismatch++;
		note_bad(t, "due_at_ms differs from the submitted at_ms", sid);
		if (!obj_i64(map_get(ev, "due_at_ms"), &ev_due))
			ev_due = due[idx];
	}
	/* early against both the event's own due time and the one submitted */
	int64_t truth = ev_due > due[idx] ? ev_due : due[idx];
	if (fired < truth) {
		t->early++;
		note_bad(t, "fired before due", sid);
	}
	if (visible < due[idx])
		t->early_vis++;
	t->lat_fired[t->n_lat] = fired - ev_due;
	t->lat_vis[t->n_lat] = visible - due[idx];
	t->n_lat++;
	if (t->n_lat == 1) {
		t->vis_min = t->vis_max = visible;
		t->fired_min = t->fired_max = fired;
	}
	t->vis_min = visible < t->vis_min ? visible : t->vis_min;
	t->vis_max = visible > t->vis_max ? visible : t->vis_max;
	t->fired_min = fired < t->fired_min ? fired : t->fired_min;
	t->fired_max = fired > t->fired_max ? fired : t->fired_max;
}

/* Read events from @key after @last_id until all @n arrived, or nothing
 * came for IDLE_LIMIT_MS after the window's end. Returns 0, or -1 on a
 * Redis error. */
static int consume(redisContext *c, const char *key, char *last_id, size_t last_cap,
		   struct tally *t, uint32_t tag, const int64_t *due, long n,
		   int64_t window_end, struct daemon *d)
{
	msgpack_unpacked up;
	msgpack_unpacked_init(&up);
	int64_t last_event = 0;
	bool daemon_gone = false;
	int rc = 0;
	while (t->unique < n && !stop_requested) {
		const char *argv[] = { "XREAD", "COUNT", XREAD_COUNT, "BLOCK", "1000",
				       "STREAMS", key, last_id };
		redisReply *r = redisCommandArgv(c, 8, argv, NULL);
		if (!r || r->type == REDIS_REPLY_ERROR) {
			fprintf(stderr, "bench_timers: XREAD %s: %s\n", key,
				r ? r->str : c->errstr);
			freeReplyObject(r);
			rc = -1;
			break;
		}
		if (r->type == REDIS_REPLY_ARRAY && r->elements == 1 &&
		    r->element[0]->elements == 2) {
			const redisReply *entries = r->element[0]->element[1];
			for (size_t i = 0; i < entries->elements; i++)
				take_entry(t, entries->element[i], tag, due, n, &up);
			if (entries->elements) {
				const redisReply *le = entries->element[entries->elements - 1];
				if (le->type == REDIS_REPLY_ARRAY && le->elements >= 1 &&
				    le->element[0]->type == REDIS_REPLY_STRING)
					snprintf(last_id, last_cap, "%s", le->element[0]->str);
				last_event = wall_ms();
			}
			freeReplyObject(r);
			continue;
		}
		freeReplyObject(r);
		/* an empty read: the stream is drained up to now */
		if (daemon_gone)
			break;
		if (d && !daemon_alive(d)) {
			fprintf(stderr, "bench_timers: triggerd exited during the firing phase\n");
			daemon_gone = true;
			continue;
		}
		int64_t now = wall_ms();
		int64_t quiet_since = last_event > window_end ? last_event : window_end;
		if (now >= window_end && now - quiet_since >= IDLE_LIMIT_MS)
			break;
	}
	msgpack_unpacked_destroy(&up);
	return rc;
}

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return (x > y) - (x < y);
}

/* Nearest-rank percentile of sorted @v; @q in 1/10000. */
static int64_t pct(const int64_t *v, size_t n, unsigned q)
{
	if (!n)
		return 0;
	size_t k = (q * n + 9999) / 10000;
	return v[k ? k - 1 : 0];
}

static void add_lateness(struct figs *fs, const char *key, const char *label,
			 int64_t *v, size_t n)
{
	static const struct { const char *k, *l; unsigned q; } qs[] = {
		{ "p50", "p50", 5000 }, { "p90", "p90", 9000 }, { "p99", "p99", 9900 },
		{ "p999", "p99.9", 9990 }, { "max", "max", 10000 },
	};
	char k[48], l[48];
	qsort(v, n, sizeof(*v), cmp_i64);
	snprintf(k, sizeof(k), "%s_min_ms", key);
	snprintf(l, sizeof(l), "%s min", label);
	fig_add(fs, k, l, "ms", n ? (double)v[0] : 0, 0);
	for (size_t i = 0; i < TD_ARRAY_LEN(qs); i++) {
		snprintf(k, sizeof(k), "%s_%s_ms", key, qs[i].k);
		snprintf(l, sizeof(l), "%s %s", label, qs[i].l);
		fig_add(fs, k, l, "ms", (double)pct(v, n, qs[i].q), 0);
	}
	double sum = 0;
	for (size_t i = 0; i < n; i++)
		sum += (double)v[i];
	snprintf(k, sizeof(k), "%s_mean_ms", key);
	snprintf(l, sizeof(l), "%s mean", label);
	fig_add(fs, k, l, "ms", n ? sum / (double)n : 0, 3);
}

/* ---- output ---- */

static void print_figs(const struct figs *fs)
{
	for (int i = 0; i < fs->n; i++) {
		const struct fig *f = &fs->f[i];
		if (!f->key[0])
			printf("%s%s\n", i ? "\n" : "", f->label);
		else if (f->prec < 0)
			printf("  %-38s %s\n", f->label, f->v ? "yes" : "no");
		else
			printf("  %-38s %.*f%s%s\n", f->label, f->prec, f->v,
			       f->unit[0] ? " " : "", f->unit);
	}
	fflush(stdout);
}

static int write_json(const struct figs *fs, const char *path)
{
	struct td_buf b = TD_BUF_INIT;
	td_buf_puts(&b, "{\n");
	bool first = true;
	for (int i = 0; i < fs->n; i++) {
		const struct fig *f = &fs->f[i];
		if (!f->key[0])
			continue;
		td_buf_printf(&b, "%s  \"%s\": ", first ? "" : ",\n", f->key);
		if (f->prec < 0)
			td_buf_puts(&b, f->v ? "true" : "false");
		else
			td_buf_printf(&b, "%.*f", f->prec, f->v);
		first = false;
	}
	td_buf_puts(&b, "\n}\n");
	FILE *out = strcmp(path, "-") ? fopen(path, "w") : stdout;
	int rc = out && b.data && fwrite(b.data, 1, b.len, out) == b.len ? 0 : -1;
	if (out && out != stdout && fclose(out))
		rc = -1;
	if (rc)
		fprintf(stderr, "bench_timers: cannot write %s: %s\n", path, strerror(errno));
	td_buf_finish(&b);
	return rc;
}

/* ---- options ---- */

static void usage(FILE *f)
{
	fprintf(f,
"usage: bench_timers [options]\n"
"Submit N timer triggers to triggerd, consume their events, report rates,\n"
"memory, CPU and lateness. Exit 0 when every timer fired exactly once, with\n"
"status success and never early; 1 otherwise; 2 on a usage error.\n"
"\n"
"  -n N               timers (default 100000)\n"
"  --window-ms W      due times uniform at random over [t0, t0+W] (default 5000);\n"
"                     0 puts them all on t0, which measures events/s\n"
"  --lead-ms L        slack between the estimated end of storing and t0\n"
"                     (default 1000; with --restart 5000 + N/50)\n"
"  --t0-delay MS      t0 = submit start + MS; default L + N/50, i.e. assumes\n"
"                     submission and storing run at >= 50,000 triggers/s.\n"
"                     The report says how far before t0 storing finished;\n"
"                     if it did not, lateness of the first timers is inflated.\n"
"  --meta-bytes B     msgpack size of each spec's meta (default 16; 0: none)\n"
"  --id-bytes B       ids padded to B bytes (default 32, max 256)\n"
"  --restart          once all N are stored: SIGTERM triggerd, start it again,\n"
"                     report its \"store loaded\" line, then measure firing.\n"
"                     The default lead leaves room for that.\n"
"  --json FILE        also write the figures as JSON ('-' for stdout)\n"
"  --log FILE         copy triggerd's stderr to FILE\n"
"  --seed S           PRNG seed for due times (default 1)\n"
"  --prefix P         key prefix (default td:)\n"
"  --triggerd PATH    daemon to start (default: triggerd next to this binary,\n"
"                     or in its parent directory)\n"
"  --triggerd-arg A   extra argument for triggerd (repeatable)\n"
"  --redis-server P   redis-server binary (default redis-server in PATH)\n"
"  --redis ADDR       use this Redis (HOST:PORT or socket path) instead of\n"
"                     starting one\n"
"  --pid PID          use the running triggerd PID (for CPU and RSS) instead\n"
"                     of starting one; Redis from --redis, $TRIGGERD_REDIS or\n"
"                     the default socket\n");
}

static bool num_arg(const char *s, int64_t lo, int64_t hi, int64_t *out)
{
	char *end;
	errno = 0;
	long long v = strtoll(s, &end, 10);
	if (errno || end == s || *end || v < lo || v > hi)
		return false;
	*out = v;
	return true;
}

static int parse_opts(int argc, char **argv, struct opts *o)
{
	enum { O_WINDOW = 256, O_LEAD, O_T0, O_META, O_ID, O_RESTART, O_JSON, O_LOG,
	       O_REDIS, O_PID, O_TRIGGERD, O_TARG, O_RSERVER, O_PREFIX, O_SEED, O_HELP };
	static const struct option lo[] = {
		{ "window-ms", 1, NULL, O_WINDOW }, { "lead-ms", 1, NULL, O_LEAD },
		{ "t0-delay", 1, NULL, O_T0 }, { "meta-bytes", 1, NULL, O_META },
		{ "id-bytes", 1, NULL, O_ID }, { "restart", 0, NULL, O_RESTART },
		{ "json", 1, NULL, O_JSON }, { "log", 1, NULL, O_LOG },
		{ "redis", 1, NULL, O_REDIS }, { "pid", 1, NULL, O_PID },
		{ "triggerd", 1, NULL, O_TRIGGERD }, { "triggerd-arg", 1, NULL, O_TARG },
		{ "redis-server", 1, NULL, O_RSERVER }, { "prefix", 1, NULL, O_PREFIX },
		{ "seed", 1, NULL, O_SEED }, { "help", 0, NULL, O_HELP },
		{ NULL, 0, NULL, 0 },
	};
	*o = (struct opts){ .n = 100000, .window_ms = 5000, .lead_ms = 1000,
			    .t0_delay_ms = -1, .meta_bytes = 16, .id_bytes = 32,
			    .redis_server = "redis-server", .prefix = "td:", .seed = 1 };
	int c;
	int64_t v;
	while ((c = getopt_long(argc, argv, "n:h", lo, NULL)) != -1) {
		const char *bad = NULL;
		switch (c) {
		case 'n':
			if (!num_arg(optarg, 1, 100000000, &v))
				bad = "-n";
			o->n = (long)v;
			break;
		case O_WINDOW:
			if (!num_arg(optarg, 0, INT32_MAX, &o->window_ms))
				bad = "--window-ms";
			break;
		case O_LEAD:
			if (!num_arg(optarg, 0, INT32_MAX, &o->lead_ms))
				bad = "--lead-ms";
			o->lead_given = true;
			break;
		case O_T0:
			if (!num_arg(optarg, 0, INT32_MAX, &o->t0_delay_ms))
				bad = "--t0-delay";
			break;
		case O_META:
			if (!num_arg(optarg, 0, 16384, &v))
				bad = "--meta-bytes (0..16384)";
			o->meta_bytes = (long)v;
			break;
		case O_ID:
			if (!num_arg(optarg, 1, 256, &v))
				bad = "--id-bytes (1..256)";
			o->id_bytes = (long)v;
			break;
		case O_RESTART: o->restart = true; break;
		case O_JSON: o->json_path = optarg; break;
		case O_LOG: o->log_path = optarg; break;
		case O_REDIS: o->redis = optarg; break;
		case O_PID:
			if (!num_arg(optarg, 1, INT32_MAX, &v))
				bad = "--pid";
			o->pid = (pid_t)v;
			break;
		case O_TRIGGERD: o->triggerd = optarg; break;
		case O_TARG:
			if (o->n_extra_args == MAX_EXTRA_ARGS)
				bad = "--triggerd-arg (too many)";
			else
				o->extra_args[o->n_extra_args++] = optarg;
			break;
		case O_RSERVER: o->redis_server = optarg; break;
		case O_PREFIX: o->prefix = optarg; break;
		case O_SEED:
			if (!num_arg(optarg, 0, INT64_MAX, &v))
				bad = "--seed";
			o->seed = (uint64_t)v;
			break;
		case 'h':
		case O_HELP:
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			return -1;
		}
		if (bad) {
			fprintf(stderr, "bench_timers: bad value for %s: '%s'\n", bad, optarg);
			return -1;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "bench_timers: unexpected argument '%s'\n", argv[optind]);
		return -1;
	}
	if (o->restart && o->pid) {
		fprintf(stderr, "bench_timers: --restart needs a triggerd it started (no --pid)\n");
		return -1;
	}
	if (o->restart && !o->lead_given)
		o->lead_ms = 5000 + o->n / 50;
	if (o->t0_delay_ms < 0)
		o->t0_delay_ms = o->lead_ms + o->n / 50;
	return 0;
}

static uint64_t xorshift(uint64_t *s)
{
	uint64_t x = *s;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return *s = x;
}

/* ---- the run ---- */

/* One run: the processes it talks to, the timers, and what it measured. */
struct run {
	struct opts o;
	char addr[PATH_MAX];
	redisContext *c;
	struct daemon d;
	pid_t tpid; /* the triggerd measured: ours, or --pid */
	char trig_key[300], sub_key[300], ev_key[300], last_id[64];
	long long base; /* HLEN before submitting: other triggers on a shared Redis */
	uint32_t tag;
	int64_t t0;  /* earliest due time, unix ms */
	int64_t *due; /* by timer index, unix ms */
	struct tally t;

	size_t spec_bytes, meta_bytes, id_bytes;
	long submit_errors;
	long long stored;
	bool all_stored, restarted, consume_failed;
	double startup_s, submit_s, stored_s, stop_s, restart_s;
	int64_t submit_wall, stored_wall, end_wall;
	long rss_before, rss_stored, rss_restarted;
	double cpu_start, cpu_stored, cpu_first_life, cpu_fire0, cpu_end;
};

/* Start or find Redis and triggerd; returns 0 or an exit code. */
static int setup(struct run *r)
{
	struct opts *o = &r->o;
	static char tdpath[PATH_MAX];
	char err[256];
	if (!o->pid && !o->triggerd) {
		if (!find_triggerd(tdpath, sizeof(tdpath))) {
			fprintf(stderr, "bench_timers: no triggerd next to this binary (%s); "
				"use --triggerd PATH\n", tdpath);
			return 2;
		}
		o->triggerd = tdpath;
	}

	struct td_redis_addr addr;
	if (o->redis || o->pid) {
		int is_default;
		if (td_redis_addr_resolve(o->redis, &addr, &is_default, err, sizeof(err))) {
			fprintf(stderr, "bench_timers: %s\n", err);
			return 2;
		}
	} else if (start_redis(o->redis_server, &addr)) {
		return 1;
	}
	td_redis_addr_str(&addr, r->addr, sizeof(r->addr));
	r->c = connect_addr(&addr);
	if (!r->c || r->c->err) {
		fprintf(stderr, "bench_timers: cannot connect to Redis at %s: %s\n", r->addr,
			r->c ? r->c->errstr : "out of memory");
		return 1;
	}

	struct daemon *d = &r->d;
	pthread_mutex_init(&d->mu, NULL);
	pthread_cond_init(&d->cv, NULL);
	d->fd = -1;
	if (o->log_path) {
		d->tee = fopen(o->log_path, "w");
		if (!d->tee) {
			fprintf(stderr, "bench_timers: %s: %s\n", o->log_path, strerror(errno));
			return 2;
		}
		setvbuf(d->tee, NULL, _IOLBF, 0);
	}
	r->tpid = o->pid;
	if (o->pid) {
		if (kill(o->pid, 0)) {
			fprintf(stderr, "bench_timers: --pid %d: %s\n", (int)o->pid,
				strerror(errno));
			return 1;
		}
	} else {
		double t = mono_s();
		owned.d = d;
		if (daemon_start(d, o, r->addr))
			return 1;
		int rc = daemon_wait(d, &d->ready, 60000);
		if (rc) {
			fprintf(stderr, "bench_timers: triggerd (%s) %s before logging \"ready\"\n",
				o->triggerd, rc == -1 ? "exited" : "timed out");
			return 1;
		}
		r->tpid = d->pid;
		r->startup_s = mono_s() - t;
	}

	snprintf(r->trig_key, sizeof(r->trig_key), "%striggers", o->prefix);
	snprintf(r->sub_key, sizeof(r->sub_key), "%ssubmit", o->prefix);
	snprintf(r->ev_key, sizeof(r->ev_key), "%sevents", o->prefix);

	/* start after whatever the events stream already holds */
	snprintf(r->last_id, sizeof(r->last_id), "0-0");
	const char *av[] = { "XREVRANGE", r->ev_key, "+", "-", "COUNT", "1" };
	redisReply *rep = redisCommandArgv(r->c, 6, av, NULL);
	if (rep && rep->type == REDIS_REPLY_ARRAY && rep->elements == 1 &&
	    rep->element[0]->type == REDIS_REPLY_ARRAY && rep->element[0]->elements >= 1 &&
	    rep->element[0]->element[0]->type == REDIS_REPLY_STRING)
		snprintf(r->last_id, sizeof(r->last_id), "%s", rep->element[0]->element[0]->str);
	freeReplyObject(rep);
	bool ok;
	r->base = hlen(r->c, r->trig_key, &ok);
	if (!ok) {
		fprintf(stderr, "bench_timers: HLEN %s failed: %s\n", r->trig_key, r->c->errstr);
		return 1;
	}

	size_t n = (size_t)o->n;
	r->due = malloc(n * sizeof(*r->due));
	r->t.seen = calloc(n, 1);
	r->t.lat_fired = malloc(n * sizeof(int64_t));
	r->t.lat_vis = malloc(n * sizeof(int64_t));
	if (!r->due || !r->t.seen || !r->t.lat_fired || !r->t.lat_vis) {
		fprintf(stderr, "bench_timers: out of memory\n");
		return 1;
	}
	r->tag = (uint32_t)(getpid() ^ (uint32_t)wall_ms() * 2654435761u);
	return 0;
}

/* Pipelined XADDs, BATCH at a time; due times drawn as they are packed. */
static int submit_all(struct run *r)
{
	const struct opts *o = &r->o;
	size_t metalen = meta_str_len(o->meta_bytes);
	char *metastr = malloc(metalen + 1);
	if (!metastr)
		return 1;
	memset(metastr, 'm', metalen);
	r->meta_bytes = o->meta_bytes == 0 ? 0 : o->meta_bytes < 4 ? 1
			: 3 + metalen + (metalen < 32 ? 1 : metalen < 256 ? 2 : 3);

	double t = mono_s();
	r->submit_wall = wall_ms();
	r->t0 = r->submit_wall + o->t0_delay_ms;
	uint64_t rng = o->seed * 0x9e3779b97f4a7c15ull + 1;
	msgpack_sbuffer sb;
	msgpack_sbuffer_init(&sb);
	char id[300], first_err[200] = "";
	size_t sublen = strlen(r->sub_key);
	for (long i = 0; i < o->n && !stop_requested; i += BATCH) {
		long m = o->n - i < BATCH ? o->n - i : BATCH;
		for (long j = i; j < i + m; j++) {
			uint64_t w = (uint64_t)o->window_ms;
			r->due[j] = r->t0 + (int64_t)(w ? xorshift(&rng) % (w + 1) : 0);
			r->id_bytes = make_id(id, sizeof(id), r->tag, j, o->id_bytes);
			pack_spec(&sb, id, r->id_bytes, r->due[j], o->meta_bytes, metastr, metalen);
			r->spec_bytes = sb.size;
			const char *av[] = { "XADD", r->sub_key, "*", "op", "add", "spec",
					     sb.data };
			size_t al[] = { 4, sublen, 1, 2, 3, 4, sb.size };
			redisAppendCommandArgv(r->c, 7, av, al);
		}
		for (long j = 0; j < m; j++) {
			redisReply *rep = NULL;
			if (redisGetReply(r->c, (void **)&rep) != REDIS_OK) {
				fprintf(stderr, "bench_timers: Redis: %s\n", r->c->errstr);
				free(metastr);
				msgpack_sbuffer_destroy(&sb);
				return 1;
			}
			bool bad = rep->type != REDIS_REPLY_STRING;
			if (bad && !r->submit_errors++)
				snprintf(first_err, sizeof(first_err), "%s",
					 rep->type == REDIS_REPLY_ERROR ? rep->str : "bad reply");
			freeReplyObject(rep);
		}
	}
	msgpack_sbuffer_destroy(&sb);
	free(metastr);
	r->submit_s = mono_s() - t;
	if (r->submit_errors)
		fprintf(stderr, "bench_timers: %ld XADDs failed, first: %s\n", r->submit_errors,
			first_err);
	return 0;
}

/* Poll HLEN until all are stored, but not past t0: from then on fired
 * timers leave the hash and the count would never be reached. */
static int wait_stored(struct run *r)
{
	bool ok;
	while (!stop_requested) {
		r->stored = hlen(r->c, r->trig_key, &ok) - r->base;
		if (!ok) {
			fprintf(stderr, "bench_timers: HLEN: %s\n", r->c->errstr);
			return 1;
		}
		if (r->stored >= r->o.n || wall_ms() >= r->t0)
			break;
		if (!r->o.pid && !daemon_alive(&r->d)) {
			fprintf(stderr, "bench_timers: triggerd exited while storing\n");
			break;
		}
		sleep_ms(5);
	}
	r->stored_s = (double)(wall_ms() - r->submit_wall) / 1e3;
	r->stored_wall = wall_ms();
	r->all_stored = r->stored >= r->o.n;
	if (!r->all_stored)
		fprintf(stderr, "bench_timers: only %lld of %ld stored by t0%s\n", r->stored,
			r->o.n, r->o.restart ? "; skipping --restart" : "");
	r->rss_stored = rss_kb(r->tpid);
	r->cpu_stored = cpu_s(r->tpid);
	return 0;
}

static int restart_daemon(struct run *r)
{
	struct daemon *d = &r->d;
	double t = mono_s();
	int status = 0;
	r->cpu_first_life = daemon_stop(d, 30000, &status);
	r->stop_s = mono_s() - t;
	if (!WIFEXITED(status) || WEXITSTATUS(status))
		fprintf(stderr, "bench_timers: triggerd did not exit cleanly on SIGTERM "
			"(status 0x%x)\n", status);
	if (daemon_start(d, &r->o, r->addr))
		return 1;
	int rc = daemon_wait(d, &d->ready, 60000);
	r->restart_s = mono_s() - t;
	if (rc) {
		fprintf(stderr, "bench_timers: restarted triggerd %s before \"ready\"\n",
			rc == -1 ? "exited" : "timed out");
	} else {
		r->restarted = true;
		if (!d->loaded)
			fprintf(stderr, "bench_timers: no \"store loaded\" line "
				"before \"ready\"\n");
	}
	r->tpid = d->pid;
	r->rss_restarted = rss_kb(r->tpid);
	if (wall_ms() >= r->t0)
		fprintf(stderr, "bench_timers: restart finished %" PRId64 " ms after t0; "
			"raise --lead-ms\n", wall_ms() - r->t0);
	return 0;
}

static double per_s(double count, int64_t span_ms)
{
	return span_ms > 0 ? count * 1000.0 / (double)span_ms : 0;
}

/* Turn the measurements into figures; returns whether the run passed. */
static bool report(struct run *r, struct figs *fs)
{
	const struct opts *o = &r->o;
	struct tally *t = &r->t;
	double n = (double)o->n;

	fig_section(fs, "setup");
	fig_add(fs, "timers", "timers", "", n, 0);
	fig_add(fs, "window_ms", "due window", "ms", (double)o->window_ms, 0);
	fig_add(fs, "t0_delay_ms", "t0 after submit start", "ms", (double)o->t0_delay_ms, 0);
	fig_add(fs, "spec_bytes", "spec size (msgpack)", "B", (double)r->spec_bytes, 0);
	fig_add(fs, "meta_bytes", "meta size (msgpack)", "B", (double)r->meta_bytes, 0);
	fig_add(fs, "id_bytes", "id size", "B", (double)r->id_bytes, 0);
	if (!o->pid)
		fig_add(fs, "startup_s", "triggerd start to ready", "s", r->startup_s, 3);

	fig_section(fs, "submit");
	fig_add(fs, "submit_s", "submit time", "s", r->submit_s, 3);
	fig_add(fs, "submit_rate_per_s", "submit rate", "XADD/s",
		r->submit_s > 0 ? n / r->submit_s : 0, 0);
	fig_add(fs, "submit_errors", "submit errors", "", (double)r->submit_errors, 0);
	fig_add(fs, "all_stored", "all stored before t0", "", r->all_stored, -1);
	fig_add(fs, "stored", "stored", "triggers", (double)r->stored, 0);
	fig_add(fs, "stored_s", "submit start to all stored", "s", r->stored_s, 3);
	fig_add(fs, "store_rate_per_s", "store rate", "triggers/s",
		r->stored_s > 0 ? (double)r->stored / r->stored_s : 0, 0);
	fig_add(fs, "stored_margin_ms", "stored before t0 by", "ms",
		(double)(r->t0 - r->stored_wall), 0);

	fig_section(fs, "triggerd memory and CPU");
	fig_add(fs, "rss_before_kb", "RSS before submit", "kB", (double)r->rss_before, 0);
	fig_add(fs, "rss_stored_kb", "RSS all stored", "kB", (double)r->rss_stored, 0);
	fig_add(fs, "rss_per_trigger_b", "RSS per trigger", "B",
		(double)(r->rss_stored - r->rss_before) * 1024.0 / n, 1);
	/* across a restart: the first process's whole-life CPU from wait4 */
	double cpu_total = r->cpu_first_life >= 0
				   ? r->cpu_first_life - r->cpu_start + r->cpu_end
				   : r->cpu_end - r->cpu_start;
	double cpu_store = r->cpu_stored - r->cpu_start, cpu_fire = r->cpu_end - r->cpu_fire0;
	fig_add(fs, "cpu_total_s", "CPU whole run", "s", cpu_total, 2);
	fig_add(fs, "cpu_store_s", "CPU submit to stored", "s", cpu_store, 2);
	fig_add(fs, "cpu_store_us_per_trigger", "CPU per stored trigger", "us",
		cpu_store * 1e6 / n, 2);
	fig_add(fs, "cpu_fire_s", "CPU firing phase", "s", cpu_fire, 2);
	fig_add(fs, "cpu_fire_us_per_event", "CPU per fired event", "us",
		t->unique ? cpu_fire * 1e6 / (double)t->unique : 0, 2);
	if (!o->pid) {
		fig_add(fs, "triggerd_warnings", "triggerd warning lines", "",
			(double)r->d.warnings, 0);
		fig_add(fs, "triggerd_errors", "triggerd error lines", "", (double)r->d.errors, 0);
	}

	if (o->restart) {
		fig_section(fs, "restart");
		fig_add(fs, "restarted", "restarted", "", r->restarted, -1);
		fig_add(fs, "restart_stop_s", "SIGTERM to exit", "s", r->stop_s, 3);
		fig_add(fs, "restart_total_s", "SIGTERM to ready again", "s", r->restart_s, 3);
		fig_add(fs, "restart_loaded_triggers", "store loaded: triggers", "",
			r->d.loaded ? r->d.loaded_triggers : -1, 0);
		fig_add(fs, "restart_loaded_ms", "store loaded: time", "ms",
			r->d.loaded ? r->d.loaded_ms : -1, 1);
		fig_add(fs, "rss_restarted_kb", "RSS after restart", "kB",
			(double)r->rss_restarted, 0);
		fig_add(fs, "rss_restarted_per_trigger_b", "RSS after restart per trigger", "B",
			(double)(r->rss_restarted - r->rss_before) * 1024.0 / n, 1);
	}

	fig_section(fs, "events");
	fig_add(fs, "events_received", "received", "", (double)t->received, 0);
	fig_add(fs, "events_unique", "unique ids", "", (double)t->unique, 0);
	fig_add(fs, "missing", "missing", "", n - (double)t->unique, 0);
	fig_add(fs, "duplicates", "duplicates", "", (double)t->dups, 0);
	fig_add(fs, "early", "early (fired_at < due)", "", (double)t->early, 0);
	fig_add(fs, "early_visible", "early (visible < due)", "", (double)t->early_vis, 0);
	fig_add(fs, "non_success", "non-success status", "", (double)t->non_success, 0);
	fig_add(fs, "due_mismatch", "due_at_ms != submitted at_ms", "",
		(double)t->due_mismatch, 0);
	fig_add(fs, "malformed", "malformed events", "", (double)t->malformed, 0);
	fig_add(fs, "foreign", "events of other runs", "", (double)t->foreign, 0);
	int64_t vspan = t->vis_max - t->vis_min, fspan = t->fired_max - t->fired_min;
	double gaps = t->n_lat ? (double)(t->n_lat - 1) : 0;
	fig_add(fs, "visible_span_ms", "first to last visible", "ms", (double)vspan, 0);
	fig_add(fs, "events_per_s_visible", "events/s (stream ids)", "events/s",
		per_s(gaps, vspan), 0);
	fig_add(fs, "fired_span_ms", "first to last fired_at", "ms", (double)fspan, 0);
	fig_add(fs, "events_per_s_fired", "events/s (fired_at_ms)", "events/s",
		per_s(gaps, fspan), 0);
	fig_add(fs, "cpu_fire_pct", "CPU t0 to last event", "% of a core",
		t->n_lat ? 100 * per_s(cpu_fire, t->vis_max - r->t0) : 0, 1);
	fig_add(fs, "run_s", "whole run", "s", (double)(r->end_wall - r->submit_wall) / 1e3, 3);

	fig_section(fs, "lateness, fired_at_ms - due_at_ms");
	add_lateness(fs, "late_fired", "fired - due", t->lat_fired, t->n_lat);
	fig_section(fs, "lateness, visible (stream id ms) - due");
	add_lateness(fs, "late_visible", "visible - due", t->lat_vis, t->n_lat);

	bool pass = !r->consume_failed && t->unique == o->n && !t->dups && !t->early &&
		    !t->early_vis && !t->non_success && !t->malformed && !r->submit_errors &&
		    !stop_requested;
	fig_section(fs, "verdict");
	fig_add(fs, "pass", "all fired exactly once, none early", "", pass, -1);
	return pass;
}

int main(int argc, char **argv)
{
	static struct run r;
	if (parse_opts(argc, argv, &r.o))
		return 2;
	setvbuf(stdout, NULL, _IOLBF, 0);

	struct sigaction sa = { .sa_handler = on_signal, .sa_flags = SA_RESTART };
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	atexit(cleanup);

	int rc = setup(&r);
	if (rc)
		return rc;
	r.rss_before = rss_kb(r.tpid);
	r.cpu_start = cpu_s(r.tpid);
	r.cpu_first_life = -1;
	if (submit_all(&r) || wait_stored(&r))
		return 1;
	if (r.o.restart && r.all_stored && !stop_requested && restart_daemon(&r))
		return 1;

	r.cpu_fire0 = cpu_s(r.tpid);
	r.consume_failed = consume(r.c, r.ev_key, r.last_id, sizeof(r.last_id), &r.t, r.tag,
				   r.due, r.o.n, r.t0 + r.o.window_ms,
				   r.o.pid ? NULL : &r.d) != 0;
	r.cpu_end = cpu_s(r.tpid);
	r.end_wall = wall_ms();

	static struct figs fs;
	bool pass = report(&r, &fs);
	print_figs(&fs);
	if (r.t.first_bad[0])
		printf("  first problem: %s\n", r.t.first_bad);
	if (r.o.json_path && write_json(&fs, r.o.json_path))
		pass = false;

	redisFree(r.c);
	cleanup();
	if (r.d.thread_started)
		pthread_join(r.d.thread, NULL);
	if (r.d.tee)
		fclose(r.d.tee);
	free(r.due);
	free(r.t.seen);
	free(r.t.lat_fired);
	free(r.t.lat_vis);
	return pass ? 0 : 1;
}
