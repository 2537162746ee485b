//! Frames: what a symbolized address is reported as (function, module,
//! source location), built from blazesym's answers. An address inside
//! inlined calls is several frames, innermost first.

use std::rc::Rc;

use blazesym::symbolize::{CodeInfo, Symbolized};

/// The function name of a frame nothing is known about.
pub const UNKNOWN: &str = "??";

/// The module of frames named by a perf map (JIT code in anonymous memory).
pub const JIT_MODULE: &str = "[jit]";

/// One symbolized frame.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Frame {
    /// The captured address (an interpreted Java frame: its `Method*`).
    pub addr: u64,
    /// Demangled, without the Rust hash suffix; "??" when unknown.
    pub function: String,
    /// Path of the ELF (e.g. /usr/lib/x86_64-linux-gnu/libc.so.6).
    pub module: Option<String>,
    /// Source file, when debug info exists.
    pub file: Option<String>,
    pub line: Option<u32>,
}

impl Frame {
    pub(super) fn unknown(addr: u64) -> Self {
        Self {
            addr,
            function: UNKNOWN.to_owned(),
            module: None,
            file: None,
            line: None,
        }
    }

    /// Code a JIT runtime named in its perf map.
    pub(super) fn jitted(addr: u64, name: &str) -> Self {
        Self {
            addr,
            function: name.to_owned(),
            module: Some(JIT_MODULE.to_owned()),
            file: None,
            line: None,
        }
    }

    fn known(addr: u64, function: &str, module: Option<&str>, code: Option<&CodeInfo>) -> Self {
        Self {
            addr,
            function: function.to_owned(),
            module: module.map(ToOwned::to_owned),
            file: code.map(|code| code.to_path().to_string_lossy().into_owned()),
            line: code.and_then(|code| code.line),
        }
    }
}

/// Frames of one lookup address, innermost first; shared between the
/// per-process caches and the per-file one, so their `addr` is 0 until
/// [`at_addr`] sets it on the way out.
pub(super) type Frames = Rc<[Frame]>;

/// Copies of `frames` for the captured address `addr`.
pub(super) fn at_addr(frames: &[Frame], addr: u64) -> impl Iterator<Item = Frame> + '_ {
    frames.iter().map(move |frame| Frame {
        addr,
        ..frame.clone()
    })
}

/// The frames of one symbolized address, innermost first. `module`
/// overrides blazesym's, which is the path it was given.
pub(super) fn frames_of(symbolized: &Symbolized, module: Option<&str>) -> Frames {
    let Symbolized::Sym(sym) = symbolized else {
        return [Frame::unknown(0)].into();
    };
    let theirs = sym
        .module
        .as_ref()
        .map(|module| module.to_string_lossy().into_owned());
    let module = module.or(theirs.as_deref());
    // blazesym lists inlined calls outermost first, each with the location
    // inside it (the next call, or `addr` for the last); `sym.code_info` is
    // the location in the function they were inlined into.
    let mut frames: Vec<Frame> = sym
        .inlined
        .iter()
        .rev()
        .map(|inlined| Frame::known(0, &inlined.name, module, inlined.code_info.as_ref()))
        .collect();
    frames.push(Frame::known(0, &sym.name, module, sym.code_info.as_deref()));
    frames.into()
}
