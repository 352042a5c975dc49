//! Aggregates: any type, started by `init`, folded value by value, merged
//! where a store needs it (sessions that join). `Fold` holds a
//! declaration's closures; `Aggregate` is the same as a trait, which
//! `Stats` (count, sum, min, max) implements. `Columns` names an
//! aggregate's values for a table's columns.

use std::sync::Arc;

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

impl Columns for Stats {
    fn columns() -> Vec<(&'static str, ValueType)> {
        vec![
            ("count", ValueType::Int),
            ("sum", ValueType::Float),
            ("min", ValueType::Float),
            ("max", ValueType::Float),
        ]
    }

    fn values(&self) -> Vec<Value> {
        vec![
            Value::Int(i64::try_from(self.count).unwrap_or(i64::MAX)),
            Value::Float(self.sum),
            Value::Float(self.min),
            Value::Float(self.max),
        ]
    }
}

/// Two aggregates side by side: their columns, the first's then the second's.
impl<A: Columns, B: Columns> Columns for (A, B) {
    fn columns() -> Vec<(&'static str, ValueType)> {
        let mut c = A::columns();
        c.extend(B::columns());
        c
    }

    fn values(&self) -> Vec<Value> {
        let mut v = self.0.values();
        v.extend(self.1.values());
        v
    }
}

impl<V, A: Aggregate<V>, B: Aggregate<V>> Aggregate<V> for (A, B) {
    fn add(&mut self, value: &V) {
        self.0.add(value);
        self.1.add(value);
    }

    fn merge(&mut self, other: &Self) {
        self.0.merge(&other.0);
        self.1.merge(&other.1);
    }
}

type Init<A> = Arc<dyn Fn() -> A + Send + Sync>;
type FoldFn<V, A> = Arc<dyn Fn(&mut A, &V) + Send + Sync>;
type MergeFn<A> = Arc<dyn Fn(&mut A, &A) + Send + Sync>;

/// A typed aggregate as declared: where it starts, how a value folds in,
/// and (where a store needs it: merging sessions) how two combine.
pub struct Fold<V, A> {
    pub init: Init<A>,
    pub fold: FoldFn<V, A>,
    pub merge: Option<MergeFn<A>>,
}

impl<V, A> Clone for Fold<V, A> {
    fn clone(&self) -> Self {
        Fold {
            init: self.init.clone(),
            fold: self.fold.clone(),
            merge: self.merge.clone(),
        }
    }
}

impl<V: 'static, A: 'static> Fold<V, A> {
    pub fn new(
        init: impl Fn() -> A + Send + Sync + 'static,
        fold: impl Fn(&mut A, &V) + Send + Sync + 'static,
    ) -> Self {
        Fold {
            init: Arc::new(init),
            fold: Arc::new(fold),
            merge: None,
        }
    }

    /// An `Aggregate`'s own init, add and merge.
    pub fn of() -> Self
    where
        A: Aggregate<V>,
    {
        Fold {
            init: Arc::new(A::default),
            fold: Arc::new(|a: &mut A, v: &V| a.add(v)),
            merge: Some(Arc::new(|a: &mut A, b: &A| a.merge(b))),
        }
    }

    pub fn with_merge(mut self, merge: impl Fn(&mut A, &A) + Send + Sync + 'static) -> Self {
        self.merge = Some(Arc::new(merge));
        self
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
    fn aggregates_side_by_side_fold_merge_and_list_their_columns() {
        let (mut a, mut b) = (
            <(Stats, Distinct)>::default(),
            <(Stats, Distinct)>::default(),
        );
        for v in [1.0, 2.0, 2.0] {
            a.add(&v);
        }
        for v in [2.0, 3.0] {
            b.add(&v);
        }
        a.merge(&b);
        assert_eq!(a.0.count, 5);
        assert_eq!(a.values()[4], Value::Int(3));
        let names: Vec<_> = <(Stats, Distinct)>::columns()
            .into_iter()
            .map(|c| c.0)
            .collect();
        assert_eq!(names, ["count", "sum", "min", "max", "distinct_values"]);
    }

    #[test]
    fn a_fold_of_closures_starts_folds_and_merges() {
        let f: Fold<f64, Vec<f64>> =
            Fold::new(Vec::new, |a, v| a.push(*v)).with_merge(|a, b| a.extend(b));
        let mut x = (f.init)();
        (f.fold)(&mut x, &1.5);
        let mut y = (f.init)();
        (f.fold)(&mut y, &2.5);
        (f.merge.as_ref().unwrap())(&mut x, &y);
        assert_eq!(x, vec![1.5, 2.5]);
    }
}
