/* The registry of trigger kinds. Adding a kind: one file in triggers/, one
 * line here, one line in triggers/meson.build. */
#include <string.h>

#include "triggerd/kind.h"
#include "triggerd/triggerd.h"

static const struct td_kind *const kinds[] = {
	&td_kind_timer,
	&td_kind_http,
};

const struct td_kind *td_kind_find(const char *name, size_t len)
{
	for (size_t i = 0; i < TD_ARRAY_LEN(kinds); i++)
		if (strlen(kinds[i]->name) == len && memcmp(kinds[i]->name, name, len) == 0)
			return kinds[i];
	return NULL;
}
