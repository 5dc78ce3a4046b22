/*
 * triggerctl — submit, cancel, inspect and follow triggerd triggers through
 * Redis (protocol v1). Exit codes: 0 ok, 1 runtime error (Redis unreachable,
 * error reply, not found), 2 usage error.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <hiredis/hiredis.h>
#include <msgpack.h>

#include "triggerd/addr.h"
#include "triggerd/buf.h"
#include "triggerd/codec.h"
#include "triggerd/triggerd.h"

#define ID_MAX 256
#define SCAN_COUNT "1000"
#define FOLLOW_BATCH 1000

struct ctl {
	const char *redis_flag;
	const char *prefix;
	redisContext *c;
};

static const char usage_text[] =
"usage: triggerctl [--redis ADDR] [--prefix P] COMMAND [ARGS]\n"
"\n"
"commands:\n"
"  submit JSON | submit -f FILE|-\n"
"        add a trigger from a JSON spec; prints the submission's stream id\n"
"  timer ID (--after DUR | --at RFC3339 | --at-ms MS) [--every DUR]\n"
"        [--queue Q] [--meta JSON] [--timeout DUR]\n"
"        add a timer trigger; DUR is 500ms, 5s, 2m, 1h, 1d, 1m30s or plain ms\n"
"  cancel ID [--queue Q]\n"
"        cancel an active trigger\n"
"  get ID\n"
"        print the stored spec of an active trigger as JSON\n"
"  list [--limit N]\n"
"        print the stored specs, one JSON object per line\n"
"  follow [--queue Q] [--from ID] [--count N] [--id TRIGGER_ID]\n"
"        print events as JSON lines: {\"stream_id\",\"id\",\"event\"}. --from $\n"
"        (default) shows only new events, 0 all of them. With --id, only that\n"
"        trigger's events, and exit after the first unless --count is given.\n"
"\n"
"options:\n"
"  --redis ADDR   HOST:PORT or a unix socket path (default $TRIGGERD_REDIS,\n"
"                 else the private socket in triggerd's state directory)\n"
"  --prefix P     key prefix (default td:)\n"
"  --help, --version\n"
"\n"
"exit status: 0 ok, 1 runtime error or not found, 2 usage error\n";

static __attribute__((noreturn, format(printf, 1, 2)))
void usage_error(const char *fmt, ...)
{
	va_list ap;
	fputs("triggerctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs("\nTry 'triggerctl --help'.\n", stderr);
	exit(2);
}

static __attribute__((noreturn, format(printf, 1, 2)))
void fail(const char *fmt, ...)
{
	va_list ap;
	fputs("triggerctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

static void oom(int rc)
{
	if (rc)
		fail("out of memory");
}

/* ---- argument parsing ---- */

/* If argv[*i] is --name VALUE or --name=VALUE, return VALUE and advance *i. */
static const char *opt_value(int argc, char **argv, int *i, const char *name)
{
	size_t nl = strlen(name);
	const char *a = argv[*i];
	if (strncmp(a, name, nl))
		return NULL;
	if (a[nl] == '=')
		return a + nl + 1;
	if (a[nl])
		return NULL;
	if (*i + 1 >= argc)
		usage_error("option %s needs a value", name);
	return argv[++*i];
}

/* Consume --redis / --prefix wherever they appear. */
static bool global_opt(struct ctl *x, int argc, char **argv, int *i)
{
	const char *v;
	if ((v = opt_value(argc, argv, i, "--redis"))) {
		x->redis_flag = v;
		return true;
	}
	if ((v = opt_value(argc, argv, i, "--prefix"))) {
		x->prefix = v;
		return true;
	}
	if (!strcmp(argv[*i], "--help") || !strcmp(argv[*i], "-h")) {
		fputs(usage_text, stdout);
		exit(0);
	}
	return false;
}

static uint64_t parse_uint(const char *s, const char *what)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s || *end || *s == '-' || v > INT64_MAX)
		usage_error("%s: '%s' is not a non-negative integer", what, s);
	return v;
}

/* "500ms", "5s", "2m", "1h", "1d", "1m30s", "1.5s" or plain milliseconds. */
static uint64_t parse_duration(const char *s, const char *what)
{
	static const struct { const char *unit; double ms; } units[] = {
		{ "ms", 1 }, { "s", 1e3 }, { "m", 60e3 }, { "h", 3600e3 }, { "d", 86400e3 },
	};
	double total = 0;
	const char *p = s;
	if (!*p)
		usage_error("%s: empty duration", what);
	while (*p) {
		const char *num = p;
		while ((*p >= '0' && *p <= '9') || *p == '.')
			p++;
		if (p == num)
			usage_error("%s: bad duration '%s'", what, s);
		char nbuf[32];
		if ((size_t)(p - num) >= sizeof(nbuf))
			usage_error("%s: bad duration '%s'", what, s);
		memcpy(nbuf, num, (size_t)(p - num));
		nbuf[p - num] = '\0';
		char *end;
		double v = strtod(nbuf, &end);
		if (*end)
			usage_error("%s: bad duration '%s'", what, s);
		if (!*p && num == s) {
			total = v; /* a bare number is milliseconds */
			break;
		}
		size_t best = 0, ul = 0;
		for (size_t u = 0; u < TD_ARRAY_LEN(units); u++) {
			size_t l = strlen(units[u].unit);
			/* "ms" must win over "m" followed by garbage */
			if (!strncmp(p, units[u].unit, l) && l > ul &&
			    !(p[l] >= 'a' && p[l] <= 'z')) {
				best = u;
				ul = l;
			}
		}
		if (!ul)
			usage_error("%s: bad unit in duration '%s' (use ms, s, m, h, d)", what, s);
		total += v * units[best].ms;
		p += ul;
	}
	if (!(total >= 0 && total < 9007199254740992.0))
		usage_error("%s: duration '%s' out of range", what, s);
	return (uint64_t)(total + 0.5);
}

/* Shape check only: the daemon does the real parse (and calendar checks). */
static bool looks_rfc3339(const char *s)
{
	int y, mo, d, h, mi, sec, n = 0;
	if (sscanf(s, "%4d-%2d-%2d%*1[Tt ]%2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &sec, &n) != 6 ||
	    n != 19)
		return false;
	const char *p = s + n;
	if (*p == '.') {
		if (!(*++p >= '0' && *p <= '9'))
			return false;
		while (*p >= '0' && *p <= '9')
			p++;
	}
	if ((*p == 'Z' || *p == 'z') && !p[1])
		return true;
	int oh, om;
	n = 0;
	return (*p == '+' || *p == '-') &&
	       sscanf(p + 1, "%2d:%2d%n", &oh, &om, &n) == 2 && n == 5 && !p[6];
}

static void check_id(const char *id)
{
	size_t l = strlen(id);
	if (l < 1 || l > ID_MAX)
		usage_error("trigger id must be 1..%d bytes (got %zu)", ID_MAX, l);
}

/* ---- Redis ---- */

static void connect_redis(struct ctl *x, bool blocking_reads)
{
	struct td_redis_addr a;
	int is_default;
	char err[256], as[300];
	if (td_redis_addr_resolve(x->redis_flag, &a, &is_default, err, sizeof(err)))
		usage_error("%s", err);
	td_redis_addr_str(&a, as, sizeof(as));
	struct timeval tv = { 5, 0 };
	x->c = a.path[0] ? redisConnectUnixWithTimeout(a.path, tv)
			 : redisConnectWithTimeout(a.host, a.port, tv);
	if (!x->c)
		fail("out of memory");
	if (x->c->err)
		fail("cannot connect to Redis at %s: %s%s", as, x->c->errstr,
		     is_default ? "\n(this is triggerd's default private socket: is triggerd "
				  "running? Otherwise pass --redis or set TRIGGERD_REDIS)" : "");
	/* follow blocks in XREAD indefinitely; everything else should answer fast */
	struct timeval rt = { blocking_reads ? 0 : 30, 0 };
	redisSetTimeout(x->c, rt);
}

/* Run a command; exit 1 on a transport error or an error reply. */
static redisReply *command(struct ctl *x, int argc, const char **argv, const size_t *lens)
{
	redisReply *r = redisCommandArgv(x->c, argc, argv, lens);
	if (!r)
		fail("%s: %s", argv[0], x->c->errstr[0] ? x->c->errstr : "connection lost");
	if (r->type == REDIS_REPLY_ERROR)
		fail("%s %s: %s", argv[0], argv[1], r->str);
	return r;
}

static void key(char *out, size_t len, const struct ctl *x, const char *name, const char *queue)
{
	int n = snprintf(out, len, "%s%s%s%s", x->prefix, name, queue ? ":" : "",
			 queue ? queue : "");
	if (n < 0 || (size_t)n >= len)
		usage_error("prefix or queue name too long");
}

/* XADD <prefix>submit * FIELD VALUE...; prints the entry id. */
static int xadd_submit(struct ctl *x, int nfields, const char **fv, const size_t *fl)
{
	char k[512];
	const char *argv[3 + 8];
	size_t lens[3 + 8];
	key(k, sizeof(k), x, "submit", NULL);
	argv[0] = "XADD", lens[0] = 4;
	argv[1] = k, lens[1] = strlen(k);
	argv[2] = "*", lens[2] = 1;
	for (int i = 0; i < nfields; i++) {
		argv[3 + i] = fv[i];
		lens[3 + i] = fl ? fl[i] : strlen(fv[i]);
	}
	connect_redis(x, false);
	redisReply *r = command(x, 3 + nfields, argv, lens);
	if (r->type != REDIS_REPLY_STRING)
		fail("XADD: unexpected reply type %d", r->type);
	printf("%s\n", r->str);
	freeReplyObject(r);
	return 0;
}

/* Append @len msgpack bytes as JSON to @out. Returns 0, or -1 if they are
 * not exactly one msgpack value. */
static int print_msgpack(const char *data, size_t len, struct td_buf *out)
{
	msgpack_unpacked up;
	size_t off = 0;
	msgpack_unpacked_init(&up);
	/* one whole value: a stray text field would otherwise parse as a fixint */
	int ok = msgpack_unpack_next(&up, data, len, &off) == MSGPACK_UNPACK_SUCCESS &&
		 off == len;
	if (ok)
		oom(td_msgpack_to_json(&up.data, out));
	msgpack_unpacked_destroy(&up);
	return ok ? 0 : -1;
}

/* ---- commands ---- */

static int read_all(const char *path, struct td_buf *b)
{
	FILE *f = strcmp(path, "-") ? fopen(path, "r") : stdin;
	if (!f)
		fail("%s: %s", path, strerror(errno));
	char chunk[65536];
	size_t n;
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		oom(td_buf_append(b, chunk, n));
	if (ferror(f))
		fail("%s: read error", path);
	if (f != stdin)
		fclose(f);
	return 0;
}

static bool blank(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (s[i] != ' ' && s[i] != '\t' && s[i] != '\n' && s[i] != '\r')
			return false;
	return true;
}

static int cmd_submit(struct ctl *x, int argc, char **argv)
{
	const char *file = NULL, *text = NULL, *v;
	bool dashdash = false;
	for (int i = 0; i < argc; i++) {
		if (!dashdash && global_opt(x, argc, argv, &i))
			continue;
		if (!dashdash && !strcmp(argv[i], "--")) {
			dashdash = true;
		} else if (!dashdash && ((v = opt_value(argc, argv, &i, "-f")) ||
					 (v = opt_value(argc, argv, &i, "--file")))) {
			file = v;
		} else if (!dashdash && argv[i][0] == '-' && argv[i][1]) {
			usage_error("submit: unknown option '%s'", argv[i]);
		} else if (text) {
			usage_error("submit: one JSON spec at a time (quote it)");
		} else {
			text = argv[i];
		}
	}
	if (!!file == !!text)
		usage_error("submit: give a JSON spec or -f FILE (- for stdin)");
	struct td_buf b = TD_BUF_INIT;
	if (file)
		read_all(file, &b);
	else
		oom(td_buf_puts(&b, text));
	if (blank(b.data, b.len))
		usage_error("submit: the spec is empty");
	const char *fv[] = { "op", "add", "json", b.data };
	size_t fl[] = { 2, 3, 4, b.len };
	xadd_submit(x, 4, fv, fl);
	td_buf_finish(&b);
	return 0;
}

static int cmd_timer(struct ctl *x, int argc, char **argv)
{
	const char *id = NULL, *at = NULL, *queue = NULL, *meta = NULL, *v;
	bool have_after = false, have_at_ms = false, have_every = false, have_timeout = false;
	uint64_t after = 0, at_ms = 0, every = 0, timeout = 0;
	for (int i = 0; i < argc; i++) {
		if (global_opt(x, argc, argv, &i))
			continue;
		if ((v = opt_value(argc, argv, &i, "--after"))) {
			after = parse_duration(v, "--after");
			have_after = true;
		} else if ((v = opt_value(argc, argv, &i, "--at-ms"))) {
			at_ms = parse_uint(v, "--at-ms");
			have_at_ms = true;
		} else if ((v = opt_value(argc, argv, &i, "--at"))) {
			if (!looks_rfc3339(v))
				usage_error("--at: '%s' is not RFC 3339 "
					    "(like 2025-06-01T12:00:00Z or ...+02:00)", v);
			at = v;
		} else if ((v = opt_value(argc, argv, &i, "--every"))) {
			every = parse_duration(v, "--every");
			if (!every)
				usage_error("--every must be more than 0");
			have_every = true;
		} else if ((v = opt_value(argc, argv, &i, "--timeout"))) {
			timeout = parse_duration(v, "--timeout");
			have_timeout = true;
		} else if ((v = opt_value(argc, argv, &i, "--queue"))) {
			queue = v;
		} else if ((v = opt_value(argc, argv, &i, "--meta"))) {
			meta = v;
		} else if (argv[i][0] == '-' && argv[i][1]) {
			usage_error("timer: unknown option '%s'", argv[i]);
		} else if (id) {
			usage_error("timer: unexpected argument '%s'", argv[i]);
		} else {
			id = argv[i];
		}
	}
	if (!id)
		usage_error("timer: missing ID");
	check_id(id);
	if (have_after + !!at + have_at_ms != 1)
		usage_error("timer: give exactly one of --after, --at, --at-ms");
	if (queue && !*queue)
		usage_error("--queue: empty queue name");
	if (meta) {
		/* catch a shell-quoting slip here rather than as a rejected event */
		msgpack_sbuffer sb;
		char err[256];
		msgpack_sbuffer_init(&sb);
		int rc = td_json_to_msgpack(meta, strlen(meta), &sb, err, sizeof(err));
		msgpack_sbuffer_destroy(&sb);
		if (rc)
			usage_error("--meta is not valid JSON: %s", err);
	}

	struct td_buf b = TD_BUF_INIT;
	oom(td_buf_puts(&b, "{\"id\":"));
	oom(td_buf_json_str(&b, id, strlen(id)));
	oom(td_buf_puts(&b, ",\"kind\":\"timer\",\"args\":{"));
	if (have_after) {
		oom(td_buf_printf(&b, "\"after_ms\":%llu", (unsigned long long)after));
	} else if (have_at_ms) {
		oom(td_buf_printf(&b, "\"at_ms\":%llu", (unsigned long long)at_ms));
	} else {
		oom(td_buf_puts(&b, "\"at\":"));
		oom(td_buf_json_str(&b, at, strlen(at)));
	}
	if (have_every)
		oom(td_buf_printf(&b, ",\"interval_ms\":%llu", (unsigned long long)every));
	oom(td_buf_puts(&b, "}"));
	if (have_every)
		oom(td_buf_puts(&b, ",\"repeat\":true"));
	if (queue) {
		oom(td_buf_puts(&b, ",\"queue\":"));
		oom(td_buf_json_str(&b, queue, strlen(queue)));
	}
	if (meta) {
		oom(td_buf_puts(&b, ",\"meta\":"));
		oom(td_buf_puts(&b, meta));
	}
	if (have_timeout)
		oom(td_buf_printf(&b, ",\"timeout_ms\":%llu", (unsigned long long)timeout));
	oom(td_buf_puts(&b, "}"));

	const char *fv[] = { "op", "add", "json", b.data };
	size_t fl[] = { 2, 3, 4, b.len };
	xadd_submit(x, 4, fv, fl);
	td_buf_finish(&b);
	return 0;
}

static int cmd_cancel(struct ctl *x, int argc, char **argv)
{
	const char *id = NULL, *queue = NULL, *v;
	for (int i = 0; i < argc; i++) {
		if (global_opt(x, argc, argv, &i))
			continue;
		if ((v = opt_value(argc, argv, &i, "--queue")))
			queue = v;
		else if (argv[i][0] == '-' && argv[i][1])
			usage_error("cancel: unknown option '%s'", argv[i]);
		else if (id)
			usage_error("cancel: unexpected argument '%s'", argv[i]);
		else
			id = argv[i];
	}
	if (!id)
		usage_error("cancel: missing ID");
	check_id(id);
	const char *fv[] = { "op", "cancel", "id", id, "queue", queue };
	return xadd_submit(x, queue ? 6 : 4, fv, NULL);
}

static int cmd_get(struct ctl *x, int argc, char **argv)
{
	const char *id = NULL;
	for (int i = 0; i < argc; i++) {
		if (global_opt(x, argc, argv, &i))
			continue;
		if (argv[i][0] == '-' && argv[i][1])
			usage_error("get: unknown option '%s'", argv[i]);
		else if (id)
			usage_error("get: unexpected argument '%s'", argv[i]);
		else
			id = argv[i];
	}
	if (!id)
		usage_error("get: missing ID");
	check_id(id);
	char k[512];
	key(k, sizeof(k), x, "triggers", NULL);
	connect_redis(x, false);
	const char *av[] = { "HGET", k, id };
	redisReply *r = command(x, 3, av, NULL);
	if (r->type == REDIS_REPLY_NIL)
		fail("no active trigger '%s' (in %s)", id, k);
	if (r->type != REDIS_REPLY_STRING)
		fail("HGET: unexpected reply type %d", r->type);
	struct td_buf b = TD_BUF_INIT;
	if (print_msgpack(r->str, r->len, &b))
		fail("the stored spec of '%s' is not msgpack", id);
	printf("%s\n", b.data);
	td_buf_finish(&b);
	freeReplyObject(r);
	return 0;
}

static int cmd_list(struct ctl *x, int argc, char **argv)
{
	uint64_t limit = UINT64_MAX, shown = 0;
	const char *v;
	for (int i = 0; i < argc; i++) {
		if (global_opt(x, argc, argv, &i))
			continue;
		if ((v = opt_value(argc, argv, &i, "--limit")))
			limit = parse_uint(v, "--limit");
		else
			usage_error("list: unexpected argument '%s'", argv[i]);
	}
	char k[512], cursor[32] = "0";
	key(k, sizeof(k), x, "triggers", NULL);
	connect_redis(x, false);
	struct td_buf b = TD_BUF_INIT;
	do {
		const char *av[] = { "HSCAN", k, cursor, "COUNT", SCAN_COUNT };
		redisReply *r = command(x, 5, av, NULL);
		if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
		    r->element[0]->type != REDIS_REPLY_STRING ||
		    r->element[1]->type != REDIS_REPLY_ARRAY)
			fail("HSCAN: unexpected reply");
		snprintf(cursor, sizeof(cursor), "%s", r->element[0]->str);
		const redisReply *kv = r->element[1];
		for (size_t i = 0; i + 1 < kv->elements && shown < limit; i += 2) {
			td_buf_reset(&b);
			const redisReply *val = kv->element[i + 1];
			if (print_msgpack(val->str, val->len, &b)) {
				fprintf(stderr, "triggerctl: the stored spec of '%s' "
					"is not msgpack\n", kv->element[i]->str);
				continue;
			}
			fwrite(b.data, 1, b.len, stdout);
			fputc('\n', stdout);
			shown++;
		}
		freeReplyObject(r);
	} while (strcmp(cursor, "0") && shown < limit);
	td_buf_finish(&b);
	return fflush(stdout) ? 1 : 0;
}

/* One stream entry as {"stream_id","id","event"}; returns the trigger id
 * field (NULL when absent) through @idf. */
static void render_event(const redisReply *e, struct td_buf *b, const redisReply **idf)
{
	const redisReply *fv = e->element[1], *evf = NULL;
	*idf = NULL;
	for (size_t i = 0; fv->type == REDIS_REPLY_ARRAY && i + 1 < fv->elements; i += 2) {
		const redisReply *k = fv->element[i];
		if (k->type != REDIS_REPLY_STRING)
			continue;
		if (!strcmp(k->str, "id"))
			*idf = fv->element[i + 1];
		else if (!strcmp(k->str, "event"))
			evf = fv->element[i + 1];
	}
	oom(td_buf_puts(b, "{\"stream_id\":"));
	oom(td_buf_json_str(b, e->element[0]->str, e->element[0]->len));
	oom(td_buf_puts(b, ",\"id\":"));
	if (*idf && (*idf)->type == REDIS_REPLY_STRING)
		oom(td_buf_json_str(b, (*idf)->str, (*idf)->len));
	else
		oom(td_buf_puts(b, "null"));
	oom(td_buf_puts(b, ",\"event\":"));
	size_t mark = b->len;
	if (!evf || evf->type != REDIS_REPLY_STRING || print_msgpack(evf->str, evf->len, b)) {
		b->len = mark;
		fprintf(stderr, "triggerctl: entry %s has no msgpack event\n", e->element[0]->str);
		oom(td_buf_puts(b, "null"));
	}
	oom(td_buf_puts(b, "}"));
}

static int cmd_follow(struct ctl *x, int argc, char **argv)
{
	const char *queue = NULL, *from = "$", *only = NULL, *v;
	uint64_t count = 0, shown = 0;
	bool have_count = false;
	for (int i = 0; i < argc; i++) {
		if (global_opt(x, argc, argv, &i))
			continue;
		if ((v = opt_value(argc, argv, &i, "--queue"))) {
			queue = v;
		} else if ((v = opt_value(argc, argv, &i, "--from"))) {
			from = v;
		} else if ((v = opt_value(argc, argv, &i, "--count"))) {
			count = parse_uint(v, "--count");
			have_count = true;
		} else if ((v = opt_value(argc, argv, &i, "--id"))) {
			only = v;
			check_id(only);
		} else {
			usage_error("follow: unexpected argument '%s'", argv[i]);
		}
	}
	if (queue && !*queue)
		usage_error("--queue: empty queue name");
	if (!have_count && only)
		count = 1;
	if (have_count && !count)
		return 0;
	char k[512], last[64];
	key(k, sizeof(k), x, "events", queue);
	if (strlen(from) >= sizeof(last))
		usage_error("--from: '%s' is not a stream id", from);
	snprintf(last, sizeof(last), "%s", from);
	connect_redis(x, true);
	struct td_buf b = TD_BUF_INIT;
	for (;;) {
		char n[24];
		uint64_t want = count && !only && count - shown < FOLLOW_BATCH ? count - shown
									   : FOLLOW_BATCH;
		snprintf(n, sizeof(n), "%llu", (unsigned long long)want);
		const char *av[] = { "XREAD", "COUNT", n, "BLOCK", "0", "STREAMS", k, last };
		redisReply *r = command(x, 8, av, NULL);
		if (r->type != REDIS_REPLY_ARRAY || r->elements != 1 ||
		    r->element[0]->type != REDIS_REPLY_ARRAY || r->element[0]->elements != 2) {
			freeReplyObject(r);
			continue;
		}
		const redisReply *es = r->element[0]->element[1];
		for (size_t i = 0; i < es->elements; i++) {
			const redisReply *e = es->element[i], *idf;
			if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
			    e->element[0]->type != REDIS_REPLY_STRING)
				continue;
			/* "$" means "after the newest" only once; then resume from here */
			snprintf(last, sizeof(last), "%s", e->element[0]->str);
			td_buf_reset(&b);
			render_event(e, &b, &idf);
			if (only && !(idf && idf->type == REDIS_REPLY_STRING &&
				      !strcmp(idf->str, only)))
				continue;
			fwrite(b.data, 1, b.len, stdout);
			fputc('\n', stdout);
			if (fflush(stdout))
				fail("stdout: %s", strerror(errno));
			if (count && ++shown >= count) {
				freeReplyObject(r);
				td_buf_finish(&b);
				return 0;
			}
		}
		freeReplyObject(r);
	}
}

int main(int argc, char **argv)
{
	struct ctl x = { .prefix = "td:" };
	int i = 1;
	for (; i < argc; i++) {
		if (global_opt(&x, argc, argv, &i))
			continue;
		if (!strcmp(argv[i], "--version")) {
			printf("triggerctl %s\n", TD_VERSION);
			return 0;
		}
		if (argv[i][0] == '-')
			usage_error("unknown option '%s'", argv[i]);
		break;
	}
	if (i >= argc)
		usage_error("missing command");
	static const struct {
		const char *name;
		int (*run)(struct ctl *x, int argc, char **argv);
	} cmds[] = {
		{ "submit", cmd_submit }, { "timer", cmd_timer }, { "cancel", cmd_cancel },
		{ "get", cmd_get }, { "list", cmd_list }, { "follow", cmd_follow },
	};
	const char *name = argv[i];
	if (!strcmp(name, "help")) {
		fputs(usage_text, stdout);
		return 0;
	}
	for (size_t c = 0; c < TD_ARRAY_LEN(cmds); c++) {
		if (strcmp(name, cmds[c].name))
			continue;
		int rc = cmds[c].run(&x, argc - i - 1, argv + i + 1);
		if (x.c)
			redisFree(x.c);
		if (fflush(stdout))
			fail("stdout: %s", strerror(errno));
		return rc;
	}
	usage_error("unknown command '%s'", name);
}
