/* Placeholder until the kwatch module lands (issue 5): no state. */
#include "engine_i.h"

int td_kwatch_new(struct td_shard *s, struct td_kwatch **out)
{
	*out = NULL;
	return 0;
}

void td_kwatch_stop(struct td_kwatch *w)
{
}

void td_kwatch_free(struct td_kwatch *w)
{
}
