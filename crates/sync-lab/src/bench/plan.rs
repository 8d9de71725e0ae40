//! What every run of the benchmark pushes, sealed up front: the groups, the devices' keys and
//! request ids, and the sealed push frames of each run. Sealing them all before any timed run
//! is the device's cost, measured separately.

use std::time::Instant;

use super::cpu::this_thread_cpu;
use super::sealed::{Group, SealedPush, device_key, seal_pushes};
use super::{BenchError, WARMUP};

/// Devices (each in its own group) of the multi-device throughput run.
pub(super) const MANY: usize = 16;

/// Device seeds (the device key and its session come from the same seed).
pub(super) const DEVICE_A: u64 = 1000;
/// The second device of the notify run, in A's group.
pub(super) const DEVICE_B: u64 = 1001;
/// First of the [`MANY`] devices.
pub(super) const DEVICE_MANY: u64 = 2000;
/// The device of the empty group of the preloaded relay.
pub(super) const DEVICE_EMPTY: u64 = 3000;
/// The device of the full group.
pub(super) const DEVICE_FULL: u64 = 4000;

/// Untimed warm-up pushes and timed pushes of one device.
pub(super) struct Pushes {
    /// Pushed before the clock starts.
    pub(super) warm: Vec<SealedPush>,
    /// Pushed while the clock runs.
    pub(super) timed: Vec<SealedPush>,
}

/// The pushes of the runs under attack: the same groups and devices as the quiet runs, new
/// blobs (a blob pushed twice would only be a duplicate).
pub(super) struct Attacked {
    /// One device's pushes per group of [`Plan::many`], in the same order.
    pub(super) many: Vec<Pushes>,
    /// A's idle latency run, in a new session: request ids from [`Attacked::latency_first`].
    pub(super) latency: Vec<SealedPush>,
    /// First request id of that run (the session's `Hello` is 1).
    pub(super) latency_first: u64,
}

/// The groups and the sealed pushes of a whole run.
pub(super) struct Plan {
    /// Group of the single-device, latency and notify runs (devices A and B).
    pub(super) main: Group,
    /// A's throughput run.
    pub(super) one: Pushes,
    /// A's idle latency run, request ids from [`Plan::latency_first`].
    pub(super) latency: Vec<SealedPush>,
    /// A's pushes that B is notified of, request ids from [`Plan::notify_first`].
    pub(super) notify: Vec<SealedPush>,
    /// First request id of the latency run.
    pub(super) latency_first: u64,
    /// First request id of the notify run.
    pub(super) notify_first: u64,
    /// The [`MANY`] groups of the multi-device run and their device's pushes.
    pub(super) many: Vec<(Group, Pushes)>,
    /// The empty group of the preloaded relay.
    pub(super) empty: (Group, Pushes),
    /// The group that holds the preload.
    pub(super) full: (Group, Pushes),
    /// The runs under attack, when the run has them.
    pub(super) attacked: Option<Attacked>,
    /// Blobs sealed in all.
    pub(super) sealed: usize,
    /// CPU µs of sealing one blob.
    pub(super) seal_cpu_us: f64,
    /// Wall µs of sealing one blob.
    pub(super) seal_wall_us: f64,
}

/// Warm-up and timed pushes of the device from `device_seed` in `g` (its session's request ids
/// start at 2, after `Hello`); `seed` seeds the two batches.
fn pushes(g: &Group, device_seed: u64, timed: usize, seed: u64) -> Result<Pushes, BenchError> {
    let dev = device_key(device_seed);
    Ok(Pushes {
        warm: seal_pushes(g, &dev, WARMUP, 2, seed)?,
        timed: seal_pushes(g, &dev, timed, 2 + WARMUP as u64, seed + 1)?,
    })
}

impl Plan {
    /// Seals everything: `pushes` per throughput run (shared by the [`MANY`] devices in the
    /// multi-device runs), `samples` plus a tenth of warm-up per latency run, and with `attack`
    /// the runs under attack. Blocking: a few seconds of CPU for a full run.
    pub(super) fn seal(pushes_n: usize, samples: usize, attack: bool) -> Result<Self, BenchError> {
        let start = Instant::now();
        let cpu0 = this_thread_cpu();
        let main = Group::from_seed(1);
        let a = device_key(DEVICE_A);
        let one = pushes(&main, DEVICE_A, pushes_n, 1)?;
        let lat_n = samples + samples / 10;
        let latency_first = 2 + (WARMUP + pushes_n) as u64;
        let notify_first = latency_first + lat_n as u64;
        let latency = seal_pushes(&main, &a, lat_n, latency_first, 3)?;
        let notify = seal_pushes(&main, &a, lat_n, notify_first, 4)?;
        let per_device = pushes_n / MANY;
        let many = (0..MANY as u64)
            .map(|k| {
                let g = Group::from_seed(100 + k);
                let p = pushes(&g, DEVICE_MANY + k, per_device, 10 + 2 * k)?;
                Ok((g, p))
            })
            .collect::<Result<Vec<_>, BenchError>>()?;
        let empty_group = Group::from_seed(3);
        let empty = pushes(&empty_group, DEVICE_EMPTY, pushes_n, 50)?;
        let full_group = Group::from_seed(2);
        let full = pushes(&full_group, DEVICE_FULL, pushes_n, 60)?;
        let attacked = if attack {
            let many = many
                .iter()
                .zip(0u64..)
                .map(|((g, _), k)| pushes(g, DEVICE_MANY + k, per_device, 200 + 2 * k))
                .collect::<Result<Vec<_>, BenchError>>()?;
            // A new session: its Hello is request 1.
            let latency_first = 2;
            Some(Attacked {
                many,
                latency: seal_pushes(&main, &a, lat_n, latency_first, 300)?,
                latency_first,
            })
        } else {
            None
        };
        let attacked_n = attacked
            .as_ref()
            .map_or(0, |_| (WARMUP + per_device) * MANY + lat_n);
        let sealed =
            WARMUP * (3 + MANY) + pushes_n * 3 + per_device * MANY + 2 * lat_n + attacked_n;
        #[allow(clippy::cast_precision_loss)]
        let per_blob = 1e6 / sealed.max(1) as f64;
        Ok(Self {
            main,
            one,
            latency,
            notify,
            latency_first,
            notify_first,
            many,
            empty: (empty_group, empty),
            full: (full_group, full),
            attacked,
            sealed,
            seal_cpu_us: (this_thread_cpu() - cpu0) * per_blob,
            seal_wall_us: start.elapsed().as_secs_f64() * per_blob,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_request_ids_follow_the_run() {
        let plan = Plan::seal(32, 10, false).unwrap();
        assert!(plan.attacked.is_none());
        assert_eq!(plan.one.timed.len(), 32);
        assert_eq!((plan.latency.len(), plan.notify.len()), (11, 11));
        assert_eq!(plan.many.len(), MANY);
        assert!(plan.many.iter().all(|(_, p)| p.timed.len() == 2));
        let counted = plan.one.warm.len()
            + plan.one.timed.len()
            + plan.latency.len()
            + plan.notify.len()
            + plan
                .many
                .iter()
                .map(|(_, p)| p.warm.len() + p.timed.len())
                .sum::<usize>()
            + [&plan.empty.1, &plan.full.1]
                .iter()
                .map(|p| p.warm.len() + p.timed.len())
                .sum::<usize>();
        assert_eq!(plan.sealed, counted);
        assert_eq!(plan.latency_first, 2 + WARMUP as u64 + 32);
        assert_eq!(plan.notify_first, plan.latency_first + 11);
        let ids: Vec<_> = plan.many.iter().map(|(g, _)| g.id).collect();
        assert!(!ids.contains(&plan.main.id) && !ids.contains(&plan.full.0.id));
        assert_ne!(plan.empty.0.id, plan.full.0.id);
    }

    #[test]
    fn the_runs_under_attack_push_new_blobs_of_the_same_devices() {
        let quiet = Plan::seal(32, 10, false).unwrap();
        let plan = Plan::seal(32, 10, true).unwrap();
        let attacked = plan.attacked.as_ref().unwrap();
        assert_eq!(attacked.many.len(), MANY);
        assert_eq!(attacked.latency.len(), 11);
        let per_group = (WARMUP + 2) * MANY;
        assert_eq!(plan.sealed, quiet.sealed + per_group + 11);
        for ((_, p), a) in plan.many.iter().zip(&attacked.many) {
            assert_eq!((a.warm.len(), a.timed.len()), (WARMUP, 2));
            let quiet_ids: Vec<_> = p.warm.iter().chain(&p.timed).map(|s| s.blob_id).collect();
            assert!(
                a.warm
                    .iter()
                    .chain(&a.timed)
                    .all(|s| !quiet_ids.contains(&s.blob_id)),
                "new blobs, not duplicates"
            );
        }
        let latency_ids: Vec<_> = plan.latency.iter().map(|s| s.blob_id).collect();
        assert!(
            attacked
                .latency
                .iter()
                .all(|s| !latency_ids.contains(&s.blob_id))
        );
    }
}
