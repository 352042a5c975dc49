//! The operators as types. A declared chain is one nested type, so the
//! compiler inlines every stage into the next: no call through a trait
//! object per stage, and no copy of the record into each call (a login
//! record is 200 bytes; with boxed closures those copies and calls were a
//! tenth of the user-login topology's work). You seldom need to name these
//! types: `Stream`'s methods build them.

use std::{fmt::Display, marker::PhantomData};

use super::{Failure, FailureKind, Item, OpError};

/// A chain of operators turning one `S` record into zero or more `T` records.
pub trait Ops<S, T>: Send + Sync + 'static {
    /// Runs the chain on `item`, handing each result to `out`.
    fn run<E>(&self, item: Item<S>, out: &mut E) -> Result<(), Failure>
    where
        E: FnMut(Item<T>) -> Result<(), Failure> + ?Sized;
}

/// Marks the record type flowing into a stage, without owning one.
type Flowing<T> = PhantomData<fn(T) -> T>;

/// The records as the source decoded them.
pub struct Source;

impl<S> Ops<S, S> for Source {
    fn run<E>(&self, item: Item<S>, out: &mut E) -> Result<(), Failure>
    where
        E: FnMut(Item<S>) -> Result<(), Failure> + ?Sized,
    {
        out(item)
    }
}

pub struct Filter<P, F, T> {
    pub(super) prev: P,
    pub(super) keep: F,
    pub(super) flowing: Flowing<T>,
}

impl<S, T: 'static, P, F> Ops<S, T> for Filter<P, F, T>
where
    P: Ops<S, T>,
    F: Fn(&T) -> bool + Send + Sync + 'static,
{
    fn run<E>(&self, item: Item<S>, out: &mut E) -> Result<(), Failure>
    where
        E: FnMut(Item<T>) -> Result<(), Failure> + ?Sized,
    {
        self.prev.run(item, &mut |t: Item<T>| {
            if (self.keep)(&t.value) {
                out(t)
            } else {
                Ok(())
            }
        })
    }
}

pub struct Map<P, F, T> {
    pub(super) prev: P,
    pub(super) f: F,
    pub(super) flowing: Flowing<T>,
}

impl<S, T: 'static, U, P, F> Ops<S, U> for Map<P, F, T>
where
    P: Ops<S, T>,
    F: Fn(T) -> U + Send + Sync + 'static,
{
    fn run<E>(&self, item: Item<S>, out: &mut E) -> Result<(), Failure>
    where
        E: FnMut(Item<U>) -> Result<(), Failure> + ?Sized,
    {
        self.prev.run(item, &mut |t: Item<T>| {
            out(Item {
                key: t.key,
                value: (self.f)(t.value),
                timestamp_ms: t.timestamp_ms,
            })
        })
    }
}

pub struct FlatMap<P, F, T> {
    pub(super) prev: P,
    pub(super) f: F,
    pub(super) flowing: Flowing<T>,
}

impl<S, T: 'static, U, I, P, F> Ops<S, U> for FlatMap<P, F, T>
where
    P: Ops<S, T>,
    F: Fn(T) -> I + Send + Sync + 'static,
    I: IntoIterator<Item = U>,
{
    fn run<E>(&self, item: Item<S>, out: &mut E) -> Result<(), Failure>
    where
        E: FnMut(Item<U>) -> Result<(), Failure> + ?Sized,
    {
        self.prev.run(item, &mut |t: Item<T>| {
            for value in (self.f)(t.value) {
                out(Item {
                    key: t.key.clone(),
                    value,
                    timestamp_ms: t.timestamp_ms,
                })?;
            }
            Ok(())
        })
    }
}

pub struct TryMap<P, F, T, Er> {
    pub(super) prev: P,
    pub(super) f: F,
    pub(super) name: String,
    pub(super) flowing: Flowing<(T, Er)>,
}

impl<S, T: 'static, U, Er: Display + 'static, P, F> Ops<S, U> for TryMap<P, F, T, Er>
where
    P: Ops<S, T>,
    F: Fn(T) -> Result<U, Er> + Send + Sync + 'static,
{
    fn run<E>(&self, item: Item<S>, out: &mut E) -> Result<(), Failure>
    where
        E: FnMut(Item<U>) -> Result<(), Failure> + ?Sized,
    {
        self.prev
            .run(item, &mut |t: Item<T>| match (self.f)(t.value) {
                Ok(value) => out(Item {
                    key: t.key,
                    value,
                    timestamp_ms: t.timestamp_ms,
                }),
                Err(e) => Err(Failure::Operator(OpError {
                    operator: self.name.clone(),
                    kind: FailureKind::Operator,
                    message: e.to_string(),
                })),
            })
    }
}

pub struct Validate<P, F, T, Er> {
    pub(super) prev: P,
    pub(super) rule: F,
    pub(super) name: String,
    pub(super) flowing: Flowing<(T, Er)>,
}

impl<S, T: 'static, Er: Display + 'static, P, F> Ops<S, T> for Validate<P, F, T, Er>
where
    P: Ops<S, T>,
    F: Fn(&T) -> Result<(), Er> + Send + Sync + 'static,
{
    fn run<E>(&self, item: Item<S>, out: &mut E) -> Result<(), Failure>
    where
        E: FnMut(Item<T>) -> Result<(), Failure> + ?Sized,
    {
        self.prev
            .run(item, &mut |t: Item<T>| match (self.rule)(&t.value) {
                Ok(()) => out(t),
                Err(e) => Err(Failure::Operator(OpError {
                    operator: self.name.clone(),
                    kind: FailureKind::Validation,
                    message: e.to_string(),
                })),
            })
    }
}

pub struct KeyBy<P, F, T> {
    pub(super) prev: P,
    pub(super) key: F,
    pub(super) flowing: Flowing<T>,
}

impl<S, T: 'static, P, F> Ops<S, T> for KeyBy<P, F, T>
where
    P: Ops<S, T>,
    F: Fn(&T) -> String + Send + Sync + 'static,
{
    fn run<E>(&self, item: Item<S>, out: &mut E) -> Result<(), Failure>
    where
        E: FnMut(Item<T>) -> Result<(), Failure> + ?Sized,
    {
        self.prev.run(item, &mut |mut t: Item<T>| {
            t.key = Some((self.key)(&t.value).into_bytes());
            out(t)
        })
    }
}

pub struct EventTime<P, F, T> {
    pub(super) prev: P,
    pub(super) time_ms: F,
    pub(super) flowing: Flowing<T>,
}

impl<S, T: 'static, P, F> Ops<S, T> for EventTime<P, F, T>
where
    P: Ops<S, T>,
    F: Fn(&T) -> i64 + Send + Sync + 'static,
{
    fn run<E>(&self, item: Item<S>, out: &mut E) -> Result<(), Failure>
    where
        E: FnMut(Item<T>) -> Result<(), Failure> + ?Sized,
    {
        self.prev.run(item, &mut |mut t: Item<T>| {
            t.timestamp_ms = (self.time_ms)(&t.value);
            out(t)
        })
    }
}
