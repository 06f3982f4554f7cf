//! Boot configuration DTBs: the emulated machine's own DTB plus one dom0less domain node per
//! guest, in exactly the form Xen's binding (docs/misc/arm/device-tree/booting.txt) gives.
//!
//! QEMU dumps the machine's DTB with `-machine ...,dumpdtb=FILE`; the result of
//! [`with_domains`] goes back in with `-dtb`, and the images it names are placed with
//! `-device loader,file=..,addr=..,force-raw=on`. Writing the binding's form, not a private
//! one, keeps these DTBs interchangeable with configurations written for Xen.

use anyhow::{Context, Result, ensure};
use dtoolkit::fdt::Fdt;
use dtoolkit::model::{DeviceTree, DeviceTreeNode, DeviceTreeProperty};
use dtoolkit::{Node, Property, ToPropertyValue};

/// Where an image sits in the machine's physical memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Module {
    pub addr: u64,
    pub size: u64,
}

/// One guest to describe under `/chosen`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainSpec {
    /// The node name, e.g. `domU1`: letters, digits and `,._+-`, at most 31 characters.
    pub name: String,
    pub cpus: u32,
    pub memory_kib: u64,
    /// Give the guest an emulated PL011.
    pub vpl011: bool,
    pub kernel: Module,
    /// The kernel's command line.
    pub bootargs: Option<String>,
    pub ramdisk: Option<Module>,
}

impl DomainSpec {
    /// A configuration's domain, its kernel (and ramdisk) placed at `kernel` (`ramdisk`).
    pub fn placed(d: &crate::bootcfg_file::ConfigDomain, kernel: Module, ramdisk: Option<Module>) -> Self {
        DomainSpec {
            name: d.name.clone(),
            cpus: d.cpus,
            memory_kib: d.memory_kib,
            vpl011: d.vpl011,
            kernel,
            bootargs: d.bootargs.clone(),
            ramdisk,
        }
    }
}

/// The host DTB with a `/chosen/<name>` node for every domain added; everything else (nodes,
/// properties, memory reservations, boot CPU) is kept as it was.
pub fn with_domains(host_dtb: &[u8], domains: &[DomainSpec]) -> Result<Vec<u8>> {
    let fdt = open(host_dtb)?;
    let mut tree = DeviceTree::from_fdt(&fdt);
    // `add_child_mut` returns the existing `/chosen` when there is one.
    let chosen = tree.root.add_child_mut(DeviceTreeNode::new("chosen")?);
    for domain in domains {
        let clash = chosen.child(&domain.name).is_some();
        ensure!(!clash, "the host DTB already has a /chosen/{} node", domain.name);
        chosen.add_child(domain_node(domain).with_context(|| format!("domain {}", domain.name))?);
    }
    let mut out = tree.to_dtb();
    // The writer always records CPU 0 as the boot CPU; keep the machine's (header word 7).
    out[28..32].copy_from_slice(&fdt.boot_cpuid_phys().to_be_bytes());
    Ok(out)
}

/// How many CPU nodes (`device_type = "cpu"`) a DTB's `/cpus` has.
pub fn cpu_count(dtb: &[u8]) -> Result<usize> {
    let fdt = Fdt::new(dtb).context("not a valid device tree")?;
    let Some(cpus) = fdt.find_node("/cpus") else { return Ok(0) };
    Ok(cpus.children().filter(|n| n.property("device_type").is_some_and(|p| p.value() == b"cpu\0")).count())
}

/// Carry a configuration's CPU pools and scheduler properties into a boot DTB `with_domains`
/// built: its `xen,cpupool` nodes go under `/chosen` with every CPU phandle (`cpupool-cpus`,
/// the first cell of each `xhv,arinc653-windows` entry) turned into the phandle of the
/// machine's CPU node with the same `reg`, and each domain node gets the configuration's
/// `phandle`, `domain-cpupool`, `xhv,sched-weight`, `xhv,sched-cap` and Xen's `capabilities`. The configuration
/// describes its CPUs under its own `/cpus` (`device_type = "cpu"`, `reg`, a label).
pub fn with_sched(boot_dtb: &[u8], config_dtb: &[u8]) -> Result<Vec<u8>> {
    const DOMAIN_PROPS: [&str; 5] = ["phandle", "domain-cpupool", "xhv,sched-weight", "xhv,sched-cap", "capabilities"];
    let boot = open(boot_dtb)?;
    let config = Fdt::new(config_dtb).context("the configuration is not a valid device tree")?;
    let cpus_of = |fdt: &Fdt<'_>| -> Vec<(u32, u32)> {
        let Some(cpus) = fdt.find_node("/cpus") else { return Vec::new() };
        cpus.children()
            .filter(|n| n.property("device_type").is_some_and(|p| p.value() == b"cpu\0"))
            .filter_map(|n| Some((cell(n.property("phandle")?.value())?, cell(n.property("reg")?.value())?)))
            .collect()
    };
    let (theirs, ours) = (cpus_of(&config), cpus_of(&boot));
    let map = |ph: u32| -> Result<u32> {
        let reg = theirs
            .iter()
            .find(|c| c.0 == ph)
            .map(|c| c.1)
            .with_context(|| format!("phandle {ph:#x} is no CPU of the configuration's /cpus"))?;
        ours.iter()
            .find(|c| c.1 == reg)
            .map(|c| c.0)
            .with_context(|| format!("the machine has no CPU with reg {reg} (or it has no phandle)"))
    };
    let mut tree = DeviceTree::from_fdt(&boot);
    let chosen = tree.root.add_child_mut(DeviceTreeNode::new("chosen")?);
    let Some(config_chosen) = config.find_node("/chosen") else { return Ok(boot_dtb.to_vec()) };
    for node in config_chosen.children() {
        let compatible =
            |c: &[u8]| node.property("compatible").is_some_and(|p| p.value().split(|&b| b == 0).any(|e| e == c));
        if compatible(b"xen,cpupool") {
            let mut pool = DeviceTreeNode::from_node(&node);
            for (name, stride) in [("cpupool-cpus", 1), ("xhv,arinc653-windows", 5)] {
                let Some(p) = pool.property_mut(name) else { continue };
                let mut cells: Vec<u32> =
                    (&*p).value().chunks_exact(4).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]])).collect();
                for c in cells.iter_mut().step_by(stride) {
                    *c = map(*c).with_context(|| format!("/chosen/{}: {name}", node.name()))?;
                }
                p.set_value(cells.as_slice());
            }
            ensure!(chosen.child(node.name()).is_none(), "the machine's DTB already has /chosen/{}", node.name());
            chosen.add_child(pool);
        } else if compatible(b"xen,domain") {
            let domain = chosen.child_mut(node.name()).with_context(|| format!("no domain node {}", node.name()))?;
            for name in DOMAIN_PROPS {
                if let Some(p) = node.property(name) {
                    domain.add_property(DeviceTreeProperty::new(name, p.value())?);
                }
            }
        }
    }
    let mut out = tree.to_dtb();
    out[28..32].copy_from_slice(&boot.boot_cpuid_phys().to_be_bytes());
    Ok(out)
}

/// A one-cell property's value.
fn cell(v: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(v.try_into().ok()?))
}

/// QEMU's dump is exactly one blob, but a file padded after the blob is accepted too.
fn open(dtb: &[u8]) -> Result<Fdt<'_>> {
    let total = dtb.get(4..8).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize);
    let exact = total.and_then(|t| dtb.get(..t)).unwrap_or(dtb);
    arch::fdtcheck::open(exact).context("the host DTB is not a valid flattened device tree")
}

/// `#address-cells` and `#size-cells` are both 2, so any 64-bit address or size fits; the
/// binding requires both on the domain node because its module sub-nodes have `reg`.
fn domain_node(d: &DomainSpec) -> Result<DeviceTreeNode> {
    ensure!(d.cpus > 0, "cpus must be at least 1");
    ensure!(d.memory_kib > 0, "memory must not be 0");
    let mut node = DeviceTreeNode::new(d.name.as_str())?;
    node.add_property(prop("compatible", "xen,domain")?);
    node.add_property(prop("#address-cells", 2u32)?);
    node.add_property(prop("#size-cells", 2u32)?);
    // The binding's `memory` is a 64-bit KiB count: two cells, high first.
    node.add_property(prop("memory", d.memory_kib)?);
    node.add_property(prop("cpus", d.cpus)?);
    if d.vpl011 {
        node.add_property(prop("vpl011", [0u8; 0])?);
    }
    node.add_child(module_node("multiboot,kernel", d.kernel, d.bootargs.as_deref())?);
    if let Some(ramdisk) = d.ramdisk {
        node.add_child(module_node("multiboot,ramdisk", ramdisk, None)?);
    }
    Ok(node)
}

/// `module@ADDR` (unit address in hex without `0x`, as the devicetree specification and
/// `dtc`'s checks want) with the specific compatible first, then the generic one.
fn module_node(kind: &str, m: Module, bootargs: Option<&str>) -> Result<DeviceTreeNode> {
    ensure!(m.size > 0, "{kind} module is empty");
    ensure!(m.addr.checked_add(m.size).is_some(), "{kind} module runs past 2^64");
    let mut node = DeviceTreeNode::new(format!("module@{:x}", m.addr))?;
    node.add_property(prop("compatible", [kind, "multiboot,module"].as_slice())?);
    let (addr, size) = (m.addr, m.size);
    let reg = [(addr >> 32) as u32, addr as u32, (size >> 32) as u32, size as u32];
    node.add_property(prop("reg", reg)?);
    if let Some(args) = bootargs {
        ensure!(!args.contains('\0'), "bootargs contain a NUL byte");
        node.add_property(prop("bootargs", args)?);
    }
    Ok(node)
}

fn prop(name: &str, value: impl ToPropertyValue) -> Result<DeviceTreeProperty> {
    Ok(DeviceTreeProperty::new(name, value)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dtoolkit::memreserve::MemoryReservation;
    use hypervisor::bootcfg::{self, DomainConfig, ModuleRef};
    use std::io::Write;
    use std::process::{Command, Stdio};

    /// A small stand-in for QEMU's `virt` DTB: 2/2 cells at the root, RAM, a UART, a
    /// `/chosen` with `stdout-path`, a memory reservation and boot CPU 1.
    fn host_dtb(with_chosen: bool) -> Vec<u8> {
        let mut tree = DeviceTree::new();
        let root = &mut tree.root;
        root.add_property(prop("#address-cells", 2u32).unwrap());
        root.add_property(prop("#size-cells", 2u32).unwrap());
        root.add_property(prop("compatible", "linux,dummy-virt").unwrap());
        let mut memory = DeviceTreeNode::new("memory@40000000").unwrap();
        memory.add_property(prop("device_type", "memory").unwrap());
        memory.add_property(prop("reg", [0u32, 0x4000_0000, 0, 0x4000_0000]).unwrap());
        root.add_child(memory);
        let mut uart = DeviceTreeNode::new("pl011@9000000").unwrap();
        uart.add_property(prop("compatible", ["arm,pl011", "arm,primecell"].as_slice()).unwrap());
        uart.add_property(prop("reg", [0u32, 0x900_0000, 0, 0x1000]).unwrap());
        root.add_child(uart);
        if with_chosen {
            let mut chosen = DeviceTreeNode::new("chosen").unwrap();
            chosen.add_property(prop("stdout-path", "/pl011@9000000").unwrap());
            root.add_child(chosen);
        }
        tree.memory_reservations.push(MemoryReservation::new(0x4800_0000, 0x1000));
        let mut dtb = tree.to_dtb();
        dtb[28..32].copy_from_slice(&1u32.to_be_bytes());
        dtb
    }

    fn spec(name: &str, kernel: u64) -> DomainSpec {
        DomainSpec {
            name: name.to_string(),
            cpus: 1,
            memory_kib: 0x4_0000,
            vpl011: false,
            kernel: Module { addr: kernel, size: 0x20_0000 },
            bootargs: None,
            ramdisk: None,
        }
    }

    fn two_domains() -> Vec<DomainSpec> {
        let mut a = spec("domU1", 0x4a00_0000);
        a.cpus = 2;
        a.vpl011 = true;
        a.bootargs = Some("console=ttyAMA0 init=/bin/sh".to_string());
        a.ramdisk = Some(Module { addr: 0x4b00_0000, size: 0x80_0000 });
        // Above 4 GiB, so a lost high cell would show.
        let b = spec("domU2", 0x1_4000_0000);
        vec![a, b]
    }

    /// What the hypervisor's parser should read back for a spec.
    fn expected(d: &DomainSpec) -> DomainConfig {
        let module = |m: Module| ModuleRef { addr: m.addr, size: m.size };
        DomainConfig {
            name: d.name.clone(),
            cpus: d.cpus,
            memory_kib: d.memory_kib,
            vpl011: d.vpl011,
            kernel: Some(module(d.kernel)),
            ramdisk: d.ramdisk.map(module),
            dtb: None,
            bootargs: d.bootargs.clone(),
        }
    }

    #[test]
    fn round_trips_through_the_hypervisor_parser() {
        let domains = two_domains();
        let out = with_domains(&host_dtb(true), &domains).unwrap();
        let parsed = bootcfg::parse_domains(&out).unwrap();
        assert_eq!(parsed, domains.iter().map(expected).collect::<Vec<_>>());
        // No module sits directly under /chosen, so there is no implicit loader domain.
        assert_eq!(bootcfg::parse_loader_domain(&out, 0x1000).unwrap(), None);
    }

    #[test]
    fn keeps_everything_the_host_dtb_had() {
        let host = host_dtb(true);
        let out = with_domains(&host, &two_domains()).unwrap();
        let mut tree = DeviceTree::from_fdt(&Fdt::new(&out).unwrap());
        let chosen = tree.root.child_mut("chosen").unwrap();
        assert!(chosen.remove_child("domU1").is_some() && chosen.remove_child("domU2").is_some());
        assert_eq!(tree, DeviceTree::from_fdt(&Fdt::new(&host).unwrap()));
        assert_eq!(Fdt::new(&out).unwrap().boot_cpuid_phys(), 1);
    }

    #[test]
    fn writes_the_bindings_exact_form() {
        let out = with_domains(&host_dtb(true), &two_domains()).unwrap();
        let fdt = Fdt::new(&out).unwrap();
        let value = |path: &str, name: &str| {
            let node = fdt.find_node(path).unwrap_or_else(|| panic!("{path}"));
            node.property(name).unwrap_or_else(|| panic!("{path} {name}")).value().to_vec()
        };
        let cells = |v: &[u32]| v.iter().flat_map(|c| c.to_be_bytes()).collect::<Vec<_>>();
        assert_eq!(value("/chosen/domU1", "compatible"), b"xen,domain\0");
        assert_eq!(value("/chosen/domU1", "#address-cells"), cells(&[2]));
        assert_eq!(value("/chosen/domU1", "#size-cells"), cells(&[2]));
        assert_eq!(value("/chosen/domU1", "memory"), cells(&[0, 0x4_0000]));
        assert_eq!(value("/chosen/domU1", "cpus"), cells(&[2]));
        assert_eq!(value("/chosen/domU1", "vpl011"), b"");
        assert!(fdt.find_node("/chosen/domU2").unwrap().property("vpl011").is_none());
        let kernel = "/chosen/domU1/module@4a000000";
        assert_eq!(value(kernel, "compatible"), b"multiboot,kernel\0multiboot,module\0");
        assert_eq!(value(kernel, "reg"), cells(&[0, 0x4a00_0000, 0, 0x20_0000]));
        assert_eq!(value(kernel, "bootargs"), b"console=ttyAMA0 init=/bin/sh\0");
        let ramdisk = "/chosen/domU1/module@4b000000";
        assert_eq!(value(ramdisk, "compatible"), b"multiboot,ramdisk\0multiboot,module\0");
        assert_eq!(value("/chosen/domU2/module@140000000", "reg"), cells(&[1, 0x4000_0000, 0, 0x20_0000]));
    }

    #[test]
    fn creates_chosen_when_the_host_has_none() {
        let out = with_domains(&host_dtb(false), &[spec("domU1", 0x4a00_0000)]).unwrap();
        assert_eq!(bootcfg::parse_domains(&out).unwrap(), [expected(&spec("domU1", 0x4a00_0000))]);
    }

    #[test]
    fn accepts_a_padded_file() {
        let mut host = host_dtb(true);
        host.extend_from_slice(&[0; 100]);
        assert!(with_domains(&host, &[spec("domU1", 0x4a00_0000)]).is_ok());
    }

    #[test]
    fn rejects_bad_input() {
        let host = host_dtb(true);
        let bad = |d: DomainSpec| with_domains(&host, &[d]).is_err();
        assert!(with_domains(b"not a dtb", &[]).is_err());
        assert!(with_domains(&host, &[spec("domU1", 0x4a00_0000), spec("domU1", 0x5000_0000)]).is_err());
        assert!(bad(spec("has space", 0x4a00_0000)));
        assert!(bad(spec("a-name-longer-than-thirty-one-chars", 0x4a00_0000)));
        assert!(bad(DomainSpec { cpus: 0, ..spec("domU1", 0x4a00_0000) }));
        assert!(bad(DomainSpec { memory_kib: 0, ..spec("domU1", 0x4a00_0000) }));
        assert!(bad(DomainSpec { kernel: Module { addr: 0x4a00_0000, size: 0 }, ..spec("domU1", 0) }));
        assert!(bad(DomainSpec { kernel: Module { addr: u64::MAX, size: 2 }, ..spec("domU1", 0) }));
        assert!(bad(DomainSpec { bootargs: Some("a\0b".to_string()), ..spec("domU1", 0x4a00_0000) }));
        // A domain named like an existing /chosen child would silently replace it.
        let configured = with_domains(&host, &[spec("domU1", 0x4a00_0000)]).unwrap();
        assert!(with_domains(&configured, &[spec("domU1", 0x5000_0000)]).is_err());
    }

    /// Runs `dtc` with `args` on `input`; returns its stdout and stderr. `dtc` is an external
    /// tool, so its absence fails the test loudly (`apt-get install device-tree-compiler`)
    /// unless `XHV_SKIP_DTC=1` opts out explicitly.
    fn dtc(args: &[&str], input: &[u8]) -> Option<(Vec<u8>, String)> {
        if std::env::var_os("XHV_SKIP_DTC").is_some_and(|v| v == "1") {
            eprintln!("XHV_SKIP_DTC=1: skipping the dtc cross-check");
            return None;
        }
        let mut child = Command::new("dtc")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("dtc not found: apt-get install device-tree-compiler (or set XHV_SKIP_DTC=1)");
        child.stdin.take().unwrap().write_all(input).unwrap();
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "dtc {args:?} failed: {stderr}");
        Some((out.stdout, stderr))
    }

    /// `dtc` decompiles the output cleanly, and shows the binding's form.
    #[test]
    fn dtc_reads_the_output() {
        let out = with_domains(&host_dtb(true), &two_domains()).unwrap();
        let Some((dts, warnings)) = dtc(&["-I", "dtb", "-O", "dts"], &out) else { return };
        assert_eq!(warnings, "", "dtc warned");
        let dts = String::from_utf8(dts).unwrap();
        for line in [
            "domU1 {",
            "compatible = \"xen,domain\";",
            "#address-cells = <0x02>;",
            "memory = <0x00 0x40000>;",
            "vpl011;",
            "module@4a000000 {",
            "compatible = \"multiboot,kernel\\0multiboot,module\";",
            "reg = <0x00 0x4a000000 0x00 0x200000>;",
            "bootargs = \"console=ttyAMA0 init=/bin/sh\";",
            "reg = <0x01 0x40000000 0x00 0x200000>;",
            "stdout-path = \"/pl011@9000000\";",
            "/memreserve/ 0x0000000048000000 0x0000000000001000;",
        ] {
            assert!(dts.lines().any(|l| same_dts_line(l, line)), "no `{line}` in:\n{dts}");
        }
    }

    /// dtc versions differ in whitespace and in how they print string lists (1.6 joins them
    /// with `\0` inside one pair of quotes, later ones with `", "`).
    fn same_dts_line(got: &str, want: &str) -> bool {
        got.split_whitespace().collect::<Vec<_>>().join(" ").replace("\", \"", "\\0") == want
    }

    /// A configuration written by hand the way Xen's documentation shows it (`#size-cells` of
    /// 1, three-cell `reg`, 0x-prefixed unit addresses), compiled by `dtc`, parses as meant.
    #[test]
    fn parses_a_hand_written_xen_config_compiled_by_dtc() {
        let source = r#"
            /dts-v1/;
            / {
                #address-cells = <2>;
                #size-cells = <2>;
                chosen {
                    stdout-path = "/pl011@9000000";
                    domU1 {
                        compatible = "xen,domain";
                        #address-cells = <0x2>;
                        #size-cells = <0x1>;
                        memory = <0 131072>;
                        cpus = <2>;
                        vpl011;
                        module@0x4a000000 {
                            compatible = "multiboot,kernel", "multiboot,module";
                            reg = <0x0 0x4a000000 0xffffff>;
                            bootargs = "console=ttyAMA0 init=/bin/sh";
                        };
                        module@0x4b000000 {
                            compatible = "multiboot,ramdisk", "multiboot,module";
                            reg = <0x0 0x4b000000 0xffffff>;
                        };
                    };
                    domU2 {
                        compatible = "xen,domain";
                        #address-cells = <1>;
                        #size-cells = <1>;
                        memory = <65536>;
                        cpus = <1>;
                        xhv,sched-weight = <512>;
                        module@4c000000 {
                            compatible = "xen,linux-zimage", "xen,multiboot-module";
                            reg = <0x4c000000 0xffffff>;
                        };
                    };
                };
            };
        "#;
        let Some((dtb, _)) = dtc(&["-q", "-I", "dts", "-O", "dtb"], source.as_bytes()) else {
            return;
        };
        let module = |addr, size| Some(ModuleRef { addr, size });
        let want = [
            DomainConfig {
                name: "domU1".to_string(),
                cpus: 2,
                memory_kib: 131_072,
                vpl011: true,
                kernel: module(0x4a00_0000, 0xff_ffff),
                ramdisk: module(0x4b00_0000, 0xff_ffff),
                dtb: None,
                bootargs: Some("console=ttyAMA0 init=/bin/sh".to_string()),
            },
            DomainConfig {
                name: "domU2".to_string(),
                cpus: 1,
                memory_kib: 65_536,
                vpl011: false,
                kernel: module(0x4c00_0000, 0xff_ffff),
                ramdisk: None,
                dtb: None,
                bootargs: None,
            },
        ];
        assert_eq!(bootcfg::parse_domains(&dtb).unwrap(), want);
    }
}
