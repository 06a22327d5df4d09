//! What the `kiln` command line adds to the engine: plots of training curves (also used by the
//! examples). The engine itself is the `kiln` crate.

pub mod plot;
