//! `hvm_op`: HVM parameters (where the PV console is, how upcalls are delivered).

use super::HcResult;
use super::args;
use crate::domain::Domain;
use arch::exit::VirtualCpu;
use guest_abi::errno;
use guest_abi::hvm::{self, XenHvmParam};

pub fn handle(domain: &mut Domain, vcpu: &mut dyn VirtualCpu, op: u64, arg: u64) -> HcResult {
    match op {
        hvm::HVMOP_GET_PARAM | hvm::HVMOP_SET_PARAM => param(domain, vcpu, op == hvm::HVMOP_SET_PARAM, arg),
        _ => Err(errno::ENOSYS),
    }
}

fn param(domain: &mut Domain, vcpu: &mut dyn VirtualCpu, set: bool, arg: u64) -> HcResult {
    let mut p: XenHvmParam = args::read_struct(vcpu, arg)?;
    args::own_domain(domain, p.domid)?;
    let index = p.index;
    if index >= hvm::HVM_NR_PARAMS {
        return Err(errno::EINVAL);
    }
    if set {
        // A guest may only choose how its own upcall arrives; the rest is the builder's.
        if index != hvm::HVM_PARAM_CALLBACK_IRQ {
            return Err(errno::EPERM);
        }
        let value = p.value;
        domain.params[index as usize] = value;
        domain.latch_shared_info_layout();
        // x86: type "vector" delivers the upcall on an IDT vector of the guest's choosing.
        let is_vector = (value & hvm::HVM_PARAM_CALLBACK_IRQ_TYPE_MASK) >> hvm::HVM_PARAM_CALLBACK_TYPE_SHIFT
            == hvm::HVM_PARAM_CALLBACK_TYPE_VECTOR;
        vcpu.set_upcall_vector(is_vector.then_some(value as u8));
        return Ok(0);
    }
    p.value = domain.params[index as usize];
    args::write_struct(vcpu, arg, &p).map(|_| 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypercall::testing::FakeVcpu;

    fn put(vcpu: &mut FakeVcpu, domid: u16, index: u32, value: u64) {
        vcpu.mem[0..2].copy_from_slice(&domid.to_ne_bytes());
        args::put_u32(&mut vcpu.mem, 4, index);
        args::put_u64(&mut vcpu.mem, 8, value);
    }

    #[test]
    fn get_returns_what_the_builder_set() {
        let mut d = Domain::new(1);
        d.params[hvm::HVM_PARAM_CONSOLE_PFN as usize] = 0x39000;
        let mut vcpu = FakeVcpu::new(16);
        put(&mut vcpu, guest_abi::xen::DOMID_SELF, hvm::HVM_PARAM_CONSOLE_PFN, 0);
        assert_eq!(handle(&mut d, &mut vcpu, hvm::HVMOP_GET_PARAM, 0), Ok(0));
        assert_eq!(args::u64_at(&vcpu.mem, 8), 0x39000);
    }

    #[test]
    fn guests_set_only_their_callback_and_only_their_own() {
        let mut d = Domain::new(1);
        let mut vcpu = FakeVcpu::new(16);
        put(&mut vcpu, 1, hvm::HVM_PARAM_CALLBACK_IRQ, 0xf3);
        assert_eq!(handle(&mut d, &mut vcpu, hvm::HVMOP_SET_PARAM, 0), Ok(0));
        assert_eq!(d.params[0], 0xf3);
        assert_eq!(vcpu.upcall_vector, Some(None), "a GSI is no vector");
        put(&mut vcpu, 1, hvm::HVM_PARAM_CALLBACK_IRQ, 0x0200_0000_0000_00f3);
        assert_eq!(handle(&mut d, &mut vcpu, hvm::HVMOP_SET_PARAM, 0), Ok(0));
        assert_eq!(vcpu.upcall_vector, Some(Some(0xf3)));
        put(&mut vcpu, 1, hvm::HVM_PARAM_CONSOLE_PFN, 5);
        assert_eq!(handle(&mut d, &mut vcpu, hvm::HVMOP_SET_PARAM, 0), Err(errno::EPERM));
        // Another domain: -EPERM if it exists, -ESRCH if not (real Xen's answers).
        d.known_domains = vec![1, 2];
        put(&mut vcpu, 2, hvm::HVM_PARAM_CALLBACK_IRQ, 5);
        assert_eq!(handle(&mut d, &mut vcpu, hvm::HVMOP_GET_PARAM, 0), Err(errno::EPERM));
        put(&mut vcpu, 7, hvm::HVM_PARAM_CALLBACK_IRQ, 5);
        assert_eq!(handle(&mut d, &mut vcpu, hvm::HVMOP_GET_PARAM, 0), Err(errno::ESRCH));
        put(&mut vcpu, 1, hvm::HVM_NR_PARAMS, 5);
        assert_eq!(handle(&mut d, &mut vcpu, hvm::HVMOP_GET_PARAM, 0), Err(errno::EINVAL));
        assert_eq!(handle(&mut d, &mut vcpu, hvm::HVMOP_GET_PARAM, 12), Err(errno::EFAULT));
    }
}
