//! Property-driven fuzzing of the configuration loader: TOML and JSON
//! files made of arbitrary text, of known keys with values of every type,
//! and of mutations of the shipped examples. The loader must never panic:
//! every input loads or is refused with an error.
//!
//! `cargo test` runs a bounded number of cases; `just fuzz` runs it
//! for `ORCHEX_FUZZ_SECS` seconds (10 minutes by default there).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use orchex_config::Loader;
use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestRng, TestRunner};

const KEYS: &[&str] = &[
    "version",
    "protectedPaths",
    "optimizer.schedule.enabled",
    "optimizer.schedule.intervalMinutes",
    "optimizer.thresholds.chaosThreshold",
    "optimizer.thresholds.complexityThreshold",
    "optimizer.safety.rateLimitPerHour",
    "optimizer.safety.circuitBreakerThreshold",
    "optimizer.safety.circuitBreakerCooldownSecs",
    "optimizer.safety.jobTimeoutSecs",
    "orchestrator.autonomous",
    "orchestrator.maxConcurrent",
    "orchestrator.targetCycleMs",
    "orchestrator.queueCapacity",
    "orchestrator.healthCheckIntervalSecs",
    "monitor.filesystem.debounceMs",
    "monitor.filesystem.maxWaitMs",
    "monitor.filesystem.ignore",
    "monitor.triggers.minChangesThreshold",
    "monitor.analysis.cacheTtlSecs",
    "monitor.analysis.historyDays",
    "dashboard.port",
    "dashboard.bind",
    "dashboard.authToken",
    "dashboard.corsOrigins",
    "dashboard.telemetry.retentionPeriodDays",
    "storage.path",
    "repositories",
    "pipelines",
    "notifications",
    "nonsense.key",
];

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<u64>().prop_map(serde_json::Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(serde_json::Value::from),
        ".{0,12}".prop_map(serde_json::Value::from),
        Just(serde_json::Value::from("**/[")),
        Just(serde_json::Value::from("/tmp")),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    Just("name".to_owned()),
                    Just("path".to_owned()),
                    Just("run".to_owned()),
                    Just("steps".to_owned()),
                    Just("triggers".to_owned()),
                    Just("url".to_owned()),
                    Just("on".to_owned()),
                    "[a-zA-Z]{1,8}",
                ],
                inner,
                0..4
            )
            .prop_map(|map| serde_json::Value::Object(map.into_iter().collect())),
        ]
    })
}

fn set_path(root: &mut serde_json::Value, path: &str, value: serde_json::Value) {
    let mut node = root;
    let parts: Vec<&str> = path.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        if !node.is_object() {
            *node = serde_json::json!({});
        }
        let map = node.as_object_mut().unwrap();
        if i + 1 == parts.len() {
            map.insert((*part).to_owned(), value);
            return;
        }
        node = map
            .entry((*part).to_owned())
            .or_insert_with(|| serde_json::json!({}));
    }
}

/// A configuration document: known keys with values of any type.
fn structured() -> impl Strategy<Value = serde_json::Value> {
    prop::collection::vec((prop::sample::select(KEYS), json_value()), 0..8).prop_map(|pairs| {
        let mut root = serde_json::json!({"version": 2});
        for (key, value) in pairs {
            set_path(&mut root, key, value);
        }
        root
    })
}

fn examples() -> Vec<String> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config");
    ["orchex.toml", "examples/full.toml", "examples/spec-v2.toml"]
        .iter()
        .filter_map(|name| std::fs::read_to_string(format!("{root}/{name}")).ok())
        .collect()
}

/// A shipped example with a few characters replaced, lines dropped or
/// repeated.
fn mutated(examples: Vec<String>) -> impl Strategy<Value = String> {
    (
        prop::sample::select(examples),
        prop::collection::vec((any::<prop::sample::Index>(), 0u8..4, any::<char>()), 1..6),
    )
        .prop_map(|(text, edits)| {
            let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
            for (index, kind, c) in edits {
                if lines.is_empty() {
                    break;
                }
                let at = index.index(lines.len());
                match kind {
                    0 => {
                        lines.remove(at);
                    }
                    1 => {
                        let copy = lines[at].clone();
                        lines.insert(at, copy);
                    }
                    2 => {
                        let line = &mut lines[at];
                        let chars: Vec<char> = line.chars().collect();
                        if !chars.is_empty() {
                            let i = index.index(chars.len());
                            let mut edited: String = chars[..i].iter().collect();
                            edited.push(c);
                            edited.extend(&chars[i + 1..]);
                            *line = edited;
                        }
                    }
                    _ => lines[at] = lines[at].replace('=', "= -"),
                }
            }
            lines.join("\n")
        })
}

#[derive(Debug, Clone)]
enum Input {
    Toml(String),
    Json(String),
}

fn inputs() -> impl Strategy<Value = Input> {
    prop_oneof![
        ".{0,200}".prop_map(Input::Toml),
        ".{0,200}".prop_map(Input::Json),
        structured().prop_map(|v| Input::Json(v.to_string())),
        structured().prop_map(|v| Input::Toml(toml::to_string(&v).unwrap_or_default())),
        mutated(examples()).prop_map(Input::Toml),
    ]
}

fn load(dir: &std::path::Path, input: &Input) {
    let (name, text) = match input {
        Input::Toml(text) => ("orchex.toml", text),
        Input::Json(text) => ("orchex.json", text),
    };
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    // Loading either works or reports an error; it never panics, and an
    // error always has a message.
    if let Err(err) = Loader::new(&path).without_env().load() {
        assert!(!err.to_string().is_empty());
    }
}

fn fuzz_budget() -> Option<Duration> {
    std::env::var("ORCHEX_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs)
}

#[test]
fn the_loader_never_panics_on_any_file() {
    let dir = tempfile::tempdir().unwrap();
    let strategy = inputs();
    let deadline = fuzz_budget().map(|budget| Instant::now() + budget);
    let mut round: u64 = 0;
    let mut cases: u64 = 0;
    loop {
        let seed = round.to_le_bytes().repeat(4);
        let mut runner = TestRunner::new_with_rng(
            RunnerConfig {
                cases: if deadline.is_some() { 2_000 } else { 400 },
                failure_persistence: None,
                ..RunnerConfig::default()
            },
            TestRng::from_seed(proptest::test_runner::RngAlgorithm::ChaCha, &seed),
        );
        runner
            .run(&strategy, |input| {
                load(dir.path(), &input);
                Ok(())
            })
            .unwrap();
        cases += u64::from(runner.config().cases);
        round += 1;
        match deadline {
            Some(deadline) if Instant::now() < deadline => {}
            _ => break,
        }
    }
    eprintln!("config loader: {cases} cases without a panic");
}
