//! History analysis of a 10,000-commit repository (generated with
//! `git fast-import`), next to `git log --numstat` (and `--name-only`)
//! parsed into the same per-file change counts.
//!
//! The counts of every variant are checked to be identical before anything
//! is timed. `orchex history` is the history part of the analysis
//! (`orchex_git::GitRepo::change_history`, what the monitor calls);
//! `orchex analysis` is the whole cold analysis (history, tree walk, tokei,
//! indentation), without the cache.
//!
//! `cargo bench -p orchex-benches --bench monitor_history`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const COMMITS: usize = 10_000;
const FILES: usize = 2_000;
const DIRS: usize = 50;
const RUNS: usize = 5;

fn file_path(index: usize) -> String {
    format!("src/m{:02}/f{index:04}.rs", index % DIRS)
}

fn generate(root: &Path, now: i64) {
    assert!(
        Command::new("git")
            .args(["init", "-q"])
            .arg(root)
            .status()
            .unwrap()
            .success()
    );
    let mut import = Command::new("git")
        .arg("-C")
        .arg(root)
        .args(["fast-import", "--quiet"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stream = std::io::BufWriter::new(import.stdin.take().unwrap());
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        // xorshift64: reproducible without a dependency.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let start = now - i64::try_from(COMMITS).unwrap() * 60;
    for commit in 0..COMMITS {
        let when = start + i64::try_from(commit).unwrap() * 60;
        let message = format!("commit {commit}");
        writeln!(stream, "commit refs/heads/main").unwrap();
        writeln!(
            stream,
            "committer bench <bench@example.invalid> {when} +0000"
        )
        .unwrap();
        writeln!(stream, "data {}\n{message}", message.len()).unwrap();
        let touched: Vec<usize> = if commit == 0 {
            (0..FILES).collect()
        } else {
            #[allow(clippy::cast_possible_truncation)]
            let n = 1 + (next() % 5) as usize;
            #[allow(clippy::cast_possible_truncation)]
            (0..n).map(|_| (next() % FILES as u64) as usize).collect()
        };
        for index in touched {
            let content =
                format!("fn f{index}() {{\n    if x {{\n        y({commit});\n    }}\n}}\n");
            writeln!(stream, "M 100644 inline {}", file_path(index)).unwrap();
            writeln!(stream, "data {}\n{content}", content.len()).unwrap();
        }
        writeln!(stream).unwrap();
    }
    drop(stream);
    assert!(import.wait().unwrap().success());
    assert!(
        Command::new("git")
            .arg("-C")
            .arg(root)
            .args(["checkout", "-q", "main"])
            .status()
            .unwrap()
            .success()
    );
}

fn git_log_counts(root: &Path, since: i64, numstat: bool) -> BTreeMap<String, u64> {
    let output = Command::new("git")
        .arg("-C")
        .arg(root)
        .args([
            "log",
            "--no-merges",
            "--no-renames",
            if numstat { "--numstat" } else { "--name-only" },
            "--format=@%H",
            &format!("--since={since}"),
            "main",
        ])
        .output()
        .unwrap();
    assert!(output.status.success());
    let mut counts = BTreeMap::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        if line.is_empty() || line.starts_with('@') {
            continue;
        }
        let path = if numstat {
            line.splitn(3, '\t').nth(2).unwrap_or(line)
        } else {
            line
        };
        *counts.entry(path.to_owned()).or_insert(0) += 1;
    }
    counts
}

fn time<T>(mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut samples = Vec::new();
    let mut last = None;
    for _ in 0..RUNS {
        let started = Instant::now();
        let value = f();
        samples.push(started.elapsed());
        last = Some(value);
    }
    samples.sort();
    (samples[RUNS / 2], last.unwrap())
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("monitor_history: bench");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    let now = jiff::Timestamp::now();
    let started = Instant::now();
    generate(&root, now.as_second());
    println!(
        "repository: {COMMITS} commits (linear, 1-5 files each), {FILES} files in {DIRS} \
         directories, generated with git fast-import in {:.1}s; median of {RUNS} runs",
        started.elapsed().as_secs_f64()
    );
    let since_ts = now - jiff::SignedDuration::from_hours(24 * 90);
    let since = since_ts.as_second();

    let repo = orchex_git::GitRepo::open(&root).unwrap();
    let tip = repo.head().unwrap().oid.unwrap();
    let (orchex_time, history) = time(|| repo.change_history(tip, since_ts).unwrap());
    let (numstat_time, numstat) = time(|| git_log_counts(&root, since, true));
    let (names_time, names) = time(|| git_log_counts(&root, since, false));
    assert_eq!(
        history.per_file, numstat,
        "same counts as git log --numstat"
    );
    assert_eq!(
        history.per_file, names,
        "same counts as git log --name-only"
    );
    assert_eq!(history.commits, u64::try_from(COMMITS).unwrap());

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let repo_id = orchex_core::RepoId::new("history").unwrap();
    let (analysis_time, report) = time(|| {
        // A fresh analyzer each time: a cold analysis, no cache.
        let analyzer = orchex_monitor::Analyzer::new(orchex_monitor::AnalyzerOptions::default());
        runtime.block_on(analyzer.analyse(&repo_id, &root)).unwrap()
    });

    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!("{:<34} {:>10}", "variant", "median ms");
    println!(
        "{:<34} {:>10.1}",
        "orchex history (change_history)",
        ms(orchex_time)
    );
    println!(
        "{:<34} {:>10.1}",
        "git log --numstat (parsed)",
        ms(numstat_time)
    );
    println!(
        "{:<34} {:>10.1}",
        "git log --name-only (parsed)",
        ms(names_time)
    );
    println!(
        "{:<34} {:>10.1}",
        "orchex analysis (cold, whole)",
        ms(analysis_time)
    );
    println!(
        "orchex history / git log --numstat = {:.2}x (goal <= 0.5x); / --name-only = {:.2}x",
        orchex_time.as_secs_f64() / numstat_time.as_secs_f64(),
        orchex_time.as_secs_f64() / names_time.as_secs_f64()
    );
    println!(
        "analysis: chaos {:.3}, complexity {:.3}, health {:.3}, {} hotspots",
        report.chaos,
        report.complexity,
        report.health,
        report.hotspots.len()
    );
}
