//! Reaching guest memory by guest-virtual address, for hypercall arguments.
//!
//! Each page is translated through the guest's own page tables ([`crate::x86::walk`]) and
//! must land inside the domain's RAM, on a frame no hypervisor page covers ([`HiddenFrames`]);
//! the copy then goes through the host identity map.

use crate::exit::BadGuestAddress;
use crate::x86::hidden::HiddenFrames;
use crate::x86::walk::{self, PagingMode};

const PAGE: u64 = 4096;

/// One domain's RAM: `size` bytes at guest-physical `guest`, host-physical `host`.
#[derive(Clone, Copy, Debug)]
pub struct GuestRam {
    pub host: u64,
    pub guest: u64,
    pub size: u64,
}

/// The guest's translation state at the time of the copy.
#[derive(Clone, Copy, Debug)]
pub struct Translation {
    pub mode: PagingMode,
    pub cr3: u64,
}

impl GuestRam {
    pub fn contains(&self, gpa: u64) -> bool {
        gpa.checked_sub(self.guest).is_some_and(|off| off < self.size)
    }

    /// Host address of `[gpa, gpa + len)` if all of it is domain RAM the guest sees there.
    fn host_range(&self, gpa: u64, len: u64, hidden: &HiddenFrames) -> Option<u64> {
        let off = gpa.checked_sub(self.guest)?;
        let inside = off.checked_add(len)? <= self.size && !hidden.hides(gpa, len);
        inside.then_some(self.host + off)
    }

    /// A page-table entry of `width` bytes at `gpa`, only from domain RAM.
    fn read_entry(&self, gpa: u64, width: usize, hidden: &HiddenFrames) -> Option<u64> {
        let host = self.host_range(gpa, width as u64, hidden)?;
        let bytes = super::phys_slice(host, width as u64);
        let mut v = [0u8; 8];
        v[..width].copy_from_slice(bytes);
        Some(u64::from_le_bytes(v))
    }

    /// Visit `[gva, gva + len)` page by page as (host address, offset in the buffer, length).
    fn for_each_chunk(
        &self,
        tr: Translation,
        gva: u64,
        len: usize,
        hidden: &HiddenFrames,
        mut f: impl FnMut(u64, usize, usize),
    ) -> Result<(), BadGuestAddress> {
        let mut done = 0usize;
        while done < len {
            let va = gva.checked_add(done as u64).ok_or(BadGuestAddress(gva))?;
            let chunk = ((PAGE - va % PAGE) as usize).min(len - done);
            let gpa = self.guest_phys(tr, va, hidden).ok_or(BadGuestAddress(va))?;
            let host = self.host_range(gpa, chunk as u64, hidden).ok_or(BadGuestAddress(va))?;
            f(host, done, chunk);
            done += chunk;
        }
        Ok(())
    }

    /// The guest-physical address `gva` maps to under `tr`, if its page tables are in RAM.
    pub fn guest_phys(&self, tr: Translation, gva: u64, hidden: &HiddenFrames) -> Option<u64> {
        let mut reader = |gpa: u64, width: usize| self.read_entry(gpa, width, hidden);
        walk::translate(tr.mode, tr.cr3, gva, &mut reader)
    }

    /// Copy from guest-physical `[gpa, gpa + len)`, RAM only.
    pub fn read_phys(&self, gpa: u64, buf: &mut [u8], hidden: &HiddenFrames) -> Result<(), BadGuestAddress> {
        let host = self.host_range(gpa, buf.len() as u64, hidden).ok_or(BadGuestAddress(gpa))?;
        buf.copy_from_slice(super::phys_slice(host, buf.len() as u64));
        Ok(())
    }

    /// Copy to guest-physical `[gpa, gpa + len)`, RAM only.
    pub fn write_phys(&self, gpa: u64, buf: &[u8], hidden: &HiddenFrames) -> Result<(), BadGuestAddress> {
        let host = self.host_range(gpa, buf.len() as u64, hidden).ok_or(BadGuestAddress(gpa))?;
        // SAFETY: as in `copy_to`: the range is this domain's RAM, identity mapped, with no
        // live Rust slice over it while the vCPU is stopped; `buf` is hypervisor memory.
        unsafe { core::ptr::copy_nonoverlapping(buf.as_ptr(), host as *mut u8, buf.len()) };
        Ok(())
    }

    pub fn copy_from(
        &self,
        tr: Translation,
        gva: u64,
        buf: &mut [u8],
        hidden: &HiddenFrames,
    ) -> Result<(), BadGuestAddress> {
        // Translate everything first so a bad page leaves `buf` untouched by later pages too.
        self.for_each_chunk(tr, gva, buf.len(), hidden, |_, _, _| {})?;
        self.for_each_chunk(tr, gva, buf.len(), hidden, |host, at, n| {
            buf[at..at + n].copy_from_slice(super::phys_slice(host, n as u64));
        })
    }

    pub fn copy_to(&self, tr: Translation, gva: u64, buf: &[u8], hidden: &HiddenFrames) -> Result<(), BadGuestAddress> {
        // All-or-nothing: never leave a half-written structure in the guest.
        self.for_each_chunk(tr, gva, buf.len(), hidden, |_, _, _| {})?;
        self.for_each_chunk(tr, gva, buf.len(), hidden, |host, at, n| {
            let dst = host as *mut u8;
            // SAFETY: `host..host + n` lies inside this domain's RAM (checked by
            // `host_range`), identity mapped and not referenced by any live Rust slice while
            // the vCPU is stopped in a hypercall; `buf` is hypervisor memory, so no overlap.
            unsafe { core::ptr::copy_nonoverlapping(buf[at..].as_ptr(), dst, n) };
        })
    }
}
