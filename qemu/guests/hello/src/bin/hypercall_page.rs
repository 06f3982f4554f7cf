//! Hypercall page (x86 PVH): a guest that, like Linux, asks for the hypercall page through
//! Xen's CPUID leaves and MSR, then makes its hypercalls by calling into it. x86 only;
//! elsewhere it says so and powers off.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(not(target_os = "none"))]
fn main() {}

#[cfg(all(target_os = "none", not(target_arch = "x86_64")))]
#[unsafe(no_mangle)]
extern "C" fn guest_main() -> ! {
    hello_guest::println!("HYPERCALL-PAGE-SKIPPED (x86 only)");
    hello_guest::shutdown(guest_abi::sched::SHUTDOWN_POWEROFF)
}

#[cfg(all(target_arch = "x86_64", target_os = "none"))]
#[unsafe(no_mangle)]
extern "C" fn guest_main() -> ! {
    use guest_abi::{console, hypercall as nr, sched, version};
    use hello_guest::{check, hypercall, install_hypercall_page, page_hypercall, println};

    /// The page the hypervisor fills with stubs: in our image, so identity-mapped and executable.
    #[repr(C, align(4096))]
    struct Page([u8; 4096]);
    static mut HYPERCALL_PAGE: Page = Page([0; 4096]);

    let page = core::ptr::addr_of!(HYPERCALL_PAGE) as u64;
    let msr = install_hypercall_page(page);
    check("hypercall-page", msr.is_some(), format_args!("no Xen CPUID signature"));
    // SAFETY: reading our own static after the hypervisor wrote it (volatile: written by
    // someone the compiler cannot see).
    let first = unsafe { core::ptr::read_volatile(page as *const u8) };
    check("hypercall-page", first != 0, format_args!("the page is still empty after the MSR write"));

    let args = [version::XENVER_VERSION, 0, 0, 0, 0];
    let via_page = page_hypercall(page, nr::XEN_VERSION, args);
    let direct = hypercall(nr::XEN_VERSION, args);
    check(
        "hypercall-page",
        via_page == direct && via_page >> 16 == 4,
        format_args!("xen_version through the page {via_page:#x}, direct {direct:#x}"),
    );
    let text = b"(written through the hypercall page)\n";
    let r =
        page_hypercall(page, nr::CONSOLE_IO, [console::CONSOLEIO_WRITE, text.len() as u64, text.as_ptr() as u64, 0, 0]);
    check("hypercall-page", r == 0, format_args!("console_io through the page returned {r}"));
    println!("HYPERCALL-PAGE-DONE msr={:#x}", msr.unwrap_or(0));
    // The last call goes through the page too: the run must end in a clean power-off.
    let reason = sched::SchedShutdown { reason: sched::SHUTDOWN_POWEROFF };
    page_hypercall(page, nr::SCHED_OP, [sched::SCHEDOP_SHUTDOWN, &reason as *const _ as u64, 0, 0, 0]);
    println!("FAIL hypercall-page: shutdown through the page returned");
    loop {
        core::hint::spin_loop();
    }
}
