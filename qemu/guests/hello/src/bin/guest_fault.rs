//! Guest fault: touch memory outside the domain; the hypervisor must crash only the domain.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(not(target_os = "none"))]
fn main() {}

#[cfg(target_os = "none")]
#[unsafe(no_mangle)]
extern "C" fn guest_main() -> ! {
    use guest_abi::sched;
    use hello_guest::{UNMAPPED_ADDRESS, println, shutdown};

    println!("GUEST-FAULT-TOUCHING {:#x}", UNMAPPED_ADDRESS);
    // SAFETY: deliberately reads an address outside our RAM; the hypervisor is expected to
    // stop this domain here. Volatile so the access is really made.
    let v = unsafe { core::ptr::read_volatile(UNMAPPED_ADDRESS as *const u32) };
    println!("FAIL guest-fault: read {:#x} and was not stopped", v);
    shutdown(sched::SHUTDOWN_POWEROFF)
}
