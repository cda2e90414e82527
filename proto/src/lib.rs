//! Levee's wire protocol, `levee.v1`. The gRPC services and messages arrive
//! with the alert-streaming work (issue 5); until then this crate is empty.
