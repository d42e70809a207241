//! Mixed traffic from three game services (msgpack and JSON envelopes, the games' own raw
//! payloads, garbage), then every query the CLI offers checked for exact results, plus
//! quarantine, `get`, `explain`, the table output and the API's cursor paging.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use anyhow::{bail, ensure, Context as _};
use chrono::{DateTime, DurationRound, SecondsFormat, TimeDelta, Utc};
use serde_json::json;
use trace_core::{Category, Severity};
use trace_tests::{
    Agent, AgentOptions, Cli, EntryLine, Expect, Expected, GameSource, GameTraffic, JsPublisher,
    NatsServer, Outgoing, StoreInfo,
};

use crate::util::{bounded, now_ms, wait_drained, wait_for_counts};

/// Envelopes published (a fifth of them JSON); with the raw and chain messages there are
/// more than 3,000 entries, so `--limit 2500` spans three API pages.
const ENVELOPES: usize = 3000;
/// Raw payloads of each of the four kinds, per source.
const RAW_PER_KIND: usize = 25;

/// What was published, and the times that frame it.
struct Scenario {
    outgoing: Vec<Outgoing>,
    /// A whole minute at least 20 minutes ago; envelope times start here.
    base: DateTime<Utc>,
    /// Ids of the explain chain, root first.
    chain: Vec<String>,
}

impl Scenario {
    fn build() -> Scenario {
        let mut traffic = GameTraffic::new(0x5EED_0001);
        let now = now_ms();
        let base = (now - TimeDelta::minutes(20))
            .duration_trunc(TimeDelta::minutes(1))
            .unwrap_or(now - TimeDelta::minutes(21));
        let mut outgoing = Vec::new();
        let mut raw = Vec::new();
        for source in GameSource::ALL {
            for _ in 0..RAW_PER_KIND {
                raw.push(traffic.raw_msgpack(source));
                raw.push(traffic.raw_json(source));
                raw.push(traffic.raw_text(source));
                raw.push(traffic.raw_protobuf(source));
            }
        }
        let mut raw = raw.into_iter();
        for i in 0..ENVELOPES {
            let source = GameSource::ALL[i % 3];
            // 173 ms apart, 11 ms past: never on a whole second, so windows are unambiguous.
            let ts = base + TimeDelta::milliseconds(i as i64 * 173 + 11);
            outgoing.push(if i % 5 == 4 {
                traffic.json_envelope(source, ts)
            } else {
                traffic.msgpack_envelope(source, ts)
            });
            // Interleave the games' own traffic with the envelopes.
            if i % 10 == 0 {
                outgoing.extend(raw.by_ref().take(1));
            }
        }
        outgoing.extend(raw);
        let chain = traffic.chain(GameSource::Npc1, base + TimeDelta::minutes(9), 3);
        let chain_ids = chain.iter().filter_map(|m| m.msg_id.clone()).collect();
        outgoing.extend(chain);
        outgoing.extend(traffic.garbage(now));
        Scenario {
            outgoing,
            base,
            chain: chain_ids,
        }
    }

    fn stored(&self) -> Vec<Expected> {
        self.outgoing
            .iter()
            .filter_map(Outgoing::expected)
            .cloned()
            .collect()
    }

    fn garbage(&self) -> Vec<&Outgoing> {
        self.outgoing
            .iter()
            .filter(|m| m.expected().is_none())
            .collect()
    }

    /// RFC 3339 (microseconds) of `base + secs` and a half millisecond: between events.
    fn at(&self, secs: i64) -> String {
        (self.base + TimeDelta::seconds(secs) + TimeDelta::microseconds(500))
            .to_rfc3339_opts(SecondsFormat::Micros, true)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_traffic_is_stored_and_every_query_is_exact() -> anyhow::Result<()> {
    bounded(Duration::from_secs(150), async {
        let nats = NatsServer::start().await?;
        let agent = Agent::start(&nats.client_url(), AgentOptions::default()).await?;
        let cli = Cli::new(&nats.client_url())?;
        let scenario = Scenario::build();
        let model = scenario.stored();
        let garbage = scenario.garbage();

        let js = nats.jetstream().await?;
        let mut publisher = JsPublisher::new(js.clone());
        for message in &scenario.outgoing {
            publisher.send(message).await?;
        }
        publisher.flush().await?;
        ensure!(
            publisher.duplicates() == 0,
            "JetStream reported {} duplicates",
            publisher.duplicates()
        );

        let info = wait_for_counts(
            &agent,
            model.len() as u64,
            garbage.len() as u64,
            Duration::from_secs(60),
        )
        .await?;
        wait_drained(&js, Duration::from_secs(30)).await?;
        let info_now = agent.store_info().await?;
        ensure!(
            info_now.events == model.len() as u64 && info_now.quarantined == garbage.len() as u64,
            "store_info after draining: {info_now:?} (first reached {info:?}); expected {} events \
             and {} quarantined",
            model.len(),
            garbage.len()
        );

        let all = check_everything_stored(&cli, &model).await?;
        check_filters(&cli, &scenario, &model).await?;
        check_order_and_limits(&cli, &all).await?;
        check_quarantine(&cli, &garbage).await?;
        check_store_info_cli(&cli, &model, &garbage).await?;
        check_get_and_explain(&cli, &scenario, &model).await?;
        check_table_output(&cli).await?;
        check_api_paging(&agent, &model).await?;
        Ok(())
    })
    .await
}

/// The unfiltered query returns every entry once, each with the fields it was sent with (or
/// the defaults the agent must derive), and `meta.subject`/`meta.received_at` added.
async fn check_everything_stored(cli: &Cli, model: &[Expected]) -> anyhow::Result<Vec<EntryLine>> {
    let lines = expect_query(cli, model, &[], |_| true).await?;
    let by_id: HashMap<String, &Expected> = model
        .iter()
        .filter_map(|e| e.id.map(|id| (id.to_string(), e)))
        .collect();
    let mut wrapped_per_source: HashMap<String, usize> = HashMap::new();
    for line in &lines {
        ensure!(
            line.meta.get("subject").and_then(|v| v.as_str()).is_some()
                && line.meta.contains_key("received_at"),
            "entry without meta.subject / meta.received_at: {}",
            line.raw
        );
        match by_id.get(&line.id) {
            Some(expected) => {
                let got = as_expected(line, expected.id.is_none())?;
                let want = Expected {
                    wrapped: false,
                    ..(*expected).clone()
                };
                ensure!(
                    got == want,
                    "entry differs from what was sent:\n got  {got:?}\n want {want:?}\n line {}",
                    line.raw
                );
            }
            None => {
                ensure!(
                    line.is_wrapped(),
                    "entry with an id nobody sent that is not wrapped: {}",
                    line.raw
                );
                let source = GameSource::ALL
                    .into_iter()
                    .find(|s| s.name() == line.source)
                    .with_context(|| format!("wrapped entry from unknown source: {}", line.raw))?;
                ensure!(
                    line.event_type == source.raw_type()
                        && line.category == source.default_category(source.raw_type()).as_str()
                        && line.severity == Severity::Info
                        && line.player.is_none()
                        && line.meta.get("subject").and_then(|v| v.as_str())
                            == Some(source.subject(source.raw_type()).as_str()),
                    "wrapped entry does not carry type/source/category from its subject: {}",
                    line.raw
                );
                *wrapped_per_source.entry(line.source.clone()).or_default() += 1;
            }
        }
    }
    for source in GameSource::ALL {
        let n = wrapped_per_source.get(source.name()).copied().unwrap_or(0);
        ensure!(
            n == 4 * RAW_PER_KIND,
            "{} wrapped entries from {}, expected {}",
            n,
            source.name(),
            4 * RAW_PER_KIND
        );
    }
    Ok(lines)
}

/// Each filter of `query`, alone and combined, against the model.
async fn check_filters(cli: &Cli, scenario: &Scenario, model: &[Expected]) -> anyhow::Result<()> {
    let player_action = Category::PlayerAction;
    let economy = Category::Other("economy".into());
    let state_change = Category::StateChange;
    expect_query(cli, model, &["--type", "player.move"], |e| {
        e.event_type == "player.move"
    })
    .await?;
    expect_query(cli, model, &["--type", "player.*"], |e| {
        e.event_type.starts_with("player.")
    })
    .await?;
    expect_query(cli, model, &["--type", "telemetry"], |e| {
        e.event_type == "telemetry"
    })
    .await?;
    for source in GameSource::ALL {
        expect_query(cli, model, &["--source", source.name()], |e| {
            e.source == source.name()
        })
        .await?;
    }
    expect_query(cli, model, &["--category", "player_action"], |e| {
        e.category == player_action
    })
    .await?;
    expect_query(cli, model, &["--category", "economy"], |e| {
        e.category == economy
    })
    .await?;
    expect_query(cli, model, &["--category", "state_change"], |e| {
        e.category == state_change
    })
    .await?;
    for severity in [Severity::Warn, Severity::Error, Severity::Critical] {
        let lines = expect_query(cli, model, &["--severity", severity.as_str()], |e| {
            e.severity >= severity
        })
        .await?;
        ensure!(!lines.is_empty(), "no entry at or above {severity}");
    }
    expect_query(cli, model, &["--player", "player-3"], |e| {
        e.player.as_deref() == Some("player-3")
    })
    .await?;
    expect_query(cli, model, &["--session", "session-1"], |e| {
        e.session.as_deref() == Some("session-1")
    })
    .await?;
    expect_query(
        cli,
        model,
        &[
            "--source",
            "world",
            "--severity",
            "debug",
            "--player",
            "player-2",
        ],
        |e| {
            e.source == "world"
                && e.severity >= Severity::Debug
                && e.player.as_deref() == Some("player-2")
        },
    )
    .await?;

    // Time windows over the envelopes' explicit times ([since, until) like trace-core's Query).
    let (since, until) = (
        scenario.base + TimeDelta::seconds(60),
        scenario.base + TimeDelta::seconds(180),
    );
    let window = expect_query(
        cli,
        model,
        &["--since", &scenario.at(60), "--until", &scenario.at(180)],
        |e| e.ts.is_some_and(|t| t > since && t < until),
    )
    .await?;
    ensure!(
        window.len() > 500,
        "the window holds only {} entries",
        window.len()
    );
    let early = scenario.base + TimeDelta::seconds(30);
    expect_query(cli, model, &["--until", &scenario.at(30)], |e| {
        e.ts.is_some_and(|t| t < early)
    })
    .await?;
    let late = scenario.base + TimeDelta::seconds(400);
    expect_query(
        cli,
        model,
        &["--since", &scenario.at(400), "--source", "graph"],
        |e| e.source == "graph" && e.ts.is_none_or(|t| t > late),
    )
    .await?;
    // Relative: the last 5 minutes hold the wrapped entries (received now) and no envelope.
    expect_query(cli, model, &["--since", "5m"], |e| e.ts.is_none()).await?;
    expect_query(cli, model, &["--since", "2h", "--type", "tick"], |e| {
        e.event_type == "tick"
    })
    .await?;
    Ok(())
}

/// Default newest-first vs `--oldest-first`, `--limit 7`, the default limit of 100 and a
/// limit larger than one API page.
async fn check_order_and_limits(cli: &Cli, newest_first: &[EntryLine]) -> anyhow::Result<()> {
    ensure!(
        newest_first.windows(2).all(|w| w[0].ts >= w[1].ts),
        "default order is not newest first"
    );
    let oldest_first = cli.query(&["--oldest-first", "--limit", "100000"]).await?;
    ensure!(
        oldest_first.windows(2).all(|w| w[0].ts <= w[1].ts),
        "--oldest-first is not ts ascending"
    );
    let ids = |lines: &[EntryLine]| lines.iter().map(|l| l.id.clone()).collect::<Vec<_>>();
    let mut reversed = ids(&oldest_first);
    reversed.reverse();
    ensure!(
        reversed == ids(newest_first),
        "--oldest-first is not the default order reversed"
    );

    let seven = cli.query(&["--limit", "7"]).await?;
    ensure!(seven.len() == 7, "--limit 7 returned {}", seven.len());
    ensure!(
        ids(&seven) == ids(&newest_first[..7]),
        "--limit 7 is not the 7 newest"
    );
    let oldest_seven = cli.query(&["--limit", "7", "--oldest-first"]).await?;
    ensure!(
        ids(&oldest_seven) == ids(&oldest_first[..7]),
        "--limit 7 --oldest-first is not the 7 oldest"
    );

    let default = cli.query(&[]).await?;
    ensure!(
        default.len() == 100,
        "query without --limit returned {} (default is 100)",
        default.len()
    );

    ensure!(
        newest_first.len() > 2500,
        "too few entries for the paging check"
    );
    let big = cli.query(&["--limit", "2500"]).await?;
    let distinct: HashSet<&str> = big.iter().map(|l| l.id.as_str()).collect();
    ensure!(
        big.len() == 2500 && distinct.len() == 2500,
        "--limit 2500 returned {} entries, {} distinct (the API pages at 1000)",
        big.len(),
        distinct.len()
    );
    ensure!(
        ids(&big) == ids(&newest_first[..2500]),
        "--limit 2500 is not the 2500 newest in order"
    );
    Ok(())
}

/// `quarantine --json` lists exactly the garbage, each record with the contract's fields.
async fn check_quarantine(cli: &Cli, garbage: &[&Outgoing]) -> anyhow::Result<()> {
    let records = cli
        .json_lines(&["quarantine", "--json", "--limit", "1000"])
        .await?;
    ensure!(
        records.len() == garbage.len(),
        "quarantine lists {} records, {} garbage messages were sent: {records:#?}",
        records.len(),
        garbage.len()
    );
    let mut want: Vec<(String, String, u64)> = garbage
        .iter()
        .map(|m| {
            let kind = match &m.expect {
                Expect::Quarantined { kind, .. } => (*kind).to_owned(),
                Expect::Stored(_) => String::new(),
            };
            (m.subject.clone(), kind, m.payload.len() as u64)
        })
        .collect();
    let mut got = Vec::new();
    for record in &records {
        let field = |name: &str| {
            record
                .get(name)
                .with_context(|| format!("quarantine record without `{name}`: {record}"))
        };
        let subject = field("subject")?.as_str().context("subject not a string")?;
        let kind = field("kind")?.as_str().context("kind not a string")?;
        let raw_len = field("raw_len")?.as_u64().context("raw_len not a number")?;
        let reason = field("reason")?.as_str().context("reason not a string")?;
        let received_at = field("received_at")?
            .as_str()
            .context("received_at not a string")?;
        ensure!(!reason.is_empty(), "empty reason: {record}");
        DateTime::parse_from_rfc3339(received_at)
            .with_context(|| format!("received_at is not RFC 3339: {record}"))?;
        if kind == "invalid_envelope" && reason.contains("yesterday") {
            ensure!(
                reason.contains("ts"),
                "the reason for a bad ts does not name the field: {record}"
            );
        }
        got.push((subject.to_owned(), kind.to_owned(), raw_len));
    }
    want.sort();
    got.sort();
    ensure!(
        got == want,
        "quarantine records (subject, kind, raw_len) differ:\n got  {got:?}\n want {want:?}"
    );
    let bad_ts = records
        .iter()
        .filter(|r| {
            r["reason"]
                .as_str()
                .is_some_and(|s| s.contains("yesterday"))
        })
        .count();
    ensure!(
        bad_ts == 2,
        "expected 2 reasons quoting the bad ts \"yesterday\", found {bad_ts}: {records:#?}"
    );
    Ok(())
}

async fn check_store_info_cli(
    cli: &Cli,
    model: &[Expected],
    garbage: &[&Outgoing],
) -> anyhow::Result<()> {
    let value = cli.json(&["store-info", "--json"]).await?;
    let info = StoreInfo::from_json(&value)?;
    ensure!(
        info.events == model.len() as u64 && info.quarantined == garbage.len() as u64,
        "store-info --json: {info:?}; expected {} events, {} quarantined",
        model.len(),
        garbage.len()
    );
    ensure!(
        info.segments >= 1 && info.blocks >= 1 && info.bytes_on_disk > 0 && info.raw_bytes > 0,
        "store-info --json reports an empty store: {info:?}"
    );
    Ok(())
}

async fn check_get_and_explain(
    cli: &Cli,
    scenario: &Scenario,
    model: &[Expected],
) -> anyhow::Result<()> {
    // A JSON envelope (the fifth message) and a msgpack one.
    for expected in model.iter().filter(|e| e.id.is_some()).take(5) {
        let Some(id) = expected.id.map(|id| id.to_string()) else {
            continue;
        };
        let value = cli.json(&["get", &id, "--json"]).await?;
        let line = EntryLine::from_json(value)?;
        ensure!(
            line.id == id && as_expected(&line, false)? == *expected,
            "get {id} returned {}, expected {expected:?}",
            line.raw
        );
    }
    let unknown = ulid::Ulid::new().to_string();
    let output = cli.run(&["get", &unknown, "--json"]).await?;
    ensure!(
        !output.status.success(),
        "get of an unknown id succeeded: {}",
        output.describe()
    );

    let [root, middle, leaf] = scenario.chain.as_slice() else {
        bail!("the chain has {} ids", scenario.chain.len());
    };
    let chain = cli.json_lines(&["explain", leaf, "--json"]).await?;
    let ids: Vec<&str> = chain.iter().filter_map(|e| e["id"].as_str()).collect();
    ensure!(
        ids == [leaf.as_str(), middle.as_str(), root.as_str()],
        "explain {leaf} returned ids {ids:?}, expected [leaf, parent, root] = {:?}",
        [leaf, middle, root]
    );
    ensure!(
        chain[0]["parent"].as_str() == Some(middle.as_str())
            && chain[1]["parent"].as_str() == Some(root.as_str()),
        "explain lines do not carry their parent links: {chain:#?}"
    );
    let root_only = cli.json_lines(&["explain", root, "--json"]).await?;
    ensure!(
        root_only.len() == 1 && root_only[0]["id"].as_str() == Some(root.as_str()),
        "explain of a root returned {root_only:#?}"
    );
    Ok(())
}

async fn check_table_output(cli: &Cli) -> anyhow::Result<()> {
    let output = cli
        .success(&["query", "--type", "agent.decision", "--limit", "20"])
        .await?;
    ensure!(
        output.stdout.contains("agent.decision") && output.stdout.contains("npc1"),
        "the table output does not show type and source: {}",
        output.describe()
    );
    let output = cli.success(&["query", "--limit", "400"]).await?;
    for event_type in ["telemetry", "raw.node", "tick"] {
        ensure!(
            output.stdout.contains(event_type),
            "the table of the 400 newest entries does not mention {event_type}: {}",
            output.describe()
        );
    }
    Ok(())
}

/// The API's own paging: a small page, then the cursor to the end, over the `npc1` source.
async fn check_api_paging(agent: &Agent, model: &[Expected]) -> anyhow::Result<()> {
    let want = model.iter().filter(|e| e.source == "npc1").count();
    let mut seen = HashSet::new();
    let mut cursor = serde_json::Value::Null;
    let mut pages = 0;
    loop {
        let mut body = json!({"source": "npc1", "order": "oldest_first", "limit": 400});
        if !cursor.is_null() {
            body["cursor"] = cursor.clone();
        }
        let page = agent
            .request("query", &body)
            .await
            .map_err(|e| anyhow::anyhow!("query page {pages}: {e}"))?;
        let entries = page["entries"]
            .as_array()
            .with_context(|| format!("query reply without `entries`: {page}"))?;
        ensure!(
            entries.len() <= 400,
            "a page of {} for limit 400",
            entries.len()
        );
        for entry in entries {
            let id = entry["id"].as_str().context("entry without id")?.to_owned();
            ensure!(seen.insert(id.clone()), "id {id} on two pages");
        }
        pages += 1;
        cursor = page
            .get("next_cursor")
            .cloned()
            .with_context(|| format!("query reply without `next_cursor`: {page}"))?;
        if cursor.is_null() {
            break;
        }
        ensure!(pages < 100, "paging does not end");
    }
    ensure!(
        seen.len() == want,
        "API paging over source npc1 gave {} entries in {pages} pages, expected {want}",
        seen.len()
    );
    Ok(())
}

/// Runs `query --json --limit 100000 <args>` and checks it returns exactly the model entries
/// `want` selects: the same ids for the envelopes, and as many wrapped entries (whose ids
/// the agent assigned), each of which `want` also accepts.
async fn expect_query(
    cli: &Cli,
    model: &[Expected],
    args: &[&str],
    want: impl Fn(&Expected) -> bool,
) -> anyhow::Result<Vec<EntryLine>> {
    let mut all = args.to_vec();
    all.extend(["--limit", "100000"]);
    let lines = cli.query(&all).await?;
    let expected: Vec<&Expected> = model.iter().filter(|e| want(e)).collect();
    let want_ids: HashSet<String> = expected
        .iter()
        .filter_map(|e| e.id.map(|id| id.to_string()))
        .collect();
    let want_wrapped = expected.iter().filter(|e| e.id.is_none()).count();
    let got_ids: HashSet<&str> = lines.iter().map(|l| l.id.as_str()).collect();
    ensure!(
        got_ids.len() == lines.len(),
        "query {args:?} returned {} entries but {} distinct ids",
        lines.len(),
        got_ids.len()
    );
    let missing: Vec<&String> = want_ids
        .iter()
        .filter(|id| !got_ids.contains(id.as_str()))
        .collect();
    let mut got_wrapped = 0;
    for line in lines.iter().filter(|l| !want_ids.contains(&l.id)) {
        ensure!(
            line.is_wrapped() && want(&as_expected(line, true)?),
            "query {args:?} returned an entry it should not have: {}",
            line.raw
        );
        got_wrapped += 1;
    }
    ensure!(
        lines.len() == expected.len() && missing.is_empty() && got_wrapped == want_wrapped,
        "query {args:?}: {} entries, expected {} ({} envelopes + {want_wrapped} wrapped); \
         {} envelopes missing (e.g. {:?}), {got_wrapped} wrapped",
        lines.len(),
        expected.len(),
        want_ids.len(),
        missing.len(),
        &missing[..missing.len().min(3)]
    );
    Ok(lines)
}

/// A query line in the model's terms. Wrapped lines get `id`/`ts` `None`, as in the model.
fn as_expected(line: &EntryLine, wrapped: bool) -> anyhow::Result<Expected> {
    let parse_id = |s: &str| {
        s.parse()
            .with_context(|| format!("bad id {s:?} in {}", line.raw))
    };
    Ok(Expected {
        id: if wrapped {
            None
        } else {
            Some(parse_id(&line.id)?)
        },
        ts: if wrapped { None } else { Some(line.ts) },
        event_type: line.event_type.clone(),
        category: Category::parse(&line.category),
        source: line.source.clone(),
        severity: line.severity,
        player: line.player.clone(),
        session: line.session.clone(),
        parent: line.parent.as_deref().map(parse_id).transpose()?,
        wrapped,
    })
}
