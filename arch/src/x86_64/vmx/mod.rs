//! Intel VT-x: entering VMX root operation, reading what the CPU's VT-x offers, the MSR
//! bitmap shared by every VMCS (the guest-owned MSRs pass through), and the VMCS-based vCPU
//! ([`vcpu`]). Guest vector state and XCR0 are switched by `x86_64::xstate`.

pub mod vcpu;

use core::cell::UnsafeCell;
use spin::Once;
use x86_64::registers::control::{Cr0, Cr4};
use x86_64::registers::model_specific::Msr;

pub mod msr {
    pub const FEATURE_CONTROL: u32 = 0x3a;
    pub const VMX_BASIC: u32 = 0x480;
    pub const PINBASED_CTLS: u32 = 0x481;
    pub const PROCBASED_CTLS: u32 = 0x482;
    pub const EXIT_CTLS: u32 = 0x483;
    pub const ENTRY_CTLS: u32 = 0x484;
    pub const CR0_FIXED0: u32 = 0x486;
    pub const CR0_FIXED1: u32 = 0x487;
    pub const CR4_FIXED0: u32 = 0x488;
    pub const CR4_FIXED1: u32 = 0x489;
    pub const PROCBASED_CTLS2: u32 = 0x48b;
    pub const EPT_VPID_CAP: u32 = 0x48c;
    pub const TRUE_PINBASED_CTLS: u32 = 0x48d;
    pub const TRUE_PROCBASED_CTLS: u32 = 0x48e;
    pub const TRUE_EXIT_CTLS: u32 = 0x48f;
    pub const TRUE_ENTRY_CTLS: u32 = 0x490;
    pub const VMX_MISC: u32 = 0x485;
    pub const PAT: u32 = 0x277;
    pub const EFER: u32 = 0xc000_0080;
    pub const FS_BASE: u32 = 0xc000_0100;
    pub const GS_BASE: u32 = 0xc000_0101;
}

/// Secondary processor-based controls (IA32_VMX_PROCBASED_CTLS2 bits).
pub mod ctls2 {
    pub const EPT: u32 = 1 << 1;
    pub const VPID: u32 = 1 << 5;
    pub const UNRESTRICTED_GUEST: u32 = 1 << 7;
    /// Instructions a guest may only run with these on (else #UD): offered when the CPU can.
    pub const RDTSCP: u32 = 1 << 3;
    pub const INVPCID: u32 = 1 << 12;
    // "Enable XSAVES/XRSTORS" (bit 20) stays off: no supervisor state is offered.
}

/// IA32_VMX_EPT_VPID_CAP bits used here.
mod ept_cap {
    pub const WALK_4: u64 = 1 << 6;
    pub const WB: u64 = 1 << 14;
    pub const INVEPT: u64 = 1 << 20;
    pub const INVEPT_SINGLE: u64 = 1 << 25;
    pub const INVEPT_ALL: u64 = 1 << 26;
}

pub fn rdmsr(index: u32) -> u64 {
    // SAFETY: only architectural MSRs that exist on every VMX-capable CPU are read (the VMX
    // capability MSRs are read after CPUID confirmed VMX).
    unsafe { Msr::new(index).read() }
}

/// What this CPU's VT-x offers, read once at boot.
#[derive(Clone, Copy, Debug)]
pub struct Caps {
    pub revision: u32,
    /// Bit 55 of IA32_VMX_BASIC: the TRUE_* control MSRs exist.
    pub true_ctls: bool,
    pub ctls2_allowed: u32,
    pub ept_vpid: u64,
    pub cr0_fixed0: u64,
    pub cr0_fixed1: u64,
    pub cr4_fixed0: u64,
    pub cr4_fixed1: u64,
    /// IA32_VMX_MISC: bits 4:0 give the preemption timer's rate (TSC >> rate).
    pub misc: u64,
}

impl Caps {
    fn read() -> Self {
        let basic = rdmsr(msr::VMX_BASIC);
        let procbased = rdmsr(msr::PROCBASED_CTLS);
        // Secondary controls exist only if the primary controls may activate them (bit 31).
        let has_ctls2 = procbased >> 32 & (1 << 31) != 0;
        let ctls2_allowed = if has_ctls2 { (rdmsr(msr::PROCBASED_CTLS2) >> 32) as u32 } else { 0 };
        let uses_ept_or_vpid = ctls2_allowed & (ctls2::EPT | ctls2::VPID) != 0;
        Caps {
            revision: (basic & 0x7fff_ffff) as u32,
            true_ctls: basic & (1 << 55) != 0,
            ctls2_allowed,
            ept_vpid: if uses_ept_or_vpid { rdmsr(msr::EPT_VPID_CAP) } else { 0 },
            cr0_fixed0: rdmsr(msr::CR0_FIXED0),
            cr0_fixed1: rdmsr(msr::CR0_FIXED1),
            cr4_fixed0: rdmsr(msr::CR4_FIXED0),
            cr4_fixed1: rdmsr(msr::CR4_FIXED1),
            misc: rdmsr(msr::VMX_MISC),
        }
    }

    pub fn has(&self, ctl2: u32) -> bool {
        self.ctls2_allowed & ctl2 == ctl2
    }

    /// EPT as we build it: 4-level walk, write-back tables.
    pub fn ept_usable(&self) -> bool {
        self.has(ctls2::EPT) && self.ept_vpid & (ept_cap::WALK_4 | ept_cap::WB) == ept_cap::WALK_4 | ept_cap::WB
    }

    pub fn invept_all(&self) -> bool {
        self.ept_vpid & (ept_cap::INVEPT | ept_cap::INVEPT_ALL) == ept_cap::INVEPT | ept_cap::INVEPT_ALL
    }

    pub fn invept_single(&self) -> bool {
        self.ept_vpid & (ept_cap::INVEPT | ept_cap::INVEPT_SINGLE) == ept_cap::INVEPT | ept_cap::INVEPT_SINGLE
    }

    /// The preemption timer's rate: it counts down once every 2^rate TSC ticks.
    pub fn preemption_timer_rate(&self) -> u32 {
        (self.misc & 0x1f) as u32
    }

    /// The banner line: which of the features we rely on are offered.
    pub fn features(&self) -> &'static str {
        let ept = self.ept_usable();
        let ug = self.has(ctls2::UNRESTRICTED_GUEST);
        let vpid = self.has(ctls2::VPID);
        match (ept, ug, vpid) {
            (true, true, true) => "VMX EPT unrestricted guest VPID",
            (true, true, false) => "VMX EPT unrestricted guest",
            (true, false, true) => "VMX EPT VPID",
            (true, false, false) => "VMX EPT",
            (false, _, true) => "VMX VPID (no usable EPT)",
            (false, _, false) => "VMX (no EPT)",
        }
    }

    /// Adjust `want` for a control field: bits the CPU requires are set, bits it does not
    /// allow make this fail. `msr` is the TRUE_* MSR when available.
    pub fn control(&self, want: u32, msr: u32, true_msr: u32) -> Result<u32, &'static str> {
        let cap = rdmsr(if self.true_ctls && true_msr != 0 { true_msr } else { msr });
        let (must, may) = (cap as u32, (cap >> 32) as u32);
        if want & !may != 0 {
            return Err("a required VMX control is not supported by this CPU");
        }
        Ok(want | must)
    }

    /// The bits of `want` a control field may have set (optional features).
    pub fn allowed(&self, want: u32, msr: u32, true_msr: u32) -> u32 {
        let cap = rdmsr(if self.true_ctls && true_msr != 0 { true_msr } else { msr });
        want & (cap >> 32) as u32
    }
}

static CAPS: Once<Caps> = Once::new();

pub fn caps() -> &'static Caps {
    CAPS.get().expect("VMX not enabled")
}

/// A 4 KiB page the CPU owns: a VMXON region, the MSR bitmap.
#[repr(C, align(4096))]
struct Page(UnsafeCell<[u8; 4096]>);
// SAFETY: each VMXON region is written once by its own CPU before its VMXON, then owned by
// that CPU; the MSR bitmap is written once by `enable` on the boot CPU before any VM entry,
// then only read.
unsafe impl Sync for Page {}
/// Each logical CPU's VMXON region.
static VMXON_REGIONS: [Page; super::smp::MAX_CPUS] = [const { Page(UnsafeCell::new([0; 4096])) }; super::smp::MAX_CPUS];
/// The MSR bitmap every VMCS points at: a set bit makes the RDMSR (first 2 KiB) or WRMSR
/// (last 2 KiB) of that MSR exit; MSRs 0..0x1fff, then 0xc0000000..0xc0001fff.
static MSR_BITMAP: Page = Page(UnsafeCell::new([0xff; 4096]));

/// Let the guest read and write `index` without a VM exit.
fn msr_bitmap_allow(bitmap: &mut [u8; 4096], index: u32) {
    let (base, bit) = match index {
        0..=0x1fff => (0, index),
        0xc000_0000..=0xc000_1fff => (1024, index - 0xc000_0000),
        _ => return,
    };
    for half in [0, 2048] {
        bitmap[half + base + (bit / 8) as usize] &= !(1 << (bit % 8));
    }
}

/// Physical address of the MSR bitmap (the image is identity mapped).
pub fn msr_bitmap() -> u64 {
    MSR_BITMAP.0.get() as u64
}

/// MSRs the guest owns that the VMCS does not switch (FS/GS base and SYSENTER are guest-state
/// fields): each vCPU's values are loaded at VM entry and stored at VM exit. The hypervisor
/// itself never uses SYSCALL, SWAPGS or RDTSCP, so it needs no values of its own in them.
pub const SWITCHED_MSRS: [u32; 6] = [0xc000_0102, 0xc000_0081, 0xc000_0082, 0xc000_0083, 0xc000_0084, 0xc000_0103];
/// IA32_TSC_AUX exists only with RDTSCP.
pub const MSR_TSC_AUX: u32 = 0xc000_0103;

/// Check support, enable VMX in CR4/IA32_FEATURE_CONTROL and execute VMXON.
pub fn enable() -> Result<&'static Caps, &'static str> {
    let cpuid = raw_cpuid::CpuId::new();
    let vmx = cpuid.get_feature_info().is_some_and(|f| f.has_vmx());
    if !vmx {
        return Err("CPUID reports no VMX");
    }
    enable_in_feature_control()?;
    let caps = CAPS.call_once(Caps::read);
    if caps.ctls2_allowed == 0 {
        return Err("no secondary processor-based controls (no EPT)");
    }
    // SAFETY: the boot CPU alone, before any VM entry: nothing reads the bitmap yet.
    let bitmap = unsafe { &mut *MSR_BITMAP.0.get() };
    crate::x86::policy::GUEST_OWNED_MSRS.iter().for_each(|&m| msr_bitmap_allow(bitmap, m));
    vmxon(caps)?;
    Ok(caps)
}

/// IA32_FEATURE_CONTROL: if firmware left it unlocked, allow VMX outside SMX and lock it.
fn enable_in_feature_control() -> Result<(), &'static str> {
    const LOCK: u64 = 1 << 0;
    const VMX_OUTSIDE_SMX: u64 = 1 << 2;
    let fc = rdmsr(msr::FEATURE_CONTROL);
    if fc & LOCK == 0 {
        // SAFETY: writing the unlocked feature-control MSR only enables VMX.
        unsafe { Msr::new(msr::FEATURE_CONTROL).write(fc | LOCK | VMX_OUTSIDE_SMX) };
        return Ok(());
    }
    if fc & VMX_OUTSIDE_SMX == 0 {
        return Err("IA32_FEATURE_CONTROL is locked with VMX disabled (firmware setting)");
    }
    Ok(())
}

/// CR4.VMXE, and CR0/CR4 bits VMX operation requires set (fixed0) or clear (fixed1).
fn set_fixed_bits(caps: &Caps) {
    let cr0 = (Cr0::read_raw() | caps.cr0_fixed0) & caps.cr0_fixed1;
    let cr4 = (Cr4::read_raw() | caps.cr4_fixed0 | (1 << 13)) & caps.cr4_fixed1;
    // SAFETY: the fixed-0 bits (PE, NE, PG...) are already set in long mode or harmless to set;
    // fixed-1 clearing only removes bits VMX forbids; VMXE has no other effect.
    unsafe {
        Cr0::write_raw(cr0);
        Cr4::write_raw(cr4);
    }
}

/// An application processor: the boot CPU's VT-x (same capabilities, same shared MSR
/// bitmap), turned on here with this CPU's own VMXON region (SDM vol. 3C, "Enabling and
/// entering VMX operation": one region per logical processor).
pub fn enable_ap() -> Result<(), &'static str> {
    let cpuid = raw_cpuid::CpuId::new();
    if !cpuid.get_feature_info().is_some_and(|f| f.has_vmx()) {
        return Err("CPUID reports no VMX");
    }
    enable_in_feature_control()?;
    vmxon(caps())
}

/// CR0/CR4 as VMX requires, then VMXON with this CPU's region.
fn vmxon(caps: &Caps) -> Result<(), &'static str> {
    set_fixed_bits(caps);
    let region = VMXON_REGIONS[super::smp::this_cpu()].0.get();
    // SAFETY: this CPU's region, ours alone until VMXON hands it to the CPU.
    unsafe { (&mut *region)[..4].copy_from_slice(&caps.revision.to_le_bytes()) };
    // SAFETY: CR4.VMXE is set, CR0/CR4 satisfy the fixed bits, the region is 4 KiB aligned,
    // identity mapped (physical = virtual), carries the revision id and is this CPU's alone.
    unsafe { ::x86::bits64::vmx::vmxon(region as u64) }.map_err(|_| "VMXON failed")
}
