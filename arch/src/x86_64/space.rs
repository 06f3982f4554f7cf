//! What the vCPUs of one x86 domain share, whichever the backend: the second-level tables
//! (NPT or EPT) over its RAM, the IPIs in flight between their local APICs, and enough of
//! the domain's identity to create a sibling vCPU (INIT/SIPI → the core's CPU_ON).
//!
//! Every vCPU runs on the boot CPU, so a plain `Rc<RefCell<..>>` serves; vCPUs on several
//! physical CPUs would need a lock here and a TLB shootdown on [`DomainSpace::remap_4k`].

use super::alloc::rc::Rc;
use super::guestmem::GuestRam;
use super::tables::{self, TablePages};
use crate::exit::Exit;
use crate::x86::ept::{self, Format};
use crate::x86::hidden::HiddenFrames;
use crate::x86::vlapic::{Ipi, IpiMailbox, MAX_APICS, Route, VLapic, route};
use core::cell::RefCell;

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
    /// Bumped by every change to the tables: a vCPU that last ran with an older value
    /// flushes its TLB before it enters the guest again.
    pub generation: u64,
    /// RAM frames a hypervisor page covers now: copies must not reach beneath them.
    pub hidden: HiddenFrames,
}

pub type SharedSpace = Rc<RefCell<DomainSpace>>;

impl DomainSpace {
    /// Tables in `fmt` mapping `ram`, for a domain of `nr_vcpus` vCPUs.
    pub fn new(fmt: Format, ram: GuestRam, domain_id: u16, nr_vcpus: usize) -> Result<SharedSpace, &'static str> {
        let (tables, root) = tables::second_level(fmt, &ram)?;
        Ok(Rc::new(RefCell::new(DomainSpace {
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
            generation: 0,
            hidden: HiddenFrames::default(),
        })))
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

    /// Before vCPU `id` enters the guest: take the IPIs other vCPUs sent it into `lapic` and
    /// the domain's callback vector into `upcall_vector`, publish its xAPIC logical id; true if the tables changed since
    /// `seen` (then updated), so that its TLB must be flushed first.
    pub fn sync_vcpu(&mut self, id: usize, lapic: &mut VLapic, upcall_vector: &mut Option<u8>, seen: &mut u64) -> bool {
        *upcall_vector = self.upcall_vector;
        if let Some(l) = self.logical_ids.get_mut(id) {
            *l = lapic.logical_id();
        }
        if self.mailbox.has(id) {
            self.mailbox.deliver(lapic);
        }
        let stale = self.generation != *seen;
        *seen = self.generation;
        stale
    }

    /// An ICR write for other vCPUs: fixed vectors go to their mailbox (and the sender
    /// yields, so that a halted target wakes and runs); a STARTUP asks the core to power the
    /// (first) target on in real mode at `vector << 12`.
    pub fn send_ipi(&mut self, ipi: Ipi) -> Option<Exit> {
        match route(ipi, self.apic_mask(), &self.logical_ids) {
            Route::Post { targets, vector } => {
                self.mailbox.post(targets, vector);
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
