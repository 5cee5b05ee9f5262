/* Error reporting and checked wrappers for allocation and file I/O.
 *
 * Every failure that ends the program goes through sd_fail(), which prints one
 * line "specdyn: error: ..." to stderr and exits with status 1. Library code
 * that must not exit (file-format readers, config parsing) returns an error
 * code and fills a caller's message buffer instead; see the individual headers.
 * CHECK() is an always-on assertion for internal invariants such as shapes: it
 * names the source file, line and expression. */
#ifndef SD_ERROR_H
#define SD_ERROR_H

#include <stddef.h>
#include <stdio.h>

/* Print "specdyn: error: <message>" and exit(1). */
void sd_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/* Print "specdyn: warning: <message>" and continue. */
void sd_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Print an internal-error line with file:line and the failed expression, then abort(). */
void sd_check_failed(const char *file, int line, const char *expr, const char *fmt, ...)
    __attribute__((format(printf, 4, 5), noreturn));

#define CHECK(cond, ...)                                                    \
    do {                                                                    \
        if (!(cond)) sd_check_failed(__FILE__, __LINE__, #cond, __VA_ARGS__); \
    } while (0)

/* malloc/calloc/realloc that never return NULL: they call sd_fail on exhaustion. */
void *sd_malloc(size_t bytes);
void *sd_calloc(size_t count, size_t bytes);
void *sd_realloc(void *ptr, size_t bytes);
char *sd_strdup(const char *s);

/* fopen that calls sd_fail naming the path and strerror(errno) on failure. */
FILE *sd_fopen(const char *path, const char *mode);
/* fwrite/fread of exactly count items, or sd_fail naming the path. */
void sd_fwrite(const void *buf, size_t size, size_t count, FILE *f, const char *path);
void sd_fread(void *buf, size_t size, size_t count, FILE *f, const char *path);
/* Create dir and any missing parents (mkdir -p). Return 0, or -1 with one
 * line in err naming the directory that could not be created. */
int sd_make_dirs(const char *dir, char *err, size_t errlen);

/* fclose, or sd_fail naming the path (catches a full disk on buffered writes). */
void sd_fclose(FILE *f, const char *path);

#endif
