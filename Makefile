# Thin wrapper over CMake. The two commands the README promises:
#   make run   install what is missing, build, serve the API with the example config
#   make test  install what is missing, build with ASan+UBSan, run every test
.PHONY: all run test install deps deps-test build build-test build-o3 build-tsan bench bench-store bench-http bench-pg bench-reconcile bench-notify fuzz format check-format clean

CONFIG ?= config/pointsgw.example.json
PREFIX ?= /usr/local
JOBS   ?= $(shell nproc 2>/dev/null || echo 2)
# Tests at once: one more than the cores. A third of the machine stood idle
# at -j 2 (tests wait on timeouts, sleeps and PostgreSQL): on this 2-core
# machine ctest took 692 s at -j 2 and 482 s at -j 3, the same 77 passing.
TEST_JOBS ?= $(shell expr $(JOBS) + 1)

all: build

deps:
	@bash scripts/install-deps.sh

# What only the tests (and the PostgreSQL and notification benchmarks) need.
deps-test:
	@bash scripts/install-deps.sh test

# The gateway alone: what make run, make install and the bench targets (which
# add their own) use. Its tests at -O2 were built for no one, 27 of make
# test's seconds: they are built at -O0 with the sanitizers and at -O3.
build: deps
	cmake -S . -B build/release -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	cmake --build build/release -j $(JOBS) --target pointsgw

build-test: deps-test
	cmake -S . -B build/test -DCMAKE_BUILD_TYPE=Debug -DPGW_SANITIZE=ON >/dev/null
	cmake --build build/test -j $(JOBS)

# A packager's build (CMAKE_BUILD_TYPE=Release, -O3) under the same -Werror:
# gcc 12 reports some warnings only when it inlines across functions, which
# -O2 does less; four such errors once hid here until a Release build met them.
build-o3: deps
	cmake -S . -B build/o3 -DCMAKE_BUILD_TYPE=Release >/dev/null
	cmake --build build/o3 -j $(JOBS)

# The unit tests whose code runs on threads of its own, again under
# ThreadSanitizer (ASan excludes it): the writer's writer, syncer and
# checkpoint threads, the notifier's couriers, the outbound pools,
# reconciliation's readers; and the HTTP benchmark's smoke run, the server
# whole under it (a race makes it exit 66, and the smoke fails). It found a
# race in the writer that every other build and test passed.
TSAN_TESTS = test_writer test_command test_notifier test_outbound test_reconcile pointsgw bench_http
TSAN_ONLY  = ^(unit\.(test_writer|test_command|test_notifier|test_outbound|test_reconcile)|bench\.smoke\.http)$$

build-tsan: deps-test
	cmake -S . -B build/tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPGW_TSAN=ON >/dev/null
	cmake --build build/tsan -j $(JOBS) --target $(TSAN_TESTS)

run: build
	./build/release/pointsgw check-config --config $(CONFIG)
	@echo
	@echo "== pointsgw serve: the API on http://127.0.0.1:8080 (Ctrl-C stops it cleanly) =="
	@echo "Try, from another terminal in this directory:"
	@echo "  curl -s -X POST http://127.0.0.1:8080/v1/events -H 'Authorization: Bearer demo-admin-key-change-me' \\"
	@echo "       -H 'Content-Type: application/json' -d @config/demo/event.json"
	@echo "  curl -s http://127.0.0.1:8080/v1/members/M1001 -H 'Authorization: Bearer demo-admin-key-change-me'"
	@echo
	./build/release/pointsgw serve --config $(CONFIG)

# The binary only, where README's systemd unit runs it; the user, folders and
# configuration are the operator's (README: "Operating pointsgw").
install: build
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 755 build/release/pointsgw $(DESTDIR)$(PREFIX)/bin/pointsgw

# The ThreadSanitizer tests run beside the others, one at a time, their
# output kept until the others end: run after them, they were the last
# ~50 s of make test with a core idle while the slowest ones finished.
test: build build-test build-o3 build-tsan check-format
	@cd build/tsan && ctest --output-on-failure -j 1 -R '$(TSAN_ONLY)' >ctest.log 2>&1 & tsan=$$!; \
	(cd build/test && ctest --output-on-failure -j $(TEST_JOBS)); main=$$?; \
	wait $$tsan; tsan_rc=$$?; \
	echo "== ThreadSanitizer: build/tsan"; cat build/tsan/ctest.log; \
	[ $$main -eq 0 ] && [ $$tsan_rc -eq 0 ]

# Benchmarks on this machine (bench/RESULTS.md records what they printed).
bench: bench-store bench-http bench-pg bench-reconcile bench-notify

bench-store: build
	cmake --build build/release --target bench_store -j $(JOBS)
	mkdir -p bench/data
	./build/release/bench_store bench/data $(or $(SECONDS),3)

bench-reconcile: build
	cmake --build build/release --target bench_reconcile -j $(JOBS)
	mkdir -p bench/data
	./build/release/bench_reconcile ./build/release/pointsgw $(CONFIG) bench/data $(or $(ROWS),10000000)

bench-notify: build deps-test
	python3 bench/bench_notify.py ./build/release/pointsgw . $(or $(RATE),1000) $(or $(SECONDS),6)

# The storage and HTTP benchmarks again on a private PostgreSQL cluster.
bench-pg: build deps-test
	cmake --build build/release --target bench_store bench_http -j $(JOBS)
	mkdir -p bench/data
	bash bench/bench_pg.sh build/release $(CONFIG) $(or $(SECONDS),5)

bench-http: build
	cmake --build build/release --target bench_http -j $(JOBS)
	mkdir -p bench/data
	./build/release/bench_http ./build/release/pointsgw $(CONFIG) bench/data $(or $(SECONDS),5)

# libFuzzer on the config and event parsers (needs clang); not part of make test.
fuzz: deps
	bash tests/fuzz/run.sh $(or $(SECONDS),60)

format:
	@bash scripts/format.sh

check-format: deps-test
	@bash scripts/format.sh --check

clean:
	rm -rf build
