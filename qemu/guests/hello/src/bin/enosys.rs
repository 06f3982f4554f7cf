//! ENOSYS: hypercalls the hypervisor does not implement must return -ENOSYS, not crash it.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(not(target_os = "none"))]
fn main() {}

#[cfg(target_os = "none")]
#[unsafe(no_mangle)]
extern "C" fn guest_main() -> ! {
    use guest_abi::{errno, hypercall as nr, sched};
    use hello_guest::{check, hypercall, println, shutdown};

    // Numbers past the end of Xen's table, one Xen has but we do not, and a huge one.
    for n in [63u64, nr::ARGO_OP, 0xffff_ffff] {
        let r = hypercall(n, [1, 2, 3, 4, 5]);
        check("enosys", r == -errno::ENOSYS, format_args!("hypercall {} returned {}", n, r));
    }
    println!("ENOSYS-GUEST-DONE");
    shutdown(sched::SHUTDOWN_POWEROFF)
}
