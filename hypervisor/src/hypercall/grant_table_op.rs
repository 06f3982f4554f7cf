//! `grant_table_op`: the size and version of the domain's grant table (v1), mapping grants
//! of other domains (`grant_map`) and copies through grants (`grant_copy`).

use super::HcResult;
use super::args;
use crate::domain::{Domain, GRANT_FRAMES, Peers};
use arch::exit::VirtualCpu;
use guest_abi::errno;
use guest_abi::grant_table::{
    self as gt, GnttabGetStatusFrames, GnttabGetVersion, GnttabQuerySize, GnttabSetVersion, GnttabSetupTable,
};

pub fn handle(
    domain: &mut Domain,
    peers: &mut dyn Peers,
    vcpu: &mut dyn VirtualCpu,
    cmd: u64,
    uop: u64,
    count: u64,
) -> HcResult {
    match cmd {
        gt::GNTTABOP_MAP_GRANT_REF => super::grant_map::map(domain, peers, vcpu, uop, count),
        gt::GNTTABOP_UNMAP_GRANT_REF => super::grant_map::unmap(domain, peers, vcpu, uop, count),
        gt::GNTTABOP_COPY => super::grant_copy::copy(domain, peers, vcpu, uop, count),
        gt::GNTTABOP_QUERY_SIZE
        | gt::GNTTABOP_SET_VERSION
        | gt::GNTTABOP_GET_VERSION
        | gt::GNTTABOP_SETUP_TABLE
        | gt::GNTTABOP_GET_STATUS_FRAMES
            if count != 1 =>
        {
            Err(errno::EINVAL)
        }
        gt::GNTTABOP_QUERY_SIZE => query_size(domain, vcpu, uop),
        gt::GNTTABOP_SETUP_TABLE => setup_table(domain, vcpu, uop),
        gt::GNTTABOP_GET_STATUS_FRAMES => {
            // Version 1 has no status frames: the call is answered, the operation refused.
            let mut op: GnttabGetStatusFrames = args::read_abi(domain.call_compat, vcpu, uop)?;
            op.status = match args::own_domain(domain, op.dom) {
                Ok(()) => gt::GNTST_GENERAL_ERROR,
                Err(e) => foreign_status(e),
            };
            args::write_abi(domain.call_compat, vcpu, uop, &op).map(|_| 0)
        }
        gt::GNTTABOP_SET_VERSION => {
            // Only version 1 is offered. Xen limited to it (`max_grant_version = 1`) answers a
            // request for version 2 with -ENOSYS, "as before set_version was introduced" (so
            // a guest falls back to version 1), anything else but 1 with -EINVAL; and it
            // reports the version in force either way.
            let asked: GnttabSetVersion = args::read_struct(vcpu, uop)?;
            args::write_struct(vcpu, uop, &GnttabSetVersion { version: 1 })?;
            match asked.version {
                1 => Ok(0),
                2 => Err(errno::ENOSYS),
                _ => Err(errno::EINVAL),
            }
        }
        gt::GNTTABOP_GET_VERSION => {
            let mut op: GnttabGetVersion = args::read_struct(vcpu, uop)?;
            args::own_domain(domain, op.dom)?;
            op.version = 1;
            args::write_struct(vcpu, uop, &op).map(|_| 0)
        }
        _ => Err(errno::ENOSYS),
    }
}

/// How Xen reports, in a status, a domain that is not the caller's: missing, or not ours.
fn foreign_status(e: i64) -> i16 {
    if e == errno::ESRCH { gt::GNTST_BAD_DOMAIN } else { gt::GNTST_PERMISSION_DENIED }
}

/// `GNTTABOP_setup_table`: the frames of the caller's table, as the guest numbers them. A
/// translated guest places them itself (`add_to_physmap`); one not placed yet is reported as
/// Xen's invalid frame. More frames than the table has is `GNTST_general_error`.
fn setup_table(domain: &mut Domain, vcpu: &mut dyn VirtualCpu, uop: u64) -> HcResult {
    let compat = domain.call_compat;
    let mut op: GnttabSetupTable = args::read_abi(compat, vcpu, uop)?;
    op.status = if op.nr_frames as usize > GRANT_FRAMES {
        gt::GNTST_GENERAL_ERROR
    } else if let Err(e) = args::own_domain(domain, op.dom) {
        foreign_status(e)
    } else {
        for i in 0..op.nr_frames as usize {
            let gfn = domain.grant_frame_gfns[i].unwrap_or(gt::INVALID_FRAME);
            // A 32-bit guest's frame numbers are 32-bit (Xen's invalid frame included).
            let width = args::ulong_size(compat);
            let at = op.frame_list.checked_add(width * i as u64).ok_or(errno::EFAULT)?;
            args::write(vcpu, at, &gfn.to_ne_bytes()[..width as usize])?;
        }
        gt::GNTST_OKAY
    };
    args::write_struct(vcpu, uop, &op).map(|_| 0)
}

fn query_size(domain: &mut Domain, vcpu: &mut dyn VirtualCpu, uop: u64) -> HcResult {
    let mut op: GnttabQuerySize = args::read_struct(vcpu, uop)?;
    // Xen reports a foreign domain in the status: missing, or not ours to ask about.
    op.status = match args::own_domain(domain, op.dom) {
        Ok(()) => {
            (op.nr_frames, op.max_nr_frames) = (GRANT_FRAMES as u32, GRANT_FRAMES as u32);
            gt::GNTST_OKAY
        }
        Err(e) => foreign_status(e),
    };
    args::write_struct(vcpu, uop, &op).map(|_| 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypercall::testing::FakeVcpu;

    #[test]
    fn query_size_reports_our_frames() {
        let mut d = Domain::new(1);
        let mut vcpu = FakeVcpu::new(32);
        vcpu.mem[0..2].copy_from_slice(&guest_abi::xen::DOMID_SELF.to_ne_bytes());
        assert_eq!(handle(&mut d, &mut crate::domain::NoPeers, &mut vcpu, gt::GNTTABOP_QUERY_SIZE, 0, 1), Ok(0));
        assert_eq!(args::u32_at(&vcpu.mem, 4), GRANT_FRAMES as u32);
        assert_eq!(args::u32_at(&vcpu.mem, 8), GRANT_FRAMES as u32);
        assert_eq!(i16::from_ne_bytes([vcpu.mem[12], vcpu.mem[13]]), gt::GNTST_OKAY);
        // As Xen says it: a domain that does not exist, then one that is not ours.
        d.known_domains = vec![1, 2];
        for (dom, status) in [(9u16, gt::GNTST_BAD_DOMAIN), (2, gt::GNTST_PERMISSION_DENIED)] {
            vcpu.mem[0..2].copy_from_slice(&dom.to_ne_bytes());
            assert_eq!(handle(&mut d, &mut crate::domain::NoPeers, &mut vcpu, gt::GNTTABOP_QUERY_SIZE, 0, 1), Ok(0));
            assert_eq!(i16::from_ne_bytes([vcpu.mem[12], vcpu.mem[13]]), status, "dom {dom}");
        }
    }

    #[test]
    fn only_version_one_and_sane_counts() {
        let mut d = Domain::new(1);
        let mut vcpu = FakeVcpu::new(32);
        for (asked, refused) in [(2, errno::ENOSYS), (3, errno::EINVAL), (0, errno::EINVAL)] {
            args::put_u32(&mut vcpu.mem, 0, asked);
            assert_eq!(
                handle(&mut d, &mut crate::domain::NoPeers, &mut vcpu, gt::GNTTABOP_SET_VERSION, 0, 1),
                Err(refused),
                "version {asked}"
            );
            assert_eq!(args::u32_at(&vcpu.mem, 0), 1);
        }
        assert_eq!(handle(&mut d, &mut crate::domain::NoPeers, &mut vcpu, gt::GNTTABOP_SET_VERSION, 0, 1), Ok(0));
        assert_eq!(
            handle(&mut d, &mut crate::domain::NoPeers, &mut vcpu, gt::GNTTABOP_QUERY_SIZE, 0, u64::MAX),
            Err(errno::EINVAL)
        );
        assert_eq!(
            handle(&mut d, &mut crate::domain::NoPeers, &mut vcpu, gt::GNTTABOP_DUMP_TABLE, 0, 1),
            Err(errno::ENOSYS)
        );
        assert_eq!(
            handle(&mut d, &mut crate::domain::NoPeers, &mut vcpu, gt::GNTTABOP_QUERY_SIZE, 30, 1),
            Err(errno::EFAULT)
        );
    }

    #[test]
    fn a_32_bit_guest_gets_its_frames_as_32_bit_numbers() {
        use guest_abi::compat::GnttabSetupTable32;
        use zerocopy::IntoBytes;
        let mut vcpu = FakeVcpu::new(128);
        let mut d = crate::hypercall::testing::domain_with_xen_pages(&mut vcpu);
        d.call_compat = true;
        d.grant_frame_gfns[0] = Some(0x4_0122);
        d.grant_frame_gfns[1] = Some(0x4_0123);
        let op =
            GnttabSetupTable32 { dom: guest_abi::xen::DOMID_SELF, nr_frames: 2, frame_list: 64, ..Default::default() };
        vcpu.mem[..16].copy_from_slice(op.as_bytes());
        vcpu.mem[64..80].fill(0xee);
        assert_eq!(handle(&mut d, &mut crate::domain::NoPeers, &mut vcpu, gt::GNTTABOP_SETUP_TABLE, 0, 1), Ok(0));
        // The status at offset 8 of the 16-byte structure; frames 4 bytes apart.
        assert_eq!(i16::from_ne_bytes([vcpu.mem[8], vcpu.mem[9]]), gt::GNTST_OKAY);
        assert_eq!((args::u32_at(&vcpu.mem, 64), args::u32_at(&vcpu.mem, 68)), (0x4_0122, 0x4_0123));
        assert_eq!(args::u64_at(&vcpu.mem, 72), u64::from_ne_bytes([0xee; 8]), "nothing beyond two frames");
    }

    #[test]
    fn setup_table_lists_where_the_guest_put_its_frames() {
        let mut vcpu = FakeVcpu::new(128);
        let mut d = crate::hypercall::testing::domain_with_xen_pages(&mut vcpu);
        d.grant_frame_gfns[1] = Some(0x4_0123);
        let op =
            GnttabSetupTable { dom: guest_abi::xen::DOMID_SELF, nr_frames: 2, frame_list: 64, ..Default::default() };
        let put = |vcpu: &mut FakeVcpu, op: GnttabSetupTable| {
            use zerocopy::IntoBytes;
            vcpu.mem[..24].copy_from_slice(op.as_bytes());
        };
        put(&mut vcpu, op);
        assert_eq!(handle(&mut d, &mut crate::domain::NoPeers, &mut vcpu, gt::GNTTABOP_SETUP_TABLE, 0, 1), Ok(0));
        assert_eq!(i16::from_ne_bytes([vcpu.mem[8], vcpu.mem[9]]), gt::GNTST_OKAY);
        assert_eq!(args::u64_at(&vcpu.mem, 64), gt::INVALID_FRAME, "not placed yet");
        assert_eq!(args::u64_at(&vcpu.mem, 72), 0x4_0123);
        put(&mut vcpu, GnttabSetupTable { nr_frames: GRANT_FRAMES as u32 + 1, ..op });
        assert_eq!(handle(&mut d, &mut crate::domain::NoPeers, &mut vcpu, gt::GNTTABOP_SETUP_TABLE, 0, 1), Ok(0));
        assert_eq!(i16::from_ne_bytes([vcpu.mem[8], vcpu.mem[9]]), gt::GNTST_GENERAL_ERROR);
        put(&mut vcpu, GnttabSetupTable { frame_list: 124, ..op });
        let r = handle(&mut d, &mut crate::domain::NoPeers, &mut vcpu, gt::GNTTABOP_SETUP_TABLE, 0, 1);
        assert_eq!(r, Err(errno::EFAULT), "a frame list past guest memory");
        // Version 1 has no status frames.
        vcpu.mem[..16].fill(0);
        vcpu.mem[4..6].copy_from_slice(&guest_abi::xen::DOMID_SELF.to_ne_bytes());
        assert_eq!(handle(&mut d, &mut crate::domain::NoPeers, &mut vcpu, gt::GNTTABOP_GET_STATUS_FRAMES, 0, 1), Ok(0));
        assert_eq!(i16::from_ne_bytes([vcpu.mem[6], vcpu.mem[7]]), gt::GNTST_GENERAL_ERROR);
    }
}
