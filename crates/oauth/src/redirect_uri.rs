//! Redirect URI rules (RFC 7591 §2, RFC 9700 §2.1 and §4.1, RFC 8252 §7) and matching.
//!
//! Registration accepts `https` URIs, `http` only on a loopback host, and private-use schemes in
//! reverse-domain form (RFC 8252 §7.1) or on a short allow-list of shipping clients. Matching is
//! exact string comparison, except that the port of a loopback `http` redirect may differ from
//! the registered one (RFC 8252 §7.3): scheme, host spelling, path and query must be identical.

/// Longest accepted redirect URI.
pub const MAX_LEN: usize = 2000;
/// Private-use schemes of shipping MCP clients that are not in reverse-domain form.
const ALLOWED_PRIVATE_SCHEMES: &[&str] = &["cursor", "vscode", "vscode-insiders", "windsurf"];
/// Schemes that must never receive a code.
const FORBIDDEN_SCHEMES: &[&str] = &[
    "javascript",
    "data",
    "file",
    "vbscript",
    "blob",
    "about",
    "ftp",
    "ws",
    "wss",
    "filesystem",
];
const LOOPBACK_HOSTS: &[&str] = &["127.0.0.1", "[::1]", "localhost"];

/// Checks a redirect URI offered at registration; the error says which rule it broke.
pub fn validate(raw: &str) -> Result<(), String> {
    if raw.is_empty() || raw.len() > MAX_LEN {
        return Err(format!("redirect URI must be 1 to {MAX_LEN} characters"));
    }
    if raw.contains('#') {
        return Err(format!("redirect URI {raw:?} must not contain a fragment"));
    }
    if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("redirect URI {raw:?} contains whitespace"));
    }
    let url = url::Url::parse(raw).map_err(|_| format!("redirect URI {raw:?} is not absolute"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "redirect URI {raw:?} must not contain user information"
        ));
    }
    let scheme = url.scheme();
    match scheme {
        "https" => {
            // As written, not as parsed: `https:///x` parses with host `x`.
            let authority = raw.strip_prefix("https://").unwrap_or("");
            if url.host_str().is_none_or(str::is_empty)
                || authority.starts_with('/')
                || authority.is_empty()
            {
                return Err(format!("redirect URI {raw:?} has no host"));
            }
            Ok(())
        }
        "http" => {
            if loopback_authority(raw).is_some() {
                Ok(())
            } else {
                Err(format!(
                    "redirect URI {raw:?} uses http on a non-loopback host; use https"
                ))
            }
        }
        s if FORBIDDEN_SCHEMES.contains(&s) => {
            Err(format!("redirect URI scheme {s:?} is not allowed"))
        }
        s if s.contains('.') || ALLOWED_PRIVATE_SCHEMES.contains(&s) => Ok(()),
        s => Err(format!(
            "redirect URI scheme {s:?} is not allowed: use https, loopback http, or a \
             reverse-domain private-use scheme"
        )),
    }
}

/// For `http://<loopback host>[:port]<rest>`, the host as written and the rest after the port.
fn loopback_authority(raw: &str) -> Option<(&str, &str)> {
    let after = raw.strip_prefix("http://")?;
    LOOPBACK_HOSTS.iter().find_map(|host| {
        let rest = after.strip_prefix(host)?;
        let rest = match rest.strip_prefix(':') {
            Some(port_and_rest) => {
                let digits = port_and_rest.bytes().take_while(u8::is_ascii_digit).count();
                // The port must fit in 16 bits: `:99999` is no URL, so no redirect to it exists.
                port_and_rest[..digits].parse::<u16>().ok()?;
                &port_and_rest[digits..]
            }
            None => rest,
        };
        (rest.is_empty() || rest.starts_with('/') || rest.starts_with('?')).then_some((*host, rest))
    })
}

/// Whether `requested` may be used where `registered` was registered.
pub fn matches(registered: &str, requested: &str) -> bool {
    if registered == requested {
        return true;
    }
    match (
        loopback_authority(registered),
        loopback_authority(requested),
    ) {
        (Some((host_a, rest_a)), Some((host_b, rest_b))) => {
            host_a == host_b && rest_a == rest_b && !requested.contains('#')
        }
        _ => false,
    }
}

/// Whether a redirect URI points back to this computer (shown on the consent page).
pub fn is_loopback(raw: &str) -> bool {
    loopback_authority(raw).is_some()
}

/// The host a person should recognise on the consent page: the URI's host, or its scheme for
/// private-use schemes.
pub fn display_host(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(url) => match url.host_str() {
            Some(host) if matches!(url.scheme(), "http" | "https") => host.to_owned(),
            Some(host) => format!("{}://{host}", url.scheme()),
            None => format!("{}:", url.scheme()),
        },
        Err(_) => raw.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_rules() {
        for ok in [
            "https://claude.ai/api/mcp/auth_callback",
            "https://chatgpt.com/connector_platform_oauth_redirect",
            "http://localhost:3334/callback",
            "http://127.0.0.1/callback",
            "http://127.0.0.1:33418/",
            "http://[::1]:8080/cb",
            "cursor://anysphere.cursor-mcp/oauth/callback",
            "com.example.app:/oauth2redirect",
            "https://vscode.dev/redirect",
        ] {
            assert_eq!(validate(ok), Ok(()), "{ok}");
        }
        for bad in [
            "http://example.com/cb",
            "http://127.0.0.1.evil.com/cb",
            "http://localhost.evil.com/cb",
            "https://claude.ai/cb#frag",
            "https://user:pw@claude.ai/cb",
            "https://user@claude.ai/cb",
            "javascript:alert(1)",
            "data:text/html,hi",
            "file:///etc/passwd",
            "/relative/callback",
            "callback",
            "",
            "myapp://callback",
            "https:///nohost",
        ] {
            assert!(validate(bad).is_err(), "{bad} accepted");
        }
        assert!(validate(&format!("https://a.example/{}", "x".repeat(MAX_LEN))).is_err());
    }

    #[test]
    fn loopback_port_is_ignored_and_nothing_else() {
        let registered = "http://127.0.0.1/cb";
        assert!(matches(registered, "http://127.0.0.1:53123/cb"));
        assert!(matches(registered, "http://127.0.0.1/cb"));
        assert!(!matches(registered, "http://127.0.0.1:53123/other"));
        assert!(!matches(registered, "http://localhost:53123/cb"));
        assert!(!matches(registered, "https://127.0.0.1:53123/cb"));
        assert!(!matches(registered, "http://127.0.0.1:53123/cb/"));
        assert!(!matches(registered, "http://127.0.0.1:53123/cb?x=1"));
        assert!(!matches(registered, "http://127.0.0.1:53123/cb#x"));
        assert!(!matches(registered, "http://127.0.0.1:/cb"));
        assert!(!matches(registered, "http://127.0.0.1:99999/cb"));
        assert!(!matches(registered, "http://127.0.0.1:65536/cb"));
        assert!(matches(registered, "http://127.0.0.1:65535/cb"));
        assert!(!matches(registered, "http://127.0.0.1:53123@evil.com/cb"));
        assert!(!matches(registered, "http://127.0.0.1.evil.com/cb"));
        assert!(matches(
            "http://localhost:3334/callback",
            "http://localhost:4000/callback"
        ));
    }

    #[test]
    fn everything_else_is_exact() {
        let registered = "https://claude.ai/api/mcp/auth_callback";
        assert!(matches(registered, registered));
        for near in [
            "https://claude.ai/api/mcp/auth_callback/",
            "https://claude.ai/api/mcp/auth_callback?x=1",
            "https://CLAUDE.ai/api/mcp/auth_callback",
            "https://claude.ai:443/api/mcp/auth_callback",
            "https://claude.ai/api/mcp/auth_callback.evil.com",
            "https://claude.ai/api/mcp/%61uth_callback",
            "https://claude.ai/api/mcp/x/../auth_callback",
            "https://claude.ai@evil.com/api/mcp/auth_callback",
            "https://claude.ai.evil.com/api/mcp/auth_callback",
            "http://claude.ai/api/mcp/auth_callback",
        ] {
            assert!(!matches(registered, near), "{near} matched");
        }
    }

    mod properties {
        use proptest::prelude::*;

        use super::super::*;

        fn host() -> impl Strategy<Value = String> {
            // No hyphens: `xn--` labels must be valid punycode, which a regex cannot promise.
            "[a-z][a-z0-9]{0,12}(\\.[a-z]{2,6}){1,2}"
        }

        fn path() -> impl Strategy<Value = String> {
            "(/[A-Za-z0-9._~-]{0,8}){0,4}"
        }

        fn query() -> impl Strategy<Value = String> {
            prop_oneof![Just(String::new()), "\\?[a-z]{1,5}=[a-z0-9]{0,5}"]
        }

        fn loopback_host() -> impl Strategy<Value = &'static str> {
            prop::sample::select(&["127.0.0.1", "[::1]", "localhost"][..])
        }

        fn port(port: Option<u16>) -> String {
            port.map(|p| format!(":{p}")).unwrap_or_default()
        }

        proptest! {
            /// An https redirect URI is accepted and matches itself and nothing else: any one
            /// character inserted, removed or replaced makes it a different, unmatched URI.
            #[test]
            fn https_matches_exactly(
                host in host(),
                path in path(),
                query in query(),
                at in any::<prop::sample::Index>(),
                c in any::<char>(),
                edit in 0u8..3,
            ) {
                let uri = format!("https://{host}{path}{query}");
                prop_assert_eq!(validate(&uri), Ok(()));
                prop_assert!(matches(&uri, &uri));
                prop_assert!(!is_loopback(&uri));
                prop_assert_eq!(display_host(&uri), host);
                let mut chars: Vec<char> = uri.chars().collect();
                let i = at.index(chars.len());
                match edit {
                    0 => chars.insert(i, c),
                    1 => { chars.remove(i); }
                    _ => chars[i] = c,
                }
                let near: String = chars.into_iter().collect();
                if near != uri {
                    prop_assert!(!matches(&uri, &near), "{} matched {}", uri, near);
                }
            }

            /// RFC 8252 §7.3: a loopback http redirect matches with any port, or none.
            #[test]
            fn loopback_port_is_free(
                host in loopback_host(),
                registered_port in any::<Option<u16>>(),
                requested_port in any::<Option<u16>>(),
                path in path(),
                query in query(),
            ) {
                let registered = format!("http://{host}{}{path}{query}", port(registered_port));
                let requested = format!("http://{host}{}{path}{query}", port(requested_port));
                prop_assert_eq!(validate(&registered), Ok(()));
                prop_assert!(is_loopback(&registered) && is_loopback(&requested));
                prop_assert!(matches(&registered, &requested));
            }

            /// ... and nothing but the port: another scheme, loopback host, path or query, a
            /// fragment, user information, or a port that is no port never matches.
            #[test]
            fn loopback_nothing_else_is_free(
                host in loopback_host(),
                other_host in loopback_host(),
                registered_port in any::<Option<u16>>(),
                requested_port in any::<u16>(),
                bad_port in 65536u32..1_000_000,
                path in path(),
                other_path in path(),
                query in query(),
                other_query in query(),
            ) {
                let registered = format!("http://{host}{}{path}{query}", port(registered_port));
                let p = port(Some(requested_port));
                let mut refused = vec![
                    format!("https://{host}{p}{path}{query}"),
                    format!("http://{host}{p}{path}{query}#x"),
                    format!("http://user@{host}{p}{path}{query}"),
                    format!("http://{host}{p}@evil.example{path}{query}"),
                    format!("http://{host}:{bad_port}{path}{query}"),
                    format!("http://{host}{p}{path}{query}/x"),
                ];
                if other_host != host {
                    refused.push(format!("http://{other_host}{p}{path}{query}"));
                }
                if other_path != path {
                    refused.push(format!("http://{host}{p}{other_path}{query}"));
                }
                if other_query != query {
                    refused.push(format!("http://{host}{p}{path}{other_query}"));
                }
                for requested in refused {
                    prop_assert!(!matches(&registered, &requested), "{} matched {}", registered, requested);
                }
            }

            /// http is refused on any host but the loopback ones, whatever its port.
            #[test]
            fn http_needs_loopback(host in host(), p in any::<Option<u16>>(), path in path()) {
                let uri = format!("http://{host}{}{path}", port(p));
                prop_assert!(validate(&uri).is_err());
                prop_assert!(!is_loopback(&uri));
            }
        }
    }

    #[test]
    fn display() {
        assert_eq!(
            display_host("https://claude.ai/api/mcp/auth_callback"),
            "claude.ai"
        );
        assert_eq!(display_host("http://127.0.0.1:5000/cb"), "127.0.0.1");
        assert_eq!(
            display_host("cursor://anysphere.cursor-mcp/oauth/callback"),
            "cursor://anysphere.cursor-mcp"
        );
        assert!(is_loopback("http://localhost:1/x") && !is_loopback("https://localhost/x"));
    }
}
