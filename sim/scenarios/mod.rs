//! One module per engine mechanism; each test names the behaviour it proves.
mod canary;
mod continue_100;
mod keepalive;
mod limit;
mod partition;
mod pipelining;
mod reset;
mod slow_reader;
mod slowloris;
mod spill;
