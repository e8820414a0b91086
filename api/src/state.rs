//! The state file: admin state kept across a restart and a binary upgrade
//!
//! `ha_state_file PATH;` names a JSON file holding, per upstream, every
//! server's admin state (down, drain, weight override) and, in upstreams
//! with `ha_check`, its health (`up` or `unhealthy`), keyed by the
//! server's identity (upstream, `server` string and address). A worker
//! rewrites it after every accepted change and every health transition (a
//! temporary file in the same directory, flushed, then renamed over the
//! old one, so a reader sees the old or the new file, never half of one).
//! The file is created `0600`; its temporary file has a random name and is
//! created exclusively, never through a link. A state file path that is a
//! symbolic link is followed: the link stays, its target is replaced. At
//! startup, each fresh zone takes the entries of its upstream; entries of
//! servers no longer in the configuration are counted (the caller logs
//! them) and ignored. A missing file is a first start; an unreadable,
//! corrupt or oversized one, or one that is not a regular file (a FIFO, a
//! device), is reported by the caller and ignored.
//!
//! ```json
//! {"format": "ha-balancer-state", "version": 2,
//!  "upstreams": {"app": [{"identity": "app\u0000a:80\u0000127.0.0.1:80",
//!                         "down": false, "drain": true, "weight": 5},
//!                        {"identity": "app\u000010.0.0.5:80\u000010.0.0.5:80",
//!                         "down": false, "drain": false,
//!                         "added": {"server": "10.0.0.5:80", "weight": 1,
//!                                   "max_conns": 0, "max_fails": 1,
//!                                   "fail_timeout_ms": 10000, "backup": false}}]}}
//! ```
//!
//! Version 2 adds `added`: a server added through the API (`POST`,
//! `ha_api_max`) with what it was added with, so that a fresh zone adds
//! it again at start. Version 1 files are read as they are.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::hash::BuildHasher;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use hab_core::layout::Zone;
use hab_core::spec::PeerSpec;
use hab_core::write::generation::INIT_OWNER;
use hab_core::write::membership::LIVE;
use hab_core::write::MAX_WEIGHT;
use serde::{Deserialize, Serialize};

use crate::upstream::Upstream;

const FORMAT: &str = "ha-balancer-state";
/// The version written: 2 adds `added` (servers added through the API).
const VERSION: u32 = 2;
/// The versions read.
const VERSIONS: [u32; 2] = [1, 2];

/// Largest state file read, bytes.
pub const MAX_FILE: u64 = 64 * 1024 * 1024;

/// One server's admin state.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// The server's identity, as the module builds it.
    pub identity: String,
    /// Set down through the API.
    #[serde(default)]
    pub down: bool,
    /// Draining.
    #[serde(default)]
    pub drain: bool,
    /// Weight override.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// Health from active checks (absent: unknown, or no `ha_check`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
    /// The server was added through the API (`POST`, `ha_api_max`): what
    /// it was added with, to add it again at start (version 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub added: Option<AddedServer>,
}

/// A server added through the API, as the state file keeps it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AddedServer {
    /// The `server` string it was added with.
    pub server: String,
    /// Its weight (before any override).
    pub weight: u32,
    /// `max_conns`.
    pub max_conns: u32,
    /// `max_fails`.
    pub max_fails: u32,
    /// `fail_timeout`, ms.
    pub fail_timeout_ms: u64,
    /// A backup server.
    pub backup: bool,
}

/// A server's health as the state file keeps it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// It passed its checks.
    Up,
    /// It failed them.
    Unhealthy,
}

/// The whole file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StateFile {
    /// `FORMAT`.
    pub format: String,
    /// `VERSION`.
    pub version: u32,
    /// Upstream name → its servers with admin state.
    pub upstreams: BTreeMap<String, Vec<Entry>>,
}

impl StateFile {
    /// The admin state of `upstreams` now.
    pub fn capture(upstreams: &[Upstream<'_>]) -> StateFile {
        let mut out = BTreeMap::new();
        for u in upstreams {
            // LIVE slots only (a RETIRING server is leaving; a FREE slot
            // holds none), each skipped if reused while it was read.
            let z = u.zone;
            let entries: Vec<Entry> = (0..z.peers())
                .filter_map(|i| {
                    let mark = z.listed(i).filter(|m| m.status == LIVE)?;
                    let (v, h) = (z.view(i, 0)?, z.known_health(i));
                    if !(v.api
                        || v.admin_down
                        || v.drain
                        || v.weight_override.is_some()
                        || h.is_some())
                    {
                        return None;
                    }
                    let added = match v.api {
                        true => Some(AddedServer {
                            server: String::from_utf8(v.server.to_vec()).ok()?,
                            weight: v.configured_weight,
                            max_conns: v.max_conns,
                            max_fails: z.states()[i].max_fails(),
                            fail_timeout_ms: z.states()[i].fail_timeout_ms(),
                            backup: v.backup,
                        }),
                        false => None,
                    };
                    let e = Entry {
                        identity: String::from_utf8(v.identity.to_vec()).ok()?,
                        down: v.admin_down,
                        drain: v.drain,
                        weight: v.weight_override,
                        health: h.map(|up| if up { Health::Up } else { Health::Unhealthy }),
                        added,
                    };
                    z.slot_unchanged(i, mark).then_some(e)
                })
                .collect();
            out.insert(u.name.to_owned(), entries);
        }
        StateFile {
            format: FORMAT.to_owned(),
            version: VERSION,
            upstreams: out,
        }
    }

    /// Parses a state file's bytes.
    pub fn parse(bytes: &[u8]) -> Result<StateFile, String> {
        let f: StateFile =
            serde_json::from_slice(bytes).map_err(|e| format!("not a state file: {e}"))?;
        if f.format != FORMAT || !VERSIONS.contains(&f.version) {
            return Err(format!(
                "unknown format \"{}\" version {} (expected \"{FORMAT}\" version 1 or \
                 {VERSION})",
                f.format, f.version
            ));
        }
        for (name, entries) in &f.upstreams {
            if let Some(e) = entries
                .iter()
                .find(|e| e.weight.is_some_and(|w| w == 0 || w > MAX_WEIGHT))
            {
                return Err(format!(
                    "upstream \"{name}\": invalid weight {:?} for \"{}\"",
                    e.weight,
                    e.identity.replace('\0', " ")
                ));
            }
        }
        Ok(f)
    }

    /// Reads `path`: `Ok(None)` when it does not exist.
    ///
    /// Symbolic links are followed (at most [`MAX_LINKS`]); what they
    /// lead to is read only if it is a regular file: a FIFO, a device or a
    /// directory is refused before it is opened, and again from the opened
    /// file (`fstat`), which is opened non-blocking and not through a
    /// link, so a file swapped in between is refused too. At most
    /// [`MAX_FILE`] + 1 bytes are read, whatever the file's size says.
    pub fn load(path: &Path) -> Result<Option<StateFile>, String> {
        match read_regular(path, MAX_FILE)? {
            Some(bytes) => Self::parse(&bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Applies the entries of upstream `name` to `zone` (fresh, at
    /// configuration time) and publishes a generation if a weight
    /// changed. Entries are matched by identity through an index, so the
    /// cost is O(entries + servers).
    ///
    /// When the weights from the file cannot be put in force (their
    /// generation does not fit the zone), none of them is kept: the
    /// configured weights serve, the API shows them, the next state file
    /// holds them, and [`Applied::refused`] says why.
    pub fn apply(&self, name: &str, zone: Zone<'_>) -> Applied {
        let mut out = Applied::default();
        let Some(entries) = self.upstreams.get(name) else {
            return out;
        };
        if entries.is_empty() {
            return out;
        }
        // LIVE slots only: a resolved server is restored only if it is
        // present at load.
        let mut index: HashMap<&[u8], usize> = (0..zone.peers())
            .filter(|&i| zone.slot_status(i) == Some(LIVE))
            .map(|i| (zone.identity(i), i))
            .collect();
        let mut weights = Vec::new();
        for e in entries {
            let i = match (index.get(e.identity.as_bytes()), &e.added) {
                (Some(&i), _) => i,
                // Added through the API before the restart: added again
                // (at configuration time: nothing else builds).
                (None, Some(a)) => match add_again(zone, &e.identity, a) {
                    Some(i) => {
                        index.insert(e.identity.as_bytes(), i);
                        i
                    }
                    None => {
                        out.unmatched += 1;
                        continue;
                    }
                },
                (None, None) => {
                    out.unmatched += 1;
                    continue;
                }
            };
            if zone.set_admin(i, Some(e.down), Some(e.drain), 0).is_ok() {
                weights.push((i, e.weight));
                if let Some(h) = e.health {
                    zone.restore_health(i, h == Health::Up);
                }
                out.restored += 1;
            }
        }
        // At configuration time: nothing else builds.
        if let Err(e) = zone.restore_weights(&weights, INIT_OWNER, |_| true) {
            let changed = weights
                .iter()
                .filter(|&&(i, w)| zone.view(i, 0).is_some_and(|v| v.weight_override != w))
                .count();
            out.refused = Some(format!(
                "the weights of {changed} servers were not restored: {e}; \
                 the configured weights serve",
            ));
        }
        out
    }

    /// Entries (and upstreams) of the file whose upstream is none of
    /// `names`: what a renamed or removed upstream left behind.
    pub fn unclaimed(&self, names: &[&[u8]]) -> (usize, usize) {
        let names: std::collections::HashSet<&[u8]> = names.iter().copied().collect();
        self.upstreams
            .iter()
            .filter(|(name, _)| !names.contains(name.as_bytes()))
            .fold((0, 0), |(e, u), (_, entries)| (e + entries.len(), u + 1))
    }

    /// Writes the file atomically: a temporary file beside the file (after
    /// following `path`'s symbolic links, so a linked state file stays a
    /// link and its target is replaced), flushed to disk, renamed over it,
    /// then the directory flushed. When this returns `Ok`, the file holds
    /// this state and survives a crash of the machine.
    ///
    /// The temporary file has a random name, is created exclusively
    /// (`O_CREAT|O_EXCL|O_NOFOLLOW`: never an existing file, never through
    /// a link planted in its place) with mode `0600` whatever the umask
    /// (nginx's daemon sets umask 0). A target that exists and is not a
    /// regular file (a FIFO, a device) is refused, not replaced.
    pub fn save(&self, path: &Path) -> io::Result<()> {
        let mut body = serde_json::to_vec_pretty(self).map_err(io::Error::other)?;
        body.push(b'\n');
        write_atomically(path, &body)
    }
}

/// Replaces the file at `path` with `body`, as [`StateFile::save`] says:
/// through a temporary file (random name, created exclusively, never
/// through a link, `0600`) flushed and renamed over it, then the directory
/// flushed. A target that is not a regular file is refused.
pub fn write_atomically(path: &Path, body: &[u8]) -> io::Result<()> {
    let target = resolve(path)?;
    match fs::symlink_metadata(&target) {
        Ok(m) if !m.file_type().is_file() => {
            return Err(io::Error::other(not_regular(&m)));
        }
        _ => {}
    }
    let (dir, name) = dir_and_name(&target)?;
    let mut attempts = 0;
    let (tmp, mut f) = loop {
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".{}.tmp", random_hex()));
        let tmp = dir.join(tmp_name);
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)
        {
            Ok(f) => break (tmp, f),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempts < 8 => {
                attempts += 1;
            }
            Err(e) => return Err(e),
        }
    };
    let r = (|| {
        f.write_all(body)?;
        f.sync_all()?;
        fs::rename(&tmp, &target)
    })();
    if r.is_err() {
        let _ = fs::remove_file(&tmp);
        return r;
    }
    fs::File::open(dir)?.sync_all()
}

/// Reads the regular file at `path` (`Ok(None)`: it does not exist), at
/// most `max` bytes.
///
/// Symbolic links are followed (at most [`MAX_LINKS`]); what they
/// lead to is read only if it is a regular file: a FIFO, a device or a
/// directory is refused before it is opened, and again from the opened
/// file (`fstat`), which is opened non-blocking and not through a
/// link, so a file swapped in between is refused too. At most `max` + 1
/// bytes are read, whatever the file's size says.
pub fn read_regular(path: &Path, max: u64) -> Result<Option<Vec<u8>>, String> {
    let target = match resolve(path) {
        Ok(t) => t,
        Err(e) => return Err(format!("cannot read: {e}")),
    };
    match fs::symlink_metadata(&target) {
        Ok(m) if !m.file_type().is_file() => return Err(not_regular(&m)),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read: {e}")),
    }
    let f = match fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&target)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read: {e}")),
    };
    let meta = f.metadata().map_err(|e| format!("cannot read: {e}"))?;
    if !meta.file_type().is_file() {
        return Err(not_regular(&meta));
    }
    let mut bytes = Vec::new();
    f.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() as u64 > max {
        return Err(format!("larger than {max} bytes"));
    }
    Ok(Some(bytes))
}

/// An exclusive lock on the state file, held by one saver at a time
/// across workers: `flock` on `.NAME.lock` beside the file (after its
/// links are followed), created `0600` and never through a link; released
/// when dropped, or by the kernel when the process dies.
///
/// Workers save concurrently (each after its own change); a capture made
/// before another worker's change and renamed after that worker's save
/// would take the change out of the file after its 200 went out. Under
/// the lock, capture and rename are one step: whoever captures later
/// renames later.
#[derive(Debug)]
pub struct SaveLock {
    _file: fs::File,
}

/// The directory (`.` for a bare name) and the file name of `target`.
fn dir_and_name(target: &Path) -> io::Result<(&Path, &std::ffi::OsStr)> {
    let dir = target
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = target
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    Ok((dir, name))
}

impl SaveLock {
    /// Waits for the lock of the state file at `path`.
    pub fn acquire(path: &Path) -> io::Result<SaveLock> {
        let target = resolve(path)?;
        let (dir, name) = dir_and_name(&target)?;
        let mut lock_name = std::ffi::OsString::from(".");
        lock_name.push(name);
        lock_name.push(".lock");
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(dir.join(lock_name))?;
        loop {
            // SAFETY: a valid open descriptor; flock touches no memory.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
                return Ok(SaveLock { _file: file });
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

/// What [`StateFile::apply`] did to one upstream.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Servers whose state was restored.
    pub restored: usize,
    /// Entries of the upstream that match no server in it (ignored).
    pub unmatched: usize,
    /// Why the weights from the file were not put in force, if they
    /// were not (the configured weights serve).
    pub refused: Option<String>,
}

/// Adds the server `a` of the state file (identity `identity`) to a fresh
/// `zone`; its slot, or `None` when the zone has no room for it (its
/// `ha_api_max` shrank, or is gone) or refuses it.
fn add_again(zone: Zone<'_>, identity: &str, a: &AddedServer) -> Option<usize> {
    let spec = PeerSpec {
        server: a.server.as_bytes(),
        weight: a.weight,
        max_conns: a.max_conns,
        max_fails: a.max_fails,
        fail_timeout_ms: a.fail_timeout_ms,
        backup: a.backup,
        ..PeerSpec::new(identity.as_bytes())
    };
    zone.add_server(&spec, 0, INIT_OWNER, |_| true)
        .ok()
        .map(|added| added.slot)
}

/// Most symbolic links followed to reach the state file.
pub const MAX_LINKS: usize = 8;

/// `path` with its symbolic links followed (itself when it is not a link,
/// or names nothing yet).
pub fn resolve(path: &Path) -> io::Result<PathBuf> {
    let mut p = path.to_path_buf();
    for _ in 0..=MAX_LINKS {
        match fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                let to = fs::read_link(&p)?;
                p = match p.parent() {
                    Some(d) if to.is_relative() => d.join(to),
                    _ => to,
                };
            }
            Ok(_) => return Ok(p),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(p),
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other(format!(
        "more than {MAX_LINKS} symbolic links to follow"
    )))
}

fn not_regular(m: &fs::Metadata) -> String {
    let t = m.file_type();
    let what = if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() || t.is_block_device() {
        "a device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    };
    format!("not a regular file ({what}), refused")
}

/// 128 unpredictable bits in hex: SipHash under the process's secret
/// random keys (std seeds them from the kernel) over the pid, the time
/// and a counter.
fn random_hex() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut halves = [0u64; 2];
    for (k, h) in halves.iter_mut().enumerate() {
        *h = RandomState::new().hash_one((std::process::id(), t, n, k));
    }
    format!("{:016x}{:016x}", halves[0], halves[1])
}

#[cfg(test)]
mod tests {
    use super::*;
    use hab_core::spec::{PeerSpec, Policy, UpstreamSpec};
    use hab_core::testing::OwnedTable;

    fn zone() -> OwnedTable {
        let peers = [
            PeerSpec::new(b"app\0a\0x1"),
            PeerSpec::new(b"app\0b\0x2"),
            PeerSpec::new(b"app\0c\0x3"),
        ];
        OwnedTable::new(&UpstreamSpec {
            health: Default::default(),
            policy: Policy::RoundRobin,
            peers: &peers,
            schedule_room: 0,
            sessions: false,
        })
        .unwrap()
    }

    #[test]
    fn only_live_slots_are_saved_and_restored() {
        let ids: [&[u8]; 3] = [b"app\0a\0x1", b"app\0r\0x2", b"app\0r\0x3"];
        fn spec<'a>(peers: &'a [PeerSpec<'a>]) -> UpstreamSpec<'a> {
            UpstreamSpec {
                health: Default::default(),
                policy: Policy::RoundRobin,
                peers,
                schedule_room: 0,
                sessions: false,
            }
        }
        let t = OwnedTable::with_capacity(&spec(&[PeerSpec::new(ids[0])]), 4).unwrap();
        let z = t.zone();
        let all: Vec<PeerSpec<'_>> = ids.iter().map(|id| PeerSpec::new(id)).collect();
        z.apply_membership(&spec(&all), [1, 1], 9, |_| true, 0)
            .unwrap();
        for i in 0..3 {
            z.set_admin(i, None, Some(true), 0).unwrap();
        }
        // "r 0x2" leaves: RETIRING, not saved; FREE slot 3 neither.
        z.apply_membership(&spec(&[all[0], all[2]]), [1, 2], 9, |_| true, 0)
            .unwrap();
        let ups = [Upstream {
            name: "app",
            zone: z,
            learn: None,
        }];
        let f = StateFile::capture(&ups);
        let saved: Vec<&str> = f.upstreams["app"]
            .iter()
            .map(|e| e.identity.as_str())
            .collect();
        assert_eq!(saved, ["app\0a\0x1", "app\0r\0x3"]);
        // Restored into a fresh zone: only servers present (LIVE) at load.
        let mut f2 = f.clone();
        f2.upstreams.get_mut("app").unwrap().push(Entry {
            identity: "app\0r\0x2".to_owned(),
            down: true,
            drain: false,
            weight: None,
            health: None,
            added: None,
        });
        let fresh = OwnedTable::with_capacity(&spec(&[all[0], all[1]]), 4).unwrap();
        let fz = fresh.zone();
        fz.apply_membership(&spec(&[all[0]]), [1, 1], 9, |_| true, 0)
            .unwrap();
        assert_eq!(f2.apply("app", fz).restored, 1, "only \"a\" is present");
        assert!(fz.view(0, 0).unwrap().drain);
        assert!(!fz.view(1, 0).unwrap().admin_down, "RETIRING: not restored");
    }

    /// Servers added through the API are saved with what they were
    /// added with and added again into a fresh zone, with their admin
    /// state; one the fresh zone has no room for is counted unmatched.
    #[test]
    fn servers_added_through_the_api_are_added_again() {
        let peers = [PeerSpec::new(b"app\0a\0x1")];
        let spec = UpstreamSpec {
            health: Default::default(),
            policy: Policy::RoundRobin,
            peers: &peers,
            schedule_room: 0,
            sessions: false,
        };
        let t = OwnedTable::with_api(&spec, 3, 2).unwrap();
        let z = t.zone();
        let add = |id: &'static [u8], server: &'static [u8], w: u32| {
            z.add_server(
                &PeerSpec {
                    server,
                    weight: w,
                    max_conns: 4,
                    fail_timeout_ms: 2500,
                    ..PeerSpec::new(id)
                },
                0,
                9,
                |_| true,
            )
            .ok()
            .unwrap()
            .slot
        };
        let b = add(b"app\x0010.0.0.2:80\x0010.0.0.2:80", b"10.0.0.2:80", 3);
        let c = add(b"app\x0010.0.0.3:80\x0010.0.0.3:80", b"10.0.0.3:80", 1);
        z.set_admin(c, None, Some(true), 0).unwrap();
        let ups = [Upstream {
            name: "app",
            zone: z,
            learn: None,
        }];
        let f = StateFile::capture(&ups);
        assert_eq!(f.version, 2);
        let saved = &f.upstreams["app"];
        assert_eq!(saved.len(), 2, "{saved:?}");
        assert_eq!(
            saved[0].added,
            Some(AddedServer {
                server: "10.0.0.2:80".into(),
                weight: 3,
                max_conns: 4,
                max_fails: 1,
                fail_timeout_ms: 2500,
                backup: false,
            })
        );
        let text = serde_json::to_vec(&f).unwrap();
        let f = StateFile::parse(&text).unwrap();
        // A fresh zone with the same room: both back, c draining.
        let fresh = OwnedTable::with_api(&spec, 3, 2).unwrap();
        let fz = fresh.zone();
        let a = f.apply("app", fz);
        assert_eq!((a.restored, a.unmatched), (2, 0));
        assert_eq!(fz.api_servers(), (2, 2));
        let by_server = |name: &str| {
            (0..fz.peers())
                .filter(|&i| fz.slot_status(i) == Some(LIVE))
                .find(|&i| fz.server(i) == name.as_bytes())
                .and_then(|i| fz.view(i, 0))
                .unwrap()
        };
        let (vb, vc) = (by_server("10.0.0.2:80"), by_server("10.0.0.3:80"));
        assert!(vb.api && vc.api);
        assert_eq!((vb.weight, vb.max_conns, vb.drain), (3, 4, false));
        assert!(vc.drain);
        assert_ne!(b, c);
        // Room for one only: the second is not added, and counted.
        let small = OwnedTable::with_api(&spec, 2, 1).unwrap();
        let a = f.apply("app", small.zone());
        assert_eq!((a.restored, a.unmatched), (1, 1));
        // A version 1 file still loads.
        let v1 = br#"{"format":"ha-balancer-state","version":1,"upstreams":{}}"#;
        assert!(StateFile::parse(v1).is_ok());
        let v3 = br#"{"format":"ha-balancer-state","version":3,"upstreams":{}}"#;
        assert!(StateFile::parse(v3).is_err());
    }

    #[test]
    fn save_then_load_restores_admin_state() {
        let dir = std::env::temp_dir().join(format!("hab-state-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.json");
        let t = zone();
        t.zone().set_admin(0, Some(true), None, 0).unwrap();
        t.zone().set_admin(2, None, Some(true), 0).unwrap();
        t.zone().set_weight(1, Some(7)).unwrap();
        let ups = [Upstream {
            name: "app",
            zone: t.zone(),
            learn: None,
        }];
        StateFile::capture(&ups).save(&path).unwrap();
        assert_eq!(StateFile::load(&dir.join("missing")).unwrap(), None);

        let fresh = zone();
        let f = StateFile::load(&path).unwrap().unwrap();
        assert_eq!(f.apply("app", fresh.zone()).restored, 3);
        assert_eq!(f.apply("other", fresh.zone()).restored, 0);
        let z = fresh.zone();
        assert!(z.view(0, 0).unwrap().admin_down);
        assert!(z.view(2, 0).unwrap().drain);
        assert_eq!(z.view(1, 0).unwrap().weight, 7);
        assert_eq!(z.generation(), 2);
        fs::remove_dir_all(&dir).unwrap();
    }

    fn file_for(entries: Vec<Entry>) -> StateFile {
        StateFile {
            format: FORMAT.to_owned(),
            version: VERSION,
            upstreams: BTreeMap::from([("app".to_owned(), entries)]),
        }
    }

    fn entry(identity: &str, weight: Option<u32>) -> Entry {
        Entry {
            identity: identity.to_owned(),
            down: false,
            drain: true,
            weight,
            health: None,
            added: None,
        }
    }

    #[test]
    fn weights_that_do_not_fit_are_refused_not_kept() {
        // 4 servers of weight 1: a schedule of 1,000,003 entries does not
        // fit the zone sized for this configuration.
        let ids: Vec<String> = (0..4).map(|k| format!("app\0s{k}\0x{k}")).collect();
        let peers: Vec<PeerSpec<'_>> = ids.iter().map(|id| PeerSpec::new(id.as_bytes())).collect();
        let t = OwnedTable::new(&UpstreamSpec {
            health: Default::default(),
            policy: Policy::RoundRobin,
            peers: &peers,
            schedule_room: 0,
            sessions: false,
        })
        .unwrap();
        let z = t.zone();
        let f = file_for(vec![entry(&ids[0], Some(1_000_000)), entry(&ids[1], None)]);
        let a = f.apply("app", z);
        assert_eq!(a.restored, 2, "{a:?}");
        let why = a.refused.expect("the refusal is reported");
        assert!(
            why.contains("weights of 1 servers were not restored"),
            "{why}"
        );
        let v = z.view(0, 0).unwrap();
        assert_eq!((v.weight, v.weight_override), (1, None), "not kept");
        assert!(v.drain, "the rest of the entry is restored");
        assert!(
            !z.weights_pending(),
            "nothing left to sneak into a later publish"
        );
        let saved = StateFile::capture(&[Upstream {
            name: "app",
            zone: z,
            learn: None,
        }]);
        assert!(
            saved.upstreams["app"].iter().all(|e| e.weight.is_none()),
            "not written back"
        );
        // A later weight change publishes.
        z.set_weight(2, Some(3)).unwrap();
        z.publish(INIT_OWNER, |_| true).unwrap();
        assert_eq!(z.view(2, 0).unwrap().weight, 3);
    }

    #[test]
    fn entries_of_upstreams_not_configured_are_counted() {
        let mut f = file_for(vec![entry("app\0a\0x1", None)]);
        f.upstreams.insert(
            "old".to_owned(),
            vec![entry("old\0a\0x1", None), entry("old\0b\0x2", None)],
        );
        f.upstreams.insert("empty".to_owned(), vec![]);
        assert_eq!(f.unclaimed(&[b"app", b"empty"]), (2, 1));
        assert_eq!(f.unclaimed(&[b"app"]), (2, 2));
        assert_eq!(f.unclaimed(&[b"app", b"old", b"empty"]), (0, 0));
    }

    #[test]
    fn unmatched_entries_are_counted() {
        let f = file_for(vec![
            entry("app\0a\0x1", None),
            entry("app\0gone\0x9", None),
            entry("app\0gone\0x8", None),
        ]);
        let a = f.apply("app", zone().zone());
        assert_eq!((a.restored, a.unmatched, a.refused), (1, 2, None));
    }

    /// Restoring is O(entries + servers): 20,000 unmatched entries against
    /// 20,000 servers cost about what one entry costs (the index is built
    /// once), where a scan per entry costs 20,000 times more. Bound by a
    /// ratio to the one-entry run measured here, best of 3 each.
    #[test]
    fn restore_is_linear_in_entries_plus_servers() {
        const N: usize = 20_000;
        let ids: Vec<String> = (0..N).map(|k| format!("app\0s{k}\x0010.0.{k}")).collect();
        let peers: Vec<PeerSpec<'_>> = ids.iter().map(|id| PeerSpec::new(id.as_bytes())).collect();
        let t = OwnedTable::new(&UpstreamSpec {
            health: Default::default(),
            policy: Policy::RoundRobin,
            peers: &peers,
            schedule_room: 0,
            sessions: false,
        })
        .unwrap();
        let unmatched = |n: usize| {
            file_for(
                (0..n)
                    .map(|k| Entry {
                        drain: false,
                        ..entry(&format!("app\0gone{k}\x0010.1.{k}"), None)
                    })
                    .collect(),
            )
        };
        let (one, many) = (unmatched(1), unmatched(N));
        let best = |f: &StateFile| {
            (0..3)
                .map(|_| {
                    let t0 = std::time::Instant::now();
                    assert_eq!(f.apply("app", t.zone()).restored, 0);
                    t0.elapsed()
                })
                .min()
                .unwrap()
        };
        let (base, big) = (best(&one), best(&many));
        // Linear: index (N) + lookups (N) ≈ 2 × base, with room for noise;
        // quadratic: N × base.
        assert!(
            big < base * 40,
            "{N} entries took {big:?}, one entry {base:?}: not linear"
        );
    }

    #[test]
    fn corrupt_files_are_refused_with_a_reason() {
        let t = zone();
        t.zone().set_weight(1, Some(7)).unwrap();
        let good = serde_json::to_vec(&StateFile::capture(&[Upstream {
            name: "app",
            zone: t.zone(),
            learn: None,
        }]))
        .unwrap();
        assert!(StateFile::parse(&good).is_ok());
        for bad in [
            &good[..good.len() / 2],
            b"\x00\xffgarbage".as_slice(),
            b"".as_slice(),
            br#"{"format":"other","version":1,"upstreams":{}}"#.as_slice(),
            br#"{"format":"ha-balancer-state","version":1,"upstreams":{"app":[{"identity":"x","weight":0}]}}"#.as_slice(),
        ] {
            let e = StateFile::parse(bad).unwrap_err();
            assert!(!e.is_empty());
        }
    }
}
