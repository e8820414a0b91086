//! End-to-end: the weight range docs/api.md promises, through real nginx
//! (4 workers): with round_robin and least_conn any group whose total
//! weight / common divisor is within the room kept (262,144 entries); past
//! it a 507 with the figures, in the answer and the error log; p2c the
//! whole 1..1,000,000. (A PATCH to 100,000 on 4 servers of weight 1 was
//! 507 when the zone kept 64 KB of headroom.)

use hab_testkit::api::api_call;
use hab_testkit::nginx::{nginx_or_skip, serial, stock_mode, Nginx, WORKERS};
use hab_testkit::port::free_port;
use hab_testkit::skip::{say, test_name};

/// PATCH server `id` of upstream `up` to weight `w` through the API.
fn patch_weight(port: u16, up: &str, id: usize, w: u64) -> (u16, serde_json::Value) {
    api_call(
        port,
        "PATCH",
        &format!("/api/upstreams/{up}/servers/{id}"),
        &format!("{{\"weight\":{w}}}"),
    )
}

#[test]
fn documented_weights_fit_and_past_the_room_the_507_says_why() {
    if !nginx_or_skip() {
        return;
    }
    let _serial = serial();
    let port = free_port();
    let servers = |w: &[u32]| -> String {
        w.iter()
            .enumerate()
            .map(|(k, w)| format!("        server 127.0.0.1:{} weight={w};\n", k + 1))
            .collect()
    };
    let conf = format!(
        "    upstream rr {{\n        ha_balance round_robin;\n{}    }}
    upstream lc {{\n        ha_balance least_conn;\n{}    }}
    upstream p2 {{\n        ha_balance p2c;\n{}    }}
    server {{
        listen 127.0.0.1:{port};
        location /api/ {{ ha_api write=on; }}
    }}
",
        servers(&[1, 1, 1, 1]),
        servers(&[5, 1, 1, 1]),
        servers(&[1, 1, 1, 1]),
    );
    let mut ngx = Nginx::start(&conf, WORKERS);
    let patch = |up: &str, id: usize, w: u64| patch_weight(port, up, id, w);
    for (up, id, w) in [
        ("rr", 0, 100_000),
        ("rr", 0, 262_141),
        ("rr", 1, 2),
        ("lc", 1, 100_000),
        ("lc", 2, 150_000),
        ("p2", 0, 1_000_000),
        ("p2", 1, 999_999),
    ] {
        let (s, v) = patch(up, id, w);
        assert_eq!(
            (s, v["weight"].as_u64()),
            (200, Some(w)),
            "{up} {id} {w}: {v}"
        );
    }
    let (s, v) = patch("rr", 2, 1_000_000);
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (507, Some("NoSpace")),
        "{v}"
    );
    let text = v["error"]["text"].as_str().unwrap();
    assert!(
        text.contains("would have 1262144 entries") && text.contains("room is kept for 262144"),
        "{text}"
    );
    assert!(
        ngx.error_log().contains("would have 1262144 entries"),
        "{}",
        ngx.error_log()
    );
    let (_, v) = api_call(port, "GET", "/api/upstreams/rr/servers/2", "");
    assert_eq!(v["weight"], 1, "the refused change is not in force: {v}");
    assert!(!ngx.error_log().contains("[alert]"), "{}", ngx.error_log());
    ngx.stop();
}

/// `ha_balance ... schedule_room=N` reserves room at `nginx -t` time: with
/// the largest, 4 servers take weights of up to 1,000,000 each through the
/// API (a schedule of 3,999,999 entries); the room survives a reload (the
/// zone is sized for it again); an upstream beside it keeps the default.
#[test]
fn schedule_room_reserves_the_whole_weight_range() {
    if !nginx_or_skip() {
        return;
    }
    if stock_mode() {
        say(&format!("{}: stock nginx has no ha_balance", test_name()));
        return;
    }
    let _serial = serial();
    let port = free_port();
    let conf = format!(
        "    upstream big {{
        ha_balance round_robin schedule_room=4194304;
        server 127.0.0.1:1;
        server 127.0.0.1:2;
        server 127.0.0.1:3;
        server 127.0.0.1:4;
    }}
    upstream small {{
        ha_balance least_conn;
        server 127.0.0.1:1;
        server 127.0.0.1:2;
    }}
    server {{
        listen 127.0.0.1:{port};
        location /api/ {{ ha_api write=on; }}
    }}
"
    );
    let mut ngx = Nginx::start(&conf, WORKERS);
    let patch = |up: &str, id: usize, w: u64| patch_weight(port, up, id, w);
    for (id, w) in [(0, 1_000_000), (1, 999_999), (2, 999_998), (3, 999_997)] {
        let (s, v) = patch("big", id, w);
        assert_eq!(
            (s, v["weight"].as_u64()),
            (200, Some(w)),
            "big {id} {w}: {v}"
        );
    }
    let (s, v) = patch("small", 0, 1_000_000);
    assert_eq!(s, 507, "the default room is kept beside it: {v}");
    assert!(
        v["error"]["text"]
            .as_str()
            .unwrap_or_default()
            .contains("room is kept for 262144 (ha_balance ... schedule_room=)"),
        "{v}"
    );
    ngx.reload();
    let (_, v) = api_call(port, "GET", "/api/upstreams/big/servers/1", "");
    assert_eq!(v["weight"], 999_999, "the weight survives the reload: {v}");
    let (s, v) = patch("big", 3, 1_000_000);
    assert_eq!(s, 200, "after a reload: {v}");
    assert!(!ngx.error_log().contains("[alert]"), "{}", ngx.error_log());
    ngx.stop();
}
