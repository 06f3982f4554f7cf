//! A tiny guest kernel that speaks the Xen ABI, for end-to-end tests of the hypervisor.
//!
//! Each binary in `src/bin` is one scenario. This library gives them the arch entry
//! (`_start` → `guest_main`), the hypercall instruction, and small helpers over it. The same
//! binaries are meant to run unchanged on real Xen, which makes them a conformance check.
#![cfg_attr(target_os = "none", no_std)]

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
#[path = "arch/aarch64.rs"]
mod arch;
#[cfg(all(target_arch = "arm", target_os = "none"))]
#[path = "arch/armv7.rs"]
mod arch;
#[cfg(all(target_arch = "x86_64", target_os = "none"))]
#[path = "arch/x86_64.rs"]
mod arch;

#[cfg(target_os = "none")]
pub use arch::hypercall;
#[cfg(all(target_arch = "x86_64", target_os = "none"))]
pub use arch::{Foreign, compat_hypercall, foreign_hypercall, install_hypercall_page, page_hypercall};

use core::fmt::{self, Write};
#[cfg(target_os = "none")]
use guest_abi::{console, hypercall as nr, sched};

/// An address no domain of ours has memory at (stage-2/EPT leave it unmapped).
pub const UNMAPPED_ADDRESS: u64 = 0x8000_0000;

/// An address the scenario reads on purpose to see the hypervisor stop it (`u64::MAX`:
/// none). Xen answers an access outside the domain's memory with a data abort injected into
/// the guest, where xhv crashes the domain: an abort at this address is then reported as
/// `GUEST-FAULT-ABORTED`, not as an unexpected exception (aarch64).
pub static EXPECTED_FAULT_ADDRESS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(u64::MAX);

#[cfg(target_os = "none")]
pub mod events;
#[cfg(target_os = "none")]
pub mod fifo;
#[cfg(target_os = "none")]
pub mod grants;

/// `console_io(CONSOLEIO_write)`.
#[cfg(target_os = "none")]
pub fn console_write(bytes: &[u8]) {
    hypercall(nr::CONSOLE_IO, [console::CONSOLEIO_WRITE, bytes.len() as u64, bytes.as_ptr() as u64, 0, 0]);
}

/// `xen_version(cmd, arg)`.
#[cfg(target_os = "none")]
pub fn xen_version(cmd: u64, arg: u64) -> i64 {
    hypercall(nr::XEN_VERSION, [cmd, arg, 0, 0, 0])
}

/// `sched_op(SCHEDOP_shutdown, reason)`; never returns on a working hypervisor.
#[cfg(target_os = "none")]
pub fn shutdown(reason: u32) -> ! {
    let arg = sched::SchedShutdown { reason };
    hypercall(nr::SCHED_OP, [sched::SCHEDOP_SHUTDOWN, &arg as *const _ as u64, 0, 0, 0]);
    // A hypervisor that returned from shutdown is broken; say so and spin.
    console_write(b"FAIL shutdown returned\n");
    loop {
        core::hint::spin_loop();
    }
}

/// Formats into a line buffer, then writes it with one `console_io`.
pub struct Line {
    buf: [u8; 200],
    len: usize,
}

impl Line {
    pub const fn new() -> Self {
        Self { buf: [0; 200], len: 0 }
    }
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Default for Line {
    fn default() -> Self {
        Self::new()
    }
}

impl Write for Line {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// `println!`-like output through `console_io`.
#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => {{
        use core::fmt::Write as _;
        let mut line = $crate::Line::new();
        let _ = writeln!(line, $($arg)*);
        $crate::console_write(line.as_bytes());
    }};
}

/// The version `xen_version(XENVER_version)` returned, split as (major, minor).
pub fn split_version(v: i64) -> (i64, i64) {
    (v >> 16, v & 0xffff)
}

/// Report a check as `PASS name` / `FAIL name: why`, the lines xtask reads.
#[cfg(target_os = "none")]
pub fn check(name: &str, ok: bool, why: fmt::Arguments) {
    if ok {
        println!("PASS {}", name);
    } else {
        println!("FAIL {}: {}", name, why);
    }
}

#[cfg(target_os = "none")]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    println!("FAIL guest panic: {}", info.message());
    shutdown(sched::SHUTDOWN_CRASH)
}

/// The arch-neutral half of the `simd-isolation` guest's register work; the per-arch half
/// (which registers, the `asm!` that fills and reads them) is `arch::simd`, re-exported here.
pub mod simd {
    #[cfg(target_os = "none")]
    pub use crate::arch::simd::*;

    /// Every vector and FP control register of this arch as 64-bit words.
    #[cfg(target_os = "none")]
    pub type Regs = [u64; crate::arch::simd::WORDS];

    /// What happens between filling the registers and reading them back.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Event {
        /// Count down this many loop iterations (long enough for the hypervisor to preempt).
        Spin(u32),
        /// Hypercall `nr` with these first two arguments (yield, block).
        Hypercall { nr: u64, args: [u64; 2] },
        /// WFI / HLT: wait for an interrupt.
        WaitForInterrupt,
        /// A hypercall with the FP unit turned off for its duration (ARMv7 FPEXC.EN, aarch64
        /// CPACR_EL1.FPEN), as an OS leaves it between a task's uses; where `FP_OFF` is set.
        HypercallFpOff { nr: u64, args: [u64; 2] },
    }

    impl Event {
        /// How the `asm!` blocks take it: (mode, count or hypercall number, arg0, arg1) with
        /// mode 0 = spin, 1 = hypercall, 2 = wait for interrupt, 4 = hypercall with FP off.
        pub fn encode(self) -> (u64, u64, u64, u64) {
            match self {
                Event::Spin(n) => (0, u64::from(n.max(1)), 0, 0),
                Event::Hypercall { nr, args } => (1, nr, args[0], args[1]),
                Event::WaitForInterrupt => (2, 0, 0, 0),
                Event::HypercallFpOff { nr, args } => (4, nr, args[0], args[1]),
            }
        }
    }

    /// Fill `words` with a pattern that depends on `seed` and on each word's position
    /// (splitmix64), so two seeds never agree on a register in practice.
    pub fn fill(seed: u64, words: &mut [u64]) {
        let mut state = seed;
        for w in words {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            *w = z ^ (z >> 31);
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn patterns_differ_by_seed_and_position() {
            let (mut a, mut b) = ([0u64; 66], [0u64; 66]);
            fill(1, &mut a);
            fill(2, &mut b);
            assert!(a.iter().zip(&b).all(|(x, y)| x != y));
            let mut sorted = a;
            sorted.sort_unstable();
            assert!(sorted.windows(2).all(|w| w[0] != w[1]));
        }

        #[test]
        fn events_encode_as_the_asm_expects() {
            assert_eq!(Event::Spin(0).encode(), (0, 1, 0, 0));
            assert_eq!(Event::Hypercall { nr: 29, args: [1, 0] }.encode(), (1, 29, 1, 0));
            assert_eq!(Event::WaitForInterrupt.encode(), (2, 0, 0, 0));
            assert_eq!(Event::HypercallFpOff { nr: 29, args: [0, 0] }.encode(), (4, 29, 0, 0));
        }
    }
}
