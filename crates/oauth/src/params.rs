//! Request parameters parsed into types that can only hold what the protocol allows: a value
//! of one of these types has been checked once, where it entered, and never again.

use std::fmt;

use crate::crypto::{pkce_matches, pkce_verifier_well_formed};

/// Longer than any client id this server issues or accepts (a metadata document URL is at most
/// this long).
pub const MAX_CLIENT_ID_LEN: usize = crate::cimd::MAX_URL;

/// A client id as a client presents it: 1 to [`MAX_CLIENT_ID_LEN`] bytes without control
/// characters (issued ids have none, and PostgreSQL text cannot hold NUL). Whether such a
/// client exists is a question for the database.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientId(String);

impl ClientId {
    pub fn parse(raw: &str) -> Option<Self> {
        let plausible =
            !raw.is_empty() && raw.len() <= MAX_CLIENT_ID_LEN && !raw.chars().any(char::is_control);
        plausible.then(|| Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A redirect URI this server may send a browser to: absolute, no fragment, https or a
/// loopback or private-use scheme (the rules of [`crate::redirect_uri::validate`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedirectUri(String);

impl RedirectUri {
    pub fn parse(raw: &str) -> Result<Self, String> {
        crate::redirect_uri::validate(raw)?;
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A PKCE `code_verifier` (RFC 7636 §4.1): 43 to 128 unreserved characters.
#[derive(Clone, PartialEq, Eq)]
pub struct CodeVerifier(String);

impl CodeVerifier {
    pub fn parse(raw: &str) -> Option<Self> {
        pkce_verifier_well_formed(raw).then(|| Self(raw.to_owned()))
    }
}

impl fmt::Debug for CodeVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CodeVerifier(..)")
    }
}

/// A PKCE S256 `code_challenge` (RFC 7636 §4.2): 43 base64url characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeChallenge(String);

impl CodeChallenge {
    pub fn parse_s256(raw: &str) -> Option<Self> {
        let well_formed = raw.len() == 43
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        well_formed.then(|| Self(raw.to_owned()))
    }

    /// A challenge stored with its code (parsed when the code was issued).
    pub(crate) fn stored(raw: String) -> Self {
        Self(raw)
    }

    /// S256 (RFC 7636 §4.6): base64url(SHA-256(verifier)), compared in constant time.
    pub fn is_met_by(&self, verifier: &CodeVerifier) -> bool {
        pkce_matches(&verifier.0, &self.0)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The one protected resource this server issues tokens for, and the `resource` parameters
/// (RFC 8707) that name it: equal after parsing, ignoring one trailing slash; a fragment never
/// matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceUri(String);

impl ResourceUri {
    pub fn new(canonical: String) -> Self {
        Self(canonical)
    }

    pub fn is_named_by(&self, requested: &str) -> bool {
        fn normalise(raw: &str) -> Option<String> {
            if raw.contains('#') {
                return None;
            }
            let url = url::Url::parse(raw).ok()?;
            let text = url.as_str();
            Some(text.strip_suffix('/').unwrap_or(text).to_owned())
        }
        match (normalise(&self.0), normalise(requested)) {
            (Some(canonical), Some(requested)) => canonical == requested,
            _ => false,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_s256_matches_the_rfc_example() {
        // RFC 7636 Appendix B.
        let verifier = CodeVerifier::parse("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk").unwrap();
        let good =
            CodeChallenge::parse_s256("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM").unwrap();
        let bad = CodeChallenge::parse_s256("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cN").unwrap();
        assert!(good.is_met_by(&verifier));
        assert!(!bad.is_met_by(&verifier));
    }

    #[test]
    fn shapes() {
        assert!(CodeVerifier::parse(&"a".repeat(42)).is_none());
        assert!(CodeVerifier::parse(&"a".repeat(43)).is_some());
        assert!(CodeVerifier::parse(&"a".repeat(129)).is_none());
        assert!(CodeVerifier::parse(&format!("{}+", "a".repeat(43))).is_none());
        assert!(CodeChallenge::parse_s256(&"a".repeat(42)).is_none());
        assert!(CodeChallenge::parse_s256(&format!("{}=", "a".repeat(42))).is_none());
        assert!(ClientId::parse("").is_none());
        assert!(ClientId::parse("ctc_a\u{0}").is_none());
        assert!(ClientId::parse(&"a".repeat(MAX_CLIENT_ID_LEN + 1)).is_none());
        assert!(ClientId::parse("ctc_abc").is_some());
        assert!(
            format!("{:?}", CodeVerifier::parse(&"s".repeat(43)).unwrap())
                .find('s')
                .is_none()
        );
    }

    #[test]
    fn resource_names() {
        let resource = ResourceUri::new("https://app.example/v1/api/mcp".into());
        assert!(resource.is_named_by("https://app.example/v1/api/mcp/"));
        assert!(resource.is_named_by("https://APP.example/v1/api/mcp"));
        assert!(!resource.is_named_by("https://app.example/v1/api/mcp#x"));
        assert!(!resource.is_named_by("https://app.example/other"));
    }
}
