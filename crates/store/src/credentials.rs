//! The one `Authorization: Bearer` parser, shared by the MCP endpoint (access tokens) and the
//! Add-On socket (Add-On keys), so both read credentials with the same strictness.

/// What a request's `Authorization` headers present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presented<'a> {
    /// No `Authorization` header.
    Nothing,
    Bearer(&'a str),
    /// Something that is not one well-formed bearer credential.
    Invalid(Flaw),
}

/// Why the `Authorization` headers are not one bearer credential; each endpoint words it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flaw {
    MoreThanOne,
    NotAscii,
    NotBearer,
    Malformed,
}

/// Reads the values of every `Authorization` header of a request: exactly one, with the
/// `Bearer` scheme (case-insensitive, RFC 7235 §2.1) and one token without white space after it
/// (RFC 6750 §2.1).
pub fn bearer<'a>(mut values: impl Iterator<Item = &'a [u8]>) -> Presented<'a> {
    let Some(value) = values.next() else {
        return Presented::Nothing;
    };
    if values.next().is_some() {
        return Presented::Invalid(Flaw::MoreThanOne);
    }
    let Some(value) = Some(value)
        .filter(|value| value.is_ascii())
        .and_then(|value| std::str::from_utf8(value).ok())
    else {
        return Presented::Invalid(Flaw::NotAscii);
    };
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Presented::Invalid(Flaw::NotBearer);
    }
    let token = token.trim();
    // The token is ASCII: Unicode's whitespace within it is tab to carriage return and space.
    // Checked 16 bytes at a time without an early exit, which the compiler vectorizes.
    let white = |found: u8, &byte: &u8| {
        found | u8::from(byte.wrapping_sub(b'\t') <= b'\r' - b'\t') | u8::from(byte == b' ')
    };
    if token.is_empty()
        || token
            .as_bytes()
            .chunks(16)
            .any(|block| block.iter().fold(0, white) != 0)
    {
        return Presented::Invalid(Flaw::Malformed);
    }
    Presented::Bearer(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse<'a>(values: &'a [&'a str]) -> Presented<'a> {
        bearer(values.iter().map(|value| value.as_bytes()))
    }

    #[test]
    fn white_space_anywhere_in_a_long_token_is_malformed() {
        let token = "a".repeat(700);
        let header = format!("Bearer {token}");
        assert_eq!(parse(&[header.as_str()]), Presented::Bearer(token.as_str()));
        for at in [1, 31, 32, 33, 64, 350, 698] {
            for white in ['\t', '\n', '\u{b}', '\u{c}', '\r', ' '] {
                let mut spoiled = token.clone();
                spoiled.replace_range(at..=at, &white.to_string());
                let header = format!("Bearer {spoiled}");
                assert_eq!(
                    parse(&[header.as_str()]),
                    Presented::Invalid(Flaw::Malformed),
                    "{white:?} at {at}"
                );
            }
        }
    }

    #[test]
    fn one_well_formed_bearer_credential() {
        assert_eq!(parse(&[]), Presented::Nothing);
        assert_eq!(parse(&["Bearer abc"]), Presented::Bearer("abc"));
        assert_eq!(parse(&["bEaReR abc"]), Presented::Bearer("abc"));
        assert_eq!(parse(&["Basic abc"]), Presented::Invalid(Flaw::NotBearer));
        assert_eq!(parse(&["abc"]), Presented::Invalid(Flaw::NotBearer));
        for malformed in [
            "Bearer",
            "Bearer ",
            "Bearer a b",
            "Bearer a\tb",
            "Bearer a\x0bb",
            "Bearer a\rb",
        ] {
            assert_eq!(
                parse(&[malformed]),
                Presented::Invalid(Flaw::Malformed),
                "{malformed}"
            );
        }
        assert_eq!(parse(&["Bearer é"]), Presented::Invalid(Flaw::NotAscii));
        assert_eq!(
            parse(&["Bearer a", "Bearer b"]),
            Presented::Invalid(Flaw::MoreThanOne)
        );
    }
}
