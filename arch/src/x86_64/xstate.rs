//! Guest x87/SSE/AVX state on the bare machine, for both backends: one save area per vCPU,
//! switched only when the boot CPU goes from one vCPU to another. What is offered and switched,
//! the area's size and its reset image are [`crate::x86::xstate`]'s (host-tested).
//!
//! The hypervisor never touches these registers itself: it is built for
//! `x86_64-unknown-none`, whose target spec is soft-float (`"features": "-mmx,-sse,-sse2,..,
//! -avx,-avx2,+soft-float"`, `"rustc-abi": "softfloat"`), so compiled code uses
//! general-purpose registers only; the only vector-state instructions in the binary are this
//! module's (`objdump -d` of the x86_64 hypervisor: FXSAVE64/XSAVE64/XSAVEOPT64 and
//! FXRSTOR64/XRSTOR64, no xmm/ymm/zmm or x87 operand anywhere). So between two runs of one
//! vCPU the registers still hold its state, and an exit that returns to the same vCPU costs
//! nothing here.
//!
//! Neither VMX nor SVM switches XCR0, so it is loaded here too: the guest's own value while
//! it runs, the whole offered mask around a save/restore (so every offered component is
//! carried, whatever the guest has enabled at that moment).

use super::alloc::alloc::{Layout as AllocLayout, alloc_zeroed, dealloc, handle_alloc_error};
use super::smp::{MAX_CPUS, this_cpu};
use crate::x86::xstate::{CR4_OSXSAVE, Layout, RESET_XCR0};
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use spin::Once;
use x86_64::registers::control::{Cr0, Cr4};

static LAYOUT: Once<Layout> = Once::new();

/// Per logical CPU: the area of the vCPU whose state that CPU's registers hold; 0 for
/// nobody's (at boot, or after that vCPU was dropped).
static LIVE: [AtomicUsize; MAX_CPUS] = [const { AtomicUsize::new(0) }; MAX_CPUS];
/// The XCR0 each CPU holds.
static CURRENT_XCR0: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(RESET_XCR0) }; MAX_CPUS];
/// Several CPUs run guests: a vCPU may run next on another CPU, whose registers cannot be
/// reached from here, so each run ends with the state saved ([`GuestFpu::leave`]) and the
/// next run on another CPU restores it. With one CPU the switch stays lazy: saved only when
/// another vCPU is about to use the registers.
static EAGER: AtomicBool = AtomicBool::new(false);

/// XSAVE requires its area 64-byte aligned (FXSAVE 16).
const AREA_ALIGN: usize = 64;

/// What guests are offered on this CPU (read at boot by [`init`]).
pub fn layout() -> &'static Layout {
    LAYOUT.call_once(|| Layout::from_cpuid(host_cpuid))
}

fn host_cpuid(leaf: u32, sub: u32) -> [u32; 4] {
    let r = core::arch::x86_64::__cpuid_count(leaf, sub);
    [r.eax, r.ebx, r.ecx, r.edx]
}

/// From now on every vCPU run ends with its vector state saved (several CPUs run guests).
pub fn save_at_every_exit() {
    EAGER.store(true, Ordering::Release);
}

/// Make the vector state instructions usable on this CPU, before it runs any vCPU: CR0.EM
/// and CR0.TS clear (else FXSAVE/XSAVE fault), CR0.MP and CR4.OSFXSR/OSXMMEXCPT set (SSE
/// state in FXSAVE's image), CR4.OSXSAVE when the switch uses XSAVE. The host's CR0/CR4 are
/// what both backends restore at every exit.
pub fn init() {
    const CR0_MP: u64 = 1 << 1;
    const CR0_EM: u64 = 1 << 2;
    const CR0_TS: u64 = 1 << 3;
    const CR4_OSFXSR: u64 = 1 << 9;
    const CR4_OSXMMEXCPT: u64 = 1 << 10;
    let layout = layout();
    let cr4_xsave = if layout.uses_xsave() { CR4_OSXSAVE } else { 0 };
    // SAFETY: enabling FPU/SSE/XSAVE instructions changes no memory mapping or privilege;
    // the hypervisor's own code uses none of them (soft-float target, see the module doc).
    unsafe {
        Cr0::write_raw((Cr0::read_raw() & !(CR0_EM | CR0_TS)) | CR0_MP);
        Cr4::write_raw(Cr4::read_raw() | CR4_OSFXSR | CR4_OSXMMEXCPT | cr4_xsave);
    }
    if layout.uses_xsave() {
        CURRENT_XCR0[this_cpu()].store(!RESET_XCR0, Ordering::Relaxed);
        set_xcr0(RESET_XCR0);
    }
}

/// Load XCR0 if the CPU does not hold `value` already.
fn set_xcr0(value: u64) {
    if CURRENT_XCR0[this_cpu()].swap(value, Ordering::Relaxed) != value {
        // SAFETY: CR4.OSXSAVE is set (`init`); `value` is the offered mask or a guest value
        // XSETBV's policy accepted (`Layout::xcr0_valid`), both within what the CPU supports.
        // XCR0 only selects which state XSAVE-family instructions and the guest may use.
        unsafe {
            core::arch::asm!("xsetbv", in("ecx") 0u32, in("eax") value as u32, in("edx") (value >> 32) as u32,
                options(nostack, preserves_flags));
        }
    }
}

/// One vCPU's x87/SSE/AVX/... state while it is not in the registers.
pub struct GuestFpu {
    /// Heap, [`AREA_ALIGN`]-aligned, `layout().area_size()` bytes (rounded up to the
    /// alignment). Held as a raw pointer: the CPU writes it (XSAVE) when another vCPU is
    /// about to run, reached through [`LIVE`], never through a Rust reference.
    area: NonNull<u8>,
    /// The logical CPU this vCPU last entered the guest on.
    last_cpu: usize,
    /// Entered since the last [`GuestFpu::leave`]: the registers hold this vCPU's state.
    entered: bool,
}

// SAFETY: the area is this vCPU's own heap allocation; the registers of a CPU are reached
// only by the CPU itself, and a vCPU runs on one CPU at a time (the core hands it over under
// its lock), so moving a `GuestFpu` between CPUs shares nothing.
unsafe impl Send for GuestFpu {}

impl GuestFpu {
    /// The reset state (FCW 0x37F, MXCSR 0x1F80, every XSAVE component in its initial state).
    pub fn new() -> GuestFpu {
        let layout = layout();
        let alloc = area_alloc_layout(layout);
        // SAFETY: the size is at least 512 bytes (never zero).
        let ptr = unsafe { alloc_zeroed(alloc) };
        let area = NonNull::new(ptr).unwrap_or_else(|| handle_alloc_error(alloc));
        // SAFETY: a fresh allocation of `alloc.size()` bytes that nothing else refers to.
        layout.reset_image(unsafe { core::slice::from_raw_parts_mut(ptr, alloc.size()) });
        // SAFETY: the debug slots lie inside the same fresh allocation, 8-byte aligned.
        unsafe { debug_slots(ptr, layout).cast::<[u64; DEBUG_REGS]>().write(DEBUG_RESET) };
        GuestFpu { area, last_cpu: usize::MAX, entered: false }
    }

    fn addr(&self) -> usize {
        self.area.as_ptr() as usize
    }

    /// Right before entering the guest: this vCPU's vector state in the registers (saving
    /// the state of the vCPU that ran last into its own area first) and its XCR0 loaded.
    /// Free when this vCPU was also the last to run.
    pub fn enter(&mut self, guest_xcr0: u64) {
        let layout = layout();
        let me = self.addr();
        let cpu = this_cpu();
        let eager = EAGER.load(Ordering::Acquire);
        let live = LIVE[cpu].load(Ordering::Relaxed);
        if eager && !(live == me && self.last_cpu == cpu) {
            // Whoever ran here last saved its state when its run ended (`leave`); this
            // vCPU's area holds its latest state, wherever it ran last.
            if layout.uses_xsave() {
                set_xcr0(layout.offered);
            }
            // SAFETY: our own area, holding the reset image or what `save` wrote.
            unsafe { restore(self.area.as_ptr(), layout) };
            // SAFETY: our own debug slots, holding the reset values or what `save_debug` wrote.
            unsafe { restore_debug(debug_slots(self.area.as_ptr(), layout)) };
            LIVE[cpu].store(me, Ordering::Relaxed);
        } else if !eager && live != me {
            if layout.uses_xsave() {
                set_xcr0(layout.offered);
            }
            if live != 0 {
                // SAFETY: `live` is the area of a vCPU that still exists (a vCPU's drop
                // clears LIVE if it holds its area), sized and aligned for this layout, and
                // no reference to it is live (only this module reaches it, by address).
                unsafe { save(live as *mut u8, layout) };
                // SAFETY: as above; the debug slots follow the XSAVE area in that allocation.
                unsafe { save_debug(debug_slots(live as *mut u8, layout)) };
            }
            // SAFETY: our own area, holding the reset image or what `save` wrote.
            unsafe { restore(self.area.as_ptr(), layout) };
            // SAFETY: our own debug slots, holding the reset values or what `save_debug` wrote.
            unsafe { restore_debug(debug_slots(self.area.as_ptr(), layout)) };
            LIVE[cpu].store(me, Ordering::Relaxed);
        }
        self.last_cpu = cpu;
        self.entered = true;
        if layout.uses_xsave() {
            set_xcr0(guest_xcr0);
        }
    }

    /// When a run ends (the core may hand the vCPU to another CPU next): with several CPUs,
    /// the registers' state (this vCPU's, if it entered since the last call) goes into its
    /// area. The registers keep it too, so running again here restores nothing.
    pub fn leave(&mut self) {
        if !core::mem::take(&mut self.entered) || !EAGER.load(Ordering::Acquire) {
            return;
        }
        let layout = layout();
        if layout.uses_xsave() {
            set_xcr0(layout.offered);
        }
        // SAFETY: our own area, exclusively ours (`&mut self`); XCR0 is the offered mask; the
        // registers hold our state since `enter` on this CPU (`entered`).
        unsafe { save(self.area.as_ptr(), layout) };
        // SAFETY: our own debug slots, after the XSAVE area in the same allocation.
        unsafe { save_debug(debug_slots(self.area.as_ptr(), layout)) };
    }
}

impl Default for GuestFpu {
    fn default() -> Self {
        GuestFpu::new()
    }
}

impl Drop for GuestFpu {
    fn drop(&mut self) {
        // The registers may still hold this vCPU's state: nobody owns it now, and the next
        // vCPU to run overwrites all of it without saving it anywhere.
        for live in &LIVE {
            let _ = live.compare_exchange(self.addr(), 0, Ordering::Relaxed, Ordering::Relaxed);
        }
        // SAFETY: allocated in `new` with this layout, and no longer reachable through LIVE.
        unsafe { dealloc(self.area.as_ptr(), area_alloc_layout(layout())) };
    }
}

fn area_alloc_layout(layout: &Layout) -> AllocLayout {
    let size = layout.area_size().next_multiple_of(AREA_ALIGN) + DEBUG_REGS * 8;
    AllocLayout::from_size_align(size, AREA_ALIGN).expect("XSAVE area size fits a Layout")
}

/// The debug registers no VMCS or VMCB field holds, switched with the vector state: DR0-DR3
/// (breakpoint addresses, on both backends) and DR6 (VT-x; AMD-V also keeps it in the VMCB,
/// where switching it too is harmless). A guest writes them without an exit, so without this
/// one vCPU would find another's breakpoint addresses.
const DEBUG_REGS: usize = 5;
/// DR0-DR3 clear, DR6 at its architectural reset value.
const DEBUG_RESET: [u64; DEBUG_REGS] = [0, 0, 0, 0, 0xffff_0ff0];

/// Where a vCPU's debug registers are kept: right after its XSAVE area.
fn debug_slots(area: *mut u8, layout: &Layout) -> *mut u64 {
    area.wrapping_add(layout.area_size().next_multiple_of(AREA_ALIGN)).cast()
}

/// # Safety
/// `slots` points at a live vCPU's [`DEBUG_REGS`] slots that nothing else reaches.
unsafe fn save_debug(slots: *mut u64) {
    let (d0, d1, d2, d3, d6): (u64, u64, u64, u64, u64);
    // SAFETY: reading debug registers at CPL0 has no side effect.
    unsafe {
        core::arch::asm!(
            "mov {0}, dr0", "mov {1}, dr1", "mov {2}, dr2", "mov {3}, dr3", "mov {4}, dr6",
            out(reg) d0, out(reg) d1, out(reg) d2, out(reg) d3, out(reg) d6, options(nostack, nomem),
        )
    };
    // SAFETY: per this function's contract.
    unsafe { slots.cast::<[u64; DEBUG_REGS]>().write([d0, d1, d2, d3, d6]) };
}

/// # Safety
/// As for [`save_debug`]; the slots hold the reset values or what it wrote.
unsafe fn restore_debug(slots: *const u64) {
    // SAFETY: per this function's contract.
    let [d0, d1, d2, d3, d6] = unsafe { slots.cast::<[u64; DEBUG_REGS]>().read() };
    // SAFETY: breakpoint addresses and DR6 status bits the guest wrote (or reset values); the
    // hypervisor runs with DR7 clear, so no breakpoint fires in it.
    unsafe {
        core::arch::asm!(
            "mov dr0, {0}", "mov dr1, {1}", "mov dr2, {2}", "mov dr3, {3}", "mov dr6, {4}",
            in(reg) d0, in(reg) d1, in(reg) d2, in(reg) d3, in(reg) d6, options(nostack, nomem),
        )
    };
}

/// Write the registers' state into `area`: XSAVEOPT (skips what is unchanged since the XRSTOR
/// from this same area, or still in its initial state) or XSAVE with every component XCR0
/// enables, FXSAVE without XSAVE. 64-bit forms: FIP/FDP are saved as 64-bit offsets.
///
/// XSAVEOPT's "unchanged" is the CPU's record of the last XRSTOR: on Intel its linear address,
/// CPL and VMX root/non-root, so only the hypervisor's own XRSTOR from this area matches (the
/// guest's XRSTORs run in non-root). AMD documents no guest/host distinction: a guest XRSTOR
/// from a guest-linear address equal to this area's could at worst leave this vCPU's older
/// values in its own area, never another vCPU's (their areas lie at other addresses).
///
/// # Safety
/// `area` is a live, exclusively reachable area of `layout.area_size()` bytes, 64-byte
/// aligned; XCR0 is `layout.offered` when XSAVE is used.
unsafe fn save(area: *mut u8, layout: &Layout) {
    // SAFETY: per this function's contract; the instructions write only the area (the
    // requested-feature mask is XCR0, whose components all fit in `area_size`).
    unsafe {
        if !layout.uses_xsave() {
            core::arch::asm!("fxsave64 [{}]", in(reg) area, options(nostack, preserves_flags));
        } else if layout.has_xsaveopt() {
            core::arch::asm!("xsaveopt64 [{}]", in(reg) area, in("eax") u32::MAX, in("edx") u32::MAX,
                options(nostack, preserves_flags));
        } else {
            core::arch::asm!("xsave64 [{}]", in(reg) area, in("eax") u32::MAX, in("edx") u32::MAX,
                options(nostack, preserves_flags));
        }
    }
}

/// Load the registers from `area` (XRSTOR: components whose XSTATE_BV bit is clear get their
/// initial state; FXRSTOR without XSAVE). An x87 state still in its initial state is
/// initialized rather than loaded ([`crate::x86::xstate::mark_x87_initial`]: an x87 load on
/// any CPU races with the boot CPU's VMRUN under QEMU's multi-threaded TCG).
///
/// # Safety
/// As for [`save`]; the area holds the reset image or what [`save`] wrote under the same
/// XCR0 (so its header is valid for XRSTOR and MXCSR has no reserved bits set).
unsafe fn restore(area: *mut u8, layout: &Layout) {
    // SAFETY: per this function's contract (the area is exclusively ours, `area_size` bytes);
    // the instructions only read it, and the one write before XRSTOR keeps its header valid.
    unsafe {
        if layout.uses_xsave() {
            crate::x86::xstate::mark_x87_initial(core::slice::from_raw_parts_mut(area, layout.area_size()));
            core::arch::asm!("xrstor64 [{}]", in(reg) area, in("eax") u32::MAX, in("edx") u32::MAX,
                options(nostack, preserves_flags, readonly));
        } else {
            core::arch::asm!("fxrstor64 [{}]", in(reg) area, options(nostack, preserves_flags, readonly));
        }
    }
}
