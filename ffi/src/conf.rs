//! What C describes: an upstream block and its server lines

use hab_core::spec::{Buckets, HealthSpec};
pub(crate) use hab_core::write::Room;
use hab_core::{PeerSpec, Policy, UpstreamSpec};

use crate::{bytes, finish, guard, hab_result, HAB_INVALID_ARGUMENT, HAB_NULL_PARAMETER, HAB_OK};

/// `hab_policy`: round robin.
pub const HAB_POLICY_ROUND_ROBIN: u32 = 1;
/// `hab_policy`: least connections.
pub const HAB_POLICY_LEAST_CONN: u32 = 2;
/// `hab_policy`: power of two choices.
pub const HAB_POLICY_P2C: u32 = 3;
/// `hab_policy`: peak-EWMA.
pub const HAB_POLICY_EWMA: u32 = 4;
/// `hab_policy`: weighted random.
pub const HAB_POLICY_RANDOM: u32 = 5;
/// `hab_policy`: key hashing.
pub const HAB_POLICY_HASH: u32 = 6;
/// `hab_hash_mode`: nginx's plain hash.
pub const HAB_HASH_PLAIN: u32 = 0;
/// `hab_hash_mode`: nginx's consistent hash (ketama).
pub const HAB_HASH_CONSISTENT: u32 = 1;
/// `hab_hash_mode`: Maglev.
pub const HAB_HASH_MAGLEV: u32 = 2;

/// `hab_peer_conf.flags`: backup server.
pub const HAB_PEER_BACKUP: u32 = 0x0001;
/// `hab_peer_conf.flags`: marked down.
pub const HAB_PEER_DOWN: u32 = 0x0002;
/// `hab_slot_peer.flags` only: a server added through the API.
pub const HAB_PEER_API: u32 = 0x0004;

/// One server line.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct hab_peer_conf {
    /// Identity bytes (may be NULL when `id_len` is 0).
    pub id: *const u8,
    /// Length of `id`.
    pub id_len: usize,
    /// The server directive's address (may be NULL when `server_len` is 0).
    pub server: *const u8,
    /// Length of `server`.
    pub server_len: usize,
    /// `weight=`, at least 1.
    pub weight: u32,
    /// `max_conns=`, 0 for unlimited.
    pub max_conns: u32,
    /// `max_fails=`, 0 for never.
    pub max_fails: u32,
    /// `HAB_PEER_*`.
    pub flags: u32,
    /// `fail_timeout=` in ms.
    pub fail_timeout_ms: u64,
    /// Position in the upstream in configuration order (the API's `id`);
    /// [`HAB_POSITION_NONE`] for a resolved server (numbered after the
    /// configured ones: configured count + slot).
    pub position: u32,
    /// Zero.
    pub reserved: u32,
    /// The session id the server is known by (`ha_route`; NULL or empty:
    /// the hex MD5 of its address, as nginx's `sticky`), at most
    /// `HAB_SID_MAX` bytes. Read only when the upstream binds sessions.
    pub sid: *const u8,
    /// Length of `sid`.
    pub sid_len: usize,
}

/// An upstream block.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct hab_upstream_conf {
    /// `hab_policy`.
    pub policy: u32,
    /// `hab_hash_mode`, for `HAB_POLICY_HASH`.
    pub hash_mode: u32,
    /// `HAB_POLICY_EWMA` decay, ms; 0 for the default.
    pub decay_ms: u32,
    /// `HAB_POLICY_HASH` bounded load, percent; 0 for none.
    pub balance_factor: u32,
    /// `npeers` peers, primaries first.
    pub peers: *const hab_peer_conf,
    /// Number of peers.
    pub npeers: usize,
    /// `HAB_HASH_MAGLEV` table size (a prime); 0 for the default.
    pub maglev_size: u32,
    /// Schedule entries weight changes may always reach (round robin,
    /// least_conn, hash); 0 for the default (262,144).
    pub schedule_room: u32,
    /// The health directives; NULL for none.
    pub health: *const crate::health::hab_health_conf,
    /// Peer slots: 0 for `npeers + api_max`; `npeers` for a static
    /// upstream; more for one whose servers are resolved at run time
    /// (`hab_zone_resolve`) or added through the API; at least
    /// `npeers + api_max`.
    pub capacity: usize,
    /// 1 when the upstream binds sessions (`ha_sticky`), else 0.
    pub sessions: u32,
    /// `ha_api_max`: servers the API may add at run time (0 to
    /// [`HAB_API_MAX`]), each in a slot of `capacity` beyond the
    /// configured ones.
    pub api_max: u32,
    /// `ha_latency_buckets`: the latency histograms' bounds, ms, strictly
    /// increasing, the first above 0; NULL for the default.
    pub buckets: *const u32,
    /// Number of `buckets`: 1 to [`HAB_BUCKETS_MAX`] (0 with NULL).
    pub nbuckets: usize,
}

/// Largest `hab_upstream_conf.api_max` (`ha_api_max`).
pub const HAB_API_MAX: u32 = hab_core::spec::MAX_API_SERVERS;

/// Most `hab_upstream_conf.buckets` (`ha_latency_buckets`).
pub const HAB_BUCKETS_MAX: u32 = hab_core::spec::MAX_BUCKETS as u32;

/// Longest session id (`hab_peer_conf.sid`): nginx's, an MD5 in hex.
pub const HAB_SID_MAX: usize = hab_core::spec::MAX_SID;

/// Schedule entries a zone keeps room for when `schedule_room` is 0.
pub const HAB_SCHEDULE_ROOM_DEFAULT: u32 = hab_core::spec::DEFAULT_SCHEDULE_ROOM;

/// Largest `schedule_room`.
pub const HAB_SCHEDULE_ROOM_MAX: u32 = hab_core::spec::MAX_SCHEDULE_ROOM;

/// `hab_peer_conf.position` of a resolved server.
pub const HAB_POSITION_NONE: u32 = u32::MAX;

/// Reads a C configuration into peer specs (config time: allocation is fine).
///
/// # Safety
///
/// `conf` must be a valid pointer whose `peers` array has `npeers` valid
/// elements, each `id` valid for `id_len` bytes, and `health` NULL or
/// readable, for the call's duration.
pub(crate) unsafe fn read_conf<'a>(
    conf: *const hab_upstream_conf,
) -> Result<(Policy, HealthSpec, Vec<PeerSpec<'a>>), hab_result> {
    // SAFETY: non-NULL checked by callers; valid per the function contract.
    let conf = unsafe { &*conf };
    let policy = Policy::from_parts(
        conf.policy,
        [
            conf.decay_ms,
            conf.hash_mode,
            conf.balance_factor,
            conf.maglev_size,
        ],
    )
    .map_err(hab_result::from)?;
    let health = if conf.health.is_null() {
        HealthSpec::default()
    } else {
        // SAFETY: non-NULL, readable (function contract).
        unsafe { &*conf.health }.spec()
    };
    if conf.npeers == 0 {
        return Ok((policy, health, Vec::new()));
    }
    if conf.peers.is_null() {
        return Err(HAB_NULL_PARAMETER);
    }
    // SAFETY: `peers` holds `npeers` elements (function contract).
    let peers = unsafe { core::slice::from_raw_parts(conf.peers, conf.npeers) };
    let mut out = Vec::with_capacity(peers.len());
    for p in peers {
        // SAFETY: `id` is valid for `id_len` bytes (function contract).
        let id = unsafe { bytes(p.id, p.id_len) }?;
        // SAFETY: `server` is valid for `server_len` bytes (contract).
        let server = unsafe { bytes(p.server, p.server_len) }?;
        // SAFETY: `sid` is NULL or valid for `sid_len` bytes (contract).
        let sid = unsafe { bytes(p.sid, p.sid_len) }?;
        if sid.len() > HAB_SID_MAX {
            return Err(HAB_INVALID_ARGUMENT);
        }
        if p.flags & !(HAB_PEER_BACKUP | HAB_PEER_DOWN) != 0 {
            return Err(HAB_INVALID_ARGUMENT);
        }
        out.push(PeerSpec {
            id,
            server,
            weight: p.weight,
            max_conns: p.max_conns,
            max_fails: p.max_fails,
            fail_timeout_ms: p.fail_timeout_ms,
            backup: p.flags & HAB_PEER_BACKUP != 0,
            down: p.flags & HAB_PEER_DOWN != 0,
            position: (p.position != HAB_POSITION_NONE).then_some(p.position),
            sid,
        });
    }
    Ok((policy, health, out))
}

/// Runs `f` on the upstream spec read from `conf` and its room (its
/// peers and `api_max` when `conf->capacity` is 0; `HAB_INVALID_ARGUMENT`
/// when below them, or `api_max` above [`HAB_API_MAX`]).
///
/// # Safety
///
/// As [`read_conf`].
pub(crate) unsafe fn with_spec(
    conf: *const hab_upstream_conf,
    f: impl FnOnce(&UpstreamSpec<'_>, Room) -> hab_result,
) -> hab_result {
    if conf.is_null() {
        return HAB_NULL_PARAMETER;
    }
    // SAFETY: non-NULL; readable (forwarded contract).
    let (npeers, capacity, schedule_room, sessions, api_max, buckets, nbuckets) = unsafe {
        (
            (*conf).npeers,
            (*conf).capacity,
            (*conf).schedule_room,
            (*conf).sessions,
            (*conf).api_max,
            (*conf).buckets,
            (*conf).nbuckets,
        )
    };
    if sessions > 1 || api_max > HAB_API_MAX {
        return HAB_INVALID_ARGUMENT;
    }
    let buckets = match (buckets.is_null(), nbuckets) {
        (true, 0) => Buckets::default(),
        (false, n) if n <= HAB_BUCKETS_MAX as usize => {
            // SAFETY: `nbuckets` readable u32s at `buckets` (caller
            // contract), at most HAB_BUCKETS_MAX of them.
            let bounds = unsafe { core::slice::from_raw_parts(buckets, n) };
            match Buckets::new(bounds) {
                Ok(b) => b,
                Err(_) => return HAB_INVALID_ARGUMENT,
            }
        }
        _ => return HAB_INVALID_ARGUMENT,
    };
    let least = npeers.saturating_add(api_max as usize);
    let capacity = match capacity {
        0 => least,
        c if c < least => return HAB_INVALID_ARGUMENT,
        c => c,
    };
    // SAFETY: forwarded contract.
    match unsafe { read_conf(conf) } {
        Ok((policy, health, peers)) => f(
            &UpstreamSpec {
                health,
                policy,
                peers: &peers,
                schedule_room,
                sessions: sessions == 1,
            },
            Room {
                capacity,
                api_max,
                buckets,
            },
        ),
        Err(rc) => rc,
    }
}

/// Why a zone of `capacity` slots for `spec` is too large, beyond what
/// the spec itself says.
fn capacity_reason(spec: &UpstreamSpec<'_>, capacity: usize) -> Option<String> {
    use hab_core::layout::{SLOT_ID_MAX, SLOT_SERVER_MAX};
    if capacity > hab_core::spec::MAX_PEERS {
        return Some(format!(
            "{capacity} peer slots, more than the limit of {}",
            hab_core::spec::MAX_PEERS
        ));
    }
    if capacity > spec.peers.len() {
        if let Some(p) = spec
            .peers
            .iter()
            .find(|p| p.id.len() > SLOT_ID_MAX || p.server.len() > SLOT_SERVER_MAX)
        {
            return Some(format!(
                "a server of {} bytes (identity {} bytes), more than a resolvable \
                 upstream's slot holds ({SLOT_SERVER_MAX}, identity {SLOT_ID_MAX})",
                p.server.len(),
                p.id.len()
            ));
        }
    }
    None
}

/// Bytes of shared memory a zone for `conf` needs.
///
/// # Safety
///
/// `conf` as in the header; `out_size` writable.
#[no_mangle]
pub unsafe extern "C" fn hab_zone_size(
    conf: *const hab_upstream_conf,
    out_size: *mut usize,
) -> hab_result {
    guard(|| {
        if out_size.is_null() {
            return HAB_NULL_PARAMETER;
        }
        // SAFETY: caller contract.
        unsafe {
            with_spec(conf, |spec, room| {
                finish(
                    hab_core::write::zone_size_with(spec, room.capacity),
                    out_size,
                )
            })
        }
    })
}

/// Why `conf` is too large, with its figures and the limit: a buffer the
/// caller frees with `hab_buf_free`, or NULL when it is not too large.
///
/// # Safety
///
/// `conf` as in the header; `out_reason` writable.
#[no_mangle]
pub unsafe extern "C" fn hab_conf_explain(
    conf: *const hab_upstream_conf,
    out_reason: *mut *mut crate::buf::hab_buf,
) -> hab_result {
    guard(|| {
        if out_reason.is_null() {
            return HAB_NULL_PARAMETER;
        }
        // SAFETY: caller contract.
        unsafe {
            with_spec(conf, |spec, room| {
                let reason = capacity_reason(spec, room.capacity)
                    .or_else(|| hab_core::write::generation::too_large_reason(spec))
                    .map_or(core::ptr::null_mut(), |r| {
                        crate::buf::buf(r.into_bytes().into())
                    });
                out_reason.write(reason);
                HAB_OK
            })
        }
    })
}

/// Digest of `conf`: equal digests, adoptable zone.
///
/// # Safety
///
/// `conf` as in the header; `out_digest` writable.
#[no_mangle]
pub unsafe extern "C" fn hab_conf_digest(
    conf: *const hab_upstream_conf,
    out_digest: *mut u64,
) -> hab_result {
    guard(|| {
        if out_digest.is_null() {
            return HAB_NULL_PARAMETER;
        }
        // SAFETY: caller contract.
        unsafe {
            with_spec(conf, |spec, room| {
                spec.validate()
                    .map(|()| spec.digest_with_room(room.capacity, room.api_max, &room.buckets))
                    .map_or_else(hab_result::from, |d| {
                        out_digest.write(d);
                        HAB_OK
                    })
            })
        }
    })
}

/// What the exports' tests describe upstreams with.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

    /// A server with nginx's defaults (weight 1, max_fails 1, 10 s), its
    /// identity as its `server` string, no position, no session id.
    pub(crate) fn peer(id: &'static [u8]) -> hab_peer_conf {
        hab_peer_conf {
            id: id.as_ptr(),
            id_len: id.len(),
            server: id.as_ptr(),
            server_len: id.len(),
            weight: 1,
            max_conns: 0,
            max_fails: 1,
            flags: 0,
            fail_timeout_ms: 10_000,
            position: HAB_POSITION_NONE,
            reserved: 0,
            sid: core::ptr::null(),
            sid_len: 0,
        }
    }

    /// A round robin upstream of `peers`, everything else off.
    pub(crate) fn upstream(peers: &[hab_peer_conf]) -> hab_upstream_conf {
        hab_upstream_conf {
            policy: HAB_POLICY_ROUND_ROBIN,
            hash_mode: 0,
            decay_ms: 0,
            balance_factor: 0,
            peers: peers.as_ptr(),
            npeers: peers.len(),
            maglev_size: 0,
            schedule_room: 0,
            health: core::ptr::null(),
            capacity: 0,
            sessions: 0,
            api_max: 0,
            buckets: core::ptr::null(),
            nbuckets: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{peer, upstream};
    use super::*;
    use crate::{hab_zone, hab_zone_attach, hab_zone_init, zone_of};
    use hab_core::testing::Region;

    fn size(c: &hab_upstream_conf) -> Result<usize, hab_result> {
        let mut n = 0;
        // SAFETY: `c` and its peers live through the call.
        match unsafe { hab_zone_size(c, &mut n) } {
            HAB_OK => Ok(n),
            rc => Err(rc),
        }
    }

    fn digest(c: &hab_upstream_conf) -> u64 {
        try_digest(c).unwrap()
    }

    fn try_digest(c: &hab_upstream_conf) -> Result<u64, hab_result> {
        let mut d = 0;
        // SAFETY: as above.
        match unsafe { hab_conf_digest(c, &mut d) } {
            HAB_OK => Ok(d),
            rc => Err(rc),
        }
    }

    #[test]
    fn buckets_are_checked_and_part_of_the_digest() {
        let peers = [peer(b"a")];
        let with = |b: &[u32]| hab_upstream_conf {
            buckets: if b.is_empty() {
                core::ptr::null()
            } else {
                b.as_ptr()
            },
            nbuckets: b.len(),
            ..upstream(&peers)
        };
        let default = hab_core::spec::DEFAULT_BUCKETS_MS;
        assert_eq!(digest(&with(&default)), digest(&upstream(&peers)));
        assert_ne!(digest(&with(&[1, 2])), digest(&upstream(&peers)));
        assert_eq!(size(&with(&[1, 2])), size(&upstream(&peers)));
        for bad in [&[2, 1][..], &[0, 1], &[5, 5], &[1; 16]] {
            assert_eq!(try_digest(&with(bad)), Err(HAB_INVALID_ARGUMENT), "{bad:?}");
        }
        let no_pointer = hab_upstream_conf {
            nbuckets: 2,
            ..upstream(&peers)
        };
        assert_eq!(try_digest(&no_pointer), Err(HAB_INVALID_ARGUMENT));
        let b = [3, 30, 300];
        let c = with(&b);
        let n = size(&c).unwrap();
        let region = Region::new(n);
        let mut z: *mut hab_zone = core::ptr::null_mut();
        // SAFETY: the region is ours, `n` bytes, 64-byte aligned.
        let rc = unsafe { hab_zone_init(&c, region.as_ptr().cast(), n, &mut z) };
        assert_eq!(rc, HAB_OK);
        // SAFETY: a zone handle just made; the region outlives its use.
        assert_eq!(unsafe { zone_of(z) }.buckets().bounds(), &b);
        let mut again: *mut hab_zone = core::ptr::null_mut();
        let other = with(&[3, 30]);
        // SAFETY: as above.
        let rc = unsafe { hab_zone_attach(&other, region.as_ptr().cast(), n, &mut again) };
        assert_ne!(rc, HAB_OK, "other bounds: another zone");
        // SAFETY: as above.
        let rc = unsafe { hab_zone_attach(&c, region.as_ptr().cast(), n, &mut again) };
        assert_eq!(rc, HAB_OK);
    }

    #[test]
    fn api_max_takes_slots_and_is_recorded_in_the_zone() {
        let peers = [peer(b"a"), peer(b"b")];
        let api = |capacity, api_max| hab_upstream_conf {
            capacity,
            api_max,
            ..upstream(&peers)
        };
        // Capacity 0: the peers and the API's room.
        assert_eq!(size(&api(0, 3)), size(&api(5, 0)));
        assert_eq!(size(&api(0, 3)), size(&api(5, 3)));
        assert_eq!(size(&api(4, 3)), Err(HAB_INVALID_ARGUMENT));
        assert_eq!(size(&api(0, HAB_API_MAX + 1)), Err(HAB_INVALID_ARGUMENT));
        // Part of the digest: a change rebuilds the zone.
        assert_ne!(digest(&api(5, 3)), digest(&api(5, 0)));
        assert_eq!(digest(&api(0, 0)), digest(&upstream(&peers)));
        let c = api(0, 3);
        let n = size(&c).unwrap();
        let region = Region::new(n);
        let mut z: *mut hab_zone = core::ptr::null_mut();
        // SAFETY: the region is ours, `n` bytes, 64-byte aligned.
        let rc = unsafe { hab_zone_init(&c, region.as_ptr().cast(), n, &mut z) };
        assert_eq!(rc, HAB_OK);
        // SAFETY: a zone handle just made; the region outlives its use.
        let zone = unsafe { zone_of(z) };
        assert_eq!((zone.capacity(), zone.api_servers()), (5, (0, 3)));
        // Attached only with the same room.
        let mut again: *mut hab_zone = core::ptr::null_mut();
        // SAFETY: as above.
        let rc = unsafe { hab_zone_attach(&api(5, 2), region.as_ptr().cast(), n, &mut again) };
        assert_eq!(rc, crate::HAB_BAD_LAYOUT);
        // SAFETY: as above.
        let rc = unsafe { hab_zone_attach(&api(5, 3), region.as_ptr().cast(), n, &mut again) };
        assert_eq!(rc, HAB_OK);
    }
}
