//! Bare-metal glue: heap, panic handler, banner, building and running the boot domains.

use arch::ExitStatus;
use arch::boot::{BootInfo, GuestSetup, ModuleKind};
use arch::cpu;
use hypervisor::domain::{Domain, DomainEnd};
use hypervisor::frames::FrameAllocator;
use hypervisor::loader::{self, Placed};
use hypervisor::version::{HV_NAME, HV_VERSION, XEN_MAJOR, XEN_MINOR};
use hypervisor::{hvlog, log, run};
use linked_list_allocator::LockedHeap;

#[global_allocator]
static HEAP: LockedHeap = LockedHeap::empty();

const HEAP_SIZE: usize = 4 << 20;
/// RAM each boot domain gets until the boot configuration says otherwise.
const DOMAIN_RAM: u64 = 64 << 20;
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
    unsafe { HEAP.lock().init(start, HEAP_SIZE) };
    core::mem::forget(space);
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
    let mut frames = FrameAllocator::new(boot.ram(), boot.reserved());
    let mut failed = false;
    let mut next_id = 1u16;
    for module in boot.modules().iter().filter(|m| m.kind == ModuleKind::Kernel) {
        let id = next_id;
        next_id += 1;
        let image = cpu::phys_slice(module.region.start, module.region.size);
        match build_and_run(id, image, &mut frames) {
            Ok(DomainEnd::PoweredOff) => {}
            Ok(DomainEnd::Crashed) => failed = true,
            Err(why) => {
                hvlog!("d{}: could not be built: {}", id, why);
                failed = true;
            }
        }
    }
    if next_id == 1 {
        hvlog!("no guest kernel module was given: nothing to run");
        failed = true;
    }
    if failed { ExitStatus::Failure } else { ExitStatus::Success }
}

fn build_and_run(id: u16, image: &[u8], frames: &mut FrameAllocator) -> Result<DomainEnd, &'static str> {
    let ram_host = frames.alloc(DOMAIN_RAM, DOMAIN_RAM_ALIGN).ok_or("out of memory for its RAM")?;
    let ram = cpu::phys_slice_mut(ram_host, DOMAIN_RAM);
    ram.fill(0);
    let placed = load_kernel(image, ram)?;
    let setup = GuestSetup {
        ram_host,
        ram_guest: cpu::GUEST_RAM_BASE,
        ram_size: DOMAIN_RAM,
        entry: cpu::GUEST_RAM_BASE + placed.entry_offset,
        boot_arg: 0,
        domain_id: id,
        vcpu_id: 0,
    };
    hvlog!(
        "d{}: {} MiB RAM at host {:#x}, guest {:#x}; entry {:#x}",
        id,
        DOMAIN_RAM >> 20,
        ram_host,
        setup.ram_guest,
        setup.entry
    );
    let mut vcpu = cpu::Vcpu::new(&setup)?;
    let mut domain = Domain::new(id);
    Ok(run::run_vcpu(&mut domain, 0, &mut vcpu))
}

fn load_kernel(image: &[u8], ram: &mut [u8]) -> Result<Placed, &'static str> {
    let placed = match cpu::ARCH_NAME {
        "aarch64" => loader::arm::load_arm64_image(image, ram),
        "armv7" => loader::arm::load_arm_zimage(image, ram),
        "x86_64" => loader::pvh_elf::load_pvh_elf(image, ram, cpu::GUEST_RAM_BASE),
        _ => Err(loader::LoadError::UnknownFormat),
    };
    placed.map_err(|e| match e {
        loader::LoadError::UnknownFormat => "kernel image format not recognised",
        loader::LoadError::TooLarge => "kernel image does not fit the domain's RAM",
        loader::LoadError::Malformed => "kernel image is malformed",
    })
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    match info.location() {
        Some(l) => log::emergency(format_args!("\n(XEN) PANIC at {}:{}: {}\n", l.file(), l.line(), info.message())),
        None => log::emergency(format_args!("\n(XEN) PANIC: {}\n", info.message())),
    }
    cpu::exit_emulator(ExitStatus::Failure)
}
