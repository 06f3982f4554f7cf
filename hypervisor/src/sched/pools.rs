//! CPU pools (Xen's cpupools): the pCPUs that run guests are split into pools, each with its
//! own scheduler instance, and every domain belongs to one pool, whose pCPUs alone run its
//! vCPUs.
//!
//! The run loop sees one [`Scheduler`] over all its pCPUs ([`Cpu`] is the loop's pCPU
//! index). [`Pools`] routes every call to the pool concerned (a vCPU's, a domain's, a
//! pCPU's) and translates between the loop's pCPU numbers and the pool's own (0 .. its CPU
//! count, what the policies and the ARINC 653 windows use). Nothing crosses pools: a pool's
//! policy never sees another pool's vCPUs, so a busy pool cannot steal time from, or be
//! picked on, another's pCPUs.
//!
//! The control operations (`sysctl`/`domctl`) reach pools by Xen's pool id through
//! [`PoolControl`]; a lone policy (host tests, a run loop without pools) is pool 0 of every
//! pCPU and domain ([`OnePool`]).

use super::{Cpu, CreditParams, Decision, DomainRef, PoolScheduler, SchedError, Scheduler, VcpuRef};
use alloc::string::String;
use alloc::vec::Vec;

/// One pool: its id, its policy and its pCPUs.
pub struct Pool {
    /// Xen's cpupool id (0: the pool of the boot CPU).
    pub id: u32,
    pub name: String,
    pub sched: PoolScheduler,
    /// The loop's pCPU index of each of the pool's pCPUs: pool pCPU `i` is `cpus[i]`.
    cpus: Vec<Cpu>,
    /// The CPU number of each, as `XEN_SYSCTL_cpupool_op` INFO reports it.
    cpu_ids: Vec<u32>,
}

impl Pool {
    /// The loop's pCPU indices of the pool's pCPUs, in the pool's order.
    pub fn cpus(&self) -> &[Cpu] {
        &self.cpus
    }
}

/// Every pool of the run loop, as one [`Scheduler`].
#[derive(Default)]
pub struct Pools {
    pools: Vec<Pool>,
    /// (pool, the pool's pCPU number) of each loop pCPU; `None`: in no pool (it idles).
    of_cpu: Vec<Option<(usize, Cpu)>>,
    /// The pool of each domain placed with [`Pools::place`]; others are in pool index 0.
    of_domain: Vec<usize>,
    /// The pool of each vCPU added.
    of_vcpu: Vec<usize>,
    /// One pool of every loop pCPU, in the loop's order: calls go straight to it (the
    /// common case, kept as cheap as a lone policy).
    single: bool,
}

impl Pools {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a pool of `cpus` (the loop's pCPU indices, none in another pool; `cpu_ids` their
    /// CPU numbers) whose policy is `sched`, made for `cpus.len()` pCPUs. Returns its index.
    pub fn add_pool(
        &mut self,
        id: u32,
        name: String,
        sched: PoolScheduler,
        cpus: Vec<Cpu>,
        cpu_ids: Vec<u32>,
    ) -> usize {
        let index = self.pools.len();
        for (local, &cpu) in cpus.iter().enumerate() {
            if self.of_cpu.len() <= cpu {
                self.of_cpu.resize(cpu + 1, None);
            }
            self.of_cpu[cpu] = Some((index, local));
        }
        self.pools.push(Pool { id, name, sched, cpus, cpu_ids });
        self.single = self.pools.len() == 1 && self.pools[0].cpus.iter().enumerate().all(|(i, &c)| i == c);
        index
    }

    /// Put domain `domain` in pool `pool` (an index [`Pools::add_pool`] returned); call it
    /// before the domain's vCPUs are added.
    pub fn place(&mut self, domain: DomainRef, pool: usize) {
        if self.of_domain.len() <= domain {
            self.of_domain.resize(domain + 1, 0);
        }
        self.of_domain[domain] = pool.min(self.pools.len().saturating_sub(1));
    }

    pub fn pools(&self) -> &[Pool] {
        &self.pools
    }

    pub fn pool_mut(&mut self, index: usize) -> Option<&mut Pool> {
        self.pools.get_mut(index)
    }

    /// The index of the pool `domain` is in.
    pub fn pool_index_of(&self, domain: DomainRef) -> usize {
        self.of_domain.get(domain).copied().unwrap_or(0)
    }

    fn index_of_id(&self, id: u32) -> Option<usize> {
        self.pools.iter().position(|p| p.id == id)
    }

    /// The pool of `vcpu` and its policy.
    fn of(&mut self, vcpu: VcpuRef) -> Option<&mut Pool> {
        if self.single {
            return self.pools.first_mut();
        }
        let p = *self.of_vcpu.get(vcpu)?;
        self.pools.get_mut(p)
    }

    /// The pool of `domain` and its policy.
    fn domain_pool(&mut self, domain: DomainRef) -> Option<&mut Pool> {
        let p = self.pool_index_of(domain);
        self.pools.get_mut(p)
    }
}

impl Scheduler for Pools {
    fn add_vcpu(&mut self, vcpu: VcpuRef, domain: DomainRef, index: usize, now: u64) {
        let p = self.pool_index_of(domain);
        if self.of_vcpu.len() <= vcpu {
            self.of_vcpu.resize(vcpu + 1, 0);
        }
        self.of_vcpu[vcpu] = p;
        if let Some(pool) = self.pools.get_mut(p) {
            pool.sched.add_vcpu(vcpu, domain, index, now);
        }
    }
    fn remove_vcpu(&mut self, vcpu: VcpuRef, now: u64) {
        if let Some(pool) = self.of(vcpu) {
            pool.sched.remove_vcpu(vcpu, now);
        }
    }
    fn wake(&mut self, vcpu: VcpuRef, now: u64) -> Option<Cpu> {
        let pool = self.of(vcpu)?;
        let local = pool.sched.wake(vcpu, now)?;
        pool.cpus.get(local).copied()
    }
    fn sleep(&mut self, vcpu: VcpuRef, now: u64) {
        if let Some(pool) = self.of(vcpu) {
            pool.sched.sleep(vcpu, now);
        }
    }
    fn block(&mut self, vcpu: VcpuRef, now: u64) {
        if let Some(pool) = self.of(vcpu) {
            pool.sched.block(vcpu, now);
        }
    }
    fn yield_now(&mut self, vcpu: VcpuRef, now: u64) {
        if let Some(pool) = self.of(vcpu) {
            pool.sched.yield_now(vcpu, now);
        }
    }
    fn tick(&mut self, now: u64) {
        self.pools.iter_mut().for_each(|p| p.sched.tick(now));
    }
    fn pick(&mut self, cpu: Cpu, now: u64) -> Option<Decision> {
        if self.single {
            return self.pools.first_mut()?.sched.pick(cpu, now);
        }
        let (p, local) = (*self.of_cpu.get(cpu)?)?;
        self.pools[p].sched.pick(local, now)
    }
    fn next_event(&self, cpu: Cpu, now: u64) -> Option<u64> {
        let (p, local) = (*self.of_cpu.get(cpu)?)?;
        self.pools[p].sched.next_event(local, now)
    }
    fn set_credit(&mut self, domain: DomainRef, params: CreditParams) -> Result<(), SchedError> {
        self.domain_pool(domain).ok_or(SchedError::UnknownDomain(domain))?.sched.set_credit(domain, params)
    }
    fn credit(&self, domain: DomainRef) -> Option<CreditParams> {
        self.pools.get(self.pool_index_of(domain))?.sched.credit(domain)
    }
    fn control(&mut self) -> Option<&mut dyn PoolControl> {
        Some(self)
    }
}

/// The CPU pools as the control operations see them, by Xen's pool id.
pub trait PoolControl {
    /// The pools' ids, ascending.
    fn pool_ids(&self) -> Vec<u32>;
    /// The id of the pool `domain` is in.
    fn pool_of(&self, domain: DomainRef) -> u32;
    /// The CPU numbers of pool `id`'s pCPUs, in the pool's order.
    fn pool_cpu_ids(&self, id: u32) -> Vec<u32>;
    /// How many of the domains (`DomainRef` 0 .. `nr_domains`) are in pool `id`.
    fn pool_domains(&self, id: u32, nr_domains: usize) -> usize {
        (0..nr_domains).filter(|&d| self.pool_of(d) == id).count()
    }
    /// Pool `id`'s policy.
    fn pool_sched(&mut self, id: u32) -> Option<&mut dyn Scheduler>;
}

impl PoolControl for Pools {
    fn pool_ids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = self.pools.iter().map(|p| p.id).collect();
        ids.sort_unstable();
        ids
    }
    fn pool_of(&self, domain: DomainRef) -> u32 {
        self.pools.get(self.pool_index_of(domain)).map_or(0, |p| p.id)
    }
    fn pool_cpu_ids(&self, id: u32) -> Vec<u32> {
        self.index_of_id(id).map(|p| self.pools[p].cpu_ids.clone()).unwrap_or_default()
    }
    fn pool_sched(&mut self, id: u32) -> Option<&mut dyn Scheduler> {
        let p = self.index_of_id(id)?;
        Some(&mut self.pools[p].sched)
    }
}

/// A lone policy as pool 0 of every pCPU (0 .. `nr_cpus`) and every domain.
pub struct OnePool<'a> {
    pub sched: &'a mut dyn Scheduler,
    pub nr_cpus: usize,
}

impl PoolControl for OnePool<'_> {
    fn pool_ids(&self) -> Vec<u32> {
        alloc::vec![0]
    }
    fn pool_of(&self, _domain: DomainRef) -> u32 {
        0
    }
    fn pool_cpu_ids(&self, id: u32) -> Vec<u32> {
        if id == 0 { (0..self.nr_cpus as u32).collect() } else { Vec::new() }
    }
    fn pool_sched(&mut self, id: u32) -> Option<&mut dyn Scheduler> {
        (id == 0).then_some(&mut *self.sched)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sched::{Arinc653Schedule, SchedKind, Window, credit::DEFAULT_WEIGHT};
    use alloc::string::ToString;
    use alloc::vec;

    const MS: u64 = 1_000_000;

    /// Loop pCPUs 0 and 2 are pool id 0 (credit), pCPU 1 is pool id 1 (ARINC 653): the
    /// pools' pCPUs interleave in the loop's numbering to catch a missing translation.
    fn two_pools() -> Pools {
        let mut p = Pools::new();
        let credit = PoolScheduler::new(SchedKind::Credit, 2, MS);
        let a653 = PoolScheduler::new(SchedKind::Arinc653, 1, MS);
        assert_eq!(p.add_pool(0, "general".to_string(), credit, vec![0, 2], vec![0, 2]), 0);
        assert_eq!(p.add_pool(1, "rt".to_string(), a653, vec![1], vec![1]), 1);
        // Domains 0 and 1 (one vCPU each: 0, 1) in the credit pool, domain 2 (vCPU 2) in rt.
        p.place(2, 1);
        for (vcpu, domain) in [(0, 0), (1, 1), (2, 2)] {
            p.add_vcpu(vcpu, domain, 0, 0);
        }
        let windows = vec![vec![Window { start_ns: 0, len_ns: 4 * MS, domain: 2, vcpu: 0 }]];
        let rt = p.pool_sched(1).unwrap();
        rt.set_arinc653(Arinc653Schedule { major_frame_ns: 10 * MS, cpus: windows }, 0).unwrap();
        p
    }

    #[test]
    fn a_pool_runs_only_its_own_vcpus_on_only_its_own_pcpus() {
        let mut p = two_pools();
        for v in 0..3 {
            p.wake(v, 0);
        }
        let mut ran = [Vec::new(), Vec::new(), Vec::new()];
        let mut now = 0;
        while now < 100 * MS {
            for (cpu, ran) in ran.iter_mut().enumerate() {
                ran.extend(p.pick(cpu, now).map(|d| d.vcpu));
            }
            now += MS;
        }
        assert!(ran[1].iter().all(|&v| v == 2), "the ARINC 653 pCPU ran {:?}", ran[1]);
        assert!(!ran[1].is_empty());
        for cpu in [0, 2] {
            assert!(ran[cpu].iter().all(|&v| v < 2), "credit pCPU {cpu} ran {:?}", ran[cpu]);
            assert!(ran[cpu].len() as u64 >= 99, "a credit pCPU idled with two hogs in its pool");
        }
    }

    #[test]
    fn the_arinc653_windows_do_not_move_when_the_other_pool_is_busy_or_idle() {
        let picks = |busy: bool| {
            let mut p = two_pools();
            p.wake(2, 0);
            if busy {
                p.wake(0, 0);
                p.wake(1, 0);
            }
            let mut out = Vec::new();
            let mut now = 0;
            while now < 40 * MS {
                out.push(p.pick(1, now));
                now += MS / 2;
            }
            out
        };
        assert_eq!(picks(true), picks(false));
        assert_eq!(picks(true)[0], Some(Decision { vcpu: 2, slice_ns: 4 * MS }));
    }

    #[test]
    fn a_wake_names_the_loop_pcpu_of_its_pool() {
        let mut p = two_pools();
        // The credit pool's pCPUs are the loop's 0 and 2: a wake tickles one of them.
        let tickled = [p.wake(0, 0), p.wake(1, 0)];
        assert!(tickled.iter().flatten().all(|c| [0, 2].contains(c)), "{tickled:?}");
        assert!(tickled.iter().flatten().count() >= 1);
    }

    #[test]
    fn control_reaches_pools_by_id_and_domains_by_their_pool() {
        let mut p = two_pools();
        assert_eq!(p.pool_ids(), vec![0, 1]);
        assert_eq!([p.pool_of(0), p.pool_of(1), p.pool_of(2)], [0, 0, 1]);
        assert_eq!(p.pool_cpu_ids(0), vec![0, 2]);
        assert_eq!(p.pool_domains(1, 3), 1);
        assert_eq!(p.pool_sched(1).unwrap().kind(), Some(SchedKind::Arinc653));
        assert!(p.pool_sched(7).is_none());
        // Credit parameters go to the domain's pool: the ARINC 653 pool has none.
        let w = CreditParams { weight: 512, cap: 0 };
        assert_eq!(p.set_credit(1, w), Ok(()));
        assert_eq!(p.credit(1), Some(w));
        assert_eq!(p.credit(0).map(|c| c.weight), Some(DEFAULT_WEIGHT));
        assert_eq!(p.set_credit(2, w), Err(SchedError::NotSupported));
        // A schedule naming a domain of the other pool is refused by the ARINC 653 pool.
        let foreign = vec![vec![Window { start_ns: 0, len_ns: MS, domain: 0, vcpu: 0 }]];
        let bad = Arinc653Schedule { major_frame_ns: 10 * MS, cpus: foreign };
        assert_eq!(p.pool_sched(1).unwrap().set_arinc653(bad, 0), Err(SchedError::UnknownDomain(0)));
    }

    #[test]
    fn a_pcpu_in_no_pool_idles() {
        let mut p = two_pools();
        p.wake(0, 0);
        assert_eq!(p.pick(5, 0), None);
        assert_eq!(p.next_event(5, 0), None);
    }
}
