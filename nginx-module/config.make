# Sourced by auto/make after the Makefile is written: the rule that builds
# the Rust library (variables come from config).
#
# make cannot see the Rust sources, so cargo runs on every make through an
# always-out-of-date pseudo target; it rewrites the library only when
# something changed, and the module is relinked only then.  The check after
# it catches a renamed library, which would leave a stale one linked.

ngx_ha_json=$NGX_OBJS${ngx_dirsep}ha_balancer_cargo.json

cat << END                                                  >> $NGX_MAKEFILE

.NGX_HA_CARGO: ;

$ngx_ha_lib: .NGX_HA_CARGO
	$ngx_ha_cargo build --profile ngx -p hab-ffi \\
		--manifest-path $ngx_ha_root/Cargo.toml \\
		--target-dir $ngx_ha_target_dir \\
		--message-format=json-render-diagnostics > $ngx_ha_json
	@grep -q '"$ngx_ha_lib"' $ngx_ha_json || { \\
		echo "error: cargo did not build $ngx_ha_lib" \\
		     "(hab-ffi's [lib] name must match nginx-module/config)" >&2; \\
		exit 1; }

END

if [ "$ngx_ha_link" = DYNAMIC ]; then
    cat << END                                              >> $NGX_MAKEFILE
$NGX_OBJS${ngx_dirsep}ngx_http_upstream_ha_module$ngx_modext: $ngx_ha_lib

END
fi
