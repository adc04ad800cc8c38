//! Errors shared by every primitive.
//!
//! Each primitive has its own error for refused calls (next to it); the one
//! error they share is a configuration that does not make sense.

/// A configuration was rejected. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A setting is out of its valid range.
    #[error("{field}: {reason}")]
    Invalid {
        /// The setting, as named by its builder method (e.g. `quota.count`).
        field: &'static str,
        /// Why it was rejected, e.g. `must be at least 1, got 0`.
        reason: String,
    },
}

impl ConfigError {
    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field,
            reason: reason.into(),
        }
    }
}

/// Fails with "`field`: must be at least `min`, got `value`" unless
/// `value >= min`.
pub(crate) fn at_least<T>(field: &'static str, value: T, min: T) -> Result<(), ConfigError>
where
    T: PartialOrd + std::fmt::Display + Copy,
{
    if value >= min {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            field,
            format!("must be at least {min}, got {value}"),
        ))
    }
}

/// Fails unless `min <= value <= max`.
pub(crate) fn within<T>(field: &'static str, value: T, min: T, max: T) -> Result<(), ConfigError>
where
    T: PartialOrd + std::fmt::Display + Copy,
{
    if value >= min && value <= max {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            field,
            format!("must be between {min} and {max}, got {value}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_field() {
        let err = at_least("quota.count", 0, 1).unwrap_err();
        assert_eq!(err.to_string(), "quota.count: must be at least 1, got 0");
        let err = within("ratio", 2.0, 0.0, 1.0).unwrap_err();
        assert_eq!(err.to_string(), "ratio: must be between 0 and 1, got 2");
        assert!(within("ratio", 0.5, 0.0, 1.0).is_ok());
    }
}
