/* Image data sets in memory and their loaders: IDX (MNIST, Fashion-MNIST;
 * gzip or raw), CIFAR-10/100 binary batches and folders of PNG/JPEG files
 * per class (stb_image).
 *
 * Pixels are stored as uint8 [N, C, H, W]. Every loader returns 0, or -1 with
 * one line in err naming the file and the problem. On failure *out owns
 * nothing that needs freeing. */
#ifndef SD_IMAGE_DATA_H
#define SD_IMAGE_DATA_H

#include <stddef.h>

typedef struct {
    long n;                  /* images */
    int channels, height, width;
    unsigned char *pixels;   /* [n, channels, height, width], owned */
    int *labels;             /* [n], owned; each in [0, classes) */
    int classes;             /* number of classes (the largest label + 1 for IDX and CIFAR) */
} ImageSet;

/* Read an IDX image file (magic 0x00000803, [n, rows, cols] uint8) and its
 * IDX label file (magic 0x00000801, [n] uint8). Either may be gzip
 * compressed or raw; the counts must match and the files must hold exactly
 * the data their headers announce. */
int idx_load(const char *images_path, const char *labels_path, ImageSet *out, char *err, size_t errlen);

/* Read CIFAR binary batches: records of 1 label byte (CIFAR-10) or a coarse
 * and a fine label byte (CIFAR-100, fine_label set; the fine label is used)
 * followed by 3 × 32 × 32 pixels. Every file's size must be a multiple of
 * the record size. */
int cifar_load(const char *const *paths, int n_paths, int fine_label, ImageSet *out, char *err, size_t errlen);

/* Read dir/<class>/<image> for every subdirectory of dir (classes in
 * alphabetical order, or in the order of class_names when not NULL), each
 * image decoded as RGB and resized to size × size. An empty class folder or
 * a file stb_image cannot decode is an error naming it. On success with
 * class_names NULL, *names_out (when not NULL) receives the class names
 * [classes], each owned, freed with image_class_names_free. */
int folder_load(const char *dir, int size, char **class_names, int n_class_names, ImageSet *out,
                char ***names_out, char *err, size_t errlen);
void image_class_names_free(char **names, int n);

/* Resize every image of s to size × size (bilinear-like filtering of
 * stb_image_resize); a no-op when s already has that size. */
void imageset_resize(ImageSet *s, int size);
void imageset_free(ImageSet *s);

/* Keep a sample of keep (<= s->n) images drawn without replacement from
 * (seed, RNG_STREAM_SPLIT), in the sampled order. */
void imageset_keep_subset(ImageSet *s, long keep, long seed);
/* With random_labels, give every image a label drawn uniformly from
 * [0, classes); otherwise redraw each label uniformly with probability noise
 * (it may come out unchanged). Draws come from (seed, RNG_STREAM_LABELS). */
void imageset_corrupt_labels(ImageSet *s, int random_labels, double noise, long seed);

#endif
