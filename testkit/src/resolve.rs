//! Servers nginx resolves at run time: what the resolve tests share
//!
//! nginx (>= 1.27.3) follows `server service.consul service=web resolve`
//! by asking [`dns::Named`] for the SRV records of [`WEB`]; every backend
//! has an A record `NAME.node.consul -> 127.0.0.1` ([`target`]), and the
//! SRV records name those targets with the backends' ports.

use std::net::Ipv4Addr;
use std::time::Duration;

use crate::backend::process::Backend;
use crate::dns::{self, Named, Record, Srv};
use crate::nginx::{nginx_at_least_or_skip, nginx_or_skip, nginx_version, stock_nginx_or_skip};

/// The SRV name `server service.consul service=web resolve` asks for.
pub const WEB: &str = "_web._tcp.service.consul";

/// Longest time nginx (and the module) may take to follow a DNS change:
/// two re-resolve periods of `valid=1s` (about 2 s each) and slack for a
/// busy 2-core machine.
pub const FOLLOW: Duration = Duration::from_secs(10);

/// nginx and the module built, nginx >= 1.27.3 (`resolve`, `service=`;
/// `make test` also runs the end-to-end tests against Debian's 1.22), and
/// the DNS server installed; otherwise a `SKIP` line (or a failure, see
/// [`crate::skip`]) and `false`.
pub fn ready() -> bool {
    nginx_or_skip()
        && nginx_at_least_or_skip((1, 27, 3), "server ... resolve")
        && dns::dns_or_skip()
}

/// nginx and the module built and the DNS server installed, on any nginx
/// version: below 1.27.3 the module resolves names itself (`ha_server`,
/// [`for_this_nginx`]); otherwise a `SKIP` line and `false`.
pub fn module_ready() -> bool {
    nginx_or_skip() && dns::dns_or_skip()
}

/// Whether nginx resolves `server ... resolve` itself (>= 1.27.3).
pub fn nginx_resolves() -> bool {
    nginx_version().is_some_and(|v| v >= (1, 27, 3))
}

/// An http block written for nginx >= 1.27.3 as this nginx takes it. Below
/// 1.27.3, inside `upstream {}`: `server ... resolve` becomes the
/// module's `ha_server ... resolve` (same parameters), and `resolver` /
/// `resolver_timeout`, which 1.22 has in http{} only, move to the top of
/// the block (the first of each: one resolver per http{}).
pub fn for_this_nginx(http_block: &str) -> String {
    if nginx_resolves() {
        return http_block.to_owned();
    }
    let mut head: Vec<String> = Vec::new();
    let mut body = String::new();
    let mut depth = 0usize;
    for line in http_block.lines() {
        let t = line.trim_start();
        if depth == 0 && t.starts_with("upstream ") && t.ends_with('{') {
            depth = 1;
            body.push_str(line);
            body.push('\n');
            continue;
        }
        if depth > 0 {
            if t.starts_with("resolver ") || t.starts_with("resolver_timeout ") {
                let key = t.split_whitespace().next().unwrap_or_default();
                if !head
                    .iter()
                    .any(|h| h.split_whitespace().next() == Some(key))
                {
                    head.push(t.to_owned());
                }
                continue;
            }
            let is_resolve = t.starts_with("server ")
                && t.trim_end_matches(';')
                    .split_whitespace()
                    .any(|w| w == "resolve");
            if is_resolve {
                body.push_str(&line.replacen("server ", "ha_server ", 1));
                body.push('\n');
                continue;
            }
            depth += t.matches('{').count();
            depth -= t.matches('}').count().min(depth);
        }
        body.push_str(line);
        body.push('\n');
    }
    let mut out: String = head.iter().map(|h| format!("    {h}\n")).collect();
    out.push_str(&body);
    out
}

/// Like [`ready`], for tests that run stock nginx only: the module need
/// not be built.
pub fn stock_ready() -> bool {
    stock_nginx_or_skip()
        && nginx_at_least_or_skip((1, 27, 3), "server ... resolve")
        && dns::dns_or_skip()
}

/// The A record name of backend `name`: `NAME.node.consul`.
pub fn target(name: &str) -> String {
    format!("{name}.node.consul")
}

/// The SRV record of backend `b`: target `NAME.node.consul`, its port.
pub fn srv_pw(b: &Backend, priority: u16, weight: u16) -> Srv {
    Srv {
        priority,
        weight,
        port: b.port,
        target: target(&b.name),
    }
}

/// [`srv_pw`] with priority 1 and weight 1.
pub fn srv(b: &Backend) -> Srv {
    srv_pw(b, 1, 1)
}

/// `named` with an A record `NAME.node.consul -> 127.0.0.1` for every
/// backend and the SRV records of `in_dns`.
pub fn named(b: &[Backend], in_dns: &[&Backend]) -> Named {
    let mut records: Vec<Record> = b
        .iter()
        .map(|b| Record::a(&target(&b.name), Ipv4Addr::LOCALHOST))
        .collect();
    records.extend(in_dns.iter().map(|b| Record::Srv {
        name: WEB.into(),
        srv: srv(b),
    }));
    Named::start("consul", &records).expect("start named")
}

/// Replaces the SRV records with those of `now` (one DNS update).
pub fn set_srv(ns: &Named, now: &[&Backend]) {
    let srvs: Vec<Srv> = now.iter().map(|b| srv(b)).collect();
    ns.set_srv(WEB, &srvs).expect("nsupdate");
}
