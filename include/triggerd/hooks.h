/*
 * Webhook waits: the interface between the `webhook` kind (triggers/webhook.c,
 * which parses args and registers) and the webhook listener (engine/webhook.c,
 * which receives deliveries, verifies and matches them, and fires).
 *
 * A waiting trigger's kind state is a struct td_hook_waiter. While started,
 * it is on its path's list in the shard's hook registry; every delivery to
 * POST /hooks/<path> is offered to every waiter of that path.
 */
#ifndef TRIGGERD_HOOKS_H
#define TRIGGERD_HOOKS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "triggerd/webhook_sig.h"

struct td_shard;
struct td_hook_path;

#define TD_HOOK_PATH_MAX 256
#define TD_HOOK_HEADERS_MAX 16

/* What a webhook trigger waits for; one allocation, owned by the waiter. */
struct td_hook_spec {
	char *path;                  /* without "/hooks/"; NUL-terminated */
	size_t path_len;
	char *pointer;               /* filter: RFC 6901 pointer, or NULL */
	char *equals;                /* filter: msgpack value to compare */
	size_t equals_len;
	bool sig;                    /* a signature is required */
	enum td_sig_scheme scheme;
	char *secret_conn;           /* connection id (for pack_args) */
	const char *secret;          /* the connection's password (not owned) */
	size_t secret_len;
	unsigned nheaders;           /* extra request headers for the payload */
	char *headers[TD_HOOK_HEADERS_MAX]; /* lower-cased names */
};

struct td_hook_waiter {
	struct td_hook_waiter *next, *prev;
	struct td_hook_path *hp;     /* set while registered */
	struct td_hook_spec *spec;
	uint64_t seen;               /* retained deliveries up to this were
					offered already (engine's) */
};

/**
 * Start waiting: put @w on its path's list. Deliveries retained for the path
 * (see --webhook-retain) that arrived within the window are offered to @w
 * right away, oldest first; @w may fire (and, one-shot, end) inside this
 * call. Returns 0 or -ENOMEM.
 */
int td_hooks_wait(struct td_shard *s, struct td_hook_waiter *w);
/** Stop waiting. A no-op when @w is not registered. */
void td_hooks_unwait(struct td_hook_waiter *w);

/** Free the spec (all its strings). Accepts NULL. */
void td_hook_spec_free(struct td_hook_spec *sp);

#endif
