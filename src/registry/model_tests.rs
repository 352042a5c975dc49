use super::*;

fn rec(fields: &str) -> String {
    format!(r#"{{"type":"record","name":"R","namespace":"t","fields":[{fields}]}}"#)
}

fn parsed(fields: &str) -> ParsedSchema {
    parse_schema(&rec(fields)).unwrap()
}

fn version(n: i32, fields: &str, deleted: bool) -> VersionRecord {
    VersionRecord {
        version: n,
        id: n as i64,
        schema: parsed(fields).canonical,
        deleted,
    }
}

#[test]
fn whitespace_and_key_order_do_not_change_identity() {
    let a = parse_schema(r#"{"type":"record","name":"R","fields":[{"name":"a","type":"int"}]}"#)
        .unwrap();
    let b = parse_schema("{ \"name\" : \"R\",\n \"fields\": [ {\"type\":\"int\", \"name\":\"a\"} ], \"type\":\"record\" }").unwrap();
    assert_eq!(a.canonical, b.canonical);
}

#[test]
fn invalid_and_empty_schemas_are_refused() {
    assert!(matches!(
        parse_schema("  "),
        Err(RegistryError::InvalidSchema(_))
    ));
    assert!(matches!(
        parse_schema(r#"{"type":"recrod"}"#),
        Err(RegistryError::InvalidSchema(_))
    ));
}

#[test]
fn levels_parse_case_insensitively_and_reject_unknown() {
    assert_eq!(
        "full_transitive".parse::<Level>().unwrap(),
        Level::FullTransitive
    );
    assert!("SIDEWAYS".parse::<Level>().is_err());
}

#[test]
fn version_specs() {
    assert_eq!(
        "latest".parse::<VersionSpec>().unwrap(),
        VersionSpec::Latest
    );
    assert_eq!("-1".parse::<VersionSpec>().unwrap(), VersionSpec::Latest);
    assert_eq!("3".parse::<VersionSpec>().unwrap(), VersionSpec::Number(3));
    for bad in ["0", "-2", "x", "99999999999"] {
        assert!(matches!(
            bad.parse::<VersionSpec>(),
            Err(RegistryError::InvalidVersion(_))
        ));
    }
}

#[test]
fn same_schema_returns_existing_version() {
    let vs = vec![version(1, r#"{"name":"a","type":"int"}"#, false)];
    let plan = plan_register(
        "s",
        &vs,
        Level::Backward,
        &parsed(r#"{"name":"a","type":"int"}"#),
    );
    assert_eq!(plan.unwrap(), RegisterPlan::Existing { id: 1, version: 1 });
}

#[test]
fn backward_checks_latest_only_and_transitive_checks_all() {
    // v1 has only a; v2 adds b with a default; new drops a default-less
    // reading of b... new adds c without default: incompatible with all.
    let vs = vec![
        version(1, r#"{"name":"a","type":"int"}"#, false),
        version(
            2,
            r#"{"name":"a","type":"int"},{"name":"b","type":"int","default":0}"#,
            false,
        ),
    ];
    // Requires b without default: v2 wrote b, v1 did not.
    let new = parsed(r#"{"name":"a","type":"int"},{"name":"b","type":"int"}"#);
    assert_eq!(
        plan_register("s", &vs, Level::Backward, &new).unwrap(),
        RegisterPlan::New { version: 3 }
    );
    let err = plan_register("s", &vs, Level::BackwardTransitive, &new).unwrap_err();
    match err {
        RegistryError::Incompatible { details, .. } => {
            assert_eq!(details.len(), 1);
            assert!(details[0].contains("version 1"), "{details:?}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn soft_deleted_versions_are_not_checked_but_keep_numbering() {
    let vs = vec![version(1, r#"{"name":"a","type":"int"}"#, true)];
    let new = parsed(r#"{"name":"z","type":"string"}"#);
    assert_eq!(
        plan_register("s", &vs, Level::FullTransitive, &new).unwrap(),
        RegisterPlan::New { version: 2 }
    );
}

#[test]
fn delete_rules_follow_confluent() {
    let live = vec![version(1, r#"{"name":"a","type":"int"}"#, false)];
    let soft = vec![version(1, r#"{"name":"a","type":"int"}"#, true)];
    assert!(matches!(
        plan_delete_subject("s", &live, true),
        Err(RegistryError::SubjectNotSoftDeleted(_))
    ));
    assert_eq!(plan_delete_subject("s", &live, false).unwrap(), vec![1]);
    assert!(matches!(
        plan_delete_subject("s", &soft, false),
        Err(RegistryError::SubjectSoftDeleted(_))
    ));
    assert_eq!(plan_delete_subject("s", &soft, true).unwrap(), vec![1]);
    assert!(matches!(
        plan_delete_subject("s", &[], false),
        Err(RegistryError::SubjectNotFound(_))
    ));
    assert!(matches!(
        plan_delete_version("s", &soft, VersionSpec::Number(1), false),
        Err(RegistryError::VersionSoftDeleted { .. })
    ));
    assert!(matches!(
        plan_delete_version("s", &live, VersionSpec::Number(1), true),
        Err(RegistryError::VersionNotSoftDeleted { .. })
    ));
    assert_eq!(
        plan_delete_version("s", &soft, VersionSpec::Number(1), true).unwrap(),
        1
    );
    assert!(matches!(
        plan_delete_version("s", &live, VersionSpec::Number(7), false),
        Err(RegistryError::VersionNotFound { .. })
    ));
}
