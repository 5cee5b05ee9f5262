/* safetensors files: an 8-byte little-endian header length, a JSON header
 * ({"name": {"dtype", "shape", "data_offsets"}, "__metadata__": {string: string}})
 * and the raw tensor bytes. Readable by the safetensors Python package and
 * PyTorch. Writes are atomic: a temporary file in the same directory is
 * written, flushed with fsync and renamed over the target. */
#ifndef SD_SAFETENSORS_H
#define SD_SAFETENSORS_H

#include <stddef.h>

typedef enum { ST_F32, ST_I64 } StDtype;

#define ST_MAX_DIMS 4

typedef struct {
    const char *name;
    StDtype dtype;
    int ndim;                 /* 0..4; 0 is a scalar */
    long shape[ST_MAX_DIMS];
    const void *data;         /* product(shape) elements, little-endian */
} StTensorRef;

/* Write tensors and string metadata to path atomically. Names must be unique.
 * Return 0, or -1 with a message in err. */
int st_write(const char *path, const StTensorRef *tensors, int n_tensors,
             const char *const *meta_keys, const char *const *meta_values, int n_meta,
             char *err, size_t errlen);

typedef struct StFile StFile;

/* Read a whole file, validating the header length, the JSON, each dtype,
 * shape and offset range against the file size. Return NULL with a message
 * naming the path and the problem. Only F32 and I64 tensors are accepted. */
StFile *st_read(const char *path, char *err, size_t errlen);

/* Find a tensor by name; NULL when absent. The returned view (including its
 * data pointer) lives as long as the StFile. */
const StTensorRef *st_find(const StFile *f, const char *name);

/* Number of tensors and the i-th one, in file order. */
int st_count(const StFile *f);
const StTensorRef *st_get(const StFile *f, int i);

/* Metadata value for key, or NULL. Owned by the StFile. */
const char *st_meta(const StFile *f, const char *key);

void st_free(StFile *f);

#endif
