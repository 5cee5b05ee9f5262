/* safetensors reader and atomic writer; see safetensors.h.
 *
 * A file is a uint64 little-endian header length N, N bytes of JSON and the
 * data section. The writer pads the JSON with spaces to a multiple of 8 bytes
 * so the data section starts 8-byte aligned. Each tensor's "data_offsets"
 * [begin, end) are relative to the start of the data section. As in the
 * reference Rust implementation (safetensors/src/tensor.rs in
 * huggingface/safetensors), the reader requires the tensors to cover the data
 * section exactly, with no gaps or overlaps, and caps the header at
 * 100,000,000 bytes. */
#include "safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.c copies tensor data without byte swapping, so it needs a little-endian host"
#endif

#define ST_MAX_HEADER_LEN 100000000ULL
#define ST_METADATA_KEY "__metadata__"
/* Largest integer that a JSON number (an IEEE double in cJSON) represents exactly. */
#define ST_MAX_JSON_INT 9007199254740992.0

struct StFile {
    char *path;
    unsigned char *data;   /* the data section; NULL when it is empty */
    int n_tensors;
    StTensorRef *tensors;  /* names owned; data points into data or into aligned_copies */
    void **aligned_copies; /* per tensor: a copy when its bytes in data are misaligned, else NULL */
    int n_meta;
    char **meta_keys;
    char **meta_values;
};

static void set_error(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_error(char *err, size_t errlen, const char *fmt, ...) {
    if (!err || errlen == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static const char *dtype_name(StDtype dtype) { return dtype == ST_F32 ? "F32" : "I64"; }

static size_t dtype_size(StDtype dtype) { return dtype == ST_F32 ? 4 : 8; }

/* Byte size of a tensor, or -1 on a negative dimension or overflow. */
static int tensor_bytes(StDtype dtype, int ndim, const long *shape, uint64_t *out) {
    uint64_t total = dtype_size(dtype);
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) return -1;
        if (shape[i] != 0 && total > UINT64_MAX / (uint64_t)shape[i]) return -1;
        total *= (uint64_t)shape[i];
    }
    *out = total;
    return 0;
}

/* Byte size of a tensor whose shape was already validated. */
static uint64_t valid_tensor_bytes(const StTensorRef *t) {
    uint64_t bytes = 0;
    CHECK(tensor_bytes(t->dtype, t->ndim, t->shape, &bytes) == 0, "tensor '%s' has an invalid shape",
          t->name);
    return bytes;
}

/* ---- writer ------------------------------------------------------------------ */

/* A JSON integer printed exactly: cJSON prints numbers through a double with
 * 15 significant digits, which is not exact above 10^15. */
static cJSON *json_integer(uint64_t value) {
    char text[24];
    snprintf(text, sizeof text, "%llu", (unsigned long long)value);
    return cJSON_CreateRaw(text);
}

static int check_tensors(const char *path, const StTensorRef *tensors, int n_tensors, char *err,
                         size_t errlen) {
    for (int i = 0; i < n_tensors; i++) {
        const StTensorRef *t = &tensors[i];
        if (!t->name || !t->name[0]) {
            set_error(err, errlen, "writing '%s': tensor %d has no name", path, i);
            return -1;
        }
        if (strcmp(t->name, ST_METADATA_KEY) == 0) {
            set_error(err, errlen, "writing '%s': the tensor name '%s' is reserved for metadata", path,
                      t->name);
            return -1;
        }
        for (int j = 0; j < i; j++) {
            if (strcmp(tensors[j].name, t->name) == 0) {
                set_error(err, errlen, "writing '%s': tensor name '%s' appears twice", path, t->name);
                return -1;
            }
        }
        if (t->dtype != ST_F32 && t->dtype != ST_I64) {
            set_error(err, errlen, "writing '%s': tensor '%s' has invalid dtype code %d", path, t->name,
                      (int)t->dtype);
            return -1;
        }
        if (t->ndim < 0 || t->ndim > ST_MAX_DIMS) {
            set_error(err, errlen, "writing '%s': tensor '%s' has %d dimensions (expected 0 to %d)", path,
                      t->name, t->ndim, ST_MAX_DIMS);
            return -1;
        }
        uint64_t bytes;
        if (tensor_bytes(t->dtype, t->ndim, t->shape, &bytes) < 0) {
            set_error(err, errlen, "writing '%s': tensor '%s' has a negative or too large shape", path,
                      t->name);
            return -1;
        }
        if (bytes > 0 && !t->data) {
            set_error(err, errlen, "writing '%s': tensor '%s' has no data", path, t->name);
            return -1;
        }
    }
    return 0;
}

/* Build the padded JSON header; return it (malloc'd) with its length, or NULL
 * with a message. */
static char *build_header(const char *path, const StTensorRef *tensors, int n_tensors,
                          const char *const *meta_keys, const char *const *meta_values, int n_meta,
                          size_t *header_len, char *err, size_t errlen) {
    cJSON *root = cJSON_CreateObject();
    if (n_meta > 0) {
        cJSON *meta = cJSON_AddObjectToObject(root, ST_METADATA_KEY);
        for (int i = 0; i < n_meta; i++) {
            if (!meta_keys[i] || !meta_values[i]) {
                set_error(err, errlen, "writing '%s': metadata entry %d has a NULL key or value", path, i);
                cJSON_Delete(root);
                return NULL;
            }
            if (cJSON_GetObjectItemCaseSensitive(meta, meta_keys[i])) {
                set_error(err, errlen, "writing '%s': metadata key '%s' appears twice", path, meta_keys[i]);
                cJSON_Delete(root);
                return NULL;
            }
            cJSON_AddStringToObject(meta, meta_keys[i], meta_values[i]);
        }
    }

    uint64_t offset = 0;
    for (int i = 0; i < n_tensors; i++) {
        const StTensorRef *t = &tensors[i];
        uint64_t bytes = valid_tensor_bytes(t);
        cJSON *entry = cJSON_AddObjectToObject(root, t->name);
        cJSON_AddStringToObject(entry, "dtype", dtype_name(t->dtype));
        cJSON *shape = cJSON_AddArrayToObject(entry, "shape");
        for (int d = 0; d < t->ndim; d++) cJSON_AddItemToArray(shape, json_integer((uint64_t)t->shape[d]));
        cJSON *offsets = cJSON_AddArrayToObject(entry, "data_offsets");
        cJSON_AddItemToArray(offsets, json_integer(offset));
        cJSON_AddItemToArray(offsets, json_integer(offset + bytes));
        offset += bytes;
    }

    char *json = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!json) sd_fail("out of memory printing the safetensors header for '%s'", path);
    size_t len = strlen(json);
    size_t padded = (len + 7) / 8 * 8;
    char *header = sd_malloc(padded);
    memcpy(header, json, len);
    memset(header + len, ' ', padded - len);
    cJSON_free(json);
    *header_len = padded;
    return header;
}

/* fsync the directory containing path so the rename survives a crash. */
static int sync_parent_dir(const char *path) {
    char *dir = sd_strdup(path);
    char *slash = strrchr(dir, '/');
    if (!slash) {
        strcpy(dir, ".");
    } else if (slash == dir) {
        dir[1] = '\0';
    } else {
        *slash = '\0';
    }
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    free(dir);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    /* Some file systems do not support fsync on a directory. */
    if (rc < 0 && (errno == EINVAL || errno == EBADF)) rc = 0;
    close(fd);
    return rc;
}

int st_write(const char *path, const StTensorRef *tensors, int n_tensors,
             const char *const *meta_keys, const char *const *meta_values, int n_meta,
             char *err, size_t errlen) {
    if (n_tensors < 0 || n_meta < 0 || (n_tensors > 0 && !tensors) ||
        (n_meta > 0 && (!meta_keys || !meta_values))) {
        set_error(err, errlen, "writing '%s': invalid tensor or metadata list", path);
        return -1;
    }
    if (check_tensors(path, tensors, n_tensors, err, errlen) < 0) return -1;
    size_t header_len;
    char *header = build_header(path, tensors, n_tensors, meta_keys, meta_values, n_meta, &header_len,
                                err, errlen);
    if (!header) return -1;

    size_t tmp_cap = strlen(path) + 32;
    char *tmp = sd_malloc(tmp_cap);
    snprintf(tmp, tmp_cap, "%s.tmp.%ld", path, (long)getpid());

    FILE *f = fopen(tmp, "wb");
    if (!f) {
        set_error(err, errlen, "cannot create '%s': %s", tmp, strerror(errno));
        free(header);
        free(tmp);
        return -1;
    }

    unsigned char len_bytes[8];
    for (int i = 0; i < 8; i++) len_bytes[i] = (unsigned char)((uint64_t)header_len >> (8 * i));
    int ok = fwrite(len_bytes, 1, 8, f) == 8 && fwrite(header, 1, header_len, f) == header_len;
    for (int i = 0; ok && i < n_tensors; i++) {
        uint64_t bytes = valid_tensor_bytes(&tensors[i]);
        if (bytes > 0) ok = fwrite(tensors[i].data, 1, (size_t)bytes, f) == (size_t)bytes;
    }
    free(header);
    const char *step = "write";
    if (ok && fflush(f) != 0) ok = 0;
    if (ok && fsync(fileno(f)) != 0) {
        ok = 0;
        step = "fsync";
    }
    int saved_errno = errno;
    if (fclose(f) != 0 && ok) {
        ok = 0;
        saved_errno = errno;
    }
    if (!ok) {
        set_error(err, errlen, "%s to '%s' failed: %s", step, tmp, strerror(saved_errno));
        unlink(tmp);
        free(tmp);
        return -1;
    }

    if (rename(tmp, path) != 0) {
        set_error(err, errlen, "renaming '%s' to '%s' failed: %s", tmp, path, strerror(errno));
        unlink(tmp);
        free(tmp);
        return -1;
    }
    free(tmp);
    if (sync_parent_dir(path) != 0) {
        set_error(err, errlen, "'%s' was written but syncing its directory failed: %s", path,
                  strerror(errno));
        return -1;
    }
    return 0;
}

/* ---- reader ------------------------------------------------------------------ */

/* Read a JSON number that must be an integer in [0, 2^53]. */
static int json_to_u64(const cJSON *item, uint64_t *out) {
    if (!cJSON_IsNumber(item)) return -1;
    double v = item->valuedouble;
    if (!(v >= 0.0 && v <= ST_MAX_JSON_INT) || v != (double)(uint64_t)v) return -1;
    *out = (uint64_t)v;
    return 0;
}

/* Parse one tensor entry of the header into t and its [begin, end) offsets. */
static int parse_tensor(const char *path, const cJSON *entry, StTensorRef *t, uint64_t *begin,
                        uint64_t *end, char *err, size_t errlen) {
    const char *name = entry->string;
    if (!cJSON_IsObject(entry)) {
        set_error(err, errlen, "'%s': header entry for tensor '%s' is not an object", path, name);
        return -1;
    }

    const cJSON *dtype = cJSON_GetObjectItemCaseSensitive(entry, "dtype");
    if (!cJSON_IsString(dtype)) {
        set_error(err, errlen, "'%s': tensor '%s' has no \"dtype\" string", path, name);
        return -1;
    }
    if (strcmp(dtype->valuestring, "F32") == 0) {
        t->dtype = ST_F32;
    } else if (strcmp(dtype->valuestring, "I64") == 0) {
        t->dtype = ST_I64;
    } else {
        set_error(err, errlen, "'%s': tensor '%s' has dtype %s; only F32 and I64 are supported", path, name,
                  dtype->valuestring);
        return -1;
    }

    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(entry, "shape");
    if (!cJSON_IsArray(shape)) {
        set_error(err, errlen, "'%s': tensor '%s' has no \"shape\" array", path, name);
        return -1;
    }
    int ndim = cJSON_GetArraySize(shape);
    if (ndim > ST_MAX_DIMS) {
        set_error(err, errlen, "'%s': tensor '%s' has %d dimensions; at most %d are supported", path, name,
                  ndim, ST_MAX_DIMS);
        return -1;
    }
    t->ndim = ndim;
    int d = 0;
    const cJSON *dim;
    cJSON_ArrayForEach(dim, shape) {
        uint64_t value;
        if (json_to_u64(dim, &value) < 0) {
            set_error(err, errlen, "'%s': tensor '%s' has a shape entry that is not a non-negative integer",
                      path, name);
            return -1;
        }
        t->shape[d++] = (long)value;
    }

    const cJSON *offsets = cJSON_GetObjectItemCaseSensitive(entry, "data_offsets");
    if (!cJSON_IsArray(offsets) || cJSON_GetArraySize(offsets) != 2 ||
        json_to_u64(cJSON_GetArrayItem(offsets, 0), begin) < 0 ||
        json_to_u64(cJSON_GetArrayItem(offsets, 1), end) < 0 || *end < *begin) {
        set_error(err, errlen, "'%s': tensor '%s' has invalid \"data_offsets\" (expected [begin, end])",
                  path, name);
        return -1;
    }

    uint64_t bytes;
    if (tensor_bytes(t->dtype, t->ndim, t->shape, &bytes) < 0) {
        set_error(err, errlen, "'%s': tensor '%s' has a shape too large to address", path, name);
        return -1;
    }
    if (*end - *begin != bytes) {
        set_error(err, errlen,
                  "'%s': tensor '%s' has data_offsets [%llu, %llu] spanning %llu bytes, but its dtype "
                  "and shape need %llu",
                  path, name, (unsigned long long)*begin, (unsigned long long)*end,
                  (unsigned long long)(*end - *begin), (unsigned long long)bytes);
        return -1;
    }
    return 0;
}

static int parse_metadata(StFile *f, const cJSON *meta, char *err, size_t errlen) {
    if (!cJSON_IsObject(meta)) {
        set_error(err, errlen, "'%s': \"%s\" is not an object", f->path, ST_METADATA_KEY);
        return -1;
    }
    int n = cJSON_GetArraySize(meta);
    f->meta_keys = sd_calloc((size_t)n, sizeof *f->meta_keys);
    f->meta_values = sd_calloc((size_t)n, sizeof *f->meta_values);
    const cJSON *item;
    cJSON_ArrayForEach(item, meta) {
        if (!cJSON_IsString(item)) {
            set_error(err, errlen, "'%s': metadata value for key '%s' is not a string", f->path, item->string);
            return -1;
        }
        f->meta_keys[f->n_meta] = sd_strdup(item->string);
        f->meta_values[f->n_meta] = sd_strdup(item->valuestring);
        f->n_meta++;
    }
    return 0;
}

typedef struct {
    uint64_t begin, end;
    int index;
} OffsetRange;

static int compare_ranges(const void *a, const void *b) {
    const OffsetRange *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

/* Check that the ranges tile [0, data_len) with no gap or overlap. */
static int check_coverage(StFile *f, OffsetRange *ranges, uint64_t data_len, char *err, size_t errlen) {
    qsort(ranges, (size_t)f->n_tensors, sizeof *ranges, compare_ranges);
    uint64_t expected = 0;
    for (int i = 0; i < f->n_tensors; i++) {
        const char *name = f->tensors[ranges[i].index].name;
        if (ranges[i].end > data_len) {
            set_error(err, errlen,
                      "'%s': tensor '%s' has data_offsets [%llu, %llu] beyond the %llu-byte data section",
                      f->path, name, (unsigned long long)ranges[i].begin,
                      (unsigned long long)ranges[i].end, (unsigned long long)data_len);
            return -1;
        }
        if (ranges[i].begin != expected) {
            set_error(err, errlen, "'%s': tensor '%s' starts at data offset %llu, expected %llu "
                      "(tensors must be contiguous without overlap)",
                      f->path, name, (unsigned long long)ranges[i].begin, (unsigned long long)expected);
            return -1;
        }
        expected = ranges[i].end;
    }
    if (expected != data_len) {
        set_error(err, errlen, "'%s': tensors cover %llu bytes but the data section has %llu",
                  f->path, (unsigned long long)expected, (unsigned long long)data_len);
        return -1;
    }
    return 0;
}

/* Parse the header JSON and fill f's tensors and metadata. */
static int parse_header(StFile *f, const char *json, uint64_t data_len, char *err, size_t errlen) {
    const char *parse_end = NULL;
    cJSON *root = cJSON_ParseWithOpts(json, &parse_end, 1);
    if (!root) {
        set_error(err, errlen, "'%s': header is not valid JSON (error near byte %ld)", f->path,
                  parse_end ? (long)(parse_end - json) : -1L);
        return -1;
    }
    if (!cJSON_IsObject(root)) {
        set_error(err, errlen, "'%s': header is not a JSON object", f->path);
        cJSON_Delete(root);
        return -1;
    }

    int n_entries = cJSON_GetArraySize(root);
    f->tensors = sd_calloc((size_t)n_entries, sizeof *f->tensors);
    f->aligned_copies = sd_calloc((size_t)n_entries, sizeof *f->aligned_copies);
    OffsetRange *ranges = sd_calloc((size_t)n_entries, sizeof *ranges);
    int rc = -1;
    int have_meta = 0;
    const cJSON *entry;
    cJSON_ArrayForEach(entry, root) {
        if (strcmp(entry->string, ST_METADATA_KEY) == 0) {
            if (have_meta) {
                set_error(err, errlen, "'%s': header has two \"%s\" entries", f->path, ST_METADATA_KEY);
                goto done;
            }
            have_meta = 1;
            if (parse_metadata(f, entry, err, errlen) < 0) goto done;
            continue;
        }
        for (int i = 0; i < f->n_tensors; i++) {
            if (strcmp(f->tensors[i].name, entry->string) == 0) {
                set_error(err, errlen, "'%s': tensor '%s' appears twice in the header", f->path,
                          entry->string);
                goto done;
            }
        }
        StTensorRef *t = &f->tensors[f->n_tensors];
        OffsetRange *range = &ranges[f->n_tensors];
        if (parse_tensor(f->path, entry, t, &range->begin, &range->end, err, errlen) < 0) goto done;
        t->name = sd_strdup(entry->string);
        range->index = f->n_tensors;
        f->n_tensors++;
    }

    if (check_coverage(f, ranges, data_len, err, errlen) < 0) goto done;
    for (int i = 0; i < f->n_tensors; i++) {
        StTensorRef *t = &f->tensors[ranges[i].index];
        t->data = data_len > 0 ? f->data + ranges[i].begin : NULL;
    }
    rc = 0;

done:
    free(ranges);
    cJSON_Delete(root);
    return rc;
}

/* Give every tensor a data pointer aligned to its element size by copying
 * the bytes of misaligned tensors. Misalignment happens because other writers
 * may not align the data section and one file may mix 4- and 8-byte elements. */
static void align_tensor_data(StFile *f) {
    for (int i = 0; i < f->n_tensors; i++) {
        StTensorRef *t = &f->tensors[i];
        if (!t->data || (uintptr_t)t->data % dtype_size(t->dtype) == 0) continue;
        uint64_t bytes = valid_tensor_bytes(t);
        void *copy = sd_malloc((size_t)bytes);
        memcpy(copy, t->data, (size_t)bytes);
        f->aligned_copies[i] = copy;
        t->data = copy;
    }
}

static int read_exact(int fd, void *buf, size_t len) {
    unsigned char *p = buf;
    while (len > 0) {
        ssize_t n = read(fd, p, len);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return -1;
        if (n == 0) {
            errno = 0;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

StFile *st_read(const char *path, char *err, size_t errlen) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        set_error(err, errlen, "cannot open '%s': %s", path, strerror(errno));
        return NULL;
    }
    StFile *f = sd_calloc(1, sizeof *f);
    f->path = sd_strdup(path);
    char *json = NULL;

    struct stat st;
    if (fstat(fd, &st) < 0) {
        set_error(err, errlen, "cannot stat '%s': %s", path, strerror(errno));
        goto fail;
    }
    uint64_t file_size = (uint64_t)st.st_size;
    unsigned char len_bytes[8];
    if (file_size < 8 || read_exact(fd, len_bytes, 8) < 0) {
        set_error(err, errlen, "'%s' is not a safetensors file: it is shorter than the 8-byte header length",
                  path);
        goto fail;
    }
    uint64_t header_len = 0;
    for (int i = 0; i < 8; i++) header_len |= (uint64_t)len_bytes[i] << (8 * i);
    if (header_len > ST_MAX_HEADER_LEN) {
        set_error(err, errlen, "'%s' declares a header of %llu bytes, more than the limit of %llu", path,
                  (unsigned long long)header_len, ST_MAX_HEADER_LEN);
        goto fail;
    }
    if (header_len > file_size - 8) {
        set_error(err, errlen, "'%s' declares a header of %llu bytes but the file has only %llu bytes after "
                  "the length field", path, (unsigned long long)header_len,
                  (unsigned long long)(file_size - 8));
        goto fail;
    }

    json = sd_malloc((size_t)header_len + 1);
    if (read_exact(fd, json, (size_t)header_len) < 0) {
        set_error(err, errlen, "reading the header of '%s' failed: %s", path,
                  errno ? strerror(errno) : "unexpected end of file");
        goto fail;
    }
    json[header_len] = '\0';
    if (memchr(json, '\0', (size_t)header_len) != NULL) {
        set_error(err, errlen, "'%s': header contains a NUL byte", path);
        goto fail;
    }

    uint64_t data_len = file_size - 8 - header_len;
    if (data_len > 0) {
        f->data = sd_malloc((size_t)data_len);
        if (read_exact(fd, f->data, (size_t)data_len) < 0) {
            set_error(err, errlen, "reading the data of '%s' failed: %s", path,
                      errno ? strerror(errno) : "unexpected end of file");
            goto fail;
        }
    }
    close(fd);
    fd = -1;

    if (parse_header(f, json, data_len, err, errlen) < 0) goto fail;
    free(json);
    align_tensor_data(f);
    return f;

fail:
    if (fd >= 0) close(fd);
    free(json);
    st_free(f);
    return NULL;
}

const StTensorRef *st_find(const StFile *f, const char *name) {
    for (int i = 0; i < f->n_tensors; i++)
        if (strcmp(f->tensors[i].name, name) == 0) return &f->tensors[i];
    return NULL;
}

int st_count(const StFile *f) { return f->n_tensors; }

const StTensorRef *st_get(const StFile *f, int i) {
    CHECK(i >= 0 && i < f->n_tensors, "tensor index %d of %d", i, f->n_tensors);
    return &f->tensors[i];
}

const char *st_meta(const StFile *f, const char *key) {
    for (int i = 0; i < f->n_meta; i++)
        if (strcmp(f->meta_keys[i], key) == 0) return f->meta_values[i];
    return NULL;
}

void st_free(StFile *f) {
    if (!f) return;
    for (int i = 0; i < f->n_tensors; i++) {
        free((char *)f->tensors[i].name);
        free(f->aligned_copies[i]);
    }
    for (int i = 0; i < f->n_meta; i++) {
        free(f->meta_keys[i]);
        free(f->meta_values[i]);
    }
    free(f->tensors);
    free(f->aligned_copies);
    free(f->meta_keys);
    free(f->meta_values);
    free(f->data);
    free(f->path);
    free(f);
}
