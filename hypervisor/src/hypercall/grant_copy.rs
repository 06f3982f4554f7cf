//! `GNTTABOP_copy`: copy bytes between two pages, either side named by a grant reference of
//! another domain (or the caller's own) or by one of the caller's own frames. The granting
//! domain's entry must permit access to the caller (and allow writing, for a destination);
//! each operation reports its own `GNTST_*` status and the call itself succeeds.

use super::HcResult;
use super::args;
use crate::domain::{Domain, Peers};
use crate::grant;
use crate::page::{PAGE_SIZE, copy_between_pages};
use arch::exit::VirtualCpu;
use core::sync::atomic::AtomicU32;
use guest_abi::errno;
use guest_abi::grant_table::{self as gt, GnttabCopy, GnttabCopyPtr};
use guest_abi::xen::DOMID_SELF;

/// Operations one call may carry. Xen preempts long batches and continues them; without
/// continuations a call's work must stay bounded, and Linux's batches are far smaller
/// (netback copies 64 at a time).
const MAX_OPS: u64 = 256;

pub fn copy(domain: &mut Domain, peers: &mut dyn Peers, vcpu: &mut dyn VirtualCpu, uop: u64, count: u64) -> HcResult {
    if count > MAX_OPS {
        return Err(errno::EINVAL);
    }
    for i in 0..count {
        let compat = domain.call_compat;
        let at = uop.checked_add(i * args::abi_size::<GnttabCopy>(compat)).ok_or(errno::EFAULT)?;
        let mut op: GnttabCopy = args::read_abi(compat, vcpu, at)?;
        op.status = match copy_one(domain, peers, &op) {
            Ok(()) => gt::GNTST_OKAY,
            Err(status) => status,
        };
        args::write_abi(compat, vcpu, at, &op)?;
    }
    Ok(0)
}

/// In Xen's order: both pages first (domains, grants, frames), then offsets and length.
fn copy_one(domain: &Domain, peers: &mut dyn Peers, op: &GnttabCopy) -> Result<(), i16> {
    let src = page(domain, peers, &op.source, op.flags & gt::GNTCOPY_SOURCE_GREF != 0, false)?;
    let dst = page(domain, peers, &op.dest, op.flags & gt::GNTCOPY_DEST_GREF != 0, true)?;
    let (len, from, to) = (usize::from(op.len), usize::from(op.source.offset), usize::from(op.dest.offset));
    if from + len > PAGE_SIZE || to + len > PAGE_SIZE {
        return Err(gt::GNTST_BAD_COPY_ARG);
    }
    copy_between_pages(src, from, dst, to, len);
    Ok(())
}

/// The page one side names: a granted page of `ptr.domid`, or a frame of the caller's own.
fn page(
    domain: &Domain,
    peers: &mut dyn Peers,
    ptr: &GnttabCopyPtr,
    by_grant: bool,
    write: bool,
) -> Result<&'static [AtomicU32], i16> {
    let own = ptr.domid == DOMID_SELF || ptr.domid == domain.id;
    if !by_grant {
        // A frame is named only as DOMID_SELF's (Xen refuses even the caller's own id).
        if ptr.domid != DOMID_SELF {
            return Err(gt::GNTST_PERMISSION_DENIED);
        }
        return domain.ram.as_ref().and_then(|ram| ram.page(ptr.u)).ok_or(gt::GNTST_BAD_PAGE);
    }
    let granter: &Domain = if own { domain } else { peers.peer(ptr.domid).ok_or(gt::GNTST_BAD_DOMAIN)? };
    let frame = granted_frame(granter, domain.id, ptr.u, write)?;
    granter.ram.as_ref().and_then(|ram| ram.page(u64::from(frame))).ok_or(gt::GNTST_BAD_PAGE)
}

/// The frame `granter`'s entry `gref` lets domain `grantee` read (or write). An entry that
/// does not permit it (another type, another domain, read-only for a write) is Xen's
/// `GNTST_general_error`, as `_set_status` reports it.
fn granted_frame(granter: &Domain, grantee: u16, gref: u64, write: bool) -> Result<u32, i16> {
    let xen = granter.xen.as_ref().ok_or(gt::GNTST_GENERAL_ERROR)?;
    let gref = u32::try_from(gref).map_err(|_| gt::GNTST_BAD_GNTREF)?;
    let e = grant::entry(&xen.grant_frames, gref).ok_or(gt::GNTST_BAD_GNTREF)?;
    let permits = e.flags & gt::GTF_TYPE_MASK == gt::GTF_PERMIT_ACCESS && e.domid == grantee;
    if !permits || (write && e.flags & gt::GTF_READONLY != 0) {
        return Err(gt::GNTST_GENERAL_ERROR);
    }
    Ok(e.frame)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Others;
    use crate::hypercall::testing::{FakeVcpu, domain_with_xen_pages};
    use crate::page::GuestRam;
    use alloc::boxed::Box;
    use alloc::vec::Vec;
    use core::sync::atomic::Ordering::Relaxed;

    /// Domain 1 (index 0, the copier) and domain 2 (the granter), each with 4 pages of RAM at
    /// guest frame 0x100.
    fn domains(vcpu: &mut FakeVcpu) -> Vec<Domain> {
        let mut ds = alloc::vec![domain_with_xen_pages(vcpu), domain_with_xen_pages(vcpu)];
        ds[1].id = 2;
        for d in &mut ds {
            let words: &'static [AtomicU32] = Box::leak((0..4 * 1024).map(|_| AtomicU32::new(0)).collect());
            d.ram = Some(GuestRam { base: 0x100 * PAGE_SIZE as u64, host: 0x4000_0000, words });
        }
        ds
    }

    fn grant(d: &mut Domain, gref: usize, flags: u16, domid: u16, frame: u32) {
        let table = &mut d.xen.as_mut().unwrap().grant_frames[gref / grant::ENTRIES_PER_FRAME];
        let at = gref % grant::ENTRIES_PER_FRAME * 8;
        table.data[at..at + 2].copy_from_slice(&flags.to_ne_bytes());
        table.data[at + 2..at + 4].copy_from_slice(&domid.to_ne_bytes());
        table.set_u32(at + 4, frame);
    }

    fn byte(d: &Domain, gfn: u64, offset: usize) -> u8 {
        let page = d.ram.as_ref().unwrap().page(gfn).unwrap();
        (page[offset / 4].load(Relaxed) >> (offset % 4 * 8)) as u8
    }

    fn fill(d: &Domain, gfn: u64, seed: u8) {
        for (i, w) in d.ram.as_ref().unwrap().page(gfn).unwrap().iter().enumerate() {
            let b = |k: usize| u32::from((i * 4 + k) as u8 ^ seed);
            w.store(b(0) | b(1) << 8 | b(2) << 16 | b(3) << 24, Relaxed);
        }
    }

    fn side(u: u64, domid: u16, offset: u16) -> GnttabCopyPtr {
        GnttabCopyPtr { u, domid, offset, _pad0: 0 }
    }

    /// Run one copy from `domains[0]` through the hypercall path; its status.
    fn run(vcpu: &mut FakeVcpu, ds: &mut [Domain], op: GnttabCopy) -> i16 {
        use zerocopy::{FromBytes, IntoBytes};
        vcpu.mem[..40].copy_from_slice(op.as_bytes());
        let (d, mut peers) = Others::split(ds, 0);
        assert_eq!(copy(d, &mut peers, vcpu, 0, 1), Ok(0));
        GnttabCopy::read_from_bytes(&vcpu.mem[..40]).unwrap().status
    }

    #[test]
    fn a_32_bit_guests_batch_uses_24_byte_entries() {
        use guest_abi::compat::{GnttabCopy32, GnttabCopyPtr32};
        use zerocopy::{FromBytes, IntoBytes};
        let mut vcpu = FakeVcpu::new(64);
        let mut ds = domains(&mut vcpu);
        fill(&ds[1], 0x101, 0x5a);
        grant(&mut ds[1], 8, gt::GTF_PERMIT_ACCESS | gt::GTF_READONLY, 1, 0x101);
        ds[0].call_compat = true;
        let good = GnttabCopy32 {
            source: GnttabCopyPtr32 { u: 8, domid: 2, offset: 16 },
            dest: GnttabCopyPtr32 { u: 0x102, domid: DOMID_SELF, offset: 0 },
            len: 32,
            flags: gt::GNTCOPY_SOURCE_GREF,
            ..Default::default()
        };
        // The second entry names a grant never given.
        let bad = GnttabCopy32 { source: GnttabCopyPtr32 { u: 9, ..good.source }, ..good };
        vcpu.mem[..24].copy_from_slice(good.as_bytes());
        vcpu.mem[24..48].copy_from_slice(bad.as_bytes());
        let (d, mut peers) = Others::split(&mut ds, 0);
        assert_eq!(copy(d, &mut peers, &mut vcpu, 0, 2), Ok(0));
        let status = |at: usize| GnttabCopy32::read_from_bytes(&vcpu.mem[at..at + 24]).unwrap().status;
        assert_eq!((status(0), status(24)), (gt::GNTST_OKAY, gt::GNTST_GENERAL_ERROR), "each entry its own status");
        assert_eq!(byte(&ds[0], 0x102, 0), 16 ^ 0x5a);
    }

    #[test]
    fn a_granted_page_is_copied_at_any_offset_and_length() {
        let mut vcpu = FakeVcpu::new(64);
        let mut ds = domains(&mut vcpu);
        fill(&ds[1], 0x101, 0x5a);
        grant(&mut ds[1], 8, gt::GTF_PERMIT_ACCESS | gt::GTF_READONLY, 1, 0x101);
        for (from, to, len) in [(0, 0, 4096), (1, 2, 100), (4095, 0, 1), (123, 3001, 995), (4, 8, 44), (64, 1024, 2052)]
        {
            let op = GnttabCopy {
                source: side(8, 2, from),
                dest: side(0x102, DOMID_SELF, to),
                len,
                flags: gt::GNTCOPY_SOURCE_GREF,
                ..Default::default()
            };
            assert_eq!(run(&mut vcpu, &mut ds, op), gt::GNTST_OKAY, "{from} {to} {len}");
            for k in 0..usize::from(len) {
                assert_eq!(byte(&ds[0], 0x102, usize::from(to) + k), byte(&ds[1], 0x101, usize::from(from) + k));
            }
        }
    }

    #[test]
    fn a_destination_grant_is_written_unless_read_only() {
        let mut vcpu = FakeVcpu::new(64);
        let mut ds = domains(&mut vcpu);
        fill(&ds[0], 0x100, 0x11);
        grant(&mut ds[1], 9, gt::GTF_PERMIT_ACCESS, 1, 0x103);
        grant(&mut ds[1], 10, gt::GTF_PERMIT_ACCESS | gt::GTF_READONLY, 1, 0x103);
        let op = |gref| GnttabCopy {
            source: side(0x100, DOMID_SELF, 0),
            dest: side(gref, 2, 0),
            len: 4096,
            flags: gt::GNTCOPY_DEST_GREF,
            ..Default::default()
        };
        assert_eq!(run(&mut vcpu, &mut ds, op(10)), gt::GNTST_GENERAL_ERROR);
        assert_eq!(byte(&ds[1], 0x103, 5), 0, "nothing written through a read-only grant");
        assert_eq!(run(&mut vcpu, &mut ds, op(9)), gt::GNTST_OKAY);
        assert_eq!(byte(&ds[1], 0x103, 5), 5 ^ 0x11);
    }

    #[test]
    fn bad_copies_get_their_own_status_and_touch_nothing() {
        let mut vcpu = FakeVcpu::new(64);
        let mut ds = domains(&mut vcpu);
        fill(&ds[1], 0x101, 0x77);
        grant(&mut ds[1], 8, gt::GTF_PERMIT_ACCESS, 1, 0x101);
        grant(&mut ds[1], 11, gt::GTF_PERMIT_ACCESS, 7, 0x101);
        grant(&mut ds[1], 12, gt::GTF_PERMIT_ACCESS, 1, 0x999);
        let from = |gref, domid, offset, len| GnttabCopy {
            source: side(gref, domid, offset),
            dest: side(0x102, DOMID_SELF, 0),
            len,
            flags: gt::GNTCOPY_SOURCE_GREF,
            ..Default::default()
        };
        let cases = [
            (from(8, 9, 0, 16), gt::GNTST_BAD_DOMAIN),
            (from(100_000, 2, 0, 16), gt::GNTST_BAD_GNTREF),
            (from(3, 2, 0, 16), gt::GNTST_GENERAL_ERROR),  // never granted
            (from(11, 2, 0, 16), gt::GNTST_GENERAL_ERROR), // granted to domain 7
            (from(12, 2, 0, 16), gt::GNTST_BAD_PAGE),
            (from(8, 2, 4090, 16), gt::GNTST_BAD_COPY_ARG),
            // A bad page is found before a bad length, as in Xen.
            (from(12, 2, 4090, 16), gt::GNTST_BAD_PAGE),
            // Another domain's frame named directly: only with a grant.
            (GnttabCopy { flags: 0, ..from(0x101, 2, 0, 16) }, gt::GNTST_PERMISSION_DENIED),
            // Even one's own frame is named as DOMID_SELF's, not by id.
            (GnttabCopy { flags: 0, ..from(0x101, 1, 0, 16) }, gt::GNTST_PERMISSION_DENIED),
        ];
        for (op, want) in cases {
            assert_eq!(run(&mut vcpu, &mut ds, op), want, "{op:?}");
        }
        assert!((0..4096).all(|k| byte(&ds[0], 0x102, k) == 0), "no refused copy wrote anything");
    }

    #[test]
    fn whole_batches_are_bounded_and_faults_stop_them() {
        let mut vcpu = FakeVcpu::new(64);
        let mut ds = domains(&mut vcpu);
        let (d, mut peers) = Others::split(&mut ds, 0);
        assert_eq!(copy(d, &mut peers, &mut vcpu, 0, MAX_OPS + 1), Err(errno::EINVAL));
        assert_eq!(copy(d, &mut peers, &mut vcpu, 40, 1), Err(errno::EFAULT), "straddles the end of its memory");
    }
}
