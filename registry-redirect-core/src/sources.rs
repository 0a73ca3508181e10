//! Parsers for published client range files.
