//! Secondary CPUs: started with PSCI CPU_ON (QEMU's `virt` with virtualization on answers
//! SMCs itself and starts the target in the caller's mode, HYP), they join the boot CPU's
//! HYP address space, take the HYP vectors, set up their own part of the GIC, say they are
//! online and enter the core's `hv_secondary_main`, which runs guests on them (or parks
//! them). Logical CPU numbers are the device tree's CPU order ([`this_cpu`]), kept in the
//! [`crate::arm::smp::CpuTable`] shared with aarch64.

use super::console::Console;
use super::dt::Platform;
use super::{MAX_CPUS, gic, mmu, sysreg, vectors, vfp};
use crate::arm::hwdt::{Conduit, EnableMethod};
use crate::arm::smp::{AFFINITY, CPUS};
use core::fmt::Write;
use core::sync::atomic::{AtomicBool, Ordering};
use smccc::Smc;

/// The core's loop runs hypercalls on these stacks, as the boot CPU does on its boot stack.
const STACK_SIZE: usize = 64 * 1024;
/// CPSR.M for HYP mode.
const MODE_HYP: u32 = 0x1a;

#[repr(C, align(16))]
pub struct Stack([u8; STACK_SIZE]);

/// One stack per logical CPU number (the boot CPU's slot is unused). Only the assembly in
/// `armv7_secondary_entry` refers to it, each CPU to its own slot, below which HYP-mode
/// exception entry also runs (SP_hyp is this stack while the CPU's guests run).
static mut STACKS: [Stack; MAX_CPUS] = [const { Stack([0; STACK_SIZE]) }; MAX_CPUS];

unsafe extern "Rust" {
    /// The core's entry for a secondary CPU that can run guests, defined by the hypervisor
    /// binary: it waits until the boot CPU has built the domains, then runs its loop.
    fn hv_secondary_main(cpu: usize) -> !;
}

/// This CPU's logical number: its MPIDR affinity's place among the device tree's CPUs,
/// which each CPU keeps in HTPIDR once it knows it (a register read: the exit path asks
/// often, and searching the table reads 64-bit atomics, each an LDREXD here). Until then,
/// or if HTPIDR holds what reset left there, the search.
pub fn this_cpu() -> usize {
    let cpu = sysreg::htpidr() as usize;
    if cpu < MAX_CPUS && KNOWN.load(Ordering::Relaxed) { cpu } else { CPUS.index_of(u64::from(sysreg::mpidr())) }
}

/// Every CPU that runs hypervisor code past its bring-up has its number in HTPIDR.
static KNOWN: AtomicBool = AtomicBool::new(false);

/// The boot CPU: record the device tree's CPUs, note this one as a kick target.
pub fn init_boot_cpu(p: &Platform) {
    let cpu = CPUS.record(p.cpus.mpidrs(), u64::from(sysreg::mpidr()));
    sysreg::write_htpidr(cpu as u32);
    KNOWN.store(true, Ordering::Relaxed);
    crate::arm::gicv2::note_cpu(cpu);
    CPUS.set_ready(cpu, crate::arm::gicv2::ready());
}

/// Logical CPU `cpu` can run guests (it is online in HYP mode with its GIC interface set up,
/// and kicks reach it); the boot CPU always can.
pub fn cpu_ready(cpu: usize) -> bool {
    cpu == this_cpu() || CPUS.is_ready(cpu)
}

/// Make logical CPU `cpu` leave its guest, or its idle wait, and look again.
pub fn kick(cpu: usize) {
    if cpu != this_cpu() && cpu_ready(cpu) {
        gic::send_kick(cpu);
    }
}

// Entered by PSCI CPU_ON in HYP mode (or whatever mode the firmware chose) with the MMU
// and caches off and r0 = the logical CPU number (the context id). In HYP mode it loads the
// boot CPU's HYP translation registers (`mmu::SECONDARY_REGS`, in memory before any
// secondary started) and turns its MMU on before it touches memory through the stack, so it
// never works on stale non-cacheable copies of cacheable data.
core::arch::global_asm!(
    r#"
    .text
    .arm
    .arch_extension virt
    .global armv7_secondary_entry
armv7_secondary_entry:
    cpsid aif
    mov r4, r0
    mrs r5, cpsr
    and r5, r5, #0x1f
    cmp r5, #{hyp}
    bne 1f
    ldr r0, ={regs}
    ldm r0, {{r1, r2, r3, r6, r7, r8}}
    mcr p15, 4, r1, c10, c2, 0  @ HMAIR0
    mcr p15, 4, r2, c10, c2, 1  @ HMAIR1
    mcr p15, 4, r3, c2, c0, 2   @ HTCR
    mcrr p15, 4, r6, r7, c2     @ HTTBR
    isb
    mcr p15, 4, r0, c8, c7, 0   @ TLBIALLH
    mcr p15, 0, r0, c7, c5, 0   @ ICIALLU
    dsb
    isb
    mcr p15, 4, r8, c1, c0, 0   @ HSCTLR: MMU, caches, ARM-state exceptions
    isb
1:  ldr r0, ={stacks}
    add r1, r4, #1
    ldr r2, ={stack_size}
    mla r0, r1, r2, r0
    mov sp, r0
    mov r0, r4
    mov r1, r5
    bl {main}
2:  wfi
    b 2b
    "#,
    hyp = const MODE_HYP,
    regs = sym mmu::SECONDARY_REGS,
    stacks = sym STACKS,
    stack_size = const STACK_SIZE,
    main = sym secondary_main,
);

unsafe extern "C" {
    fn armv7_secondary_entry();
}

/// Start every CPU the device tree lists besides this one, one at a time, through PSCI.
pub fn start_secondaries(p: &Platform) {
    if p.cpus.cpu_count <= 1 {
        return;
    }
    if p.cpus.enable_method() != EnableMethod::Psci {
        let _ = writeln!(Console, "(XEN) secondary CPUs: no PSCI enable method: running on the boot CPU only");
        return;
    }
    if p.cpus.psci != Some(Conduit::Smc) {
        // HVC from HYP mode would call ourselves.
        let _ = writeln!(Console, "(XEN) secondary CPUs: PSCI is not reached by SMC: they stay off");
        return;
    }
    let entry = armv7_secondary_entry as *const () as u32;
    for (cpu, mpidr) in CPUS.others(u64::from(sysreg::mpidr())) {
        match smccc::psci::cpu_on_32::<Smc>(mpidr as u32, entry, cpu as u32) {
            Ok(()) if wait_online(cpu) => {}
            Ok(()) => {
                let _ = writeln!(Console, "(XEN) CPU{cpu} (MPIDR {mpidr:#x}) did not come online");
            }
            Err(e) => {
                let _ = writeln!(Console, "(XEN) CPU{cpu} (MPIDR {mpidr:#x}) could not be started: {e:?}");
            }
        }
    }
}

/// Wait up to a second for `cpu` to report (its line is printed by then).
fn wait_online(cpu: usize) -> bool {
    let deadline = sysreg::cntpct() + u64::from(sysreg::cntfrq());
    CPUS.wait_online(cpu, sysreg::cntpct, deadline)
}

/// A secondary on its own stack (with its MMU on, in HYP mode): its vectors, VFP access, GIC
/// part and timers, then the core's loop.
extern "C" fn secondary_main(cpu: u32, mode: u32) -> ! {
    sysreg::write_htpidr(cpu);
    let cpu = cpu as usize;
    let mpidr = u64::from(sysreg::mpidr()) & AFFINITY;
    let ready = mode == MODE_HYP && cpu < MAX_CPUS && prepare(cpu);
    if ready {
        let _ = writeln!(Console, "(XEN) CPU{cpu} online in HYP mode (MPIDR {mpidr:#x})");
    } else if mode == MODE_HYP {
        let _ = writeln!(
            Console,
            "(XEN) CPU{cpu} online in HYP mode (MPIDR {mpidr:#x}), parked: no GIC to run guests with"
        );
    } else {
        let _ = writeln!(Console, "(XEN) CPU{cpu} (MPIDR {mpidr:#x}) came up in mode {mode:#x}, not HYP: parked");
    }
    CPUS.set_ready(cpu, ready);
    CPUS.set_online(cpu);
    if ready {
        // SAFETY: the core's entry for secondaries, with exactly this signature; this CPU is
        // in HYP mode with the MMU on, its vectors, stack and GIC interface, as it requires.
        unsafe { hv_secondary_main(cpu) }
    }
    loop {
        super::time::idle_until(None);
    }
}

/// This CPU's own HYP state, as the boot CPU set up its own: vectors, untrapped VFP, no
/// timer of the hypervisor's armed, its GIC part. False if it cannot run guests.
fn prepare(cpu: usize) -> bool {
    vectors::install();
    vfp::init();
    sysreg::write_cnthp_ctl(0);
    sysreg::write_cntv_ctl(0);
    sysreg::isb();
    gic::init_secondary(cpu)
}
