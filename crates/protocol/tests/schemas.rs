//! The JSON Schemas in `spec/schemas/` must match the HTTP body types (§5).
//! Run with `UPDATE_SCHEMAS=1` to rewrite them after a deliberate change.

use std::path::PathBuf;

#[test]
fn checked_in_schemas_are_current() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../spec/schemas");
    let update = std::env::var_os("UPDATE_SCHEMAS").is_some();
    let mut stale = Vec::new();
    for (file, schema) in confab_protocol::http::schemas() {
        let path = dir.join(file);
        if update {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &schema).unwrap();
            continue;
        }
        match std::fs::read_to_string(&path) {
            Ok(on_disk) if on_disk == schema => {}
            _ => stale.push(file),
        }
    }
    assert!(
        stale.is_empty(),
        "stale JSON Schemas in spec/schemas: {stale:?}; run `UPDATE_SCHEMAS=1 cargo test -p confab-protocol --test schemas` and commit the result"
    );
}
