//! `repos list|add|remove` and `analysis REPO`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use orchex_core::{AnalysisReport, RepoId, Timestamp};
use serde_json::{Value, json};

use super::{Ctx, print_json};
use crate::cli::ReposCommand;
use crate::client::{ClientError, encode};
use crate::output::{self, Cell, Mode, Style, Table, key_values, score, text};

/// `orchexctl repos ...`.
pub(crate) fn repos(ctx: &Ctx, command: ReposCommand) -> anyhow::Result<ExitCode> {
    let mode = ctx.mode("repos")?;
    let client = ctx.client()?;
    match command {
        ReposCommand::List => {
            let value = client.get("/api/repositories", &[])?;
            let items = value
                .get("items")
                .and_then(Value::as_array)
                .cloned()
                .ok_or_else(|| ClientError::invalid("/api/repositories", "no `items` array"))?;
            match mode {
                Mode::Json => print_json(&Value::Array(items)),
                Mode::Table => {
                    if items.is_empty() {
                        output::print("no repositories\n")?;
                    } else {
                        output::print(&repos_table(&items, ctx.style))?;
                    }
                    Ok(ExitCode::SUCCESS)
                }
            }
        }
        ReposCommand::Add { name, path, branch } => {
            let body = add_body(&name, &path, branch.as_deref())?;
            let value = client.post("/api/repositories", Some(&body))?;
            match mode {
                Mode::Json => print_json(&value),
                Mode::Table => {
                    output::print(&format!(
                        "added repository {} ({})\n",
                        text(value.get("name")),
                        text(value.get("path"))
                    ))?;
                    Ok(ExitCode::SUCCESS)
                }
            }
        }
        ReposCommand::Remove { name } => {
            let path = format!("/api/repositories/{}", encode(name.as_str()));
            let value = client.delete(&path)?;
            match mode {
                Mode::Json => print_json(&value),
                Mode::Table => {
                    output::print(&format!("removed repository {name}\n"))?;
                    Ok(ExitCode::SUCCESS)
                }
            }
        }
    }
}

/// The body of `POST /api/repositories`. The path is made absolute and
/// canonical here because the daemon resolves paths against its own
/// working directory, not the caller's.
pub(crate) fn add_body(name: &RepoId, path: &Path, branch: Option<&str>) -> anyhow::Result<Value> {
    let absolute = std::fs::canonicalize(path)
        .with_context(|| format!("cannot resolve repository path {}", path.display()))?;
    let absolute = absolute
        .to_str()
        .with_context(|| format!("{} is not valid UTF-8", absolute.display()))?;
    let mut body = json!({"name": name.as_str(), "path": absolute});
    if let Some(branch) = branch {
        body["branch"] = json!(branch);
    }
    Ok(body)
}

/// The repositories as a table.
pub(crate) fn repos_table(items: &[Value], style: Style) -> String {
    let mut table = Table::new(&[
        "NAME",
        "BRANCH",
        "ENABLED",
        "WATCHER",
        "HEALTH",
        "COMPLEXITY",
        "PIPELINES",
        "PATH",
    ])
    .right_aligned(&[4, 5]);
    for repo in items {
        let watcher = text(repo.pointer("/watcher/state"));
        let watcher_color = match watcher.as_str() {
            "watching" | "polling" => Some(output::Color::Green),
            "error" => Some(output::Color::Red),
            "disabled" | "unknown" => Some(output::Color::Dim),
            _ => None,
        };
        let enabled = match repo.get("enabled").and_then(Value::as_bool) {
            Some(true) => "yes",
            Some(false) => "no",
            None => "-",
        };
        let pipelines: Vec<String> = repo
            .get("pipelines")
            .and_then(Value::as_array)
            .map(|names| names.iter().map(|n| text(Some(n))).collect())
            .unwrap_or_default();
        table.row(vec![
            text(repo.get("name")).into(),
            text(repo.get("branch")).into(),
            enabled.into(),
            Cell::colored(watcher, watcher_color),
            score(repo.pointer("/analysis/health")).into(),
            score(repo.pointer("/analysis/complexity")).into(),
            if pipelines.is_empty() {
                "-".to_owned()
            } else {
                pipelines.join(",")
            }
            .into(),
            text(repo.get("path")).into(),
        ]);
    }
    table.render(style)
}

/// `orchexctl analysis REPO`.
pub(crate) fn analysis(ctx: &Ctx, repo: &RepoId) -> anyhow::Result<ExitCode> {
    let mode = ctx.mode("analysis")?;
    let path = format!("/api/repositories/{}/analysis", encode(repo.as_str()));
    let value = ctx.client()?.get(&path, &[])?;
    match mode {
        Mode::Json => print_json(&value),
        Mode::Table => {
            let report: AnalysisReport =
                serde_json::from_value(value).map_err(|err| ClientError::invalid(&path, err))?;
            output::print(&render_analysis(&report, ctx.style, Timestamp::now()))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// An analysis report: the scores, lines per language, then the hotspots.
pub(crate) fn render_analysis(report: &AnalysisReport, style: Style, now: Timestamp) -> String {
    let mut out = key_values(&[
        ("repo", report.repo.to_string()),
        (
            "commit",
            report.commit.clone().unwrap_or_else(|| "-".to_owned()),
        ),
        (
            "computed",
            format!(
                "{} ({} ago, took {})",
                output::timestamp(report.computed_at),
                output::age(report.computed_at, now),
                output::duration_ms(report.duration_ms)
            ),
        ),
        ("health", format!("{:.2}", report.health)),
        ("complexity", format!("{:.2}", report.complexity)),
        ("chaos", format!("{:.2}", report.chaos)),
        ("code lines", report.total_code_lines().to_string()),
    ]);
    if !report.loc_by_language.is_empty() {
        let mut languages: Vec<_> = report.loc_by_language.iter().collect();
        // Biggest first: that is what a reader looks for.
        languages.sort_by(|a, b| b.1.code.cmp(&a.1.code).then_with(|| a.0.cmp(b.0)));
        let mut table = Table::new(&["LANGUAGE", "FILES", "CODE", "COMMENTS", "BLANKS"])
            .right_aligned(&[1, 2, 3, 4]);
        for (language, stats) in languages {
            table.row(vec![
                language.as_str().into(),
                stats.files.to_string().into(),
                stats.code.to_string().into(),
                stats.comments.to_string().into(),
                stats.blanks.to_string().into(),
            ]);
        }
        out.push('\n');
        out.push_str(&table.render(style));
    }
    if !report.hotspots.is_empty() {
        let mut table =
            Table::new(&["HOTSPOT", "CHANGES", "COMPLEXITY", "SCORE"]).right_aligned(&[1, 2, 3]);
        for hotspot in &report.hotspots {
            table.row(vec![
                hotspot.path.as_str().into(),
                hotspot.changes.to_string().into(),
                format!("{:.2}", hotspot.complexity).into(),
                format!("{:.2}", hotspot.score).into(),
            ]);
        }
        out.push('\n');
        out.push_str(&table.render(style));
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    const PLAIN: Style = Style { color: false };

    #[test]
    fn add_sends_the_canonical_absolute_path() {
        let dir = std::env::temp_dir();
        let relative = Path::new(".");
        let body = add_body(&RepoId::new("api").unwrap(), relative, Some("main")).unwrap();
        let sent = body["path"].as_str().unwrap();
        assert!(Path::new(sent).is_absolute(), "{sent}");
        assert_eq!(
            Path::new(sent),
            std::fs::canonicalize(".").unwrap().as_path()
        );
        assert_eq!(body["branch"], "main");
        assert!(body.get("enabled").is_none());
        let missing = dir.join("orchexctl-no-such-dir-for-test");
        assert!(add_body(&RepoId::new("api").unwrap(), &missing, None).is_err());
    }

    #[test]
    fn repositories_render_as_a_table() {
        let items = vec![
            json!({
                "name": "api", "path": "/src/api", "branch": "main", "enabled": true,
                "watcher": {"state": "watching", "watchedDirs": 12},
                "analysis": {"complexity": 0.314, "chaos": 0.1, "health": 0.9},
                "pipelines": ["fmt", "gen"]
            }),
            json!({"name": "web", "path": "/src/web", "enabled": false,
                   "watcher": {"state": "disabled"}, "pipelines": []}),
        ];
        assert_eq!(
            repos_table(&items, PLAIN),
            "NAME  BRANCH  ENABLED  WATCHER   HEALTH  COMPLEXITY  PIPELINES  PATH\n\
             api   main    yes      watching    0.90        0.31  fmt,gen    /src/api\n\
             web   -       no       disabled       -           -  -          /src/web\n"
        );
    }

    #[test]
    fn analysis_reports_render_scores_languages_and_hotspots() {
        let report: AnalysisReport = serde_json::from_value(json!({
            "repo": "api", "computedAt": "2025-01-31T11:00:00Z",
            "locByLanguage": {
                "Rust": {"files": 10, "code": 1000, "comments": 100, "blanks": 50},
                "TOML": {"files": 2, "code": 40, "comments": 5, "blanks": 3}
            },
            "complexity": 0.25, "chaos": 0.5, "health": 0.75,
            "hotspots": [{"path": "src/lib.rs", "changes": 12, "complexity": 0.6, "score": 0.8}],
            "durationMs": 120
        }))
        .unwrap();
        let now = "2025-01-31T12:00:00Z".parse().unwrap();
        let text = render_analysis(&report, PLAIN, now);
        assert!(
            text.contains("computed    2025-01-31T11:00:00Z (1h ago, took 120ms)\n"),
            "{text}"
        );
        assert!(text.contains("code lines  1040\n"), "{text}");
        assert!(
            text.contains("Rust         10  1000       100      50\n"),
            "{text}"
        );
        assert!(text.find("Rust").unwrap() < text.find("TOML").unwrap());
        assert!(
            text.contains("src/lib.rs       12        0.60   0.80\n"),
            "{text}"
        );
    }
}
