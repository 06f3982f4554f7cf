//! `cargo xtask test`: host tests, then end-to-end scenarios, one `PASS`/`FAIL` line each.
//!
//! A scenario passes on markers the guest (and the hypervisor) printed, in order, plus the
//! emulator's exit status; never on the emulator merely not crashing.

use crate::RunArgs;
use crate::arch::Arch;
use crate::build::{self, Built, target_dir, workspace_root};
use crate::emulator::{self, Boot, Echo, Guest, Outcome};
use crate::images::KernelSeries;
use crate::xen::Hypervisor;
use anyhow::Result;
use std::collections::BTreeMap;
use std::process::Command;

/// What a scenario's console and exit must show.
struct Expect {
    /// Substrings that must appear, in this order.
    in_order: Vec<String>,
    /// A substring that must appear exactly this many times.
    count: Option<(String, usize)>,
    /// Substrings that must not appear anywhere.
    forbidden: Vec<&'static str>,
    /// Whether the emulator must exit 0 (all domains powered off) or non-zero (a crash).
    exit_zero: bool,
}

struct Scenario {
    name: String,
    arch: Arch,
    guest: TestGuest,
    expect: Expect,
}

#[derive(Clone, Copy)]
enum TestGuest {
    /// A built-in test guest, placed by QEMU's guest-loader (or GRUB).
    BuiltIn(&'static str),
    /// Debian's kernel of this series and the busybox initramfs as a dom0less domU (x86_64: a
    /// PVH guest) with this command line and this many vCPUs.
    Linux { append: &'static str, smp: u32, kernel: KernelSeries },
    /// Debian's i386 kernel as a 32-bit PVH guest of the x86_64 hypervisor.
    LinuxI386 { append: &'static str, smp: u32 },
    /// A hand-written dom0less configuration from qemu/configs/, with Debian's kernel and the
    /// busybox initramfs standing in for the images it names.
    Config(&'static str),
    /// A configuration from qemu/configs/ whose modules name a built-in test guest (by its
    /// name, e.g. `simd-isolation`): one or more domains, each with its own vCPU count.
    GuestConfig { file: &'static str, guest: &'static str },
    /// A built-in test guest on a machine with this many CPUs (x86: one vCPU per CPU).
    BuiltInSmp(&'static str, u32),
    /// The `fuzz` guest's campaign of this many calls (seed [`FUZZ_SEED`]), alone or beside
    /// a canary holder (crate::fuzz::TWO_DOMAIN_CONFIG).
    Fuzz { calls: u64, two_domains: bool },
}

/// Hypercalls per fuzz scenario, and the seed: sized to a minute or two on each emulator.
const FUZZ_CALLS: u64 = 100_000;
const FUZZ_SEED: u64 = 1;

/// Lines every boot prints before the guest runs: the banner.
fn banner(arch: Arch) -> Vec<String> {
    vec!["(XEN) xhv ".into(), format!("(XEN) arch {}, running at ", arch.name()), "(XEN) RAM ".into()]
}

/// Linux as a Xen domU on aarch64 and ARMv7: passes once the kernel has found Xen, its grant
/// table and its event channels, and init saw `/sys/hypervisor/type` = xen with every vCPU
/// online, then powered off cleanly.
fn linux_scenarios() -> Vec<Scenario> {
    let arch = Arch::Aarch64;
    let linux_on = |arch: Arch, name: &str, append: &'static str, smp: u32| {
        let mut in_order = banner(arch);
        in_order.extend([
            "Xen 4.17 support found".to_string(),
            "xen:grant_table: Grant tables using version 1 layout".into(),
            "xen:events: Using FIFO-based ABI".into(),
            format!("XHV-INIT-MARKER hypervisor=xen cpus={smp} "),
            "(XEN) stopping: all domains powered off".into(),
        ]);
        Scenario {
            name: name.into(),
            arch,
            guest: TestGuest::Linux { append, smp, kernel: KernelSeries::V6_1 },
            expect: Expect { in_order, count: None, forbidden: vec!["PANIC", "Kernel panic", "BUG:"], exit_zero: true },
        }
    };
    let linux = |name: &str, append: &'static str, smp: u32| linux_on(arch, name, append, smp);
    let mut all = vec![
        linux("linux-arm64-domu", "console=hvc0", 1),
        // The same with bookworm-backports' 6.12 kernel (Debian 13's series).
        with_kernel(linux("linux-arm64-domu", "console=hvc0", 1), KernelSeries::V6_12),
        // The same on QEMU `virt` with a GICv2 (GIC-400): the guest gets the virtual GICv2.
        linux("linux-arm64-domu-gicv2", "console=hvc0", 1),
        linux("linux-arm64-domu-smp2-gicv2", "console=hvc0", 2),
        with_stress(linux("linux-arm64-domu-smp2", "console=hvc0 xhv.stress=8", 2)),
        linux("linux-arm64-domu-ttyAMA0", "console=ttyAMA0", 1),
        // Debian's armhf (armmp-lpae) zImage in HYP mode on the shared vGICv2; the second
        // vCPU comes up through PSCI CPU_ON and runs /init's concurrent workload beside the first.
        linux_on(Arch::Armv7, "linux-armv7-domu", "console=hvc0", 1),
        with_kernel(linux_on(Arch::Armv7, "linux-armv7-domu", "console=hvc0", 1), KernelSeries::V6_12),
        on_two_pcpus(with_stress(linux_on(Arch::Armv7, "linux-armv7-domu-smp2", "console=hvc0 xhv.stress=4", 2))),
        linux_on(Arch::Armv7, "linux-armv7-domu-ttyAMA0", "console=ttyAMA0", 1),
    ];
    // The same domU on QEMU's models of real boards, booted from each board's own Debian DTB
    // (issue 18): the hypervisor finds its UART, GIC, timer, CPUs and memory there.
    for board in BOARDS {
        let arch = board.profile().arch;
        let mut s = linux_on(arch, &format!("board-{}", board.name()), "console=hvc0", 1);
        // Arch's report of what it found comes before the core's banner. On aarch64 the
        // secondaries start by spin-table (raspi4b) or PSCI (zcu102) and park; on ARMv7 the
        // vexpress-a15 has one CPU and the i.MX7's second one has no enable method the
        // hypervisor knows (its DT names none), so it stays off.
        let found: &[&str] = match arch {
            Arch::Aarch64 => &[
                "(XEN) console: ",
                "(XEN) GICv2: distributor ",
                "(XEN) timer: ",
                "(XEN) CPUs: 4 in the device tree",
                "(XEN) memory: ",
                "(XEN) CPU3 online at EL2",
            ],
            _ => &["(XEN) console: ", "(XEN) timer: ", "(XEN) CPUs: ", "(XEN) memory: ", "(XEN) GICv2: GICD "],
        };
        s.expect.in_order.splice(0..0, found.iter().map(|l| l.to_string()));
        all.push(s);
    }
    // The same domU through Debian's U-Boot for QEMU `virt` (issue 18): U-Boot finds the
    // script `cargo xtask uboot` writes on a FAT partition of a virtio disk, loads the
    // hypervisor, QEMU's DTB and the domU's images, fills /chosen with `fdt` commands and
    // starts the hypervisor with booti (arm64 Image) or bootz (zImage header) at EL2 / in HYP.
    for (arch, boot) in [(arch, "booti"), (Arch::Armv7, "bootz")] {
        let mut s = linux_on(arch, &format!("uboot-{}", arch.name()), "console=hvc0", 1);
        let through = [
            "U-Boot 20".to_string(),
            "Found U-Boot script /boot.scr".into(),
            format!("xhv: U-Boot script for virt-{}", arch.name()),
            // booti's or bootz's own report of the image before it jumps.
            if boot == "booti" { "## Flattened Device Tree blob at".into() } else { "Kernel image @ ".into() },
        ];
        s.expect.in_order.splice(0..0, through);
        all.push(s);
    }
    // The same on QEMU's Raspberry Pi 4 B with Debian's U-Boot for it, started where the
    // Pi's firmware starts it, reading the SD card; the hypervisor finds the board in its
    // unedited DT (whose /memory U-Boot fills in), the secondaries by spin-table.
    let mut s = linux_on(arch, "uboot-raspi4b", "console=hvc0", 1);
    // (U-Boot's banner goes to the HDMI console only, until the mini UART is its console.)
    let through = [
        "Scanning mmc 0:1",
        "Found U-Boot script /boot.scr",
        "xhv: U-Boot script for raspi4b",
        "## Flattened Device Tree blob at",
        "(XEN) console: 16550 UART",
        "(XEN) CPUs: 4 in the device tree",
        "(XEN) CPU3 online at EL2",
    ];
    s.expect.in_order.splice(0..0, through.map(String::from));
    all.push(s);
    // Two domUs from a configuration written as Xen users write them, sharing one CPU: both
    // reach init and power off (arm64 Images, and armhf zImages from the same file).
    for (arch, name) in [(arch, "linux-arm64-two-domus"), (Arch::Armv7, "linux-armv7-two-domus")] {
        let mut in_order = banner(arch);
        in_order.extend(
            ["(XEN) d1: domU1: ", "(XEN) d2: domU2: ", "(XEN) stopping: all domains powered off"].map(String::from),
        );
        all.push(Scenario {
            name: name.into(),
            arch,
            guest: TestGuest::Config("two-domus.dts"),
            expect: Expect {
                in_order,
                count: Some(("XHV-INIT-MARKER hypervisor=xen cpus=1 ".into(), 2)),
                forbidden: vec!["PANIC", "Kernel panic", "BUG:"],
                exit_zero: true,
            },
        });
    }
    // Two Linux domUs sharing the boot CPU under credit, weights 256:512 (issue 15).
    let mut in_order = banner(arch);
    in_order.extend(
        ["(XEN) cpupool cpupool-credit: scheduler credit, 1 CPU(s)", "(XEN) stopping: all domains powered off"]
            .map(String::from),
    );
    all.push(Scenario {
        name: "two-linux-one-cpu-aarch64".into(),
        arch,
        guest: TestGuest::Config("two-linux-one-cpu.dts"),
        expect: Expect {
            in_order,
            count: Some(("XHV-INIT-MARKER hypervisor=xen cpus=1 ".into(), 2)),
            forbidden: vec!["PANIC", "Kernel panic", "BUG:", "rejected"],
            exit_zero: true,
        },
    });
    // The same two-Linux configuration on x86_64 (Bochs' VT-x, QEMU's SVM), as multiboot2
    // modules: Debian's amd64 kernel and initramfs stand in for its images; its `vpl011` is
    // ARM's only. (About 2 minutes on Bochs.)
    for suffix in ["", crate::qemu_x86::SVM_SUFFIX] {
        let mut in_order = banner(Arch::X86_64);
        in_order.extend(
            ["(XEN) d1: domU1: 256 MiB RAM", "(XEN) d2: domU2: 256 MiB RAM", "(XEN) stopping: all domains powered off"]
                .map(String::from),
        );
        all.push(Scenario {
            name: format!("linux-x86_64-two-domus{suffix}"),
            arch: Arch::X86_64,
            guest: TestGuest::Config("two-domus.dts"),
            expect: Expect {
                in_order,
                count: Some(("XHV-INIT-MARKER hypervisor=xen cpus=1 ".into(), 2)),
                forbidden: vec!["PANIC", "Kernel panic", "BUG:"],
                exit_zero: true,
            },
        });
    }
    // x86_64 PVH on QEMU's SVM: found Xen, took the PVH entry, event channels and grant
    // tables up, init saw Xen, then ACPI S5 (the FADT's sleep control register) powered off.
    // With Debian 12's 6.1 kernel, and with bookworm-backports' 6.12 (a zstd bzImage).
    for series in KernelSeries::ALL {
        let mut in_order = banner(Arch::X86_64);
        in_order.extend(
            [
                "Hypervisor detected: Xen HVM",
                "Booting kernel on Xen PVH",
                "xen:events: Using FIFO-based ABI",
                "xen:grant_table: Grant tables using version 1 layout",
                "XHV-INIT-MARKER hypervisor=xen cpus=1 ",
                "(XEN) d1: powered off",
                "(XEN) stopping: all domains powered off",
            ]
            .map(String::from),
        );
        let s = Scenario {
            name: format!("linux-x86_64-pvh{}", crate::qemu_x86::SVM_SUFFIX),
            arch: Arch::X86_64,
            guest: TestGuest::Linux { append: "console=hvc0 cryptomgr.notests", smp: 1, kernel: KernelSeries::V6_1 },
            expect: Expect { in_order, count: None, forbidden: vec!["PANIC", "Kernel panic", "BUG:"], exit_zero: true },
        };
        all.push(with_kernel(s, series));
    }
    // Two vCPUs: vCPU 0 starts vCPU 1 with INIT/STARTUP through its x2APIC (real-mode
    // trampoline), both come online, init counts them. The machine has two CPUs, and both
    // run guests (the SMP host, issue 15): the vCPUs run on two pCPUs at once and move
    // between them.
    let mut in_order = banner(Arch::X86_64);
    in_order.extend(
        [
            "(XEN) SMP host: 2 pCPU(s) run guests (CPU0, CPU1)",
            "Booting kernel on Xen PVH",
            "(XEN) d1v1: powered on by v0 at ",
            "smp: Brought up 1 node, 2 CPUs",
            "XHV-INIT-MARKER hypervisor=xen cpus=2 ",
            "(XEN) d1: powered off",
            "(XEN) stopping: all domains powered off",
        ]
        .map(String::from),
    );
    all.push(with_stress(Scenario {
        name: format!("linux-x86_64-pvh{}-smp2", crate::qemu_x86::SVM_SUFFIX),
        arch: Arch::X86_64,
        guest: TestGuest::Linux {
            append: "console=hvc0 cryptomgr.notests xhv.stress=8",
            smp: 2,
            kernel: KernelSeries::V6_1,
        },
        expect: Expect {
            in_order,
            count: None,
            forbidden: vec!["PANIC", "Kernel panic", "BUG:", "failed to wakeup"],
            exit_zero: true,
        },
    }));
    // The same kernel on Bochs' VT-x, quiet (each console character costs Bochs ~87 µs of
    // emulated time): init saw Xen, then ACPI S5 powered the domain off.
    let mut in_order = banner(Arch::X86_64);
    in_order.extend(
        ["XHV-INIT-MARKER hypervisor=xen cpus=1 ", "(XEN) d1: powered off", "(XEN) stopping: all domains powered off"]
            .map(String::from),
    );
    all.push(Scenario {
        name: "linux-x86_64-pvh".into(),
        arch: Arch::X86_64,
        guest: TestGuest::Linux { append: crate::qemu_x86::DEFAULT_LINUX_APPEND, smp: 1, kernel: KernelSeries::V6_1 },
        expect: Expect { in_order, count: None, forbidden: vec!["PANIC", "Kernel panic", "BUG:"], exit_zero: true },
    });
    // Two vCPUs on VT-x: vCPU 0 starts vCPU 1 with INIT/STARTUP (unrestricted guest runs the
    // real-mode trampoline), init counts both. Bochs has two CPUs, and both run guests.
    let mut in_order = banner(Arch::X86_64);
    in_order.extend(
        [
            "(XEN) SMP host: 2 pCPU(s) run guests (CPU0, CPU1)",
            "(XEN) d1v1: powered on by v0 at ",
            "XHV-INIT-MARKER hypervisor=xen cpus=2 ",
            "(XEN) d1: powered off",
            "(XEN) stopping: all domains powered off",
        ]
        .map(String::from),
    );
    all.push(with_stress(Scenario {
        name: "linux-x86_64-pvh-smp2".into(),
        arch: Arch::X86_64,
        guest: TestGuest::Linux {
            append: "console=hvc0 quiet cryptomgr.notests xhv.stress=4",
            smp: 2,
            kernel: KernelSeries::V6_1,
        },
        expect: Expect {
            in_order,
            count: None,
            forbidden: vec!["PANIC", "Kernel panic", "BUG:", "failed to wakeup"],
            exit_zero: true,
        },
    }));
    // `nox2apic`: Linux takes the APIC out of x2APIC mode (disabled, then xAPIC, as the SDM
    // requires) and drives it through the xAPIC page, which the hypervisor decodes and
    // emulates. Verbose on QEMU (Linux's own words), quiet on Bochs; on both the hypervisor
    // reports the mode changes.
    for (suffix, append, linux_says) in [
        (crate::qemu_x86::SVM_SUFFIX, "console=hvc0 cryptomgr.notests nox2apic", true),
        ("", "console=hvc0 quiet cryptomgr.notests nox2apic", false),
    ] {
        let mut in_order = banner(Arch::X86_64);
        in_order.extend(
            [
                "(XEN) d1v0: local APIC disabled",
                "(XEN) d1v0: local APIC in xAPIC mode",
                "(XEN) d1v0: local APIC used through its xAPIC page",
            ]
            .map(String::from),
        );
        if linux_says {
            in_order.push("x2apic disabled".into());
        }
        in_order.extend(
            [
                "XHV-INIT-MARKER hypervisor=xen cpus=1 ",
                "(XEN) d1: powered off",
                "(XEN) stopping: all domains powered off",
            ]
            .map(String::from),
        );
        all.push(Scenario {
            name: format!("linux-x86_64-pvh-nox2apic{suffix}"),
            arch: Arch::X86_64,
            guest: TestGuest::Linux { append, smp: 1, kernel: KernelSeries::V6_1 },
            expect: Expect {
                in_order,
                count: None,
                forbidden: vec!["PANIC", "Kernel panic", "BUG:", "local APIC in x2APIC mode", "not decoded"],
                exit_zero: true,
            },
        });
        // Two vCPUs: vCPU 1 starts (INIT/STARTUP through the ICR's two halves) in x2APIC
        // mode like every vCPU, leaves it as vCPU 0 did, and IPIs go by xAPIC logical
        // destination (Linux's flat model matches each LDR).
        let mut in_order = banner(Arch::X86_64);
        in_order.extend(
            [
                "(XEN) d1v0: local APIC used through its xAPIC page",
                "(XEN) d1v1: powered on by v0 at ",
                "(XEN) d1v1: local APIC in xAPIC mode",
                "XHV-INIT-MARKER hypervisor=xen cpus=2 ",
                "(XEN) d1: powered off",
                "(XEN) stopping: all domains powered off",
            ]
            .map(String::from),
        );
        let append = if linux_says {
            "console=hvc0 cryptomgr.notests nox2apic xhv.stress=8"
        } else {
            "console=hvc0 quiet cryptomgr.notests nox2apic xhv.stress=4"
        };
        all.push(with_stress(Scenario {
            name: format!("linux-x86_64-pvh-nox2apic{suffix}-smp2"),
            arch: Arch::X86_64,
            guest: TestGuest::Linux { append, smp: 2, kernel: KernelSeries::V6_1 },
            expect: Expect {
                in_order,
                count: None,
                forbidden: vec![
                    "PANIC",
                    "Kernel panic",
                    "BUG:",
                    "failed to wakeup",
                    "local APIC in x2APIC mode",
                    "not decoded",
                ],
                exit_zero: true,
            },
        }));
    }
    // Debian's i386 kernel (686-pae: an XZ bzImage the loader decompresses, an ELF32 with the
    // PHYS32 entry) as a 32-bit PVH guest: its hypercalls come from 32-bit protected mode
    // with PAE paging and use the compat layouts. One and two vCPUs, both backends.
    const DEFAULT_QUIET: &str = crate::qemu_x86::DEFAULT_LINUX_APPEND;
    for (suffix, quiet) in [(crate::qemu_x86::SVM_SUFFIX, ""), ("", " quiet")] {
        for smp in [1u32, 2] {
            let mut in_order = banner(Arch::X86_64);
            if smp == 2 {
                in_order.push("(XEN) d1v1: powered on by v0 at ".into());
            }
            in_order.extend([
                format!("XHV-INIT-MARKER hypervisor=xen cpus={smp} "),
                "(XEN) d1: powered off".into(),
                "(XEN) stopping: all domains powered off".into(),
            ]);
            let append = if quiet.is_empty() { "console=hvc0 cryptomgr.notests" } else { DEFAULT_QUIET };
            let smp_suffix = if smp == 2 { "-smp2" } else { "" };
            all.push(Scenario {
                name: format!("linux-i386-pvh{suffix}{smp_suffix}"),
                arch: Arch::X86_64,
                guest: TestGuest::LinuxI386 { append, smp },
                expect: Expect {
                    in_order,
                    count: None,
                    forbidden: vec!["PANIC", "Kernel panic", "BUG:", "failed to wakeup"],
                    exit_zero: true,
                },
            });
        }
    }
    // The same kernel on the 2-level event ABI: its shared info page has the 32-bit layout
    // (selector at offset 4, 32-bit words), which two vCPUs' IPIs depend on.
    let mut in_order = banner(Arch::X86_64);
    in_order.extend(
        [
            "(d1) [",
            "xen:events: Using 2-level ABI",
            "(XEN) d1v1: powered on by v0 at ",
            "XHV-INIT-MARKER hypervisor=xen cpus=2 ",
            "(XEN) stopping: all domains powered off",
        ]
        .map(String::from),
    );
    all.push(Scenario {
        name: format!("linux-i386-pvh-2level{}-smp2", crate::qemu_x86::SVM_SUFFIX),
        arch: Arch::X86_64,
        guest: TestGuest::LinuxI386 { append: "console=hvc0 cryptomgr.notests xen.fifo_events=0", smp: 2 },
        expect: Expect {
            in_order,
            count: None,
            forbidden: vec!["PANIC", "Kernel panic", "BUG:", "failed to wakeup"],
            exit_zero: true,
        },
    });
    all
}

/// The scenario's machine has two CPUs and the hypervisor must run guests on both (on one
/// pCPU the SMP host line names one CPU and CPU1 never enters the loop: the scenario fails).
fn on_two_pcpus(mut s: Scenario) -> Scenario {
    let at = s.expect.in_order.len().min(banner(s.arch).len());
    s.expect.in_order.insert(at, "(XEN) SMP host: 2 pCPU(s) run guests (CPU0, CPU1)".into());
    s.expect.count = Some(("(XEN) CPU1: running guests as pCPU 1".into(), 1));
    s
}

/// The same Linux scenario with the kernel of `series`, named with the series' suffix
/// (`linux-arm64-domu-6.12`). Nothing else changes: the same markers must appear.
fn with_kernel(mut s: Scenario, series: KernelSeries) -> Scenario {
    if let TestGuest::Linux { kernel, .. } = &mut s.guest {
        *kernel = series;
    }
    s.name.push_str(series.suffix());
    s
}

/// A 2-vCPU Linux scenario whose append carries `xhv.stress=N`: /init's concurrent
/// hashing/regex/memcpy workload (qemu/initramfs/init) must report every answer right and
/// nothing killed before its marker. Vector state leaking between vCPUs shows up there.
fn with_stress(mut s: Scenario) -> Scenario {
    let marker = s.expect.in_order.iter().position(|m| m.starts_with("XHV-INIT-MARKER"));
    let at = marker.unwrap_or(s.expect.in_order.len());
    s.expect.in_order.splice(at..at, ["XHV-STRESS ok=".to_string(), " bad=0 killed=0".to_string()]);
    s.expect.forbidden.push("Segmentation fault");
    s
}

fn scenarios() -> Vec<Scenario> {
    let mut all = Vec::new();
    // x86_64 twice: on Bochs (VT-x), and with the `-svm` suffix on QEMU (AMD-V).
    let targets = Arch::ALL.map(|a| (a, "")).into_iter().chain([(Arch::X86_64, crate::qemu_x86::SVM_SUFFIX)]);
    for (arch, suffix) in targets {
        let with_banner = |rest: &[&str]| {
            let mut v = banner(arch);
            v.extend(rest.iter().map(|s| s.to_string()));
            v
        };
        all.push(Scenario {
            name: format!("hello-{}{suffix}", arch.name()),
            arch,
            guest: TestGuest::BuiltIn("hello"),
            expect: Expect {
                in_order: with_banner(&[
                    "(d1) Hello from a Xen guest: the hypervisor says Xen 4.17",
                    "(d1) HELLO-GUEST-OK",
                    "(XEN) d1: shutdown requested, reason 0 (poweroff)",
                ]),
                count: None,
                forbidden: vec!["PANIC", "FAIL"],
                exit_zero: true,
            },
        });
        all.push(Scenario {
            name: format!("bad-hypercalls-{}{suffix}", arch.name()),
            arch,
            guest: TestGuest::BuiltIn("bad-hypercalls"),
            expect: Expect {
                in_order: with_banner(&["(d1) PASS bad-hypercalls", "(d1) BAD-HYPERCALLS-DONE failures=0"]),
                // One line per malformed call, plus the well-formed call at the end; on x86
                // all of them again as a 32-bit guest makes them.
                count: Some(("(d1) PASS bad-hypercalls".into(), if arch == Arch::X86_64 { 50 } else { 25 })),
                forbidden: vec!["PANIC", "FAIL"],
                exit_zero: true,
            },
        });
        // Random hypercalls with hostile arguments: each answered, none fatal, canaries intact.
        all.push(Scenario {
            name: format!("fuzz-{}{suffix}", arch.name()),
            arch,
            guest: TestGuest::Fuzz { calls: FUZZ_CALLS, two_domains: false },
            expect: Expect {
                in_order: with_banner(&[
                    &format!("(d1) FUZZ seed={FUZZ_SEED} calls={FUZZ_CALLS}"),
                    &format!("(d1) FUZZ-DONE calls={FUZZ_CALLS} canary=intact"),
                    "(XEN) d1: shutdown requested, reason 0 (poweroff)",
                ]),
                count: None,
                forbidden: vec!["PANIC", "FUZZ-FAIL", "guest fault"],
                exit_zero: true,
            },
        });
        all.push(Scenario {
            name: format!("enosys-{}{suffix}", arch.name()),
            arch,
            guest: TestGuest::BuiltIn("enosys"),
            expect: Expect {
                in_order: with_banner(&["(d1) PASS enosys", "(d1) ENOSYS-GUEST-DONE"]),
                count: Some(("(d1) PASS enosys".into(), 3)),
                forbidden: vec!["PANIC", "FAIL"],
                exit_zero: true,
            },
        });
        // ARM: the domain is crashed. x86: nothing is there (Xen's answer to an HVM/PVH
        // domain without a device model), which the guest checks.
        let (fault_order, fault_exits_zero): (&[&str], bool) = if arch == Arch::X86_64 {
            (
                &[
                    "(d1) GUEST-FAULT-TOUCHING 0x80000000",
                    "(XEN) d1v0: access at gpa 0x80000000, outside its memory and devices: reads all ones, writes are dropped (as Xen)",
                    "(d1) PASS guest-fault: nothing at 0x80000000: reads all ones, a write is dropped",
                    "(XEN) d1: shutdown requested, reason 0 (poweroff)",
                ],
                true,
            )
        } else {
            (
                &[
                    "(d1) GUEST-FAULT-TOUCHING 0x80000000",
                    "(XEN) d1v0: guest fault: access outside its memory at gpa 0x80000000",
                    "(XEN) d1: domain crashed",
                    "(XEN) stopping: ",
                ],
                false,
            )
        };
        all.push(Scenario {
            name: format!("guest-fault-{}{suffix}", arch.name()),
            arch,
            guest: TestGuest::BuiltIn("guest-fault"),
            expect: Expect {
                in_order: with_banner(fault_order),
                count: None,
                forbidden: vec!["PANIC", "FAIL"],
                exit_zero: fault_exits_zero,
            },
        });
    }
    // The virtual GICv3: registers, the virtual timer's PPI, SGIs (one, then more than the
    // list registers hold). AArch64 only.
    let mut vgic_order = banner(Arch::Aarch64);
    vgic_order.extend(
        [
            "(d1) PASS vgic-regs",
            "(d1) PASS vgic-timer",
            "(d1) PASS vgic-sgi",
            "(d1) PASS vgic-sgi-burst",
            "(d1) PASS vgic-block-unmasks",
        ]
        .map(String::from),
    );
    vgic_order.push("(d1) VGIC-GUEST-DONE".into());
    all.push(Scenario {
        name: "vgic-aarch64".into(),
        arch: Arch::Aarch64,
        guest: TestGuest::BuiltIn("vgic"),
        expect: Expect { in_order: vgic_order, count: None, forbidden: vec!["PANIC", "FAIL"], exit_zero: true },
    });
    // The fuzzer beside a second domain whose canary page must survive the campaign.
    let mut fuzz_order = banner(Arch::Aarch64);
    fuzz_order.extend([
        format!("(d1) FUZZ-DONE calls={FUZZ_CALLS} canary=intact"),
        "(d2) FUZZ-HOLD-DONE yields=".into(),
        "(XEN) stopping: all domains powered off".into(),
    ]);
    all.push(Scenario {
        name: "fuzz-aarch64-two-domains".into(),
        arch: Arch::Aarch64,
        guest: TestGuest::Fuzz { calls: FUZZ_CALLS, two_domains: true },
        expect: Expect {
            in_order: fuzz_order,
            count: Some(("canary=intact".into(), 2)),
            forbidden: vec!["PANIC", "FUZZ-FAIL", "guest fault"],
            exit_zero: true,
        },
    });
    // The other x86 vendor's hypercall instruction: #UD or a hypercall, never a hypervisor fault.
    for suffix in ["", crate::qemu_x86::SVM_SUFFIX] {
        let mut in_order = banner(Arch::X86_64);
        in_order.extend(["(d1) PASS vendor-probe", "(d1) VENDOR-PROBE-DONE"].map(String::from));
        all.push(Scenario {
            name: format!("vendor-probe-x86_64{suffix}"),
            arch: Arch::X86_64,
            guest: TestGuest::BuiltIn("vendor-probe"),
            expect: Expect { in_order, count: None, forbidden: vec!["PANIC", "FAIL"], exit_zero: true },
        });
        // A PVH ELF kernel that makes its hypercalls through the hypercall page, as Linux does,
        // down to its shutdown.
        let mut in_order = banner(Arch::X86_64);
        in_order.extend(
            [
                "(d1) (written through the hypercall page)",
                "(d1) HYPERCALL-PAGE-DONE",
                "(XEN) d1: shutdown requested, reason 0 (poweroff)",
            ]
            .map(String::from),
        );
        all.push(Scenario {
            name: format!("pvh-elf-hypercall-page{suffix}"),
            arch: Arch::X86_64,
            guest: TestGuest::BuiltIn("hypercall-page"),
            expect: Expect {
                in_order,
                count: Some(("(d1) PASS hypercall-page".into(), 4)),
                forbidden: vec!["PANIC", "FAIL"],
                exit_zero: true,
            },
        });
    }
    all.extend(sched_scenarios());
    all.extend(simd_isolation_scenarios());
    all.extend(smp_host_scenarios());
    all.extend(evtchn_scenarios());
    all
}

/// The `simd-isolation` guest: every vCPU's vector registers survive preemption, yields and
/// blocking waits while another vCPU (of its domain, or another domain) fills its own.
/// The SMP host (issue 15): every pCPU runs guests. A 2-vCPU domain on a
/// 2-CPU machine plays a lockstep handshake without exits (`smp-parallel`), which is faster
/// than one pCPU could ever make it only if both vCPUs run at once; the hypervisor says how
/// many pCPUs run its loop, and that the second one entered it.
fn smp_host_scenarios() -> Vec<Scenario> {
    // On the GICv3 of QEMU's `virt`, and on its GICv2 (kicks by GICD_SGIR there, as on ARMv7,
    // which has only that); on x86 with VT-x in Bochs and AMD-V under QEMU (kicks by fixed
    // IPIs through the host's xAPIC).
    [
        (Arch::Aarch64, ""),
        (Arch::Aarch64, "-gicv2"),
        (Arch::Armv7, ""),
        (Arch::X86_64, ""),
        (Arch::X86_64, crate::qemu_x86::SVM_SUFFIX),
    ]
    .into_iter()
    .map(|(arch, suffix)| {
        let mut in_order = banner(arch);
        in_order.extend(
            [
                "(XEN) SMP host: 2 pCPU(s) run guests (CPU0, CPU1)",
                "(XEN) d1v1: powered on by v0",
                "(d1) smp-parallel: vCPU 1 started",
                "(d1) PASS smp-parallel: both vCPUs ran at once",
                "(d1) SMP-PARALLEL-DONE rounds=2000",
                "(XEN) stopping: all domains powered off",
            ]
            .map(String::from),
        );
        Scenario {
            name: format!("smp-parallel-{}{suffix}", arch.name()),
            arch,
            guest: TestGuest::GuestConfig { file: "smp-parallel.dts", guest: "smp-parallel" },
            expect: Expect {
                in_order,
                // CPU1 says so when it enters the loop (before or after vCPU 1 powers on).
                count: Some(("(XEN) CPU1: running guests as pCPU 1".into(), 1)),
                forbidden: vec!["PANIC", "FAIL"],
                exit_zero: true,
            },
        }
    })
    .collect()
}

/// The schedulers measured from inside guests (issue 15), on a 2-CPU machine under QEMU
/// `-icount` (exact guest time): the `sched-probe` guests print figures that
/// [`crate::sched_check`] compares with the schedule (see [`figures`]).
fn sched_scenarios() -> Vec<Scenario> {
    // `done`: the line each domain prints last with its figures.
    let probe = |name: &str, file: &'static str, lines: &[&str], done: &str, domains: usize| {
        let mut in_order = banner(Arch::Aarch64);
        in_order.extend(lines.iter().map(|l| l.to_string()));
        in_order.push("(XEN) stopping: all domains powered off".into());
        Scenario {
            name: name.into(),
            arch: Arch::Aarch64,
            guest: TestGuest::GuestConfig { file, guest: "sched-probe" },
            expect: Expect {
                in_order,
                count: Some((done.into(), domains)),
                forbidden: vec!["PANIC", "FAIL", "rejected", "ignored", "does not run"],
                exit_zero: true,
            },
        }
    };
    vec![
        probe(
            "credit-shares-aarch64",
            "credit-shares.dts",
            &[
                "(XEN) cpupool cpupool-credit: scheduler credit, 2 CPU(s) (Pool-0: CPU0, CPU1)",
                "(XEN) SMP host: 2 pCPU(s) run guests (CPU0, CPU1)",
            ],
            "SCHED-PROBE ran-us=",
            6,
        ),
        probe(
            "arinc653-frames-aarch64",
            "arinc653-frames.dts",
            &[
                "(XEN) cpupool cpupool-a653: scheduler arinc653, 2 CPU(s)",
                "(XEN) arinc653: major frame 30000 us on 2 pCPU(s), first frame at ",
                "(XEN) SMP host: 2 pCPU(s)",
            ],
            "SCHED-PROBE done vcpus=2 ",
            3,
        ),
        // Two pools of their own schedulers on three pCPUs: the first frame's partitions
        // (domains 1-3) on CPUs 1 and 2, credit for domains 4 and 5 on CPU0.
        probe(
            "cpupools-aarch64",
            "cpupools.dts",
            &[
                "(XEN) cpupool cpupool-general: scheduler credit, 1 CPU(s) (Pool-0: CPU0)",
                "(XEN) cpupool cpupool-a653: scheduler arinc653, 2 CPU(s) (Pool-1: CPU1, CPU2)",
                "(XEN) arinc653: major frame 30000 us on 2 pCPU(s), first frame at ",
                "(XEN) SMP host: 3 pCPU(s) run guests (CPU0, CPU1, CPU2)",
            ],
            "SCHED-PROBE ran-us=",
            2,
        ),
        probe(
            "arinc653-switch-aarch64",
            "arinc653-switch.dts",
            &[
                "(XEN) cpupool cpupool-a653: scheduler arinc653, 2 CPU(s)",
                "(XEN) arinc653: major frame 20000 us on 2 pCPU(s), first frame at ",
                "(XEN) d1: domU1: control domain (capabilities: DOMAIN_CAPS_CONTROL)",
                "(d1) SCHED-CTL wrong-version rc=-13",
                "(d1) SCHED-CTL too-long rc=-22",
                "(XEN) d1: new ARINC 653 schedule (major frame 12000 us) in force from ",
                "(d1) SCHED-CTL putinfo rc=0",
                // Pool 0: ARINC 653 (7), three domains, CPUs 0 and 1.
                "(d1) SCHED-CTL cpupool-info rc=0 sched_id=7 n_dom=3 cpumap=0x3",
                "(d1) PASS sched-ctl",
            ],
            // Both probes were refused the sysctl (-EPERM), and both printed their runs.
            "SCHED-PROBE sysctl rc=-1",
            2,
        ),
    ]
}

/// The figures a scenario's guests printed, checked against what its configuration asks
/// for: a summary for the PASS line, or why it fails. `None`: the scenario has none.
fn figures(name: &str, console: &str) -> Option<Result<String, String>> {
    use crate::sched_check as sc;
    match name {
        "credit-shares-aarch64" => Some(sc::credit_shares(console, &sc::CREDIT_SHARES)),
        "arinc653-frames-aarch64" => {
            let mut phases = [sc::Phase { from_ns: 0, major_ms: 30, windows: sc::xen_example() }];
            Some(sc::arinc653_runs(console, &mut phases))
        }
        "two-linux-one-cpu-aarch64" => Some(sc::steal_seen(console, 2)),
        "cpupools-aarch64" => {
            let done = console.matches("SCHED-PROBE done vcpus=2 ").count();
            if done != 3 {
                return Some(Err(format!("{done} of 3 partitions printed their runs")));
            }
            let mut phases = [sc::Phase { from_ns: 0, major_ms: 30, windows: sc::xen_example() }];
            let windows = sc::arinc653_runs_inside(console, &mut phases);
            let shares = sc::credit_shares(console, &sc::CPUPOOLS_CREDIT_SHARES);
            Some(windows.and_then(|w| shares.map(|s| format!("pool 1: {w}; pool 0: {s}"))))
        }
        "arinc653-switch-aarch64" => {
            let (before, after) = sc::switch_schedules();
            let done = console.matches("SCHED-PROBE done vcpus=2 ").count();
            Some(if done == 2 {
                sc::arinc653_switch(console, before, after)
            } else {
                Err(format!("{done} of 2 probes finished"))
            })
        }
        _ => None,
    }
}

/// Passes on the guest's own markers: every round checked, zero wrong registers.
fn simd_isolation_scenarios() -> Vec<Scenario> {
    /// Rounds each vCPU of the guest runs (`ROUNDS` in simd_isolation.rs).
    const ROUNDS: usize = 16;
    // `clock`: the backend preempts a spinning vCPU and ends blocking waits on a timer.
    let smp2 = |name: String, arch: Arch, guest: TestGuest, clock: bool| {
        let mut in_order = banner(arch);
        in_order.extend(["(XEN) d1v1: powered on by v0", "(d1) simd-isolation: vCPU 1 started"].map(String::from));
        in_order.push("(d1) PASS simd-isolation-switched".into());
        if clock {
            in_order
                .extend(["(d1) PASS simd-isolation-preempted", "(d1) PASS simd-isolation-blocked"].map(String::from));
        }
        in_order.push(format!("(d1) SIMD-ISOLATION-DONE failures=0 checks={} vcpus=2 ", 2 * ROUNDS));
        in_order.push("(XEN) d1: shutdown requested, reason 0 (poweroff)".into());
        Scenario {
            name,
            arch,
            guest,
            expect: Expect {
                in_order,
                count: Some(("(d1) PASS simd-isolation v".into(), 2 * ROUNDS)),
                forbidden: vec!["PANIC", "FAIL"],
                exit_zero: true,
            },
        }
    };
    let config = TestGuest::GuestConfig { file: "simd-isolation-smp2.dts", guest: "simd-isolation" };
    let mut all = vec![
        smp2("simd-isolation-aarch64".into(), Arch::Aarch64, config, true),
        // No clock on ARMv7 yet: its vCPUs switch on yields only, and no timer can end a
        // blocking wait.
        smp2("simd-isolation-armv7".into(), Arch::Armv7, config, false),
    ];
    for suffix in ["", crate::qemu_x86::SVM_SUFFIX] {
        let name = format!("simd-isolation-x86_64{suffix}");
        all.push(smp2(name, Arch::X86_64, TestGuest::BuiltInSmp("simd-isolation", 2), true));
    }
    // Two single-vCPU domains on one CPU: each counts all its rounds with no wrong register.
    // x86 boots the same configuration as multiboot2 modules.
    let two = TestGuest::GuestConfig { file: "simd-isolation-two-domains.dts", guest: "simd-isolation" };
    for (arch, suffix) in TWO_DOMAIN_TARGETS {
        let mut in_order = banner(arch);
        in_order.extend(
            ["(XEN) d1: domU1: ", "(XEN) d2: domU2: ", "(XEN) stopping: all domains powered off"].map(String::from),
        );
        all.push(Scenario {
            name: format!("simd-isolation-two-domains-{}{suffix}", arch.name()),
            arch,
            guest: two,
            expect: Expect {
                in_order,
                count: Some((format!("SIMD-ISOLATION-DONE failures=0 checks={ROUNDS} vcpus=1 "), 2)),
                forbidden: vec!["PANIC", "FAIL"],
                exit_zero: true,
            },
        });
    }
    // Four vCPUs (two domains of two) on the two pCPUs of the ARM SMP hosts: vCPUs are
    // switched out and taken up again by the other pCPU (the hypervisor counts the moves),
    // and each finds exactly its own FP/SIMD (ARMv7: VFP/Advanced SIMD) registers wherever it
    // runs next.
    for arch in [Arch::Aarch64, Arch::Armv7] {
        let mut in_order = banner(arch);
        let done = format!("SIMD-ISOLATION-DONE failures=0 checks={} vcpus=2 ", 2 * ROUNDS);
        in_order.extend(
            ["(XEN) d1: domU1: ", "(XEN) d2: domU2: ", "(XEN) SMP host: 2 pCPU(s) run guests"].map(String::from),
        );
        in_order.extend([format!("(d1) {done}"), "(XEN) d1: its vCPUs moved between pCPUs".into()]);
        all.push(Scenario {
            name: format!("simd-isolation-4-on-2-{}", arch.name()),
            arch,
            guest: TestGuest::GuestConfig { file: "simd-isolation-4-on-2.dts", guest: "simd-isolation" },
            expect: Expect { in_order, count: Some((done, 2)), forbidden: vec!["PANIC", "FAIL"], exit_zero: true },
        });
    }
    all
}

/// Where the two-domain configurations of qemu/configs/ run: ARM from a boot DTB, x86 on both
/// backends (Bochs' VT-x, QEMU's SVM with the `-svm` suffix) from multiboot2 modules.
const TWO_DOMAIN_TARGETS: [(Arch, &str); 4] =
    [(Arch::Aarch64, ""), (Arch::Armv7, ""), (Arch::X86_64, ""), (Arch::X86_64, crate::qemu_x86::SVM_SUFFIX)];

/// Interdomain event channels: two domains bounce an event 1000 times (from a
/// configuration); one domain does it over a loopback channel (every backend).
fn evtchn_scenarios() -> Vec<Scenario> {
    let done = |role: &str| format!("EVTCHN-PINGPONG-DONE {role} rounds=1000");
    let mut all = Vec::new();
    let two = TestGuest::GuestConfig { file: "evtchn-pingpong.dts", guest: "evtchn-pingpong" };
    for (arch, suffix) in TWO_DOMAIN_TARGETS {
        let mut in_order = banner(arch);
        in_order.extend(
            [
                // Not the pong end's "bound" line: it may come before the ping end has
                // printed the port it allocated (both ends' rounds are counted below).
                "(d1) evtchn-pingpong: ping offers port ",
                "(XEN) stopping: all domains powered off",
            ]
            .map(String::from),
        );
        all.push(Scenario {
            name: format!("evtchn-pingpong-{}{suffix}", arch.name()),
            arch,
            guest: two,
            expect: Expect {
                in_order,
                count: Some((" rounds=1000".into(), 2)),
                forbidden: vec!["PANIC", "FAIL"],
                exit_zero: true,
            },
        });
    }
    // The same two domains as ARINC 653 partitions of the boot CPU's pool (1 ms windows in a
    // 2 ms major frame, from the configuration's xen,cpupool node): every bounce waits for
    // the other's window, and both still finish. And under credit, with weights 256:512 and
    // a 50% cap from the configuration (nothing of it may be ignored).
    let pools = [
        (
            "arinc653",
            "evtchn-pingpong-arinc653.dts",
            "cpupool-a653: scheduler arinc653",
            vec!["PANIC", "FAIL", "rejected"],
        ),
        (
            "credit",
            "evtchn-pingpong-credit.dts",
            "cpupool-credit: scheduler credit",
            vec!["PANIC", "FAIL", "rejected", "ignored"],
        ),
    ];
    for (sched, file, pool, forbidden) in pools {
        let mut in_order = banner(Arch::Aarch64);
        in_order.push(format!("(XEN) cpupool {pool}, 1 CPU(s)"));
        in_order.extend(
            ["(d1) evtchn-pingpong: ping offers port ", "(XEN) stopping: all domains powered off"].map(String::from),
        );
        all.push(Scenario {
            name: format!("evtchn-pingpong-{sched}-aarch64"),
            arch: Arch::Aarch64,
            guest: TestGuest::GuestConfig { file, guest: "evtchn-pingpong" },
            expect: Expect { in_order, count: Some((" rounds=1000".into(), 2)), forbidden, exit_zero: true },
        });
    }
    // Grant copies between two domains.
    for (arch, suffix) in TWO_DOMAIN_TARGETS {
        let mut in_order = banner(arch);
        in_order.extend(
            ["(d1) grant-copy: granter offers refs 8 (read-only) and 9", "(XEN) stopping: all domains powered off"]
                .map(String::from),
        );
        all.push(Scenario {
            name: format!("grant-copy-{}{suffix}", arch.name()),
            arch,
            guest: TestGuest::GuestConfig { file: "grant-copy.dts", guest: "grant-copy" },
            expect: Expect {
                in_order,
                count: Some((" ok=true".into(), 2)),
                forbidden: vec!["PANIC", "FAIL"],
                exit_zero: true,
            },
        });
    }
    // A ring on a granted page: mapped, 10 000 messages checksummed, unmapped.
    for (arch, suffix) in TWO_DOMAIN_TARGETS {
        let mut in_order = banner(arch);
        in_order.extend(
            [
                "(d1) grant-ring: frontend grants ring ref 8 and info ref 9",
                "(d2) grant-ring: backend mapped ring (handle ",
                "(d2) GRANT-RING-DONE backend messages=10000 ok=true",
                "(d1) GRANT-RING-DONE frontend messages=10000 ok=true",
                "(XEN) stopping: all domains powered off",
            ]
            .map(String::from),
        );
        all.push(Scenario {
            name: format!("grant-ring-{}{suffix}", arch.name()),
            arch,
            guest: TestGuest::GuestConfig { file: "grant-ring.dts", guest: "grant-ring" },
            expect: Expect {
                in_order,
                // Frontend: its table, the entries' flags mapped (2) and unmapped (2).
                // Backend: the bind notification, refusals (5), every map call's rc (5), both
                // maps, the read-only page, both unmaps, the second unmap, the messages.
                count: Some(("PASS grant-ring".into(), 22)),
                forbidden: vec!["PANIC", "FAIL"],
                exit_zero: true,
            },
        });
    }
    all.push(scale_scenario(Arch::Aarch64, ""));
    all.push(scale_scenario(Arch::X86_64, crate::qemu_x86::SVM_SUFFIX));
    let targets =
        [(Arch::Aarch64, ""), (Arch::Armv7, ""), (Arch::X86_64, ""), (Arch::X86_64, crate::qemu_x86::SVM_SUFFIX)];
    // The 2-level ABI stops at port 4095; FIFO binds and delivers on port 2^17 - 1.
    for (arch, suffix) in targets {
        let mut in_order = banner(arch);
        in_order.extend(
            [
                "(d1) PASS evtchn-limits 2-level",
                "(d1) PASS evtchn-limits init_control",
                "(d1) PASS evtchn-limits expand_array",
                "(d1) PASS evtchn-limits fifo",
                "(d1) PASS evtchn-limits fifo-full",
                "(d1) PASS evtchn-limits fifo-receive",
                "(d1) EVTCHN-LIMITS-DONE last=131071",
                "(XEN) d1: shutdown requested, reason 0 (poweroff)",
            ]
            .map(String::from),
        );
        all.push(Scenario {
            name: format!("evtchn-limits-{}{suffix}", arch.name()),
            arch,
            guest: TestGuest::BuiltIn("evtchn-limits"),
            expect: Expect { in_order, count: None, forbidden: vec!["PANIC", "FAIL"], exit_zero: true },
        });
    }
    for (arch, suffix) in targets {
        let mut in_order = banner(arch);
        in_order.extend(["(d1) evtchn-pingpong: loopback ports ".to_string(), format!("(d1) {}", done("loopback"))]);
        in_order.push("(XEN) d1: shutdown requested, reason 0 (poweroff)".into());
        all.push(Scenario {
            name: format!("evtchn-loopback-{}{suffix}", arch.name()),
            arch,
            guest: TestGuest::BuiltIn("evtchn-pingpong"),
            expect: Expect {
                in_order,
                // Three refusals, the bind notification, the round trips.
                count: Some(("(d1) PASS evtchn-pingpong".into(), 5)),
                forbidden: vec!["PANIC", "FAIL"],
                exit_zero: true,
            },
        });
    }
    all
}

/// One backend and 63 clients from one configuration: a channel and a granted ring each; the
/// hypervisor says how long building all 64 took and what each costs it.
fn scale_scenario(arch: Arch, suffix: &str) -> Scenario {
    let mut in_order = banner(arch);
    in_order.extend(
        [
            "(XEN) d64: domU64: ",
            "(XEN) built 64 of 64 domains in ",
            "(d1) evtchn-scale: backend connected 63 clients",
            "(d1) EVTCHN-SCALE-DONE backend clients=63 answers=6300",
            "(XEN) stopping: all domains powered off",
        ]
        .map(String::from),
    );
    Scenario {
        name: format!("evtchn-64-domains-{}{suffix}", arch.name()),
        arch,
        guest: TestGuest::GuestConfig { file: "evtchn-64-domains.dts", guest: "evtchn-scale" },
        expect: Expect {
            in_order,
            count: Some(("EVTCHN-SCALE-DONE client rounds=100 ok=true".into(), 63)),
            forbidden: vec!["PANIC", "FAIL"],
            exit_zero: true,
        },
    }
}

impl Scenario {
    /// The same scenario judged on real Xen: on what the guests print, not on the lines only
    /// our hypervisor writes (`(XEN) ...`), and on Xen's silence after they end.
    fn for_xen(mut self) -> Scenario {
        let ours = |m: &str| m.starts_with("(XEN)");
        self.expect.in_order.retain(|m| !ours(m));
        if self.expect.count.as_ref().is_some_and(|(m, _)| ours(m)) {
            self.expect.count = None;
        }
        self.expect.forbidden.retain(|f| *f != "PANIC");
        self.name = format!("{} (on Xen)", self.name);
        self
    }

    /// Every guest line the scenario asks for is on the console (in order, and counted).
    fn guests_done(&self, console: &str) -> bool {
        let mut rest = console;
        for marker in &self.expect.in_order {
            match rest.find(marker.as_str()) {
                Some(i) => rest = &rest[i + marker.len()..],
                None => return false,
            }
        }
        self.expect.count.as_ref().is_none_or(|(m, n)| console.matches(m.as_str()).count() >= *n)
    }

    fn timeout_secs(&self) -> u64 {
        let bochs = crate::qemu_x86::emulator_for_scenario(&self.name) == crate::qemu_x86::Emulator::Bochs;
        match (self.guest, self.arch) {
            // /init's SIMD workload: ~15 s of guest time on Bochs, minutes of wall time when
            // the machine is shared.
            (TestGuest::Linux { append, .. } | TestGuest::LinuxI386 { append, .. }, _)
                if append.contains("xhv.stress=") =>
            {
                900
            }
            // Linux on two vCPUs takes about 190 s on Bochs alone, and over 300 s when the
            // machine is shared.
            (TestGuest::Linux { .. } | TestGuest::LinuxI386 { .. }, _) if bochs => 600,
            (
                TestGuest::Linux { .. }
                | TestGuest::LinuxI386 { .. }
                | TestGuest::Fuzz { .. }
                | TestGuest::Config("two-domus.dts")
                // A second of exact guest time, the emulated CPUs run in turn.
                | TestGuest::GuestConfig { guest: "sched-probe", .. },
                _,
            )
            | (_, Arch::X86_64) => 300,
            _ => 60,
        }
    }

    /// `Ok(())` when the run shows what the scenario promises, else why not.
    fn judge(&self, out: &Outcome) -> Result<(), String> {
        let e = &self.expect;
        let mut rest = out.console.as_str();
        for marker in &e.in_order {
            match rest.find(marker.as_str()) {
                Some(i) => rest = &rest[i + marker.len()..],
                None if out.status.is_none() => {
                    return Err(format!("console never showed `{marker}` (in order); {}", out.summary()));
                }
                None => return Err(format!("console never showed `{marker}` (in order)")),
            }
        }
        if let Some((marker, n)) = &e.count {
            let seen = out.console.matches(marker.as_str()).count();
            if seen != *n {
                return Err(format!("`{marker}` appeared {seen} times, expected {n}"));
            }
        }
        if let Some(bad) = e.forbidden.iter().find(|f| out.console.contains(*f)) {
            let line = out.console.lines().find(|l| l.contains(bad)).unwrap_or("");
            return Err(format!("console shows `{}`", line.trim()));
        }
        match (out.status, e.exit_zero) {
            // Stopped once the guests had shown everything (real Xen idles after them).
            (None, _) if out.finished => Ok(()),
            (None, _) => Err(out.summary()),
            (Some(0), true) | (Some(1..), false) => Ok(()),
            (Some(c), true) => Err(format!("emulator exited {c}, expected 0")),
            (Some(c), false) => Err(format!("emulator exited {c}, expected a failure status")),
        }
    }
}

/// `skip_linux` leaves out the Linux boots (they need Debian's kernels, fetched on first use).
/// `hypervisor`: ours, or real Xen for the aarch64 scenarios (checked on what the guests print).
pub fn run(filter: Option<&str>, host: bool, skip_linux: bool, hypervisor: Hypervisor) -> Result<i32> {
    let mut passed = 0;
    let mut failed = 0;
    let mut tally = |ok: bool| if ok { passed += 1 } else { failed += 1 };
    let mut all = scenarios();
    if !skip_linux {
        all.extend(linux_scenarios());
    }
    let on_xen = hypervisor == Hypervisor::Xen;
    let chosen: Vec<Scenario> = all
        .into_iter()
        .filter(|s| filter.is_none_or(|f| s.name.contains(f)))
        .filter(|s| !on_xen || s.arch == Arch::Aarch64)
        .filter(|s| !on_xen || !skipped_on_xen(&s.name))
        .map(|s| if on_xen { s.for_xen() } else { s })
        .collect();
    let mut needs = needs(&chosen, host);
    if on_xen {
        needs.linux(Arch::Aarch64);
    }
    crate::prereq::ensure(&needs)?;
    if host {
        tally(host_tests());
    }
    let mut built: BTreeMap<&str, Result<Built, String>> = BTreeMap::new();
    let logs = target_dir().join("xtask/logs");
    std::fs::create_dir_all(&logs)?;
    for s in &chosen {
        let b = built
            .entry(s.arch.name())
            .or_insert_with(|| build::hypervisor_and_guests(s.arch).map_err(|e| format!("{e:#}")));
        let result = match b {
            Ok(b) => run_one(s, b, &logs, hypervisor),
            Err(e) => Err(format!("build failed: {e}")),
        };
        match &result {
            Ok(Times { total, marker: Some(m) }) => {
                println!("PASS {} ({total:.1} s; XHV-INIT-MARKER after {m:.1} s)", s.name)
            }
            Ok(Times { total, marker: None }) => println!("PASS {} ({total:.1} s)", s.name),
            Err(why) => println!("FAIL {}: {why}", s.name),
        }
        tally(result.is_ok());
    }
    println!("{passed} passed, {failed} failed");
    Ok(if failed == 0 { 0 } else { 1 })
}

/// Scenarios that check what real Xen configures differently for a dom0less domU, and why
/// they are not run there (each is said so on the console).
const NOT_ON_XEN: [(&str, &str); 3] = [
    (
        "evtchn-limits",
        "Xen 4.17 caps a dom0less domU at 1023 event channels (max_evtchn_port) and has no binding to raise it",
    ),
    (
        "evtchn-64-domains",
        "Xen 4.17 arm64 takes at most 32 boot modules: it stops at domU31 with \"Missing kernel boot module?\"",
    ),
    (
        "two-linux-one-cpu",
        "its Linux domUs print on hvc0, which Xen 4.17 gives a dom0less domU without xenstore no backend for \
         (`run --hypervisor xen` prints nothing in 100 s with console=hvc0, the marker with console=ttyAMA0)",
    ),
];

fn skipped_on_xen(name: &str) -> bool {
    let skip = NOT_ON_XEN.iter().find(|(prefix, _)| name.starts_with(prefix));
    if let Some((_, why)) = skip {
        println!("SKIP {name} (on Xen): {why}");
    }
    skip.is_some()
}

/// What the chosen scenarios (and the host tests, whose device-tree checks run `dtc`) use.
fn needs(chosen: &[Scenario], host: bool) -> crate::prereq::Needs {
    let mut needs = crate::prereq::Needs::default();
    if host {
        needs.dtc();
    }
    for s in chosen {
        let emulator = crate::prereq::X86Emulator::of(Some(crate::qemu_x86::emulator_for_scenario(&s.name)));
        needs.boot(s.arch, emulator);
        match s.guest {
            TestGuest::Linux { kernel, .. } => {
                needs.linux_series(s.arch, kernel);
            }
            TestGuest::Config(_) => {
                needs.linux(s.arch);
            }
            _ => {}
        }
        if s.name.starts_with("uboot-") {
            needs.uboot(s.arch, uboot_board_of(&s.name));
        }
        if matches!(s.guest, TestGuest::LinuxI386 { .. }) {
            needs.linux_i386();
        }
        // Configurations are `.dts` files (ARM boots need dtc anyway; x86 ones only for these).
        if matches!(s.guest, TestGuest::Config(_) | TestGuest::GuestConfig { .. }) {
            needs.dtc();
        }
    }
    needs
}

/// The boards with a `board-<name>` scenario.
const BOARDS: [crate::boards::Board; 4] = [
    crate::boards::Board::Raspi4b,
    crate::boards::Board::XlnxZcu102,
    crate::boards::Board::VexpressA15,
    crate::boards::Board::McImx7dSabre,
];

/// The board a `board-<name>` scenario boots on.
fn board_of(name: &str) -> Option<crate::boards::Board> {
    let board = name.strip_prefix("board-")?;
    BOARDS.into_iter().find(|b| b.name() == board)
}

/// A passed scenario's wall-clock times: the whole run, and from the emulator's start to the
/// Linux init marker (boot time) where there is one.
struct Times {
    total: f64,
    marker: Option<f64>,
}

/// The board a `uboot-<board>` scenario boots on (`uboot-aarch64`, `uboot-armv7`: `virt`).
fn uboot_board_of(name: &str) -> Option<crate::boards::Board> {
    let board = name.strip_prefix("uboot-")?;
    BOARDS.into_iter().find(|b| b.name() == board)
}

/// pCPUs for a scenario booted from a configuration (`config`, a copy of `file`): two, as
/// the SMP hosts run, or on ARM as many as the configuration's `/cpus` names (its CPU pools)
/// if more. On x86 one under Bochs (its SMP is slow; `smp-parallel` needs two all the same),
/// and one for the vector state isolation of domains that share the boot CPU (what that
/// scenario checks).
fn config_smp(s: &Scenario, file: &str, config: &std::path::Path) -> Result<u32, String> {
    let bochs = crate::qemu_x86::emulator_for_scenario(&s.name) == crate::qemu_x86::Emulator::Bochs;
    let one = s.arch == Arch::X86_64
        && !s.name.starts_with("smp-parallel")
        && (bochs || file.starts_with("simd-isolation-two-domains"));
    if one {
        return Ok(1);
    }
    if s.arch == Arch::X86_64 {
        return Ok(2);
    }
    let dtb = crate::bootcfg_file::compile(config).map_err(|e| format!("{e:#}"))?;
    Ok(crate::bootdt::cpu_count(&dtb).map_err(|e| format!("{e:#}"))?.max(2) as u32)
}

fn run_one(s: &Scenario, built: &Built, logs: &std::path::Path, hypervisor: Hypervisor) -> Result<Times, String> {
    let mut args = RunArgs {
        hypervisor,
        emulator: Some(crate::qemu_x86::emulator_for_scenario(&s.name)),
        board: board_of(&s.name).or(uboot_board_of(&s.name)),
        firmware: s.name.starts_with("uboot-").then_some(crate::Firmware::UBoot),
        ..RunArgs::one_cpu(s.arch, s.timeout_secs())
    };
    if s.name.ends_with("-gicv2") || s.arch == Arch::Armv7 {
        args.gic = Some(2);
    }
    // The kernel of the scenario's series, as `--kernel` and `--initrd` would name it.
    if let TestGuest::Linux { kernel: series, .. } = s.guest {
        let fetched = crate::images::linux_guest_series(s.arch, series).map_err(|e| format!("{e:#}"))?;
        args.kernel = Some(fetched.kernel);
        args.initrd = Some(fetched.initrd);
    }
    let guest = match s.guest {
        TestGuest::BuiltIn(name) => {
            args.guest = Some(name.into());
            Guest::Loader { kernel: built.guest(name).map_err(|e| format!("{e:#}"))? }
        }
        TestGuest::Linux { append, smp, .. } if s.arch == Arch::X86_64 => {
            args.append = Some(append.into());
            args.smp = smp;
            Guest::Loader { kernel: crate::qemu_x86::linux_guest(&mut args).map_err(|e| format!("{e:#}"))? }
        }
        TestGuest::LinuxI386 { append, smp } => {
            let fetched = crate::images::linux_guest_i386().map_err(|e| format!("{e:#}"))?;
            args.kernel = Some(fetched.kernel);
            args.initrd = Some(fetched.initrd);
            args.append = Some(append.into());
            args.smp = smp;
            Guest::Loader { kernel: crate::qemu_x86::linux_guest(&mut args).map_err(|e| format!("{e:#}"))? }
        }
        TestGuest::Linux { append, smp, .. } => {
            args.append = Some(append.into());
            args.smp = smp;
            if args.firmware.is_some() {
                Guest::UBoot(crate::uboot::disk_for_run(built, &args).map_err(|e| format!("{e:#}"))?)
            } else {
                Guest::Dom0less(emulator::linux_domu(built, &args).map_err(|e| format!("{e:#}"))?)
            }
        }
        TestGuest::Fuzz { calls, two_domains } => {
            args.append = Some(crate::fuzz::guest_args(FUZZ_SEED, calls, None));
            crate::fuzz::guest(built, &mut args, two_domains).map_err(|e| format!("{e:#}"))?
        }
        TestGuest::Config(file) => {
            let config = config_with_images(file, built).map_err(|e| format!("{e:#}"))?;
            emulator::configured(built, &args, &config).map_err(|e| format!("{e:#}"))?
        }
        TestGuest::GuestConfig { file, guest } => {
            let config = config_with_guest(file, guest, built).map_err(|e| format!("{e:#}"))?;
            // The scheduler probes measure guest time: exact under icount.
            args.icount = guest == "sched-probe";
            args.smp = config_smp(s, file, &config)?;
            emulator::configured(built, &args, &config).map_err(|e| format!("{e:#}"))?
        }
        TestGuest::BuiltInSmp(name, smp) => {
            args.guest = Some(name.into());
            args.smp = smp;
            Guest::Loader { kernel: built.guest(name).map_err(|e| format!("{e:#}"))? }
        }
    };
    // Real Xen boots domUs from a boot device tree only: a single guest becomes one.
    let guest = match guest {
        Guest::Loader { kernel } if hypervisor == Hypervisor::Xen => {
            Guest::Dom0less(emulator::single_domu(built, &args, &kernel).map_err(|e| format!("{e:#}"))?)
        }
        other => other,
    };
    let boot = Boot { arch: s.arch, built, guest, args };
    // Xen idles once its domains are over: stop when the guests have shown all they must.
    let done = |console: &str| hypervisor == Hypervisor::Xen && s.guests_done(console);
    let out = emulator::boot_until(&boot, Echo::Quiet, &done).map_err(|e| format!("{e:#}"))?;
    let prefix = if hypervisor == Hypervisor::Xen { "xen-" } else { "" };
    let log = logs.join(format!("{prefix}{}.log", s.name));
    let _ = std::fs::write(&log, &out.console);
    s.judge(&out).map_err(|why| format!("{why} (console: {})", log.display()))?;
    if let Some(result) = figures(&s.name, &out.console) {
        let summary = result.map_err(|why| format!("{why} (console: {})", log.display()))?;
        println!("  {}: {summary}", s.name);
    }
    Ok(Times { total: out.elapsed.as_secs_f64(), marker: out.marker_at.map(|d| d.as_secs_f64()) })
}

/// Copy `qemu/configs/<file>` next to links named as its modules' images (`Image`,
/// `initramfs.cpio.gz`) that point at Debian's kernel and the test initramfs.
fn config_with_images(file: &str, built: &Built) -> Result<std::path::PathBuf> {
    let guest = crate::images::linux_guest(built.arch)?;
    let dir = built.run_dir.join("config");
    std::fs::create_dir_all(&dir)?;
    for (name, target) in [("Image", &guest.kernel), ("initramfs.cpio.gz", &guest.initrd)] {
        let link = dir.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(target, &link)?;
    }
    let config = dir.join(file);
    std::fs::copy(workspace_root().join("qemu/configs").join(file), &config)?;
    Ok(config)
}

/// Copy `qemu/configs/<file>` next to a link named `guest` to that built-in test guest.
fn config_with_guest(file: &str, guest: &str, built: &Built) -> Result<std::path::PathBuf> {
    let dir = built.run_dir.join("config");
    std::fs::create_dir_all(&dir)?;
    let link = dir.join(guest);
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(built.guest(guest)?, &link)?;
    let config = dir.join(file);
    std::fs::copy(workspace_root().join("qemu/configs").join(file), &config)?;
    Ok(config)
}

/// `cargo test` over the workspace's host-side crates.
fn host_tests() -> bool {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo).current_dir(workspace_root()).args(["test", "--workspace"]).status();
    match status {
        Ok(st) if st.success() => {
            println!("PASS host-tests");
            true
        }
        Ok(st) => {
            println!("FAIL host-tests: cargo test exited {}", st.code().unwrap_or(-1));
            false
        }
        Err(e) => {
            println!("FAIL host-tests: could not run cargo test: {e}");
            false
        }
    }
}
