//! Physical memory handed out to domains: RAM minus what boot reserved.
//!
//! A first-fit allocator over the free ranges; domains take large aligned blocks so
//! stage-2/EPT can use block mappings. Every boot module is reserved, so a configuration of
//! many domains cuts RAM into many ranges: the list grows as needed and never drops one.

use alloc::vec::Vec;
use arch::boot::Region;

pub struct FrameAllocator {
    free: Vec<Region>,
}

impl FrameAllocator {
    /// Free memory is `ram` with every `reserved` range cut out.
    pub fn new(ram: &[Region], reserved: &[Region]) -> Self {
        let mut a = Self { free: ram.iter().copied().filter(|r| r.size > 0).collect() };
        for r in reserved {
            a.cut(*r);
        }
        a
    }

    pub fn free_regions(&self) -> &[Region] {
        &self.free
    }

    pub fn free_bytes(&self) -> u64 {
        self.free.iter().map(|r| r.size).sum()
    }

    /// Take `size` bytes aligned to `align` (a power of two) from the first range that fits.
    pub fn alloc(&mut self, size: u64, align: u64) -> Option<u64> {
        debug_assert!(align.is_power_of_two());
        let found = self.free.iter().find_map(|r| {
            let start = r.start.checked_add(align - 1)? & !(align - 1);
            (start.checked_add(size)? <= r.end()).then_some(start)
        })?;
        self.cut(Region { start: found, size });
        Some(found)
    }

    /// Remove `cut` from every free range, splitting ranges it lands inside.
    fn cut(&mut self, cut: Region) {
        let old = core::mem::take(&mut self.free);
        for r in old {
            if cut.end() <= r.start || cut.start >= r.end() {
                self.free.push(r);
                continue;
            }
            if cut.start > r.start {
                self.free.push(Region { start: r.start, size: cut.start - r.start });
            }
            if cut.end() < r.end() {
                self.free.push(Region { start: cut.end(), size: r.end() - cut.end() });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1 << 20;

    fn reg(start: u64, size: u64) -> Region {
        Region { start, size }
    }

    #[test]
    fn reserved_ranges_are_never_handed_out() {
        let mut a =
            FrameAllocator::new(&[reg(0x4000_0000, 64 * MB)], &[reg(0x4000_0000, 3 * MB), reg(0x4200_0000, MB)]);
        assert_eq!(a.free_bytes(), 60 * MB);
        let x = a.alloc(16 * MB, 2 * MB).unwrap();
        assert_eq!(x % (2 * MB), 0);
        assert!(x >= 0x4000_0000 + 3 * MB);
        assert!(x + 16 * MB <= 0x4200_0000 || x >= 0x4210_0000);
    }

    #[test]
    fn allocations_do_not_overlap_and_exhaust_cleanly() {
        let mut a = FrameAllocator::new(&[reg(0, 8 * MB)], &[]);
        let mut got = vec![];
        while let Some(x) = a.alloc(MB, MB) {
            got.push(x);
        }
        got.sort();
        assert_eq!(got, (0..8).map(|i| i * MB).collect::<Vec<_>>());
        assert_eq!(a.free_bytes(), 0);
    }

    #[test]
    fn many_reserved_modules_leave_every_gap_and_the_ram_above_them() {
        // 64 modules 2 MiB apart, as a 64-domain configuration lays them out.
        let modules: Vec<Region> = (0..64).map(|i| reg(0x4a00_0000 + i * 2 * MB, 300 << 10)).collect();
        let mut a = FrameAllocator::new(&[reg(0x4000_0000, 1024 * MB)], &modules);
        assert_eq!(a.free_regions().len(), 2 + 63);
        let above = 0x4a00_0000 + 128 * MB;
        let lots: Vec<u64> = (0..300).map_while(|_| a.alloc(4 * MB, 2 * MB)).collect();
        assert!(lots.iter().any(|&at| at >= above), "the RAM above the modules is used");
        // 160 MiB below the modules, 736 above; the gaps between them are too small.
        assert_eq!(lots.len(), (160 + 736) / 4);
    }

    #[test]
    fn alignment_near_the_top_of_memory_does_not_overflow() {
        let mut a = FrameAllocator::new(&[reg(u64::MAX - MB, MB)], &[]);
        assert_eq!(a.alloc(MB, 1 << 40), None);
    }
}
