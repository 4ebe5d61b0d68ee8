//! The battery data layer (DESIGN.md §1): canonical schema, vendor readers, derived columns,
//! the synthetic-cell generator, windows and splits.

pub mod anchor;
pub mod canonical;
pub mod cells;
pub mod current_sign;
pub mod derive;
pub mod formats;
pub mod ingest;
pub mod inspect;
pub mod ocv;
pub mod raw;
pub mod schema;
pub mod synth;
pub mod windows;
