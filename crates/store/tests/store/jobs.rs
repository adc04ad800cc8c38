//! Jobs: round trips, the claim order, transitions, recovery, listing.

use std::collections::HashSet;
use std::time::Duration;

use orchex_core::{
    Delivery, DeliveryRecord, DiffSummary, FileImpact, JobId, JobState, RollbackState, SkipReason,
    StepResult, Timestamp, TriggerKind,
};
use orchex_store::{
    Backup, INTERRUPTED_TWICE, JobFilter, JobPatch, JobStore, PageRequest, StoreError,
};

use crate::{ContractStore, job, open, repo};

async fn a_job_round_trips_with_every_result(store: impl ContractStore) {
    let job = job("api", "codegen", TriggerKind::Commit, 0);
    store.insert_job(job.clone()).await.unwrap();
    assert_eq!(store.get_job(job.id).await.unwrap(), Some(job.clone()));

    store
        .transition(job.id, JobState::Running, JobPatch::new())
        .await
        .unwrap();
    let step = StepResult {
        name: "generate".into(),
        exit_code: Some(0),
        duration_ms: Some(1200),
        output_tail: Some("ok\n".into()),
        ..StepResult::default()
    };
    store.record_step(job.id, 0, step.clone()).await.unwrap();
    let diff = DiffSummary {
        added: vec!["a.rs".into()],
        modified: vec!["b.rs".into()],
        deleted: vec![],
        lines_added: 10,
        lines_removed: 2,
    };
    let delivery = DeliveryRecord {
        kind: Delivery::Branch,
        branch: Some("orchex/codegen".into()),
        commit: Some("abc123".into()),
        previous: None,
        files: vec!["a.rs".into(), "b.rs".into()],
        conflicts: vec![],
        written: std::collections::BTreeMap::new(),
    };
    let impact = vec![FileImpact {
        path: "b.rs".into(),
        complexity_before: 0.5,
        complexity_after: 0.25,
        loc_before: 100,
        loc_after: 80,
    }];
    let done = store
        .transition(
            job.id,
            JobState::Succeeded,
            JobPatch::new()
                .changed(true)
                .diff(diff.clone())
                .delivery(delivery.clone())
                .rollback(RollbackState::Available)
                .impact(impact.clone()),
        )
        .await
        .unwrap();
    assert_eq!(done.state(), JobState::Succeeded);
    assert!(done.finished_at.is_some());
    // Returned jobs and lists leave the output tail out...
    assert_eq!(done.steps[0].output_tail, None);
    // ...the detail has it.
    let stored = store.get_job(job.id).await.unwrap().unwrap();
    assert_eq!(stored.steps, vec![step]);
    assert_eq!(stored.diff, Some(diff));
    assert_eq!(stored.delivery, Some(delivery));
    assert_eq!(stored.rollback, Some(RollbackState::Available));
    assert_eq!(stored.impact, Some(impact));
    // The rollback state filters, in SQL as in `JobFilter::matches`.
    for (rollback, expected) in [
        (RollbackState::Available, 1),
        (RollbackState::InProgress, 0),
    ] {
        let filter = JobFilter::new().rollback(rollback);
        let listed = store
            .list_jobs(filter.clone(), PageRequest::first())
            .await
            .unwrap();
        assert_eq!(listed.items.len(), expected, "{rollback:?}");
        assert_eq!(filter.matches(&stored), expected == 1);
        assert_eq!(store.count_jobs(filter).await.unwrap(), expected as u64);
    }
    assert_eq!(stored.changed, Some(true));
    assert_eq!(stored.started_at, done.started_at);

    assert!(store.get_job(JobId::new()).await.unwrap().is_none());
    let err = store.insert_job(job.clone()).await.unwrap_err();
    assert!(matches!(err, StoreError::JobExists { .. }), "{err}");
}

async fn illegal_transitions_are_refused_and_change_nothing(store: impl ContractStore) {
    let job = job("api", "codegen", TriggerKind::Manual, 0);
    store.insert_job(job.clone()).await.unwrap();

    let err = store
        .transition(job.id, JobState::Succeeded, JobPatch::new().error("nope"))
        .await
        .unwrap_err();
    match &err {
        StoreError::IllegalTransition { job: id, source } => {
            assert_eq!(*id, job.id);
            assert_eq!(source.from, JobState::Queued);
            assert_eq!(source.to, JobState::Succeeded);
        }
        other => panic!("unexpected {other}"),
    }
    assert!(err.to_string().contains("queued -> succeeded"));
    let stored = store.get_job(job.id).await.unwrap().unwrap();
    assert_eq!(stored.state(), JobState::Queued);
    assert_eq!(
        stored.error, None,
        "the patch of a refused transition is not applied"
    );

    // Finished jobs stay finished.
    store
        .transition(job.id, JobState::Cancelled, JobPatch::new())
        .await
        .unwrap();
    for to in [JobState::Running, JobState::Queued, JobState::Succeeded] {
        assert!(matches!(
            store.transition(job.id, to, JobPatch::new()).await,
            Err(StoreError::IllegalTransition { .. })
        ));
    }
    assert!(matches!(
        store
            .transition(JobId::new(), JobState::Running, JobPatch::new())
            .await,
        Err(StoreError::JobNotFound { .. })
    ));
}

async fn a_refused_write_does_not_undo_the_others_of_its_batch(store: impl ContractStore) {
    let mut ids = Vec::new();
    for i in 0..40 {
        let job = job("api", "codegen", TriggerKind::Manual, i);
        ids.push(job.id);
        store.insert_job(job).await.unwrap();
    }
    // Concurrent writes land in the same transactions; half are illegal.
    let results = futures::future::join_all(ids.iter().enumerate().map(|(i, id)| {
        let to = if i % 2 == 0 {
            JobState::Running
        } else {
            JobState::Succeeded
        };
        store.transition(*id, to, JobPatch::new())
    }))
    .await;
    for (i, (result, id)) in results.into_iter().zip(&ids).enumerate() {
        let state = store.get_job(*id).await.unwrap().unwrap().state();
        if i % 2 == 0 {
            assert!(result.is_ok());
            assert_eq!(state, JobState::Running);
        } else {
            assert!(result.is_err());
            assert_eq!(state, JobState::Queued);
        }
    }
}

async fn claims_take_the_highest_priority_then_the_oldest(store: impl ContractStore) {
    let schedule_old = job("api", "p", TriggerKind::Schedule, 300);
    let commit_new = job("api", "p", TriggerKind::Commit, 10);
    let commit_old = job("api", "p", TriggerKind::Commit, 200);
    let manual = job("web", "p", TriggerKind::Manual, 5);
    let push = job("web", "p", TriggerKind::Push, 100);
    for job in [&schedule_old, &commit_new, &commit_old, &manual, &push] {
        store.insert_job(job.clone()).await.unwrap();
    }
    // Due only in an hour: never claimed now.
    let later = job("api", "p", TriggerKind::Manual, 1000);
    let due = Timestamp::now() + jiff::SignedDuration::from_hours(1);
    store.insert_job_due(later.clone(), due).await.unwrap();
    // Running or finished jobs are never claimed.
    let done = job("api", "p", TriggerKind::Manual, 2000);
    store.insert_job(done.clone()).await.unwrap();
    store
        .transition(done.id, JobState::Cancelled, JobPatch::new())
        .await
        .unwrap();

    assert_eq!(store.queue_depth().await.unwrap(), 6);
    let mut order = Vec::new();
    while let Some(job) = store
        .claim_next("worker-1", Duration::from_secs(30))
        .await
        .unwrap()
    {
        assert_eq!(job.state(), JobState::Running);
        assert!(job.started_at.is_some());
        order.push(job.id);
    }
    assert_eq!(
        order,
        vec![
            manual.id,
            push.id,
            commit_old.id,
            commit_new.id,
            schedule_old.id
        ]
    );
    assert_eq!(store.queue_depth().await.unwrap(), 1, "the job due later");

    // Leases belong to their worker.
    assert!(
        store
            .renew_lease(manual.id, "worker-1", Duration::from_secs(30))
            .await
            .unwrap()
    );
    assert!(
        !store
            .renew_lease(manual.id, "worker-2", Duration::from_secs(30))
            .await
            .unwrap()
    );
    store
        .transition(manual.id, JobState::Succeeded, JobPatch::new())
        .await
        .unwrap();
    assert!(
        !store
            .renew_lease(manual.id, "worker-1", Duration::from_secs(30))
            .await
            .unwrap(),
        "a finished job has no lease"
    );
}

async fn concurrent_claims_never_hand_out_a_job_twice(store: impl ContractStore) {
    for i in 0..50 {
        store
            .insert_job(job("api", "p", TriggerKind::Commit, i))
            .await
            .unwrap();
    }
    let claims = futures::future::join_all((0..80).map(|i| {
        let store = store.clone();
        async move {
            store
                .claim_next(&format!("w{i}"), Duration::from_secs(10))
                .await
                .unwrap()
        }
    }))
    .await;
    let claimed: Vec<JobId> = claims.into_iter().flatten().map(|job| job.id).collect();
    let distinct: HashSet<JobId> = claimed.iter().copied().collect();
    assert_eq!(claimed.len(), 50);
    assert_eq!(distinct.len(), 50);
}

async fn a_bounded_insert_never_queues_beyond_the_capacity(store: impl ContractStore) {
    // 40 concurrent inserts against a capacity of 10: the writer batches
    // them into a few transactions, and each checks the count it sees.
    let jobs: Vec<_> = (0..40)
        .map(|i| job("api", &format!("p{i}"), TriggerKind::Commit, 0))
        .collect();
    let stored = futures::future::join_all(
        jobs.iter()
            .map(|job| store.insert_job_bounded(job.clone(), 10)),
    )
    .await;
    let mut queued = 0;
    for (stored, job) in stored.into_iter().zip(&jobs) {
        let stored = stored.unwrap();
        assert_eq!(stored.id, job.id);
        assert_eq!(store.get_job(job.id).await.unwrap(), Some(stored.clone()));
        match stored.state() {
            JobState::Queued => queued += 1,
            JobState::Skipped => {
                assert_eq!(stored.skip_reason, Some(SkipReason::QueueFull));
                assert!(stored.finished_at.is_some());
            }
            other => panic!("unexpected state {other:?}"),
        }
    }
    assert_eq!(queued, 10);
    assert_eq!(store.queue_depth().await.unwrap(), 10);

    // Claiming one frees a place.
    store
        .claim_next("w", Duration::from_secs(10))
        .await
        .unwrap()
        .unwrap();
    let next = job("api", "later", TriggerKind::Commit, 0);
    let stored = store.insert_job_bounded(next, 10).await.unwrap();
    assert_eq!(stored.state(), JobState::Queued);
    let full = job("api", "full", TriggerKind::Commit, 0);
    let stored = store.insert_job_bounded(full, 10).await.unwrap();
    assert_eq!(stored.state(), JobState::Skipped);
}

async fn the_queue_depth_follows_every_way_a_job_enters_or_leaves_the_queue(
    store: impl ContractStore,
) {
    let depth_is = |expected: u64| {
        let store = store.clone();
        async move {
            let counted = store
                .count_jobs(JobFilter::new().state(JobState::Queued))
                .await
                .unwrap();
            assert_eq!(counted, expected);
            assert_eq!(store.queue_depth().await.unwrap(), expected);
        }
    };
    depth_is(0).await;
    let jobs: Vec<_> = (0..5)
        .map(|i| job("api", "p", TriggerKind::Commit, 100 - i))
        .collect();
    for job in &jobs {
        store.insert_job(job.clone()).await.unwrap();
    }
    depth_is(5).await;
    let claimed = store
        .claim_next("w", Duration::from_secs(10))
        .await
        .unwrap()
        .unwrap();
    depth_is(4).await;
    // A refused transition changes nothing.
    assert!(
        store
            .transition(claimed.id, JobState::Queued, JobPatch::new())
            .await
            .is_err()
    );
    store
        .update_job(jobs[1].id, JobPatch::new().changed(true))
        .await
        .unwrap();
    depth_is(4).await;
    store
        .transition(jobs[1].id, JobState::Cancelled, JobPatch::new())
        .await
        .unwrap();
    depth_is(3).await;
    // Recovery re-queues the running job.
    store.recover().await.unwrap();
    depth_is(4).await;
}

#[tokio::test]
async fn the_queue_depth_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    for age in 0..4 {
        let job = job("api", "p", TriggerKind::Commit, age);
        store.insert_job(job).await.unwrap();
    }
    store.close().await.unwrap();
    let store = open(dir.path()).await;
    assert_eq!(store.queue_depth().await.unwrap(), 4);
    store.close().await.unwrap();
}

async fn recovery_requeues_once_then_fails_and_returns_process_groups(store: impl ContractStore) {
    let job = job("api", "codegen", TriggerKind::Commit, 0);
    let waiting = crate::job("api", "other", TriggerKind::Commit, 0);
    store.insert_job(job.clone()).await.unwrap();
    store.insert_job(waiting.clone()).await.unwrap();

    // First run: the daemon dies while a step runs.
    let claimed = store
        .claim_next("w", Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claimed.id, job.id);
    store
        .record_step(
            job.id,
            0,
            StepResult {
                name: "generate".into(),
                ..StepResult::default()
            },
        )
        .await
        .unwrap();
    store.set_step_pgid(job.id, 4242).await.unwrap();

    let report = store.recover().await.unwrap();
    assert_eq!(report.requeued, vec![job.id]);
    assert!(report.failed.is_empty());
    assert_eq!(report.pgids.len(), 1);
    assert_eq!(report.pgids[0].job, job.id);
    assert_eq!(report.pgids[0].pgid, 4242);
    let requeued = store.get_job(job.id).await.unwrap().unwrap();
    assert_eq!(requeued.state(), JobState::Queued);
    assert_eq!(requeued.interruptions, 1);
    assert!(requeued.steps.is_empty(), "a re-queued job starts afresh");
    assert_eq!(
        store.get_job(waiting.id).await.unwrap().unwrap().state(),
        JobState::Queued,
        "queued jobs are left alone"
    );
    // The pgid stays recorded until the caller has killed the group.
    store.clear_step_pgid(job.id, 4242).await.unwrap();

    // Second run: it dies again.
    let claimed = store
        .claim_next("w", Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claimed.id, job.id, "the re-queued job keeps its age");
    let report = store.recover().await.unwrap();
    assert!(report.requeued.is_empty());
    assert_eq!(report.failed, vec![job.id]);
    assert!(report.pgids.is_empty());
    let failed = store.get_job(job.id).await.unwrap().unwrap();
    assert_eq!(failed.state(), JobState::Failed);
    assert_eq!(failed.interruptions, 2);
    assert_eq!(failed.error.as_deref(), Some(INTERRUPTED_TWICE));
    assert!(failed.finished_at.is_some());

    // Nothing left to recover.
    let report = store.recover().await.unwrap();
    assert!(report.requeued.is_empty() && report.failed.is_empty());
}

async fn step_output_tails_are_bounded(store: impl ContractStore) {
    let job = job("api", "codegen", TriggerKind::Manual, 0);
    store.insert_job(job.clone()).await.unwrap();
    let mut output = "x".repeat(100 * 1024);
    output.push_str("THE END");
    store
        .record_step(
            job.id,
            0,
            StepResult {
                name: "noisy".into(),
                output_tail: Some(output),
                ..StepResult::default()
            },
        )
        .await
        .unwrap();
    // Replacing the step at the same index keeps one step.
    let stored = store.get_job(job.id).await.unwrap().unwrap();
    let tail = stored.steps[0].output_tail.as_deref().unwrap();
    assert_eq!(tail.len(), 64 * 1024);
    assert!(tail.ends_with("THE END"));
    store
        .record_step(
            job.id,
            0,
            StepResult {
                name: "noisy".into(),
                exit_code: Some(1),
                ..StepResult::default()
            },
        )
        .await
        .unwrap();
    let stored = store.get_job(job.id).await.unwrap().unwrap();
    assert_eq!(stored.steps.len(), 1);
    assert_eq!(stored.steps[0].exit_code, Some(1));
    assert!(matches!(
        store
            .record_step(JobId::new(), 0, StepResult::default())
            .await,
        Err(StoreError::JobNotFound { .. })
    ));
}

async fn lists_filter_and_paginate_newest_first(store: impl ContractStore) {
    let mut all = Vec::new();
    for i in 0..25_i64 {
        let repo_name = if i % 2 == 0 { "api" } else { "web" };
        let pipeline = if i % 3 == 0 { "fmt" } else { "codegen" };
        // Several jobs share a creation time: the cursor must still be exact.
        let job = job(repo_name, pipeline, TriggerKind::Commit, 1000 - i / 3);
        let mut job = job;
        if i % 3 == 0 {
            job.created_at = all
                .last()
                .map_or(job.created_at, |prev: &orchex_core::Job| prev.created_at);
        }
        store.insert_job(job.clone()).await.unwrap();
        if i % 5 == 0 {
            store
                .transition(
                    job.id,
                    JobState::Skipped,
                    JobPatch::new().skip_reason(SkipReason::Unchanged),
                )
                .await
                .unwrap();
        }
        all.push(job);
    }

    // Walk every page of 7.
    let mut seen = Vec::new();
    let mut page = PageRequest::first().limit(7);
    loop {
        let result = store
            .list_jobs(JobFilter::new(), page.clone())
            .await
            .unwrap();
        assert!(result.items.len() <= 7);
        seen.extend(result.items.iter().map(|job| (job.created_at, job.id)));
        match result.next_cursor {
            Some(cursor) => page = PageRequest::first().limit(7).after(cursor),
            None => break,
        }
    }
    assert_eq!(seen.len(), 25);
    let distinct: HashSet<JobId> = seen.iter().map(|(_, id)| *id).collect();
    assert_eq!(distinct.len(), 25);
    assert!(seen.windows(2).all(|w| w[0].0 >= w[1].0), "newest first");

    // Filters.
    let api = store
        .list_jobs(JobFilter::new().repo(repo("api")), PageRequest::first())
        .await
        .unwrap();
    assert_eq!(api.items.len(), 13);
    assert!(api.items.iter().all(|job| job.repo.as_str() == "api"));
    assert_eq!(api.next_cursor, None);
    let skipped = JobFilter::new().state(JobState::Skipped);
    let page = store
        .list_jobs(skipped.clone(), PageRequest::first())
        .await
        .unwrap();
    assert_eq!(page.items.len(), 5);
    assert!(
        page.items
            .iter()
            .all(|job| job.skip_reason == Some(SkipReason::Unchanged))
    );
    assert_eq!(store.count_jobs(skipped).await.unwrap(), 5);
    let filter = JobFilter::new()
        .repo(repo("web"))
        .pipeline("fmt")
        .state(JobState::Queued)
        .state(JobState::Skipped);
    let expected = all
        .iter()
        .filter(|job| job.repo.as_str() == "web" && job.pipeline == "fmt");
    let page = store
        .list_jobs(filter.clone(), PageRequest::first())
        .await
        .unwrap();
    assert_eq!(page.items.len(), expected.count());
    assert!(page.items.iter().all(|job| filter.matches(job)));

    // Damaged cursors are refused.
    let err = store
        .list_jobs(JobFilter::new(), PageRequest::first().after("e12_3"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidCursor { .. }));
}

async fn coalescing_finds_the_queued_job_of_a_repo_and_pipeline(store: impl ContractStore) {
    assert_eq!(
        store.find_queued(&repo("api"), "codegen").await.unwrap(),
        None
    );
    let older = job("api", "codegen", TriggerKind::Commit, 20);
    let newer = job("api", "codegen", TriggerKind::Commit, 10);
    let other = job("api", "fmt", TriggerKind::Commit, 30);
    for job in [&older, &newer, &other] {
        store.insert_job(job.clone()).await.unwrap();
    }
    assert_eq!(
        store.find_queued(&repo("api"), "codegen").await.unwrap(),
        Some(older.id)
    );
    store
        .transition(older.id, JobState::Running, JobPatch::new())
        .await
        .unwrap();
    assert_eq!(
        store.find_queued(&repo("api"), "codegen").await.unwrap(),
        Some(newer.id)
    );
    assert_eq!(
        store.find_queued(&repo("web"), "codegen").await.unwrap(),
        None
    );
}

async fn purging_finished_jobs_removes_their_steps_and_backups(store: impl ContractStore) {
    let old = job("api", "codegen", TriggerKind::Commit, 0);
    let active = job("api", "codegen", TriggerKind::Commit, 0);
    store.insert_job(old.clone()).await.unwrap();
    store.insert_job(active.clone()).await.unwrap();
    store
        .transition(old.id, JobState::Running, JobPatch::new())
        .await
        .unwrap();
    store
        .record_step(old.id, 0, StepResult::default())
        .await
        .unwrap();
    store
        .put_backups(
            old.id,
            vec![Backup::Branch {
                name: "orchex/codegen".into(),
                previous: None,
            }],
        )
        .await
        .unwrap();
    store
        .transition(old.id, JobState::Succeeded, JobPatch::new())
        .await
        .unwrap();

    let cutoff = Timestamp::now() + jiff::SignedDuration::from_secs(1);
    assert_eq!(store.purge_jobs_finished_before(cutoff).await.unwrap(), 1);
    assert!(store.get_job(old.id).await.unwrap().is_none());
    assert!(store.backups(old.id).await.unwrap().is_empty());
    assert!(
        store.get_job(active.id).await.unwrap().is_some(),
        "queued jobs stay"
    );
}

/// A listed page reads the steps of all its jobs at once (one query per
/// chunk, not one per job): each job still gets exactly its own steps, in
/// order, without their output tails.
async fn a_listed_page_carries_each_jobs_own_steps_in_order(store: impl ContractStore) {
    let mut ids = Vec::new();
    for n in 0..6_u32 {
        let job = job("api", &format!("p{n}"), TriggerKind::Manual, i64::from(n));
        store.insert_job(job.clone()).await.unwrap();
        store
            .transition(job.id, JobState::Running, JobPatch::new())
            .await
            .unwrap();
        // Job n has n steps (the first none).
        for index in 0..n {
            let step = StepResult {
                name: format!("p{n}-step{index}"),
                exit_code: Some(i32::try_from(index).unwrap()),
                output_tail: Some("tail".into()),
                ..StepResult::default()
            };
            store.record_step(job.id, index, step).await.unwrap();
        }
        ids.push((job.id, n));
    }
    let page = store
        .list_jobs(JobFilter::new(), PageRequest::first().limit(100))
        .await
        .unwrap();
    assert_eq!(page.items.len(), 6);
    for (id, n) in ids {
        let listed = page.items.iter().find(|j| j.id == id).unwrap();
        let names: Vec<&str> = listed.steps.iter().map(|s| s.name.as_str()).collect();
        let expected: Vec<String> = (0..n).map(|i| format!("p{n}-step{i}")).collect();
        assert_eq!(names, expected, "steps of job {n}");
        assert!(listed.steps.iter().all(|s| s.output_tail.is_none()));
    }
}

against_both_stores!(
    a_job_round_trips_with_every_result,
    illegal_transitions_are_refused_and_change_nothing,
    a_refused_write_does_not_undo_the_others_of_its_batch,
    claims_take_the_highest_priority_then_the_oldest,
    concurrent_claims_never_hand_out_a_job_twice,
    a_bounded_insert_never_queues_beyond_the_capacity,
    the_queue_depth_follows_every_way_a_job_enters_or_leaves_the_queue,
    recovery_requeues_once_then_fails_and_returns_process_groups,
    step_output_tails_are_bounded,
    lists_filter_and_paginate_newest_first,
    coalescing_finds_the_queued_job_of_a_repo_and_pipeline,
    purging_finished_jobs_removes_their_steps_and_backups,
    a_listed_page_carries_each_jobs_own_steps_in_order,
);
