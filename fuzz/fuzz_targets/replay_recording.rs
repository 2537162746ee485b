//! Arbitrary bytes as a recording (`tcptrace report FILE`): whatever the
//! file holds, the replay never panics, and every line it writes is JSON.
//! Seeded with a real recording (fuzz/corpus/replay_recording).

#![no_main]

use std::{cell::RefCell, io::Write, path::PathBuf, rc::Rc, sync::OnceLock};

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tcptrace::{
    output::{BufferedLines, JsonLines},
    recording::{replay, ReplayOptions},
};

/// Where each input is written: replay reads a file.
fn scratch() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        std::env::temp_dir().join(format!("tcptrace-fuzz-{}.jsonl", std::process::id()))
    })
}

/// The JSON sink's output, kept after the sink is dropped.
#[derive(Clone, Default)]
struct Shared(Rc<RefCell<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    std::fs::write(scratch(), data).expect("write the scratch recording");
    let out = Shared::default();
    let mut sink = JsonLines::new(BufferedLines::new(out.clone()));
    // Errors (not a recording, a newer format) are answers, not failures.
    let _ = replay(scratch(), &ReplayOptions::default(), &mut sink);
    drop(sink);
    let written = out.0.borrow();
    for line in String::from_utf8_lossy(&written).lines() {
        assert!(
            serde_json::from_str::<Value>(line).is_ok(),
            "a line that is not JSON: {line:?}"
        );
    }
});
