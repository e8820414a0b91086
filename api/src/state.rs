//! The state file: admin state kept across a restart and a binary upgrade
//!
//! `ha_state_file PATH;` names a JSON file holding, per upstream, every
//! server's admin state (down, drain, weight override) and, in upstreams
//! with `ha_check`, its health (`up` or `unhealthy`), keyed by the
//! server's identity (upstream, `server` string and address). A worker
//! rewrites it after every accepted change and every health transition (a
//! temporary file in the same directory, flushed, then renamed over the
//! old one, so a reader sees the old or the new file, never half of one). At startup, each fresh zone
//! takes the entries of its upstream; servers that are no longer in the
//! configuration are ignored. A missing file is a first start; an
//! unreadable or corrupt one is reported by the caller and ignored.
//!
//! ```json
//! {"format": "ha-balancer-state", "version": 1,
//!  "upstreams": {"app": [{"identity": "app\u0000a:80\u0000127.0.0.1:80",
//!                         "down": false, "drain": true, "weight": 5}]}}
//! ```

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::Path;

use hab_core::table::generation::INIT_OWNER;
use hab_core::table::membership::LIVE;
use hab_core::table::{Zone, MAX_WEIGHT};
use serde::{Deserialize, Serialize};

use crate::route::Upstream;

const FORMAT: &str = "ha-balancer-state";
const VERSION: u32 = 1;

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
    /// [`FORMAT`].
    pub format: String,
    /// [`VERSION`].
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
                    if !(v.admin_down || v.drain || v.weight_override.is_some() || h.is_some()) {
                        return None;
                    }
                    let e = Entry {
                        identity: String::from_utf8(v.identity.to_vec()).ok()?,
                        down: v.admin_down,
                        drain: v.drain,
                        weight: v.weight_override,
                        health: h.map(|up| if up { Health::Up } else { Health::Unhealthy }),
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
        if f.format != FORMAT || f.version != VERSION {
            return Err(format!(
                "unknown format \"{}\" version {} (expected \"{FORMAT}\" version {VERSION})",
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
    pub fn load(path: &Path) -> Result<Option<StateFile>, String> {
        let meta = match fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot read: {e}")),
        };
        if meta.len() > MAX_FILE {
            return Err(format!("larger than {MAX_FILE} bytes"));
        }
        let bytes = fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
        Self::parse(&bytes).map(Some)
    }

    /// Applies the entries of upstream `name` to `zone` (fresh, at
    /// configuration time) and publishes a generation if a weight
    /// changed; the number of servers whose state was restored.
    pub fn apply(&self, name: &str, zone: Zone<'_>) -> usize {
        let Some(entries) = self.upstreams.get(name) else {
            return 0;
        };
        let mut applied = 0;
        for e in entries {
            // A LIVE slot only: a resolved server is restored only if it
            // is present at load.
            let Some(i) = (0..zone.peers()).find(|&i| {
                zone.slot_status(i) == Some(LIVE) && zone.identity(i) == e.identity.as_bytes()
            }) else {
                continue;
            };
            if zone.set_admin(i, Some(e.down), Some(e.drain), 0).is_ok()
                && zone.set_weight(i, e.weight).is_ok()
            {
                if let Some(h) = e.health {
                    zone.restore_health(i, h == Health::Up);
                }
                applied += 1;
            }
        }
        if zone.weights_pending() {
            let _ = zone.publish(INIT_OWNER, |_| true);
        }
        applied
    }

    /// Writes the file atomically: a temporary file beside `path`, flushed
    /// to disk, renamed over it.
    pub fn save(&self, path: &Path) -> io::Result<()> {
        let body = serde_json::to_vec_pretty(self).map_err(io::Error::other)?;
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
        let name = path
            .file_name()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".{}.tmp", std::process::id()));
        let tmp = match dir {
            Some(d) => d.join(tmp_name),
            None => tmp_name.into(),
        };
        let r = (|| {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(&body)?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            fs::rename(&tmp, path)
        })();
        if r.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        r
    }
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
        });
        let fresh = OwnedTable::with_capacity(&spec(&[all[0], all[1]]), 4).unwrap();
        let fz = fresh.zone();
        fz.apply_membership(&spec(&[all[0]]), [1, 1], 9, |_| true, 0)
            .unwrap();
        assert_eq!(f2.apply("app", fz), 1, "only \"a\" is present");
        assert!(fz.view(0, 0).unwrap().drain);
        assert!(!fz.view(1, 0).unwrap().admin_down, "RETIRING: not restored");
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
        }];
        StateFile::capture(&ups).save(&path).unwrap();
        assert_eq!(StateFile::load(&dir.join("missing")).unwrap(), None);

        let fresh = zone();
        let f = StateFile::load(&path).unwrap().unwrap();
        assert_eq!(f.apply("app", fresh.zone()), 3);
        assert_eq!(f.apply("other", fresh.zone()), 0);
        let z = fresh.zone();
        assert!(z.view(0, 0).unwrap().admin_down);
        assert!(z.view(2, 0).unwrap().drain);
        assert_eq!(z.view(1, 0).unwrap().weight, 7);
        assert_eq!(z.generation(), 2);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn corrupt_files_are_refused_with_a_reason() {
        let t = zone();
        t.zone().set_weight(1, Some(7)).unwrap();
        let good = serde_json::to_vec(&StateFile::capture(&[Upstream {
            name: "app",
            zone: t.zone(),
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
