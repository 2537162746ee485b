//! Certificates for the daemon's TLS tests, made with the `openssl` command
//! (not by tcptrace's own crates, so a mistake in how tcptrace reads them
//! cannot hide in how they were made), and bcrypt password hashes made
//! with Apache's `htpasswd`. Everything lives in a directory removed on
//! drop.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// A certificate authority and certificates it signed, in one directory.
pub struct Pki {
    pub dir: PathBuf,
}

fn run(program: &str, args: &[&str], dir: &Path) -> String {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("{program} must be installed (`cargo xtask test` installs it): {e}")
        });
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Pki {
    /// A new directory `tag` under the temporary directory, with a CA
    /// named `<tag>-ca` (`ca.crt`, `ca.key`).
    #[must_use]
    pub fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("tcptrace-pki-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("pki dir");
        let pki = Self { dir };
        pki.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "1",
            "-subj",
            &format!("/CN={tag}-ca"),
        ]);
        pki
    }

    fn openssl(&self, args: &[&str]) {
        run("openssl", args, &self.dir);
    }

    /// A certificate `<name>.crt` (key `<name>.key`) signed by the CA, for
    /// `localhost` and 127.0.0.1 (server) or as a client certificate.
    pub fn issue(&self, name: &str, client: bool) {
        self.openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={name}"),
        ]);
        let extensions = if client {
            "extendedKeyUsage=clientAuth\n"
        } else {
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"
        };
        std::fs::write(self.path(&format!("{name}.ext")), extensions).expect("extensions");
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &format!("{name}.crt"),
            "-days",
            "1",
            "-extfile",
            &format!("{name}.ext"),
        ]);
    }

    #[must_use]
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The bcrypt hash `htpasswd -nbB` makes of `password` (cost 10, what the
/// exporter-toolkit's documentation shows).
#[must_use]
pub fn bcrypt_hash(user: &str, password: &str) -> String {
    let line = run("htpasswd", &["-nbB", user, password], Path::new("/"));
    line.trim()
        .split_once(':')
        .map(|(_, hash)| hash.to_owned())
        .expect("htpasswd prints user:hash")
}
