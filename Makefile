# repcached build, run and test entry points.
CARGO ?= cargo
PREFIX ?= /usr/local
PORT ?= 11211
# memcached's rule, kept by repcached: a root process must name the user to run as.
AS_USER := $(if $(filter 0,$(shell id -u)),-u root,)

.PHONY: build run test test-deps lint bench clean

build:
	$(CARGO) build --release

run: build
	./target/release/repcached -l 127.0.0.1 -p $(PORT) $(AS_USER) $(ARGS)

# The differential tests need the real memcached as the oracle; install it when missing
# (the tests run as root in CI, where apt-get works).
test-deps:
	@command -v memcached >/dev/null 2>&1 || [ -x /usr/bin/memcached ] || { \
	  echo "installing memcached (test oracle)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq memcached; }

test: test-deps
	$(CARGO) test --all-targets --no-fail-fast

# Side-by-side throughput, latency, CPU per op and memory against Debian's memcached
# (docs/BENCHMARKS.md). BENCH_ARGS passes options to bench/run.sh, e.g. --quick.
bench: build test-deps
	bash bench/run.sh $(BENCH_ARGS)

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

clean:
	$(CARGO) clean
