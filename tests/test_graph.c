/* Symbolic graphs: build with the ordinary ops, compile, run. Every plan's
 * outputs are compared with the same ops run eagerly on the same values
 * (the plan calls the same kernels, so the bits agree exactly), with each
 * pass on and off; and each pass is checked to do what it says (steps
 * removed, arena reused), errors to name the op. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "graph/graph.h" /* graph_compile_refs: cuts and a graph's first nodes */
#include "testutil.h"

/* The expression under test, on either symbolic or concrete inputs. */
typedef kiln_tensor *(*expr_fn)(kiln_tensor **in, kiln_tensor *const *params);

static kiln_tensor *params[4];

static kiln_tensor *mlp(kiln_tensor **in, kiln_tensor *const *p) {
  kiln_tensor *h = kiln_relu(kiln_linear(in[0], p[0], p[1]));
  return kiln_log_softmax(kiln_linear(h, p[2], p[3]), -1);
}

/* Views (transpose, slice, reshape, broadcast), broadcasting binary ops,
 * reductions, a multi-output op and a creation op. */
static kiln_tensor *views_and_reductions(kiln_tensor **in, kiln_tensor *const *p) {
  (void)p;
  kiln_tensor *x = in[0], *b = in[1];
  kiln_tensor *t = kiln_transpose(x, 0, 1);                              /* [5, 4] */
  kiln_tensor *s = kiln_slice(t, 0, 1, 5, 2);                            /* [2, 4] */
  kiln_tensor *m = kiln_mul(kiln_add(s, b), kiln_full(KILN_F32, 0, NULL, 0.5)); /* b [4] broadcast */
  kiln_tensor *parts[2];
  kiln_split(x, 1, 2, (int64_t[]){2, 3}, parts);
  kiln_tensor *r = kiln_sum(kiln_reshape(m, 1, (int64_t[]){8}), 0, NULL, true);
  return kiln_add(kiln_mean(parts[1], 1, (int[]){1}, false), kiln_tanh(r)); /* [4] + [1] */
}

static kiln_tensor *conv_net(kiln_tensor **in, kiln_tensor *const *p) {
  kiln_conv2d_params cp = kiln_conv2d_params_default();
  cp.padding[0] = cp.padding[1] = 1;
  kiln_pool2d_params pp = kiln_pool2d_params_default(2, 2);
  kiln_tensor *h = kiln_max_pool2d(kiln_relu(kiln_conv2d(in[0], p[0], p[1], &cp)), &pp);
  return kiln_softmax(kiln_reshape(h, 2, (int64_t[]){kiln_tensor_dim(h, 0), -1}), 1);
}

typedef struct {
  const char *name;
  expr_fn f;
  int n_in;
  int ndim[2];
  int64_t shape[2][4];
} expr_case;

static const expr_case cases[] = {
    {"mlp", mlp, 1, {2}, {{6, 8}}},
    {"views and reductions", views_and_reductions, 2, {2, 1}, {{4, 5}, {4}}},
    {"conv net", conv_net, 1, {4}, {{2, 3, 6, 6}}},
};

static void make_params(void) {
  params[0] = tu_random(KILN_F32, 2, TU_SHAPE(7, 8), 1, -0.5, 0.5);
  params[1] = tu_random(KILN_F32, 1, TU_SHAPE(7), 2, -0.5, 0.5);
  params[2] = tu_random(KILN_F32, 2, TU_SHAPE(3, 7), 3, -0.5, 0.5);
  params[3] = tu_random(KILN_F32, 1, TU_SHAPE(3), 4, -0.5, 0.5);
}

static void release_params(void) { tu_release_n(4, params); }

static kiln_plan *compile_case(const expr_case *c, const kiln_compile_options *o, kiln_tensor *const *p) {
  kiln_graph *g = kiln_graph_new();
  kiln_tensor *in[2];
  for (int i = 0; i < c->n_in; i++) {
    char name[16];
    snprintf(name, sizeof name, "x%d", i);
    in[i] = kiln_graph_input(g, name, KILN_F32, c->ndim[i], c->shape[i]);
  }
  kiln_tensor *y = c->f(in, p);
  assert_true(tu_ok(c->name, y));
  kiln_plan *plan = kiln_graph_compile(g, 1, &y, o);
  if (!plan) fprintf(stderr, "%s: %s\n", c->name, kiln_last_error());
  assert_non_null(plan);
  kiln_graph_release(g);
  return plan;
}

static void plans_equal_eager(void **state) {
  (void)state;
  make_params();
  kiln_tensor *conv_params[2] = {tu_random(KILN_F32, 4, TU_SHAPE(4, 3, 3, 3), 5, -0.5, 0.5),
                                 tu_random(KILN_F32, 1, TU_SHAPE(4), 6, -0.5, 0.5)};
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    const expr_case *c = &cases[i];
    kiln_tensor *const *p = c->f == conv_net ? conv_params : params;
    for (int variant = 0; variant < 3; variant++) {
      kiln_compile_options o = kiln_compile_options_default();
      if (variant == 1) o.simplify = o.cse = o.fold = o.dce = o.fuse = o.plan_memory = false;
      if (variant == 2) o.reference_kernels = true;
      o.verify = true;
      kiln_scope_begin();
      kiln_plan *plan = compile_case(c, &o, p);
      kiln_tensor *in[2];
      for (int k = 0; k < c->n_in; k++) in[k] = tu_random(KILN_F32, c->ndim[k], c->shape[k], 10 + k, -1, 1);
      kiln_tensor *got;
      assert_int_equal(kiln_plan_run(plan, c->n_in, in, &got), KILN_OK);
      bool old = kiln_use_reference_kernels(variant == 2);
      kiln_tensor *want = c->f(in, p);
      kiln_use_reference_kernels(old);
      char label[96];
      snprintf(label, sizeof label, "%s, variant %d", c->name, variant);
      assert_true(tu_close(label, got, want, 0, 0));
      /* A second run on other values reuses the arena. */
      kiln_tensor *in2[2];
      for (int k = 0; k < c->n_in; k++) {
        /* In the open scope, as tu_random's; the plan copies it contiguous. */
        in2[k] = tu_noncontiguous(tu_random(KILN_F32, c->ndim[k], c->shape[k], 20 + k, -1, 1));
      }
      assert_int_equal(kiln_plan_run(plan, c->n_in, in2, &got), KILN_OK);
      old = kiln_use_reference_kernels(variant == 2);
      want = c->f(in2, p);
      kiln_use_reference_kernels(old);
      assert_true(tu_close(label, got, want, 0, 0));
      kiln_plan_free(plan);
      kiln_scope_end();
    }
  }
  tu_release_n(2, conv_params);
  release_params();
}

static kiln_tensor *input(kiln_graph *g, const char *name) { return kiln_graph_input(g, name, KILN_F32, 1, TU_SHAPE(1000)); }

static void passes_do_their_job(void **state) {
  (void)state;
  kiln_scope_begin();
  kiln_graph *g = kiln_graph_new();
  kiln_tensor *x = input(g, "x");
  /* Dead: an unused branch. Common: exp(x) twice. Simplifiable: (x * 1) +
   * 0. Outside a trace, ops on concrete tensors alone run at once (six is
   * concrete), so only traces leave constants to fold (test_hybrid). */
  kiln_tensor *dead = kiln_sin(kiln_cos(x));
  (void)dead;
  kiln_tensor *e1 = kiln_exp(x), *e2 = kiln_exp(x);
  kiln_tensor *six = kiln_mul(kiln_full(KILN_F32, 0, NULL, 2), kiln_full(KILN_F32, 0, NULL, 3));
  kiln_tensor *same = kiln_add_scalar(kiln_mul_scalar(x, 1), 0);
  kiln_tensor *y = kiln_add(kiln_mul(kiln_add(e1, e2), six), same);
  kiln_plan *all = kiln_graph_compile(g, 1, &y, NULL);
  kiln_compile_options none = {.verify = true}, unfused = kiln_compile_options_default();
  unfused.fuse = false;
  kiln_plan *raw = kiln_graph_compile(g, 1, &y, &none), *separate = kiln_graph_compile(g, 1, &y, &unfused);
  assert_non_null(all);
  assert_non_null(raw);
  assert_non_null(separate);
  kiln_plan_stats a = kiln_plan_get_stats(all), r = kiln_plan_get_stats(raw);
  /* exp, add, mul, add: 4 steps, and the last three one fused loop (exp's
   * value is read twice, so it stays a step of its own); without passes
   * the two dead ops, the second exp and the identities stay. */
  assert_int_equal(kiln_plan_get_stats(separate).steps, 4);
  assert_int_equal(a.steps, 2);
  assert_int_equal(a.fused, 2);
  assert_int_equal(r.steps, 9);
  assert_int_equal(r.fused, 0);
  assert_int_equal(a.merged, 1);
  assert_int_equal(a.folded, 0);
  assert_int_equal(a.simplified, 2);
  kiln_tensor *xv = tu_random(KILN_F32, 1, TU_SHAPE(1000), 3, -1, 1), *ya, *yr;
  assert_int_equal(kiln_plan_run(all, 1, &xv, &ya), KILN_OK);
  assert_int_equal(kiln_plan_run(raw, 1, &xv, &yr), KILN_OK);
  kiln_tensor *want = kiln_add(kiln_mul_scalar(kiln_exp(xv), 12), xv);
  assert_true(tu_close("all passes", ya, want, 1e-6, 0));
  assert_true(tu_close("no passes", yr, want, 1e-6, 0));
  kiln_plan_free(separate);

  /* A chain of twenty elementwise ops on 4 000-byte values, unfused: with
   * planning one buffer, each op writing over its input in place (the last
   * writes the output tensor); without, nineteen. The values agree. */
  kiln_tensor *h = x;
  for (int i = 0; i < 10; i++) h = kiln_tanh(kiln_add_scalar(h, 0.1));
  kiln_plan *chain = kiln_graph_compile(g, 1, &h, &unfused), *spread = kiln_graph_compile(g, 1, &h, &none);
  kiln_plan_stats cs = kiln_plan_get_stats(chain);
  assert_true(cs.arena_bytes <= 4032);
  assert_int_equal(cs.in_place, 18);
  assert_true(cs.unplanned_bytes >= 18 * 4000);
  kiln_tensor *hc, *hs;
  assert_int_equal(kiln_plan_run(chain, 1, &xv, &hc), KILN_OK);
  assert_int_equal(kiln_plan_run(spread, 1, &xv, &hs), KILN_OK);
  assert_true(tu_close("in place", hc, hs, 0, 0));
  kiln_plan_free(spread);

  /* Not in place over a buffer the step also reads through a view:
   * add(a, transpose(a)) writing over a read elements it had overwritten. */
  kiln_tensor *sq = kiln_graph_input(g, "sq", KILN_F32, 2, TU_SHAPE(64, 64));
  kiln_tensor *e = kiln_exp(sq), *sym = kiln_sin(kiln_add(e, kiln_transpose(e, 0, 1)));
  kiln_plan *symp = kiln_graph_compile(g, 1, &sym, &unfused);
  kiln_tensor *sqv = tu_random(KILN_F32, 2, TU_SHAPE(64, 64), 4, -1, 1), *symv;
  assert_int_equal(kiln_plan_run(symp, 2, (kiln_tensor *[]){xv, sqv}, &symv), KILN_OK);
  kiln_tensor *ev = kiln_exp(sqv);
  assert_true(tu_close("a + a^T", symv, kiln_sin(kiln_add(ev, kiln_transpose(ev, 0, 1))), 0, 0));
  kiln_plan_free(symp);

  char *text = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&text, &len);
  assert_int_equal(kiln_graph_dump(g, f, false), KILN_OK);
  assert_int_equal(kiln_plan_dump(all, f, false), KILN_OK);
  assert_int_equal(kiln_plan_dump(all, f, true), KILN_OK);
  fclose(f);
  assert_non_null(strstr(text, "#0 input 'x' -> float32 [1000]"));
  assert_non_null(strstr(text, "plan: 2 steps"));
  assert_non_null(strstr(text, "  1 fused [add, mul, add]"));
  assert_non_null(strstr(text, "digraph plan {"));
  free(text);
  kiln_plan_free(all);
  kiln_plan_free(raw);
  kiln_plan_free(chain);
  kiln_graph_release(g);
  kiln_scope_end();
}

/* Elementwise fusion and GEMM epilogues: which steps merge, and values
 * bit-equal to the ops run one by one, in float32 and float64. */
static void fusion_merges_chains(void **state) {
  (void)state;
  for (int dt = KILN_F32; dt <= KILN_F64; dt++) {
    kiln_scope_begin();
    kiln_graph *g = kiln_graph_new();
    kiln_tensor *x = kiln_graph_input(g, "x", (kiln_dtype)dt, 2, TU_SHAPE(64, 33));
    kiln_tensor *b = kiln_graph_input(g, "b", (kiln_dtype)dt, 1, TU_SHAPE(33));
    kiln_tensor *w = kiln_graph_input(g, "w", (kiln_dtype)dt, 2, TU_SHAPE(33, 33));
    /* One loop: inputs broadcast (b), a scalar op, a unary op with
     * parameters (clip), five ops. */
    kiln_tensor *chain = kiln_mul(kiln_tanh(kiln_add(kiln_mul_scalar(x, 0.5), b)), kiln_clip(kiln_sigmoid(x), 0.2, 0.7));
    /* linear then relu: the relu moves into the GEMM. */
    kiln_tensor *dense = kiln_relu(kiln_linear(chain, w, b));
    /* exp's value is read twice: it stays a step, the rest fuses. */
    kiln_tensor *e = kiln_exp(dense);
    kiln_tensor *twice = kiln_add(kiln_mul(e, e), kiln_neg(e));
    /* b + b is [33], not the output's shape: computing it per element of
     * the [64, 33] product would redo it 64 times, so it stays apart. */
    kiln_tensor *narrow = kiln_mul(kiln_add(b, b), twice);
    /* Twenty ops: more than one fused program holds (16 instructions). */
    kiln_tensor *y = narrow;
    for (int i = 0; i < 10; i++) y = kiln_sin(kiln_add_scalar(y, 0.1));
    /* A chain reading eight inputs, the most a fused step takes (it
     * overflowed the elementwise loop's operand arrays, sized for four). */
    kiln_tensor *wide = kiln_graph_input(g, "wide", (kiln_dtype)dt, 2, TU_SHAPE(64, 33));
    kiln_tensor *many = kiln_add(kiln_add(kiln_add(kiln_add(kiln_add(kiln_add(kiln_add(y, x), b), wide), kiln_exp(x)),
                                                   kiln_relu(wide)), kiln_sin(b)), kiln_cos(x));
    kiln_compile_options on = kiln_compile_options_default(), off = on;
    on.verify = off.verify = true;
    off.fuse = false;
    kiln_plan *fused = kiln_graph_compile(g, 1, &y, &on), *plain = kiln_graph_compile(g, 1, &y, &off);
    kiln_plan *wide_fused = kiln_graph_compile(g, 1, &many, &on), *wide_plain = kiln_graph_compile(g, 1, &many, &off);
    assert_non_null(fused);
    assert_non_null(plain);
    kiln_plan_stats fs = kiln_plan_get_stats(fused), ps = kiln_plan_get_stats(plain);
    /* Unfused: 6 (chain) + 2 (linear, relu) + 4 (exp, mul, neg, add) + 2
     * (b + b, mul) + 20. Fused: the chain; linear with relu; exp; b + b;
     * mul, neg, add, mul and the first twelve of the sin chain (sixteen
     * instructions); the last eight. */
    assert_int_equal(ps.steps, 34);
    assert_int_equal(ps.fused, 0);
    assert_int_equal(fs.steps, 6);
    assert_int_equal(fs.fused, 28);
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_int_equal(kiln_plan_dump(fused, f, false), KILN_OK);
    fclose(f);
    assert_non_null(strstr(text, "fused [mul_scalar, add, tanh, sigmoid, clip, mul]"));
    assert_non_null(strstr(text, "linear {activation=1}"));
    assert_non_null(strstr(text, "fused [mul, neg, add, mul, add_scalar, sin, add_scalar,"));
    free(text);
    /* Every plan of g takes its four inputs (unused ones too). */
    kiln_tensor *in[4] = {tu_random((kiln_dtype)dt, 2, TU_SHAPE(64, 33), 1, -1, 1), tu_random((kiln_dtype)dt, 1, TU_SHAPE(33), 2, -1, 1),
                          tu_random((kiln_dtype)dt, 2, TU_SHAPE(33, 33), 3, -0.3, 0.3),
                          tu_random((kiln_dtype)dt, 2, TU_SHAPE(64, 33), 4, -1, 1)};
    kiln_tensor *got, *want;
    assert_int_equal(kiln_plan_run(fused, 4, in, &got), KILN_OK);
    assert_int_equal(kiln_plan_run(plain, 4, in, &want), KILN_OK);
    assert_true(tu_close(dt == KILN_F32 ? "fused float32" : "fused float64", got, want, 0, 0));
    /* The widest fused step reads more than the four operands the loop
     * used to hold. */
    char *dump = NULL;
    size_t dump_len = 0;
    FILE *df = open_memstream(&dump, &dump_len);
    assert_int_equal(kiln_plan_dump(wide_fused, df, false), KILN_OK);
    fclose(df);
    int widest = 0;
    for (const char *line = strstr(dump, "fused ["); line; line = strstr(line + 1, "fused [")) {
      const char *open = strchr(strchr(line, ']'), '('), *close = strchr(open, ')');
      int operands = 1;
      for (const char *c = open; c < close; c++) operands += *c == ',';
      widest = operands > widest ? operands : widest;
    }
    free(dump);
    assert_true(widest >= 5);
    assert_int_equal(kiln_plan_run(wide_fused, 4, in, &got), KILN_OK);
    assert_int_equal(kiln_plan_run(wide_plain, 4, in, &want), KILN_OK);
    assert_true(tu_close("eight inputs", got, want, 0, 0));
    kiln_plan_free(wide_fused);
    kiln_plan_free(wide_plain);
    /* Check mode compares each fused step with the op it ends in. */
    assert_int_equal(kiln_plan_check(fused, 4, in, 0, 0), KILN_OK);
    kiln_plan_free(fused);
    kiln_plan_free(plain);
    kiln_graph_release(g);
    kiln_scope_end();
  }
  setenv("KILN_DISABLE_PASSES", "cse,fuse", 1);
  kiln_compile_options o = kiln_compile_options_default();
  unsetenv("KILN_DISABLE_PASSES");
  assert_false(o.fuse);
  assert_false(o.cse);
  assert_true(o.fold);
}

/* A cut value is an input of the plan, not computed: a run given another
 * value for it uses that one. A plan of the graph's first nodes ignores
 * what was added after them (an input there included). */
static void cuts_and_prefixes(void **state) {
  (void)state;
  kiln_scope_begin();
  kiln_graph *g = kiln_graph_new();
  kiln_tensor *x = kiln_graph_input(g, "x", KILN_F32, 1, TU_SHAPE(6));
  kiln_tensor *y = kiln_mul_scalar(kiln_exp(x), 2);
  kiln_tensor *z = kiln_sin(y);
  int first_nodes = g->n;
  kiln_tensor *later = kiln_graph_input(g, "later", KILN_F32, 1, TU_SHAPE(6));
  kiln_tensor *w = kiln_add(z, later);
  graph_ref yr = ((const graph_value *)y->sym)->ref, zr = ((const graph_value *)z->sym)->ref,
            wr = ((const graph_value *)w->sym)->ref;
  kiln_compile_options o = kiln_compile_options_default();
  o.verify = true;
  kiln_plan *cut = graph_compile_refs(g, g->n, 1, &wr, 1, &yr, &o);
  kiln_plan *prefix = graph_compile_refs(g, first_nodes, 1, &zr, 0, NULL, &o);
  assert_non_null(cut);
  assert_non_null(prefix);
  assert_int_equal(kiln_plan_num_inputs(cut), 3); /* x, later, then y */
  assert_int_equal(kiln_plan_num_inputs(prefix), 1);
  assert_int_equal(kiln_plan_get_stats(cut).steps, 1); /* sin and add fused; exp and mul not there */
  kiln_tensor *xv = tu_random(KILN_F32, 1, TU_SHAPE(6), 1, -1, 1), *lv = tu_random(KILN_F32, 1, TU_SHAPE(6), 2, -1, 1);
  kiln_tensor *given = tu_random(KILN_F32, 1, TU_SHAPE(6), 3, -1, 1), *got, *zv;
  assert_int_equal(kiln_plan_run(cut, 3, (kiln_tensor *[]){xv, lv, given}, &got), KILN_OK);
  assert_true(tu_close("cut", got, kiln_add(kiln_sin(given), lv), 0, 0));
  assert_int_equal(kiln_plan_run(prefix, 1, &xv, &zv), KILN_OK);
  assert_true(tu_close("prefix", zv, kiln_sin(kiln_mul_scalar(kiln_exp(xv), 2)), 0, 0));
  /* The cut input is checked like the others, and named by its node. */
  kiln_tensor *wrong = tu_random(KILN_F32, 1, TU_SHAPE(5), 4, -1, 1);
  assert_int_equal(kiln_plan_run(cut, 3, (kiln_tensor *[]){xv, lv, wrong}, &got), KILN_ERR_SHAPE);
  assert_non_null(strstr(kiln_last_error(), "input 'the value of node #2.0' must be float32 [6], got float32 [5]"));
  kiln_plan_free(cut);
  kiln_plan_free(prefix);
  kiln_graph_release(g);
  kiln_scope_end();
}

/* Two heavy branches that do not need each other run as engine ops of
 * their own, joined by a third: the values are those of the one-op plan,
 * buffers of the parallel branches never overlap, and a failure in one
 * branch reaches the output without holding back the next run. */
static void parallel_branches(void **state) {
  (void)state;
  kiln_scope_begin();
  kiln_graph *g = kiln_graph_new();
  kiln_tensor *x = kiln_graph_input(g, "x", KILN_F32, 2, TU_SHAPE(256, 512));
  kiln_tensor *w1 = kiln_graph_input(g, "w1", KILN_F32, 2, TU_SHAPE(512, 512));
  kiln_tensor *w2 = kiln_graph_input(g, "w2", KILN_F32, 2, TU_SHAPE(512, 512));
  kiln_tensor *num = kiln_graph_input(g, "num", KILN_I64, 1, TU_SHAPE(300000));
  kiln_tensor *den = kiln_graph_input(g, "den", KILN_I64, 1, TU_SHAPE(300000));
  kiln_tensor *a = kiln_relu(kiln_linear(x, w1, NULL)), *b = kiln_tanh(kiln_linear(x, w2, NULL));
  kiln_tensor *quotient = kiln_sum(kiln_cast(kiln_div(num, den), KILN_F32), 0, NULL, false);
  kiln_tensor *y = kiln_add(kiln_mul(a, b), quotient);
  kiln_compile_options on = kiln_compile_options_default(), off = on;
  on.verify = off.verify = true;
  off.parallel = false;
  kiln_plan *par = kiln_graph_compile(g, 1, &y, &on), *seq = kiln_graph_compile(g, 1, &y, &off);
  assert_non_null(par);
  assert_non_null(seq);
  kiln_plan_stats ps = kiln_plan_get_stats(par), ss = kiln_plan_get_stats(seq);
  /* linear+relu, linear+tanh, div (and what follows it), the join. */
  assert_int_equal(ss.segments, 1);
  assert_true(ps.segments >= 4);
  /* a and b are alive together in branches that may overlap in time: the
   * arena holds both. */
  assert_true(ps.arena_bytes >= 2 * 256 * 512 * 4);
  char *text = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&text, &len);
  assert_int_equal(kiln_plan_dump(par, f, false), KILN_OK);
  fclose(f);
  assert_non_null(strstr(text, "segments"));
  assert_non_null(strstr(text, "[1] "));
  free(text);
  kiln_tensor *in[5] = {tu_random(KILN_F32, 2, TU_SHAPE(256, 512), 1, -1, 1), tu_random(KILN_F32, 2, TU_SHAPE(512, 512), 2, -0.1, 0.1),
                        tu_random(KILN_F32, 2, TU_SHAPE(512, 512), 3, -0.1, 0.1), kiln_full(KILN_I64, 1, TU_SHAPE(300000), 7),
                        kiln_full(KILN_I64, 1, TU_SHAPE(300000), 2)};
  for (int round = 0; round < 3; round++) {
    kiln_tensor *got, *want;
    assert_int_equal(kiln_plan_run(par, 5, in, &got), KILN_OK);
    assert_int_equal(kiln_plan_run(seq, 5, in, &want), KILN_OK);
    assert_true(tu_close("parallel branches", got, want, 0, 0));
  }
  kiln_tensor *zeros = kiln_full(KILN_I64, 1, TU_SHAPE(300000), 0), *bad_in[5] = {in[0], in[1], in[2], in[3], zeros}, *bad;
  assert_int_equal(kiln_plan_run(par, 5, bad_in, &bad), KILN_OK); /* pushed; fails when run */
  assert_int_equal(kiln_tensor_status(bad), KILN_ERR_OUT_OF_RANGE);
  assert_non_null(strstr(kiln_tensor_error(bad), "div"));
  kiln_tensor *again, *want;
  assert_int_equal(kiln_plan_run(par, 5, in, &again), KILN_OK);
  assert_int_equal(kiln_plan_run(seq, 5, in, &want), KILN_OK);
  assert_true(tu_close("the run after a failure", again, want, 0, 0));
  assert_int_equal(kiln_waitall(), KILN_OK); /* the failure was reported once, by the status call */
  kiln_plan_free(par);
  kiln_plan_free(seq);
  kiln_graph_release(g);
  kiln_scope_end();
}

/* Unknown dims (-1): the graph is built with 1 there, and a run with
 * other sizes rebuilds it for them (each op's inference again) and
 * compiles that once. */
static void unknown_dims(void **state) {
  (void)state;
  kiln_scope_begin();
  kiln_tensor *w = tu_random(KILN_F32, 2, TU_SHAPE(10, 12), 1, -0.5, 0.5), *b = tu_random(KILN_F32, 1, TU_SHAPE(10), 2, -0.5, 0.5);
  kiln_graph *g = kiln_graph_new();
  kiln_tensor *x = kiln_graph_input(g, "x", KILN_F32, 3, TU_SHAPE(-1, 3, 4));
  kiln_tensor *y = kiln_softmax(kiln_linear_act(kiln_reshape(x, 2, TU_SHAPE(-1, 12)), w, b, KILN_ACT_TANH), -1);
  /* An op that fixed the batch as it was built: it holds for 1 only. */
  kiln_tensor *pinned = kiln_reshape(x, 2, TU_SHAPE(1, 12));
  kiln_plan *p = kiln_graph_compile(g, 1, &y, NULL), *q = kiln_graph_compile(g, 1, &pinned, NULL);
  assert_non_null(p);
  assert_non_null(q);
  char *text = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&text, &len);
  assert_int_equal(kiln_graph_dump(g, f, false), KILN_OK);
  fclose(f);
  assert_non_null(strstr(text, "#0 input 'x' -> float32 [?, 3, 4]"));
  free(text);
  const int64_t batches[] = {1, 5, 37, 5, 0};
  for (size_t i = 0; i < sizeof batches / sizeof *batches; i++) {
    kiln_tensor *xv = tu_random(KILN_F32, 3, TU_SHAPE(batches[i], 3, 4), 10 + i, -1, 1), *got;
    if (kiln_plan_run(p, 1, &xv, &got) != KILN_OK) fail_msg("batch %lld: %s", (long long)batches[i], kiln_last_error());
    kiln_tensor *want = kiln_softmax(kiln_linear_act(kiln_reshape(xv, 2, TU_SHAPE(-1, 12)), w, b, KILN_ACT_TANH), -1);
    assert_int_equal(kiln_tensor_shape(got)[0], batches[i]);
    assert_true(tu_close("unknown batch", got, want, 0, 0));
    assert_int_equal(kiln_plan_check(p, 1, &xv, 0, 0), KILN_OK);
  }
  kiln_tensor *odd = tu_random(KILN_F32, 3, TU_SHAPE(5, 3, 5), 3, -1, 1), *got;
  assert_int_equal(kiln_plan_run(p, 1, &odd, &got), KILN_ERR_SHAPE);
  assert_non_null(strstr(kiln_last_error(), "input 'x' must be float32 [?, 3, 4], got float32 [5, 3, 5]"));
  kiln_tensor *five = tu_random(KILN_F32, 3, TU_SHAPE(5, 3, 4), 4, -1, 1);
  assert_int_equal(kiln_plan_run(q, 1, &five, &got), KILN_ERR_SHAPE);
  assert_non_null(strstr(kiln_last_error(), "reshape"));
  assert_null(got);
  kiln_plan_free(p);
  kiln_plan_free(q);
  kiln_graph_release(g);
  kiln_scope_end();
}

static void bound_tensors_are_read_at_each_run(void **state) {
  (void)state;
  kiln_scope_begin();
  kiln_graph *g = kiln_graph_new();
  kiln_tensor *w = kiln_keep(kiln_ones(KILN_F32, 1, TU_SHAPE(3)));
  kiln_tensor *x = kiln_graph_input(g, "x", KILN_F32, 1, TU_SHAPE(3));
  kiln_tensor *y = kiln_mul(x, w);
  kiln_tensor *noise = kiln_random_uniform(NULL, 0, 1, KILN_F32, 1, TU_SHAPE(4)); /* concrete: no trace */
  (void)noise;
  kiln_tensor *r = kiln_add(kiln_dropout(NULL, x, 0.5), kiln_zeros(KILN_F32, 0, NULL));
  kiln_plan *p = kiln_graph_compile(g, 1, &y, NULL), *q = kiln_graph_compile(g, 1, &r, NULL);
  kiln_tensor *xv = kiln_full(KILN_F32, 1, TU_SHAPE(3), 2), *out;
  assert_int_equal(kiln_plan_run(p, 1, &xv, &out), KILN_OK);
  assert_true(tu_close_values("w = 1", out, (double[]){2, 2, 2}, 3, 0, 0));
  assert_int_equal(kiln_assign(w, kiln_full(KILN_F32, 0, NULL, 3)), KILN_OK);
  assert_int_equal(kiln_plan_run(p, 1, &xv, &out), KILN_OK);
  assert_true(tu_close_values("w = 3", out, (double[]){6, 6, 6}, 3, 0, 0));
  /* Dropout draws a new mask at each run. */
  kiln_tensor *big = kiln_ones(KILN_F32, 1, TU_SHAPE(3)), *m1, *m2;
  int differ = 0;
  for (int i = 0; i < 8 && !differ; i++) {
    assert_int_equal(kiln_plan_run(q, 1, &big, &m1), KILN_OK);
    assert_int_equal(kiln_plan_run(q, 1, &big, &m2), KILN_OK);
    double a[3], b[3];
    kiln_tensor_copy_to(m1, a, sizeof a), kiln_tensor_copy_to(m2, b, sizeof b);
    differ = memcmp(a, b, sizeof a) != 0;
  }
  assert_true(differ);
  kiln_plan_free(p);
  kiln_plan_free(q);
  kiln_tensor_release(w);
  kiln_graph_release(g);
  kiln_scope_end();
}

static void errors_name_the_op(void **state) {
  (void)state;
  kiln_scope_begin();
  kiln_graph *g = kiln_graph_new(), *h = kiln_graph_new();
  kiln_tensor *x = kiln_graph_input(g, "x", KILN_F32, 2, TU_SHAPE(2, 3));
  TU_FAILS(kiln_graph_input(g, "x", KILN_F32, 1, TU_SHAPE(1)), KILN_ERR_INVALID_ARGUMENT, "already has an input 'x'");
  /* Shape errors at the call, as eagerly. */
  TU_FAILS(kiln_matmul(x, x), KILN_ERR_SHAPE, "matmul");
  kiln_tensor *y = kiln_exp(x);
  double v;
  assert_int_equal(kiln_tensor_item(y, &v), KILN_ERR_INVALID_ARGUMENT);
  assert_non_null(strstr(kiln_last_error(), "the output of exp is symbolic"));
  assert_int_equal(kiln_wait_to_read(y), KILN_ERR_INVALID_ARGUMENT);
  assert_int_equal(kiln_attach_grad(y, KILN_GRAD_WRITE), KILN_ERR_INVALID_ARGUMENT);
  kiln_tensor *other = kiln_graph_input(h, "z", KILN_F32, 2, TU_SHAPE(2, 3));
  TU_FAILS(kiln_add(x, other), KILN_ERR_INVALID_ARGUMENT, "add: input 1 belongs to another graph");
  assert_null(kiln_graph_compile(h, 1, &y, NULL));
  assert_non_null(strstr(kiln_last_error(), "not a value of this graph"));
  kiln_plan *p = kiln_graph_compile(g, 1, &y, NULL);
  kiln_tensor *out, *wrong = kiln_zeros(KILN_F32, 2, TU_SHAPE(3, 2));
  assert_int_equal(kiln_plan_run(p, 1, &wrong, &out), KILN_ERR_SHAPE);
  assert_non_null(strstr(kiln_last_error(), "input 'x' must be float32 [2, 3], got float32 [3, 2]"));
  assert_int_equal(kiln_plan_run(p, 0, NULL, &out), KILN_ERR_INVALID_ARGUMENT);
  assert_int_equal(kiln_plan_run(NULL, 1, &wrong, &out), KILN_ERR_INVALID_ARGUMENT);
  assert_int_equal(kiln_plan_check(p, 0, NULL, 0, 0), KILN_ERR_INVALID_ARGUMENT);
  assert_non_null(strstr(kiln_last_error(), "the plan takes 1 inputs, got 0"));
  TU_FAILS(kiln_graph_input(NULL, "y", KILN_F32, 1, TU_SHAPE(1)), KILN_ERR_INVALID_ARGUMENT, "graph is NULL");
  TU_FAILS(kiln_graph_input(g, "y", KILN_F32, -1, NULL), KILN_ERR_INVALID_ARGUMENT, "bad dtype or -1 dims");
  TU_FAILS(kiln_graph_input(g, "", KILN_F32, 1, TU_SHAPE(1)), KILN_ERR_INVALID_ARGUMENT, "name is empty");
  assert_null(kiln_graph_compile(g, 0, NULL, NULL));
  assert_non_null(strstr(kiln_last_error(), "at least one output"));
  /* In-place writes cannot take symbolic tensors. */
  kiln_tensor *c = kiln_zeros(KILN_F32, 2, TU_SHAPE(2, 3));
  assert_int_equal(kiln_assign(c, y), KILN_ERR_UNSUPPORTED);
  assert_non_null(strstr(kiln_last_error(), "src is symbolic"));
  kiln_plan_free(p);
  kiln_graph_release(g);
  kiln_graph_release(h);
  kiln_scope_end();
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(plans_equal_eager),
      cmocka_unit_test(passes_do_their_job),
      cmocka_unit_test(fusion_merges_chains),
      cmocka_unit_test(cuts_and_prefixes),
      cmocka_unit_test(parallel_branches),
      cmocka_unit_test(unknown_dims),
      cmocka_unit_test(bound_tensors_are_read_at_each_run),
      cmocka_unit_test(errors_name_the_op),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
