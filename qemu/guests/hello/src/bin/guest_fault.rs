//! Guest fault: touch memory outside the domain; the hypervisor must crash only the domain
//! (xhv), or answer with a data abort in the guest (Xen, which leaves the rest to the guest).
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(not(target_os = "none"))]
fn main() {}

#[cfg(target_os = "none")]
#[unsafe(no_mangle)]
extern "C" fn guest_main() -> ! {
    use guest_abi::sched;
    use hello_guest::{UNMAPPED_ADDRESS, println, shutdown};

    println!("GUEST-FAULT-TOUCHING {:#x}", UNMAPPED_ADDRESS);
    // On Xen the access comes back as a data abort (reported by the exception vector).
    hello_guest::EXPECTED_FAULT_ADDRESS.store(UNMAPPED_ADDRESS, core::sync::atomic::Ordering::Relaxed);
    // SAFETY: deliberately reads an address outside our RAM; the hypervisor is expected to
    // stop this domain here. Volatile so the access is really made.
    let v = unsafe { core::ptr::read_volatile(UNMAPPED_ADDRESS as *const u32) };
    println!("FAIL guest-fault: read {:#x} and was not stopped", v);
    shutdown(sched::SHUTDOWN_POWEROFF)
}
