//! OCI image layouts (placeholder, being written).
