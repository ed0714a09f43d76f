//! Entry points for the fuzz targets in `fuzz/` and the corpus replay test: the parsers of
//! request bodies, query strings, bearer keys and `updated_after` times, each held to a property
//! beyond "no panic". Not part of the stable API.

// A broken property must panic: that is how the fuzzer sees it.
#![allow(clippy::expect_used, clippy::missing_panics_doc)]

use axum::http::StatusCode;

use crate::error::ApiError;
use crate::handlers;

fn client_error<T>(r: &Result<T, ApiError>) {
    if let Err(e) = r {
        assert!(
            e.status.is_client_error(),
            "bad input must be a 4xx, got {}",
            e.status
        );
        assert!(!e.message.is_empty());
        assert!(
            e.status != StatusCode::UNPROCESSABLE_ENTITY && e.status != StatusCode::BAD_REQUEST
                || !e.code.is_empty()
        );
    }
}

/// A request body: the first byte picks the endpoint, the rest is the body. Every failure is a
/// typed 4xx; every context that parses re-parses from its canonical bytes to itself.
pub fn request_body(data: &[u8]) {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let check_ctx = |ctx: &vault_objects::KeyContext| {
        let again = vault_objects::KeyContext::from_canonical_bytes(ctx.canonical_bytes())
            .expect("canonical bytes parse");
        assert_eq!(&again, ctx);
    };
    match which % 5 {
        0 => {
            let r = handlers::parse_create(body);
            client_error(&r);
            if let Ok(body) = &r {
                check_ctx(&body.key_context);
            }
        }
        1 => client_error(&handlers::parse_update(body)),
        2 => {
            let r = handlers::parse_data_key(body);
            client_error(&r);
            if let Ok(ctx) = &r {
                check_ctx(ctx);
            }
        }
        3 => client_error(&handlers::parse_decrypt(body)),
        _ => {
            let r = handlers::parse_rekey(body);
            client_error(&r);
            if let Ok((ctx, _)) = &r {
                check_ctx(ctx);
            }
        }
    }
}

/// A list query string: it parses or is a 400; a limit that parses is what was asked for.
pub fn list_query(data: &[u8]) {
    let Ok(q) = std::str::from_utf8(data) else {
        return;
    };
    let r = handlers::list_query(Some(q));
    if let Err(e) = &r {
        assert_eq!(e.status, StatusCode::BAD_REQUEST, "{}", e.message);
    }
    if let Ok(query) = r
        && let Some(after) = &query.after
    {
        let again = vault_objects::Cursor::decode(&after.encode(), "after").expect("re-decodes");
        assert_eq!(&again, after);
    }
    if let Some(t) = crate::timefmt::parse_updated_after(q)
        && let Some(again) = crate::timefmt::parse_updated_after(&t.to_rfc3339())
    {
        // Offsets can push an instant past year 9999, which has no 4-digit form.
        assert_eq!(again, t);
    }
    let _ = crate::auth::lookup(q);
}

/// The framing a connection follows between requests (which head deadline applies): any bytes,
/// cut anywhere, leave it in the same state as the bytes whole (no panic, no cut-dependent
/// answer). The first byte says where to cut the rest.
pub fn http_framing(data: &[u8]) {
    use crate::listen::deadlines::Framing;
    let Some((&cut, bytes)) = data.split_first() else {
        return;
    };
    let now = tokio::time::Instant::now();
    let mut whole = Framing::start();
    whole.feed(bytes, now);
    let at = usize::from(cut).min(bytes.len());
    let (a, b) = bytes.split_at(at);
    let mut split = Framing::start();
    split.feed(a, now);
    split.feed(b, now);
    assert_eq!(
        whole.pending_head().is_some(),
        split.pending_head().is_some(),
        "the same bytes, cut at {at}"
    );
    assert_eq!(
        matches!(whole, Framing::Lost),
        matches!(split, Framing::Lost)
    );
}

/// A blob request's headers: the first byte picks `Range` or `Vault-Key-Context`, the rest is
/// the header's value. A range that parses asks for a non-empty span inside any blob it
/// resolves against; a context that fails is a typed 4xx naming the header.
pub fn blob_headers(data: &[u8]) {
    let Some((&which, value)) = data.split_first() else {
        return;
    };
    if which % 2 == 0 {
        let Some(range) = handlers::parse_range(value) else {
            return;
        };
        for size in [0, 1, 2, 255, 65_536, u64::MAX] {
            if let Some((start, end)) = range.resolve(size) {
                assert!(
                    start < end && end <= size,
                    "{range:?} of {size}: {start}..{end}"
                );
            }
        }
    } else {
        let r = handlers::header_context(Some(value));
        client_error(&r);
        if let Err(e) = r {
            assert!(e.errors.iter().all(|f| f.field == "Vault-Key-Context"));
        }
    }
}
