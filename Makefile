# moe-cluster: one entry point for installing, building, testing and running.
#
#   make run    install what is missing, build, start the demo and generate
#   make test   install what is missing, build, run the whole test suite
#   make bench  build and run the benchmarks (report in build/bench/report.json)

BUILD_DIR ?= build
BUILD_TYPE ?= Release
JOBS ?= $(shell nproc)
DEMO_DIR ?= $(BUILD_DIR)/demo/model
DEMO_PROMPT ?= 1,15,27,300,42,7
DEMO_TOKENS ?= 24

.PHONY: all deps configure build test run bench clean

all: build

deps:
	@tools/install_deps.sh

configure: deps
	@mkdir -p $(BUILD_DIR) && cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) > $(BUILD_DIR)/configure.log 2>&1 \
	  || { cat $(BUILD_DIR)/configure.log; exit 1; }

build: configure
	@cmake --build $(BUILD_DIR) -j$(JOBS)

test: build
	@cd $(BUILD_DIR) && ctest --output-on-failure -j$(JOBS)

# A small generated Mixtral-family model, then a generation with the
# single-process engine (the local cluster replaces this once it lands).
run: build
	@if [ ! -f $(DEMO_DIR)/config.json ]; then \
	  $(BUILD_DIR)/bin/moe-mkmodel --out $(DEMO_DIR) --family mixtral \
	    --hidden 256 --layers 4 --heads 8 --kv_heads 2 --vocab 4096 \
	    --experts 8 --top_k 2 --expert_intermediate 512 --seed 7; \
	fi
	$(BUILD_DIR)/bin/moe-generate --model $(DEMO_DIR) --prompt_ids $(DEMO_PROMPT) \
	  --max_tokens $(DEMO_TOKENS) --temperature 0.8 --top_p 0.95 --seed 1

bench: build
	@mkdir -p $(BUILD_DIR)/bench
	$(BUILD_DIR)/bin/moe-bench --report $(BUILD_DIR)/bench/report.json \
	  --model_cache $(BUILD_DIR)/bench/models/mixtral-bench

clean:
	rm -rf $(BUILD_DIR)
