//! Aggregates that fold values and merge partial results, so a batch's
//! partial aggregate can be merged into what an earlier batch stored.

/// A mergeable aggregate over values of type `V`.
pub trait Aggregate<V>: Clone + Default + Send + 'static {
    fn add(&mut self, value: &V);
    /// Combines another partial result into this one (associative).
    fn merge(&mut self, other: &Self);
}

/// count, sum, min, max (avg derived), over f64.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    pub count: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            count: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }
}

impl Stats {
    pub fn avg(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum / self.count as f64)
    }
}

impl Aggregate<f64> for Stats {
    fn add(&mut self, v: &f64) {
        self.count += 1;
        self.sum += v;
        self.min = self.min.min(*v);
        self.max = self.max.max(*v);
    }

    fn merge(&mut self, o: &Self) {
        self.count += o.count;
        self.sum += o.sum;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
    }
}
