//! Grant map/unmap through the hypercall path, between domains with fake address spaces,
//! and random operation sequences from three domains against a reference model.

use super::*;
use crate::domain::Others;
use crate::hypercall::grant_table_op;
use crate::hypercall::testing::{FakeVcpu, domain_with_xen_pages};
use crate::page::GuestRam;
use alloc::boxed::Box;
use alloc::vec::Vec;
use core::sync::atomic::AtomicU32;
use proptest::prelude::*;
use std::collections::BTreeMap;
use zerocopy::{FromBytes, IntoBytes};

/// Guest frame of every test domain's first RAM page; each has `RAM_PAGES` pages.
const RAM_GFN: u64 = 0x100;
const RAM_PAGES: u64 = 4;

/// Domains 1..=n, each with grant frames, RAM, and a fake vCPU (its address space).
fn world(n: u16) -> (Vec<Domain>, Vec<FakeVcpu>) {
    let mut domains = Vec::new();
    let mut vcpus = Vec::new();
    for id in 1..=n {
        let mut vcpu = FakeVcpu::new(4096);
        let mut d = domain_with_xen_pages(&mut vcpu);
        d.id = id;
        let words: &'static [AtomicU32] = Box::leak((0..RAM_PAGES * 1024).map(|_| AtomicU32::new(0)).collect());
        d.ram = Some(GuestRam { base: RAM_GFN * 4096, host: host_base(id), words });
        domains.push(d);
        vcpus.push(vcpu);
    }
    let ids: Vec<u16> = domains.iter().map(|d| d.id).collect();
    domains.iter_mut().for_each(|d| d.known_domains.clone_from(&ids));
    (domains, vcpus)
}

fn host_base(id: u16) -> u64 {
    u64::from(id) << 32
}

/// Domain `granter` (1-based) writes entry `gref` as its guest would.
fn grant(ds: &mut [Domain], granter: u16, gref: u32, flags: u16, domid: u16, frame: u32) {
    let frames = &mut ds[usize::from(granter - 1)].xen.as_mut().unwrap().grant_frames;
    let (page, at) = (gref as usize / grant::ENTRIES_PER_FRAME, gref as usize % grant::ENTRIES_PER_FRAME * 8);
    frames[page].data[at..at + 2].copy_from_slice(&flags.to_ne_bytes());
    frames[page].data[at + 2..at + 4].copy_from_slice(&domid.to_ne_bytes());
    frames[page].set_u32(at + 4, frame);
}

fn flags(ds: &[Domain], granter: u16, gref: u32) -> u16 {
    grant::entry(&ds[usize::from(granter - 1)].xen.as_ref().unwrap().grant_frames, gref).unwrap().flags
}

/// Domain `mapper` maps `granter`'s `gref` at guest-physical `gpa`: the operation as the guest
/// reads it back.
fn map(ds: &mut [Domain], vs: &mut [FakeVcpu], mapper: u16, op: GnttabMapGrantRef) -> GnttabMapGrantRef {
    let v = &mut vs[usize::from(mapper - 1)];
    v.mem[..32].copy_from_slice(op.as_bytes());
    let (d, mut peers) = Others::split(ds, usize::from(mapper - 1));
    assert_eq!(grant_table_op::handle(d, &mut peers, v, gt::GNTTABOP_MAP_GRANT_REF, 0, 1), Ok(0));
    GnttabMapGrantRef::read_from_bytes(&v.mem[..32]).unwrap()
}

fn map_op(granter: u16, gref: u32, gpa: u64, readonly: bool) -> GnttabMapGrantRef {
    let ro = if readonly { gt::GNTMAP_READONLY } else { 0 };
    GnttabMapGrantRef {
        host_addr: gpa,
        flags: gt::GNTMAP_HOST_MAP | ro,
        r#ref: gref,
        dom: granter,
        ..Default::default()
    }
}

fn unmap(ds: &mut [Domain], vs: &mut [FakeVcpu], mapper: u16, handle: u32, gpa: u64) -> i16 {
    let v = &mut vs[usize::from(mapper - 1)];
    let op = GnttabUnmapGrantRef { host_addr: gpa, handle, ..Default::default() };
    v.mem[..24].copy_from_slice(op.as_bytes());
    let (d, mut peers) = Others::split(ds, usize::from(mapper - 1));
    assert_eq!(grant_table_op::handle(d, &mut peers, v, gt::GNTTABOP_UNMAP_GRANT_REF, 0, 1), Ok(0));
    GnttabUnmapGrantRef::read_from_bytes(&v.mem[..24]).unwrap().status
}

/// The teardown the run loop does when domain `dead` ends.
fn end(ds: &mut [Domain], vs: &mut [FakeVcpu], dead: u16) {
    let d = usize::from(dead - 1);
    let (dying, mut peers) = Others::split(ds, d);
    dying.dying = true;
    release_held(dying, &mut peers);
    for (o, vcpu) in vs.iter_mut().enumerate() {
        if o != d {
            let (lender, mapper) = crate::domain::pair_mut(ds, d, o);
            revoke_lent(lender, mapper, Some(vcpu as &mut dyn VirtualCpu));
        }
    }
}

const GPA: u64 = 0x9000_0000;

#[test]
fn a_read_write_map_puts_the_lent_page_at_the_address_and_marks_the_entry() {
    let (mut ds, mut vs) = world(2);
    grant(&mut ds, 1, 9, gt::GTF_PERMIT_ACCESS, 2, 0x102);
    let out = map(&mut ds, &mut vs, 2, map_op(1, 9, GPA + 0x10, false));
    assert_eq!(out.status, gt::GNTST_OKAY);
    let hpa = host_base(1) + 2 * 4096;
    assert_eq!(out.dev_bus_addr, hpa);
    assert_eq!(vs[1].grants.get(&GPA), Some(&(hpa, true)), "page aligned, writable");
    assert_eq!(flags(&ds, 1, 9), gt::GTF_PERMIT_ACCESS | gt::GTF_READING | gt::GTF_WRITING);
    assert_eq!(unmap(&mut ds, &mut vs, 2, out.handle, GPA), gt::GNTST_OKAY);
    assert!(vs[1].grants.is_empty());
    assert_eq!(flags(&ds, 1, 9), gt::GTF_PERMIT_ACCESS);
    // The handle is gone with the mapping.
    assert_eq!(unmap(&mut ds, &mut vs, 2, out.handle, GPA), gt::GNTST_BAD_HANDLE);
}

#[test]
fn writing_is_cleared_with_the_last_writer_and_reading_with_the_last_mapping() {
    let (mut ds, mut vs) = world(2);
    grant(&mut ds, 1, 3, gt::GTF_PERMIT_ACCESS, 2, 0x100);
    let ro = map(&mut ds, &mut vs, 2, map_op(1, 3, GPA, true));
    let rw = map(&mut ds, &mut vs, 2, map_op(1, 3, GPA + 0x1000, false));
    assert_eq!((ro.status, rw.status), (gt::GNTST_OKAY, gt::GNTST_OKAY));
    assert_eq!(vs[1].grants.get(&GPA).map(|g| g.1), Some(false), "read-only");
    assert_eq!(unmap(&mut ds, &mut vs, 2, rw.handle, GPA + 0x1000), gt::GNTST_OKAY);
    assert_eq!(flags(&ds, 1, 3), gt::GTF_PERMIT_ACCESS | gt::GTF_READING);
    assert_eq!(unmap(&mut ds, &mut vs, 2, ro.handle, GPA), gt::GNTST_OKAY);
    assert_eq!(flags(&ds, 1, 3), gt::GTF_PERMIT_ACCESS);
}

#[test]
fn refusals_get_xens_statuses() {
    let (mut ds, mut vs) = world(3);
    grant(&mut ds, 1, 1, gt::GTF_PERMIT_ACCESS | gt::GTF_READONLY, 2, 0x100);
    grant(&mut ds, 1, 2, gt::GTF_PERMIT_ACCESS, 3, 0x100);
    grant(&mut ds, 1, 4, gt::GTF_PERMIT_ACCESS, 2, 0x5000);
    grant(&mut ds, 1, 5, gt::GTF_ACCEPT_TRANSFER, 2, 0x100);
    let status = |ds: &mut [Domain], vs: &mut [FakeVcpu], op| map(ds, vs, 2, op).status;
    let mut no_host = map_op(1, 1, GPA, true);
    no_host.flags = gt::GNTMAP_READONLY;
    assert_eq!(status(&mut ds, &mut vs, no_host), gt::GNTST_BAD_GNTREF);
    let mut device = map_op(1, 1, GPA, true);
    device.flags |= gt::GNTMAP_DEVICE_MAP;
    assert_eq!(status(&mut ds, &mut vs, device), gt::GNTST_GENERAL_ERROR);
    assert_eq!(status(&mut ds, &mut vs, map_op(7, 1, GPA, true)), gt::GNTST_BAD_DOMAIN);
    assert_eq!(status(&mut ds, &mut vs, map_op(guest_abi::xen::DOMID_SELF, 1, GPA, true)), gt::GNTST_BAD_DOMAIN);
    assert_eq!(status(&mut ds, &mut vs, map_op(1, 1 << 20, GPA, true)), gt::GNTST_BAD_GNTREF);
    // Read-only grant mapped writable; another domain's grant; an unused entry's type.
    assert_eq!(status(&mut ds, &mut vs, map_op(1, 1, GPA, false)), gt::GNTST_GENERAL_ERROR);
    assert_eq!(status(&mut ds, &mut vs, map_op(1, 2, GPA, true)), gt::GNTST_GENERAL_ERROR);
    assert_eq!(status(&mut ds, &mut vs, map_op(1, 5, GPA, true)), gt::GNTST_GENERAL_ERROR);
    // A frame outside the lender's RAM; the backend refusing the address.
    assert_eq!(status(&mut ds, &mut vs, map_op(1, 4, GPA, true)), gt::GNTST_BAD_PAGE);
    vs[1].grant_limit = GPA;
    assert_eq!(status(&mut ds, &mut vs, map_op(1, 1, GPA, true)), gt::GNTST_GENERAL_ERROR);
    // Nothing stayed pinned or mapped by any refusal.
    for gref in [1, 2, 4, 5] {
        assert_eq!(flags(&ds, 1, gref) & (gt::GTF_READING | gt::GTF_WRITING), 0, "ref {gref}");
    }
    assert!(vs[1].grants.is_empty());
    assert_eq!(ds[1].grants.mapped_count(), 0);
}

#[test]
fn an_active_entry_keeps_its_mapper_and_frame() {
    let (mut ds, mut vs) = world(3);
    grant(&mut ds, 1, 6, gt::GTF_PERMIT_ACCESS, 2, 0x101);
    let first = map(&mut ds, &mut vs, 2, map_op(1, 6, GPA, true));
    assert_eq!(first.status, gt::GNTST_OKAY);
    // The lender rewrites the entry for domain 3 while domain 2 holds it: still domain 2's.
    grant(&mut ds, 1, 6, gt::GTF_PERMIT_ACCESS | gt::GTF_READING, 3, 0x103);
    assert_eq!(map(&mut ds, &mut vs, 3, map_op(1, 6, GPA, true)).status, gt::GNTST_GENERAL_ERROR);
    let again = map(&mut ds, &mut vs, 2, map_op(1, 6, GPA + 0x1000, true));
    assert_eq!(again.dev_bus_addr, host_base(1) + 4096, "the latched frame");
    // A second grant on an occupied page of ours is refused.
    assert_eq!(map(&mut ds, &mut vs, 2, map_op(1, 6, GPA, true)).status, gt::GNTST_GENERAL_ERROR);
}

#[test]
fn unmap_checks_the_address_and_a_zero_address_leaves_the_mapping() {
    let (mut ds, mut vs) = world(2);
    grant(&mut ds, 1, 0, gt::GTF_PERMIT_ACCESS, 2, 0x100);
    let m = map(&mut ds, &mut vs, 2, map_op(1, 0, GPA, false));
    assert_eq!(unmap(&mut ds, &mut vs, 2, m.handle, GPA + 0x1000), gt::GNTST_GENERAL_ERROR);
    assert_eq!(unmap(&mut ds, &mut vs, 2, m.handle, 0), gt::GNTST_OKAY);
    assert_eq!(vs[1].grants.len(), 1, "still mapped");
    assert_eq!(unmap(&mut ds, &mut vs, 2, m.handle + 1, GPA), gt::GNTST_BAD_HANDLE);
    assert_eq!(unmap(&mut ds, &mut vs, 2, u32::MAX, GPA), gt::GNTST_BAD_HANDLE);
    assert_eq!(unmap(&mut ds, &mut vs, 2, m.handle, GPA + 0x123), gt::GNTST_OKAY, "any address in the page");
}

#[test]
fn a_domain_that_ends_takes_its_mappings_and_its_lent_pages_with_it() {
    let (mut ds, mut vs) = world(3);
    // 2 maps from 1 and from 3; 3 maps from 2.
    grant(&mut ds, 1, 1, gt::GTF_PERMIT_ACCESS, 2, 0x100);
    grant(&mut ds, 3, 1, gt::GTF_PERMIT_ACCESS, 2, 0x100);
    grant(&mut ds, 2, 1, gt::GTF_PERMIT_ACCESS, 3, 0x100);
    let from1 = map(&mut ds, &mut vs, 2, map_op(1, 1, GPA, false));
    let from3 = map(&mut ds, &mut vs, 2, map_op(3, 1, GPA + 0x1000, false));
    let by3 = map(&mut ds, &mut vs, 3, map_op(2, 1, GPA, true));
    assert!([from1.status, from3.status, by3.status].iter().all(|&s| s == gt::GNTST_OKAY));
    end(&mut ds, &mut vs, 2);
    // What 2 held is released: its lenders' entries are free to revoke.
    assert_eq!(flags(&ds, 1, 1), gt::GTF_PERMIT_ACCESS);
    assert_eq!(flags(&ds, 3, 1), gt::GTF_PERMIT_ACCESS);
    assert_eq!(ds[1].grants.mapped_count(), 0);
    // What 2 lent is gone from 3's space, and 3's handle with it.
    assert!(vs[2].grants.is_empty());
    assert_eq!(ds[2].grants.mapped_count(), 0);
    assert_eq!(unmap(&mut ds, &mut vs, 3, by3.handle, GPA), gt::GNTST_BAD_HANDLE);
    // Nothing new comes from a dead domain.
    assert_eq!(map(&mut ds, &mut vs, 3, map_op(2, 1, GPA, true)).status, gt::GNTST_BAD_DOMAIN);
}

#[test]
fn a_domain_may_map_its_own_grant() {
    let (mut ds, mut vs) = world(1);
    grant(&mut ds, 1, 2, gt::GTF_PERMIT_ACCESS, 1, 0x103);
    let m = map(&mut ds, &mut vs, 1, map_op(1, 2, GPA, false));
    assert_eq!((m.status, m.dev_bus_addr), (gt::GNTST_OKAY, host_base(1) + 3 * 4096));
    assert_eq!(unmap(&mut ds, &mut vs, 1, m.handle, GPA), gt::GNTST_OKAY);
    assert_eq!(flags(&ds, 1, 2), gt::GTF_PERMIT_ACCESS);
}

#[test]
fn the_maptrack_is_bounded() {
    let (mut ds, mut vs) = world(2);
    grant(&mut ds, 1, 0, gt::GTF_PERMIT_ACCESS, 2, 0x100);
    for i in 0..grant::MAX_MAPTRACK as u64 {
        assert_eq!(map(&mut ds, &mut vs, 2, map_op(1, 0, GPA + i * 4096, true)).status, gt::GNTST_OKAY);
    }
    let full = map(&mut ds, &mut vs, 2, map_op(1, 0, 0x1_0000_0000, true));
    assert_eq!(full.status, gt::GNTST_NO_DEVICE_SPACE);
    assert_eq!(
        grant::entry(&ds[0].xen.as_ref().unwrap().grant_frames, 0).unwrap().flags & gt::GTF_READING,
        gt::GTF_READING
    );
}

#[test]
fn batches_report_each_status_and_bad_arrays_fault() {
    let (mut ds, mut vs) = world(2);
    grant(&mut ds, 1, 0, gt::GTF_PERMIT_ACCESS, 2, 0x100);
    let ops = [map_op(1, 0, GPA, false), map_op(1, 99, GPA + 0x1000, false)];
    let v = &mut vs[1];
    v.mem[..32].copy_from_slice(ops[0].as_bytes());
    v.mem[32..64].copy_from_slice(ops[1].as_bytes());
    let (d, mut peers) = Others::split(&mut ds, 1);
    assert_eq!(grant_table_op::handle(d, &mut peers, v, gt::GNTTABOP_MAP_GRANT_REF, 0, 2), Ok(0));
    let status = |at: usize| GnttabMapGrantRef::read_from_bytes(&v.mem[at..at + 32]).unwrap().status;
    assert_eq!((status(0), status(32)), (gt::GNTST_OKAY, gt::GNTST_GENERAL_ERROR));
    assert_eq!(grant_table_op::handle(d, &mut peers, v, gt::GNTTABOP_MAP_GRANT_REF, 4090, 1), Err(errno::EFAULT));
    assert_eq!(grant_table_op::handle(d, &mut peers, v, gt::GNTTABOP_UNMAP_GRANT_REF, 0, 257), Err(errno::EINVAL));
}

/// What the guests of the property test do.
#[derive(Clone, Debug)]
enum Op {
    /// The lender writes a fresh entry (only while nobody maps it, as a well-behaved guest).
    Grant {
        lender: u16,
        gref: u32,
        grantee: u16,
        readonly: bool,
        frame: u32,
    },
    Map {
        mapper: u16,
        lender: u16,
        gref: u32,
        slot: u64,
        readonly: bool,
    },
    /// Unmap the `pick`-th mapping the model knows of `mapper` (or a bad handle if none).
    Unmap {
        mapper: u16,
        pick: usize,
        wrong_page: bool,
    },
    End {
        domain: u16,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let dom = 1u16..=3;
    prop_oneof![
        2 => (dom.clone(), 0u32..3, dom.clone(), any::<bool>(), 0x100u32..0x106)
            .prop_map(|(lender, gref, grantee, readonly, frame)| Op::Grant { lender, gref, grantee, readonly, frame }),
        4 => (dom.clone(), dom.clone(), 0u32..4, 0u64..5, any::<bool>())
            .prop_map(|(mapper, lender, gref, slot, readonly)| Op::Map { mapper, lender, gref, slot, readonly }),
        2 => (dom.clone(), any::<usize>(), prop::bool::weighted(0.1))
            .prop_map(|(mapper, pick, wrong_page)| Op::Unmap { mapper, pick, wrong_page }),
        1 => prop::sample::select(vec![1u16, 2, 3]).prop_map(|domain| Op::End { domain }),
    ]
}

/// The reference: the entries as written and the list of mappings; everything else (which
/// entry is active, its flags, every address space) is derived from that list.
#[derive(Default)]
struct Model {
    /// (lender, gref) → (grantee, readonly, frame)
    entries: BTreeMap<(u16, u32), (u16, bool, u32)>,
    /// (mapper, handle) → the mapping
    maps: BTreeMap<(u16, u32), Held>,
    dead: [bool; 4],
}

/// A mapping the model knows of: whose grant, where, and the frame latched when it was made.
#[derive(Clone, Copy, Debug)]
struct Held {
    lender: u16,
    gref: u32,
    gpa: u64,
    readonly: bool,
    frame: u32,
}

impl Model {
    fn of_entry(&self, lender: u16, gref: u32) -> impl Iterator<Item = (&(u16, u32), &Held)> {
        self.maps.iter().filter(move |(_, m)| m.lender == lender && m.gref == gref)
    }

    fn expect_map(&self, mapper: u16, lender: u16, gref: u32, gpa: u64, readonly: bool) -> Result<u32, i16> {
        if self.dead[usize::from(lender)] {
            return Err(gt::GNTST_BAD_DOMAIN);
        }
        if self.maps.iter().any(|(k, m)| k.0 == mapper && m.gpa == gpa) {
            return Err(gt::GNTST_GENERAL_ERROR);
        }
        if gref >= 4 * grant::ENTRIES_PER_FRAME as u32 {
            return Err(gt::GNTST_BAD_GNTREF);
        }
        let active: Vec<_> = self.of_entry(lender, gref).map(|(k, m)| (k.0, m.readonly, m.frame)).collect();
        if active.iter().any(|a| a.0 != mapper) {
            return Err(gt::GNTST_GENERAL_ERROR);
        }
        let entry = self.entries.get(&(lender, gref));
        if active.is_empty() || (!readonly && active.iter().all(|a| a.1)) {
            let ok = entry.is_some_and(|e| e.0 == mapper && (readonly || !e.1));
            if !ok {
                return Err(gt::GNTST_GENERAL_ERROR);
            }
        }
        let frame = active.first().map_or_else(|| entry.unwrap().2, |a| a.2);
        if u64::from(frame) >= RAM_GFN + RAM_PAGES {
            return Err(gt::GNTST_BAD_PAGE);
        }
        Ok(frame)
    }
}

fn slot_gpa(slot: u64) -> u64 {
    // Two slots over the mapper's own RAM, the rest outside it.
    if slot < 2 { (RAM_GFN + slot) * 4096 } else { GPA + slot * 4096 }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn grant_mapping_state_follows_the_model(ops in prop::collection::vec(op(), 1..80)) {
        let (mut ds, mut vs) = world(3);
        let mut model = Model::default();
        for op in ops {
            match op {
                Op::Grant { lender, gref, grantee, readonly, frame } => {
                    if model.dead[usize::from(lender)] || model.of_entry(lender, gref).next().is_some() {
                        continue;
                    }
                    let ro = if readonly { gt::GTF_READONLY } else { 0 };
                    grant(&mut ds, lender, gref, gt::GTF_PERMIT_ACCESS | ro, grantee, frame);
                    model.entries.insert((lender, gref), (grantee, readonly, frame));
                }
                Op::Map { mapper, lender, gref, slot, readonly } => {
                    if model.dead[usize::from(mapper)] {
                        continue;
                    }
                    let gpa = slot_gpa(slot);
                    // Reference 3 stands for one past the table.
                    let gref = if gref == 3 { 1 << 20 } else { gref };
                    let expect = model.expect_map(mapper, lender, gref, gpa, readonly);
                    let out = map(&mut ds, &mut vs, mapper, map_op(lender, gref, gpa, readonly));
                    match expect {
                        Ok(frame) => {
                            prop_assert_eq!(out.status, gt::GNTST_OKAY);
                            prop_assert_eq!(out.dev_bus_addr, host_base(lender) + (u64::from(frame) - RAM_GFN) * 4096);
                            model.maps.insert((mapper, out.handle), Held { lender, gref, gpa, readonly, frame });
                        }
                        Err(status) => prop_assert_eq!(out.status, status),
                    }
                }
                Op::Unmap { mapper, pick, wrong_page } => {
                    if model.dead[usize::from(mapper)] {
                        continue;
                    }
                    let mine: Vec<_> = model.maps.iter().filter(|(k, _)| k.0 == mapper).map(|(k, m)| (k.1, m.gpa)).collect();
                    match mine.get(pick % mine.len().max(1)) {
                        Some(&(handle, gpa)) if wrong_page => {
                            prop_assert_eq!(unmap(&mut ds, &mut vs, mapper, handle, gpa ^ 0x8000), gt::GNTST_GENERAL_ERROR);
                        }
                        Some(&(handle, gpa)) => {
                            prop_assert_eq!(unmap(&mut ds, &mut vs, mapper, handle, gpa), gt::GNTST_OKAY);
                            model.maps.remove(&(mapper, handle));
                        }
                        None => prop_assert_eq!(unmap(&mut ds, &mut vs, mapper, pick as u32, GPA), gt::GNTST_BAD_HANDLE),
                    }
                }
                Op::End { domain } => {
                    if model.dead[usize::from(domain)] {
                        continue;
                    }
                    end(&mut ds, &mut vs, domain);
                    model.dead[usize::from(domain)] = true;
                    model.maps.retain(|k, m| k.0 != domain && m.lender != domain);
                }
            }
            // Every entry's flags, every maptrack and every live address space agree with it.
            for lender in 1..=3u16 {
                for gref in 0..3 {
                    let maps: Vec<_> = model.of_entry(lender, gref).map(|(_, m)| m.readonly).collect();
                    let reading = if maps.is_empty() { 0 } else { gt::GTF_READING };
                    let writing = if maps.iter().any(|ro| !ro) { gt::GTF_WRITING } else { 0 };
                    let f = grant::entry(&ds[usize::from(lender - 1)].xen.as_ref().unwrap().grant_frames, gref).unwrap().flags;
                    prop_assert_eq!(f & (gt::GTF_READING | gt::GTF_WRITING), reading | writing, "d{} ref {}", lender, gref);
                }
            }
            for mapper in 1..=3u16 {
                let expected: BTreeMap<u64, (u64, bool)> = model
                    .maps
                    .iter()
                    .filter(|(k, _)| k.0 == mapper)
                    .map(|(_, m)| (m.gpa, (host_base(m.lender) + (u64::from(m.frame) - RAM_GFN) * 4096, !m.readonly)))
                    .collect();
                prop_assert_eq!(ds[usize::from(mapper - 1)].grants.mapped_count(), expected.len());
                if !model.dead[usize::from(mapper)] {
                    prop_assert_eq!(&vs[usize::from(mapper - 1)].grants, &expected, "d{} space", mapper);
                }
            }
        }
    }
}
