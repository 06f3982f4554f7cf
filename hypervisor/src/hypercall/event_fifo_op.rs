//! The FIFO sub-operations of `event_channel_op`: `init_control` (a vCPU's control block,
//! and the switch from the 2-level ABI), `expand_array` (one more page of event words) and
//! `set_priority`. The queueing itself is `crate::evtchn_fifo`.

use super::HcResult;
use super::args;
use crate::domain::{Domain, FifoEvents};
use crate::evtchn_fifo::{CONTROL_WORDS, Fifo, FifoPages};
use crate::page::PAGE_SIZE;
use arch::exit::VirtualCpu;
use guest_abi::errno;
use guest_abi::event_channel::{
    EVTCHN_FIFO_LINK_BITS, EVTCHN_FIFO_NR_CHANNELS, EvtchnExpandArray, EvtchnInitControl, EvtchnSetPriority,
};

/// `EVTCHNOP_init_control`: register `vcpu`'s control block at (`control_gfn`, `offset`),
/// 8-byte aligned and within the page. The first one switches the domain to FIFO: its port
/// space grows to 2^17 and ports pending in the 2-level bitmap wait for their array page.
pub fn init_control(domain: &mut Domain, vcpu: &mut dyn VirtualCpu, arg: u64) -> HcResult {
    let mut b: EvtchnInitControl = args::read_struct(vcpu, arg)?;
    // The output comes first, as Xen writes it whatever the outcome.
    b.link_bits = EVTCHN_FIFO_LINK_BITS as u8;
    args::write_struct(vcpu, arg, &b)?;
    let (gfn, offset, target) = (b.control_gfn, b.offset as usize, b.vcpu as usize);
    if target >= domain.vcpus.len() {
        return Err(errno::ENOENT);
    }
    if offset > PAGE_SIZE - CONTROL_WORDS * 4 || !offset.is_multiple_of(8) {
        return Err(errno::EINVAL);
    }
    let page = domain.ram.as_ref().and_then(|ram| ram.page(gfn)).ok_or(errno::EINVAL)?;
    if domain.fifo.as_ref().is_some_and(|f| f.pages.blocks[target].is_some()) {
        return Err(errno::EINVAL);
    }
    let block = &page[offset / 4..offset / 4 + CONTROL_WORDS];
    if domain.fifo.is_none() {
        domain.fifo = Some(switch_to_fifo(domain));
    }
    if let Some(fifo) = domain.fifo.as_mut() {
        fifo.pages.blocks[target] = Some(block);
    }
    Ok(0)
}

/// Leave the 2-level ABI: ports pending in its bitmap are carried over (linked when their
/// array page arrives), and the port space grows to what a LINK can name.
fn switch_to_fifo(domain: &mut Domain) -> FifoEvents {
    let nr_vcpus = domain.vcpus.len();
    let mut state = Fifo::new(nr_vcpus);
    if let Some(xen) = domain.xen.as_ref() {
        let pending_at = domain.abi.evtchn_pending_offset();
        for (port, _) in domain.evtchn.bound() {
            let word = xen.shared_info.u64_at(pending_at + (port as usize / 64) * 8);
            if word & (1 << (port % 64)) != 0 {
                state.defer(port);
            }
        }
    }
    domain.evtchn.set_limit(EVTCHN_FIFO_NR_CHANNELS);
    FifoEvents { state, pages: FifoPages { array: Default::default(), blocks: alloc::vec![None; nr_vcpus] } }
}

/// `EVTCHNOP_expand_array`: one more page of event words, from the guest's own RAM. Events
/// raised before their page existed are linked now.
pub fn expand_array(domain: &mut Domain, vcpu: &mut dyn VirtualCpu, arg: u64) -> HcResult {
    let gfn = args::read_struct::<EvtchnExpandArray>(vcpu, arg)?.array_gfn;
    // Before a control block makes the domain FIFO, Xen refuses the call as such, whatever
    // the frame (XTF's XSA-188 test checks it).
    if domain.fifo.is_none() {
        return Err(errno::EOPNOTSUPP);
    }
    let page = domain.ram.as_ref().and_then(|ram| ram.page(gfn)).ok_or(errno::EINVAL)?;
    let fifo = domain.fifo.as_mut().ok_or(errno::EOPNOTSUPP)?;
    fifo.pages.array.try_reserve(1).map_err(|_| errno::ENOMEM)?;
    let deferred = fifo.state.page_added()?;
    fifo.pages.array.push(page);
    for port in deferred {
        domain.deliver(vcpu, port);
    }
    Ok(0)
}

/// `EVTCHNOP_set_priority`: the queue of `port`'s future events (0 highest, 15 lowest).
pub fn set_priority(domain: &mut Domain, vcpu: &mut dyn VirtualCpu, arg: u64) -> HcResult {
    let EvtchnSetPriority { port, priority } = args::read_struct(vcpu, arg)?;
    let fifo = domain.fifo.as_mut().ok_or(errno::ENOSYS)?;
    domain.evtchn.port(port).ok_or(errno::EINVAL)?;
    fifo.state.set_priority(port, priority).map(|()| 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evtchn::Binding;
    use crate::evtchn_fifo::{LINKED, PENDING};
    use crate::hypercall::event_channel_op::handle;
    use crate::hypercall::testing::{FakeVcpu, domain_with_xen_pages};
    use crate::page::{GuestRam, vcpu_info};
    use alloc::boxed::Box;
    use core::sync::atomic::{AtomicU32, Ordering::SeqCst};
    use guest_abi::event_channel as ev;

    /// A domain whose RAM (8 pages at guest frame 0x100) the FIFO pages come from; the
    /// hypercall arguments live in the fake vCPU's own memory.
    fn fifo_domain(vcpu: &mut FakeVcpu) -> Domain {
        let mut d = domain_with_xen_pages(vcpu);
        let words: &'static [AtomicU32] = Box::leak((0..8 * 1024).map(|_| AtomicU32::new(0)).collect());
        d.ram = Some(GuestRam { base: 0x100 * PAGE_SIZE as u64, host: 0x4000_0000, words });
        d
    }

    fn init_control(vcpu: &mut FakeVcpu, d: &mut Domain, gfn: u64, offset: u32, target: u32) -> HcResult {
        args::put_u64(&mut vcpu.mem, 0, gfn);
        args::put_u32(&mut vcpu.mem, 8, offset);
        args::put_u32(&mut vcpu.mem, 12, target);
        handle(d, vcpu, ev::EVTCHNOP_INIT_CONTROL, 0)
    }

    fn expand(vcpu: &mut FakeVcpu, d: &mut Domain, gfn: u64) -> HcResult {
        args::put_u64(&mut vcpu.mem, 32, gfn);
        handle(d, vcpu, ev::EVTCHNOP_EXPAND_ARRAY, 32)
    }

    fn word(d: &Domain, gfn: u64, index: usize) -> u32 {
        d.ram.as_ref().unwrap().page(gfn).unwrap()[index].load(SeqCst)
    }

    #[test]
    fn control_blocks_are_checked_like_xen_checks_them() {
        let mut vcpu = FakeVcpu::new(64);
        let mut d = fifo_domain(&mut vcpu);
        assert_eq!(init_control(&mut vcpu, &mut d, 0x100, 4, 0), Err(errno::EINVAL), "unaligned");
        assert_eq!(init_control(&mut vcpu, &mut d, 0x100, 4096 - 64, 0), Err(errno::EINVAL), "crosses the page");
        assert_eq!(init_control(&mut vcpu, &mut d, 0x100, 0, 7), Err(errno::ENOENT), "no such vCPU");
        assert_eq!(init_control(&mut vcpu, &mut d, 0x50, 0, 0), Err(errno::EINVAL), "not its RAM");
        assert_eq!(init_control(&mut vcpu, &mut d, u64::MAX, 0, 0), Err(errno::EINVAL));
        assert!(d.fifo.is_none(), "nothing switched by refused calls");
        assert_eq!(vcpu.mem[16], 17, "link_bits written back");
        assert_eq!(init_control(&mut vcpu, &mut d, 0x100, 4096 - 72, 0), Ok(0));
        assert_eq!(init_control(&mut vcpu, &mut d, 0x101, 0, 0), Err(errno::EINVAL), "registered once");
    }

    #[test]
    fn an_ipi_after_the_switch_goes_through_the_queues() {
        let mut vcpu = FakeVcpu::new(64);
        let mut d = fifo_domain(&mut vcpu);
        assert_eq!(expand(&mut vcpu, &mut d, 0x101), Err(errno::EOPNOTSUPP), "no control block yet");
        assert_eq!(expand(&mut vcpu, &mut d, u64::MAX), Err(errno::EOPNOTSUPP), "nor for a bad frame");
        assert_eq!(init_control(&mut vcpu, &mut d, 0x100, 0, 0), Ok(0));
        let ipi = d.evtchn.allocate(Binding::Ipi, 0).unwrap();
        args::put_u32(&mut vcpu.mem, 40, ipi);
        // Raised before its array page exists: held, then linked when the page comes.
        assert_eq!(handle(&mut d, &mut vcpu, ev::EVTCHNOP_SEND, 40), Ok(0));
        assert_eq!(vcpu.upcalls, 0);
        assert_eq!(expand(&mut vcpu, &mut d, 0x101), Ok(0));
        assert_eq!(word(&d, 0x101, ipi as usize), PENDING | LINKED);
        assert_eq!(word(&d, 0x100, 2 + 7), ipi, "HEAD of the default-priority queue");
        assert_eq!(word(&d, 0x100, 0), 1 << 7, "READY");
        assert_eq!(vcpu.upcalls, 1);
        let shared = &d.xen.as_ref().unwrap().shared_info;
        assert_eq!(shared.data[vcpu_info::UPCALL_PENDING], 1);
        assert_eq!(shared.u64_at(vcpu_info::PENDING_SEL), 0, "no 2-level selector in FIFO mode");
    }

    #[test]
    fn priorities_need_fifo_a_bound_port_and_a_valid_queue() {
        let mut vcpu = FakeVcpu::new(64);
        let mut d = fifo_domain(&mut vcpu);
        args::put_u32(&mut vcpu.mem, 48, 1);
        args::put_u32(&mut vcpu.mem, 52, 3);
        assert_eq!(handle(&mut d, &mut vcpu, ev::EVTCHNOP_SET_PRIORITY, 48), Err(errno::ENOSYS), "2-level");
        assert_eq!(init_control(&mut vcpu, &mut d, 0x100, 0, 0), Ok(0));
        assert_eq!(handle(&mut d, &mut vcpu, ev::EVTCHNOP_SET_PRIORITY, 48), Ok(0));
        args::put_u32(&mut vcpu.mem, 52, 16);
        assert_eq!(handle(&mut d, &mut vcpu, ev::EVTCHNOP_SET_PRIORITY, 48), Err(errno::EINVAL));
        args::put_u32(&mut vcpu.mem, 48, 999);
        args::put_u32(&mut vcpu.mem, 52, 1);
        assert_eq!(handle(&mut d, &mut vcpu, ev::EVTCHNOP_SET_PRIORITY, 48), Err(errno::EINVAL), "unbound");
    }

    #[test]
    fn the_array_grows_to_its_limit_and_no_further() {
        let mut vcpu = FakeVcpu::new(64);
        let mut d = fifo_domain(&mut vcpu);
        assert_eq!(init_control(&mut vcpu, &mut d, 0x100, 0, 0), Ok(0));
        // Any guest page may serve again here: the count is what is limited.
        for _ in 0..crate::evtchn_fifo::MAX_PAGES {
            assert_eq!(expand(&mut vcpu, &mut d, 0x101), Ok(0));
        }
        assert_eq!(expand(&mut vcpu, &mut d, 0x101), Err(errno::ENOSPC));
        assert_eq!(expand(&mut vcpu, &mut d, 0x200), Err(errno::EINVAL), "outside its RAM");
    }
}
