//! Call sites: user stacks the kernel captured at connect, listen and
//! close, symbolized on first sight of each (process, stack) while the
//! process still lives, and remembered after it exits. Per stack, not per
//! event: later events with the same stack cost one hash lookup.

use crate::{
    generations::Generations,
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
    /// Why no function could be named (process gone, /proc unreadable,
    /// stack evicted, no symbols), when that is the case.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unresolved: Option<String>,
}

impl CallSite {
    fn unknown(reason: impl Into<String>, frames: Vec<Frame>) -> Self {
        Self {
            function: "?".to_owned(),
            file: None,
            line: None,
            frames,
            unresolved: Some(reason.into()),
        }
    }
}

/// (process, stack) pairs remembered. Under process churn every new
/// process brings new pairs: the least recently seen half is forgotten when
/// full, so a long-running daemon stays bounded and keeps resolving the
/// call sites of new processes. A forgotten pair's findings show the call
/// site as unknown.
const MAX_STACKS: usize = 16_384;

pub struct CallSites {
    symbolizer: Symbolizer,
    resolved: Generations<StackRef, CallSite>,
}

impl Default for CallSites {
    fn default() -> Self {
        Self {
            symbolizer: Symbolizer::default(),
            resolved: Generations::new(MAX_STACKS),
        }
    }
}

impl CallSites {
    /// Resolves `stack` now if it is new. Cheap for known stacks.
    pub fn observe(&mut self, stack: StackRef, probe: &Probe) {
        if self.resolved.touch(&stack) {
            return;
        }
        let site = match probe.stack(stack.stack_id) {
            None => CallSite::unknown(
                "the stack is no longer in the kernel's stack map",
                Vec::new(),
            ),
            Some(mut ips) => {
                // Frame-pointer unwinding skips the direct caller of a libc
                // wrapper that builds no frame; the word at the stack pointer
                // is its return address when it follows a call instruction.
                let caller = stack.caller_ip;
                if caller != 0
                    && ips.len() > 1
                    && !ips.contains(&caller)
                    && follows_call(stack.pid, caller)
                {
                    ips.insert(1, caller);
                }
                let frames = self.symbolizer.symbolize(stack.pid, &ips);
                match call_site(&frames).cloned() {
                    Some(named) => CallSite {
                        function: named.function,
                        file: named.file,
                        line: named.line,
                        frames,
                        unresolved: None,
                    },
                    None => {
                        let reason = self.symbolizer.last_error(stack.pid).map_or_else(
                            || "no symbols for these addresses".to_owned(),
                            ToOwned::to_owned,
                        );
                        CallSite::unknown(reason, frames)
                    }
                }
            }
        };
        self.resolved.insert(stack, site);
    }

    #[must_use]
    pub fn get(&self, stack: Option<StackRef>) -> Option<&CallSite> {
        self.resolved.peek(&stack?)
    }

    /// Lets the symbolizer drop parsed debug info nobody used lately (tens
    /// of MiB for a large binary); known call sites stay resolved.
    pub fn release_idle(&mut self) {
        self.symbolizer.release_idle();
    }
}

/// True when the bytes just before `addr` in the process are an x86-64
/// call instruction, i.e. `addr` is a return address and not some other
/// word that happened to be on the stack.
fn follows_call(pid: u32, addr: u64) -> bool {
    use std::{fs::File, os::unix::fs::FileExt};
    let Ok(mem) = File::open(format!("/proc/{pid}/mem")) else {
        return false;
    };
    let mut code = [0u8; 7];
    if addr < 7 || mem.read_exact_at(&mut code, addr - 7).is_err() {
        return false;
    }
    is_call_before(&code)
}

/// `code` holds the 7 bytes before a candidate return address.
fn is_call_before(code: &[u8; 7]) -> bool {
    let call_indirect = |modrm: u8| modrm & 0x38 == 0x10;
    code[2] == 0xe8 // call rel32
        || code[1] == 0xff && code[2] == 0x15 // call [rip+disp32]
        || code[5] == 0xff && call_indirect(code[6]) && code[6] >= 0xc0 // call reg
        || code[4] == 0xff && call_indirect(code[5]) && code[5] < 0xc0 // call [reg+disp8] and similar
}

#[cfg(test)]
mod tests {
    use super::is_call_before;

    #[test]
    fn recognises_call_instructions() {
        assert!(
            is_call_before(&[0x90, 0x90, 0xe8, 1, 2, 3, 4]),
            "call rel32"
        );
        assert!(
            is_call_before(&[0x90, 0xff, 0x15, 1, 2, 3, 4]),
            "call [rip+disp32]"
        );
        assert!(
            is_call_before(&[0x90, 0x90, 0x90, 0x90, 0x90, 0xff, 0xd0]),
            "call rax"
        );
        assert!(!is_call_before(&[0; 7]));
        assert!(
            !is_call_before(&[0x48, 0x89, 0xc7, 0x48, 0x89, 0xc6, 0xc3]),
            "plain moves"
        );
    }
}
