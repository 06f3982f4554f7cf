//! Copying hypercall argument structures in and out of guest memory.
//!
//! Structures cross as typed values (`guest_abi`'s layout-tested `#[repr(C)]` types, read and
//! written as bytes through `zerocopy`): guest bytes are copied, never reinterpreted in
//! place. The byte helpers at the end are for tests that lay out guest memory by hand.

use arch::exit::VirtualCpu;
use core::mem::size_of;
use guest_abi::compat::Compat;
use guest_abi::errno;
use zerocopy::{FromBytes, Immutable, IntoBytes};

/// Copy `N` bytes in from guest virtual address `gva`; `-EFAULT` if unmapped.
pub fn read<const N: usize>(vcpu: &mut dyn VirtualCpu, gva: u64) -> Result<[u8; N], i64> {
    let mut buf = [0u8; N];
    vcpu.copy_from_guest(gva, &mut buf).map_err(|_| errno::EFAULT)?;
    Ok(buf)
}

/// Copy bytes out to guest virtual address `gva`; `-EFAULT` if unmapped.
pub fn write(vcpu: &mut dyn VirtualCpu, gva: u64, bytes: &[u8]) -> Result<(), i64> {
    vcpu.copy_to_guest(gva, bytes).map_err(|_| errno::EFAULT)
}

/// Copy a guest structure in from `gva` as a typed value; `-EFAULT` if unmapped.
pub fn read_struct<T: FromBytes + IntoBytes>(vcpu: &mut dyn VirtualCpu, gva: u64) -> Result<T, i64> {
    let mut value = T::new_zeroed();
    vcpu.copy_from_guest(gva, value.as_mut_bytes()).map_err(|_| errno::EFAULT)?;
    Ok(value)
}

/// Copy a typed structure out to guest virtual address `gva`; `-EFAULT` if unmapped.
pub fn write_struct<T: IntoBytes + Immutable>(vcpu: &mut dyn VirtualCpu, gva: u64, value: &T) -> Result<(), i64> {
    write(vcpu, gva, value.as_bytes())
}

// The one place where 32-bit x86 guests' argument layouts are translated: a structure whose
// compat layout differs (guest_abi::compat) is read in the caller's layout and handed to the
// handler as the native one, and written back the same way. Handlers never see the compat
// types; `compat` is the mode the calling vCPU was in when it made the call
// (`HypercallArgs::compat`, kept in `Domain::call_compat` for the call).

/// Copy in a structure in the caller's layout as its native form; `-EFAULT` if unmapped.
pub fn read_abi<T: Compat>(compat: bool, vcpu: &mut dyn VirtualCpu, gva: u64) -> Result<T, i64> {
    if compat { Ok(T::from_compat(&read_struct::<T::Compat>(vcpu, gva)?)) } else { read_struct(vcpu, gva) }
}

/// Copy a native structure out in the caller's layout; `-EFAULT` if unmapped.
pub fn write_abi<T: Compat>(compat: bool, vcpu: &mut dyn VirtualCpu, gva: u64, value: &T) -> Result<(), i64> {
    if compat { write_struct(vcpu, gva, &value.to_compat()) } else { write_struct(vcpu, gva, value) }
}

/// Bytes one `T` takes in the caller's layout (the stride of an array of them).
pub fn abi_size<T: Compat>(compat: bool) -> u64 {
    (if compat { size_of::<T::Compat>() } else { size_of::<T>() }) as u64
}

/// Bytes of a `xen_pfn_t` / `xen_ulong_t` in the caller's layout.
pub fn ulong_size(compat: bool) -> u64 {
    if compat { 4 } else { 8 }
}

#[cfg(test)]
pub fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_ne_bytes(b[off..off + 4].try_into().unwrap())
}
#[cfg(test)]
pub fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_ne_bytes(b[off..off + 8].try_into().unwrap())
}
#[cfg(test)]
pub fn put_u32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_ne_bytes());
}
#[cfg(test)]
pub fn put_u64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_ne_bytes());
}

/// `DOMID_SELF` or the caller's own id: the only domain a domU may name.
pub fn is_self(domain_id: u16, domid: u16) -> bool {
    domid == guest_abi::xen::DOMID_SELF || domid == domain_id
}

/// Accept `domid` if it names the caller; else Xen's answer: `-ESRCH` when no such domain
/// exists (reserved ids included), `-EPERM` when it is another domain.
pub fn own_domain(domain: &crate::domain::Domain, domid: u16) -> Result<(), i64> {
    if is_self(domain.id, domid) {
        Ok(())
    } else if domain.known_domains.contains(&domid) {
        Err(errno::EPERM)
    } else {
        Err(errno::ESRCH)
    }
}
