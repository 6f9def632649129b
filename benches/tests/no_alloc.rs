//! The per-packet selection path must not allocate: `select_backend` (random
//! and Maglev, IPv4 and IPv6 flows) and `FlowKey::hash` are called 10k times
//! each under a counting global allocator and must allocate zero times.
//!
//! The counter is per thread, so allocations by the test harness's other
//! threads do not count.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::hint::black_box;

use lb_benches::{cluster_ip_frontend, flow, node, single_frontend, XorShift32};
use lb_core::select::select_backend;
use lb_core::{decide, FlowContext, FlowKey, FlowState, L4Proto, LbAlgorithm, Scope, Selection};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    // `try_with`: the slot may be gone while the thread is being torn down.
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

// SAFETY: every method forwards to `System` unchanged; counting touches only
// a const-initialised thread-local `Cell`, which never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as ours.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// How many allocations `f` makes on this thread.
fn allocations(f: impl FnOnce()) -> u64 {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

const CALLS: usize = 10_000;

#[test]
fn the_counter_sees_allocations() {
    assert!(allocations(|| drop(black_box(vec![1u8; 16]))) >= 1);
}

#[test]
fn select_backend_does_not_allocate() {
    let mut rng = XorShift32::new(42);
    let inputs: Vec<(u32, u32)> = (0..CALLS)
        .map(|_| (rng.next_u32(), rng.next_u32()))
        .collect();
    for algorithm in [LbAlgorithm::Random, LbAlgorithm::Maglev] {
        for n in [1usize, 10, 100] {
            let (_tables, fe) = single_frontend(n, algorithm, false);
            let n_allocs = allocations(|| {
                for &(hash, entropy) in &inputs {
                    assert!(black_box(select_backend(black_box(&fe), hash, entropy)).is_some());
                }
            });
            assert_eq!(
                n_allocs, 0,
                "select_backend ({algorithm}, {n} backends) allocated {n_allocs} times in {CALLS} calls"
            );
        }
    }
}

#[test]
fn flow_hash_does_not_allocate() {
    let v4: Vec<FlowKey> = (0..CALLS as u32)
        .map(|i| {
            flow(
                i,
                1024 + (i % 60_000) as u16,
                cluster_ip_frontend(i as usize),
            )
        })
        .collect();
    let v6: Vec<FlowKey> = (0..CALLS as u16)
        .map(|i| FlowKey {
            src: format!("2001:db8::{i:x}").parse().unwrap(),
            dst: "fd00::10".parse().unwrap(),
            sport: 1024 + i,
            dport: 443,
            proto: L4Proto::Udp,
        })
        .collect();
    for keys in [&v4, &v6] {
        let n_allocs = allocations(|| {
            for (seed, k) in keys.iter().enumerate() {
                black_box(black_box(k).hash(seed as u32));
            }
        });
        assert_eq!(
            n_allocs, 0,
            "FlowKey::hash allocated {n_allocs} times in {CALLS} calls"
        );
    }
}

#[test]
fn decide_on_an_established_flow_does_not_allocate() {
    let (tables, _) = single_frontend(10, LbAlgorithm::Maglev, false);
    let node = node();
    let keys: Vec<FlowKey> = (0..CALLS as u32)
        .map(|i| flow(i, 40_000, cluster_ip_frontend(0)))
        .collect();
    let ctx = FlowContext {
        now: 0,
        entropy: 0,
        scope: Scope::External,
    };
    let mut state = FlowState::new();
    for k in &keys {
        decide(&tables, &node, &mut state, k, ctx);
    }
    let n_allocs = allocations(|| {
        for k in &keys {
            match decide(&tables, &node, &mut state, k, ctx) {
                lb_core::Verdict::Forward(f) => assert_eq!(f.selection, Selection::Established),
                other => panic!("unexpected {other:?}"),
            }
        }
    });
    assert_eq!(
        n_allocs, 0,
        "decide (established) allocated {n_allocs} times"
    );
}
