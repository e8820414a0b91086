//! End-to-end: Maglev keeps keys in place when a server is removed
//!
//! One nginx (4 workers), `ha_balance hash $arg_k maglev` over 6 backends,
//! records which backend answers each of 1,000 keys; a reload removes one
//! server; the keys are fetched again. The removed server's keys must all
//! move (to the others), and of the keys on the 5 remaining servers at most
//! 2% may move. Before the table size was fixed (it was a prime of at least
//! 100 × peers, so every permutation changed with the peer count) 78% of
//! them moved.

use std::time::Duration;

use hab_testkit::backend::process::Backend;
use hab_testkit::load::{record_keys, tally};
use hab_testkit::nginx::{
    nginx_or_skip, proxy_block, serial, server_lines, stock_mode, Nginx, WORKERS,
};
use hab_testkit::port::free_port;
use hab_testkit::proc::{alive, wait_until};
use hab_testkit::skip::say;

const KEYS: usize = 1000;

fn block(port: u16, b: &[Backend]) -> String {
    let upstream = format!(
        "        ha_balance hash $arg_k maglev;\n{}",
        server_lines(b, &[])
    );
    proxy_block(port, &upstream, "")
}

#[test]
fn maglev_removal_moves_only_the_removed_servers_keys() {
    if !nginx_or_skip() || stock_mode() {
        return;
    }
    let _serial = serial();
    let b = Backend::start_many("m", 6);
    let port = free_port();
    let mut ngx = Nginx::start(&block(port, &b), WORKERS);
    let before = record_keys(port, KEYS);
    let names: Vec<String> = b.iter().map(|x| x.name.clone()).collect();
    assert!(
        before.iter().all(|o| names.contains(o)),
        "failed requests before the reload: {:?}",
        tally(&before)
    );
    assert_eq!(tally(&before).len(), 6, "{:?}", tally(&before));

    // The removed backend keeps running: only the configuration changes.
    let mut b = b;
    let gone = b.remove(2);
    let removed = gone.name.clone();
    let old = ngx.worker_pids();
    ngx.reload_with(&block(port, &b));
    // Until the old workers exit they may still accept a connection and
    // answer with the old table.
    let exited = wait_until(Duration::from_secs(10), || old.iter().all(|&p| !alive(p)));
    assert!(
        exited,
        "old workers {old:?} still alive 10 s after the reload"
    );
    let after = record_keys(port, KEYS);

    let mut own = 0;
    let (mut kept, mut moved) = (0, 0);
    let mut bad = Vec::new();
    for (k, (x, y)) in before.iter().zip(&after).enumerate() {
        if *y == removed || !names.contains(y) {
            bad.push(format!("key-{k}: {x} then {y}"));
        } else if *x == removed {
            own += 1;
        } else {
            kept += 1;
            moved += usize::from(x != y);
        }
    }
    let frac = moved as f64 / kept.max(1) as f64;
    say(&format!(
        "  maglev reload without {removed}: {own} of its keys moved; {moved} of {kept} \
         other keys moved ({:.2}%); before {:?}, after {:?}",
        100.0 * frac,
        tally(&before),
        tally(&after)
    ));
    assert!(
        bad.is_empty(),
        "answered by the removed server or failed: {bad:?}"
    );
    assert!(
        own > 0,
        "the removed server held no key: {:?}",
        tally(&before)
    );
    // The core measures at most 0.14% of the other keys moving for 6 peers
    // (maglev::tests::removal_moves_few_other_keys); other names give
    // other permutations (here 0 to 0.49% in 10 runs), so allow a true
    // rate of 0.5%: of about 833 keys, 4.2 ± 2.0 would move, and 2% (17)
    // is more than 6 sd above that.
    assert!(
        frac <= 0.02,
        "{moved} of {kept} keys not on {removed} moved ({:.1}%, want <= 2%)",
        100.0 * frac
    );
    ngx.stop();
}
