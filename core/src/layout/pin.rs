//! Pins: how a reader holds a generation while it reads it
//!
//! The serving generation is named by one word (`Sync::current`,
//! descriptor and number); a reader counts itself on the descriptor in its
//! worker's ledger row (or the shared counter without a row), checks the
//! word did not move, and reads; a generation is reclaimed only once no
//! row and no shared counter names it ([`crate::write::generation`]). The read
//! side of the layout: writers are above.

use core::sync::atomic::Ordering::{Acquire, Relaxed, Release, SeqCst};

use super::{Table, Zone, DESC_LIVE, GENS, LEDGER_SLOTS};
use crate::crash::crash_point;
use crate::error::Error;

/// A request's hold on a generation: descriptor index and number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pin {
    /// Descriptor index.
    pub slot: u32,
    /// Generation number.
    pub seq: u64,
}

/// A reader's pin on the serving generation ([`Zone::read`]): the
/// generation's bytes stay as they are while it lives, and no longer.
#[derive(Debug)]
pub struct Reading<'a> {
    zone: Zone<'a>,
    ledger: Option<u32>,
    pin: Pin,
}

impl Reading<'_> {
    /// The pinned generation, for as long as the guard lives.
    #[inline]
    pub fn table(&self) -> Table<'_> {
        self.zone.pinned(self.pin)
    }

    /// The pin.
    #[inline]
    pub fn pin(&self) -> Pin {
        self.pin
    }
}

impl Drop for Reading<'_> {
    fn drop(&mut self) {
        self.zone.unpin(self.ledger, self.pin);
    }
}

fn decode(current: u64) -> (usize, u64) {
    ((current & 0xff) as usize, current >> 8)
}

impl<'a> Zone<'a> {
    /// Descriptor of the serving generation (`None` before the first one).
    pub(crate) fn current_slot(&self) -> Option<usize> {
        let (d, seq) = decode(self.sync().current.load(SeqCst));
        (seq != 0 && d < GENS).then_some(d)
    }

    /// Number of members of the serving generation (before the first
    /// one, the configured peers).
    ///
    /// Reads no generation bytes: the lease holder stores the count before
    /// it publishes.
    pub fn members_now(&self) -> usize {
        match self.current_slot() {
            Some(_) => self.sync().members.load(Acquire) as usize,
            None => self.configured(),
        }
    }

    /// The serving generation as a pin would name it (`None` before the
    /// first); for comparing, not for holding.
    pub fn current_pin(&self) -> Option<Pin> {
        let (d, seq) = decode(self.sync().current.load(SeqCst));
        (seq != 0 && d < GENS).then_some(Pin {
            slot: d as u32,
            seq,
        })
    }

    /// Number of the serving generation (0 before the first).
    pub fn generation(&self) -> u64 {
        decode(self.sync().current.load(SeqCst)).1
    }

    /// The reference counter of ledger slot `ledger` (or the descriptor's
    /// shared one) for descriptor `d`.
    fn refs(&self, ledger: Option<u32>, d: usize) -> &'a core::sync::atomic::AtomicU32 {
        match ledger.and_then(|s| self.ledger_slot(s as usize)) {
            Some((_, row)) => &row[self.peers() + d % GENS],
            None => &self.slot(d).refs,
        }
    }

    /// Pins the serving generation for one request of the worker owning
    /// ledger slot `ledger`.
    pub fn pin(&self, ledger: Option<u32>) -> Result<(Pin, Table<'a>), Error> {
        // Bounded: each retry means a builder published in between, and a
        // builder needs a build's time; 64 retries never happen in practice.
        for _ in 0..64 {
            let cur = self.sync().current.load(SeqCst);
            let (d, seq) = decode(cur);
            if seq == 0 || d >= GENS {
                return Err(Error::BadLayout);
            }
            let refs = self.refs(ledger, d);
            refs.fetch_add(1, SeqCst);
            crash_point("pin.counted");
            if self.sync().current.load(SeqCst) == cur {
                crash_point("pin.checked");
                return Ok((
                    Pin {
                        slot: d as u32,
                        seq,
                    },
                    self.table(d),
                ));
            }
            let _ = refs.fetch_update(Release, Relaxed, |n| n.checked_sub(1));
        }
        Err(Error::Busy)
    }

    /// Pins the serving generation for a reader of the worker owning
    /// ledger slot `ledger` (its pin is reconciled with the slot if the
    /// worker dies while it reads); dropped with the guard.
    pub fn read(&self, ledger: Option<u32>) -> Result<Reading<'a>, Error> {
        let (pin, _) = self.pin(ledger)?;
        Ok(Reading {
            zone: *self,
            ledger,
            pin,
        })
    }

    /// The generation `pin` holds.
    #[inline]
    pub fn pinned(&self, pin: Pin) -> Table<'a> {
        self.table(pin.slot as usize)
    }

    /// Drops a request's pin: a `Release` store in the worker's own ledger
    /// row (it is the row's only writer while it lives, see
    /// [`super::ledger`]), a decrement of the shared counter otherwise.
    pub fn unpin(&self, ledger: Option<u32>, pin: Pin) {
        let refs = self.refs(ledger, pin.slot as usize);
        if ledger.is_some_and(|s| (s as usize) < LEDGER_SLOTS) {
            let n = refs.load(Relaxed);
            if n != 0 {
                refs.store(n - 1, Release);
            }
        } else {
            let _ = refs.fetch_update(Release, Relaxed, |n| n.checked_sub(1));
        }
        crash_point("unpin.counted");
    }

    /// References held on descriptor `d`, all workers together.
    pub fn references(&self, d: usize) -> u64 {
        let shared = u64::from(self.slot(d).refs.load(SeqCst));
        (0..LEDGER_SLOTS)
            .filter_map(|s| self.ledger_slot(s))
            .map(|(_, row)| u64::from(row[self.peers() + d % GENS].load(SeqCst)))
            .sum::<u64>()
            + shared
    }

    /// Descriptors holding a generation: `(descriptor, number, references,
    /// serving)`.
    pub fn generations(&self) -> Vec<(usize, u64, u64, bool)> {
        let current = self.current_slot();
        (0..GENS)
            .filter(|&d| self.slot(d).status.load(Acquire) == DESC_LIVE)
            .map(|d| {
                (
                    d,
                    self.slot(d).seq.load(Relaxed),
                    self.references(d),
                    Some(d) == current,
                )
            })
            .collect()
    }
}
