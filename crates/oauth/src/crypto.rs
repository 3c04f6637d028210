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
    getrandom::fill(&mut bytes).map_err(|err| Internal::caused("CSPRNG", err))?;
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

    mod properties {
        use proptest::prelude::*;

        use super::super::*;

        const UNRESERVED: &str = "[A-Za-z0-9._~-]";

        fn verifier() -> impl Strategy<Value = String> {
            proptest::string::string_regex(&format!("{UNRESERVED}{{43,128}}")).unwrap()
        }

        /// Another character of the same alphabet as `c`.
        fn other_than(c: u8, alphabet: &[u8], pick: usize) -> u8 {
            let others: Vec<u8> = alphabet.iter().copied().filter(|&a| a != c).collect();
            others[pick % others.len()]
        }

        const B64URL: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        const UNRESERVED_BYTES: &[u8] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~";

        proptest! {
            /// The S256 challenge of a verifier matches it (RFC 7636 §4.2, §4.6).
            #[test]
            fn s256_of_a_verifier_matches(verifier in verifier()) {
                prop_assert!(pkce_verifier_well_formed(&verifier));
                let challenge = b64(&sha256(verifier.as_bytes()));
                prop_assert_eq!(challenge.len(), 43);
                prop_assert!(pkce_matches(&verifier, &challenge));
            }

            /// Any one character changed, in the challenge or in the verifier, fails.
            #[test]
            fn one_changed_character_fails(
                verifier in verifier(),
                at in any::<prop::sample::Index>(),
                pick in any::<usize>(),
            ) {
                let challenge = b64(&sha256(verifier.as_bytes()));
                let mut changed = challenge.clone().into_bytes();
                let i = at.index(changed.len());
                changed[i] = other_than(changed[i], B64URL, pick);
                prop_assert!(!pkce_matches(&verifier, &String::from_utf8(changed).unwrap()));

                let mut changed = verifier.clone().into_bytes();
                let i = at.index(changed.len());
                changed[i] = other_than(changed[i], UNRESERVED_BYTES, pick);
                prop_assert!(!pkce_matches(&String::from_utf8(changed).unwrap(), &challenge));
            }

            /// Truncated or extended challenges never match.
            #[test]
            fn other_lengths_fail(verifier in verifier(), cut in 0usize..43, extra in "[A-Za-z0-9_-]{1,4}") {
                let challenge = b64(&sha256(verifier.as_bytes()));
                prop_assert!(!pkce_matches(&verifier, &challenge[..cut]));
                let longer = format!("{challenge}{extra}");
                prop_assert!(!pkce_matches(&verifier, &longer));
            }

            /// RFC 7636 §4.1: too short, too long, or any character outside the unreserved set.
            #[test]
            fn malformed_verifiers_are_refused(
                short in proptest::string::string_regex(&format!("{UNRESERVED}{{0,42}}")).unwrap(),
                long in proptest::string::string_regex(&format!("{UNRESERVED}{{129,200}}")).unwrap(),
                good in verifier(),
                bad in "[^A-Za-z0-9._~-]",
                at in any::<prop::sample::Index>(),
            ) {
                prop_assert!(!pkce_verifier_well_formed(&short));
                prop_assert!(!pkce_verifier_well_formed(&long));
                let mut chars: Vec<char> = good.chars().collect();
                let i = at.index(chars.len());
                chars[i] = bad.chars().next().unwrap();
                let tainted: String = chars.into_iter().collect();
                prop_assert!(!pkce_verifier_well_formed(&tainted));
            }
        }
    }

    #[test]
    fn tokens_are_256_bit_and_distinct() {
        let a = random_token().unwrap();
        let b = random_token().unwrap();
        assert_eq!(a.len(), 43);
        assert_ne!(a, b);
    }
}
