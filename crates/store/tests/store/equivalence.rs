//! The memory store behaves like the SQLite store: random sequences of
//! queue operations applied to both give the same answers (which job a
//! claim takes, which transitions are refused, what a lookup finds, the
//! queue depth, what recovery re-queues, what a filtered list holds).

use std::time::Duration;

use orchex_core::{Job, JobId, JobState, TriggerKind};
use orchex_store::{JobFilter, JobPatch, JobStore, MemoryStore, PageRequest, SqliteStore};
use proptest::prelude::*;

use crate::{job, open};

const REPOS: [&str; 2] = ["api", "web"];
const PIPELINES: [&str; 2] = ["codegen", "fmt"];
const KINDS: [TriggerKind; 4] = [
    TriggerKind::Manual,
    TriggerKind::Push,
    TriggerKind::Commit,
    TriggerKind::Schedule,
];
const STATES: [JobState; 5] = [
    JobState::Running,
    JobState::Succeeded,
    JobState::Failed,
    JobState::Cancelled,
    JobState::Queued,
];

#[derive(Debug, Clone)]
enum Op {
    Insert {
        repo: usize,
        pipeline: usize,
        kind: usize,
        age: i64,
    },
    InsertBounded {
        repo: usize,
        pipeline: usize,
        kind: usize,
        capacity: u64,
    },
    Claim,
    Transition {
        job: usize,
        to: usize,
    },
    FindQueued {
        repo: usize,
        pipeline: usize,
    },
    Depth,
    Recover,
    List {
        state: usize,
        limit: u32,
        target: Option<(usize, usize)>,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..2usize, 0..2usize, 0..4usize, 0..5i64)
            .prop_map(|(repo, pipeline, kind, age)| Op::Insert { repo, pipeline, kind, age }),
        1 => (0..2usize, 0..2usize, 0..4usize, 0..6u64).prop_map(|(repo, pipeline, kind, capacity)| {
            Op::InsertBounded { repo, pipeline, kind, capacity }
        }),
        3 => Just(Op::Claim),
        2 => (0..64usize, 0..5usize).prop_map(|(job, to)| Op::Transition { job, to }),
        1 => (0..2usize, 0..2usize).prop_map(|(repo, pipeline)| Op::FindQueued { repo, pipeline }),
        1 => Just(Op::Depth),
        1 => Just(Op::Recover),
        1 => (0..5usize, 1..5u32, prop::option::of((0..2usize, 0..2usize)))
            .prop_map(|(state, limit, target)| Op::List { state, limit, target }),
    ]
}

/// What one operation answered, in terms both stores can agree on (times
/// differ: each store reads its own clock).
#[derive(Debug, PartialEq)]
enum Answer {
    Inserted(Result<JobState, String>),
    Claimed(Option<JobId>),
    Moved(Result<JobState, String>),
    Found(Option<JobId>),
    Depth(u64),
    Recovered(Vec<JobId>, Vec<JobId>),
    Listed(Vec<(JobId, JobState)>, bool),
}

async fn apply(store: &dyn JobStore, op: &Op, jobs: &mut Vec<Job>, fresh: Option<Job>) -> Answer {
    let kind = |message: orchex_store::StoreError| {
        // The variant, not the text: the SQLite store words some errors
        // with its SQL context.
        format!("{message:?}")
            .split([' ', '{', '('])
            .next()
            .unwrap_or_default()
            .to_owned()
    };
    match op {
        Op::Insert { .. } => {
            let job = fresh.unwrap();
            jobs.push(job.clone());
            Answer::Inserted(
                store
                    .insert_job(job)
                    .await
                    .map(|()| JobState::Queued)
                    .map_err(kind),
            )
        }
        Op::InsertBounded { capacity, .. } => {
            let job = fresh.unwrap();
            jobs.push(job.clone());
            Answer::Inserted(
                store
                    .insert_job_bounded(job, *capacity)
                    .await
                    .map(|job| job.state())
                    .map_err(kind),
            )
        }
        Op::Claim => Answer::Claimed(
            store
                .claim_next("w", Duration::from_secs(60))
                .await
                .unwrap()
                .map(|job| job.id),
        ),
        Op::Transition { job, to } => match jobs.get(job % jobs.len().max(1)) {
            Some(job) => Answer::Moved(
                store
                    .transition(job.id, STATES[*to], JobPatch::new())
                    .await
                    .map(|job| job.state())
                    .map_err(kind),
            ),
            None => Answer::Moved(Err("no job yet".into())),
        },
        Op::FindQueued { repo, pipeline } => Answer::Found(
            store
                .find_queued(&crate::repo(REPOS[*repo]), PIPELINES[*pipeline])
                .await
                .unwrap(),
        ),
        Op::Depth => Answer::Depth(store.queue_depth().await.unwrap()),
        Op::Recover => {
            let report = store.recover().await.unwrap();
            Answer::Recovered(report.requeued, report.failed)
        }
        Op::List {
            state,
            limit,
            target,
        } => {
            let mut filter = JobFilter::new().state(STATES[*state]);
            if let Some((repo, pipeline)) = target {
                filter = filter
                    .repo(crate::repo(REPOS[*repo]))
                    .pipeline(PIPELINES[*pipeline]);
            }
            let page = store
                .list_jobs(filter, PageRequest::first().limit(*limit))
                .await
                .unwrap();
            Answer::Listed(
                page.items.iter().map(|job| (job.id, job.state())).collect(),
                page.next_cursor.is_some(),
            )
        }
    }
}

fn fresh_job(op: &Op) -> Option<Job> {
    match *op {
        Op::Insert {
            repo,
            pipeline,
            kind,
            age,
        } => Some(job(REPOS[repo], PIPELINES[pipeline], KINDS[kind], age)),
        Op::InsertBounded {
            repo,
            pipeline,
            kind,
            ..
        } => Some(job(REPOS[repo], PIPELINES[pipeline], KINDS[kind], 0)),
        _ => None,
    }
}

async fn run_both(ops: &[Op]) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let sqlite: SqliteStore = open(dir.path()).await;
    let memory = MemoryStore::new();
    let (mut sqlite_jobs, mut memory_jobs) = (Vec::new(), Vec::new());
    for (step, op) in ops.iter().enumerate() {
        let fresh = fresh_job(op);
        let expected = apply(&sqlite, op, &mut sqlite_jobs, fresh.clone()).await;
        let got = apply(&memory, op, &mut memory_jobs, fresh).await;
        prop_assert_eq!(&got, &expected, "step {} ({:?}) of {:?}", step, op, ops);
    }
    sqlite.close().await.unwrap();
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn the_memory_store_answers_like_the_sqlite_store(ops in prop::collection::vec(op(), 1..40)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(run_both(&ops))?;
    }
}
