//! Request and response bodies of the REST API. They are defined in
//! `lb_model::views`, shared with `lbc`, which reads the same shapes;
//! stored models live in `lb_model` itself.

pub use lb_model::views::*;
