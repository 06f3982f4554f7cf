//! Pure x86 logic shared by the VT-x and AMD-V backends and tested on the host.
//!
//! Nothing here runs an instruction: table memory, guest memory and the CPU's answers are
//! reached through small traits/closures, so the same code builds EPT/NPT and decides on
//! exits on bare metal and in `cargo test`.

pub mod asid;
pub mod ept;
pub mod guest;
pub mod hidden;
pub mod mmio;
pub mod policy;
pub mod scale;
pub mod svm;
pub mod vlapic;
pub mod vmcb;
pub mod walk;
pub mod xstate;

/// Which hardware virtualization the hypervisor drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Intel VT-x with EPT.
    Vmx,
    /// AMD-V (SVM) with nested paging.
    Svm,
}

/// The backend for a CPU with this CPUID vendor string and these features: the vendor's own
/// extension first (an AMD CPU that somehow reports VMX still runs SVM), then whichever exists.
pub fn choose_backend(vendor: &[u8; 12], vmx: bool, svm: bool) -> Option<Backend> {
    let amd = vendor == b"AuthenticAMD" || vendor == b"HygonGenuine";
    match (amd, vmx, svm) {
        (true, _, true) => Some(Backend::Svm),
        (_, true, _) => Some(Backend::Vmx),
        (_, false, true) => Some(Backend::Svm),
        (_, false, false) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_follows_vendor_then_features() {
        assert_eq!(choose_backend(b"GenuineIntel", true, false), Some(Backend::Vmx));
        assert_eq!(choose_backend(b"AuthenticAMD", false, true), Some(Backend::Svm));
        assert_eq!(choose_backend(b"AuthenticAMD", true, true), Some(Backend::Svm));
        assert_eq!(choose_backend(b"HygonGenuine", false, true), Some(Backend::Svm));
        assert_eq!(choose_backend(b"GenuineIntel", true, true), Some(Backend::Vmx));
        assert_eq!(choose_backend(b"GenuineIntel", false, true), Some(Backend::Svm));
        assert_eq!(choose_backend(b"AuthenticAMD", true, false), Some(Backend::Vmx));
        assert_eq!(choose_backend(b"GenuineIntel", false, false), None);
    }
}
