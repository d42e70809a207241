//! Several agents sharing the load. Each instance records its share of the stream (they share
//! the durable recording consumer) into its own store, and analyses the whole stream (each has
//! its own analytics consumer), so:
//! - stored data is scattered: `query`, `get`, `explain`, `quarantine`, `store-info`, `verify`
//!   and `forget` ask every instance (found by the micro service discovery) within the
//!   deadline and merge the answers; entries stored by two instances (a crash between store
//!   and ack) are shown once;
//! - live analytics is replicated: every instance's answer is complete, and the freshest
//!   (most events analysed) is shown; analytics over a stored range is computed here, by this
//!   process, from the merged events, since no one instance holds them all.
//!
//! With a single instance every command asks it alone, exactly as without this module.

use std::collections::HashSet;

use trace_core::{Cursor, EventId, Order, Query, QueryPage, TraceEntry};

use crate::api::{ApiClient, ExplainReply, IdRequest};

/// The instances to ask: every one discovered, or the shared subjects (any one instance)
/// when discovery finds none (an older agent, or discovery blocked by permissions).
pub struct Cluster<'a> {
    api: &'a ApiClient,
    instances: Vec<String>,
}

/// What instances did not answer, for a warning under the results.
#[derive(Debug, Default)]
pub struct Missing(pub Vec<(String, String)>);

impl Missing {
    /// Prints one line per instance that did not answer, to stderr.
    pub fn warn(&self) {
        for (instance, why) in &self.0 {
            eprintln!(
                "warning: instance {instance} did not answer ({why}); results may be incomplete"
            );
        }
    }
}

impl<'a> Cluster<'a> {
    /// Discovers the instances behind `api`.
    pub async fn discover(api: &'a ApiClient) -> anyhow::Result<Cluster<'a>> {
        let instances = api.instances().await?;
        Ok(Cluster { api, instances })
    }

    /// The instance names (empty when discovery found none).
    pub fn instances(&self) -> &[String] {
        &self.instances
    }

    /// Whether more than one instance answers (then answers are merged).
    pub fn is_scaled_out(&self) -> bool {
        self.instances.len() > 1
    }

    /// Every instance's answer to `verb`; when there is at most one instance, the shared
    /// subject's answer, errors passed through as they are.
    pub async fn ask<Req: serde::Serialize, Resp: serde::de::DeserializeOwned>(
        &self,
        verb: &str,
        req: &Req,
    ) -> anyhow::Result<(Vec<(String, Resp)>, Missing)> {
        if !self.is_scaled_out() {
            let name = self.instances.first().cloned().unwrap_or_default();
            return Ok((
                vec![(name, self.api.call(verb, req).await?)],
                Missing::default(),
            ));
        }
        let mut answers = Vec::new();
        let mut missing = Missing::default();
        let mut first_error = None;
        for (name, reply) in self.api.gather(&self.instances, verb, req).await {
            match reply {
                Ok(r) => answers.push((name, r)),
                Err(e) => {
                    missing.0.push((name, format!("{e:#}")));
                    first_error.get_or_insert(e);
                }
            }
        }
        match (answers.is_empty(), first_error) {
            (true, Some(e)) => Err(e),
            _ => Ok((answers, missing)),
        }
    }

    /// One page of `q` over every instance: the first `q.limit` entries in `q.order` of all
    /// the instances' pages, each id once, and the cursor after the last one when any
    /// instance has more.
    pub async fn query_page(&self, q: &Query) -> anyhow::Result<(QueryPage, Missing)> {
        let (pages, missing) = self.ask::<_, QueryPage>("query", q).await?;
        Ok((merge_pages(pages.into_iter().map(|(_, p)| p), q), missing))
    }

    /// The event `id` from whichever instance holds it.
    pub async fn get(&self, id: &str) -> anyhow::Result<TraceEntry> {
        let req = IdRequest { id: id.to_owned() };
        if !self.is_scaled_out() {
            return self.api.call("get", &req).await;
        }
        let mut errors = Vec::new();
        for (_, reply) in self
            .api
            .gather::<_, TraceEntry>(&self.instances, "get", &req)
            .await
        {
            match reply {
                Ok(e) => return Ok(e),
                Err(e) => errors.push(e),
            }
        }
        Err(errors
            .into_iter()
            .next()
            .unwrap_or_else(|| anyhow::anyhow!("no instance answered")))
    }

    /// The event `id` and the chain of its causes, followed across instances: a parent
    /// stored by another instance is asked for there.
    pub async fn explain(&self, id: &str) -> anyhow::Result<ExplainReply> {
        let ask = |id: String| async move {
            let req = IdRequest { id };
            if !self.is_scaled_out() {
                return self.api.call::<_, ExplainReply>("explain", &req).await;
            }
            let replies = self
                .api
                .gather::<_, ExplainReply>(&self.instances, "explain", &req)
                .await;
            let mut best: Option<ExplainReply> = None;
            let mut first_error = None;
            for (_, reply) in replies {
                match reply {
                    Ok(r) if best.as_ref().is_none_or(|b| r.chain.len() > b.chain.len()) => {
                        best = Some(r)
                    }
                    Ok(_) => {}
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
            best.ok_or_else(|| {
                first_error.unwrap_or_else(|| anyhow::anyhow!("no instance answered"))
            })
        };
        let mut reply = ask(id.to_owned()).await?;
        let mut seen: HashSet<EventId> = reply.chain.iter().map(|e| e.id).collect();
        while self.is_scaled_out() && seen.len() < MAX_CHAIN {
            let Some(parent) = reply.chain.last().and_then(|e| e.parent) else {
                break;
            };
            if seen.contains(&parent) {
                break;
            }
            let Ok(more) = ask(parent.to_string()).await else {
                break;
            };
            let before = reply.chain.len();
            for e in more.chain {
                if seen.insert(e.id) {
                    reply.chain.push(e);
                }
            }
            if reply.chain.len() == before {
                break;
            }
        }
        Ok(reply)
    }
}

/// Longest cause chain `explain` follows across instances.
const MAX_CHAIN: usize = 1000;

/// Merges pages answered for the same query by different instances (see
/// [`Cluster::query_page`]).
pub fn merge_pages(pages: impl IntoIterator<Item = QueryPage>, q: &Query) -> QueryPage {
    let limit = q.limit.unwrap_or(usize::MAX);
    let mut entries = Vec::new();
    let mut any_more = false;
    let (mut blocks_read, mut blocks_skipped) = (0, 0);
    for page in pages {
        any_more |= page.next_cursor.is_some();
        blocks_read += page.blocks_read;
        blocks_skipped += page.blocks_skipped;
        entries.extend(page.entries);
    }
    entries.sort_by_key(TraceEntry::order_key);
    if q.order == Order::NewestFirst {
        entries.reverse();
    }
    let mut seen = HashSet::with_capacity(entries.len());
    entries.retain(|e| seen.insert(e.id));
    let cut = entries.len() > limit;
    entries.truncate(limit);
    let next_cursor = if any_more || cut {
        entries.last().map(Cursor::after)
    } else {
        None
    };
    QueryPage {
        entries,
        next_cursor,
        blocks_read,
        blocks_skipped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn entry(secs: i64) -> TraceEntry {
        let mut e = TraceEntry::new("t", "s");
        e.ts = Utc
            .timestamp_opt(1_700_000_000 + secs, 0)
            .single()
            .expect("ts");
        e.id = EventId::new_at(e.ts);
        e
    }

    fn page(entries: Vec<TraceEntry>, more: bool) -> QueryPage {
        QueryPage {
            next_cursor: if more {
                entries.last().map(Cursor::after)
            } else {
                None
            },
            entries,
            blocks_read: 1,
            blocks_skipped: 0,
        }
    }

    #[test]
    fn pages_merge_in_order_each_id_once_with_a_cursor_when_more_remain() {
        let (a, b, c, d) = (entry(1), entry(2), entry(3), entry(4));
        let q = Query {
            limit: Some(3),
            ..Query::default()
        };
        let merged = merge_pages(
            [
                page(vec![d.clone(), b.clone()], false),
                page(vec![c.clone(), b.clone(), a.clone()], false),
            ],
            &q,
        );
        let ids: Vec<EventId> = merged.entries.iter().map(|e| e.id).collect();
        assert_eq!(ids, vec![d.id, c.id, b.id], "newest first, b once");
        assert_eq!(merged.next_cursor, Some(Cursor::after(&b)), "a is left");
        assert_eq!(merged.blocks_read, 2);

        let q = Query {
            limit: Some(10),
            order: Order::OldestFirst,
            ..Query::default()
        };
        let merged = merge_pages(
            [page(vec![a.clone()], false), page(vec![c.clone()], false)],
            &q,
        );
        assert_eq!(merged.entries.len(), 2);
        assert_eq!(merged.entries[0].id, a.id);
        assert_eq!(merged.next_cursor, None, "everything was returned");
        let merged = merge_pages([page(vec![a.clone()], true)], &q);
        assert_eq!(merged.next_cursor, Some(Cursor::after(&a)));
    }
}
