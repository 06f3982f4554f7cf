//! Booting a built hypervisor with a guest: QEMU for ARM, Bochs (VT-x) for x86_64.
//!
//! The emulator's console streams to the terminal (or only to a log, for tests) while it
//! runs; a run that outlives its timeout is killed and reported as such, never left hanging.

use crate::RunArgs;
use crate::arch::Arch;
use crate::build::{Built, workspace_root};
use anyhow::{Context, Result, bail};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Where QEMU's guest-loader places the guest kernel. QEMU puts its own DTB at
/// RAM + min(RAM/2, 128 MiB) = 0x4800_0000 for a raw `-kernel`, so stay clear of that.
const ARM_KERNEL_ADDR: u64 = 0x4A00_0000;

pub struct Boot<'a> {
    pub arch: Arch,
    pub built: &'a Built,
    pub kernel: PathBuf,
    pub args: RunArgs,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Echo {
    /// Copy the console to our stdout as it arrives.
    Stream,
    /// Keep it to ourselves (tests print one line per scenario).
    Quiet,
}

pub struct Outcome {
    /// The emulator's exit status; `None` when we killed it at the timeout.
    pub status: Option<i32>,
    pub console: String,
    pub elapsed: Duration,
}

impl Outcome {
    pub fn summary(&self) -> String {
        match self.status {
            None => format!("timed out after {:.1} s (emulator killed)", self.elapsed.as_secs_f64()),
            Some(c) => format!("emulator exited with status {c} after {:.1} s", self.elapsed.as_secs_f64()),
        }
    }

    /// What `cargo xtask run` exits with: the emulator's status, 124 on timeout.
    pub fn exit_code(&self) -> i32 {
        self.status.unwrap_or(124)
    }
}

pub fn boot(run: &Boot, echo: Echo) -> Result<Outcome> {
    match run.arch {
        Arch::Aarch64 | Arch::Armv7 => qemu_arm(run, echo),
        Arch::X86_64 => bochs(run, echo),
    }
}

fn qemu_arm(run: &Boot, echo: Echo) -> Result<Outcome> {
    let a = &run.args;
    let (binary, machine, cpu) = match run.arch {
        Arch::Aarch64 => ("qemu-system-aarch64", "virt,virtualization=on,gic-version=3", "cortex-a57"),
        _ => ("qemu-system-arm", "virt,virtualization=on,gic-version=2", "cortex-a15"),
    };
    let mut cmd = Command::new(binary);
    cmd.args(["-machine", machine, "-cpu", cpu, "-m", "1G", "-nographic", "-no-reboot", "-semihosting"])
        .args(["-smp", &a.smp.to_string()])
        .arg("-kernel")
        .arg(&run.built.hypervisor);
    let mut loader = format!("guest-loader,addr={ARM_KERNEL_ADDR:#x},kernel={}", qemu_opt(&run.kernel)?);
    if let Some(append) = &a.append {
        loader += &format!(",bootargs={}", append.replace(',', ",,"));
    }
    cmd.args(["-device", &loader]);
    if let Some(initrd) = &a.initrd {
        let after_kernel = ARM_KERNEL_ADDR + file_size(&run.kernel)?;
        let addr = (after_kernel + (2 << 20) - 1) & !((2 << 20) - 1);
        cmd.args(["-device", &format!("guest-loader,addr={addr:#x},initrd={}", qemu_opt(initrd)?)]);
    }
    if a.icount {
        cmd.args(["-icount", "shift=0,sleep=off", "-seed", "1", "-rtc", "clock=vm"]);
    }
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::inherit());
    announce(&cmd, echo);
    let mut child = cmd.spawn().with_context(|| format!("starting {binary} (run `cargo xtask setup`?)"))?;
    let stdout = child.stdout.take().unwrap();
    watch(child, Source::Pipe(pipe_reader(stdout)), echo, Duration::from_secs(a.timeout))
}

fn bochs(run: &Boot, echo: Echo) -> Result<Outcome> {
    if run.args.icount {
        eprintln!("xtask: --icount is a QEMU option; Bochs runs with `clock: sync=none`, already deterministic");
    }
    let out = &run.built.out_dir;
    let iso = grub_iso(run, out)?;
    let serial = out.join("serial.log");
    let _ = std::fs::remove_file(&serial);
    std::fs::write(&serial, b"")?;
    let qemu_dir = workspace_root().join("qemu/x86");
    let log = std::fs::File::create(out.join("bochs.log"))?;
    let mut cmd = Command::new("bochs");
    cmd.arg("-q")
        .arg("-f")
        .arg(qemu_dir.join("bochsrc"))
        .arg("-rc")
        .arg(qemu_dir.join("bochs.rc"))
        .arg(format!("cpu: count={}, ips=100000000, reset_on_triple_fault=0", run.args.smp.max(1)))
        .env("XHV_ISO", &iso)
        .env("XHV_SERIAL", &serial)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log));
    announce(&cmd, echo);
    let child = cmd.spawn().context("starting bochs (run `cargo xtask setup`?)")?;
    let outcome = watch(child, Source::File(serial, 0), echo, Duration::from_secs(run.args.timeout))?;
    if echo == Echo::Stream && outcome.status != Some(0) {
        eprintln!("xtask: Bochs' own log: {}", out.join("bochs.log").display());
    }
    Ok(outcome)
}

/// A GRUB multiboot2 ISO with the hypervisor and the guest kernel (and initrd) as modules.
fn grub_iso(run: &Boot, out: &Path) -> Result<PathBuf> {
    let root = out.join("iso");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(root.join("boot/grub"))?;
    std::fs::copy(&run.built.hypervisor, root.join("boot/hypervisor.elf"))?;
    std::fs::copy(&run.kernel, root.join("boot/kernel"))
        .with_context(|| format!("reading {}", run.kernel.display()))?;
    let mut modules = format!("  module2 /boot/kernel {}\n", run.args.append.as_deref().unwrap_or(""));
    if let Some(initrd) = &run.args.initrd {
        std::fs::copy(initrd, root.join("boot/initrd"))?;
        modules += "  module2 /boot/initrd initrd\n";
    }
    let cfg = format!(
        "set timeout=0\nset default=0\nmenuentry \"xhv\" {{\n  multiboot2 /boot/hypervisor.elf\n{modules}  boot\n}}\n"
    );
    std::fs::write(root.join("boot/grub/grub.cfg"), cfg)?;
    let iso = out.join("xhv.iso");
    let res = Command::new("grub-mkrescue").arg("-o").arg(&iso).arg(&root).output().context("running grub-mkrescue")?;
    if !res.status.success() {
        bail!("grub-mkrescue failed:\n{}", String::from_utf8_lossy(&res.stderr));
    }
    Ok(iso)
}

enum Source {
    Pipe(mpsc::Receiver<Vec<u8>>),
    /// A file the emulator appends to, and how far we have read it.
    File(PathBuf, u64),
}

impl Source {
    fn poll(&mut self) -> Vec<u8> {
        match self {
            Source::Pipe(rx) => rx.try_iter().flatten().collect(),
            Source::File(path, pos) => {
                let mut buf = Vec::new();
                if let Ok(mut f) = std::fs::File::open(&*path) {
                    use std::io::Seek;
                    if f.seek(std::io::SeekFrom::Start(*pos)).is_ok() {
                        let _ = f.read_to_end(&mut buf);
                    }
                }
                *pos += buf.len() as u64;
                buf
            }
        }
    }
}

fn pipe_reader(mut r: impl Read + Send + 'static) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = r.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    rx
}

/// Follow the console until the emulator exits or the timeout passes.
fn watch(mut child: Child, mut source: Source, echo: Echo, timeout: Duration) -> Result<Outcome> {
    let start = Instant::now();
    let mut console = Vec::new();
    let take = |bytes: Vec<u8>, console: &mut Vec<u8>| {
        if echo == Echo::Stream && !bytes.is_empty() {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(&bytes);
            let _ = out.flush();
        }
        console.extend(bytes);
    };
    let status = loop {
        take(source.poll(), &mut console);
        if let Some(st) = child.try_wait()? {
            break Some(st.code().unwrap_or(128));
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // The pipe may still hold the last lines.
    std::thread::sleep(Duration::from_millis(100));
    take(source.poll(), &mut console);
    Ok(Outcome { status, console: String::from_utf8_lossy(&console).into_owned(), elapsed: start.elapsed() })
}

fn announce(cmd: &Command, echo: Echo) {
    if echo == Echo::Stream {
        let args: Vec<_> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        eprintln!("xtask: {} {}", cmd.get_program().to_string_lossy(), args.join(" "));
    }
}

fn file_size(p: &Path) -> Result<u64> {
    Ok(std::fs::metadata(p).with_context(|| format!("reading {}", p.display()))?.len())
}

/// A path as a QEMU `-device` option value (commas would split the option).
fn qemu_opt(p: &Path) -> Result<String> {
    let s = p.canonicalize().with_context(|| format!("{} not found", p.display()))?.to_string_lossy().into_owned();
    Ok(s.replace(',', ",,"))
}
