//! `hab render` against real nginx: the rendered file passes `nginx -t`,
//! serves traffic over http and https with 4 workers, and `--reload` swaps
//! it live
//!
//! Backends are in-process `hab_testkit` servers on 127.0.0.1; nginx is the
//! one `make nginx` builds (`target/nginx/sbin/nginx` and the module), run
//! in the foreground in its own prefix under `target/cli-e2e/`. Missing
//! nginx: a visible `SKIP` line, or a panic under `HAB_REQUIRE_NGINX=1`.
//! Every wait is bounded; nginx is stopped with QUIT, then KILL, on drop.
//! The harness is in `common/mod.rs`.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use hab_testkit::backend::Mode;
use hab_testkit::nginx::{module_so, nginx_bin, self_signed_cert};
use hab_testkit::proc::wait_until;
use hab_testkit::skip::installed_or_skip;

/// Requests sent per traffic check.
const REQUESTS: usize = 60;

fn yaml(
    dir: &Path,
    http: u16,
    https: Option<(u16, &Path, &Path)>,
    web: &[&Up],
    api: &Up,
) -> String {
    let mut protocols = "[http]".to_owned();
    let mut listen = format!("{{ http: \"127.0.0.1:{http}\" }}");
    let mut tls = String::new();
    if let Some((port, cert, key)) = https {
        protocols = "[http, https]".to_owned();
        listen = format!("{{ http: \"127.0.0.1:{http}\", https: \"127.0.0.1:{port}\" }}");
        tls = format!(
            "tls: {{ certificate: {}, key: {} }}\n",
            cert.display(),
            key.display()
        );
    }
    let mut servers = String::new();
    for (i, b) in web.iter().enumerate() {
        if i == 0 {
            servers.push_str(&format!("      - {}\n", b.addr));
        } else {
            servers.push_str(&format!(
                "      - {{ address: {}, weight: 2, connections: 50 }}\n",
                b.addr
            ));
        }
    }
    format!(
        "# rendered by cli/tests/render_nginx.rs
module: {module}
worker_processes: {WORKERS}
pid: {dir}/nginx.pid
error_log: {dir}/logs/error.log info
access_log: {dir}/logs/access.log
forwarded_protocols: {protocols}
listen: {listen}
{tls}proxy: {{ connect_timeout: 2s, read_timeout: 10s }}
default_backend: web
backends:
  web:
    policy: least_conn
    connections: 100
    max_fails: 1
    fail_timeout: 30s
    servers:
{servers}  api:
    policy: round_robin
    hosts: [api.test]
    servers: [{api}]
",
        module = module_so().display(),
        dir = dir.display(),
        api = api.addr,
    )
}

/// `n` requests; backend name (or error) → count.
fn tally(port: u16, host: &str, n: usize) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for _ in 0..n {
        let key = match get(port, host) {
            Ok((200, body)) => body,
            Ok((status, body)) => format!("HTTP {status} {body}"),
            Err(e) => format!("ERR {e}"),
        };
        *m.entry(key).or_insert(0) += 1;
    }
    m
}

#[test]
fn rendered_config_serves_traffic_and_reloads() {
    if !nginx_or_skip() {
        return;
    }
    let dir = fresh_dir();
    let web = [backend("web1"), backend("web2"), backend("web3")];
    let api = backend("api1");
    let port = free_port();
    let yaml_path = dir.join("core-config.yaml");
    let conf = dir.join("nginx.conf");
    fs::write(
        &yaml_path,
        yaml(&dir, port, None, &[&web[0], &web[1]], &api),
    )
    .unwrap();
    render(&yaml_path, &conf);
    let rendered = fs::read_to_string(&conf).unwrap();
    assert!(rendered.contains("ha_balance least_conn;"), "{rendered}");
    assert!(
        rendered.contains("proxy_next_upstream error timeout;"),
        "{rendered}"
    );
    nginx_t(&dir, &conf);

    let mut nginx = Nginx::start(&dir, &conf, &[port]);

    // Default backend: every primary server answers, nothing fails.
    let got = tally(port, "127.0.0.1", REQUESTS);
    assert_eq!(got.values().sum::<usize>(), REQUESTS);
    assert_eq!(
        got.keys().cloned().collect::<Vec<_>>(),
        ["web1", "web2"],
        "want only web1 and web2 answering, got {got:?}"
    );
    assert_eq!(web[2].requests(), 0);

    // hosts routing.
    let got = tally(port, "api.test", 10);
    assert_eq!(got, BTreeMap::from([("api1".to_owned(), 10)]));

    // Failover through proxy_next_upstream: web1 closes every connection,
    // clients see no error.
    web[0].backend.set_mode(Mode::Close);
    let got = tally(port, "127.0.0.1", REQUESTS);
    assert_eq!(
        got,
        BTreeMap::from([("web2".to_owned(), REQUESTS)]),
        "{got:?}"
    );
    web[0].backend.set_mode(Mode::Ok);

    // `hab render --reload`: web3 replaces web1 and web2, live.
    let old_workers = nginx.workers();
    fs::write(&yaml_path, yaml(&dir, port, None, &[&web[2]], &api)).unwrap();
    let out = hab(&[
        "render",
        yaml_path.to_str().unwrap(),
        "-o",
        conf.to_str().unwrap(),
        "--reload",
        "--nginx",
        nginx_bin().to_str().unwrap(),
        "-p",
        dir.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "hab render --reload: {}",
        text(&out.stderr)
    );
    assert!(text(&out.stdout).contains("nginx reloaded"));
    // The old workers leave, new ones take over (bounded).
    let replaced = wait_until(Duration::from_secs(15), || {
        let now = nginx.workers();
        now.len() >= WORKERS && now.iter().all(|p| !old_workers.contains(p))
    });
    assert!(
        replaced,
        "old workers still running after reload:\n{}",
        nginx.error_log()
    );
    let got = tally(port, "127.0.0.1", 20);
    assert_eq!(got, BTreeMap::from([("web3".to_owned(), 20)]), "{got:?}");

    assert_no_crash(&nginx);
    nginx.stop();
}

#[test]
fn rendered_https_listener_serves_traffic() {
    if !nginx_or_skip() {
        return;
    }
    let curl_ok = Command::new("curl")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let missing = if curl_ok { vec![] } else { vec!["curl".into()] };
    if !installed_or_skip(&missing) {
        return;
    }
    let dir = fresh_dir();
    let (cert, key) = self_signed_cert(&dir);

    let web = [backend("web1"), backend("web2")];
    let api = backend("api1");
    let (http, https) = (free_port(), free_port());
    let yaml_path = dir.join("core-config.yaml");
    let conf = dir.join("nginx.conf");
    fs::write(
        &yaml_path,
        yaml(
            &dir,
            http,
            Some((https, &cert, &key)),
            &[&web[0], &web[1]],
            &api,
        ),
    )
    .unwrap();
    render(&yaml_path, &conf);
    let rendered = fs::read_to_string(&conf).unwrap();
    assert!(
        rendered.contains(&format!("listen 127.0.0.1:{https} ssl default_server;")),
        "{rendered}"
    );
    nginx_t(&dir, &conf);
    let mut nginx = Nginx::start(&dir, &conf, &[http, https]);

    let mut got: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..20 {
        let out = run_bounded(
            Command::new("curl")
                .args(["-sk", "--max-time", "5", "-w", " %{http_code}"])
                .arg(format!("https://127.0.0.1:{https}/")),
            "curl",
            Duration::from_secs(10),
        );
        *got.entry(
            text(&out.stdout)
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" "),
        )
        .or_insert(0) += 1;
    }
    // least_conn, sequential requests: ties go by the weights (1 and 2).
    assert_eq!(
        got.keys().cloned().collect::<Vec<_>>(),
        ["web1 200", "web2 200"],
        "https answers: {got:?}"
    );
    let got = tally(http, "127.0.0.1", 20);
    assert_eq!(got.values().sum::<usize>(), 20);
    assert!(got.keys().all(|k| k == "web1" || k == "web2"), "{got:?}");

    assert_no_crash(&nginx);
    nginx.stop();
}
