//! Users and login: the users file (roles, rights, salted argon2 password hashes), password
//! verification off the async threads, `hash-password`, and the rights checks on a session's
//! login entries (`$is_authenticated`, `$authorities`).

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, LazyLock};

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use serde::Deserialize;

use crate::config::ConfigError;
use crate::protocol::{get_bool, get_str, Token};

/// The users file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    #[serde(default)]
    roles: HashMap<String, RoleEntry>,
    #[serde(default)]
    users: Vec<UserEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleEntry {
    #[serde(default)]
    rights: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserEntry {
    username: String,
    /// A PHC string from `pollgate hash-password`; plain passwords are refused.
    password_hash: String,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    rights: Vec<String>,
}

/// One account.
#[derive(Debug, Clone)]
pub struct User {
    password_hash: String,
    /// Every right of every role, sorted ascending (as Spring sorts them), no duplicates.
    pub authorities: Vec<String>,
}

/// Every account, by exact (case-sensitive) user name.
#[derive(Debug, Clone)]
pub struct Users {
    users: HashMap<String, User>,
    /// Verified against when the user is unknown, so that both answers take as long.
    dummy_hash: String,
    /// One permit per core: a check takes argon2's 19 MiB and a core's worth of time, so a
    /// burst of logins (password guessing from many connections) waits its turn instead of
    /// running hundreds of checks at once on the blocking pool (measured: 48 at once took
    /// the server to 700 MB).
    checks: Arc<tokio::sync::Semaphore>,
}

impl Users {
    /// Reads and checks the users file; errors name the file and the entry.
    pub fn load(path: &Path) -> Result<Users, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("users_file: cannot read {}: {e}", path.display())))?;
        Self::parse(&text).map_err(|e| ConfigError(format!("users_file {}: {e}", path.display())))
    }

    pub fn parse(text: &str) -> Result<Users, String> {
        let file: UsersFile = toml::from_str(text).map_err(|e| e.message().to_owned())?;
        let mut users = HashMap::new();
        for entry in file.users {
            if PasswordHash::new(&entry.password_hash).is_err() {
                return Err(format!(
                    "user '{}': password_hash is not a hash (make one with `pollgate hash-password`)",
                    entry.username
                ));
            }
            let mut rights: BTreeSet<String> = entry.rights.into_iter().collect();
            for role in &entry.roles {
                let Some(role_entry) = file.roles.get(role) else {
                    return Err(format!("user '{}': unknown role '{role}'", entry.username));
                };
                rights.extend(role_entry.rights.iter().cloned());
            }
            let user = User { password_hash: entry.password_hash, authorities: rights.into_iter().collect() };
            if users.insert(entry.username.clone(), user).is_some() {
                return Err(format!("user '{}' is listed twice", entry.username));
            }
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let checks = Arc::new(tokio::sync::Semaphore::new(cores));
        Ok(Users { users, dummy_hash: hash_password("not a password"), checks })
    }

    /// The authorities of `username` if `password` is right. Runs the slow hash on the
    /// blocking pool so the async threads keep serving.
    pub async fn verify(&self, username: &str, password: &str) -> Option<Vec<String>> {
        let user = self.users.get(username).cloned();
        let hash = user.as_ref().map_or_else(|| self.dummy_hash.clone(), |u| u.password_hash.clone());
        let password = password.to_owned();
        // The semaphore is never closed, so acquiring only waits. The permit moves into the
        // check, so a client that goes away mid-check does not free it early.
        let Ok(permit) = self.checks.clone().acquire_owned().await else { return None };
        let ok = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            PasswordHash::new(&hash)
                .map(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
                .unwrap_or(false)
        })
        .await
        .unwrap_or(false);
        user.filter(|_| ok).map(|u| u.authorities)
    }

    /// The account of `username` (for the token fuzz target, which logs in as `guest`).
    #[cfg(feature = "internals")]
    pub fn get(&self, username: &str) -> Option<&User> {
        self.users.get(username)
    }
}

/// A salted argon2id hash in PHC format, for the users file.
pub fn hash_password(password: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default().hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).unwrap_or_default()
}

/// The session keys a rights check reads ([`is_authenticated`], [`has_right`]).
pub(crate) const RIGHTS_KEYS: [&str; 2] = ["$is_authenticated", "$authorities"];

/// A right as [`has_right`] checks it: its name, and the search for its last segment, made
/// once (making it cost a third of the check it serves).
pub struct Right {
    name: &'static str,
    tail: memchr::memmem::FinderRev<'static>,
}

impl Right {
    pub fn new(name: &'static str) -> Right {
        // The entries share long prefixes (`org.jwebsocket.plugins.`), so the check looks
        // for the right's last segment, which few entries share, and then at what surrounds
        // each find.
        let tail_at = name.rfind('.').map_or(0, |dot| dot + 1);
        Right { name, tail: memchr::memmem::FinderRev::new(&name[tail_at..]) }
    }
}

/// The system plugin's `send` right, which the engine also checks on its one-step sends.
pub(crate) static RIGHT_SEND: LazyLock<Right> = LazyLock::new(|| Right::new("org.jwebsocket.plugins.system.send"));

/// Whether a session's rights entries ([`RIGHTS_KEYS`]) allow the system plugin's `send`.
pub(crate) fn may_send(session: &Token) -> bool {
    has_right(session, &RIGHT_SEND)
}

/// Whether a session is authenticated and holds `right` (jWebSocket's `hasAuthority`).
pub fn has_right(session: &Token, right: &Right) -> bool {
    is_authenticated(session) && holds(get_str(session, "$authorities").unwrap_or_default(), right)
}

/// Whether space-terminated `authorities` contain `right` as a whole entry. One vectorised
/// search finds the right's last segment, and only what surrounds each find is compared:
/// splitting the fifty-odd entries of a login cost a large share of an echo, and a search
/// for the whole name more, since the entries share long prefixes. The search runs from the
/// end: a login's authorities are sorted (see conf/users.toml), and the system plugin's,
/// checked on every `send` and `broadcast`, sort near the end. Any order gives the same
/// answer.
fn holds(authorities: &str, right: &Right) -> bool {
    if right.name.is_empty() {
        return false;
    }
    let (list, name, tail_len) = (authorities.as_bytes(), right.name.as_bytes(), right.tail.needle().len());
    right.tail.rfind_iter(list).any(|at| {
        let end = at + tail_len;
        let whole_entry_ends = end == list.len() || list[end] == b' ';
        whole_entry_ends
            && end >= name.len()
            && &list[end - name.len()..end] == name
            && (end == name.len() || list[end - name.len() - 1] == b' ')
    })
}

/// Whether a session logged in (the auto-assigned `anonymous` name does not count).
pub fn is_authenticated(session: &Token) -> bool {
    get_bool(session, "$is_authenticated") == Some(true)
}

/// The authorities stored at login (`$authorities`, space-terminated ids), in login order.
pub fn authorities(session: &Token) -> Vec<&str> {
    get_str(session, "$authorities").unwrap_or_default().split(' ').filter(|a| !a.is_empty()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_roles_merge_sorted() {
        let text = format!(
            "[roles.A]\nrights = [\"z\", \"b\"]\n[roles.B]\nrights = [\"a\", \"b\"]\n\
             [[users]]\nusername = \"u\"\npassword_hash = \"{}\"\nroles = [\"A\", \"B\"]\n",
            hash_password("pw")
        );
        let users = Users::parse(&text).unwrap();
        assert_eq!(users.verify("u", "pw").await, Some(vec!["a".into(), "b".into(), "z".into()]));
        assert_eq!(users.verify("u", "PW").await, None);
        assert_eq!(users.verify("U", "pw").await, None, "names are case-sensitive");
        assert_eq!(users.verify("nobody", "pw").await, None);
    }

    #[test]
    fn plain_passwords_and_unknown_roles_are_refused() {
        let e = Users::parse("[[users]]\nusername = \"u\"\npassword_hash = \"secret\"\n").unwrap_err();
        assert!(e.contains("hash-password"), "{e}");
        let text =
            format!("[[users]]\nusername = \"u\"\npassword_hash = \"{}\"\nroles = [\"X\"]\n", hash_password("p"));
        assert!(Users::parse(&text).unwrap_err().contains("unknown role 'X'"));
    }

    #[test]
    fn rights_match_whole_entries_only() {
        let authorities = "a.send a.broadcast.all b.send ";
        assert!(holds(authorities, &Right::new("a.send")));
        assert!(holds(authorities, &Right::new("b.send")));
        assert!(holds(authorities, &Right::new("a.broadcast.all")));
        assert!(!holds(authorities, &Right::new("a.broadcast")));
        assert!(!holds(authorities, &Right::new("send")));
        assert!(!holds(authorities, &Right::new("")));
        assert!(holds("x y", &Right::new("y")));
        // A partial match first, the whole entry later.
        assert!(holds("za.send a.sendz a.send ", &Right::new("a.send")));
        assert!(!holds("za.send a.sendz ", &Right::new("a.send")));
        // The whole entry first, partial matches after it (the search runs from the end).
        assert!(holds("a.send za.send a.sendz ", &Right::new("a.send")));
        // The last segment alone, or longer than the list, is no match.
        assert!(!holds("send ", &Right::new("a.send")));
        assert!(!holds("x.send", &Right::new("ax.send")));
        assert!(holds("a.send", &Right::new("a.send")));
        assert!(holds("plain ", &Right::new("plain")));
        assert!(!holds("plainer ", &Right::new("plain")));
    }
}
