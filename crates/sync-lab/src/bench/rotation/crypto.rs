//! The in-process figures of a key rotation, on one thread with its own CPU clock: the bare
//! hybrid KEM envelope and X25519 alone (the baselines), what a member pays on each read of the
//! group (opening a grant, checking an enrollment), and the admin's planning of one rotation of
//! a group of `n` devices with the calls the client makes: the rotation record
//! (`GroupRecord::next`) and one `seal_grant` per other device, to its real hybrid KEM public
//! key; then the sizes of the grant envelope and of the whole `GroupUpdate` frame.

use std::hint::black_box;

use iroh::SecretKey;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use sync_crypto::{
    Change, DeviceKey, Enrollment, EnvelopeContext, EpochSecret, GroupKeys, GroupRecord,
    GroupSecret, GroupState, KemPublicKey, KeyEpoch, open_envelope, open_grant, seal_envelope,
    seal_grant,
};
use sync_types::{FrameCodec, Grant, GroupUpdate, Message, Payload};

use super::super::BenchError;
use super::super::cpu::this_thread_cpu;

/// Payload of the bare envelope baseline: the size of an epoch secret.
pub(in crate::bench) const BARE_PAYLOAD: usize = 32;

/// The bare hybrid KEM envelope, X25519 alone, and a member's costs per read of the group.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(in crate::bench) struct Baselines {
    /// Operations timed of each kind.
    pub(in crate::bench) samples: usize,
    /// `seal_envelope` of a [`BARE_PAYLOAD`]-byte payload, CPU µs.
    pub(in crate::bench) seal_us: f64,
    /// `open_envelope` of it, CPU µs.
    pub(in crate::bench) open_us: f64,
    /// Its length in bytes.
    pub(in crate::bench) envelope_len: usize,
    /// One X25519 scalar multiplication of a public point (the Diffie-Hellman), CPU µs.
    pub(in crate::bench) x25519_us: f64,
    /// `open_grant` of a one-epoch grant, CPU µs.
    pub(in crate::bench) open_grant_us: f64,
    /// Decoding and checking one enrollment against the group's records, CPU µs.
    pub(in crate::bench) check_enrollment_us: f64,
}

/// The admin's planning of one rotation of a group of `devices` devices.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(in crate::bench) struct Planned {
    /// Devices in the group, the admin included.
    pub(in crate::bench) devices: usize,
    /// Grants sealed per rotation (`devices - 1`).
    pub(in crate::bench) grants: usize,
    /// Rotations planned to time them.
    pub(in crate::bench) reps: usize,
    /// Sealing one grant, CPU µs.
    pub(in crate::bench) grant_us: f64,
    /// The new epoch's keys and the signed rotation record, CPU µs.
    pub(in crate::bench) record_us: f64,
    /// One grant envelope, bytes.
    pub(in crate::bench) envelope_len: usize,
    /// The encoded rotation record, bytes.
    pub(in crate::bench) record_len: usize,
    /// The whole `GroupUpdate` frame (length prefix, record, every grant), bytes.
    pub(in crate::bench) request_len: usize,
}

/// This thread's CPU seconds, current to now: the kernel adds a running thread's time at its
/// next tick or switch, and yielding is a switch (without it a block shorter than a tick can
/// read as zero).
fn cpu_now() -> f64 {
    std::thread::yield_now();
    this_thread_cpu()
}

/// CPU µs per operation of `ops` operations that took `secs` of this thread's CPU.
fn per_op_us(secs: f64, ops: usize) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let ops = ops.max(1) as f64;
    secs * 1e6 / ops
}

fn crypto(what: &str, e: impl std::fmt::Display) -> BenchError {
    BenchError::Protocol(format!("{what}: {e}"))
}

/// Times `samples` of each baseline operation on the calling thread (blocking).
pub(in crate::bench) fn baselines(samples: usize) -> Result<Baselines, BenchError> {
    let samples = samples.max(1);
    let mut rng = ChaCha20Rng::seed_from_u64(0x5EA1);
    let keys = GroupKeys::derive(&GroupSecret::random(&mut rng));
    let group = keys.group_id();
    let sender = DeviceKey::random(&mut rng);
    let recipient = DeviceKey::random(&mut rng);
    let kem = recipient.kem_keypair();
    let public = kem.public_key();
    let ctx = EnvelopeContext {
        group,
        epoch: KeyEpoch(1),
        sender: sender.device_id(),
        recipient: recipient.device_id(),
    };
    let payload = [7u8; BARE_PAYLOAD];

    let cpu = cpu_now();
    let mut envelopes = Vec::with_capacity(samples);
    for _ in 0..samples {
        envelopes.push(
            seal_envelope(&mut rng, &public, &ctx, &payload)
                .map_err(|e| crypto("seal_envelope", e))?,
        );
    }
    let seal_us = per_op_us(cpu_now() - cpu, samples);
    let envelope_len = envelopes.first().map_or(0, Vec::len);

    let cpu = cpu_now();
    for e in &envelopes {
        let opened = open_envelope(&kem, &ctx, e).map_err(|e| crypto("open_envelope", e))?;
        black_box(opened);
    }
    let open_us = per_op_us(cpu_now() - cpu, samples);

    // X25519 through the Ed25519 key of an iroh endpoint, as a Montgomery point: the same
    // curve25519-dalek ladder the envelope's X25519 half runs.
    let point = SecretKey::generate()
        .public()
        .as_verifying_key()
        .to_montgomery();
    let scalars: Vec<[u8; 32]> = (0..samples)
        .map(|_| DeviceKey::random(&mut rng).secret_bytes())
        .collect();
    let cpu = cpu_now();
    for s in &scalars {
        black_box(black_box(point).mul_clamped(*s));
    }
    let x25519_us = per_op_us(cpu_now() - cpu, samples);

    let epoch = KeyEpoch(1);
    let secret = EpochSecret::random(&mut rng);
    let grants = (0..samples)
        .map(|_| {
            seal_grant(
                &mut rng,
                group,
                epoch,
                sender.device_id(),
                recipient.device_id(),
                &public,
                &[(epoch, secret.clone())],
            )
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| crypto("seal_grant", e))?;
    let cpu = cpu_now();
    for g in &grants {
        let opened = open_grant(
            &kem,
            group,
            epoch,
            sender.device_id(),
            recipient.device_id(),
            g,
        )
        .map_err(|e| crypto("open_grant", e))?;
        black_box(opened);
    }
    let open_grant_us = per_op_us(cpu_now() - cpu, samples);

    let mut state = GroupState::new(group);
    let genesis = GroupRecord::genesis(&keys, &sender).map_err(|e| crypto("genesis", e))?;
    state.apply(&genesis).map_err(|e| crypto("genesis", e))?;
    let enrollments = (0..samples)
        .map(|_| {
            let device = DeviceKey::random(&mut rng);
            Enrollment::new(&mut rng, &keys, &device, "bench device", None).map(|e| e.encode())
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| crypto("enrollment", e))?;
    let cpu = cpu_now();
    for bytes in &enrollments {
        let e = Enrollment::decode(bytes).map_err(|e| crypto("enrollment", e))?;
        state
            .check_enrollment(&e)
            .map_err(|e| crypto("enrollment", e))?;
        black_box(e);
    }
    let check_enrollment_us = per_op_us(cpu_now() - cpu, samples);

    Ok(Baselines {
        samples,
        seal_us,
        open_us,
        envelope_len,
        x25519_us,
        open_grant_us,
        check_enrollment_us,
    })
}

/// Plans rotations of a group of `devices` devices (the admin and `devices - 1` others whose
/// enrollments it holds), enough of them to seal at least `min_grants` grants, and times the
/// record and the grants apart (blocking).
pub(in crate::bench) fn plan(devices: usize, min_grants: usize) -> Result<Planned, BenchError> {
    let devices = devices.max(2);
    let grants = devices - 1;
    let reps = min_grants.div_ceil(grants).max(1);
    let mut rng = ChaCha20Rng::seed_from_u64(0x0107 ^ devices as u64);
    let keys = GroupKeys::derive(&GroupSecret::random(&mut rng));
    let group = keys.group_id();
    let admin = DeviceKey::random(&mut rng);
    let me = admin.device_id();
    // Each other device's KEM key as the admin reads it: from its encoded enrollment.
    let mut others = Vec::with_capacity(grants);
    for _ in 0..grants {
        let d = DeviceKey::random(&mut rng);
        let e = Enrollment::new(&mut rng, &keys, &d, "bench device", None)
            .map_err(|e| crypto("enrollment", e))?;
        let e = Enrollment::decode(&e.encode()).map_err(|e| crypto("enrollment", e))?;
        others.push((d.device_id(), e.kem().clone()));
    }
    let mut state = GroupState::new(group);
    let genesis = GroupRecord::genesis(&keys, &admin).map_err(|e| crypto("genesis", e))?;
    state.apply(&genesis).map_err(|e| crypto("genesis", e))?;
    let keep: Vec<_> = std::iter::once(me)
        .chain(others.iter().map(|(d, _)| *d))
        .collect();
    let epoch = KeyEpoch(state.epoch().0 + 1);

    // The record: the next epoch's keys, then the record signed by the admin and the current
    // epoch's auth key; as many times as grants are sealed below, so both take long enough to
    // time.
    let record_reps = reps.max(min_grants);
    let cpu = cpu_now();
    let mut planned = None;
    for _ in 0..record_reps {
        let secret = EpochSecret::random(&mut rng);
        let mut next = keys.clone();
        next.add_epoch(epoch, secret.clone())
            .map_err(|e| crypto("new epoch", e))?;
        let record = GroupRecord::next(
            &state,
            &next,
            &admin,
            Change::Rotate {
                keep: keep.clone(),
                revoke: Vec::new(),
            },
        )
        .map_err(|e| crypto("rotation record", e))?;
        planned = Some((record, secret));
    }
    let record_us = per_op_us(cpu_now() - cpu, record_reps);
    let (record, secret) =
        planned.ok_or_else(|| BenchError::Protocol("no rotation planned".into()))?;
    let mut check = state.clone();
    check
        .apply(&record)
        .map_err(|e| crypto("the rotation record does not apply", e))?;

    // The grants: one envelope per other device, as the client seals them.
    let secrets = [(epoch, secret)];
    let cpu = cpu_now();
    let mut last = Vec::new();
    for _ in 0..reps {
        last = seal_grants(&mut rng, group, epoch, me, &others, &secrets)?;
    }
    let grant_us = per_op_us(cpu_now() - cpu, reps * grants);

    let envelope_len = last.first().map_or(0, |g| g.envelope.len());
    let record_bytes = record.encode();
    let update = Message::GroupUpdate(GroupUpdate {
        request_id: 10,
        record: Some(Payload::from(record_bytes.clone())),
        grants: last,
    });
    let request_len = FrameCodec::default()
        .encode_to_bytes(&update)
        .map_err(BenchError::Frame)?
        .len();
    Ok(Planned {
        devices,
        grants,
        reps,
        grant_us,
        record_us,
        envelope_len,
        record_len: record_bytes.len(),
        request_len,
    })
}

/// One grant per device of `others`, carrying `secrets`.
fn seal_grants(
    rng: &mut ChaCha20Rng,
    group: sync_types::GroupId,
    epoch: KeyEpoch,
    me: sync_types::DeviceId,
    others: &[(sync_types::DeviceId, KemPublicKey)],
    secrets: &[(KeyEpoch, EpochSecret)],
) -> Result<Vec<Grant>, BenchError> {
    others
        .iter()
        .map(|(d, kem)| {
            let envelope = seal_grant(&mut *rng, group, epoch, me, *d, kem, secrets)
                .map_err(|e| crypto("seal_grant", e))?;
            Ok(Grant {
                device: *d,
                epoch: epoch.0,
                envelope: Payload::from(envelope),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn baselines_measure_every_operation() {
        let b = baselines(4).unwrap();
        assert_eq!(
            b.envelope_len,
            BARE_PAYLOAD + sync_crypto::ENVELOPE_OVERHEAD
        );
        for v in [
            b.seal_us,
            b.open_us,
            b.x25519_us,
            b.open_grant_us,
            b.check_enrollment_us,
        ] {
            assert!(v.is_finite() && v >= 0.0, "{b:?}");
        }
    }

    #[test]
    fn a_planned_rotation_has_one_grant_per_other_device_in_its_request() {
        let p = plan(3, 4).unwrap();
        assert_eq!((p.devices, p.grants, p.reps), (3, 2, 2));
        assert!(p.envelope_len > sync_crypto::ENVELOPE_OVERHEAD, "{p:?}");
        assert!(p.record_len > 0);
        assert!(
            p.request_len > p.record_len + 2 * p.envelope_len,
            "the request carries the record and both grants: {p:?}"
        );
    }
}
