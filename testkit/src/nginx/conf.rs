//! Configuration text: the harness' nginx.conf around a test's http block,
//! and the pieces tests write their http blocks from

use std::path::Path;

use super::{module_so, stock_mode};
use crate::backend::process::Backend;
use crate::nginx::log::LOG_FORMAT;

/// Rewrites module directives for stock nginx (see `HAB_E2E_STOCK`).
pub(super) fn stockify(http_block: &str) -> String {
    http_block
        .lines()
        .filter_map(|l| {
            let t = l.trim();
            if t.starts_with("ha_balance least_conn") {
                Some(l.replace(t, "least_conn;"))
            } else if t.starts_with("ha_balance") {
                None
            } else {
                Some(l.to_owned())
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Ports of the `listen` directives in an http block, in order.
pub(super) fn listen_ports(http_block: &str) -> Vec<u16> {
    let mut ports = Vec::new();
    for stmt in http_block.split([';', '{', '}', '\n']) {
        let mut words = stmt.split_whitespace();
        if words.next() != Some("listen") {
            continue;
        }
        let Some(addr) = words.next() else { continue };
        let port = addr.rsplit(':').next().and_then(|p| p.parse::<u16>().ok());
        if let Some(p) = port {
            ports.push(p);
        }
    }
    ports
}

/// `worker_connections` unless a test asks for more.
pub const CONNECTIONS: usize = 1024;

/// The full nginx.conf around `http_block`; `module`: load the module
/// (unless [`stock_mode`]); `connections`: `worker_connections`.
pub(super) fn render_conf(
    dir: &Path,
    http_block: &str,
    workers: usize,
    connections: usize,
    module: bool,
) -> String {
    let d = dir.display();
    let (load, block) = if !module {
        (String::new(), http_block.to_owned())
    } else if stock_mode() {
        (String::new(), stockify(http_block))
    } else {
        (
            format!("load_module {};\n", module_so().display()),
            http_block.to_owned(),
        )
    };
    format!(
        "{load}\
worker_processes {workers};
daemon on;
master_process on;
error_log {d}/error.log info;
pid {d}/nginx.pid;

events {{
    worker_connections {connections};
}}

http {{
    log_format hab {LOG_FORMAT};
    access_log {d}/access.log hab;
    client_body_temp_path {d}/tmp/client_body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;

{block}
}}
"
    )
}

/// `server 127.0.0.1:PORT<params>;` lines, one per backend, with the
/// parameters given per backend (same length as `backends`, or empty).
pub fn server_lines(backends: &[Backend], params: &[&str]) -> String {
    backends
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let p = params.get(i).copied().unwrap_or("");
            let sep = if p.is_empty() { "" } else { " " };
            format!("        server {}{sep}{p};\n", b.addr())
        })
        .collect()
}

/// A typical http block: `upstream up { <upstream_body> }` and a server on
/// `port` proxying `/` to it, with `<location_extra>` in the location.
pub fn proxy_block(port: u16, upstream_body: &str, location_extra: &str) -> String {
    format!(
        "    upstream up {{
{upstream_body}
    }}

    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://up;
            proxy_connect_timeout 2s;
            proxy_read_timeout 10s;
{location_extra}
        }}
    }}
"
    )
}

/// An http block of checked upstreams: per `(name, ha_check line, server
/// addresses)` an `upstream name { ha_balance round_robin; <line>; server
/// ...; }`, and a server on `port` with the API at `/api/` (`ha_api
/// write=on` when `write`).
pub fn checked_upstreams<S: AsRef<str>>(
    port: u16,
    write: bool,
    upstreams: &[(&str, String, Vec<S>)],
) -> String {
    let mut out = String::new();
    for (name, check, addrs) in upstreams {
        let servers: String = addrs
            .iter()
            .map(|a| format!("        server {};\n", a.as_ref()))
            .collect();
        out.push_str(&format!(
            "    upstream {name} {{
        ha_balance round_robin;
        {check};
{servers}    }}
"
        ));
    }
    let api = if write { "ha_api write=on" } else { "ha_api" };
    out.push_str(&format!(
        "
    server {{
        listen 127.0.0.1:{port};
        location /api/ {{ {api}; }}
    }}
"
    ));
    out
}
