/* Placeholder until the rwatch module lands (issue 5): no state. */
#include "engine_i.h"

int td_rwatch_new(struct td_shard *s, struct td_rwatch **out)
{
	*out = NULL;
	return 0;
}

void td_rwatch_stop(struct td_rwatch *w)
{
}

void td_rwatch_free(struct td_rwatch *w)
{
}
