//! Finding device-tree nodes by path, robustly.
//!
//! `fdt` 0.1.5's `find_node` misses top-level nodes in some valid trees (seen: the DTB QEMU
//! hands over after merging a `-dtb` file, where `/cpus` and `/chosen` come after
//! `/flash@0`); walking the root's children by name finds them. Deeper paths still go
//! through `find_node`.

use fdt::Fdt;
use fdt::node::FdtNode;

/// The node at `path` (`/name` looked up among the root's children).
pub fn node<'b, 'a>(fdt: &'b Fdt<'a>, path: &str) -> Option<FdtNode<'b, 'a>> {
    match path.strip_prefix('/') {
        Some(name) if !name.is_empty() && !name.contains('/') => {
            fdt.find_node("/")?.children().find(|c| c.name == name).or_else(|| fdt.find_node(path))
        }
        _ => fdt.find_node(path),
    }
}
