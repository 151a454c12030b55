# The two commands: `make demo` and `make test`. Both install what is missing and build first.
BUILD_DIR ?= build
JOBS ?= $(shell nproc)
CTEST_ARGS ?=

.PHONY: all deps configure build test test-unit sanitize demo bench deb clean

all: build

deps:
	@./scripts/deps.sh

$(BUILD_DIR)/build.ninja: CMakeLists.txt
	cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo

configure: deps $(BUILD_DIR)/build.ninja

build: configure
	cmake --build $(BUILD_DIR) -j $(JOBS)

test: build
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS) $(CTEST_ARGS)

test-unit: build
	cd $(BUILD_DIR) && ctest --output-on-failure -L unit -j $(JOBS)

# ASan+UBSan over every test, then TSan over the agent and controller tests; fails on any report.
# Own build dirs (build-asan, build-tsan); see scripts/sanitize.sh.
sanitize: deps
	JOBS=$(JOBS) CTEST_ARGS="$(CTEST_ARGS)" ./scripts/sanitize.sh

demo: build
	./scripts/demo.sh

bench: build
	./scripts/bench.sh

# Debian packages (upkeep-controller, upkeep-agent, upkeepctl) in $(BUILD_DIR)/packages.
deb: build
	cd $(BUILD_DIR) && cpack -G DEB -B packages

clean:
	rm -rf $(BUILD_DIR) build-asan build-tsan
