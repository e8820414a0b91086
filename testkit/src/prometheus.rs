//! A real Prometheus for the tests: started on 127.0.0.1 with the jobs
//! given (and rule files, evaluated every second), scraping every second,
//! queried through its HTTP API, killed when dropped (its directory kept
//! when a test panics).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::http;
use crate::nginx::scratch_dir;
use crate::port::free_port;
use crate::proc::wait_until;
use crate::skip::say;

/// One scrape job: its name, metrics path and port on 127.0.0.1.
#[derive(Debug, Clone, Copy)]
pub struct Job<'a> {
    /// `job_name`.
    pub name: &'a str,
    /// `metrics_path`.
    pub path: &'a str,
    /// The target's port on 127.0.0.1.
    pub port: u16,
}

/// A running Prometheus.
#[derive(Debug)]
pub struct Prometheus {
    child: Option<Child>,
    /// Its HTTP port on 127.0.0.1.
    pub port: u16,
    dir: PathBuf,
}

impl Prometheus {
    /// Starts `bin` scraping `jobs` every second (timeout 1 s); returns
    /// once `/-/ready` answers 200, panicking after 30 s.
    pub fn start(bin: &Path, jobs: &[Job<'_>]) -> Prometheus {
        Prometheus::start_with_rules(bin, jobs, &[])
    }

    /// [`Prometheus::start`] with `rules` (rule files, YAML or JSON)
    /// loaded and evaluated every second.
    pub fn start_with_rules(bin: &Path, jobs: &[Job<'_>], rules: &[PathBuf]) -> Prometheus {
        let dir = scratch_dir();
        let config = dir.join("prometheus.yml");
        let mut yml = String::from(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n",
        );
        if !rules.is_empty() {
            yml.push_str("rule_files:\n");
            for r in rules {
                // A JSON string is a YAML double-quoted scalar.
                let quoted = serde_json::to_string(&r.display().to_string())
                    .expect("a path as a JSON string");
                yml.push_str(&format!("  - {quoted}\n"));
            }
        }
        yml.push_str("scrape_configs:\n");
        for j in jobs {
            yml.push_str(&format!(
                "  - job_name: {}\n    metrics_path: {}\n    static_configs:\n      \
                 - targets: ['127.0.0.1:{}']\n",
                j.name, j.path, j.port
            ));
        }
        fs::write(&config, yml).expect("write prometheus.yml");
        let log = fs::File::create(dir.join("prometheus.log")).expect("create log");
        let port = free_port();
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .expect("run prometheus");
        let mut p = Prometheus {
            child: Some(child),
            port,
            dir,
        };
        let ready = wait_until(Duration::from_secs(30), || {
            if let Some(c) = p.child.as_mut() {
                if c.try_wait().ok().flatten().is_some() {
                    return true;
                }
            }
            http::get(port, "/-/ready").is_ok_and(|r| r.status == 200)
        });
        let exited = p.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
        assert!(
            ready && exited.is_none(),
            "prometheus not ready within 30 s (exit: {exited:?}); log:\n{}",
            p.log()
        );
        p
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// The instant query `q` now: each result's labels and value.
    pub fn query(&self, q: &str) -> Vec<(Value, f64)> {
        self.query_path(q, &format!("/api/v1/query?query={}", urlencode(q)))
    }

    /// The instant query `q` evaluated at `at` (seconds since the epoch).
    pub fn query_at(&self, q: &str, at: f64) -> Vec<(Value, f64)> {
        self.query_path(
            q,
            &format!("/api/v1/query?query={}&time={at:.3}", urlencode(q)),
        )
    }

    fn query_path(&self, q: &str, path: &str) -> Vec<(Value, f64)> {
        let r = http::get(self.port, path).unwrap_or_else(|e| panic!("query {q}: {e}"));
        assert_eq!(r.status, 200, "query {q}: {}", r.text());
        let v: Value = serde_json::from_slice(&r.body)
            .unwrap_or_else(|e| panic!("query {q}: bad JSON {e}: {}", r.text()));
        assert_eq!(v["status"], "success", "query {q}: {v}");
        v["data"]["result"]
            .as_array()
            .unwrap_or_else(|| panic!("query {q}: no result array: {v}"))
            .iter()
            .map(|s| {
                let x = s["value"][1]
                    .as_str()
                    .and_then(|x| x.parse().ok())
                    .unwrap_or_else(|| panic!("query {q}: bad sample {s}"));
                (s["metric"].clone(), x)
            })
            .collect()
    }

    /// The single value of `q`, `None` while it has no result.
    pub fn value(&self, q: &str) -> Option<f64> {
        let r = self.query(q);
        assert!(r.len() <= 1, "query {q}: several series: {r:?}");
        r.first().map(|(_, x)| *x)
    }

    /// Polls `q` (every 200 ms, at most `timeout`) until `want` holds for
    /// its value; returns the last value seen.
    pub fn wait_for(&self, q: &str, timeout: Duration, want: impl Fn(f64) -> bool) -> Option<f64> {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.value(q);
            if v.is_some_and(&want) || Instant::now() >= deadline {
                return v;
            }
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// `GET path` of the HTTP API (`/api/v1/...`): its `data`, after
    /// checking the status is `success`.
    pub fn api(&self, path: &str) -> Value {
        let r = http::get(self.port, path).unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert_eq!(r.status, 200, "GET {path}: {}", r.text());
        let v: Value = serde_json::from_slice(&r.body)
            .unwrap_or_else(|e| panic!("GET {path}: bad JSON {e}: {}", r.text()));
        assert_eq!(v["status"], "success", "GET {path}: {v}");
        v["data"].clone()
    }

    /// The alerts of every rule group, as `/api/v1/alerts` lists them
    /// (`labels`, `annotations`, `state`: pending or firing, `value`).
    pub fn alerts(&self) -> Vec<Value> {
        let data = self.api("/api/v1/alerts");
        data["alerts"]
            .as_array()
            .unwrap_or_else(|| panic!("alerts: no array: {data}"))
            .clone()
    }

    /// Health and last scrape error of the first target.
    pub fn target(&self) -> (String, String) {
        let r = http::get(self.port, "/api/v1/targets").expect("GET /api/v1/targets");
        let v: Value = serde_json::from_slice(&r.body)
            .unwrap_or_else(|e| panic!("targets: bad JSON {e}: {}", r.text()));
        let t = &v["data"]["activeTargets"][0];
        let s = |k: &str| t[k].as_str().unwrap_or("?").to_owned();
        (s("health"), s("lastError"))
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if thread::panicking() {
            say(&format!(
                "prometheus log and config kept in {}",
                self.dir.display()
            ));
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Seconds since the epoch, now.
pub fn epoch() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
