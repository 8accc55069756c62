//! Users and login: the users file (roles, rights, salted argon2 password hashes), password
//! verification off the async threads, and `hash-password`.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use serde::Deserialize;

use crate::config::ConfigError;

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

    pub fn get(&self, username: &str) -> Option<&User> {
        self.users.get(username)
    }
}

/// A salted argon2id hash in PHC format, for the users file.
pub fn hash_password(password: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default().hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).unwrap_or_default()
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
}
