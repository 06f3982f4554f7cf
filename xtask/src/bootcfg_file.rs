//! Hand-written boot configurations (`cargo xtask run --config F.dts`): Xen dom0less domain
//! nodes under `/chosen` whose modules name the image to load with `xen,uefi-binary` — the
//! binding's property for images a loader reads from disk — instead of a fixed `reg`. xtask
//! places each file, writes the `reg` a board's bootloader would, and boots the result.

use anyhow::{Context, Result, bail, ensure};
use dtoolkit::fdt::{Fdt, FdtNode};
use dtoolkit::model::{DeviceTree, DeviceTreeProperty};
use dtoolkit::{Node, Property};
use std::path::{Path, PathBuf};
use std::process::Command;

/// One `xen,domain` node of a configuration file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigDomain {
    pub name: String,
    pub cpus: u32,
    pub memory_kib: u64,
    pub vpl011: bool,
    pub kernel: PathBuf,
    pub bootargs: Option<String>,
    pub ramdisk: Option<PathBuf>,
}

/// Read `path` (`.dts`, compiled with `dtc`, or a `.dtb`); relative image paths are taken
/// from the file's own directory.
pub fn load(path: &Path) -> Result<Vec<ConfigDomain>> {
    let dtb = compile(path)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    parse(&dtb, dir).with_context(|| format!("boot configuration {}", path.display()))
}

/// A configuration for x86, where GRUB places every image: the same DT with each module's
/// `xen,uefi-binary` replaced by `mb-index`, its number in the multiboot2 module chain (Xen's
/// hyperlaunch binding; see hypervisor/src/bootcfg.rs). The DT itself is module 0 and
/// `images[i]` module `i + 1`; domains naming one file share its module.
pub struct Indexed {
    pub domains: Vec<ConfigDomain>,
    pub dtb: Vec<u8>,
    pub images: Vec<PathBuf>,
}

/// [`load`], then the DT rewritten to name its images by module index.
pub fn load_indexed(path: &Path) -> Result<Indexed> {
    let source = compile(path)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let domains = parse(&source, dir).with_context(|| format!("boot configuration {}", path.display()))?;
    let (dtb, images) = by_index(&source, dir).with_context(|| format!("boot configuration {}", path.display()))?;
    Ok(Indexed { domains, dtb, images })
}

/// The rewrite [`load_indexed`] describes; properties and nodes it does not touch are kept.
pub fn by_index(dtb: &[u8], dir: &Path) -> Result<(Vec<u8>, Vec<PathBuf>)> {
    let fdt = Fdt::new(dtb).context("not a valid device tree")?;
    let mut tree = DeviceTree::from_fdt(&fdt);
    let chosen = tree.root.child_mut("chosen").context("no /chosen node")?;
    let mut images: Vec<PathBuf> = Vec::new();
    for domain in chosen.children_mut() {
        let is_domain =
            domain.property("compatible").is_some_and(|p| p.value().split(|&b| b == 0).any(|c| c == b"xen,domain"));
        if !is_domain {
            continue;
        }
        for module in domain.children_mut() {
            let Some(name) = module.property("xen,uefi-binary").and_then(|p| first_string(p.value())) else {
                continue;
            };
            let file = dir.join(name);
            let at = match images.iter().position(|f| *f == file) {
                Some(at) => at,
                None => {
                    images.push(file);
                    images.len() - 1
                }
            };
            let index = u32::try_from(at + 1).context("too many modules")?;
            module.remove_property("xen,uefi-binary");
            module.add_property(DeviceTreeProperty::new("mb-index", index)?);
        }
    }
    ensure!(!images.is_empty(), "no module names an image with xen,uefi-binary");
    Ok((tree.to_dtb(), images))
}

/// The first string of a string-list value.
fn first_string(value: &[u8]) -> Option<String> {
    let first = value.split(|&b| b == 0).next()?;
    (!first.is_empty()).then(|| std::str::from_utf8(first).ok().map(String::from)).flatten()
}

/// The blob of a `.dts` (through `dtc`) or `.dtb` file.
pub fn compile(path: &Path) -> Result<Vec<u8>> {
    Ok(if path.extension().is_some_and(|e| e == "dts") {
        let out = Command::new("dtc")
            .args(["-q", "-I", "dts", "-O", "dtb"])
            .arg(path)
            .output()
            .context("running dtc (run `cargo xtask setup`)")?;
        ensure!(out.status.success(), "dtc rejected {}:\n{}", path.display(), String::from_utf8_lossy(&out.stderr));
        out.stdout
    } else {
        std::fs::read(path).with_context(|| format!("reading {}", path.display()))?
    })
}

/// Every `/chosen` child with `compatible = "xen,domain"`, in file order.
pub fn parse(dtb: &[u8], dir: &Path) -> Result<Vec<ConfigDomain>> {
    let fdt = Fdt::new(dtb).context("not a valid device tree")?;
    let chosen = fdt.root().child("chosen").context("no /chosen node")?;
    let mut domains = Vec::new();
    for node in chosen.children() {
        if !strings(&node, "compatible").iter().any(|c| c == "xen,domain") {
            continue;
        }
        domains.push(domain(&node, dir).with_context(|| format!("/chosen/{}", node.name()))?);
    }
    ensure!(!domains.is_empty(), "no `xen,domain` node under /chosen");
    Ok(domains)
}

fn domain(node: &FdtNode<'_>, dir: &Path) -> Result<ConfigDomain> {
    let name = node.name().to_string();
    let cpus = u32::try_from(number(node, "cpus")?.unwrap_or(1)).context("cpus")?;
    let memory_kib = number(node, "memory")?.context("no `memory` (KiB)")?;
    ensure!(cpus > 0 && memory_kib > 0, "cpus and memory must be non-zero");
    let (mut kernel, mut bootargs, mut ramdisk) = (None, None, None);
    for module in node.children() {
        let compatible = strings(&module, "compatible");
        let file = strings(&module, "xen,uefi-binary").into_iter().next();
        let Some(file) = file else { continue };
        let file = dir.join(file);
        if compatible.iter().any(|c| c == "multiboot,kernel") {
            kernel = Some(file);
            bootargs = strings(&module, "bootargs").into_iter().next();
        } else if compatible.iter().any(|c| c == "multiboot,ramdisk") {
            ramdisk = Some(file);
        } else {
            bail!("module {} is neither multiboot,kernel nor multiboot,ramdisk", module.name());
        }
    }
    let kernel = kernel.context("no multiboot,kernel module with xen,uefi-binary")?;
    Ok(ConfigDomain { name, cpus, memory_kib, vpl011: node.property("vpl011").is_some(), kernel, bootargs, ramdisk })
}

/// A property of one or two big-endian cells.
fn number(node: &FdtNode<'_>, name: &str) -> Result<Option<u64>> {
    let Some(p) = node.property(name) else { return Ok(None) };
    let v = p.value();
    Ok(Some(match v.len() {
        4 => u64::from(u32::from_be_bytes(v.try_into().unwrap())),
        8 => u64::from_be_bytes(v.try_into().unwrap()),
        n => bail!("`{name}` has {n} bytes, expected one or two cells"),
    }))
}

/// A string-list property (empty when absent or not text).
fn strings(node: &FdtNode<'_>, name: &str) -> Vec<String> {
    node.property(name)
        .map(|p| {
            p.value()
                .split(|&b| b == 0)
                .filter(|s| !s.is_empty())
                .filter_map(|s| std::str::from_utf8(s).ok().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `dtc` reading the source from stdin: tests running in parallel share no file.
    fn compile(dts: &str) -> Vec<u8> {
        use std::io::Write;
        let mut child = Command::new("dtc")
            .args(["-q", "-I", "dts", "-O", "dtb", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("dtc installed");
        child.stdin.take().unwrap().write_all(dts.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "dtc failed");
        out.stdout
    }

    const TWO: &str = r#"/dts-v1/;
/ {
    chosen {
        #address-cells = <2>;
        #size-cells = <2>;
        domU1 {
            compatible = "xen,domain";
            #address-cells = <2>;
            #size-cells = <2>;
            cpus = <2>;
            memory = <0 0x40000>;
            vpl011;
            module@1 {
                compatible = "multiboot,kernel", "multiboot,module";
                xen,uefi-binary = "Image";
                bootargs = "console=hvc0";
            };
            module@2 {
                compatible = "multiboot,ramdisk", "multiboot,module";
                xen,uefi-binary = "/abs/initrd.gz";
            };
        };
        domU2 {
            compatible = "xen,domain";
            #address-cells = <2>;
            #size-cells = <2>;
            memory = <0x20000>;
            module@1 {
                compatible = "multiboot,kernel", "multiboot,module";
                xen,uefi-binary = "other/Image";
            };
        };
        not-a-domain { compatible = "something,else"; };
    };
};
"#;

    #[test]
    fn reads_domains_and_resolves_files_against_the_config_directory() {
        let domains = parse(&compile(TWO), Path::new("/cfg")).unwrap();
        assert_eq!(
            domains,
            [
                ConfigDomain {
                    name: "domU1".into(),
                    cpus: 2,
                    memory_kib: 0x40000,
                    vpl011: true,
                    kernel: "/cfg/Image".into(),
                    bootargs: Some("console=hvc0".into()),
                    ramdisk: Some("/abs/initrd.gz".into()),
                },
                ConfigDomain {
                    name: "domU2".into(),
                    cpus: 1,
                    memory_kib: 0x20000,
                    vpl011: false,
                    kernel: "/cfg/other/Image".into(),
                    bootargs: None,
                    ramdisk: None,
                },
            ]
        );
    }

    /// The x86 rewrite: `mb-index` instead of `xen,uefi-binary`, one module per file, and
    /// the hypervisor's own parser reads the result against a chain of those modules.
    #[test]
    fn names_images_by_module_index_for_x86() {
        // The hypervisor wants `cpus` on every domain (xtask's own reading defaults it).
        let shared =
            TWO.replace("other/Image", "Image").replace("memory = <0x20000>;", "memory = <0x20000>; cpus = <1>;");
        let (dtb, images) = by_index(&compile(&shared), Path::new("/cfg")).unwrap();
        assert_eq!(images, [PathBuf::from("/cfg/Image"), PathBuf::from("/abs/initrd.gz")]);
        let chain = [(0x10_0000, 0x1000), (0x20_0000, 0x8000), (0x40_0000, 0x9000)]
            .map(|(addr, size)| hypervisor::bootcfg::ModuleRef { addr, size });
        let got = hypervisor::bootcfg::parse_multiboot_domains(&dtb, &chain, 0).unwrap();
        let summary: Vec<_> =
            got.iter().map(|d| (d.name.as_str(), d.cpus, d.memory_kib, d.kernel, d.ramdisk, d.vpl011)).collect();
        assert_eq!(
            summary,
            [
                ("domU1", 2, 0x40000, Some(chain[1]), Some(chain[2]), true),
                ("domU2", 1, 0x20000, Some(chain[1]), None, false),
            ]
        );
        assert_eq!(got[0].bootargs.as_deref(), Some("console=hvc0"));
        // Nothing names an image: nothing to put on the ISO.
        let none = TWO.replace("xen,uefi-binary", "xen,other");
        assert!(by_index(&compile(&none), Path::new("/")).is_err());
    }

    /// The configurations the x86 scenarios boot rewrite and parse.
    #[test]
    fn the_shipped_two_domain_configs_work_by_index() {
        let dir = crate::build::workspace_root().join("qemu/configs");
        for file in ["evtchn-pingpong.dts", "grant-copy.dts", "simd-isolation-two-domains.dts"] {
            let source = std::fs::read_to_string(dir.join(file)).unwrap();
            let (dtb, images) = by_index(&compile(&source), Path::new("/g")).unwrap();
            assert_eq!(images.len(), 1, "{file}: both domains share one guest image");
            let chain = [(0x10_0000, 0x1000), (0x20_0000, 0x8000)]
                .map(|(addr, size)| hypervisor::bootcfg::ModuleRef { addr, size });
            let got = hypervisor::bootcfg::parse_multiboot_domains(&dtb, &chain, 0).unwrap();
            let sizes: Vec<_> = got.iter().map(|d| (d.name.as_str(), d.memory_kib >> 10)).collect();
            assert_eq!(sizes, [("domU1", 16), ("domU2", 24)], "{file}");
        }
    }

    #[test]
    fn rejects_configs_without_what_a_domain_needs() {
        let no_kernel = TWO.replace("multiboot,kernel", "multiboot,nothing");
        assert!(parse(&compile(&no_kernel), Path::new("/")).is_err());
        let no_memory = TWO.replace("memory = <0 0x40000>;", "");
        assert!(parse(&compile(&no_memory), Path::new("/")).is_err());
        let none = TWO.replace("\"xen,domain\"", "\"xen,other\"");
        assert!(parse(&compile(&none), Path::new("/")).is_err());
        assert!(parse(b"not a dtb", Path::new("/")).is_err());
    }
}
