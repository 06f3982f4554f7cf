//! Console UARTs as register models: which register says "room to transmit", which one takes
//! the byte. The backends' consoles drive them through [`Mmio`] on the real device (polled,
//! lock-free, usable with the MMU off); host tests drive them against simulated devices.
//!
//! Firmware (or QEMU) has configured baud rate and framing already, as for Linux's earlycon:
//! these models only transmit.

/// The register layouts we drive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UartKind {
    /// ARM PL011 (and SBSA's subset): DR at 0x00, FR.TXFF (bit 5) at 0x18.
    Pl011,
    /// 8250/16550 and compatibles (incl. the BCM2835 mini UART): THR at register 0, LSR.THRE
    /// (bit 5) at register 5, registers `1 << reg_shift` bytes apart. With a shift of 2 or
    /// more the registers are 32-bit words, else bytes.
    Ns16550 { reg_shift: u8 },
    /// Cadence UART (Xilinx ZynqMP/Zynq): Channel_sts.TXFULL (bit 4) at 0x2c, TX_RX_FIFO at 0x30.
    Cadence,
    /// i.MX UART: UTS.TXFULL (bit 4) at 0xb4, UTXD at 0x40.
    Imx,
}

/// A console UART: its model and its physical base address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Uart {
    pub kind: UartKind,
    pub base: u64,
}

/// Width of one register access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Width {
    U8,
    U32,
}

/// One register: offset from the UART's base and access width.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reg {
    pub offset: u64,
    pub width: Width,
}

/// Register access to one UART, at offsets from its base.
pub trait Mmio {
    fn read(&mut self, reg: Reg) -> u32;
    fn write(&mut self, reg: Reg, value: u32);
}

const fn word(offset: u64) -> Reg {
    Reg { offset, width: Width::U32 }
}

impl UartKind {
    /// What the banner calls it.
    pub const fn name(self) -> &'static str {
        match self {
            UartKind::Pl011 => "PL011",
            UartKind::Ns16550 { .. } => "16550",
            UartKind::Cadence => "Cadence",
            UartKind::Imx => "i.MX",
        }
    }

    /// The status register, the bit in it, and whether a set bit means "room" (else "full").
    pub const fn tx_status(self) -> (Reg, u32, bool) {
        match self {
            UartKind::Pl011 => (word(0x18), 1 << 5, false),
            UartKind::Ns16550 { reg_shift } => (ns16550_reg(5, reg_shift), 1 << 5, true),
            UartKind::Cadence => (word(0x2c), 1 << 4, false),
            UartKind::Imx => (word(0xb4), 1 << 4, false),
        }
    }

    /// The register a byte to transmit is written to.
    pub const fn tx_data(self) -> Reg {
        match self {
            UartKind::Pl011 => word(0x00),
            UartKind::Ns16550 { reg_shift } => ns16550_reg(0, reg_shift),
            UartKind::Cadence => word(0x30),
            UartKind::Imx => word(0x40),
        }
    }

    /// Register writes that make the transmitter usable, done once before the first byte:
    /// the Cadence UART transmits only with Control.TX_EN set (Linux's earlycon sets it the
    /// same way, with both FIFOs reset), where firmware may have left it off. The others
    /// need nothing beyond what firmware did.
    pub fn init(self, io: &mut impl Mmio) {
        if self == UartKind::Cadence {
            const CR: Reg = word(0x00);
            const RXRST: u32 = 1 << 0;
            const TXRST: u32 = 1 << 1;
            const TX_EN: u32 = 1 << 4;
            io.write(CR, TX_EN | TXRST | RXRST);
        }
    }

    /// Whether the transmitter takes a byte now.
    pub fn tx_ready(self, io: &mut impl Mmio) -> bool {
        let (reg, bit, set_means_room) = self.tx_status();
        (io.read(reg) & bit != 0) == set_means_room
    }

    /// Wait for room (at most `max_polls` reads), then send `byte`. A UART that never has
    /// room (absent, unclocked) costs a bounded wait per byte, never a hang.
    pub fn put(self, io: &mut impl Mmio, byte: u8, max_polls: u32) {
        for _ in 0..max_polls {
            if self.tx_ready(io) {
                break;
            }
            core::hint::spin_loop();
        }
        io.write(self.tx_data(), u32::from(byte));
    }
}

/// A UART's registers at their physical address (identity-mapped, or the MMU off).
pub struct Device(pub usize);

impl Mmio for Device {
    fn read(&mut self, reg: Reg) -> u32 {
        let addr = self.0 + reg.offset as usize;
        // SAFETY: `Device` is only made for the UART the device tree names (see
        // [`console::set`]), whose registers are identity-mapped as device memory or reached
        // with the MMU off; `reg` is one of its registers, read at the width its model gives.
        // Reading a status register has no effect on memory Rust knows about.
        unsafe {
            match reg.width {
                Width::U8 => u32::from(core::ptr::read_volatile(addr as *const u8)),
                Width::U32 => core::ptr::read_volatile(addr as *const u32),
            }
        }
    }
    fn write(&mut self, reg: Reg, value: u32) {
        let addr = self.0 + reg.offset as usize;
        // SAFETY: as `read`, for its control and transmit registers.
        unsafe {
            match reg.width {
                Width::U8 => core::ptr::write_volatile(addr as *mut u8, value as u8),
                Width::U32 => core::ptr::write_volatile(addr as *mut u32, value),
            }
        }
    }
}

/// The physical console both ARM backends write to: lock-free (any CPU, the MMU on or off,
/// while the core's log lock is held), polled.
pub mod console {
    use super::{Device, Uart, UartKind};
    use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

    /// Base of the UART, 0 until the device tree named one.
    static BASE: AtomicUsize = AtomicUsize::new(0);
    /// Its model, as [`encode`] writes it.
    static KIND: AtomicU32 = AtomicU32::new(0);
    /// Status polls per byte before it is written anyway (an unclocked UART never blocks us).
    const MAX_POLLS: u32 = 1_000_000;

    fn encode(kind: UartKind) -> u32 {
        match kind {
            UartKind::Pl011 => 0,
            UartKind::Ns16550 { reg_shift } => 0x100 | u32::from(reg_shift),
            UartKind::Cadence => 2,
            UartKind::Imx => 3,
        }
    }

    fn decode(v: u32) -> UartKind {
        match v {
            2 => UartKind::Cadence,
            3 => UartKind::Imx,
            v if v & 0x100 != 0 => UartKind::Ns16550 { reg_shift: v as u8 },
            _ => UartKind::Pl011,
        }
    }

    /// Use `uart` from now on (none, or one outside the address space: output is dropped).
    /// Plain stores, safe with the MMU off.
    pub fn set(uart: Option<Uart>) {
        let Some((u, base)) = uart.and_then(|u| Some((u, usize::try_from(u.base).ok()?))) else {
            BASE.store(0, Ordering::Relaxed);
            return;
        };
        u.kind.init(&mut Device(base));
        KIND.store(encode(u.kind), Ordering::Relaxed);
        BASE.store(base, Ordering::Relaxed);
    }

    pub fn has_uart() -> bool {
        BASE.load(Ordering::Relaxed) != 0
    }

    /// Write bytes to the UART (`\n` as `\r\n` if `crlf`); dropped if there is no UART.
    pub fn write(bytes: &[u8], crlf: bool) {
        let base = BASE.load(Ordering::Relaxed);
        if base == 0 {
            return;
        }
        let kind = decode(KIND.load(Ordering::Relaxed));
        let mut dev = Device(base);
        for &b in bytes {
            if crlf && b == b'\n' {
                kind.put(&mut dev, b'\r', MAX_POLLS);
            }
            kind.put(&mut dev, b, MAX_POLLS);
        }
    }
}

const fn ns16550_reg(index: u64, reg_shift: u8) -> Reg {
    let width = if reg_shift >= 2 { Width::U32 } else { Width::U8 };
    Reg { offset: index << reg_shift, width }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    /// A transmitter with a FIFO of `depth` bytes that drains one byte every `drain_every`
    /// status reads; records what was sent and every access's offset and width.
    struct Device {
        kind: UartKind,
        depth: usize,
        fifo: usize,
        drain_every: u32,
        reads: u32,
        sent: Vec<u8>,
        accesses: Vec<Reg>,
        overrun: bool,
        /// `init` is being tested: the write goes to the control register.
        expect_init: bool,
        init_value: Option<u32>,
    }

    impl Device {
        fn new(kind: UartKind, depth: usize, drain_every: u32) -> Self {
            Self {
                kind,
                depth,
                fifo: 0,
                drain_every,
                reads: 0,
                sent: Vec::new(),
                accesses: Vec::new(),
                overrun: false,
                expect_init: false,
                init_value: None,
            }
        }
    }

    impl Mmio for Device {
        fn read(&mut self, reg: Reg) -> u32 {
            self.accesses.push(reg);
            let (status, bit, set_means_room) = self.kind.tx_status();
            assert_eq!(reg, status, "only the status register is read");
            self.reads += 1;
            if self.reads.is_multiple_of(self.drain_every) && self.fifo > 0 {
                self.fifo -= 1;
            }
            let room = self.fifo < self.depth;
            if room == set_means_room { bit } else { 0 }
        }
        fn write(&mut self, reg: Reg, value: u32) {
            self.accesses.push(reg);
            if self.expect_init {
                self.init_value = Some(value);
                return;
            }
            assert_eq!(reg, self.kind.tx_data());
            self.overrun |= self.fifo == self.depth;
            self.fifo += 1;
            self.sent.push(value as u8);
        }
    }

    const ALL: [UartKind; 5] = [
        UartKind::Pl011,
        UartKind::Ns16550 { reg_shift: 0 },
        UartKind::Ns16550 { reg_shift: 2 },
        UartKind::Cadence,
        UartKind::Imx,
    ];

    #[test]
    fn only_the_cadence_uart_is_switched_on_before_use() {
        for kind in ALL {
            let mut dev = Device::new(kind, 4, 1);
            dev.expect_init = true;
            kind.init(&mut dev);
            let expected: &[Reg] = if kind == UartKind::Cadence { &[word(0)] } else { &[] };
            assert_eq!(dev.accesses, expected, "{kind:?}");
            if kind == UartKind::Cadence {
                assert_eq!(dev.init_value, Some(0x13), "Control: TX_EN | TXRST | RXRST");
            }
        }
    }

    #[test]
    fn every_model_sends_every_byte_without_overrunning_its_fifo() {
        for kind in ALL {
            let mut dev = Device::new(kind, 4, 3);
            for &b in b"hello, board\n" {
                kind.put(&mut dev, b, 1_000);
            }
            assert_eq!(dev.sent, b"hello, board\n", "{kind:?}");
            assert!(!dev.overrun, "{kind:?} wrote into a full FIFO");
        }
    }

    #[test]
    fn register_layouts_match_the_datasheets() {
        // PL011: FR at 0x18, DR at 0; Cadence: Channel_sts 0x2c, FIFO 0x30; i.MX: UTS 0xb4, UTXD 0x40.
        assert_eq!(UartKind::Pl011.tx_status(), (word(0x18), 0x20, false));
        assert_eq!(UartKind::Pl011.tx_data(), word(0));
        assert_eq!(UartKind::Cadence.tx_status(), (word(0x2c), 0x10, false));
        assert_eq!(UartKind::Cadence.tx_data(), word(0x30));
        assert_eq!(UartKind::Imx.tx_status(), (word(0xb4), 0x10, false));
        assert_eq!(UartKind::Imx.tx_data(), word(0x40));
        // 16550 with byte registers: LSR at 5; the BCM2835 mini UART (shift 2): AUX_MU_LSR at 0x14.
        let bytes = UartKind::Ns16550 { reg_shift: 0 };
        assert_eq!(bytes.tx_status(), (Reg { offset: 5, width: Width::U8 }, 0x20, true));
        assert_eq!(bytes.tx_data(), Reg { offset: 0, width: Width::U8 });
        let mini = UartKind::Ns16550 { reg_shift: 2 };
        assert_eq!(mini.tx_status(), (word(0x14), 0x20, true));
        assert_eq!(mini.tx_data(), word(0));
    }

    #[test]
    fn a_uart_that_never_has_room_costs_a_bounded_wait() {
        for kind in ALL {
            let mut dev = Device::new(kind, 0, u32::MAX);
            kind.put(&mut dev, b'x', 50);
            assert_eq!(dev.reads, 50, "{kind:?}");
            assert_eq!(dev.sent, b"x");
        }
    }
}
