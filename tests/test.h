/* Minimal test harness. A test is a void function; EXPECT records a failure
 * (with file:line and a message) and lets the test continue, so one run shows
 * every broken check. Each test file defines a suite:
 *
 *     static void npy_roundtrip(void) { EXPECT(x == 1, "x is %d", x); }
 *     const TestCase npy_tests[] = {{"npy roundtrip", npy_roundtrip}, {NULL, NULL}};
 *
 * and tests/run_tests.c lists the suites. The runner prints one line per test
 * and ends with "N passed, N failed"; its exit status is 1 if any test failed. */
#ifndef SD_TEST_H
#define SD_TEST_H

#include <stddef.h>

typedef struct {
    const char *name;
    void (*fn)(void);
} TestCase;

/* Record a failed check for the running test; prints file:line and the message. */
void test_fail(const char *file, int line, const char *expr, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Directory for a test's scratch files, created fresh per test run (under /tmp). */
const char *test_tmpdir(void);

#define EXPECT(cond, ...)                                                  \
    do {                                                                   \
        if (!(cond)) test_fail(__FILE__, __LINE__, #cond, __VA_ARGS__);    \
    } while (0)

/* Run a shell command with stderr joined to stdout, capture up to len - 1
 * bytes of its output into out, and return its exit status (-1 when it did
 * not exit normally or could not start). */
int test_run(const char *cmd, char *out, size_t len);

/* True when path exists (file or directory). */
int test_exists(const char *path);

/* Return true when the safetensors files a and b contain the same tensors
 * bit for bit. Their metadata, such as wall_seconds, may differ. Otherwise
 * write the reason into detail. */
int test_same_tensors(const char *a, const char *b, char *detail, size_t len);

/* |a - b| <= atol + rtol * |b|, with NaN never close. */
int test_close(double a, double b, double rtol, double atol);

#endif
