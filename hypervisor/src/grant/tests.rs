//! The lender's and borrower's bookkeeping on their own.

use super::*;

fn frames() -> Vec<HostPage> {
    (0..2).map(|i| HostPage::on_heap(0x1000 * (i + 1))).collect()
}

fn write(frames: &mut [HostPage], gref: u32, flags: u16, domid: u16, frame: u32) {
    let (page, at) = locate(frames, gref).unwrap();
    frames[page].data[at..at + 2].copy_from_slice(&flags.to_ne_bytes());
    frames[page].data[at + 2..at + 4].copy_from_slice(&domid.to_ne_bytes());
    frames[page].set_u32(at + 4, frame);
}

#[test]
fn entries_span_every_frame_and_stop_at_the_last() {
    let mut f = frames();
    assert_eq!(nr_entries(&f), 1024);
    write(&mut f, 1023, gt::GTF_PERMIT_ACCESS, 7, 0x1234);
    assert_eq!(entry(&f, 1023), Some(GrantEntryV1 { flags: gt::GTF_PERMIT_ACCESS, domid: 7, frame: 0x1234 }));
    assert_eq!(entry(&f, 1024), None);
    assert_eq!(entry(&f, u32::MAX), None);
}

#[test]
fn pins_set_and_unpins_clear_the_guest_visible_bits_only() {
    let mut f = frames();
    let mut g = Grants::default();
    let guest_bits = gt::GTF_PERMIT_ACCESS | gt::GTF_PCD;
    write(&mut f, 3, guest_bits, 2, 0x50);
    assert_eq!(pin(&mut f, &mut g, 2, 3, true), Ok(0x50));
    assert_eq!(entry(&f, 3).unwrap().flags, guest_bits | gt::GTF_READING);
    assert_eq!(pin(&mut f, &mut g, 2, 3, false), Ok(0x50));
    assert_eq!(entry(&f, 3).unwrap().flags, guest_bits | gt::GTF_READING | gt::GTF_WRITING);
    assert_eq!(g.active(3), Some(Active { mapper: 2, gfn: 0x50, readers: 1, writers: 1 }));
    unpin(&mut f, &mut g, 3, false);
    assert_eq!(entry(&f, 3).unwrap().flags, guest_bits | gt::GTF_READING);
    unpin(&mut f, &mut g, 3, true);
    assert_eq!(entry(&f, 3).unwrap().flags, guest_bits);
    assert_eq!(g.active(3), None);
    // Unpinning what is not pinned changes nothing.
    unpin(&mut f, &mut g, 3, true);
    assert_eq!(entry(&f, 3).unwrap().flags, guest_bits);
}

#[test]
fn handles_are_reused_after_release() {
    let mut g = Grants::default();
    let m = |gpa| Mapping { granter: 1, gref: 0, gpa, hpa: 0, readonly: true };
    assert_eq!(g.track(m(0x1000)), Ok(0));
    assert_eq!(g.track(m(0x2000)), Ok(1));
    assert!(g.occupied(0x2000));
    assert_eq!(g.untrack(0), Some(m(0x1000)));
    assert_eq!(g.untrack(0), None);
    assert!(!g.occupied(0x1000));
    assert_eq!(g.track(m(0x3000)), Ok(0));
    assert_eq!(g.mapping(0), Some(m(0x3000)));
    assert_eq!(g.mapped_count(), 2);
    assert_eq!(g.mappings().map(|(h, _)| h).collect::<Vec<_>>(), [0, 1]);
}
