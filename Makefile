# repcached build, run and test entry points.
CARGO ?= cargo
PREFIX ?= /usr/local
PORT ?= 11211
# install/uninstall: DESTDIR stages into another root (packaging); the units expect the
# defaults file under SYSCONFDIR/default and the binary under BINDIR, and are rewritten to
# match when those differ from the .deb's /etc and /usr/bin.
DESTDIR ?=
BINDIR ?= $(PREFIX)/bin
MANDIR ?= $(PREFIX)/share/man
UNITDIR ?= $(PREFIX)/lib/systemd/system
SYSCONFDIR ?= /etc
DEB_DIR ?= target/deb
PKG_VERSION := $(shell sed -n 's/^version = "\(.*\)"$$/\1/p' Cargo.toml | head -n 1)
DEB_ARCH = $(shell dpkg --print-architecture)
# memcached's rule, kept by repcached: a root process must name the user to run as.
AS_USER := $(if $(filter 0,$(shell id -u)),-u root,)

.PHONY: build run test test-deps interop lint bench clean install uninstall deb package-deps package-check

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

# Real clients against real pairs (docs/PHP.md, docs/SCALING.md): PHP sessions through the
# memcache and memcached extensions, pymemcache, Cache::Memcached, the libmemcached tools and
# twemproxy, with nodes killed mid-run. deps.sh installs the clients when missing (as root,
# with apt-get) and fails when it cannot. INTEROP_ARGS names scenarios to run only those.
interop: build
	bash tests/interop/deps.sh
	/usr/bin/python3 tests/interop/run.py $(INTEROP_ARGS)

# Side-by-side throughput, latency, CPU per op and memory against Debian's memcached
# (docs/BENCHMARKS.md). BENCH_ARGS passes options to bench/run.sh, e.g. --quick.
bench: build test-deps
	bash bench/run.sh $(BENCH_ARGS)

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

clean:
	$(CARGO) clean

# Binary, manual page, systemd units and the defaults file. An existing defaults file is
# never overwritten (it holds the node's settings). The repcached user the units run as is
# not created here: adduser --system --group --no-create-home repcached (the .deb does it).
install: build
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(UNITDIR) \
	  $(DESTDIR)$(SYSCONFDIR)/default
	install -m 0755 target/release/repcached $(DESTDIR)$(BINDIR)/repcached
	install -m 0644 man/repcached.1 $(DESTDIR)$(MANDIR)/man1/repcached.1
	for unit in repcached.service repcached@.service; do \
	  sed -e 's|/usr/bin/repcached|$(BINDIR)/repcached|' \
	      -e 's|/etc/default/|$(SYSCONFDIR)/default/|' packaging/$$unit \
	      > $(DESTDIR)$(UNITDIR)/$$unit && chmod 0644 $(DESTDIR)$(UNITDIR)/$$unit || exit 1; \
	done
	@if [ -e $(DESTDIR)$(SYSCONFDIR)/default/repcached ]; then \
	  echo "keeping the existing $(DESTDIR)$(SYSCONFDIR)/default/repcached"; \
	else \
	  install -m 0644 packaging/repcached.default $(DESTDIR)$(SYSCONFDIR)/default/repcached; \
	fi

# Takes back what install put there; the defaults file only if it is still as shipped.
uninstall:
	rm -f $(DESTDIR)$(BINDIR)/repcached $(DESTDIR)$(MANDIR)/man1/repcached.1 \
	  $(DESTDIR)$(UNITDIR)/repcached.service $(DESTDIR)$(UNITDIR)/repcached@.service
	@if cmp -s packaging/repcached.default $(DESTDIR)$(SYSCONFDIR)/default/repcached; then \
	  rm -f $(DESTDIR)$(SYSCONFDIR)/default/repcached; \
	elif [ -e $(DESTDIR)$(SYSCONFDIR)/default/repcached ]; then \
	  echo "keeping the edited $(DESTDIR)$(SYSCONFDIR)/default/repcached"; \
	fi

# A .deb built with dpkg-deb alone (packaging/build-deb.sh says why): $(DEB_DIR)/*.deb.
deb: build
	sh packaging/build-deb.sh target/release/repcached $(DEB_DIR)

# What building and checking the package needs beyond the Rust toolchain: strip/objdump,
# man, systemd-analyze, and adduser for the package's postinst.
package-deps:
	@missing=""; \
	command -v objdump >/dev/null 2>&1 || missing="$$missing binutils"; \
	command -v man >/dev/null 2>&1 || missing="$$missing man-db"; \
	command -v systemd-analyze >/dev/null 2>&1 || missing="$$missing systemd"; \
	command -v adduser >/dev/null 2>&1 || missing="$$missing adduser"; \
	if [ -n "$$missing" ]; then \
	  echo "installing$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

# Builds the .deb, installs it here (root), checks it and removes it again.
package-check: package-deps
	$(MAKE) deb
	bash packaging/check-package.sh $(DEB_DIR)/repcached_$(PKG_VERSION)_$(DEB_ARCH).deb
