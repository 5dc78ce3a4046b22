/*
 * The reactor: one io_uring ring per shard. Every submission carries, as
 * user_data, a pointer to a struct td_op embedded in its owner; completions
 * are dispatched to op->cb. An owner with an op in flight must stay alive
 * until that op's completion has been delivered.
 */
#ifndef TD_REACTOR_H
#define TD_REACTOR_H

#include <liburing.h>
#include <stdbool.h>
#include <stdint.h>

struct td_op;
/** Completion callback: @res is the CQE result (>= 0 or -errno). */
typedef void (*td_op_cb)(struct td_op *op, int res, uint32_t cqe_flags);

struct td_op {
	td_op_cb cb;
};

struct td_reactor {
	struct io_uring ring;
	unsigned queued; /* SQEs prepared but not yet submitted */
	bool deferred;   /* IORING_SETUP_DEFER_TASKRUN in effect */
};

/** Set up a ring with @entries SQEs. Returns 0 or -errno. */
int td_reactor_init(struct td_reactor *r, unsigned entries);
/** Tear down the ring. In-flight ops are abandoned: call only at exit. */
void td_reactor_finish(struct td_reactor *r);

/**
 * An SQE to fill, with user_data already set to @op (NULL: completion
 * ignored). Submits queued SQEs first when the ring is full. Never NULL.
 */
struct io_uring_sqe *td_reactor_sqe(struct td_reactor *r, struct td_op *op);

/** Ask the kernel to cancel the in-flight op @op (its cb still runs). */
void td_reactor_cancel(struct td_reactor *r, struct td_op *op);

/**
 * Submit what is queued, wait up to @timeout_ns (< 0: forever, 0: poll) for
 * at least one completion, and dispatch every available completion.
 * Returns the number dispatched, or -errno on a ring failure.
 */
int td_reactor_run_once(struct td_reactor *r, int64_t timeout_ns);

#endif
