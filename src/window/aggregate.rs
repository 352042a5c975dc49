//! Aggregates that fold values and merge partial results, so a batch's
//! partial aggregate can be merged into what an earlier batch stored.
//! `Combined` is what windows keep: `Stats`, and beside it, type-erased, a
//! user-defined aggregate whose `Columns` reach the sinks.

use std::any::Any;

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

/// An aggregate's output value, as a sink stores it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    Int(i64),
    Float(f64),
}

impl Value {
    pub fn as_f64(self) -> f64 {
        match self {
            Value::Int(n) => n as f64,
            Value::Float(x) => x,
        }
    }
}

/// What a column of a user-defined aggregate holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueType {
    /// BIGINT in PostgreSQL.
    Int,
    /// DOUBLE PRECISION in PostgreSQL.
    Float,
}

/// The named outputs of a user-defined aggregate: columns of its table
/// (`TableSpec::columns_of`), or fields a topic's record is made of.
pub trait Columns {
    /// Each column's name and type, in order.
    fn columns() -> Vec<(&'static str, ValueType)>;
    /// The values, one per column, in the same order.
    fn values(&self) -> Vec<Value>;
}

/// A user-defined aggregate with its type erased, so one window stage runs
/// any of them.
pub trait UserAggregate: Send + Sync {
    fn add(&mut self, value: f64);
    /// Merges another of the same type (others are ignored).
    fn merge(&mut self, other: &dyn UserAggregate);
    fn values(&self) -> Vec<Value>;
    fn boxed(&self) -> Box<dyn UserAggregate>;
    fn as_any(&self) -> &dyn Any;
}

impl<T: Aggregate<f64> + Columns + Sync> UserAggregate for T {
    fn add(&mut self, value: f64) {
        Aggregate::add(self, &value);
    }

    fn merge(&mut self, other: &dyn UserAggregate) {
        if let Some(o) = other.as_any().downcast_ref::<T>() {
            Aggregate::merge(self, o);
        }
    }

    fn values(&self) -> Vec<Value> {
        Columns::values(self)
    }

    fn boxed(&self) -> Box<dyn UserAggregate> {
        Box::new(self.clone())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// What a window keeps: `Stats`, and the topology's own aggregate if it
/// declared one. The default (no user aggregate) is the identity of
/// `merge`; windows start from `Combined::of`, their declaration's kind.
#[derive(Default)]
pub struct Combined {
    pub stats: Stats,
    user: Option<Box<dyn UserAggregate>>,
}

impl Clone for Combined {
    fn clone(&self) -> Self {
        Combined {
            stats: self.stats,
            user: self.user.as_ref().map(|u| u.boxed()),
        }
    }
}

impl std::fmt::Debug for Combined {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Combined")
            .field("stats", &self.stats)
            .field("user", &self.user.as_ref().map(|u| u.values()))
            .finish()
    }
}

impl PartialEq for Combined {
    fn eq(&self, other: &Self) -> bool {
        self.stats == other.stats && self.user_values() == other.user_values()
    }
}

impl Combined {
    /// An empty aggregate with a fresh `T` beside the stats.
    pub fn of<T: Aggregate<f64> + Columns + Sync>() -> Combined {
        Combined {
            stats: Stats::default(),
            user: Some(Box::new(T::default())),
        }
    }

    /// The user-defined aggregate, if it is a `T`.
    pub fn user<T: 'static>(&self) -> Option<&T> {
        self.user.as_ref()?.as_any().downcast_ref()
    }

    /// The user-defined aggregate's values (none without one).
    pub fn user_values(&self) -> Vec<Value> {
        self.user.as_ref().map(|u| u.values()).unwrap_or_default()
    }
}

impl From<Stats> for Combined {
    fn from(stats: Stats) -> Self {
        Combined { stats, user: None }
    }
}

impl Aggregate<f64> for Combined {
    fn add(&mut self, v: &f64) {
        self.stats.add(v);
        if let Some(u) = &mut self.user {
            u.add(*v);
        }
    }

    fn merge(&mut self, o: &Self) {
        self.stats.merge(&o.stats);
        match (&mut self.user, &o.user) {
            (Some(u), Some(other)) => u.merge(other.as_ref()),
            (None, Some(other)) => self.user = Some(other.boxed()),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Distinct values seen (a set, so merging is exact).
    #[derive(Clone, Default)]
    struct Distinct(std::collections::BTreeSet<i64>);

    impl Aggregate<f64> for Distinct {
        fn add(&mut self, v: &f64) {
            self.0.insert(*v as i64);
        }
        fn merge(&mut self, o: &Self) {
            self.0.extend(&o.0);
        }
    }

    impl Columns for Distinct {
        fn columns() -> Vec<(&'static str, ValueType)> {
            vec![("distinct_values", ValueType::Int)]
        }
        fn values(&self) -> Vec<Value> {
            vec![Value::Int(self.0.len() as i64)]
        }
    }

    #[test]
    fn a_user_aggregate_folds_and_merges_beside_the_stats() {
        let (mut a, mut b) = (Combined::of::<Distinct>(), Combined::of::<Distinct>());
        for v in [1.0, 2.0, 2.0] {
            a.add(&v);
        }
        for v in [2.0, 3.0] {
            b.add(&v);
        }
        let mut whole = Combined::default();
        whole.merge(&a);
        whole.merge(&b);
        assert_eq!(whole.stats.count, 5);
        assert_eq!(whole.user_values(), vec![Value::Int(3)]);
        assert_eq!(whole.user::<Distinct>().map(|d| d.0.len()), Some(3));
        assert!(whole.user::<Stats>().is_none());
        assert_eq!(whole.clone(), whole);
        assert!(Combined::default().user_values().is_empty());
    }
}
