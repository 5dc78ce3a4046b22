/* triggerd — common definitions: version, error codes, small helpers. */
#ifndef TRIGGERD_TRIGGERD_H
#define TRIGGERD_TRIGGERD_H

#include <stddef.h>
#include <stdint.h>

#define TD_VERSION "0.1.0"

/*
 * Errors: functions return 0 on success, -errno for system errors, or one of
 * the TD_E* codes below (all < -4000) for triggerd's own conditions.
 */
enum {
	TD_EINVAL_SPEC = -4001, /* a submission or stored spec is malformed */
	TD_EJSON = -4002,       /* JSON text could not be parsed */
	TD_EMSGPACK = -4003,    /* msgpack bytes could not be parsed */
	TD_EREDIS = -4004,      /* Redis returned an error or went away */
	TD_EFULL = -4005,       /* a bounded buffer is full; retry later */
	TD_EEXIST = -4006,      /* the id is already active */
	TD_ENOTFOUND = -4007,   /* no such trigger */
	TD_ETOOBIG = -4008,     /* input exceeds a size limit */
};

/** Human-readable text for a return code (0, -errno or TD_E*). Never NULL. */
const char *td_strerror(int err);

/* The latest accepted time: 9999-12-31T23:59:59.999Z in unix ms. Every
 * absolute time a spec carries (or is normalised to) must not exceed it. */
#define TD_TIME_MAX_MS INT64_C(253402300799999)

#define TD_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define td_container_of(ptr, type, member) \
	((type *)(void *)((char *)(ptr) - offsetof(type, member)))

#endif
