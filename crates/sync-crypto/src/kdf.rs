//! Passphrase groups: Argon2id parameters chosen once by the group's creator.

use argon2::{Algorithm, Argon2, Block, Params, Version};
use rand_core::CryptoRng;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use crate::error::CryptoError;
use crate::secrets::GroupSecret;

const MIB_KIB: u32 = 1024;
const GIB: u64 = 1024 * 1024 * 1024;

/// Argon2id cost parameters. Chosen once when a group is created and carried by its
/// [`GroupDescriptor`], so every device derives the same secret whatever its RAM.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct KdfParams {
    /// Memory cost in KiB.
    pub memory_kib: u32,
    /// Number of passes (t).
    pub iterations: u32,
    /// Lanes (p). The result depends on it; computation here is single-threaded.
    pub parallelism: u32,
}

impl KdfParams {
    /// The OWASP floor: 19 MiB, t=2, p=1. Also the fixed cost of invite mailbox keys.
    pub const OWASP_MIN: KdfParams = KdfParams {
        memory_kib: 19 * MIB_KIB,
        iterations: 2,
        parallelism: 1,
    };

    /// 4–8 GiB devices: 46 MiB, t=1 (OWASP's equal-cost alternative to 19 MiB/t=2).
    pub const TIER_MID: KdfParams = KdfParams {
        memory_kib: 46 * MIB_KIB,
        iterations: 1,
        parallelism: 1,
    };

    /// Devices with 8 GiB or more: 64 MiB, t=3.
    pub const TIER_HIGH: KdfParams = KdfParams {
        memory_kib: 64 * MIB_KIB,
        iterations: 3,
        parallelism: 1,
    };

    /// Largest memory cost a joining device accepts: 4 GiB.
    pub const MAX_MEMORY_KIB: u32 = 4 * 1024 * MIB_KIB;
    /// Most passes a joining device accepts.
    pub const MAX_ITERATIONS: u32 = 64;
    /// Most lanes a joining device accepts.
    pub const MAX_PARALLELISM: u32 = 16;

    /// Parameters for a group created on a device with `ram_bytes` of RAM:
    /// < 4 GiB → 19 MiB/t=2; 4–8 GiB → 46 MiB/t=1; ≥ 8 GiB → 64 MiB/t=3; always p=1.
    pub fn for_ram_bytes(ram_bytes: u64) -> Self {
        if ram_bytes >= 8 * GIB {
            Self::TIER_HIGH
        } else if ram_bytes >= 4 * GIB {
            Self::TIER_MID
        } else {
            Self::OWASP_MIN
        }
    }

    /// Checks the parameters against the OWASP floor (19 MiB with t ≥ 2, or 46 MiB with t = 1)
    /// and the ceilings above.
    pub fn validate(&self) -> Result<(), CryptoError> {
        if self.memory_kib > Self::MAX_MEMORY_KIB
            || self.iterations > Self::MAX_ITERATIONS
            || self.parallelism == 0
            || self.parallelism > Self::MAX_PARALLELISM
        {
            return Err(CryptoError::KdfParamsOutOfRange);
        }
        // OWASP: 19 MiB with t >= 2, or 46 MiB with t = 1.
        let enough = self.memory_kib >= Self::OWASP_MIN.memory_kib
            && (self.iterations >= Self::OWASP_MIN.iterations
                || (self.iterations >= 1 && self.memory_kib >= Self::TIER_MID.memory_kib));
        if !enough {
            return Err(CryptoError::KdfParamsTooWeak);
        }
        Ok(())
    }
}

/// How a group's secret came to be. Public: it travels in invites and holds no secret.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum GroupDescriptor {
    /// The secret is 32 random bytes and travels in the invite itself.
    Random,
    /// The secret is Argon2id(passphrase, salt, params).
    Passphrase {
        /// Cost parameters picked by the creator.
        params: KdfParams,
        /// 16 random bytes picked by the creator.
        #[serde(with = "serde_bytes")]
        salt: [u8; 16],
    },
}

impl GroupDescriptor {
    /// A new passphrase group: parameters by the creator's RAM, a fresh random salt.
    pub fn new_passphrase<R: CryptoRng + ?Sized>(rng: &mut R, ram_bytes: u64) -> Self {
        let mut salt = [0u8; 16];
        rng.fill_bytes(&mut salt);
        GroupDescriptor::Passphrase {
            params: KdfParams::for_ram_bytes(ram_bytes),
            salt,
        }
    }

    /// Derives the group secret from `passphrase` (its exact UTF-8 bytes) with the descriptor's
    /// parameters, whatever this device's RAM. Refuses parameters outside
    /// [`KdfParams::validate`] and [`GroupDescriptor::Random`] groups.
    pub fn derive_secret(&self, passphrase: &str) -> Result<GroupSecret, CryptoError> {
        match self {
            GroupDescriptor::Random => Err(CryptoError::NotPassphraseGroup),
            GroupDescriptor::Passphrase { params, salt } => {
                params.validate()?;
                let out = argon2id(params, passphrase.as_bytes(), salt)?;
                Ok(GroupSecret::from_zeroizing(out))
            }
        }
    }
}

/// Argon2id → 32 bytes. Allocation failure is an error, not an abort, and the work memory is
/// wiped before it is freed.
pub(crate) fn argon2id(
    params: &KdfParams,
    password: &[u8],
    salt: &[u8],
) -> Result<Zeroizing<[u8; 32]>, CryptoError> {
    let argon_params = Params::new(
        params.memory_kib,
        params.iterations,
        params.parallelism,
        Some(32),
    )
    .map_err(|_| CryptoError::KdfParamsOutOfRange)?;
    let blocks_len = argon_params.block_count();
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, argon_params);

    let mut blocks: Vec<Block> = Vec::new();
    blocks
        .try_reserve_exact(blocks_len)
        .map_err(|_| CryptoError::KdfOutOfMemory {
            memory_kib: params.memory_kib,
        })?;
    blocks.resize(blocks_len, Block::default());

    let mut out = Zeroizing::new([0u8; 32]);
    let result = argon.hash_password_into_with_memory(password, salt, out.as_mut(), &mut blocks);
    blocks.zeroize();
    result.map_err(|_| CryptoError::Kdf)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::GroupKeys;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    const PASS: &str = "tulip orbit canyon 42";

    fn params(memory_kib: u32, iterations: u32, parallelism: u32) -> KdfParams {
        KdfParams {
            memory_kib,
            iterations,
            parallelism,
        }
    }

    #[test]
    fn tiers_follow_ram_at_the_boundaries() {
        let low = params(19 * 1024, 2, 1);
        let mid = params(46 * 1024, 1, 1);
        let high = params(64 * 1024, 3, 1);
        assert_eq!(KdfParams::OWASP_MIN, low);
        for (ram, want) in [
            (0, low),
            (2 * GIB, low),
            (4 * GIB - 1, low),
            (4 * GIB, mid),
            (8 * GIB - 1, mid),
            (8 * GIB, high),
            (16 * GIB, high),
            (u64::MAX, high),
        ] {
            assert_eq!(KdfParams::for_ram_bytes(ram), want, "ram = {ram}");
            assert_eq!(want.validate(), Ok(()));
        }
    }

    #[test]
    fn validate_refuses_weak_and_absurd_params() {
        use CryptoError::{KdfParamsOutOfRange as Range, KdfParamsTooWeak as Weak};
        for (p, want) in [
            (params(19 * 1024, 1, 1), Weak),
            (params(19 * 1024 - 1, 2, 1), Weak),
            (params(12 * 1024, 4, 1), Weak), // below the memory floor, whatever the passes
            (params(46 * 1024 - 1024, 1, 1), Weak),
            (params(19 * 1024, 0, 1), Weak),
            (params(0, 0, 0), Range),
            (params(19 * 1024, 2, 0), Range),
            (params(19 * 1024, 2, 17), Range),
            (params(19 * 1024, 65, 1), Range),
            (params(4 * 1024 * 1024 + 1, 2, 1), Range),
            (params(u32::MAX, u32::MAX, u32::MAX), Range),
        ] {
            assert_eq!(p.validate(), Err(want.clone()), "{p:?}");
            let d = GroupDescriptor::Passphrase {
                params: p,
                salt: [0; 16],
            };
            // Refused before any Argon2 work or allocation.
            assert_eq!(d.derive_secret(PASS).map(|_| ()), Err(want));
        }
        assert_eq!(params(4 * 1024 * 1024, 64, 16).validate(), Ok(()));
    }

    #[test]
    fn random_groups_have_no_passphrase() {
        assert!(matches!(
            GroupDescriptor::Random.derive_secret(PASS),
            Err(CryptoError::NotPassphraseGroup)
        ));
    }

    #[test]
    fn new_passphrase_picks_tier_and_random_salt() {
        let mut rng = ChaCha20Rng::seed_from_u64(9);
        let a = GroupDescriptor::new_passphrase(&mut rng, 2 * GIB);
        let b = GroupDescriptor::new_passphrase(&mut rng, 16 * GIB);
        let (
            GroupDescriptor::Passphrase {
                params: pa,
                salt: sa,
            },
            GroupDescriptor::Passphrase {
                params: pb,
                salt: sb,
            },
        ) = (&a, &b)
        else {
            panic!("passphrase descriptors expected");
        };
        assert_eq!(*pa, KdfParams::OWASP_MIN);
        assert_eq!(*pb, KdfParams::TIER_HIGH);
        assert_ne!(sa, sb);
    }

    #[test]
    fn descriptor_serde_round_trips_with_salt_as_bin() {
        let d = GroupDescriptor::Passphrase {
            params: KdfParams::TIER_MID,
            salt: [0xee; 16],
        };
        let bytes = rmp_serde::to_vec(&d).unwrap();
        let bin16 = [&[0xc4, 16][..], &[0xee; 16][..]].concat();
        assert!(
            bytes.windows(18).any(|w| w == bin16),
            "salt is a 16-byte bin"
        );
        assert_eq!(rmp_serde::from_slice::<GroupDescriptor>(&bytes).unwrap(), d);
        let r = rmp_serde::to_vec(&GroupDescriptor::Random).unwrap();
        assert_eq!(
            rmp_serde::from_slice::<GroupDescriptor>(&r).unwrap(),
            GroupDescriptor::Random
        );
    }

    /// A device joins with whatever RAM it has: parameters come from the descriptor only.
    struct Device {
        ram_bytes: u64,
    }

    impl Device {
        fn create(&self, rng: &mut ChaCha20Rng) -> Vec<u8> {
            let d = GroupDescriptor::new_passphrase(rng, self.ram_bytes);
            rmp_serde::to_vec(&d).unwrap() // travels in the invite
        }

        fn join(&self, invite_descriptor: &[u8], passphrase: &str) -> GroupKeys {
            let d: GroupDescriptor = rmp_serde::from_slice(invite_descriptor).unwrap();
            GroupKeys::derive(&d.derive_secret(passphrase).unwrap())
        }
    }

    #[test]
    fn devices_with_different_ram_join_one_passphrase_group() {
        let small = Device { ram_bytes: 2 * GIB };
        let big = Device {
            ram_bytes: 16 * GIB,
        };
        // Their own tiers differ, so deriving with local parameters would split the group.
        assert_ne!(
            KdfParams::for_ram_bytes(small.ram_bytes),
            KdfParams::for_ram_bytes(big.ram_bytes)
        );

        let mut rng = ChaCha20Rng::seed_from_u64(10);
        let invite = small.create(&mut rng);
        let a = small.join(&invite, PASS);
        let b = big.join(&invite, PASS);
        assert_eq!(a.group_id(), b.group_id());
        let (ka, kb) = (
            a.epoch_key(crate::KeyEpoch(0)),
            b.epoch_key(crate::KeyEpoch(0)),
        );
        assert_eq!(ka.unwrap().expose_bytes(), kb.unwrap().expose_bytes());

        // Another passphrase, or the same passphrase with another salt: another group.
        assert_ne!(
            big.join(&invite, "tulip orbit canyon 43").group_id(),
            a.group_id()
        );
        let other_salt = small.create(&mut rng);
        assert_ne!(big.join(&other_salt, PASS).group_id(), a.group_id());
    }

    #[test]
    fn small_device_joins_group_created_on_big_device() {
        // The expensive tier (64 MiB, t=3), run once.
        let mut rng = ChaCha20Rng::seed_from_u64(11);
        let big = Device {
            ram_bytes: 16 * GIB,
        };
        let small = Device { ram_bytes: 2 * GIB };
        let invite = big.create(&mut rng);
        assert_eq!(
            small.join(&invite, PASS).group_id(),
            big.join(&invite, PASS).group_id()
        );
    }
}
