//! The subscription tier of an account, as stored in `users.tier` and shown on the account page.

use std::fmt;
use std::str::FromStr;

/// Subscription tier. The MCP transport's `tools/call` requires [`Tier::Elite`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Standard,
    Pro,
    Elite,
}

impl Tier {
    pub const ALL: [Tier; 3] = [Tier::Standard, Tier::Pro, Tier::Elite];

    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Standard => "standard",
            Tier::Pro => "pro",
            Tier::Elite => "elite",
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// A tier name that is none of [`Tier::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown tier {0:?}: expected standard, pro or elite")]
pub struct UnknownTier(String);

impl FromStr for Tier {
    type Err = UnknownTier;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Tier::ALL
            .into_iter()
            .find(|tier| tier.as_str() == s)
            .ok_or_else(|| UnknownTier(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tier_round_trip() {
        for tier in Tier::ALL {
            assert_eq!(tier.as_str().parse::<Tier>().unwrap(), tier);
        }
        assert!("gold".parse::<Tier>().is_err());
    }
}
