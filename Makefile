# stls toolkit: build, test, demo, install, lint, bench.
# Binaries come from cargo; this file only drives it and installs the result.

PREFIX ?= /usr/local
DESTDIR ?=
BINDIR ?= $(PREFIX)/bin
LIBDIR ?= $(PREFIX)/lib
SHIMDIR ?= $(LIBDIR)/stls
MANDIR ?= $(PREFIX)/share/man

CARGO ?= cargo
INSTALL ?= install
MANDOC ?= mandoc

# OpenSSL linked statically: tlsd and tlsc start once per connection, and loading the
# shared libssl/libcrypto (symbol lookup, relocations) was a large part of a handshake's
# CPU (bench/RESULTS.md). It is the system's own libssl.a/libcrypto.a (Debian's
# libssl-dev), with its security updates on rebuild, found where pkg-config says the
# library is, so any architecture's directory works. `make OPENSSL_STATIC=0 ...` links it
# dynamically, as a plain `cargo build` does.
OPENSSL_STATIC ?= 1
export OPENSSL_STATIC
ifneq ($(OPENSSL_STATIC),0)
OPENSSL_LIB_DIR ?= $(shell pkg-config --variable=libdir openssl 2>/dev/null)
OPENSSL_INCLUDE_DIR ?= $(shell pkg-config --variable=includedir openssl 2>/dev/null)
ifneq ($(OPENSSL_LIB_DIR),)
export OPENSSL_LIB_DIR OPENSSL_INCLUDE_DIR
endif
endif

TARGET_DIR := $(if $(CARGO_TARGET_DIR),$(CARGO_TARGET_DIR),target)
# The vendored build (OpenSSL 4.0 from the openssl-src crate, linked statically) goes
# to its own target directory: the same source, another OpenSSL. VENDORED=1 makes
# `make install` install it.
VENDORED_RELEASE := $(TARGET_DIR)/vendored/release
RELEASE := $(if $(VENDORED),$(VENDORED_RELEASE),$(TARGET_DIR)/release)

MAN1 := man/tlsd.1 man/tlsc.1 man/tlsserver.1 man/tlsclient.1 man/ucspitlsd.1 man/ucspitlsc.1
MAN7 := man/stls.7
MAN8 := man/autossl-shim.8
MANS := $(MAN1) $(MAN7) $(MAN8)

.PHONY: all build build-vendored test test-vendored test-vendored-run certs demo install uninstall lint bench clean

all: build

build:
	$(CARGO) build --release --workspace

# OpenSSL 4.0.4 compiled from openssl-src 400.0.3 by vendor/openssl (its own cargo
# workspace, so that `make build` never compiles OpenSSL; cargo compiles it once per
# target directory, about 2.5 minutes here), then the whole workspace linked against it
# statically, into $(VENDORED_RELEASE).
build-vendored:
	set -e; vars=$$(CARGO_TARGET_DIR=$(TARGET_DIR) $(CARGO) run --release -q \
	    --manifest-path vendor/openssl/Cargo.toml); \
	  lib=$$(printf '%s\n' "$$vars" | sed -n 's/^OPENSSL_LIB_DIR=//p'); \
	  inc=$$(printf '%s\n' "$$vars" | sed -n 's/^OPENSSL_INCLUDE_DIR=//p'); \
	  OPENSSL_STATIC=1 OPENSSL_LIB_DIR=$$lib OPENSSL_INCLUDE_DIR=$$inc \
	  CARGO_TARGET_DIR=$(TARGET_DIR)/vendored $(CARGO) build --release --workspace

# The README's test command. The peers first (installed as root on Debian, else named);
# then the build and every test, and the shim's tests again without its pre-started
# helper (AUTOSSL_HELPER=0); then the tests that were skipped, and what would run them.
# The status is cargo's.
SKIP_LOG := $(abspath $(TARGET_DIR))/stls-skips.txt
test:
	tests/install-peers
	mkdir -p $(TARGET_DIR) && rm -f $(SKIP_LOG)
	$(CARGO) build --release --workspace && STLS_SKIP_LOG=$(SKIP_LOG) $(CARGO) test --release --workspace \
	  && AUTOSSL_HELPER=0 STLS_SKIP_LOG=$(SKIP_LOG) $(CARGO) test --release -p stls-tests \
	    --test shim --test shim_soak --test shim_clients; \
	  status=$$?; $(MAKE) --no-print-directory test-vendored-run || status=1; \
	  tests/skipped $(SKIP_LOG); exit $$status

# The same tests on the vendored build, for what the library changes: the handshake and
# the hybrid group with real peers and a browser (pq), tlsd and tlsc (SNI among them), the
# policy and its scans, tickets, the shim. The test programs are the default build's; the
# binaries under test are STLS_BIN_DIR's.
VENDORED_TESTS := --test pq --test tlsd --test tlsc --test policy --test tickets --test shim
test-vendored:
	rm -f $(SKIP_LOG)
	$(MAKE) --no-print-directory test-vendored-run; status=$$?; tests/skipped $(SKIP_LOG); exit $$status

test-vendored-run: build-vendored
	STLS_BIN_DIR=$(abspath $(VENDORED_RELEASE)) STLS_SKIP_LOG=$(SKIP_LOG) \
	  $(CARGO) test --release -p stls-tests $(VENDORED_TESTS)

demo:
	bash demo/run.sh

# A CA and a server certificate to try things with (the README's recipe), in $(CERTDIR).
CERTDIR ?= certs
certs:
	demo/certs $(CERTDIR)

# One binary under the six programs' names: target/release/stls, the multi-call binary
# (multicall/), runs the program its argv[0] names, so the six share one copy of OpenSSL
# and of the engine (about 5.6 MB stripped, against about 5.3 MB for each program alone,
# 32 MB for the six; bench/RESULTS.md). The names are hard links to one file: each is a
# file of its own to ls, ps and /proc/PID/exe, a copy of BINDIR (cp -a, tar) keeps them
# linked, and no seventh name is installed. Stripped (-s): the symbols would make it about
# 15 MB and are not needed to run.
# The shim looks for tlsc and tlsd beside itself first: symbolic links in $(SHIMDIR) point
# at the installed ones, and the name the shim runs them by is the program's.
PROGRAMS := tlsd tlsc tlsserver tlsclient ucspitlsd ucspitlsc
install: $(if $(VENDORED),build-vendored,build)
	$(INSTALL) -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(SHIMDIR) \
	  $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man7 $(DESTDIR)$(MANDIR)/man8
	$(INSTALL) -s -m 755 $(RELEASE)/stls $(DESTDIR)$(BINDIR)/tlsd
	for p in $(filter-out tlsd,$(PROGRAMS)); do \
	  ln -f $(DESTDIR)$(BINDIR)/tlsd $(DESTDIR)$(BINDIR)/$$p || exit 1; done
	$(INSTALL) -s -m 755 $(RELEASE)/libautossl.so $(DESTDIR)$(SHIMDIR)/libautossl.so
	ln -sf $(BINDIR)/tlsc $(DESTDIR)$(SHIMDIR)/tlsc
	ln -sf $(BINDIR)/tlsd $(DESTDIR)$(SHIMDIR)/tlsd
	$(INSTALL) -m 644 $(MAN1) $(DESTDIR)$(MANDIR)/man1/
	$(INSTALL) -m 644 $(MAN7) $(DESTDIR)$(MANDIR)/man7/
	$(INSTALL) -m 644 $(MAN8) $(DESTDIR)$(MANDIR)/man8/

uninstall:
	for p in $(PROGRAMS); do rm -f $(DESTDIR)$(BINDIR)/$$p; done
	rm -f $(DESTDIR)$(SHIMDIR)/libautossl.so $(DESTDIR)$(SHIMDIR)/tlsc $(DESTDIR)$(SHIMDIR)/tlsd
	-rmdir $(DESTDIR)$(SHIMDIR)
	rm -f $(DESTDIR)$(MANDIR)/man1/tlsd.1 $(DESTDIR)$(MANDIR)/man1/tlsc.1
	rm -f $(DESTDIR)$(MANDIR)/man1/ucspitlsd.1 $(DESTDIR)$(MANDIR)/man1/ucspitlsc.1
	rm -f $(DESTDIR)$(MANDIR)/man1/tlsserver.1 $(DESTDIR)$(MANDIR)/man1/tlsclient.1
	rm -f $(DESTDIR)$(MANDIR)/man7/stls.7 $(DESTDIR)$(MANDIR)/man8/autossl-shim.8

# rustfmt, clippy with the workspace's lints, the library's documentation (every public
# item documented, no broken link), the manual pages.
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc -p stls -p stls-desc --no-deps
	$(MANDOC) -T lint -W style $(MANS)

# The benchmarks (bench/RESULTS.md, bench/ratios.svg): root, for the cgroups that count
# each server's CPU; peers from Debian: ucspi-tcp stunnel4 socat hitch openssl valgrind.
# The default build, and beside it the opt-in position-dependent one (STLS_NO_PIE=1,
# see stls/bin-build.rs) as the column tlsd:no-pie, the vendored build (OpenSSL 4.0)
# as the column tlsd:vendored, and the multi-call binary that make install installs,
# run as tlsd and tlsc through links of those names, as the column tlsd:multi.
NOPIE_DIR := $(TARGET_DIR)/no-pie
MULTI_DIR := $(TARGET_DIR)/multi
bench: build build-vendored
	STLS_NO_PIE=1 CARGO_TARGET_DIR=$(NOPIE_DIR) $(CARGO) build --release -p tlsd
	mkdir -p $(MULTI_DIR)
	ln -sf $(abspath $(TARGET_DIR))/release/stls $(MULTI_DIR)/tlsd
	ln -sf $(abspath $(TARGET_DIR))/release/stls $(MULTI_DIR)/tlsc
	bench/run --bin $(TARGET_DIR)/release --variant no-pie=$(NOPIE_DIR)/release \
	  --variant vendored=$(VENDORED_RELEASE) --variant multi=$(MULTI_DIR)

clean:
	$(CARGO) clean
