//! Property: whatever an honest relay's answers look like (page sizes, pushes from several
//! devices interleaved with the puller's own, pulls committed or not, restarts of the puller),
//! every blob another device pushed reaches the puller exactly once, in cursor order, with no
//! integrity problem reported.

use proptest::prelude::*;
use sync_types::Cursor;

use super::fake_relay::FakeRelay;
use super::{config, connect, fast_options};
use crate::{GroupChoice, PullBatch, StoreLocation, SyncClient};
use sync_testkit::devices::group as material;
use sync_testkit::guard;

/// One step of a schedule.
#[derive(Debug, Clone)]
enum Step {
    /// Device `by` (0, 1: others; 2: the puller) pushes `n` blobs.
    Push { by: usize, n: u8 },
    /// The relay's pages hold at most this many entries from now on.
    PageLimit(u32),
    /// The puller pulls one batch and commits it, or drops it uncommitted.
    Pull { commit: bool },
    /// The puller pulls with `pull` (recorded at once).
    PullRecorded,
    /// The puller closes and opens again from its data directory.
    Restart,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0usize..3, 1u8..4).prop_map(|(by, n)| Step::Push { by, n }),
        1 => (1u32..5).prop_map(Step::PageLimit),
        3 => any::<bool>().prop_map(|commit| Step::Pull { commit }),
        1 => Just(Step::PullRecorded),
        1 => Just(Step::Restart),
    ]
}

/// What the puller took from one batch (committed batches only), as `(cursor, data)`.
fn taken(batch: &PullBatch) -> Vec<(Cursor, Vec<u8>)> {
    batch
        .blobs
        .iter()
        .map(|b| (b.cursor, b.data.clone()))
        .collect()
}

async fn run(steps: Vec<Step>) {
    let relay = FakeRelay::new();
    let g = material(1);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = StoreLocation::Dir(dir.path().join("puller"));
    let others = [
        connect(&relay, StoreLocation::InMemory, GroupChoice::Use(g.clone())).await,
        connect(&relay, StoreLocation::InMemory, GroupChoice::Use(g.clone())).await,
    ];
    let open = |choice| {
        let config = config(&relay, store.clone(), choice).with_options(fast_options());
        async move {
            guard("connect", SyncClient::connect(config))
                .await
                .expect("connect")
        }
    };
    let mut puller = open(GroupChoice::Use(g.clone())).await;
    // Every blob pushed by another device: (data) in push order; data is unique.
    let mut expected: Vec<Vec<u8>> = Vec::new();
    let mut got: Vec<(Cursor, Vec<u8>)> = Vec::new();
    let mut counter = 0u32;
    for step in steps {
        match step {
            Step::Push { by, n } => {
                for _ in 0..n {
                    counter += 1;
                    let data = counter.to_be_bytes().to_vec();
                    let device = if by < 2 { &others[by] } else { &puller };
                    guard("push", device.push(&data)).await.expect("push");
                    if by < 2 {
                        expected.push(data);
                    }
                }
            }
            Step::PageLimit(n) => relay.set_page_limit(n),
            Step::Pull { commit } => {
                let batch = guard("pull", puller.pull_uncommitted())
                    .await
                    .expect("pull");
                assert!(batch.problems.is_empty(), "{:?}", batch.problems);
                if commit {
                    got.extend(taken(&batch));
                    guard("commit", puller.commit_pull(&batch))
                        .await
                        .expect("commit");
                }
            }
            Step::PullRecorded => {
                let blobs = guard("pull", puller.pull()).await.expect("pull");
                got.extend(blobs.iter().map(|b| (b.cursor, b.data.clone())));
            }
            Step::Restart => {
                puller.close().await;
                puller = open(GroupChoice::Stored(None)).await;
            }
        }
    }
    // Then everything left, until the relay has no more.
    loop {
        let batch = guard("pull", puller.pull_uncommitted())
            .await
            .expect("pull");
        assert!(batch.problems.is_empty(), "{:?}", batch.problems);
        got.extend(taken(&batch));
        guard("commit", puller.commit_pull(&batch))
            .await
            .expect("commit");
        if batch.blobs.is_empty() && !batch.more {
            break;
        }
    }
    let cursors: Vec<Cursor> = got.iter().map(|(c, _)| *c).collect();
    assert!(
        cursors.windows(2).all(|w| w[0] < w[1]),
        "in cursor order, none twice: {cursors:?}"
    );
    let data: Vec<Vec<u8>> = got.into_iter().map(|(_, d)| d).collect();
    assert_eq!(data, expected, "every other device's blob once, in order");
    puller.close().await;
    for o in others {
        o.close().await;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn every_blob_is_delivered_once_in_cursor_order(
        steps in prop::collection::vec(step(), 1..24)
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(run(steps));
    }
}
