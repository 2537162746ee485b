//! What a cgroup path says about the workload in it.
//!
//! Each runtime and each kubelet cgroup driver names its directories its
//! own way, and the path is all the kernel gives us for free, so it is read
//! here for every layout met on nodes:
//!
//! - kubelet, systemd driver: `/kubepods.slice/kubepods-burstable.slice/
//!   kubepods-burstable-pod<uid_with_underscores>.slice/<runtime>-<id>.scope`
//!   (guaranteed pods sit right under `kubepods.slice`);
//! - kubelet, cgroupfs driver: `/kubepods/besteffort/pod<uid>/<id>`;
//! - a runtime told "systemd" paths while it runs the cgroupfs driver
//!   writes the systemd cgroupsPath as one literal directory under its own
//!   cgroup: `/system.slice/containerd.service/kubepods-…-pod<uid>.slice:
//!   cri-containerd:<id>` (the service there is the runtime's, not the
//!   workload's);
//! - containerd `cri-containerd-<id>.scope`, CRI-O `crio-<id>.scope`
//!   (`crio-conmon-<id>.scope` for its monitor), Docker `docker-<id>.scope`
//!   and `/docker/<id>`, nerdctl `nerdctl-<id>.scope`, Podman
//!   `libpod-<id>.scope` (rootless: under `user@<uid>.service`);
//! - lxc `/lxc.payload.<name>`, `/lxc.payload/<name>` and `/lxc/<name>`;
//! - nested nodes (kind): a container whose cgroup holds a whole kubelet
//!   tree, `/system.slice/docker-<node>.scope/kubelet.slice/kubelet-kubepods
//!   .slice/…` (or, seen from inside the node, `/kubelet.slice/…`).
//!
//! A systemd unit is kept only when it is the innermost thing the path
//! names: a service that merely contains containers is their runtime.

/// Who made a container, which decides where its names are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    Containerd,
    Crio,
    Docker,
    Podman,
    Lxc,
    /// A bare 64-hex directory: the cgroupfs drivers of containerd, CRI-O
    /// (outside Kubernetes) and cri-dockerd all write one.
    Unknown,
}

/// The structured reading of one cgroup path.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, serde::Serialize)]
pub struct CgroupIdentity {
    pub runtime: Option<Runtime>,
    /// The full container id (64 hex digits).
    pub container_id: Option<String>,
    /// An lxc container's name (lxc has no id but its name).
    pub lxc_name: Option<String>,
    /// The Kubernetes pod UID, with dashes (or the 32 hex digits of a
    /// static pod's).
    pub pod_uid: Option<String>,
    /// The innermost systemd service, when no container or pod lies below
    /// it.
    pub unit: Option<String>,
    /// The user whose systemd instance holds the cgroup
    /// (`user@<uid>.service`): where rootless Podman keeps its state.
    pub user: Option<u32>,
    /// The cgroup of an enclosing container (a kind node) when the
    /// workload is nested in one: its runtime state lives inside it.
    pub outer: Option<String>,
}

impl CgroupIdentity {
    /// Whether the path names a container, an lxc container or a pod (as
    /// opposed to a host service, a session or the root).
    #[must_use]
    pub fn is_workload(&self) -> bool {
        self.container_id.is_some() || self.lxc_name.is_some() || self.pod_uid.is_some()
    }
}

/// One directory of a path, classified.
enum Part<'a> {
    Pod(String),
    Container(Runtime, &'a str),
    /// `<pod slice>:<runtime prefix>:<id>`, one directory.
    PodContainer(Option<String>, Runtime, &'a str),
    Lxc(&'a str),
    Service,
    Other,
}

/// Reads a cgroup path (as in `/proc/PID/cgroup`, relative to the
/// hierarchy's root).
#[must_use]
pub fn parse(path: &str) -> CgroupIdentity {
    let mut identity = CgroupIdentity::default();
    // Where the current container's directory ends in `path`, to name the
    // outer cgroup when another workload turns up below it.
    let mut container_end: Option<usize> = None;
    let mut parent: Option<&str> = None;
    let mut depth = 0;
    let mut offset = 0;
    for part in path.split('/') {
        let end = offset + part.len();
        offset = end + 1;
        if part.is_empty() {
            continue;
        }
        if let Some(uid) = user_of(part) {
            identity.user = Some(uid);
        }
        match classify(part, parent, depth) {
            Part::Pod(uid) => {
                enclose(&mut identity, &mut container_end, path);
                identity.pod_uid = Some(uid);
                identity.unit = None;
            }
            Part::Container(runtime, id) => {
                enclose(&mut identity, &mut container_end, path);
                set_container(&mut identity, runtime, id);
                container_end = Some(end);
            }
            Part::PodContainer(uid, runtime, id) => {
                enclose(&mut identity, &mut container_end, path);
                if uid.is_some() {
                    identity.pod_uid = uid;
                }
                set_container(&mut identity, runtime, id);
                container_end = Some(end);
            }
            Part::Lxc(name) => {
                enclose(&mut identity, &mut container_end, path);
                identity.runtime = Some(Runtime::Lxc);
                identity.lxc_name = Some(name.to_owned());
                identity.unit = None;
                container_end = Some(end);
            }
            Part::Service => identity.unit = Some(part.to_owned()),
            Part::Other => {}
        }
        parent = Some(part);
        depth += 1;
    }
    identity
}

fn set_container(identity: &mut CgroupIdentity, runtime: Runtime, id: &str) {
    identity.runtime = Some(runtime);
    identity.container_id = Some(id.to_owned());
    identity.unit = None;
}

/// A workload below a container: that container is a node (kind) or a
/// host for nested containers, not the workload.
fn enclose(identity: &mut CgroupIdentity, container_end: &mut Option<usize>, path: &str) {
    if let Some(end) = container_end.take() {
        identity.outer = Some(path[..end].to_owned());
        identity.runtime = None;
        identity.container_id = None;
        identity.lxc_name = None;
        identity.pod_uid = None;
    }
}

/// Container directory prefixes, longest first where one starts another.
const PREFIXES: [(&str, Runtime); 7] = [
    ("cri-containerd-", Runtime::Containerd),
    ("nerdctl-", Runtime::Containerd),
    ("crio-conmon-", Runtime::Crio),
    ("crio-", Runtime::Crio),
    ("docker-", Runtime::Docker),
    ("libpod-conmon-", Runtime::Podman),
    ("libpod-", Runtime::Podman),
];

fn classify<'a>(part: &'a str, parent: Option<&str>, depth: usize) -> Part<'a> {
    if let Some(colon) = pod_container(part) {
        return colon;
    }
    if let Some(uid) = pod_uid(part) {
        return Part::Pod(uid);
    }
    let stem = part.strip_suffix(".scope").unwrap_or(part);
    for (prefix, runtime) in PREFIXES {
        if let Some(id) = stem.strip_prefix(prefix).filter(|id| is_container_id(id)) {
            return Part::Container(runtime, id);
        }
    }
    if is_container_id(part) {
        let runtime = if parent == Some("docker") {
            Runtime::Docker
        } else {
            Runtime::Unknown
        };
        return Part::Container(runtime, part);
    }
    if let Some(name) = part.strip_prefix("lxc.payload.") {
        return Part::Lxc(name);
    }
    if parent == Some("lxc.payload") || (parent == Some("lxc") && depth == 1) {
        return Part::Lxc(part);
    }
    if part.ends_with(".service") {
        return Part::Service;
    }
    Part::Other
}

/// `kubepods-burstable-pod<uid>.slice:cri-containerd:<id>`: what a runtime
/// on the cgroupfs driver makes of a systemd cgroupsPath.
fn pod_container(part: &str) -> Option<Part<'_>> {
    let mut fields = part.split(':');
    let (slice, prefix, id) = (fields.next()?, fields.next()?, fields.next()?);
    if fields.next().is_some() || !is_container_id(id) {
        return None;
    }
    let runtime = PREFIXES
        .iter()
        .find(|(p, _)| p.strip_suffix('-') == Some(prefix))
        .map_or(Runtime::Unknown, |(_, r)| *r);
    Some(Part::PodContainer(pod_uid(slice), runtime, id))
}

/// `pod<uid>` (cgroupfs) or `…-pod<uid_with_underscores>.slice` (systemd).
fn pod_uid(part: &str) -> Option<String> {
    let stem = part.strip_suffix(".slice").unwrap_or(part);
    let raw = match stem.strip_prefix("pod") {
        Some(rest) => rest,
        None => stem.rsplit_once("-pod")?.1,
    };
    let uid = raw.replace('_', "-");
    is_pod_uid(&uid).then_some(uid)
}

/// A UUID (API pods) or 32 hex digits (static pods: the kubelet hashes the
/// manifest).
fn is_pod_uid(uid: &str) -> bool {
    let hex = |s: &str| s.bytes().all(|b| b.is_ascii_hexdigit());
    match uid.len() {
        32 => hex(uid),
        36 => uid.split('-').map(str::len).eq([8, 4, 4, 4, 12]) && hex(&uid.replace('-', "")),
        _ => false,
    }
}

fn is_container_id(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `user@1000.service` (the user's systemd instance).
fn user_of(part: &str) -> Option<u32> {
    part.strip_prefix("user@")?
        .strip_suffix(".service")?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    pub const CTR: &str = "2752ea5db34c1dc718967086526c49d5f55793678e2002db3f7a3e45a4a97b2a";
    const NODE: &str = "23e60658111a240b11962ea4c36d8545c06271103792d48d4fe82c2f9c3bc3ba";
    const UID: &str = "1b2c3d4e-5f60-4182-93a4-b5c6d7e8f901";
    const UID_: &str = "1b2c3d4e_5f60_4182_93a4_b5c6d7e8f901";

    fn container(runtime: Runtime, pod: Option<&str>) -> CgroupIdentity {
        CgroupIdentity {
            runtime: Some(runtime),
            container_id: Some(CTR.into()),
            pod_uid: pod.map(Into::into),
            ..CgroupIdentity::default()
        }
    }

    #[test]
    fn kubelet_systemd_driver_every_qos_class() {
        for (qos, runtime, scope) in [
            ("burstable", Runtime::Containerd, "cri-containerd"),
            ("besteffort", Runtime::Crio, "crio"),
            ("burstable", Runtime::Docker, "docker"),
        ] {
            let path = format!(
                "/kubepods.slice/kubepods-{qos}.slice/kubepods-{qos}-pod{UID_}.slice/{scope}-{CTR}.scope"
            );
            assert_eq!(parse(&path), container(runtime, Some(UID)), "{path}");
        }
        // Guaranteed pods have no QoS slice.
        let path = format!("/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{CTR}.scope");
        assert_eq!(parse(&path), container(Runtime::Containerd, Some(UID)));
        // The pod's own cgroup (its processes are in the containers').
        let pod = parse(&format!("/kubepods.slice/kubepods-pod{UID_}.slice"));
        assert_eq!(pod.pod_uid.as_deref(), Some(UID));
        assert!(pod.is_workload() && pod.container_id.is_none());
    }

    #[test]
    fn kubelet_cgroupfs_driver() {
        for qos in ["burstable/", "besteffort/", ""] {
            let path = format!("/kubepods/{qos}pod{UID}/{CTR}");
            assert_eq!(
                parse(&path),
                container(Runtime::Unknown, Some(UID)),
                "{path}"
            );
        }
        // CRI-O keeps its prefix with cgroupfs.
        let path = format!("/kubepods/burstable/pod{UID}/crio-{CTR}");
        assert_eq!(parse(&path), container(Runtime::Crio, Some(UID)));
    }

    #[test]
    fn static_pods_have_hashed_uids() {
        let uid = "8f2c1d0e9b7a6c5d4e3f2a1b0c9d8e7f";
        let path = format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid}.slice/cri-containerd-{CTR}.scope");
        assert_eq!(parse(&path).pod_uid.as_deref(), Some(uid));
    }

    /// The layout that read as `unit="containerd.service"`: containerd on
    /// the cgroupfs driver given the kubelet's systemd cgroupsPath.
    #[test]
    fn colon_cgroups_path_under_the_runtime_service() {
        let path = format!(
            "/system.slice/containerd.service/kubepods-burstable-pod{UID_}.slice:cri-containerd:{CTR}"
        );
        assert_eq!(parse(&path), container(Runtime::Containerd, Some(UID)));
        let path = format!("/kubepods-besteffort-pod{UID_}.slice:crio:{CTR}");
        assert_eq!(parse(&path), container(Runtime::Crio, Some(UID)));
    }

    #[test]
    fn crio_monitor_and_runtime_prefixes() {
        let path = format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/crio-conmon-{CTR}.scope");
        assert_eq!(parse(&path), container(Runtime::Crio, Some(UID)));
    }

    #[test]
    fn docker_both_drivers() {
        let expected = container(Runtime::Docker, None);
        assert_eq!(
            parse(&format!("/system.slice/docker-{CTR}.scope")),
            expected
        );
        assert_eq!(parse(&format!("/docker/{CTR}")), expected);
        // The daemon itself is a service.
        assert_eq!(
            parse("/system.slice/docker.service").unit.as_deref(),
            Some("docker.service")
        );
    }

    #[test]
    fn podman_rootful_rootless_and_nested_payload() {
        let expected = container(Runtime::Podman, None);
        assert_eq!(
            parse(&format!("/machine.slice/libpod-{CTR}.scope")),
            expected
        );
        assert_eq!(
            parse(&format!("/machine.slice/libpod-{CTR}.scope/container")),
            expected
        );
        assert_eq!(parse(&format!("/libpod_parent/libpod-{CTR}")), expected);
        let rootless = parse(&format!(
            "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{CTR}.scope"
        ));
        assert_eq!(
            rootless,
            CgroupIdentity {
                user: Some(1000),
                ..expected.clone()
            }
        );
        let conmon = parse(&format!(
            "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-conmon-{CTR}.scope"
        ));
        assert_eq!(conmon.container_id.as_deref(), Some(CTR));
    }

    #[test]
    fn lxc_every_generation() {
        for path in ["/lxc.payload.web1", "/lxc.payload/web1", "/lxc/web1"] {
            let identity = parse(path);
            assert_eq!(identity.lxc_name.as_deref(), Some("web1"), "{path}");
            assert_eq!(identity.runtime, Some(Runtime::Lxc));
        }
        // A service inside a system container is that container's.
        let inside = parse("/lxc.payload.web1/system.slice/nginx.service");
        assert_eq!(inside.lxc_name.as_deref(), Some("web1"));
        assert_eq!(inside.unit.as_deref(), Some("nginx.service"));
        // The monitor is lxc's, and "lxc" deeper down is just a name.
        assert!(!parse("/lxc.monitor.web1").is_workload());
        assert!(!parse("/system.slice/lxc/web1").is_workload());
    }

    #[test]
    fn kind_nodes_nested_in_docker() {
        let inner = format!(
            "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{UID_}.slice/cri-containerd-{CTR}.scope"
        );
        // Seen from inside the node (its own cgroup namespace)...
        assert_eq!(parse(&inner), container(Runtime::Containerd, Some(UID)));
        // ...and from the host, under the node's container.
        let outer = format!("/system.slice/docker-{NODE}.scope");
        assert_eq!(
            parse(&format!("{outer}{inner}")),
            CgroupIdentity {
                outer: Some(outer.clone()),
                ..container(Runtime::Containerd, Some(UID))
            }
        );
        // The node's own services belong to the node container.
        let kubelet = parse(&format!("{outer}/system.slice/containerd.service"));
        assert_eq!(kubelet.container_id.as_deref(), Some(NODE));
        assert_eq!(kubelet.unit.as_deref(), Some("containerd.service"));
    }

    #[test]
    fn host_services_sessions_and_root() {
        let nginx = parse("/system.slice/nginx.service");
        assert_eq!(nginx.unit.as_deref(), Some("nginx.service"));
        assert!(!nginx.is_workload());
        // Scopes are not services: sessions, systemd-run, init.
        for path in [
            "/user.slice/user-1000.slice/session-3.scope",
            "/init.scope",
            "/",
        ] {
            assert_eq!(parse(path), CgroupIdentity::default(), "{path}");
        }
        // A user's own services are still services.
        let user_unit =
            parse("/user.slice/user-1000.slice/user@1000.service/app.slice/syncthing.service");
        assert_eq!(user_unit.unit.as_deref(), Some("syncthing.service"));
        assert_eq!(user_unit.user, Some(1000));
        // Not a pod: "pod" followed by anything but a UID.
        assert!(!parse("/system.slice/podman.service").is_workload());
        assert!(!parse("/podcast").is_workload());
    }
}
