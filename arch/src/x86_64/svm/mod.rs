//! AMD-V (SVM): turning on EFER.SVME, the host save areas and permission maps, and the
//! VMCB-based vCPU ([`vcpu`]). Exit decisions live in [`crate::x86::svm`], host-tested.

pub mod vcpu;

use super::smp::MAX_CPUS;
use crate::x86::vmcb::{IOPM_SIZE, MSRPM_SIZE, msrpm_allow};
use core::cell::UnsafeCell;
use spin::Once;
use x86_64::registers::model_specific::Msr;

mod msr {
    pub const EFER: u32 = 0xc000_0080;
    pub const VM_CR: u32 = 0xc001_0114;
    pub const VM_HSAVE_PA: u32 = 0xc001_0117;
}

/// EFER.SVME: SVM instructions enabled.
const EFER_SVME: u64 = 1 << 12;
/// VM_CR.SVMDIS: firmware disabled SVM.
const VM_CR_SVMDIS: u64 = 1 << 4;

/// What this CPU's SVM offers (CPUID 0x8000000A), read once at boot.
#[derive(Clone, Copy, Debug)]
pub struct Caps {
    pub asids: u32,
    pub nested_paging: bool,
    /// The CPU writes the next RIP of intercepted instructions into the VMCB.
    pub nrip: bool,
    pub decode_assists: bool,
    pub vgif: bool,
}

impl Caps {
    fn read() -> Self {
        let r = cpuid(0x8000_000a);
        Caps {
            asids: r[1],
            nested_paging: r[3] & (1 << 0) != 0,
            nrip: r[3] & (1 << 3) != 0,
            decode_assists: r[3] & (1 << 7) != 0,
            vgif: r[3] & (1 << 16) != 0,
        }
    }
}

fn cpuid(leaf: u32) -> [u32; 4] {
    let r = core::arch::x86_64::__cpuid_count(leaf, 0);
    [r.eax, r.ebx, r.ecx, r.edx]
}

/// CPUID 0x80000001 ECX.SVM (bit 2), if the extended leaf exists.
pub fn cpu_has_svm() -> bool {
    cpuid(0x8000_0000)[0] >= 0x8000_000a && cpuid(0x8000_0001)[2] & (1 << 2) != 0
}

static CAPS: Once<Caps> = Once::new();

pub fn caps() -> &'static Caps {
    CAPS.get().expect("SVM not enabled")
}

/// A page-aligned area the CPU owns (host save area, VMSAVE area, permission maps).
#[repr(C, align(4096))]
struct CpuArea<const N: usize>(UnsafeCell<[u8; N]>);
// SAFETY: the permission maps are written only by `enable` on the boot CPU before any VMRUN
// and only read afterwards (by every CPU's permission checks); the save areas are each one
// CPU's (`HOST_SAVE`, `HOST_VMSAVE`: indexed by logical CPU), which only that CPU's VMRUN,
// #VMEXIT, VMSAVE and VMLOAD touch.
unsafe impl<const N: usize> Sync for CpuArea<N> {}

impl<const N: usize> CpuArea<N> {
    /// Physical address (the image is identity mapped).
    fn addr(&self) -> u64 {
        self.0.get() as u64
    }
}

/// Where VMRUN keeps each CPU's host state while a guest runs (its VM_HSAVE_PA).
static HOST_SAVE: [CpuArea<4096>; MAX_CPUS] = [const { CpuArea(UnsafeCell::new([0; 4096])) }; MAX_CPUS];
/// Each CPU's VMLOAD/VMSAVE host state (TR, FS/GS, syscall MSRs) while a guest's is loaded.
static HOST_VMSAVE: [CpuArea<4096>; MAX_CPUS] = [const { CpuArea(UnsafeCell::new([0; 4096])) }; MAX_CPUS];
/// I/O permission map: every port intercepted.
static IOPM: CpuArea<IOPM_SIZE> = CpuArea(UnsafeCell::new([0xff; IOPM_SIZE]));
/// MSR permission map: everything intercepted but the MSRs VMLOAD/VMSAVE switch anyway.
static MSRPM: CpuArea<MSRPM_SIZE> = CpuArea(UnsafeCell::new([0xff; MSRPM_SIZE]));

/// This CPU's host VMSAVE area.
pub fn host_vmsave_area() -> u64 {
    HOST_VMSAVE[super::smp::this_cpu()].addr()
}

pub fn iopm() -> u64 {
    IOPM.addr()
}

pub fn msrpm() -> u64 {
    MSRPM.addr()
}

/// Check support, set EFER.SVME and VM_HSAVE_PA, prepare the permission maps.
pub fn enable() -> Result<&'static Caps, &'static str> {
    if !cpu_has_svm() {
        return Err("CPUID reports no SVM");
    }
    // SAFETY: VM_CR exists on every CPU that reports SVM (checked above); reading it has no effect.
    if unsafe { Msr::new(msr::VM_CR).read() } & VM_CR_SVMDIS != 0 {
        return Err("SVM is disabled by firmware (VM_CR.SVMDIS)");
    }
    let caps = CAPS.call_once(Caps::read);
    if !caps.nested_paging {
        return Err("SVM without nested paging");
    }
    // SAFETY: see `CpuArea`: the boot CPU runs alone, before any VMRUN.
    let msrpm = unsafe { &mut *MSRPM.0.get() };
    // Guest-owned MSRs the VMCB holds and VMLOAD/VMSAVE switch: reading or writing them
    // cannot reach the host.
    crate::x86::policy::GUEST_OWNED_MSRS.iter().for_each(|&m| msrpm_allow(msrpm, m));
    enable_this_cpu();
    Ok(caps)
}

/// EFER.SVME and this CPU's own host save area (APM vol. 2, "Enabling SVM": every CPU that
/// executes VMRUN needs its VM_HSAVE_PA).
fn enable_this_cpu() {
    let area = HOST_SAVE[super::smp::this_cpu()].addr();
    let mut efer = Msr::new(msr::EFER);
    // SAFETY: setting EFER.SVME only enables the SVM instructions; the host save area is a
    // page-aligned, identity-mapped page this CPU owns from now on.
    unsafe {
        efer.write(efer.read() | EFER_SVME);
        Msr::new(msr::VM_HSAVE_PA).write(area);
    }
}

/// An application processor: the boot CPU enabled SVM (and prepared the shared permission
/// maps); this CPU must offer the same and gets its own host save area.
pub fn enable_ap() -> Result<(), &'static str> {
    if !cpu_has_svm() {
        return Err("CPUID reports no SVM");
    }
    // SAFETY: as in `enable`: VM_CR exists where SVM is reported; reading it has no effect.
    if unsafe { Msr::new(msr::VM_CR).read() } & VM_CR_SVMDIS != 0 {
        return Err("SVM is disabled by firmware (VM_CR.SVMDIS)");
    }
    enable_this_cpu();
    Ok(())
}

/// The banner's virtualization line, e.g. "SVM NPT NRIP (ASIDs: 16)".
pub fn features(caps: &Caps) -> &'static str {
    static LINE: Once<([u8; 64], usize)> = Once::new();
    let (buf, len) = LINE.call_once(|| {
        let mut w = Line([0; 64], 0);
        let _ = core::fmt::Write::write_fmt(
            &mut w,
            format_args!(
                "SVM NPT{}{}{} (ASIDs: {})",
                if caps.nrip { " NRIP" } else { "" },
                if caps.decode_assists { " decode-assists" } else { "" },
                if caps.vgif { " vGIF" } else { "" },
                caps.asids
            ),
        );
        (w.0, w.1)
    });
    core::str::from_utf8(&buf[..*len]).unwrap_or("SVM NPT")
}

/// A fixed buffer that takes formatted text until full.
struct Line([u8; 64], usize);

impl core::fmt::Write for Line {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let n = s.len().min(self.0.len() - self.1);
        self.0[self.1..self.1 + n].copy_from_slice(&s.as_bytes()[..n]);
        self.1 += n;
        Ok(())
    }
}
