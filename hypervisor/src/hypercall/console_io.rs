//! `console_io`: guests' early console, shown as `(dN) ...` lines.

use super::HcResult;
use crate::domain::Domain;
use arch::exit::VirtualCpu;
use guest_abi::{console, errno};

/// Bytes copied from the guest per step; keeps the hypervisor's stack use fixed.
const CHUNK: usize = 128;
/// Xen caps one write too; a larger count is a guest bug, not a reason to loop forever.
const MAX_WRITE: u64 = 1 << 16;

pub fn handle(domain: &mut Domain, vcpu: &mut dyn VirtualCpu, cmd: u64, count: u64, buf: u64) -> HcResult {
    match cmd {
        console::CONSOLEIO_WRITE => write(domain, vcpu, count, buf),
        // Input comes with the PV console; nothing to read yet.
        console::CONSOLEIO_READ => Ok(0),
        _ => Err(errno::ENOSYS),
    }
}

fn write(domain: &mut Domain, vcpu: &mut dyn VirtualCpu, count: u64, buf: u64) -> HcResult {
    let count = (count & 0xffff_ffff).min(MAX_WRITE);
    let mut done = 0u64;
    while done < count {
        let n = (count - done).min(CHUNK as u64) as usize;
        let mut chunk = [0u8; CHUNK];
        let addr = buf.checked_add(done).ok_or(errno::EFAULT)?;
        vcpu.copy_from_guest(addr, &mut chunk[..n]).map_err(|_| errno::EFAULT)?;
        domain.console_write(&chunk[..n]);
        done += n as u64;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypercall::testing::FakeVcpu;

    #[test]
    fn write_reaches_the_domain_console() {
        let mut dom = Domain::new(2);
        let mut vcpu = FakeVcpu::new(512);
        let text = [b'a'; 300];
        vcpu.mem[10..310].copy_from_slice(&text);
        assert_eq!(handle(&mut dom, &mut vcpu, console::CONSOLEIO_WRITE, 300, 10), Ok(0));
        assert!(dom.console_pending());
    }

    #[test]
    fn write_from_outside_guest_memory_is_efault() {
        let mut dom = Domain::new(2);
        let mut vcpu = FakeVcpu::new(64);
        assert_eq!(handle(&mut dom, &mut vcpu, console::CONSOLEIO_WRITE, 100, 0), Err(errno::EFAULT));
        assert_eq!(handle(&mut dom, &mut vcpu, console::CONSOLEIO_WRITE, 8, u64::MAX), Err(errno::EFAULT));
    }

    #[test]
    fn unknown_subcommand_is_enosys_as_in_xen() {
        let mut dom = Domain::new(2);
        let mut vcpu = FakeVcpu::new(64);
        assert_eq!(handle(&mut dom, &mut vcpu, 7, 0, 0), Err(errno::ENOSYS));
    }
}
