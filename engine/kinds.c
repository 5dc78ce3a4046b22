/* The registry of trigger kinds. Adding a kind: one file in triggers/, one
 * line here, one line in triggers/meson.build. */
#include <string.h>

#include "engine_i.h"
#include "triggerd/kind.h"
#include "triggerd/triggerd.h"

static const struct td_kind *const kinds[] = {
	&td_kind_timer,
	&td_kind_http,
	&td_kind_webhook,
	&td_kind_kafka,
	&td_kind_file,
	&td_kind_redis,
};

const struct td_kind *td_kind_find(const char *name, size_t len)
{
	for (size_t i = 0; i < TD_ARRAY_LEN(kinds); i++)
		if (strlen(kinds[i]->name) == len && memcmp(kinds[i]->name, name, len) == 0)
			return kinds[i];
	return NULL;
}

unsigned td_kind_index(const struct td_kind *k)
{
	for (unsigned i = 0; i < TD_ARRAY_LEN(kinds); i++)
		if (kinds[i] == k)
			return i;
	return TD_KINDS_MAX - 1;
}

const struct td_kind *td_kind_at(unsigned i)
{
	return i < TD_ARRAY_LEN(kinds) ? kinds[i] : NULL;
}
