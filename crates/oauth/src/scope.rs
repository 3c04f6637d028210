//! The two MCP scopes. `mcp:trade` implies `mcp:read`; a grant holds exactly one of them.

use std::fmt;

pub const READ: &str = "mcp:read";
pub const TRADE: &str = "mcp:trade";
/// What this server accepts in scope parameters but ignores: refresh tokens are always issued.
const IGNORED: &str = "offline_access";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    Read,
    Trade,
}

impl Scope {
    /// Parses a space-separated scope parameter: the widest scope asked for. Empty or absent
    /// means `mcp:read`; `offline_access` is ignored; anything else is refused.
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

    /// The stored form: the one scope granted.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => READ,
            Scope::Trade => TRADE,
        }
    }

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
}
