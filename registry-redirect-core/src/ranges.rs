//! A longest-prefix table of IP ranges, each with a value.
//!
//! [`RangeTable`] is built once from a list of prefixes and then returns, for
//! any address, the value of the most specific prefix that contains it. The
//! prefixes are flattened at build time into sorted, disjoint intervals and
//! filed in 2^16 buckets by their top 16 bits. A lookup reads the address's
//! bucket, then searches the few 16-bit (IPv4) or 64-bit (IPv6) keys of the
//! intervals that start inside it, whatever the number of prefixes.
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

use crate::client::canonical_network;

/// Marks an interval covered by no prefix. Value indexes are smaller, and it
/// fits beside a bucket entry's [`DIRECT`] bit.
const NO_VALUE: u32 = DIRECT - 1;

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
    /// (`10.0.0.1/8` is `10.0.0.0/8`). A prefix inside `::ffff:0:0/96` is
    /// the IPv4 prefix it maps (`::ffff:10.0.0.0/104` is `10.0.0.0/8`),
    /// because [`RangeTable::lookup`] looks up mapped addresses as IPv4.
    ///
    /// # Panics
    ///
    /// Panics when the prefixes make 2^31 - 1 or more distinct values, or
    /// blocks of more than 2^29 words (about 268 million IPv4 intervals),
    /// both far beyond any published range file.
    pub fn build<F>(entries: Vec<(IpNet, V)>, combine: F) -> Self
    where
        F: Fn(&V, &V) -> V,
    {
        let prefix_count = entries.len();
        let mut values = Vec::new();
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for (net, value) in entries {
            match canonical_network(net.trunc()) {
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
        self.v4.count + self.v6.count
    }
}

impl<V> Default for RangeTable<V> {
    fn default() -> Self {
        Self::empty()
    }
}

/// An unsigned address type: `u32` for IPv4, `u128` for IPv6.
trait Address: Copy + Ord + std::fmt::Debug {
    /// The bits below the top 16, as a bucket's block stores them.
    type Key: Word;
    const ZERO: Self;
    fn checked_next(self) -> Option<Self>;
    /// Returns the top 16 bits, as a bucket number.
    fn bucket(self) -> usize;
    /// Returns the first address of a bucket.
    fn bucket_start(bucket: usize) -> Self;
    /// Returns the bits below the top 16, with the lowest ones dropped when
    /// they do not fit in a key.
    fn key(self) -> Self::Key;
    /// Returns true when [`Address::key`] dropped no set bit.
    fn key_is_exact(self) -> bool;
}

impl Address for u32 {
    type Key = u16;
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
    fn key(self) -> u16 {
        self as u16
    }
    fn key_is_exact(self) -> bool {
        true
    }
}

/// The IPv6 bits a key drops: those below bit 80, which only prefixes
/// longer than /80 use.
const IPV6_DROPPED_BITS: u32 = 48;

impl Address for u128 {
    type Key = u64;
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
    fn key(self) -> u64 {
        (self >> IPV6_DROPPED_BITS) as u64
    }
    fn key_is_exact(self) -> bool {
        self.trailing_zeros() >= IPV6_DROPPED_BITS
    }
}

/// The unit of a bucket's block. A block is one header word (the number of
/// keys), the keys, then the values of the bucket's intervals. The values
/// are 16-bit codes (see [`Intervals`]), or whole indexes in a wide block.
trait Word: Copy + Ord + std::fmt::Debug {
    fn header(keys: usize) -> Self;
    fn key_count(self) -> usize;
    fn push_codes(codes: &[u16], words: &mut Vec<Self>);
    fn push_wide(values: &[u32], words: &mut Vec<Self>);
    /// Reads the `index`th code from the words after the keys.
    fn code(words: &[Self], index: usize) -> u16;
    /// Reads the `index`th value from the words after the keys of a wide block.
    fn wide(words: &[Self], index: usize) -> u32;
}

impl Word for u16 {
    /// Returns the header for `keys` keys. A bucket of 2^16 addresses has at
    /// most 2^16 - 1 interval starts after its first address, so it fits.
    fn header(keys: usize) -> Self {
        keys as u16
    }
    fn key_count(self) -> usize {
        usize::from(self)
    }
    fn push_codes(codes: &[u16], words: &mut Vec<Self>) {
        words.extend_from_slice(codes);
    }
    fn push_wide(values: &[u32], words: &mut Vec<Self>) {
        for &value in values {
            words.push(value as u16);
            words.push((value >> 16) as u16);
        }
    }
    #[inline]
    fn code(words: &[Self], index: usize) -> u16 {
        words[index]
    }
    #[inline]
    fn wide(words: &[Self], index: usize) -> u32 {
        u32::from(words[2 * index]) | u32::from(words[2 * index + 1]) << 16
    }
}

impl Word for u64 {
    fn header(keys: usize) -> Self {
        keys as u64
    }
    fn key_count(self) -> usize {
        self as usize
    }
    fn push_codes(codes: &[u16], words: &mut Vec<Self>) {
        for chunk in codes.chunks(4) {
            let word = chunk
                .iter()
                .rev()
                .fold(0u64, |word, &code| word << 16 | u64::from(code));
            words.push(word);
        }
    }
    fn push_wide(values: &[u32], words: &mut Vec<Self>) {
        for pair in values.chunks(2) {
            let high = pair.get(1).copied().unwrap_or(NO_VALUE);
            words.push(u64::from(pair[0]) | u64::from(high) << 32);
        }
    }
    #[inline]
    fn code(words: &[Self], index: usize) -> u16 {
        (words[index / 4] >> ((index % 4) * 16)) as u16
    }
    #[inline]
    fn wide(words: &[Self], index: usize) -> u32 {
        (words[index / 2] >> ((index % 2) * 32)) as u32
    }
}

struct Span<A, V> {
    start: A,
    end: A,
    value: V,
}

const BUCKETS: usize = 1 << 16;

/// Marks a bucket entry that is the value index of its whole bucket.
const DIRECT: u32 = 1 << 31;
/// Marks a bucket entry whose keys dropped bits (see
/// [`Address::key_is_exact`]). A key equal to the address's is then checked
/// against the exact starts.
const INEXACT: u32 = 1 << 30;
/// Marks a bucket entry whose block has whole value indexes, not codes.
const WIDE: u32 = 1 << 29;
/// The bits of a bucket entry that hold the block's offset.
const OFFSET: u32 = WIDE - 1;

/// The code for an interval covered by no prefix.
const NO_CODE: u16 = u16::MAX;
/// Buckets share a code base in groups of `1 << GROUP_BITS`: 64 buckets,
/// so the bases take 4 KiB per address family.
const GROUP_BITS: u32 = 6;

/// Sorted disjoint intervals, found through the top 16 bits of an address.
///
/// A bucket that lies inside one interval has that interval's value as its
/// entry. Any other bucket has a block in `blocks`, with a key for each
/// interval that starts inside the bucket and a value for each of those
/// intervals and for the one the bucket starts in.
///
/// A value is a 16-bit code added to the base of its group of 64 buckets.
/// Values are numbered in the order of the prefixes' starts, so nearby
/// buckets have nearby values. A look-up reads the entry, then one block:
/// 4 bytes per interval for IPv4 and 10 for IPv6, so a bucket of up to 16
/// IPv4 or 6 IPv6 intervals takes one or two cache lines.
#[derive(Debug, Clone)]
struct Intervals<A: Address> {
    /// One entry per bucket (see [`DIRECT`], [`INEXACT`], [`WIDE`] and
    /// [`OFFSET`]); empty when there are no intervals.
    buckets: Vec<u32>,
    /// The lowest value in each group of buckets, which codes are added to.
    bases: Vec<u32>,
    blocks: Vec<A::Key>,
    /// All interval starts and values, kept only when some block is inexact.
    exact_starts: Vec<A>,
    exact_values: Vec<u32>,
    count: usize,
}

impl<A: Address> Intervals<A> {
    fn empty() -> Self {
        Intervals {
            buckets: Vec::new(),
            bases: Vec::new(),
            blocks: Vec::new(),
            exact_starts: Vec::new(),
            exact_values: Vec::new(),
            count: 0,
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
            assert!(
                values.len() < NO_VALUE as usize,
                "range table has too many prefixes: at most 2^31 - 2 distinct ones fit"
            );
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

        Self::index(out.starts, out.values)
    }

    /// Sorts the intervals into buckets. `starts[0]` is the lowest address,
    /// and `starts[i]..starts[i + 1]` maps to `values[i]`.
    fn index(starts: Vec<A>, values: Vec<u32>) -> Self {
        // For each bucket, the range of its intervals: the one its first
        // address is in, then those that start inside it.
        let mut spans = Vec::with_capacity(BUCKETS);
        let mut first = 0;
        for bucket in 0..BUCKETS {
            let bucket_start = A::bucket_start(bucket);
            while first + 1 < starts.len() && starts[first + 1] <= bucket_start {
                first += 1;
            }
            let mut end = first + 1;
            while end < starts.len() && starts[end].bucket() == bucket {
                end += 1;
            }
            spans.push(first..end);
        }

        let bases: Vec<u32> = spans
            .chunks(1 << GROUP_BITS)
            .map(|group| {
                group
                    .iter()
                    .filter(|span| span.len() > 1)
                    .flat_map(|span| &values[span.clone()])
                    .copied()
                    .filter(|&value| value != NO_VALUE)
                    .min()
                    .unwrap_or(0)
            })
            .collect();

        let mut buckets = Vec::with_capacity(BUCKETS);
        let mut blocks = Vec::new();
        let mut codes = Vec::new();
        let mut any_inexact = false;
        for (bucket, span) in spans.into_iter().enumerate() {
            if span.len() == 1 {
                buckets.push(DIRECT | values[span.start]);
                continue;
            }
            let mut entry = u32::try_from(blocks.len())
                .ok()
                .filter(|&offset| offset <= OFFSET)
                .expect("range table has too many intervals: its blocks exceed 2^29 words");
            let inside = &starts[span.start + 1..span.end];
            blocks.push(A::Key::header(inside.len()));
            blocks.extend(inside.iter().map(|start| start.key()));
            if !inside.iter().all(|start| start.key_is_exact()) {
                entry |= INEXACT;
                any_inexact = true;
            }

            let base = bases[bucket >> GROUP_BITS];
            codes.clear();
            for &value in &values[span.clone()] {
                let code = match value {
                    NO_VALUE => Some(NO_CODE),
                    _ => value
                        .checked_sub(base)
                        .and_then(|code| u16::try_from(code).ok())
                        .filter(|&code| code != NO_CODE),
                };
                match code {
                    Some(code) => codes.push(code),
                    None => break,
                }
            }
            if codes.len() == span.len() {
                A::Key::push_codes(&codes, &mut blocks);
            } else {
                A::Key::push_wide(&values[span], &mut blocks);
                entry |= WIDE;
            }
            buckets.push(entry);
        }

        let count = starts.len();
        let (exact_starts, exact_values) = if any_inexact {
            (starts, values)
        } else {
            (Vec::new(), Vec::new())
        };
        Intervals {
            buckets,
            bases,
            blocks,
            exact_starts,
            exact_values,
            count,
        }
    }

    #[inline]
    fn lookup(&self, addr: A) -> u32 {
        let bucket = addr.bucket();
        let Some(&entry) = self.buckets.get(bucket) else {
            return NO_VALUE;
        };
        if entry & DIRECT != 0 {
            return entry & !DIRECT;
        }
        let offset = (entry & OFFSET) as usize;
        let key_count = self.blocks[offset].key_count();
        let keys = &self.blocks[offset + 1..=offset + key_count];
        let key = addr.key();
        // The number of intervals after the bucket's first that start at or
        // before `addr`, which is the index of the one containing it.
        let index = keys.partition_point(|&start| start <= key);
        if entry & INEXACT != 0 && index > 0 && keys[index - 1] == key {
            return self.exact_lookup(addr);
        }
        let values = &self.blocks[offset + 1 + key_count..];
        if entry & WIDE != 0 {
            return A::Key::wide(values, index);
        }
        match A::Key::code(values, index) {
            NO_CODE => NO_VALUE,
            code => self.bases[bucket >> GROUP_BITS] + u32::from(code),
        }
    }

    /// Returns the value index for `addr` by searching every interval start.
    /// It is used when the address's key equals a key that dropped bits.
    #[cold]
    fn exact_lookup(&self, addr: A) -> u32 {
        let count = self.exact_starts.partition_point(|&start| start <= addr);
        count
            .checked_sub(1)
            .and_then(|index| self.exact_values.get(index))
            .copied()
            .unwrap_or(NO_VALUE)
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
        let table = innermost(&[("192.0.2.0/24", 1), ("2001:db8::/32", 2)]);
        assert_eq!(table.lookup(ip("::ffff:192.0.2.7")), Some(&1));
        assert_eq!(table.lookup(ip("::ffff:198.51.100.1")), None);
    }

    #[test]
    fn ipv4_mapped_prefixes_are_ipv4() {
        let table = innermost(&[
            ("192.0.2.0/24", 1),
            ("::ffff:0:0/96", 2),
            ("::ffff:10.0.0.0/104", 3),
            ("::ffff:10.1.0.0/112", 4),
            ("10.1.0.0/16", 5),
            ("::/0", 6),
        ]);
        assert_eq!(table.lookup(ip("192.0.2.7")), Some(&1));
        assert_eq!(table.lookup(ip("198.51.100.1")), Some(&2));
        assert_eq!(table.lookup(ip("::ffff:198.51.100.1")), Some(&2));
        assert_eq!(table.lookup(ip("10.2.0.1")), Some(&3));
        assert_eq!(table.lookup(ip("::ffff:10.2.0.1")), Some(&3));
        // The later of two identical prefixes is the inner one.
        assert_eq!(table.lookup(ip("10.1.0.1")), Some(&5));
        assert_eq!(table.lookup(ip("::1")), Some(&6));
        assert_eq!(table.lookup(ip("::ffff:0:1:0:0")), Some(&6));
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
