/*
 * fuzz.h - what the libFuzzer targets of tests/fuzz/ share: the entry
 * point's prototype and the check that turns a broken round trip into a
 * crash libFuzzer reports (and keeps the input of).
 */
#ifndef AU_FUZZ_H
#define AU_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_ASSERT(cond, ...) do { \
	if (!(cond)) { \
		fprintf(stderr, "%s:%d: round trip broken: ", __FILE__, __LINE__); \
		fprintf(stderr, __VA_ARGS__); \
		fputc('\n', stderr); \
		abort(); \
	} \
} while (0)

/* Two strings, either NULL, are the same. */
static inline int fuzz_str_eq(const char *a, const char *b)
{
	return a == b || (a && b && !strcmp(a, b));
}

/* Two byte ranges are the same. */
static inline int fuzz_mem_eq(const unsigned char *a, size_t alen, const unsigned char *b,
			      size_t blen)
{
	return alen == blen && (!alen || !memcmp(a, b, alen));
}

#endif
