//! One integration test binary: a real server (port 0, temp data dir, real ONNX model,
//! LanceDB and tantivy) and the real `cairn` executable.

#[cfg(feature = "llama")]
mod answer;
mod auth;
mod cli;
mod commits;
mod crash;
mod disk;
mod errors;
mod graph;
mod groups;
mod helpers;
mod metrics;
mod openai;
mod openapi;
mod repo;
mod search;
mod slow;
mod sources;
mod telemetry;
mod untrusted;
mod upstream;
