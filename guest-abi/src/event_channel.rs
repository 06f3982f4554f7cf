//! `event_channel_op` sub-operations, their arguments and the FIFO ABI
//! (`xen/include/public/event_channel.h`), plus the `VIRQ_*` numbers (defined in
//! `xen/include/public/xen.h`).
//!
//! `event_channel_op(cmd, &arg)`; ports are `evtchn_port_t` (u32) and domains `domid_t`
//! (u16).

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Argument: [`EvtchnBindInterdomain`].
pub const EVTCHNOP_BIND_INTERDOMAIN: u64 = 0;
/// Argument: [`EvtchnBindVirq`].
pub const EVTCHNOP_BIND_VIRQ: u64 = 1;
/// Argument: [`EvtchnBindPirq`].
pub const EVTCHNOP_BIND_PIRQ: u64 = 2;
/// Argument: [`EvtchnClose`].
pub const EVTCHNOP_CLOSE: u64 = 3;
/// Argument: [`EvtchnSend`].
pub const EVTCHNOP_SEND: u64 = 4;
/// Argument: [`EvtchnStatus`].
pub const EVTCHNOP_STATUS: u64 = 5;
/// Argument: [`EvtchnAllocUnbound`].
pub const EVTCHNOP_ALLOC_UNBOUND: u64 = 6;
/// Argument: [`EvtchnBindIpi`].
pub const EVTCHNOP_BIND_IPI: u64 = 7;
/// Argument: [`EvtchnBindVcpu`].
pub const EVTCHNOP_BIND_VCPU: u64 = 8;
/// Argument: [`EvtchnUnmask`].
pub const EVTCHNOP_UNMASK: u64 = 9;
/// Close all of a domain's ports (argument: [`EvtchnReset`]).
pub const EVTCHNOP_RESET: u64 = 10;
/// Switch to the FIFO ABI and register a vCPU's control block (argument:
/// [`EvtchnInitControl`]).
pub const EVTCHNOP_INIT_CONTROL: u64 = 11;
/// FIFO: add a page of event words (argument: [`EvtchnExpandArray`]).
pub const EVTCHNOP_EXPAND_ARRAY: u64 = 12;
/// FIFO: set a port's priority (argument: [`EvtchnSetPriority`]).
pub const EVTCHNOP_SET_PRIORITY: u64 = 13;
/// Hypervisor-internal continuation of `EVTCHNOP_reset`.
pub const EVTCHNOP_RESET_CONT: u64 = 14;

// Virtual interrupts (`VIRQ_*`, from `xen.h`), bound with `EVTCHNOP_bind_virq`.
// "Per vCPU" ones are bound on each vCPU; "global" ones once, for vCPU 0.

/// Per vCPU: timer tick or single-shot timeout.
pub const VIRQ_TIMER: u32 = 0;
/// Per vCPU: dump debug information.
pub const VIRQ_DEBUG: u32 = 1;
/// Global: bytes arrived on the emergency (hypervisor) console.
pub const VIRQ_CONSOLE: u32 = 2;
/// Global: some domain hit an exceptional event.
pub const VIRQ_DOM_EXC: u32 = 3;
/// Global: the trace buffer has records.
pub const VIRQ_TBUF: u32 = 4;
/// Global: a domain paused for the debugger.
pub const VIRQ_DEBUGGER: u32 = 6;
/// Per vCPU: a XenOprofile sample is available.
pub const VIRQ_XENOPROF: u32 = 7;
/// Global: bytes arrived on the console ring.
pub const VIRQ_CON_RING: u32 = 8;
/// Global: a physical CPU changed state.
pub const VIRQ_PCPU_STATE: u32 = 9;
/// Global: a memory event occurred.
pub const VIRQ_MEM_EVENT: u32 = 10;
/// Per domain: an Argo message arrived.
pub const VIRQ_ARGO: u32 = 11;
/// Global: the hypervisor is low on heap memory.
pub const VIRQ_ENOMEM: u32 = 12;
/// Per vCPU: performance-counter interrupt.
pub const VIRQ_XENPMU: u32 = 13;
/// Numbers 16..=23 are left to each architecture.
pub const VIRQ_ARCH_0: u32 = 16;
pub const VIRQ_ARCH_1: u32 = 17;
pub const VIRQ_ARCH_2: u32 = 18;
pub const VIRQ_ARCH_3: u32 = 19;
pub const VIRQ_ARCH_4: u32 = 20;
pub const VIRQ_ARCH_5: u32 = 21;
pub const VIRQ_ARCH_6: u32 = 22;
pub const VIRQ_ARCH_7: u32 = 23;
/// Number of VIRQ numbers.
pub const NR_VIRQS: u32 = 24;

/// [`EvtchnBindPirq::flags`]: the PIRQ may be shared with other domains.
pub const BIND_PIRQ__WILL_SHARE: u32 = 1;

/// [`EvtchnStatus::status`] values.
pub const EVTCHNSTAT_CLOSED: u32 = 0;
pub const EVTCHNSTAT_UNBOUND: u32 = 1;
pub const EVTCHNSTAT_INTERDOMAIN: u32 = 2;
pub const EVTCHNSTAT_PIRQ: u32 = 3;
pub const EVTCHNSTAT_VIRQ: u32 = 4;
pub const EVTCHNSTAT_IPI: u32 = 5;

/// Ports of the 2-level ABI: `sizeof(xen_ulong_t)^2 * 64` with the 8-byte `xen_ulong_t` of
/// x86_64 and ARM.
pub const EVTCHN_2L_NR_CHANNELS: u32 = 4096;

/// FIFO ABI: the most urgent priority.
pub const EVTCHN_FIFO_PRIORITY_MAX: u32 = 0;
/// FIFO ABI: the priority of new ports.
pub const EVTCHN_FIFO_PRIORITY_DEFAULT: u32 = 7;
/// FIFO ABI: the least urgent priority.
pub const EVTCHN_FIFO_PRIORITY_MIN: u32 = 15;
/// FIFO ABI: one queue per priority.
pub const EVTCHN_FIFO_MAX_QUEUES: usize = 16;
/// FIFO event word (`event_word_t`, u32) bit numbers.
pub const EVTCHN_FIFO_PENDING: u32 = 31;
pub const EVTCHN_FIFO_MASKED: u32 = 30;
pub const EVTCHN_FIFO_LINKED: u32 = 29;
pub const EVTCHN_FIFO_BUSY: u32 = 28;
/// Width of the LINK field (bits 16:0) of an event word.
pub const EVTCHN_FIFO_LINK_BITS: u32 = 17;
pub const EVTCHN_FIFO_LINK_MASK: u32 = (1 << EVTCHN_FIFO_LINK_BITS) - 1;
/// Ports of the FIFO ABI.
pub const EVTCHN_FIFO_NR_CHANNELS: u32 = 1 << EVTCHN_FIFO_LINK_BITS;

/// `struct evtchn_alloc_unbound`: allocate a port that `remote_dom` may bind to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct EvtchnAllocUnbound {
    /// In: the allocating domain (usually `DOMID_SELF`).
    pub dom: u16,
    /// In: the domain allowed to connect.
    pub remote_dom: u16,
    /// Out: the new port.
    pub port: u32,
}

/// `struct evtchn_bind_interdomain`: connect to a remote domain's unbound port.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct EvtchnBindInterdomain {
    pub remote_dom: u16,
    /// Implicit C padding.
    pub _pad0: u16,
    pub remote_port: u32,
    /// Out: the local end.
    pub local_port: u32,
}

/// `struct evtchn_bind_virq`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct EvtchnBindVirq {
    /// `VIRQ_*`.
    pub virq: u32,
    /// The vCPU to deliver to.
    pub vcpu: u32,
    /// Out: the new port.
    pub port: u32,
}

/// `struct evtchn_bind_pirq`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct EvtchnBindPirq {
    pub pirq: u32,
    /// `BIND_PIRQ__*`.
    pub flags: u32,
    /// Out: the new port.
    pub port: u32,
}

/// `struct evtchn_bind_ipi`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct EvtchnBindIpi {
    pub vcpu: u32,
    /// Out: the new port.
    pub port: u32,
}

/// `struct evtchn_close`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct EvtchnClose {
    pub port: u32,
}

/// `struct evtchn_send`: notify the other end of `port`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct EvtchnSend {
    pub port: u32,
}

/// `struct evtchn_status`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct EvtchnStatus {
    /// In: the domain owning `port`.
    pub dom: u16,
    /// Implicit C padding.
    pub _pad0: u16,
    pub port: u32,
    /// Out: `EVTCHNSTAT_*`.
    pub status: u32,
    /// Out: the vCPU the port notifies.
    pub vcpu: u32,
    /// Out: the C union `u`, by status: unbound -> remote `domid_t` in the low 16 bits of
    /// word 0; interdomain -> remote `domid_t` in word 0, remote port in word 1;
    /// pirq / virq -> the number in word 0.
    pub u: [u32; 2],
}

/// `struct evtchn_bind_vcpu`: deliver `port` to another vCPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct EvtchnBindVcpu {
    pub port: u32,
    pub vcpu: u32,
}

/// `struct evtchn_unmask`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct EvtchnUnmask {
    pub port: u32,
}

/// `struct evtchn_reset`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct EvtchnReset {
    pub dom: u16,
}

/// `struct evtchn_init_control`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct EvtchnInitControl {
    /// In: guest frame holding the control block.
    pub control_gfn: u64,
    /// In: byte offset of the [`EvtchnFifoControlBlock`] in that frame.
    pub offset: u32,
    /// In: the vCPU it belongs to.
    pub vcpu: u32,
    /// Out: width of the LINK field ([`EVTCHN_FIFO_LINK_BITS`]).
    pub link_bits: u8,
    pub _pad: [u8; 7],
}

/// `struct evtchn_expand_array`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct EvtchnExpandArray {
    /// Guest frame to add to the event array.
    pub array_gfn: u64,
}

/// `struct evtchn_set_priority`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct EvtchnSetPriority {
    pub port: u32,
    /// `EVTCHN_FIFO_PRIORITY_MAX..=EVTCHN_FIFO_PRIORITY_MIN`.
    pub priority: u32,
}

/// `struct evtchn_fifo_control_block`: a vCPU's FIFO queue heads.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct EvtchnFifoControlBlock {
    /// Bit `q` set: queue `q` is not empty.
    pub ready: u32,
    pub _rsvd: u32,
    /// The head port of each priority queue.
    pub head: [u32; EVTCHN_FIFO_MAX_QUEUES],
}

layout_checks! {
    test layouts;
    all, "struct evtchn_alloc_unbound", EvtchnAllocUnbound, 8, {
        dom: 0,
        remote_dom: 2,
        port: 4,
    };
    all, "struct evtchn_bind_interdomain", EvtchnBindInterdomain, 12, {
        remote_dom: 0,
        _pad0: 2,
        remote_port: 4,
        local_port: 8,
    };
    all, "struct evtchn_bind_virq", EvtchnBindVirq, 12, { virq: 0, vcpu: 4, port: 8 };
    all, "struct evtchn_bind_pirq", EvtchnBindPirq, 12, { pirq: 0, flags: 4, port: 8 };
    all, "struct evtchn_bind_ipi", EvtchnBindIpi, 8, { vcpu: 0, port: 4 };
    all, "struct evtchn_close", EvtchnClose, 4, { port: 0 };
    all, "struct evtchn_send", EvtchnSend, 4, { port: 0 };
    all, "struct evtchn_status", EvtchnStatus, 24, {
        dom: 0,
        _pad0: 2,
        port: 4,
        status: 8,
        vcpu: 12,
        u: 16,
    };
    all, "struct evtchn_bind_vcpu", EvtchnBindVcpu, 8, { port: 0, vcpu: 4 };
    all, "struct evtchn_unmask", EvtchnUnmask, 4, { port: 0 };
    all, "struct evtchn_reset", EvtchnReset, 2, { dom: 0 };
    all, "struct evtchn_init_control", EvtchnInitControl, 24, {
        control_gfn: 0,
        offset: 8,
        vcpu: 12,
        link_bits: 16,
        _pad: 17,
    };
    all, "struct evtchn_expand_array", EvtchnExpandArray, 8, { array_gfn: 0 };
    all, "struct evtchn_set_priority", EvtchnSetPriority, 8, { port: 0, priority: 4 };
    // ready, reserved, then 16 queue heads.
    all, "struct evtchn_fifo_control_block", EvtchnFifoControlBlock, 72, {
        ready: 0,
        _rsvd: 4,
        head: 8,
    };
}
