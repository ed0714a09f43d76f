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
