# The README's two commands: `make demo` and `make test`. Both install what
# they need first (scripts/bootstrap.sh, silent when nothing is missing).
BUILD ?= build
JOBS ?= 2

.PHONY: all build demo test bench asan tsan fuzz clean

FUZZ_SECONDS ?= 30
# The ONNX fuzzer's seeds: a few conformance models (libonnx-testdata,
# installed by bootstrap --ci) besides the malformed corpus.
ONNX_NODE_TESTS = /usr/share/libonnx-testdata/data/node
ONNX_SEEDS = test_relu test_gemm_all_attributes test_conv_with_strides_padding test_maxpool_2d_pads \
	test_reshape_reordered_all_dims test_softmax_axis_1 test_batchnorm_epsilon test_concat_2d_axis_0 \
	test_split_variable_parts_1d test_reduce_sum_keepdims_example test_gather_0 test_slice

all: build

build:
	@scripts/bootstrap.sh
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release >/dev/null
	@cmake --build $(BUILD) -j$(JOBS) >/dev/null

demo: build
	@$(BUILD)/examples/demo --out $(BUILD)/demo

test: build
	@ctest --test-dir $(BUILD) --output-on-failure -j$(JOBS)

# `make bench` runs every benchmark; `make bench B=gemm` one of them.
bench:
	@scripts/bootstrap.sh --bench
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release >/dev/null
	@cmake --build $(BUILD) -j$(JOBS) >/dev/null
	@bench/run.sh $(BUILD) $(B)

asan:
	@scripts/bootstrap.sh
	@cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DKILN_SANITIZE=ON -DKILN_BUILD_BENCH=OFF >/dev/null
	@cmake --build build-asan -j$(JOBS) >/dev/null
	@ctest --test-dir build-asan --output-on-failure -j$(JOBS)

tsan:
	@scripts/bootstrap.sh
	@cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=Debug -DKILN_TSAN=ON -DKILN_BUILD_BENCH=OFF >/dev/null
	@cmake --build build-tsan -j$(JOBS) >/dev/null
	@ctest --test-dir build-tsan --output-on-failure -j$(JOBS)

# Each fuzz target for FUZZ_SECONDS from the committed seeds; new inputs go
# to a scratch corpus, so the tree stays clean.
fuzz:
	@scripts/bootstrap.sh --ci
	@CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=Debug -DKILN_FUZZ=ON -DKILN_BUILD_TESTS=OFF \
		-DKILN_BUILD_BENCH=OFF -DKILN_BUILD_EXAMPLES=OFF >/dev/null
	@cmake --build build-fuzz -j$(JOBS) >/dev/null
	@mkdir -p build-fuzz/corpus-npy
	@build-fuzz/tests/fuzz/fuzz_npy -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
		build-fuzz/corpus-npy tests/fixtures tests/fixtures/bad_npy >build-fuzz/fuzz_npy.log 2>&1 \
		|| { tail -40 build-fuzz/fuzz_npy.log; exit 1; }
	@grep -E "stat::number_of_executed_units|stat::new_units_added" build-fuzz/fuzz_npy.log
	@mkdir -p build-fuzz/corpus-idx
	@build-fuzz/tests/fuzz/fuzz_idx -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
		build-fuzz/corpus-idx tests/fixtures/idx_seeds tests/fixtures/bad_idx >build-fuzz/fuzz_idx.log 2>&1 \
		|| { tail -40 build-fuzz/fuzz_idx.log; exit 1; }
	@grep -E "stat::number_of_executed_units|stat::new_units_added" build-fuzz/fuzz_idx.log
	@mkdir -p build-fuzz/corpus-safetensors
	@build-fuzz/tests/fuzz/fuzz_safetensors -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
		build-fuzz/corpus-safetensors tests/fixtures/safetensors tests/fixtures/bad_safetensors \
		>build-fuzz/fuzz_safetensors.log 2>&1 || { tail -40 build-fuzz/fuzz_safetensors.log; exit 1; }
	@grep -E "stat::number_of_executed_units|stat::new_units_added" build-fuzz/fuzz_safetensors.log
	@mkdir -p build-fuzz/corpus-json
	@build-fuzz/tests/fuzz/fuzz_json -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
		build-fuzz/corpus-json tests/fixtures/json_seeds >build-fuzz/fuzz_json.log 2>&1 \
		|| { tail -40 build-fuzz/fuzz_json.log; exit 1; }
	@grep -E "stat::number_of_executed_units|stat::new_units_added" build-fuzz/fuzz_json.log
	@mkdir -p build-fuzz/corpus-model
	@build-fuzz/tests/fuzz/fuzz_model -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
		-dict=tests/fuzz/fuzz_model.dict build-fuzz/corpus-model tests/fixtures/model_seeds tests/fixtures/bad_model \
		>build-fuzz/fuzz_model.log 2>&1 || { tail -40 build-fuzz/fuzz_model.log; exit 1; }
	@grep -E "stat::number_of_executed_units|stat::new_units_added" build-fuzz/fuzz_model.log
	@mkdir -p build-fuzz/corpus-onnx build-fuzz/seeds-onnx
	@for t in $(ONNX_SEEDS); do cp -f $(ONNX_NODE_TESTS)/$$t/model.onnx build-fuzz/seeds-onnx/$$t.onnx; done
	@build-fuzz/tests/fuzz/fuzz_onnx -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
		build-fuzz/corpus-onnx build-fuzz/seeds-onnx tests/fixtures/bad_onnx >build-fuzz/fuzz_onnx.log 2>&1 \
		|| { tail -40 build-fuzz/fuzz_onnx.log; exit 1; }
	@grep -E "stat::number_of_executed_units|stat::new_units_added" build-fuzz/fuzz_onnx.log

clean:
	rm -rf $(BUILD) build-asan build-tsan build-clang build-fuzz
