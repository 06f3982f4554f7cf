//! Vendor probe (x86): the other vendor's hypercall instruction (`vmcall` on AMD, `vmmcall` on
//! Intel) must raise #UD in the guest or act as the native one, never fault the hypervisor.
//! x86 only; elsewhere it says so and powers off.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(not(target_os = "none"))]
fn main() {}

#[cfg(all(target_os = "none", not(target_arch = "x86_64")))]
#[unsafe(no_mangle)]
extern "C" fn guest_main() -> ! {
    hello_guest::println!("VENDOR-PROBE-SKIPPED (x86 only)");
    hello_guest::shutdown(guest_abi::sched::SHUTDOWN_POWEROFF)
}

#[cfg(all(target_arch = "x86_64", target_os = "none"))]
#[unsafe(no_mangle)]
extern "C" fn guest_main() -> ! {
    use guest_abi::{hypercall as nr, sched, version};
    use hello_guest::{Foreign, check, foreign_hypercall, hypercall, println, shutdown};

    let call = [version::XENVER_VERSION, 0, 0, 0, 0];
    let native = hypercall(nr::XEN_VERSION, call);
    let foreign = foreign_hypercall(nr::XEN_VERSION, call);
    let how = match foreign {
        Foreign::InvalidOpcode => "raised #UD",
        Foreign::Returned(r) if r == native => "acted as the native hypercall",
        Foreign::Returned(_) => "returned something else",
    };
    let ok = foreign == Foreign::InvalidOpcode || foreign == Foreign::Returned(native);
    check("vendor-probe", ok, format_args!("{foreign:?}, the native hypercall returned {native:#x}"));
    println!("vendor-probe: the foreign hypercall instruction {}", how);
    // The native one still works after the probe.
    let again = hypercall(nr::XEN_VERSION, call);
    check("vendor-probe", again == native, format_args!("native hypercall returned {again:#x} after the probe"));
    println!("VENDOR-PROBE-DONE");
    shutdown(sched::SHUTDOWN_POWEROFF)
}
