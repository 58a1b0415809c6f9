//! Reuseport slot assignment.

use herd_sched::Slots;

#[test]
fn assigns_the_lowest_free_slot() {
    let mut s = Slots::new(3);
    assert_eq!(s.count(), 3);
    let steps: &[(u32, Option<usize>)] = &[(10, Some(0)), (11, Some(1)), (12, Some(2)), (13, None)];
    for &(w, want) in steps {
        assert_eq!(s.assign(w), want, "worker {w}");
    }
    assert_eq!(s.held(), 3);
    assert_eq!(s.holder(1), Some(11));
    assert_eq!(s.holder(3), None);
}

#[test]
fn a_holder_gets_its_own_slot_again() {
    let mut s = Slots::new(2);
    assert_eq!(s.assign(5), Some(0));
    assert_eq!(s.assign(6), Some(1));
    assert_eq!(s.assign(5), Some(0));
    assert_eq!(s.assign(6), Some(1));
    assert_eq!(s.held(), 2);
}

#[test]
fn a_released_slot_goes_to_the_replacement() {
    let mut s = Slots::new(3);
    for w in [1, 2, 3] {
        s.assign(w);
    }
    assert_eq!(s.release(2), Some(1));
    assert_eq!(s.release(2), None);
    assert_eq!(s.slot_of(2), None);
    assert_eq!(s.holder(1), None);
    assert_eq!(s.assign(4), Some(1));
    assert_eq!(s.slot_of(4), Some(1));

    // Two slots free: the lowest goes first.
    assert_eq!(s.release(3), Some(2));
    assert_eq!(s.release(1), Some(0));
    assert_eq!(s.assign(7), Some(0));
    assert_eq!(s.assign(8), Some(2));
    assert_eq!(s.assign(9), None);
}

#[test]
fn release_of_an_unknown_worker_changes_nothing() {
    let mut s = Slots::new(1);
    s.assign(1);
    let before = s.clone();
    assert_eq!(s.release(2), None);
    assert_eq!(s, before);
}

#[test]
fn zero_slots_is_always_full() {
    let mut s = Slots::new(0);
    assert_eq!(s.assign(1), None);
    assert_eq!(s.slot_of(1), None);
}

#[test]
fn resize_grows_and_evicts_the_highest_slots() {
    let mut s = Slots::new(2);
    s.assign(1);
    s.assign(2);
    assert!(s.resize(4).is_empty());
    assert_eq!(s.assign(3), Some(2));
    assert_eq!(s.resize(1), [(1, 2), (2, 3)]);
    assert_eq!(s.count(), 1);
    assert_eq!(s.slot_of(2), None);
    assert_eq!(s.slot_of(1), Some(0));
    assert_eq!(s.assign(4), None);
}
