//! The frozen reference's log-probs of each row, computed the first time the
//! row is asked for and kept from then on.
//!
//! The reference never changes, so each row's `(chosen, rejected)` log-probs
//! are computed once. Computing all of them before the first step made a run
//! on a large file wait minutes before it started; here a training batch
//! computes the rows of its own that are not cached yet, in one no-grad pass,
//! and an evaluation those of the held-out rows. The cached values are part
//! of the objective's saved state ([`ReferenceCache::state`]), so a resumed
//! run uses the very values an uninterrupted one would have.

use autograd::Precision;
use serde_json::{json, Value};
use transformer::Model;

use crate::data::{PairLayout, PreferenceRow};
use crate::scoring::score_pairs;

/// Per-row reference log-probs, filled on demand.
pub struct ReferenceCache {
    /// The frozen reference; `None` is reference-free (every log-prob 0).
    model: Option<Model<f32>>,
    /// How the reference pass lays the pairs out.
    layout: PairLayout,
    /// `(chosen, rejected)` of each row once computed.
    logps: Vec<Option<(f64, f64)>>,
    /// The precision the cached values were computed in: asked for in
    /// another (a run resumed with another `--precision`), they are all
    /// computed again.
    precision: Precision,
}

impl ReferenceCache {
    /// An empty cache for `num_rows` rows.
    pub fn new(model: Option<Model<f32>>, num_rows: usize, layout: PairLayout) -> Self {
        ReferenceCache {
            model,
            layout,
            logps: vec![None; num_rows],
            precision: Precision::F32,
        }
    }

    /// A cache whose every row is already filled, with values computed
    /// elsewhere (e.g. in shards by the ranks of a distributed run). It holds
    /// no model, computes nothing and saves no state: a resumed run
    /// computes the same values again.
    pub fn precomputed(logps: Vec<(f64, f64)>) -> Self {
        ReferenceCache {
            model: None,
            layout: PairLayout::default(),
            logps: logps.into_iter().map(Some).collect(),
            precision: Precision::F32,
        }
    }

    /// The reference's `(chosen, rejected)` log-probs of `rows[i]` for each
    /// `i` in `indices`, computing the missing ones first (`chunk` pairs per
    /// no-grad forward pass, in the order of `indices`, its GEMMs in
    /// `precision`: that of the policy's pass the values are compared with).
    pub fn get(
        &mut self,
        rows: &[PreferenceRow],
        indices: &[usize],
        chunk: usize,
        precision: Precision,
    ) -> Vec<(f64, f64)> {
        if self.is_lazy() && precision != self.precision {
            self.logps.iter_mut().for_each(|l| *l = None);
            self.precision = precision;
        }
        let mut missing: Vec<usize> = indices
            .iter()
            .copied()
            .filter(|&i| self.logps[i].is_none())
            .collect();
        missing.dedup();
        if !missing.is_empty() {
            let Some(model) = &self.model else {
                // Reference-free: every log-prob is 0.
                return vec![(0.0, 0.0); indices.len()];
            };
            let missing_rows: Vec<PreferenceRow> =
                missing.iter().map(|&i| rows[i].clone()).collect();
            let (computed, _) =
                score_pairs(model, &missing_rows, chunk, self.layout, precision, false);
            for (&i, logps) in missing.iter().zip(computed) {
                self.logps[i] = Some(logps);
            }
        }
        indices
            .iter()
            .map(|&i| self.logps[i].expect("computed above"))
            .collect()
    }

    /// Whether the cache computes rows on demand from a reference model (and
    /// so its filled rows are state worth saving).
    pub fn is_lazy(&self) -> bool {
        self.model.is_some()
    }

    /// The precision of the cached values.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Rows whose log-probs are cached.
    pub fn num_cached(&self) -> usize {
        self.logps.iter().filter(|l| l.is_some()).count()
    }

    /// The cached values, `[[row, chosen bits, rejected bits], ...]` (the
    /// f64 bit patterns, so that they come back to the bit).
    pub fn state(&self) -> Value {
        let entries: Vec<Value> = self
            .logps
            .iter()
            .enumerate()
            .filter_map(|(i, l)| l.map(|(c, r)| json!([i, c.to_bits(), r.to_bits()])))
            .collect();
        Value::Array(entries)
    }

    /// Restores what [`ReferenceCache::state`] saved, values computed in
    /// `precision`.
    pub fn restore(&mut self, state: &Value, precision: Precision) -> Result<(), String> {
        self.precision = precision;
        let entries = state.as_array().ok_or("reference_logps: not a list")?;
        for entry in entries {
            let numbers: Vec<u64> = entry
                .as_array()
                .filter(|e| e.len() == 3)
                .and_then(|e| e.iter().map(Value::as_u64).collect())
                .ok_or("reference_logps: an entry is not [row, chosen, rejected]")?;
            let row = usize::try_from(numbers[0]).map_err(|e| e.to_string())?;
            let slot = self
                .logps
                .get_mut(row)
                .ok_or(format!("reference_logps: row {row} out of range"))?;
            *slot = Some((f64::from_bits(numbers[1]), f64::from_bits(numbers[2])));
        }
        Ok(())
    }
}
