//! CP15 registers of the HYP world, one accessor per register.
//!
//! `aarch32-cpu` covers only some of them (not VTTBR, VTCR, HTTBR, HTCR, HMAIR, the address
//! translation operations), so all are written here the same way: one instruction each.
//! Encodings are (opc1, CRn, CRm, opc2) as the ARMv7-A/R Architecture Reference Manual lists them.

use core::arch::asm;

/// A 32-bit CP15 register or operation: `r` makes a reader (`mrc`), `w` a writer (`mcr`).
macro_rules! cp15 {
    (r $(#[$doc:meta])* $name:ident = $opc1:literal, $crn:literal, $crm:literal, $opc2:literal) => {
        $(#[$doc])*
        #[inline(always)]
        pub fn $name() -> u32 {
            let v: u32;
            // SAFETY: reading this CP15 register has no side effect; the hypervisor runs in
            // HYP mode, where every register of this module is accessible.
            unsafe {
                asm!(concat!("mrc p15, ", $opc1, ", {}, ", $crn, ", ", $crm, ", ", $opc2), out(reg) v,
                     options(nomem, nostack, preserves_flags))
            };
            v
        }
    };
    (w $(#[$doc:meta])* $name:ident = $opc1:literal, $crn:literal, $crm:literal, $opc2:literal) => {
        $(#[$doc])*
        #[inline(always)]
        pub fn $name(v: u32) {
            // SAFETY: the callers in this module tree only write values that keep the
            // hypervisor's own view of memory intact: HYP-regime registers are set once at
            // boot to an identity map, guest-regime registers only affect the guest.
            unsafe {
                asm!(concat!("mcr p15, ", $opc1, ", {}, ", $crn, ", ", $crm, ", ", $opc2), in(reg) v,
                     options(nostack, preserves_flags))
            };
        }
    };
}

/// A 64-bit CP15 register: `r` makes a reader (`mrrc`), `w` a writer (`mcrr`).
macro_rules! cp15_64 {
    (r $(#[$doc:meta])* $name:ident = $opc1:literal, $crm:literal) => {
        $(#[$doc])*
        #[inline(always)]
        pub fn $name() -> u64 {
            let (lo, hi): (u32, u32);
            // SAFETY: as for the 32-bit reads: no side effect, accessible in HYP mode.
            unsafe {
                asm!(concat!("mrrc p15, ", $opc1, ", {}, {}, ", $crm), out(reg) lo, out(reg) hi,
                     options(nomem, nostack, preserves_flags))
            };
            (u64::from(hi) << 32) | u64::from(lo)
        }
    };
    (w $(#[$doc:meta])* $name:ident = $opc1:literal, $crm:literal) => {
        $(#[$doc])*
        #[inline(always)]
        pub fn $name(v: u64) {
            // SAFETY: as for the 32-bit writes: callers keep the hypervisor's own mappings.
            unsafe {
                asm!(concat!("mcrr p15, ", $opc1, ", {}, {}, ", $crm), in(reg) v as u32, in(reg) (v >> 32) as u32,
                     options(nostack, preserves_flags))
            };
        }
    };
}

cp15!(r /** Main ID register (what guests read back through VPIDR). */ midr = "0", "c0", "c0", "0");
cp15!(r /** Multiprocessor affinity: which CPU of the cluster(s) this is. */ mpidr = "0", "c0", "c0", "5");
cp15!(r /** Hyp software thread ID: this CPU's logical number (PL2 only, guests never see it). */ htpidr = "4", "c13", "c0", "2");
cp15!(w /** Set the Hyp software thread ID. */ write_htpidr = "4", "c13", "c0", "2");
cp15!(w /** Virtualization processor ID: the MIDR a guest reads. */ write_vpidr = "4", "c0", "c0", "0");
cp15!(w /** Virtualization multiprocessor ID: the MPIDR a guest reads. */ write_vmpidr = "4", "c0", "c0", "5");
cp15!(r /** Hyp system control: MMU, caches, alignment checks of HYP mode. */ hsctlr = "4", "c1", "c0", "0");
cp15!(w /** See [`hsctlr`]. */ write_hsctlr = "4", "c1", "c0", "0");
cp15!(w /** Hyp configuration: what the guest traps on, stage-2 on/off. */ write_hcr = "4", "c1", "c1", "0");
cp15!(w /** Hyp coprocessor trap register: which coprocessors (cp10/cp11: VFP) trap to HYP. */ write_hcptr = "4", "c1", "c1", "2");
cp15!(w /** The guest's (Non-secure) system control register, reached from HYP. */ write_sctlr = "0", "c1", "c0", "0");
cp15!(w /** Hyp translation control (HYP stage-1 is always LPAE). */ write_htcr = "4", "c2", "c0", "2");
cp15!(w /** Virtualization translation control (stage-2). */ write_vtcr = "4", "c2", "c1", "2");
cp15!(r /** Hyp syndrome: why the last exception was taken to HYP mode. */ hsr = "4", "c5", "c2", "0");
cp15!(r /** Hyp data fault address (virtual address of the faulting access). */ hdfar = "4", "c6", "c0", "0");
cp15!(r /** Hyp instruction fault address. */ hifar = "4", "c6", "c0", "2");
cp15!(r /** Hyp IPA fault address: IPA\[39:12\] of a stage-2 fault in bits \[31:4\]. */ hpfar = "4", "c6", "c0", "4");
cp15!(w /** Translate a guest PL1 read: Non-secure PL1&0 stage 1, then stage 2. */ ats12nsopr = "0", "c7", "c8", "4");
cp15!(w /** Translate a guest PL1 write: Non-secure PL1&0 stage 1, then stage 2. */ ats12nsopw = "0", "c7", "c8", "5");
cp15!(w /** Translate a guest PL1 write through stage 1 alone (the result is an IPA). */ ats1cpw = "0", "c7", "c8", "1");
cp15!(w /** Invalidate the whole instruction cache to the point of unification. */ iciallu = "0", "c7", "c5", "0");
cp15!(w /** [`iciallu`] on every CPU of the Inner Shareable domain. */ icialluis = "0", "c7", "c1", "0");
cp15!(w /** Invalidate all HYP-regime TLB entries. */ tlbiallh = "4", "c8", "c7", "0");
cp15!(w /** Invalidate all Non-secure non-HYP TLB entries, every VMID. */ tlbiallnsnh = "4", "c8", "c7", "4");
cp15!(w /** [`tlbiallnsnh`] on every CPU of the Inner Shareable domain. */ tlbiallnsnhis = "4", "c8", "c3", "4");
cp15!(w /** Invalidate all TLB entries, Inner Shareable. From HYP mode: every stage-1 and stage-2
    entry of the current VMID (VTTBR's), as KVM's ARMv7 port relies on for stage-2 changes. */ tlbiallis = "0", "c8", "c3", "0");
cp15!(w /** Hyp memory attribute indirection 0 (attributes 0..3). */ write_hmair0 = "4", "c10", "c2", "0");
cp15!(w /** Hyp memory attribute indirection 1 (attributes 4..7). */ write_hmair1 = "4", "c10", "c2", "1");
cp15!(w /** Hyp vector base address. */ write_hvbar = "4", "c12", "c0", "0");

cp15_64!(r /** Physical address register: result of the last address translation. */ par = "0", "c7");
// The guest's (Non-secure PL1&0) context, reached from HYP mode: read and written only when
// the vCPU on the CPU changes (`cp15.rs`).
cp15!(r /** See [`write_sctlr`]. */ sctlr = "0", "c1", "c0", "0");
cp15!(r /** Coprocessor access control: which of cp10/cp11 (VFP) PL0/PL1 may use. */ cpacr = "0", "c1", "c0", "2");
cp15!(w /** See [`cpacr`]. */ write_cpacr = "0", "c1", "c0", "2");
cp15!(r /** Translation table base control. */ ttbcr = "0", "c2", "c0", "2");
cp15!(w /** See [`ttbcr`]. */ write_ttbcr = "0", "c2", "c0", "2");
cp15!(r /** Domain access control. */ dacr = "0", "c3", "c0", "0");
cp15!(w /** See [`dacr`]. */ write_dacr = "0", "c3", "c0", "0");
cp15!(r /** Data fault status. */ dfsr = "0", "c5", "c0", "0");
cp15!(w /** See [`dfsr`]. */ write_dfsr = "0", "c5", "c0", "0");
cp15!(r /** Instruction fault status. */ ifsr = "0", "c5", "c0", "1");
cp15!(w /** See [`ifsr`]. */ write_ifsr = "0", "c5", "c0", "1");
cp15!(r /** Auxiliary data fault status. */ adfsr = "0", "c5", "c1", "0");
cp15!(w /** See [`adfsr`]. */ write_adfsr = "0", "c5", "c1", "0");
cp15!(r /** Auxiliary instruction fault status. */ aifsr = "0", "c5", "c1", "1");
cp15!(w /** See [`aifsr`]. */ write_aifsr = "0", "c5", "c1", "1");
cp15!(r /** Data fault address. */ dfar = "0", "c6", "c0", "0");
cp15!(w /** See [`dfar`]. */ write_dfar = "0", "c6", "c0", "0");
cp15!(r /** Instruction fault address. */ ifar = "0", "c6", "c0", "2");
cp15!(w /** See [`ifar`]. */ write_ifar = "0", "c6", "c0", "2");
cp15!(r /** Primary region remap / MAIR0. */ mair0 = "0", "c10", "c2", "0");
cp15!(w /** See [`mair0`]. */ write_mair0 = "0", "c10", "c2", "0");
cp15!(r /** Normal memory remap / MAIR1. */ mair1 = "0", "c10", "c2", "1");
cp15!(w /** See [`mair1`]. */ write_mair1 = "0", "c10", "c2", "1");
cp15!(r /** Auxiliary memory attribute indirection 0. */ amair0 = "0", "c10", "c3", "0");
cp15!(w /** See [`amair0`]. */ write_amair0 = "0", "c10", "c3", "0");
cp15!(r /** Auxiliary memory attribute indirection 1. */ amair1 = "0", "c10", "c3", "1");
cp15!(w /** See [`amair1`]. */ write_amair1 = "0", "c10", "c3", "1");
cp15!(r /** The guest's exception vector base. */ vbar = "0", "c12", "c0", "0");
cp15!(w /** See [`vbar`]. */ write_vbar = "0", "c12", "c0", "0");
cp15!(r /** Context ID (ASID in short-descriptor mode). */ contextidr = "0", "c13", "c0", "1");
cp15!(w /** See [`contextidr`]. */ write_contextidr = "0", "c13", "c0", "1");
cp15!(r /** User read/write thread ID. */ tpidrurw = "0", "c13", "c0", "2");
cp15!(w /** See [`tpidrurw`]. */ write_tpidrurw = "0", "c13", "c0", "2");
cp15!(r /** User read-only thread ID. */ tpidruro = "0", "c13", "c0", "3");
cp15!(w /** See [`tpidruro`]. */ write_tpidruro = "0", "c13", "c0", "3");
cp15!(r /** PL1-only thread ID. */ tpidrprw = "0", "c13", "c0", "4");
cp15!(w /** See [`tpidrprw`]. */ write_tpidrprw = "0", "c13", "c0", "4");
cp15!(r /** Cache size selection. */ csselr = "2", "c0", "c0", "0");
cp15!(w /** See [`csselr`]. */ write_csselr = "2", "c0", "c0", "0");
cp15!(r /** Timer PL1 control: PL0 access to the counters and timers. */ cntkctl = "0", "c14", "c1", "0");
cp15!(w /** See [`cntkctl`]. */ write_cntkctl = "0", "c14", "c1", "0");
cp15_64!(r /** Translation table base 0. */ ttbr0 = "0", "c2");
cp15_64!(w /** See [`ttbr0`]. */ write_ttbr0 = "0", "c2");
cp15_64!(r /** Translation table base 1. */ ttbr1 = "1", "c2");
cp15_64!(w /** See [`ttbr1`]. */ write_ttbr1 = "1", "c2");
cp15_64!(w /** See [`par`]. */ write_par = "0", "c7");
cp15_64!(w /** Hyp translation table base (HYP stage-1). */ write_httbr = "4", "c2");
// The generic timer, from HYP mode.
cp15!(r /** Counter frequency in Hz. */ cntfrq = "0", "c14", "c0", "0");
cp15!(r /** The guest's virtual timer control: ENABLE, IMASK, ISTATUS. */ cntv_ctl = "0", "c14", "c3", "1");
cp15!(w /** See [`cntv_ctl`]. */ write_cntv_ctl = "0", "c14", "c3", "1");
cp15!(w /** Hyp timer control: PL1 access to the physical counter and timer. */ write_cnthctl = "4", "c14", "c1", "0");
cp15!(w /** Hyp physical timer control (CNTHP_CTL): ENABLE, IMASK. */ write_cnthp_ctl = "4", "c14", "c2", "1");
cp15!(w /** Clean and invalidate a data cache line by address to the point of coherency. */ dccimvac = "0", "c7", "c14", "1");
cp15!(r /** Cache type: the smallest data cache line in DminLine. */ ctr = "0", "c0", "c0", "1");
cp15_64!(r /** The physical count. */ cntpct = "0", "c14");
cp15_64!(r /** The guest's virtual timer compare value. */ cntv_cval = "3", "c14");
cp15_64!(w /** See [`cntv_cval`]. */ write_cntv_cval = "3", "c14");
cp15_64!(w /** Virtual offset: the guest's virtual count is the physical count minus this. */ write_cntvoff = "4", "c14");
cp15_64!(w /** Hyp physical timer compare value (CNTHP_CVAL). */ write_cnthp_cval = "6", "c14");
cp15_64!(w /** Virtualization translation table base: stage-2 table and VMID. */ write_vttbr = "6", "c2");

/// Data synchronization barrier, full system.
#[inline(always)]
pub fn dsb() {
    // SAFETY: a barrier has no effect beyond ordering memory accesses.
    unsafe { asm!("dsb sy", options(nostack, preserves_flags)) };
}

/// Instruction synchronization barrier: later instructions see earlier CP15 writes.
#[inline(always)]
pub fn isb() {
    // SAFETY: a barrier has no effect beyond ordering instruction fetch and execution.
    unsafe { asm!("isb", options(nostack, preserves_flags)) };
}

/// Current program status register (mode in bits \[4:0\]).
#[inline(always)]
pub fn cpsr() -> u32 {
    let v: u32;
    // SAFETY: reading CPSR has no side effect.
    unsafe { asm!("mrs {}, cpsr", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}
