//! Key-context parsing: one test per rejection, and the canonical form.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test, helpers included.

use vault_crypto::{
    ContextError, KeyContext, MAX_JSON_BYTES, MAX_KEY_BYTES, MAX_PAIRS, MAX_VALUE_CHARS,
};

fn parse(s: &str) -> Result<KeyContext, ContextError> {
    KeyContext::parse_json(s.as_bytes())
}

/// The error's message names the key and never the value.
fn assert_names_key_not_value(e: &ContextError, key: &str, value: &str) {
    let msg = e.to_string();
    assert!(msg.contains(key), "{msg:?} should name {key:?}");
    assert!(!msg.contains(value), "{msg:?} must not contain the value");
}

#[test]
fn accepts_a_valid_context() {
    let ctx = parse(r#"{"organization_id":"org_1","user_id":"u_9"}"#).unwrap();
    assert_eq!(ctx.len(), 2);
    assert_eq!(ctx.get("user_id"), Some("u_9"));
    // Whitespace, escapes and multi-byte characters are fine.
    let ctx = parse("{ \"k\\u00e9y\" : \"v\\n\u{1F600}\" }\n").unwrap();
    assert_eq!(ctx.get("kéy"), Some("v\n\u{1F600}"));
}

#[test]
fn rejects_input_over_16_kib() {
    let big = format!(r#"{{"k":"v"}}{}"#, " ".repeat(MAX_JSON_BYTES));
    assert_eq!(
        parse(&big),
        Err(ContextError::InputTooLarge {
            max: MAX_JSON_BYTES
        })
    );
    // Exactly at the limit is still parsed.
    let at_limit = format!(r#"{{"k":"v"}}{}"#, " ".repeat(MAX_JSON_BYTES - 9));
    assert_eq!(at_limit.len(), MAX_JSON_BYTES);
    assert!(parse(&at_limit).is_ok());
}

#[test]
fn rejects_invalid_utf8() {
    assert_eq!(
        KeyContext::parse_json(b"{\"k\":\"\xff\"}"),
        Err(ContextError::InvalidUtf8)
    );
}

#[test]
fn rejects_invalid_json() {
    for bad in [
        "",
        "{",
        r#"{"k":"v",}"#,
        r#"{"k" "v"}"#,
        r#"{k:"v"}"#,
        r#"{"k":"v"} x"#,
        r#"{"k":"\ud800"}"#,
    ] {
        assert!(
            matches!(parse(bad), Err(ContextError::Syntax { .. })),
            "{bad:?} gave {:?}",
            parse(bad)
        );
    }
}

#[test]
fn rejects_non_objects() {
    for bad in [r#"["k","v"]"#, r#""k""#, "1", "null", "true"] {
        assert_eq!(parse(bad), Err(ContextError::NotAnObject), "{bad}");
    }
}

#[test]
fn rejects_an_empty_object() {
    assert_eq!(parse("{}"), Err(ContextError::Empty));
    assert_eq!(
        KeyContext::from_pairs(Vec::<(String, String)>::new()),
        Err(ContextError::Empty)
    );
}

#[test]
fn rejects_more_than_10_pairs() {
    let pairs: Vec<String> = (0..=MAX_PAIRS).map(|i| format!(r#""k{i}":"v""#)).collect();
    assert_eq!(
        parse(&format!("{{{}}}", pairs.join(","))),
        Err(ContextError::TooManyPairs { max: MAX_PAIRS })
    );
    assert!(parse(&format!("{{{}}}", pairs[..MAX_PAIRS].join(","))).is_ok());
}

#[test]
fn rejects_duplicate_keys() {
    let e = parse(r#"{"org":"secret_a","org":"secret_b"}"#).unwrap_err();
    assert_eq!(e, ContextError::DuplicateKey { key: "org".into() });
    assert_names_key_not_value(&e, "org", "secret_");
    assert_eq!(
        KeyContext::from_pairs([("a", "1"), ("a", "1")]),
        Err(ContextError::DuplicateKey { key: "a".into() })
    );
    // A duplicate hidden behind an escape is still a duplicate.
    assert!(matches!(
        parse(r#"{"a":"1","\u0061":"2"}"#),
        Err(ContextError::DuplicateKey { .. })
    ));
}

#[test]
fn rejects_an_empty_key() {
    assert_eq!(parse(r#"{"":"v"}"#), Err(ContextError::EmptyKey));
    assert_eq!(
        KeyContext::from_pairs([("", "v")]),
        Err(ContextError::EmptyKey)
    );
}

#[test]
fn rejects_a_key_over_128_bytes() {
    let ok = "k".repeat(MAX_KEY_BYTES);
    assert!(parse(&format!(r#"{{"{ok}":"v"}}"#)).is_ok());
    let long = "k".repeat(MAX_KEY_BYTES + 1);
    let e = parse(&format!(r#"{{"{long}":"hidden"}}"#)).unwrap_err();
    assert!(matches!(
        e,
        ContextError::KeyTooLong {
            max: MAX_KEY_BYTES,
            ..
        }
    ));
    assert_names_key_not_value(&e, "kkkk", "hidden");
    // Bytes, not characters: 43 three-byte characters are 129 bytes.
    let wide = "€".repeat(43);
    assert!(matches!(
        KeyContext::from_pairs([(wide, "v".to_owned())]),
        Err(ContextError::KeyTooLong { .. })
    ));
}

#[test]
fn rejects_control_characters_in_keys() {
    for bad in [
        r#"{"a\u0000b":"v"}"#,
        r#"{"a\nb":"v"}"#,
        r#"{"a\u007fb":"v"}"#,
        r#"{"a\u0085":"v"}"#,
    ] {
        assert!(
            matches!(parse(bad), Err(ContextError::ControlCharacter { .. })),
            "{bad}"
        );
    }
    let e = KeyContext::from_pairs([("a\tb", "v")]).unwrap_err();
    assert_eq!(
        e,
        ContextError::ControlCharacter {
            key: "a\\tb".into()
        }
    );
}

#[test]
fn rejects_non_string_values() {
    for value in [
        "1",
        "1.5",
        "-3",
        "true",
        "null",
        r#"["x"]"#,
        r#"{"n":"x"}"#,
        r#"{"deep":{"er":[1,{"x":null}]}}"#,
    ] {
        let e = parse(&format!(r#"{{"organization_id":{value}}}"#)).unwrap_err();
        assert_eq!(
            e,
            ContextError::NotAString {
                key: "organization_id".into()
            },
            "{value}"
        );
    }
}

#[test]
fn rejects_an_empty_value() {
    assert_eq!(
        parse(r#"{"org":""}"#),
        Err(ContextError::EmptyValue { key: "org".into() })
    );
}

#[test]
fn rejects_a_value_over_500_characters() {
    // 500 characters of 4 bytes each is fine: the limit counts characters.
    let ok = "\u{1F600}".repeat(MAX_VALUE_CHARS);
    assert!(KeyContext::from_pairs([("k", ok.as_str())]).is_ok());
    let long = "s".repeat(MAX_VALUE_CHARS + 1);
    let e = parse(&format!(r#"{{"note":"{long}"}}"#)).unwrap_err();
    assert_eq!(
        e,
        ContextError::ValueTooLong {
            key: "note".into(),
            max: MAX_VALUE_CHARS
        }
    );
    assert_names_key_not_value(&e, "note", &long[..20]);
}

#[test]
fn canonical_bytes_ignore_order_and_whitespace() {
    let a = parse(r#"{"b":"2","a":"1","c":"3"}"#).unwrap();
    let b = parse(r#"{ "c" : "3" , "a" : "1" , "b" : "2" }"#).unwrap();
    assert_eq!(a.canonical_bytes(), b.canonical_bytes());
    assert_eq!(a.fingerprint(), b.fingerprint());
}

#[test]
fn canonical_bytes_cannot_be_confused_by_separators() {
    // Without length prefixes these would collide as "a=b,c" / "a,b=c" style strings.
    let x = KeyContext::from_pairs([("a", "b:c")]).unwrap();
    let y = KeyContext::from_pairs([("a:b", "c")]).unwrap();
    let z = KeyContext::from_pairs([("a", "b"), ("c", "d")]).unwrap();
    let w = KeyContext::from_pairs([("a", "b\u{0}\u{1}c\u{0}\u{1}d")]).unwrap();
    let all = [&x, &y, &z, &w];
    for (i, p) in all.iter().enumerate() {
        for q in &all[i + 1..] {
            assert_ne!(p.canonical_bytes(), q.canonical_bytes());
            assert_ne!(p.fingerprint(), q.fingerprint());
        }
    }
}

#[test]
fn canonical_parser_rejects_non_canonical_bytes() {
    let ctx = KeyContext::from_pairs([("a", "1"), ("b", "2")]).unwrap();
    let good = ctx.canonical_bytes().to_vec();
    let mut unsorted = vec![1, 2, 0, 1, b'b', 0, 1, b'2', 0, 1, b'a', 0, 1, b'1'];
    assert!(matches!(
        KeyContext::from_canonical_bytes(&unsorted),
        Err(ContextError::Malformed { .. })
    ));
    unsorted[4] = b'a'; // now "a" twice
    assert!(matches!(
        KeyContext::from_canonical_bytes(&unsorted),
        Err(ContextError::Malformed { .. })
    ));
    let mut trailing = good.clone();
    trailing.push(0);
    assert!(matches!(
        KeyContext::from_canonical_bytes(&trailing),
        Err(ContextError::Malformed { .. })
    ));
    let mut version = good.clone();
    version[0] = 2;
    assert_eq!(
        KeyContext::from_canonical_bytes(&version),
        Err(ContextError::UnsupportedVersion { version: 2 })
    );
    for cut in 0..good.len() {
        assert!(
            KeyContext::from_canonical_bytes(&good[..cut]).is_err(),
            "{cut}"
        );
    }
    assert_eq!(
        KeyContext::from_canonical_bytes(&[1, 0]),
        Err(ContextError::Empty)
    );
    assert_eq!(
        KeyContext::from_canonical_bytes(&[1, 11]),
        Err(ContextError::TooManyPairs { max: MAX_PAIRS })
    );
    // The rules on keys and values hold here too.
    assert_eq!(
        KeyContext::from_canonical_bytes(&[1, 1, 0, 1, b'a', 0, 0]),
        Err(ContextError::EmptyValue { key: "a".into() })
    );
    assert_eq!(KeyContext::from_canonical_bytes(&good).unwrap(), ctx);
}

#[test]
fn serde_uses_the_same_rules() {
    let ctx: KeyContext = serde_json::from_str(r#"{"b":"2","a":"1"}"#).unwrap();
    assert_eq!(serde_json::to_string(&ctx).unwrap(), r#"{"a":"1","b":"2"}"#);
    assert!(serde_json::from_str::<KeyContext>(r#"{"a":"1","a":"2"}"#).is_err());
    assert!(serde_json::from_str::<KeyContext>(r#"{"a":1}"#).is_err());
}
