//! Live or test: every row and every key belongs to one mode, and a request sees only its own.
//! A leaf module, so tenants, keys and every domain can name the mode without importing each
//! other.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Live or test: test keys see only test data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, poem_openapi::Enum)]
#[serde(rename_all = "lowercase")]
#[oai(rename_all = "lowercase")]
pub enum Mode {
    Live,
    Test,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Live => "live",
            Mode::Test => "test",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "live" => Ok(Mode::Live),
            "test" => Ok(Mode::Test),
            _ => Err(Error::invalid(
                "parameter_invalid",
                "mode",
                "`mode` must be `live` or `test`.",
            )),
        }
    }
}
