/* Elementwise kernels: unary, binary with broadcasting, where, and strided
 * copy, over views of any layout. Optimised loops follow numpy's ufunc
 * design: dims are coalesced and an inner loop runs over the last one with
 * typed, vectorisable code for the contiguous and scalar-operand cases. The
 * reference kernels index every element from its flat position and compute
 * in double (or int64), as independently as possible. */
#ifndef KILN_KERNELS_ELEMENTWISE_H
#define KILN_KERNELS_ELEMENTWISE_H

#include "base/base.h"
#include "kernels/view.h"

typedef enum {
  KK_NEG, KK_ABS, KK_EXP, KK_LOG, KK_SQRT, KK_RSQRT, KK_SQUARE, KK_SIN, KK_COS, KK_TANH, KK_SIGMOID, KK_RELU,
  KK_LEAKY_RELU, KK_GELU, KK_SOFTPLUS, KK_SIGN, KK_FLOOR, KK_CEIL, KK_ROUND, KK_CLIP, KK_LOGICAL_NOT,
  KK_ERF, KK_UNARY_COUNT
} kk_unary_op;

typedef enum {
  KK_ADD, KK_SUB, KK_MUL, KK_DIV, KK_POW, KK_MAXIMUM, KK_MINIMUM, KK_EQUAL, KK_NOT_EQUAL, KK_LESS, KK_LESS_EQUAL,
  KK_GREATER, KK_GREATER_EQUAL, KK_LOGICAL_AND, KK_LOGICAL_OR,
  KK_BINARY_COUNT
} kk_binary_op;

/* Which unary ops accept integer inputs. */
bool kk_unary_takes_int(kk_unary_op op);
static inline bool kk_binary_is_compare(kk_binary_op op) { return op >= KK_EQUAL; }

/* y = op(x) (x and y have the same shape; a, b are the op's parameters:
 * leaky_relu slope, clip bounds). */
kiln_status kk_unary(kk_unary_op op, const kk_view *x, const kk_view *y, double a, double b);
kiln_status kk_unary_ref(kk_unary_op op, const kk_view *x, const kk_view *y, double a, double b);

/* out = a op b, a and b broadcast to out's shape. Integer division by zero
 * and negative integer powers fail with KILN_ERR_OUT_OF_RANGE. */
kiln_status kk_binary(kk_binary_op op, const kk_view *a, const kk_view *b, const kk_view *out);
kiln_status kk_binary_ref(kk_binary_op op, const kk_view *a, const kk_view *b, const kk_view *out);

kiln_status kk_where(const kk_view *cond, const kk_view *a, const kk_view *b, const kk_view *out);
kiln_status kk_where_ref(const kk_view *cond, const kk_view *a, const kk_view *b, const kk_view *out);

/* A fused elementwise chain (graph/compile.c builds them from a graph's
 * float unary and binary ops): instructions over registers, each reading
 * the program's inputs, earlier registers or a scalar. The last
 * instruction writes the output. The chain runs as one loop over the
 * output in chunks that stay in L1, each instruction through the same
 * inner loop as its op alone, so the bits equal the unfused ops'. */
enum { KK_FUSED_MAX_INPUTS = 8, KK_FUSED_MAX_INSTR = 16 };
enum { KK_FUSED_SCALAR = -1000 }; /* an operand that is the instruction's scalar */
typedef struct {
  bool binary;
  int op;       /* kk_unary_op or kk_binary_op */
  double a, b;  /* unary parameters (leaky_relu's slope, clip's bounds) */
  double scalar;
  /* >= 0: input i; KK_FUSED_SCALAR; else register -1 - r (instruction r < this one) */
  int src[2];
  int tag; /* the caller's (the op it came from, for dumps) */
} kk_fused_instr;
typedef struct {
  int n_inputs, n_instr;
  kk_fused_instr instr[KK_FUSED_MAX_INSTR];
} kk_fused_program;
/* in[i] broadcast to out's shape; float32 or float64 throughout. */
void kk_fused(const kk_fused_program *prog, const kk_view *in, const kk_view *out);

/* out = x (same dtype), x broadcast to out's shape. */
void kk_copy(const kk_view *x, const kk_view *out);
void kk_copy_ref(const kk_view *x, const kk_view *out);

/* A view of x with out's ndim and x's strides set to 0 along broadcast dims. */
kk_view kk_broadcast_view(const kk_view *x, const kk_view *out);

/* Calls fn over every element of a shape, for nops operands with byte
 * strides, coalescing dims; fn gets the inner run length, the operand
 * pointers and their inner byte strides. */
typedef void (*kk_inner_fn)(int64_t n, char **ptrs, const int64_t *strides, void *ctx);
void kk_foreach(int nops, const kk_view *const *views, const int64_t *shape, int ndim, kk_inner_fn fn, void *ctx);
/* The same, split across kiln's pool along dim `split` when the work is
 * large enough (serial otherwise, or when split < 0). Each share walks its
 * elements in kk_foreach's order, so a kernel whose elements at different
 * indices of `split` touch different outputs gets the same bits as serial.
 * fn must tolerate running concurrently on one ctx. */
void kk_foreach_split(int nops, const kk_view *const *views, const int64_t *shape, int ndim, int split,
                      kk_inner_fn fn, void *ctx);

#endif
