#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <msgpack.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "triggerd/addr.h"
#include "triggerd/codec.h"

int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

int harness_redis_start(struct harness *h, bool aof)
{
	if (!h->dir[0]) {
		memset(h, 0, sizeof(*h));
		snprintf(h->dir, sizeof(h->dir), "/tmp/td-test-XXXXXX");
		if (!mkdtemp(h->dir))
			return -1;
		snprintf(h->sock, sizeof(h->sock), "%s/redis.sock", h->dir);
		snprintf(h->log, sizeof(h->log), "%s/triggerd.log", h->dir);
		strcpy(h->last_event, "0-0");
	}
	h->aof = aof;
	pid_t pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		char logf[320];
		snprintf(logf, sizeof(logf), "%s/redis.log", h->dir);
		execlp("redis-server", "redis-server", "--port", "0", "--unixsocket", h->sock,
		       "--dir", h->dir, "--save", "", "--appendonly", aof ? "yes" : "no",
		       "--appendfsync", "always", "--logfile", logf, (char *)NULL);
		_exit(127);
	}
	h->redis_pid = pid;
	for (int i = 0; i < 200; i++) {
		if (td_redis_sock_answers(h->sock, 200))
			return harness_connect(h);
		sleep_ms(25);
	}
	return -1;
}

void harness_redis_kill(struct harness *h)
{
	if (h->redis_pid > 0) {
		kill(h->redis_pid, SIGKILL);
		waitpid(h->redis_pid, NULL, 0);
		h->redis_pid = 0;
	}
	if (h->c) {
		redisFree(h->c);
		h->c = NULL;
	}
}

int harness_connect(struct harness *h)
{
	if (h->c)
		redisFree(h->c);
	h->c = redisConnectUnix(h->sock);
	return h->c && !h->c->err ? 0 : -1;
}

int harness_td_spawn(struct harness *h, const char *const *extra)
{
	const char *bin = getenv("TRIGGERD_BIN");
	if (!bin)
		bin = "./triggerd";
	pid_t pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		const char *argv[32];
		int n = 0;
		argv[n++] = bin;
		argv[n++] = "--redis";
		argv[n++] = h->sock;
		argv[n++] = "--log-level";
		argv[n++] = "debug";
		/* A free port, so parallel tests never collide; a --listen in
		 * @extra comes later and wins. */
		argv[n++] = "--listen";
		argv[n++] = "127.0.0.1:0";
		for (int i = 0; extra && extra[i] && n < 30; i++)
			argv[n++] = extra[i];
		argv[n] = NULL;
		int fd = open(h->log, O_WRONLY | O_CREAT | O_APPEND, 0600);
		dup2(fd, 2);
		close(fd);
		execv(bin, (char *const *)argv);
		_exit(127);
	}
	h->td_pid = pid;
	return 0;
}

/* Wait for a log line containing @needle written after byte @from. */
static bool wait_log_from(struct harness *h, off_t from, const char *needle, int timeout_ms)
{
	for (int waited = 0; waited <= timeout_ms; waited += 25) {
		FILE *f = fopen(h->log, "r");
		if (f) {
			fseeko(f, from, SEEK_SET);
			char line[4096];
			bool found = false;
			while (!found && fgets(line, sizeof(line), f))
				found = strstr(line, needle) != NULL;
			fclose(f);
			if (found)
				return true;
		}
		int status;
		if (h->td_pid > 0 && waitpid(h->td_pid, &status, WNOHANG) == h->td_pid) {
			h->td_pid = 0;
			return false;
		}
		sleep_ms(25);
	}
	return false;
}

int harness_listen_port(struct harness *h, const char *listener)
{
	char needle[96];
	snprintf(needle, sizeof(needle), "\"listening\",\"listener\":\"%s\",\"addr\":\"", listener);
	FILE *f = fopen(h->log, "r");
	if (!f)
		return -1;
	char line[4096];
	int port = -1;
	while (fgets(line, sizeof(line), f)) {
		char *p = strstr(line, needle);
		if (!p)
			continue;
		p += strlen(needle);
		char *q = strchr(p, '"');
		char *colon = q ? memrchr(p, ':', (size_t)(q - p)) : NULL;
		if (colon)
			port = atoi(colon + 1);
	}
	fclose(f);
	return port;
}

bool harness_wait_log(struct harness *h, const char *needle, int timeout_ms)
{
	return wait_log_from(h, 0, needle, timeout_ms);
}

int harness_td_start(struct harness *h, const char *const *extra)
{
	off_t start_size = 0;
	struct stat st;
	if (stat(h->log, &st) == 0)
		start_size = st.st_size;
	if (harness_td_spawn(h, extra) != 0)
		return -1;
	/* A "ready" line written after we started this one. */
	return wait_log_from(h, start_size, "\"msg\":\"ready\"", 10000) ? 0 : -1;
}

int harness_td_stop(struct harness *h, int sig)
{
	if (h->td_pid <= 0)
		return -1;
	int status = -1;
	kill(h->td_pid, sig);
	waitpid(h->td_pid, &status, 0);
	h->td_pid = 0;
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

void harness_stop(struct harness *h)
{
	harness_td_stop(h, SIGKILL);
	if (h->redis_pid > 0) {
		kill(h->redis_pid, SIGTERM);
		waitpid(h->redis_pid, NULL, 0);
	}
	if (h->c)
		redisFree(h->c);
	if (h->dir[0] && !getenv("TD_TEST_KEEP")) {
		char cmd[400];
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", h->dir);
		if (system(cmd) != 0)
			fprintf(stderr, "could not remove %s\n", h->dir);
	}
	memset(h, 0, sizeof(*h));
}

int submit_json(struct harness *h, const char *json)
{
	redisReply *r = redisCommand(h->c, "XADD td:submit * op add json %s", json);
	int ok = r && r->type == REDIS_REPLY_STRING;
	if (r)
		freeReplyObject(r);
	return ok ? 0 : -1;
}

int submit_fields(struct harness *h, int argc, const char *const *argv, const size_t *lens)
{
	const char *a[40];
	size_t l[40];
	a[0] = "XADD"; l[0] = 4;
	a[1] = "td:submit"; l[1] = 9;
	a[2] = "*"; l[2] = 1;
	for (int i = 0; i < argc && i < 36; i++) {
		a[3 + i] = argv[i];
		l[3 + i] = lens ? lens[i] : strlen(argv[i]);
	}
	redisReply *r = redisCommandArgv(h->c, 3 + argc, a, l);
	int ok = r && r->type == REDIS_REPLY_STRING;
	if (r)
		freeReplyObject(r);
	return ok ? 0 : -1;
}

int submit_json_many(struct harness *h, char **docs, size_t n)
{
	for (size_t i = 0; i < n; i++)
		redisAppendCommand(h->c, "XADD td:submit * op add json %s", docs[i]);
	int bad = 0;
	for (size_t i = 0; i < n; i++) {
		redisReply *r;
		if (redisGetReply(h->c, (void **)&r) != REDIS_OK)
			return -1;
		bad += r->type != REDIS_REPLY_STRING;
		freeReplyObject(r);
	}
	return bad ? -1 : 0;
}

static void str_field(const msgpack_object *v, char *out, size_t len)
{
	if (v->type == MSGPACK_OBJECT_STR) {
		size_t n = v->via.str.size < len - 1 ? v->via.str.size : len - 1;
		memcpy(out, v->via.str.ptr, n);
		out[n] = '\0';
	}
}

static void parse_event(const char *bytes, size_t len, struct event *ev)
{
	msgpack_unpacked up;
	msgpack_unpacked_init(&up);
	size_t off = 0;
	ev->due_at_ms = -1;
	if (msgpack_unpack_next(&up, bytes, len, &off) == MSGPACK_UNPACK_SUCCESS &&
	    up.data.type == MSGPACK_OBJECT_MAP) {
		for (uint32_t i = 0; i < up.data.via.map.size; i++) {
			const msgpack_object *k = &up.data.via.map.ptr[i].key;
			const msgpack_object *v = &up.data.via.map.ptr[i].val;
			char key[32] = "";
			str_field(k, key, sizeof(key));
			if (!strcmp(key, "id")) str_field(v, ev->id, sizeof(ev->id));
			else if (!strcmp(key, "kind")) str_field(v, ev->kind, sizeof(ev->kind));
			else if (!strcmp(key, "status")) str_field(v, ev->status, sizeof(ev->status));
			else if (!strcmp(key, "error")) str_field(v, ev->error, sizeof(ev->error));
			else if (!strcmp(key, "fired_at_ms")) ev->fired_at_ms = v->via.i64;
			else if (!strcmp(key, "due_at_ms")) ev->due_at_ms = v->via.i64;
			else if (!strcmp(key, "seq")) ev->seq = v->via.u64;
			else if (!strcmp(key, "payload")) {
				struct td_buf b = TD_BUF_INIT;
				if (td_msgpack_to_json(v, &b) == 0)
					snprintf(ev->payload_json, sizeof(ev->payload_json), "%s", b.data);
				td_buf_finish(&b);
			}
			else if (!strcmp(key, "meta")) {
				struct td_buf b = TD_BUF_INIT;
				ev->has_meta = true;
				if (td_msgpack_to_json(v, &b) == 0)
					snprintf(ev->meta_json, sizeof(ev->meta_json), "%s", b.data);
				td_buf_finish(&b);
			}
		}
	}
	msgpack_unpacked_destroy(&up);
}

int read_events(struct harness *h, struct event *out, int max, int timeout_ms)
{
	redisReply *r = redisCommand(h->c, "XREAD COUNT %d BLOCK %d STREAMS td:events %s",
				     max, timeout_ms, h->last_event);
	if (!r)
		return -1;
	int n = 0;
	if (r->type == REDIS_REPLY_ARRAY && r->elements == 1) {
		redisReply *entries = r->element[0]->element[1];
		for (size_t i = 0; i < entries->elements && n < max; i++) {
			redisReply *e = entries->element[i];
			struct event *ev = &out[n++];
			memset(ev, 0, sizeof(*ev));
			snprintf(ev->stream_id, sizeof(ev->stream_id), "%s", e->element[0]->str);
			ev->visible_ms = strtoll(ev->stream_id, NULL, 10);
			snprintf(h->last_event, sizeof(h->last_event), "%s", ev->stream_id);
			redisReply *f = e->element[1];
			for (size_t j = 0; j + 1 < f->elements; j += 2)
				if (!strcmp(f->element[j]->str, "event"))
					parse_event(f->element[j + 1]->str, f->element[j + 1]->len, ev);
		}
	}
	freeReplyObject(r);
	return n;
}

int wait_events(struct harness *h, struct event *out, int n, int timeout_ms)
{
	int64_t end = now_ms() + timeout_ms;
	int got = 0;
	while (got < n) {
		int64_t left = end - now_ms();
		if (left <= 0)
			break;
		int rc = read_events(h, out + got, n - got, (int)left);
		if (rc < 0) {
			if (harness_connect(h) != 0)
				sleep_ms(50);
			continue;
		}
		got += rc;
	}
	return got;
}

long long redis_int(struct harness *h, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	redisReply *r = redisvCommand(h->c, fmt, ap);
	va_end(ap);
	long long v = -1;
	if (r && r->type == REDIS_REPLY_INTEGER)
		v = r->integer;
	if (r)
		freeReplyObject(r);
	return v;
}

bool log_contains(struct harness *h, const char *needle)
{
	FILE *f = fopen(h->log, "r");
	if (!f)
		return false;
	char line[8192];
	bool found = false;
	while (!found && fgets(line, sizeof(line), f))
		found = strstr(line, needle) != NULL;
	fclose(f);
	return found;
}

long long harness_pending(struct harness *h)
{
	redisReply *r = redisCommand(h->c, "XPENDING td:submit triggerd");
	long long n = -1;
	if (r && r->type == REDIS_REPLY_ARRAY && r->elements >= 1 &&
	    r->element[0]->type == REDIS_REPLY_INTEGER)
		n = r->element[0]->integer;
	if (r)
		freeReplyObject(r);
	return n;
}

int harness_setup(void **state)
{
	struct harness *h = calloc(1, sizeof(*h));
	if (!h || harness_redis_start(h, false) != 0) {
		free(h);
		return -1;
	}
	*state = h;
	return 0;
}

int harness_teardown(void **state)
{
	harness_stop(*state);
	free(*state);
	return 0;
}
