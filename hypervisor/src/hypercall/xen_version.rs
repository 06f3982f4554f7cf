//! `xen_version`: who the hypervisor is and which guest features it offers.

use super::HcResult;
use crate::version::{XEN_EXTRAVERSION, XEN_MAJOR, XEN_MINOR};
use arch::exit::VirtualCpu;
use guest_abi::{errno, version as v};

pub fn handle(vcpu: &mut dyn VirtualCpu, cmd: u64, arg: u64) -> HcResult {
    match cmd {
        v::XENVER_VERSION => Ok(v::pack_version(XEN_MAJOR, XEN_MINOR) as i64),
        v::XENVER_EXTRAVERSION => {
            let mut buf = [0u8; v::EXTRAVERSION_LEN];
            buf[..XEN_EXTRAVERSION.len()].copy_from_slice(XEN_EXTRAVERSION);
            vcpu.copy_to_guest(arg, &buf).map_err(|_| errno::EFAULT)?;
            Ok(0)
        }
        v::XENVER_PAGESIZE => Ok(4096),
        _ => Err(errno::ENOSYS),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypercall::testing::FakeVcpu;

    #[test]
    fn version_packs_major_and_minor() {
        let mut vcpu = FakeVcpu::new(0);
        assert_eq!(handle(&mut vcpu, v::XENVER_VERSION, 0), Ok((4 << 16) | 17));
    }

    #[test]
    fn extraversion_is_copied_nul_padded() {
        let mut vcpu = FakeVcpu::new(64);
        vcpu.mem.fill(0xff);
        assert_eq!(handle(&mut vcpu, v::XENVER_EXTRAVERSION, 8), Ok(0));
        assert_eq!(&vcpu.mem[8..12], XEN_EXTRAVERSION);
        assert!(vcpu.mem[12..24].iter().all(|&b| b == 0));
        assert_eq!(vcpu.mem[24], 0xff);
    }

    #[test]
    fn extraversion_to_a_bad_pointer_is_efault() {
        let mut vcpu = FakeVcpu::new(8);
        assert_eq!(handle(&mut vcpu, v::XENVER_EXTRAVERSION, 0), Err(errno::EFAULT));
    }

    #[test]
    fn unknown_subcommand_is_enosys() {
        let mut vcpu = FakeVcpu::new(8);
        assert_eq!(handle(&mut vcpu, 99, 0), Err(errno::ENOSYS));
    }
}
