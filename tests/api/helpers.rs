//! `spawn_app()`: a real Cairn server (real ONNX model, real LanceDB and tantivy in a temp dir)
//! on 127.0.0.1 port 0, plus small request helpers.

use std::path::Path;
use std::sync::Arc;

use cairn::config::Config;
use cairn::service::Cairn;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub struct TestApp {
    pub addr: String,
    pub client: reqwest::Client,
    pub cairn: Option<Arc<Cairn>>,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
    _tmp: Option<tempfile::TempDir>,
}

pub fn test_config(dir: &Path) -> Config {
    let mut c = Config {
        data_dir: dir.to_path_buf(),
        ..Default::default()
    };
    c.models.threads = 1;
    c
}

/// The JSON body of a request to a server outside this process (`cairn serve`).
pub async fn json_of(req: reqwest::RequestBuilder) -> serde_json::Value {
    req.send().await.unwrap().json().await.unwrap()
}

/// A server on a fresh temp data dir.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// The local answer model (SmolLM2-135M from `scripts/setup`), small and greedy for tests.
#[cfg(feature = "llama")]
pub fn use_llama(c: &mut Config) {
    c.generator.backend = cairn::config::Backend::Llama;
    c.generator.context_tokens = 2048;
    c.generator.threads = 2;
    c.generator.max_tokens = 48;
}

/// One server-sent event: name, id and JSON data.
#[derive(Debug, Clone)]
pub struct Sse {
    pub event: String,
    #[cfg_attr(not(feature = "llama"), allow(dead_code))]
    pub id: Option<String>,
    pub data: Value,
}

/// Reads a whole event stream.
pub async fn read_sse(resp: reqwest::Response) -> Vec<Sse> {
    use futures::StreamExt;
    let mut dec = cairn::sse::SseDecoder::default();
    let mut out = Vec::new();
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        for ev in dec.push(&chunk.expect("stream chunk")) {
            let data = serde_json::from_str(&ev.data).unwrap_or(Value::String(ev.data.clone()));
            out.push(Sse {
                event: ev.event,
                id: ev.id,
                data,
            });
        }
    }
    out
}

/// A server on a fresh temp data dir, with config tweaks.
pub async fn spawn_app_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut cfg = test_config(tmp.path());
    tweak(&mut cfg);
    let mut app = start(cfg).await;
    app._tmp = Some(tmp);
    app
}

/// A server over an existing config (e.g. to restart on the same data dir).
pub async fn start(cfg: Config) -> TestApp {
    // Extraction runs in the real `cairn` binary's worker, as in production (cairn::sandbox).
    cairn::sandbox::set_worker_program(env!("CARGO_BIN_EXE_cairn").into());
    let mut cairn = Cairn::open(cfg).await.expect("open cairn");
    cairn.load_generator().await.expect("load generator");
    let cairn = Arc::new(cairn);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = oneshot::channel::<()>();
    let c2 = cairn.clone();
    let server = tokio::spawn(async move {
        cairn::http::serve(c2, listener, async {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    TestApp {
        addr,
        client: reqwest::Client::new(),
        cairn: Some(cairn),
        stop: Some(tx),
        server: Some(server),
        _tmp: None,
    }
}

impl TestApp {
    /// Stops the server gracefully and releases the data dir (keeping the temp dir alive).
    /// A bare TCP connection to the server, for what an HTTP client would hide or refuse to do.
    pub async fn connect_raw(&self) -> tokio::net::TcpStream {
        tokio::net::TcpStream::connect(self.addr.trim_start_matches("http://"))
            .await
            .expect("connect")
    }

    pub async fn stop(&mut self) -> Option<tempfile::TempDir> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.server.take() {
            h.await.unwrap();
        }
        let c = self.cairn.take().expect("running");
        assert_eq!(Arc::strong_count(&c), 1, "no other holder of the store");
        drop(c);
        self._tmp.take()
    }

    /// The running app's answer generator (panics when it has none).
    #[cfg(feature = "llama")]
    pub fn generator(&self) -> Arc<dyn cairn::generate::Generator> {
        self.cairn
            .as_ref()
            .and_then(|c| c.generator.clone())
            .expect("a generator")
    }

    pub fn cfg(&self) -> Config {
        self.cairn.as_ref().unwrap().config.clone()
    }

    pub async fn upload(&self, files: &[(&str, Vec<u8>)]) -> (u16, Value) {
        self.upload_with_meta(files, None).await
    }

    pub async fn upload_with_meta(
        &self,
        files: &[(&str, Vec<u8>)],
        meta: Option<Value>,
    ) -> (u16, Value) {
        let mut form = reqwest::multipart::Form::new();
        for (name, bytes) in files {
            form = form.part(
                "file",
                reqwest::multipart::Part::bytes(bytes.clone()).file_name(name.to_string()),
            );
        }
        if let Some(m) = meta {
            form = form.text("metadata", m.to_string());
        }
        let r = self
            .client
            .post(format!("{}/sources", self.addr))
            .multipart(form)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self
            .client
            .post(format!("{}{path}", self.addr))
            .json(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// POSTs JSON and returns the raw response (for event streams).
    pub async fn post_stream(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(format!("{}{path}", self.addr))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .client
            .get(format!("{}{path}", self.addr))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn delete(&self, path: &str) -> u16 {
        self.client
            .delete(format!("{}{path}", self.addr))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    pub async fn search(&self, body: Value) -> Vec<Value> {
        let (s, v) = self.post_json("/search", &body).await;
        assert_eq!(s, 200, "search failed: {v}");
        v["results"].as_array().cloned().unwrap_or_default()
    }

    /// Asserts that both indexes and the sources table agree.
    pub async fn assert_consistent(&self) {
        let rep = self.cairn.as_ref().unwrap().store.check().await.unwrap();
        assert!(rep.is_consistent(), "{rep:?}");
    }

    pub async fn stats(&self) -> Value {
        let (s, v) = self.get("/stats").await;
        assert_eq!(s, 200);
        v
    }
}

/// Asserts an error response's status and code.
pub fn assert_error(got: (u16, Value), status: u16, code: &str) {
    assert_eq!(got.0, status, "body: {}", got.1);
    assert_eq!(got.1["error"]["code"], code, "body: {}", got.1);
    assert!(
        got.1["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "body: {}",
        got.1
    );
}

/// Source ids of search results.
pub fn source_ids(results: &[Value]) -> Vec<String> {
    results
        .iter()
        .map(|r| r["source_id"].as_str().unwrap().to_string())
        .collect()
}
