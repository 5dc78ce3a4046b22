/*
 * Wait-kind benchmark: many `redis`, `file` and `kafka` waits held by one
 * triggerd at once.
 *
 * Scenarios:
 *   redis  N waits (default 10,000) on distinct keys of a second, *watched*
 *          redis-server (loopback TCP, named connection BENCHWATCH): with
 *          keyspace notifications off (the keys are polled at the default
 *          interval) and on (--notify-keyspace-events KA), each run against
 *          a fresh triggerd. --redis-wait list|channel waits on lists
 *          (RPUSH) or pub/sub channels (PUBLISH) instead.
 *   file   N waits (default 10,000) on distinct literal files spread over D
 *          directories (default 100) made before the waits are submitted.
 *   kafka  T repeat triggers (default 1,000) on one topic of librdkafka's
 *          mock cluster, started in this process and named by the
 *          connection BENCHKAFKA; each trigger has a filter (the message key,
 *          or /run of the JSON value) that exactly 1/T of the messages pass.
 *          A producer thread offers R messages/s (default 50,000) for S
 *          seconds (default 10), each value carrying its produce time,
 *          after 1,000 warm-up messages no trigger matches. The mock broker
 *          holds a fetch that finds no data for the whole fetch.wait.max.ms
 *          (a real broker answers when data arrives), so triggerd's
 *          connection sets it to 10 ms (--fetch-wait-ms; librdkafka's 500
 *          ms default puts 0-500 ms of mock artefact into every latency).
 *
 * redis and file: trigger 0 is submitted and armed first, the rest after;
 * triggerd's RSS is read before any, after the first, once all are armed and
 * after a hold window (default 10 s, triggerd's CPU measured over it), and
 * its own accounting from GET /metrics (triggerd_trigger_bytes) and its
 * periodic "stats" log line. Then the conditions are made true at a paced
 * rate (default 2,000/s: SET / RPUSH / PUBLISH, or create + write + close of
 * the file); the wall time just before each action is the condition time.
 * latency = the millisecond of the event's stream entry id (when a worker
 * could first see it) minus the condition time's millisecond.
 * kafka: latency = visible minus the produce time in the message value.
 *
 * Correctness: every trigger (every message, for kafka) must give exactly
 * one `success` event, for the right trigger, and nothing else may be
 * posted; otherwise the exit status is 1.
 *
 * usage: bench_waits [--scenario redis|file|kafka|all] [--json FILE] ...
 *        (bench_waits --help lists every option and its default)
 * Needs redis-server in PATH; starts it and triggerd ($TRIGGERD_BIN, else
 * ./build/triggerd), and stops both.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <msgpack.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../tests/harness.h"

#define NS 1000000000LL
#define MAX_RESULTS 8
#define MAX_TD_ARGS 12
#define QUIET_MS 1000        /* after the last expected event: room for a duplicate */
#define STALL_MS 15000       /* the events stream did not grow for this long: give up */
#define SUBMIT_CHUNK 1000
#define TOPIC "bench"
#define WATCH_CONN "benchwatch"
#define KAFKA_CONN "benchkafka"

enum { SC_REDIS, SC_FILE, SC_KAFKA, SC_COUNT };
static const char *const sc_names[SC_COUNT] = {"redis", "file", "kafka"};

enum { W_KEY, W_LIST, W_CHANNEL, W_COUNT };
static const char *const wait_names[W_COUNT] = {"key", "list", "channel"};
/* What makes a wait's condition true, and the poll interval it defaults to. */
static const char *const wait_cmds[W_COUNT] = {"SET", "RPUSH", "PUBLISH"};
static const int wait_poll_ms[W_COUNT] = {1000, 200, 0};

struct opts {
	bool sc[SC_COUNT];
	int redis_n, file_n, rate, hold_s, file_dirs, redis_wait;
	bool notify[2];          /* [0] off (polled), [1] on */
	int kafka_triggers, kafka_rate, kafka_secs, kafka_parts, linger_ms, fetch_wait_ms;
	bool kafka_json;         /* filter on /run instead of the key */
	const char *json;
	const char *td_args[MAX_TD_ARGS];
	int ntd_args;
};

/* CPU seconds used so far. */
struct cpu {
	double td, redis, watched, self, busy;
	int64_t at_us;
};

/* CPU over a window: seconds per process, others = the rest of the machine. */
struct cpu_use {
	double secs, td, redis, watched, self, others;
};

struct result {
	char name[32];
	char what[200];
	int n;                   /* triggers */
	bool done;               /* measured to the end */
	bool ok;
	double submit_s;         /* first submission to all stored */
	long rss0_kb, rss1_kb, rss_armed_kb, rss_held_kb;
	long long trigger_bytes; /* GET /metrics; -1 unknown */
	double stats_bpt;        /* "stats" line bytes_per_trigger; -1 unknown */
	struct cpu_use hold, fire;
	double act_rate;         /* conditions made true per second, achieved */
	long long expected, events, missing, dups, stray, bad, wrong;
	long long nlat;
	int64_t p50, p90, p99, p999, max;
	int fswatch_polled;      /* "fswatch: polling directory" lines */
	/* kafka */
	long long produced, delivered, produce_failed, produce_err, queue_full, producer_lag;
	double offered, achieved, posted_window, posted_all;
};

struct bench {
	struct opts o;
	struct harness h;
	pid_t watch_pid;
	int watch_port;
	redisContext *wc;        /* to the watched server */
	struct result res[MAX_RESULTS];
	int nres;
};

static atomic_int stop_flag;

static void on_signal(int sig)
{
	(void)sig;
	atomic_store(&stop_flag, 1);
}

/* ---- clocks, /proc ----------------------------------------------------- */

static int64_t mono_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int64_t real_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void sleep_until_us(int64_t mono)
{
	struct timespec ts = {(time_t)(mono / 1000000), (long)(mono % 1000000) * 1000};
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR &&
	       !atomic_load(&stop_flag))
		;
}

/* Sleep @ms, or less when the run is interrupted. */
static void nap_ms(int ms)
{
	sleep_until_us(mono_us() + (int64_t)ms * 1000);
}

static double proc_cpu_s(pid_t pid)
{
	if (pid <= 0)
		return 0;
	char path[64], buf[1024];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return 0;
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	char *p = strrchr(buf, ')');
	unsigned long ut = 0, st = 0;
	/* fields after the comm: state(3) ... utime(14) stime(15) */
	if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut,
			 &st) != 2)
		return 0;
	return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static double self_cpu_s(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
	       (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

/* CPU seconds all processes have used, from /proc/stat (idle and iowait excluded). */
static double machine_busy_s(void)
{
	unsigned long long v[8] = {0};
	FILE *f = fopen("/proc/stat", "r");
	if (!f)
		return 0;
	int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2],
		       &v[3], &v[4], &v[5], &v[6], &v[7]);
	fclose(f);
	if (n != 8)
		return 0;
	return (double)(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / (double)sysconf(_SC_CLK_TCK);
}

static long rss_kb(pid_t pid)
{
	char path[64], line[256];
	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	FILE *f = fopen(path, "r");
	long kb = -1;
	while (f && fgets(line, sizeof(line), f))
		if (!strncmp(line, "VmRSS:", 6))
			kb = atol(line + 6);
	if (f)
		fclose(f);
	return kb;
}

static void cpu_take(const struct bench *b, struct cpu *c)
{
	c->td = proc_cpu_s(b->h.td_pid);
	c->redis = proc_cpu_s(b->h.redis_pid);
	c->watched = proc_cpu_s(b->watch_pid);
	c->self = self_cpu_s();
	c->busy = machine_busy_s();
	c->at_us = mono_us();
}

static void cpu_diff(const struct cpu *a, const struct cpu *z, struct cpu_use *u)
{
	u->secs = (double)(z->at_us - a->at_us) / 1e6;
	u->td = z->td - a->td;
	u->redis = z->redis - a->redis;
	u->watched = z->watched - a->watched;
	u->self = z->self - a->self;
	u->others = (z->busy - a->busy) - u->td - u->redis - u->watched - u->self;
	if (u->others < 0)
		u->others = 0;   /* tick rounding */
}

static void print_cpu(const char *label, const struct cpu_use *u, bool watched, const char *self)
{
	double s = u->secs > 0 ? u->secs : 1;
	printf("  %-38s triggerd %.2f s (%.1f%% of a core), its redis %.2f s", label, u->td,
	       100 * u->td / s, u->redis);
	if (watched)
		printf(", watched redis %.2f s", u->watched);
	printf(", %s %.2f s, others %.2f s, over %.1f s\n", self, u->self, u->others, u->secs);
}

/* ---- triggerd's own accounting ------------------------------------------ */

/* GET @path from 127.0.0.1:@port into @out (headers included). Bytes or -1. */
static ssize_t http_get(int port, const char *path, char *out, size_t len)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	struct timeval tv = {5, 0};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	char req[256];
	int rl = snprintf(req, sizeof(req), "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n", path);
	if (write(fd, req, (size_t)rl) != rl) {
		close(fd);
		return -1;
	}
	size_t got = 0;
	ssize_t n;
	while (got + 1 < len && (n = read(fd, out + got, len - 1 - got)) > 0)
		got += (size_t)n;
	out[got] = '\0';
	close(fd);
	return (ssize_t)got;
}

/* A metric's value from the /metrics text: "\n<name> <value>". -1 when absent. */
static long long metric(const char *text, const char *name)
{
	char needle[128];
	snprintf(needle, sizeof(needle), "\n%s ", name);
	const char *p = strstr(text, needle);
	return p ? atoll(p + strlen(needle)) : -1;
}

static long long td_metric(struct harness *h, const char *name)
{
	static char buf[65536];
	int port = harness_listen_port(h, "api");
	if (port <= 0 || http_get(port, "/metrics", buf, sizeof(buf)) <= 0)
		return -1;
	return metric(buf, name);
}

/* bytes_per_trigger of the last "stats" log line that counted @n triggers. */
static double stats_bytes_per_trigger(struct harness *h, int n)
{
	FILE *f = fopen(h->log, "r");
	if (!f)
		return -1;
	char line[8192], want[64];
	snprintf(want, sizeof(want), "\"triggers\":%d,", n);
	double v = -1;
	while (fgets(line, sizeof(line), f)) {
		const char *p;
		if (strstr(line, "\"msg\":\"stats\"") && strstr(line, want) &&
		    (p = strstr(line, "\"bytes_per_trigger\":")))
			v = atof(p + 20);
	}
	fclose(f);
	return v;
}

static int count_log(struct harness *h, const char *needle)
{
	FILE *f = fopen(h->log, "r");
	if (!f)
		return 0;
	char line[8192];
	int n = 0;
	while (fgets(line, sizeof(line), f))
		n += strstr(line, needle) != NULL;
	fclose(f);
	return n;
}

static void print_log_tail(const char *path)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return;
	char buf[3000];
	fseek(f, 0, SEEK_END);
	long sz = ftell(f);
	fseek(f, sz > (long)sizeof(buf) - 1 ? sz - (long)sizeof(buf) + 1 : 0, SEEK_SET);
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = '\0';
	fclose(f);
	fprintf(stderr, "--- last lines of %s ---\n%s\n", path, buf);
}

/* ---- events --------------------------------------------------------------- */

/* One event as the callbacks see it; pointers valid during the call only. */
struct evl {
	int64_t visible_ms;
	const char *id;
	size_t id_len;
	bool success;
	const msgpack_object *payload;   /* NULL when absent */
};

static const msgpack_object *mp_get(const msgpack_object *map, const char *key)
{
	if (!map || map->type != MSGPACK_OBJECT_MAP)
		return NULL;
	size_t kl = strlen(key);
	for (uint32_t i = 0; i < map->via.map.size; i++) {
		const msgpack_object *k = &map->via.map.ptr[i].key;
		if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == kl &&
		    !memcmp(k->via.str.ptr, key, kl))
			return &map->via.map.ptr[i].val;
	}
	return NULL;
}

static bool mp_str_is(const msgpack_object *o, const char *s)
{
	return o && o->type == MSGPACK_OBJECT_STR && o->via.str.size == strlen(s) &&
	       !memcmp(o->via.str.ptr, s, o->via.str.size);
}

static long long mp_int(const msgpack_object *o)
{
	if (o && o->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
		return (long long)o->via.u64;
	if (o && o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
		return (long long)o->via.i64;
	return -1;
}

/* Read every entry of td:events past the harness cursor, without blocking,
 * handing each to @fn. Returns the number read, -1 on a Redis error. */
static long long read_all(struct harness *h, void (*fn)(void *arg, const struct evl *e),
			  void *arg)
{
	long long total = 0;
	msgpack_unpacked up;
	msgpack_unpacked_init(&up);
	for (;;) {
		redisReply *r = redisCommand(h->c, "XREAD COUNT 10000 STREAMS td:events %s",
					     h->last_event);
		if (!r || r->type == REDIS_REPLY_ERROR) {
			if (r)
				freeReplyObject(r);
			total = -1;
			break;
		}
		if (r->type != REDIS_REPLY_ARRAY || r->elements != 1) {
			freeReplyObject(r);
			break;   /* nil: nothing more */
		}
		redisReply *entries = r->element[0]->element[1];
		for (size_t i = 0; i < entries->elements; i++) {
			redisReply *e = entries->element[i];
			struct evl ev = {.visible_ms = strtoll(e->element[0]->str, NULL, 10)};
			snprintf(h->last_event, sizeof(h->last_event), "%s", e->element[0]->str);
			redisReply *f = e->element[1];
			for (size_t j = 0; j + 1 < f->elements; j += 2) {
				size_t off = 0;
				const redisReply *v = f->element[j + 1];
				if (strcmp(f->element[j]->str, "event") ||
				    msgpack_unpack_next(&up, v->str, v->len, &off) !=
					    MSGPACK_UNPACK_SUCCESS)
					continue;
				const msgpack_object *id = mp_get(&up.data, "id");
				if (id && id->type == MSGPACK_OBJECT_STR) {
					ev.id = id->via.str.ptr;
					ev.id_len = id->via.str.size;
				}
				ev.success = mp_str_is(mp_get(&up.data, "status"), "success");
				ev.payload = mp_get(&up.data, "payload");
			}
			fn(arg, &ev);
			total++;
		}
		freeReplyObject(r);
	}
	msgpack_unpacked_destroy(&up);
	return total;
}

/* Wait until td:events holds @want entries, the stream has not grown for
 * @stall_ms, or the run is interrupted. Returns its last length. */
static long long wait_xlen(struct harness *h, long long want, int stall_ms)
{
	long long last = -1;
	int64_t grew = mono_us();
	while (!atomic_load(&stop_flag)) {
		long long n = redis_int(h, "XLEN td:events");
		if (n != last) {
			last = n;
			grew = mono_us();
		}
		if (n >= want || mono_us() - grew > (int64_t)stall_ms * 1000)
			break;
		sleep_ms(20);
	}
	return last;
}

/* The trigger number in "<prefix><digits>", or -1. */
static long id_index(const struct evl *e, const char *prefix, long n)
{
	size_t pl = strlen(prefix);
	if (!e->id || e->id_len <= pl || e->id_len > pl + 9 || memcmp(e->id, prefix, pl))
		return -1;
	long v = 0;
	for (size_t i = pl; i < e->id_len; i++) {
		if (e->id[i] < '0' || e->id[i] > '9')
			return -1;
		v = v * 10 + (e->id[i] - '0');
	}
	return v < n ? v : -1;
}

static int cmp64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return x < y ? -1 : x > y;
}

/* Nearest rank: the smallest value with at least @q of all at or below it. */
static int64_t rank(const int64_t *sorted, long long n, double q)
{
	long long i = (long long)(q * (double)n + 0.999999) - 1;
	return sorted[i < 0 ? 0 : i >= n ? n - 1 : i];
}

/* Percentiles of @lat (sorted here) into @r. */
static void percentiles(struct result *r, int64_t *lat, long long n)
{
	r->nlat = n;
	if (!n)
		return;
	qsort(lat, (size_t)n, sizeof(*lat), cmp64);
	r->p50 = rank(lat, n, 0.50);
	r->p90 = rank(lat, n, 0.90);
	r->p99 = rank(lat, n, 0.99);
	r->p999 = rank(lat, n, 0.999);
	r->max = lat[n - 1];
}

/* RSS growth per trigger, from before any trigger or from after the first
 * (which also pays for connections, watches or the consumer), to all armed. */
static double per_trigger(const struct result *r, bool marginal)
{
	if (r->n < 2)
		return 0;
	return marginal ? (r->rss_armed_kb - r->rss1_kb) * 1024.0 / (r->n - 1) :
			  (r->rss_armed_kb - r->rss0_kb) * 1024.0 / r->n;
}

/* ---- redis and file: submit, hold, make true, read back ------------------- */

/* Per-scenario hooks of the common flow. */
struct waits {
	struct bench *b;
	struct result *r;
	const char *prefix;      /* trigger ids: prefix + 6 digits */
	int n;
	/* the spec of trigger @i into @out */
	void (*spec)(const struct waits *w, int i, char *out, size_t len);
	/* true when the first @n triggers are armed, as far as can be seen */
	bool (*armed)(const struct waits *w, int n);
	/* make trigger @i's condition true; 0 or -1 */
	int (*act)(const struct waits *w, int i);
	const char *act_name;
	const char *dir;         /* file: the root of the directories */
	bool pubsub;             /* redis: armed means subscribed */
	int64_t *cond_us;        /* wall time before each act */
	unsigned char *seen;
	int64_t *lat;
	long long nlat;
};

static int submit_range(struct waits *w, int from, int to)
{
	char **docs = calloc((size_t)SUBMIT_CHUNK, sizeof(*docs));
	int rc = 0;
	for (int i = 0; i < SUBMIT_CHUNK; i++)
		docs[i] = malloc(1024);
	for (int i = from; i < to && !rc; i += SUBMIT_CHUNK) {
		int k = to - i < SUBMIT_CHUNK ? to - i : SUBMIT_CHUNK;
		for (int j = 0; j < k; j++)
			w->spec(w, i + j, docs[j], 1024);
		rc = submit_json_many(&w->b->h, docs, (size_t)k);
	}
	for (int i = 0; i < SUBMIT_CHUNK; i++)
		free(docs[i]);
	free(docs);
	return rc;
}

static void print_first_events(struct harness *h)
{
	struct event ev[4];
	strcpy(h->last_event, "0-0");
	int n = read_events(h, ev, 4, 1);
	for (int i = 0; i < n; i++)
		fprintf(stderr, "  event: %s %s %s\n", ev[i].id, ev[i].status, ev[i].error);
	strcpy(h->last_event, "0-0");
}

/* Wait until @n triggers are stored and armed (60 s at most). Nothing may
 * fire meanwhile: an event now is a rejection or an early firing. */
static int wait_armed(struct waits *w, int n)
{
	struct harness *h = &w->b->h;
	for (int i = 0; i < 6000 && !atomic_load(&stop_flag); i++) {
		if (redis_int(h, "XLEN td:events") > 0) {
			fprintf(stderr, "bench_waits: events before any condition was true:\n");
			print_first_events(h);
			return -1;
		}
		if (redis_int(h, "HLEN td:triggers") >= n && w->armed(w, n))
			return 0;
		sleep_ms(10);
	}
	fprintf(stderr, "bench_waits: after 60 s, %lld of %d triggers stored, %s\n",
		redis_int(h, "HLEN td:triggers"), n, w->armed(w, n) ? "armed" : "not all armed");
	return -1;
}

static void tally_cb(void *arg, const struct evl *e)
{
	struct waits *w = arg;
	long i = id_index(e, w->prefix, w->n);
	if (i < 0) {
		w->r->stray++;
		return;
	}
	if (!e->success)
		w->r->bad++;
	if (w->seen[i]++) {
		w->r->dups++;
		return;
	}
	if (!w->cond_us[i]) {
		w->r->wrong++;   /* fired before its condition was made true */
		return;
	}
	w->lat[w->nlat++] = e->visible_ms - w->cond_us[i] / 1000;
}

/* Conditions at the paced rate; false when interrupted or an act failed. */
static bool make_true(struct waits *w)
{
	int rate = w->b->o.rate;
	int64_t t0 = mono_us();
	for (int i = 0; i < w->n; i++) {
		if (atomic_load(&stop_flag))
			return false;
		sleep_until_us(t0 + (int64_t)i * 1000000 / rate);
		w->cond_us[i] = real_us();
		if (w->act(w, i) != 0) {
			fprintf(stderr, "bench_waits: %s %d failed\n", w->act_name, i);
			return false;
		}
	}
	double secs = (double)(mono_us() - t0) / 1e6;
	w->r->act_rate = secs > 0 ? w->n / secs : 0;
	return true;
}

/* The common flow after triggerd and the watched side are up. 0, or -1
 * when the run could not be done (not a correctness failure). */
static int run_waits(struct waits *w)
{
	struct bench *b = w->b;
	struct harness *h = &b->h;
	struct result *r = w->r;
	r->n = w->n;
	r->expected = w->n;
	r->rss0_kb = rss_kb(h->td_pid);
	/* The first alone: connections, watches and the like are made for it. */
	if (submit_range(w, 0, 1) != 0 || wait_armed(w, 1) != 0)
		return -1;
	sleep_ms(300);
	r->rss1_kb = rss_kb(h->td_pid);
	int64_t t1 = mono_us();
	if (submit_range(w, 1, w->n) != 0 || wait_armed(w, w->n) != 0)
		return -1;
	r->submit_s = (double)(mono_us() - t1) / 1e6;
	sleep_ms(1000);   /* first checks done, allocations settled */
	r->rss_armed_kb = rss_kb(h->td_pid);
	struct cpu c0, c1, c2;
	cpu_take(b, &c0);
	nap_ms(b->o.hold_s * 1000);
	cpu_take(b, &c1);
	cpu_diff(&c0, &c1, &r->hold);
	r->rss_held_kb = rss_kb(h->td_pid);
	r->trigger_bytes = td_metric(h, "triggerd_trigger_bytes");
	r->stats_bpt = stats_bytes_per_trigger(h, w->n);
	if (redis_int(h, "XLEN td:events") != 0) {
		fprintf(stderr, "bench_waits: events while holding, before any condition:\n");
		print_first_events(h);
		return -1;
	}

	w->cond_us = calloc((size_t)w->n, sizeof(*w->cond_us));
	w->seen = calloc((size_t)w->n, 1);
	w->lat = calloc((size_t)w->n, sizeof(*w->lat));
	cpu_take(b, &c0);
	if (!make_true(w))
		return -1;
	wait_xlen(h, w->n, STALL_MS);
	cpu_take(b, &c2);
	cpu_diff(&c0, &c2, &r->fire);
	sleep_ms(QUIET_MS);
	strcpy(h->last_event, "0-0");
	r->events = read_all(h, tally_cb, w);
	for (int i = 0; i < w->n; i++)
		r->missing += !w->seen[i];
	percentiles(r, w->lat, w->nlat);
	r->done = true;
	r->ok = r->events == w->n && !r->missing && !r->dups && !r->stray && !r->bad && !r->wrong;
	return 0;
}

/* RSS at each step, per trigger, and triggerd's own accounting. */
static void print_memory(const struct result *r, const char *first_note)
{
	printf("  %-38s %.1f MB before, %.1f MB with the first%s%s%s, %.1f MB all armed,"
	       " %.1f MB after the hold\n", "triggerd RSS", r->rss0_kb / 1024.0,
	       r->rss1_kb / 1024.0, first_note ? " (" : "", first_note ? first_note : "",
	       first_note ? ")" : "", r->rss_armed_kb / 1024.0, r->rss_held_kb / 1024.0);
	printf("  %-38s %.0f B (all armed - before) / N; %.0f B (all armed - with the first)"
	       " / (N-1)\n", "RSS growth per trigger", per_trigger(r, false), per_trigger(r, true));
	printf("  %-38s trigger allocations %.1f B (/metrics)", "triggerd's accounting per trigger",
	       r->trigger_bytes >= 0 ? (double)r->trigger_bytes / r->n : -1.0);
	if (r->stats_bpt >= 0)
		printf(", %.1f B with the id table (stats line)", r->stats_bpt);
	printf("\n");
}

static void print_waits_result(const struct result *r, const char *act_name, int rate,
			       bool watched)
{
	printf("  %-38s %.2f s (%.0f/s), trigger 0 first, then %d pipelined\n",
	       "submitted -> all stored and armed", r->submit_s,
	       r->submit_s > 0 ? (r->n - 1) / r->submit_s : 0, r->n - 1);
	print_memory(r, NULL);
	print_cpu("cpu while holding", &r->hold, watched, "bench");
	printf("  %-38s %d x %s, offered %d/s, achieved %.0f/s\n", "conditions made true", r->n,
	       act_name, rate, r->act_rate);
	print_cpu("cpu, first condition to last event", &r->fire, watched, "bench");
	printf("  %-38s %lld events for %d triggers: %lld missing, %lld duplicate, %lld not"
	       " success, %lld early, %lld stray -> %s\n", "events", r->events, r->n, r->missing,
	       r->dups, r->bad, r->wrong, r->stray, r->ok ? "OK" : "FAILED");
	if (r->nlat)
		printf("  %-38s %lld / %lld / %lld / %lld / %lld ms\n",
		       "cond -> visible p50/p90/p99/p99.9/max", (long long)r->p50,
		       (long long)r->p90, (long long)r->p99, (long long)r->p999, (long long)r->max);
}

/* ---- redis ----------------------------------------------------------------- */

static int free_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t al = sizeof(a);
	if (fd < 0)
		return -1;
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
	    getsockname(fd, (struct sockaddr *)&a, &al) != 0) {
		close(fd);
		return -1;
	}
	close(fd);
	return ntohs(a.sin_port);
}

/* The watched redis-server on a loopback port, notifications KA or off. */
static int watch_start(struct bench *b, bool notify)
{
	b->watch_port = free_port();
	pid_t pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		char port[16], logf[400];
		snprintf(port, sizeof(port), "%d", b->watch_port);
		snprintf(logf, sizeof(logf), "%s/watched.log", b->h.dir);
		const char *args[] = {"redis-server", "--port", port, "--bind", "127.0.0.1",
				      "--save", "", "--appendonly", "no", "--dir", b->h.dir,
				      "--logfile", logf, "--notify-keyspace-events", "KA", NULL};
		if (!notify)
			args[13] = NULL;   /* the server's default: off */
		execvp("redis-server", (char *const *)args);
		_exit(127);
	}
	b->watch_pid = pid;
	for (int i = 0; i < 200; i++) {
		b->wc = redisConnect("127.0.0.1", b->watch_port);
		if (b->wc && !b->wc->err) {
			redisReply *r = redisCommand(b->wc, "PING");
			bool ok = r && r->type == REDIS_REPLY_STATUS;
			if (r)
				freeReplyObject(r);
			if (ok)
				return 0;
		}
		if (b->wc)
			redisFree(b->wc);
		b->wc = NULL;
		sleep_ms(25);
	}
	return -1;
}

static void watch_stop(struct bench *b)
{
	if (b->wc)
		redisFree(b->wc);
	b->wc = NULL;
	if (b->watch_pid > 0) {
		kill(b->watch_pid, SIGTERM);
		waitpid(b->watch_pid, NULL, 0);
	}
	b->watch_pid = 0;
}

static void redis_spec(const struct waits *w, int i, char *out, size_t len)
{
	static const char *const arg[W_COUNT] = {"key", "list", "channels"};
	int wt = w->b->o.redis_wait;
	snprintf(out, len, "{\"id\":\"%s%06d\",\"kind\":\"redis\",\"args\":{\"conn\":\"" WATCH_CONN
		 "\",\"%s\":\"bw:%s:%06d\"}}", w->prefix, i, arg[wt], wait_names[wt], i);
}

/* Channels of ours the watched server has subscribers on. */
static long long our_channels(struct bench *b)
{
	const char *pat = b->o.redis_wait == W_CHANNEL ? "bw:channel:*" : "__keyspace@0__:bw:*";
	redisReply *r = redisCommand(b->wc, "PUBSUB CHANNELS %s", pat);
	long long n = r && r->type == REDIS_REPLY_ARRAY ? (long long)r->elements : -1;
	if (r)
		freeReplyObject(r);
	return n;
}

static bool redis_armed(const struct waits *w, int n)
{
	/* Polled keys and lists are checked as they start; subscribed ones
	 * are armed once the server has the subscription. */
	if (w->pubsub)
		return our_channels(w->b) >= n;
	return td_metric(&w->b->h, "triggerd_triggers{kind=\"redis\"}") >= n;
}

static int redis_act(const struct waits *w, int i)
{
	int wt = w->b->o.redis_wait;
	char name[64];
	snprintf(name, sizeof(name), "bw:%s:%06d", wait_names[wt], i);
	redisReply *r = redisCommand(w->b->wc, "%s %s x", wait_cmds[wt], name);
	/* PUBLISH answers the receivers: 0 would be a message nobody saw. */
	bool ok = r && r->type == REDIS_REPLY_INTEGER ? (wt != W_CHANNEL || r->integer >= 1) :
						       r && r->type == REDIS_REPLY_STATUS;
	if (r)
		freeReplyObject(r);
	return ok ? 0 : -1;
}

static int start_td(struct bench *b)
{
	const char *args[MAX_TD_ARGS + 4] = {"--log-level", "info"};
	int n = 2;
	for (int i = 0; i < b->o.ntd_args; i++)
		args[n++] = b->o.td_args[i];
	args[n] = NULL;
	if (harness_td_start(&b->h, args) != 0) {
		fprintf(stderr, "bench_waits: cannot start triggerd (%s)\n",
			getenv("TRIGGERD_BIN"));
		return -1;
	}
	return 0;
}

static struct result *new_result(struct bench *b, const char *name)
{
	struct result *r = &b->res[b->nres++];
	memset(r, 0, sizeof(*r));
	snprintf(r->name, sizeof(r->name), "%s", name);
	r->trigger_bytes = -1;
	r->stats_bpt = -1;
	return r;
}

static void finish_run(struct bench *b, struct waits *w)
{
	if (w) {
		free(w->cond_us);
		free(w->seen);
		free(w->lat);
	}
	if (b->nres && !b->res[b->nres - 1].ok && b->h.dir[0])
		print_log_tail(b->h.log);
	watch_stop(b);
	harness_stop(&b->h);
}

static int run_redis(struct bench *b, bool notify)
{
	int wt = b->o.redis_wait;
	char name[32];
	snprintf(name, sizeof(name), "redis-%s%s", wait_names[wt],
		 wt == W_CHANNEL ? "" : notify ? "-notify" : "-poll");
	struct result *r = new_result(b, name);
	char mode[80] = "";
	if (wt != W_CHANNEL && notify)
		snprintf(mode, sizeof(mode), ", keyspace notifications on (KA): subscribed");
	else if (wt != W_CHANNEL)
		snprintf(mode, sizeof(mode), ", keyspace notifications off: polled every %d ms"
			 " (default)", wait_poll_ms[wt]);
	snprintf(r->what, sizeof(r->what), "%d %s waits on distinct %ss, watched redis-server on"
		 " loopback TCP%s", b->o.redis_n, wait_names[wt], wait_names[wt], mode);
	printf("\n== %s: %s ==\n", r->name, r->what);
	struct waits w = {.b = b, .r = r, .prefix = "rw-", .n = b->o.redis_n, .spec = redis_spec,
			  .armed = redis_armed, .act = redis_act, .act_name = wait_cmds[wt],
			  .pubsub = notify || wt == W_CHANNEL};
	int rc = -1;
	if (harness_redis_start(&b->h, false) != 0) {
		fprintf(stderr, "bench_waits: cannot start redis-server\n");
		goto out;
	}
	if (watch_start(b, notify) != 0) {
		fprintf(stderr, "bench_waits: cannot start the watched redis-server\n");
		goto out;
	}
	char conn[128];
	snprintf(conn, sizeof(conn), "{\"conn_type\":\"redis\",\"host\":\"127.0.0.1\",\"port\":%d}",
		 b->watch_port);
	setenv("AIRFLOW_CONN_BENCHWATCH", conn, 1);
	if (start_td(b) != 0 || run_waits(&w) != 0)
		goto out;
	print_waits_result(r, wait_cmds[wt], b->o.rate, true);
	rc = 0;
out:
	finish_run(b, &w);
	return rc;
}

/* ---- file ------------------------------------------------------------------ */

static void file_path(const struct waits *w, int i, char *out, size_t len)
{
	snprintf(out, len, "%s/d%03d/f%06d", w->dir, i % w->b->o.file_dirs, i);
}

static void file_spec(const struct waits *w, int i, char *out, size_t len)
{
	char path[512];
	file_path(w, i, path, sizeof(path));
	snprintf(out, len, "{\"id\":\"%s%06d\",\"kind\":\"file\",\"args\":{\"path\":\"%s\"}}",
		 w->prefix, i, path);
}

static bool file_armed(const struct waits *w, int n)
{
	return td_metric(&w->b->h, "triggerd_triggers{kind=\"file\"}") >= n;
}

static int file_act(const struct waits *w, int i)
{
	char path[512];
	file_path(w, i, path, sizeof(path));
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
	if (fd < 0)
		return -1;
	static const char data[] = "bench_waits file\n";
	ssize_t n = write(fd, data, sizeof(data) - 1);
	return close(fd) == 0 && n == (ssize_t)sizeof(data) - 1 ? 0 : -1;
}

static int run_file(struct bench *b)
{
	struct result *r = new_result(b, "file");
	snprintf(r->what, sizeof(r->what), "%d waits on distinct literal files in %d director%s"
		 " (inotify), made before the waits", b->o.file_n, b->o.file_dirs,
		 b->o.file_dirs == 1 ? "y" : "ies");
	printf("\n== %s: %s ==\n", r->name, r->what);
	char root[320];
	struct waits w = {.b = b, .r = r, .prefix = "fw-", .n = b->o.file_n, .spec = file_spec,
			  .armed = file_armed, .act = file_act, .act_name = "create+write+close",
			  .dir = root};
	int rc = -1;
	if (harness_redis_start(&b->h, false) != 0) {
		fprintf(stderr, "bench_waits: cannot start redis-server\n");
		goto out;
	}
	snprintf(root, sizeof(root), "%s/files", b->h.dir);
	if (mkdir(root, 0700) != 0)
		goto out;
	for (int d = 0; d < b->o.file_dirs; d++) {
		char dir[400];
		snprintf(dir, sizeof(dir), "%s/d%03d", root, d);
		if (mkdir(dir, 0700) != 0) {
			perror(dir);
			goto out;
		}
	}
	if (start_td(b) != 0 || run_waits(&w) != 0)
		goto out;
	r->fswatch_polled = count_log(&b->h, "fswatch: polling directory");
	if (r->fswatch_polled)
		printf("  WARNING: %d directories polled instead of watched (see the log)\n",
		       r->fswatch_polled);
	print_waits_result(r, "create+write+close", b->o.rate, false);
	rc = 0;
out:
	finish_run(b, &w);
	return rc;
}

/* ---- kafka ----------------------------------------------------------------- */

struct producer {
	rd_kafka_t *rk;
	int rate, secs, ntrig;
	atomic_llong sent, delivered, failed, produce_err, queue_full;
	long long max_behind;    /* most messages due and not yet produced */
	int64_t t0_mono, t1_mono;
};

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
	(void)rk;
	struct producer *p = opaque;
	if (m->err)
		atomic_fetch_add(&p->failed, 1);
	else
		atomic_fetch_add(&p->delivered, 1);
}

/* Offer p->rate messages/s for p->secs: every millisecond, what is due by
 * then. A producer that falls behind catches up in bursts, for at most 10 s
 * past the window; the achieved rate is over the time it really took. */
static void *produce_main(void *arg)
{
	struct producer *p = arg;
	long long total = (long long)p->rate * p->secs, sent = 0;
	p->t0_mono = mono_us();
	int64_t stop = p->t0_mono + ((int64_t)p->secs + 10) * 1000000;
	for (int64_t now; sent < total && (now = mono_us()) < stop && !atomic_load(&stop_flag);) {
		long long due = (now - p->t0_mono) * p->rate / 1000000;
		if (due > total)
			due = total;
		if (due - sent > p->max_behind)
			p->max_behind = due - sent;
		while (sent < due) {
			char key[16], val[128];
			int k = (int)(sent % p->ntrig);
			snprintf(key, sizeof(key), "k%06d", k);
			int vl = snprintf(val, sizeof(val),
					  "{\"run\":\"r%06d\",\"seq\":%lld,\"t_us\":%lld}", k, sent,
					  (long long)real_us());
			rd_kafka_resp_err_t err = rd_kafka_producev(
				p->rk, RD_KAFKA_V_TOPIC(TOPIC), RD_KAFKA_V_KEY(key, strlen(key)),
				RD_KAFKA_V_VALUE(val, (size_t)vl),
				RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
			if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
				atomic_fetch_add(&p->queue_full, 1);
				rd_kafka_poll(p->rk, 1);
				break;
			}
			if (err) {
				/* Not in the topic: retried next millisecond. */
				atomic_fetch_add(&p->produce_err, 1);
				break;
			}
			atomic_store(&p->sent, ++sent);
		}
		rd_kafka_poll(p->rk, 0);
		sleep_until_us(now + 1000);
	}
	p->t1_mono = mono_us();
	rd_kafka_flush(p->rk, 60000);
	return NULL;
}

struct ktally {
	struct result *r;
	int ntrig;
	long long nmsg;
	unsigned char *seen;     /* per message seq */
	int64_t *lat;
	long long nlat;
	int64_t *by_seq;         /* latency per message seq */
	int64_t first_vis, last_vis;
};

static void kafka_cb(void *arg, const struct evl *e)
{
	struct ktally *k = arg;
	long t = id_index(e, "kw-", k->ntrig);
	const msgpack_object *v = mp_get(e->payload, "value");
	long long seq = mp_int(mp_get(v, "seq")), tus = mp_int(mp_get(v, "t_us"));
	if (t < 0 || seq < 0 || seq >= k->nmsg || tus < 0) {
		k->r->stray++;
		return;
	}
	if (!e->success)
		k->r->bad++;
	if (seq % k->ntrig != t)
		k->r->wrong++;   /* matched by a trigger whose filter it does not pass */
	if (k->seen[seq]++) {
		k->r->dups++;
		return;
	}
	if (!k->first_vis || e->visible_ms < k->first_vis)
		k->first_vis = e->visible_ms;
	if (e->visible_ms > k->last_vis)
		k->last_vis = e->visible_ms;
	k->lat[k->nlat++] = k->by_seq[seq] = e->visible_ms - tus / 1000;
}

static void kafka_spec(const struct waits *w, int i, char *out, size_t len)
{
	char filter[96];
	if (w->b->o.kafka_json)
		snprintf(filter, sizeof(filter),
			 "\"json_pointer\":\"/run\",\"equals\":\"r%06d\"", i);
	else
		snprintf(filter, sizeof(filter), "\"key\":\"k%06d\"", i);
	snprintf(out, len, "{\"id\":\"%s%06d\",\"kind\":\"kafka\",\"repeat\":true,\"args\":{"
		 "\"conn\":\"" KAFKA_CONN "\",\"topics\":[\"" TOPIC "\"],%s}}", w->prefix, i,
		 filter);
}

/* The consumer, made for the first trigger, has joined the group; the
 * others only join its index. */
static bool kafka_armed(const struct waits *w, int n)
{
	return n > 1 || log_contains(&w->b->h, "kafka partitions assigned");
}

/* Messages no trigger matches, so that the producer has the topic's
 * metadata and its connection, and triggerd's consumer is fetching, before
 * the measured window (the first produce otherwise waits for them). */
static int kafka_warm_up(struct producer *p)
{
	for (int i = 0; i < 1000; i++) {
		static const char val[] = "{\"run\":\"warm-up\"}";
		rd_kafka_resp_err_t err = rd_kafka_producev(
			p->rk, RD_KAFKA_V_TOPIC(TOPIC), RD_KAFKA_V_KEY("warm-up", 7),
			RD_KAFKA_V_VALUE((void *)val, sizeof(val) - 1),
			RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
		if (err)
			return -1;
	}
	if (rd_kafka_flush(p->rk, 10000) != RD_KAFKA_RESP_ERR_NO_ERROR)
		return -1;
	atomic_store(&p->delivered, 0);
	sleep_ms(1000);
	return 0;
}

/* Produce for the configured time, printing a line per second. */
static int kafka_load(struct bench *b, struct producer *p, struct result *r)
{
	pthread_t thr;
	struct cpu c0, c1;
	long long x0 = redis_int(&b->h, "XLEN td:events");
	cpu_take(b, &c0);
	if (pthread_create(&thr, NULL, produce_main, p) != 0)
		return -1;
	printf("  %-6s %10s %10s %10s\n", "second", "produced", "posted", "behind");
	long long last_sent = 0, last_x = x0;
	for (int s = 1; s <= p->secs && !atomic_load(&stop_flag); s++) {
		sleep_until_us(c0.at_us + (int64_t)s * 1000000);
		long long sent = atomic_load(&p->sent), x = redis_int(&b->h, "XLEN td:events");
		printf("  %-6d %10lld %10lld %10lld\n", s, sent - last_sent, x - last_x,
		       sent - (x - x0));
		last_sent = sent;
		last_x = x;
	}
	pthread_join(thr, NULL);
	long long x_end = redis_int(&b->h, "XLEN td:events");
	r->produced = atomic_load(&p->sent);
	r->delivered = atomic_load(&p->delivered);
	r->produce_failed = atomic_load(&p->failed);
	r->produce_err = atomic_load(&p->produce_err);
	r->queue_full = atomic_load(&p->queue_full);
	r->producer_lag = p->max_behind;
	double win = (double)(p->t1_mono - p->t0_mono) / 1e6;
	r->offered = p->rate;
	r->achieved = win > 0 ? r->produced / win : 0;
	r->posted_window = win > 0 ? (x_end - x0) / win : 0;
	r->expected = r->delivered;
	wait_xlen(&b->h, r->expected, STALL_MS);
	cpu_take(b, &c1);
	cpu_diff(&c0, &c1, &r->fire);
	return 0;
}

/* Latency by the second a message was due to be produced (seq / rate). */
static void print_kafka_seconds(const struct ktally *k, int rate)
{
	int64_t *v = malloc(sizeof(*v) * (size_t)rate);
	printf("  %-6s %10s %10s %10s %10s   (produce -> visible, ms, by produce second)\n",
	       "second", "events", "p50", "p99", "max");
	for (long long s0 = 0; v && s0 < k->nmsg; s0 += rate) {
		long long n = 0;
		for (long long i = s0; i < s0 + rate && i < k->nmsg; i++)
			if (k->seen[i])
				v[n++] = k->by_seq[i];
		if (!n)
			continue;
		qsort(v, (size_t)n, sizeof(*v), cmp64);
		printf("  %-6lld %10lld %10lld %10lld %10lld\n", s0 / rate + 1, n,
		       (long long)rank(v, n, 0.5), (long long)rank(v, n, 0.99),
		       (long long)v[n - 1]);
	}
	free(v);
}

/* The mock cluster (its own handle) with the topic, and the producer. */
struct kcluster {
	rd_kafka_t *mrk;
	rd_kafka_mock_cluster_t *mc;
	const char *bootstraps;
};

static int kafka_cluster_start(const struct opts *o, struct kcluster *kc, struct producer *p)
{
	char err[256], linger[16];
	rd_kafka_conf_t *c = rd_kafka_conf_new();
	rd_kafka_conf_set(c, "log_level", "0", err, sizeof(err));
	if (!(kc->mrk = rd_kafka_new(RD_KAFKA_PRODUCER, c, err, sizeof(err))) ||
	    !(kc->mc = rd_kafka_mock_cluster_new(kc->mrk, 1)) ||
	    rd_kafka_mock_topic_create(kc->mc, TOPIC, o->kafka_parts, 1) != 0) {
		fprintf(stderr, "bench_waits: mock cluster: %s\n", kc->mrk ? "failed" : err);
		return -1;
	}
	kc->bootstraps = rd_kafka_mock_cluster_bootstraps(kc->mc);
	snprintf(linger, sizeof(linger), "%d", o->linger_ms);
	c = rd_kafka_conf_new();
	if (rd_kafka_conf_set(c, "bootstrap.servers", kc->bootstraps, err, sizeof(err)) ||
	    rd_kafka_conf_set(c, "linger.ms", linger, err, sizeof(err)) ||
	    rd_kafka_conf_set(c, "queue.buffering.max.messages", "1000000", err, sizeof(err))) {
		fprintf(stderr, "bench_waits: producer conf: %s\n", err);
		rd_kafka_conf_destroy(c);
		return -1;
	}
	rd_kafka_conf_set_dr_msg_cb(c, dr_cb);
	rd_kafka_conf_set_opaque(c, p);
	if (!(p->rk = rd_kafka_new(RD_KAFKA_PRODUCER, c, err, sizeof(err)))) {
		fprintf(stderr, "bench_waits: producer: %s\n", err);
		return -1;
	}
	return 0;
}

static void kafka_cluster_stop(struct kcluster *kc, struct producer *p)
{
	if (p->rk)
		rd_kafka_destroy(p->rk);
	if (kc->mc)
		rd_kafka_mock_cluster_destroy(kc->mc);
	if (kc->mrk)
		rd_kafka_destroy(kc->mrk);
}

/* triggerd's named connection to the cluster. As in the tests, a short
 * session timeout, so that the group forms quickly. The mock broker answers
 * a fetch that finds no data only after the whole fetch.wait.max.ms (a real
 * broker answers as soon as data arrives), hence --fetch-wait-ms. */
static void kafka_conn(const struct opts *o, const char *bootstraps)
{
	char conn[512], fw[48] = "";
	if (o->fetch_wait_ms >= 0)
		snprintf(fw, sizeof(fw), ",\"fetch.wait.max.ms\":%d", o->fetch_wait_ms);
	snprintf(conn, sizeof(conn), "{\"conn_type\":\"kafka\",\"extra\":{"
		 "\"bootstrap.servers\":\"%s\",\"session.timeout.ms\":3000,"
		 "\"heartbeat.interval.ms\":300%s}}", bootstraps, fw);
	setenv("AIRFLOW_CONN_BENCHKAFKA", conn, 1);
}

/* Submit the triggers (the first alone: the consumer is made for it and
 * joins the group), warm up, hold. */
static int kafka_arm(struct bench *b, struct producer *p, struct result *r)
{
	struct waits w = {.b = b, .r = r, .prefix = "kw-", .n = b->o.kafka_triggers,
			  .spec = kafka_spec, .armed = kafka_armed};
	r->n = w.n;
	r->rss0_kb = rss_kb(b->h.td_pid);
	if (submit_range(&w, 0, 1) != 0 || wait_armed(&w, 1) != 0)
		return -1;
	sleep_ms(300);
	r->rss1_kb = rss_kb(b->h.td_pid);
	int64_t t1 = mono_us();
	if (submit_range(&w, 1, w.n) != 0 || wait_armed(&w, w.n) != 0)
		return -1;
	r->submit_s = (double)(mono_us() - t1) / 1e6;
	sleep_ms(1000);
	r->rss_armed_kb = rss_kb(b->h.td_pid);
	if (kafka_warm_up(p) != 0) {
		fprintf(stderr, "bench_waits: warm-up messages not delivered\n");
		return -1;
	}
	struct cpu c0, c1;
	cpu_take(b, &c0);
	nap_ms(b->o.hold_s * 1000);
	cpu_take(b, &c1);
	cpu_diff(&c0, &c1, &r->hold);
	r->rss_held_kb = rss_kb(b->h.td_pid);
	r->trigger_bytes = td_metric(&b->h, "triggerd_trigger_bytes");
	r->stats_bpt = stats_bytes_per_trigger(&b->h, r->n);
	return atomic_load(&stop_flag) ? -1 : 0;
}

static void print_kafka_result(const struct result *r)
{
	printf("  %-38s offered %.0f/s, achieved %.0f/s (%lld produced, %lld delivered, %lld"
	       " delivery failures,\n  %-38s %lld produce errors, %lld queue-full waits)\n",
	       "produce rate", r->offered, r->achieved, r->produced, r->delivered,
	       r->produce_failed, "", r->produce_err, r->queue_full);
	printf("  %-38s at most %lld messages (%.1f ms) behind its schedule\n", "producer",
	       r->producer_lag, r->producer_lag * 1000.0 / r->offered);
	printf("  %-38s %.0f/s during the produce window; %.0f/s first to last event\n",
	       "events posted", r->posted_window, r->posted_all);
	print_cpu("cpu, first message to last event", &r->fire, false, "bench+mock+producer");
	printf("  %-38s %lld events for %lld messages: %lld missing, %lld duplicate, %lld not"
	       " success,\n  %-38s %lld wrong trigger, %lld stray -> %s\n", "events", r->events,
	       r->delivered, r->missing, r->dups, r->bad, "", r->wrong, r->stray,
	       r->ok ? "OK" : "FAILED");
	if (r->nlat)
		printf("  %-38s %lld / %lld / %lld / %lld / %lld ms\n",
		       "produce -> visible p50/p90/p99/p99.9/max", (long long)r->p50,
		       (long long)r->p90, (long long)r->p99, (long long)r->p999, (long long)r->max);
}

static int run_kafka(struct bench *b)
{
	const struct opts *o = &b->o;
	struct result *r = new_result(b, "kafka");
	char fw_text[16] = "500 (default)";
	if (o->fetch_wait_ms >= 0)
		snprintf(fw_text, sizeof(fw_text), "%d", o->fetch_wait_ms);
	snprintf(r->what, sizeof(r->what), "%d repeat triggers on one %d-partition topic, filter"
		 " %s, %d msg/s offered for %d s, producer linger.ms %d, triggerd fetch.wait.max.ms"
		 " %s, mock cluster in this process", o->kafka_triggers, o->kafka_parts,
		 o->kafka_json ? "json_pointer /run" : "key", o->kafka_rate, o->kafka_secs,
		 o->linger_ms, fw_text);
	printf("\n== kafka: %s ==\n", r->what);
	int rc = -1;
	struct kcluster kc = {0};
	struct producer p = {.rate = o->kafka_rate, .secs = o->kafka_secs,
			     .ntrig = o->kafka_triggers};
	struct ktally k = {.r = r, .ntrig = o->kafka_triggers};
	if (kafka_cluster_start(o, &kc, &p) != 0)
		goto out;
	kafka_conn(o, kc.bootstraps);
	if (harness_redis_start(&b->h, false) != 0 || start_td(b) != 0 ||
	    kafka_arm(b, &p, r) != 0)
		goto out;
	printf("  %-38s %.2f s for %d (after the first)\n", "submitted -> all stored",
	       r->submit_s, r->n - 1);
	print_memory(r, "consumer made");
	print_cpu("cpu while holding (no messages)", &r->hold, false, "bench+mock");

	if (kafka_load(b, &p, r) != 0)
		goto out;
	nap_ms(QUIET_MS);
	k.nmsg = r->produced;
	k.seen = calloc((size_t)k.nmsg + 1, 1);
	k.lat = calloc((size_t)k.nmsg + 1, sizeof(*k.lat));
	k.by_seq = calloc((size_t)k.nmsg + 1, sizeof(*k.by_seq));
	strcpy(b->h.last_event, "0-0");
	r->events = read_all(&b->h, kafka_cb, &k);
	for (long long i = 0; i < k.nmsg; i++)
		r->missing += !k.seen[i];
	print_kafka_seconds(&k, o->kafka_rate);
	percentiles(r, k.lat, k.nlat);
	r->done = true;
	if (k.last_vis > k.first_vis)
		r->posted_all = (double)k.nlat * 1000.0 / (double)(k.last_vis - k.first_vis);
	r->ok = r->events == r->expected && r->produced == r->delivered && !r->missing &&
		!r->dups && !r->stray && !r->bad && !r->wrong;
	print_kafka_result(r);
	rc = 0;
out:
	if (!r->ok && b->h.dir[0])
		print_log_tail(b->h.log);
	/* triggerd first: it talks to the cluster. */
	harness_stop(&b->h);
	kafka_cluster_stop(&kc, &p);
	free(k.seen);
	free(k.lat);
	free(k.by_seq);
	return rc;
}

/* ---- output ------------------------------------------------------------------ */

static void json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			fprintf(f, "\\%c", *s);
		else if ((unsigned char)*s < 0x20)
			fprintf(f, "\\u%04x", *s);
		else
			fputc(*s, f);
	}
	fputc('"', f);
}

static void json_cpu(FILE *f, const char *name, const struct cpu_use *u)
{
	fprintf(f, ",\"%s\":{\"secs\":%.3f,\"triggerd\":%.3f,\"redis\":%.3f,\"watched\":%.3f,"
		   "\"bench\":%.3f,\"others\":%.3f}", name, u->secs, u->td, u->redis, u->watched,
		u->self, u->others);
}

static void json_result(FILE *f, const struct result *r)
{
	fputs("{\"name\":", f);
	json_str(f, r->name);
	fputs(",\"what\":", f);
	json_str(f, r->what);
	fprintf(f, ",\"done\":%s,\"ok\":%s,\"triggers\":%d,\"submit_s\":%.3f,"
		   "\"rss_kb\":{\"before\":%ld,\"first\":%ld,\"armed\":%ld,\"held\":%ld},"
		   "\"trigger_bytes\":%lld,\"stats_bytes_per_trigger\":%.1f",
		r->done ? "true" : "false", r->ok ? "true" : "false", r->n, r->submit_s,
		r->rss0_kb, r->rss1_kb, r->rss_armed_kb, r->rss_held_kb, r->trigger_bytes,
		r->stats_bpt);
	json_cpu(f, "cpu_hold", &r->hold);
	json_cpu(f, "cpu_fire", &r->fire);
	fprintf(f, ",\"expected\":%lld,\"events\":%lld,\"missing\":%lld,\"duplicates\":%lld,"
		   "\"not_success\":%lld,\"wrong\":%lld,\"stray\":%lld,",
		r->expected, r->events, r->missing, r->dups, r->bad, r->wrong, r->stray);
	fprintf(f, "\"latency_ms\":{\"n\":%lld,\"p50\":%lld,\"p90\":%lld,\"p99\":%lld,"
		   "\"p999\":%lld,\"max\":%lld}", r->nlat, (long long)r->p50, (long long)r->p90,
		(long long)r->p99, (long long)r->p999, (long long)r->max);
	if (!strcmp(r->name, "kafka"))
		fprintf(f, ",\"produced\":%lld,\"delivered\":%lld,\"produce_failed\":%lld,"
			   "\"produce_errors\":%lld,\"producer_max_behind\":%lld,"
			   "\"offered_per_s\":%.0f,\"achieved_per_s\":%.0f,"
			   "\"posted_per_s_window\":%.0f,\"posted_per_s_all\":%.0f",
			r->produced, r->delivered, r->produce_failed, r->produce_err,
			r->producer_lag, r->offered, r->achieved, r->posted_window, r->posted_all);
	else
		fprintf(f, ",\"conditions_per_s\":%.0f,\"fswatch_polled_dirs\":%d", r->act_rate,
			r->fswatch_polled);
	fputc('}', f);
}

static int write_json(const struct bench *b, int argc, char **argv)
{
	FILE *f = fopen(b->o.json, "w");
	if (!f) {
		perror(b->o.json);
		return -1;
	}
	fputs("{\"cmd\":[", f);
	for (int i = 0; i < argc; i++) {
		fputs(i ? "," : "", f);
		json_str(f, argv[i]);
	}
	fprintf(f, "],\"cpus\":%ld,\"runs\":[", sysconf(_SC_NPROCESSORS_ONLN));
	for (int i = 0; i < b->nres; i++) {
		fputs(i ? "," : "", f);
		json_result(f, &b->res[i]);
	}
	fputs("]}\n", f);
	return fclose(f) == 0 ? 0 : -1;
}

static void print_summary(const struct bench *b)
{
	printf("\n%-20s %8s %9s %9s %9s %24s %8s %s\n", "run", "triggers", "B/trigger",
	       "after 1st", "td cpu s", "latency p50/p99/max ms", "events", "check");
	for (int i = 0; i < b->nres; i++) {
		const struct result *r = &b->res[i];
		if (!r->done) {
			printf("%-20s %8d   (not completed)\n", r->name, r->n);
			continue;
		}
		char lat[40];
		snprintf(lat, sizeof(lat), "%lld / %lld / %lld", (long long)r->p50,
			 (long long)r->p99, (long long)r->max);
		printf("%-20s %8d %9.0f %9.0f %9.2f %24s %8lld %s\n", r->name, r->n,
		       per_trigger(r, false), per_trigger(r, true), r->fire.td, lat, r->events,
		       r->ok ? "OK" : "FAILED");
	}
	printf("(B/trigger: triggerd RSS growth, all armed minus before any trigger, / N; after 1st:"
	       " minus with the first armed, / (N-1);\n td cpu: from the first condition or message"
	       " to the last event)\n");
}

/* ---- options, main ------------------------------------------------------------ */

static void usage(void)
{
	fprintf(stderr,
		"usage: bench_waits [options]\n"
		"  --scenario S         redis, file, kafka or all (default all)\n"
		"  --json FILE          also write the results as JSON\n"
		"  --rate R             redis, file: conditions made true per second (2000)\n"
		"  --hold-s S           seconds to hold the armed triggers, CPU measured (10)\n"
		"  --redis-n N          redis waits (10000)\n"
		"  --redis-wait W       key, list or channel (key)\n"
		"  --notify M           keyspace notifications on the watched server: off, on or\n"
		"                       both (both; not used for channel waits)\n"
		"  --file-n N           file waits (10000)\n"
		"  --file-dirs D        directories the files are spread over, 1..1000 (100)\n"
		"  --kafka-triggers T   kafka triggers (1000)\n"
		"  --kafka-rate R       messages offered per second (50000)\n"
		"  --kafka-secs S       seconds of producing (10)\n"
		"  --kafka-partitions P partitions of the topic (4)\n"
		"  --kafka-filter F     key or json (json_pointer /run equals) (key)\n"
		"  --linger-ms MS       the producer's linger.ms (1)\n"
		"  --fetch-wait-ms MS   triggerd's fetch.wait.max.ms (10; -1: librdkafka's 500)\n"
		"  --triggerd-arg A     extra argument for triggerd (repeatable)\n"
		"Starts redis-server and triggerd ($TRIGGERD_BIN, else ./build/triggerd).\n");
	exit(2);
}

static int pick(const char *v, const char *const *names, int n)
{
	for (int i = 0; i < n; i++)
		if (!strcmp(v, names[i]))
			return i;
	usage();
	return -1;
}

static void parse_opts(int argc, char **argv, struct opts *o)
{
	*o = (struct opts){.sc = {true, true, true}, .redis_n = 10000, .file_n = 10000,
			   .rate = 2000, .hold_s = 10, .file_dirs = 100, .redis_wait = W_KEY,
			   .notify = {true, true}, .kafka_triggers = 1000, .kafka_rate = 50000,
			   .kafka_secs = 10, .kafka_parts = 4, .linger_ms = 1,
			   .fetch_wait_ms = 10};
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!v)
			usage();
		i++;
		if (!strcmp(a, "--scenario")) {
			bool all = !strcmp(v, "all");
			int s = all ? -1 : pick(v, sc_names, SC_COUNT);
			for (int j = 0; j < SC_COUNT; j++)
				o->sc[j] = all || j == s;
		} else if (!strcmp(a, "--json")) {
			o->json = v;
		} else if (!strcmp(a, "--rate")) {
			o->rate = atoi(v);
		} else if (!strcmp(a, "--hold-s")) {
			o->hold_s = atoi(v);
		} else if (!strcmp(a, "--redis-n")) {
			o->redis_n = atoi(v);
		} else if (!strcmp(a, "--redis-wait")) {
			o->redis_wait = pick(v, wait_names, W_COUNT);
		} else if (!strcmp(a, "--notify")) {
			static const char *const m[] = {"off", "on", "both"};
			int k = pick(v, m, 3);
			o->notify[0] = k != 1;
			o->notify[1] = k != 0;
		} else if (!strcmp(a, "--file-n")) {
			o->file_n = atoi(v);
		} else if (!strcmp(a, "--file-dirs")) {
			o->file_dirs = atoi(v);
		} else if (!strcmp(a, "--kafka-triggers")) {
			o->kafka_triggers = atoi(v);
		} else if (!strcmp(a, "--kafka-rate")) {
			o->kafka_rate = atoi(v);
		} else if (!strcmp(a, "--kafka-secs")) {
			o->kafka_secs = atoi(v);
		} else if (!strcmp(a, "--kafka-partitions")) {
			o->kafka_parts = atoi(v);
		} else if (!strcmp(a, "--kafka-filter")) {
			static const char *const m[] = {"key", "json"};
			o->kafka_json = pick(v, m, 2) == 1;
		} else if (!strcmp(a, "--linger-ms")) {
			o->linger_ms = atoi(v);
		} else if (!strcmp(a, "--fetch-wait-ms")) {
			o->fetch_wait_ms = atoi(v);
		} else if (!strcmp(a, "--triggerd-arg") && o->ntd_args < MAX_TD_ARGS) {
			o->td_args[o->ntd_args++] = v;
		} else {
			usage();
		}
	}
	/* Ids and names carry 6 digits. */
	if (o->redis_n < 2 || o->redis_n > 999999 || o->file_n < 2 || o->file_n > 999999 ||
	    o->rate < 1 || o->hold_s < 0 || o->file_dirs < 1 || o->file_dirs > 1000 ||
	    o->kafka_triggers < 2 || o->kafka_triggers > 999999 || o->kafka_rate < 1 ||
	    o->kafka_secs < 1 || o->kafka_parts < 1 || o->linger_ms < 0 || o->fetch_wait_ms < -1)
		usage();
}

int main(int argc, char **argv)
{
	static struct bench b;
	if (argc == 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")))
		usage();
	parse_opts(argc, argv, &b.o);
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (!getenv("TRIGGERD_BIN"))
		setenv("TRIGGERD_BIN", "./build/triggerd", 1);
	printf("#");
	for (int i = 0; i < argc; i++)
		printf(strpbrk(argv[i], " '\"$\\*?") ? " '%s'" : " %s", argv[i]);
	double load[3] = {0};
	if (getloadavg(load, 3) < 0)
		load[0] = -1;
	printf("\n# triggerd %s, %ld cpus, load average %.2f %.2f %.2f at the start\n",
	       getenv("TRIGGERD_BIN"), sysconf(_SC_NPROCESSORS_ONLN), load[0], load[1], load[2]);
	signal(SIGPIPE, SIG_IGN);
	struct sigaction sa = {.sa_handler = on_signal};
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);

	int failed_runs = 0;
	if (b.o.sc[SC_REDIS]) {
		for (int k = 0; k < 2; k++) {
			if (!b.o.notify[k] || (b.o.redis_wait == W_CHANNEL && k == 1) ||
			    atomic_load(&stop_flag))
				continue;
			failed_runs += run_redis(&b, k == 1) != 0;
		}
	}
	if (b.o.sc[SC_FILE] && !atomic_load(&stop_flag))
		failed_runs += run_file(&b) != 0;
	if (b.o.sc[SC_KAFKA] && !atomic_load(&stop_flag))
		failed_runs += run_kafka(&b) != 0;
	print_summary(&b);
	int rc = failed_runs ? 1 : 0;
	for (int i = 0; i < b.nres; i++)
		if (!b.res[i].ok)
			rc = 1;
	if (b.o.json && write_json(&b, argc, argv) != 0)
		rc = 1;
	if (atomic_load(&stop_flag))
		fprintf(stderr, "bench_waits: interrupted\n");
	return rc;
}
