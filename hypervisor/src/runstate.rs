//! A vCPU's runstate (Xen's `vcpu_runstate_info`): which state it is in (running, runnable,
//! blocked, offline), since when, and how long it spent in each before. The run loop moves
//! it between states at its context switches; `VCPUOP_get_runstate_info` reads it, and a
//! guest that registered a runstate area gets a copy there at every change (Linux reads its
//! steal time, and whether a sibling vCPU was preempted, from it).
//!
//! The area is registered by guest-virtual address (`VCPUOP_register_runstate_memory_area`,
//! translated once, through the caller's page tables, while it is in hand) or by
//! guest-physical address (`VCPUOP_register_runstate_phys_area`); copies are written by
//! guest-physical address, so they need no vCPU's translation registers loaded, and never
//! reach outside the domain's RAM (`write_guest_phys`).

use arch::exit::VirtualCpu;
use guest_abi::compat::Compat;
use guest_abi::vcpu::{self as v, VcpuRunstateInfo};
use zerocopy::IntoBytes;

/// The four states, as indices of [`Runstate::time`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Running = v::RUNSTATE_RUNNING as isize,
    Runnable = v::RUNSTATE_RUNNABLE as isize,
    Blocked = v::RUNSTATE_BLOCKED as isize,
    Offline = v::RUNSTATE_OFFLINE as isize,
}

/// Where the guest keeps its copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Area {
    pub gpa: u64,
    /// In the 32-bit x86 layout (4-byte aligned 64-bit fields, 44 bytes).
    pub compat: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Runstate {
    pub state: State,
    /// System time (ns) at which `state` was entered.
    pub entry_ns: u64,
    /// Nanoseconds in each state, up to `counted_ns`.
    pub time: [u64; 4],
    counted_ns: u64,
    pub area: Option<Area>,
}

impl Runstate {
    /// A vCPU created in `state` at time 0.
    pub const fn new(state: State) -> Self {
        Self { state, entry_ns: 0, time: [0; 4], counted_ns: 0, area: None }
    }

    /// Count from `now` on, with nothing counted before: the state is as it was entered then.
    pub fn restart(&mut self, now: u64) {
        self.entry_ns = now;
        self.counted_ns = now;
        self.time = [0; 4];
    }

    /// Count the time in the current state up to `now`.
    pub fn charge(&mut self, now: u64) {
        let s = self.state as usize;
        self.time[s] = self.time[s].saturating_add(now.saturating_sub(self.counted_ns));
        self.counted_ns = self.counted_ns.max(now);
    }

    /// Enter `state` at `now`; true if it changed.
    pub fn enter(&mut self, state: State, now: u64) -> bool {
        self.charge(now);
        if self.state == state {
            return false;
        }
        self.state = state;
        self.entry_ns = now;
        true
    }

    /// Xen's record of it, counted up to the last [`Runstate::charge`] or change.
    pub fn info(&self) -> VcpuRunstateInfo {
        VcpuRunstateInfo { state: self.state as i32, _pad0: 0, state_entry_time: self.entry_ns, time: self.time }
    }

    /// Write the record to the registered area through `vcpu` (a vCPU of the domain, which
    /// reaches its RAM by guest-physical address). With `update_flag` (the guest enabled
    /// `VMASST_TYPE_runstate_update_flag`), `state_entry_time` carries
    /// `XEN_RUNSTATE_UPDATE` while the rest is rewritten, so a reader on another vCPU sees a
    /// torn copy as such. An area no longer in RAM is dropped.
    pub fn publish(&mut self, vcpu: &mut dyn VirtualCpu, update_flag: bool) {
        let Some(area) = self.area else { return };
        let info = self.info();
        let native;
        let compat;
        let (bytes, entry_at): (&[u8], u64) = if area.compat {
            compat = info.to_compat();
            (compat.as_bytes(), 4)
        } else {
            native = info;
            (native.as_bytes(), 8)
        };
        let entry = |flag: u64| (info.state_entry_time | flag).to_ne_bytes();
        let mut write = |at: u64, b: &[u8]| vcpu.write_guest_phys(area.gpa + at, b).is_ok();
        let written = if update_flag {
            write(entry_at, &entry(v::XEN_RUNSTATE_UPDATE))
                && write(0, &bytes[..entry_at as usize])
                && write(entry_at + 8, &bytes[entry_at as usize + 8..])
                && write(entry_at, &entry(0))
        } else {
            write(0, bytes)
        };
        if !written {
            self.area = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypercall::testing::FakeVcpu;
    use guest_abi::compat::VcpuRunstateInfo32;
    use zerocopy::FromBytes;

    #[test]
    fn each_state_is_charged_the_time_spent_in_it() {
        let mut r = Runstate::new(State::Runnable);
        assert!(r.enter(State::Running, 100));
        assert!(r.enter(State::Blocked, 350));
        assert!(!r.enter(State::Blocked, 360), "no change");
        assert!(r.enter(State::Runnable, 1000));
        r.charge(1200);
        assert_eq!(r.time, [250, 300, 650, 0]);
        let info = r.info();
        assert_eq!((info.state, info.state_entry_time), (v::RUNSTATE_RUNNABLE, 1000));
    }

    #[test]
    fn the_area_gets_the_record_in_the_guest_s_layout() {
        let mut vcpu = FakeVcpu::new(0x200);
        let mut r = Runstate::new(State::Running);
        r.area = Some(Area { gpa: 0x40, compat: false });
        r.enter(State::Runnable, 500);
        r.publish(&mut vcpu, false);
        let got = VcpuRunstateInfo::read_from_prefix(&vcpu.mem[0x40..]).unwrap().0;
        assert_eq!(got, r.info());
        // 32-bit x86: 44 bytes, the times at offset 12.
        r.area = Some(Area { gpa: 0x100, compat: true });
        r.publish(&mut vcpu, true);
        let got = VcpuRunstateInfo32::read_from_prefix(&vcpu.mem[0x100..]).unwrap().0;
        assert_eq!(got.time[0].get(), 500);
        assert_eq!(got.state_entry_time.get(), 500, "the update flag is cleared at the end");
        assert_eq!(vcpu.mem[0x100 + 44], 0, "nothing past the record");
    }

    #[test]
    fn an_area_outside_ram_is_dropped() {
        let mut vcpu = FakeVcpu::new(0x100);
        let mut r = Runstate::new(State::Running);
        r.area = Some(Area { gpa: 0x1000, compat: false });
        r.publish(&mut vcpu, true);
        assert_eq!(r.area, None);
    }
}
