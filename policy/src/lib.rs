//! Palisade policy (work in progress).
