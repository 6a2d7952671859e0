//! Heap held by an idle logged-in connection machine: a counting global allocator measures
//! the live bytes before the machine exists and after login, the active IQ answered and every
//! output drained, with everything but the machine dropped. The figure goes in the README.

// A global allocator needs `unsafe impl GlobalAlloc`; this test binary is the only place that
// does it, to count live heap bytes around the system allocator.
#![allow(
    unsafe_code,
    reason = "a counting global allocator needs `unsafe impl GlobalAlloc`"
)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use amarula_core::machine::ConnectionMachine;
use amarula_tests::expect::{logged_in, seeds};
use amarula_tests::harness::Pair;

/// Counts the bytes currently allocated through it.
struct Counting;

thread_local! {
    /// Net bytes allocated by this thread. Counting per thread keeps the test harness's own
    /// threads (output capture, timing) out of the figure; the machine lives on one thread.
    /// A `const` initializer never allocates, so the allocator can use it.
    static LIVE: Cell<isize> = const { Cell::new(0) };
}

fn count(delta: isize) {
    // `try_with`: during thread teardown the slot may be gone; those bytes are not ours.
    let _ = LIVE.try_with(|c| c.set(c.get() + delta));
}

// SAFETY: every call is forwarded unchanged to `System`, which upholds the `GlobalAlloc`
// contract; the counter only observes sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's guarantees on `layout` are passed on as they are.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            count(layout.size() as isize);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            count(layout.size() as isize);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout` (through this wrapper).
        unsafe { System.dealloc(ptr, layout) };
        count(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's guarantees are passed on; `ptr` came from `System`.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            count(new_size as isize - layout.size() as isize);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> isize {
    LIVE.with(Cell::get)
}

/// Logs in against the fake server, answers the active IQ, drains everything, and keeps only
/// the machine (boxed, so its own struct counts as heap too).
fn idle_machine() -> Box<ConnectionMachine> {
    let pair = logged_in(Pair::config(), seeds(1));
    assert!(pair.client.is_logged_in());
    Box::new(pair.client)
}

#[test]
fn idle_logged_in_machine_holds_at_most_32_kib() {
    // Warm-up: one full run first, so lazily built statics (token tables, tracing callsites)
    // are not charged to the machine.
    drop(idle_machine());
    let before = live();
    let mut machine = idle_machine();
    assert!(machine.poll_output().is_none(), "outputs left undrained");
    let held = usize::try_from(live() - before).unwrap_or(0);
    drop(machine);
    // Read before printing: the test harness's output capture allocates too.
    let after = live();
    let inline = size_of::<ConnectionMachine>();
    println!(
        "idle logged-in ConnectionMachine: {held} bytes of heap ({inline} of them the struct)"
    );
    assert!(held <= 32 * 1024, "{held} bytes held by an idle machine");
    // And it gives everything back.
    assert!(after <= before, "{} bytes leaked", after - before);
}
