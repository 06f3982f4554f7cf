//! The CPUs from the firmware's ACPI MADT (RSDP → RSDT/XSDT → "APIC"): how many, and their
//! local APIC ids, which the SMP bring-up ([`super::smp`]) sends INIT and STARTUP to.
//!
//! Only what the banner and the bring-up need; tables are read through the identity map and every length is
//! checked against a sane bound before use.

use super::phys_slice;

const MAX_TABLE: u64 = 64 << 10;

fn read_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn read_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// A whole ACPI table at `addr` (header length honoured, bounded).
fn table(addr: u64) -> Option<&'static [u8]> {
    let header = phys_slice(addr, 36);
    let len = read_u32(header, 4)? as u64;
    (36..=MAX_TABLE).contains(&len).then(|| phys_slice(addr, len))
}

/// The local APIC ids of the enabled (or online-capable) processors in the MADT, in its
/// order (at most `out.len()` kept), and how many there are; `None` if there is no MADT.
pub fn cpus(rsdp: u64, out: &mut [u32]) -> Option<usize> {
    let rsdp = phys_slice(rsdp, 36);
    if &rsdp[..8] != b"RSD PTR " {
        return None;
    }
    // Revision 2+ has the 64-bit XSDT pointer; else the RSDT with 32-bit entries.
    let (root, width) = match rsdp[15] {
        0 | 1 => (read_u32(rsdp, 16)? as u64, 4),
        _ => (read_u64(rsdp, 24)?, 8),
    };
    let root = table(root)?;
    let madt = root[36..].chunks_exact(width).find_map(|e| {
        let addr = if width == 4 { read_u32(e, 0)? as u64 } else { read_u64(e, 0)? };
        table(addr).filter(|t| &t[..4] == b"APIC")
    })?;
    Some(lapics(madt, out)).filter(|&n| n > 0)
}

/// Walk the MADT entries after its 44-byte header; types 0 (local APIC: id byte at 3) and 9
/// (x2APIC: 32-bit id at 4).
fn lapics(madt: &[u8], out: &mut [u32]) -> usize {
    let mut at = 44;
    let mut cpus = 0;
    while let (Some(&kind), Some(&len)) = (madt.get(at), madt.get(at + 1)) {
        if len < 2 {
            break;
        }
        let (flags, id) = match kind {
            0 => (read_u32(madt, at + 4), madt.get(at + 3).map(|&b| u32::from(b))),
            9 => (read_u32(madt, at + 8), read_u32(madt, at + 4)),
            _ => (None, None),
        };
        // Bit 0: enabled; bit 1: online capable.
        if flags.is_some_and(|f| f & 3 != 0) {
            if let (Some(slot), Some(id)) = (out.get_mut(cpus), id) {
                *slot = id;
            }
            cpus += 1;
        }
        at += len as usize;
    }
    cpus
}
