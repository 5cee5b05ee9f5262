/* NumPy .npy files (format version 1.0) that grow along their first axis.
 *
 * The header is written with room for the first dimension to grow, so rows
 * are appended in place: each append writes the row's bytes at the end of the
 * file, then rewrites the shape in the header. If the writer is killed between
 * the two steps, readers see the previous row count and ignore the trailing
 * bytes, which is what numpy.load does too, so the file is valid after every
 * append. */
#ifndef SD_NPY_H
#define SD_NPY_H

#include <stddef.h>
#include <stdint.h>

typedef enum { NPY_F32, NPY_I64 } NpyDtype;

#define NPY_MAX_DIMS 4

typedef struct NpyAppender NpyAppender;

/* Create (or replace) path as an empty array of shape [0, tail...] with the
 * given dtype; tail has n_tail (0..3) dimensions. Return NULL and a message
 * in err on failure. The caller owns the appender; close with npy_close(). */
NpyAppender *npy_create(const char *path, NpyDtype dtype, int n_tail, const long *tail,
                        char *err, size_t errlen);

/* Open an existing appendable file for further appends, checking its dtype
 * and tail shape, and truncate it to keep_rows rows (keep_rows <= its row
 * count; pass -1 to keep all). Bytes after the last kept row, such as those of
 * an interrupted append, are cut off. Return NULL with a message in err when
 * the file is missing, not an .npy file, has another dtype or shape, has fewer
 * than keep_rows rows, or its header has no room for a 19-digit row count. */
NpyAppender *npy_reopen(const char *path, NpyDtype dtype, int n_tail, const long *tail,
                        long keep_rows, char *err, size_t errlen);

/* Append one row (the product of the tail dimensions, in elements). Return 0,
 * or -1 with a message in err on an I/O failure. */
int npy_append(NpyAppender *a, const void *row, char *err, size_t errlen);

/* Rows appended so far (including rows present when reopened). */
long npy_rows(const NpyAppender *a);

/* Close the file and free the appender. NULL is allowed. */
void npy_close(NpyAppender *a);

/* A whole array read into memory. */
typedef struct {
    NpyDtype dtype;
    int ndim;
    long shape[NPY_MAX_DIMS];
    void *data;   /* owned; free with npy_free() */
} NpyArray;

/* Read a float32 or int64 C-order little-endian .npy file (any format
 * version 1.0, 2.0 or 3.0 file numpy writes for those dtypes with at most
 * NPY_MAX_DIMS dimensions, not only ours). Trailing
 * bytes after the declared shape are ignored. Return 0, or -1 with a message
 * naming the path and the problem. */
int npy_read(const char *path, NpyArray *out, char *err, size_t errlen);

void npy_free(NpyArray *a);

#endif
