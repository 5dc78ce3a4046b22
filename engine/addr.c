#include "triggerd/addr.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int td_redis_addr_parse(const char *s, struct td_redis_addr *out, char *err,
			size_t errlen)
{
	memset(out, 0, sizeof(*out));
	if (!s || !*s) {
		snprintf(err, errlen, "redis address is empty");
		return -EINVAL;
	}
	if (strncmp(s, "unix:", 5) == 0)
		s += 5;
	if (strchr(s, '/')) {
		if (strlen(s) >= sizeof(out->path)) {
			snprintf(err, errlen, "unix socket path longer than %zu bytes",
				 sizeof(out->path) - 1);
			return -EINVAL;
		}
		strcpy(out->path, s);
		return 0;
	}
	const char *host = s, *colon;
	size_t hlen;
	if (*s == '[') {
		const char *close = strchr(s, ']');
		if (!close || close[1] != ':') {
			snprintf(err, errlen, "redis address '%s': expected [V6]:PORT", s);
			return -EINVAL;
		}
		host = s + 1;
		hlen = (size_t)(close - host);
		colon = close + 1;
	} else {
		colon = strrchr(s, ':');
		if (!colon) {
			snprintf(err, errlen,
				 "redis address '%s': expected HOST:PORT or a socket path", s);
			return -EINVAL;
		}
		hlen = (size_t)(colon - s);
	}
	if (hlen == 0 || hlen >= sizeof(out->host)) {
		snprintf(err, errlen, "redis address '%s': bad host", s);
		return -EINVAL;
	}
	char *end;
	errno = 0;
	long port = strtol(colon + 1, &end, 10);
	if (errno || *end || end == colon + 1 || port < 1 || port > 65535) {
		snprintf(err, errlen, "redis address '%s': port must be 1..65535", s);
		return -EINVAL;
	}
	memcpy(out->host, host, hlen);
	out->host[hlen] = '\0';
	out->port = (int)port;
	return 0;
}

const char *td_redis_addr_str(const struct td_redis_addr *a, char *buf, size_t len)
{
	if (a->path[0])
		snprintf(buf, len, "%s", a->path);
	else if (strchr(a->host, ':'))
		snprintf(buf, len, "[%s]:%d", a->host, a->port);
	else
		snprintf(buf, len, "%s:%d", a->host, a->port);
	return buf;
}

const char *td_default_state_dir(char *buf, size_t len)
{
	const char *dir = getenv("TRIGGERD_STATE_DIR");
	const char *home = getenv("HOME");
	if (dir && *dir)
		snprintf(buf, len, "%s", dir);
	else if (home && *home)
		snprintf(buf, len, "%s/.local/state/triggerd", home);
	else
		snprintf(buf, len, "/tmp/triggerd-%u", (unsigned)getuid());
	return buf;
}

int td_redis_addr_resolve(const char *flag, struct td_redis_addr *out,
			  int *is_default, char *err, size_t errlen)
{
	const char *env = getenv("TRIGGERD_REDIS");
	*is_default = 0;
	if (flag && *flag)
		return td_redis_addr_parse(flag, out, err, errlen);
	if (env && *env)
		return td_redis_addr_parse(env, out, err, errlen);
	char dir[512], path[600];
	td_default_state_dir(dir, sizeof(dir));
	snprintf(path, sizeof(path), "%s/redis.sock", dir);
	*is_default = 1;
	return td_redis_addr_parse(path, out, err, errlen);
}

int td_redis_sock_answers(const char *path, int timeout_ms)
{
	struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
	redisContext *c = redisConnectUnixWithTimeout(path, tv);
	int ok = 0;
	if (c && !c->err) {
		redisReply *r = redisCommand(c, "PING");
		ok = r && r->type == REDIS_REPLY_STATUS;
		if (r)
			freeReplyObject(r);
	}
	if (c)
		redisFree(c);
	return ok;
}
