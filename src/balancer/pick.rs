//! How the balancer picks an instance for a request: smooth weighted round robin (nginx's),
//! the fewest requests under way by weight, or a consistent hash of the client's address, a
//! header or a cookie. Backups get requests only while no other instance can take one.
//!
//! The picker sees the members as [`Candidate`]s, in the order of the pool; which of them can
//! take a request now (ready, not taken out for failures) is the caller's to say, so that the
//! arithmetic here is pure and tested on its own.

use std::sync::Mutex;

use crate::protocol::spec::Strategy;

/// What the picker knows of one member.
#[derive(Debug, Clone, Copy)]
pub struct Candidate {
    /// Its slot: hashing follows the slot, so a reload keeps each client on its slot.
    pub slot: u32,
    pub weight: u32,
    pub backup: bool,
    /// Requests under way on it.
    pub active: u32,
    /// Whether it may take a request now.
    pub up: bool,
}

/// Virtual points per unit of weight on the hash ring: enough for an even split of a handful
/// of instances, few enough to build the ring at once.
const POINTS: u32 = 160;

/// The picker of one pool: the round robin's running weights and the hash ring, rebuilt when
/// the members change.
pub struct Picker {
    strategy: Kind,
    /// Smooth weighted round robin: each member's current weight (and the backups' own).
    current: Mutex<Vec<i64>>,
    /// Sorted points of the ring: (hash, index of the member).
    ring: Vec<(u64, usize)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    RoundRobin,
    LeastConn,
    Hash,
}

impl Picker {
    pub fn new(strategy: &Strategy, members: &[Candidate]) -> Picker {
        let strategy = match strategy {
            Strategy::RoundRobin => Kind::RoundRobin,
            Strategy::LeastConn => Kind::LeastConn,
            Strategy::IpHash | Strategy::Header(_) | Strategy::Cookie(_) => Kind::Hash,
        };
        let ring = if strategy == Kind::Hash { ring(members) } else { Vec::new() };
        Picker { strategy, current: Mutex::new(vec![0; members.len()]), ring }
    }

    /// The index of the member to take the request, if any can; `key` is the [`hash`] of what
    /// the request offers to hash on (its client's address, a header, a cookie).
    pub fn pick(&self, members: &[Candidate], key: Option<u64>) -> Option<usize> {
        let primary = |c: &Candidate| c.up && !c.backup;
        if !members.iter().any(primary) {
            // Only backups are left: round robin over those that are up.
            return self.round_robin(members, |c| c.up && c.backup);
        }
        match (self.strategy, key) {
            (Kind::Hash, Some(h)) => self.hashed(members, h),
            (Kind::LeastConn, _) => self.least_conn(members),
            _ => self.round_robin(members, primary),
        }
    }

    /// nginx's smooth weighted round robin: every eligible member's current weight grows by
    /// its weight; the largest wins and gives back the sum. Weights 3:2:1 give a b a c a b …,
    /// exactly in proportion over every six picks.
    fn round_robin(&self, members: &[Candidate], eligible: impl Fn(&Candidate) -> bool) -> Option<usize> {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if current.len() != members.len() {
            current.resize(members.len(), 0);
        }
        let mut total = 0i64;
        let mut best: Option<usize> = None;
        for (i, c) in members.iter().enumerate() {
            if !eligible(c) {
                continue;
            }
            let w = i64::from(c.weight.max(1));
            current[i] += w;
            total += w;
            if best.is_none_or(|b| current[i] > current[b]) {
                best = Some(i);
            }
        }
        let b = best?;
        current[b] -= total;
        Some(b)
    }

    /// The fewest requests under way for its weight; ties by round robin.
    fn least_conn(&self, members: &[Candidate]) -> Option<usize> {
        let load = |c: &Candidate| (u64::from(c.active), u64::from(c.weight.max(1)));
        let least = members
            .iter()
            .filter(|c| c.up && !c.backup)
            .map(load)
            .min_by(|(a1, w1), (a2, w2)| (a1 * w2).cmp(&(a2 * w1)))?;
        let tied = |c: &Candidate| {
            let (a, w) = load(c);
            c.up && !c.backup && a * least.1 == least.0 * w
        };
        self.round_robin(members, tied)
    }

    /// The first member at or after `h` on the ring that can take the request.
    fn hashed(&self, members: &[Candidate], h: u64) -> Option<usize> {
        if self.ring.is_empty() {
            return self.round_robin(members, |c| c.up && !c.backup);
        }
        let start = self.ring.partition_point(|(p, _)| *p < h);
        (0..self.ring.len())
            .map(|k| self.ring[(start + k) % self.ring.len()].1)
            .find(|&i| members.get(i).is_some_and(|c| c.up && !c.backup))
    }
}

/// The ring of the non-backup members: `POINTS` per unit of weight, placed by slot.
fn ring(members: &[Candidate]) -> Vec<(u64, usize)> {
    let mut ring = Vec::new();
    for (i, c) in members.iter().enumerate().filter(|(_, c)| !c.backup) {
        for v in 0..POINTS * c.weight.clamp(1, 100) {
            let point = hash(format!("{}-{v}", c.slot).as_bytes());
            ring.push((point, i));
        }
    }
    ring.sort_unstable();
    ring
}

/// FNV-1a, finished by splitmix64's mixer so that near keys land far apart.
pub fn hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(weights: &[u32]) -> Vec<Candidate> {
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| Candidate { slot: i as u32, weight: *w, backup: false, active: 0, up: true })
            .collect()
    }

    fn counts(p: &Picker, m: &[Candidate], n: usize) -> Vec<usize> {
        let mut out = vec![0; m.len()];
        for _ in 0..n {
            out[p.pick(m, None).unwrap()] += 1;
        }
        out
    }

    #[test]
    fn smooth_weighted_round_robin_splits_exactly_and_interleaves() {
        let m = members(&[3, 2, 1]);
        let p = Picker::new(&Strategy::RoundRobin, &m);
        let order: Vec<usize> = (0..6).map(|_| p.pick(&m, None).unwrap()).collect();
        assert_eq!(order, [0, 1, 0, 2, 1, 0], "nginx's order for 3:2:1");
        assert_eq!(counts(&p, &m, 600), [300, 200, 100]);
    }

    #[test]
    fn a_member_that_is_down_is_skipped_and_backups_serve_only_alone() {
        let mut m = members(&[1, 1, 1]);
        m[2].backup = true;
        let p = Picker::new(&Strategy::RoundRobin, &m);
        assert_eq!(counts(&p, &m, 10), [5, 5, 0]);
        m[0].up = false;
        assert_eq!(counts(&p, &m, 10), [0, 10, 0]);
        m[1].up = false;
        assert_eq!(counts(&p, &m, 10), [0, 0, 10]);
        m[2].up = false;
        assert_eq!(p.pick(&m, None), None);
    }

    #[test]
    fn least_conn_prefers_the_idle_member_by_weight() {
        let mut m = members(&[1, 1, 1]);
        m[0].active = 10;
        m[1].active = 1;
        let p = Picker::new(&Strategy::LeastConn, &m);
        assert_eq!(counts(&p, &m, 5), [0, 0, 5]);
        // Twice the weight carries twice the load at the same level.
        let mut m = members(&[2, 1]);
        m[0].active = 2;
        m[1].active = 1;
        let p = Picker::new(&Strategy::LeastConn, &m);
        // Tied: turns by weight, as nginx takes them.
        assert_eq!(counts(&p, &m, 3), [2, 1], "tied: weighted turns");
    }

    #[test]
    fn hashing_is_sticky_spreads_and_moves_few_keys_when_a_member_goes() {
        let m = members(&[1, 1, 1]);
        let p = Picker::new(&Strategy::IpHash, &m);
        let pick =
            |p: &Picker, m: &[Candidate], k: usize| p.pick(m, Some(hash(format!("10.0.0.{k}").as_bytes())));
        let first: Vec<usize> = (0..300).map(|k| pick(&p, &m, k).unwrap()).collect();
        let again: Vec<usize> = (0..300).map(|k| pick(&p, &m, k).unwrap()).collect();
        assert_eq!(first, again);
        for i in 0..3 {
            let n = first.iter().filter(|x| **x == i).count();
            assert!((60..=140).contains(&n), "member {i} has {n} of 300 keys");
        }
        // Member 2 down: only its keys move.
        let mut down = m.clone();
        down[2].up = false;
        for (k, before) in first.iter().enumerate() {
            let after = pick(&p, &down, k).unwrap();
            if *before != 2 {
                assert_eq!(after, *before, "key {k} moved though its member is up");
            } else {
                assert_ne!(after, 2);
            }
        }
        // A fourth member takes about a quarter of the keys, from the others.
        let four = members(&[1, 1, 1, 1]);
        let p4 = Picker::new(&Strategy::IpHash, &four);
        let moved = (0..300).filter(|k| pick(&p4, &four, *k).unwrap() != first[*k]).count();
        assert!((40..=110).contains(&moved), "{moved} of 300 keys moved");
    }
}
