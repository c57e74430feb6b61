//! Prints the API's OpenAPI document (what `GET /api/v1/openapi.json`
//! serves) to stdout, for validators: `cargo run -p lb-api --example openapi`.

fn main() {
    println!("{:#}", lb_api::openapi::document());
}
