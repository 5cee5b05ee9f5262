/* Large-sgemm throughput of this machine's OpenBLAS: the best of 5 runs of
 * C = A · B with 2048 × 2048 matrices on the given number of threads. make
 * bench uses it as the reference for model FLOPs utilisation. Prints one
 * JSON line. Usage: build/sgemm_peak [threads] */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

void openblas_set_num_threads(int num_threads);

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 2, n = 2048;
    if (threads < 1) {
        fprintf(stderr, "usage: sgemm_peak [threads >= 1]\n");
        return 2;
    }
    openblas_set_num_threads(threads);
    float *a = malloc(sizeof(float) * n * n), *b = malloc(sizeof(float) * n * n), *c = malloc(sizeof(float) * n * n);
    if (!a || !b || !c) return 1;
    for (long i = 0; i < (long)n * n; i++) {
        a[i] = (float)(i % 7) * 0.25f;
        b[i] = (float)(i % 5) * 0.5f;
    }
    double best = 1e30;
    for (int rep = 0; rep < 6; rep++) {
        double t = now_seconds();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
        t = now_seconds() - t;
        if (rep > 0 && t < best) best = t; /* the first call warms up */
    }
    printf("{\"n\": %d, \"threads\": %d, \"seconds\": %.6f, \"gflops\": %.1f}\n", n, threads, best,
           2.0 * n * n * (double)n / best / 1e9);
    free(a);
    free(b);
    free(c);
    return 0;
}
