//! Real Xen beside ours: `--hypervisor xen` boots the same guests, from the same dom0less
//! boot device tree, on Debian's Xen 4.17 for arm64 under the same QEMU machine, so that a
//! test guest's verdict can be checked against the hypervisor whose ABI we speak.
//!
//! Xen needs three things our hypervisor does not: its command line in `/chosen`
//! (`xen,xen-bootargs`: a dom0less boot ignores `bootargs`), `xen,enhanced = "no-xenstore"` on
//! each domain so that it sees the PV interfaces (hypervisor node, grant table, event
//! channels) without a xenstore, and `xsm=dummy`, because Debian's build starts with XSM SILO,
//! which forbids event channels and grants between two domUs. It prints nothing when a domU
//! powers off and idles afterwards, so a run ends when the guests' end lines have appeared.

use crate::arch::Arch;
use anyhow::{Context, Result, ensure};
use clap::ValueEnum;
use dtoolkit::fdt::Fdt;
use dtoolkit::model::{DeviceTree, DeviceTreeNode, DeviceTreeProperty};
use dtoolkit::{Node, Property};
use std::path::PathBuf;

/// Which hypervisor a run boots.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Hypervisor {
    /// Ours.
    #[default]
    Xhv,
    /// Debian's Xen 4.17 (arm64 only), for side-by-side checks.
    Xen,
}

/// Debian's Xen package and the image inside it.
const XEN_PACKAGE: &str = "xen-hypervisor-4.17-arm64:arm64";
const XEN_IMAGE: &str = "boot/xen-4.17-arm64";
/// Xen's console on QEMU's `virt` PL011; every guest's `console_io` shown; XSM off.
const XEN_ARGS: &str = "console=dtuart dtuart=serial0 xsm=dummy guest_loglvl=all";

/// Lines a guest prints when it is done (our test guests, the Linux initramfs' `/init`).
pub const END_LINES: [&str; 4] = ["XHV-INIT-MARKER", "-DONE", "HELLO-GUEST-OK", "FAIL guest panic"];

/// Debian's Xen image, fetched once into the guest cache.
pub fn image() -> Result<PathBuf> {
    crate::images::package_file(Arch::Aarch64, XEN_PACKAGE, XEN_IMAGE)
}

/// The dom0less boot DTB as Xen wants it: its command line and, on every domain, the PV
/// interfaces without xenstore.
pub fn adapt_dtb(dtb: &[u8]) -> Result<Vec<u8>> {
    let fdt = Fdt::new(dtb).context("the boot DTB is not a valid device tree")?;
    let mut tree = DeviceTree::from_fdt(&fdt);
    let chosen = tree.root.add_child_mut(DeviceTreeNode::new("chosen")?);
    chosen.add_property(DeviceTreeProperty::new("xen,xen-bootargs", XEN_ARGS)?);
    let mut domains = 0;
    for node in chosen.children_mut() {
        let is_domain = node.property("compatible").is_some_and(|p| p.value().starts_with(b"xen,domain\0"));
        if is_domain {
            node.add_property(DeviceTreeProperty::new("xen,enhanced", "no-xenstore")?);
            domains += 1;
        }
    }
    ensure!(domains > 0, "the boot DTB describes no domain");
    let mut out = tree.to_dtb();
    out[28..32].copy_from_slice(&fdt.boot_cpuid_phys().to_be_bytes());
    Ok(out)
}

/// How many of the guests' end lines the console shows.
pub fn ended(console: &str) -> usize {
    console.lines().filter(|l| END_LINES.iter().any(|m| l.contains(m))).count()
}
