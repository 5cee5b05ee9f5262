/* Multilayer perceptron: depth hidden layers of width hidden with ReLU, then
 * a linear output layer; nn.Linear default initialisation.
 * Parameter names: layers.i.weight [out, in], layers.i.bias [out], i = 0..depth. */
#ifndef SD_MLP_H
#define SD_MLP_H

#include "graph.h"
#include "rng.h"

typedef struct {
    int in, hidden, depth, out;
    Tensor **w, **b;   /* [depth + 1] each, owned array of store pointers */
} Mlp;

/* Register and initialise the parameters in ps. */
void mlp_init(Mlp *m, int in, int hidden, int depth, int out, ParamStore *ps, Rng *g);
void mlp_free(Mlp *m);
/* Outputs [B, out] for inputs x [B, in]. */
Tensor *mlp_forward(Mlp *m, Graph *g, Tensor *x);
/* The same for a multi-hot input [B, in] given as the column index of each
 * one, ids [B, fields] (see op_linear_onehot). */
Tensor *mlp_forward_onehot(Mlp *m, Graph *g, const int *ids, int rows, int fields);

/* Consecutive layer pairs layers.i → layers.i+1; returns the count (at most max). */
int mlp_pairs(const Mlp *m, LayerPair *out, int max);

#endif
