use super::*;

const D: u64 = GUEST_GICD_BASE;

fn v2(n: usize) -> Vgic {
    Vgic::with_version(GicVersion::V2, n)
}

fn read(g: &mut Vgic, vcpu: usize, gpa: u64, size: u8) -> u64 {
    let out = g.mmio(vcpu, gpa, size, None).expect("a vGIC address");
    assert!(!out.unknown, "offset {gpa:#x} should be modelled");
    out.value
}

fn write(g: &mut Vgic, vcpu: usize, gpa: u64, size: u8, value: u64) {
    let out = g.mmio(vcpu, gpa, size, Some(value)).expect("a vGIC address");
    assert!(!out.unknown, "offset {gpa:#x} should be modelled");
}

/// GICH_LR fields.
fn lr_intid(v: u64) -> u64 {
    v & 0x3ff
}
fn lr_state(v: u64) -> u64 {
    (v >> 28) & 3
}

#[test]
fn typer_counts_lines_and_cpus_pidr2_says_v2() {
    let mut g = v2(2);
    let typer = read(&mut g, 0, D + 4, 4);
    assert_eq!(typer & 0x1f, u64::from(NR_INTIDS / 32 - 1));
    assert_eq!((typer >> 5) & 7, 1, "two CPUs");
    assert_eq!(read(&mut g, 0, D + 0xfe8, 4), 0x20);
    assert_eq!(read(&mut g, 0, D + 8, 4) & 0xfff, 0x43b);
}

#[test]
fn ctlr_keeps_only_the_enable_bit() {
    let mut g = v2(1);
    write(&mut g, 0, D, 4, 0xffff_ffff);
    assert_eq!(read(&mut g, 0, D, 4), 1);
    write(&mut g, 0, D, 4, 0);
    assert_eq!(read(&mut g, 0, D, 4), 0);
}

#[test]
fn itargetsr_0_to_7_name_the_reading_cpu_and_spis_keep_existing_targets() {
    let mut g = v2(2);
    assert_eq!(read(&mut g, 0, D + 0x800, 4), 0x0101_0101);
    assert_eq!(read(&mut g, 1, D + 0x81c, 4), 0x0202_0202);
    write(&mut g, 0, D + 0x800, 4, 0xffff_ffff); // read-only
    assert_eq!(read(&mut g, 0, D + 0x800, 1), 1);
    // SPI 32..35: byte-writable, masked to the vCPUs that exist.
    write(&mut g, 0, D + 0x820, 4, 0xff02_0301);
    assert_eq!(read(&mut g, 0, D + 0x820, 4), 0x0302_0301);
    write(&mut g, 0, D + 0x821, 1, 2);
    assert_eq!(read(&mut g, 0, D + 0x821, 1), 2);
}

#[test]
fn word0_registers_are_banked_per_vcpu() {
    let mut g = v2(2);
    write(&mut g, 0, D + 0x100, 4, 1 << 27);
    assert_eq!(read(&mut g, 0, D + 0x100, 4), 1 << 27);
    assert_eq!(read(&mut g, 1, D + 0x100, 4), 0);
    write(&mut g, 1, D + 0x41b, 1, 0xa0);
    assert_eq!(read(&mut g, 1, D + 0x418, 4), 0xa000_0000);
    assert_eq!(read(&mut g, 0, D + 0x418, 4), 0);
    assert_eq!(read(&mut g, 0, D + 0xc00, 4), 0xaaaa_aaaa);
}

#[test]
fn igroupr_is_group0_and_unknown_offsets_are_reported() {
    let mut g = v2(1);
    write(&mut g, 0, D + 0x80, 4, u64::from(u32::MAX));
    assert_eq!(read(&mut g, 0, D + 0x84, 4), 0);
    assert!(g.mmio(0, D + 0xe80, 4, None).unwrap().unknown);
    // Past the 4 KiB distributor, inside what GICv3 would claim: not a GICv2 register.
    assert!(g.mmio(0, D + 0x1_0000 - 4, 4, None).unwrap().unknown);
    // 64-bit accesses do not exist on GICv2.
    assert_eq!(g.mmio(0, D + 0x100, 8, None).unwrap().value, 0);
}

/// Enable the distributor, SPI `spi` at priority 0xa0 routed by ITARGETSR to `targets`.
fn spi_setup(g: &mut Vgic, spi: u32, targets: u8) {
    write(g, 0, D, 4, 1);
    write(g, 0, D + 0x100 + u64::from(spi / 32) * 4, 4, 1 << (spi % 32));
    write(g, 0, D + 0x400 + u64::from(spi), 1, 0xa0);
    write(g, 0, D + 0x800 + u64::from(spi), 1, u64::from(targets));
}

#[test]
fn spi_goes_to_its_first_target_as_a_group0_lr() {
    let mut g = v2(2);
    spi_setup(&mut g, 40, 0b10);
    g.set_spi_line(40, true);
    assert!(!g.has_deliverable(0));
    assert!(g.has_deliverable(1));
    let plan = g.fill_lrs(1, 4);
    assert_eq!(plan.count, 1);
    let lr = plan.values[0];
    assert_eq!(lr_intid(lr), 40);
    assert_eq!(lr_state(lr), 0b01, "pending");
    assert_eq!((lr >> 23) & 0x1f, 0xa0 >> 3, "priority's upper 5 bits");
    assert_eq!(lr & (1 << 30), 0, "group 0");
    // The guest acknowledged it (active) and the line is still high.
    g.sync_lrs(1, &[(lr & !(3 << 28)) | (0b10 << 28)]);
    assert_eq!(read(&mut g, 0, D + 0x304, 4) & (1 << 8), 1 << 8, "ISACTIVER");
    // Deactivated by the guest (an invalid LR): with the line still high it is pending again.
    let plan = g.fill_lrs(1, 4);
    g.sync_lrs(1, &[plan.values[0] & !(3 << 28)]);
    assert!(g.has_deliverable(1));
    g.set_spi_line(40, false);
    assert!(!g.has_deliverable(1));
}

#[test]
fn nothing_is_delivered_with_the_distributor_off() {
    let mut g = v2(1);
    spi_setup(&mut g, 33, 1);
    write(&mut g, 0, D, 4, 0);
    g.set_spi_line(33, true);
    assert!(!g.has_deliverable(0));
    write(&mut g, 0, D, 4, 1);
    assert!(g.has_deliverable(0));
}

#[test]
fn sgir_targets_list_others_and_self_and_records_the_sender() {
    let mut g = v2(3);
    write(&mut g, 0, D, 4, 1);
    for v in 0..3 {
        write(&mut g, v, D + 0x100, 4, 0xffff);
    }
    // Target list: vCPU 2 (and vCPU 5, which does not exist), SGI 3, from vCPU 1.
    write(&mut g, 1, D + 0xf00, 4, (0b10_0100 << 16) | 3);
    assert!(!g.has_deliverable(0) && !g.has_deliverable(1) && g.has_deliverable(2));
    let lr = g.fill_lrs(2, 4).values[0];
    assert_eq!(lr_intid(lr), 3);
    assert_eq!((lr >> 10) & 7, 1, "CPUID: the sender");
    g.sync_lrs(2, &[lr & !(3 << 28)]);
    // All but self, SGI 5, from vCPU 0.
    write(&mut g, 0, D + 0xf00, 4, (1 << 24) | 5);
    assert!(!g.has_deliverable(0) && g.has_deliverable(1) && g.has_deliverable(2));
    // Self only.
    let mut g = v2(2);
    write(&mut g, 0, D, 4, 1);
    write(&mut g, 1, D + 0x100, 4, 0xffff);
    write(&mut g, 1, D + 0xf00, 4, (2 << 24) | 7);
    assert!(g.has_deliverable(1) && !g.has_deliverable(0));
    assert!(g.may_wake_sibling(D + 0xf00));
    assert!(!v2(1).may_wake_sibling(D + 0xf00));
    assert!(!Vgic::new(2).may_wake_sibling(D + 0xf00));
}

#[test]
fn ppi_raised_by_the_backend_reaches_its_vcpu_only() {
    let mut g = v2(2);
    write(&mut g, 0, D, 4, 1);
    write(&mut g, 1, D + 0x100, 4, 1 << 31);
    g.raise_private(1, UPCALL_PPI);
    assert!(g.has_deliverable(1) && !g.has_deliverable(0));
    let cpu = CpuInterface::from_gich_vmcr(1 | (0x1f << 27), 0);
    assert!(g.has_signalled(1, &cpu));
    // Group 0 disabled at the virtual CPU interface, or masked by priority: not signalled.
    assert!(!g.has_signalled(1, &CpuInterface::from_gich_vmcr(0x1f << 27, 0)));
    assert!(!g.has_signalled(1, &CpuInterface::from_gich_vmcr(1, 0)));
    // An active priority 0 blocks everything.
    assert!(!g.has_signalled(1, &CpuInterface::from_gich_vmcr(1 | (0x1f << 27), 1)));
}

#[test]
fn hostile_accesses_neither_panic_nor_touch_other_banks() {
    let mut g = v2(1);
    for offset in (0..0x1000u64).step_by(1) {
        for size in [1u8, 2, 4, 8, 3] {
            let _ = g.mmio(0, D + offset, size, Some(u64::MAX));
            let _ = g.mmio(7, D + offset, size, None);
        }
    }
    assert_eq!(g.nr_vcpus(), 1);
}
