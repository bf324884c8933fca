use super::*;
use proptest::prelude::*;

fn parse(text: &str) -> TargetExpr {
    text.parse()
        .unwrap_or_else(|e| panic!("{text:?} should parse: {e}"))
}

fn error(text: &str) -> TargetExprError {
    match text.parse::<TargetExpr>() {
        Ok(expr) => panic!("{text:?} should not parse, got {expr:?}"),
        Err(e) => e,
    }
}

fn tag(t: &str) -> TargetExpr {
    TargetExpr::Term(Term::Tag(Pattern::exact(t)))
}

#[test]
fn not_binds_tighter_than_and_which_binds_tighter_than_or() {
    assert_eq!(
        parse("tag:a OR tag:b AND NOT tag:c"),
        TargetExpr::Or(vec![
            tag("a"),
            TargetExpr::And(vec![tag("b"), TargetExpr::Not(Box::new(tag("c")))]),
        ])
    );
    assert_eq!(
        parse("(tag:a or tag:b) and not (tag:c)"),
        TargetExpr::And(vec![
            TargetExpr::Or(vec![tag("a"), tag("b")]),
            TargetExpr::Not(Box::new(tag("c"))),
        ])
    );
    assert_eq!(
        parse("tag:a AND tag:b AND tag:c"),
        TargetExpr::And(vec![tag("a"), tag("b"), tag("c")])
    );
    assert_eq!(parse("  ((tag:a))  "), tag("a"));
}

#[test]
fn terms_parse_to_their_tests() {
    assert_eq!(
        parse("attr.region = eu-*"),
        TargetExpr::Term(Term::Attribute {
            key: "region".into(),
            op: Equality::Eq,
            value: Pattern::from_pieces([Piece::Text("eu-".into()), Piece::AnyRun]),
        })
    );
    assert_eq!(
        parse(r#"attr."room name"!="a\*b?""#),
        TargetExpr::Term(Term::Attribute {
            key: "room name".into(),
            op: Equality::Ne,
            value: Pattern::from_pieces([Piece::Text("a*b".into()), Piece::AnyChar]),
        })
    );
    assert_eq!(
        parse("installed.rootfs<=v2.4"),
        TargetExpr::Term(Term::Installed {
            name: "rootfs".into(),
            op: Comparison::Le,
            version: Version::new("v2.4").expect("a version"),
        })
    );
    assert_eq!(
        parse("status != rejected AND device_type = gate?ay"),
        TargetExpr::And(vec![
            TargetExpr::Term(Term::Status {
                op: Equality::Ne,
                status: DeviceStatus::Rejected,
            }),
            TargetExpr::Term(Term::DeviceType {
                op: Equality::Eq,
                value: Pattern::from_pieces([
                    Piece::Text("gate".into()),
                    Piece::AnyChar,
                    Piece::Text("ay".into()),
                ]),
            }),
        ])
    );
    // A value may be spelled like a keyword: its place says it is a value.
    assert_eq!(parse("tag:and"), tag("and"));
}

#[test]
fn errors_name_the_column_and_what_was_expected() {
    let cases = [
        ("", 1, "expected a term"),
        ("tag:lab AND", 12, "expected a term"),
        ("tag:lab tag:x", 9, "expected AND, OR or the end"),
        ("attr.region eu", 13, "expected = or !="),
        ("installed.rootfs ~ 2", 18, "expected a comparison"),
        (
            "installed.rootfs < banana",
            20,
            "\"banana\" is not a version",
        ),
        ("status = happy", 10, "expected a status (pending, accepted"),
        (
            "(tag:a OR tag:b",
            16,
            "expected ')' to close the '(' at column 1",
        ),
        ("tag:a)", 6, "unmatched ')'"),
        ("tag:\"open", 10, "close the string opened at column 5"),
        ("colour = red", 1, "expected a term"),
        ("statusx = accepted", 1, "expected a term"),
        ("attr. = x", 6, "expected an attribute name"),
        ("é tag:a", 1, "found 'é'"),
        ("tag:\"a\0\"", 7, "NUL"),
    ];
    for (text, column, message) in cases {
        let e = error(text);
        assert_eq!(e.column, column, "{text:?}: {e}");
        assert!(e.message.contains(message), "{text:?}: {e}");
    }
}

#[test]
fn bounds_are_enforced() {
    let long = format!("tag:{}", "a".repeat(MAX_EXPR_LEN));
    assert!(error(&long).message.contains("at most 4096 bytes"));

    let terms = vec!["tag:a"; MAX_EXPR_TERMS].join(" OR ");
    assert_eq!(parse(&terms).terms(), MAX_EXPR_TERMS);
    let e = error(&format!("{terms} OR tag:b"));
    assert!(e.message.contains("at most 64"), "{e}");
    assert_eq!(e.column, terms.len() + 5);

    let nested = |n: usize| format!("{}tag:a{}", "(".repeat(n), ")".repeat(n));
    parse(&nested(MAX_EXPR_DEPTH));
    assert!(error(&nested(MAX_EXPR_DEPTH + 1))
        .message
        .contains("nested too deep"));
    let nots = |n: usize| format!("{}tag:a", "NOT ".repeat(n));
    parse(&nots(MAX_EXPR_DEPTH));
    assert!(error(&nots(MAX_EXPR_DEPTH + 1))
        .message
        .contains("too deep"));
    // Precedence nests the AST one level deeper than the parentheses.
    let alternating = |n: usize| {
        let mut text = "tag:a".to_owned();
        for level in 0..n {
            let op = if level % 2 == 0 { "AND" } else { "OR" };
            text = format!("tag:b {op} ({text})");
        }
        text
    };
    parse(&alternating(MAX_EXPR_DEPTH));
    let e = error(&format!("tag:c OR tag:d AND ({})", alternating(15)));
    assert!(e.message.contains("operators nest 17 deep"), "{e}");

    let value = format!("attr.k = {}", "v".repeat(1025));
    assert!(error(&value).message.contains("at most 1024 bytes"));
    let name = format!("attr.{} = v", "k".repeat(129));
    assert!(error(&name).message.contains("names are 1–128 bytes"));
}

#[test]
fn matches_follows_the_terms_and_operators() {
    let tags = vec!["lab".to_owned(), "eu-west".to_owned()];
    let attributes: BTreeMap<String, String> = [("region".to_owned(), "eu-1".to_owned())].into();
    let installed: BTreeMap<String, String> = [
        ("rootfs".to_owned(), "2.3.9".to_owned()),
        ("blob".to_owned(), "nightly".to_owned()),
    ]
    .into();
    let device = DeviceFacts {
        status: DeviceStatus::Accepted,
        tags: &tags,
        device_type: Some("gateway"),
        attributes: &attributes,
        installed: &installed,
    };
    let cases = [
        ("tag:lab", true),
        ("tag:eu-*", true),
        ("tag:la", false),
        ("tag:?ab", true),
        ("attr.region = eu-?", true),
        ("attr.region != eu-*", false),
        ("attr.missing != x", false),
        ("NOT attr.missing = x", true),
        ("device_type = gate*", true),
        ("device_type != gateway", false),
        ("status = accepted", true),
        ("status != accepted", false),
        ("installed.rootfs < 2.4.0", true),
        ("installed.rootfs < 2.3.9", false),
        ("installed.rootfs <= 2.3.9", true),
        ("installed.rootfs = v2.3.9", true),
        ("installed.rootfs > 2.3.9-rc.1", true),
        ("installed.rootfs >= 10.0", false),
        ("installed.missing < 9", false),
        ("installed.blob != 1.0", false),
        ("NOT installed.blob = 1.0", true),
        ("tag:prod OR installed.rootfs < 2.4", true),
        ("tag:lab AND NOT tag:eu-*", false),
        ("NOT (tag:prod OR tag:test)", true),
    ];
    for (text, expected) in cases {
        assert_eq!(parse(text).matches(&device), expected, "{text}");
    }
    let untyped = DeviceFacts {
        device_type: None,
        ..device
    };
    assert!(!parse("device_type = *").matches(&untyped));
    assert!(!parse("device_type != gateway").matches(&untyped));
}

#[test]
fn patterns_match_whole_values() {
    let p = |pieces: Vec<Piece>| Pattern::from_pieces(pieces);
    let text = |t: &str| Piece::Text(t.into());
    assert!(p(vec![Piece::AnyRun]).matches(""));
    assert!(p(vec![]).matches(""));
    assert!(!p(vec![]).matches("a"));
    assert!(p(vec![text("a"), Piece::AnyRun, text("b")]).matches("axxbyyb"));
    assert!(!p(vec![text("a"), Piece::AnyRun, text("b")]).matches("axxbyyc"));
    assert!(p(vec![Piece::AnyRun, text("ab"), Piece::AnyRun, text("c")]).matches("aabxabc"));
    assert!(p(vec![Piece::AnyChar, Piece::AnyChar]).matches("éa"));
    assert!(!p(vec![Piece::AnyChar]).matches("ab"));
    assert!(p(vec![text("a*b")]).matches("a*b"));
    assert!(!p(vec![text("a*b")]).matches("axb"));
}

#[test]
fn serde_carries_the_text_and_refuses_a_bad_one() {
    let expr = parse("tag:lab   and installed.rootfs<2.4.0");
    let json = serde_json::to_string(&expr).expect("serialises");
    assert_eq!(json, r#""tag:lab AND installed.rootfs < 2.4.0""#);
    assert_eq!(
        serde_json::from_str::<TargetExpr>(&json).expect("parses"),
        expr
    );
    let e = serde_json::from_str::<TargetExpr>(r#""tag:lab AND""#).expect_err("refused");
    assert!(e.to_string().contains("column 12"), "{e}");
}

fn text_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9_.-]{0,6}",
        "[ -~]{0,6}",
        Just("AND".to_owned()),
        Just("x y\"\\".to_owned()),
        "\\PC{1,4}",
    ]
}

fn pattern_strategy() -> impl Strategy<Value = Pattern> {
    proptest::collection::vec(
        prop_oneof![
            3 => text_strategy().prop_map(Piece::Text),
            1 => Just(Piece::AnyRun),
            1 => Just(Piece::AnyChar),
        ],
        0..4,
    )
    .prop_map(Pattern::from_pieces)
}

fn name_strategy() -> impl Strategy<Value = String> {
    text_strategy().prop_filter("a name is not empty", |n| !n.is_empty())
}

fn term_strategy() -> impl Strategy<Value = Term> {
    let equality = prop_oneof![Just(Equality::Eq), Just(Equality::Ne)];
    let comparison = prop_oneof![
        Just(Comparison::Lt),
        Just(Comparison::Le),
        Just(Comparison::Eq),
        Just(Comparison::Ne),
        Just(Comparison::Ge),
        Just(Comparison::Gt),
    ];
    let version = "v?[0-9]{1,3}(\\.[0-9]{1,3}){0,3}(-[a-z0-9]{1,3}(\\.[a-z0-9]{1,3})?)?"
        .prop_filter_map("a version", |v| Version::new(&v));
    prop_oneof![
        pattern_strategy().prop_map(Term::Tag),
        (name_strategy(), equality.clone(), pattern_strategy())
            .prop_map(|(key, op, value)| Term::Attribute { key, op, value }),
        (equality.clone(), pattern_strategy())
            .prop_map(|(op, value)| Term::DeviceType { op, value }),
        (equality, proptest::sample::select(DeviceStatus::ALL))
            .prop_map(|(op, status)| Term::Status { op, status }),
        (name_strategy(), comparison, version).prop_map(|(name, op, version)| Term::Installed {
            name,
            op,
            version
        }),
    ]
}

/// Any expression within the bounds, including shapes the parser never
/// builds on its own (an `AND` directly inside an `AND`), which `Display`
/// must keep apart with parentheses.
pub(crate) fn expr_strategy() -> impl Strategy<Value = TargetExpr> {
    term_strategy()
        .prop_map(TargetExpr::Term)
        .prop_recursive(6, 40, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 2..4).prop_map(TargetExpr::Or),
                proptest::collection::vec(inner.clone(), 2..4).prop_map(TargetExpr::And),
                inner.prop_map(|e| TargetExpr::Not(Box::new(e))),
            ]
        })
        .prop_filter("within the bounds", |e| {
            e.terms() <= MAX_EXPR_TERMS && e.to_string().len() <= MAX_EXPR_LEN
        })
}

proptest! {
    #[test]
    fn display_parses_back_to_the_same_expression(expr in expr_strategy()) {
        let text = expr.to_string();
        let back: TargetExpr = text.parse().map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
        prop_assert_eq!(back, expr, "{}", text);
    }

    #[test]
    fn any_input_parses_or_errors_within_it(text in "\\PC{0,80}") {
        match text.parse::<TargetExpr>() {
            Ok(expr) => prop_assert_eq!(expr.to_string().parse::<TargetExpr>().ok(), Some(expr)),
            Err(e) => prop_assert!(e.column <= text.chars().count() + 1),
        }
    }
}
