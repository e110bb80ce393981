//! Blobs: component bytes by digest and large file contents as streams
//! (docs/STORAGE.md, section 2.6).
