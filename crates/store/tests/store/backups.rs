//! Backups: what a delivery replaced, kept per job and target.

use orchex_core::{JobId, TriggerKind};
use orchex_store::{Backup, StoreError};

use crate::{ContractStore, job};

async fn backups_round_trip_per_job_and_target(store: impl ContractStore) {
    let job = job("api", "codegen", TriggerKind::Manual, 0);
    let other = crate::job("api", "codegen", TriggerKind::Manual, 0);
    store.insert_job(job.clone()).await.unwrap();
    store.insert_job(other.clone()).await.unwrap();

    let binary: Vec<u8> = (0..=255).collect();
    let backups = vec![
        Backup::File {
            path: "src/gen.rs".into(),
            previous: Some(b"fn old() {}\n".to_vec()),
            mode: Some(0o100_644),
        },
        Backup::File {
            path: "bin/blob".into(),
            previous: Some(binary),
            mode: Some(0o100_755),
        },
        Backup::File {
            path: "new-file.txt".into(),
            previous: None,
            mode: None,
        },
        Backup::Branch {
            name: "orchex/codegen".into(),
            previous: Some("0123456789abcdef0123456789abcdef01234567".into()),
        },
    ];
    store.put_backups(job.id, backups.clone()).await.unwrap();
    store
        .put_backups(
            other.id,
            vec![Backup::Branch {
                name: "orchex/codegen".into(),
                previous: None,
            }],
        )
        .await
        .unwrap();

    let mut got = store.backups(job.id).await.unwrap();
    assert_eq!(got.len(), 4);
    // Files first, by path, then branches.
    assert_eq!(got.last(), backups.last());
    got.sort_by(|a, b| a.name().cmp(b.name()));
    let mut expected = backups.clone();
    expected.sort_by(|a, b| a.name().cmp(b.name()));
    assert_eq!(got, expected);

    // A second backup of the same target replaces the first.
    store
        .put_backups(
            job.id,
            vec![Backup::File {
                path: "src/gen.rs".into(),
                previous: Some(b"newer".to_vec()),
                mode: None,
            }],
        )
        .await
        .unwrap();
    let got = store.backups(job.id).await.unwrap();
    assert_eq!(got.len(), 4);
    assert!(got.contains(&Backup::File {
        path: "src/gen.rs".into(),
        previous: Some(b"newer".to_vec()),
        mode: None,
    }));

    assert_eq!(store.delete_backups(job.id).await.unwrap(), 4);
    assert!(store.backups(job.id).await.unwrap().is_empty());
    assert_eq!(store.backups(other.id).await.unwrap().len(), 1);

    let err = store.put_backups(JobId::new(), backups).await.unwrap_err();
    assert!(matches!(err, StoreError::JobNotFound { .. }));
}

against_both_stores!(backups_round_trip_per_job_and_target,);
