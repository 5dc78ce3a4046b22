/*
 * Webhook receiving benchmark: requests/s and latency of triggerd's webhook
 * listener against Debian nginx-light answering `return 204`, on the same
 * machine and in the same run, so the ratio compares like with like.
 *
 * Scenarios (POST of a fixed ~250-byte JSON body):
 *   none    /hooks/bench/none: nothing waits there, triggerd answers 404
 *   repeat  /hooks/bench/plain: a repeat webhook trigger, 202 and one event
 *           per request
 *   signed  /hooks/bench/signed: the same with GitHub HMAC-SHA256 signature
 *           verification and a unique X-GitHub-Delivery per request
 * nginx gets the same requests and answers 204 to all of them.
 *
 * Load: closed loop, C keep-alive connections each with one request in
 * flight, from 1 (default) or more epoll threads. A warm-up runs first and is
 * not measured; a response counts in the window when it completes inside it.
 * Latency is send start to full response, in a log-linear histogram (128
 * buckets per power of two: under 0.8% error). Every 2xx triggerd gives, in
 * the warm-up and the window alike, must show up as exactly one event on
 * td:events.
 *
 * usage: bench_webhook [-c N] [-d S] [--warmup-s S] [--rounds N] [-t THREADS]
 *                      [--scenario none|repeat|signed|all] [--json FILE]
 *                      [--nginx-only]
 * Needs nginx (Debian nginx-light) and redis-server in PATH; starts both,
 * and triggerd from $TRIGGERD_BIN or ./build/triggerd.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../tests/harness.h"

#define SECRET "bench-secret-123"
#define HOOK_BODY                                                                          \
	"{\"action\":\"completed\",\"workflow_run\":{\"id\":7291048317,\"name\":\"ci\","  \
	"\"head_branch\":\"main\",\"head_sha\":\"9f2c1e4b7a3d5e6f8091a2b3c4d5e6f708192a3b\"," \
	"\"status\":\"completed\",\"conclusion\":\"success\",\"run_attempt\":1},"          \
	"\"repository\":{\"full_name\":\"acme/widgets\",\"private\":false},"               \
	"\"sender\":{\"login\":\"octocat\"}}"
#define NS 1000000000ULL
#define DRAIN_NS (5 * NS)   /* how long in-flight requests may take after the window */

/* Histogram: values below 256 ns exact, then 128 buckets per power of two. */
#define HALF 128
#define MAX_MSB 40
#define NBUCKET ((MAX_MSB - 7 + 2) * HALF)

enum { E_CONNECT, E_RESET, E_EOF, E_CLOSE, E_PARSE, E_UNFINISHED, E_COUNT };
static const char *const err_names[E_COUNT] = {
	"connect", "reset", "eof", "conn-close", "parse", "unfinished"};

enum { SC_NONE, SC_REPEAT, SC_SIGNED, SC_COUNT };
static const char *const sc_names[SC_COUNT] = {"none", "repeat", "signed"};
static const char *const sc_paths[SC_COUNT] = {"bench/none", "bench/plain", "bench/signed"};

enum { T_NGINX, T_TD };
static const char *const target_names[2] = {"nginx", "triggerd"};

struct opts {
	int conns, secs, warmup_s, rounds, threads;
	bool sc[SC_COUNT];
	bool nginx_only;
	const char *json;
};

struct stats {
	uint64_t hist[NBUCKET];
	uint64_t n;             /* responses completed in the window */
	uint64_t max_ns;
	uint64_t status[600];   /* window; [0] holds codes out of range */
	uint64_t all_2xx;       /* whole run: warm-up, window, tail */
	uint64_t all_resp;
	uint64_t err[E_COUNT];  /* whole run */
};

/* Request bytes; only the last 12 hex digits of the delivery id change. */
struct req {
	char buf[2048];
	size_t len;
	size_t id_off;          /* offset of the 36-char delivery id; 0: none */
};

struct load {
	struct sockaddr_in addr;
	const struct req *req;
	uint64_t t0, t1;        /* window, CLOCK_MONOTONIC ns */
};

enum { C_DOWN, C_CONNECTING, C_IDLE, C_SENDING, C_WAITING };

struct conn {
	int fd;
	int state;
	bool wout;              /* EPOLLOUT armed */
	bool closing;           /* the response said Connection: close */
	int status;
	uint64_t seq, t_send, retry_at;
	size_t sent;
	size_t rlen;            /* bytes buffered while the head is incomplete */
	size_t need, got;       /* whole response size and bytes so far, once the head is parsed */
	char req[2048];
	char rbuf[4096];
};

struct worker {
	pthread_t thr;
	int ep;
	unsigned n, ndown;
	struct conn *conns;
	const struct load *load;
	struct stats *st;
};

struct result {
	double rps, p50, p90, p99, p999, max_ms;   /* latencies in ms */
	double cpu_server, cpu_redis, cpu_self;   /* seconds in the window */
	double cpu_others;      /* every other process on the machine */
	struct stats *st;
};

static atomic_int stop_flag;

static void on_signal(int sig)
{
	(void)sig;
	atomic_fetch_add(&stop_flag, 1);   /* a second one also abandons the drain */
}

static uint64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * NS + (uint64_t)ts.tv_nsec;
}

static void sleep_until(uint64_t t)
{
	struct timespec ts = {(time_t)(t / NS), (long)(t % NS)};
	while (!atomic_load(&stop_flag) &&
	       clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
		;
}

static unsigned bucket_of(uint64_t v)
{
	if (v < 2 * HALF)
		return (unsigned)v;
	if (v >> (MAX_MSB + 1))
		v = (1ULL << (MAX_MSB + 1)) - 1;
	unsigned shift = 63 - (unsigned)__builtin_clzll(v) - 7;
	return shift * HALF + (unsigned)(v >> shift);
}

static uint64_t bucket_mid(unsigned i)
{
	if (i < 2 * HALF)
		return i;
	unsigned shift = i / HALF - 1;
	return ((uint64_t)(i - shift * HALF) << shift) + (1ULL << shift) / 2;
}

static double pct_ms(const struct stats *st, double q)
{
	if (!st->n)
		return 0;
	uint64_t want = (uint64_t)(q * (double)st->n + 0.999999), acc = 0;
	if (want < 1)
		want = 1;
	for (unsigned i = 0; i < NBUCKET; i++) {
		acc += st->hist[i];
		if (acc >= want) {
			uint64_t v = bucket_mid(i);
			return (double)(v < st->max_ns ? v : st->max_ns) / 1e6;
		}
	}
	return (double)st->max_ns / 1e6;
}

static int free_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t al = sizeof(a);
	bind(fd, (struct sockaddr *)&a, sizeof(a));
	getsockname(fd, (struct sockaddr *)&a, &al);
	close(fd);
	return ntohs(a.sin_port);
}

static bool port_answers(int port)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	bool ok = connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
	close(fd);
	return ok;
}

static double cpu_s(pid_t pid)
{
	char path[64], buf[1024];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	char *p = strrchr(buf, ')');
	unsigned long ut = 0, st = 0;
	/* fields after the comm: state(3) ... utime(14) stime(15) */
	if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
		return -1;
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
		return -1;
	int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2],
		       &v[3], &v[4], &v[5], &v[6], &v[7]);
	fclose(f);
	if (n != 8)
		return -1;
	unsigned long long busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
	return (double)busy / (double)sysconf(_SC_CLK_TCK);
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

/* ---- requests ---------------------------------------------------------- */

static void build_req(struct req *r, int sc, int port)
{
	const char *body = HOOK_BODY;
	size_t blen = strlen(body);
	char sig[200] = "";
	if (sc == SC_SIGNED) {
		unsigned char mac[32];
		size_t ml = 0;
		char hex[65];
		/* The body is fixed, so one MAC serves every request. */
		if (!EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, SECRET, strlen(SECRET),
			       (const unsigned char *)body, blen, mac, sizeof(mac), &ml) || ml != 32) {
			fprintf(stderr, "bench_webhook: HMAC failed\n");
			exit(1);
		}
		for (int i = 0; i < 32; i++)
			snprintf(hex + 2 * i, 3, "%02x", mac[i]);
		snprintf(sig, sizeof(sig), "X-Hub-Signature-256: sha256=%s\r\n"
			 "X-GitHub-Delivery: ", hex);
	}
	int n = snprintf(r->buf, sizeof(r->buf),
			 "POST /hooks/%s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
			 "User-Agent: GitHub-Hookshot/bench\r\nAccept: */*\r\n"
			 "Content-Type: application/json\r\nX-GitHub-Event: workflow_run\r\n%s",
			 sc_paths[sc], port, sig);
	r->id_off = 0;
	if (sc == SC_SIGNED) {
		r->id_off = (size_t)n;
		n += snprintf(r->buf + n, sizeof(r->buf) - (size_t)n,
			      "00000000-0000-0000-8000-000000000000\r\n");
	}
	n += snprintf(r->buf + n, sizeof(r->buf) - (size_t)n, "Content-Length: %zu\r\n\r\n%s",
		      blen, body);
	r->len = (size_t)n;
}

static void put_hex12(char *p, uint64_t v)
{
	static const char digits[] = "0123456789abcdef";
	for (int i = 11; i >= 0; i--, v >>= 4)
		p[i] = digits[v & 15];
}

/* ---- load generator (one worker per thread; nothing shared but *load) --- */

static void conn_fail(struct worker *w, struct conn *c, int err, uint64_t now)
{
	w->st->err[err]++;
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	c->state = C_DOWN;
	/* A refused connect is retried after 10 ms, anything else at once. */
	c->retry_at = now + (err == E_CONNECT ? 10000000ULL : 0);
	w->ndown++;
}

static void arm_out(struct worker *w, struct conn *c, bool on)
{
	if (c->wout == on)
		return;
	struct epoll_event ev = {.events = EPOLLIN | (on ? EPOLLOUT : 0), .data.ptr = c};
	epoll_ctl(w->ep, EPOLL_CTL_MOD, c->fd, &ev);
	c->wout = on;
}

static void write_more(struct worker *w, struct conn *c, uint64_t now)
{
	size_t len = w->load->req->len;
	ssize_t n = send(c->fd, c->req + c->sent, len - c->sent, MSG_NOSIGNAL);
	if (n < 0) {
		if (errno == EAGAIN || errno == EINTR)
			arm_out(w, c, true);
		else
			conn_fail(w, c, E_RESET, now);
		return;
	}
	c->sent += (size_t)n;
	if (c->sent < len) {
		arm_out(w, c, true);
		return;
	}
	c->state = C_WAITING;
	arm_out(w, c, false);
}

static void send_req(struct worker *w, struct conn *c, uint64_t now)
{
	if (w->load->req->id_off)
		put_hex12(c->req + w->load->req->id_off + 24, c->seq++);
	c->sent = c->rlen = c->need = c->got = 0;
	c->t_send = now;
	c->state = C_SENDING;
	write_more(w, c, now);
}

static void conn_open(struct worker *w, struct conn *c, uint64_t now)
{
	w->ndown--;
	c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int one = 1;
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(c->fd, (const struct sockaddr *)&w->load->addr, sizeof(w->load->addr)) < 0 &&
	    errno != EINPROGRESS) {
		conn_fail(w, c, E_CONNECT, now);
		return;
	}
	struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
	epoll_ctl(w->ep, EPOLL_CTL_ADD, c->fd, &ev);
	c->wout = true;
	c->state = C_CONNECTING;
}

static void connected(struct worker *w, struct conn *c, uint64_t now)
{
	int err = 0;
	socklen_t el = sizeof(err);
	if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0 || err) {
		conn_fail(w, c, E_CONNECT, now);
		return;
	}
	c->state = C_IDLE;
	if (now < w->load->t1 && !atomic_load(&stop_flag))
		send_req(w, c, now);
	else
		arm_out(w, c, false);
}

/* Parse the response head in c->rbuf: 1 done, 0 incomplete, -1 unusable. */
static int parse_head(struct conn *c)
{
	char *end = memmem(c->rbuf, c->rlen, "\r\n\r\n", 4);
	if (!end)
		return 0;
	size_t hlen = (size_t)(end + 4 - c->rbuf);
	const char *s = c->rbuf;
	if (hlen < 16 || memcmp(s, "HTTP/1.", 7) || s[8] != ' ' || s[9] < '1' || s[9] > '5' ||
	    s[10] < '0' || s[10] > '9' || s[11] < '0' || s[11] > '9')
		return -1;
	int status = (s[9] - '0') * 100 + (s[10] - '0') * 10 + (s[11] - '0');
	long clen = -1;
	bool chunked = false;
	c->closing = false;
	char *line = memmem(c->rbuf, hlen, "\r\n", 2) + 2;
	while (line < end) {
		char *eol = memmem(line, (size_t)(end + 2 - line), "\r\n", 2);
		char *v = memchr(line, ':', (size_t)(eol - line));
		if (v) {
			size_t kl = (size_t)(v - line);
			for (v++; v < eol && (*v == ' ' || *v == '\t'); v++)
				;
			if (kl == 14 && !strncasecmp(line, "content-length", 14))
				clen = strtol(v, NULL, 10);
			else if (kl == 10 && !strncasecmp(line, "connection", 10))
				c->closing = eol - v >= 5 && !strncasecmp(v, "close", 5);
			else if (kl == 17 && !strncasecmp(line, "transfer-encoding", 17))
				chunked = true;
		}
		line = eol + 2;
	}
	if (chunked)
		return -1;   /* neither server under test sends it for these answers */
	if (clen < 0) {
		if (status != 204 && status != 304 && status >= 200)
			return -1;
		clen = 0;
	}
	c->status = status;
	c->need = hlen + (size_t)clen;
	c->got = c->rlen;
	return 1;
}

static void complete(struct worker *w, struct conn *c)
{
	uint64_t now = mono_ns();
	const struct load *l = w->load;
	struct stats *st = w->st;
	st->all_resp++;
	st->all_2xx += c->status / 100 == 2;
	if (now >= l->t0 && now < l->t1) {
		uint64_t lat = now - c->t_send;
		st->hist[bucket_of(lat)]++;
		st->n++;
		if (lat > st->max_ns)
			st->max_ns = lat;
		st->status[c->status < 600 ? c->status : 0]++;
	}
	c->state = C_IDLE;
	if (c->closing)
		conn_fail(w, c, E_CLOSE, now);
	else if (now < l->t1 && !atomic_load(&stop_flag))
		send_req(w, c, now);
}

static void readable(struct worker *w, struct conn *c, uint64_t now)
{
	/* Body bytes are only counted: they go over the start of the buffer. */
	char *p = c->need ? c->rbuf : c->rbuf + c->rlen;
	size_t room = c->need ? sizeof(c->rbuf) : sizeof(c->rbuf) - c->rlen;
	ssize_t n = recv(c->fd, p, room, 0);
	if (n < 0) {
		if (errno != EAGAIN && errno != EINTR)
			conn_fail(w, c, E_RESET, now);
		return;
	}
	if (n == 0) {
		conn_fail(w, c, E_EOF, now);
		return;
	}
	if (c->state != C_SENDING && c->state != C_WAITING) {
		conn_fail(w, c, E_PARSE, now);
		return;
	}
	if (!c->need) {
		c->rlen += (size_t)n;
		int rc = parse_head(c);
		if (rc < 0 || (rc == 0 && c->rlen == sizeof(c->rbuf)))
			conn_fail(w, c, E_PARSE, now);
		if (rc <= 0)
			return;
	} else {
		c->got += (size_t)n;
	}
	if (c->got > c->need || (c->got == c->need && c->state != C_WAITING))
		conn_fail(w, c, E_PARSE, now);   /* bytes past the response, or an early answer */
	else if (c->got == c->need)
		complete(w, c);
}

static void *worker_run(void *arg)
{
	struct worker *w = arg;
	const struct load *l = w->load;
	struct epoll_event evs[256];
	uint64_t now = mono_ns();
	w->ndown = w->n;
	for (unsigned i = 0; i < w->n; i++)
		conn_open(w, &w->conns[i], now);
	for (;;) {
		now = mono_ns();
		int timeout;
		if (now >= l->t1 || atomic_load(&stop_flag)) {
			unsigned busy = 0;
			for (unsigned i = 0; i < w->n; i++)
				busy += w->conns[i].state == C_SENDING || w->conns[i].state == C_WAITING;
			if (!busy)
				break;
			if (now >= l->t1 + DRAIN_NS || atomic_load(&stop_flag) > 1) {
				w->st->err[E_UNFINISHED] += busy;
				break;
			}
			timeout = 10;
		} else {
			uint64_t next = l->t1;
			for (unsigned i = 0; w->ndown && i < w->n; i++) {
				struct conn *c = &w->conns[i];
				if (c->state == C_DOWN && c->retry_at <= now)
					conn_open(w, c, now);
				if (c->state == C_DOWN && c->retry_at < next)
					next = c->retry_at;
			}
			timeout = (int)((next - now + 999999) / 1000000);
			if (timeout > 100)
				timeout = 100;
		}
		int n = epoll_wait(w->ep, evs, 256, timeout);
		now = mono_ns();
		for (int i = 0; i < n; i++) {
			struct conn *c = evs[i].data.ptr;
			uint32_t e = evs[i].events;
			if (c->state == C_CONNECTING) {
				connected(w, c, now);
				continue;
			}
			if ((e & EPOLLOUT) && c->state == C_SENDING)
				write_more(w, c, now);
			if ((e & (EPOLLIN | EPOLLERR | EPOLLHUP)) && c->fd >= 0)
				readable(w, c, now);
		}
	}
	for (unsigned i = 0; i < w->n; i++)
		if (w->conns[i].fd >= 0)
			close(w->conns[i].fd);
	return NULL;
}

static void stats_add(struct stats *to, const struct stats *from)
{
	for (unsigned i = 0; i < NBUCKET; i++)
		to->hist[i] += from->hist[i];
	for (unsigned i = 0; i < 600; i++)
		to->status[i] += from->status[i];
	for (unsigned i = 0; i < E_COUNT; i++)
		to->err[i] += from->err[i];
	to->n += from->n;
	to->all_2xx += from->all_2xx;
	to->all_resp += from->all_resp;
	if (from->max_ns > to->max_ns)
		to->max_ns = from->max_ns;
}

/* One closed-loop run against @port; CPU of @server and @redis over the window. */
static int run_load(const struct opts *o, int port, const struct req *req, unsigned run,
		    pid_t server, pid_t redis, struct result *out)
{
	static uint32_t nonce;
	if (!nonce)
		nonce = (uint32_t)time(NULL) ^ ((uint32_t)getpid() << 16);
	struct load l = {.addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK)},
			 .req = req};
	struct worker *w = calloc((size_t)o->threads, sizeof(*w));
	struct conn *conns = calloc((size_t)o->conns, sizeof(*conns));
	memset(out, 0, sizeof(*out));
	out->st = calloc(1, sizeof(*out->st));
	for (int i = 0; i < o->conns; i++) {
		struct conn *c = &conns[i];
		c->fd = -1;
		memcpy(c->req, req->buf, req->len);
		if (req->id_off) {
			/* Unique per process, run, connection and request. */
			char id[40];
			snprintf(id, sizeof(id), "%08x-%04x-%04x-8000-000000000000", nonce,
				 run & 0xffff, (unsigned)i & 0xffff);
			memcpy(c->req + req->id_off, id, 36);
		}
	}
	l.t0 = mono_ns() + (uint64_t)o->warmup_s * NS;
	l.t1 = l.t0 + (uint64_t)o->secs * NS;
	for (int t = 0, k = 0; t < o->threads; t++) {
		w[t].conns = conns + k;
		w[t].n = (unsigned)(o->conns / o->threads + (t < o->conns % o->threads));
		k += (int)w[t].n;
		w[t].ep = epoll_create1(EPOLL_CLOEXEC);
		w[t].load = &l;
		w[t].st = calloc(1, sizeof(*w[t].st));
		pthread_create(&w[t].thr, NULL, worker_run, &w[t]);
	}
	sleep_until(l.t0);
	double s0 = cpu_s(server), r0 = redis > 0 ? cpu_s(redis) : 0, m0 = self_cpu_s();
	double b0 = machine_busy_s();
	sleep_until(l.t1);
	double s1 = cpu_s(server), r1 = redis > 0 ? cpu_s(redis) : 0, m1 = self_cpu_s();
	double b1 = machine_busy_s();
	for (int t = 0; t < o->threads; t++) {
		pthread_join(w[t].thr, NULL);
		stats_add(out->st, w[t].st);
		close(w[t].ep);
		free(w[t].st);
	}
	free(conns);
	free(w);
	double secs = (double)(l.t1 - l.t0) / 1e9;
	out->rps = (double)out->st->n / secs;
	out->p50 = pct_ms(out->st, 0.50);
	out->p90 = pct_ms(out->st, 0.90);
	out->p99 = pct_ms(out->st, 0.99);
	out->p999 = pct_ms(out->st, 0.999);
	out->max_ms = (double)out->st->max_ns / 1e6;
	out->cpu_server = s1 - s0;
	out->cpu_redis = redis > 0 ? r1 - r0 : -1;
	out->cpu_self = m1 - m0;
	/* Noise: on a shared machine other jobs take the cores the servers need. */
	out->cpu_others = (b1 - b0) - out->cpu_server - (redis > 0 ? r1 - r0 : 0) - out->cpu_self;
	return atomic_load(&stop_flag) ? -1 : 0;
}

/* ---- servers ----------------------------------------------------------- */

static pid_t nginx_start(const char *dir, int port)
{
	char conf[512];
	snprintf(conf, sizeof(conf), "%s/nginx.conf", dir);
	FILE *f = fopen(conf, "w");
	if (!f)
		return -1;
	fprintf(f, "master_process off; worker_processes 1;\n"
		   "error_log %s/nginx-error.log; pid %s/nginx.pid;\n"
		   "events { worker_connections 4096; }\n"
		   "http { access_log off; keepalive_requests 1000000; keepalive_timeout 300s;\n"
		   " client_body_temp_path %s/body; proxy_temp_path %s/proxy;\n"
		   " fastcgi_temp_path %s/fastcgi; uwsgi_temp_path %s/uwsgi; scgi_temp_path %s/scgi;\n"
		   " server { listen 127.0.0.1:%d; location / { return 204; } } }\n",
		dir, dir, dir, dir, dir, dir, dir, port);
	fclose(f);
	pid_t pid = fork();
	if (pid == 0) {
		execl("/usr/sbin/nginx", "nginx", "-p", dir, "-c", conf, "-g", "daemon off;",
		      (char *)NULL);
		execlp("nginx", "nginx", "-p", dir, "-c", conf, "-g", "daemon off;", (char *)NULL);
		_exit(127);
	}
	for (int i = 0; pid > 0 && i < 200; i++) {
		if (port_answers(port))
			return pid;
		if (waitpid(pid, NULL, WNOHANG) == pid)
			return -1;
		sleep_ms(25);
	}
	if (pid > 0) {
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
	}
	return -1;
}

static void print_log_tail(const char *path)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return;
	char buf[2048];
	fseek(f, 0, SEEK_END);
	long sz = ftell(f);
	fseek(f, sz > (long)sizeof(buf) - 1 ? sz - (long)sizeof(buf) + 1 : 0, SEEK_SET);
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = '\0';
	fclose(f);
	fprintf(stderr, "--- last lines of %s ---\n%s\n", path, buf);
}

/* Print the rejection event of trigger @id, if there is one. */
static void print_rejection(struct harness *h, const char *id)
{
	struct event ev[16];
	int n;
	strcpy(h->last_event, "0-0");
	while ((n = read_events(h, ev, 16, 1)) > 0)
		for (int i = 0; i < n; i++)
			if (!strcmp(ev[i].id, id))
				fprintf(stderr, "  %s: %s %s\n", id, ev[i].status, ev[i].error);
}

static int td_start(struct harness *h, int port)
{
	static const char *const specs[][2] = {
		{"wh-repeat", "{\"id\":\"wh-repeat\",\"kind\":\"webhook\",\"repeat\":true,"
			      "\"args\":{\"path\":\"bench/plain\"}}"},
		{"wh-signed", "{\"id\":\"wh-signed\",\"kind\":\"webhook\",\"repeat\":true,"
			      "\"args\":{\"path\":\"bench/signed\",\"signature\":"
			      "{\"scheme\":\"github\",\"secret_conn\":\"benchsecret\"}}}"},
	};
	char addr[32];
	snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
	/* At warn level there is no "ready" line: wait for the listener instead. */
	const char *args[] = {"--log-level", "warn", "--webhook-listen", addr,
			      "--webhook-rate-limit", "off", "--listen", "off", NULL};
	if (harness_td_spawn(h, args) != 0)
		return -1;
	bool up = false;
	for (int i = 0; i < 400 && !up; i++) {
		if (waitpid(h->td_pid, NULL, WNOHANG) == h->td_pid) {
			h->td_pid = 0;
			break;
		}
		up = port_answers(port);
		if (!up)
			sleep_ms(25);
	}
	if (!up) {
		fprintf(stderr, "bench_webhook: triggerd did not open %s\n", addr);
		return -1;
	}
	for (size_t i = 0; i < sizeof(specs) / sizeof(specs[0]); i++)
		if (submit_json(h, specs[i][1]) != 0)
			return -1;
	for (size_t i = 0; i < sizeof(specs) / sizeof(specs[0]); i++) {
		int tries = 0;
		while (redis_int(h, "HEXISTS td:triggers %s", specs[i][0]) != 1 && ++tries < 200)
			sleep_ms(50);
		if (tries == 200) {
			fprintf(stderr, "bench_webhook: trigger %s was not stored\n", specs[i][0]);
			print_rejection(h, specs[i][0]);
			return -1;
		}
	}
	return 0;
}

/* Wait until td:events stops growing; true when it grew by exactly @want. */
static bool events_match(struct harness *h, long long base, uint64_t want, long long *got)
{
	long long last = -1;
	int64_t still = now_ms(), deadline = now_ms() + 60000;
	for (;;) {
		long long n = redis_int(h, "XLEN td:events") - base;
		if (n != last) {
			last = n;
			still = now_ms();
		}
		int64_t quiet = now_ms() - still;
		/* Equal and quiet for 300 ms (an extra event would show), or stuck 3 s. */
		if ((n == (long long)want && quiet >= 300) || quiet >= 3000 || now_ms() > deadline)
			break;
		sleep_ms(50);
	}
	*got = last;
	return last == (long long)want;
}

/* ---- scenarios and output ---------------------------------------------- */

/* What the run needs to reach the servers and what it collects, per round. */
struct bench {
	struct opts o;
	struct harness h;
	pid_t ng;
	int ng_port, td_port;
	unsigned run;
	double rps[SC_COUNT][2][64], p99[SC_COUNT][2][64], cpu[SC_COUNT][2][64];
	double others[SC_COUNT][2][64];
	bool ok[SC_COUNT];
};

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double median(const double *v, int n)
{
	double s[64];
	memcpy(s, v, (size_t)n * sizeof(*s));
	qsort(s, (size_t)n, sizeof(*s), cmp_double);
	return n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

static uint64_t errors(const struct stats *st)
{
	uint64_t n = 0;
	for (int e = 0; e < E_COUNT; e++)
		n += st->err[e];
	return n;
}

static void print_result(int sc, int round, int target, const struct result *r, int expect)
{
	const struct stats *st = r->st;
	printf("%-6s r%d %-8s %8.0f req/s  p50 %.3f p90 %.3f p99 %.3f p99.9 %.3f max %.3f ms |",
	       sc_names[sc], round, target_names[target], r->rps, r->p50, r->p90, r->p99, r->p999,
	       r->max_ms);
	for (int s = 0; s < 600; s++)
		if (st->status[s])
			printf(" %d:%llu%s", s, (unsigned long long)st->status[s],
			       s == expect ? "" : "(!)");
	printf(" | errors %llu", (unsigned long long)errors(st));
	for (int e = 0; e < E_COUNT; e++)
		if (st->err[e])
			printf(" %s:%llu", err_names[e], (unsigned long long)st->err[e]);
	printf(" | cpu s: server %.2f", r->cpu_server);
	if (r->cpu_redis >= 0)
		printf(" redis %.2f", r->cpu_redis);
	printf(" loadgen %.2f others %.2f\n", r->cpu_self, r->cpu_others);
	fflush(stdout);
}

/* One target, one round: load, print, check. -1 when interrupted. */
static int run_one(struct bench *b, int sc, int round, int target, const struct req *req)
{
	bool td = target == T_TD;
	long long base = td ? redis_int(&b->h, "XLEN td:events") : 0;
	struct result r;
	int rc = run_load(&b->o, td ? b->td_port : b->ng_port, req, b->run++,
			  td ? b->h.td_pid : b->ng, td ? b->h.redis_pid : -1, &r);
	if (rc != 0) {
		free(r.st);
		return -1;
	}
	int expect = !td ? 204 : sc == SC_NONE ? 404 : 202;
	print_result(sc, round, target, &r, expect);
	b->rps[sc][target][round] = r.rps;
	b->p99[sc][target][round] = r.p99;
	b->cpu[sc][target][round] = r.cpu_server;
	b->others[sc][target][round] = r.cpu_others;
	if (errors(r.st) || !r.st->n || r.st->status[expect] != r.st->n) {
		printf("  UNEXPECTED: %llu of %llu responses were %d; %llu transport errors\n",
		       (unsigned long long)r.st->status[expect], (unsigned long long)r.st->n, expect,
		       (unsigned long long)errors(r.st));
		b->ok[sc] = false;
	}
	if (td) {
		long long got;
		bool ok = events_match(&b->h, base, r.st->all_2xx, &got);
		printf("  events=%lld 2xx=%llu %s\n", got, (unsigned long long)r.st->all_2xx,
		       ok ? "OK" : "MISMATCH");
		b->ok[sc] &= ok;
		/* Keep Redis small and steady between runs. */
		redis_int(&b->h, "XTRIM td:events MAXLEN 0");
	}
	free(r.st);
	sleep_ms(200);
	return 0;
}

/* All rounds of @sc; the target going first alternates, so drift hits both alike. */
static int run_scenario(struct bench *b, int sc)
{
	int ntargets = b->o.nginx_only ? 1 : 2;
	struct req req[2];
	build_req(&req[T_NGINX], sc, b->ng_port);
	build_req(&req[T_TD], sc, b->td_port);
	b->ok[sc] = true;
	for (int r = 0; r < b->o.rounds; r++)
		for (int k = 0; k < ntargets; k++) {
			int t = ntargets == 1 ? T_NGINX : (r + k) % 2;
			if (run_one(b, sc, r, t, &req[t]) != 0)
				return -1;
		}
	return 0;
}

static void print_summary(const struct bench *b)
{
	const struct opts *o = &b->o;
	printf("\n%-8s %12s %14s %6s %10s %13s %15s\n", "scenario", "nginx req/s",
	       "triggerd req/s", "ratio", "nginx p99", "triggerd p99", "triggerd cpu s");
	for (int sc = 0; sc < SC_COUNT; sc++) {
		if (!o->sc[sc])
			continue;
		double nr = median(b->rps[sc][T_NGINX], o->rounds);
		double np = median(b->p99[sc][T_NGINX], o->rounds);
		if (o->nginx_only) {
			printf("%-8s %12.0f %14s %6s %7.3f ms %13s %15s\n", sc_names[sc], nr, "-", "-",
			       np, "-", "-");
			continue;
		}
		double tr = median(b->rps[sc][T_TD], o->rounds);
		double ratio = nr > 0 ? tr / nr : 0;
		printf("%-8s %12.0f %14.0f %6.2f %7.3f ms %10.3f ms %15.2f  %s%s\n", sc_names[sc], nr,
		       tr, ratio, np, median(b->p99[sc][T_TD], o->rounds),
		       median(b->cpu[sc][T_TD], o->rounds),
		       ratio >= 0.8 ? "budget >= 0.8x met" : "budget >= 0.8x MISSED",
		       b->ok[sc] ? "" : "; checks FAILED");
	}
	printf("(medians over %d round(s); ratio = median triggerd req/s / median nginx req/s;"
	       " cpu over the %d s window)\n", o->rounds, o->secs);
}

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

static void json_arr(FILE *f, const char *target, const char *what, const double *v, int n)
{
	fprintf(f, ",\"%s_%s\":[", target, what);
	for (int i = 0; i < n; i++)
		fprintf(f, "%s%.3f", i ? "," : "", v[i]);
	fputc(']', f);
}

static int write_json(const struct bench *b, int argc, char **argv, long td_rss)
{
	const struct opts *o = &b->o;
	FILE *f = fopen(o->json, "w");
	if (!f) {
		perror(o->json);
		return -1;
	}
	fputs("{\"cmd\":[", f);
	for (int i = 0; i < argc; i++) {
		fputs(i ? "," : "", f);
		json_str(f, argv[i]);
	}
	fprintf(f, "],\"conns\":%d,\"secs\":%d,\"warmup_s\":%d,\"threads\":%d,"
		   "\"triggerd_rss_kb\":%ld,\"scenarios\":[",
		o->conns, o->secs, o->warmup_s, o->threads, td_rss);
	const char *sep = "";
	for (int sc = 0; sc < SC_COUNT; sc++) {
		if (!o->sc[sc])
			continue;
		fprintf(f, "%s{\"name\":\"%s\",\"ok\":%s", sep, sc_names[sc],
			b->ok[sc] ? "true" : "false");
		sep = ",";
		for (int t = 0; t < (o->nginx_only ? 1 : 2); t++) {
			json_arr(f, target_names[t], "rps", b->rps[sc][t], o->rounds);
			json_arr(f, target_names[t], "p99_ms", b->p99[sc][t], o->rounds);
			json_arr(f, target_names[t], "cpu_s", b->cpu[sc][t], o->rounds);
			json_arr(f, target_names[t], "others_cpu_s", b->others[sc][t], o->rounds);
		}
		double nr = median(b->rps[sc][T_NGINX], o->rounds);
		if (!o->nginx_only && nr > 0)
			fprintf(f, ",\"ratio\":%.3f", median(b->rps[sc][T_TD], o->rounds) / nr);
		fputc('}', f);
	}
	fputs("]}\n", f);
	return fclose(f) == 0 ? 0 : -1;
}

static void usage(void)
{
	fprintf(stderr, "usage: bench_webhook [-c CONNS] [-d SECONDS] [--warmup-s S] [--rounds N]\n"
			"                     [-t THREADS] [--scenario none|repeat|signed|all]\n"
			"                     [--json FILE] [--nginx-only]\n");
	exit(2);
}

static void parse_opts(int argc, char **argv, struct opts *o)
{
	*o = (struct opts){.conns = 64, .secs = 10, .warmup_s = 2, .rounds = 3, .threads = 1,
			   .sc = {true, true, true}};
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "--nginx-only")) {
			o->nginx_only = true;
			continue;
		}
		if (!v)
			usage();
		i++;
		if (!strcmp(a, "-c"))
			o->conns = atoi(v);
		else if (!strcmp(a, "-d"))
			o->secs = atoi(v);
		else if (!strcmp(a, "--warmup-s"))
			o->warmup_s = atoi(v);
		else if (!strcmp(a, "--rounds"))
			o->rounds = atoi(v);
		else if (!strcmp(a, "-t"))
			o->threads = atoi(v);
		else if (!strcmp(a, "--json"))
			o->json = v;
		else if (!strcmp(a, "--scenario")) {
			bool all = !strcmp(v, "all"), found = all;
			for (int s = 0; s < SC_COUNT; s++) {
				o->sc[s] = all || !strcmp(v, sc_names[s]);
				found |= o->sc[s];
			}
			if (!found)
				usage();
		} else {
			usage();
		}
	}
	if (o->conns < 1 || o->conns > 65535 || o->secs < 1 || o->warmup_s < 0 ||
	    o->rounds < 1 || o->rounds > 64 || o->threads < 1 || o->threads > o->conns)
		usage();
}

/* Start nginx, and unless --nginx-only redis-server and triggerd. */
static int start_servers(struct bench *b, char *dir, size_t dirlen)
{
	if (!b->o.nginx_only) {
		if (!getenv("TRIGGERD_BIN"))
			setenv("TRIGGERD_BIN", "./build/triggerd", 1);
		/* The signing secret, as a named connection triggerd reads from its env. */
		setenv("AIRFLOW_CONN_BENCHSECRET",
		       "{\"conn_type\":\"generic\",\"password\":\"" SECRET "\"}", 1);
		if (harness_redis_start(&b->h, false) != 0) {
			fprintf(stderr, "bench_webhook: cannot start redis-server\n");
			return -1;
		}
		snprintf(dir, dirlen, "%s", b->h.dir);
	} else {
		snprintf(dir, dirlen, "/tmp/td-bench-XXXXXX");
		if (!mkdtemp(dir)) {
			perror("mkdtemp");
			dir[0] = '\0';
			return -1;
		}
	}
	b->ng_port = free_port();
	b->ng = nginx_start(dir, b->ng_port);
	if (b->ng < 0) {
		fprintf(stderr, "bench_webhook: nginx did not start (apt-get install nginx-light)\n");
		return -1;
	}
	printf("# nginx pid %d on 127.0.0.1:%d\n", (int)b->ng, b->ng_port);
	if (b->o.nginx_only)
		return 0;
	b->td_port = free_port();
	if (td_start(&b->h, b->td_port) != 0)
		return -1;
	printf("# triggerd pid %d on 127.0.0.1:%d, RSS %ld kB with the triggers stored\n",
	       (int)b->h.td_pid, b->td_port, rss_kb(b->h.td_pid));
	return 0;
}

int main(int argc, char **argv)
{
	static struct bench b;
	parse_opts(argc, argv, &b.o);
	setvbuf(stdout, NULL, _IOLBF, 0);   /* progress lines interleave with stderr */
	printf("#");
	for (int i = 0; i < argc; i++)
		printf(strpbrk(argv[i], " '\"$\\*?") ? " '%s'" : " %s", argv[i]);
	printf("\n# webhook receiving: %d keep-alive connections, closed loop, %d s after %d s of "
	       "warm-up, %d round(s), %d loadgen thread(s), %ld cpus\n",
	       b.o.conns, b.o.secs, b.o.warmup_s, b.o.rounds, b.o.threads,
	       sysconf(_SC_NPROCESSORS_ONLN));
	signal(SIGPIPE, SIG_IGN);
	struct sigaction sa = {.sa_handler = on_signal};
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);

	char dir[256] = "";
	int rc = 1;
	if (start_servers(&b, dir, sizeof(dir)) != 0)
		goto out;
	for (int sc = 0; sc < SC_COUNT; sc++)
		if (b.o.sc[sc] && run_scenario(&b, sc) != 0) {
			fprintf(stderr, "bench_webhook: interrupted\n");
			goto out;
		}
	print_summary(&b);
	long td_rss = b.o.nginx_only ? -1 : rss_kb(b.h.td_pid);
	if (td_rss >= 0)
		printf("triggerd RSS at the end: %ld kB\n", td_rss);
	rc = 0;
	for (int sc = 0; sc < SC_COUNT; sc++)
		if (b.o.sc[sc] && !b.ok[sc])
			rc = 1;
	if (b.o.json && write_json(&b, argc, argv, td_rss) != 0)
		rc = 1;
out:
	if (b.ng > 0) {
		kill(b.ng, SIGTERM);
		waitpid(b.ng, NULL, 0);
	}
	if (!b.o.nginx_only) {
		if (rc && b.h.dir[0])
			print_log_tail(b.h.log);
		harness_stop(&b.h);
	} else if (dir[0]) {
		char cmd[300];
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
		if (system(cmd) != 0)
			fprintf(stderr, "could not remove %s\n", dir);
	}
	return rc;
}
