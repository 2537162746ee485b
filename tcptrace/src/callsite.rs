//! Call sites: user stacks the kernel captured at connect, listen and
//! close, symbolized on first sight of each (process, stack) while the
//! process still lives, and remembered after it exits. Per stack, not per
//! event: later events with the same stack cost one hash lookup.

use std::collections::HashMap;

use crate::{
    probe::Probe,
    symbolize::{call_site, Frame, Symbolizer},
    table::StackRef,
};

/// Resolved frames of one stack, innermost first, and the frame that names
/// the call site (the first outside libc and the language runtime).
#[derive(Clone, Debug, serde::Serialize)]
pub struct CallSite {
    pub function: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    pub frames: Vec<Frame>,
}

/// Distinct (process, stack) pairs remembered; beyond it new stacks are not
/// symbolized (counted in `dropped`) so a long-running daemon stays bounded.
const MAX_STACKS: usize = 65_536;

#[derive(Default)]
pub struct CallSites {
    symbolizer: Symbolizer,
    resolved: HashMap<StackRef, Option<CallSite>>,
    /// Stacks not resolved because `MAX_STACKS` was reached.
    pub dropped: u64,
}

impl CallSites {
    /// Resolves `stack` now if it is new. Cheap for known stacks.
    pub fn observe(&mut self, stack: StackRef, probe: &Probe) {
        if self.resolved.contains_key(&stack) {
            return;
        }
        if self.resolved.len() >= MAX_STACKS {
            self.dropped += 1;
            return;
        }
        let site = probe.stack(stack.stack_id).map(|ips| {
            let frames = self.symbolizer.symbolize(stack.pid, &ips);
            let named = call_site(&frames).cloned();
            CallSite {
                function: named
                    .as_ref()
                    .map_or_else(|| "??".to_owned(), |f| f.function.clone()),
                file: named.as_ref().and_then(|f| f.file.clone()),
                line: named.as_ref().and_then(|f| f.line),
                frames,
            }
        });
        self.resolved.insert(stack, site);
    }

    #[must_use]
    pub fn get(&self, stack: Option<StackRef>) -> Option<&CallSite> {
        self.resolved.get(&stack?)?.as_ref()
    }

    /// A process exited or its pid was reused: its stacks' symbols go, the
    /// resolved call sites stay.
    pub fn forget_process(&mut self, pid: u32) {
        self.symbolizer.forget(pid);
    }
}
