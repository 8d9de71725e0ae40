//! Invites through the relay's mailbox, sealed under a short code.

use rand_core::CryptoRng;
use sync_crypto::{MailboxKey, open_mailbox, seal_mailbox};
use zeroize::Zeroizing;

use super::{Invite, InviteError, ShortCode};

/// Seals an invite for the relay's mailbox under `code` (Argon2id on the key half, then
/// XChaCha20-Poly1305). Store the result under [`ShortCode::lookup_id`].
pub fn seal_for_mailbox<R: CryptoRng + ?Sized>(
    invite: &Invite,
    code: &ShortCode,
    rng: &mut R,
) -> Result<Vec<u8>, InviteError> {
    let key = MailboxKey::from_code_half(code.lookup_id(), code.key_half())?;
    let plaintext = invite.to_bytes();
    Ok(seal_mailbox(rng, &key, &plaintext)?)
}

/// Opens a mailbox entry fetched by [`ShortCode::lookup_id`]. A wrong code or tampered bytes
/// give [`InviteError::Crypto`]; the invite is then validated like any decoded invite (check
/// its expiry with [`Invite::check`]).
pub fn open_from_mailbox(sealed: &[u8], code: &ShortCode) -> Result<Invite, InviteError> {
    let key = MailboxKey::from_code_half(code.lookup_id(), code.key_half())?;
    let plaintext = Zeroizing::new(open_mailbox(&key, sealed)?);
    Invite::from_bytes(&plaintext)
}
