//! Forked processes hammer one shared mapping, as nginx workers do: the
//! table lives in a `MAP_SHARED | MAP_ANONYMOUS` mapping made before fork.
//!
//! Checked afterwards, in the parent: exact round robin totals across
//! processes, `max_conns` never exceeded (as seen by any process), and every
//! in-flight count back at zero. Children do not allocate (a forked child of
//! a multi-threaded test binary must not touch malloc's locks): their
//! buffers are made before fork and they report through shared memory.

use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

use hab_core::layout::Zone;
use hab_core::testing::Region;
use hab_core::{Attempt, Outcome, PeerSpec, Policy, Table, UpstreamSpec};
use hab_testkit::shm::Shared;

const CHILDREN: usize = 4;

/// Runs `child(k)` in `CHILDREN` forked processes and waits for them all
/// (bounded: the children's own loops are bounded in count).
fn fork_all(child: impl Fn(usize) -> bool) {
    let mut pids = Vec::with_capacity(CHILDREN);
    for k in 0..CHILDREN {
        // SAFETY: the child runs only `child`, which does not allocate or
        // lock, then leaves with `_exit` (no destructors, no atexit).
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork");
        if pid == 0 {
            let ok = child(k);
            // SAFETY: terminating the forked child immediately.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        pids.push(pid);
    }
    for pid in pids {
        let mut status = 0;
        // SAFETY: waiting for our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(r, pid);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "child {pid} failed: status {status:#x}"
        );
    }
}

fn table_in<'a>(spec: &UpstreamSpec<'_>, shm: &'a mut Shared) -> Table<'a> {
    // SAFETY: the mapping is `len` bytes, ours, alive while `shm` is;
    // nothing publishes in these tests (the serving generation is the
    // first, for good).
    unsafe {
        Zone::init(spec, shm.ptr, shm.len)
            .expect("zone fits")
            .current()
    }
}

#[test]
fn round_robin_totals_are_exact_across_processes() {
    let peers = [
        PeerSpec::new(b"a").weight(5),
        PeerSpec::new(b"b"),
        PeerSpec::new(b"c"),
    ];
    let spec = UpstreamSpec {
        health: Default::default(),
        policy: Policy::RoundRobin,
        peers: &peers,
        schedule_room: 0,
        sessions: false,
    };
    let mut shm = Shared::new(hab_core::write::zone_size(&spec).expect("size"));
    let t = table_in(&spec, &mut shm);
    let counts = Shared::new(4096);
    let per_child = 7_000;
    let mut words: Vec<Vec<u64>> = (0..CHILDREN).map(|_| vec![0; 16]).collect();
    let words_ptr: Vec<*mut u64> = words.iter_mut().map(|w| w.as_mut_ptr()).collect();

    fork_all(|k| {
        // SAFETY: each child uses its own pre-allocated buffer.
        let w = unsafe { core::slice::from_raw_parts_mut(words_ptr[k], 16) };
        // SAFETY: the counts page is shared, 8-byte aligned, zeroed.
        let c = unsafe { &*counts.ptr.cast::<[AtomicU64; 3]>() };
        for _ in 0..per_child {
            let mut a = Attempt::init(w, 0);
            let Ok(p) = t.get(&mut a, 0) else {
                return false;
            };
            c[p.peer as usize].fetch_add(1, Relaxed);
            if t.free(&mut a, Outcome::Ok, 0).is_err() {
                return false;
            }
        }
        true
    });

    // SAFETY: as in the children; they have all exited.
    let c = unsafe { &*counts.ptr.cast::<[AtomicU64; 3]>() };
    let total = (CHILDREN * per_child) as u64;
    assert_eq!(
        [c[0].load(Relaxed), c[1].load(Relaxed), c[2].load(Relaxed)],
        [total * 5 / 7, total / 7, total / 7]
    );
    for s in t.states() {
        assert_eq!(s.in_flight.load(Relaxed), 0);
    }
}

#[test]
fn least_conn_in_flight_returns_to_zero_and_max_conns_holds() {
    let peers = [
        PeerSpec {
            max_conns: 2,
            ..PeerSpec::new(b"a").weight(2)
        },
        PeerSpec::new(b"b"),
        PeerSpec {
            max_fails: 3,
            ..PeerSpec::new(b"c")
        },
        PeerSpec {
            backup: true,
            ..PeerSpec::new(b"d")
        },
    ];
    for policy in [Policy::LeastConn, Policy::RoundRobin] {
        let spec = UpstreamSpec {
            health: Default::default(),
            policy,
            peers: &peers,
            schedule_room: 0,
            sessions: false,
        };
        let mut shm = Shared::new(hab_core::write::zone_size(&spec).expect("size"));
        let t = table_in(&spec, &mut shm);
        let mut words: Vec<Vec<u64>> = (0..CHILDREN * 3).map(|_| vec![0; 16]).collect();
        let words_ptr: Vec<*mut u64> = words.iter_mut().map(|w| w.as_mut_ptr()).collect();

        fork_all(|k| {
            // Three requests in flight at once per process, finishing in a
            // rotating order with some failures and retries.
            let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ k as u64;
            let mut rand = move || {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed
            };
            // SAFETY: each child uses its own three pre-allocated buffers.
            let bufs: [&mut [u64]; 3] = core::array::from_fn(|j| unsafe {
                core::slice::from_raw_parts_mut(words_ptr[k * 3 + j], 16)
            });
            let mut attempts = bufs.map(|w| Attempt::init(w, 0));
            for round in 0..20_000u64 {
                let now = round / 10;
                let j = (rand() % 3) as usize;
                let a = &mut attempts[j];
                if a.current().is_some() {
                    let outcome = if rand() % 50 == 0 {
                        Outcome::Failed
                    } else {
                        Outcome::Ok
                    };
                    if t.free(a, outcome, now).is_err() {
                        return false;
                    }
                    // A new request next time, or a retry after failure.
                    if outcome == Outcome::Ok {
                        a.reset(now);
                    }
                } else {
                    match t.get(a, now) {
                        Ok(_) => {}
                        Err(hab_core::Error::Busy) => {
                            a.reset(now);
                        }
                        Err(_) => return false,
                    }
                }
                let inflight = t.states()[0].in_flight.load(Relaxed);
                if inflight > 2 {
                    return false;
                }
            }
            for a in attempts.iter_mut() {
                if a.current().is_some() && t.free(a, Outcome::Ok, 20_000).is_err() {
                    return false;
                }
            }
            true
        });

        for (i, s) in t.states().iter().enumerate() {
            assert_eq!(s.in_flight.load(Relaxed), 0, "{policy:?} peer {i}");
        }
    }
}

#[test]
fn region_helper_is_aligned() {
    let r = Region::new(100);
    assert_eq!(r.as_ptr() as usize % 64, 0);
}
