//! Every step of every shared-memory protocol, killed: a forked worker is
//! sent SIGKILL at crash point `p`, occurrence `k`, for every `p` and `k`
//! its requests reach; then another worker reconciles, and the invariants
//! are checked (docs/design.md, "Crash consistency"):
//!
//! - every peer's in-flight count equals the requests live workers hold
//!   (nothing leaked, nothing returned twice: the test's own worker holds
//!   one request throughout, so a count returned twice would take it);
//! - the bounded-load total equals the same;
//! - no ledger slot is left claimed by the dead or half-reconciled;
//! - every generation's references are the live workers' pins, and ten
//!   publications in a row succeed (a leaked pin would block them);
//! - a `max_conns=1` peer takes a request again once the live one ends;
//! - the zone's request queue holds no waiter of the dead (a worker dies
//!   waiting in it), its size is the ledger's exact sum, and it serves
//!   2·cap rounds afterwards.
//!
//! The reconciler is killed the same way at each of its own steps, after
//! a worker killed at each step of a request, and a third worker takes the
//! reconciliation over.
//!
//! Children do not allocate (a forked child of a multi-threaded test
//! binary must not touch malloc's locks): buffers are made before fork.

use core::sync::atomic::AtomicU32;
use core::sync::atomic::Ordering::Relaxed;
use std::sync::Mutex;

use hab_core::attempt;
use hab_core::crash;
use hab_core::layout::queue::{Enter, Leave, Queue, Ticket, Try};
use hab_core::layout::stats::TryInfo;
use hab_core::layout::{self, flight, ledger, PeerState, Zone, LEDGER_SLOTS, TOTAL};
use hab_core::learn::{self, Learnt, Sessions};
use hab_core::spec::HashMode;
use hab_core::spec::HealthSpec;
use hab_core::write;
use hab_core::{Attempt, Outcome, PeerSpec, Policy, UpstreamSpec};
use hab_testkit::shm::Shared;

/// Crash points are process-wide: one test at a time in this binary.
static SERIAL: Mutex<()> = Mutex::new(());

/// The owner the test's own (live) worker uses.
const LIVE: u64 = 1;

/// This process's id.
fn pid() -> u64 {
    // SAFETY: getpid has no preconditions.
    (unsafe { libc::getpid() }) as u64
}

fn kill_self() {
    // SAFETY: signalling our own process.
    unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
}

/// One upstream and the key its requests carry.
struct Case {
    name: &'static str,
    policy: Policy,
    peers: Vec<PeerSpec<'static>>,
    key: &'static [u8],
}

const IDS: [&[u8]; 40] = [
    b"p00", b"p01", b"p02", b"p03", b"p04", b"p05", b"p06", b"p07", b"p08", b"p09", b"p10", b"p11",
    b"p12", b"p13", b"p14", b"p15", b"p16", b"p17", b"p18", b"p19", b"p20", b"p21", b"p22", b"p23",
    b"p24", b"p25", b"p26", b"p27", b"p28", b"p29", b"p30", b"p31", b"p32", b"p33", b"p34", b"p35",
    b"p36", b"p37", b"p38", b"p39",
];

fn cases() -> Vec<Case> {
    let max1 = |id| PeerSpec {
        max_conns: 1,
        ..PeerSpec::new(id)
    };
    vec![
        Case {
            name: "round_robin, max_conns=1 and a backup",
            policy: Policy::RoundRobin,
            peers: vec![
                max1(IDS[0]),
                PeerSpec::new(IDS[1]).weight(2),
                PeerSpec {
                    backup: true,
                    ..PeerSpec::new(IDS[2])
                },
            ],
            key: b"",
        },
        Case {
            name: "least_conn, 40 peers (the shared tree)",
            policy: Policy::LeastConn,
            peers: (0..40)
                .map(|k| {
                    if k < 2 {
                        max1(IDS[k])
                    } else {
                        PeerSpec::new(IDS[k])
                    }
                })
                .collect(),
            key: b"",
        },
        Case {
            name: "hash consistent, bounded load (the zone-wide total)",
            policy: Policy::Hash {
                mode: HashMode::Consistent,
                balance_factor: 150,
                maglev_size: 0,
            },
            peers: (0..4).map(|k| PeerSpec::new(IDS[k])).collect(),
            key: b"some-key",
        },
        Case {
            name: "p2c",
            policy: Policy::P2c,
            peers: (0..3).map(|k| max1(IDS[k])).collect(),
            key: b"",
        },
    ]
}

/// Buffers of one worker's requests, made before fork.
struct Buffers {
    words: Vec<Vec<u64>>,
}

impl Buffers {
    fn new(peers: usize) -> Buffers {
        Buffers {
            words: (0..3).map(|_| vec![0; attempt::words(peers)]).collect(),
        }
    }
}

/// A worker's life: claims a slot, queues a request in the zone's queue
/// (it waits through the whole life), serves requests (one held across
/// the others, a retry, a passed-on try), lets its waiter pick and leave,
/// gives its slot back. Every crash point of a worker is on this path.
/// `false` if something failed.
/// What a worker's successful tries report: a 200 whose header came at
/// once (so they are counted in the latency histograms and the window).
const OK: TryInfo = TryInfo {
    status: 200,
    header_ms: Some(0),
    sent: 0,
    received: 0,
};

fn worker(z: Zone<'_>, key: &[u8], owner: u64, b: &mut Buffers) -> bool {
    // 0: the process id, as nginx's workers do.
    let owner = if owner == 0 { pid() } else { owner };
    let Some(slot) = z.claim_slot(owner, |_| true) else {
        return false;
    };
    // The only waiter: the head. It waits until the end, so a kill at any
    // step of a request leaves a waiting cell for the reconciler.
    let waiter = match z.queue().map(|q| (q, q.enter(slot, 0))) {
        None => None,
        Some((q, Enter::Queued { ticket, head: true })) => Some((q, ticket)),
        Some(_) => return false,
    };
    let [w1, w2, w3] = &mut b.words[..] else {
        return false;
    };
    let start = |w: &mut Vec<u64>| {
        let mut a = Attempt::init(w, 0);
        a.set_slot(Some(slot));
        z.begin(&mut a).map(|_| ())
    };
    // Request 1 stays in flight while the others run.
    if start(w1).is_err() || z.get_keyed(&mut Attempt::from_words(w1), key, 1).is_err() {
        return false;
    }
    // Request 2: fails once, retried, succeeds.
    if start(w2).is_err() {
        return false;
    }
    {
        let mut a = Attempt::from_words(w2);
        if z.get_keyed(&mut a, key, 2).is_err() || z.free(&mut a, Outcome::Failed, 3).is_err() {
            return false;
        }
        if z.get_keyed(&mut a, key, 4).is_ok() && z.free_with(&mut a, Outcome::Ok, &OK, 5).is_err()
        {
            return false;
        }
        z.end(&mut a);
    }
    // Request 3: passed on.
    if start(w3).is_err() {
        return false;
    }
    {
        let mut a = Attempt::from_words(w3);
        if z.get_keyed(&mut a, key, 6).is_ok() && z.free(&mut a, Outcome::Next, 7).is_err() {
            return false;
        }
        z.end(&mut a);
    }
    let mut a = Attempt::from_words(w1);
    if z.free_with(&mut a, Outcome::Ok, &OK, 8).is_err() {
        return false;
    }
    z.end(&mut a);
    // The waiter picks (the server held is a stand-in: the pick is the
    // queue's business here, flight's is tested above) and leaves.
    if let Some((q, ticket)) = waiter {
        if !matches!(q.try_pick(ticket, 0, || Some(())), Try::Picked((), None)) {
            return false;
        }
    }
    // A clean exit gives the slot back (reconciling its own row).
    z.release_slot(slot, owner);
    true
}

/// Active checks every second (timeout 500 ms), one result deciding either
/// way, with `flags` beside `HealthSpec::CHECK`.
fn checks(flags: u32) -> HealthSpec {
    HealthSpec {
        flags: HealthSpec::CHECK | flags,
        interval_ms: 1_000,
        timeout_ms: 500,
        fails: 1,
        passes: 1,
        ..HealthSpec::default()
    }
}

/// A zone of `case` in a fresh shared mapping, with a queue of
/// [`QUEUE_MAX`] waiters.
fn zone_of(case: &Case, shm: &Shared) -> Zone<'static> {
    let spec = UpstreamSpec {
        health: HealthSpec {
            queue: QUEUE_MAX,
            ..HealthSpec::default()
        },
        policy: case.policy,
        peers: &case.peers,
        schedule_room: 0,
        sessions: false,
    };
    assert!(write::zone_size(&spec).unwrap() <= shm.len);
    // SAFETY: the mapping is `len` bytes, ours; the test keeps it alive
    // longer than every use of the zone (it is dropped at the end of each
    // run, after the last use).
    unsafe { Zone::init(&spec, shm.ptr, shm.len) }.expect("zone fits")
}

/// How often each crash point is hit by `run` (in this process, on a
/// scratch zone) from where it calls `crash::counting()`.
fn hits(run: impl FnOnce()) -> Vec<(&'static str, u32)> {
    run();
    let h = crash::POINTS.iter().map(|&p| (p, crash::hits(p))).collect();
    crash::disarm();
    h
}

/// Forks a child that arms `point`/`nth`, runs `f` and must die there.
fn die_at(point: &str, nth: u32, f: impl FnOnce() -> bool) -> u64 {
    // SAFETY: the child only runs `f` (bounded work on the zone; glibc's
    // fork leaves malloc usable in the child of a threaded parent, for the
    // builders that allocate), then leaves with `_exit`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork");
    if pid == 0 {
        let ok = crash::arm(point, nth, kill_self) && f();
        // Not killed: the point was not reached (2), or the run failed (3).
        // SAFETY: leaving the forked child at once.
        unsafe { libc::_exit(if ok { 2 } else { 3 }) };
    }
    // Bounded: a child that has not ended in 30 s is killed and the test
    // fails (a hang, not a kill at the point).
    let mut status = 0;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        // SAFETY: waiting for our own child, without blocking.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            break;
        }
        assert_eq!(r, 0, "waitpid");
        if std::time::Instant::now() > deadline {
            // SAFETY: killing and reaping our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            panic!("{point} #{nth}: the child hung for 30 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    assert!(
        libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL,
        "{point} #{nth}: the child was not killed there (status {status:#x})"
    );
    pid as u64
}

/// The live worker's state: a slot and one request held on `held`.
struct Live {
    slot: u32,
    words: Vec<u64>,
    held: usize,
}

fn live_worker(z: Zone<'_>, key: &[u8]) -> Live {
    let slot = z.claim_slot(LIVE, |_| true).unwrap();
    let mut words = vec![0; attempt::words(z.peers())];
    let mut a = Attempt::init(&mut words, 0);
    a.set_slot(Some(slot));
    z.begin(&mut a).unwrap();
    let held = z.get_keyed(&mut a, key, 0).unwrap().peer as usize;
    Live { slot, words, held }
}

/// The zone's queue once the dead are reconciled: nobody waits, the
/// ledger's sum agrees, and 2·cap rounds of entering and picking work.
fn queue_empty(q: Queue<'_>, slot: u32, what: &str) {
    assert_eq!(q.kick(), None, "{what}: nobody waits");
    let qa = q.audit();
    assert_eq!(
        (qa.size, qa.ledger_sum, qa.waiting.iter().sum::<u32>()),
        (0, 0, 0),
        "{what}: queue {qa:?}"
    );
    assert!(qa.head_waiting && qa.head == qa.tail, "{what}: {qa:?}");
    for k in 0..2 * q.cap() {
        let Enter::Queued { ticket, head: true } = q.enter(slot, 10) else {
            panic!("{what}: queue round {k} refused");
        };
        assert!(matches!(
            q.try_pick(ticket, 0, || Some(())),
            Try::Picked((), None)
        ));
    }
}

/// The invariants after the dead are reconciled by the live worker.
fn check(case: &Case, z: Zone<'_>, live: &mut Live, dead: &[u64], what: &str) {
    // The live worker's next claim reconciles every dead owner (and
    // takes over a dead reconciler's work).
    let again = z.claim_slot(LIVE + 1, |pid| pid == LIVE || pid == LIVE + 1);
    assert!(again.is_some(), "{what}: no slot to claim");
    z.release_slot(again.unwrap(), LIVE + 1);
    for s in 0..LEDGER_SLOTS {
        let o = z.ledger_slot(s).unwrap().0.load(Relaxed);
        let who = o & !ledger::RECLAIMING;
        assert!(
            o == 0 || (o == LIVE && s as u32 == live.slot),
            "{what}: ledger slot {s} left as {o:#x}"
        );
        assert!(!dead.contains(&who) || o == 0);
    }
    for (i, st) in z.states().iter().enumerate() {
        let want = u32::from(i == live.held);
        assert_eq!(
            st.in_flight.load(Relaxed),
            want,
            "{what} ({}): peer {i} in flight",
            case.name
        );
    }
    // The least_conn tree is exact again: every node the least of its
    // children (a path left half-refreshed by the dead is rebuilt).
    for g in [layout::PRIMARY, layout::BACKUP] {
        if let Some(t) = z.lc_tree(g) {
            assert_eq!(
                t.first_stale(z.states()),
                None,
                "{what} ({}): least_conn tree of group {g} stale",
                case.name
            );
        }
    }
    let total = flight::count(
        z.read(None)
            .unwrap()
            .table()
            .cursor(TOTAL)
            .value
            .load(Relaxed),
    );
    if matches!(case.policy, Policy::Hash { .. }) {
        assert_eq!(total, 1, "{what} ({}): bounded-load total", case.name);
    }
    let refs: u64 = z.generations().iter().map(|g| g.2).sum();
    assert_eq!(
        refs,
        1,
        "{what} ({}): references {:?}",
        case.name,
        z.generations()
    );
    // The queue: the dead's waiter returned (docs/queue-design.md §2.5),
    // nobody left waiting, and 2·cap rounds of entering and picking work.
    if let Some(q) = z.queue() {
        queue_empty(q, live.slot, &format!("{what} ({})", case.name));
    }
    // The live request ends; the zone must be as new.
    let mut a = Attempt::from_words(&mut live.words);
    z.free(&mut a, Outcome::Ok, 9).unwrap();
    z.end(&mut a);
    assert!(z.states().iter().all(|s| s.in_flight.load(Relaxed) == 0));
    for k in 0..10 {
        z.publish(LIVE, |_| true)
            .unwrap_or_else(|e| panic!("{what}: publication {k} refused: {e:?}"));
    }
    // max_conns=1 peers take a request again.
    for (i, st) in z.states().iter().enumerate() {
        if st.max_conns() == 1 {
            assert_eq!(st.in_flight.load(Relaxed), 0, "{what}: peer {i}");
        }
    }
    z.release_slot(live.slot, LIVE);
}

/// Kills a worker at every occurrence of every point its life reaches.
#[test]
fn a_worker_killed_at_every_step_leaks_nothing() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut runs = 0;
    let mut tree_kills = 0;
    for case in cases() {
        let shm = Shared::new(4 << 20);
        let mut b = Buffers::new(case.peers.len());
        // The same run as the killed ones, counted instead.
        let counted = hits(|| {
            let z = zone_of(&case, &shm);
            let _live = live_worker(z, case.key);
            crash::counting();
            assert!(worker(z, case.key, 77, &mut b), "{}", case.name);
        });
        let reached: Vec<_> = counted.iter().filter(|(_, n)| *n > 0).collect();
        // Every step of a request, and the reconciliation of a slot given
        // back, is on a worker's path (the returning steps are reached by
        // the reconciler test).
        for p in crash::POINTS {
            let elsewhere = p.starts_with("reconcile.drain.")
                || p.starts_with("publish.")
                || p.starts_with("apply.")
                || p.starts_with("eject.")
                || p.starts_with("check.")
                || p.starts_with("admin.")
                || p.starts_with("claim.")
                || p.starts_with("learn.")
                // Reached by the reconciler test (a waiter returned).
                || p.starts_with("reconcile.queue.")
                // Only where there is a least_conn tree (counted below).
                || p.starts_with("lc.");
            assert!(
                elsewhere || reached.iter().any(|(q, _)| q == p),
                "{}: crash point {p} never reached",
                case.name
            );
        }
        for &&(point, n) in &reached {
            for nth in 1..=n {
                let z = zone_of(&case, &shm);
                let mut live = live_worker(z, case.key);
                let dead = die_at(point, nth, || worker(z, case.key, 0, &mut b));
                check(
                    &case,
                    z,
                    &mut live,
                    &[dead],
                    &format!("killed at {point} #{nth}"),
                );
                runs += 1;
                tree_kills += usize::from(point.starts_with("lc."));
            }
        }
    }
    eprintln!("{runs} workers killed, one at each step ({tree_kills} in a tree refresh)");
    assert!(runs > 100);
    assert!(tree_kills > 0, "no kill in a least_conn tree refresh");
}

/// Kills a worker at every step of a request, then its reconciler at
/// every step of the reconciliation; a third worker takes over.
#[test]
fn a_reconciler_killed_at_every_step_is_taken_over() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut runs = 0;
    for case in cases() {
        let shm = Shared::new(4 << 20);
        let mut b = Buffers::new(case.peers.len());
        let counted = hits(|| {
            let z = zone_of(&case, &shm);
            let _live = live_worker(z, case.key);
            crash::counting();
            assert!(worker(z, case.key, 77, &mut b));
        });
        let request_steps: Vec<_> = counted
            .iter()
            .filter(|(p, n)| *n > 0 && p.starts_with("flight."))
            .collect();
        let mut reached = Vec::new();
        for &&(wpoint, wn) in &request_steps {
            // One occurrence in the middle of the worker's life (the held
            // request and another in flight), to keep the product small.
            let wnth = wn.div_ceil(2);
            // What the reconciliation of that death reaches.
            let rcounted = hits(|| {
                let z = zone_of(&case, &shm);
                let _live = live_worker(z, case.key);
                let dead = die_at(wpoint, wnth, || worker(z, case.key, 0, &mut b));
                crash::counting();
                z.claim_slot(2000, |pid| pid != dead).unwrap();
            });
            let reconcile_steps: Vec<_> = rcounted
                .iter()
                .filter(|(p, n)| *n > 0 && p.starts_with("reconcile."))
                .collect();
            reached.extend(reconcile_steps.iter().map(|(p, _)| *p));
            for &&(rpoint, rn) in &reconcile_steps {
                for rnth in 1..=rn {
                    let z = zone_of(&case, &shm);
                    let mut live = live_worker(z, case.key);
                    let dead = die_at(wpoint, wnth, || worker(z, case.key, 0, &mut b));
                    let reconciler = die_at(rpoint, rnth, || {
                        z.claim_slot(2000, |pid| pid != dead).is_some()
                    });
                    let what = format!(
                        "worker killed at {wpoint} #{wnth}, reconciler at {rpoint} #{rnth}"
                    );
                    check(&case, z, &mut live, &[dead, reconciler], &what);
                    runs += 1;
                }
            }
        }
        // Every step of the reconciliation, over the deaths above, the
        // queue's included (the worker dies waiting: its cell, its part
        // of `size`).
        for p in crash::POINTS.iter().filter(|p| p.starts_with("reconcile.")) {
            assert!(reached.contains(p), "{}: {p} never reached", case.name);
        }
    }
    eprintln!("{runs} reconcilers killed, one at each step");
    assert!(runs > 20);
}

/// A reader of the serving generation (the resolve timer's `source`,
/// `slots_of`) killed at every step of its pin: the pin is reconciled
/// with the worker's slot, and publications go on.
#[test]
fn a_reader_killed_while_it_holds_a_pin_blocks_nothing() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let case = &cases()[0];
    let shm = Shared::new(4 << 20);
    let ids: Vec<&[u8]> = case.peers.iter().map(|p| p.id).collect();
    let reader = |z: Zone<'_>, owner: u64| {
        let owner = if owner == 0 { pid() } else { owner };
        let Some(slot) = z.claim_slot(owner, |_| true) else {
            return false;
        };
        let ok =
            z.source(Some(slot)).is_ok() && z.slots_of(Some(slot), ids.iter().copied()).is_ok();
        z.release_slot(slot, owner);
        ok
    };
    let counted = hits(|| {
        let z = zone_of(case, &shm);
        let _live = live_worker(z, case.key);
        crash::counting();
        assert!(reader(z, 77));
    });
    let mut runs = 0;
    for &(point, n) in counted
        .iter()
        .filter(|(p, n)| *n > 0 && p.starts_with("pin."))
    {
        for nth in 1..=n {
            // Seven deaths in a row in the same zone: one more pin left by
            // each would leave no descriptor to publish into.
            let z = zone_of(case, &shm);
            let mut live = live_worker(z, case.key);
            let dead: Vec<u64> = (0..7)
                .map(|_| die_at(point, nth, || reader(z, 0)))
                .collect();
            check(
                case,
                z,
                &mut live,
                &dead,
                &format!("reader killed at {point} #{nth}"),
            );
            runs += 1;
        }
    }
    assert!(runs >= 4, "{runs}");
}

/// A builder killed at every step of a publication (a weight change):
/// the lease is taken over, the half-made generation reclaimed, and the
/// next publications serve the weights in force.
#[test]
fn a_builder_killed_at_every_step_is_taken_over() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut runs = 0;
    for case in cases() {
        let shm = Shared::new(4 << 20);
        let builder = |z: Zone<'_>, owner: u64| {
            let owner = if owner == 0 { pid() } else { owner };
            z.set_weight(1, Some(3)).is_ok() && z.publish(owner, |_| true).is_ok()
        };
        let counted = hits(|| {
            let z = zone_of(&case, &shm);
            let _live = live_worker(z, case.key);
            crash::counting();
            assert!(builder(z, 77));
        });
        let steps: Vec<_> = counted
            .iter()
            .filter(|(p, n)| *n > 0 && p.starts_with("publish."))
            .collect();
        for p in crash::POINTS.iter().filter(|p| p.starts_with("publish.")) {
            assert!(
                steps.iter().any(|(q, _)| q == p),
                "{}: {p} never reached",
                case.name
            );
        }
        for &&(point, n) in &steps {
            for nth in 1..=n {
                let z = zone_of(&case, &shm);
                let mut live = live_worker(z, case.key);
                let dead = die_at(point, nth, || builder(z, 0));
                // The next builder takes the lease over and publishes.
                let seq = z
                    .publish(LIVE, |pid| pid != dead)
                    .unwrap_or_else(|e| panic!("{point} #{nth}: {e:?}"));
                assert_eq!(z.generation(), seq);
                assert_eq!(
                    z.read(None).unwrap().table().confs()[1].weight,
                    3,
                    "{point} #{nth}"
                );
                assert!(!z.weights_pending(), "{point} #{nth}");
                check(
                    &case,
                    z,
                    &mut live,
                    &[dead],
                    &format!("builder killed at {point} #{nth}"),
                );
                runs += 1;
            }
        }
    }
    assert!(runs >= 12, "{runs}");
}

/// A builder applying a new server list (one leaves, two come) killed at
/// every step: the next builder takes the lease over, repairs the slots
/// (no phantom server LIVE outside the serving generation, none lost) and
/// applies the list.
#[test]
fn a_membership_change_killed_at_every_step_leaves_no_phantom() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let ids: Vec<Vec<u8>> = (0..6).map(|k| format!("srv{k}").into_bytes()).collect();
    let list = |which: &[usize]| -> Vec<PeerSpec<'_>> {
        which.iter().map(|&k| PeerSpec::new(&ids[k])).collect()
    };
    // srv1 leaves first; then srv2 leaves as three newcomers come, in a
    // zone of five slots: two FREE ones and srv1's, reused.
    let (before, mid, after) = (list(&[0, 1, 2]), list(&[0, 2]), list(&[0, 3, 4, 5]));
    let spec = |peers| UpstreamSpec {
        health: Default::default(),
        policy: Policy::RoundRobin,
        peers,
        schedule_room: 0,
        sessions: false,
    };
    let case = Case {
        name: "round_robin, resolved",
        policy: Policy::RoundRobin,
        peers: vec![],
        key: b"",
    };
    let shm = Shared::new(8 << 20);
    let zone = || {
        let s = spec(&before);
        assert!(write::zone_size_with(&s, 5).unwrap() <= shm.len);
        // SAFETY: the mapping is ours, `len` bytes, alive past every use.
        let z = unsafe { Zone::init_with(&s, 5, shm.ptr, shm.len) }.expect("zone fits");
        z.apply_membership(&spec(&mid), [1, 0], 76, |_| true, 5)
            .unwrap();
        z
    };
    let apply = |z: Zone<'_>, owner: u64, alive: &dyn Fn(u64) -> bool| {
        z.apply_membership(&spec(&after), [1, 1], owner, alive, 10)
            .is_ok()
    };
    let counted = hits(|| {
        let z = zone();
        let _live = live_worker(z, b"");
        crash::counting();
        assert!(apply(z, 77, &|_| true));
    });
    let steps: Vec<_> = counted
        .iter()
        .filter(|(p, n)| *n > 0 && (p.starts_with("apply.") || p.starts_with("publish.")))
        .collect();
    for p in crash::POINTS.iter().filter(|p| p.starts_with("apply.")) {
        assert!(steps.iter().any(|(q, _)| q == p), "{p} never reached");
    }
    let mut runs = 0;
    for &&(point, n) in &steps {
        for nth in 1..=n {
            let z = zone();
            let mut live = live_worker(z, b"");
            let dead = die_at(point, nth, || apply(z, pid(), &|_| true));
            let what = format!("apply killed at {point} #{nth}");
            assert!(apply(z, LIVE, &|pid| pid != dead), "{what}");
            let members: Vec<usize> = z.read(None).unwrap().table().members().iter().collect();
            let mut names: Vec<&[u8]> = members.iter().map(|&i| z.identity(i)).collect();
            names.sort();
            let mut want: Vec<&[u8]> = after.iter().map(|p| p.id).collect();
            want.sort();
            assert_eq!(names, want, "{what}");
            for i in 0..z.peers() {
                let live_slot = z.slot_status(i) == Some(write::membership::LIVE);
                assert_eq!(live_slot, members.contains(&i), "{what}: slot {i}");
            }
            // The live request's server may have left: it still ends.
            check(&case, z, &mut live, &[dead], &what);
            runs += 1;
        }
    }
    assert!(runs >= 9, "{runs}");
}

/// A server added through the API (into the slot of one removed before,
/// reused) and another removed, the builder killed at every step: the
/// next one takes the lease over and repairs the slots, and the same
/// calls then leave exactly the servers asked for, every LIVE slot in the
/// serving generation, and the API's count right (a half-added server
/// neither counts against `ha_api_max` nor stays LIVE).
#[test]
fn an_api_add_and_remove_killed_at_every_step_leave_no_phantom() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let ids: Vec<Vec<u8>> = (0..4).map(|k| format!("srv{k}").into_bytes()).collect();
    let configured = [PeerSpec::new(&ids[0])];
    let spec = UpstreamSpec {
        health: Default::default(),
        policy: Policy::RoundRobin,
        peers: &configured,
        schedule_room: 0,
        sessions: false,
    };
    let case = Case {
        name: "round_robin, ha_api_max 2",
        policy: Policy::RoundRobin,
        peers: vec![],
        key: b"",
    };
    let shm = Shared::new(8 << 20);
    // srv0 configured; srv1 and srv2 added, srv1 removed: its slot is
    // the only room left (capacity 3).
    let zone = || {
        assert!(write::zone_size_with(&spec, 3).unwrap() <= shm.len);
        // SAFETY: the mapping is ours, `len` bytes, alive past every use.
        let z = unsafe { Zone::init_api(&spec, 3, 2, shm.ptr, shm.len) }.expect("zone fits");
        let a1 = z
            .add_server(&PeerSpec::new(&ids[1]), 1, 76, |_| true)
            .unwrap();
        z.add_server(&PeerSpec::new(&ids[2]), 1, 76, |_| true)
            .unwrap();
        let m = z.listed(a1.slot).unwrap();
        z.remove_server(a1.slot, m, 1, 76, |_| true).unwrap();
        z
    };
    let live_slot = |z: Zone<'_>, id: &[u8]| {
        (0..z.peers())
            .find(|&i| z.slot_status(i) == Some(write::membership::LIVE) && z.identity(i) == id)
    };
    // srv3 added (srv1's slot reused), then srv2 removed; each step done
    // already by a builder killed after it counts as done.
    let change = |z: Zone<'_>, owner: u64, alive: &dyn Fn(u64) -> bool| {
        match z.add_server(&PeerSpec::new(&ids[3]), 10, owner, alive) {
            Ok(_) | Err(write::AddRefusal::Exists) => {}
            Err(_) => return false,
        }
        match live_slot(z, &ids[2]) {
            None => true,
            Some(i) => {
                let m = z.listed(i).unwrap();
                z.remove_server(i, m, 10, owner, alive).is_ok()
            }
        }
    };
    let counted = hits(|| {
        let z = zone();
        let _live = live_worker(z, b"");
        crash::counting();
        assert!(change(z, 77, &|_| true));
    });
    let steps: Vec<_> = counted
        .iter()
        .filter(|(p, n)| *n > 0 && (p.starts_with("apply.") || p.starts_with("publish.")))
        .collect();
    for p in crash::POINTS.iter().filter(|p| p.starts_with("apply.")) {
        assert!(steps.iter().any(|(q, _)| q == p), "{p} never reached");
    }
    let mut runs = 0;
    for &&(point, n) in &steps {
        for nth in 1..=n {
            let z = zone();
            let mut live = live_worker(z, b"");
            let dead = die_at(point, nth, || change(z, pid(), &|_| true));
            let what = format!("API change killed at {point} #{nth}");
            assert!(change(z, LIVE, &|pid| pid != dead), "{what}");
            let members: Vec<usize> = z.read(None).unwrap().table().members().iter().collect();
            let mut names: Vec<&[u8]> = members.iter().map(|&i| z.identity(i)).collect();
            names.sort();
            assert_eq!(names, [&ids[0][..], &ids[3][..]], "{what}");
            for i in 0..z.peers() {
                let live_slot = z.slot_status(i) == Some(write::membership::LIVE);
                assert_eq!(live_slot, members.contains(&i), "{what}: slot {i}");
            }
            assert_eq!(z.api_servers(), (1, 2), "{what}");
            let s3 = live_slot(z, &ids[3]).unwrap();
            assert!(z.added_through_api(s3), "{what}");
            check(&case, z, &mut live, &[dead], &what);
            runs += 1;
        }
    }
    assert!(runs >= 12, "{runs}");
}

/// A DNS change (a list from the resolve path) killed at every step in an
/// upstream with a server added through the API: once taken over, the
/// list is in force and the API's server is still a member, LIVE, marked.
#[test]
fn a_resolve_killed_at_every_step_keeps_the_api_server() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let ids: Vec<Vec<u8>> = ["srv0", "r1", "r2", "api"]
        .iter()
        .map(|k| k.as_bytes().to_vec())
        .collect();
    let configured = [PeerSpec::new(&ids[0])];
    let list = |which: &[usize]| -> Vec<PeerSpec<'_>> {
        which.iter().map(|&k| PeerSpec::new(&ids[k])).collect()
    };
    fn spec_of<'a>(peers: &'a [PeerSpec<'a>]) -> UpstreamSpec<'a> {
        UpstreamSpec {
            health: Default::default(),
            policy: Policy::RoundRobin,
            peers,
            schedule_room: 0,
            sessions: false,
        }
    }
    let case = Case {
        name: "round_robin, ha_resolve_max 2, ha_api_max 1",
        policy: Policy::RoundRobin,
        peers: vec![],
        key: b"",
    };
    let shm = Shared::new(8 << 20);
    // srv0 configured, r1 resolved, api added; capacity 1 + 2 + 1.
    let zone = || {
        let spec = spec_of(&configured);
        assert!(write::zone_size_with(&spec, 4).unwrap() <= shm.len);
        // SAFETY: the mapping is ours, `len` bytes, alive past every use.
        let z = unsafe { Zone::init_api(&spec, 4, 1, shm.ptr, shm.len) }.expect("zone fits");
        let first = list(&[0, 1]);
        z.apply_list(&spec_of(&first), [1, 1], 76, |_| true, 1)
            .unwrap();
        z.add_server(&PeerSpec::new(&ids[3]), 1, 76, |_| true)
            .unwrap();
        z
    };
    // The DNS change: r1 out, r2 in (a list done already by a builder
    // killed after publishing it is not applied again).
    let change = |z: Zone<'_>, owner: u64, alive: &dyn Fn(u64) -> bool| {
        let next = list(&[0, 2]);
        z.apply_list(&spec_of(&next), [2, 1], owner, alive, 10)
            .is_ok()
    };
    let counted = hits(|| {
        let z = zone();
        let _live = live_worker(z, b"");
        crash::counting();
        assert!(change(z, 77, &|_| true));
    });
    let steps: Vec<_> = counted
        .iter()
        .filter(|(p, n)| *n > 0 && (p.starts_with("apply.") || p.starts_with("publish.")))
        .collect();
    let mut runs = 0;
    for &&(point, n) in &steps {
        for nth in 1..=n {
            let z = zone();
            let mut live = live_worker(z, b"");
            let dead = die_at(point, nth, || change(z, pid(), &|_| true));
            let what = format!("resolve killed at {point} #{nth}");
            assert!(change(z, LIVE, &|pid| pid != dead), "{what}");
            let members: Vec<usize> = z.read(None).unwrap().table().members().iter().collect();
            let mut names: Vec<&[u8]> = members.iter().map(|&i| z.identity(i)).collect();
            names.sort();
            assert_eq!(names, [&ids[3][..], &ids[2][..], &ids[0][..]], "{what}");
            for i in 0..z.peers() {
                let live_slot = z.slot_status(i) == Some(write::membership::LIVE);
                assert_eq!(live_slot, members.contains(&i), "{what}: slot {i}");
            }
            assert_eq!(z.api_servers(), (1, 1), "{what}");
            let a = members
                .iter()
                .copied()
                .find(|&i| z.identity(i) == &ids[3][..])
                .unwrap();
            assert!(z.added_through_api(a), "{what}");
            check(&case, z, &mut live, &[dead], &what);
            runs += 1;
        }
    }
    assert!(runs >= 6, "{runs}");
}

/// Outlier ejection killed at every step (the budget taken, the flag set,
/// a flag cleared at the ejection's end), then the next ejector killed as
/// it takes the lease over: the budget is never lost. With `max_ejection`
/// at one server, a kill between taking the budget and setting the flag
/// used to disable ejection for good.
#[test]
fn an_ejector_killed_at_every_step_loses_no_budget() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let peers: Vec<PeerSpec<'static>> = (0..4).map(|k| PeerSpec::new(IDS[k])).collect();
    let health = HealthSpec {
        consecutive_errors: 1,
        base_ejection_ms: 1_000,
        max_ejection_percent: 1, // one server at most
        ..HealthSpec::default()
    };
    let spec = UpstreamSpec {
        health,
        policy: Policy::RoundRobin,
        peers: &peers,
        schedule_room: 0,
        sessions: false,
    };
    let shm = Shared::new(8 << 20);
    let zone = || {
        // SAFETY: the mapping is ours, `len` bytes, alive past every use.
        unsafe { Zone::init(&spec, shm.ptr, shm.len) }.expect("zone fits")
    };
    let mut words = vec![0u64; attempt::words(peers.len())];
    let words_ptr = words.as_mut_ptr();
    // One request that fails with a gateway error (an ejection), then the
    // health tick after the ejection is over (its end).
    let ejector = |z: Zone<'_>, owner: u64, alive: &dyn Fn(u64) -> bool, tick: bool| -> bool {
        let owner = if owner == 0 { pid() } else { owner };
        let Some(slot) = z.claim_slot(owner, alive) else {
            return false;
        };
        // SAFETY: the buffer made before fork, used by one process.
        let w = unsafe { core::slice::from_raw_parts_mut(words_ptr, attempt::words(4)) };
        let mut a = Attempt::init(w, 0);
        a.set_slot(Some(slot));
        if z.begin(&mut a).is_err() || z.get_keyed(&mut a, b"", 10).is_err() {
            return false;
        }
        let info = TryInfo {
            status: 502,
            header_ms: Some(1),
            sent: 0,
            received: 0,
        };
        let ok = z.free_with(&mut a, Outcome::Failed, &info, 20).is_ok();
        z.end(&mut a);
        if tick {
            let mut out = [0u32; 4];
            z.end_ejections(5_000, &mut out, Some(slot));
        }
        z.release_slot(slot, owner);
        ok
    };
    let ejected = |z: Zone<'_>| {
        z.states()
            .iter()
            .filter(|s| s.flags.load(Relaxed) & PeerState::EJECTED != 0)
            .count() as u32
    };
    let budget = |z: Zone<'_>| z.health_line().ejected.load(Relaxed);
    let counted = hits(|| {
        let z = zone();
        crash::counting();
        assert!(ejector(z, 77, &|_| true, true));
    });
    let steps: Vec<_> = counted
        .iter()
        .filter(|(p, n)| *n > 0 && p.starts_with("eject."))
        .collect();
    let mut runs = 0;
    let mut took_over = false;
    for &&(point, n) in &steps {
        for nth in 1..=n {
            for second in [false, true] {
                let z = zone();
                let first = die_at(point, nth, || ejector(z, 0, &|_| true, true));
                let what = format!("ejector killed at {point} #{nth}");
                assert!(budget(z) >= ejected(z), "{what}: budget below the flags");
                let mut dead = vec![first];
                if second {
                    // The next ejector takes the dead one's lease over and
                    // is killed right there.
                    dead.push(die_at("eject.taken_over", 1, || {
                        ejector(z, 0, &|p| p != first, false)
                    }));
                    took_over = true;
                }
                // A live worker reconciles the dead, ends what is over,
                // and can eject again (one server at most).
                let me = z.claim_slot(LIVE, |p| p == LIVE).unwrap();
                let mut out = [0u32; 4];
                z.end_ejections(1_000_000, &mut out, Some(me));
                assert_eq!((budget(z), ejected(z)), (0, 0), "{what}, then {dead:?}");
                let mut w = vec![0u64; attempt::words(4)];
                let mut a = Attempt::init(&mut w, 1_000_000);
                a.set_slot(Some(me));
                z.begin(&mut a).unwrap();
                z.get_keyed(&mut a, b"", 1_000_000).unwrap();
                let info = TryInfo {
                    status: 502,
                    header_ms: Some(1),
                    sent: 0,
                    received: 0,
                };
                let r = z
                    .free_with(&mut a, Outcome::Failed, &info, 1_000_001)
                    .unwrap();
                z.end(&mut a);
                assert!(r.ejection.is_some(), "{what}: no ejection possible after");
                assert_eq!((budget(z), ejected(z)), (1, 1), "{what}");
                z.release_slot(me, LIVE);
                runs += 1;
            }
        }
    }
    assert!(took_over && runs >= 6, "{runs}");
    for p in crash::POINTS.iter().filter(|p| p.starts_with("eject.")) {
        assert!(
            *p == "eject.taken_over" || steps.iter().any(|(q, _)| q == p),
            "{p} never reached"
        );
    }
}

/// A prober killed at every step of a verdict (mandatory checks, a panic
/// threshold): the panic flag is the truth of the flags again within
/// `REEVALUATE_MS` (a timer re-evaluates it once a second whether or not
/// the epoch moved; a kill between a flag and the epoch's bump used to
/// leave it stale until the next health change), and the next passing
/// verdicts clear every health bit.
#[test]
fn a_prober_killed_at_every_step_leaves_nothing_stale() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let peers: Vec<PeerSpec<'static>> = (0..3).map(|k| PeerSpec::new(IDS[k])).collect();
    let health = HealthSpec {
        panic_percent: 50,
        ..checks(HealthSpec::MANDATORY)
    };
    let spec = UpstreamSpec {
        health,
        policy: Policy::RoundRobin,
        peers: &peers,
        schedule_room: 0,
        sessions: false,
    };
    let shm = Shared::new(8 << 20);
    let zone = || {
        // SAFETY: the mapping is ours, `len` bytes, alive past every use.
        unsafe { Zone::init(&spec, shm.ptr, shm.len) }.expect("zone fits")
    };
    // Two servers fail their first check: one healthy of three, in panic.
    let prober = |z: Zone<'_>| {
        z.check_done_epoch(0, 0, None, false, 10).is_ok()
            && z.check_done_epoch(1, 0, None, false, 10).is_ok()
    };
    let truth = |z: Zone<'_>| {
        let healthy = z
            .states()
            .iter()
            .filter(|s| s.flags.load(Relaxed) & PeerState::HEALTH == 0)
            .count() as u64;
        healthy * 100 < 50 * 3
    };
    let counted = hits(|| {
        let z = zone();
        crash::counting();
        assert!(prober(z));
    });
    let steps: Vec<_> = counted
        .iter()
        .filter(|(p, n)| *n > 0 && p.starts_with("check."))
        .collect();
    for p in crash::POINTS.iter().filter(|p| p.starts_with("check.")) {
        assert!(steps.iter().any(|(q, _)| q == p), "{p} never reached");
    }
    let mut runs = 0;
    for &&(point, n) in &steps {
        for nth in 1..=n {
            let z = zone();
            // The live worker's timer looked at the epoch just before.
            let mut seen = z.health_epoch();
            let first = die_at(point, nth, || prober(z));
            let what = format!("prober {first} killed at {point} #{nth}");
            // The first verdict's bump (if it came) is seen at once; the
            // second's, if the kill took it, within REEVALUATE_MS.
            let mut tick = |now: u64| {
                if z.health_epoch() != seen || z.panic_due(now) {
                    seen = z.health_epoch();
                    z.update_panic();
                }
            };
            tick(20);
            tick(20 + hab_core::health::panic::REEVALUATE_MS);
            assert_eq!(z.in_panic(), truth(z), "{what}: panic flag stale");
            // Passing checks bring every server back.
            for now in [3_000, 4_000] {
                for i in 0..3 {
                    z.check_done(i, true, now).unwrap();
                }
            }
            tick(5_000);
            assert!(
                z.states()
                    .iter()
                    .all(|s| s.flags.load(Relaxed) & PeerState::HEALTH == 0),
                "{what}: a health bit left"
            );
            assert!(!z.in_panic(), "{what}");
            runs += 1;
        }
    }
    assert!(runs >= 6, "{runs}");
}

// ---------------------------------------------------------------------------
// Slot reuse against writers outside the builder lease: a check verdict and
// an API change, each interrupted (a crash point's hook, in this process)
// right where a builder may give the slot to a new server.

/// The zone the hooks below reuse a slot of.
static RACE_ZONE: core::sync::atomic::AtomicPtr<u8> =
    core::sync::atomic::AtomicPtr::new(core::ptr::null_mut());
/// What the hook's membership change answered: 0 not run, 1 applied,
/// 2 no slot to give (`NoSpace`), 3 lease busy, 4 anything else.
static RACE_RESULT: core::sync::atomic::AtomicU32 = core::sync::atomic::AtomicU32::new(0);

fn race_health() -> HealthSpec {
    checks(0)
}

/// p00, p02 and the newcomer p03, in a zone where p01's slot is the only
/// one p03 can take.
fn race_reuse() {
    // SAFETY: RACE_ZONE is the test's zone, alive while the hook may run.
    let z = unsafe { Zone::from_ptr(RACE_ZONE.load(Relaxed)) };
    let peers = [
        PeerSpec::new(IDS[0]),
        PeerSpec::new(IDS[2]),
        PeerSpec::new(IDS[3]),
    ];
    let spec = UpstreamSpec {
        health: race_health(),
        policy: Policy::RoundRobin,
        peers: &peers,
        schedule_room: 0,
        sessions: false,
    };
    let r = match z.apply_membership(&spec, [3, 0], 99, |_| true, 30) {
        Ok(_) => 1,
        Err(hab_core::Error::NoSpace) => 2,
        Err(hab_core::Error::Busy) => 3,
        Err(_) => 4,
    };
    RACE_RESULT.store(r, Relaxed);
}

/// p01 leaves (its slot RETIRING, named by no generation once the next
/// change reclaims the old one), then p03 comes (`race_reuse`).
fn race_retire_and_reuse() {
    // SAFETY: RACE_ZONE is the test's zone, alive while the hook may run.
    let z = unsafe { Zone::from_ptr(RACE_ZONE.load(Relaxed)) };
    race_list(z, &[0, 2], [2, 0]);
    race_reuse();
}

fn race_list(z: Zone<'_>, which: &[usize], source: [u64; 2]) {
    let peers: Vec<PeerSpec<'static>> = which.iter().map(|&k| PeerSpec::new(IDS[k])).collect();
    let spec = UpstreamSpec {
        health: race_health(),
        policy: Policy::RoundRobin,
        peers: &peers,
        schedule_room: 0,
        sessions: false,
    };
    z.apply_membership(&spec, source, 98, |_| true, 5).unwrap();
}

/// A zone of three slots for resolved servers (p00 configured, p01 and
/// p02 resolved) with checks, all three serving; with `retire`, p01 then
/// gone.
fn race_zone(shm: &Shared, retire: bool) -> Zone<'static> {
    let configured = [PeerSpec::new(IDS[0])];
    let spec = UpstreamSpec {
        health: race_health(),
        policy: Policy::RoundRobin,
        peers: &configured,
        schedule_room: 0,
        sessions: false,
    };
    // SAFETY: the mapping is ours, `len` bytes, alive past every use.
    let z = unsafe { Zone::init_with(&spec, 3, shm.ptr, shm.len) }.expect("zone fits");
    assert!(z.dynamic());
    race_list(z, &[0, 1, 2], [1, 0]);
    assert_eq!(z.identity(1), IDS[1]);
    if retire {
        race_list(z, &[0, 2], [2, 0]);
        assert_eq!(z.slot_status(1), Some(write::membership::RETIRING));
    }
    RACE_ZONE.store(z.as_ptr(), Relaxed);
    RACE_RESULT.store(0, Relaxed);
    z
}

/// The slot p03 ended in, and that nothing of p01's last check is on it.
fn newcomer_is_fresh(z: Zone<'_>, what: &str) {
    let i = (0..z.peers())
        .find(|&i| z.slot_status(i) == Some(write::membership::LIVE) && z.identity(i) == IDS[3])
        .unwrap_or_else(|| panic!("{what}: p03 has no slot"));
    let flags = z.states()[i].flags.load(Relaxed);
    assert_eq!(
        flags & PeerState::HEALTH,
        0,
        "{what}: p03 (slot {i}) took p01's failed check: flags {flags:#x}"
    );
    let checks = z.check_stats(i);
    assert_eq!(
        (checks.checks, checks.fails),
        (0, 0),
        "{what}: p03 counts p01's check"
    );
}

/// A verdict for p01 (its check started before p01 left) is interrupted
/// between its epoch comparison and its writes while a builder gives p01's
/// slot to p03. Before the writers mask, the failed verdict landed on p03:
/// unhealthy, and a failed check counted, for a server never checked. Now
/// the builder sees the writer and leaves the slot FREE (no slot to give:
/// p03 waits for the next change), and the next change gives it with
/// fresh state. Also for a worker without a ledger slot, which writes
/// under the builder lease (the builder then finds it busy).
#[test]
fn a_verdict_racing_a_slot_reuse_never_lands_on_the_new_server() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for ledger in [true, false] {
        let shm = Shared::new(8 << 20);
        let z = race_zone(&shm, true);
        let what = if ledger {
            "with a ledger slot"
        } else {
            "without one"
        };
        let slot = ledger.then(|| z.claim_slot(pid(), |_| true).unwrap());
        let epoch = z.slot_epoch(1).unwrap();
        assert!(crash::arm("check.compared", 1, race_reuse));
        let r = z.check_done_epoch(1, epoch, slot, false, 20).unwrap();
        crash::disarm();
        let raced = RACE_RESULT.load(Relaxed);
        assert_ne!(raced, 0, "{what}: the hook did not run");
        assert_ne!(raced, 1, "{what}: the slot was given while a verdict wrote");
        assert_eq!(raced, if ledger { 2 } else { 3 }, "{what}");
        assert_eq!(
            r.transition,
            hab_core::health::check::CheckTransition::Unhealthy
        );
        assert_eq!(z.health_rows()[1].writers.load(Relaxed), 0, "{what}");
        race_reuse();
        assert_eq!(RACE_RESULT.load(Relaxed), 1, "{what}: the next change");
        newcomer_is_fresh(z, what);
        // A verdict of p01 arriving now is dropped.
        let r = z.check_done_epoch(1, epoch, slot, false, 40).unwrap();
        assert_eq!(r.transition, hab_core::health::check::CheckTransition::None);
        newcomer_is_fresh(z, what);
        if let Some(s) = slot {
            z.release_slot(s, pid());
        }
    }
}

/// A prober killed between announcing itself and clearing its bit keeps
/// the slot from being given until its ledger slot is reconciled; then the
/// slot is given with fresh state.
#[test]
fn a_prober_killed_while_it_writes_holds_the_slot_until_reconciled() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let points = ["check.compared", "check.counted", "check.flagged"];
    for point in points {
        let shm = Shared::new(8 << 20);
        let z = race_zone(&shm, true);
        let epoch = z.slot_epoch(1).unwrap();
        let dead = die_at(point, 1, || {
            let slot = z.claim_slot(pid(), |_| true).unwrap();
            z.check_done_epoch(1, epoch, Some(slot), false, 20).is_ok()
        });
        let what = format!("prober killed at {point}");
        assert_ne!(z.health_rows()[1].writers.load(Relaxed), 0, "{what}");
        race_reuse();
        assert_eq!(RACE_RESULT.load(Relaxed), 2, "{what}: given with a writer");
        // The next worker to claim a ledger slot reconciles the dead one.
        let s = z.claim_slot(LIVE, |p| p != dead).unwrap();
        z.release_slot(s, LIVE);
        assert_eq!(z.health_rows()[1].writers.load(Relaxed), 0, "{what}");
        race_reuse();
        assert_eq!(RACE_RESULT.load(Relaxed), 1, "{what}");
        newcomer_is_fresh(z, &what);
    }
}

/// An API change of p01 is interrupted after its lookup while p01 leaves
/// and a builder gives its slot to p03 (a new id). Before the change
/// became one transaction under the lease, `{"down":true}` then landed on
/// p03; now it answers 404 and p03 is untouched.
#[test]
fn a_patch_racing_a_slot_reuse_changes_nothing() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for body in [r#"{"down":true}"#, r#"{"weight":7}"#, r#"{"drain":true}"#] {
        let shm = Shared::new(8 << 20);
        let z = race_zone(&shm, false);
        let pos = z.colds()[1].position.load(Relaxed);
        assert_eq!(z.by_position(pos).map(|(i, _)| i), Some(1));
        let ups = [hab_api::route::Upstream {
            name: "app",
            zone: z,
            learn: None,
        }];
        let path = format!("upstreams/app/servers/{pos}");
        let req = hab_api::route::Request {
            method: hab_api::route::Method::Patch,
            path: &path,
            query: "",
            html: false,
            body: body.as_bytes(),
            write: true,
            now_ms: 50,
            wall_ms: 0,
            owner: pid(),
            request_id: "",
            nginx: Default::default(),
        };
        assert!(crash::arm("admin.found", 1, race_retire_and_reuse));
        let r = hab_api::route::handle(&req, &ups, |_| true);
        crash::disarm();
        assert_eq!(
            RACE_RESULT.load(Relaxed),
            1,
            "{body}: the hook gave the slot"
        );
        assert_eq!(
            r.status,
            404,
            "{body}: {}",
            String::from_utf8_lossy(&r.body.to_vec())
        );
        let i = (0..z.peers()).find(|&i| z.identity(i) == IDS[3]).unwrap();
        let flags = z.states()[i].flags.load(Relaxed);
        assert_eq!(
            flags & (PeerState::ADMIN_DOWN | PeerState::DRAIN),
            0,
            "{body}: p03 took p01's change"
        );
        assert_eq!(
            z.colds()[i].weight_override.load(Relaxed),
            0,
            "{body}: p03 took p01's weight"
        );
    }
}

/// An API change killed at every step (looked up, checked under the
/// lease, its weight stored, the generation built or published): the
/// lease is taken over by the next change, which publishes what is
/// pending; no weight is left pending and ten publications succeed.
#[test]
fn an_api_change_killed_at_every_step_blocks_nothing() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let peers: Vec<PeerSpec<'static>> = (0..3).map(|k| PeerSpec::new(IDS[k])).collect();
    let spec = UpstreamSpec {
        health: Default::default(),
        policy: Policy::RoundRobin,
        peers: &peers,
        schedule_room: 0,
        sessions: false,
    };
    let shm = Shared::new(8 << 20);
    let zone = || {
        // SAFETY: the mapping is ours, `len` bytes, alive past every use.
        unsafe { Zone::init(&spec, shm.ptr, shm.len) }.expect("zone fits")
    };
    let change = |z: Zone<'_>, i: u32, w: u32, owner: u64, alive: &dyn Fn(u64) -> bool| {
        let Some((k, mark)) = z.by_position(i) else {
            return false;
        };
        let c = write::ServerChange {
            weight: Some(Some(w)),
            drain: Some(true),
            down: None,
        };
        z.change_server(k, mark, c, 10, owner, alive).is_ok()
    };
    let counted = hits(|| {
        let z = zone();
        crash::counting();
        assert!(change(z, 0, 5, 77, &|_| true));
    });
    let steps: Vec<_> = counted
        .iter()
        .filter(|(p, n)| *n > 0 && (p.starts_with("admin.") || p.starts_with("publish.")))
        .collect();
    for p in crash::POINTS.iter().filter(|p| p.starts_with("admin.")) {
        assert!(steps.iter().any(|(q, _)| q == p), "{p} never reached");
    }
    let mut runs = 0;
    for &&(point, n) in &steps {
        for nth in 1..=n {
            let z = zone();
            let dead = die_at(point, nth, || change(z, 0, 5, pid(), &|_| true));
            let what = format!("change killed at {point} #{nth}");
            assert!(change(z, 2, 3, LIVE, &|p| p != dead), "{what}");
            assert_eq!(z.sync().builder.load(Relaxed), 0, "{what}: lease kept");
            assert!(!z.weights_pending(), "{what}: a weight left pending");
            let w: Vec<u32> = z
                .read(None)
                .unwrap()
                .table()
                .confs()
                .iter()
                .map(|c| c.weight)
                .collect();
            assert_eq!(w[2], 3, "{what}");
            // The dead change is in force or not at all, never half.
            assert!(w[0] == 5 || w[0] == 1, "{what}: {w:?}");
            for k in 0..10 {
                z.publish(LIVE, |_| true)
                    .unwrap_or_else(|e| panic!("{what}: publication {k} refused: {e:?}"));
            }
            runs += 1;
        }
    }
    assert!(runs >= 5, "{runs}");
}

/// A prober killed right after taking a check (its due time moved one
/// interval on, the check never sent): the check is lost for that interval
/// only. Its worker's replacement (nginx respawns the same worker number)
/// takes it at the new due time; any other worker once it is overdue by
/// the interval plus the timeout, and not before.
#[test]
fn a_prober_killed_after_taking_a_check_loses_one_interval_at_most() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let peers: Vec<PeerSpec<'static>> = (0..4).map(|k| PeerSpec::new(IDS[k])).collect();
    let health = checks(HealthSpec::MANDATORY);
    let spec = UpstreamSpec {
        health,
        policy: Policy::RoundRobin,
        peers: &peers,
        schedule_room: 0,
        sessions: false,
    };
    let shm = Shared::new(8 << 20);
    let zone = || {
        // SAFETY: the mapping is ours, `len` bytes, alive past every use.
        unsafe { Zone::init(&spec, shm.ptr, shm.len) }.expect("zone fits")
    };
    // Worker 0 of 2 owns peers 0 and 2; `mandatory`: due at once.
    let claim = |z: Zone<'_>, worker: u32, now: u64| -> Vec<u32> {
        let mut out = [0u32; 4];
        let (n, _) = z.claim_checks(worker, 2, now, 7, false, &mut out);
        out[..n].to_vec()
    };
    let counted = hits(|| {
        let z = zone();
        crash::counting();
        assert_eq!(claim(z, 0, 100), [0, 2]);
    });
    let n = counted
        .iter()
        .find(|(p, _)| *p == "claim.taken")
        .map_or(0, |h| h.1);
    assert_eq!(n, 2);
    for nth in 1..=n {
        let z = zone();
        let _dead = die_at("claim.taken", nth, || !claim(z, 0, 100).is_empty());
        let what = format!("prober killed at claim.taken #{nth}");
        // Worker 1 never takes worker 0's peers before they are overdue
        // by interval + timeout past their new due time (1,100).
        let mut full = [0u32; 4];
        let (k, _) = z.claim_checks(1, 2, 2_599, 7, true, &mut full);
        assert!(
            full[..k].iter().all(|&p| p % 2 == 1),
            "{what}: taken early: {:?}",
            &full[..k]
        );
        // The respawned worker 0 takes peer 0 (the check the dead one
        // took) at its new due time, not later (peer 2 at once when the
        // kill came before its claim).
        let early = claim(z, 0, 1_099);
        assert!(!early.contains(&0), "{what}: {early:?}");
        assert_eq!(early.contains(&2), nth == 1, "{what}: {early:?}");
        assert!(claim(z, 0, 1_100).contains(&0), "{what}");
        // Or, with no worker 0 any more, worker 1 at 1,100 + 1,500.
        let z = zone();
        let _dead = die_at("claim.taken", nth, || !claim(z, 0, 100).is_empty());
        let (k, _) = z.claim_checks(1, 2, 2_600, 7, true, &mut full);
        let mut got: Vec<u32> = full[..k].to_vec();
        got.sort();
        // Peer 0 or 2 whose claim the kill interrupted is among them
        // (peer 2 was not taken at all when the kill came at #1).
        assert!(got.contains(&0), "{what}: {got:?}");
    }
}

/// A worker killed while it counts a try in its statistics rows (plain
/// stores, its own rows), at each step: the counts it stored stay, the
/// rest of that one try is lost, nothing is counted twice, and the next
/// owner of the slot counts on top (no counter steps back). Every response
/// is in the latency histograms (its class and its buckets are stored
/// before any of these steps); the window of recent responses lacks at
/// most the killed one (a kill while the row moves to a new window leaves
/// the window's end unmoved: the next owner moves it again).
#[test]
fn a_worker_killed_while_it_counts_loses_at_most_one_try() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let case = &cases()[0];
    let shm = Shared::new(4 << 20);
    let mut b = Buffers::new(case.peers.len());
    let sum = |z: Zone<'_>, f: &dyn Fn(usize) -> u64| -> u64 { (0..z.peers()).map(f).sum() };
    let requests = |z: Zone<'_>| sum(z, &|i| z.stats(i, 100).unwrap().requests);
    let responses = |z: Zone<'_>| sum(z, &|i| z.stats(i, 100).unwrap().responses_total());
    // Every time of the run is under the first bound (5 ms) but one (7 ms,
    // the second): the finite buckets hold every response.
    let in_buckets = |z: Zone<'_>, header: bool| {
        sum(z, &|i| {
            let s = z.stats(i, 100).unwrap();
            let h = if header {
                s.header_hist
            } else {
                s.response_hist
            };
            h.iter().sum()
        })
    };
    let recent = |z: Zone<'_>| sum(z, &|i| z.recent(i, 100).responses());
    let counted = hits(|| {
        let z = zone_of(case, &shm);
        crash::counting();
        assert!(worker(z, case.key, 77, &mut b));
    });
    let hit = |point| counted.iter().find(|(p, _)| *p == point).map_or(0, |h| h.1);
    let n = hit("stats.requests");
    assert!(n >= 3, "{n} tries counted");
    // A full run's responses, and the window moved once (its first).
    let full = {
        let z = zone_of(case, &shm);
        assert!(worker(z, case.key, 77, &mut b));
        responses(z)
    };
    assert!(full >= 2, "{full} responses in a run");
    assert_eq!(u64::from(hit("stats.histogram")), full);
    assert_eq!(hit("stats.window"), 1);
    for point in ["stats.requests", "stats.histogram", "stats.window"] {
        for nth in 1..=hit(point) {
            let z = zone_of(case, &shm);
            let dead = die_at(point, nth, || worker(z, case.key, 0, &mut b));
            let what = format!("killed at {point} #{nth}");
            if point == "stats.requests" {
                assert_eq!(requests(z), u64::from(nth), "{what}: tries counted");
            }
            // Reconciled by the next claim; a new worker takes the same
            // slot and counts on top of the dead one's rows.
            let s = z.claim_slot(LIVE + 6, |p| p != dead).unwrap();
            z.release_slot(s, LIVE + 6);
            let before = (requests(z), responses(z));
            assert!(worker(z, case.key, LIVE + 5, &mut b), "{what}");
            assert_eq!(
                z.sync().rows_used.load(Relaxed),
                1,
                "{what}: one slot's rows"
            );
            assert_eq!(
                (requests(z), responses(z)),
                (before.0 + u64::from(n), before.1 + full),
                "{what}: after a full run"
            );
            for i in 0..z.peers() {
                let s = z.stats(i, 100).unwrap();
                assert!(s.responses_total() <= s.requests, "{what}: peer {i}: {s:?}");
            }
            let all = responses(z);
            assert_eq!(in_buckets(z, false), all, "{what}: response histogram");
            assert_eq!(in_buckets(z, true), all, "{what}: header histogram");
            let window = recent(z);
            assert!(
                window <= all && all - window <= 1,
                "{what}: {window} in the window of {all} responses"
            );
        }
    }
}

/// The learn table of the kill test: 64 records (16 buckets).
const LEARN_N: u64 = 64;

/// Session `k`'s fingerprint (no allocation: children call it).
fn lfp(k: u64) -> u64 {
    learn::fingerprint(&k.to_le_bytes())
}

/// Session `k`'s server, version `v`: the key above the version.
fn lsid(k: u64, v: u64) -> u64 {
    (k << 8) | v
}

/// A learn table in `shm`, holding sessions 0..60 (version 1) learnt at
/// 1,000 ms: appends 1..=60 of a 64-record ring.
fn learn_table(shm: &Shared) -> Sessions<'static> {
    // SAFETY: the mapping is ours, `len` bytes, alive past every use (the
    // test drops it after the last).
    let t = unsafe { Sessions::init(shm.ptr, shm.len, 60_000) }.expect("table fits");
    assert_eq!(t.capacity() as u64, LEARN_N);
    for k in 0..60 {
        assert_eq!(t.learn(lfp(k), lsid(k, 1), 1_000, true), Learnt::Created);
    }
    t
}

/// A worker's learns: creates 60..70 (appends 61..=70; the ring laps, the
/// records of 0..=5 are overwritten and their ways cleared), refreshes 55
/// (young: in place), moves 57 to version 2 (append 71, overwriting 6's),
/// renews 12 (in the old half: append 72, overwriting 7's). Every learn
/// step is on this path. `false` if a learn did something else.
fn learner(t: Sessions<'_>) -> bool {
    let mut ok = true;
    for k in 60..70 {
        ok &= t.learn(lfp(k), lsid(k, 1), 1_001, true) == Learnt::Created;
    }
    ok &= t.learn(lfp(55), lsid(55, 1), 1_002, false) == Learnt::Refreshed;
    ok &= t.learn(lfp(57), lsid(57, 2), 1_002, true) == Learnt::Moved;
    ok &= t.learn(lfp(12), lsid(12, 1), 1_002, false) == Learnt::Renewed;
    ok
}

/// The sessions found with version 1 in `t` at 1,002 ms, among 0..70.
fn found_v1(t: Sessions<'_>) -> Vec<u64> {
    (0..70)
        .filter(|&k| t.lookup(lfp(k), 1_002) == Some(lsid(k, 1)))
        .collect()
}

/// `created - (entries + evicted + expired)`: 0 when every count landed;
/// a kill between a CAS and its count leaves one count out.
fn learn_balance(t: Sessions<'_>, now: u64) -> i64 {
    let s = t.stats(now);
    s.created as i64 - (s.entries + s.evicted + s.expired) as i64
}

/// A learner killed at every step of every learn (an append number
/// taken, the overwritten record's way cleared, half the record written,
/// all of it, the way installed or moved, a refresh in place), at every
/// occurrence its learns reach. After each kill: every lookup answers
/// nothing or a server learnt for that session; the sessions nobody
/// touched are all there; the counts add up within the one count a kill
/// may lose; every session of the learner's can be learnt again and is
/// then found; and four laps of new sessions work (no slot is left
/// unusable) and keep the newest, with no entry of before left.
#[test]
fn a_learner_killed_at_every_step_leaves_the_table_usable() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let shm = Shared::new(4096);
    let started = std::time::Instant::now();
    let (counted, untouched) = {
        let t = learn_table(&shm);
        let before = found_v1(t);
        let counted = hits(|| {
            crash::counting();
            assert!(learner(t), "the learner's learns");
        });
        assert_eq!(learn_balance(t, 1_002), 0);
        // Untouched by the learner, in place before and after it.
        let after = found_v1(t);
        let touched = |k: &u64| *k >= 60 || [12, 55, 57].contains(k);
        let untouched: Vec<u64> = before
            .into_iter()
            .filter(|k| after.contains(k) && !touched(k))
            .collect();
        (counted, untouched)
    };
    assert!(untouched.len() > 40, "{untouched:?}");
    let steps: Vec<_> = counted
        .iter()
        .filter(|(p, n)| *n > 0 && p.starts_with("learn."))
        .collect();
    for p in crash::POINTS.iter().filter(|p| p.starts_with("learn.")) {
        assert!(steps.iter().any(|(q, _)| q == p), "{p} never reached");
    }
    let mut runs = 0;
    for &&(point, n) in &steps {
        for nth in 1..=n {
            let what = format!("learner killed at {point} #{nth}");
            let t = learn_table(&shm);
            die_at(point, nth, || learner(t));
            for k in 0..70 {
                if let Some(s) = t.lookup(lfp(k), 1_002) {
                    let ok = s == lsid(k, 1) || (k == 57 && s == lsid(57, 2));
                    assert!(ok, "{what}: session {k} answered {s:#x}");
                }
            }
            for &k in &untouched {
                assert_eq!(
                    t.lookup(lfp(k), 1_002),
                    Some(lsid(k, 1)),
                    "{what}: session {k} lost"
                );
            }
            let b = learn_balance(t, 1_002);
            assert!(
                b.abs() <= 1,
                "{what}: counts off by {b}: {:?}",
                t.stats(1_002)
            );
            // The learner's sessions learnt again: found at once.
            let again = (60..70).map(|k| (k, 1)).chain([(55, 1), (57, 2), (12, 1)]);
            for (k, v) in again {
                let r = t.learn(lfp(k), lsid(k, v), 1_003, true);
                assert_ne!(r, Learnt::Raced, "{what}: session {k}");
                assert_ne!(r, Learnt::Ignored, "{what}: session {k}");
                assert_eq!(
                    t.lookup(lfp(k), 1_003),
                    Some(lsid(k, v)),
                    "{what}: session {k} learnt again ({r:?})"
                );
            }
            // Four laps of new sessions.
            let fresh = 1_000..1_000 + 4 * LEARN_N;
            for k in fresh.clone() {
                let r = t.learn(lfp(k), lsid(k, 1), 1_004, true);
                assert_eq!(r, Learnt::Created, "{what}: new session {k}");
            }
            for k in fresh.end - LEARN_N / 4..fresh.end {
                assert_eq!(
                    t.lookup(lfp(k), 1_004),
                    Some(lsid(k, 1)),
                    "{what}: new session {k}"
                );
            }
            let mut live = 0;
            t.for_each_live(1_004, |fp, sid, _| {
                let k = sid >> 8;
                assert!(fresh.contains(&k) && fp == lfp(k), "{what}: {k} left");
                live += 1;
            });
            assert!(live >= LEARN_N / 2, "{what}: {live} live");
            let b = learn_balance(t, 1_004);
            assert!(b.abs() <= 1, "{what}: counts off by {b} after four laps");
            runs += 1;
        }
    }
    eprintln!(
        "{runs} learners killed, one at each step, in {:?}",
        started.elapsed()
    );
    assert!(runs >= 40, "{runs}");
}

/// The queue of the waiter test: 8 waiters, 16 cells.
const QUEUE_MAX: u32 = 8;

/// The live worker's and the waiter's ledger slots.
const Q_LIVE: u32 = 0;
const Q_DEAD: u32 = 1;

/// The owner the waiter's ledger slot is claimed for (before the fork:
/// its death is what `alive` says of this owner).
const Q_DEAD_OWNER: u64 = 4_000_000_001;

/// A zone with a queue of [`QUEUE_MAX`] waiters in `shm`, the live
/// worker's ledger slot and the waiter's claimed (0 and 1), the queue
/// holding ticket 0 of the waiter (entered before the fork, as the
/// waiter itself would have) and ticket 1 of the live worker, behind it;
/// the server (`max_conns=1`, a word in `shm` after the zone) free.
fn waiter_queue(shm: &Shared) -> (Zone<'static>, Ticket, Ticket, &'static AtomicU32) {
    let peers = [PeerSpec::new(IDS[0])];
    let spec = UpstreamSpec {
        health: HealthSpec {
            queue: QUEUE_MAX,
            ..HealthSpec::default()
        },
        policy: Policy::RoundRobin,
        peers: &peers,
        schedule_room: 0,
        sessions: false,
    };
    let size = write::zone_size(&spec).unwrap();
    assert!(size + 64 <= shm.len);
    // SAFETY: the mapping is ours, `len` bytes, alive past every use (the
    // test drops it after the last).
    let z = unsafe { Zone::init(&spec, shm.ptr, size) }.expect("zone fits");
    assert_eq!(z.claim_slot(LIVE, |_| true), Some(Q_LIVE));
    assert_eq!(z.claim_slot(Q_DEAD_OWNER, |_| true), Some(Q_DEAD));
    let q = z.queue().expect("a queue");
    assert_eq!(q.max(), QUEUE_MAX);
    // SAFETY: the word after the zone, inside the mapping, aligned.
    let server = unsafe { &*shm.ptr.add(size.next_multiple_of(64)).cast::<AtomicU32>() };
    server.store(0, Relaxed);
    let Enter::Queued {
        ticket: mine,
        head: true,
    } = q.enter(Q_DEAD, 1)
    else {
        panic!("the waiter's ticket is the head");
    };
    let Enter::Queued {
        ticket: live,
        head: false,
    } = q.enter(Q_LIVE, 2)
    else {
        panic!("the live ticket waits");
    };
    (z, mine, live, server)
}

/// The zone's reconciliation of the waiter's slot, as the live worker's
/// next claim runs it: every owner but the live worker is dead (the
/// waiter, and a reconciler killed half-way).
fn reconcile_dead(z: Zone<'_>) -> bool {
    z.claim_slot(LIVE + 1, |pid| pid == LIVE || pid == LIVE + 1)
        .is_some()
}

/// The waiter's run: its head ticket picks the server (the queue's
/// `try`, the pick a `max_conns=1` compare-and-swap) and leaves, waking
/// the live worker; then it enters twice more, behind the live ticket,
/// and its last ticket times out. It dies holding the server and one
/// ticket. Every step of entering and leaving is on this path. `false`
/// if something else happened.
fn waiter(z: Zone<'_>, mine: Ticket, server: &AtomicU32) -> bool {
    let Some(q) = z.queue() else {
        return false;
    };
    let pick = || {
        server
            .compare_exchange(0, 1, Relaxed, Relaxed)
            .is_ok()
            .then_some(())
    };
    let Try::Picked((), Some(w)) = q.try_pick(mine, 0, pick) else {
        return false;
    };
    let mut ok = w.slot == Q_LIVE;
    let mut more = [None; 2];
    for m in &mut more {
        if let Enter::Queued {
            ticket,
            head: false,
        } = q.enter(Q_DEAD, 3)
        {
            *m = Some(ticket);
        }
    }
    ok &= more.iter().all(Option::is_some);
    if let Some(t) = more[1] {
        ok &= q.leave(t, Leave::Timeout).is_none();
    }
    ok
}

/// The invariants of queue-design.md §2.5 once the dead slot is
/// reconciled and the head kicked: `size` equals the ledger's exact sum
/// and the `WAITING` cells, no cell of the dead waits, the head waits (or
/// the queue is empty), the live ticket is still there and becomes the
/// head; then the queue keeps draining: 2·cap rounds of entering and
/// picking succeed.
fn queue_check(z: Zone<'_>, live: Ticket, server: &AtomicU32, what: &str) {
    let q = z.queue().expect("a queue");
    let owner = z.ledger_slot(Q_DEAD as usize).unwrap().0.load(Relaxed);
    assert!(
        owner == 0 || owner == LIVE + 1,
        "{what}: the waiter's slot left as {owner:#x}"
    );
    let _ = q.kick();
    let a = q.audit();
    assert_eq!(a.size, a.ledger_sum, "{what}: {a:?}");
    assert_eq!(a.size, a.waiting.iter().sum::<u32>(), "{what}: {a:?}");
    assert_eq!(
        a.waiting[Q_DEAD as usize], 0,
        "{what}: the dead still waits"
    );
    assert_eq!(a.waiting[Q_LIVE as usize], 1, "{what}: the live ticket");
    assert_eq!(a.size, 1, "{what}: {a:?}");
    assert!(a.head_waiting, "{what}: {a:?}");
    // The dead's in-flight request is returned by the ledger (flight.rs's
    // business, tested above): here, the server word freed.
    server.store(0, Relaxed);
    q.woken(Q_LIVE);
    let pick = || {
        server
            .compare_exchange(0, 1, Relaxed, Relaxed)
            .is_ok()
            .then_some(())
    };
    assert!(
        matches!(q.try_pick(live, 0, pick), Try::Picked((), None)),
        "{what}: the live ticket picks"
    );
    server.store(0, Relaxed);
    for k in 0..2 * q.cap() {
        let Enter::Queued { ticket, head } = q.enter(Q_LIVE, 10) else {
            panic!("{what}: round {k} refused");
        };
        assert!(head, "{what}: round {k} is not the head");
        assert!(matches!(q.try_pick(ticket, 0, pick), Try::Picked((), None)));
        server.store(0, Relaxed);
    }
    let a = q.audit();
    assert_eq!(
        (a.size, a.ledger_sum, a.head),
        (0, 0, a.tail),
        "{what}: {a:?}"
    );
}

/// A waiter killed at every step of entering and leaving the queue (its
/// size counted, its cell claimed, `tail` published; its cell gone, its
/// size released, the head helped on), at every occurrence its run
/// reaches; then the test's worker reconciles its slot through the
/// zone's reconciliation (its next ledger claim: `ledger::reconcile`,
/// then the queue's R1-R3) and checks the invariants of §2.5. Then, after
/// a kill at the middle occurrence of each step, the reconciler is killed
/// at each of its own steps (the ledger's and the queue's) and the test's
/// worker takes the reconciliation over.
#[test]
fn a_waiter_killed_at_every_step_blocks_nothing() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let shm = Shared::new(4 << 20);
    let started = std::time::Instant::now();
    let counted = hits(|| {
        let (z, mine, _, server) = waiter_queue(&shm);
        crash::counting();
        assert!(waiter(z, mine, server), "the waiter's run");
    });
    let steps: Vec<_> = counted
        .iter()
        .filter(|(p, n)| *n > 0 && p.starts_with("queue."))
        .collect();
    for p in crash::POINTS.iter().filter(|p| p.starts_with("queue.")) {
        assert!(steps.iter().any(|(q, _)| q == p), "{p} never reached");
    }
    // A queue left blocked makes the checks spin (an enterer waits for a
    // cell nobody frees): bounded, as the children are, by a watchdog
    // that fails the whole binary after 30 s without progress.
    let progress = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let watched = progress.clone();
    let watchdog = std::thread::spawn(move || {
        let mut last = (u64::MAX, std::time::Instant::now());
        loop {
            std::thread::sleep(std::time::Duration::from_millis(50));
            let p = watched.load(Relaxed);
            if p == u64::MAX {
                return;
            }
            if p != last.0 {
                last = (p, std::time::Instant::now());
            } else if last.1.elapsed() > std::time::Duration::from_secs(30) {
                eprintln!("a_waiter_killed_at_every_step_blocks_nothing: check {p} hung 30 s");
                std::process::abort();
            }
        }
    });
    let mut runs = 0;
    let mut reconciler_runs = 0;
    let mut reconcile_reached = Vec::new();
    for &&(point, n) in &steps {
        for nth in 1..=n {
            let what = format!("waiter killed at {point} #{nth}");
            let (z, mine, live, server) = waiter_queue(&shm);
            die_at(point, nth, || waiter(z, mine, server));
            assert!(reconcile_dead(z), "{what}: no slot");
            queue_check(z, live, server, &what);
            runs += 1;
            progress.fetch_add(1, Relaxed);
        }
        // The reconciler killed at each of its steps after the middle
        // occurrence; the test's worker takes over.
        let nth = n.div_ceil(2);
        let rcounted = hits(|| {
            let (z, mine, _, server) = waiter_queue(&shm);
            die_at(point, nth, || waiter(z, mine, server));
            crash::counting();
            reconcile_dead(z);
        });
        let rsteps: Vec<_> = rcounted
            .iter()
            .filter(|(p, n)| *n > 0 && p.starts_with("reconcile."))
            .collect();
        reconcile_reached.extend(rsteps.iter().map(|(p, _)| *p));
        for &&(rpoint, rn) in &rsteps {
            for rnth in 1..=rn {
                let what =
                    format!("waiter killed at {point} #{nth}, reconciler at {rpoint} #{rnth}");
                let (z, mine, live, server) = waiter_queue(&shm);
                die_at(point, nth, || waiter(z, mine, server));
                die_at(rpoint, rnth, || {
                    z.claim_slot(2000, |pid| pid != Q_DEAD_OWNER).is_some()
                });
                assert!(reconcile_dead(z), "{what}: no slot");
                queue_check(z, live, server, &what);
                reconciler_runs += 1;
                progress.fetch_add(1, Relaxed);
            }
        }
    }
    progress.store(u64::MAX, Relaxed);
    watchdog.join().unwrap();
    for p in crash::POINTS
        .iter()
        .filter(|p| p.starts_with("reconcile.queue."))
    {
        assert!(reconcile_reached.contains(p), "{p} never reached");
    }
    eprintln!(
        "{runs} waiters killed, one at each step, and {reconciler_runs} reconcilers, in {:?}",
        started.elapsed()
    );
    assert!(runs >= 6, "{runs}");
    assert!(reconciler_runs >= 6, "{reconciler_runs}");
}
