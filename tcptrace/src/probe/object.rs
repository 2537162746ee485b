//! The compiled kernel programs, committed next to a hash of the sources
//! they were built from (the bpf2go convention): a machine with only stable
//! Rust builds and runs tcptrace, and a test fails when the sources change
//! without `cargo xtask build-ebpf`.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

/// The eBPF object, 8-byte aligned as the ELF parser wants it.
pub static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!("../../../tcptrace-ebpf/prebuilt/tcptrace.bpf.o");

/// The hash of the sources `EBPF_OBJECT` was built from.
pub const EBPF_SOURCES_HASH: &str =
    include_str!("../../../tcptrace-ebpf/prebuilt/tcptrace.bpf.o.sha256");

/// Files (relative to the workspace root) whose content decides the object.
const SOURCE_ROOTS: [&str; 6] = [
    "tcptrace-ebpf/src",
    "tcptrace-ebpf/Cargo.toml",
    "tcptrace-ebpf/Cargo.lock",
    "tcptrace-ebpf/rust-toolchain.toml",
    "tcptrace-ebpf/.cargo/config.toml",
    "tcptrace-common/src",
];

/// SHA-256 over every source file (sorted by path; path and content).
pub fn sources_hash(workspace: &Path) -> Result<String> {
    let mut files = Vec::new();
    for root in SOURCE_ROOTS {
        collect(&workspace.join(root), &mut files)?;
    }
    files.sort();
    let mut hasher = Sha256::new();
    for file in files {
        let relative = file.strip_prefix(workspace).unwrap_or(&file);
        let content = fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
        hasher.update(relative.to_string_lossy().as_bytes());
        hasher.update([0]);
        hasher.update((content.len() as u64).to_le_bytes());
        hasher.update(&content);
    }
    Ok(format!("{:x}", hasher.finalize()))
}

fn collect(path: &Path, files: &mut Vec<PathBuf>) -> Result<()> {
    if path.is_file() {
        files.push(path.to_path_buf());
        return Ok(());
    }
    for entry in fs::read_dir(path).with_context(|| format!("listing {}", path.display()))? {
        collect(&entry?.path(), files)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_object_matches_sources() {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let hash = sources_hash(workspace).unwrap();
        assert_eq!(
            EBPF_SOURCES_HASH.trim(),
            hash,
            "the eBPF sources changed since tcptrace-ebpf/prebuilt/tcptrace.bpf.o was built: \
             run `cargo xtask build-ebpf` and commit both files"
        );
        assert!(
            EBPF_OBJECT.starts_with(b"\x7fELF"),
            "prebuilt object is not an ELF file"
        );
    }
}
