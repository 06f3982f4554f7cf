//! Copying hypercall argument structures in and out of guest memory.
//!
//! Structures cross as typed values (`guest_abi`'s layout-tested `#[repr(C)]` types, read and
//! written as bytes through `zerocopy`): guest bytes are copied, never reinterpreted in
//! place. The byte helpers at the end are for tests that lay out guest memory by hand.

use arch::exit::VirtualCpu;
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
