//! The hypervisor binary. Arch code boots the CPU and calls [`hv_main`]; the rest is the core.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod bare;

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("the hypervisor runs on bare metal: use `cargo xtask build` or `cargo xtask run`");
    std::process::exit(2);
}
