//! End-to-end: `ha_state_file` hardening with real nginx (4 workers):
//! what a 200 to a PATCH promises (the file holds the change, `0600`,
//! before the answer), state files nginx must not read (a FIFO, a device)
//! or cannot write (a missing directory), weights from the file that do
//! not fit, and entries that match no server.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use hab_testkit::api::api_call;
use hab_testkit::backend::process::Backend;
use hab_testkit::nginx::{
    nginx_or_skip, proxy_block, scratch_dir, serial, server_lines, state_file, Nginx, WORKERS,
};
use hab_testkit::port::free_port;
use serde_json::Value;

fn block(port: u16, upstream_body: &str, state_line: &str) -> String {
    let base = proxy_block(port, upstream_body, "");
    let base = base.replacen(
        "        location / {",
        "        location /api/ { ha_api write=on; }\n        location / {",
        1,
    );
    format!("{state_line}\n{base}")
}

fn patch(port: u16, id: usize, body: &str) -> (u16, Value) {
    api_call(
        port,
        "PATCH",
        &format!("/api/upstreams/up/servers/{id}"),
        body,
    )
}

/// The entries of upstream `up` in the state file, by server string.
fn saved(state: &Path) -> Vec<Value> {
    let v: Value = serde_json::from_slice(&fs::read(state).expect("the state file exists"))
        .expect("the state file is JSON");
    v["upstreams"]["up"].as_array().cloned().unwrap_or_default()
}

fn saved_weight(state: &Path, addr: &str) -> Option<u64> {
    saved(state)
        .iter()
        .find(|e| e["identity"].as_str().is_some_and(|i| i.contains(addr)))
        .and_then(|e| e["weight"].as_u64())
}

/// A 200 to a PATCH means "saved": the state file holds the change when
/// the answer arrives, for every change and whichever worker answered;
/// it is `0600` though nginx runs with umask 0, and no temporary file is
/// left beside it.
#[test]
fn a_patch_answered_200_is_in_the_state_file_already() {
    if !nginx_or_skip() {
        return;
    }
    let _serial = serial();
    let b = Backend::start_many("p", 3);
    let (state, line) = state_file();
    let port = free_port();
    let ups = format!("        ha_balance round_robin;\n{}", server_lines(&b, &[]));
    let mut ngx = Nginx::start(&block(port, &ups, &line), WORKERS);
    // Each change read back at once, over fresh connections (so over
    // several workers): 40 changes, bounded.
    for k in 0..40u64 {
        let id = (k % 3) as usize;
        let w = 2 + k;
        let (s, v) = patch(port, id, &format!("{{\"weight\":{w}}}"));
        assert_eq!(s, 200, "{v}");
        assert_eq!(
            saved_weight(&state, &b[id].addr()),
            Some(w),
            "change {k} answered 200 but not in the state file"
        );
    }
    let mode = fs::metadata(&state).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "state file mode {mode:o}");
    let dir = state.parent().unwrap();
    let others: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| {
            n.contains("ha-state.json") && n != "ha-state.json" && n != ".ha-state.json.lock"
        })
        .collect();
    assert!(others.is_empty(), "temporary files left: {others:?}");
    assert!(!ngx.error_log().contains("[alert]"), "{}", ngx.error_log());
    ngx.stop();
}

/// A FIFO or a link to /dev/zero as the state file: `nginx -t` returns
/// at once (it hung on the FIFO and read /dev/zero until 2 GB), says why
/// and goes on without the state; a state file in a directory that does
/// not exist fails `nginx -t` with an [emerg] naming it.
#[test]
fn a_fifo_a_device_or_a_missing_directory_is_refused_promptly() {
    if !nginx_or_skip() {
        return;
    }
    let _serial = serial();
    let port = free_port();
    let ups = "        ha_balance round_robin;\n        server 127.0.0.1:1;\n";
    let dir = scratch_dir();
    let fifo = dir.join("fifo.json");
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let zero = dir.join("zero.json");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    for (path, why) in [(&fifo, "a FIFO"), (&zero, "a device")] {
        let t0 = Instant::now();
        let (ok, stderr) = Nginx::check(&block(
            port,
            ups,
            &format!("    ha_state_file {};", path.display()),
        ));
        let took = t0.elapsed();
        // run_bounded kills nginx -t after 15 s: a hang shows as a failure.
        assert!(ok, "{why}: {stderr}");
        assert!(took < Duration::from_secs(10), "{why}: took {took:?}");
        assert!(
            stderr.contains("[warn]")
                && stderr.contains("ha_state_file")
                && stderr.contains("ignored")
                && stderr.contains(&format!("not a regular file ({why})")),
            "{why}: {stderr}"
        );
    }
    let missing = dir.join("no/such/dir/state.json");
    let state_line = format!("    ha_state_file {};", missing.display());
    let c = Nginx::check_detailed(&block(port, ups, &state_line));
    c.assert_emerg(
        "ha_state_file",
        &[
            &dir.join("no/such/dir").display().to_string(),
            "No such file or directory",
        ],
    );
    let not_dir = dir.join("fifo.json/state.json");
    let c = Nginx::check_detailed(&block(
        port,
        ups,
        &format!("    ha_state_file {};", not_dir.display()),
    ));
    c.assert_emerg("ha_state_file", &["fifo.json"]);
    let _ = fs::remove_dir_all(&dir);
}

/// A state file with a weight whose schedule does not fit the zone and
/// entries of servers no longer configured: the weight is refused in the
/// log and not kept (the API shows the configured weight, a later PATCH
/// works, the file no longer holds it); the unmatched entries are counted
/// in one line, and those of an upstream no longer configured in another.
#[test]
fn weights_that_do_not_fit_and_unmatched_entries_are_logged() {
    if !nginx_or_skip() {
        return;
    }
    let _serial = serial();
    let b = Backend::start_many("w", 4);
    let (state, line) = state_file();
    let port = free_port();
    let ups = format!("        ha_balance round_robin;\n{}", server_lines(&b, &[]));
    let conf = block(port, &ups, &line);
    let mut ngx = Nginx::start(&conf, WORKERS);
    assert_eq!(patch(port, 0, r#"{"weight":7}"#).0, 200);
    assert_eq!(patch(port, 1, r#"{"drain":true}"#).0, 200);
    ngx.stop();

    // Server 0's weight beyond any room; two servers that are gone.
    let mut v: Value = serde_json::from_slice(&fs::read(&state).unwrap()).unwrap();
    let entries = v["upstreams"]["up"].as_array_mut().unwrap();
    for e in entries.iter_mut() {
        if e["weight"] == 7 {
            e["weight"] = Value::from(1_000_000);
        }
    }
    for gone in [
        "up\u{0}127.0.0.1:1\u{0}127.0.0.1:1",
        "up\u{0}x:1\u{0}127.0.0.9:1",
    ] {
        entries.push(serde_json::json!({"identity": gone, "down": true}));
    }
    // And an upstream that is not configured any more.
    v["upstreams"]["gone"] = serde_json::json!([
        {"identity": "gone\u{0}a:1\u{0}127.0.0.1:1", "down": true},
        {"identity": "gone\u{0}b:1\u{0}127.0.0.1:2", "drain": true},
        {"identity": "gone\u{0}c:1\u{0}127.0.0.1:3", "weight": 2},
    ]);
    fs::write(&state, serde_json::to_vec(&v).unwrap()).unwrap();

    let mut ngx = Nginx::start(&conf, WORKERS);
    let log = ngx.error_log();
    assert!(
        log.contains("[warn]") && log.contains("weights of 1 servers were not restored"),
        "{log}"
    );
    assert!(
        log.contains("[notice]") && log.contains("2 entries of") && log.contains("match no server"),
        "{log}"
    );
    assert_eq!(
        log.matches("3 entries of 1 upstreams in").count(),
        1,
        "one line for the upstream no longer configured: {log}"
    );
    assert!(
        log.contains("name no ha_balance upstream, ignored"),
        "{log}"
    );
    let (_, s0) = api_call(port, "GET", "/api/upstreams/up/servers/0", "");
    assert_eq!(s0["weight"], 1, "{s0}");
    let (_, s1) = api_call(port, "GET", "/api/upstreams/up/servers/1", "");
    assert_eq!(s1["drain"], true, "the rest was restored: {s1}");
    let (s, v) = patch(port, 2, r#"{"weight":3}"#);
    assert_eq!(s, 200, "a later weight change works: {v}");
    assert_eq!(saved_weight(&state, &b[0].addr()), None, "not written back");
    assert_eq!(saved_weight(&state, &b[2].addr()), Some(3));
    assert_eq!(ngx.crashes(), Vec::<String>::new());
    ngx.stop();
}
