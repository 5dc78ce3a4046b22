/* Redis address handling shared by triggerd, triggerctl and the bench. */
#ifndef TRIGGERD_ADDR_H
#define TRIGGERD_ADDR_H

#include <stddef.h>

struct td_redis_addr {
	char host[256]; /* empty for a unix socket */
	int port;
	char path[108]; /* unix socket path, empty for TCP */
};

/**
 * Parse "HOST:PORT", "[V6]:PORT", "unix:/path", or a path containing '/'
 * (a unix socket). Returns 0 or -EINVAL with a message in @err.
 */
int td_redis_addr_parse(const char *s, struct td_redis_addr *out, char *err,
			size_t errlen);

/** Render @a as text ("HOST:PORT" or the socket path) into @buf. */
const char *td_redis_addr_str(const struct td_redis_addr *a, char *buf, size_t len);

/**
 * The state directory used when no Redis is configured: $TRIGGERD_STATE_DIR,
 * else $HOME/.local/state/triggerd, else /tmp/triggerd-<uid>. Written into
 * @buf. The private redis-server's socket is "<dir>/redis.sock".
 */
const char *td_default_state_dir(char *buf, size_t len);

/**
 * The Redis address a client should use: @flag if non-NULL, else
 * $TRIGGERD_REDIS, else the private socket in td_default_state_dir().
 * Returns 0 or -EINVAL (message in @err). Sets *@is_default when the
 * private socket was chosen.
 */
int td_redis_addr_resolve(const char *flag, struct td_redis_addr *out,
			  int *is_default, char *err, size_t errlen);

/**
 * True when a Redis answers PING on the unix socket @path within
 * @timeout_ms. Blocking: for start-up and tools, never on the reactor.
 */
int td_redis_sock_answers(const char *path, int timeout_ms);

#endif
