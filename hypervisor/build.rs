//! Picks the linker script for bare-metal targets; host builds (tests) link normally.
fn main() {
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap();
    if os == "none" {
        let script = format!("{dir}/link/{arch}.ld");
        println!("cargo:rustc-link-arg-bins=-T{script}");
        println!("cargo:rerun-if-changed={script}");
        if arch == "aarch64" {
            // A position-independent image: boards load it wherever their RAM starts (QEMU
            // `virt` at 0x4008_0000, raspi4b and zcu102 at 0x80000); `_start` applies the
            // R_AARCH64_RELATIVE relocations this leaves before any Rust code runs.
            println!("cargo:rustc-link-arg-bins=-pie");
            println!("cargo:rustc-link-arg-bins=--no-dynamic-linker");
            // Precompiled core/alloc are not PIC: their absolute pointers in read-only data
            // become relocations there too (we write them before the MMU is on).
            println!("cargo:rustc-link-arg-bins=-znotext");
        }
        if arch == "arm" {
            // ARMv7 cannot be a PIE (the precompiled core uses MOVW/MOVT absolute addresses):
            // a board whose RAM is not at 0x4000_0000 gets an image linked for it (xtask sets
            // this to the board's RAM base + 0x10000, where QEMU loads a raw image).
            println!("cargo:rerun-if-env-changed=XHV_ARMV7_LINK_BASE");
            if let Ok(base) = std::env::var("XHV_ARMV7_LINK_BASE") {
                println!("cargo:rustc-link-arg-bins=--defsym=XHV_LINK_BASE={base}");
            }
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
}
