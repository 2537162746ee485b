//! Podman's container names, from the index containers/storage keeps of
//! its containers: `<graph root>/overlay-containers/containers.json` and,
//! for `--rm` containers, `volatile-containers.json` (entries
//! `{"id": …, "names": [...]}`). Rootful Podman's graph root is
//! `/var/lib/containers/storage`; a rootless user's is under their home,
//! found in the node's passwd (the cgroup path gives the uid).

use std::path::{Path, PathBuf};

use super::files::read_state;

#[derive(serde::Deserialize)]
struct Entry {
    id: String,
    #[serde(default)]
    names: Vec<String>,
}

const INDEXES: [&str; 2] = ["containers.json", "volatile-containers.json"];

/// The first name of container `id` in any of the storage directories
/// (each an `overlay-containers` directory); `None` when no index lists it.
#[must_use]
pub fn name(storage_dirs: &[PathBuf], id: &str) -> Option<String> {
    storage_dirs
        .iter()
        .flat_map(|dir| INDEXES.iter().map(move |f| dir.join(f)))
        .find_map(|index| {
            let text = read_state(&index)?;
            let entries: Vec<Entry> = serde_json::from_slice(&text).ok()?;
            entries
                .into_iter()
                .find(|e| e.id == id)
                .map(|e| e.names.into_iter().next().unwrap_or_default())
        })
}

/// A user's home directory from a passwd file (`name:x:uid:gid:gecos:
/// home:shell`), as an absolute path.
#[must_use]
pub fn home_of(passwd: &Path, uid: u32) -> Option<PathBuf> {
    let text = String::from_utf8(read_state(passwd)?).ok()?;
    let uid = uid.to_string();
    text.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.len() >= 7 && fields[2] == uid).then(|| PathBuf::from(fields[5]))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::testdir::{TestDir, CTR, OTHER, VOLATILE};

    #[test]
    fn names_from_both_indexes() {
        let dir = TestDir::new("podman");
        let storage = dir
            .path()
            .join("var/lib/containers/storage/overlay-containers");
        dir.file(
            "var/lib/containers/storage/overlay-containers/containers.json",
            include_str!("fixtures/podman-containers.json"),
        );
        dir.file(
            "var/lib/containers/storage/overlay-containers/volatile-containers.json",
            include_str!("fixtures/podman-volatile-containers.json"),
        );
        let dirs = [dir.path().join("missing"), storage];
        assert_eq!(name(&dirs, CTR).as_deref(), Some("grafana"));
        assert_eq!(name(&dirs, OTHER).as_deref(), Some("registry"));
        assert_eq!(name(&dirs, VOLATILE).as_deref(), Some("scratchpad"));
        assert_eq!(name(&dirs, &"0".repeat(64)), None);
    }

    #[test]
    fn rootless_home_from_passwd() {
        let dir = TestDir::new("passwd");
        let passwd = dir.file(
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/bash\n\
             alice:x:1000:1000:Alice,,,:/home/alice:/bin/bash\n\
             broken:x:1001\n",
        );
        assert_eq!(home_of(&passwd, 1000), Some(PathBuf::from("/home/alice")));
        assert_eq!(home_of(&passwd, 1001), None);
        assert_eq!(home_of(&passwd, 4242), None);
    }
}
