//! Which frames are the user's code and which belong to libc, a language
//! runtime or its standard networking and I/O libraries: the one place that
//! knows the runtimes tcptrace names call sites in (C and C++, Rust, Go,
//! Java, Node, Python). Decided from function, module and source file names.

use super::{
    frame::{Frame, JIT_MODULE, UNKNOWN},
    hotspot::INTERPRETED_MODULE,
};

/// What a frame is, for choosing the call site.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameKind {
    /// Nothing is known about it.
    Unknown,
    /// Between the user's code and the system call: libc, syscall
    /// wrappers, a runtime's scheduler, poller and socket layers.
    Plumbing,
    /// A standard library API a user calls (net/http, java.net, node:net):
    /// the call site when no user frame is on the stack, and otherwise how
    /// the user reached the socket.
    Library,
    /// JIT code the runtime could not name: an interpreted Java method.
    Interpreted,
    /// The user's own code.
    User,
}

/// The kind of `frame`.
#[must_use]
pub fn kind(frame: &Frame) -> FrameKind {
    let function = frame.function.as_str();
    if function == UNKNOWN {
        return FrameKind::Unknown;
    }
    let module = frame.module.as_deref().unwrap_or("");
    if module == JIT_MODULE || module == INTERPRETED_MODULE {
        return jit_kind(function);
    }
    if is_libc_module(module) || LIBC_FUNCTIONS.contains(&function) {
        return FrameKind::Plumbing;
    }
    if is_native_runtime(module, function) {
        return FrameKind::Plumbing;
    }
    if is_go(frame) {
        return go_kind(function);
    }
    if is_rust_plumbing(function) {
        return FrameKind::Plumbing;
    }
    FrameKind::User
}

/// What a user must do for call sites in `module`'s runtime, when frames of
/// it are on a stack without any user frame; `None` if nothing.
#[must_use]
pub fn advice(frames: &[Frame]) -> Option<&'static str> {
    let module_name = |frame: &Frame| {
        let module = frame.module.as_deref().unwrap_or("");
        module.rsplit('/').next().unwrap_or(module).to_owned()
    };
    let jit = frames
        .iter()
        .any(|f| f.module.as_deref() == Some(JIT_MODULE));
    frames.iter().find_map(|frame| {
        let name = module_name(frame);
        if name.starts_with("libpython") || name.starts_with("python3") {
            Some("Python names its functions with `python3 -X perf` (3.12+)")
        } else if name == "node" && (!jit || is_v8_interpreter(&frame.function)) {
            Some(NODE_ADVICE)
        } else if name == "libjvm.so" && !jit {
            Some("Java names its methods with -XX:+PreserveFramePointer and a perf map (tcptrace asks the JVM for one unless --no-jvm-perf-map)")
        } else if frame.function == JAVA_INTERPRETER {
            Some("Java methods still interpreted have no name in the JVM's perf map (they are named once JIT-compiled)")
        } else {
            None
        }
    })
}

/// Both flags: `--perf-basic-prof` names compiled functions in the perf
/// map; a function V8 still interprets (a program that connects only a few
/// times never compiles its code) runs inside one shared trampoline of the
/// node binary, and only `--interpreted-frames-native-stack` gives it an
/// entry of its own there.
const NODE_ADVICE: &str = "Node names its functions with `node --perf-basic-prof --interpreted-frames-native-stack` (the second flag names functions V8 has not compiled yet)";

/// V8's interpreter entry, in the node binary: the frame of every
/// interpreted JavaScript function without `--interpreted-frames-native-stack`.
fn is_v8_interpreter(function: &str) -> bool {
    function.starts_with("Builtins_InterpreterEntryTrampoline")
        || function.starts_with("Builtins_InterpreterEnterAtBytecode")
}

// ------------------------------------------------------------ libc

/// File names of glibc and musl libc and dynamic loaders.
const LIBC_MODULES: &[&str] = &[
    "libc.so",
    "libc-",
    "libc.musl",
    "libpthread",
    "ld-linux",
    "ld-musl",
    "ld64.so",
];

fn is_libc_module(module: &str) -> bool {
    let name = module.rsplit('/').next().unwrap_or(module);
    LIBC_MODULES.iter().any(|prefix| name.starts_with(prefix))
}

/// libc functions a statically linked binary carries: syscall wrappers of
/// glibc and musl, and process start-up.
const LIBC_FUNCTIONS: &[&str] = &[
    "syscall",
    "__syscall",
    "__syscall_cp",
    "__syscall_cp_c",
    "__syscall_cp_asm",
    "__syscall_cancel",
    "__syscall_cancel_arch",
    "__internal_syscall_cancel",
    "socket",
    "__socket",
    "bind",
    "__bind",
    "connect",
    "__connect",
    "__libc_connect",
    "listen",
    "__listen",
    "accept",
    "accept4",
    "__libc_accept",
    "__libc_accept4",
    "shutdown",
    "__shutdown",
    "close",
    "__close",
    "__libc_close",
    "__close_nocancel",
    "close_range",
    "__close_range",
    "read",
    "__libc_read",
    "recv",
    "__libc_recv",
    "recvfrom",
    "__libc_recvfrom",
    "_start",
    "__libc_start_main",
    "__libc_start_main_impl",
    "__libc_start_call_main",
];

// ------------------------------------------------------------ native runtimes

/// Libraries of runtimes whose native code sits between the user's
/// (interpreted or JIT-compiled) code and libc.
const RUNTIME_MODULES: &[&str] = &[
    // The JVM and the JDK's native socket code.
    "libjvm.so",
    "libjava.so",
    "libnio.so",
    "libnet.so",
    "libjli.so",
    // libuv, as Node's distributions link it.
    "libuv.so",
    "libnode.so",
    // CPython.
    "libpython",
    "python3",
];

/// Function name prefixes of Node's own binary (node, V8, libuv).
const NODE_FUNCTIONS: &[&str] = &["node::", "v8::", "uv_", "uv__", "Builtins_", "std::"];

fn is_native_runtime(module: &str, function: &str) -> bool {
    let name = module.rsplit('/').next().unwrap_or(module);
    let function = without_return_type(function);
    RUNTIME_MODULES.iter().any(|prefix| name.starts_with(prefix))
        || (name == "node" || name.starts_with("node-") || name.starts_with("nodejs"))
            && NODE_FUNCTIONS.iter().any(|prefix| function.starts_with(prefix))
        // The JVM's entry points, also when linked statically.
        || function.starts_with("JavaCalls::")
        || function.starts_with("Java_")
        || function.starts_with("jni_")
}

/// `void node::TCPWrap::Connect<sockaddr_in>(...)` → `node::TCPWrap::...`:
/// demangled C++ templates carry their return type in front.
fn without_return_type(function: &str) -> &str {
    let first = |c: char| function.find(c).unwrap_or(usize::MAX);
    match function.find(' ') {
        Some(space) if space < first('<') && space < first('(') => &function[space + 1..],
        _ => function,
    }
}

// ------------------------------------------------------------ JIT code

/// What the JVM's perf map calls the template interpreter: an interpreted
/// method, whose name the map cannot give.
const JAVA_INTERPRETER: &str = "Interpreter";

/// A frame named by a perf map: Node (`JS:^name file:line:col`,
/// `LazyCompile:*name file`), Python 3.12+ (`py::name:file`), the JVM
/// (`[return type] package.Class::method(args)` or `package.Class.method`).
fn jit_kind(name: &str) -> FrameKind {
    if name == JAVA_INTERPRETER {
        return FrameKind::Interpreted;
    }
    if let Some(js) = node_js_function(name) {
        return node_kind(js);
    }
    if let Some(python) = name.strip_prefix("py::") {
        let file = python.rsplit_once(':').map_or("", |(_, file)| file);
        return if file.starts_with("/usr/lib/python") || file.contains("/lib/python3.") {
            FrameKind::Library
        } else {
            FrameKind::User
        };
    }
    if is_jit_stub(name) {
        return FrameKind::Plumbing;
    }
    java_kind(name)
}

/// Node's perf map kinds of JavaScript functions, the rest being its own
/// stubs and builtins.
fn node_js_function(name: &str) -> Option<&str> {
    let (kind, rest) = name.split_once(':')?;
    matches!(
        kind,
        "JS" | "LazyCompile" | "Function" | "InterpretedFunction" | "Script"
    )
    .then(|| rest.trim_start_matches(['^', '*', '~', '+', '-']))
}

/// `name file:line:col`: Node's own modules (`node:net`) are its library,
/// `node:internal/...` its plumbing.
fn node_kind(js: &str) -> FrameKind {
    let file = js.rsplit_once(' ').map_or("", |(_, file)| file);
    if file.starts_with("node:internal/") {
        FrameKind::Plumbing
    } else if file.starts_with("node:") {
        FrameKind::Library
    } else {
        FrameKind::User
    }
}

/// Pieces of JIT code that are no one's method.
fn is_jit_stub(name: &str) -> bool {
    [
        "Stub",
        "Builtin:",
        "Handler:",
        "RegExp:",
        "BytecodeHandler:",
        "StubRoutines",
    ]
    .iter()
    .any(|prefix| name.starts_with(prefix))
        || name.contains(" adapter")
        || name.starts_with("i2c")
        || name.starts_with("c2i")
}

/// Java packages of the JDK: its socket layers are plumbing, its public
/// APIs (`java.net.Socket.connect`) the library a user calls.
const JAVA_PLUMBING: &[&str] = &[
    "sun.",
    "jdk.",
    "com.sun.",
    "java.lang.invoke.",
    "java.lang.Thread.",
];
const JAVA_LIBRARY: &[&str] = &["java.", "javax."];

fn java_kind(name: &str) -> FrameKind {
    let method = java_method(name);
    if JAVA_PLUMBING.iter().any(|p| method.starts_with(p)) {
        FrameKind::Plumbing
    } else if JAVA_LIBRARY.iter().any(|p| method.starts_with(p)) {
        FrameKind::Library
    } else {
        FrameKind::User
    }
}

/// `void java.net.Socket.connect(java.net.SocketAddress)` → `java.net.Socket.connect`.
fn java_method(name: &str) -> &str {
    let signature = name.split('(').next().unwrap_or(name);
    signature.rsplit(' ').next().unwrap_or(signature)
}

// ------------------------------------------------------------ Go

/// A Go frame: compiled from a `.go` file, or named like the Go runtime.
fn is_go(frame: &Frame) -> bool {
    frame.file.as_deref().is_some_and(|f| {
        std::path::Path::new(f)
            .extension()
            .is_some_and(|e| e == "go")
    }) || frame.function.starts_with("runtime.")
        || frame.function.starts_with("runtime/")
}

/// Standard library trees between the user's code and the system call
/// (the runtime, syscalls, the poller), and single packages of its socket
/// and I/O layers (`net` but not `net/http`).
const GO_PLUMBING_TREES: &[&str] = &["runtime", "syscall", "internal", "vendor"];
const GO_PLUMBING_PACKAGES: &[&str] = &[
    "net", "os", "io", "bufio", "sync", "context", "time", "reflect", "errors", "fmt",
];

/// `net/http.(*Transport).dial` → package `net/http`.
fn go_package(function: &str) -> &str {
    let slash = function.rfind('/').map_or(0, |i| i + 1);
    let dot = function[slash..]
        .find('.')
        .map_or(function.len(), |i| slash + i);
    &function[..dot]
}

fn go_kind(function: &str) -> FrameKind {
    let package = go_package(function);
    let root = package.split('/').next().unwrap_or(package);
    if root == "main" || root.contains('.') {
        // The program itself, or a module outside the standard library.
        FrameKind::User
    } else if GO_PLUMBING_TREES.contains(&root) || GO_PLUMBING_PACKAGES.contains(&package) {
        FrameKind::Plumbing
    } else {
        FrameKind::Library
    }
}

// ------------------------------------------------------------ Rust

/// Crates whose frames are plumbing between the user's code and the syscall.
const RUST_RUNTIME_CRATES: &[&str] = &["std", "core", "alloc", "tokio", "mio", "socket2"];

fn is_rust_plumbing(function: &str) -> bool {
    match split_qualified(function) {
        None => in_rust_runtime(function),
        Some((self_ty, None)) => in_rust_runtime(without_indirection(self_ty)),
        // `<T as Trait>::f` is the code of T's owner: a user's `Drop` that
        // closes a socket is the call site. Blanket impls over references and
        // pointers, and impls on runtime types, are the runtime's.
        Some((self_ty, Some(trait_path))) => {
            in_rust_runtime(trait_path)
                && (self_ty.starts_with(['&', '*'])
                    || in_rust_runtime(without_indirection(self_ty)))
        }
    }
}

/// `<Type as Trait>::f` → (Type, Some(Trait...)); `<Type>::f` → (Type, None).
fn split_qualified(function: &str) -> Option<(&str, Option<&str>)> {
    let inner = function.strip_prefix('<')?;
    let mut depth = 0_usize;
    for (i, c) in inner.char_indices() {
        match c {
            '<' => depth += 1,
            '>' if inner[..i].ends_with('-') => {} // `fn() -> T`
            '>' if depth == 0 => return Some((&inner[..i], None)),
            '>' => depth -= 1,
            ' ' if depth == 0 && inner[i..].starts_with(" as ") => {
                return Some((&inner[..i], Some(&inner[i + " as ".len()..])));
            }
            _ => {}
        }
    }
    None
}

/// `&mut [std::net::TcpStream]` → `std::net::TcpStream]`: enough to see the crate.
fn without_indirection(mut ty: &str) -> &str {
    loop {
        let rest = ty
            .trim_start_matches(['&', '*', '[', '(', ' '])
            .trim_start_matches("mut ")
            .trim_start_matches("const ")
            .trim_start_matches("dyn ");
        if rest.len() == ty.len() {
            return ty;
        }
        ty = rest;
    }
}

fn in_rust_runtime(path: &str) -> bool {
    RUST_RUNTIME_CRATES.iter().any(|krate| {
        path.strip_prefix(krate)
            .is_some_and(|rest| rest.starts_with("::"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(function: &str, module: &str, file: Option<&str>) -> Frame {
        Frame {
            addr: 0,
            function: function.to_owned(),
            module: Some(module.to_owned()),
            file: file.map(ToOwned::to_owned),
            line: None,
        }
    }

    #[test]
    fn go_packages() {
        let go = |f: &str| kind(&frame(f, "/app", Some("/src/x.go")));
        assert_eq!(go("runtime/internal/syscall.Syscall6"), FrameKind::Plumbing);
        assert_eq!(go("syscall.Connect"), FrameKind::Plumbing);
        assert_eq!(go("internal/poll.(*FD).destroy"), FrameKind::Plumbing);
        assert_eq!(go("net.(*netFD).connect"), FrameKind::Plumbing);
        assert_eq!(go("net.Dial"), FrameKind::Plumbing);
        assert_eq!(go("net/http.(*Transport).dial"), FrameKind::Library);
        assert_eq!(go("crypto/tls.(*Conn).Close"), FrameKind::Library);
        assert_eq!(go("main.dialPerRequest"), FrameKind::User);
        assert_eq!(go("main.dialPerRequest.func1"), FrameKind::User);
        assert_eq!(
            go("google.golang.org/grpc.(*ClientConn).Close"),
            FrameKind::User
        );
        assert_eq!(go_package("net/http.(*persistConn).readLoop"), "net/http");
    }

    /// A Node stack without user frames: the advice names both flags,
    /// also when some frames are compiled (named in the perf map) and the
    /// user's are still interpreted.
    #[test]
    fn node_advice_covers_interpreted_functions() {
        let node = "/usr/bin/node";
        let native = |f: &str| frame(f, node, None);
        let interpreted = [
            frame(
                "__libc_connect",
                "/usr/lib/x86_64-linux-gnu/libc.so.6",
                None,
            ),
            native("uv__tcp_connect"),
            native("Builtins_InterpreterEntryTrampoline"),
            native("Builtins_InterpreterEntryTrampoline"),
        ];
        assert_eq!(advice(&interpreted), Some(NODE_ADVICE));
        let mixed = [
            frame(
                "__libc_connect",
                "/usr/lib/x86_64-linux-gnu/libc.so.6",
                None,
            ),
            native("uv__tcp_connect"),
            frame("JS:^internalConnect node:net:1038:25", JIT_MODULE, None),
            native("Builtins_InterpreterEntryTrampoline"),
        ];
        assert_eq!(advice(&mixed), Some(NODE_ADVICE));
        // Compiled throughout: nothing a flag would add.
        let compiled = [
            native("uv__tcp_connect"),
            frame("JS:^internalConnect node:net:1038:25", JIT_MODULE, None),
        ];
        assert_eq!(advice(&compiled), None);
        assert!(NODE_ADVICE.contains("--interpreted-frames-native-stack"));
    }

    #[test]
    fn jit_frames() {
        let jit = |f: &str| kind(&frame(f, JIT_MODULE, None));
        assert_eq!(jit("JS:^nodeConnect /app/client.js:12:3"), FrameKind::User);
        assert_eq!(
            jit("LazyCompile:*connect node:net:1038:25"),
            FrameKind::Library
        );
        assert_eq!(
            jit("JS:^afterConnect node:internal/stream_base_commons:1:1"),
            FrameKind::Plumbing
        );
        assert_eq!(
            jit("Builtin:ArgumentsAdaptorTrampoline"),
            FrameKind::Plumbing
        );
        assert_eq!(
            jit("void Client.connectPerRequest(java.lang.String, int)"),
            FrameKind::User
        );
        assert_eq!(
            jit("void java.net.Socket.connect(java.net.SocketAddress)"),
            FrameKind::Library
        );
        assert_eq!(
            jit("int sun.nio.ch.Net.connect0(boolean)"),
            FrameKind::Plumbing
        );
        assert_eq!(jit("Interpreter"), FrameKind::Interpreted);
        assert_eq!(jit("py::handle:/srv/app.py"), FrameKind::User);
        assert_eq!(
            jit("py::create_connection:/usr/lib/python3.12/socket.py"),
            FrameKind::Library
        );
    }

    #[test]
    fn native_runtimes() {
        let native = |f: &str, m: &str| kind(&frame(f, m, None));
        assert_eq!(
            native("Java_sun_nio_ch_Net_connect0", "/usr/lib/jvm/lib/libnio.so"),
            FrameKind::Plumbing
        );
        assert_eq!(
            native(
                "JavaCalls::call_helper(JavaValue*)",
                "/usr/lib/jvm/lib/server/libjvm.so"
            ),
            FrameKind::Plumbing
        );
        assert_eq!(
            native("uv__close_nocancel", "/usr/bin/node"),
            FrameKind::Plumbing
        );
        assert_eq!(
            native(
                "node::TCPWrap::Connect(v8::FunctionCallbackInfo<v8::Value> const&)",
                "/usr/bin/node"
            ),
            FrameKind::Plumbing
        );
        assert_eq!(
            native(
                "void node::TCPWrap::Connect<sockaddr_in>(v8::FunctionCallbackInfo<v8::Value> const&)",
                "/usr/bin/node"
            ),
            FrameKind::Plumbing
        );
        assert_eq!(
            native(
                "sock_call",
                "/usr/lib/x86_64-linux-gnu/libpython3.11.so.1.0"
            ),
            FrameKind::Plumbing
        );
        assert_eq!(
            native("__GI___close", "/usr/lib/x86_64-linux-gnu/libc.so.6"),
            FrameKind::Plumbing
        );
        assert_eq!(
            native("ngx_close_connection", "/usr/sbin/nginx"),
            FrameKind::User
        );
        assert_eq!(
            native(
                "curl_multi_perform",
                "/usr/lib/x86_64-linux-gnu/libcurl.so.4"
            ),
            FrameKind::User
        );
    }
}
