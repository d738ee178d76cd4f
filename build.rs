//! Embeds `docs/openapi.json` (the OpenAPI document served at `GET /api/openapi.json`)
//! minified, after checking that it is JSON: a broken document fails the build.

use std::path::Path;

fn main() {
    let source = "docs/openapi.json";
    println!("cargo:rerun-if-changed={source}");
    let text = std::fs::read_to_string(source).expect("docs/openapi.json is readable");
    let document: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{source} is not JSON: {e}"));
    let out = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    std::fs::write(
        Path::new(&out).join("openapi.min.json"),
        serde_json::to_string(&document).expect("a JSON value serialises"),
    )
    .expect("OUT_DIR is writable");
}
