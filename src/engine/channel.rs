//! One connection: read -> parse -> queue -> dispatch -> respond -> keep-alive.
//!
//! A channel runs one request at a time and answers strictly in order. It
//! never touches a socket or a clock itself: every method gets a [`Ctx`] with
//! the transport, the executor, the current time and the settings.
use std::collections::VecDeque;
use std::io::{self, ErrorKind};
use std::sync::Arc;

use log::{info, warn};

use crate::engine::buffers::{BodyBuffer, OutBuffer};
use crate::engine::clock::Timestamp;
use crate::engine::executor::{AppEvent, AppHead, Body, Chunk, Executor, Job, ReqId};
use crate::engine::settings::EngineSettings;
use crate::engine::transport::{ConnId, ListenerId, Peer, Transport, Want};
use crate::http::chunked::{ChunkedDecoder, Decoded};
use crate::http::errors::{error_response, internal_error, HttpError};
use crate::http::parser::{parse_head_from, Parsed};
use crate::http::request::{BodyFraming, RequestHead, Version};
use crate::http::response::{chunk_header, write_response_head, Framing, RequestInfo, LAST_CHUNK};

const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Everything a channel may use while handling one event.
pub struct Ctx<'a, T: Transport, E: Executor> {
    pub io: &'a mut T,
    pub exec: &'a mut E,
    pub now: Timestamp,
    pub date: &'a str,
    pub cfg: &'a EngineSettings,
    /// Source of request ids (see [`ReqId::new`]).
    pub next_seq: &'a mut u64,
    /// Where response heads are built (reused: one per response otherwise).
    pub head_buf: &'a mut Vec<u8>,
}

/// The most room the shared head buffer keeps between responses.
const HEAD_BUF_KEEP: usize = 64 * 1024;

/// What the read side is doing.
enum Reading {
    /// Waiting for (more of) a request head.
    Head,
    /// A valid head was read; its body is arriving.
    Body(Box<Incoming>),
    /// A bad request was queued: nothing more is read or parsed.
    Done,
}

/// A request whose body is still arriving.
struct Incoming {
    head: RequestHead,
    body: BodyBuffer,
    progress: BodyProgress,
    continue_due: bool,
}

enum BodyProgress {
    Remaining(u64),
    Chunked(ChunkedDecoder),
}

/// A fully received request, or a refusal, waiting for its turn.
enum Queued {
    Request { head: RequestHead, body: Body },
    Refused(HttpError),
}

/// The response being produced for the request the app is running.
struct Active {
    req: ReqId,
    info: RequestInfo,
    /// The request target, for log messages (see `Active::path`).
    target: Arc<[u8]>,
    /// From `AppEvent::Head`, until the first body byte makes us send it.
    pending_head: Option<AppHead>,
    framing: Option<Framing>,
    keep_alive: bool,
    /// Body bytes written so far (payload only).
    body_sent: u64,
    /// App payload bytes accepted but not yet granted back as credit.
    ungranted: u64,
    warned_surplus: bool,
    /// When the app must have finished (`request_timeout`).
    deadline: Option<Timestamp>,
}

impl Active {
    /// The target as log messages show it, made only when one is written.
    fn path(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.target)
    }
}

/// Why a channel ended; decides FIN versus RST and what to log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// Still open.
    Open,
    /// Finished: close with FIN once the output is flushed.
    Finished,
    /// The peer went away or the socket failed: close now.
    Broken,
}

pub struct Channel {
    pub id: ConnId,
    pub peer: Peer,
    pub listener: ListenerId,
    inbuf: Vec<u8>,
    /// How much of a partial head at the start of `inbuf` was already searched
    /// for its end, so a trickled head costs linear, not quadratic, time.
    scanned: usize,
    reading: Reading,
    queue: VecDeque<Queued>,
    active: Option<Active>,
    out: OutBuffer,
    pub last_activity: Timestamp,
    /// Since when the connection has been waiting for its next request head:
    /// its accept, or the end of its previous response. Eviction picks the
    /// oldest, so trickling bytes buys an idle client no protection, and a
    /// client that just connected is the last to go.
    pub waiting_since: Timestamp,
    /// The engine's accept round this connection was taken in: one taken in
    /// the current round has had no chance to send yet and is never evicted.
    pub accept_round: u64,
    close_when_flushed: bool,
    ending: Ending,
    want: Want,
    /// No request head has completed on this connection yet.
    fresh: bool,
    /// When the head being awaited must be complete (`header_timeout`).
    head_deadline: Option<Timestamp>,
    /// The deadline the engine's timer set currently holds for us.
    pub armed: Option<Timestamp>,
    /// The `request_timeout` entry the engine's timer set holds for us.
    pub request_armed: Option<(Timestamp, ReqId)>,
    /// The server is stopping: finish what was started, take nothing new.
    draining: bool,
}

impl Channel {
    pub fn new(
        id: ConnId,
        peer: Peer,
        listener: ListenerId,
        now: Timestamp,
        cfg: &EngineSettings,
    ) -> Self {
        Channel {
            id,
            peer,
            listener,
            inbuf: Vec::new(),
            scanned: 0,
            reading: Reading::Head,
            queue: VecDeque::new(),
            active: None,
            out: OutBuffer::new(cfg.outbuf_overflow),
            last_activity: now,
            waiting_since: now,
            accept_round: 0,
            close_when_flushed: false,
            ending: Ending::Open,
            // Transports register a new connection for reading (see `Transport::accept`).
            want: Want::READ,
            fresh: true,
            head_deadline: None,
            armed: None,
            request_armed: None,
            draining: false,
        }
    }

    pub fn ending(&self) -> Ending {
        self.ending
    }

    pub fn active_req(&self) -> Option<ReqId> {
        self.active.as_ref().map(|a| a.req)
    }

    /// No request queued or running: the idle sweep may close it.
    pub fn is_idle(&self) -> bool {
        self.active.is_none() && self.queue.is_empty()
    }

    /// Holds a place without work in progress: idle between requests, or
    /// still receiving a request head, with nothing left to send. Such a
    /// connection may be closed to make room under `connection_limit`.
    pub fn is_evictable(&self) -> bool {
        self.ending == Ending::Open
            && matches!(self.reading, Reading::Head)
            && self.is_idle()
            && self.out.is_empty()
            && !self.close_when_flushed
    }

    /// When the running request must have finished, if `request_timeout` is set.
    pub fn request_deadline(&self) -> Option<(Timestamp, ReqId)> {
        let active = self.active.as_ref()?;
        Some((active.deadline?, active.req))
    }

    /// The server is stopping gracefully: let the request in progress (or
    /// the one whose body is arriving) finish with `Connection: close`, and
    /// drop pipelined requests not yet started: the close tells their client
    /// they were not processed, so it may send them again elsewhere.
    pub fn begin_drain(&mut self) {
        self.draining = true;
        if let Some(active) = &mut self.active {
            if active.framing.is_none() {
                active.info.close_requested = true;
            }
            self.queue.clear();
            if !matches!(self.reading, Reading::Done) {
                self.reading = Reading::Done;
                self.inbuf = Vec::new();
            }
        } else if self.is_between_requests() {
            // Nothing started: done as soon as pending output is flushed.
            self.close_after_output();
        }
        // Otherwise a request is on its way (a new connection's first one,
        // a head or a body partly received): it is read, run and answered
        // with `Connection: close`, within `graceful_timeout`. Closing now
        // would reset a client whose request is already in flight.
    }

    /// Served at least one request and holds no byte of the next: the one
    /// kind of connection a graceful stop closes at once (clients expect an
    /// idle keep-alive connection to close; RFC 9112 §9.3.1).
    pub fn is_between_requests(&self) -> bool {
        matches!(self.reading, Reading::Head)
            && !self.fresh
            && self.inbuf.is_empty()
            && self.is_idle()
    }

    /// When this connection must have delivered its request head.
    pub fn head_deadline(&self) -> Option<Timestamp> {
        self.head_deadline
    }

    pub fn pending_output(&self) -> u64 {
        self.out.len()
    }

    pub fn output_in_memory(&self) -> usize {
        self.out.memory_len()
    }

    /// Do all the work the channel can do now: read, parse, dispatch, write.
    /// Called after every event that concerns this connection.
    pub fn pump<T: Transport, E: Executor>(&mut self, cx: &mut Ctx<'_, T, E>, scratch: &mut [u8]) {
        loop {
            if self.ending != Ending::Open {
                return;
            }
            self.flush(cx);
            let got = self.read_some(cx, scratch);
            self.process_input(cx);
            self.dispatch_next(cx);
            if !got {
                break;
            }
        }
        self.flush(cx);
        if self.ending == Ending::Open && self.close_when_flushed && self.out.is_empty() {
            self.ending = Ending::Finished;
        }
        if self.ending == Ending::Open {
            self.update_interest(cx);
            self.refresh_head_deadline(cx.now, cx.cfg);
        }
    }

    /// `header_timeout` runs while the server waits on the client for a head:
    /// from the accept for the first request, from the first byte for later
    /// ones (an idle keep-alive connection is `channel_timeout`'s business).
    /// It never runs while a request is queued or running, or while the
    /// previous response is still draining, so neither a slow app nor a slow
    /// download gets a pipelined client's next head timed out.
    fn refresh_head_deadline(&mut self, now: Timestamp, cfg: &EngineSettings) {
        let awaiting_head = matches!(self.reading, Reading::Head)
            && self.line_is_clear()
            && self.out.is_empty()
            && !self.close_when_flushed;
        if !awaiting_head {
            self.head_deadline = None;
        } else if self.head_deadline.is_none() && (self.fresh || !self.inbuf.is_empty()) {
            self.head_deadline = Some(now + cfg.header_timeout);
        }
    }

    /// Waitress's `readable()`: read only when no response is pending and
    /// at most `channel_request_lookahead` requests are waiting.
    fn readable(&self, cfg: &EngineSettings) -> bool {
        let waiting = self.queue.len() + usize::from(self.active.is_some());
        !self.close_when_flushed
            && matches!(self.reading, Reading::Head | Reading::Body(_))
            && self.out.is_empty()
            && waiting <= cfg.channel_request_lookahead
    }

    /// One read if the channel is readable. Returns whether bytes arrived.
    fn read_some<T: Transport, E: Executor>(
        &mut self,
        cx: &mut Ctx<'_, T, E>,
        scratch: &mut [u8],
    ) -> bool {
        if !self.readable(cx.cfg) {
            return false;
        }
        let result = match self.read_body_direct(cx) {
            Some(result) => result,
            None => cx.io.read(self.id, scratch).inspect(|&n| {
                self.inbuf
                    .extend_from_slice(&scratch[..n.min(scratch.len())]);
            }),
        };
        match result {
            Ok(0) => {
                self.broken(cx, None);
                false
            }
            Ok(_) => {
                self.last_activity = cx.now;
                true
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => false,
            Err(e) if e.kind() == ErrorKind::Interrupted => true,
            Err(e) => {
                self.broken(cx, Some(e));
                false
            }
        }
    }

    /// With nothing else buffered, the rest of a body of known length is
    /// read straight into its buffer, skipping two copies (scratch, input
    /// buffer) and `recv_bytes`-sized reads. None when that does not apply.
    fn read_body_direct<T: Transport, E: Executor>(
        &mut self,
        cx: &mut Ctx<'_, T, E>,
    ) -> Option<io::Result<usize>> {
        if !self.inbuf.is_empty() {
            return None;
        }
        let Reading::Body(incoming) = &mut self.reading else {
            return None;
        };
        let BodyProgress::Remaining(left) = &mut incoming.progress else {
            return None;
        };
        let want = usize::try_from(*left).ok()?;
        let id = self.id;
        let result = incoming.body.fill_with(want, |buf| cx.io.read(id, buf))?;
        if let Ok(n) = result {
            // `fill_with` keeps at most `want`; a transport that claims more
            // must not underflow the count.
            *left = left.saturating_sub(n as u64);
            if *left == 0 && n > 0 {
                self.end_body();
            }
        }
        Some(result)
    }

    /// Parse every complete request in the input buffer.
    fn process_input<T: Transport, E: Executor>(&mut self, cx: &mut Ctx<'_, T, E>) {
        let mut pos = 0;
        while pos < self.inbuf.len() && self.ending == Ending::Open {
            let used = match &self.reading {
                Reading::Head => self.parse_one_head(cx, pos),
                Reading::Body(_) => self.take_body(pos),
                Reading::Done => Some(self.inbuf.len() - pos),
            };
            match used {
                Some(0) | None => break,
                Some(n) => pos += n,
            }
        }
        self.inbuf.drain(..pos.min(self.inbuf.len()));
        if matches!(self.reading, Reading::Done) {
            self.inbuf = Vec::new();
        }
    }

    /// Returns the bytes consumed, or None when more input is needed.
    fn parse_one_head<T: Transport, E: Executor>(
        &mut self,
        cx: &mut Ctx<'_, T, E>,
        pos: usize,
    ) -> Option<usize> {
        let scanned = std::mem::take(&mut self.scanned);
        match parse_head_from(&self.inbuf[pos..], &cx.cfg.limits, scanned) {
            Ok(Parsed::Incomplete) => {
                // The partial head moves to the front of `inbuf` when the
                // consumed bytes are drained: same bytes, same start.
                self.scanned = self.inbuf.len() - pos;
                None
            }
            Ok(Parsed::Skip(n)) => Some(n),
            Ok(Parsed::Head { head, consumed }) => {
                self.start_request(cx, head);
                Some(consumed)
            }
            Err(err) => {
                self.refuse(err);
                Some(self.inbuf.len() - pos)
            }
        }
    }

    fn start_request<T: Transport, E: Executor>(
        &mut self,
        cx: &mut Ctx<'_, T, E>,
        head: RequestHead,
    ) {
        self.fresh = false;
        let progress = match head.framing {
            BodyFraming::None => {
                self.queue.push_back(Queued::Request {
                    head,
                    body: Body::Empty,
                });
                return;
            }
            BodyFraming::Length(n) => BodyProgress::Remaining(n),
            BodyFraming::Chunked => {
                BodyProgress::Chunked(ChunkedDecoder::new(cx.cfg.limits.max_body))
            }
        };
        // Decision Q4: a 100 only for a valid head that announces a body;
        // behind earlier requests it waits so responses stay in order.
        let mut continue_due = head.expect_continue;
        if continue_due && self.line_is_clear() {
            self.send_continue(cx);
            continue_due = false;
        }
        self.reading = Reading::Body(Box::new(Incoming {
            head,
            body: BodyBuffer::new(cx.cfg.inbuf_overflow),
            progress,
            continue_due,
        }));
    }

    fn line_is_clear(&self) -> bool {
        self.active.is_none() && self.queue.is_empty()
    }

    fn send_continue<T: Transport, E: Executor>(&mut self, cx: &mut Ctx<'_, T, E>) {
        if let Err(e) = self.out.push(CONTINUE) {
            self.broken(cx, Some(e));
        }
    }

    /// Feed buffered bytes to the body being received.
    fn take_body(&mut self, pos: usize) -> Option<usize> {
        let Reading::Body(incoming) = &mut self.reading else {
            return None;
        };
        let available = self.inbuf.len() - pos;
        let (used, finished) = match feed_body(incoming, &self.inbuf[pos..]) {
            Ok(step) => step,
            Err(err) => {
                self.refuse(err);
                return Some(available);
            }
        };
        if finished {
            self.end_body();
        }
        Some(used)
    }

    /// The body being read is complete: queue its request, read heads again.
    fn end_body(&mut self) {
        if let Reading::Body(incoming) = std::mem::replace(&mut self.reading, Reading::Head) {
            self.finish_body(*incoming);
        }
    }

    fn finish_body(&mut self, incoming: Incoming) {
        // A 100 still owed is dropped: the body is already here (Waitress
        // sends none in that case either).
        let Incoming {
            mut head,
            body,
            progress,
            ..
        } = incoming;
        if let BodyProgress::Chunked(decoder) = &progress {
            set_content_length(&mut head, decoder.decoded_len());
        }
        match body.finish() {
            Ok(body) => self.queue.push_back(Queued::Request { head, body }),
            Err(e) => {
                warn!(target: "maitre", "could not buffer request body: {e}");
                self.refuse(internal_error(None, head.version));
            }
        }
    }

    /// Queue a refusal; nothing after it is read or answered.
    fn refuse(&mut self, err: HttpError) {
        self.queue.push_back(Queued::Refused(err));
        self.reading = Reading::Done;
    }

    /// Start the next queued request if none is running.
    fn dispatch_next<T: Transport, E: Executor>(&mut self, cx: &mut Ctx<'_, T, E>) {
        while self.active.is_none() && !self.close_when_flushed && self.ending == Ending::Open {
            let Some(next) = self.queue.pop_front() else {
                self.release_waiting_continue(cx);
                return;
            };
            match next {
                Queued::Refused(err) => self.answer_error(cx, &err),
                Queued::Request { head, body } => self.run(cx, head, body),
            }
        }
    }

    /// A body still arriving behind finished requests gets its 100 now.
    fn release_waiting_continue<T: Transport, E: Executor>(&mut self, cx: &mut Ctx<'_, T, E>) {
        let due = match &mut self.reading {
            Reading::Body(incoming) if incoming.continue_due => {
                incoming.continue_due = false;
                true
            }
            _ => false,
        };
        if due {
            self.send_continue(cx);
        }
    }

    fn run<T: Transport, E: Executor>(
        &mut self,
        cx: &mut Ctx<'_, T, E>,
        head: RequestHead,
        body: Body,
    ) {
        *cx.next_seq += 1;
        let req = ReqId::new(*cx.next_seq, self.id);
        let mut info = RequestInfo::of(&head);
        info.close_requested |= self.draining;
        self.active = Some(Active {
            req,
            info,
            target: head.target.clone(),
            pending_head: None,
            framing: None,
            keep_alive: true,
            body_sent: 0,
            ungranted: 0,
            warned_surplus: false,
            deadline: cx.cfg.request_timeout.map(|limit| cx.now + limit),
        });
        cx.exec.dispatch(Job {
            req,
            conn: self.id,
            listener: self.listener,
            peer: self.peer.clone(),
            head,
            body,
        });
    }

    /// Answer with an error and close once it is flushed.
    fn answer_error<T: Transport, E: Executor>(&mut self, cx: &mut Ctx<'_, T, E>, err: &HttpError) {
        let bytes = error_response(err, cx.cfg.ident.as_deref(), cx.date);
        self.close_after_output();
        if let Err(e) = self.out.push_vec(bytes) {
            self.broken(cx, Some(e));
        }
    }

    /// Route one application event for this channel's running request.
    pub fn on_app_event<T: Transport, E: Executor>(
        &mut self,
        cx: &mut Ctx<'_, T, E>,
        ev: AppEvent,
    ) {
        if self.active_req() != Some(ev.req()) || self.ending != Ending::Open {
            return;
        }
        let result = match ev {
            AppEvent::Head { head, .. } => {
                if let Some(active) = &mut self.active {
                    active.pending_head = Some(head);
                }
                Ok(())
            }
            AppEvent::Data { bytes, .. } => self.app_data(cx, bytes),
            AppEvent::File {
                file, offset, len, ..
            } => self.app_file(cx, file, offset, len),
            AppEvent::Done { .. } => self.app_done(cx),
            AppEvent::Complete { req, head, body } => {
                // Exactly the three events it stands for, each routed as if
                // it came alone (a refused head ends the request early).
                self.on_app_event(cx, AppEvent::Head { req, head });
                self.on_app_event(cx, AppEvent::Data { req, bytes: body });
                self.on_app_event(cx, AppEvent::Done { req });
                return;
            }
            AppEvent::Failed { detail, .. } => {
                self.app_failed(cx, detail);
                Ok(())
            }
        };
        if let Err(e) = result {
            self.broken(cx, Some(e));
        }
    }

    /// Send the head if it has not gone yet. Returns false when the app's
    /// head was unacceptable (a 500 has been queued instead).
    fn ensure_head<T: Transport, E: Executor>(
        &mut self,
        cx: &mut Ctx<'_, T, E>,
    ) -> io::Result<bool> {
        let Some(active) = &mut self.active else {
            return Ok(false);
        };
        if active.framing.is_some() {
            return Ok(true);
        }
        let Some(app_head) = active.pending_head.take() else {
            // Body before start_response: the worker reports that as Failed.
            return Ok(false);
        };
        cx.head_buf.clear();
        let ident = cx.cfg.ident.as_deref();
        match write_response_head(&active.info, &app_head, ident, cx.date, cx.head_buf) {
            Ok(head) => {
                active.framing = Some(head.framing);
                active.keep_alive = head.keep_alive;
                let pushed = self.out.push(cx.head_buf);
                if cx.head_buf.capacity() > HEAD_BUF_KEEP {
                    *cx.head_buf = Vec::new(); // a huge head once is no reason to keep its room
                }
                pushed?;
                Ok(true)
            }
            Err(reason) => {
                warn!(target: "maitre", "Exception while serving {}: {reason}", active.path());
                let version = active.info.version;
                self.fail_before_head(cx, internal_error(None, version));
                Ok(false)
            }
        }
    }

    fn app_data<T: Transport, E: Executor>(
        &mut self,
        cx: &mut Ctx<'_, T, E>,
        bytes: Chunk,
    ) -> io::Result<()> {
        if bytes.is_empty() || !self.ensure_head(cx)? {
            return Ok(());
        }
        let Some(active) = &mut self.active else {
            return Ok(());
        };
        let take = admit(active, cx.exec, bytes.len() as u64);
        if take == 0 {
            return Ok(());
        }
        match active.framing {
            Some(Framing::Chunked) => {
                let mut size_line = Vec::with_capacity(12);
                chunk_header(bytes.len(), &mut size_line);
                self.out.push(&size_line)?;
                self.out.push_chunk(bytes)?;
                self.out.push(b"\r\n")
            }
            _ if take < bytes.len() as u64 => self.out.push(&bytes.as_slice()[..take as usize]),
            _ => {
                let written = self.out.push_chunk_writing(bytes, cx.io, self.id)?;
                if written > 0 {
                    self.last_activity = cx.now;
                    self.grant_credit(cx);
                }
                Ok(())
            }
        }
    }

    fn app_file<T: Transport, E: Executor>(
        &mut self,
        cx: &mut Ctx<'_, T, E>,
        file: std::fs::File,
        offset: u64,
        len: u64,
    ) -> io::Result<()> {
        if len == 0 || !self.ensure_head(cx)? {
            return Ok(());
        }
        let Some(active) = &mut self.active else {
            return Ok(());
        };
        let take = admit(active, cx.exec, len);
        if take == 0 {
            return Ok(());
        }
        if active.framing == Some(Framing::Chunked) {
            let mut prefix = Vec::with_capacity(12);
            chunk_header(take as usize, &mut prefix);
            self.out.push_vec(prefix)?;
            self.out.push_file(file, offset, take);
            self.out.push(b"\r\n")
        } else {
            self.out.push_file(file, offset, take);
            Ok(())
        }
    }

    fn app_done<T: Transport, E: Executor>(&mut self, cx: &mut Ctx<'_, T, E>) -> io::Result<()> {
        if !self.ensure_head(cx)? {
            if self
                .active
                .as_ref()
                .is_some_and(|a| a.framing.is_none() && !self.close_when_flushed)
            {
                // Done without start_response: nothing sensible was produced.
                self.app_failed(cx, None);
            }
            return Ok(());
        }
        let Some(active) = self.active.take() else {
            return Ok(());
        };
        let mut keep_alive = active.keep_alive;
        match active.framing {
            Some(Framing::Chunked) => self.out.push(LAST_CHUNK)?,
            Some(Framing::Length(n)) if active.body_sent < n => {
                warn!(
                    target: "maitre",
                    "application returned too few bytes ({}) for specified Content-Length ({n}) via app_iter",
                    active.body_sent
                );
                keep_alive = false;
            }
            Some(Framing::CloseDelimited) => keep_alive = false,
            _ => {}
        }
        self.last_activity = cx.now;
        self.waiting_since = cx.now;
        if !keep_alive || self.draining {
            self.close_after_output();
        }
        Ok(())
    }

    /// The running request `req` outlived `request_timeout`: answer 503 if its
    /// head has not gone out, else cut the response (the close tells the
    /// client it is incomplete). The app is told to stop either way.
    pub fn time_out<T: Transport, E: Executor>(&mut self, cx: &mut Ctx<'_, T, E>, req: ReqId) {
        let Some(active) = self.active.as_ref().filter(|a| a.req == req) else {
            return;
        };
        let limit = cx.cfg.request_timeout.unwrap_or_default().as_secs();
        warn!(
            target: "maitre",
            "request timed out after {limit} s (request_timeout) while serving {}",
            active.path()
        );
        if active.framing.is_none() {
            let detail =
                format!("The application did not answer within request_timeout ({limit} s)");
            let err = HttpError::new(503, detail, active.info.version);
            self.active = None;
            self.answer_error(cx, &err);
        } else {
            self.active = None;
            self.close_after_output();
        }
        cx.exec.timed_out(req);
    }

    /// The app raised: a 500 if nothing was sent yet, else cut the response.
    fn app_failed<T: Transport, E: Executor>(
        &mut self,
        cx: &mut Ctx<'_, T, E>,
        detail: Option<String>,
    ) {
        let Some(active) = &self.active else { return };
        if active.framing.is_none() {
            let err = internal_error(detail.as_deref(), active.info.version);
            self.fail_before_head(cx, err);
        } else {
            self.active = None;
            self.close_after_output();
        }
    }

    /// Answer a 500 in place of the app's response. The app may still be
    /// running (its head was refused), so it is told to stop.
    fn fail_before_head<T: Transport, E: Executor>(
        &mut self,
        cx: &mut Ctx<'_, T, E>,
        err: HttpError,
    ) {
        if let Some(active) = self.active.take() {
            cx.exec.cancel(active.req);
        }
        self.answer_error(cx, &err);
    }

    /// Read and start nothing more; close once the output is flushed.
    fn close_after_output(&mut self) {
        self.close_when_flushed = true;
        self.queue.clear();
        self.reading = Reading::Done;
    }

    /// Write what can be written; grant the app credit for what left.
    fn flush<T: Transport, E: Executor>(&mut self, cx: &mut Ctx<'_, T, E>) {
        if self.out.is_empty() || self.ending != Ending::Open {
            return;
        }
        match self.out.write_to(cx.io, self.id) {
            Ok(0) => {}
            Ok(_) => {
                self.last_activity = cx.now;
                self.grant_credit(cx);
            }
            Err(e) => self.broken(cx, Some(e)),
        }
    }

    /// Credit is the app payload no longer waiting in the output buffer, so
    /// an app paused at `outbuf_high_watermark` resumes as the client reads.
    fn grant_credit<T: Transport, E: Executor>(&mut self, cx: &mut Ctx<'_, T, E>) {
        let pending = self.out.len();
        if let Some(active) = &mut self.active {
            let free = active.ungranted.saturating_sub(pending);
            if free > 0 {
                active.ungranted -= free;
                cx.exec.grant(active.req, free as usize);
            }
        }
    }

    /// The peer is gone or the socket failed: stop everything now.
    pub fn broken<T: Transport, E: Executor>(
        &mut self,
        cx: &mut Ctx<'_, T, E>,
        err: Option<io::Error>,
    ) {
        if self.ending != Ending::Open {
            return;
        }
        self.ending = Ending::Broken;
        if let Some(active) = self.active.take() {
            info!(target: "maitre", "Client disconnected while serving {}", active.path());
            cx.exec.cancel(active.req);
        }
        if let (Some(e), true) = (err, cx.cfg.log_socket_errors) {
            if !is_disconnect(&e) {
                warn!(target: "maitre", "Socket error: {e}");
            }
        }
    }

    /// End the channel from outside (idle sweep, shutdown): cancel the
    /// running request; the caller closes the socket.
    pub fn shut<E: Executor>(&mut self, exec: &mut E) {
        if let Some(active) = self.active.take() {
            exec.cancel(active.req);
        }
        self.ending = Ending::Broken;
    }

    fn update_interest<T: Transport, E: Executor>(&mut self, cx: &mut Ctx<'_, T, E>) {
        let want = Want {
            read: self.readable(cx.cfg),
            write: !self.out.is_empty(),
        };
        if want != self.want {
            self.want = want;
            cx.io.set_interest(self.id, want);
        }
    }
}

/// Accept `len` new body bytes from the app: returns how many go out under
/// the response framing. Bytes that must be dropped (HEAD, 1xx/204/304,
/// surplus past Content-Length) are granted back at once, or an app
/// streaming them would wait for credit that never comes.
fn admit<E: Executor>(active: &mut Active, exec: &mut E, len: u64) -> u64 {
    let take = body_allowance(active, len);
    if take < len {
        exec.grant(active.req, (len - take) as usize);
    }
    active.ungranted += take;
    active.body_sent += take;
    take
}

/// How many of `len` new body bytes the response framing lets through.
fn body_allowance(active: &mut Active, len: u64) -> u64 {
    match active.framing {
        None | Some(Framing::NoBody) => 0,
        Some(Framing::Length(limit)) => {
            let take = len.min(limit.saturating_sub(active.body_sent));
            if take < len && !active.warned_surplus {
                active.warned_surplus = true;
                warn!(
                    target: "maitre",
                    "application-written content exceeded the number of bytes specified by Content-Length header ({limit})"
                );
            }
            take
        }
        Some(Framing::Chunked | Framing::CloseDelimited) => len,
    }
}

/// Move body bytes from `input` into the request's body buffer.
/// Returns (bytes consumed, body complete).
fn feed_body(incoming: &mut Incoming, input: &[u8]) -> Result<(usize, bool), HttpError> {
    let store = |body: &mut BodyBuffer, data: &[u8], version: Version| {
        body.append(data).map_err(|e| {
            warn!(target: "maitre", "could not buffer request body: {e}");
            internal_error(None, version)
        })
    };
    let version = incoming.head.version;
    match &mut incoming.progress {
        BodyProgress::Remaining(left) => {
            let take = (*left).min(input.len() as u64) as usize;
            store(&mut incoming.body, &input[..take], version)?;
            *left -= take as u64;
            Ok((take, *left == 0))
        }
        BodyProgress::Chunked(decoder) => {
            let mut pos = 0;
            loop {
                let (used, step) = decoder.decode(&input[pos..])?;
                match step {
                    Decoded::Data(range) => {
                        store(
                            &mut incoming.body,
                            &input[pos + range.start..pos + range.end],
                            version,
                        )?;
                    }
                    Decoded::NeedMore => return Ok((pos + used, false)),
                    Decoded::Done => return Ok((pos + used, true)),
                }
                pos += used;
                if used == 0 {
                    return Ok((pos, false));
                }
            }
        }
    }
}

/// Chunked bodies reach the app with `CONTENT_LENGTH` set to the decoded size.
fn set_content_length(head: &mut RequestHead, len: u64) {
    let mut digits = [0u8; 20];
    let value = crate::http::response::decimal(len, &mut digits);
    head.headers.set("CONTENT_LENGTH", value.as_bytes());
}

fn is_disconnect(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::BrokenPipe
            | ErrorKind::UnexpectedEof
    )
}
