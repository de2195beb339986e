//! The sans-IO connection engine: channels, limits, timeouts, flow control.
pub mod buffers;
pub mod channel;
pub mod clock;
pub mod executor;
pub mod server;
pub mod settings;
pub mod transport;

pub use clock::{Clock, Timestamp};
pub use executor::{AppEvent, AppHead, Body, Chunk, Executor, HeaderList, Job, ReqId};
pub use server::Engine;
pub use transport::{Accepted, Close, ConnId, ListenerId, Peer, Transport, Want};
