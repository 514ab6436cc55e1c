//! `cairn ask`: a streamed answer with its sources, from the data dir or a `--server`.

use std::process::ExitCode;

use cairn::answer::{AnswerEvent, Citation, QueryEvent, QueryRequest};
use cairn::config::Config;
use cairn::error::Error;
use cairn::service::Cairn;

use super::args::{AskArgs, RemoteArgs};
use super::out;

/// `cairn ask`: on the data dir, or against `--server`.
pub async fn ask(config: Config, a: AskArgs) -> Result<ExitCode, Error> {
    let mut req = QueryRequest::new(a.question);
    req.search.limit = a.limit;
    req.search.mode = a.mode;
    req.options.max_tokens = a.max_tokens;
    req.options.temperature = a.temperature;
    req.options.stream = !a.json;
    match a.server {
        Some(url) => ask_remote(&url, &a.remote, req, a.json).await,
        None => ask_local(config, req, a.json).await,
    }
}

/// Prints one answer event as plain text (tokens as they come, sources at the end).
struct AskPrinter {
    citations: Vec<Citation>,
    used: Vec<usize>,
}

impl AskPrinter {
    fn event(&mut self, ev: AskEvent) -> Result<(), Error> {
        match ev {
            AskEvent::Sources(c) => self.citations = c,
            AskEvent::Token(t) => out(&t)?,
            AskEvent::Done {
                finish_reason,
                used,
            } => {
                self.used = used;
                if finish_reason == "retrieval_only" {
                    out("(no generator configured: the sources found are listed below)\n")?;
                } else {
                    out("\n")?;
                }
                if !self.citations.is_empty() {
                    out("\nSources:\n")?;
                }
                for c in &self.citations {
                    let mut loc = String::new();
                    if let Some(p) = c.page {
                        loc.push_str(&format!(" p.{p}"));
                    }
                    if let Some(s) = &c.section {
                        loc.push_str(&format!(" § {s}"));
                    }
                    let mark = if self.used.contains(&c.n) { "*" } else { " " };
                    out(&format!(
                        "{mark}[{}] {}{}  ({})\n",
                        c.n, c.title, loc, c.external_id
                    ))?;
                }
            }
            AskEvent::Error { code, message } => {
                out("\n")?;
                return Err(Error::InvalidInput(format!("{message} ({code})")));
            }
        }
        Ok(())
    }
}

/// What `ask` prints, from the core stream or from a server's SSE.
enum AskEvent {
    Sources(Vec<Citation>),
    Token(String),
    Done {
        finish_reason: String,
        used: Vec<usize>,
    },
    Error {
        code: String,
        message: String,
    },
}

async fn ask_local(config: Config, req: QueryRequest, json: bool) -> Result<ExitCode, Error> {
    use futures::StreamExt;
    let mut cairn = Cairn::open_with(config, false).await?;
    cairn.load_generator().await?;
    if json {
        let r = cairn.answer(req, Vec::new()).await?;
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut stream = cairn.answer_stream(req, Vec::new()).await?;
    let mut p = AskPrinter {
        citations: Vec::new(),
        used: Vec::new(),
    };
    while let Some(ev) = stream.next().await {
        let ev = match ev {
            AnswerEvent::Sources(c) => AskEvent::Sources(c),
            AnswerEvent::Token(t) => AskEvent::Token(t),
            AnswerEvent::Citation(_) => continue,
            AnswerEvent::Done(d) => AskEvent::Done {
                finish_reason: d.finish_reason,
                used: d.used,
            },
            AnswerEvent::Error(e) => AskEvent::Error {
                code: e.code().to_string(),
                message: e.to_string(),
            },
        };
        p.event(ev)?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn ask_remote(
    url: &str,
    remote: &RemoteArgs,
    req: QueryRequest,
    json: bool,
) -> Result<ExitCode, Error> {
    use futures::StreamExt;
    let url = format!("{}/query", url.trim_end_matches('/'));
    let resp = remote
        .authorize(reqwest::Client::new().post(&url))
        .json(&req)
        .send()
        .await
        .map_err(|e| Error::InvalidInput(format!("cannot reach {url}: {e}")))?;
    if !resp.status().is_success() {
        let status = resp.status();
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        let msg = body["error"]["message"]
            .as_str()
            .unwrap_or("request failed");
        return Err(Error::InvalidInput(format!(
            "server answered {status}: {msg}"
        )));
    }
    if json {
        let body: serde_json::Value = resp
            .json()
            .await
            .map_err(|e| Error::InvalidInput(format!("bad response from {url}: {e}")))?;
        println!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut p = AskPrinter {
        citations: Vec::new(),
        used: Vec::new(),
    };
    let mut decoder = cairn::sse::SseDecoder::default();
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| Error::InvalidInput(format!("reading {url}: {e}")))?;
        for ev in decoder.push(&chunk) {
            let ev = match QueryEvent::parse(&ev.event, &ev.data) {
                None | Some(Ok(QueryEvent::Citation(_))) => continue,
                Some(Ok(QueryEvent::Sources { citations })) => AskEvent::Sources(citations),
                Some(Ok(QueryEvent::Token { delta })) => AskEvent::Token(delta),
                Some(Ok(QueryEvent::Done(d))) => AskEvent::Done {
                    finish_reason: d.finish_reason,
                    used: d.used,
                },
                Some(Ok(QueryEvent::Error(e))) => AskEvent::Error {
                    code: e.code,
                    message: e.message,
                },
                Some(Err(e)) => {
                    return Err(Error::InvalidInput(format!(
                        "unexpected `{}` event from {url}: {e}",
                        ev.event
                    )))
                }
            };
            let done = matches!(ev, AskEvent::Done { .. });
            p.event(ev)?;
            if done {
                return Ok(ExitCode::SUCCESS);
            }
        }
    }
    Err(Error::InvalidInput(
        "the server closed the stream before the answer finished".into(),
    ))
}
