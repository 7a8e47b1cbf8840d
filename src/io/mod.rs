//! What people read: plan reports and figures (and, re-exported from the ground floor, files
//! written atomically and their formats).

pub mod plot;
pub(crate) mod report;

pub use crate::files::*;
