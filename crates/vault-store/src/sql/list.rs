//! Listing object names: keyset pagination on `(updated_at, id)`, filters and search.

use super::SqlStore;
use super::db::Arg;
use crate::StoreError;
use crate::{
    Actor, Cursor, DEFAULT_LIMIT, ListItem, ListQuery, MAX_LIMIT, Order, Page, Timestamp, events,
    validate_environment,
};

impl SqlStore {
    pub(super) async fn list_page(
        &self,
        environment: &str,
        query: &ListQuery,
        actor: &Actor,
    ) -> Result<Page, StoreError> {
        validate_environment(environment)?;
        let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(StoreError::invalid_query(
                "limit",
                "must be between 1 and 100",
            ));
        }
        if query.before.is_some() && query.after.is_some() {
            return Err(StoreError::invalid_query(
                "before",
                "give before or after, not both",
            ));
        }
        let search = match &query.search {
            Some(s) if s.chars().count() > 200 => {
                return Err(StoreError::invalid_query(
                    "search",
                    "longer than 200 characters",
                ));
            }
            Some(s) if !s.is_empty() => Some(format!("%{}%", escape_like(&s.to_lowercase()))),
            _ => None,
        };
        // Walking backwards (`before`) reads in the opposite order, then flips the page.
        let backwards = query.before.is_some();
        let ascending = (query.order == Order::Asc) != backwards;
        let (cmp, dir) = if ascending {
            (">", "ASC")
        } else {
            ("<", "DESC")
        };
        let cursor = query.before.as_ref().or(query.after.as_ref());

        let mut sql = String::from(
            "SELECT id, name, updated_at FROM objects WHERE environment = $1 AND deleted_at IS NULL",
        );
        let mut n = 1;
        if cursor.is_some() {
            sql.push_str(&format!(
                " AND (updated_at {cmp} ${} OR (updated_at = ${} AND id {cmp} ${}))",
                n + 1,
                n + 1,
                n + 2
            ));
            n += 2;
        }
        if search.is_some() {
            n += 1;
            sql.push_str(&format!(" AND LOWER(name) LIKE ${n} ESCAPE '\\'"));
        }
        if query.updated_after.is_some() {
            n += 1;
            sql.push_str(&format!(" AND updated_at > ${n}"));
        }
        n += 1;
        sql.push_str(&format!(" ORDER BY updated_at {dir}, id {dir} LIMIT ${n}"));

        let mut args = vec![Arg::Text(environment)];
        if let Some(c) = cursor {
            args.extend([Arg::Int(c.updated_at.0), Arg::Text(&c.id)]);
        }
        if let Some(s) = &search {
            args.push(Arg::Text(s));
        }
        if let Some(t) = query.updated_after {
            args.push(Arg::Int(t.0));
        }
        args.push(Arg::Int(i64::from(limit) + 1));

        let mut data = self
            .rows(&sql, &args, |r| {
                Ok(ListItem {
                    id: r.text("id")?,
                    name: r.text("name")?,
                    updated_at: Timestamp(r.int("updated_at")?),
                })
            })
            .await?;
        self.audit_read(events::NAMES_LISTED, environment, actor, None)
            .await?;

        let more = data.len() > limit as usize;
        data.truncate(limit as usize);
        if backwards {
            data.reverse();
        }
        let cursor_of = |item: &ListItem| {
            Cursor {
                updated_at: item.updated_at,
                id: item.id.clone(),
            }
            .encode()
        };
        // Moving forward: more rows means a next page; coming from a cursor means a previous
        // one. Moving backward: the other way round.
        let (has_before, has_after) = if backwards {
            (more, true)
        } else {
            (query.after.is_some(), more)
        };
        Ok(Page {
            before: has_before.then(|| data.first().map(cursor_of)).flatten(),
            after: has_after.then(|| data.last().map(cursor_of)).flatten(),
            data,
        })
    }
}

/// Escapes `%`, `_` and `\` for a LIKE pattern with `ESCAPE '\'`.
fn escape_like(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
