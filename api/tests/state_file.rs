//! The state file on disk: its mode, its temporary file, what it refuses
//! to read (FIFOs, devices) and how it treats a symbolic link.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use hab_api::state::StateFile;

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("hab-state-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

fn file() -> StateFile {
    StateFile::parse(br#"{"format":"ha-balancer-state","version":1,"upstreams":{}}"#).unwrap()
}

/// Runs `f` in a thread; its result, or a failure after `secs` (a read
/// that blocks on a FIFO never returns).
fn within<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(secs))
        .unwrap_or_else(|_| panic!("did not return within {secs} s"))
}

#[test]
fn the_file_is_0600_even_under_umask_0() {
    let d = scratch("mode");
    let path = d.join("state.json");
    // nginx's daemon runs with umask 0. Process-wide: the other tests of
    // this binary create their files with explicit modes or do not care.
    // SAFETY: umask has no memory effects.
    let old = unsafe { libc::umask(0) };
    let r = file().save(&path);
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    r.unwrap();
    let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "mode {mode:o}");
    let left: Vec<_> = fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 1, "no temporary file left: {left:?}");
    fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_link_planted_at_a_guessable_temporary_name_is_not_followed() {
    let d = scratch("plant");
    let victim = d.join("victim");
    fs::write(&victim, b"precious").unwrap();
    let path = d.join("state.json");
    // Every name the old scheme could use: `.state.json.<pid>.tmp`.
    let pid = std::process::id();
    for guess in [
        format!(".state.json.{pid}.tmp"),
        ".state.json.tmp".to_owned(),
    ] {
        std::os::unix::fs::symlink(&victim, d.join(guess)).unwrap();
    }
    file().save(&path).unwrap();
    assert_eq!(fs::read(&victim).unwrap(), b"precious");
    assert!(StateFile::load(&path).unwrap().is_some());
    // Two saves use two different temporary names (random, not the pid):
    // both succeed beside the planted links.
    file().save(&path).unwrap();
    assert_eq!(fs::read(&victim).unwrap(), b"precious");
    fs::remove_dir_all(&d).unwrap();
}

fn mkfifo(p: &Path) {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

#[test]
fn a_fifo_or_a_device_is_refused_at_once() {
    let d = scratch("fifo");
    let fifo = d.join("state.json");
    mkfifo(&fifo);
    let f2 = fifo.clone();
    let e = within(20, move || StateFile::load(&f2)).unwrap_err();
    assert!(
        e.contains("not a regular file") && e.contains("FIFO"),
        "{e}"
    );
    // Nor is it replaced by a save.
    let e = file().save(&fifo).unwrap_err().to_string();
    assert!(e.contains("FIFO"), "{e}");
    assert!(fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());

    // A link to /dev/zero: followed, and refused as a device (the old
    // reader trusted its size, 0, and read without end).
    let zero = d.join("zero.json");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    let e = within(20, move || StateFile::load(&zero)).unwrap_err();
    assert!(e.contains("device"), "{e}");
    // A directory.
    let e = StateFile::load(&d).unwrap_err();
    assert!(e.contains("directory"), "{e}");
    fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_linked_state_file_stays_a_link_and_its_target_is_written() {
    let d = scratch("link");
    fs::create_dir_all(d.join("real")).unwrap();
    let target = d.join("real/state.json");
    fs::write(&target, b"old").unwrap();
    let link = d.join("state.json");
    std::os::unix::fs::symlink("real/state.json", &link).unwrap();
    file().save(&link).unwrap();
    assert!(fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(StateFile::load(&link).unwrap(), Some(file()));
    assert_eq!(StateFile::load(&target).unwrap(), Some(file()));
    assert_eq!(fs::metadata(&target).unwrap().mode() & 0o777, 0o600);
    // A loop of links is refused, not followed forever.
    let a = d.join("a");
    std::os::unix::fs::symlink("b", &a).unwrap();
    std::os::unix::fs::symlink("a", d.join("b")).unwrap();
    assert!(file().save(&a).is_err());
    assert!(StateFile::load(&a).is_err());
    fs::remove_dir_all(&d).unwrap();
}

#[test]
fn one_saver_at_a_time_holds_the_lock() {
    use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
    use std::sync::Arc;
    let d = scratch("lock");
    let path = d.join("state.json");
    let held = hab_api::state::SaveLock::acquire(&path).unwrap();
    let released = Arc::new(AtomicBool::new(false));
    let (r2, p2) = (released.clone(), path.clone());
    let other = std::thread::spawn(move || {
        // flock locks are per open file: a second open in this process
        // contends as another worker would.
        let _l = hab_api::state::SaveLock::acquire(&p2).unwrap();
        r2.load(SeqCst)
    });
    std::thread::sleep(Duration::from_millis(200));
    released.store(true, SeqCst);
    drop(held);
    assert!(
        other.join().unwrap(),
        "the second saver got the lock while it was held"
    );
    let lock = d.join(".state.json.lock");
    assert_eq!(fs::metadata(&lock).unwrap().mode() & 0o777, 0o600);
    fs::remove_dir_all(&d).unwrap();
}
