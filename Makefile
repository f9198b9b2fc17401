# The README's two commands: `make demo` and `make test`. Both install what
# they need first (scripts/bootstrap.sh, silent when nothing is missing).
BUILD ?= build
JOBS ?= 2

.PHONY: all build demo test bench asan tsan clean

all: build

build:
	@scripts/bootstrap.sh
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release >/dev/null
	@cmake --build $(BUILD) -j$(JOBS) >/dev/null

demo: build
	@$(BUILD)/examples/demo

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

clean:
	rm -rf $(BUILD) build-asan build-tsan build-clang
