/* Test runner: runs every suite (or those whose test names contain argv[1]),
 * prints a line per test and a final "N passed, N failed". */
#include "test.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "safetensors.h"
#include "suites.h"

static int current_failures;
static char tmpdir[256];

void test_fail(const char *file, int line, const char *expr, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "    %s:%d: check '%s' failed: ", file, line, expr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    current_failures++;
}

const char *test_tmpdir(void) { return tmpdir; }

int test_run(const char *cmd, char *out, size_t len) {
    char full[8192];
    if (snprintf(full, sizeof full, "%s 2>&1", cmd) >= (int)sizeof full) return -1;
    FILE *p = popen(full, "r");
    if (!p) return -1;
    size_t n = fread(out, 1, len - 1, p);
    out[n] = '\0';
    int status = pclose(p);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

int test_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

int test_same_tensors(const char *a, const char *b, char *detail, size_t len) {
    char err[512];
    StFile *fa = st_read(a, err, sizeof err), *fb = fa ? st_read(b, err, sizeof err) : NULL;
    int same = fa && fb && st_count(fa) == st_count(fb);
    if (!fa || !fb)
        snprintf(detail, len, "%s", err);
    else if (!same)
        snprintf(detail, len, "%d tensors against %d", st_count(fa), st_count(fb));
    for (int k = 0; same && k < st_count(fa); k++) {
        const StTensorRef *ta = st_get(fa, k), *tb = st_find(fb, ta->name);
        same = tb && tb->ndim == ta->ndim && tb->dtype == ta->dtype;
        long size = 1;
        for (int d = 0; same && d < ta->ndim; d++) {
            same = tb->shape[d] == ta->shape[d];
            size *= ta->shape[d];
        }
        /* F32 and I64 are the only dtypes st_read accepts. */
        size_t element = ta->dtype == ST_F32 ? 4 : 8;
        same = same && memcmp(ta->data, tb->data, (size_t)size * element) == 0;
        if (!same) snprintf(detail, len, "tensor %s differs", ta->name);
    }
    st_free(fa);
    st_free(fb);
    return same;
}

int test_close(double a, double b, double rtol, double atol) {
    if (isnan(a) || isnan(b)) return 0;
    return fabs(a - b) <= atol + rtol * fabs(b);
}

int main(int argc, char **argv) {
    const char *filter = argc > 1 ? argv[1] : NULL;
    /* Unset op gradients start as NaN so a missing zero-fill fails loudly. */
    setenv("SPECDYN_POISON_GRADS", "1", 1);
    snprintf(tmpdir, sizeof tmpdir, "/tmp/specdyn-test-XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    int passed = 0, failed = 0;
    for (const TestCase *const *suite = all_suites; *suite; suite++) {
        for (const TestCase *t = *suite; t->name; t++) {
            if (filter && !strstr(t->name, filter)) continue;
            current_failures = 0;
            t->fn();
            if (current_failures) {
                printf("FAIL  %s\n", t->name);
                failed++;
            } else {
                printf("ok    %s\n", t->name);
                passed++;
            }
            fflush(stdout);
        }
    }
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (failed == 0 && system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
