//! The compose file configures the server only through real configuration keys.

use std::collections::BTreeSet;

fn config_keys(table: &toml::Table, prefix: &str, into: &mut BTreeSet<String>) {
    for (key, value) in table {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match value {
            toml::Value::Table(inner) => config_keys(inner, &path, into),
            _ => {
                into.insert(path);
            }
        }
    }
}

#[test]
fn every_crosstrade_variable_in_compose_is_a_config_key() {
    let defaults: toml::Table = crosstrade::config::DEFAULTS.parse().unwrap();
    let mut keys = BTreeSet::new();
    config_keys(&defaults, "", &mut keys);

    let compose =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docker-compose.yml"))
            .unwrap();
    let variables: Vec<&str> = compose
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("CROSSTRADE_"))
        .collect();
    assert!(
        variables.len() >= 3,
        "compose sets the server's configuration: {variables:?}"
    );
    for variable in variables {
        let key = variable
            .trim_start_matches("CROSSTRADE_")
            .to_ascii_lowercase()
            .replace("__", ".");
        assert!(
            keys.contains(&key),
            "{variable} is not a configuration key (known: {keys:?})"
        );
    }
}

#[test]
fn every_default_key_has_a_comment() {
    let mut previous = "";
    for line in crosstrade::config::DEFAULTS.lines() {
        let trimmed = line.trim();
        if !trimmed.is_empty() && !trimmed.starts_with('#') && !trimmed.starts_with('[') {
            assert!(
                previous.trim_start().starts_with('#'),
                "key without a comment: {trimmed}"
            );
        }
        previous = line;
    }
}
