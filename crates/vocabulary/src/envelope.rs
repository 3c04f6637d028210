//! The product's JSON error body outside OAuth: `{"error": code, "message": text}`. The MCP
//! endpoint, the account API, the Add-On socket's refusals and the server's own limits all
//! answer with it; each contract owns its codes, this owns the shape.

use std::fmt::Write as _;

/// `{"error": …, "message": …}`: a stable machine code and a sentence for a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ErrorBody<'a> {
    pub error: &'a str,
    pub message: &'a str,
}

impl<'a> ErrorBody<'a> {
    pub fn new(error: &'a str, message: &'a str) -> Self {
        Self { error, message }
    }
}

/// One wire contract's error codes: each a row of its table (code, HTTP status, when it is
/// sent), from which the responses and the README's table are both built.
pub trait ErrorCodeTable: Copy + 'static {
    /// Every code, in the order the README lists them.
    const ALL: &'static [Self];
    fn code(self) -> &'static str;
    fn status(self) -> u16;
    fn meaning(self) -> &'static str;
}

/// The Markdown table of a contract's codes, as the README shows it.
pub fn code_table_markdown<C: ErrorCodeTable>() -> String {
    let mut out = String::from("| `error` | status | when |\n|---|---|---|\n");
    for code in C::ALL {
        let _ = writeln!(
            out,
            "| `{}` | {} | {} |",
            code.code(),
            code.status(),
            code.meaning()
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shape() {
        let body = serde_json::to_value(ErrorBody::new("server_error", "retry")).unwrap();
        assert_eq!(
            body,
            serde_json::json!({ "error": "server_error", "message": "retry" })
        );
    }
}
