#include "reactor.h"

#include <errno.h>
#include <string.h>

#include "triggerd/log.h"

int td_reactor_init(struct td_reactor *r, unsigned entries)
{
	memset(r, 0, sizeof(*r));
	struct io_uring_params p;
	memset(&p, 0, sizeof(p));
	/* Completions can outnumber SQEs (multishot ops, bursts); a CQ twice
	 * the SQ size keeps overflow rare, and the kernel keeps overflowed
	 * CQEs (IORING_FEAT_NODROP) rather than losing them. */
	p.flags = IORING_SETUP_CQSIZE;
	p.cq_entries = entries * 4;
	/* One thread submits and reaps, so the kernel may run completion
	 * work only when we wait for events (DEFER_TASKRUN, kernel 6.1):
	 * no interrupting the loop to post CQEs one by one. That cut the
	 * HTTP server's CPU per request (docs/benchmarks.md). Older kernels
	 * refuse the flags: fall back to cooperative task work, then none. */
	static const unsigned tries[] = {
		IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
		IORING_SETUP_COOP_TASKRUN,
		0,
	};
	int rc = -EINVAL;
	for (size_t i = 0; i < sizeof(tries) / sizeof(tries[0]) && rc == -EINVAL; i++) {
		struct io_uring_params q = p;
		q.flags |= tries[i];
		rc = io_uring_queue_init_params(entries, &r->ring, &q);
		if (rc == 0)
			r->deferred = (tries[i] & IORING_SETUP_DEFER_TASKRUN) != 0;
	}
	if (rc < 0)
		return rc;
	return 0;
}

void td_reactor_finish(struct td_reactor *r)
{
	io_uring_queue_exit(&r->ring);
}

struct io_uring_sqe *td_reactor_sqe(struct td_reactor *r, struct td_op *op)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ring);
	while (!sqe) {
		/* The SQ is full: hand what is there to the kernel. */
		int rc = io_uring_submit(&r->ring);
		if (rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY)
			td_error("io_uring_submit failed", "\"errno\":%d", -rc);
		r->queued = 0;
		sqe = io_uring_get_sqe(&r->ring);
	}
	io_uring_sqe_set_data(sqe, op);
	r->queued++;
	return sqe;
}

void td_reactor_cancel(struct td_reactor *r, struct td_op *op)
{
	struct io_uring_sqe *sqe = td_reactor_sqe(r, NULL);
	io_uring_prep_cancel(sqe, op, 0);
}

int td_reactor_run_once(struct td_reactor *r, int64_t timeout_ns)
{
	struct io_uring_cqe *cqe;
	int rc;
	if (timeout_ns < 0) {
		rc = io_uring_submit_and_wait(&r->ring, 1);
	} else if (timeout_ns == 0) {
		/* With deferred task work, completions appear only when the
		 * kernel is asked for events. */
		rc = r->deferred ? io_uring_submit_and_get_events(&r->ring) :
				   io_uring_submit(&r->ring);
	} else {
		struct __kernel_timespec ts = {
			.tv_sec = timeout_ns / 1000000000,
			.tv_nsec = timeout_ns % 1000000000,
		};
		rc = io_uring_submit_and_wait_timeout(&r->ring, &cqe, 1, &ts, NULL);
	}
	r->queued = 0;
	if (rc < 0 && rc != -ETIME && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY)
		return rc;

	int n = 0;
	/* Dispatch in batches; a callback may queue new SQEs but never reaps
	 * CQEs itself, so advancing after each one is safe. */
	while (io_uring_peek_cqe(&r->ring, &cqe) == 0) {
		struct td_op *op = io_uring_cqe_get_data(cqe);
		int res = cqe->res;
		uint32_t flags = cqe->flags;
		io_uring_cqe_seen(&r->ring, cqe);
		if (op && op->cb)
			op->cb(op, res, flags);
		n++;
	}
	return n;
}
