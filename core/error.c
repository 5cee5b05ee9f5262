/* Error reporting and checked wrappers; see error.h. */
#include "error.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

void sd_fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("specdyn: error: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

void sd_warn(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("specdyn: warning: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

void sd_check_failed(const char *file, int line, const char *expr, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "specdyn: internal error at %s:%d: check '%s' failed: ", file, line, expr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    abort();
}

void *sd_malloc(size_t bytes) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p) sd_fail("out of memory allocating %zu bytes", bytes);
    return p;
}

void *sd_calloc(size_t count, size_t bytes) {
    void *p = calloc(count ? count : 1, bytes ? bytes : 1);
    if (!p) sd_fail("out of memory allocating %zu x %zu bytes", count, bytes);
    return p;
}

void *sd_realloc(void *ptr, size_t bytes) {
    void *p = realloc(ptr, bytes ? bytes : 1);
    if (!p) sd_fail("out of memory reallocating to %zu bytes", bytes);
    return p;
}

char *sd_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *p = sd_malloc(n);
    memcpy(p, s, n);
    return p;
}

FILE *sd_fopen(const char *path, const char *mode) {
    FILE *f = fopen(path, mode);
    if (!f) sd_fail("cannot open '%s': %s", path, strerror(errno));
    return f;
}

void sd_fwrite(const void *buf, size_t size, size_t count, FILE *f, const char *path) {
    if (count && fwrite(buf, size, count, f) != count)
        sd_fail("write to '%s' failed: %s", path, strerror(errno));
}

void sd_fread(void *buf, size_t size, size_t count, FILE *f, const char *path) {
    if (count && fread(buf, size, count, f) != count)
        sd_fail("'%s' is truncated or unreadable (%s)", path, ferror(f) ? strerror(errno) : "unexpected end of file");
}

void sd_fclose(FILE *f, const char *path) {
    if (fclose(f) != 0) sd_fail("closing '%s' failed: %s", path, strerror(errno));
}

int sd_make_dirs(const char *dir, char *err, size_t errlen) {
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", dir) >= (int)sizeof buf) {
        snprintf(err, errlen, "directory path '%.64s...' is too long", dir);
        return -1;
    }
    for (char *p = buf + 1;; p++) {
        int end = *p == '\0';
        if (*p == '/' || end) {
            *p = '\0';
            if (mkdir(buf, 0777) != 0 && errno != EEXIST) {
                snprintf(err, errlen, "cannot create directory '%s': %s", buf, strerror(errno));
                return -1;
            }
            if (end) break;
            *p = '/';
        }
    }
    return 0;
}
