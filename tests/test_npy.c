/* Tests for core/npy.c: appendable files, reopen and truncation, reading
 * headers in the forms numpy writes, and rejection of malformed files. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "npy.h"
#include "test.h"

static void tmp_path(char *buf, size_t cap, const char *name) {
    snprintf(buf, cap, "%s/%s", test_tmpdir(), name);
}

static long file_size(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

/* Read the first bytes of a file as text (NUL-terminated, at most cap - 1). */
static void read_prefix(const char *path, char *buf, size_t cap) {
    buf[0] = '\0';
    FILE *f = fopen(path, "rb");
    if (!f) return;
    size_t n = fread(buf, 1, cap - 1, f);
    buf[n] = '\0';
    fclose(f);
}

static void append_bytes(const char *path, const void *bytes, size_t n) {
    FILE *f = fopen(path, "ab");
    EXPECT(f != NULL, "cannot open %s for appending", path);
    if (!f) return;
    EXPECT(fwrite(bytes, 1, n, f) == n, "short write to %s", path);
    fclose(f);
}

/* Write a version 1.0 (or 2.0) .npy file with the given dict text, padded the
 * way numpy pads it, followed by data_bytes bytes of data. */
static void write_raw_npy(const char *path, int major, const char *dict, const void *data,
                          size_t data_bytes) {
    size_t prefix_len = major == 1 ? 10 : 12;
    size_t dict_len = strlen(dict);
    size_t total = (prefix_len + dict_len + 1 + 63) / 64 * 64;
    size_t room = total - prefix_len;
    unsigned char *header = calloc(1, total);
    memcpy(header, "\x93NUMPY", 6);
    header[6] = (unsigned char)major;
    header[7] = 0;
    header[8] = (unsigned char)(room & 0xff);
    header[9] = (unsigned char)(room >> 8);
    if (major != 1) {
        header[10] = (unsigned char)(room >> 16);
        header[11] = (unsigned char)(room >> 24);
    }
    memcpy(header + prefix_len, dict, dict_len);
    memset(header + prefix_len + dict_len, ' ', room - dict_len - 1);
    header[total - 1] = '\n';

    FILE *f = fopen(path, "wb");
    EXPECT(f != NULL, "cannot create %s", path);
    if (f) {
        fwrite(header, 1, total, f);
        if (data_bytes) fwrite(data, 1, data_bytes, f);
        fclose(f);
    }
    free(header);
}

/* Append n_rows rows of row_len floats, numbered from first_row; element k
 * of row r is r * 1000 + k. */
static void append_counting_rows(NpyAppender *a, long n_rows, long row_len, long first_row) {
    float *row = malloc((size_t)row_len * sizeof *row);
    char err[256] = "";
    for (long r = first_row; r < first_row + n_rows; r++) {
        for (long k = 0; k < row_len; k++) row[k] = (float)(r * 1000 + k);
        int rc = npy_append(a, row, err, sizeof err);
        EXPECT(rc == 0, "append row %ld: %s", r, err);
    }
    free(row);
}

static void check_counting_rows(const NpyArray *arr, long n_rows, long row_len) {
    const float *data = arr->data;
    long mismatches = 0;
    for (long r = 0; r < n_rows; r++)
        for (long k = 0; k < row_len; k++)
            if (data[r * row_len + k] != (float)(r * 1000 + k)) mismatches++;
    EXPECT(mismatches == 0, "%ld of %ld values differ from r * 1000 + k", mismatches, n_rows * row_len);
}

/* Create, append n_rows rows with the given tail, read back and check. */
static void check_append_roundtrip(const char *name, int n_tail, const long *tail) {
    char path[512], err[256] = "";
    tmp_path(path, sizeof path, name);
    long row_len = 1;
    for (int i = 0; i < n_tail; i++) row_len *= tail[i];
    const long n_rows = 5;

    NpyAppender *a = npy_create(path, NPY_F32, n_tail, tail, err, sizeof err);
    EXPECT(a != NULL, "npy_create %s: %s", name, err);
    if (!a) return;
    EXPECT(npy_rows(a) == 0, "new file has %ld rows", npy_rows(a));
    append_counting_rows(a, n_rows, row_len, 0);
    EXPECT(npy_rows(a) == n_rows, "npy_rows is %ld after %ld appends", npy_rows(a), n_rows);
    npy_close(a);

    long expected_size = 128 + n_rows * row_len * 4;
    EXPECT(file_size(path) == expected_size, "%s has %ld bytes, expected %ld", name, file_size(path),
           expected_size);

    NpyArray arr;
    int rc = npy_read(path, &arr, err, sizeof err);
    EXPECT(rc == 0, "npy_read %s: %s", name, err);
    if (rc != 0) return;
    EXPECT(arr.dtype == NPY_F32, "dtype is %d", (int)arr.dtype);
    EXPECT(arr.ndim == n_tail + 1, "ndim is %d, expected %d", arr.ndim, n_tail + 1);
    EXPECT(arr.shape[0] == n_rows, "shape[0] is %ld", arr.shape[0]);
    for (int i = 0; i < n_tail; i++)
        EXPECT(arr.shape[i + 1] == tail[i], "shape[%d] is %ld, expected %ld", i + 1, arr.shape[i + 1],
               tail[i]);
    check_counting_rows(&arr, n_rows, row_len);
    npy_free(&arr);
}

static void npy_append_1d_rows(void) { check_append_roundtrip("scalars.npy", 0, NULL); }

static void npy_append_2d_rows(void) {
    const long tail[] = {7};
    check_append_roundtrip("vectors.npy", 1, tail);
}

static void npy_append_3d_rows(void) {
    const long tail[] = {3, 4};
    check_append_roundtrip("matrices.npy", 2, tail);
}

static void npy_append_4d_rows(void) {
    const long tail[] = {2, 3, 4};
    check_append_roundtrip("cubes.npy", 3, tail);
}

static void npy_header_text(void) {
    char path[512], err[256] = "", head[129];
    tmp_path(path, sizeof path, "header.npy");

    NpyAppender *a = npy_create(path, NPY_F32, 0, NULL, err, sizeof err);
    EXPECT(a != NULL, "npy_create: %s", err);
    if (!a) return;
    append_counting_rows(a, 3, 1, 0);
    npy_close(a);
    read_prefix(path, head, sizeof head);
    EXPECT(memcmp(head, "\x93NUMPY\x01\x00", 8) == 0, "magic or version is wrong");
    EXPECT((unsigned char)head[8] == 118 && head[9] == 0, "header length bytes are %d %d",
           (unsigned char)head[8], (unsigned char)head[9]);
    EXPECT(strstr(head + 10, "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }") == head + 10,
           "dict is '%.118s'", head + 10);
    EXPECT(head[127] == '\n', "header does not end with a newline");

    const long tail[] = {12, 128};
    a = npy_create(path, NPY_I64, 2, tail, err, sizeof err);
    EXPECT(a != NULL, "npy_create: %s", err);
    if (!a) return;
    int64_t row[12 * 128] = {0};
    EXPECT(npy_append(a, row, err, sizeof err) == 0, "append: %s", err);
    EXPECT(npy_append(a, row, err, sizeof err) == 0, "append: %s", err);
    npy_close(a);
    read_prefix(path, head, sizeof head);
    EXPECT(strstr(head + 10, "'descr': '<i8'") != NULL, "dict is '%.118s'", head + 10);
    EXPECT(strstr(head + 10, "'shape': (2, 12, 128), }") != NULL, "dict is '%.118s'", head + 10);
    EXPECT(file_size(path) == 128 + 2 * 12 * 128 * 8, "file has %ld bytes", file_size(path));
}

static void npy_empty_file_reads(void) {
    char path[512], err[256] = "";
    tmp_path(path, sizeof path, "empty.npy");
    const long tail[] = {3};
    NpyAppender *a = npy_create(path, NPY_F32, 1, tail, err, sizeof err);
    EXPECT(a != NULL, "npy_create: %s", err);
    npy_close(a);

    NpyArray arr;
    int rc = npy_read(path, &arr, err, sizeof err);
    EXPECT(rc == 0, "npy_read: %s", err);
    EXPECT(arr.ndim == 2, "ndim is %d", arr.ndim);
    EXPECT(arr.shape[0] == 0 && arr.shape[1] == 3, "shape is (%ld, %ld)", arr.shape[0], arr.shape[1]);
    npy_free(&arr);
}

static void npy_reopen_keeps_rows(void) {
    char path[512], err[256] = "";
    tmp_path(path, sizeof path, "reopen.npy");
    const long tail[] = {4};

    NpyAppender *a = npy_create(path, NPY_F32, 1, tail, err, sizeof err);
    EXPECT(a != NULL, "npy_create: %s", err);
    if (!a) return;
    append_counting_rows(a, 3, 4, 0);
    npy_close(a);

    a = npy_reopen(path, NPY_F32, 1, tail, -1, err, sizeof err);
    EXPECT(a != NULL, "npy_reopen: %s", err);
    if (!a) return;
    EXPECT(npy_rows(a) == 3, "reopened with %ld rows", npy_rows(a));
    append_counting_rows(a, 2, 4, 3);
    EXPECT(npy_rows(a) == 5, "npy_rows is %ld", npy_rows(a));
    npy_close(a);

    NpyArray arr;
    int rc = npy_read(path, &arr, err, sizeof err);
    EXPECT(rc == 0, "npy_read: %s", err);
    if (rc != 0) return;
    EXPECT(arr.shape[0] == 5, "shape[0] is %ld", arr.shape[0]);
    check_counting_rows(&arr, 5, 4);
    npy_free(&arr);
}

static void npy_reopen_truncates(void) {
    char path[512], err[256] = "";
    tmp_path(path, sizeof path, "truncate.npy");
    const long tail[] = {2, 3};

    NpyAppender *a = npy_create(path, NPY_F32, 2, tail, err, sizeof err);
    EXPECT(a != NULL, "npy_create: %s", err);
    if (!a) return;
    append_counting_rows(a, 6, 6, 0);
    npy_close(a);

    a = npy_reopen(path, NPY_F32, 2, tail, 2, err, sizeof err);
    EXPECT(a != NULL, "npy_reopen: %s", err);
    if (!a) return;
    EXPECT(npy_rows(a) == 2, "npy_rows is %ld after keeping 2", npy_rows(a));
    EXPECT(file_size(path) == 128 + 2 * 6 * 4, "file has %ld bytes after truncation", file_size(path));

    NpyArray arr;
    int rc = npy_read(path, &arr, err, sizeof err);
    EXPECT(rc == 0, "npy_read while open: %s", err);
    if (rc == 0) {
        EXPECT(arr.shape[0] == 2, "shape[0] is %ld", arr.shape[0]);
        npy_free(&arr);
    }

    /* The new rows continue the numbering of the rows kept. */
    append_counting_rows(a, 1, 6, 2);
    npy_close(a);
    rc = npy_read(path, &arr, err, sizeof err);
    EXPECT(rc == 0, "npy_read: %s", err);
    if (rc != 0) return;
    EXPECT(arr.shape[0] == 3, "shape[0] is %ld", arr.shape[0]);
    check_counting_rows(&arr, 3, 6);
    npy_free(&arr);

    a = npy_reopen(path, NPY_F32, 2, tail, 0, err, sizeof err);
    EXPECT(a != NULL, "npy_reopen keeping 0 rows: %s", err);
    EXPECT(file_size(path) == 128, "file has %ld bytes after keeping 0 rows", file_size(path));
    npy_close(a);
}

static void npy_reopen_rejects_keep_rows(void) {
    char path[512], err[256] = "";
    tmp_path(path, sizeof path, "keep.npy");
    NpyAppender *a = npy_create(path, NPY_F32, 0, NULL, err, sizeof err);
    EXPECT(a != NULL, "npy_create: %s", err);
    if (!a) return;
    append_counting_rows(a, 2, 1, 0);
    npy_close(a);

    err[0] = '\0';
    a = npy_reopen(path, NPY_F32, 0, NULL, 3, err, sizeof err);
    EXPECT(a == NULL, "keeping 3 of 2 rows succeeded");
    npy_close(a);
    EXPECT(strstr(err, "has 2 rows") != NULL, "message: %s", err);
    EXPECT(file_size(path) == 128 + 2 * 4, "rejected reopen changed the file size to %ld", file_size(path));

    a = npy_reopen(path, NPY_F32, 0, NULL, -2, err, sizeof err);
    EXPECT(a == NULL, "keep_rows -2 succeeded");
    npy_close(a);
}

/* An append killed after writing the data but before the header leaves
 * trailing bytes; readers ignore them and reopen cuts them off. */
static void npy_trailing_bytes_ignored(void) {
    char path[512], err[256] = "";
    tmp_path(path, sizeof path, "trailing.npy");
    const long tail[] = {5};

    NpyAppender *a = npy_create(path, NPY_F32, 1, tail, err, sizeof err);
    EXPECT(a != NULL, "npy_create: %s", err);
    if (!a) return;
    append_counting_rows(a, 3, 5, 0);
    npy_close(a);
    const unsigned char partial_row[13] = {0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8, 9};
    append_bytes(path, partial_row, sizeof partial_row);
    long size_with_garbage = 128 + 3 * 20 + 13;
    EXPECT(file_size(path) == size_with_garbage, "file has %ld bytes", file_size(path));

    NpyArray arr;
    int rc = npy_read(path, &arr, err, sizeof err);
    EXPECT(rc == 0, "npy_read with trailing bytes: %s", err);
    if (rc == 0) {
        EXPECT(arr.shape[0] == 3, "shape[0] is %ld", arr.shape[0]);
        check_counting_rows(&arr, 3, 5);
        npy_free(&arr);
    }

    a = npy_reopen(path, NPY_F32, 1, tail, -1, err, sizeof err);
    EXPECT(a != NULL, "npy_reopen with trailing bytes: %s", err);
    if (!a) return;
    EXPECT(npy_rows(a) == 3, "npy_rows is %ld", npy_rows(a));
    EXPECT(file_size(path) == 128 + 3 * 20, "trailing bytes not cut: file has %ld bytes", file_size(path));
    append_counting_rows(a, 1, 5, 3);
    npy_close(a);

    rc = npy_read(path, &arr, err, sizeof err);
    EXPECT(rc == 0, "npy_read: %s", err);
    if (rc != 0) return;
    EXPECT(arr.shape[0] == 4, "shape[0] is %ld", arr.shape[0]);
    check_counting_rows(&arr, 4, 5);
    npy_free(&arr);
}

static void npy_reopen_rejects_dtype(void) {
    char path[512], err[256] = "";
    tmp_path(path, sizeof path, "ints.npy");
    const long tail[] = {2};
    NpyAppender *a = npy_create(path, NPY_I64, 1, tail, err, sizeof err);
    EXPECT(a != NULL, "npy_create: %s", err);
    npy_close(a);

    err[0] = '\0';
    a = npy_reopen(path, NPY_F32, 1, tail, -1, err, sizeof err);
    EXPECT(a == NULL, "reopening an int64 file as float32 succeeded");
    npy_close(a);
    EXPECT(strstr(err, path) != NULL, "message lacks the path: %s", err);
    EXPECT(strstr(err, "'<i8'") != NULL, "message lacks the file's dtype: %s", err);
}

static void npy_reopen_rejects_shape(void) {
    char path[512], err[256] = "";
    tmp_path(path, sizeof path, "shape.npy");
    const long tail[] = {2, 3};
    NpyAppender *a = npy_create(path, NPY_F32, 2, tail, err, sizeof err);
    EXPECT(a != NULL, "npy_create: %s", err);
    npy_close(a);

    const long other_tail[] = {2, 4};
    err[0] = '\0';
    a = npy_reopen(path, NPY_F32, 2, other_tail, -1, err, sizeof err);
    EXPECT(a == NULL, "reopening (0, 2, 3) with rows of (2, 4) succeeded");
    npy_close(a);
    EXPECT(strstr(err, "(0, 2, 3)") != NULL, "message lacks the file's shape: %s", err);
    EXPECT(strstr(err, "(2, 4)") != NULL, "message lacks the expected row shape: %s", err);

    a = npy_reopen(path, NPY_F32, 1, tail, -1, err, sizeof err);
    EXPECT(a == NULL, "reopening a 3-D file with 1-D rows succeeded");
    npy_close(a);
}

static void npy_reopen_rejects_missing(void) {
    char path[512], err[256] = "";
    tmp_path(path, sizeof path, "absent.npy");
    NpyAppender *a = npy_reopen(path, NPY_F32, 0, NULL, -1, err, sizeof err);
    EXPECT(a == NULL, "reopening a missing file succeeded");
    npy_close(a);
    EXPECT(strstr(err, path) != NULL, "message lacks the path: %s", err);
}

static void npy_read_int64(void) {
    char path[512], err[256] = "";
    tmp_path(path, sizeof path, "numpy_i8.npy");
    const int64_t values[6] = {-1, 0, 1, INT64_MAX, INT64_MIN, 1234567890123LL};
    /* The exact dict numpy 1.24 writes for np.array(values).reshape(2, 3). */
    write_raw_npy(path, 1, "{'descr': '<i8', 'fortran_order': False, 'shape': (2, 3), }", values,
                  sizeof values);

    NpyArray arr;
    int rc = npy_read(path, &arr, err, sizeof err);
    EXPECT(rc == 0, "npy_read: %s", err);
    if (rc != 0) return;
    EXPECT(arr.dtype == NPY_I64, "dtype is %d", (int)arr.dtype);
    EXPECT(arr.ndim == 2, "ndim is %d", arr.ndim);
    EXPECT(arr.shape[0] == 2 && arr.shape[1] == 3, "shape is (%ld, %ld)", arr.shape[0], arr.shape[1]);
    const int64_t *data = arr.data;
    for (int i = 0; i < 6; i++)
        EXPECT(data[i] == values[i], "element %d is %lld, expected %lld", i, (long long)data[i],
               (long long)values[i]);
    npy_free(&arr);
}

static void npy_read_scalar_and_v2(void) {
    char path[512], err[256] = "";
    tmp_path(path, sizeof path, "scalar.npy");
    const float pi = 3.25f;
    write_raw_npy(path, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (), }", &pi, sizeof pi);
    NpyArray arr;
    int rc = npy_read(path, &arr, err, sizeof err);
    EXPECT(rc == 0, "npy_read 0-d: %s", err);
    if (rc == 0) {
        EXPECT(arr.ndim == 0, "ndim is %d", arr.ndim);
        EXPECT(*(const float *)arr.data == pi, "value is %g", (double)*(const float *)arr.data);
        npy_free(&arr);
    }

    /* Version 2.0, double quotes, keys in another order, no trailing comma. */
    tmp_path(path, sizeof path, "v2.npy");
    const float values[4] = {1, 2, 3, 4};
    write_raw_npy(path, 2, "{\"shape\": (4,), \"fortran_order\": False, \"descr\": \"<f4\"}", values,
                  sizeof values);
    rc = npy_read(path, &arr, err, sizeof err);
    EXPECT(rc == 0, "npy_read v2.0: %s", err);
    if (rc == 0) {
        EXPECT(arr.ndim == 1 && arr.shape[0] == 4, "ndim %d, shape[0] %ld", arr.ndim, arr.shape[0]);
        EXPECT(((const float *)arr.data)[3] == 4.0f, "last value is %g", (double)((const float *)arr.data)[3]);
        npy_free(&arr);
    }
}

/* Write a file with the dict and check that npy_read rejects it with a
 * message containing the path and the expected fragment. */
static void check_read_rejects(const char *name, const char *dict, size_t data_bytes,
                               const char *fragment) {
    char path[512], err[256] = "";
    tmp_path(path, sizeof path, name);
    unsigned char *data = calloc(1, data_bytes + 1);
    write_raw_npy(path, 1, dict, data, data_bytes);
    free(data);

    NpyArray arr;
    int rc = npy_read(path, &arr, err, sizeof err);
    EXPECT(rc == -1, "%s: npy_read accepted %s", name, dict);
    if (rc == 0) npy_free(&arr);
    EXPECT(arr.data == NULL, "%s: data is set after a failure", name);
    EXPECT(strstr(err, path) != NULL, "%s: message lacks the path: %s", name, err);
    EXPECT(strstr(err, fragment) != NULL, "%s: message lacks '%s': %s", name, fragment, err);
}

static void npy_read_rejects_headers(void) {
    check_read_rejects("fortran.npy", "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }", 16,
                       "Fortran order");
    check_read_rejects("f8.npy", "{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }", 16, "'<f8'");
    check_read_rejects("big_endian.npy", "{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }", 8,
                       "'>f4'");
    check_read_rejects("five_dims.npy",
                       "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1, 1, 1, 1), }", 4,
                       "more than 4 dimensions");
    check_read_rejects("no_tuple.npy", "{'descr': '<f4', 'fortran_order': False, 'shape': (2), }", 8,
                       "not a tuple");
    check_read_rejects("no_shape.npy", "{'descr': '<f4', 'fortran_order': False, }", 8, "lacks");
    check_read_rejects("extra_key.npy",
                       "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'x': 1, }", 8,
                       "unknown or repeated key");
    check_read_rejects("negative.npy", "{'descr': '<f4', 'fortran_order': False, 'shape': (-2,), }", 8,
                       "non-negative");
    check_read_rejects("truncated.npy", "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }", 47,
                       "truncated");
}

static void npy_read_rejects_bad_magic(void) {
    char path[512], err[256] = "";
    tmp_path(path, sizeof path, "magic.npy");
    write_raw_npy(path, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", "abcd", 4);
    FILE *f = fopen(path, "r+b");
    EXPECT(f != NULL, "cannot open %s", path);
    if (!f) return;
    fputc('X', f); /* replaces the 0x93 byte */
    fclose(f);

    NpyArray arr;
    EXPECT(npy_read(path, &arr, err, sizeof err) == -1, "npy_read accepted a bad magic string");
    EXPECT(strstr(err, path) != NULL, "message lacks the path: %s", err);
    EXPECT(strstr(err, "magic") != NULL, "message: %s", err);

    tmp_path(path, sizeof path, "short.npy");
    append_bytes(path, "\x93NUM", 4);
    EXPECT(npy_read(path, &arr, err, sizeof err) == -1, "npy_read accepted a 4-byte file");
    EXPECT(strstr(err, path) != NULL, "message lacks the path: %s", err);

    tmp_path(path, sizeof path, "absent.npy");
    EXPECT(npy_read(path, &arr, err, sizeof err) == -1, "npy_read accepted a missing file");
    EXPECT(strstr(err, "No such file") != NULL, "message: %s", err);
}

/* A file written by another program, with the header padded only to the
 * next multiple of 64 bytes, can be appended to while its dict has room for
 * a 19-digit row count. */
static void npy_reopen_numpy_file(void) {
    char path[512], err[256] = "";
    tmp_path(path, sizeof path, "numpy_f4.npy");
    const float values[6] = {0, 1, 1000, 1001, 2000, 2001};
    write_raw_npy(path, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 2), }", values,
                  sizeof values);
    EXPECT(file_size(path) == 128 + 24, "raw file has %ld bytes", file_size(path));

    const long tail[] = {2};
    NpyAppender *a = npy_reopen(path, NPY_F32, 1, tail, -1, err, sizeof err);
    EXPECT(a != NULL, "npy_reopen: %s", err);
    if (!a) return;
    append_counting_rows(a, 1, 2, 3);
    npy_close(a);

    NpyArray arr;
    int rc = npy_read(path, &arr, err, sizeof err);
    EXPECT(rc == 0, "npy_read: %s", err);
    if (rc != 0) return;
    EXPECT(arr.shape[0] == 4, "shape[0] is %ld", arr.shape[0]);
    check_counting_rows(&arr, 4, 2);
    npy_free(&arr);
}

static void npy_create_rejects_bad_tail(void) {
    char path[512], err[256] = "";
    tmp_path(path, sizeof path, "bad_tail.npy");
    const long negative[] = {3, -1};
    NpyAppender *a = npy_create(path, NPY_F32, 2, negative, err, sizeof err);
    EXPECT(a == NULL, "npy_create accepted a negative dimension");
    npy_close(a);
    EXPECT(strstr(err, "negative") != NULL, "message: %s", err);

    const long four[] = {1, 2, 3, 4};
    a = npy_create(path, NPY_F32, 4, four, err, sizeof err);
    EXPECT(a == NULL, "npy_create accepted 4 row dimensions");
    npy_close(a);
}

const TestCase npy_tests[] = {
    {"npy append 1-D rows", npy_append_1d_rows},
    {"npy append 2-D rows", npy_append_2d_rows},
    {"npy append 3-D rows", npy_append_3d_rows},
    {"npy append 4-D rows", npy_append_4d_rows},
    {"npy header text", npy_header_text},
    {"npy empty file reads", npy_empty_file_reads},
    {"npy reopen keeps rows", npy_reopen_keeps_rows},
    {"npy reopen truncates", npy_reopen_truncates},
    {"npy reopen rejects keep_rows", npy_reopen_rejects_keep_rows},
    {"npy trailing bytes ignored", npy_trailing_bytes_ignored},
    {"npy reopen rejects dtype", npy_reopen_rejects_dtype},
    {"npy reopen rejects shape", npy_reopen_rejects_shape},
    {"npy reopen rejects missing file", npy_reopen_rejects_missing},
    {"npy read int64", npy_read_int64},
    {"npy read 0-d and v2.0", npy_read_scalar_and_v2},
    {"npy read rejects headers", npy_read_rejects_headers},
    {"npy read rejects bad magic", npy_read_rejects_bad_magic},
    {"npy reopen numpy-written file", npy_reopen_numpy_file},
    {"npy create rejects bad tail", npy_create_rejects_bad_tail},
    {NULL, NULL},
};
