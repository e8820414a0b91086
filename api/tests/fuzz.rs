//! Bounded fuzzing, in the normal `cargo test`: the API's routing and
//! PATCH bodies, and the state file parser, against generated garbage and
//! near-misses of valid input. Each property asserts no panic and, for a
//! refusal, a clear error (a JSON error body with a code and a text, or a
//! non-empty reason). The number of inputs run is printed
//! (`cargo test -p hab-api --test fuzz -- --nocapture`).

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use hab_api::state::StateFile;
use hab_api::{handle, Method, Request, Upstream};
use hab_core::spec::{PeerSpec, Policy, UpstreamSpec};
use hab_core::testing::OwnedTable;
use proptest::prelude::*;
use proptest::test_runner::TestRunner;

const CASES: u32 = 3000;

fn table() -> OwnedTable {
    let ids: [&[u8]; 3] = [
        b"app\0a:80\x00127.0.0.1:1",
        b"app\0b:80\x00127.0.0.1:2",
        b"app\0c:80\x00127.0.0.1:3",
    ];
    let peers: Vec<PeerSpec<'_>> = ids
        .iter()
        .enumerate()
        .map(|(k, id)| PeerSpec {
            position: Some(k as u32),
            down: k == 2,
            ..PeerSpec::new(id)
        })
        .collect();
    OwnedTable::new(&UpstreamSpec {
        health: Default::default(),
        policy: Policy::RoundRobin,
        peers: &peers,
        schedule_room: 0,
        sessions: false,
    })
    .unwrap()
}

/// Paths near the real ones: segments from the API's vocabulary, numbers,
/// encodings and junk, joined by one or more slashes.
fn path() -> impl Strategy<Value = String> {
    let seg = prop_oneof![
        Just("upstreams".to_owned()),
        Just("app".to_owned()),
        Just("servers".to_owned()),
        Just("metrics".to_owned()),
        Just("status.html".to_owned()),
        Just("%2F".to_owned()),
        Just("%".to_owned()),
        Just("..".to_owned()),
        "[0-9]{1,22}",
        "-?[0-9+]{1,4}",
        "\\PC{0,12}",
    ];
    (prop::collection::vec(seg, 0..6), "/{1,2}").prop_map(|(segs, sep)| segs.join(&sep))
}

/// PATCH bodies: valid fields with odd values, arrays, nesting, bytes.
fn body() -> impl Strategy<Value = Vec<u8>> {
    let value = prop_oneof![
        Just("true".to_owned()),
        Just("false".to_owned()),
        Just("null".to_owned()),
        "-?[0-9]{1,25}(\\.[0-9]{1,3})?",
        "\"\\PC{0,8}\"",
        Just("[]".to_owned()),
        Just("{}".to_owned()),
    ];
    let key = prop_oneof![
        Just("weight"),
        Just("down"),
        Just("drain"),
        Just("wieght"),
        Just("")
    ];
    prop_oneof![
        prop::collection::vec((key, value.clone()), 0..5).prop_map(|kv| {
            let fields: Vec<String> = kv.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
            format!("{{{}}}", fields.join(",")).into_bytes()
        }),
        prop::collection::vec(value, 0..4).prop_map(|v| format!("[{}]", v.join(",")).into_bytes()),
        prop::collection::vec(any::<u8>(), 0..64),
        "\\PC{0,40}".prop_map(String::into_bytes),
    ]
}

fn method() -> impl Strategy<Value = Method> {
    prop_oneof![
        Just(Method::Get),
        Just(Method::Head),
        Just(Method::Patch),
        Just(Method::Delete),
        Just(Method::Other),
    ]
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: CASES,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

#[test]
fn api_requests_never_panic_and_refusals_say_why() {
    let mut runner = TestRunner::new(config());
    let runs = AtomicUsize::new(0);
    let inputs = (
        method(),
        path(),
        "\\PC{0,16}",
        body(),
        any::<bool>(),
        any::<bool>(),
    );
    let r = runner.run(&inputs, |(m, p, q, b, write, html)| {
        runs.fetch_add(1, Relaxed);
        let t = table();
        let ups = [Upstream {
            name: "app",
            zone: t.zone(),
            learn: None,
        }];
        let r = handle(
            &Request {
                method: m,
                path: &p,
                query: &q,
                html,
                body: &b,
                write,
                now_ms: 1,
                wall_ms: 1,
                owner: 7,
                request_id: "",
                nginx: Default::default(),
            },
            &ups,
            |_| true,
        );
        prop_assert!(
            [200, 204, 400, 404, 405, 409, 500, 507].contains(&r.status),
            "status {}",
            r.status
        );
        if r.status >= 400 {
            let v: serde_json::Value = serde_json::from_slice(&r.body.to_vec()).unwrap();
            let text = v["error"]["text"].as_str().unwrap_or_default();
            prop_assert!(!text.is_empty() && v["error"]["code"].is_string(), "{v}");
            prop_assert!(!r.changed);
        }
        // The configured-down server is never brought up by the API.
        prop_assert!(t.zone().states()[2].down());
        Ok(())
    });
    println!(
        "fuzz: {} API requests (route + PATCH body) ran",
        runs.load(Relaxed)
    );
    r.unwrap();
}

#[test]
fn state_files_never_panic_and_refusals_say_why() {
    let mut runner = TestRunner::new(config());
    let runs = AtomicUsize::new(0);
    let inputs = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..128),
        "\\PC{0,80}".prop_map(String::into_bytes),
        (
            "[a-z\"-]{0,20}",
            0u64..3,
            "\\PC{0,10}",
            prop::option::of(any::<u32>()),
            any::<bool>(),
        )
            .prop_map(|(fmt, ver, id, w, down)| {
                let w = w.map_or("null".to_owned(), |w| w.to_string());
                format!(
                    r#"{{"format":"{fmt}","version":{ver},"upstreams":{{"app":[{{"identity":{},"down":{down},"weight":{w}}}]}}}}"#,
                    serde_json::Value::from(id)
                )
                .into_bytes()
            }),
    ];
    let r = runner.run(&inputs, |b| {
        runs.fetch_add(1, Relaxed);
        match StateFile::parse(&b) {
            Ok(f) => {
                // Whatever parses applies without a panic.
                let t = table();
                let _ = f.apply("app", t.zone());
            }
            Err(e) => prop_assert!(!e.is_empty()),
        }
        Ok(())
    });
    println!("fuzz: {} state files ran", runs.load(Relaxed));
    r.unwrap();
}
