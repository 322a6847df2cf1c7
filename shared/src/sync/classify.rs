//! What a changed record means, decided from three states: the side whose change was read
//! (`x`), the other side now (`y`) and what both last agreed on (the link's base). Pure, so
//! every strategy is tested here; the engine carries decisions out.
//!
//! - Both sides equal: they agree (an echo of our own write, a replayed batch, or a change
//!   made on both): the link takes their state.
//! - `x` equal to the base: `x` did not move (a re-read): nothing to do.
//! - `y` equal to the base (or `y` absent and never synced): only `x` moved: write it to `y`.
//! - Otherwise both moved: a conflict, settled by the strategy or held for a person.
//!
//! States are records in the target's field names, `None` for deleted or absent.

use chrono::{DateTime, Utc};

use super::{
    adapter::Row,
    config::{ConflictStrategy, Which},
    conflicts::ConflictReason,
    values::{differing, same_fields},
};

/// One changed record and what is known of it.
pub struct Input<'a> {
    /// The side whose change was read.
    pub from: Which,
    pub x: Option<&'a Row>,
    pub y: Option<&'a Row>,
    /// The link: `None` never synced; `Some(None)` agreed deleted.
    pub base: Option<Option<&'a Row>>,
    /// An open conflict holds the record.
    pub held: bool,
    /// Each side's change time as it wrote it (for `newest_wins`).
    pub x_time: Option<DateTime<Utc>>,
    pub y_time: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Both sides hold the same: the link takes it (and an open conflict is settled).
    Agree,
    /// The side read has not moved since the base: nothing to do.
    Skip,
    /// Write `state` (`None`: delete) to side `to`; `conflict`: both had moved and the
    /// strategy chose.
    Apply {
        to: Which,
        state: Option<Row>,
        conflict: bool,
    },
    /// Write `state` to both sides (changes to different fields, merged).
    Merge { state: Row },
    /// Hold the record for a person (or keep holding it).
    Hold {
        reason: ConflictReason,
        fields: Vec<String>,
    },
}

fn same_state(a: Option<&Row>, b: Option<&Row>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => same_fields(a, b),
        _ => false,
    }
}

/// `strategy` `None`: a one-way sync, where the source (always `x`) decides.
pub fn decide(strategy: Option<ConflictStrategy>, i: &Input) -> Decision {
    let to = i.from.other();
    let apply = |state: Option<&Row>, conflict: bool| Decision::Apply {
        to,
        state: state.cloned(),
        conflict,
    };
    if same_state(i.x, i.y) {
        return Decision::Agree;
    }
    if let Some(base) = i.base {
        if same_state(i.x, base) && !i.held {
            return Decision::Skip;
        }
        if same_state(i.y, base) && !i.held {
            return apply(i.x, false);
        }
    } else if i.y.is_none() {
        return apply(i.x, false);
    }
    // Both moved (or both hold a record never synced, and they differ).
    let Some(strategy) = strategy else {
        return apply(i.x, false);
    };
    let (source, target, source_time, target_time) = match i.from {
        Which::Source => (i.x, i.y, i.x_time, i.y_time),
        Which::Target => (i.y, i.x, i.y_time, i.x_time),
    };
    let reason = if i.x.is_none() || i.y.is_none() {
        ConflictReason::DeletedAndChanged
    } else {
        ConflictReason::BothChanged
    };
    let empty = Row::new();
    let fields = differing(i.x.unwrap_or(&empty), i.y.unwrap_or(&empty));
    let win = |winner: Which| Decision::Apply {
        to: winner.other(),
        state: match winner {
            Which::Source => source.cloned(),
            Which::Target => target.cloned(),
        },
        conflict: true,
    };
    if i.held {
        return Decision::Hold { reason, fields };
    }
    match strategy {
        ConflictStrategy::SourceWins => win(Which::Source),
        ConflictStrategy::TargetWins => win(Which::Target),
        ConflictStrategy::NewestWins => match (source_time, target_time) {
            (Some(s), Some(t)) if t > s => win(Which::Target),
            _ => win(Which::Source),
        },
        ConflictStrategy::FieldMerge => match (i.x, i.y, i.base.flatten()) {
            (Some(x), Some(y), Some(base)) => {
                let moved_x = differing(x, base);
                let moved_y = differing(y, base);
                let overlap: Vec<String> = moved_x
                    .iter()
                    .filter(|f| moved_y.contains(f))
                    .filter(|f| differing_field(x, y, f))
                    .cloned()
                    .collect();
                if !overlap.is_empty() {
                    return Decision::Hold {
                        reason: ConflictReason::SameFieldsChanged,
                        fields: overlap,
                    };
                }
                let mut state = base.clone();
                for f in &moved_x {
                    state.insert(f.clone(), x.get(f).cloned().unwrap_or_default());
                }
                for f in &moved_y {
                    state.insert(f.clone(), y.get(f).cloned().unwrap_or_default());
                }
                Decision::Merge { state }
            }
            _ => Decision::Hold { reason, fields },
        },
        ConflictStrategy::Manual => Decision::Hold { reason, fields },
    }
}

fn differing_field(x: &Row, y: &Row, f: &str) -> bool {
    let null = serde_json::Value::Null;
    !super::values::same(x.get(f).unwrap_or(&null), y.get(f).unwrap_or(&null))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn row(v: serde_json::Value) -> Row {
        v.as_object().unwrap().clone()
    }

    fn input<'a>(
        from: Which,
        x: Option<&'a Row>,
        y: Option<&'a Row>,
        base: Option<Option<&'a Row>>,
    ) -> Input<'a> {
        Input {
            from,
            x,
            y,
            base,
            held: false,
            x_time: None,
            y_time: None,
        }
    }

    #[test]
    fn echoes_rereads_and_one_sided_changes() {
        let base = row(json!({"id": 1, "name": "Press", "qty": 5}));
        let moved = row(json!({"id": 1, "name": "Press 2", "qty": 5}));
        let s = Some(ConflictStrategy::Manual);
        // Our own write read back: both sides equal.
        let i = input(Which::Target, Some(&moved), Some(&moved), Some(Some(&base)));
        assert_eq!(decide(s, &i), Decision::Agree);
        // A re-read of an unmoved side (lookback) while the other moved: nothing here.
        let i = input(Which::Source, Some(&base), Some(&moved), Some(Some(&base)));
        assert_eq!(decide(s, &i), Decision::Skip);
        // Only the side read moved: it goes to the other.
        let i = input(Which::Target, Some(&moved), Some(&base), Some(Some(&base)));
        assert_eq!(
            decide(s, &i),
            Decision::Apply {
                to: Which::Source,
                state: Some(moved.clone()),
                conflict: false
            }
        );
        // New on the side read, never synced.
        let i = input(Which::Source, Some(&moved), None, None);
        assert!(matches!(
            decide(s, &i),
            Decision::Apply {
                to: Which::Target,
                ..
            }
        ));
        // Deleted on the side read, untouched on the other: deleted there.
        let i = input(Which::Source, None, Some(&base), Some(Some(&base)));
        assert_eq!(
            decide(s, &i),
            Decision::Apply {
                to: Which::Target,
                state: None,
                conflict: false
            }
        );
        // A value rendered differently by the other database is the same value.
        let other_form = row(json!({"id": "1", "name": "Press", "qty": 5.0}));
        let i = input(Which::Source, Some(&base), Some(&other_form), None);
        assert_eq!(decide(s, &i), Decision::Agree);
    }

    #[test]
    fn every_strategy_settles_a_record_changed_on_both_sides() {
        let base = row(json!({"id": 1, "name": "Press", "qty": 5, "site": "A"}));
        let src = row(json!({"id": 1, "name": "Press X", "qty": 5, "site": "A"}));
        let tgt = row(json!({"id": 1, "name": "Press", "qty": 7, "site": "A"}));
        let both = |strategy, x_time, y_time| {
            let mut i = input(Which::Source, Some(&src), Some(&tgt), Some(Some(&base)));
            i.x_time = x_time;
            i.y_time = y_time;
            decide(Some(strategy), &i)
        };
        assert_eq!(
            both(ConflictStrategy::SourceWins, None, None),
            Decision::Apply {
                to: Which::Target,
                state: Some(src.clone()),
                conflict: true
            }
        );
        assert_eq!(
            both(ConflictStrategy::TargetWins, None, None),
            Decision::Apply {
                to: Which::Source,
                state: Some(tgt.clone()),
                conflict: true
            }
        );
        let t1 = "2026-12-06T10:00:00Z".parse().ok();
        let t2 = "2026-12-06T10:00:01Z".parse().ok();
        assert!(matches!(
            both(ConflictStrategy::NewestWins, t1, t2),
            Decision::Apply {
                to: Which::Source,
                conflict: true,
                ..
            }
        ));
        assert!(matches!(
            both(ConflictStrategy::NewestWins, t2, t1),
            Decision::Apply {
                to: Which::Target,
                conflict: true,
                ..
            }
        ));
        // A tie goes to the source.
        assert!(matches!(
            both(ConflictStrategy::NewestWins, t1, t1),
            Decision::Apply {
                to: Which::Target,
                ..
            }
        ));
        // Different fields: merged.
        assert_eq!(
            both(ConflictStrategy::FieldMerge, None, None),
            Decision::Merge {
                state: row(json!({"id": 1, "name": "Press X", "qty": 7, "site": "A"}))
            }
        );
        assert_eq!(
            both(ConflictStrategy::Manual, None, None),
            Decision::Hold {
                reason: ConflictReason::BothChanged,
                fields: vec!["name".into(), "qty".into()]
            }
        );
        // The same field changed on both: held even by field_merge.
        let tgt2 = row(json!({"id": 1, "name": "Press Y", "qty": 5, "site": "A"}));
        let i = input(Which::Source, Some(&src), Some(&tgt2), Some(Some(&base)));
        assert_eq!(
            decide(Some(ConflictStrategy::FieldMerge), &i),
            Decision::Hold {
                reason: ConflictReason::SameFieldsChanged,
                fields: vec!["name".into()]
            }
        );
        // Deleted on one side, changed on the other.
        let i = input(Which::Target, None, Some(&src), Some(Some(&base)));
        assert!(matches!(
            decide(Some(ConflictStrategy::Manual), &i),
            Decision::Hold {
                reason: ConflictReason::DeletedAndChanged,
                ..
            }
        ));
        // An open conflict keeps holding the record until the sides agree.
        let mut i = input(Which::Source, Some(&src), Some(&base), Some(Some(&base)));
        i.held = true;
        assert!(matches!(
            decide(Some(ConflictStrategy::SourceWins), &i),
            Decision::Hold { .. }
        ));
        let mut i = input(Which::Source, Some(&src), Some(&src), Some(Some(&base)));
        i.held = true;
        assert_eq!(decide(Some(ConflictStrategy::Manual), &i), Decision::Agree);
    }

    #[test]
    fn one_way_syncs_let_the_source_decide() {
        let base = row(json!({"id": 1, "name": "Press"}));
        let src = row(json!({"id": 1, "name": "Press X"}));
        let tgt = row(json!({"id": 1, "name": "Press Y"}));
        let i = input(Which::Source, Some(&src), Some(&tgt), Some(Some(&base)));
        assert_eq!(
            decide(None, &i),
            Decision::Apply {
                to: Which::Target,
                state: Some(src.clone()),
                conflict: false
            }
        );
        // Unchanged at the source: an edit made at the target stays until the source changes.
        let i = input(Which::Source, Some(&base), Some(&tgt), Some(Some(&base)));
        assert_eq!(decide(None, &i), Decision::Skip);
    }
}
