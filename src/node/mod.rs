//! The node's threads and their glue (DESIGN.md §3).
//!
//! - [`net`]: the network thread (mio event loop over the `rcraft-wire` protocol).

pub mod net;
