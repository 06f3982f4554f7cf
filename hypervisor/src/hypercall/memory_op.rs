//! `memory_op`: the guest's view of its physical memory and the frames it maps into it.

use super::HcResult;
use super::args;
use crate::domain::{Domain, GRANT_FRAMES};
use arch::exit::VirtualCpu;
use guest_abi::errno;
use guest_abi::memory::{self as mem, XenAddToPhysmap, XenMemoryReservation};

/// The sub-command is in the low bits; the rest is a continuation start extent.
const MEMOP_CMD_MASK: u64 = (1 << 6) - 1;

pub fn handle(domain: &mut Domain, vcpu: &mut dyn VirtualCpu, cmd: u64, arg: u64) -> HcResult {
    match cmd & MEMOP_CMD_MASK {
        mem::XENMEM_ADD_TO_PHYSMAP => add_to_physmap(domain, vcpu, arg),
        mem::XENMEM_DECREASE_RESERVATION => decrease_reservation(domain, vcpu, cmd, arg),
        // Each takes a pointer to the domain id it asks about.
        mem::XENMEM_CURRENT_RESERVATION | mem::XENMEM_MAXIMUM_RESERVATION | mem::XENMEM_MAXIMUM_GPFN => {
            let domid = args::read::<2>(vcpu, arg)?;
            args::own_domain(domain, u16::from_ne_bytes(domid))?;
            let pages =
                if cmd & MEMOP_CMD_MASK == mem::XENMEM_MAXIMUM_GPFN { domain.max_gpfn } else { domain.ram_pages };
            Ok(pages as i64)
        }
        _ => Err(errno::ENOSYS),
    }
}

/// `XENMEM_decrease_reservation`: the guest hands back frames (Linux's balloon does it to
/// get frames at which to map grant tables and foreign pages when it has no unpopulated
/// memory of its own: i386 kernels). Each 4 KiB extent of the list that names a frame of the
/// domain's RAM not handed back already is accepted; the first that is not ends the call (as
/// Xen's, whose removal of an unpopulated frame fails), and the answer is how many were,
/// counting from the continuation start in `cmd`'s upper bits, as Xen returns it. The frame
/// stays backed by the domain's RAM until the guest maps something else there (its
/// reservation does not shrink).
fn decrease_reservation(domain: &mut Domain, vcpu: &mut dyn VirtualCpu, cmd: u64, arg: u64) -> HcResult {
    const MEMOP_EXTENT_SHIFT: u32 = 6;
    let compat = domain.call_compat;
    let op: XenMemoryReservation = args::read_abi(compat, vcpu, arg)?;
    args::own_domain(domain, op.domid)?;
    let width = args::ulong_size(compat);
    let first = cmd >> MEMOP_EXTENT_SHIFT;
    if first > op.nr_extents {
        return Err(errno::EINVAL);
    }
    let mut done = first;
    // Order 0 only; larger extents are not handed back (Xen would split them).
    if op.extent_order != 0 {
        return Ok(done as i64);
    }
    let ram_first = (domain.max_gpfn + 1).saturating_sub(domain.ram_pages);
    while done < op.nr_extents {
        let at = op.extent_start.checked_add(done * width).ok_or(errno::EFAULT)?;
        let mut b = [0u8; 8];
        vcpu.copy_from_guest(at, &mut b[..width as usize]).map_err(|_| errno::EFAULT)?;
        let gfn = u64::from_le_bytes(b);
        if gfn < ram_first || gfn - ram_first >= domain.ram_pages || !hand_back(domain, gfn - ram_first) {
            break;
        }
        done += 1;
    }
    Ok(done as i64)
}

/// Mark page `index` of the domain's RAM handed back; false if it already was.
fn hand_back(domain: &mut Domain, index: u64) -> bool {
    let words = domain.ram_pages.div_ceil(64) as usize;
    if domain.ballooned.len() < words && domain.ballooned.try_reserve_exact(words).is_err() {
        return false;
    }
    domain.ballooned.resize(words.max(domain.ballooned.len()), 0);
    let (word, bit) = ((index / 64) as usize, 1u64 << (index % 64));
    let fresh = domain.ballooned[word] & bit == 0;
    domain.ballooned[word] |= bit;
    fresh
}

/// Map the shared info page or a grant-table frame at a guest frame of its choosing.
fn add_to_physmap(domain: &mut Domain, vcpu: &mut dyn VirtualCpu, arg: u64) -> HcResult {
    let op: XenAddToPhysmap = args::read_abi(domain.call_compat, vcpu, arg)?;
    args::own_domain(domain, op.domid)?;
    let (idx, gpfn) = (op.idx, op.gpfn);
    let gpa = gpfn.checked_mul(4096).ok_or(errno::EINVAL)?;
    let xen = domain.xen.as_ref().ok_or(errno::ENOSYS)?;
    let hpa = match op.space {
        mem::XENMAPSPACE_SHARED_INFO if idx == 0 => xen.shared_info.hpa,
        mem::XENMAPSPACE_GRANT_TABLE if idx & mem::XENMAPIDX_GRANT_TABLE_STATUS != 0 => return Err(errno::EINVAL),
        mem::XENMAPSPACE_GRANT_TABLE if (idx as usize) < GRANT_FRAMES => xen.grant_frames[idx as usize].hpa,
        mem::XENMAPSPACE_SHARED_INFO | mem::XENMAPSPACE_GRANT_TABLE => return Err(errno::EINVAL),
        _ => return Err(errno::ENOSYS),
    };
    vcpu.map_host_page(gpa, hpa).map_err(|_| errno::EINVAL)?;
    if op.space == mem::XENMAPSPACE_SHARED_INFO {
        domain.latch_shared_info_layout();
    }
    if op.space == mem::XENMAPSPACE_GRANT_TABLE {
        domain.grant_frame_gfns[idx as usize] = Some(gpfn);
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypercall::testing::{FakeVcpu, domain_with_xen_pages};

    fn request(space: u32, idx: u64, gpfn: u64) -> Vec<u8> {
        use zerocopy::IntoBytes;
        let xatp = XenAddToPhysmap { domid: guest_abi::xen::DOMID_SELF, space, idx, gpfn, ..Default::default() };
        xatp.as_bytes().to_vec()
    }

    #[test]
    fn shared_info_and_grant_frames_map_at_the_guests_frame() {
        let mut vcpu = FakeVcpu::new(256);
        let mut d = domain_with_xen_pages(&mut vcpu);
        vcpu.mem[..24].copy_from_slice(&request(mem::XENMAPSPACE_SHARED_INFO, 0, 0x41234));
        assert_eq!(add_to_physmap(&mut d, &mut vcpu, 0), Ok(0));
        let shared = d.xen.as_ref().unwrap().shared_info.hpa;
        assert!(vcpu.mapped.contains(&(0x4123_4000, shared)));
        vcpu.mem[..24].copy_from_slice(&request(mem::XENMAPSPACE_GRANT_TABLE, 3, 0x38003));
        assert_eq!(add_to_physmap(&mut d, &mut vcpu, 0), Ok(0));
        assert!(vcpu.mapped.contains(&(0x3800_3000, d.xen.as_ref().unwrap().grant_frames[3].hpa)));
    }

    #[test]
    fn a_32_bit_guest_maps_shared_info_with_the_compat_layout() {
        // 16 bytes: domid, size, space, then 32-bit idx and gpfn (what a 32-bit PVH kernel
        // passes, and what the 64-bit reading turned into -EINVAL before).
        let mut vcpu = FakeVcpu::new(256);
        let mut d = domain_with_xen_pages(&mut vcpu);
        d.call_compat = true;
        let mut b = [0u8; 16];
        b[0..2].copy_from_slice(&guest_abi::xen::DOMID_SELF.to_ne_bytes());
        args::put_u32(&mut b, 4, mem::XENMAPSPACE_SHARED_INFO);
        args::put_u32(&mut b, 8, 0);
        args::put_u32(&mut b, 12, 0xfeff0);
        // Bytes past the 16 are not the structure's: garbage there changes nothing.
        vcpu.mem[..24].fill(0xee);
        vcpu.mem[..16].copy_from_slice(&b);
        assert_eq!(handle(&mut d, &mut vcpu, mem::XENMEM_ADD_TO_PHYSMAP, 0), Ok(0));
        let shared = d.xen.as_ref().unwrap().shared_info.hpa;
        assert!(vcpu.mapped.contains(&(0xfeff_0000, shared)));
        // A structure that ends 16 bytes before the end of memory is readable in compat.
        vcpu.mem[240..256].copy_from_slice(&b);
        assert_eq!(handle(&mut d, &mut vcpu, mem::XENMEM_ADD_TO_PHYSMAP, 240), Ok(0));
        d.call_compat = false;
        assert_eq!(handle(&mut d, &mut vcpu, mem::XENMEM_ADD_TO_PHYSMAP, 240), Err(errno::EFAULT));
    }

    #[test]
    fn an_x86_guest_mapping_shared_info_latches_its_layout_from_its_mode() {
        use crate::page::GuestAbi;
        let mut vcpu = FakeVcpu::new(256);
        let mut d = domain_with_xen_pages(&mut vcpu);
        d.abi = GuestAbi::X86Pvh;
        d.call_compat = true;
        let mut b = [0u8; 16];
        b[0..2].copy_from_slice(&guest_abi::xen::DOMID_SELF.to_ne_bytes());
        args::put_u32(&mut b, 4, mem::XENMAPSPACE_SHARED_INFO);
        args::put_u32(&mut b, 12, 0xfeff0);
        vcpu.mem[..16].copy_from_slice(&b);
        assert_eq!(handle(&mut d, &mut vcpu, mem::XENMEM_ADD_TO_PHYSMAP, 0), Ok(0));
        assert_eq!(d.abi, GuestAbi::X86Pvh32);
        // 1024 2-level ports for a 32-bit guest: 1023 is the last one allocated.
        let mut last = 0;
        while let Ok(port) = d.evtchn.allocate(crate::evtchn::Binding::Ipi, 0) {
            last = port;
        }
        assert_eq!(last, 1023);
        // Back in 64-bit mode (kexec of a 64-bit kernel), the 64-bit layout.
        d.call_compat = false;
        vcpu.mem[..24].copy_from_slice(&request(mem::XENMAPSPACE_SHARED_INFO, 0, 0x41234));
        assert_eq!(add_to_physmap(&mut d, &mut vcpu, 0), Ok(0));
        assert_eq!(d.abi, GuestAbi::X86Pvh);
        // ARM has one layout whatever the mode.
        let mut arm = domain_with_xen_pages(&mut vcpu);
        arm.call_compat = true;
        vcpu.mem[..16].copy_from_slice(&b);
        assert_eq!(handle(&mut arm, &mut vcpu, mem::XENMEM_ADD_TO_PHYSMAP, 0), Ok(0));
        assert_eq!(arm.abi, GuestAbi::Arm);
    }

    #[test]
    fn dispatch_takes_the_layout_from_the_mode_of_the_call() {
        let mut vcpu = FakeVcpu::new(256);
        let mut d = domain_with_xen_pages(&mut vcpu);
        vcpu.mem[..16].copy_from_slice(&[0xf0, 0x7f, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x34, 0x12, 0, 0]);
        let call = |compat| arch::exit::HypercallArgs {
            nr: guest_abi::hypercall::MEMORY_OP,
            args: [mem::XENMEM_ADD_TO_PHYSMAP, 0, 0, 0, 0],
            compat,
        };
        assert_eq!(crate::hypercall::dispatch(&mut d, &mut vcpu, call(true)), crate::hypercall::Outcome::Return(0));
        assert!(vcpu.mapped.iter().any(|&(gpa, _)| gpa == 0x0123_4000));
        // Read as 64-bit, the same bytes are idx 0x1234 << 32: no such shared-info index.
        let e = crate::hypercall::dispatch(&mut d, &mut vcpu, call(false));
        assert_eq!(e, crate::hypercall::err(errno::EINVAL));
    }

    #[test]
    fn decrease_reservation_counts_the_frames_of_its_ram_in_either_layout() {
        let mut d = Domain::new(1);
        d.set_ram(0, 0x10_0000);
        let mut vcpu = FakeVcpu::new(256);
        // Compat: extent_start 0x80, 3 extents, order 0, DOMID_SELF; frames 4 bytes each, the
        // third outside RAM.
        d.call_compat = true;
        for (at, v) in [(0, 0x80u32), (4, 3), (8, 0), (12, 0)] {
            args::put_u32(&mut vcpu.mem, at, v);
        }
        vcpu.mem[16..18].copy_from_slice(&guest_abi::xen::DOMID_SELF.to_ne_bytes());
        for (i, gfn) in [0x10u32, 0x11, 0x100].iter().enumerate() {
            args::put_u32(&mut vcpu.mem, 0x80 + 4 * i, *gfn);
        }
        assert_eq!(handle(&mut d, &mut vcpu, mem::XENMEM_DECREASE_RESERVATION, 0), Ok(2));
        // Native: 8-byte handle and count, 8-byte frames.
        d.call_compat = false;
        vcpu.mem[..32].fill(0);
        args::put_u64(&mut vcpu.mem, 0, 0xa0);
        args::put_u64(&mut vcpu.mem, 8, 2);
        vcpu.mem[24..26].copy_from_slice(&guest_abi::xen::DOMID_SELF.to_ne_bytes());
        args::put_u64(&mut vcpu.mem, 0xa0, 0x20);
        args::put_u64(&mut vcpu.mem, 0xa8, 0x21);
        assert_eq!(handle(&mut d, &mut vcpu, mem::XENMEM_DECREASE_RESERVATION, 0), Ok(2));
        // Frames handed back already end the list (XTF's XSA-277 test: the second and third
        // time the same frame is 0 done).
        assert_eq!(handle(&mut d, &mut vcpu, mem::XENMEM_DECREASE_RESERVATION, 0), Ok(0));
        args::put_u64(&mut vcpu.mem, 0xa0, 0x22);
        assert_eq!(handle(&mut d, &mut vcpu, mem::XENMEM_DECREASE_RESERVATION, 0), Ok(1), "0x22, then 0x21 again");
        // Another domain's reservation: refused.
        vcpu.mem[24..26].copy_from_slice(&5u16.to_ne_bytes());
        assert_eq!(handle(&mut d, &mut vcpu, mem::XENMEM_DECREASE_RESERVATION, 0), Err(errno::ESRCH));
    }

    #[test]
    fn bad_indices_spaces_and_domains_are_refused() {
        let mut vcpu = FakeVcpu::new(256);
        let mut d = domain_with_xen_pages(&mut vcpu);
        for (space, idx, want) in [
            (mem::XENMAPSPACE_SHARED_INFO, 1, errno::EINVAL),
            (mem::XENMAPSPACE_GRANT_TABLE, GRANT_FRAMES as u64, errno::EINVAL),
            (mem::XENMAPSPACE_GRANT_TABLE, mem::XENMAPIDX_GRANT_TABLE_STATUS, errno::EINVAL),
            (mem::XENMAPSPACE_GMFN_FOREIGN, 0, errno::ENOSYS),
        ] {
            vcpu.mem[..24].copy_from_slice(&request(space, idx, 0x38000));
            assert_eq!(add_to_physmap(&mut d, &mut vcpu, 0), Err(want), "space {space} idx {idx}");
        }
        d.known_domains = vec![1, 2];
        for (dom, want) in [(7u16, errno::ESRCH), (2, errno::EPERM)] {
            let mut other = request(mem::XENMAPSPACE_SHARED_INFO, 0, 0x38000);
            other[0..2].copy_from_slice(&dom.to_ne_bytes());
            vcpu.mem[..24].copy_from_slice(&other);
            assert_eq!(add_to_physmap(&mut d, &mut vcpu, 0), Err(want), "dom {dom}");
        }
        assert_eq!(add_to_physmap(&mut d, &mut vcpu, 250), Err(errno::EFAULT));
    }

    #[test]
    fn maximum_gpfn_reads_the_domain_it_asks_about() {
        let mut d = Domain::new(1);
        d.set_ram(0x4000_0000, 0x10_0000);
        let mut vcpu = FakeVcpu::new(16);
        vcpu.mem[0..2].copy_from_slice(&guest_abi::xen::DOMID_SELF.to_ne_bytes());
        assert_eq!(handle(&mut d, &mut vcpu, mem::XENMEM_MAXIMUM_GPFN, 0), Ok(0x400ff));
        assert_eq!(handle(&mut d, &mut vcpu, mem::XENMEM_CURRENT_RESERVATION, 0), Ok(0x100));
        assert_eq!(handle(&mut d, &mut vcpu, mem::XENMEM_MAXIMUM_GPFN, 15), Err(errno::EFAULT));
        vcpu.mem[0..2].copy_from_slice(&5u16.to_ne_bytes());
        assert_eq!(handle(&mut d, &mut vcpu, mem::XENMEM_MAXIMUM_GPFN, 0), Err(errno::ESRCH));
    }
}
