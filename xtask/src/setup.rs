//! Installs what is missing, and only that.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

use crate::run_checked;

/// The nightly toolchain (the eBPF build and cargo-fuzz need it).
pub fn nightly() -> Result<()> {
    if !succeeds(Command::new("rustup").args(["run", "nightly", "rustc", "--version"])) {
        run_checked(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
        ]))?;
    }
    Ok(())
}

/// The nightly that builds the kernel programs, pinned by date: the
/// committed object (tcptrace-ebpf/prebuilt) was built with it, and a
/// rebuild with another nightly is refused rather than quietly giving a
/// different object. `channel_date` names the rustup channel
/// (`nightly-2026-05-20`); `rustc -vV` of that nightly reports the commit
/// below. To move the pin: change this, `cargo xtask build-ebpf`, commit
/// the object.
pub const KERNEL_NIGHTLY: PinnedNightly = PinnedNightly {
    channel_date: "2026-05-20",
    commit_date: "2026-05-19",
    commit_hash: "e50aa6fba4e63ab34c72bf9acfd2c307c1155d1a",
};

pub struct PinnedNightly {
    pub channel_date: &'static str,
    pub commit_date: &'static str,
    pub commit_hash: &'static str,
}

impl PinnedNightly {
    /// The rustup toolchain name of the pin.
    fn channel(&self) -> String {
        format!("nightly-{}", self.channel_date)
    }

    /// What `rustc -vV` prints in its banner for this nightly, e.g.
    /// `(e50aa6fba 2026-05-19)`, as the object's producer string has it.
    #[cfg(test)]
    fn banner(&self) -> String {
        format!("({} {})", &self.commit_hash[..9], self.commit_date)
    }
}

/// The pinned nightly with rust-src and a bpf-linker built against its own
/// libLLVM (see docs/ARCHITECTURE.md: no other LLVM is needed). Returns the
/// rustup toolchain to build with: `nightly-DATE` when installed, else
/// `nightly` when it is that same build.
pub fn kernel_toolchain() -> Result<String> {
    let toolchain = pinned_nightly()?;
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        &toolchain,
    ]))?;
    if !installed.lines().any(|l| l.starts_with("rust-src")) {
        run_checked(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            &toolchain,
        ]))?;
    }
    if !succeeds(Command::new("bpf-linker").arg("--version")) {
        install_bpf_linker(&toolchain)?;
    }
    Ok(toolchain)
}

/// The installed toolchain that is the pinned nightly, installing
/// `nightly-DATE` when none is (this needs the network).
fn pinned_nightly() -> Result<String> {
    let pin = &KERNEL_NIGHTLY;
    let dated = pin.channel();
    let commit_of = |toolchain: &str| {
        let version = output(
            Command::new("rustup")
                .env("RUSTUP_AUTO_INSTALL", "0")
                .args(["run", toolchain, "rustc", "-vV"]),
        )
        .ok()?;
        let field = |name: &str| {
            version
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_owned())
        };
        Some((field("commit-hash:")?, field("commit-date:")?))
    };
    for toolchain in [dated.as_str(), "nightly"] {
        if commit_of(toolchain).is_some_and(|(hash, _)| hash == pin.commit_hash) {
            return Ok(toolchain.to_owned());
        }
    }
    let found = match commit_of("nightly") {
        Some((hash, date)) => format!("`rustc +nightly -vV` says commit-date {date} ({hash:.9})"),
        None => "no nightly is installed".to_owned(),
    };
    let install = run_checked(Command::new("rustup").args([
        "toolchain",
        "install",
        &dated,
        "--profile",
        "minimal",
    ]));
    if install.is_ok() && commit_of(&dated).is_some_and(|(hash, _)| hash == pin.commit_hash) {
        return Ok(dated);
    }
    bail!(
        "the kernel programs are built with {dated} (rustc commit-date {}, {:.9}), \
         but {found}, and `rustup toolchain install {dated}` did not provide it. \
         Install {dated}, or move the pin: KERNEL_NIGHTLY in xtask/src/setup.rs, \
         then `cargo xtask build-ebpf` and commit the object",
        pin.commit_date,
        pin.commit_hash,
    )
}

fn install_bpf_linker(toolchain: &str) -> Result<()> {
    let sysroot = PathBuf::from(
        output(Command::new("rustc").args([&format!("+{toolchain}"), "--print", "sysroot"]))?
            .trim(),
    );
    let lib = sysroot.join("lib");
    let llvm = std::fs::read_dir(&lib)?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM.so."))
        })
        .with_context(|| format!("no libLLVM.so.* in {}", lib.display()))?;
    let major = llvm
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("libLLVM.so."))
        .and_then(|v| v.split('.').next())
        .context("cannot read the LLVM version")?
        .to_owned();
    let prefix = std::env::temp_dir().join("tcptrace-llvm-prefix");
    std::fs::create_dir_all(prefix.join("lib"))?;
    let link = prefix.join("lib/libLLVM.so");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&llvm, &link)?;
    run_checked(
        Command::new("cargo")
            .env("LLVM_PREFIX", &prefix)
            .env_remove("RUSTUP_TOOLCHAIN")
            .args([
                "install",
                "bpf-linker",
                "--version",
                "0.13.0",
                "--no-default-features",
                "--features",
            ])
            .arg(format!("llvm-{major}")),
    )
}

/// Debian packages the real-kernel tests and peers need.
pub const TEST_PACKAGES: [(&str, &str); 12] = [
    ("nft", "nftables"),
    ("tcpstates", "libbpf-tools"),
    ("ip", "iproute2"),
    ("bpftool", "bpftool"),
    ("promtool", "prometheus"),
    // The real programs of tests/tests/runtimes.rs (call sites per runtime),
    // built from tests/workloads/ at test time.
    ("gcc", "gcc"),
    ("go", "golang-go"),
    ("javac", "default-jdk-headless"),
    ("node", "nodejs"),
    ("nginx", "nginx"),
    ("curl", "curl"),
    ("ab", "apache2-utils"),
];

/// Installs the Debian packages whose commands are missing.
pub fn test_packages() -> Result<()> {
    let missing: Vec<&str> = TEST_PACKAGES
        .iter()
        .filter(|(command, _)| !on_path(command))
        .map(|(_, package)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !crate::is_root() {
        bail!(
            "the tests need {} installed (and root to run): run as root",
            missing.join(", ")
        );
    }
    println!("xtask: installing {}", missing.join(" "));
    run_checked(Command::new("apt-get").args(["update", "-q"]))?;
    run_checked(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing),
    )
}

fn on_path(command: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .any(|dir| Path::new(&dir).join(command).is_file())
}

pub fn succeeds(command: &mut Command) -> bool {
    command.output().is_ok_and(|o| o.status.success())
}

fn output(command: &mut Command) -> Result<String> {
    let out = command
        .output()
        .with_context(|| format!("starting {command:?}"))?;
    if !out.status.success() {
        bail!(
            "{command:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

#[cfg(test)]
mod tests {
    use super::KERNEL_NIGHTLY;

    /// The committed object names the compiler that built it (its DWARF
    /// producer, `clang LLVM (rustc version ...)`): it must be the pin.
    #[test]
    fn committed_object_was_built_with_the_pinned_nightly() {
        let object = tcptrace::probe::object::EBPF_OBJECT;
        let marker = b"rustc version ";
        let at = object
            .windows(marker.len())
            .position(|w| w == marker)
            .expect("the eBPF object names no rustc version");
        let producer: String = object[at..]
            .iter()
            .take_while(|&&b| b != 0)
            .map(|&b| char::from(b))
            .collect();
        assert!(
            producer.contains(&KERNEL_NIGHTLY.banner()),
            "tcptrace-ebpf/prebuilt/tcptrace.bpf.o was built by {producer}, \
             not by the pinned nightly-{} {}: KERNEL_NIGHTLY in xtask/src/setup.rs",
            KERNEL_NIGHTLY.channel_date,
            KERNEL_NIGHTLY.banner()
        );
    }
}
