//! Xen PVH kernels: an ELF whose `PT_LOAD` segments go at their physical addresses and
//! whose entry is the `XEN_ELFNOTE_PHYS32_ENTRY` note (else `e_entry`).
//!
//! The image is untrusted input: every offset and size is checked before xmas-elf (which
//! slices and asserts alignment without checking) looks at it, so a bad image is an error,
//! never a panic.

use super::{LoadError, Placed};
use guest_abi::elfnote::XEN_ELFNOTE_PHYS32_ENTRY;
use xmas_elf::ElfFile;
use xmas_elf::header::{Class, Machine};
use xmas_elf::program::{ProgramHeader, Type};

const ELF_MAGIC: &[u8; 4] = b"\x7fELF";

/// Load `image` into `ram`, which is guest-physical `ram_base..ram_base + ram.len()`.
pub fn load_pvh_elf(image: &[u8], ram: &mut [u8], ram_base: u64) -> Result<Placed, LoadError> {
    if !image.starts_with(ELF_MAGIC) {
        return Err(LoadError::UnknownFormat);
    }
    let elf = ElfFile::new(image).map_err(|_| LoadError::Malformed)?;
    if !matches!(elf.header.pt2.machine().as_machine(), Machine::X86_64 | Machine::X86) {
        return Err(LoadError::UnknownFormat);
    }
    check_program_headers(&elf)?;
    let mut end = 0u64;
    let mut loaded = false;
    for ph in elf.program_iter() {
        if ph.get_type() == Ok(Type::Load) && ph.mem_size() > 0 {
            end = end.max(load_segment(image, &ph, ram, ram_base)?);
            loaded = true;
        }
    }
    if !loaded {
        return Err(LoadError::Malformed);
    }
    let entry = pvh_entry(&elf, image)?.unwrap_or(elf.header.pt2.entry_point());
    let entry_offset = entry.checked_sub(ram_base).filter(|&o| o < ram.len() as u64).ok_or(LoadError::Malformed)?;
    let elf32 = elf.header.pt1.class() == Class::ThirtyTwo;
    Ok(Placed { entry_offset, end_offset: end, elf32 })
}

/// The program header table lies inside the image, aligned, with entries big enough.
fn check_program_headers(elf: &ElfFile) -> Result<(), LoadError> {
    let pt2 = &elf.header.pt2;
    let (min_size, align) = match elf.header.pt1.class() {
        Class::SixtyFour => (56u64, 8u64),
        _ => (32, 4),
    };
    let (offset, size, count) = (pt2.ph_offset(), pt2.ph_entry_size() as u64, pt2.ph_count() as u64);
    let table_end = size.checked_mul(count).and_then(|n| n.checked_add(offset));
    let base_aligned = (elf.input.as_ptr() as u64).is_multiple_of(align);
    let ok = count > 0
        && size >= min_size
        && size.is_multiple_of(align)
        && offset.is_multiple_of(align)
        && base_aligned
        && table_end.is_some_and(|e| e <= elf.input.len() as u64);
    if ok { Ok(()) } else { Err(LoadError::Malformed) }
}

/// Copy one segment's file bytes and zero the rest of its memory size; returns its end
/// offset in RAM.
fn load_segment(image: &[u8], ph: &ProgramHeader, ram: &mut [u8], ram_base: u64) -> Result<u64, LoadError> {
    let (filesz, memsz) = (ph.file_size(), ph.mem_size());
    if filesz > memsz {
        return Err(LoadError::Malformed);
    }
    let src = file_range(image, ph.offset(), filesz)?;
    let start = ph.physical_addr().checked_sub(ram_base).ok_or(LoadError::TooLarge)?;
    let end = start.checked_add(memsz).filter(|&e| e <= ram.len() as u64).ok_or(LoadError::TooLarge)?;
    let dst = &mut ram[start as usize..end as usize];
    let (file_part, zero_part) = dst.split_at_mut(filesz as usize);
    file_part.copy_from_slice(src);
    zero_part.fill(0);
    Ok(end)
}

fn file_range(image: &[u8], offset: u64, size: u64) -> Result<&[u8], LoadError> {
    let end = offset.checked_add(size).filter(|&e| e <= image.len() as u64).ok_or(LoadError::Malformed)?;
    Ok(&image[offset as usize..end as usize])
}

/// The PHYS32_ENTRY value from any `PT_NOTE` segment, if there is one.
fn pvh_entry(elf: &ElfFile, image: &[u8]) -> Result<Option<u64>, LoadError> {
    for ph in elf.program_iter().filter(|ph| ph.get_type() == Ok(Type::Note)) {
        let notes = file_range(image, ph.offset(), ph.file_size())?;
        if let Some(entry) = find_note(notes, b"Xen", XEN_ELFNOTE_PHYS32_ENTRY)? {
            return Ok(Some(entry));
        }
    }
    Ok(None)
}

/// Walk ELF notes (`namesz`, `descsz`, `type`, name, desc; 4-byte padded) for a numeric note.
fn find_note(mut notes: &[u8], owner: &[u8], kind: u32) -> Result<Option<u64>, LoadError> {
    let word = |b: &[u8], at: usize| b.get(at..at + 4).map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]));
    let pad = |n: usize| n.checked_add(3).map(|n| n & !3).ok_or(LoadError::Malformed);
    while notes.len() >= 12 {
        let (namesz, descsz, ty) = match (word(notes, 0), word(notes, 4), word(notes, 8)) {
            (Some(a), Some(b), Some(c)) => (a as usize, b as usize, c),
            _ => return Err(LoadError::Malformed),
        };
        let desc_at = pad(namesz)?.checked_add(12).ok_or(LoadError::Malformed)?;
        let next = pad(descsz)?.checked_add(desc_at).ok_or(LoadError::Malformed)?;
        let name = notes.get(12..12 + namesz).ok_or(LoadError::Malformed)?;
        let desc = notes.get(desc_at..desc_at + descsz).ok_or(LoadError::Malformed)?;
        if ty == kind && name.strip_suffix(b"\0").unwrap_or(name) == owner {
            return match *desc {
                [a, b, c, d] => Ok(Some(u32::from_le_bytes([a, b, c, d]) as u64)),
                [a, b, c, d, e, f, g, h] => Ok(Some(u64::from_le_bytes([a, b, c, d, e, f, g, h]))),
                _ => Err(LoadError::Malformed),
            };
        }
        notes = notes.get(next..).unwrap_or(&[]);
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: usize = 1 << 20;

    /// An 8-byte aligned byte buffer (xmas-elf reads headers in place).
    #[repr(C, align(8))]
    struct Aligned<const N: usize>([u8; N]);

    struct Seg {
        ty: u32,
        paddr: u64,
        data: Vec<u8>,
        memsz: u64,
    }

    /// An ELF64 x86_64 executable: header, program headers, then each segment's bytes.
    fn elf64(entry: u64, segs: &[Seg]) -> Vec<u8> {
        let phoff = 64usize;
        let mut data_at = phoff + 56 * segs.len();
        let mut out = vec![0u8; data_at];
        out[..4].copy_from_slice(ELF_MAGIC);
        out[4] = 2; // ELFCLASS64
        out[5] = 1; // little endian
        out[6] = 1; // EV_CURRENT
        out[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        out[18..20].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64
        out[20..24].copy_from_slice(&1u32.to_le_bytes());
        out[24..32].copy_from_slice(&entry.to_le_bytes());
        out[32..40].copy_from_slice(&(phoff as u64).to_le_bytes());
        out[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
        out[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
        out[56..58].copy_from_slice(&(segs.len() as u16).to_le_bytes());
        for (i, s) in segs.iter().enumerate() {
            let ph = phoff + 56 * i;
            out[ph..ph + 4].copy_from_slice(&s.ty.to_le_bytes());
            out[ph + 4..ph + 8].copy_from_slice(&7u32.to_le_bytes());
            out[ph + 8..ph + 16].copy_from_slice(&(data_at as u64).to_le_bytes());
            out[ph + 16..ph + 24].copy_from_slice(&s.paddr.to_le_bytes());
            out[ph + 24..ph + 32].copy_from_slice(&s.paddr.to_le_bytes());
            out[ph + 32..ph + 40].copy_from_slice(&(s.data.len() as u64).to_le_bytes());
            out[ph + 40..ph + 48].copy_from_slice(&s.memsz.to_le_bytes());
            data_at += s.data.len();
        }
        for s in segs {
            out.extend_from_slice(&s.data);
        }
        out
    }

    fn note(name: &[u8], ty: u32, desc: &[u8]) -> Vec<u8> {
        let mut n = Vec::new();
        n.extend_from_slice(&(name.len() as u32).to_le_bytes());
        n.extend_from_slice(&(desc.len() as u32).to_le_bytes());
        n.extend_from_slice(&ty.to_le_bytes());
        n.extend_from_slice(name);
        n.resize(n.len().next_multiple_of(4), 0);
        n.extend_from_slice(desc);
        n.resize(n.len().next_multiple_of(4), 0);
        n
    }

    fn load(seg: Seg) -> Seg {
        Seg { ty: 1, ..seg }
    }

    fn notes(data: Vec<u8>) -> Seg {
        Seg { ty: 4, paddr: 0, memsz: data.len() as u64, data }
    }

    /// Run the loader on `bytes` from an aligned copy, with `ram_len` bytes of RAM at 0.
    fn run(bytes: &[u8], ram_len: usize) -> (Result<Placed, LoadError>, Vec<u8>) {
        let mut buf = Box::new(Aligned([0u8; 8192]));
        buf.0[..bytes.len()].copy_from_slice(bytes);
        let mut ram = vec![0xaau8; ram_len];
        let r = load_pvh_elf(&buf.0[..bytes.len()], &mut ram, 0);
        (r, ram)
    }

    #[test]
    fn segments_land_at_their_physical_address_and_bss_is_zeroed() {
        let code = Seg { ty: 1, paddr: 0x10_0000, data: b"CODE".to_vec(), memsz: 16 };
        let image = elf64(0x10_0000, &[load(code)]);
        let (r, ram) = run(&image, 2 * MB);
        assert_eq!(r, Ok(Placed { entry_offset: 0x10_0000, end_offset: 0x10_0010, elf32: false }));
        assert_eq!(&ram[0x10_0000..0x10_0004], b"CODE");
        assert!(ram[0x10_0004..0x10_0010].iter().all(|&b| b == 0));
        assert_eq!(ram[0x10_0010], 0xaa, "nothing written past memsz");
    }

    #[test]
    fn the_xen_phys32_entry_note_wins_over_e_entry() {
        let mut n = note(b"GNU\0", XEN_ELFNOTE_PHYS32_ENTRY, &[1, 2, 3, 4]);
        n.extend(note(b"Xen\0", 6, b"linux\0"));
        n.extend(note(b"Xen\0", XEN_ELFNOTE_PHYS32_ENTRY, &0x10_0040u32.to_le_bytes()));
        let code = Seg { ty: 1, paddr: 0x10_0000, data: vec![0x90; 0x80], memsz: 0x80 };
        let image = elf64(0xffff_ffff_8100_0000, &[load(code), notes(n)]);
        let (r, _) = run(&image, 2 * MB);
        assert_eq!(r.unwrap().entry_offset, 0x10_0040);
    }

    #[test]
    fn an_eight_byte_entry_note_is_accepted() {
        let n = note(b"Xen\0", XEN_ELFNOTE_PHYS32_ENTRY, &0x10_0008u64.to_le_bytes());
        let code = Seg { ty: 1, paddr: 0x10_0000, data: vec![0; 16], memsz: 16 };
        let (r, _) = run(&elf64(0, &[load(code), notes(n)]), 2 * MB);
        assert_eq!(r.unwrap().entry_offset, 0x10_0008);
    }

    #[test]
    fn ram_base_offsets_everything() {
        let code = Seg { ty: 1, paddr: 0x4010_0000, data: b"X".to_vec(), memsz: 1 };
        let mut buf = Box::new(Aligned([0u8; 8192]));
        let image = elf64(0x4010_0000, &[load(code)]);
        buf.0[..image.len()].copy_from_slice(&image);
        let mut ram = vec![0u8; 2 * MB];
        let r = load_pvh_elf(&buf.0[..image.len()], &mut ram, 0x4000_0000).unwrap();
        assert_eq!(r.entry_offset, 0x10_0000);
        assert_eq!(ram[0x10_0000], b'X');
    }

    #[test]
    fn segments_outside_ram_are_too_large() {
        let past_end = Seg { ty: 1, paddr: 0x1f_fff0, data: vec![1; 8], memsz: 0x20 };
        assert_eq!(run(&elf64(0x1f_fff0, &[load(past_end)]), 2 * MB).0, Err(LoadError::TooLarge));
        let wraps = Seg { ty: 1, paddr: u64::MAX - 4, data: vec![], memsz: 0x10 };
        assert_eq!(run(&elf64(0, &[load(wraps)]), 2 * MB).0, Err(LoadError::TooLarge));
        let below = Seg { ty: 1, paddr: 0x1000, data: vec![], memsz: 0x10 };
        let mut buf = Box::new(Aligned([0u8; 8192]));
        let image = elf64(0x1000, &[load(below)]);
        buf.0[..image.len()].copy_from_slice(&image);
        assert_eq!(load_pvh_elf(&buf.0[..image.len()], &mut [0u8; 64], 0x4000_0000), Err(LoadError::TooLarge));
    }

    #[test]
    fn inconsistent_images_are_malformed_not_panics() {
        let ok = || Seg { ty: 1, paddr: 0x10_0000, data: vec![0; 16], memsz: 16 };
        // File bytes past the end of the image.
        let mut image = elf64(0x10_0000, &[load(ok())]);
        image.truncate(image.len() - 8);
        assert_eq!(run(&image, 2 * MB).0, Err(LoadError::Malformed));
        // filesz > memsz.
        let big = Seg { memsz: 4, ..ok() };
        assert_eq!(run(&elf64(0x10_0000, &[load(big)]), 2 * MB).0, Err(LoadError::Malformed));
        // Program header table past the end, or misaligned.
        let mut image = elf64(0x10_0000, &[load(ok())]);
        image[56..58].copy_from_slice(&200u16.to_le_bytes());
        assert_eq!(run(&image, 2 * MB).0, Err(LoadError::Malformed));
        let mut image = elf64(0x10_0000, &[load(ok())]);
        image[32] = 65;
        assert_eq!(run(&image, 2 * MB).0, Err(LoadError::Malformed));
        // No loadable segment; entry outside RAM.
        assert_eq!(run(&elf64(0, &[notes(vec![])]), 2 * MB).0, Err(LoadError::Malformed));
        assert_eq!(run(&elf64(0x30_0000, &[load(ok())]), 2 * MB).0, Err(LoadError::Malformed));
        // A note whose sizes run past its segment.
        let mut n = note(b"Xen\0", XEN_ELFNOTE_PHYS32_ENTRY, &[0; 4]);
        n[4] = 0x40;
        assert_eq!(run(&elf64(0x10_0000, &[load(ok()), notes(n)]), 2 * MB).0, Err(LoadError::Malformed));
        // Truncated header.
        assert_eq!(run(&elf64(0, &[])[..20], 2 * MB).0, Err(LoadError::Malformed));
    }

    #[test]
    fn non_elf_and_foreign_machines_are_unknown() {
        assert_eq!(run(b"MZ\x90\x00 not an ELF", MB).0, Err(LoadError::UnknownFormat));
        let mut image = elf64(0x10_0000, &[load(Seg { ty: 1, paddr: 0x10_0000, data: vec![0; 4], memsz: 4 })]);
        image[18..20].copy_from_slice(&183u16.to_le_bytes()); // EM_AARCH64
        assert_eq!(run(&image, 2 * MB).0, Err(LoadError::UnknownFormat));
    }
}
