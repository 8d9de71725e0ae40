//! The operator's status page: `/` on the HTTP port serves one self-contained page (no external
//! script, font or style) that draws the last hour from `/api/stats`, a JSON document of the
//! relay's identity and the samples of [`History`].

mod history;

pub(crate) use history::{History, SAMPLES_KEPT, Sample};

/// The page, served as is.
pub(crate) const PAGE: &str = include_str!("page.html");
