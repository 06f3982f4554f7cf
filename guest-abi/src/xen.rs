//! Domain identifiers and `vm_assist` numbers from `xen/include/public/xen.h`.
//!
//! The rest of `xen.h` lives in the modules named after what it describes: hypercall numbers
//! in [`crate::hypercall`], `shared_info`/`vcpu_info`/`vcpu_time_info` in
//! [`crate::shared_info`], `VIRQ_*` in [`crate::event_channel`], `CONSOLEIO_*` in
//! [`crate::console`] and the `SIF_*` flags in [`crate::start_info`].

/// `domid_t`.
pub type DomId = u16;

/// The first domain id that does not name an ordinary domain.
pub const DOMID_FIRST_RESERVED: DomId = 0x7FF0;
/// The calling domain.
pub const DOMID_SELF: DomId = 0x7FF0;
/// Pseudo-domain owning I/O memory.
pub const DOMID_IO: DomId = 0x7FF1;
/// The hypervisor itself, as owner of its pages.
pub const DOMID_XEN: DomId = 0x7FF2;
/// Pseudo-domain owning shared (copy-on-write) pages.
pub const DOMID_COW: DomId = 0x7FF3;
/// No domain.
pub const DOMID_INVALID: DomId = 0x7FF4;
/// Any domain (e.g. the remote end of an unbound event channel).
pub const DOMID_ANY: DomId = 0x7FF5;
/// The idle domain.
pub const DOMID_IDLE: DomId = 0x7FFF;
/// Mask of the bits a domain id may use.
pub const DOMID_MASK: DomId = 0x7FFF;

/// `vm_assist(cmd, type)`: turn an assist on.
pub const VMASST_CMD_ENABLE: u64 = 0;
/// `vm_assist(cmd, type)`: turn an assist off.
pub const VMASST_CMD_DISABLE: u64 = 1;

pub const VMASST_TYPE_4GB_SEGMENTS: u64 = 0;
pub const VMASST_TYPE_4GB_SEGMENTS_NOTIFY: u64 = 1;
pub const VMASST_TYPE_WRITABLE_PAGETABLES: u64 = 2;
pub const VMASST_TYPE_PAE_EXTENDED_CR3: u64 = 3;
pub const VMASST_TYPE_ARCHITECTURAL_IOPL: u64 = 4;
/// Xen sets `XEN_RUNSTATE_UPDATE` in `state_entry_time` while it rewrites a runstate area.
pub const VMASST_TYPE_RUNSTATE_UPDATE_FLAG: u64 = 5;
pub const VMASST_TYPE_M2P_STRICT: u64 = 32;
