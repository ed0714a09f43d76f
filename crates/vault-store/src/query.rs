//! What a listing asks for (page size, cursors, order, filters) and what it answers.

// A parser of outside bytes: no index or arithmetic that can panic or wrap.
#![warn(clippy::indexing_slicing, clippy::arithmetic_side_effects)]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::error::StoreError;
use crate::ids::is_object_id;
use crate::time::Timestamp;

/// The default and the largest page size of [`ListQuery`].
pub const DEFAULT_LIMIT: u32 = 10;
/// The largest page size.
pub const MAX_LIMIT: u32 = 100;

/// Listing order, by `updated_at` then id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    /// Oldest first.
    Asc,
    /// Newest first (the default).
    #[default]
    Desc,
}

impl std::str::FromStr for Order {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "asc" => Ok(Self::Asc),
            "desc" => Ok(Self::Desc),
            _ => Err(StoreError::invalid_query("order", "must be asc or desc")),
        }
    }
}

/// A position in a listing: after (or before) the object with this `updated_at` and id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// The object's `updated_at`.
    pub updated_at: Timestamp,
    /// The object's id.
    pub id: String,
}

impl Cursor {
    /// The opaque text form handed to clients.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("v1.{}.{}", self.updated_at.0, self.id))
    }

    /// Parses the text form.
    ///
    /// # Errors
    /// [`StoreError::InvalidQuery`] naming `field` for anything [`encode`](Self::encode) did
    /// not produce.
    pub fn decode(s: &str, field: &'static str) -> Result<Self, StoreError> {
        let bad = || StoreError::invalid_query(field, "malformed cursor");
        if s.len() > 256 {
            return Err(bad());
        }
        let raw = URL_SAFE_NO_PAD.decode(s).map_err(|_| bad())?;
        let text = String::from_utf8(raw).map_err(|_| bad())?;
        let rest = text.strip_prefix("v1.").ok_or_else(bad)?;
        let (micros, id) = rest.split_once('.').ok_or_else(bad)?;
        let micros: i64 = micros.parse().map_err(|_| bad())?;
        if !is_object_id(id) {
            return Err(bad());
        }
        Ok(Self {
            updated_at: Timestamp(micros),
            id: id.to_owned(),
        })
    }
}

/// What to list.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Page size, 1 to 100; default 10.
    pub limit: Option<u32>,
    /// Items before this cursor (in the listing's order).
    pub before: Option<Cursor>,
    /// Items after this cursor.
    pub after: Option<Cursor>,
    /// By `updated_at` then id.
    pub order: Order,
    /// Case-insensitive substring of the name.
    pub search: Option<String>,
    /// Only objects updated after this time.
    pub updated_after: Option<Timestamp>,
}

/// One entry of a listing: metadata only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListItem {
    /// The object id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// When its current version was written.
    pub updated_at: Timestamp,
}

/// A page of a listing, with the cursors to the neighbouring pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// The items.
    pub data: Vec<ListItem>,
    /// Cursor for the previous page, if there are items before this one.
    pub before: Option<String>,
    /// Cursor for the next page, if there are items after this one.
    pub after: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let c = Cursor {
            updated_at: Timestamp(42),
            id: "secret_51B0AC67C2FB4247AC5ABDDD3C701BDC".into(),
        };
        assert_eq!(Cursor::decode(&c.encode(), "after").unwrap(), c);
        for bad in [
            "",
            "!!",
            "djEuNDI",
            &URL_SAFE_NO_PAD.encode("v1.x.secret_51B0AC67C2FB4247AC5ABDDD3C701BDC"),
            &URL_SAFE_NO_PAD.encode("v1.1.other"),
        ] {
            assert!(Cursor::decode(bad, "after").is_err(), "{bad}");
        }
    }
}
