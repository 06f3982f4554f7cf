//! What a vCPU run returns to the core, and how the core reaches guest state.
//!
//! Architectural noise (CPUID, system-register traps, interrupt-controller MMIO) is handled
//! inside the arch backend; only decisions the core must make come out as an [`Exit`].

/// A hypercall as the guest issued it, already taken out of the arch's registers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HypercallArgs {
    pub nr: u64,
    pub args: [u64; 5],
}

/// Why a guest access or instruction could not be completed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// A guest-physical address outside the domain's memory and not claimed by a device model.
    UnmappedGuestPhysical,
    /// An instruction or trap the backend does not emulate.
    UnhandledTrap,
    /// The guest put its vCPU in an unrecoverable state (triple fault, SError, ...).
    FatalState,
}

/// A guest fault the core reports before crashing the domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestFault {
    pub kind: FaultKind,
    /// Guest-physical address involved (0 when not applicable).
    pub gpa: u64,
    /// Guest program counter at the fault.
    pub pc: u64,
    /// Arch-specific syndrome (ESR/HSR, VMX exit reason + qualification, SVM exit code).
    pub syndrome: u64,
}

/// Why a vCPU stopped running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// The guest issued a hypercall; the result goes back through `set_hypercall_result`.
    Hypercall(HypercallArgs),
    /// The guest waits for an interrupt (WFI/HLT).
    Halt,
    /// The guest asked the platform to power off (PSCI SYSTEM_OFF, ACPI S5).
    PowerOff,
    /// The guest asked the platform to reset (PSCI SYSTEM_RESET, ...).
    Reset,
    /// A physical interrupt or timer took the CPU out of the guest; nothing to decide.
    Preempted,
    /// The guest did something that cannot be completed.
    Fault(GuestFault),
}

/// A guest address could not be read or written (hypercalls answer `-EFAULT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadGuestAddress(pub u64);

/// The core's view of one virtual CPU.
pub trait VirtualCpu {
    /// Enter the guest until something the core must decide on happens.
    fn run(&mut self) -> Exit;
    /// Set the return value of the hypercall reported by the last exit.
    fn set_hypercall_result(&mut self, value: u64);
    /// The guest's current program counter (for reports).
    fn pc(&self) -> u64;
    /// Copy from guest memory at a guest *virtual* address (what hypercall pointers are).
    fn copy_from_guest(&mut self, gva: u64, buf: &mut [u8]) -> Result<(), BadGuestAddress>;
    /// Copy to guest memory at a guest virtual address.
    fn copy_to_guest(&mut self, gva: u64, buf: &[u8]) -> Result<(), BadGuestAddress>;
}
