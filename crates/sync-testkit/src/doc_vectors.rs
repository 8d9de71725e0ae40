//! The test vectors of `docs/PROTOCOL.md`, for the tests that check them against the code
//! (`sync-types`: frames, `sync-crypto`: keys and sealing, `sync-core`: invites).
//!
//! A vector block is a fenced block tagged `vector`. Each line is `name = value`; `#` starts a
//! comment; a line that starts with whitespace and has no `=` continues the previous value (so
//! long hex can be wrapped and annotated). A value is read as the test asks for it:
//!
//! - bytes: hex digits, whitespace ignored (`01 00000000 29ac…`);
//! - text: `"…"` (UTF-8, no escapes);
//! - unsigned integer: decimal, `_` allowed as a separator;
//! - `nil`: an absent optional value;
//! - `@other.name`: the value of another vector.
//!
//! Every read marks the name as checked; [`Vectors::assert_checked`] then proves that no value
//! of a crate's sections is left unchecked, and that every name in the document belongs to a
//! section some crate checks.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::sync::Mutex;

use rand_core::{TryCryptoRng, TryRng};

/// Name prefixes of the document's sections, and the crate whose tests check them.
pub const SECTIONS: &[(&str, &str)] = &[
    ("keys.", "sync-crypto"),
    ("device.", "sync-crypto"),
    ("hello.", "sync-crypto"),
    ("seal.", "sync-crypto"),
    ("content.", "sync-content"),
    ("passphrase.", "sync-crypto"),
    ("mailbox.", "sync-crypto"),
    ("shortcode.", "sync-core"),
    ("invite.", "sync-core"),
    ("frame.", "sync-types"),
];

/// The vectors of one document, and which of them were read.
#[derive(Debug)]
pub struct Vectors {
    values: BTreeMap<String, String>,
    checked: Mutex<BTreeSet<String>>,
}

impl Vectors {
    /// The vectors of `docs/PROTOCOL.md` (the workspace's, seen from the crate under test).
    pub fn load() -> Vectors {
        // The workspace's document, seen from this crate (crates/sync-testkit).
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/PROTOCOL.md");
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        Vectors::parse(&text).unwrap_or_else(|e| panic!("docs/PROTOCOL.md: {e}"))
    }

    /// Parses every `vector` block of a Markdown text.
    pub fn parse(text: &str) -> Result<Vectors, String> {
        let mut values: BTreeMap<String, String> = BTreeMap::new();
        let mut in_block = false;
        let mut current: Option<String> = None;
        for (n, raw) in text.lines().enumerate() {
            let line_no = n + 1;
            let trimmed = raw.trim();
            if !in_block {
                in_block = trimmed == "```vector";
                continue;
            }
            if trimmed.starts_with("```") {
                in_block = false;
                current = None;
                continue;
            }
            let line = strip_comment(raw);
            if line.trim().is_empty() {
                continue;
            }
            if let Some((name, value)) = line.split_once('=') {
                let name = name.trim();
                let valid = !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._".contains(c));
                if !valid {
                    return Err(format!("line {line_no}: bad vector name {name:?}"));
                }
                if values.insert(name.into(), value.trim().into()).is_some() {
                    return Err(format!("line {line_no}: vector {name} is defined twice"));
                }
                current = Some(name.into());
            } else if raw.starts_with(char::is_whitespace)
                && let Some(value) = current.as_ref().and_then(|c| values.get_mut(c))
            {
                value.push(' ');
                value.push_str(line.trim());
            } else {
                return Err(format!("line {line_no}: expected `name = value`"));
            }
        }
        if in_block {
            return Err("a vector block is not closed".into());
        }
        Ok(Vectors {
            values,
            checked: Mutex::new(BTreeSet::new()),
        })
    }

    /// Whether the document defines `name` (does not mark it as checked).
    pub fn contains(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }

    /// The raw value of `name` (references resolved); marks `name` as checked.
    fn raw(&self, name: &str) -> &str {
        self.checked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(name.into());
        let mut value = self.lookup(name);
        let mut hops = 0;
        while let Some(target) = value.strip_prefix('@') {
            hops += 1;
            assert!(hops < 8, "vector {name}: reference loop");
            value = self.lookup(target);
        }
        value
    }

    fn lookup(&self, name: &str) -> &str {
        self.values
            .get(name)
            .unwrap_or_else(|| panic!("docs/PROTOCOL.md has no vector `{name}`"))
    }

    /// A hex value.
    pub fn bytes(&self, name: &str) -> Vec<u8> {
        let digits: Vec<u8> = self
            .raw(name)
            .bytes()
            .filter(|b| !b.is_ascii_whitespace())
            .collect();
        assert!(
            digits.len().is_multiple_of(2),
            "vector {name}: odd number of hex digits"
        );
        digits
            .chunks(2)
            .map(|pair| {
                let text = std::str::from_utf8(pair).unwrap_or("??");
                u8::from_str_radix(text, 16)
                    .unwrap_or_else(|_| panic!("vector {name}: {text:?} is not hex"))
            })
            .collect()
    }

    /// A hex value of exactly `N` bytes.
    pub fn array<const N: usize>(&self, name: &str) -> [u8; N] {
        let bytes = self.bytes(name);
        <[u8; N]>::try_from(bytes.as_slice())
            .unwrap_or_else(|_| panic!("vector {name}: {} bytes, expected {N}", bytes.len()))
    }

    /// A hex value, or `nil`.
    pub fn opt_bytes(&self, name: &str) -> Option<Vec<u8>> {
        (self.raw(name) != "nil").then(|| self.bytes(name))
    }

    /// `true` or `false`.
    pub fn flag(&self, name: &str) -> bool {
        match self.raw(name) {
            "true" => true,
            "false" => false,
            other => panic!("vector {name}: {other:?} is neither true nor false"),
        }
    }

    /// A quoted text value.
    pub fn text(&self, name: &str) -> String {
        let raw = self.raw(name);
        raw.strip_prefix('"')
            .and_then(|r| r.strip_suffix('"'))
            .unwrap_or_else(|| panic!("vector {name}: {raw:?} is not quoted text"))
            .into()
    }

    /// A quoted text value, or `nil`.
    pub fn opt_text(&self, name: &str) -> Option<String> {
        (self.raw(name) != "nil").then(|| self.text(name))
    }

    /// A decimal unsigned integer.
    pub fn uint(&self, name: &str) -> u64 {
        let raw = self.raw(name);
        raw.replace('_', "")
            .parse()
            .unwrap_or_else(|_| panic!("vector {name}: {raw:?} is not a decimal integer"))
    }

    /// A decimal unsigned integer that must fit a `u32`.
    pub fn u32(&self, name: &str) -> u32 {
        let v = self.uint(name);
        u32::try_from(v).unwrap_or_else(|_| panic!("vector {name}: {v} does not fit a u32"))
    }

    /// A decimal unsigned integer, or `nil`.
    pub fn opt_uint(&self, name: &str) -> Option<u64> {
        (self.raw(name) != "nil").then(|| self.uint(name))
    }

    /// Every name in the document belongs to a known section, and every name of the sections
    /// checked by `krate` was read.
    pub fn assert_checked(&self, krate: &str) {
        let checked = self
            .checked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut unchecked = Vec::new();
        for name in self.values.keys() {
            let section = SECTIONS.iter().find(|(prefix, _)| name.starts_with(prefix));
            match section {
                None => panic!("vector {name} belongs to no section that any test checks"),
                Some((_, owner)) if *owner == krate && !checked.contains(name) => {
                    unchecked.push(name.as_str());
                }
                Some(_) => {}
            }
        }
        assert!(
            unchecked.is_empty(),
            "vectors in docs/PROTOCOL.md that no {krate} test checks: {unchecked:?}"
        );
        let own = SECTIONS.iter().filter(|(_, owner)| *owner == krate);
        for (prefix, _) in own {
            assert!(
                self.values.keys().any(|n| n.starts_with(prefix)),
                "docs/PROTOCOL.md has no `{prefix}*` vectors"
            );
        }
    }
}

/// The vector tests of one crate: one `#[test]` per group of sections (each loads the document
/// and runs its sections), and one test that runs every section on one load and then
/// [`Vectors::assert_checked`] for the crate, so a vector no section reads fails the build.
///
/// ```text
/// sync_testkit::doc_vector_tests! {
///     crate: "sync-crypto",
///     every: every_crypto_vector_is_checked,
///     key_schedule_vectors_match_the_code: [key_schedule],
///     hello_vectors_match_the_code: [hello_signature],
/// }
/// ```
///
/// A section is a `fn(&Vectors)` that reads its vectors and asserts the code reproduces them.
#[macro_export]
macro_rules! doc_vector_tests {
    (
        crate: $krate:literal,
        every: $every:ident,
        $($test:ident: [$($section:path),+ $(,)?]),+ $(,)?
    ) => {
        $(
            #[test]
            fn $test() {
                let v = $crate::doc_vectors::Vectors::load();
                $($section(&v);)+
            }
        )+

        #[test]
        fn $every() {
            let v = $crate::doc_vectors::Vectors::load();
            $($($section(&v);)+)+
            v.assert_checked($krate);
        }
    };
}

/// Lower-case hex, for comparing bytes in assertion messages.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Drops a `#` comment (outside quoted text).
fn strip_comment(line: &str) -> &str {
    let mut quoted = false;
    for (i, c) in line.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '#' if !quoted => return &line[..i],
            _ => {}
        }
    }
    line
}

/// A "random" source that yields fixed bytes, so code that draws its nonce or id from an RNG
/// produces the document's values. Drawing more than it holds is a test failure.
#[derive(Debug)]
pub struct FixedBytes {
    bytes: Vec<u8>,
    at: usize,
}

impl FixedBytes {
    /// Yields `bytes`, then fails.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self { bytes, at: 0 }
    }

    /// Whether every byte was drawn.
    pub fn is_spent(&self) -> bool {
        self.at == self.bytes.len()
    }
}

impl TryRng for FixedBytes {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let mut b = [0u8; 4];
        self.try_fill_bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let mut b = [0u8; 8];
        self.try_fill_bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        let end = self.at + dst.len();
        let src = self.bytes.get(self.at..end).unwrap_or_else(|| {
            panic!(
                "fixed RNG: {} bytes asked, {} left",
                dst.len(),
                self.bytes.len() - self.at
            )
        });
        dst.copy_from_slice(src);
        self.at = end;
        Ok(())
    }
}

impl TryCryptoRng for FixedBytes {}
