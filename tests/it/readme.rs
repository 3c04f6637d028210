//! The README's generated tables (tools from the catalog, the error codes of each JSON contract
//! from their tables) must not drift from the code.

/// The README's text between `<!-- {name}:start -->` and `<!-- {name}:end -->`.
fn generated(name: &str) -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");
    let readme = std::fs::read_to_string(path).unwrap();
    let start_marker = format!("<!-- {name}:start -->\n");
    let start = readme
        .find(&start_marker)
        .unwrap_or_else(|| panic!("{name}:start marker"))
        + start_marker.len();
    let end = readme
        .find(&format!("<!-- {name}:end -->"))
        .unwrap_or_else(|| panic!("{name}:end marker"));
    readme[start..end].to_owned()
}

#[test]
fn readme_tool_table_matches_the_catalog() {
    let expected = mcp::tool_table_markdown();
    assert!(
        generated("tools") == expected,
        "README's tool table is out of date; replace it with:\n{expected}"
    );
}

#[test]
fn readme_oauth_error_table_matches_the_code_table() {
    let expected = oauth::error::code_table_markdown();
    assert!(
        generated("oauth-errors") == expected,
        "README's OAuth error table is out of date; replace it with:\n{expected}"
    );
}

#[test]
fn readme_mcp_error_table_matches_the_code_table() {
    let expected = mcp::error::code_table_markdown();
    assert!(
        generated("mcp-errors") == expected,
        "README's MCP error table is out of date; replace it with:\n{expected}"
    );
}

#[test]
fn readme_account_api_error_table_matches_the_code_table() {
    let expected = oauth::account::api::code_table_markdown();
    assert!(
        generated("account-errors") == expected,
        "README's account API error table is out of date; replace it with:\n{expected}"
    );
}
