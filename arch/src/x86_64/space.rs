//! What the vCPUs of one x86 domain share, whichever the backend: the second-level tables
//! (NPT or EPT) over its RAM, the IPIs in flight between their local APICs, and enough of
//! the domain's identity to create a sibling vCPU (INIT/SIPI → the core's CPU_ON).
//!
//! The vCPUs of a domain run on several physical CPUs at once, so the state is behind a spin
//! lock ([`SharedSpace`]). Lock order: the core's lock (when held), then one domain's space
//! lock; nothing else is taken while a space lock is held, but the log line lock and the heap
//! lock (leaves). Never held while a guest runs or while a CPU waits for another.
//!
//! TLB invalidation reaches every CPU that ran the domain: each CPU records which generation
//! of the domain's tables it last flushed for ([`DomainSpace::sync_vcpu`] flushes when that
//! is older: INVEPT of the domain's EPTP, or every ASID under SVM), and a change made while
//! other CPUs are inside one of the domain's vCPUs kicks them out and waits until they have
//! left ([`shoot_down`]): when the change returns, no CPU uses the old translation.

use super::alloc::sync::Arc;
use super::guestmem::GuestRam;
use super::smp::{self, MAX_CPUS};
use super::tables::{self, TablePages};
use crate::exit::Exit;
use crate::x86::ept::{self, Format};
use crate::x86::hidden::HiddenFrames;
use crate::x86::vlapic::{Ipi, IpiMailbox, MAX_APICS, Route, VLapic, route};
use core::sync::atomic::{AtomicU64, Ordering};

pub struct DomainSpace {
    pub fmt: Format,
    pub tables: TablePages,
    pub root: u64,
    pub ram: GuestRam,
    pub domain_id: u16,
    /// vCPUs the domain was given (APIC ids `0..nr_vcpus`).
    pub nr_vcpus: usize,
    pub mailbox: IpiMailbox,
    /// Each vCPU's xAPIC logical id (LDR bits 31:24; 0 outside xAPIC mode), as it was when
    /// the vCPU last entered the guest: what xAPIC logical destinations are matched against.
    pub logical_ids: [u8; MAX_APICS],
    /// Every vCPU of the domain (those started later too) starts its local APIC in xAPIC
    /// mode rather than x2APIC mode (`GuestSetup::xapic_at_reset`).
    pub xapic_at_reset: bool,
    /// The Xen callback vector (`HVM_PARAM_CALLBACK_IRQ`): a domain-wide parameter that every
    /// vCPU, those started later included, delivers its upcall as.
    pub upcall_vector: Option<u8>,
    /// Bumped by every change to the tables: a CPU that last flushed for an older value
    /// flushes before it enters one of the domain's vCPUs again.
    pub generation: u64,
    /// Per logical CPU, the generation its TLB was last flushed for (0: never ran the
    /// domain; generations count from 1).
    flushed_on: [u64; MAX_CPUS],
    /// RAM frames a hypervisor page covers now: copies must not reach beneath them.
    pub hidden: HiddenFrames,
}

/// One domain's [`DomainSpace`], shared by its vCPUs on every CPU.
#[derive(Clone)]
pub struct SharedSpace(Arc<spin::Mutex<DomainSpace>>);

impl SharedSpace {
    /// The space, for reading (the lock: see the module's lock order).
    pub fn borrow(&self) -> spin::MutexGuard<'_, DomainSpace> {
        self.0.lock()
    }
    /// The space, for changing it.
    pub fn borrow_mut(&self) -> spin::MutexGuard<'_, DomainSpace> {
        self.0.lock()
    }
}

/// Per logical CPU: the domain (id + 1, bits 63:48), vCPU (bits 47:40) and tables
/// generation (bits 39:0) it is inside of, or 0 outside guests. Set under the space lock
/// right before entry ([`DomainSpace::sync_vcpu`]), cleared right after the exit
/// ([`left_guest`]).
static IN_GUEST: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

const GENERATION_BITS: u64 = (1 << 40) - 1;

fn in_guest_tag(domain_id: u16, vcpu: usize, generation: u64) -> u64 {
    (u64::from(domain_id) + 1) << 48 | ((vcpu as u64 & 0xff) << 40) | (generation & GENERATION_BITS)
}

/// The CPU other than this one inside vCPU `vcpu` of domain `domain_id`, if any.
fn cpu_running(domain_id: u16, vcpu: usize) -> Option<usize> {
    let me = smp::this_cpu();
    let want = in_guest_tag(domain_id, vcpu, 0);
    (0..MAX_CPUS).find(|&c| c != me && IN_GUEST[c].load(Ordering::Acquire) & !GENERATION_BITS == want)
}

/// This CPU left the guest: no translation of any domain is in use here now.
pub fn left_guest() {
    IN_GUEST[smp::this_cpu()].store(0, Ordering::Release);
}

/// After a change of `space`'s tables (the lock released): kick every other CPU that is
/// inside one of its vCPUs with an older generation and wait until it has left the guest;
/// its next entry flushes ([`DomainSpace::sync_vcpu`]).
pub fn shoot_down(space: &SharedSpace) {
    let (domain_id, generation) = {
        let s = space.borrow();
        (s.domain_id, s.generation)
    };
    let me = smp::this_cpu();
    let stale = |cpu: usize| {
        let tag = IN_GUEST[cpu].load(Ordering::Acquire);
        tag >> 48 == u64::from(domain_id) + 1 && tag & GENERATION_BITS < generation & GENERATION_BITS
    };
    for cpu in (0..MAX_CPUS).filter(|&c| c != me) {
        if stale(cpu) {
            smp::kick(cpu);
            while stale(cpu) {
                core::hint::spin_loop();
            }
        }
    }
}
impl DomainSpace {
    /// Tables in `fmt` mapping `ram`, for a domain of `nr_vcpus` vCPUs.
    pub fn new_shared(
        fmt: Format,
        ram: GuestRam,
        domain_id: u16,
        nr_vcpus: usize,
    ) -> Result<SharedSpace, &'static str> {
        let (tables, root) = tables::second_level(fmt, &ram)?;
        Ok(SharedSpace(Arc::new(spin::Mutex::new(DomainSpace {
            fmt,
            tables,
            root,
            ram,
            domain_id,
            nr_vcpus: nr_vcpus.clamp(1, MAX_APICS),
            mailbox: IpiMailbox::default(),
            logical_ids: [0; MAX_APICS],
            upcall_vector: None,
            xapic_at_reset: false,
            generation: 1,
            flushed_on: [0; MAX_CPUS],
            hidden: HiddenFrames::default(),
        }))))
    }

    /// APIC ids that exist in this domain, as a destination mask.
    pub fn apic_mask(&self) -> u64 {
        if self.nr_vcpus >= 64 { u64::MAX } else { (1u64 << self.nr_vcpus) - 1 }
    }

    /// Map host page `hpa` at `gpa` for every vCPU of the domain.
    pub fn remap_4k(&mut self, gpa: u64, hpa: u64) -> Result<(), ept::EptError> {
        // Over RAM the guest loses that page: the hypervisor's copies must not see it either.
        let over_ram = self.ram.contains(gpa);
        if over_ram && self.hidden.is_full() && !self.hidden.hides(gpa, 1) {
            return Err(ept::EptError::OutOfTables);
        }
        ept::remap_4k(self.fmt, &mut self.tables, self.root, gpa, hpa)?;
        if over_ram {
            self.hidden.hide(gpa);
        }
        self.generation += 1;
        Ok(())
    }

    /// Map another domain's page `hpa` at `gpa` (read-only unless `writable`) for every vCPU
    /// of the domain; over RAM, copies no longer reach the page beneath.
    pub fn map_grant(&mut self, gpa: u64, hpa: u64, writable: bool) -> Result<(), ept::EptError> {
        let over_ram = self.ram.contains(gpa);
        if over_ram && self.hidden.is_full() && !self.hidden.hides(gpa, 1) {
            return Err(ept::EptError::OutOfTables);
        }
        ept::map_granted_4k(self.fmt, &mut self.tables, self.root, gpa, hpa, writable)?;
        if over_ram {
            self.hidden.hide(gpa);
        }
        self.generation += 1;
        Ok(())
    }

    /// End a grant mapping at `gpa`: the domain's RAM page comes back over RAM, nothing
    /// elsewhere; every vCPU flushes its TLB before it enters again.
    pub fn unmap_grant(&mut self, gpa: u64) -> Result<(), ept::EptError> {
        if self.ram.contains(gpa) {
            let hpa = self.ram.host + (gpa - self.ram.guest);
            ept::remap_4k(self.fmt, &mut self.tables, self.root, gpa, hpa)?;
            self.hidden.reveal(gpa);
        } else {
            ept::unmap_4k(self.fmt, &mut self.tables, self.root, gpa)?;
        }
        self.generation += 1;
        Ok(())
    }

    /// Right before vCPU `id` enters the guest on this CPU: take the IPIs other vCPUs sent it
    /// into `lapic` and the domain's callback vector into `upcall_vector`, publish its xAPIC
    /// logical id, and say that this CPU is inside the domain (until [`left_guest`]); true
    /// if this CPU has not flushed its TLB since the tables last changed (it must now).
    pub fn sync_vcpu(&mut self, id: usize, lapic: &mut VLapic, upcall_vector: &mut Option<u8>) -> bool {
        *upcall_vector = self.upcall_vector;
        if let Some(l) = self.logical_ids.get_mut(id) {
            *l = lapic.logical_id();
        }
        if self.mailbox.has(id) {
            self.mailbox.deliver(lapic);
        }
        let cpu = smp::this_cpu();
        IN_GUEST[cpu].store(in_guest_tag(self.domain_id, id, self.generation), Ordering::Release);
        let stale = self.flushed_on[cpu] != self.generation;
        self.flushed_on[cpu] = self.generation;
        stale
    }

    /// An ICR write for other vCPUs: fixed vectors go to their mailbox (the CPU a running
    /// target is on is kicked, and the sender yields, so that a halted target wakes and runs); a STARTUP asks the core to power the
    /// (first) target on in real mode at `vector << 12`.
    pub fn send_ipi(&mut self, ipi: Ipi) -> Option<Exit> {
        match route(ipi, self.apic_mask(), &self.logical_ids) {
            Route::Post { targets, vector } => {
                self.mailbox.post(targets, vector);
                // A target inside the guest on another CPU takes it at its next entry: make
                // that now. (One that enters later finds it in `sync_vcpu`.)
                let mut t = targets;
                while t != 0 {
                    let n = t.trailing_zeros() as usize;
                    t &= t - 1;
                    if let Some(cpu) = cpu_running(self.domain_id, n) {
                        smp::kick(cpu);
                    }
                }
                Some(Exit::Yield)
            }
            Route::Start { target, entry } => Some(Exit::CpuOn { target, entry, context: 0 }),
            Route::Nowhere => None,
        }
    }

    /// Whether `index` names a sibling vCPU `from` may power on.
    pub fn is_sibling(&self, from: usize, index: usize) -> bool {
        index < self.nr_vcpus && index != from
    }
}
