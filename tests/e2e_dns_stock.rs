//! End-to-end: stock nginx 1.28 following DNS SRV records (`service=`, `resolve`)
//!
//! The reference behaviour issue 9 builds on, with the DNS server of
//! [`hab_testkit::dns`] (BIND's `named`, changed at run time): nginx without
//! the module, its own round robin, `zone` + `resolver valid=1s` +
//! `server service.consul service=web resolve`, which asks for
//! `_web._tcp.service.consul` SRV records, as an operator following
//! Consul writes it. nginx re-resolves in worker 0 about every
//! `valid + 1` s (ngx_http_upstream_zone_resolve_handler) and edits the
//! peer list in the zone; every worker then uses the new list.
//!
//! - A backend added to the SRV records gets requests, one removed gets
//!   none, both within a bounded time, with no failed request.
//! - NXDOMAIN for the SRV name empties the upstream (every peer of the
//!   name is removed): 502 until the name is back. What ha_balance must
//!   at least match, and the design (docs/discovery-design.md) discusses.
//! - `hash ... consistent` gives the peers of one SRV target the same ring
//!   points: a key is not sticky to one of them.

use std::net::Ipv4Addr;
use std::thread;
use std::time::{Duration, Instant};

use hab_testkit::backend::process::Backend;
use hab_testkit::dns::{Named, Record, Srv};
use hab_testkit::http::get;
use hab_testkit::load::{outcome, tally};
use hab_testkit::nginx::{proxy_block, serial, Nginx, WORKERS};
use hab_testkit::port::free_port;
use hab_testkit::resolve::{named, stock_ready, FOLLOW, WEB};
use hab_testkit::skip::{say, test_name};

/// Pause between two requests of a poll.
const PAUSE: Duration = Duration::from_millis(25);

/// `webI.node.consul`: the A record of backend `webI` (indices from 1).
fn target(i: usize) -> String {
    format!("web{i}.node.consul")
}

fn srv(b: &Backend, i: usize) -> Srv {
    Srv {
        priority: 1,
        weight: 1,
        port: b.port,
        target: target(i),
    }
}

/// Three backends `web1..web3`, each with an A record `webN.node.consul`,
/// the SRV records naming `in_dns` (indices from 1), and nginx on top.
fn setup(in_dns: &[usize]) -> (Vec<Backend>, Named, u16, Nginx) {
    let b = Backend::start_many("web", 3);
    let in_dns: Vec<&Backend> = in_dns.iter().map(|&i| &b[i - 1]).collect();
    let ns = named(&b, &in_dns);
    let port = free_port();
    let upstream = format!(
        "        zone up 64k;
        resolver 127.0.0.1:{} valid=1s;
        resolver_timeout 2s;
        server service.consul service=web resolve;",
        ns.port()
    );
    let ngx = Nginx::start_stock(&proxy_block(port, &upstream, ""), WORKERS);
    (b, ns, port, ngx)
}

/// One request every [`PAUSE`] until `done(outcomes so far)` holds or
/// `limit` passes; every outcome with its time since `t0`.
fn poll(
    port: u16,
    t0: Instant,
    limit: Duration,
    mut done: impl FnMut(&[(Duration, String)]) -> bool,
) -> Vec<(Duration, String)> {
    let mut seen = Vec::new();
    let deadline = Instant::now() + limit;
    // Bounded by the deadline, and by count (one request per pass).
    for _ in 0..(limit.as_millis() / PAUSE.as_millis()) {
        seen.push((t0.elapsed(), outcome(&get(port, "/"))));
        if done(&seen) || Instant::now() >= deadline {
            break;
        }
        thread::sleep(PAUSE);
    }
    seen
}

/// Whether the outcomes of the last `window` hold `name`.
fn recent(seen: &[(Duration, String)], window: Duration, name: &str) -> bool {
    let Some(&(last, _)) = seen.last() else {
        return false;
    };
    seen.iter()
        .rev()
        .take_while(|(t, _)| last.saturating_sub(*t) <= window)
        .any(|(_, o)| o == name)
}

fn first(seen: &[(Duration, String)], name: &str) -> Option<Duration> {
    seen.iter().find(|(_, o)| o == name).map(|(t, _)| *t)
}

fn last(seen: &[(Duration, String)], name: &str) -> Option<Duration> {
    seen.iter().rev().find(|(_, o)| o == name).map(|(t, _)| *t)
}

fn summary(seen: &[(Duration, String)]) -> String {
    let mut s = String::new();
    let mut prev: Option<&str> = None;
    for (t, o) in seen {
        if prev != Some(o) {
            s.push_str(&format!(" {:.2}s:{o}", t.as_secs_f64()));
            prev = Some(o);
        }
    }
    s
}

#[test]
fn stock_nginx_follows_srv_changes() {
    let test = test_name();
    if !stock_ready() {
        return;
    }
    let _serial = serial();
    let (b, ns, port, ngx) = setup(&[1, 2]);

    // nginx resolves at start: both backends in DNS get requests
    let t0 = Instant::now();
    let seen = poll(port, t0, FOLLOW, |s| {
        first(s, "web1").is_some() && first(s, "web2").is_some()
    });
    assert!(
        first(&seen, "web1").is_some() && first(&seen, "web2").is_some(),
        "web1 and web2 not both reached within {FOLLOW:?}:{}\nerror.log:\n{}",
        summary(&seen),
        ngx.error_log()
    );
    assert_eq!(first(&seen, "web3"), None, "{}", summary(&seen));

    // web2 leaves and web3 joins, in one DNS update
    ns.set_srv(WEB, &[srv(&b[0], 1), srv(&b[2], 3)]).unwrap();
    let t0 = Instant::now();
    let quiet = Duration::from_millis(2500);
    let seen = poll(port, t0, FOLLOW + quiet, |s| {
        first(s, "web3").is_some()
            && s.last()
                .is_some_and(|(t, _)| t.saturating_sub(last(s, "web2").unwrap_or_default()) > quiet)
    });
    let (joined, left) = (first(&seen, "web3"), last(&seen, "web2"));
    let errors: Vec<&(Duration, String)> =
        seen.iter().filter(|(_, o)| !o.starts_with("web")).collect();
    assert!(
        errors.is_empty(),
        "requests failed while the peer list changed: {errors:?}\nerror.log:\n{}",
        ngx.error_log()
    );
    assert!(
        joined.is_some_and(|t| t <= FOLLOW),
        "web3 (added to DNS) not reached within {FOLLOW:?}:{}\nerror.log:\n{}",
        summary(&seen),
        ngx.error_log()
    );
    assert!(
        left.unwrap_or_default() <= FOLLOW && !recent(&seen, quiet, "web2"),
        "web2 (removed from DNS) still reached {:?} after the change:{}",
        left,
        summary(&seen)
    );
    say(&format!(
        "{test}: web3 first reached after {:?}, web2 last reached after {:?}",
        joined.unwrap_or_default(),
        left.unwrap_or_default()
    ));

    // and from every worker: web2's own count stays at zero
    b[1].reset();
    let after = poll(port, Instant::now(), Duration::from_secs(5), |s| {
        s.len() >= 40
    });
    assert_eq!(b[1].stats().requests, 0, "{}", summary(&after));
    assert!(
        after.iter().all(|(_, o)| o == "web1" || o == "web3"),
        "{}",
        summary(&after)
    );
    assert!(
        recent(&after, Duration::from_secs(5), "web1")
            && recent(&after, Duration::from_secs(5), "web3"),
        "{}",
        summary(&after)
    );
    assert!(ngx.crashes().is_empty(), "{:?}", ngx.crashes());
}

#[test]
fn stock_nginx_empties_the_upstream_on_nxdomain() {
    let test = test_name();
    if !stock_ready() {
        return;
    }
    let _serial = serial();
    let (b, ns, port, ngx) = setup(&[1]);

    let t0 = Instant::now();
    let seen = poll(port, t0, FOLLOW, |s| first(s, "web1").is_some());
    assert!(first(&seen, "web1").is_some(), "{}", summary(&seen));

    // the SRV name goes away: NXDOMAIN
    ns.set_srv(WEB, &[]).unwrap();
    assert_eq!(
        ns.query(WEB, hab_testkit::dns::wire::SRV).unwrap().rcode,
        hab_testkit::dns::wire::NXDOMAIN
    );
    let t0 = Instant::now();
    let seen = poll(port, t0, FOLLOW, |s| {
        s.last().is_some_and(|(_, o)| o == "HTTP 502")
    });
    let emptied = first(&seen, "HTTP 502");
    assert!(
        emptied.is_some(),
        "no 502 within {FOLLOW:?} of NXDOMAIN:{}\nerror.log:\n{}",
        summary(&seen),
        ngx.error_log()
    );
    let log = ngx.error_log();
    assert!(
        log.contains("could not be resolved (3: Host not found)"),
        "error.log:\n{log}"
    );
    assert!(log.contains("no live upstreams"), "error.log:\n{log}");

    // the name comes back with another backend
    ns.set_srv(WEB, &[srv(&b[1], 2)]).unwrap();
    let t0 = Instant::now();
    let seen = poll(port, t0, FOLLOW, |s| first(s, "web2").is_some());
    assert!(
        first(&seen, "web2").is_some(),
        "web2 not reached within {FOLLOW:?} of the name's return:{}",
        summary(&seen)
    );
    say(&format!(
        "{test}: 502 from {:?} after NXDOMAIN; back {:?} after the name returned",
        emptied.unwrap_or_default(),
        first(&seen, "web2").unwrap_or_default()
    ));
    assert!(ngx.crashes().is_empty(), "{:?}", ngx.crashes());
}

/// nginx's consistent hash places ring points by a peer's `server`
/// string (`ngx_http_upstream_update_chash`), and at a point it round-robins
/// among all peers with that string (`ngx_http_upstream_get_chash_peer`).
/// A resolved peer's `server` is its SRV target (or the template's name),
/// so the peers of one target share their points: a key sticks to the
/// target, not to a peer. (The design, docs/discovery-design.md 3.10,
/// decides what ha_balance's ketama does for resolved peers.)
#[test]
fn stock_consistent_hash_does_not_tell_apart_peers_of_one_srv_target() {
    if !stock_ready() {
        return;
    }
    let _serial = serial();
    // two services on one target host, on two ports
    let b = Backend::start_many("web", 2);
    let records = vec![
        Record::a(&target(1), Ipv4Addr::LOCALHOST),
        Record::Srv {
            name: WEB.into(),
            srv: srv(&b[0], 1),
        },
        Record::Srv {
            name: WEB.into(),
            srv: srv(&b[1], 1),
        },
    ];
    let ns = Named::start("consul", &records).expect("start named");
    let port = free_port();
    let upstream = format!(
        "        hash $request_uri consistent;
        zone up 64k;
        resolver 127.0.0.1:{} valid=1s;
        server service.consul service=web resolve;",
        ns.port()
    );
    let ngx = Nginx::start_stock(&proxy_block(port, &upstream, ""), WORKERS);
    let seen = poll(port, Instant::now(), FOLLOW, |s| {
        first(s, "web1").is_some() && first(s, "web2").is_some()
    });
    assert!(
        first(&seen, "web1").is_some() && first(&seen, "web2").is_some(),
        "both peers not reached within {FOLLOW:?}:{}\nerror.log:\n{}",
        summary(&seen),
        ngx.error_log()
    );
    // one key, ten requests: both peers answer it, in turn
    let same: Vec<String> = (0..10).map(|_| outcome(&get(port, "/key"))).collect();
    let tally = tally(&same);
    assert_eq!(
        (tally.get("web1"), tally.get("web2")),
        (Some(&5), Some(&5)),
        "{same:?}"
    );
    assert!(ngx.crashes().is_empty(), "{:?}", ngx.crashes());
}
