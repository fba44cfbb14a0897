//! The other `RUN` flags: `--network`, `--security` and `--device`, with the values
//! and messages of BuildKit's `commands_runnetwork.go`, `commands_runsecurity.go` and
//! `commands_rundevice.go`.

use serde::Serialize;

use super::csv::{csv_fields, CsvError};
use super::suggest::{did_you_mean, suggest};
use super::units::parse_go_bool;
use crate::ast::go_quote;

/// `RUN --network=…`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// The builder's default network (`--network=default`).
    Default,
    /// No network at all.
    None,
    /// The host's network namespace (needs the `network.host` entitlement).
    Host,
}

impl NetworkMode {
    pub fn parse(value: &str) -> Option<NetworkMode> {
        match value {
            "default" => Some(NetworkMode::Default),
            "none" => Some(NetworkMode::None),
            "host" => Some(NetworkMode::Host),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            NetworkMode::Default => "default",
            NetworkMode::None => "none",
            NetworkMode::Host => "host",
        }
    }
}

/// `RUN --security=…`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    /// The default sandbox.
    Sandbox,
    /// Privileged execution (needs the `security.insecure` entitlement).
    Insecure,
}

impl Security {
    pub fn parse(value: &str) -> Option<Security> {
        match value {
            "sandbox" => Some(Security::Sandbox),
            "insecure" => Some(Security::Insecure),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Security::Sandbox => "sandbox",
            Security::Insecure => "insecure",
        }
    }
}

/// `RUN --device=name[,required]`: a CDI device to expose.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceSpec {
    pub name: String,
    pub required: bool,
}

/// Why a `--network`, `--security` or `--device` value was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunOptionError {
    #[error("invalid network mode {}", go_quote(.0))]
    Network(String),
    #[error("security {} is not valid", go_quote(.0))]
    Security(String),
    #[error("failed to parse csv devices: {0}")]
    DeviceCsv(CsvError),
    #[error("invalid field '{0}' must be a key=value pair")]
    DeviceNeedsValue(String),
    #[error("device name already set to {0}")]
    DeviceNameTwice(String),
    #[error("invalid value for {key}: {value}")]
    DeviceInvalidValue { key: String, value: String },
    #[error("unexpected key '{key}' in '{field}'{}", did_you_mean(suggestion))]
    DeviceUnknownKey { key: String, field: String, suggestion: Option<String> },
}

/// Parse a `--device` value (`vendor.com/class=name`, `name=…,required=false`).
pub fn parse_device(spec: &str) -> Result<DeviceSpec, RunOptionError> {
    let fields = csv_fields(spec).map_err(RunOptionError::DeviceCsv)?;
    let mut d = DeviceSpec { name: String::new(), required: false };
    for field in fields {
        let Some((key, value)) = field.split_once('=') else {
            if field.eq_ignore_ascii_case("required") {
                d.required = true;
            } else if d.name.is_empty() {
                d.name = field;
            } else {
                return Err(RunOptionError::DeviceNeedsValue(field));
            }
            continue;
        };
        let key = key.to_lowercase();
        match key.as_str() {
            "name" => {
                if !d.name.is_empty() {
                    return Err(RunOptionError::DeviceNameTwice(d.name));
                }
                d.name = value.to_string();
            }
            "required" => {
                d.required = parse_go_bool(value)
                    .ok_or_else(|| RunOptionError::DeviceInvalidValue { key: key.clone(), value: value.to_string() })?;
            }
            _ if d.name.is_empty() => d.name = field.clone(),
            _ => {
                let suggestion = suggest(&key, ["name", "required"], true);
                return Err(RunOptionError::DeviceUnknownKey { key, field, suggestion });
            }
        }
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices() {
        assert_eq!(
            parse_device("vendor1.com/device=foo,required").unwrap(),
            DeviceSpec { name: "vendor1.com/device=foo".into(), required: true }
        );
        assert_eq!(
            parse_device("name=gpu,required=false").unwrap(),
            DeviceSpec { name: "gpu".into(), required: false }
        );
        assert_eq!(parse_device("a,b").unwrap_err().to_string(), "invalid field 'b' must be a key=value pair");
        assert_eq!(RunOptionError::Network("bridge".into()).to_string(), "invalid network mode \"bridge\"");
    }
}
