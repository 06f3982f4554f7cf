//! x86 `bzImage`: the real-mode setup sectors, then a compressed `vmlinux` ELF.
//!
//! Three payload formats are understood. The LZ4 "legacy" container (Debian 12's
//! cloud-amd64 kernel): the magic `0x184C2102`, then blocks of a little-endian `u32`
//! compressed size and the LZ4 block itself, each decompressing to at most 8 MiB. An XZ
//! stream (Debian's 686-pae kernel: LZMA2 behind the x86 BCJ filter, CRC32 checks). And one
//! zstd frame (Linux 6.12's amd64 kernels in Debian: `zstd -22 --ultra`, which declares a
//! 128 MiB window). Either way the kernel build appends the uncompressed size as a final
//! `u32`. The image is untrusted: every size is checked, and a bad image is an error, never a
//! panic.

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

const XZ_MAGIC: &[u8; 6] = b"\xfd7zXZ\0";
const ZSTD_MAGIC: u32 = 0xfd2f_b528;

/// How a bzImage's payload is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    Lz4Legacy,
    Xz,
    Zstd,
}

/// The payload's format, from its magic.
pub fn compression(payload: &[u8]) -> Result<Compression, LoadError> {
    if u32_at(payload, 0) == Some(LZ4_LEGACY_MAGIC) {
        Ok(Compression::Lz4Legacy)
    } else if payload.starts_with(XZ_MAGIC) {
        Ok(Compression::Xz)
    } else if u32_at(payload, 0) == Some(ZSTD_MAGIC) {
        Ok(Compression::Zstd)
    } else {
        Err(LoadError::UnknownFormat)
    }
}

/// The uncompressed size a payload of a known format announces in its last 4 bytes.
pub fn uncompressed_size(payload: &[u8]) -> Result<usize, LoadError> {
    compression(payload)?;
    let n = payload.len().checked_sub(4).ok_or(LoadError::Malformed)?;
    Ok(u32_at(payload, n).ok_or(LoadError::Malformed)? as usize)
}

/// Bytes of scratch memory [`decompress`] needs for `payload` besides its output.
pub fn scratch_size(payload: &[u8]) -> Result<usize, LoadError> {
    Ok(match compression(payload)? {
        Compression::Lz4Legacy => 0,
        Compression::Xz => XZ_DICT_MAX,
        Compression::Zstd => {
            // The decoder's history buffer (a power of two, plus two blocks), its tables and
            // block buffers (well under a MiB), and the allocator's own bookkeeping.
            let window = zstd_window(window_descriptor_for(uncompressed_size(payload)?));
            usize::try_from(window.next_power_of_two()).map_err(|_| LoadError::TooLarge)? + (4 << 20)
        }
    })
}

/// Decompress a payload into `out` (at least [`uncompressed_size`] bytes) with `scratch` (at
/// least [`scratch_size`] bytes) for the decoder's own state: an XZ stream's dictionary, a
/// zstd frame's window (`scratch` is lent to the heap while it decodes). Returns the number
/// of bytes written; `scratch` is left dirty.
pub fn decompress(payload: &[u8], out: &mut [u8], scratch: &mut [u8]) -> Result<usize, LoadError> {
    match compression(payload)? {
        Compression::Lz4Legacy => lz4_legacy_decompress(payload, out),
        // A stream whose dictionary is larger than `scratch` is refused by the decoder.
        Compression::Xz => {
            let dict_at = scratch.len().saturating_sub(XZ_DICT_MAX);
            xz_decompress(payload, out, &mut scratch[dict_at..])
        }
        Compression::Zstd => {
            if scratch.len() < scratch_size(payload)? {
                return Err(LoadError::TooLarge);
            }
            let mut result = Err(LoadError::Malformed);
            crate::heap_loan::with_loan(scratch, &mut || result = zstd_decompress(payload, out));
            result
        }
    }
}

/// The largest XZ dictionary a kernel payload may ask for (Linux's x86 builds use 32 MiB).
const XZ_DICT_MAX: usize = 32 << 20;

/// Decompress a zstd payload (one frame, then the appended size) into `out`.
///
/// The decoder keeps as much history as the frame's declared window, allocated up front:
/// Linux's 128 MiB. No match can reach back past the start of the output, so a window of the
/// output's size decodes the same bytes: the frame header's window descriptor is lowered to
/// the smallest window that holds the whole output before the decoder reads it.
pub fn zstd_decompress(payload: &[u8], out: &mut [u8]) -> Result<usize, LoadError> {
    use ruzstd::decoding::{BlockDecodingStrategy, FrameDecoder};
    use ruzstd::io::Read;
    let total = uncompressed_size(payload)?;
    if out.len() < total {
        return Err(LoadError::TooLarge);
    }
    let frame = &payload[..payload.len() - 4];
    // Magic, frame header descriptor, window descriptor. Only the frame Linux's build writes
    // (`zstd -22 --ultra` reading a pipe) is taken: no content size (a single-segment frame's
    // window would be its declared size, not ours to bound) and no dictionary.
    let mut head = [0u8; 6];
    head.copy_from_slice(frame.get(..6).ok_or(LoadError::Malformed)?);
    if head[4] & ZSTD_FHD_UNSUPPORTED != 0 {
        return Err(LoadError::UnknownFormat);
    }
    head[5] = head[5].min(window_descriptor_for(total));
    let mut decoder = FrameDecoder::new();
    decoder.set_max_window_size(ZSTD_WINDOW_MAX);
    // The first reset makes the decoder's state and would let its history buffer grow by
    // doubling as output comes (two buffers live at each step, and first-fit placement can
    // leave no gap for the next); a second one on the same header reserves the window at once.
    decoder.reset(&head[..]).map_err(|_| LoadError::Malformed)?;
    let mut source = Chain { first: &head[..], second: &frame[head.len()..] };
    decoder.reset(&mut source).map_err(|_| LoadError::Malformed)?;
    // No further than a block past the announced size, so the history stays in its reserve
    // (a frame that makes more is malformed, and must not grow the buffer past the loan).
    decoder
        .decode_blocks(&mut source, BlockDecodingStrategy::UptoBytes(total + 1))
        .map_err(|_| LoadError::Malformed)?;
    if !decoder.is_finished() || decoder.can_collect() != total || !source.is_empty() {
        return Err(LoadError::Malformed);
    }
    let n = decoder.read(&mut out[..total]).map_err(|_| LoadError::Malformed)?;
    if n == total { Ok(n) } else { Err(LoadError::Malformed) }
}

/// Frame header descriptor bits of what [`zstd_decompress`] does not take: a content size
/// field (bits 7:6), single segment (5), the reserved bit (3), a dictionary id (1:0).
const ZSTD_FHD_UNSUPPORTED: u8 = 0b1110_1011;

/// The largest window a payload's frame may still declare after [`window_descriptor_for`]
/// (its output is at most 4 GiB, its `u32` size).
const ZSTD_WINDOW_MAX: u64 = 1 << 32;

/// The zstd window descriptor (exponent << 3 | mantissa: 2^(10 + e) × (1 + m/8) bytes) of the
/// smallest window of at least `size` bytes. Descriptors order as their windows do.
fn window_descriptor_for(size: usize) -> u8 {
    (0u8..=255).find(|&d| zstd_window(d) >= size as u64).unwrap_or(u8::MAX)
}

fn zstd_window(descriptor: u8) -> u64 {
    let base = 1u64 << (10 + (descriptor >> 3));
    base + base / 8 * u64::from(descriptor & 7)
}

/// Two slices read one after the other: the rewritten frame header, then the rest.
struct Chain<'a> {
    first: &'a [u8],
    second: &'a [u8],
}

impl Chain<'_> {
    fn is_empty(&self) -> bool {
        self.first.is_empty() && self.second.is_empty()
    }
}

impl ruzstd::io::Read for Chain<'_> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, ruzstd::io::Error> {
        if self.first.is_empty() { self.second.read(buf) } else { self.first.read(buf) }
    }
}

/// Decompress an XZ payload (the stream, then the appended size) into `out`.
pub fn xz_decompress(payload: &[u8], out: &mut [u8], dict: &mut [u8]) -> Result<usize, LoadError> {
    use xz4rust::{XzDecoder, XzError, XzNextBlockResult};
    let total = uncompressed_size(payload)?;
    if out.len() < total {
        return Err(LoadError::TooLarge);
    }
    let stream = &payload[..payload.len() - 4];
    let mut decoder = XzDecoder::with_fixed_size_dict(dict);
    let (mut input, mut done) = (0usize, 0usize);
    loop {
        let r = decoder.decode(&stream[input..], &mut out[done..total]);
        match r {
            Ok(XzNextBlockResult::EndOfStream(_, made)) => {
                done += made;
                return if done == total { Ok(done) } else { Err(LoadError::Malformed) };
            }
            Ok(XzNextBlockResult::NeedMoreData(used, made)) => {
                if used == 0 && made == 0 {
                    // Out of input before the end of the stream, or out of room.
                    return Err(if done == total { LoadError::TooLarge } else { LoadError::Malformed });
                }
                input += used;
                done += made;
            }
            Err(XzError::DictionaryTooLarge(_)) => return Err(LoadError::TooLarge),
            Err(_) => return Err(LoadError::Malformed),
        }
    }
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

    /// `data` as `xz --format=xz --check=crc32 --x86 --lzma2=dict=1MiB` writes it (made once
    /// with Python's lzma module, which wraps the same liblzma), then the appended size.
    fn xz_payload() -> (Vec<u8>, Vec<u8>) {
        let data = sample(200_000);
        let mut p = include_bytes!("testdata/sample-200000.xz").to_vec();
        p.extend_from_slice(&(data.len() as u32).to_le_bytes());
        (data, p)
    }

    #[test]
    fn xz_payloads_decompress_byte_exact_through_the_bcj_filter() {
        let (data, p) = xz_payload();
        let img = bzimage(&p);
        let p = payload(&img).unwrap();
        assert_eq!((compression(p), uncompressed_size(p)), (Ok(Compression::Xz), Ok(data.len())));
        let mut out = vec![0u8; data.len()];
        let mut dict = vec![0u8; 1 << 20];
        assert_eq!(decompress(p, &mut out, &mut dict), Ok(data.len()));
        assert!(out == data);
        // Too small a dictionary or output, a corrupted or truncated stream: errors.
        assert_eq!(decompress(p, &mut out, &mut vec![0u8; 64 << 10]), Err(LoadError::TooLarge));
        assert_eq!(decompress(p, &mut [0u8; 100], &mut dict), Err(LoadError::TooLarge));
        let mut bad = p.to_vec();
        bad[200] ^= 0x55;
        assert_eq!(decompress(&bad, &mut out, &mut dict), Err(LoadError::Malformed));
        let mut cut = p[..p.len() / 2].to_vec();
        cut.extend_from_slice(&(data.len() as u32).to_le_bytes());
        assert_eq!(decompress(&cut, &mut out, &mut dict), Err(LoadError::Malformed));
    }

    /// A zstd payload as Linux's build makes it: one frame that declares a 128 MiB window
    /// (`zstd -22 --ultra` reading a pipe), then the size.
    fn zstd_payload(data: &[u8]) -> Vec<u8> {
        use ruzstd::encoding::{CompressionLevel, compress_to_vec};
        let mut p = compress_to_vec(data, CompressionLevel::Fastest);
        assert_eq!(p[4] & 0x20, 0, "the encoder wrote a window descriptor");
        p[5] = 17 << 3; // 2^(10 + 17) bytes
        p.extend_from_slice(&(data.len() as u32).to_le_bytes());
        p
    }

    #[test]
    fn zstd_payloads_decompress_byte_exact_in_a_window_of_their_size() {
        let data = sample(300_000);
        let img = bzimage(&zstd_payload(&data));
        let p = payload(&img).unwrap();
        assert_eq!((compression(p), uncompressed_size(p)), (Ok(Compression::Zstd), Ok(data.len())));
        // Not the declared 128 MiB: the output's size (in 1/8 steps of a power of two),
        // rounded up to a power of two as the decoder's buffer is, plus 4 MiB.
        assert_eq!(zstd_window(window_descriptor_for(data.len())), 320 << 10);
        assert_eq!(scratch_size(p), Ok((512 << 10) + (4 << 20)));
        let mut out = vec![0u8; data.len()];
        let mut scratch = vec![0u8; scratch_size(p).unwrap()];
        assert_eq!(decompress(p, &mut out, &mut scratch), Ok(data.len()));
        assert!(out == data);
        // Too little scratch or output, a corrupted or truncated frame, trailing bytes: errors.
        assert_eq!(decompress(p, &mut out, &mut vec![0u8; 1 << 20]), Err(LoadError::TooLarge));
        assert_eq!(decompress(p, &mut [0u8; 100], &mut scratch), Err(LoadError::TooLarge));
        let mut bad = p.to_vec();
        let mid = bad.len() / 2;
        bad[mid] ^= 0x55;
        assert_ne!(decompress(&bad, &mut out, &mut scratch).map(|_| out == data), Ok(true));
        let mut cut = p[..p.len() / 2].to_vec();
        cut.extend_from_slice(&(data.len() as u32).to_le_bytes());
        assert_eq!(decompress(&cut, &mut out, &mut scratch), Err(LoadError::Malformed));
        // More output than announced stops a block past it: malformed, nothing grows.
        let mut short = p[..p.len() - 4].to_vec();
        short.extend_from_slice(&(data.len() as u32 / 2).to_le_bytes());
        assert_eq!(decompress(&short, &mut out, &mut scratch), Err(LoadError::Malformed));
        // A frame with a content size (single segment) or a dictionary is not Linux's.
        for fhd in [0x20, 0x40, 0x01] {
            let mut other = p.to_vec();
            other[4] |= fhd;
            assert_eq!(decompress(&other, &mut out, &mut scratch), Err(LoadError::UnknownFormat), "{fhd:#x}");
        }
        let mut longer = p[..p.len() - 4].to_vec();
        longer.extend_from_slice(&[0; 8]);
        longer.extend_from_slice(&(data.len() as u32).to_le_bytes());
        assert_eq!(decompress(&longer, &mut out, &mut scratch), Err(LoadError::Malformed));
    }

    #[test]
    fn zstd_window_descriptors_are_the_smallest_that_hold_the_output() {
        assert_eq!(zstd_window(0), 1 << 10);
        assert_eq!(zstd_window(17 << 3), 128 << 20);
        assert_eq!(zstd_window((15 << 3) | 6), 56 << 20); // 2^25 × 14/8
        // Debian's 6.12 amd64 vmlinux: 57,573,156 bytes.
        assert_eq!(zstd_window(window_descriptor_for(57_573_156)), 56 << 20);
        for size in [1usize, 1024, 1025, 300_000, 57_573_156, u32::MAX as usize] {
            let d = window_descriptor_for(size);
            assert!(zstd_window(d) >= size as u64 && (d == 0 || zstd_window(d - 1) < size as u64), "{size}");
        }
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
