//! evtchn-limits: how many ports each event-channel ABI gives a 64-bit guest.
//!
//! With the 2-level ABI the port space is 64 words of 64 bits: ports up to 4095 bind and the
//! next allocation is refused with -ENOSPC. The guest frees them, switches to FIFO
//! (`init_control`, then `expand_array` up to 128 pages of event words), binds every port a
//! 17-bit LINK can name (the last one as an IPI), signals that last port and finds it at the
//! head of its queue in its control block, pending; the port after it is refused.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(not(target_os = "none"))]
fn main() {}

#[cfg(target_os = "none")]
mod guest {
    use guest_abi::event_channel::{
        self as ev, EVTCHN_FIFO_LINK_BITS, EVTCHN_FIFO_NR_CHANNELS, EVTCHN_FIFO_PENDING, EVTCHN_FIFO_PRIORITY_DEFAULT,
        EvtchnBindIpi, EvtchnClose, EvtchnSend,
    };
    use guest_abi::{errno, hypercall as nr, sched};
    use hello_guest::fifo::{self, ARRAY_PAGES, alloc_unbound};
    use hello_guest::{check, hypercall, println, shutdown};

    /// Ports of the 2-level ABI for a 64-bit guest.
    const PORTS_2L: u32 = 64 * 64;

    fn evtchn_op<T>(cmd: u64, arg: &mut T) -> i64 {
        hypercall(nr::EVENT_CHANNEL_OP, [cmd, arg as *mut T as u64, 0, 0, 0])
    }

    /// Allocate until refused: the last port given and the refusal.
    fn fill() -> (u32, i64) {
        let mut last = 0;
        loop {
            match alloc_unbound() {
                Ok(p) => last = p,
                Err(e) => return (last, e),
            }
        }
    }

    fn two_level() {
        let (last, refusal) = fill();
        check(
            "evtchn-limits 2-level",
            last == PORTS_2L - 1 && refusal == -errno::ENOSPC,
            format_args!("last port {} then {}, expected {} then {}", last, refusal, PORTS_2L - 1, -errno::ENOSPC),
        );
        // Free them again (port 1 is the console's, which the hypervisor bound).
        for port in 2..=last {
            evtchn_op(ev::EVTCHNOP_CLOSE, &mut EvtchnClose { port });
        }
    }

    /// Switch to FIFO with every array page in place.
    fn init_fifo() -> bool {
        let (r, link_bits) = fifo::init_control();
        check(
            "evtchn-limits init_control",
            r == 0 && u32::from(link_bits) == EVTCHN_FIFO_LINK_BITS,
            format_args!("returned {} with link_bits {}", r, link_bits),
        );
        let added = fifo::expand_to(EVTCHN_FIFO_NR_CHANNELS as usize);
        check("evtchn-limits expand_array", added == ARRAY_PAGES, format_args!("{} of {} pages", added, ARRAY_PAGES));
        r == 0 && added == ARRAY_PAGES
    }

    fn fifo() {
        // Every port but the last as unbound ports, the last as an IPI to ourselves.
        let mut last = 0;
        while last < EVTCHN_FIFO_NR_CHANNELS - 2 {
            match alloc_unbound() {
                Ok(p) => last = p,
                Err(e) => {
                    check("evtchn-limits fifo", false, format_args!("refused after port {}: {}", last, e));
                    return;
                }
            }
        }
        let mut ipi = EvtchnBindIpi { vcpu: 0, port: 0 };
        let r = evtchn_op(ev::EVTCHNOP_BIND_IPI, &mut ipi);
        let top = EVTCHN_FIFO_NR_CHANNELS - 1;
        check("evtchn-limits fifo", r == 0 && ipi.port == top, format_args!("bind_ipi {} gave port {}", r, ipi.port));
        let refusal = alloc_unbound();
        check(
            "evtchn-limits fifo-full",
            refusal == Err(-errno::ENOSPC),
            format_args!("port after {} gave {:?}", top, refusal),
        );
        evtchn_op(ev::EVTCHNOP_SEND, &mut EvtchnSend { port: ipi.port });
        let q = EVTCHN_FIFO_PRIORITY_DEFAULT as usize;
        let (ready, head) = (fifo::ready(), fifo::head(q));
        let word = fifo::word(top).load(core::sync::atomic::Ordering::SeqCst);
        let taken = fifo::Consumer::default().next();
        check(
            "evtchn-limits fifo-receive",
            ready & (1 << q) != 0 && head == top && word & (1 << EVTCHN_FIFO_PENDING) != 0 && taken == Some(top),
            format_args!("ready {:#x} head {} word {:#x} consumed {:?}", ready, head, word, taken),
        );
        println!("EVTCHN-LIMITS-DONE last={}", head);
    }

    pub fn main() -> ! {
        two_level();
        if init_fifo() {
            fifo();
        }
        shutdown(sched::SHUTDOWN_POWEROFF)
    }
}

#[cfg(target_os = "none")]
#[unsafe(no_mangle)]
extern "C" fn guest_main() -> ! {
    guest::main()
}
