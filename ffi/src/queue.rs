//! The request queue: entering, the head's try, leaving, waking, counters
//!
//! `ha_queue number` (`hab_health_conf.queue`) gives a zone one queue for
//! all workers (docs/queue-design.md §2). The core owns every step
//! (`hab_core::layout::queue`); these functions only translate. A worker
//! needs its ledger slot (`hab_zone_claim_slot`) to wait. Every wake a
//! call gives ([`hab_wake`]) must be delivered to the worker it names,
//! which then calls [`hab_queue_woken`].

use hab_core::attempt::Attempt;
use hab_core::layout::queue::{Enter, Leave, Queue, Ticket, Try};
use hab_core::layout::{Zone, LEDGER_SLOTS};
use hab_core::{Binding, Error};

use crate::attempt::{attempt_words, hab_pick, hab_wake, pick_of};
use crate::{bytes, guard, hab_attempt, hab_result, hab_zone, zone_of, HAB_NO_SLOT};
use crate::{HAB_INVALID_ARGUMENT, HAB_NULL_PARAMETER, HAB_OK, HAB_QUEUE_FULL};

/// `hab_ticket.flags`: the ticket is the queue's head: try at once.
pub const HAB_TICKET_HEAD: u32 = 0x0001;
/// `hab_queue_leave` reason: the waiter's deadline passed.
pub const HAB_QUEUE_TIMEOUT: u32 = 1;
/// `hab_queue_leave` reason: the waiter's client went away.
pub const HAB_QUEUE_ABANDONED: u32 = 2;

/// A waiter's place in the queue, kept by the worker that entered.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct hab_ticket {
    /// The ticket number: the order of service.
    pub ticket: u64,
    /// The owner's ledger slot.
    pub slot: u32,
    /// `HAB_TICKET_*`.
    pub flags: u32,
}

impl hab_ticket {
    fn core(&self) -> Option<Ticket> {
        ((self.slot as usize) < LEDGER_SLOTS).then_some(Ticket {
            t: self.ticket,
            slot: self.slot,
        })
    }
}

/// The queue's counters, for the API.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct hab_queue_stats {
    /// Waiters now, all workers together.
    pub size: u32,
    /// `ha_queue number`; 0: the zone has no queue.
    pub max_size: u32,
    /// Requests refused because the queue was full.
    pub overflows: u32,
    /// Waiters whose deadline passed.
    pub timeouts: u32,
    /// Waiters whose client went away.
    pub abandoned: u32,
    /// Waiters that got a server.
    pub served: u32,
    /// Zero.
    pub reserved: [u32; 2],
}

/// The zone's queue, or `HAB_INVALID_ARGUMENT` when it has none.
fn queue_of<'a>(z: Zone<'a>) -> Result<Queue<'a>, hab_result> {
    z.queue().ok_or(HAB_INVALID_ARGUMENT)
}

/// Waiters now, all workers together (0 for NULL or a zone without a
/// queue). A request that is not a retry picks only while this is 0, and
/// otherwise enters the queue: newcomers never overtake (design §2.2).
///
/// # Safety
///
/// `z` is NULL or a valid zone handle.
#[no_mangle]
pub unsafe extern "C" fn hab_queue_waiting(z: *const hab_zone) -> u32 {
    crate::guard_or(0, || {
        if z.is_null() {
            return 0;
        }
        // SAFETY: valid handle (caller contract).
        unsafe { zone_of(z) }.queue().map_or(0, |q| q.waiting())
    })
}

/// Enters the queue for a request of the worker holding ledger slot
/// `slot`, at `now_ms`: a ticket into `out_ticket`, with
/// `HAB_TICKET_HEAD` when it heads the queue already (then try at once,
/// rather than wait for a wake). `HAB_QUEUE_FULL` when the queue holds
/// its `number` of waiters (an overflow, counted); `HAB_INVALID_ARGUMENT`
/// for a zone without a queue or a slot that is no ledger slot.
///
/// # Safety
///
/// `z` a valid zone handle; `out_ticket` writable.
#[no_mangle]
pub unsafe extern "C" fn hab_queue_enter(
    z: *mut hab_zone,
    slot: u32,
    now_ms: u64,
    out_ticket: *mut hab_ticket,
) -> hab_result {
    guard(|| {
        if z.is_null() || out_ticket.is_null() {
            return HAB_NULL_PARAMETER;
        }
        if slot as usize >= LEDGER_SLOTS {
            return HAB_INVALID_ARGUMENT;
        }
        // SAFETY: valid handle (caller contract).
        let q = match queue_of(unsafe { zone_of(z) }) {
            Ok(q) => q,
            Err(rc) => return rc,
        };
        match q.enter(slot, now_ms) {
            Enter::Full => HAB_QUEUE_FULL,
            Enter::Queued { ticket, head } => {
                let t = hab_ticket {
                    ticket: ticket.t,
                    slot: ticket.slot,
                    flags: if head { HAB_TICKET_HEAD } else { 0 },
                };
                // SAFETY: checked non-NULL; writable (contract).
                unsafe { out_ticket.write(t) };
                HAB_OK
            }
        }
    })
}

/// The try of the waiter `ticket`, whose request is `a`: when it heads
/// the queue, the normal pick (as `hab_attempt_pick`, `key` as there);
/// on `HAB_OK` the pick is in `out_pick`, counted in flight, the request
/// has left the queue (served) and `out_wake` names the new head's
/// worker to wake (`HAB_NO_SLOT`: none). `HAB_BUSY`: not the head, or no
/// server has room: keep waiting. Any other error leaves the ticket in
/// the queue: the caller leaves it.
///
/// # Safety
///
/// `z` a valid zone handle; `a` prepared by `hab_attempt_init` for `z`;
/// `ticket` readable; `key` NULL or valid for `key_len` bytes; `out_pick`
/// and `out_wake` writable.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn hab_queue_try(
    z: *mut hab_zone,
    a: *mut hab_attempt,
    ticket: *const hab_ticket,
    key: *const u8,
    key_len: usize,
    now_ms: u64,
    out_pick: *mut hab_pick,
    out_wake: *mut hab_wake,
) -> hab_result {
    guard(|| {
        if z.is_null() || a.is_null() || ticket.is_null() {
            return HAB_NULL_PARAMETER;
        }
        if out_pick.is_null() || out_wake.is_null() {
            return HAB_NULL_PARAMETER;
        }
        // SAFETY: `key` is NULL or valid for `key_len` bytes (contract).
        let key = match unsafe { bytes(key, key_len) } {
            Ok(k) => k,
            Err(rc) => return rc,
        };
        // SAFETY: non-NULL, readable (contract).
        let Some(t) = unsafe { &*ticket }.core() else {
            return HAB_INVALID_ARGUMENT;
        };
        // SAFETY: valid handle (caller contract).
        let z = unsafe { zone_of(z) };
        let q = match queue_of(z) {
            Ok(q) => q,
            Err(rc) => return rc,
        };
        // SAFETY: as above.
        let mut attempt = Attempt::from_words(unsafe { attempt_words(z, a) });
        let mut failed = None;
        let r = q.try_pick(t, now_ms, || {
            match z.get_bound(&mut attempt, key, Binding::None, now_ms) {
                Ok(p) => Some(p),
                Err(Error::Busy) => None,
                Err(e) => {
                    failed = Some(e);
                    None
                }
            }
        });
        match r {
            Try::Picked(p, wake) => {
                // SAFETY: checked non-NULL; writable (contract).
                unsafe {
                    out_pick.write(pick_of(p));
                    out_wake.write(wake.into());
                }
                HAB_OK
            }
            Try::Wait => failed.map_or(hab_result::HAB_BUSY, Into::into),
        }
    })
}

/// The waiter `ticket` leaves the queue without a server: `why` is
/// `HAB_QUEUE_TIMEOUT` or `HAB_QUEUE_ABANDONED`. `out_wake` names the
/// worker to wake when it was the head (`HAB_NO_SLOT`: none). Only the
/// worker that entered calls this, once per ticket, and never after a
/// `hab_queue_try` that returned `HAB_OK`.
///
/// # Safety
///
/// `z` a valid zone handle; `ticket` readable; `out_wake` writable.
#[no_mangle]
pub unsafe extern "C" fn hab_queue_leave(
    z: *mut hab_zone,
    ticket: *const hab_ticket,
    why: u32,
    out_wake: *mut hab_wake,
) -> hab_result {
    guard(|| {
        if z.is_null() || ticket.is_null() || out_wake.is_null() {
            return HAB_NULL_PARAMETER;
        }
        let why = match why {
            HAB_QUEUE_TIMEOUT => Leave::Timeout,
            HAB_QUEUE_ABANDONED => Leave::Abandoned,
            _ => return HAB_INVALID_ARGUMENT,
        };
        // SAFETY: non-NULL, readable (contract).
        let Some(t) = unsafe { &*ticket }.core() else {
            return HAB_INVALID_ARGUMENT;
        };
        // SAFETY: valid handle (caller contract).
        let q = match queue_of(unsafe { zone_of(z) }) {
            Ok(q) => q,
            Err(rc) => return rc,
        };
        let w = q.leave(t, why).into();
        // SAFETY: checked non-NULL; writable (contract).
        unsafe { out_wake.write(w) };
        HAB_OK
    })
}

/// The worker of ledger slot `slot` was woken: allows the next wake of
/// it, then gives the queue's head in `out_head` (with
/// `HAB_TICKET_HEAD`); when the head is one of this worker's tickets
/// (`out_head->slot == slot`), that waiter tries. An empty queue, or a
/// zone without one: `HAB_NO_SLOT` in `out_head->slot`.
///
/// # Safety
///
/// `z` a valid zone handle; `out_head` writable.
#[no_mangle]
pub unsafe extern "C" fn hab_queue_woken(
    z: *mut hab_zone,
    slot: u32,
    out_head: *mut hab_ticket,
) -> hab_result {
    guard(|| {
        if z.is_null() || out_head.is_null() {
            return HAB_NULL_PARAMETER;
        }
        if slot as usize >= LEDGER_SLOTS {
            return HAB_INVALID_ARGUMENT;
        }
        // SAFETY: valid handle (caller contract).
        let head = unsafe { zone_of(z) }.queue().and_then(|q| {
            q.woken(slot);
            q.help_head()
        });
        let h = head.map_or(
            hab_ticket {
                ticket: 0,
                slot: HAB_NO_SLOT,
                flags: 0,
            },
            |h| hab_ticket {
                ticket: h.t,
                slot: h.slot,
                flags: HAB_TICKET_HEAD,
            },
        );
        // SAFETY: checked non-NULL; writable (contract).
        unsafe { out_head.write(h) };
        HAB_OK
    })
}

/// Wakes the queue's head whatever happened (after a reconciliation, a
/// health verdict, an API change): the wake to deliver into `out_wake`
/// (`HAB_NO_SLOT`: none, or one is already on its way; always none for a
/// zone without a queue).
///
/// # Safety
///
/// `z` a valid zone handle; `out_wake` writable.
#[no_mangle]
pub unsafe extern "C" fn hab_queue_kick(z: *mut hab_zone, out_wake: *mut hab_wake) -> hab_result {
    guard(|| {
        if z.is_null() || out_wake.is_null() {
            return HAB_NULL_PARAMETER;
        }
        // SAFETY: valid handle (caller contract).
        let w = unsafe { zone_of(z) }.queue().and_then(|q| q.kick()).into();
        // SAFETY: checked non-NULL; writable (contract).
        unsafe { out_wake.write(w) };
        HAB_OK
    })
}

/// Registers the wake channel of the worker of ledger slot `slot`
/// (`HAB_NO_CHANNEL`: none); wakes of it name that channel. Nothing for
/// a zone without a queue.
///
/// # Safety
///
/// `z` a valid zone handle.
#[no_mangle]
pub unsafe extern "C" fn hab_queue_set_wake(
    z: *mut hab_zone,
    slot: u32,
    channel: u32,
) -> hab_result {
    guard(|| {
        if z.is_null() {
            return HAB_NULL_PARAMETER;
        }
        if slot as usize >= LEDGER_SLOTS {
            return HAB_INVALID_ARGUMENT;
        }
        // SAFETY: valid handle (caller contract).
        if let Some(q) = unsafe { zone_of(z) }.queue() {
            q.set_wake(slot, (channel != crate::HAB_NO_CHANNEL).then_some(channel));
        }
        HAB_OK
    })
}

/// The queue's counters into `out` (all 0 for a zone without a queue).
///
/// # Safety
///
/// `z` a valid zone handle; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn hab_queue_stats_get(
    z: *const hab_zone,
    out: *mut hab_queue_stats,
) -> hab_result {
    guard(|| {
        if z.is_null() || out.is_null() {
            return HAB_NULL_PARAMETER;
        }
        // SAFETY: valid handle (caller contract).
        let s = unsafe { zone_of(z) }
            .queue()
            .map_or_else(Default::default, |q| {
                let c = q.counters();
                hab_queue_stats {
                    size: q.waiting(),
                    max_size: q.max(),
                    overflows: c.overflows,
                    timeouts: c.timeouts,
                    abandoned: c.abandoned,
                    served: c.served,
                    reserved: [0; 2],
                }
            });
        // SAFETY: checked non-NULL; writable (contract).
        unsafe { out.write(s) };
        HAB_OK
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attempt::{
        hab_attempt_abandon_wake, hab_attempt_end, hab_attempt_end_wake, hab_attempt_init,
        hab_attempt_pick, hab_attempt_release, hab_attempt_size, hab_report, HAB_OUTCOME_OK,
    };
    use crate::conf::{fixtures, hab_peer_conf, hab_upstream_conf};
    use crate::health::{hab_health_conf, hab_health_validate, HAB_QUEUE_MAX};
    use crate::{hab_zone_init, hab_zone_size, HAB_BUSY, HAB_NO_CHANNEL};
    use core::ptr::{null, null_mut};
    use hab_core::testing::Region;

    /// A `max_conns=1` server.
    fn peer(id: &'static [u8]) -> hab_peer_conf {
        hab_peer_conf {
            max_conns: 1,
            ..fixtures::peer(id)
        }
    }

    fn health(queue: u32) -> hab_health_conf {
        hab_health_conf {
            queue,
            ..Default::default()
        }
    }

    fn conf(peers: &[hab_peer_conf], h: &hab_health_conf) -> hab_upstream_conf {
        hab_upstream_conf {
            health: h,
            ..fixtures::upstream(peers)
        }
    }

    /// A zone of two `max_conns=1` servers and a queue of `queue`.
    fn zone(queue: u32) -> (Region, *mut hab_zone) {
        let peers = [peer(b"a"), peer(b"b")];
        let h = health(queue);
        let c = conf(&peers, &h);
        let mut size = 0;
        // SAFETY: `c`, its peers and health live through the calls.
        assert_eq!(unsafe { hab_zone_size(&c, &mut size) }, HAB_OK);
        let region = Region::new(size);
        let mut z = null_mut();
        // SAFETY: the region is ours, `size` bytes, 64-byte aligned.
        let rc = unsafe { hab_zone_init(&c, region.as_ptr().cast(), region.len(), &mut z) };
        assert_eq!(rc, HAB_OK);
        (region, z)
    }

    /// A request's attempt in its own words.
    struct Req {
        _words: Vec<u64>,
        a: *mut hab_attempt,
    }

    fn req(z: *mut hab_zone) -> Req {
        // SAFETY: a valid zone.
        let n = unsafe { hab_attempt_size(z) };
        let mut w = vec![0u64; n / 8];
        let mut a = null_mut();
        // SAFETY: `w` is `n` bytes, aligned, ours until dropped.
        let rc =
            unsafe { hab_attempt_init(z, w.as_mut_ptr().cast(), n, 0, 1, HAB_NO_SLOT, &mut a) };
        assert_eq!(rc, HAB_OK);
        Req { _words: w, a }
    }

    fn pick(z: *mut hab_zone, r: &Req) -> hab_result {
        let mut p = hab_pick::default();
        // SAFETY: valid zone and attempt.
        unsafe { hab_attempt_pick(z, r.a, null(), 0, 0, &mut p) }
    }

    fn enter(z: *mut hab_zone, slot: u32) -> Result<hab_ticket, hab_result> {
        let mut t = hab_ticket::default();
        // SAFETY: a valid zone.
        match unsafe { hab_queue_enter(z, slot, 5, &mut t) } {
            HAB_OK => Ok(t),
            rc => Err(rc),
        }
    }

    fn try_(z: *mut hab_zone, r: &Req, t: &hab_ticket) -> Result<(u32, hab_wake), hab_result> {
        let (mut p, mut w) = (hab_pick::default(), hab_wake::NONE);
        // SAFETY: valid zone, attempt and ticket.
        match unsafe { hab_queue_try(z, r.a, t, null(), 0, 9, &mut p, &mut w) } {
            HAB_OK => Ok((p.peer, w)),
            rc => Err(rc),
        }
    }

    fn stats(z: *mut hab_zone) -> hab_queue_stats {
        let mut s = hab_queue_stats::default();
        // SAFETY: a valid zone.
        assert_eq!(unsafe { hab_queue_stats_get(z, &mut s) }, HAB_OK);
        s
    }

    fn woken(z: *mut hab_zone, slot: u32) -> hab_ticket {
        let mut h = hab_ticket::default();
        // SAFETY: a valid zone.
        assert_eq!(unsafe { hab_queue_woken(z, slot, &mut h) }, HAB_OK);
        h
    }

    fn end(z: *mut hab_zone, r: &Req) {
        // SAFETY: valid zone and attempt.
        assert_eq!(unsafe { hab_attempt_end(z, r.a) }, HAB_OK);
    }

    #[test]
    fn every_pointer_is_checked() {
        let (_m, z) = zone(2);
        let r = req(z);
        let t = hab_ticket::default();
        let (mut p, mut w, mut s) = (
            hab_pick::default(),
            hab_wake::NONE,
            hab_queue_stats::default(),
        );
        let mut out = hab_ticket::default();
        // SAFETY: NULLs where the tests says so; the rest valid.
        unsafe {
            assert_eq!(
                hab_queue_enter(null_mut(), 0, 0, &mut out),
                HAB_NULL_PARAMETER
            );
            assert_eq!(hab_queue_enter(z, 0, 0, null_mut()), HAB_NULL_PARAMETER);
            for (zz, a, tt, pp, ww) in [
                (
                    null_mut(),
                    r.a,
                    &t as *const _,
                    &mut p as *mut _,
                    &mut w as *mut _,
                ),
                (z, null_mut(), &t, &mut p, &mut w),
                (z, r.a, null(), &mut p, &mut w),
                (z, r.a, &t, null_mut(), &mut w),
                (z, r.a, &t, &mut p, null_mut()),
            ] {
                assert_eq!(
                    hab_queue_try(zz, a, tt, null(), 0, 0, pp, ww),
                    HAB_NULL_PARAMETER
                );
            }
            assert_eq!(
                hab_queue_try(z, r.a, &t, null(), 3, 0, &mut p, &mut w),
                HAB_NULL_PARAMETER
            );
            assert_eq!(
                hab_queue_leave(null_mut(), &t, 1, &mut w),
                HAB_NULL_PARAMETER
            );
            assert_eq!(hab_queue_leave(z, null(), 1, &mut w), HAB_NULL_PARAMETER);
            assert_eq!(hab_queue_leave(z, &t, 1, null_mut()), HAB_NULL_PARAMETER);
            assert_eq!(hab_queue_woken(null_mut(), 0, &mut out), HAB_NULL_PARAMETER);
            assert_eq!(hab_queue_woken(z, 0, null_mut()), HAB_NULL_PARAMETER);
            assert_eq!(hab_queue_kick(null_mut(), &mut w), HAB_NULL_PARAMETER);
            assert_eq!(hab_queue_kick(z, null_mut()), HAB_NULL_PARAMETER);
            assert_eq!(hab_queue_set_wake(null_mut(), 0, 0), HAB_NULL_PARAMETER);
            assert_eq!(hab_queue_stats_get(null(), &mut s), HAB_NULL_PARAMETER);
            assert_eq!(hab_queue_stats_get(z, null_mut()), HAB_NULL_PARAMETER);
            assert_eq!(
                hab_attempt_abandon_wake(z, r.a, null_mut()),
                HAB_NULL_PARAMETER
            );
            assert_eq!(
                hab_attempt_abandon_wake(null_mut(), r.a, &mut w),
                HAB_NULL_PARAMETER
            );
            assert_eq!(hab_attempt_end_wake(z, r.a, null_mut()), HAB_NULL_PARAMETER);
            assert_eq!(
                hab_attempt_end_wake(z, null_mut(), &mut w),
                HAB_NULL_PARAMETER
            );
            // Out of range: slots, reasons.
            assert_eq!(
                hab_queue_enter(z, HAB_NO_SLOT, 0, &mut out),
                HAB_INVALID_ARGUMENT
            );
            assert_eq!(hab_queue_woken(z, 32, &mut out), HAB_INVALID_ARGUMENT);
            assert_eq!(hab_queue_set_wake(z, 32, 0), HAB_INVALID_ARGUMENT);
            assert_eq!(hab_queue_leave(z, &t, 0, &mut w), HAB_INVALID_ARGUMENT);
            let bad = hab_ticket { slot: 40, ..t };
            assert_eq!(hab_queue_leave(z, &bad, 1, &mut w), HAB_INVALID_ARGUMENT);
        }
        // Nothing was written on failure.
        assert_eq!((out, w), (hab_ticket::default(), hab_wake::NONE));
        end(z, &r);
    }

    #[test]
    fn the_queue_number_is_validated_and_zero_means_none() {
        // SAFETY: valid confs.
        unsafe {
            assert_eq!(hab_health_validate(&health(HAB_QUEUE_MAX)), HAB_OK);
            assert_eq!(
                hab_health_validate(&health(HAB_QUEUE_MAX + 1)),
                HAB_INVALID_ARGUMENT
            );
            let peers = [peer(b"a")];
            let (h, mut size) = (health(HAB_QUEUE_MAX + 1), 0);
            assert_eq!(
                hab_zone_size(&conf(&peers, &h), &mut size),
                HAB_INVALID_ARGUMENT
            );
        }
        let (_m, z) = zone(0);
        assert_eq!(enter(z, 0), Err(HAB_INVALID_ARGUMENT));
        assert_eq!(stats(z), hab_queue_stats::default());
        assert_eq!(woken(z, 0).slot, HAB_NO_SLOT);
        let mut w = hab_wake {
            slot: 1,
            channel: 1,
        };
        // SAFETY: a valid zone.
        unsafe {
            assert_eq!(hab_queue_kick(z, &mut w), HAB_OK);
            assert_eq!(hab_queue_set_wake(z, 0, 3), HAB_OK);
        }
        assert_eq!(w, hab_wake::NONE);
        // A release wakes nobody.
        let r = req(z);
        assert_eq!(pick(z, &r), HAB_OK);
        let mut rep = hab_report {
            wake: hab_wake {
                slot: 0,
                channel: 0,
            },
            ..Default::default()
        };
        // SAFETY: valid zone and attempt.
        let rc = unsafe { hab_attempt_release(z, r.a, HAB_OUTCOME_OK, null(), 1, &mut rep) };
        assert_eq!((rc, rep.wake), (HAB_OK, hab_wake::NONE));
        end(z, &r);
    }

    #[test]
    fn a_full_queue_refuses_and_counts_an_overflow() {
        let (_m, z) = zone(2);
        let busy: Vec<Req> = (0..2).map(|_| req(z)).collect();
        for r in &busy {
            assert_eq!(pick(z, r), HAB_OK);
        }
        let a = enter(z, 0).unwrap();
        let b = enter(z, 1).unwrap();
        assert_eq!((a.flags, b.flags), (HAB_TICKET_HEAD, 0));
        assert_eq!(enter(z, 2), Err(HAB_QUEUE_FULL));
        let s = stats(z);
        assert_eq!((s.size, s.max_size, s.overflows), (2, 2, 1));
        // SAFETY: a valid zone, then NULL.
        unsafe { assert_eq!((hab_queue_waiting(z), hab_queue_waiting(null())), (2, 0)) };
        // Leaving: the head times out and wakes the next; the next is
        // abandoned.
        let mut w = hab_wake::NONE;
        // SAFETY: valid zone and tickets, each left once.
        unsafe {
            assert_eq!(hab_queue_leave(z, &a, HAB_QUEUE_TIMEOUT, &mut w), HAB_OK);
            assert_eq!(w.slot, 1);
            assert_eq!(hab_queue_leave(z, &b, HAB_QUEUE_ABANDONED, &mut w), HAB_OK);
        }
        assert_eq!(w, hab_wake::NONE);
        let s = stats(z);
        assert_eq!((s.size, s.timeouts, s.abandoned, s.served), (0, 1, 1, 0));
        for r in &busy {
            end(z, r);
        }
    }

    #[test]
    fn waiters_are_served_in_order_and_releases_wake_the_head() {
        let (_m, z) = zone(4);
        // SAFETY: a valid zone.
        unsafe { assert_eq!(hab_queue_set_wake(z, 0, 7), HAB_OK) };
        let (r1, r2) = (req(z), req(z));
        assert_eq!((pick(z, &r1), pick(z, &r2)), (HAB_OK, HAB_OK));
        let (w1, w2) = (req(z), req(z));
        let t1 = enter(z, 0).unwrap();
        let t2 = enter(z, 1).unwrap();
        assert!(t1.ticket < t2.ticket);
        assert_eq!(try_(z, &w2, &t2), Err(HAB_BUSY), "not the head");
        assert_eq!(try_(z, &w1, &t1), Err(HAB_BUSY), "no room");
        // r1's release wakes the head's worker, on its channel.
        let mut rep = hab_report::default();
        // SAFETY: valid zone and attempt.
        let rc = unsafe { hab_attempt_release(z, r1.a, HAB_OUTCOME_OK, null(), 1, &mut rep) };
        assert_eq!(rc, HAB_OK);
        assert_eq!(
            rep.wake,
            hab_wake {
                slot: 0,
                channel: 7
            }
        );
        // The head is slot 0's; the second waiter may not overtake.
        assert_eq!(try_(z, &w2, &t2), Err(HAB_BUSY));
        let h = woken(z, 0);
        assert_eq!((h.ticket, h.slot, h.flags), (t1.ticket, 0, HAB_TICKET_HEAD));
        let (p, wake) = try_(z, &w1, &t1).unwrap();
        assert!(p < 2);
        assert_eq!(
            wake,
            hab_wake {
                slot: 1,
                channel: HAB_NO_CHANNEL
            }
        );
        assert_eq!(woken(z, 1).ticket, t2.ticket);
        assert_eq!(try_(z, &w2, &t2), Err(HAB_BUSY), "no room yet");
        // An abandoned try wakes it (the wake through the _wake variant).
        let mut w = hab_wake::NONE;
        // SAFETY: valid zone and attempt; r2 has a try in progress.
        unsafe { assert_eq!(hab_attempt_abandon_wake(z, r2.a, &mut w), HAB_OK) };
        assert_eq!(w.slot, 1);
        woken(z, 1);
        let (_, wake) = try_(z, &w2, &t2).unwrap();
        assert_eq!(wake, hab_wake::NONE);
        let s = stats(z);
        assert_eq!((s.size, s.served), (0, 2));
        // Both waited from their entry (5) to their try's now_ms (9).
        // SAFETY: a valid zone.
        let waits = unsafe { zone_of(z) }.queue().unwrap().waits();
        assert_eq!((waits.count(), waits.sum_ms, waits.buckets[1]), (2, 8, 2));
        // A third waiter; ending a request with a try in progress wakes it.
        let w3 = req(z);
        let t3 = enter(z, 2).unwrap();
        assert_eq!(t3.flags, HAB_TICKET_HEAD);
        assert_eq!(try_(z, &w3, &t3), Err(HAB_BUSY));
        let mut kick = hab_wake::NONE;
        // SAFETY: valid zone and attempts.
        unsafe {
            assert_eq!(hab_queue_kick(z, &mut kick), HAB_OK);
            assert_eq!(kick.slot, 2);
            // Already pending: the kick gives nothing more.
            assert_eq!(hab_queue_kick(z, &mut kick), HAB_OK);
            assert_eq!(kick, hab_wake::NONE);
            woken(z, 2);
            assert_eq!(hab_attempt_end_wake(z, w1.a, &mut w), HAB_OK);
        }
        assert_eq!(w.slot, 2);
        assert!(try_(z, &w3, &t3).is_ok());
        for r in [&r1, &r2, &w1, &w2, &w3] {
            end(z, r);
        }
        assert_eq!(stats(z).size, 0);
    }
}
