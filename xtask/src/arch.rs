//! The architectures we build for, and what each needs from the host.

use clap::ValueEnum;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum Arch {
    Aarch64,
    Armv7,
    #[value(name = "x86_64")]
    X86_64,
}

impl Arch {
    pub const ALL: [Arch; 3] = [Arch::Aarch64, Arch::Armv7, Arch::X86_64];

    /// What `cargo xtask run` boots by default: the host's own architecture, so the main
    /// command on an x86 machine boots an x86 PVH guest (aarch64 on any other host).
    pub fn host() -> Arch {
        if cfg!(target_arch = "x86_64") { Arch::X86_64 } else { Arch::Aarch64 }
    }

    pub fn name(self) -> &'static str {
        match self {
            Arch::Aarch64 => "aarch64",
            Arch::Armv7 => "armv7",
            Arch::X86_64 => "x86_64",
        }
    }

    pub fn target(self) -> &'static str {
        match self {
            Arch::Aarch64 => "aarch64-unknown-none",
            Arch::Armv7 => "armv7a-none-eabi",
            Arch::X86_64 => "x86_64-unknown-none",
        }
    }

    /// The hypervisor's own target. On aarch64 it is the soft-float one: the hypervisor never
    /// touches FP/SIMD registers, so a guest's stay loaded across its exits and are switched
    /// only when another vCPU takes the CPU.
    pub fn hypervisor_target(self) -> &'static str {
        match self {
            Arch::Aarch64 => "aarch64-unknown-none-softfloat",
            other => other.target(),
        }
    }

    /// ARM images are flat binaries (QEMU loads them as Linux images); x86 stays ELF for GRUB.
    pub fn flat_binary(self) -> bool {
        !matches!(self, Arch::X86_64)
    }
}
