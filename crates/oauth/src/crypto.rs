//! Random secrets, hashes and encodings shared by the OAuth modules.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{KeyInit, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::Internal;

/// 256 bits from the OS CSPRNG, base64url without padding (43 characters).
pub fn random_token() -> Result<String, Internal> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|err| Internal::new(format!("CSPRNG: {err}")))?;
    Ok(b64(&bytes))
}

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn b64_decode(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text).ok()
}

/// SHA-256, the only form in which secrets are stored and looked up.
pub fn sha256(data: &[u8]) -> Vec<u8> {
    Sha256::digest(data).to_vec()
}

pub fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac =
        <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap_or_else(|_| unreachable_hmac());
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

// HMAC accepts keys of any length; this cannot be reached.
fn unreachable_hmac() -> hmac::Hmac<Sha256> {
    <hmac::Hmac<Sha256> as KeyInit>::new(&hmac::digest::Key::<hmac::Hmac<Sha256>>::default())
}

/// Constant-time equality for secrets and their derivatives.
pub fn secure_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// A key for one purpose derived from the master secret.
pub fn derive_key(master: &[u8], purpose: &str) -> [u8; 32] {
    let mut key = [0u8; 32];
    key.copy_from_slice(&hmac_sha256(master, purpose.as_bytes()));
    key
}

/// RFC 7636 §4.1: a code verifier is 43 to 128 unreserved characters. Shorter ones would let a
/// client with a weak generator be guessed; the token endpoint refuses them.
pub fn pkce_verifier_well_formed(verifier: &str) -> bool {
    (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// PKCE S256 (RFC 7636 §4.6): base64url(SHA-256(verifier)) compared in constant time.
pub fn pkce_matches(verifier: &str, challenge: &str) -> bool {
    secure_eq(
        b64(&sha256(verifier.as_bytes())).as_bytes(),
        challenge.as_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_s256_matches_the_rfc_example() {
        // RFC 7636 Appendix B.
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        assert!(pkce_matches(
            verifier,
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        ));
        assert!(!pkce_matches(
            verifier,
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cN"
        ));
    }

    #[test]
    fn verifier_shape() {
        assert!(pkce_verifier_well_formed(
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
        ));
        assert!(pkce_verifier_well_formed(&"~.-_".repeat(32)));
        assert!(!pkce_verifier_well_formed(&"a".repeat(42)));
        assert!(!pkce_verifier_well_formed(&"a".repeat(129)));
        assert!(!pkce_verifier_well_formed(&format!("{}+", "a".repeat(42))));
        assert!(!pkce_verifier_well_formed(&format!("{}é", "a".repeat(42))));
    }

    #[test]
    fn tokens_are_256_bit_and_distinct() {
        let a = random_token().unwrap();
        let b = random_token().unwrap();
        assert_eq!(a.len(), 43);
        assert_ne!(a, b);
    }
}
