//! The `hab` binary's exit codes and stderr, as a script sees them
//!
//! Runs the built binary (`CARGO_BIN_EXE_hab`); nothing but a closed port
//! on 127.0.0.1 and files in a scratch directory is needed.

use std::net::TcpListener;
use std::process::{Command, Output};

fn hab(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hab"))
        .args(args)
        .output()
        .expect("run hab")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn unreachable_api_exits_2() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/api/");
    for args in [
        vec!["status", url.as_str()],
        vec!["weight", url.as_str(), "app", "0", "reset"],
    ] {
        let o = hab(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(o.stdout.is_empty());
        let e = stderr(&o);
        assert_eq!(e.lines().count(), 1, "{e}");
        assert!(e.starts_with("hab: API unreachable: "), "{e}");
    }
    // hab top draws the error in its frames and keeps polling; the last
    // poll decides the exit code.
    let o = hab(&["top", &url, "--iterations", "2", "--interval", "0.2"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        out.matches("  error: API unreachable: ").count(),
        2,
        "{out}"
    );
    assert!(!out.contains('\x1b'), "{out:?}");
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
    let o = hab(&["top", &url, "--interval", "0.1"]);
    assert_eq!(o.status.code(), Some(64), "{}", stderr(&o));
}

#[test]
fn usage_and_input_errors() {
    let o = hab(&["drain"]);
    assert_eq!(o.status.code(), Some(64), "{}", stderr(&o));
    let o = hab(&["--version"]);
    assert_eq!(o.status.code(), Some(0));

    let dir = std::env::temp_dir().join(format!("hab-exit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let yaml = dir.join("c.yaml");
    std::fs::write(
        &yaml,
        "backends:\n  web:\n    servers: [a:1]\n    wieght: 3\n",
    )
    .unwrap();
    let o = hab(&["render", yaml.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains("line 4 column 5") && e.contains("wieght"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
