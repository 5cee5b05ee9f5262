/* Optimisers, schedules and clipping; see optim.h. The float32 arithmetic
 * below follows the order of PyTorch 1.13's single-tensor implementations
 * (torch/optim/sgd.py, adam.py, adamw.py), scalars rounded to float first. */
#include "optim.h"

#include <math.h>
#include <string.h>

#include "error.h"

int optim_state_count(const Optimizer *o) {
    switch (o->kind) {
    case OPTIM_SGD: return o->momentum != 0.0 ? 1 : 0;
    case OPTIM_ADAM:
    case OPTIM_ADAMW: return 2;
    }
    return 0;
}

const char *optim_state_name(const Optimizer *o, int i) {
    if (o->kind == OPTIM_SGD) return "momentum_buffer";
    return i == 0 ? "exp_avg" : "exp_avg_sq";
}

static void ensure_state(Param *p, int count) {
    for (int i = 0; i < count; i++)
        if (!p->state[i]) p->state[i] = sd_calloc((size_t)p->t.size, sizeof(float));
}

static void sgd_update(const Optimizer *o, Param *p, float lr, float wd) {
    float *w = p->t.data, *grad = p->t.grad, *buf = p->state[0];
    float mom = (float)o->momentum;
    int first = o->step == 0;
    long n = p->t.size;
#pragma omp parallel for schedule(static) if (n > 32768)
    for (long i = 0; i < n; i++) {
        float d = grad[i];
        if (wd != 0.0f) d = d + wd * w[i];
        if (mom != 0.0f) {
            /* PyTorch starts the buffer as a copy of the first gradient (dampening 0). */
            buf[i] = first ? d : buf[i] * mom + d;
            d = o->nesterov ? d + mom * buf[i] : buf[i];
        }
        w[i] = w[i] + (-lr) * d;
    }
}

static void adam_update(const Optimizer *o, Param *p, double lr, float wd, int decoupled) {
    float *w = p->t.data, *grad = p->t.grad, *m = p->state[0], *v = p->state[1];
    double t = (double)(o->step + 1);
    double bc1 = 1.0 - pow(o->beta1, t);
    double bc2 = 1.0 - pow(o->beta2, t);
    float step_size = (float)(lr / bc1);
    float bc2_sqrt = (float)sqrt(bc2);
    float b1 = (float)o->beta1, b2 = (float)o->beta2, eps = (float)o->eps;
    float one_minus_b1 = (float)(1.0 - o->beta1), one_minus_b2 = (float)(1.0 - o->beta2);
    float shrink = (float)(1.0 - lr * (double)wd);
    long n = p->t.size;
#pragma omp parallel for schedule(static) if (n > 32768)
    for (long i = 0; i < n; i++) {
        float gi = grad[i];
        if (decoupled)
            w[i] = w[i] * shrink;
        else if (wd != 0.0f)
            gi = gi + wd * w[i];
        m[i] = m[i] * b1 + one_minus_b1 * gi;
        v[i] = v[i] * b2 + one_minus_b2 * (gi * gi);
        float denom = sqrtf(v[i]) / bc2_sqrt + eps;
        w[i] = w[i] + (-step_size) * (m[i] / denom);
    }
}

void optim_step(Optimizer *o, ParamStore *ps, double lr) {
    int states = optim_state_count(o);
    for (int k = 0; k < ps->count; k++) {
        Param *p = &ps->params[k];
        /* Buffers get (zero) state too, because checkpoint loading expects
         * every entry's optimiser state once a step has been taken. */
        ensure_state(p, states);
        if (!p->trainable) continue;
        int decays = !o->decay_matrices_only || p->t.ndim >= 2;
        float wd = decays ? (float)o->weight_decay : 0.0f;
        switch (o->kind) {
        case OPTIM_SGD: sgd_update(o, p, (float)lr, wd); break;
        case OPTIM_ADAM: adam_update(o, p, lr, wd, 0); break;
        case OPTIM_ADAMW: adam_update(o, p, lr, decays ? o->weight_decay : 0.0, 1); break;
        }
    }
    o->step++;
}

static double cosine(double progress, double floor) {
    if (progress > 1.0) progress = 1.0;
    return floor + (1.0 - floor) * 0.5 * (1.0 + cos(M_PI * progress));
}

double schedule_factor(const Schedule *s, long step) {
    switch (s->kind) {
    case SCHED_CONSTANT: return 1.0;
    case SCHED_WARMUP: return step >= s->warmup ? 1.0 : (double)step / (double)s->warmup;
    case SCHED_MULTISTEP: {
        double f = 1.0;
        for (int i = 0; i < s->n_milestones; i++)
            if (step >= s->milestones[i]) f *= s->gamma;
        return f;
    }
    case SCHED_COSINE: return cosine((double)step / (double)s->total_steps, s->min_factor);
    case SCHED_WARMUP_COSINE:
        if (step < s->warmup) return (double)step / (double)s->warmup;
        return cosine((double)(step - s->warmup) / (double)(s->total_steps - s->warmup), s->min_factor);
    }
    return 1.0;
}

double grad_norm(const ParamStore *ps) {
    double total = 0.0;
    for (int k = 0; k < ps->count; k++) {
        const Tensor *t = &ps->params[k].t;
        double s = 0.0;
        for (long i = 0; i < t->size; i++) s += (double)t->grad[i] * (double)t->grad[i];
        total += s;
    }
    return sqrt(total);
}

double clip_grad_norm(ParamStore *ps, double max_norm) {
    double norm = grad_norm(ps);
    double coef = max_norm / (norm + 1e-6);
    if (coef < 1.0) {
        float c = (float)coef;
        for (int k = 0; k < ps->count; k++) {
            Tensor *t = &ps->params[k].t;
            for (long i = 0; i < t->size; i++) t->grad[i] *= c;
        }
    }
    return norm;
}
