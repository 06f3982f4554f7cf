//! Where things are: the guest's own RAM window, the scratch area the fuzzer aims its calls
//! at, the canaries around it, and addresses that are *not* ours (MMIO windows, the
//! hypervisor's and other domains' memory as seen from here, the top of the address space).

/// Pages of scratch the calls may read and write.
pub const SCRATCH_PAGES: usize = 16;
pub const SCRATCH_SIZE: usize = SCRATCH_PAGES * PAGE;
/// Canary pages on each side of the scratch area, never named by a call.
pub const CANARY_PAGES: usize = 2;
pub const CANARY_SIZE: usize = CANARY_PAGES * PAGE;
pub const PAGE: usize = 4096;
/// The most a single call writes through one pointer (XENVER_capabilities: 1 KiB): scratch
/// pointers stay this far from the end so a correct hypervisor never reaches the canary.
pub const MAX_OUTPUT: usize = 2048;

/// Canary, scratch, canary: one block, so an overrun out of scratch lands in a canary.
#[repr(C, align(4096))]
pub struct Arena {
    pub canary_lo: [u8; CANARY_SIZE],
    pub scratch: [u8; SCRATCH_SIZE],
    pub canary_hi: [u8; CANARY_SIZE],
}

/// Guest-physical (= virtual: identity mapped or MMU off) window of this guest's RAM that
/// holds anything of ours; addresses in it outside scratch are never handed to a call.
#[cfg(any(target_arch = "aarch64", target_arch = "arm"))]
pub const OWN_RAM: (u64, u64) = (0x4000_0000, 0x5000_0000);
#[cfg(target_arch = "x86_64")]
pub const OWN_RAM: (u64, u64) = (0, 0x0400_0000);

/// Free low RAM a call may scribble on (x86: below the image at 1 MiB and the start info at
/// 0xf0000; small integers taken as pointers land here). Empty on ARM, whose RAM starts high.
#[cfg(any(target_arch = "aarch64", target_arch = "arm"))]
pub const JUNK_ZONE: (u64, u64) = (0, 0);
#[cfg(target_arch = "x86_64")]
pub const JUNK_ZONE: (u64, u64) = (0, 0x8_0000);

/// Not ours: unmapped holes, device windows, memory beyond our RAM (the hypervisor's and
/// other domains' host RAM as seen at the same guest-physical address), address-space ends.
#[cfg(any(target_arch = "aarch64", target_arch = "arm"))]
pub const OUTSIDE: [u64; 20] = [
    0,
    0x1000,
    0x0300_1000,     // our vGIC distributor
    0x0302_0000,     // our vGIC redistributor
    0x0800_0000,     // GIC distributor
    0x080a_0000,     // GIC redistributors
    0x0900_0000,     // the physical PL011
    0x0901_0000,     // PL031 RTC
    0x0a00_0000,     // virtio-mmio
    0x2200_0000,     // the vpl011 window
    0x3800_0000,     // below the magic pages
    0x3900_0000,     // the PV console ring (a hypervisor page)
    0x3fff_f000,     // just below RAM
    0x5000_0000,     // host RAM past ours: other domains, the hypervisor's heap
    0x7ff0_0000,     // top of the machine's RAM
    0x8000_0000,     // nothing
    0xffff_f000,     // top of 32 bits
    0xff_ffff_f000,  // top of the 40-bit IPA space
    0x100_0000_0000, // just past it
    0xffff_ffff_ffff_f000,
];
#[cfg(target_arch = "x86_64")]
pub const OUTSIDE: [u64; 16] = [
    0x0400_0000, // just past our RAM: the hypervisor's and other domains' host RAM
    0x0800_0000,
    0x7fff_f000,
    0x8000_0000, // nothing (hello_guest::UNMAPPED_ADDRESS)
    0xfec0_0000, // IOAPIC
    0xfed0_0000, // HPET
    0xfee0_0000, // local APIC
    0xfeff_f000, // the PV console ring (a hypervisor page)
    0xffff_f000,
    0x1_0000_0000, // past our 4 GiB identity map
    0x0000_7fff_ffff_f000,
    0x0000_8000_0000_0000, // non-canonical
    0xffff_8000_0000_0000, // the higher half
    0xffff_ffff_8000_0000,
    0xffff_ffff_ffff_f000,
    0xffff_ffff_ffff_fff8,
];

/// Addresses no hypervisor lets a copy read, whatever the calls before mapped: unmapped in
/// Xen's guest memory map and ours on ARM (below the GIC, just below RAM), non-canonical on
/// x86. `SCHEDOP_shutdown` is only ever pointed here: Xen shuts the domain down for any
/// reason it can read (it takes the low byte, SHUTDOWN_MAX is no limit).
#[cfg(any(target_arch = "aarch64", target_arch = "arm"))]
pub const UNREADABLE: [u64; 4] = [0, 0xffc, 0x3fff_f000, 0x3fff_fffe];
#[cfg(target_arch = "x86_64")]
pub const UNREADABLE: [u64; 4] =
    [0x0000_8000_0000_0000, 0x0000_8000_0000_0ffc, 0x7fff_ffff_ffff_f000, 0xffff_0000_0000_0000];

/// Whether `[addr, addr + len)` touches our RAM anywhere a call must not aim.
pub fn forbidden(addr: u64, len: u64, scratch: (u64, u64)) -> bool {
    let end = addr.saturating_add(len.max(1));
    let overlaps = |(lo, hi): (u64, u64)| addr < hi && end > lo;
    let inside = |(lo, hi): (u64, u64)| addr >= lo && end <= hi;
    overlaps(OWN_RAM) && !inside(scratch) && !inside(JUNK_ZONE)
}

/// Host RAM beyond ours as guest frames, for frame-number arguments.
pub fn outside_frame(i: usize) -> u64 {
    OUTSIDE[i % OUTSIDE.len()] >> 12
}
