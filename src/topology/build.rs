//! Checking a declaration whole: names and topics, a source and at least
//! one sink, no stream left dangling, one place to commit, and the rules
//! of stateful operators. Errors say what to change.

use super::{
    BuildError, Description, Domain, Topology, describe::NodeKind, graph::Shared, valid_topic,
};

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// What a sink in `sink` guarantees when the unit commits in `commit`.
fn guarantee(commit: &Domain, sink: &Domain) -> String {
    match (commit, sink) {
        (Domain::Kafka, Domain::Kafka) => {
            "exactly-once (in the unit's Kafka transaction; at-least-once if the topology runs so)"
                .into()
        }
        (Domain::Database(d), Domain::Database(_)) => {
            format!("exactly-once (in database {d:?}'s transaction with the input positions)")
        }
        (Domain::Database(d), Domain::Kafka) => format!(
            "at-least-once (written and acknowledged before database {d:?} commits the positions)"
        ),
        (Domain::Kafka, Domain::Database(d)) => format!("database {d:?} (never: build refuses it)"),
    }
}

pub(super) fn build(graph: Shared) -> Result<Topology, BuildError> {
    let g = graph.borrow();
    let name = g.name.clone();
    if !valid_name(&name) {
        return Err(BuildError::BadName(name));
    }
    if let Some(e) = g.errors.first() {
        return Err(e.clone());
    }
    let source = g
        .source
        .as_ref()
        .ok_or_else(|| BuildError::NoSource(name.clone()))?;
    if g.sinks.is_empty() {
        return Err(BuildError::NoSink(name));
    }
    let dangling = g.dangling();
    if !dangling.is_empty() {
        let nodes: Vec<String> = dangling.iter().map(|&n| g.nodes[n].label.clone()).collect();
        return Err(BuildError::Dangling {
            topology: name,
            nodes: nodes.join(", "),
        });
    }
    let group_id = g
        .group_id
        .clone()
        .unwrap_or_else(|| format!("sluice-{name}"));
    let dead_letter = g
        .dead_letter
        .clone()
        .unwrap_or_else(|| format!("{}.dlq", source.topic));

    // One place to commit: a database if any sink writes to one.
    let mut commit = Domain::Kafka;
    for s in &g.sinks {
        if let Domain::Database(d) = &s.desc.domain {
            match &commit {
                Domain::Database(first) if first != d => {
                    return Err(BuildError::TwoDatabases {
                        topology: name,
                        first: first.clone(),
                        second: d.clone(),
                    });
                }
                _ => commit = Domain::Database(d.clone()),
            }
        }
    }

    let mut stores = Vec::new();
    let mut clock = None;
    let mut late = false;
    for op in &g.operators {
        let spec = &op.spec;
        if spec.rebuilds_from_input() && !op.fed_by_loop {
            return Err(BuildError::RebuildAfterState {
                topology: name,
                operator: g.nodes[op.node].label.clone(),
            });
        }
        if let Some(c) = spec.clock() {
            if clock.is_some_and(|k| k != c) {
                return Err(BuildError::WindowClocks { topology: name });
            }
            clock = Some(c);
        }
        late |= spec.sends_late();
        for mut s in spec.stores() {
            // A Kafka changelog could not commit with the database's
            // positions: the database keeps the store's changes instead.
            if let (true, Domain::Database(d)) = (s.changelog, &commit) {
                s.changelog = false;
                s.kept = format!("{}, its changes kept in database {d:?}", s.kept);
            }
            if stores.iter().any(|o: &super::StoreDesc| o.name == s.name) {
                return Err(BuildError::StoreTwice {
                    topology: name,
                    store: s.name,
                });
            }
            stores.push(s);
        }
    }

    let sinks: Vec<super::SinkDesc> = g
        .sinks
        .iter()
        .map(|s| super::SinkDesc {
            guarantee: guarantee(&commit, &s.desc.domain),
            ..s.desc.clone()
        })
        .collect();
    let description = Description {
        name: name.clone(),
        source: source.topic.clone(),
        // A sub-topology's members are the group's too, with producers of
        // their own.
        transactional_prefix: match &g.rekeyed_by {
            Some(step) => format!("{group_id}.{step}"),
            None => group_id.clone(),
        },
        reads_repartition: g.rekeyed_by.is_some(),
        group_id,
        dead_letter,
        late: late.then(|| format!("{}.late", source.topic)),
        nodes: g.nodes.clone(),
        sinks,
        stores,
        tables: g.tables.iter().map(|t| t.topic().to_string()).collect(),
        co_partitioned: (g.tables.iter())
            .filter(|t| t.co_partitioned())
            .map(|t| t.topic().to_string())
            .collect(),
        compacted: g.compacted.clone(),
        repartitions: g.repartitions.clone(),
        commit,
    };
    for t in description.topics() {
        if !valid_topic(&t) {
            return Err(BuildError::BadTopic {
                topology: name,
                topic: t,
            });
        }
    }
    let writes = description.writes();
    let looping = writes
        .iter()
        .chain(std::iter::once(&description.dead_letter))
        .chain(description.late.iter())
        .find(|t| **t == description.source);
    if let Some(t) = looping {
        return Err(BuildError::Loop {
            topology: name,
            topic: t.clone(),
        });
    }
    debug_assert!(description.nodes.iter().any(|n| n.kind == NodeKind::Source));
    // A sub-topology's letters go where its parent's do.
    let mut subs = Vec::new();
    for sub in &g.subs {
        sub.borrow_mut()
            .dead_letter
            .get_or_insert_with(|| description.dead_letter.clone());
        let built = build(sub.clone())?;
        subs.push(built);
    }
    Ok(Topology {
        subs,
        description,
        processor: source.processor.clone(),
        sinks: g.sinks.iter().map(|s| s.open.clone()).collect(),
        operators: g.operators.iter().map(|o| o.spec.clone()).collect(),
        schemas: g.schemas.clone(),
        read_tables: g.tables.clone(),
    })
}
