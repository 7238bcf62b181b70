//! The metrics of a batch or a held-out set, typed: each a mean or a count,
//! under the names the wider ecosystem uses (`loss`, `rewards/chosen`,
//! `num_pairs`, ...). Written as one JSON object of the metrics log, keys in
//! name order, NaN as `null`.

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value};

/// One metric value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MetricValue {
    /// A mean over rows, pairs or tokens: parts of a batch merge weighted.
    Mean(f64),
    /// A count (the `num_*` metrics): parts of a batch merge by summing.
    Count(u64),
}

impl MetricValue {
    /// The value as a number.
    pub fn as_f64(self) -> f64 {
        match self {
            MetricValue::Mean(v) => v,
            MetricValue::Count(n) => n as f64,
        }
    }
}

/// Named metrics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics {
    /// Name and value, in name order, each name once.
    entries: Vec<(String, MetricValue)>,
}

impl Metrics {
    /// No metrics.
    pub fn new() -> Self {
        Metrics::default()
    }

    /// The fields of a metrics struct (`DpoMetrics`, `KtoMetrics`): each
    /// integer field a count, each other number a mean; an absent (`None`)
    /// field is left out.
    pub fn of<S: Serialize>(fields: &S) -> Self {
        let Ok(Value::Object(record)) = serde_json::to_value(fields) else {
            panic!("Metrics::of: the fields do not serialize to an object");
        };
        let mut metrics = Metrics::new();
        for (name, value) in record {
            let value = match value.as_u64() {
                Some(count) => MetricValue::Count(count),
                // NaN serializes as null.
                None => MetricValue::Mean(value.as_f64().unwrap_or(f64::NAN)),
            };
            metrics.set(&name, value);
        }
        metrics
    }

    /// Sets metric `name` (replacing an earlier value).
    pub fn set(&mut self, name: &str, value: MetricValue) {
        match self.entries.binary_search_by(|(n, _)| n.as_str().cmp(name)) {
            Ok(i) => self.entries[i].1 = value,
            Err(i) => self.entries.insert(i, (name.to_string(), value)),
        }
    }

    /// Sets the mean `name`.
    pub fn set_mean(&mut self, name: &str, value: f64) {
        self.set(name, MetricValue::Mean(value));
    }

    /// Metric `name`, if there is one.
    pub fn value(&self, name: &str) -> Option<MetricValue> {
        self.entries
            .binary_search_by(|(n, _)| n.as_str().cmp(name))
            .ok()
            .map(|i| self.entries[i].1)
    }

    /// Metric `name` as a number (NaN when absent).
    pub fn get(&self, name: &str) -> f64 {
        self.value(name).map_or(f64::NAN, MetricValue::as_f64)
    }

    /// Whether there is a metric `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.value(name).is_some()
    }

    /// Every metric, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, MetricValue)> {
        self.entries.iter().map(|(n, v)| (n.as_str(), *v))
    }

    /// The JSON object of the metrics log.
    pub fn to_json(&self) -> Map<String, Value> {
        self.iter()
            .map(|(name, value)| {
                let value = match value {
                    MetricValue::Mean(v) => serde_json::json!(v),
                    MetricValue::Count(n) => serde_json::json!(n),
                };
                (name.to_string(), value)
            })
            .collect()
    }
}

impl Serialize for Metrics {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.entries.len()))?;
        for (name, value) in &self.entries {
            match value {
                MetricValue::Mean(v) => map.serialize_entry(name, v)?,
                MetricValue::Count(n) => map.serialize_entry(name, n)?,
            }
        }
        map.end()
    }
}
