//! Processes: bounded waits, signals, what /proc says, bounded commands
//!
//! Every wait here is bounded in time.

use std::fs;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Polls `cond` every 20 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

pub fn signal(pid: i32, sig: libc::c_int) -> bool {
    // SAFETY: kill(2) takes plain integers; a stale pid only yields ESRCH.
    unsafe { libc::kill(pid, sig) == 0 }
}

/// Process state letter from /proc (`None` if the process is gone).
fn proc_state(pid: i32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ppid ...": comm may contain spaces, so split after ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().next()?.chars().next()
}

/// Whether `pid` is a live (non-zombie) process.
pub fn alive(pid: i32) -> bool {
    !matches!(proc_state(pid), None | Some('Z') | Some('X'))
}

/// Live children of `ppid` as `(pid, cmdline)`.
pub fn children(ppid: i32) -> Vec<(i32, String)> {
    let mut out = Vec::new();
    let Ok(dir) = fs::read_dir("/proc") else {
        return out;
    };
    for ent in dir.flatten() {
        let Some(pid) = ent.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let mut f = stat[close + 1..].split_whitespace();
        let state = f.next().unwrap_or("");
        let parent: i32 = f.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        if parent != ppid || state == "Z" || state == "X" {
            continue;
        }
        let cmd = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd)
            .replace('\0', " ")
            .trim()
            .to_owned();
        out.push((pid, cmd));
    }
    out
}

/// Runs a command with stdout/stderr to `dir/TAG.stdout` and
/// `dir/TAG.stderr`, bounded by `timeout` (killed after it, and a panic).
/// Returns the status and stderr.
pub fn run_bounded(
    cmd: &mut Command,
    dir: &Path,
    tag: &str,
    timeout: Duration,
) -> (ExitStatus, String) {
    let out_path = dir.join(format!("{tag}.stdout"));
    let err_path = dir.join(format!("{tag}.stderr"));
    let out = fs::File::create(&out_path).expect("create stdout file");
    let err = fs::File::create(&err_path).expect("create stderr file");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait nginx") {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let s = child.wait().expect("wait nginx");
            let e = fs::read_to_string(&err_path).unwrap_or_default();
            panic!("{cmd:?} did not finish within {timeout:?} (status {s}); stderr:\n{e}");
        }
        thread::sleep(Duration::from_millis(10));
    };
    (status, fs::read_to_string(&err_path).unwrap_or_default())
}
