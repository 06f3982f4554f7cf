//! grant-copy: one domain grants two pages to another, which copies through the grants.
//!
//! Two domains from qemu/configs/grant-copy.dts run this binary and tell their roles apart by
//! their size: 16 MiB is the granter (domain 1), 24 MiB the copier (domain 2). The granter
//! maps its grant table, fills a page with a pattern and grants it read-only to domain 2 as
//! reference 8, and grants a second, empty page writable as reference 9. The copier copies
//! from reference 8 at several offsets and lengths (retrying, with yields, until the grant
//! exists), checks every byte, sees bad copies refused with their own status, then fills
//! reference 9 with a pattern of its own; the granter waits for that pattern to arrive.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(not(target_os = "none"))]
fn main() {}

#[cfg(target_os = "none")]
mod guest {
    use guest_abi::grant_table::{self as gt, GnttabCopy, GnttabCopyPtr};
    use guest_abi::xen::DOMID_SELF;
    use guest_abi::{hypercall as nr, sched};
    use hello_guest::grants::{self, Page, frame};
    use hello_guest::{check, hypercall, println, shutdown};

    const PATIENCE: u32 = 100_000;
    const GRANTER: u16 = 1;
    const COPIER: u16 = 2;
    /// Linux keeps the first 8 references for itself; so do we.
    const READ_REF: u64 = 8;
    const WRITE_REF: u64 = 9;

    static mut TABLE: Page = Page([0; 4096]);
    static mut SOURCE: Page = Page([0; 4096]);
    static mut SINK: Page = Page([0; 4096]);
    static mut BUFFER: Page = Page([0; 4096]);

    fn pattern(seed: u8, i: usize) -> u8 {
        (i as u8).wrapping_mul(31) ^ seed ^ (i >> 8) as u8
    }

    fn yield_cpu() {
        hypercall(nr::SCHED_OP, [sched::SCHEDOP_YIELD, 0, 0, 0, 0]);
    }

    fn grant(gref: u64, flags: u16, domid: u16, gfn: u64) {
        grants::write_entry(&raw mut TABLE, gref as u32, flags, domid, gfn);
    }

    fn granter() -> bool {
        let r = grants::map_table(&raw mut TABLE);
        check("grant-copy map-table", r == 0, format_args!("add_to_physmap grant table: {}", r));
        for i in 0..4096 {
            // SAFETY: our own page, not yet granted.
            unsafe { (&raw mut SOURCE.0[i]).write_volatile(pattern(0xa5, i)) };
        }
        grant(WRITE_REF, gt::GTF_PERMIT_ACCESS, COPIER, frame(&raw const SINK));
        grant(READ_REF, gt::GTF_PERMIT_ACCESS | gt::GTF_READONLY, COPIER, frame(&raw const SOURCE));
        println!("grant-copy: granter offers refs {} (read-only) and {}", READ_REF, WRITE_REF);
        let arrived = || {
            (0..4096).all(|i| {
                // SAFETY: SINK is written by the hypervisor on the copier's behalf.
                let got = unsafe { (&raw const SINK.0[i]).read_volatile() };
                got == pattern(0x3c, i)
            })
        };
        let mut waited = 0;
        while !arrived() && waited < PATIENCE {
            yield_cpu();
            waited += 1;
        }
        check("grant-copy received", arrived(), format_args!("the copier's page never arrived"));
        arrived()
    }

    fn side(u: u64, domid: u16, offset: u16) -> GnttabCopyPtr {
        GnttabCopyPtr { u, domid, offset, _pad0: 0 }
    }

    fn copy(mut op: GnttabCopy) -> (i64, i16) {
        let r = hypercall(nr::GRANT_TABLE_OP, [gt::GNTTABOP_COPY, &raw mut op as u64, 1, 0, 0]);
        // SAFETY: the hypervisor wrote the status behind the compiler's back.
        (r, unsafe { (&raw const op.status).read_volatile() })
    }

    fn from_grant(offset: u16, to: u16, len: u16) -> GnttabCopy {
        GnttabCopy {
            source: side(READ_REF, GRANTER, offset),
            dest: side(frame(&raw const BUFFER), DOMID_SELF, to),
            len,
            flags: gt::GNTCOPY_SOURCE_GREF,
            ..Default::default()
        }
    }

    fn copier() -> bool {
        // The grant appears when the granter has run: until then the entry does not permit
        // us, which Xen reports as a general error.
        let mut status = gt::GNTST_GENERAL_ERROR;
        for _ in 0..PATIENCE {
            status = copy(from_grant(0, 0, 4096)).1;
            if status != gt::GNTST_GENERAL_ERROR {
                break;
            }
            yield_cpu();
        }
        check("grant-copy first", status == gt::GNTST_OKAY, format_args!("status {}", status));
        let mut good = true;
        for (from, to, len) in [(0u16, 0u16, 4096u16), (1, 2, 100), (4095, 0, 1), (123, 3001, 995), (2048, 7, 2048)] {
            let (r, st) = copy(from_grant(from, to, len));
            let same = (0..usize::from(len)).all(|k| {
                // SAFETY: our own page, written by the hypervisor; read it volatile.
                let got = unsafe { (&raw const BUFFER.0[usize::from(to) + k]).read_volatile() };
                got == pattern(0xa5, usize::from(from) + k)
            });
            good &= r == 0 && st == gt::GNTST_OKAY && same;
            check(
                "grant-copy read",
                r == 0 && st == gt::GNTST_OKAY && same,
                format_args!("offset {} to {} len {}: rc {} status {} bytes {}", from, to, len, r, st, same),
            );
        }
        let refusals = [
            ("past the page end", from_grant(4000, 0, 200), gt::GNTST_BAD_COPY_ARG),
            (
                "no such domain",
                GnttabCopy { source: side(READ_REF, 0x3ff, 0), ..from_grant(0, 0, 8) },
                gt::GNTST_BAD_DOMAIN,
            ),
            (
                "never granted",
                GnttabCopy { source: side(20, GRANTER, 0), ..from_grant(0, 0, 8) },
                gt::GNTST_GENERAL_ERROR,
            ),
            (
                "written through a read-only grant",
                GnttabCopy {
                    source: side(frame(&raw const BUFFER), DOMID_SELF, 0),
                    dest: side(READ_REF, GRANTER, 0),
                    len: 8,
                    flags: gt::GNTCOPY_DEST_GREF,
                    ..Default::default()
                },
                gt::GNTST_GENERAL_ERROR,
            ),
        ];
        for (what, op, want) in refusals {
            let (r, st) = copy(op);
            check(
                "grant-copy refusal",
                r == 0 && st == want,
                format_args!("{}: rc {} status {}, want {}", what, r, st, want),
            );
        }
        for i in 0..4096 {
            // SAFETY: our own page.
            unsafe { (&raw mut BUFFER.0[i]).write_volatile(pattern(0x3c, i)) };
        }
        let (r, st) = copy(GnttabCopy {
            source: side(frame(&raw const BUFFER), DOMID_SELF, 0),
            dest: side(WRITE_REF, GRANTER, 0),
            len: 4096,
            flags: gt::GNTCOPY_DEST_GREF,
            ..Default::default()
        });
        check("grant-copy write", r == 0 && st == gt::GNTST_OKAY, format_args!("rc {} status {}", r, st));
        good && r == 0 && st == gt::GNTST_OKAY
    }

    pub fn main() -> ! {
        let (role, ok) = match grants::own_pages() {
            4096 => ("granter", granter()),
            6144 => ("copier", copier()),
            n => {
                check("grant-copy", false, format_args!("{} pages: not a size this test knows", n));
                ("none", false)
            }
        };
        println!("GRANT-COPY-DONE {} ok={}", role, ok);
        shutdown(sched::SHUTDOWN_POWEROFF)
    }
}

#[cfg(target_os = "none")]
#[unsafe(no_mangle)]
extern "C" fn guest_main() -> ! {
    guest::main()
}
