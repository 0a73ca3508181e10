//! Counting heap allocations made by a piece of code.
//!
//! [`CountingAllocator`] wraps the system allocator and counts, per thread,
//! every allocation and reallocation with its size. A binary opts in by
//! declaring it as its global allocator. Only such binaries pay for the
//! counting, which is why this library does not declare it itself:
//!
//! ```
//! use registry_redirect_benches::allocations::{count_allocations, CountingAllocator};
//!
//! #[global_allocator]
//! static ALLOCATOR: CountingAllocator = CountingAllocator;
//!
//! fn main() {
//!     let (text, count) = count_allocations(|| String::from("one allocation"));
//!     assert_eq!(count.allocations, 1);
//!     assert_eq!(count.bytes, text.len() as u64);
//!     let (_, count) = count_allocations(|| 2 + 2);
//!     assert_eq!(count.allocations, 0);
//! }
//! ```
//!
//! The counters are per thread, so allocations made by other threads (a
//! test harness running tests in parallel) are not counted.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    // Const-initialized `Cell`s have no destructor and are never lazily
    // initialized, so touching them inside the allocator cannot allocate.
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
    static BYTES: Cell<u64> = const { Cell::new(0) };
}

/// The system allocator, counting allocations per thread.
#[derive(Debug, Clone, Copy, Default)]
pub struct CountingAllocator;

fn record(size: usize) {
    // `try_with` fails only after the thread's counters are destroyed at
    // thread exit (std `LocalKey::try_with`). Such allocations go uncounted
    // instead of panicking inside the allocator.
    let _ = ALLOCATIONS.try_with(|count| count.set(count.get() + 1));
    let _ = BYTES.try_with(|bytes| bytes.set(bytes.get() + size as u64));
}

// SAFETY: every method forwards to `System` with the same arguments, so
// `System`'s guarantees hold; `record` only updates thread-local counters
// and neither allocates nor unwinds.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        // SAFETY: the caller upholds `GlobalAlloc::alloc_zeroed`'s contract.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        record(new_size);
        // SAFETY: the caller upholds `GlobalAlloc::realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller upholds `GlobalAlloc::dealloc`'s contract.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Allocations counted on one thread over some stretch of code.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AllocationCount {
    /// Calls to `alloc`, `alloc_zeroed` and `realloc`.
    pub allocations: u64,
    /// Bytes requested by those calls (the new size, for `realloc`).
    pub bytes: u64,
}

/// Returns the counts of this thread since it started. They stay zero
/// unless the binary's global allocator is [`CountingAllocator`].
pub fn current_count() -> AllocationCount {
    AllocationCount {
        allocations: ALLOCATIONS.try_with(Cell::get).unwrap_or(0),
        bytes: BYTES.try_with(Cell::get).unwrap_or(0),
    }
}

/// Runs `work` and returns its result with the allocations it made on this
/// thread. Dropping the result happens after counting, so it is not counted
/// (deallocations are never counted).
pub fn count_allocations<R>(work: impl FnOnce() -> R) -> (R, AllocationCount) {
    let before = current_count();
    let result = work();
    let after = current_count();
    let count = AllocationCount {
        allocations: after.allocations.saturating_sub(before.allocations),
        bytes: after.bytes.saturating_sub(before.bytes),
    };
    (result, count)
}
