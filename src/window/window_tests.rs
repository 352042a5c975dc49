use std::time::Duration;

use super::*;

const S: i64 = 1000;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn w(start: i64, end: i64) -> Window {
    Window {
        start_ms: start * S,
        end_ms: end * S,
    }
}

#[test]
fn tumbling_boundaries_are_half_open() {
    let k = WindowKind::Tumbling { size: secs(60) };
    assert_eq!(k.windows_for(0), vec![w(0, 60)]);
    assert_eq!(k.windows_for(59_999), vec![w(0, 60)]);
    assert_eq!(k.windows_for(60_000), vec![w(60, 120)]);
    assert_eq!(k.windows_for(-1), vec![w(-60, 0)]);
}

#[test]
fn hopping_windows_overlap() {
    let k = WindowKind::Hopping {
        size: secs(60),
        advance: secs(20),
    };
    assert_eq!(
        k.windows_for(65_000),
        vec![w(20, 80), w(40, 100), w(60, 120)]
    );
    assert_eq!(
        k.windows_for(60_000),
        vec![w(20, 80), w(40, 100), w(60, 120)]
    );
    assert_eq!(k.windows_for(59_999), vec![w(0, 60), w(20, 80), w(40, 100)]);
    assert!(
        WindowKind::Hopping {
            size: secs(10),
            advance: secs(20)
        }
        .validate()
        .is_err()
    );
    assert!(
        WindowKind::Tumbling {
            size: Duration::ZERO
        }
        .validate()
        .is_err()
    );
}

#[test]
fn hopping_counts_match_a_brute_force_count() {
    let spec = WindowSpec {
        kind: WindowKind::Hopping {
            size: secs(30),
            advance: secs(10),
        },
        grace: Duration::ZERO,
        out_of_order: Duration::ZERO,
        idle_timeout: secs(60),
    };
    let mut state: WindowState<&str, f64, Stats> = WindowState::new(spec);
    let times: Vec<i64> = (0..200).map(|i| i * 737 % 90_000).collect();
    for t in &times {
        assert!(state.add(&"k", *t, &1.0, i64::MIN).is_empty());
    }
    let (updates, _) = state.flush(i64::MIN);
    for u in updates {
        let expected = times
            .iter()
            .filter(|t| **t >= u.window.start_ms && **t < u.window.end_ms)
            .count() as u64;
        assert_eq!(u.partial.count, expected, "{:?}", u.window);
        assert!(!u.is_final);
    }
}

#[test]
fn out_of_order_within_grace_is_accepted_and_beyond_is_late() {
    let spec = WindowSpec::tumbling(secs(60), secs(10));
    let mut wm = Watermarks::new(0, 30 * S);
    let mut state: WindowState<&str, f64, Stats> = WindowState::new(spec);
    wm.observe(0, 61 * S, 0);
    let mark = wm.watermark(0, 0);
    assert_eq!(mark, 61 * S);
    assert!(state.add(&"k", 61 * S, &5.0, mark).is_empty());
    // 59 s is before the watermark, but [0, 60) is open until 70 s.
    assert!(state.add(&"k", 59 * S, &7.0, mark).is_empty());
    wm.observe(0, 75 * S, 0);
    let mark = wm.watermark(0, 0);
    let late = state.add(&"k", 58 * S, &1.0, mark);
    assert_eq!(
        late,
        vec![Late {
            window: w(0, 60),
            watermark_ms: 75 * S,
            event_ms: 58 * S,
        }]
    );
    let (updates, _) = state.flush(mark);
    let first = updates.iter().find(|u| u.window == w(0, 60)).unwrap();
    assert_eq!(
        (first.partial.count, first.partial.sum, first.is_final),
        (1, 7.0, true)
    );
    let second = updates.iter().find(|u| u.window == w(60, 120)).unwrap();
    assert!(!second.is_final);
}

#[test]
fn windows_close_by_wall_clock_when_their_partition_is_idle() {
    let spec = WindowSpec::tumbling(secs(60), secs(10));
    let mut wm = Watermarks::new(0, 5 * S);
    let mut state: WindowState<&str, f64, Stats> = WindowState::new(spec);
    // One reading at 30 s of event time, seen at wall time 1 000 s; then silence.
    wm.observe(0, 30 * S, 1000 * S);
    assert!(
        state
            .add(&"k", 30 * S, &1.0, wm.watermark(0, 1000 * S))
            .is_empty()
    );
    let (updates, _) = state.flush(wm.watermark(0, 1000 * S));
    assert!(!updates[0].is_final);
    // 39 s of silence: event time is taken to have moved on with the clock.
    let (_, closed) = state.flush(wm.watermark(0, 1039 * S));
    assert!(closed.is_empty(), "not yet: 30 + 39 < 60 + 10");
    let (_, closed) = state.flush(wm.watermark(0, 1041 * S));
    assert_eq!(
        closed,
        vec![Closed {
            key: "k",
            window: w(0, 60)
        }]
    );
    assert_eq!(state.open_windows(), 0);
}

#[test]
fn partial_aggregates_merge_to_the_whole() {
    let values = [3.0, -1.5, 8.25, 0.0, 2.0];
    let mut whole = Stats::default();
    values.iter().for_each(|v| whole.add(v));
    let (mut a, mut b) = (Stats::default(), Stats::default());
    values[..2].iter().for_each(|v| a.add(v));
    values[2..].iter().for_each(|v| b.add(v));
    a.merge(&b);
    assert_eq!(a, whole);
    assert_eq!(whole.avg(), Some(11.75 / 5.0));
    assert_eq!(Stats::default().avg(), None);
}

#[test]
fn a_restored_watermark_keeps_closed_windows_closed() {
    let spec = WindowSpec::tumbling(secs(60), secs(10));
    let mut wm = Watermarks::new(0, 30 * S);
    wm.restore(0, 80 * S, 0);
    let mut state: WindowState<&str, f64, Stats> = WindowState::new(spec);
    wm.observe(0, 20 * S, 0);
    let late = state.add(&"k", 20 * S, &1.0, wm.watermark(0, 0));
    assert_eq!(late.len(), 1, "a restart must not reopen a final window");
}

#[test]
fn final_windows_come_out_whole_and_once() {
    let spec = WindowSpec::tumbling(secs(60), secs(10));
    let mut state: WindowState<&str, f64, Stats> = WindowState::new(spec);
    state.add(&"k", 5 * S, &1.0, i64::MIN);
    state.add(&"k", 65 * S, &4.0, i64::MIN);
    assert!(state.take_final(69 * S).is_empty(), "open until 70 s");
    state.add(&"k", 6 * S, &2.0, 69 * S);
    let finals = state.take_final(70 * S);
    assert_eq!(finals.len(), 1);
    let f = &finals[0];
    assert_eq!(
        (f.window, f.partial.count, f.partial.sum),
        (w(0, 60), 2, 3.0)
    );
    assert!(f.is_final);
    assert!(state.take_final(70 * S).is_empty(), "emitted once");
    assert_eq!(state.open_windows(), 1);
    let last = state.take_final(130 * S);
    assert_eq!((last[0].window, last[0].partial.count), (w(60, 120), 1));
}

/// Sessions of 10 s gap, 5 s grace, driven by one partition's watermark.
fn sessions() -> (
    WindowSpec,
    Watermarks,
    WindowState<&'static str, f64, Stats>,
) {
    let spec = WindowSpec::session(secs(10), secs(5));
    (spec, Watermarks::new(0, 30 * S), WindowState::new(spec))
}

fn feed(
    wm: &mut Watermarks,
    state: &mut WindowState<&'static str, f64, Stats>,
    key: &'static str,
    at_s: i64,
    offset: i64,
) -> Vec<Late> {
    wm.observe(0, at_s * S, 0);
    state.add_at(&key, at_s * S, &(at_s as f64), wm.watermark(0, 0), offset)
}

#[test]
fn records_within_the_gap_extend_one_session() {
    let (spec, mut wm, mut state) = sessions();
    assert_eq!(spec.kind.validate(), Ok(()));
    for (i, t) in [100, 104, 109, 118].into_iter().enumerate() {
        assert!(feed(&mut wm, &mut state, "a", t, i as i64).is_empty());
    }
    // Another key's records never join it.
    feed(&mut wm, &mut state, "b", 119, 4);
    assert_eq!(state.open_windows(), 2);
    assert_eq!(state.first_open_offset(), Some(0));
    // [100, 128) closes at 128 + 5.
    assert!(state.take_final(132 * S).is_empty());
    let finals = state.take_final(133 * S);
    assert_eq!(finals.len(), 1);
    let f = &finals[0];
    assert_eq!((f.key, f.window), ("a", w(100, 128)));
    assert_eq!((f.partial.count, f.partial.sum), (4, 431.0));
    assert_eq!(
        state.first_open_offset(),
        Some(4),
        "only b's session is open"
    );
}

#[test]
fn a_record_bridging_two_sessions_merges_them() {
    let (_, mut wm, mut state) = sessions();
    feed(&mut wm, &mut state, "a", 100, 0);
    feed(&mut wm, &mut state, "a", 118, 1);
    assert_eq!(state.open_windows(), 2, "18 s apart: two sessions");
    // 109 is within 10 s of both: [100,110) and [118,128) become [100,128).
    assert!(feed(&mut wm, &mut state, "a", 109, 2).is_empty());
    assert_eq!(state.open_windows(), 1);
    assert_eq!(state.first_open_offset(), Some(0));
    let finals = state.take_final(i64::MAX);
    assert_eq!(finals[0].window, w(100, 128));
    assert_eq!((finals[0].partial.count, finals[0].partial.sum), (3, 327.0));
}

#[test]
fn an_old_record_is_late_only_if_its_merged_session_is_closed() {
    let (_, mut wm, mut state) = sessions();
    feed(&mut wm, &mut state, "a", 100, 0);
    feed(&mut wm, &mut state, "a", 130, 1);
    // Stream time 130: [100,110) closes at 115 and is final.
    let finals = state.take_final(wm.watermark(0, 0));
    assert_eq!(finals[0].window, w(100, 110));
    // 103 alone would make [103,113), closed at 118 <= 130: late.
    let late = feed(&mut wm, &mut state, "a", 103, 2);
    assert_eq!(late.len(), 1);
    assert_eq!(late[0].window, w(103, 113));
    // 121 is old too, but joins the open [130,140): accepted (grace does not apply to it).
    assert!(feed(&mut wm, &mut state, "a", 121, 3).is_empty());
    let finals = state.take_final(i64::MAX);
    assert_eq!(finals[0].window, w(121, 140));
    assert_eq!(finals[0].partial.count, 2);
}

#[test]
fn a_session_within_grace_still_takes_records() {
    let (_, mut wm, mut state) = sessions();
    feed(&mut wm, &mut state, "a", 100, 0);
    feed(&mut wm, &mut state, "b", 112, 1);
    // Stream time 112: [100,110) has ended but closes at 115.
    assert!(state.take_final(wm.watermark(0, 0)).is_empty());
    assert!(feed(&mut wm, &mut state, "a", 101, 2).is_empty());
    feed(&mut wm, &mut state, "b", 116, 3);
    let finals = state.take_final(wm.watermark(0, 0));
    assert_eq!(finals.len(), 1);
    assert_eq!(
        (finals[0].window, finals[0].partial.count),
        (w(100, 111), 2)
    );
}

#[test]
fn an_idle_partition_closes_its_sessions_by_the_wall_clock() {
    let spec = WindowSpec::session(secs(10), secs(5));
    let mut wm = Watermarks::new(0, 5 * S);
    let mut state: WindowState<&str, f64, Stats> = WindowState::new(spec);
    wm.observe(0, 100 * S, 1000 * S);
    state.add_at(&"a", 100 * S, &1.0, wm.watermark(0, 1000 * S), 0);
    // [100,110) closes at 115: 15 s of event time after its record.
    assert!(state.take_final(wm.watermark(0, 1014 * S)).is_empty());
    let finals = state.take_final(wm.watermark(0, 1015 * S));
    assert_eq!(finals.len(), 1);
    assert_eq!(state.open_windows(), 0);
    assert_eq!(state.first_open_offset(), None);
}

#[test]
fn a_session_gap_must_be_positive() {
    let spec = WindowSpec::session(Duration::ZERO, secs(5));
    assert_eq!(spec.kind.validate(), Err(WindowError::ZeroGap));
}

#[test]
fn the_window_store_gets_puts_deletes_and_ranges_by_key_and_time() {
    let spec = WindowSpec::tumbling(secs(60), secs(10));
    let mut state: WindowState<&str, f64, Stats> = WindowState::new(spec);
    for t in [5, 65, 125] {
        assert!(state.add(&"k", t * S, &1.0, 0).is_empty());
    }
    state.add(&"other", 5 * S, &9.0, 0);
    assert_eq!(state.get(&"k", w(60, 120)).map(|s| s.count), Some(1));
    let mut more = Stats::default();
    more.add(&2.0);
    more.add(&3.0);
    state.put("k", w(60, 120), more);
    assert_eq!(state.get(&"k", w(60, 120)).map(|s| s.sum), Some(5.0));
    let starts: Vec<i64> = state
        .range(&"k", 0, 120 * S)
        .into_iter()
        .map(|(w, _)| w.start_ms / S)
        .collect();
    assert_eq!(starts, [0, 60]);
    assert_eq!(state.delete(&"k", w(0, 60)).map(|s| s.count), Some(1));
    assert!(state.get(&"k", w(0, 60)).is_none());
    assert_eq!(state.open_windows(), 3);
}
