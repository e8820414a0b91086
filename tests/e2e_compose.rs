//! End-to-end: composition with `zone`, `keepalive`, `$upstream_addr` and
//! HTTPS upstreams (`proxy_ssl_session_reuse`)

use std::collections::BTreeMap;

use hab_testkit::backend::process::{addr_names, Backend};
use hab_testkit::http::get;
use hab_testkit::load::{load, sequence, tally};
use hab_testkit::nginx::{
    nginx_or_skip, proxy_block, scratch_dir, self_signed_cert, serial, server_lines, Nginx, WORKERS,
};
use hab_testkit::port::free_port;

const KEEPALIVE_LOCATION: &str = "            proxy_http_version 1.1;
            proxy_set_header Connection \"\";";

#[test]
fn zone_and_keepalive_still_balance_exactly() {
    if !nginx_or_skip() {
        return;
    }
    let _serial = serial();
    let b = vec![
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    ];
    let port = free_port();
    let upstream = format!(
        "        ha_balance round_robin;\n        zone up_zone 64k;\n{}        keepalive 8;",
        server_lines(&b, &["weight=5", "", ""])
    );
    let mut ngx = Nginx::start(&proxy_block(port, &upstream, KEEPALIVE_LOCATION), WORKERS);

    let seq = sequence(port, "/", 700);
    assert_eq!(
        seq[..7],
        ["a", "a", "b", "a", "c", "a", "a"],
        "first 7 responses"
    );
    let t = tally(&seq);
    assert_eq!(
        (t.get("a"), t.get("b"), t.get("c"), t.len()),
        (Some(&500), Some(&100), Some(&100), 3),
        "{t:?}"
    );
    // keepalive really works: far fewer upstream connections than requests.
    let conns: u64 = b.iter().map(|x| x.stats().conns).sum();
    assert!(
        conns < 100,
        "{conns} upstream connections for 700 requests: keepalive not used"
    );

    // And under concurrency nothing breaks.
    let res = load(port, "/", 4, 70);
    assert_eq!(res.bad(), 0, "{:?}", res.failures);
    assert_eq!(
        (res.count("a"), res.count("b"), res.count("c")),
        (200, 40, 40),
        "round robin is exact under concurrency too: {:?}",
        res.by_body
    );
    ngx.stop();
}

#[test]
fn least_conn_with_zone_and_keepalive() {
    if !nginx_or_skip() {
        return;
    }
    let _serial = serial();
    let b = Backend::start_many("k", 3);
    let port = free_port();
    let upstream = format!(
        "        zone up_zone 64k;\n        ha_balance least_conn;\n{}        keepalive 8;",
        server_lines(&b, &[])
    );
    let mut ngx = Nginx::start(&proxy_block(port, &upstream, KEEPALIVE_LOCATION), WORKERS);

    // Idle: every pick is a tie at 0 in flight, broken by round robin.
    let even = |phase: &str| {
        let t = tally(&sequence(port, "/", 300));
        for x in &b {
            let n = t.get(&x.name).copied().unwrap_or(0);
            assert!(
                (90..=110).contains(&n),
                "{phase}: {} got {n} of 300: {t:?}",
                x.name
            );
        }
    };
    even("before load");

    // Concurrent load through cached connections (shares depend on timing).
    let res = load(port, "/", 6, 50);
    assert_eq!(res.bad(), 0, "{:?}", res.failures);
    for x in &b {
        assert_eq!(x.stats().inflight, 0, "{}", x.name);
    }

    // Idle again: a connection count leaked on the keepalive path would
    // make least_conn avoid that peer from now on.
    even("after load");
    ngx.stop();
}

#[test]
fn upstream_addr_is_logged_for_the_peer_that_answered() {
    if !nginx_or_skip() {
        return;
    }
    let _serial = serial();
    let b = Backend::start_many("u", 3);
    let names = addr_names(&b);
    let port = free_port();
    let upstream = format!(
        "        ha_balance least_conn;\n{}",
        server_lines(&b, &["weight=2", "", ""])
    );
    let mut ngx = Nginx::start(&proxy_block(port, &upstream, ""), WORKERS);

    let mut answered = BTreeMap::new();
    for i in 0..60 {
        let r = get(port, &format!("/?id={i}")).expect("request");
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header("x-backend").map(str::to_owned),
            Some(r.body_trimmed())
        );
        answered.insert(format!("/?id={i}"), r.body_trimmed());
    }
    let entries = ngx.access_entries();
    let mut checked = 0;
    for e in entries.iter().filter(|e| e.uri.starts_with("/?id=")) {
        assert_eq!(e.upstream_addr.len(), 1, "{e:?}");
        assert_eq!(e.upstream_status, ["200"], "{e:?}");
        let logged = names
            .get(&e.upstream_addr[0])
            .unwrap_or_else(|| panic!("unknown peer {e:?}"));
        assert_eq!(Some(logged), answered.get(&e.uri), "{e:?}");
        checked += 1;
    }
    assert_eq!(checked, 60, "access log lines: {}", ngx.access_log());
    ngx.stop();
}

#[test]
fn https_upstreams_with_session_reuse() {
    if !nginx_or_skip() {
        return;
    }
    let _serial = serial();
    let certs = scratch_dir();
    let (cert, key) = self_signed_cert(&certs);
    let (t1, t2, port) = (free_port(), free_port(), free_port());
    let tls_server = |p: u16, name: &str| {
        format!(
            "    server {{
        listen 127.0.0.1:{p} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_session_cache shared:tls_{name}:1m;
        default_type text/plain;
        return 200 \"tls-{name} $ssl_session_reused\\n\";
    }}
",
            cert = cert.display(),
            key = key.display()
        )
    };
    let block = format!(
        "    upstream tls_up {{
        ha_balance round_robin;
        server 127.0.0.1:{t1};
        server 127.0.0.1:{t2};
    }}
{}{}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass https://tls_up;
            proxy_ssl_session_reuse on;
        }}
    }}
",
        tls_server(t1, "one"),
        tls_server(t2, "two")
    );
    let mut ngx = Nginx::start(&block, WORKERS);

    let seq = sequence(port, "/", 40);
    let by_peer = tally(
        &seq.iter()
            .map(|s| s.split(' ').next().unwrap_or(""))
            .collect::<Vec<_>>(),
    );
    assert_eq!(
        (by_peer.get("tls-one"), by_peer.get("tls-two")),
        (Some(&20), Some(&20)),
        "responses: {seq:?}"
    );
    // Sessions are saved after each handshake and offered on the next
    // connection to the same peer: only the first connection per peer (per
    // worker, at most 2 x 4) is a full handshake.
    let reused = seq.iter().filter(|s| s.ends_with(" r")).count();
    assert!(
        reused >= 40 - 2 * WORKERS,
        "only {reused} of 40 TLS sessions reused: {seq:?}"
    );
    ngx.stop();
}
