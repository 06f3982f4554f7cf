//! Guest console output: what domains write with `console_io`, shown as `(dN) line`.
//!
//! Each domain has a line buffer; complete lines go to the physical console with the
//! domain's prefix, so output of several domains never interleaves mid-line.

use core::fmt::Write;

/// Longest line kept before it is flushed anyway.
pub const LINE_MAX: usize = 256;

/// A domain's partial console line.
pub struct GuestConsole {
    domain_id: u16,
    line: [u8; LINE_MAX],
    len: usize,
}

impl GuestConsole {
    pub const fn new(domain_id: u16) -> Self {
        Self { domain_id, line: [0; LINE_MAX], len: 0 }
    }

    /// Take guest bytes; `emit` receives each completed line, prefix included.
    pub fn write(&mut self, bytes: &[u8], emit: &mut dyn FnMut(&[u8])) {
        for &b in bytes {
            match b {
                b'\n' => self.flush(emit),
                b'\r' => {}
                // Keep control characters out of the host console.
                b if b == b'\t' || (0x20..0x7f).contains(&b) => self.push(b, emit),
                _ => self.push(b'?', emit),
            }
        }
    }

    /// Emit whatever is pending as a line (used when the domain dies).
    pub fn flush(&mut self, emit: &mut dyn FnMut(&[u8])) {
        let mut out = LineWriter { buf: [0; LINE_MAX + 16], len: 0 };
        let _ = write!(out, "(d{}) ", self.domain_id);
        out.extend(&self.line[..self.len]);
        out.extend(b"\n");
        emit(&out.buf[..out.len]);
        self.len = 0;
    }

    /// True when a partial line is waiting.
    pub fn pending(&self) -> bool {
        self.len > 0
    }

    fn push(&mut self, b: u8, emit: &mut dyn FnMut(&[u8])) {
        if self.len == LINE_MAX {
            self.flush(emit);
        }
        self.line[self.len] = b;
        self.len += 1;
    }
}

struct LineWriter {
    buf: [u8; LINE_MAX + 16],
    len: usize,
}

impl LineWriter {
    fn extend(&mut self, bytes: &[u8]) {
        let n = bytes.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
    }
}

impl Write for LineWriter {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        self.extend(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(con: &mut GuestConsole, input: &[u8]) -> Vec<String> {
        let mut lines = Vec::new();
        con.write(input, &mut |l| lines.push(String::from_utf8(l.to_vec()).unwrap()));
        lines
    }

    #[test]
    fn complete_lines_get_the_domain_prefix() {
        let mut con = GuestConsole::new(3);
        assert_eq!(collect(&mut con, b"hello\r\nworld\n"), ["(d3) hello\n", "(d3) world\n"]);
    }

    #[test]
    fn partial_lines_wait_for_their_newline() {
        let mut con = GuestConsole::new(1);
        assert!(collect(&mut con, b"par").is_empty());
        assert!(con.pending());
        assert_eq!(collect(&mut con, b"tial\n"), ["(d1) partial\n"]);
        assert!(!con.pending());
    }

    #[test]
    fn control_characters_are_neutralised() {
        let mut con = GuestConsole::new(1);
        assert_eq!(collect(&mut con, b"a\x1b[2Jb\n"), ["(d1) a?[2Jb\n"]);
    }

    #[test]
    fn overlong_lines_are_split_not_dropped() {
        let mut con = GuestConsole::new(1);
        let input = [b'x'; LINE_MAX + 10];
        let lines = collect(&mut con, &input);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].len(), "(d1) ".len() + LINE_MAX + 1);
        assert!(con.pending());
    }
}
