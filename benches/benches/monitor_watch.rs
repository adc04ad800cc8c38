//! Watch setup of `orchex-monitor` on a large tree, next to a plain `ignore`
//! walk of the same tree and next to notify's own recursive watch.
//!
//! The tree: 100,000 files in 10,000 directories under `src/`, plus an
//! ignored `node_modules/` of 50,000 files in 5,000 directories. Each
//! variant runs in its own child process (so its resident memory is its
//! own), several times on a warm page cache; the table shows the median and
//! the best time, the resident-set growth and the peak RSS of the child.
//!
//! `cargo bench -p orchex-benches --bench monitor_watch` (set
//! `ORCHEX_BENCH_SCALE=0.1` for a quick run, `ORCHEX_BENCH_ROUNDS` for more
//! or fewer rounds than 5). The tree is scaled down
//! automatically when `fs.inotify.max_user_watches` is too low for notify's
//! recursive watch, and the output says so.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use notify::Watcher;

const RUNS: usize = 5;
const THREADS: usize = 2;

struct Shape {
    top: usize,
    sub: usize,
    files_per_dir: usize,
    packages: usize,
    files_per_package_dir: usize,
}

impl Shape {
    fn dirs(&self) -> usize {
        self.top * self.sub
    }
    fn files(&self) -> usize {
        self.top * self.sub * self.files_per_dir
    }
    fn ignored_dirs(&self) -> usize {
        self.packages * 2
    }
    fn ignored_files(&self) -> usize {
        self.packages * 2 * self.files_per_package_dir
    }
}

fn scaled(scale: f64) -> Shape {
    // 100 top-level directories of 100 directories each (the top-level one
    // holds files too): 10,000 directories, 10 files each.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let top = ((100.0 * scale.sqrt()).round() as usize).max(2);
    Shape {
        top,
        sub: top,
        files_per_dir: 10,
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        packages: ((2500.0 * scale).round() as usize).max(2),
        files_per_package_dir: 10,
    }
}

fn generate(root: &Path, shape: &Shape) {
    std::fs::write(root.join(".gitignore"), "node_modules/\n*.log\n").unwrap();
    let body = "fn f() {\n    if x {\n        y();\n    }\n}\n";
    for t in 0..shape.top {
        let top = root.join("src").join(format!("d{t:03}"));
        // The top-level directory is one of the `sub` directories: its own
        // files and sub - 1 children.
        for s in 0..shape.sub {
            let dir = if s == 0 {
                top.clone()
            } else {
                top.join(format!("s{s:03}"))
            };
            std::fs::create_dir_all(&dir).unwrap();
            for f in 0..shape.files_per_dir {
                std::fs::write(dir.join(format!("f{f}.rs")), body).unwrap();
            }
        }
    }
    for p in 0..shape.packages {
        let package = root.join("node_modules").join(format!("pkg{p:05}"));
        let lib = package.join("lib");
        std::fs::create_dir_all(&lib).unwrap();
        for f in 0..shape.files_per_package_dir {
            std::fs::write(package.join(format!("m{f}.js")), "module.exports = 1;\n").unwrap();
            std::fs::write(lib.join(format!("l{f}.js")), "module.exports = 2;\n").unwrap();
        }
    }
    let status = Command::new("git")
        .args(["init", "-q"])
        .arg(root)
        .status()
        .unwrap();
    assert!(status.success());
}

fn proc_status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|line| {
            line.strip_prefix(field)?
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

fn median(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    (samples[samples.len() / 2], samples[0])
}

/// Runs in the child process: times `RUNS` setups of one variant.
fn child(variant: &str, root: &Path) {
    let baseline = proc_status_kb("VmRSS:");
    let mut samples = Vec::new();
    let mut ready_samples = Vec::new();
    let mut watches = 0usize;
    let mut rss_after = 0;
    match variant {
        "walk" => {
            for _ in 0..RUNS {
                let count = std::sync::atomic::AtomicUsize::new(0);
                let started = Instant::now();
                ignore::WalkBuilder::new(root)
                    .threads(THREADS)
                    .build_parallel()
                    .run(|| {
                        Box::new(|entry| {
                            if entry.is_ok_and(|e| e.file_type().is_some_and(|t| t.is_dir())) {
                                count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                            ignore::WalkState::Continue
                        })
                    });
                samples.push(started.elapsed());
                watches = count.into_inner();
                rss_after = rss_after.max(proc_status_kb("VmRSS:"));
            }
        }
        "orchex" => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(THREADS)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                for _ in 0..RUNS {
                    let (monitor, _triggers) = orchex_monitor::Monitor::with_options(
                        &orchex_core::config::MonitorConfig::default(),
                        &orchex_core::config::ThresholdsConfig::default(),
                        orchex_monitor::MonitorOptions {
                            analyse_on_commit: false,
                            walker_threads: THREADS,
                            ..orchex_monitor::MonitorOptions::default()
                        },
                    );
                    let started = Instant::now();
                    let status = monitor
                        .add_repository(orchex_core::Repository {
                            name: orchex_core::RepoId::new("bench").unwrap(),
                            path: root.to_path_buf(),
                            enabled: true,
                            branch: None,
                        })
                        .await
                        .unwrap();
                    samples.push(started.elapsed());
                    assert_eq!(
                        status.state,
                        orchex_monitor::WatcherState::Watching,
                        "{status:?}"
                    );
                    // Answered once the background snapshot is taken.
                    monitor
                        .watched_dirs(&orchex_core::RepoId::new("bench").unwrap())
                        .await
                        .unwrap();
                    ready_samples.push(started.elapsed());
                    watches = status.watched_dirs;
                    rss_after = rss_after.max(proc_status_kb("VmRSS:"));
                    monitor.shutdown().await;
                }
            });
        }
        "notify-recursive" => {
            for _ in 0..RUNS {
                let mut watcher =
                    notify::recommended_watcher(|_: notify::Result<notify::Event>| {}).unwrap();
                let started = Instant::now();
                watcher
                    .watch(root, notify::RecursiveMode::Recursive)
                    .unwrap();
                samples.push(started.elapsed());
                rss_after = rss_after.max(proc_status_kb("VmRSS:"));
                drop(watcher);
            }
            watches = ignore::WalkBuilder::new(root)
                .standard_filters(false)
                .build()
                .filter(|e| {
                    e.as_ref()
                        .is_ok_and(|e| e.file_type().is_some_and(|t| t.is_dir()))
                })
                .count();
        }
        other => panic!("unknown variant {other}"),
    }
    let ready = if ready_samples.is_empty() {
        0
    } else {
        median(ready_samples).0.as_micros()
    };
    let (median, best) = median(samples);
    println!(
        "RESULT {variant} {} {} {} {} {watches} {ready}",
        median.as_micros(),
        best.as_micros(),
        rss_after.saturating_sub(baseline),
        proc_status_kb("VmHWM:"),
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        child(&args[i + 1], Path::new(&args[i + 2]));
        return;
    }
    if args.iter().any(|a| a == "--list") {
        println!("monitor_watch: bench");
        return;
    }
    let mut scale: f64 = std::env::var("ORCHEX_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let limit: usize = std::fs::read_to_string("/proc/sys/fs/inotify/max_user_watches")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(8192);
    let mut shape = scaled(scale);
    // notify's recursive watch covers node_modules too; leave room for
    // other processes.
    while shape.dirs() + shape.ignored_dirs() + 1000 > limit {
        scale *= 0.8;
        shape = scaled(scale);
        println!(
            "note: fs.inotify.max_user_watches = {limit}; scaling the tree down to {scale:.2}"
        );
    }
    let base = std::env::var_os("ORCHEX_BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    let dir = tempfile::tempdir_in(base).unwrap();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    let started = Instant::now();
    generate(&root, &shape);
    println!(
        "tree: {} files in {} directories, plus an ignored node_modules of {} files in {} \
         directories (generated in {:.1}s); inotify limit {limit}; {RUNS} runs per variant, \
         {THREADS} walker threads",
        shape.files(),
        shape.dirs(),
        shape.ignored_files(),
        shape.ignored_dirs(),
        started.elapsed().as_secs_f64()
    );
    let exe = std::env::current_exe().unwrap();
    // Warm the page cache once.
    let warm = Command::new(&exe)
        .args(["--child", "walk"])
        .arg(&root)
        .output()
        .unwrap();
    assert!(warm.status.success());
    // Rounds of every variant, in an order that rotates: on a shared
    // machine the load drifts, and a ratio of two medians taken minutes
    // apart would measure the drift. Each round compares the variants as
    // they ran next to each other; the table gives the medians over rounds.
    let rounds: usize = std::env::var("ORCHEX_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5)
        .max(1);
    let variants = ["walk", "orchex", "notify-recursive"];
    let mut per_round: Vec<Vec<Vec<u64>>> = vec![Vec::new(); variants.len()];
    for round in 0..rounds {
        for step in 0..variants.len() {
            let index = (round + step) % variants.len();
            per_round[index].push(run_child(&exe, variants[index], &root));
        }
    }
    println!("{rounds} rounds; per round, each variant's median of {RUNS} setups");
    println!(
        "{:<18} {:>12} {:>12} {:>14} {:>12} {:>9}",
        "variant", "median ms", "best ms", "RSS growth MiB", "peak RSS MiB", "dirs"
    );
    let median_of = |values: Vec<u64>| {
        let mut values = values;
        values.sort_unstable();
        values[values.len() / 2]
    };
    #[allow(clippy::cast_precision_loss)]
    for (variant, rows) in variants.iter().zip(&per_round) {
        let column = |i: usize| rows.iter().map(move |row| row[i]);
        println!(
            "{:<18} {:>12.1} {:>12.1} {:>14.1} {:>12.1} {:>9}",
            variant,
            median_of(column(0).collect()) as f64 / 1000.0,
            column(1).min().unwrap_or(0) as f64 / 1000.0,
            column(2).max().unwrap_or(0) as f64 / 1024.0,
            column(3).max().unwrap_or(0) as f64 / 1024.0,
            rows[0][4]
        );
    }
    #[allow(clippy::cast_precision_loss)]
    let ratios = |a: usize, b: usize| -> Vec<f64> {
        per_round[a]
            .iter()
            .zip(&per_round[b])
            .map(|(x, y)| x[0] as f64 / y[0] as f64)
            .collect()
    };
    let summary = |mut values: Vec<f64>| {
        values.sort_by(f64::total_cmp);
        let listed: Vec<String> = values.iter().map(|v| format!("{v:.2}")).collect();
        (values[values.len() / 2], listed.join(" "))
    };
    let (walk_ratio, walk_all) = summary(ratios(1, 0));
    let (notify_ratio, notify_all) = summary(ratios(1, 2));
    println!(
        "orchex / walk = {walk_ratio:.2}x (goal <= 1.2x; per round, sorted: {walk_all}); \
         orchex / notify recursive = {notify_ratio:.2}x (goal < 1x; {notify_all})"
    );
    #[allow(clippy::cast_precision_loss)]
    let ready = median_of(per_round[1].iter().map(|row| row[5]).collect()) as f64 / 1000.0;
    println!(
        "orchex, until the rescan snapshot is also taken (background, after the watches): \
         median {ready:.1} ms"
    );
}

/// Runs one child of `variant`; its fields: median µs, best µs, RSS growth
/// KiB, peak RSS KiB, directories watched, median µs until ready.
fn run_child(exe: &Path, variant: &str, root: &Path) -> Vec<u64> {
    let output = Command::new(exe)
        .args(["--child", variant])
        .arg(root)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{variant}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("RESULT "))
        .unwrap()
        .to_owned();
    line.split_whitespace()
        .skip(2)
        .map(|f| f.parse().unwrap())
        .collect()
}
