//! Hand-written boot configurations (`cargo xtask run --config F.dts`): Xen dom0less domain
//! nodes under `/chosen` whose modules name the image to load with `xen,uefi-binary` — the
//! binding's property for images a loader reads from disk — instead of a fixed `reg`. xtask
//! places each file, writes the `reg` a board's bootloader would, and boots the result.

use anyhow::{Context, Result, bail, ensure};
use dtoolkit::fdt::{Fdt, FdtNode};
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
    let dtb = if path.extension().is_some_and(|e| e == "dts") {
        let out = Command::new("dtc")
            .args(["-q", "-I", "dts", "-O", "dtb"])
            .arg(path)
            .output()
            .context("running dtc (run `cargo xtask setup`)")?;
        ensure!(out.status.success(), "dtc rejected {}:\n{}", path.display(), String::from_utf8_lossy(&out.stderr));
        out.stdout
    } else {
        std::fs::read(path).with_context(|| format!("reading {}", path.display()))?
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    parse(&dtb, dir).with_context(|| format!("boot configuration {}", path.display()))
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
