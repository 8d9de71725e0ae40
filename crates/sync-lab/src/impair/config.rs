//! What the proxy does to the packets of each direction.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ImpairError;

/// Impairments of one direction. `Default` forwards everything at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DirectionConfig {
    /// Fixed one-way delay added to every packet.
    #[serde(with = "millis", rename = "delay_ms")]
    pub delay: Duration,
    /// Uniform jitter: each packet's delay is `delay` ± up to this much (never below zero).
    #[serde(with = "millis", rename = "jitter_ms")]
    pub jitter: Duration,
    /// Probability (0..=1) that a packet is dropped.
    pub loss: f64,
    /// Probability (0..=1) that a packet is held back by `reorder_gap` so later ones overtake it.
    pub reorder: f64,
    /// Extra delay of a reordered packet.
    #[serde(with = "millis", rename = "reorder_gap_ms")]
    pub reorder_gap: Duration,
    /// Probability (0..=1) that a packet is sent twice.
    pub duplicate: f64,
    /// Bandwidth in bytes per second (`None` = unlimited).
    pub rate: Option<u64>,
    /// Longest a packet may wait for the rate limiter before it is tail-dropped.
    #[serde(with = "millis", rename = "queue_ms")]
    pub queue: Duration,
    /// Drop everything (both new packets and those still in flight).
    pub partition: bool,
}

impl Default for DirectionConfig {
    fn default() -> Self {
        Self {
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            loss: 0.0,
            reorder: 0.0,
            reorder_gap: Duration::from_millis(10),
            duplicate: 0.0,
            rate: None,
            queue: Duration::from_millis(500),
            partition: false,
        }
    }
}

impl DirectionConfig {
    /// Checks ranges: probabilities in 0..=1, rate above zero.
    pub fn validate(&self) -> Result<(), ImpairError> {
        for (name, p) in [
            ("loss", self.loss),
            ("reorder", self.reorder),
            ("duplicate", self.duplicate),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(ImpairError::Invalid(format!(
                    "{name} must be between 0 and 1, got {p}"
                )));
            }
        }
        if self.rate == Some(0) {
            return Err(ImpairError::Invalid(
                "rate must be above 0 bytes/s".to_string(),
            ));
        }
        Ok(())
    }
}

/// The proxy's configuration: one [`DirectionConfig`] per direction and the generator's seed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImpairConfig {
    /// Client → upstream.
    pub up: DirectionConfig,
    /// Upstream → client.
    pub down: DirectionConfig,
    /// Seed of the decision generator (`None`: seeded from the clock). Read at start only.
    pub seed: Option<u64>,
}

impl ImpairConfig {
    /// The same impairments in both directions.
    pub fn symmetric(dir: DirectionConfig) -> Self {
        Self {
            up: dir.clone(),
            down: dir,
            seed: None,
        }
    }

    /// The same configuration with a fixed seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Checks both directions.
    pub fn validate(&self) -> Result<(), ImpairError> {
        self.up.validate()?;
        self.down.validate()
    }

    pub(super) fn dir(&self, d: Direction) -> &DirectionConfig {
        match d {
            Direction::Up => &self.up,
            Direction::Down => &self.down,
        }
    }
}

/// A direction through the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Client → upstream.
    Up,
    /// Upstream → client.
    Down,
}

/// Serde helpers: durations as (fractional) milliseconds.
mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64() * 1000.0)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let ms = f64::deserialize(d)?;
        if !ms.is_finite() || !(0.0..=3_600_000.0).contains(&ms) {
            return Err(serde::de::Error::custom(
                "milliseconds must be between 0 and 3600000",
            ));
        }
        Ok(Duration::from_secs_f64(ms / 1000.0))
    }
}
