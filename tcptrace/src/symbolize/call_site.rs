//! The call site of a stack: the first frame that is the user's own code,
//! past libc, the dynamic loader, syscall wrappers and the language
//! runtimes (the Rust standard library, tokio, mio) that every socket call
//! goes through. Decided from function and module names alone.

use super::frame::{Frame, UNKNOWN};

/// The frame that names the call site: the first frame (innermost first)
/// with a known function outside libc/ld.so, the Rust standard library and
/// runtimes, and libc syscall wrappers (which statically linked binaries
/// carry in their own module). Falls back to the first frame with a known
/// function.
#[must_use]
pub fn call_site(frames: &[Frame]) -> Option<&Frame> {
    let known = || frames.iter().filter(|frame| frame.function != UNKNOWN);
    known()
        .find(|frame| !is_libc_module(frame.module.as_deref()) && !is_plumbing_fn(&frame.function))
        .or_else(|| known().next())
}

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

fn is_libc_module(module: Option<&str>) -> bool {
    let Some(module) = module else { return false };
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
    "_start",
    "__libc_start_main",
    "__libc_start_main_impl",
    "__libc_start_call_main",
];

/// Crates whose frames are plumbing between the user's code and the syscall.
const RUNTIME_CRATES: &[&str] = &["std", "core", "alloc", "tokio", "mio", "socket2"];

fn is_plumbing_fn(function: &str) -> bool {
    if LIBC_FUNCTIONS.contains(&function) {
        return true;
    }
    match split_qualified(function) {
        None => in_runtime_crate(function),
        Some((self_ty, None)) => in_runtime_crate(without_indirection(self_ty)),
        // `<T as Trait>::f` is the code of T's owner: a user's `Drop` that
        // closes a socket is the call site. Blanket impls over references and
        // pointers, and impls on runtime types, are the runtime's.
        Some((self_ty, Some(trait_path))) => {
            in_runtime_crate(trait_path)
                && (self_ty.starts_with(['&', '*'])
                    || in_runtime_crate(without_indirection(self_ty)))
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

fn in_runtime_crate(path: &str) -> bool {
    RUNTIME_CRATES.iter().any(|krate| {
        path.strip_prefix(krate)
            .is_some_and(|rest| rest.starts_with("::"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(function: &str, module: &str) -> Frame {
        Frame {
            addr: 0,
            function: function.to_owned(),
            module: Some(module.to_owned()),
            file: None,
            line: None,
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
        assert_eq!(call_site(&frames).unwrap().function, "app::dial");

        // A user impl of a std trait is user code.
        let drop = frame("<app::Conn as core::ops::drop::Drop>::drop", app);
        assert_eq!(call_site(&[frames[0].clone(), drop.clone()]), Some(&drop));

        // All plumbing: the first known function.
        assert_eq!(call_site(&frames[..4]).unwrap().function, "__connect");
        assert_eq!(call_site(&[]), None);
    }
}
