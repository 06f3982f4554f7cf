//! Domains: the unit of isolation. A domain owns its memory, its vCPUs and its console.

use crate::console::GuestConsole;
use crate::log;
use arch::exit::{FaultKind, GuestFault, MmioAccess, VirtualCpu};

/// How a domain's life ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DomainEnd {
    PoweredOff,
    Crashed,
}

pub struct Domain {
    pub id: u16,
    console: GuestConsole,
}

impl Domain {
    pub fn new(id: u16) -> Self {
        Self { id, console: GuestConsole::new(id) }
    }

    /// Guest console bytes; complete lines go to the physical console.
    pub fn console_write(&mut self, bytes: &[u8]) {
        self.console.write(bytes, &mut |line| log::write_bytes(line));
    }

    pub fn console_pending(&self) -> bool {
        self.console.pending()
    }

    /// Complete a trapped MMIO access with the domain's device models; an access no device
    /// claims is a guest fault.
    pub fn mmio(&mut self, vcpu: &mut dyn VirtualCpu, access: MmioAccess) -> Result<(), GuestFault> {
        Err(GuestFault { kind: FaultKind::UnmappedGuestPhysical, gpa: access.gpa, pc: vcpu.pc(), syndrome: 0 })
    }

    /// Flush what the guest left unfinished; called when the domain is destroyed.
    pub fn console_flush(&mut self) {
        if self.console.pending() {
            self.console.flush(&mut |line| log::write_bytes(line));
        }
    }
}
