//! Event export: the encoders (NDJSON, JSON array, CSV) and the chunked
//! stream that carries an export to an HTTP body in constant memory.

use std::io::{self, Write};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::Stream;
use orchex_core::Event;
use tokio::sync::mpsc;

use crate::error::{Result, StoreError};
use crate::model::{CSV_HEADER, Cursor, ExportFormat, MAX_PAGE_LIMIT};

/// The size at which an export chunk is handed to the consumer.
pub const EXPORT_CHUNK_BYTES: usize = 64 * 1024;

/// Chunks in flight between the reading thread and the consumer; with
/// [`EXPORT_CHUNK_BYTES`] this bounds an export's buffer to about 256 KiB.
const EXPORT_CHANNEL_CHUNKS: usize = 4;

/// A stream of export chunks (`Vec<u8>`, about 64 KiB each).
///
/// The rows are read page by page on a blocking thread; the bounded channel
/// between that thread and this stream applies back-pressure, so a slow
/// client holds at most a few chunks in memory. Dropping the stream stops
/// the export.
#[derive(Debug)]
pub struct ExportStream {
    rx: mpsc::Receiver<Result<Vec<u8>>>,
}

/// The producing half of an [`ExportStream`], for store implementations.
#[derive(Debug)]
pub struct ExportSender {
    tx: mpsc::Sender<Result<Vec<u8>>>,
}

impl ExportStream {
    /// A connected sender and stream.
    pub fn channel() -> (ExportSender, ExportStream) {
        let (tx, rx) = mpsc::channel(EXPORT_CHANNEL_CHUNKS);
        (ExportSender { tx }, ExportStream { rx })
    }

    /// A stream that yields `err` and ends.
    pub fn failed(err: StoreError) -> Self {
        let (tx, rx) = mpsc::channel(1);
        // Capacity 1 and a fresh channel: this send cannot fail.
        let _ = tx.try_send(Err(err));
        Self { rx }
    }

    /// Collects the whole export into memory (for tests and small exports).
    pub async fn collect_bytes(mut self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(chunk) = self.rx.recv().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(out)
    }
}

impl Stream for ExportStream {
    type Item = Result<Vec<u8>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

impl ExportStream {
    /// Runs `export` on a blocking thread of the current Tokio runtime,
    /// writing into a new stream's chunks, and returns the stream. An error
    /// of `export` becomes the stream's last item, unless it is only that
    /// the consumer went away.
    pub(crate) fn spawn_blocking(
        export: impl FnOnce(&mut dyn Write) -> Result<u64> + Send + 'static,
    ) -> Self {
        let (sender, stream) = Self::channel();
        let spawned = tokio::runtime::Handle::try_current().map(|runtime| {
            runtime.spawn_blocking(move || {
                let mut out = sender.writer();
                let result = export(&mut out).and_then(|_| out.flush().map_err(io_error));
                if let Err(err) = result {
                    let gone = matches!(
                        &err,
                        StoreError::Export { source } if source.kind() == io::ErrorKind::BrokenPipe
                    );
                    if !gone {
                        sender.blocking_send(Err(err));
                    }
                }
            })
        });
        match spawned {
            Ok(_) => stream,
            Err(err) => Self::failed(StoreError::Task {
                detail: format!("export needs a tokio runtime: {err}"),
            }),
        }
    }
}

/// Rows read per page during an export.
const EXPORT_PAGE: u32 = 1000;

/// Writes an export of at most `limit` events (all when `None`) to `out`
/// in `format`, one page at a time: `next_page(after, limit, encoder)`
/// encodes up to `limit` events after the cursor `after` and returns the
/// cursor of the last one when more follow. Memory stays constant whatever
/// the number of events. Returns how many were written.
pub(crate) fn export_pages(
    format: ExportFormat,
    limit: Option<u64>,
    out: &mut dyn Write,
    mut next_page: impl FnMut(
        Option<Cursor>,
        u32,
        &mut ExportEncoder<&mut dyn Write>,
    ) -> Result<Option<Cursor>>,
) -> Result<u64> {
    let mut encoder = ExportEncoder::new(format, out)?;
    let mut cursor = None;
    let mut remaining = limit.unwrap_or(u64::MAX);
    while remaining > 0 {
        let page = u32::try_from(remaining.min(u64::from(EXPORT_PAGE))).unwrap_or(EXPORT_PAGE);
        let next = next_page(cursor, page.min(MAX_PAGE_LIMIT), &mut encoder)?;
        remaining = remaining.saturating_sub(u64::from(page));
        match next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let written = encoder.written();
    encoder.finish()?;
    Ok(written)
}

impl ExportSender {
    /// Sends a chunk from a blocking thread; `false` once the consumer is
    /// gone.
    pub fn blocking_send(&self, chunk: Result<Vec<u8>>) -> bool {
        self.tx.blocking_send(chunk).is_ok()
    }

    /// A writer that buffers into chunks of [`EXPORT_CHUNK_BYTES`] and sends
    /// them (blocking). Writing fails with `BrokenPipe` once the consumer is
    /// gone.
    pub fn writer(&self) -> ChunkWriter<'_> {
        ChunkWriter {
            sender: self,
            buf: Vec::with_capacity(EXPORT_CHUNK_BYTES + 1024),
        }
    }
}

/// An [`io::Write`] that forwards ~64 KiB chunks to an [`ExportStream`].
#[derive(Debug)]
pub struct ChunkWriter<'a> {
    sender: &'a ExportSender,
    buf: Vec<u8>,
}

impl ChunkWriter<'_> {
    fn send_buffer(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(EXPORT_CHUNK_BYTES + 1024));
        if self.sender.blocking_send(Ok(chunk)) {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the export's consumer went away",
            ))
        }
    }
}

impl Write for ChunkWriter<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= EXPORT_CHUNK_BYTES {
            self.send_buffer()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_buffer()
    }
}

fn io_error(err: io::Error) -> StoreError {
    StoreError::Export {
        source: Arc::new(err),
    }
}

fn csv_error(err: csv::Error) -> StoreError {
    let io = match err.into_kind() {
        csv::ErrorKind::Io(io) => io,
        other => io::Error::other(format!("{other:?}")),
    };
    io_error(io)
}

fn json_error(err: &serde_json::Error) -> StoreError {
    StoreError::Encode {
        what: "event as JSON",
        detail: err.to_string(),
    }
}

/// Encodes events one by one into `W` in an [`ExportFormat`].
///
/// Call [`ExportEncoder::finish`] at the end: it closes the JSON array and
/// flushes.
#[derive(Debug)]
pub struct ExportEncoder<W: Write> {
    inner: Encoder<W>,
    written: u64,
}

#[derive(Debug)]
enum Encoder<W: Write> {
    NdJson(W),
    JsonArray(W),
    Csv(Box<csv::Writer<W>>),
}

impl<W: Write> ExportEncoder<W> {
    /// Starts an export (writes the CSV header or the opening bracket).
    pub fn new(format: ExportFormat, mut out: W) -> Result<Self> {
        let inner = match format {
            ExportFormat::NdJson => Encoder::NdJson(out),
            ExportFormat::JsonArray => {
                out.write_all(b"[").map_err(io_error)?;
                Encoder::JsonArray(out)
            }
            ExportFormat::Csv => {
                let mut writer = csv::WriterBuilder::new()
                    .buffer_capacity(16 * 1024)
                    .from_writer(out);
                writer.write_record(CSV_HEADER).map_err(csv_error)?;
                Encoder::Csv(Box::new(writer))
            }
        };
        Ok(Self { inner, written: 0 })
    }

    /// Appends one event.
    pub fn write(&mut self, event: &Event) -> Result<()> {
        match &mut self.inner {
            Encoder::NdJson(out) => {
                serde_json::to_writer(&mut *out, event).map_err(|err| json_error(&err))?;
                out.write_all(b"\n").map_err(io_error)?;
            }
            Encoder::JsonArray(out) => {
                if self.written > 0 {
                    out.write_all(b",").map_err(io_error)?;
                }
                serde_json::to_writer(&mut *out, event).map_err(|err| json_error(&err))?;
            }
            Encoder::Csv(writer) => {
                let id = event.id.to_string();
                let ts = event.ts.to_string();
                let job = event.job_id.map(|job| job.to_string()).unwrap_or_default();
                let data = if event.data.is_null() {
                    String::new()
                } else {
                    serde_json::to_string(&event.data).map_err(|err| json_error(&err))?
                };
                writer
                    .write_record([
                        id.as_str(),
                        ts.as_str(),
                        event.kind.as_str(),
                        event.severity.as_str(),
                        event.repo.as_ref().map_or("", |repo| repo.as_str()),
                        event.pipeline.as_deref().unwrap_or(""),
                        job.as_str(),
                        event.message.as_str(),
                        data.as_str(),
                    ])
                    .map_err(csv_error)?;
            }
        }
        self.written += 1;
        Ok(())
    }

    /// How many events were written.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Ends the export and returns the destination, flushed.
    pub fn finish(self) -> Result<W> {
        match self.inner {
            Encoder::NdJson(mut out) => {
                out.flush().map_err(io_error)?;
                Ok(out)
            }
            Encoder::JsonArray(mut out) => {
                out.write_all(b"]").map_err(io_error)?;
                out.flush().map_err(io_error)?;
                Ok(out)
            }
            Encoder::Csv(writer) => (*writer)
                .into_inner()
                .map_err(|err| io_error(io::Error::other(err.error().to_string())))
                .and_then(|mut out| {
                    out.flush().map_err(io_error)?;
                    Ok(out)
                }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use orchex_core::EventKind;

    #[test]
    fn json_array_is_valid_json() {
        let events = [
            Event::new(EventKind::JobQueued, "a"),
            Event::new(EventKind::JobStarted, "b"),
        ];
        let mut encoder = ExportEncoder::new(ExportFormat::JsonArray, Vec::new()).unwrap();
        for event in &events {
            encoder.write(event).unwrap();
        }
        let bytes = encoder.finish().unwrap();
        let back: Vec<Event> = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back, events);

        let empty = ExportEncoder::new(ExportFormat::JsonArray, Vec::new())
            .unwrap()
            .finish()
            .unwrap();
        assert_eq!(empty, b"[]");
    }

    #[test]
    fn ndjson_has_one_event_per_line() {
        let event = Event::new(EventKind::Error, "line one\nline two");
        let mut encoder = ExportEncoder::new(ExportFormat::NdJson, Vec::new()).unwrap();
        encoder.write(&event).unwrap();
        encoder.write(&event).unwrap();
        let text = String::from_utf8(encoder.finish().unwrap()).unwrap();
        assert_eq!(text.lines().count(), 2);
        let back: Event = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(back, event);
    }

    #[tokio::test]
    async fn failed_stream_yields_its_error() {
        let stream = ExportStream::failed(StoreError::Closed);
        assert!(matches!(
            stream.collect_bytes().await,
            Err(StoreError::Closed)
        ));
    }
}
