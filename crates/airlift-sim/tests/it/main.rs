//! End to end: a real `airlift-server` (in-process, or several server
//! processes behind a load balancer) and a simulated fleet of hundreds of
//! devices running the real agent against it.

use airlift_server::testing as server;
mod fleet;
mod instances;
mod rollback;
mod support;
