//! SIGHUP: the configuration read again and what can change applied
//! without re-attaching. Filters, logging, peers shown, the idle threshold,
//! the refresh interval, the JVM switch and the web configuration (read
//! again even when its path is unchanged) are userspace state; the
//! listen address, the kernel's maps and ring, the stack settings, the
//! event mode and container labels are fixed at start (changing them
//! needs a restart, which the log says).

use super::config::DaemonConfig;

/// The settings that differ between two configurations, by their keys in
/// `tcptrace.toml`: those applied at once, and those that need a restart.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub applied: Vec<&'static str>,
    pub need_restart: Vec<&'static str>,
}

impl Changes {
    #[must_use]
    pub fn between(old: &DaemonConfig, new: &DaemonConfig) -> Self {
        let mut changes = Self::default();
        let mut live = |key, changed: bool| {
            if changed {
                changes.applied.push(key);
            }
        };
        live("comm", old.comm != new.comm);
        live("port", old.port != new.port);
        live("namespace", old.namespace != new.namespace);
        live("pod", old.pod != new.pod);
        live("container", old.container != new.container);
        live("cgroup", old.cgroup != new.cgroup);
        live("log-findings", old.log_findings != new.log_findings);
        live("top-peers", old.top_peers != new.top_peers);
        live("idle-threshold", old.idle_threshold != new.idle_threshold);
        live("refresh", old.refresh != new.refresh);
        live("jvm-perf-map", old.jvm_perf_map != new.jvm_perf_map);
        live("web-config", old.web_config != new.web_config);
        let mut fixed = |key, changed: bool| {
            if changed {
                changes.need_restart.push(key);
            }
        };
        fixed("listen", old.listen != new.listen);
        fixed(
            "ring-buffer-mib",
            old.ring_buffer_mib != new.ring_buffer_mib,
        );
        fixed(
            "socket-map-entries",
            old.socket_map_entries != new.socket_map_entries,
        );
        fixed("stacks", old.stacks != new.stacks);
        fixed("stack-interval", old.stack_interval != new.stack_interval);
        fixed("every-event", old.every_event != new.every_event);
        fixed("container-ids", old.container_ids != new.container_ids);
        fixed("node-root", old.node_root != new.node_root);
        changes
    }

    /// `old` with the changes that apply at once taken from `new`: the
    /// configuration in force after the reload.
    #[must_use]
    pub fn in_force(old: &DaemonConfig, new: &DaemonConfig) -> DaemonConfig {
        DaemonConfig {
            comm: new.comm.clone(),
            port: new.port.clone(),
            namespace: new.namespace.clone(),
            pod: new.pod.clone(),
            container: new.container.clone(),
            cgroup: new.cgroup.clone(),
            log_findings: new.log_findings,
            top_peers: new.top_peers,
            idle_threshold: new.idle_threshold,
            refresh: new.refresh,
            jvm_perf_map: new.jvm_perf_map,
            web_config: new.web_config.clone(),
            warnings: new.warnings.clone(),
            ..old.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::daemon::config::{FileConfig, Overrides};

    fn config(toml: &str) -> DaemonConfig {
        DaemonConfig::merge(FileConfig::parse(toml).unwrap(), Overrides::default()).unwrap()
    }

    #[test]
    fn live_settings_apply_and_the_rest_waits_for_a_restart() {
        let old = config("comm = [\"nginx\"]\nlisten = \"127.0.0.1:9640\"\n");
        let new = config(
            "comm = [\"curl\"]\nlisten = \"127.0.0.1:9641\"\nrefresh = \"5s\"\nstacks = false\n",
        );
        let changes = Changes::between(&old, &new);
        assert_eq!(changes.applied, ["comm", "refresh"]);
        assert_eq!(changes.need_restart, ["listen", "stacks"]);
        let now = Changes::in_force(&old, &new);
        assert_eq!(now.comm, ["curl"]);
        assert_eq!(now.refresh, Duration::from_secs(5));
        assert_eq!(now.listen, old.listen, "still listening where it was");
        assert!(now.stacks, "the kernel still takes stacks");
        assert_eq!(Changes::between(&now, &now), Changes::default());
    }
}
