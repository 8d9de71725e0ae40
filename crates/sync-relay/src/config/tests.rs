//! Configuration tests: defaults, parsing, validation, the example file, secrets masked.

use super::*;

#[test]
fn defaults_validate_and_round_trip_through_toml() {
    let config = RelayConfig::default();
    config.validate().expect("defaults are valid");
    let text = config.to_toml();
    for (key, _) in RelayConfig::KEYS {
        assert!(
            text.contains(&format!("{key} = ")),
            "{key} missing in {text}"
        );
    }
    assert_eq!(RelayConfig::from_toml(&text).expect("parse"), config);
    assert_eq!(RelayConfig::from_toml("").expect("empty"), config);
}

#[test]
fn unknown_keys_and_bad_values_are_readable_errors() {
    let err = RelayConfig::from_toml("max_sesions = 5").expect_err("typo");
    let text = err.to_string();
    assert!(text.contains("max_sesions"), "{text}");
    assert!(!text.contains('\n'), "one line: {text}");
    let err = RelayConfig::from_toml("hello_timeout = \"ten\"").expect_err("bad");
    assert!(err.to_string().contains("hello_timeout"), "{err}");
    let err = RelayConfig::from_toml("synchronous = \"sometimes\"").expect_err("bad");
    assert!(matches!(err, ConfigError::Parse { .. }), "{err}");
    let ok = RelayConfig::from_toml("synchronous = \"full\"\nhello_timeout = 3").expect("ok");
    assert_eq!(ok.synchronous, Durability::Full);
    assert_eq!(ok.hello_timeout, Duration::from_secs(3));
}

#[test]
fn validation_names_the_key() {
    let mut c = RelayConfig {
        default_ttl: Duration::from_secs(100),
        max_ttl: Duration::from_secs(10),
        ..RelayConfig::default()
    };
    assert!(matches!(
        c.validate(),
        Err(ConfigError::Invalid {
            key: "default_ttl",
            ..
        })
    ));
    c.max_ttl = c.default_ttl;
    c.max_blob_bytes = 0;
    assert!(matches!(
        c.validate(),
        Err(ConfigError::Invalid {
            key: "max_blob_bytes",
            ..
        })
    ));
    c.max_blob_bytes = 1;
    c.max_sessions = 0;
    assert!(matches!(
        c.validate(),
        Err(ConfigError::Invalid {
            key: "max_sessions",
            ..
        })
    ));
}

#[test]
fn token_admission_needs_a_valid_operator_key() {
    let mut c = RelayConfig {
        admission: AdmissionMode::Token,
        ..RelayConfig::default()
    };
    let needs_key = |c: &RelayConfig| {
        matches!(
            c.validate(),
            Err(ConfigError::Invalid {
                key: "admission_key",
                ..
            })
        )
    };
    assert!(needs_key(&c), "token admission without a key");
    c.admission_key = "not a key".into();
    assert!(needs_key(&c));
    let public = sync_crypto::OperatorKey::from_secret_bytes([5; 32]).public_key();
    c.admission_key = public.to_string();
    c.validate().expect("a valid key");
    assert_eq!(c.operator_key().expect("key"), Some(public));
    // A key that is set must be valid even while admission is open.
    c.admission = AdmissionMode::Open;
    c.admission_key = "00".into();
    assert!(needs_key(&c));
    let parsed = RelayConfig::from_toml("admission = \"token\"").expect("parse");
    assert_eq!(parsed.admission, AdmissionMode::Token);
}

#[test]
fn overrides_replace_only_what_they_set() {
    let mut c = RelayConfig::from_toml("max_sessions = 7\nmax_pull_count = 9").expect("ok");
    c.apply(ConfigOverrides {
        max_sessions: Some(8),
        ..ConfigOverrides::default()
    });
    assert_eq!(c.max_sessions, 8);
    assert_eq!(c.max_pull_count, 9);
}

#[test]
fn postgres_needs_a_url_and_its_password_never_shows() {
    let err = RelayConfig::from_toml("storage = \"postgres\"")
        .and_then(|c| c.validate().map(|()| c))
        .expect_err("no url");
    assert!(err.to_string().contains("postgres_url"), "{err}");
    let c = RelayConfig::from_toml(
        "storage = \"postgres\"\npostgres_url = \"postgres://relay:s3cret@db:5432/sync\"",
    )
    .expect("parses");
    c.validate().expect("valid");
    let bad = RelayConfig::from_toml(
        "storage = \"postgres\"\npostgres_url = \"postgres://relay:s3cret@db/sync?bogus=1\"",
    )
    .expect("parses")
    .validate()
    .expect_err("an unknown option");
    assert!(bad.to_string().contains("unknown option"), "{bad}");
    assert!(!bad.to_string().contains("s3cret"), "{bad}");
    let shown = c.to_toml();
    assert!(!shown.contains("s3cret"), "{shown}");
    assert!(
        shown.contains("postgres://relay:***@db:5432/sync"),
        "{shown}"
    );
    for (url, masked) in [
        (
            "host=db user=relay password=s3cret dbname=sync",
            "host=db user=relay password=*** dbname=sync",
        ),
        ("postgres://db/sync", "postgres://db/sync"),
        ("postgres://relay@db/sync", "postgres://relay@db/sync"),
        (
            "postgresql://u:p%40ss@h/db?sslmode=require",
            "postgresql://u:***@h/db?sslmode=require",
        ),
    ] {
        assert_eq!(mask_password(url), masked);
    }
}

#[test]
fn env_var_names_follow_the_key_names() {
    for (key, env) in RelayConfig::KEYS {
        assert_eq!(*env, format!("SYNC_RELAY_{}", key.to_uppercase()));
    }
}

#[test]
fn example_file_lists_every_key_with_default_values() {
    let text = include_str!("../../relay.example.toml");
    let parsed = RelayConfig::from_toml(text).expect("example parses");
    for (key, _) in RelayConfig::KEYS {
        assert!(
            text.contains(&format!("\n{key} = ")) || text.contains(&format!("\n# {key} = ")),
            "example file misses {key}"
        );
    }
    let defaults = RelayConfig {
        data_dir: parsed.data_dir.clone(),
        ..RelayConfig::default()
    };
    assert_eq!(parsed, defaults, "example values are the defaults");
}

#[test]
fn content_store_keys_parse_and_validate() {
    let defaults = RelayConfig::default();
    assert!(defaults.content_store);
    assert_eq!(defaults.content_group_bytes, 4 << 30);
    assert_eq!(defaults.content_ttl, defaults.default_ttl);
    let c = RelayConfig::from_toml(
        "content_store = false\ncontent_group_bytes = 1000\ncontent_ttl = \"2h\"",
    )
    .expect("parse");
    assert!(!c.content_store);
    assert_eq!(c.content_group_bytes, 1000);
    assert_eq!(c.content_ttl, Duration::from_secs(7200));
    c.validate().expect("valid");
    let text = c.to_toml();
    assert!(text.contains("content_ttl = \"2h\""), "{text}");
    assert_eq!(RelayConfig::from_toml(&text).expect("round trip"), c);

    let zero_ttl = RelayConfig {
        content_ttl: Duration::ZERO,
        ..RelayConfig::default()
    };
    assert!(matches!(
        zero_ttl.validate(),
        Err(ConfigError::Invalid {
            key: "content_ttl",
            ..
        })
    ));
    let no_quota = RelayConfig {
        content_group_bytes: 0,
        ..RelayConfig::default()
    };
    assert!(matches!(
        no_quota.validate(),
        Err(ConfigError::Invalid {
            key: "content_group_bytes",
            ..
        })
    ));
    // With the store off the quota is not used.
    RelayConfig {
        content_store: false,
        ..no_quota
    }
    .validate()
    .expect("store off");
}
