/*
 * Guard-page placement for parser tests: input is copied so that its last
 * byte is the last readable byte before a PROT_NONE page, so any over-read
 * crashes the test. Header-only (each test is one translation unit); use
 * guard_setup/guard_teardown as the cmocka group fixtures.
 */
#ifndef TD_TEST_GUARD_H
#define TD_TEST_GUARD_H

#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define GUARD_AREA (1u << 20) /* room for the largest test input */

static char *guard_base;
static size_t guard_page;

static int guard_setup(void **state)
{
	(void)state;
	guard_page = (size_t)sysconf(_SC_PAGESIZE);
	void *m = mmap(NULL, GUARD_AREA + guard_page, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED)
		return -1;
	guard_base = m;
	return mprotect(guard_base + GUARD_AREA, guard_page, PROT_NONE);
}

static int guard_teardown(void **state)
{
	(void)state;
	return munmap(guard_base, GUARD_AREA + guard_page);
}

/* @n bytes of @s; the last one is the last readable byte. */
static inline const char *guarded(const char *s, size_t n)
{
	assert_true(n <= GUARD_AREA);
	char *p = guard_base + GUARD_AREA - n;
	memcpy(p, s, n);
	return p;
}

/* The first @n bytes of @s as a string whose NUL is the last readable byte. */
static inline const char *guarded_strn(const char *s, size_t n)
{
	assert_true(n + 1 <= GUARD_AREA);
	char *p = guard_base + GUARD_AREA - n - 1;
	memcpy(p, s, n);
	p[n] = '\0';
	return p;
}

/* A C string with its NUL as the last readable byte. */
static inline const char *guarded_str(const char *s)
{
	return guarded_strn(s, strlen(s));
}

#endif
