//! Micro-benchmarks of the device's cryptography:
//!
//! - `seal/1kib`, `seal/1mib`: sealing one blob (random nonce, XChaCha20-Poly1305 over the
//!   plaintext, Ed25519 signature over the sealed bytes); throughput in plaintext bytes.
//! - `open/1kib`, `open/1mib`: opening it again (strict signature check, then the AEAD).
//! - `key_schedule/derive`: deriving a group's keys from its secret (HKDF-SHA-256 expansions
//!   and the group's Ed25519 auth key), done once per group when a device loads it.
//! - `argon2id/owasp_min`, `argon2id/tier_mid`, `argon2id/tier_high`: deriving a passphrase
//!   group's secret at each of the three Argon2id cost tiers a group can be created with (19 MiB
//!   t=2, 46 MiB t=1, 64 MiB t=3). Each call takes tens of milliseconds, so this group takes
//!   few samples.
//! - `hybrid kem/seal_envelope`, `hybrid kem/open_envelope`: sealing a 32-byte epoch secret to
//!   a device's hybrid KEM public key (X25519 + ML-KEM-768 encapsulation, HKDF combiner,
//!   ChaCha20-Poly1305) and opening it again; done once per member device at each key rotation.
//! - `hybrid kem/kem_keypair`: deriving a device's hybrid KEM key pair from its Ed25519 seed
//!   (HKDF, X25519 base-point multiplication, ML-KEM-768 key generation).
//!
//! Run: `cargo bench -p sync-crypto` (`-- --quick` for a short run, `-- argon2id` for one group,
//! `-- "hybrid kem"` for the envelopes).

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, SamplingMode, Throughput};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use sync_crypto::{
    DeviceKey, EnvelopeContext, GroupDescriptor, GroupKeys, GroupSecret, KdfParams, KeyEpoch, open,
    open_envelope, seal, seal_envelope,
};
use sync_types::BlobId;

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

fn seal_and_open(c: &mut Criterion) {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let keys = GroupKeys::derive(&GroupSecret::random(&mut rng));
    let group = keys.group_id();
    let device = DeviceKey::random(&mut rng);
    let sender = device.device_id();
    let key = keys
        .epoch_key(keys.current_epoch())
        .expect("a new group holds its current epoch key");
    let blob = BlobId::random(&mut rng);
    let sizes = [("1kib", KIB), ("1mib", MIB)];

    let mut sealing = c.benchmark_group("seal");
    for (name, len) in sizes {
        let plain = vec![0x5a; len];
        sealing.throughput(Throughput::Bytes(len as u64));
        sealing.bench_function(name, |b| {
            b.iter(|| {
                seal(&mut rng, &key, &group, &device, &blob, 1, black_box(&plain))
                    .expect("sealing a blob of a valid size")
            });
        });
    }
    sealing.finish();

    let mut opening = c.benchmark_group("open");
    for (name, len) in sizes {
        let sealed = seal(&mut rng, &key, &group, &device, &blob, 1, &vec![0x5a; len])
            .expect("sealing a blob of a valid size");
        opening.throughput(Throughput::Bytes(len as u64));
        opening.bench_function(name, |b| {
            b.iter(|| {
                open(&keys, &group, &blob, &sender, black_box(&sealed))
                    .expect("the blob just sealed opens")
            });
        });
    }
    opening.finish();
}

fn key_schedule(c: &mut Criterion) {
    let secret = GroupSecret::random(&mut ChaCha20Rng::seed_from_u64(2));
    c.benchmark_group("key_schedule")
        .bench_function("derive", |b| {
            b.iter(|| GroupKeys::derive(black_box(&secret)));
        });
}

fn argon2id(c: &mut Criterion) {
    let mut group = c.benchmark_group("argon2id");
    // Tens of milliseconds per call: few samples, one call each.
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500));
    for (name, params) in [
        ("owasp_min", KdfParams::OWASP_MIN),
        ("tier_mid", KdfParams::TIER_MID),
        ("tier_high", KdfParams::TIER_HIGH),
    ] {
        let descriptor = GroupDescriptor::Passphrase {
            params,
            salt: [3; 16],
        };
        group.bench_function(name, |b| {
            b.iter(|| {
                descriptor
                    .derive_secret(black_box("correct horse battery staple"))
                    .expect("the crate's own tiers are valid parameters")
            });
        });
    }
    group.finish();
}

fn hybrid_kem(c: &mut Criterion) {
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let keys = GroupKeys::derive(&GroupSecret::random(&mut rng));
    let admin = DeviceKey::random(&mut rng);
    let member = DeviceKey::random(&mut rng);
    let keypair = member.kem_keypair();
    let public = keypair.public_key();
    let ctx = EnvelopeContext {
        group: keys.group_id(),
        epoch: KeyEpoch(1),
        sender: admin.device_id(),
        recipient: member.device_id(),
    };
    let secret = [0x5a; 32];
    let envelope =
        seal_envelope(&mut rng, &public, &ctx, &secret).expect("sealing to a derived key pair");

    let mut group = c.benchmark_group("hybrid kem");
    group.bench_function("seal_envelope", |b| {
        b.iter(|| {
            seal_envelope(&mut rng, &public, &ctx, black_box(&secret))
                .expect("sealing to a derived key pair")
        });
    });
    group.bench_function("open_envelope", |b| {
        b.iter(|| {
            open_envelope(&keypair, &ctx, black_box(&envelope))
                .expect("the envelope just sealed opens")
        });
    });
    group.bench_function("kem_keypair", |b| {
        b.iter(|| black_box(&member).kem_keypair());
    });
    group.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    seal_and_open(&mut c);
    key_schedule(&mut c);
    argon2id(&mut c);
    hybrid_kem(&mut c);
    c.final_summary();
}
