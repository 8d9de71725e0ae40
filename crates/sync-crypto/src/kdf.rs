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

    /// Parameters for a group created on a device with `ram_bytes` of RAM (SPEC §3):
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

    /// Checks the parameters against the floor (at least 19 MiB, and memory × passes at least
    /// 19 MiB × 2, which admits OWASP's 46 MiB/t=1) and the ceilings above.
    pub fn validate(&self) -> Result<(), CryptoError> {
        if self.memory_kib > Self::MAX_MEMORY_KIB
            || self.iterations > Self::MAX_ITERATIONS
            || self.parallelism == 0
            || self.parallelism > Self::MAX_PARALLELISM
        {
            return Err(CryptoError::KdfParamsOutOfRange);
        }
        let floor = Self::OWASP_MIN;
        let cost = u64::from(self.memory_kib) * u64::from(self.iterations);
        let floor_cost = u64::from(floor.memory_kib) * u64::from(floor.iterations);
        if self.memory_kib < floor.memory_kib || cost < floor_cost {
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
                Ok(GroupSecret::from_bytes(*out))
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
