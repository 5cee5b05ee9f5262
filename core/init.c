/* PyTorch default initialisations; see init.h. */
#include "init.h"

#include <math.h>

#include "error.h"

void init_uniform(Tensor *t, Rng *g, float lo, float hi) {
    for (long i = 0; i < t->size; i++) t->data[i] = lo + (hi - lo) * rng_uniform(g);
}

void init_normal(Tensor *t, Rng *g, float mean, float std) {
    for (long i = 0; i < t->size; i++) t->data[i] = mean + std * (float)rng_normal(g);
}

void init_constant(Tensor *t, float value) {
    for (long i = 0; i < t->size; i++) t->data[i] = value;
}

void init_linear_default(Tensor *w, Tensor *b, Rng *g) {
    long fan_in = w->size / w->shape[0];
    float bound = 1.0f / sqrtf((float)fan_in);
    init_uniform(w, g, -bound, bound);
    if (b) init_uniform(b, g, -bound, bound);
}

void init_xavier_uniform_stacked(Tensor *const *parts, int n_parts, Rng *g) {
    long rows = 0, cols = parts[0]->size / parts[0]->shape[0];
    for (int i = 0; i < n_parts; i++) {
        CHECK(parts[i]->size / parts[i]->shape[0] == cols, "stacked parts need equal column counts");
        rows += parts[i]->shape[0];
    }
    float bound = sqrtf(6.0f / (float)(rows + cols));
    for (int i = 0; i < n_parts; i++) init_uniform(parts[i], g, -bound, bound);
}
