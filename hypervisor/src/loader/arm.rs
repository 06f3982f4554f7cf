//! ARM kernel images: arm64 `Image` and 32-bit `zImage`.

use super::{LoadError, Placed};

/// arm64 `Image`: 64-byte header with magic "ARM\x64" at 0x38 and the load offset at 8.
/// Loaded at RAM + text_offset, entered at its first byte (Linux's arm64 booting.rst).
pub fn load_arm64_image(image: &[u8], ram: &mut [u8]) -> Result<Placed, LoadError> {
    if image.len() < 64 || &image[0x38..0x3c] != b"ARM\x64" {
        return Err(LoadError::UnknownFormat);
    }
    let text_offset = u64::from_le_bytes(image[8..16].try_into().unwrap());
    // Images with text_offset 0 want a 2 MiB aligned base; keep the legacy 0x80000 slot free.
    let offset = if text_offset == 0 { 0x20_0000 } else { text_offset };
    let image_size = u64::from_le_bytes(image[16..24].try_into().unwrap()).max(image.len() as u64);
    copy_at(image, ram, offset, image_size)?;
    Ok(Placed { entry_offset: offset, end_offset: offset + image_size, elf32: false })
}

/// What an ARM `zImage`'s header and its decompressor's data table say about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ZImageInfo {
    /// The address the image was linked to run at (0: position independent).
    pub link_addr: u32,
    /// Bytes to copy: the header's `end - start`, or the file when that is longer (a device
    /// tree may be appended).
    pub len: u64,
    /// Where the decompressed kernel ends, from the start of RAM (its text offset plus the
    /// decompressed size and its bss), when the image's table says.
    pub kernel_end: Option<u64>,
}

/// The zImage magic at 0x24 (Linux's arch/arm/boot/compressed/head.S header).
const ZIMAGE_MAGIC: u32 = 0x016F_2818;
/// The word at 0x30 that says the header goes on with a pointer to a data table at 0x34.
const ZIMAGE_TABLE_MAGIC: u32 = 0x4545_4545;
/// The table's "KLSZ" tag: the decompressed kernel's size and bss follow.
const ZIMAGE_KLSZ: u32 = 0x5A53_4C4B;
/// The text offset of a classic ARM kernel (32 KiB into RAM), when the table gives none.
pub const ARM_TEXT_OFFSET: u64 = 0x8000;
/// Room the decompressor takes past its image's end: its bss, stack and 64 KiB heap.
pub const ZIMAGE_SLACK: u64 = 1 << 20;

fn le32(image: &[u8], at: u64) -> Option<u32> {
    let at = usize::try_from(at).ok()?;
    image.get(at..at.checked_add(4)?).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Read an ARM `zImage`'s header (magic 0x016F2818 at 0x24, start/end at 0x28/0x2c) and, when
/// present, the table the decompressor leaves for loaders (0x45454545 at 0x30, its address
/// at 0x34): how large the decompressed kernel will be and where it goes.
pub fn zimage_info(image: &[u8]) -> Result<ZImageInfo, LoadError> {
    if le32(image, 0x24) != Some(ZIMAGE_MAGIC) {
        return Err(LoadError::UnknownFormat);
    }
    let (start, end) = (le32(image, 0x28).unwrap_or(0), le32(image, 0x2c).unwrap_or(0));
    if end <= start {
        return Err(LoadError::Malformed);
    }
    let len = u64::from(end - start).max(image.len() as u64);
    let table = (le32(image, 0x30) == Some(ZIMAGE_TABLE_MAGIC))
        .then(|| le32(image, 0x34))
        .flatten()
        .and_then(|t| t.checked_sub(start))
        .map(u64::from);
    // Table: word count, then tagged entries; the KLSZ one holds the offset of the word with
    // the decompressed size, then the kernel's bss size; the next word the text offset.
    let sizes = table.filter(|&t| le32(image, t + 4) == Some(ZIMAGE_KLSZ)).and_then(|t| {
        let size_at = le32(image, t + 8)?;
        let size = le32(image, u64::from(size_at))?;
        let bss = le32(image, t + 12)?;
        let text = le32(image, t + 16).filter(|&o| o != 0 && o < (16 << 20)).map_or(ARM_TEXT_OFFSET, u64::from);
        Some(text + u64::from(size) + u64::from(bss))
    });
    Ok(ZImageInfo { link_addr: start, len, kernel_end: sizes })
}

/// ARM `zImage` at `offset` into RAM (chosen by the caller from [`zimage_info`]); entered at
/// its first byte. The caller keeps [`ZIMAGE_SLACK`] free after it.
pub fn load_arm_zimage(image: &[u8], ram: &mut [u8], offset: u64) -> Result<Placed, LoadError> {
    let info = zimage_info(image)?;
    let footprint = info.len.checked_add(ZIMAGE_SLACK).ok_or(LoadError::TooLarge)?;
    copy_at(image, ram, offset, footprint)?;
    Ok(Placed { entry_offset: offset, end_offset: offset + info.len, elf32: false })
}

fn copy_at(image: &[u8], ram: &mut [u8], offset: u64, footprint: u64) -> Result<(), LoadError> {
    let end = offset.checked_add(footprint).ok_or(LoadError::TooLarge)?;
    if end > ram.len() as u64 {
        return Err(LoadError::TooLarge);
    }
    let off = offset as usize;
    ram[off..off + image.len()].copy_from_slice(image);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arm64_header(text_offset: u64, image_size: u64, len: usize) -> Vec<u8> {
        let mut img = vec![0u8; len];
        img[8..16].copy_from_slice(&text_offset.to_le_bytes());
        img[16..24].copy_from_slice(&image_size.to_le_bytes());
        img[0x38..0x3c].copy_from_slice(b"ARM\x64");
        img[100] = 0xaa;
        img
    }

    #[test]
    fn arm64_image_lands_at_its_text_offset() {
        let img = arm64_header(0x80000, 0x1000, 0x800);
        let mut ram = vec![0u8; 0x100000];
        let p = load_arm64_image(&img, &mut ram).unwrap();
        assert_eq!(p, Placed { entry_offset: 0x80000, end_offset: 0x81000, elf32: false });
        assert_eq!(ram[0x80000 + 100], 0xaa);
    }

    #[test]
    fn arm64_image_with_zero_offset_goes_to_2mib() {
        let img = arm64_header(0, 0, 0x100);
        let mut ram = vec![0u8; 0x400000];
        assert_eq!(load_arm64_image(&img, &mut ram).unwrap().entry_offset, 0x200000);
    }

    #[test]
    fn arm64_image_rejects_bad_magic_and_oversize() {
        let mut ram = vec![0u8; 0x1000];
        assert_eq!(load_arm64_image(&[0u8; 128], &mut ram), Err(LoadError::UnknownFormat));
        let img = arm64_header(0x80000, 0, 0x100);
        assert_eq!(load_arm64_image(&img, &mut ram), Err(LoadError::TooLarge));
        let img = arm64_header(u64::MAX - 4, 0, 0x100);
        assert_eq!(load_arm64_image(&img, &mut ram), Err(LoadError::TooLarge));
    }

    #[test]
    fn zimage_is_recognised_by_its_magic() {
        let img = zimage(0x100, None);
        let mut ram = vec![0u8; 0x200000];
        assert_eq!(
            load_arm_zimage(&img, &mut ram, 0x8000).unwrap(),
            Placed { entry_offset: 0x8000, end_offset: 0x8100, elf32: false }
        );
        assert_eq!(load_arm_zimage(&[0u8; 0x100], &mut ram, 0x8000), Err(LoadError::UnknownFormat));
        assert_eq!(zimage_info(&img[..0x20]), Err(LoadError::UnknownFormat));
        // No room for the decompressor's slack after it.
        assert_eq!(load_arm_zimage(&img, &mut ram, 0x180000), Err(LoadError::TooLarge));
        // end before start
        let mut bad = img.clone();
        bad[0x28..0x2c].copy_from_slice(&0x200u32.to_le_bytes());
        assert_eq!(zimage_info(&bad), Err(LoadError::Malformed));
    }

    /// A zImage header of `len` bytes, with a KLSZ table when `sizes` = (decompressed, bss, text).
    pub(crate) fn zimage(len: u32, sizes: Option<(u32, u32, u32)>) -> Vec<u8> {
        let mut img = vec![0u8; len as usize];
        let mut put = |at: usize, v: u32| img[at..at + 4].copy_from_slice(&v.to_le_bytes());
        put(0x24, ZIMAGE_MAGIC);
        put(0x2c, len);
        if let Some((size, bss, text)) = sizes {
            put(0x30, ZIMAGE_TABLE_MAGIC);
            put(0x34, 0x40);
            for (i, w) in [6, ZIMAGE_KLSZ, 0x61, bss, text, 0x10000].into_iter().enumerate() {
                put(0x40 + 4 * i, w);
            }
            // The size word is unaligned, as the piggy data leaves it.
            put(0x61, size);
        }
        img
    }

    #[test]
    fn zimage_table_gives_the_decompressed_footprint() {
        // Debian's armmp-lpae: 21.6 MiB decompressed, 384 KiB bss, text at 0x208000.
        let img = zimage(0x1000, Some((0x15a_52d0, 0x5_ffb8, 0x20_8000)));
        let info = zimage_info(&img).unwrap();
        assert_eq!(info, ZImageInfo { link_addr: 0, len: 0x1000, kernel_end: Some(0x20_8000 + 0x15a_52d0 + 0x5_ffb8) });
        // A table pointer out of the file, or no table: nothing known.
        let mut odd = img.clone();
        odd[0x34..0x38].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
        assert_eq!(zimage_info(&odd).unwrap().kernel_end, None);
        assert_eq!(zimage_info(&zimage(0x100, None)).unwrap().kernel_end, None);
        // A size word pointing past the file.
        let mut past = img.clone();
        past[0x48..0x4c].copy_from_slice(&0x7fff_0000u32.to_le_bytes());
        assert_eq!(zimage_info(&past).unwrap().kernel_end, None);
    }
}
