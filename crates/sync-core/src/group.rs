//! A group as a device holds it, and what an invite gives a device that joins.

use sync_crypto::{EpochSecret, GroupDescriptor, GroupKeys, GroupSecret, KeyEpoch};
use sync_types::{RelayAddr, RelayId};

use crate::{Invite, InviteError};

/// A group as a device holds it: how its secret came to be (public), and the secret.
/// `Debug` redacts the secret.
#[derive(Clone, Debug)]
pub struct GroupMaterial {
    /// How the secret came to be: random, or a passphrase with its Argon2id parameters.
    pub descriptor: GroupDescriptor,
    /// The group secret.
    pub secret: GroupSecret,
}

impl GroupMaterial {
    /// A new group with a random secret from `rng`.
    pub fn random<R: rand_core::CryptoRng + ?Sized>(rng: &mut R) -> Self {
        Self {
            descriptor: GroupDescriptor::Random,
            secret: GroupSecret::random(rng),
        }
    }

    /// Derives the group's keys (and with them its [`sync_types::GroupId`]).
    pub fn keys(&self) -> GroupKeys {
        GroupKeys::derive(&self.secret)
    }
}

/// What an invite gives a device that joins: where the group's relay is, the group, and the
/// group's current key epoch (once it rotated). `Debug` redacts the secrets.
#[derive(Clone, Debug)]
pub struct InvitedGroup {
    /// The relay named by the invite.
    pub relay: RelayAddr,
    /// The group, its secret included.
    pub group: GroupMaterial,
    /// The group's key epoch past 0 and its secret, if it rotated.
    pub epoch: Option<(KeyEpoch, EpochSecret)>,
    /// The invite's id (the device names it when it enrolls, so the inviter can grant it the
    /// group's history).
    pub invite_id: [u8; 16],
}

impl Invite {
    /// The relay the invite names: its id and addresses as the inviting device wrote them.
    pub fn relay(&self) -> RelayAddr {
        RelayAddr {
            id: RelayId::from_bytes(*self.relay_id()),
            addrs: self.relay_addrs().to_vec(),
        }
    }

    /// Opens the invite for a joining device at `now_ms`: checks its expiry, takes or derives
    /// the group secret ([`Invite::group_secret`]: `passphrase` is needed for passphrase groups
    /// and checked against the group id) and returns the relay with the group material.
    pub fn into_group(
        self,
        passphrase: Option<&str>,
        now_ms: u64,
    ) -> Result<InvitedGroup, InviteError> {
        self.check(now_ms)?;
        let secret = self.group_secret(passphrase)?;
        Ok(InvitedGroup {
            relay: self.relay(),
            group: GroupMaterial {
                descriptor: self.group().clone(),
                secret,
            },
            epoch: self.epoch(),
            invite_id: *self.invite_id(),
        })
    }
}

#[cfg(test)]
mod tests {
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    use super::*;
    use crate::InviteParams;

    const NOW: u64 = 1_800_000_000_000;

    fn invite(group: &GroupMaterial, ttl_secs: u64) -> Invite {
        Invite::create(
            &mut ChaCha20Rng::seed_from_u64(1),
            InviteParams {
                relay_id: [9; 32],
                relay_addrs: vec!["127.0.0.1:7440".into(), "relay.example:7440".into()],
                group_id: group.keys().group_id(),
                group: group.descriptor.clone(),
                secret: Some(group.secret.clone()),
                ttl: std::time::Duration::from_secs(ttl_secs),
            },
            NOW,
        )
        .expect("invite")
    }

    #[test]
    fn an_invite_of_a_rotated_group_carries_its_epoch_and_one_at_epoch_0_does_not() {
        let group = GroupMaterial::random(&mut ChaCha20Rng::seed_from_u64(3));
        let plain = invite(&group, 60);
        let at_zero = plain
            .clone()
            .with_epoch(KeyEpoch(0), &EpochSecret::from_bytes([1; 32]));
        assert_eq!(
            at_zero.to_bytes(),
            plain.to_bytes(),
            "epoch 0 changes nothing"
        );
        let rotated = plain.with_epoch(KeyEpoch(4), &EpochSecret::from_bytes([7; 32]));
        let back = Invite::from_qr_payload(&rotated.to_qr_payload()).expect("decodes");
        assert!(
            !format!("{back:?}").contains("0707"),
            "Debug shows no secret"
        );
        let joined = back.into_group(None, NOW).expect("joins");
        let (epoch, secret) = joined.epoch.clone().expect("carries the epoch");
        assert_eq!((epoch, secret.expose_bytes()), (KeyEpoch(4), &[7; 32]));
        assert_eq!(&joined.invite_id, rotated.invite_id());
        assert!(!format!("{joined:?}").contains("[7, 7"));
    }

    #[test]
    fn an_invite_opens_to_its_relay_and_group_until_it_expires() {
        let group = GroupMaterial::random(&mut ChaCha20Rng::seed_from_u64(2));
        let joined = invite(&group, 60).into_group(None, NOW).expect("open");
        assert_eq!(joined.relay.id, RelayId::from_bytes([9; 32]));
        assert_eq!(joined.relay.addrs, ["127.0.0.1:7440", "relay.example:7440"]);
        assert_eq!(joined.group.keys().group_id(), group.keys().group_id());
        assert!(!format!("{joined:?}").contains(&hex::encode(group.secret.expose_bytes())));
        assert!(matches!(
            invite(&group, 60).into_group(None, NOW + 60_000),
            Err(InviteError::Expired { .. })
        ));
    }
}
