//! The call site of a stack: the first frame (innermost first) that is the
//! user's own code, past libc, the language runtime and its standard
//! networking and I/O libraries (`runtimes` says which frame is what).

use super::{
    frame::Frame,
    runtimes::{kind, FrameKind},
};

/// The frame that names the call site, and the frame just inside it when
/// that tells how the user reached the socket (the API it called, e.g.
/// `net.Dial`, `java.net.Socket.connect`, `curl_easy_perform`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chosen<'a> {
    pub site: &'a Frame,
    pub via: Option<&'a Frame>,
    /// Whether `site` is the user's code, rather than the library API or
    /// runtime frame that is the best the stack offers.
    pub user: bool,
}

/// The user's frame; with none on the stack (a library dials on a thread
/// of its own, as Go's net/http does), the outermost standard-library API
/// frame before the first unknown one; else the first known frame.
#[must_use]
pub fn choose(frames: &[Frame]) -> Option<Chosen<'_>> {
    let kinds: Vec<FrameKind> = frames.iter().map(kind).collect();
    if let Some(user) = kinds.iter().position(|&k| k == FrameKind::User) {
        let via = frames[..user]
            .iter()
            .zip(&kinds)
            .rev()
            .find(|(_, &k)| k != FrameKind::Unknown)
            .filter(|(_, &k)| matches!(k, FrameKind::Library | FrameKind::Plumbing))
            .map(|(frame, _)| frame);
        return Some(Chosen {
            site: &frames[user],
            via,
            user: true,
        });
    }
    let fallback =
        library_entry(&kinds).or_else(|| kinds.iter().position(|&k| k != FrameKind::Unknown))?;
    Some(Chosen {
        site: &frames[fallback],
        via: None,
        user: false,
    })
}

/// The frame that best stands for the caller when no user frame is on the
/// stack: where the named frames give way to code nobody could name (an
/// interpreted Java method calling `ServerSocket.accept`), the last of
/// them, the API the caller called; otherwise the first library frame (a
/// library working on a thread of its own, as Go's net/http dials).
fn library_entry(kinds: &[FrameKind]) -> Option<usize> {
    if let Some(unnamed) = kinds.iter().position(|&k| k == FrameKind::Interpreted) {
        if let Some(last) = kinds[..unnamed]
            .iter()
            .rposition(|&k| matches!(k, FrameKind::Library | FrameKind::Plumbing))
        {
            return Some(last);
        }
    }
    let first = kinds.iter().position(|&k| k == FrameKind::Library)?;
    let run_end = kinds[first..]
        .iter()
        .position(|&k| k != FrameKind::Library)
        .map_or(kinds.len(), |n| first + n);
    let unnamed_caller = matches!(
        kinds.get(run_end),
        Some(FrameKind::Interpreted | FrameKind::Unknown)
    );
    Some(if unnamed_caller { run_end - 1 } else { first })
}

/// The frame that names the call site (see [`choose`]).
#[must_use]
pub fn call_site(frames: &[Frame]) -> Option<&Frame> {
    choose(frames).map(|chosen| chosen.site)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::symbolize::frame::JIT_MODULE;

    fn frame(function: &str, module: &str) -> Frame {
        Frame {
            addr: 0,
            function: function.to_owned(),
            module: Some(module.to_owned()),
            file: None,
            line: None,
        }
    }

    fn go(function: &str) -> Frame {
        Frame {
            file: Some("/usr/lib/go-1.19/src/x.go".to_owned()),
            ..frame(function, "/app")
        }
    }

    #[test]
    fn call_site_skips_plumbing() {
        let app = "/usr/bin/app";
        let frames = [
            frame("__connect", "/usr/lib/x86_64-linux-gnu/libc.so.6"),
            frame("??", app),
            frame("std::sys::net::connect_with", app),
            frame("<std::net::tcp::TcpStream>::connect::<&str>", app),
            frame("<&std::net::tcp::TcpStream as std::io::Write>::write", app),
            frame(
                "<&mut app::Dial as core::future::future::Future>::poll",
                app,
            ),
            frame("core::ops::function::FnOnce::call_once", app),
            frame("alloc::boxed::Box::new", app),
            frame(
                "tokio::net::tcp::stream::TcpStream::connect::{closure#0}",
                app,
            ),
            frame("<mio::net::tcp::stream::TcpStream>::connect", app),
            frame("__syscall_cp_asm", app),
            frame("app::dial", app),
            frame("app::main", app),
        ];
        let chosen = choose(&frames).unwrap();
        assert_eq!(chosen.site.function, "app::dial");
        assert_eq!(chosen.via.unwrap().function, "__syscall_cp_asm");

        // A user impl of a std trait is user code.
        let drop = frame("<app::Conn as core::ops::drop::Drop>::drop", app);
        assert_eq!(call_site(&[frames[0].clone(), drop.clone()]), Some(&drop));

        // All plumbing: the first known function.
        assert_eq!(call_site(&frames[..4]).unwrap().function, "__connect");
        assert_eq!(call_site(&[]), None);
    }

    /// Go's net.Dial per request, as unwound from a Go 1.19 binary.
    #[test]
    fn go_dial_names_the_users_function_via_net() {
        let frames = [
            go("runtime/internal/syscall.Syscall6"),
            go("syscall.RawSyscall6"),
            go("syscall.connect"),
            go("net.(*netFD).connect"),
            go("net.(*sysDialer).dialSingle"),
            go("net.(*Dialer).DialContext"),
            go("net.Dial"),
            go("main.dialPerRequest"),
            go("main.main"),
            go("runtime.main"),
        ];
        let chosen = choose(&frames).unwrap();
        assert_eq!(chosen.site.function, "main.dialPerRequest");
        assert_eq!(chosen.via.unwrap().function, "net.Dial");
        assert!(chosen.user);
    }

    /// net/http dials on a goroutine of its own: no user frame, the library
    /// frame that dialled is the answer.
    #[test]
    fn go_http_transport_dial_names_the_library() {
        let frames = [
            go("runtime/internal/syscall.Syscall6"),
            go("syscall.connect"),
            go("net.(*Dialer).DialContext"),
            go("net/http.(*Transport).dial"),
            go("net/http.(*Transport).dialConn"),
            go("net/http.(*Transport).dialConnFor"),
            go("runtime.goexit"),
        ];
        let chosen = choose(&frames).unwrap();
        assert_eq!(chosen.site.function, "net/http.(*Transport).dial");
        assert!(!chosen.user);
    }

    /// Java with -XX:+PreserveFramePointer and the JVM's perf map.
    #[test]
    fn java_names_the_users_method() {
        let jvm = "/usr/lib/jvm/java-17-openjdk-amd64/lib/server/libjvm.so";
        let frames = [
            frame("__libc_connect", "/usr/lib/x86_64-linux-gnu/libc.so.6"),
            frame("Java_sun_nio_ch_Net_connect0", "/usr/lib/jvm/lib/libnio.so"),
            frame("int sun.nio.ch.Net.connect0(boolean, java.io.FileDescriptor, java.net.InetAddress, int)", JIT_MODULE),
            frame("void sun.nio.ch.NioSocketImpl.connect(java.net.SocketAddress, int)", JIT_MODULE),
            frame("void java.net.Socket.connect(java.net.SocketAddress, int)", JIT_MODULE),
            frame("void Client.connectPerRequest(java.lang.String, int)", JIT_MODULE),
            frame("JavaCalls::call_helper(JavaValue*, methodHandle const&, JavaCallArguments*, JavaThread*)", jvm),
        ];
        let chosen = choose(&frames).unwrap();
        assert!(chosen.site.function.contains("Client.connectPerRequest"));
        assert!(chosen
            .via
            .unwrap()
            .function
            .contains("java.net.Socket.connect"));
    }

    /// An interpreted Java caller: the JDK API it called stands for it.
    #[test]
    fn interpreted_java_caller_is_named_by_the_api_it_called() {
        let frames = [
            frame("__libc_accept", "/usr/lib/x86_64-linux-gnu/libc.so.6"),
            frame("Java_sun_nio_ch_Net_accept", "/usr/lib/jvm/lib/libnio.so"),
            frame(
                "void sun.nio.ch.NioSocketImpl.accept(java.net.SocketImpl)",
                JIT_MODULE,
            ),
            frame(
                "void java.net.ServerSocket.implAccept(java.net.SocketImpl)",
                JIT_MODULE,
            ),
            frame("java.net.Socket java.net.ServerSocket.accept()", JIT_MODULE),
            frame("Interpreter", JIT_MODULE),
        ];
        let chosen = choose(&frames).unwrap();
        assert_eq!(
            chosen.site.function,
            "java.net.Socket java.net.ServerSocket.accept()"
        );
        assert!(!chosen.user);
    }

    /// Node with --perf-basic-prof: the close is the user's; the connect
    /// runs on the next tick, where only node:net's frames are.
    #[test]
    fn node_names_js_functions() {
        let node = "/usr/bin/node";
        let close = [
            frame("syscall", "/usr/lib/x86_64-linux-gnu/libc.so.6"),
            frame("uv__close_nocancel", node),
            frame("uv_close", node),
            frame(
                "node::HandleWrap::Close(v8::FunctionCallbackInfo<v8::Value> const&)",
                node,
            ),
            frame("Builtins_CEntry_Return1_ArgvOnStack_BuiltinExit", node),
            frame("JS:^closeSocketHandle node:net:339:27", JIT_MODULE),
            frame(
                "JS:^destroy node:internal/streams/destroy:48:17",
                JIT_MODULE,
            ),
            frame("JS:^nodeCloseAfterReply /app/client.js:17:29", JIT_MODULE),
        ];
        assert!(call_site(&close)
            .unwrap()
            .function
            .contains("nodeCloseAfterReply"));
        let connect = [
            frame("__libc_connect", "/usr/lib/x86_64-linux-gnu/libc.so.6"),
            frame(
                "node::TCPWrap::Connect(v8::FunctionCallbackInfo<v8::Value> const&)",
                node,
            ),
            frame("JS:^internalConnect node:net:1038:25", JIT_MODULE),
            frame(
                "JS:^processTicksAndRejections node:internal/process/task_queues:67:35",
                JIT_MODULE,
            ),
        ];
        assert!(call_site(&connect)
            .unwrap()
            .function
            .contains("internalConnect"));
    }
}
