//! What a vCPU run returns to the core, and how the core reaches guest state.
//!
//! Architectural noise (CPUID, system-register traps, interrupt-controller MMIO) is handled
//! inside the arch backend; only decisions the core must make come out as an [`Exit`].

/// A hypercall as the guest issued it, already taken out of the arch's registers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HypercallArgs {
    pub nr: u64,
    pub args: [u64; 5],
    /// The guest ran in 32-bit protected mode when it made the call (x86 only): its argument
    /// structures have Xen's "compat" layouts (32-bit `long`s, pointers and frame numbers).
    /// False on ARM, where 32- and 64-bit guests share one layout.
    pub compat: bool,
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
    /// A physical interrupt or timer took the CPU out of the guest: the core may run
    /// something else if the vCPU's slice is over (see [`VirtualCpu::set_preemption_deadline`]).
    Preempted,
    /// The guest waits for an event another vCPU will send (ARM WFE, a spin-wait hint): give
    /// the CPU to someone else, then resume it. Unlike [`Exit::Halt`], no interrupt is needed.
    Yield,
    /// The guest asked to power on vCPU `target` of its domain (PSCI CPU_ON) at `entry`, with
    /// `context` in its first argument register. The caller is answered with
    /// [`VirtualCpu::complete_cpu_on`].
    CpuOn { target: usize, entry: u64, context: u64 },
    /// The vCPU powered itself off (PSCI CPU_OFF): it stays off until a CPU_ON names it.
    CpuOff,
    /// The guest did something that cannot be completed.
    Fault(GuestFault),
    /// The guest accessed guest-physical memory that no RAM backs and no arch-internal
    /// device (vGIC, vLAPIC) claims: a device model in the core must complete it. A read is
    /// completed with [`VirtualCpu::complete_mmio_read`] before the next `run()`.
    Mmio(MmioAccess),
}

/// What the core's [`VirtualCpu::run_with`] hook did with an exit offered to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterExit {
    /// Handled in place: enter the guest again at once, nothing else to decide.
    Resume,
    /// Leave `run_with` with the exit as the hook left it (the one offered, or one it wrote
    /// over it for what is left to decide) for the core's full path.
    Leave,
}

/// One trapped MMIO access, already decoded (the PC has moved past the instruction).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioAccess {
    pub gpa: u64,
    /// Access size in bytes: 1, 2, 4 or 8.
    pub size: u8,
    /// `Some(value)` for a write, `None` for a read.
    pub write: Option<u64>,
}

/// The answer to an [`Exit::CpuOn`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuOnResult {
    /// The target was created and will run.
    Started,
    /// The target is already on.
    AlreadyOn,
    /// No vCPU of the domain has that identity.
    NoSuchCpu,
    /// The backend could not create it.
    Failed,
}

/// A guest address could not be read or written (hypercalls answer `-EFAULT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadGuestAddress(pub u64);

/// The core's view of one virtual CPU.
pub trait VirtualCpu {
    /// Enter the guest until something the core must decide on happens.
    fn run(&mut self) -> Exit;
    /// [`VirtualCpu::run`], offering each exit to `hook` first while this vCPU stays
    /// loaded (the per-exit fast path: a hypercall that needs no scheduling decision goes
    /// back to the guest without the vCPU being put away and entered afresh). A backend
    /// whose entry has fixed costs worth skipping overrides this; the default re-enters
    /// through `run`.
    fn run_with(&mut self, hook: &mut dyn FnMut(&mut Self, &mut Exit) -> AfterExit) -> Exit
    where
        Self: Sized,
    {
        loop {
            let mut exit = self.run();
            if hook(self, &mut exit) == AfterExit::Leave {
                return exit;
            }
        }
    }
    /// Set the return value of the hypercall reported by the last exit.
    fn set_hypercall_result(&mut self, value: u64);
    /// The guest's current program counter (for reports).
    fn pc(&self) -> u64;
    /// Copy from guest memory at a guest *virtual* address (what hypercall pointers are).
    fn copy_from_guest(&mut self, gva: u64, buf: &mut [u8]) -> Result<(), BadGuestAddress>;
    /// Copy to guest memory at a guest virtual address.
    fn copy_to_guest(&mut self, gva: u64, buf: &[u8]) -> Result<(), BadGuestAddress>;

    // The capabilities below arrive backend by backend; a backend that lacks one refuses
    // honestly (an error or nothing raised), and the core answers the guest with an errno.

    /// Complete the read reported by the last [`Exit::Mmio`] with `value`.
    fn complete_mmio_read(&mut self, _value: u64) {}
    /// Copy from guest-*physical* memory (frames the guest names by number), RAM only.
    fn read_guest_phys(&mut self, gpa: u64, _buf: &mut [u8]) -> Result<(), BadGuestAddress> {
        Err(BadGuestAddress(gpa))
    }
    /// The guest-physical address guest virtual `gva` maps to for a write, through the
    /// guest's own page tables as they are now (`None`: unmapped, or a backend that cannot
    /// tell). Only valid while this vCPU is the one in hand (in a hypercall).
    fn guest_phys_of(&mut self, _gva: u64) -> Option<u64> {
        None
    }
    /// Copy to guest-physical memory, RAM only.
    fn write_guest_phys(&mut self, gpa: u64, _buf: &[u8]) -> Result<(), BadGuestAddress> {
        Err(BadGuestAddress(gpa))
    }
    /// Map one hypervisor-owned 4 KiB host page (shared_info, grant frames, console ring) at
    /// guest-physical `gpa`, replacing what was there, for every vCPU of the domain.
    fn map_host_page(&mut self, gpa: u64, _hpa: u64) -> Result<(), BadGuestAddress> {
        Err(BadGuestAddress(gpa))
    }
    /// Map another domain's RAM page `hpa`, lent by a grant, at guest-physical `gpa` for
    /// every vCPU of this domain: read-only unless `writable`, never executed, replacing what
    /// was there. Copies the hypervisor makes for this domain never reach through it.
    fn map_grant(&mut self, gpa: u64, _hpa: u64, _writable: bool) -> Result<(), BadGuestAddress> {
        Err(BadGuestAddress(gpa))
    }
    /// End a grant mapping at `gpa`: the domain's own RAM page comes back if `gpa` is in its
    /// RAM, else nothing is mapped there; no vCPU of the domain keeps the old translation.
    fn unmap_grant(&mut self, gpa: u64) -> Result<(), BadGuestAddress> {
        Err(BadGuestAddress(gpa))
    }
    /// Raise the Xen event-channel upcall (ARM: PPI 31; x86: the callback vector).
    fn raise_upcall(&mut self) {}
    /// Drive a device interrupt line (ARM: an SPI INTID) high or low.
    fn set_irq_line(&mut self, _intid: u32, _level: bool) {}
    /// Let the guest take interrupts from here on, as Xen's `SCHEDOP_block` does before it
    /// blocks (`local_event_delivery_enable`; ARM: clear PSTATE.I in the state it returns
    /// to). A backend without it leaves the guest's mask as it was.
    fn enable_event_delivery(&mut self) {}

    // Several vCPUs per CPU. A backend that runs one vCPU per domain keeps the defaults: a
    // halted vCPU resumes at once, nothing preempts it, and CPU_ON creates nothing.

    /// Answer the [`Exit::CpuOn`] this vCPU reported (PSCI: SUCCESS, ALREADY_ON, ...).
    fn complete_cpu_on(&mut self, _result: CpuOnResult) {}
    /// Create vCPU `index` of this vCPU's domain (sharing its memory and interrupt
    /// controller), powered on at `entry` with `context` in its first argument register.
    fn power_on_sibling(&mut self, _index: usize, _entry: u64, _context: u64) -> Option<Self>
    where
        Self: Sized,
    {
        None
    }
    /// A halted vCPU has an interrupt to take (so it should run again). Evaluated while
    /// another vCPU may be loaded: it looks at this vCPU's saved state only.
    fn interrupt_pending(&self) -> bool {
        true
    }
    /// When this vCPU's own timer will make an interrupt pending (in the clock of the
    /// platform's `now_ns`), if it is armed.
    fn timer_deadline_ns(&self) -> Option<u64> {
        None
    }
    /// Leave the guest with [`Exit::Preempted`] once the platform clock reaches
    /// `deadline_ns` (`None`: no time limit), for the next `run()`.
    fn set_preemption_deadline(&mut self, _deadline_ns: Option<u64>) {}
    /// The vCPU leaves this physical CPU for the scheduler (it may run on another one next):
    /// save whatever of its state the last `run()` left loaded in the CPU, so that any pCPU
    /// can enter it next and its saved state (timer, interrupt interface) is current.
    fn unload(&mut self) {}
    /// The vCPUs of this domain (bit n: vCPU n) for which this vCPU's last exit may have made
    /// an interrupt pending (a virtual SGI, an SPI routed to them): if one of them runs on
    /// another pCPU, that pCPU must leave the guest to load it. Cleared by the call.
    fn take_sibling_kicks(&mut self) -> u64 {
        0
    }

    // Xen's x86 HVM/PVH interfaces that only the backend can carry out.

    /// Deliver the event-channel upcall as interrupt `vector` (`HVM_PARAM_CALLBACK_IRQ` of
    /// type vector); `None` stops vector delivery. Backends without it ignore the call.
    fn set_upcall_vector(&mut self, _vector: Option<u8>) {}
    /// Arm (`Some`, platform clock = Xen system time, in ns) or stop the Xen single-shot
    /// timer (`VCPUOP_set_singleshot_timer`). Once due it counts as a pending interrupt,
    /// [`VirtualCpu::timer_deadline_ns`] reports it, and `run()` returns [`Exit::Preempted`]
    /// so the core can raise `VIRQ_TIMER` after [`VirtualCpu::take_expired_timer`]. `false`:
    /// the backend has no such timer.
    fn set_xen_timer(&mut self, _deadline_ns: Option<u64>) -> bool {
        false
    }
    /// Whether the Xen single-shot timer expired since the last call (it is then disarmed).
    fn take_expired_timer(&mut self) -> bool {
        false
    }
}
