//! The product's JSON error body outside OAuth: `{"error": code, "message": text}`. The MCP
//! endpoint, the account API, the Add-On socket's refusals and the server's own limits all
//! answer with it; each contract owns its codes, this owns the shape.

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
