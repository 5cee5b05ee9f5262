/* Seeded pseudo-random numbers: xoshiro256** seeded through splitmix64.
 * A (seed, stream) pair names an independent sequence, so a component can
 * derive its own generator (initialisation, data order of epoch e, ...)
 * without sharing state; that is what makes a resumed run replay exactly. */
#ifndef SD_RNG_H
#define SD_RNG_H

#include <stdint.h>

typedef struct {
    uint64_t s[4];
} Rng;

/* Seed g from a seed and a stream number. */
void rng_seed(Rng *g, uint64_t seed, uint64_t stream);
uint64_t rng_next(Rng *g);
/* Uniform in [0, 1) with 24 random bits (every float32 step in the interval). */
float rng_uniform(Rng *g);
/* Uniform integer in [0, n), without modulo bias. n >= 1. */
uint64_t rng_below(Rng *g, uint64_t n);
/* Standard normal (Box–Muller in double precision). */
double rng_normal(Rng *g);
/* Fisher–Yates shuffle of n ints. */
void rng_shuffle(Rng *g, int *v, long n);

/* Stream numbers used by the trainer, listed once so no two components share one. */
enum { RNG_STREAM_INIT = 1, RNG_STREAM_SPLIT = 2, RNG_STREAM_LABELS = 3, RNG_STREAM_EPOCH = 1000 };
/* Base of the per-micro-batch streams (dropout, augmentation): micro-batch m
 * uses RNG_STREAM_STEP + m, far above any epoch stream. */
#define RNG_STREAM_STEP ((uint64_t)1 << 40)
/* The low-rank evaluation's batch-norm sample (this stream) and its
 * augmentation (one stream per batch after it), below the step streams. */
#define RNG_STREAM_BN_SAMPLE ((uint64_t)1 << 39)

#endif
