//! Guest fault: touch memory outside the domain. On ARM the hypervisor must crash only the
//! domain (xhv), or answer with a data abort in the guest (Xen, which leaves the rest to the
//! guest). On x86 nothing is there, as for an HVM/PVH domain on Xen without a device model:
//! a load reads all ones and a store is dropped, and the guest checks both.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(not(target_os = "none"))]
fn main() {}

#[cfg(target_os = "none")]
#[unsafe(no_mangle)]
extern "C" fn guest_main() -> ! {
    use hello_guest::{UNMAPPED_ADDRESS, println, shutdown};

    println!("GUEST-FAULT-TOUCHING {:#x}", UNMAPPED_ADDRESS);
    touch(UNMAPPED_ADDRESS);
    shutdown(guest_abi::sched::SHUTDOWN_POWEROFF)
}

/// x86: a load and a store where nothing is, then a load again.
#[cfg(all(target_os = "none", target_arch = "x86_64"))]
fn touch(address: u64) {
    use hello_guest::println;
    let at = address as *mut u32;
    // SAFETY: deliberately touches guest-physical space outside our RAM (identity-mapped by
    // our page tables); the hypervisor completes the accesses. Volatile so they are made.
    let (before, after) = unsafe {
        let before = core::ptr::read_volatile(at);
        core::ptr::write_volatile(at, 0x1234_5678);
        (before, core::ptr::read_volatile(at))
    };
    if before == u32::MAX && after == u32::MAX {
        println!("PASS guest-fault: nothing at {:#x}: reads all ones, a write is dropped", address);
    } else {
        println!("FAIL guest-fault: read {:#x}, then {:#x} after a write", before, after);
    }
}

/// ARM: one load, which must not come back.
#[cfg(all(target_os = "none", not(target_arch = "x86_64")))]
fn touch(address: u64) {
    use hello_guest::println;
    // On Xen the access comes back as a data abort (reported by the exception vector).
    hello_guest::EXPECTED_FAULT_ADDRESS.store(address, core::sync::atomic::Ordering::Relaxed);
    // SAFETY: deliberately reads an address outside our RAM; the hypervisor is expected to
    // stop this domain here. Volatile so the access is really made.
    let v = unsafe { core::ptr::read_volatile(address as *const u32) };
    println!("FAIL guest-fault: read {:#x} and was not stopped", v);
}
