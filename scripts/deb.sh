#!/bin/bash
# The Debian binary package of the module, for Debian's packaged nginx, in
# the layout of Debian's own libnginx-mod-* packages (make deb, make
# deb-check).
#
#   scripts/deb.sh build SO OUTDIR   strip SO, stage it and build
#                                    OUTDIR/<package>_<version>_<arch>.deb
#   scripts/deb.sh check SO OUTDIR   inspect the package build made, unpack
#                                    it, nginx -t it, run its maintainer
#                                    scripts in a scratch root, rebuild it
#                                    from SO and compare, lintian it
#
# Environment: DEB_ABI_FILE (nginx-dev's ABI substvars), DEB_REVISION,
# DEB_MAINTAINER, NGINX_BIN, CARGO, SOURCE_DATE_EPOCH (default: the last
# commit's date).  Paths outside the scratch directories are only read.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PKGDIR=$ROOT/packaging/deb
NAME=libnginx-mod-http-upstream-ha
MODULE=ngx_http_upstream_ha_module
SNIPPET=mod-http-upstream-ha.conf
ENABLED_LINK=50-mod-http-upstream-ha.conf
DEB_ABI_FILE=${DEB_ABI_FILE:-/usr/share/nginx/src/debian/libnginx-mod.abisubstvars}
DEB_REVISION=${DEB_REVISION:-1}
DEB_MAINTAINER=${DEB_MAINTAINER:-ha-balancer maintainers <maintainers@users.noreply.b-seed-466468f0.example>}
NGINX_BIN=${NGINX_BIN:-/usr/sbin/nginx}
CARGO=${CARGO:-cargo}

die() {
	echo "deb: $*" >&2
	exit 1
}

# The version of [workspace.package] in Cargo.toml, with the Debian revision.
deb_version() {
	local v
	v=$(awk '/^\[/ { in_ws = ($0 == "[workspace.package]") }
		in_ws && /^version *=/ { sub(/^[^"]*"/, ""); sub(/".*/, ""); print; exit }' \
		"$ROOT/Cargo.toml")
	[ -n "$v" ] || die "no version in [workspace.package] of $ROOT/Cargo.toml"
	echo "$v-$DEB_REVISION"
}

# The nginx ABI the package must depend on, as Debian's module packages do
# (dh_nginx reads the same file): nginx:abi=nginx-abi-1.22.1-7.
nginx_abi() {
	local abi
	[ -r "$DEB_ABI_FILE" ] || die "cannot read $DEB_ABI_FILE (install nginx-dev: make deps)"
	abi=$(sed -n 's/^nginx:abi=[[:space:]]*//p' "$DEB_ABI_FILE")
	[[ "$abi" =~ ^[a-z0-9][a-z0-9.+-]*$ ]] || die "no single nginx:abi= line in $DEB_ABI_FILE"
	echo "$abi"
}

source_date_epoch() {
	if [ -n "${SOURCE_DATE_EPOCH:-}" ]; then
		echo "$SOURCE_DATE_EPOCH"
	else
		git -C "$ROOT" log -1 --format=%ct 2>/dev/null || stat -c %Y "$ROOT/Cargo.toml"
	fi
}

# A DEP-5 License paragraph body: the text indented, blank lines as " .".
license_text() {
	[ -f "$PKGDIR/licenses/$1" ] \
		|| die "no text for license $1: add packaging/deb/licenses/$1"
	sed 's/^$/./; s/^/ /' "$PKGDIR/licenses/$1"
}

# The copyright file: ha-balancer, then every third-party crate linked into
# the .so (cargo's normal dependencies of hab-ffi, without proc macros, as
# nginx-module/config.make builds it) and the Rust standard library.
write_copyright() {
	local out=$1 crates authors line name version license ids id
	crates=$(cd "$ROOT" && $CARGO tree --locked -p hab-ffi -e normal,no-proc-macro \
		--prefix none --format '{p}|{l}' | grep -v ' (/' | sed 's/ (\*)$//' | sort -u)
	# name version<TAB>authors, from cargo metadata
	authors=$(cd "$ROOT" && $CARGO metadata --locked --format-version 1 | perl -MJSON::PP -e '
		local $/; my $m = decode_json(<STDIN>);
		for my $p (@{$m->{packages}}) {
			my @a = @{$p->{authors} || []};
			print "$p->{name} $p->{version}\t", (@a ? join(", ", @a) : "the $p->{name} authors"), "\n";
		}')
	ids="BSD-2-Clause Apache-2.0 MIT"
	{
		cat <<-EOF
			Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
			Upstream-Name: ha-balancer
			Comment: The module is built from ha-balancer's C source and Rust
			 workspace and statically links the Rust standard library and the
			 crates from crates.io listed below (paths under cargo-registry/ are
			 where cargo unpacks them, \$CARGO_HOME/registry/src/).

			Files: *
			Copyright: ha-balancer authors
			License: BSD-2-Clause

			Files: rust-std/*
			Copyright: The Rust Project Developers
			License: MIT or Apache-2.0
			Comment: the Rust standard library (core, alloc, std and the crates
			 they are built from) of $(rustc --version 2>/dev/null || echo rustc)
		EOF
		while IFS='|' read -r line license; do
			name=${line% v*}
			version=${line##* v}
			[ -n "$license" ] || die "crate $name $version declares no SPDX license"
			license=$(sed 's/ OR / or /g; s/ AND / and /g; s/ WITH / with /g; s|/| or |g' <<<"$license")
			for id in $(tr '()' '  ' <<<"$license"); do
				case " or and with $ids " in
				*" $id "*) ;;
				*) ids="$ids $id" ;;
				esac
			done
			printf '\nFiles: cargo-registry/%s-%s/*\nCopyright: %s\nLicense: %s\n' \
				"$name" "$version" \
				"$(awk -F'\t' -v k="$name $version" '$1 == k { print $2; exit }' <<<"$authors")" \
				"$license"
		done <<<"$crates"
		for id in $ids; do
			printf '\nLicense: %s\n' "$id"
			license_text "$id"
		done
	} >"$out"
}

build() {
	local so=$1 outdir=$2 version arch abi epoch work pkg shlibs deb size
	[ -f "$so" ] || die "no $so (make debian-module)"
	version=$(deb_version)
	arch=$(dpkg --print-architecture)
	# nginx-module/config refuses 32-bit platforms: no package there
	bits=$(dpkg-architecture -qDEB_HOST_ARCH_BITS 2>/dev/null || echo 64)
	[ "$bits" = 64 ] || die "$arch is a $bits-bit architecture: the module needs 64 bits"
	abi=$(nginx_abi)
	epoch=$(source_date_epoch)
	export SOURCE_DATE_EPOCH=$epoch
	umask 022

	work=$outdir/build
	pkg=$work/debian/$NAME
	rm -rf "$work"
	install -d "$pkg/DEBIAN" "$pkg/usr/lib/nginx/modules" \
		"$pkg/usr/share/nginx/modules-available" "$pkg/usr/share/doc/$NAME" \
		"$pkg/usr/share/lintian/overrides"

	# dh_strip's flags for a shared object
	install -m 644 "$so" "$pkg/usr/lib/nginx/modules/$MODULE.so"
	strip --remove-section=.comment --remove-section=.note --strip-unneeded \
		"$pkg/usr/lib/nginx/modules/$MODULE.so"

	printf 'load_module modules/%s.so;\n' "$MODULE" \
		>"$pkg/usr/share/nginx/modules-available/$SNIPPET"

	write_copyright "$pkg/usr/share/doc/$NAME/copyright"
	{
		printf '%s (%s) bookworm; urgency=medium\n\n' "$NAME" "$version"
		printf '  * Built by make deb from ha-balancer %s for %s.\n\n' \
			"$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo "${version%-*}")" "$abi"
		printf ' -- %s  %s\n' "$DEB_MAINTAINER" "$(LC_ALL=C date -u -R -d "@$epoch")"
	} | gzip -9n >"$pkg/usr/share/doc/$NAME/changelog.Debian.gz"
	chmod 644 "$pkg/usr/share/doc/$NAME/"*
	install -m 644 "$PKGDIR/lintian-overrides" "$pkg/usr/share/lintian/overrides/$NAME"

	# dpkg-shlibdeps wants debian/control and the binary in debian/<package>/
	printf 'Source: ha-balancer\n\nPackage: %s\nArchitecture: any\n' "$NAME" >"$work/debian/control"
	shlibs=$(cd "$work" && dpkg-shlibdeps -O "debian/$NAME/usr/lib/nginx/modules/$MODULE.so" \
		| sed -n 's/^shlibs:Depends=//p')
	[[ "$shlibs" == *libc6* ]] || die "dpkg-shlibdeps found no libc6 dependency: '$shlibs'"

	for script in postinst prerm postrm; do
		install -m 755 "$PKGDIR/$script" "$pkg/DEBIAN/$script"
	done
	(cd "$pkg" && find usr -type f | LC_ALL=C sort | xargs md5sum) >"$pkg/DEBIAN/md5sums"
	chmod 644 "$pkg/DEBIAN/md5sums"

	# dpkg-gencontrol's estimate: KiB per file rounded up, 1 per other entry
	size=$(cd "$pkg" && find usr \( -type f -printf '%s\n' \) -o -printf '0\n' \
		| awk '{ n += $1 > 0 ? int(($1 + 1023) / 1024) : 1 } END { print n }')
	cat >"$pkg/DEBIAN/control" <<-EOF
		Package: $NAME
		Version: $version
		Architecture: $arch
		Maintainer: $DEB_MAINTAINER
		Installed-Size: $size
		Depends: $abi, $shlibs
		Recommends: nginx
		Section: httpd
		Priority: optional
		Multi-Arch: foreign
		Description: high-availability upstream balancing module for Nginx
		 ha-balancer's ngx_http_upstream_ha_module for Debian's nginx. The
		 ha_balance upstream directive (round robin, least_conn, p2c, peak-EWMA,
		 random, hash, consistent hash and Maglev) keeps the balancing state in
		 shared memory, so all worker processes share in-flight counts, failure
		 windows and the round robin position, and keeps it across reloads.
		 .
		 The ha_api location directive serves per-server statistics, Prometheus
		 metrics, a live status page and an HTTP API to drain, disable or
		 re-weight servers at run time.
	EOF
	chmod 644 "$pkg/DEBIAN/control"

	find "$pkg" -exec touch -h -d "@$epoch" {} +
	deb=$outdir/${NAME}_${version}_${arch}.deb
	dpkg-deb --root-owner-group --build "$pkg" "$deb" >/dev/null
	echo "built $deb"
}

check() {
	local so=$1 outdir=$2 version arch abi deb tmp root have want f
	version=$(deb_version)
	arch=$(dpkg --print-architecture)
	abi=$(nginx_abi)
	deb=$outdir/${NAME}_${version}_${arch}.deb
	[ -f "$deb" ] || die "no $deb (make deb)"
	tmp=$(mktemp -d)
	trap "rm -rf '$tmp'" EXIT

	# (1) metadata
	[ "$(dpkg-deb -f "$deb" Package)" = "$NAME" ] || die "Package is not $NAME"
	[ "$(dpkg-deb -f "$deb" Version)" = "$version" ] || die "Version is not $version"
	[ "$(dpkg-deb -f "$deb" Architecture)" = "$arch" ] || die "Architecture is not $arch"
	have=$(dpkg-deb -f "$deb" Depends)
	[[ ", $have, " == *", $abi, "* ]] || die "Depends '$have' lacks $abi (from $DEB_ABI_FILE)"
	[[ ", $have" == *", libc6 (>= "* ]] || die "Depends '$have' lacks libc6 (>= ...)"
	for f in Maintainer Description Installed-Size Section Priority; do
		[ -n "$(dpkg-deb -f "$deb" "$f")" ] || die "no $f field"
	done
	have=$(dpkg-deb --ctrl-tarfile "$deb" | tar -t | sed 's|^\./||; /^$/d' | LC_ALL=C sort | xargs)
	[ "$have" = "control md5sums postinst postrm prerm" ] || die "control members: $have"
	echo "deb: $NAME $version $arch, Depends: $(dpkg-deb -f "$deb" Depends)"

	# (1) contents: these files and their directories, all root-owned
	want="./usr/lib/nginx/modules/$MODULE.so
./usr/share/doc/$NAME/changelog.Debian.gz
./usr/share/doc/$NAME/copyright
./usr/share/lintian/overrides/$NAME
./usr/share/nginx/modules-available/$SNIPPET"
	dpkg-deb -c "$deb" >"$tmp/contents"
	have=$(awk '$1 !~ /^d/ { print $6 }' "$tmp/contents" | LC_ALL=C sort)
	[ "$have" = "$want" ] || die "files are:"$'\n'"$have"$'\n'"expected:"$'\n'"$want"
	awk '$2 != "root/root" { bad = 1; print "not root/root: " $0 } END { exit bad }' \
		"$tmp/contents" >&2 || die "files not owned by root"
	awk '$6 != "./" && $6 !~ /^\.\/usr\// { bad = 1; print "outside /usr: " $0 } END { exit bad }' \
		"$tmp/contents" >&2 || die "files outside /usr"

	# (2) unpacked: checksums, the snippet, a stripped .so that exports only
	# nginx's module symbols
	root=$tmp/root
	dpkg-deb -x "$deb" "$root"
	dpkg-deb -e "$deb" "$tmp/DEBIAN"
	(cd "$root" && md5sum --quiet -c "$tmp/DEBIAN/md5sums") || die "md5sums do not match"
	have=$(cat "$root/usr/share/nginx/modules-available/$SNIPPET")
	[ "$have" = "load_module modules/$MODULE.so;" ] || die "snippet is '$have'"
	f=$root/usr/lib/nginx/modules/$MODULE.so
	! readelf -S "$f" | grep -Eq ' \.(symtab|debug_[a-z]+|comment) ' || die "$f is not stripped"
	have=$(nm -D --defined-only "$f" | awk '{ print $3 }' \
		| grep -Ev '^(ngx_.*|_init|_fini|__bss_start|_edata|_end)$' || true)
	[ -z "$have" ] || die "$f exports:" $have

	# (2) Debian's nginx -t loads the unpacked .so by its absolute path
	echo "deb: nginx -t, load_module $f"
	nginx_t "$tmp" "load_module $f;" "$NGINX_BIN" -t -p "$tmp/" -c "$tmp/nginx.conf"

	# (2) the maintainer scripts, on copies pointed at the scratch root
	# (dpkg-trigger recorded, not run); then nginx -t through the enabled
	# link and the snippet, with the prefix laid out as nginx-common does
	mkdir -p "$tmp/bin" "$root/etc/nginx/modules-enabled"
	printf '#!/bin/sh\necho "$*" >> %s/triggers\n' "$tmp" >"$tmp/bin/dpkg-trigger"
	chmod 755 "$tmp/bin/dpkg-trigger"
	: >"$tmp/triggers"
	for f in postinst prerm postrm; do
		sed "s|^available=/|available=$root/|; s|^enabled=/|enabled=$root/|" \
			"$tmp/DEBIAN/$f" >"$tmp/$f"
		grep -q "^enabled=$root/" "$tmp/$f" || die "$f: no enabled= line to point at the scratch root"
		! grep -v '^enabled=' "$tmp/$f" | grep -q '/etc/' \
			|| die "$f names /etc/ outside its enabled= line: it cannot be run in a scratch root"
	done
	ln -s ../../lib/nginx/modules "$root/usr/share/nginx/modules"
	local link=$root/etc/nginx/modules-enabled/$ENABLED_LINK
	run_script() { PATH=$tmp/bin:$PATH sh -e "$tmp/$1" "${@:2}"; }
	enabled_state() {
		if [ -L "$link" ]; then echo enabled
		elif [ -L "$link.removed" ]; then echo removed
		else echo absent; fi
	}
	expect_state() { [ "$(enabled_state)" = "$1" ] || die "after $2: $(enabled_state), expected $1"; }

	run_script postinst configure
	expect_state enabled "first install (postinst configure)"
	[ "$(readlink "$link")" = "$root/usr/share/nginx/modules-available/$SNIPPET" ] \
		|| die "link points to $(readlink "$link")"
	echo "deb: nginx -t, include modules-enabled/*.conf (postinst's link to the snippet)"
	nginx_t "$tmp" "include $root/etc/nginx/modules-enabled/*.conf;" \
		"$NGINX_BIN" -t -p "$root/usr/share/nginx/" -c "$tmp/nginx.conf"
	run_script prerm remove
	expect_state removed "prerm remove"
	run_script postrm remove
	expect_state removed "postrm remove"
	run_script postinst configure "$version"
	expect_state enabled "reinstall (postinst configure $version)"
	rm "$link"
	run_script postinst configure "$version"
	expect_state absent "upgrade after the admin removed the link"
	run_script postinst configure
	run_script prerm remove
	run_script postrm remove
	run_script postrm purge
	expect_state absent "purge"
	[ -z "$(ls -A "$root/etc/nginx/modules-enabled")" ] || die "purge left $(ls -A "$root/etc/nginx/modules-enabled")"
	# one reload per postinst configure (4) and postrm remove (2)
	have=$(sort "$tmp/triggers" | uniq -c | xargs)
	[ "$have" = "6 --no-await nginx-reload" ] || die "dpkg-trigger calls: $have"
	echo "deb: maintainer scripts enable, disable, restore and purge the modules-enabled link"

	# reproducible: the same .so and sources give the same bytes
	"$0" build "$so" "$tmp/again" >/dev/null
	cmp "$deb" "$tmp/again/$(basename "$deb")" || die "a second build differs from $deb"
	echo "deb: a second build is identical"

	# (3) lintian, when it is there
	if command -v lintian >/dev/null 2>&1; then
		lintian --fail-on error,warning --display-info "$deb"
		echo "deb: lintian found no error or warning"
	else
		echo "deb: lintian skipped: it is not installed (not one of DEB_PACKAGES; apt-get install lintian to run it)"
	fi
	echo "deb: $deb ok"
}

# nginx_t DIR LOAD_LINE NGINX_ARGS...: DIR/nginx.conf with LOAD_LINE and an
# ha_balance upstream (as make debian-module-check), then nginx -t on it.
nginx_t() {
	local dir=$1 load=$2
	shift 2
	cat >"$dir/nginx.conf" <<-EOF
		$load
		pid $dir/nginx.pid;
		error_log stderr;
		events {}
		http {
		    access_log off;
		    client_body_temp_path $dir/body;
		    proxy_temp_path $dir/proxy;
		    fastcgi_temp_path $dir/fastcgi;
		    uwsgi_temp_path $dir/uwsgi;
		    scgi_temp_path $dir/scgi;
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
	"$@" -e stderr
}

case "${1:-}" in
build) [ $# -eq 3 ] || die "usage: $0 build SO OUTDIR"; build "$2" "$3" ;;
check) [ $# -eq 3 ] || die "usage: $0 check SO OUTDIR"; check "$2" "$3" ;;
*) die "usage: $0 build SO OUTDIR | check SO OUTDIR" ;;
esac
