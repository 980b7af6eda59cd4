//! Validation of names that arrive in URLs: hubs, applications, groups, users, connection ids.
//!
//! The rules are the service's: a hub or application name matches
//! `^[A-Za-z][A-Za-z0-9_`,.\[\]]{0,127}$` and is case-insensitive (kept lower-cased), an
//! application prefixes the hub as `{application}_{hub}`, a group is 1..=1024 characters and not
//! all white space, user ids are 1..=1024 characters.

use crate::error::{Error, ErrorCode};

/// Longest group or user name accepted, in characters.
pub const MAX_GROUP_LEN: usize = 1024;
/// Longest user id accepted, in characters.
pub const MAX_USER_LEN: usize = 1024;

const HUB_MESSAGE: &str = "Invalid hub name. Valid hub name should be in between 1 and 128 characters long. \
The first character must be a letter, other characters can be letters, digits or the following symbols _`,.[]";
const APP_MESSAGE: &str = "Invalid application name. Valid application name should be in between 1 and 128 characters long. \
The first character must be a letter, other characters can be letters, digits or the following symbols _`,.[]";

fn is_valid_hub_like(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() => {}
        _ => return false,
    }
    name.len() <= 128
        && chars
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '`' | ',' | '.' | '[' | ']'))
}

/// Validates a hub name and returns its canonical (lower-cased) form.
pub fn hub(name: &str) -> Result<String, Error> {
    if is_valid_hub_like(name) {
        Ok(name.to_ascii_lowercase())
    } else {
        Err(Error::new(ErrorCode::InvalidArgument, HUB_MESSAGE).with_target("hub"))
    }
}

/// Validates `hub` and an optional `application`, returning the internal hub name
/// (`{application}_{hub}`, lower-cased, when an application is given).
pub fn prefixed_hub(application: Option<&str>, name: &str) -> Result<String, Error> {
    let hub = hub(name)?;
    match application {
        None => Ok(hub),
        Some(app) if is_valid_hub_like(app) => Ok(format!("{}_{}", app.to_ascii_lowercase(), hub)),
        Some(_) => {
            Err(Error::new(ErrorCode::InvalidArgument, APP_MESSAGE).with_target("application"))
        }
    }
}

/// Validates a group name: 1..=1024 characters, not all white space.
pub fn group(name: &str) -> Result<(), Error> {
    let len = name.chars().count();
    if len == 0 || len > MAX_GROUP_LEN || name.chars().all(char::is_whitespace) {
        return Err(Error::new(
            ErrorCode::InvalidArgument,
            "Invalid group name. Valid group name should be between 1 and 1024 characters long and not all white spaces.",
        )
        .with_target("group"));
    }
    Ok(())
}

/// Validates a user id: 1..=1024 characters.
pub fn user(name: &str) -> Result<(), Error> {
    let len = name.chars().count();
    if len == 0 || len > MAX_USER_LEN {
        return Err(Error::new(
            ErrorCode::InvalidArgument,
            "Invalid user id. Valid user id should be between 1 and 1024 characters long.",
        )
        .with_target("user"));
    }
    Ok(())
}

/// Validates a connection id: not empty, at most 1024 characters.
pub fn connection_id(id: &str) -> Result<(), Error> {
    if id.is_empty() || id.len() > 1024 {
        return Err(
            Error::new(ErrorCode::InvalidArgument, "Invalid connection id.")
                .with_target("connectionId"),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hub_names_follow_the_service_rule() {
        assert_eq!(hub("Chat").unwrap(), "chat");
        assert_eq!(hub("a_b`c,d.e[f]9").unwrap(), "a_b`c,d.e[f]9");
        assert!(hub("").is_err());
        assert!(hub("9chat").is_err());
        assert!(hub("my-hub").is_err());
        assert!(hub("héllo").is_err());
        assert!(hub(&"a".repeat(128)).is_ok());
        assert!(hub(&"a".repeat(129)).is_err());
    }

    #[test]
    fn application_prefixes_the_hub() {
        assert_eq!(prefixed_hub(Some("App"), "Chat").unwrap(), "app_chat");
        assert_eq!(prefixed_hub(None, "Chat").unwrap(), "chat");
        let err = prefixed_hub(Some("1app"), "chat").unwrap_err();
        assert_eq!(err.target.as_deref(), Some("application"));
    }

    #[test]
    fn group_names() {
        assert!(group("g").is_ok());
        assert!(group(" g ").is_ok());
        assert!(group("").is_err());
        assert!(group("   \t").is_err());
        assert!(group(&"é".repeat(1024)).is_ok());
        assert!(group(&"g".repeat(1025)).is_err());
    }

    proptest! {
        #[test]
        fn hub_validation_never_panics_and_is_case_insensitive(s in "\\PC{0,140}") {
            if let Ok(h) = hub(&s) {
                prop_assert_eq!(hub(&s.to_ascii_uppercase()).unwrap(), h);
            }
        }
    }
}
