//! DataFiles: `data://` files, folders, one-level and recursive listings, and
//! their change events (docs/STORAGE.md, section 2.3).
