/* Tests for core/safetensors.c: round trips with metadata, the on-disk
 * layout, atomic replacement, and rejection of corrupt headers. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "safetensors.h"
#include "test.h"

static void tmp_path(char *buf, size_t cap, const char *name) {
    snprintf(buf, cap, "%s/%s", test_tmpdir(), name);
}

/* Write a file from a JSON header (unpadded) and data_bytes bytes of data
 * whose byte i is i % 251. */
static void write_raw_safetensors(const char *path, const char *json, size_t data_bytes) {
    uint64_t len = strlen(json);
    unsigned char len_bytes[8];
    for (int i = 0; i < 8; i++) len_bytes[i] = (unsigned char)(len >> (8 * i));
    FILE *f = fopen(path, "wb");
    EXPECT(f != NULL, "cannot create %s", path);
    if (!f) return;
    fwrite(len_bytes, 1, 8, f);
    fwrite(json, 1, (size_t)len, f);
    for (size_t i = 0; i < data_bytes; i++) fputc((int)(i % 251), f);
    fclose(f);
}

/* Overwrite the 8-byte header length field of path. */
static void patch_header_len(const char *path, uint64_t len) {
    unsigned char len_bytes[8];
    for (int i = 0; i < 8; i++) len_bytes[i] = (unsigned char)(len >> (8 * i));
    FILE *f = fopen(path, "r+b");
    EXPECT(f != NULL, "cannot open %s", path);
    if (!f) return;
    fwrite(len_bytes, 1, 8, f);
    fclose(f);
}

/* Count entries of the test directory whose name contains fragment. */
static int count_dir_entries(const char *fragment) {
    DIR *dir = opendir(test_tmpdir());
    if (!dir) return -1;
    int count = 0;
    struct dirent *e;
    while ((e = readdir(dir)) != NULL)
        if (strstr(e->d_name, fragment)) count++;
    closedir(dir);
    return count;
}

/* Expect st_read to reject path with a message containing the path and fragment. */
static void check_read_rejects(const char *path, const char *fragment) {
    char err[512] = "";
    StFile *f = st_read(path, err, sizeof err);
    EXPECT(f == NULL, "st_read accepted %s", path);
    st_free(f);
    EXPECT(strstr(err, path) != NULL, "message lacks the path: %s", err);
    EXPECT(strstr(err, fragment) != NULL, "message lacks '%s': %s", fragment, err);
}

static void st_roundtrip_with_metadata(void) {
    char path[512], err[512] = "";
    tmp_path(path, sizeof path, "roundtrip.safetensors");
    const float weight[6] = {1.5f, -2.0f, 3.25f, 0.0f, 1e-20f, -7.0f};
    const int64_t steps[5] = {0, 1, -1, INT64_MAX, INT64_MIN};
    const float scale = 0.125f;
    const int64_t cube[6] = {10, 20, 30, 40, 50, 60};
    const StTensorRef tensors[] = {
        {"layers.0.weight", ST_F32, 2, {2, 3}, weight},
        {"steps", ST_I64, 1, {5}, steps},
        {"scale", ST_F32, 0, {0}, &scale},
        {"cube", ST_I64, 4, {1, 2, 1, 3}, cube},
        {"empty", ST_F32, 2, {0, 4}, NULL},
    };
    const char *keys[] = {"format", "step", "note"};
    const char *values[] = {"pt", "1200", "quote \" and unicode \xc3\xa9"};

    int rc = st_write(path, tensors, 5, keys, values, 3, err, sizeof err);
    EXPECT(rc == 0, "st_write: %s", err);
    StFile *f = st_read(path, err, sizeof err);
    EXPECT(f != NULL, "st_read: %s", err);
    if (!f) return;

    EXPECT(st_count(f) == 5, "st_count is %d", st_count(f));
    for (int i = 0; i < 5 && i < st_count(f); i++) {
        const StTensorRef *t = st_get(f, i);
        EXPECT(strcmp(t->name, tensors[i].name) == 0, "tensor %d is '%s', expected '%s'", i, t->name,
               tensors[i].name);
        EXPECT(t->dtype == tensors[i].dtype, "tensor '%s' has dtype %d", t->name, (int)t->dtype);
        EXPECT(t->ndim == tensors[i].ndim, "tensor '%s' has ndim %d", t->name, t->ndim);
        for (int d = 0; d < t->ndim; d++)
            EXPECT(t->shape[d] == tensors[i].shape[d], "tensor '%s' shape[%d] is %ld", t->name, d,
                   t->shape[d]);
    }

    const StTensorRef *w = st_find(f, "layers.0.weight");
    EXPECT(w != NULL, "layers.0.weight not found");
    if (w) EXPECT(memcmp(w->data, weight, sizeof weight) == 0, "layers.0.weight data differs");
    const StTensorRef *s = st_find(f, "steps");
    EXPECT(s != NULL, "steps not found");
    if (s) {
        const int64_t *data = s->data;
        for (int i = 0; i < 5; i++)
            EXPECT(data[i] == steps[i], "steps[%d] is %lld", i, (long long)data[i]);
    }
    const StTensorRef *sc = st_find(f, "scale");
    EXPECT(sc != NULL && *(const float *)sc->data == scale, "scale is wrong or missing");
    const StTensorRef *c = st_find(f, "cube");
    EXPECT(c != NULL && memcmp(c->data, cube, sizeof cube) == 0, "cube data is wrong or missing");

    for (int i = 0; i < 3; i++) {
        const char *value = st_meta(f, keys[i]);
        EXPECT(value != NULL && strcmp(value, values[i]) == 0, "metadata '%s' is '%s'", keys[i],
               value ? value : "(missing)");
    }
    EXPECT(st_meta(f, "absent") == NULL, "st_meta returned a value for an absent key");
    st_free(f);
}

static void st_find_missing_name(void) {
    char path[512], err[512] = "";
    tmp_path(path, sizeof path, "find.safetensors");
    const float values[2] = {1, 2};
    const StTensorRef tensors[] = {{"a", ST_F32, 1, {2}, values}};
    EXPECT(st_write(path, tensors, 1, NULL, NULL, 0, err, sizeof err) == 0, "st_write: %s", err);
    StFile *f = st_read(path, err, sizeof err);
    EXPECT(f != NULL, "st_read: %s", err);
    if (!f) return;
    EXPECT(st_find(f, "a") != NULL, "st_find did not find 'a'");
    EXPECT(st_find(f, "b") == NULL, "st_find found absent 'b'");
    EXPECT(st_find(f, "") == NULL, "st_find found an empty name");
    EXPECT(st_find(f, "__metadata__") == NULL, "st_find returned the metadata entry");
    EXPECT(st_meta(f, "anything") == NULL, "st_meta returned a value for a file without metadata");
    st_free(f);
}

static void st_layout_on_disk(void) {
    char path[512], err[512] = "";
    tmp_path(path, sizeof path, "layout.safetensors");
    const float values[3] = {1, 2, 3};
    const int64_t ids[2] = {7, 8};
    const StTensorRef tensors[] = {{"x", ST_F32, 1, {3}, values}, {"ids", ST_I64, 1, {2}, ids}};
    const char *keys[] = {"k"};
    const char *meta_values[] = {"v"};
    EXPECT(st_write(path, tensors, 2, keys, meta_values, 1, err, sizeof err) == 0, "st_write: %s", err);

    FILE *fp = fopen(path, "rb");
    EXPECT(fp != NULL, "cannot open %s", path);
    if (!fp) return;
    unsigned char bytes[512];
    size_t n = fread(bytes, 1, sizeof bytes, fp);
    fclose(fp);
    uint64_t header_len = 0;
    for (int i = 0; i < 8; i++) header_len |= (uint64_t)bytes[i] << (8 * i);
    EXPECT(header_len % 8 == 0, "header length %llu is not a multiple of 8", (unsigned long long)header_len);
    EXPECT(n == 8 + header_len + 12 + 16, "file has %zu bytes, header length %llu", n,
           (unsigned long long)header_len);
    if (n != 8 + header_len + 28) return;

    char json[512];
    memcpy(json, bytes + 8, (size_t)header_len);
    json[header_len] = '\0';
    EXPECT(json[0] == '{', "header starts with '%c'", json[0]);
    EXPECT(strstr(json, "\"x\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,12]}") != NULL,
           "header: %s", json);
    EXPECT(strstr(json, "\"ids\":{\"dtype\":\"I64\",\"shape\":[2],\"data_offsets\":[12,28]}") != NULL,
           "header: %s", json);
    EXPECT(strstr(json, "\"__metadata__\":{\"k\":\"v\"}") != NULL, "header: %s", json);
    EXPECT(memcmp(bytes + 8 + header_len, values, 12) == 0, "first tensor bytes differ");
    EXPECT(memcmp(bytes + 8 + header_len + 12, ids, 16) == 0, "second tensor bytes differ");

    /* ids starts 12 bytes into the data section, so st_read must copy it to
     * give it an 8-byte aligned pointer. */
    StFile *f = st_read(path, err, sizeof err);
    EXPECT(f != NULL, "st_read: %s", err);
    if (!f) return;
    const StTensorRef *t = st_find(f, "ids");
    EXPECT(t != NULL && (uintptr_t)t->data % 8 == 0, "ids data is not 8-byte aligned");
    EXPECT(t != NULL && ((const int64_t *)t->data)[1] == 8, "ids[1] is wrong");
    st_free(f);
}

static void st_atomic_write_no_temp(void) {
    char path[512], err[512] = "";
    tmp_path(path, sizeof path, "atomic.safetensors");
    const float first[2] = {1, 2};
    const float second[3] = {3, 4, 5};
    const StTensorRef v1[] = {{"w", ST_F32, 1, {2}, first}};
    const StTensorRef v2[] = {{"w", ST_F32, 1, {3}, second}};

    EXPECT(st_write(path, v1, 1, NULL, NULL, 0, err, sizeof err) == 0, "first st_write: %s", err);
    EXPECT(st_write(path, v2, 1, NULL, NULL, 0, err, sizeof err) == 0, "second st_write: %s", err);
    EXPECT(count_dir_entries(".tmp.") == 0, "%d temporary files remain", count_dir_entries(".tmp."));

    StFile *f = st_read(path, err, sizeof err);
    EXPECT(f != NULL, "st_read: %s", err);
    if (!f) return;
    const StTensorRef *w = st_find(f, "w");
    EXPECT(w != NULL && w->shape[0] == 3, "the second write did not replace the first");
    if (w && w->shape[0] == 3) EXPECT(((const float *)w->data)[2] == 5.0f, "w[2] is wrong");
    st_free(f);
}

/* A rename that fails (the target is a directory) returns -1 and removes the
 * temporary file. */
static void st_failed_write_cleans_up(void) {
    char path[512], err[512] = "";
    tmp_path(path, sizeof path, "is_a_dir.safetensors");
    EXPECT(mkdir(path, 0755) == 0, "cannot create directory %s", path);
    const float values[1] = {1};
    const StTensorRef tensors[] = {{"w", ST_F32, 1, {1}, values}};
    int rc = st_write(path, tensors, 1, NULL, NULL, 0, err, sizeof err);
    EXPECT(rc == -1, "st_write over a directory succeeded");
    EXPECT(strstr(err, path) != NULL, "message lacks the path: %s", err);
    EXPECT(count_dir_entries(".tmp.") == 0, "%d temporary files remain", count_dir_entries(".tmp."));

    tmp_path(path, sizeof path, "no_such_dir/out.safetensors");
    rc = st_write(path, tensors, 1, NULL, NULL, 0, err, sizeof err);
    EXPECT(rc == -1, "st_write into a missing directory succeeded");
    EXPECT(strstr(err, "No such file") != NULL, "message: %s", err);
}

static void st_write_rejects_bad_input(void) {
    char path[512], err[512] = "";
    tmp_path(path, sizeof path, "bad_input.safetensors");
    const float values[2] = {1, 2};
    const StTensorRef duplicate[] = {{"w", ST_F32, 1, {2}, values}, {"w", ST_F32, 1, {2}, values}};
    EXPECT(st_write(path, duplicate, 2, NULL, NULL, 0, err, sizeof err) == -1,
           "st_write accepted a duplicate name");
    EXPECT(strstr(err, "'w' appears twice") != NULL, "message: %s", err);

    const StTensorRef reserved[] = {{"__metadata__", ST_F32, 1, {2}, values}};
    EXPECT(st_write(path, reserved, 1, NULL, NULL, 0, err, sizeof err) == -1,
           "st_write accepted the name __metadata__");

    const StTensorRef negative[] = {{"w", ST_F32, 1, {-2}, values}};
    EXPECT(st_write(path, negative, 1, NULL, NULL, 0, err, sizeof err) == -1,
           "st_write accepted a negative dimension");

    const StTensorRef five_dims[] = {{"w", ST_F32, 5, {1, 1, 1, 1}, values}};
    EXPECT(st_write(path, five_dims, 1, NULL, NULL, 0, err, sizeof err) == -1,
           "st_write accepted 5 dimensions");

    struct stat st;
    EXPECT(stat(path, &st) != 0, "a rejected st_write created %s", path);
    EXPECT(count_dir_entries(".tmp.") == 0, "%d temporary files remain", count_dir_entries(".tmp."));
}

static void st_rejects_header_length(void) {
    char path[512], err[512] = "";
    tmp_path(path, sizeof path, "header_len.safetensors");
    const float values[4] = {1, 2, 3, 4};
    const StTensorRef tensors[] = {{"w", ST_F32, 1, {4}, values}};
    EXPECT(st_write(path, tensors, 1, NULL, NULL, 0, err, sizeof err) == 0, "st_write: %s", err);

    struct stat st;
    stat(path, &st);
    patch_header_len(path, (uint64_t)st.st_size); /* 8 bytes more than remain */
    check_read_rejects(path, "declares a header of");

    patch_header_len(path, 100000001ULL);
    check_read_rejects(path, "more than the limit");

    patch_header_len(path, UINT64_MAX);
    check_read_rejects(path, "more than the limit");

    patch_header_len(path, 5); /* cuts the JSON */
    check_read_rejects(path, "not valid JSON");

    tmp_path(path, sizeof path, "short.safetensors");
    FILE *f = fopen(path, "wb");
    EXPECT(f != NULL, "cannot create %s", path);
    if (f) {
        fwrite("\x02\0\0", 1, 3, f);
        fclose(f);
    }
    check_read_rejects(path, "shorter than");

    tmp_path(path, sizeof path, "absent.safetensors");
    check_read_rejects(path, "No such file");
}

static void st_rejects_bad_offsets(void) {
    char path[512];
    tmp_path(path, sizeof path, "offsets.safetensors");

    write_raw_safetensors(path, "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 8);
    check_read_rejects(path, "beyond the 8-byte data section");

    write_raw_safetensors(path, "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,16]}}", 16);
    check_read_rejects(path, "need 12");

    write_raw_safetensors(path, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 8);
    check_read_rejects(path, "invalid \"data_offsets\"");

    write_raw_safetensors(path, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,-8]}}", 8);
    check_read_rejects(path, "invalid \"data_offsets\"");

    write_raw_safetensors(path,
                          "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                          "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
                          12);
    check_read_rejects(path, "contiguous");

    write_raw_safetensors(path, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 12);
    check_read_rejects(path, "cover 8 bytes");

    write_raw_safetensors(path, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2.5],\"data_offsets\":[0,8]}}", 8);
    check_read_rejects(path, "shape entry");
}

static void st_rejects_bad_entries(void) {
    char path[512];
    tmp_path(path, sizeof path, "entries.safetensors");

    write_raw_safetensors(path, "{\"half\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4);
    check_read_rejects(path, "tensor 'half' has dtype F16");

    write_raw_safetensors(path, "{\"a\":{\"shape\":[2],\"data_offsets\":[0,8]}}", 8);
    check_read_rejects(path, "no \"dtype\"");

    write_raw_safetensors(path, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,2],\"data_offsets\":[0,8]}}", 8);
    check_read_rejects(path, "5 dimensions");

    write_raw_safetensors(path, "{\"__metadata__\":{\"step\":3}}", 0);
    check_read_rejects(path, "not a string");

    write_raw_safetensors(path, "[1, 2]", 0);
    check_read_rejects(path, "not a JSON object");

    write_raw_safetensors(path, "{\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]}} x", 4);
    check_read_rejects(path, "not valid JSON");

    write_raw_safetensors(path,
                          "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                          "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
                          8);
    check_read_rejects(path, "appears twice");
}

/* A header from another writer: unpadded, keys in another order, an unknown
 * per-tensor key, and tensors stored in a different order than listed. */
static void st_reads_foreign_header(void) {
    char path[512], err[512] = "";
    tmp_path(path, sizeof path, "foreign.safetensors");
    write_raw_safetensors(path,
                          "{\"b\": {\"data_offsets\": [8, 12], \"shape\": [], \"dtype\": \"F32\"}, "
                          "\"a\": {\"dtype\": \"I64\", \"shape\": [1], \"data_offsets\": [0, 8], \"x\": 1}, "
                          "\"__metadata__\": {}}",
                          12);
    StFile *f = st_read(path, err, sizeof err);
    EXPECT(f != NULL, "st_read: %s", err);
    if (!f) return;
    EXPECT(st_count(f) == 2, "st_count is %d", st_count(f));
    EXPECT(strcmp(st_get(f, 0)->name, "b") == 0, "first tensor is '%s'", st_get(f, 0)->name);
    const StTensorRef *a = st_find(f, "a");
    const StTensorRef *b = st_find(f, "b");
    EXPECT(a != NULL && b != NULL, "a or b not found");
    if (a && b) {
        /* Data byte i is i % 251, so a contains bytes 0..7 and b bytes 8..11. */
        const unsigned char expected_a[8] = {0, 1, 2, 3, 4, 5, 6, 7};
        const unsigned char expected_b[4] = {8, 9, 10, 11};
        EXPECT(memcmp(a->data, expected_a, 8) == 0, "a data differs");
        EXPECT(memcmp(b->data, expected_b, 4) == 0, "b data differs");
        EXPECT(b->ndim == 0, "b has ndim %d", b->ndim);
    }
    st_free(f);
}

const TestCase safetensors_tests[] = {
    {"st roundtrip with metadata", st_roundtrip_with_metadata},
    {"st find missing name", st_find_missing_name},
    {"st layout on disk", st_layout_on_disk},
    {"st atomic write leaves no temp", st_atomic_write_no_temp},
    {"st failed write cleans up", st_failed_write_cleans_up},
    {"st write rejects bad input", st_write_rejects_bad_input},
    {"st rejects corrupt header length", st_rejects_header_length},
    {"st rejects bad offsets", st_rejects_bad_offsets},
    {"st rejects bad entries", st_rejects_bad_entries},
    {"st reads foreign header", st_reads_foreign_header},
    {NULL, NULL},
};
