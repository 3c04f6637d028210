//! The README's generated tables (tools from the catalog, OAuth error codes from their table)
//! must not drift from the code.

const START: &str = "<!-- tools:start -->\n";
const END: &str = "<!-- tools:end -->";

#[test]
fn readme_tool_table_matches_the_catalog() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");
    let readme = std::fs::read_to_string(path).unwrap();
    let start = readme.find(START).expect("tools:start marker") + START.len();
    let end = readme.find(END).expect("tools:end marker");
    let expected = mcp::tool_table_markdown();
    assert!(
        readme[start..end] == expected,
        "README's tool table is out of date; replace it with:\n{expected}"
    );
}

const CODES_START: &str = "<!-- oauth-errors:start -->\n";
const CODES_END: &str = "<!-- oauth-errors:end -->";

#[test]
fn readme_oauth_error_table_matches_the_code_table() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");
    let readme = std::fs::read_to_string(path).unwrap();
    let start = readme.find(CODES_START).expect("oauth-errors:start marker") + CODES_START.len();
    let end = readme.find(CODES_END).expect("oauth-errors:end marker");
    let expected = oauth::error::code_table_markdown();
    assert!(
        readme[start..end] == expected,
        "README's OAuth error table is out of date; replace it with:\n{expected}"
    );
}
