//! The subset of the settings the engine consults on every event, flattened
//! once from [`Config`] so the hot path reads plain fields.
use std::time::Duration;

use crate::config::Config;
use crate::http::parser::HeadLimits;

#[derive(Clone, Debug)]
pub struct EngineSettings {
    pub limits: HeadLimits,
    pub inbuf_overflow: usize,
    pub outbuf_overflow: usize,
    pub outbuf_high_watermark: usize,
    pub recv_bytes: usize,
    pub connection_limit: usize,
    pub cleanup_interval: Duration,
    pub channel_timeout: Duration,
    /// A request head must be complete this long after the connection opened
    /// (first request) or after its first byte (later requests).
    pub header_timeout: Duration,
    pub channel_request_lookahead: usize,
    pub log_socket_errors: bool,
    pub ident: Option<String>,
    /// The app must finish a request within this long (503 or cut after).
    pub request_timeout: Option<Duration>,
    /// How long a graceful stop waits for requests in progress.
    pub graceful_timeout: Duration,
    /// Start a graceful stop once this many requests were dispatched.
    pub max_requests: Option<u64>,
}

impl EngineSettings {
    pub fn from_config(cfg: &Config) -> Self {
        EngineSettings {
            limits: HeadLimits {
                max_header: cfg.max_request_header_size,
                max_body: cfg.max_request_body_size,
            },
            inbuf_overflow: cfg.inbuf_overflow,
            outbuf_overflow: cfg.outbuf_overflow,
            outbuf_high_watermark: cfg.outbuf_high_watermark,
            recv_bytes: cfg.recv_bytes.max(1),
            connection_limit: cfg.connection_limit.max(1),
            cleanup_interval: cfg.cleanup_interval,
            channel_timeout: cfg.channel_timeout,
            header_timeout: cfg.header_timeout,
            channel_request_lookahead: cfg.channel_request_lookahead,
            log_socket_errors: cfg.log_socket_errors,
            ident: cfg.ident.clone(),
            request_timeout: cfg.request_timeout,
            graceful_timeout: cfg.graceful_timeout,
            // The caller adds any jitter before the engine sees the setting.
            max_requests: (cfg.max_requests > 0).then_some(cfg.max_requests),
        }
    }
}
