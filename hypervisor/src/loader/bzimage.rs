//! x86 `bzImage`: the real-mode setup sectors, then a compressed `vmlinux` ELF.
//!
//! Only the LZ4 "legacy" container is understood (what Debian's cloud-amd64 kernel carries):
//! the magic `0x184C2102`, then blocks of a little-endian `u32` compressed size and the LZ4
//! block itself; the kernel build appends the uncompressed size as a final `u32`. Each block
//! decompresses to at most 8 MiB. The image is untrusted: every size is checked, and a bad
//! image is an error, never a panic.

use super::LoadError;

/// Setup header fields (Linux `Documentation/arch/x86/boot.rst`).
const SETUP_SECTS: usize = 0x1f1;
const HEADER_MAGIC_AT: usize = 0x202;
const HEADER_MAGIC: &[u8; 4] = b"HdrS";
const PAYLOAD_OFFSET: usize = 0x248;
const PAYLOAD_LENGTH: usize = 0x24c;
/// Boot protocol 2.08 introduced `payload_offset`/`payload_length`.
const VERSION_AT: usize = 0x206;
const MIN_VERSION: u16 = 0x0208;

const LZ4_LEGACY_MAGIC: u32 = 0x184c_2102;
/// The largest block the legacy format produces.
const LZ4_LEGACY_BLOCK: usize = 8 << 20;

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at.checked_add(4)?).map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
}

/// Whether `image` looks like a bzImage (the setup header's magic).
pub fn is_bzimage(image: &[u8]) -> bool {
    image.get(HEADER_MAGIC_AT..HEADER_MAGIC_AT + 4) == Some(&HEADER_MAGIC[..])
}

/// The compressed payload of a bzImage.
pub fn payload(image: &[u8]) -> Result<&[u8], LoadError> {
    if !is_bzimage(image) {
        return Err(LoadError::UnknownFormat);
    }
    let version = image.get(VERSION_AT..VERSION_AT + 2).map(|v| u16::from_le_bytes([v[0], v[1]]));
    if version.is_none_or(|v| v < MIN_VERSION) {
        return Err(LoadError::UnknownFormat);
    }
    let sects = match image[SETUP_SECTS] {
        0 => 4,
        n => n as usize,
    };
    let offset = u32_at(image, PAYLOAD_OFFSET).ok_or(LoadError::Malformed)? as usize;
    let length = u32_at(image, PAYLOAD_LENGTH).ok_or(LoadError::Malformed)? as usize;
    let start = (sects + 1) * 512 + offset;
    image.get(start..start.checked_add(length).ok_or(LoadError::Malformed)?).ok_or(LoadError::Malformed)
}

/// The uncompressed size an LZ4 legacy payload announces in its last 4 bytes.
pub fn lz4_uncompressed_size(payload: &[u8]) -> Result<usize, LoadError> {
    if u32_at(payload, 0) != Some(LZ4_LEGACY_MAGIC) {
        return Err(LoadError::UnknownFormat);
    }
    let n = payload.len().checked_sub(4).ok_or(LoadError::Malformed)?;
    Ok(u32_at(payload, n).ok_or(LoadError::Malformed)? as usize)
}

/// Decompress an LZ4 legacy payload into `out` (at least [`lz4_uncompressed_size`] bytes);
/// returns the number of bytes written.
pub fn lz4_legacy_decompress(payload: &[u8], out: &mut [u8]) -> Result<usize, LoadError> {
    let total = lz4_uncompressed_size(payload)?;
    if out.len() < total {
        return Err(LoadError::TooLarge);
    }
    // Blocks end where the appended size starts.
    let body = &payload[..payload.len() - 4];
    let mut at = 4usize;
    let mut done = 0usize;
    while done < total {
        let size = u32_at(body, at).ok_or(LoadError::Malformed)? as usize;
        at += 4;
        if size == LZ4_LEGACY_MAGIC as usize {
            // Concatenated streams repeat the magic.
            continue;
        }
        let block = body.get(at..at.checked_add(size).ok_or(LoadError::Malformed)?).ok_or(LoadError::Malformed)?;
        at += size;
        let room = (total - done).min(LZ4_LEGACY_BLOCK);
        let n =
            lz4_flex::block::decompress_into(block, &mut out[done..done + room]).map_err(|_| LoadError::Malformed)?;
        if n == 0 {
            return Err(LoadError::Malformed);
        }
        done += n;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bzImage around `payload`: 2 setup sectors + boot sector, header v2.15.
    pub fn bzimage(payload: &[u8]) -> Vec<u8> {
        let mut img = vec![0u8; 3 * 512];
        img[SETUP_SECTS] = 2;
        img[HEADER_MAGIC_AT..HEADER_MAGIC_AT + 4].copy_from_slice(HEADER_MAGIC);
        img[VERSION_AT..VERSION_AT + 2].copy_from_slice(&0x020fu16.to_le_bytes());
        img[PAYLOAD_OFFSET..PAYLOAD_OFFSET + 4].copy_from_slice(&0x10u32.to_le_bytes());
        img[PAYLOAD_LENGTH..PAYLOAD_LENGTH + 4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        img.extend_from_slice(&[0xee; 0x10]);
        img.extend_from_slice(payload);
        img.extend_from_slice(&[0xcc; 64]);
        img
    }

    /// The legacy LZ4 container `lz4 -l` writes, with the kernel build's size appended.
    pub fn lz4_legacy(data: &[u8], block: usize) -> Vec<u8> {
        let mut out = LZ4_LEGACY_MAGIC.to_le_bytes().to_vec();
        for chunk in data.chunks(block) {
            let c = lz4_flex::block::compress(chunk);
            out.extend_from_slice(&(c.len() as u32).to_le_bytes());
            out.extend_from_slice(&c);
        }
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out
    }

    fn sample(len: usize) -> Vec<u8> {
        (0..len).map(|i| ((i * 7) ^ (i >> 9)) as u8).collect()
    }

    #[test]
    fn payload_is_found_and_decompresses_byte_exact() {
        let data = sample(3 * LZ4_LEGACY_BLOCK / 2 + 12345);
        let img = bzimage(&lz4_legacy(&data, LZ4_LEGACY_BLOCK));
        let p = payload(&img).unwrap();
        assert_eq!(lz4_uncompressed_size(p), Ok(data.len()));
        let mut out = vec![0u8; data.len()];
        assert_eq!(lz4_legacy_decompress(p, &mut out), Ok(data.len()));
        assert!(out == data);
    }

    #[test]
    fn bad_images_are_errors() {
        assert_eq!(payload(&[0u8; 100]), Err(LoadError::UnknownFormat));
        let data = sample(100_000);
        let good = lz4_legacy(&data, 64 << 10);
        // Too small an output buffer.
        assert_eq!(lz4_legacy_decompress(&good, &mut [0u8; 10]), Err(LoadError::TooLarge));
        // Truncated blocks.
        let mut cut = good[..good.len() / 2].to_vec();
        cut.extend_from_slice(&(data.len() as u32).to_le_bytes());
        assert_eq!(lz4_legacy_decompress(&cut, &mut vec![0u8; data.len()]), Err(LoadError::Malformed));
        // Not LZ4 legacy.
        assert_eq!(lz4_uncompressed_size(&[0x1f, 0x8b, 0, 0, 0, 0, 0, 0]), Err(LoadError::UnknownFormat));
        // A payload length reaching past the image.
        let mut img = bzimage(&good);
        img[PAYLOAD_LENGTH..PAYLOAD_LENGTH + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(payload(&img), Err(LoadError::Malformed));
        // A block size reaching past the payload.
        let mut bad = good.clone();
        bad[4..8].copy_from_slice(&0x7fff_0000u32.to_le_bytes());
        assert_eq!(lz4_legacy_decompress(&bad, &mut vec![0u8; data.len()]), Err(LoadError::Malformed));
    }
}
