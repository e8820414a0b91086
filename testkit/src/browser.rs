//! Headless Chromium driven through chromedriver (W3C WebDriver)
//!
//! [`Browser::start`] runs Debian's `chromedriver` (package
//! `chromium-driver`) on a free 127.0.0.1 port and opens one headless
//! Chromium session; dropping the [`Browser`] deletes the session and kills
//! chromedriver and everything it started (its process group). Commands
//! travel over [`crate::http`], each bounded by [`COMMAND_TIMEOUT`]; the
//! session's page-load and script timeouts are set too, and [`Browser::wait`]
//! polls with a deadline, so no call here can hang a test.
//!
//! Tests call [`browser_or_skip`] first: without chromium or chromedriver
//! they skip (or fail under `HAB_REQUIRE_NGINX=1`, see [`crate::skip`]).
//! `HAB_CHROMIUM` and `HAB_CHROMEDRIVER` point at other binaries.

use std::fs;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::http;
use crate::skip;
use serde_json::Value;

/// Time for chromedriver to answer `/status` and for the session to open.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound of one WebDriver command (socket read/write timeout).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// Page-load timeout of the session.
pub const PAGE_LOAD_TIMEOUT: Duration = Duration::from_secs(20);
/// Script timeout of the session.
pub const SCRIPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between two polls of [`Browser::wait`].
pub const POLL: Duration = Duration::from_millis(50);
/// Window size of [`Browser::start`].
pub const WINDOW: (u32, u32) = (1280, 800);

/// Chromium's narrowest window; [`Browser::start_sized`] emulates a
/// narrower viewport (chromedriver's `mobileEmulation`).
pub const MIN_WINDOW_WIDTH: u32 = 500;

/// The W3C key of an element reference.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

fn env_path(var: &str, default: &str) -> PathBuf {
    match std::env::var_os(var) {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => PathBuf::from(default),
    }
}

/// The Chromium binary (`HAB_CHROMIUM`, default `/usr/bin/chromium`).
pub fn chromium_path() -> PathBuf {
    env_path("HAB_CHROMIUM", "/usr/bin/chromium")
}

/// The chromedriver binary (`HAB_CHROMEDRIVER`, default `/usr/bin/chromedriver`).
pub fn chromedriver_path() -> PathBuf {
    env_path("HAB_CHROMEDRIVER", "/usr/bin/chromedriver")
}

/// Paths of the binaries that are missing (empty when both are there).
pub fn missing() -> Vec<String> {
    [chromium_path(), chromedriver_path()]
        .iter()
        .filter(|p| !p.is_file())
        .map(|p| p.display().to_string())
        .collect()
}

/// `true` when chromium and chromedriver are installed; else the
/// project's skip-or-require policy ([`skip::present_or_skip`]).
pub fn browser_or_skip() -> bool {
    skip::present_or_skip(
        "chromium or chromedriver is not installed",
        "run `make deps` (Debian packages chromium chromium-driver)",
        &missing(),
    )
}

/// A reference to an element of the current page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element(String);

impl Element {
    /// The reference as a script argument of [`Browser::execute`].
    pub fn to_json(&self) -> Value {
        serde_json::json!({ ELEMENT_KEY: self.0 })
    }

    fn from_json(v: &Value) -> Result<Element, String> {
        v.get(ELEMENT_KEY)
            .and_then(Value::as_str)
            .map(|s| Element(s.to_owned()))
            .ok_or_else(|| format!("not an element reference: {v}"))
    }
}

/// A chromedriver process with one headless Chromium session.
#[derive(Debug)]
pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
    log: PathBuf,
}

impl Browser {
    /// Starts chromedriver and a headless session with a [`WINDOW`] window.
    pub fn start() -> Result<Browser, String> {
        Browser::start_sized(WINDOW.0, WINDOW.1)
    }

    /// Like [`Browser::start`] with a `width` × `height` window (a
    /// viewport, emulated as a phone's, below [`MIN_WINDOW_WIDTH`]).
    pub fn start_sized(width: u32, height: u32) -> Result<Browser, String> {
        Browser::start_with(width, height, true)
    }

    /// Like [`Browser::start_sized`]; with `javascript` false the pages'
    /// own scripts do not run (Blink's `scriptEnabled=false`), as for a
    /// reader who turned them off; WebDriver commands, [`Browser::execute`]
    /// included, still work.
    pub fn start_with(width: u32, height: u32, javascript: bool) -> Result<Browser, String> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        let log = std::env::temp_dir().join(format!(
            "hab-chromedriver-{}-{port}.log",
            std::process::id()
        ));
        let driver = Command::new(chromedriver_path())
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group, so drop can kill Chromium with it.
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", chromedriver_path().display()))?;
        let mut b = Browser {
            driver,
            port,
            session: String::new(),
            log,
        };
        b.wait_driver()?;
        b.session = b.new_session(width, height, javascript)?;
        Ok(b)
    }

    fn wait_driver(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.driver.try_wait() {
                return Err(format!(
                    "chromedriver exited ({status}); log:\n{}",
                    self.log_tail()
                ));
            }
            let ready = http::exchange(self.port, "GET", "/status", b"", POLL * 20)
                .ok()
                .and_then(|r| serde_json::from_str::<Value>(&r.text()).ok())
                .is_some_and(|v| {
                    v.get("value").and_then(|v| v.get("ready")) == Some(&Value::Bool(true))
                });
            if ready {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "chromedriver not ready on port {} within {START_TIMEOUT:?}; log:\n{}",
                    self.port,
                    self.log_tail()
                ));
            }
            thread::sleep(POLL);
        }
    }

    fn new_session(&self, width: u32, height: u32, javascript: bool) -> Result<String, String> {
        let mut args = vec![
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(), // tests run as root
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--no-proxy-server".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-extensions".to_owned(),
            "--disable-background-networking".to_owned(),
            format!("--window-size={width},{height}"),
        ];
        if !javascript {
            args.push("--blink-settings=scriptEnabled=false".to_owned());
        }
        let args: Vec<String> = args.iter().map(|a| quote(a)).collect();
        // Chromium's windows are at least 500 px wide: a narrower one (a
        // phone's) is a viewport emulated by chromedriver.
        let emulate = if width < MIN_WINDOW_WIDTH {
            format!(
                r#","mobileEmulation":{{"deviceMetrics":{{"width":{width},"height":{height},"pixelRatio":1}}}}"#
            )
        } else {
            String::new()
        };
        let caps = format!(
            r#"{{"capabilities":{{"alwaysMatch":{{"browserName":"chrome",
"goog:chromeOptions":{{"binary":{},"args":[{}]{emulate}}},
"timeouts":{{"implicit":0,"pageLoad":{},"script":{}}}}}}}}}"#,
            quote(&chromium_path().display().to_string()),
            args.join(","),
            PAGE_LOAD_TIMEOUT.as_millis(),
            SCRIPT_TIMEOUT.as_millis(),
        );
        let v = self
            .call_within("POST", "/session", &caps, START_TIMEOUT)
            .map_err(|e| format!("new session: {e}; log:\n{}", self.log_tail()))?;
        v.get("sessionId")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| format!("new session: no sessionId in {v}"))
    }

    /// Last lines of chromedriver's log, for error messages.
    fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// One WebDriver command; the `value` of the answer, or the error.
    fn call_within(
        &self,
        method: &str,
        path: &str,
        body: &str,
        timeout: Duration,
    ) -> Result<Value, String> {
        let r = http::exchange(self.port, method, path, body.as_bytes(), timeout)
            .map_err(|e| format!("{method} {path}: {e}"))?;
        let v = serde_json::from_str::<Value>(&r.text())
            .map_err(|e| format!("{method} {path}: {e}"))?;
        let value = v.get("value").cloned().unwrap_or(Value::Null);
        if r.status == 200 {
            return Ok(value);
        }
        let field = |k| {
            value
                .get(k)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned()
        };
        Err(format!(
            "{method} {path}: HTTP {}: {}: {}",
            r.status,
            field("error"),
            field("message")
        ))
    }

    /// A command of this session (`path` relative to `/session/{id}`).
    fn cmd(&self, method: &str, path: &str, body: &str) -> Result<Value, String> {
        let path = format!("/session/{}{path}", self.session);
        // POST needs a body, even an empty object.
        let body = if method == "POST" && body.is_empty() {
            "{}"
        } else {
            body
        };
        self.call_within(method, &path, body, COMMAND_TIMEOUT)
    }

    /// Navigates to `url` and waits for the page to load.
    pub fn goto(&self, url: &str) -> Result<(), String> {
        self.cmd("POST", "/url", &format!(r#"{{"url":{}}}"#, quote(url)))
            .map(drop)
    }

    /// The current page's URL.
    pub fn url(&self) -> Result<String, String> {
        let v = self.cmd("GET", "/url", "")?;
        v.as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("url: {v}"))
    }

    /// The first element matching the CSS selector `css`, if any.
    pub fn find(&self, css: &str) -> Result<Option<Element>, String> {
        Ok(self.find_all(css)?.into_iter().next())
    }

    /// Every element matching the CSS selector `css`.
    pub fn find_all(&self, css: &str) -> Result<Vec<Element>, String> {
        let body = format!(r#"{{"using":"css selector","value":{}}}"#, quote(css));
        let v = self.cmd("POST", "/elements", &body)?;
        v.as_array()
            .ok_or_else(|| format!("elements {css:?}: {v}"))?
            .iter()
            .map(Element::from_json)
            .collect()
    }

    /// The rendered text of `e`.
    pub fn text(&self, e: &Element) -> Result<String, String> {
        let v = self.cmd("GET", &format!("/element/{}/text", e.0), "")?;
        Ok(v.as_str().unwrap_or("").to_owned())
    }

    /// Attribute `name` of `e` (`None` when absent).
    pub fn attr(&self, e: &Element, name: &str) -> Result<Option<String>, String> {
        let v = self.cmd("GET", &format!("/element/{}/attribute/{name}", e.0), "")?;
        Ok(v.as_str().map(str::to_owned))
    }

    /// Clicks `e` (scrolled into view first, as a user would).
    pub fn click(&self, e: &Element) -> Result<(), String> {
        self.cmd("POST", &format!("/element/{}/click", e.0), "")
            .map(drop)
    }

    /// Empties the input `e`.
    pub fn clear(&self, e: &Element) -> Result<(), String> {
        self.cmd("POST", &format!("/element/{}/clear", e.0), "")
            .map(drop)
    }

    /// Types `text` into `e` as a user would (`\u{E007}` is Enter).
    pub fn send_keys(&self, e: &Element, text: &str) -> Result<(), String> {
        let body = format!(r#"{{"text":{}}}"#, quote(text));
        self.cmd("POST", &format!("/element/{}/value", e.0), &body)
            .map(drop)
    }

    /// Runs `script` (a function body; `arguments[i]` are `args`) and
    /// returns what it returns.
    pub fn execute(&self, script: &str, args: &[Value]) -> Result<Value, String> {
        let args: Vec<String> = args.iter().map(Value::to_string).collect();
        let body = format!(
            r#"{{"script":{},"args":[{}]}}"#,
            quote(script),
            args.join(",")
        );
        self.cmd("POST", "/execute/sync", &body)
    }

    /// A PNG screenshot of the viewport.
    pub fn screenshot(&self) -> Result<Vec<u8>, String> {
        let v = self.cmd("GET", "/screenshot", "")?;
        let png = base64_decode(v.as_str().ok_or_else(|| format!("screenshot: {v}"))?)?;
        if !png.starts_with(b"\x89PNG\r\n\x1a\n") {
            return Err("screenshot: not a PNG".to_owned());
        }
        Ok(png)
    }

    /// Polls `f` every [`POLL`] until it returns `Some` or an error, or
    /// `timeout` passes (then the error names `what`).
    pub fn wait<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut f: impl FnMut(&Browser) -> Result<Option<T>, String>,
    ) -> Result<T, String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(t) = f(self)? {
                return Ok(t);
            }
            if Instant::now() >= deadline {
                return Err(format!("{what}: not within {timeout:?}"));
            }
            thread::sleep(POLL);
        }
    }

    /// Polls the JavaScript expression `expr` until it is truthy, or
    /// `timeout` passes.
    pub fn wait_js(&self, expr: &str, timeout: Duration) -> Result<(), String> {
        let script = format!("return !!({expr});");
        self.wait(expr, timeout, |b| {
            Ok((b.execute(&script, &[])? == Value::Bool(true)).then_some(()))
        })
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let path = format!("/session/{}", self.session);
            let _ = http::exchange(self.port, "DELETE", &path, b"", Duration::from_secs(5));
        }
        // The whole process group: chromedriver and any Chromium left over.
        let _ = Command::new("kill")
            .arg("-KILL")
            .arg("--")
            .arg(format!("-{}", self.driver.id()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        if thread::panicking() {
            skip::say(&format!("chromedriver log kept in {}", self.log.display()));
        } else {
            let _ = fs::remove_file(&self.log);
        }
    }
}

/// Decodes standard base64 (RFC 4648 alphabet, `=` padding, line breaks
/// ignored), as WebDriver sends screenshots.
pub fn base64_decode(text: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut acc, mut bits, mut n, mut pad) = (0u32, 0u32, 0usize, 0usize);
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'\r' | b'\n' => continue,
            b'=' => {
                pad += 1;
                n += 1;
                continue;
            }
            _ => return Err(format!("base64: bad byte {c:#04x}")),
        };
        if pad > 0 {
            return Err("base64: data after padding".to_owned());
        }
        n += 1;
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    if n % 4 != 0 || pad > 2 {
        return Err(format!("base64: bad length {n} (padding {pad})"));
    }
    Ok(out)
}

/// `s` as a JSON string literal.
fn quote(s: &str) -> String {
    Value::from(s).to_string()
}
