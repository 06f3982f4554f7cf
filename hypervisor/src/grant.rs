//! Grant tables v1: what a domain lends and what it borrows.
//!
//! A domain lends pages by writing entries (`grant_entry_v1`: flags, the one domain allowed,
//! its own frame number) into its grant frames, pages it shares with the hypervisor. Another
//! domain maps such a grant into its own guest-physical space and gets a handle to unmap it
//! with. While a grant is mapped, the lender's entry is *active*: its frame and grantee are
//! latched, and the `GTF_reading` / `GTF_writing` bits in the shared entry tell the lender it
//! must not revoke it yet (Linux's `gnttab_end_foreign_access` checks them).
//!
//! This module is the bookkeeping only, plain data both sides of a mapping update:
//! [`Grants::active`] on the lender, [`Grants::maptrack`] on the borrower. The hypercall layer
//! (`hypercall::grant_map`) ties it to the stage-2/EPT/NPT changes.

use crate::page::{HostPage, PAGE_SIZE};
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use guest_abi::grant_table::{self as gt, GrantEntryV1};

/// Mappings of others' grants one domain may hold at once (Xen's default allows more; a
/// backend for 63 clients with a ring and a few data pages each stays far below).
pub const MAX_MAPTRACK: usize = 4096;
/// Version-1 entries in one grant-table frame.
pub const ENTRIES_PER_FRAME: usize = PAGE_SIZE / size_of::<GrantEntryV1>();

/// One mapping a domain holds of another's grant (a maptrack entry).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// The lender and its grant reference.
    pub granter: u16,
    pub gref: u32,
    /// Where the borrower sees the page (page aligned).
    pub gpa: u64,
    /// The lent page in host memory (what `dev_bus_addr` reports).
    pub hpa: u64,
    pub readonly: bool,
}

/// A lent entry somebody has mapped: who, which frame, how many mappings of each kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Active {
    pub mapper: u16,
    pub gfn: u64,
    pub readers: u32,
    pub writers: u32,
}

/// A domain's grant state beyond its shared frames.
#[derive(Debug, Default)]
pub struct Grants {
    /// Handle `h` is `maptrack[h]`; `None` is a free handle.
    maptrack: Vec<Option<Mapping>>,
    free: Vec<u32>,
    /// Guest frame → handle of the mapping there: one grant mapping per page of the
    /// borrower's space, so an unmap never takes away a page another mapping put there.
    by_gpa: BTreeMap<u64, u32>,
    /// This domain's entries that are mapped now, by grant reference.
    active: BTreeMap<u32, Active>,
}

impl Grants {
    /// Record a new mapping; its handle, or `GNTST_no_device_space` when the table is full.
    pub fn track(&mut self, m: Mapping) -> Result<u32, i16> {
        let handle = match self.free.pop() {
            Some(h) => h,
            None if self.maptrack.len() < MAX_MAPTRACK && self.maptrack.try_reserve(1).is_ok() => {
                self.maptrack.push(None);
                self.maptrack.len() as u32 - 1
            }
            None => return Err(gt::GNTST_NO_DEVICE_SPACE),
        };
        self.maptrack[handle as usize] = Some(m);
        self.by_gpa.insert(m.gpa, handle);
        Ok(handle)
    }

    /// Whether another mapping could be tracked now.
    pub fn has_room(&self) -> bool {
        !self.free.is_empty() || self.maptrack.len() < MAX_MAPTRACK
    }

    /// Whether a grant mapping occupies the page at `gpa`.
    pub fn occupied(&self, gpa: u64) -> bool {
        self.by_gpa.contains_key(&gpa)
    }

    /// The mapping behind `handle`, if it is in use.
    pub fn mapping(&self, handle: u32) -> Option<Mapping> {
        *self.maptrack.get(usize::try_from(handle).ok()?)?
    }

    /// Give `handle` back; the mapping it held.
    pub fn untrack(&mut self, handle: u32) -> Option<Mapping> {
        let m = self.maptrack.get_mut(usize::try_from(handle).ok()?)?.take()?;
        self.free.push(handle);
        self.by_gpa.remove(&m.gpa);
        Some(m)
    }

    /// Every mapping held now, with its handle.
    pub fn mappings(&self) -> impl Iterator<Item = (u32, Mapping)> + '_ {
        self.maptrack.iter().enumerate().filter_map(|(h, m)| Some((h as u32, (*m)?)))
    }

    /// How many mappings are held now.
    pub fn mapped_count(&self) -> usize {
        self.maptrack.len() - self.free.len()
    }

    /// The active entry for `gref`, if it is mapped.
    pub fn active(&self, gref: u32) -> Option<Active> {
        self.active.get(&gref).copied()
    }

    /// Bytes of hypervisor heap this domain's grant bookkeeping holds.
    pub fn heap_bytes(&self) -> usize {
        self.maptrack.capacity() * size_of::<Option<Mapping>>()
            + self.free.capacity() * 4
            + self.by_gpa.len() * (8 + 4 + 16)
            + self.active.len() * (size_of::<Active>() + 4 + 16)
    }
}

/// Entry `gref` of a version-1 table held in `frames`.
pub fn entry(frames: &[HostPage], gref: u32) -> Option<GrantEntryV1> {
    let (page, at) = locate(frames, gref)?;
    let d = &frames[page].data;
    Some(GrantEntryV1 {
        flags: u16::from_ne_bytes([d[at], d[at + 1]]),
        domid: u16::from_ne_bytes([d[at + 2], d[at + 3]]),
        frame: frames[page].u32_at(at + 4),
    })
}

/// Entries a table of `frames` holds.
pub fn nr_entries(frames: &[HostPage]) -> u32 {
    (frames.len() * ENTRIES_PER_FRAME) as u32
}

fn locate(frames: &[HostPage], gref: u32) -> Option<(usize, usize)> {
    let index = usize::try_from(gref).ok()?;
    let page = index / ENTRIES_PER_FRAME;
    (page < frames.len()).then_some((page, index % ENTRIES_PER_FRAME * size_of::<GrantEntryV1>()))
}

/// Set and clear bits of entry `gref`'s flags, leaving the guest's other bits as they are.
fn update_flags(frames: &mut [HostPage], gref: u32, set: u16, clear: u16) {
    if let Some((page, at)) = locate(frames, gref) {
        let d = &mut frames[page].data;
        let flags = (u16::from_ne_bytes([d[at], d[at + 1]]) | set) & !clear;
        d[at..at + 2].copy_from_slice(&flags.to_ne_bytes());
    }
}

/// Pin lender entry `gref` for one more mapping by domain `mapper`: the frame it lends.
///
/// In Xen's order: an entry already mapped by another domain, or one whose shared entry does
/// not permit `mapper` (wrong type or domain, read-only for a writable mapping) is
/// `GNTST_general_error`; a reference past the table is `GNTST_bad_gntref`. The shared entry
/// is read only when the entry becomes active or gains its first writer; after that its frame
/// stays latched until the last mapping goes.
pub fn pin(frames: &mut [HostPage], grants: &mut Grants, mapper: u16, gref: u32, readonly: bool) -> Result<u64, i16> {
    let shared = entry(frames, gref).ok_or(gt::GNTST_BAD_GNTREF)?;
    let active = grants.active.get(&gref).copied();
    if active.is_some_and(|a| a.mapper != mapper) {
        return Err(gt::GNTST_GENERAL_ERROR);
    }
    let check_shared = active.is_none_or(|a| !readonly && a.writers == 0);
    if check_shared {
        let permits = shared.flags & gt::GTF_TYPE_MASK == gt::GTF_PERMIT_ACCESS && shared.domid == mapper;
        if !permits || (!readonly && shared.flags & gt::GTF_READONLY != 0) {
            return Err(gt::GNTST_GENERAL_ERROR);
        }
        let writing = if readonly { 0 } else { gt::GTF_WRITING };
        update_flags(frames, gref, gt::GTF_READING | writing, 0);
    }
    let a =
        grants.active.entry(gref).or_insert(Active { mapper, gfn: u64::from(shared.frame), readers: 0, writers: 0 });
    if readonly {
        a.readers += 1;
    } else {
        a.writers += 1;
    }
    Ok(a.gfn)
}

/// Drop one mapping's pin on lender entry `gref`: `GTF_writing` goes with the last writer,
/// `GTF_reading` and the active entry with the last mapping.
pub fn unpin(frames: &mut [HostPage], grants: &mut Grants, gref: u32, readonly: bool) {
    let Some(a) = grants.active.get_mut(&gref) else { return };
    if readonly {
        a.readers = a.readers.saturating_sub(1);
    } else {
        a.writers = a.writers.saturating_sub(1);
    }
    let mut clear = 0;
    if a.writers == 0 {
        clear |= gt::GTF_WRITING;
    }
    if a.readers == 0 && a.writers == 0 {
        clear |= gt::GTF_READING;
        grants.active.remove(&gref);
    }
    update_flags(frames, gref, 0, clear);
}

#[cfg(test)]
mod tests;
