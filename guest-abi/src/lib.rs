//! The Xen public guest ABI, stated in Rust.
//!
//! Everything here mirrors Xen's `xen/include/public/*.h`: hypercall numbers, error values,
//! sub-operation numbers and the `#[repr(C)]` structures guests share with the hypervisor.
//! It is used both by the hypervisor and by test guests, so it holds no policy and no unsafe
//! code.
//!
//! # Conventions
//!
//! * One module per public header, named after it (`hvm/params.h` and `hvm/hvm_op.h` share
//!   [`hvm`]). Constants keep Xen's names, upper-cased (`XENVER_get_features` becomes
//!   [`version::XENVER_GET_FEATURES`]); structures get Rust names (`struct xen_hvm_param`
//!   becomes [`hvm::XenHvmParam`]) and keep Xen's field names.
//! * Sub-operation numbers (the first hypercall argument) are `u64`, like the hypercall
//!   numbers; values stored in a structure field have that field's type.
//! * Every layout is spelled with fixed-width types, so it does not depend on the width of
//!   the target's `usize`. Where Xen's x86 and ARM layouts differ the module has `x86` and
//!   `arm` submodules; both are always compiled so host tests check both. The `x86` layouts
//!   are those of 64-bit x86 guests (`unsigned long` is 8 bytes). On ARM, `xen_ulong_t`,
//!   `xen_pfn_t` and guest handles are 8 bytes and 64-bit values are 8-byte aligned for
//!   32- and 64-bit guests alike.
//! * Guest handles (`XEN_GUEST_HANDLE(...)`) are `u64` guest addresses.
//! * Where C inserts implicit padding the Rust structure has an explicit field whose name
//!   starts with `_pad`; fields Xen itself names `pad` keep that name.
//!
//! Each module lists, in a `layout_checks!` table, the size and every field offset Xen's C
//! headers give its structures: host tests assert them, bare-metal builds check them at
//! compile time, and `tools/check-layout.py` re-checks the same numbers with a C compiler.
#![no_std]

/// Declares the expected size and field offsets of `#[repr(C)]` structures.
///
/// ```text
/// layout_checks! {
///     test NAME;
///     ARCH, "C type", RustType, SIZE, { field: OFFSET, ... };
///     ...
/// }
/// ```
///
/// Under `cfg(test)` this becomes the `#[test] fn NAME`, which asserts every number at run
/// time on the host. Builds for bare-metal targets (`target_os = "none"`: the hypervisor and
/// the test guests) check the same numbers at compile time, so a layout that came out
/// differently on, say, 32-bit ARM fails to build there. `ARCH` (`all`, `x86` or `arm`) and the C type name are not used by Rust:
/// `tools/check-layout.py` reads them to check the same numbers against Xen's headers with
/// a C compiler. The numbers are written out by hand from the headers, never computed from
/// the Rust types.
macro_rules! layout_checks {
    (
        test $test:ident;
        $(
            $arch:ident, $cty:literal, $ty:ty, $size:expr,
            { $($field:ident : $off:expr),* $(,)? }
        );* $(;)?
    ) => {
        #[cfg(all(not(test), target_os = "none"))]
        const _: () = {
            $(
                assert!(
                    core::mem::size_of::<$ty>() == $size,
                    concat!("size_of ", stringify!($ty), " != size of ", $cty)
                );
                $(
                    assert!(
                        core::mem::offset_of!($ty, $field) == $off,
                        concat!("offset of ", stringify!($ty), ".", stringify!($field))
                    );
                )*
            )*
        };

        #[cfg(test)]
        #[test]
        fn $test() {
            $(
                assert_eq!(
                    core::mem::size_of::<$ty>(),
                    $size,
                    concat!("size_of ", stringify!($ty), " (", $cty, ")")
                );
                $(
                    assert_eq!(
                        core::mem::offset_of!($ty, $field),
                        $off,
                        concat!("offset_of ", stringify!($ty), ".", stringify!($field))
                    );
                )*
            )*
        }
    };
}

pub mod compat;
pub mod console;
pub mod elfnote;
pub mod errno;
pub mod event_channel;
pub mod features;
pub mod grant_table;
pub mod hvm;
pub mod hypercall;
pub mod memory;
pub mod sched;
pub mod shared_info;
pub mod start_info;
pub mod sysctl;
pub mod vcpu;
pub mod version;
pub mod xen;
