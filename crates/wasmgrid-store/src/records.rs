//! Records: versioned metadata records with revisions, compare-and-set and a
//! watch (docs/STORAGE.md, section 2.1).
