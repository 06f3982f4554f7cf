//! Feature bits reported by `xen_version(XENVER_get_features)`
//! (`xen/include/public/features.h`).
//!
//! Each `XENFEAT_*` value is a bit number: bit `n` lives in submap `n / 32`, at bit `n % 32`
//! of the `submap` word returned in [`XenFeatureInfo`].

pub use crate::version::XenFeatureInfo;

/// The guest may update its page tables by plain writes, without write-protecting them.
pub const XENFEAT_WRITABLE_PAGE_TABLES: u32 = 0;
/// The guest may update its segment descriptor tables by plain writes.
pub const XENFEAT_WRITABLE_DESCRIPTOR_TABLES: u32 = 1;
/// The hypervisor translates the guest's pseudo-physical addresses to machine addresses
/// (true for every HVM/PVH and ARM guest).
pub const XENFEAT_AUTO_TRANSLATED_PHYSMAP: u32 = 2;
/// The guest kernel runs in supervisor mode (ring 0 on x86).
pub const XENFEAT_SUPERVISOR_MODE_KERNEL: u32 = 3;
/// x86: PAE page directories need not be allocated below 4 GiB.
pub const XENFEAT_PAE_PGDIR_ABOVE_4GB: u32 = 4;
/// x86: `MMU_PT_UPDATE_PRESERVE_AD` is available.
pub const XENFEAT_MMU_PT_UPDATE_PRESERVE_AD: u32 = 5;
/// x86: `MMUEXT_CLEAR_PAGE` / `MMUEXT_COPY_PAGE` are available.
pub const XENFEAT_HIGHMEM_ASSIST: u32 = 6;
/// `GNTTABOP_map_grant_ref` honours flags for the PTE bits left to the guest kernel.
pub const XENFEAT_GNTTAB_MAP_AVAIL_BITS: u32 = 7;
/// x86 HVM: events may be delivered on an IDT vector (`HVM_PARAM_CALLBACK_TYPE_VECTOR`).
pub const XENFEAT_HVM_CALLBACK_VECTOR: u32 = 8;
/// x86: the pvclock algorithm (`vcpu_time_info`) is safe to use in HVM guests.
pub const XENFEAT_HVM_SAFE_PVCLOCK: u32 = 9;
/// x86: HVM guests may use PIRQs (physical interrupts as event channels).
pub const XENFEAT_HVM_PIRQS: u32 = 10;
/// The domain may operate as dom0.
pub const XENFEAT_DOM0: u32 = 11;
/// Deprecated, and only mentioned inside a comment in current headers: grant references
/// were also mapped at pfn == mfn.
pub const XENFEAT_GRANT_MAP_IDENTITY: u32 = 12;
/// Memory operations accept `XENMEMF_vnode` to name a virtual NUMA node.
pub const XENFEAT_MEMORY_OP_VNODE_SUPPORTED: u32 = 13;
/// ARM: the hypervisor supports the SMC Calling Convention.
pub const XENFEAT_ARM_SMCCC_SUPPORTED: u32 = 14;
/// x86 PVH: the ACPI RSDP may be anywhere, not only in the first MiB (only consulted for
/// guests whose `XEN_ELFNOTE_GUEST_OS` says "linux").
pub const XENFEAT_LINUX_RSDP_UNRESTRICTED: u32 = 15;
/// The domain's memory is not direct-mapped (its gfns are not its mfns).
pub const XENFEAT_NOT_DIRECT_MAPPED: u32 = 16;
/// The domain's memory is direct-mapped (gfn == mfn).
pub const XENFEAT_DIRECT_MAPPED: u32 = 17;
/// `VCPUOP_register_runstate_phys_area` is available.
pub const XENFEAT_RUNSTATE_PHYS_AREA: u32 = 18;
/// `VCPUOP_register_vcpu_time_phys_area` is available.
pub const XENFEAT_VCPU_TIME_PHYS_AREA: u32 = 19;
/// Device models see every MSI-X vector-control write, not only unmasking ones.
pub const XENFEAT_DM_MSIX_ALL_WRITES: u32 = 20;

/// How many 32-bit submaps `XENVER_get_features` answers for.
pub const XENFEAT_NR_SUBMAPS: u32 = 1;

/// The submap index ([`XenFeatureInfo::submap_idx`]) that holds feature bit `feature`.
pub const fn submap_index(feature: u32) -> u32 {
    feature / 32
}

/// The mask of feature bit `feature` within its submap.
pub const fn submap_bit(feature: u32) -> u32 {
    1 << (feature % 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(XENFEAT_DOM0, 11);
        assert_eq!(submap_index(XENFEAT_DM_MSIX_ALL_WRITES), 0);
        assert_eq!(submap_bit(XENFEAT_HVM_CALLBACK_VECTOR), 0x100);
        assert_eq!(submap_index(40), 1);
        assert_eq!(submap_bit(40), 0x100);
    }
}
