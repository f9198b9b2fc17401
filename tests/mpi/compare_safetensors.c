/* compare_safetensors A B RTOL ATOL: exits 0 when both files hold the same
 * names, dtypes and shapes and every value is within atol + rtol * |b|;
 * otherwise prints the first difference and exits 1 (2 on usage or I/O). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kiln.h"

int main(int argc, char **argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: compare_safetensors A B RTOL ATOL\n");
    return 2;
  }
  double rtol = atof(argv[3]), atol = atof(argv[4]);
  int na, nb;
  char **names_a, **names_b;
  kiln_tensor **a, **b;
  if (kiln_load_safetensors(argv[1], &na, &names_a, &a) != KILN_OK ||
      kiln_load_safetensors(argv[2], &nb, &names_b, &b) != KILN_OK) {
    fprintf(stderr, "compare_safetensors: %s\n", kiln_last_error());
    return 2;
  }
  int rc = 0;
  double worst = 0;
  if (na != nb) {
    printf("%d tensors in %s, %d in %s\n", na, argv[1], nb, argv[2]);
    rc = 1;
  }
  for (int i = 0; i < na && !rc; i++) {
    int j = 0;
    while (j < nb && strcmp(names_a[i], names_b[j])) j++;
    if (j == nb || kiln_tensor_numel(a[i]) != kiln_tensor_numel(b[j])) {
      printf("%s: missing or of another size in %s\n", names_a[i], argv[2]);
      rc = 1;
      break;
    }
    int64_t n = kiln_tensor_numel(a[i]);
    double *x = malloc(sizeof(double) * (size_t)(n ? n : 1)), *y = malloc(sizeof(double) * (size_t)(n ? n : 1));
    kiln_tensor *ca = kiln_cast(a[i], KILN_F64), *cb = kiln_cast(b[j], KILN_F64);
    if (!x || !y || kiln_tensor_copy_to(ca, x, sizeof(double) * (size_t)n) != KILN_OK ||
        kiln_tensor_copy_to(cb, y, sizeof(double) * (size_t)n) != KILN_OK) {
      fprintf(stderr, "compare_safetensors: %s: %s\n", names_a[i], kiln_last_error());
      return 2;
    }
    for (int64_t k = 0; k < n; k++) {
      double diff = fabs(x[k] - y[k]);
      if (diff > worst) worst = diff;
      if (!(diff <= atol + rtol * fabs(y[k]))) {
        printf("%s[%lld]: %.9g vs %.9g (|diff| %.3g > %.3g + %.3g * |b|)\n", names_a[i], (long long)k, x[k], y[k], diff,
               atol, rtol);
        rc = 1;
        break;
      }
    }
    kiln_tensor_release(ca);
    kiln_tensor_release(cb);
    free(x);
    free(y);
  }
  if (!rc) printf("%d tensors equal within rtol %g, atol %g (largest |diff| %.3g)\n", na, rtol, atol, worst);
  kiln_named_tensors_free(na, names_a, a);
  kiln_named_tensors_free(nb, names_b, b);
  return rc;
}
