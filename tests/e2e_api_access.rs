//! End-to-end: where `ha_api` may be written, through real nginx with
//! 4 workers: `limit_except` inside an `ha_api` location restricts the
//! writes to the clients it allows (they can PATCH, others get 403),
//! and a regex or named location is refused by `nginx -t` (it routed
//! nothing: every request answered 404).

use hab_testkit::api::api_call;
use hab_testkit::backend::process::Backend;
use hab_testkit::nginx::{nginx_or_skip, proxy_block, server_lines, stock_mode, Nginx, WORKERS};
use hab_testkit::port::free_port;

fn weight(port: u16, api: &str) -> u64 {
    let (s, v) = api_call(port, "GET", &format!("{api}upstreams/up/servers/0"), "");
    assert_eq!(s, 200, "{api}: {v}");
    v["weight"].as_u64().unwrap_or_else(|| panic!("{api}: {v}"))
}

#[test]
fn limit_except_lets_the_allowed_client_write_and_refuses_the_others() {
    if !nginx_or_skip() || stock_mode() {
        return;
    }
    let b = [Backend::start("a"), Backend::start("b")];
    let port = free_port();
    let upstream = format!(
        "        ha_balance round_robin;\n{}",
        server_lines(&b, &["", ""])
    );
    // The test client is 127.0.0.1: allowed in /api/ and /api2/ (limit_except
    // written after and before ha_api), not in /locked/.
    let api = "        location /api/ {
            ha_api write=on;
            limit_except GET HEAD { allow 127.0.0.1; deny all; }
        }
        location /api2/ {
            limit_except GET { allow 127.0.0.1; deny all; }
            ha_api write=on;
        }
        location /locked/ {
            ha_api write=on;
            limit_except GET HEAD { allow 127.0.0.2; deny all; }
        }
";
    let conf = proxy_block(port, &upstream, "").replacen(
        "        location / {",
        &format!("{api}        location / {{"),
        1,
    );
    let ngx = Nginx::start(&conf, WORKERS);

    for api in ["/api/", "/api2/", "/locked/"] {
        let (s, v) = api_call(port, "GET", &format!("{api}upstreams"), "");
        assert_eq!(s, 200, "GET {api}: {v}");
        assert!(v["up"]["peers"].is_array(), "{api}: {v}");
    }
    // the allowed client writes (nginx answered 405 before: the
    // limit_except block had no content handler)
    let (s, v) = api_call(
        port,
        "PATCH",
        "/api/upstreams/up/servers/0",
        r#"{"weight": 7}"#,
    );
    assert_eq!(s, 200, "PATCH /api/: {v}");
    assert_eq!(v["weight"], 7, "{v}");
    let (s, v) = api_call(
        port,
        "PATCH",
        "/api2/upstreams/up/servers/0",
        r#"{"weight": 9}"#,
    );
    assert_eq!(s, 200, "PATCH /api2/: {v}");
    assert_eq!(weight(port, "/api/"), 9);
    // the client limit_except does not allow gets 403 and changes nothing
    let r = hab_testkit::http::request(
        port,
        "PATCH",
        "/locked/upstreams/up/servers/0",
        br#"{"weight": 3}"#,
    )
    .unwrap();
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(weight(port, "/locked/"), 9);
    // a method outside the list reaches the API (its own JSON answer),
    // not nginx's 405 page
    let (s, v) = api_call(port, "DELETE", "/api/upstreams/up/servers/0", "");
    assert!(v["error"]["code"].is_string(), "{s} {v}");
    let log = ngx.error_log();
    assert!(!log.contains("[alert]"), "{log}");
}

#[test]
fn ha_api_in_a_regex_or_named_location_is_refused() {
    if !nginx_or_skip() || stock_mode() {
        return;
    }
    let server = |loc: &str| {
        format!(
            "    upstream up {{
        ha_balance round_robin;
        server 127.0.0.1:1;
    }}
    server {{
        listen 127.0.0.1:1;
        location / {{ proxy_pass http://up; }}
        location {loc} {{ ha_api write=on; }}
    }}
"
        )
    };
    for (loc, kind) in [
        ("~ ^/api/", "regex"),
        ("~* /API/", "regex"),
        ("@api", "named"),
    ] {
        let c = Nginx::check_detailed(&server(loc));
        c.assert_emerg(
            "ha_api write=on;",
            &[
                &format!("\"ha_api\" cannot be used in a {kind} location"),
                "use a prefix location",
            ],
        );
    }
    // prefix and exact locations pass
    for loc in ["/api/", "= /api/upstreams", "^~ /api/"] {
        let (ok, err) = Nginx::check(&server(loc));
        assert!(ok, "{loc}: {err}");
    }
}
