//! `rcraft-storage`: segmented mmap write-ahead log, hard state and snapshot files.
