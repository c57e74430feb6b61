//! Users: accounts that own projects.

use serde::{Deserialize, Serialize};

use super::{check_name, Result, Timestamp};

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reaches every project and administers nodes.
    Admin,
    /// Reaches their own projects.
    #[default]
    User,
}

/// A user as stored at `/lb/users/<id>`. The password hash is never returned
/// by the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// The user id.
    pub id: String,
    /// The login name, a DNS label (it names the user's registry namespace).
    pub username: String,
    /// Admin or user.
    pub role: Role,
    /// The argon2 PHC string of the password.
    pub password_hash: String,
    /// Creation time.
    pub created: Timestamp,
    /// Last update time.
    pub updated: Timestamp,
}

impl User {
    /// Checks the fields a user supplies.
    pub fn validate(&self) -> Result<()> {
        check_name("username", &self.username)
    }
}
