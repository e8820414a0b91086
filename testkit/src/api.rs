//! The module's HTTP API (`ha_api`) as a test calls it

use serde_json::Value;

use crate::http;

/// `method path` with `body` on the `ha_api` of nginx at `port`: the
/// status and the JSON body (`Null` for HEAD and non-JSON answers).
pub fn api_call(port: u16, method: &str, path: &str, body: &str) -> (u16, Value) {
    let r = http::request(port, method, path, body.as_bytes())
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let v = if method != "HEAD" && r.header("content-type") == Some("application/json") {
        serde_json::from_slice(&r.body)
            .unwrap_or_else(|e| panic!("{method} {path}: bad JSON {e}: {}", r.text()))
    } else {
        Value::Null
    };
    (r.status, v)
}

/// The servers of upstream `upstream` (`peers` of
/// `GET /api/upstreams/UPSTREAM`); panics unless the answer is 200.
pub fn api_peers(port: u16, upstream: &str) -> Vec<Value> {
    let path = format!("/api/upstreams/{upstream}");
    let (status, v) = api_call(port, "GET", &path, "");
    assert_eq!(status, 200, "GET {path}: {v}");
    v["peers"].as_array().cloned().unwrap_or_default()
}

/// The API's entry of the server `addr` in `upstream`; panics when it has
/// none.
pub fn api_peer(port: u16, upstream: &str, addr: &str) -> Value {
    api_peers(port, upstream)
        .into_iter()
        .find(|p| p["server"] == addr)
        .unwrap_or_else(|| panic!("{addr} not in {upstream}"))
}
