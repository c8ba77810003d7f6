# Two commands do all the setup: `make demo` and `make test`.
BUILD_DIR ?= build
JOBS ?= $(shell nproc)

.PHONY: all setup configure build demo test bench fuzz clean

all: build

setup:
	@scripts/bootstrap

configure: setup
	@cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null

build: configure
	@cmake --build $(BUILD_DIR) -j $(JOBS)

demo: build
	@scripts/demo $(BUILD_DIR)

test: build
	@cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS)

bench: build
	@$(BUILD_DIR)/bench/forward_bench
	@$(BUILD_DIR)/bench/program_bench
	@$(BUILD_DIR)/bench/ablation_bench
	@LENSGRID_BINARY_DIR=$(BUILD_DIR) $(BUILD_DIR)/bench/worker_bench
	@$(BUILD_DIR)/bench/attribution_bench
	@LENSGRID_BINARY_DIR=$(BUILD_DIR) $(BUILD_DIR)/bench/shard_reuse_bench
	@$(BUILD_DIR)/bench/circuit_bench
	@$(BUILD_DIR)/bench/tokenizer_bench
	@$(BUILD_DIR)/bench/coordinator_bench
	@$(BUILD_DIR)/bench/coordinator_scale_bench --pin --work-ms 400
	@$(BUILD_DIR)/bench/coordinator_memory_bench
	@/usr/bin/python3 bench/coordinator_share.py $(BUILD_DIR)
	@/usr/bin/python3 bench/acdc_local_bench.py $(BUILD_DIR)

# The fuzz targets of tests/fuzz/ (ASan + UBSan), each for FUZZ_SECONDS from a
# fresh seed; `make test` runs them briefly.
FUZZ_SECONDS ?= 120
fuzz: configure
	@cmake --build $(BUILD_DIR) -j $(JOBS) --target fuzz_targets
	@FUZZ_SECONDS=$(FUZZ_SECONDS) $(BUILD_DIR)/tests/fuzz/run_fuzz.sh

clean:
	rm -rf $(BUILD_DIR)
