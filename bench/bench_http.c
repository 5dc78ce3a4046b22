/*
 * HTTP poll benchmark: N http triggers polling a local nginx (Debian
 * nginx-light) every interval for a job status ({"state":"pending"}, 200);
 * measures the polls/s nginx served, triggerd's CPU over a steady window,
 * and, after the status flips to {"state":"done"}, the time from the flip to
 * each event being visible on the events stream.
 *
 * usage: bench_http [-n N] [--interval-ms MS] [--measure-s S]
 * Needs nginx (Debian nginx-light) and redis-server in PATH; starts both,
 * and triggerd from $TRIGGERD_BIN or ./build/triggerd.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../tests/harness.h"

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

static long nginx_requests(int port)
{
	char cmd[200];
	snprintf(cmd, sizeof(cmd), "exec 3<>/dev/tcp/127.0.0.1/%d; printf 'GET /nginx_status HTTP/1.0\\r\\n\\r\\n' >&3; cat <&3", port);
	char full[260];
	snprintf(full, sizeof(full), "bash -c \"%s\" 2>/dev/null", cmd);
	FILE *p = popen(full, "r");
	if (!p)
		return -1;
	char line[256];
	long v = -1;
	bool next = false;
	while (fgets(line, sizeof(line), p)) {
		if (next) {
			long a, b, c;
			if (sscanf(line, " %ld %ld %ld", &a, &b, &c) == 3)
				v = c;
			next = false;
		}
		if (strstr(line, "server accepts handled requests"))
			next = true;
	}
	pclose(p);
	return v;
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

static int cmp64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	int n = 10000, interval = 1000, measure = 10;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "-n") && i + 1 < argc)
			n = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--interval-ms") && i + 1 < argc)
			interval = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--measure-s") && i + 1 < argc)
			measure = atoi(argv[++i]);
		else {
			fprintf(stderr, "usage: bench_http [-n N] [--interval-ms MS] [--measure-s S]\n");
			return 2;
		}
	}
	if (!getenv("TRIGGERD_BIN"))
		setenv("TRIGGERD_BIN", "./build/triggerd", 1);
	struct harness h;
	memset(&h, 0, sizeof(h));
	if (harness_redis_start(&h, false) != 0) {
		fprintf(stderr, "bench_http: cannot start redis-server\n");
		return 1;
	}
	int port = free_port();
	char conf[512];
	snprintf(conf, sizeof(conf), "%s/nginx.conf", h.dir);
	FILE *f = fopen(conf, "w");
	fprintf(f, "daemon off; master_process off; worker_processes 1;\n"
		   "error_log %s/nginx-error.log; pid %s/nginx.pid;\n"
		   "events { worker_connections 4096; }\n"
		   "http { access_log off; keepalive_requests 1000000;\n"
		   " server { listen 127.0.0.1:%d;\n"
		   "  location = /status { default_type application/json; alias %s/status.json; }\n"
		   "  location /nginx_status { stub_status; } } }\n", h.dir, h.dir, port, h.dir);
	fclose(f);
	/* Until the flip the job is pending: 200 with a JSON body that does not
	 * match, so every trigger polls at its interval (a 5xx would put them
	 * into backoff instead). */
	char status[400];
	snprintf(status, sizeof(status), "%s/status.json", h.dir);
	f = fopen(status, "w");
	fputs("{\"state\":\"pending\"}", f);
	fclose(f);
	pid_t ng = fork();
	if (ng == 0) {
		execlp("nginx", "nginx", "-c", conf, "-p", h.dir, (char *)NULL);
		_exit(127);
	}
	sleep_ms(300);
	if (nginx_requests(port) < 0) {
		fprintf(stderr, "bench_http: nginx did not start (apt-get install nginx-light)\n");
		kill(ng, SIGTERM);
		harness_stop(&h);
		return 1;
	}
	const char *args[] = {"--log-level", "info", "--rate-limit", "default=1000000/s,burst=1000000",
			      "--sink-buffer", "200000", NULL};
	if (harness_td_start(&h, args) != 0) {
		fprintf(stderr, "bench_http: cannot start triggerd\n");
		kill(ng, SIGTERM);
		harness_stop(&h);
		return 1;
	}
	char **docs = calloc((size_t)n, sizeof(*docs));
	for (int i = 0; i < n; i++) {
		docs[i] = malloc(300);
		snprintf(docs[i], 300, "{\"id\":\"poll-%06d\",\"kind\":\"http\",\"args\":{\"url\":"
			 "\"http://127.0.0.1:%d/status\",\"interval_ms\":%d,\"json_pointer\":\"/state\","
			 "\"equals\":\"done\"}}", i, port, interval);
	}
	submit_json_many(&h, docs, (size_t)n);
	for (int i = 0; i < n; i++)
		free(docs[i]);
	free(docs);
	for (int i = 0; i < 200 && redis_int(&h, "HLEN td:triggers") < n; i++)
		sleep_ms(50);
	printf("http poll benchmark: %d triggers, interval %d ms, nginx-light on 127.0.0.1\n", n, interval);
	printf("  stored                                 %lld\n", redis_int(&h, "HLEN td:triggers"));
	sleep_ms(3 * interval); /* steady state */
	long r0 = nginx_requests(port);
	double c0 = cpu_s(h.td_pid);
	int64_t t0 = now_ms();
	sleep_ms(measure * 1000);
	long r1 = nginx_requests(port);
	double c1 = cpu_s(h.td_pid);
	double secs = (double)(now_ms() - t0) / 1000.0;
	printf("  polls/s served by nginx                %.0f (offered %.0f)\n",
	       (double)(r1 - r0 - 1) / secs, n * 1000.0 / interval);
	printf("  triggerd CPU                           %.1f %% of one core (%.2f s in %.1f s)\n",
	       100.0 * (c1 - c0) / secs, c1 - c0, secs);
	/* Flip: an atomic rename makes the status done. */
	char tmp[400], ready[400];
	snprintf(tmp, sizeof(tmp), "%s/ready.tmp", h.dir);
	snprintf(ready, sizeof(ready), "%s", status);
	f = fopen(tmp, "w");
	fputs("{\"state\":\"done\"}", f);
	fclose(f);
	int64_t flip = now_ms();
	rename(tmp, ready);
	struct event *ev = calloc((size_t)n + 1, sizeof(*ev));
	int got = wait_events(&h, ev, n, 30000 + 2 * interval);
	int64_t *lat = calloc((size_t)got + 1, sizeof(*lat));
	int bad = 0;
	for (int i = 0; i < got; i++) {
		lat[i] = ev[i].visible_ms - flip;
		bad += strcmp(ev[i].status, "success") != 0;
	}
	qsort(lat, (size_t)got, sizeof(*lat), cmp64);
	printf("  events after the flip                  %d of %d (%d not success)\n", got, n, bad);
	if (got > 0)
		printf("  flip to visible p50/p90/p99/max        %lld / %lld / %lld / %lld ms\n",
		       (long long)lat[got / 2], (long long)lat[got * 9 / 10],
		       (long long)lat[got * 99 / 100], (long long)lat[got - 1]);
	free(lat);
	free(ev);
	kill(ng, SIGTERM);
	waitpid(ng, NULL, 0);
	harness_stop(&h);
	return got == n && bad == 0 ? 0 : 1;
}
