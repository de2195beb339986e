//! Deterministic network simulation of the engine over turmoil. (STUB)
