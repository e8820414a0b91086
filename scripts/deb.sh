#!/bin/bash
# The Debian binary packages of ha-balancer, for Debian's packaged nginx
# (make deb, make deb-check): the module, in the layout of Debian's own
# libnginx-mod-* packages, and hab, the operator CLI.
#
#   scripts/deb.sh build SO OUTDIR   strip SO, build hab (cargo, release)
#                                    and its manual pages and completions
#                                    (cli/examples/gen_docs.rs), stage them
#                                    and build OUTDIR/<package>_<version>_<arch>.deb
#                                    for both packages
#   scripts/deb.sh check SO OUTDIR   inspect the packages build made, unpack
#                                    them, nginx -t the module, run its
#                                    maintainer scripts in a scratch root,
#                                    run the unpacked hab against nginx,
#                                    rebuild both and compare, lintian them
#
# Environment: DEB_ABI_FILE (nginx-dev's ABI substvars), DEB_REVISION,
# DEB_MAINTAINER, NGINX_BIN, CARGO, SOURCE_DATE_EPOCH (default: the last
# commit's date).  Paths outside the scratch directories and cargo's target
# directory are only read.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PKGDIR=$ROOT/packaging/deb
NAME=libnginx-mod-http-upstream-ha
HAB_NAME=hab
SOURCE_NAME=ha-balancer
MODULE=ngx_http_upstream_ha_module
SNIPPET=mod-http-upstream-ha.conf
MANPAGE=$MODULE.5
# The Prometheus alerting rules (with their promtool unit tests) and the
# Grafana dashboard of contrib/, shipped with the module under SHARE
CONTRIB="prometheus/ha-balancer-alerts.yml prometheus/ha-balancer-alerts.test.yml grafana/ha-balancer.json"
SHARE=usr/share/ha-balancer
# 70-: after Debian's 50-mod-stream.conf (dh_nginx's priority for a module
# that needs another one first); earlier builds used OLD_LINK
ENABLED_LINK=70-mod-http-upstream-ha.conf
OLD_LINK=50-mod-http-upstream-ha.conf
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

# packaging/deb/changelog, whose first entry must be the version built.
check_changelog() {
	local version=$1 have
	have=$(dpkg-parsechangelog -l "$PKGDIR/changelog" -S Version) \
		|| die "cannot parse $PKGDIR/changelog"
	[ "$have" = "$version" ] \
		|| die "$PKGDIR/changelog starts with $have, not $version: add an entry for $version"
	[ "$(dpkg-parsechangelog -l "$PKGDIR/changelog" -S Source)" = "$SOURCE_NAME" ] \
		|| die "$PKGDIR/changelog is not for source $SOURCE_NAME"
}

# cargo's target directory (CARGO_TARGET_DIR or the workspace's).
target_dir() {
	(cd "$ROOT" && $CARGO metadata --locked --format-version 1 --no-deps) \
		| perl -MJSON::PP -e 'local $/; print decode_json(<STDIN>)->{target_directory}'
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
# the binary (cargo's normal dependencies of CRATE, without proc macros:
# hab-ffi for the .so, as nginx-module/config.make builds it; hab for hab)
# and the Rust standard library.  WHAT names the binary in the Comment.
write_copyright() {
	local out=$1 crate=$2 what=$3 crates authors line name version license ids id
	crates=$(cd "$ROOT" && $CARGO tree --locked -p "$crate" -e normal,no-proc-macro \
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
			Comment: $what
			 statically links the Rust standard library and the crates from
			 crates.io listed below (paths under cargo-registry/ are where cargo
			 unpacks them, \$CARGO_HOME/registry/src/).

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

# Stage the files every package has: copyright (from CRATE, WHAT), the
# changelog and the lintian overrides (OVERRIDES, in packaging/deb/).
stage_common() {
	local pkg=$1 name=$2 crate=$3 what=$4 overrides=$5
	install -d "$pkg/DEBIAN" "$pkg/usr/share/doc/$name" "$pkg/usr/share/lintian/overrides"
	write_copyright "$pkg/usr/share/doc/$name/copyright" "$crate" "$what"
	gzip -9n <"$PKGDIR/changelog" >"$pkg/usr/share/doc/$name/changelog.Debian.gz"
	chmod 644 "$pkg/usr/share/doc/$name/"*
	install -m 644 "$PKGDIR/$overrides" "$pkg/usr/share/lintian/overrides/$name"
}

# dpkg-shlibdeps' Depends of the ELF file FILE (relative to the package
# root) of package NAME staged in WORK/debian/NAME.
shlibs_of() {
	local work=$1 name=$2 file=$3 shlibs
	# dpkg-shlibdeps wants debian/control and the binary in debian/<package>/
	printf 'Source: %s\n\nPackage: %s\nArchitecture: any\n' "$SOURCE_NAME" "$name" \
		>"$work/debian/control"
	shlibs=$(cd "$work" && dpkg-shlibdeps -O "debian/$name/$file" | sed -n 's/^shlibs:Depends=//p')
	[[ "$shlibs" == *libc6* ]] || die "dpkg-shlibdeps found no libc6 dependency for $file: '$shlibs'"
	echo "$shlibs"
}

# md5sums, DEBIAN/control from stdin (Installed-Size added), every date set
# to EPOCH, then OUTDIR/NAME_VERSION_ARCH.deb.
finish_package() {
	local pkg=$1 name=$2 version=$3 arch=$4 epoch=$5 outdir=$6 size deb
	(cd "$pkg" && find usr -type f | LC_ALL=C sort | xargs md5sum) >"$pkg/DEBIAN/md5sums"
	chmod 644 "$pkg/DEBIAN/md5sums"
	# dpkg-gencontrol's estimate: KiB per file rounded up, 1 per other entry
	size=$(cd "$pkg" && find usr \( -type f -printf '%s\n' \) -o -printf '0\n' \
		| awk '{ n += $1 > 0 ? int(($1 + 1023) / 1024) : 1 } END { print n }')
	awk -v size="$size" '{ print } /^Maintainer:/ { print "Installed-Size: " size }' \
		>"$pkg/DEBIAN/control"
	chmod 644 "$pkg/DEBIAN/control"
	find "$pkg" -exec touch -h -d "@$epoch" {} +
	deb=$outdir/${name}_${version}_${arch}.deb
	dpkg-deb --root-owner-group --build "$pkg" "$deb" >/dev/null
	echo "built $deb"
}

build() {
	local so=$1 outdir=$2 version arch abi epoch work pkg shlibs bits target docs f
	[ -f "$so" ] || die "no $so (make debian-module)"
	version=$(deb_version)
	check_changelog "$version"
	arch=$(dpkg --print-architecture)
	# nginx-module/config refuses 32-bit platforms: no package there
	bits=$(dpkg-architecture -qDEB_HOST_ARCH_BITS 2>/dev/null || echo 64)
	[ "$bits" = 64 ] || die "$arch is a $bits-bit architecture: the module needs 64 bits"
	abi=$(nginx_abi)
	epoch=$(source_date_epoch)
	export SOURCE_DATE_EPOCH=$epoch
	umask 022

	work=$outdir/build
	rm -rf "$work"

	# (1) the module
	pkg=$work/debian/$NAME
	stage_common "$pkg" "$NAME" hab-ffi \
		"The module is built from ha-balancer's C source and Rust workspace and" \
		lintian-overrides
	install -d "$pkg/usr/lib/nginx/modules" "$pkg/usr/share/nginx/modules-available" \
		"$pkg/usr/share/man/man5"

	# dh_strip's flags for a shared object
	install -m 644 "$so" "$pkg/usr/lib/nginx/modules/$MODULE.so"
	strip --remove-section=.comment --remove-section=.note --strip-unneeded \
		"$pkg/usr/lib/nginx/modules/$MODULE.so"

	printf 'load_module modules/%s.so;\n' "$MODULE" \
		>"$pkg/usr/share/nginx/modules-available/$SNIPPET"
	for f in $CONTRIB; do
		install -D -m 644 "$ROOT/contrib/$f" "$pkg/$SHARE/$f"
	done
	sed "s/@VERSION@/${version%-*}/g" "$PKGDIR/$MANPAGE" | gzip -9n \
		>"$pkg/usr/share/man/man5/$MANPAGE.gz"
	chmod 644 "$pkg/usr/share/man/man5/$MANPAGE.gz"
	for script in postinst prerm postrm; do
		install -m 755 "$PKGDIR/$script" "$pkg/DEBIAN/$script"
	done
	shlibs=$(shlibs_of "$work" "$NAME" "usr/lib/nginx/modules/$MODULE.so")
	finish_package "$pkg" "$NAME" "$version" "$arch" "$epoch" "$outdir" <<-EOF
		Package: $NAME
		Source: $SOURCE_NAME
		Version: $version
		Architecture: $arch
		Maintainer: $DEB_MAINTAINER
		Depends: $abi, $shlibs
		Recommends: nginx, libnginx-mod-stream, $HAB_NAME
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
		 re-weight servers at run time; the hab package is its command line.
		 Prometheus alerting rules and a Grafana dashboard for those metrics
		 are in /usr/share/ha-balancer.
	EOF

	# (2) hab, built by cargo in release mode; its pages and completions
	# from its clap definition
	(cd "$ROOT" && $CARGO build --locked --release -p hab) || die "cargo build -p hab failed"
	docs=$work/hab-docs
	(cd "$ROOT" && $CARGO run --locked -q -p hab --example gen_docs -- "$docs") \
		|| die "cargo run -p hab --example gen_docs failed"
	target=$(target_dir)
	pkg=$work/debian/$HAB_NAME
	stage_common "$pkg" "$HAB_NAME" hab \
		"hab is built from ha-balancer's Rust workspace and" hab.lintian-overrides
	install -d "$pkg/usr/bin" "$pkg/usr/share/man/man1" \
		"$pkg/usr/share/bash-completion/completions" \
		"$pkg/usr/share/zsh/vendor-completions" "$pkg/usr/share/fish/vendor_completions.d"
	# dh_strip's flags for an executable
	install -m 755 "$target/release/hab" "$pkg/usr/bin/hab"
	strip --remove-section=.comment --remove-section=.note "$pkg/usr/bin/hab"
	for f in "$docs"/man1/*.1; do
		gzip -9n <"$f" >"$pkg/usr/share/man/man1/${f##*/}.gz"
	done
	install -m 644 "$docs/completions/hab.bash" "$pkg/usr/share/bash-completion/completions/hab"
	install -m 644 "$docs/completions/_hab" "$pkg/usr/share/zsh/vendor-completions/_hab"
	install -m 644 "$docs/completions/hab.fish" "$pkg/usr/share/fish/vendor_completions.d/hab.fish"
	chmod 644 "$pkg/usr/share/man/man1/"*
	shlibs=$(shlibs_of "$work" "$HAB_NAME" usr/bin/hab)
	finish_package "$pkg" "$HAB_NAME" "$version" "$arch" "$epoch" "$outdir" <<-EOF
		Package: $HAB_NAME
		Source: $SOURCE_NAME
		Version: $version
		Architecture: $arch
		Maintainer: $DEB_MAINTAINER
		Depends: $shlibs
		Suggests: $NAME, nginx
		Section: admin
		Priority: optional
		Multi-Arch: foreign
		Description: operator command line for the ha-balancer nginx module
		 hab talks to the ha_api location of ha-balancer's nginx module
		 (package $NAME): hab status and hab top show every
		 upstream and its servers with their statistics; hab drain, undrain,
		 down, up and weight change a server at run time.
		 .
		 hab render turns a YAML description of backends into nginx
		 configuration checked with nginx -t.
	EOF
}

check() {
	local so=$1 outdir=$2 version arch abi deb hab_deb tmp root have want f
	version=$(deb_version)
	arch=$(dpkg --print-architecture)
	abi=$(nginx_abi)
	deb=$outdir/${NAME}_${version}_${arch}.deb
	hab_deb=$outdir/${HAB_NAME}_${version}_${arch}.deb
	[ -f "$deb" ] || die "no $deb (make deb)"
	[ -f "$hab_deb" ] || die "no $hab_deb (make deb)"
	tmp=$(mktemp -d)
	trap "stop_nginx; rm -rf '$tmp'" EXIT

	# (1) metadata
	[ "$(dpkg-deb -f "$deb" Package)" = "$NAME" ] || die "Package is not $NAME"
	[ "$(dpkg-deb -f "$deb" Version)" = "$version" ] || die "Version is not $version"
	[ "$(dpkg-deb -f "$deb" Architecture)" = "$arch" ] || die "Architecture is not $arch"
	have=$(dpkg-deb -f "$deb" Depends)
	[[ ", $have, " == *", $abi, "* ]] || die "Depends '$have' lacks $abi (from $DEB_ABI_FILE)"
	[[ ", $have" == *", libc6 (>= "* ]] || die "Depends '$have' lacks libc6 (>= ...)"
	have=$(dpkg-deb -f "$deb" Recommends)
	[[ ", $have, " == *", libnginx-mod-stream, "* ]] || die "Recommends '$have' lacks libnginx-mod-stream"
	for f in Maintainer Description Installed-Size Section Priority; do
		[ -n "$(dpkg-deb -f "$deb" "$f")" ] || die "no $f field"
	done
	[ "$(dpkg-deb -f "$deb" Source)" = "$SOURCE_NAME" ] || die "$NAME: Source is not $SOURCE_NAME"
	have=$(dpkg-deb --ctrl-tarfile "$deb" | tar -t | sed 's|^\./||; /^$/d' | LC_ALL=C sort | xargs)
	[ "$have" = "control md5sums postinst postrm prerm" ] || die "control members: $have"
	echo "deb: $NAME $version $arch, Depends: $(dpkg-deb -f "$deb" Depends)"

	# (1) contents: these files and their directories, all root-owned
	want="./usr/lib/nginx/modules/$MODULE.so
./usr/share/doc/$NAME/changelog.Debian.gz
./usr/share/doc/$NAME/copyright
$(for f in $CONTRIB; do echo "./$SHARE/$f"; done)
./usr/share/lintian/overrides/$NAME
./usr/share/man/man5/$MANPAGE.gz
./usr/share/nginx/modules-available/$SNIPPET"
	want=$(LC_ALL=C sort <<<"$want")
	dpkg-deb -c "$deb" >"$tmp/contents"
	have=$(awk '$1 !~ /^d/ { print $6 }' "$tmp/contents" | LC_ALL=C sort)
	[ "$have" = "$want" ] || die "files are:"$'\n'"$have"$'\n'"expected:"$'\n'"$want"
	owned_by_root_in_usr "$tmp/contents"

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
	have=$(nm -D --undefined-only "$f" | awk '$1 == "U" && $2 ~ /^ngx_stream_/ { print $2 }')
	[ -z "$have" ] || die "$f refers to stream symbols not weakly:" $have
	linked_as_debian "$f"
	manpage_ok "$root/usr/share/man/man5/$MANPAGE.gz"
	contrib_ok "$root/$SHARE"
	[ "$(dpkg-parsechangelog -l "$root/usr/share/doc/$NAME/changelog.Debian.gz" -S Version)" = "$version" ] \
		|| die "changelog.Debian.gz does not start with $version"
	grep -q '^License: BSD-2-Clause$' "$root/usr/share/doc/$NAME/copyright" \
		|| die "copyright names no BSD-2-Clause"

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
	# the load order: Debian's stream module, enabled as its package does
	# (50-mod-stream.conf), sorts before our 70- link and nginx -t takes a
	# stream{} block
	local stream_so=/usr/lib/nginx/modules/ngx_stream_module.so
	if [ -f "$stream_so" ]; then
		ln -s "$stream_so" "$root/usr/lib/nginx/modules/ngx_stream_module.so"
		echo 'load_module modules/ngx_stream_module.so;' >"$tmp/mod-stream.conf"
		ln -s "$tmp/mod-stream.conf" "$root/etc/nginx/modules-enabled/50-mod-stream.conf"
		echo "deb: nginx -t, include modules-enabled/*.conf with 50-mod-stream.conf and a stream{} block"
		NGINX_T_EXTRA="stream { server { listen 127.0.0.1:1; proxy_pass 127.0.0.1:2; } }" \
			nginx_t "$tmp" "include $root/etc/nginx/modules-enabled/*.conf;" \
			"$NGINX_BIN" -t -p "$root/usr/share/nginx/" -c "$tmp/nginx.conf"
		rm "$root/etc/nginx/modules-enabled/50-mod-stream.conf" \
			"$root/usr/lib/nginx/modules/ngx_stream_module.so"
	else
		echo "deb: load order with stream skipped: no $stream_so (package libnginx-mod-stream)"
	fi
	run_script prerm remove
	expect_state removed "prerm remove"
	run_script postrm remove
	expect_state removed "postrm remove"
	run_script postinst configure "$version"
	expect_state enabled "reinstall (postinst configure $version)"
	rm "$link"
	run_script postinst configure "$version"
	expect_state absent "upgrade after the admin removed the link"
	# an upgrade from a build that linked the snippet as OLD_LINK: the
	# link moves to the new name, enabled or put aside as it was
	local old=$root/etc/nginx/modules-enabled/$OLD_LINK
	ln -s "$root/usr/share/nginx/modules-available/$SNIPPET" "$old"
	run_script postinst configure "$version"
	expect_state enabled "upgrade from $OLD_LINK"
	[ ! -L "$old" ] || die "upgrade left $OLD_LINK"
	rm "$link"
	ln -s "$root/usr/share/nginx/modules-available/$SNIPPET" "$old.removed"
	run_script postinst configure "$version"
	expect_state enabled "reinstall over $OLD_LINK.removed"
	[ ! -L "$old.removed" ] || die "reinstall left $OLD_LINK.removed"
	rm "$link"
	run_script postinst configure
	run_script prerm remove
	run_script postrm remove
	run_script postrm purge
	expect_state absent "purge"
	[ -z "$(ls -A "$root/etc/nginx/modules-enabled")" ] || die "purge left $(ls -A "$root/etc/nginx/modules-enabled")"
	# one reload per postinst configure (6) and postrm remove (2)
	have=$(sort "$tmp/triggers" | uniq -c | xargs)
	[ "$have" = "8 --no-await nginx-reload" ] || die "dpkg-trigger calls: $have"
	echo "deb: maintainer scripts enable, disable, restore and purge the modules-enabled link"

	check_hab "$tmp" "$hab_deb" "$version" "$arch" "$root"

	# reproducible: the same .so and sources give the same bytes
	"$0" build "$so" "$tmp/again" >/dev/null
	for f in "$deb" "$hab_deb"; do
		cmp "$f" "$tmp/again/$(basename "$f")" || die "a second build differs from $f"
	done
	echo "deb: a second build of both packages is identical"

	# (3) lintian, when it is there
	if command -v lintian >/dev/null 2>&1; then
		lintian --fail-on error,warning --display-info "$deb" "$hab_deb"
		echo "deb: lintian found no error or warning"
	else
		echo "deb: lintian skipped: it is not installed (make deps installs it: one of DEB_PACKAGES)"
	fi
	echo "deb: $deb and $hab_deb ok"
}

# dpkg-deb -c output CONTENTS: everything root-owned and under /usr.
owned_by_root_in_usr() {
	awk '$2 != "root/root" { bad = 1; print "not root/root: " $0 } END { exit bad }' \
		"$1" >&2 || die "files not owned by root"
	awk '$6 != "./" && $6 !~ /^\.\/usr\// { bad = 1; print "outside /usr: " $0 } END { exit bad }' \
		"$1" >&2 || die "files outside /usr"
}

# ELF file F linked as Debian links its binaries and nginx modules
# (hardening=+all): full RELRO (GNU_RELRO and BIND_NOW), position
# independent.
linked_as_debian() {
	local f=$1
	readelf -lW "$f" | grep -q '^ *GNU_RELRO ' || die "$f has no GNU_RELRO segment (-z relro)"
	readelf -dW "$f" | grep -Eq '\((FLAGS|FLAGS_1)\) .*\b(BIND_NOW|NOW)\b' \
		|| die "$f is not linked BIND_NOW (-z now)"
	[ "$(readelf -hW "$f" | awk '$1 == "Type:" { print $2 }')" = DYN ] \
		|| die "$f is not position independent"
}

# The unpacked rules and dashboard in DIR: the files of contrib/, the rules
# accepted by promtool and passing their unit tests where they are
# installed (when promtool is there), the dashboard a JSON object.
contrib_ok() {
	local dir=$1 f
	for f in $CONTRIB; do
		cmp "$ROOT/contrib/$f" "$dir/$f" || die "$dir/$f differs from contrib/$f"
	done
	perl -MJSON::PP -e 'local $/; ref(decode_json(<STDIN>)->{panels}) eq "ARRAY" or exit 1' \
		<"$dir/grafana/ha-balancer.json" || die "$dir/grafana/ha-balancer.json: no dashboard"
	if command -v promtool >/dev/null 2>&1; then
		promtool check rules "$dir/prometheus/ha-balancer-alerts.yml" >/dev/null \
			|| die "promtool check rules $dir/prometheus/ha-balancer-alerts.yml failed"
		(cd "$dir/prometheus" && promtool test rules ha-balancer-alerts.test.yml >/dev/null) \
			|| die "promtool test rules failed on the unpacked rules"
		echo "deb: the unpacked alerting rules pass promtool check rules and their unit tests"
	else
		echo "deb: promtool skipped: it is not installed (make deps installs it: package prometheus)"
	fi
}

# The manual page F renders without a warning, as lintian renders it.
manpage_ok() {
	local out
	out=$(LC_ALL=C.UTF-8 MANROFFSEQ='' MANWIDTH=80 man --warnings -E UTF-8 -l -Tutf8 -Z "$1" 2>&1 >/dev/null)
	[ -z "$out" ] || die "$1: man --warnings: $out"
}

# The hab package HAB_DEB: fields, files, the unpacked binary, its manual
# pages and completion, then hab status against Debian's nginx running the
# unpacked module of ROOT.
check_hab() {
	local tmp=$1 hab_deb=$2 version=$3 arch=$4 modroot=$5 root have want f hab cmds cmd port
	[ "$(dpkg-deb -f "$hab_deb" Package)" = "$HAB_NAME" ] || die "Package is not $HAB_NAME"
	[ "$(dpkg-deb -f "$hab_deb" Source)" = "$SOURCE_NAME" ] || die "$HAB_NAME: Source is not $SOURCE_NAME"
	[ "$(dpkg-deb -f "$hab_deb" Version)" = "$version" ] || die "$HAB_NAME: Version is not $version"
	[ "$(dpkg-deb -f "$hab_deb" Architecture)" = "$arch" ] || die "$HAB_NAME: Architecture is not $arch"
	have=$(dpkg-deb -f "$hab_deb" Depends)
	[[ "$have, " == "libc6 (>= "* ]] || die "$HAB_NAME: Depends '$have' lacks libc6 (>= ...)"
	[[ "$have" != *nginx* ]] || die "$HAB_NAME: Depends '$have' names nginx: hab runs without it"
	for f in Maintainer Description Installed-Size Section Priority; do
		[ -n "$(dpkg-deb -f "$hab_deb" "$f")" ] || die "$HAB_NAME: no $f field"
	done
	have=$(dpkg-deb --ctrl-tarfile "$hab_deb" | tar -t | sed 's|^\./||; /^$/d' | LC_ALL=C sort | xargs)
	[ "$have" = "control md5sums" ] || die "$HAB_NAME: control members: $have"
	echo "deb: $HAB_NAME $version $arch, Depends: $(dpkg-deb -f "$hab_deb" Depends)"

	root=$tmp/hab-root
	dpkg-deb -x "$hab_deb" "$root"
	dpkg-deb -e "$hab_deb" "$tmp/HAB-DEBIAN"
	(cd "$root" && md5sum --quiet -c "$tmp/HAB-DEBIAN/md5sums") || die "$HAB_NAME: md5sums do not match"
	hab=$root/usr/bin/hab
	[ "$("$hab" --version)" = "hab ${version%-*}" ] || die "hab --version: $("$hab" --version)"
	! readelf -S "$hab" | grep -Eq ' \.(symtab|debug_[a-z]+|comment) ' || die "$hab is not stripped"
	linked_as_debian "$hab"

	# the files: one manual page per subcommand hab --help lists
	cmds=$("$hab" --help | awk '/^Commands:/ { on = 1; next } on && /^  [a-z]/ { print $1; next } on { exit }' \
		| grep -vx help)
	[ -n "$cmds" ] || die "hab --help lists no subcommand"
	want=$({
		printf '%s\n' ./usr/bin/hab \
			./usr/share/bash-completion/completions/hab \
			./usr/share/doc/$HAB_NAME/changelog.Debian.gz \
			./usr/share/doc/$HAB_NAME/copyright \
			./usr/share/fish/vendor_completions.d/hab.fish \
			./usr/share/lintian/overrides/$HAB_NAME \
			./usr/share/man/man1/hab.1.gz \
			./usr/share/zsh/vendor-completions/_hab
		for cmd in $cmds; do echo "./usr/share/man/man1/hab-$cmd.1.gz"; done
	} | LC_ALL=C sort)
	dpkg-deb -c "$hab_deb" >"$tmp/hab-contents"
	have=$(awk '$1 !~ /^d/ { print $6 }' "$tmp/hab-contents" | LC_ALL=C sort)
	[ "$have" = "$want" ] || die "$HAB_NAME files are:"$'\n'"$have"$'\n'"expected:"$'\n'"$want"
	owned_by_root_in_usr "$tmp/hab-contents"
	[ "$(dpkg-parsechangelog -l "$root/usr/share/doc/$HAB_NAME/changelog.Debian.gz" -S Version)" = "$version" ] \
		|| die "$HAB_NAME: changelog.Debian.gz does not start with $version"
	grep -q '^License: BSD-2-Clause$' "$root/usr/share/doc/$HAB_NAME/copyright" \
		|| die "$HAB_NAME: copyright names no BSD-2-Clause"

	# man finds the pages where the package puts them, and they render
	have=$(man -M "$root/usr/share/man" -w hab)
	[ "$have" = "$root/usr/share/man/man1/hab.1.gz" ] || die "man -w hab: $have"
	for f in "$root"/usr/share/man/man1/*.gz; do manpage_ok "$f"; done
	zcat "$root/usr/share/man/man1/hab.1.gz" | grep -q '^\.SH SUBCOMMANDS' || die "hab.1 lists no subcommands"
	echo "deb: man -w hab finds hab.1; $(echo "$cmds" | wc -l) subcommand pages; all render without warnings"

	# bash sources the completion, which completes a subcommand's name
	have=$(bash --norc --noprofile -c '
		set -e
		. "$1"
		complete -p hab >/dev/null
		COMP_WORDS=(hab sta) COMP_CWORD=1 COMP_LINE="hab sta" COMP_POINT=7
		_hab hab sta hab
		echo "${COMPREPLY[*]}"' bash "$root/usr/share/bash-completion/completions/hab") \
		|| die "bash: sourcing the completion failed"
	[ "$have" = status ] || die "bash completion of 'hab sta' gives '$have', not 'status'"
	echo "deb: bash completion: 'hab sta<TAB>' completes to 'status'"

	# hab status against Debian's nginx with the unpacked module and ha_api
	port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
	mkdir -p "$tmp/run"
	cat >"$tmp/run/nginx.conf" <<-EOF
		load_module $modroot/usr/lib/nginx/modules/$MODULE.so;
		pid $tmp/run/nginx.pid;
		error_log $tmp/run/error.log;
		worker_processes 2;
		events {}
		http {
		    access_log off;
		    client_body_temp_path $tmp/run/body;
		    proxy_temp_path $tmp/run/proxy;
		    fastcgi_temp_path $tmp/run/fastcgi;
		    uwsgi_temp_path $tmp/run/uwsgi;
		    scgi_temp_path $tmp/run/scgi;
		    upstream app {
		        ha_balance round_robin;
		        server 127.0.0.1:1 max_fails=2 fail_timeout=5s;
		        server 127.0.0.1:2 backup;
		    }
		    server {
		        listen 127.0.0.1:$port;
		        location /api/ { ha_api; }
		        location / { proxy_pass http://app; }
		    }
		}
	EOF
	NGINX_PID_FILE=$tmp/run/nginx.pid
	"$NGINX_BIN" -p "$tmp/run/" -c "$tmp/run/nginx.conf" || die "nginx did not start: $(cat "$tmp/run/error.log")"
	have=
	for _ in $(seq 50); do
		have=$("$hab" status "http://127.0.0.1:$port/api/" 2>&1) && break
		sleep 0.1
	done
	stop_nginx
	[[ "$have" == *app* && "$have" == *127.0.0.1:1* && "$have" == *127.0.0.1:2* ]] \
		|| die "hab status against nginx gave: $have"
	echo "deb: the unpacked hab status reads Debian's nginx running the unpacked module:"
	sed 's/^/    /' <<<"$have"
}

# Stops the nginx check_hab started, if it runs (QUIT, then waits for it).
NGINX_PID_FILE=
stop_nginx() {
	local pid
	[ -n "$NGINX_PID_FILE" ] && [ -f "$NGINX_PID_FILE" ] || return 0
	pid=$(cat "$NGINX_PID_FILE")
	kill -QUIT "$pid" 2>/dev/null || true
	for _ in $(seq 100); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		kill -KILL "$pid" 2>/dev/null || true
	fi
	NGINX_PID_FILE=
}

# nginx_t DIR LOAD_LINE NGINX_ARGS...: DIR/nginx.conf with LOAD_LINE and an
# ha_balance upstream (as make debian-module-check), NGINX_T_EXTRA after
# http{} if set, then nginx -t on it.
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
		${NGINX_T_EXTRA:-}
	EOF
	"$@" -e stderr
}

case "${1:-}" in
build) [ $# -eq 3 ] || die "usage: $0 build SO OUTDIR"; build "$2" "$3" ;;
check) [ $# -eq 3 ] || die "usage: $0 check SO OUTDIR"; check "$2" "$3" ;;
*) die "usage: $0 build SO OUTDIR | check SO OUTDIR" ;;
esac
