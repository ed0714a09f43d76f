use super::*;

#[test]
fn canonical_layout_is_as_specified() {
    let ctx = KeyContext::from_pairs([("b", "2"), ("a", "1")]).unwrap();
    assert_eq!(
        ctx.canonical_bytes(),
        &[1, 2, 0, 1, b'a', 0, 1, b'1', 0, 1, b'b', 0, 1, b'2']
    );
    assert_eq!(
        KeyContext::from_canonical_bytes(ctx.canonical_bytes()).unwrap(),
        ctx
    );
}

#[test]
fn max_canonical_is_reachable_and_fits_u16() {
    let pairs: Vec<(String, String)> = (0..MAX_PAIRS)
        .map(|i| (format!("{i:0>128}"), "\u{10348}".repeat(MAX_VALUE_CHARS)))
        .collect();
    let ctx = KeyContext::from_pairs(pairs).unwrap();
    assert_eq!(ctx.canonical_bytes().len(), MAX_CANONICAL_BYTES);
    assert!(u16::try_from(MAX_CANONICAL_BYTES).is_ok());
}

#[test]
fn get_finds_values() {
    let ctx = KeyContext::from_pairs([("z", "26"), ("a", "1"), ("m", "13")]).unwrap();
    assert_eq!(ctx.get("m"), Some("13"));
    assert_eq!(ctx.get("q"), None);
    assert_eq!(ctx.to_json(), r#"{"a":"1","m":"13","z":"26"}"#);
}

#[test]
fn every_reserved_key_is_found_in_a_decoded_context() {
    // `check_caller` looks only at keys with the prefix: a reserved key without it would pass.
    for &key in RESERVED_KEYS {
        assert!(key.starts_with(reserved::RESERVED_PREFIX), "{key}");
        // Beside an ordinary pair, before and after it in canonical order.
        for other in ["a", "zz"] {
            let mut bytes = vec![CANONICAL_VERSION, 2];
            let mut pairs = [(key, "x"), (other, "y")];
            pairs.sort_unstable();
            for (k, v) in pairs {
                for field in [k, v] {
                    bytes.extend_from_slice(&u16::try_from(field.len()).unwrap().to_be_bytes());
                    bytes.extend_from_slice(field.as_bytes());
                }
            }
            let decoded = KeyContext::from_canonical_bytes(&bytes).unwrap();
            assert!(decoded.is_reserved(), "{key}");
            assert!(
                matches!(decoded.check_caller(), Err(ContextError::ReservedKey { key: k }) if k == key)
            );
        }
    }
    assert!(
        !KeyContext::from_pairs([("vault_other", "x")])
            .unwrap()
            .is_reserved()
    );
}
