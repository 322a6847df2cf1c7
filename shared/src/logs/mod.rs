//! What a tenant can read about its own traffic: the log of its API requests
//! ([`requests`]) and one list of everything that failed ([`errors`]). Delivery attempts
//! have their own lists (`webhooks::attempts`), integrations their call logs.

pub mod errors;
pub mod requests;
