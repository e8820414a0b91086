//! A zone: one upstream's state and generations in shared memory

use core::ffi::c_void;
use core::sync::atomic::Ordering::Relaxed;

use hab_core::layout::Zone;
use hab_core::Error;

use crate::conf::{hab_upstream_conf, with_spec, Room};
use crate::{
    alive_fn, finish, guard, guard_or, hab_alive_fn, hab_result, hab_zone, zone_of, HAB_NO_SLOT,
};
use crate::{HAB_BAD_LAYOUT, HAB_INVALID_ARGUMENT, HAB_NULL_PARAMETER, HAB_OK};

/// Runs `open` (`Zone::init` or `Zone::attach` on the region at `mem`) on
/// the spec read from `conf`, writing the handle on success.
///
/// # Safety
///
/// As the two exports below.
unsafe fn open_zone(
    conf: *const hab_upstream_conf,
    mem: *mut c_void,
    out_zone: *mut *mut hab_zone,
    open: impl FnOnce(&hab_core::UpstreamSpec<'_>, Room) -> Result<Zone<'static>, Error>,
) -> hab_result {
    guard(|| {
        if mem.is_null() || out_zone.is_null() {
            return HAB_NULL_PARAMETER;
        }
        // SAFETY: caller contract (conf valid for the call).
        unsafe {
            with_spec(conf, |spec, room| {
                finish(open(spec, room).map(|z| z.as_ptr().cast()), out_zone)
            })
        }
    })
}

/// Builds a fresh zone in `mem`.
///
/// # Safety
///
/// `conf` as in the header; `mem` valid for reads and writes of `len`
/// bytes, not used by anyone else during the call and mapped as long as
/// the handle is used; `out_zone` writable.
#[no_mangle]
pub unsafe extern "C" fn hab_zone_init(
    conf: *const hab_upstream_conf,
    mem: *mut c_void,
    len: usize,
    out_zone: *mut *mut hab_zone,
) -> hab_result {
    // SAFETY: caller contract: `mem` is ours for `len` bytes; the handle is
    // used only while the mapping lives (what `'static` stands for here).
    unsafe {
        open_zone(conf, mem, out_zone, |spec, room| {
            Zone::init_room(spec, &room, mem.cast(), len)
        })
    }
}

/// Adopts the zone in `mem` if built for an equal `conf`.
///
/// # Safety
///
/// `conf` as in the header; `mem` valid for reads and writes of `len`
/// bytes while the handle is used; `out_zone` writable.
#[no_mangle]
pub unsafe extern "C" fn hab_zone_attach(
    conf: *const hab_upstream_conf,
    mem: *mut c_void,
    len: usize,
    out_zone: *mut *mut hab_zone,
) -> hab_result {
    // SAFETY: caller contract, as for `hab_zone_init`.
    unsafe {
        open_zone(conf, mem, out_zone, |spec, room| {
            Zone::attach_room(spec, &room, mem.cast(), len)
        })
    }
}

/// Carries the state of matching peers from `old` into the fresh `z`;
/// servers new at `now_ms` slow-start.
///
/// # Safety
///
/// `z` and `old` valid zone handles (`old` may be another upstream
/// configuration's, still mapped); `out_carried` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn hab_zone_carry(
    z: *mut hab_zone,
    old: *const hab_zone,
    now_ms: u64,
    out_carried: *mut u32,
    out_dropped: *mut *mut crate::buf::hab_buf,
) -> hab_result {
    guard(|| {
        if z.is_null() || old.is_null() {
            return HAB_NULL_PARAMETER;
        }
        // SAFETY: valid handles (caller contract).
        let (z, old) = unsafe { (zone_of(z), zone_of(old)) };
        let r = old.root();
        if r.magic != hab_core::layout::MAGIC || r.version != hab_core::layout::LAYOUT_VERSION {
            return HAB_BAD_LAYOUT;
        }
        let c = z.carry_from(old, now_ms);
        if !out_carried.is_null() {
            // SAFETY: non-NULL, writable (caller contract).
            unsafe { out_carried.write(c.carried as u32) };
        }
        if !out_dropped.is_null() {
            // The `server` strings of the old zone's dropped slots.
            let names: Vec<String> = c
                .api_dropped
                .iter()
                .map(|&j| String::from_utf8_lossy(old.server(j)).into_owned())
                .collect();
            let b = if names.is_empty() {
                core::ptr::null_mut()
            } else {
                crate::buf::buf(names.join(", ").into_bytes().into())
            };
            // SAFETY: non-NULL, writable (caller contract).
            unsafe { out_dropped.write(b) };
        }
        HAB_OK
    })
}

/// Number of peers in the zone (0 for NULL).
///
/// # Safety
///
/// `z` is NULL or a valid zone handle.
#[no_mangle]
pub unsafe extern "C" fn hab_zone_peers(z: *const hab_zone) -> u32 {
    guard_or(0, || {
        if z.is_null() {
            return 0;
        }
        // SAFETY: valid handle (caller contract).
        unsafe { zone_of(z) }.peers() as u32
    })
}

/// Number of the generation serving (0 for NULL).
///
/// # Safety
///
/// `z` is NULL or a valid zone handle.
#[no_mangle]
pub unsafe extern "C" fn hab_zone_generation(z: *const hab_zone) -> u64 {
    guard_or(0, || {
        if z.is_null() {
            return 0;
        }
        // SAFETY: valid handle (caller contract).
        unsafe { zone_of(z) }.generation()
    })
}

/// In-flight count of one peer.
///
/// # Safety
///
/// `z` a valid zone handle; `out_count` writable.
#[no_mangle]
pub unsafe extern "C" fn hab_zone_in_flight(
    z: *const hab_zone,
    peer: u32,
    out_count: *mut u32,
) -> hab_result {
    guard(|| {
        if z.is_null() || out_count.is_null() {
            return HAB_NULL_PARAMETER;
        }
        // SAFETY: valid handle (caller contract).
        let z = unsafe { zone_of(z) };
        let r = z
            .states()
            .get(peer as usize)
            .map(|s| s.in_flight.load(Relaxed))
            .ok_or(Error::InvalidArgument);
        finish(r, out_count)
    })
}

/// Claims a ledger slot for `owner`, reconciling dead owners' slots.
///
/// # Safety
///
/// `z` a valid zone handle; `alive` a function safe to call with `data`;
/// `out_slot` writable.
#[no_mangle]
pub unsafe extern "C" fn hab_zone_claim_slot(
    z: *mut hab_zone,
    owner: u64,
    alive: hab_alive_fn,
    data: *mut c_void,
    out_slot: *mut u32,
) -> hab_result {
    guard(|| {
        let Some(alive) = alive else {
            return HAB_NULL_PARAMETER;
        };
        if z.is_null() || out_slot.is_null() {
            return HAB_NULL_PARAMETER;
        }
        if owner == 0 || owner >= u64::MAX - 1 {
            return HAB_INVALID_ARGUMENT;
        }
        // SAFETY: valid handle (caller contract).
        let z = unsafe { zone_of(z) };
        // SAFETY: the caller vouches for `alive` with `data`.
        let slot = z.claim_slot(owner, unsafe { alive_fn(alive, data) });
        finish(slot.ok_or(Error::Busy), out_slot)
    })
}

/// Reconciles the ledger slots of dead workers without claiming one (a
/// worker whose queue head belongs to a dead worker nginx will not
/// replace). `me`: the caller's pid, which names it while it reconciles.
///
/// # Safety
///
/// `z` a valid zone handle; `alive` callable with `data`.
#[no_mangle]
pub unsafe extern "C" fn hab_zone_reap(
    z: *mut hab_zone,
    me: u64,
    alive: hab_alive_fn,
    data: *mut c_void,
    out_reaped: *mut u32,
) -> hab_result {
    guard(|| {
        let Some(alive) = alive else {
            return HAB_NULL_PARAMETER;
        };
        if z.is_null() || out_reaped.is_null() {
            return HAB_NULL_PARAMETER;
        }
        if me == 0 || me >= u64::MAX - 1 {
            return HAB_INVALID_ARGUMENT;
        }
        // SAFETY: valid handle (caller contract).
        let z = unsafe { zone_of(z) };
        // SAFETY: the caller vouches for `alive` with `data`.
        let n = z.reap(me, unsafe { alive_fn(alive, data) });
        finish(Ok(n), out_reaped)
    })
}

/// Gives back a ledger slot.
///
/// # Safety
///
/// `z` a valid zone handle.
#[no_mangle]
pub unsafe extern "C" fn hab_zone_release_slot(
    z: *mut hab_zone,
    slot: u32,
    owner: u64,
) -> hab_result {
    guard(|| {
        if z.is_null() {
            return HAB_NULL_PARAMETER;
        }
        // SAFETY: valid handle (caller contract).
        let z = unsafe { zone_of(z) };
        if slot as usize >= hab_core::layout::ledger::LEDGER_SLOTS {
            return HAB_INVALID_ARGUMENT;
        }
        z.release_slot(slot, owner);
        HAB_OK
    })
}

/// `hab_zone_resolve` out_slots: the peer is in no slot.
pub const HAB_NO_PEER: u32 = u32::MAX;
/// `hab_slot_info.status`: no identity, named by no generation.
pub const HAB_SLOT_FREE: u32 = hab_core::write::membership::FREE;
/// `hab_slot_info.status`: a member of the serving membership.
pub const HAB_SLOT_LIVE: u32 = hab_core::write::membership::LIVE;
/// `hab_slot_info.status`: left the list; its requests finish.
pub const HAB_SLOT_RETIRING: u32 = hab_core::write::membership::RETIRING;

/// Where a generation's membership came from.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct hab_source {
    /// The caller's list id (nginx: the configuration's cycle).
    pub list: u64,
    /// The list's change counter (nginx: `*peers->config`).
    pub config: u64,
}

impl From<[u64; 2]> for hab_source {
    fn from(s: [u64; 2]) -> Self {
        hab_source {
            list: s[0],
            config: s[1],
        }
    }
}

/// What `hab_zone_resolve` did.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct hab_resolve_report {
    /// The generation serving after the call.
    pub generation: u64,
    /// Its source.
    pub source: hab_source,
    /// 1: this call published it.
    pub built: u32,
    /// Why nothing was built, a `hab_result`: `HAB_OK` (nothing to do),
    /// `HAB_BUSY`, `HAB_NO_SPACE`, `HAB_TOO_LARGE`.
    pub refused: u32,
    /// Slots kept.
    pub kept: u32,
    /// RETIRING slots whose identity came back.
    pub revived: u32,
    /// New identities given a slot.
    pub added: u32,
    /// Slots turned RETIRING (draining).
    pub retired: u32,
    /// RETIRING slots reused.
    pub reused: u32,
    /// New identities left for a later call, for want of a free slot
    /// (the servers leaving free theirs once nothing refers to them).
    pub deferred: u32,
}

/// Status and epoch of a peer slot.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct hab_slot_info {
    /// `HAB_SLOT_*`.
    pub status: u32,
    /// Bumped each time the slot is given to another server.
    pub epoch: u32,
}

/// Makes `list` the zone's membership as copied at `config` of list
/// `list_id` (see the header), then writes the slot of each of its peers
/// in the generation serving after the call into `out_slots`, and the
/// report into `out`.
///
/// # Safety
///
/// `z` a valid zone handle; `list` as a `hab_upstream_conf` in the
/// header; `alive` safe to call with `data`; `out_slots` writable for
/// `list->npeers` elements (NULL only when that is 0); `out` writable.
/// `slot`: the caller's ledger slot ([`HAB_NO_SLOT`] for none), whose row
/// holds the pins taken while reading the serving generation.
#[no_mangle]
pub unsafe extern "C" fn hab_zone_resolve(
    z: *mut hab_zone,
    list: *const hab_upstream_conf,
    list_id: u64,
    config: u64,
    now_ms: u64,
    owner: u64,
    slot: u32,
    alive: hab_alive_fn,
    data: *mut c_void,
    out_slots: *mut u32,
    out: *mut hab_resolve_report,
) -> hab_result {
    guard(|| {
        let Some(alive) = alive else {
            return HAB_NULL_PARAMETER;
        };
        if z.is_null() || list.is_null() || out.is_null() {
            return HAB_NULL_PARAMETER;
        }
        // SAFETY: non-NULL, readable (caller contract).
        let npeers = unsafe { (*list).npeers };
        if npeers != 0 && out_slots.is_null() {
            return HAB_NULL_PARAMETER;
        }
        // SAFETY: valid handle (caller contract).
        let z = unsafe { zone_of(z) };
        // SAFETY: `list` as in the header (caller contract).
        let (policy, _, peers) = match unsafe { crate::conf::read_conf(list) } {
            Ok(l) => l,
            Err(rc) => return rc,
        };
        if owner == 0 {
            return HAB_INVALID_ARGUMENT;
        }
        // Health and sizes are the zone's: the list's are ignored.
        let spec = hab_core::UpstreamSpec {
            policy,
            peers: &peers,
            health: Default::default(),
            schedule_room: z.schedule_room() as u32,
            sessions: false,
        };
        let ledger = (slot != HAB_NO_SLOT).then_some(slot);
        // SAFETY: the caller vouches for `alive` with `data`.
        let alive = unsafe { alive_fn(alive, data) };
        let r = match z.resolve(&spec, [list_id, config], ledger, owner, alive, now_ms) {
            Ok(r) => r,
            Err(e) => return e.into(),
        };
        let mut report = hab_resolve_report::default();
        if let Some(a) = r.applied {
            report.built = 1;
            report.kept = a.kept;
            report.revived = a.revived;
            report.added = a.added;
            report.retired = a.retired;
            report.reused = a.reused;
            report.deferred = a.deferred;
        }
        report.refused = r.refused.map_or(HAB_OK, hab_result::from) as u32;
        let found = r.lookup;
        report.generation = found.seq;
        report.source = found.source.into();
        if npeers != 0 {
            // SAFETY: writable for `npeers` elements (caller contract).
            let slots = unsafe { core::slice::from_raw_parts_mut(out_slots, npeers) };
            for (o, s) in slots.iter_mut().zip(&found.slots) {
                *o = s.unwrap_or(HAB_NO_PEER);
            }
        }
        finish(Ok(report), out)
    })
}

/// The source of the generation serving new requests, read under a pin in
/// ledger slot `slot`'s row ([`HAB_NO_SLOT`] for none).
///
/// # Safety
///
/// `z` a valid zone handle; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn hab_zone_source(
    z: *const hab_zone,
    slot: u32,
    out: *mut hab_source,
) -> hab_result {
    guard(|| {
        if z.is_null() || out.is_null() {
            return HAB_NULL_PARAMETER;
        }
        // SAFETY: valid handle (caller contract).
        let z = unsafe { zone_of(z) };
        let ledger = (slot != HAB_NO_SLOT).then_some(slot);
        finish(z.source(ledger).map(hab_source::from), out)
    })
}

/// Status and epoch of peer slot `slot`.
///
/// # Safety
///
/// `z` a valid zone handle; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn hab_zone_slot(
    z: *const hab_zone,
    slot: u32,
    out: *mut hab_slot_info,
) -> hab_result {
    guard(|| {
        if z.is_null() || out.is_null() {
            return HAB_NULL_PARAMETER;
        }
        // SAFETY: valid handle (caller contract).
        let z = unsafe { zone_of(z) };
        let i = slot as usize;
        // The epoch first: a reader comparing it later sees any reuse
        // that the status it reads may not show yet.
        let r = match (z.slot_epoch(i), z.slot_status(i)) {
            (Some(epoch), Some(status)) => Ok(hab_slot_info { status, epoch }),
            _ => Err(Error::InvalidArgument),
        };
        finish(r, out)
    })
}

/// Longest `hab_slot_peer` text: the `server` string and the address
/// ([`hab_zone_slot_peer`]'s `buf`).
pub const HAB_SLOT_TEXT_MAX: u32 =
    (hab_core::layout::SLOT_ID_MAX + hab_core::layout::SLOT_SERVER_MAX) as u32;

/// What a peer slot holds, for a worker that has no peer of its own for it
/// (a server added through the API): [`hab_zone_slot_peer`].
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct hab_slot_peer {
    /// `HAB_SLOT_*`.
    pub status: u32,
    /// As [`hab_slot_info::epoch`]: the text belongs to this epoch.
    pub epoch: u32,
    /// `HAB_PEER_BACKUP` | `HAB_PEER_DOWN`, as configured (or added), and
    /// `HAB_PEER_API` for a server added through the API.
    pub flags: u32,
    /// `weight=` as configured (or added), not the API's override.
    pub weight: u32,
    /// `max_conns=`, 0 for unlimited.
    pub max_conns: u32,
    /// `max_fails=`, 0 for never.
    pub max_fails: u32,
    /// `fail_timeout=`, ms.
    pub fail_timeout_ms: u64,
    /// Bytes of the `server` string, first in the caller's buffer.
    pub server_len: usize,
    /// Bytes of the address (the identity's last part), after it.
    pub address_len: usize,
}

/// Copies what slot `slot` holds into `out`, its `server` string and
/// address into `buf` (`cap` bytes; [`HAB_SLOT_TEXT_MAX`] always do):
/// `HAB_BUSY` when the slot was given to another server during the copy,
/// `HAB_NO_SPACE` when `cap` is too small, `HAB_INVALID_ARGUMENT` past the
/// end.  The text of a FREE slot is empty.
///
/// # Safety
///
/// `z` a valid zone handle; `buf` writable for `cap` bytes; `out`
/// writable.
#[no_mangle]
pub unsafe extern "C" fn hab_zone_slot_peer(
    z: *const hab_zone,
    slot: u32,
    buf: *mut u8,
    cap: usize,
    out: *mut hab_slot_peer,
) -> hab_result {
    guard(|| {
        if z.is_null() || out.is_null() || (buf.is_null() && cap != 0) {
            return HAB_NULL_PARAMETER;
        }
        // SAFETY: valid handle (caller contract).
        let z = unsafe { zone_of(z) };
        let i = slot as usize;
        // The epoch before and after the copy, as a sequence lock: the
        // lease holder rewrites a slot's bytes only before it bumps the
        // epoch (core/src/write/membership.rs, fill_slot).
        let (Some(epoch), Some(status)) = (z.slot_epoch(i), z.slot_status(i)) else {
            return Error::InvalidArgument.into();
        };
        let (s, c) = (&z.states()[i], &z.colds()[i]);
        let (server, id) = if status == HAB_SLOT_FREE {
            (&[][..], &[][..])
        } else {
            (z.server(i), z.identity(i))
        };
        let address = id.rsplit(|&b| b == 0).next().unwrap_or(server);
        let address = if address.is_empty() { server } else { address };
        if server.len() + address.len() > cap {
            return Error::NoSpace.into();
        }
        // SAFETY: `buf` writable for `cap` bytes (caller contract),
        // checked above to hold both.
        unsafe {
            core::ptr::copy_nonoverlapping(server.as_ptr(), buf, server.len());
            core::ptr::copy_nonoverlapping(address.as_ptr(), buf.add(server.len()), address.len());
        }
        let flags = s.flags.load(Relaxed);
        let peer = hab_slot_peer {
            status,
            epoch,
            flags: (if flags & hab_core::layout::PeerState::BACKUP != 0 {
                crate::conf::HAB_PEER_BACKUP
            } else {
                0
            }) | (if flags & hab_core::layout::PeerState::DOWN != 0 {
                crate::conf::HAB_PEER_DOWN
            } else {
                0
            }) | (if status != HAB_SLOT_FREE && z.added_through_api(i) {
                crate::conf::HAB_PEER_API
            } else {
                0
            }),
            weight: c.conf_weight.load(Relaxed),
            max_conns: s.max_conns(),
            max_fails: s.max_fails(),
            fail_timeout_ms: s.fail_timeout_ms(),
            server_len: server.len(),
            address_len: address.len(),
        };
        // Acquire: the copy above is ordered before this read.
        core::sync::atomic::fence(core::sync::atomic::Ordering::Acquire);
        if z.slot_epoch(i) != Some(epoch) {
            return Error::Busy.into();
        }
        finish(Ok(peer), out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conf::fixtures::{peer, upstream};
    use crate::conf::{hab_peer_conf, HAB_POLICY_LEAST_CONN};
    use crate::{hab_zone_init, hab_zone_size, HAB_NO_SPACE, HAB_TOO_LARGE};
    use hab_core::testing::Region;

    unsafe extern "C" fn alive(_: u64, _: *mut c_void) -> core::ffi::c_int {
        1
    }

    fn conf(peers: &[hab_peer_conf], capacity: usize) -> hab_upstream_conf {
        hab_upstream_conf {
            capacity,
            ..upstream(peers)
        }
    }

    /// A zone for `c` in its own region.
    fn zone_for(c: &hab_upstream_conf) -> (Region, *mut hab_zone) {
        let mut size = 0;
        // SAFETY: `c` and its peers live through the call.
        assert_eq!(unsafe { hab_zone_size(c, &mut size) }, HAB_OK);
        let region = Region::new(size);
        let mut z = core::ptr::null_mut();
        // SAFETY: the region is ours, `size` bytes, 64-byte aligned.
        let rc = unsafe { hab_zone_init(c, region.as_ptr().cast(), region.len(), &mut z) };
        assert_eq!(rc, HAB_OK);
        (region, z)
    }

    fn resolve(
        z: *mut hab_zone,
        list: &hab_upstream_conf,
        src: [u64; 2],
    ) -> (hab_result, Vec<u32>, hab_resolve_report) {
        let mut slots = vec![0u32; list.npeers];
        let mut report = hab_resolve_report::default();
        // SAFETY: a valid zone; `list`'s peers live through the call;
        // `slots` has `npeers` elements.
        let rc = unsafe {
            hab_zone_resolve(
                z,
                list,
                src[0],
                src[1],
                0,
                7,
                HAB_NO_SLOT,
                Some(alive),
                core::ptr::null_mut(),
                slots.as_mut_ptr(),
                &mut report,
            )
        };
        (rc, slots, report)
    }

    #[test]
    fn a_static_zone_keeps_its_servers_and_refuses_new_ones() {
        let peers = [peer(b"a"), peer(b"b")];
        let c = conf(&peers, 0);
        let (_region, z) = zone_for(&c);
        let (rc, slots, r) = resolve(z, &conf(&[peer(b"b"), peer(b"a")], 0), [1, 1]);
        assert_eq!(rc, HAB_OK);
        assert_eq!((r.built, r.kept, slots.as_slice()), (1, 2, &[1, 0][..]));
        let (rc, slots, r) = resolve(z, &conf(&[peer(b"a"), peer(b"c")], 0), [1, 2]);
        assert_eq!(rc, HAB_OK);
        assert_eq!((r.built, r.refused), (0, HAB_NO_SPACE as u32));
        assert_eq!(slots, [0, HAB_NO_PEER]);
        assert_eq!(r.source, hab_source { list: 1, config: 1 });
        // Another policy's list, a capacity below the peers.
        let mut lc = conf(&peers, 0);
        lc.policy = HAB_POLICY_LEAST_CONN;
        assert_eq!(resolve(z, &lc, [1, 3]).0, HAB_INVALID_ARGUMENT);
        let mut size = 0;
        // SAFETY: as above.
        let rc = unsafe { hab_zone_size(&conf(&peers, 1), &mut size) };
        assert_eq!(rc, HAB_INVALID_ARGUMENT);
    }

    #[test]
    fn slot_peer_copies_server_and_address() {
        static ID: &[u8] = b"up\0s.example:80\x00127.0.0.1:8080";
        let mut p = peer(ID);
        p.server = b"s.example:80".as_ptr();
        p.server_len = 12;
        p.weight = 3;
        p.flags = crate::conf::HAB_PEER_BACKUP;
        let peers = [peer(b"up\x00a\x00127.0.0.1:1"), p];
        let c = conf(&peers, 3);
        let (_region, z) = zone_for(&c);
        let mut buf = [0u8; HAB_SLOT_TEXT_MAX as usize];
        let mut out = hab_slot_peer::default();
        // SAFETY: a valid zone; `buf` and `out` writable.
        let rc = unsafe { hab_zone_slot_peer(z, 1, buf.as_mut_ptr(), buf.len(), &mut out) };
        assert_eq!(rc, HAB_OK);
        assert_eq!(
            (out.status, out.weight, out.max_fails),
            (HAB_SLOT_LIVE, 3, 1)
        );
        assert_eq!(out.flags, crate::conf::HAB_PEER_BACKUP);
        assert_eq!(out.fail_timeout_ms, 10_000);
        let text = &buf[..out.server_len + out.address_len];
        assert_eq!(text, b"s.example:80127.0.0.1:8080");
        assert_eq!(out.server_len, 12);
        // Too small a buffer, a FREE slot, past the end.
        // SAFETY: as above.
        let rc = unsafe { hab_zone_slot_peer(z, 1, buf.as_mut_ptr(), 4, &mut out) };
        assert_eq!(rc, HAB_NO_SPACE);
        // SAFETY: as above.
        let rc = unsafe { hab_zone_slot_peer(z, 2, buf.as_mut_ptr(), buf.len(), &mut out) };
        assert_eq!((rc, out.status, out.server_len), (HAB_OK, HAB_SLOT_FREE, 0));
        // SAFETY: as above.
        let rc = unsafe { hab_zone_slot_peer(z, 3, buf.as_mut_ptr(), buf.len(), &mut out) };
        assert_eq!(rc, HAB_INVALID_ARGUMENT);
    }

    #[test]
    fn a_dynamic_zone_resolves_into_slots_and_refusals_change_nothing() {
        let c = conf(&[], 2);
        let (_region, z) = zone_for(&c);
        let mut info = hab_slot_info::default();
        // SAFETY: a valid zone; `info` writable.
        assert_eq!(unsafe { hab_zone_slot(z, 1, &mut info) }, HAB_OK);
        assert_eq!(info.status, HAB_SLOT_FREE);
        // An empty list into an empty zone: a build, nothing to match.
        let (rc, slots, r) = resolve(z, &conf(&[], 0), [1, 1]);
        assert_eq!((rc, r.built, slots.len()), (HAB_OK, 1, 0));
        let (rc, slots, r) = resolve(z, &conf(&[peer(b"x"), peer(b"x")], 0), [1, 2]);
        assert_eq!((rc, r.built, r.added), (HAB_OK, 1, 2));
        assert_eq!(slots, [0, 1], "duplicates: one slot each, in order");
        let generation = r.generation;
        // Three do not fit in two slots; an identity too long neither.
        let (rc, slots, r) = resolve(z, &conf(&[peer(b"x"), peer(b"y"), peer(b"z")], 0), [1, 3]);
        assert_eq!((rc, r.built, r.refused), (HAB_OK, 0, HAB_NO_SPACE as u32));
        assert_eq!(slots, [0, HAB_NO_PEER, HAB_NO_PEER]);
        assert_eq!(r.generation, generation);
        static LONG: [u8; 2000] = [b'l'; 2000];
        let (rc, _, r) = resolve(z, &conf(&[peer(b"x"), peer(&LONG)], 0), [1, 4]);
        assert_eq!((rc, r.refused), (HAB_OK, HAB_TOO_LARGE as u32));
        let mut src = hab_source::default();
        // SAFETY: a valid zone; `src` writable.
        assert_eq!(unsafe { hab_zone_source(z, HAB_NO_SLOT, &mut src) }, HAB_OK);
        assert_eq!(src, hab_source { list: 1, config: 2 });
        // NULL slots with peers to match.
        let list = conf(&[peer(b"x")], 0);
        let mut report = hab_resolve_report::default();
        // SAFETY: as in `resolve`, with NULL slots.
        let rc = unsafe {
            hab_zone_resolve(
                z,
                &list,
                1,
                5,
                0,
                7,
                HAB_NO_SLOT,
                Some(alive),
                core::ptr::null_mut(),
                core::ptr::null_mut(),
                &mut report,
            )
        };
        assert_eq!(rc, HAB_NULL_PARAMETER);
    }
}
