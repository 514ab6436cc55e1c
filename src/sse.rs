//! A small incremental decoder for `text/event-stream` (the WHATWG server-sent events format),
//! shared by the OpenAI-compatible client backend and `cairn ask --server`.

/// One dispatched event.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SseEvent {
    /// The `event:` field; `message` when absent.
    pub event: String,
    /// The `data:` lines joined with `\n`.
    pub data: String,
    pub id: Option<String>,
}

/// Feeds bytes in, gets complete events out. Comments (`: keep-alive`) are skipped.
#[derive(Default)]
pub struct SseDecoder {
    buf: Vec<u8>,
    event: String,
    data: Vec<String>,
    id: Option<String>,
}

impl SseDecoder {
    /// Appends bytes; returns the events completed by them.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(nl) = self.buf.iter().position(|&b| b == b'\n') {
            let mut line: Vec<u8> = self.buf.drain(..=nl).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let line = String::from_utf8_lossy(&line).into_owned();
            if line.is_empty() {
                if !self.data.is_empty() || !self.event.is_empty() {
                    out.push(SseEvent {
                        event: if self.event.is_empty() {
                            "message".into()
                        } else {
                            std::mem::take(&mut self.event)
                        },
                        data: std::mem::take(&mut self.data).join("\n"),
                        id: self.id.take(),
                    });
                }
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f.to_string(), v.strip_prefix(' ').unwrap_or(v).to_string()),
                None => (line.clone(), String::new()),
            };
            match field.as_str() {
                "event" => self.event = value,
                "data" => self.data.push(value),
                "id" => self.id = Some(value),
                _ => {}
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_chunks_and_lines() {
        let mut d = SseDecoder::default();
        assert!(d.push(b": keep-alive\n\nevent: tok").is_empty());
        let evs = d.push(b"en\r\nid: 3\r\ndata: {\"a\":\r\ndata: 1}\r\n\r\ndata: [DONE]\n\n");
        assert_eq!(evs.len(), 2);
        assert_eq!(evs[0].event, "token");
        assert_eq!(evs[0].id.as_deref(), Some("3"));
        assert_eq!(evs[0].data, "{\"a\":\n1}");
        assert_eq!(evs[1].event, "message");
        assert_eq!(evs[1].data, "[DONE]");
    }
}
