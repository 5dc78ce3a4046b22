#include "httpd.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int64_t now_ms_(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct conn {
	struct httpd *s;
	int fd;
};

static void *conn_main(void *p)
{
	struct conn *c = p;
	struct httpd *s = c->s;
	char buf[16384];
	size_t have = 0;
	while (!atomic_load(&s->stop)) {
		struct pollfd pfd = {c->fd, POLLIN, 0};
		if (poll(&pfd, 1, 100) <= 0)
			continue;
		ssize_t n = recv(c->fd, buf + have, sizeof(buf) - 1 - have, 0);
		if (n <= 0)
			break;
		have += (size_t)n;
		buf[have] = '\0';
		char *end;
		while ((end = strstr(buf, "\r\n\r\n"))) {
			size_t hlen = (size_t)(end - buf) + 4, clen = 0;
			char *cl = strcasestr(buf, "\r\ncontent-length:");
			if (cl && cl < end)
				clen = strtoul(cl + 17, NULL, 10);
			if (have < hlen + clen)
				break; /* body not complete yet */
			bool close_after = strcasestr(buf, "\r\nconnection: close") != NULL &&
					   strcasestr(buf, "\r\nconnection: close") < end;
			pthread_mutex_lock(&s->lock);
			snprintf(s->last_head, sizeof(s->last_head), "%.*s", (int)hlen, buf);
			pthread_mutex_unlock(&s->lock);
			long idx = atomic_fetch_add(&s->requests, 1);
			if (idx < HTTPD_MAX_LOG)
				s->log_ms[idx] = now_ms_();
			/* Sleep in steps so httpd_stop is not kept waiting. */
			for (int d = atomic_load(&s->delay_ms); d > 0 && !atomic_load(&s->stop); d -= 10) {
				struct timespec ts = {0, 10000000};
				nanosleep(&ts, NULL);
			}
			char resp[8192];
			pthread_mutex_lock(&s->lock);
			int rl = snprintf(resp, sizeof(resp),
					  "HTTP/1.1 %d X\r\nContent-Type: application/json\r\n"
					  "X-Test: yes\r\nContent-Length: %zu\r\n\r\n%s",
					  atomic_load(&s->status), strlen(s->body), s->body);
			pthread_mutex_unlock(&s->lock);
			if (send(c->fd, resp, (size_t)rl, MSG_NOSIGNAL) < 0 || close_after)
				goto out;
			memmove(buf, buf + hlen + clen, have - hlen - clen);
			have -= hlen + clen;
			buf[have] = '\0';
		}
		if (have == sizeof(buf) - 1)
			break; /* header too large for this test server */
	}
out:
	close(c->fd);
	free(c);
	atomic_fetch_sub(&s->live, 1);
	return NULL;
}

static void *accept_main(void *p)
{
	struct httpd *s = p;
	while (!atomic_load(&s->stop)) {
		struct pollfd pfd = {s->lfd, POLLIN, 0};
		if (poll(&pfd, 1, 100) <= 0)
			continue;
		int fd = accept(s->lfd, NULL, NULL);
		if (fd < 0)
			continue;
		atomic_fetch_add(&s->connections, 1);
		atomic_fetch_add(&s->live, 1);
		struct conn *c = malloc(sizeof(*c));
		c->s = s;
		c->fd = fd;
		pthread_t t;
		pthread_attr_t a;
		pthread_attr_init(&a);
		pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
		if (pthread_create(&t, &a, conn_main, c) != 0) {
			close(fd);
			free(c);
			atomic_fetch_sub(&s->live, 1);
		}
		pthread_attr_destroy(&a);
	}
	return NULL;
}

int httpd_start(struct httpd *s)
{
	memset(s, 0, sizeof(*s));
	pthread_mutex_init(&s->lock, NULL);
	atomic_store(&s->status, 200);
	strcpy(s->body, "{\"ok\":true}");
	s->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t al = sizeof(a);
	if (s->lfd < 0 || bind(s->lfd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
	    listen(s->lfd, 1024) < 0 || getsockname(s->lfd, (struct sockaddr *)&a, &al) < 0)
		return -1;
	s->port = ntohs(a.sin_port);
	return pthread_create(&s->thread, NULL, accept_main, s) == 0 ? 0 : -1;
}

void httpd_set(struct httpd *s, int status, const char *body, int delay_ms)
{
	pthread_mutex_lock(&s->lock);
	snprintf(s->body, sizeof(s->body), "%s", body);
	atomic_store(&s->status, status);
	atomic_store(&s->delay_ms, delay_ms);
	pthread_mutex_unlock(&s->lock);
}

void httpd_stop(struct httpd *s)
{
	atomic_store(&s->stop, 1);
	pthread_join(s->thread, NULL);
	close(s->lfd);
	/* Connection threads notice stop within 100 ms; wait for all of them
	 * so none touches @s after the caller frees it. */
	while (atomic_load(&s->live) > 0) {
		struct timespec ts = {0, 10000000};
		nanosleep(&ts, NULL);
	}
}
