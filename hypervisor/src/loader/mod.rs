//! Guest kernel images: recognise the format and place it into the domain's RAM.
//!
//! Loaders work on a byte slice that stands for guest RAM, so they are tested on the host.

pub mod arm;
pub mod bzimage;
pub mod pvh_elf;

/// A kernel placed in guest RAM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placed {
    /// Offset of the entry point from the start of guest RAM.
    pub entry_offset: u64,
    /// Bytes of guest RAM used by the image, from its start.
    pub end_offset: u64,
    /// A 32-bit kernel (ELF32 on x86): it may know nothing of the x2APIC.
    pub elf32: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadError {
    /// The image is not in a format this loader knows.
    UnknownFormat,
    /// The image does not fit in the domain's RAM.
    TooLarge,
    /// The image says it is in a known format but its contents are inconsistent.
    Malformed,
}
