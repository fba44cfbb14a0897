//! Lint warnings found while reading instructions and stages: the static subset of
//! BuildKit's `linter` rules (names, messages and URLs are BuildKit's). Rules that
//! need expansion or images (`UndefinedVar`, `UndefinedArgInFrom`,
//! `WorkdirRelativePath`, `ExposeProtoCasing`, …) belong to the lowering.

use std::fmt;

use serde::Serialize;

use super::commands::Location;

/// A lint rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum LintRule {
    StageNameCasing,
    FromAsCasing,
    NoEmptyContinuation,
    ConsistentInstructionCasing,
    DuplicateStageName,
    ReservedStageName,
    #[serde(rename = "JSONArgsRecommended")]
    JsonArgsRecommended,
    MaintainerDeprecated,
    MultipleInstructionsDisallowed,
    LegacyKeyValueFormat,
}

impl LintRule {
    /// The rule's name as BuildKit spells it (for `# check=skip=…`).
    pub fn name(self) -> &'static str {
        match self {
            LintRule::StageNameCasing => "StageNameCasing",
            LintRule::FromAsCasing => "FromAsCasing",
            LintRule::NoEmptyContinuation => "NoEmptyContinuation",
            LintRule::ConsistentInstructionCasing => "ConsistentInstructionCasing",
            LintRule::DuplicateStageName => "DuplicateStageName",
            LintRule::ReservedStageName => "ReservedStageName",
            LintRule::JsonArgsRecommended => "JSONArgsRecommended",
            LintRule::MaintainerDeprecated => "MaintainerDeprecated",
            LintRule::MultipleInstructionsDisallowed => "MultipleInstructionsDisallowed",
            LintRule::LegacyKeyValueFormat => "LegacyKeyValueFormat",
        }
    }

    /// What the rule is about.
    pub fn description(self) -> &'static str {
        match self {
            LintRule::StageNameCasing => "Stage names should be lowercase",
            LintRule::FromAsCasing => "The 'as' keyword should match the case of the 'from' keyword",
            LintRule::NoEmptyContinuation => "Empty continuation lines will become errors in a future release",
            LintRule::ConsistentInstructionCasing => {
                "All commands within the Dockerfile should use the same casing (either upper or lower)"
            }
            LintRule::DuplicateStageName => "Stage names should be unique",
            LintRule::ReservedStageName => "Reserved words should not be used as stage names",
            LintRule::JsonArgsRecommended => {
                "JSON arguments recommended for ENTRYPOINT/CMD to prevent unintended behavior related to OS signals"
            }
            LintRule::MaintainerDeprecated => {
                "The MAINTAINER instruction is deprecated, use a label instead to define an image author"
            }
            LintRule::MultipleInstructionsDisallowed => {
                "Multiple instructions of the same type should not be used in the same stage"
            }
            LintRule::LegacyKeyValueFormat => "Legacy key/value format with whitespace separator should not be used",
        }
    }

    /// The documentation page of the rule.
    pub fn url(self) -> String {
        let slug = match self {
            LintRule::StageNameCasing => "stage-name-casing",
            LintRule::FromAsCasing => "from-as-casing",
            LintRule::NoEmptyContinuation => "no-empty-continuation",
            LintRule::ConsistentInstructionCasing => "consistent-instruction-casing",
            LintRule::DuplicateStageName => "duplicate-stage-name",
            LintRule::ReservedStageName => "reserved-stage-name",
            LintRule::JsonArgsRecommended => "json-args-recommended",
            LintRule::MaintainerDeprecated => "maintainer-deprecated",
            LintRule::MultipleInstructionsDisallowed => "multiple-instructions-disallowed",
            LintRule::LegacyKeyValueFormat => "legacy-key-value-format",
        };
        format!("https://docs.docker.com/go/dockerfile/rule/{slug}/")
    }
}

impl fmt::Display for LintRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One lint finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lint {
    pub rule: LintRule,
    /// BuildKit's message (`Stage name 'Build' should be lowercase`).
    pub message: String,
    pub location: Location,
    /// Index of the stage the finding is in; `None` before the first FROM. BuildKit
    /// reports some rules only for stages it builds, which the lowering can decide.
    pub stage: Option<usize>,
}

impl fmt::Display for Lint {
    /// `Rule: message (line N)`, as BuildKit prints lint warnings.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.rule, self.message)?;
        if self.location.start_line > 0 {
            write!(f, " (line {})", self.location.start_line)?;
        }
        Ok(())
    }
}
