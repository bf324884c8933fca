//! End to end: a real `airlift-server` (in-process) and the real
//! `airlift-agent` binary, with a harness playing the bootloader between
//! the agent's runs.

mod device_truth;
mod harness;
mod laptop;
use airlift_server::testing as server;
mod network;
mod offload;
mod push;
mod retrieval;
mod shadow;
mod trust;
mod updates;
