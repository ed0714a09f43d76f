use super::*;

#[test]
fn leb128_matches_the_sdk_table() {
    // leb128.spec.ts in the Node SDK.
    let table: &[(u32, &[u8])] = &[
        (1, &[0x01]),
        (42, &[0x2a]),
        (127, &[0x7f]),
        (128, &[0x80, 0x01]),
        (300, &[0xac, 0x02]),
        (16383, &[0xff, 0x7f]),
        (16384, &[0x80, 0x80, 0x01]),
        (1_000_000, &[0xc0, 0x84, 0x3d]),
        (2_097_151, &[0xff, 0xff, 0x7f]),
        (2_097_152, &[0x80, 0x80, 0x80, 0x01]),
        (268_435_455, &[0xff, 0xff, 0xff, 0x7f]),
        (268_435_456, &[0x80, 0x80, 0x80, 0x80, 0x01]),
        (u32::MAX, &[0xff, 0xff, 0xff, 0xff, 0x0f]),
    ];
    for &(value, bytes) in table {
        let mut out = Vec::new();
        write_leb128(&mut out, value);
        assert_eq!(out, bytes, "encode {value}");
        assert_eq!(leb128_len(value), bytes.len());
        assert_eq!(
            read_leb128(bytes),
            Ok((value, bytes.len())),
            "decode {value}"
        );
    }
}

#[test]
fn leb128_rejects_overlong_truncated_and_non_minimal() {
    assert_eq!(read_leb128(&[0x80]), Err(EnvelopeError::Truncated));
    assert_eq!(read_leb128(&[]), Err(EnvelopeError::Truncated));
    assert!(read_leb128(&[0xff, 0xff, 0xff, 0xff, 0x10]).is_err());
    assert!(read_leb128(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x01]).is_err());
    assert!(read_leb128(&[0x80, 0x00]).is_err());
}
