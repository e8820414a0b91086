# ha-balancer: set-up, build, test and demo entry points.
#
#   make test        install what is missing, build everything, run all tests
#   make demo        build nginx with the module and run scripts/demo.sh
#   make demo-dns    the same with servers from DNS SRV records (Consul style):
#                    backends join and leave through DNS (scripts/demo-dns.sh)
#   make nginx       target/nginx/sbin/nginx + modules/<module>.so (vendored nginx)
#   make module NGINX_SRC=DIR [NGINX_CONF_ARGS="..."]
#                    only the .so, against your nginx source tree
#   make debian-module   the .so for Debian's packaged nginx (nginx-dev)
#   make deb         target/deb/libnginx-mod-http-upstream-ha_<version>_<arch>.deb,
#                    that .so as a Debian package, and target/deb/hab_<version>_<arch>.deb,
#                    the hab CLI with its manual pages (make deb-check tests both)
#   make check-alerts  the Prometheus alerts of contrib/prometheus/: promtool
#                    check rules and their unit tests (part of make test)
#   make check       the quick loop: fmt, clippy, unit tests (no nginx),
#                    the crash-point tests, Miri (make miri)
#   make asan        nginx + module with AddressSanitizer, then the end-to-end
#                    tests against them (docs/sanitizers.md; part of make test);
#                    ASAN_TESTS="e2e_policies ..." for some of them only; the
#                    reports land in /tmp/hab-asan-<hash of the checkout path>/logs
#   make valgrind    the end-to-end tests with nginx under valgrind memcheck
#                    (docs/sanitizers.md; not part of make test)
#   make soak        reloads, worker kills and failing backends under wrk, ours
#                    beside stock nginx (scripts/soak.sh, about 5 min; docs/soak.md)
#   make soak-short  the same in about 35 s (part of make test)
#   make bench-proxy whole-process benchmarks: stock nginx, HAProxy and every
#                    ha_balance policy side by side under wrk, tables and plots
#                    written to docs/bench-proxy.md (about 30 min, the sticky scenario included)
#   make bench-queue ha_queue's wake-up latency beside stock nginx, idle and
#                    under stress-ng (scripts/bench-queue-wake.py, about 4 min)
#   make bench | clean

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.ONESHELL:
.NOTPARALLEL:

CARGO ?= cargo
JOBS ?= 2

MODULE := ngx_http_upstream_ha_module
MODULE_DIR := $(CURDIR)/nginx-module
TARGET := $(CURDIR)/target

NGX_SRC := $(TARGET)/nginx-src
NGX_BUILD := $(TARGET)/nginx-build
NGX_PREFIX := $(TARGET)/nginx
NGX_CONFIGURE_ARGS := --prefix=$(NGX_PREFIX) --with-compat \
	--with-http_ssl_module --with-http_stub_status_module \
	--with-threads --with-debug \
	--with-stream --with-stream_ssl_module \
	--add-dynamic-module=$(MODULE_DIR) --builddir=$(NGX_BUILD)

# AddressSanitizer build of the same nginx and module (make asan,
# docs/sanitizers.md): own prefix and build directory, the same other
# configure arguments.  NGX_DEBUG_PALLOC makes every pool allocation its own
# malloc, so ASan sees overruns of pool memory too.
ASAN_DIR := $(TARGET)/asan
ASAN_PREFIX := $(ASAN_DIR)/nginx
ASAN_BUILD := $(TARGET)/asan-build
ASAN_CC_OPT := -fsanitize=address -fno-omit-frame-pointer -g -O1 -DNGX_DEBUG_PALLOC=1
# -z nodelete: the .so stays mapped after nginx's dlclose() at exit, so
# LeakSanitizer (which reports at exit) can name the module's frames.
ASAN_LD_OPT := -fsanitize=address -Wl,-z,nodelete
ASAN_CONFIGURE_ARGS := \
	$(patsubst --builddir=%,--builddir=$(ASAN_BUILD),\
	$(patsubst --prefix=%,--prefix=$(ASAN_PREFIX),$(NGX_CONFIGURE_ARGS)))
# Where the ASan nginx's processes read their suppressions and write their
# reports, and the copy of the module the tests load: a directory of /tmp,
# one per checkout (a hash of its path), which make asan creates afresh each
# run (owned by whoever runs it, 0755; its logs/ 1777).  Not under target/:
# the workers run as user nobody, and a checkout in a private directory
# (mktemp -d makes them 0700) keeps them out of everything below it, while
# an exiting worker reads the LeakSanitizer suppressions, writes its report
# and reads the .so to name the module's frames in it.  The same reason puts
# the tests' state files under the system's temporary directory
# (testkit/src/nginx.rs, state_file()).
ASAN_RUN := /tmp/hab-asan-$(shell printf '%s' '$(CURDIR)' | sha256sum | cut -c1-12)
ASAN_LOGS := $(ASAN_RUN)/logs
# The end-to-end tests make asan runs (names of tests/*.rs), all by default;
# e.g. make asan ASAN_TESTS=e2e_policies.
ASAN_TESTS ?= $(patsubst tests/%.rs,%,$(wildcard tests/e2e_*.rs))
# Compiled into the ASan nginx (__asan_default_options and
# __lsan_default_options), not passed in the environment: nginx execs a
# binary upgrade (USR2) with only TZ and its `env` variables.  Every report
# goes to a file of $(ASAN_LOGS); the suppressions are make asan's copies of
# scripts/asan.supp and scripts/lsan.supp in $(ASAN_RUN).
# exitcode=0: a verdict is its report file, which make asan judges; so that
# LeakSanitizer's own occasional tracer crash at the exit of nginx's
# daemonizing parent ("LeakSanitizer has encountered a fatal error", not a
# finding) does not make that start fail.
ASAN_DEFAULT_OPTIONS := log_path=$(ASAN_LOGS)/asan:suppressions=$(ASAN_RUN)/asan.supp:exitcode=0
LSAN_DEFAULT_OPTIONS := suppressions=$(ASAN_RUN)/lsan.supp:print_suppressions=0
# Recipe lines: $(ASAN_RUN) afresh, with the suppressions and an empty
# logs/.  rm removes whatever was there (a symbolic link itself, not its
# target; in sticky /tmp only its owner or root can), and mkdir without -p
# fails unless it makes the directory, so nothing left by another run or
# user is read or written.  Every program linked with the options reads
# the suppressions when it starts and stops if it cannot (with exit code
# 0): configure's test programs too, so asan-nginx needs them as well.
define ASAN_RUN_FRESH
rm -rf $(ASAN_RUN)
mkdir -m 0755 $(ASAN_RUN)
install -m 0644 $(CURDIR)/scripts/asan.supp $(CURDIR)/scripts/lsan.supp $(ASAN_RUN)/
# world-writable: the workers (user nobody) write their reports there
mkdir -m 1777 $(ASAN_LOGS)
endef

DEBIAN_SRC := /usr/share/nginx/src
DEBIAN_BUILD := $(TARGET)/debian-build
DEB_DIR := $(TARGET)/deb
DEB_SCRIPT := CARGO="$(CARGO)" NGINX_BIN=/usr/sbin/nginx \
	DEB_ABI_FILE=$(DEBIAN_SRC)/debian/libnginx-mod.abisubstvars scripts/deb.sh

# bind9, bind9-dnsutils: the DNS server of the service discovery tests
# (testkit/src/dns.rs: named, changed at run time with nsupdate; dig);
# lintian: make deb-check lints both packages;
# python3-grpcio: the gRPC health server of the gRPC check tests
# (testkit/src/grpc_health.py, run with Debian's /usr/bin/python3)
DEB_PACKAGES := gcc make libc6-dev dpkg-dev libclang-dev libpcre2-dev \
	zlib1g-dev libssl-dev openssl curl nginx-dev nginx-core \
	chromium chromium-driver prometheus wrk valgrind bind9 bind9-dnsutils \
	lintian python3-grpcio

.PHONY: miri
.PHONY: all deps nginx module debian-module debian-module-check deb deb-check \
	check-exports check-alerts check test soak soak-short demo demo-dns bench bench-proxy bench-queue clean \
	asan asan-nginx \
	valgrind

all: nginx

# Shell function for recipes: configure_once BUILD_DIR COMMAND...
# runs COMMAND unless BUILD_DIR/Makefile was made by the same command line
# in the same directory, from the same module config and nginx version.
define CONFIGURE_ONCE
configure_once() {
	local build=$$1 key; shift
	key=$$(printf '%s\n' "$$PWD" "$$@"; cat $(MODULE_DIR)/config* src/core/nginx.h | cksum)
	if [ -f "$$build/Makefile" ] && [ "$$(cat "$$build/.configured" 2>/dev/null)" = "$$key" ]; then
		echo "$$build: configure is up to date"
		return
	fi
	"$$@"
	printf '%s\n' "$$key" > "$$build/.configured"
}
endef

# Debian 12's NGINX Prometheus exporter (tests/e2e_plus_api.rs,
# docs/plus-api-design.md): the package downloaded and unpacked into
# $(EXPORTER_DIR), never installed (installing it starts a service on :9113).
EXPORTER_VERSION := 0.11.0-1+b4
EXPORTER_DIR := $(TARGET)/deps/exporter
EXPORTER := $(EXPORTER_DIR)/usr/bin/prometheus-nginx-exporter

deps:
	@missing=
	# dpkg-query, not "dpkg -s | grep -q": under pipefail grep's early exit
	# kills dpkg with SIGPIPE and an installed package looked missing
	for p in $(DEB_PACKAGES) $(EXTRA_PACKAGES); do
		[ "$$(dpkg-query -W -f='$${Status}' "$$p" 2>/dev/null)" = "install ok installed" ] \
			|| missing="$$missing $$p"
	done
	if [ -n "$$missing" ]; then
		echo "installing:$$missing"
		nginx_pids() {
			for d in /proc/[0-9]*; do
				[ "$$(cat "$$d/comm" 2>/dev/null)" != nginx ] || echo "$${d#/proc/}"
			done
		}
		before=" $$(nginx_pids | tr '\n' ' ')"
		# policy-rc.d exiting 101 keeps the packages from starting nginx,
		# prometheus and named
		policy=/usr/sbin/policy-rc.d
		[ ! -e $$policy ] || mv $$policy $$policy.hab-saved
		trap "rm -f $$policy; [ ! -e $$policy.hab-saved ] || mv $$policy.hab-saved $$policy" EXIT
		printf '#!/bin/sh\nexit 101\n' > $$policy
		chmod 755 $$policy
		export DEBIAN_FRONTEND=noninteractive
		apt-get update
		apt-get install -y --no-install-recommends $$missing
		started=
		for pid in $$(nginx_pids); do
			[[ "$$before" == *" $$pid "* ]] || started="$$started $$pid"
		done
		if [ -n "$$started" ]; then
			echo "stopping nginx started by the install:$$started"
			systemctl stop nginx 2>/dev/null || kill $$started 2>/dev/null || true
		fi
	fi
	if [ ! -x $(EXPORTER) ]; then
		export DEBIAN_FRONTEND=noninteractive
		pkg=prometheus-nginx-exporter
		candidate() { apt-cache policy $$pkg | awk '$$1 == "Candidate:" { print $$2 }'; }
		[ -n "$$(candidate)" ] && [ "$$(candidate)" != "(none)" ] || apt-get update
		version=$(EXPORTER_VERSION)
		if ! apt-cache show "$$pkg=$$version" >/dev/null 2>&1; then
			version=$$(candidate)
			[ -n "$$version" ] && [ "$$version" != "(none)" ] \
				|| { echo "apt has no $$pkg" >&2; exit 1; }
			echo "$$pkg $(EXPORTER_VERSION) is not in apt; taking $$version" >&2
		fi
		rm -rf $(EXPORTER_DIR) $(EXPORTER_DIR).download
		# world-writable: apt downloads as its own user (_apt)
		mkdir -p -m 1777 $(EXPORTER_DIR).download
		(cd $(EXPORTER_DIR).download && apt-get download "$$pkg=$$version")
		dpkg -x $(EXPORTER_DIR).download/$${pkg}_*.deb $(EXPORTER_DIR)
		rm -rf $(EXPORTER_DIR).download
	fi
	echo "$(EXPORTER): $$($(EXPORTER) -version 2>&1 | sed -n 1p)"
	$(CARGO) fetch

# Vendored nginx (crate nginx-src) built with the module into target/nginx.
# The nginx make drives cargo, so a Rust change relinks the .so.
nginx:
	@$(CARGO) fetch
	src=$$($(CARGO) metadata --format-version 1 | grep -oE '"(id|manifest_path)":"[^"]*"' \
		| awk -F'"' '$$2 == "id" { id = $$4; next }
			id ~ /(^|[#\/])nginx-src([@# ]|$$)/ && !n++ { print $$4 }')
	src=$${src%/Cargo.toml}/nginx
	[ -f "$$src/auto/configure" ] || { echo "no nginx source in $$src" >&2; exit 1; }
	if [ "$$(cat $(NGX_SRC)/.origin 2>/dev/null)" != "$$src" ]; then
		echo "copying $$src to $(NGX_SRC)"
		rm -rf $(NGX_SRC) $(NGX_BUILD)
		mkdir -p $(NGX_SRC)
		cp -R "$$src/." $(NGX_SRC)
		echo "$$src" > $(NGX_SRC)/.origin
	fi
	$(CONFIGURE_ONCE)
	cd $(NGX_SRC)
	configure_once $(NGX_BUILD) auto/configure $(NGX_CONFIGURE_ARGS)
	# install builds first
	$(MAKE) -C $(NGX_SRC) -f $(NGX_BUILD)/Makefile -j$(JOBS) install

# Only the .so, against any nginx source tree (configure writes DIR/Makefile,
# as nginx always does).  Add the flags of your nginx binary (nginx -V) that
# matter for binary compatibility with NGINX_CONF_ARGS.
module:
	@[ -n "$(NGINX_SRC)" ] || { echo "usage: make module NGINX_SRC=DIR" >&2; exit 1; }
	build=$(TARGET)/module-build
	$(CONFIGURE_ONCE)
	cd $(abspath $(NGINX_SRC))
	if [ -x configure ]; then configure=./configure; else configure=auto/configure; fi
	configure_once $$build $$configure --with-compat $(NGINX_CONF_ARGS) \
		--add-dynamic-module=$(MODULE_DIR) --builddir=$$build
	$(MAKE) -f $$build/Makefile -j$(JOBS) modules
	install -D -m 644 $$build/$(MODULE).so $(TARGET)/module/$(MODULE).so
	echo "built $(TARGET)/module/$(MODULE).so"

# Debian's recipe (Debian::Debhelper::Buildsystem::nginx_mod), with the
# hardening=+all that nginx's debian/rules exports: its LDFLAGS add
# -Wl,-z,now to -Wl,-z,relro, so the .so is linked BIND_NOW as Debian's own
# modules are (its CFLAGS are the same as without it).
debian-module:
	@$(CONFIGURE_ONCE)
	cd $(DEBIAN_SRC)
	. ./conf_flags
	configure_once $(DEBIAN_BUILD) ./configure \
		--with-cc-opt="$$(dpkg-buildflags --get CFLAGS) -fPIC $$(dpkg-buildflags --get CPPFLAGS)" \
		--with-ld-opt="$$(DEB_BUILD_MAINT_OPTIONS=hardening=+all dpkg-buildflags --get LDFLAGS) -fPIC" \
		"$${NGX_CONF_FLAGS[@]}" \
		--add-dynamic-module=$(MODULE_DIR) --builddir=$(DEBIAN_BUILD)
	$(MAKE) -f $(DEBIAN_BUILD)/Makefile -C $(DEBIAN_SRC) -j$(JOBS) modules
	install -D -m 644 $(DEBIAN_BUILD)/$(MODULE).so $(TARGET)/debian/$(MODULE).so
	echo "built $(TARGET)/debian/$(MODULE).so"

# The .so must load into Debian's own /usr/sbin/nginx.
debian-module-check: debian-module
	@tmp=$$(mktemp -d)
	trap 'rm -rf "$$tmp"' EXIT
	cat > "$$tmp/nginx.conf" <<-EOF
		load_module $(TARGET)/debian/$(MODULE).so;
		pid $$tmp/nginx.pid;
		error_log stderr;
		events {}
		http {
		    access_log off;
		    client_body_temp_path $$tmp/body;
		    proxy_temp_path $$tmp/proxy;
		    fastcgi_temp_path $$tmp/fastcgi;
		    uwsgi_temp_path $$tmp/uwsgi;
		    scgi_temp_path $$tmp/scgi;
		    upstream app {
		        ha_balance round_robin;
		        server 127.0.0.1:1 max_fails=2 fail_timeout=5s;
		        server 127.0.0.1:2 backup;
		    }
		    server {
		        listen 127.0.0.1:1;
		        location / { proxy_pass http://app; }
		    }
		}
	EOF
	/usr/sbin/nginx -e stderr -t -p "$$tmp" -c "$$tmp/nginx.conf"

# The Debian package of that .so, laid out as Debian's libnginx-mod-*
# packages, and the package of hab (built by cargo, release), with manual
# pages and completions from cli/examples/gen_docs.rs (scripts/deb.sh,
# packaging/deb/); and their test: contents and metadata, nginx -t on the
# unpacked .so, the maintainer scripts in a scratch root, the unpacked hab's
# pages, completion and hab status against Debian's nginx running the
# unpacked .so, a reproducible rebuild, lintian if installed.
deb: debian-module
	@$(DEB_SCRIPT) build $(TARGET)/debian/$(MODULE).so $(DEB_DIR)

deb-check: deb
	@$(DEB_SCRIPT) check $(TARGET)/debian/$(MODULE).so $(DEB_DIR)

# Each .so exports only nginx's module symbols (see nginx-module/config),
# and refers to the stream core only weakly ("w" in nm -D, never "U":
# nginx-module/ngx_stream_upstream_ha_weak.h), so that it loads into an
# nginx without stream (docs/stream-design.md, section 2).
check-exports:
	@for so in $(NGX_PREFIX)/modules/$(MODULE).so $(TARGET)/debian/$(MODULE).so; do
		bad=$$(nm -D --defined-only "$$so" | awk '{ print $$3 }' \
			| grep -Ev '^(ngx_.*|_init|_fini|__bss_start|_edata|_end)$$' || true)
		[ -z "$$bad" ] || { echo "$$so exports:" $$bad >&2; exit 1; }
		bad=$$(nm -D --undefined-only "$$so" | awk '$$1 == "U" && $$2 ~ /^ngx_stream_/ { print $$2 }')
		[ -z "$$bad" ] || { echo "$$so: not weak (add to ngx_stream_upstream_ha_weak.h):" $$bad >&2; exit 1; }
		nm -D --defined-only "$$so" | awk '$$3 == "ngx_stream_upstream_ha_module" { ok = 1 } END { exit !ok }' \
			|| { echo "$$so: no ngx_stream_upstream_ha_module" >&2; exit 1; }
		echo "$$so: exports ok, stream references weak:" \
			$$(nm -D --undefined-only "$$so" | awk '$$2 ~ /^ngx_stream_/ { print $$2 }')
	done

# The alerting rules shipped in contrib/prometheus/ (and in the module's
# package): promtool's syntax check, then their unit tests beside them.
# promtool comes with Debian's prometheus, one of DEB_PACKAGES.
PROMTOOL ?= promtool
ALERT_RULES := contrib/prometheus/ha-balancer-alerts.yml

check-alerts:
	$(PROMTOOL) check rules $(ALERT_RULES)
	$(PROMTOOL) test rules $(ALERT_RULES:.yml=.test.yml)

test: deps nginx debian-module-check deb-check check-exports check-alerts
	$(CARGO) build --workspace --bins
	HAB_REQUIRE_NGINX=1 $(CARGO) test --workspace
	# the same end-to-end tests against Debian's nginx 1.22 and its module
	HAB_REQUIRE_NGINX=1 HAB_NGINX_BIN=/usr/sbin/nginx \
	HAB_MODULE_SO=$(TARGET)/debian/$(MODULE).so \
		$(CARGO) test $(patsubst tests/%.rs,--test %,$(wildcard tests/e2e_*.rs))
	HAB_REQUIRE_NGINX=1 HAB_NGINX_BIN=/usr/sbin/nginx \
	HAB_MODULE_SO=$(TARGET)/debian/$(MODULE).so \
		$(CARGO) test -p hab --test render_nginx --test render_verbatim
	$(SOAK_SHORT) bash scripts/soak.sh
	$(SOAK_SHORT) HAB_NGINX_BIN=/usr/sbin/nginx \
	HAB_MODULE_SO=$(TARGET)/debian/$(MODULE).so bash scripts/soak.sh
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets --workspace -- -D warnings
	# the end-to-end tests again, against nginx and the module built with
	# AddressSanitizer (about 3 minutes)
	$(MAKE) --no-print-directory asan

# nginx and the module built with AddressSanitizer (the C code; the Rust
# library is not instrumented), then every end-to-end test against them;
# fails on any ASan or LeakSanitizer report (docs/sanitizers.md).
asan-nginx: nginx
	@mkdir -p $(ASAN_DIR)
	# the options as a function linked into nginx: a changed string relinks
	printf '%s\n' '/* generated by make asan-nginx */' \
		'const char *__asan_default_options(void);' \
		'const char *__asan_default_options(void) { return "$(ASAN_DEFAULT_OPTIONS)"; }' \
		'const char *__lsan_default_options(void);' \
		'const char *__lsan_default_options(void) { return "$(LSAN_DEFAULT_OPTIONS)"; }' \
		> $(ASAN_DIR)/asan_options.c.new
	if ! cmp -s $(ASAN_DIR)/asan_options.c.new $(ASAN_DIR)/asan_options.c \
		|| [ ! -f $(ASAN_DIR)/asan_options.o ]; then
		mv $(ASAN_DIR)/asan_options.c.new $(ASAN_DIR)/asan_options.c
		$${CC:-cc} -c -fPIC -O1 -o $(ASAN_DIR)/asan_options.o $(ASAN_DIR)/asan_options.c
		rm -f $(ASAN_BUILD)/nginx $(ASAN_BUILD)/$(MODULE).so
	fi
	rm -f $(ASAN_DIR)/asan_options.c.new
	$(ASAN_RUN_FRESH)
	$(CONFIGURE_ONCE)
	cd $(NGX_SRC)
	configure_once $(ASAN_BUILD) auto/configure $(ASAN_CONFIGURE_ARGS) \
		--with-cc-opt='$(ASAN_CC_OPT)' \
		--with-ld-opt='$(ASAN_LD_OPT) $(ASAN_DIR)/asan_options.o'
	$(MAKE) -C $(NGX_SRC) -f $(ASAN_BUILD)/Makefile -j$(JOBS) install

asan: deps asan-nginx
	@$(CARGO) build --workspace --bins
	$(ASAN_RUN_FRESH)
	# the tests load this copy of the module: a worker's report names the
	# module's frames only if the worker can read the .so
	install -m 0755 $(ASAN_PREFIX)/modules/$(MODULE).so $(ASAN_RUN)/
	# started by root, nginx runs its workers as nobody: as nobody, read
	# what they read and write where they write, or stop here
	if [ "$$(id -u)" = 0 ]; then
		setpriv --reuid=nobody --regid="$$(id -g nobody)" --clear-groups sh -ec '
			cat $(ASAN_RUN)/asan.supp $(ASAN_RUN)/lsan.supp $(ASAN_RUN)/$(MODULE).so >/dev/null
			touch $(ASAN_LOGS)/probe
			rm $(ASAN_LOGS)/probe' \
			|| { echo "user nobody cannot use $(ASAN_RUN)" >&2; exit 1; }
	fi
	status=0
	HAB_REQUIRE_NGINX=1 HAB_NGINX_BIN=$(CURDIR)/scripts/asan-nginx.sh \
	HAB_ASAN_NGINX=$(ASAN_PREFIX)/sbin/nginx \
	HAB_MODULE_SO=$(ASAN_RUN)/$(MODULE).so \
		$(CARGO) test $(addprefix --test ,$(ASAN_TESTS)) || status=$$?
	reports= tracer=
	for f in $$(find $(ASAN_LOGS) -name 'asan.*' | sort); do
		echo "=== $$f"; cat "$$f"
		# LeakSanitizer's tracer failing in a process is no finding (but
		# that process's leaks went unchecked): said, not counted
		if grep -q 'LeakSanitizer has encountered a fatal error' "$$f" \
			&& ! grep -qE 'ERROR: (AddressSanitizer|LeakSanitizer: detected)' "$$f"; then
			tracer="$$tracer $$f"
		else
			reports="$$reports $$f"
		fi
	done
	if [ -n "$$tracer" ]; then
		echo "LeakSanitizer's tracer failed in $$(echo $$tracer | wc -w) process(es), leaks unchecked there:$$tracer"
	fi
	if [ -n "$$reports" ]; then
		echo "AddressSanitizer: $$(echo $$reports | wc -w) report(s) in $(ASAN_LOGS)" >&2
		exit 1
	fi
	echo "AddressSanitizer: no report in $(ASAN_LOGS)"
	exit $$status

# The end-to-end tests with the normal build of nginx under valgrind
# memcheck, which also sees the Rust library (about 8 minutes; see
# docs/sanitizers.md).
valgrind: deps nginx
	@CARGO=$(CARGO) scripts/valgrind-e2e.sh

# The quick loop: formatting, lints, the tests that need no nginx, Miri.
check:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets --workspace -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --workspace --no-deps
	$(CARGO) test --workspace --lib --bins
	$(CARGO) test --test abi --test shared_fork
	$(CARGO) test -p hab-ffi --test crash_points
	$(MAKE) --no-print-directory miri

# Miri over the fast core tests, under Stacked and Tree Borrows: the
# shared-memory protocols' unit tests and the thread model of the pin
# protocol (docs/design.md, "Crash consistency"). Not run by Miri: the
# crash-point and fork tests (fork, mmap), the property tests and the
# long table-driven ones (interpretation is ~1000x slower), listed there.
MIRI_TESTS := layout::flight layout::ledger layout::queue write::generation::tests::pinned \
	learn::tests::a_created_session_is_found learn::tests::relearning \
	learn::tests::a_refresh learn::tests::a_word_of_another \
	learn::tests::sessions_expire learn::tests::counters_add_up \
	layout::tests::attach layout::tests::init_then_attach attempt:: \
	health::tests health::outlier algo::crc32::tests::vectors \
	algo::crc32::tests::table_matches_nginx \
	algo::schedule::tests::nginx_sequences \
	algo::schedule::tests::counts_match_weights
MIRI_TOOLCHAIN ?= nightly

miri:
	@if ! $(CARGO) +$(MIRI_TOOLCHAIN) miri --version >/dev/null 2>&1; then
		rustup toolchain install --profile minimal $(MIRI_TOOLCHAIN)
		rustup component add --toolchain $(MIRI_TOOLCHAIN) miri rust-src
	fi
	$(CARGO) +$(MIRI_TOOLCHAIN) miri setup
	$(CARGO) +$(MIRI_TOOLCHAIN) miri test -p hab-core --lib -- $(MIRI_TESTS)
	MIRIFLAGS=-Zmiri-tree-borrows \
		$(CARGO) +$(MIRI_TOOLCHAIN) miri test -p hab-core --lib -- $(MIRI_TESTS)

# Soak: scripts/soak.sh (its header lists the HAB_SOAK_* knobs); the
# short one is what make test runs, on nginx 1.28 and on Debian's 1.22.
# Needs wrk and curl (make deps installs them; the script says so when
# they are missing).
SOAK_SHORT := HAB_SOAK_RELOADS=6 HAB_SOAK_KILLS=3 HAB_SOAK_SECONDS=10 \
	HAB_SOAK_IDLE_PER_SERVER=20

soak: nginx
	$(CARGO) build --workspace --bins
	bash scripts/soak.sh

soak-short: nginx
	$(CARGO) build --workspace --bins
	$(SOAK_SHORT) bash scripts/soak.sh

demo: deps nginx
	$(CARGO) build --workspace --bins
	bash scripts/demo.sh

# hab-dns (src/bin/hab-dns.rs) runs BIND's named, which make deps installs.
demo-dns: deps nginx
	$(CARGO) build --workspace --bins
	bash scripts/demo-dns.sh

bench:
	$(CARGO) bench --bench pick

# Whole-process benchmarks (scripts/bench-proxy.py; its header lists the
# HAB_BENCH_* knobs). Debian's python3, which has python3-matplotlib, not
# whichever python3 comes first in PATH.
bench-proxy: EXTRA_PACKAGES = haproxy python3-matplotlib
bench-proxy: deps nginx
	$(CARGO) build --release --bin hab-backend
	$(CARGO) build --bin hab-dns
	/usr/bin/python3 scripts/bench-proxy.py

# The queue's wake-up latency (scripts/bench-queue-wake.py; its header lists
# the HAB_QUEUE_* knobs). The whole-process queue scenario is
# HAB_BENCH_SCENARIOS=queue make bench-proxy.
bench-queue: EXTRA_PACKAGES = stress-ng
bench-queue: deps nginx
	/usr/bin/python3 scripts/bench-queue-wake.py

clean:
	rm -rf $(TARGET) $(ASAN_RUN)
