//! Levee's collector. It receives alerts from agents and serves them to SOC
//! subscribers; it arrives with the alert-streaming work (issue 5).
