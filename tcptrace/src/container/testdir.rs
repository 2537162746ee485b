//! Test support: a temporary directory built like a node's filesystem, and
//! the ids the fixtures under `fixtures/` use.

use std::{
    fs,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
};

/// The container of the fixtures.
pub const CTR: &str = "2752ea5db34c1dc718967086526c49d5f55793678e2002db3f7a3e45a4a97b2a";
/// Its pod's sandbox (pause) container.
pub const SANDBOX: &str = "b7ad567477c83756aab9a542b2be04f77dbae25115d85f22070d74d8cc4779dc";
/// Another container (the Podman registry, the CRI-O volatile one).
pub const OTHER: &str = "d548c5b83fa61d8e3bd86ad42a7ffea9b7c86e3f9d8095c1577d3e1270bb9420";
pub const VOLATILE: &str = "c64064614423cb790e88b3e5492ff5ccf673b25ae823089f7a60c65cda24d809";
/// A kind node's container.
pub const NODE: &str = "23e60658111a240b11962ea4c36d8545c06271103792d48d4fe82c2f9c3bc3ba";
pub const UID: &str = "1b2c3d4e-5f60-4182-93a4-b5c6d7e8f901";
/// The same UID as the systemd driver writes it.
pub const UID_: &str = "1b2c3d4e_5f60_4182_93a4_b5c6d7e8f901";

/// A directory removed when dropped (no tempfile crate in this package).
pub struct TestDir(PathBuf);

impl TestDir {
    pub fn new(name: &str) -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "tcptrace-container-{name}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes a file, making its directories (`relative` is taken as
    /// relative even with a leading `/`).
    pub fn file(&self, relative: &str, contents: &str) -> PathBuf {
        let path = self.0.join(relative.trim_start_matches('/'));
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, contents).unwrap();
        path
    }

    pub fn dir(&self, relative: &str) -> PathBuf {
        let path = self.0.join(relative.trim_start_matches('/'));
        fs::create_dir_all(&path).unwrap();
        path
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}
