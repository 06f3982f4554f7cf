//! Guest images from Debian's archive: the cloud kernels and a busybox initramfs.
//!
//! Packages are fetched with `apt-get download` (whatever version the archive offers now),
//! unpacked with `dpkg-deb` into a cache outside the repository, and reused after that.

use crate::arch::Arch;
use crate::build::workspace_root;
use anyhow::{Context, Result, bail, ensure};
use flate2::{Compression, write::GzEncoder};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A Linux guest ready to boot: kernel image and initramfs.
pub struct LinuxGuest {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
}

/// Which of Debian's kernel series a Linux guest boots. The same metapackage names both: its
/// bookworm version depends on a 6.1 kernel package, its bookworm-backports version on a 6.12
/// one; we pick the package of the series from the metapackage's dependencies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum KernelSeries {
    /// Debian 12's own kernel (`linux-image-6.1.0-*`).
    #[default]
    V6_1,
    /// bookworm-backports' kernel (`linux-image-6.12.*`; amd64's is a zstd-compressed bzImage).
    V6_12,
}

impl KernelSeries {
    pub const ALL: [KernelSeries; 2] = [KernelSeries::V6_1, KernelSeries::V6_12];

    /// Prefix of the versioned kernel package we want from the metapackage's dependencies.
    fn package_prefix(self) -> &'static str {
        match self {
            KernelSeries::V6_1 => "linux-image-6.1.0-",
            KernelSeries::V6_12 => "linux-image-6.12.",
        }
    }

    /// What names of scenarios and cache directories of this series end with: nothing for
    /// 6.1 (the default, cached in `<cache>/<arch>/`), `-6.12` for 6.12.
    pub fn suffix(self) -> &'static str {
        match self {
            KernelSeries::V6_1 => "",
            KernelSeries::V6_12 => "-6.12",
        }
    }
}

/// Debian's names for one architecture's guest packages.
struct Packages {
    /// Metapackage whose dependencies name the current kernel package of each series.
    kernel_meta: &'static str,
    busybox: &'static str,
    /// The kernel file inside the package's /boot.
    kernel_file: &'static str,
}

fn packages(arch: Arch) -> Packages {
    match arch {
        Arch::Aarch64 => Packages {
            kernel_meta: "linux-image-cloud-arm64:arm64",
            busybox: "busybox-static:arm64",
            kernel_file: "vmlinuz-",
        },
        Arch::Armv7 => Packages {
            kernel_meta: "linux-image-armmp-lpae:armhf",
            busybox: "busybox-static:armhf",
            kernel_file: "vmlinuz-",
        },
        Arch::X86_64 => {
            Packages { kernel_meta: "linux-image-cloud-amd64", busybox: "busybox-static", kernel_file: "vmlinuz-" }
        }
    }
}

/// Debian's architecture of 32-bit x86 PVH guests, and the metapackage of its kernel (the
/// 686-pae flavour is built with CONFIG_XEN_PVH).
pub const I386_ARCH: &str = "i386";
pub const I386_KERNEL_META: &str = "linux-image-686-pae:i386";

fn packages_i386() -> Packages {
    Packages { kernel_meta: I386_KERNEL_META, busybox: "busybox-static:i386", kernel_file: "vmlinuz-" }
}

/// The metapackage naming `arch`'s guest kernel (apt must know it before anything is fetched).
pub fn kernel_metapackage(arch: Arch) -> &'static str {
    packages(arch).kernel_meta
}

/// Where unpacked packages and built initramfs images live between runs.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XHV_CACHE") {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("xhv")
}

/// Fetch (once) and return Debian's kernel and our busybox initramfs for `arch`.
/// Concurrent runs share the cache: the first to get here downloads and builds, the others
/// wait for it (and say so).
pub fn linux_guest(arch: Arch) -> Result<LinuxGuest> {
    linux_guest_series(arch, KernelSeries::V6_1)
}

/// The same with the kernel of `series`: 6.12 from bookworm-backports is cached in
/// `<cache>/<arch>-6.12/`, beside the same busybox initramfs as 6.1's (in `<cache>/<arch>/`).
pub fn linux_guest_series(arch: Arch, series: KernelSeries) -> Result<LinuxGuest> {
    linux_guest_of(&packages(arch), arch.name(), series)
}

/// Debian's i386 (686-pae, XZ-compressed bzImage) kernel and an i386 busybox initramfs: a
/// 32-bit PVH guest for the x86_64 hypervisor.
pub fn linux_guest_i386() -> Result<LinuxGuest> {
    linux_guest_of(&packages_i386(), I386_ARCH, KernelSeries::V6_1)
}

/// The initramfs in `<cache>/<cache_name>/`, the kernel of `series` in
/// `<cache>/<cache_name><suffix>/`, each directory under its own lock (never both at once).
fn linux_guest_of(pk: &Packages, cache_name: &str, series: KernelSeries) -> Result<LinuxGuest> {
    let kernel_in = |dir: &Path| -> Result<PathBuf> {
        let kernel_root = unpacked(dir, &current_kernel_package(pk.kernel_meta, series)?)?;
        find_in(&kernel_root.join("boot"), pk.kernel_file)
    };
    let (dir, lock) = locked_cache(cache_name)?;
    let same_dir = series.suffix().is_empty();
    let kernel = if same_dir { Some(kernel_in(&dir)?) } else { None };
    let busybox_root = unpacked(&dir, pk.busybox)?;
    let initrd = dir.join("initramfs.cpio.gz");
    build_initramfs(&busybox_root.join("bin/busybox"), &initrd)?;
    drop(lock);
    let kernel = match kernel {
        Some(kernel) => kernel,
        None => {
            let (kernel_dir, _lock) = locked_cache(&format!("{cache_name}{}", series.suffix()))?;
            kernel_in(&kernel_dir)?
        }
    };
    Ok(LinuxGuest { kernel, initrd })
}

/// `<cache>/<name>/`, created if need be, and the exclusive lock on it (held until dropped).
pub(crate) fn locked_cache(name: &str) -> Result<(PathBuf, std::fs::File)> {
    let dir = cache_dir().join(name);
    std::fs::create_dir_all(&dir)?;
    let lock = lock(&dir.join(".lock"))?;
    Ok((dir, lock))
}

/// Whether apt's lists name a kernel of `series` behind `arch`'s metapackage (6.12: only
/// once bookworm-backports is among apt's sources and its lists are fetched).
pub fn kernel_known(arch: Arch, series: KernelSeries) -> bool {
    current_kernel_package(packages(arch).kernel_meta, series).is_ok()
}

/// The unpacked kernel package `metapackage` (e.g. `linux-image-arm64:arm64`) points at
/// today, for its board DTBs (fetched and unpacked once into the cache).
pub fn kernel_package_root(arch: Arch, metapackage: &'static str) -> Result<PathBuf> {
    let (dir, _lock) = locked_cache(arch.name())?;
    let package = current_kernel_package(metapackage, KernelSeries::V6_1)?;
    unpacked(&dir, &package)
}

/// A file inside a Debian package for `arch` (fetched and unpacked once into the cache).
pub fn package_file(arch: Arch, package: &str, file: &str) -> Result<PathBuf> {
    let (dir, _lock) = locked_cache(arch.name())?;
    let path = unpacked(&dir, package)?.join(file);
    ensure!(path.exists(), "{package} has no {file}");
    Ok(path)
}

/// An exclusive lock on `path`, held until the file is dropped.
fn lock(path: &Path) -> Result<std::fs::File> {
    let file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    if file.try_lock().is_err() {
        eprintln!("xtask: waiting for another xtask to finish with {}", path.parent().unwrap_or(path).display());
        file.lock().with_context(|| format!("locking {}", path.display()))?;
    }
    Ok(file)
}

/// The download size apt's index gives for `package`, for the progress line.
fn download_size(package: &str) -> Option<u64> {
    let out = Command::new("apt-cache").args(["show", "--no-all-versions", package]).output().ok()?;
    String::from_utf8_lossy(&out.stdout).lines().find_map(|l| l.strip_prefix("Size: ")?.trim().parse().ok())
}

/// The versioned kernel package of `series` the archive's metapackage points at today (apt
/// lists the metapackage's versions newest first: the newest of the series wins).
fn current_kernel_package(kernel_meta: &str, series: KernelSeries) -> Result<String> {
    let show = Command::new("apt-cache").args(["show", kernel_meta]).output().context("running apt-cache")?;
    let text = String::from_utf8_lossy(&show.stdout);
    let arch_suffix = kernel_meta.split_once(':').map(|(_, a)| format!(":{a}")).unwrap_or_default();
    kernel_dependency(&text, series).map(|name| format!("{name}{arch_suffix}")).with_context(|| {
        let prefix = series.package_prefix();
        let source = if series == KernelSeries::V6_1 { "the foreign architectures" } else { "bookworm-backports" };
        format!("apt-cache offers no {prefix}* behind {kernel_meta}: run `cargo xtask setup` (it adds {source})")
    })
}

/// The first kernel package of `series` among the `Depends:` of `apt-cache show`'s output.
fn kernel_dependency(apt_show: &str, series: KernelSeries) -> Option<String> {
    apt_show
        .lines()
        .filter_map(|l| l.strip_prefix("Depends: "))
        .flat_map(|deps| deps.split(',').map(|d| d.trim().split(' ').next().unwrap_or("").to_owned()))
        .find(|name| name.starts_with(series.package_prefix()))
}

/// Download and unpack a package into `dir/<name>` unless that is already there.
fn unpacked(dir: &Path, package: &str) -> Result<PathBuf> {
    let name = package.replace(':', "_");
    let root = dir.join(&name);
    if root.join(".complete").exists() {
        return Ok(root);
    }
    let downloads = dir.join("debs");
    std::fs::create_dir_all(&downloads)?;
    let size = download_size(package).map(|b| format!(" ({:.1} MiB)", b as f64 / 1048576.0)).unwrap_or_default();
    eprintln!("xtask: downloading {package}{size} from Debian's archive into {}", dir.display());
    let st = Command::new("apt-get")
        .current_dir(&downloads)
        .args(["download", package])
        .status()
        .context("running apt-get download")?;
    if !st.success() {
        bail!("apt-get download {package} failed");
    }
    let base = package.split(':').next().unwrap_or(package);
    let deb = std::fs::read_dir(&downloads)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().is_some_and(|f| f.to_string_lossy().starts_with(&format!("{base}_"))))
        .max()
        .with_context(|| format!("apt-get download left no {base}_*.deb"))?;
    let _ = std::fs::remove_dir_all(&root);
    let st = Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root).status().context("running dpkg-deb")?;
    if !st.success() {
        bail!("dpkg-deb -x {} failed", deb.display());
    }
    std::fs::write(root.join(".complete"), b"")?;
    Ok(root)
}

fn find_in(dir: &Path, prefix: &str) -> Result<PathBuf> {
    std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.file_name().is_some_and(|f| f.to_string_lossy().starts_with(prefix)))
        .with_context(|| format!("no {prefix}* in {}", dir.display()))
}

/// A gzipped newc cpio: busybox, our `/init`, the mount points and `/dev/console`.
fn build_initramfs(busybox: &Path, out: &Path) -> Result<()> {
    let init = std::fs::read(workspace_root().join("qemu/initramfs/init"))?;
    let busybox = std::fs::read(busybox).with_context(|| format!("reading {}", busybox.display()))?;
    let mut cpio = Newc::default();
    for d in ["bin", "dev", "proc", "sys", "tmp"] {
        cpio.entry(d, 0o040755, 0, &[]);
    }
    cpio.entry("dev/console", 0o020600, (5 << 8) | 1, &[]);
    cpio.entry("bin/busybox", 0o100755, 0, &busybox);
    cpio.entry("bin/sh", 0o120777, 0, b"busybox");
    cpio.entry("init", 0o100755, 0, &init);
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(&cpio.finish())?;
    let image = gz.finish()?;
    // A run that started earlier may be reading the previous image: replace it in one step.
    if std::fs::read(out).is_ok_and(|old| old == image) {
        return Ok(());
    }
    eprintln!(
        "xtask: initramfs ({:.1} MiB, busybox + qemu/initramfs/init) -> {}",
        image.len() as f64 / 1048576.0,
        out.display()
    );
    let tmp = out.with_extension(format!("tmp.{}", std::process::id()));
    std::fs::write(&tmp, image)?;
    std::fs::rename(&tmp, out)?;
    Ok(())
}

/// The "newc" cpio format Linux unpacks initramfs from: ASCII-hex headers, 4-byte padding.
#[derive(Default)]
pub struct Newc {
    out: Vec<u8>,
    ino: u32,
}

impl Newc {
    /// Add a file, directory, device (`rdev` = major << 8 | minor) or symlink (data = target).
    pub fn entry(&mut self, name: &str, mode: u32, rdev: u32, data: &[u8]) {
        self.ino += 1;
        // ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor namesize check
        let fields =
            [self.ino, mode, 0, 0, 1, 0, data.len() as u32, 0, 0, rdev >> 8, rdev & 0xff, name.len() as u32 + 1, 0];
        self.out.extend_from_slice(b"070701");
        for f in fields {
            self.out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, 0, &[]);
        self.out
    }

    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_series_picks_its_own_kernel_behind_the_metapackage() {
        let show = "Package: linux-image-cloud-arm64\nVersion: 6.12.95-1~bpo12+1\n\
                    Depends: linux-image-6.12.95+deb12-cloud-arm64 (= 6.12.95-1~bpo12+1)\n\n\
                    Package: linux-image-cloud-arm64\nVersion: 6.1.192-3\n\
                    Depends: linux-image-6.1.0-57-cloud-arm64 (= 6.1.192-3)\n";
        let got = |series| kernel_dependency(show, series);
        assert_eq!(got(KernelSeries::V6_1).as_deref(), Some("linux-image-6.1.0-57-cloud-arm64"));
        assert_eq!(got(KernelSeries::V6_12).as_deref(), Some("linux-image-6.12.95+deb12-cloud-arm64"));
        assert_eq!(kernel_dependency("Depends: linux-image-6.1.0-57-cloud-arm64\n", KernelSeries::V6_12), None);
    }

    #[test]
    fn newc_headers_are_aligned_and_self_describing() {
        let mut c = Newc::default();
        c.entry("init", 0o100755, 0, b"#!/bin/sh\n");
        let out = c.finish();
        assert_eq!(&out[..6], b"070701");
        // 6 magic + 13*8 header fields before namesize; namesize "init\0" = 5.
        assert_eq!(&out[6 + 11 * 8..6 + 12 * 8], b"00000005");
        assert_eq!(&out[6 + 6 * 8..6 + 7 * 8], b"0000000a");
        // Header (110) + name (5) padded to 116, then data (10) padded to 128.
        assert_eq!(&out[116..126], b"#!/bin/sh\n");
        assert_eq!(&out[128..134], b"070701");
        assert_eq!(out.len() % 4, 0);
        assert!(out.windows(10).any(|w| w == b"TRAILER!!!"));
    }
}
