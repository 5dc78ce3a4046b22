/* Placeholder until the fswatch module lands (issue 5): no state. */
#include "engine_i.h"

int td_fswatch_new(struct td_shard *s, struct td_fswatch **out)
{
	*out = NULL;
	return 0;
}

void td_fswatch_stop(struct td_fswatch *w)
{
}

void td_fswatch_free(struct td_fswatch *w)
{
}
