//! Opening a flattened device tree with `dtoolkit`, for arch and the core alike.
//!
//! dtoolkit 0.4 validates the whole blob up front (so its readers never meet a malformed
//! token), but it also enforces the DT specification's 31-character limit on property names,
//! which Linux's own board DTs exceed (ZynqMP's USB nodes carry
//! `snps,quirk-frame-length-adjustment`, 34). A blob rejected for that reason is accepted
//! here when [`well_formed`] (the same structural checks, without the name-length rule)
//! finds it sound, so the unchecked reader is safe on it too.

use dtoolkit::error::{FdtErrorKind, FdtParseError};
use dtoolkit::fdt::Fdt;

const FDT_MAGIC: u32 = 0xd00d_feed;
const FDT_BEGIN_NODE: u32 = 1;
const FDT_END_NODE: u32 = 2;
const FDT_PROP: u32 = 3;
const FDT_NOP: u32 = 4;
const FDT_END: u32 = 9;

/// `data` (exactly one blob: its header's `totalsize` bytes) as a dtoolkit [`Fdt`].
pub fn open(data: &[u8]) -> Result<Fdt<'_>, FdtParseError> {
    match Fdt::new(data) {
        Err(e) if e.kind == FdtErrorKind::InvalidPropertyName && well_formed(data) => Ok(Fdt::new_unchecked(data)),
        other => other,
    }
}

fn be32(d: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(d.get(at..at.checked_add(4)?)?.try_into().ok()?))
}

/// The NUL-terminated UTF-8 string at `d[at..limit]`: the offset just past its NUL.
fn c_string_end(d: &[u8], at: usize, limit: usize) -> Option<usize> {
    let bytes = d.get(at..limit)?;
    let len = bytes.iter().position(|&b| b == 0)?;
    core::str::from_utf8(&bytes[..len]).ok()?;
    Some(at + len + 1)
}

/// Whether `d` is a structurally sound FDT (version 17 header, memory reservation block,
/// structure block of balanced nodes with one root, property values and names in bounds,
/// UTF-8 names), property name lengths aside.
pub fn well_formed(d: &[u8]) -> bool {
    well_formed_inner(d).unwrap_or(false)
}

fn well_formed_inner(d: &[u8]) -> Option<bool> {
    let field = |i: usize| be32(d, 4 * i).map(|v| v as usize);
    let (magic, total, off_struct, off_strings, off_rsv) = (field(0)?, field(1)?, field(2)?, field(3)?, field(4)?);
    let (version, last_comp, size_strings, size_struct) = (field(5)?, field(6)?, field(8)?, field(9)?);
    if magic != FDT_MAGIC as usize || total != d.len() || version < 17 || last_comp > 17 {
        return Some(false);
    }
    let struct_end = off_struct.checked_add(size_struct)?;
    let strings_end = off_strings.checked_add(size_strings)?;
    if struct_end > d.len() || strings_end > d.len() || !off_struct.is_multiple_of(4) || !off_rsv.is_multiple_of(8) {
        return Some(false);
    }
    // Memory reservations: 16-byte entries up to an all-zero one.
    let mut at = off_rsv;
    loop {
        let entry = d.get(at..at.checked_add(16)?)?;
        at += 16;
        if entry.iter().all(|&b| b == 0) {
            break;
        }
    }
    let mut pos = off_struct;
    let mut depth = 0usize;
    let mut roots = 0;
    loop {
        if pos.checked_add(4)? > struct_end {
            return Some(false);
        }
        let token = be32(d, pos)?;
        pos += 4;
        match token {
            FDT_BEGIN_NODE => {
                if depth == 0 {
                    roots += 1;
                }
                depth += 1;
                pos = c_string_end(d, pos, struct_end)?.next_multiple_of(4);
            }
            FDT_PROP => {
                let len = be32(d, pos)? as usize;
                let name = be32(d, pos + 4)? as usize;
                pos += 8;
                let value_end = pos.checked_add(len)?;
                if depth == 0 || value_end > struct_end || name >= size_strings {
                    return Some(false);
                }
                c_string_end(d, off_strings + name, strings_end)?;
                pos = value_end.next_multiple_of(4);
            }
            FDT_END_NODE => depth = depth.checked_sub(1)?,
            FDT_NOP => {}
            FDT_END => return Some(depth == 0 && roots == 1),
            _ => return Some(false),
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use dtoolkit::Node;
    use std::vec::Vec;

    const LONG: &str = "snps,quirk-frame-length-adjustment";

    /// `/usb@fe200000 { <prop> = <0x20>; status = "okay"; }`, written by hand: the DT writers
    /// at hand refuse names longer than 31 characters too.
    fn tree(prop: &str) -> Vec<u8> {
        let word = |v: &mut Vec<u8>, x: u32| v.extend_from_slice(&x.to_be_bytes());
        let pad = |v: &mut Vec<u8>| v.resize(v.len().next_multiple_of(4), 0);
        let mut st = Vec::new();
        word(&mut st, FDT_BEGIN_NODE);
        word(&mut st, 0); // the root's empty name
        word(&mut st, FDT_BEGIN_NODE);
        st.extend_from_slice(b"usb@fe200000\0");
        pad(&mut st);
        for (len, name, value) in [(4, 0, &[0, 0, 0, 0x20][..]), (5, prop.len() + 1, b"okay\0")] {
            word(&mut st, FDT_PROP);
            word(&mut st, len);
            word(&mut st, name as u32);
            st.extend_from_slice(value);
            pad(&mut st);
        }
        for t in [FDT_END_NODE, FDT_END_NODE, FDT_END] {
            word(&mut st, t);
        }
        let strings = [prop.as_bytes(), b"\0status\0"].concat();
        let (off_struct, off_strings) = (40 + 16, 40 + 16 + st.len());
        let mut d = Vec::new();
        let total = off_strings + strings.len();
        for x in [FDT_MAGIC, total as u32, off_struct as u32, off_strings as u32, 40, 17, 16, 0] {
            word(&mut d, x);
        }
        word(&mut d, strings.len() as u32);
        word(&mut d, st.len() as u32);
        d.extend_from_slice(&[0; 16]);
        d.extend_from_slice(&st);
        d.extend_from_slice(&strings);
        d
    }

    #[test]
    fn linux_s_overlong_property_names_are_accepted_when_the_blob_is_sound() {
        let dtb = tree(LONG);
        assert!(Fdt::new(&dtb).is_err(), "dtoolkit rejects it by itself");
        let fdt = open(&dtb).expect("accepted");
        let usb = fdt.find_node("/usb@fe200000").unwrap();
        assert!(usb.property(LONG).is_some());
        // Ordinary blobs take dtoolkit's own path.
        assert!(open(&tree("snps,quirk")).is_ok());
    }

    #[test]
    fn malformed_blobs_are_still_rejected() {
        let good = tree(LONG);
        assert!(well_formed(&good));
        // Truncated, or totalsize not the length.
        assert!(open(&good[..good.len() - 4]).is_err());
        // A property whose value runs past the structure block.
        let mut bad = good.clone();
        let at = bad.windows(8).position(|w| w == [0, 0, 0, 3, 0, 0, 0, 4]).unwrap() + 4;
        bad[at..at + 4].copy_from_slice(&0x1000u32.to_be_bytes());
        assert!(!well_formed(&bad));
        assert!(open(&bad).is_err());
        // An unknown token where a node should end.
        let mut bad = good.clone();
        let end = bad.windows(4).rposition(|w| w == FDT_END.to_be_bytes()).unwrap();
        bad[end..end + 4].copy_from_slice(&7u32.to_be_bytes());
        assert!(!well_formed(&bad));
        // Every prefix of the blob is rejected (no panic, no false acceptance).
        for n in 0..good.len() {
            assert!(!well_formed(&good[..n]), "prefix {n}");
        }
    }
}
