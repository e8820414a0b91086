//! The sessions file: learnt sessions kept across a restart
//!
//! With `ha_state_file PATH`, the master writes the learnt sessions of
//! every `ha_sticky learn` zone to `PATH.sessions` when it exits (a stop,
//! a restart), and a fresh zone takes its entries back at the next start.
//! Sessions change on every response, so they are not written with the
//! state file on each change: a file of a million sessions is 24 MB.
//!
//! Binary, little-endian, so that a million sessions read and write in
//! milliseconds:
//!
//! ```text
//!  "HABSESS1"                          magic and version
//!  u32 zones
//!  per zone:  u32 name length, name    the zone's name (zone=NAME:SIZE)
//!             u64 entries
//!             per entry: u64 fingerprint, u64 server, u64 age in ms
//! ```
//!
//! Ages, not times: the monotonic clock the tables keep times in starts
//! again at a reboot. Written like the state file (a temporary file,
//! `0600`, created exclusively, flushed and renamed over the old one);
//! read only if it is a regular file, at most [`MAX_FILE`] bytes. A
//! truncated or corrupt file is refused whole.

use std::path::Path;

use hab_core::learn::Sessions;

use crate::state::{read_regular, write_atomically};

const MAGIC: &[u8; 8] = b"HABSESS1";

/// Largest sessions file read: 2 GiB (89 million sessions).
pub const MAX_FILE: u64 = 2 << 30;

/// The learnt sessions of one zone, as the file keeps them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ZoneSessions {
    /// The zone's name.
    pub name: String,
    /// `(fingerprint, server, age_ms)` of each session.
    pub entries: Vec<(u64, u64, u64)>,
}

/// The path of the sessions file beside state file `state_file`.
pub fn path_for(state_file: &Path) -> std::path::PathBuf {
    let mut p = state_file.as_os_str().to_owned();
    p.push(".sessions");
    p.into()
}

/// The live sessions of `tables` (name, table) at `now_ms`.
pub fn capture(tables: &[(&str, Sessions<'_>)], now_ms: u64) -> Vec<ZoneSessions> {
    tables
        .iter()
        .map(|(name, t)| {
            let mut entries = Vec::new();
            t.for_each_live(now_ms, |fp, sid, last| {
                entries.push((fp, sid, now_ms.saturating_sub(last)));
            });
            ZoneSessions {
                name: (*name).to_owned(),
                entries,
            }
        })
        .collect()
}

/// The file's bytes for `zones`.
pub fn encode(zones: &[ZoneSessions]) -> Vec<u8> {
    let n: usize = zones
        .iter()
        .map(|z| 12 + z.name.len() + 24 * z.entries.len())
        .sum();
    let mut out = Vec::with_capacity(12 + n);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(zones.len() as u32).to_le_bytes());
    for z in zones {
        out.extend_from_slice(&(z.name.len() as u32).to_le_bytes());
        out.extend_from_slice(z.name.as_bytes());
        out.extend_from_slice(&(z.entries.len() as u64).to_le_bytes());
        for &(fp, sid, age) in &z.entries {
            out.extend_from_slice(&fp.to_le_bytes());
            out.extend_from_slice(&sid.to_le_bytes());
            out.extend_from_slice(&age.to_le_bytes());
        }
    }
    out
}

/// Reads `n` bytes from `bytes` at `*at`.
fn take<'b>(bytes: &'b [u8], at: &mut usize, n: usize) -> Result<&'b [u8], String> {
    let end = at
        .checked_add(n)
        .filter(|&e| e <= bytes.len())
        .ok_or_else(|| format!("truncated at byte {}", *at))?;
    let s = &bytes[*at..end];
    *at = end;
    Ok(s)
}

fn u32_at(bytes: &[u8], at: &mut usize) -> Result<u32, String> {
    let b = take(bytes, at, 4)?;
    Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn u64_at(bytes: &[u8], at: &mut usize) -> Result<u64, String> {
    let b = take(bytes, at, 8)?;
    let mut w = [0u8; 8];
    w.copy_from_slice(b);
    Ok(u64::from_le_bytes(w))
}

/// The zones of a file's bytes; an error for anything but a whole,
/// well-formed file.
pub fn decode(bytes: &[u8]) -> Result<Vec<ZoneSessions>, String> {
    let mut at = 0usize;
    if take(bytes, &mut at, 8)? != MAGIC {
        return Err("not a sessions file (bad magic)".to_owned());
    }
    let zones = u32_at(bytes, &mut at)?;
    let mut out = Vec::new();
    for _ in 0..zones {
        let len = u32_at(bytes, &mut at)? as usize;
        let name = std::str::from_utf8(take(bytes, &mut at, len)?)
            .map_err(|_| "a zone name is not UTF-8".to_owned())?
            .to_owned();
        let n = u64_at(bytes, &mut at)?;
        // Never trust the count for an allocation: what is left bounds it.
        let fits = (bytes.len() - at) / 24;
        if n > fits as u64 {
            return Err(format!(
                "zone \"{name}\" claims {n} sessions, the file holds {fits}"
            ));
        }
        let mut entries = Vec::with_capacity(n as usize);
        for _ in 0..n {
            entries.push((
                u64_at(bytes, &mut at)?,
                u64_at(bytes, &mut at)?,
                u64_at(bytes, &mut at)?,
            ));
        }
        out.push(ZoneSessions { name, entries });
    }
    if at != bytes.len() {
        return Err(format!("{} bytes after the last zone", bytes.len() - at));
    }
    Ok(out)
}

/// Writes the sessions of `tables` to `path`.
pub fn save(path: &Path, tables: &[(&str, Sessions<'_>)], now_ms: u64) -> std::io::Result<usize> {
    let zones = capture(tables, now_ms);
    write_atomically(path, &encode(&zones))?;
    Ok(zones.iter().map(|z| z.entries.len()).sum())
}

/// Reads `path`: `Ok(None)` when it does not exist.
pub fn load(path: &Path) -> Result<Option<Vec<ZoneSessions>>, String> {
    match read_regular(path, MAX_FILE)? {
        Some(bytes) => decode(&bytes).map(Some),
        None => Ok(None),
    }
}

/// Puts the sessions of zone `name` from `zones` into `table` at `now_ms`
/// (their times set back by their ages; those older than the table's
/// timeout are left out): how many.
pub fn restore(zones: &[ZoneSessions], name: &str, table: Sessions<'_>, now_ms: u64) -> usize {
    let Some(z) = zones.iter().find(|z| z.name == name) else {
        return 0;
    };
    let mut n = 0;
    // Oldest first: the ring then holds them in the order they were learnt.
    let mut entries = z.entries.clone();
    entries.sort_by_key(|e| std::cmp::Reverse(e.2));
    for (fp, sid, age) in entries {
        if age >= table.timeout_ms() || fp == 0 || sid == 0 {
            continue;
        }
        let _ = table.insert_raw(fp, sid, now_ms.saturating_sub(age));
        n += 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use hab_core::learn::{self, fingerprint};
    use hab_core::testing::Region;

    fn table(region: &Region, timeout_ms: u64) -> Sessions<'_> {
        // SAFETY: the region is ours, aligned, and outlives the table.
        unsafe { Sessions::init(region.as_ptr(), region.len(), timeout_ms) }.unwrap()
    }

    #[test]
    fn sessions_survive_a_file_round_trip_with_their_ages() {
        let (r1, r2) = (
            Region::new(learn::size_for(256).unwrap()),
            Region::new(learn::size_for(512).unwrap()),
        );
        let a = table(&r1, 60_000);
        for k in 0..100u64 {
            a.learn(
                fingerprint(format!("s{k}").as_bytes()),
                1000 + k,
                1_000 + k,
                true,
            );
        }
        let dir = std::env::temp_dir().join(format!("hab-sessions-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.json.sessions");
        assert_eq!(save(&path, &[("z", a)], 2_000).unwrap(), 100);
        let zones = load(&path).unwrap().unwrap();
        assert_eq!(zones.len(), 1);
        // After a reboot the clock reads less: ages carry over.
        let b = table(&r2, 60_000);
        assert_eq!(restore(&zones, "z", b, 50), 100);
        assert_eq!(restore(&zones, "other", b, 50), 0);
        for k in 0..100u64 {
            assert_eq!(
                b.lookup(fingerprint(format!("s{k}").as_bytes()), 50),
                Some(1000 + k)
            );
        }
        // Older than the timeout: left out.
        let r3 = Region::new(learn::size_for(512).unwrap());
        let c = table(&r3, 950);
        assert_eq!(restore(&zones, "z", c, 5_000), 49);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_damaged_file_is_refused_whole() {
        let zones = vec![ZoneSessions {
            name: "z".into(),
            entries: vec![(1, 2, 3), (4, 5, 6)],
        }];
        let bytes = encode(&zones);
        assert_eq!(decode(&bytes).unwrap(), zones);
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(decode(&extra).is_err());
        let mut lying = bytes.clone();
        // The count claims more than the file holds: no huge allocation.
        lying[8 + 4 + 4 + 1..8 + 4 + 4 + 1 + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(decode(&lying).unwrap_err().contains("claims"));
        assert!(decode(b"NOTSESS1\0\0\0\0").is_err());
    }
}
