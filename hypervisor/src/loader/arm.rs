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

/// ARM `zImage`: magic 0x016F2818 at 0x24; conventionally loaded 32 KiB into RAM.
pub fn load_arm_zimage(image: &[u8], ram: &mut [u8]) -> Result<Placed, LoadError> {
    const ZIMAGE_OFFSET: u64 = 0x8000;
    if image.len() < 0x30 || u32::from_le_bytes(image[0x24..0x28].try_into().unwrap()) != 0x016F_2818 {
        return Err(LoadError::UnknownFormat);
    }
    copy_at(image, ram, ZIMAGE_OFFSET, image.len() as u64)?;
    Ok(Placed { entry_offset: ZIMAGE_OFFSET, end_offset: ZIMAGE_OFFSET + image.len() as u64, elf32: false })
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
        let mut img = vec![0u8; 0x100];
        img[0x24..0x28].copy_from_slice(&0x016F_2818u32.to_le_bytes());
        let mut ram = vec![0u8; 0x10000];
        assert_eq!(load_arm_zimage(&img, &mut ram).unwrap().entry_offset, 0x8000);
        assert_eq!(load_arm_zimage(&[0u8; 0x100], &mut ram), Err(LoadError::UnknownFormat));
    }
}
