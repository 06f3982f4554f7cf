use super::*;

const D: u64 = GUEST_GICD_BASE;
const R: u64 = GUEST_GICR_BASE;
const SGI: u64 = GUEST_GICR_BASE + 0x1_0000;

fn read(g: &mut Vgic, gpa: u64, size: u8) -> u64 {
    let out = g.mmio(0, gpa, size, None).expect("a vGIC address");
    assert!(!out.unknown, "offset {gpa:#x} should be modelled");
    out.value
}

fn write(g: &mut Vgic, gpa: u64, size: u8, value: u64) {
    let out = g.mmio(0, gpa, size, Some(value)).expect("a vGIC address");
    assert!(!out.unknown, "offset {gpa:#x} should be modelled");
}

/// A vGIC with the distributor's group 1 enabled, as Linux leaves it.
fn enabled() -> Vgic {
    let mut g = Vgic::new(1);
    write(&mut g, D, 4, 0x13);
    g
}

#[test]
fn addresses_outside_the_vgic_are_not_claimed() {
    let mut g = Vgic::new(1);
    assert_eq!(g.mmio(0, 0x0900_0000, 4, None), None);
    assert_eq!(g.mmio(0, D - 4, 4, None), None);
    assert_eq!(g.mmio(0, R + GUEST_GICR_REGION_SIZE, 4, None), None);
    assert!(mmio::claims(D) && mmio::claims(R + 0x2_0000) && !mmio::claims(0x4000_0000));
}

#[test]
fn gicd_ctlr_keeps_enables_has_are_ds_and_rwp_reads_zero() {
    let mut g = Vgic::new(1);
    assert_eq!(read(&mut g, D, 4), 0x50);
    write(&mut g, D, 4, 0x8000_0013);
    assert_eq!(read(&mut g, D, 4), 0x53);
    write(&mut g, D, 4, 0);
    assert_eq!(read(&mut g, D, 4) & (1 << 31), 0);
}

#[test]
fn gicd_typer_iidr_pidr2() {
    let mut g = Vgic::new(1);
    let typer = read(&mut g, D + 4, 4);
    let spis = 32 * ((typer & 0x1f) + 1) - 32;
    assert!(spis >= 64, "{spis} SPIs");
    assert_eq!((typer >> 19) & 0x1f, 9, "IDbits: 10 bits of INTID");
    assert_eq!(typer & (1 << 17), 0, "no LPIs");
    assert_eq!(read(&mut g, D + 8, 4) & 0xfff, 0x43b);
    assert_eq!(read(&mut g, D + 0xffe8, 4), 0x30);
    assert_eq!(read(&mut g, R + 0xffe8, 4), 0x30);
}

#[test]
fn igroupr_is_all_group1_and_word0_is_redistributor_business() {
    let mut g = Vgic::new(1);
    assert_eq!(read(&mut g, D + 0x80, 4), 0);
    assert_eq!(read(&mut g, D + 0x84, 4), u64::from(u32::MAX));
    write(&mut g, D + 0x84, 4, 0);
    assert_eq!(read(&mut g, D + 0x84, 4), u64::from(u32::MAX));
    assert_eq!(read(&mut g, SGI + 0x80, 4), u64::from(u32::MAX));
}

#[test]
fn spi_enable_pending_active_set_and_clear() {
    let mut g = Vgic::new(1);
    write(&mut g, D + 0x104, 4, 0b101); // ISENABLER1: SPIs 32, 34
    assert_eq!(read(&mut g, D + 0x104, 4), 0b101);
    write(&mut g, D + 0x184, 4, 0b001); // ICENABLER1: SPI 32
    assert_eq!(read(&mut g, D + 0x184, 4), 0b100);
    write(&mut g, D + 0x208, 4, 1 << 3); // ISPENDR2: SPI 67
    assert_eq!(read(&mut g, D + 0x208, 4), 1 << 3);
    write(&mut g, D + 0x288, 4, 1 << 3);
    assert_eq!(read(&mut g, D + 0x208, 4), 0);
    write(&mut g, D + 0x304, 4, 1);
    assert_eq!(read(&mut g, D + 0x384, 4), 1);
    write(&mut g, D + 0x384, 4, 1);
    assert_eq!(read(&mut g, D + 0x304, 4), 0);
    // Word 0 of the distributor ignores writes with affinity routing.
    write(&mut g, D + 0x100, 4, u64::from(u32::MAX));
    assert_eq!(read(&mut g, SGI + 0x100, 4), 0);
}

#[test]
fn ipriorityr_bytes_words_and_mask() {
    let mut g = Vgic::new(1);
    write(&mut g, D + 0x400 + 33, 1, 0xa0);
    assert_eq!(read(&mut g, D + 0x400 + 32, 4), 0xa000);
    write(&mut g, D + 0x400 + 36, 4, 0xffa0_1008);
    assert_eq!(read(&mut g, D + 0x400 + 36, 4), 0xf8a0_1008);
    assert_eq!(read(&mut g, D + 0x400 + 38, 2), 0xf8a0);
    // SGI/PPI priorities live in the SGI frame; the distributor's are RAZ/WI.
    write(&mut g, D + 0x400 + 27, 1, 0x80);
    assert_eq!(read(&mut g, D + 0x400 + 24, 4), 0);
    write(&mut g, SGI + 0x400 + 27, 1, 0x80);
    assert_eq!(read(&mut g, SGI + 0x400 + 24, 4), 0x8000_0000);
}

#[test]
fn icfgr_edge_bits() {
    let mut g = Vgic::new(1);
    assert_eq!(read(&mut g, SGI + 0xc00, 4), 0xaaaa_aaaa);
    write(&mut g, SGI + 0xc00, 4, 0);
    assert_eq!(read(&mut g, SGI + 0xc00, 4), 0xaaaa_aaaa);
    write(&mut g, SGI + 0xc04, 4, 0x8000_0000); // PPI 31 edge
    assert_eq!(read(&mut g, SGI + 0xc04, 4), 0x8000_0000);
    write(&mut g, D + 0xc08, 4, 0xffff_ffff); // SPIs 32-47 edge (bit 0 of each field is RES0)
    assert_eq!(read(&mut g, D + 0xc08, 4), 0xaaaa_aaaa);
    assert_eq!(read(&mut g, D + 0xc00, 4), 0);
}

#[test]
fn irouter_64_and_32_bit() {
    let mut g = Vgic::new(1);
    write(&mut g, D + 0x6000 + 8 * 40, 8, 0xffff_ffff_ffff_ffff);
    assert_eq!(read(&mut g, D + 0x6000 + 8 * 40, 8), 0xff_80ff_ffff);
    write(&mut g, D + 0x6000 + 8 * 40 + 4, 4, 0);
    assert_eq!(read(&mut g, D + 0x6000 + 8 * 40, 4), 0x80ff_ffff);
    assert_eq!(read(&mut g, D + 0x6000 + 8 * 40, 8), 0x80ff_ffff);
    // INTIDs below 32 have no IROUTER.
    write(&mut g, D + 0x6000, 8, 1);
    assert_eq!(read(&mut g, D + 0x6000, 8), 0);
}

#[test]
fn gicr_typer_affinity_processor_number_and_last() {
    let mut g = Vgic::new(2);
    let t0 = read(&mut g, R + 8, 8);
    let t1 = g.mmio(0, R + GUEST_GICR_STRIDE + 8, 8, None).unwrap().value;
    assert_eq!((t0 >> 32, (t0 >> 8) & 0xffff, t0 & 0x10), (0, 0, 0));
    assert_eq!((t1 >> 32, (t1 >> 8) & 0xffff, t1 & 0x10), (1, 1, 0x10));
    assert_eq!(read(&mut g, R + 12, 4), 0, "upper half: affinity of vCPU 0");
    // Past the last redistributor: RAZ.
    assert_eq!(g.mmio(0, R + 2 * GUEST_GICR_STRIDE + 8, 8, None).unwrap().value, 0);
    let mut one = Vgic::new(1);
    assert_eq!(read(&mut one, R + 8, 8) & 0x10, 0x10);
}

#[test]
fn gicr_ctlr_iidr_waker() {
    let mut g = Vgic::new(1);
    assert_eq!(read(&mut g, R, 4), 0);
    assert_eq!(read(&mut g, R + 4, 4), u64::from(mmio::IIDR));
    assert_eq!(read(&mut g, R + 0x14, 4), 0b110, "asleep out of reset");
    write(&mut g, R + 0x14, 4, 0);
    assert_eq!(read(&mut g, R + 0x14, 4), 0, "awake: ChildrenAsleep clears at once");
    write(&mut g, R + 0x14, 4, 0b010);
    assert_eq!(read(&mut g, R + 0x14, 4), 0b110);
}

#[test]
fn sgi_frame_enable_pending() {
    let mut g = Vgic::new(1);
    write(&mut g, SGI + 0x100, 4, (1 << 27) | 2);
    assert_eq!(read(&mut g, SGI + 0x100, 4), (1 << 27) | 2);
    write(&mut g, SGI + 0x180, 4, 2);
    assert_eq!(read(&mut g, SGI + 0x180, 4), 1 << 27);
    write(&mut g, SGI + 0x200, 4, 1 << 5);
    assert_eq!(read(&mut g, SGI + 0x280, 4), 1 << 5);
    write(&mut g, SGI + 0x280, 4, 1 << 5);
    assert_eq!(read(&mut g, SGI + 0x200, 4), 0);
}

#[test]
fn unknown_offsets_and_bad_accesses_are_harmless() {
    let mut g = Vgic::new(1);
    let out = g.mmio(0, D + 0x2000, 4, Some(5)).unwrap();
    assert!(out.unknown);
    assert_eq!(g.mmio(0, D + 0x2000, 4, None).unwrap(), MmioOutcome { value: 0, unknown: true });
    // Misaligned, odd sizes, bytes where only words are allowed: read as zero.
    assert_eq!(g.mmio(0, D + 2, 4, None).unwrap().value, 0);
    assert_eq!(g.mmio(0, D + 4, 3, None).unwrap().value, 0);
    assert_eq!(g.mmio(0, D + 4, 1, None).unwrap().value, 0);
    // Writes to read-only registers change nothing.
    write(&mut g, D + 4, 4, 0);
    assert_ne!(read(&mut g, D + 4, 4), 0);
    // Out-of-range INTIDs.
    g.set_spi_line(5000, true);
    g.raise_private(0, 200);
    g.raise_private(7, 3);
    assert!(!g.has_deliverable(0));
}

#[test]
fn sgi1r_target_list_broadcast_and_missing_vcpus() {
    let mut g = Vgic::new(2);
    g.write_sgi1r(0, (3 << 24) | 0b10); // SGI 3 to vCPU 1
    assert!(g.is_pending(1, 3) && !g.is_pending(0, 3));
    g.write_sgi1r(0, (4 << 24) | (1 << 40)); // SGI 4 to all but me
    assert!(g.is_pending(1, 4) && !g.is_pending(0, 4));
    g.write_sgi1r(1, (5 << 24) | (1 << 16) | 1); // Aff1 = 1: nobody
    assert!(!g.is_pending(0, 5));
    g.write_sgi1r(0, (6 << 24) | (1 << 44) | 1); // RS = 1: vCPU 16 does not exist
    g.write_sgi1r(0, (7 << 24) | 0xffff);
    assert!(g.is_pending(0, 7) && g.is_pending(1, 7));
}

#[test]
fn fill_orders_by_priority_and_sync_tracks_the_guest() {
    let mut g = enabled();
    write(&mut g, SGI + 0x100, 4, (1 << 27) | (1 << 31) | 1);
    write(&mut g, SGI + 0x400 + 27, 1, 0x20);
    write(&mut g, SGI + 0x400 + 31, 1, 0xa0);
    g.raise_private(0, UPCALL_PPI);
    g.raise_private(0, VTIMER_PPI);
    g.raise_private(0, 2); // not enabled: stays out
    let plan = g.fill_lrs(0, 4);
    assert_eq!((plan.count, plan.overflow), (2, false));
    assert_eq!(plan.values[0], (1 << 62) | (1 << 60) | (0x20 << 48) | 27);
    assert_eq!(plan.values[1], (1 << 62) | (1 << 60) | (0xa0 << 48) | 31);
    assert!(!g.has_deliverable(0), "both now belong to the list registers");
    // The guest acknowledged 27 (active) and has not taken 31 yet.
    g.sync_lrs(0, &[(1 << 63) | (1 << 60) | (0x20 << 48) | 27, plan.values[1]]);
    assert!(g.irq(0, 27).unwrap().active);
    assert!(g.is_pending(0, 31));
    let plan = g.fill_lrs(0, 4);
    assert_eq!(plan.values[0] >> 62, 0b10, "27 goes back as active");
    assert_eq!(plan.values[1] >> 62, 0b01);
    // The guest EOI'd both: both LRs invalid.
    g.sync_lrs(0, &[27, 31]);
    assert!(!g.irq(0, 27).unwrap().active && !g.is_pending(0, 31));
    assert_eq!(g.fill_lrs(0, 4).count, 0);
}

#[test]
fn overflow_is_reported_and_active_ones_come_first() {
    let mut g = enabled();
    write(&mut g, SGI + 0x100, 4, 0xffff);
    for sgi in 0..6 {
        g.raise_private(0, sgi);
    }
    write(&mut g, SGI + 0x300, 4, 1 << 9); // SGI 9 active
    let plan = g.fill_lrs(0, 4);
    assert_eq!((plan.count, plan.overflow), (4, true));
    assert_eq!(plan.values[0] & 0xffff_ffff, 9);
    assert_eq!(plan.values[1] & 0xffff_ffff, 0);
    g.sync_lrs(0, &plan.values[..4]);
    assert!(g.is_pending(0, 0) && g.irq(0, 9).unwrap().active);
}

#[test]
fn level_spi_follows_its_line_and_group_enable_gates_delivery() {
    let mut g = Vgic::new(1);
    write(&mut g, D + 0x104, 4, 1); // enable SPI 32
    g.set_spi_line(VPL011_SPI, true);
    assert!(g.is_pending(0, VPL011_SPI));
    assert!(!g.has_deliverable(0), "distributor group 1 is off");
    write(&mut g, D, 4, 0x12);
    assert!(g.has_deliverable(0));
    let plan = g.fill_lrs(0, 4);
    assert_eq!(plan.count, 1);
    // Still pending in the LR when we exit: the line, not a latch, holds it.
    g.sync_lrs(0, &plan.values[..1]);
    g.set_spi_line(VPL011_SPI, false);
    assert!(!g.is_pending(0, VPL011_SPI));
    // Edge-triggered: latches on the rising edge and stays after the line drops.
    write(&mut g, D + 0xc08, 4, 0b10);
    g.set_spi_line(VPL011_SPI, true);
    g.set_spi_line(VPL011_SPI, false);
    assert!(g.is_pending(0, VPL011_SPI));
}

#[test]
fn spis_follow_irouter() {
    let mut g = enabled();
    let mut two = Vgic::new(2);
    write(&mut two, D, 4, 0x12);
    write(&mut two, D + 0x104, 4, 1);
    two.set_spi_line(32, true);
    assert!(two.has_deliverable(0) && !two.has_deliverable(1));
    write(&mut two, D + 0x6000 + 8 * 32, 8, 1);
    assert!(!two.has_deliverable(0) && two.has_deliverable(1));
    write(&mut two, D + 0x6000 + 8 * 32, 8, 7);
    assert!(!two.has_deliverable(0) && !two.has_deliverable(1), "routed to a vCPU that does not exist");
    write(&mut g, D + 0x104, 4, 1);
    g.set_spi_line(32, true);
    assert!(g.has_deliverable(0));
}

#[test]
fn cpu_interface_mask_group_enable_and_running_priority_gate_signalling() {
    let mut g = Vgic::new(1);
    write(&mut g, D, 4, 0x12);
    let sgi = GUEST_GICR_BASE + 0x1_0000;
    write(&mut g, sgi + 0x400 + u64::from(VTIMER_PPI), 1, 0xa0);
    write(&mut g, sgi + 0x100, 4, 1 << VTIMER_PPI);
    // Out of reset the interface is closed: PMR 0, group 1 off.
    let reset = CpuInterface::from_vmcr(0, &[0]);
    assert!(!g.would_signal(0, VTIMER_PPI, &reset));
    g.raise_private(0, VTIMER_PPI);
    assert!(g.has_deliverable(0) && !g.has_signalled(0, &reset));
    // PMR 0xf8 and VENG1: signalled.
    let open = CpuInterface::from_vmcr((0xf8 << 24) | 0b10, &[0]);
    assert!(g.would_signal(0, VTIMER_PPI, &open) && g.has_signalled(0, &open));
    // Group 1 off, or a mask at or above the interrupt's priority: not signalled.
    assert!(!g.has_signalled(0, &CpuInterface::from_vmcr(0xf8 << 24, &[0])));
    assert!(!g.has_signalled(0, &CpuInterface::from_vmcr((0xa0 << 24) | 0b10, &[0])));
    assert!(g.has_signalled(0, &CpuInterface::from_vmcr((0xa8 << 24) | 0b10, &[0])));
    // An active interrupt of priority 0xa0 (group priority 20 of 32) holds back another
    // 0xa0; one at 0x98 (group 19) does not.
    let busy = CpuInterface::from_vmcr((0xf8 << 24) | 0b10, &[1 << 20]);
    assert_eq!(busy.running_priority, 0xa0);
    assert!(!g.has_signalled(0, &busy));
    write(&mut g, sgi + 0x400 + u64::from(VTIMER_PPI), 1, 0x98);
    assert!(g.has_signalled(0, &busy));
    // With 7 priority bits (four AP registers), bit 0 of the second is group priority 32.
    assert_eq!(CpuInterface::from_vmcr(0, &[0, 1, 0, 0]).running_priority, 64);
    // A disabled interrupt is never signalled, whatever the interface lets through.
    write(&mut g, sgi + 0x180, 4, 1 << VTIMER_PPI);
    assert!(!g.would_signal(0, VTIMER_PPI, &CpuInterface::OPEN) && !g.has_signalled(0, &CpuInterface::OPEN));
}

#[test]
fn an_empty_scan_is_skipped_until_something_could_change_it() {
    let mut g = enabled();
    assert_eq!(g.fill_lrs(0, 4).count, 0);
    assert!(g.cpus[0].quiet, "nothing pending: the next exit skips the scan");
    // A PPI raised for the vCPU, while disabled: scanned, still nothing, quiet again.
    g.raise_private(0, VTIMER_PPI);
    assert!(!g.cpus[0].quiet);
    assert_eq!(g.fill_lrs(0, 4).count, 0);
    assert!(g.cpus[0].quiet);
    // Enabling it is a distributor write: the pending PPI is found.
    write(&mut g, SGI + 0x100, 4, 1 << VTIMER_PPI);
    let plan = g.fill_lrs(0, 4);
    assert_eq!((plan.count, plan.values[0] & 0xffff_ffff), (1, u64::from(VTIMER_PPI)));
    // The guest took it: what comes back from the LRs is looked at again.
    g.sync_lrs(0, &[u64::from(VTIMER_PPI)]);
    assert!(!g.cpus[0].quiet);
    assert_eq!(g.fill_lrs(0, 4).count, 0);
    // An SPI line stirs every vCPU.
    write(&mut g, D + 0x104, 4, 1);
    assert_eq!(g.fill_lrs(0, 4).count, 0);
    g.set_spi_line(VPL011_SPI, true);
    assert_eq!(g.fill_lrs(0, 4).count, 1);
}
