//! Hypervisor-owned pages a domain shares with the hypervisor (shared_info, grant frames,
//! the PV console ring), and the guest ABI layout they are read with.

use alloc::boxed::Box;
use core::sync::atomic::{AtomicU64, Ordering};
use guest_abi::compat;
use guest_abi::features as feat;
use guest_abi::shared_info::{arm, x86};

pub const PAGE_SIZE: usize = 4096;

/// One 4 KiB host page: its host-physical address (for stage-2/EPT) and the hypervisor's
/// own view of its bytes.
pub struct HostPage {
    pub hpa: u64,
    pub data: &'static mut [u8],
}

impl HostPage {
    /// A page that lives on the heap: for host tests, where no physical memory exists.
    pub fn on_heap(hpa: u64) -> Self {
        // Words, so that its u64 fields are aligned as in a real page.
        let words: &'static mut [u64; PAGE_SIZE / 8] = Box::leak(Box::new([0u64; PAGE_SIZE / 8]));
        Self { hpa, data: zerocopy::IntoBytes::as_mut_bytes(words) }
    }

    pub fn u32_at(&self, off: usize) -> u32 {
        u32::from_ne_bytes(self.data[off..off + 4].try_into().unwrap())
    }
    pub fn set_u32(&mut self, off: usize, v: u32) {
        self.data[off..off + 4].copy_from_slice(&v.to_ne_bytes());
    }
    pub fn u64_at(&self, off: usize) -> u64 {
        u64::from_ne_bytes(self.data[off..off + 8].try_into().unwrap())
    }
    pub fn set_u64(&mut self, off: usize, v: u64) {
        self.data[off..off + 8].copy_from_slice(&v.to_ne_bytes());
    }
    /// Set `bits` in the aligned u64 at `off` with one atomic read-modify-write (the guest
    /// may change other bits of it at the same time, on another pCPU); the old value.
    pub fn fetch_or_u64(&mut self, off: usize, bits: u64) -> u64 {
        match <AtomicU64 as zerocopy::FromBytes>::mut_from_bytes(&mut self.data[off..off + 8]) {
            Ok(word) => word.fetch_or(bits, Ordering::SeqCst),
            Err(_) => {
                let old = self.u64_at(off);
                self.set_u64(off, old | bits);
                old
            }
        }
    }
    /// Keep only `mask`'s bits of the aligned u64 at `off`, atomically as
    /// [`HostPage::fetch_or_u64`]; the old value.
    pub fn fetch_and_u64(&mut self, off: usize, mask: u64) -> u64 {
        match <AtomicU64 as zerocopy::FromBytes>::mut_from_bytes(&mut self.data[off..off + 8]) {
            Ok(word) => word.fetch_and(mask, Ordering::SeqCst),
            Err(_) => {
                let old = self.u64_at(off);
                self.set_u64(off, old & mask);
                old
            }
        }
    }
}

/// Which of Xen's guest ABIs a domain speaks; layouts and feature sets differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestAbi {
    /// Xen ARM domU (arm64 and ARMv7 share one layout).
    Arm,
    /// x86 PVH with the shared info page in its 64-bit layout.
    X86Pvh,
    /// x86 PVH whose shared info page has the 32-bit ("compat") layout: a 32-bit selector,
    /// 32-bit event words (1024 2-level ports), the mask and wallclock elsewhere. Xen latches
    /// this from the mode the guest is in when it sets up its event delivery.
    X86Pvh32,
}

/// Byte offsets inside `struct vcpu_info`, the same on x86_64 and ARM.
pub mod vcpu_info {
    pub const UPCALL_PENDING: usize = 0;
    pub const UPCALL_MASK: usize = 1;
    /// The 64-bit layouts' selector (a 32-bit x86 guest's is elsewhere:
    /// [`super::GuestAbi::pending_sel_offset`]).
    pub const PENDING_SEL: usize = 8;
}

impl GuestAbi {
    /// `vcpu_info` slots inside the shared info page.
    pub const fn shared_vcpu_slots(self) -> usize {
        match self {
            GuestAbi::Arm => arm::XEN_LEGACY_MAX_VCPUS,
            GuestAbi::X86Pvh | GuestAbi::X86Pvh32 => x86::XEN_LEGACY_MAX_VCPUS,
        }
    }

    /// Whether this is one of the x86 layouts (which have an upcall mask byte).
    pub const fn is_x86(self) -> bool {
        matches!(self, GuestAbi::X86Pvh | GuestAbi::X86Pvh32)
    }

    /// Bits in one word of the 2-level bitmaps and of the selector.
    pub const fn event_word_bits(self) -> u32 {
        match self {
            GuestAbi::X86Pvh32 => 32,
            GuestAbi::Arm | GuestAbi::X86Pvh => 64,
        }
    }

    /// Ports the 2-level ABI can name: one selector's worth of bitmap words.
    pub const fn max_ports_2l(self) -> u32 {
        self.event_word_bits() * self.event_word_bits()
    }

    /// Where the pending selector sits in a `vcpu_info`.
    pub const fn pending_sel_offset(self) -> usize {
        match self {
            GuestAbi::X86Pvh32 => core::mem::offset_of!(compat::VcpuInfo32, evtchn_pending_sel),
            GuestAbi::Arm | GuestAbi::X86Pvh => vcpu_info::PENDING_SEL,
        }
    }

    /// The selector bit that covers `port`, as (byte offset in `vcpu_info`, bit in that
    /// byte): the words are little-endian, so one byte update sets it in either width.
    pub const fn pending_sel_bit(self, port: u32) -> (usize, u8) {
        let word = port / self.event_word_bits();
        (self.pending_sel_offset() + (word / 8) as usize, 1 << (word % 8))
    }

    pub const fn vcpu_info_size(self) -> usize {
        match self {
            GuestAbi::Arm => size_of::<arm::VcpuInfo>(),
            GuestAbi::X86Pvh => size_of::<x86::VcpuInfo>(),
            GuestAbi::X86Pvh32 => size_of::<compat::VcpuInfo32>(),
        }
    }

    pub const fn evtchn_pending_offset(self) -> usize {
        match self {
            GuestAbi::Arm => core::mem::offset_of!(arm::SharedInfo, evtchn_pending),
            GuestAbi::X86Pvh => core::mem::offset_of!(x86::SharedInfo, evtchn_pending),
            GuestAbi::X86Pvh32 => core::mem::offset_of!(compat::SharedInfo32, evtchn_pending),
        }
    }

    pub const fn evtchn_mask_offset(self) -> usize {
        match self {
            GuestAbi::Arm => core::mem::offset_of!(arm::SharedInfo, evtchn_mask),
            GuestAbi::X86Pvh => core::mem::offset_of!(x86::SharedInfo, evtchn_mask),
            GuestAbi::X86Pvh32 => core::mem::offset_of!(compat::SharedInfo32, evtchn_mask),
        }
    }

    /// `xen_version(XENVER_get_features)` submap 0: what Xen reports to a translated
    /// (auto-translated physmap) domU, never `dom0`.
    pub const fn features(self) -> u32 {
        let translated = (1 << feat::XENFEAT_AUTO_TRANSLATED_PHYSMAP) | (1 << feat::XENFEAT_WRITABLE_PAGE_TABLES);
        match self {
            // A domU's guest-physical memory is not the host's: Linux must not assume 1:1.
            GuestAbi::Arm => translated | (1 << feat::XENFEAT_NOT_DIRECT_MAPPED),
            GuestAbi::X86Pvh | GuestAbi::X86Pvh32 => {
                translated
                    | (1 << feat::XENFEAT_HVM_CALLBACK_VECTOR)
                    | (1 << feat::XENFEAT_HVM_SAFE_PVCLOCK)
                    | (1 << feat::XENFEAT_LINUX_RSDP_UNRESTRICTED)
            }
        }
    }
}

/// A domain's RAM as 32-bit words the hypervisor updates atomically while the guest runs on
/// (FIFO event words and control blocks live in guest pages). The guest is another agent on
/// the same memory: only atomic accesses, never plain references to its bytes.
pub struct GuestRam {
    /// Guest-physical address of `words[0]`.
    pub base: u64,
    /// Host-physical address of `words[0]` (what another domain's mapping of a page points at).
    pub host: u64,
    pub words: &'static [core::sync::atomic::AtomicU32],
}

impl GuestRam {
    /// The aligned word holding guest-physical byte `gpa`, if it is the domain's RAM.
    pub fn word(&self, gpa: u64) -> Option<&'static core::sync::atomic::AtomicU32> {
        let index = usize::try_from(gpa.checked_sub(self.base)? / 4).ok()?;
        self.words.get(index)
    }

    /// Host-physical address of guest frame `gfn`, if it is the domain's RAM.
    pub fn host_page(&self, gfn: u64) -> Option<u64> {
        self.page(gfn)?;
        Some(self.host + (gfn * PAGE_SIZE as u64 - self.base))
    }

    /// The page of guest frame `gfn`, if it is the domain's RAM.
    pub fn page(&self, gfn: u64) -> Option<&'static [core::sync::atomic::AtomicU32]> {
        let offset = gfn.checked_mul(PAGE_SIZE as u64)?.checked_sub(self.base)?;
        let first = usize::try_from(offset / 4).ok()?;
        self.words.get(first..first.checked_add(PAGE_SIZE / 4)?)
    }
}

/// Copy `len` bytes between two guest pages (each [`PAGE_SIZE`] bytes as words), from byte
/// `from` of `src` to byte `to` of `dst`, with atomic word accesses: either guest may be
/// using its page meanwhile. Offsets and length are the caller's to check (`from + len` and
/// `to + len` at most [`PAGE_SIZE`]).
pub fn copy_between_pages(
    src: &[core::sync::atomic::AtomicU32],
    from: usize,
    dst: &[core::sync::atomic::AtomicU32],
    to: usize,
    len: usize,
) {
    use core::sync::atomic::Ordering::Relaxed;
    let aligned = from.is_multiple_of(4) && to.is_multiple_of(4) && len.is_multiple_of(4);
    if aligned {
        // Whole words, over subslices checked once (not a bounds check per word).
        let (dst, src) = (&dst[to / 4..][..len / 4], &src[from / 4..][..len / 4]);
        // Eight words a step: atomics are never merged or vectorized, so the loop's own
        // instructions would otherwise cost as much as the copy (a 4 KiB grant copy).
        let (mut d8, mut s8) = (dst.chunks_exact(8), src.chunks_exact(8));
        for (d, s) in d8.by_ref().zip(s8.by_ref()) {
            let words: [u32; 8] = core::array::from_fn(|i| s[i].load(Relaxed));
            for (d, w) in d.iter().zip(words) {
                d.store(w, Relaxed);
            }
        }
        for (d, s) in d8.remainder().iter().zip(s8.remainder()) {
            d.store(s.load(Relaxed), Relaxed);
        }
        return;
    }
    for i in 0..len {
        let (s, d) = (from + i, to + i);
        let byte = (src[s / 4].load(Relaxed) >> (s % 4 * 8)) as u8;
        let shift = d % 4 * 8;
        let _ = dst[d / 4].fetch_update(Relaxed, Relaxed, |w| Some(w & !(0xff << shift) | u32::from(byte) << shift));
    }
}
