/* A minimal test harness for the C tests of lion_optim.h: CHECK counts passes and failures;
 * finish() prints "NAME: N passed, M failed" and returns the exit status. */
#ifndef LION_TEST_CHECK_H
#define LION_TEST_CHECK_H

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lion_optim.h"

static unsigned long checks_passed, checks_failed;

static inline void check_failed(const char *file, int line, const char *fmt, ...) {
    va_list ap;
    checks_failed++;
    fprintf(stderr, "FAIL %s:%d: ", file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    if (checks_failed > 50) {
        fprintf(stderr, "too many failures, stopping\n");
        exit(1);
    }
}

#define CHECK(cond)                                                                \
    do {                                                                           \
        if (cond) {                                                                \
            checks_passed++;                                                       \
        } else {                                                                   \
            check_failed(__FILE__, __LINE__, "%s", #cond);                         \
        }                                                                          \
    } while (0)

#define CHECK_MSG(cond, ...)                                                       \
    do {                                                                           \
        if (cond) {                                                                \
            checks_passed++;                                                       \
        } else {                                                                   \
            check_failed(__FILE__, __LINE__, __VA_ARGS__);                         \
        }                                                                          \
    } while (0)

/* The last error of this thread, in a static buffer. */
static inline const char *last_error(void) {
    static char buf[2048];
    lion_last_error(buf, sizeof buf);
    return buf;
}

/* Checks that `call` returns `expected`; on a mismatch prints both names and the last error. */
#define CHECK_STATUS(call, expected)                                               \
    do {                                                                           \
        lion_status got_ = (call);                                                 \
        lion_status want_ = (expected);                                            \
        if (got_ == want_) {                                                       \
            checks_passed++;                                                       \
        } else {                                                                   \
            check_failed(__FILE__, __LINE__, "%s returned %s, expected %s (%s)",   \
                         #call, lion_status_name(got_), lion_status_name(want_),   \
                         last_error());                                            \
        }                                                                          \
    } while (0)

/* Checks that the last error mentions `needle`. */
#define CHECK_ERROR_HAS(needle)                                                    \
    do {                                                                           \
        const char *msg_ = last_error();                                           \
        CHECK_MSG(strstr(msg_, (needle)) != NULL, "last error \"%s\" lacks \"%s\"", \
                  msg_, (needle));                                                 \
    } while (0)

static inline int finish(const char *name) {
    printf("%s: %lu passed, %lu failed\n", name, checks_passed, checks_failed);
    return checks_failed == 0 ? 0 : 1;
}

/* The size of an element of a dtype (0 for anything else). */
static inline size_t dtype_size(int32_t d) {
    return d == LION_DTYPE_F32 ? 4 : (d == LION_DTYPE_F16 || d == LION_DTYPE_BF16) ? 2 : 0;
}

static inline const char *dtype_name(int32_t d) {
    return d == LION_DTYPE_F32 ? "f32" : d == LION_DTYPE_F16 ? "f16" : d == LION_DTYPE_BF16 ? "bf16" : "?";
}

/* Whether element i of two buffers of dtype d is the same: the same bits, or both NaN. */
static inline int same_element(int32_t d, const void *a, const void *b, size_t i) {
    if (d == LION_DTYPE_F32) {
        uint32_t x, y;
        memcpy(&x, (const uint8_t *)a + 4 * i, 4);
        memcpy(&y, (const uint8_t *)b + 4 * i, 4);
        return x == y || ((x & 0x7fffffffu) > 0x7f800000u && (y & 0x7fffffffu) > 0x7f800000u);
    } else {
        uint16_t x, y;
        uint16_t exp = d == LION_DTYPE_F16 ? 0x7c00 : 0x7f80;
        memcpy(&x, (const uint8_t *)a + 2 * i, 2);
        memcpy(&y, (const uint8_t *)b + 2 * i, 2);
        return x == y || ((x & 0x7fff) > exp && (y & 0x7fff) > exp);
    }
}

/* The index of the first element that differs (NaN matching NaN), or -1. */
static inline long first_difference(int32_t d, const void *a, const void *b, size_t len) {
    for (size_t i = 0; i < len; i++) {
        if (!same_element(d, a, b, i)) return (long)i;
    }
    return -1;
}

/* A copy of `n` bytes in fresh memory (malloc: aligned for every dtype). */
static inline void *dup_bytes(const void *src, size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    if (n) memcpy(p, src, n);
    return p;
}

#endif /* LION_TEST_CHECK_H */
