//! `cargo xtask deploy-check`, also a step of `cargo xtask test`: the
//! deployment files checked offline, with nothing but what
//! `setup::deploy_tools` installs (into target/deploy-check).
//!
//! - The kustomize base (deploy/kubernetes) is rendered by kustomize v5,
//!   alone and with the `PodMonitor` component (through an overlay written
//!   to target/deploy-check/with-podmonitor, as a user would), and both
//!   renders are kept there to read.
//! - kubernetes-validate checks every resource in strict mode (unknown
//!   fields are errors) against the API schemas of the oldest Kubernetes
//!   the manifests support and the newest it knows. It has no schema for
//!   custom resources: the `PodMonitor` is checked against
//!   prometheus-operator's models, generated from its CRD
//!   (`deploy_check.py`).
//! - What no schema says, checked here: the resources fit together (one
//!   namespace, selectors that select the pods, ports that exist, the
//!   `ConfigMap` the pod mounts), the daemon's own parser accepts the
//!   configuration the pod gets (file and arguments), the image tag is the
//!   workspace version and its entrypoint runs `tcptrace daemon`, the
//!   capabilities are the documented ones, and the API server's rule on
//!   `CAP_SYS_ADMIN` with `allowPrivilegeEscalation` holds.
//! - The Grafana dashboard is valid JSON whose panels, queries and
//!   variables all use its `datasource` variable (file provisioning has no
//!   import step to fill in `${DS_...}` inputs).
//!
//! Every check runs and prints its line; the command fails when any did.

use std::{
    collections::BTreeSet,
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;
use tcptrace::daemon::config::{DaemonConfig, FileConfig, Overrides};

use crate::{setup, workspace};

/// The oldest Kubernetes the manifests support (`appArmorProfile` in the
/// security context is 1.30) and the newest kubernetes-validate has.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.30", "1.37"];
/// The image the Containerfile builds, tagged with the workspace version.
const IMAGE: &str = "ghcr.io/tcptrace/tcptrace";
const ENTRYPOINT: &str = r#"ENTRYPOINT ["/usr/local/bin/tcptrace", "daemon"]"#;
/// Capabilities the daemon must have (deploy/README.md, "Capabilities"),
/// and the only others it may be given.
const REQUIRED_CAPS: [&str; 4] = ["BPF", "PERFMON", "SYS_PTRACE", "DAC_READ_SEARCH"];
const OPTIONAL_CAPS: [&str; 2] = ["SYS_ADMIN", "SYS_NICE"];
/// Host paths the pod must mount (read-only, like every host path).
const HOST_MOUNTS: [&str; 5] = [
    "/sys/kernel/tracing",
    "/sys/kernel/btf",
    "/sys/fs/cgroup",
    "/run/containerd/io.containerd.runtime.v2.task",
    "/var/log/pods",
];
const HELPER: &str = include_str!("deploy_check.py");

pub fn run() -> Result<()> {
    let root = workspace();
    let dir = root.join("target/deploy-check");
    let tools = setup::deploy_tools(&dir)?;
    println!(
        "deploy-check: rendering with `{} {}` ({})",
        tools.kustomize.0.display(),
        tools.kustomize.1.join(" "),
        tools.kustomize_version
    );
    let mut checks = Checks::default();
    checks.check("config copy", || config_copy(&root));
    let overlay = dir.join("with-podmonitor");
    let renders = checks.check("render", || {
        fs::create_dir_all(&overlay)?;
        fs::write(
            overlay.join("kustomization.yaml"),
            "# Written by `cargo xtask deploy-check`: the base with the PodMonitor component.\n\
             apiVersion: kustomize.config.k8s.io/v1beta1\n\
             kind: Kustomization\n\
             resources:\n  - ../../../deploy/kubernetes\n\
             components:\n  - ../../../deploy/kubernetes/components/podmonitor\n",
        )?;
        let base = render(
            &tools,
            &root.join("deploy/kubernetes"),
            &dir.join("base.yaml"),
        )?;
        let with = render(&tools, &overlay, &dir.join("with-podmonitor.yaml"))?;
        Ok((
            [base, with],
            "base.yaml and with-podmonitor.yaml in target/deploy-check".into(),
        ))
    });
    if let Some(files) = &renders {
        for version in KUBERNETES_VERSIONS {
            checks.check(&format!("kubernetes-validate --strict, {version}"), || {
                kubernetes_validate(&tools, files, version)
            });
        }
        if let Some((docs, errors)) = checks.check("read the renders", || documents(&tools, files))
        {
            checks.check("PodMonitor against prometheus-operator's CRD", || {
                ensure!(errors.is_empty(), "{}", errors.join("\n        "));
                Ok((
                    (),
                    "fields and values valid (cloudcoil.models.prometheus_operator)".into(),
                ))
            });
            manifest_checks(&mut checks, &root, &docs[0], &docs[1]);
        }
    }
    checks.check("Grafana dashboard", || {
        dashboard(&root.join("deploy/grafana/tcptrace-dashboard.json"))
    });
    checks.finish()
}

fn manifest_checks(checks: &mut Checks, root: &Path, base: &[Value], with: &[Value]) {
    checks.check("resources", || resources(base, with));
    checks.check("namespace", || namespace(with));
    let Some(ds) = checks.check("DaemonSet pod", || daemonset_pod(base)) else {
        return;
    };
    checks.check("capabilities", || capabilities(&ds));
    checks.check("image", || image(root, &ds));
    checks.check("daemon configuration", || daemon_config(root, base, &ds));
    checks.check("probes and resources", || probes_and_resources(&ds));
    checks.check("host mounts", || host_mounts(&ds));
    checks.check("Service", || service(base, &ds));
    checks.check("PodMonitor", || pod_monitor(with, &ds));
}

/// The results, printed as they come.
#[derive(Default)]
struct Checks {
    failed: Vec<String>,
    passed: usize,
}

impl Checks {
    /// Runs one check: `Ok((value, detail))` passes and returns the value.
    fn check<T>(&mut self, name: &str, f: impl FnOnce() -> Result<(T, String)>) -> Option<T> {
        match f() {
            Ok((value, detail)) => {
                println!("  ok    {name}: {detail}");
                self.passed += 1;
                Some(value)
            }
            Err(e) => {
                println!("  FAIL  {name}: {e:#}");
                self.failed.push(name.to_owned());
                None
            }
        }
    }

    fn finish(self) -> Result<()> {
        if self.failed.is_empty() {
            println!("deploy-check: all {} checks hold", self.passed);
            Ok(())
        } else {
            bail!(
                "deployment checks failed (above): {}; rendered manifests are in target/deploy-check",
                self.failed.join(", ")
            )
        }
    }
}

/// The `ConfigMap` is generated from deploy/kubernetes/tcptrace.toml (kustomize
/// reads nothing outside the kustomization), which must be the documented
/// deploy/tcptrace.toml.
fn config_copy(root: &Path) -> Result<((), String)> {
    let original = fs::read_to_string(root.join("deploy/tcptrace.toml"))?;
    let copy = fs::read_to_string(root.join("deploy/kubernetes/tcptrace.toml"))?;
    ensure!(
        copy == original,
        "deploy/kubernetes/tcptrace.toml differs from deploy/tcptrace.toml: \
         `cp deploy/tcptrace.toml deploy/kubernetes/`"
    );
    Ok((
        (),
        "deploy/kubernetes/tcptrace.toml = deploy/tcptrace.toml".into(),
    ))
}

fn render(tools: &setup::DeployTools, kustomization: &Path, out: &Path) -> Result<PathBuf> {
    let (program, args) = &tools.kustomize;
    let output = Command::new(program)
        .args(args)
        .arg(kustomization)
        .output()
        .with_context(|| format!("starting {}", program.display()))?;
    ensure!(
        output.status.success(),
        "rendering {} failed: {}",
        kustomization.display(),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    fs::write(out, &output.stdout)?;
    Ok(out.to_path_buf())
}

/// kubernetes-validate in strict mode. Its one tolerated warning: no schema
/// for the `PodMonitor` (a custom resource), which `documents` checks.
fn kubernetes_validate(
    tools: &setup::DeployTools,
    files: &[PathBuf],
    version: &str,
) -> Result<((), String)> {
    let output = Command::new(&tools.kubernetes_validate)
        .args(["--strict", "--kubernetes-version", version])
        .args(files)
        .output()
        .context("starting kubernetes-validate")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let passed = text
        .lines()
        .filter(|l| l.starts_with("INFO") && l.contains(" passed "))
        .count();
    let problems: Vec<&str> = text
        .lines()
        .filter(|l| !(l.trim().is_empty() || l.starts_with("INFO") && l.contains(" passed ")))
        .filter(|l| {
            !(l.starts_with("WARN")
                && l.contains(
                    "schema for kind PodMonitor with api version monitoring.coreos.com/v1",
                ))
        })
        .collect();
    ensure!(
        output.status.success() && problems.is_empty(),
        "{} ({})",
        problems.join("\n        "),
        output.status
    );
    Ok(((), format!("{passed} resources passed")))
}

/// The renders as JSON, and what `deploy_check.py` found wrong with the
/// `PodMonitor`.
type Documents = (Vec<Vec<Value>>, Vec<String>);

fn documents(tools: &setup::DeployTools, files: &[PathBuf]) -> Result<(Documents, String)> {
    let output = Command::new(&tools.python)
        .arg("-c")
        .arg(HELPER)
        .args(files)
        .output()
        .context("starting the venv's python")?;
    ensure!(
        output.status.success(),
        "deploy_check.py failed: {}",
        String::from_utf8_lossy(&output.stderr).trim()
    );
    let result: Value = serde_json::from_slice(&output.stdout).context("deploy_check.py output")?;
    let errors: Vec<String> = result["errors"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let docs = files
        .iter()
        .map(|f| {
            result["documents"][f.to_string_lossy().as_ref()]
                .as_array()
                .cloned()
                .with_context(|| format!("no documents for {}", f.display()))
        })
        .collect::<Result<Vec<_>>>()?;
    let counts: Vec<String> = docs.iter().map(|d| d.len().to_string()).collect();
    Ok((
        (docs, errors),
        format!("{} documents", counts.join(" and ")),
    ))
}

fn kind(doc: &Value) -> &str {
    doc["kind"].as_str().unwrap_or_default()
}

fn name(doc: &Value) -> &str {
    doc["metadata"]["name"].as_str().unwrap_or_default()
}

fn one<'a>(docs: &'a [Value], wanted: &str) -> Result<&'a Value> {
    let mut found = docs.iter().filter(|d| kind(d) == wanted);
    let doc = found
        .next()
        .with_context(|| format!("no {wanted} rendered"))?;
    ensure!(found.next().is_none(), "more than one {wanted} rendered");
    Ok(doc)
}

/// The base holds only core API kinds (it applies on a cluster without any
/// CRD); the component adds the `PodMonitor` and changes nothing else.
fn resources(base: &[Value], with: &[Value]) -> Result<((), String)> {
    let kinds: BTreeSet<(&str, &str)> = base
        .iter()
        .map(|d| (d["apiVersion"].as_str().unwrap_or_default(), kind(d)))
        .collect();
    let expected: BTreeSet<(&str, &str)> = [
        ("v1", "Namespace"),
        ("v1", "ServiceAccount"),
        ("v1", "ConfigMap"),
        ("v1", "Service"),
        ("apps/v1", "DaemonSet"),
    ]
    .into();
    ensure!(
        kinds == expected && base.len() == expected.len(),
        "the base renders {kinds:?}, expected one each of {expected:?}"
    );
    let added: Vec<&Value> = with.iter().filter(|d| !base.contains(d)).collect();
    ensure!(
        with.len() == base.len() + 1 && added.len() == 1 && kind(added[0]) == "PodMonitor",
        "the PodMonitor component changes more than adding a PodMonitor"
    );
    Ok((
        (),
        format!(
            "{} kinds of the core API; the component adds only the PodMonitor",
            kinds.len()
        ),
    ))
}

/// Every namespaced resource lives in the rendered Namespace, which admits
/// privileged pods.
fn namespace(docs: &[Value]) -> Result<((), String)> {
    let ns = one(docs, "Namespace")?;
    let ns_name = name(ns);
    ensure!(
        ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged",
        "namespace {ns_name} does not admit privileged pods (pod-security.kubernetes.io/enforce)"
    );
    for doc in docs.iter().filter(|d| kind(d) != "Namespace") {
        let theirs = doc["metadata"]["namespace"].as_str().unwrap_or("(none)");
        ensure!(
            theirs == ns_name,
            "{} {} is in namespace {theirs}, not {ns_name}",
            kind(doc),
            name(doc)
        );
    }
    Ok((
        (),
        format!("everything in {ns_name} (Pod Security: privileged)"),
    ))
}

/// The `DaemonSet`'s pod template, once its pod-level settings are checked.
fn daemonset_pod(docs: &[Value]) -> Result<(Value, String)> {
    let ds = one(docs, "DaemonSet")?;
    let pod = &ds["spec"]["template"];
    let spec = &pod["spec"];
    labels_select(&ds["spec"]["selector"], &pod["metadata"]["labels"])
        .context("the DaemonSet's selector does not select its pods")?;
    ensure!(
        spec["hostPID"] == true,
        "hostPID is not true: owners come from /proc of the node's processes"
    );
    ensure!(
        spec["priorityClassName"] == "system-node-critical",
        "priorityClassName is not system-node-critical"
    );
    let tolerates_all = spec["tolerations"].as_array().is_some_and(|t| {
        t.iter().any(|t| {
            t["operator"] == "Exists" && t.get("key").is_none() && t.get("effect").is_none()
        })
    });
    ensure!(
        tolerates_all,
        "no toleration of every taint (`operator: Exists`, no key, no effect)"
    );
    let account = spec["serviceAccountName"].as_str().unwrap_or_default();
    let sa = one(docs, "ServiceAccount")?;
    ensure!(
        name(sa) == account,
        "serviceAccountName {account} is not the rendered ServiceAccount"
    );
    ensure!(
        spec["automountServiceAccountToken"] == false
            && sa["automountServiceAccountToken"] == false,
        "a service account token is mounted (tcptrace never talks to the API server)"
    );
    let containers = spec["containers"].as_array().map_or(0, Vec::len);
    ensure!(containers == 1, "{containers} containers, expected 1");
    Ok((
        pod.clone(),
        "hostPID, system-node-critical, tolerates every taint, no token".into(),
    ))
}

fn container(pod: &Value) -> &Value {
    &pod["spec"]["containers"][0]
}

fn capabilities(pod: &Value) -> Result<((), String)> {
    let sc = &container(pod)["securityContext"];
    ensure!(
        sc["privileged"] != true,
        "privileged: true (the capabilities are listed instead)"
    );
    ensure!(
        sc["runAsUser"] == 0,
        "not root: Kubernetes grants added capabilities to root only"
    );
    let list = |field: &str| -> BTreeSet<String> {
        sc["capabilities"][field]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(|c| c.trim_start_matches("CAP_").to_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    ensure!(
        list("drop") == BTreeSet::from(["ALL".to_owned()]),
        "capabilities.drop is not [ALL]"
    );
    let added = list("add");
    let missing: Vec<&str> = REQUIRED_CAPS
        .into_iter()
        .filter(|c| !added.contains(*c))
        .collect();
    ensure!(missing.is_empty(), "capabilities missing: {missing:?}");
    let extra: Vec<&String> = added
        .iter()
        .filter(|c| !REQUIRED_CAPS.contains(&c.as_str()) && !OPTIONAL_CAPS.contains(&c.as_str()))
        .collect();
    ensure!(
        extra.is_empty(),
        "capabilities the daemon does not use: {extra:?} (deploy/README.md, Capabilities)"
    );
    // What the API server refuses and no schema says.
    ensure!(
        !(added.contains("SYS_ADMIN") && sc["allowPrivilegeEscalation"] == false),
        "allowPrivilegeEscalation: false with SYS_ADMIN (the API server refuses it)"
    );
    Ok(((), added.into_iter().collect::<Vec<_>>().join(" ")))
}

/// The image is the Containerfile's, tagged with the workspace version, and
/// its entrypoint is `tcptrace daemon` (the pod passes only the flags).
fn image(root: &Path, pod: &Value) -> Result<((), String)> {
    let expected = format!("{IMAGE}:{}", env!("CARGO_PKG_VERSION"));
    let image = container(pod)["image"].as_str().unwrap_or_default();
    ensure!(
        image == expected,
        "image {image}, expected {expected} (images: in deploy/kubernetes/kustomization.yaml)"
    );
    ensure!(
        container(pod).get("command").is_none(),
        "the container overrides the image's entrypoint"
    );
    let containerfile = fs::read_to_string(root.join("Containerfile"))?;
    let entrypoints: Vec<&str> = containerfile
        .lines()
        .filter(|l| l.trim_start().starts_with("ENTRYPOINT"))
        .collect();
    ensure!(
        entrypoints == [ENTRYPOINT],
        "the Containerfile's entrypoint is {entrypoints:?}, expected {ENTRYPOINT}"
    );
    Ok(((), format!("{image}, entrypoint `tcptrace daemon`")))
}

/// What the daemon in the pod will read: the mounted `ConfigMap`'s file and
/// the container's arguments, merged by the daemon's own code.
fn daemon_config(root: &Path, docs: &[Value], pod: &Value) -> Result<((), String)> {
    let args: Vec<&str> = container(pod)["args"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let (config_path, overrides) = parse_args(&args)?;
    let config_path = config_path.context("no --config argument")?;
    let (dir, file) = config_path
        .rsplit_once('/')
        .context("--config is not an absolute path")?;
    let mount = container(pod)["volumeMounts"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["mountPath"] == dir))
        .with_context(|| format!("nothing is mounted at {dir} (--config {config_path})"))?;
    let volume = volume(pod, mount["name"].as_str().unwrap_or_default())?;
    let map_name = volume["configMap"]["name"]
        .as_str()
        .context("the --config volume is not a ConfigMap")?;
    let map = docs
        .iter()
        .find(|d| kind(d) == "ConfigMap" && name(d) == map_name)
        .with_context(|| format!("ConfigMap {map_name} is not rendered"))?;
    let text = map["data"][file]
        .as_str()
        .with_context(|| format!("ConfigMap {map_name} has no {file}"))?;
    let documented = fs::read_to_string(root.join("deploy/tcptrace.toml"))?;
    ensure!(
        text == documented,
        "ConfigMap {map_name} is not deploy/tcptrace.toml"
    );
    let merged = DaemonConfig::merge(FileConfig::parse(text).context("tcptrace.toml")?, overrides)
        .context("the daemon would refuse its configuration")?;
    ensure!(
        !merged.listen.ip().is_loopback(),
        "listen {} is loopback: the kubelet's probes and Prometheus reach the pod's address",
        merged.listen
    );
    let port = container_port(pod, &Value::from("metrics"))?;
    ensure!(
        u64::from(merged.listen.port()) == port,
        "listen {} is not the container port `metrics` ({port})",
        merged.listen
    );
    Ok((
        (),
        format!(
            "ConfigMap {map_name} at {config_path}, listen {}",
            merged.listen
        ),
    ))
}

/// The daemon's flags (tcptrace daemon --help) as [`Overrides`]; `--config`
/// apart. A flag unknown here fails the check, so it gets taught here.
fn parse_args(args: &[&str]) -> Result<(Option<String>, Overrides)> {
    let mut config = None;
    let mut o = Overrides::default();
    let mut rest = args.iter().flat_map(|a| match a.split_once('=') {
        Some((flag, value)) if a.starts_with("--") => vec![flag, value],
        _ => vec![*a],
    });
    while let Some(flag) = rest.next() {
        let mut value = || {
            rest.next()
                .map(str::to_owned)
                .with_context(|| format!("{flag} without a value"))
        };
        match flag {
            "--config" => config = Some(value()?),
            "--listen" => o.listen = Some(value()?),
            "--top-peers" => o.top_peers = Some(value()?.parse()?),
            "--ring-buffer-mib" => o.ring_buffer_mib = Some(value()?.parse()?),
            "--socket-map-entries" => o.socket_map_entries = Some(value()?.parse()?),
            "--stack-interval" => o.stack_interval = Some(value()?),
            "--refresh" => o.refresh = Some(value()?),
            "--comm" | "-c" => o.comm.push(value()?),
            "--port" => o.port.push(value()?.parse()?),
            "--no-stacks" => o.no_stacks = true,
            "--no-jvm-perf-map" => o.no_jvm_perf_map = true,
            "--every-event" => o.every_event = true,
            other => {
                bail!("argument {other} is unknown to deploy-check (xtask/src/deploy_check.rs)")
            }
        }
    }
    Ok((config, o))
}

fn volume<'a>(pod: &'a Value, name: &str) -> Result<&'a Value> {
    pod["spec"]["volumes"]
        .as_array()
        .and_then(|v| v.iter().find(|v| v["name"] == name))
        .with_context(|| format!("no volume {name}"))
}

/// The number of a container port given by name or number.
fn container_port(pod: &Value, port: &Value) -> Result<u64> {
    let ports = container(pod)["ports"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    ports
        .iter()
        .find(|p| match port {
            Value::String(name) => p["name"] == name.as_str(),
            number => p["containerPort"] == *number,
        })
        .and_then(|p| p["containerPort"].as_u64())
        .with_context(|| format!("the container has no port {port}"))
}

fn probes_and_resources(pod: &Value) -> Result<((), String)> {
    let c = container(pod);
    for probe in ["readinessProbe", "livenessProbe"] {
        let get = &c[probe]["httpGet"];
        ensure!(get["path"] == "/healthz", "{probe} does not GET /healthz");
        container_port(pod, &get["port"]).with_context(|| format!("{probe}'s port"))?;
    }
    for bound in ["requests", "limits"] {
        for resource in ["cpu", "memory"] {
            ensure!(
                c["resources"][bound][resource].is_string(),
                "no {resource} {bound}"
            );
        }
    }
    let r = &c["resources"];
    Ok((
        (),
        format!(
            "/healthz ready and live; cpu {}/{}, memory {}/{}",
            r["requests"]["cpu"].as_str().unwrap_or_default(),
            r["limits"]["cpu"].as_str().unwrap_or_default(),
            r["requests"]["memory"].as_str().unwrap_or_default(),
            r["limits"]["memory"].as_str().unwrap_or_default()
        ),
    ))
}

/// Every volume mount has its volume; every host path is mounted read-only
/// (so is the root file system); the paths the daemon reads are there.
fn host_mounts(pod: &Value) -> Result<((), String)> {
    let c = container(pod);
    ensure!(
        c["securityContext"]["readOnlyRootFilesystem"] == true,
        "the root file system is writable"
    );
    let mut host = Vec::new();
    for mount in c["volumeMounts"].as_array().into_iter().flatten() {
        let volume = volume(pod, mount["name"].as_str().unwrap_or_default())?;
        if let Some(path) = volume["hostPath"]["path"].as_str() {
            ensure!(
                mount["readOnly"] == true,
                "host path {path} is mounted writable"
            );
            ensure!(
                mount["mountPath"] == path,
                "host path {path} is mounted at {} (the daemon reads the node's paths where they are)",
                mount["mountPath"]
            );
            host.push(path);
        }
    }
    let missing: Vec<&str> = HOST_MOUNTS
        .into_iter()
        .filter(|p| !host.contains(p))
        .collect();
    ensure!(missing.is_empty(), "host paths not mounted: {missing:?}");
    Ok(((), format!("{} host paths, all read-only", host.len())))
}

/// The headless Service selects the pods and names their metrics port.
fn service(docs: &[Value], pod: &Value) -> Result<((), String)> {
    let svc = one(docs, "Service")?;
    ensure!(
        svc["spec"]["clusterIP"] == "None",
        "Service {} is not headless",
        name(svc)
    );
    let selector = serde_json::json!({ "matchLabels": svc["spec"]["selector"] });
    labels_select(&selector, &pod["metadata"]["labels"])
        .context("its selector does not select the pods")?;
    let ports = svc["spec"]["ports"].as_array().cloned().unwrap_or_default();
    ensure!(!ports.is_empty(), "Service {} has no port", name(svc));
    for port in &ports {
        container_port(pod, &port["targetPort"])?;
    }
    Ok((
        (),
        format!(
            "headless, selects the DaemonSet's pods, port {}",
            ports[0]["targetPort"]
        ),
    ))
}

/// The `PodMonitor` selects the `DaemonSet`'s pods, in its own namespace (or
/// one it names), on a port they have.
fn pod_monitor(docs: &[Value], pod: &Value) -> Result<((), String)> {
    let pm = one(docs, "PodMonitor")?;
    let ds = one(docs, "DaemonSet")?;
    let pods_ns = ds["metadata"]["namespace"].as_str().unwrap_or_default();
    let ns_selector = &pm["spec"]["namespaceSelector"];
    let in_namespace = if ns_selector.is_null() {
        pm["metadata"]["namespace"] == pods_ns
    } else {
        ns_selector["any"] == true
            || ns_selector["matchNames"]
                .as_array()
                .is_some_and(|n| n.iter().any(|n| n == pods_ns))
    };
    ensure!(
        in_namespace,
        "the PodMonitor does not look in namespace {pods_ns}"
    );
    labels_select(&pm["spec"]["selector"], &pod["metadata"]["labels"])
        .context("its selector does not select the DaemonSet's pods")?;
    let endpoints = pm["spec"]["podMetricsEndpoints"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    ensure!(!endpoints.is_empty(), "no podMetricsEndpoints");
    let mut detail = String::new();
    for e in &endpoints {
        let port = e.get("port").context("an endpoint names no port")?;
        container_port(pod, port)?;
        ensure!(
            e.get("path").is_none_or(|p| p == "/metrics"),
            "endpoint path {} is not /metrics",
            e["path"]
        );
        let _ = write!(detail, "port {port}");
    }
    Ok((
        (),
        format!("selects the DaemonSet's pods in {pods_ns}, {detail}"),
    ))
}

/// Whether a label selector (matchLabels, matchExpressions) selects `labels`.
fn labels_select(selector: &Value, labels: &Value) -> Result<()> {
    let matches = selector["matchLabels"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let expressions = selector["matchExpressions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    ensure!(
        !matches.is_empty() || !expressions.is_empty(),
        "an empty selector selects everything"
    );
    for (key, value) in &matches {
        ensure!(
            labels[key] == *value,
            "{key}={value} is not a label of the pods ({labels})"
        );
    }
    for e in &expressions {
        let key = e["key"].as_str().unwrap_or_default();
        let values = e["values"].as_array().cloned().unwrap_or_default();
        let ok = match e["operator"].as_str().unwrap_or_default() {
            "In" => values.contains(&labels[key]),
            "NotIn" => !values.contains(&labels[key]),
            "Exists" => labels.get(key).is_some(),
            "DoesNotExist" => labels.get(key).is_none(),
            other => bail!("unknown selector operator {other}"),
        };
        ensure!(ok, "expression {e} does not hold for the pods ({labels})");
    }
    Ok(())
}

/// The dashboard provisions as a file: no import inputs, every query on the
/// `datasource` variable.
fn dashboard(path: &Path) -> Result<((), String)> {
    let text = fs::read_to_string(path)?;
    ensure!(
        !text.contains("${DS_"),
        "it names a ${{DS_...}} import input"
    );
    let d: Value = serde_json::from_str(&text).context("not JSON")?;
    for key in ["__inputs", "__requires", "__elements"] {
        ensure!(
            d.get(key).is_none(),
            "it has {key} (an export for import, not for provisioning)"
        );
    }
    let variables = d["templating"]["list"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    ensure!(
        variables.iter().any(|v| v["name"] == "datasource"
            && v["type"] == "datasource"
            && v["query"] == "prometheus"),
        "no `datasource` variable of type datasource (query prometheus)"
    );
    let reference = serde_json::json!({ "type": "prometheus", "uid": "${datasource}" });
    let mut queries = 0;
    for v in variables.iter().filter(|v| v["type"] == "query") {
        ensure!(
            v["datasource"] == reference,
            "variable {} does not use ${{datasource}}",
            v["name"]
        );
        queries += 1;
    }
    let mut panels: Vec<Value> = d["panels"].as_array().cloned().unwrap_or_default();
    let mut count = 0;
    while let Some(panel) = panels.pop() {
        // Collapsed rows hold their panels.
        panels.extend(panel["panels"].as_array().cloned().unwrap_or_default());
        if panel["type"] == "row" {
            continue;
        }
        let title = panel["title"].as_str().unwrap_or_default();
        ensure!(
            panel["datasource"] == reference,
            "panel `{title}` does not use ${{datasource}}"
        );
        let targets = panel["targets"].as_array().cloned().unwrap_or_default();
        ensure!(!targets.is_empty(), "panel `{title}` has no query");
        for t in &targets {
            ensure!(
                t["datasource"] == reference,
                "a query of panel `{title}` does not use ${{datasource}}"
            );
            queries += 1;
        }
        count += 1;
    }
    Ok((
        (),
        format!("{count} panels and {queries} queries on ${{datasource}}, no import inputs"),
    ))
}
