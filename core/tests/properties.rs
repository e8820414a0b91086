//! Property tests of the core: random interleavings of requests, failures,
//! time, admin changes, weight changes (new generations), active check
//! results, outlier ejections, slow starts, panic and worker deaths across
//! simulated workers on one zone; the same with membership changes (peer
//! slots coming, going and reused); nginx's round robin for random
//! weights; attaching to arbitrary bytes.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;

use hab_core::attempt::{self, Attempt};
use hab_core::health::Transition;
use hab_core::health::{self, Eligibility, Mode};
use hab_core::layout::stats::TryInfo;
use hab_core::layout::Zone;
use hab_core::layout::{PeerState, BACKUP, PRIMARY};
use hab_core::spec::{HashMode, HealthSpec};
use hab_core::testing::{OwnedTable, Region};
use hab_core::write::membership::{FREE, LIVE};
use hab_core::{Error, Outcome, PeerSpec, Policy, UpstreamSpec};
use proptest::prelude::*;

const PEERS: usize = 5;
/// Peers of the least_conn tree property (above the tree's 32), backups
/// among them.
const LC_PEERS: usize = 40;
const LC_BACKUPS: usize = 4;
const WORKERS: u64 = 3;

fn policies() -> impl Strategy<Value = Policy> {
    prop_oneof![
        Just(Policy::RoundRobin),
        Just(Policy::LeastConn),
        Just(Policy::P2c),
        Just(Policy::Ewma { decay_ms: 1_000 }),
        Just(Policy::Random),
        Just(Policy::Hash {
            mode: HashMode::Plain,
            balance_factor: 0,
            maglev_size: 0
        }),
        Just(Policy::Hash {
            mode: HashMode::Consistent,
            balance_factor: 0,
            maglev_size: 0
        }),
        Just(Policy::Hash {
            mode: HashMode::Maglev,
            balance_factor: 0,
            maglev_size: 0
        }),
        Just(Policy::Hash {
            mode: HashMode::Consistent,
            balance_factor: 150,
            maglev_size: 0
        }),
    ]
}

#[derive(Debug, Clone)]
enum Op {
    /// Worker `w` starts a request in its attempt `a` (ends the one there).
    Begin { w: u64, a: usize },
    /// A try of that request (if one can be made).
    Pick { w: u64, a: usize, key: u8 },
    /// The try in progress ends.
    Release { w: u64, a: usize, outcome: u8 },
    /// Time passes.
    Advance { ms: u64 },
    /// The API changes a server.
    Admin {
        peer: usize,
        down: Option<bool>,
        drain: Option<bool>,
    },
    /// A weight change: a new generation.
    Weight { peer: usize, weight: Option<u32> },
    /// Worker `w` is killed; its replacement reconciles.
    Kill { w: u64 },
    /// An active check of `peer` ends.
    Check { peer: usize, passed: bool },
    /// A worker's health timer: ejections end, panic is re-evaluated.
    Tick,
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    ops_over(PEERS)
}

fn ops_over(peers: usize) -> impl Strategy<Value = Vec<Op>> {
    let w = 0..WORKERS;
    let a = 0usize..3;
    let op = prop_oneof![
        3 => (w.clone(), a.clone()).prop_map(|(w, a)| Op::Begin { w, a }),
        6 => (w.clone(), a.clone(), any::<u8>()).prop_map(|(w, a, key)| Op::Pick { w, a, key }),
        5 => (w.clone(), a.clone(), 0u8..3).prop_map(|(w, a, outcome)| Op::Release { w, a, outcome }),
        2 => (0u64..15_000).prop_map(|ms| Op::Advance { ms }),
        1 => (0..peers, proptest::option::of(any::<bool>()), proptest::option::of(any::<bool>()))
            .prop_map(|(peer, down, drain)| Op::Admin { peer, down, drain }),
        1 => (0..peers, proptest::option::of(1u32..6)).prop_map(|(peer, weight)| Op::Weight { peer, weight }),
        1 => w.prop_map(|w| Op::Kill { w }),
        2 => (0..peers, any::<bool>()).prop_map(|(peer, passed)| Op::Check { peer, passed }),
        1 => Just(Op::Tick),
    ];
    proptest::collection::vec(op, 1..120)
}

/// Identities membership changes draw from, slots of the zone, and
/// configured peers.
const POOL: usize = 8;
const CAPACITY: usize = 6;
const CONFIGURED: usize = 4;

#[derive(Debug, Clone)]
enum MemberOp {
    /// As in the static interleavings (peers are slots).
    Base(Op),
    /// The peer list becomes the identities in `mask`, rotated by `rot`.
    Members { mask: u8, rot: u8 },
}

fn member_ops() -> impl Strategy<Value = Vec<MemberOp>> {
    let w = 0..WORKERS;
    let a = 0usize..3;
    let op = prop_oneof![
        3 => (w.clone(), a.clone()).prop_map(|(w, a)| MemberOp::Base(Op::Begin { w, a })),
        6 => (w.clone(), a.clone(), any::<u8>()).prop_map(|(w, a, key)| MemberOp::Base(Op::Pick { w, a, key })),
        5 => (w.clone(), a.clone(), 0u8..3).prop_map(|(w, a, outcome)| MemberOp::Base(Op::Release { w, a, outcome })),
        2 => (0u64..15_000).prop_map(|ms| MemberOp::Base(Op::Advance { ms })),
        1 => (0..CAPACITY, proptest::option::of(any::<bool>()), proptest::option::of(any::<bool>()))
            .prop_map(|(peer, down, drain)| MemberOp::Base(Op::Admin { peer, down, drain })),
        1 => (0..CAPACITY, proptest::option::of(1u32..6)).prop_map(|(peer, weight)| MemberOp::Base(Op::Weight { peer, weight })),
        1 => w.prop_map(|w| MemberOp::Base(Op::Kill { w })),
        2 => (0..CAPACITY, any::<bool>()).prop_map(|(peer, passed)| MemberOp::Base(Op::Check { peer, passed })),
        1 => Just(MemberOp::Base(Op::Tick)),
        3 => (any::<u8>(), any::<u8>()).prop_map(|(mask, rot)| MemberOp::Members { mask, rot }),
    ];
    proptest::collection::vec(op, 1..150)
}

/// One simulated worker: a pid, its ledger slot, three attempt buffers.
struct Worker {
    pid: u64,
    slot: Option<u32>,
    attempts: Vec<Option<Vec<u64>>>,
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn interleavings_keep_in_flight_and_statistics_exact_and_picks_eligible(
        policy in policies(),
        weights in proptest::collection::vec(1u32..5, PEERS),
        max_conns in proptest::collection::vec(0u32..3, PEERS),
        health in any::<bool>(),
        ops in ops(),
    ) {
        let ids: Vec<Vec<u8>> = (0..PEERS).map(|i| format!("up\0s{i}:80\0127.0.0.1:{i}").into_bytes()).collect();
        let peers: Vec<PeerSpec<'_>> = ids.iter().enumerate().map(|(i, id)| PeerSpec {
            max_conns: max_conns[i],
            max_fails: 2,
            fail_timeout_ms: 5_000,
            ..PeerSpec::new(id).weight(weights[i])
        }).collect();
        // Half the cases with every health feature: checks (a result
        // decides at once), ejection after two gateway errors in a row,
        // slow start, panic below 50%.
        let health = if health {
            HealthSpec {
                flags: HealthSpec::CHECK,
                interval_ms: 1_000,
                timeout_ms: 500,
                fails: 1,
                passes: 1,
                slow_start_ms: 5_000,
                consecutive_errors: 2,
                base_ejection_ms: 1_000,
                max_ejection_percent: 40,
                panic_percent: 50,
                ..HealthSpec::default()
            }
        } else {
            HealthSpec::default()
        };
        let t = OwnedTable::new(&UpstreamSpec { policy, peers: &peers, health, schedule_room: 0, sessions: false }).unwrap();
        let z = t.zone();
        let mut scratch = [0u32; PEERS];
        let words = attempt::words(PEERS);
        let mut next_pid = 100;
        let mut workers: Vec<Worker> = (0..WORKERS).map(|_| {
            next_pid += 1;
            Worker { pid: next_pid, slot: z.claim_slot(next_pid, |_| true), attempts: vec![None, None, None] }
        }).collect();
        // Model: which peer each live request holds a try on.
        let mut holding: BTreeMap<(u64, usize), usize> = BTreeMap::new();
        // Model of the statistics: picks, failed tries, responses and
        // transitions to unavailable, per peer.
        let mut model = [[0u64; 4]; PEERS];
        let mut now = 1_000u64;

        // Ending a request ends its try in progress: counted, without a
        // response.
        let end = |z: Zone<'_>, w: &mut Worker, a: usize, holding: &mut BTreeMap<(u64, usize), usize>, wi: u64, model: &mut [[u64; 4]; PEERS]| {
            if let Some(buf) = w.attempts[a].as_mut() {
                z.end(&mut Attempt::from_words(buf));
                if let Some(i) = holding.remove(&(wi, a)) {
                    model[i][0] += 1;
                }
            }
            w.attempts[a] = None;
        };

        for op in ops {
            match op {
                Op::Begin { w, a } => {
                    let wk = &mut workers[w as usize];
                    end(z, wk, a, &mut holding, w, &mut model);
                    let mut buf = vec![0u64; words];
                    {
                        let mut at = Attempt::init(&mut buf, now);
                        at.seed(now ^ w);
                        at.set_slot(wk.slot);
                        match z.begin(&mut at) {
                            Ok(()) => {}
                            Err(e) => prop_assert!(false, "begin: {e:?}"),
                        }
                    }
                    wk.attempts[a] = Some(buf);
                }
                Op::Pick { w, a, key } => {
                    let wk = &mut workers[w as usize];
                    let Some(buf) = wk.attempts[a].as_mut() else { continue };
                    if holding.contains_key(&(w, a)) { continue; }
                    let mut at = Attempt::from_words(buf);
                    // Eligibility as every worker sees it just before.
                    let before: Vec<(bool, u32, bool)> = z.states().iter()
                        .map(|s| (
                            s.down(),
                            s.in_flight.load(Relaxed),
                            s.flags.load(Relaxed) & PeerState::HEALTH != 0,
                        ))
                        .collect();
                    let panic = z.in_panic();
                    match z.get_keyed(&mut at, &[key], now) {
                        Ok(p) => {
                            let i = p.peer as usize;
                            prop_assert!(i < PEERS);
                            prop_assert!(!before[i].0, "{policy:?} picked {i}, which is down or draining");
                            prop_assert!(
                                !before[i].2 || panic,
                                "{policy:?} picked {i}, which is unhealthy or ejected, outside panic"
                            );
                            if max_conns[i] != 0 {
                                prop_assert!(before[i].1 < max_conns[i], "{policy:?} picked {i} at max_conns");
                            }
                            holding.insert((w, a), i);
                        }
                        Err(Error::Busy) => {}
                        Err(e) => prop_assert!(false, "pick: {e:?}"),
                    }
                }
                Op::Release { w, a, outcome } => {
                    let wk = &mut workers[w as usize];
                    let Some(buf) = wk.attempts[a].as_mut() else { continue };
                    let Some(i) = holding.remove(&(w, a)) else { continue };
                    let outcome = [Outcome::Ok, Outcome::Failed, Outcome::Next][outcome as usize];
                    // Failed tries alternate between a 5xx and no response.
                    let status = match outcome {
                        Outcome::Ok => 200,
                        Outcome::Next => 404,
                        Outcome::Failed if now % 2 == 0 => 502,
                        Outcome::Failed => 0,
                    };
                    let info = TryInfo { status, header_ms: Some(1), sent: 10, received: 20 };
                    let r = z.free_with(&mut Attempt::from_words(buf), outcome, &info, now);
                    prop_assert!(r.is_ok());
                    model[i][0] += 1;
                    model[i][1] += u64::from(outcome == Outcome::Failed);
                    model[i][2] += u64::from(status != 0);
                    model[i][3] += u64::from(r.unwrap().transition == Transition::Disabled);
                }
                Op::Advance { ms } => now += ms,
                Op::Admin { peer, down, drain } => z.set_admin(peer, down, drain, 0).unwrap(),
                Op::Weight { peer, weight } => {
                    z.set_weight(peer, weight).unwrap();
                    match z.publish(7, |_| true) {
                        Ok(_) | Err(Error::Pinned) => {}
                        Err(e) => prop_assert!(false, "publish: {e:?}"),
                    }
                }
                Op::Check { peer, passed } => {
                    let r = z.check_done(peer, passed, now);
                    prop_assert_eq!(r.is_ok(), z.health_spec().checks());
                }
                Op::Tick => {
                    let _ = z.end_ejections(now, &mut scratch, workers.first().and_then(|w| w.slot));
                    let _ = z.update_panic();
                }
                Op::Kill { w } => {
                    // The worker dies with its requests; nginx starts a new
                    // one, which reconciles the dead one's ledger row.
                    let dead = workers[w as usize].pid;
                    for a in 0..3 {
                        holding.remove(&(w, a));
                    }
                    next_pid += 1;
                    let pid = next_pid;
                    let slot = z.claim_slot(pid, |p| p != dead);
                    workers[w as usize] = Worker { pid, slot, attempts: vec![None, None, None] };
                }
            }
            // In flight, per peer, is what the live requests hold; the
            // statistics are exact, dead workers' counts included.
            for (i, want) in model.iter().enumerate() {
                let held = holding.values().filter(|&&p| p == i).count() as u32;
                prop_assert_eq!(z.states()[i].in_flight.load(Relaxed), held, "peer {}", i);
                let st = z.stats(i, now).unwrap();
                prop_assert_eq!(
                    [st.requests, st.fails, st.responses_total(), st.unavail],
                    *want,
                    "peer {}", i
                );
            }
        }
        // Every request ends: nothing in flight, nothing pinned.
        for (wi, wk) in workers.iter_mut().enumerate() {
            for a in 0..3 {
                end(z, wk, a, &mut holding, wi as u64, &mut model);
            }
        }
        for s in z.states() {
            prop_assert_eq!(s.in_flight.load(Relaxed), 0);
        }
        // The ejection budget counts exactly the peers ejected.
        let ejected = z.states().iter().filter(|s| s.flags.load(Relaxed) & PeerState::EJECTED != 0).count();
        prop_assert_eq!(z.health_line().ejected.load(Relaxed) as usize, ejected);
        let gens = z.generations();
        prop_assert!(gens.iter().all(|g| g.3 || g.2 == 0), "pins left: {:?}", gens);
    }

    /// least_conn above 32 peers picks through its tree: after every step
    /// the tree is exact (every node the least ratio of its children), and
    /// every pick made outside a slow start takes a peer whose load ratio
    /// is the least over the candidates the scan looks at (untried,
    /// eligible under the pick's mode, primaries first), with failures,
    /// checks, ejections, panic, admin and weight changes and worker
    /// deaths interleaved.
    #[test]
    fn least_conn_tree_picks_what_the_scan_would(
        weights in proptest::collection::vec(1u32..5, LC_PEERS),
        max_conns in proptest::collection::vec(0u32..3, LC_PEERS),
        health in any::<bool>(),
        ops in ops_over(LC_PEERS),
    ) {
        let ids: Vec<Vec<u8>> = (0..LC_PEERS).map(|i| format!("up\0s{i}:80\0127.0.0.1:{i}").into_bytes()).collect();
        let peers: Vec<PeerSpec<'_>> = ids.iter().enumerate().map(|(i, id)| PeerSpec {
            max_conns: max_conns[i],
            max_fails: 1,
            fail_timeout_ms: 5_000,
            backup: i >= LC_PEERS - LC_BACKUPS,
            ..PeerSpec::new(id).weight(weights[i])
        }).collect();
        let health = if health {
            HealthSpec {
                flags: HealthSpec::CHECK,
                interval_ms: 1_000,
                timeout_ms: 500,
                fails: 1,
                passes: 1,
                slow_start_ms: 5_000,
                consecutive_errors: 2,
                base_ejection_ms: 1_000,
                max_ejection_percent: 40,
                panic_percent: 50,
                ..HealthSpec::default()
            }
        } else {
            HealthSpec::default()
        };
        let t = OwnedTable::new(&UpstreamSpec { policy: Policy::LeastConn, peers: &peers, health, schedule_room: 0, sessions: false }).unwrap();
        let z = t.zone();
        prop_assert!(z.lc_tree(PRIMARY).is_some() && z.lc_tree(BACKUP).is_some());
        let mut scratch = [0u32; LC_PEERS];
        let words = attempt::words(LC_PEERS);
        let mut next_pid = 100;
        let mut workers: Vec<Worker> = (0..WORKERS).map(|_| {
            next_pid += 1;
            Worker { pid: next_pid, slot: z.claim_slot(next_pid, |_| true), attempts: vec![None, None, None] }
        }).collect();
        let mut holding: BTreeMap<(u64, usize), usize> = BTreeMap::new();
        let mut now = 1_000u64;
        let exact = |z: Zone<'_>| -> Result<(), TestCaseError> {
            for g in [PRIMARY, BACKUP] {
                let tree = z.lc_tree(g).unwrap();
                prop_assert_eq!(tree.first_stale(z.states()), None, "group {}", g);
            }
            Ok(())
        };
        for op in ops {
            match op {
                Op::Begin { w, a } => {
                    let wk = &mut workers[w as usize];
                    if let Some(buf) = wk.attempts[a].as_mut() {
                        z.end(&mut Attempt::from_words(buf));
                        holding.remove(&(w, a));
                    }
                    let mut buf = vec![0u64; words];
                    {
                        let mut at = Attempt::init(&mut buf, now);
                        at.seed(now ^ w);
                        at.set_slot(wk.slot);
                        prop_assert!(z.begin(&mut at).is_ok());
                    }
                    wk.attempts[a] = Some(buf);
                }
                Op::Pick { w, a, .. } => {
                    let wk = &mut workers[w as usize];
                    let Some(buf) = wk.attempts[a].as_mut() else { continue };
                    if holding.contains_key(&(w, a)) { continue; }
                    let mut at = Attempt::from_words(buf);
                    // SAFETY: this test is the zone's only process.
                    let tb = unsafe { z.current() };
                    let mode = Mode::of(&tb, None);
                    let ramping = z.ramping(now);
                    let before: Vec<(u64, u64)> = z.states().iter()
                        .map(|s| (u64::from(s.in_flight.load(Relaxed)), u64::from(s.weight())))
                        .collect();
                    // The scan's candidates: primaries, else backups.
                    let least = |range: std::ops::Range<usize>, mode: Mode| {
                        range.filter(|&i| !at.tried(i) && health::eligibility(&z.states()[i], now, mode) != Eligibility::No)
                            .map(|i| before[i])
                            .min_by(|a, b| (a.0 * b.1).cmp(&(b.0 * a.1)))
                    };
                    let primaries = LC_PEERS - LC_BACKUPS;
                    let want = if at.in_backup() { None } else { least(0..primaries, mode) }
                        .or_else(|| least(primaries..LC_PEERS, mode.with_single(false)));
                    match z.get_keyed(&mut at, &[], now) {
                        Ok(p) => {
                            let i = p.peer as usize;
                            let Some((wc, ww)) = want else {
                                prop_assert!(false, "picked {} with no candidate", i);
                                unreachable!()
                            };
                            if !ramping {
                                let (c, w) = before[i];
                                prop_assert_eq!(c * ww, wc * w, "peer {} at {}/{}, least {}/{}", i, c, w, wc, ww);
                            }
                            holding.insert((w, a), i);
                        }
                        Err(Error::Busy) => prop_assert!(want.is_none(), "busy with {:?} left", want),
                        Err(e) => prop_assert!(false, "pick: {:?}", e),
                    }
                }
                Op::Release { w, a, outcome } => {
                    let wk = &mut workers[w as usize];
                    let Some(buf) = wk.attempts[a].as_mut() else { continue };
                    if holding.remove(&(w, a)).is_none() { continue; }
                    let outcome = [Outcome::Ok, Outcome::Failed, Outcome::Next][outcome as usize];
                    let status = match outcome {
                        Outcome::Ok => 200,
                        Outcome::Next => 404,
                        Outcome::Failed if now % 2 == 0 => 502,
                        Outcome::Failed => 0,
                    };
                    let info = TryInfo { status, header_ms: Some(1), sent: 10, received: 20 };
                    prop_assert!(z.free_with(&mut Attempt::from_words(buf), outcome, &info, now).is_ok());
                }
                Op::Advance { ms } => now += ms,
                Op::Admin { peer, down, drain } => z.set_admin(peer, down, drain, now).unwrap(),
                Op::Weight { peer, weight } => {
                    z.set_weight(peer, weight).unwrap();
                    match z.publish(7, |_| true) {
                        Ok(_) | Err(Error::Pinned) => {}
                        Err(e) => prop_assert!(false, "publish: {e:?}"),
                    }
                }
                Op::Check { peer, passed } => {
                    let _ = z.check_done(peer, passed, now);
                }
                Op::Tick => {
                    let _ = z.end_ejections(now, &mut scratch, workers.first().and_then(|w| w.slot));
                    let _ = z.update_panic();
                }
                Op::Kill { w } => {
                    let dead = workers[w as usize].pid;
                    for a in 0..3 {
                        holding.remove(&(w, a));
                    }
                    next_pid += 1;
                    let pid = next_pid;
                    let slot = z.claim_slot(pid, |p| p != dead);
                    workers[w as usize] = Worker { pid, slot, attempts: vec![None, None, None] };
                }
            }
            exact(z)?;
            for (i, s) in z.states().iter().enumerate() {
                let held = holding.values().filter(|&&p| p == i).count() as u32;
                prop_assert_eq!(s.in_flight.load(Relaxed), held, "peer {}", i);
            }
        }
    }

    #[test]
    fn membership_changes_keep_slots_exact_and_picks_on_members(
        policy in policies(),
        weights in proptest::collection::vec(1u32..5, POOL),
        health in any::<bool>(),
        ops in member_ops(),
    ) {
        let ids: Vec<Vec<u8>> = (0..POOL).map(|i| format!("up\0s{i}:80\0127.0.0.1:{i}").into_bytes()).collect();
        let spec_of = |which: &[usize]| -> Vec<PeerSpec<'_>> {
            which.iter().map(|&i| PeerSpec {
                max_fails: 2,
                fail_timeout_ms: 5_000,
                ..PeerSpec::new(&ids[i]).weight(weights[i])
            }).collect()
        };
        let health = if health {
            HealthSpec {
                flags: HealthSpec::CHECK,
                interval_ms: 1_000,
                timeout_ms: 500,
                fails: 1,
                passes: 1,
                slow_start_ms: 5_000,
                consecutive_errors: 2,
                base_ejection_ms: 1_000,
                max_ejection_percent: 40,
                panic_percent: 50,
                ..HealthSpec::default()
            }
        } else {
            HealthSpec::default()
        };
        let first: Vec<usize> = (0..CONFIGURED).collect();
        let peers = spec_of(&first);
        let t = OwnedTable::with_capacity(&UpstreamSpec { policy, peers: &peers, health, schedule_room: 0, sessions: false }, CAPACITY).unwrap();
        let z = t.zone();
        let mut scratch = [0u32; CAPACITY];
        let words = attempt::words(z.peers());
        let mut next_pid = 100;
        let mut workers: Vec<Worker> = (0..WORKERS).map(|_| {
            next_pid += 1;
            Worker { pid: next_pid, slot: z.claim_slot(next_pid, |_| true), attempts: vec![None, None, None] }
        }).collect();
        // Model: the slot, and its epoch, each live request holds a try on.
        let mut holding: BTreeMap<(u64, usize), (usize, u32)> = BTreeMap::new();
        // Model of tries and failed tries per slot, since its occupant came.
        let mut model = [[0u64; 2]; CAPACITY];
        let mut now = 1_000u64;

        let end = |z: Zone<'_>, w: &mut Worker, a: usize, holding: &mut BTreeMap<(u64, usize), (usize, u32)>, wi: u64, model: &mut [[u64; 2]; CAPACITY]| {
            if let Some(buf) = w.attempts[a].as_mut() {
                z.end(&mut Attempt::from_words(buf));
                if let Some((i, _)) = holding.remove(&(wi, a)) {
                    model[i][0] += 1;
                }
            }
            w.attempts[a] = None;
        };
        let live = |z: Zone<'_>, i: usize| z.slot_status(i) == Some(LIVE);

        for op in ops {
            match op {
                MemberOp::Base(Op::Begin { w, a }) => {
                    let wk = &mut workers[w as usize];
                    end(z, wk, a, &mut holding, w, &mut model);
                    let mut buf = vec![0u64; words];
                    {
                        let mut at = Attempt::init(&mut buf, now);
                        at.seed(now ^ w);
                        at.set_slot(wk.slot);
                        prop_assert!(z.begin(&mut at).is_ok());
                    }
                    wk.attempts[a] = Some(buf);
                }
                MemberOp::Base(Op::Pick { w, a, key }) => {
                    let wk = &mut workers[w as usize];
                    let Some(buf) = wk.attempts[a].as_mut() else { continue };
                    if holding.contains_key(&(w, a)) { continue; }
                    let mut at = Attempt::from_words(buf);
                    let before: Vec<bool> = z.states().iter().map(|s| s.down()).collect();
                    match z.get_keyed(&mut at, &[key], now) {
                        Ok(p) => {
                            let i = p.peer as usize;
                            prop_assert!(i < CAPACITY);
                            prop_assert!(live(z, i), "{policy:?} picked slot {i}, {:?}", z.slot_status(i));
                            // SAFETY: this test is the zone's only process.
                            let named = unsafe { z.current() }.names_slot(i);
                            prop_assert!(named, "{policy:?} picked slot {i}, not a member");
                            prop_assert!(!before[i], "{policy:?} picked {i}, which is out (down, draining, retired)");
                            holding.insert((w, a), (i, z.slot_epoch(i).unwrap()));
                        }
                        Err(Error::Busy) => {}
                        Err(e) => prop_assert!(false, "pick: {e:?}"),
                    }
                }
                MemberOp::Base(Op::Release { w, a, outcome }) => {
                    let wk = &mut workers[w as usize];
                    let Some(buf) = wk.attempts[a].as_mut() else { continue };
                    let Some((i, epoch)) = holding.remove(&(w, a)) else { continue };
                    prop_assert_eq!(z.slot_epoch(i), Some(epoch), "slot {} reused under a request", i);
                    let outcome = [Outcome::Ok, Outcome::Failed, Outcome::Next][outcome as usize];
                    let status = match outcome {
                        Outcome::Ok => 200,
                        Outcome::Next => 404,
                        Outcome::Failed => 502,
                    };
                    let info = TryInfo { status, header_ms: Some(1), sent: 10, received: 20 };
                    let r = z.free_with(&mut Attempt::from_words(buf), outcome, &info, now);
                    prop_assert!(r.is_ok());
                    model[i][0] += 1;
                    model[i][1] += u64::from(outcome == Outcome::Failed);
                }
                MemberOp::Base(Op::Advance { ms }) => now += ms,
                MemberOp::Base(Op::Admin { peer, down, drain }) => {
                    if live(z, peer) {
                        z.set_admin(peer, down, drain, 0).unwrap();
                    }
                }
                MemberOp::Base(Op::Weight { peer, weight }) => {
                    if live(z, peer) {
                        z.set_weight(peer, weight).unwrap();
                        match z.publish(7, |_| true) {
                            Ok(_) | Err(Error::Pinned) => {}
                            Err(e) => prop_assert!(false, "publish: {e:?}"),
                        }
                    }
                }
                MemberOp::Base(Op::Check { peer, passed }) => {
                    if live(z, peer) {
                        let r = z.check_done(peer, passed, now);
                        prop_assert_eq!(r.is_ok(), z.health_spec().checks());
                    }
                }
                MemberOp::Base(Op::Tick) => {
                    let _ = z.end_ejections(now, &mut scratch, workers.first().and_then(|w| w.slot));
                    let _ = z.update_panic();
                }
                MemberOp::Base(Op::Kill { w }) => {
                    let dead = workers[w as usize].pid;
                    for a in 0..3 {
                        holding.remove(&(w, a));
                    }
                    next_pid += 1;
                    let pid = next_pid;
                    let slot = z.claim_slot(pid, |p| p != dead);
                    workers[w as usize] = Worker { pid, slot, attempts: vec![None, None, None] };
                }
                MemberOp::Members { mask, rot } => {
                    let mut which: Vec<usize> = (0..POOL).filter(|&i| mask & (1 << i) != 0).collect();
                    if !which.is_empty() {
                        let r = rot as usize % which.len();
                        which.rotate_left(r);
                    }
                    // What every kept slot knows before.
                    let keep = |i: usize| {
                        let s = &z.states()[i];
                        (
                            z.identity(i).to_vec(),
                            s.fails.load(Relaxed),
                            s.ewma_bits.load(Relaxed),
                            s.in_flight.load(Relaxed),
                            s.flags.load(Relaxed) & !(PeerState::RETIRED | PeerState::BACKUP | PeerState::DOWN),
                            z.view(i, now).unwrap().weight_override,
                            z.stats(i, now).unwrap(),
                        )
                    };
                    let before: Vec<_> = (0..CAPACITY).map(|i| (z.slot_status(i), z.slot_epoch(i), keep(i))).collect();
                    let list = spec_of(&which);
                    let r = z.apply_membership(&UpstreamSpec { policy, peers: &list, health: Default::default(), schedule_room: 0, sessions: false }, [0, 0], 7, |_| true, now);
                    match r {
                        Ok(a) => {
                            // Every listed identity, in list order; with
                            // too few free slots, the newcomers that did
                            // not fit left out for the next change.
                            // SAFETY: this test is the zone's only process.
                            let members: Vec<Vec<u8>> = unsafe { z.current() }.members().iter().map(|i| z.identity(i).to_vec()).collect();
                            let want: Vec<Vec<u8>> = which.iter().map(|&i| ids[i].clone()).collect();
                            if a.deferred == 0 {
                                prop_assert_eq!(members, want);
                            } else {
                                // SAFETY: this test is the zone's only process.
                                let source = unsafe { z.current() }.header().source;
                                prop_assert_eq!(source[1], hab_core::write::membership::PARTIAL);
                                prop_assert_eq!(members.len() + a.deferred as usize, want.len());
                                let mut rest = want.iter();
                                for m in &members {
                                    prop_assert!(rest.any(|w| w == m), "{:?} out of order or not listed", m);
                                }
                            }
                        }
                        Err(Error::NoSpace) | Err(Error::Pinned) => {
                            prop_assert!(before.iter().enumerate().all(|(i, b)| b.0 == z.slot_status(i) && b.1 == z.slot_epoch(i)), "a refusal changed slots");
                        }
                        Err(e) => prop_assert!(false, "apply: {e:?}"),
                    }
                    for (i, (status, epoch, b)) in before.iter().enumerate() {
                        if *status == Some(FREE) {
                            continue;
                        }
                        if z.slot_epoch(i) == *epoch {
                            // Kept, revived or retired: all of it stays.
                            prop_assert_eq!(&keep(i), b, "slot {} lost state", i);
                        } else {
                            // Reused: a new occupant, from zero.
                            prop_assert!(!holding.values().any(|&(s, _)| s == i), "slot {} reused while held", i);
                            model[i] = [0, 0];
                        }
                    }
                    for i in 0..CAPACITY {
                        if before[i].0 == Some(FREE) && z.slot_status(i) != Some(FREE) {
                            model[i] = [0, 0];
                        }
                    }
                }
            }
            for (i, want) in model.iter().enumerate() {
                let held = holding.values().filter(|&&(p, _)| p == i).count() as u32;
                prop_assert_eq!(z.states()[i].in_flight.load(Relaxed), held, "slot {}", i);
                if z.slot_status(i) != Some(FREE) {
                    let st = z.stats(i, now).unwrap();
                    prop_assert_eq!([st.requests, st.fails], *want, "slot {}", i);
                }
            }
        }
        for (wi, wk) in workers.iter_mut().enumerate() {
            for a in 0..3 {
                end(z, wk, a, &mut holding, wi as u64, &mut model);
            }
        }
        for s in z.states() {
            prop_assert_eq!(s.in_flight.load(Relaxed), 0);
        }
        // The budget is never below the flags set; a builder that freed an
        // ejected slot cleared its flag and left the budget alone (see
        // health/outlier.rs), so it may be above until the next pass of
        // the health timer, which makes it exact.
        let flagged = |z: Zone<'_>| z.states().iter().filter(|s| s.flags.load(Relaxed) & PeerState::EJECTED != 0).count();
        prop_assert!(z.health_line().ejected.load(Relaxed) as usize >= flagged(z));
        if let Some(wk) = workers.iter().find(|w| w.slot.is_some()) {
            let mut out = [0u32; CAPACITY];
            z.end_ejections(now, &mut out, wk.slot);
            prop_assert_eq!(z.health_line().ejected.load(Relaxed) as usize, flagged(z));
        }
        let gens = z.generations();
        prop_assert!(gens.iter().all(|g| g.3 || g.2 == 0), "pins left: {:?}", gens);
    }

    #[test]
    fn round_robin_is_nginx_loop(weights in proptest::collection::vec(1u32..12, 1..8), n in 1usize..200) {
        let ids: Vec<Vec<u8>> = (0..weights.len()).map(|i| vec![b'a' + i as u8]).collect();
        let peers: Vec<PeerSpec<'_>> = ids.iter().zip(&weights).map(|(id, &w)| PeerSpec::new(id).weight(w)).collect();
        let t = OwnedTable::new(&UpstreamSpec { policy: Policy::RoundRobin, peers: &peers, health: Default::default(), schedule_room: 0, sessions: false }).unwrap();
        // nginx's smooth weighted round robin (ngx_http_upstream_get_peer).
        let mut current = vec![0i64; weights.len()];
        let total: i64 = weights.iter().map(|&w| i64::from(w)).sum();
        for _ in 0..n {
            let mut best = 0;
            for i in 0..weights.len() {
                current[i] += i64::from(weights[i]);
                if current[i] > current[best] {
                    best = i;
                }
            }
            current[best] -= total;
            let mut a = hab_core::testing::OwnedAttempt::new(t.zone(), 0);
            let p = a.pick(0).unwrap();
            a.release(Outcome::Ok, 0).unwrap();
            prop_assert_eq!(p.peer as usize, best);
        }
    }

    #[test]
    fn attaching_to_arbitrary_bytes_is_refused(bytes in proptest::collection::vec(any::<u8>(), 0..4096), extra in 0usize..4096) {
        let peers = [PeerSpec::new(b"a"), PeerSpec::new(b"b")];
        let spec = UpstreamSpec { policy: Policy::RoundRobin, peers: &peers, health: Default::default(), schedule_room: 0, sessions: false };
        let len = bytes.len() + extra;
        let region = Region::new(len);
        // SAFETY: the region is ours and at least `len` bytes.
        unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), region.as_ptr(), bytes.len()) };
        // SAFETY: as above; attach reads only inside `len` bytes.
        let r = unsafe { Zone::attach(&spec, region.as_ptr(), len) };
        prop_assert!(r.is_err());
    }
}
