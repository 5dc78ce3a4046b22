/*
 * Integration test harness: a real redis-server on a unix socket in a fresh
 * temporary directory, and the real triggerd binary ($TRIGGERD_BIN, set by
 * meson) talking to it. Everything is stopped by harness_stop().
 */
#ifndef TD_TEST_HARNESS_H
#define TD_TEST_HARNESS_H

#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

struct harness {
	char dir[256];
	char sock[300];
	char log[300];
	pid_t redis_pid;
	pid_t td_pid;
	redisContext *c;       /* sync client for the test's own commands */
	char last_event[64];   /* XREAD cursor on td:events */
	bool aof;              /* redis with appendonly + fsync always */
};

struct event {
	char stream_id[64];
	int64_t visible_ms;    /* ms part of the stream entry id */
	char id[300];
	char kind[32];
	char status[16];
	char error[300];
	int64_t fired_at_ms;
	int64_t due_at_ms;     /* -1 when absent */
	uint64_t seq;          /* 0 when absent */
	bool has_meta;
	char meta_json[256];
	char payload_json[1024];   /* "null" when nil */
};

/** Make the temp dir and start redis-server (aof: persistent). 0 or -1. */
int harness_redis_start(struct harness *h, bool aof);
/** kill -9 redis (crash) or SHUTDOWN (clean). */
void harness_redis_kill(struct harness *h);
/** Start triggerd with extra args (NULL-terminated); waits for "ready". */
int harness_td_start(struct harness *h, const char *const *extra);
/** Start triggerd without waiting for it to be ready. */
int harness_td_spawn(struct harness *h, const char *const *extra);
/** The port triggerd's @listener ("api", "webhook") bound to last, per its
 * log, or -1. triggerd is started with --listen 127.0.0.1:0 unless @extra
 * says otherwise. */
int harness_listen_port(struct harness *h, const char *listener);
/** Wait until the triggerd log has a line containing @needle. */
bool harness_wait_log(struct harness *h, const char *needle, int timeout_ms);
/** Signal triggerd; returns its exit status (or -1). */
int harness_td_stop(struct harness *h, int sig);
void harness_stop(struct harness *h);

/** Connect (or reconnect) the sync client. */
int harness_connect(struct harness *h);
/** XADD td:submit * op add json @json. Returns 0 or -1. */
int submit_json(struct harness *h, const char *json);
/** XADD td:submit with raw field/value pairs (argc counts both). */
int submit_fields(struct harness *h, int argc, const char *const *argv, const size_t *lens);
/** Append pipelined submissions of @n JSON docs, then read the replies. */
int submit_json_many(struct harness *h, char **docs, size_t n);

/**
 * Read up to @max events past the cursor, waiting up to @timeout_ms for the
 * first. Returns the number read into @out (0 on timeout), -1 on error.
 */
int read_events(struct harness *h, struct event *out, int max, int timeout_ms);
/** Read until @n events arrived or @timeout_ms passed; returns count. */
int wait_events(struct harness *h, struct event *out, int n, int timeout_ms);

long long redis_int(struct harness *h, const char *fmt, ...);
int64_t now_ms(void);
void sleep_ms(int ms);
/** True when the triggerd log contains @needle. */
bool log_contains(struct harness *h, const char *needle);

/** Pending entries of group triggerd on td:submit (-1 on error). */
long long harness_pending(struct harness *h);
/** cmocka fixtures: a fresh harness with a non-persistent Redis. */
int harness_setup(void **state);
int harness_teardown(void **state);

#endif
