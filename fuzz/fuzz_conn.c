/*
 * libFuzzer target: arbitrary bytes as an Airflow connection URI and, the
 * same bytes, as the JSON form.
 *
 * Invariants (abort() on violation):
 *  - a rejection is TD_EINVAL_SPEC or TD_EJSON, leaves *out NULL, and its
 *    message starts with the field it is about;
 *  - an accepted connection has NUL-terminated strings, extra is exactly one
 *    msgpack map, headers point into extra, the HTTP helpers run over it;
 *  - the same bytes given as AIRFLOW_CONN_F (when they hold no NUL) load
 *    into a registry as the same connection, and masking the password (when
 *    it is long enough to be masked) leaves no trace of it.
 */
#include <errno.h>
#include <string.h>

#include "triggerd/codec.h"
#include "triggerd/connections.h"
#include "triggerd/triggerd.h"

#include "fuzz_common.h"

#define die(what, detail) fuzz_die("fuzz_conn", what, detail)

static const char *const fields[] = {
	"uri:", "conn type:", "login:", "password:", "host:", "port:", "schema:",
	"extra", "value:", "conn_type:", "description:", "unknown field", "conn_id:",
	"field names", "expected an object",
};

static void check_rejection(int rc, const struct td_conn *c, const char *err)
{
	if (rc != TD_EINVAL_SPEC && rc != TD_EJSON)
		die("unexpected return code", err);
	if (c)
		die("rejection with a connection", err);
	for (size_t i = 0; i < TD_ARRAY_LEN(fields); i++)
		if (strncmp(err, fields[i], strlen(fields[i])) == 0)
			return;
	die("message names no field", err);
}

static void check_conn(const struct td_conn *c)
{
	const char *s[] = {c->id, c->conn_type, c->description, c->host, c->schema,
			   c->login, c->password};
	for (size_t i = 0; i < TD_ARRAY_LEN(s); i++)
		if (!s[i] || strlen(s[i]) > 1u << 20)
			die("bad string", "");

	msgpack_zone z;
	msgpack_object o;
	size_t off = 0;
	msgpack_zone_init(&z, 1024);
	if (msgpack_unpack(c->extra, c->extra_len, &off, &z, &o) != MSGPACK_UNPACK_SUCCESS ||
	    off != c->extra_len || o.type != MSGPACK_OBJECT_MAP)
		die("extra is not one msgpack map", "");
	msgpack_zone_destroy(&z);

	char url[512];
	int rc = td_conn_http_url(c, "endpoint", url, sizeof(url));
	if (rc && rc != -ENOSPC)
		die("td_conn_http_url", "");
	size_t cur = 0, n = 0;
	struct td_conn_header h;
	while ((rc = td_conn_http_headers(c, &cur, &h)) != 0) {
		const char *end = c->extra + c->extra_len;
		if ((rc != 1 && rc != TD_EINVAL_SPEC) || !h.name || !h.value ||
		    (h.name_len && (h.name < c->extra || h.name + h.name_len > end)) ||
		    (h.value_len && (h.value < c->extra || h.value + h.value_len > end)) ||
		    ++n > c->extra_len)
			die("headers", "");
	}
}

static bool same(const struct td_conn *a, const struct td_conn *b)
{
	return !strcmp(a->conn_type, b->conn_type) && !strcmp(a->host, b->host) &&
	       !strcmp(a->schema, b->schema) && !strcmp(a->login, b->login) &&
	       !strcmp(a->password, b->password) && a->port == b->port &&
	       a->extra_len == b->extra_len && !memcmp(a->extra, b->extra, a->extra_len);
}

/* Load @data as AIRFLOW_CONN_F; it must give @want (NULL: a rejection). */
static void check_env(const uint8_t *data, size_t size, const struct td_conn *want)
{
	char *var = malloc(size + 16);
	if (!var)
		return;
	memcpy(var, "AIRFLOW_CONN_F=", 15);
	memcpy(var + 15, data, size);
	var[15 + size] = '\0';
	char *envp[] = {var, NULL};
	struct td_conns *cs;
	char err[256];
	if (td_conns_new(&cs))
		die("td_conns_new", "");
	int bad = td_conns_load_env(cs, envp, err, sizeof(err));
	const struct td_conn *got = td_conns_get(cs, "F");
	if (bad < 0 || bad > 1 || (bad == 1) != (got == NULL))
		die("env: count and lookup disagree", err);
	if (want && (!got || !same(want, got)))
		die("env: not the same connection", "");
	if (!want && got && !bad) {
		/* blank values define nothing; anything else was rejected */
		die("env: accepted what the parser rejected", "");
	}
	if (got && strlen(got->password) >= TD_CONN_MASK_MIN) {
		char out[1024];
		td_conn_mask(cs, got->password, out, sizeof(out));
		if (strstr(out, got->password))
			die("password survives masking", "");
	}
	td_conns_free(cs);
	free(var);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *text = (const char *)data;
	char err[256];
	struct td_conn *c = (struct td_conn *)1;
	bool has_nul = memchr(data, 0, size) != NULL;
	size_t lead = 0;
	while (lead < size && (data[lead] <= 0x20 || data[lead] == 0x7f))
		lead++;
	bool looks_json = lead < size && data[lead] == '{';

	int rc = td_conn_from_uri("f", text, size, &c, err, sizeof(err));
	if (rc)
		check_rejection(rc, c, err);
	else
		check_conn(c);
	if (!has_nul && !looks_json && lead < size)
		check_env(data, size, rc ? NULL : c);
	td_conn_free(rc ? NULL : c);

	c = (struct td_conn *)1;
	rc = td_conn_from_json("f", text, size, &c, err, sizeof(err));
	if (rc)
		check_rejection(rc, c, err);
	else
		check_conn(c);
	if (!has_nul && looks_json)
		check_env(data, size, rc ? NULL : c);
	td_conn_free(rc ? NULL : c);
	return 0;
}
