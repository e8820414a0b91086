//! End-to-end: upstream names the API must carry. A name with `/` is
//! addressed with `%2F` (each path segment is percent-decoded); a name
//! that is not UTF-8 fails `nginx -t` (the API, the metrics and the state
//! file name upstreams in UTF-8; it used to become "" everywhere).

use std::fs;

use hab_testkit::api::api_call;
use hab_testkit::backend::process::Backend;
use hab_testkit::nginx::{nginx_or_skip, scratch_dir, serial, Nginx, WORKERS};
use hab_testkit::port::free_port;

#[test]
fn a_name_with_a_slash_is_addressed_percent_encoded() {
    if !nginx_or_skip() {
        return;
    }
    let _serial = serial();
    let b = Backend::start("n");
    let port = free_port();
    let conf = format!(
        "    upstream \"a/b\" {{
        ha_balance round_robin;
        server {};
    }}
    upstream a {{
        ha_balance round_robin;
        server 127.0.0.1:1;
    }}
    server {{
        listen 127.0.0.1:{port};
        location /api/ {{ ha_api write=on; }}
    }}
",
        b.addr()
    );
    let mut ngx = Nginx::start(&conf, WORKERS);
    let (s, v) = api_call(port, "GET", "/api/upstreams", "");
    assert_eq!(s, 200, "{v}");
    assert!(v["a/b"].is_object() && v["a"].is_object(), "{v}");
    let (s, v) = api_call(port, "GET", "/api/upstreams/a%2Fb/servers/0", "");
    assert_eq!(
        (s, v["server"].as_str()),
        (200, Some(b.addr().as_str())),
        "{v}"
    );
    let (s, v) = api_call(
        port,
        "PATCH",
        "/api/upstreams/a%2Fb/servers/0",
        r#"{"drain":true}"#,
    );
    assert_eq!((s, v["drain"].as_bool()), (200, Some(true)), "{v}");
    // Unencoded, the slash separates: upstream "a" has no resource "b".
    let (s, v) = api_call(port, "GET", "/api/upstreams/a/b/servers/0", "");
    assert_eq!(s, 404, "{v}");
    let (s, v) = api_call(port, "GET", "/api/upstreams/a/servers/0", "");
    assert_eq!((s, v["drain"].as_bool()), (200, Some(false)), "{v}");
    assert!(!ngx.error_log().contains("[alert]"), "{}", ngx.error_log());
    ngx.stop();
}

#[test]
fn a_name_that_is_not_utf8_fails_nginx_t() {
    if !nginx_or_skip() {
        return;
    }
    let _serial = serial();
    let dir = scratch_dir();
    let inc = dir.join("latin1.conf");
    // "café" in Latin-1.
    fs::write(
        &inc,
        b"upstream caf\xe9 {\n    ha_balance round_robin;\n    server 127.0.0.1:1;\n}\n",
    )
    .unwrap();
    let (ok, stderr) = Nginx::check(&format!("    include {};\n", inc.display()));
    assert!(!ok, "{stderr}");
    assert!(
        stderr.lines().any(|l| l.contains("[emerg]")
            && l.contains("upstream name \"caf...\" is not valid UTF-8 (byte 0xe9 at offset 3)")
            && l.contains(&format!("{}:2", inc.display()))),
        "{stderr}"
    );
    let _ = fs::remove_dir_all(&dir);
}
