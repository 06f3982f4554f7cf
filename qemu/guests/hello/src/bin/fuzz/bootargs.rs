//! The guest's command line: `/chosen/bootargs` of the device tree on ARM, the
//! `hvm_start_info` command line on x86 PVH. Read with plain byte loads (ARM runs with its
//! MMU off, where unaligned loads fault), bounded so a malformed blob cannot run away.

/// Longest command line looked at.
pub const MAX_CMDLINE: usize = 512;

/// The command line bytes (up to the NUL), copied out of wherever the boot protocol put them.
pub struct Cmdline {
    buf: [u8; MAX_CMDLINE],
    len: usize,
}

impl Cmdline {
    pub const fn empty() -> Self {
        Self { buf: [0; MAX_CMDLINE], len: 0 }
    }

    /// Copy a NUL-terminated string starting at `addr`.
    ///
    /// # Safety
    /// `addr..addr + MAX_CMDLINE` (or up to its NUL) must be readable memory of this guest.
    unsafe fn from_c_string(addr: usize) -> Self {
        let mut c = Self::empty();
        while c.len < MAX_CMDLINE {
            // SAFETY: within the readable window the caller promised.
            let b = unsafe { core::ptr::read_volatile((addr + c.len) as *const u8) };
            if b == 0 {
                break;
            }
            c.buf[c.len] = b;
            c.len += 1;
        }
        c
    }

    /// The value of `key=value`, if present.
    pub fn value(&self, key: &str) -> Option<&[u8]> {
        self.buf[..self.len].split(|&b| b == b' ').find_map(|word| {
            let rest = word.strip_prefix(key.as_bytes())?;
            rest.strip_prefix(b"=")
        })
    }

    /// `key=<decimal or 0x-hex>` as a number.
    pub fn number(&self, key: &str) -> Option<u64> {
        parse_number(self.value(key)?)
    }
}

pub fn parse_number(s: &[u8]) -> Option<u64> {
    let (digits, radix) = match s {
        [b'0', b'x' | b'X', hex @ ..] => (hex, 16),
        _ => (s, 10),
    };
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |acc, &d| {
        let v = (d as char).to_digit(radix)?;
        acc.checked_mul(radix as u64)?.checked_add(u64::from(v))
    })
}

#[cfg(any(target_arch = "aarch64", target_arch = "arm"))]
/// A big-endian u32 of the device tree blob at byte offset `off`.
///
/// # Safety
/// `base + off .. + 4` must be readable.
unsafe fn be32(base: usize, off: usize) -> u32 {
    let mut b = [0u8; 4];
    for (i, byte) in b.iter_mut().enumerate() {
        // SAFETY: the caller vouches for the four bytes.
        *byte = unsafe { core::ptr::read_volatile((base + off + i) as *const u8) };
    }
    u32::from_be_bytes(b)
}

#[cfg(any(target_arch = "aarch64", target_arch = "arm"))]
const FDT_MAGIC: u32 = 0xd00d_feed;
#[cfg(any(target_arch = "aarch64", target_arch = "arm"))]
const FDT_BEGIN_NODE: u32 = 1;
#[cfg(any(target_arch = "aarch64", target_arch = "arm"))]
const FDT_END_NODE: u32 = 2;
#[cfg(any(target_arch = "aarch64", target_arch = "arm"))]
const FDT_PROP: u32 = 3;
#[cfg(any(target_arch = "aarch64", target_arch = "arm"))]
const FDT_NOP: u32 = 4;
#[cfg(any(target_arch = "aarch64", target_arch = "arm"))]
/// Blobs larger than this are not believed.
const FDT_MAX: usize = 1 << 20;

/// `/chosen/bootargs` of the flattened device tree at `dtb` (0 or no tree: empty).
#[cfg(any(target_arch = "aarch64", target_arch = "arm"))]
///
/// # Safety
/// `dtb` must be 0 or the address of a device tree blob the hypervisor placed in our RAM.
pub unsafe fn from_device_tree(dtb: usize) -> Cmdline {
    // SAFETY: the header is the first 40 bytes of the blob.
    if dtb == 0 || unsafe { be32(dtb, 0) } != FDT_MAGIC {
        return Cmdline::empty();
    }
    // SAFETY: header fields, inside the blob.
    let (size, structs, strings) = unsafe { (be32(dtb, 4), be32(dtb, 8), be32(dtb, 12)) };
    let (size, structs, strings) = (size as usize, structs as usize, strings as usize);
    if size > FDT_MAX || structs >= size || strings >= size {
        return Cmdline::empty();
    }
    let mut off = structs;
    let mut depth = 0usize;
    let mut in_chosen = false;
    while off + 8 <= size {
        // SAFETY: `off + 4 <= size`: inside the blob.
        let token = unsafe { be32(dtb, off) };
        off += 4;
        match token {
            FDT_BEGIN_NODE => {
                let name_start = off;
                // SAFETY: bounded by `size`.
                while off < size && unsafe { core::ptr::read_volatile((dtb + off) as *const u8) } != 0 {
                    off += 1;
                }
                depth += 1;
                // SAFETY: `name_start..off` lies in the blob.
                in_chosen = depth == 2 && unsafe { bytes_equal(dtb + name_start, off - name_start, b"chosen") };
                off = (off + 1).next_multiple_of(4);
            }
            FDT_END_NODE => {
                depth = depth.saturating_sub(1);
                in_chosen = false;
            }
            FDT_PROP => {
                // SAFETY: the property header follows the token, inside the blob.
                let (len, name) = unsafe { (be32(dtb, off) as usize, be32(dtb, off + 4) as usize) };
                let value = off + 8;
                if value + len > size || strings + name >= size {
                    return Cmdline::empty();
                }
                // SAFETY: the name is a string in the strings block, checked to start inside.
                if in_chosen && unsafe { bytes_equal(dtb + strings + name, 9, b"bootargs\0") } {
                    // SAFETY: the property value is inside the blob and NUL-terminated.
                    return unsafe { Cmdline::from_c_string(dtb + value) };
                }
                off = (value + len).next_multiple_of(4);
            }
            FDT_NOP => {}
            _ => break,
        }
    }
    Cmdline::empty()
}

#[cfg(any(target_arch = "aarch64", target_arch = "arm"))]
/// # Safety
/// `addr..addr + n` must be readable.
unsafe fn bytes_equal(addr: usize, n: usize, want: &[u8]) -> bool {
    // SAFETY: the caller vouches for `n` bytes; we read at most that many.
    n == want.len()
        && want.iter().enumerate().all(|(i, &w)| unsafe { core::ptr::read_volatile((addr + i) as *const u8) } == w)
}

/// The command line of the PVH `hvm_start_info` at `start_info` (0 or bad magic: empty).
#[cfg(target_arch = "x86_64")]
///
/// # Safety
/// `start_info` must be 0 or the address of the start info the hypervisor placed in our RAM.
pub unsafe fn from_start_info(start_info: usize) -> Cmdline {
    use guest_abi::start_info::{HvmStartInfo, XEN_HVM_START_MAGIC_VALUE};
    if start_info == 0 {
        return Cmdline::empty();
    }
    let info = start_info as *const HvmStartInfo;
    // SAFETY: the caller vouches for the structure.
    let (magic, cmdline) = unsafe { ((*info).magic, (*info).cmdline_paddr) };
    if magic != XEN_HVM_START_MAGIC_VALUE || cmdline == 0 || cmdline >= 1 << 32 {
        return Cmdline::empty();
    }
    // SAFETY: the hypervisor put the NUL-terminated command line in our RAM, identity mapped.
    unsafe { Cmdline::from_c_string(cmdline as usize) }
}
