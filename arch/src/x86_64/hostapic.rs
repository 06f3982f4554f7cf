//! Each CPU's own local APIC, through the xAPIC MMIO page (every CPU sees its own APIC at
//! the same address): its timer, the interrupt that takes a vCPU out of the guest when its
//! slice or its Xen timer is over (SVM: an INTR intercept; VMX: an external-interrupt exit)
//! or ends an idle HLT; and the inter-processor interrupts of the SMP host (INIT/STARTUP to
//! start a CPU, [`KICK_VECTOR`] to make another CPU look again).
//!
//! MMIO, never the x2APIC MSRs: under QEMU's `-icount` an RDMSR/WRMSR of the timer is not
//! treated as I/O and aborts QEMU ("Bad icount read"), while MMIO is. The timer counts at a
//! rate calibrated once against the TSC (itself calibrated against the PIT, [`super::time`]).
//!
//! The hypervisor runs with interrupts off; only around VMRUN (GIF clear, then set again after
//! #VMEXIT), after a VT-x external-interrupt exit and in the idle HLT ([`super::idle_until`])
//! is IF set, so the interrupt that ended the guest's run or the wait is taken by
//! [`xhv_host_irq`], which only signals EOI. A kick that arrives while IF is clear stays
//! pending in the APIC until then: it is never lost.

use super::smp::MAX_CPUS;
use crate::x86::scale::Scale;
use core::sync::atomic::{AtomicU64, Ordering};
use spin::Once;
use x86_64::registers::model_specific::Msr;

/// The vector of the host timer (the first above the exceptions; the legacy PICs are masked).
pub const TIMER_VECTOR: u8 = 0x20;
/// Spurious-interrupt vector (its low nibble must be all ones on old APICs).
pub const SPURIOUS_VECTOR: u8 = 0xff;
/// The kick one CPU sends another: its only effect is the exit (or the end of HLT) it causes.
pub const KICK_VECTOR: u8 = 0x40;

const MSR_APIC_BASE: u32 = 0x1b;
const APIC_BASE_EN: u64 = 1 << 11;
const APIC_BASE_EXTD: u64 = 1 << 10;

mod reg {
    pub const EOI: u64 = 0xb0;
    pub const SVR: u64 = 0xf0;
    pub const ICR_LOW: u64 = 0x300;
    pub const ICR_HIGH: u64 = 0x310;
    pub const LVT_TIMER: u64 = 0x320;
    pub const TIMER_INITIAL: u64 = 0x380;
    pub const TIMER_CURRENT: u64 = 0x390;
    pub const TIMER_DIVIDE: u64 = 0x3e0;
}

/// Divide configuration 0b1011: divide by 1.
const DIVIDE_BY_1: u32 = 0xb;
/// Calibration window: 1 ms of TSC time.
const CALIBRATE_NS: u64 = 1_000_000;

/// Address of the EOI register, for the interrupt stub.
#[unsafe(no_mangle)]
static XHV_HOST_APIC_EOI: AtomicU64 = AtomicU64::new(0);

struct Timer {
    base: u64,
    /// Nanoseconds to timer ticks, without a division per arming.
    ticks_per_ns: Scale,
}

/// The longest wait one arming covers: the count register is 32 bits, which lasts about
/// 4.3 s at QEMU's 1 GHz (less on faster timers: the count is clamped). A longer deadline
/// takes a spurious exit first, after which the run loop arms the timer again.
const MAX_ARM_NS: u64 = 4_000_000_000;

static TIMER: Once<Option<Timer>> = Once::new();
/// The deadline each CPU's timer is armed for (`u64::MAX`: stopped).
static ARMED: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(u64::MAX) }; MAX_CPUS];
/// ICR delivery status (bit 12): the last IPI is still being sent.
const ICR_PENDING: u32 = 1 << 12;

fn read(base: u64, r: u64) -> u32 {
    // SAFETY: `base` is the enabled xAPIC page (checked in `init`), inside the boot identity
    // map; APIC registers are 32-bit, 16-byte aligned and reading them has no side effect.
    unsafe { core::ptr::read_volatile((base + r) as *const u32) }
}

fn write(base: u64, r: u64, value: u32) {
    // SAFETY: as in `read`; the registers written (SVR, LVT timer, divide, counts, EOI) only
    // configure this CPU's own interrupt delivery, for vectors the IDT handles; the ICR sends
    // INIT/STARTUP to CPUs this hypervisor starts, or a kick whose vector every CPU's IDT
    // handles (`xhv_host_irq`). None of them touches memory.
    unsafe { core::ptr::write_volatile((base + r) as *mut u32, value) }
}

/// Enable the APIC (xAPIC mode), route its timer to [`TIMER_VECTOR`] one-shot, calibrate it.
/// `None` when the APIC is off or in x2APIC mode (no MMIO page): vCPUs then run until they
/// exit by themselves.
fn init() -> Option<Timer> {
    // SAFETY: IA32_APIC_BASE exists on every x86_64 CPU; reading it has no effect.
    let apic_base = unsafe { Msr::new(MSR_APIC_BASE).read() };
    if apic_base & APIC_BASE_EN == 0 || apic_base & APIC_BASE_EXTD != 0 {
        super::report(format_args!("host APIC not in xAPIC mode ({apic_base:#x}): no preemption timer"));
        return None;
    }
    let base = apic_base & 0x000f_ffff_ffff_f000;
    if base.checked_add(0x1000).is_none_or(|end| end > super::IDENTITY_MAPPED) {
        return None;
    }
    XHV_HOST_APIC_EOI.store(base + reg::EOI, Ordering::Relaxed);
    write(base, reg::SVR, 0x100 | SPURIOUS_VECTOR as u32);
    write(base, reg::TIMER_DIVIDE, DIVIDE_BY_1);
    // One-shot, masked while calibrating.
    write(base, reg::LVT_TIMER, (1 << 16) | TIMER_VECTOR as u32);
    write(base, reg::TIMER_INITIAL, u32::MAX);
    let start = super::time::rdtsc();
    let end = start.wrapping_add(super::time::tsc_hz() / (1_000_000_000 / CALIBRATE_NS));
    while (super::time::rdtsc().wrapping_sub(end) as i64) < 0 {
        core::hint::spin_loop();
    }
    let elapsed = super::time::rdtsc().wrapping_sub(start);
    let ticks = u64::from(u32::MAX - read(base, reg::TIMER_CURRENT));
    write(base, reg::TIMER_INITIAL, 0);
    let tsc_hz = super::time::tsc_hz();
    let hz = (u128::from(ticks) * u128::from(tsc_hz) / u128::from(elapsed.max(1))) as u64;
    write(base, reg::LVT_TIMER, TIMER_VECTOR as u32);
    Some(Timer { base, ticks_per_ns: Scale::new(hz.max(1), 1_000_000_000, MAX_ARM_NS) })
}

fn timer() -> Option<&'static Timer> {
    TIMER.call_once(init).as_ref()
}

/// Prepare the timer (once; calibration takes 1 ms). Whether the CPU has one.
pub fn available() -> bool {
    timer().is_some()
}

/// An application processor: its APIC enabled and its timer set up as the boot CPU's (the
/// calibration holds for every CPU: the APIC timers share the bus clock).
pub fn init_this_cpu() {
    let Some(t) = timer() else { return };
    write(t.base, reg::SVR, 0x100 | SPURIOUS_VECTOR as u32);
    write(t.base, reg::TIMER_DIVIDE, DIVIDE_BY_1);
    write(t.base, reg::TIMER_INITIAL, 0);
    write(t.base, reg::LVT_TIMER, TIMER_VECTOR as u32);
}

/// Send `icr_low` (vector, delivery mode, level) to the CPU whose APIC id is `apic_id`
/// (physical destination), once the previous IPI has left.
pub fn send_ipi(apic_id: u32, icr_low: u32) {
    let Some(t) = timer() else { return };
    while read(t.base, reg::ICR_LOW) & ICR_PENDING != 0 {
        core::hint::spin_loop();
    }
    write(t.base, reg::ICR_HIGH, apic_id << 24);
    write(t.base, reg::ICR_LOW, icr_low);
}

/// Have the timer interrupt at `deadline_ns` of [`super::now_ns`] (`None`: stop it). A
/// deadline already past fires at once.
pub fn arm(deadline_ns: Option<u64>) {
    let Some(t) = timer() else { return };
    let want = deadline_ns.unwrap_or(u64::MAX);
    let armed = &ARMED[super::smp::this_cpu()];
    if armed.load(Ordering::Relaxed) == want {
        // Re-arming the same future deadline (or stopping a stopped timer) is a no-op; a past
        // one may have fired already and must fire again. The clock is read only when needed.
        if deadline_ns.is_none_or(|d| d > super::now_ns()) {
            return;
        }
    }
    armed.store(want, Ordering::Relaxed);
    let count = match deadline_ns {
        None => 0,
        Some(d) => {
            let ticks = t.ticks_per_ns.apply(d.saturating_sub(super::now_ns()));
            u32::try_from(ticks).unwrap_or(u32::MAX).max(1)
        }
    };
    write(t.base, reg::TIMER_INITIAL, count);
}

// Any external interrupt the host takes (the timer, a kick; a spurious one writes a
// harmless EOI).
core::arch::global_asm!(
    ".text",
    ".global xhv_host_irq",
    "xhv_host_irq:",
    "push rax",
    "mov rax, [rip + XHV_HOST_APIC_EOI]",
    "test rax, rax",
    "jz 2f",
    "mov dword ptr [rax], 0",
    "2:",
    "pop rax",
    "iretq",
);

unsafe extern "C" {
    /// The entry of every vector from 32 up (see above).
    pub fn xhv_host_irq();
}
