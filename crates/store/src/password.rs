//! Argon2id password hashing. Both operations are CPU-heavy: call them from
//! `tokio::task::spawn_blocking`.

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};

#[derive(Debug, thiserror::Error)]
#[error("password hashing failed: {0}")]
pub struct HashError(String);

/// The PHC string of an argon2id hash with a fresh random salt.
pub fn hash(password: &str) -> Result<String, HashError> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|err| HashError(err.to_string()))
}

/// Whether `password` matches the stored PHC string. A malformed stored hash never matches.
pub fn verify(password: &str, stored: &str) -> bool {
    Argon2::default()
        .verify_password(password.as_bytes(), stored)
        .is_ok()
}

/// Working memory for one argon2id computation, allocated once and reused. argon2id needs
/// `m_cost` KiB per computation (19 MiB with the defaults); left to the allocator, each
/// computation takes fresh memory that is not reliably returned to the system, so a server
/// running a fixed number of these at once holds a fixed amount of memory only if it keeps one
/// workspace per slot.
pub struct Workspace(Vec<argon2::Block>);

impl std::fmt::Debug for Workspace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Workspace({} KiB)", self.0.len())
    }
}

impl Default for Workspace {
    /// Sized for hashes made by [`hash`] (the argon2 defaults).
    fn default() -> Self {
        Self(vec![
            argon2::Block::default();
            argon2::Params::DEFAULT.block_count()
        ])
    }
}

/// [`verify`] computing in `memory`, which grows only for a stored hash with a larger `m_cost`.
pub fn verify_in(password: &str, stored: &str, memory: &mut Workspace) -> bool {
    use argon2::password_hash::phc::{Output, PasswordHash};
    let Ok(parsed) = PasswordHash::new(stored) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (&parsed.salt, &parsed.hash) else {
        return false;
    };
    let Ok(params) = argon2::Params::try_from(&parsed) else {
        return false;
    };
    let Ok(algorithm) = argon2::Algorithm::try_from(parsed.algorithm.as_str()) else {
        return false;
    };
    let version = match parsed.version.map(argon2::Version::try_from) {
        None => argon2::Version::default(),
        Some(Ok(version)) => version,
        Some(Err(_)) => return false,
    };
    let blocks = params.block_count();
    if memory.0.len() < blocks {
        memory.0.resize(blocks, argon2::Block::default());
    }
    let mut computed = vec![0u8; expected.len()];
    let hashed = Argon2::new(algorithm, version, params).hash_password_into_with_memory(
        password.as_bytes(),
        salt,
        &mut computed,
        &mut memory.0[..blocks],
    );
    // `Output`'s equality is constant-time.
    hashed.is_ok() && Output::new(&computed).is_ok_and(|computed| &computed == expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_then_verify() {
        let stored = hash("correct horse battery").unwrap();
        assert!(stored.starts_with("$argon2id$"), "{stored}");
        assert!(verify("correct horse battery", &stored));
        assert!(!verify("correct horse batterz", &stored));
        assert!(!verify("correct horse battery", "not-a-phc-string"));
    }

    #[test]
    fn verify_in_a_reused_workspace_agrees_with_verify() {
        let mut memory = Workspace::default();
        let stored = hash("correct horse battery").unwrap();
        for _ in 0..2 {
            assert!(verify_in("correct horse battery", &stored, &mut memory));
            assert!(!verify_in("correct horse batterz", &stored, &mut memory));
        }
        assert!(!verify_in("x", "not-a-phc-string", &mut memory));
        // A hash with other parameters (more memory, argon2i) still verifies.
        let computed = {
            use argon2::password_hash::{CustomizedPasswordHasher, phc::PasswordHash};
            let params = argon2::Params::new(32768, 1, 1, Some(32)).unwrap();
            let hash: PasswordHash = Argon2::default()
                .hash_password_customized(b"pw", b"somesaltsomesalt", Some("argon2i"), None, params)
                .unwrap();
            hash.to_string()
        };
        assert!(verify_in("pw", &computed, &mut memory));
        assert!(verify("pw", &computed));
        assert!(!verify_in("pv", &computed, &mut memory));
    }
}
