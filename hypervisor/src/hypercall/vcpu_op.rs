//! `vcpu_op`: where a vCPU's `vcpu_info` and runstate live, and its timers.

use super::HcResult;
use super::args;
use crate::domain::{Domain, VcpuInfoLoc};
use crate::page::{PAGE_SIZE, vcpu_info};
use crate::runstate::{Area, State};
use arch::exit::VirtualCpu;
use guest_abi::errno;
use guest_abi::vcpu::{self as v, VcpuRegisterVcpuInfo, VcpuRunstateInfo};

pub fn handle(domain: &mut Domain, vcpu: &mut dyn VirtualCpu, cmd: u64, vcpu_id: u64, arg: u64) -> HcResult {
    let id = usize::try_from(vcpu_id).ok().filter(|&i| i < domain.vcpus.len()).ok_or(errno::ENOENT)?;
    match cmd {
        v::VCPUOP_REGISTER_VCPU_INFO => register_vcpu_info(domain, vcpu, id, arg),
        v::VCPUOP_REGISTER_RUNSTATE_MEMORY_AREA => {
            let area: v::VcpuRegisterRunstateMemoryArea = args::read_struct(vcpu, arg)?;
            let runstate = &mut domain.vcpus[id].runstate;
            runstate.area = runstate_area(vcpu, area.addr, domain.call_compat);
            if area.addr != 0 {
                // Xen fills it at once; an unmapped area is the guest's problem, not an error.
                let _ = args::write_abi(domain.call_compat, vcpu, area.addr, &runstate.info());
            }
            Ok(0)
        }
        v::VCPUOP_GET_RUNSTATE_INFO => {
            let info = domain.vcpus[id].runstate.info();
            args::write_abi(domain.call_compat, vcpu, arg, &info).map(|_| 0)
        }
        // Up from its CPU_ON (vCPU 0: from the start) until it powers off.
        v::VCPUOP_IS_UP => Ok(i64::from(domain.vcpus[id].runstate.state != State::Offline)),
        // No periodic Xen timer is ever armed, so stopping it is a no-op success.
        v::VCPUOP_STOP_PERIODIC_TIMER => Ok(0),
        // The one-shot timer lives in the backend, which raises VIRQ_TIMER through the core.
        v::VCPUOP_SET_SINGLESHOT_TIMER | v::VCPUOP_STOP_SINGLESHOT_TIMER if id != domain.current_vcpu => {
            Err(errno::EINVAL)
        }
        v::VCPUOP_SET_SINGLESHOT_TIMER => {
            let op: v::VcpuSetSingleshotTimer = args::read_abi(domain.call_compat, vcpu, arg)?;
            let deadline = op.timeout_abs_ns;
            if vcpu.set_xen_timer(Some(deadline)) { Ok(0) } else { Err(errno::ENOSYS) }
        }
        v::VCPUOP_STOP_SINGLESHOT_TIMER => {
            vcpu.set_xen_timer(None);
            Ok(0)
        }
        _ => Err(errno::ENOSYS),
    }
}

/// Move `vcpu_info` to guest memory. Like Xen, flag every selector bit afterwards so no event
/// raised before the move is lost.
fn register_vcpu_info(domain: &mut Domain, vcpu: &mut dyn VirtualCpu, id: usize, arg: u64) -> HcResult {
    let VcpuRegisterVcpuInfo { mfn, offset, .. } = args::read_struct(vcpu, arg)?;
    let offset = offset as usize;
    let size = domain.abi.vcpu_info_size();
    if offset > PAGE_SIZE - size || matches!(domain.vcpus[id].info, VcpuInfoLoc::Guest(_)) {
        return Err(errno::EINVAL);
    }
    let gpa = mfn.checked_mul(PAGE_SIZE as u64).ok_or(errno::EINVAL)? + offset as u64;
    let mut info = [0u8; 64];
    if let (VcpuInfoLoc::Shared(slot), Some(xen)) = (domain.vcpus[id].info, domain.xen.as_ref()) {
        info[..size].copy_from_slice(&xen.shared_info.data[slot * size..(slot + 1) * size]);
    }
    info[vcpu_info::UPCALL_PENDING] = 1;
    // Every selector bit of the layout's selector (32 bits for a 32-bit x86 guest).
    let sel = domain.abi.pending_sel_offset();
    let width = domain.abi.event_word_bits() as usize / 8;
    info[sel..sel + width].fill(0xff);
    vcpu.write_guest_phys(gpa, &info[..size]).map_err(|_| errno::EINVAL)?;
    domain.vcpus[id].info = VcpuInfoLoc::Guest(gpa);
    // x86 Linux registers a secondary vCPU's area from the vCPU bringing it up.
    if id == domain.current_vcpu {
        vcpu.raise_upcall();
    } else if id < 64 {
        domain.remote_upcalls |= 1 << id;
    }
    Ok(0)
}

/// Where the copies of a runstate registered at guest virtual `gva` go: its guest-physical
/// address now, through the caller's page tables, if the whole record lies in one
/// contiguous stretch (`None`: unregistered, unmapped, or not kept up to date).
fn runstate_area(vcpu: &mut dyn VirtualCpu, gva: u64, compat: bool) -> Option<Area> {
    if gva == 0 {
        return None;
    }
    let last = args::abi_size::<VcpuRunstateInfo>(compat) - 1;
    let gpa = vcpu.guest_phys_of(gva)?;
    (vcpu.guest_phys_of(gva.checked_add(last)?)? == gpa + last).then_some(Area { gpa, compat })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypercall::testing::FakeVcpu;

    #[test]
    fn runstate_and_timer_follow_the_callers_layout() {
        let mut d = Domain::new(1);
        d.vcpus[0].runstate.enter(State::Running, 0);
        let mut vcpu = FakeVcpu::new(0x100);
        // 64-bit: state at 0, state_entry_time at 8; 32-bit: state_entry_time at 4, 44 bytes.
        vcpu.mem[0x80..0xc0].fill(0xee);
        d.call_compat = true;
        assert_eq!(handle(&mut d, &mut vcpu, v::VCPUOP_GET_RUNSTATE_INFO, 0, 0x80), Ok(0));
        assert_eq!(args::u32_at(&vcpu.mem, 0x80), v::RUNSTATE_RUNNING as u32);
        assert_eq!(args::u64_at(&vcpu.mem, 0x84), 0);
        assert_eq!(vcpu.mem[0x80 + 44], 0xee, "44 bytes written, no more");
        // A compat single-shot timer is 12 bytes: the deadline, then the flags.
        args::put_u64(&mut vcpu.mem, 0xf4, 0x1_2345_6789);
        args::put_u32(&mut vcpu.mem, 0xfc, 0);
        assert_eq!(handle(&mut d, &mut vcpu, v::VCPUOP_SET_SINGLESHOT_TIMER, 0, 0xf4), Ok(0));
        assert_eq!(vcpu.xen_timer, Some(Some(0x1_2345_6789)));
        d.call_compat = false;
        assert_eq!(handle(&mut d, &mut vcpu, v::VCPUOP_SET_SINGLESHOT_TIMER, 0, 0xf4), Err(errno::EFAULT));
    }

    #[test]
    fn vcpu_info_moves_to_guest_memory_with_everything_flagged() {
        let mut d = Domain::new(1);
        let mut vcpu = FakeVcpu::new(0x3000);
        args::put_u64(&mut vcpu.mem, 0, 2); // frame 2
        args::put_u32(&mut vcpu.mem, 8, 0x40);
        assert_eq!(handle(&mut d, &mut vcpu, v::VCPUOP_REGISTER_VCPU_INFO, 0, 0), Ok(0));
        assert_eq!(d.vcpus[0].info, VcpuInfoLoc::Guest(0x2040));
        assert_eq!(vcpu.mem[0x2040 + vcpu_info::UPCALL_PENDING], 1);
        assert_eq!(args::u64_at(&vcpu.mem, 0x2040 + vcpu_info::PENDING_SEL), u64::MAX);
        assert_eq!(vcpu.upcalls, 1);
        // Once only, like Xen.
        assert_eq!(handle(&mut d, &mut vcpu, v::VCPUOP_REGISTER_VCPU_INFO, 0, 0), Err(errno::EINVAL));
    }

    #[test]
    fn a_siblings_vcpu_info_registered_by_another_vcpu_raises_its_upcall() {
        let mut d = Domain::with_vcpus(1, 2);
        let mut vcpu = FakeVcpu::new(0x3000);
        args::put_u64(&mut vcpu.mem, 0, 2);
        args::put_u32(&mut vcpu.mem, 8, 0x80);
        assert_eq!(handle(&mut d, &mut vcpu, v::VCPUOP_REGISTER_VCPU_INFO, 1, 0), Ok(0));
        assert_eq!(d.vcpus[1].info, VcpuInfoLoc::Guest(0x2080));
        assert_eq!((vcpu.upcalls, d.remote_upcalls), (0, 0b10));
    }

    #[test]
    fn bad_vcpu_offset_and_frame_are_refused() {
        let mut d = Domain::new(1);
        let mut vcpu = FakeVcpu::new(0x100);
        assert_eq!(handle(&mut d, &mut vcpu, v::VCPUOP_REGISTER_VCPU_INFO, 1, 0), Err(errno::ENOENT));
        args::put_u32(&mut vcpu.mem, 8, 4090);
        assert_eq!(handle(&mut d, &mut vcpu, v::VCPUOP_REGISTER_VCPU_INFO, 0, 0), Err(errno::EINVAL));
        args::put_u64(&mut vcpu.mem, 0, 0x9999); // outside guest memory
        args::put_u32(&mut vcpu.mem, 8, 0);
        assert_eq!(handle(&mut d, &mut vcpu, v::VCPUOP_REGISTER_VCPU_INFO, 0, 0), Err(errno::EINVAL));
        args::put_u64(&mut vcpu.mem, 0, u64::MAX);
        assert_eq!(handle(&mut d, &mut vcpu, v::VCPUOP_REGISTER_VCPU_INFO, 0, 0), Err(errno::EINVAL));
    }

    #[test]
    fn singleshot_timer_goes_to_the_backend() {
        let mut d = Domain::new(1);
        let mut vcpu = FakeVcpu::new(0x100);
        args::put_u64(&mut vcpu.mem, 0x10, 123_456_789);
        assert_eq!(handle(&mut d, &mut vcpu, v::VCPUOP_SET_SINGLESHOT_TIMER, 0, 0x10), Ok(0));
        assert_eq!(vcpu.xen_timer, Some(Some(123_456_789)));
        assert_eq!(handle(&mut d, &mut vcpu, v::VCPUOP_STOP_SINGLESHOT_TIMER, 0, 0), Ok(0));
        assert_eq!(vcpu.xen_timer, Some(None));
        assert_eq!(handle(&mut d, &mut vcpu, v::VCPUOP_SET_SINGLESHOT_TIMER, 0, 0xfc), Err(errno::EFAULT));
        assert_eq!(handle(&mut d, &mut vcpu, v::VCPUOP_SET_SINGLESHOT_TIMER, 1, 0x10), Err(errno::ENOENT));
    }

    #[test]
    fn a_vcpu_is_up_unless_offline() {
        let mut d = Domain::with_vcpus(1, 2);
        let mut vcpu = FakeVcpu::new(0x10);
        assert_eq!(handle(&mut d, &mut vcpu, v::VCPUOP_IS_UP, 0, 0), Ok(1));
        assert_eq!(handle(&mut d, &mut vcpu, v::VCPUOP_IS_UP, 1, 0), Ok(0), "not powered on yet");
        d.vcpus[1].runstate.enter(State::Runnable, 5);
        assert_eq!(handle(&mut d, &mut vcpu, v::VCPUOP_IS_UP, 1, 0), Ok(1));
        assert_eq!(handle(&mut d, &mut vcpu, v::VCPUOP_IS_UP, 2, 0), Err(errno::ENOENT));
    }

    #[test]
    fn runstate_area_is_filled_when_registered() {
        let mut d = Domain::new(1);
        d.vcpus[0].runstate.enter(State::Running, 0);
        let mut vcpu = FakeVcpu::new(0x100);
        vcpu.mem[0x40] = 0xff;
        args::put_u64(&mut vcpu.mem, 0, 0x40);
        assert_eq!(handle(&mut d, &mut vcpu, v::VCPUOP_REGISTER_RUNSTATE_MEMORY_AREA, 0, 0), Ok(0));
        assert_eq!(d.vcpus[0].runstate.area, Some(Area { gpa: 0x40, compat: false }));
        assert_eq!(vcpu.mem[0x40], 0, "state RUNSTATE_running");
        // One that runs past the end of guest memory is written once, then not kept.
        args::put_u64(&mut vcpu.mem, 0, 0xe0);
        assert_eq!(handle(&mut d, &mut vcpu, v::VCPUOP_REGISTER_RUNSTATE_MEMORY_AREA, 0, 0), Ok(0));
        assert_eq!(d.vcpus[0].runstate.area, None);
    }
}
