//! How long the control loop takes to act, as Prometheus histograms
//! (cumulative buckets, seconds): from a claim in the kernel to its holder
//! record in the store, and from the first sign of a wrong holder to its
//! correction. The data plane itself re-points on the claim's own XDP run,
//! so these measure what the operator's view and the platform's corrections
//! lag behind it.

use std::sync::Mutex;

use crate::sync::lock;

/// Bucket upper bounds, seconds: 100 µs to 10 s.
pub const BUCKETS: [f64; 12] = [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// One histogram: observations counted per bucket (not cumulative; the
/// exposition adds them up), their sum and count.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Histogram {
    /// Observations at most `BUCKETS[i]` (and above `BUCKETS[i - 1]`); the
    /// last entry counts those above every bound.
    pub counts: [u64; BUCKETS.len() + 1],
    /// Sum of every observation, seconds.
    pub sum: f64,
    /// Number of observations.
    pub count: u64,
}

impl Histogram {
    /// Records one observation of `seconds`.
    pub fn observe(&mut self, seconds: f64) {
        let i = BUCKETS.iter().position(|b| seconds <= *b).unwrap_or(BUCKETS.len());
        self.counts[i] += 1;
        self.sum += seconds;
        self.count += 1;
    }

    /// `(le, cumulative count)` per bucket, `+Inf` last: the exposition's
    /// `_bucket` samples.
    pub fn cumulative(&self) -> Vec<(String, u64)> {
        let mut total = 0;
        let mut out = Vec::with_capacity(self.counts.len());
        for (i, n) in self.counts.iter().enumerate() {
            total += n;
            let le = BUCKETS.get(i).map_or_else(|| "+Inf".to_owned(), |b| b.to_string());
            out.push((le, total));
        }
        out
    }
}

/// The control loop's latencies.
#[derive(Debug, Default)]
pub struct Latencies {
    /// A claim stamped by the kernel -> its holder record committed to the store.
    pub claim_recorded: Mutex<Histogram>,
    /// The first missed probe (or the first round a silent holder's rival
    /// advertised) -> the holder corrected.
    pub correction: Mutex<Histogram>,
}

impl Latencies {
    /// Records a claim's way to the store, `ns` nanoseconds.
    pub fn claim_recorded(&self, ns: u64) {
        lock(&self.claim_recorded).observe(ns as f64 / 1e9);
    }

    /// Records a correction `ns` nanoseconds after the first sign.
    pub fn correction(&self, ns: u64) {
        lock(&self.correction).observe(ns as f64 / 1e9);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_inf_counts_all() {
        let mut h = Histogram::default();
        for s in [0.00005, 0.0003, 0.2, 30.0] {
            h.observe(s);
        }
        let c = h.cumulative();
        assert_eq!(c[0], ("0.0001".to_owned(), 1));
        assert_eq!(c[1], ("0.0005".to_owned(), 2));
        assert_eq!(c[7], ("0.25".to_owned(), 3));
        assert_eq!(c.last().unwrap(), &("+Inf".to_owned(), 4));
        assert_eq!(h.count, 4);
        assert!((h.sum - 30.20035).abs() < 1e-9);
    }
}
