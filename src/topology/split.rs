//! Named branches by predicate: each record goes to the first branch whose
//! predicate it meets (then to no other), or to the default branch, or is
//! dropped. The branches are streams of their own.

use std::sync::Arc;

use super::{
    BuildError,
    describe::NodeKind,
    graph::{Slot, push, slot},
    ops::{Ops, Source},
    stream::Stream,
};

type Predicate<T> = Arc<dyn Fn(&T) -> bool + Send + Sync>;

/// A split being declared: `branch` adds a named branch, `default_branch`
/// takes what no predicate took, `streams` ends the declaration.
pub struct Split<S, T, O> {
    stream: Stream<S, T, O>,
    name: String,
    branches: Vec<(String, Option<Predicate<T>>)>,
}

impl<S: 'static, T: Send + 'static, O: Ops<S, T>> Split<S, T, O> {
    pub(super) fn new(stream: Stream<S, T, O>, name: &str) -> Self {
        Split {
            stream,
            name: name.to_string(),
            branches: Vec::new(),
        }
    }

    /// A branch named `name` for the records `when` is true for (and no
    /// earlier branch took).
    pub fn branch(mut self, name: &str, when: impl Fn(&T) -> bool + Send + Sync + 'static) -> Self {
        self.branches.push((name.to_string(), Some(Arc::new(when))));
        self
    }

    /// The branch for records no other branch took; last.
    pub fn default_branch(mut self, name: &str) -> Self {
        self.branches.push((name.to_string(), None));
        self
    }

    /// The branches' streams, in the order declared. Asking for another
    /// number of streams than branches declared fails the build.
    pub fn streams<const N: usize>(self) -> [Stream<T, T, Source>; N] {
        let topology = self.stream.topology_name();
        let names: Vec<String> = self.branches.iter().map(|(n, _)| n.clone()).collect();
        let mut problem = None;
        if N != names.len() {
            problem = Some(format!(
                "{} branch(es) declared ({}) but {N} stream(s) taken",
                names.len(),
                names.join(", ")
            ));
        } else if let Some(i) = self.branches.iter().position(|(_, p)| p.is_none())
            && i + 1 != self.branches.len()
        {
            problem = Some(format!(
                "the default branch {} must be the last one",
                names[i]
            ));
        } else if let Some(dup) = names
            .iter()
            .enumerate()
            .find(|(i, n)| names[..*i].contains(n))
            .map(|(_, n)| n.clone())
        {
            problem = Some(format!("branch {dup} is named twice"));
        }
        if let Some(reason) = problem {
            self.stream.graph().borrow_mut().fail(BuildError::BadSplit {
                topology,
                split: self.name.clone(),
                reason,
            });
        }
        let slots: Vec<Slot<T>> = (0..N).map(|_| slot()).collect();
        let routes: Vec<(Option<Predicate<T>>, Slot<T>)> = self
            .branches
            .iter()
            .zip(&slots)
            .map(|((_, p), s)| (p.clone(), s.clone()))
            .collect();
        let (graph, tail, side) = self.stream.seal(move |t, ctx| {
            for (when, to) in &routes {
                if when.as_ref().is_none_or(|p| p(&t.value)) {
                    return push(to, t, ctx);
                }
            }
            Ok(())
        });
        let split = graph.borrow_mut().node(
            NodeKind::Split,
            format!("split({})", self.name),
            vec![tail],
            side,
        );
        let mut slots = slots.into_iter();
        std::array::from_fn(|i| {
            let label = match names.get(i) {
                Some(n) => format!("branch({n})"),
                None => "branch(?)".into(),
            };
            let node = graph
                .borrow_mut()
                .node(NodeKind::Branch, label, vec![split], side);
            let s = slots.next().unwrap_or_else(slot);
            Stream::start(graph.clone(), s, node, side)
        })
    }
}
