//! The vCPU the core sees: VT-x or AMD-V, whichever the boot CPU was set up for.

use super::{space, svm, vmx};
use crate::boot::GuestSetup;
use crate::exit::{BadGuestAddress, CpuOnResult, Exit, VirtualCpu};
use crate::x86::Backend;

pub enum Vcpu {
    Vmx(vmx::vcpu::Vcpu),
    Svm(svm::vcpu::Vcpu),
}

impl Vcpu {
    pub fn new(setup: &GuestSetup) -> Result<Vcpu, &'static str> {
        match super::backend() {
            Backend::Vmx => vmx::vcpu::Vcpu::new(setup).map(Vcpu::Vmx),
            Backend::Svm => svm::vcpu::Vcpu::new(setup).map(Vcpu::Svm),
        }
    }
}

/// Forward a method to whichever backend this vCPU runs on.
macro_rules! each {
    ($self:ident, $v:ident => $e:expr) => {
        match $self {
            Vcpu::Vmx($v) => $e,
            Vcpu::Svm($v) => $e,
        }
    };
}

impl VirtualCpu for Vcpu {
    fn run(&mut self) -> Exit {
        each!(self, v => v.run())
    }
    fn set_hypercall_result(&mut self, value: u64) {
        each!(self, v => v.set_hypercall_result(value))
    }
    fn pc(&self) -> u64 {
        each!(self, v => v.pc())
    }
    fn copy_from_guest(&mut self, gva: u64, buf: &mut [u8]) -> Result<(), BadGuestAddress> {
        each!(self, v => v.copy_from_guest(gva, buf))
    }
    fn copy_to_guest(&mut self, gva: u64, buf: &[u8]) -> Result<(), BadGuestAddress> {
        each!(self, v => v.copy_to_guest(gva, buf))
    }
    fn complete_mmio_read(&mut self, value: u64) {
        each!(self, v => v.complete_mmio_read(value))
    }
    // What both backends do alike lives here once, on their shared parts: guest RAM, the
    // domain's page tables and the exit context.
    fn read_guest_phys(&mut self, gpa: u64, buf: &mut [u8]) -> Result<(), BadGuestAddress> {
        each!(self, v => v.ram.read_phys(gpa, buf, &v.space.borrow().hidden))
    }
    fn guest_phys_of(&mut self, gva: u64) -> Option<u64> {
        each!(self, v => v.guest_phys_of(gva))
    }
    fn write_guest_phys(&mut self, gpa: u64, buf: &[u8]) -> Result<(), BadGuestAddress> {
        each!(self, v => v.ram.write_phys(gpa, buf, &v.space.borrow().hidden))
    }
    fn map_host_page(&mut self, gpa: u64, hpa: u64) -> Result<(), BadGuestAddress> {
        // Every CPU drops the old translation before it runs a vCPU of the domain again, and
        // those inside one now leave the guest before this returns.
        each!(self, v => {
            let done = v.space.borrow_mut().remap_4k(gpa, hpa).map_err(|_| BadGuestAddress(gpa));
            space::shoot_down(&v.space);
            done
        })
    }
    fn map_grant(&mut self, gpa: u64, hpa: u64, writable: bool) -> Result<(), BadGuestAddress> {
        each!(self, v => {
            let done = v.space.borrow_mut().map_grant(gpa, hpa, writable).map_err(|_| BadGuestAddress(gpa));
            space::shoot_down(&v.space);
            done
        })
    }
    fn unmap_grant(&mut self, gpa: u64) -> Result<(), BadGuestAddress> {
        each!(self, v => {
            let done = v.space.borrow_mut().unmap_grant(gpa).map_err(|_| BadGuestAddress(gpa));
            space::shoot_down(&v.space);
            done
        })
    }
    fn raise_upcall(&mut self) {
        each!(self, v => v.ctx.upcall_pending = true)
    }
    fn set_irq_line(&mut self, intid: u32, level: bool) {
        each!(self, v => v.set_irq_line(intid, level))
    }
    fn complete_cpu_on(&mut self, result: CpuOnResult) {
        each!(self, v => v.complete_cpu_on(result))
    }
    fn power_on_sibling(&mut self, index: usize, entry: u64, context: u64) -> Option<Self> {
        match self {
            Vcpu::Vmx(v) => v.power_on_sibling(index, entry, context).map(Vcpu::Vmx),
            Vcpu::Svm(v) => v.power_on_sibling(index, entry, context).map(Vcpu::Svm),
        }
    }
    fn interrupt_pending(&self) -> bool {
        each!(self, v => v.interrupt_pending())
    }
    fn unload(&mut self) {
        each!(self, v => v.unload())
    }
    fn timer_deadline_ns(&self) -> Option<u64> {
        each!(self, v => v.timer_deadline_ns())
    }
    fn set_preemption_deadline(&mut self, deadline_ns: Option<u64>) {
        each!(self, v => v.set_preemption_deadline(deadline_ns))
    }
    fn set_upcall_vector(&mut self, vector: Option<u8>) {
        // Domain-wide (a vCPU started later takes it from the shared space) and this vCPU's.
        each!(self, v => {
            v.space.borrow_mut().upcall_vector = vector;
            v.ctx.upcall_vector = vector;
        })
    }
    fn set_xen_timer(&mut self, deadline_ns: Option<u64>) -> bool {
        each!(self, v => v.set_xen_timer(deadline_ns))
    }
    fn take_expired_timer(&mut self) -> bool {
        each!(self, v => v.take_expired_timer())
    }
}

/// The exit handlers' view of the bare machine, for both backends.
pub(super) struct Bare;

/// [`Bare`], plus the guest's code as its page tables map it (for decoding the instruction
/// behind an access to an emulated MMIO page).
pub(super) struct WithCode<'a> {
    pub ram: &'a super::guestmem::GuestRam,
    pub tr: super::guestmem::Translation,
    pub hidden: &'a crate::x86::hidden::HiddenFrames,
}

impl crate::x86::guest::Platform for WithCode<'_> {
    fn host_cpuid(&self, leaf: u32, sub: u32) -> [u32; 4] {
        Bare.host_cpuid(leaf, sub)
    }
    fn debug_line(&mut self, domain_id: u16, line: &str) {
        Bare.debug_line(domain_id, line);
    }
    fn report(&mut self, args: core::fmt::Arguments) {
        Bare.report(args);
    }
    fn xstate(&self) -> crate::x86::xstate::Layout {
        Bare.xstate()
    }
    fn fetch_code(&mut self, linear: u64, buf: &mut [u8]) -> usize {
        // All of it, or what the instruction's own page holds (the next may be unmapped).
        let in_page = (4096 - (linear & 0xfff) as usize).min(buf.len());
        for len in [buf.len(), in_page] {
            if self.ram.copy_from(self.tr, linear, &mut buf[..len], self.hidden).is_ok() {
                return len;
            }
        }
        0
    }
}

impl crate::x86::guest::Platform for Bare {
    fn host_cpuid(&self, leaf: u32, sub: u32) -> [u32; 4] {
        let r = core::arch::x86_64::__cpuid_count(leaf, sub);
        [r.eax, r.ebx, r.ecx, r.edx]
    }
    fn debug_line(&mut self, domain_id: u16, line: &str) {
        super::console_line(format_args!("(d{domain_id}) {line}"));
    }
    fn report(&mut self, args: core::fmt::Arguments) {
        super::report(args);
    }
    fn xstate(&self) -> crate::x86::xstate::Layout {
        *super::xstate::layout()
    }
}
