/* ONNX import (kiln_onnx_load, src/io/onnx.c).
 *
 * Models are built here with protobuf-c, the same generated code the
 * loader reads them with, and packed to bytes: a dense layer with a
 * dynamic batch (values against loops written here), a Reshape whose shape
 * is an initializer with Transpose and Softmax of opset 11's coerced axis
 * (against a softmax computed here), the shape of a dynamic batch through
 * Shape, Gather, Unsqueeze and Concat into a Reshape (PyTorch's
 * x.view(x.size(0), -1)) at two batches, with what must still be refused,
 * and one defect per malformed model,
 * each giving its status and a message naming the node, op or field, as
 * does each file of the malformed corpus tests/fixtures/bad_onnx/ (written
 * by its make.py from the wire format). */
#include <dirent.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "io/onnx.h"
#include "onnx.pb-c.h"
#include "testutil.h"

/* ------------------------------------------------------------ builders */

typedef struct {
  Onnx__ModelProto model;
  Onnx__OperatorSetIdProto opset, *opsets[1];
  Onnx__GraphProto graph;
  Onnx__NodeProto nodes[8], *node_ptrs[8];
  Onnx__AttributeProto attrs[8], *attr_ptrs[8][4];
  Onnx__TensorProto inits[4], *init_ptrs[4];
  Onnx__ValueInfoProto in, out, *in_ptrs[1], *out_ptrs[1];
  Onnx__TypeProto in_type;
  Onnx__TypeProto__Tensor in_tensor;
  Onnx__TensorShapeProto in_shape;
  Onnx__TensorShapeProto__Dimension dims[4], *dim_ptrs[4];
  char *node_in[8][3], *node_out[8][1];
  int n_attrs;
} builder;

static void b_init(builder *b, int64_t opset, const char *in_name, int ndim, const int64_t *shape,
                   const char *out_name) {
  memset(b, 0, sizeof *b);
  onnx__model_proto__init(&b->model);
  onnx__operator_set_id_proto__init(&b->opset);
  b->opset.has_version = 1, b->opset.version = opset;
  b->opsets[0] = &b->opset;
  b->model.n_opset_import = 1, b->model.opset_import = b->opsets;
  b->model.has_ir_version = 1, b->model.ir_version = 8;
  onnx__graph_proto__init(&b->graph);
  b->model.graph = &b->graph;
  onnx__value_info_proto__init(&b->in);
  onnx__type_proto__init(&b->in_type);
  onnx__type_proto__tensor__init(&b->in_tensor);
  onnx__tensor_shape_proto__init(&b->in_shape);
  for (int d = 0; d < ndim; d++) {
    onnx__tensor_shape_proto__dimension__init(&b->dims[d]);
    if (shape[d] < 0) {
      b->dims[d].value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
      b->dims[d].dim_param = "N";
    } else {
      b->dims[d].value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
      b->dims[d].dim_value = shape[d];
    }
    b->dim_ptrs[d] = &b->dims[d];
  }
  b->in_shape.n_dim = (size_t)ndim, b->in_shape.dim = b->dim_ptrs;
  b->in_tensor.has_elem_type = 1, b->in_tensor.elem_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
  b->in_tensor.shape = &b->in_shape;
  b->in_type.value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE, b->in_type.tensor_type = &b->in_tensor;
  b->in.name = (char *)in_name, b->in.type = &b->in_type;
  b->in_ptrs[0] = &b->in;
  b->graph.n_input = 1, b->graph.input = b->in_ptrs;
  onnx__value_info_proto__init(&b->out);
  b->out.name = (char *)out_name;
  b->out_ptrs[0] = &b->out;
  b->graph.n_output = 1, b->graph.output = b->out_ptrs;
  b->graph.node = b->node_ptrs;
  b->graph.initializer = b->init_ptrs;
}

static Onnx__NodeProto *b_node(builder *b, const char *op, const char *name, int n_in, const char *const *in,
                               const char *out) {
  size_t i = b->graph.n_node++;
  Onnx__NodeProto *n = &b->nodes[i];
  onnx__node_proto__init(n);
  n->op_type = (char *)op, n->name = (char *)name;
  for (int k = 0; k < n_in; k++) b->node_in[i][k] = (char *)in[k];
  n->n_input = (size_t)n_in, n->input = b->node_in[i];
  b->node_out[i][0] = (char *)out;
  n->n_output = 1, n->output = b->node_out[i];
  b->node_ptrs[i] = n;
  return n;
}

static Onnx__AttributeProto *b_attr(builder *b, Onnx__NodeProto *n, const char *name, int type) {
  Onnx__AttributeProto *a = &b->attrs[b->n_attrs];
  onnx__attribute_proto__init(a);
  a->name = (char *)name, a->has_type = 1, a->type = type;
  a->has_i = type == ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT; /* proto2: packed only when marked set */
  size_t k = n->n_attribute++;
  b->attr_ptrs[n - b->nodes][k] = a;
  n->attribute = b->attr_ptrs[n - b->nodes];
  b->n_attrs++;
  return a;
}

static Onnx__TensorProto *b_init_f32(builder *b, const char *name, int ndim, int64_t *dims, float *data, size_t n) {
  Onnx__TensorProto *t = &b->inits[b->graph.n_initializer];
  onnx__tensor_proto__init(t);
  t->name = (char *)name;
  t->has_data_type = 1, t->data_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
  t->n_dims = (size_t)ndim, t->dims = dims;
  t->n_float_data = n, t->float_data = data;
  b->init_ptrs[b->graph.n_initializer++] = t;
  return t;
}

/* Loads the built model; *bytes keeps the packed form for the caller. */
static kiln_status b_load(builder *b, kiln_model **m) {
  size_t len = onnx__model_proto__get_packed_size(&b->model);
  uint8_t *buf = malloc(len + 1);
  assert_non_null(buf);
  onnx__model_proto__pack(&b->model, buf);
  kiln_status st = onnx_load_memory(buf, len, "built.onnx", NULL, 0, m);
  free(buf);
  return st;
}

static void expect_failure(builder *b, kiln_status want, const char *text) {
  kiln_model *m = NULL;
  kiln_status st = b_load(b, &m);
  if (st != want || !strstr(kiln_last_error(), text))
    fail_msg("want %s with '%s', got %s: %s", kiln_status_name(want), text, kiln_status_name(st), kiln_last_error());
  assert_null(m);
}

/* ------------------------------------------------------------ tests */

/* Y = relu(X W^T + B), X [N, 3] with N unknown. */
static void dense_layer_at_any_batch(void **state) {
  (void)state;
  builder b;
  b_init(&b, 13, "X", 2, (int64_t[]){-1, 3}, "Y");
  static float w[6] = {0.5f, -1, 2, 1.5f, 0.25f, -0.75f}, bias[2] = {0.1f, -0.2f};
  int64_t wd[2] = {2, 3}, bd[1] = {2};
  b_init_f32(&b, "W", 2, wd, w, 6);
  b_init_f32(&b, "B", 1, bd, bias, 2);
  Onnx__NodeProto *g = b_node(&b, "Gemm", "fc", 3, (const char *[]){"X", "W", "B"}, "H");
  b_attr(&b, g, "transB", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT)->i = 1;
  b_node(&b, "Relu", "act", 1, (const char *[]){"H"}, "Y");
  kiln_model *m;
  if (b_load(&b, &m) != KILN_OK) fail_msg("%s", kiln_last_error());
  kiln_model_value v;
  assert_int_equal(kiln_model_input(m, 0, &v), KILN_OK);
  assert_string_equal(v.name, "X");
  assert_int_equal(v.ndim, 2);
  assert_int_equal(v.shape[0], -1);
  assert_int_equal(kiln_model_output(m, 0, &v), KILN_OK);
  assert_string_equal(v.name, "Y");
  assert_int_equal(v.shape[0], -1);
  assert_int_equal(v.shape[1], 2);
  kiln_model_stats s = kiln_model_get_stats(m);
  assert_int_equal(s.parameters, 2);
  assert_int_equal(s.parameter_elements, 8);
  for (int64_t batch = 1; batch <= 4; batch += 3) {
    kiln_scope_begin();
    float x[12];
    double want[8];
    for (int i = 0; i < batch * 3; i++) x[i] = (float)(i % 5) - 1.5f;
    for (int r = 0; r < batch; r++)
      for (int o = 0; o < 2; o++) {
        double acc = bias[o];
        for (int k = 0; k < 3; k++) acc += (double)x[r * 3 + k] * w[o * 3 + k];
        want[r * 2 + o] = acc > 0 ? acc : 0;
      }
    kiln_tensor *in = kiln_from_data(KILN_F32, 2, (int64_t[]){batch, 3}, x), *out;
    assert_int_equal(kiln_model_run(m, 1, &in, &out), KILN_OK);
    assert_true(tu_close_values("dense", out, want, batch * 2, 1e-6, 1e-6));
    kiln_scope_end();
  }
  kiln_model_free(m);
}

/* A strided convolution maps widths 1 and 2 to the same size, but not 3:
 * the output's width is still unknown (found by the fuzzer, when only 2
 * was probed), and a run at width 9 gives 5. */
static void unknown_dims_through_a_strided_conv(void **state) {
  (void)state;
  builder b;
  b_init(&b, 13, "X", 4, (int64_t[]){1, 1, 7, -1}, "Y");
  static float w[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
  static int64_t wd[4] = {1, 1, 3, 3}, two[2] = {2, 2}, ones[4] = {1, 1, 1, 1};
  b_init_f32(&b, "W", 4, wd, w, 9);
  Onnx__NodeProto *c = b_node(&b, "Conv", "conv", 2, (const char *[]){"X", "W"}, "Y");
  Onnx__AttributeProto *st = b_attr(&b, c, "strides", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS);
  st->n_ints = 2, st->ints = two;
  Onnx__AttributeProto *pads = b_attr(&b, c, "pads", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS);
  pads->n_ints = 4, pads->ints = ones;
  kiln_model *m;
  if (b_load(&b, &m) != KILN_OK) fail_msg("%s", kiln_last_error());
  kiln_model_value v;
  assert_int_equal(kiln_model_output(m, 0, &v), KILN_OK);
  assert_int_equal(v.shape[2], 4);
  assert_int_equal(v.shape[3], -1);
  kiln_scope_begin();
  kiln_tensor *in = kiln_ones(KILN_F32, 4, (int64_t[]){1, 1, 7, 9}), *out;
  assert_int_equal(kiln_model_run(m, 1, &in, &out), KILN_OK);
  assert_int_equal(kiln_tensor_dim(out, 3), 5);
  /* A corner window holds 4 ones, an edge one 6, the middle ones 9. */
  double want[20];
  for (int i = 0; i < 4; i++)
    for (int j = 0; j < 5; j++) want[i * 5 + j] = (i == 0 || i == 3 ? 2 : 3) * (j == 0 || j == 4 ? 2 : 3);
  assert_true(tu_close_values("conv", out, want, 20, 0, 0));
  kiln_scope_end();
  kiln_model_free(m);
}

/* Softmax before opset 13 flattens from its axis on: over [3, 4] at axis
 * 1 of a [2, 3, 4] input, which Reshape ([4, 6] -> [2, 3, 4]) and
 * Transpose make from X [6, 4]. */
static void reshape_transpose_softmax_opset11(void **state) {
  (void)state;
  builder b;
  b_init(&b, 11, "X", 2, (int64_t[]){4, 6}, "Y");
  static float shape_f[1]; /* unused: the shape is int64 */
  (void)shape_f;
  static int64_t shape_v[3] = {2, 3, 4}, shape_d[1] = {3};
  Onnx__TensorProto *sh = &b.inits[b.graph.n_initializer];
  onnx__tensor_proto__init(sh);
  sh->name = "shape", sh->has_data_type = 1, sh->data_type = ONNX__TENSOR_PROTO__DATA_TYPE__INT64;
  sh->n_dims = 1, sh->dims = shape_d, sh->n_int64_data = 3, sh->int64_data = shape_v;
  b.init_ptrs[b.graph.n_initializer++] = sh;
  Onnx__NodeProto *t = b_node(&b, "Transpose", "t", 1, (const char *[]){"X"}, "XT");
  Onnx__AttributeProto *perm = b_attr(&b, t, "perm", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS);
  static int64_t perm_v[2] = {1, 0};
  perm->n_ints = 2, perm->ints = perm_v;
  b_node(&b, "Reshape", "r", 2, (const char *[]){"XT", "shape"}, "R");
  b_node(&b, "Softmax", "s", 1, (const char *[]){"R"}, "Y");
  kiln_model *m;
  assert_int_equal(b_load(&b, &m), KILN_OK);
  kiln_scope_begin();
  float x[24];
  for (int i = 0; i < 24; i++) x[i] = (float)sin(i * 0.7) * 3;
  /* XT[i][j] = X[j][i], XT is [6, 4]; R is XT's data as [2, 3, 4]; the
   * softmax runs over each batch's 12 values. */
  double xt[24], want[24];
  for (int i = 0; i < 6; i++)
    for (int j = 0; j < 4; j++) xt[i * 4 + j] = x[j * 6 + i];
  for (int bt = 0; bt < 2; bt++) {
    double mx = -INFINITY, sum = 0;
    for (int k = 0; k < 12; k++) mx = fmax(mx, xt[bt * 12 + k]);
    for (int k = 0; k < 12; k++) sum += exp(xt[bt * 12 + k] - mx);
    for (int k = 0; k < 12; k++) want[bt * 12 + k] = exp(xt[bt * 12 + k] - mx) / sum;
  }
  kiln_tensor *in = kiln_from_data(KILN_F32, 2, (int64_t[]){4, 6}, x), *out;
  assert_int_equal(kiln_model_run(m, 1, &in, &out), KILN_OK);
  assert_int_equal(kiln_tensor_ndim(out), 3);
  assert_true(tu_close_values("softmax", out, want, 24, 1e-5, 1e-7));
  kiln_scope_end();
  kiln_model_free(m);
}

/* A Reshape whose shape is a graph input: refused, naming the input, which
 * then given as a constant makes a model of one input. */
static void inputs_fixed_as_constants(void **state) {
  (void)state;
  builder b;
  b_init(&b, 13, "X", 2, (int64_t[]){2, 3}, "Y");
  static Onnx__ValueInfoProto shape_in;
  static Onnx__TypeProto shape_type;
  static Onnx__TypeProto__Tensor shape_tensor;
  static Onnx__TensorShapeProto shape_shape;
  static Onnx__TensorShapeProto__Dimension shape_dim, *shape_dims[1] = {&shape_dim};
  static Onnx__ValueInfoProto *ins[2];
  onnx__value_info_proto__init(&shape_in);
  onnx__type_proto__init(&shape_type);
  onnx__type_proto__tensor__init(&shape_tensor);
  onnx__tensor_shape_proto__init(&shape_shape);
  onnx__tensor_shape_proto__dimension__init(&shape_dim);
  shape_dim.value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE, shape_dim.dim_value = 2;
  shape_shape.n_dim = 1, shape_shape.dim = shape_dims;
  shape_tensor.has_elem_type = 1, shape_tensor.elem_type = ONNX__TENSOR_PROTO__DATA_TYPE__INT64;
  shape_tensor.shape = &shape_shape;
  shape_type.value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE, shape_type.tensor_type = &shape_tensor;
  shape_in.name = "S", shape_in.type = &shape_type;
  ins[0] = &b.in, ins[1] = &shape_in;
  b.graph.n_input = 2, b.graph.input = ins;
  b_node(&b, "Reshape", "r", 2, (const char *[]){"X", "S"}, "Y");
  size_t len = onnx__model_proto__get_packed_size(&b.model);
  uint8_t *buf = malloc(len);
  assert_non_null(buf);
  onnx__model_proto__pack(&b.model, buf);
  int needed = 7;
  kiln_onnx_options o = {.needed_input = &needed};
  kiln_model *m;
  assert_int_equal(onnx_load_memory(buf, len, "r.onnx", &o, 0, &m), KILN_ERR_UNSUPPORTED);
  assert_non_null(strstr(kiln_last_error(), "input 1 ('S') must be known when the model is loaded"));
  assert_int_equal(needed, 1);
  kiln_scope_begin();
  kiln_tensor *shape = kiln_from_data(KILN_I64, 1, (int64_t[]){2}, (int64_t[]){3, -1});
  o = (kiln_onnx_options){1, (int[]){1}, &shape, &needed};
  assert_int_equal(onnx_load_memory(buf, len, "r.onnx", &o, 0, &m), KILN_OK);
  assert_int_equal(needed, -1);
  assert_int_equal(kiln_model_num_inputs(m), 1);
  float x[6] = {1, 2, 3, 4, 5, 6};
  kiln_tensor *in = kiln_from_data(KILN_F32, 2, (int64_t[]){2, 3}, x), *out;
  assert_int_equal(kiln_model_run(m, 1, &in, &out), KILN_OK);
  assert_int_equal(kiln_tensor_dim(out, 0), 3);
  assert_int_equal(kiln_tensor_dim(out, 1), 2);
  assert_true(tu_close_values("reshape", out, (double[]){1, 2, 3, 4, 5, 6}, 6, 0, 0));
  kiln_scope_end();
  kiln_model_free(m);
  free(buf);
}

static void refuses_what_it_cannot_map(void **state) {
  (void)state;
  builder b;
  b_init(&b, 13, "X", 4, (int64_t[]){1, 1, 5, 5}, "Y");
  b_node(&b, "Foo", "mystery", 1, (const char *[]){"X"}, "Y");
  expect_failure(&b, KILN_ERR_UNSUPPORTED, "node 0 ('mystery', Foo): op Foo is not one kiln imports");

  b_init(&b, 13, "X", 4, (int64_t[]){1, 1, 5, 5}, "Y");
  Onnx__NodeProto *p = b_node(&b, "MaxPool", "pool", 1, (const char *[]){"X"}, "Y");
  static int64_t k2[2] = {2, 2};
  Onnx__AttributeProto *k = b_attr(&b, p, "kernel_shape", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS);
  k->n_ints = 2, k->ints = k2;
  Onnx__AttributeProto *st = b_attr(&b, p, "strides", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS);
  st->n_ints = 2, st->ints = k2;
  b_attr(&b, p, "ceil_mode", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT)->i = 1;
  expect_failure(&b, KILN_ERR_UNSUPPORTED, "node 0 ('pool', MaxPool): ceil_mode=1");

  b_init(&b, 13, "X", 2, (int64_t[]){2, 2}, "Y");
  Onnx__NodeProto *s = b_node(&b, "Softmax", "s", 1, (const char *[]){"X"}, "Y");
  b_attr(&b, s, "frobnicate", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT)->i = 1;
  expect_failure(&b, KILN_ERR_UNSUPPORTED, "attribute 'frobnicate' is not supported");

  /* A folded Shape would go stale at another batch: it may only reach a
   * Reshape (runtime_shape_into_reshape). */
  b_init(&b, 13, "X", 2, (int64_t[]){-1, 2}, "Y");
  b_node(&b, "Shape", "s", 1, (const char *[]){"X"}, "Y");
  expect_failure(&b, KILN_ERR_UNSUPPORTED, "graph output 0 ('Y') is a shape of a value with unknown dims");
  b_init(&b, 13, "X", 2, (int64_t[]){-1, 2}, "Y");
  b_node(&b, "Shape", "s", 1, (const char *[]){"X"}, "S");
  b_node(&b, "Expand", "e", 2, (const char *[]){"X", "S"}, "Y");
  expect_failure(&b, KILN_ERR_UNSUPPORTED, "node 1 ('e', Expand): input 1 ('S') is a shape of a value with unknown dims");

  b_init(&b, 18, "X", 2, (int64_t[]){2, 2}, "Y");
  b_node(&b, "Relu", "r", 1, (const char *[]){"X"}, "Y");
  expect_failure(&b, KILN_ERR_UNSUPPORTED, "opset 18");
}

static Onnx__NodeProto *b_const_ints(builder *b, const char *out, size_t n, int64_t *v) {
  Onnx__NodeProto *c = b_node(b, "Constant", out, 0, NULL, out);
  Onnx__AttributeProto *a = b_attr(b, c, "value_ints", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS);
  a->n_ints = n, a->ints = v;
  return c;
}

/* X [N, 2, 3] -> Reshape(X, Concat(Unsqueeze(Gather(Shape(X), g)), tail)), as
 * PyTorch writes x.view(x.size(0), -1): the shape is only known at run
 * time, and the target must follow N at every batch. */
static void build_view(builder *b, int64_t *g, int64_t *tail, size_t n_tail, bool scalar_index) {
  static int64_t axes0[1] = {0};
  b_init(b, 13, "X", 3, (int64_t[]){-1, 2, 3}, "Y");
  b_node(b, "Shape", "shape", 1, (const char *[]){"X"}, "S");
  if (scalar_index) {
    Onnx__NodeProto *c = b_node(b, "Constant", "i", 0, NULL, "I");
    Onnx__AttributeProto *a = b_attr(b, c, "value_int", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT);
    a->i = *g;
  } else {
    b_const_ints(b, "I", 1, g);
  }
  b_node(b, "Gather", "gather", 2, (const char *[]){"S", "I"}, "D");
  b_const_ints(b, "A", 1, axes0);
  b_node(b, "Unsqueeze", "unsqueeze", 2, (const char *[]){"D", "A"}, "U");
  b_const_ints(b, "T", n_tail, tail);
  Onnx__NodeProto *cat = b_node(b, "Concat", "concat", 2, (const char *[]){"U", "T"}, "C");
  b_attr(b, cat, "axis", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT)->i = 0;
  b_node(b, "Reshape", "view", 2, (const char *[]){"X", "C"}, "Y");
}

/* Runs m at batches 1 and 4 on X [N, 2, 3] and checks that Y holds X's
 * values in order, with the shape [N, want_tail...]. */
static void check_view(kiln_model *m, int n_tail, const int64_t *want_tail) {
  for (int64_t batch = 1; batch <= 4; batch += 3) {
    kiln_scope_begin();
    float x[24];
    double want[24];
    for (int i = 0; i < batch * 6; i++) x[i] = (float)i - 3, want[i] = (double)i - 3;
    kiln_tensor *in = kiln_from_data(KILN_F32, 3, (int64_t[]){batch, 2, 3}, x), *out;
    if (kiln_model_run(m, 1, &in, &out) != KILN_OK) fail_msg("batch %lld: %s", (long long)batch, kiln_last_error());
    assert_int_equal(kiln_tensor_ndim(out), 1 + n_tail);
    assert_int_equal(kiln_tensor_dim(out, 0), batch);
    for (int d = 0; d < n_tail; d++) assert_int_equal(kiln_tensor_dim(out, d + 1), want_tail[d]);
    assert_true(tu_close_values("view", out, want, batch * 6, 0, 0));
    kiln_scope_end();
  }
}

static void runtime_shape_into_reshape(void **state) {
  (void)state;
  builder b;
  kiln_model *m;
  /* [dim 0 of X, -1]. */
  static int64_t zero[1] = {0}, minus1[1] = {-1}, three_two[2] = {3, 2}, neg3[1] = {-3};
  build_view(&b, zero, minus1, 1, true);
  if (b_load(&b, &m) != KILN_OK) fail_msg("%s", kiln_last_error());
  kiln_model_value v;
  assert_int_equal(kiln_model_output(m, 0, &v), KILN_OK);
  assert_int_equal(v.ndim, 2);
  assert_int_equal(v.shape[0], -1);
  check_view(m, 1, (int64_t[]){6});
  kiln_model_free(m);
  /* A 1-d index gives [N], which Unsqueeze makes 2-d: no longer a shape. */
  build_view(&b, zero, minus1, 1, false);
  expect_failure(&b, KILN_ERR_UNSUPPORTED, "node 4 ('unsqueeze', Unsqueeze): makes a 2-d int64 value of a shape");
  /* [dim 0 of X (as index -3), 3, 2]. */
  build_view(&b, neg3, three_two, 2, true);
  if (b_load(&b, &m) != KILN_OK) fail_msg("%s", kiln_last_error());
  check_view(m, 2, (int64_t[]){3, 2});
  kiln_model_free(m);
  /* Dim 1 of X is declared (2), so a constant: [2, -1] of [N, 2, 3] is
   * [2, 3N] at every batch, as ONNX defines it. */
  static int64_t one[1] = {1};
  build_view(&b, one, minus1, 1, true);
  if (b_load(&b, &m) != KILN_OK) fail_msg("%s", kiln_last_error());
  kiln_scope_begin();
  kiln_tensor *in = kiln_zeros(KILN_F32, 3, (int64_t[]){4, 2, 3}), *out;
  assert_int_equal(kiln_model_run(m, 1, &in, &out), KILN_OK);
  assert_int_equal(kiln_tensor_dim(out, 0), 2);
  assert_int_equal(kiln_tensor_dim(out, 1), 12);
  kiln_scope_end();
  kiln_model_free(m);
  /* N in another place than its own: kiln cannot keep that exact, so it is
   * refused, naming the node (before, the shape was folded at N = 1). */
  static int64_t minus1_first[1] = {-1};
  build_view(&b, zero, minus1_first, 1, true);
  /* Concat(T, U): [-1, N]. */
  b.node_in[6][0] = "T", b.node_in[6][1] = "U";
  expect_failure(&b, KILN_ERR_UNSUPPORTED, "node 7 ('view', Reshape): entry 1 of the shape 'C' is dim 0 of the input");
  /* The shape through an op that computes with it: refused. */
  build_view(&b, zero, minus1, 1, true);
  b.nodes[4].op_type = "Neg", b.nodes[4].n_input = 1;
  expect_failure(&b, KILN_ERR_UNSUPPORTED, "node 4 ('unsqueeze', Neg): input 0 ('D') is a shape of a value with unknown");
}

/* ONNX's 0 in a Reshape copies the input's dim: kept (kiln's reshape -2),
 * not folded at the size the graph is built with (it was, and failed at
 * other batches). A reshape of that reshape keeps its own input's dims, so
 * the compiler must not fold the two into one reshape of X (it did: the
 * output came out [N, 2, 3]). */
static void reshape_zero_keeps_the_batch(void **state) {
  (void)state;
  builder b;
  static int64_t inner[3] = {0, 3, 2}, outer[3] = {0, 0, -1};
  b_init(&b, 13, "X", 3, (int64_t[]){-1, 2, 3}, "Y");
  b_const_ints(&b, "S1", 3, inner);
  b_node(&b, "Reshape", "r1", 2, (const char *[]){"X", "S1"}, "R");
  b_const_ints(&b, "S2", 3, outer);
  b_node(&b, "Reshape", "r2", 2, (const char *[]){"R", "S2"}, "Y");
  kiln_model *m;
  if (b_load(&b, &m) != KILN_OK) fail_msg("%s", kiln_last_error());
  check_view(m, 2, (int64_t[]){3, 2});
  kiln_model_free(m);
  /* kiln's reshape itself: -2 is the input's dim in that place. */
  kiln_scope_begin();
  kiln_tensor *x = kiln_zeros(KILN_F32, 3, (int64_t[]){2, 3, 4});
  kiln_tensor *y = kiln_reshape(x, 3, (int64_t[]){-2, -1, 2});
  assert_true(tu_ok("reshape -2", y));
  assert_int_equal(kiln_tensor_dim(y, 0), 2);
  assert_int_equal(kiln_tensor_dim(y, 1), 6);
  y = kiln_reshape(x, 4, (int64_t[]){-2, -2, -2, -2});
  assert_int_equal(kiln_tensor_status(y), KILN_ERR_INVALID_ARGUMENT);
  assert_non_null(strstr(kiln_tensor_error(y), "keeps dim 3 (-2)"));
  kiln_scope_end();
}

static void rejects_malformed_models(void **state) {
  (void)state;
  builder b;
  b_init(&b, 13, "X", 2, (int64_t[]){2, 2}, "Y");
  b_node(&b, "Add", "a", 2, (const char *[]){"X", "Z"}, "Y");
  expect_failure(&b, KILN_ERR_CORRUPT, "input 1 ('Z') is not defined before the node");

  /* A cycle: each node reads the other's output. */
  b_init(&b, 13, "X", 2, (int64_t[]){2, 2}, "Y");
  b_node(&b, "Add", "a", 2, (const char *[]){"X", "T"}, "Y");
  b_node(&b, "Relu", "b", 1, (const char *[]){"Y"}, "T");
  expect_failure(&b, KILN_ERR_CORRUPT, "not defined before the node");

  b_init(&b, 13, "X", 2, (int64_t[]){2, 3}, "Y");
  static float w[5];
  static int64_t wd[2] = {2, 3};
  b_init_f32(&b, "W", 2, wd, w, 5);
  b_node(&b, "Add", "a", 2, (const char *[]){"X", "W"}, "Y");
  expect_failure(&b, KILN_ERR_CORRUPT, "initializer 0 ('W'): float_data holds 5 elements, the dims ask for 6");

  b_init(&b, 13, "X", 2, (int64_t[]){2, 3}, "Y");
  b_init_f32(&b, "W", 2, wd, w, 5)->data_type = 10;
  b_node(&b, "Add", "a", 2, (const char *[]){"X", "W"}, "Y");
  expect_failure(&b, KILN_ERR_UNSUPPORTED, "data type 10 (FLOAT16)");

  b_init(&b, 13, "X", 2, (int64_t[]){2, 3}, "Q");
  b_node(&b, "Relu", "r", 1, (const char *[]){"X"}, "Y");
  expect_failure(&b, KILN_ERR_CORRUPT, "graph output 0 ('Q') is not defined");

  kiln_model *m = NULL;
  static const uint8_t junk[] = {0xff, 0xff, 0xff, 0x01, 0x02};
  assert_int_equal(onnx_load_memory(junk, sizeof junk, "junk.onnx", NULL, 0, &m), KILN_ERR_CORRUPT);
  assert_non_null(strstr(kiln_last_error(), "junk.onnx: not an ONNX model"));
  assert_null(m);
  /* Messages nested past the limit: graph (field 7) holding a node (1)
   * holding an attribute (5) holding a graph (6), and so on. */
  uint8_t deep[4096];
  size_t len = 0;
  for (int d = 0; d < 200; d++) deep[len++] = d % 2 ? 0x32 : 0x3a, deep[len++] = 0;
  for (size_t i = len; i >= 2; i -= 2) {
    size_t inner = len - i;
    deep[i - 1] = inner < 128 ? (uint8_t)inner : 0;
  }
  assert_int_not_equal(onnx_load_memory(deep, len, "deep.onnx", NULL, 0, &m), KILN_OK);
  assert_null(m);
  assert_int_equal(kiln_onnx_load("/nonexistent/x.onnx", NULL, &m), KILN_ERR_IO);
  assert_null(kiln_model_load("/nonexistent/x.onnx"));
  assert_int_equal(kiln_last_status(), KILN_ERR_IO);
}

/* One defect per file of tests/fixtures/bad_onnx/, and what it must say
 * after "kiln_onnx_load: PATH: ". */
static const struct {
  const char *file;
  kiln_status st;
  const char *text;
} bad_files[] = {
    {"arity", KILN_ERR_CORRUPT, "node 0 ('r', Relu): 2 inputs (Relu takes 1)"},
    {"attribute_no_name", KILN_ERR_UNSUPPORTED, "node 0 ('r', Relu): attribute '' is not supported"},
    {"empty_perm", KILN_ERR_INVALID_ARGUMENT, "node 0 ('t', Transpose): permute: 0 axes given for 2 dims"},
    {"attribute_type", KILN_ERR_CORRUPT, "node 0 ('s', Softmax): attribute 'axis' is not an int"},
    {"bad_dtype", KILN_ERR_UNSUPPORTED, "initializer 0 ('W'): data type 99 (unknown) is not one kiln has"},
    {"cycle", KILN_ERR_CORRUPT, "node 0 ('a', Add): input 1 ('T') is not defined before the node"},
    {"deep_nesting", KILN_ERR_UNSUPPORTED, "messages nest more than 24 deep"},
    {"defined_twice", KILN_ERR_CORRUPT, "node 1 ('b', Relu): output 'Y' is defined twice"},
    {"dims_overflow", KILN_ERR_OVERFLOW, "initializer 0 ('W'): 2 dims whose element count overflows"},
    {"external_data", KILN_ERR_UNSUPPORTED, "initializer 0 ('W'): data in an external file is not supported"},
    {"float16", KILN_ERR_UNSUPPORTED, "initializer 0 ('W'): data type 10 (FLOAT16) is not one kiln has"},
    {"float_data_short", KILN_ERR_CORRUPT, "initializer 0 ('W'): float_data holds 5 elements, the dims ask for 6"},
    {"input_dtype", KILN_ERR_UNSUPPORTED, "graph input 0 ('X'): element type 10 (FLOAT16) is not one kiln has"},
    {"input_no_shape", KILN_ERR_UNSUPPORTED, "graph input 0 ('X') has no shape"},
    {"input_not_tensor", KILN_ERR_UNSUPPORTED, "graph input 0 ('X') is not a tensor"},
    {"negative_dim", KILN_ERR_CORRUPT, "initializer 0 ('W'): dim 0 is -1"},
    {"no_graph", KILN_ERR_CORRUPT, "the model has no graph"},
    {"no_opset", KILN_ERR_UNSUPPORTED, "the model imports no default-domain opset"},
    {"not_protobuf", KILN_ERR_CORRUPT, "not an ONNX model"},
    {"opset_too_new", KILN_ERR_UNSUPPORTED, "default-domain opset 99 (kiln reads 1 to 17)"},
    {"output_undefined", KILN_ERR_CORRUPT, "graph output 0 ('Y') is not defined"},
    {"raw_data_short", KILN_ERR_CORRUPT, "initializer 0 ('W'): raw_data holds 23 bytes, the dims ask for 6 elements"},
    {"reshape_dynamic_shape", KILN_ERR_UNSUPPORTED,
     "node 0 ('r', Reshape): input 1 ('S') must be known when the model "
     "is loaded"},
    {"shapes_disagree", KILN_ERR_SHAPE, "node 0 ('add', Add): add: shapes [2, 3] and [4, 5] cannot broadcast"},
    {"too_many_dims", KILN_ERR_UNSUPPORTED, "initializer 0 ('W'): 9 dims (kiln has at most 8)"},
    {"truncated", KILN_ERR_CORRUPT, "not an ONNX model"},
    {"undefined_input", KILN_ERR_CORRUPT, "node 0 ('add', Add): input 1 ('Z') is not defined before the node"},
    {"unknown_attribute", KILN_ERR_UNSUPPORTED, "node 0 ('r', Relu): attribute 'frob' is not supported"},
    {"unknown_domain", KILN_ERR_UNSUPPORTED, "node 0 ('r', Relu): op domain 'com.example'"},
    {"unknown_op", KILN_ERR_UNSUPPORTED, "node 0 ('mystery', Frobnicate): op Frobnicate is not one kiln imports"},
};

static void malformed_corpus(void **state) {
  (void)state;
  int wrong = 0, seen = 0;
  for (size_t i = 0; i < sizeof bad_files / sizeof bad_files[0]; i++) {
    char path[600], want[1024];
    snprintf(path, sizeof path, "%s/bad_onnx/%s.onnx", KILN_FIXTURE_DIR, bad_files[i].file);
    snprintf(want, sizeof want, "kiln_onnx_load: %s: %s", path, bad_files[i].text);
    kiln_model *m = (kiln_model *)1;
    kiln_status st = kiln_onnx_load(path, NULL, &m);
    if (st != bad_files[i].st || strncmp(kiln_last_error(), want, strlen(want)) != 0 || m) {
      fprintf(stderr, "%s:\n  got  %s: %s\n  want %s: %s...\n", bad_files[i].file, kiln_status_name(st),
              kiln_last_error(), kiln_status_name(bad_files[i].st), want);
      wrong++; /* the whole table is reported before failing */
    }
    /* kiln_model_load takes the same path, with the same message. */
    assert_null(kiln_model_load(path));
    assert_int_equal(kiln_last_status(), bad_files[i].st);
  }
  /* Every file in the folder is in the table. */
  char dir[512];
  snprintf(dir, sizeof dir, "%s/bad_onnx", KILN_FIXTURE_DIR);
  DIR *d = opendir(dir);
  assert_non_null(d);
  for (struct dirent *e; (e = readdir(d));) {
    size_t len = strlen(e->d_name);
    if (len < 6 || strcmp(e->d_name + len - 5, ".onnx") != 0) continue;
    seen++;
    bool listed = false;
    for (size_t i = 0; i < sizeof bad_files / sizeof bad_files[0]; i++)
      listed = listed || (strlen(bad_files[i].file) == len - 5 && !strncmp(bad_files[i].file, e->d_name, len - 5));
    if (!listed) fprintf(stderr, "bad_onnx/%s is not in the table\n", e->d_name), wrong++;
  }
  closedir(d);
  assert_int_equal(seen, (int)(sizeof bad_files / sizeof bad_files[0]));
  assert_int_equal(wrong, 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      /* clang-format off: one test a line */
      cmocka_unit_test(dense_layer_at_any_batch),
      cmocka_unit_test(reshape_transpose_softmax_opset11),
      cmocka_unit_test(unknown_dims_through_a_strided_conv),
      cmocka_unit_test(inputs_fixed_as_constants),
      cmocka_unit_test(refuses_what_it_cannot_map),
      cmocka_unit_test(runtime_shape_into_reshape),
      cmocka_unit_test(reshape_zero_keeps_the_batch),
      cmocka_unit_test(rejects_malformed_models),
      cmocka_unit_test(malformed_corpus),
      /* clang-format on */
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
