//! What a topology reads, does and writes, for `sluice topologies`, topic
//! creation and access checks: its graph as nodes, its sinks with the
//! guarantee each gets, and every topic it touches.

use std::fmt;

use super::graph::{NodeId, Side};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    Source,
    Operator,
    /// Records go to the first branch whose predicate they meet.
    Split,
    Branch,
    /// Every record goes to every branch.
    FanOut,
    Merge,
    Stateful,
    Sink,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeDesc {
    pub kind: NodeKind,
    pub label: String,
    pub parents: Vec<NodeId>,
    pub side: Side,
}

/// Where a sink's writes commit.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Domain {
    /// Kafka: in the unit's transaction with the input offsets.
    Kafka,
    /// A database looked up by this name when the topology runs; it keeps
    /// the input positions in its own transaction.
    Database(String),
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Domain::Kafka => f.write_str("Kafka"),
            Domain::Database(d) => write!(f, "database {d:?}"),
        }
    }
}

/// A sink as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkDesc {
    /// `topic processed-user-login`, `postgres:sensor_readings`.
    pub label: String,
    /// The topics it writes, to create them.
    pub topics: Vec<String>,
    pub domain: Domain,
    /// What it guarantees, in words, once the topology's commit is known.
    pub guarantee: String,
}

/// A state store as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreDesc {
    pub name: String,
    /// Where it lives and how it comes back after a restart.
    pub kept: String,
    /// Whether it has a changelog topic (`<group>-<store>-changelog`).
    pub changelog: bool,
}

/// What a topology reads, does and writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Description {
    pub name: String,
    pub source: String,
    pub group_id: String,
    /// Its members' transactional ids are this, `-`, their instance: the
    /// declared group id, kept when the group is changed for a run (so
    /// ACLs granted on the prefix hold).
    pub transactional_prefix: String,
    pub dead_letter: String,
    /// Where records later than a window's grace go (topologies with windows).
    pub late: Option<String>,
    pub nodes: Vec<NodeDesc>,
    pub sinks: Vec<SinkDesc>,
    pub stores: Vec<StoreDesc>,
    /// The topics it reads as tables, outside its group.
    pub tables: Vec<String>,
    /// Those of `tables` read co-partitioned (the partitions matching the
    /// member's, so with the source's partition count); the others are
    /// read whole.
    pub co_partitioned: Vec<String>,
    /// Sink topics created compacted: a table's changes, each key's latest
    /// kept.
    pub compacted: Vec<String>,
    /// Repartition topics it writes: records re-keyed for a sub-topology
    /// (created with the source's partition count).
    pub repartitions: Vec<String>,
    /// Whether its source is a repartition topic (it is a sub-topology):
    /// written in transactions, read as they commit.
    pub reads_repartition: bool,
    /// Where the unit commits: the input positions and what is written with them.
    pub commit: Domain,
}

impl Description {
    /// The topics the sinks write.
    pub fn writes(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for t in self.sinks.iter().flat_map(|s| s.topics.iter()) {
            if !out.contains(t) {
                out.push(t.clone());
            }
        }
        out
    }

    /// The changelog topics of the stores.
    pub fn changelogs(&self) -> Vec<String> {
        self.stores
            .iter()
            .filter(|s| s.changelog)
            .map(|s| super::changelog_topic(&self.group_id, &s.name))
            .collect()
    }

    /// Every topic this topology touches, the source first.
    pub fn topics(&self) -> Vec<String> {
        let mut t = vec![self.source.clone()];
        t.extend(self.writes());
        t.push(self.dead_letter.clone());
        t.extend(self.late.iter().cloned());
        t.extend(self.changelogs());
        t.extend(self.tables.iter().cloned());
        t
    }

    /// The operators, in declaration order (for one-line listings).
    pub fn operators(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|n| matches!(n.kind, NodeKind::Operator | NodeKind::Stateful))
            .map(|n| n.label.clone())
            .collect()
    }

    fn children(&self, of: NodeId) -> Vec<NodeId> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].parents.contains(&of))
            .collect()
    }

    /// Writes the graph below `at` as an indented tree; a merge is written
    /// once, under its first parent, and referred to from the others.
    fn tree(&self, f: &mut fmt::Formatter<'_>, at: NodeId, depth: usize) -> fmt::Result {
        let mut node = at;
        let indent = "  ".repeat(depth);
        let mut line = Vec::new();
        loop {
            line.push(self.label(node));
            let children = self.children(node);
            let single = children.len() == 1
                && !matches!(
                    self.nodes[children[0]].kind,
                    NodeKind::Branch | NodeKind::Merge
                );
            if single {
                node = children[0];
                continue;
            }
            writeln!(f, "{indent}{}", line.join(" → "))?;
            for c in children {
                let child = &self.nodes[c];
                if child.kind == NodeKind::Merge && child.parents[0] != node {
                    writeln!(f, "{indent}  → (into merge #{c} above)")?;
                    continue;
                }
                self.tree(f, c, depth + 1)?;
            }
            return Ok(());
        }
    }

    fn label(&self, id: NodeId) -> String {
        let n = &self.nodes[id];
        match n.kind {
            NodeKind::Merge => format!("merge #{id}"),
            _ => n.label.clone(),
        }
    }
}

impl fmt::Display for Description {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.name)?;
        writeln!(f, "  group:       {}", self.group_id)?;
        writeln!(f, "  commits:     {}", commit_words(&self.commit))?;
        writeln!(f, "  graph:")?;
        if let Some(root) = self.nodes.iter().position(|n| n.kind == NodeKind::Source) {
            struct Tree<'a>(&'a Description, NodeId);
            impl fmt::Display for Tree<'_> {
                fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    self.0.tree(f, self.1, 2)
                }
            }
            write!(f, "{}", Tree(self, root))?;
        }
        writeln!(f, "  sinks:")?;
        for s in &self.sinks {
            let within =
                |list: &[String]| !s.topics.is_empty() && s.topics.iter().all(|t| list.contains(t));
            let label = if within(&self.compacted) {
                format!("{} (compacted)", s.label)
            } else if within(&self.repartitions) {
                format!("{} (repartition)", s.label)
            } else {
                s.label.clone()
            };
            writeln!(f, "    {label:<40} {}", s.guarantee)?;
        }
        for s in &self.stores {
            write!(f, "  store:       {} ({})", s.name, s.kept)?;
            if s.changelog {
                write!(
                    f,
                    ", changelog {}",
                    super::changelog_topic(&self.group_id, &s.name)
                )?;
            }
            writeln!(f)?;
        }
        for t in &self.tables {
            let read = if self.co_partitioned.contains(t) {
                "the member's partitions"
            } else {
                "every partition"
            };
            writeln!(f, "  table:       {t} ({read}, by event time)")?;
        }
        writeln!(f, "  dead letter: {}", self.dead_letter)?;
        if let Some(late) = &self.late {
            writeln!(f, "  late:        {late}")?;
        }
        Ok(())
    }
}

fn commit_words(d: &Domain) -> String {
    match d {
        Domain::Kafka => {
            "one Kafka transaction per unit: outputs, letters, changelogs and input offsets".into()
        }
        Domain::Database(db) => format!(
            "one transaction of database {db:?} per unit: its rows, its stores' changes and the input positions (claimed per partition, fenced by epoch)"
        ),
    }
}
