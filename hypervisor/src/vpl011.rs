//! A virtual PL011 UART (as the SBSA generic UART subset Linux drives with `arm,sbsa-uart`,
//! plus the registers the full PL011 driver touches), for guests whose console is
//! `ttyAMA0` or whose early console is `earlycon=pl011,...`.
//!
//! Transmission is instantaneous: the transmit FIFO is always empty, so the guest never
//! waits, and each byte written goes straight to the domain console. Received bytes come
//! from [`Vpl011::push_rx`]. The register layout and bit meanings are those of the Arm
//! PrimeCell UART (PL011) technical reference manual; accesses to anything else read as zero
//! and ignore writes, so a guest cannot make the model fail.

use alloc::collections::VecDeque;

/// Register offsets.
const DR: u64 = 0x000;
const RSR_ECR: u64 = 0x004;
const FR: u64 = 0x018;
const ILPR: u64 = 0x020;
const IBRD: u64 = 0x024;
const FBRD: u64 = 0x028;
const LCR_H: u64 = 0x02c;
const CR: u64 = 0x030;
const IFLS: u64 = 0x034;
const IMSC: u64 = 0x038;
const RIS: u64 = 0x03c;
const MIS: u64 = 0x040;
const ICR: u64 = 0x044;
const DMACR: u64 = 0x048;
/// PeriphID0..3 then CellID0..3, one byte per word.
const ID_BASE: u64 = 0xfe0;
/// Part 0x011, designer Arm (0x41), revision 3 (r1p5); then the PrimeCell identification.
const ID_BYTES: [u8; 8] = [0x11, 0x10, 0x34, 0x00, 0x0d, 0xf0, 0x05, 0xb1];

/// Flag register bits.
const FR_RXFE: u32 = 1 << 4;
const FR_TXFE: u32 = 1 << 7;

/// Control register: loopback (transmitted bytes are received instead of sent).
const CR_LBE: u32 = 1 << 7;
/// Reset value: transmit and receive enabled, UART disabled.
const CR_RESET: u32 = 0x300;
/// Reset value of the FIFO level select: both at half.
const IFLS_RESET: u32 = 0x12;

/// Interrupt bits (RIS, MIS, IMSC, ICR): receive, transmit, receive timeout.
pub const INT_RX: u32 = 1 << 4;
pub const INT_TX: u32 = 1 << 5;
pub const INT_RT: u32 = 1 << 6;
/// Every interrupt source the PL011 defines (modem status, RX, TX, RT, errors).
const INT_ALL: u32 = 0x7ff;

/// Bytes kept for the guest to read; more input is dropped (the guest is not reading).
pub const RX_FIFO: usize = 32;

/// One virtual PL011. Offsets passed in are relative to its base.
#[derive(Clone, Debug)]
pub struct Vpl011 {
    rx: VecDeque<u8>,
    cr: u32,
    lcr_h: u32,
    ibrd: u32,
    fbrd: u32,
    ilpr: u32,
    ifls: u32,
    imsc: u32,
    dmacr: u32,
    /// The transmit interrupt's raw state: set whenever the (always empty) FIFO is written
    /// or at reset, cleared by ICR, as a real FIFO draining past its trigger level behaves.
    tx_raw: bool,
}

impl Default for Vpl011 {
    fn default() -> Self {
        Self::new()
    }
}

impl Vpl011 {
    pub fn new() -> Self {
        Self {
            rx: VecDeque::with_capacity(RX_FIFO),
            cr: CR_RESET,
            lcr_h: 0,
            ibrd: 0,
            fbrd: 0,
            ilpr: 0,
            ifls: IFLS_RESET,
            imsc: 0,
            dmacr: 0,
            tx_raw: true,
        }
    }

    /// A guest read of `size` bytes at `offset`. Narrow reads see their part of the 32-bit
    /// register; reads that are wider than 4 bytes or misaligned read as zero.
    pub fn read(&mut self, offset: u64, size: u8) -> u64 {
        if !access_ok(offset, size) {
            return 0;
        }
        let reg = offset & !3;
        let value = match reg {
            DR => self.read_dr(),
            FR => self.flags(),
            ILPR => self.ilpr,
            IBRD => self.ibrd,
            FBRD => self.fbrd,
            LCR_H => self.lcr_h,
            CR => self.cr,
            IFLS => self.ifls,
            IMSC => self.imsc,
            RIS => self.raw_interrupts(),
            MIS => self.masked_interrupts(),
            DMACR => self.dmacr,
            ID_BASE..=0xffc => u32::from(ID_BYTES[((reg - ID_BASE) / 4) as usize]),
            _ => 0, // RSR (no errors ever), write-only ICR, reserved space
        };
        let shift = (offset & 3) * 8;
        (u64::from(value) >> shift) & size_mask(size)
    }

    /// A guest write; returns the byte to send to the console, if the write transmitted one.
    pub fn write(&mut self, offset: u64, size: u8, value: u64) -> Option<u8> {
        // Only whole registers (or DR's low byte) are written; other forms are ignored.
        if !access_ok(offset, size) || offset & 3 != 0 {
            return None;
        }
        let v = value as u32;
        match offset {
            DR => return self.transmit(v as u8),
            RSR_ECR => {} // clears error flags; none are ever set
            ILPR => self.ilpr = v & 0xff,
            IBRD => self.ibrd = v & 0xffff,
            FBRD => self.fbrd = v & 0x3f,
            LCR_H => self.lcr_h = v & 0xff,
            CR => self.cr = v & 0xffff,
            IFLS => self.ifls = v & 0x3f,
            IMSC => self.imsc = v & INT_ALL,
            // Only TX can be cleared: RX and RT follow the receive FIFO.
            ICR if v & INT_TX != 0 => self.tx_raw = false,
            DMACR => self.dmacr = v & 0x7,
            _ => {}
        }
        None
    }

    /// Input for the guest; returns how many bytes fit in the receive FIFO.
    pub fn push_rx(&mut self, bytes: &[u8]) -> usize {
        let n = bytes.len().min(RX_FIFO - self.rx.len());
        self.rx.extend(&bytes[..n]);
        n
    }

    /// The level of the interrupt line: any unmasked source pending.
    pub fn irq_level(&self) -> bool {
        self.masked_interrupts() != 0
    }

    fn read_dr(&mut self) -> u32 {
        // No framing, parity, break or overrun errors: bits [11:8] stay clear.
        self.rx.pop_front().map_or(0, u32::from)
    }

    fn transmit(&mut self, byte: u8) -> Option<u8> {
        self.tx_raw = true;
        if self.cr & CR_LBE != 0 {
            self.push_rx(&[byte]);
            return None;
        }
        Some(byte)
    }

    fn flags(&self) -> u32 {
        let rx_empty = if self.rx.is_empty() { FR_RXFE } else { 0 };
        FR_TXFE | rx_empty
    }

    fn raw_interrupts(&self) -> u32 {
        let rx = if self.rx.is_empty() { 0 } else { INT_RX | INT_RT };
        let tx = if self.tx_raw { INT_TX } else { 0 };
        rx | tx
    }

    fn masked_interrupts(&self) -> u32 {
        self.raw_interrupts() & self.imsc
    }
}

fn access_ok(offset: u64, size: u8) -> bool {
    matches!(size, 1 | 2 | 4) && offset.is_multiple_of(u64::from(size)) && offset < 0x1000
}

fn size_mask(size: u8) -> u64 {
    (1u64 << (u64::from(size) * 8)) - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transmits_every_byte_without_ever_being_full() {
        let mut u = Vpl011::new();
        for b in b"hi\n" {
            assert_eq!(u.read(FR, 4) as u32 & (1 << 5 | 1 << 3), 0, "never TXFF or BUSY");
            assert_eq!(u.write(DR, 4, u64::from(*b)), Some(*b));
        }
        // Byte-wide writes (earlycon's default) and 16-bit writes work too.
        assert_eq!(u.write(DR, 1, 0x41), Some(b'A'));
        assert_eq!(u.write(DR, 2, 0x142), Some(b'B'));
        assert_eq!(u.read(FR, 4) as u32, FR_TXFE | FR_RXFE);
    }

    #[test]
    fn receives_pushed_input_in_order() {
        let mut u = Vpl011::new();
        assert_eq!(u.read(DR, 4), 0);
        assert_eq!(u.push_rx(b"ok"), 2);
        assert_eq!(u.read(FR, 4) as u32 & FR_RXFE, 0);
        assert_eq!(u.read(DR, 4), u64::from(b'o'));
        assert_eq!(u.read(DR, 1), u64::from(b'k'));
        assert_eq!(u.read(FR, 4) as u32 & FR_RXFE, FR_RXFE);
        // The FIFO bounds what is kept.
        assert_eq!(u.push_rx(&[b'x'; 40]), RX_FIFO);
        assert_eq!(u.push_rx(b"y"), 0);
    }

    #[test]
    fn interrupts_follow_mask_and_state() {
        let mut u = Vpl011::new();
        assert!(!u.irq_level(), "everything is masked at reset");
        assert_eq!(u.read(RIS, 4) as u32, INT_TX);
        u.write(IMSC, 4, u64::from(INT_TX));
        assert!(u.irq_level());
        assert_eq!(u.read(MIS, 4) as u32, INT_TX);
        // ICR clears the TX interrupt until the next byte is written.
        u.write(ICR, 4, u64::from(INT_TX));
        assert!(!u.irq_level());
        u.write(DR, 4, u64::from(b'z'));
        assert!(u.irq_level());
        // RX and RT assert while input waits, whatever ICR says.
        u.write(IMSC, 4, u64::from(INT_RX | INT_RT));
        assert!(!u.irq_level());
        u.push_rx(b"q");
        u.write(ICR, 4, u64::from(INT_ALL));
        assert_eq!(u.read(MIS, 4) as u32, INT_RX | INT_RT);
        u.read(DR, 4);
        assert!(!u.irq_level());
    }

    #[test]
    fn loopback_turns_output_into_input() {
        let mut u = Vpl011::new();
        u.write(CR, 4, u64::from(CR_RESET | CR_LBE | 1));
        assert_eq!(u.write(DR, 4, u64::from(b'L')), None);
        assert_eq!(u.read(DR, 4), u64::from(b'L'));
    }

    #[test]
    fn control_registers_keep_what_is_written() {
        let mut u = Vpl011::new();
        assert_eq!(u.read(CR, 4), u64::from(CR_RESET));
        assert_eq!(u.read(IFLS, 4), u64::from(IFLS_RESET));
        for (reg, v) in [(IBRD, 0x27), (FBRD, 0x4), (LCR_H, 0x70), (CR, 0x301), (IFLS, 0x9), (DMACR, 0)] {
            u.write(reg, 4, v);
            assert_eq!(u.read(reg, 4), v, "register {reg:#x}");
        }
        // Writes to read-only or reserved registers change nothing.
        u.write(FR, 4, 0);
        u.write(RIS, 4, 0xffff);
        u.write(0x800, 4, 1);
        assert_eq!(u.read(FR, 4) as u32, FR_TXFE | FR_RXFE);
        assert_eq!(u.read(0x800, 4), 0);
        assert_eq!(u.read(RSR_ECR, 4), 0);
    }

    #[test]
    fn identifies_as_a_primecell_pl011() {
        let mut u = Vpl011::new();
        let id =
            |u: &mut Vpl011, base: u64| (0..4).fold(0u32, |acc, i| acc | (u.read(base + 4 * i, 4) as u32) << (8 * i));
        let periph = id(&mut u, 0xfe0);
        assert_eq!(periph & 0x000f_ffff, 0x0004_1011, "part 0x011, designer 0x41");
        assert_eq!(id(&mut u, 0xff0), 0xb105_f00d);
    }

    #[test]
    fn odd_accesses_are_harmless() {
        let mut u = Vpl011::new();
        u.push_rx(b"r");
        // Narrow reads see their part of a register.
        assert_eq!(u.read(CR + 1, 1), 0x3);
        // Misaligned, oversized or out-of-page accesses read 0 and write nothing.
        assert_eq!(u.read(CR + 1, 4), 0);
        assert_eq!(u.read(CR, 8), 0);
        assert_eq!(u.read(0x1000, 4), 0);
        assert_eq!(u.read(u64::MAX, 1), 0);
        assert_eq!(u.write(DR + 1, 1, 0x41), None);
        assert_eq!(u.write(DR, 8, 0x41), None);
        assert_eq!(u.write(DR, 3, 0x41), None);
        assert_eq!(u.read(DR, 4), u64::from(b'r'), "input survived");
    }
}

/// The model as a domain's MMIO dispatch drives it.
#[cfg(test)]
mod domain_tests {
    use crate::domain::Domain;
    use crate::guest_dt::{VPL011_BASE, VPL011_SPI};
    use arch::exit::{BadGuestAddress, Exit, MmioAccess, VirtualCpu};

    #[derive(Default)]
    struct Recorder {
        reads: Vec<u64>,
        lines: Vec<(u32, bool)>,
    }

    impl VirtualCpu for Recorder {
        fn run(&mut self) -> Exit {
            Exit::Halt
        }
        fn set_hypercall_result(&mut self, _: u64) {}
        fn pc(&self) -> u64 {
            0x4020_0000
        }
        fn copy_from_guest(&mut self, gva: u64, _: &mut [u8]) -> Result<(), BadGuestAddress> {
            Err(BadGuestAddress(gva))
        }
        fn copy_to_guest(&mut self, gva: u64, _: &[u8]) -> Result<(), BadGuestAddress> {
            Err(BadGuestAddress(gva))
        }
        fn complete_mmio_read(&mut self, value: u64) {
            self.reads.push(value);
        }
        fn set_irq_line(&mut self, intid: u32, level: bool) {
            self.lines.push((intid, level));
        }
    }

    fn access(offset: u64, write: Option<u64>) -> MmioAccess {
        MmioAccess { gpa: VPL011_BASE + offset, size: 4, write }
    }

    #[test]
    fn domain_routes_its_page_to_the_uart() {
        let mut d = Domain::new(1);
        let mut v = Recorder::default();
        // Without a vpl011 the page is nobody's.
        assert!(d.mmio(&mut v, access(0x18, None)).is_err());
        d.vpl011 = Some(super::Vpl011::new());
        d.mmio(&mut v, access(0x18, None)).unwrap();
        assert_eq!(v.reads, [0x90], "TXFE | RXFE");
        d.mmio(&mut v, access(0x38, Some(1 << 5))).unwrap();
        assert_eq!(v.lines.last(), Some(&(VPL011_SPI, true)), "TX interrupt unmasked");
        for b in b"ok\n" {
            d.mmio(&mut v, access(0, Some(u64::from(*b)))).unwrap();
        }
        assert!(!d.console_pending(), "the line went out");
        // Outside the page is still a fault.
        assert!(d.mmio(&mut v, access(0x1000, None)).is_err());
        assert!(d.mmio(&mut v, MmioAccess { gpa: VPL011_BASE - 4, size: 4, write: None }).is_err());
    }
}
