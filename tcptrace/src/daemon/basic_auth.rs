//! HTTP basic authentication against the bcrypt hashes of
//! `basic_auth_users` (see `web_config.rs`). bcrypt is slow on purpose
//! (tens of milliseconds at the usual cost), so a check runs on a blocking
//! thread, one at a time, and a password once accepted is remembered by
//! its SHA-256, as the exporter-toolkit does: a scrape every 15 s costs one
//! hash lookup, not one bcrypt.

use std::{
    cell::RefCell,
    collections::{BTreeMap, HashSet},
    rc::Rc,
    sync::Arc,
};

use base64::Engine;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

/// Accepted credentials remembered at most; past it the memory starts
/// again (a handful of scrapers need a handful).
const REMEMBERED: usize = 256;

/// A hash compared against when the user is unknown, so that an unknown
/// user takes as long to refuse as a wrong password (no user enumeration
/// by timing). `htpasswd -nbB -C 10 x x`.
const UNKNOWN_USER_HASH: &str = "$2y$10$s2aGLs0zyGm9KDaggTS0ku/6VyymCzyYEHItTgGHLZ3kHjKT4.sDi";

pub struct BasicAuth {
    users: BTreeMap<String, String>,
    accepted: RefCell<HashSet<[u8; 32]>>,
    /// One bcrypt at a time: wrong passwords cannot take every core.
    bcrypt: Arc<Semaphore>,
}

impl BasicAuth {
    #[must_use]
    pub fn new(users: BTreeMap<String, String>) -> Rc<Self> {
        Rc::new(Self {
            users,
            accepted: RefCell::default(),
            bcrypt: Arc::new(Semaphore::new(1)),
        })
    }

    /// Whether requests must authenticate at all.
    #[must_use]
    pub fn required(&self) -> bool {
        !self.users.is_empty()
    }

    /// Whether `authorization` (the request's `Authorization` header, if
    /// any) names a user with the right password; true when no users are
    /// configured.
    pub async fn allows(&self, authorization: Option<&[u8]>) -> bool {
        if !self.required() {
            return true;
        }
        let Some((user, password)) = authorization.and_then(credentials) else {
            return false;
        };
        let (hash, known) = match self.users.get(&user) {
            Some(hash) => (hash.clone(), true),
            None => (UNKNOWN_USER_HASH.to_owned(), false),
        };
        let key = remembered_key(&user, &password, &hash);
        if known && self.accepted.borrow().contains(&key) {
            return true;
        }
        let Ok(_permit) = self.bcrypt.acquire().await else {
            return false;
        };
        let verified = tokio::task::spawn_blocking(move || {
            bcrypt::verify(password.as_bytes(), &hash).unwrap_or(false)
        })
        .await
        .unwrap_or(false);
        if verified && known {
            let mut accepted = self.accepted.borrow_mut();
            if accepted.len() >= REMEMBERED {
                accepted.clear();
            }
            accepted.insert(key);
        }
        verified && known
    }
}

/// The user and password of a `Basic` authorization header.
fn credentials(header: &[u8]) -> Option<(String, String)> {
    let text = std::str::from_utf8(header).ok()?.trim();
    let (scheme, encoded) = text.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// What an accepted password is remembered by: never the password itself,
/// and tied to the hash in force (a changed hash forgets it).
fn remembered_key(user: &str, password: &str, hash: &str) -> [u8; 32] {
    let mut digest = Sha256::new();
    for part in [user, password, hash] {
        digest.update((part.len() as u64).to_le_bytes());
        digest.update(part.as_bytes());
    }
    digest.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::web_config::tests::HASH;

    fn header(user: &str, password: &str) -> Vec<u8> {
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        format!("Basic {encoded}").into_bytes()
    }

    #[test]
    fn parses_basic_credentials_only() {
        assert_eq!(
            credentials(&header("prometheus", "a:b")),
            Some(("prometheus".into(), "a:b".into()))
        );
        assert_eq!(credentials(b"Bearer abc"), None);
        assert_eq!(credentials(b"Basic !!!"), None);
        assert_eq!(credentials(b"basic cHJvbQ=="), None, "no colon");
    }

    #[tokio::test]
    async fn right_password_passes_and_is_remembered_wrong_ones_do_not() {
        let auth = BasicAuth::new([("prometheus".to_owned(), HASH.to_owned())].into());
        assert!(auth.required());
        assert!(auth.allows(Some(&header("prometheus", "s3cret"))).await);
        assert_eq!(auth.accepted.borrow().len(), 1);
        assert!(auth.allows(Some(&header("prometheus", "s3cret"))).await);
        assert!(!auth.allows(Some(&header("prometheus", "wrong"))).await);
        assert!(!auth.allows(Some(&header("nobody", "s3cret"))).await);
        assert!(!auth.allows(None).await);
        assert_eq!(auth.accepted.borrow().len(), 1);
        let open = BasicAuth::new(BTreeMap::new());
        assert!(open.allows(None).await);
    }
}
