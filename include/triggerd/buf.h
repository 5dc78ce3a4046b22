/* A growable byte buffer. The owner embeds it; td_buf_finish frees. */
#ifndef TRIGGERD_BUF_H
#define TRIGGERD_BUF_H

#include <stdarg.h>
#include <stddef.h>

struct td_buf {
	char *data; /* NUL-terminated when len < cap; may be NULL when cap == 0 */
	size_t len;
	size_t cap;
};

#define TD_BUF_INIT {0}

/** Ensure room for @extra more bytes (+1 for a NUL). Returns 0 or -ENOMEM. */
int td_buf_reserve(struct td_buf *b, size_t extra);
/** Append @n bytes. Returns 0 or -ENOMEM (the buffer is unchanged then). */
int td_buf_append(struct td_buf *b, const void *p, size_t n);
/** Append a NUL-terminated string. */
int td_buf_puts(struct td_buf *b, const char *s);
/** Append formatted text. */
int td_buf_printf(struct td_buf *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/** Append @n bytes as a JSON string literal (with quotes, escaped). */
int td_buf_json_str(struct td_buf *b, const char *s, size_t n);
/** Drop contents, keep memory. */
static inline void td_buf_reset(struct td_buf *b)
{
	b->len = 0;
	if (b->data)
		b->data[0] = '\0';
}
/** Free memory; the buffer may be reused after. Accepts a zeroed buffer. */
void td_buf_finish(struct td_buf *b);

#endif
