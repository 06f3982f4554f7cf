//! Hypercall dispatch: one function per Xen hypercall family, reached by number.
//!
//! Handlers read guest memory only through [`VirtualCpu`]'s copy functions (guest pointers
//! are untrusted: copy in, validate, copy out) and answer bad input with a Xen error code.

mod args;
mod console_io;
mod event_channel_op;
mod event_fifo_op;
#[cfg(test)]
mod evtchn_model_tests;
#[cfg(test)]
mod fuzz_tests;
mod grant_copy;
pub mod grant_map;
mod grant_table_op;
mod hvm_op;
mod memory_op;
pub mod sched_ctl;
mod sched_op;
mod vcpu_op;
mod xen_version;

use crate::domain::{Domain, NoPeers, Peers};
use arch::exit::{HypercallArgs, VirtualCpu};
use guest_abi::{errno, hypercall as nr};

/// What the run loop must do after a hypercall.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Return this value to the guest and resume it.
    Return(i64),
    /// Give up the CPU, then resume the guest with result 0.
    Yield,
    /// Block until an event is pending, then resume with result 0.
    Block,
    /// The domain asked to shut down with this `SHUTDOWN_*` reason.
    Shutdown(u32),
    /// `sysctl`/`domctl` (this number, this argument): they reach the CPU pools'
    /// schedulers, which the run loop holds and answers them with (`sched_ctl`).
    SchedCtl(u64, u64),
}

/// The result of a handler that either returns to the guest or fails with a Xen errno.
pub type HcResult = Result<i64, i64>;

/// Negated Xen error value, as a hypercall returns it.
pub const fn err(e: i64) -> Outcome {
    Outcome::Return(-e)
}

impl From<HcResult> for Outcome {
    fn from(r: HcResult) -> Self {
        match r {
            Ok(v) => Outcome::Return(v),
            Err(e) => err(e),
        }
    }
}

/// Handle one hypercall from `vcpu` of `domain`, a domain alone.
pub fn dispatch(domain: &mut Domain, vcpu: &mut dyn VirtualCpu, call: HypercallArgs) -> Outcome {
    dispatch_with(domain, &mut NoPeers, vcpu, call)
}

/// Handle one hypercall from `vcpu` of `domain`; `peers` are the other domains, for the calls
/// that reach them.
pub fn dispatch_with(
    domain: &mut Domain,
    peers: &mut dyn Peers,
    vcpu: &mut dyn VirtualCpu,
    call: HypercallArgs,
) -> Outcome {
    if call.nr == nr::SCHED_OP {
        domain.call_compat = call.compat;
        return sched_op::handle(domain, vcpu, call.args[0], call.args[1]);
    }
    if call.nr == nr::SYSCTL || call.nr == nr::DOMCTL {
        domain.call_compat = call.compat;
        return Outcome::SchedCtl(call.nr, call.args[0]);
    }
    dispatch_returning(domain, peers, vcpu, call).into()
}

/// True if hypercall `nr` always returns to its caller with a value (never yields, blocks
/// or ends the domain): [`dispatch_returning`] takes it, and the run loop may handle it
/// without a scheduling decision.
pub fn returns_in_place(nr: u64) -> bool {
    // sched_op may yield, block or end the domain; sysctl/domctl go to the run loop.
    nr != nr::SCHED_OP && nr != nr::SYSCTL && nr != nr::DOMCTL
}

/// Every hypercall for which [`returns_in_place`] holds (ENOSYS for unknown numbers).
pub fn dispatch_returning(
    domain: &mut Domain,
    peers: &mut dyn Peers,
    vcpu: &mut dyn VirtualCpu,
    call: HypercallArgs,
) -> HcResult {
    let [a0, a1, a2, ..] = call.args;
    domain.call_compat = call.compat;
    match call.nr {
        nr::XEN_VERSION => xen_version::handle(domain, vcpu, a0, a1),
        nr::CONSOLE_IO => console_io::handle(domain, vcpu, a0, a1, a2),
        nr::MEMORY_OP => memory_op::handle(domain, vcpu, a0, a1),
        nr::HVM_OP => hvm_op::handle(domain, vcpu, a0, a1),
        nr::VCPU_OP => vcpu_op::handle(domain, vcpu, a0, a1, a2),
        nr::EVENT_CHANNEL_OP => event_channel_op::handle_with(domain, peers, vcpu, a0, a1),
        nr::GRANT_TABLE_OP => grant_table_op::handle(domain, peers, vcpu, a0, a1, a2),
        nr::VM_ASSIST => vm_assist(domain, a0, a1),
        _ => Err(errno::ENOSYS),
    }
}

/// `vm_assist(cmd, type)`: only the runstate update flag means anything to a translated guest.
fn vm_assist(domain: &mut Domain, cmd: u64, ty: u64) -> HcResult {
    use guest_abi::xen::{VMASST_CMD_DISABLE, VMASST_CMD_ENABLE, VMASST_TYPE_RUNSTATE_UPDATE_FLAG};
    if ty != VMASST_TYPE_RUNSTATE_UPDATE_FLAG {
        return Err(errno::EINVAL);
    }
    match cmd {
        VMASST_CMD_ENABLE => domain.vm_assist |= 1 << ty,
        VMASST_CMD_DISABLE => domain.vm_assist &= !(1 << ty),
        _ => return Err(errno::ENOSYS),
    }
    Ok(0)
}

/// Value a guest register holds for a returned hypercall result.
pub fn result_register(outcome_value: i64) -> u64 {
    outcome_value as u64
}

#[cfg(test)]
pub(crate) mod testing {
    //! A fake vCPU whose guest memory is a byte vector at guest address 0.
    use arch::exit::{BadGuestAddress, Exit, VirtualCpu};

    /// A domain with its shared info page, grant frames and console ring on the heap.
    pub fn domain_with_xen_pages(vcpu: &mut FakeVcpu) -> crate::domain::Domain {
        let mut d = crate::domain::Domain::new(1);
        let mut next = 0x10_0000u64;
        d.setup_xen_pages(vcpu, 0x3900_0000, &mut || {
            next += 0x1000;
            Some(crate::page::HostPage::on_heap(next))
        })
        .unwrap();
        d
    }

    /// Guest virtual and guest physical addresses are the same here.
    pub struct FakeVcpu {
        pub mem: Vec<u8>,
        pub result: Option<u64>,
        /// `(gpa, hpa)` pairs given to `map_host_page`.
        pub mapped: Vec<(u64, u64)>,
        pub upcalls: usize,
        /// Calls of `enable_event_delivery`.
        pub event_delivery_enabled: usize,
        /// The last `set_upcall_vector` argument.
        pub upcall_vector: Option<Option<u8>>,
        /// The last `set_xen_timer` argument.
        pub xen_timer: Option<Option<u64>>,
        /// Grant mappings in force: guest-physical page → (host page, writable).
        pub grants: std::collections::BTreeMap<u64, (u64, bool)>,
        /// `map_grant` refuses pages at or above this address (the backend's limit).
        pub grant_limit: u64,
    }

    impl FakeVcpu {
        pub fn new(size: usize) -> Self {
            Self {
                mem: vec![0; size],
                result: None,
                mapped: Vec::new(),
                upcalls: 0,
                event_delivery_enabled: 0,
                upcall_vector: None,
                xen_timer: None,
                grants: Default::default(),
                grant_limit: u64::MAX,
            }
        }
        fn range(&self, gva: u64, len: usize) -> Result<core::ops::Range<usize>, BadGuestAddress> {
            let start = usize::try_from(gva).map_err(|_| BadGuestAddress(gva))?;
            let end = start.checked_add(len).ok_or(BadGuestAddress(gva))?;
            if end > self.mem.len() {
                return Err(BadGuestAddress(gva));
            }
            Ok(start..end)
        }
    }

    impl VirtualCpu for FakeVcpu {
        fn run(&mut self) -> Exit {
            Exit::PowerOff
        }
        fn set_hypercall_result(&mut self, value: u64) {
            self.result = Some(value);
        }
        fn pc(&self) -> u64 {
            0
        }
        fn copy_from_guest(&mut self, gva: u64, buf: &mut [u8]) -> Result<(), BadGuestAddress> {
            let r = self.range(gva, buf.len())?;
            buf.copy_from_slice(&self.mem[r]);
            Ok(())
        }
        fn copy_to_guest(&mut self, gva: u64, buf: &[u8]) -> Result<(), BadGuestAddress> {
            let r = self.range(gva, buf.len())?;
            self.mem[r].copy_from_slice(buf);
            Ok(())
        }
        fn read_guest_phys(&mut self, gpa: u64, buf: &mut [u8]) -> Result<(), BadGuestAddress> {
            self.copy_from_guest(gpa, buf)
        }
        fn write_guest_phys(&mut self, gpa: u64, buf: &[u8]) -> Result<(), BadGuestAddress> {
            self.copy_to_guest(gpa, buf)
        }
        fn guest_phys_of(&mut self, gva: u64) -> Option<u64> {
            (gva < self.mem.len() as u64).then_some(gva)
        }
        fn map_host_page(&mut self, gpa: u64, hpa: u64) -> Result<(), BadGuestAddress> {
            self.mapped.push((gpa, hpa));
            Ok(())
        }
        fn map_grant(&mut self, gpa: u64, hpa: u64, writable: bool) -> Result<(), BadGuestAddress> {
            if gpa >= self.grant_limit {
                return Err(BadGuestAddress(gpa));
            }
            self.grants.insert(gpa, (hpa, writable));
            Ok(())
        }
        fn unmap_grant(&mut self, gpa: u64) -> Result<(), BadGuestAddress> {
            self.grants.remove(&gpa).map(|_| ()).ok_or(BadGuestAddress(gpa))
        }
        fn raise_upcall(&mut self) {
            self.upcalls += 1;
        }
        fn enable_event_delivery(&mut self) {
            self.event_delivery_enabled += 1;
        }
        fn set_upcall_vector(&mut self, vector: Option<u8>) {
            self.upcall_vector = Some(vector);
        }
        fn set_xen_timer(&mut self, deadline_ns: Option<u64>) -> bool {
            self.xen_timer = Some(deadline_ns);
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::FakeVcpu;
    use super::*;

    #[test]
    fn unknown_hypercalls_get_enosys() {
        let mut dom = Domain::new(1);
        let mut vcpu = FakeVcpu::new(16);
        for n in [nr::MMU_UPDATE, nr::HYPFS_OP + 1, 63, u64::MAX] {
            let call = HypercallArgs { nr: n, args: [0; 5], compat: false };
            assert_eq!(dispatch(&mut dom, &mut vcpu, call), Outcome::Return(-errno::ENOSYS));
        }
    }
}
