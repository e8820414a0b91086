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
use crate::nginx::{nginx_at_least_or_skip, nginx_or_skip, stock_nginx_or_skip};

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
