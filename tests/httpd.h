/*
 * A small real HTTP/1.1 server on 127.0.0.1 for tests: keep-alive, one
 * thread per connection, a response (status, body, delay) the test can
 * change at any time, and counters and timestamps of what it received.
 */
#ifndef TD_TEST_HTTPD_H
#define TD_TEST_HTTPD_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#define HTTPD_MAX_LOG 100000

struct httpd {
	int port;
	int lfd;
	pthread_t thread;
	atomic_int stop;
	atomic_int status;           /* response status */
	atomic_int delay_ms;         /* before answering */
	pthread_mutex_t lock;
	char body[4096];             /* response body (under lock) */
	char last_head[4096];        /* the last request's head (under lock) */
	atomic_long requests;
	atomic_long connections;
	atomic_int live;             /* connection threads still running */
	int64_t log_ms[HTTPD_MAX_LOG]; /* arrival time of each request */
};

/** Listen on an ephemeral loopback port and serve. 0 or -1. */
int httpd_start(struct httpd *s);
void httpd_set(struct httpd *s, int status, const char *body, int delay_ms);
void httpd_stop(struct httpd *s);

#endif
