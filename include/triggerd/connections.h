/*
 * Named connections: trigger specs name a connection by id ("http_conn_id":
 * "my_api") and never carry secrets; this registry resolves the id the way
 * Apache Airflow 2.x does.
 *
 * Sources:
 *  - environment variables AIRFLOW_CONN_<ID>, whose value is an Airflow
 *    connection URI or, when it starts with '{', Airflow's JSON form;
 *  - a connections file: a JSON object mapping id -> URI string or JSON form
 *    (the layout of Airflow's LocalFilesystemBackend JSON file).
 *
 * URI form (percent-decoding of every part; leading and trailing whitespace
 * and control bytes are ignored, control bytes inside are an error):
 *
 *   conn-type://login:password@host:port/schema?key=value&key2=value2
 *
 *   conn type  lower-cased, '-' -> '_', "postgresql" -> "postgres"
 *   host       may be empty; "[v6addr]" for IPv6 (stored without brackets);
 *              ASCII letters written literally are lower-cased, as Python's
 *              urlsplit does, unless the decoded host holds a '/' (a socket
 *              path such as %2Ftmp%2Fpg); "type://proto://host" stores the
 *              host as "proto://host"
 *   login, password  split at the last '@' and then the first ':'
 *   port       decimal 0..65535; port 0 means "none", as in Airflow
 *   schema     the path without its leading '/'
 *   query      becomes extra, a map of strings ('+' is a space there; a
 *              repeated key keeps its first position and its last value),
 *              except that a `__extra__` parameter holds the whole extra as
 *              JSON text of an object (the other parameters are then
 *              ignored; an empty one means no extra)
 *   #fragment  ignored
 *
 * Deviations from Python/Airflow, all towards refusing what is almost surely
 * a mistake: a '%' not followed by two hex digits is an error (Python keeps
 * it literally, so a forgotten %25 silently changes a password); %00 in a
 * field is an error; tab, CR, LF inside the URI are errors (Python drops
 * them); a conn type must be a valid URI scheme (letters, digits, + - .);
 * an unknown or repeated field in the JSON form is an error; a JSON port
 * must be 0..65535. Strings are bytes: invalid UTF-8 is kept as it is.
 *
 * JSON form: {"conn_type", "description", "host", "login", "password",
 * "schema": string or null; "port": integer or digit string, 0/null/"" for
 * none; "extra": object, or JSON text of an object ("" for none);
 * "extra_dejson": object (alternative to extra); "uri": a URI, then only
 * "description" may join it}. Strings are used as they are (no decoding);
 * conn_type is normalised as in the URI form except for lower-casing.
 *
 * Errors never quote a value that could hold a secret: they name the field
 * and a byte offset. Nothing in this module logs.
 *
 * Context: build the registry at start-up (the file is read with blocking
 * I/O); afterwards it is read-only and td_conns_get, td_conn_mask and the
 * td_conn_http_* helpers may be called from any thread.
 */
#ifndef TRIGGERD_CONNECTIONS_H
#define TRIGGERD_CONNECTIONS_H

#include <stddef.h>
#include <stdint.h>

/* Airflow's ID_LEN: the longest conn id. */
#define TD_CONN_ID_MAX 250
/* Secrets shorter than this are not masked (they would mask ordinary words). */
#define TD_CONN_MASK_MIN 4
/* The largest connections file read. */
#define TD_CONNS_FILE_MAX (16u << 20)

enum td_conn_source {
	TD_CONN_SRC_NONE, /* built by td_conn_from_uri/json */
	TD_CONN_SRC_FILE,
	TD_CONN_SRC_ENV,
};

/**
 * One connection. Every string is NUL-terminated, never NULL ("" when
 * absent), and owned by whoever owns the connection (the registry, or the
 * caller of td_conn_from_*). Read-only.
 */
struct td_conn {
	const char *id;          /* file: as written; env: the suffix, lower-cased */
	const char *conn_type;
	const char *description;
	const char *host;
	const char *schema;
	const char *login;
	const char *password;
	uint16_t port;           /* 0: none */
	enum td_conn_source source;
	const char *extra;       /* msgpack map (0x80 when empty), never NULL */
	size_t extra_len;
};

struct td_conns;

/**
 * Parse an Airflow connection URI (@len bytes, need not be NUL-terminated)
 * into a new connection *@out with id @id (copied). The caller owns *@out and
 * frees it with td_conn_free. Returns 0; TD_EINVAL_SPEC or TD_EJSON (bad
 * __extra__) with "<field>: <problem> (offset N)" in @err; or -ENOMEM.
 */
int td_conn_from_uri(const char *id, const char *uri, size_t len,
		     struct td_conn **out, char *err, size_t errlen);

/**
 * Parse Airflow's JSON form of a connection (JSON text, @len bytes). As
 * td_conn_from_uri otherwise; offsets in @err refer to @json.
 */
int td_conn_from_json(const char *id, const char *json, size_t len,
		      struct td_conn **out, char *err, size_t errlen);

/** Free a connection from td_conn_from_*; secrets are zeroed. Accepts NULL.
 * Never pass a connection the registry owns. */
void td_conn_free(struct td_conn *c);

/** Make an empty registry. Returns 0 or -ENOMEM. */
int td_conns_new(struct td_conns **out);

/**
 * Add every AIRFLOW_CONN_<ID>=<value> in @envp (NULL-terminated, usually
 * `environ`; NULL is an empty environment). An empty or blank value defines
 * nothing (as in Airflow). A bad entry is skipped and reported, and does not
 * stop the others: the return value is the number of bad entries; each one's
 * message ("AIRFLOW_CONN_<ID>: <field>: <problem>") is kept until the next
 * call and read with td_conns_env_error(); @err receives the first one (and
 * how many more). A variable whose suffix has lower-case letters is bad:
 * Airflow looks up AIRFLOW_CONN_ + the upper-cased id, so nothing can reach
 * it. An id loaded before from the environment is replaced (the old
 * connection is freed: pointers to it from td_conns_get become invalid).
 * Messages name the variable and the field, never a value.
 *
 * Returns the count of bad entries (>= 0), or -ENOMEM (then the registry
 * holds whatever was added before the failure).
 */
int td_conns_load_env(struct td_conns *c, char *const *envp, char *err, size_t errlen);

/** The @i-th message of the last td_conns_load_env, or NULL past the end.
 * Owned by the registry. */
const char *td_conns_env_error(const struct td_conns *c, size_t i);

/**
 * Load the connections file at @path: a JSON object mapping id -> URI string
 * or JSON form. All or nothing: on any error nothing from the file is added,
 * and @err says "<path>: connection \"<id>\": <field>: <problem>". An id
 * given twice in the file is an error. An id loaded before from a file is
 * replaced (pointers to the old connection become invalid). Reads with
 * blocking I/O; the file's bytes are zeroed after parsing. File ids follow
 * Airflow's sanitize_conn_id: 1..250 bytes of letters, digits and _#!()-.:/\
 * (bytes >= 0x80 allowed, for non-ASCII letters).
 *
 * Returns 0, -errno (open/read), TD_ETOOBIG (over TD_CONNS_FILE_MAX), TD_EJSON,
 * TD_EINVAL_SPEC, or -ENOMEM.
 */
int td_conns_load_file(struct td_conns *c, const char *path, char *err, size_t errlen);

/**
 * The connection named @id, or NULL. Precedence, as Airflow's: environment
 * variables are checked before the metastore, and the file plays the
 * metastore's part, so AIRFLOW_CONN_<ID> wins over a file entry of the same
 * id. Environment ids match case-insensitively (ASCII), because the variable
 * name is AIRFLOW_CONN_ + the upper-cased id: "my_api" and "MY_API" both find
 * AIRFLOW_CONN_MY_API. File ids match exactly. A variable that failed to
 * load does not hide the file entry (Airflow moves on to the next backend
 * when one fails). The connection is owned by the registry and lives until
 * td_conns_free or until a later load replaces its id. Linear in the number
 * of connections.
 */
const struct td_conn *td_conns_get(const struct td_conns *c, const char *id);

/** Number of connections held (both sources, shadowed ones included). */
size_t td_conns_count(const struct td_conns *c);

/**
 * Copy @text to @buf (at most @len bytes with the NUL; truncated if need be)
 * with every occurrence of any known secret of at least TD_CONN_MASK_MIN bytes
 * replaced by "***"; where secrets overlap, the longest match at a position
 * wins. Known secrets, for every connection loaded (shadowed ones too): the
 * password, and the string values of extra under a sensitive key (Airflow's
 * list: access_token, api_key, apikey, authorization, passphrase, passwd,
 * password, private_key, secret, token, keyfile_dict, service_account,
 * matched as substrings of the lower-cased key with '-' read as '_', so
 * X-Api-Key and X-Auth-Token count), each also in its percent-encoded form,
 * as written in the URI, and escaped for a JSON log line. Returns @buf, or ""
 * when @len is 0.
 */
const char *td_conn_mask(const struct td_conns *c, const char *text, char *buf, size_t len);

/** Free the registry and every connection in it, zeroing secrets first.
 * Accepts NULL. */
void td_conns_free(struct td_conns *c);

/**
 * The base URL Airflow's HttpHook derives from @c: the host itself when it
 * contains "://"; otherwise "<schema or http>://<host>[:<port>]" (an IPv6
 * host is bracketed, which Airflow forgets). Written to @buf, NUL-terminated.
 * Returns 0, or -ENOSPC when it does not fit (then @buf holds "").
 */
int td_conn_http_base_url(const struct td_conn *c, char *buf, size_t len);

/**
 * The URL for @endpoint (may be NULL) on @c, joined as Airflow's
 * _url_from_endpoint does: one '/' is inserted when neither side has it.
 * Returns 0 or -ENOSPC (then @buf holds "").
 */
int td_conn_http_url(const struct td_conn *c, const char *endpoint, char *buf, size_t len);

/** One request header from a connection's extra; not NUL-terminated. */
struct td_conn_header {
	const char *name;
	size_t name_len;
	const char *value;
	size_t value_len;
};

/**
 * The next request header of @c, as Airflow's HttpHook takes headers from the
 * connection's extra: every top-level entry with a string key and a string
 * value, in extra's order, except the keys the hook consumes as request
 * options (stream, cert, proxies, proxy, timeout, verify, verify_ssl,
 * allow_redirects, max_redirects, trust_env, check_response). Entries with
 * other value types are skipped. @c must come from this module (registry or
 * td_conn_from_*), which lists the headers when it builds the connection.
 *
 *	size_t cur = 0;
 *	struct td_conn_header h;
 *	int rc;
 *	while ((rc = td_conn_http_headers(c, &cur, &h)) != 0) {
 *		if (rc < 0) ... fail, naming h.name (never print h.value)
 *		else ... send "%.*s: %.*s"
 *	}
 *
 * Start with *@cursor = 0. Returns 1 with *@h filled; 0 at the end;
 * TD_EINVAL_SPEC, also with *@h filled, for an entry that cannot be sent (the
 * name is not an HTTP token, or the value holds CR, LF or NUL); the next call
 * goes on after it. Pointers are into c->extra.
 */
int td_conn_http_headers(const struct td_conn *c, size_t *cursor, struct td_conn_header *h);

#endif
