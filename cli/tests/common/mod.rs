//! Harness of the real-nginx tests of `hab`: nginx with the module,
//! in-process backends, the `hab` binary, all on 127.0.0.1
//!
//! Used by `tests/render_nginx.rs` and `tests/top_nginx.rs` as
//! `mod common;` (the pieces every harness shares are [`hab_testkit`]'s).
//! nginx is the one `make nginx` builds
//! (`target/nginx/sbin/nginx` and the module; `HAB_NGINX_BIN` and
//! `HAB_MODULE_SO` point elsewhere), run in the foreground in its own
//! prefix under `target/cli-e2e/`. Missing nginx: a visible `SKIP` line,
//! or a panic under `HAB_REQUIRE_NGINX=1`. Every wait is bounded; nginx is
//! stopped with QUIT, then KILL, on drop.

use std::fs;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use hab_testkit::backend::Backend;
use hab_testkit::nginx::{module_so, nginx_bin, root};
use hab_testkit::proc::{children, signal, wait_until};
use hab_testkit::skip::say;

/// Worker processes of the nginx under test.
pub const WORKERS: usize = 4;

/// `true` when nginx and the module are built; else a `SKIP` line (or a
/// panic under `HAB_REQUIRE_NGINX=1`), as [`hab_testkit::skip`] says.
/// Unlike [`hab_testkit::nginx::nginx_or_skip`], the module is needed
/// whatever `HAB_E2E_STOCK` says: `hab render` writes `ha_balance`.
pub fn nginx_or_skip() -> bool {
    let missing: Vec<String> = [nginx_bin(), module_so()]
        .iter()
        .filter(|p| !p.is_file())
        .map(|p| p.display().to_string())
        .collect();
    hab_testkit::skip::built_or_skip(&missing)
}

/// A free port on 127.0.0.1 below the ephemeral range and away from the
/// root e2e harness' range (20000-31999).
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let (base, span) = (12_000u32, 8_000u32);
    let start = std::process::id().wrapping_mul(7919) % span;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (base + (start + n * 13) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port on 127.0.0.1 in {base}..{}", base + span);
}

/// An in-process backend answering its name on 127.0.0.1.
pub struct Up {
    pub backend: Arc<Backend>,
    pub addr: String,
}

pub fn backend(name: &str) -> Up {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind backend");
    let b = Backend::new(name);
    let addr = b.spawn(listener).expect("spawn backend").to_string();
    Up { backend: b, addr }
}

impl Up {
    pub fn requests(&self) -> u64 {
        self.backend.stats().requests.load(Ordering::Relaxed)
    }
}

/// `GET /` with `Host: host` over plain http; `(status, body)`.
pub fn get(port: u16, host: &str) -> io::Result<(u16, String)> {
    let addr = ([127, 0, 0, 1], port).into();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.take(1 << 20).read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| io::Error::other(format!("no header end in {text:?}")))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| io::Error::other(format!("bad status line in {head:?}")))?;
    Ok((status, body.trim().to_owned()))
}

/// Runs a command with a time bound; its output.
pub fn run_bounded(cmd: &mut Command, what: &str, limit: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    // Read both pipes while it runs: an output larger than a pipe's
    // buffer would otherwise stall the command until the limit.
    let drain = |pipe: Option<Box<dyn io::Read + Send>>| {
        thread::spawn(move || {
            let mut v = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut v);
            }
            v
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let done = wait_until(limit, || matches!(child.try_wait(), Ok(Some(_))));
    if !done {
        let _ = child.kill();
    }
    let status = child.wait().unwrap_or_else(|e| panic!("{what}: {e}"));
    let out = Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    };
    assert!(done, "{what}: still running after {limit:?}");
    out
}

pub fn hab(args: &[&str]) -> Output {
    run_bounded(
        Command::new(env!("CARGO_BIN_EXE_hab")).args(args),
        "hab",
        Duration::from_secs(60),
    )
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub fn fresh_dir() -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let d = root().join("target/cli-e2e").join(format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(d.join("logs")).expect("create prefix");
    d
}

/// nginx in the foreground (`daemon off`) with the rendered configuration.
pub struct Nginx {
    dir: PathBuf,
    child: Option<Child>,
}

impl Nginx {
    pub fn start(dir: &Path, conf: &Path, ports: &[u16]) -> Nginx {
        let child = Command::new(nginx_bin())
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(conf)
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        let n = Nginx {
            dir: dir.to_path_buf(),
            child: Some(child),
        };
        let master = n.master();
        let ready = wait_until(Duration::from_secs(10), || {
            children(master).len() >= WORKERS
                && ports.iter().all(|&p| {
                    TcpStream::connect_timeout(
                        &([127, 0, 0, 1], p).into(),
                        Duration::from_millis(200),
                    )
                    .is_ok()
                })
        });
        assert!(ready, "nginx did not start:\n{}", n.error_log());
        n
    }

    pub fn master(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    /// Pids of the master's live children (its workers).
    pub fn workers(&self) -> Vec<i32> {
        children(self.master())
            .into_iter()
            .map(|(p, _)| p)
            .collect()
    }

    pub fn error_log(&self) -> String {
        fs::read_to_string(self.dir.join("logs/error.log")).unwrap_or_default()
    }

    /// QUIT, up to 10 s; then KILL of the master and its workers.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let master = child.id() as i32;
        let workers: Vec<i32> = children(master).into_iter().map(|(p, _)| p).collect();
        signal(master, libc::SIGQUIT);
        let quit = wait_until(Duration::from_secs(10), || {
            matches!(child.try_wait(), Ok(Some(_)))
        });
        if !quit {
            say(&format!(
                "nginx {} did not quit in 10 s; killing it",
                self.dir.display()
            ));
            let _ = child.kill();
        }
        let _ = child.wait();
        for w in workers {
            signal(w, libc::SIGKILL);
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
        if thread::panicking() {
            say(&format!("nginx prefix kept in {}", self.dir.display()));
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

pub fn render(yaml_path: &Path, conf: &Path) {
    let out = hab(&[
        "render",
        yaml_path.to_str().unwrap(),
        "-o",
        conf.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "hab render failed: {}",
        text(&out.stderr)
    );
}

pub fn nginx_t(dir: &Path, conf: &Path) {
    let out = run_bounded(
        Command::new(nginx_bin())
            .arg("-t")
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(conf),
        "nginx -t",
        Duration::from_secs(20),
    );
    assert!(
        out.status.success(),
        "nginx -t rejected the rendered config:\n{}\n{}",
        text(&out.stderr),
        fs::read_to_string(conf).unwrap_or_default()
    );
}

pub fn assert_no_crash(n: &Nginx) {
    let log = n.error_log();
    let bad: Vec<&str> = log
        .lines()
        .filter(|l| {
            l.contains("exited on signal") || l.contains("[emerg]") || l.contains("[alert]")
        })
        .collect();
    assert!(bad.is_empty(), "nginx error log:\n{}", bad.join("\n"));
}
