//! AMD-V address space IDs, handed out per physical CPU on demand.
//!
//! The TLB tags guest translations with the VMCB's ASID, so two vCPUs (of any domains) that
//! run on one CPU must not share one without a flush between them. A CPU has few (QEMU's
//! TCG: 16, hardware: 32 768 and up). As KVM does, each CPU hands them out in generations:
//! a vCPU keeps the ASID it was given while that generation lasts; when the supply runs out,
//! the whole TLB is flushed once, a new generation starts, and every vCPU takes a fresh ASID
//! at its next entry. No vCPU ever flushes at every entry, however many there are.

/// One vCPU's ASID on one CPU, and the generation it was given in (0: never given).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AsidTag {
    asid: u32,
    generation: u64,
}

/// What the entry must do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Assignment {
    /// The VMCB's `guest_asid` for this entry.
    pub asid: u32,
    /// Flush every ASID's entries first (a new generation began).
    pub flush_all: bool,
}

/// One CPU's supply: guest ASIDs are 1..`count` (0 is the host's).
#[derive(Debug)]
pub struct AsidPool {
    count: u32,
    next: u32,
    generation: u64,
}

impl AsidPool {
    /// A CPU with `count` ASIDs (CPUID 0x8000_000A EBX), the host's included.
    pub const fn new(count: u32) -> Self {
        AsidPool { count, next: 1, generation: 1 }
    }

    /// The ASID for the vCPU whose tag is `tag`, entering now.
    pub fn assign(&mut self, tag: &mut AsidTag) -> Assignment {
        if self.count < 2 {
            // A single guest ASID: everyone shares it, every entry flushes.
            *tag = AsidTag { asid: 1, generation: self.generation };
            return Assignment { asid: 1, flush_all: true };
        }
        if tag.generation == self.generation {
            return Assignment { asid: tag.asid, flush_all: false };
        }
        let mut flush_all = false;
        if self.next >= self.count {
            // Every ASID of this generation is taken: their TLB entries go, all at once.
            self.generation += 1;
            self.next = 1;
            flush_all = true;
        }
        *tag = AsidTag { asid: self.next, generation: self.generation };
        self.next += 1;
        Assignment { asid: tag.asid, flush_all }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::collections::HashMap;
    use std::vec::Vec;

    #[test]
    fn a_vcpu_keeps_its_asid_and_never_flushes_while_the_supply_lasts() {
        let mut pool = AsidPool::new(16);
        let mut tags = [AsidTag::default(); 15];
        let first: Vec<u32> = tags.iter_mut().map(|t| pool.assign(t).asid).collect();
        assert_eq!(first, (1..16).collect::<Vec<_>>());
        for _ in 0..3 {
            for (t, &asid) in tags.iter_mut().zip(&first) {
                assert_eq!(pool.assign(t), Assignment { asid, flush_all: false });
            }
        }
    }

    #[test]
    fn running_dry_flushes_once_and_starts_a_new_generation() {
        let mut pool = AsidPool::new(4);
        let mut tags = [AsidTag::default(); 5];
        let entries: Vec<Assignment> = tags.iter_mut().map(|t| pool.assign(t)).collect();
        assert_eq!(entries.iter().filter(|a| a.flush_all).count(), 1);
        assert!(entries[3].flush_all, "the fourth vCPU found the three guest ASIDs taken");
        // The first three are of the old generation: each takes a fresh ASID, no new flush
        // until the supply runs out again.
        assert_eq!(pool.assign(&mut tags[0]), Assignment { asid: 3, flush_all: false });
        assert_eq!(pool.assign(&mut tags[1]), Assignment { asid: 1, flush_all: true });
    }

    /// A model check: however vCPUs interleave, two vCPUs never run with the same ASID
    /// unless a full flush came between their entries.
    #[test]
    fn no_two_vcpus_share_an_asid_without_a_flush_between_them() {
        for count in [2u32, 3, 4, 16] {
            let mut pool = AsidPool::new(count);
            let mut tags = [AsidTag::default(); 7];
            // Which vCPU last entered with each ASID since the last full flush.
            let mut owner: HashMap<u32, usize> = HashMap::new();
            let mut seed = 0x2545_f491_4f6c_dd1du64;
            for _ in 0..2000 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let v = (seed % tags.len() as u64) as usize;
                let a = pool.assign(&mut tags[v]);
                assert!((1..count).contains(&a.asid), "guest ASIDs are 1..{count}");
                if a.flush_all {
                    owner.clear();
                }
                let previous = owner.insert(a.asid, v);
                assert!(previous.is_none_or(|p| p == v), "ASID {} reused by v{v} after v{previous:?}", a.asid);
            }
        }
    }

    #[test]
    fn with_one_guest_asid_every_entry_flushes() {
        let mut pool = AsidPool::new(1);
        let mut tag = AsidTag::default();
        for _ in 0..3 {
            assert_eq!(pool.assign(&mut tag), Assignment { asid: 1, flush_all: true });
        }
    }
}
