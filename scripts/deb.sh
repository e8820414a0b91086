#!/bin/bash
# The Debian binary package of the module, for Debian's packaged nginx, in
# the layout of Debian's own libnginx-mod-* packages (make deb).
#
#   scripts/deb.sh build SO OUTDIR   strip SO, stage it and build
#                                    OUTDIR/<package>_<version>_<arch>.deb
#
# Environment: DEB_ABI_FILE (nginx-dev's ABI substvars), DEB_REVISION,
# DEB_MAINTAINER, CARGO, SOURCE_DATE_EPOCH (default: the last commit's
# date).
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

case "${1:-}" in
build) [ $# -eq 3 ] || die "usage: $0 build SO OUTDIR"; build "$2" "$3" ;;
*) die "usage: $0 build SO OUTDIR" ;;
esac
