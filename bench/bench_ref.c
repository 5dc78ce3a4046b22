/*
 * Reference runs for the events/s budget: what Redis on this machine can do
 * without triggerd, for the same events.
 *
 *   xadd    N pipelined XADDs of event-sized entries (the ceiling of any
 *           event poster);
 *   apply   N fire-once records through triggerd's own apply script, ids
 *           pre-stored, batches of --batch, up to 64 calls in flight (the
 *           ceiling of the script, without triggerd's loop);
 *
 * Both report events/s from the stream entry ids (first to last visible),
 * the same measure bench_timers uses, so the ratio is like for like.
 *
 * usage: bench_ref [-n N] [--batch B] [--redis ADDR]
 */
#include <errno.h>
#include <hiredis/hiredis.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "engine_i.h"
#include "triggerd/addr.h"

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what, redisContext *c)
{
	fprintf(stderr, "bench_ref: %s: %s\n", what, c ? c->errstr : "");
	exit(1);
}

static void reply_ok(redisContext *c)
{
	redisReply *r;
	if (redisGetReply(c, (void **)&r) != REDIS_OK)
		die("reply", c);
	if (r->type == REDIS_REPLY_ERROR) {
		fprintf(stderr, "bench_ref: redis error: %s\n", r->str);
		exit(1);
	}
	freeReplyObject(r);
}

/* An event like a timer's: 32-byte id, 16-byte meta. */
static void make_event(int i, char *id, msgpack_sbuffer *sb)
{
	snprintf(id, 33, "ref-%028d", i);
	static const char meta[] = "\x81\xa1" "b" "\xab" "mmmmmmmmmmm"; /* 16 bytes */
	struct td_event ev = {
		.id = id, .id_len = 32, .kind = "timer", .status = TD_SUCCESS,
		.meta = meta, .meta_len = 16, .fired_at_ms = 1795279703867,
		.due_at_ms = 1795279703867,
	};
	msgpack_packer pk;
	sb->size = 0;
	msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
	td_event_pack(&ev, &pk);
}

/* First and last entry ids of @stream -> visible span in ms. */
static long long span_ms(redisContext *c, const char *stream)
{
	redisReply *a = redisCommand(c, "XRANGE %s - + COUNT 1", stream);
	redisReply *b = redisCommand(c, "XREVRANGE %s + - COUNT 1", stream);
	long long first = strtoll(a->element[0]->element[0]->str, NULL, 10);
	long long last = strtoll(b->element[0]->element[0]->str, NULL, 10);
	freeReplyObject(a);
	freeReplyObject(b);
	return last - first;
}

static void report(const char *what, int n, double secs, long long span)
{
	printf("  %-34s %d events in %.3f s: %.0f events/s (client), "
	       "%.0f events/s (stream ids, %lld ms)\n", what, n, secs, n / secs,
	       span > 0 ? n * 1000.0 / (double)span : 0.0, span);
}

static void run_xadd(redisContext *c, int n)
{
	msgpack_sbuffer sb;
	msgpack_sbuffer_init(&sb);
	char id[40];
	redisReply *r = redisCommand(c, "DEL ref:xadd");
	freeReplyObject(r);
	double t0 = now_s();
	for (int i = 0; i < n;) {
		int chunk = 0;
		for (; chunk < 1000 && i < n; chunk++, i++) {
			make_event(i, id, &sb);
			redisAppendCommand(c, "XADD ref:xadd * id %b event %b", id, (size_t)32,
					   sb.data, sb.size);
		}
		while (chunk--)
			reply_ok(c);
	}
	double secs = now_s() - t0;
	report("raw pipelined XADD", n, secs, span_ms(c, "ref:xadd"));
	r = redisCommand(c, "DEL ref:xadd");
	freeReplyObject(r);
	msgpack_sbuffer_destroy(&sb);
}

static void run_apply(redisContext *c, int n, int batch)
{
	msgpack_sbuffer sb;
	msgpack_sbuffer_init(&sb);
	char id[40];
	redisReply *r = redisCommand(c, "DEL ref:apply ref:triggers");
	freeReplyObject(r);
	for (int i = 0; i < n;) {
		int chunk = 0;
		for (; chunk < 1000 && i < n; chunk++, i++) {
			snprintf(id, sizeof(id), "ref-%028d", i);
			redisAppendCommand(c, "HSET ref:triggers %s x", id);
		}
		while (chunk--)
			reply_ok(c);
	}
	r = redisCommand(c, "SCRIPT LOAD %s", td_sink_script());
	char sha[41];
	snprintf(sha, sizeof(sha), "%s", r->str);
	freeReplyObject(r);
	size_t cap = 8 + 5 * (size_t)batch;
	const char **argv = calloc(cap, sizeof(*argv));
	size_t *argvlen = calloc(cap, sizeof(*argvlen));
	char (*ids)[40] = calloc((size_t)batch, sizeof(*ids));
	char **evs = calloc((size_t)batch, sizeof(*evs));
	size_t *evlen = calloc((size_t)batch, sizeof(*evlen));
	int inflight = 0;
	double t0 = now_s();
	for (int i = 0; i < n;) {
		int k = 0, m = 0;
		argv[k++] = "EVALSHA"; argv[k++] = sha; argv[k++] = "2";
		argv[k++] = "ref:triggers"; argv[k++] = "ref:submit";
		argv[k++] = "triggerd"; argv[k++] = "60"; argv[k++] = "0";
		for (; m < batch && i < n; m++, i++) {
			make_event(i, ids[m], &sb);
			free(evs[m]);
			evs[m] = malloc(sb.size);
			memcpy(evs[m], sb.data, sb.size);
			evlen[m] = sb.size;
			argv[k++] = "F"; argv[k++] = ids[m]; argv[k++] = "ref:apply";
			argv[k++] = evs[m]; argv[k++] = "";
		}
		for (int j = 0; j < k; j++)
			argvlen[j] = strlen(argv[j]);
		for (int j = 0; j < m; j++)
			argvlen[8 + 5 * j + 3] = evlen[j];
		redisAppendCommandArgv(c, k, argv, argvlen);
		if (++inflight == 64) {
			reply_ok(c);
			inflight--;
		}
	}
	while (inflight--)
		reply_ok(c);
	double secs = now_s() - t0;
	char what[64];
	snprintf(what, sizeof(what), "apply script, batch %d", batch);
	report(what, n, secs, span_ms(c, "ref:apply"));
	r = redisCommand(c, "DEL ref:apply ref:triggers");
	freeReplyObject(r);
	for (int j = 0; j < batch; j++)
		free(evs[j]);
	free(evs); free(evlen); free(ids); free(argv); free(argvlen);
	msgpack_sbuffer_destroy(&sb);
}

int main(int argc, char **argv)
{
	int n = 100000, batch = 256;
	const char *addr = NULL;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "-n") && i + 1 < argc)
			n = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--batch") && i + 1 < argc)
			batch = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--redis") && i + 1 < argc)
			addr = argv[++i];
		else {
			fprintf(stderr, "usage: bench_ref [-n N] [--batch B] [--redis ADDR]\n");
			return 2;
		}
	}
	if (n < 2 || batch < 1 || batch > 2000) {
		fprintf(stderr, "bench_ref: need n >= 2 and 1 <= batch <= 2000\n");
		return 2;
	}
	char dir[] = "/tmp/td-bench-ref-XXXXXX", sock[128];
	pid_t pid = 0;
	if (!addr) {
		if (!mkdtemp(dir))
			return 1;
		snprintf(sock, sizeof(sock), "%s/redis.sock", dir);
		pid = fork();
		if (pid == 0) {
			execlp("redis-server", "redis-server", "--port", "0", "--unixsocket", sock,
			       "--save", "", "--appendonly", "no", "--dir", dir, (char *)NULL);
			_exit(127);
		}
		addr = sock;
	}
	struct td_redis_addr a;
	char err[200];
	if (td_redis_addr_parse(addr, &a, err, sizeof(err))) {
		fprintf(stderr, "bench_ref: %s\n", err);
		return 2;
	}
	redisContext *c = NULL;
	for (int i = 0; i < 100; i++) {
		c = a.path[0] ? redisConnectUnix(a.path) : redisConnect(a.host, a.port);
		if (c && !c->err)
			break;
		redisFree(c);
		c = NULL;
		usleep(50000);
	}
	if (!c)
		die("connect", NULL);
	printf("reference runs (no triggerd), N=%d\n", n);
	run_xadd(c, n);
	run_apply(c, n, batch);
	redisFree(c);
	if (pid > 0) {
		kill(pid, SIGTERM);
		waitpid(pid, NULL, 0);
		char cmd[160];
		snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
		if (system(cmd) != 0)
			fprintf(stderr, "bench_ref: could not remove %s\n", dir);
	}
	return 0;
}
