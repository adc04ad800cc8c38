//! The set of keys the configuration understands, derived from the schema
//! types themselves, used to reject unknown keys with a suggestion and to map
//! environment variable names onto camelCase keys.
//!
//! The key tree is the serialisation of a configuration in which every
//! optional field is set, so it cannot drift from the types in `orchex-core`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::LazyLock;

use orchex_core::config::{Notification, Secret};
use orchex_core::{Config, EventKind, Pipeline, RepoId, Repository, Step};
use serde_json::Value;

use crate::error::Issue;

/// Keys whose values are free-form tables: their children are not checked.
const FREE_TABLES: &[&str] = &["with", "env"];

static KEY_TREE: LazyLock<Value> =
    LazyLock::new(|| serde_json::to_value(fully_populated()).unwrap_or(Value::Null));

/// Every field name of the schema, keyed by its normalised form
/// (lowercase, no underscores), to map `ORCHEX_A__B_C` onto `a.bC`.
static FIELD_NAMES: LazyLock<BTreeMap<String, String>> = LazyLock::new(|| {
    let mut names = BTreeMap::new();
    collect_names(&KEY_TREE, &mut names);
    names
});

fn collect_names(value: &Value, names: &mut BTreeMap<String, String>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                names.insert(normalise(key), key.clone());
                if !FREE_TABLES.contains(&key.as_str()) {
                    collect_names(child, names);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| collect_names(item, names)),
        _ => {}
    }
}

fn normalise(key: &str) -> String {
    key.chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

/// A configuration with every optional field set and one entry in every
/// list, so that its serialisation names every key.
fn fully_populated() -> Config {
    let mut config = Config::default();
    config.dashboard.auth_token = Some(Secret::new("x"));
    config.dashboard.auth_token_file = Some(PathBuf::from("/x"));
    config.dashboard.read_only_token = Some(Secret::new("x"));
    config.dashboard.webhook_secret = Some(Secret::new("x"));
    config.dashboard.webhook_secret_file = Some(PathBuf::from("/x"));
    config.dashboard.cors_origins = vec!["http://x".into()];
    config.monitor.filesystem.ignore = vec!["x".into()];
    if let Ok(name) = RepoId::new("x") {
        config.repositories.push(Repository {
            name,
            path: PathBuf::from("/x"),
            enabled: true,
            branch: Some("main".into()),
        });
    }
    let step = Step {
        name: "x".into(),
        run: Some(vec!["x".into()]),
        webhook: Some("http://x".into()),
        uses: Some("x".into()),
        with: BTreeMap::from([("x".to_owned(), Value::Null)]),
        env: BTreeMap::from([("x".to_owned(), "x".to_owned())]),
        timeout_secs: Some(1),
    };
    let mut pipeline = Pipeline::new("x", vec![step.clone()]);
    pipeline.validate = vec![step];
    pipeline.commit.branch = Some("x".into());
    pipeline.commit.message = Some("x".into());
    config.pipelines.push(pipeline);
    config.notifications.push(Notification {
        url: "http://x".into(),
        on: vec![EventKind::JobFailed],
    });
    config
}

/// Maps an environment key (prefix stripped, lowercase, `__` between
/// levels) onto the dotted camelCase key path it addresses. Segments that
/// match no known field are kept as written, so that validation reports them.
///
/// `optimizer__safety__rate_limit_per_hour` and
/// `OPTIMIZER__SAFETY__RATELIMITPERHOUR` both give
/// `optimizer.safety.rateLimitPerHour`.
pub(crate) fn env_key_to_path(key: &str) -> String {
    key.split("__")
        .map(|segment| {
            FIELD_NAMES
                .get(&normalise(segment))
                .cloned()
                .unwrap_or_else(|| segment.to_lowercase())
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// Reports every key of `value` that the schema does not know, with a
/// suggestion where a known key is close, and removes them so that the rest
/// can still be decoded and validated.
pub(crate) fn take_unknown_keys(value: &mut Value) -> Vec<Issue> {
    let mut issues = Vec::new();
    walk(value, &KEY_TREE, "", &mut issues);
    issues
}

fn walk(value: &mut Value, schema: &Value, path: &str, issues: &mut Vec<Issue>) {
    match (value, schema) {
        (Value::Object(map), Value::Object(known)) => {
            let mut unknown = Vec::new();
            for (key, child) in map.iter_mut() {
                let child_path = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match known.get(key) {
                    Some(_) if FREE_TABLES.contains(&key.as_str()) => {}
                    Some(child_schema) => walk(child, child_schema, &child_path, issues),
                    None => {
                        issues.push(Issue::new(
                            child_path,
                            unknown_key_message(key, known.keys().map(String::as_str)),
                        ));
                        unknown.push(key.clone());
                    }
                }
            }
            for key in unknown {
                map.remove(&key);
            }
        }
        (Value::Array(items), Value::Array(known)) => {
            if let Some(item_schema) = known.first() {
                for (index, item) in items.iter_mut().enumerate() {
                    walk(item, item_schema, &format!("{path}[{index}]"), issues);
                }
            }
        }
        // Type mismatches are reported by deserialisation, with the key.
        _ => {}
    }
}

fn unknown_key_message<'a>(key: &str, known: impl Iterator<Item = &'a str> + Clone) -> String {
    if let Some(suggestion) = suggest(key, known.clone()) {
        format!("unknown key, did you mean `{suggestion}`?")
    } else {
        let expected: BTreeSet<&str> = known.collect();
        let expected: Vec<&str> = expected.into_iter().collect();
        format!("unknown key; expected one of: {}", expected.join(", "))
    }
}

/// The known key closest to `key`, if one is close enough to be a typo or a
/// different spelling (snake_case, other letter case).
pub(crate) fn suggest<'a>(key: &str, known: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let wanted = normalise(key);
    let mut best: Option<(&str, usize)> = None;
    for candidate in known {
        if normalise(candidate) == wanted {
            return Some(candidate);
        }
        let distance = strsim::damerau_levenshtein(&wanted, &normalise(candidate));
        let limit = (candidate.len() / 3).max(2);
        if distance <= limit && best.is_none_or(|(_, d)| distance < d) {
            best = Some((candidate, distance));
        }
    }
    best.map(|(candidate, _)| candidate)
}

/// Every dotted key path of the schema (list entries as `name[].key`),
/// excluding the children of free tables.
#[cfg(test)]
fn all_key_paths() -> Vec<String> {
    fn collect(value: &Value, path: &str, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (key, child) in map {
                    let child_path = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    out.push(child_path.clone());
                    if !FREE_TABLES.contains(&key.as_str()) {
                        collect(child, &child_path, out);
                    }
                }
            }
            Value::Array(items) => {
                if let Some(first) = items.first() {
                    collect(first, &format!("{path}[]"), out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    collect(&KEY_TREE, "", &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/config.md must document every key the schema knows.
    #[test]
    fn docs_config_md_documents_every_key() {
        let docs =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/config.md"))
                .unwrap();
        let mut missing = Vec::new();
        for path in all_key_paths() {
            let leaf = path.rsplit(['.', ']']).next().unwrap_or(&path);
            // `commit.branch` is documented with its parent's name.
            // Tables are documented by their heading, `[section]` or `[[list]]`.
            let documented = docs.contains(&format!("`{leaf}`"))
                || docs.contains(&format!("`commit.{leaf}`"))
                || docs.contains(&format!("[{}", path.replace("[]", "")));
            if !documented {
                missing.push(path);
            }
        }
        assert!(
            missing.is_empty(),
            "undocumented keys in docs/config.md: {missing:?}"
        );
    }

    #[test]
    fn the_key_tree_names_optional_and_nested_keys() {
        let tree = &*KEY_TREE;
        assert!(tree["dashboard"].get("authTokenFile").is_some());
        assert!(
            tree["pipelines"][0]["steps"][0]
                .get("timeoutSecs")
                .is_some()
        );
        assert!(tree["pipelines"][0]["commit"].get("branch").is_some());
    }

    #[test]
    fn env_keys_map_to_camel_case() {
        assert_eq!(env_key_to_path("dashboard__port"), "dashboard.port");
        assert_eq!(
            env_key_to_path("optimizer__safety__rate_limit_per_hour"),
            "optimizer.safety.rateLimitPerHour"
        );
        assert_eq!(
            env_key_to_path("optimizer__safety__ratelimitperhour"),
            "optimizer.safety.rateLimitPerHour"
        );
        assert_eq!(env_key_to_path("dashboard__prot"), "dashboard.prot");
    }

    #[test]
    fn suggestions_cover_typos_and_spellings() {
        let known = ["rateLimitPerHour", "circuitBreakerThreshold"];
        assert_eq!(
            suggest("rateLimitPerHuor", known.iter().copied()),
            Some("rateLimitPerHour")
        );
        assert_eq!(
            suggest("rate_limit_per_hour", known.iter().copied()),
            Some("rateLimitPerHour")
        );
        assert_eq!(suggest("colour", known.iter().copied()), None);
    }

    #[test]
    fn free_tables_are_not_checked() {
        let mut value = serde_json::json!({
            "pipelines": [{"steps": [{"with": {"anything": 1}, "env": {"X": "y"}}]}]
        });
        assert!(take_unknown_keys(&mut value).is_empty());
    }

    #[test]
    fn unknown_keys_are_all_reported_with_paths() {
        let mut value = serde_json::json!({
            "dashbord": {},
            "optimizer": {"safety": {"rateLimitPerHuor": 3}},
            "pipelines": [{}, {"stepz": []}]
        });
        let issues = take_unknown_keys(&mut value);
        assert!(value.get("dashbord").is_none());
        let keys: Vec<&str> = issues.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(
            keys,
            vec![
                "dashbord",
                "optimizer.safety.rateLimitPerHuor",
                "pipelines[1].stepz"
            ]
        );
        assert!(issues[0].message.contains("did you mean `dashboard`"));
    }
}
