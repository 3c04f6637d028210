//! The two MCP scopes. `mcp:trade` implies `mcp:read`; a grant holds exactly one of them.
//! The OAuth server parses and grants them, the MCP server checks them per tool.

use std::fmt;

pub const READ: &str = "mcp:read";
pub const TRADE: &str = "mcp:trade";
/// What this server accepts in scope parameters but ignores: refresh tokens are always issued.
const IGNORED: &str = "offline_access";

/// The scope of one grant; `Trade` implies `Read`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    Read,
    Trade,
}

impl Scope {
    /// Parses a space-separated scope parameter (RFC 6749 §3.3): the widest scope asked for.
    /// Empty or absent means `mcp:read`; `offline_access` is ignored; anything else is refused.
    pub fn parse_request(raw: Option<&str>) -> Result<Self, String> {
        let mut widest = Scope::Read;
        for item in raw.unwrap_or("").split(' ').filter(|s| !s.is_empty()) {
            match item {
                READ | IGNORED => {}
                TRADE => widest = Scope::Trade,
                other => return Err(format!("unknown scope {other:?}")),
            }
        }
        Ok(widest)
    }

    /// The stored form: the one scope granted (also the `required` of the MCP 403 body).
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => READ,
            Scope::Trade => TRADE,
        }
    }

    /// The scope of a stored grant; `None` for anything else.
    pub fn from_stored(stored: &str) -> Option<Self> {
        match stored {
            READ => Some(Scope::Read),
            TRADE => Some(Scope::Trade),
            _ => None,
        }
    }

    /// The `scope` of tokens and token responses: every scope the grant carries.
    pub fn token_scope(self) -> &'static str {
        match self {
            Scope::Read => READ,
            Scope::Trade => "mcp:read mcp:trade",
        }
    }

    /// Whether a grant of `self` may use something that requires `other`.
    pub fn covers(self, other: Scope) -> bool {
        self >= other
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    mod properties {
        use proptest::prelude::*;

        use super::super::*;

        fn known() -> impl Strategy<Value = Vec<&'static str>> {
            prop::collection::vec(prop::sample::select(&[READ, TRADE, IGNORED][..]), 0..6)
        }

        /// Items joined by runs of spaces, with spaces before and after them too.
        fn spaced(items: &[&str], gaps: &[usize]) -> String {
            let mut out = String::new();
            for (i, item) in items.iter().enumerate() {
                out.push_str(&" ".repeat(gaps[i % gaps.len()]));
                out.push_str(item);
            }
            out.push_str(&" ".repeat(gaps[gaps.len() - 1]));
            out
        }

        proptest! {
            /// Order, extra spaces and repeats do not matter: the widest known scope wins.
            #[test]
            fn known_scopes_in_any_order_and_spacing(
                items in known(),
                gaps in prop::collection::vec(1usize..4, 7),
                shuffled in known().prop_shuffle(),
            ) {
                let raw = spaced(&items, &gaps);
                let expected = if items.contains(&TRADE) { Scope::Trade } else { Scope::Read };
                prop_assert_eq!(Scope::parse_request(Some(&raw)), Ok(expected));
                let mut reversed = items.clone();
                reversed.reverse();
                prop_assert_eq!(Scope::parse_request(Some(&reversed.join(" "))), Ok(expected));
                let expected = if shuffled.contains(&TRADE) { Scope::Trade } else { Scope::Read };
                prop_assert_eq!(Scope::parse_request(Some(&shuffled.join("  "))), Ok(expected));
            }

            /// One unknown scope anywhere refuses the whole request.
            #[test]
            fn an_unknown_scope_is_refused(
                items in known(),
                unknown in "[!-~]{1,16}",
                at in any::<prop::sample::Index>(),
            ) {
                prop_assume!(![READ, TRADE, IGNORED].contains(&unknown.as_str()));
                let mut items = items;
                items.insert(at.index(items.len() + 1), &unknown);
                prop_assert!(Scope::parse_request(Some(&items.join(" "))).is_err());
            }

            /// Only the space separates scopes (RFC 6749 §3.3): tabs, newlines, commas and
            /// pluses glue two scopes into one unknown one.
            #[test]
            fn other_separators_are_refused(
                a in prop::sample::select(&[READ, TRADE][..]),
                b in prop::sample::select(&[READ, TRADE][..]),
                separator in prop::sample::select(&["\t", "\n", ",", "+", "\u{a0}", "\u{3000}"][..]),
            ) {
                let raw = format!("{a}{separator}{b}");
                prop_assert!(Scope::parse_request(Some(&raw)).is_err());
            }

            /// Scope names are case-sensitive.
            #[test]
            fn case_matters(item in prop::sample::select(&[READ, TRADE][..]), mask in 1u32..256) {
                let changed: String = item
                    .chars()
                    .enumerate()
                    .map(|(i, c)| if mask & (1 << (i % 8)) != 0 { c.to_ascii_uppercase() } else { c })
                    .collect();
                prop_assume!(changed != item);
                prop_assert!(Scope::parse_request(Some(&changed)).is_err());
            }
        }
    }

    #[test]
    fn parsing() {
        assert_eq!(Scope::parse_request(None), Ok(Scope::Read));
        assert_eq!(Scope::parse_request(Some("")), Ok(Scope::Read));
        assert_eq!(
            Scope::parse_request(Some("mcp:read mcp:trade")),
            Ok(Scope::Trade)
        );
        assert_eq!(Scope::parse_request(Some("mcp:trade")), Ok(Scope::Trade));
        assert_eq!(
            Scope::parse_request(Some("mcp:read offline_access")),
            Ok(Scope::Read)
        );
        assert!(Scope::parse_request(Some("mcp:read admin")).is_err());
        assert!(Scope::Trade.covers(Scope::Read) && !Scope::Read.covers(Scope::Trade));
        assert_eq!(Scope::Trade.token_scope(), "mcp:read mcp:trade");
    }

    #[test]
    fn trade_covers_read() {
        assert!(Scope::Trade.covers(Scope::Read));
        assert!(Scope::Trade.covers(Scope::Trade));
        assert!(Scope::Read.covers(Scope::Read));
        assert!(!Scope::Read.covers(Scope::Trade));
    }
}
