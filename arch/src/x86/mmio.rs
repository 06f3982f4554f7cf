//! Decoding the instruction behind a trapped MMIO access, for devices the hypervisor emulates
//! on an unmapped guest-physical page (the xAPIC page).
//!
//! Neither backend tells us what a nested-page / EPT fault's instruction wanted: VT-x gives
//! the address and the direction, AMD-V without decode assists (QEMU's TCG) not even the
//! length. So the instruction is fetched from the guest and decoded here, for the moves a
//! kernel uses to reach device registers: `MOV` between a register or an immediate and memory
//! (88, 89, 8A, 8B, C6 /0, C7 /0, A0-A3 with a direct offset), `MOVZX`/`MOVSX` from memory
//! (0F B6, B7, BE, BF) and `XCHG` of a register with memory (86, 87; Linux's xAPIC writes on
//! CPUs with erratum 11AP). Prefixes: operand size (66), address size (67), segment overrides,
//! LOCK, and REX in 64-bit mode. Anything else (string moves, arithmetic on memory, a register
//! operand) is refused, and the backend reports the fault instead of guessing.

use super::policy::Gprs;

/// The code segment's default sizes when the instruction ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuMode {
    /// Real mode or a 16-bit protected-mode code segment.
    Bits16,
    /// 32-bit protected mode (or compatibility mode).
    Bits32,
    /// 64-bit mode.
    Bits64,
}

impl CpuMode {
    /// From CS.L (with EFER.LMA) and CS.D.
    pub fn from_cs(long: bool, default32: bool) -> Self {
        match (long, default32) {
            (true, _) => CpuMode::Bits64,
            (false, true) => CpuMode::Bits32,
            (false, false) => CpuMode::Bits16,
        }
    }
}

/// A general-purpose register operand: x86 number 0..15, or AH, CH, DH, BH (`high_byte`:
/// bits 15:8 of register `index - 4`), which byte operands without REX name as 4..7.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reg {
    pub index: u8,
    pub high_byte: bool,
}

/// Where the value a store writes comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Reg(Reg),
    Imm(u64),
}

/// What the instruction does with the `size` bytes of memory it touches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// A load into `reg` (`dest_size` bytes written), zero- or sign-extended from `size`.
    Load {
        reg: Reg,
        dest_size: u8,
        sign: bool,
    },
    Store(Source),
    /// Memory and `reg` swap: a load and a store of the register's old value.
    Xchg(Reg),
}

/// A decoded access: `len` bytes of instruction, `size` bytes of memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    pub len: u8,
    pub size: u8,
    pub op: Op,
}

/// Decode the instruction in `code` (as many bytes as could be fetched, up to 15) run in
/// `mode`; `None` for anything but the moves listed in the module's description.
pub fn decode(code: &[u8], mode: CpuMode) -> Option<Access> {
    let mut opsize16 = false;
    let mut addr_override = false;
    let mut at = 0usize;
    // Legacy prefixes, then REX (64-bit mode only, immediately before the opcode).
    loop {
        match *code.get(at)? {
            0x66 => opsize16 = true,
            0x67 => addr_override = true,
            0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0x65 | 0xf0 => {}
            _ => break,
        }
        at += 1;
    }
    let mut rex = 0u8;
    if mode == CpuMode::Bits64 && (0x40..=0x4f).contains(code.get(at)?) {
        rex = code[at];
        at += 1;
    }
    let rex_w = rex & 8 != 0;
    let full = match (mode, rex_w, opsize16) {
        (CpuMode::Bits64, true, _) => 8,
        (CpuMode::Bits16, _, false) | (CpuMode::Bits32 | CpuMode::Bits64, _, true) => 2,
        _ => 4,
    };
    let addr_size = match (mode, addr_override) {
        (CpuMode::Bits64, false) => 8,
        (CpuMode::Bits64, true) | (CpuMode::Bits32, false) | (CpuMode::Bits16, true) => 4,
        (CpuMode::Bits32, true) | (CpuMode::Bits16, false) => 2,
    };
    let byte_reg = |n: u8| -> Reg {
        if rex == 0 && (4..8).contains(&n) {
            Reg { index: n - 4, high_byte: true }
        } else {
            Reg { index: n, high_byte: false }
        }
    };
    let opcode = *code.get(at)?;
    at += 1;
    let (op, size, imm_size) = match opcode {
        0x88 | 0x89 | 0x8a | 0x8b | 0x86 | 0x87 | 0xc6 | 0xc7 => {
            let (len, reg_field) = modrm(code, at, rex, addr_size)?;
            let byte = matches!(opcode, 0x88 | 0x8a | 0x86 | 0xc6);
            let size = if byte { 1 } else { full };
            let reg = if byte { byte_reg(reg_field) } else { Reg { index: reg_field, high_byte: false } };
            at += len;
            match opcode {
                0x88 | 0x89 => (Op::Store(Source::Reg(reg)), size, 0),
                0x8a | 0x8b => (Op::Load { reg, dest_size: size, sign: false }, size, 0),
                0x86 | 0x87 => (Op::Xchg(reg), size, 0),
                // C6/C7 only with /0; an immediate is at most 32 bits (sign-extended for REX.W).
                _ if reg_field & 7 != 0 => return None,
                _ => (Op::Store(Source::Imm(0)), size, size.min(4)),
            }
        }
        0xa0..=0xa3 => {
            at += addr_size;
            let size = if opcode & 1 == 0 { 1 } else { full };
            let reg = Reg { index: 0, high_byte: false };
            let op = if opcode < 0xa2 {
                Op::Load { reg, dest_size: size, sign: false }
            } else {
                Op::Store(Source::Reg(reg))
            };
            (op, size, 0)
        }
        0x0f => {
            let second = *code.get(at)?;
            at += 1;
            if !matches!(second, 0xb6 | 0xb7 | 0xbe | 0xbf) {
                return None;
            }
            let (len, reg_field) = modrm(code, at, rex, addr_size)?;
            at += len;
            let size = if second & 1 == 0 { 1 } else { 2 };
            (
                Op::Load { reg: Reg { index: reg_field, high_byte: false }, dest_size: full, sign: second >= 0xbe },
                size,
                0,
            )
        }
        _ => return None,
    };
    let op = match op {
        Op::Store(Source::Imm(_)) => {
            let bytes = code.get(at..at + imm_size as usize)?;
            let mut v = bytes.iter().rev().fold(0u64, |v, &b| (v << 8) | b as u64);
            if size == 8 {
                v = v as u32 as i32 as i64 as u64;
            }
            at += imm_size as usize;
            Op::Store(Source::Imm(v))
        }
        other => other,
    };
    if at > code.len() || at > 15 {
        return None;
    }
    Some(Access { len: at as u8, size, op })
}

/// The length of a ModRM operand starting at `code[at]` (ModRM, SIB, displacement) and its
/// reg field (with REX.R); `None` for a register operand (mod = 3), which is not memory.
fn modrm(code: &[u8], at: usize, rex: u8, addr_size: usize) -> Option<(usize, u8)> {
    let m = *code.get(at)?;
    let (md, reg, rm) = (m >> 6, ((m >> 3) & 7) | ((rex & 4) << 1), m & 7);
    if md == 3 {
        return None;
    }
    let len = if addr_size == 2 {
        1 + match (md, rm) {
            (0, 6) => 2,
            (0, _) => 0,
            (1, _) => 1,
            _ => 2,
        }
    } else {
        let sib = rm == 4;
        let base = if sib { *code.get(at + 1)? & 7 } else { rm };
        let disp = match md {
            0 if base == 5 => 4,
            0 => 0,
            1 => 1,
            _ => 4,
        };
        1 + sib as usize + disp
    };
    Some((len, reg))
}

/// The low `size` bytes of register `r`.
pub fn read_reg(regs: &Gprs, r: Reg, size: u8) -> u64 {
    let v = regs.0[r.index as usize & 15];
    let v = if r.high_byte { v >> 8 } else { v };
    v & mask(size)
}

/// Write `size` bytes of `value` into register `r` as the CPU does: a 32-bit write clears
/// bits 63:32, narrower ones keep the bits above them.
pub fn write_reg(regs: &mut Gprs, r: Reg, size: u8, value: u64) {
    let slot = &mut regs.0[r.index as usize & 15];
    *slot = match (size, r.high_byte) {
        (_, true) => (*slot & !0xff00) | ((value & 0xff) << 8),
        (4, _) => value & 0xffff_ffff,
        (8, _) => value,
        (s, _) => (*slot & !mask(s)) | (value & mask(s)),
    };
}

fn mask(size: u8) -> u64 {
    if size >= 8 { u64::MAX } else { (1u64 << (8 * size)) - 1 }
}

/// Sign-extend the low `size` bytes of `v`.
fn sign_extend(v: u64, size: u8) -> u64 {
    let shift = 64 - 8 * u32::from(size.clamp(1, 8));
    (((v << shift) as i64) >> shift) as u64
}

/// Carry out `access` on a device: `load(size)` reads it, `store(size, value)` writes it;
/// the registers are updated as the instruction would.
pub fn perform(access: &Access, regs: &mut Gprs, load: impl FnOnce(u8) -> u64, store: impl FnOnce(u8, u64)) {
    let size = access.size;
    match access.op {
        Op::Load { reg, dest_size, sign } => {
            let v = load(size) & mask(size);
            let v = if sign { sign_extend(v, size) } else { v };
            write_reg(regs, reg, dest_size, v);
        }
        Op::Store(Source::Reg(r)) => store(size, read_reg(regs, r, size)),
        Op::Store(Source::Imm(v)) => store(size, v & mask(size)),
        Op::Xchg(r) => {
            let old = load(size) & mask(size);
            store(size, read_reg(regs, r, size));
            write_reg(regs, r, size, old);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::x86::policy::{RAX, RBX, RCX, RDX, RSI};

    const EAX: Reg = Reg { index: 0, high_byte: false };

    fn d64(code: &[u8]) -> Option<Access> {
        decode(code, CpuMode::Bits64)
    }

    #[test]
    fn linux_xapic_accessors_decode() {
        // mov %eax, 0xffffffffff5fc0b0 (absolute through SIB with no base): 8 bytes... as
        // gcc emits it: 89 04 25 disp32.
        assert_eq!(
            d64(&[0x89, 0x04, 0x25, 0xb0, 0xc0, 0x5f, 0xff, 0x90]),
            Some(Access { len: 7, size: 4, op: Op::Store(Source::Reg(EAX)) })
        );
        // mov 0xffffffffff5fc030, %eax: 8b 04 25 disp32.
        assert_eq!(
            d64(&[0x8b, 0x04, 0x25, 0x30, 0xc0, 0x5f, 0xff]),
            Some(Access { len: 7, size: 4, op: Op::Load { reg: EAX, dest_size: 4, sign: false } })
        );
        // mov %esi, (%rdx, %rax): 89 34 02; mov 0x300(%rdi), %ecx: 8b 8f 00 03 00 00.
        let esi = Reg { index: 6, high_byte: false };
        assert_eq!(d64(&[0x89, 0x34, 0x02]), Some(Access { len: 3, size: 4, op: Op::Store(Source::Reg(esi)) }));
        let ecx = Reg { index: 1, high_byte: false };
        assert_eq!(
            d64(&[0x8b, 0x8f, 0x00, 0x03, 0x00, 0x00]),
            Some(Access { len: 6, size: 4, op: Op::Load { reg: ecx, dest_size: 4, sign: false } })
        );
        // xchg %eax, abs (erratum 11AP), and with REX.R: xchg %r9d, (%rbx).
        assert_eq!(d64(&[0x87, 0x04, 0x25, 0, 0, 0, 0]).map(|a| a.op), Some(Op::Xchg(EAX)));
        assert_eq!(
            d64(&[0x44, 0x87, 0x0b]).map(|a| (a.len, a.op)),
            Some((3, Op::Xchg(Reg { index: 9, high_byte: false })))
        );
    }

    #[test]
    fn immediates_prefixes_and_widths() {
        // movl $0x1ff, 0xf0(%rax): c7 80 f0 00 00 00 ff 01 00 00.
        assert_eq!(
            d64(&[0xc7, 0x80, 0xf0, 0, 0, 0, 0xff, 0x01, 0, 0]),
            Some(Access { len: 10, size: 4, op: Op::Store(Source::Imm(0x1ff)) })
        );
        // movq $-1, (%rax): REX.W C7 /0 sign-extends its 32-bit immediate.
        assert_eq!(
            d64(&[0x48, 0xc7, 0x00, 0xff, 0xff, 0xff, 0xff]).map(|a| (a.size, a.op)),
            Some((8, Op::Store(Source::Imm(u64::MAX))))
        );
        // movw $0x12, (%rax) with 66; movb $5, 1(%rax): C6 /0.
        assert_eq!(d64(&[0x66, 0xc7, 0x00, 0x12, 0x00]).map(|a| (a.len, a.size)), Some((5, 2)));
        assert_eq!(d64(&[0xc6, 0x40, 0x01, 0x05]), Some(Access { len: 4, size: 1, op: Op::Store(Source::Imm(5)) }));
        // mov 8(%rax), %ah (no REX: register 4 is AH) and with REX it is %spl.
        assert_eq!(
            d64(&[0x8a, 0x60, 0x08]).map(|a| a.op),
            Some(Op::Load { reg: Reg { index: 0, high_byte: true }, dest_size: 1, sign: false })
        );
        assert_eq!(
            d64(&[0x40, 0x8a, 0x60, 0x08]).map(|a| a.op),
            Some(Op::Load { reg: Reg { index: 4, high_byte: false }, dest_size: 1, sign: false })
        );
        // movzwl (%rax), %edx: 0f b7 10; movsbq 0x20(%rbx), %rsi: 48 0f be 73 20.
        assert_eq!(d64(&[0x0f, 0xb7, 0x10]).map(|a| (a.len, a.size)), Some((3, 2)));
        assert_eq!(
            d64(&[0x48, 0x0f, 0xbe, 0x73, 0x20]).map(|a| a.op),
            Some(Op::Load { reg: Reg { index: 6, high_byte: false }, dest_size: 8, sign: true })
        );
        // A segment override and RIP-relative addressing: 65 8b 05 disp32.
        assert_eq!(d64(&[0x65, 0x8b, 0x05, 1, 2, 3, 4]).map(|a| a.len), Some(7));
        // mov moffs64, %eax: a1 + 8 address bytes in 64-bit mode.
        assert_eq!(d64(&[0xa1, 0, 0, 0xe0, 0xfe, 0, 0, 0, 0]).map(|a| a.len), Some(9));
    }

    #[test]
    fn thirty_two_and_sixteen_bit_modes() {
        // 32-bit: mov %eax, 0xfee000b0 (a3 moffs32) and mov 0xfee00020, %ebx (8b 1d disp32).
        let d32 = |c: &[u8]| decode(c, CpuMode::Bits32);
        assert_eq!(
            d32(&[0xa3, 0xb0, 0, 0xe0, 0xfe]),
            Some(Access { len: 5, size: 4, op: Op::Store(Source::Reg(EAX)) })
        );
        assert_eq!(d32(&[0x8b, 0x1d, 0x20, 0, 0xe0, 0xfe]).map(|a| a.len), Some(6));
        // 0x40 is INC EAX there, not REX: refused.
        assert_eq!(d32(&[0x40, 0x8b, 0x00]), None);
        // 16-bit addressing: mov (%bx+%si+disp16), %ax: 8b 80 disp16 = 4 bytes, 2-byte operand.
        assert_eq!(decode(&[0x8b, 0x80, 0x10, 0x00], CpuMode::Bits16).map(|a| (a.len, a.size)), Some((4, 2)));
        // 67 in 32-bit mode switches to 16-bit addressing: disp16 only.
        assert_eq!(d32(&[0x67, 0x89, 0x06, 0x34, 0x12]).map(|a| a.len), Some(5));
    }

    #[test]
    fn what_is_not_a_move_is_refused() {
        assert_eq!(d64(&[0x89, 0xc0]), None, "register operand");
        assert_eq!(d64(&[0x01, 0x00]), None, "ADD to memory");
        assert_eq!(d64(&[0xf3, 0xa5]), None, "REP MOVS");
        assert_eq!(d64(&[0xc7, 0x08, 0, 0, 0, 0]), None, "C7 /1");
        assert_eq!(d64(&[0x8b, 0x04]), None, "truncated");
        assert_eq!(d64(&[0x0f, 0x01, 0xd9]), None);
        assert_eq!(d64(&[]), None);
    }

    #[test]
    fn registers_are_read_and_written_as_the_cpu_does() {
        let mut regs = Gprs::default();
        regs.0[RAX] = 0xffff_ffff_ffff_ffff;
        regs.0[RBX] = 0x1122_3344_5566_7788;
        write_reg(&mut regs, EAX, 4, 0x30);
        assert_eq!(regs.0[RAX], 0x30, "32-bit writes zero-extend");
        regs.0[RCX] = u64::MAX;
        write_reg(&mut regs, Reg { index: 1, high_byte: false }, 2, 0x1234);
        assert_eq!(regs.0[RCX], 0xffff_ffff_ffff_1234);
        write_reg(&mut regs, Reg { index: 1, high_byte: true }, 1, 0xab);
        assert_eq!(regs.0[RCX], 0xffff_ffff_ffff_ab34);
        assert_eq!(read_reg(&regs, Reg { index: 3, high_byte: true }, 1), 0x77);
        // perform: a sign-extending byte load, a register store, an exchange.
        let a = d64(&[0x48, 0x0f, 0xbe, 0x73, 0x20]).unwrap();
        perform(
            &a,
            &mut regs,
            |s| {
                assert_eq!(s, 1);
                0x80
            },
            |_, _| panic!("no store"),
        );
        assert_eq!(regs.0[RSI], 0xffff_ffff_ffff_ff80);
        let mut stored = None;
        regs.0[RDX] = 0xdead_beef_0000_0042;
        let a = d64(&[0x89, 0x10]).unwrap();
        perform(&a, &mut regs, |_| 0, |s, v| stored = Some((s, v)));
        assert_eq!(stored, Some((4, 0x42)));
        let a = d64(&[0x87, 0x10]).unwrap();
        perform(&a, &mut regs, |_| 0x99, |s, v| stored = Some((s, v)));
        assert_eq!((stored, regs.0[RDX]), (Some((4, 0x42)), 0x99));
    }
}
