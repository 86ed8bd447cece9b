//! The I/O shell: tokio tasks at the edge that own sockets and feed the sans-IO
//! core. One task per call; a registry of bounded control senders; the routes
//! webhooks decided, waiting for their streams; engine links; nothing else
//! shared.

pub mod admission;
pub mod call_task;
pub mod capacity;
pub mod dashboard;
pub mod dialing;
pub mod engine_link;
pub mod parked;
pub mod recovery;
pub mod registry;
pub mod transport;
pub mod turn_pool;
pub mod udp_ports;
pub mod webrtc;
