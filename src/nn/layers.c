/* The layers of Gluon's nn, as blocks whose forward functions call the
 * registry's ops. Each layer's settings live in its user data. */
#include <string.h>

#include "nn/nn.h"
#include "base/base.h"
#include "imperative/dispatch.h"
#include "tensor/tensor.h"

kiln_tensor *nn_pass(kiln_tensor *x) { return tensor_autorelease(kiln_tensor_retain(x)); }

kiln_tensor *kiln_activate(kiln_tensor *x, kiln_activation activation) {
  switch (activation) {
  case KILN_ACT_NONE: return nn_pass(x);
  case KILN_ACT_RELU: return kiln_relu(x);
  case KILN_ACT_SIGMOID: return kiln_sigmoid(x);
  case KILN_ACT_TANH: return kiln_tanh(x);
  case KILN_ACT_SOFTPLUS: return kiln_softplus(x);
  case KILN_ACT_GELU: return kiln_gelu(x);
  }
  return kiln_failed(KILN_ERR_INVALID_ARGUMENT, "kiln_activate: %d is not a kiln_activation", (int)activation);
}

static bool valid_activation(kiln_activation a) { return (unsigned)a <= KILN_ACT_GELU; }

/* A block whose user data is a copy of settings. */
static kiln_block *layer(const char *type, kiln_forward_fn forward, const void *settings, size_t size) {
  void *copy = NULL;
  if (size) {
    copy = kiln_alloc(size);
    if (!copy) {
      kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "%s: out of memory", type);
      return NULL;
    }
    memcpy(copy, settings, size);
  }
  kiln_block *b = kiln_block_new(type, forward, copy, kiln_free);
  if (!b) kiln_free(copy);
  return b;
}

static kiln_tensor *one_input(const kiln_block *self, int n, kiln_tensor *const *in) {
  if (n != 1) return kiln_failed(KILN_ERR_INVALID_ARGUMENT, "%s: takes 1 input, got %d", kiln_block_type(self), n);
  return NULL;
}

/* ------------------------------------------------------------ Sequential */

/* A failure that starts in child i is prefixed with the child's name and
 * type, so a message from deep in a model says where it arose. */
static kiln_tensor *sequential_forward(kiln_block *self, int n, kiln_tensor *const *in) {
  int children = kiln_block_num_children(self);
  if (children == 0) return n == 1 ? nn_pass(in[0]) : one_input(self, n, in);
  kiln_tensor *x = NULL;
  for (int i = 0; i < children; i++) {
    kiln_block *c = kiln_block_child(self, i);
    kiln_tensor *y = i == 0 ? kiln_block_call_n(c, n, in) : kiln_block_call(c, x);
    bool input_ok = true;
    for (int k = 0; i == 0 && k < n; k++) input_ok = input_ok && !kiln_tensor_failed(in[k]);
    if (i > 0) input_ok = !kiln_tensor_failed(x);
    if (input_ok && kiln_tensor_failed(y))
      return kiln_failed(kiln_tensor_status(y), "%d (%s): %s", i, kiln_block_type(c), kiln_tensor_error(y));
    x = y;
  }
  return x;
}

kiln_block *kiln_nn_sequential(void) { return kiln_block_new("Sequential", sequential_forward, NULL, NULL); }

/* ------------------------------------------------------------ Dense */

kiln_dense_params kiln_dense_params_default(int64_t units) {
  return (kiln_dense_params){units, 0, KILN_ACT_NONE, true, true};
}

static kiln_tensor *dense_forward(kiln_block *self, int n, kiln_tensor *const *in) {
  const kiln_dense_params *p = kiln_block_user(self);
  kiln_tensor *x = in[0], *bad = one_input(self, n, in);
  if (bad) return bad;
  if (kiln_tensor_failed(x)) return nn_pass(x);
  int ndim = kiln_tensor_ndim(x);
  if (ndim < (p->flatten ? 2 : 1))
    return kiln_failed(KILN_ERR_SHAPE, "Dense: input has %d dims, needs %s", ndim, p->flatten ? "[N, ...]" : "[..., in]");
  int64_t in_units = kiln_tensor_dim(x, -1);
  if (p->flatten) {
    int64_t batch = kiln_tensor_dim(x, 0);
    in_units = 1;
    for (int d = 1; d < ndim; d++) in_units *= kiln_tensor_dim(x, d);
    /* -1, not the batch: a traced graph then holds for any batch size. */
    if (ndim != 2) x = kiln_reshape(x, 2, (int64_t[]){in_units ? -1 : batch, in_units});
  }
  kiln_tensor *w = kiln_block_param_for(self, "weight", 2, (int64_t[]){p->units, in_units});
  kiln_tensor *b = p->use_bias ? kiln_block_param_for(self, "bias", 1, &p->units) : NULL;
  if (p->activation == KILN_ACT_SOFTPLUS || p->activation == KILN_ACT_GELU)
    return kiln_activate(kiln_linear(x, w, b), p->activation);
  return kiln_linear_act(x, w, b, p->activation);
}

kiln_block *kiln_nn_dense_ex(const kiln_dense_params *p) {
  if (!p || p->units <= 0 || p->in_units < 0 || !valid_activation(p->activation)) {
    kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_nn_dense: units %lld must be > 0, in_units >= 0, a kiln_activation",
                p ? (long long)p->units : 0LL);
    return NULL;
  }
  kiln_block *b = layer("Dense", dense_forward, p, sizeof *p);
  kiln_init zeros = kiln_init_constant(0);
  if (b && (kiln_block_add_param(b, "weight", KILN_F32, 2, (int64_t[]){p->units, p->in_units}, NULL, KILN_GRAD_WRITE) ||
            (p->use_bias && kiln_block_add_param(b, "bias", KILN_F32, 1, &p->units, &zeros, KILN_GRAD_WRITE)))) {
    kiln_block_release(b);
    return NULL;
  }
  return b;
}

kiln_block *kiln_nn_dense(int64_t units, kiln_activation activation) {
  kiln_dense_params p = kiln_dense_params_default(units);
  p.activation = activation;
  return kiln_nn_dense_ex(&p);
}

/* ------------------------------------------------------------ Conv2D */

kiln_conv2d_layer_params kiln_conv2d_layer_params_default(int64_t channels, int64_t kh, int64_t kw) {
  return (kiln_conv2d_layer_params){channels, 0, {kh, kw}, kiln_conv2d_params_default(), KILN_ACT_NONE, true};
}

static kiln_tensor *conv2d_forward(kiln_block *self, int n, kiln_tensor *const *in) {
  const kiln_conv2d_layer_params *p = kiln_block_user(self);
  kiln_tensor *x = in[0], *bad = one_input(self, n, in);
  if (bad) return bad;
  if (kiln_tensor_failed(x)) return nn_pass(x);
  if (kiln_tensor_ndim(x) != 4)
    return kiln_failed(KILN_ERR_SHAPE, "Conv2D: input has %d dims, needs [N, C, H, W]", kiln_tensor_ndim(x));
  int64_t c = kiln_tensor_dim(x, 1), groups = p->conv.groups;
  if (c % groups)
    return kiln_failed(KILN_ERR_SHAPE, "Conv2D: %lld input channels do not split into %lld groups", (long long)c,
                       (long long)groups);
  kiln_tensor *w = kiln_block_param_for(self, "weight", 4, (int64_t[]){p->channels, c / groups, p->kernel[0], p->kernel[1]});
  kiln_tensor *b = p->use_bias ? kiln_block_param_for(self, "bias", 1, &p->channels) : NULL;
  return kiln_activate(kiln_conv2d(x, w, b, &p->conv), p->activation);
}

kiln_block *kiln_nn_conv2d(const kiln_conv2d_layer_params *p) {
  if (!p || p->channels <= 0 || p->in_channels < 0 || p->kernel[0] <= 0 || p->kernel[1] <= 0 || p->conv.groups <= 0 ||
      p->channels % p->conv.groups || p->in_channels % p->conv.groups || !valid_activation(p->activation)) {
    kiln_errorf(KILN_ERR_INVALID_ARGUMENT,
                "kiln_nn_conv2d: channels and kernel must be > 0, groups > 0 dividing channels and in_channels, "
                "activation a kiln_activation");
    return NULL;
  }
  kiln_block *b = layer("Conv2D", conv2d_forward, p, sizeof *p);
  kiln_init zeros = kiln_init_constant(0);
  int64_t wshape[4] = {p->channels, p->in_channels / p->conv.groups, p->kernel[0], p->kernel[1]};
  if (b && (kiln_block_add_param(b, "weight", KILN_F32, 4, wshape, NULL, KILN_GRAD_WRITE) ||
            (p->use_bias && kiln_block_add_param(b, "bias", KILN_F32, 1, &p->channels, &zeros, KILN_GRAD_WRITE)))) {
    kiln_block_release(b);
    return NULL;
  }
  return b;
}

/* ------------------------------------------------------------ pooling, flatten, dropout, activation */

static kiln_tensor *max_pool_forward(kiln_block *self, int n, kiln_tensor *const *in) {
  kiln_tensor *bad = one_input(self, n, in);
  return bad ? bad : kiln_max_pool2d(in[0], kiln_block_user(self));
}

static kiln_tensor *avg_pool_forward(kiln_block *self, int n, kiln_tensor *const *in) {
  kiln_tensor *bad = one_input(self, n, in);
  return bad ? bad : kiln_avg_pool2d(in[0], kiln_block_user(self));
}

static kiln_block *pool_layer(const char *type, kiln_forward_fn forward, const kiln_pool2d_params *p) {
  if (!p) {
    kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "%s: params is NULL", type);
    return NULL;
  }
  return layer(type, forward, p, sizeof *p);
}

kiln_block *kiln_nn_max_pool2d(const kiln_pool2d_params *p) { return pool_layer("MaxPool2D", max_pool_forward, p); }
kiln_block *kiln_nn_avg_pool2d(const kiln_pool2d_params *p) { return pool_layer("AvgPool2D", avg_pool_forward, p); }

static kiln_tensor *global_avg_pool_forward(kiln_block *self, int n, kiln_tensor *const *in) {
  kiln_tensor *x = in[0], *bad = one_input(self, n, in);
  if (bad) return bad;
  if (!kiln_tensor_failed(x) && kiln_tensor_ndim(x) != 4)
    return kiln_failed(KILN_ERR_SHAPE, "GlobalAvgPool2D: input has %d dims, needs [N, C, H, W]", kiln_tensor_ndim(x));
  return kiln_mean(x, 2, (int[]){2, 3}, true);
}

kiln_block *kiln_nn_global_avg_pool2d(void) { return layer("GlobalAvgPool2D", global_avg_pool_forward, NULL, 0); }

static kiln_tensor *flatten_forward(kiln_block *self, int n, kiln_tensor *const *in) {
  kiln_tensor *x = in[0], *bad = one_input(self, n, in);
  if (bad) return bad;
  if (kiln_tensor_failed(x)) return nn_pass(x);
  int ndim = kiln_tensor_ndim(x);
  if (ndim < 1) return kiln_failed(KILN_ERR_SHAPE, "Flatten: a 0-d input has no batch dim");
  int64_t rest = 1;
  for (int d = 1; d < ndim; d++) rest *= kiln_tensor_dim(x, d);
  return kiln_reshape(x, 2, (int64_t[]){rest ? -1 : kiln_tensor_dim(x, 0), rest}); /* any batch, as in Dense */
}

kiln_block *kiln_nn_flatten(void) { return layer("Flatten", flatten_forward, NULL, 0); }

static kiln_tensor *dropout_forward(kiln_block *self, int n, kiln_tensor *const *in) {
  kiln_tensor *bad = one_input(self, n, in);
  if (bad) return bad;
  double p = *(const double *)kiln_block_user(self);
  return kiln_is_training() && p > 0 ? kiln_dropout(NULL, in[0], p) : nn_pass(in[0]);
}

kiln_block *kiln_nn_dropout(double p) {
  if (!(p >= 0 && p < 1)) {
    kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_nn_dropout: p %g must be in [0, 1)", p);
    return NULL;
  }
  return layer("Dropout", dropout_forward, &p, sizeof p);
}

static kiln_tensor *activation_forward(kiln_block *self, int n, kiln_tensor *const *in) {
  kiln_tensor *bad = one_input(self, n, in);
  return bad ? bad : kiln_activate(in[0], *(const kiln_activation *)kiln_block_user(self));
}

kiln_block *kiln_nn_activation(kiln_activation activation) {
  if (!valid_activation(activation)) {
    kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_nn_activation: %d is not a kiln_activation", (int)activation);
    return NULL;
  }
  return layer("Activation", activation_forward, &activation, sizeof activation);
}

/* ------------------------------------------------------------ BatchNorm */

typedef struct {
  double momentum, eps;
} batch_norm_settings;

static kiln_tensor *batch_norm_forward(kiln_block *self, int n, kiln_tensor *const *in) {
  const batch_norm_settings *s = kiln_block_user(self);
  kiln_tensor *x = in[0], *bad = one_input(self, n, in);
  if (bad) return bad;
  if (kiln_tensor_failed(x)) return nn_pass(x);
  if (kiln_tensor_ndim(x) < 2)
    return kiln_failed(KILN_ERR_SHAPE, "BatchNorm: input has %d dims, needs [N, C, ...]", kiln_tensor_ndim(x));
  int64_t c = kiln_tensor_dim(x, 1);
  kiln_tensor *gamma = kiln_block_param_for(self, "gamma", 1, &c), *beta = kiln_block_param_for(self, "beta", 1, &c);
  kiln_tensor *mean = kiln_block_param_for(self, "running_mean", 1, &c);
  kiln_tensor *var = kiln_block_param_for(self, "running_var", 1, &c);
  if (!kiln_is_training()) return kiln_batch_norm(x, gamma, beta, mean, var, s->eps);
  kiln_tensor *batch_mean, *batch_var;
  kiln_tensor *y = kiln_batch_norm_train(x, gamma, beta, s->eps, &batch_mean, &batch_var);
  if (kiln_tensor_failed(y)) return y;
  /* The running statistics are state, not part of what is differentiated. */
  kiln_pause_begin();
  kiln_status st = kiln_assign(mean, kiln_add(kiln_mul_scalar(mean, s->momentum), kiln_mul_scalar(batch_mean, 1 - s->momentum)));
  if (st == KILN_OK)
    st = kiln_assign(var, kiln_add(kiln_mul_scalar(var, s->momentum), kiln_mul_scalar(batch_var, 1 - s->momentum)));
  kiln_pause_end();
  return st == KILN_OK ? y : kiln_failed(st, "BatchNorm: updating the running statistics: %s", kiln_last_error());
}

kiln_block *kiln_nn_batch_norm(int64_t in_channels, double momentum, double eps) {
  if (in_channels < 0 || !(momentum >= 0 && momentum <= 1) || !(eps > 0)) {
    kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_nn_batch_norm: in_channels %lld >= 0, momentum %g in [0, 1], eps %g > 0",
                (long long)in_channels, momentum, eps);
    return NULL;
  }
  batch_norm_settings s = {momentum, eps};
  kiln_block *b = layer("BatchNorm", batch_norm_forward, &s, sizeof s);
  kiln_init zeros = kiln_init_constant(0), ones = kiln_init_constant(1);
  if (b && (kiln_block_add_param(b, "gamma", KILN_F32, 1, &in_channels, &ones, KILN_GRAD_WRITE) ||
            kiln_block_add_param(b, "beta", KILN_F32, 1, &in_channels, &zeros, KILN_GRAD_WRITE) ||
            kiln_block_add_param(b, "running_mean", KILN_F32, 1, &in_channels, &zeros, KILN_GRAD_NULL) ||
            kiln_block_add_param(b, "running_var", KILN_F32, 1, &in_channels, &ones, KILN_GRAD_NULL))) {
    kiln_block_release(b);
    return NULL;
  }
  return b;
}
