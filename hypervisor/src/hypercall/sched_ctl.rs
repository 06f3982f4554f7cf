//! `sysctl` and `domctl`, their scheduler operations (`XEN_SYSCTL_scheduler_op`,
//! `XEN_SYSCTL_cpupool_op` INFO, `XEN_DOMCTL_scheduler_op`), for the privileged domain.
//!
//! As Xen 4.17 does: the structure is copied in (-EFAULT), its interface version checked
//! (-EACCES), for a domctl the target looked up (-ESRCH), and a domain without the control
//! capability refused (-EPERM, what Xen's default XSM policy answers a domU). Then the
//! operation: a pool id that names no pool is -ESRCH, a `sched_id` other than the pool's
//! scheduler -EINVAL, bad parameters -EINVAL. A domctl reaches the target domain's pool. Anything else is -ENOSYS (other
//! commands) or -EOPNOTSUPP (pool changes).
//!
//! ARINC 653 schedules cross in Xen's format, `xen_sysctl_arinc653_schedule`: entries run
//! one after the other from the start of the major frame, each `runtime` ns for vCPU
//! `vcpu_id` of the domain whose handle is `dom_handle`. Ours extends it without changing
//! its layout, for pools of several pCPUs and windows with gaps: an entry whose handle is
//! all zeros (no domain has it) is an idle gap of `runtime` ns, or, with `vcpu_id`
//! 0xffffffff, moves on to the pool's next pCPU, whose entries start again at the frame's
//! start. A domain's handle is 14 zero bytes then its domain id, big-endian ([`handle_of`]).

use super::{HcResult, args};
use crate::domain::Domain;
use crate::sched::{Arinc653Schedule, CreditParams, DomainRef, PoolControl, SchedKind, Window};
use alloc::vec::Vec;
use arch::exit::VirtualCpu;
use guest_abi::errno;
use guest_abi::sysctl::{self as x, Arinc653Entry, XenDomctl, XenSysctl, XenSysctlArinc653Schedule};
use zerocopy::{FromBytes, FromZeros, IntoBytes};

/// `vcpu_id` of a zero-handle entry that moves to the next pCPU.
pub const NEXT_CPU: u32 = 0xffff_ffff;

/// What the control operations reach: the CPU pools, their schedulers and the domains.
pub struct SchedCtl<'a> {
    pub pools: &'a mut dyn PoolControl,
    /// Domain id of each domain (`DomainRef` is the index).
    pub domids: &'a [u16],
    pub now: u64,
}

/// What a successful operation changed, for the run loop to log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Changed {
    Nothing,
    /// A new ARINC 653 schedule of this major frame (ns), in force from this time.
    Arinc653 {
        major_frame_ns: u64,
        at: u64,
    },
    /// Credit's timeslice (ms) and rate limit (µs).
    CreditGlobals(u32, u32),
    /// Domain (id) weight and cap.
    Credit(u16, CreditParams),
}

/// Xen's `xen_domain_handle_t` of domain `domid` here.
pub fn handle_of(domid: u16) -> [u8; 16] {
    let mut h = [0; 16];
    h[14..].copy_from_slice(&domid.to_be_bytes());
    h
}

fn sched_id(kind: Option<SchedKind>) -> Option<u32> {
    match kind? {
        SchedKind::Credit => Some(x::XEN_SCHEDULER_CREDIT),
        SchedKind::Arinc653 => Some(x::XEN_SCHEDULER_ARINC653),
        SchedKind::RoundRobin => None,
    }
}

/// `sysctl(arg)`.
pub fn sysctl(domain: &Domain, vcpu: &mut dyn VirtualCpu, arg: u64, ctl: &mut SchedCtl) -> (HcResult, Changed) {
    let mut op: XenSysctl = match args::read_struct(vcpu, arg) {
        Ok(op) => op,
        Err(e) => return (Err(e), Changed::Nothing),
    };
    if op.interface_version != x::XEN_SYSCTL_INTERFACE_VERSION {
        return (Err(errno::EACCES), Changed::Nothing);
    }
    if !domain.privileged {
        return (Err(errno::EPERM), Changed::Nothing);
    }
    let result = match op.cmd {
        x::XEN_SYSCTL_SCHEDULER_OP => scheduler_op(vcpu, &mut op.u, ctl),
        x::XEN_SYSCTL_CPUPOOL_OP => cpupool_op(vcpu, &mut op.u, ctl).map(|()| Changed::Nothing),
        _ => Err(errno::ENOSYS),
    };
    match result {
        // The operation's results go back in the caller's structure.
        Ok(changed) => (args::write_struct(vcpu, arg, &op).map(|()| 0), changed),
        Err(e) => (Err(e), Changed::Nothing),
    }
}

fn scheduler_op(vcpu: &mut dyn VirtualCpu, u: &mut [u8; 128], ctl: &mut SchedCtl) -> Result<Changed, i64> {
    let mut op = x::XenSysctlSchedulerOp::read_from_prefix(&u[..]).map_err(|_| errno::EINVAL)?.0;
    if op.cmd != x::XEN_SYSCTL_SCHEDOP_PUTINFO && op.cmd != x::XEN_SYSCTL_SCHEDOP_GETINFO {
        return Err(errno::EINVAL);
    }
    let nr_cpus = ctl.pools.pool_cpu_ids(op.cpupool_id).len();
    let Some(sched) = ctl.pools.pool_sched(op.cpupool_id) else { return Err(errno::ESRCH) };
    let kind = sched.kind();
    if sched_id(kind) != Some(op.sched_id) {
        return Err(errno::EINVAL);
    }
    let put = op.cmd == x::XEN_SYSCTL_SCHEDOP_PUTINFO;
    let mut changed = Changed::Nothing;
    match kind {
        Some(SchedKind::Credit) => {
            let mut c = x::XenSysctlCreditSchedule::read_from_prefix(op.u.as_bytes()).map_err(|_| errno::EINVAL)?.0;
            if put {
                let bad_rate = c.ratelimit_us != 0
                    && !(x::XEN_SYSCTL_SCHED_RATELIMIT_MIN..=x::XEN_SYSCTL_SCHED_RATELIMIT_MAX)
                        .contains(&c.ratelimit_us);
                if !(x::XEN_SYSCTL_CSCHED_TSLICE_MIN..=x::XEN_SYSCTL_CSCHED_TSLICE_MAX).contains(&c.tslice_ms)
                    || bad_rate
                    || u64::from(c.ratelimit_us) > u64::from(c.tslice_ms) * 1000
                    || c.vcpu_migr_delay_us > x::XEN_SYSCTL_CSCHED_MGR_DLY_MAX_US
                {
                    return Err(errno::EINVAL);
                }
                sched.set_credit_globals(c.tslice_ms, c.ratelimit_us).map_err(|_| errno::EINVAL)?;
                changed = Changed::CreditGlobals(c.tslice_ms, c.ratelimit_us);
            }
            let (tslice_ms, ratelimit_us) = sched.credit_globals().ok_or(errno::EINVAL)?;
            // No migration delay is modelled: it reads back as 0.
            c = x::XenSysctlCreditSchedule { tslice_ms, ratelimit_us, vcpu_migr_delay_us: 0 };
            op.u.as_mut_bytes()[..12].copy_from_slice(c.as_bytes());
        }
        Some(SchedKind::Arinc653) => {
            let handle = op.u[0];
            if put {
                let s: XenSysctlArinc653Schedule = args::read_struct(vcpu, handle)?;
                let schedule = decode(&s, ctl.domids, nr_cpus)?;
                let major_frame_ns = schedule.major_frame_ns;
                sched.set_arinc653(schedule, ctl.now).map_err(|_| errno::EINVAL)?;
                let at = sched.arinc653_schedule().map_or(ctl.now, |(_, at)| at);
                changed = Changed::Arinc653 { major_frame_ns, at };
            } else {
                let (s, _) = sched.arinc653_schedule().ok_or(errno::EINVAL)?;
                let out = encode(&s, ctl.domids).ok_or(errno::EINVAL)?;
                args::write_struct(vcpu, handle, &out)?;
            }
        }
        _ => return Err(errno::EINVAL),
    }
    u[..size_of::<x::XenSysctlSchedulerOp>()].copy_from_slice(op.as_bytes());
    Ok(changed)
}

/// Xen's entries (with our gap and next-pCPU entries) as windows per pCPU.
pub fn decode(s: &XenSysctlArinc653Schedule, domids: &[u16], nr_cpus: usize) -> Result<Arinc653Schedule, i64> {
    let n = usize::from(s.num_sched_entries);
    let major = s.major_frame;
    if major == 0 || major > i64::MAX as u64 || n == 0 || n > x::ARINC653_MAX_DOMAINS_PER_SCHEDULE {
        return Err(errno::EINVAL);
    }
    let mut cpus: Vec<Vec<Window>> = alloc::vec![Vec::new()];
    let mut offset = 0u64;
    for e in &s.sched_entries[..n] {
        if e.dom_handle == [0; 16] && e.vcpu_id == NEXT_CPU {
            if cpus.len() == nr_cpus {
                return Err(errno::EINVAL);
            }
            cpus.push(Vec::new());
            offset = 0;
            continue;
        }
        if e.runtime == 0 || e.runtime > i64::MAX as u64 {
            return Err(errno::EINVAL);
        }
        let start = offset;
        offset = offset.checked_add(e.runtime).filter(|&o| o <= major).ok_or(errno::EINVAL)?;
        if e.dom_handle == [0; 16] {
            continue;
        }
        let domain: DomainRef = domids.iter().position(|&d| handle_of(d) == e.dom_handle).ok_or(errno::EINVAL)?;
        let vcpu = usize::try_from(e.vcpu_id).map_err(|_| errno::EINVAL)?;
        if let Some(ws) = cpus.last_mut() {
            ws.push(Window { start_ns: start, len_ns: e.runtime, domain, vcpu });
        }
    }
    Ok(Arinc653Schedule { major_frame_ns: major, cpus })
}

/// The inverse of [`decode`]; `None` if it takes more than Xen's 64 entries.
pub fn encode(s: &Arinc653Schedule, domids: &[u16]) -> Option<XenSysctlArinc653Schedule> {
    let mut entries = Vec::new();
    for (c, ws) in s.cpus.iter().enumerate() {
        if c > 0 {
            entries.push(Arinc653Entry { vcpu_id: NEXT_CPU, ..Default::default() });
        }
        let mut at = 0;
        for w in ws {
            if w.start_ns > at {
                entries.push(Arinc653Entry { runtime: w.start_ns - at, ..Default::default() });
            }
            let dom_handle = handle_of(*domids.get(w.domain)?);
            entries.push(Arinc653Entry { dom_handle, vcpu_id: w.vcpu as u32, _pad0: 0, runtime: w.len_ns });
            at = w.start_ns + w.len_ns;
        }
    }
    if entries.len() > x::ARINC653_MAX_DOMAINS_PER_SCHEDULE {
        return None;
    }
    let mut out = XenSysctlArinc653Schedule::new_zeroed();
    out.major_frame = s.major_frame_ns;
    out.num_sched_entries = entries.len() as u8;
    out.sched_entries[..entries.len()].copy_from_slice(&entries);
    Some(out)
}

/// `XEN_SYSCTL_cpupool_op`: INFO on a pool; changing pools is not supported.
fn cpupool_op(vcpu: &mut dyn VirtualCpu, u: &mut [u8; 128], ctl: &mut SchedCtl) -> Result<(), i64> {
    let mut op = x::XenSysctlCpupoolOp::read_from_prefix(&u[..]).map_err(|_| errno::EINVAL)?.0;
    match op.op {
        x::XEN_SYSCTL_CPUPOOL_OP_INFO => {
            // Xen answers with the first pool whose id is at least the one asked for.
            let id = ctl.pools.pool_ids().into_iter().find(|&id| id >= op.cpupool_id).ok_or(errno::ENOENT)?;
            op.cpupool_id = id;
            op.n_dom = ctl.pools.pool_domains(id, ctl.domids.len()) as u32;
            // The pool's CPUs as a bitmap of as many bytes as the caller's bits hold.
            let mut bits = [0u8; 8];
            for c in ctl.pools.pool_cpu_ids(id).into_iter().filter(|&c| c < 64) {
                bits[c as usize / 8] |= 1 << (c % 8);
            }
            op.sched_id = ctl.pools.pool_sched(id).and_then(|s| sched_id(s.kind())).unwrap_or(0);
            let bytes = (op.cpumap.nr_bits as usize).div_ceil(8).min(bits.len());
            if op.cpumap.bitmap != 0 && bytes > 0 {
                args::write(vcpu, op.cpumap.bitmap, &bits[..bytes])?;
            }
        }
        x::XEN_SYSCTL_CPUPOOL_OP_CREATE..=x::XEN_SYSCTL_CPUPOOL_OP_FREEINFO => return Err(errno::EOPNOTSUPP),
        _ => return Err(errno::EINVAL),
    }
    u[..size_of::<x::XenSysctlCpupoolOp>()].copy_from_slice(op.as_bytes());
    Ok(())
}

/// `domctl(arg)`: only `XEN_DOMCTL_scheduler_op`.
pub fn domctl(domain: &Domain, vcpu: &mut dyn VirtualCpu, arg: u64, ctl: &mut SchedCtl) -> (HcResult, Changed) {
    let mut op: XenDomctl = match args::read_struct(vcpu, arg) {
        Ok(op) => op,
        Err(e) => return (Err(e), Changed::Nothing),
    };
    if op.interface_version != x::XEN_DOMCTL_INTERFACE_VERSION {
        return (Err(errno::EACCES), Changed::Nothing);
    }
    let Some(target) = ctl.domids.iter().position(|&d| d == op.domain) else {
        return (Err(errno::ESRCH), Changed::Nothing);
    };
    if !domain.privileged {
        return (Err(errno::EPERM), Changed::Nothing);
    }
    if op.cmd != x::XEN_DOMCTL_SCHEDULER_OP {
        return (Err(errno::ENOSYS), Changed::Nothing);
    }
    let mut s = match x::XenDomctlSchedulerOp::read_from_prefix(&op.u[..]) {
        Ok((s, _)) => s,
        Err(_) => return (Err(errno::EINVAL), Changed::Nothing),
    };
    let Some(sched) = ctl.pools.pool_sched(ctl.pools.pool_of(target)) else {
        return (Err(errno::ESRCH), Changed::Nothing);
    };
    let kind = sched.kind();
    if sched_id(kind) != Some(s.sched_id) {
        return (Err(errno::EINVAL), Changed::Nothing);
    }
    let mut changed = Changed::Nothing;
    match (kind, s.cmd) {
        (Some(SchedKind::Credit), x::XEN_DOMCTL_SCHEDOP_GETINFO | x::XEN_DOMCTL_SCHEDOP_PUTINFO) => {
            let Ok((c, _)) = x::XenDomctlSchedCredit::read_from_prefix(s.u.as_bytes()) else {
                return (Err(errno::EINVAL), Changed::Nothing);
            };
            let mut p = sched.credit(target).unwrap_or_default();
            if s.cmd == x::XEN_DOMCTL_SCHEDOP_PUTINFO {
                // As Xen: weight 0 and cap 0xffff leave that parameter as it is.
                if c.weight != 0 {
                    p.weight = c.weight;
                }
                if c.cap != u16::MAX {
                    p.cap = c.cap;
                }
                if sched.set_credit(target, p).is_err() {
                    return (Err(errno::EINVAL), Changed::Nothing);
                }
                changed = Changed::Credit(op.domain, p);
            }
            let out = x::XenDomctlSchedCredit { weight: p.weight, cap: p.cap };
            s.u.as_mut_bytes()[..4].copy_from_slice(out.as_bytes());
        }
        // ARINC 653 has no per-domain parameters (Xen's has no adjust hook: 0).
        (Some(SchedKind::Arinc653), x::XEN_DOMCTL_SCHEDOP_GETINFO | x::XEN_DOMCTL_SCHEDOP_PUTINFO) => {}
        _ => return (Err(errno::EINVAL), Changed::Nothing),
    }
    op.u[..size_of::<x::XenDomctlSchedulerOp>()].copy_from_slice(s.as_bytes());
    (args::write_struct(vcpu, arg, &op).map(|()| 0), changed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypercall::testing::FakeVcpu;
    use crate::sched::{OnePool, PoolScheduler, SchedKind, Scheduler};

    const MS: u64 = 1_000_000;
    const SYSCTL_AT: u64 = 0x100;
    const SCHED_AT: u64 = 0x1000;

    fn pool(kind: SchedKind) -> PoolScheduler {
        let mut s = PoolScheduler::new(kind, 2, MS);
        // Domains 1, 2, 3 (refs 0, 1, 2) of one vCPU each; domain 2 has a second vCPU.
        s.add_vcpu(0, 0, 0, 0);
        s.add_vcpu(1, 1, 0, 0);
        s.add_vcpu(2, 1, 1, 0);
        s.add_vcpu(3, 2, 0, 0);
        s
    }

    fn privileged() -> Domain {
        let mut d = Domain::new(1);
        d.privileged = true;
        d
    }

    fn sysctl_op(vcpu: &mut FakeVcpu, version: u32, cmd: u32, sched: x::XenSysctlSchedulerOp) {
        let mut op = XenSysctl::new_zeroed();
        op.cmd = cmd;
        op.interface_version = version;
        op.u[..32].copy_from_slice(sched.as_bytes());
        vcpu.mem[SYSCTL_AT as usize..SYSCTL_AT as usize + 136].copy_from_slice(op.as_bytes());
    }

    fn a653_op(cmd: u32) -> x::XenSysctlSchedulerOp {
        x::XenSysctlSchedulerOp { cpupool_id: 0, sched_id: x::XEN_SCHEDULER_ARINC653, cmd, _pad0: 0, u: [SCHED_AT, 0] }
    }

    fn entry(domid: u16, vcpu_id: u32, runtime: u64) -> Arinc653Entry {
        let dom_handle = if domid == 0 { [0; 16] } else { handle_of(domid) };
        Arinc653Entry { dom_handle, vcpu_id, _pad0: 0, runtime }
    }

    fn put_schedule(vcpu: &mut FakeVcpu, major: u64, entries: &[Arinc653Entry]) {
        let mut s = XenSysctlArinc653Schedule::new_zeroed();
        s.major_frame = major;
        s.num_sched_entries = entries.len() as u8;
        s.sched_entries[..entries.len()].copy_from_slice(entries);
        vcpu.mem[SCHED_AT as usize..SCHED_AT as usize + 2064].copy_from_slice(s.as_bytes());
    }

    fn call(dom: &Domain, vcpu: &mut FakeVcpu, sched: &mut PoolScheduler, now: u64) -> (HcResult, Changed) {
        let mut ctl = SchedCtl { pools: &mut OnePool { sched, nr_cpus: 2 }, domids: &[1, 2, 3], now };
        sysctl(dom, vcpu, SYSCTL_AT, &mut ctl)
    }

    #[test]
    fn version_then_privilege_then_operation() {
        let mut vcpu = FakeVcpu::new(0x2000);
        let mut s = pool(SchedKind::Arinc653);
        let get = a653_op(x::XEN_SYSCTL_SCHEDOP_GETINFO);
        assert_eq!(call(&privileged(), &mut FakeVcpu::new(16), &mut s, 0).0, Err(errno::EFAULT));
        sysctl_op(&mut vcpu, 0x14, x::XEN_SYSCTL_SCHEDULER_OP, get);
        assert_eq!(call(&privileged(), &mut vcpu, &mut s, 0).0, Err(errno::EACCES), "Xen 4.16's version");
        sysctl_op(&mut vcpu, x::XEN_SYSCTL_INTERFACE_VERSION, x::XEN_SYSCTL_SCHEDULER_OP, get);
        assert_eq!(call(&Domain::new(2), &mut vcpu, &mut s, 0).0, Err(errno::EPERM), "a domU");
        sysctl_op(&mut vcpu, x::XEN_SYSCTL_INTERFACE_VERSION, 77, get);
        assert_eq!(call(&privileged(), &mut vcpu, &mut s, 0).0, Err(errno::ENOSYS));
        let mut other_pool = get;
        other_pool.cpupool_id = 1;
        sysctl_op(&mut vcpu, x::XEN_SYSCTL_INTERFACE_VERSION, x::XEN_SYSCTL_SCHEDULER_OP, other_pool);
        assert_eq!(call(&privileged(), &mut vcpu, &mut s, 0).0, Err(errno::ESRCH));
        let mut credit = get;
        credit.sched_id = x::XEN_SCHEDULER_CREDIT;
        sysctl_op(&mut vcpu, x::XEN_SYSCTL_INTERFACE_VERSION, x::XEN_SYSCTL_SCHEDULER_OP, credit);
        assert_eq!(call(&privileged(), &mut vcpu, &mut s, 0).0, Err(errno::EINVAL), "not the pool's scheduler");
        // No schedule yet: nothing to get.
        sysctl_op(&mut vcpu, x::XEN_SYSCTL_INTERFACE_VERSION, x::XEN_SYSCTL_SCHEDULER_OP, get);
        assert_eq!(call(&privileged(), &mut vcpu, &mut s, 0).0, Err(errno::EINVAL));
    }

    #[test]
    fn an_arinc653_schedule_goes_in_and_comes_back_and_waits_for_the_boundary() {
        let mut vcpu = FakeVcpu::new(0x2000);
        let mut s = pool(SchedKind::Arinc653);
        // pCPU 0: d1 0-2 ms, idle 2-3, d2v0 3-6; pCPU 1: d2v1 0-4, d3 4-10. Frame 10 ms.
        let entries = [
            entry(1, 0, 2 * MS),
            entry(0, 0, MS),
            entry(2, 0, 3 * MS),
            entry(0, NEXT_CPU, 0),
            entry(2, 1, 4 * MS),
            entry(3, 0, 6 * MS),
        ];
        put_schedule(&mut vcpu, 10 * MS, &entries);
        sysctl_op(&mut vcpu, x::XEN_SYSCTL_INTERFACE_VERSION, x::XEN_SYSCTL_SCHEDULER_OP, a653_op(0));
        let (r, changed) = call(&privileged(), &mut vcpu, &mut s, 0);
        assert_eq!(r, Ok(0));
        assert_eq!(changed, Changed::Arinc653 { major_frame_ns: 10 * MS, at: 0 });
        let (got, _) = s.arinc653_schedule().unwrap();
        assert_eq!(got.cpus[0][1], Window { start_ns: 3 * MS, len_ns: 3 * MS, domain: 1, vcpu: 0 });
        assert_eq!(got.cpus[1][1], Window { start_ns: 4 * MS, len_ns: 6 * MS, domain: 2, vcpu: 0 });
        // Read back: the same entries.
        vcpu.mem[SCHED_AT as usize..SCHED_AT as usize + 2064].fill(0);
        sysctl_op(&mut vcpu, x::XEN_SYSCTL_INTERFACE_VERSION, x::XEN_SYSCTL_SCHEDULER_OP, a653_op(1));
        assert_eq!(call(&privileged(), &mut vcpu, &mut s, 0).0, Ok(0));
        let back = XenSysctlArinc653Schedule::read_from_prefix(&vcpu.mem[SCHED_AT as usize..]).unwrap().0;
        assert_eq!(back.major_frame, 10 * MS);
        assert_eq!(&back.sched_entries[..usize::from(back.num_sched_entries)], &entries[..]);
        // A new one set at 13 ms lands on the boundary at 20 ms.
        put_schedule(&mut vcpu, 5 * MS, &[entry(3, 0, 5 * MS)]);
        sysctl_op(&mut vcpu, x::XEN_SYSCTL_INTERFACE_VERSION, x::XEN_SYSCTL_SCHEDULER_OP, a653_op(0));
        assert_eq!(
            call(&privileged(), &mut vcpu, &mut s, 13 * MS).1,
            Changed::Arinc653 { major_frame_ns: 5 * MS, at: 20 * MS }
        );
    }

    #[test]
    fn bad_arinc653_schedules_are_refused() {
        let mut s = pool(SchedKind::Arinc653);
        let mut try_put = |major: u64, entries: &[Arinc653Entry]| {
            let mut vcpu = FakeVcpu::new(0x2000);
            put_schedule(&mut vcpu, major, entries);
            sysctl_op(&mut vcpu, x::XEN_SYSCTL_INTERFACE_VERSION, x::XEN_SYSCTL_SCHEDULER_OP, a653_op(0));
            call(&privileged(), &mut vcpu, &mut s, 0).0
        };
        assert_eq!(
            try_put(10 * MS, &[entry(1, 0, 6 * MS), entry(2, 0, 5 * MS)]),
            Err(errno::EINVAL),
            "sum over the frame"
        );
        assert_eq!(try_put(10 * MS, &[entry(9, 0, MS)]), Err(errno::EINVAL), "unknown domain");
        assert_eq!(try_put(10 * MS, &[entry(2, 5, MS)]), Err(errno::EINVAL), "unknown vCPU");
        assert_eq!(try_put(10 * MS, &[entry(1, 0, 0)]), Err(errno::EINVAL), "runtime 0");
        assert_eq!(try_put(0, &[entry(1, 0, MS)]), Err(errno::EINVAL), "major frame 0");
        assert_eq!(try_put(10 * MS, &[]), Err(errno::EINVAL), "no entries");
        let three_cpus =
            [entry(1, 0, MS), entry(0, NEXT_CPU, 0), entry(2, 0, MS), entry(0, NEXT_CPU, 0), entry(3, 0, MS)];
        assert_eq!(try_put(10 * MS, &three_cpus), Err(errno::EINVAL), "a pCPU outside the pool");
        let twice = [entry(2, 0, 2 * MS), entry(0, NEXT_CPU, 0), entry(0, 0, MS), entry(2, 0, MS)];
        assert_eq!(try_put(10 * MS, &twice), Err(errno::EINVAL), "one vCPU in two windows at once");
        assert_eq!(try_put(10 * MS, &[entry(1, 0, MS)]), Ok(0));
    }

    #[test]
    fn credit_globals_and_domain_parameters() {
        let mut vcpu = FakeVcpu::new(0x2000);
        let mut s = pool(SchedKind::Credit);
        let op = |cmd, tslice_ms: u32, ratelimit_us: u32| {
            let c = x::XenSysctlCreditSchedule { tslice_ms, ratelimit_us, vcpu_migr_delay_us: 0 };
            let mut u = [0u64; 2];
            u.as_mut_bytes()[..12].copy_from_slice(c.as_bytes());
            x::XenSysctlSchedulerOp { cpupool_id: 0, sched_id: x::XEN_SCHEDULER_CREDIT, cmd, _pad0: 0, u }
        };
        sysctl_op(&mut vcpu, x::XEN_SYSCTL_INTERFACE_VERSION, x::XEN_SYSCTL_SCHEDULER_OP, op(1, 0, 0));
        assert_eq!(call(&privileged(), &mut vcpu, &mut s, 0).0, Ok(0));
        let tslice = |vcpu: &FakeVcpu| args::u32_at(&vcpu.mem, SYSCTL_AT as usize + 8 + 16);
        assert_eq!(tslice(&vcpu), 30, "Xen's default 30 ms");
        for (t, r) in [(0, 0), (1001, 0), (10, 50), (10, 600_000), (1, 2000)] {
            sysctl_op(&mut vcpu, x::XEN_SYSCTL_INTERFACE_VERSION, x::XEN_SYSCTL_SCHEDULER_OP, op(0, t, r));
            assert_eq!(call(&privileged(), &mut vcpu, &mut s, 0).0, Err(errno::EINVAL), "tslice {t} ratelimit {r}");
        }
        sysctl_op(&mut vcpu, x::XEN_SYSCTL_INTERFACE_VERSION, x::XEN_SYSCTL_SCHEDULER_OP, op(0, 10, 1000));
        assert_eq!(call(&privileged(), &mut vcpu, &mut s, 0), (Ok(0), Changed::CreditGlobals(10, 1000)));
        assert_eq!(s.credit_globals(), Some((10, 1000)));

        // domctl: weight and cap of domain 3.
        let domctl_op = |vcpu: &mut FakeVcpu, domid: u16, cmd: u32, weight: u16, cap: u16| {
            let mut op = XenDomctl::new_zeroed();
            op.cmd = x::XEN_DOMCTL_SCHEDULER_OP;
            op.interface_version = x::XEN_DOMCTL_INTERFACE_VERSION;
            op.domain = domid;
            let mut so = x::XenDomctlSchedulerOp { sched_id: x::XEN_SCHEDULER_CREDIT, cmd, u: [0; 2] };
            so.u.as_mut_bytes()[..4].copy_from_slice(x::XenDomctlSchedCredit { weight, cap }.as_bytes());
            op.u[..24].copy_from_slice(so.as_bytes());
            vcpu.mem[SYSCTL_AT as usize..SYSCTL_AT as usize + 144].copy_from_slice(op.as_bytes());
        };
        let dcall = |dom: &Domain, vcpu: &mut FakeVcpu, s: &mut PoolScheduler| {
            let mut ctl = SchedCtl { pools: &mut OnePool { sched: s, nr_cpus: 2 }, domids: &[1, 2, 3], now: 0 };
            domctl(dom, vcpu, SYSCTL_AT, &mut ctl)
        };
        domctl_op(&mut vcpu, 3, x::XEN_DOMCTL_SCHEDOP_PUTINFO, 512, 40);
        assert_eq!(dcall(&Domain::new(2), &mut vcpu, &mut s).0, Err(errno::EPERM));
        domctl_op(&mut vcpu, 9, x::XEN_DOMCTL_SCHEDOP_PUTINFO, 512, 40);
        assert_eq!(dcall(&privileged(), &mut vcpu, &mut s).0, Err(errno::ESRCH));
        domctl_op(&mut vcpu, 3, x::XEN_DOMCTL_SCHEDOP_PUTINFO, 512, 40);
        let (r, changed) = dcall(&privileged(), &mut vcpu, &mut s);
        assert_eq!(r, Ok(0));
        assert_eq!(changed, Changed::Credit(3, CreditParams { weight: 512, cap: 40 }));
        // Weight 0 and cap 0xffff keep what is there.
        domctl_op(&mut vcpu, 3, x::XEN_DOMCTL_SCHEDOP_PUTINFO, 0, 0xffff);
        assert_eq!(dcall(&privileged(), &mut vcpu, &mut s).0, Ok(0));
        domctl_op(&mut vcpu, 3, x::XEN_DOMCTL_SCHEDOP_GETINFO, 0, 0);
        assert_eq!(dcall(&privileged(), &mut vcpu, &mut s).0, Ok(0));
        let at = SYSCTL_AT as usize + 16 + 8;
        assert_eq!((args::u32_at(&vcpu.mem, at) & 0xffff, args::u32_at(&vcpu.mem, at) >> 16), (512, 40));
        domctl_op(&mut vcpu, 3, x::XEN_DOMCTL_SCHEDOP_PUTVCPUINFO, 0, 0);
        assert_eq!(dcall(&privileged(), &mut vcpu, &mut s).0, Err(errno::EINVAL));
    }

    #[test]
    fn cpupool_info_names_the_running_pool() {
        let mut vcpu = FakeVcpu::new(0x2000);
        let mut s = pool(SchedKind::Credit);
        let mut op = XenSysctl::new_zeroed();
        op.cmd = x::XEN_SYSCTL_CPUPOOL_OP;
        op.interface_version = x::XEN_SYSCTL_INTERFACE_VERSION;
        let info = x::XenSysctlCpupoolOp {
            op: x::XEN_SYSCTL_CPUPOOL_OP_INFO,
            cpumap: x::XenctlBitmap { bitmap: 0x800, nr_bits: 8, _pad0: 0 },
            ..Default::default()
        };
        op.u[..40].copy_from_slice(info.as_bytes());
        vcpu.mem[SYSCTL_AT as usize..SYSCTL_AT as usize + 136].copy_from_slice(op.as_bytes());
        assert_eq!(call(&privileged(), &mut vcpu, &mut s, 0).0, Ok(0));
        let back = x::XenSysctlCpupoolOp::read_from_prefix(&vcpu.mem[SYSCTL_AT as usize + 8..]).unwrap().0;
        assert_eq!((back.sched_id, back.n_dom), (x::XEN_SCHEDULER_CREDIT, 3));
        assert_eq!(vcpu.mem[0x800], 0b11, "pCPUs 0 and 1");
        let mut next = info;
        next.cpupool_id = 1;
        op.u[..40].copy_from_slice(next.as_bytes());
        vcpu.mem[SYSCTL_AT as usize..SYSCTL_AT as usize + 136].copy_from_slice(op.as_bytes());
        assert_eq!(call(&privileged(), &mut vcpu, &mut s, 0).0, Err(errno::ENOENT), "no pool after 0");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 3000, ..Default::default() })]

        /// Hostile structures from the control domain (the only one that gets past the
        /// privilege check) never panic, whatever the pool's scheduler.
        #[test]
        fn hostile_structures_get_an_errno_not_a_panic(
            kind in 0..3usize,
            cmd in 0..40u32,
            sub in proptest::collection::vec(0..4u32, 4),
            raw in proptest::collection::vec(proptest::prelude::any::<u8>(), 0x1000),
            arg in 0..0x1100u64,
            domctl_call in proptest::prelude::any::<bool>(),
        ) {
            let kind = [SchedKind::Credit, SchedKind::Arinc653, SchedKind::RoundRobin][kind];
            let mut s = pool(kind);
            let mut vcpu = FakeVcpu::new(0x1000);
            vcpu.mem.copy_from_slice(&raw);
            // Make the headers mostly valid, so that the operations themselves get exercised.
            if arg + 144 <= 0x1000 && cmd < 30 {
                let a = arg as usize;
                let c = if domctl_call { x::XEN_DOMCTL_SCHEDULER_OP } else if cmd % 2 == 0 { x::XEN_SYSCTL_SCHEDULER_OP } else { x::XEN_SYSCTL_CPUPOOL_OP };
                vcpu.mem[a..a + 4].copy_from_slice(&c.to_ne_bytes());
                vcpu.mem[a + 4..a + 8].copy_from_slice(&x::XEN_SYSCTL_INTERFACE_VERSION.to_ne_bytes());
                if domctl_call {
                    vcpu.mem[a + 8..a + 10].copy_from_slice(&(1 + (sub[0] as u16 % 3)).to_ne_bytes());
                    vcpu.mem[a + 20..a + 24].copy_from_slice(&sub[1].to_ne_bytes());
                } else {
                    vcpu.mem[a + 8..a + 12].copy_from_slice(&(sub[0] % 2).to_ne_bytes());
                    vcpu.mem[a + 12..a + 16].copy_from_slice(&(5 + sub[1] % 3).to_ne_bytes());
                    vcpu.mem[a + 16..a + 20].copy_from_slice(&(sub[2] % 2).to_ne_bytes());
                    // The schedule handle points somewhere in (or past) guest memory.
                    vcpu.mem[a + 24..a + 32].copy_from_slice(&(u64::from(sub[3]) * 0x400).to_ne_bytes());
                }
            }
            let mut ctl = SchedCtl { pools: &mut OnePool { sched: &mut s, nr_cpus: 2 }, domids: &[1, 2, 3], now: 5 * MS };
            let (r, _) = if domctl_call {
                domctl(&privileged(), &mut vcpu, arg, &mut ctl)
            } else {
                sysctl(&privileged(), &mut vcpu, arg, &mut ctl)
            };
            if let Err(e) = r {
                proptest::prop_assert!(e > 0 && e < 200, "errno {}", e);
            }
        }
    }
}
