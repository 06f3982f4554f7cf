//! A hypercall fuzzer: a seeded stream of random hypercalls (every number, sub-operations
//! biased towards valid ones, hostile arguments) must each get a result or a Xen error
//! code, never a hypervisor panic or hang, and must never touch memory the call did not
//! name: canary pages around the scratch area the calls aim at, the guest's own code and
//! its stack are checked as it goes and at the end.
//!
//! Command line (`/chosen/bootargs` on ARM, the PVH start info on x86):
//! `fuzz.seed=S fuzz.calls=N` replays a campaign exactly; `fuzz.trace=I` prints every call
//! from the I-th on (to find the one that killed a hypervisor); `fuzz.mode=hold` makes this
//! domain a canary holder that only yields and watches its canary while another domain
//! fuzzes, ending once it has been alone on the CPU for a while.
//!
//! Prints `FUZZ seed=<s> calls=<n>` first and `FUZZ-DONE calls=<n> canary=intact` (or
//! `FUZZ-FAIL ...` lines) at the end.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(not(target_os = "none"))]
fn main() {}

#[cfg(target_os = "none")]
#[path = "fuzz/bootargs.rs"]
mod bootargs;
#[cfg(target_os = "none")]
#[path = "fuzz/calls.rs"]
mod calls;
#[cfg(target_os = "none")]
#[path = "fuzz/layout.rs"]
mod layout;

#[cfg(target_os = "none")]
mod guest {
    use crate::bootargs::{self, Cmdline};
    use crate::calls::{Call, Fuzzer};
    use crate::layout::{Arena, CANARY_SIZE, SCRATCH_SIZE};
    use guest_abi::{errno, hypercall as nr, sched, version};
    use hello_guest::{hypercall, println, shutdown};

    const DEFAULT_SEED: u64 = 1;
    const DEFAULT_CALLS: u64 = 10_000;
    /// Canaries are checked every this many calls (and at the end).
    const CHECK_EVERY: u64 = 1024;
    /// Bytes of our image (code first) whose checksum must not change.
    const CODE_CHECKED: usize = 16 * 1024;
    /// Lines reporting individual bad results before we only count them.
    const MAX_REPORTS: u32 = 10;

    static mut ARENA: Arena =
        Arena { canary_lo: [0; CANARY_SIZE], scratch: [0; SCRATCH_SIZE], canary_hi: [0; CANARY_SIZE] };

    fn arena() -> *mut Arena {
        &raw mut ARENA
    }

    /// The canary's word `i`: position-dependent, so a shifted copy is caught too.
    fn canary_word(i: usize) -> u64 {
        0xca4a_21ee_0000_0000 ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }

    fn canary_words(which: *mut [u8; CANARY_SIZE]) -> *mut u64 {
        which.cast::<u64>()
    }

    fn fill_canaries() {
        // SAFETY: ARENA is ours; no call ever names its canary fields.
        let (lo, hi) = unsafe { (&raw mut (*arena()).canary_lo, &raw mut (*arena()).canary_hi) };
        for part in [lo, hi] {
            for i in 0..CANARY_SIZE / 8 {
                // SAFETY: `i` words into an 8-aligned array of CANARY_SIZE bytes.
                unsafe { canary_words(part).add(i).write_volatile(canary_word(i)) };
            }
        }
    }

    /// Byte offset of the first damaged canary word, if any.
    fn damaged_canary() -> Option<usize> {
        // SAFETY: as in `fill_canaries`.
        let (lo, hi) = unsafe { (&raw mut (*arena()).canary_lo, &raw mut (*arena()).canary_hi) };
        for (k, part) in [lo, hi].into_iter().enumerate() {
            for i in 0..CANARY_SIZE / 8 {
                // SAFETY: as in `fill_canaries`.
                if unsafe { canary_words(part).add(i).read_volatile() } != canary_word(i) {
                    return Some(k * (CANARY_SIZE + SCRATCH_SIZE) + i * 8);
                }
            }
        }
        None
    }

    unsafe extern "C" {
        /// The first byte of our image (code first), from the entry assembly.
        #[cfg_attr(target_arch = "x86_64", link_name = "pvh_start")]
        #[cfg_attr(not(target_arch = "x86_64"), link_name = "_start")]
        static IMAGE_START: u8;
    }

    /// FNV-1a over the first [`CODE_CHECKED`] bytes of our image.
    fn code_checksum() -> u64 {
        let base = &raw const IMAGE_START;
        (0..CODE_CHECKED).fold(0xcbf2_9ce4_8422_2325u64, |h, i| {
            // SAFETY: the image is at least this large (text alone is), and mapped.
            let b = unsafe { base.add(i).read_volatile() };
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
    }

    /// Where the boot protocol left our command line.
    ///
    /// # Safety
    /// The arguments must be the registers the hypervisor started us with.
    unsafe fn cmdline(a0: usize, a2: usize) -> Cmdline {
        let _ = (a0, a2);
        #[cfg(target_arch = "aarch64")]
        // SAFETY: x0 is the device tree the hypervisor placed in our RAM.
        return unsafe { bootargs::from_device_tree(a0) };
        #[cfg(target_arch = "arm")]
        // SAFETY: r2 is the device tree the hypervisor placed in our RAM.
        return unsafe { bootargs::from_device_tree(a2) };
        #[cfg(target_arch = "x86_64")]
        // SAFETY: %ebx (moved to %edi by the entry code) is the PVH start info.
        return unsafe { bootargs::from_start_info(a0 & 0xffff_ffff) };
    }

    #[unsafe(no_mangle)]
    extern "C" fn guest_main(a0: usize, _a1: usize, a2: usize) -> ! {
        // SAFETY: these are the entry registers, untouched by the entry code.
        let args = unsafe { cmdline(a0, a2) };
        let seed = args.number("fuzz.seed").unwrap_or(DEFAULT_SEED);
        let calls = args.number("fuzz.calls").unwrap_or(DEFAULT_CALLS);
        let trace_from = args.number("fuzz.trace").unwrap_or(u64::MAX);
        fill_canaries();
        if args.value("fuzz.mode") == Some(b"hold") {
            hold(calls);
        }
        println!("FUZZ seed={} calls={}", seed, calls);
        campaign(seed, calls, trace_from)
    }

    /// Results seen, by kind.
    struct Stats {
        ok: u64,
        by_errno: [u64; 128],
        bad: u64,
    }

    impl Stats {
        fn record(&mut self, i: u64, call: &Call, ret: i64) {
            if ret >= 0 {
                self.ok += 1;
            } else if errno::is_xen_errno(-ret) {
                self.by_errno[(-ret) as usize] += 1;
            } else {
                self.bad += 1;
                if self.bad <= u64::from(MAX_REPORTS) {
                    println!(
                        "FUZZ-FAIL call {} nr={:#x} args={:#x?}: returned {} (no Xen errno)",
                        i, call.nr, call.args, ret
                    );
                }
            }
        }

        fn print(&self) {
            let e = |n: i64| self.by_errno[n as usize];
            let named = [
                errno::EFAULT,
                errno::EINVAL,
                errno::ENOSYS,
                errno::EPERM,
                errno::ENOENT,
                errno::EEXIST,
                errno::ENOSPC,
            ];
            let other: u64 = self.by_errno.iter().sum::<u64>() - named.iter().map(|&n| e(n)).sum::<u64>();
            println!(
                "FUZZ-STATS ok={} EFAULT={} EINVAL={} ENOSYS={} EPERM={} ENOENT={} EEXIST={} ENOSPC={} other={} bad={}",
                self.ok,
                e(errno::EFAULT),
                e(errno::EINVAL),
                e(errno::ENOSYS),
                e(errno::EPERM),
                e(errno::ENOENT),
                e(errno::EEXIST),
                e(errno::ENOSPC),
                other,
                self.bad
            );
        }
    }

    fn campaign(seed: u64, calls: u64, trace_from: u64) -> ! {
        // SAFETY: only the address is taken.
        let scratch = unsafe { (&raw mut (*arena()).scratch) } as u64;
        let mut fuzzer = Fuzzer::new(seed, scratch);
        prepare_wakeups();
        let mut failed = !spray_physmap(&fuzzer);
        let code = code_checksum();
        // A canary in this frame: the hypervisor must leave our stack alone too.
        let stack_canary = [0x57ac_c0de_5eed_0000u64 ^ seed; 32];
        let mut stats = Stats { ok: 0, by_errno: [0; 128], bad: 0 };
        let progress_every = (calls / 8).max(1);
        for i in 0..calls {
            let call = fuzzer.next_call();
            if i >= trace_from {
                let a = call.args;
                println!(
                    "FUZZ-CALL {} nr={:#x} args={:#x} {:#x} {:#x} {:#x} {:#x}",
                    i, call.nr, a[0], a[1], a[2], a[3], a[4]
                );
            }
            let ret = issue(&call);
            stats.record(i, &call, ret);
            if (i + 1).is_multiple_of(CHECK_EVERY) && !memory_intact(i + 1, code) {
                failed = true;
                break;
            }
            if (i + 1).is_multiple_of(progress_every) && i + 1 < calls {
                println!("FUZZ progress {}/{}", i + 1, calls);
            }
        }
        let stack_ok = core::hint::black_box(&stack_canary).iter().all(|&w| w == 0x57ac_c0de_5eed_0000 ^ seed);
        if !stack_ok {
            println!("FUZZ-FAIL stack canary damaged");
        }
        failed |= !stack_ok || !memory_intact(calls, code) || stats.bad != 0;
        stats.print();
        // Still answering sensibly after all that.
        let v = hypercall(nr::XEN_VERSION, [version::XENVER_VERSION, 0, 0, 0, 0]);
        if v >> 16 != 4 {
            println!("FUZZ-FAIL xen_version after the campaign returned {}", v);
            failed = true;
        }
        if failed {
            println!("FUZZ-FAIL seed={} calls={}", seed, calls);
            shutdown(sched::SHUTDOWN_CRASH)
        }
        println!("FUZZ-DONE calls={} canary=intact", calls);
        shutdown(sched::SHUTDOWN_POWEROFF)
    }

    /// Far-apart places the shared info page is mapped at before the random calls.
    const SPRAY: u64 = 2048;

    /// Map the shared info page at [`SPRAY`] frames a gigabyte apart, above our RAM: each
    /// may cost the hypervisor page tables, and running out must be an errno, not a panic
    /// (x86 once exhausted its heap this way). True if every answer was 0 or a Xen errno.
    fn spray_physmap(fuzzer: &Fuzzer) -> bool {
        let (mut mapped, mut refused, mut bad) = (0u64, 0u64, 0u64);
        for i in 0..SPRAY {
            // Frame (i + 2) GiB: clear of ARM's RAM at 1 GiB and of x86's below 64 MiB.
            match fuzzer.map_shared_info_at((i + 2) << 18) {
                0 => mapped += 1,
                r if r < 0 && errno::is_xen_errno(-r) => refused += 1,
                _ => bad += 1,
            }
        }
        println!("FUZZ-SPRAY mapped={} refused={} bad={}", mapped, refused, bad);
        if bad != 0 {
            println!("FUZZ-FAIL add_to_physmap spray: {} answers were no Xen errno", bad);
        }
        bad == 0
    }

    /// Canaries and code as they were; says what is not.
    fn memory_intact(after: u64, code: u64) -> bool {
        if let Some(off) = damaged_canary() {
            println!("FUZZ-FAIL canary damaged at arena offset {:#x} after {} calls", off, after);
            return false;
        }
        if code_checksum() != code {
            println!("FUZZ-FAIL our code changed after {} calls", after);
            return false;
        }
        true
    }

    /// Issue one call; a call that may sleep gets a wake-up armed first.
    fn issue(call: &Call) -> i64 {
        if call.may_block {
            arm_wakeup();
        }
        let ret = hypercall(call.nr, call.args);
        if call.may_block {
            disarm_wakeup();
        }
        ret
    }

    /// aarch64: the EL1 virtual timer, due in about 120 µs. The hypervisor wakes a blocked
    /// vCPU for an interrupt it could deliver, so the timer's PPI is enabled in our vGIC (see
    /// [`prepare_wakeups`]); our IRQs stay masked, so it is only ever seen, never handled
    /// (Xen's SCHEDOP_block unmasks them: the IRQ vector masks them again at once).
    #[cfg(target_arch = "aarch64")]
    fn arm_wakeup() {
        // SAFETY: the EL1 virtual timer is ours to program; IRQs are masked at EL1.
        unsafe {
            core::arch::asm!(
                "mrs {f}, cntfrq_el0",
                "lsr {f}, {f}, #13",
                "mrs {t}, cntvct_el0",
                "add {t}, {t}, {f}",
                "msr cntv_cval_el0, {t}",
                "mov {t}, #1",
                "msr cntv_ctl_el0, {t}",
                "isb",
                f = out(reg) _,
                t = out(reg) _,
                options(nostack),
            );
        }
    }

    /// Timer off, and every interrupt the vGIC holds for us acknowledged and completed.
    #[cfg(target_arch = "aarch64")]
    fn disarm_wakeup() {
        // SAFETY: switches our own virtual timer off.
        unsafe { core::arch::asm!("msr cntv_ctl_el0, xzr", "isb", options(nostack)) };
        for _ in 0..8 {
            let iar: u64;
            // SAFETY: acknowledging an interrupt at our own (virtual) CPU interface.
            unsafe { core::arch::asm!("mrs {}, icc_iar1_el1", out(reg) iar, options(nostack)) };
            if iar & 0xff_ffff >= 1020 {
                break;
            }
            // SAFETY: completes the interrupt just acknowledged.
            unsafe { core::arch::asm!("msr icc_eoir1_el1, {}", "isb", in(reg) iar, options(nostack)) };
        }
    }

    /// Xen's guest GICv3: distributor with group 1 on, the virtual timer's PPI enabled at our
    /// redistributor, our CPU interface on. PSTATE.I stays set (or is set again by the IRQ
    /// vector after a SCHEDOP_block that cleared it): nothing is ever handled.
    #[cfg(target_arch = "aarch64")]
    fn prepare_wakeups() {
        const GICD: usize = 0x0300_1000;
        const GICR: usize = 0x0302_0000;
        const GICR_SGI: usize = GICR + 0x1_0000;
        const VTIMER_PPI: usize = 27;
        // SAFETY: our vGIC's registers (trapped and emulated by the hypervisor), written
        // with single aligned accesses as the MMU-off device mapping needs.
        unsafe {
            core::ptr::write_volatile(GICD as *mut u32, (1 << 4) | (1 << 1) | 1);
            core::ptr::write_volatile((GICR + 0x14) as *mut u32, 0);
            core::ptr::write_volatile((GICR_SGI + 0x400 + VTIMER_PPI) as *mut u8, 0xa0);
            core::ptr::write_volatile((GICR_SGI + 0x100) as *mut u32, 1 << VTIMER_PPI);
            core::arch::asm!(
                "mrs {t}, icc_sre_el1",
                "orr {t}, {t}, #1",
                "msr icc_sre_el1, {t}",
                "mov {t}, #0xff",
                "msr icc_pmr_el1, {t}",
                "mov {t}, #1",
                "msr icc_igrpen1_el1, {t}",
                "isb",
                t = out(reg) _,
                options(nostack),
            );
        }
    }

    // A vector table whose IRQ entry returns with IRQs masked again (CPSR.I set in SPSR_irq,
    // SP_irq as the only scratch register: nothing else runs in IRQ mode); SCHEDOP_block
    // unmasks them, and the wake-up interrupt then arrives once. Other vectors spin.
    #[cfg(target_arch = "arm")]
    core::arch::global_asm!(
        r#"
        .section .text.fuzz_vectors, "ax"
        .arm
        .balign 32
        .global fuzz_armv7_vectors
    fuzz_armv7_vectors:
        b .
        b .
        b .
        b .
        b .
        b .
        b 1f
        b .
    1:  mrs sp, spsr
        orr sp, sp, #0x80
        msr spsr_cxsf, sp
        subs pc, lr, #4
        "#
    );

    /// Xen's guest GICv2: distributor on, the virtual timer's PPI enabled (banked, ours),
    /// our CPU interface (the GICV frame at GICC) on with every priority let through. CPSR.I
    /// stays set: nothing is ever handled, only seen by the hypervisor.
    #[cfg(target_arch = "arm")]
    fn prepare_wakeups() {
        unsafe extern "C" {
            static fuzz_armv7_vectors: u8;
        }
        // SAFETY: our own exception vector base, pointing at the table above.
        unsafe {
            core::arch::asm!("mcr p15, 0, {}, c12, c0, 0", "isb", in(reg) &raw const fuzz_armv7_vectors, options(nostack))
        };
        const GICD: usize = 0x0300_1000;
        const GICC: usize = 0x0300_2000;
        const VTIMER_PPI: usize = 27;
        // SAFETY: our vGIC's distributor (trapped and emulated) and our virtual CPU
        // interface, written with single aligned accesses.
        unsafe {
            core::ptr::write_volatile(GICD as *mut u32, 1);
            core::ptr::write_volatile((GICD + 0x400 + VTIMER_PPI) as *mut u8, 0xa0);
            core::ptr::write_volatile((GICD + 0x100) as *mut u32, 1 << VTIMER_PPI);
            core::ptr::write_volatile((GICC + 0x4) as *mut u32, 0xff);
            core::ptr::write_volatile(GICC as *mut u32, 1);
        }
    }

    /// x86: a self-IPI left pending for good (IF stays clear, so it is never taken) is an
    /// interrupt the hypervisor sees waiting: SCHEDOP_block returns at once. (Xen's
    /// single-shot timer does not do: its VIRQ is raised before the block and lost unbound.)
    #[cfg(target_arch = "x86_64")]
    fn prepare_wakeups() {
        const X2APIC_SELF_IPI: u32 = 0x83f;
        const VECTOR: u32 = 0xf0;
        // SAFETY: our own (emulated) local APIC; interrupts are disabled, so the vector is
        // only ever pending.
        unsafe {
            core::arch::asm!("wrmsr", in("ecx") X2APIC_SELF_IPI, in("eax") VECTOR, in("edx") 0, options(nostack))
        };
    }

    #[cfg(target_arch = "x86_64")]
    fn arm_wakeup() {}

    #[cfg(target_arch = "x86_64")]
    fn disarm_wakeup() {}

    /// ARMv7: the hypervisor resumes a blocked vCPU at once (it has no clock to sleep on).
    /// ARMv7: the PL1 virtual timer, due in about 120 µs (see the aarch64 version).
    #[cfg(target_arch = "arm")]
    fn arm_wakeup() {
        // SAFETY: the virtual timer is ours to program; IRQs are masked.
        unsafe {
            core::arch::asm!(
                "mrc p15, 0, {f}, c14, c0, 0",
                "lsr {f}, {f}, #13",
                "isb",
                "mrrc p15, 1, {lo}, {hi}, c14",
                "adds {lo}, {lo}, {f}",
                "adc {hi}, {hi}, #0",
                "mcrr p15, 3, {lo}, {hi}, c14",
                "mov {f}, #1",
                "mcr p15, 0, {f}, c14, c3, 1",
                "isb",
                f = out(reg) _,
                lo = out(reg) _,
                hi = out(reg) _,
                options(nostack),
            );
        }
    }

    /// Timer off, and every interrupt the vGIC holds for us acknowledged and completed.
    #[cfg(target_arch = "arm")]
    fn disarm_wakeup() {
        const GICC: usize = 0x0300_2000;
        // SAFETY: switches our own virtual timer off.
        unsafe { core::arch::asm!("mcr p15, 0, {}, c14, c3, 1", "isb", in(reg) 0u32, options(nostack)) };
        for _ in 0..8 {
            // SAFETY: acknowledging and completing at our own (virtual) CPU interface.
            let iar = unsafe { core::ptr::read_volatile((GICC + 0xc) as *const u32) };
            if iar & 0x3ff >= 1020 {
                break;
            }
            // SAFETY: as above, the interrupt just acknowledged.
            unsafe { core::ptr::write_volatile((GICC + 0x10) as *mut u32, iar) };
        }
    }

    /// Canary-holder mode: yield `max_yields` times at most, checking the canary, and stop
    /// early once the other domain has gone (aarch64: yields come straight back).
    fn hold(max_yields: u64) -> ! {
        println!("FUZZ-HOLD canary armed, up to {} yields", max_yields);
        let mut alone = 0u64;
        let mut yields = 0u64;
        while yields < max_yields && alone < ALONE_YIELDS {
            let before = now_ticks();
            hypercall(nr::SCHED_OP, [sched::SCHEDOP_YIELD, 0, 0, 0, 0]);
            yields += 1;
            // Another domain's slice is a millisecond; a yield with nobody to yield to is
            // a few microseconds.
            alone = if now_ticks().wrapping_sub(before) < ticks_per_ms() / 8 { alone + 1 } else { 0 };
            if yields.is_multiple_of(64) && damaged_canary().is_some() {
                break;
            }
        }
        match damaged_canary() {
            None => {
                println!("FUZZ-HOLD-DONE yields={} canary=intact", yields);
                shutdown(sched::SHUTDOWN_POWEROFF)
            }
            Some(off) => {
                println!("FUZZ-FAIL holder canary damaged at arena offset {:#x}", off);
                shutdown(sched::SHUTDOWN_CRASH)
            }
        }
    }

    /// Yields in a row that came straight back before the holder believes it is alone.
    const ALONE_YIELDS: u64 = 5000;

    #[cfg(target_arch = "aarch64")]
    fn now_ticks() -> u64 {
        let t: u64;
        // SAFETY: reads the virtual counter, which EL1 may.
        unsafe { core::arch::asm!("isb", "mrs {}, cntvct_el0", out(reg) t, options(nostack)) };
        t
    }

    #[cfg(target_arch = "aarch64")]
    fn ticks_per_ms() -> u64 {
        let f: u64;
        // SAFETY: reads the counter frequency.
        unsafe { core::arch::asm!("mrs {}, cntfrq_el0", out(reg) f, options(nostack)) };
        f / 1000
    }

    /// Elsewhere one domain runs per machine: the holder only counts its yields.
    #[cfg(not(target_arch = "aarch64"))]
    fn now_ticks() -> u64 {
        0
    }

    #[cfg(not(target_arch = "aarch64"))]
    fn ticks_per_ms() -> u64 {
        0
    }
}
