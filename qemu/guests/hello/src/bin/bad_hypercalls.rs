//! A hostile guest: malformed hypercalls (bad pointers, out-of-range ports and indices, absurd
//! sizes, other domains' ids) must each get a Xen error code, and the hypervisor must still
//! answer a well-formed call afterwards. On x86 the same calls are made again as a 32-bit
//! guest makes them (from compatibility mode: Xen's 32-bit registers and layouts).
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(not(target_os = "none"))]
fn main() {}

#[cfg(target_os = "none")]
#[unsafe(no_mangle)]
extern "C" fn guest_main() -> ! {
    use guest_abi::sched;
    use hello_guest::{println, shutdown};
    let native = abuse("", &|nr, a| hello_guest::hypercall(nr, [a[0], a[1], a[2], 0, 0]));
    #[cfg(not(target_arch = "x86_64"))]
    let compat = 0;
    #[cfg(target_arch = "x86_64")]
    let compat = {
        // Arguments as a 32-bit guest passes them: the low halves.
        let low = |v: u64| v as u32;
        let call = |nr: u64, a: [u64; 3]| {
            i64::from(hello_guest::compat_hypercall(low(nr), [low(a[0]), low(a[1]), low(a[2]), 0, 0]))
        };
        println!("bad-hypercalls: the same calls as a 32-bit guest makes them (compatibility mode)");
        abuse(" (32-bit)", &call)
    };
    println!("BAD-HYPERCALLS-DONE failures={}", native + compat);
    shutdown(sched::SHUTDOWN_POWEROFF)
}

/// Every malformed call through `hc` (number, three arguments), each checked and reported
/// with `mode` in its name, then a well-formed one; the number of wrong answers.
#[cfg(target_os = "none")]
fn abuse(mode: &str, hc: &dyn Fn(u64, [u64; 3]) -> i64) -> u32 {
    use guest_abi::{console, errno, event_channel as ev, grant_table as gt, hvm, memory, sched, vcpu, version};
    use guest_abi::{hypercall as nr, xen::DOMID_SELF};
    use hello_guest::{UNMAPPED_ADDRESS, check};

    /// A pointer no page of ours backs, and one that wraps around the address space (for a
    /// 32-bit guest: its low half wraps around 4 GiB).
    const BAD: u64 = UNMAPPED_ADDRESS;
    const WRAP: u64 = u64::MAX - 3;

    let mut failures = 0u32;
    let mut expect = |what: &str, got: i64, want: i64| {
        check("bad-hypercalls", got == -want, format_args!("{what}{mode}: got {got}, want -{want}"));
        if got != -want {
            failures += 1;
        }
    };

    // Bad pointers.
    expect(
        "console_io write from an unmapped buffer",
        hc(nr::CONSOLE_IO, [console::CONSOLEIO_WRITE, 16, BAD]),
        errno::EFAULT,
    );
    expect(
        "console_io write wrapping the address space",
        hc(nr::CONSOLE_IO, [console::CONSOLEIO_WRITE, 16, WRAP]),
        errno::EFAULT,
    );
    expect(
        "xen_version extraversion to an unmapped buffer",
        hc(nr::XEN_VERSION, [version::XENVER_EXTRAVERSION, BAD, 0]),
        errno::EFAULT,
    );
    expect(
        "sched_op shutdown reading an unmapped reason",
        hc(nr::SCHED_OP, [sched::SCHEDOP_SHUTDOWN, BAD, 0]),
        errno::EFAULT,
    );
    expect("hvm_op get_param into an unmapped struct", hc(nr::HVM_OP, [hvm::HVMOP_GET_PARAM, BAD, 0]), errno::EFAULT);
    expect(
        "event_channel_op send with an unmapped port",
        hc(nr::EVENT_CHANNEL_OP, [ev::EVTCHNOP_SEND, BAD, 0]),
        errno::EFAULT,
    );
    expect(
        "memory_op add_to_physmap from an unmapped struct",
        hc(nr::MEMORY_OP, [memory::XENMEM_ADD_TO_PHYSMAP, WRAP, 0]),
        errno::EFAULT,
    );

    // Out-of-range ports, indices, vCPUs and sub-operations.
    for port in [0u32, 4095, 1 << 17, u32::MAX] {
        let p = port;
        expect(
            "event_channel_op send on an unbound port",
            hc(nr::EVENT_CHANNEL_OP, [ev::EVTCHNOP_SEND, &p as *const u32 as u64, 0]),
            errno::EINVAL,
        );
        expect(
            "event_channel_op close on an unbound port",
            hc(nr::EVENT_CHANNEL_OP, [ev::EVTCHNOP_CLOSE, &p as *const u32 as u64, 0]),
            errno::EINVAL,
        );
    }
    let virq = [9999u32, 0, 0];
    expect(
        "bind_virq of a nonexistent VIRQ",
        hc(nr::EVENT_CHANNEL_OP, [ev::EVTCHNOP_BIND_VIRQ, virq.as_ptr() as u64, 0]),
        errno::EINVAL,
    );
    let param = [DOMID_SELF as u64 | (u64::from(u32::MAX) << 32), 0u64];
    expect(
        "hvm_op get_param past the last index",
        hc(nr::HVM_OP, [hvm::HVMOP_GET_PARAM, param.as_ptr() as u64, 0]),
        errno::EINVAL,
    );
    let foreign = [7u64 | (u64::from(hvm::HVM_PARAM_CONSOLE_PFN) << 32), 0u64];
    expect(
        "hvm_op get_param of a domain that does not exist",
        hc(nr::HVM_OP, [hvm::HVMOP_GET_PARAM, foreign.as_ptr() as u64, 0]),
        errno::ESRCH,
    );
    let info = [0u64; 2];
    expect(
        "vcpu_op on a vCPU that does not exist",
        hc(nr::VCPU_OP, [vcpu::VCPUOP_REGISTER_VCPU_INFO, 4096, info.as_ptr() as u64]),
        errno::ENOENT,
    );
    expect("xen_version with an unknown command", hc(nr::XEN_VERSION, [0xdead, 0, 0]), errno::ENOSYS);
    expect("console_io with an unknown command", hc(nr::CONSOLE_IO, [77, 0, 0]), errno::ENOSYS);
    let remote = sched::SchedRemoteShutdown { domain_id: 7, reason: sched::SHUTDOWN_POWEROFF, ..Default::default() };
    expect(
        "sched_op remote_shutdown of a domain that does not exist",
        hc(nr::SCHED_OP, [sched::SCHEDOP_REMOTE_SHUTDOWN, &raw const remote as u64, 0]),
        errno::ESRCH,
    );

    // Absurd sizes.
    let query = [0u64; 2];
    // 2^40 + 2^32 - 1: absurd whether the count is read as 64 or 32 bits.
    expect(
        "grant_table_op query_size with an absurd count",
        hc(nr::GRANT_TABLE_OP, [gt::GNTTABOP_QUERY_SIZE, query.as_ptr() as u64, (1 << 40) | 0xffff_ffff]),
        errno::EINVAL,
    );
    expect(
        "console_io of 4 GiB from an unmapped buffer",
        hc(nr::CONSOLE_IO, [console::CONSOLEIO_WRITE, u64::MAX, BAD]),
        errno::EFAULT,
    );

    // Still alive and answering.
    let v = hc(nr::XEN_VERSION, [version::XENVER_VERSION, 0, 0]);
    check("bad-hypercalls", v >> 16 == 4, format_args!("xen_version{mode} after the abuse returned {v}"));
    failures + u32::from(v >> 16 != 4)
}
