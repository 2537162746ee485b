//! Rebuilds `tcptrace-ebpf/prebuilt/tcptrace.bpf.o` and its source hash.

use std::{fs, process::Command};

use anyhow::{Context, Result};

use crate::{run_checked, setup, workspace};

pub fn run() -> Result<()> {
    let toolchain = setup::kernel_toolchain()?;
    let root = workspace();
    let ebpf = root.join("tcptrace-ebpf");
    // The pinned nightly (setup::KERNEL_NIGHTLY), which RUSTUP_TOOLCHAIN
    // selects over tcptrace-ebpf/rust-toolchain.toml; clear the variables
    // cargo set for this (stable) xtask process.
    run_checked(
        Command::new("cargo")
            .current_dir(&ebpf)
            .env("RUSTUP_TOOLCHAIN", &toolchain)
            .env_remove("RUSTC")
            .env_remove("CARGO")
            .args(["build", "--release"]),
    )?;
    let built = ebpf.join("target/bpfel-unknown-none/release/tcptrace");
    let prebuilt = ebpf.join("prebuilt");
    fs::create_dir_all(&prebuilt)?;
    fs::copy(&built, prebuilt.join("tcptrace.bpf.o"))
        .with_context(|| format!("copying {}", built.display()))?;
    let hash = tcptrace::probe::object::sources_hash(&root)?;
    fs::write(prebuilt.join("tcptrace.bpf.o.sha256"), format!("{hash}\n"))?;
    println!("tcptrace-ebpf/prebuilt/tcptrace.bpf.o rebuilt (sources {hash})");
    Ok(())
}
