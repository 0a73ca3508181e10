//! A longest-prefix table of IP ranges, each with a value.
//!
//! [`RangeTable`] is built once from a list of prefixes and then returns, for
//! any address, the value of the most specific prefix that contains it. The
//! prefixes are flattened at build time into sorted, disjoint intervals, so a
//! lookup is a binary search inside a small bucket picked by the address's
//! top 16 bits, whatever the number of prefixes.
//!
//! Nested prefixes combine their values at build time through the function
//! given to [`RangeTable::build`]: "most specific wins" keeps the inner value,
//! while a set union lets one lookup find every prefix that contains an
//! address. Identical prefixes are merged with the same function.
//!
//! ```
//! use registry_redirect_core::ranges::RangeTable;
//!
//! let table = RangeTable::build(
//!     vec![
//!         ("10.0.0.0/8".parse().unwrap(), "private"),
//!         ("10.1.0.0/16".parse().unwrap(), "lab"),
//!     ],
//!     |_outer, inner| *inner,
//! );
//! assert_eq!(table.lookup("10.1.2.3".parse().unwrap()), Some(&"lab"));
//! assert_eq!(table.lookup("10.2.0.1".parse().unwrap()), Some(&"private"));
//! assert_eq!(table.lookup("::ffff:10.1.0.9".parse().unwrap()), Some(&"lab"));
//! assert_eq!(table.lookup("192.0.2.1".parse().unwrap()), None);
//! ```

use std::net::IpAddr;

use ipnet::IpNet;

/// Marks an interval covered by no prefix.
const NO_VALUE: u32 = u32::MAX;

/// A longest-prefix table from IPv4 and IPv6 prefixes to values.
#[derive(Debug, Clone)]
pub struct RangeTable<V> {
    v4: Intervals<u32>,
    v6: Intervals<u128>,
    values: Vec<V>,
    prefix_count: usize,
}

impl<V: Clone> RangeTable<V> {
    /// Builds a table from `(prefix, value)` pairs.
    ///
    /// `combine(outer, inner)` gives the value stored for `inner`'s addresses
    /// when `inner` lies inside `outer`, and merges identical prefixes (the
    /// earlier one is `outer`). Host bits set in a prefix are ignored
    /// (`10.0.0.1/8` is `10.0.0.0/8`).
    pub fn build<F>(entries: Vec<(IpNet, V)>, combine: F) -> Self
    where
        F: Fn(&V, &V) -> V,
    {
        let prefix_count = entries.len();
        let mut values = Vec::new();
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for (net, value) in entries {
            match net.trunc() {
                IpNet::V4(net) => {
                    let start = u32::from(net.network());
                    let end = u32::from(net.broadcast());
                    v4.push(Span { start, end, value });
                }
                IpNet::V6(net) => {
                    let start = u128::from(net.network());
                    let end = u128::from(net.broadcast());
                    v6.push(Span { start, end, value });
                }
            }
        }
        let v4 = Intervals::build(v4, &combine, &mut values);
        let v6 = Intervals::build(v6, &combine, &mut values);
        RangeTable {
            v4,
            v6,
            values,
            prefix_count,
        }
    }
}

impl<V> RangeTable<V> {
    /// Creates a table with no prefixes, where every lookup finds nothing.
    pub fn empty() -> Self {
        RangeTable {
            v4: Intervals::empty(),
            v6: Intervals::empty(),
            values: Vec::new(),
            prefix_count: 0,
        }
    }

    /// Returns the value of the most specific prefix containing `addr`.
    ///
    /// An IPv4-mapped IPv6 address (`::ffff:192.0.2.1`) is looked up as the
    /// IPv4 address it carries.
    #[inline]
    pub fn lookup(&self, addr: IpAddr) -> Option<&V> {
        let index = match addr {
            IpAddr::V4(v4) => self.v4.lookup(u32::from(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => self.v4.lookup(u32::from(v4)),
                None => self.v6.lookup(u128::from(v6)),
            },
        };
        if index == NO_VALUE {
            return None;
        }
        self.values.get(index as usize)
    }

    /// Returns the number of prefixes the table was built from, duplicates included.
    pub fn prefix_count(&self) -> usize {
        self.prefix_count
    }

    /// Returns the number of disjoint intervals the prefixes were flattened into.
    pub fn interval_count(&self) -> usize {
        self.v4.starts.len() + self.v6.starts.len()
    }
}

impl<V> Default for RangeTable<V> {
    fn default() -> Self {
        Self::empty()
    }
}

/// An unsigned address type: `u32` for IPv4, `u128` for IPv6.
trait Address: Copy + Ord + std::fmt::Debug {
    const ZERO: Self;
    fn checked_next(self) -> Option<Self>;
    /// Returns the top 16 bits, as a bucket number.
    fn bucket(self) -> usize;
    /// Returns the first address of a bucket.
    fn bucket_start(bucket: usize) -> Self;
}

impl Address for u32 {
    const ZERO: Self = 0;
    fn checked_next(self) -> Option<Self> {
        self.checked_add(1)
    }
    fn bucket(self) -> usize {
        (self >> (Self::BITS - 16)) as usize
    }
    fn bucket_start(bucket: usize) -> Self {
        (bucket as u32) << (Self::BITS - 16)
    }
}

impl Address for u128 {
    const ZERO: Self = 0;
    fn checked_next(self) -> Option<Self> {
        self.checked_add(1)
    }
    fn bucket(self) -> usize {
        (self >> (Self::BITS - 16)) as usize
    }
    fn bucket_start(bucket: usize) -> Self {
        (bucket as u128) << (Self::BITS - 16)
    }
}

struct Span<A, V> {
    start: A,
    end: A,
    value: V,
}

const BUCKETS: usize = 1 << 16;

/// Sorted disjoint intervals: `starts[i]..starts[i + 1]` maps to `values[i]`.
#[derive(Debug, Clone)]
struct Intervals<A> {
    starts: Vec<A>,
    values: Vec<u32>,
    /// For each 16-bit bucket, the interval containing the bucket's first
    /// address; `BUCKETS + 1` entries, so a bucket's intervals are
    /// `buckets[b]..=buckets[b + 1]`. Empty when there are no intervals.
    buckets: Vec<u32>,
}

impl<A: Address> Intervals<A> {
    fn empty() -> Self {
        Intervals {
            starts: Vec::new(),
            values: Vec::new(),
            buckets: Vec::new(),
        }
    }

    fn build<V: Clone, F: Fn(&V, &V) -> V>(
        mut spans: Vec<Span<A, V>>,
        combine: &F,
        values: &mut Vec<V>,
    ) -> Self {
        if spans.is_empty() {
            return Self::empty();
        }

        // Outer prefixes first: by start, then by size (the larger end first).
        // The sort is stable, so identical prefixes keep their input order.
        spans.sort_by(|a, b| a.start.cmp(&b.start).then(b.end.cmp(&a.end)));

        let mut out = IntervalWriter {
            starts: Vec::with_capacity(spans.len() * 2 + 1),
            values: Vec::with_capacity(spans.len() * 2 + 1),
        };
        // Open prefixes, innermost last: (end, index of the effective value).
        let mut open: Vec<(A, u32)> = Vec::new();
        // The first address not yet written; `None` once the space is covered.
        let mut cursor = Some(A::ZERO);

        let mut index = 0;
        while index < spans.len() {
            let start = spans[index].start;
            let end = spans[index].end;

            // Merge identical prefixes into one value, earlier ones as outer.
            let mut value = spans[index].value.clone();
            index += 1;
            while index < spans.len() && spans[index].start == start && spans[index].end == end {
                value = combine(&value, &spans[index].value);
                index += 1;
            }

            close_before(&mut open, &mut out, &mut cursor, start);
            if let Some(from) = cursor {
                if from < start {
                    out.push(from, open.last().map_or(NO_VALUE, |&(_, v)| v));
                }
            }
            cursor = Some(start);

            let effective = match open.last() {
                Some(&(_, outer)) => combine(&values[outer as usize], &value),
                None => value,
            };
            values.push(effective);
            open.push((end, (values.len() - 1) as u32));
        }

        while let Some((end, value)) = open.pop() {
            if let Some(from) = cursor {
                if from <= end {
                    out.push(from, value);
                }
            }
            cursor = end.checked_next();
        }
        if let Some(from) = cursor {
            out.push(from, NO_VALUE);
        }

        let buckets = bucket_index(&out.starts);
        Intervals {
            starts: out.starts,
            values: out.values,
            buckets,
        }
    }

    #[inline]
    fn lookup(&self, addr: A) -> u32 {
        if self.starts.is_empty() {
            return NO_VALUE;
        }
        let bucket = addr.bucket();
        let first = self.buckets[bucket] as usize;
        let last = self.buckets[bucket + 1] as usize;
        let candidates = &self.starts[first..=last.min(self.starts.len() - 1)];
        // `starts[first] <= addr` is true by construction, so the count is at least 1.
        let offset = candidates.partition_point(|&start| start <= addr);
        self.values[first + offset.saturating_sub(1)]
    }
}

/// Writes the intervals of the prefixes that end before `next_start`.
fn close_before<A: Address>(
    open: &mut Vec<(A, u32)>,
    out: &mut IntervalWriter<A>,
    cursor: &mut Option<A>,
    next_start: A,
) {
    while let Some(&(end, value)) = open.last() {
        if end >= next_start {
            break;
        }
        if let Some(from) = *cursor {
            if from <= end {
                out.push(from, value);
            }
        }
        *cursor = end.checked_next();
        open.pop();
    }
}

struct IntervalWriter<A> {
    starts: Vec<A>,
    values: Vec<u32>,
}

impl<A: Address> IntervalWriter<A> {
    /// Appends an interval, extending the previous one when the value is the same.
    fn push(&mut self, start: A, value: u32) {
        if self.values.last() == Some(&value) {
            return;
        }
        if self.starts.last() == Some(&start) {
            // A zero-length interval is replaced by the one that starts at the same address.
            self.values.pop();
            self.starts.pop();
            if self.values.last() == Some(&value) {
                return;
            }
        }
        self.starts.push(start);
        self.values.push(value);
    }
}

fn bucket_index<A: Address>(starts: &[A]) -> Vec<u32> {
    let mut buckets = Vec::with_capacity(BUCKETS + 1);
    let mut interval = 0usize;
    for bucket in 0..BUCKETS {
        let first_address = A::bucket_start(bucket);
        while interval + 1 < starts.len() && starts[interval + 1] <= first_address {
            interval += 1;
        }
        buckets.push(interval as u32);
    }
    buckets.push((starts.len() - 1) as u32);
    buckets
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(text: &str) -> IpNet {
        text.parse().unwrap()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn innermost(entries: &[(&str, u32)]) -> RangeTable<u32> {
        let entries = entries.iter().map(|&(n, v)| (net(n), v)).collect();
        RangeTable::build(entries, |_, inner| *inner)
    }

    #[test]
    fn most_specific_prefix_wins() {
        let table = innermost(&[("10.0.0.0/8", 1), ("10.1.0.0/16", 2), ("10.1.2.0/24", 3)]);
        assert_eq!(table.lookup(ip("10.1.2.3")), Some(&3));
        assert_eq!(table.lookup(ip("10.1.3.3")), Some(&2));
        assert_eq!(table.lookup(ip("10.200.0.0")), Some(&1));
        assert_eq!(table.lookup(ip("10.255.255.255")), Some(&1));
        assert_eq!(table.lookup(ip("11.0.0.0")), None);
        assert_eq!(table.lookup(ip("9.255.255.255")), None);
    }

    #[test]
    fn order_of_insertion_does_not_matter() {
        let table = innermost(&[("10.1.2.0/24", 3), ("10.0.0.0/8", 1), ("10.1.0.0/16", 2)]);
        assert_eq!(table.lookup(ip("10.1.2.3")), Some(&3));
        assert_eq!(table.lookup(ip("10.1.3.3")), Some(&2));
    }

    #[test]
    fn edges_of_address_space() {
        let table = innermost(&[("0.0.0.0/1", 1), ("255.255.255.255/32", 2), ("::/0", 3)]);
        assert_eq!(table.lookup(ip("0.0.0.0")), Some(&1));
        assert_eq!(table.lookup(ip("127.255.255.255")), Some(&1));
        assert_eq!(table.lookup(ip("128.0.0.0")), None);
        assert_eq!(table.lookup(ip("255.255.255.255")), Some(&2));
        assert_eq!(
            table.lookup(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")),
            Some(&3)
        );
    }

    #[test]
    fn ipv4_mapped_ipv6_uses_ipv4_table() {
        let table = innermost(&[("192.0.2.0/24", 1), ("::ffff:0:0/96", 2)]);
        assert_eq!(table.lookup(ip("::ffff:192.0.2.7")), Some(&1));
        assert_eq!(table.lookup(ip("::ffff:198.51.100.1")), None);
    }

    #[test]
    fn ipv6_prefixes() {
        let table = innermost(&[("2001:db8::/32", 1), ("2001:db8:1::/48", 2)]);
        assert_eq!(table.lookup(ip("2001:db8:1::5")), Some(&2));
        assert_eq!(table.lookup(ip("2001:db8:2::5")), Some(&1));
        assert_eq!(table.lookup(ip("2001:db9::")), None);
        assert_eq!(table.lookup(ip("10.0.0.1")), None);
    }

    #[test]
    fn identical_prefixes_are_combined() {
        let entries = vec![(net("10.0.0.0/8"), 0b01u32), (net("10.0.0.0/8"), 0b10)];
        let table = RangeTable::build(entries, |a, b| a | b);
        assert_eq!(table.lookup(ip("10.9.9.9")), Some(&0b11));
    }

    #[test]
    fn nested_prefixes_union_values() {
        let entries = vec![
            (net("10.0.0.0/8"), 0b001u32),
            (net("10.1.0.0/16"), 0b010),
            (net("10.1.1.0/24"), 0b100),
        ];
        let table = RangeTable::build(entries, |a, b| a | b);
        assert_eq!(table.lookup(ip("10.1.1.1")), Some(&0b111));
        assert_eq!(table.lookup(ip("10.1.2.1")), Some(&0b011));
        assert_eq!(table.lookup(ip("10.2.0.1")), Some(&0b001));
    }

    #[test]
    fn host_bits_are_ignored() {
        let table = innermost(&[("10.0.0.1/8", 1)]);
        assert_eq!(table.lookup(ip("10.3.3.3")), Some(&1));
    }

    #[test]
    fn adjacent_prefixes() {
        let table = innermost(&[("10.0.0.0/9", 1), ("10.128.0.0/9", 2), ("11.0.0.0/8", 3)]);
        assert_eq!(table.lookup(ip("10.127.255.255")), Some(&1));
        assert_eq!(table.lookup(ip("10.128.0.0")), Some(&2));
        assert_eq!(table.lookup(ip("11.0.0.0")), Some(&3));
        assert_eq!(table.lookup(ip("12.0.0.0")), None);
    }

    #[test]
    fn empty_table_finds_nothing() {
        let table: RangeTable<u32> = RangeTable::build(Vec::new(), |_, b| *b);
        assert_eq!(table.lookup(ip("10.0.0.1")), None);
        assert_eq!(table.lookup(ip("::1")), None);
    }

    /// Compares the table with a linear scan over many generated prefixes.
    #[test]
    fn matches_linear_scan() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut entries = Vec::new();
        for value in 0..2000u32 {
            let len = 8 + (next() % 25) as u8;
            // Few distinct top octets, so prefixes nest and overlap often.
            let addr = ((next() as u32) & 0x0fff_ffff) | 0x0a00_0000;
            let prefix = IpNet::new(IpAddr::from(addr.to_be_bytes()), len)
                .unwrap()
                .trunc();
            entries.push((prefix, value));
        }
        let table = RangeTable::build(entries.clone(), |_, inner| *inner);
        for _ in 0..20_000 {
            let addr = IpAddr::from((((next() as u32) & 0x0fff_ffff) | 0x0a00_0000).to_be_bytes());
            // Most specific; the last of identical prefixes wins, as `combine` keeps the inner.
            let expected = entries
                .iter()
                .filter(|(n, _)| n.contains(&addr))
                .max_by_key(|(n, _)| n.prefix_len())
                .map(|(n, _)| entries.iter().rfind(|(m, _)| m == n).unwrap().1);
            assert_eq!(table.lookup(addr).copied(), expected, "{addr}");
        }
    }
}
