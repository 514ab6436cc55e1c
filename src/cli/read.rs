//! `cairn search`, `sources`, `stats`, `concepts`, `graph` and `delete`: one data-dir call
//! each, printed as text or JSON.

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;

use cairn::config::Config;
use cairn::error::Error;
use cairn::search::SearchRequest;
use cairn::service::Cairn;

use super::args::{GraphArgs, SearchArgs};
use super::names::Namer;

fn plain_snippet(s: &str) -> String {
    let tty = std::io::stdout().is_terminal();
    let (on, off) = if tty {
        ("\x1b[1m", "\x1b[0m")
    } else {
        ("", "")
    };
    let s = s.replace("<mark>", on).replace("</mark>", off);
    html_unescape(&s)
}

fn html_unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&amp;", "&")
}

pub async fn search(config: Config, a: SearchArgs) -> Result<ExitCode, Error> {
    let cairn = Cairn::open_with(config, false).await?;
    let req = SearchRequest {
        query: a.query,
        limit: Some(a.limit),
        mode: a.mode,
        explain: a.explain,
        context_type: a.context_type,
        use_graph: a.use_graph.then_some(true),
        rerank: a.rerank,
        offset: Some(a.offset),
        group_by: a.group_by,
        group_size: a.group_size,
        ..Default::default()
    };
    let resp = cairn.search(req).await?;
    if a.json {
        say!("{}", serde_json::to_string_pretty(&resp)?);
        return Ok(ExitCode::SUCCESS);
    }
    if resp.results.is_empty() {
        say!("no results");
    }
    for (i, h) in resp.results.iter().enumerate() {
        say!(
            "{:>2}. [{:.4}] {}",
            resp.offset + i + 1,
            h.score,
            hit_line(h)
        );
        say!("    {}", plain_snippet(&h.snippet));
        if let Some(e) = &h.scores {
            say!(
                "    bm25 {:?} (rank {:?}), vector distance {:?} (rank {:?})",
                e.bm25,
                e.bm25_rank,
                e.vector_distance,
                e.vector_rank
            );
        }
        let more = resp.groups.as_ref().map_or(&[][..], |g| &g[i].hits[1..]);
        for m in more {
            say!("      + [{:.4}] {}", m.score, hit_line(m));
            say!("        {}", plain_snippet(&m.snippet));
        }
    }
    let what = if resp.groups.is_some() {
        "groups"
    } else {
        "results"
    };
    say!("{} {what} in {:.1} ms", resp.results.len(), resp.took_ms);
    if let Some(next) = resp.next_offset {
        say!("more: --offset {next}");
    }
    Ok(ExitCode::SUCCESS)
}

/// A hit's title, page or section, and external id.
fn hit_line(h: &cairn::search::SearchHit) -> String {
    let mut loc = String::new();
    if let Some(p) = h.page {
        loc.push_str(&format!(" p.{p}"));
    }
    if let Some(s) = &h.section {
        loc.push_str(&format!(" § {s}"));
    }
    format!("{}{}  ({})", h.title, loc, h.external_id)
}

pub async fn concepts(config: Config, query: &str, limit: usize) -> Result<ExitCode, Error> {
    let cairn = Cairn::open_with(config, false).await?;
    let found = cairn.concepts(query, limit).await?;
    say!("{}", serde_json::to_string_pretty(&found)?);
    Ok(ExitCode::SUCCESS)
}

pub async fn graph(config: Config, a: GraphArgs) -> Result<ExitCode, Error> {
    let cairn = Cairn::open_with(config, false).await?;
    let n = cairn
        .graph(&a.concept, a.depth, a.limit, a.min_weight)
        .await?;
    say!("{}", serde_json::to_string_pretty(&n)?);
    Ok(ExitCode::SUCCESS)
}

pub async fn sources(config: Config, json: bool) -> Result<ExitCode, Error> {
    let cairn = Cairn::open_with(config, false).await?;
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = cairn.list_sources(1000, cursor.as_deref()).await?;
        all.extend(page.sources);
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    if json {
        say!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(ExitCode::SUCCESS);
    }
    for s in &all {
        say!(
            "{}  {:>4} chunks  {:<5} {}  ({})",
            s.id,
            s.chunk_count,
            s.file_type,
            s.title,
            s.external_id
        );
    }
    say!("{} sources", all.len());
    Ok(ExitCode::SUCCESS)
}

/// `cairn delete`: by source id, external id, or the path of a file as `cairn ingest` named it.
pub async fn delete(config: Config, source: &str, root: Option<&Path>) -> Result<ExitCode, Error> {
    let cairn = Cairn::open(config).await?;
    let mut missing = None;
    for candidate in Namer::new(root)?.candidates(source) {
        match cairn.resolve_source(&candidate).await {
            Ok(found) => {
                cairn.delete_source(&found.id).await?;
                say!("deleted {} ({})", found.id, found.external_id);
                return Ok(ExitCode::SUCCESS);
            }
            Err(e @ Error::NotFound { .. }) => missing = missing.or(Some(e)),
            Err(e) => return Err(e),
        }
    }
    Err(missing.unwrap_or_else(|| Error::not_found(format!("source `{source}`"))))
}

pub async fn stats(config: Config, json: bool) -> Result<ExitCode, Error> {
    let cairn = Cairn::open_with(config, false).await?;
    let s = cairn.stats().await?;
    if json {
        say!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(ExitCode::SUCCESS);
    }
    say!("sources          {}", s.sources);
    say!("chunks (vector)  {}", s.chunks_vector);
    say!("chunks (keyword) {}", s.chunks_keyword);
    say!("vector bytes     {}", s.index_bytes.vector);
    say!("keyword bytes    {}", s.index_bytes.keyword);
    say!(
        "embedding model  {} ({} dims)",
        s.embedding_model,
        s.embedding_dim
    );
    say!(
        "vector index     {} (ann from {} chunks)",
        s.ann_index.state,
        s.ann_index.min_rows
    );
    Ok(ExitCode::SUCCESS)
}
