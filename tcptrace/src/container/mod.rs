//! Container attribution: cgroup id → cgroup path → what runs there, by
//! name (Kubernetes namespace, pod and container, or a Docker, Podman or
//! lxc container's name, or a systemd service).
//!
//! The kernel programs record `bpf_get_current_cgroup_id()` at each
//! socket's birth: the id of the task's cgroup-v2 directory. The path of
//! that directory (`lookup`) says which runtime made the container and its
//! id (`layout`); the runtime's own state on the node says what it is
//! called (`node`: containerd's and CRI-O's OCI bundles, Docker's and
//! Podman's indexes, the kubelet's log directories). Nothing asks the API
//! server. `Containers` caches the result per id, so the work is done once
//! per cgroup, never per event.
//!
//! Files, one concept each: `layout` (paths of every runtime and driver),
//! `proc_cgroup` (`/proc/PID/cgroup`, v1 and v2), `lookup` (id → path),
//! `node`, `oci`, `docker`, `podman`, `kubelet` (names), `names`,
//! `files` (reading state others may control), `labels`, `cache`,
//! `config`, `containers` (the cache the daemon asks).

mod cache;
mod config;
mod containers;
mod docker;
mod files;
mod kubelet;
mod labels;
pub mod layout;
pub mod lookup;
mod names;
pub mod node;
mod oci;
mod podman;
pub mod proc_cgroup;
#[cfg(test)]
mod testdir;
#[cfg(test)]
mod tests;

pub use self::{
    config::ContainerConfig,
    containers::{Containers, V1_KEY},
    labels::ContainerLabels,
    layout::{CgroupIdentity, Runtime},
    names::Names,
    node::NodeState,
};
