//! Projects: a user's group of services.

use serde::{Deserialize, Serialize};

use super::{check_name, truncate, Result, Timestamp, ValidationError};

/// The longest description accepted.
pub const MAX_DESCRIPTION: usize = 1024;

/// A project as stored at `/lb/projects/<id>/meta`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Project {
    /// The project id.
    pub id: String,
    /// Its name, unique per owner.
    pub name: String,
    /// The owner's user id.
    pub owner: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Creation time.
    pub created: Timestamp,
    /// Last update time.
    pub updated: Timestamp,
}

impl Project {
    /// Checks the fields a user supplies.
    pub fn validate(&self) -> Result<()> {
        check_name("name", &self.name)?;
        check_description(&self.description)
    }
}

/// Checks a free-text description.
pub(crate) fn check_description(description: &str) -> Result<()> {
    if description.len() > MAX_DESCRIPTION {
        return Err(ValidationError::new(
            "description",
            format!(
                "{:?} is too long (at most {MAX_DESCRIPTION} bytes)",
                truncate(description)
            ),
        ));
    }
    Ok(())
}
