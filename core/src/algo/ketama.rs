//! nginx's `hash $key` and `hash $key consistent` server selection
//!
//! Everything here reproduces `ngx_http_upstream_hash_module.c` bit for bit,
//! so a key maps to exactly the server stock nginx would pick.
//!
//! # The consistent ring (`hash $key consistent`)
//!
//! [`build`] is `ngx_http_upstream_update_chash`. For every *primary* peer in
//! configuration order (backups never get points; peers marked `down` *do*
//! get points, and are only skipped at pick time), the server string as
//! written in the `server` directive is split into host and port
//! ([`split_host_port`]), and
//!
//! ```text
//! base   = crc32 state after HOST "\0" PORT        (no port: just HOST "\0")
//! hash_j = final(base + le32(hash_{j-1}))           hash_{-1} = 0
//! ```
//!
//! for `j` in `0..weight * 160` (compatible with `Cache::Memcached::Fast`).
//! The points are sorted by hash with a stable sort (nginx calls `qsort`,
//! which in glibc is a stable merge sort) and consecutive equal hashes are
//! collapsed keeping the first, i.e. the point of the earliest peer in
//! configuration order.
//!
//! A request's key hash is `crc32(key)` ([`crate::algo::crc32::crc32`]). Its
//! position is [`find`] (first point `>= hash`, may be `points.len()`), and
//! the candidate at position `p` is [`server_at`]`(points, p)`, i.e.
//! `points[p % len]`.
//!
//! ## Retry rule
//!
//! When the candidate is unusable (already tried for this request, `down`,
//! failed `max_fails` times within `fail_timeout`, or at `max_conns`), nginx
//! moves to the next point (`hash++`) and counts a try. Once more than
//! [`MAX_TRIES`] (20) points were rejected, i.e. after 21 candidates, it
//! falls back to plain round robin. The position and the try count belong to
//! the request, so a retry after a failed upstream continues where the last
//! pick stopped (the failed peer is then skipped as tried). nginx also uses
//! round robin directly when the key is empty or the upstream has a single
//! peer.
//!
//! nginx compares the point's server *string* with each peer's, so all peers
//! sharing one string (a host name resolving to several addresses, or a
//! server written twice) are candidates for that point and nginx picks among
//! them by smooth weighted round robin. Their points are identical and
//! collapse, so a [`Point`] names the *first* peer with that string; callers
//! must treat every peer with the same string as a match. The group's share
//! of the ring follows the largest weight in the group, not the sum.
//!
//! # Plain hash (`hash $key`)
//!
//! Compatible with `Cache::Memcached`: try `t` (from 0) computes
//! [`plain_hash_step`]`(key, t, prev)`, i.e.
//! `((crc32([t as decimal] KEY) >> 16) & 0x7fff) + prev` with the decimal
//! omitted for `t == 0`, wrapping in 32 bits, and takes the peer
//! [`plain_pick`]`(hash, weights)` over the configured weights of all
//! primary peers (`down` ones included). Unusable peers cost a try, with the
//! same limit of [`MAX_TRIES`] and round-robin fallback; nginx also uses
//! round robin directly for an empty key or fewer than two peers.

use crate::algo::crc32::{crc32, Crc32};

/// Points per unit of weight on the ring.
pub const POINTS_PER_WEIGHT: u32 = 160;

/// Most points a ring has: 16 Mi (128 MiB of shared memory), a total
/// weight of 104,857 at [`POINTS_PER_WEIGHT`].
pub const MAX_POINTS: u64 = 1 << 24;

/// Largest total weight whose ring is nginx's own.
pub const MAX_TOTAL_WEIGHT: u64 = MAX_POINTS / POINTS_PER_WEIGHT as u64;

/// The weights the ring is built with for the configured `weights`: the
/// same while their ring fits in [`MAX_POINTS`] (so that keys map exactly
/// as nginx maps them); above that, scaled down in proportion,
/// `max(1, w × (MAX_TOTAL_WEIGHT − n) / total)`, so that the ring fits
/// (nginx would generate `total × 160` points: 480 million for three
/// servers of `weight=1000000`, 3.8 GB per worker). Each server's share of
/// the ring then differs from its share of the weight by less than one
/// scaled unit (1/104,857 of the ring for `n` small); keys map unlike
/// nginx's. `None` when even that does not fit: more servers than half
/// [`MAX_TOTAL_WEIGHT`] with a total above it.
pub fn ring_weights(weights: &[u32]) -> Option<Vec<u32>> {
    let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
    if total <= MAX_TOTAL_WEIGHT {
        return Some(weights.to_vec());
    }
    let n = weights.len() as u64;
    if n > MAX_TOTAL_WEIGHT / 2 {
        return None;
    }
    // sum(max(1, floor(w × target / total))) <= target + n = MAX_TOTAL_WEIGHT
    let target = MAX_TOTAL_WEIGHT - n;
    Some(
        weights
            .iter()
            .map(|&w| ((u128::from(w) * u128::from(target) / u128::from(total)) as u32).max(1))
            .collect(),
    )
}

/// nginx gives up hashing once more than this many candidates were
/// rejected for a request (21 candidates in all) and uses round robin.
pub const MAX_TRIES: u32 = 20;

/// Returned by [`server_at`] and [`chash_pick`] for an empty ring.
pub const NO_SERVER: u32 = u32::MAX;

/// One point of the ring; 8 bytes, laid out for copying into shared memory.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Point {
    /// Position on the ring.
    pub hash: u32,
    /// Index of the server (in the order given to [`build`]) owning it.
    pub server: u32,
}

/// Splits a `server` directive string as nginx's consistent hash does.
///
/// A case-insensitive `unix:` prefix yields the path as host and no port.
/// Otherwise the port is whatever follows the last `:` when only digits
/// follow it (possibly none, as in `"host:"`); without such a colon the
/// whole string is the host. So `"127.0.0.1"` and `"127.0.0.1:80"` hash
/// differently although they address the same socket.
pub fn split_host_port(server: &[u8]) -> (&[u8], &[u8]) {
    if server.len() >= 5 && server[..5].eq_ignore_ascii_case(b"unix:") {
        return (&server[5..], &[]);
    }
    for (i, &c) in server.iter().enumerate().rev() {
        if c == b':' {
            return (&server[..i], &server[i + 1..]);
        }
        if !c.is_ascii_digit() {
            break;
        }
    }
    (server, &[])
}

/// The `weight * 160` point hashes of one server, in generation order.
fn chain(server: &[u8], weight: u32) -> impl Iterator<Item = u32> {
    let (host, port) = split_host_port(server);
    let mut base = Crc32::new();
    base.update(host);
    base.update(b"\0");
    base.update(port);
    let n = u64::from(weight) * u64::from(POINTS_PER_WEIGHT);
    let mut prev = 0u32;
    (0..n).map(move |_| {
        let mut c = base;
        c.update(&prev.to_le_bytes());
        prev = c.finish();
        prev
    })
}

/// Number of points generated before collapsing equal hashes:
/// `sum(weight) * 160`. It is an upper bound of `build(servers).len()`
/// (the exact length is known only after sorting); size shared memory
/// with it.
pub fn points_len(servers: &[(&[u8], u32)]) -> usize {
    let total: u64 = servers.iter().map(|&(_, w)| u64::from(w)).sum();
    usize::try_from(total * u64::from(POINTS_PER_WEIGHT)).unwrap_or(usize::MAX)
}

/// Builds the ring over `(server string, weight)` pairs, the primary peers
/// in configuration order (`ngx_http_upstream_update_chash`). The result is
/// sorted by hash with no two equal hashes.
///
/// # Panics
///
/// If there are more than `u32::MAX` servers.
pub fn build(servers: &[(&[u8], u32)]) -> Vec<Point> {
    build_with_shadow(servers).0
}

/// [`build`], and the *shadow*: the points the collapse of equal hashes
/// dropped, sorted by `(hash, server)`. Ring and shadow together are every
/// generated point, which is what [`rebuild`] needs to stay exact.
pub fn build_with_shadow(servers: &[(&[u8], u32)]) -> (Vec<Point>, Vec<Point>) {
    assert!(u32::try_from(servers.len()).is_ok(), "too many servers");
    let mut points = Vec::with_capacity(points_len(servers));
    for (i, &(name, weight)) in servers.iter().enumerate() {
        let server = i as u32;
        points.extend(chain(name, weight).map(|hash| Point { hash, server }));
    }
    // Stable, as glibc's merge-sort `qsort`: among equal hashes the earliest
    // generated point (the lowest server) stays first and survives the
    // collapse; generation order is server order, so this is the order of
    // `(hash, server)`.
    points.sort_by_key(|p| p.hash);
    // The collapse in place (as `dedup`), the dropped points set aside.
    let mut shadow = Vec::new();
    let mut kept = 0;
    for r in 0..points.len() {
        let p = points[r];
        if kept > 0 && points[kept - 1].hash == p.hash {
            shadow.push(p);
        } else {
            points[kept] = p;
            kept += 1;
        }
    }
    points.truncate(kept);
    (points, shadow)
}

/// Splits `n` points sorted by `(hash, server)` into the ring (the first
/// point of every hash) and the shadow (the others).
fn split(points: impl Iterator<Item = Point>, n: usize) -> (Vec<Point>, Vec<Point>) {
    let (mut ring, mut shadow): (Vec<Point>, Vec<Point>) = (Vec::with_capacity(n), Vec::new());
    for p in points {
        match ring.last() {
            Some(last) if last.hash == p.hash => shadow.push(p),
            _ => ring.push(p),
        }
    }
    (ring, shadow)
}

/// The ring and shadow [`build_with_shadow`] gives for `servers`, from
/// those of the previous weights (`old_ring`, `old_shadow`) where only the
/// servers marked in `changed` have another weight: their old points are
/// dropped, their new ones generated and merged in, in one linear pass
/// over the rest. A server's points for weight `w` are the first `w × 160`
/// of its chain, so nothing else moves.
///
/// # Panics
///
/// If `changed` and `servers` differ in length.
pub fn rebuild(
    old_ring: &[Point],
    old_shadow: &[Point],
    servers: &[(&[u8], u32)],
    changed: &[bool],
) -> (Vec<Point>, Vec<Point>) {
    assert_eq!(servers.len(), changed.len(), "one flag per server");
    let mut fresh: Vec<Point> = Vec::new();
    for (i, &(name, weight)) in servers.iter().enumerate() {
        if changed[i] {
            let server = i as u32;
            fresh.extend(chain(name, weight).map(|hash| Point { hash, server }));
        }
    }
    fresh.sort_by_key(|p| (p.hash, p.server));
    let key = |p: &Point| (p.hash, p.server);
    let keep = |p: &&Point| !changed.get(p.server as usize).copied().unwrap_or(true);
    // The old points in (hash, server) order: a ring point precedes the
    // shadow points of its hash (it has the lowest server).
    let old = merge_by(
        old_ring.iter().filter(keep),
        old_shadow.iter().filter(keep),
        key,
    );
    let n = old_ring.len() + old_shadow.len() + fresh.len();
    split(merge_by(old, fresh.iter(), key).copied(), n)
}

/// Merges two iterators sorted by `key`, taking from `a` on ties.
fn merge_by<'p, K: Ord>(
    a: impl Iterator<Item = &'p Point>,
    b: impl Iterator<Item = &'p Point>,
    key: impl Fn(&Point) -> K,
) -> impl Iterator<Item = &'p Point> {
    let (mut a, mut b) = (a.peekable(), b.peekable());
    core::iter::from_fn(move || match (a.peek(), b.peek()) {
        (Some(x), Some(y)) => {
            if key(y) < key(x) {
                b.next()
            } else {
                a.next()
            }
        }
        (Some(_), None) => a.next(),
        (None, _) => b.next(),
    })
}

/// Position of the first point with `hash >= key_hash`, or `points.len()`
/// when there is none (`ngx_http_upstream_find_chash_point`, including its
/// early return on an exact match). Use [`server_at`], which wraps.
pub fn find(points: &[Point], key_hash: u32) -> usize {
    let (mut i, mut j) = (0, points.len());
    while i < j {
        let k = (i + j) / 2;
        if key_hash > points[k].hash {
            i = k + 1;
        } else if key_hash < points[k].hash {
            j = k;
        } else {
            return k;
        }
    }
    i
}

/// The server of the point at position `pos` modulo the ring length; the
/// next candidate after an unusable one is `server_at(points, pos + 1)`.
/// [`NO_SERVER`] for an empty ring.
pub fn server_at(points: &[Point], pos: usize) -> u32 {
    if points.is_empty() {
        return NO_SERVER;
    }
    points[pos % points.len()].server
}

/// The server nginx picks for `key` when every server is usable.
/// [`NO_SERVER`] for an empty ring.
pub fn chash_pick(points: &[Point], key: &[u8]) -> u32 {
    server_at(points, find(points, crc32(key)))
}

/// One step of nginx's plain `hash`: the accumulated hash for try `rehash`
/// (0 for the first pick of a request) given the previous accumulated hash
/// `prev` (0 initially): `((crc32([rehash] key) >> 16) & 0x7fff) + prev`.
pub fn plain_hash_step(key: &[u8], rehash: u32, prev: u32) -> u32 {
    let mut c = Crc32::new();
    if rehash > 0 {
        let mut buf = [0u8; 10];
        let mut n = rehash;
        let mut at = buf.len();
        while n > 0 {
            at -= 1;
            buf[at] = b'0' + (n % 10) as u8;
            n /= 10;
        }
        c.update(&buf[at..]);
    }
    c.update(key);
    prev.wrapping_add((c.finish() >> 16) & 0x7FFF)
}

/// The peer index plain `hash` picks for accumulated hash `hash` over the
/// configured weights: `w = hash % sum(weights)`, then the peer whose
/// cumulative weight range holds `w`. `weights.len()` when the weights sum
/// to 0.
pub fn plain_pick(hash: u32, weights: &[u32]) -> usize {
    let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
    if total == 0 {
        return weights.len();
    }
    let mut w = u64::from(hash) % total;
    for (i, &weight) in weights.iter().enumerate() {
        if w < u64::from(weight) {
            return i;
        }
        w -= u64::from(weight);
    }
    unreachable!("w < total")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_weights_are_nginx_s_up_to_the_limit_then_scaled() {
        let at_limit = [50_000, 54_857];
        assert_eq!(ring_weights(&at_limit).unwrap(), at_limit);
        assert_eq!(ring_weights(&[1, 2, 3]).unwrap(), [1, 2, 3]);
        let scaled = ring_weights(&[1_000_000, 1_000_000, 1_000_000]).unwrap();
        assert_eq!(scaled, [34_951; 3]); // (104857 - 3) / 3
        let scaled = ring_weights(&[u32::MAX, 1, 7]).unwrap();
        assert_eq!(scaled, [104_853, 1, 1]);
        let total: u64 = scaled.iter().map(|&w| u64::from(w)).sum();
        assert!(total <= MAX_TOTAL_WEIGHT);
        // At most MAX_TOTAL_WEIGHT / 2 servers once scaled.
        let n = (MAX_TOTAL_WEIGHT / 2) as usize;
        let w = ring_weights(&vec![3; n]).unwrap();
        assert!(w.iter().map(|&w| u64::from(w)).sum::<u64>() <= MAX_TOTAL_WEIGHT);
        assert_eq!(ring_weights(&vec![3; n + 1]), None);
    }

    #[test]
    fn host_port_split() {
        let cases: &[(&[u8], &[u8], &[u8])] = &[
            (b"127.0.0.1:8080", b"127.0.0.1", b"8080"),
            (b"127.0.0.1", b"127.0.0.1", b""),
            (b"example.com", b"example.com", b""),
            (b"example.com:80", b"example.com", b"80"),
            (b"[::1]:80", b"[::1]", b"80"),
            (b"[::1]", b"[::1]", b""),
            (b"host:", b"host", b""),
            (b"a:b1", b"a:b1", b""),
            (b"8080", b"8080", b""),
            (b"unix:/x", b"/x", b""),
            (b"UNIX:/tmp/a:80", b"/tmp/a:80", b""),
            (b"unix:", b"", b""),
            (b"unix", b"unix", b""),
        ];
        for &(server, host, port) in cases {
            assert_eq!(split_host_port(server), (host, port), "{:?}", server);
        }
    }

    #[test]
    fn chain_values() {
        // crc32(HOST "\0" PORT le32(prev)), computed independently with
        // Python's zlib.crc32.
        let cases: &[(&[u8], [u32; 3])] = &[
            (b"127.0.0.1:8080", [0x6DCA_9547, 0x92C7_ADF9, 0xDDBE_B1B8]),
            (b"unix:/x", [0x43E8_19A7, 0xF9D1_C92A, 0x4E5B_45D4]),
            (b"example.com", [0xAAF2_4D4E, 0xB9F2_B51A, 0xC2F4_4E59]),
            (b"[::1]:80", [0x3D49_36C4, 0x9D53_6EEA, 0xD9EA_90DC]),
        ];
        for (server, want) in cases {
            let got: Vec<u32> = chain(server, 1).take(3).collect();
            assert_eq!(got, want, "{:?}", server);
            assert_eq!(chain(server, 2).count(), 320);
        }
    }

    #[test]
    fn rebuild_after_weight_changes_equals_a_full_build() {
        // 2,000 servers (some written twice, whose points all collide)
        // give hundreds of thousands of points: natural 32-bit collisions
        // and shadowed duplicates both exercise the shadow.
        let names: Vec<String> = (0..2_000)
            .map(|i| format!("10.1.{}.{}:80", (i % 1_900) / 250, (i % 1_900) % 250))
            .collect();
        let mut weights: Vec<u32> = (0..2_000).map(|i| 1 + i % 3).collect();
        let servers = |w: &[u32]| -> Vec<(Vec<u8>, u32)> {
            names
                .iter()
                .zip(w)
                .map(|(n, &w)| (n.clone().into_bytes(), w))
                .collect()
        };
        fn as_refs(s: &[(Vec<u8>, u32)]) -> Vec<(&[u8], u32)> {
            s.iter().map(|(n, w)| (n.as_slice(), *w)).collect()
        }
        let s0 = servers(&weights);
        let (mut ring, mut shadow) = build_with_shadow(&as_refs(&s0));
        assert!(!shadow.is_empty());
        for (round, change) in [
            vec![7usize],
            vec![0, 1_950],
            vec![3, 1_903, 1_999],
            vec![42],
        ]
        .into_iter()
        .enumerate()
        {
            let mut changed = vec![false; names.len()];
            for &i in &change {
                weights[i] = if round % 2 == 0 { weights[i] + 2 } else { 1 };
                changed[i] = true;
            }
            let s = servers(&weights);
            let (r, sh) = rebuild(&ring, &shadow, &as_refs(&s), &changed);
            let (full_r, full_sh) = build_with_shadow(&as_refs(&s));
            assert!(r == full_r, "round {round}: ring differs from a full build");
            assert!(sh == full_sh, "round {round}: shadow differs");
            (ring, shadow) = (r, sh);
        }
    }

    #[test]
    fn build_is_sorted_unique_and_deterministic() {
        let servers: &[(&[u8], u32)] = &[
            (b"10.0.0.1:80", 1),
            (b"10.0.0.2:80", 3),
            (b"unix:/run/a.sock", 2),
            (b"backend.example.com", 0),
        ];
        let a = build(servers);
        assert_eq!(a, build(servers));
        assert_eq!(points_len(servers), 6 * 160);
        assert_eq!(a.len(), points_len(servers));
        assert!(a.windows(2).all(|w| w[0].hash < w[1].hash));
        for (i, want) in [160, 480, 320, 0].into_iter().enumerate() {
            let n = a.iter().filter(|p| p.server == i as u32).count();
            assert_eq!(n, want, "server {i}");
        }
        assert_eq!(core::mem::size_of::<Point>(), 8);
    }

    #[test]
    fn equal_server_strings_collapse_to_first() {
        // Same string: identical chains; the shorter is a prefix of the
        // longer, and every duplicate hash keeps the earlier server.
        let cases: &[(u32, u32, usize, usize)] = &[
            // (weight of 0, weight of 1, points of 0, points of 1)
            (1, 1, 160, 0),
            (1, 2, 160, 160),
            (2, 1, 320, 0),
        ];
        for &(w0, w1, n0, n1) in cases {
            let ring = build(&[(b"a:1", w0), (b"a:1", w1)]);
            let c0 = ring.iter().filter(|p| p.server == 0).count();
            let c1 = ring.iter().filter(|p| p.server == 1).count();
            assert_eq!((c0, c1), (n0, n1), "weights {w0},{w1}");
        }
    }

    #[test]
    fn find_semantics() {
        let ring: Vec<Point> = [(10, 0), (20, 1), (30, 2)]
            .iter()
            .map(|&(hash, server)| Point { hash, server })
            .collect();
        let cases: &[(u32, usize, u32)] = &[
            // (key hash, position, server)
            (0, 0, 0),
            (5, 0, 0),
            (10, 0, 0),
            (11, 1, 1),
            (20, 1, 1),
            (29, 2, 2),
            (30, 2, 2),
            (31, 3, 0),
            (u32::MAX, 3, 0),
        ];
        for &(h, pos, server) in cases {
            assert_eq!(find(&ring, h), pos, "hash {h}");
            assert_eq!(server_at(&ring, pos), server, "hash {h}");
        }
        assert_eq!(server_at(&ring, 4), 1);
        assert_eq!(find(&[], 7), 0);
        assert_eq!(server_at(&[], 0), NO_SERVER);
        assert_eq!(chash_pick(&[], b"k"), NO_SERVER);
    }

    #[test]
    fn find_agrees_with_linear_scan() {
        let ring = build(&[(b"a:1", 2), (b"b:2", 1), (b"c:3", 1)]);
        for i in 0..2000u32 {
            let h = crc32(format!("probe-{i}").as_bytes());
            let linear = ring.iter().position(|p| p.hash >= h).unwrap_or(ring.len());
            assert_eq!(find(&ring, h), linear);
        }
        for (i, p) in ring.iter().enumerate() {
            assert_eq!(find(&ring, p.hash), i);
        }
    }

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("10.0.0.{i}:80")).collect()
    }

    #[test]
    fn removing_a_server_moves_only_its_keys() {
        const KEYS: usize = 10_000;
        let all = names(10);
        let removed = 3;
        let full: Vec<(&[u8], u32)> = all.iter().map(|s| (s.as_bytes(), 1)).collect();
        let kept: Vec<&String> = all
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != removed)
            .map(|(_, s)| s)
            .collect();
        let less: Vec<(&[u8], u32)> = kept.iter().map(|s| (s.as_bytes(), 1)).collect();
        let (a, b) = (build(&full), build(&less));
        let mut moved = 0;
        for i in 0..KEYS {
            let key = format!("key-{i}");
            let before = chash_pick(&a, key.as_bytes()) as usize;
            let after = kept[chash_pick(&b, key.as_bytes()) as usize];
            if all[before] != *after {
                assert_eq!(before, removed, "{key} moved from a surviving server");
                moved += 1;
            }
        }
        let frac = moved as f64 / KEYS as f64;
        assert!((0.05..=0.15).contains(&frac), "moved {frac}");
    }

    #[test]
    fn weight_two_gets_twice_the_keys() {
        const KEYS: usize = 10_000;
        let all = names(5);
        let servers: Vec<(&[u8], u32)> = all
            .iter()
            .enumerate()
            .map(|(i, s)| (s.as_bytes(), if i == 1 { 2 } else { 1 }))
            .collect();
        let ring = build(&servers);
        let mut count = [0usize; 5];
        for i in 0..KEYS {
            count[chash_pick(&ring, format!("key-{i}").as_bytes()) as usize] += 1;
        }
        let others = (KEYS - count[1]) as f64 / 4.0;
        let ratio = count[1] as f64 / others;
        assert!(
            (1.5..=2.5).contains(&ratio),
            "ratio {ratio}, counts {count:?}"
        );
    }

    #[test]
    fn plain_hash_steps() {
        // Accumulated over tries 0, 1, 2 for key "abc" (Python zlib).
        let mut prev = 0;
        for (rehash, want) in [(0, 13_604), (1, 22_746), (2, 35_293)] {
            prev = plain_hash_step(b"abc", rehash, prev);
            assert_eq!(prev, want, "rehash {rehash}");
        }
        let mut c = Crc32::new();
        c.update(b"12abc");
        assert_eq!(plain_hash_step(b"abc", 12, 0), (c.finish() >> 16) & 0x7FFF);
        assert_eq!(plain_hash_step(b"", 0, u32::MAX), u32::MAX);
    }

    #[test]
    fn plain_pick_walks_weights() {
        let cases: &[(u32, &[u32], usize)] = &[
            (0, &[5, 1, 1], 0),
            (4, &[5, 1, 1], 0),
            (5, &[5, 1, 1], 1),
            (6, &[5, 1, 1], 2),
            (7, &[5, 1, 1], 0),
            (13_604, &[1, 1, 1], 2),
            (u32::MAX, &[1, 2], 0),
            (3, &[0, 0, 1], 2),
            (3, &[], 0),
            (3, &[0, 0], 2),
        ];
        for &(hash, weights, want) in cases {
            assert_eq!(plain_pick(hash, weights), want, "{hash} {weights:?}");
        }
    }
}
