//! Bare-metal glue: heap, panic handler, banner, building and running the boot domains.

extern crate alloc;

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use arch::ExitStatus;
use arch::boot::{BootInfo, GuestSetup, ModuleKind, Region};
use arch::cpu;
use core::alloc::{GlobalAlloc, Layout};
use core::ptr::NonNull;
use core::sync::atomic::AtomicU32;
use hypervisor::bootcfg::{self, BootCfgError, DomainConfig, ModuleRef, SchedConfig};
use hypervisor::domain::{Domain, DomainEnd};
use hypervisor::domain_build;
use hypervisor::frames::FrameAllocator;
use hypervisor::guest_dt::{self, GuestArch};
use hypervisor::page::{GuestRam, HostPage, PAGE_SIZE};
use hypervisor::sched::{PoolScheduler, Pools, SchedKind, apply_boot_config, plan_pools};
use hypervisor::version::{HV_NAME, HV_VERSION, XEN_MAJOR, XEN_MINOR};
use hypervisor::vpl011::Vpl011;
use hypervisor::{hvlog, log, run};
use linked_list_allocator::{Heap, LockedHeap};
use zerocopy::FromBytes;

#[global_allocator]
static HEAP: Heaps = Heaps { own: LockedHeap::empty(), lent: spin::Mutex::new(None) };

/// The hypervisor's heap, plus memory lent to it for a while (`hypervisor::heap_loan`):
/// what the own heap cannot serve comes from the loan while there is one.
struct Heaps {
    own: LockedHeap,
    lent: spin::Mutex<Option<Loan>>,
}

struct Loan {
    heap: Heap,
    start: usize,
    end: usize,
}

// SAFETY: both heaps hand out disjoint, suitably aligned blocks from memory they own, and a
// block goes back to the heap whose range holds it.
unsafe impl GlobalAlloc for Heaps {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's layout.
        let own = unsafe { self.own.alloc(layout) };
        if !own.is_null() {
            return own;
        }
        match self.lent.lock().as_mut() {
            Some(loan) => loan.heap.allocate_first_fit(layout).map_or(core::ptr::null_mut(), |p| p.as_ptr()),
            None => core::ptr::null_mut(),
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if let Some(loan) = self.lent.lock().as_mut()
            && (loan.start..loan.end).contains(&(ptr as usize))
            && let Some(block) = NonNull::new(ptr)
        {
            // SAFETY: `ptr` lies in the loan, so the loan's heap handed it out with `layout`.
            unsafe { loan.heap.deallocate(block, layout) };
            return;
        }
        // SAFETY: not from the loan, so from the own heap, with `layout`.
        unsafe { self.own.dealloc(ptr, layout) }
    }
}

/// `hypervisor::heap_loan`'s lender: `region` serves allocations while `f` runs.
fn lend(region: &mut [u8], f: &mut dyn FnMut()) {
    let (start, len) = (region.as_mut_ptr(), region.len());
    let mut heap = Heap::empty();
    // SAFETY: `region` is exclusively borrowed for this call and used by nothing but this
    // heap until the loan ends below, after `f` (the only user) has returned.
    unsafe { heap.init(start, len) };
    *HEAP.lent.lock() = Some(Loan { heap, start: start as usize, end: start as usize + len });
    f();
    let loan = HEAP.lent.lock().take();
    let still_used = loan.map_or(0, |l| l.heap.used());
    // Memory still allocated there would be reused under a live allocation: stop here.
    assert!(still_used == 0, "{still_used} bytes lent to the heap were not given back");
}

/// Domains' event-channel tables live here: one with all 2^17 FIFO ports takes ~3 MiB.
const HEAP_SIZE: usize = 16 << 20;
/// RAM of the domain made of guest-loader modules (ARM), whose configuration names no size.
const LOADER_DOMAIN_KIB: u64 = 256 << 10;
/// RAM of each multiboot-module domain (x86), which has no configuration yet.
const MULTIBOOT_DOMAIN_KIB: u64 = 64 << 10;
/// Domain RAM is taken in 2 MiB blocks so stage-2/EPT can map it with block entries.
const DOMAIN_RAM_ALIGN: u64 = 2 << 20;

/// Entered by arch once the boot CPU runs at the hypervisor's privilege with a console.
#[unsafe(no_mangle)]
pub fn hv_main(boot: &BootInfo) -> ! {
    log::set_sink(cpu::console_write);
    init_heap();
    banner(boot);
    let status = run_boot_domains(boot);
    hvlog!("stopping: {}", if status == ExitStatus::Success { "all domains powered off" } else { "failure" });
    cpu::exit_emulator(status)
}

fn init_heap() {
    static HEAP_SPACE: spin::Mutex<[u8; HEAP_SIZE]> = spin::Mutex::new([0; HEAP_SIZE]);
    let mut space = HEAP_SPACE.lock();
    let start = space.as_mut_ptr();
    // SAFETY: the heap region is a static array that nothing else references: the lock
    // guard is leaked below so the memory stays exclusively the allocator's forever.
    unsafe { HEAP.own.lock().init(start, HEAP_SIZE) };
    core::mem::forget(space);
    hypervisor::heap_loan::set_lender(lend);
}

fn banner(boot: &BootInfo) {
    hvlog!("{} {} - Xen {}.{} guest ABI microhypervisor", HV_NAME, HV_VERSION, XEN_MAJOR, XEN_MINOR);
    hvlog!("arch {}, running at {}, {} CPU(s)", cpu::ARCH_NAME, boot.privilege, boot.cpu_count);
    for r in boot.ram() {
        hvlog!("RAM {:#012x}-{:#012x} ({} MiB)", r.start, r.end(), r.size >> 20);
    }
    if !boot.features.is_empty() {
        hvlog!("virtualization: {}", boot.features);
    }
}

fn run_boot_domains(boot: &BootInfo) -> ExitStatus {
    let (configs, sched_cfg) = match boot_configs(boot) {
        Ok(configs) => configs,
        Err(why) => {
            hvlog!("{}", why);
            return ExitStatus::Failure;
        }
    };
    // dom0less modules sit inside `/chosen/<domain>`, where arch does not look: keep the
    // domains' RAM off every module before any is allocated (and zeroed).
    let mut reserved: Vec<Region> = boot.reserved().to_vec();
    reserved.extend(configs.iter().flat_map(modules).map(|m| Region { start: m.addr, size: m.size }));
    let mut frames = FrameAllocator::new(boot.ram(), &reserved);
    let mut failed = false;
    let mut domains = Vec::new();
    // Each CPU pool runs its domains on those of its CPUs that came up able to run guests
    // (round robin on every such CPU without a configuration).
    let (pools, plan) = plan_pools(sched_cfg.as_ref(), &up_cpus(), cpu::this_cpu(), SLICE_NS);
    let mut run_loop = run::RunLoop::new(pools);
    run_loop.set_cpus(plan.loop_cpus.len());
    let mut names: Vec<&str> = Vec::new();
    let started = run::Host::now_ns(&mut BootCpu);
    let mut largest = 0;
    for (i, cfg) in configs.iter().enumerate() {
        // Domain ids count from 1, as Xen's dom0less domUs do (this hypervisor has no dom0).
        let id = u16::try_from(i + 1).unwrap_or(u16::MAX);
        match build(id, cfg, boot, &mut frames) {
            Ok((domain, vcpu0, overhead)) => {
                largest = largest.max(overhead);
                run_loop.sched_mut().place(domains.len(), plan.pool_of(sched_cfg.as_ref(), &cfg.name));
                run_loop.add_domain(domain.vcpus.len(), vcpu0);
                domains.push(domain);
                names.push(&cfg.name);
            }
            Err(why) => {
                hvlog!("d{}: {}: not built: {}", id, cfg.name, why);
                failed = true;
            }
        }
    }
    if configs.len() > 1 {
        let took_us = run::Host::now_ns(&mut BootCpu).saturating_sub(started) / 1000;
        hvlog!(
            "built {} of {} domains in {}.{:03} ms; hypervisor memory per domain beyond its RAM: at most {} KiB",
            domains.len(),
            configs.len(),
            took_us / 1000,
            took_us % 1000,
            largest.div_ceil(1024)
        );
    }
    // Only a DT that speaks of pools or scheduler parameters gets its pool logged.
    let explicit = |c: &&SchedConfig| {
        c.pools.len() > 1
            || c.pools[c.boot_pool].sched != SchedKind::RoundRobin
            || c.domains.iter().any(|d| d.weight.is_some() || d.cap.is_some())
    };
    if let Some(cfg) = sched_cfg.as_ref().filter(explicit) {
        plan.notes.iter().for_each(|n| hvlog!("{}", n));
        log_pools(run_loop.sched_mut(), &plan.loop_cpus);
        let now = run::Host::now_ns(&mut BootCpu);
        match apply_boot_config(run_loop.sched_mut(), &plan, cfg, &names, now) {
            Ok(notes) => notes.iter().for_each(|n| hvlog!("{}", n)),
            Err(why) => {
                hvlog!("boot configuration rejected: {}", why);
                return ExitStatus::Failure;
            }
        }
    }
    for pool in run_loop.sched_mut().pools() {
        if let PoolScheduler::Arinc653(a) = &pool.sched
            && let Some((schedule, epoch)) = a.schedule()
        {
            hvlog!(
                "arinc653: major frame {} us on {} pCPU(s), first frame at {} ns",
                schedule.major_frame_ns / 1000,
                schedule.cpus.len(),
                epoch
            );
        }
    }
    // Xen's DOMAIN_CAPS_CONTROL marks the control domain, the one that may use sysctl/domctl.
    if let Some(cfg) = sched_cfg.as_ref() {
        for (d, name) in names.iter().enumerate() {
            if cfg.domains.iter().any(|c| c.domain == *name && c.control) {
                domains[d].privileged = true;
                hvlog!("d{}: {}: control domain (capabilities: DOMAIN_CAPS_CONTROL)", domains[d].id, name);
            }
        }
    }
    let ids: Vec<u16> = domains.iter().map(|d| d.id).collect();
    domains.iter_mut().for_each(|d| d.known_domains.clone_from(&ids));
    let ends = run_domains(run_loop, domains, plan.loop_cpus);
    if failed || ends.contains(&DomainEnd::Crashed) { ExitStatus::Failure } else { ExitStatus::Success }
}

/// Each pool's name, policy and CPUs, as the boot log shows them.
fn log_pools(pools: &Pools, loop_cpus: &[usize]) {
    for pool in pools.pools() {
        let cpus: Vec<String> = pool.cpus().iter().map(|&c| format!("CPU{}", loop_cpus[c])).collect();
        hvlog!(
            "cpupool {}: scheduler {}, {} CPU(s) (Pool-{}: {})",
            pool.name,
            pool.sched.kind().name(),
            cpus.len(),
            pool.id,
            cpus.join(", ")
        );
    }
}

/// (logical CPU, `reg`/APIC id) of each CPU up and able to run guests, the boot CPU among
/// them.
fn up_cpus() -> Vec<(usize, u64)> {
    let me = cpu::this_cpu();
    (0..arch::cpu::MAX_CPUS)
        .filter(|&c| c == me || cpu::cpu_ready(c))
        .filter_map(|c| Some((c, cpu::cpu_affinity(c)?)))
        .collect()
}

/// What every pCPU's loop shares (behind the core lock), and which logical CPU is which
/// pCPU of the pool.
struct Shared {
    /// The core lock: the run loop (slots, scheduler) and every domain. Lock order (see
    /// `run::run_cpu`): core lock, then a domain's `DomainSpace` lock (arch, innermost but
    /// for the leaves); the log line lock and the heap lock are leaves taken anywhere. Held
    /// for scheduling decisions and exit handling, never while a guest runs or a pCPU idles.
    core: spin::Mutex<run::Core<'static, cpu::Vcpu, Pools>>,
    cpus: Vec<usize>,
}

/// Published by the boot CPU once the domains are built; the secondaries wait for it.
static SHARED: spin::Once<Shared> = spin::Once::new();

/// Every pCPU of every pool runs the core's loop over the one run loop and the domains;
/// the boot CPU returns when every domain has ended.
fn run_domains(
    mut run_loop: run::RunLoop<cpu::Vcpu, Pools>,
    mut domains: Vec<Domain>,
    cpus: Vec<usize>,
) -> Vec<DomainEnd> {
    let list: Vec<String> = cpus.iter().map(|c| format!("CPU{c}")).collect();
    hvlog!("SMP host: {} pCPU(s) run guests ({})", cpus.len(), list.join(", "));
    run_loop.start(&mut domains, cpu::now_ns());
    // They live as long as the hypervisor: every pCPU's loop reaches them.
    let run_loop = alloc::boxed::Box::leak(alloc::boxed::Box::new(run_loop));
    let domains = domains.leak();
    let shared = SHARED.call_once(|| Shared { core: spin::Mutex::new(run::Core { run_loop, domains }), cpus });
    let me = cpu::this_cpu();
    let index = shared.cpus.iter().position(|&c| c == me).unwrap_or(0);
    run::run_cpu(index, &shared.core, &mut PoolCpu { cpus: &shared.cpus })
}

/// A secondary CPU, up at EL2 (aarch64) or in HYP mode (ARMv7) with its GIC interface, or
/// in VMX root / with SVM on and its local APIC set up (x86_64): once the domains are built
/// it runs the core's loop if it is in a pool (only CPUs able to run guests are in `Shared::cpus`), else it
/// stays parked.
#[unsafe(no_mangle)]
pub fn hv_secondary_main(me: usize) -> ! {
    let shared = SHARED.wait();
    if let Some(index) = shared.cpus.iter().position(|&c| c == me) {
        hvlog!("CPU{}: running guests as pCPU {}", me, index);
        run::run_cpu(index, &shared.core, &mut PoolCpu { cpus: &shared.cpus });
    }
    loop {
        cpu::idle_until(None);
    }
}

/// One pCPU of the loop as its clock, idler and kicker.
struct PoolCpu<'a> {
    /// The logical CPU of each pCPU of the pool.
    cpus: &'a [usize],
}

impl run::Host for PoolCpu<'_> {
    fn now_ns(&mut self) -> u64 {
        cpu::now_ns()
    }
    fn idle(&mut self, deadline_ns: Option<u64>) {
        cpu::idle_until(deadline_ns);
    }
    fn kick(&mut self, pcpu: usize) {
        if let Some(&c) = self.cpus.get(pcpu) {
            cpu::kick(c);
        }
    }
}

/// How long a vCPU runs before another runnable one gets the CPU.
const SLICE_NS: u64 = 1_000_000;

/// The boot CPU as the run loop's clock and idler.
struct BootCpu;

impl run::Host for BootCpu {
    fn now_ns(&mut self) -> u64 {
        cpu::now_ns()
    }
    fn idle(&mut self, deadline_ns: Option<u64>) {
        cpu::idle_until(deadline_ns);
    }
}

/// The domains to build: from the device tree (dom0less nodes and guest-loader modules) on
/// ARM; on x86 from the boot configuration module when there is one (dom0less nodes whose
/// modules name multiboot2 modules by index), else one domain per kernel module.
fn boot_configs(boot: &BootInfo) -> Result<(Vec<DomainConfig>, Option<SchedConfig>), String> {
    if let Some(dtb) = boot.dtb {
        let blob = cpu::phys_slice(dtb.start, dtb.size);
        return match bootcfg::parse_boot_config(blob, LOADER_DOMAIN_KIB) {
            Ok(configs) => Ok((configs, Some(sched_config(blob)?))),
            Err(BootCfgError::NoDomains) => Err("no guest kernel module was given: nothing to run".into()),
            Err(e) => Err(format!("boot configuration rejected: {e}")),
        };
    }
    let mods = boot.modules();
    if let Some(config) = mods.iter().position(|m| m.kind == ModuleKind::DeviceTree) {
        let chain: Vec<ModuleRef> =
            mods.iter().map(|m| ModuleRef { addr: m.region.start, size: m.region.size }).collect();
        let region = mods[config].region;
        hvlog!("boot configuration: module {} ({} bytes)", config, region.size);
        let blob = cpu::phys_slice(region.start, region.size);
        return match bootcfg::parse_multiboot_domains(blob, &chain, config) {
            Ok(configs) => Ok((configs, Some(sched_config(blob)?))),
            Err(BootCfgError::NoDomains) => Err("the boot configuration names no domain: nothing to run".into()),
            Err(e) => Err(format!("boot configuration rejected: {e}")),
        };
    }
    let configs: Vec<DomainConfig> = mods
        .iter()
        .enumerate()
        .filter(|(_, m)| m.kind == ModuleKind::Kernel)
        .enumerate()
        .map(|(i, (at, m))| DomainConfig {
            name: format!("module{i}"),
            cpus: multiboot_domain_cpus(boot),
            memory_kib: multiboot_domain_kib(m),
            vpl011: false,
            kernel: Some(ModuleRef { addr: m.region.start, size: m.region.size }),
            // A ramdisk module right after a kernel is that kernel's.
            ramdisk: mods
                .get(at + 1)
                .filter(|r| r.kind == ModuleKind::Ramdisk)
                .map(|r| ModuleRef { addr: r.region.start, size: r.region.size }),
            dtb: None,
            bootargs: core::str::from_utf8(m.cmdline()).ok().filter(|s| !s.is_empty()).map(String::from),
        })
        .collect();
    if configs.is_empty() {
        return Err("no guest kernel module was given: nothing to run".into());
    }
    Ok((configs, None))
}

/// The CPU pools and scheduler parameters of the boot configuration.
fn sched_config(blob: &[u8]) -> Result<SchedConfig, String> {
    bootcfg::parse_sched_config(blob).map_err(|e| format!("boot configuration rejected: {e}"))
}

/// x86 multiboot domains: one vCPU per CPU of the machine (QEMU's `-smp`), as many as the
/// backend can start.
#[cfg(target_arch = "x86_64")]
fn multiboot_domain_cpus(boot: &BootInfo) -> u32 {
    u32::try_from(boot.cpu_count.clamp(1, cpu::max_vcpus())).unwrap_or(1)
}
#[cfg(not(target_arch = "x86_64"))]
fn multiboot_domain_cpus(_boot: &BootInfo) -> u32 {
    1
}

/// x86 multiboot domains: Linux gets more RAM than the test guests.
fn multiboot_domain_kib(m: &arch::boot::Module) -> u64 {
    if cfg!(target_arch = "x86_64") && m.region.start != 0 {
        hypervisor::pvh::memory_kib(cpu::phys_slice(m.region.start, m.region.size.min(4096)))
    } else {
        MULTIBOOT_DOMAIN_KIB
    }
}

fn modules(cfg: &DomainConfig) -> impl Iterator<Item = ModuleRef> {
    [cfg.kernel, cfg.ramdisk, cfg.dtb].into_iter().flatten()
}

/// The bytes of a module, if the bootloader really put it in RAM.
fn module_bytes(boot: &BootInfo, m: ModuleRef, what: &str) -> Result<&'static [u8], String> {
    let inside = boot.ram().iter().any(|r| r.start <= m.addr && m.end() <= r.end());
    if !inside {
        return Err(format!("{what} module at {:#x}+{:#x} is not inside RAM", m.addr, m.size));
    }
    Ok(cpu::phys_slice(m.addr, m.size))
}

/// Build domain `id` from `cfg`: its RAM, image, Xen pages and vCPU 0; and the bytes of
/// hypervisor memory (heap and pages) it took beyond its RAM.
fn build(
    id: u16,
    cfg: &DomainConfig,
    boot: &BootInfo,
    frames: &mut FrameAllocator,
) -> Result<(Domain, cpu::Vcpu, usize), String> {
    let heap_before = HEAP.own.lock().used();
    let kernel_ref = cfg.kernel.ok_or("no kernel module")?;
    let kernel = module_bytes(boot, kernel_ref, "kernel")?;
    let initrd = cfg.ramdisk.map(|m| module_bytes(boot, m, "ramdisk")).transpose()?;
    let ram_size = cfg
        .memory_kib
        .checked_mul(1024)
        .and_then(|b| b.checked_next_multiple_of(DOMAIN_RAM_ALIGN))
        .ok_or("memory size overflows")?;
    let started = run::Host::now_ns(&mut BootCpu);
    let ram_host = frames
        .alloc(ram_size, DOMAIN_RAM_ALIGN)
        .ok_or_else(|| format!("out of memory for its {} MiB of RAM", ram_size >> 20))?;
    hvlog!(
        "d{}: {}: {} MiB RAM at host {:#x}, guest {:#x}",
        id,
        cfg.name,
        ram_size >> 20,
        ram_host,
        cpu::GUEST_RAM_BASE
    );
    zero_domain_ram(ram_host, ram_size);
    let (entry, boot_arg, xapic_at_reset) = place_image(id, cfg, ram_host, ram_size, kernel, initrd)?;
    let nr_vcpus = u16::try_from(cfg.cpus).map_err(|_| "too many vCPUs")?;
    #[cfg(target_arch = "x86_64")]
    if usize::from(nr_vcpus) > cpu::max_vcpus() {
        return Err(format!("{} vCPUs asked for, the backend starts at most {}", nr_vcpus, cpu::max_vcpus()));
    }
    let setup = GuestSetup {
        ram_host,
        ram_guest: cpu::GUEST_RAM_BASE,
        ram_size,
        entry,
        boot_arg,
        domain_id: id,
        vcpu_id: 0,
        nr_vcpus,
        xapic_at_reset,
    };
    hvlog!("d{}: entry {:#x}", id, setup.entry);
    let mut vcpu = cpu::Vcpu::new(&setup)?;
    // Guests that report instants of their virtual counter (sched-probe) are related to the
    // hypervisor's clock through this.
    #[cfg(target_arch = "aarch64")]
    hvlog!("d{}: virtual counter offset {} ticks", id, vcpu.counter_offset());
    let mut domain = Domain::with_vcpus(id, usize::from(nr_vcpus));
    domain.set_ram(setup.ram_guest, ram_size);
    domain.ram = Some(GuestRam { base: setup.ram_guest, host: ram_host, words: ram_words(ram_host, ram_size) });
    let page_bytes = attach_xen_pages(&mut domain, &mut vcpu, frames);
    // The PL011 is an ARM device: an x86 configuration that asks for one (a DT written for
    // ARM) boots without it.
    match (cfg.vpl011, guest_arch()) {
        (true, Some(_)) => domain.vpl011 = Some(Vpl011::new()),
        (true, None) => hvlog!("d{}: `vpl011` ignored: no PL011 on x86", id),
        (false, _) => {}
    }
    let took_us = run::Host::now_ns(&mut BootCpu).saturating_sub(started) / 1000;
    let overhead = HEAP.own.lock().used().saturating_sub(heap_before) + page_bytes;
    if took_us > 0 {
        // Zeroing its RAM dominates: worth seeing when tuning boot time.
        hvlog!(
            "d{}: built in {}.{:03} ms; hypervisor memory beyond its RAM: {} KiB",
            id,
            took_us / 1000,
            took_us % 1000,
            overhead.div_ceil(1024)
        );
    }
    Ok((domain, vcpu, overhead))
}

/// The domain's RAM as atomic words: the guest and the hypervisor both update its FIFO event
/// pages, so the hypervisor never holds plain references into it.
fn ram_words(ram_host: u64, ram_size: u64) -> &'static [AtomicU32] {
    let bytes: &'static mut [u8] = cpu::phys_slice_mut(ram_host, ram_size);
    match <[AtomicU32]>::mut_from_bytes(bytes) {
        Ok(words) => words,
        Err(_) => panic!("domain RAM at {ram_host:#x} is not word-aligned"),
    }
}

/// Put kernel, initrd and boot data (device tree on ARM, PVH start info and ACPI on x86) into
/// the domain's zeroed RAM. Returns the guest-physical entry point and boot argument.
fn place_image(
    id: u16,
    cfg: &DomainConfig,
    ram_host: u64,
    ram_size: u64,
    kernel: &[u8],
    initrd: Option<&[u8]>,
) -> Result<(u64, u64, bool), String> {
    let ram = cpu::phys_slice_mut(ram_host, ram_size);
    let Some(arch) = guest_arch() else {
        let cmdline = cfg.bootargs.as_deref().unwrap_or("");
        let l = hypervisor::pvh::build(ram, kernel, initrd, cmdline, cfg.cpus).map_err(|e| e.to_string())?;
        if let Some((start, end)) = l.initrd {
            hvlog!("d{}: initrd at {:#x}-{:#x}", id, start, end);
        }
        hvlog!("d{}: PVH start info at {:#x}, kernel ends at {:#x}", id, l.start_info, l.kernel_end);
        if l.kernel_32bit {
            hvlog!("d{}: 32-bit kernel: local APICs start in xAPIC mode", id);
        }
        return Ok((cpu::GUEST_RAM_BASE + l.entry, l.start_info, l.kernel_32bit));
    };
    let layout = domain_build::build_arm(cfg, arch, guest_gic(), cpu::GUEST_RAM_BASE, ram, kernel, initrd)
        .map_err(|e| e.to_string())?;
    // What the builder wrote over the zeroes sits in our caches: the guest starts with its
    // MMU off (non-cacheable) and must find it in memory.
    #[cfg(any(target_arch = "aarch64", target_arch = "arm"))]
    for (start, end) in layout.written() {
        cpu::flush_phys(ram_host + (start - cpu::GUEST_RAM_BASE), end - start);
    }
    if let Some((start, end)) = layout.initrd {
        hvlog!("d{}: initrd at {:#x}-{:#x}", id, start, end);
    }
    hvlog!("d{}: device tree at {:#x} ({} bytes), {} vCPU(s)", id, layout.dtb, layout.dtb_size, cfg.cpus);
    if cfg.vpl011 {
        hvlog!("d{}: vpl011 at {:#x}, SPI {}", id, guest_dt::VPL011_BASE, guest_dt::VPL011_SPI);
    }
    Ok((layout.entry, layout.dtb, false))
}

/// shared_info, grant frames and the PV console ring, from the hypervisor's free RAM; the
/// bytes they took.
fn attach_xen_pages(domain: &mut Domain, vcpu: &mut cpu::Vcpu, frames: &mut FrameAllocator) -> usize {
    let console_ring =
        if guest_arch().is_some() { guest_dt::GUEST_CONSOLE_RING } else { hypervisor::pvh::CONSOLE_RING_GPA };
    let mut taken = 0;
    let mut page = || {
        let hpa = frames.alloc(PAGE_SIZE as u64, PAGE_SIZE as u64)?;
        taken += PAGE_SIZE;
        // Zeroed in memory too: the guest may map it and read it with its MMU off.
        zero_domain_ram(hpa, PAGE_SIZE as u64);
        let data = cpu::phys_slice_mut(hpa, PAGE_SIZE as u64);
        Some(HostPage { hpa, data })
    };
    if let Err(why) = domain.setup_xen_pages(vcpu, console_ring, &mut page) {
        // A guest that never maps them (the test guests, a backend without `map_host_page`)
        // runs fine; Linux stops at its first memory_op then.
        hvlog!("d{}: no Xen shared pages: {}", domain.id, why);
    }
    // x86: Xen system time is the platform clock; the guest reads it through pvclock.
    #[cfg(target_arch = "x86_64")]
    if let Some(xen) = domain.xen.as_mut() {
        hypervisor::pvh::init_time(&mut xen.shared_info, domain.vcpus.len(), cpu::tsc_hz(), cpu::tsc_zero());
    }
    taken
}

/// Zero a new domain's RAM, so that nothing of the frames' earlier owners (another domain,
/// the hypervisor, the bootloader) is left where the builder puts nothing. On aarch64 this
/// is DC ZVA, with the zeros written back to memory for a guest that starts with its caches
/// off; on ARMv7 stores then a clean+invalidate by address; on x86 `rep stosq` (caches are
/// coherent with every observer there).
fn zero_domain_ram(hpa: u64, len: u64) {
    cpu::zero_phys(hpa, len);
}

/// The virtual GIC an ARM guest gets (what the host's virtualization interface offers).
#[cfg(any(target_arch = "aarch64", target_arch = "arm"))]
fn guest_gic() -> guest_dt::GicVersion {
    cpu::guest_gic()
}
#[cfg(not(any(target_arch = "aarch64", target_arch = "arm")))]
fn guest_gic() -> guest_dt::GicVersion {
    guest_dt::GicVersion::V3
}

/// The ARM guest flavour this build runs, `None` on x86.
fn guest_arch() -> Option<GuestArch> {
    match cpu::ARCH_NAME {
        "aarch64" => Some(GuestArch::Arm64),
        "armv7" => Some(GuestArch::Arm32),
        _ => None,
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    match info.location() {
        Some(l) => log::emergency(format_args!("\n(XEN) PANIC at {}:{}: {}\n", l.file(), l.line(), info.message())),
        None => log::emergency(format_args!("\n(XEN) PANIC: {}\n", info.message())),
    }
    cpu::exit_emulator(ExitStatus::Failure)
}
