//! CPU pools and scheduler parameters from the boot DT.
//!
//! Xen's boot-time cpupool binding (docs/misc/arm/device-tree/cpupools.txt in Xen's tree):
//! a child of `/chosen` with `compatible = "xen,cpupool"` is a pool; `cpupool-cpus` lists
//! phandles of `/cpus` nodes (at least one), `cpupool-sched` optionally names its scheduler.
//! A `xen,domain` node names its pool with the `domain-cpupool` phandle. CPUs no pool names
//! and domains that name none belong to the boot CPU's pool (Xen's Pool-0); when no pool
//! holds the boot CPU, an implicit one is made of the CPUs left over, with the default
//! policy.
//!
//! What Xen's binding leaves to its toolstack is in properties of ours:
//! - on a `xen,domain` node: `xhv,sched-weight` (credit weight, 1..=65535, default 256) and
//!   `xhv,sched-cap` (credit cap in percent of one pCPU, 0 = none);
//! - on a `xen,cpupool` node whose scheduler is `arinc653`: `xhv,arinc653-major-frame-us`
//!   (the major frame, in microseconds) and `xhv,arinc653-windows`, a list of 5-cell
//!   entries `<&cpu start-us length-us &domain vcpu>`: the window opens `start-us` after
//!   the start of each major frame on that pCPU (one of the pool's) for `length-us`, for
//!   vCPU `vcpu` of the domain whose node the phandle names.
//!
//! Scheduler names: `credit`, `arinc653`, and ours `round-robin` (the default when a pool
//! names none, and when the DT has no pool at all). Xen's `credit2`, `rtds` and `null` are
//! refused with an error rather than silently replaced.

use super::{BootCfgError, Result, bad, compatible_with, missing, read_string, read_u32};
use crate::sched::SchedKind;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use dtoolkit::fdt::{Fdt, FdtNode};
use dtoolkit::{Node, Property};

/// Xen's domain capabilities (`capabilities` of a `xen,domain` node, Xen's
/// docs/misc/arm/device-tree/booting.txt): control, hardware, xenstore.
const DOMAIN_CAPS_CONTROL: u32 = 1 << 0;
const DOMAIN_CAPS_MASK: u32 = 0b111;

/// One ARINC 653 window as the DT gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WindowConfig {
    /// The pCPU: its index in the pool's `cpupool-cpus`.
    pub cpu: usize,
    pub start_ns: u64,
    pub len_ns: u64,
    /// The domain's node name (`domU1`).
    pub domain: String,
    pub vcpu: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Arinc653Config {
    pub major_frame_ns: u64,
    pub windows: Vec<WindowConfig>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolConfig {
    /// The node name, or `Pool-0` for the implicit pool.
    pub name: String,
    /// The `reg` of each of its CPU nodes, in `cpupool-cpus` order: the pool's pCPU `i` is
    /// `cpus[i]`.
    pub cpus: Vec<u64>,
    pub sched: SchedKind,
    pub arinc653: Option<Arinc653Config>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainSchedConfig {
    /// The domain's node name.
    pub domain: String,
    /// Index into [`SchedConfig::pools`].
    pub pool: usize,
    pub weight: Option<u16>,
    pub cap: Option<u16>,
    /// Xen's `capabilities` has DOMAIN_CAPS_CONTROL (bit 0): the control domain, which may
    /// use `sysctl`/`domctl` (the hardware and xenstore bits are accepted and mean nothing
    /// here).
    pub control: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchedConfig {
    pub pools: Vec<PoolConfig>,
    /// The pool holding the boot CPU.
    pub boot_pool: usize,
    /// One entry per `xen,domain` node, in DT order.
    pub domains: Vec<DomainSchedConfig>,
}

/// The pools and per-domain scheduling parameters of a boot DT.
pub fn parse_sched_config(dtb: &[u8]) -> Result<SchedConfig> {
    let fdt = super::open(dtb)?;
    sched_config(&fdt)
}

fn sched_config(fdt: &Fdt<'_>) -> Result<SchedConfig> {
    let boot_cpu = u64::from(fdt.boot_cpuid_phys());
    let all_cpus = cpu_regs(fdt)?;
    let mut pools = Vec::new();
    let mut pool_nodes = Vec::new();
    if let Some(chosen) = fdt.find_node("/chosen") {
        for node in chosen.children().filter(|n| compatible_with(n, &["xen,cpupool"])) {
            let path = format!("/chosen/{}", node.name());
            pools.push(pool(fdt, &node, &path)?);
            pool_nodes.push(phandle_of(&node));
        }
    }
    for (i, p) in pools.iter().enumerate() {
        for cpu in &p.cpus {
            if pools[..i].iter().any(|q| q.cpus.contains(cpu)) {
                return Err(BootCfgError::CpuInTwoPools { cpu: *cpu });
            }
        }
    }
    let boot_pool = match pools.iter().position(|p| p.cpus.contains(&boot_cpu)) {
        Some(i) => i,
        None => {
            let taken: Vec<u64> = pools.iter().flat_map(|p| p.cpus.iter().copied()).collect();
            let mut cpus: Vec<u64> = all_cpus.into_iter().filter(|c| !taken.contains(c)).collect();
            if !cpus.contains(&boot_cpu) {
                cpus.insert(0, boot_cpu);
            }
            pools.push(PoolConfig { name: "Pool-0".to_string(), cpus, sched: SchedKind::RoundRobin, arinc653: None });
            pool_nodes.push(None);
            pools.len() - 1
        }
    };
    let mut domains = Vec::new();
    if let Some(chosen) = fdt.find_node("/chosen") {
        for node in chosen.children().filter(|n| compatible_with(n, &["xen,domain"])) {
            let path = format!("/chosen/{}", node.name());
            let pool = match read_u32(&node, &path, "domain-cpupool")? {
                None => boot_pool,
                Some(ph) => pool_nodes.iter().position(|&p| p == Some(ph)).ok_or(BootCfgError::BadPhandle {
                    node: path.clone(),
                    property: "domain-cpupool",
                    phandle: ph,
                })?,
            };
            let weight = read_u16(&node, &path, "xhv,sched-weight")?;
            if weight == Some(0) {
                return Err(bad(&path, "xhv,sched-weight"));
            }
            let cap = read_u16(&node, &path, "xhv,sched-cap")?;
            let caps = read_u32(&node, &path, "capabilities")?.unwrap_or(0);
            if caps & !DOMAIN_CAPS_MASK != 0 {
                return Err(bad(&path, "capabilities"));
            }
            let control = caps & DOMAIN_CAPS_CONTROL != 0;
            domains.push(DomainSchedConfig { domain: node.name().to_string(), pool, weight, cap, control });
        }
    }
    Ok(SchedConfig { pools, boot_pool, domains })
}

fn pool(fdt: &Fdt<'_>, node: &FdtNode<'_>, path: &str) -> Result<PoolConfig> {
    let phandles = read_cells_list(node, path, "cpupool-cpus")?.ok_or_else(|| missing(path, "cpupool-cpus"))?;
    if phandles.is_empty() {
        return Err(bad(path, "cpupool-cpus"));
    }
    let mut cpus = Vec::new();
    for ph in phandles {
        let cpu = by_phandle(fdt, ph).filter(|(_, n)| is_cpu(n)).ok_or(BootCfgError::BadPhandle {
            node: path.to_string(),
            property: "cpupool-cpus",
            phandle: ph,
        })?;
        let reg = cpu_reg(&cpu.1, &cpu.0)?;
        if cpus.contains(&reg) {
            return Err(bad(path, "cpupool-cpus"));
        }
        cpus.push(reg);
    }
    let sched = match read_string(node, path, "cpupool-sched")? {
        None => SchedKind::RoundRobin,
        Some(name) => SchedKind::from_name(&name)
            .ok_or_else(|| BootCfgError::UnknownScheduler { node: path.to_string(), name })?,
    };
    let major = read_u32(node, path, "xhv,arinc653-major-frame-us")?;
    let windows = read_cells_list(node, path, "xhv,arinc653-windows")?;
    let arinc653 = match (sched, major, windows) {
        (SchedKind::Arinc653, Some(major), windows) => {
            Some(arinc653(fdt, path, &cpus, major, windows.unwrap_or_default())?)
        }
        (SchedKind::Arinc653, None, _) => return Err(missing(path, "xhv,arinc653-major-frame-us")),
        (_, Some(_), _) => return Err(bad(path, "xhv,arinc653-major-frame-us")),
        (_, None, Some(_)) => return Err(bad(path, "xhv,arinc653-windows")),
        (_, None, None) => None,
    };
    Ok(PoolConfig { name: node.name().to_string(), cpus, sched, arinc653 })
}

fn arinc653(fdt: &Fdt<'_>, path: &str, cpus: &[u64], major_us: u32, cells: Vec<u32>) -> Result<Arinc653Config> {
    const P: &str = "xhv,arinc653-windows";
    if major_us == 0 {
        return Err(bad(path, "xhv,arinc653-major-frame-us"));
    }
    if !cells.len().is_multiple_of(5) {
        return Err(bad(path, P));
    }
    let mut windows = Vec::new();
    for w in cells.chunks_exact(5) {
        let bad_ph = |phandle| BootCfgError::BadPhandle { node: path.to_string(), property: P, phandle };
        let (cpu_path, cpu_node) = by_phandle(fdt, w[0]).filter(|(_, n)| is_cpu(n)).ok_or(bad_ph(w[0]))?;
        let reg = cpu_reg(&cpu_node, &cpu_path)?;
        let cpu = cpus
            .iter()
            .position(|&c| c == reg)
            .ok_or(BootCfgError::CpuOutsidePool { node: path.to_string(), cpu: reg })?;
        let (_, dom) =
            by_phandle(fdt, w[3]).filter(|(_, n)| compatible_with(n, &["xen,domain"])).ok_or(bad_ph(w[3]))?;
        windows.push(WindowConfig {
            cpu,
            start_ns: u64::from(w[1]) * 1000,
            len_ns: u64::from(w[2]) * 1000,
            domain: dom.name().to_string(),
            vcpu: w[4],
        });
    }
    Ok(Arinc653Config { major_frame_ns: u64::from(major_us) * 1000, windows })
}

fn is_cpu(node: &FdtNode<'_>) -> bool {
    node.property("device_type").is_some_and(|p| p.value() == b"cpu\0")
}

/// The `reg` of every CPU node under `/cpus`.
fn cpu_regs(fdt: &Fdt<'_>) -> Result<Vec<u64>> {
    let Some(cpus) = fdt.find_node("/cpus") else { return Ok(Vec::new()) };
    cpus.children()
        .filter(is_cpu)
        .map(|n| {
            let path = format!("/cpus/{}", n.name());
            cpu_reg(&n, &path)
        })
        .collect()
}

/// A CPU node's `reg`: one or two cells (an MPIDR, an APIC id).
fn cpu_reg(node: &FdtNode<'_>, path: &str) -> Result<u64> {
    let prop = node.property("reg").ok_or_else(|| missing(path, "reg"))?;
    match prop.value().len() {
        4 | 8 => Ok(super::be_cells(prop.value())),
        _ => Err(bad(path, "reg")),
    }
}

fn phandle_of(node: &FdtNode<'_>) -> Option<u32> {
    let p = node.property("phandle").or_else(|| node.property("linux,phandle"))?;
    p.value_as::<u32>().ok()
}

/// The node whose `phandle` is `ph`, with its path (the tree walked depth first, 16 deep at most).
fn by_phandle<'a>(fdt: &Fdt<'a>, ph: u32) -> Option<(String, FdtNode<'a>)> {
    fn walk<'a>(node: FdtNode<'a>, path: String, ph: u32, depth: u32) -> Option<(String, FdtNode<'a>)> {
        if phandle_of(&node) == Some(ph) {
            return Some((path, node));
        }
        if depth == 0 {
            return None;
        }
        node.children().find_map(|c| {
            let p = format!("{}/{}", path.trim_end_matches('/'), c.name());
            walk(c, p, ph, depth - 1)
        })
    }
    if ph == 0 || ph == u32::MAX {
        return None;
    }
    walk(fdt.root(), "/".to_string(), ph, 16)
}

/// A property of big-endian 32-bit cells.
fn read_cells_list(node: &FdtNode<'_>, path: &str, property: &'static str) -> Result<Option<Vec<u32>>> {
    let Some(prop) = node.property(property) else { return Ok(None) };
    let v = prop.value();
    if !v.len().is_multiple_of(4) {
        return Err(bad(path, property));
    }
    Ok(Some(v.chunks_exact(4).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]])).collect()))
}

fn read_u16(node: &FdtNode<'_>, path: &str, property: &'static str) -> Result<Option<u16>> {
    match read_u32(node, path, property)? {
        None => Ok(None),
        Some(v) => u16::try_from(v).map(Some).map_err(|_| bad(path, property)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use vm_fdt::FdtWriter;

    /// Phandles of the test tree.
    const CPU0: u32 = 1;
    const CPU1: u32 = 2;
    const CPU2: u32 = 3;
    const POOL_A: u32 = 10;
    const POOL_B: u32 = 11;
    const DOM1: u32 = 20;
    const DOM2: u32 = 21;

    type Props = Vec<(&'static str, Vec<u8>)>;

    fn cells(v: &[u32]) -> Vec<u8> {
        v.iter().flat_map(|c| c.to_be_bytes()).collect()
    }

    fn s(v: &str) -> Vec<u8> {
        format!("{v}\0").into_bytes()
    }

    /// Three CPUs (reg 0, 1, 2), then `/chosen` with these pools and domains.
    fn dtb(pools: &[(&str, Props)], domains: &[(&str, Props)]) -> Vec<u8> {
        let mut w = FdtWriter::new().unwrap();
        let root = w.begin_node("").unwrap();
        let cpus = w.begin_node("cpus").unwrap();
        w.property_u32("#address-cells", 1).unwrap();
        w.property_u32("#size-cells", 0).unwrap();
        for (i, ph) in [CPU0, CPU1, CPU2].into_iter().enumerate() {
            let n = w.begin_node(&format!("cpu@{i}")).unwrap();
            w.property_string("device_type", "cpu").unwrap();
            w.property_u32("reg", i as u32).unwrap();
            w.property_u32("phandle", ph).unwrap();
            w.end_node(n).unwrap();
        }
        w.end_node(cpus).unwrap();
        let chosen = w.begin_node("chosen").unwrap();
        for (name, props) in pools {
            let n = w.begin_node(name).unwrap();
            w.property_string("compatible", "xen,cpupool").unwrap();
            for (k, v) in props {
                w.property(k, v).unwrap();
            }
            w.end_node(n).unwrap();
        }
        for (name, props) in domains {
            let n = w.begin_node(name).unwrap();
            w.property_string("compatible", "xen,domain").unwrap();
            for (k, v) in props {
                w.property(k, v).unwrap();
            }
            w.end_node(n).unwrap();
        }
        w.end_node(chosen).unwrap();
        w.end_node(root).unwrap();
        w.finish().unwrap()
    }

    fn pool_a() -> (&'static str, Props) {
        (
            "pool-a",
            vec![("phandle", cells(&[POOL_A])), ("cpupool-cpus", cells(&[CPU0])), ("cpupool-sched", s("credit"))],
        )
    }

    fn pool_b(extra: Props) -> (&'static str, Props) {
        let mut p = vec![
            ("phandle", cells(&[POOL_B])),
            ("cpupool-cpus", cells(&[CPU2, CPU1])),
            ("cpupool-sched", s("arinc653")),
            ("xhv,arinc653-major-frame-us", cells(&[30_000])),
        ];
        p.extend(extra);
        ("pool-b", p)
    }

    fn dom(ph: u32, extra: Props) -> Props {
        let mut p = vec![("phandle", cells(&[ph]))];
        p.extend(extra);
        p
    }

    #[test]
    fn xen_capabilities_mark_the_control_domain() {
        let caps = |v: u32| vec![("capabilities", cells(&[v]))];
        let blob = dtb(&[], &[("domU1", caps(1)), ("domU2", caps(0)), ("domU3", vec![]), ("domU4", caps(0b110))]);
        let c = parse_sched_config(&blob).unwrap();
        assert_eq!(c.domains.iter().map(|d| d.control).collect::<Vec<_>>(), [true, false, false, false]);
        let blob = dtb(&[], &[("domU1", caps(8))]);
        assert!(parse_sched_config(&blob).is_err(), "a capability Xen does not define");
    }

    #[test]
    fn xen_pools_with_our_weights_caps_and_arinc653_windows() {
        let windows = cells(&[CPU1, 0, 5000, DOM2, 0, CPU2, 5000, 10_000, DOM2, 1]);
        let blob = dtb(
            &[pool_a(), pool_b(vec![("xhv,arinc653-windows", windows)])],
            &[
                (
                    "domU1",
                    dom(
                        DOM1,
                        vec![
                            ("domain-cpupool", cells(&[POOL_A])),
                            ("xhv,sched-weight", cells(&[512])),
                            ("xhv,sched-cap", cells(&[50])),
                        ],
                    ),
                ),
                ("domU2", dom(DOM2, vec![("domain-cpupool", cells(&[POOL_B]))])),
                ("domU3", vec![]),
            ],
        );
        let c = parse_sched_config(&blob).unwrap();
        assert_eq!(c.boot_pool, 0);
        assert_eq!(
            c.pools[0],
            PoolConfig { name: "pool-a".into(), cpus: vec![0], sched: SchedKind::Credit, arinc653: None }
        );
        assert_eq!(c.pools[1].cpus, [2, 1], "pool pCPU i is the i-th of cpupool-cpus");
        assert_eq!(c.pools[1].sched, SchedKind::Arinc653);
        let a = c.pools[1].arinc653.as_ref().unwrap();
        assert_eq!(a.major_frame_ns, 30_000_000);
        assert_eq!(
            a.windows,
            [
                WindowConfig { cpu: 1, start_ns: 0, len_ns: 5_000_000, domain: "domU2".into(), vcpu: 0 },
                WindowConfig { cpu: 0, start_ns: 5_000_000, len_ns: 10_000_000, domain: "domU2".into(), vcpu: 1 },
            ]
        );
        assert_eq!(
            c.domains,
            [
                DomainSchedConfig { domain: "domU1".into(), pool: 0, weight: Some(512), cap: Some(50), control: false },
                DomainSchedConfig { domain: "domU2".into(), pool: 1, weight: None, cap: None, control: false },
                DomainSchedConfig { domain: "domU3".into(), pool: 0, weight: None, cap: None, control: false },
            ]
        );
    }

    #[test]
    fn without_pools_everything_is_in_an_implicit_round_robin_pool_0() {
        let c = parse_sched_config(&dtb(&[], &[("domU1", vec![])])).unwrap();
        assert_eq!(
            c.pools,
            [PoolConfig { name: "Pool-0".into(), cpus: vec![0, 1, 2], sched: SchedKind::RoundRobin, arinc653: None }]
        );
        assert_eq!(c.domains[0].pool, 0);
    }

    #[test]
    fn a_pool_without_the_boot_cpu_leaves_the_rest_to_pool_0() {
        let blob = dtb(&[pool_b(vec![])], &[("domU1", vec![])]);
        let c = parse_sched_config(&blob).unwrap();
        assert_eq!(c.boot_pool, 1);
        assert_eq!(c.pools[1].cpus, [0]);
        assert_eq!(c.pools[0].arinc653, Some(Arinc653Config { major_frame_ns: 30_000_000, windows: vec![] }));
    }

    #[test]
    fn bad_pools_are_errors() {
        let err =
            |pools: &[(&str, Props)], domains: &[(&str, Props)]| parse_sched_config(&dtb(pools, domains)).unwrap_err();
        let with = |mut p: (&'static str, Props), k: &'static str, v: Vec<u8>| {
            p.1.retain(|(n, _)| *n != k);
            p.1.push((k, v));
            p
        };
        assert_eq!(
            err(&[with(pool_a(), "cpupool-sched", s("credit2"))], &[]),
            BootCfgError::UnknownScheduler { node: "/chosen/pool-a".into(), name: "credit2".into() }
        );
        assert_eq!(
            err(&[with(pool_a(), "cpupool-cpus", cells(&[POOL_B]))], &[]),
            BootCfgError::BadPhandle { node: "/chosen/pool-a".into(), property: "cpupool-cpus", phandle: POOL_B }
        );
        assert_eq!(
            err(&[with(pool_a(), "cpupool-cpus", vec![])], &[]),
            BootCfgError::BadProperty { node: "/chosen/pool-a".into(), property: "cpupool-cpus" }
        );
        assert_eq!(
            err(&[pool_a(), with(pool_b(vec![]), "cpupool-cpus", cells(&[CPU0]))], &[]),
            BootCfgError::CpuInTwoPools { cpu: 0 }
        );
        assert_eq!(
            err(&[pool_a()], &[("domU1", vec![("domain-cpupool", cells(&[POOL_B]))])]),
            BootCfgError::BadPhandle { node: "/chosen/domU1".into(), property: "domain-cpupool", phandle: POOL_B }
        );
        assert_eq!(
            err(&[pool_a()], &[("domU1", vec![("xhv,sched-weight", cells(&[0]))])]),
            BootCfgError::BadProperty { node: "/chosen/domU1".into(), property: "xhv,sched-weight" }
        );
        assert_eq!(
            err(&[pool_a()], &[("domU1", vec![("xhv,sched-cap", cells(&[70_000]))])]),
            BootCfgError::BadProperty { node: "/chosen/domU1".into(), property: "xhv,sched-cap" }
        );
        let outside = cells(&[CPU0, 0, 1000, DOM1, 0]);
        assert_eq!(
            err(&[pool_b(vec![("xhv,arinc653-windows", outside)])], &[("domU1", dom(DOM1, vec![]))]),
            BootCfgError::CpuOutsidePool { node: "/chosen/pool-b".into(), cpu: 0 }
        );
        let not_a_domain = cells(&[CPU1, 0, 1000, POOL_A, 0]);
        assert_eq!(
            err(&[pool_a(), pool_b(vec![("xhv,arinc653-windows", not_a_domain)])], &[]),
            BootCfgError::BadPhandle {
                node: "/chosen/pool-b".into(),
                property: "xhv,arinc653-windows",
                phandle: POOL_A
            }
        );
        let short = cells(&[CPU1, 0, 1000, DOM1]);
        assert_eq!(
            err(&[pool_b(vec![("xhv,arinc653-windows", short)])], &[("domU1", dom(DOM1, vec![]))]),
            BootCfgError::BadProperty { node: "/chosen/pool-b".into(), property: "xhv,arinc653-windows" }
        );
        let mut no_frame = pool_b(vec![]);
        no_frame.1.retain(|(n, _)| *n != "xhv,arinc653-major-frame-us");
        assert_eq!(
            err(&[no_frame], &[]),
            BootCfgError::MissingProperty { node: "/chosen/pool-b".into(), property: "xhv,arinc653-major-frame-us" }
        );
        assert_eq!(
            err(&[with(pool_a(), "xhv,arinc653-major-frame-us", cells(&[100]))], &[]),
            BootCfgError::BadProperty { node: "/chosen/pool-a".into(), property: "xhv,arinc653-major-frame-us" }
        );
    }
}
