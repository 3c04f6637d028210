//! The README's tool list is generated from the catalog and must not drift from it.

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
