//! Invites, QR payloads, short codes and the mailbox.

use proptest::prelude::*;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use sync_crypto::CryptoError;
use sync_types::RelayId;

use super::short_code::ALPHABET;
use super::*;

const NOW: u64 = 1_700_000_000_000;
const MIN: u64 = 60_000;

fn rng() -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(7)
}

fn random_params(rng: &mut ChaCha20Rng) -> InviteParams {
    let secret = GroupSecret::random(rng);
    InviteParams {
        relay_id: [3u8; 32],
        relay_addrs: vec!["192.0.2.1:4433".into(), "[2001:db8::1]:4433".into()],
        group_id: GroupKeys::derive(&secret).group_id(),
        group: GroupDescriptor::Random,
        secret: Some(secret),
        ttl: DEFAULT_INVITE_TTL,
    }
}

fn random_invite() -> Invite {
    let mut rng = rng();
    let params = random_params(&mut rng);
    Invite::create(&mut rng, params, NOW).expect("valid")
}

fn assert_same(a: &Invite, b: &Invite) {
    assert_eq!(a.version(), b.version());
    assert_eq!(a.relay_id(), b.relay_id());
    assert_eq!(a.relay_addrs(), b.relay_addrs());
    assert_eq!(a.group_id(), b.group_id());
    assert_eq!(a.group(), b.group());
    assert_eq!(
        a.secret().map(|s| *s.expose_bytes()),
        b.secret().map(|s| *s.expose_bytes())
    );
    assert_eq!(a.invite_id(), b.invite_id());
    assert_eq!(a.expires_at_ms(), b.expires_at_ms());
}

#[test]
fn qr_payload_round_trips() {
    let invite = random_invite();
    let payload = invite.to_qr_payload();
    assert!(payload.starts_with(QR_PREFIX));
    assert!(
        payload.len() < 300,
        "QR payload stays small: {}",
        payload.len()
    );
    let decoded = Invite::from_qr_payload(&payload).expect("decodes");
    assert_same(&invite, &decoded);
    // Surrounding whitespace from copy-paste is fine.
    let padded = format!("  {}\n", &*payload);
    assert_same(&invite, &Invite::from_qr_payload(&padded).expect("decodes"));
}

#[test]
fn invite_carries_relay_and_expiry() {
    let invite = random_invite();
    assert_eq!(invite.version(), INVITE_VERSION);
    assert_eq!(invite.relay_id(), &[3u8; 32]);
    assert_eq!(invite.relay_addrs().len(), 2);
    assert_eq!(invite.expires_at_ms(), NOW + 10 * MIN);
}

#[test]
fn expires_after_ttl() {
    let invite = random_invite();
    assert_eq!(invite.check(NOW), Ok(()));
    assert_eq!(invite.check(NOW + 10 * MIN - 1), Ok(()));
    assert_eq!(
        invite.check(NOW + 10 * MIN),
        Err(InviteError::Expired {
            expires_at_ms: NOW + 10 * MIN
        })
    );
    let mut rng = rng();
    let params = InviteParams {
        ttl: Duration::ZERO,
        ..random_params(&mut rng)
    };
    let instant = Invite::create(&mut rng, params, NOW).expect("valid");
    assert!(matches!(
        instant.check(NOW),
        Err(InviteError::Expired { .. })
    ));
    // A huge TTL saturates instead of overflowing.
    let params = InviteParams {
        ttl: Duration::MAX,
        ..random_params(&mut rng)
    };
    let forever = Invite::create(&mut rng, params, NOW).expect("valid");
    assert_eq!(forever.expires_at_ms(), u64::MAX);
}

#[test]
fn debug_redacts_the_secret() {
    let invite = random_invite();
    let secret_hex: String = invite
        .secret()
        .map(|s| {
            s.expose_bytes()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect()
        })
        .unwrap_or_default();
    let debug = format!("{invite:?}");
    assert!(debug.contains("[redacted]"));
    assert!(!debug.contains(&secret_hex));
    assert!(!debug.contains(&format!("{:?}", invite.secret().map(|s| s.expose_bytes()))));
    let mut rng = rng();
    let params = random_params(&mut rng);
    assert!(format!("{params:?}").contains("[redacted]"));
}

#[test]
fn random_group_secret_comes_from_the_invite() {
    let invite = random_invite();
    let secret = invite.group_secret(None).expect("carried");
    assert_eq!(GroupKeys::derive(&secret).group_id(), invite.group_id());
}

#[test]
fn passphrase_group_carries_no_secret_and_checks_the_passphrase() {
    let mut rng = rng();
    let group = GroupDescriptor::new_passphrase(&mut rng, 2 << 30);
    let secret = group.derive_secret("correct horse").expect("derive");
    let params = InviteParams {
        relay_id: [1u8; 32],
        relay_addrs: vec!["relay.example:4433".into()],
        group_id: GroupKeys::derive(&secret).group_id(),
        group,
        secret: None,
        ttl: DEFAULT_INVITE_TTL,
    };
    let invite = Invite::create(&mut rng, params, NOW).expect("valid");
    let decoded = Invite::from_qr_payload(&invite.to_qr_payload()).expect("decodes");
    assert!(decoded.secret().is_none());
    assert_eq!(
        decoded.group_secret(None).err(),
        Some(InviteError::PassphraseRequired)
    );
    assert_eq!(
        decoded.group_secret(Some("correct horse!")).err(),
        Some(InviteError::WrongPassphrase)
    );
    let joined = decoded.group_secret(Some("correct horse")).expect("right");
    assert_eq!(joined.expose_bytes(), secret.expose_bytes());
}

#[test]
fn create_refuses_inconsistent_params() {
    let mut rng = rng();
    let no_secret = InviteParams {
        secret: None,
        ..random_params(&mut rng)
    };
    assert_eq!(
        Invite::create(&mut rng, no_secret, NOW).err(),
        Some(InviteError::SecretMismatch)
    );
    let wrong_group = InviteParams {
        group_id: GroupId::from_bytes([9u8; 32]),
        ..random_params(&mut rng)
    };
    assert_eq!(
        Invite::create(&mut rng, wrong_group, NOW).err(),
        Some(InviteError::GroupMismatch)
    );
    let many_addrs = InviteParams {
        relay_addrs: vec!["a:1".into(); MAX_RELAY_ADDRS + 1],
        ..random_params(&mut rng)
    };
    assert_eq!(
        Invite::create(&mut rng, many_addrs, NOW).err(),
        Some(InviteError::InvalidField {
            field: "relay_addrs"
        })
    );
    let long_addr = InviteParams {
        relay_addrs: vec!["x".repeat(MAX_RELAY_ADDR_LEN + 1)],
        ..random_params(&mut rng)
    };
    assert!(Invite::create(&mut rng, long_addr, NOW).is_err());
}

fn further() -> Vec<RelayAddr> {
    vec![
        RelayAddr {
            id: RelayId::from_bytes([4u8; 32]),
            addrs: vec!["192.0.2.2:4433".into()],
        },
        RelayAddr {
            id: RelayId::from_bytes([5u8; 32]),
            addrs: vec!["relay-3.example:4433".into(), "[2001:db8::3]:4433".into()],
        },
    ]
}

#[test]
fn an_invite_without_further_relays_encodes_as_before() {
    let plain = random_invite();
    let bytes = plain.to_bytes();
    assert_eq!(bytes[1], 0x97, "array of 7 fields");
    let none = plain.clone().with_further_relays(&[]).expect("valid");
    assert_eq!(*none.to_bytes(), *bytes, "an empty list changes nothing");
    assert!(plain.further_relays().is_empty());
    assert_eq!(plain.relays(), vec![plain.relay()]);
}

#[test]
fn an_epoch_0_invite_with_two_further_relays_round_trips_and_keeps_its_first_7_fields() {
    let plain = random_invite();
    let with = plain
        .clone()
        .with_further_relays(&further())
        .expect("valid");
    let (old, new) = (plain.to_bytes(), with.to_bytes());
    assert_eq!(new[0], INVITE_VERSION);
    assert_eq!(new[1], 0x9a, "array of 10 fields");
    assert_eq!(
        new.get(2..old.len()),
        old.get(2..),
        "the first 7 fields are the same bytes"
    );
    let tail = new.get(old.len()..).unwrap_or_default();
    assert_eq!(
        tail.get(..3),
        Some(&[0x00, 0xc0, 0x92][..]),
        "epoch 0, no epoch secret, then an array of 2 relays"
    );

    let decoded = Invite::from_qr_payload(&with.to_qr_payload()).expect("decodes");
    assert_same(&plain, &decoded);
    assert_eq!(decoded.further_relays(), further());
    let mut all = vec![plain.relay()];
    all.extend(further());
    assert_eq!(decoded.relays(), all);
    assert!(decoded.epoch().is_none());
    assert_eq!(*decoded.to_bytes(), *new, "re-encodes to the same bytes");
    assert!(format!("{decoded:?}").contains("further_relays"));
}

/// The body as builds before relay lists declared it (9 fields, the last two defaulted).
#[derive(Deserialize)]
#[allow(dead_code)]
struct NineFieldBody {
    relay_id: ByteArray<32>,
    relay_addrs: Vec<String>,
    group_id: GroupId,
    group: GroupDescriptor,
    secret: Option<GroupSecret>,
    invite_id: ByteArray<16>,
    expires_at_ms: u64,
    #[serde(default)]
    epoch: u32,
    #[serde(default)]
    epoch_secret: Option<ByteArray<32>>,
}

#[test]
fn a_decoder_from_before_relay_lists_reads_invites_without_further_relays_only() {
    let decode = |invite: &Invite| {
        let bytes = invite.to_bytes();
        let mut rest = bytes.get(1..).unwrap_or_default();
        rmp_serde::decode::from_read::<_, NineFieldBody>(&mut rest).map(|b| (b, rest.is_empty()))
    };
    let plain = random_invite();
    let (old, whole) = decode(&plain).expect("an old build decodes an invite of one relay");
    assert!(whole);
    assert_eq!(old.relay_addrs, plain.relay_addrs());
    assert_eq!(old.expires_at_ms, plain.expires_at_ms());
    assert_eq!((old.epoch, old.epoch_secret.is_none()), (0, true));
    // MessagePack arrays are read strictly: a build from before relay lists refuses an
    // invite that names further relays (as a malformed body), as builds from before key
    // rotation refuse the invite of a rotated group.
    let with = plain.with_further_relays(&further()).expect("valid");
    assert!(decode(&with).is_err());
}

#[test]
fn a_rotated_invite_carries_its_epoch_and_further_relays() {
    let secret = EpochSecret::from_bytes([7; 32]);
    let rotated = random_invite().with_epoch(KeyEpoch(3), &secret);
    let nine = rotated.to_bytes();
    assert_eq!(nine[1], 0x99, "array of 9 fields");
    let both = rotated
        .with_further_relays(&further())
        .expect("valid")
        .to_bytes();
    assert_eq!(both[1], 0x9a);
    assert_eq!(both.get(2..nine.len()), nine.get(2..));
    let decoded = Invite::from_bytes(&both).expect("decodes");
    let (epoch, got) = decoded.epoch().expect("epoch");
    assert_eq!((epoch, got.expose_bytes()), (KeyEpoch(3), &[7; 32]));
    assert_eq!(decoded.further_relays(), further());
    // Either order of the builders gives the same invite.
    let other_order = random_invite()
        .with_further_relays(&further())
        .expect("valid")
        .with_epoch(KeyEpoch(3), &secret);
    assert_eq!(*other_order.to_bytes(), *both);
}

#[test]
fn further_relays_are_bounded() {
    let relay = |addrs: Vec<String>| RelayAddr {
        id: RelayId::from_bytes([6u8; 32]),
        addrs,
    };
    let one = || relay(vec!["192.0.2.9:1".into()]);
    let refused = |list: Vec<RelayAddr>| random_invite().with_further_relays(&list).err();
    let bad = Some(InviteError::InvalidField { field: "relays" });
    assert!(refused(vec![one(); MAX_FURTHER_RELAYS]).is_none());
    assert_eq!(refused(vec![one(); MAX_FURTHER_RELAYS + 1]), bad);
    assert_eq!(refused(vec![relay(Vec::new())]), bad);
    assert_eq!(refused(vec![relay(vec![String::new()])]), bad);
    assert_eq!(
        refused(vec![relay(vec!["x".repeat(MAX_RELAY_ADDR_LEN + 1)])]),
        bad
    );
    assert_eq!(
        refused(vec![relay(vec!["a:1".into(); MAX_RELAY_ADDRS + 1])]),
        bad
    );
    // Within every per-relay limit but too long as a whole: refused, never an invite that no
    // decoder accepts.
    let long = relay(vec!["x".repeat(MAX_RELAY_ADDR_LEN); MAX_RELAY_ADDRS]);
    assert!(matches!(
        refused(vec![long; 2]),
        Some(InviteError::TooLong { .. })
    ));
    // The largest list that fits still decodes.
    let fits = random_invite()
        .with_further_relays(&vec![relay(vec!["x".repeat(200); 1]); MAX_FURTHER_RELAYS])
        .expect("fits");
    let bytes = fits.to_bytes();
    assert!(bytes.len() <= MAX_INVITE_BYTES);
    assert_eq!(
        Invite::from_bytes(&bytes)
            .expect("decodes")
            .further_relays()
            .len(),
        MAX_FURTHER_RELAYS
    );
}

#[test]
fn decoding_checks_further_relays() {
    // A hand-made body with 9 further relays (array header 0x9a, last field 0x99 entries).
    let plain = random_invite().to_bytes();
    let mut bytes = plain.to_vec();
    bytes[1] = 0x9a;
    bytes.extend([0x00, 0xc0, 0x99]);
    for _ in 0..9 {
        bytes.extend([0x92, 0xc4, 0x20]);
        bytes.extend([8u8; 32]);
        bytes.extend([0x91, 0xa3]);
        bytes.extend(b"a:1");
    }
    assert_eq!(
        Invite::from_bytes(&bytes).err(),
        Some(InviteError::InvalidField { field: "relays" })
    );
    // A relay entry that is not [bin 32, [str]] is a malformed body.
    let mut wrong = plain.to_vec();
    wrong[1] = 0x9a;
    wrong.extend([0x00, 0xc0, 0x91, 0x92, 0xc4, 0x01, 0x00, 0x90]);
    assert_eq!(Invite::from_bytes(&wrong).err(), Some(InviteError::Body));
}

#[test]
fn qr_decoding_errors_are_typed() {
    let good = random_invite().to_qr_payload();
    assert_eq!(
        Invite::from_qr_payload("hello").err(),
        Some(InviteError::BadPrefix)
    );
    assert_eq!(
        Invite::from_qr_payload("0ksync1:***").err(),
        Some(InviteError::Base64)
    );
    assert_eq!(
        Invite::from_qr_payload("0ksync1:").err(),
        Some(InviteError::Body)
    );
    let body = URL_SAFE_NO_PAD.encode([INVITE_VERSION, 0xc1]);
    assert_eq!(
        Invite::from_qr_payload(&format!("{QR_PREFIX}{body}")).err(),
        Some(InviteError::Body)
    );
    let mut bytes = random_invite().to_bytes();
    bytes[0] = 9;
    let future = format!("{QR_PREFIX}{}", URL_SAFE_NO_PAD.encode(&*bytes));
    assert_eq!(
        Invite::from_qr_payload(&future).err(),
        Some(InviteError::UnsupportedVersion { version: 9 })
    );
    let mut trailing = random_invite().to_bytes();
    trailing.push(0);
    assert_eq!(Invite::from_bytes(&trailing).err(), Some(InviteError::Body));
    let long = format!("{}{}", &*good, "A".repeat(MAX_QR_PAYLOAD_LEN));
    assert!(matches!(
        Invite::from_qr_payload(&long),
        Err(InviteError::TooLong { .. })
    ));
    // Every truncation of a valid payload is refused with a typed error.
    for cut in 0..good.len() {
        assert!(Invite::from_qr_payload(good.get(..cut).unwrap_or("")).is_err());
    }
}

#[test]
fn short_code_format_and_halves() {
    let mut rng = rng();
    let code = ShortCode::random(&mut rng);
    let text = code.to_string();
    assert_eq!(text.len(), 19);
    for dash in [4, 9, 14] {
        assert_eq!(&text[dash..=dash], "-");
    }
    assert!(
        text.chars()
            .all(|c| c == '-' || ALPHABET.contains(&(c as u8)))
    );
    let plain: String = text.chars().filter(|c| *c != '-').collect();
    assert_eq!(code.lookup_id(), &plain[..8]);
    assert_eq!(code.key_half(), &plain[8..]);
    assert_eq!(ShortCode::parse(&text), Ok(code.clone()));
    // Random codes differ.
    assert_ne!(ShortCode::random(&mut rng), code);
}

#[test]
fn short_code_parse_is_forgiving() {
    let code = ShortCode::parse("ABCD-EFGH-JKMN-PQRS").expect("valid");
    assert_eq!(code.lookup_id(), "ABCDEFGH");
    assert_eq!(code.key_half(), "JKMNPQRS");
    for variant in [
        "abcd-efgh-jkmn-pqrs",
        "ABCDEFGHJKMNPQRS",
        " abcd efgh jkmn pqrs ",
        "ABCD--EFGH-JKMN-PQRS",
    ] {
        assert_eq!(ShortCode::parse(variant), Ok(code.clone()), "{variant}");
    }
    // Look-alikes map to digits.
    let o = ShortCode::parse("OIL0-0000-0000-0000").expect("valid");
    assert_eq!(o.lookup_id(), "01100000");
}

#[test]
fn short_code_errors_are_typed_and_hide_the_code() {
    for (text, error) in [
        ("ABCD-EFGH", ShortCodeError::Length { got: 8 }),
        ("ABCD-EFGH-JKMN-PQRST", ShortCodeError::Length { got: 17 }),
        (
            "ABCU-EFGH-JKMN-PQRS",
            ShortCodeError::InvalidChar { position: 3 },
        ),
        (
            "ABCD-EFGH-JKMN-PQR\u{e9}",
            ShortCodeError::InvalidChar { position: 18 },
        ),
    ] {
        assert_eq!(ShortCode::parse(text), Err(error), "{text}");
    }
    assert!(matches!(
        ShortCode::parse(&"A".repeat(1000)),
        Err(ShortCodeError::Length { .. })
    ));
    let code = ShortCode::parse("ABCD-EFGH-JKMN-PQRS").expect("valid");
    let debug = format!("{code:?}");
    assert!(debug.contains("ABCD-EFGH") && !debug.contains("JKMN"));
}

#[test]
fn mailbox_round_trip_and_wrong_code() {
    let mut rng = rng();
    let invite = random_invite();
    let code = ShortCode::random(&mut rng);
    let sealed = seal_for_mailbox(&invite, &code, &mut rng).expect("seal");
    let secret = invite
        .secret()
        .map(|s| *s.expose_bytes())
        .unwrap_or_default();
    assert!(
        !sealed.windows(32).any(|w| w == secret),
        "secret is not in the clear"
    );
    let opened = open_from_mailbox(&sealed, &code).expect("open");
    assert_same(&invite, &opened);

    let other = ShortCode::random(&mut rng);
    assert!(matches!(
        open_from_mailbox(&sealed, &other),
        Err(InviteError::Crypto(CryptoError::MailboxDecrypt))
    ));
    let mut tampered = sealed.clone();
    if let Some(b) = tampered.last_mut() {
        *b ^= 1;
    }
    assert!(open_from_mailbox(&tampered, &code).is_err());
    assert!(open_from_mailbox(&[], &code).is_err());
}

proptest! {
    #[test]
    fn random_text_never_panics(s in "\\PC{0,400}") {
        let _ = Invite::from_qr_payload(&s);
        let _ = ShortCode::parse(&s);
    }

    #[test]
    fn random_bytes_after_prefix_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let payload = format!("{QR_PREFIX}{}", URL_SAFE_NO_PAD.encode(&bytes));
        prop_assert!(Invite::from_qr_payload(&payload).is_err() || bytes.first() == Some(&INVITE_VERSION));
        let mut versioned = bytes.clone();
        versioned.insert(0, INVITE_VERSION);
        let _ = Invite::from_bytes(&versioned);
    }

    #[test]
    fn corrupted_invites_never_panic(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        relays in any::<bool>(),
    ) {
        let invite = random_invite();
        let invite = if relays {
            invite.with_further_relays(&further()).expect("valid")
        } else {
            invite
        };
        let mut bytes = invite.to_bytes();
        for (index, xor) in flips {
            let i = index.index(bytes.len());
            bytes[i] ^= xor;
        }
        let _ = Invite::from_bytes(&bytes);
    }

    #[test]
    fn short_codes_round_trip(seed in any::<u64>()) {
        let code = ShortCode::random(&mut ChaCha20Rng::seed_from_u64(seed));
        prop_assert_eq!(ShortCode::parse(&code.to_string().to_lowercase()), Ok(code));
    }
}
