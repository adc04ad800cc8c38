//! Crash safety: a child process writes in a loop and prints every id once
//! its write is acknowledged; the parent kills it with SIGKILL at random
//! points, 20 times, and checks after each kill that the database opens,
//! passes the integrity check, and holds everything acknowledged.
//!
//! The child is this test binary itself, re-executed with
//! `ORCHEX_STORE_CRASH_CHILD` set to the data directory; it runs the
//! `crash::child_process` test, which does nothing without that variable.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use orchex_core::{Event, EventId, EventKind, JobId, JobState, TriggerKind};
use orchex_store::{
    EventFilter, EventStore, JobPatch, JobStore, PageRequest, SqliteStore, StoreOptions,
};

const CHILD_ENV: &str = "ORCHEX_STORE_CRASH_CHILD";
const KILLS: usize = 20;

fn ack(line: &str) {
    let mut out = std::io::stdout().lock();
    if writeln!(out, "ACK {line}")
        .and_then(|()| out.flush())
        .is_err()
    {
        // The parent is gone (closed pipe): never outlive it.
        std::process::exit(0);
    }
}

/// The child's body: three event writers and one job writer, forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_process() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return; // not a child: nothing to do
    };
    let store = SqliteStore::open_in_dir(&dir, StoreOptions::default())
        .await
        .unwrap();
    store.recover().await.unwrap();
    ack("READY");
    let mut tasks = Vec::new();
    for writer in 0..3 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0usize;
            loop {
                let events: Vec<Arc<Event>> = (0..=(n % 50))
                    .map(|i| {
                        Arc::new(Event::new(
                            EventKind::JobProgress,
                            format!("writer {writer} batch {n} event {i}"),
                        ))
                    })
                    .collect();
                let ids: Vec<EventId> = events.iter().map(|e| e.id).collect();
                store.append_events(events).await.unwrap();
                for id in ids {
                    ack(&format!("E {id}"));
                }
                n += 1;
            }
        }));
    }
    let jobs = store.clone();
    tasks.push(tokio::spawn(async move {
        loop {
            let job = crate::job("api", "codegen", TriggerKind::Commit, 0);
            let id = job.id;
            jobs.insert_job(job).await.unwrap();
            ack(&format!("Q {id}"));
            jobs.transition(id, JobState::Running, JobPatch::new())
                .await
                .unwrap();
            ack(&format!("R {id}"));
            jobs.transition(id, JobState::Succeeded, JobPatch::new().changed(false))
                .await
                .unwrap();
            ack(&format!("S {id}"));
        }
    }));
    // The tasks loop forever: the parent kills this process.
    futures::future::join_all(tasks).await;
}

/// Kills the child when the parent fails half-way: no orphan keeps writing.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rank(state: JobState) -> u8 {
    match state {
        JobState::Queued => 0,
        JobState::Running => 1,
        JobState::Succeeded => 2,
        other => panic!("unexpected state {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_writers_lose_nothing_they_acknowledged() {
    if std::env::var(CHILD_ENV).is_ok() {
        return; // never recurse
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut total_acked = 0u64;
    let started = Instant::now();
    for round in 0..KILLS {
        let round_start = orchex_core::Timestamp::now();
        let mut acked_events: HashSet<EventId> = HashSet::new();
        let child = Command::new(&exe)
            .args([
                "crash::child_process",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut child = KillOnDrop(child);
        let stdout = child.0.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::<String>::new()));
        let ready = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
        let reader = {
            let lines = Arc::clone(&lines);
            let ready = Arc::clone(&ready);
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    // libtest may print its "test ... " prefix on the line.
                    if let Some(ack) = line.find("ACK ").map(|at| &line[at + 4..]) {
                        if ack == "READY" {
                            *ready.0.lock().unwrap() = true;
                            ready.1.notify_all();
                        } else {
                            lines.lock().unwrap().push(ack.to_owned());
                        }
                    }
                }
            })
        };
        {
            let (flag, signal) = &*ready;
            let guard = flag.lock().unwrap();
            let (guard, timeout) = signal
                .wait_timeout_while(guard, Duration::from_secs(30), |ready| !*ready)
                .unwrap();
            assert!(
                !timeout.timed_out(),
                "round {round}: the child never got ready"
            );
            drop(guard);
        }
        std::thread::sleep(Duration::from_millis(fastrand::u64(20..250)));
        child.0.kill().unwrap(); // SIGKILL
        child.0.wait().unwrap();
        reader.join().unwrap();

        let lines = std::mem::take(&mut *lines.lock().unwrap());
        let mut job_acks: HashMap<JobId, JobState> = HashMap::new();
        for line in &lines {
            let (kind, id) = line.split_once(' ').unwrap();
            match kind {
                "E" => {
                    acked_events.insert(EventId::from(uuid::Uuid::parse_str(id).unwrap()));
                }
                "Q" | "R" | "S" => {
                    let state = match kind {
                        "Q" => JobState::Queued,
                        "R" => JobState::Running,
                        _ => JobState::Succeeded,
                    };
                    job_acks.insert(id.parse().unwrap(), state);
                }
                other => panic!("unexpected line {other}"),
            }
        }

        // The database opens, passes the integrity check...
        let store = SqliteStore::open_in_dir(dir.path(), StoreOptions::default())
            .await
            .unwrap();
        let report = store.open_report().clone();
        assert!(report.unclean_shutdown, "round {round}: {report:?}");
        assert!(report.integrity_checked, "round {round}");
        // ...and holds every acknowledged event: all of this round's (those
        // of earlier rounds were checked then; the count covers them)...
        let mut stored = HashSet::new();
        let filter = EventFilter::new().since(round_start);
        let mut page = PageRequest::first().limit(10_000);
        loop {
            let result = store.query_events(filter.clone(), page).await.unwrap();
            stored.extend(result.items.iter().map(|e| e.id));
            match result.next_cursor {
                Some(cursor) => page = PageRequest::first().limit(10_000).after(cursor),
                None => break,
            }
        }
        let missing = acked_events.difference(&stored).count();
        assert_eq!(
            missing, 0,
            "round {round}: {missing} acknowledged events lost"
        );
        total_acked += acked_events.len() as u64;
        let total_stored = store.count_events(EventFilter::new()).await.unwrap();
        assert!(
            total_stored >= total_acked,
            "round {round}: {total_stored} < {total_acked}"
        );
        // ...and every acknowledged job state (or a later one).
        for (id, acked) in &job_acks {
            let job = store.get_job(*id).await.unwrap();
            let job = job.unwrap_or_else(|| panic!("round {round}: job {id} lost"));
            assert!(
                rank(job.state()) >= rank(*acked),
                "round {round}: job {id} acknowledged {acked}, stored {}",
                job.state()
            );
        }
        eprintln!(
            "round {round}: {} acks, {} events stored",
            lines.len(),
            stored.len()
        );
        store.close().await.unwrap();
    }
    assert!(total_acked > KILLS as u64, "the children wrote too little");
    eprintln!("{KILLS} kills in {:?}", started.elapsed());
}
