//! Policy names: parse, print, round-trip, alias, unknown names and the environment value.

use herd_sched::{ENV_VAR, Pick, Policy, from_env_value};

#[test]
fn names_parse() {
    let cases: &[(&str, Policy)] = &[
        ("none", Policy::Shared),
        ("shared", Policy::Shared),
        ("rr", Policy::RoundRobin),
        ("least-conn", Policy::LeastConnections),
        ("reuseport", Policy::ReusePort),
        ("  rr\n", Policy::RoundRobin),
        ("\tshared ", Policy::Shared),
    ];
    for &(input, want) in cases {
        assert_eq!(input.parse::<Policy>(), Ok(want), "input {input:?}");
    }
}

#[test]
fn names_print_canonically() {
    let cases: &[(Policy, &str)] = &[
        (Policy::Shared, "none"),
        (Policy::RoundRobin, "rr"),
        (Policy::LeastConnections, "least-conn"),
        (Policy::ReusePort, "reuseport"),
    ];
    for &(policy, want) in cases {
        assert_eq!(policy.to_string(), want);
        assert_eq!(policy.name(), want);
    }
}

#[test]
fn every_policy_round_trips_and_all_is_complete() {
    for p in Policy::ALL {
        assert_eq!(p.to_string().parse::<Policy>(), Ok(p));
    }
    // ALL holds each policy once.
    for (i, a) in Policy::ALL.iter().enumerate() {
        for b in &Policy::ALL[i + 1..] {
            assert_ne!(a, b);
        }
    }
}

#[test]
fn unknown_names_are_rejected_with_the_valid_list() {
    for input in ["foo", "", "RR", "round-robin", "least_conn", "none rr"] {
        let err = input.parse::<Policy>().expect_err(input);
        assert_eq!(err.input(), input.trim());
        let msg = err.to_string();
        assert!(msg.contains(&format!("{:?}", input.trim())), "{msg}");
        for p in Policy::ALL {
            assert!(msg.contains(p.name()), "{msg} lacks {p}");
        }
    }
    assert_eq!(
        "foo".parse::<Policy>().unwrap_err().to_string(),
        r#"unknown scheduling policy "foo" (valid: none, rr, least-conn, reuseport; "shared" is an alias of none)"#
    );
}

#[test]
fn handoff_and_pick() {
    let cases: &[(Policy, bool, Option<Pick>)] = &[
        (Policy::Shared, false, None),
        (Policy::RoundRobin, true, Some(Pick::RoundRobin)),
        (Policy::LeastConnections, true, Some(Pick::LeastConnections)),
        (Policy::ReusePort, false, None),
    ];
    for &(policy, handoff, pick) in cases {
        assert_eq!(policy.is_handoff(), handoff, "{policy}");
        assert_eq!(policy.pick(), pick, "{policy}");
        if let Some(pick) = pick {
            assert_eq!(Policy::from(pick), policy);
        }
    }
}

#[test]
fn default_is_round_robin_like_node() {
    assert_eq!(Policy::default(), Policy::RoundRobin);
}

#[test]
fn env_value() {
    assert_eq!(ENV_VAR, "HERD_SCHED_POLICY");
    let cases: &[(Option<&str>, Option<Policy>)] = &[
        (None, None),
        (Some(""), None),
        (Some("   "), None),
        (Some("none"), Some(Policy::Shared)),
        (Some("shared"), Some(Policy::Shared)),
        (Some("rr"), Some(Policy::RoundRobin)),
        (Some(" least-conn "), Some(Policy::LeastConnections)),
        (Some("reuseport"), Some(Policy::ReusePort)),
    ];
    for &(value, want) in cases {
        assert_eq!(from_env_value(value), Ok(want), "value {value:?}");
    }
    let err = from_env_value(Some("fastest")).unwrap_err();
    assert_eq!(err.input(), "fastest");
}
