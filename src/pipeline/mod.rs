//! The staged pipeline runner (DESIGN.md §8).
