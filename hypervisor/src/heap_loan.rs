//! Memory lent to the heap for a while: a decoder that keeps a large buffer on the heap
//! (zstd's window, tens of MiB) while the hypervisor's own heap is a few MiB. The caller
//! lends a region it owns and will not touch meanwhile (scratch in the RAM of a domain being
//! built); the allocator serves what its own heap cannot from there, and everything
//! allocated there must be freed before the loan ends.
//!
//! The allocator lives with the bare-metal glue, which registers how to lend to it; on the
//! host (tests) nothing is registered and the closure simply runs on the system allocator.

/// Runs its closure with the region lent to the allocator.
pub type Lender = fn(&mut [u8], &mut dyn FnMut());

static LENDER: spin::Once<Lender> = spin::Once::new();

/// Register the allocator's lender (once, at boot).
pub fn set_lender(lender: Lender) {
    LENDER.call_once(|| lender);
}

/// Run `f` with `region` lent to the heap.
pub fn with_loan(region: &mut [u8], f: &mut dyn FnMut()) {
    match LENDER.get() {
        Some(lend) => lend(region, f),
        None => f(),
    }
}
