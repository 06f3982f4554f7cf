//! Random hypercalls: a seeded PRNG, argument values drawn from the classes that break
//! hypervisors (small integers, boundary values, pointers into scratch and across page
//! ends, addresses and frames that are not ours), sub-operations biased towards the valid
//! ones, and guards that keep the fuzzer from shooting itself (powering off, blocking
//! forever, pointing the hypervisor at its own code).

use crate::layout::{self, MAX_OUTPUT, OUTSIDE, PAGE, SCRATCH_PAGES, SCRATCH_SIZE};
use guest_abi::hypercall as nr;
use guest_abi::{console, event_channel as ev, grant_table as gt, hvm, memory as mem, sched, vcpu, xen};

/// xorshift64* seeded through splitmix64: small, fast, and the same on every target.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Self((z ^ (z >> 31)) | 1)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (n > 0; the modulo bias is irrelevant here).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

/// Register width of a hypercall argument: 32 bits on ARMv7.
#[cfg(target_arch = "arm")]
pub const REG_MASK: u64 = 0xffff_ffff;
#[cfg(not(target_arch = "arm"))]
pub const REG_MASK: u64 = u64::MAX;

const BOUNDARY: [u64; 18] = [
    0,
    1,
    2,
    0x7f,
    0xff,
    0xffff,
    xen::DOMID_SELF as u64,
    0x7fff,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    0x1_0000_0000,
    0xfff,
    0x1000,
    0x7fff_ffff_ffff_ffff,
    0x8000_0000_0000_0000,
    u64::MAX,
    u64::MAX - 1,
];

/// Domain ids worth naming: ourselves (both spellings), the other domain of a two-domain
/// run, dom0, the reserved ids and nonsense.
const DOMIDS: [u16; 9] = [xen::DOMID_SELF, xen::DOMID_SELF, 1, 2, 0, 3, xen::DOMID_IO, xen::DOMID_XEN, 0xffff];

/// Hypercall numbers beyond the table (and aliases of valid ones in the high bits).
const ODD_NUMBERS: [u64; 9] = [64, 65, 100, 0xff, 0x1000, 0xffff_ffff, 0x1_0000_0011, 1 << 63, u64::MAX];

/// The families the hypervisor implements (plus physdev, which it does not): most calls.
const FAMILIES: [u64; 11] = [
    nr::XEN_VERSION,
    nr::CONSOLE_IO,
    nr::SCHED_OP,
    nr::MEMORY_OP,
    nr::HVM_OP,
    nr::VCPU_OP,
    nr::EVENT_CHANNEL_OP,
    nr::GRANT_TABLE_OP,
    nr::VM_ASSIST,
    nr::PHYSDEV_OP,
    nr::MULTICALL,
];

/// One hypercall, ready to issue.
#[derive(Clone, Copy)]
pub struct Call {
    pub nr: u64,
    pub args: [u64; 5],
    /// It may put the vCPU to sleep (SCHEDOP_block/poll): arm a wake-up first.
    pub may_block: bool,
}

pub struct Fuzzer {
    pub rng: Rng,
    /// Guest address of the scratch area.
    scratch: u64,
}

impl Fuzzer {
    pub fn new(seed: u64, scratch: u64) -> Self {
        Self { rng: Rng::new(seed), scratch }
    }

    fn scratch_range(&self) -> (u64, u64) {
        (self.scratch, self.scratch + SCRATCH_SIZE as u64)
    }

    fn in_scratch(&self, addr: u64, len: u64) -> bool {
        let (lo, hi) = self.scratch_range();
        addr >= lo && addr.checked_add(len).is_some_and(|end| end <= hi)
    }

    /// A pointer into scratch (past the mapping page) with room for `len` bytes and the
    /// largest output after it.
    fn scratch_ptr(&mut self, len: usize) -> u64 {
        let room = (SCRATCH_SIZE - PAGE - MAX_OUTPUT - len) as u64;
        let off = PAGE as u64 + self.rng.below(room);
        let off = if self.rng.below(4) == 0 { off } else { off & !7 };
        self.scratch + off
    }

    /// A pointer a few bytes before the end of a scratch page, so a structure straddles it.
    fn straddling_ptr(&mut self) -> u64 {
        let page = 1 + self.rng.below(SCRATCH_PAGES as u64 - 2);
        self.scratch + (page + 1) * PAGE as u64 - 1 - self.rng.below(16)
    }

    /// Memory of ours a console write could print from: scratch, or x86's free low RAM.
    fn readable_junk(&self, addr: u64) -> bool {
        self.in_scratch(addr, 1) || (addr >= layout::JUNK_ZONE.0 && addr < layout::JUNK_ZONE.1)
    }

    /// A frame of ours a hypervisor page may be mapped over: the first scratch page, kept
    /// for that (the others stay RAM for the structures), or the `vcpu_info` page.
    fn scratch_frame(&mut self) -> u64 {
        if self.rng.below(4) == 0 { self.vcpu_info_frame() } else { self.scratch >> 12 }
    }

    /// The page a `VCPUOP_register_vcpu_info` may move `vcpu_info` to: the last scratch page.
    fn vcpu_info_frame(&self) -> u64 {
        (self.scratch >> 12) + SCRATCH_PAGES as u64 - 1
    }

    fn outside_address(&mut self) -> u64 {
        let base = self.rng.pick(&OUTSIDE);
        match self.rng.below(3) {
            0 => base,
            1 => base.saturating_add(self.rng.below(PAGE as u64) & !7),
            _ => base.saturating_add(PAGE as u64 - 1 - self.rng.below(8)),
        }
    }

    fn outside_frame(&mut self) -> u64 {
        match self.rng.below(4) {
            0 => self.rng.pick(&[1 << 36, 1 << 40, 1 << 52, u64::MAX >> 12, u64::MAX]),
            _ => layout::outside_frame(self.rng.below(OUTSIDE.len() as u64) as usize),
        }
    }

    /// One argument or structure word, from a class chosen at random.
    fn raw_value(&mut self) -> u64 {
        match self.rng.below(16) {
            0..=3 => self.rng.below(64),
            4..=5 => self.rng.pick(&BOUNDARY),
            6..=7 => self.scratch_ptr(64),
            8 => self.straddling_ptr(),
            9..=10 => self.outside_address(),
            11 => self.scratch_frame(),
            12 => self.outside_frame(),
            13 => self.rng.next(),
            14 => self.rng.next() & 0xffff_ffff,
            _ => (1u64 << self.rng.below(64)).wrapping_sub(self.rng.below(2)),
        }
    }

    /// Never a pointer or a frame into our own RAM outside scratch (our code, stack,
    /// canaries): such a word becomes an address that is not ours.
    fn sanitize(&mut self, w: u64) -> u64 {
        let scratch = self.scratch_range();
        let as_frame = w.checked_mul(PAGE as u64);
        if layout::forbidden(w, 8, scratch) || as_frame.is_some_and(|a| layout::forbidden(a, PAGE as u64, scratch)) {
            self.outside_address()
        } else {
            w
        }
    }

    fn value(&mut self) -> u64 {
        let w = self.raw_value();
        self.sanitize(w)
    }

    /// Write `bytes` at `addr` if all of it is scratch (structures aimed elsewhere stay as
    /// they are: the hypervisor must refuse them anyway). Bytewise: `addr` may be unaligned
    /// and ARM runs with its MMU off, where unaligned accesses fault.
    fn put(&self, addr: u64, bytes: &[u8]) {
        if !self.in_scratch(addr, bytes.len() as u64) {
            return;
        }
        for (i, &b) in bytes.iter().enumerate() {
            // SAFETY: inside the scratch area (checked above), which only this code and the
            // hypervisor (during our calls) write.
            unsafe { core::ptr::write_volatile((addr as usize + i) as *mut u8, b) };
        }
    }

    fn put16(&self, addr: u64, off: u64, v: u16) {
        self.put(addr + off, &v.to_ne_bytes());
    }
    fn put32(&self, addr: u64, off: u64, v: u32) {
        self.put(addr + off, &v.to_ne_bytes());
    }
    fn put64(&self, addr: u64, off: u64, v: u64) {
        self.put(addr + off, &v.to_ne_bytes());
    }

    /// A pointer argument: mostly scratch, sometimes anything.
    fn pointer(&mut self, len: usize) -> u64 {
        match self.rng.below(10) {
            0..=5 => self.scratch_ptr(len),
            6 => self.straddling_ptr(),
            _ => self.value(),
        }
    }

    /// A pointer to `words` random structure words.
    fn structure(&mut self, words: usize) -> u64 {
        let p = self.pointer(words * 8);
        for i in 0..words as u64 {
            let w = self.value();
            self.put64(p, i * 8, w);
        }
        p
    }

    /// A sub-operation: half the time one the hypervisor implements (`known`), else mostly
    /// one of the first `n`, sometimes any value.
    fn cmd(&mut self, n: u64, known: &[u64]) -> u64 {
        match self.rng.below(16) {
            0..=7 if !known.is_empty() => self.rng.pick(known),
            0..=13 => self.rng.below(n),
            _ => self.value(),
        }
    }

    fn domid(&mut self) -> u16 {
        if self.rng.below(8) == 0 { self.value() as u16 } else { self.rng.pick(&DOMIDS) }
    }

    fn small_or_any(&mut self, small: u64) -> u64 {
        if self.rng.below(4) == 0 { self.value() } else { self.rng.below(small) }
    }

    fn pick_nr(&mut self) -> u64 {
        match self.rng.below(10) {
            0..=6 => self.rng.pick(&FAMILIES),
            7..=8 => self.rng.below(64),
            _ => self.rng.pick(&ODD_NUMBERS),
        }
    }

    /// `add_to_physmap(shared_info)` at `gpfn`, the request built at the start of scratch's
    /// second page; returns the hypercall's result.
    pub fn map_shared_info_at(&self, gpfn: u64) -> i64 {
        let p = self.scratch + PAGE as u64;
        self.put16(p, 0, xen::DOMID_SELF);
        self.put16(p, 2, 0);
        self.put32(p, 4, mem::XENMAPSPACE_SHARED_INFO);
        self.put64(p, 8, 0);
        self.put64(p, 16, gpfn);
        hello_guest::hypercall(nr::MEMORY_OP, [mem::XENMEM_ADD_TO_PHYSMAP, p & REG_MASK, 0, 0, 0])
    }

    /// The next random call, guarded.
    pub fn next_call(&mut self) -> Call {
        let nr = self.pick_nr();
        let mut a = [0u64; 5];
        for x in a.iter_mut() {
            *x = self.value();
        }
        match nr & REG_MASK {
            nr::XEN_VERSION => {
                a[0] = self.cmd(16, &[]);
                a[1] = self.pointer(1024);
            }
            nr::CONSOLE_IO => {
                a[0] = self.cmd(3, &[console::CONSOLEIO_WRITE, console::CONSOLEIO_READ]);
                a[1] = self.small_or_any(64);
                a[2] = self.pointer(64);
            }
            nr::SCHED_OP => {
                a[0] = self.cmd(9, &[]);
                a[1] = self.structure(3);
            }
            nr::MEMORY_OP => self.memory_op(&mut a),
            nr::HVM_OP => self.hvm_op(&mut a),
            nr::VCPU_OP => self.vcpu_op(&mut a),
            nr::EVENT_CHANNEL_OP => self.event_channel_op(&mut a),
            nr::GRANT_TABLE_OP => {
                let known = [gt::GNTTABOP_QUERY_SIZE, gt::GNTTABOP_SET_VERSION, gt::GNTTABOP_GET_VERSION];
                a[0] = self.cmd(gt::GNTTABOP_CACHE_FLUSH + 1, &known);
                a[1] = self.grant_structure();
                a[2] = self.rng.pick(&[0, 1, 1, 1, 2, 16, 0xffff_ffff, 1 << 40]);
            }
            nr::VM_ASSIST => {
                a[0] = self.cmd(3, &[]);
                a[1] = self.small_or_any(34);
            }
            _ => {
                a[0] = self.cmd(32, &[]);
                a[1] = self.structure(8);
                a[2] = self.small_or_any(8);
            }
        }
        let mut call = Call { nr, args: a, may_block: false };
        self.guard(&mut call);
        call
    }

    fn memory_op(&mut self, a: &mut [u64; 5]) {
        let known = [mem::XENMEM_ADD_TO_PHYSMAP, mem::XENMEM_CURRENT_RESERVATION, mem::XENMEM_MAXIMUM_GPFN];
        let cmd = self.cmd(29, &known);
        // Now and then a continuation (start extent) in the high bits.
        a[0] = if self.rng.below(8) == 0 { cmd | (self.rng.below(1 << 20) << 6) } else { cmd };
        let p = self.structure(6);
        a[1] = p;
        match cmd {
            mem::XENMEM_ADD_TO_PHYSMAP => {
                let (space, idx) = match self.rng.below(4) {
                    0 => (mem::XENMAPSPACE_SHARED_INFO, self.small_or_any(2)),
                    1 => (mem::XENMAPSPACE_GRANT_TABLE, self.small_or_any(6)),
                    2 => (mem::XENMAPSPACE_GRANT_TABLE, mem::XENMAPIDX_GRANT_TABLE_STATUS | self.rng.below(4)),
                    _ => (self.small_or_any(8) as u32, self.value()),
                };
                let gpfn = match self.rng.below(4) {
                    0 => self.scratch_frame(),
                    1 => self.outside_frame(),
                    // Anywhere a 48-bit guest-physical space has room: each new place may
                    // cost the hypervisor page-table memory.
                    2 => {
                        let frame = self.rng.below(1 << 36);
                        self.sanitize(frame)
                    }
                    _ => self.value(),
                };
                let domid = if self.rng.below(4) == 0 { self.domid() } else { xen::DOMID_SELF };
                self.put16(p, 0, domid);
                self.put32(p, 4, space);
                self.put64(p, 8, idx);
                self.put64(p, 16, gpfn);
            }
            mem::XENMEM_CURRENT_RESERVATION | mem::XENMEM_MAXIMUM_RESERVATION | mem::XENMEM_REMOVE_FROM_PHYSMAP => {
                let domid = self.domid();
                self.put16(p, 0, domid);
            }
            _ => {}
        }
    }

    fn hvm_op(&mut self, a: &mut [u64; 5]) {
        a[0] = self.cmd(4, &[hvm::HVMOP_GET_PARAM, hvm::HVMOP_SET_PARAM]);
        let p = self.structure(2);
        a[1] = p;
        let domid = self.domid();
        let index = self.small_or_any(u64::from(hvm::HVM_NR_PARAMS) + 2) as u32;
        self.put16(p, 0, domid);
        self.put32(p, 4, index);
    }

    fn vcpu_op(&mut self, a: &mut [u64; 5]) {
        let known = [
            vcpu::VCPUOP_REGISTER_VCPU_INFO,
            vcpu::VCPUOP_REGISTER_RUNSTATE_MEMORY_AREA,
            vcpu::VCPUOP_GET_RUNSTATE_INFO,
            vcpu::VCPUOP_IS_UP,
            vcpu::VCPUOP_SET_SINGLESHOT_TIMER,
            vcpu::VCPUOP_STOP_SINGLESHOT_TIMER,
        ];
        let cmd = self.cmd(16, &known);
        a[0] = cmd;
        a[1] = self.rng.pick(&[0, 0, 0, 0, 1, 2, 63, 64, 0xffff_ffff, u64::MAX]);
        let p = self.structure(4);
        a[2] = p;
        match cmd {
            vcpu::VCPUOP_REGISTER_VCPU_INFO => {
                let mfn = match self.rng.below(3) {
                    0 | 1 => self.vcpu_info_frame(),
                    _ => self.outside_frame(),
                };
                let offset = self.rng.pick(&[0u32, 8, 64, 0x40, 4032, 4033, 4090, 4096, 0xffff_ffff]);
                self.put64(p, 0, mfn);
                self.put32(p, 8, offset);
            }
            vcpu::VCPUOP_REGISTER_RUNSTATE_MEMORY_AREA | vcpu::VCPUOP_REGISTER_VCPU_TIME_MEMORY_AREA => {
                let area = self.pointer(48);
                self.put64(p, 0, area);
            }
            _ => {}
        }
    }

    fn event_channel_op(&mut self, a: &mut [u64; 5]) {
        let known = [
            ev::EVTCHNOP_SEND,
            ev::EVTCHNOP_UNMASK,
            ev::EVTCHNOP_CLOSE,
            ev::EVTCHNOP_BIND_VIRQ,
            ev::EVTCHNOP_BIND_IPI,
            ev::EVTCHNOP_BIND_VCPU,
            ev::EVTCHNOP_ALLOC_UNBOUND,
            ev::EVTCHNOP_STATUS,
        ];
        let cmd = self.cmd(15, &known);
        a[0] = cmd;
        let p = self.structure(3);
        a[1] = p;
        let port = self.rng.pick(&[0u32, 1, 1, 2, 2, 3, 4, 5, 63, 64, 4095, 4096, 0xffff_ffff]);
        let vcpu = self.rng.pick(&[0u32, 0, 0, 1, 0xffff_ffff]);
        match cmd {
            ev::EVTCHNOP_SEND | ev::EVTCHNOP_UNMASK | ev::EVTCHNOP_CLOSE => self.put32(p, 0, port),
            ev::EVTCHNOP_BIND_VIRQ => {
                let virq = self.small_or_any(u64::from(ev::NR_VIRQS) + 2) as u32;
                self.put32(p, 0, virq);
                self.put32(p, 4, vcpu);
            }
            ev::EVTCHNOP_BIND_IPI => self.put32(p, 0, vcpu),
            ev::EVTCHNOP_BIND_VCPU => {
                self.put32(p, 0, port);
                self.put32(p, 4, vcpu);
            }
            ev::EVTCHNOP_ALLOC_UNBOUND | ev::EVTCHNOP_STATUS | ev::EVTCHNOP_BIND_INTERDOMAIN => {
                let (d, r) = (self.domid(), self.domid());
                self.put16(p, 0, d);
                self.put16(p, 2, r);
                self.put32(p, 4, port);
            }
            _ => {}
        }
    }

    /// A grant-table operation array (up to a few elements of up to 24 bytes).
    fn grant_structure(&mut self) -> u64 {
        let p = self.structure(12);
        let dom = self.domid();
        self.put16(p, 0, dom);
        p
    }

    /// Keep the fuzzer alive and its memory its own: no real shutdown, no sleeping without a
    /// wake-up, no offlining its only vCPU, no kilobytes of console junk.
    fn guard(&mut self, c: &mut Call) {
        c.nr &= REG_MASK;
        for i in 0..5 {
            let w = self.sanitize(c.args[i] & REG_MASK);
            c.args[i] = w & REG_MASK;
        }
        let [cmd, a1, a2, ..] = c.args;
        match (c.nr, cmd) {
            (nr::SCHED_OP, sched::SCHEDOP_SHUTDOWN) => {
                // Only a pointer the hypervisor cannot read (-EFAULT): Xen shuts the domain
                // down for any reason it reads, past SHUTDOWN_MAX too.
                c.args[1] = self.rng.pick(&layout::UNREADABLE) & REG_MASK;
            }
            // Xen arms a domain watchdog for id 0 (whatever the timeout: 0 fires at once) and
            // shuts the domain down when it fires: only ids that name no armed watchdog
            // (-EINVAL), or a request it cannot read.
            (nr::SCHED_OP, sched::SCHEDOP_WATCHDOG) => {
                if self.in_scratch(a1, 8) {
                    let id = self.rng.pick(&[1u32, 2, 3, 0xffff_ffff]);
                    self.put32(a1, 0, id);
                } else {
                    c.args[1] = self.rng.pick(&layout::UNREADABLE) & REG_MASK;
                }
            }
            (nr::SCHED_OP, sched::SCHEDOP_BLOCK | sched::SCHEDOP_POLL) => c.may_block = true,
            // The old sched_op takes its shutdown reason by value.
            (nr::SCHED_OP_COMPAT, sched::SCHEDOP_SHUTDOWN | sched::SCHEDOP_BLOCK | sched::SCHEDOP_POLL) => {
                c.args[0] = sched::SCHEDOP_YIELD;
            }
            // Xen runs every entry of a multicall list unguarded and writes each result back
            // into the list (a long list walks through all our memory): only an empty list,
            // or one it cannot read (-EFAULT).
            (nr::MULTICALL, _) => {
                if self.rng.below(4) == 0 {
                    c.args[1] = 0;
                } else {
                    c.args[0] = self.rng.pick(&layout::UNREADABLE) & REG_MASK;
                }
            }
            (nr::VCPU_OP, vcpu::VCPUOP_DOWN) if a1 == 0 => c.args[1] = 1,
            // From our own memory: rarely a short line of letters, else nothing (count 0).
            (nr::CONSOLE_IO, console::CONSOLEIO_WRITE) if self.readable_junk(a2) => {
                let n = if self.in_scratch(a2, 24) && self.rng.below(16) == 0 { 1 + self.rng.below(24) } else { 0 };
                c.args[1] = n;
                for i in 0..n {
                    let ch = match self.rng.below(6) {
                        _ if i == n - 1 => b'\n',
                        0 => b' ',
                        _ => b'a' + self.rng.below(26) as u8,
                    };
                    self.put(a2 + i, &[ch]);
                }
            }
            _ => {}
        }
    }
}
