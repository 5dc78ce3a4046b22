/*
 * The `redis` kind end to end: triggerd's own redis-server (the harness),
 * one or two *watched* redis-servers started here (one on a unix socket
 * without keyspace notifications, named by AIRFLOW_CONN_WATCH in JSON form;
 * one on a loopback TCP port with notify-keyspace-events KEA, named by
 * AIRFLOW_CONN_WATCHN as a URI), and the real triggerd binary.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "harness.h"

struct watch {
	pid_t pid;
	char sock[320];          /* unix socket; "" for TCP */
	int port;                /* TCP port; 0 for a unix socket */
	bool notify;
	int n;
	redisContext *c;
};

struct fix {
	struct harness h;
	struct watch w;          /* unix socket, no notifications */
	struct watch wn;         /* TCP, notify-keyspace-events KEA */
};

static int free_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t l = sizeof(a);
	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
	    getsockname(fd, (struct sockaddr *)&a, &l) != 0) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	close(fd);
	return ntohs(a.sin_port);
}

static int watch_connect(struct watch *w)
{
	if (w->c)
		redisFree(w->c);
	w->c = w->port ? redisConnect("127.0.0.1", w->port) : redisConnectUnix(w->sock);
	if (!w->c || w->c->err)
		return -1;
	redisReply *r = redisCommand(w->c, "PING");
	int ok = r && r->type == REDIS_REPLY_STATUS;
	if (r)
		freeReplyObject(r);
	return ok ? 0 : -1;
}

/* (Re)start the watched server @w with the parameters it was given. */
static int watch_run(struct harness *h, struct watch *w)
{
	pid_t pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		char port[16], logf[400];
		snprintf(port, sizeof(port), "%d", w->port);
		snprintf(logf, sizeof(logf), "%s/watch%d.log", h->dir, w->n);
		const char *argv[24] = {"redis-server", "--port", port, "--save", "",
					"--appendonly", "no", "--dir", h->dir, "--logfile", logf};
		int n = 11;
		if (w->sock[0]) {
			argv[n++] = "--unixsocket";
			argv[n++] = w->sock;
		} else {
			argv[n++] = "--bind";
			argv[n++] = "127.0.0.1";
		}
		if (w->notify) {
			argv[n++] = "--notify-keyspace-events";
			argv[n++] = "KEA";
		}
		argv[n] = NULL;
		execvp("redis-server", (char *const *)argv);
		_exit(127);
	}
	w->pid = pid;
	for (int i = 0; i < 200; i++) {
		if (watch_connect(w) == 0)
			return 0;
		sleep_ms(25);
	}
	return -1;
}

static int watch_start(struct harness *h, struct watch *w, int n, bool tcp, bool notify)
{
	memset(w, 0, sizeof(*w));
	w->n = n;
	w->notify = notify;
	if (tcp) {
		if ((w->port = free_port()) <= 0)
			return -1;
	} else {
		snprintf(w->sock, sizeof(w->sock), "%s/watch%d.sock", h->dir, n);
	}
	return watch_run(h, w);
}

static void watch_kill(struct watch *w)
{
	if (w->pid > 0) {
		kill(w->pid, SIGKILL);
		waitpid(w->pid, NULL, 0);
		w->pid = 0;
	}
	if (w->c) {
		redisFree(w->c);
		w->c = NULL;
	}
}

static long long wint(struct watch *w, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	redisReply *r = redisvCommand(w->c, fmt, ap);
	va_end(ap);
	long long v = -1;
	if (r && r->type == REDIS_REPLY_INTEGER)
		v = r->integer;
	if (r)
		freeReplyObject(r);
	return v;
}

static void wcmd(struct watch *w, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	redisReply *r = redisvCommand(w->c, fmt, ap);
	va_end(ap);
	if (!r || r->type == REDIS_REPLY_ERROR)
		fail_msg("watched redis: %s", r ? r->str : "no reply");
	freeReplyObject(r);
}

/* PUBSUB NUMSUB <ch> (or NUMPAT when @ch is NULL). */
static long long numsub(struct watch *w, const char *ch)
{
	redisReply *r = ch ? redisCommand(w->c, "PUBSUB NUMSUB %s", ch) :
			     redisCommand(w->c, "PUBSUB NUMPAT");
	long long v = -1;
	if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2)
		v = r->element[1]->integer;
	else if (r && r->type == REDIS_REPLY_INTEGER)
		v = r->integer;
	if (r)
		freeReplyObject(r);
	return v;
}

static void wait_subscribed(struct watch *w, const char *ch, long long n)
{
	/* Up to 10 s: after a restart of @w the reconnect backoff may add a
	 * few seconds on a loaded machine. */
	for (int i = 0; i < 1000; i++) {
		if (numsub(w, ch) >= n)
			return;
		sleep_ms(10);
	}
	fail_msg("never subscribed to %s", ch ? ch : "(patterns)");
}

static int clients(struct watch *w)
{
	redisReply *r = redisCommand(w->c, "CLIENT LIST");
	int n = 0;
	if (r && r->type == REDIS_REPLY_STRING)
		for (const char *p = r->str; (p = strchr(p, '\n')); p++)
			n++;
	if (r)
		freeReplyObject(r);
	return n;
}

static int setup(void **state)
{
	struct fix *f = calloc(1, sizeof(*f));
	if (!f || harness_redis_start(&f->h, false) != 0 ||
	    watch_start(&f->h, &f->w, 1, false, false) != 0 ||
	    watch_start(&f->h, &f->wn, 2, true, true) != 0) {
		if (f)
			harness_stop(&f->h);
		free(f);
		return -1;
	}
	char v[512];
	snprintf(v, sizeof(v), "{\"conn_type\":\"redis\",\"host\":\"%s\"}", f->w.sock);
	setenv("AIRFLOW_CONN_WATCH", v, 1);
	snprintf(v, sizeof(v), "redis://127.0.0.1:%d/0", f->wn.port);
	setenv("AIRFLOW_CONN_WATCHN", v, 1);
	setenv("AIRFLOW_CONN_NOTREDIS", "http://example.com", 1);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fix *f = *state;
	harness_td_stop(&f->h, SIGKILL);
	watch_kill(&f->w);
	watch_kill(&f->wn);
	harness_stop(&f->h);
	free(f);
	return 0;
}

static void wait_stored(struct harness *h, const char *id)
{
	for (int i = 0; i < 300; i++) {
		if (redis_int(h, "HEXISTS td:triggers %s", id) == 1) {
			sleep_ms(20); /* the stored answer reaches triggerd, it arms */
			return;
		}
		sleep_ms(10);
	}
	fail_msg("trigger %s never stored", id);
}

static void submit_wait(struct harness *h, const char *json, const char *id)
{
	assert_int_equal(submit_json(h, json), 0);
	wait_stored(h, id);
}

static const struct event *find(const struct event *ev, int n, const char *id)
{
	for (int i = 0; i < n; i++)
		if (strcmp(ev[i].id, id) == 0)
			return &ev[i];
	return NULL;
}

/* The "data" string of a list payload, into @out. */
static const char *data_of(const struct event *e, char *out, size_t len)
{
	const char *p = strstr(e->payload_json, "\"data\":\"");
	out[0] = '\0';
	if (p) {
		p += 8;
		const char *q = strchr(p, '"');
		snprintf(out, len, "%.*s", q ? (int)(q - p) : 0, p);
	}
	return out;
}

/* ---- keys ------------------------------------------------------------------ */

static void key_exists_and_equals(void **state)
{
	struct fix *f = *state;
	struct harness *h = &f->h;
	assert_int_equal(harness_td_start(h, NULL), 0);
	wcmd(&f->w, "SET already there");
	/* Fires as soon as it is stored. */
	assert_int_equal(submit_json(h, "{\"id\":\"k0\",\"kind\":\"redis\",\"args\":{\"conn\":\"watch\","
				     "\"key\":\"already\"}}"), 0);
	submit_wait(h, "{\"id\":\"k1\",\"kind\":\"redis\",\"meta\":{\"t\":1},"
		       "\"args\":{\"conn\":\"watch\",\"key\":\"a\",\"poll_interval_ms\":100}}", "k1");
	submit_wait(h, "{\"id\":\"k2\",\"kind\":\"redis\",\"args\":{\"conn\":\"watch\",\"key\":\"b\","
		       "\"equals\":\"yes\",\"poll_interval_ms\":100}}", "k2");
	struct event ev[4];
	assert_int_equal(wait_events(h, ev, 1, 3000), 1);
	assert_string_equal(ev[0].id, "k0");
	assert_string_equal(ev[0].payload_json, "{\"key\":\"already\"}");
	wcmd(&f->w, "SET a 1");
	wcmd(&f->w, "SET b no");
	assert_int_equal(wait_events(h, ev, 1, 3000), 1);
	assert_string_equal(ev[0].id, "k1");
	assert_string_equal(ev[0].status, "success");
	assert_string_equal(ev[0].kind, "redis");
	assert_string_equal(ev[0].payload_json, "{\"key\":\"a\"}");
	assert_string_equal(ev[0].meta_json, "{\"t\":1}");
	assert_int_equal(read_events(h, ev, 2, 500), 0); /* b is not "yes" */
	wcmd(&f->w, "SET b yes");
	assert_int_equal(wait_events(h, ev, 1, 3000), 1);
	assert_string_equal(ev[0].id, "k2");
	assert_string_equal(ev[0].payload_json, "{\"key\":\"b\",\"value\":\"yes\"}");
	assert_int_equal(redis_int(h, "HLEN td:triggers"), 0);
}

/* With notify-keyspace-events on, a key (and a list) is checked when it
 * changes, long before its 10 s poll. */
static void keyspace_notifications(void **state)
{
	struct fix *f = *state;
	struct harness *h = &f->h;
	assert_int_equal(harness_td_start(h, NULL), 0);
	submit_wait(h, "{\"id\":\"n1\",\"kind\":\"redis\",\"args\":{\"conn\":\"watchn\",\"key\":\"nk\","
		       "\"equals\":\"go\",\"poll_interval_ms\":10000}}", "n1");
	submit_wait(h, "{\"id\":\"n2\",\"kind\":\"redis\",\"args\":{\"conn\":\"watchn\",\"list\":\"nl\","
		       "\"poll_interval_ms\":10000}}", "n2");
	wait_subscribed(&f->wn, "__keyspace@0__:nk", 1);
	wait_subscribed(&f->wn, "__keyspace@0__:nl", 1);
	sleep_ms(100);
	wcmd(&f->wn, "SET nk wait");
	struct event ev[4];
	assert_int_equal(read_events(h, ev, 2, 300), 0);
	int64_t t0 = now_ms();
	wcmd(&f->wn, "SET nk go");
	assert_int_equal(wait_events(h, ev, 1, 3000), 1);
	assert_string_equal(ev[0].id, "n1");
	assert_true(ev[0].visible_ms - t0 < 1000);
	t0 = now_ms();
	wcmd(&f->wn, "RPUSH nl item");
	assert_int_equal(wait_events(h, ev, 1, 3000), 1);
	assert_string_equal(ev[0].id, "n2");
	assert_string_equal(ev[0].payload_json, "{\"list\":\"nl\",\"data\":\"item\"}");
	assert_true(ev[0].visible_ms - t0 < 1000);
	/* Both fired: their keyspace channels are given up. */
	for (int i = 0; i < 200 && numsub(&f->wn, "__keyspace@0__:nk") > 0; i++)
		sleep_ms(10);
	assert_int_equal(numsub(&f->wn, "__keyspace@0__:nk"), 0);
	assert_true(log_contains(h, "\"keys\":true,\"lists\":true"));
}

/* ---- pub/sub -------------------------------------------------------------- */

static void pubsub_channels_and_patterns(void **state)
{
	struct fix *f = *state;
	struct harness *h = &f->h;
	assert_int_equal(harness_td_start(h, NULL), 0);
	submit_wait(h, "{\"id\":\"c1\",\"kind\":\"redis\",\"args\":{\"conn\":\"watch\","
		       "\"channels\":[\"ch1\",\"ch2\"]}}", "c1");
	submit_wait(h, "{\"id\":\"p1\",\"kind\":\"redis\",\"args\":{\"conn\":\"watch\",\"patterns\":\"news.*\"}}",
		    "p1");
	submit_wait(h, "{\"id\":\"r1\",\"kind\":\"redis\",\"repeat\":true,\"args\":{\"conn\":\"watch\","
		       "\"channels\":\"ticks\"}}", "r1");
	wait_subscribed(&f->w, "ch2", 1);
	wait_subscribed(&f->w, "ticks", 1);
	wait_subscribed(&f->w, NULL, 1);
	wcmd(&f->w, "PUBLISH ch2 hello");
	wcmd(&f->w, "PUBLISH news.x yo");
	struct event ev[8];
	assert_int_equal(wait_events(h, ev, 2, 3000), 2);
	const struct event *e = find(ev, 2, "c1");
	assert_non_null(e);
	assert_string_equal(e->payload_json,
			    "{\"type\":\"message\",\"pattern\":null,\"channel\":\"ch2\",\"data\":\"hello\"}");
	e = find(ev, 2, "p1");
	assert_non_null(e);
	assert_string_equal(e->payload_json,
			    "{\"type\":\"pmessage\",\"pattern\":\"news.*\",\"channel\":\"news.x\",\"data\":\"yo\"}");
	for (int i = 0; i < 3; i++)
		wcmd(&f->w, "PUBLISH ticks t%d", i);
	assert_int_equal(wait_events(h, ev, 3, 3000), 3);
	for (int i = 0; i < 3; i++) {
		char want[32], got[32];
		snprintf(want, sizeof(want), "t%d", i);
		assert_string_equal(ev[i].id, "r1");
		assert_int_equal(ev[i].seq, (uint64_t)i + 1);
		assert_string_equal(data_of(&ev[i], got, sizeof(got)), want);
	}
	/* One-shots gone: their channels are unsubscribed. */
	for (int i = 0; i < 200 && numsub(&f->w, "ch1") > 0; i++)
		sleep_ms(10);
	assert_int_equal(numsub(&f->w, "ch1"), 0);
	assert_int_equal(numsub(&f->w, NULL), 0);
	assert_int_equal(numsub(&f->w, "ticks"), 1);
}

/* Hundreds of triggers of every sort on one server: three connections. */
static void shared_connections(void **state)
{
	struct fix *f = *state;
	struct harness *h = &f->h;
	assert_int_equal(harness_td_start(h, NULL), 0);
	int before = clients(&f->w);
	enum { NCH = 100, NKEY = 100, NST = 50, NL = 20 };
	static char *docs[NCH + NKEY + NST + NL];
	int n = 0;
	for (int i = 0; i < NCH; i++)
		assert_true(asprintf(&docs[n++], "{\"id\":\"m%d\",\"kind\":\"redis\",\"args\":{\"conn\":\"watch\","
				     "\"channels\":\"many\"}}", i) > 0);
	for (int i = 0; i < NKEY; i++)
		assert_true(asprintf(&docs[n++], "{\"id\":\"mk%d\",\"kind\":\"redis\",\"args\":{\"conn\":\"watch\","
				     "\"key\":\"never%d\",\"poll_interval_ms\":50}}", i, i) > 0);
	for (int i = 0; i < NST; i++)
		assert_true(asprintf(&docs[n++], "{\"id\":\"ms%d\",\"kind\":\"redis\",\"args\":{\"conn\":\"watch\","
				     "\"stream\":\"st%d\"}}", i, i) > 0);
	for (int i = 0; i < NL; i++)
		assert_true(asprintf(&docs[n++], "{\"id\":\"ml%d\",\"kind\":\"redis\",\"args\":{\"conn\":\"watch\","
				     "\"list\":\"ql%d\",\"poll_interval_ms\":50}}", i, i % 5) > 0);
	assert_int_equal(submit_json_many(h, docs, (size_t)n), 0);
	for (int i = 0; i < n; i++)
		free(docs[i]);
	for (int i = 0; i < 300 && redis_int(h, "HLEN td:triggers") < n; i++)
		sleep_ms(10);
	assert_int_equal(redis_int(h, "HLEN td:triggers"), n);
	wait_subscribed(&f->w, "many", 1);
	sleep_ms(300);
	int now = clients(&f->w);
	assert_true(now - before <= 3);
	assert_int_equal(numsub(&f->w, "many"), 1); /* one subscriber for 100 triggers */
	wcmd(&f->w, "PUBLISH many x");
	static struct event ev[NCH + 10];
	assert_int_equal(wait_events(h, ev, NCH, 5000), NCH);
	for (int i = 0; i < NCH; i++)
		assert_int_equal(strncmp(ev[i].id, "m", 1), 0);
	for (int i = 0; i < 200 && numsub(&f->w, "many") > 0; i++)
		sleep_ms(10);
	assert_int_equal(numsub(&f->w, "many"), 0);
	/* Still the same connections after all that. */
	assert_true(clients(&f->w) - before <= 3);
}

/* ---- streams -------------------------------------------------------------- */

static void streams_after_id(void **state)
{
	struct fix *f = *state;
	struct harness *h = &f->h;
	assert_int_equal(harness_td_start(h, NULL), 0);
	redisReply *r = redisCommand(f->w.c, "XADD s1 * k old");
	assert_non_null(r);
	char old[64];
	snprintf(old, sizeof(old), "%s", r->str);
	freeReplyObject(r);
	submit_wait(h, "{\"id\":\"sd\",\"kind\":\"redis\",\"args\":{\"conn\":\"watch\",\"stream\":\"s1\"}}", "sd");
	submit_wait(h, "{\"id\":\"rep\",\"kind\":\"redis\",\"repeat\":true,\"args\":{\"conn\":\"watch\","
		       "\"stream\":\"s1\",\"after_id\":\"$\"}}", "rep");
	/* "$" is resolved to the stream's last id and stored that way. */
	char want[96];
	snprintf(want, sizeof(want), "\"after_id\":\"%s\"", old);
	bool resolved = false;
	for (int i = 0; i < 200 && !resolved; i++) {
		r = redisCommand(h->c, "HGET td:triggers sd");
		resolved = r && r->type == REDIS_REPLY_STRING && memmem(r->str, r->len, old, strlen(old));
		if (r)
			freeReplyObject(r);
		if (!resolved)
			sleep_ms(10);
	}
	assert_true(resolved);
	assert_int_equal(submit_json(h, "{\"id\":\"s0\",\"kind\":\"redis\",\"args\":{\"conn\":\"watch\","
				     "\"stream\":\"s1\",\"after_id\":\"0\"}}"), 0);
	struct event ev[8];
	assert_int_equal(wait_events(h, ev, 1, 3000), 1);
	assert_string_equal(ev[0].id, "s0");
	char pl[256];
	snprintf(pl, sizeof(pl), "{\"stream\":\"s1\",\"id\":\"%s\",\"fields\":{\"k\":\"old\"}}", old);
	assert_string_equal(ev[0].payload_json, pl);
	assert_int_equal(read_events(h, ev, 2, 300), 0); /* "$" skips the old entry */
	char ids[3][64];
	for (int i = 0; i < 3; i++) {
		r = redisCommand(f->w.c, "XADD s1 * k v%d n %d", i, i);
		snprintf(ids[i], sizeof(ids[i]), "%s", r->str);
		freeReplyObject(r);
	}
	assert_int_equal(wait_events(h, ev, 4, 3000), 4);
	const struct event *e = find(ev, 4, "sd");
	assert_non_null(e);
	snprintf(pl, sizeof(pl), "{\"stream\":\"s1\",\"id\":\"%s\",\"fields\":{\"k\":\"v0\",\"n\":\"0\"}}",
		 ids[0]);
	assert_string_equal(e->payload_json, pl);
	int k = 0;
	for (int i = 0; i < 4; i++) {
		if (strcmp(ev[i].id, "rep") != 0)
			continue;
		assert_int_equal(ev[i].seq, (uint64_t)k + 1);
		assert_non_null(strstr(ev[i].payload_json, ids[k]));
		k++;
	}
	assert_int_equal(k, 3);
	assert_int_equal(redis_int(h, "HEXISTS td:triggers rep"), 1);
	/* A repeat waiter from "0" joins while the others' read is blocked:
	 * it gets every entry, in order. */
	submit_wait(h, "{\"id\":\"all\",\"kind\":\"redis\",\"repeat\":true,\"args\":{\"conn\":\"watch\","
		       "\"stream\":\"s1\",\"after_id\":\"0-0\"}}", "all");
	assert_int_equal(wait_events(h, ev, 4, 3000), 4);
	for (int i = 0; i < 4; i++) {
		assert_string_equal(ev[i].id, "all");
		assert_int_equal(ev[i].seq, (uint64_t)i + 1);
		assert_non_null(strstr(ev[i].payload_json, i ? ids[i - 1] : old));
	}
	assert_int_equal(read_events(h, ev, 2, 300), 0);
}

/* ---- lists ---------------------------------------------------------------- */

static void list_each_element_once(void **state)
{
	struct fix *f = *state;
	struct harness *h = &f->h;
	assert_int_equal(harness_td_start(h, NULL), 0);
	submit_wait(h, "{\"id\":\"la\",\"kind\":\"redis\",\"repeat\":true,\"args\":{\"conn\":\"watch\","
		       "\"list\":\"jobs\",\"poll_interval_ms\":20}}", "la");
	submit_wait(h, "{\"id\":\"lb\",\"kind\":\"redis\",\"repeat\":true,\"args\":{\"conn\":\"watch\","
		       "\"list\":\"jobs\",\"poll_interval_ms\":20}}", "lb");
	for (int i = 0; i < 3; i++) {
		char doc[200], id[16];
		snprintf(id, sizeof(id), "o%d", i);
		snprintf(doc, sizeof(doc), "{\"id\":\"%s\",\"kind\":\"redis\",\"args\":{\"conn\":\"watch\","
			 "\"list\":\"oq\",\"poll_interval_ms\":20}}", id);
		submit_wait(h, doc, id);
	}
	enum { N = 200 };
	for (int i = 0; i < N; i += 10) {
		for (int j = i; j < i + 10; j++)
			redisAppendCommand(f->w.c, "RPUSH jobs e%d", j);
		for (int j = i; j < i + 10; j++) {
			redisReply *r;
			assert_int_equal(redisGetReply(f->w.c, (void **)&r), REDIS_OK);
			freeReplyObject(r);
		}
		sleep_ms(2);
	}
	wcmd(&f->w, "RPUSH oq x1 x2");
	static struct event ev[N + 20];
	assert_int_equal(wait_events(h, ev, N + 2, 10000), N + 2);
	assert_int_equal(read_events(h, ev + N + 2, 10, 500), 0);
	static unsigned char seen[N];
	int by_a = 0, by_b = 0, ones = 0;
	for (int i = 0; i < N + 2; i++) {
		char d[32];
		data_of(&ev[i], d, sizeof(d));
		if (ev[i].id[0] == 'o') {
			ones++;
			assert_true(!strcmp(d, "x1") || !strcmp(d, "x2"));
			continue;
		}
		assert_int_equal(d[0], 'e');
		int k = atoi(d + 1);
		assert_true(k >= 0 && k < N);
		if (seen[k]++)
			fail_msg("element e%d delivered twice", k);
		by_a += !strcmp(ev[i].id, "la");
		by_b += !strcmp(ev[i].id, "lb");
	}
	assert_int_equal(ones, 2);
	assert_int_equal(by_a + by_b, N);
	wcmd(&f->w, "RPUSH oq x3");
	assert_int_equal(wait_events(h, ev, 1, 3000), 1);
	assert_string_equal(ev[0].id[0] == 'o' ? "o" : ev[0].id, "o");
	assert_int_equal(wint(&f->w, "LLEN jobs"), 0);
	assert_int_equal(wint(&f->w, "LLEN oq"), 0);
	/* Every processing list is emptied once Redis applied the events. */
	redisReply *r = NULL;
	for (int i = 0; i < 200; i++) {
		if (r)
			freeReplyObject(r);
		r = redisCommand(f->w.c, "KEYS *:triggerd:*");
		if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 0)
			break;
		sleep_ms(10);
	}
	assert_int_equal(r->elements, 0);
	freeReplyObject(r);
}

/* triggerd is SIGKILLed while elements flow; after a restart every element
 * is in exactly one event. */
static void list_survives_sigkill(void **state)
{
	struct fix *f = *state;
	struct harness *h = &f->h;
	assert_int_equal(harness_td_start(h, NULL), 0);
	enum { N = 400, NO = 30 };
	submit_wait(h, "{\"id\":\"lk\",\"kind\":\"redis\",\"repeat\":true,\"args\":{\"conn\":\"watch\","
		       "\"list\":\"work\",\"poll_interval_ms\":10}}", "lk");
	static char *docs[NO];
	for (int i = 0; i < NO; i++)
		assert_true(asprintf(&docs[i], "{\"id\":\"ok%d\",\"kind\":\"redis\",\"args\":{\"conn\":\"watch\","
				     "\"list\":\"work1\",\"poll_interval_ms\":10}}", i) > 0);
	assert_int_equal(submit_json_many(h, docs, NO), 0);
	for (int i = 0; i < NO; i++)
		free(docs[i]);
	for (int i = 0; i < 300 && redis_int(h, "HLEN td:triggers") < NO + 1; i++)
		sleep_ms(10);
	assert_int_equal(redis_int(h, "HLEN td:triggers"), NO + 1);
	sleep_ms(50);
	int pushed1 = 0;
	for (int b = 0; b < N / 10; b++) {
		for (int j = b * 10; j < b * 10 + 10; j++)
			redisAppendCommand(f->w.c, "RPUSH work e%d", j);
		redisAppendCommand(f->w.c, "RPUSH work1 w%d", pushed1);
		for (int j = 0; j < 11; j++) {
			redisReply *r;
			assert_int_equal(redisGetReply(f->w.c, (void **)&r), REDIS_OK);
			freeReplyObject(r);
		}
		pushed1++;
		if (b == N / 20)
			harness_td_stop(h, SIGKILL); /* mid-flow */
		sleep_ms(3);
	}
	assert_int_equal(harness_td_start(h, NULL), 0);
	strcpy(h->last_event, "0-0");
	static struct event ev[N + NO + 50];
	int want = N + (pushed1 < NO ? pushed1 : NO);
	int got = wait_events(h, ev, want, 20000);
	got += read_events(h, ev + got, 40, 500);
	static unsigned char seen[N], seen1[NO + 40];
	int n0 = 0, n1 = 0;
	for (int i = 0; i < got; i++) {
		char d[32];
		assert_string_equal(ev[i].status, "success");
		data_of(&ev[i], d, sizeof(d));
		int k = atoi(d + 1);
		if (d[0] == 'e') {
			assert_true(k >= 0 && k < N);
			if (seen[k]++)
				fail_msg("e%d delivered twice", k);
			n0++;
		} else {
			assert_int_equal(d[0], 'w');
			assert_true(k >= 0 && k < NO + 40);
			if (seen1[k]++)
				fail_msg("w%d delivered twice", k);
			n1++;
		}
	}
	if (n0 != N)
		for (int k = 0; k < N; k++)
			if (!seen[k])
				fail_msg("e%d never delivered (%d of %d)", k, n0, N);
	assert_int_equal(n1, want - N);
	assert_int_equal(wint(&f->w, "LLEN work"), 0);
	assert_int_equal(wint(&f->w, "LLEN work1"), pushed1 > NO ? pushed1 - NO : 0);
	/* The repeat trigger's processing list is drained after the restart. */
	redisReply *r = NULL;
	bool empty = false;
	for (int i = 0; i < 200 && !empty; i++) {
		r = redisCommand(f->w.c, "KEYS work:triggerd:lk:*");
		empty = r && r->type == REDIS_REPLY_ARRAY && r->elements == 0;
		freeReplyObject(r);
		if (!empty)
			sleep_ms(10);
	}
	assert_true(empty);
}

/* ---- the watched server restarts ---------------------------------------------- */

static void watched_server_restarts(void **state)
{
	struct fix *f = *state;
	struct harness *h = &f->h;
	assert_int_equal(harness_td_start(h, NULL), 0);
	submit_wait(h, "{\"id\":\"wk\",\"kind\":\"redis\",\"args\":{\"conn\":\"watch\",\"key\":\"rk\","
		       "\"poll_interval_ms\":100}}", "wk");
	submit_wait(h, "{\"id\":\"wc\",\"kind\":\"redis\",\"args\":{\"conn\":\"watch\",\"channels\":\"rc\"}}",
		    "wc");
	submit_wait(h, "{\"id\":\"ws\",\"kind\":\"redis\",\"args\":{\"conn\":\"watch\",\"stream\":\"rs\"}}",
		    "ws");
	submit_wait(h, "{\"id\":\"wl\",\"kind\":\"redis\",\"args\":{\"conn\":\"watch\",\"list\":\"rl\","
		       "\"poll_interval_ms\":50}}", "wl");
	wait_subscribed(&f->w, "rc", 1);
	sleep_ms(200);
	watch_kill(&f->w);
	sleep_ms(700);
	assert_int_equal(watch_run(h, &f->w), 0);
	wait_subscribed(&f->w, "rc", 1);
	sleep_ms(100);
	wcmd(&f->w, "PUBLISH rc back");
	wcmd(&f->w, "SET rk 1");
	wcmd(&f->w, "XADD rs * a b");
	wcmd(&f->w, "RPUSH rl z");
	struct event ev[8];
	assert_int_equal(wait_events(h, ev, 4, 8000), 4);
	const char *ids[] = {"wk", "wc", "ws", "wl"};
	for (int i = 0; i < 4; i++) {
		const struct event *e = find(ev, 4, ids[i]);
		if (!e)
			fail_msg("%s did not fire after the restart", ids[i]);
		assert_string_equal(e->status, "success");
	}
	assert_true(log_contains(h, "watched redis is down"));
	assert_true(log_contains(h, "watched redis is back"));
}

/* The watched server answers -BUSY (a long script runs) when a list trigger
 * starts with an element left on its processing list by an earlier run,
 * and when a stream trigger resolves "$": both are retried once it is
 * free. The old element is delivered (exactly once) before anything newer,
 * and the stream trigger joins the read. */
static void watched_server_busy(void **state)
{
	struct fix *f = *state;
	struct harness *h = &f->h;
	assert_int_equal(harness_td_start(h, NULL), 0);
	/* As if a previous run popped OLD for "lr" and died before posting. */
	wcmd(&f->w, "RPUSH rq:triggerd:lr:00000000000000ab 1.1.1:L2:rqOLD");
	wcmd(&f->w, "RPUSH rq NEW");
	redisReply *r = redisCommand(f->w.c, "XADD ss * k old");
	assert_non_null(r);
	char old[64];
	snprintf(old, sizeof(old), "%s", r->str);
	freeReplyObject(r);
	wcmd(&f->w, "CONFIG SET lua-time-limit 50");
	/* A script that runs until killed: other clients get -BUSY. */
	redisContext *busy = redisConnectUnix(f->w.sock);
	assert_true(busy && !busy->err);
	redisAppendCommand(busy, "EVAL %s 0", "while true do end");
	for (int done = 0; !done;)
		assert_int_equal(redisBufferWrite(busy, &done), REDIS_OK);
	sleep_ms(150);
	submit_wait(h, "{\"id\":\"lr\",\"kind\":\"redis\",\"args\":{\"conn\":\"watch\",\"list\":\"rq\","
		       "\"poll_interval_ms\":20,\"nonce\":\"00000000000000ab\"}}", "lr");
	submit_wait(h, "{\"id\":\"sb\",\"kind\":\"redis\",\"args\":{\"conn\":\"watch\",\"stream\":\"ss\"}}",
		    "sb");
	assert_true(harness_wait_log(h, "reading a processing list failed", 3000));
	assert_true(harness_wait_log(h, "resolving a stream", 3000));
	sleep_ms(300);
	wcmd(&f->w, "SCRIPT KILL");
	r = NULL;
	assert_int_equal(redisGetReply(busy, (void **)&r), REDIS_OK);
	assert_int_equal(r->type, REDIS_REPLY_ERROR);
	freeReplyObject(r);
	redisFree(busy);
	/* "$" is resolved once the server is free (after the old entry). */
	char want[96];
	snprintf(want, sizeof(want), "\"after_id\":\"%s\"", old);
	bool resolved = false;
	for (int i = 0; i < 500 && !resolved; i++) {
		r = redisCommand(h->c, "HGET td:triggers sb");
		resolved = r && r->type == REDIS_REPLY_STRING && memmem(r->str, r->len, old, strlen(old));
		if (r)
			freeReplyObject(r);
		if (!resolved)
			sleep_ms(10);
	}
	assert_true(resolved);
	r = redisCommand(f->w.c, "XADD ss * k new");
	assert_non_null(r);
	char neu[64];
	snprintf(neu, sizeof(neu), "%s", r->str);
	freeReplyObject(r);
	struct event ev[4];
	assert_int_equal(wait_events(h, ev, 2, 5000), 2);
	const struct event *e = find(ev, 2, "lr");
	assert_non_null(e);
	assert_string_equal(e->payload_json, "{\"list\":\"rq\",\"data\":\"OLD\"}");
	e = find(ev, 2, "sb");
	assert_non_null(e);
	assert_non_null(strstr(e->payload_json, neu));
	assert_int_equal(read_events(h, ev, 4, 500), 0);
	/* NEW waits for another trigger; OLD is acked off the processing list. */
	assert_int_equal(wint(&f->w, "LLEN rq"), 1);
	for (int i = 0; i < 200 && wint(&f->w, "LLEN rq:triggerd:lr:00000000000000ab") > 0; i++)
		sleep_ms(10);
	assert_int_equal(wint(&f->w, "LLEN rq:triggerd:lr:00000000000000ab"), 0);
}

/* ---- Airflow ---------------------------------------------------------------- */

static void airflow_classpaths(void **state)
{
	struct fix *f = *state;
	struct harness *h = &f->h;
	assert_int_equal(harness_td_start(h, NULL), 0);
	submit_wait(h, "{\"id\":\"af1\",\"classpath\":\"airflow.providers.redis.triggers."
		       "redis_await_message.AwaitMessageTrigger\",\"kwargs\":{\"channels\":\"afc\","
		       "\"redis_conn_id\":\"watch\",\"poll_interval\":0.1}}", "af1");
	submit_wait(h, "{\"id\":\"af2\",\"classpath\":\"airflow.providers.redis.triggers."
		       "redis_list_await_message.AwaitMessageFromListTrigger\",\"kwargs\":{\"lists\":"
		       "[\"la\",\"lb\"],\"redis_conn_id\":\"watch\",\"timeout\":1}}", "af2");
	wait_subscribed(&f->w, "afc", 1);
	wcmd(&f->w, "PUBLISH afc m1");
	struct event ev[4];
	assert_int_equal(wait_events(h, ev, 1, 3000), 1);
	assert_string_equal(ev[0].id, "af1");
	assert_string_equal(ev[0].kind, "redis");
	assert_string_equal(ev[0].payload_json,
			    "{\"type\":\"message\",\"pattern\":null,\"channel\":\"afc\",\"data\":\"m1\"}");
	/* "timeout" is BRPOP's block time, retried by the Airflow trigger:
	 * not a deadline. */
	assert_int_equal(read_events(h, ev, 2, 1300), 0);
	wcmd(&f->w, "RPUSH lb 1 2");
	assert_int_equal(wait_events(h, ev, 1, 3000), 1);
	assert_string_equal(ev[0].id, "af2");
	assert_string_equal(ev[0].status, "success");
	assert_string_equal(ev[0].payload_json, "{\"list\":\"lb\",\"data\":\"2\"}"); /* BRPOP */
	assert_int_equal(wint(&f->w, "LLEN lb"), 1);
	/* Lists are tried in order. */
	wcmd(&f->w, "RPUSH la a1");
	assert_int_equal(submit_json(h, "{\"id\":\"af3\",\"classpath\":\"airflow.providers.redis."
				     "triggers.redis_list_await_message.AwaitMessageFromListTrigger\","
				     "\"kwargs\":{\"lists\":[\"la\",\"lb\"],\"redis_conn_id\":\"watch\"}}"), 0);
	assert_int_equal(wait_events(h, ev, 1, 3000), 1);
	assert_string_equal(ev[0].payload_json, "{\"list\":\"la\",\"data\":\"a1\"}");
	assert_int_equal(wint(&f->w, "LLEN lb"), 1);
}

static void bad_specs_rejected(void **state)
{
	struct fix *f = *state;
	struct harness *h = &f->h;
	assert_int_equal(harness_td_start(h, NULL), 0);
	static const struct {
		const char *json, *error;
	} cases[] = {
		{"{\"id\":\"b1\",\"kind\":\"redis\",\"args\":{\"conn\":\"nope\",\"key\":\"x\"}}",
		 "args.conn: no connection 'nope'"},
		{"{\"id\":\"b2\",\"kind\":\"redis\",\"args\":{\"conn\":\"notredis\",\"key\":\"x\"}}",
		 "args.conn: connection 'notredis': conn_type is 'http'"},
		{"{\"id\":\"b3\",\"kind\":\"redis\",\"args\":{\"conn\":\"watch\",\"key\":\"x\",\"channels\":\"c\"}}",
		 "args: give exactly one of"},
		{"{\"id\":\"b4\",\"kind\":\"redis\",\"repeat\":true,\"args\":{\"conn\":\"watch\",\"key\":\"x\"}}",
		 "args.key: repeat is not supported"},
		{"{\"id\":\"b5\",\"kind\":\"redis\",\"args\":{\"conn\":\"watch\",\"key\":\"x\",\"poll_interval_ms\":5}}",
		 "args.poll_interval_ms: expected 10..3600000"},
		{"{\"id\":\"b6\",\"kind\":\"redis\",\"args\":{\"conn\":\"watch\",\"stream\":\"s\",\"after_id\":\"abc\"}}",
		 "args.after_id: expected"},
		{"{\"id\":\"b7\",\"kind\":\"redis\",\"args\":{\"conn\":\"watch\",\"channels\":[]}}",
		 "args.channels: expected a string or a list"},
		{"{\"id\":\"b8\",\"kind\":\"redis\",\"args\":{\"conn\":\"watch\",\"channels\":[\"a\",\"a\"]}}",
		 "args.channels[1]: given twice"},
		{"{\"id\":\"b9\",\"kind\":\"redis\",\"args\":{\"conn\":\"watch\",\"list\":\"l\",\"pop\":\"middle\"}}",
		 "args.pop: expected"},
		{"{\"id\":\"b10\",\"kind\":\"redis\",\"args\":{\"conn\":\"watch\",\"key\":\"x\",\"foo\":1}}",
		 "args.foo: unknown field"},
		{"{\"id\":\"b11\",\"kind\":\"redis\",\"args\":{\"conn\":\"watch\",\"channels\":\"c\",\"equals\":\"v\"}}",
		 "args.equals: only with key"},
		{"{\"id\":\"b12\",\"kind\":\"redis\"}", "args: required map"},
		{"{\"id\":\"b13\",\"classpath\":\"airflow.providers.redis.triggers.redis_await_message."
		 "AwaitMessageTrigger\",\"kwargs\":{\"redis_conn_id\":\"watch\"}}",
		 "kwargs.channels: required"},
		{"{\"id\":\"b14\",\"classpath\":\"airflow.providers.redis.triggers.redis_list_await_message."
		 "AwaitMessageFromListTrigger\",\"kwargs\":{\"lists\":\"l\",\"block\":1}}",
		 "kwargs.block: not an AwaitMessageFromListTrigger argument"},
		{"{\"id\":\"b15\",\"classpath\":\"airflow.providers.redis.triggers.redis_await_message."
		 "AwaitMessageTrigger\",\"kwargs\":{\"channels\":\"c\"}}",
		 "args.conn: no connection 'redis_default'"},
	};
	size_t n = sizeof(cases) / sizeof(cases[0]);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(submit_json(h, cases[i].json), 0);
	static struct event ev[32];
	assert_int_equal(wait_events(h, ev, (int)n, 5000), (int)n);
	for (size_t i = 0; i < n; i++) {
		char id[16];
		snprintf(id, sizeof(id), "b%zu", i + 1);
		const struct event *e = find(ev, (int)n, id);
		if (!e)
			fail_msg("no event for %s", id);
		assert_string_equal(e->status, "rejected");
		if (!strstr(e->error, cases[i].error))
			fail_msg("%s: error '%s', want '%s'", id, e->error, cases[i].error);
	}
	assert_int_equal(redis_int(h, "HLEN td:triggers"), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(key_exists_and_equals, setup, teardown),
		cmocka_unit_test_setup_teardown(keyspace_notifications, setup, teardown),
		cmocka_unit_test_setup_teardown(pubsub_channels_and_patterns, setup, teardown),
		cmocka_unit_test_setup_teardown(shared_connections, setup, teardown),
		cmocka_unit_test_setup_teardown(streams_after_id, setup, teardown),
		cmocka_unit_test_setup_teardown(list_each_element_once, setup, teardown),
		cmocka_unit_test_setup_teardown(list_survives_sigkill, setup, teardown),
		cmocka_unit_test_setup_teardown(watched_server_restarts, setup, teardown),
		cmocka_unit_test_setup_teardown(watched_server_busy, setup, teardown),
		cmocka_unit_test_setup_teardown(airflow_classpaths, setup, teardown),
		cmocka_unit_test_setup_teardown(bad_specs_rejected, setup, teardown),
	};
	if (getenv("TD_TEST_FILTER")) /* e.g. TD_TEST_FILTER=list_* */
		cmocka_set_test_filter(getenv("TD_TEST_FILTER"));
	return cmocka_run_group_tests(tests, NULL, NULL);
}
