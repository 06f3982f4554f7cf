//! Secondary CPUs: started with PSCI CPU_ON, or released from the firmware's spin table
//! (the Raspberry Pi's `enable-method = "spin-table"`), they join the identity map, set up
//! their own part of the GIC, say they are online and enter the core's `hv_secondary_main`,
//! which runs guests on them (or parks them). Logical CPU numbers are the device tree's CPU
//! order ([`this_cpu`]).

use super::console::early_log;
use super::dt::{Conduit, EnableMethod, MAX_CPUS, Platform};
use super::gic;
use super::{BootCell, mmu};
use crate::arm::smp::{AFFINITY, CPUS};
use aarch64_cpu::registers::{CNTFRQ_EL0, CNTPCT_EL0, MPIDR_EL1, Readable};
use core::sync::atomic::{AtomicU64, Ordering};
use smccc::Smc;

/// The core's loop runs hypercalls on these stacks, as the boot CPU does on its boot stack.
const STACK_SIZE: usize = 64 * 1024;

#[repr(C, align(16))]
pub struct Stack([u8; STACK_SIZE]);

/// One stack per logical CPU number (the boot CPU's slot is unused); only the assembly in
/// `secondary_entry` refers to it, each CPU to its own slot.
static STACKS: BootCell<[Stack; MAX_CPUS]> = BootCell::new([const { Stack([0; STACK_SIZE]) }; MAX_CPUS]);

unsafe extern "Rust" {
    /// The core's entry for a secondary CPU that can run guests, defined by the hypervisor
    /// binary: it waits until the boot CPU has built the domains, then runs its loop.
    fn hv_secondary_main(cpu: usize) -> !;
}

/// This CPU's logical number (0 .. the device tree's CPU count): its MPIDR affinity's place
/// among the device tree's CPUs. (TPIDR_EL2 is taken: guest entry keeps its context there.)
pub fn this_cpu() -> usize {
    CPUS.index_of(MPIDR_EL1.get())
}

/// The boot CPU: its number is its place among the device tree's CPUs (0 if not found).
pub fn init_boot_cpu(p: &Platform) {
    let cpu = CPUS.record(p.mpidrs(), MPIDR_EL1.get());
    gic::note_cpu(cpu);
    CPUS.set_ready(cpu, gic::ready());
}

/// Logical CPU `cpu` can run guests (it is online at EL2 with its GIC interface set up, and
/// kicks reach it); the boot CPU always can.
pub fn cpu_ready(cpu: usize) -> bool {
    cpu == this_cpu() || CPUS.is_ready(cpu)
}

/// Make logical CPU `cpu` leave its guest, or its idle wait, and look again.
pub fn kick(cpu: usize) {
    if cpu != this_cpu() && cpu_ready(cpu) {
        gic::send_kick(cpu, CPUS.affinity(cpu).unwrap_or(0));
    }
}

// Entered by PSCI CPU_ON with the MMU off and x0 = logical CPU number (the context id).
// At EL2 it joins the boot CPU's identity map (the MMU registers were written to memory
// before any secondary started) before touching memory through the stack, so it never
// works on stale non-cacheable copies of cacheable data.
core::arch::global_asm!(
    r#"
.section .text.boot, "ax"
.global secondary_entry
secondary_entry:
    msr     daifset, #0xf
    mov     x19, x0
    mrs     x20, CurrentEL
    ubfx    x20, x20, #2, #2
    cmp     x20, #2
    b.ne    1f
    mov     x1, #0x33ff
    msr     cptr_el2, x1
    adrp    x1, {vectors}
    add     x1, x1, :lo12:{vectors}
    msr     vbar_el2, x1
    mov     x1, #0x80000000
    msr     hcr_el2, x1
    adrp    x1, {regs}
    add     x1, x1, :lo12:{regs}
    ldp     x2, x3, [x1]
    ldp     x4, x5, [x1, #16]
    msr     mair_el2, x2
    msr     tcr_el2, x3
    msr     ttbr0_el2, x4
    isb
    tlbi    alle2
    ic      iallu
    dsb     nsh
    isb
    msr     sctlr_el2, x5
    isb
    b       2f
1:  mov     x1, #(3 << 20)
    msr     cpacr_el1, x1
    isb
2:  adrp    x1, {stacks}
    add     x1, x1, :lo12:{stacks}
    add     x2, x19, #1
    mov     x3, #{stack_size}
    madd    x1, x2, x3, x1
    mov     sp, x1
    mov     x0, x19
    mov     x1, x20
    bl      {main}
3:  wfe
    b       3b
"#,
    vectors = sym super::vectors::el2_vectors,
    regs = sym mmu::MMU_REGS,
    stacks = sym STACKS,
    stack_size = const STACK_SIZE,
    main = sym secondary_main,
);

// Entered from a spin table with the MMU off and nothing useful in x0: the logical CPU
// number is the one the boot CPU published in SPIN_TABLE_CPU before releasing this CPU
// (one CPU at a time), written back to memory so a non-cacheable read sees it.
core::arch::global_asm!(
    r#"
.section .text.boot, "ax"
.global spin_table_entry
spin_table_entry:
    adrp    x0, {cpu}
    add     x0, x0, :lo12:{cpu}
    ldr     x0, [x0]
    b       secondary_entry
"#,
    cpu = sym SPIN_TABLE_CPU,
);

/// The logical number of the CPU being released from the spin table.
static SPIN_TABLE_CPU: AtomicU64 = AtomicU64::new(0);

unsafe extern "C" {
    fn secondary_entry();
    fn spin_table_entry();
}

/// Start every CPU the device tree lists besides this one, one at a time.
pub fn start_secondaries(p: &Platform) {
    if p.cpu_count <= 1 {
        return;
    }
    match p.enable_method() {
        EnableMethod::Psci => {}
        EnableMethod::SpinTable { .. } => return release_spin_table(p),
        EnableMethod::Unknown => {
            early_log!("no enable method we know for the secondary CPUs: running on the boot CPU only");
            return;
        }
    }
    match p.psci {
        Some(Conduit::Smc) => {}
        Some(Conduit::Hvc) => {
            early_log!("PSCI is reached by HVC, which at EL2 would call ourselves: secondary CPUs stay off");
            return;
        }
        None => {
            early_log!("no PSCI in the device tree: secondary CPUs stay off");
            return;
        }
    }
    let entry = secondary_entry as *const () as u64;
    for (cpu, mpidr) in CPUS.others(MPIDR_EL1.get()) {
        match smccc::psci::cpu_on::<Smc>(mpidr, entry, cpu as u64) {
            Ok(()) if wait_online(cpu) => {}
            Ok(()) => early_log!("CPU{} (MPIDR {:#x}) did not come online", cpu, mpidr),
            Err(e) => early_log!("CPU{} (MPIDR {:#x}) could not be started: {:?}", cpu, mpidr, e),
        }
    }
}

/// Release each secondary from the firmware's spin table: publish its logical number, write
/// the entry address to its `cpu-release-addr` (where the firmware's loop polls with its MMU
/// off, so the write is cleaned to memory), wake it with SEV, wait for it.
fn release_spin_table(p: &Platform) {
    let entry = spin_table_entry as *const () as u64;
    for (cpu, mpidr) in CPUS.others(MPIDR_EL1.get()) {
        let EnableMethod::SpinTable { release_addr } = p.enable[cpu] else {
            early_log!("CPU{} (MPIDR {:#x}) has no cpu-release-addr: left off", cpu, mpidr);
            continue;
        };
        if release_addr == 0 || !release_addr.is_multiple_of(8) {
            early_log!("CPU{}: cpu-release-addr {:#x} is unusable: left off", cpu, release_addr);
            continue;
        }
        SPIN_TABLE_CPU.store(cpu as u64, Ordering::SeqCst);
        let published = &raw const SPIN_TABLE_CPU as u64;
        mmu::clean_invalidate_dcache(published, 8);
        // SAFETY: the DT names this 8-byte aligned word as the CPU's release address, which
        // the firmware set aside for exactly this write (it lies in a reserved range such as
        // the /memreserve/ page, never in memory we hand out); it is identity-mapped.
        unsafe { core::ptr::write_volatile(release_addr as *mut u64, entry) };
        mmu::clean_invalidate_dcache(release_addr, 8);
        aarch64_cpu::asm::sev();
        if !wait_online(cpu) {
            early_log!("CPU{} (MPIDR {:#x}) did not come online from the spin table", cpu, mpidr);
        }
    }
}

/// Wait up to a second for `cpu` to report (its line is printed by then).
fn wait_online(cpu: usize) -> bool {
    CPUS.wait_online(cpu, || CNTPCT_EL0.get(), CNTPCT_EL0.get() + CNTFRQ_EL0.get())
}

extern "C" fn secondary_main(cpu: u64, current_el: u64) -> ! {
    let mpidr = MPIDR_EL1.get() & AFFINITY;
    let cpu = cpu as usize;
    // Guests need the kick SGI on every CPU that runs them.
    let ready = current_el == 2 && cpu < MAX_CPUS && gic::can_kick() && gic::init_secondary(cpu);
    if ready {
        early_log!("CPU{} online at EL2 (MPIDR {:#x})", cpu, mpidr);
    } else if current_el == 2 {
        early_log!("CPU{} online at EL2 (MPIDR {:#x}), parked: no GIC to run guests with", cpu, mpidr);
    } else {
        early_log!("CPU{} (MPIDR {:#x}) came up at EL{}, not EL2: parked", cpu, mpidr, current_el);
    }
    CPUS.set_ready(cpu, ready);
    CPUS.set_online(cpu);
    if ready {
        // SAFETY: the core's entry for secondaries, with exactly this signature; this CPU is
        // at EL2 with the MMU on, its vectors, stack and GIC interface, as it requires.
        unsafe { hv_secondary_main(cpu) }
    }
    loop {
        aarch64_cpu::asm::wfi();
    }
}
