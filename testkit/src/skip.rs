//! When a test's real components are missing: skip visibly, or fail
//!
//! One policy for every harness: under `HAB_REQUIRE_NGINX=1` (what
//! `make test` sets) a missing component is a failure; otherwise the test
//! prints a `SKIP` line that names what is missing and returns.
//!
//! The test is named by [`test_name`]: libtest runs each test on a thread
//! of the test's name, so no test types its own name.

use std::io::{self, Write};

/// Writes to the real stderr, bypassing the test harness' output capture,
/// so the line is seen even for passing tests.
pub fn say(msg: &str) {
    let _ = writeln!(io::stderr().lock(), "{msg}");
}

/// The running test's name, as libtest names its thread (`name`, or
/// `module::name` for a test in a module); `"test"` on a thread without
/// a name (one the test spawned, or a harness that runs tests on the
/// main thread).
pub fn test_name() -> String {
    std::thread::current()
        .name()
        .filter(|n| *n != "main")
        .unwrap_or("test")
        .to_owned()
}

/// `true` when `missing` (paths of nginx, the module, ...) is empty.
/// Otherwise panics under `HAB_REQUIRE_NGINX=1`, else prints
/// `SKIP <test>: ...` and returns `false` (the caller returns early).
pub fn built_or_skip(missing: &[String]) -> bool {
    present_or_skip("nginx is not built", "run `make nginx`", missing)
}

/// `true` when `missing` (programs a Debian package of `make deps`
/// installs: `promtool`, `prometheus`, ...) is empty; otherwise as
/// [`built_or_skip`]: `make test` installs them, so under it a missing
/// one is a failure.
pub fn installed_or_skip(missing: &[String]) -> bool {
    present_or_skip(
        "a required program is not installed",
        "run `make deps`",
        missing,
    )
}

/// The same policy for any component: `what` says what is absent
/// (`"chromium is not installed"`), `hint` how to get it.
pub fn present_or_skip(what: &str, hint: &str, missing: &[String]) -> bool {
    if missing.is_empty() {
        return true;
    }
    let test = test_name();
    if std::env::var("HAB_REQUIRE_NGINX").is_ok_and(|v| v == "1") {
        panic!(
            "{test}: HAB_REQUIRE_NGINX=1 but {what} (missing: {}); {hint}",
            missing.join(", ")
        );
    }
    say(&format!(
        "SKIP {test}: {what}, {hint} (missing: {})",
        missing.join(", ")
    ));
    false
}
