//! The classic memcached text protocol parser (memcached 1.6.0–1.6.39 behaviour): one
//! pure function from buffered bytes to "need more" or "a request and the bytes it used".

use super::{ParseLimits, Request};

/// The outcome of looking at the front of a connection's read buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// No complete request yet; read more and call again with the grown buffer.
    Incomplete,
    /// The front `consumed` bytes make one request (its line plus any data block).
    Complete { req: Request<'a>, consumed: usize },
}

/// Parses the first request in `buf`.
pub fn parse<'a>(buf: &'a [u8], limits: &ParseLimits) -> Parsed<'a> {
    let _ = (buf, limits);
    Parsed::Incomplete
}

/// Iterates the keys of a validated `Request::Get` key list.
pub fn keys(list: &[u8]) -> impl Iterator<Item = &[u8]> {
    list.split(|&b| b == b' ').filter(|k| !k.is_empty())
}
