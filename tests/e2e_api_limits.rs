//! End-to-end: the weight range docs/api.md promises, through real nginx
//! (4 workers): with round_robin and least_conn any group whose total
//! weight / common divisor is within the room kept (262,144 entries); past
//! it a 507 with the figures, in the answer and the error log; p2c the
//! whole 1..1,000,000. (A PATCH to 100,000 on 4 servers of weight 1 was
//! 507 when the zone kept 64 KB of headroom.)

mod common;

use common::{Nginx, WORKERS};

#[test]
fn documented_weights_fit_and_past_the_room_the_507_says_why() {
    if !common::nginx_or_skip("documented_weights_fit_and_past_the_room_the_507_says_why") {
        return;
    }
    let _serial = common::serial();
    let port = common::free_port();
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
    let patch = |up: &str, id: usize, w: u64| {
        common::api_call(
            port,
            "PATCH",
            &format!("/api/upstreams/{up}/servers/{id}"),
            &format!("{{\"weight\":{w}}}"),
        )
    };
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
    let (_, v) = common::api_call(port, "GET", "/api/upstreams/rr/servers/2", "");
    assert_eq!(v["weight"], 1, "the refused change is not in force: {v}");
    assert!(!ngx.error_log().contains("[alert]"), "{}", ngx.error_log());
    ngx.stop();
}
