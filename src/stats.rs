//! Per-thread counters with memcached's names, summed on demand.
