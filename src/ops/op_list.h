/* Every op of the registry, once. The order is append-only: ids are stable
 * across versions (the native format and the tests refer to ops by name, but
 * an id must never silently change meaning). X(id, name, family). The family
 * names the file src/ops/<family>.c that defines `kiln_opdef_<name>`. */
#define KILN_OP_LIST(X)                                   \
  /* creation */                                          \
  X(FULL, full, creation)                                 \
  X(ARANGE, arange, creation)                             \
  X(LINSPACE, linspace, creation)                         \
  X(EYE, eye, creation)                                   \
  X(RANDOM_UNIFORM, random_uniform, creation)             \
  X(RANDOM_NORMAL, random_normal, creation)               \
  X(RANDOM_BERNOULLI, random_bernoulli, creation)         \
  /* views and layout */                                  \
  X(RESHAPE, reshape, layout)                             \
  X(PERMUTE, permute, layout)                             \
  X(SLICE, slice, layout)                                 \
  X(BROADCAST_TO, broadcast_to, layout)                   \
  X(SQUEEZE, squeeze, layout)                             \
  X(EXPAND_DIMS, expand_dims, layout)                     \
  X(COPY, copy, layout)                                   \
  /* unary elementwise */                                 \
  X(NEG, neg, unary)                                      \
  X(ABS, abs, unary)                                      \
  X(EXP, exp, unary)                                      \
  X(LOG, log, unary)                                      \
  X(SQRT, sqrt, unary)                                    \
  X(RSQRT, rsqrt, unary)                                  \
  X(SQUARE, square, unary)                                \
  X(SIN, sin, unary)                                      \
  X(COS, cos, unary)                                      \
  X(TANH, tanh, unary)                                    \
  X(SIGMOID, sigmoid, unary)                              \
  X(RELU, relu, unary)                                    \
  X(LEAKY_RELU, leaky_relu, unary)                        \
  X(GELU, gelu, unary)                                    \
  X(SOFTPLUS, softplus, unary)                            \
  X(SIGN, sign, unary)                                    \
  X(FLOOR, floor, unary)                                  \
  X(CEIL, ceil, unary)                                    \
  X(ROUND, round, unary)                                  \
  X(CLIP, clip, unary)                                    \
  X(LOGICAL_NOT, logical_not, unary)                      \
  /* binary elementwise, broadcasting */                  \
  X(ADD, add, binary)                                     \
  X(SUB, sub, binary)                                     \
  X(MUL, mul, binary)                                     \
  X(DIV, div, binary)                                     \
  X(POW, pow, binary)                                     \
  X(MAXIMUM, maximum, binary)                             \
  X(MINIMUM, minimum, binary)                             \
  X(EQUAL, equal, binary)                                 \
  X(NOT_EQUAL, not_equal, binary)                         \
  X(LESS, less, binary)                                   \
  X(LESS_EQUAL, less_equal, binary)                       \
  X(GREATER, greater, binary)                             \
  X(GREATER_EQUAL, greater_equal, binary)                 \
  X(LOGICAL_AND, logical_and, binary)                     \
  X(LOGICAL_OR, logical_or, binary)                       \
  X(ADD_SCALAR, add_scalar, binary)                       \
  X(SUB_SCALAR, sub_scalar, binary)                       \
  X(MUL_SCALAR, mul_scalar, binary)                       \
  X(DIV_SCALAR, div_scalar, binary)                       \
  X(POW_SCALAR, pow_scalar, binary)                       \
  X(MAXIMUM_SCALAR, maximum_scalar, binary)               \
  X(MINIMUM_SCALAR, minimum_scalar, binary)               \
  X(WHERE, where, binary)                                 \
  /* reductions */                                        \
  X(SUM, sum, reduce)                                     \
  X(MEAN, mean, reduce)                                   \
  X(MAX, max, reduce)                                     \
  X(MIN, min, reduce)                                     \
  X(PROD, prod, reduce)                                   \
  X(VAR, var, reduce)                                     \
  X(LOGSUMEXP, logsumexp, reduce)                         \
  X(ARGMAX, argmax, reduce)                               \
  X(ARGMIN, argmin, reduce)                               \
  /* linear algebra */                                    \
  X(MATMUL, matmul, linalg)                               \
  X(LINEAR, linear, linalg)                               \
  /* shape and indexing */                                \
  X(CONCAT, concat, indexing)                             \
  X(STACK, stack, indexing)                               \
  X(SPLIT, split, indexing)                               \
  X(TAKE, take, indexing)                                 \
  X(GATHER, gather, indexing)                             \
  X(ONE_HOT, one_hot, indexing)                           \
  X(PAD, pad, indexing)                                   \
  X(CAST, cast, indexing)                                 \
  /* neural-network ops */                                \
  X(SOFTMAX, softmax, nn)                                 \
  X(LOG_SOFTMAX, log_softmax, nn)                         \
  X(SOFTMAX_CROSS_ENTROPY, softmax_cross_entropy, nn)     \
  X(CONV2D, conv2d, nn)                                   \
  X(MAX_POOL2D, max_pool2d, nn)                           \
  X(AVG_POOL2D, avg_pool2d, nn)                           \
  X(BATCH_NORM, batch_norm, nn)                           \
  X(BATCH_NORM_TRAIN, batch_norm_train, nn)               \
  X(DROPOUT, dropout, nn)                                 \
  /* gradients of the neural-network ops */               \
  X(CONV2D_BACKWARD_DATA, conv2d_backward_data, nn)       \
  X(CONV2D_BACKWARD_WEIGHT, conv2d_backward_weight, nn)   \
  X(MAX_POOL2D_BACKWARD, max_pool2d_backward, nn)         \
  X(AVG_POOL2D_BACKWARD, avg_pool2d_backward, nn)         \
  /* appended after the first release of the list */     \
  X(ERF, erf, unary)
