//! Domains: the unit of isolation. A domain owns its memory, its vCPUs' Xen state, its
//! event channels and its console.

use crate::console::GuestConsole;
use crate::evtchn::{self, Binding, EventChannels, InPage, VcpuInfoAccess};
use crate::evtchn_fifo::{Fifo, FifoPages};
use crate::grant::Grants;
use crate::guest_dt;
use crate::log;
use crate::page::{GuestAbi, GuestRam, HostPage, PAGE_SIZE, vcpu_info};
use crate::pvconsole;
use crate::runstate::{Runstate, State};
use crate::vpl011::Vpl011;
use alloc::vec::Vec;
use arch::exit::{FaultKind, GuestFault, MmioAccess, VirtualCpu};
use core::sync::atomic::Ordering::SeqCst;
use guest_abi::hvm;

/// The domains other than the caller's, for the calls that reach across (interdomain
/// event channels).
pub trait Peers {
    fn peer(&mut self, id: u16) -> Option<&mut Domain>;
}

/// No other domain (host tests, a domain alone).
pub struct NoPeers;

impl Peers for NoPeers {
    fn peer(&mut self, _id: u16) -> Option<&mut Domain> {
        None
    }
}

/// Every domain but one, split around it so that it and its peers are borrowed at once.
pub struct Others<'a> {
    before: &'a mut [Domain],
    after: &'a mut [Domain],
}

impl<'a> Others<'a> {
    /// `domains[current]` and the rest.
    pub fn split(domains: &'a mut [Domain], current: usize) -> (&'a mut Domain, Others<'a>) {
        let (before, rest) = domains.split_at_mut(current);
        let (this, after) = rest.split_first_mut().expect("current domain in range");
        (this, Others { before, after })
    }
}

impl Peers for Others<'_> {
    fn peer(&mut self, id: u16) -> Option<&mut Domain> {
        self.before.iter_mut().chain(self.after.iter_mut()).find(|d| d.id == id)
    }
}

/// Two different domains of `domains` at once (`a != b`).
pub fn pair_mut(domains: &mut [Domain], a: usize, b: usize) -> (&mut Domain, &mut Domain) {
    assert_ne!(a, b, "two different domains");
    if a < b {
        let (low, high) = domains.split_at_mut(b);
        (&mut low[a], &mut high[0])
    } else {
        let (low, high) = domains.split_at_mut(a);
        (&mut high[0], &mut low[b])
    }
}

/// How a domain's life ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DomainEnd {
    PoweredOff,
    Crashed,
}

/// Grant-table frames each domain gets (Linux maps them on demand, up to this many).
pub const GRANT_FRAMES: usize = 4;

/// The hypervisor-owned pages behind a domain's Xen interfaces.
pub struct XenPages {
    pub shared_info: HostPage,
    pub grant_frames: Vec<HostPage>,
    pub console_ring: HostPage,
}

/// Where one vCPU's `vcpu_info` is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VcpuInfoLoc {
    /// Slot `n` of the shared info page (the default, for vCPUs that have one).
    Shared(usize),
    /// Registered by the guest with `VCPUOP_register_vcpu_info`, at this guest-physical address.
    Guest(u64),
    /// No slot and none registered yet: events wait in the pending bitmap.
    Nowhere,
}

/// Per-vCPU Xen state.
#[derive(Clone, Copy, Debug)]
pub struct VcpuXen {
    pub info: VcpuInfoLoc,
    /// Its runstate and where the guest keeps a copy (the run loop moves it between states).
    pub runstate: Runstate,
}

pub struct Domain {
    pub id: u16,
    pub abi: GuestAbi,
    /// The hypercall being handled came from a vCPU in 32-bit x86 mode: its argument
    /// structures have the compat layouts (`hypercall::args::read_abi`).
    pub call_compat: bool,
    console: GuestConsole,
    pub xen: Option<XenPages>,
    pub evtchn: EventChannels,
    pub params: [u64; hvm::HVM_NR_PARAMS as usize],
    pub vcpus: Vec<VcpuXen>,
    /// `VMASST_*` types the guest turned on.
    pub vm_assist: u64,
    /// RAM the domain was given, in 4 KiB pages, and its highest guest frame number.
    pub ram_pages: u64,
    pub max_gpfn: u64,
    /// Frames of its RAM the guest handed back (`XENMEM_decrease_reservation`), one bit per
    /// page from its first; empty until it hands back any.
    pub ballooned: Vec<u64>,
    /// The emulated PL011 at `guest_dt::VPL011_BASE`, for domains configured with `vpl011`.
    pub vpl011: Option<Vpl011>,
    /// The vCPU whose exit is being handled (the run loop sets it): its upcall is raised
    /// through the `VirtualCpu` at hand, a sibling's is left in `remote_upcalls`.
    pub current_vcpu: usize,
    /// Bit n: raise the upcall of vCPU n (not the current one); the run loop drains it.
    pub remote_upcalls: u64,
    /// Ids of every domain that exists, this one included: naming another is -EPERM for a
    /// domU, naming none is -ESRCH, as Xen answers.
    pub known_domains: Vec<u16>,
    /// The control domain: its boot DT node has Xen's `capabilities` with
    /// DOMAIN_CAPS_CONTROL; only it may use `sysctl` and `domctl` (others get -EPERM).
    pub privileged: bool,
    /// The domain's RAM for atomic access (FIFO event pages), where the builder provides it.
    pub ram: Option<GuestRam>,
    /// The FIFO port ABI, once the guest asked for it (`EVTCHNOP_init_control`).
    pub fifo: Option<FifoEvents>,
    /// Grants this domain lends that are mapped, and mappings it holds of others'.
    pub grants: Grants,
    /// The domain has ended: nothing new may be mapped from it or sent to it.
    pub dying: bool,
    /// Where the guest placed each grant-table frame (`add_to_physmap`), for `setup_table`.
    pub grant_frame_gfns: [Option<u64>; GRANT_FRAMES],
}

/// FIFO event channels of a domain: the policy and the guest pages it works on.
pub struct FifoEvents {
    pub state: Fifo,
    pub pages: FifoPages,
}

impl Domain {
    /// A domain speaking the guest ABI native to the build target.
    pub fn new(id: u16) -> Self {
        Self::with_vcpus(id, 1)
    }

    /// The guest asked (`VMASST_TYPE_runstate_update_flag`) to see its runstate copies
    /// flagged while they are rewritten.
    pub fn runstate_update_flag(&self) -> bool {
        self.vm_assist & (1 << guest_abi::xen::VMASST_TYPE_RUNSTATE_UPDATE_FLAG) != 0
    }

    /// A domain of `nr_vcpus` vCPUs speaking the native guest ABI.
    pub fn with_vcpus(id: u16, nr_vcpus: usize) -> Self {
        let abi = if cfg!(all(target_arch = "x86_64", target_os = "none")) { GuestAbi::X86Pvh } else { GuestAbi::Arm };
        Self::with_abi(id, abi, nr_vcpus)
    }

    pub fn with_abi(id: u16, abi: GuestAbi, nr_vcpus: usize) -> Self {
        let vcpus = (0..nr_vcpus.max(1))
            .map(|i| VcpuXen {
                info: if i < abi.shared_vcpu_slots() { VcpuInfoLoc::Shared(i) } else { VcpuInfoLoc::Nowhere },
                // vCPU 0 waits for its first run; the others for a CPU_ON.
                runstate: Runstate::new(if i == 0 { State::Runnable } else { State::Offline }),
            })
            .collect();
        Self {
            id,
            abi,
            call_compat: false,
            console: GuestConsole::new(id),
            xen: None,
            evtchn: EventChannels::new(),
            params: [0; hvm::HVM_NR_PARAMS as usize],
            vcpus,
            vm_assist: 0,
            ram_pages: 0,
            max_gpfn: 0,
            ballooned: Vec::new(),
            vpl011: None,
            current_vcpu: 0,
            remote_upcalls: 0,
            known_domains: alloc::vec![id],
            privileged: false,
            ram: None,
            fifo: None,
            grants: Grants::default(),
            dying: false,
            grant_frame_gfns: [None; GRANT_FRAMES],
        }
    }

    /// Bytes of hypervisor heap the domain's event channels and grants hold now (what grows
    /// while it runs; what its build cost is measured when it is built).
    pub fn heap_bytes(&self) -> usize {
        let fifo = self
            .fifo
            .as_ref()
            .map_or(0, |f| f.state.heap_bytes() + (f.pages.array.capacity() + f.pages.blocks.capacity()) * 16);
        self.evtchn.heap_bytes() + fifo + self.grants.heap_bytes()
    }

    /// Record the domain's RAM: `size` bytes at guest-physical `base`.
    pub fn set_ram(&mut self, base: u64, size: u64) {
        self.ram_pages = size / PAGE_SIZE as u64;
        self.max_gpfn = (base + size) / PAGE_SIZE as u64 - 1;
    }

    /// Give the domain its shared info page, grant frames and PV console: the console ring is
    /// mapped into the guest at `console_gpa` and announced through the HVM params.
    pub fn setup_xen_pages(
        &mut self,
        vcpu: &mut dyn VirtualCpu,
        console_gpa: u64,
        alloc: &mut dyn FnMut() -> Option<HostPage>,
    ) -> Result<(), &'static str> {
        const NO_MEMORY: &str = "out of memory for its Xen pages";
        let shared_info = alloc().ok_or(NO_MEMORY)?;
        let mut grant_frames = Vec::new();
        for _ in 0..GRANT_FRAMES {
            grant_frames.push(alloc().ok_or(NO_MEMORY)?);
        }
        let console_ring = alloc().ok_or(NO_MEMORY)?;
        vcpu.map_host_page(console_gpa, console_ring.hpa).map_err(|_| "cannot map the console ring")?;
        let port = self.evtchn.allocate(Binding::Hypervisor, 0).map_err(|_| "no event channel for the console")?;
        self.params[hvm::HVM_PARAM_CONSOLE_PFN as usize] = console_gpa / PAGE_SIZE as u64;
        self.params[hvm::HVM_PARAM_CONSOLE_EVTCHN as usize] = u64::from(port);
        self.xen = Some(XenPages { shared_info, grant_frames, console_ring });
        Ok(())
    }

    /// Guest console bytes; complete lines go to the physical console.
    pub fn console_write(&mut self, bytes: &[u8]) {
        self.console.write(bytes, &mut |line| log::write_line(line));
    }

    pub fn console_pending(&self) -> bool {
        self.console.pending()
    }

    /// Complete a trapped MMIO access with the domain's device models; an access no device
    /// claims is a guest fault.
    pub fn mmio(&mut self, vcpu: &mut dyn VirtualCpu, access: MmioAccess) -> Result<(), GuestFault> {
        let offset = access.gpa.wrapping_sub(guest_dt::VPL011_BASE);
        if let Some(uart) = self.vpl011.as_mut().filter(|_| offset < guest_dt::VPL011_SIZE) {
            let sent = match access.write {
                Some(value) => uart.write(offset, access.size, value),
                None => {
                    vcpu.complete_mmio_read(uart.read(offset, access.size));
                    None
                }
            };
            let level = uart.irq_level();
            if let Some(byte) = sent {
                self.console_write(&[byte]);
            }
            vcpu.set_irq_line(guest_dt::VPL011_SPI, level);
            return Ok(());
        }
        Err(GuestFault { kind: FaultKind::UnmappedGuestPhysical, gpa: access.gpa, pc: vcpu.pc(), syndrome: 0 })
    }

    /// Flush what the guest left unfinished; called when the domain is destroyed.
    pub fn console_flush(&mut self) {
        if self.console.pending() {
            self.console.flush(&mut |line| log::write_line(line));
        }
    }

    /// The guest signalled `port` (EVTCHNOP_send).
    pub fn send(&mut self, vcpu: &mut dyn VirtualCpu, peers: &mut dyn Peers, port: u32) -> Result<(), i64> {
        let p = *self.evtchn.port(port).ok_or(guest_abi::errno::EINVAL)?;
        match p.binding {
            Binding::Hypervisor => self.console_backend(vcpu, port),
            // Xen lets a domain send on its own IPI ports (and loop back VIRQs it owns).
            Binding::Ipi | Binding::Virq(_) => self.deliver(vcpu, port),
            Binding::Interdomain { remote_dom, remote_port } if remote_dom == self.id => {
                self.deliver(vcpu, remote_port)
            }
            Binding::Interdomain { remote_dom, remote_port } => {
                if let Some(peer) = peers.peer(remote_dom) {
                    peer.deliver_from_peer(remote_port);
                }
            }
            Binding::Unbound { .. } | Binding::Free => {}
        }
        Ok(())
    }

    /// The domain is going away: the far ends of its interdomain channels become unbound
    /// ports waiting for it, as in Xen, so their owners see `EVTCHNSTAT_unbound`.
    pub fn disconnect_peers(&mut self, peers: &mut dyn Peers) {
        let me = self.id;
        for (port, p) in self.evtchn.bound() {
            let Binding::Interdomain { remote_dom, remote_port } = p.binding else { continue };
            let Some(peer) = peers.peer(remote_dom).filter(|_| remote_dom != me) else { continue };
            let still_ours = peer
                .evtchn
                .port(remote_port)
                .is_some_and(|r| r.binding == Binding::Interdomain { remote_dom: me, remote_port: port });
            if still_ours {
                let _ = peer.evtchn.rebind(remote_port, Binding::Unbound { remote_dom: me });
            }
        }
    }

    /// The PV console backend: take what the guest wrote, then tell it the ring has room.
    fn console_backend(&mut self, vcpu: &mut dyn VirtualCpu, port: u32) {
        let Some(xen) = self.xen.as_mut() else { return };
        let mut out = [0u8; guest_abi::console::XENCONS_OUT_SIZE];
        let n = pvconsole::drain_output(&mut xen.console_ring, &mut out);
        if n > 0 {
            self.console_write(&out[..n]);
            self.deliver(vcpu, port);
        }
    }

    /// Make `port` pending for the vCPU it is bound to and raise the upcall if needed (on
    /// `vcpu`, the one whose exit is being handled, if it is that one, else through
    /// `remote_upcalls`).
    pub fn deliver(&mut self, vcpu: &mut dyn VirtualCpu, port: u32) {
        self.set_pending(Some(vcpu), port);
    }

    /// An event from another domain (the far end of an interdomain channel): none of this
    /// domain's vCPUs is at hand, so every upcall goes through `remote_upcalls`.
    pub fn deliver_from_peer(&mut self, port: u32) {
        self.set_pending(None, port);
    }

    fn set_pending(&mut self, current: Option<&mut dyn VirtualCpu>, port: u32) {
        let target = self.evtchn.port(port).map_or(0, |p| p.vcpu as usize);
        if let Some(fifo) = self.fifo.as_mut() {
            if fifo.state.set_pending(&fifo.pages, port, target as u32) {
                self.with_vcpu_info(current, target, evtchn::mark_upcall);
            }
            return;
        }
        let abi = self.abi;
        let Some(xen) = self.xen.as_mut() else { return };
        if evtchn::mark_pending(abi, &mut xen.shared_info, port) {
            self.with_vcpu_info(current, target, |info| evtchn::notify_port(info, abi, port));
        }
    }

    /// The hypervisor raises `virq` for the current vCPU (`VIRQ_TIMER` when its Xen timer
    /// expires): the port bound to it becomes pending; unbound, the event is lost, as in Xen.
    pub fn raise_virq(&mut self, vcpu: &mut dyn VirtualCpu, virq: u32) {
        if let Some(port) = self.evtchn.virq_port(virq, self.current_vcpu as u32) {
            self.deliver(vcpu, port);
        }
    }

    /// `EVTCHNOP_unmask`: clear the mask bit and tell the vCPU if the port is pending.
    pub fn unmask(&mut self, vcpu: &mut dyn VirtualCpu, port: u32) -> Result<(), i64> {
        let target = self.evtchn.port(port).ok_or(guest_abi::errno::EINVAL)?.vcpu;
        if let Some(fifo) = self.fifo.as_mut() {
            if fifo.state.unmask(&fifo.pages, port, target) {
                self.with_vcpu_info(Some(vcpu), target as usize, evtchn::mark_upcall);
            }
            return Ok(());
        }
        let abi = self.abi;
        let xen = self.xen.as_mut().ok_or(guest_abi::errno::EINVAL)?;
        if evtchn::clear_mask(abi, &mut xen.shared_info, port) {
            self.with_vcpu_info(Some(vcpu), target as usize, |info| evtchn::notify_port(info, abi, port));
        }
        Ok(())
    }

    /// x86: take the shared info layout from the mode of the hypercall at hand, as Xen does
    /// when a guest sets up its event delivery (it samples the mode at the callback
    /// parameter and at the hypercall page; the page is arch's here, so mapping the shared
    /// info page, which PV-aware guests do next in the same mode, samples it too). A 32-bit
    /// guest then sees 32-bit selector and event words, and at most 1024 2-level ports.
    pub fn latch_shared_info_layout(&mut self) {
        if !self.abi.is_x86() {
            return;
        }
        let abi = if self.call_compat { GuestAbi::X86Pvh32 } else { GuestAbi::X86Pvh };
        if abi != self.abi {
            self.abi = abi;
            if self.fifo.is_none() {
                self.evtchn.set_limit(abi.max_ports_2l());
            }
        }
    }

    /// Whether vCPU `target` has an event upcall due: `evtchn_upcall_pending` set in its
    /// `vcpu_info` (and on x86 not masked; ARM has no mask byte). Xen checks this before a
    /// vCPU blocks (it returns at once) and wakes a blocked vCPU on it, whether or not an
    /// upcall interrupt could be raised. `own` is `target`'s own vCPU (for a `vcpu_info`
    /// reached through it).
    pub fn upcall_due(&mut self, own: Option<&mut dyn VirtualCpu>, target: usize) -> bool {
        let has_mask = self.abi.is_x86();
        let read = |info: &mut dyn VcpuInfoAccess| {
            info.read_byte(vcpu_info::UPCALL_PENDING) != 0 && !(has_mask && info.read_byte(vcpu_info::UPCALL_MASK) != 0)
        };
        self.access_vcpu_info(own, target, read).unwrap_or(false)
    }

    /// Run `f` on `target`'s `vcpu_info` wherever it lives: the shared info page, or the
    /// guest RAM it was registered at (reached through `vcpu`, `target`'s own, when the
    /// domain's RAM is not mapped here). `None` when it is nowhere we can reach.
    fn access_vcpu_info<'o, R>(
        &mut self,
        vcpu: Option<&mut (dyn VirtualCpu + 'o)>,
        target: usize,
        f: impl FnOnce(&mut dyn VcpuInfoAccess) -> R,
    ) -> Option<R> {
        let loc = self.vcpus.get(target).map_or(VcpuInfoLoc::Nowhere, |v| v.info);
        let size = self.abi.vcpu_info_size();
        let xen = self.xen.as_mut()?;
        match (loc, &self.ram, vcpu) {
            (VcpuInfoLoc::Shared(slot), _, _) => Some(f(&mut InPage { page: &mut xen.shared_info, base: slot * size })),
            (VcpuInfoLoc::Guest(gpa), Some(ram), _) => Some(f(&mut RamInfo { ram, gpa })),
            (VcpuInfoLoc::Guest(gpa), None, Some(vcpu)) => Some(f(&mut GuestPhysInfo { vcpu, gpa })),
            (VcpuInfoLoc::Guest(_), None, None) | (VcpuInfoLoc::Nowhere, _, _) => None,
        }
    }

    /// Run `update` on `target`'s `vcpu_info` wherever it lives; raise the upcall if it says
    /// so: directly when `target` is the vCPU at hand, else through `remote_upcalls`.
    fn with_vcpu_info(
        &mut self,
        current: Option<&mut dyn VirtualCpu>,
        target: usize,
        update: impl FnOnce(&mut dyn VcpuInfoAccess) -> bool,
    ) {
        let mut current = current.filter(|_| target == self.current_vcpu);
        if self.access_vcpu_info(current.as_deref_mut(), target, update) == Some(true) {
            match current {
                Some(vcpu) => vcpu.raise_upcall(),
                None if target < 64 => self.remote_upcalls |= 1 << target,
                None => {}
            }
        }
    }
}

/// A `vcpu_info` in the domain's RAM, updated atomically word by word: the guest may be
/// changing its other bytes meanwhile (on another CPU).
struct RamInfo<'a> {
    ram: &'a GuestRam,
    gpa: u64,
}

impl RamInfo<'_> {
    fn word(&self, off: usize) -> Option<(&core::sync::atomic::AtomicU32, u32)> {
        let at = self.gpa + off as u64;
        Some((self.ram.word(at & !3)?, (at & 3) as u32 * 8))
    }
}

impl VcpuInfoAccess for RamInfo<'_> {
    fn read_byte(&mut self, off: usize) -> u8 {
        self.word(off).map_or(0, |(w, shift)| (w.load(SeqCst) >> shift) as u8)
    }
    fn write_byte(&mut self, off: usize, v: u8) {
        if let Some((w, shift)) = self.word(off) {
            let _ = w.fetch_update(SeqCst, SeqCst, |old| Some(old & !(0xff << shift) | u32::from(v) << shift));
        }
    }
    fn read_u64(&mut self, off: usize) -> u64 {
        let half = |o| self.word(o).map_or(0, |(w, _)| u64::from(w.load(SeqCst)));
        half(off) | half(off + 4) << 32
    }
    fn write_u64(&mut self, off: usize, v: u64) {
        for (o, part) in [(off, v as u32), (off + 4, (v >> 32) as u32)] {
            if let Some((w, _)) = self.word(o) {
                w.store(part, SeqCst);
            }
        }
    }
    fn or_u64(&mut self, off: usize, bits: u64) -> u64 {
        // Each half on its own: setting bits needs no more than that to be atomic.
        let half = |o, part: u32| self.word(o).map_or(0, |(w, _)| u64::from(w.fetch_or(part, SeqCst)));
        half(off, bits as u32) | half(off + 4, (bits >> 32) as u32) << 32
    }
}

/// A `vcpu_info` the guest registered in its own RAM, reached by guest-physical address.
struct GuestPhysInfo<'a> {
    vcpu: &'a mut dyn VirtualCpu,
    gpa: u64,
}

impl VcpuInfoAccess for GuestPhysInfo<'_> {
    fn read_byte(&mut self, off: usize) -> u8 {
        let mut b = [0u8; 1];
        let _ = self.vcpu.read_guest_phys(self.gpa + off as u64, &mut b);
        b[0]
    }
    fn write_byte(&mut self, off: usize, v: u8) {
        let _ = self.vcpu.write_guest_phys(self.gpa + off as u64, &[v]);
    }
    fn read_u64(&mut self, off: usize) -> u64 {
        let mut b = [0u8; 8];
        let _ = self.vcpu.read_guest_phys(self.gpa + off as u64, &mut b);
        u64::from_ne_bytes(b)
    }
    fn write_u64(&mut self, off: usize, v: u64) {
        let _ = self.vcpu.write_guest_phys(self.gpa + off as u64, &v.to_ne_bytes());
    }
}
