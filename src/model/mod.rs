//! The LBLM battery model (DESIGN.md §2).
