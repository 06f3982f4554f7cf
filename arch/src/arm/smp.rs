//! What both ARM backends keep about the machine's CPUs once secondaries start: each logical
//! CPU's MPIDR affinity (logical numbers are the device tree's CPU order), which CPUs came
//! online, and which of those can run guests. Register-free, so it is host-tested; the
//! backends' `smp` modules read MPIDR and start the CPUs.

use super::hwdt::MAX_CPUS;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// MPIDR affinity fields Aff3..Aff0 (ARMv7's 32-bit MPIDR has no Aff3: it reads 0 there).
pub const AFFINITY: u64 = 0xff_00ff_ffff;
/// An affinity no CPU has: the slots the device tree does not fill.
const NOBODY: u64 = u64::MAX;

/// The logical CPUs: one slot each, written by the boot CPU before any secondary starts,
/// then each secondary's flags by that CPU.
pub struct CpuTable {
    online: [AtomicBool; MAX_CPUS],
    /// The CPU runs at EL2/HYP with its GIC part set up: it can run guests and take kicks.
    ready: [AtomicBool; MAX_CPUS],
    affinities: [AtomicU64; MAX_CPUS],
}

impl CpuTable {
    pub const fn new() -> Self {
        CpuTable {
            online: [const { AtomicBool::new(false) }; MAX_CPUS],
            ready: [const { AtomicBool::new(false) }; MAX_CPUS],
            affinities: [const { AtomicU64::new(0) }; MAX_CPUS],
        }
    }

    /// Take the device tree's CPUs (`mpidrs`, in its order; beyond [`MAX_CPUS`] ignored) and
    /// return the logical number of the one whose affinity is `me` (0 if none is).
    pub fn record(&self, mpidrs: &[u64], me: u64) -> usize {
        for (n, slot) in self.affinities.iter().enumerate() {
            slot.store(mpidrs.get(n).map_or(NOBODY, |m| m & AFFINITY), Ordering::Relaxed);
        }
        self.index_of(me)
    }

    /// The logical number of the CPU whose MPIDR is `mpidr` (0 if the tree does not list it).
    pub fn index_of(&self, mpidr: u64) -> usize {
        let me = mpidr & AFFINITY;
        self.affinities.iter().position(|a| a.load(Ordering::Relaxed) == me).unwrap_or(0)
    }

    /// The MPIDR affinity of logical CPU `cpu` (the `reg` of its device-tree node).
    pub fn affinity(&self, cpu: usize) -> Option<u64> {
        self.affinities.get(cpu).map(|a| a.load(Ordering::Relaxed))
    }

    /// Logical CPU `cpu` said it can run guests.
    pub fn is_ready(&self, cpu: usize) -> bool {
        self.ready.get(cpu).is_some_and(|r| r.load(Ordering::Acquire))
    }

    pub fn set_ready(&self, cpu: usize, ready: bool) {
        if let Some(flag) = self.ready.get(cpu) {
            flag.store(ready, Ordering::Release);
        }
    }

    /// Logical CPU `cpu` is up (after its [`CpuTable::set_ready`]): the boot CPU stops
    /// waiting for it.
    pub fn set_online(&self, cpu: usize) {
        if let Some(flag) = self.online.get(cpu) {
            flag.store(true, Ordering::Release);
        }
    }

    /// Wait until `cpu` is online or `now()` passes `deadline` (any clock the caller likes).
    pub fn wait_online(&self, cpu: usize, now: impl Fn() -> u64, deadline: u64) -> bool {
        let Some(flag) = self.online.get(cpu) else { return false };
        while !flag.load(Ordering::Acquire) {
            if now() > deadline {
                return false;
            }
            core::hint::spin_loop();
        }
        true
    }

    /// The CPUs to start: every recorded one but `me`, as (logical number, MPIDR affinity).
    pub fn others(&self, me: u64) -> impl Iterator<Item = (usize, u64)> + '_ {
        let me = me & AFFINITY;
        self.affinities
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .enumerate()
            .filter(move |&(_, a)| a != NOBODY && a != me)
    }
}

/// The machine's CPUs (one backend is built in: the aarch64 or the ARMv7 one fills it).
pub static CPUS: CpuTable = CpuTable::new();

/// The MPIDR affinity of logical CPU `cpu` (the `reg` of its device-tree node).
pub fn cpu_affinity(cpu: usize) -> Option<u64> {
    CPUS.affinity(cpu)
}

impl Default for CpuTable {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    #[test]
    fn logical_numbers_follow_the_device_tree_order() {
        let t = CpuTable::new();
        // MPIDR bit 31 (RES1) and the U bit are not part of the affinity.
        assert_eq!(t.record(&[0x100, 0x0, 0x101], 0x8000_0000), 1);
        assert_eq!(t.index_of(0x101), 2);
        assert_eq!(t.affinity(0), Some(0x100));
        assert_eq!(t.others(0).collect::<std::vec::Vec<_>>(), [(0, 0x100), (2, 0x101)]);
        // A CPU the tree does not list counts as the first.
        assert_eq!(t.index_of(0x200), 0);
    }

    #[test]
    fn a_cpu_is_online_once_it_says_so_and_ready_only_if_it_said_that_too() {
        let t = CpuTable::new();
        t.record(&[0, 1], 0);
        assert!(!t.wait_online(1, || 1, 0));
        t.set_ready(1, true);
        t.set_online(1);
        assert!(t.wait_online(1, || 1, 0));
        assert!(t.is_ready(1) && !t.is_ready(0) && !t.is_ready(7));
    }
}
