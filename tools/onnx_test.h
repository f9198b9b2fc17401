/* `kiln onnx-test DIR` (tools/onnx_test.c), called by tools/kiln.c. */
#ifndef KILN_TOOLS_ONNX_TEST_H
#define KILN_TOOLS_ONNX_TEST_H

extern const char onnx_test_help[];
int onnx_test_main(int argc, char **argv);

#endif
