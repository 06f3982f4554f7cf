//! `GNTTABOP_map_grant_ref` and `GNTTABOP_unmap_grant_ref`: a domain maps a page another
//! domain (or itself) lends through a grant into its own guest-physical space, and unmaps it;
//! and what happens to such mappings when either side ends.
//!
//! Every guest is translated (ARM stage 2, x86 EPT/NPT), so only host mappings exist:
//! `GNTMAP_host_map` with `host_addr` a guest-physical address. Device, application and PTE
//! mappings are refused as Xen refuses them to HVM guests. Each operation gets its own
//! `GNTST_*` status; the call fails only when the guest's array cannot be read or written.

use super::HcResult;
use super::args;
use crate::domain::{Domain, Peers};
use crate::grant::{self, Mapping};
use crate::page::PAGE_SIZE;
use arch::exit::VirtualCpu;
use guest_abi::errno;
use guest_abi::grant_table::{self as gt, GnttabMapGrantRef, GnttabUnmapGrantRef};

/// Operations one call may carry (no continuations: see `grant_copy`).
const MAX_OPS: u64 = 256;
const PAGE_MASK: u64 = !(PAGE_SIZE as u64 - 1);

pub fn map(domain: &mut Domain, peers: &mut dyn Peers, vcpu: &mut dyn VirtualCpu, uop: u64, count: u64) -> HcResult {
    if count > MAX_OPS {
        return Err(errno::EINVAL);
    }
    for i in 0..count {
        let at = uop.checked_add(i * size_of::<GnttabMapGrantRef>() as u64).ok_or(errno::EFAULT)?;
        let mut op: GnttabMapGrantRef = args::read_struct(vcpu, at)?;
        match map_one(domain, peers, vcpu, &op) {
            Ok((handle, hpa)) => {
                op.status = gt::GNTST_OKAY;
                op.handle = handle;
                op.dev_bus_addr = hpa;
            }
            Err(status) => op.status = status,
        }
        args::write_struct(vcpu, at, &op)?;
    }
    Ok(0)
}

pub fn unmap(domain: &mut Domain, peers: &mut dyn Peers, vcpu: &mut dyn VirtualCpu, uop: u64, count: u64) -> HcResult {
    if count > MAX_OPS {
        return Err(errno::EINVAL);
    }
    for i in 0..count {
        let at = uop.checked_add(i * size_of::<GnttabUnmapGrantRef>() as u64).ok_or(errno::EFAULT)?;
        let mut op: GnttabUnmapGrantRef = args::read_struct(vcpu, at)?;
        op.status = match unmap_one(domain, peers, vcpu, &op) {
            Ok(()) => gt::GNTST_OKAY,
            Err(status) => status,
        };
        args::write_struct(vcpu, at, &op)?;
    }
    Ok(0)
}

/// One map, checked in Xen's order: flags, lender, a free handle, then the grant itself.
/// The handle and the lent page's host address.
fn map_one(
    domain: &mut Domain,
    peers: &mut dyn Peers,
    vcpu: &mut dyn VirtualCpu,
    op: &GnttabMapGrantRef,
) -> Result<(u32, u64), i16> {
    if op.flags & (gt::GNTMAP_DEVICE_MAP | gt::GNTMAP_HOST_MAP) == 0 {
        return Err(gt::GNTST_BAD_GNTREF);
    }
    if op.flags & (gt::GNTMAP_DEVICE_MAP | gt::GNTMAP_APPLICATION_MAP | gt::GNTMAP_CONTAINS_PTE) != 0 {
        return Err(gt::GNTST_GENERAL_ERROR);
    }
    let lender_alive = op.dom == domain.id || peers.peer(op.dom).is_some_and(|d| !d.dying);
    if !lender_alive {
        return Err(gt::GNTST_BAD_DOMAIN);
    }
    if !domain.grants.has_room() {
        return Err(gt::GNTST_NO_DEVICE_SPACE);
    }
    let (readonly, gref, me) = (op.flags & gt::GNTMAP_READONLY != 0, op.r#ref, domain.id);
    let gpa = op.host_addr & PAGE_MASK;
    // One grant per page of our space: a second would leave the first's unmap removing it.
    if domain.grants.occupied(gpa) {
        return Err(gt::GNTST_GENERAL_ERROR);
    }
    let hpa = with_lender(domain, peers, op.dom, |lender| pin(lender, me, gref, readonly))?;
    let release = Mapping { granter: op.dom, gref, gpa, hpa, readonly };
    if vcpu.map_grant(gpa, hpa, !readonly).is_err() {
        unpin_at_lender(domain, peers, &release);
        return Err(gt::GNTST_GENERAL_ERROR);
    }
    match domain.grants.track(release) {
        Ok(handle) => Ok((handle, hpa)),
        Err(status) => {
            let _ = vcpu.unmap_grant(gpa);
            unpin_at_lender(domain, peers, &release);
            Err(status)
        }
    }
}

/// Pin `lender`'s entry `gref` for `mapper`; the host address of the page it lends.
fn pin(lender: &mut Domain, mapper: u16, gref: u32, readonly: bool) -> Result<u64, i16> {
    let xen = lender.xen.as_mut().ok_or(gt::GNTST_BAD_GNTREF)?;
    let gfn = grant::pin(&mut xen.grant_frames, &mut lender.grants, mapper, gref, readonly)?;
    match lender.ram.as_ref().and_then(|ram| ram.host_page(gfn)) {
        Some(hpa) => Ok(hpa),
        None => {
            // Not a page of the lender's RAM: nothing stays pinned.
            grant::unpin(&mut xen.grant_frames, &mut lender.grants, gref, readonly);
            Err(gt::GNTST_BAD_PAGE)
        }
    }
}

/// One unmap. A handle not in use is `GNTST_bad_handle`; a `host_addr` or `dev_bus_addr`
/// naming another page than the mapping's is `GNTST_general_error`; a zero `host_addr`
/// removes nothing (as in Xen, the handle stays valid).
fn unmap_one(
    domain: &mut Domain,
    peers: &mut dyn Peers,
    vcpu: &mut dyn VirtualCpu,
    op: &GnttabUnmapGrantRef,
) -> Result<(), i16> {
    let m = domain.grants.mapping(op.handle).ok_or(gt::GNTST_BAD_HANDLE)?;
    if op.dev_bus_addr != 0 && op.dev_bus_addr & PAGE_MASK != m.hpa {
        return Err(gt::GNTST_GENERAL_ERROR);
    }
    if op.host_addr == 0 {
        return Ok(());
    }
    if op.host_addr & PAGE_MASK != m.gpa {
        return Err(gt::GNTST_GENERAL_ERROR);
    }
    vcpu.unmap_grant(m.gpa).map_err(|_| gt::GNTST_GENERAL_ERROR)?;
    domain.grants.untrack(op.handle);
    unpin_at_lender(domain, peers, &m);
    Ok(())
}

/// Run `f` on the domain `id` names: `domain` itself or one of its peers (alive or not).
fn with_lender<T>(
    domain: &mut Domain,
    peers: &mut dyn Peers,
    id: u16,
    f: impl FnOnce(&mut Domain) -> Result<T, i16>,
) -> Result<T, i16> {
    if id == domain.id {
        return f(domain);
    }
    f(peers.peer(id).ok_or(gt::GNTST_BAD_DOMAIN)?)
}

fn unpin_at_lender(domain: &mut Domain, peers: &mut dyn Peers, m: &Mapping) {
    let _ = with_lender(domain, peers, m.granter, |lender| {
        if let Some(xen) = lender.xen.as_mut() {
            grant::unpin(&mut xen.grant_frames, &mut lender.grants, m.gref, m.readonly);
        }
        Ok(())
    });
}

/// `domain` has ended: every mapping it held of others' grants is given back, so that their
/// entries are no longer active (`GTF_reading`/`GTF_writing` clear). Its own address space
/// goes with it, so nothing is unmapped.
pub fn release_held(domain: &mut Domain, peers: &mut dyn Peers) {
    let held: alloc::vec::Vec<(u32, Mapping)> = domain.grants.mappings().collect();
    for (handle, m) in held {
        domain.grants.untrack(handle);
        unpin_at_lender(domain, peers, &m);
    }
}

/// `lender` has ended: `mapper` loses every mapping of its pages, taken out of its address
/// space through `vcpu` (one of `mapper`'s), so no domain keeps a dead one's memory. Its
/// handles for them become unknown (`GNTST_bad_handle`).
pub fn revoke_lent(lender: &mut Domain, mapper: &mut Domain, vcpu: Option<&mut dyn VirtualCpu>) {
    let lent: alloc::vec::Vec<(u32, Mapping)> =
        mapper.grants.mappings().filter(|(_, m)| m.granter == lender.id).collect();
    let mut vcpu = vcpu;
    for (handle, m) in lent {
        if let Some(v) = vcpu.as_deref_mut() {
            let _ = v.unmap_grant(m.gpa);
        }
        mapper.grants.untrack(handle);
        if let Some(xen) = lender.xen.as_mut() {
            grant::unpin(&mut xen.grant_frames, &mut lender.grants, m.gref, m.readonly);
        }
    }
}

#[cfg(test)]
mod tests;
