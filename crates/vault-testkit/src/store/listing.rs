//! Listings: stable pagination under concurrent changes, search and filters.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use vault_store::{Cursor, ListQuery, Order, Store, Timestamp};

use super::{actor, ctx, environment, id, version};

/// Walk every page forward and backward with small limits while objects are created and
/// deleted: no object that existed throughout is skipped or repeated.
pub async fn pagination_is_stable(store: Arc<dyn Store>) {
    let env = environment("pages");
    let mut stable = BTreeSet::new();
    for i in 0..240 {
        let m = store
            .create(
                &env,
                &id(),
                &format!("item-{i:03}"),
                &ctx("o"),
                None,
                version(b"v"),
                &actor(),
                None,
            )
            .await
            .unwrap();
        stable.insert(m.id);
    }
    let mut churn: Vec<String> = Vec::new();
    for order in [Order::Desc, Order::Asc] {
        // Forward.
        let mut seen = Vec::new();
        let mut after = None;
        let mut step = 0;
        loop {
            let q = ListQuery {
                limit: Some(7),
                after: after.clone(),
                order,
                ..ListQuery::default()
            };
            let page = store.list(&env, &q, &actor()).await.unwrap();
            seen.extend(page.data.iter().map(|i| i.id.clone()));
            step += 1;
            // Interleave: create one object and delete an earlier churn object each page.
            let m = store
                .create(
                    &env,
                    &id(),
                    &format!("churn-{order:?}-{step}"),
                    &ctx("o"),
                    None,
                    version(b"c"),
                    &actor(),
                    None,
                )
                .await
                .unwrap();
            churn.push(m.id);
            if churn.len() > 2 {
                let old = churn.remove(0);
                store.delete(&env, &old, None, &actor()).await.unwrap();
            }
            match page.after {
                Some(c) => after = Some(Cursor::decode(&c, "after").unwrap()),
                None => break,
            }
        }
        check_walk(&stable, &seen, "forward");
        let ordered: Vec<&String> = seen.iter().filter(|id| stable.contains(*id)).collect();

        // Backward: walk to the last page with `after`, then come back with `before`.
        let mut back = Vec::new();
        let q = ListQuery {
            limit: Some(5),
            order,
            ..ListQuery::default()
        };
        let mut page = store.list(&env, &q, &actor()).await.unwrap();
        while let Some(c) = page.after.clone() {
            let q = ListQuery {
                limit: Some(5),
                after: Some(Cursor::decode(&c, "after").unwrap()),
                order,
                ..ListQuery::default()
            };
            page = store.list(&env, &q, &actor()).await.unwrap();
        }
        back.extend(page.data.iter().rev().map(|i| i.id.clone()));
        while let Some(c) = page.before.clone() {
            let before = Some(Cursor::decode(&c, "before").unwrap());
            let q = ListQuery {
                limit: Some(5),
                before,
                order,
                ..ListQuery::default()
            };
            page = store.list(&env, &q, &actor()).await.unwrap();
            back.extend(page.data.iter().rev().map(|i| i.id.clone()));
            let m = store
                .create(
                    &env,
                    &id(),
                    &format!("churn-back-{order:?}-{}", back.len()),
                    &ctx("o"),
                    None,
                    version(b"c"),
                    &actor(),
                    None,
                )
                .await
                .unwrap();
            churn.push(m.id);
            let old = churn.remove(0);
            store.delete(&env, &old, None, &actor()).await.unwrap();
        }
        check_walk(&stable, &back, "backward");
        let mut back_ordered: Vec<&String> =
            back.iter().filter(|id| stable.contains(*id)).collect();
        back_ordered.reverse();
        assert_eq!(
            back_ordered, ordered,
            "backward walk visits the same order reversed"
        );
    }
}

fn check_walk(stable: &BTreeSet<String>, seen: &[String], what: &str) {
    let mut once = HashSet::new();
    for id in seen {
        assert!(once.insert(id), "{what}: {id} listed twice");
    }
    for id in stable {
        assert!(once.contains(id), "{what}: {id} skipped");
    }
}

/// Search and `updated_after` filter; list items carry metadata only.
pub async fn list_filters(store: Arc<dyn Store>) {
    let env = environment("filters");
    store
        .create(
            &env,
            &id(),
            "Alpha_One",
            &ctx("o"),
            None,
            version(b"v"),
            &actor(),
            None,
        )
        .await
        .unwrap();
    let cut = Timestamp::now();
    store
        .create(
            &env,
            &id(),
            "beta%two",
            &ctx("o"),
            None,
            version(b"v"),
            &actor(),
            None,
        )
        .await
        .unwrap();
    store
        .create(
            &env,
            &id(),
            "gamma",
            &ctx("o"),
            None,
            version(b"v"),
            &actor(),
            None,
        )
        .await
        .unwrap();
    let names = |q: ListQuery| {
        let store = store.clone();
        let env = env.clone();
        async move {
            let mut n: Vec<String> = store
                .list(&env, &q, &actor())
                .await
                .unwrap()
                .data
                .into_iter()
                .map(|i| i.name)
                .collect();
            n.sort();
            n
        }
    };
    let search = |text: &str| ListQuery {
        search: Some(text.into()),
        ..ListQuery::default()
    };
    // Case-insensitive; `%` and `_` are literal characters, not wildcards.
    let cases: [(&str, &[&str]); 4] = [
        ("alpha", &["Alpha_One"]),
        ("A_O", &["Alpha_One"]),
        ("%", &["beta%two"]),
        ("a_o_", &[]),
    ];
    for (text, expected) in cases {
        assert_eq!(names(search(text)).await, expected, "search {text:?}");
    }
    let recent = ListQuery {
        updated_after: Some(cut),
        ..ListQuery::default()
    };
    assert_eq!(names(recent).await, ["beta%two", "gamma"]);
}
