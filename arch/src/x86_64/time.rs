//! The platform clock: the TSC, calibrated once against PIT channel 2, in nanoseconds since
//! power-on (the TSC counts from 0 at reset). Guests see the same clock as Xen system time
//! through pvclock (`vcpu_time_info` with the calibrated frequency and TSC 0 as time 0).
//! Under QEMU's `-icount` the TSC and the PIT both follow the virtual clock, so this is the
//! exact guest-virtual time since power-on (1 GHz: one instruction per nanosecond).

use crate::x86::scale::Scale;
use spin::Once;

/// The PIT's input clock.
const PIT_HZ: u64 = 1_193_182;
/// Calibration window: 1/50 s.
const CALIBRATE_DIVISOR: u64 = 50;

struct Clock {
    hz: u64,
    /// TSC at nanosecond 0: power-on.
    zero: u64,
    /// TSC ticks to nanoseconds and back, read on every guest exit and entry: a multiply and
    /// a shift, not a 128-bit division (`__udivti3`).
    to_ns: Scale,
    to_tsc: Scale,
}

impl Clock {
    fn new(hz: u64, zero: u64) -> Clock {
        const NS: u64 = 1_000_000_000;
        Clock { hz, zero, to_ns: Scale::new(NS, hz, u64::MAX), to_tsc: Scale::new(hz, NS, u64::MAX) }
    }
}

static CLOCK: Once<Clock> = Once::new();

pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC only reads the time-stamp counter.
    unsafe { core::arch::x86_64::_rdtsc() }
}

fn inb(port: u16) -> u8 {
    // SAFETY: reads of the PIT/port-B registers have no effect on memory safety.
    unsafe { x86_64::instructions::port::Port::new(port).read() }
}

/// Count TSC ticks over a PIT channel 2 one-shot of 1/50 s (speaker off, gate on).
fn calibrate() -> Clock {
    let latch = PIT_HZ / CALIBRATE_DIVISOR;
    let b = inb(0x61);
    super::outb(0x61, (b & !0x02) | 0x01);
    // Channel 2, lobyte/hibyte, mode 0 (interrupt on terminal count), binary.
    super::outb(0x43, 0xb0);
    super::outb(0x42, latch as u8);
    super::outb(0x42, (latch >> 8) as u8);
    let start = rdtsc();
    let mut spins = 0u64;
    // OUT2 goes high at terminal count; give up after a generous number of polls.
    while inb(0x61) & 0x20 == 0 && spins < 50_000_000 {
        spins += 1;
        core::hint::spin_loop();
    }
    let end = rdtsc();
    // The window is exactly `latch` PIT ticks (slightly under 1/50 s).
    let hz = if spins >= 50_000_000 { 1_000_000_000 } else { (end - start).max(1) * PIT_HZ / latch };
    Clock::new(hz, 0)
}

fn clock() -> &'static Clock {
    CLOCK.call_once(calibrate)
}

/// Calibrate now (at boot, before any guest runs).
pub fn init() -> u64 {
    clock().hz
}

/// TSC ticks per second.
pub fn tsc_hz() -> u64 {
    clock().hz
}

/// The TSC value at nanosecond 0 of [`now_ns`].
pub fn tsc_zero() -> u64 {
    clock().zero
}

/// The TSC value at `ns`.
pub fn ns_to_tsc(ns: u64) -> u64 {
    let c = clock();
    c.zero.wrapping_add(c.to_tsc.apply(ns))
}

/// Nanoseconds since power-on.
pub fn now_ns() -> u64 {
    let c = clock();
    let ticks = rdtsc().wrapping_sub(c.zero);
    c.to_ns.apply(ticks)
}

/// The longest idle wait: a caller that waits for nothing in particular looks again at
/// least this often.
const IDLE_MAX_NS: u64 = 10_000_000;

/// Wait until `deadline_ns`, an interrupt (a kick from another CPU) or at most
/// [`IDLE_MAX_NS`]: HLT with this CPU's APIC timer armed for the deadline (a kick that came
/// while interrupts were off ends it at once: it is pending in the APIC). Without a usable
/// APIC timer, spin until the deadline (`None`: return at once). The caller re-checks what
/// it waits for.
pub fn idle_until(deadline_ns: Option<u64>) {
    if super::hostapic::available() {
        let now = now_ns();
        let until = deadline_ns.map_or(now + IDLE_MAX_NS, |d| d.min(now + IDLE_MAX_NS));
        if until <= now {
            return;
        }
        super::hostapic::arm(Some(until));
        // SAFETY: STI's one-instruction shadow makes STI; HLT atomic: an interrupt pending
        // now (a kick, the timer) ends the HLT rather than being taken before it. Every
        // vector from 32 up has a gate (`hostapic::xhv_host_irq`, which only signals EOI),
        // the exceptions have theirs; CLI restores the hypervisor's interrupts-off state.
        unsafe { core::arch::asm!("sti", "hlt", "cli", options(nomem, nostack)) };
        return;
    }
    delay_until(deadline_ns);
}

/// Spin `ns` nanoseconds.
pub fn delay_ns(ns: u64) {
    delay_until(Some(now_ns() + ns));
}

fn delay_until(deadline_ns: Option<u64>) {
    if let Some(deadline) = deadline_ns {
        let end = ns_to_tsc(deadline);
        while (rdtsc().wrapping_sub(end) as i64) < 0 {
            core::hint::spin_loop();
        }
    }
}
