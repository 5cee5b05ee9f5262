/* NumPy .npy reader and appendable writer; see npy.h.
 *
 * The format is defined in numpy/lib/format.py. A file starts with the magic
 * "\x93NUMPY", a major and a minor version byte and the header length
 * (uint16 little-endian in version 1.0, uint32 in 2.0 and 3.0). Then comes a
 * Python dict literal such as
 *     {'descr': '<f4', 'fortran_order': False, 'shape': (12, 128, 8), }
 * padded with spaces and ended by '\n', so that prefix plus dict is a
 * multiple of 64 bytes. The raw array data follows. */
#include "npy.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "error.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "npy.c copies array data without byte swapping, so it needs a little-endian host"
#endif

#define NPY_MAGIC "\x93NUMPY"
#define NPY_MAGIC_LEN 6
#define NPY_PREFIX_V1 10 /* magic, 2 version bytes, uint16 header length */
#define NPY_PREFIX_V2 12 /* magic, 2 version bytes, uint32 header length */
#define NPY_HEADER_ALIGN 64
/* Minimum header size of files made by npy_create(). A larger header, in
 * steps of 64 bytes, is used when the dict with a 19-digit row count needs it. */
#define NPY_APPEND_HEADER_MIN 128
/* Upper bound on the dict length of version 2.0 and 3.0 files, so a corrupt
 * length field cannot request a huge allocation. It is above numpy 1.24's
 * default max_header_size of 10000 bytes. */
#define NPY_MAX_DICT_LEN (1L << 20)
/* Room for the shape dict with every dimension at LONG_MAX. */
#define NPY_DICT_CAP 256

struct NpyAppender {
    int fd;                  /* opened O_RDWR; writes go straight to the kernel with pwrite */
    char *path;              /* for error messages */
    NpyDtype dtype;
    int ndim;                /* n_tail + 1 */
    long shape[NPY_MAX_DIMS]; /* shape[0] is the row count on disk */
    int major;               /* format version of the header (1, 2 or 3) */
    size_t header_bytes;     /* prefix plus padded dict; the data starts here */
    size_t row_bytes;
};

/* Parsed header of an .npy file. */
typedef struct {
    int major;
    size_t header_bytes;
    NpyDtype dtype;
    int fortran_order;
    int ndim;
    long shape[NPY_MAX_DIMS];
} NpyHeader;

static void set_error(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_error(char *err, size_t errlen, const char *fmt, ...) {
    if (!err || errlen == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static const char *dtype_descr(NpyDtype dtype) { return dtype == NPY_F32 ? "<f4" : "<i8"; }

static size_t dtype_size(NpyDtype dtype) { return dtype == NPY_F32 ? 4 : 8; }

/* Format a shape as numpy prints it: "()", "(5,)" or "(5, 3)". */
static void format_shape(char *buf, size_t cap, int ndim, const long *shape) {
    size_t used = 0;
    used += (size_t)snprintf(buf, cap, "(");
    for (int i = 0; i < ndim && used < cap; i++)
        used += (size_t)snprintf(buf + used, cap - used, i ? ", %ld" : "%ld", shape[i]);
    if (used < cap) snprintf(buf + used, cap - used, ndim == 1 ? ",)" : ")");
}

/* Write the header dict (without padding); return its length. */
static size_t format_dict(char *buf, size_t cap, NpyDtype dtype, int ndim, const long *shape) {
    char shape_text[NPY_DICT_CAP];
    format_shape(shape_text, sizeof shape_text, ndim, shape);
    int n = snprintf(buf, cap, "{'descr': '%s', 'fortran_order': False, 'shape': %s, }",
                     dtype_descr(dtype), shape_text);
    return (size_t)n;
}

static int pread_all(int fd, void *buf, size_t len, off_t offset) {
    char *p = buf;
    while (len > 0) {
        ssize_t n = pread(fd, p, len, offset);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return -1;
        if (n == 0) {
            errno = 0; /* end of file */
            return -1;
        }
        p += n;
        len -= (size_t)n;
        offset += n;
    }
    return 0;
}

static int pwrite_all(int fd, const void *buf, size_t len, off_t offset) {
    const char *p = buf;
    while (len > 0) {
        ssize_t n = pwrite(fd, p, len, offset);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return -1;
        p += n;
        len -= (size_t)n;
        offset += n;
    }
    return 0;
}

static const char *read_error_text(void) {
    return errno ? strerror(errno) : "unexpected end of file";
}

/* ---- header dict parser ---------------------------------------------------
 * The parser accepts the subset of Python literal syntax that numpy writes.
 * That is a dict with the string keys 'descr', 'fortran_order' and 'shape',
 * whose values are a string, True or False, and a tuple of non-negative
 * integers. An "L" suffix on an integer, written by Python 2, is allowed. */

typedef struct {
    const char *text;
    size_t len;
    size_t pos;
    char problem[128]; /* the first parse error */
} DictCursor;

static void set_problem(DictCursor *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void set_problem(DictCursor *c, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->problem, sizeof c->problem, fmt, ap);
    va_end(ap);
}

static void skip_space(DictCursor *c) {
    while (c->pos < c->len && (c->text[c->pos] == ' ' || c->text[c->pos] == '\t' ||
                               c->text[c->pos] == '\n' || c->text[c->pos] == '\r'))
        c->pos++;
}

static int expect_char(DictCursor *c, char ch, const char *problem) {
    skip_space(c);
    if (c->pos < c->len && c->text[c->pos] == ch) {
        c->pos++;
        return 0;
    }
    set_problem(c, "%s", problem);
    return -1;
}

/* Parse a quoted string into out (NUL-terminated, truncated to cap - 1). */
static int parse_string(DictCursor *c, char *out, size_t cap) {
    skip_space(c);
    if (c->pos >= c->len || (c->text[c->pos] != '\'' && c->text[c->pos] != '"')) {
        set_problem(c, "expected a quoted string");
        return -1;
    }
    char quote = c->text[c->pos++];
    size_t start = c->pos;
    while (c->pos < c->len && c->text[c->pos] != quote) {
        if (c->text[c->pos] == '\\') {
            set_problem(c, "escape sequences in header strings are not supported");
            return -1;
        }
        c->pos++;
    }
    if (c->pos >= c->len) {
        set_problem(c, "unterminated string");
        return -1;
    }
    size_t n = c->pos - start;
    if (n >= cap) n = cap - 1;
    memcpy(out, c->text + start, n);
    out[n] = '\0';
    c->pos++;
    return 0;
}

static int parse_bool(DictCursor *c, int *out) {
    skip_space(c);
    if (c->len - c->pos >= 4 && memcmp(c->text + c->pos, "True", 4) == 0) {
        c->pos += 4;
        *out = 1;
        return 0;
    }
    if (c->len - c->pos >= 5 && memcmp(c->text + c->pos, "False", 5) == 0) {
        c->pos += 5;
        *out = 0;
        return 0;
    }
    set_problem(c, "'fortran_order' is not True or False");
    return -1;
}

static int parse_dim(DictCursor *c, long *out) {
    skip_space(c);
    if (c->pos >= c->len || c->text[c->pos] < '0' || c->text[c->pos] > '9') {
        set_problem(c, "shape contains a value that is not a non-negative integer");
        return -1;
    }
    long value = 0;
    while (c->pos < c->len && c->text[c->pos] >= '0' && c->text[c->pos] <= '9') {
        int digit = c->text[c->pos] - '0';
        if (value > (LONG_MAX - digit) / 10) {
            set_problem(c, "shape dimension is too large");
            return -1;
        }
        value = value * 10 + digit;
        c->pos++;
    }
    if (c->pos < c->len && c->text[c->pos] == 'L') c->pos++;
    *out = value;
    return 0;
}

static int parse_shape(DictCursor *c, int *ndim, long *shape) {
    if (expect_char(c, '(', "'shape' is not a tuple") < 0) return -1;
    *ndim = 0;
    int trailing_comma = 0;
    for (;;) {
        skip_space(c);
        if (c->pos < c->len && c->text[c->pos] == ')') {
            c->pos++;
            break;
        }
        if (*ndim > 0 && !trailing_comma) {
            set_problem(c, "shape tuple is malformed");
            return -1;
        }
        long dim;
        if (parse_dim(c, &dim) < 0) return -1;
        if (*ndim == NPY_MAX_DIMS) {
            set_problem(c, "shape has more than %d dimensions", NPY_MAX_DIMS);
            return -1;
        }
        shape[(*ndim)++] = dim;
        skip_space(c);
        trailing_comma = c->pos < c->len && c->text[c->pos] == ',';
        if (trailing_comma) c->pos++;
    }
    /* "(5)" is the integer 5 in Python, not a tuple. */
    if (*ndim == 1 && !trailing_comma) {
        set_problem(c, "'shape' is not a tuple");
        return -1;
    }
    return 0;
}

/* Parse the dict text into h (dtype, fortran_order, shape). */
static int parse_dict(const char *text, size_t len, NpyHeader *h, char *problem, size_t problem_cap) {
    DictCursor c = {text, len, 0, ""};
    int have_descr = 0, have_fortran = 0, have_shape = 0;
    char key[32];

    if (expect_char(&c, '{', "header is not a dict") < 0) goto fail;
    for (;;) {
        skip_space(&c);
        if (c.pos < c.len && c.text[c.pos] == '}') {
            c.pos++;
            break;
        }
        if (parse_string(&c, key, sizeof key) < 0) goto fail;
        if (expect_char(&c, ':', "expected ':' after a dict key") < 0) goto fail;

        if (strcmp(key, "descr") == 0 && !have_descr) {
            char descr[32];
            if (parse_string(&c, descr, sizeof descr) < 0) goto fail;
            if (strcmp(descr, "<f4") == 0) {
                h->dtype = NPY_F32;
            } else if (strcmp(descr, "<i8") == 0) {
                h->dtype = NPY_I64;
            } else {
                set_problem(&c, "dtype '%s' is not supported (expected '<f4' or '<i8')", descr);
                goto fail;
            }
            have_descr = 1;
        } else if (strcmp(key, "fortran_order") == 0 && !have_fortran) {
            if (parse_bool(&c, &h->fortran_order) < 0) goto fail;
            have_fortran = 1;
        } else if (strcmp(key, "shape") == 0 && !have_shape) {
            if (parse_shape(&c, &h->ndim, h->shape) < 0) goto fail;
            have_shape = 1;
        } else {
            set_problem(&c, "header has an unknown or repeated key");
            goto fail;
        }

        skip_space(&c);
        if (c.pos < c.len && c.text[c.pos] == ',') {
            c.pos++;
            continue;
        }
        if (expect_char(&c, '}', "expected ',' or '}' in the header dict") < 0) goto fail;
        break;
    }
    skip_space(&c);
    if (c.pos != c.len) {
        set_problem(&c, "header has text after the dict");
        goto fail;
    }
    if (!have_descr || !have_fortran || !have_shape) {
        set_problem(&c, "header lacks one of the keys 'descr', 'fortran_order' and 'shape'");
        goto fail;
    }
    return 0;

fail:
    snprintf(problem, problem_cap, "%s", c.problem);
    return -1;
}

/* Read and parse the header of the open file fd. */
static int read_header(int fd, const char *path, NpyHeader *h, char *err, size_t errlen) {
    unsigned char prefix[NPY_PREFIX_V2];
    memset(h, 0, sizeof *h);

    if (pread_all(fd, prefix, NPY_PREFIX_V1, 0) < 0) {
        set_error(err, errlen, "'%s' is not a .npy file: cannot read the header (%s)", path,
                  read_error_text());
        return -1;
    }
    if (memcmp(prefix, NPY_MAGIC, NPY_MAGIC_LEN) != 0) {
        set_error(err, errlen, "'%s' is not a .npy file: invalid magic string", path);
        return -1;
    }
    int major = prefix[6], minor = prefix[7];
    if ((major != 1 && major != 2 && major != 3) || minor != 0) {
        set_error(err, errlen, "'%s' has .npy format version %d.%d; only 1.0, 2.0 and 3.0 are supported",
                  path, major, minor);
        return -1;
    }

    size_t prefix_len, dict_len;
    if (major == 1) {
        prefix_len = NPY_PREFIX_V1;
        dict_len = (size_t)prefix[8] | (size_t)prefix[9] << 8;
    } else {
        prefix_len = NPY_PREFIX_V2;
        if (pread_all(fd, prefix + NPY_PREFIX_V1, 2, NPY_PREFIX_V1) < 0) {
            set_error(err, errlen, "'%s' is truncated inside the header (%s)", path, read_error_text());
            return -1;
        }
        dict_len = (size_t)prefix[8] | (size_t)prefix[9] << 8 | (size_t)prefix[10] << 16 |
                   (size_t)prefix[11] << 24;
        if (dict_len > (size_t)NPY_MAX_DICT_LEN) {
            set_error(err, errlen, "'%s' declares a header of %zu bytes, more than the limit of %ld",
                      path, dict_len, NPY_MAX_DICT_LEN);
            return -1;
        }
    }

    char *dict = sd_malloc(dict_len + 1);
    if (pread_all(fd, dict, dict_len, (off_t)prefix_len) < 0) {
        set_error(err, errlen, "'%s' is truncated inside the header (%s)", path, read_error_text());
        free(dict);
        return -1;
    }
    dict[dict_len] = '\0';
    char problem[128];
    int rc = parse_dict(dict, dict_len, h, problem, sizeof problem);
    free(dict);
    if (rc < 0) {
        set_error(err, errlen, "'%s' has an invalid .npy header: %s", path, problem);
        return -1;
    }
    h->major = major;
    h->header_bytes = prefix_len + dict_len;
    return 0;
}

/* Byte size of count elements of itemsize, or -1 on overflow. */
static int checked_bytes(int ndim, const long *shape, size_t itemsize, size_t *out) {
    size_t total = itemsize;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) return -1;
        if (shape[i] != 0 && total > SIZE_MAX / (size_t)shape[i]) return -1;
        total *= (size_t)shape[i];
    }
    *out = total;
    return 0;
}

/* ---- appender --------------------------------------------------------------- */

/* Write the header block (prefix, dict, padding, '\n') with shape[0] = rows. */
static int write_header(NpyAppender *a, long rows, char *err, size_t errlen) {
    size_t prefix_len = a->major == 1 ? NPY_PREFIX_V1 : NPY_PREFIX_V2;
    size_t dict_room = a->header_bytes - prefix_len;
    long shape[NPY_MAX_DIMS];
    memcpy(shape, a->shape, sizeof shape);
    shape[0] = rows;

    char *block = sd_malloc(a->header_bytes);
    memcpy(block, NPY_MAGIC, NPY_MAGIC_LEN);
    block[6] = (char)a->major;
    block[7] = 0;
    block[8] = (char)(dict_room & 0xff);
    block[9] = (char)((dict_room >> 8) & 0xff);
    if (a->major != 1) {
        block[10] = (char)((dict_room >> 16) & 0xff);
        block[11] = (char)((dict_room >> 24) & 0xff);
    }
    char dict[NPY_DICT_CAP];
    size_t dict_len = format_dict(dict, sizeof dict, a->dtype, a->ndim, shape);
    /* npy_create and npy_reopen checked that the dict fits with rows = LONG_MAX. */
    CHECK(dict_len + 1 <= dict_room, "dict of %zu bytes in a %zu-byte header", dict_len, dict_room);
    memcpy(block + prefix_len, dict, dict_len);
    memset(block + prefix_len + dict_len, ' ', dict_room - dict_len - 1);
    block[a->header_bytes - 1] = '\n';

    int rc = pwrite_all(a->fd, block, a->header_bytes, 0);
    free(block);
    if (rc < 0) {
        set_error(err, errlen, "writing the header of '%s' failed: %s", a->path, strerror(errno));
        return -1;
    }
    return 0;
}

/* Dict length with the first dimension at its maximum, which the header must hold. */
static size_t max_dict_len(const NpyAppender *a) {
    long shape[NPY_MAX_DIMS];
    memcpy(shape, a->shape, sizeof shape);
    shape[0] = LONG_MAX;
    char dict[NPY_DICT_CAP];
    return format_dict(dict, sizeof dict, a->dtype, a->ndim, shape);
}

/* Check n_tail and tail, fill a's dtype, shape and row_bytes. */
static int init_shape(NpyAppender *a, const char *path, NpyDtype dtype, int n_tail, const long *tail,
                      char *err, size_t errlen) {
    if (dtype != NPY_F32 && dtype != NPY_I64) {
        set_error(err, errlen, "'%s': invalid dtype code %d", path, (int)dtype);
        return -1;
    }
    if (n_tail < 0 || n_tail > NPY_MAX_DIMS - 1 || (n_tail > 0 && !tail)) {
        set_error(err, errlen, "'%s': invalid row shape (%d dimensions; expected 0 to %d)", path,
                  n_tail, NPY_MAX_DIMS - 1);
        return -1;
    }
    a->dtype = dtype;
    a->ndim = n_tail + 1;
    a->shape[0] = 0;
    for (int i = 0; i < n_tail; i++) {
        if (tail[i] < 0) {
            set_error(err, errlen, "'%s': row shape dimension %d is negative (%ld)", path, i, tail[i]);
            return -1;
        }
        a->shape[i + 1] = tail[i];
    }
    if (checked_bytes(n_tail, tail, dtype_size(dtype), &a->row_bytes) < 0) {
        set_error(err, errlen, "'%s': row shape is too large", path);
        return -1;
    }
    return 0;
}

static NpyAppender *appender_new(const char *path) {
    NpyAppender *a = sd_calloc(1, sizeof *a);
    a->fd = -1;
    a->path = sd_strdup(path);
    return a;
}

NpyAppender *npy_create(const char *path, NpyDtype dtype, int n_tail, const long *tail,
                        char *err, size_t errlen) {
    NpyAppender *a = appender_new(path);
    if (init_shape(a, path, dtype, n_tail, tail, err, errlen) < 0) goto fail;

    a->major = 1;
    size_t needed = NPY_PREFIX_V1 + max_dict_len(a) + 1;
    size_t header_bytes = (needed + NPY_HEADER_ALIGN - 1) / NPY_HEADER_ALIGN * NPY_HEADER_ALIGN;
    a->header_bytes = header_bytes < NPY_APPEND_HEADER_MIN ? NPY_APPEND_HEADER_MIN : header_bytes;

    a->fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (a->fd < 0) {
        set_error(err, errlen, "cannot create '%s': %s", path, strerror(errno));
        goto fail;
    }
    if (write_header(a, 0, err, errlen) < 0) goto fail;
    return a;

fail:
    npy_close(a);
    return NULL;
}

NpyAppender *npy_reopen(const char *path, NpyDtype dtype, int n_tail, const long *tail,
                        long keep_rows, char *err, size_t errlen) {
    NpyAppender *a = appender_new(path);
    if (init_shape(a, path, dtype, n_tail, tail, err, errlen) < 0) goto fail;

    a->fd = open(path, O_RDWR | O_CLOEXEC);
    if (a->fd < 0) {
        set_error(err, errlen, "cannot open '%s': %s", path, strerror(errno));
        goto fail;
    }
    NpyHeader h;
    if (read_header(a->fd, path, &h, err, errlen) < 0) goto fail;
    if (h.fortran_order) {
        set_error(err, errlen, "'%s' is stored in Fortran order; only C order can be appended to", path);
        goto fail;
    }
    if (h.dtype != dtype) {
        set_error(err, errlen, "'%s' has dtype '%s', expected '%s'", path, dtype_descr(h.dtype),
                  dtype_descr(dtype));
        goto fail;
    }
    int same_shape = h.ndim == a->ndim;
    for (int i = 1; same_shape && i < a->ndim; i++) same_shape = h.shape[i] == a->shape[i];
    if (!same_shape) {
        char found[NPY_DICT_CAP], expected_row[NPY_DICT_CAP];
        format_shape(found, sizeof found, h.ndim, h.shape);
        format_shape(expected_row, sizeof expected_row, a->ndim - 1, a->shape + 1);
        set_error(err, errlen, "'%s' has shape %s, expected rows of shape %s", path, found,
                  expected_row);
        goto fail;
    }

    a->major = h.major;
    a->header_bytes = h.header_bytes;
    long rows = h.shape[0];
    size_t prefix_len = h.major == 1 ? NPY_PREFIX_V1 : NPY_PREFIX_V2;
    if (prefix_len + max_dict_len(a) + 1 > h.header_bytes) {
        set_error(err, errlen,
                  "'%s' has a %zu-byte header with no room for the row count to grow; "
                  "recreate it with npy_create",
                  path, h.header_bytes);
        goto fail;
    }

    struct stat st;
    if (fstat(a->fd, &st) < 0) {
        set_error(err, errlen, "cannot stat '%s': %s", path, strerror(errno));
        goto fail;
    }
    size_t data_bytes;
    if (checked_bytes(h.ndim, h.shape, dtype_size(dtype), &data_bytes) < 0 ||
        (off_t)data_bytes > st.st_size - (off_t)h.header_bytes) {
        set_error(err, errlen, "'%s' is truncated: the header declares %ld rows of %zu bytes "
                  "but the file has %lld bytes after the %zu-byte header",
                  path, rows, a->row_bytes, (long long)(st.st_size - (off_t)h.header_bytes),
                  h.header_bytes);
        goto fail;
    }

    if (keep_rows < -1 || keep_rows > rows) {
        set_error(err, errlen, "'%s' has %ld rows; cannot keep %ld", path, rows, keep_rows);
        goto fail;
    }
    if (keep_rows == -1) keep_rows = rows;

    /* Lower the row count in the header first, then cut the bytes beyond it
     * (dropped rows, or the data of an append whose header update never
     * happened). A kill between the two leaves trailing bytes, which readers
     * ignore; the other order would leave a header promising missing rows. */
    a->shape[0] = rows;
    if (keep_rows != rows) {
        if (write_header(a, keep_rows, err, errlen) < 0) goto fail;
        a->shape[0] = keep_rows;
    }
    off_t keep_size = (off_t)h.header_bytes + (off_t)((size_t)keep_rows * a->row_bytes);
    if (st.st_size != keep_size && ftruncate(a->fd, keep_size) < 0) {
        set_error(err, errlen, "truncating '%s' to %ld rows failed: %s", path, keep_rows,
                  strerror(errno));
        goto fail;
    }
    return a;

fail:
    npy_close(a);
    return NULL;
}

int npy_append(NpyAppender *a, const void *row, char *err, size_t errlen) {
    long rows = a->shape[0];
    if (!row && a->row_bytes > 0) {
        set_error(err, errlen, "appending to '%s' failed: row is NULL", a->path);
        return -1;
    }
    if (rows == LONG_MAX ||
        (a->row_bytes > 0 && (size_t)rows >= ((size_t)INT64_MAX - a->header_bytes) / a->row_bytes)) {
        set_error(err, errlen, "appending to '%s' failed: the file would exceed the maximum size",
                  a->path);
        return -1;
    }

    /* Data first, then the row count: a crash between the two leaves a valid
     * file with the old count and some trailing bytes. */
    off_t offset = (off_t)(a->header_bytes + (size_t)rows * a->row_bytes);
    if (pwrite_all(a->fd, row, a->row_bytes, offset) < 0) {
        set_error(err, errlen, "appending a row to '%s' failed: %s", a->path, strerror(errno));
        return -1;
    }
    if (write_header(a, rows + 1, err, errlen) < 0) return -1;
    a->shape[0] = rows + 1;
    return 0;
}

long npy_rows(const NpyAppender *a) { return a->shape[0]; }

void npy_close(NpyAppender *a) {
    if (!a) return;
    if (a->fd >= 0) close(a->fd);
    free(a->path);
    free(a);
}

/* ---- reader ----------------------------------------------------------------- */

int npy_read(const char *path, NpyArray *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        set_error(err, errlen, "cannot open '%s': %s", path, strerror(errno));
        return -1;
    }

    NpyHeader h;
    if (read_header(fd, path, &h, err, errlen) < 0) goto fail;
    if (h.fortran_order) {
        set_error(err, errlen, "'%s' is stored in Fortran order; only C order is supported", path);
        goto fail;
    }
    size_t data_bytes;
    char shape_text[NPY_DICT_CAP];
    format_shape(shape_text, sizeof shape_text, h.ndim, h.shape);
    if (checked_bytes(h.ndim, h.shape, dtype_size(h.dtype), &data_bytes) < 0) {
        set_error(err, errlen, "'%s' has shape %s, which is too large", path, shape_text);
        goto fail;
    }

    struct stat st;
    if (fstat(fd, &st) < 0) {
        set_error(err, errlen, "cannot stat '%s': %s", path, strerror(errno));
        goto fail;
    }
    off_t available = st.st_size - (off_t)h.header_bytes;
    if (available < 0 || (uintmax_t)available < data_bytes) {
        set_error(err, errlen, "'%s' is truncated: shape %s needs %zu bytes of data but the file has %lld",
                  path, shape_text, data_bytes, (long long)(available < 0 ? 0 : available));
        goto fail;
    }

    void *data = sd_malloc(data_bytes);
    if (pread_all(fd, data, data_bytes, (off_t)h.header_bytes) < 0) {
        set_error(err, errlen, "reading '%s' failed: %s", path, read_error_text());
        free(data);
        goto fail;
    }
    close(fd);

    out->dtype = h.dtype;
    out->ndim = h.ndim;
    memcpy(out->shape, h.shape, sizeof out->shape);
    out->data = data;
    return 0;

fail:
    close(fd);
    return -1;
}

void npy_free(NpyArray *a) {
    if (!a) return;
    free(a->data);
    a->data = NULL;
    a->ndim = 0;
}
