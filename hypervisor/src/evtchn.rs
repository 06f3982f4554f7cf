//! Event channels, 2-level ABI: the port table and delivery into the shared info page.
//!
//! Pending and mask bits live in the guest-visible shared info page; the per-vCPU selector
//! and upcall flag live in that vCPU's `vcpu_info`. This module owns the port table and the
//! bit logic; the caller hands it the pages and raises the upcall it asks for.

use crate::page::{GuestAbi, HostPage, vcpu_info};
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use guest_abi::errno;

/// Ports the 2-level ABI can name with 64-bit words: 64 words of 64 bits.
pub const MAX_PORTS_2L: u32 = 64 * 64;

/// What a port is bound to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binding {
    Free,
    /// Reserved and waiting for a peer domain to bind (`alloc_unbound`).
    Unbound {
        remote_dom: u16,
    },
    /// Delivered when the hypervisor raises this virtual IRQ.
    Virq(u32),
    /// A vCPU-to-vCPU notification within the domain.
    Ipi,
    /// The hypervisor is the other end (PV console backend).
    Hypervisor,
    /// Connected to `remote_port` of domain `remote_dom` (possibly this domain itself).
    Interdomain {
        remote_dom: u16,
        remote_port: u32,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Port {
    pub binding: Binding,
    /// The vCPU notified when the port becomes pending.
    pub vcpu: u32,
}

const FREE: Port = Port { binding: Binding::Free, vcpu: 0 };

pub struct EventChannels {
    ports: Vec<Port>,
    /// Every port below this is in use: allocation searches from here (2^17 FIFO ports are
    /// allocated one by one, and must not cost a scan each).
    free_from: usize,
    /// The port of each bound `(virq, vcpu)`, looked up on every timer tick.
    virqs: BTreeMap<(u32, u32), u32>,
    /// Ports the domain's port ABI can name: [`MAX_PORTS_2L`], or 2^17 once it uses FIFO.
    limit: u32,
}

impl Default for EventChannels {
    fn default() -> Self {
        Self::new()
    }
}

impl EventChannels {
    /// Bytes of hypervisor heap the port table holds.
    pub fn heap_bytes(&self) -> usize {
        self.ports.capacity() * size_of::<Port>() + self.virqs.len() * (8 + 4 + 16)
    }

    pub fn new() -> Self {
        // Port 0 is never valid.
        Self {
            ports: alloc::vec![Port { binding: Binding::Hypervisor, vcpu: 0 }],
            free_from: 1,
            virqs: BTreeMap::new(),
            limit: MAX_PORTS_2L,
        }
    }

    pub fn port(&self, port: u32) -> Option<&Port> {
        self.ports.get(port as usize).filter(|p| p.binding != Binding::Free && port != 0)
    }

    /// Bind the lowest free port.
    pub fn allocate(&mut self, binding: Binding, vcpu: u32) -> Result<u32, i64> {
        let new = Port { binding, vcpu };
        let start = self.free_from.max(1);
        let port = match self.ports.iter().skip(start).position(|p| p.binding == Binding::Free) {
            Some(i) => {
                self.ports[start + i] = new;
                start + i
            }
            None if self.ports.len() as u32 >= self.limit => return Err(errno::ENOSPC),
            None => {
                // Guests grow this table: running out of hypervisor memory is their error.
                self.ports.try_reserve(1).map_err(|_| errno::ENOMEM)?;
                self.ports.push(new);
                self.ports.len() - 1
            }
        };
        self.free_from = port + 1;
        if let Binding::Virq(virq) = binding {
            self.virqs.insert((virq, vcpu), port as u32);
        }
        Ok(port as u32)
    }

    /// The port ABI changed (FIFO names more ports than the 2-level bitmaps).
    pub fn set_limit(&mut self, ports: u32) {
        self.limit = ports;
    }

    /// Ports in use, by number: `(port, binding)`.
    pub fn bound(&self) -> impl Iterator<Item = (u32, &Port)> {
        self.ports.iter().enumerate().skip(1).filter(|(_, p)| p.binding != Binding::Free).map(|(i, p)| (i as u32, p))
    }

    pub fn close(&mut self, port: u32) -> Result<(), i64> {
        let old = *self.port(port).ok_or(errno::EINVAL)?;
        if let Binding::Virq(virq) = old.binding {
            self.virqs.remove(&(virq, old.vcpu));
        }
        self.ports[port as usize] = FREE;
        self.free_from = self.free_from.min(port as usize);
        Ok(())
    }

    /// Rebind a port in use (an interdomain channel connecting or its peer going away; never
    /// to or from a VIRQ).
    pub fn rebind(&mut self, port: u32, binding: Binding) -> Result<(), i64> {
        let old = self.port(port).ok_or(errno::EINVAL)?;
        if matches!(old.binding, Binding::Virq(_)) || matches!(binding, Binding::Virq(_) | Binding::Free) {
            return Err(errno::EINVAL);
        }
        self.ports[port as usize].binding = binding;
        Ok(())
    }

    pub fn bind_vcpu(&mut self, port: u32, vcpu: u32) -> Result<(), i64> {
        let old = *self.port(port).ok_or(errno::EINVAL)?;
        if let Binding::Virq(virq) = old.binding {
            self.virqs.remove(&(virq, old.vcpu));
            self.virqs.insert((virq, vcpu), port);
        }
        self.ports[port as usize].vcpu = vcpu;
        Ok(())
    }

    /// The port bound to `virq` on `vcpu`, if any.
    pub fn virq_port(&self, virq: u32, vcpu: u32) -> Option<u32> {
        self.virqs.get(&(virq, vcpu)).copied()
    }
}

/// Where a vCPU's `vcpu_info` lives: in the shared info page or registered elsewhere.
pub trait VcpuInfoAccess {
    fn read_byte(&mut self, off: usize) -> u8;
    fn write_byte(&mut self, off: usize, v: u8);
    fn read_u64(&mut self, off: usize) -> u64;
    fn write_u64(&mut self, off: usize, v: u64);
    /// Set `bits` of the u64 at `off` (atomically where the guest may change other bits at
    /// the same time); the old value.
    fn or_u64(&mut self, off: usize, bits: u64) -> u64 {
        let old = self.read_u64(off);
        self.write_u64(off, old | bits);
        old
    }
}

/// A `vcpu_info` inside a host page at a byte offset.
pub struct InPage<'a> {
    pub page: &'a mut HostPage,
    pub base: usize,
}

impl VcpuInfoAccess for InPage<'_> {
    fn read_byte(&mut self, off: usize) -> u8 {
        self.page.data[self.base + off]
    }
    fn write_byte(&mut self, off: usize, v: u8) {
        self.page.data[self.base + off] = v;
    }
    fn read_u64(&mut self, off: usize) -> u64 {
        self.page.u64_at(self.base + off)
    }
    fn write_u64(&mut self, off: usize, v: u64) {
        self.page.set_u64(self.base + off, v);
    }
    fn or_u64(&mut self, off: usize, bits: u64) -> u64 {
        self.page.fetch_or_u64(self.base + off, bits)
    }
}

/// Mark `port` pending in the shared info page. True when the port became pending and is
/// unmasked: the caller flags it in the vCPU's selector ([`notify_port`]).
///
/// The bitmaps are handled as 64-bit little-endian words in every layout: a 32-bit guest's
/// 32-bit words hold each port at the same byte and bit.
pub fn mark_pending(abi: GuestAbi, shared: &mut HostPage, port: u32) -> bool {
    let (word, bit) = ((port / 64) as usize, 1u64 << (port % 64));
    let pending_off = abi.evtchn_pending_offset() + word * 8;
    // One atomic RMW: the guest clears other pending bits of this word meanwhile on other
    // pCPUs (and a plain write could bring them back).
    if shared.fetch_or_u64(pending_off, bit) & bit != 0 {
        return false; // already pending: the guest has been told
    }
    shared.u64_at(abi.evtchn_mask_offset() + word * 8) & bit == 0
}

/// Clear `port`'s mask bit. True when the port was masked and is pending meanwhile: the
/// caller notifies it (unmasking a port that was not masked tells nothing new, as in Xen).
pub fn clear_mask(abi: GuestAbi, shared: &mut HostPage, port: u32) -> bool {
    let (word, bit) = ((port / 64) as usize, 1u64 << (port % 64));
    let mask_off = abi.evtchn_mask_offset() + word * 8;
    let mask = shared.fetch_and_u64(mask_off, !bit);
    mask & bit != 0 && shared.u64_at(abi.evtchn_pending_offset() + word * 8) & bit != 0
}

/// Flag the bitmap word holding `port` in a vCPU's selector and, if that flag is new, set
/// its upcall flag (as Xen does: a word already selected is one the guest has yet to scan,
/// and it will find the port there). Returns true when the upcall flag went from 0 to 1:
/// the caller raises the upcall interrupt.
pub fn notify_port(vcpu: &mut dyn VcpuInfoAccess, abi: GuestAbi, port: u32) -> bool {
    // An atomic OR on the aligned 64-bit word holding the selector bit (the guest takes
    // selector bits meanwhile on other pCPUs); the other bytes of that word are left alone.
    let (at, bit) = abi.pending_sel_bit(port);
    let (word_at, mask) = (at & !7, u64::from(bit) << ((at % 8) * 8));
    if vcpu.or_u64(word_at, mask) & mask != 0 {
        return false;
    }
    let was = vcpu.read_byte(vcpu_info::UPCALL_PENDING);
    vcpu.write_byte(vcpu_info::UPCALL_PENDING, 1);
    was == 0
}

/// Set a vCPU's upcall flag alone (the FIFO ABI has no selector). True when it went from 0
/// to 1: the caller raises the upcall interrupt.
pub fn mark_upcall(vcpu: &mut dyn VcpuInfoAccess) -> bool {
    let was = vcpu.read_byte(vcpu_info::UPCALL_PENDING);
    vcpu.write_byte(vcpu_info::UPCALL_PENDING, 1);
    was == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page() -> HostPage {
        HostPage::on_heap(0x1000)
    }

    #[test]
    fn ports_start_at_one_and_are_reused_after_close() {
        let mut ev = EventChannels::new();
        assert_eq!(ev.allocate(Binding::Ipi, 0), Ok(1));
        assert_eq!(ev.allocate(Binding::Virq(0), 0), Ok(2));
        assert_eq!(ev.close(1), Ok(()));
        assert_eq!(ev.allocate(Binding::Hypervisor, 0), Ok(1));
        assert_eq!(ev.close(0), Err(errno::EINVAL));
        assert_eq!(ev.close(99), Err(errno::EINVAL));
        assert_eq!(ev.virq_port(0, 0), Some(2));
    }

    #[test]
    fn the_lowest_free_port_is_found_again_after_closes() {
        let mut ev = EventChannels::new();
        ev.set_limit(1 << 17);
        for want in 1..1000 {
            assert_eq!(ev.allocate(Binding::Ipi, 0), Ok(want));
        }
        ev.close(500).unwrap();
        ev.close(20).unwrap();
        assert_eq!(ev.allocate(Binding::Ipi, 0), Ok(20));
        assert_eq!(ev.allocate(Binding::Ipi, 0), Ok(500));
        assert_eq!(ev.allocate(Binding::Ipi, 0), Ok(1000));
    }

    #[test]
    fn virq_ports_follow_binds_moves_and_closes() {
        let mut ev = EventChannels::new();
        let p = ev.allocate(Binding::Virq(3), 1).unwrap();
        assert_eq!(ev.virq_port(3, 1), Some(p));
        ev.bind_vcpu(p, 0).unwrap();
        assert_eq!((ev.virq_port(3, 1), ev.virq_port(3, 0)), (None, Some(p)));
        assert_eq!(ev.rebind(p, Binding::Ipi), Err(errno::EINVAL), "a VIRQ port stays one");
        ev.close(p).unwrap();
        assert_eq!(ev.virq_port(3, 0), None);
    }

    #[test]
    fn port_space_is_bounded() {
        let mut ev = EventChannels::new();
        for _ in 1..MAX_PORTS_2L {
            ev.allocate(Binding::Ipi, 0).unwrap();
        }
        assert_eq!(ev.allocate(Binding::Ipi, 0), Err(errno::ENOSPC));
    }

    #[test]
    fn pending_unmasked_port_raises_the_upcall_once() {
        for abi in [GuestAbi::Arm, GuestAbi::X86Pvh] {
            let mut shared = page();
            let mut info = page();
            let mut v = InPage { page: &mut info, base: 0 };
            assert!(mark_pending(abi, &mut shared, 65) && notify_port(&mut v, abi, 65));
            assert!(mark_pending(abi, &mut shared, 66));
            assert!(!notify_port(&mut v, abi, 66), "upcall already pending");
            assert!(!mark_pending(abi, &mut shared, 66), "already pending");
            assert_eq!(shared.u64_at(abi.evtchn_pending_offset() + 8), 0b110);
            assert_eq!(info.u64_at(vcpu_info::PENDING_SEL), 0b10);
            assert_eq!(info.data[vcpu_info::UPCALL_PENDING], 1);
        }
    }

    #[test]
    fn a_32_bit_x86_guest_sees_its_own_layout() {
        use core::mem::offset_of;
        use guest_abi::compat::{SharedInfo32, VcpuInfo32};
        let abi = GuestAbi::X86Pvh32;
        let mut shared = page();
        let mut info = page();
        let mut v = InPage { page: &mut info, base: 0 };
        // Port 65 is bit 1 of 32-bit word 2; the selector is a 32-bit word at offset 4.
        assert!(mark_pending(abi, &mut shared, 65) && notify_port(&mut v, abi, 65));
        let pending = offset_of!(SharedInfo32, evtchn_pending);
        assert_eq!(shared.data[pending + 8..pending + 12], 0b10u32.to_le_bytes());
        let sel = offset_of!(VcpuInfo32, evtchn_pending_sel);
        assert_eq!(info.data[sel..sel + 4], 0b100u32.to_le_bytes());
        assert!(info.data[8..16].iter().all(|&b| b == 0), "the 64-bit selector's place (cr2) is untouched");
        // The mask is at the 32-bit layout's offset.
        let mask = offset_of!(SharedInfo32, evtchn_mask);
        shared.data[mask] = 1 << 3;
        assert!(!mark_pending(abi, &mut shared, 3), "masked");
        assert!(clear_mask(abi, &mut shared, 3));
        assert_eq!(shared.data[mask], 0);
        assert_eq!(abi.max_ports_2l(), 1024);
    }

    #[test]
    fn masked_port_stays_quiet_until_unmasked() {
        let abi = GuestAbi::Arm;
        let mut shared = page();
        let info = page();
        shared.set_u64(abi.evtchn_mask_offset(), 1 << 3);
        assert!(!mark_pending(abi, &mut shared, 3));
        assert_eq!(info.data[vcpu_info::UPCALL_PENDING], 0);
        assert!(clear_mask(abi, &mut shared, 3));
        assert_eq!(shared.u64_at(abi.evtchn_mask_offset()), 0);
        assert!(!clear_mask(abi, &mut shared, 4), "not pending: nothing to tell");
    }
}
