//! Hello: `xen_version`, one console line, then power off.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(not(target_os = "none"))]
fn main() {}

#[cfg(target_os = "none")]
#[unsafe(no_mangle)]
extern "C" fn guest_main() -> ! {
    use guest_abi::{sched, version};
    use hello_guest::{println, shutdown, split_version, xen_version};

    let (major, minor) = split_version(xen_version(version::XENVER_VERSION, 0));
    println!("Hello from a Xen guest: the hypervisor says Xen {}.{}", major, minor);
    println!("HELLO-GUEST-OK");
    shutdown(sched::SHUTDOWN_POWEROFF)
}
