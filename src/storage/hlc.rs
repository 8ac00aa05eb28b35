//! The hybrid logical clock that versions every item: physical milliseconds in the high
//! bits, a logical counter below them, the node id in the lowest byte.
