//! ACPI tables for an x86 PVH guest: RSDP → XSDT → FADT (→ DSDT) and MADT.
//!
//! Hardware-reduced ACPI (no PM timer, no SCI, no legacy PIC): the FADT only names a DSDT
//! with `\_S5` and a sleep control register, an I/O port the hypervisor traps, so that
//! Linux's `poweroff` becomes an ACPI S5 request. The MADT lists one enabled local x2APIC per
//! vCPU and no I/O APIC. Written by hand (ACPI 6.x layouts) into a byte buffer at a known
//! guest-physical address, every checksum computed; tested below by reading the bytes back.

use alloc::vec::Vec;

/// The I/O port of the FADT's `SLEEP_CONTROL_REG` (8 bits): SLP_EN | SLP_TYP<<2 powers off.
pub const SLEEP_CONTROL_PORT: u16 = 0x0600;
/// The I/O port of `SLEEP_STATUS_REG` (reads as all ones: WAK_STS set).
pub const SLEEP_STATUS_PORT: u16 = 0x0601;
/// SLP_EN in the sleep control register.
pub const SLEEP_ENABLE: u8 = 1 << 5;
/// The sleep type `\_S5` announces (and the control register then carries in bits 4:2).
pub const S5_SLEEP_TYPE: u8 = 5;

const OEM_ID: &[u8; 6] = b"XHV   ";
const OEM_TABLE_ID: &[u8; 8] = b"XHVPVH  ";
const HEADER: usize = 36;
const FADT_LEN: usize = 276;
/// FADT flags: HW_REDUCED_ACPI (bit 20).
const FADT_HW_REDUCED: u32 = 1 << 20;
/// IA-PC boot architecture flags: no VGA (bit 2), no CMOS RTC (bit 5); no 8042 (bit 1 clear).
const IAPC_NO_VGA: u16 = 1 << 2;
const IAPC_NO_CMOS_RTC: u16 = 1 << 5;
const LOCAL_APIC_BASE: u32 = 0xfee0_0000;
const MADT_LOCAL_X2APIC: u8 = 9;
/// Processor Local APIC structure (8-bit APIC ids): what kernels without x2APIC support read.
const MADT_LOCAL_APIC: u8 = 0;
const MADT_ENABLED: u32 = 1;

/// Where the tables went: the RSDP's guest-physical address and the bytes to copy there.
pub struct Tables {
    pub rsdp: u64,
    pub bytes: Vec<u8>,
}

/// Two's-complement byte sum, so that the whole range sums to zero.
pub fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |a, &b| a.wrapping_add(b)))
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// A system description table: header filled, checksum over everything at byte 9.
fn sdt(signature: &[u8; 4], revision: u8, body: &[u8]) -> Vec<u8> {
    let mut t = alloc::vec![0u8; HEADER];
    t[0..4].copy_from_slice(signature);
    t[8] = revision;
    t[10..16].copy_from_slice(OEM_ID);
    t[16..24].copy_from_slice(OEM_TABLE_ID);
    put32(&mut t, 24, 1);
    t[28..32].copy_from_slice(b"XHV ");
    put32(&mut t, 32, 1);
    t.extend_from_slice(body);
    let len = t.len() as u32;
    put32(&mut t, 4, len);
    t[9] = checksum(&t);
    t
}

/// A Generic Address Structure for an 8-bit I/O port.
fn gas_io8(b: &mut [u8], at: usize, port: u16) {
    b[at] = 1; // system I/O space
    b[at + 1] = 8; // bit width
    b[at + 2] = 0; // bit offset
    b[at + 3] = 1; // byte access
    put64(b, at + 4, port.into());
}

/// The DSDT: `Name (_S5, Package () { 5, 5, 0, 0 })` and nothing else.
fn dsdt() -> Vec<u8> {
    let aml = [
        0x08,
        b'_',
        b'S',
        b'5',
        b'_', // NameOp "_S5_"
        0x12,
        0x08,
        0x04, // PackageOp, PkgLength 8, 4 elements
        0x0a,
        S5_SLEEP_TYPE,
        0x0a,
        S5_SLEEP_TYPE,
        0x00,
        0x00, // BytePrefix 5, BytePrefix 5, Zero, Zero
    ];
    sdt(b"DSDT", 2, &aml)
}

fn fadt(dsdt_addr: u64) -> Vec<u8> {
    let mut body = alloc::vec![0u8; FADT_LEN - HEADER];
    let f = |off: usize| off - HEADER;
    put32(&mut body, f(40), dsdt_addr as u32);
    put16(&mut body, f(109), IAPC_NO_VGA | IAPC_NO_CMOS_RTC);
    put32(&mut body, f(112), FADT_HW_REDUCED);
    // FADT minor version 6.x: 5.
    body[f(131)] = 5;
    put64(&mut body, f(140), dsdt_addr);
    gas_io8(&mut body, f(244), SLEEP_CONTROL_PORT);
    gas_io8(&mut body, f(256), SLEEP_STATUS_PORT);
    put64(&mut body, f(268), u64::from_le_bytes(*b"XenVMM\0\0"));
    sdt(b"FACP", 6, &body)
}

/// One local APIC entry per vCPU: local x2APIC structures, or (`xapic`) 8-byte local APIC
/// structures, which kernels without x2APIC support (i386 Linux) need and which every vCPU
/// id below 255 fits.
fn madt(vcpus: u32, xapic: bool) -> Vec<u8> {
    let mut body = alloc::vec![0u8; 8];
    put32(&mut body, 0, LOCAL_APIC_BASE);
    // Flags 0: no PC-AT dual 8259 setup.
    for id in 0..vcpus {
        if xapic && id < 255 {
            let mut e = [MADT_LOCAL_APIC, 8, id as u8, id as u8, 0, 0, 0, 0];
            put32(&mut e, 4, MADT_ENABLED);
            body.extend_from_slice(&e);
            continue;
        }
        let mut e = [0u8; 16];
        e[0] = MADT_LOCAL_X2APIC;
        e[1] = 16;
        put32(&mut e, 4, id);
        put32(&mut e, 8, MADT_ENABLED);
        put32(&mut e, 12, id);
        body.extend_from_slice(&e);
    }
    sdt(b"APIC", 5, &body)
}

/// Build the tables to live at guest-physical `base` (16-byte aligned), for `vcpus` vCPUs
/// (`xapic`: the MADT lists them as local APICs rather than local x2APICs).
pub fn build(base: u64, vcpus: u32, xapic: bool) -> Tables {
    const RSDP_LEN: usize = 36;
    let align = |n: usize| n.next_multiple_of(16);
    let xsdt_at = align(RSDP_LEN);
    let (dsdt, madt) = (dsdt(), madt(vcpus, xapic));
    // Layout: RSDP, XSDT (two entries), FADT, DSDT, MADT.
    let xsdt_len = HEADER + 2 * 8;
    let fadt_at = align(xsdt_at + xsdt_len);
    let dsdt_at = align(fadt_at + FADT_LEN);
    let madt_at = align(dsdt_at + dsdt.len());
    let fadt = fadt(base + dsdt_at as u64);
    let mut entries = [0u8; 16];
    put64(&mut entries, 0, base + fadt_at as u64);
    put64(&mut entries, 8, base + madt_at as u64);
    let xsdt = sdt(b"XSDT", 1, &entries);

    let mut bytes = alloc::vec![0u8; madt_at + madt.len()];
    let rsdp = &mut bytes[..RSDP_LEN];
    rsdp[0..8].copy_from_slice(b"RSD PTR ");
    rsdp[9..15].copy_from_slice(OEM_ID);
    rsdp[15] = 2;
    put32(rsdp, 20, RSDP_LEN as u32);
    put64(rsdp, 24, base + xsdt_at as u64);
    rsdp[8] = checksum(&rsdp[..20]);
    rsdp[32] = checksum(rsdp);
    for (at, t) in [(xsdt_at, &xsdt), (fadt_at, &fadt), (dsdt_at, &dsdt), (madt_at, &madt)] {
        bytes[at..at + t.len()].copy_from_slice(t);
    }
    Tables { rsdp: base, bytes }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }
    fn u64_at(b: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
    }
    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |a, &x| a.wrapping_add(x))
    }

    /// The table at guest-physical `gpa` inside `t`, checked: signature, length, checksum.
    fn table<'a>(t: &'a Tables, gpa: u64, sig: &[u8; 4]) -> &'a [u8] {
        let at = (gpa - t.rsdp) as usize;
        let len = u32_at(&t.bytes, at + 4) as usize;
        let tab = &t.bytes[at..at + len];
        assert_eq!(&tab[..4], sig);
        assert_eq!(sum(tab), 0, "{} checksum", core::str::from_utf8(sig).unwrap());
        tab
    }

    #[test]
    fn rsdp_xsdt_fadt_dsdt_madt_chain_with_valid_checksums() {
        let base = 0xf2000;
        let t = build(base, 2, false);
        let rsdp = &t.bytes[..36];
        assert_eq!(&rsdp[..8], b"RSD PTR ");
        assert_eq!(rsdp[15], 2);
        assert_eq!(sum(&rsdp[..20]), 0);
        assert_eq!(sum(rsdp), 0);
        let xsdt = table(&t, u64_at(rsdp, 24), b"XSDT");
        assert_eq!(xsdt.len(), 36 + 16);
        let fadt = table(&t, u64_at(xsdt, 36), b"FACP");
        assert_eq!(fadt.len(), 276);
        assert_ne!(u32_at(fadt, 112) & (1 << 20), 0, "hardware-reduced");
        assert_eq!(u32_at(fadt, 40) as u64, u64_at(fadt, 140));
        // Sleep control/status registers: 8-bit system I/O ports.
        assert_eq!((fadt[244], fadt[245], u64_at(fadt, 248)), (1, 8, SLEEP_CONTROL_PORT as u64));
        assert_eq!((fadt[256], u64_at(fadt, 260)), (1, SLEEP_STATUS_PORT as u64));
        let dsdt = table(&t, u64_at(fadt, 140), b"DSDT");
        assert_eq!(&dsdt[36..41], b"\x08_S5_");
        let madt = table(&t, u64_at(xsdt, 44), b"APIC");
        assert_eq!(u32_at(madt, 36), 0xfee0_0000);
        assert_eq!(u32_at(madt, 40), 0, "no PCAT_COMPAT");
        // Two 16-byte local x2APIC entries, ids 0 and 1, enabled; nothing else (no I/O APIC).
        assert_eq!(madt.len(), 44 + 32);
        for id in 0..2usize {
            let e = &madt[44 + 16 * id..][..16];
            assert_eq!((e[0], e[1]), (9, 16));
            assert_eq!((u32_at(e, 4), u32_at(e, 8), u32_at(e, 12)), (id as u32, 1, id as u32));
        }
    }

    #[test]
    fn a_32_bit_kernel_gets_local_apic_entries() {
        let t = build(0xf2000, 2, true);
        let xsdt = table(&t, u64_at(&t.bytes[..36], 24), b"XSDT");
        let madt = table(&t, u64_at(xsdt, 44), b"APIC");
        // Two 8-byte entries: type 0, length 8, processor uid, APIC id, flags (enabled).
        assert_eq!(madt.len(), 44 + 16);
        assert_eq!(&madt[44..52], &[0, 8, 0, 0, 1, 0, 0, 0]);
        assert_eq!(&madt[52..60], &[0, 8, 1, 1, 1, 0, 0, 0]);
    }

    #[test]
    fn checksum_makes_the_sum_zero() {
        let mut b = [1u8, 2, 3, 250, 0];
        b[4] = checksum(&b[..4]);
        assert_eq!(sum(&b), 0);
    }
}
