# Thin wrapper over CMake. The two commands the README promises:
#   make run   install what is missing, build, run what exists on the example config
#              (the HTTP server is not built yet: see README "Status")
#   make test  install what is missing, build with ASan+UBSan, run every test
.PHONY: all run test deps build build-test bench fuzz format check-format clean

CONFIG ?= config/pointsgw.example.json
JOBS   ?= $(shell nproc 2>/dev/null || echo 2)

all: build

deps:
	@bash scripts/install-deps.sh

build: deps
	cmake -S . -B build/release -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	cmake --build build/release -j $(JOBS)

build-test: deps
	cmake -S . -B build/test -DCMAKE_BUILD_TYPE=Debug -DPGW_SANITIZE=ON >/dev/null
	cmake --build build/test -j $(JOBS)

run: build
	./build/release/pointsgw check-config --config $(CONFIG)
	@echo
	@echo "== pointsgw quote: a Wednesday sale of 128.00 yuan at S001 by a gold member =="
	./build/release/pointsgw quote --config $(CONFIG) --event config/demo/purchase.json \
	    --context config/demo/member.json
	@echo
	@echo "pointsgw serve is not built yet (no durable log or HTTP server); see README \"Status\"."

test: build build-test check-format
	cd build/test && ctest --output-on-failure -j $(JOBS)

# Storage benchmark on this disk (bench/RESULTS.md records what it printed).
bench: build
	cmake --build build/release --target bench_store -j $(JOBS)
	mkdir -p bench/data
	./build/release/bench_store bench/data $(or $(SECONDS),3)

# libFuzzer on the config and event parsers (needs clang); not part of make test.
fuzz: deps
	bash tests/fuzz/run.sh $(or $(SECONDS),60)

format:
	@bash scripts/format.sh

check-format: deps
	@bash scripts/format.sh --check

clean:
	rm -rf build
