//! `xen_version`: who the hypervisor is and which guest features it offers.

use super::HcResult;
use crate::domain::Domain;
use crate::page::GuestAbi;
use crate::version::{XEN_EXTRAVERSION, XEN_MAJOR, XEN_MINOR};
use arch::exit::VirtualCpu;
use guest_abi::{errno, version as v};

pub fn handle(domain: &Domain, vcpu: &mut dyn VirtualCpu, cmd: u64, arg: u64) -> HcResult {
    match cmd {
        v::XENVER_VERSION => Ok(v::pack_version(XEN_MAJOR, XEN_MINOR) as i64),
        v::XENVER_EXTRAVERSION => put_string::<{ v::EXTRAVERSION_LEN }>(vcpu, arg, XEN_EXTRAVERSION),
        v::XENVER_GET_FEATURES => features(domain, vcpu, arg),
        v::XENVER_CAPABILITIES => put_string::<1024>(vcpu, arg, capabilities(domain.abi)),
        // compiler[64], compile_by[16], compile_domain[32], compile_date[32]
        v::XENVER_COMPILE_INFO => put_string::<144>(vcpu, arg, b"rustc"),
        v::XENVER_CHANGESET => put_string::<64>(vcpu, arg, crate::version::HV_VERSION.as_bytes()),
        // Translated guests share no address space with the hypervisor: no hole to report.
        v::XENVER_PLATFORM_PARAMETERS => put_string::<8>(vcpu, arg, b""),
        // The domain handle (a UUID): none assigned.
        v::XENVER_GUEST_HANDLE => put_string::<16>(vcpu, arg, b""),
        v::XENVER_PAGESIZE => Ok(4096),
        // The hypervisor's command line and build id are for privileged domains only.
        v::XENVER_COMMANDLINE | v::XENVER_BUILD_ID => Err(errno::EPERM),
        _ => Err(errno::ENOSYS),
    }
}

fn capabilities(abi: GuestAbi) -> &'static [u8] {
    match abi {
        GuestAbi::Arm => b"xen-3.0-aarch64 xen-3.0-armv7l ",
        GuestAbi::X86Pvh | GuestAbi::X86Pvh32 => b"xen-3.0-x86_64 hvm-3.0-x86_32 hvm-3.0-x86_32p hvm-3.0-x86_64",
    }
}

/// `xen_feature_info { submap_idx, submap }`: only submap 0 exists.
fn features(domain: &Domain, vcpu: &mut dyn VirtualCpu, arg: u64) -> HcResult {
    let mut b = [0u8; 8];
    vcpu.copy_from_guest(arg, &mut b[..4]).map_err(|_| errno::EFAULT)?;
    if u32::from_ne_bytes(b[..4].try_into().unwrap()) != 0 {
        return Err(errno::EINVAL);
    }
    b[4..].copy_from_slice(&domain.abi.features().to_ne_bytes());
    vcpu.copy_to_guest(arg, &b).map_err(|_| errno::EFAULT)?;
    Ok(0)
}

/// Write `text` NUL-padded into an `N`-byte guest buffer.
fn put_string<const N: usize>(vcpu: &mut dyn VirtualCpu, arg: u64, text: &[u8]) -> HcResult {
    let mut buf = [0u8; N];
    let n = text.len().min(N - 1);
    buf[..n].copy_from_slice(&text[..n]);
    vcpu.copy_to_guest(arg, &buf).map_err(|_| errno::EFAULT)?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypercall::testing::FakeVcpu;
    use guest_abi::features as f;

    fn dom() -> Domain {
        Domain::new(1)
    }

    #[test]
    fn version_packs_major_and_minor() {
        let mut vcpu = FakeVcpu::new(0);
        assert_eq!(handle(&dom(), &mut vcpu, v::XENVER_VERSION, 0), Ok((4 << 16) | 17));
    }

    #[test]
    fn extraversion_is_copied_nul_padded() {
        let mut vcpu = FakeVcpu::new(64);
        vcpu.mem.fill(0xff);
        assert_eq!(handle(&dom(), &mut vcpu, v::XENVER_EXTRAVERSION, 8), Ok(0));
        assert_eq!(&vcpu.mem[8..12], XEN_EXTRAVERSION);
        assert!(vcpu.mem[12..24].iter().all(|&b| b == 0));
        assert_eq!(vcpu.mem[24], 0xff);
    }

    #[test]
    fn arm_domu_features_are_translated_and_never_dom0() {
        let mut vcpu = FakeVcpu::new(16);
        assert_eq!(handle(&dom(), &mut vcpu, v::XENVER_GET_FEATURES, 0), Ok(0));
        let submap = u32::from_ne_bytes(vcpu.mem[4..8].try_into().unwrap());
        assert_ne!(submap & (1 << f::XENFEAT_AUTO_TRANSLATED_PHYSMAP), 0);
        assert_ne!(submap & (1 << f::XENFEAT_NOT_DIRECT_MAPPED), 0);
        assert_eq!(submap & (1 << f::XENFEAT_DOM0), 0);
        vcpu.mem[0] = 1;
        assert_eq!(handle(&dom(), &mut vcpu, v::XENVER_GET_FEATURES, 0), Err(errno::EINVAL));
    }

    #[test]
    fn bad_pointers_and_privileged_queries_are_refused() {
        let mut vcpu = FakeVcpu::new(8);
        assert_eq!(handle(&dom(), &mut vcpu, v::XENVER_EXTRAVERSION, 0), Err(errno::EFAULT));
        assert_eq!(handle(&dom(), &mut vcpu, v::XENVER_CAPABILITIES, 0), Err(errno::EFAULT));
        assert_eq!(handle(&dom(), &mut vcpu, v::XENVER_GET_FEATURES, 6), Err(errno::EFAULT));
        assert_eq!(handle(&dom(), &mut vcpu, v::XENVER_COMMANDLINE, 0), Err(errno::EPERM));
        assert_eq!(handle(&dom(), &mut vcpu, 99, 0), Err(errno::ENOSYS));
    }
}
