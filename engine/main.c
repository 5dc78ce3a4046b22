/*
 * triggerd: the daemon.
 *
 * Exit codes: 0 clean shutdown, 1 runtime failure, 2 usage error,
 * 3 the private redis-server could not be started.
 */
#include <errno.h>
#include <curl/curl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "engine_i.h"
#include "triggerd/connections.h"
#include "triggerd/log.h"
#include "triggerd/ratelimit.h"
#include "triggerd/ssrf.h"

#define EXIT_USAGE 2
#define EXIT_REDIS 3

static void usage(FILE *f)
{
	fprintf(f,
"usage: triggerd [options]\n"
"\n"
"Holds deferred triggers and posts their completion events to a Redis stream.\n"
"\n"
"  --redis ADDR        Redis to use: HOST:PORT or a unix socket path\n"
"                      (env TRIGGERD_REDIS). Without one, triggerd starts a\n"
"                      private redis-server on a unix socket in its state dir.\n"
"  --state-dir DIR     state dir for the private Redis (env TRIGGERD_STATE_DIR;\n"
"                      default $HOME/.local/state/triggerd)\n"
"  --prefix P          key prefix (default td:)\n"
"  --consumer NAME     consumer name in group 'triggerd' (default triggerd-0);\n"
"                      unique per instance, stable across restarts\n"
"  --sink-buffer N     max records buffered for Redis (default 100000); at the\n"
"                      bound further firings are held back, never dropped\n"
"  --batch N           records per apply-script call (default 256)\n"
"  --read-count N      submissions per XREADGROUP (default 1000)\n"
"  --dedup-ttl S       seconds repeat-occurrence keys are kept (default 86400)\n"
"  --shutdown-ms MS    how long to wait for Redis writes at shutdown (5000)\n"
"  --log-level L       debug|info|warn|error (default info)\n"
"  --http-max-host-connections N  connections per host for http polls (6)\n"
"  --http-max-connections N  connections in total for http polls (256)\n"
"  --rate-limit RULE   per-host poll rate, e.g. 'api.example.com=5/s,burst=10,inflight=4'\n"
"                      or 'default=100/s,burst=100' (the default); repeatable\n"
"  --rate-limit-file F one RULE per line ('#' comments)\n"
"  --connections-file F  named connections: a JSON object of id -> Airflow URI\n"
"                      or JSON form; AIRFLOW_CONN_<ID> variables are read too\n"
"                      and win over the file, as in Airflow\n"
"  --allow-hosts LIST  SSRF guard: comma-separated hosts/CIDRs http polls may reach;\n"
"                      any allow rule switches to allowlist mode\n"
"  --deny-hosts LIST   hosts/CIDRs they may not reach (beats allow). Link-local\n"
"                      and cloud metadata addresses are denied by default\n"
"  --listen HOST:PORT  control API (default 127.0.0.1:7480; 'off' disables).\n"
"                      Binds to loopback unless told otherwise\n"
"  --api-token T       require `Authorization: Bearer T` on /v1/ and /metrics\n"
"                      (env TRIGGERD_API_TOKEN; default: no token)\n"
"  --webhook-listen HOST:PORT  webhook receiver, POST /hooks/<path> (default off)\n"
"  --webhook-rate-limit R  per source address, e.g. '100/s,burst=200' (the\n"
"                      default) or 'off'\n"
"  --webhook-retain PATH=DUR  keep deliveries to PATH (or PATH* as a prefix) for\n"
"                      DUR (e.g. 30s, 500ms, 2m) for triggers registered late;\n"
"                      repeatable\n"
"  --webhook-max-body N  request body limit in bytes (default 1048576; 413 past it)\n"
"  --webhook-payload-max N  bodies up to N bytes go into events (default 65536)\n"
"  --webhook-max-conns N  open connections on the webhook listener (10000;\n"
"                      past it: 503)\n"
"  --http-header-timeout-ms MS  both listeners: a request's headers must arrive\n"
"                      within MS of its first byte (10000; else 408)\n"
"  --http-idle-timeout-ms MS  keep-alive connections idle this long are closed\n"
"                      (60000)\n"
"  --precascade-budget N  timers the wheel moves ahead of time per idle step\n"
"                      (default 1024; 0 turns it off, for comparisons)\n"
"  -h, --help          this text\n"
"  -V, --version       print the version\n"
"\n"
"Exit codes: 0 clean shutdown, 1 runtime failure, 2 usage error,\n"
"3 private redis-server could not be started.\n");
}

static int parse_uint(const char *opt, const char *s, unsigned long min,
		      unsigned long max, unsigned long *out)
{
	char *end;
	errno = 0;
	unsigned long v = strtoul(s, &end, 10);
	if (errno || *end || end == s || *s == '-' || v < min || v > max) {
		fprintf(stderr, "triggerd: %s: expected an integer in %lu..%lu, got '%s'\n",
			opt, min, max, s);
		return -1;
	}
	*out = v;
	return 0;
}

/* "PATH=DUR": DUR is a number with ms, s (default) or m. */
static int add_retain(struct td_config *cfg, const char *arg)
{
	const char *eq = strrchr(arg, '=');
	char *end;
	if (!eq || eq == arg || (size_t)(eq - arg) >= sizeof(cfg->retain[0].path)) {
		fprintf(stderr, "triggerd: --webhook-retain: expected PATH=DURATION, got '%s'\n", arg);
		return -1;
	}
	errno = 0;
	unsigned long n = strtoul(eq + 1, &end, 10);
	unsigned long mult = strcmp(end, "ms") == 0 ? 1 : strcmp(end, "m") == 0 ? 60000 :
			     (strcmp(end, "s") == 0 || !*end) ? 1000 : 0;
	if (errno || end == eq + 1 || !mult || n == 0 || n * mult > 86400000UL) {
		fprintf(stderr, "triggerd: --webhook-retain: DURATION: 1ms..24h as N, Nms, Ns or Nm, got '%s'\n",
			eq + 1);
		return -1;
	}
	struct td_retain_rule *r = realloc(cfg->retain, (cfg->nretain + 1) * sizeof(*r));
	if (!r)
		return -1;
	cfg->retain = r;
	r += cfg->nretain++;
	const char *p = arg[0] == '/' ? arg + 1 : arg;
	snprintf(r->path, sizeof(r->path), "%.*s", (int)(eq - p), p);
	r->ms = (unsigned)(n * mult);
	return 0;
}

static int mkdir_p(const char *path)
{
	char tmp[512];
	snprintf(tmp, sizeof(tmp), "%s", path);
	for (char *p = tmp + 1; *p; p++) {
		if (*p == '/') {
			*p = '\0';
			if (mkdir(tmp, 0700) < 0 && errno != EEXIST)
				return -errno;
			*p = '/';
		}
	}
	if (mkdir(tmp, 0700) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

/*
 * Start a private redis-server for a one-command local run: unix socket
 * only (no TCP port), append-only file in the state dir so triggers survive
 * a restart. Blocking here is fine: the reactor has not started.
 */
static pid_t start_private_redis(const char *dir, const char *sock)
{
	int rc = mkdir_p(dir);
	if (rc) {
		fprintf(stderr, "triggerd: cannot create state dir %s: %s\n", dir, strerror(-rc));
		return -1;
	}
	if (td_redis_sock_answers(sock, 200)) {
		td_info("using the private redis-server already running", "\"socket\":\"%s\"", sock);
		return 0;
	}
	unlink(sock);
	pid_t pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		/* The child must not inherit the blocked signal mask. */
		sigset_t none;
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		execlp("redis-server", "redis-server", "--port", "0", "--unixsocket", sock,
		       "--unixsocketperm", "700", "--dir", dir, "--appendonly", "yes",
		       "--save", "", "--loglevel", "warning", (char *)NULL);
		fprintf(stderr, "triggerd: cannot run redis-server: %s "
			"(install the Debian package redis-server, or pass --redis)\n",
			strerror(errno));
		_exit(127);
	}
	for (int i = 0; i < 100; i++) {
		int status;
		if (waitpid(pid, &status, WNOHANG) == pid)
			return -1;
		if (td_redis_sock_answers(sock, 200)) {
			td_info("private redis-server started", "\"socket\":\"%s\",\"pid\":%d",
				sock, (int)pid);
			return pid;
		}
		struct timespec ts = {0, 50000000};
		nanosleep(&ts, NULL);
	}
	kill(pid, SIGTERM);
	waitpid(pid, NULL, 0);
	return -1;
}

/* Leave main before the engine owns the config's limiter and guard. */
#define DONE(code) do { \
		td_ratelimit_free(cfg.ratelimit); \
		td_ssrf_free(cfg.ssrf); \
		td_conns_free(cfg.conns); \
		td_ratelimit_free(cfg.webhook_rl); \
		free(cfg.retain); \
		return (code); \
	} while (0)

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"redis", required_argument, NULL, 'r'},
		{"state-dir", required_argument, NULL, 'S'},
		{"prefix", required_argument, NULL, 'p'},
		{"consumer", required_argument, NULL, 'c'},
		{"sink-buffer", required_argument, NULL, 'b'},
		{"batch", required_argument, NULL, 'B'},
		{"read-count", required_argument, NULL, 'n'},
		{"dedup-ttl", required_argument, NULL, 'd'},
		{"shutdown-ms", required_argument, NULL, 's'},
		{"log-level", required_argument, NULL, 'l'},
		{"precascade-budget", required_argument, NULL, 'P'},
		{"http-max-host-connections", required_argument, NULL, 'H'},
		{"http-max-connections", required_argument, NULL, 'T'},
		{"rate-limit", required_argument, NULL, 'R'},
		{"rate-limit-file", required_argument, NULL, 'F'},
		{"allow-hosts", required_argument, NULL, 'A'},
		{"deny-hosts", required_argument, NULL, 'D'},
		{"connections-file", required_argument, NULL, 'C'},
		{"listen", required_argument, NULL, 'L'},
		{"api-token", required_argument, NULL, 'K'},
		{"webhook-listen", required_argument, NULL, 'W'},
		{"webhook-rate-limit", required_argument, NULL, 'X'},
		{"webhook-retain", required_argument, NULL, 'Y'},
		{"webhook-max-body", required_argument, NULL, 'M'},
		{"webhook-payload-max", required_argument, NULL, 'Q'},
		{"webhook-max-conns", required_argument, NULL, 'N'},
		{"http-header-timeout-ms", required_argument, NULL, 'U'},
		{"http-idle-timeout-ms", required_argument, NULL, 'I'},
		{"help", no_argument, NULL, 'h'},
		{"version", no_argument, NULL, 'V'},
		{0},
	};
	struct td_config cfg;
	td_config_defaults(&cfg);
	/* Per-host default: 100 polls/s with a burst of 100 (see README). */
	struct td_rl_rule dflt = {.interval_ns = 10000000, .burst = 100, .max_inflight = 0};
	char err[640];
	if (td_ratelimit_new(&cfg.ratelimit, &dflt) != 0 || td_ssrf_new(&cfg.ssrf) != 0 ||
	    td_conns_new(&cfg.conns) != 0) {
		fprintf(stderr, "triggerd: out of memory\n");
		DONE(1);
	}
	/* Per source address: 100 deliveries/s, bursts of 200. */
	struct td_rl_rule hook_dflt = {.interval_ns = 10000000, .burst = 200};
	if (td_ratelimit_new(&cfg.webhook_rl, &hook_dflt) != 0) {
		fprintf(stderr, "triggerd: out of memory\n");
		DONE(1);
	}
	const char *token = getenv("TRIGGERD_API_TOKEN");
	if (token)
		snprintf(cfg.api_token, sizeof(cfg.api_token), "%s", token);
	const char *redis = NULL, *state_dir = NULL;
	unsigned long v;
	int c;
	while ((c = getopt_long(argc, argv, "hV", opts, NULL)) != -1) {
		switch (c) {
		case 'r': redis = optarg; break;
		case 'S': state_dir = optarg; break;
		case 'p':
			if (!*optarg || strlen(optarg) >= 32) {
				fprintf(stderr, "triggerd: --prefix: 1..31 characters\n");
				DONE(EXIT_USAGE);
			}
			snprintf(cfg.prefix, sizeof(cfg.prefix), "%s", optarg);
			break;
		case 'c':
			if (!*optarg || strlen(optarg) >= sizeof(cfg.consumer)) {
				fprintf(stderr, "triggerd: --consumer: 1..127 characters\n");
				DONE(EXIT_USAGE);
			}
			snprintf(cfg.consumer, sizeof(cfg.consumer), "%s", optarg);
			break;
		case 'b':
			if (parse_uint("--sink-buffer", optarg, 1, 100000000, &v))
				DONE(EXIT_USAGE);
			cfg.sink_max = v;
			break;
		case 'B':
			if (parse_uint("--batch", optarg, 1, 2000, &v))
				DONE(EXIT_USAGE);
			cfg.batch_max = (unsigned)v;
			break;
		case 'n':
			if (parse_uint("--read-count", optarg, 1, 100000, &v))
				DONE(EXIT_USAGE);
			cfg.read_count = (unsigned)v;
			break;
		case 'd':
			if (parse_uint("--dedup-ttl", optarg, 1, 365UL * 86400, &v))
				DONE(EXIT_USAGE);
			cfg.dedup_ttl_s = (unsigned)v;
			break;
		case 's':
			if (parse_uint("--shutdown-ms", optarg, 0, 600000, &v))
				DONE(EXIT_USAGE);
			cfg.shutdown_ms = (unsigned)v;
			break;
		case 'P':
			if (parse_uint("--precascade-budget", optarg, 0, 1000000, &v))
				DONE(EXIT_USAGE);
			cfg.precascade_budget = (unsigned)v;
			break;
		case 'H':
			if (parse_uint("--http-max-host-connections", optarg, 1, 10000, &v))
				DONE(EXIT_USAGE);
			cfg.http.max_host_connections = (long)v;
			break;
		case 'T':
			if (parse_uint("--http-max-connections", optarg, 1, 100000, &v))
				DONE(EXIT_USAGE);
			cfg.http.max_total_connections = (long)v;
			break;
		case 'R': {
			char pattern[300];
			struct td_rl_rule r;
			if (td_ratelimit_parse_rule(optarg, pattern, sizeof(pattern), &r, err, sizeof(err)) ||
			    td_ratelimit_set_rule(cfg.ratelimit, pattern, &r)) {
				fprintf(stderr, "triggerd: --rate-limit: %s\n", err);
				DONE(EXIT_USAGE);
			}
			break;
		}
		case 'F':
			if (td_ratelimit_load_file(cfg.ratelimit, optarg, err, sizeof(err))) {
				fprintf(stderr, "triggerd: --rate-limit-file: %s\n", err);
				DONE(EXIT_USAGE);
			}
			break;
		case 'C':
			if (td_conns_load_file(cfg.conns, optarg, err, sizeof(err))) {
				fprintf(stderr, "triggerd: --connections-file: %s\n", err);
				DONE(EXIT_USAGE);
			}
			break;
		case 'A':
		case 'D':
			if (td_ssrf_add_list(cfg.ssrf, c == 'A', optarg, err, sizeof(err))) {
				fprintf(stderr, "triggerd: --%s-hosts: %s\n", c == 'A' ? "allow" : "deny", err);
				DONE(EXIT_USAGE);
			}
			break;
		case 'l': {
			enum td_log_level lv;
			if (td_log_parse_level(optarg, &lv)) {
				fprintf(stderr, "triggerd: --log-level: expected debug, info, warn or error\n");
				DONE(EXIT_USAGE);
			}
			td_log_set_level(lv);
			break;
		}
		case 'L':
		case 'W': {
			char *dst = c == 'L' ? cfg.api_listen : cfg.webhook_listen;
			if (strcmp(optarg, "off") == 0) {
				dst[0] = '\0';
			} else if (!strchr(optarg, ':') || strlen(optarg) >= sizeof(cfg.api_listen)) {
				fprintf(stderr, "triggerd: --%s: expected HOST:PORT or off\n",
					c == 'L' ? "listen" : "webhook-listen");
				DONE(EXIT_USAGE);
			} else {
				snprintf(dst, sizeof(cfg.api_listen), "%s", optarg);
			}
			break;
		}
		case 'K':
			if (strlen(optarg) < 16 || strlen(optarg) >= sizeof(cfg.api_token)) {
				fprintf(stderr, "triggerd: --api-token: 16..255 characters\n");
				DONE(EXIT_USAGE);
			}
			snprintf(cfg.api_token, sizeof(cfg.api_token), "%s", optarg);
			break;
		case 'X': {
			if (strcmp(optarg, "off") == 0) {
				td_ratelimit_free(cfg.webhook_rl);
				cfg.webhook_rl = NULL;
				break;
			}
			char rule[300], pattern[300];
			struct td_rl_rule r;
			snprintf(rule, sizeof(rule), "default=%s", optarg);
			if (!cfg.webhook_rl ||
			    td_ratelimit_parse_rule(rule, pattern, sizeof(pattern), &r, err, sizeof(err)) ||
			    td_ratelimit_set_rule(cfg.webhook_rl, NULL, &r)) {
				fprintf(stderr, "triggerd: --webhook-rate-limit: %s\n",
					cfg.webhook_rl ? err : "given after 'off'");
				DONE(EXIT_USAGE);
			}
			break;
		}
		case 'Y':
			if (add_retain(&cfg, optarg))
				DONE(EXIT_USAGE);
			break;
		case 'M':
			if (parse_uint("--webhook-max-body", optarg, 1024, 64UL << 20, &v))
				DONE(EXIT_USAGE);
			cfg.webhook_body_max = v;
			break;
		case 'Q':
			if (parse_uint("--webhook-payload-max", optarg, 0, 16UL << 20, &v))
				DONE(EXIT_USAGE);
			cfg.webhook_payload_max = v;
			break;
		case 'N':
			if (parse_uint("--webhook-max-conns", optarg, 1, 1000000, &v))
				DONE(EXIT_USAGE);
			cfg.webhook_max_conns = (unsigned)v;
			break;
		case 'U':
		case 'I':
			if (parse_uint(c == 'U' ? "--http-header-timeout-ms" : "--http-idle-timeout-ms",
				       optarg, 100, 3600000, &v))
				DONE(EXIT_USAGE);
			*(c == 'U' ? &cfg.http_header_timeout_ms : &cfg.http_idle_timeout_ms) = (unsigned)v;
			break;
		case 'h': usage(stdout); DONE(0);
		case 'V': printf("triggerd %s\n", TD_VERSION); DONE(0);
		default: usage(stderr); DONE(EXIT_USAGE);
		}
	}
	if (optind < argc) {
		fprintf(stderr, "triggerd: unexpected argument '%s'\n", argv[optind]);
		usage(stderr);
		DONE(EXIT_USAGE);
	}
	if (cfg.read_count > cfg.sink_max)
		cfg.read_count = (unsigned)cfg.sink_max;
	extern char **environ;
	int bad = td_conns_load_env(cfg.conns, environ, err, sizeof(err));
	if (bad < 0) {
		fprintf(stderr, "triggerd: out of memory loading connections\n");
		DONE(1);
	}
	/* A bad variable is skipped, named, never printed with its value. */
	for (int i = 0; i < bad; i++) {
		const char *m = td_conns_env_error(cfg.conns, (size_t)i);
		char esc[600];
		td_warn("connection variable skipped", "\"error\":\"%s\"",
			td_log_esc(esc, sizeof(esc), m, strlen(m)));
	}

	int is_default = 0;
	if (state_dir)
		setenv("TRIGGERD_STATE_DIR", state_dir, 1);
	if (td_redis_addr_resolve(redis, &cfg.redis, &is_default, err, sizeof(err))) {
		fprintf(stderr, "triggerd: --redis: %s\n", err);
		DONE(EXIT_USAGE);
	}
	pid_t redis_pid = 0;
	if (is_default) {
		char dir[512];
		td_default_state_dir(dir, sizeof(dir));
		redis_pid = start_private_redis(dir, cfg.redis.path);
		if (redis_pid < 0) {
			td_error("could not start a private redis-server", "\"socket\":\"%s\"",
				 cfg.redis.path);
			DONE(EXIT_REDIS);
		}
		td_info("no --redis given: using the private Redis",
			"\"socket\":\"%s\",\"hint\":\"triggerctl finds this Redis by default: "
			"./build/triggerctl timer t1 --after 5s; ./build/triggerctl follow --from 0\"",
			cfg.redis.path);
	}

	/* Once, before any thread (curl's resolver threads included). */
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		td_error("curl_global_init failed", NULL);
		DONE(1);
	}
	struct td_engine *e = calloc(1, sizeof(*e));
	int code = 1;
	if (!e)
		DONE(1);
	/* From here the engine owns (and frees) the limiter and the guard. */
	if (td_engine_init(e, &cfg) == 0)
		code = td_engine_run(e);
	td_engine_finish(e);
	free(e);
	curl_global_cleanup();
	if (redis_pid > 0) {
		kill(redis_pid, SIGTERM);
		waitpid(redis_pid, NULL, 0);
	}
	return code;
}
