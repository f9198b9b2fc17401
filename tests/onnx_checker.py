"""The ONNX checker on the files kiln exports (CTest: onnx_export_checker).

Every .onnx file in the directory given (test_onnx_export writes them) must
pass onnx.checker.check_model with full_check (which includes strict shape
inference) and onnx.shape_inference.infer_shapes with strict_mode, and
declare opset 17. Exits 77 (CTest's skip) when Debian's python3-onnx is not
installed, and fails when the directory holds no file, so a test that stops
writing them cannot pass silently.

`onnx_checker.py --must-fail` is its self-test (CTest expects it to fail): a
model whose node reads a value nothing defines, written to a temporary
directory and checked like the others."""
import os
import sys

try:
    import onnx
except ImportError:
    print("skipped: python3-onnx is not installed (scripts/bootstrap.sh --ci installs it)")
    sys.exit(77)


def broken_model(folder):
    from onnx import TensorProto, helper
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    graph = helper.make_graph([helper.make_node("Relu", ["undefined"], ["y"])], "broken", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, os.path.join(folder, "broken.onnx"))


def main():
    if len(sys.argv) != 2:
        print("usage: onnx_checker.py DIR | --must-fail")
        return 2
    folder = sys.argv[1]
    if folder == "--must-fail":
        import tempfile
        with tempfile.TemporaryDirectory() as tmp:
            broken_model(tmp)
            return check(tmp)
    return check(folder)


def check(folder):
    files = sorted(f for f in os.listdir(folder) if f.endswith(".onnx")) if os.path.isdir(folder) else []
    if not files:
        print(f"no .onnx files in {folder}: test_onnx_export should have written them")
        return 1
    failed = 0
    for name in files:
        path = os.path.join(folder, name)
        try:
            model = onnx.load(path)
            onnx.checker.check_model(model, full_check=True)
            inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
            opsets = {o.domain: o.version for o in model.opset_import}
            if opsets != {"": 17}:
                raise ValueError(f"opset_import is {opsets}, not opset 17 of the default domain")
            outs = [o.name for o in inferred.graph.output]
            print(f"ok {name}: {len(model.graph.node)} nodes, outputs {outs}")
        except Exception as e:  # each failure is printed, the run goes on
            failed += 1
            print(f"FAIL {name}: {type(e).__name__}: {e}")
    print(f"{len(files) - failed} of {len(files)} files pass the ONNX checker (onnx {onnx.__version__})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
