//! The StackShift server: a tonic gRPC API (`api`) over the domain engine (`engine`) over
//! sea-orm storage (`storage`), on embedded SQLite or PostgreSQL.

pub mod api;
pub mod engine;
pub mod failpoint;
pub mod http;
pub mod server;
pub mod storage;
pub mod telemetry;
