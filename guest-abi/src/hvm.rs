//! `hvm_op` sub-operations and HVM parameters (`xen/include/public/hvm/hvm_op.h` and
//! `xen/include/public/hvm/params.h`).
//!
//! Guests read and write parameters with `hvm_op(HVMOP_get_param / HVMOP_set_param, &param)`
//! where `param` is a [`XenHvmParam`] whose `index` is an `HVM_PARAM_*`.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Argument: [`XenHvmParam`].
pub const HVMOP_SET_PARAM: u64 = 0;
/// Argument: [`XenHvmParam`]; `value` is filled in.
pub const HVMOP_GET_PARAM: u64 = 1;
/// Interface versions before 4.9 only.
pub const HVMOP_SET_PCI_INTX_LEVEL: u64 = 2;
/// Interface versions before 4.9 only.
pub const HVMOP_SET_ISA_IRQ_LEVEL: u64 = 3;
/// Interface versions before 4.9 only.
pub const HVMOP_SET_PCI_LINK_ROUTE: u64 = 4;
/// Flush the TLBs of all the domain's vCPUs; the argument must be NULL.
pub const HVMOP_FLUSH_TLBS: u64 = 5;
/// The guest is about to stop using a page table (argument: [`XenHvmPagetableDying`]).
pub const HVMOP_PAGETABLE_DYING: u64 = 9;
/// Argument: [`XenHvmGetTime`].
pub const HVMOP_GET_TIME: u64 = 10;
pub const HVMOP_XENTRACE: u64 = 11;
/// Toolstack only.
pub const HVMOP_SET_MEM_ACCESS: u64 = 12;
/// Toolstack only.
pub const HVMOP_GET_MEM_ACCESS: u64 = 13;
/// Argument: [`XenHvmGetMemType`].
pub const HVMOP_GET_MEM_TYPE: u64 = 15;
/// x86: set the per-vCPU event upcall vector (argument: [`XenHvmEvtchnUpcallVector`]).
pub const HVMOP_SET_EVTCHN_UPCALL_VECTOR: u64 = 23;
pub const HVMOP_GUEST_REQUEST_VM_EVENT: u64 = 24;
pub const HVMOP_ALTP2M: u64 = 25;

/// How event-channel upcalls reach vCPU 0 (see [`callback_via`]); 0 means not at all.
pub const HVM_PARAM_CALLBACK_IRQ: u32 = 0;
/// Guest frame of the xenstore ring page.
pub const HVM_PARAM_STORE_PFN: u32 = 1;
/// Event channel of the xenstore ring.
pub const HVM_PARAM_STORE_EVTCHN: u32 = 2;
pub const HVM_PARAM_IOREQ_PFN: u32 = 5;
pub const HVM_PARAM_BUFIOREQ_PFN: u32 = 6;
/// x86: Viridian (Hyper-V) enlightenment mask.
pub const HVM_PARAM_VIRIDIAN: u32 = 9;
/// x86: virtual timer mode (`HVMPTM_*`).
pub const HVM_PARAM_TIMER_MODE: u32 = 10;
/// x86: boolean, emulate an HPET.
pub const HVM_PARAM_HPET_ENABLED: u32 = 11;
/// x86 (Intel): identity-map page directory used while CR0.PG = 0.
pub const HVM_PARAM_IDENT_PT: u32 = 12;
/// ACPI S state (S0 or S3).
pub const HVM_PARAM_ACPI_S_STATE: u32 = 14;
/// x86 (Intel): TSS used while CR0.PE = 0.
pub const HVM_PARAM_VM86_TSS: u32 = 15;
/// Boolean: align periodic virtual timers to reduce interrupts.
pub const HVM_PARAM_VPT_ALIGN: u32 = 16;
/// Guest frame of the console ring page (`console::XenconsInterface`).
pub const HVM_PARAM_CONSOLE_PFN: u32 = 17;
/// Event channel of the console ring.
pub const HVM_PARAM_CONSOLE_EVTCHN: u32 = 18;
/// Location of the ACPI PM1a/TMR blocks (0 old, 1 QEMU's).
pub const HVM_PARAM_ACPI_IOPORTS_LOCATION: u32 = 19;
pub const HVM_PARAM_PAGING_RING_PFN: u32 = 27;
pub const HVM_PARAM_MONITOR_RING_PFN: u32 = 28;
pub const HVM_PARAM_SHARING_RING_PFN: u32 = 29;
/// `SHUTDOWN_*` reason used when the guest triple-faults.
pub const HVM_PARAM_TRIPLE_FAULT_REASON: u32 = 31;
pub const HVM_PARAM_IOREQ_SERVER_PFN: u32 = 32;
pub const HVM_PARAM_NR_IOREQ_SERVER_PAGES: u32 = 33;
/// Guest-physical address of the VM generation id.
pub const HVM_PARAM_VM_GENERATION_ID_ADDR: u32 = 34;
/// altp2m mode (`XEN_ALTP2M_*`).
pub const HVM_PARAM_ALTP2M: u32 = 35;
/// x86: width of the x87 FIP/FDP registers to save and restore (0, 4 or 8).
pub const HVM_PARAM_X87_FIP_WIDTH: u32 = 36;
/// x86 (Intel): TSS address (bits 31:0) and size (bits 63:32) used while CR0.PE = 0.
pub const HVM_PARAM_VM86_TSS_SIZED: u32 = 37;
/// Machine-check capabilities (`XEN_HVM_MCA_CAP_*`).
pub const HVM_PARAM_MCA_CAP: u32 = 38;
/// Number of parameters (one more than the largest index).
pub const HVM_NR_PARAMS: u32 = 39;

/// Parameters only the hypervisor and toolstack may name; deprecated.
pub const HVM_PARAM_PAE_ENABLED: u32 = 4;
pub const HVM_PARAM_DM_DOMAIN: u32 = 13;
pub const HVM_PARAM_MEMORY_EVENT_CR0: u32 = 20;
pub const HVM_PARAM_MEMORY_EVENT_CR3: u32 = 21;
pub const HVM_PARAM_MEMORY_EVENT_CR4: u32 = 22;
pub const HVM_PARAM_MEMORY_EVENT_INT3: u32 = 23;
pub const HVM_PARAM_NESTEDHVM: u32 = 24;
pub const HVM_PARAM_MEMORY_EVENT_SINGLE_STEP: u32 = 25;
pub const HVM_PARAM_BUFIOREQ_EVTCHN: u32 = 26;
pub const HVM_PARAM_MEMORY_EVENT_MSR: u32 = 30;

/// `HVM_PARAM_TIMER_MODE` values.
pub const HVMPTM_DELAY_FOR_MISSED_TICKS: u64 = 0;
pub const HVMPTM_NO_DELAY_FOR_MISSED_TICKS: u64 = 1;
pub const HVMPTM_NO_MISSED_TICKS_PENDING: u64 = 2;
pub const HVMPTM_ONE_MISSED_TICK_PENDING: u64 = 3;

/// `HVM_PARAM_ALTP2M` values.
pub const XEN_ALTP2M_DISABLED: u64 = 0;
pub const XEN_ALTP2M_MIXED: u64 = 1;
pub const XEN_ALTP2M_EXTERNAL: u64 = 2;
pub const XEN_ALTP2M_LIMITED: u64 = 3;

/// `HVM_PARAM_MCA_CAP` bit: local machine-check exceptions.
pub const XEN_HVM_MCA_CAP_LMCE: u64 = 1 << 0;
pub const XEN_HVM_MCA_CAP_MASK: u64 = XEN_HVM_MCA_CAP_LMCE;

// The `HVM_PARAM_CALLBACK_IRQ` value: bits 63:56 hold the delivery type, the rest its
// argument.

/// Bits of the `HVM_PARAM_CALLBACK_IRQ` value holding the delivery type.
pub const HVM_PARAM_CALLBACK_IRQ_TYPE_MASK: u64 = 0xFF00_0000_0000_0000;
/// Shift of the delivery type within the `HVM_PARAM_CALLBACK_IRQ` value.
pub const HVM_PARAM_CALLBACK_TYPE_SHIFT: u32 = 56;
/// Deliver on a GSI given in bits 55:0 (GSI 0 is unusable: it would read as "off").
pub const HVM_PARAM_CALLBACK_TYPE_GSI: u64 = 0;
/// Deliver on a PCI INTx line: PCI segment in bits 47:32, bus 31:16, devfn 15:8, INTx 1:0.
pub const HVM_PARAM_CALLBACK_TYPE_PCI_INTX: u64 = 1;
/// x86: deliver on the IDT vector in bits 7:0 (needs `XENFEAT_hvm_callback_vector`).
pub const HVM_PARAM_CALLBACK_TYPE_VECTOR: u64 = 2;
/// ARM: deliver on the PPI in bits 7:0, with trigger flags in bits 15:8 and bits 55:16 zero.
/// Same number as the x86-only [`HVM_PARAM_CALLBACK_TYPE_VECTOR`].
pub const HVM_PARAM_CALLBACK_TYPE_PPI: u64 = 2;
/// ARM: where the PPI flags sit in the value.
pub const HVM_PARAM_CALLBACK_TYPE_PPI_FLAG_MASK: u64 = 0xFF00;
/// ARM: the PPI flag value for an active-low, level-triggered interrupt (bit 9 set: active
/// low; bit 8 clear: level).
pub const HVM_PARAM_CALLBACK_TYPE_PPI_FLAG_LOW_LEVEL: u64 = 2;

/// Builds an `HVM_PARAM_CALLBACK_IRQ` value from a delivery type and its argument (the
/// argument is truncated to bits 55:0).
pub const fn callback_via(ty: u64, arg: u64) -> u64 {
    (ty << HVM_PARAM_CALLBACK_TYPE_SHIFT) | (arg & !HVM_PARAM_CALLBACK_IRQ_TYPE_MASK)
}

/// The delivery type of an `HVM_PARAM_CALLBACK_IRQ` value.
pub const fn callback_via_type(value: u64) -> u64 {
    (value & HVM_PARAM_CALLBACK_IRQ_TYPE_MASK) >> HVM_PARAM_CALLBACK_TYPE_SHIFT
}

/// The type-specific argument (bits 55:0) of an `HVM_PARAM_CALLBACK_IRQ` value.
pub const fn callback_via_arg(value: u64) -> u64 {
    value & !HVM_PARAM_CALLBACK_IRQ_TYPE_MASK
}

/// `struct xen_hvm_param`: the argument of `HVMOP_set_param` / `HVMOP_get_param`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct XenHvmParam {
    /// The domain (usually `DOMID_SELF`).
    pub domid: u16,
    pub pad: u16,
    /// `HVM_PARAM_*`.
    pub index: u32,
    /// In for set, out for get.
    pub value: u64,
}

/// `struct xen_hvm_pagetable_dying`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct XenHvmPagetableDying {
    pub domid: u16,
    pub pad: [u16; 3],
    /// Guest-physical address of the top-level page table going away.
    pub gpa: u64,
}

/// `struct xen_hvm_get_time`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct XenHvmGetTime {
    /// Out: current system time (ns).
    pub now: u64,
}

/// `struct xen_hvm_get_mem_type`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct XenHvmGetMemType {
    pub domid: u16,
    /// Out: `HVMMEM_*`.
    pub mem_type: u16,
    pub pad: [u16; 2],
    /// In: the guest frame to query.
    pub pfn: u64,
}

/// `hvmmem_type_t` values ([`XenHvmGetMemType::mem_type`]).
pub const HVMMEM_RAM_RW: u16 = 0;
pub const HVMMEM_RAM_RO: u16 = 1;
pub const HVMMEM_MMIO_DM: u16 = 2;
pub const HVMMEM_UNUSED: u16 = 3;
pub const HVMMEM_IOREQ_SERVER: u16 = 4;

/// `struct xen_hvm_evtchn_upcall_vector` (x86).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct XenHvmEvtchnUpcallVector {
    pub vcpu: u32,
    pub vector: u8,
    /// Implicit C tail padding.
    pub _pad0: [u8; 3],
}

layout_checks! {
    test layouts;
    all, "struct xen_hvm_param", XenHvmParam, 16, {
        domid: 0,
        pad: 2,
        index: 4,
        value: 8,
    };
    all, "struct xen_hvm_pagetable_dying", XenHvmPagetableDying, 16, {
        domid: 0,
        pad: 2,
        gpa: 8,
    };
    all, "struct xen_hvm_get_time", XenHvmGetTime, 8, { now: 0 };
    all, "struct xen_hvm_get_mem_type", XenHvmGetMemType, 16, {
        domid: 0,
        mem_type: 2,
        pad: 4,
        pfn: 8,
    };
    x86, "struct xen_hvm_evtchn_upcall_vector", XenHvmEvtchnUpcallVector, 8, {
        vcpu: 0,
        vector: 4,
        _pad0: 5,
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callback_via_encoding() {
        let v = callback_via(HVM_PARAM_CALLBACK_TYPE_VECTOR, 0xf3);
        assert_eq!(v, 0x0200_0000_0000_00f3);
        assert_eq!(callback_via_type(v), HVM_PARAM_CALLBACK_TYPE_VECTOR);
        assert_eq!(callback_via_arg(v), 0xf3);
        let gsi = callback_via(HVM_PARAM_CALLBACK_TYPE_GSI, 28);
        assert_eq!(gsi, 28);
        assert_eq!(callback_via_type(gsi), HVM_PARAM_CALLBACK_TYPE_GSI);
        // ARM: PPI 31, active-low level flags in bits 15:8.
        let ppi = callback_via(HVM_PARAM_CALLBACK_TYPE_PPI, (HVM_PARAM_CALLBACK_TYPE_PPI_FLAG_LOW_LEVEL << 8) | 31);
        assert_eq!(ppi, 0x0200_0000_0000_021f);
    }
}
